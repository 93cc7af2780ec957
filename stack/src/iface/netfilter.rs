//! The stack's netfilter hooks: PREROUTING and INPUT on what arrives, OUTPUT and POSTROUTING on what the
//! stack itself sends (FORWARD and the forwarded packets' POSTROUTING run in the router). Multicast
//! neighbour discovery and the stack's own REJECT answers bypass the output hooks.

use super::*;
use crate::netfilter::reject::{self, Reply};
use crate::netfilter::{At, Ctx, Hook, Netfilter, RejectWith, Verdict};
use crate::wire::{icmp, icmpv6, ipv6};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

impl Stack {
    /// Attaches a netfilter (rules, conntrack, NAT), shared with the other interfaces of the host. The
    /// stack's own sends then carry whole checksums (NAT may rewrite them), not partial ones for the device.
    pub fn set_netfilter(&mut self, nf: Rc<RefCell<Netfilter>>) {
        self.nf = Some(nf);
    }

    pub fn netfilter(&self) -> Option<&Rc<RefCell<Netfilter>>> {
        self.nf.as_ref()
    }

    /// This interface's primary address in a family: MASQUERADE's source, REDIRECT's destination.
    pub fn primary_addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            let addrs = self.ipv6_addrs();
            addrs.iter().find(|(a, _, _)| !ipv6::is_link_local(a)).or(addrs.first()).map(|(a, _, _)| IpAddr::from(*a))
        } else {
            Some(IpAddr::from(self.cfg.addr))
        }
    }

    /// Runs `hook` with this interface as the input or output interface, or `lo` for a packet to one of
    /// the stack's own addresses (`lo`; the address given for `lo` is still this interface's, where Linux
    /// would give 127.0.0.1 or ::1, which the stack does not hold).
    fn nf_run(&mut self, hook: Hook, lo: bool, ctx: &mut Ctx, pkt: &mut [u8], now: Instant) -> Verdict {
        let Some(nf) = self.nf.clone() else { return Verdict::Accept };
        let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
        let name = if lo { "lo".to_string() } else { self.name() };
        let addr = self.primary_addr(v6);
        let (iif, oif) = match hook {
            Hook::Prerouting | Hook::Input => (Some(name.as_str()), None),
            _ => (None, Some(name.as_str())),
        };
        let (iif_addr, oif_addr) = if iif.is_some() { (addr, None) } else { (None, addr) };
        let at = At { hook, iif, oif, iif_addr, oif_addr };
        let r = nf.borrow_mut().hook(&at, ctx, pkt, now);
        r
    }

    /// PREROUTING for every packet, then INPUT for those addressed here. False when netfilter took it.
    pub(super) fn nf_input(&mut self, p: &mut PacketBuf, now: Instant) -> bool {
        p.linearize();
        let mut ctx = Ctx::default();
        let lo = self.in_lo;
        let r = self.nf_run(Hook::Prerouting, lo, &mut ctx, p.data_mut(), now);
        self.nf_ctx = ctx;
        if !self.nf_verdict(r, p.data(), now) {
            return false;
        }
        if !self.addressed_here(p.data()) {
            return true;
        }
        let r = self.nf_run(Hook::Input, lo, &mut ctx, p.data_mut(), now);
        self.nf_ctx = ctx;
        self.nf_verdict(r, p.data(), now)
    }

    /// INPUT for a packet that arrived on another interface of the host (`iif`). False when netfilter
    /// took it.
    pub(super) fn nf_input_from(&mut self, iif: &str, ctx: &mut Ctx, p: &mut PacketBuf, now: Instant) -> bool {
        let Some(nf) = self.nf.clone() else { return true };
        p.linearize();
        let v6 = p.data().first().is_some_and(|b| b >> 4 == 6);
        let at = At { hook: Hook::Input, iif: Some(iif), oif: None, iif_addr: self.primary_addr(v6), oif_addr: None };
        let r = nf.borrow_mut().hook(&at, ctx, p.data_mut(), now);
        self.nf_verdict(r, p.data(), now)
    }

    /// Whether an IP packet is for this host (after PREROUTING's destination NAT).
    fn addressed_here(&self, pkt: &[u8]) -> bool {
        match pkt.first().map(|b| b >> 4) {
            Some(4) if pkt.len() >= 20 => {
                let dst = [pkt[16], pkt[17], pkt[18], pkt[19]];
                self.owns_v4(dst) || self.is_broadcast(dst) || dst[0] >= 224
            }
            Some(6) if pkt.len() >= ipv6::HEADER_LEN => {
                let mut d = [0u8; 16];
                d.copy_from_slice(&pkt[24..40]);
                ipv6::is_multicast(&d) || self.v6.as_ref().is_some_and(|v| v.owns(&d).is_some())
            }
            _ => false,
        }
    }

    /// Carries out a verdict on a received packet: true to go on.
    fn nf_verdict(&mut self, r: Verdict, pkt: &[u8], now: Instant) -> bool {
        match r {
            Verdict::Accept | Verdict::Nat(_) => true,
            Verdict::Drop => {
                self.stats.nf_drops += 1;
                self.drop_reason(crate::monitor::DropReason::NetfilterDrop, 1);
                false
            }
            Verdict::Reject(w) => {
                self.stats.nf_drops += 1;
                self.drop_reason(crate::monitor::DropReason::NetfilterDrop, 1);
                self.nf_reject(pkt, w, now);
                false
            }
        }
    }

    /// Answers a rejected packet that arrived here: a TCP reset or an ICMP / ICMPv6 unreachable.
    pub fn nf_reject(&mut self, pkt: &[u8], with: RejectWith, now: Instant) {
        let Some(v) = crate::netfilter::packet::View::parse(pkt, false) else { return };
        match reject::reply_for(with, v.v6, v.proto) {
            Reply::TcpReset => {
                let Some(rst) = reject::tcp_reset(pkt) else { return };
                match v.src {
                    IpAddr::V4(s) => {
                        if let Some(hop) = self.next_hop_v4(s.octets()) {
                            self.output(PacketBuf::from_slice(&rst), hop, now);
                        }
                    }
                    IpAddr::V6(s) => {
                        if let Some(hop) = self.v6.as_ref().and_then(|x| x.next_hop(&s.octets())) {
                            self.output6(PacketBuf::from_slice(&rst), hop, now);
                        }
                    }
                }
            }
            Reply::Icmp(code) => self.icmp_error_v4(pkt, icmp::DEST_UNREACHABLE, code, 0, now),
            Reply::Icmp6(code) => self.icmp6_error_about(pkt, icmpv6::DEST_UNREACHABLE, code, 0, now),
        }
    }

    /// OUTPUT for a packet the stack sends: its context, and whether OUTPUT's NAT moved its destination.
    /// `None` when netfilter took it.
    fn nf_output(&mut self, p: &mut PacketBuf, lo: bool, now: Instant) -> Option<(Ctx, bool)> {
        p.linearize();
        let at = if p.data().first().is_some_and(|b| b >> 4 == 6) { 24..40 } else { 16..20 };
        let dst = |p: &PacketBuf| {
            let mut a = [0u8; 16];
            if let Some(d) = p.data().get(at.clone()) {
                a[..d.len()].copy_from_slice(d);
            }
            a
        };
        let before = dst(p);
        let mut ctx = Ctx::default();
        let r = self.nf_run(Hook::Output, lo, &mut ctx, p.data_mut(), now);
        if !matches!(r, Verdict::Accept) {
            self.stats.nf_drops += 1;
            self.drop_reason(crate::monitor::DropReason::NetfilterDrop, 1);
            return None;
        }
        Some((ctx, dst(p) != before))
    }

    /// POSTROUTING for a packet the stack sends out of this interface. False when netfilter took it.
    fn nf_postrouting(&mut self, p: &mut PacketBuf, lo: bool, mut ctx: Ctx, now: Instant) -> bool {
        let r = self.nf_run(Hook::Postrouting, lo, &mut ctx, p.data_mut(), now);
        if !matches!(r, Verdict::Accept) {
            self.stats.nf_drops += 1;
            self.drop_reason(crate::monitor::DropReason::NetfilterDrop, 1);
            return false;
        }
        p.mark = ctx.mark;
        true
    }

    /// A locally generated IPv4 packet on its way out: OUTPUT, the first hop again if OUTPUT's NAT moved
    /// the destination, then POSTROUTING here, or (off the link of an interface of a host with several)
    /// the host's routing, which runs POSTROUTING where the packet leaves. To an address of this host,
    /// this interface's or another's, it goes through `lo` (both hooks see `lo`) and comes back in.
    pub(super) fn local_out(&mut self, mut p: PacketBuf, next_hop: [u8; 4], now: Instant) {
        let mut hop = next_hop;
        if self.nf.is_some() {
            let lo = self.owns_v4(hop) || self.for_host_addr(p.data());
            let Some((ctx, moved)) = self.nf_output(&mut p, lo, now) else { return };
            if moved {
                let d = p.data();
                let Some(h) = self.next_hop_v4([d[16], d[17], d[18], d[19]]) else { return };
                hop = h;
            }
            let to_host = self.for_host_addr(p.data());
            if hop == super::HOST_HOP4 && self.host_routed && !to_host {
                return self.send_to_host(p, ctx);
            }
            if !self.nf_postrouting(&mut p, self.owns_v4(hop) || to_host, ctx, now) {
                return;
            }
            if to_host {
                return self.looped.push(p);
            }
        } else if self.for_host_addr(p.data()) {
            return self.looped.push(p);
        }
        self.output(p, hop, now);
    }

    /// A locally generated unicast IPv6 packet on its way out, as `local_out`.
    pub(super) fn local_out6(&mut self, mut p: PacketBuf, hop: ipv6::Addr, now: Instant) {
        let mut hop = hop;
        let own = |s: &Stack, h: &ipv6::Addr| s.v6.as_ref().is_some_and(|v| v.owns(h).is_some());
        if self.nf.is_some() {
            let lo = own(self, &hop) || self.for_host_addr(p.data());
            let Some((ctx, moved)) = self.nf_output(&mut p, lo, now) else { return };
            if moved {
                let mut d = [0u8; 16];
                d.copy_from_slice(&p.data()[24..40]);
                let Some(h) = self.v6.as_ref().and_then(|x| x.next_hop(&d)) else { return };
                hop = h;
            }
            let to_host = self.for_host_addr(p.data());
            if hop == super::HOST_HOP6 && self.host_routed && !to_host {
                return self.send_to_host(p, ctx);
            }
            if !self.nf_postrouting(&mut p, own(self, &hop) || to_host, ctx, now) {
                return;
            }
            if to_host {
                return self.looped.push(p);
            }
        } else if self.for_host_addr(p.data()) {
            return self.looped.push(p);
        }
        self.output6(p, hop, now);
    }
}

#[cfg(test)]
mod test {
    use crate::dev::sim::{link, Impairment};
    use crate::time::Instant;
    use crate::{Ping6Event, PingEvent, Stack};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    /// Packets a stack sends to its own addresses go through `lo`, as Linux routes them: OUTPUT and
    /// POSTROUTING see `lo` as their output interface, PREROUTING and INPUT as their input one, so a
    /// Linux ruleset that accepts `iif lo` under a drop policy lets a host reach itself. They do not pass
    /// the device: its counters and the wire stay untouched. IPv4 and IPv6 (the latter used to be sent to
    /// the neighbour cache, which never resolves one's own address).
    #[test]
    fn packets_to_our_own_addresses_go_through_lo() {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (a, _peer) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock.clone());
        let own6: std::net::Ipv6Addr = "2001:db8:7::1".parse().unwrap();
        let mut cfg = crate::Config::new([10, 7, 0, 1], 24);
        cfg.ipv6 = Some(crate::Ipv6Config { addrs: vec![(own6.octets(), 64)], dad_transmits: 0, accept_ra: false, ..Default::default() });
        let mut s = Stack::new(Box::new(a), cfg);
        s.set_name("eth0");
        let rules = "table inet f {\n\
                     chain out { type filter hook output priority 0; oifname \"lo\" counter }\n\
                     chain post { type filter hook postrouting priority 0; oifname \"lo\" counter }\n\
                     chain pre { type filter hook prerouting priority 0; iifname \"lo\" counter }\n\
                     chain inp { type filter hook input priority 0; policy drop; iifname \"lo\" accept }\n}\n";
        let nf = crate::netfilter::Netfilter::new(crate::netfilter::parse::parse(rules).unwrap());
        s.set_netfilter(Rc::new(RefCell::new(nf)));
        let run = |s: &mut Stack| {
            for _ in 0..20 {
                let now = *clock.borrow();
                s.poll(now);
                *clock.borrow_mut() = now + Duration::from_millis(1);
            }
        };
        run(&mut s);
        let (rx, tx) = (s.stats.rx_packets, s.stats.tx_packets);
        let now = *clock.borrow();
        s.ping_send([10, 7, 0, 1], 4, 1, b"to self", now).unwrap();
        s.ping6_send(own6.octets(), 6, 1, b"to self", now).unwrap();
        run(&mut s);
        let ev = s.ping_events(4);
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 7, 0, 1], .. }]), "{ev:?}");
        let ev6 = s.ping6_events(6);
        assert!(matches!(ev6.as_slice(), [Ping6Event::Reply { .. }]), "{ev6:?}");
        // Requests and replies, both families: four packets through each hook's `lo` rule.
        let listing = s.netfilter().unwrap().borrow().rules.listing();
        assert_eq!(listing.matches("counter # packets 4 ").count(), 3, "{listing}");
        assert_eq!((s.stats.rx_packets, s.stats.tx_packets), (rx, tx), "the device saw none of them");
    }
}
