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

    fn nf_run(&mut self, hook: Hook, ctx: &mut Ctx, pkt: &mut [u8], now: Instant) -> Verdict {
        let Some(nf) = self.nf.clone() else { return Verdict::Accept };
        let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
        let name = self.name();
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
        let r = self.nf_run(Hook::Prerouting, &mut ctx, p.data_mut(), now);
        self.nf_ctx = ctx;
        if !self.nf_verdict(r, p.data(), now) {
            return false;
        }
        if !self.addressed_here(p.data()) {
            return true;
        }
        let r = self.nf_run(Hook::Input, &mut ctx, p.data_mut(), now);
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
    fn nf_output(&mut self, p: &mut PacketBuf, now: Instant) -> Option<(Ctx, bool)> {
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
        let r = self.nf_run(Hook::Output, &mut ctx, p.data_mut(), now);
        if !matches!(r, Verdict::Accept) {
            self.stats.nf_drops += 1;
            self.drop_reason(crate::monitor::DropReason::NetfilterDrop, 1);
            return None;
        }
        Some((ctx, dst(p) != before))
    }

    /// POSTROUTING for a packet the stack sends out of this interface. False when netfilter took it.
    fn nf_postrouting(&mut self, p: &mut PacketBuf, mut ctx: Ctx, now: Instant) -> bool {
        let r = self.nf_run(Hook::Postrouting, &mut ctx, p.data_mut(), now);
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
    /// the host's routing, which runs POSTROUTING where the packet leaves.
    pub(super) fn local_out(&mut self, mut p: PacketBuf, next_hop: [u8; 4], now: Instant) {
        let mut hop = next_hop;
        if self.nf.is_some() {
            let Some((ctx, moved)) = self.nf_output(&mut p, now) else { return };
            if moved {
                let d = p.data();
                let Some(h) = self.next_hop_v4([d[16], d[17], d[18], d[19]]) else { return };
                hop = h;
            }
            if hop == super::HOST_HOP4 && self.host_routed {
                return self.send_to_host(p, ctx);
            }
            if !self.nf_postrouting(&mut p, ctx, now) {
                return;
            }
        }
        self.output(p, hop, now);
    }

    /// A locally generated unicast IPv6 packet on its way out, as `local_out`.
    pub(super) fn local_out6(&mut self, mut p: PacketBuf, hop: ipv6::Addr, now: Instant) {
        let mut hop = hop;
        if self.nf.is_some() {
            let Some((ctx, moved)) = self.nf_output(&mut p, now) else { return };
            if moved {
                let mut d = [0u8; 16];
                d.copy_from_slice(&p.data()[24..40]);
                let Some(h) = self.v6.as_ref().and_then(|x| x.next_hop(&d)) else { return };
                hop = h;
            }
            if hop == super::HOST_HOP6 && self.host_routed {
                return self.send_to_host(p, ctx);
            }
            if !self.nf_postrouting(&mut p, ctx, now) {
                return;
            }
        }
        self.output6(p, hop, now);
    }
}
