//! XDP programs for the driver's hook (`driver::xdp`) and where redirected frames go.
//!
//! Programs: [`DropFilter`] drops frames from or to listed addresses and to listed ports (a blocklist
//! that costs no packet buffer); [`Reflector`] sends frames back out of the interface they came in on,
//! Ethernet addresses swapped and, in L3 mode, IP addresses and TCP/UDP ports swapped too (an ICMP or
//! ICMPv6 echo request becomes its reply); [`Redirector`] hands frames to listed ports to a target;
//! [`Chain`] runs several in order until one decides. Targets ([`XdpSink`]): a user queue ([`XskQueue`], in
//! the manner of AF_XDP) or another device.

use crate::dev::Device;
use crate::netfilter::packet::{View, ICMP, ICMPV6, TCP, UDP};
use crate::skb::PacketBuf;
pub use driver::xdp::{XdpAction, XdpFrame, XdpMeta, XdpProgram, XdpStats};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;

/// The IP packet of a frame: where it starts (after Ethernet and any 802.1Q tag) and its view.
fn ip_of(f: &[u8]) -> Option<(usize, View)> {
    crate::netfilter::packet::frame_ip(f, false)
}

/// A protocol and port: `udp:9999`, `tcp:22`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMatch {
    pub proto: u8,
    pub port: u16,
}

impl PortMatch {
    fn hits(&self, v: &View) -> bool {
        v.proto == self.proto && !v.later_fragment && v.dport == self.port
    }
}

impl std::str::FromStr for PortMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<PortMatch, String> {
        let (p, n) = s.split_once(':').ok_or(format!("{s}: expected tcp:PORT or udp:PORT"))?;
        let proto = match p {
            "tcp" => TCP,
            "udp" => UDP,
            _ => return Err(format!("{s}: tcp or udp")),
        };
        Ok(PortMatch { proto, port: n.parse().map_err(|_| format!("{s}: bad port"))? })
    }
}

/// Drops frames whose source or destination address is listed, or whose destination port is.
#[derive(Debug, Clone, Default)]
pub struct DropFilter {
    pub addrs: Vec<IpAddr>,
    pub ports: Vec<PortMatch>,
}

impl XdpProgram for DropFilter {
    fn run(&mut self, f: &mut XdpFrame, _meta: &XdpMeta) -> XdpAction {
        let Some((_, v)) = ip_of(f.data()) else { return XdpAction::Pass };
        if self.addrs.iter().any(|a| *a == v.src || *a == v.dst) || self.ports.iter().any(|p| p.hits(&v)) {
            XdpAction::Drop
        } else {
            XdpAction::Pass
        }
    }
    fn name(&self) -> String {
        "drop-filter".into()
    }
}

/// Sends frames back where they came from.
#[derive(Debug, Clone, Default)]
pub struct Reflector {
    /// Only frames to this port (others pass); every frame when `None`.
    pub only: Option<PortMatch>,
    /// Swap IP addresses and ports as well (else only the Ethernet addresses).
    pub l3: bool,
}

fn swap(f: &mut [u8], a: usize, b: usize, n: usize) {
    for i in 0..n {
        f.swap(a + i, b + i);
    }
}

impl XdpProgram for Reflector {
    fn run(&mut self, f: &mut XdpFrame, _meta: &XdpMeta) -> XdpAction {
        let ip = ip_of(f.data());
        if let Some(m) = self.only {
            if !ip.as_ref().is_some_and(|(_, v)| m.hits(v)) {
                return XdpAction::Pass;
            }
        }
        let d = f.data_mut();
        if d.len() < 14 {
            return XdpAction::Aborted;
        }
        swap(d, 0, 6, 6);
        if !self.l3 {
            return XdpAction::Tx;
        }
        let Some((at, v)) = ip else { return XdpAction::Tx };
        // Swapping two addresses, or two ports, leaves every checksum as it was.
        if v.v6 {
            swap(d, at + 8, at + 24, 16);
        } else {
            swap(d, at + 12, at + 16, 4);
        }
        let l4 = at + v.l4;
        match v.proto {
            TCP | UDP if !v.later_fragment && d.len() >= l4 + 4 => swap(d, l4, l4 + 2, 2),
            ICMP | ICMPV6 if d.len() >= l4 + 4 => {
                // An echo request answered: the type changes, the checksum follows (RFC 1624).
                let (req, rep) = if v.proto == ICMP { (8u8, 0u8) } else { (128, 129) };
                if d[l4] == req {
                    let old = [d[l4], d[l4 + 1]];
                    d[l4] = rep;
                    let c = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
                    let n = crate::netfilter::packet::csum_replace(c, &old, &[rep, old[1]]);
                    d[l4 + 2..l4 + 4].copy_from_slice(&n.to_be_bytes());
                }
            }
            _ => {}
        }
        XdpAction::Tx
    }
    fn name(&self) -> String {
        if self.l3 { "reflector-l3" } else { "reflector-l2" }.into()
    }
}

/// Redirects frames to listed ports to target `target`.
#[derive(Debug, Clone, Default)]
pub struct Redirector {
    pub ports: Vec<PortMatch>,
    pub target: u32,
}

impl XdpProgram for Redirector {
    fn run(&mut self, f: &mut XdpFrame, _meta: &XdpMeta) -> XdpAction {
        match ip_of(f.data()) {
            Some((_, v)) if self.ports.iter().any(|p| p.hits(&v)) => XdpAction::Redirect(self.target),
            _ => XdpAction::Pass,
        }
    }
    fn name(&self) -> String {
        "redirector".into()
    }
}

/// Several programs, run in order until one does not pass.
#[derive(Default)]
pub struct Chain(pub Vec<Box<dyn XdpProgram + Send>>);

impl XdpProgram for Chain {
    fn run(&mut self, f: &mut XdpFrame, meta: &XdpMeta) -> XdpAction {
        for p in self.0.iter_mut() {
            let a = p.run(f, meta);
            if a != XdpAction::Pass {
                return a;
            }
        }
        XdpAction::Pass
    }
    fn name(&self) -> String {
        self.0.iter().map(|p| p.name()).collect::<Vec<_>>().join("+")
    }
}

/// Where redirected frames go.
pub trait XdpSink {
    /// Takes a frame; false when it cannot (full).
    fn send(&mut self, frame: Vec<u8>, meta: &XdpMeta) -> bool;
    /// What it took, for reports.
    fn describe(&self) -> String;
}

/// A user queue (AF_XDP-like): frames with their queue and hash, for the application to read.
#[derive(Debug, Default)]
pub struct XskQueue {
    pub frames: VecDeque<(Vec<u8>, XdpMeta)>,
    pub capacity: usize,
    pub received: u64,
    pub dropped: u64,
}

impl XskQueue {
    pub fn new(capacity: usize) -> Rc<RefCell<XskQueue>> {
        Rc::new(RefCell::new(XskQueue { capacity, ..Default::default() }))
    }
}

impl XdpSink for Rc<RefCell<XskQueue>> {
    fn send(&mut self, frame: Vec<u8>, meta: &XdpMeta) -> bool {
        let mut q = self.borrow_mut();
        if q.frames.len() >= q.capacity {
            q.dropped += 1;
            return false;
        }
        q.received += 1;
        q.frames.push_back((frame, *meta));
        true
    }
    fn describe(&self) -> String {
        let q = self.borrow();
        let mut queues: Vec<usize> = q.frames.iter().map(|(_, m)| m.queue).collect();
        queues.sort();
        queues.dedup();
        let hashed = q.frames.iter().filter(|(_, m)| m.rss_hash.is_some()).count();
        format!("user queue: received {} dropped {} (rx queues {queues:?}, {hashed} with an RSS hash)", q.received, q.dropped)
    }
}

/// Another device: the frame leaves on it as it is.
pub struct DeviceSink<D: Device>(pub D, pub u64);

impl<D: Device> DeviceSink<D> {
    pub fn new(d: D) -> DeviceSink<D> {
        DeviceSink(d, 0)
    }
}

impl<D: Device> XdpSink for DeviceSink<D> {
    fn send(&mut self, frame: Vec<u8>, _meta: &XdpMeta) -> bool {
        let mut q = VecDeque::from([PacketBuf::from_slice(&frame)]);
        let ok = self.0.transmit(&mut q).is_ok_and(|n| n == 1);
        self.1 += u64::from(ok);
        ok
    }
    fn describe(&self) -> String {
        format!("device {}: sent {}", self.0.name(), self.1)
    }
}

/// Builds a program from `nic-lab --xdp` specs: `drop=ADDR|tcp:PORT|udp:PORT,...`, `reflect[=udp:PORT]`,
/// `reflect-l2[=...]`, `redirect=udp:PORT,...` (to target 0).
pub fn program(specs: &[String]) -> Result<Box<dyn XdpProgram + Send>, String> {
    let mut chain = Chain::default();
    for s in specs {
        let (kind, arg) = s.split_once('=').map(|(k, a)| (k, Some(a))).unwrap_or((s.as_str(), None));
        let items: Vec<&str> = arg.map(|a| a.split(',').collect()).unwrap_or_default();
        match kind {
            "drop" => {
                let mut f = DropFilter::default();
                for it in &items {
                    match it.parse::<IpAddr>() {
                        Ok(a) => f.addrs.push(a),
                        Err(_) => f.ports.push(it.parse()?),
                    }
                }
                if items.is_empty() {
                    return Err("--xdp drop=ADDR|tcp:PORT|udp:PORT,...".into());
                }
                chain.0.push(Box::new(f));
            }
            "reflect" | "reflect-l2" => {
                let only = match items.first() {
                    Some(p) => Some(p.parse()?),
                    None => None,
                };
                chain.0.push(Box::new(Reflector { only, l3: kind == "reflect" }));
            }
            "redirect" => {
                let ports = items.iter().map(|p| p.parse()).collect::<Result<Vec<PortMatch>, String>>()?;
                if ports.is_empty() {
                    return Err("--xdp redirect=udp:PORT,...".into());
                }
                chain.0.push(Box::new(Redirector { ports, target: 0 }));
            }
            _ => return Err(format!("--xdp {s}: drop=..., reflect[=PORT], reflect-l2[=PORT] or redirect=...")),
        }
    }
    Ok(Box::new(chain))
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xA];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xB];

    fn run(p: &mut dyn XdpProgram, frame: &mut Vec<u8>) -> XdpAction {
        let mut f = XdpFrame::new(frame);
        let a = p.run(&mut f, &XdpMeta::default());
        f.finish();
        a
    }

    #[test]
    fn the_drop_filter_drops_what_it_lists() {
        let mut f = DropFilter { addrs: vec!["10.0.0.66".parse().unwrap()], ports: vec!["udp:9999".parse().unwrap()] };
        let mut to_port = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 9999).write(&mut to_port, b"x").unwrap();
        assert_eq!(run(&mut f, &mut to_port), XdpAction::Drop);
        let mut other = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 9998).write(&mut other, b"x").unwrap();
        assert_eq!(run(&mut f, &mut other), XdpAction::Pass);
        let mut from = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 66], [10, 0, 0, 2], 64).tcp(1, 80, 0, 10).write(&mut from, b"").unwrap();
        assert_eq!(run(&mut f, &mut from), XdpAction::Drop);
        let mut arp = vec![0xFF; 6];
        arp.extend_from_slice(&A);
        arp.extend_from_slice(&[8, 6]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(run(&mut f, &mut arp), XdpAction::Pass, "not IP: passes");
    }

    #[test]
    fn the_reflector_answers_an_echo_with_valid_checksums() {
        let mut r = Reflector { only: None, l3: true };
        let mut ping = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut ping, b"abcdefgh")
            .unwrap();
        assert_eq!(run(&mut r, &mut ping), XdpAction::Tx);
        let s = SlicedPacket::from_ethernet(&ping).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(e)) = &s.link else { panic!() };
        assert_eq!((e.source(), e.destination()), (B, A));
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else { panic!() };
        assert_eq!((ip.header().source(), ip.header().destination()), ([10, 0, 0, 2], [10, 0, 0, 1]));
        let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!() };
        assert!(matches!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoReply(_)));
        assert_eq!(icmp.header().checksum, icmp.icmp_type().calc_checksum(icmp.payload()));
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv6([1; 16], [2; 16], 64).udp(4000, 7777).write(&mut udp, b"echo me").unwrap();
        let mut only = Reflector { only: Some("udp:7777".parse().unwrap()), l3: true };
        assert_eq!(run(&mut only, &mut udp), XdpAction::Tx);
        let s = SlicedPacket::from_ethernet(&udp).unwrap();
        let Some(TransportSlice::Udp(u)) = &s.transport else { panic!() };
        assert_eq!((u.source_port(), u.destination_port()), (7777, 4000));
        let h = u.to_header();
        assert_eq!(h.calc_checksum_ipv6_raw([2; 16], [1; 16], u.payload()).unwrap(), h.checksum);
    }

    #[test]
    fn specs_build_a_chain() {
        let p = program(&["drop=udp:9999,10.0.0.66".into(), "reflect=udp:7777".into(), "redirect=udp:7778".into()]).unwrap();
        assert_eq!(p.name(), "drop-filter+reflector-l3+redirector");
        assert!(program(&["frob".into()]).is_err());
        assert!(program(&["drop=udp:x".into()]).is_err());
    }
}
