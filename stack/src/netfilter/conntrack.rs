//! Connection tracking: every flow's tuples in both directions, its state (NEW, ESTABLISHED, RELATED,
//! INVALID as rules see it; TCP's own states as Linux's `nf_conntrack_proto_tcp` keeps them, with the
//! window checks that make out-of-window segments INVALID), Linux's default timeouts, a table limit with
//! early drop of unreplied entries, and the NAT binding each flow got when it was new.

use super::packet::{self, Tuple, View, ICMP, ICMPV6, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, UDP};
use crate::time::Instant;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Which way a packet goes along its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    Original,
    Reply,
}

impl Dir {
    pub fn other(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// The state a rule matches with `ct state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    /// Not tracked (a protocol conntrack does not follow, still counted as NEW by Linux's generic tracker;
    /// here only packets that cannot be parsed).
    Untracked,
}

impl CtState {
    pub fn bit(self) -> u8 {
        match self {
            CtState::Invalid => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::New => 8,
            CtState::Untracked => 64,
        }
    }
}

/// TCP connection states, named as `conntrack -L` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }

    /// Linux's default `nf_conntrack_tcp_timeout_*`.
    fn timeout(self) -> Duration {
        Duration::from_secs(match self {
            TcpState::SynSent => 120,
            TcpState::SynRecv => 60,
            TcpState::Established => 432_000,
            TcpState::FinWait => 120,
            TcpState::CloseWait => 60,
            TcpState::LastAck => 30,
            TcpState::TimeWait => 120,
            TcpState::Close => 10,
        })
    }
}

/// Linux's `nf_conntrack_udp_timeout`, `nf_conntrack_udp_timeout_stream`, `nf_conntrack_icmp_timeout` and
/// `nf_conntrack_generic_timeout`.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(30);
pub const UDP_STREAM_TIMEOUT: Duration = Duration::from_secs(120);
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(30);
pub const GENERIC_TIMEOUT: Duration = Duration::from_secs(600);

/// One direction's view of the TCP sequence space (Linux's `ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    /// Highest sequence number sent plus its length.
    end: u32,
    /// Highest sequence number the other side's window allows.
    maxend: u32,
    /// Largest window seen from this side.
    maxwin: u32,
    scale: u8,
    scale_seen: bool,
    seen: bool,
}

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// One tracked connection.
#[derive(Debug, Clone)]
pub struct Conn {
    pub id: u64,
    /// The tuples as the packets carry them in each direction: [original, reply]. NAT shows as a reply tuple
    /// that is not the original's inverse.
    pub tuple: [Tuple; 2],
    pub tcp: Option<TcpState>,
    win: [Window; 2],
    pub seen_reply: bool,
    pub assured: bool,
    stream_at: Option<Instant>,
    pub expires: Instant,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The NAT the flow got: source NAT (SNAT, MASQUERADE) and destination NAT (DNAT, REDIRECT).
    pub snat: bool,
    pub dnat: bool,
    /// Confirmed (its first packet left the box); an unconfirmed entry goes away if that packet is dropped.
    pub confirmed: bool,
    pub mark: u32,
}

impl Conn {
    /// A `conntrack -L`-like line.
    pub fn describe(&self, now: Instant) -> String {
        let proto = match self.tuple[0].proto {
            TCP => "tcp",
            UDP => "udp",
            ICMP => "icmp",
            ICMPV6 => "icmpv6",
            _ => "unknown",
        };
        let left = (self.expires - now).as_secs();
        let state = self.tcp.map(|s| format!(" {}", s.name())).unwrap_or_default();
        let unreplied = if self.seen_reply { "" } else { " [UNREPLIED]" };
        let assured = if self.assured { " [ASSURED]" } else { "" };
        format!(
            "{proto:<6} {} {left}{state} {} packets={} bytes={}{unreplied} {} packets={} bytes={}{assured} mark={} id={}",
            self.tuple[0].proto,
            self.tuple[0],
            self.packets[0],
            self.bytes[0],
            self.tuple[1],
            self.packets[1],
            self.bytes[1],
            self.mark,
            self.id
        )
    }
}

/// Counters named after `conntrack -S`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CtStats {
    pub found: u64,
    pub new: u64,
    pub invalid: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub expired: u64,
}

/// What tracking made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub state: CtState,
    /// The connection and the packet's direction; for RELATED ICMP errors, the connection the error is about
    /// and the error's own direction.
    pub conn: Option<(u64, Dir)>,
}

pub struct Conntrack {
    conns: HashMap<u64, Conn>,
    by_tuple: HashMap<Tuple, (u64, Dir)>,
    next_id: u64,
    pub max: usize,
    pub stats: CtStats,
    /// Linux's `nf_conntrack_tcp_be_liberal`: off, so out-of-window segments are INVALID.
    pub tcp_liberal: bool,
    last_sweep: Option<Instant>,
}

impl Default for Conntrack {
    fn default() -> Conntrack {
        Conntrack::new(65536)
    }
}

impl Conntrack {
    pub fn new(max: usize) -> Conntrack {
        Conntrack {
            conns: HashMap::new(),
            by_tuple: HashMap::new(),
            next_id: 1,
            max,
            stats: CtStats::default(),
            tcp_liberal: false,
            last_sweep: None,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Conn> {
        self.conns.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// Whether a tuple is in use by any connection, in either direction.
    pub fn tuple_taken(&self, t: &Tuple) -> bool {
        self.by_tuple.contains_key(t)
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<&Conn> {
        let mut v: Vec<&Conn> = self.conns.values().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// `conntrack -L`.
    pub fn listing(&self, now: Instant) -> String {
        let mut s = String::new();
        for c in self.list() {
            s += &c.describe(now);
            s.push('\n');
        }
        s += &format!("conntrack: {} flow entries\n", self.conns.len());
        s
    }

    fn remove(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            for t in c.tuple {
                if self.by_tuple.get(&t).is_some_and(|&(i, _)| i == id) {
                    self.by_tuple.remove(&t);
                }
            }
        }
    }

    /// Drops entries whose timeout passed.
    pub fn expire(&mut self, now: Instant) {
        let gone: Vec<u64> = self.conns.values().filter(|c| c.expires <= now).map(|c| c.id).collect();
        for id in gone {
            self.stats.expired += 1;
            self.remove(id);
        }
    }

    /// Drops a connection whose first packet was dropped before it was confirmed.
    pub fn forget_unconfirmed(&mut self, id: u64) {
        if self.conns.get(&id).is_some_and(|c| !c.confirmed) {
            self.remove(id);
        }
    }

    pub fn confirm(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.confirmed = true;
        }
    }

    /// Changes a new connection's reply tuple (NAT); false if that tuple is taken.
    pub fn set_reply(&mut self, id: u64, reply: Tuple) -> bool {
        let Some(c) = self.conns.get(&id) else { return false };
        let old = c.tuple[1];
        if old == reply {
            return true;
        }
        if self.by_tuple.contains_key(&reply) {
            return false;
        }
        self.by_tuple.remove(&old);
        self.by_tuple.insert(reply, (id, Dir::Reply));
        if let Some(c) = self.conns.get_mut(&id) {
            c.tuple[1] = reply;
        }
        true
    }

    /// Tracks one packet (at PREROUTING or OUTPUT): finds or creates its connection and updates its state.
    pub fn track(&mut self, p: &[u8], v: &View, now: Instant) -> Track {
        self.expire_some(now);
        if v.later_fragment {
            // Linux reassembles before tracking; a fragment here has no ports to match a flow by, so it is
            // untracked (`ct state untracked` matches it).
            return Track { state: CtState::Untracked, conn: None };
        }
        if v.is_icmp_error() {
            return self.related(p, v);
        }
        if matches!(v.proto, ICMP | ICMPV6) && !v.icmp.is_some_and(|(t, _)| packet::is_echo(v.proto, t)) {
            // Neighbour discovery, router advertisements and the like are not connections.
            return Track { state: CtState::Untracked, conn: None };
        }
        let t = v.tuple();
        if let Some(&(id, dir)) = self.by_tuple.get(&t) {
            if self.conns.get(&id).is_some_and(|c| c.expires > now) {
                self.stats.found += 1;
                return self.update(id, dir, v, now);
            }
            // Timed out, not yet swept: gone, and this packet may start anew.
            self.stats.expired += 1;
            self.remove(id);
        }
        // A new flow: only what may start one does.
        if let Some(tcp) = v.tcp {
            if tcp.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
                self.stats.invalid += 1;
                return Track { state: CtState::Invalid, conn: None };
            }
        }
        if let Some((ty, _)) = v.icmp {
            if !packet::is_echo_request(v.proto, ty) {
                self.stats.invalid += 1;
                return Track { state: CtState::Invalid, conn: None };
            }
        }
        if self.conns.len() >= self.max && !self.early_drop() {
            self.stats.drop += 1;
            return Track { state: CtState::Invalid, conn: None };
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.new += 1;
        let reply = t.invert();
        let (tcp, timeout) = match v.proto {
            TCP => (Some(TcpState::SynSent), TcpState::SynSent.timeout()),
            UDP => (None, UDP_TIMEOUT),
            ICMP | ICMPV6 => (None, ICMP_TIMEOUT),
            _ => (None, GENERIC_TIMEOUT),
        };
        let mut c = Conn {
            id,
            tuple: [t, reply],
            tcp,
            win: [Window::default(); 2],
            seen_reply: false,
            assured: false,
            stream_at: None,
            expires: now + timeout,
            packets: [1, 0],
            bytes: [v.len as u64, 0],
            snat: false,
            dnat: false,
            confirmed: false,
            mark: 0,
        };
        if let Some(tcp) = v.tcp {
            let end = tcp.seq.wrapping_add(tcp.payload as u32).wrapping_add(1);
            let w = &mut c.win[0];
            w.end = end;
            w.maxwin = u32::from(tcp.win).max(1);
            w.maxend = end.wrapping_add(w.maxwin);
            w.seen = true;
            if let Some(s) = tcp.wscale {
                w.scale = s;
                w.scale_seen = true;
            }
        }
        self.by_tuple.insert(t, (id, Dir::Original));
        self.by_tuple.insert(reply, (id, Dir::Reply));
        self.conns.insert(id, c);
        Track { state: CtState::New, conn: Some((id, Dir::Original)) }
    }

    /// Sweeps out expired entries, at most once a second, so the table needs no timer of its own and a
    /// packet never pays for a full sweep more often than that.
    fn expire_some(&mut self, now: Instant) {
        if self.last_sweep.is_none_or(|t| now - t >= Duration::from_secs(1)) {
            self.last_sweep = Some(now);
            self.expire(now);
        }
    }

    /// Makes room by dropping the oldest connection that never saw a reply (Linux's early drop of
    /// non-ASSURED entries). False when every entry is assured.
    fn early_drop(&mut self) -> bool {
        let victim = self.conns.values().filter(|c| !c.assured).min_by_key(|c| c.id).map(|c| c.id);
        match victim {
            Some(id) => {
                self.stats.early_drop += 1;
                self.remove(id);
                true
            }
            None => false,
        }
    }

    /// An ICMP error: RELATED to the connection its quoted packet belongs to, else INVALID.
    fn related(&mut self, p: &[u8], v: &View) -> Track {
        let Some(inner) = p.get(v.quote_at()..).and_then(|q| View::parse(q, true)) else {
            self.stats.invalid += 1;
            return Track { state: CtState::Invalid, conn: None };
        };
        // The quoted packet went the other way: its tuple, inverted, is the error's direction.
        let t = inner.tuple().invert();
        match self.by_tuple.get(&t) {
            Some(&(id, dir)) => {
                self.stats.found += 1;
                Track { state: CtState::Related, conn: Some((id, dir)) }
            }
            None => {
                self.stats.invalid += 1;
                Track { state: CtState::Invalid, conn: None }
            }
        }
    }

    fn update(&mut self, id: u64, dir: Dir, v: &View, now: Instant) -> Track {
        let liberal = self.tcp_liberal;
        let Some(c) = self.conns.get_mut(&id) else { return Track { state: CtState::Invalid, conn: None } };
        let state = if c.seen_reply || dir == Dir::Reply { CtState::Established } else { CtState::New };
        if let (Some(tcp), Some(st)) = (v.tcp, c.tcp) {
            let Some(next) = tcp_transition(st, dir, tcp.flags) else {
                self.stats.invalid += 1;
                return Track { state: CtState::Invalid, conn: Some((id, dir)) };
            };
            if !liberal && !in_window(&mut c.win, dir, &tcp, st) {
                self.stats.invalid += 1;
                return Track { state: CtState::Invalid, conn: Some((id, dir)) };
            }
            if next == TcpState::Established && dir == Dir::Original && st == TcpState::SynRecv {
                c.assured = true;
            }
            c.tcp = Some(next);
            let timeout = next.timeout();
            c.expires = now + timeout;
        } else if v.proto == UDP {
            if dir == Dir::Reply && !c.seen_reply {
                c.stream_at = Some(now + Duration::from_secs(2));
            }
            let stream = c.seen_reply && c.stream_at.is_some_and(|t| now >= t);
            if stream {
                c.assured = true;
            }
            c.expires = now + if stream { UDP_STREAM_TIMEOUT } else { UDP_TIMEOUT };
        } else if matches!(v.proto, ICMP | ICMPV6) {
            c.expires = now + ICMP_TIMEOUT;
        } else {
            c.expires = now + GENERIC_TIMEOUT;
        }
        if dir == Dir::Reply {
            c.seen_reply = true;
        }
        c.packets[dir.idx()] += 1;
        c.bytes[dir.idx()] += v.len as u64;
        Track { state, conn: Some((id, dir)) }
    }
}

/// Linux's TCP conntrack transitions, reduced to the segments that move the state; `None` for a segment
/// that makes no sense in the state (INVALID).
fn tcp_transition(st: TcpState, dir: Dir, flags: u8) -> Option<TcpState> {
    use TcpState::*;
    if flags & TCP_RST != 0 {
        return Some(Close);
    }
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    let fin = flags & TCP_FIN != 0;
    Some(match (st, dir, syn, ack) {
        // The handshake.
        (SynSent, Dir::Original, true, false) => SynSent,
        (SynSent, Dir::Reply, true, true) => SynRecv,
        (SynSent, Dir::Reply, true, false) => SynRecv, // simultaneous open
        (SynSent, _, false, _) => return None,
        (SynRecv, Dir::Reply, true, true) => SynRecv,
        (SynRecv, Dir::Original, false, true) if !fin => Established,
        (SynRecv, _, false, true) if fin => FinWait,
        (SynRecv, _, true, false) => SynRecv,
        // SYN on an established flow: a new connection reusing the tuple is left to the window check.
        (s, _, true, _) if s != TimeWait && s != Close => return None,
        (TimeWait | Close, Dir::Original, true, false) => SynSent,
        (TimeWait | Close, _, true, _) => return None,
        (Established, _, false, _) if fin => FinWait,
        (Established, _, false, _) => Established,
        (FinWait, _, false, true) if fin => LastAck,
        (FinWait, _, false, _) => FinWait,
        (CloseWait, _, false, _) if fin => LastAck,
        (CloseWait, _, false, _) => CloseWait,
        (LastAck, _, false, true) => TimeWait,
        (LastAck, _, false, false) => LastAck,
        (TimeWait, _, false, _) => TimeWait,
        (Close, _, false, _) => Close,
        (SynRecv, _, false, _) => SynRecv,
        (s, _, _, _) => s,
    })
}

/// Linux's `tcp_in_window`: the segment lies within what the receiver's window allows and its ACK within
/// what the receiver sent; both sides' windows are updated when it does.
fn in_window(win: &mut [Window; 2], dir: Dir, tcp: &packet::TcpInfo, st: TcpState) -> bool {
    let (s, r) = (dir.idx(), dir.other().idx());
    let syn = tcp.flags & TCP_SYN != 0;
    let fin = tcp.flags & TCP_FIN != 0;
    let end = tcp.seq.wrapping_add(tcp.payload as u32).wrapping_add(u32::from(syn) + u32::from(fin));
    // Window scaling counts only when both SYNs carried it.
    let both_scale = win[0].scale_seen && win[1].scale_seen;
    let mut w = u32::from(tcp.win);
    if !syn && both_scale {
        w <<= win[s].scale;
    }
    if syn && !win[s].seen {
        // The reply's SYN/ACK: this side's first segment.
        let ws = &mut win[s];
        ws.end = end;
        ws.maxwin = w.max(1);
        ws.maxend = end.wrapping_add(ws.maxwin);
        ws.seen = true;
        if let Some(sc) = tcp.wscale {
            ws.scale = sc;
            ws.scale_seen = true;
        }
        if tcp.flags & TCP_ACK != 0 {
            let m = tcp.ack.wrapping_add(w);
            if after(m, win[r].maxend) {
                win[r].maxend = m;
            }
        }
        return true;
    }
    if !win[s].seen {
        return st == TcpState::SynSent && !syn;
    }
    let ack = if tcp.flags & TCP_ACK != 0 { tcp.ack } else { win[r].end };
    let max_ack_window = win[s].maxwin.max(66_000);
    let ok = !after(tcp.seq, win[s].maxend)
        && !before(end, win[s].end.wrapping_sub(win[r].maxwin.max(1)).wrapping_sub(1))
        && !after(ack, win[r].end.wrapping_add(1))
        && !before(ack, win[r].end.wrapping_sub(max_ack_window));
    if !ok {
        return false;
    }
    let ws = &mut win[s];
    if ws.maxwin < w {
        ws.maxwin = w;
    }
    if after(end, ws.end) {
        ws.end = end;
    }
    if after(end, ws.maxend) {
        ws.maxend = end;
    }
    if tcp.flags & TCP_ACK != 0 {
        let m = ack.wrapping_add(w.max(1));
        if after(m, win[r].maxend) {
            win[r].maxend = m;
        }
    }
    true
}

/// Addresses of a tuple side, for NAT port choice.
pub fn with_src(t: &Tuple, addr: IpAddr, port: u16) -> Tuple {
    Tuple { src: addr, sport: port, ..*t }
}

pub fn with_dst(t: &Tuple, addr: IpAddr, port: u16) -> Tuple {
    Tuple { dst: addr, dport: port, ..*t }
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::PacketBuilder;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, seq: u32, ack: Option<u32>, flags: &str, len: usize) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('R') {
            b = b.rst();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut v = Vec::new();
        b.write(&mut v, &vec![0u8; len]).unwrap();
        v
    }

    fn go(ct: &mut Conntrack, p: &[u8], now: Instant) -> Track {
        let v = View::parse(p, false).unwrap();
        ct.track(p, &v, now)
    }

    const C: [u8; 4] = [10, 1, 0, 2];
    const S: [u8; 4] = [10, 2, 0, 2];

    #[test]
    fn tcp_handshake_data_and_close() {
        let mut ct = Conntrack::default();
        let r = go(&mut ct, &tcp(C, S, 40000, 80, 100, None, "S", 0), t(0));
        assert_eq!(r.state, CtState::New);
        let id = r.conn.unwrap().0;
        assert_eq!(ct.get(id).unwrap().tcp, Some(TcpState::SynSent));
        assert_eq!(go(&mut ct, &tcp(S, C, 80, 40000, 5000, Some(101), "S", 0), t(1)).state, CtState::Established);
        assert_eq!(ct.get(id).unwrap().tcp, Some(TcpState::SynRecv));
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 101, Some(5001), "", 0), t(2)).state, CtState::Established);
        let c = ct.get(id).unwrap();
        assert_eq!(c.tcp, Some(TcpState::Established));
        assert!(c.assured);
        assert_eq!(c.expires, t(2) + Duration::from_secs(432_000));
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 101, Some(5001), "", 1000), t(3)).state, CtState::Established);
        assert_eq!(go(&mut ct, &tcp(S, C, 80, 40000, 5001, Some(1101), "F", 0), t(4)).state, CtState::Established);
        assert_eq!(ct.get(id).unwrap().tcp, Some(TcpState::FinWait));
        go(&mut ct, &tcp(C, S, 40000, 80, 1101, Some(5002), "F", 0), t(5));
        assert_eq!(ct.get(id).unwrap().tcp, Some(TcpState::LastAck));
        go(&mut ct, &tcp(S, C, 80, 40000, 5002, Some(1102), "", 0), t(6));
        assert_eq!(ct.get(id).unwrap().tcp, Some(TcpState::TimeWait));
        ct.expire(t(6) + Duration::from_secs(119));
        assert_eq!(ct.len(), 1);
        ct.expire(t(6) + Duration::from_secs(120));
        assert_eq!(ct.len(), 0, "TIME_WAIT lasts Linux's 120 s");
    }

    #[test]
    fn out_of_window_segments_are_invalid() {
        let mut ct = Conntrack::default();
        go(&mut ct, &tcp(C, S, 40000, 80, 100, None, "S", 0), t(0));
        go(&mut ct, &tcp(S, C, 80, 40000, 5000, Some(101), "S", 0), t(1));
        go(&mut ct, &tcp(C, S, 40000, 80, 101, Some(5001), "", 0), t(2));
        // A segment a megabyte beyond the window the server advertised (65535).
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 101 + 1_000_000, Some(5001), "", 100), t(3)).state, CtState::Invalid);
        // An ACK for data the server never sent.
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 101, Some(5001 + 500_000), "", 0), t(3)).state, CtState::Invalid);
        // In window still passes.
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 101, Some(5001), "", 100), t(4)).state, CtState::Established);
        assert_eq!(ct.stats.invalid, 2);
    }

    #[test]
    fn a_stray_ack_starts_nothing() {
        let mut ct = Conntrack::default();
        assert_eq!(go(&mut ct, &tcp(C, S, 40000, 80, 100, Some(1), "", 0), t(0)).state, CtState::Invalid);
        assert!(ct.is_empty());
    }

    /// A UDP query from C to S's port 53, and its answer.
    fn dns_query_and_answer() -> (Vec<u8>, Vec<u8>) {
        let (mut b, mut r) = (Vec::new(), Vec::new());
        PacketBuilder::ipv4(C, S, 64).udp(5000, 53).write(&mut b, b"q").unwrap();
        PacketBuilder::ipv4(S, C, 64).udp(53, 5000).write(&mut r, b"a").unwrap();
        (b, r)
    }

    #[test]
    fn udp_timeouts_follow_linux() {
        let mut ct = Conntrack::default();
        let (b, r) = dns_query_and_answer();
        let id = go(&mut ct, &b, t(0)).conn.unwrap().0;
        assert_eq!(ct.get(id).unwrap().expires, t(30_000), "unreplied: 30 s");
        assert_eq!(go(&mut ct, &r, t(1000)).state, CtState::Established);
        assert_eq!(ct.get(id).unwrap().expires, t(31_000), "replied, young: still 30 s");
        go(&mut ct, &b, t(5000));
        let c = ct.get(id).unwrap();
        assert!(c.assured);
        assert_eq!(c.expires, t(125_000), "a stream: 120 s");
        ct.expire(t(124_999));
        assert_eq!(ct.len(), 1);
        ct.expire(t(125_000));
        assert!(ct.is_empty());
    }

    #[test]
    fn an_entry_past_its_timeout_is_gone_before_any_sweep() {
        let mut ct = Conntrack::default();
        let (b, r) = dns_query_and_answer();
        go(&mut ct, &b, t(0));
        // Another flow's packet at 29.8 s sweeps (nothing has expired yet).
        let mut other = Vec::new();
        PacketBuilder::ipv4(C, S, 64).udp(6000, 53).write(&mut other, b"q").unwrap();
        go(&mut ct, &other, t(29_800));
        assert_eq!((ct.len(), ct.stats.expired), (2, 0));
        // At 30.5 s, before the next sweep, the first flow's timeout has passed: the reply starts anew.
        assert_eq!(go(&mut ct, &r, t(30_500)).state, CtState::New);
        assert_eq!(ct.stats.expired, 1);
    }

    #[test]
    fn a_full_table_drops_the_oldest_unreplied_entry() {
        let mut ct = Conntrack::new(3);
        for sp in 1..=3u16 {
            let mut b = Vec::new();
            PacketBuilder::ipv4(C, S, 64).udp(sp, 53).write(&mut b, b"q").unwrap();
            go(&mut ct, &b, t(0));
        }
        let mut b = Vec::new();
        PacketBuilder::ipv4(C, S, 64).udp(9, 53).write(&mut b, b"q").unwrap();
        assert_eq!(go(&mut ct, &b, t(1)).state, CtState::New);
        assert_eq!(ct.len(), 3);
        assert_eq!(ct.stats.early_drop, 1);
        assert!(ct.list().iter().all(|c| c.tuple[0].sport != 1), "the oldest went");
    }

    #[test]
    fn icmp_errors_are_related() {
        let mut ct = Conntrack::default();
        let mut b = Vec::new();
        PacketBuilder::ipv4(C, S, 64).udp(5000, 53).write(&mut b, b"q").unwrap();
        let id = go(&mut ct, &b, t(0)).conn.unwrap().0;
        let mut e = Vec::new();
        PacketBuilder::ipv4(S, C, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
            .write(&mut e, &b[..28])
            .unwrap();
        assert_eq!(go(&mut ct, &e, t(1)), Track { state: CtState::Related, conn: Some((id, Dir::Reply)) });
        let mut stray = Vec::new();
        PacketBuilder::ipv4(S, C, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
            .write(&mut stray, &e[..28])
            .unwrap();
        assert_eq!(go(&mut ct, &stray, t(1)).state, CtState::Invalid);
    }
}
