//! A router over several interfaces, each a stack of its own with forwarding on (`Config::forwarding`):
//! the stacks keep their host duties (ARP and neighbour discovery, answering pings, their sockets) and hand
//! packets for other hosts here. The routing table holds per family the connected prefixes of every
//! interface and routes added by hand (longest prefix wins, then the lowest metric; several default routes
//! may coexist). Forwarding lowers the TTL or hop limit and answers as routers must: time exceeded at 1,
//! destination unreachable without a route, fragmentation needed / Packet Too Big when the egress link is
//! smaller (an IPv4 packet without DF is fragmented instead), never for link-local IPv6.

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
}

/// A socket of the router as one host: the interface whose stack holds it, and its handle there.
pub type HostHandle = (usize, crate::iface::SocketHandle);

pub struct Router {
    pub ifaces: Vec<Stack>,
    pub routes: Vec<Route>,
    pub stats: RouterStats,
    /// Netfilter for the whole router (every interface shares it).
    pub nf: Option<Rc<RefCell<Netfilter>>>,
}

/// An IP packet's destination address.
fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?)),
        6 => Some(IpAddr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?)),
        _ => None,
    }
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
    /// A router over `ifaces` (each with forwarding on); their connected prefixes become routes.
    pub fn new(mut ifaces: Vec<Stack>) -> Router {
        let mut routes = Vec::new();
        for (i, s) in ifaces.iter_mut().enumerate() {
            s.cfg.forwarding = true;
            s.set_host_routed(true);
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
        Router { ifaces, routes, stats: RouterStats::default(), nf: None }
    }

    /// Netfilter on every interface and on the forwarding path.
    pub fn set_netfilter(&mut self, nf: Netfilter) {
        let nf = Rc::new(RefCell::new(nf));
        for s in self.ifaces.iter_mut() {
            s.set_netfilter(nf.clone());
        }
        self.nf = Some(nf);
    }

    pub fn add_route(&mut self, r: Route) {
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

    /// A TCP listener of the router as one host, on `port` of every interface (as a listener on any
    /// address): one handle per interface, in interface order.
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<Vec<HostHandle>, crate::Errno> {
        let mut hs = Vec::new();
        for (i, s) in self.ifaces.iter_mut().enumerate() {
            hs.push((i, s.tcp_listen(port, backlog)?));
        }
        Ok(hs)
    }

    /// A connection that reached any of `listeners` (EAGAIN when none has one).
    pub fn tcp_accept(&mut self, listeners: &[HostHandle]) -> Result<HostHandle, crate::Errno> {
        for &(i, h) in listeners {
            if let Some(c) = self.ifaces.get_mut(i).and_then(|s| s.tcp_accept(h).ok()) {
                return Ok((i, c));
            }
        }
        Err(crate::iface::EAGAIN)
    }

    /// A TCP connection from the router to `dst`: opened on the interface the routing table picks, from
    /// that interface's address, and sent out of it through the table's next hop.
    pub fn tcp_connect(&mut self, dst: IpAddr, port: u16, now: Instant) -> Result<HostHandle, crate::Errno> {
        let (i, _) = self.lookup(dst).ok_or(crate::iface::ENETUNREACH)?;
        let s = self.ifaces.get_mut(i).ok_or(crate::iface::ENETUNREACH)?;
        Ok((i, s.tcp_connect_ip(0, dst, port, now)?))
    }

    /// Polls every interface and forwards what they handed over. Whether anything moved.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for i in 0..self.ifaces.len() {
            if let Some(s) = self.ifaces.get_mut(i) {
                moved |= s.poll(now);
            }
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
        }
        if moved {
            // What the forwarding queued leaves now, not at the next poll.
            for s in self.ifaces.iter_mut() {
                s.poll(now);
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
    /// model), as arrived on `from`: its TTL untouched, through INPUT. False when no interface holds it.
    fn deliver_if_own(&mut self, from: usize, p: &[u8], ctx: Ctx, now: Instant) -> bool {
        let Some(j) = ip_dst(p).and_then(|d| self.ifaces.iter().position(|s| s.owns(d))) else { return false };
        let name = self.ifaces.get(from).map(|s| s.name()).unwrap_or_default();
        if let Some(s) = self.ifaces.get_mut(j) {
            s.deliver_local(p, &name, ctx, now);
        }
        true
    }

    /// A packet the router itself sent from interface `from` toward a destination off that link (OUTPUT
    /// already ran there): POSTROUTING with the interface the routing table picks, then out of it (no TTL
    /// change, no FORWARD hook: it is the router's own); or in to another of its interfaces that holds the
    /// address.
    fn route_local(&mut self, from: usize, mut p: Vec<u8>, mut ctx: Ctx, now: Instant) {
        let Some(dst) = ip_dst(&p) else { return };
        if self.deliver_if_own(from, &p, ctx, now) {
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
        let sent = match hop {
            IpAddr::V4(h) => out.forward_out_v4(&p, h.octets(), ctx.mark, now),
            IpAddr::V6(h) => out.forward_out_v6(&p, h.octets(), &ctx, now),
        };
        if sent.is_err() {
            self.stats.too_big += 1;
        }
    }

    fn forward(&mut self, from: usize, mut p: Vec<u8>, mut ctx: Ctx, now: Instant) {
        // For another of the router's own addresses: delivered there rather than forwarded.
        if self.deliver_if_own(from, &p, ctx, now) {
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
            "router {name}: forwarded {} time exceeded {} no route {} too big {} filtered {}\n",
            st.forwarded, st.ttl_exceeded, st.no_route, st.too_big, st.filtered
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
        let r = Router { ifaces: Vec::new(), routes, stats: RouterStats::default(), nf: None };
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
        // A TCP connection to a listener on the far interface.
        let l = r.ifaces[1].tcp_listen(80, 1).unwrap();
        let now = *clock.borrow();
        let c = host.tcp_connect([10, 2, 0, 1], 80, now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let s = r.ifaces[1].tcp_accept(l).expect("accepted on the far interface");
        let now = *clock.borrow();
        assert_eq!(host.tcp_send(c, b"through the near side", now), Ok(21));
        run(&mut host, &mut r, &clock, 30);
        let mut buf = [0u8; 64];
        let now = *clock.borrow();
        let n = r.ifaces[1].tcp_recv(s, &mut buf, now).unwrap();
        assert_eq!(&buf[..n], b"through the near side");
        // The router's far interface reaches the host too: out of the near interface.
        let now = *clock.borrow();
        r.ifaces[1].ping_send([10, 1, 0, 2], 9, 1, b"from b", now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let ev = r.ifaces[1].ping_events(9);
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
        // Interface b's echo request to the host on a's link leaves by a: a's rule drops it.
        r.ifaces[1].ping_send([10, 1, 0, 2], 9, 1, b"from b", Instant::ZERO).unwrap();
        run(&mut host, &mut r, &clock, 30);
        assert!(r.ifaces[1].ping_events(9).is_empty(), "dropped on its way out of a");
        assert_eq!(r.stats.filtered, 1);
        assert!(r.nf.as_ref().unwrap().borrow().rules.listing().contains("# packets 1 "));
        // The host's own echo request to b's address is answered (the reply is not an echo request).
        let now = *clock.borrow();
        host.ping_send([10, 2, 0, 1], 7, 1, b"to b", now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        assert_eq!(host.ping_events(7).len(), 1);
    }

    #[test]
    fn sockets_of_the_router_as_one_host() {
        let (mut host, mut r, clock) = setup();
        // A listener on every interface: the host reaches it at either of the router's addresses.
        let ls = r.tcp_listen(81, 4).unwrap();
        assert_eq!(ls.len(), 2);
        let now = *clock.borrow();
        let near = host.tcp_connect([10, 1, 0, 1], 81, now).unwrap();
        let far = host.tcp_connect([10, 2, 0, 1], 81, now).unwrap();
        run(&mut host, &mut r, &clock, 30);
        let a = r.tcp_accept(&ls).unwrap();
        let b = r.tcp_accept(&ls).unwrap();
        let mut sides = [a.0, b.0];
        sides.sort();
        assert_eq!(sides, [0, 1], "one connection on each interface");
        assert_eq!(r.tcp_accept(&ls), Err(crate::iface::EAGAIN));
        assert!(host.tcp_conn(near).is_some() && host.tcp_conn(far).is_some());
        // A connection from the router: from the address of the interface its route leaves by.
        let l = host.tcp_listen(82, 1).unwrap();
        let now = *clock.borrow();
        let (i, c) = r.tcp_connect("10.1.0.2".parse().unwrap(), 82, now).unwrap();
        assert_eq!(i, 0);
        run(&mut host, &mut r, &clock, 30);
        let s = host.tcp_accept(l).unwrap();
        assert_eq!(host.tcp_peer(s).map(|p| p.0), Some("10.1.0.1".parse().unwrap()));
        let now = *clock.borrow();
        assert_eq!(r.ifaces[i].tcp_send(c, b"from the router", now), Ok(15));
        run(&mut host, &mut r, &clock, 30);
        let mut buf = [0u8; 32];
        let now = *clock.borrow();
        let n = host.tcp_recv(s, &mut buf, now).unwrap();
        assert_eq!(&buf[..n], b"from the router");
        assert_eq!(r.tcp_connect("192.0.2.1".parse().unwrap(), 80, now), Err(crate::iface::ENETUNREACH), "no route");
    }
}
