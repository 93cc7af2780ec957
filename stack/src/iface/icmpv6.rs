//! ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861, 4862): echo both ways; errors sent for what we
//! cannot deliver and errors received mapped to the sender's socket error (Packet Too Big lowering the
//! path MTU, RFC 8201); neighbour solicitations answered and advertisements taken; duplicate address
//! detection; router advertisements giving default routers, on-link prefixes, autoconfigured addresses
//! and the link MTU; redirects from the current router.

use super::ipv6::{AddrState, Origin, Ping6Event};
use super::*;
use crate::wire::icmpv6::{self, Repr};
use crate::wire::ipv6::{self, Addr};

impl Stack {
    pub(super) fn icmp6_input(&mut self, ip: &ipv6::Repr, data: &[u8], now: Instant) {
        let m = match Repr::parse(&ip.src, &ip.dst, data) {
            Ok(m) => m,
            Err(_) => {
                self.stats.in_csum_errors += 1;
                self.drop_reason(crate::monitor::DropReason::IcmpCsum, 1);
                return;
            }
        };
        let nd = matches!(
            m,
            Repr::RouterSolicit { .. }
                | Repr::RouterAdvert { .. }
                | Repr::NeighborSolicit { .. }
                | Repr::NeighborAdvert { .. }
                | Repr::Redirect { .. }
        );
        // ND messages come from the link itself: hop limit 255 (RFC 4861 6.1, 7.1).
        if nd && ip.hop_limit != 255 {
            return;
        }
        match m {
            Repr::EchoRequest { ident, seq, data } => {
                self.stats.icmp6_in_echos += 1;
                self.stats.icmp6_out_echo_replies += 1;
                let reply = Repr::EchoReply { ident, seq, data };
                // To a multicast group: answer from a unicast address of ours.
                let src = if ipv6::is_multicast(&ip.dst) { None } else { Some(ip.dst) };
                let Some(from) = src.or_else(|| self.v6.as_ref().and_then(|v| v.source_for(&ip.src))) else { return };
                let body = reply.emit(&from, &ip.src);
                let _ = self.ip6_send(Some(from), ip.src, ipv6::NH_ICMPV6, &body, now);
            }
            Repr::EchoReply { ident, seq, data } => {
                if let Some(q) = self.socks.pings6.get_mut(&ident) {
                    q.push_back(Ping6Event::Reply { from: ip.src, seq, len: data.len(), at: now });
                }
            }
            Repr::Error { kind, code, param, original } => self.icmp6_error_input(ip.src, kind, code, param, original),
            Repr::NeighborSolicit { target, source_ll } => self.ns_input(ip, target, source_ll, now),
            Repr::NeighborAdvert { flags, target, target_ll } => self.na_input(target, flags, target_ll, now),
            Repr::RouterAdvert { hop_limit, lifetime, reachable_ms, retrans_ms, options } => {
                self.ra_input(ip, hop_limit, lifetime, reachable_ms, retrans_ms, options, now)
            }
            Repr::Redirect { target, dest, target_ll } => self.redirect_input(ip, target, dest, target_ll, now),
            Repr::RouterSolicit { .. } | Repr::Other { .. } => {} // a host ignores solicitations for routers
        }
    }

    /// A neighbour solicitation (RFC 4861 7.2.3, RFC 4862 5.4.3).
    fn ns_input(&mut self, ip: &ipv6::Repr, target: Addr, source_ll: Option<Mac>, now: Instant) {
        let mac = self.mac;
        let Some(v) = self.v6.as_mut() else { return };
        let Some(a) = v.addrs.iter_mut().find(|a| a.addr == target) else { return };
        let dad = ip.src == ipv6::UNSPECIFIED;
        if dad && ipv6::is_multicast(&ip.dst) && source_ll.is_some() {
            return; // a DAD probe carries no source link-layer address
        }
        match a.state {
            AddrState::Duplicate => return,
            AddrState::Tentative { .. } => {
                // Another node probes the same tentative address: it is a duplicate (5.4.3); any other
                // solicitation for a tentative address is not answered.
                if dad {
                    a.state = AddrState::Duplicate;
                    log::warn!("IPv6 address {} is in use by another node (DAD)", ipv6::fmt_addr(&target));
                }
                return;
            }
            AddrState::Preferred => {}
        }
        if let Some(m) = source_ll.filter(|_| !dad) {
            let waiting = v.neigh.on_source_ll(ip.src, m, now);
            for p in waiting {
                self.send_l2(p, m, crate::wire::ethernet::ETHERTYPE_IPV6);
            }
        }
        // The answer: solicited and overriding, unicast to the asker (or to all nodes for a DAD probe).
        let (dst, flags) = if dad { (ipv6::ALL_NODES, icmpv6::NA_OVERRIDE) } else { (ip.src, icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE) };
        let m = Repr::NeighborAdvert { flags, target, target_ll: Some(mac) };
        let to = if dad { None } else { source_ll.or_else(|| self.v6.as_ref().and_then(|v| v.neigh.get(&ip.src)).and_then(|e| e.0)) };
        if !dad && to.is_none() {
            // A unicast solicitation without the sender's address: answer through neighbour discovery.
            let body = m.emit(&target, &dst);
            let _ = self.ip6_send_nd_via_cache(target, dst, body, now);
            return;
        }
        self.send_nd(target, dst, &m, to);
    }

    /// An ND answer whose destination's link-layer address is not known yet: through the cache.
    fn ip6_send_nd_via_cache(&mut self, src: Addr, dst: Addr, body: Vec<u8>, now: Instant) -> Result<(), Errno> {
        let mut b = vec![0u8; ipv6::HEADER_LEN + body.len()];
        ipv6::Repr { src, dst, next_header: ipv6::NH_ICMPV6, hop_limit: 255, payload_len: body.len() }.emit(&mut b);
        b[ipv6::HEADER_LEN..].copy_from_slice(&body);
        self.output6(PacketBuf::from_slice(&b), dst, now);
        Ok(())
    }

    /// A neighbour advertisement (RFC 4861 7.2.5, RFC 4862 5.4.4).
    fn na_input(&mut self, target: Addr, flags: u8, target_ll: Option<Mac>, now: Instant) {
        let Some(v) = self.v6.as_mut() else { return };
        if let Some(a) = v.addrs.iter_mut().find(|a| a.addr == target) {
            if let AddrState::Tentative { .. } = a.state {
                a.state = AddrState::Duplicate;
                log::warn!("IPv6 address {} is in use by another node (DAD)", ipv6::fmt_addr(&target));
            } else {
                log::warn!("another node advertises our address {}", ipv6::fmt_addr(&target));
            }
            return;
        }
        let (mac, waiting) = v.neigh.on_advert(target, target_ll, flags & icmpv6::NA_SOLICITED != 0, flags & icmpv6::NA_OVERRIDE != 0, now);
        if flags & icmpv6::NA_ROUTER == 0 {
            // No longer a router (7.2.5): out of the default router list.
            v.routers.retain(|r| r.0 != target);
        }
        if let Some(mac) = mac {
            for p in waiting {
                self.send_l2(p, mac, crate::wire::ethernet::ETHERTYPE_IPV6);
            }
        }
    }

    /// A router advertisement (RFC 4861 6.3.4, RFC 4862 5.5.3).
    #[allow(clippy::too_many_arguments)]
    fn ra_input(
        &mut self,
        ip: &ipv6::Repr,
        hop_limit: u8,
        lifetime: u16,
        reachable_ms: u32,
        retrans_ms: u32,
        options: icmpv6::NdOptions,
        now: Instant,
    ) {
        let mac = self.mac;
        let dev_mtu = self.dev.mtu();
        let Some(v) = self.v6.as_mut() else { return };
        if !v.cfg.accept_ra || !ipv6::is_link_local(&ip.src) {
            return;
        }
        if hop_limit != 0 {
            v.hop_limit = hop_limit;
        }
        if reachable_ms != 0 {
            v.neigh.cfg.reachable_time = Duration::from_millis(u64::from(reachable_ms));
        }
        if retrans_ms != 0 {
            v.neigh.cfg.retrans_time = Duration::from_millis(u64::from(retrans_ms));
        }
        v.routers.retain(|r| r.0 != ip.src);
        if lifetime != 0 {
            v.routers.push((ip.src, now + Duration::from_secs(u64::from(lifetime))));
            log::info!("IPv6 default router {}", ipv6::fmt_addr(&ip.src));
        }
        v.rs_next = None;
        if let Some(mtu) = options.mtu.map(|m| m as usize).filter(|m| (ipv6::MIN_MTU..=dev_mtu).contains(m)) {
            v.link_mtu = Some(mtu);
        }
        let mut slaac = Vec::new();
        for p in &options.prefixes {
            if ipv6::is_link_local(&p.prefix) || p.preferred > p.valid {
                continue;
            }
            let until = now + Duration::from_secs(u64::from(p.valid));
            if p.on_link {
                v.onlink.retain(|o| !(o.0 == p.prefix && o.1 == p.len));
                if p.valid != 0 {
                    v.onlink.push((p.prefix, p.len, until));
                }
            }
            // SLAAC needs a /64 for the 64-bit interface identifier.
            if p.autonomous && p.len == 64 && p.valid != 0 {
                let mut pre = [0u8; 8];
                pre.copy_from_slice(&p.prefix[..8]);
                let addr = ipv6::with_interface_id(pre, mac);
                match v.addrs.iter_mut().find(|a| a.addr == addr) {
                    // RFC 4862 5.5.3 e: a known address's lifetime is refreshed (the two-hour rule
                    // against shortening it by a forged advertisement).
                    Some(a) if a.origin == Origin::Autoconf => {
                        let two_hours = now + Duration::from_secs(7200);
                        let remaining = a.valid_until.unwrap_or(now);
                        if until > two_hours || until > remaining {
                            a.valid_until = Some(until);
                        } else if remaining > two_hours {
                            a.valid_until = Some(two_hours);
                        }
                    }
                    Some(_) => {}
                    None => slaac.push((addr, until)),
                }
            }
        }
        if let Some(m) = options.source_ll {
            let waiting = v.neigh.on_source_ll(ip.src, m, now);
            for p in waiting {
                self.send_l2(p, m, crate::wire::ethernet::ETHERTYPE_IPV6);
            }
        }
        for (addr, until) in slaac {
            log::info!("IPv6 address {}/64 from a router advertisement", ipv6::fmt_addr(&addr));
            self.add_addr6(addr, 64, Origin::Autoconf, Some(until), now);
        }
    }

    /// A redirect (RFC 4861 8.3): only from the router we use for that destination.
    fn redirect_input(&mut self, ip: &ipv6::Repr, target: Addr, dest: Addr, target_ll: Option<Mac>, now: Instant) {
        let Some(v) = self.v6.as_mut() else { return };
        if !ipv6::is_link_local(&ip.src) || ipv6::is_multicast(&dest) {
            return;
        }
        if v.next_hop(&dest) != Some(ip.src) || v.on_link(&dest) && !v.redirects.contains_key(&dest) {
            return;
        }
        if !(ipv6::is_link_local(&target) || target == dest) {
            return;
        }
        v.redirects.insert(dest, target);
        if let Some(m) = target_ll {
            let waiting = v.neigh.on_source_ll(target, m, now);
            for p in waiting {
                self.send_l2(p, m, crate::wire::ethernet::ETHERTYPE_IPV6);
            }
        }
    }

    /// An ICMPv6 error about one of our packets: its quoted header says which.
    pub(super) fn icmp6_error_input(&mut self, from: Addr, kind: u8, code: u8, param: u32, original: &[u8]) {
        let Ok(q) = ipv6::Repr::parse_quoted(original) else { return };
        if kind == icmpv6::PACKET_TOO_BIG {
            // RFC 8201: the path MTU falls to the reported value, never below 1280; live TCP connections
            // to that destination cut their segments to it.
            let mtu = (param as usize).max(ipv6::MIN_MTU);
            if let Some(v) = self.v6.as_mut() {
                let dev = self.dev.mtu();
                if mtu < v.mtu(dev, &q.dst) {
                    v.pmtu.insert(q.dst, mtu);
                    log::info!("path MTU to {} is {mtu}", ipv6::fmt_addr(&q.dst));
                }
            }
            self.tcp_path_mtu(std::net::IpAddr::from(q.dst), mtu - ipv6::HEADER_LEN - 20);
        }
        let errno = match (kind, code) {
            (icmpv6::DEST_UNREACHABLE, icmpv6::UNREACH_PORT) => ECONNREFUSED,
            (icmpv6::DEST_UNREACHABLE, icmpv6::UNREACH_PROHIBITED) => Errno(libc::EACCES),
            (icmpv6::DEST_UNREACHABLE, icmpv6::UNREACH_NO_ROUTE) => ENETUNREACH,
            (icmpv6::DEST_UNREACHABLE, _) => EHOSTUNREACH,
            (icmpv6::PACKET_TOO_BIG, _) => EMSGSIZE,
            (icmpv6::TIME_EXCEEDED, _) => EHOSTUNREACH,
            (icmpv6::PARAM_PROBLEM, _) => Errno(libc::EPROTO),
            _ => return,
        };
        let Some(l4) = original.get(ipv6::HEADER_LEN..) else { return };
        if q.next_header == ipv6::NH_UDP && l4.len() >= 4 {
            let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
            let peer = (std::net::IpAddr::from(q.dst), dport);
            for s in self.socks.udp.iter_mut().flatten() {
                if s.port == sport && s.remote.is_none_or(|r| r == peer) {
                    s.error = Some(errno);
                }
            }
        }
        if q.next_header == ipv6::NH_TCP && l4.len() >= 4 && kind != icmpv6::PACKET_TOO_BIG {
            let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
            self.tcp_icmp_error(std::net::IpAddr::from(q.dst), sport, dport, errno);
        }
        if q.next_header == ipv6::NH_ICMPV6 && l4.len() >= 8 && l4[0] == icmpv6::ECHO_REQUEST {
            let (ident, seq) = (u16::from_be_bytes([l4[4], l4[5]]), u16::from_be_bytes([l4[6], l4[7]]));
            if let Some(q) = self.socks.pings6.get_mut(&ident) {
                q.push_back(Ping6Event::Error { from, seq, errno });
            }
        }
    }

    /// Our own packet could not leave (its neighbour never answered): the sender hears `errno`.
    pub(super) fn icmp6_local_error(&mut self, packet: &[u8], errno: Errno) {
        let Ok(q) = ipv6::Repr::parse(packet) else { return };
        let l4 = &packet[ipv6::HEADER_LEN..];
        if q.next_header == ipv6::NH_ICMPV6 && l4.len() >= 8 && l4[0] == icmpv6::ECHO_REQUEST {
            let (ident, seq) = (u16::from_be_bytes([l4[4], l4[5]]), u16::from_be_bytes([l4[6], l4[7]]));
            if let Some(p) = self.socks.pings6.get_mut(&ident) {
                p.push_back(Ping6Event::Error { from: q.src, seq, errno });
            }
        }
    }

    /// Sends an ICMPv6 error about `packet` (RFC 4443 2.4: never about an error, nor to a multicast or
    /// unspecified source; to a multicast destination only Packet Too Big and unknown-option problems).
    pub(super) fn icmp6_error(&mut self, ip: &ipv6::Repr, kind: u8, code: u8, param: u32, packet: &[u8], now: Instant) {
        if ipv6::is_multicast(&ip.src) || ip.src == ipv6::UNSPECIFIED {
            return;
        }
        if ipv6::is_multicast(&ip.dst)
            && kind != icmpv6::PACKET_TOO_BIG
            && !(kind == icmpv6::PARAM_PROBLEM && code == ipv6::PARAM_UNRECOGNIZED_OPTION)
        {
            return;
        }
        if ip.next_header == ipv6::NH_ICMPV6 && packet.get(ipv6::HEADER_LEN).is_some_and(|&t| t < 128) {
            return;
        }
        // From the address the packet was for when it is ours, else (a multicast group, or a packet this
        // stack routes) from the address source selection picks toward the sender.
        let ours = ipv6::is_loopback(&ip.dst) || self.v6.as_ref().is_some_and(|v| v.owns(&ip.dst).is_some());
        let from = if ours { Some(ip.dst) } else { None };
        let Some(from) = from.or_else(|| self.v6.as_ref().and_then(|v| v.source_for(&ip.src))) else { return };
        let m = Repr::Error { kind, code, param, original: super::ipv6::quote(packet) };
        let body = m.emit(&from, &ip.src);
        self.stats.icmp6_out_errors += 1;
        let _ = self.ip6_send(Some(from), ip.src, ipv6::NH_ICMPV6, &body, now);
    }

    /// Sends an ICMPv6 echo request; replies and errors arrive through [`Stack::ping6_events`].
    /// `EADDRNOTAVAIL` while no address can be the source yet (duplicate address detection runs);
    /// `ENETUNREACH` first when the route is down with the interface (which has then no address either).
    pub fn ping6_send(&mut self, dst: Addr, ident: u16, seq: u16, payload: &[u8], now: Instant) -> Result<(), Errno> {
        self.socks.open()?;
        if self.route_down(std::net::Ipv6Addr::from(dst).into()) {
            return Err(ENETUNREACH);
        }
        let v = self.v6.as_mut().ok_or(ENETUNREACH)?;
        let src = v.source_for(&dst).ok_or(EADDRNOTAVAIL)?;
        self.socks.pings6.entry(ident).or_default();
        let body = Repr::EchoRequest { ident, seq, data: payload }.emit(&src, &dst);
        self.ip6_send(Some(src), dst, ipv6::NH_ICMPV6, &body, now)
    }

    pub fn ping6_events(&mut self, ident: u16) -> Vec<Ping6Event> {
        self.socks.pings6.get_mut(&ident).map(|q| q.drain(..).collect()).unwrap_or_default()
    }
}
