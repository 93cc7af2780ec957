//! IPv6 (RFC 8200): the interface's addresses (link-local from the MAC, configured and autoconfigured
//! global ones, each through duplicate address detection), the multicast groups joined (programmed into the
//! device's filter), source address selection, next-hop choice (on-link prefixes, default routers,
//! redirects), output through neighbour discovery with fragmentation, and input with extension headers and
//! reassembly.

use super::*;
use crate::frag::{Outcome, Reassembly};
use crate::ndisc::{self, NeighCache as NeighCache6};
use crate::wire::ipv6::{self, Addr};
use crate::wire::{ethernet, icmpv6};

/// IPv6 settings of an interface.
#[derive(Debug, Clone)]
pub struct Ipv6Config {
    /// Addresses to configure (with their prefix length), beside the link-local one from the MAC.
    pub addrs: Vec<(Addr, u8)>,
    /// Take routers, prefixes (SLAAC) and the MTU from router advertisements.
    pub accept_ra: bool,
    /// DupAddrDetectTransmits (RFC 4862): solicitations per tentative address; 0 skips DAD.
    pub dad_transmits: u32,
    /// MAX_RTR_SOLICITATIONS and RTR_SOLICITATION_INTERVAL (RFC 4861 10).
    pub rtr_solicits: u32,
    pub rtr_solicit_interval: Duration,
    pub hop_limit: u8,
    pub ndisc: ndisc::Config,
    /// A default router configured by hand (beside those advertisements bring).
    pub gateway: Option<Addr>,
    /// Linux's `net.ipv6.conf.*.keep_addr_on_down`: when the interface goes down, keep its configured
    /// and link-local addresses (they go through DAD again when it comes up). Off, as Linux's default: a
    /// downed interface loses every IPv6 address, and comes up with its link-local one alone.
    pub keep_addr_on_down: bool,
}

impl Default for Ipv6Config {
    fn default() -> Self {
        Ipv6Config {
            addrs: Vec::new(),
            accept_ra: true,
            dad_transmits: 1,
            rtr_solicits: 3,
            rtr_solicit_interval: Duration::from_secs(4),
            hop_limit: 64,
            ndisc: ndisc::Config::default(),
            gateway: None,
            keep_addr_on_down: false,
        }
    }
}

/// Where an address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    LinkLocal,
    Static,
    /// Formed from a router advertisement's prefix.
    Autoconf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrState {
    /// Duplicate address detection runs: `sent` solicitations so far, the next one (or the verdict) at
    /// `next`.
    Tentative {
        sent: u32,
        next: Instant,
    },
    Preferred,
    /// Another node answered for it: never used (RFC 4862 5.4.5).
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Addr6 {
    pub addr: Addr,
    pub prefix: u8,
    pub origin: Origin,
    pub state: AddrState,
    /// When an autoconfigured address's valid lifetime ends.
    pub valid_until: Option<Instant>,
}

impl Addr6 {
    pub fn state_name(&self) -> &'static str {
        match self.state {
            AddrState::Tentative { .. } => "tentative",
            AddrState::Preferred => "preferred",
            AddrState::Duplicate => "duplicate",
        }
    }
}

/// An echo reply or error that arrived for an IPv6 ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping6Event {
    Reply { from: Addr, seq: u16, len: usize, at: Instant },
    Error { from: Addr, seq: u16, errno: Errno },
}

/// The interface's IPv6 state.
pub(super) struct V6 {
    pub(super) cfg: Ipv6Config,
    pub(super) addrs: Vec<Addr6>,
    pub(super) groups: Vec<Addr>,
    pub(super) neigh: NeighCache6,
    /// Default routers and when their lifetime ends.
    pub(super) routers: Vec<(Addr, Instant)>,
    /// On-link prefixes from advertisements, with their end.
    pub(super) onlink: Vec<(Addr, u8, Instant)>,
    /// Destinations a redirect sent elsewhere: destination -> better first hop.
    pub(super) redirects: HashMap<Addr, Addr>,
    /// Link MTU from an advertisement.
    pub(super) link_mtu: Option<usize>,
    /// Path MTUs learned from Packet Too Big.
    pub(super) pmtu: HashMap<Addr, usize>,
    pub(super) hop_limit: u8,
    pub(super) rs_sent: u32,
    pub(super) rs_next: Option<Instant>,
    pub(super) started: bool,
    pub(super) reasm: Reassembly<(Addr, Addr, u32)>,
    pub(super) ident: u32,
    /// The host routes what is off the link (see `Stack::set_host_routed`).
    pub(super) host_routed: bool,
    /// Prefixes the host routes by hand (`Stack::add_host_route`): more specific than the link's, they
    /// send what is for them through the host's table even when the link holds the destination.
    pub(super) host_routes: Vec<(Addr, u8)>,
}

impl V6 {
    pub(super) fn new(cfg: Ipv6Config, mac: Mac, reasm: Reassembly<(Addr, Addr, u32)>) -> V6 {
        let mut v = V6 {
            neigh: NeighCache6::new(cfg.ndisc.clone()),
            hop_limit: cfg.hop_limit,
            addrs: Vec::new(),
            groups: Vec::new(),
            routers: Vec::new(),
            onlink: Vec::new(),
            redirects: HashMap::new(),
            link_mtu: None,
            pmtu: HashMap::new(),
            rs_sent: 0,
            rs_next: None,
            started: false,
            host_routes: Vec::new(),
            reasm,
            ident: 0,
            host_routed: false,
            cfg,
        };
        let ll = v.link_local(mac);
        v.addrs.push(ll);
        for &(addr, prefix) in &v.cfg.addrs.clone() {
            v.addrs.push(Addr6 { addr, prefix, origin: Origin::Static, state: AddrState::Preferred, valid_until: None });
        }
        v.add_gateway();
        v
    }

    fn add_gateway(&mut self) {
        if let Some(gw) = self.cfg.gateway {
            // A configured router never expires.
            self.routers.push((gw, Instant::from_millis(u64::MAX / 2000)));
        }
    }

    fn link_local(&self, mac: Mac) -> Addr6 {
        Addr6 { addr: ipv6::link_local(mac), prefix: 64, origin: Origin::LinkLocal, state: AddrState::Preferred, valid_until: None }
    }

    /// The interface went down (Linux's `addrconf_ifdown`): its addresses go (the configured and link-local
    /// ones stay with `keep_addr_on_down`; autoconfigured ones always go), and so do the neighbours,
    /// routers, prefixes, redirects and path MTUs learned on the link, and the routes through it.
    pub(super) fn down(&mut self) {
        let keep = self.cfg.keep_addr_on_down;
        self.addrs.retain(|a| keep && a.origin != Origin::Autoconf);
        self.neigh = NeighCache6::new(self.cfg.ndisc.clone());
        self.routers.clear();
        self.onlink.clear();
        self.redirects.clear();
        self.link_mtu = None;
        self.pmtu.clear();
        self.rs_sent = 0;
        self.rs_next = None;
    }

    /// The interface came up (Linux's `addrconf_dev_config`): a link-local address from the MAC again,
    /// the configured router, and, in the next poll, DAD for every address and router solicitations, as
    /// at the start.
    pub(super) fn up(&mut self, mac: Mac) {
        if !self.addrs.iter().any(|a| a.origin == Origin::LinkLocal) {
            let ll = self.link_local(mac);
            self.addrs.insert(0, ll);
        }
        self.add_gateway();
        self.started = false;
    }

    /// Whether `a` is one of ours, in any state but duplicate.
    pub(super) fn owns(&self, a: &Addr) -> Option<&Addr6> {
        self.addrs.iter().find(|x| x.addr == *a && x.state != AddrState::Duplicate)
    }

    fn usable(&self) -> impl Iterator<Item = &Addr6> {
        self.addrs.iter().filter(|a| a.state == AddrState::Preferred)
    }

    /// Source address selection (RFC 6724, the rules a host with one interface needs): link-local for a
    /// link-local or link-scope multicast destination, else the global address sharing the longest prefix
    /// with the destination; `None` while no usable address exists.
    pub(super) fn source_for(&self, dst: &Addr) -> Option<Addr> {
        if ipv6::is_loopback(dst) {
            return Some(ipv6::LOOPBACK);
        }
        let link_scope = ipv6::is_link_local(dst) || (ipv6::is_multicast(dst) && dst[1] & 0x0f <= 2);
        let ll = self.usable().find(|a| a.origin == Origin::LinkLocal).map(|a| a.addr);
        if link_scope {
            return ll;
        }
        // The length of the prefix `a` shares with the destination.
        let common = |a: &Addr| -> u32 {
            let mut bits = 0;
            for (x, y) in a.iter().zip(dst.iter()) {
                let z = (x ^ y).leading_zeros();
                bits += z;
                if z < 8 {
                    break;
                }
            }
            bits
        };
        self.usable().filter(|a| a.origin != Origin::LinkLocal).max_by_key(|a| common(&a.addr)).map(|a| a.addr).or(ll)
    }

    /// Whether `dst` is on the link: link-local, inside a configured address's prefix or an advertised
    /// on-link prefix.
    pub(super) fn on_link(&self, dst: &Addr) -> bool {
        ipv6::is_link_local(dst) || self.link_prefix(dst).is_some()
    }

    /// The longest of the link's prefixes (configured addresses', advertised on-link ones) holding `dst`.
    fn link_prefix(&self, dst: &Addr) -> Option<u8> {
        let addrs = self.addrs.iter().filter(|a| a.origin != Origin::LinkLocal && ipv6::prefix_match(&a.addr, dst, a.prefix));
        let adverts = self.onlink.iter().filter(|(p, l, _)| ipv6::prefix_match(p, dst, *l));
        addrs.map(|a| a.prefix).chain(adverts.map(|x| x.1)).max()
    }

    /// The first hop toward `dst`: a redirect's, the host's for a route by hand more specific than the
    /// link's prefix, the destination itself when on-link, else a default router.
    pub(super) fn next_hop(&self, dst: &Addr) -> Option<Addr> {
        if ipv6::is_loopback(dst) {
            return Some(*dst); // through `lo`
        }
        if let Some(t) = self.redirects.get(dst) {
            return Some(*t);
        }
        if self.host_routed && !ipv6::is_link_local(dst) {
            let host = self.host_routes.iter().filter(|(p, l)| ipv6::prefix_match(p, dst, *l)).map(|x| x.1).max();
            if host.is_some_and(|h| self.link_prefix(dst).is_none_or(|l| h > l)) {
                return Some(super::HOST_HOP6);
            }
        }
        if self.on_link(dst) {
            return Some(*dst);
        }
        if self.host_routed {
            return Some(super::HOST_HOP6);
        }
        self.routers.first().map(|r| r.0)
    }

    pub(super) fn mtu(&self, dev: usize, dst: &Addr) -> usize {
        if ipv6::is_loopback(dst) {
            return super::LO_MTU;
        }
        let link = self.link_mtu.unwrap_or(dev).min(dev);
        self.pmtu.get(dst).copied().unwrap_or(link).min(link).max(ipv6::MIN_MTU)
    }
}

/// A packet too big for its link, as the error quotes it: at most what fits the minimum MTU.
pub(super) fn quote(packet: &[u8]) -> &[u8] {
    packet.get(..ipv6::MIN_MTU - ipv6::HEADER_LEN - 8).unwrap_or(packet)
}

impl Stack {
    /// Joins a multicast group: the device's filter is told its Ethernet address.
    pub(super) fn join6(&mut self, group: Addr) {
        let Some(v) = self.v6.as_mut() else { return };
        if v.groups.contains(&group) {
            return;
        }
        v.groups.push(group);
        if let Err(e) = self.dev.join_multicast(ipv6::multicast_mac(&group)) {
            debug!("{}: joining {}: {e}", self.dev.name(), ipv6::fmt_addr(&group));
        }
    }

    /// Unsolicited neighbour advertisements for every usable address (RFC 4861 7.2.6), after the link
    /// address changed.
    pub(super) fn announce6(&mut self) {
        let mac = self.mac;
        let Some(v) = self.v6.as_ref() else { return };
        let addrs: Vec<Addr> = v.usable().map(|a| a.addr).collect();
        for a in addrs {
            let m = icmpv6::Repr::NeighborAdvert { flags: icmpv6::NA_OVERRIDE, target: a, target_ll: Some(mac) };
            self.send_nd(a, ipv6::ALL_NODES, &m, None);
        }
    }

    /// The interface's IPv6 addresses with their prefix length and state.
    pub fn ipv6_addrs(&self) -> Vec<(Addr, u8, &'static str)> {
        self.v6.as_ref().map(|v| v.addrs.iter().map(|a| (a.addr, a.prefix, a.state_name())).collect()).unwrap_or_default()
    }

    /// The IPv6 neighbour table: address, link-layer address, state.
    pub fn ipv6_neighbours(&self) -> Vec<(Addr, Option<Mac>, &'static str)> {
        self.v6.as_ref().map(|v| v.neigh.entries()).unwrap_or_default()
    }

    /// Default routers learned from advertisements.
    pub fn ipv6_routers(&self) -> Vec<Addr> {
        self.v6.as_ref().map(|v| v.routers.iter().map(|r| r.0).collect()).unwrap_or_default()
    }

    /// The IPv6 MTU toward `dst` (the link's, an advertisement's, or a path MTU learned).
    pub fn ipv6_mtu(&self, dst: &Addr) -> Option<usize> {
        self.v6.as_ref().map(|v| v.mtu(self.dev.mtu(), dst))
    }

    /// Adds an address (it goes through duplicate address detection first).
    pub fn add_ipv6_addr(&mut self, addr: Addr, prefix: u8, now: Instant) {
        self.add_addr6(addr, prefix, Origin::Static, None, now);
    }

    pub(super) fn add_addr6(&mut self, addr: Addr, prefix: u8, origin: Origin, valid_until: Option<Instant>, now: Instant) {
        let Some(v) = self.v6.as_mut() else { return };
        if v.addrs.iter().any(|a| a.addr == addr) {
            return;
        }
        let state = if v.cfg.dad_transmits == 0 { AddrState::Preferred } else { AddrState::Tentative { sent: 0, next: now } };
        v.addrs.push(Addr6 { addr, prefix, origin, state, valid_until });
        self.join6(ipv6::solicited_node(&addr));
    }

    /// Sends an IPv6 packet with `payload` (an upper-layer packet whose checksum is already in), from
    /// `src` or the address source selection picks; fragments it when it exceeds the path MTU.
    pub fn ip6_send(&mut self, src: Option<Addr>, dst: Addr, next_header: u8, payload: &[u8], now: Instant) -> Result<(), Errno> {
        self.ip6_send_packet(src, dst, next_header, PacketBuf::from_slice(payload), false, None, now)
    }

    /// As [`Stack::ip6_send`], for an L4 packet already in a packet buffer (its data), with room in front
    /// for the headers: the IPv6 header is pushed there, and the packet leaves in that buffer. `partial`
    /// leaves the checksum to the device, `gso` makes it a super-packet (cut by the device into segments
    /// of that size); either keeps it whole. Only a datagram to fragment is copied, into its fragments.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ip6_send_packet(
        &mut self,
        src: Option<Addr>,
        dst: Addr,
        next_header: u8,
        mut p: PacketBuf,
        partial: bool,
        gso: Option<u16>,
        now: Instant,
    ) -> Result<(), Errno> {
        if self.route_down(std::net::Ipv6Addr::from(dst).into()) {
            return Err(ENETUNREACH);
        }
        let dev_mtu = self.dev.mtu();
        let Some(v) = self.v6.as_mut() else { return Err(ENETUNREACH) };
        let Some(src) = src.or_else(|| v.source_for(&dst)) else { return Err(EADDRNOTAVAIL) };
        let hop_limit = if ipv6::is_multicast(&dst) && next_header == ipv6::NH_ICMPV6 { 255 } else { v.hop_limit };
        let mtu = v.mtu(dev_mtu, &dst);
        let hop = if ipv6::is_multicast(&dst) { None } else { Some(v.next_hop(&dst).ok_or(ENETUNREACH)?) };
        let len = p.len();
        if len > 65535 {
            return Err(EMSGSIZE);
        }
        let ip = ipv6::Repr { src, dst, next_header, hop_limit, payload_len: len };
        self.stats.out_requests += 1;
        if !partial && gso.is_none() && ipv6::HEADER_LEN + len > mtu {
            // RFC 8200 4.5: the unfragmentable part is the fixed header; each fragment carries a multiple
            // of 8 bytes but the last.
            v.ident = v.ident.wrapping_add(1);
            p.linearize();
            let packets = fragments(&ip, p.data(), ipv6::Unfragmentable::of(next_header, &[]), mtu, v.ident);
            self.stats.frag_creates += packets.len() as u64;
            for b in packets {
                self.ip6_out(PacketBuf::from_slice(&b), hop, &dst, now);
            }
            return Ok(());
        }
        ip.emit(p.push(ipv6::HEADER_LEN));
        p.network_header = Some(0);
        p.transport_header = Some(ipv6::HEADER_LEN);
        if partial {
            p.csum = crate::skb::Csum::Partial { start: ipv6::HEADER_LEN, offset: 16 };
        }
        p.gso = gso.map(|size| crate::skb::Gso { size, kind: crate::skb::GsoKind::TcpV6 });
        self.ip6_out(p, hop, &dst, now);
        Ok(())
    }

    /// An IPv6 packet to its first hop, or (no hop: multicast) onto the link to the group's address.
    fn ip6_out(&mut self, p: PacketBuf, hop: Option<Addr>, dst: &Addr, now: Instant) {
        match hop {
            None => self.send_l2(p, ipv6::multicast_mac(dst), ethernet::ETHERTYPE_IPV6),
            Some(h) => self.local_out6(p, h, now),
        }
    }

    /// Sends a forwarded IPv6 packet (hop limit already lowered by the router) toward `dst` through this
    /// interface; EMSGSIZE with the link MTU when it is too big (routers do not fragment IPv6: the router
    /// answers Packet Too Big), ENETUNREACH without a next hop.
    ///
    /// A datagram that netfilter's reassembly joined (`ctx.frag_max`) leaves in fragments again, none
    /// larger than the largest that arrived, as Linux's `ip6_fragment` does for such packets.
    pub fn forward_out_v6(&mut self, packet: &[u8], next_hop: Addr, ctx: &crate::netfilter::Ctx, now: Instant) -> Result<(), Errno> {
        let dev_mtu = self.dev.mtu();
        let v = self.v6.as_mut().ok_or(ENETUNREACH)?;
        let mtu = v.link_mtu.unwrap_or(dev_mtu).min(dev_mtu);
        let frag_to = if ctx.frag_max > 0 { ctx.frag_max.min(mtu) } else { 0 };
        if frag_to > 0 && packet.len() > frag_to {
            let ip = ipv6::Repr::parse(packet).map_err(|_| Errno(libc::EINVAL))?;
            let payload = packet.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + ip.payload_len).ok_or(Errno(libc::EINVAL))?;
            v.ident = v.ident.wrapping_add(1);
            let parts = fragments(&ip, payload, ipv6::Unfragmentable::of(ip.next_header, payload), frag_to, v.ident);
            self.stats.frag_creates += parts.len() as u64;
            for mut b in parts {
                b[..4].copy_from_slice(&packet[..4]);
                let mut p = PacketBuf::from_slice(&b);
                p.mark = ctx.mark;
                self.output6(p, next_hop, now);
            }
            return Ok(());
        }
        if packet.len() > mtu {
            return Err(EMSGSIZE);
        }
        let mut p = PacketBuf::from_slice(packet);
        p.mark = ctx.mark;
        self.output6(p, next_hop, now);
        Ok(())
    }

    /// This interface's link MTU for IPv6.
    pub fn ipv6_link_mtu(&self) -> usize {
        let dev = self.dev.mtu();
        self.v6.as_ref().and_then(|v| v.link_mtu).unwrap_or(dev).min(dev)
    }

    /// Sends an ICMPv6 error about `packet` (an IPv6 packet that arrived here) to its source: time exceeded,
    /// destination unreachable, Packet Too Big (`param` the MTU).
    pub fn icmp6_error_about(&mut self, packet: &[u8], kind: u8, code: u8, param: u32, now: Instant) {
        let Ok(ip) = ipv6::Repr::parse_quoted(packet) else { return };
        self.icmp6_error(&ip, kind, code, param, packet, now);
    }

    /// A packet for a unicast first hop: through the neighbour cache.
    pub(super) fn output6(&mut self, p: PacketBuf, hop: Addr, now: Instant) {
        self.clock = now;
        if hop == super::HOST_HOP6 && self.host_routed {
            let ctx = crate::netfilter::Ctx { mark: p.mark, ..Default::default() };
            self.send_to_host(p, ctx);
            return;
        }
        let Some(v) = self.v6.as_mut() else { return };
        if v.owns(&hop).is_some() || ipv6::is_loopback(&hop) {
            // To ourselves: back in through `lo` at the next poll.
            self.looped.push(p);
            return;
        }
        match v.neigh.resolve(hop, p, now) {
            ndisc::Resolve::Send(mac, p) => self.send_l2(p, mac, ethernet::ETHERTYPE_IPV6),
            ndisc::Resolve::Queued { solicit } => {
                if solicit {
                    self.send_ns(hop, None);
                }
            }
            ndisc::Resolve::Dropped => {
                self.stats.qdisc_drops += 1;
                self.drop_reason(crate::monitor::DropReason::NeighQueuefull, 1);
            }
        }
    }

    /// A neighbour solicitation for `target`: multicast to its solicited-node group, or unicast to `to`.
    pub(super) fn send_ns(&mut self, target: Addr, to: Option<Mac>) {
        let mac = self.mac;
        let Some(v) = self.v6.as_ref() else { return };
        let Some(src) = v.source_for(&target).or_else(|| v.usable().next().map(|a| a.addr)) else { return };
        let dst = if to.is_some() { target } else { ipv6::solicited_node(&target) };
        let m = icmpv6::Repr::NeighborSolicit { target, source_ll: Some(mac) };
        self.send_nd(src, dst, &m, to);
    }

    /// An ND message (hop limit 255, RFC 4861): to a multicast group, or to `to` directly.
    pub(super) fn send_nd(&mut self, src: Addr, dst: Addr, m: &icmpv6::Repr, to: Option<Mac>) {
        let body = m.emit(&src, &dst);
        let mut b = vec![0u8; ipv6::HEADER_LEN + body.len()];
        ipv6::Repr { src, dst, next_header: ipv6::NH_ICMPV6, hop_limit: 255, payload_len: body.len() }.emit(&mut b);
        b[ipv6::HEADER_LEN..].copy_from_slice(&body);
        let l2 = to.unwrap_or_else(|| ipv6::multicast_mac(&dst));
        self.send_l2(PacketBuf::from_slice(&b), l2, ethernet::ETHERTYPE_IPV6);
    }

    pub(super) fn ipv6_input(&mut self, mut p: PacketBuf, now: Instant) {
        if self.v6.is_none() {
            return;
        }
        self.stats.in6_receives += 1;
        if self.nf.is_some() {
            // As Linux's nf_defrag_ipv6: conntrack and NAT see whole datagrams; forwarding fragments them
            // again to the largest size that came.
            let frag_max = match self.defrag_v6(p, now) {
                Some((whole, m)) => {
                    p = whole;
                    m
                }
                None => return,
            };
            if !self.nf_input(&mut p, now) {
                return;
            }
            self.nf_ctx.frag_max = frag_max;
        }
        self.ipv6_local(p, now);
    }

    /// The input path after netfilter's hooks: header checks, then local delivery or (another host's) the
    /// router.
    pub(super) fn ipv6_local(&mut self, p: PacketBuf, now: Instant) {
        if self.v6.is_none() || self.dropped_martian(p.data()) {
            return;
        }
        let Some(v) = self.v6.as_ref() else { return };
        let data = p.data();
        let Ok(ip) = ipv6::Repr::parse(data) else {
            self.stats.in6_hdr_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IpInhdr, 1);
            return;
        };
        let payload = &data[ipv6::HEADER_LEN..ipv6::HEADER_LEN + ip.payload_len];
        let multicast = ipv6::is_multicast(&ip.dst);
        let tentative = match v.owns(&ip.dst) {
            Some(a) => matches!(a.state, AddrState::Tentative { .. }),
            None if ipv6::is_loopback(&ip.dst) => false,
            None if multicast && v.groups.contains(&ip.dst) => false,
            None => {
                // Sent through `lo` to another interface of this host: the host delivers it there.
                if !multicast && self.looped_to_host(&data[..ipv6::HEADER_LEN + ip.payload_len]) {
                    return;
                }
                // Not ours: a router's, if forwarding is on; link-local and multicast traffic never leaves
                // its link (RFC 4291 2.5.6).
                let scoped = multicast || ipv6::is_link_local(&ip.src) || ipv6::is_link_local(&ip.dst);
                if self.cfg.forwarding && !scoped && self.forwarded.len() < 4096 {
                    self.forwarded.push((data[..ipv6::HEADER_LEN + ip.payload_len].to_vec(), self.nf_ctx));
                }
                return;
            }
        };
        if ipv6::is_multicast(&ip.src) {
            self.stats.in6_hdr_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IpInhdr, 1);
            return;
        }
        let (nh, off, fragment) = match ipv6::walk(ip.next_header, payload, multicast) {
            ipv6::Chain::Upper { next_header, offset, fragment } => (next_header, offset, fragment),
            ipv6::Chain::Problem { code, pointer } => {
                self.stats.in6_hdr_errors += 1;
                self.drop_reason(crate::monitor::DropReason::IpInhdr, 1);
                let packet = data[..ipv6::HEADER_LEN + ip.payload_len].to_vec();
                self.icmp6_error(&ip, icmpv6::PARAM_PROBLEM, code, pointer as u32, &packet, now);
                return;
            }
            ipv6::Chain::Discard => return,
        };
        if tentative && nh != ipv6::NH_ICMPV6 {
            return; // RFC 4862 5.4: only ND reaches a tentative address
        }
        let upper: &[u8] = match fragment {
            None => payload.get(off..).unwrap_or_default(),
            Some((f, at)) => {
                let frag_data = &payload[at + ipv6::FRAG_HEADER_LEN..];
                let Some(v) = self.v6.as_mut() else { return };
                match v.reasm.add((ip.src, ip.dst, f.ident), f.offset, frag_data, f.more, now) {
                    Outcome::Done(d) => {
                        self.stats.reasm_oks += 1;
                        // The fragmentable part is whole: walk what follows the fragment header again.
                        match ipv6::walk(f.next_header, &d, multicast) {
                            ipv6::Chain::Upper { next_header, offset, fragment: None } => {
                                return self.deliver6(&ip, next_header, &d[offset..], false, now);
                            }
                            _ => return,
                        }
                    }
                    Outcome::Held => return,
                    Outcome::Failed => {
                        self.stats.reasm_fails += 1;
                        self.drop_reason(crate::monitor::DropReason::DupFrag, 1);
                        return;
                    }
                }
            }
        };
        // A checksum the device verified (or the kernel vouched for, on a TAP with offloads) is not summed again.
        let verified = p.csum == crate::skb::Csum::Verified;
        self.deliver6(&ip, nh, upper, verified, now);
    }

    /// A fragment joins its datagram: the whole datagram once complete (the fragment header gone, the
    /// extension headers ahead of it and the protocol it names taken from the first fragment) with the size
    /// of its largest fragment, `None` while held or when refused. Anything else passes as it is, with 0.
    fn defrag_v6(&mut self, p: PacketBuf, now: Instant) -> Option<(PacketBuf, usize)> {
        let (ip, f, head, frag_data, meta) = {
            let data = p.data();
            let Ok(ip) = ipv6::Repr::parse(data) else { return Some((p, 0)) };
            let payload = data.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + ip.payload_len).unwrap_or_default();
            let Some((at, naming)) = ipv6::find_fragment(ip.next_header, payload) else { return Some((p, 0)) };
            let Ok(f) = ipv6::Fragment::parse(&payload[at..]) else { return Some((p, 0)) };
            // The head: the headers between the fixed header and the fragment header. Beside it: version,
            // traffic class and flow label (kept from the first fragment, as Linux does), the fixed
            // header's Next Header, the fragment header's, and where in the head the Next Header byte that
            // names the fragment header is (plus one; 0: the fixed header's).
            let mut meta = [0u8; 8];
            meta[..4].copy_from_slice(data.get(..4).unwrap_or(&[0; 4]));
            meta[4] = ip.next_header;
            meta[5] = f.next_header;
            meta[6..8].copy_from_slice(&naming.map_or(0, |i| i as u16 + 1).to_be_bytes());
            (ip, f, payload[..at].to_vec(), payload.get(at + ipv6::FRAG_HEADER_LEN..).unwrap_or_default().to_vec(), meta)
        };
        let v = self.v6.as_mut()?;
        match v.reasm.add_headed((ip.src, ip.dst, f.ident), f.offset, &frag_data, f.more, &head, meta, now) {
            Outcome::Done(d) => {
                self.stats.reasm_oks += 1;
                let meta = v.reasm.last_meta();
                let (first_nh, upper_nh, exts) = (meta[4], meta[5], v.reasm.last_head());
                let largest = ipv6::HEADER_LEN + exts.len() + ipv6::FRAG_HEADER_LEN + v.reasm.last_largest();
                let mut b = vec![0u8; ipv6::HEADER_LEN];
                // The header that named the fragment header now names what followed it.
                let naming = usize::from(u16::from_be_bytes([meta[6], meta[7]])).checked_sub(1);
                let next_header = if naming.is_some() { first_nh } else { upper_nh };
                ipv6::Repr { next_header, payload_len: exts.len() + d.len(), ..ip }.emit(&mut b);
                b[..4].copy_from_slice(&meta[..4]);
                b.extend_from_slice(exts);
                if let Some(nh) = naming.and_then(|i| b.get_mut(ipv6::HEADER_LEN + i)) {
                    *nh = upper_nh;
                }
                b.extend_from_slice(&d);
                Some((PacketBuf::from_slice(&b), largest))
            }
            Outcome::Held => None,
            Outcome::Failed => {
                self.stats.reasm_fails += 1;
                self.drop_reason(crate::monitor::DropReason::DupFrag, 1);
                None
            }
        }
    }

    fn deliver6(&mut self, ip: &ipv6::Repr, nh: u8, upper: &[u8], verified: bool, now: Instant) {
        self.stats.in6_delivers += 1;
        match nh {
            ipv6::NH_ICMPV6 => self.icmp6_input(ip, upper, now),
            ipv6::NH_UDP | ipv6::NH_TCP => {
                if nh == ipv6::NH_UDP {
                    let mut header = [0u8; ipv6::HEADER_LEN];
                    ipv6::Repr { payload_len: upper.len(), next_header: nh, ..*ip }.emit(&mut header);
                    self.udp_input(ip.src.into(), ip.dst.into(), &header, upper, verified, now);
                } else {
                    self.tcp_input(ip.src.into(), ip.dst.into(), upper, verified, now);
                }
            }
            _ => {
                let mut packet = vec![0u8; ipv6::HEADER_LEN];
                ipv6::Repr { payload_len: upper.len(), next_header: nh, ..*ip }.emit(&mut packet);
                packet.extend_from_slice(upper);
                self.icmp6_error(ip, icmpv6::PARAM_PROBLEM, ipv6::PARAM_UNRECOGNIZED_NH, 6, &packet, now);
            }
        }
    }

    /// Expires reassembly, routers, prefixes and autoconfigured addresses; runs DAD and router
    /// solicitation; sends the neighbour cache's solicitations.
    pub(super) fn poll6(&mut self, now: Instant) {
        let mac = self.mac;
        let Some(v) = self.v6.as_mut() else { return };
        if !v.started {
            v.started = true;
            let groups: Vec<Addr> = std::iter::once(ipv6::ALL_NODES).chain(v.addrs.iter().map(|a| ipv6::solicited_node(&a.addr))).collect();
            // The configured addresses go through DAD like any other.
            if v.cfg.dad_transmits > 0 {
                for a in v.addrs.iter_mut() {
                    a.state = AddrState::Tentative { sent: 0, next: now };
                }
            }
            if v.cfg.accept_ra && v.cfg.rtr_solicits > 0 {
                v.rs_next = Some(now);
            }
            for g in groups {
                self.join6(g);
            }
        }
        let Some(v) = self.v6.as_mut() else { return };
        let expired = v.reasm.expire(now) as u64;
        self.stats.reasm_fails += expired;
        self.mon.drop(crate::monitor::DropReason::FragReasmTimeout, expired, now);
        v.routers.retain(|r| now < r.1);
        v.onlink.retain(|p| now < p.2);
        v.addrs.retain(|a| a.valid_until.is_none_or(|u| now < u));
        // DAD (RFC 4862 5.4): solicitations from the unspecified address to the solicited-node group; no
        // answer within RetransTimer of the last one makes the address preferred.
        let retrans = v.neigh.cfg.retrans_time;
        let transmits = v.cfg.dad_transmits;
        let mut dad = Vec::new();
        for a in v.addrs.iter_mut() {
            if let AddrState::Tentative { sent, next } = a.state {
                if now < next {
                    continue;
                }
                if sent >= transmits {
                    a.state = AddrState::Preferred;
                    log::info!("IPv6 address {}/{} ready", ipv6::fmt_addr(&a.addr), a.prefix);
                } else {
                    a.state = AddrState::Tentative { sent: sent + 1, next: now + retrans };
                    dad.push(a.addr);
                }
            }
        }
        let rs_due = v.rs_next.is_some_and(|t| now >= t) && v.routers.is_empty();
        let ll_ready = v.usable().any(|a| a.origin == Origin::LinkLocal);
        let mut rs = None;
        if rs_due && ll_ready {
            v.rs_sent += 1;
            v.rs_next = (v.rs_sent < v.cfg.rtr_solicits).then(|| now + v.cfg.rtr_solicit_interval);
            rs = v.source_for(&ipv6::ALL_ROUTERS);
        }
        let (solicits, failed) = v.neigh.poll(now);
        for target in dad {
            let m = icmpv6::Repr::NeighborSolicit { target, source_ll: None };
            self.send_nd(ipv6::UNSPECIFIED, ipv6::solicited_node(&target), &m, None);
        }
        if let Some(src) = rs {
            self.send_nd(src, ipv6::ALL_ROUTERS, &icmpv6::Repr::RouterSolicit { source_ll: Some(mac) }, None);
        }
        for s in solicits {
            self.send_ns(s.target, s.unicast);
        }
        for (_, p) in failed {
            // Address resolution failed: as if the neighbour sent "address unreachable".
            let d = p.data().to_vec();
            self.icmp6_local_error(&d, EHOSTUNREACH);
        }
    }

    pub(super) fn poll6_at(&self) -> Option<Instant> {
        let v = self.v6.as_ref()?;
        let dad = v.addrs.iter().filter_map(|a| match a.state {
            AddrState::Tentative { next, .. } => Some(next),
            _ => None,
        });
        let ends = v.routers.iter().map(|r| r.1).chain(v.onlink.iter().map(|p| p.2)).chain(v.addrs.iter().filter_map(|a| a.valid_until));
        [v.neigh.next_deadline(), v.reasm.next_deadline(), v.rs_next.filter(|_| v.routers.is_empty()), dad.min(), ends.min()]
            .into_iter()
            .flatten()
            .min()
            .or((!v.started).then(Instant::now))
    }
}

/// `payload` (with `ip`'s next header) cut into fragments of at most `size` bytes each, header included:
/// each fragment repeats the fixed header and the unfragmentable part `u` (RFC 8200 4.5), and carries a
/// multiple of 8 bytes of the rest but the last.
fn fragments(ip: &ipv6::Repr, payload: &[u8], u: ipv6::Unfragmentable, size: usize, ident: u32) -> Vec<Vec<u8>> {
    let (unfrag, rest) = payload.split_at(u.len.min(payload.len()));
    let lead = ipv6::HEADER_LEN + unfrag.len() + ipv6::FRAG_HEADER_LEN;
    let per = (size.saturating_sub(lead) & !7).max(8);
    let n = rest.len().div_ceil(per);
    let next_header = if u.next_header_at.is_some() { ip.next_header } else { ipv6::NH_FRAGMENT };
    rest.chunks(per)
        .enumerate()
        .map(|(i, c)| {
            let mut b = vec![0u8; lead + c.len()];
            ipv6::Repr { next_header, payload_len: b.len() - ipv6::HEADER_LEN, ..*ip }.emit(&mut b);
            b[ipv6::HEADER_LEN..ipv6::HEADER_LEN + unfrag.len()].copy_from_slice(unfrag);
            if let Some(at) = u.next_header_at {
                b[ipv6::HEADER_LEN + at] = ipv6::NH_FRAGMENT;
            }
            let f = ipv6::Fragment { next_header: u.next_header, offset: i * per, more: i + 1 < n, ident };
            f.emit(&mut b[ipv6::HEADER_LEN + unfrag.len()..]);
            b[lead..].copy_from_slice(c);
            b
        })
        .collect()
}
