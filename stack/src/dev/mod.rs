//! Network devices the stack runs on: the userspace 82574L driver, a TAP device, a loopback device, a
//! learning bridge over other devices, VLAN sub-interfaces, bonds, veth-like pairs, and a simulated link with seeded impairment for
//! tests.

pub mod bond;
pub mod bridge;
pub mod loopback;
pub mod nic;
pub mod sim;
pub mod tap;
pub mod veth;
pub mod vlan;

use crate::skb::PacketBuf;
use crate::wire::Mac;
use std::io;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// The device segments TCP super-packets (GSO up to 64 KiB).
    pub tso: bool,
    /// The device fills TCP/UDP checksums (CHECKSUM_PARTIAL).
    pub tx_csum: bool,
    /// The device verifies received checksums.
    pub rx_csum: bool,
    /// The device inserts and strips 802.1Q tags (the tag travels beside the frame).
    pub vlan: bool,
    /// The device segments TCP over IPv6 and fills its checksums too.
    pub tso6: bool,
}

pub trait Device {
    fn mac(&self) -> Mac;
    fn mtu(&self) -> usize {
        1500
    }
    fn features(&self) -> Features {
        Features::default()
    }
    /// Sends frames from the front of `q` until the device is full; returns how many went.
    fn transmit(&mut self, q: &mut std::collections::VecDeque<PacketBuf>) -> io::Result<usize>;
    /// Up to `budget` received frames into `out` (NAPI-style); returns how many.
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize>;
    /// Blocks until the device may have work or `timeout` passes.
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()>;
    fn name(&self) -> String;
    /// Lets frames for a multicast Ethernet address through the device's filter (a device without one
    /// passes them all).
    fn join_multicast(&mut self, mac: Mac) -> io::Result<()> {
        let _ = mac;
        Ok(())
    }
    /// A descriptor that becomes readable when frames wait (for devices combined into one: a bridge).
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Lets frames of VLAN `vid` through the device's VLAN filter (a device without one passes them all).
    fn join_vlan(&mut self, vid: u16) -> io::Result<()> {
        let _ = vid;
        Ok(())
    }
    /// Whether the link is up (for a bond's monitoring; may read a register).
    fn link_up(&mut self) -> bool {
        true
    }
    /// The device changed under the stack (a bond failed over): the stack takes the device's address
    /// again and announces its own addresses to the link. Reported once.
    fn announce_wanted(&mut self) -> bool {
        false
    }
    /// What the device has to report beyond frames: an XDP program's counters, an impairment's.
    fn report(&self) -> Option<String> {
        None
    }
}

impl Device for Box<dyn Device> {
    fn mac(&self) -> Mac {
        (**self).mac()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn features(&self) -> Features {
        (**self).features()
    }
    fn transmit(&mut self, q: &mut std::collections::VecDeque<PacketBuf>) -> io::Result<usize> {
        (**self).transmit(q)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        (**self).poll(budget, out)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        (**self).wait(timeout)
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn join_multicast(&mut self, mac: Mac) -> io::Result<()> {
        (**self).join_multicast(mac)
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).raw_fd()
    }
    fn join_vlan(&mut self, vid: u16) -> io::Result<()> {
        (**self).join_vlan(vid)
    }
    fn link_up(&mut self) -> bool {
        (**self).link_up()
    }
    fn announce_wanted(&mut self) -> bool {
        (**self).announce_wanted()
    }
    fn report(&self) -> Option<String> {
        (**self).report()
    }
}
