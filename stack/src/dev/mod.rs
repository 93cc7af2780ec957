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
    /// For a loop that sleeps on several devices at once (`wait_devices`): gets the device ready to be slept
    /// on and appends the descriptors that become readable when it has work; `false` when it has none to
    /// offer, and is polled again after a short sleep. By default, its `raw_fd`.
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> io::Result<bool> {
        match self.raw_fd() {
            Some(fd) => {
                out.push(fd);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// After such a sleep: which of the descriptors `wait_fds` appended were readable, in its order (none
    /// after a timeout, or when another device's woke the loop).
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        let _ = ready;
        Ok(())
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
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> io::Result<bool> {
        (**self).wait_fds(out)
    }
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        (**self).woke(ready)
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

/// Sleeps until one of `devs` may have work or `timeout` passes: one poll(2) over the descriptors each
/// offers (`Device::wait_fds`: a card its interrupt eventfds, re-armed first), after which each is told
/// which of its own were readable (`woke`). While any of them offers none, the sleep is at most 1 ms, so
/// that it is polled again soon.
pub fn wait_devices(devs: &mut [&mut dyn Device], timeout: std::time::Duration) -> io::Result<()> {
    let mut fds = Vec::new();
    let mut ends = Vec::with_capacity(devs.len());
    let mut all = true;
    for d in devs.iter_mut() {
        all &= d.wait_fds(&mut fds)?;
        ends.push(fds.len());
    }
    let timeout = if all { timeout } else { timeout.min(std::time::Duration::from_millis(1)) };
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    if p.is_empty() {
        std::thread::sleep(timeout);
    } else {
        nic_tap::wait_readable(&mut p, timeout);
    }
    let ready: Vec<bool> = p.iter().map(|p| p.revents & libc::POLLIN != 0).collect();
    let mut start = 0;
    for (d, &end) in devs.iter_mut().zip(&ends) {
        d.woke(ready.get(start..end).unwrap_or_default())?;
        start = end;
    }
    Ok(())
}

/// A descriptor that is always readable (an eventfd holding 1 that nobody reads), for a device with work
/// already waiting (frames queued inside it) to offer `wait_devices`, so that the loop does not sleep past
/// that work. `None` if the process could not create one (then the device offers nothing: a short sleep).
pub fn ready_now() -> Option<std::os::fd::RawFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    static READY: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            // SAFETY: eventfd with an initial count of 1 and valid flags; the result is checked.
            let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            // SAFETY: a fresh descriptor, owned from here on.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .as_ref()
        .map(|f| f.as_raw_fd())
}

/// What a device made of others (a bond's slaves, a bridge's ports) offers `wait_devices`: its members'
/// descriptors one after another, and after the sleep each member told about its own.
#[derive(Default)]
pub struct WaitFan {
    /// How many descriptors each member offered at the last `offer`.
    counts: Vec<usize>,
}

impl WaitFan {
    /// Every member's `wait_fds`, in order: whether all of them offered theirs.
    pub fn offer<'a>(&mut self, members: impl Iterator<Item = &'a mut dyn Device>, out: &mut Vec<std::os::fd::RawFd>) -> io::Result<bool> {
        self.counts.clear();
        let mut all = true;
        for m in members {
            let before = out.len();
            all &= m.wait_fds(out)?;
            self.counts.push(out.len() - before);
        }
        Ok(all)
    }

    /// Every member's `woke` with its share of `ready`.
    pub fn woke<'a>(&self, members: impl Iterator<Item = &'a mut dyn Device>, ready: &[bool]) -> io::Result<()> {
        let mut start = 0;
        for (m, &n) in members.zip(&self.counts) {
            m.woke(ready.get(start..start + n).unwrap_or_default())?;
            start += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::cell::RefCell;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::rc::Rc;

    /// A device with an eventfd of its own (or none), recording what `woke` told it.
    struct Probe {
        fd: Option<OwnedFd>,
        log: Rc<RefCell<Vec<Vec<bool>>>>,
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor, owned from here on.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn signal(fd: RawFd) {
        // SAFETY: an 8-byte write of a local to an eventfd.
        assert_eq!(unsafe { libc::write(fd, 1u64.to_ne_bytes().as_ptr().cast(), 8) }, 8);
    }

    impl Device for Probe {
        fn mac(&self) -> Mac {
            [2, 0, 0, 0, 0, 9]
        }
        fn transmit(&mut self, q: &mut std::collections::VecDeque<PacketBuf>) -> io::Result<usize> {
            Ok(q.len())
        }
        fn poll(&mut self, _budget: usize, _out: &mut Vec<PacketBuf>) -> io::Result<usize> {
            Ok(0)
        }
        fn wait(&mut self, _timeout: std::time::Duration) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "probe".into()
        }
        fn raw_fd(&self) -> Option<RawFd> {
            self.fd.as_ref().map(|f| f.as_raw_fd())
        }
        fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
            self.log.borrow_mut().push(ready.to_vec());
            Ok(())
        }
    }

    /// One poll over every device's descriptors; each device, and each member behind a device made of
    /// others (a bridge here), is told which of its own were readable.
    #[test]
    fn every_device_hears_which_of_its_descriptors_woke_the_loop() {
        let logs: Vec<Rc<RefCell<Vec<Vec<bool>>>>> = (0..3).map(|_| Rc::default()).collect();
        let fds: Vec<OwnedFd> = (0..3).map(|_| eventfd()).collect();
        let raws: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut fds = fds.into_iter();
        let mut probe = |i: usize| Probe { fd: fds.next(), log: logs[i].clone() };
        let mut alone = probe(0);
        let members: Vec<Box<dyn Device>> = vec![Box::new(probe(1)), Box::new(probe(2))];
        let mut br = bridge::Bridge::new("br0", [2, 0, 0, 0, 0, 0xb], members);
        // The second bridge port's descriptor is readable.
        signal(raws[2]);
        wait_devices(&mut [&mut alone, &mut br], std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(*logs[0].borrow(), [vec![false]]);
        assert_eq!(*logs[1].borrow(), [vec![false]]);
        assert_eq!(*logs[2].borrow(), [vec![true]], "the bridge passed its port its own readiness");
        // The lone device's now.
        signal(raws[0]);
        let mut buf = [0u8; 8];
        // SAFETY: reading an eventfd's 8-byte counter into a local (clearing the earlier signal).
        unsafe { libc::read(raws[2], buf.as_mut_ptr().cast(), 8) };
        wait_devices(&mut [&mut alone, &mut br], std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(logs[0].borrow().last(), Some(&vec![true]));
        assert_eq!(logs[2].borrow().last(), Some(&vec![false]));
    }

    /// A device with no descriptor to offer makes the whole set unsleepable for long: `wait_fds` says so,
    /// and a bridge with such a port says so too.
    #[test]
    fn a_device_without_a_descriptor_is_reported() {
        let log = Rc::default();
        let mut none = Probe { fd: None, log: Rc::clone(&log) };
        let mut out = Vec::new();
        assert!(!none.wait_fds(&mut out).unwrap());
        let members: Vec<Box<dyn Device>> = vec![Box::new(Probe { fd: Some(eventfd()), log: Rc::clone(&log) }), Box::new(none)];
        let mut br = bridge::Bridge::new("br0", [2, 0, 0, 0, 0, 0xb], members);
        assert!(!br.wait_fds(&mut out).unwrap());
        assert_eq!(out.len(), 1, "the port that has one still offers it");
    }
}
