//! The userspace 82574L driver as a stack device: packets cross as `TxPacket`/`RxPacket` with their offload
//! metadata (checksum requests, TSO size; verified checksums and VLAN tags).

use super::{Device, Features};
use crate::skb::{Csum, PacketBuf};
use driver::{NetDev, RxCsum, TxCsum, TxFrame};
use log::debug;
use std::collections::VecDeque;
use std::io;

/// Packets handed to the driver per transmit call.
const TX_BATCH: usize = 64;

pub struct NicDevice<D: NetDev> {
    dev: D,
    rx: Vec<driver::RxPacket>,
    /// Where XDP_REDIRECT frames go, by target number.
    sinks: Vec<Box<dyn crate::xdp::XdpSink>>,
    /// Redirected frames whose target did not exist or was full.
    redirect_drops: u64,
    /// Packets the driver refused (length, offload offsets): dropped.
    tx_malformed: u64,
    xdp_name: Option<String>,
}

impl<D: NetDev> NicDevice<D> {
    pub fn new(mut dev: D) -> NicDevice<D> {
        // Received frames land in buffers from the stack's pool, and go back to it with their packets.
        dev.set_rx_source(crate::skb::rx_buffer);
        NicDevice { dev, rx: Vec::new(), sinks: Vec::new(), redirect_drops: 0, tx_malformed: 0, xdp_name: None }
    }

    /// Attaches an XDP program to the driver, with the targets its REDIRECT verdicts name.
    pub fn set_xdp(&mut self, prog: Box<dyn driver::xdp::XdpProgram + Send>, sinks: Vec<Box<dyn crate::xdp::XdpSink>>) {
        self.xdp_name = Some(prog.name());
        self.dev.set_xdp(Some(prog));
        self.sinks = sinks;
    }
    pub fn inner(&mut self) -> &mut D {
        &mut self.dev
    }
}

fn err(e: driver::DriverError) -> io::Error {
    io::Error::other(e.to_string())
}

impl<D: NetDev> Device for NicDevice<D> {
    fn mac(&self) -> crate::wire::Mac {
        self.dev.mac()
    }
    fn mtu(&self) -> usize {
        self.dev.mtu()
    }
    fn features(&self) -> Features {
        let f = self.dev.features();
        Features { tso: f.tso, tx_csum: f.tx_csum, rx_csum: f.rx_csum, vlan: f.vlan, tso6: f.tso }
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        // The packets are lent where they lie: the driver copies each into its ring's buffers, and one
        // the ring has no room for stays queued as it is.
        let n = q.len().min(TX_BATCH);
        // The driver reads one slice per packet: fragments (none on the stack's own packets) are folded in.
        for p in q.iter_mut().take(n).filter(|p| !p.frags.is_empty()) {
            p.linearize();
        }
        let mut frame = |i: usize| {
            let p = &q[i];
            let csum = match (p.csum, p.network_header, p.transport_header) {
                (Csum::Partial { .. }, Some(l3), Some(l4)) => {
                    let d = p.data();
                    // The protocol: IPv4's field, or IPv6's next header (the stack's TCP and UDP carry no
                    // extension headers).
                    let ipv4 = d.get(l3).is_some_and(|b| b >> 4 == 4);
                    let proto = if ipv4 { d.get(l3 + 9) } else { d.get(l3 + 6) };
                    Some(TxCsum { l3, l4, ipv4, tcp: proto == Some(&6) })
                }
                _ => None,
            };
            TxFrame { data: p.data(), csum, tso: p.gso.map(|g| g.size), vlan: p.vlan }
        };
        match self.dev.transmit_lent(n, &mut frame) {
            Ok(n) => {
                q.drain(..n);
                Ok(n)
            }
            // The first packet is one the card cannot carry: dropped and counted, as a kernel driver
            // drops a malformed skb, so that the packets behind it still go.
            Err(driver::DriverError::BadPacket(why)) => {
                q.pop_front();
                self.tx_malformed += 1;
                debug!("transmit: packet dropped: {why}");
                Ok(1)
            }
            Err(e) => Err(err(e)),
        }
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        self.rx.clear();
        let n = self.dev.poll(budget, &mut self.rx).map_err(err)?;
        if !self.sinks.is_empty() || self.xdp_name.is_some() {
            for (to, frame, meta) in self.dev.take_redirected() {
                let taken = self.sinks.get_mut(to as usize).is_some_and(|s| s.send(frame, &meta));
                if !taken {
                    self.redirect_drops += 1;
                }
            }
        }
        for r in self.rx.drain(..) {
            // The driver's vector becomes the packet's storage: the frame is not copied again.
            let mut p = PacketBuf::from_vec(r.data);
            p.csum = if r.csum == RxCsum::Verified { Csum::Verified } else { Csum::None };
            p.vlan = r.vlan;
            out.push(p);
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        self.dev.wait(timeout).map_err(err)?;
        Ok(())
    }
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> io::Result<bool> {
        self.dev.wait_fds(out).map_err(err)
    }
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        self.dev.woke(ready).map_err(err)
    }
    fn name(&self) -> String {
        "82574L".into()
    }
    fn join_multicast(&mut self, mac: crate::wire::Mac) -> io::Result<()> {
        self.dev.add_multicast(mac).map_err(err)
    }
    fn join_vlan(&mut self, vid: u16) -> io::Result<()> {
        self.dev.add_vlan(vid).map_err(err)
    }
    fn link_up(&mut self) -> bool {
        self.dev.link().is_ok_and(|l| l.up)
    }
    fn report(&self) -> Option<String> {
        let mut lines = Vec::new();
        let st = self.dev.stats();
        if st.interrupts > 0 {
            lines.push(format!("interrupts: {}", st.interrupts));
        }
        if self.tx_malformed > 0 {
            lines.push(format!("tx malformed (dropped): {}", self.tx_malformed));
        }
        if let Some(name) = self.xdp_name.as_ref() {
            let s = self.dev.xdp_stats();
            lines.push(format!(
                "xdp {name}: pass {} drop {} tx {} redirect {} aborted {} tx_errors {} redirect_drops {}",
                s.pass, s.drop, s.tx, s.redirect, s.aborted, s.tx_errors, self.redirect_drops
            ));
            for (i, k) in self.sinks.iter().enumerate() {
                lines.push(format!("xdp target {i}: {}", k.describe()));
            }
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use driver::{DriverError, LinkState, RxPacket, Stats, TxPacket};

    /// A card that takes packets until one of 9,999 bytes, which it refuses as the real driver refuses what
    /// the card cannot carry: the batch ends before it, and a send that starts with it fails.
    #[derive(Default)]
    struct Picky {
        sent: Vec<Vec<u8>>,
    }

    impl NetDev for Picky {
        fn mac(&self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 1]
        }
        fn mtu(&self) -> usize {
            1500
        }
        fn features(&self) -> driver::Features {
            driver::Features::default()
        }
        fn link(&mut self) -> Result<LinkState, DriverError> {
            Ok(LinkState { up: true, speed_mbps: 1000, full_duplex: true })
        }
        fn transmit(&mut self, pkts: &mut Vec<TxPacket>) -> Result<usize, DriverError> {
            let n = pkts.iter().take_while(|p| p.data.len() != 9999).count();
            if n == 0 && !pkts.is_empty() {
                return Err(DriverError::BadPacket("frame length"));
            }
            self.sent.extend(pkts.drain(..n).map(|p| p.data));
            Ok(n)
        }
        fn transmit_lent<'a>(&mut self, n: usize, frame: &mut dyn FnMut(usize) -> driver::TxFrame<'a>) -> Result<usize, DriverError> {
            let mut taken = 0;
            for i in 0..n {
                let f = frame(i);
                if f.data.len() == 9999 {
                    break;
                }
                self.sent.push(f.data.to_vec());
                taken += 1;
            }
            if taken == 0 && n > 0 {
                return Err(DriverError::BadPacket("frame length"));
            }
            Ok(taken)
        }
        fn poll(&mut self, _budget: usize, _out: &mut Vec<RxPacket>) -> Result<usize, DriverError> {
            Ok(0)
        }
        fn wait(&mut self, _timeout: std::time::Duration) -> Result<bool, DriverError> {
            Ok(false)
        }
        fn stats(&self) -> Stats {
            Stats::default()
        }
        fn add_multicast(&mut self, _mac: [u8; 6]) -> Result<(), DriverError> {
            Ok(())
        }
        fn add_vlan(&mut self, _vid: u16) -> Result<(), DriverError> {
            Ok(())
        }
        fn set_xdp(&mut self, _prog: Option<Box<dyn driver::xdp::XdpProgram + Send>>) {}
        fn xdp_stats(&self) -> driver::xdp::XdpStats {
            driver::xdp::XdpStats::default()
        }
        fn take_redirected(&mut self) -> Vec<(u32, Vec<u8>, driver::xdp::XdpMeta)> {
            Vec::new()
        }
    }

    #[test]
    fn a_packet_the_driver_refuses_is_dropped_and_the_rest_still_go() {
        let mut d = NicDevice::new(Picky::default());
        let mut q: VecDeque<PacketBuf> = [60, 9999, 61, 62].iter().map(|&n| PacketBuf::from_slice(&vec![0u8; n])).collect();
        let mut calls = 0;
        while !q.is_empty() {
            calls += 1;
            assert!(calls < 10, "the queue never drains");
            d.transmit(&mut q).unwrap();
        }
        let lens: Vec<usize> = d.dev.sent.iter().map(Vec::len).collect();
        assert_eq!(lens, [60, 61, 62], "every other packet, once, in order");
        assert_eq!(d.tx_malformed, 1);
        assert_eq!(d.report().as_deref(), Some("tx malformed (dropped): 1"));
    }
}
