//! The stack on one device: Ethernet in and out, ARP, IPv4 (routing, TTL, fragmentation and reassembly),
//! ICMP (echo both ways, errors mapped to socket errors) and UDP sockets. Single-threaded: the owner calls
//! [`Stack::poll`] with the current time.

use crate::dev::Device;
use crate::neigh::{NeighCache, Resolve};
use crate::route::{Route, Routes};
use crate::skb::PacketBuf;
use crate::time::Instant;
use crate::wire::{arp, checksum, ethernet, icmp, ipv4, udp, Mac, BROADCAST};
use log::debug;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// A socket error, as Linux names it (errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}
impl std::error::Error for Errno {}

pub const EAGAIN: Errno = Errno(libc::EAGAIN);
pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
pub const EHOSTUNREACH: Errno = Errno(libc::EHOSTUNREACH);
pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
pub const ENETUNREACH: Errno = Errno(libc::ENETUNREACH);
pub const EBADF: Errno = Errno(libc::EBADF);

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
        }
    }
}

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
}

pub type SocketHandle = usize;

struct UdpSock {
    port: u16,
    remote: Option<([u8; 4], u16)>,
    rx: VecDeque<(Vec<u8>, [u8; 4], u16)>,
    error: Option<Errno>,
}

/// An echo reply or error that arrived for a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingEvent {
    Reply { from: [u8; 4], seq: u16, len: usize, at: Instant },
    Error { from: [u8; 4], seq: u16, errno: Errno },
}

struct Reasm {
    data: Vec<u8>,
    have: Vec<(usize, usize)>,
    total: Option<usize>,
    deadline: Instant,
    header: Vec<u8>,
}

const UDP_RX_QUEUE: usize = 256;

pub struct Stack {
    pub dev: Box<dyn Device>,
    pub cfg: Config,
    mac: Mac,
    routes: Routes,
    neigh: NeighCache,
    txq: VecDeque<PacketBuf>,
    ident: u16,
    udp: Vec<Option<UdpSock>>,
    pings: HashMap<u16, VecDeque<PingEvent>>,
    reasm: HashMap<([u8; 4], [u8; 4], u16, u8), Reasm>,
    /// Path MTUs learned from ICMP "fragmentation needed".
    pmtu: HashMap<[u8; 4], usize>,
    pub stats: Stats,
    rx: Vec<PacketBuf>,
    announced: bool,
    tcp: Vec<Option<TcpSock>>,
    /// The secret behind initial sequence numbers (RFC 6528) and ephemeral ports (RFC 6056): random per
    /// stack, so that a new process does not reuse the last one's 4-tuples and sequence space.
    secret: u64,
    /// RFC 6056's per-stack counter of ephemeral port picks.
    port_counter: u16,
    pub tcp_cfg: crate::tcp::Config,
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

enum TcpSock {
    Listener {
        port: u16,
        backlog: usize,
        accept: VecDeque<SocketHandle>,
        embryos: Vec<SocketHandle>,
    },
    /// A connection and, until accept() can take it, the listener it came from.
    Conn(Box<crate::tcp::Tcb>, Option<SocketHandle>),
}

impl Stack {
    pub fn new(dev: Box<dyn Device>, cfg: Config) -> Stack {
        let mut routes = Routes::default();
        routes.add(Route { dest: cfg.addr, prefix: cfg.prefix, gateway: None });
        if let Some(gw) = cfg.gateway {
            routes.add(Route { dest: [0; 4], prefix: 0, gateway: Some(gw) });
        }
        let mac = dev.mac();
        Stack {
            dev,
            neigh: NeighCache::new(cfg.neigh.clone()),
            cfg,
            mac,
            routes,
            txq: VecDeque::new(),
            ident: 1,
            udp: Vec::new(),
            pings: HashMap::new(),
            reasm: HashMap::new(),
            pmtu: HashMap::new(),
            stats: Stats::default(),
            rx: Vec::new(),
            announced: false,
            tcp: Vec::new(),
            secret: random_secret(),
            port_counter: 0,
            tcp_cfg: crate::tcp::Config::default(),
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

    // ---- output ----

    fn enqueue(&mut self, p: PacketBuf) {
        if self.txq.len() >= self.cfg.qdisc_len {
            self.stats.qdisc_drops += 1;
            return;
        }
        self.txq.push_back(p);
    }

    fn send_l2(&mut self, mut p: PacketBuf, dst: Mac, ethertype: u16) {
        let h = p.push(ethernet::HEADER_LEN);
        ethernet::Repr { dst, src: self.mac, ethertype }.emit(h);
        p.mac_header = Some(0);
        self.enqueue(p);
    }

    fn send_arp(&mut self, op: u16, target_mac: Mac, target_ip: [u8; 4], dst: Mac) {
        let mut p = PacketBuf::with_headroom(64, arp::LEN);
        arp::Repr { op, sender_mac: self.mac, sender_ip: self.cfg.addr, target_mac, target_ip }.emit(p.put(arp::LEN));
        if op == arp::OP_REQUEST {
            self.stats.arp_requests += 1;
        } else {
            self.stats.arp_replies += 1;
        }
        self.send_l2(p, dst, ethernet::ETHERTYPE_ARP);
    }

    /// Announces our address (gratuitous ARP).
    pub fn announce(&mut self) {
        self.send_arp(arp::OP_REQUEST, [0; 6], self.cfg.addr, BROADCAST);
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    fn mtu_to(&self, dst: [u8; 4]) -> usize {
        let dev = self.dev.mtu();
        self.pmtu.get(&dst).copied().unwrap_or(dev).min(dev)
    }

    /// Sends an IPv4 datagram with `payload` (an L4 packet), fragmenting it when it exceeds the MTU and
    /// `dont_frag` is clear.
    pub fn ip_send(&mut self, dst: [u8; 4], protocol: u8, payload: &[u8], dont_frag: bool, now: Instant) -> Result<(), Errno> {
        self.ip_send_meta(dst, protocol, payload, dont_frag, None, now)
    }

    /// As [`Stack::ip_send`], with transport offload metadata: `offload` = (checksum left to the device,
    /// GSO segment size for a super-packet).
    fn ip_send_meta(
        &mut self,
        dst: [u8; 4],
        protocol: u8,
        payload: &[u8],
        dont_frag: bool,
        offload: Option<(bool, Option<u16>)>,
        now: Instant,
    ) -> Result<(), Errno> {
        let Some(next_hop) = self.routes.next_hop(dst) else { return Err(ENETUNREACH) };
        if let Some((partial, gso)) = offload {
            let mut p = PacketBuf::with_headroom(64, ipv4::MIN_HEADER_LEN + payload.len());
            let r = ipv4::Repr {
                src: self.cfg.addr,
                dst,
                protocol,
                ttl: self.cfg.ttl,
                ident: self.next_ident(),
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                payload_len: payload.len(),
            };
            let b = p.put(ipv4::MIN_HEADER_LEN + payload.len());
            if payload.len() + ipv4::MIN_HEADER_LEN > 65535 {
                return Err(EMSGSIZE);
            }
            r.emit(&mut b[..ipv4::MIN_HEADER_LEN]);
            b[ipv4::MIN_HEADER_LEN..].copy_from_slice(payload);
            p.network_header = Some(0);
            p.transport_header = Some(ipv4::MIN_HEADER_LEN);
            if partial {
                p.csum = crate::skb::Csum::Partial { start: ipv4::MIN_HEADER_LEN, offset: 16 };
            }
            p.gso = gso.map(|size| crate::skb::Gso { size, kind: crate::skb::GsoKind::TcpV4 });
            self.stats.out_requests += 1;
            self.output(p, next_hop, now);
            return Ok(());
        }
        let mtu = self.mtu_to(dst);
        let ident = self.next_ident();
        let max_payload = (mtu - ipv4::MIN_HEADER_LEN) & !7;
        if ipv4::MIN_HEADER_LEN + payload.len() > mtu && dont_frag {
            return Err(EMSGSIZE);
        }
        if payload.len() > 65535 - ipv4::MIN_HEADER_LEN {
            return Err(EMSGSIZE);
        }
        let chunks: Vec<&[u8]> =
            if ipv4::MIN_HEADER_LEN + payload.len() <= mtu { vec![payload] } else { payload.chunks(max_payload).collect() };
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            let mut p = PacketBuf::with_headroom(64, ipv4::MIN_HEADER_LEN + c.len());
            let r = ipv4::Repr {
                src: self.cfg.addr,
                dst,
                protocol,
                ttl: self.cfg.ttl,
                ident,
                dont_frag,
                more_frags: i + 1 < n,
                frag_offset: i * max_payload,
                payload_len: c.len(),
            };
            let b = p.put(ipv4::MIN_HEADER_LEN + c.len());
            r.emit(&mut b[..ipv4::MIN_HEADER_LEN]);
            b[ipv4::MIN_HEADER_LEN..].copy_from_slice(c);
            p.network_header = Some(0);
            p.transport_header = Some(ipv4::MIN_HEADER_LEN);
            if n > 1 {
                self.stats.frag_creates += 1;
            }
            self.stats.out_requests += 1;
            self.output(p, next_hop, now);
        }
        Ok(())
    }

    /// Hands an IP packet to its next hop, resolving the link-layer address.
    fn output(&mut self, p: PacketBuf, next_hop: [u8; 4], now: Instant) {
        if next_hop == self.cfg.addr {
            // To ourselves: straight back in.
            let mut l = p;
            let h = l.push(ethernet::HEADER_LEN);
            ethernet::Repr { dst: self.mac, src: self.mac, ethertype: ethernet::ETHERTYPE_IPV4 }.emit(h);
            self.rx.push(l);
            return;
        }
        if self.is_broadcast(next_hop) {
            self.send_l2(p, BROADCAST, ethernet::ETHERTYPE_IPV4);
            return;
        }
        if let Some(mac) = self.neigh.lookup(next_hop) {
            self.send_l2(p, mac, ethernet::ETHERTYPE_IPV4);
            return;
        }
        // A TCP retransmission of a segment still waiting for the neighbour replaces it: when the address
        // arrives, the segment leaves once, not once per retransmission timeout that passed meanwhile.
        let key = tcp_segment_key(p.data());
        let supersedes = |q: &PacketBuf| key.is_some() && tcp_segment_key(q.data()) == key;
        match self.neigh.resolve_replacing(next_hop, p, now, supersedes) {
            Resolve::Queued { request: true } => self.send_arp(arp::OP_REQUEST, [0; 6], next_hop, BROADCAST),
            Resolve::Queued { request: false } => {}
            Resolve::Dropped => self.stats.qdisc_drops += 1,
            Resolve::Send(_) => unreachable!("lookup() found no entry"),
        }
    }

    fn is_broadcast(&self, ip: [u8; 4]) -> bool {
        let host_mask = if self.cfg.prefix >= 32 { 0 } else { u32::MAX >> self.cfg.prefix };
        ip == [255; 4]
            || (u32::from_be_bytes(ip) & host_mask == host_mask
                && crate::route::Route { dest: self.cfg.addr, prefix: self.cfg.prefix, gateway: None }.matches(ip))
    }

    // ---- input ----

    fn input(&mut self, mut p: PacketBuf, now: Instant) {
        let Ok(f) = ethernet::Frame::new_checked(p.data()) else { return };
        let eth = ethernet::Repr::parse(&f);
        if eth.dst != self.mac && eth.dst != BROADCAST && eth.dst[0] & 1 == 0 {
            return;
        }
        p.mac_header = Some(0);
        p.pull(ethernet::HEADER_LEN);
        match eth.ethertype {
            ethernet::ETHERTYPE_ARP => self.arp_input(&p, now),
            ethernet::ETHERTYPE_IPV4 => self.ipv4_input(p, now),
            _ => {}
        }
    }

    fn arp_input(&mut self, p: &PacketBuf, now: Instant) {
        let Ok(a) = arp::Repr::parse(p.data()) else { return };
        let for_us = a.target_ip == self.cfg.addr;
        // RFC 826: update an existing entry for the sender; create one when the request is for us.
        let waiting = self.neigh.update(a.sender_ip, a.sender_mac, now, for_us);
        for w in waiting {
            self.send_l2(w, a.sender_mac, ethernet::ETHERTYPE_IPV4);
        }
        if for_us && a.op == arp::OP_REQUEST && a.sender_ip != self.cfg.addr {
            self.send_arp(arp::OP_REPLY, a.sender_mac, a.sender_ip, a.sender_mac);
        }
    }

    fn ipv4_input(&mut self, p: PacketBuf, now: Instant) {
        self.stats.in_receives += 1;
        let Ok(ip) = ipv4::Packet::new_checked(p.data()) else {
            self.stats.in_hdr_errors += 1;
            return;
        };
        if !ip.verify_checksum() {
            self.stats.in_csum_errors += 1;
            return;
        }
        let dst = ip.dst();
        if dst != self.cfg.addr && !self.is_broadcast(dst) {
            return; // not a router
        }
        let r = ipv4::Repr::parse(&ip);
        let header = ip.header().to_vec();
        let payload: Vec<u8> = if r.more_frags || r.frag_offset > 0 {
            match self.reassemble(&r, ip.payload(), &header, now) {
                Some(d) => d,
                None => return,
            }
        } else {
            ip.payload().to_vec()
        };
        self.stats.in_delivers += 1;
        let verified = p.csum == crate::skb::Csum::Verified && !(r.more_frags || r.frag_offset > 0);
        match r.protocol {
            ipv4::PROTO_ICMP => self.icmp_input(r.src, &payload, now),
            ipv4::PROTO_UDP => self.udp_input(r.src, dst, &header, &payload, verified, now),
            ipv4::PROTO_TCP => self.tcp_input(r.src, dst, &payload, verified, now),
            _ => {}
        }
    }

    fn reassemble(&mut self, r: &ipv4::Repr, data: &[u8], header: &[u8], now: Instant) -> Option<Vec<u8>> {
        let key = (r.src, r.dst, r.ident, r.protocol);
        let (start, end) = (r.frag_offset, r.frag_offset + data.len());
        if end > 65535 || (r.more_frags && !data.len().is_multiple_of(8)) {
            self.stats.reasm_fails += 1;
            self.reasm.remove(&key);
            return None;
        }
        if !self.reasm.contains_key(&key) && self.reasm.len() >= self.cfg.reasm_max_datagrams {
            self.stats.reasm_fails += 1;
            return None;
        }
        let deadline = now + self.cfg.reasm_timeout;
        let e = self.reasm.entry(key).or_insert(Reasm { data: Vec::new(), have: Vec::new(), total: None, deadline, header: Vec::new() });
        // Overlapping fragments are an attack pattern: drop the whole datagram (as Linux does for IPv6).
        if e.have.iter().any(|&(a, b)| start < b && a < end && (a, b) != (start, end)) {
            self.reasm.remove(&key);
            self.stats.reasm_fails += 1;
            return None;
        }
        if start == 0 {
            e.header = header.to_vec();
        }
        if e.data.len() < end {
            e.data.resize(end, 0);
        }
        e.data[start..end].copy_from_slice(data);
        if !e.have.contains(&(start, end)) {
            e.have.push((start, end));
        }
        if !r.more_frags {
            e.total = Some(end);
        }
        let total = e.total?;
        e.have.sort();
        let mut at = 0;
        for &(a, b) in &e.have {
            if a > at {
                return None;
            }
            at = at.max(b);
        }
        if at < total {
            return None;
        }
        let mut d = self.reasm.remove(&key).unwrap().data;
        d.truncate(total);
        self.stats.reasm_oks += 1;
        Some(d)
    }

    fn icmp_input(&mut self, src: [u8; 4], data: &[u8], now: Instant) {
        let Ok(m) = icmp::Repr::parse(data) else {
            self.stats.in_csum_errors += 1;
            return;
        };
        match m {
            icmp::Repr::EchoRequest { ident, seq, data } => {
                let reply = icmp::Repr::EchoReply { ident, seq, data };
                let mut b = vec![0u8; reply.buffer_len()];
                reply.emit(&mut b);
                let _ = self.ip_send(src, ipv4::PROTO_ICMP, &b, false, now);
            }
            icmp::Repr::EchoReply { ident, seq, data } => {
                if let Some(q) = self.pings.get_mut(&ident) {
                    q.push_back(PingEvent::Reply { from: src, seq, len: data.len(), at: now });
                }
            }
            icmp::Repr::Unreachable { code, mtu, original } => self.icmp_error(src, code, Some(mtu), original),
            icmp::Repr::TimeExceeded { original, .. } => self.icmp_error(src, 255, None, original),
            icmp::Repr::Other { .. } => {}
        }
    }

    /// Maps an ICMP error about one of our datagrams to the socket that sent it. The quoted datagram is
    /// usually cut short, so only its header and the first 8 bytes of L4 are read.
    fn icmp_error(&mut self, from: [u8; 4], code: u8, mtu: Option<u16>, original: &[u8]) {
        if original.len() < 20 || original[0] >> 4 != 4 {
            return;
        }
        let ihl = (original[0] & 0xF) as usize * 4;
        if ihl < 20 || original.len() < ihl {
            return;
        }
        let dst: [u8; 4] = original[16..20].try_into().unwrap();
        self.icmp_error_to(from, code, mtu, dst, original[9], &original[ihl..]);
    }

    fn icmp_error_to(&mut self, from: [u8; 4], code: u8, mtu: Option<u16>, dst: [u8; 4], proto: u8, l4: &[u8]) {
        let errno = match code {
            icmp::CODE_PORT_UNREACHABLE => ECONNREFUSED,
            icmp::CODE_FRAG_NEEDED => {
                if let Some(m) = mtu.filter(|&m| m >= 68) {
                    self.pmtu.insert(dst, m as usize);
                }
                EMSGSIZE
            }
            _ => EHOSTUNREACH,
        };
        match proto {
            ipv4::PROTO_UDP if l4.len() >= 4 => {
                let sport = u16::from_be_bytes([l4[0], l4[1]]);
                let dport = u16::from_be_bytes([l4[2], l4[3]]);
                for s in self.udp.iter_mut().flatten() {
                    if s.port == sport && s.remote.is_none_or(|r| r == (dst, dport)) {
                        s.error = Some(errno);
                    }
                }
            }
            ipv4::PROTO_ICMP if l4.len() >= 8 && l4[0] == icmp::ECHO_REQUEST => {
                let ident = u16::from_be_bytes([l4[4], l4[5]]);
                let seq = u16::from_be_bytes([l4[6], l4[7]]);
                if let Some(q) = self.pings.get_mut(&ident) {
                    q.push_back(PingEvent::Error { from, seq, errno });
                }
            }
            _ => {}
        }
    }

    fn udp_input(&mut self, src: [u8; 4], dst: [u8; 4], header: &[u8], data: &[u8], verified: bool, now: Instant) {
        let parsed = if verified {
            // The device checked the checksum: parse without summing again.
            if data.len() < 8 {
                return;
            }
            let len = u16::from_be_bytes([data[4], data[5]]) as usize;
            if len < 8 || len > data.len() {
                self.stats.in_hdr_errors += 1;
                return;
            }
            Ok((
                udp::Repr {
                    src_port: u16::from_be_bytes([data[0], data[1]]),
                    dst_port: u16::from_be_bytes([data[2], data[3]]),
                    payload_len: len - 8,
                },
                &data[8..len],
            ))
        } else {
            udp::Repr::parse(data, src, dst)
        };
        let Some((r, payload)) = self.count_parse_error(parsed) else { return };
        let sock = self.udp.iter_mut().flatten().find(|s| s.port == r.dst_port && s.remote.is_none_or(|rm| rm == (src, r.src_port)));
        match sock {
            Some(s) => {
                if s.rx.len() < UDP_RX_QUEUE {
                    s.rx.push_back((payload.to_vec(), src, r.src_port));
                }
            }
            None => {
                self.stats.no_ports += 1;
                if dst == self.cfg.addr {
                    // Port unreachable, quoting the IP header and the first 8 bytes.
                    let mut quote = header.to_vec();
                    quote.extend_from_slice(&data[..data.len().min(8)]);
                    let m = icmp::Repr::Unreachable { code: icmp::CODE_PORT_UNREACHABLE, mtu: 0, original: &quote };
                    let mut b = vec![0u8; m.buffer_len()];
                    m.emit(&mut b);
                    let _ = self.ip_send(src, ipv4::PROTO_ICMP, &b, false, now);
                }
            }
        }
    }

    /// A parse result, with failures counted as checksum or header errors.
    fn count_parse_error<T>(&mut self, r: crate::wire::Result<T>) -> Option<T> {
        match r {
            Ok(x) => Some(x),
            Err(crate::wire::Error::Checksum) => {
                self.stats.in_csum_errors += 1;
                None
            }
            Err(_) => {
                self.stats.in_hdr_errors += 1;
                None
            }
        }
    }

    // ---- timers and the poll loop ----

    /// Receives, runs timers and transmits. Returns whether anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.announced {
            self.announced = true;
            self.announce();
        }
        let mut progress = false;
        let mut frames = std::mem::take(&mut self.rx);
        match self.dev.poll(64, &mut frames) {
            Ok(_) => {}
            Err(e) => debug!("{}: poll: {e}", self.dev.name()),
        }
        progress |= !frames.is_empty();
        if frames.len() > 1 {
            self.stats.gro_merged += crate::gro::merge(&mut frames) as u64;
        }
        for f in frames {
            self.input(f, now);
        }
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
        let before = self.reasm.len();
        self.reasm.retain(|_, r| now < r.deadline);
        self.stats.reasm_fails += (before - self.reasm.len()) as u64;
        self.tcp_poll(now);
        while !self.txq.is_empty() {
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

    /// When the stack next needs a poll without new input.
    pub fn poll_at(&self) -> Option<Instant> {
        let r = self.reasm.values().map(|r| r.deadline).min();
        [self.neigh.next_deadline(), r, self.tcp_poll_at()].into_iter().flatten().min()
    }

    // ---- UDP sockets ----

    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, Errno> {
        let port = if port == 0 { self.ephemeral_port() } else { port };
        if self.udp.iter().flatten().any(|s| s.port == port) {
            return Err(EADDRINUSE);
        }
        let s = UdpSock { port, remote: None, rx: VecDeque::new(), error: None };
        if let Some(i) = self.udp.iter().position(|s| s.is_none()) {
            self.udp[i] = Some(s);
            return Ok(i);
        }
        self.udp.push(Some(s));
        Ok(self.udp.len() - 1)
    }

    fn ephemeral_port(&self) -> u16 {
        (32768..61000).find(|p| !self.udp.iter().flatten().any(|s| s.port == *p)).unwrap_or(0)
    }

    pub fn udp_connect(&mut self, h: SocketHandle, dst: [u8; 4], port: u16) -> Result<(), Errno> {
        let s = self.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        s.remote = Some((dst, port));
        Ok(())
    }

    pub fn udp_local_port(&self, h: SocketHandle) -> Option<u16> {
        self.udp.get(h)?.as_ref().map(|s| s.port)
    }

    pub fn udp_send_to(&mut self, h: SocketHandle, dst: [u8; 4], port: u16, data: &[u8], now: Instant) -> Result<(), Errno> {
        let s = self.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        let sport = s.port;
        let r = udp::Repr { src_port: sport, dst_port: port, payload_len: data.len() };
        let mut b = vec![0u8; udp::HEADER_LEN + data.len()];
        r.emit(&mut b, data, self.cfg.addr, dst);
        self.ip_send(dst, ipv4::PROTO_UDP, &b, false, now)
    }

    pub fn udp_send(&mut self, h: SocketHandle, data: &[u8], now: Instant) -> Result<(), Errno> {
        let (dst, port) = self.udp.get(h).and_then(|s| s.as_ref()).and_then(|s| s.remote).ok_or(Errno(libc::EDESTADDRREQ))?;
        self.udp_send_to(h, dst, port, data, now)
    }

    /// A received datagram, a pending error (once), or EAGAIN.
    pub fn udp_recv_from(&mut self, h: SocketHandle) -> Result<(Vec<u8>, [u8; 4], u16), Errno> {
        let s = self.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        if let Some(d) = s.rx.pop_front() {
            return Ok(d);
        }
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        Err(EAGAIN)
    }

    pub fn udp_close(&mut self, h: SocketHandle) {
        if let Some(s) = self.udp.get_mut(h) {
            *s = None;
        }
    }

    // ---- ping ----

    /// Sends an ICMP echo request; replies and errors arrive through [`Stack::ping_events`].
    pub fn ping_send(&mut self, dst: [u8; 4], ident: u16, seq: u16, payload: &[u8], now: Instant) -> Result<(), Errno> {
        self.pings.entry(ident).or_default();
        let m = icmp::Repr::EchoRequest { ident, seq, data: payload };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        self.ip_send(dst, ipv4::PROTO_ICMP, &b, false, now)
    }

    pub fn ping_events(&mut self, ident: u16) -> Vec<PingEvent> {
        self.pings.get_mut(&ident).map(|q| q.drain(..).collect()).unwrap_or_default()
    }
}

/// Verifies a whole IPv4 packet's header checksum (helper for tests and tools).
/// Addresses, ports, sequence number, flags and payload length of an IPv4/TCP segment.
type SegmentKey = ([u8; 8], [u8; 4], u32, u8, usize);

/// What makes an IPv4/TCP segment a copy of another: addresses, ports, sequence number, flags and payload
/// length (the timestamp option and the ACK may differ between a segment and its retransmission).
fn tcp_segment_key(ip: &[u8]) -> Option<SegmentKey> {
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip.first()? & 0xF) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let tcp = ip.get(ihl..total)?;
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let addrs: [u8; 8] = ip.get(12..20)?.try_into().ok()?;
    let ports: [u8; 4] = tcp.get(0..4)?.try_into().ok()?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some((addrs, ports, seq, *tcp.get(13)?, tcp.len().checked_sub(doff)?))
}

pub fn ipv4_header_ok(b: &[u8]) -> bool {
    b.len() >= 20 && checksum::fold(checksum::sum(0, &b[..((b[0] & 0xF) as usize * 4).min(b.len())])) == 0xFFFF
}

// ---- TCP ----

impl Stack {
    fn features(&self) -> crate::dev::Features {
        self.dev.features()
    }

    /// RFC 6528: ISS = M + F(local, remote, secret), M a clock ticking every 4 microseconds. The secret is
    /// random per stack, so a restarted program does not start where the last one did.
    fn new_iss(&self, local: ([u8; 4], u16), remote: ([u8; 4], u16), now: Instant) -> crate::wire::tcp::Seq {
        let f = tuple_hash(self.secret, &[&local.0, &local.1.to_be_bytes(), &remote.0, &remote.1.to_be_bytes()]);
        crate::wire::tcp::Seq(((now.micros / 4) as u32).wrapping_add(f as u32))
    }

    /// Fixes the secret behind sequence numbers and ephemeral ports (simulations that want repeatable runs).
    pub fn set_secret(&mut self, secret: u64) {
        self.secret = secret;
    }

    /// RFC 6056 algorithm 3: a port from 32768-60999 at an offset keyed by the destination, stepping past
    /// ports in use, so that successive programs (and destinations) do not reuse the same 4-tuple.
    fn ephemeral_tcp_port(&mut self, dst: [u8; 4], dport: u16) -> Option<u16> {
        const LOW: u32 = 32768;
        const COUNT: u32 = 61000 - 32768;
        let offset = tuple_hash(self.secret, &[&self.cfg.addr, &dst, &dport.to_be_bytes()]) as u32;
        for i in 0..COUNT {
            let p = (LOW + offset.wrapping_add(u32::from(self.port_counter)).wrapping_add(i) % COUNT) as u16;
            if !self.tcp_port_used(p) {
                self.port_counter = self.port_counter.wrapping_add(1);
                return Some(p);
            }
        }
        None
    }

    /// Settings for a new connection to `peer`: the MSS follows the device MTU and any path MTU learned for
    /// the peer (ICMP fragmentation needed).
    fn conn_cfg(&self, peer: [u8; 4]) -> crate::tcp::Config {
        let mut c = self.tcp_cfg.clone();
        let f = self.features();
        let mss = (self.mtu_to(peer).saturating_sub(40)).clamp(536, 65495) as u16;
        c.mss = c.mss.min(mss);
        c.max_gso = if f.tso && f.tx_csum { 65000 } else { c.mss as usize };
        c
    }

    fn tcp_emit(&mut self, local: [u8; 4], remote: [u8; 4], o: crate::tcp::Out, now: Instant) {
        let f = self.features();
        let partial = f.tx_csum;
        let mut b = vec![0u8; o.repr.header_len() + o.payload.len()];
        o.repr.emit(&mut b, &o.payload, local, remote, !partial);
        let gso = o.gso.filter(|_| f.tso);
        let _ = self.ip_send_meta(remote, ipv4::PROTO_TCP, &b, true, Some((partial, gso)), now);
    }

    fn tcp_flush(&mut self, h: SocketHandle, now: Instant) {
        let Some(Some(TcpSock::Conn(t, _))) = self.tcp.get_mut(h) else { return };
        let mut outs = t.on_timer(now);
        outs.extend(t.output(now));
        let (l, r) = (t.local.0, t.remote.0);
        for o in outs {
            self.tcp_emit(l, r, o, now);
        }
    }

    fn tcp_input(&mut self, src: [u8; 4], dst: [u8; 4], data: &[u8], verified: bool, now: Instant) {
        let Some((seg, payload)) = self.count_parse_error(crate::wire::tcp::Repr::parse(data, src, dst, verified)) else { return };
        use crate::wire::tcp::{ACK, RST, SYN};
        let conn = self.tcp.iter().position(|s| matches!(s, Some(TcpSock::Conn(t, _)) if t.local.1 == seg.dst_port && t.remote == (src, seg.src_port) && t.state != crate::tcp::State::Closed));
        if let Some(h) = conn {
            let Some(Some(TcpSock::Conn(t, _))) = self.tcp.get_mut(h) else { unreachable!() };
            let rst = t.input(&seg, payload, now);
            let (l, r) = (t.local.0, t.remote.0);
            if let Some(o) = rst {
                self.tcp_emit(l, r, o, now);
            }
            self.tcp_promote(h);
            self.tcp_flush(h, now);
            return;
        }
        let listener = self.tcp.iter().position(|s| matches!(s, Some(TcpSock::Listener { port, .. }) if *port == seg.dst_port));
        if let (Some(lh), true) = (listener, seg.flags & (SYN | ACK | RST) == SYN) {
            let Some(Some(TcpSock::Listener { backlog, accept, embryos, .. })) = self.tcp.get(lh) else { unreachable!() };
            if accept.len() + embryos.len() >= *backlog {
                return; // backlog full: drop the SYN, the peer retries
            }
            let cfg = self.conn_cfg(src);
            let iss = self.new_iss((dst, seg.dst_port), (src, seg.src_port), now);
            let t = crate::tcp::Tcb::accept_syn((dst, seg.dst_port), (src, seg.src_port), &seg, iss, cfg, now);
            let h = self.tcp_alloc(TcpSock::Conn(Box::new(t), Some(lh)));
            if let Some(Some(TcpSock::Listener { embryos, .. })) = self.tcp.get_mut(lh) {
                embryos.push(h);
            }
            self.tcp_flush(h, now);
            return;
        }
        // No socket: RST (RFC 9293 3.10.7.1), never in answer to a RST.
        if seg.flags & RST != 0 {
            return;
        }
        self.stats.no_ports += 1;
        let len = payload.len() + (seg.flags & SYN != 0) as usize + (seg.flags & crate::wire::tcp::FIN != 0) as usize;
        let r = if seg.flags & ACK != 0 {
            crate::wire::tcp::Repr { src_port: seg.dst_port, dst_port: seg.src_port, seq: seg.ack, flags: RST, ..Default::default() }
        } else {
            crate::wire::tcp::Repr {
                src_port: seg.dst_port,
                dst_port: seg.src_port,
                seq: crate::wire::tcp::Seq(0),
                ack: seg.seq.add(len),
                flags: RST | ACK,
                ..Default::default()
            }
        };
        let mut b = vec![0u8; r.header_len()];
        r.emit(&mut b, &[], dst, src, true);
        let _ = self.ip_send(src, ipv4::PROTO_TCP, &b, true, now);
    }

    /// Moves a connection that became established from its listener's embryos to the accept queue.
    fn tcp_promote(&mut self, h: SocketHandle) {
        let Some(Some(TcpSock::Conn(t, parent))) = self.tcp.get_mut(h) else { return };
        let Some(lh) = *parent else { return };
        let (established, closed) = (t.established_once, t.state == crate::tcp::State::Closed);
        if !established && !closed {
            return;
        }
        *parent = None;
        if let Some(Some(TcpSock::Listener { accept, embryos, .. })) = self.tcp.get_mut(lh) {
            embryos.retain(|&e| e != h);
            if established {
                accept.push_back(h);
                return;
            }
        }
        if !established {
            // An embryo that died before accept() is nobody's: free it.
            self.tcp[h] = None;
        }
    }

    fn tcp_alloc(&mut self, s: TcpSock) -> SocketHandle {
        if let Some(i) = self.tcp.iter().position(|s| s.is_none()) {
            self.tcp[i] = Some(s);
            return i;
        }
        self.tcp.push(Some(s));
        self.tcp.len() - 1
    }

    fn tcp_port_used(&self, port: u16) -> bool {
        self.tcp.iter().flatten().any(|s| match s {
            TcpSock::Listener { port: p, .. } => *p == port,
            TcpSock::Conn(t, _) => t.local.1 == port && t.state != crate::tcp::State::Closed,
        })
    }

    /// Runs TCP timers and output for every connection (called from poll).
    fn tcp_poll(&mut self, now: Instant) {
        for h in 0..self.tcp.len() {
            if matches!(self.tcp.get(h), Some(Some(TcpSock::Conn(_, _)))) {
                self.tcp_flush(h, now);
                self.tcp_promote(h);
            }
        }
    }

    fn tcp_poll_at(&self) -> Option<Instant> {
        self.tcp.iter().flatten().filter_map(|s| if let TcpSock::Conn(t, _) = s { t.poll_at() } else { None }).min()
    }

    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<SocketHandle, Errno> {
        if self.tcp_port_used(port) {
            return Err(EADDRINUSE);
        }
        Ok(self.tcp_alloc(TcpSock::Listener { port, backlog: backlog.max(1), accept: VecDeque::new(), embryos: Vec::new() }))
    }

    /// An established connection from the listener's queue (EAGAIN when none).
    pub fn tcp_accept(&mut self, h: SocketHandle) -> Result<SocketHandle, Errno> {
        match self.tcp.get_mut(h) {
            Some(Some(TcpSock::Listener { accept, .. })) => accept.pop_front().ok_or(EAGAIN),
            _ => Err(EBADF),
        }
    }

    pub fn tcp_connect(&mut self, dst: [u8; 4], port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        self.tcp_connect_from(0, dst, port, now)
    }

    /// Connects from a chosen local port (bind, then connect); 0 picks an ephemeral one.
    pub fn tcp_connect_from(&mut self, local_port: u16, dst: [u8; 4], port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        if self.routes.next_hop(dst).is_none() {
            return Err(ENETUNREACH);
        }
        let lport = if local_port != 0 {
            if self.tcp_port_used(local_port) {
                return Err(EADDRINUSE);
            }
            local_port
        } else {
            self.ephemeral_tcp_port(dst, port).ok_or(Errno(libc::EADDRNOTAVAIL))?
        };
        let cfg = self.conn_cfg(dst);
        let iss = self.new_iss((self.cfg.addr, lport), (dst, port), now);
        let t = crate::tcp::Tcb::connect((self.cfg.addr, lport), (dst, port), iss, cfg, now);
        let h = self.tcp_alloc(TcpSock::Conn(Box::new(t), None));
        self.tcp_flush(h, now);
        Ok(h)
    }

    fn conn(&mut self, h: SocketHandle) -> Result<&mut crate::tcp::Tcb, Errno> {
        match self.tcp.get_mut(h) {
            Some(Some(TcpSock::Conn(t, _))) => Ok(t),
            _ => Err(EBADF),
        }
    }

    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8], now: Instant) -> Result<usize, Errno> {
        let n = self.conn(h)?.send(data)?;
        self.tcp_flush(h, now);
        Ok(n)
    }

    pub fn tcp_recv(&mut self, h: SocketHandle, buf: &mut [u8], now: Instant) -> Result<usize, Errno> {
        let n = self.conn(h)?.recv(buf)?;
        self.tcp_flush(h, now);
        Ok(n)
    }

    pub fn tcp_shutdown(&mut self, h: SocketHandle, now: Instant) -> Result<(), Errno> {
        self.conn(h)?.shutdown();
        self.tcp_flush(h, now);
        Ok(())
    }

    /// Closes the handle: a graceful close for a connection (it finishes in the background), or the end of
    /// a listener (its queued connections are reset).
    pub fn tcp_close(&mut self, h: SocketHandle, now: Instant) {
        match self.tcp.get_mut(h) {
            Some(Some(TcpSock::Conn(t, _))) => {
                t.shutdown();
                self.tcp_flush(h, now);
            }
            Some(Some(TcpSock::Listener { accept, embryos, .. })) => {
                let kids: Vec<_> = accept.drain(..).chain(embryos.drain(..)).collect();
                self.tcp[h] = None;
                for k in kids {
                    self.tcp_abort(k, now);
                }
            }
            _ => {}
        }
    }

    pub fn tcp_abort(&mut self, h: SocketHandle, now: Instant) {
        if let Ok(t) = self.conn(h) {
            let rst = t.abort(now);
            let (l, r) = (t.local.0, t.remote.0);
            if let Some(o) = rst {
                self.tcp_emit(l, r, o, now);
            }
        }
        if let Some(s) = self.tcp.get_mut(h) {
            *s = None;
        }
    }

    /// Frees a closed connection's handle.
    pub fn tcp_release(&mut self, h: SocketHandle) {
        if let Some(s) = self.tcp.get_mut(h) {
            *s = None;
        }
    }

    pub fn tcp_state(&self, h: SocketHandle) -> Option<crate::tcp::State> {
        match self.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => Some(t.state),
            Some(TcpSock::Listener { .. }) => Some(crate::tcp::State::Listen),
            None => None,
        }
    }

    pub fn tcp_error(&self, h: SocketHandle) -> Option<Errno> {
        match self.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => t.error,
            _ => None,
        }
    }

    /// Readiness for non-blocking use: (readable, writable). Readable includes end of stream and errors.
    pub fn tcp_ready(&self, h: SocketHandle) -> (bool, bool) {
        match self.tcp.get(h) {
            Some(Some(TcpSock::Listener { accept, .. })) => (!accept.is_empty(), false),
            Some(Some(TcpSock::Conn(t, _))) => {
                let eof_or_err = t.error.is_some()
                    || matches!(
                        t.state,
                        crate::tcp::State::CloseWait
                            | crate::tcp::State::Closed
                            | crate::tcp::State::LastAck
                            | crate::tcp::State::TimeWait
                            | crate::tcp::State::Closing
                    );
                let writable = matches!(t.state, crate::tcp::State::Established | crate::tcp::State::CloseWait) && t.send_space() > 0;
                (t.recv_available() > 0 || eof_or_err, writable)
            }
            _ => (false, false),
        }
    }

    pub fn tcp_conn(&mut self, h: SocketHandle) -> Option<&mut crate::tcp::Tcb> {
        self.conn(h).ok()
    }
}
