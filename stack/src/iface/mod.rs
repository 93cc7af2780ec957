//! The stack on one device, one module per protocol as the Linux tree and smoltcp's `iface` split them:
//! `ethernet` (frames in and out, ARP), `ipv4` (routing, TTL, fragmentation and reassembly), `icmp` (echo
//! both ways, errors mapped to socket errors), `udp` and `tcp` (their sockets and the glue to
//! [`crate::tcp::Tcb`]), `socket` (the socket tables, which a host with several interfaces holds apart from
//! them and lends to the one it drives). This module holds the interface state and the poll loop. Single-threaded: the
//! owner calls [`Stack::poll`] with the current time.

mod ethernet;
mod icmp;
mod icmpv6;
mod ipv4;
mod ipv6;
mod monitor;
mod netfilter;
mod socket;
mod tcp;
mod udp;

pub use crate::errno::*;
pub use icmp::PingEvent;
pub use ipv4::ipv4_header_ok;
pub use ipv6::{Ipv6Config, Ping6Event};
pub use socket::Sockets;

use crate::dev::Device;
use crate::neigh::NeighCache;
use crate::route::{Route, Routes};
use crate::skb::PacketBuf;
use crate::time::Instant;
use crate::wire::{arp, Mac, BROADCAST};
use icmp::PingEvent as Ping;
use log::debug;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: [u8; 4],
    pub prefix: u8,
    pub gateway: Option<[u8; 4]>,
    pub ttl: u8,
    pub neigh: crate::neigh::Config,
    pub reasm_timeout: Duration,
    pub reasm_max_datagrams: usize,
    pub qdisc_len: usize,
    /// IPv6 on this interface (off when `None`).
    pub ipv6: Option<Ipv6Config>,
    /// Packets for other hosts are handed to a router (`take_forwarded`) instead of dropped; off by
    /// default, as on Linux.
    pub forwarding: bool,
    /// More IPv4 addresses on the interface, each with its prefix (as `ip addr add` again).
    pub secondary: Vec<([u8; 4], u8)>,
}

impl Config {
    pub fn new(addr: [u8; 4], prefix: u8) -> Config {
        Config {
            addr,
            prefix,
            gateway: None,
            ttl: 64,
            neigh: Default::default(),
            reasm_timeout: Duration::from_secs(30),
            reasm_max_datagrams: 64,
            qdisc_len: 1000,
            ipv6: None,
            forwarding: false,
            secondary: Vec::new(),
        }
    }
}

pub type SocketHandle = usize;

/// Counters named after Linux's SNMP MIB entries.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub in_receives: u64,
    pub in_hdr_errors: u64,
    pub in_delivers: u64,
    pub out_requests: u64,
    pub frag_creates: u64,
    pub reasm_oks: u64,
    pub reasm_fails: u64,
    pub in_csum_errors: u64,
    pub arp_requests: u64,
    pub arp_replies: u64,
    pub qdisc_drops: u64,
    pub no_ports: u64,
    pub gro_merged: u64,
    /// IPv6 (Ip6InReceives, Ip6InHdrErrors, Ip6InDelivers, Icmp6OutErrors).
    pub in6_receives: u64,
    pub in6_hdr_errors: u64,
    pub in6_delivers: u64,
    pub icmp6_out_errors: u64,
    /// Frames that arrived while the interface was down.
    pub down_drops: u64,
    /// Packets netfilter dropped or rejected at this interface's hooks.
    pub nf_drops: u64,
    /// MIB counters under Linux's names (`nstat`): TcpActiveOpens, TcpPassiveOpens, TcpInSegs,
    /// TcpOutSegs, UdpInDatagrams, UdpOutDatagrams, UdpRcvbufErrors, IcmpInEchos, IcmpOutEchoReps,
    /// Icmp6InEchos, Icmp6OutEchoReplies.
    pub tcp_active_opens: u64,
    pub tcp_passive_opens: u64,
    pub tcp_in_segs: u64,
    pub tcp_out_segs: u64,
    pub udp_in_datagrams: u64,
    pub udp_out_datagrams: u64,
    pub udp_rcvbuf_errors: u64,
    pub icmp_in_echos: u64,
    pub icmp_out_echo_reps: u64,
    pub icmp6_in_echos: u64,
    pub icmp6_out_echo_replies: u64,
    /// The link (`ip -s link`): frames and bytes from and to the device.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Frames handed to the device per transmit call.
const TX_BATCH: usize = 64;

/// The first hop that means "the host routes it" for an interface of a host with several
/// (`Stack::set_host_routed`): never a neighbour's address.
pub(super) const HOST_HOP4: [u8; 4] = [0; 4];
pub(super) const HOST_HOP6: crate::wire::ipv6::Addr = [0; 16];

/// The MTU toward 127.0.0.0/8 and ::1: `lo`'s, as Linux sets it.
pub(super) const LO_MTU: usize = 65536;

pub struct Stack {
    pub dev: Box<dyn Device>,
    pub cfg: Config,
    mac: Mac,
    routes: Routes,
    neigh: NeighCache,
    /// Frames taken from the qdisc for the device that it has not accepted yet.
    txq: VecDeque<PacketBuf>,
    /// The egress queueing discipline (`tc qdisc`): pfifo_fast of `qdisc_len` unless set.
    qdisc: Box<dyn crate::tc::Qdisc>,
    /// An ingress policer (`tc ... police`).
    policer: Option<crate::tc::police::Policer>,
    /// The time of the last poll or send, for the qdisc's timestamps.
    clock: Instant,
    ident: u16,
    reasm: crate::frag::Reassembly<([u8; 4], [u8; 4], u16, u8)>,
    /// Path MTUs learned from ICMP "fragmentation needed".
    pmtu: HashMap<[u8; 4], usize>,
    pub stats: Stats,
    rx: Vec<PacketBuf>,
    /// IP packets the stack sent to one of its own addresses: as Linux routes those through `lo`, they come
    /// back in past the device (not counted, captured, policed or merged as the device's frames), and
    /// netfilter sees `lo` as their output and input interface.
    looped: Vec<PacketBuf>,
    /// Set while a looped packet goes through the input path (`looped`).
    in_lo: bool,
    announced: bool,
    /// The sockets: the stack's own, or while a host with several interfaces drives this one, the
    /// host's.
    socks: Sockets,
    pub tcp_cfg: crate::tcp::Config,
    v6: Option<ipv6::V6>,
    /// IP packets for other hosts, waiting for the router (with `Config::forwarding`).
    forwarded: Vec<(Vec<u8>, crate::netfilter::Ctx)>,
    /// One interface of a host with several (a router's): what the stack itself sends toward a
    /// destination off this interface's link goes to the host's routing table (`host_out`) instead of a
    /// gateway of its own.
    host_routed: bool,
    /// Packets the stack sent for the host to route, with what netfilter's OUTPUT made of them
    /// (POSTROUTING is the host's, once it knows the interface they leave by).
    host_out: Vec<(Vec<u8>, crate::netfilter::Ctx)>,
    /// The unicast addresses of the host's other interfaces (`set_host_routed`), kept current by the
    /// host: what the stack sends to one of them goes through `lo`, as to its own.
    host_addrs: Vec<std::net::IpAddr>,
    /// Packets that came in through `lo` for another interface of the host, with what PREROUTING made of
    /// them: the host delivers them there (INPUT with `lo` as the input interface).
    host_in: Vec<(Vec<u8>, crate::netfilter::Ctx)>,
    /// The host's (or router's) netfilter, shared by its interfaces.
    nf: Option<std::rc::Rc<std::cell::RefCell<crate::netfilter::Netfilter>>>,
    /// The conntrack result and mark of the packet being received, from PREROUTING on.
    nf_ctx: crate::netfilter::Ctx,
    /// The interface's name for rules and reports (the device's own name unless set).
    name: Option<String>,
    /// Drop reasons and events (`monitor`).
    pub mon: crate::monitor::Monitor,
    /// A packet capture of everything received and sent.
    capture: Option<crate::monitor::Capture>,
    /// Administratively up (`ip link set up`): while down nothing is received or sent.
    up: bool,
}

/// A random 64-bit secret from the kernel (getrandom), or, if that fails, the clock and process id.
fn random_secret() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the given length into a live buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// A keyed hash of a connection's endpoints: SipHash (std's) over the secret and the 4-tuple.
fn tuple_hash(secret: u64, parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write_u64(secret);
    for p in parts {
        h.write(p);
    }
    h.finish()
}

impl Stack {
    pub fn new(dev: Box<dyn Device>, cfg: Config) -> Stack {
        let mut routes = Routes::default();
        routes.add(Route { dest: cfg.addr, prefix: cfg.prefix, gateway: None });
        for &(dest, prefix) in &cfg.secondary {
            routes.add(Route { dest, prefix, gateway: None });
        }
        if let Some(gw) = cfg.gateway {
            routes.add(Route { dest: [0; 4], prefix: 0, gateway: Some(gw) });
        }
        let mac = dev.mac();
        let v6_cfg = cfg.ipv6.clone();
        let reasm_limits = (cfg.reasm_max_datagrams, cfg.reasm_timeout);
        let qdisc_len = cfg.qdisc_len;
        Stack {
            dev,
            neigh: NeighCache::new(cfg.neigh.clone()),
            cfg,
            mac,
            routes,
            txq: VecDeque::new(),
            qdisc: Box::new(crate::tc::fifo::PfifoFast::new(qdisc_len)),
            policer: None,
            clock: Instant::ZERO,
            ident: 1,
            reasm: crate::frag::Reassembly::new(reasm_limits.0, reasm_limits.1),
            pmtu: HashMap::new(),
            stats: Stats::default(),
            rx: Vec::new(),
            looped: Vec::new(),
            in_lo: false,
            announced: false,
            socks: Sockets::default(),
            // A connection's MSS follows the MTU toward its peer (`conn_cfg`): the configured one caps it
            // only when set lower, as a socket's TCP_MAXSEG does.
            tcp_cfg: crate::tcp::Config { mss: 65495, ..Default::default() },
            forwarded: Vec::new(),
            host_routed: false,
            host_out: Vec::new(),
            host_addrs: Vec::new(),
            host_in: Vec::new(),
            nf: None,
            nf_ctx: crate::netfilter::Ctx::default(),
            name: None,
            mon: crate::monitor::Monitor::default(),
            capture: None,
            up: true,
            v6: v6_cfg.map(|c| ipv6::V6::new(c, mac, crate::frag::Reassembly::new(reasm_limits.0, reasm_limits.1))),
        }
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn routes_mut(&mut self) -> &mut Routes {
        &mut self.routes
    }

    pub fn neighbour(&self, ip: [u8; 4]) -> Option<Mac> {
        self.neigh.lookup(ip)
    }

    // ---- timers and the poll loop ----

    /// Receives, runs timers and transmits. Returns whether anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.up {
            // A down interface takes nothing in: what arrives is dropped, counted. `lo` stays up, as
            // Linux's does: the host's traffic to 127.0.0.0/8 and ::1 goes on, and so do the connections'
            // timers (what they send toward the link is dropped, counted, as `enqueue` does).
            let mut frames = std::mem::take(&mut self.rx);
            let _ = self.dev.poll(64, &mut frames);
            self.stats.down_drops += frames.len() as u64;
            self.drop_reason(crate::monitor::DropReason::DevReady, frames.len() as u64);
            frames.clear();
            self.rx = frames;
            self.clock = now;
            let progress = self.run_looped(now);
            if !self.host_routed {
                self.tcp_poll(now);
            }
            return progress;
        }
        if !self.announced {
            self.announced = true;
            self.announce();
        }
        if self.dev.announce_wanted() {
            // The device changed under us (a bond failed over): its address may have too; tell the link.
            self.mac = self.dev.mac();
            self.announce();
            self.announce6();
        }
        self.clock = now;
        let mut progress = false;
        let mut frames = std::mem::take(&mut self.rx);
        match self.dev.poll(64, &mut frames) {
            Ok(_) => {}
            Err(e) => debug!("{}: poll: {e}", self.dev.name()),
        }
        progress |= !frames.is_empty();
        for f in &frames {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += f.len() as u64;
        }
        if let Some(c) = self.capture.as_mut() {
            for f in &frames {
                let _ = c.write(&f.to_vec());
            }
        }
        if let Some(pol) = self.policer.as_mut() {
            let before = frames.len();
            frames.retain(|f| pol.admit(f.len(), now));
            self.drop_reason(crate::monitor::DropReason::TcIngress, (before - frames.len()) as u64);
        }
        if frames.len() > 1 {
            let merged = crate::gro::merge(&mut frames, &|d| self.owns(d));
            self.stats.gro_merged += merged as u64;
        }
        for f in frames.drain(..) {
            self.input(f, now);
        }
        // The vector goes back for the next poll with its room (grown again from nothing on every poll, it
        // was reallocated six times for 64 frames).
        self.rx = frames;
        progress |= self.run_looped(now);
        let (requests, failed) = self.neigh.poll(now);
        for ip in requests {
            self.send_arp(arp::OP_REQUEST, [0; 6], ip, BROADCAST);
        }
        for (ip, p) in failed {
            // Resolution failed: ICMP-style host unreachable for our own sockets.
            debug!("no ARP answer from {ip:?}");
            let d = p.data();
            if d.len() >= 20 {
                let l4 = (d[0] & 0xF) as usize * 4;
                let (dst, proto) = (ip, d[9]);
                let l4b = d.get(l4..).unwrap_or(&[]).to_vec();
                self.icmp_error_to(self.cfg.addr, 1, None, dst, proto, &l4b);
            }
        }
        let expired = self.reasm.expire(now) as u64;
        self.stats.reasm_fails += expired;
        self.drop_reason(crate::monitor::DropReason::FragReasmTimeout, expired);
        if !self.host_routed {
            // A host with several interfaces runs its connections' timers once per poll
            // (`run_socket_timers`), not once per interface.
            self.tcp_poll(now);
        }
        self.poll6(now);
        progress |= self.transmit(now);
        progress
    }

    /// What the stack sent to itself since the last poll, back in through `lo`. What these draw in turn (a
    /// reply to ourselves) waits for the next poll, which `poll_at` asks for at once.
    fn run_looped(&mut self, now: Instant) -> bool {
        let looped = std::mem::take(&mut self.looped);
        let progress = !looped.is_empty();
        for p in looped {
            self.in_lo = true;
            match p.data().first().map(|b| b >> 4) {
                Some(4) => self.ipv4_input(p, now),
                Some(6) => self.ipv6_input(p, now),
                _ => {}
            }
            self.in_lo = false;
        }
        progress
    }

    /// Moves frames from the qdisc to the device while both allow.
    fn transmit(&mut self, now: Instant) -> bool {
        let mut progress = false;
        loop {
            while self.txq.len() < TX_BATCH {
                match self.qdisc.dequeue(now) {
                    Some(p) => {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += p.len() as u64;
                        if let Some(c) = self.capture.as_mut() {
                            let _ = c.write(&p.to_vec());
                        }
                        self.txq.push_back(p);
                    }
                    None => break,
                }
            }
            if self.txq.is_empty() {
                break;
            }
            match self.dev.transmit(&mut self.txq) {
                Ok(0) => break,
                Ok(_) => progress = true,
                Err(e) => {
                    debug!("{}: transmit: {e}", self.dev.name());
                    break;
                }
            }
        }
        progress
    }

    /// Replaces the egress qdisc (`tc qdisc replace dev X root ...`); what the old one held is dropped.
    pub fn set_qdisc(&mut self, q: Box<dyn crate::tc::Qdisc>) {
        self.qdisc.reset();
        self.stats.qdisc_drops += self.qdisc.stats().backlog_packets;
        self.qdisc = q;
    }

    pub fn qdisc(&self) -> &dyn crate::tc::Qdisc {
        self.qdisc.as_ref()
    }

    /// Polices what arrives (`tc filter add dev X ingress ... action police`).
    pub fn set_policer(&mut self, p: Option<crate::tc::police::Policer>) {
        self.policer = p;
    }

    pub fn policer(&self) -> Option<&crate::tc::police::Policer> {
        self.policer.as_ref()
    }

    /// `tc -s qdisc show dev X`, with the ingress policer.
    pub fn tc_show(&self) -> String {
        let mut s = format!("dev {}:\n{}", self.name(), self.qdisc.show());
        if let Some(p) = &self.policer {
            s += &format!("\ningress {}", p.show());
        }
        s
    }

    /// Whether the interface is down and `dst`'s route went with it: Linux drops a downed device's
    /// connected routes and the local routes of its IPv6 addresses, and keeps those of its IPv4 addresses
    /// (reached through `lo`), `lo`'s own and, on a host with several interfaces, the other interfaces'.
    pub(super) fn route_down(&self, dst: std::net::IpAddr) -> bool {
        if self.up {
            return false;
        }
        match dst {
            std::net::IpAddr::V4(a) => !(self.local_v4(a.octets()) || self.host_routed && self.host_addrs.contains(&dst)),
            std::net::IpAddr::V6(a) => !a.is_loopback(),
        }
    }

    /// Takes the interface down or up (`ip link set dev X down|up`). While down the device is neither
    /// read nor written, what was queued to send is dropped, and sending toward the link fails with
    /// ENETUNREACH (its routes are gone, as Linux removes them); coming up, the stack announces its
    /// addresses again. `lo` is not this interface: 127.0.0.0/8 and ::1 stay reachable, and so do the
    /// interface's own IPv4 addresses (Linux keeps their local routes; its IPv6 ones it does not). Its IPv6
    /// addresses go with it, as with Linux's default (`Ipv6Config::keep_addr_on_down`), and what was
    /// learned on the link; coming up, it forms its link-local address again.
    pub fn set_up(&mut self, up: bool) {
        if self.up == up {
            return;
        }
        self.up = up;
        if let Some(v) = self.v6.as_mut() {
            if up {
                v.up(self.mac);
            } else {
                v.down();
            }
        }
        if up {
            self.announced = false;
        } else {
            let n = self.txq.len() as u64 + self.qdisc.len() as u64;
            self.stats.qdisc_drops += n;
            self.drop_reason(crate::monitor::DropReason::DevReady, n);
            self.txq.clear();
            self.qdisc.reset();
        }
    }

    /// Names the interface (as `iifname`/`oifname` rules see it).
    pub fn set_name(&mut self, name: &str) {
        self.name = Some(name.to_string());
    }

    /// The interface's name: as set, else the device's.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.dev.name())
    }

    /// Whether the interface is administratively up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Makes this stack one interface of a host with several (a router's): what it sends off its own link
    /// goes to the host's routing table (`take_host_out`), and it sends whole packets with whole checksums
    /// (the host may route them out of another interface).
    pub fn set_host_routed(&mut self, on: bool) {
        self.host_routed = on;
        if let Some(v) = self.v6.as_mut() {
            v.host_routed = on;
        }
    }

    /// Exchanges the stack's socket table with `other`: a host with several interfaces lends its table to
    /// the interface it drives, and takes it back with the same call.
    pub(crate) fn swap_sockets(&mut self, other: &mut Sockets) {
        std::mem::swap(&mut self.socks, other);
    }

    /// A route of the host's (an interface of a host with several, `set_host_routed`): what the stack
    /// sends to `dest`/`prefix` goes through the host's table, even to a destination on this interface's
    /// own link, when the route is more specific than the link's prefix (the host's longest match
    /// decides, as one table would). A route the interface already has for exactly that prefix stays.
    pub fn add_host_route(&mut self, dest: std::net::IpAddr, prefix: u8) {
        match dest {
            std::net::IpAddr::V4(d) => {
                if !self.routes.contains(d.octets(), prefix) {
                    self.routes.add(Route { dest: d.octets(), prefix, gateway: Some(HOST_HOP4) });
                }
            }
            std::net::IpAddr::V6(d) => {
                if let Some(v) = self.v6.as_mut() {
                    v.host_routes.push((d.octets(), prefix));
                }
            }
        }
    }

    /// The timers and pending output of every connection in the socket table the stack holds (a host's,
    /// lent): what `poll` does for a stack on its own.
    pub(crate) fn run_socket_timers(&mut self, now: Instant) {
        self.clock = now;
        self.tcp_poll(now);
    }

    /// The packets this stack sent for the host to route since the last call, with what OUTPUT made of
    /// them.
    pub fn take_host_out(&mut self) -> Vec<(Vec<u8>, crate::netfilter::Ctx)> {
        std::mem::take(&mut self.host_out)
    }

    /// The packets that came in through `lo` since the last call for another interface of the host (see
    /// `set_host_addrs`), with what PREROUTING made of them.
    pub fn take_host_in(&mut self) -> Vec<(Vec<u8>, crate::netfilter::Ctx)> {
        std::mem::take(&mut self.host_in)
    }

    /// Swaps in the unicast addresses of the host's other interfaces (`addrs` gets the previous list
    /// back, for reuse): what the stack sends to one of them goes through `lo` and comes back in past
    /// the device, as Linux routes a host's packets to any of its addresses by its local table, and the
    /// host delivers it to the interface that holds the address (`take_host_in`).
    pub fn swap_host_addrs(&mut self, addrs: &mut Vec<std::net::IpAddr>) {
        std::mem::swap(&mut self.host_addrs, addrs);
    }

    /// Appends this interface's unicast addresses to `out`: IPv4, then IPv6 other than link-local (whose
    /// scope is the link) and tentative.
    pub fn unicast_addrs(&self, out: &mut Vec<std::net::IpAddr>) {
        out.push(self.cfg.addr.into());
        out.extend(self.cfg.secondary.iter().map(|s| std::net::IpAddr::from(s.0)));
        if let Some(v) = self.v6.as_ref() {
            out.extend(
                v.addrs
                    .iter()
                    .filter(|a| !crate::wire::ipv6::is_link_local(&a.addr) && !matches!(a.state, ipv6::AddrState::Tentative { .. }))
                    .map(|a| std::net::IpAddr::from(a.addr)),
            );
        }
    }

    /// Drops (and counts) an IP packet that came in from a device with a loopback source or destination
    /// (127.0.0.0/8, RFC 1122 3.2.1.3; ::1, RFC 4291 2.5.3): those exist only on `lo`, and Linux's
    /// routing drops them as martians, before INPUT. Whether it did.
    pub(super) fn dropped_martian(&mut self, pkt: &[u8]) -> bool {
        if self.in_lo {
            return false;
        }
        let Some((src, dst)) = crate::wire::ip_addrs(pkt) else { return false };
        if !src.is_loopback() && !dst.is_loopback() {
            return false;
        }
        if src.is_ipv4() {
            self.drop_reason(crate::monitor::DropReason::IpLocalnet, 1);
        } else {
            self.stats.in6_hdr_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IpInhdr, 1);
        }
        true
    }

    /// Whether an IP packet is for another interface of the host (`swap_host_addrs`).
    pub(super) fn for_host_addr(&self, pkt: &[u8]) -> bool {
        if !self.host_routed || self.host_addrs.is_empty() {
            return false;
        }
        crate::wire::ip_addrs(pkt).is_some_and(|(_, d)| self.host_addrs.contains(&d))
    }

    /// A packet that came in through `lo` for an address this interface does not hold: another
    /// interface's, handed to the host (`take_host_in`). False when it is not such a packet.
    pub(super) fn looped_to_host(&mut self, pkt: &[u8]) -> bool {
        if !(self.in_lo && self.host_routed) || self.host_in.len() >= 4096 {
            return false;
        }
        self.host_in.push((pkt.to_vec(), self.nf_ctx));
        true
    }

    /// Whether `a` is one of this interface's unicast addresses (IPv4, or IPv6 in any state but tentative).
    pub fn owns(&self, a: std::net::IpAddr) -> bool {
        match a {
            std::net::IpAddr::V4(a) => self.owns_v4(a.octets()),
            std::net::IpAddr::V6(a) => {
                self.v6.as_ref().and_then(|v| v.owns(&a.octets())).is_some_and(|x| !matches!(x.state, ipv6::AddrState::Tentative { .. }))
            }
        }
    }

    /// A packet routed to the host (see `set_host_routed`): whole, checksums complete.
    fn send_to_host(&mut self, mut p: PacketBuf, ctx: crate::netfilter::Ctx) {
        if self.host_out.len() >= 4096 {
            self.drop_reason(crate::monitor::DropReason::NeighQueuefull, 1);
            return;
        }
        p.linearize();
        self.host_out.push((p.data().to_vec(), ctx));
    }

    /// An IP packet that arrived on another interface of this host (`iif`) for one of this interface's
    /// addresses (Linux's weak host model): netfilter's INPUT (PREROUTING ran where it arrived), then
    /// local delivery.
    pub fn deliver_local(&mut self, packet: &[u8], iif: &str, mut ctx: crate::netfilter::Ctx, now: Instant) {
        let mut p = PacketBuf::from_slice(packet);
        if !self.nf_input_from(iif, &mut ctx, &mut p, now) {
            return;
        }
        self.nf_ctx = ctx;
        // From `lo` (another interface of the host sent it): 127.0.0.1 or ::1 may be its source.
        self.in_lo = iif == "lo";
        match packet.first().map(|b| b >> 4) {
            Some(4) => self.ipv4_local(p, now),
            Some(6) => self.ipv6_local(p, now),
            _ => {}
        }
        self.in_lo = false;
    }

    /// One of this host's own packets (sent from this interface's sockets) was too big for the link the
    /// host routed it to: as Linux reports a local path MTU, the socket's destination gets `mtu` as its
    /// path MTU and live TCP connections to it cut their segments, without a round trip over the wire.
    pub fn local_too_big(&mut self, packet: &[u8], mtu: usize) {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let Ok(ip) = crate::wire::ipv4::Packet::new_checked(packet) else { return };
                let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
                let l4 = packet.get(ip.header_len()..).unwrap_or(&[]);
                let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
                self.icmp_error_to(src, crate::wire::icmp::CODE_FRAG_NEEDED, Some(mtu), dst, proto, l4);
            }
            Some(6) => {
                let Some(src) = packet.get(8..24).and_then(|a| <[u8; 16]>::try_from(a).ok()) else { return };
                self.icmp6_error_input(src, crate::wire::icmpv6::PACKET_TOO_BIG, 0, u32::try_from(mtu).unwrap_or(u32::MAX), packet);
            }
            _ => {}
        }
    }

    /// The IP packets that arrived for other hosts since the last call (with `Config::forwarding`), each
    /// with what netfilter's PREROUTING made of it.
    pub fn take_forwarded(&mut self) -> Vec<(Vec<u8>, crate::netfilter::Ctx)> {
        std::mem::take(&mut self.forwarded)
    }

    /// When the stack next needs a poll without new input.
    pub fn poll_at(&self) -> Option<Instant> {
        let r = self.reasm.next_deadline();
        let q = self.qdisc.next_at(self.clock);
        let looped = (!self.looped.is_empty()).then_some(self.clock);
        [self.neigh.next_deadline(), r, self.socks.poll_at(), self.poll6_at(), q, looped].into_iter().flatten().min()
    }
}
