//! The stack's netfilter hooks: PREROUTING and INPUT on what arrives, OUTPUT and POSTROUTING on what the
//! stack itself sends (FORWARD and the forwarded packets' POSTROUTING run in the router). Multicast
//! neighbour discovery and the stack's own REJECT answers bypass the output hooks.

use super::*;
use crate::netfilter::reject::{self, Reply};
use crate::netfilter::{At, Ctx, Hook, Netfilter, RejectWith, Verdict};
use crate::wire::{icmp, icmpv6, ipv4, ipv6};
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

    /// Runs `hook` with this interface as the input or output interface, or `lo` (with its address,
    /// 127.0.0.1 or ::1) for a packet to one of the host's own addresses.
    fn nf_run(&mut self, hook: Hook, lo: bool, ctx: &mut Ctx, pkt: &mut [u8], now: Instant) -> Verdict {
        let Some(nf) = self.nf.clone() else { return Verdict::Accept };
        let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
        let name = if lo { "lo".to_string() } else { self.name() };
        let addr = match (lo, v6) {
            (true, false) => Some(IpAddr::from(ipv4::LOOPBACK)),
            (true, true) => Some(IpAddr::from(ipv6::LOOPBACK)),
            (false, _) => self.primary_addr(v6),
        };
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
        let lo = self.in_lo;
        // Through `lo`, a packet keeps its connection and mark from the way out, as an skb keeps them.
        let mut ctx = if lo { Ctx { ct: p.ct, mark: p.mark, ..Ctx::default() } } else { Ctx::default() };
        let r = self.nf_run(Hook::Prerouting, lo, &mut ctx, p.data_mut(), now);
        self.nf_ctx = ctx;
        if !self.nf_verdict(r, p.data(), now) {
            return false;
        }
        // Routing's verdict on a loopback address from a wire comes before INPUT.
        if self.dropped_martian(p.data()) {
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
                self.owns_v4(dst) || self.is_broadcast(dst) || dst[0] >= 224 || (self.in_lo && ipv4::is_loopback(dst))
            }
            Some(6) if pkt.len() >= ipv6::HEADER_LEN => {
                let mut d = [0u8; 16];
                d.copy_from_slice(&pkt[24..40]);
                ipv6::is_multicast(&d) || self.v6.as_ref().is_some_and(|v| v.owns(&d).is_some()) || (self.in_lo && ipv6::is_loopback(&d))
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
        p.ct = ctx.ct;
        true
    }

    /// A locally generated IPv4 packet on its way out: OUTPUT, the first hop again if OUTPUT's NAT moved
    /// the destination, then POSTROUTING here, or (off the link of an interface of a host with several)
    /// the host's routing, which runs POSTROUTING where the packet leaves. To an address of this host,
    /// this interface's or another's, it goes through `lo` (both hooks see `lo`) and comes back in.
    pub(super) fn local_out(&mut self, mut p: PacketBuf, next_hop: [u8; 4], now: Instant) {
        let mut hop = next_hop;
        if self.nf.is_some() {
            let mut to_host = self.for_host_addr(p.data());
            let Some((ctx, moved)) = self.nf_output(&mut p, self.local_v4(hop) || to_host, now) else { return };
            if moved {
                let d = p.data();
                let Some(h) = self.next_hop_v4([d[16], d[17], d[18], d[19]]) else { return };
                hop = h;
                to_host = self.for_host_addr(p.data());
            }
            if hop == super::HOST_HOP4 && self.host_routed && !to_host {
                return self.send_to_host(p, ctx);
            }
            if !self.nf_postrouting(&mut p, self.local_v4(hop) || to_host, ctx, now) {
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
        let own = |s: &Stack, h: &ipv6::Addr| ipv6::is_loopback(h) || s.v6.as_ref().is_some_and(|v| v.owns(h).is_some());
        if self.nf.is_some() {
            let mut to_host = self.for_host_addr(p.data());
            let Some((ctx, moved)) = self.nf_output(&mut p, own(self, &hop) || to_host, now) else { return };
            if moved {
                let mut d = [0u8; 16];
                d.copy_from_slice(&p.data()[24..40]);
                let Some(h) = self.v6.as_ref().and_then(|x| x.next_hop(&d)) else { return };
                hop = h;
                to_host = self.for_host_addr(p.data());
            }
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

    /// A stack named eth0 at 10.7.0.1/24 (gateway 10.7.0.2) and 2001:db8:7::1/64 on a simulated link, with
    /// `rules`, polled for 30 ms; the link's other end and the clock.
    fn host_with_rules(rules: &str) -> (Stack, crate::dev::sim::SimPort, Rc<RefCell<Instant>>) {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (a, peer) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock.clone());
        let own6: std::net::Ipv6Addr = "2001:db8:7::1".parse().unwrap();
        let mut cfg = crate::Config::new([10, 7, 0, 1], 24);
        cfg.gateway = Some([10, 7, 0, 2]);
        cfg.ipv6 = Some(crate::Ipv6Config { addrs: vec![(own6.octets(), 64)], dad_transmits: 0, accept_ra: false, ..Default::default() });
        let mut s = Stack::new(Box::new(a), cfg);
        s.set_name("eth0");
        let nf = crate::netfilter::Netfilter::new(crate::netfilter::parse::parse(rules).unwrap());
        s.set_netfilter(Rc::new(RefCell::new(nf)));
        run(&mut s, &clock);
        (s, peer, clock)
    }

    /// 30 ms of polls on the virtual clock.
    fn run(s: &mut Stack, clock: &Rc<RefCell<Instant>>) {
        for _ in 0..30 {
            let now = *clock.borrow();
            s.poll(now);
            *clock.borrow_mut() = now + Duration::from_millis(1);
        }
    }

    /// Packets a stack sends to its own addresses go through `lo`, as Linux routes them: OUTPUT and
    /// POSTROUTING see `lo` as their output interface, PREROUTING and INPUT as their input one, so a
    /// Linux ruleset that accepts `iif lo` under a drop policy lets a host reach itself. They do not pass
    /// the device: its counters and the wire stay untouched. IPv4 and IPv6 (the latter used to be sent to
    /// the neighbour cache, which never resolves one's own address).
    #[test]
    fn packets_to_our_own_addresses_go_through_lo() {
        let rules = "table inet f {\n\
                     chain out { type filter hook output priority 0; oifname \"lo\" counter }\n\
                     chain post { type filter hook postrouting priority 0; oifname \"lo\" counter }\n\
                     chain pre { type filter hook prerouting priority 0; iifname \"lo\" counter }\n\
                     chain inp { type filter hook input priority 0; policy drop; iifname \"lo\" accept }\n}\n";
        let (mut s, _peer, clock) = host_with_rules(rules);
        let own6: std::net::Ipv6Addr = "2001:db8:7::1".parse().unwrap();
        let run = |s: &mut Stack| run(s, &clock);
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

    /// A frame from the peer's side of a simulated link carrying an ICMP echo request (IPv4) or ICMPv6 echo
    /// request (IPv6) from `src` to `dst`.
    fn echo_frame(to: [u8; 6], src: std::net::IpAddr, dst: std::net::IpAddr) -> crate::skb::PacketBuf {
        use crate::wire::{ethernet, icmp, icmpv6, ipv4, ipv6};
        let (ethertype, ip) = match (src, dst) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                let m = icmp::Repr::EchoRequest { ident: 1, seq: 1, data: b"martian" };
                let mut b = vec![0u8; 20 + m.buffer_len()];
                let r = ipv4::Repr {
                    src: s.octets(),
                    dst: d.octets(),
                    protocol: ipv4::PROTO_ICMP,
                    ttl: 64,
                    ident: 1,
                    dont_frag: false,
                    more_frags: false,
                    frag_offset: 0,
                    payload_len: m.buffer_len(),
                };
                r.emit(&mut b[..20]);
                m.emit(&mut b[20..]);
                (ethernet::ETHERTYPE_IPV4, b)
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                let body = icmpv6::Repr::EchoRequest { ident: 1, seq: 1, data: b"martian" }.emit(&s.octets(), &d.octets());
                let mut b = vec![0u8; ipv6::HEADER_LEN + body.len()];
                let r =
                    ipv6::Repr { src: s.octets(), dst: d.octets(), next_header: ipv6::NH_ICMPV6, hop_limit: 64, payload_len: body.len() };
                r.emit(&mut b[..ipv6::HEADER_LEN]);
                b[ipv6::HEADER_LEN..].copy_from_slice(&body);
                (ethernet::ETHERTYPE_IPV6, b)
            }
            _ => unreachable!("one family"),
        };
        let mut f = vec![0u8; 14];
        ethernet::Repr { dst: to, src: [2, 0, 0, 0, 0, 2], ethertype }.emit(&mut f);
        f.extend_from_slice(&ip);
        crate::skb::PacketBuf::from_slice(&f)
    }

    /// 127.0.0.0/8 and ::1 are the host's own, on `lo`, as on Linux: pings to them are answered from them,
    /// TCP connects to 127.0.0.1 and [::1], UDP reaches a socket there (or draws ECONNREFUSED), netfilter
    /// sees `lo` with 127.0.0.1 or ::1 as its address, so REDIRECT in OUTPUT sends a connection to the host
    /// itself; nothing of this reaches the device. The same addresses arriving from a wire are martians:
    /// dropped (IP_LOCALNET, IP_INHDR), not answered.
    #[test]
    fn the_loopback_addresses_are_the_hosts_own_and_never_a_wires() {
        use crate::dev::Device;
        let rules = "table inet f {\n\
                     chain out { type filter hook output priority 0; oifname \"lo\" counter }\n\
                     chain nat { type nat hook output priority -100; tcp dport 80 redirect to :8080 }\n\
                     chain inp { type filter hook input priority 0; policy drop; iifname \"lo\" ip daddr 127.0.0.0/8 accept; \
                     iifname \"lo\" ip6 daddr ::1 accept; iifname \"lo\" ip daddr 10.7.0.1 accept }\n}\n";
        let (mut s, mut peer, clock) = host_with_rules(rules);
        let run = |s: &mut Stack| run(s, &clock);
        let (rx, tx) = (s.stats.rx_packets, s.stats.tx_packets);
        let now = *clock.borrow();
        s.ping_send([127, 0, 0, 1], 4, 1, b"localhost", now).unwrap();
        s.ping_send([127, 5, 5, 5], 5, 1, b"the /8", now).unwrap();
        s.ping6_send(std::net::Ipv6Addr::LOCALHOST.octets(), 6, 1, b"localhost", now).unwrap();
        run(&mut s);
        let ev = s.ping_events(4);
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [127, 0, 0, 1], .. }]), "{ev:?}");
        let ev = s.ping_events(5);
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [127, 5, 5, 5], .. }]), "{ev:?}");
        let ev6 = s.ping6_events(6);
        assert!(matches!(ev6.as_slice(), [Ping6Event::Reply { from, .. }] if *from == std::net::Ipv6Addr::LOCALHOST.octets()), "{ev6:?}");
        // TCP to 127.0.0.1 and [::1], and to an address off the link that OUTPUT redirects to 127.0.0.1:8080.
        let l = s.tcp_listen(8080, 4).unwrap();
        let lo4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: std::net::IpAddr = "::1".parse().unwrap();
        let far: std::net::IpAddr = "192.0.2.80".parse().unwrap();
        for (dst, port, local) in [(lo4, 8080, lo4), (lo6, 8080, lo6), (far, 80, lo4)] {
            let now = *clock.borrow();
            let c = s.tcp_connect_ip(0, dst, port, now).unwrap();
            run(&mut s);
            let a = s.tcp_accept(l).unwrap_or_else(|e| panic!("{dst}: not accepted ({e:?}), drops {:?}", s.mon.drops()));
            assert_eq!(s.tcp_conn(a).map(|t| t.local.0), Some(local), "{dst}");
            assert_eq!(s.tcp_conn(c).map(|t| t.remote), Some((dst, port)), "{dst}: the client still sees where it connected");
            let now = *clock.borrow();
            assert_eq!(s.tcp_send(c, b"hello", now), Ok(5));
            run(&mut s);
            let mut buf = [0u8; 8];
            let now = *clock.borrow();
            assert_eq!(s.tcp_recv(a, &mut buf, now).map(|n| buf[..n].to_vec()), Ok(b"hello".to_vec()), "{dst}");
        }
        // UDP: a datagram to 127.0.0.1 arrives from 127.0.0.1; one to a closed port draws ECONNREFUSED.
        let (u, v) = (s.udp_bind(5353).unwrap(), s.udp_bind(0).unwrap());
        let now = *clock.borrow();
        s.udp_send_to_ip(v, lo4, 5353, b"dgram", now).unwrap();
        s.udp_send_to_ip(v, lo4, 9, b"nobody", now).unwrap();
        run(&mut s);
        assert!(matches!(s.udp_recv_from_ip(u), Ok((d, from, _)) if d == b"dgram" && from == lo4));
        assert_eq!(s.udp_recv_from_ip(v), Err(crate::iface::ECONNREFUSED));
        assert_eq!((s.stats.rx_packets, s.stats.tx_packets), (rx, tx), "the device saw none of them");
        let listing = s.netfilter().unwrap().borrow().rules.listing();
        assert!(!listing.contains("counter # packets 0 "), "{listing}");
        // From the wire: dropped before INPUT, not answered.
        let drops = |s: &Stack| s.mon.drops();
        let before = drops(&s);
        for (src, dst) in [("10.7.0.2", "127.0.0.1"), ("127.0.0.1", "10.7.0.1"), ("2001:db8:7::2", "::1"), ("::1", "2001:db8:7::1")] {
            let f = echo_frame([2, 0, 0, 0, 0, 1], src.parse().unwrap(), dst.parse().unwrap());
            peer.transmit(&mut std::collections::VecDeque::from([f])).unwrap();
        }
        let tx = s.stats.tx_packets;
        run(&mut s);
        assert_eq!(s.stats.tx_packets, tx, "no answer to a martian");
        let after = drops(&s);
        let n = |v: &[(crate::monitor::DropReason, u64)], r| v.iter().find(|x| x.0 == r).map_or(0, |x| x.1);
        use crate::monitor::DropReason::{IpInhdr, IpLocalnet};
        assert_eq!(n(&after, IpLocalnet) - n(&before, IpLocalnet), 2, "{after:?}");
        assert_eq!(n(&after, IpInhdr) - n(&before, IpInhdr), 2, "{after:?}");
    }
}
