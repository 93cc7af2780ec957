//! One host over several interfaces, and a router when forwarding is on. Each interface is a stack of its
//! own for its link (addresses, MTU, counters, up/down state, ARP and neighbour discovery, answering
//! pings) and hands packets for other hosts here. The sockets are the host's: one table
//! ([`crate::iface::Sockets`]) that the host lends to the interface it drives, so a listener takes
//! connections from every interface, and a connection's packets reach it whichever interface they come
//! in on or leave by. Forwarding has a switch per family (`forward4`, `forward6`): on for
//! [`Router::new`], off for [`Router::host`] as on Linux, where a packet for another host is then dropped
//! and counted. The routing table holds per family the connected prefixes of every
//! interface and routes added by hand (longest prefix wins, then the lowest metric; several default routes
//! may coexist). Forwarding lowers the TTL or hop limit and answers as routers must: time exceeded at 1,
//! destination unreachable without a route, fragmentation needed / Packet Too Big when the egress link is
//! smaller (an IPv4 packet without DF is fragmented instead), never for link-local IPv6.

use crate::iface::{Errno, SocketHandle, Sockets, EAGAIN, ENETDOWN, ENETUNREACH};
use crate::netfilter::{At, Ctx, Hook, Netfilter, Verdict};
use crate::time::Instant;
use crate::wire::{checksum, icmp, icmpv6, ipv6};
use crate::Stack;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dest: IpAddr,
    pub prefix: u8,
    /// The next hop; `None` for a connected prefix (the destination is on the link).
    pub via: Option<IpAddr>,
    /// The interface (index into the router's stacks).
    pub iface: usize,
    pub metric: u32,
}

/// Counters named after Linux's (IpForwDatagrams, Ip6OutForwDatagrams, time exceeded, no route ...).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterStats {
    pub forwarded: u64,
    pub ttl_exceeded: u64,
    pub no_route: u64,
    pub too_big: u64,
    pub errors: u64,
    /// Dropped or rejected by netfilter's FORWARD or POSTROUTING.
    pub filtered: u64,
    /// For another host while forwarding is off for its family (Linux's InAddrErrors).
    pub not_forwarding: u64,
}

pub struct Router {
    /// The interfaces. Sockets are opened through the host ([`Router::sockets`] and the methods beside
    /// it); an interface's own methods refuse them with EOPNOTSUPP.
    pub ifaces: Vec<Stack>,
    pub routes: Vec<Route>,
    pub stats: RouterStats,
    /// Netfilter for the whole router (every interface shares it).
    pub nf: Option<Rc<RefCell<Netfilter>>>,
    /// IPv4 forwarding (`net.ipv4.ip_forward`).
    pub forward4: bool,
    /// IPv6 forwarding (`net.ipv6.conf.all.forwarding`).
    pub forward6: bool,
    /// The host's sockets, lent to an interface while it runs.
    socks: Sockets,
    /// The addresses of the interfaces other than the one running, handed to it as it starts (reused).
    others: Vec<IpAddr>,
}

/// An IP packet's destination address.
fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    crate::wire::ip_addrs(p).map(|a| a.1)
}

fn matches(dest: &IpAddr, prefix: u8, a: &IpAddr) -> bool {
    match (dest, a) {
        (IpAddr::V4(d), IpAddr::V4(x)) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(*d) & m == u32::from(*x) & m
        }
        (IpAddr::V6(d), IpAddr::V6(x)) => ipv6::prefix_match(&d.octets(), &x.octets(), prefix),
        _ => false,
    }
}

impl Router {
    /// A router over `ifaces`: one host with forwarding on for both families. The interfaces' connected
    /// prefixes become routes; sockets they held are closed (the host's table replaces theirs).
    pub fn new(ifaces: Vec<Stack>) -> Router {
        Router::with_forwarding(ifaces, true)
    }

    /// One host over `ifaces` that does not forward (as Linux by default): packets for other hosts are
    /// dropped and counted in `not_forwarding`.
    pub fn host(ifaces: Vec<Stack>) -> Router {
        Router::with_forwarding(ifaces, false)
    }

    fn with_forwarding(mut ifaces: Vec<Stack>, on: bool) -> Router {
        let mut routes = Vec::new();
        for (i, s) in ifaces.iter_mut().enumerate() {
            s.cfg.forwarding = true;
            s.set_host_routed(true);
            let mut own = Sockets::detached();
            s.swap_sockets(&mut own);
            if !own.is_empty() {
                log::warn!("{}: sockets opened on the interface are closed: the host's table replaces them", s.name());
            }
            routes.push(Route { dest: IpAddr::from(s.cfg.addr), prefix: s.cfg.prefix, via: None, iface: i, metric: 0 });
            for &(a, p) in &s.cfg.secondary {
                routes.push(Route { dest: IpAddr::from(a), prefix: p, via: None, iface: i, metric: 0 });
            }
            for (a, p, _) in s.ipv6_addrs() {
                if !ipv6::is_link_local(&a) {
                    routes.push(Route { dest: IpAddr::from(a), prefix: p, via: None, iface: i, metric: 0 });
                }
            }
        }
        Router {
            ifaces,
            routes,
            stats: RouterStats::default(),
            nf: None,
            forward4: on,
            forward6: on,
            socks: Sockets::default(),
            others: Vec::new(),
        }
    }

    /// Netfilter on every interface and on the forwarding path.
    pub fn set_netfilter(&mut self, nf: Netfilter) {
        let nf = Rc::new(RefCell::new(nf));
        for s in self.ifaces.iter_mut() {
            s.set_netfilter(nf.clone());
        }
        self.nf = Some(nf);
    }

    /// A route by hand. Every interface learns its prefix, so that what the host sends there goes
    /// through this table even when an interface's own link holds the destination.
    pub fn add_route(&mut self, r: Route) {
        for s in self.ifaces.iter_mut() {
            s.add_host_route(r.dest, r.prefix);
        }
        self.routes.push(r);
    }

    /// The interface and next hop for `dst`: the longest matching prefix, then the lowest metric; routes
    /// through an interface that is down do not count (as Linux drops them with the link).
    pub fn lookup(&self, dst: IpAddr) -> Option<(usize, IpAddr)> {
        self.routes
            .iter()
            .filter(|r| self.ifaces.get(r.iface).is_none_or(|s| s.is_up()))
            .filter(|r| matches(&r.dest, r.prefix, &dst))
            .max_by_key(|r| (r.prefix, std::cmp::Reverse(r.metric)))
            .map(|r| (r.iface, r.via.unwrap_or(dst)))
    }

    /// Runs `f` on interface `i` with the host's sockets lent to it, and the addresses of the host's
    /// other interfaces as they are now (what it sends to them goes through `lo`).
    fn lend<R>(&mut self, i: usize, f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
        self.others.clear();
        for (j, s) in self.ifaces.iter().enumerate() {
            if j != i {
                s.unicast_addrs(&mut self.others);
            }
        }
        let s = self.ifaces.get_mut(i)?;
        s.swap_host_addrs(&mut self.others);
        s.swap_sockets(&mut self.socks);
        let r = f(s);
        s.swap_sockets(&mut self.socks);
        Some(r)
    }

    /// The host's sockets through interface `i` (`SO_BINDTODEVICE`): what `f` opens or sends starts there,
    /// from that interface's addresses. The sockets stay the host's.
    pub fn sockets_on<R>(&mut self, i: usize, f: impl FnOnce(&mut Stack) -> R) -> Result<R, Errno> {
        self.lend(i, f).ok_or(Errno(libc::ENODEV))
    }

    /// The host's sockets, for calls that do not pick a route (listen, accept, send and receive on a
    /// connection, close): through the first interface that is up, or the first at all (what was received
    /// can be read with every link down). ENETDOWN for a host without interfaces.
    pub fn sockets<R>(&mut self, f: impl FnOnce(&mut Stack) -> R) -> Result<R, Errno> {
        let up = self.ifaces.iter().position(|s| s.is_up());
        let i = up.or(if self.ifaces.is_empty() { None } else { Some(0) }).ok_or(ENETDOWN)?;
        self.sockets_on(i, f)
    }

    /// The host's sockets toward `dst`: through the interface the routing table picks for it, so that
    /// what `f` opens or sends has that interface's address as its source (ENETUNREACH without a route).
    pub fn sockets_toward<R>(&mut self, dst: IpAddr, f: impl FnOnce(&mut Stack) -> R) -> Result<R, Errno> {
        if dst.is_loopback() {
            // 127.0.0.0/8 and ::1: through `lo`, which every interface sends to.
            return self.sockets(f);
        }
        // An interface's IPv4 address: through that interface, whose local route for it stays while it is
        // down (as Linux's does), from that address.
        if let Some(i) = self.ifaces.iter().position(|s| dst.is_ipv4() && s.owns(dst)) {
            return self.sockets_on(i, f);
        }
        let (i, _) = self.lookup(dst).ok_or(ENETUNREACH)?;
        self.sockets_on(i, f)
    }

    /// A TCP listener of the host on `port`: one socket that takes connections to any of its addresses
    /// from any interface.
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<SocketHandle, Errno> {
        self.sockets(|s| s.tcp_listen(port, backlog))?
    }

    /// A connection that reached `listener` (EAGAIN when none has).
    pub fn tcp_accept(&mut self, listener: SocketHandle) -> Result<SocketHandle, Errno> {
        self.sockets(|s| s.tcp_accept(listener)).unwrap_or(Err(EAGAIN))
    }

    /// A TCP connection from the host to `dst`, from the address of the interface the routing table picks.
    pub fn tcp_connect(&mut self, dst: IpAddr, port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        self.sockets_toward(dst, |s| s.tcp_connect_ip(0, dst, port, now))?
    }

    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8], now: Instant) -> Result<usize, Errno> {
        self.sockets(|s| s.tcp_send(h, data, now))?
    }

    pub fn tcp_recv(&mut self, h: SocketHandle, buf: &mut [u8], now: Instant) -> Result<usize, Errno> {
        self.sockets(|s| s.tcp_recv(h, buf, now))?
    }

    /// A UDP socket of the host on `port` (0: an ephemeral one), for datagrams from any interface.
    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, Errno> {
        self.sockets(|s| s.udp_bind(port))?
    }

    /// A datagram to `dst`, out of the interface the routing table picks, from its address.
    pub fn udp_send_to(&mut self, h: SocketHandle, dst: IpAddr, port: u16, data: &[u8], now: Instant) -> Result<(), Errno> {
        self.sockets_toward(dst, |s| s.udp_send_to_ip(h, dst, port, data, now))?
    }

    pub fn udp_recv_from(&mut self, h: SocketHandle) -> Result<(Vec<u8>, IpAddr, u16), Errno> {
        self.sockets(|s| s.udp_recv_from_ip(h))?
    }

    /// When the host next needs a poll without new input: its interfaces' timers and its connections'.
    pub fn poll_at(&self) -> Option<Instant> {
        self.ifaces.iter().filter_map(|s| s.poll_at()).chain(self.socks.poll_at()).min()
    }

    /// Polls every interface and forwards what they handed over. Whether anything moved.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut moved = false;
        // The connections' timers, once; what they send leaves with the interfaces' polls below.
        let _ = self.sockets(|s| s.run_socket_timers(now));
        for i in 0..self.ifaces.len() {
            moved |= self.lend(i, |s| s.poll(now)).unwrap_or(false);
            let packets = self.ifaces.get_mut(i).map(|s| s.take_forwarded()).unwrap_or_default();
            for (p, ctx) in packets {
                moved = true;
                self.forward(i, p, ctx, now);
            }
            let sent = self.ifaces.get_mut(i).map(|s| s.take_host_out()).unwrap_or_default();
            for (p, ctx) in sent {
                moved = true;
                self.route_local(i, p, ctx, now);
            }
            // Sent through `lo` to the address of another interface: INPUT there, from `lo`.
            let looped = self.ifaces.get_mut(i).map(|s| s.take_host_in()).unwrap_or_default();
            for (p, ctx) in looped {
                moved = true;
                self.deliver_if_own(None, &p, ctx, now);
            }
        }
        if moved {
            // What the forwarding queued leaves now, not at the next poll.
            for i in 0..self.ifaces.len() {
                self.lend(i, |s| s.poll(now));
            }
        }
        moved
    }

    /// FORWARD and POSTROUTING for a packet from `from` to `to`: false when netfilter dropped or rejected
    /// it (answered from the interface it came in on).
    ///
    /// With `own` the packet is the router's own, sent from interface `from` (OUTPUT ran there): only
    /// POSTROUTING runs, without an input interface, and a REJECT drops it.
    fn nf_forward(&mut self, from: usize, to: usize, own: bool, ctx: &mut Ctx, p: &mut [u8], now: Instant) -> bool {
        let Some(nf) = self.nf.clone() else { return true };
        let v6 = p.first().is_some_and(|b| b >> 4 == 6);
        let (Some(a), Some(b)) = (self.ifaces.get(from), self.ifaces.get(to)) else { return false };
        let (iname, oname) = (a.name(), b.name());
        let (iaddr, oaddr) = (a.primary_addr(v6), b.primary_addr(v6));
        let (hooks, iif, iif_addr): (&[Hook], _, _) =
            if own { (&[Hook::Postrouting], None, None) } else { (&[Hook::Forward, Hook::Postrouting], Some(iname.as_str()), iaddr) };
        let mut verdict = Verdict::Accept;
        for &hook in hooks {
            let at = At { hook, iif, oif: Some(&oname), iif_addr, oif_addr: oaddr };
            verdict = nf.borrow_mut().hook(&at, ctx, p, now);
            if verdict != Verdict::Accept {
                break;
            }
        }
        match verdict {
            Verdict::Accept | Verdict::Nat(_) => true,
            Verdict::Drop => {
                self.stats.filtered += 1;
                if let Some(s) = self.ifaces.get_mut(from) {
                    s.mon.drop(crate::monitor::DropReason::NetfilterDrop, 1, now);
                }
                false
            }
            Verdict::Reject(w) => {
                self.stats.filtered += 1;
                if let Some(s) = self.ifaces.get_mut(from) {
                    s.mon.drop(crate::monitor::DropReason::NetfilterDrop, 1, now);
                    if !own {
                        s.nf_reject(p, w, now);
                    }
                }
                false
            }
        }
    }

    /// Delivers `p` to the interface that holds its destination among its addresses (Linux's weak host
    /// model), as arrived on `from` (`None`: on `lo`): its TTL untouched, through INPUT. False when no
    /// interface holds it.
    fn deliver_if_own(&mut self, from: Option<usize>, p: &[u8], ctx: Ctx, now: Instant) -> bool {
        let Some(j) = ip_dst(p).and_then(|d| self.ifaces.iter().position(|s| s.owns(d))) else { return false };
        let name = match from {
            Some(f) => self.ifaces.get(f).map(|s| s.name()).unwrap_or_default(),
            None => "lo".to_string(),
        };
        self.lend(j, |s| s.deliver_local(p, &name, ctx, now));
        true
    }

    /// A packet the router itself sent from interface `from` toward a destination off that link (OUTPUT
    /// already ran there): POSTROUTING with the interface the routing table picks, then out of it (no TTL
    /// change, no FORWARD hook: it is the router's own); or in to another of its interfaces that holds the
    /// address.
    fn route_local(&mut self, from: usize, mut p: Vec<u8>, mut ctx: Ctx, now: Instant) {
        let Some(dst) = ip_dst(&p) else { return };
        if self.deliver_if_own(Some(from), &p, ctx, now) {
            return;
        }
        let Some((to, hop)) = self.lookup(dst) else {
            self.stats.no_route += 1;
            return;
        };
        if !self.nf_forward(from, to, true, &mut ctx, &mut p, now) {
            return;
        }
        let Some(out) = self.ifaces.get_mut(to) else { return };
        let (sent, mtu) = match hop {
            IpAddr::V4(h) => (out.forward_out_v4(&p, h.octets(), ctx.mark, now), out.dev.mtu()),
            IpAddr::V6(h) => (out.forward_out_v6(&p, h.octets(), &ctx, now), out.ipv6_link_mtu()),
        };
        if sent.is_err() {
            // Too big for the link it leaves by: the sending socket learns the link's MTU.
            self.stats.too_big += 1;
            self.lend(from, |s| s.local_too_big(&p, mtu));
        }
    }

    fn forward(&mut self, from: usize, mut p: Vec<u8>, mut ctx: Ctx, now: Instant) {
        // For another of the router's own addresses: delivered there rather than forwarded.
        if self.deliver_if_own(Some(from), &p, ctx, now) {
            return;
        }
        let family_on = match p.first().map(|b| b >> 4) {
            Some(4) => self.forward4,
            Some(6) => self.forward6,
            _ => false,
        };
        if !family_on {
            self.stats.not_forwarding += 1;
            if let Some(s) = self.ifaces.get_mut(from) {
                s.mon.drop(crate::monitor::DropReason::IpInaddrerrors, 1, now);
            }
            return;
        }
        match p.first().map(|b| b >> 4) {
            Some(4) if p.len() >= 20 => {
                let dst = IpAddr::from([p[16], p[17], p[18], p[19]]);
                if p[8] <= 1 {
                    self.stats.ttl_exceeded += 1;
                    self.error(from, &p, icmp::TIME_EXCEEDED, 0, 0, now);
                    return;
                }
                let Some((to, hop)) = self.lookup(dst) else {
                    self.stats.no_route += 1;
                    self.error(from, &p, icmp::DEST_UNREACHABLE, 0, 0, now);
                    return;
                };
                if !self.nf_forward(from, to, false, &mut ctx, &mut p, now) {
                    return;
                }
                // TTL down by one; the header checksum updated.
                p[8] -= 1;
                let hl = usize::from(p[0] & 0xF) * 4;
                p[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::compute(&p[..hl.min(p.len())]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                let IpAddr::V4(h) = hop else { return };
                let Some(out) = self.ifaces.get_mut(to) else { return };
                match out.forward_out_v4(&p, h.octets(), ctx.mark, now) {
                    Ok(()) => self.stats.forwarded += 1,
                    Err(_) => {
                        self.stats.too_big += 1;
                        let mtu = out.dev.mtu() as u32;
                        self.error(from, &p, icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, mtu, now);
                    }
                }
            }
            Some(6) if p.len() >= ipv6::HEADER_LEN => {
                let mut d = [0u8; 16];
                d.copy_from_slice(&p[24..40]);
                if p[7] <= 1 {
                    self.stats.ttl_exceeded += 1;
                    self.error(from, &p, icmpv6::TIME_EXCEEDED, 0, 0, now);
                    return;
                }
                let Some((to, hop)) = self.lookup(IpAddr::from(d)) else {
                    self.stats.no_route += 1;
                    self.error(from, &p, icmpv6::DEST_UNREACHABLE, icmpv6::UNREACH_NO_ROUTE, 0, now);
                    return;
                };
                if !self.nf_forward(from, to, false, &mut ctx, &mut p, now) {
                    return;
                }
                p[7] -= 1;
                let IpAddr::V6(h) = hop else { return };
                let Some(out) = self.ifaces.get_mut(to) else { return };
                match out.forward_out_v6(&p, h.octets(), &ctx, now) {
                    Ok(()) => self.stats.forwarded += 1,
                    Err(_) => {
                        self.stats.too_big += 1;
                        let mtu = out.ipv6_link_mtu() as u32;
                        self.error(from, &p, icmpv6::PACKET_TOO_BIG, 0, mtu, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// An ICMP error from the interface the packet came in on.
    fn error(&mut self, from: usize, p: &[u8], kind: u8, code: u8, param: u32, now: Instant) {
        self.stats.errors += 1;
        let Some(s) = self.ifaces.get_mut(from) else { return };
        if p.first().is_some_and(|b| b >> 4 == 4) {
            s.icmp_error_v4(p, kind, code, param as u16, now);
        } else {
            s.icmp6_error_about(p, kind, code, param, now);
        }
    }

    /// Counters and routes, for `nic-lab run` to print.
    pub fn report(&self, name: &str) -> String {
        let st = self.stats;
        let mut s = format!(
            "router {name}: forwarded {} time exceeded {} no route {} too big {} filtered {} not forwarding {}\n",
            st.forwarded, st.ttl_exceeded, st.no_route, st.too_big, st.filtered, st.not_forwarding
        );
        for r in &self.routes {
            let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
            s += &format!(
                "  route {}/{}{via} dev {} metric {}\n",
                r.dest,
                r.prefix,
                self.ifaces.get(r.iface).map(|i| i.name()).unwrap_or_default(),
                r.metric
            );
        }
        if let Some(nf) = &self.nf {
            let nf = nf.borrow();
            let now = Instant::now();
            s += &format!(
                "netfilter: accepted {} dropped {} rejected {} nat failed {} logged {}\n",
                nf.stats.accepted, nf.stats.dropped, nf.stats.rejected, nf.stats.nat_failed, nf.stats.logged
            );
            s += &nf.rules.listing();
            s += &nf.conntrack_listing(now);
        }
        s
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn longest_prefix_then_lowest_metric() {
        let routes = vec![
            Route { dest: "0.0.0.0".parse().unwrap(), prefix: 0, via: Some("10.0.0.1".parse().unwrap()), iface: 0, metric: 100 },
            Route { dest: "0.0.0.0".parse().unwrap(), prefix: 0, via: Some("10.0.1.1".parse().unwrap()), iface: 1, metric: 50 },
            Route { dest: "10.9.0.0".parse().unwrap(), prefix: 16, via: None, iface: 2, metric: 0 },
            Route { dest: "2001:db8::".parse().unwrap(), prefix: 32, via: None, iface: 3, metric: 0 },
        ];
        let mut r = Router::new(Vec::new());
        r.routes = routes;
        assert_eq!(r.lookup("10.9.3.4".parse().unwrap()), Some((2, "10.9.3.4".parse().unwrap())));
        assert_eq!(r.lookup("8.8.8.8".parse().unwrap()), Some((1, "10.0.1.1".parse().unwrap())), "two defaults: the lower metric");
        assert_eq!(r.lookup("2001:db8:5::1".parse().unwrap()).map(|x| x.0), Some(3));
        assert_eq!(r.lookup("2001:db9::1".parse().unwrap()), None, "no IPv6 default");
    }

    #[test]
    fn routes_through_a_down_interface_do_not_count() {
        use crate::dev::sim::{link, Impairment};
        let clock = std::rc::Rc::new(std::cell::RefCell::new(crate::time::Instant::ZERO));
        let (a, _a2) = link(([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]), Impairment::default(), 1, clock.clone());
        let (b, _b2) = link(([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]), Impairment::default(), 1, clock);
        let sa = Stack::new(Box::new(a), crate::Config::new([10, 1, 0, 1], 24));
        let sb = Stack::new(Box::new(b), crate::Config::new([10, 2, 0, 1], 24));
        let mut r = Router::new(vec![sa, sb]);
        let dst: IpAddr = "10.2.0.9".parse().unwrap();
        assert_eq!(r.lookup(dst), Some((1, dst)));
        r.ifaces[1].set_up(false);
        assert_eq!(r.lookup(dst), None);
    }
}

#[cfg(test)]
mod host_test {
    use super::*;
    use crate::dev::sim::{link, Impairment};
    use crate::iface::PingEvent;
    use std::time::Duration;

    /// Host H on link A (10.1.0.2, its gateway the router's 10.1.0.1) and the router's interfaces on A and
    /// on B (10.2.0.1), on the virtual clock.
    fn setup() -> (Stack, Router, Rc<RefCell<Instant>>) {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (h, ra) = link(([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]), Impairment::default(), 1, clock.clone());
        let (rb, _peer) = link(([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]), Impairment::default(), 2, clock.clone());
        let mut hc = crate::Config::new([10, 1, 0, 2], 24);
        hc.gateway = Some([10, 1, 0, 1]);
        let host = Stack::new(Box::new(h), hc);
        let a = Stack::new(Box::new(ra), crate::Config::new([10, 1, 0, 1], 24));
        let b = Stack::new(Box::new(rb), crate::Config::new([10, 2, 0, 1], 24));
        (host, Router::new(vec![a, b]), clock)
    }

    fn run(host: &mut Stack, r: &mut Router, clock: &Rc<RefCell<Instant>>, ms: u64) {
        for _ in 0..ms {
            let now = *clock.borrow();
            host.poll(now);
            r.poll(now);
            *clock.borrow_mut() = now + Duration::from_millis(1);
        }
    }

    #[test]
    fn the_routers_other_addresses_answer_from_any_side() {
        let (mut host, mut r, clock) = setup();
        // A ping to the address of the router's far interface: delivered there, answered, and the answer
        // routed back out of the near one (nothing goes out on link B).
        host.ping_send([10, 2, 0, 1], 7, 1, b"far side", Instant::ZERO).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let ev = host.ping_events(7);
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 2, 0, 1], .. }]), "{ev:?}");
        assert_eq!(r.stats.forwarded, 0, "delivered, not forwarded");
        // A TCP connection to the far interface's address.
        let l = r.tcp_listen(80, 1).unwrap();
        let now = *clock.borrow();
        let c = host.tcp_connect([10, 2, 0, 1], 80, now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let s = r.tcp_accept(l).expect("accepted");
        assert_eq!(r.sockets(|x| x.tcp_conn(s).map(|t| t.local)).unwrap(), Some(("10.2.0.1".parse().unwrap(), 80)));
        let now = *clock.borrow();
        assert_eq!(host.tcp_send(c, b"through the near side", now), Ok(21));
        run(&mut host, &mut r, &clock, 30);
        let mut buf = [0u8; 64];
        let now = *clock.borrow();
        let n = r.tcp_recv(s, &mut buf, now).unwrap();
        assert_eq!(&buf[..n], b"through the near side");
        // From the far interface's address (`ping -I b`) the host is reached too: out of the near one.
        let now = *clock.borrow();
        r.sockets_on(1, |x| x.ping_send([10, 1, 0, 2], 9, 1, b"from b", now)).unwrap().unwrap();
        run(&mut host, &mut r, &clock, 30);
        let ev = r.sockets(|x| x.ping_events(9)).unwrap();
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 1, 0, 2], .. }]), "{ev:?}");
    }

    #[test]
    fn postrouting_sees_the_interface_the_routers_own_packets_leave_by() {
        let (mut host, mut r, clock) = setup();
        r.ifaces[0].set_name("a");
        r.ifaces[1].set_name("b");
        let rules = "table ip f {\n    chain post {\n        type filter hook postrouting priority 0;\n        \
                     oifname \"a\" icmp type echo-request counter drop\n    }\n}\n";
        r.set_netfilter(crate::netfilter::Netfilter::new(crate::netfilter::parse::parse(rules).unwrap()));
        // An echo request from b's address to the host on a's link leaves by a: a's rule drops it.
        r.sockets_on(1, |x| x.ping_send([10, 1, 0, 2], 9, 1, b"from b", Instant::ZERO)).unwrap().unwrap();
        run(&mut host, &mut r, &clock, 30);
        assert!(r.sockets(|x| x.ping_events(9)).unwrap().is_empty(), "dropped on its way out of a");
        assert_eq!(r.stats.filtered, 1);
        assert!(r.nf.as_ref().unwrap().borrow().rules.listing().contains("# packets 1 "));
        // The host's own echo request to b's address is answered (the reply is not an echo request).
        let now = *clock.borrow();
        host.ping_send([10, 2, 0, 1], 7, 1, b"to b", now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        assert_eq!(host.ping_events(7).len(), 1);
    }

    #[test]
    fn one_socket_table_for_every_interface() {
        let (mut host, mut r, clock) = setup();
        // One listener: the host reaches it at either of the router's addresses, and both connections
        // come out of the one accept queue.
        let l = r.tcp_listen(81, 4).unwrap();
        assert_eq!(r.tcp_listen(81, 4), Err(crate::iface::EADDRINUSE), "the port is the host's, not an interface's");
        let now = *clock.borrow();
        let near = host.tcp_connect([10, 1, 0, 1], 81, now).unwrap();
        let far = host.tcp_connect([10, 2, 0, 1], 81, now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let a = r.tcp_accept(l).unwrap();
        let b = r.tcp_accept(l).unwrap();
        assert_eq!(r.tcp_accept(l), Err(crate::iface::EAGAIN));
        let mut locals: Vec<IpAddr> = [a, b].iter().map(|&h| r.sockets(|x| x.tcp_conn(h).unwrap().local.0).unwrap()).collect();
        locals.sort();
        assert_eq!(locals, ["10.1.0.1".parse::<IpAddr>().unwrap(), "10.2.0.1".parse().unwrap()]);
        assert!(host.tcp_conn(near).is_some() && host.tcp_conn(far).is_some());
        // An interface's own socket calls are refused: the sockets are the host's.
        assert_eq!(r.ifaces[0].tcp_listen(90, 1), Err(crate::Errno(libc::EOPNOTSUPP)));
        assert_eq!(r.ifaces[1].udp_bind(90), Err(crate::Errno(libc::EOPNOTSUPP)));
        // A connection from the router: from the address of the interface its route leaves by.
        let l2 = host.tcp_listen(82, 1).unwrap();
        let now = *clock.borrow();
        let c = r.tcp_connect("10.1.0.2".parse().unwrap(), 82, now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let s = host.tcp_accept(l2).unwrap();
        assert_eq!(host.tcp_peer(s).map(|p| p.0), Some("10.1.0.1".parse().unwrap()));
        let now = *clock.borrow();
        assert_eq!(r.tcp_send(c, b"from the router", now), Ok(15));
        run(&mut host, &mut r, &clock, 30);
        let mut buf = [0u8; 32];
        let now = *clock.borrow();
        let n = host.tcp_recv(s, &mut buf, now).unwrap();
        assert_eq!(&buf[..n], b"from the router");
        assert_eq!(r.tcp_connect("192.0.2.1".parse().unwrap(), 80, now), Err(crate::iface::ENETUNREACH), "no route");
        // One UDP socket takes datagrams for both addresses; its answers leave by the route.
        let u = r.udp_bind(53).unwrap();
        let hu = host.udp_bind(0).unwrap();
        host.udp_send_to(hu, [10, 1, 0, 1], 53, b"near", now).unwrap();
        host.udp_send_to(hu, [10, 2, 0, 1], 53, b"far", now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let (d1, from, port) = r.udp_recv_from(u).unwrap();
        let (d2, _, _) = r.udp_recv_from(u).unwrap();
        assert_eq!((d1.as_slice(), d2.as_slice()), (&b"near"[..], &b"far"[..]));
        assert_eq!(from, "10.1.0.2".parse::<IpAddr>().unwrap());
        let now = *clock.borrow();
        r.udp_send_to(u, from, port, b"answer", now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        assert_eq!(host.udp_recv_from(hu).map(|d| (d.0, d.1)), Ok((b"answer".to_vec(), [10, 1, 0, 1])));
    }

    #[test]
    fn a_host_forwards_only_when_told() {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (h, ra) = link(([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]), Impairment::default(), 1, clock.clone());
        let (rb, p) = link(([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]), Impairment::default(), 2, clock.clone());
        let mut hc = crate::Config::new([10, 1, 0, 2], 24);
        hc.gateway = Some([10, 1, 0, 1]);
        let mut pc = crate::Config::new([10, 2, 0, 2], 24);
        pc.gateway = Some([10, 2, 0, 1]);
        let (mut host, mut peer) = (Stack::new(Box::new(h), hc), Stack::new(Box::new(p), pc));
        let a = Stack::new(Box::new(ra), crate::Config::new([10, 1, 0, 1], 24));
        let b = Stack::new(Box::new(rb), crate::Config::new([10, 2, 0, 1], 24));
        let mut r = Router::host(vec![a, b]);
        let go = |host: &mut Stack, peer: &mut Stack, r: &mut Router| {
            for _ in 0..30 {
                let now = *clock.borrow();
                host.poll(now);
                peer.poll(now);
                r.poll(now);
                *clock.borrow_mut() = now + Duration::from_millis(1);
            }
        };
        // Forwarding off (the default for a host): the echo request for the far peer is dropped, counted.
        host.ping_send([10, 2, 0, 2], 5, 1, b"x", Instant::ZERO).unwrap();
        go(&mut host, &mut peer, &mut r);
        assert!(host.ping_events(5).is_empty());
        assert_eq!((r.stats.not_forwarding, r.stats.forwarded), (1, 0));
        assert!(r.ifaces[0].mon.drops().contains(&(crate::monitor::DropReason::IpInaddrerrors, 1)));
        // Its own far address still answers: that is delivery, not forwarding.
        let now = *clock.borrow();
        host.ping_send([10, 2, 0, 1], 6, 1, b"x", now).unwrap();
        go(&mut host, &mut peer, &mut r);
        assert_eq!(host.ping_events(6).len(), 1);
        // IPv4 forwarding on: the next request goes through, both ways.
        r.forward4 = true;
        let now = *clock.borrow();
        host.ping_send([10, 2, 0, 2], 5, 2, b"x", now).unwrap();
        go(&mut host, &mut peer, &mut r);
        assert!(matches!(host.ping_events(5).as_slice(), [PingEvent::Reply { from: [10, 2, 0, 2], seq: 2, .. }]));
        assert_eq!((r.stats.not_forwarding, r.stats.forwarded), (1, 2));
    }

    /// Two hosts joined by two links, each with a stable address on a third interface of its own (the
    /// dummy-interface address of routing practice), routed over link 1 (metric 10) and link 2 (metric
    /// 20).
    fn two_paths() -> (Router, Router, Rc<RefCell<Instant>>) {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (h1, p1) = link(([2, 0, 0, 1, 0, 1], [2, 0, 0, 1, 0, 2]), Impairment::default(), 1, clock.clone());
        let (h2, p2) = link(([2, 0, 0, 2, 0, 1], [2, 0, 0, 2, 0, 2]), Impairment::default(), 2, clock.clone());
        let (hd, _) = link(([2, 0, 0, 9, 0, 1], [2, 0, 0, 9, 0, 3]), Impairment::default(), 3, clock.clone());
        let (pd, _) = link(([2, 0, 0, 9, 0, 2], [2, 0, 0, 9, 0, 4]), Impairment::default(), 4, clock.clone());
        let mk = |d: crate::dev::sim::SimPort, a: [u8; 4], p: u8| Stack::new(Box::new(d), crate::Config::new(a, p));
        let mut h = Router::host(vec![mk(h1, [10, 1, 0, 1], 24), mk(h2, [10, 2, 0, 1], 24), mk(hd, [10, 9, 0, 1], 32)]);
        let mut p = Router::host(vec![mk(p1, [10, 1, 0, 2], 24), mk(p2, [10, 2, 0, 2], 24), mk(pd, [10, 9, 0, 2], 32)]);
        for (r, far, n) in [(&mut h, [10, 9, 0, 2], 2), (&mut p, [10, 9, 0, 1], 1)] {
            let dest = IpAddr::from(far);
            r.add_route(Route { dest, prefix: 32, via: Some(IpAddr::from([10, 1, 0, n])), iface: 0, metric: 10 });
            r.add_route(Route { dest, prefix: 32, via: Some(IpAddr::from([10, 2, 0, n])), iface: 1, metric: 20 });
        }
        (h, p, clock)
    }

    #[test]
    fn a_connection_outlives_its_link_when_the_route_moves() {
        let (mut h, mut p, clock) = two_paths();
        let go = |h: &mut Router, p: &mut Router, ms: u64| {
            for _ in 0..ms {
                let now = *clock.borrow();
                h.poll(now);
                p.poll(now);
                *clock.borrow_mut() = now + Duration::from_millis(1);
            }
        };
        let l = p.tcp_listen(80, 1).unwrap();
        let now = *clock.borrow();
        // From the stable address: opened through its interface, carried by the routes.
        let c = h.sockets_on(2, |s| s.tcp_connect_ip(0, IpAddr::from([10, 9, 0, 2]), 80, now)).unwrap().unwrap();
        go(&mut h, &mut p, 50);
        let s = p.tcp_accept(l).expect("connected over link 1");
        assert_eq!(p.sockets(|x| x.tcp_peer(s)).unwrap().map(|x| x.0), Some(IpAddr::from([10, 9, 0, 1])));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut cut = None;
        for step in 0..20_000 {
            let now = *clock.borrow();
            if sent < data.len() {
                sent += h.tcp_send(c, &data[sent..], now).unwrap_or(0);
            }
            while let Ok(n) = p.tcp_recv(s, &mut buf, now) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if cut.is_none() && got.len() > data.len() / 3 {
                // Link 1 fails at both ends: the routes through it no longer count.
                cut = Some(h.ifaces[1].stats.tx_bytes);
                h.ifaces[0].set_up(false);
                p.ifaces[0].set_up(false);
            }
            if got.len() == data.len() {
                break;
            }
            assert!(step < 19_999, "stalled at {} of {} bytes", got.len(), data.len());
            go(&mut h, &mut p, 1);
        }
        assert!(got == data, "the stream arrived intact across the failover");
        assert_eq!(h.sockets(|x| x.tcp_state(c)).unwrap(), Some(crate::tcp::State::Established));
        // Link 2 carried nothing but announcements before the cut, and the rest of the stream after it.
        let before = cut.expect("link 1 was cut");
        assert!(before < 1000, "{before} bytes over link 2 before the cut");
        assert!(h.ifaces[1].stats.tx_bytes - before > 50_000, "{} bytes after", h.ifaces[1].stats.tx_bytes - before);
        // With every link down the sockets are still there to read and look at.
        for i in 0..p.ifaces.len() {
            p.ifaces[i].set_up(false);
        }
        assert_eq!(p.sockets(|x| x.tcp_state(s)), Ok(Some(crate::tcp::State::Established)));
        assert_eq!(Router::host(Vec::new()).tcp_listen(80, 1), Err(crate::iface::ENETDOWN), "a host without interfaces");
    }

    #[test]
    fn a_socket_learns_the_mtu_of_the_link_its_route_leaves_by() {
        for v6 in [false, true] {
            local_path_mtu(v6);
        }
    }

    /// The host's address on a loopback device (MTU 65535) and a 1500-byte link to a peer whose own side
    /// allows 9000: the peer's MSS lets the host send 9000-byte packets, which the link cannot carry. The
    /// host's own route tells the socket, which cuts its segments and resends.
    fn local_path_mtu(v6: bool) {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (h1, p1) = link(([2, 0, 0, 1, 0, 1], [2, 0, 0, 1, 0, 2]), Impairment::default(), 1, clock.clone());
        let cfg = |a4: [u8; 4], p4: u8, a6: &str, p6: u8| {
            let mut c = crate::Config::new(a4, p4);
            if v6 {
                let a: std::net::Ipv6Addr = a6.parse().unwrap();
                c.ipv6 =
                    Some(crate::Ipv6Config { addrs: vec![(a.octets(), p6)], dad_transmits: 0, accept_ra: false, ..Default::default() });
            }
            c
        };
        let lo = Stack::new(Box::new(crate::dev::loopback::Loopback::default()), cfg([10, 9, 0, 1], 32, "2001:db8:9::1", 128));
        let mut h = Router::host(vec![lo, Stack::new(Box::new(h1), cfg([10, 1, 0, 1], 24, "2001:db8:1::1", 64))]);
        let mut pc = cfg([10, 1, 0, 2], 24, "2001:db8:1::2", 64);
        pc.gateway = Some([10, 1, 0, 1]);
        if let Some(c6) = pc.ipv6.as_mut() {
            c6.gateway = Some("2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        }
        // Segments as large as the MTUs allow on both sides: the MSS follows them.
        let mut p = Stack::new(Box::new(p1.with_mtu(9000)), pc);
        let l = p.tcp_listen(80, 1).unwrap();
        let (dst, src): (IpAddr, IpAddr) = if v6 {
            ("2001:db8:1::2".parse().unwrap(), "2001:db8:9::1".parse().unwrap())
        } else {
            ([10, 1, 0, 2].into(), [10, 9, 0, 1].into())
        };
        let c = h.sockets_on(0, |s| s.tcp_connect_ip(0, dst, 80, Instant::ZERO)).unwrap().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let (mut sent, mut got, mut buf, mut s) = (0, Vec::new(), vec![0u8; 65536], None);
        for _ in 0..5000 {
            let now = *clock.borrow();
            h.poll(now);
            p.poll(now);
            if s.is_none() {
                s = p.tcp_accept(l).ok();
            }
            if sent < data.len() {
                sent += h.tcp_send(c, &data[sent..], now).unwrap_or(0);
            }
            while let Some(Ok(n @ 1..)) = s.map(|s| p.tcp_recv(s, &mut buf, now)) {
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() == data.len() {
                break;
            }
            *clock.borrow_mut() = now + Duration::from_millis(1);
        }
        assert!(got == data, "v6 {v6}: {} of {} bytes arrived", got.len(), data.len());
        assert!(h.stats.too_big > 0, "v6 {v6}: the first large segments were too big for the link");
        assert_eq!(h.sockets(|x| x.tcp_conn(c).map(|t| t.local.0)).unwrap(), Some(src));
    }

    /// What a host with several interfaces sends from one of them to the address of another goes through
    /// `lo`, as Linux's local table routes it: OUTPUT and POSTROUTING see `lo` as the output interface,
    /// PREROUTING and INPUT as the input one, so a ruleset that accepts `iif lo` under a drop policy lets
    /// the host reach all of its addresses, 127.0.0.1 and ::1 among them. Pings and TCP connections, IPv4
    /// and IPv6; nothing reaches a wire. (The INPUT hook used to see the sending interface, and the drop
    /// policy took everything.)
    #[test]
    fn packets_to_the_hosts_other_addresses_go_through_lo() {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let six = |a: &str| a.parse::<std::net::Ipv6Addr>().unwrap();
        let cfg = |a4: [u8; 4], a6: &str| {
            let mut c = crate::Config::new(a4, 24);
            c.ipv6 =
                Some(crate::Ipv6Config { addrs: vec![(six(a6).octets(), 64)], dad_transmits: 0, accept_ra: false, ..Default::default() });
            c
        };
        for forwarding in [true, false] {
            let (ra, _pa) = link(([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]), Impairment::default(), 1, clock.clone());
            let (rb, _pb) = link(([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]), Impairment::default(), 2, clock.clone());
            let a = Stack::new(Box::new(ra), cfg([10, 1, 0, 1], "2001:db8:1::1"));
            let b = Stack::new(Box::new(rb), cfg([10, 2, 0, 1], "2001:db8:2::1"));
            let mut r = if forwarding { Router::new(vec![a, b]) } else { Router::host(vec![a, b]) };
            r.ifaces[0].set_name("a");
            r.ifaces[1].set_name("b");
            let rules = "table inet f {\n\
                         chain out { type filter hook output priority 0; oifname \"lo\" counter }\n\
                         chain post { type filter hook postrouting priority 0; oifname \"lo\" counter }\n\
                         chain pre { type filter hook prerouting priority 0; iifname \"lo\" counter }\n\
                         chain inp { type filter hook input priority 0; policy drop; iifname \"lo\" accept }\n}\n";
            r.set_netfilter(crate::netfilter::Netfilter::new(crate::netfilter::parse::parse(rules).unwrap()));
            let run = |r: &mut Router| {
                for _ in 0..30 {
                    let now = *clock.borrow();
                    r.poll(now);
                    *clock.borrow_mut() = now + Duration::from_millis(1);
                }
            };
            run(&mut r);
            let wire = |r: &Router| r.ifaces.iter().map(|s| (s.stats.tx_packets, s.stats.rx_packets)).collect::<Vec<_>>();
            let before = wire(&r);
            // From a's addresses (`ping -I a`) to b's.
            let now = *clock.borrow();
            r.sockets_on(0, |x| x.ping_send([10, 2, 0, 1], 4, 1, b"a to b", now)).unwrap().unwrap();
            r.sockets_on(0, |x| x.ping6_send(six("2001:db8:2::1").octets(), 6, 1, b"a to b", now)).unwrap().unwrap();
            run(&mut r);
            let ev = r.sockets(|x| x.ping_events(4)).unwrap();
            assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 2, 0, 1], .. }]), "forwarding {forwarding}: {ev:?}");
            let ev6 = r.sockets(|x| x.ping6_events(6)).unwrap();
            assert!(matches!(ev6.as_slice(), [crate::Ping6Event::Reply { .. }]), "forwarding {forwarding}: {ev6:?}");
            // A connection from a's address to a listener reached at b's, both families.
            let l = r.tcp_listen(80, 4).unwrap();
            let (lo4, lo6): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
            // Last, with every interface down: the loopback addresses (`lo` stays up, as Linux's does) and b's
            // IPv4 address (Linux keeps the local routes of a downed interface's IPv4 addresses).
            let b4 = IpAddr::from([10, 2, 0, 1]);
            let cases = [(b4, false), (IpAddr::from(six("2001:db8:2::1")), false), (lo4, false), (lo6, false)];
            for (dst, down) in cases.into_iter().chain([(lo4, true), (lo6, true), (b4, true)]) {
                r.ifaces[0].set_up(!down);
                r.ifaces[1].set_up(!down);
                let now = *clock.borrow();
                // To b's addresses from a's (`bind` to a); to the loopback addresses, and to b's with every
                // interface down, by the host's table.
                let c = if dst.is_loopback() || down {
                    r.tcp_connect(dst, 80, now).unwrap()
                } else {
                    r.sockets_on(0, |x| x.tcp_connect_ip(0, dst, 80, now)).unwrap().unwrap()
                };
                run(&mut r);
                let s = r.tcp_accept(l).unwrap_or_else(|e| panic!("forwarding {forwarding}, {dst}, down {down}: not accepted ({e:?})"));
                assert_eq!(r.sockets(|x| x.tcp_conn(s).map(|t| t.local.0)).unwrap(), Some(dst));
                let now = *clock.borrow();
                assert_eq!(r.tcp_send(c, b"over lo", now), Ok(7));
                run(&mut r);
                let mut buf = [0u8; 16];
                let now = *clock.borrow();
                assert_eq!(r.tcp_recv(s, &mut buf, now).map(|n| buf[..n].to_vec()), Ok(b"over lo".to_vec()), "{dst}, down {down}");
            }
            // Still down: b's IPv6 address is unreachable (Linux drops its local route with the link), and
            // so is everything on the links, at once.
            let now = *clock.borrow();
            for dst in [IpAddr::from(six("2001:db8:2::1")), IpAddr::from([10, 1, 0, 2]), IpAddr::from(six("2001:db8:1::2"))] {
                assert_eq!(r.tcp_connect(dst, 80, now), Err(ENETUNREACH), "forwarding {forwarding}: {dst}");
                assert_eq!(r.sockets_on(0, |x| x.tcp_connect_ip(0, dst, 80, now)).unwrap(), Err(ENETUNREACH), "{dst}");
            }
            r.ifaces[0].set_up(true);
            r.ifaces[1].set_up(true);
            assert_eq!(wire(&r), before, "forwarding {forwarding}: nothing went over a wire");
            let listing = r.nf.as_ref().unwrap().borrow().rules.listing();
            // Every packet of the pings and the connections passed each hook's `lo` rule, none its wire's.
            let counts: Vec<u64> = listing
                .lines()
                .filter_map(|l| l.split("counter # packets ").nth(1))
                .filter_map(|l| l.split(' ').next()?.parse().ok())
                .collect();
            assert_eq!(counts.len(), 3, "{listing}");
            assert!(counts.iter().all(|&n| n == counts[0] && n >= 4 + 2 * 4), "forwarding {forwarding}: {listing}");
            assert_eq!(r.stats.forwarded, 0);
        }
    }

    #[test]
    fn a_route_by_hand_wins_over_an_interfaces_own_link() {
        // 10.1.0.99 and 2001:db8:1::99 lie in interface a's prefixes, but the routes by hand say they are
        // behind the peer on link b. What the router sends there through a (from a's addresses) follows
        // the host's table, not a's link: nothing on link a answers.
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (ra, _nobody) = link(([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]), Impairment::default(), 1, clock.clone());
        let (rb, pb) = link(([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]), Impairment::default(), 2, clock.clone());
        let six = |a: &str| a.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let cfg = |a4: [u8; 4], a6: &[(&str, u8)]| {
            let mut c = crate::Config::new(a4, 24);
            let addrs = a6.iter().map(|(a, p)| (six(a), *p)).collect();
            c.ipv6 = Some(crate::Ipv6Config { addrs, dad_transmits: 0, accept_ra: false, ..Default::default() });
            c
        };
        let a = Stack::new(Box::new(ra), cfg([10, 1, 0, 1], &[("2001:db8:1::1", 64)]));
        let b = Stack::new(Box::new(rb), cfg([10, 2, 0, 1], &[("2001:db8:2::1", 64)]));
        let mut r = Router::new(vec![a, b]);
        let mut pc = cfg([10, 2, 0, 2], &[("2001:db8:2::2", 64), ("2001:db8:1::99", 128)]);
        pc.secondary.push(([10, 1, 0, 99], 32));
        pc.gateway = Some([10, 2, 0, 1]);
        if let Some(c6) = pc.ipv6.as_mut() {
            c6.gateway = Some(six("2001:db8:2::1"));
        }
        let mut p = Stack::new(Box::new(pb), pc);
        r.add_route(Route { dest: IpAddr::from([10, 1, 0, 99]), prefix: 32, via: Some(IpAddr::from([10, 2, 0, 2])), iface: 1, metric: 0 });
        let via6 = IpAddr::from(six("2001:db8:2::2"));
        r.add_route(Route { dest: IpAddr::from(six("2001:db8:1::99")), prefix: 128, via: Some(via6), iface: 1, metric: 0 });
        let run = |r: &mut Router, p: &mut Stack| {
            for _ in 0..50 {
                let now = *clock.borrow();
                r.poll(now);
                p.poll(now);
                *clock.borrow_mut() = now + Duration::from_millis(1);
            }
            *clock.borrow()
        };
        // Both sides up and announced first; from then on link a carries nothing.
        let now = run(&mut r, &mut p);
        let quiet = r.ifaces[0].stats.tx_packets;
        r.sockets_on(0, |s| s.ping_send([10, 1, 0, 99], 4, 1, b"v4", now)).unwrap().unwrap();
        r.sockets_on(0, |s| s.ping6_send(six("2001:db8:1::99"), 6, 1, b"v6", now)).unwrap().unwrap();
        run(&mut r, &mut p);
        let ev = r.sockets(|s| s.ping_events(4)).unwrap();
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 1, 0, 99], .. }]), "{ev:?}");
        let ev6 = r.sockets(|s| s.ping6_events(6)).unwrap();
        assert!(matches!(ev6.as_slice(), [crate::Ping6Event::Reply { .. }]), "{ev6:?}");
        assert_eq!(r.ifaces[0].stats.tx_packets, quiet, "nothing went out on link a");
    }
}
