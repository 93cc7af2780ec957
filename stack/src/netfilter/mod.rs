//! Netfilter: the five hooks (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING), connection tracking, NAT
//! and the rule set that decides, in Linux's order at each hook: conntrack first (priority -200, at
//! PREROUTING and OUTPUT), then the base chains by priority (destination NAT at -100, filters at 0, source
//! NAT at 100). NAT chains see only a connection's first packet; the binding they choose is applied to
//! every later packet of the flow in both directions, and to ICMP errors about it (outer and quoted
//! headers both). A connection is confirmed when its first packet leaves POSTROUTING or INPUT accepted.
//!
//! One `Netfilter` is shared by every interface of a host or router (`Stack::set_netfilter`); the router
//! runs FORWARD and POSTROUTING for what it forwards.

pub mod conntrack;
pub mod packet;
pub mod parse;
pub mod reject;
pub mod rules;

use crate::time::Instant;
use conntrack::{Conntrack, CtState, Dir, Track};
use packet::{End, Tuple, View};
pub use parse::ParseError;
pub use rules::{Hook, Nat, RejectWith, Ruleset, Verdict};
use std::net::IpAddr;

/// What a packet carries from hook to hook: its conntrack result, its mark, and its reassembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ctx {
    pub ct: Option<Track>,
    pub mark: u32,
    /// The largest fragment (whole packet bytes) of an IPv6 datagram reassembled before PREROUTING: what
    /// forwarding fragments it to again (Linux's `frag_max_size`); 0 when it came whole.
    pub frag_max: usize,
}

/// Where a packet is: the hook, the interfaces, and their addresses in the packet's family (for
/// MASQUERADE, the outgoing interface's; for REDIRECT, the incoming one's).
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub hook: Hook,
    pub iif: Option<&'a str>,
    pub oif: Option<&'a str>,
    pub iif_addr: Option<IpAddr>,
    pub oif_addr: Option<IpAddr>,
}

/// Counters for the whole table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NfStats {
    pub accepted: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// New connections NAT could not give a unique tuple (dropped).
    pub nat_failed: u64,
    pub logged: u64,
    /// Log lines the rate limit held back.
    pub log_suppressed: u64,
}

/// Log lines pass as Linux's `net_ratelimit` lets kernel messages through by default
/// (`net.core.message_burst` 10 every `net.core.message_cost` 5 s).
const LOG_PER_SEC: f64 = 2.0;
const LOG_BURST: f64 = 10.0;

pub struct Netfilter {
    pub rules: Ruleset,
    pub ct: Conntrack,
    pub stats: NfStats,
    /// A capture at one hook: every packet the hook accepts, as it leaves the hook (after its NAT).
    capture: Option<(Hook, crate::monitor::Capture)>,
    /// Derived from the rules when they load: whether to track, and each hook's base chains by family.
    needs_ct: bool,
    chains: [[Vec<usize>; 2]; 5],
    log_tokens: f64,
    log_at: Option<Instant>,
    port_seed: u32,
}

impl Default for Netfilter {
    fn default() -> Netfilter {
        Netfilter::new(Ruleset::default())
    }
}

impl Netfilter {
    pub fn new(rules: Ruleset) -> Netfilter {
        let mut nf = Netfilter {
            rules,
            ct: Conntrack::default(),
            stats: NfStats::default(),
            capture: None,
            needs_ct: false,
            chains: Default::default(),
            log_tokens: LOG_BURST,
            log_at: None,
            port_seed: 0x9E37,
        };
        nf.derive();
        nf
    }

    fn derive(&mut self) {
        self.needs_ct = self.rules.needs_conntrack();
        for (i, h) in [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting].into_iter().enumerate() {
            self.chains[i] = [self.rules.base_chains(h, false), self.rules.base_chains(h, true)];
        }
    }

    fn hook_index(h: Hook) -> usize {
        match h {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    /// Replaces the rule set with the one in `src`; on an error nothing changes.
    pub fn load(&mut self, src: &str) -> Result<(), ParseError> {
        self.rules = parse::parse(src)?;
        self.derive();
        Ok(())
    }

    /// Reads a rule file; the error names the file, line and column.
    pub fn from_file(path: &std::path::Path) -> Result<Netfilter, String> {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rules = parse::parse(&src).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Netfilter::new(rules))
    }

    /// Runs hook `at.hook` on `pkt` (an IP packet). NAT rewrites it in place when accepted.
    pub fn hook(&mut self, at: &At, ctx: &mut Ctx, pkt: &mut [u8], now: Instant) -> Verdict {
        let chains = &self.chains[Self::hook_index(at.hook)];
        if !self.needs_ct && chains[0].is_empty() && chains[1].is_empty() && self.capture.is_none() {
            // Nothing hangs on this hook: the packet passes untouched and uncounted.
            return Verdict::Accept;
        }
        let Some(v) = View::parse(pkt, false) else {
            // Not an IP packet netfilter can read; the IP layer judges it.
            return Verdict::Accept;
        };
        if self.needs_ct && matches!(at.hook, Hook::Prerouting | Hook::Output) && ctx.ct.is_none() {
            ctx.ct = Some(self.ct.track(pkt, &v, now));
        }
        let track = ctx.ct.unwrap_or(Track { state: CtState::Untracked, conn: None });
        // One lookup of the connection: whether this is its unconfirmed first packet, and its mark.
        let entry = track.conn.and_then(|(id, d)| self.ct.get(id).map(|c| (d, c.confirmed, c.mark)));
        let first = entry.is_some_and(|(d, confirmed, _)| d == Dir::Original && !confirmed);
        let mut ct_mark = entry.map_or(0, |(_, _, m)| m);
        let mut verdict = Verdict::Accept;
        let conn = track.conn.map(|(id, _)| id);
        let (hi, fam) = (Self::hook_index(at.hook), usize::from(v.v6));
        for k in 0..self.chains[hi][fam].len() {
            let chain = self.chains[hi][fam][k];
            let is_nat = self.rules.chains.get(chain).and_then(|c| c.base).is_some_and(|b| b.kind == rules::ChainType::Nat);
            if is_nat && !(first && track.state == CtState::New) {
                continue;
            }
            let mut p = rules::Pkt { v: &v, iif: at.iif, oif: at.oif, ct: track.state, mark: ctx.mark, ct_mark };
            let mut fx = rules::Effects::default();
            let r = self.rules.walk(chain, &mut p, &mut fx);
            ctx.mark = p.mark;
            if p.ct_mark != ct_mark {
                // The connection keeps its mark for every later packet, both ways.
                ct_mark = p.ct_mark;
                if let Some(c) = conn.and_then(|id| self.ct.get_mut(id)) {
                    c.mark = ct_mark;
                }
            }
            for l in fx.logs {
                self.log(&l, at, &v, ctx.mark, now);
            }
            match r {
                Verdict::Accept => {}
                Verdict::Nat(n) if is_nat => {
                    if !self.bind(&n, track, at, &v) {
                        self.stats.nat_failed += 1;
                        verdict = Verdict::Drop;
                        break;
                    }
                }
                Verdict::Nat(_) => {}
                other => {
                    verdict = other;
                    break;
                }
            }
        }
        match verdict {
            Verdict::Accept | Verdict::Nat(_) => {
                self.stats.accepted += 1;
                self.apply_nat(at.hook, track, pkt, &v);
                if let Some((h, c)) = self.capture.as_mut() {
                    if *h == at.hook {
                        let _ = c.write(pkt);
                    }
                }
                if matches!(at.hook, Hook::Postrouting | Hook::Input) {
                    if let Some((id, _)) = track.conn {
                        self.ct.confirm(id);
                    }
                }
                Verdict::Accept
            }
            other => {
                if matches!(other, Verdict::Reject(_)) {
                    self.stats.rejected += 1;
                } else {
                    self.stats.dropped += 1;
                }
                if let Some((id, _)) = track.conn.filter(|_| first) {
                    self.ct.forget_unconfirmed(id);
                }
                other
            }
        }
    }

    fn log(&mut self, what: &str, at: &At, v: &View, mark: u32, now: Instant) {
        if let Some(last) = self.log_at {
            self.log_tokens = (self.log_tokens + (now - last).as_secs_f64() * LOG_PER_SEC).min(LOG_BURST);
        }
        self.log_at = Some(now);
        if self.log_tokens < 1.0 {
            self.stats.log_suppressed += 1;
            return;
        }
        self.log_tokens -= 1.0;
        self.stats.logged += 1;
        let proto = match v.proto {
            packet::TCP => "TCP".to_string(),
            packet::UDP => "UDP".to_string(),
            packet::ICMP => "ICMP".to_string(),
            packet::ICMPV6 => "ICMPv6".to_string(),
            p => p.to_string(),
        };
        log::info!(
            "{what} IN={} OUT={} SRC={} DST={} LEN={} PROTO={proto} SPT={} DPT={} MARK={mark:#x} HOOK={}",
            at.iif.unwrap_or(""),
            at.oif.unwrap_or(""),
            v.src,
            v.dst,
            v.len,
            v.sport,
            v.dport,
            at.hook.name()
        );
    }

    /// Gives a new connection its NAT binding: the reply tuple that the NAT target implies, with a free port
    /// when the one it would keep is taken. False when no unique tuple exists.
    fn bind(&mut self, n: &Nat, track: Track, at: &At, v: &View) -> bool {
        let Some((id, Dir::Original)) = track.conn else { return false };
        match n {
            Nat::Dnat { addr, port } => self.bind_dst(id, *addr, *port, v),
            // Locally generated packets (OUTPUT) go to the host itself, as Linux's REDIRECT sends them to
            // 127.0.0.1 or ::1; received ones to the address of the interface they came in on.
            Nat::Redirect { port } => {
                let lo = if v.v6 { IpAddr::from(crate::wire::ipv6::LOOPBACK) } else { IpAddr::from(crate::wire::ipv4::LOOPBACK) };
                let to = if at.hook == Hook::Output { Some(lo) } else { at.iif_addr };
                to.is_some_and(|a| self.bind_dst(id, a, *port, v))
            }
            Nat::Snat { addr, ports } => self.bind_src(id, *addr, *ports, v),
            Nat::Masquerade { ports } => at.oif_addr.is_some_and(|a| self.bind_src(id, a, *ports, v)),
        }
    }

    fn bind_dst(&mut self, id: u64, addr: IpAddr, port: Option<u16>, v: &View) -> bool {
        if addr.is_ipv6() != v.v6 {
            return false;
        }
        let Some(c) = self.ct.get(id) else { return false };
        let reply = c.tuple[1];
        // An echo keeps its identifier.
        let echo = matches!(v.proto, packet::ICMP | packet::ICMPV6);
        let sport = port.filter(|_| !echo).unwrap_or(reply.sport);
        let ok = self.ct.set_reply(id, Tuple { src: addr, sport, ..reply });
        if let Some(c) = self.ct.get_mut(id) {
            c.dnat |= ok;
        }
        ok
    }

    fn bind_src(&mut self, id: u64, addr: IpAddr, ports: Option<(u16, u16)>, v: &View) -> bool {
        if addr.is_ipv6() != v.v6 {
            return false;
        }
        let Some(c) = self.ct.get(id) else { return false };
        let (orig, reply) = (c.tuple[0], c.tuple[1]);
        let echo = matches!(v.proto, packet::ICMP | packet::ICMPV6);
        let with = |p: u16| if echo { Tuple { dst: addr, dport: p, sport: p, ..reply } } else { Tuple { dst: addr, dport: p, ..reply } };
        let keep = orig.sport;
        let (lo, hi) = ports.unwrap_or(match keep {
            0..=511 if !echo => (1, 511),
            512..=1023 if !echo => (600, 1023),
            _ => (1024, 65535),
        });
        // The source port stays when it is free and in range (as Linux keeps it).
        let mut pick = None;
        if (lo..=hi).contains(&keep) && (with(keep) == reply || !self.ct.tuple_taken(&with(keep))) {
            pick = Some(keep);
        } else {
            let span = u32::from(hi - lo) + 1;
            self.port_seed = self.port_seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let start = self.port_seed % span;
            for i in 0..span.min(65536) {
                let p = lo + ((start + i) % span) as u16;
                if !self.ct.tuple_taken(&with(p)) {
                    pick = Some(p);
                    break;
                }
            }
        }
        let Some(p) = pick else { return false };
        let ok = self.ct.set_reply(id, with(p));
        if let Some(c) = self.ct.get_mut(id) {
            c.snat |= ok;
        }
        ok
    }

    /// Applies the connection's binding at this hook: the destination at PREROUTING and OUTPUT, the source
    /// at POSTROUTING and INPUT.
    fn apply_nat(&mut self, hook: Hook, track: Track, pkt: &mut [u8], v: &View) {
        let Some((id, dir)) = track.conn else { return };
        let Some(c) = self.ct.get(id) else { return };
        if !c.snat && !c.dnat {
            return;
        }
        let (this, other) = match dir {
            Dir::Original => (c.tuple[0], c.tuple[1]),
            Dir::Reply => (c.tuple[1], c.tuple[0]),
        };
        let end = match hook {
            Hook::Prerouting | Hook::Output => End::Dst,
            Hook::Postrouting | Hook::Input => End::Src,
            Hook::Forward => return,
        };
        if track.state == CtState::Related && v.is_icmp_error() {
            icmp_error_nat(pkt, v, end, this, other);
            return;
        }
        // After both manips the packet carries the other direction's tuple, inverted.
        let target = other.invert();
        match end {
            End::Dst if (v.dst, v.dport) != (target.dst, target.dport) => packet::rewrite(pkt, v, End::Dst, target.dst, target.dport),
            End::Src if (v.src, v.sport) != (target.src, target.sport) => packet::rewrite(pkt, v, End::Src, target.src, target.sport),
            _ => {}
        }
    }

    /// Starts capturing what `hook` accepts to a pcap file of IP packets (LINKTYPE_RAW), or stops (`None`);
    /// the packets the previous capture took.
    pub fn set_capture(&mut self, at: Option<(Hook, &std::path::Path)>) -> std::io::Result<u64> {
        let done = match self.capture.take() {
            Some((_, mut c)) => {
                c.flush()?;
                c.packets
            }
            None => 0,
        };
        if let Some((h, p)) = at {
            self.capture = Some((h, crate::monitor::Capture::create_with(p, crate::monitor::LINKTYPE_RAW)?));
        }
        Ok(done)
    }

    /// `conntrack -L`.
    pub fn conntrack_listing(&self, now: Instant) -> String {
        self.ct.listing(now)
    }
}

/// Translates an ICMP error about a NATed connection: at the destination manip the quoted packet becomes
/// what its sender sent (both ends) and the outer destination that sender; at the source manip an error
/// from the flow's own peer takes the address that peer was reached at.
fn icmp_error_nat(pkt: &mut [u8], v: &View, end: End, this: Tuple, other: Tuple) {
    let q = v.quote_at();
    match end {
        End::Dst => {
            if let Some(inner_bytes) = pkt.get_mut(q..) {
                if let Some(inner) = View::parse(inner_bytes, true) {
                    if (inner.src, inner.sport) != (other.src, other.sport) {
                        packet::rewrite(inner_bytes, &inner, End::Src, other.src, other.sport);
                    }
                    if let Some(inner) = View::parse(inner_bytes, true) {
                        if (inner.dst, inner.dport) != (other.dst, other.dport) {
                            packet::rewrite(inner_bytes, &inner, End::Dst, other.dst, other.dport);
                        }
                    }
                }
            }
            if v.dst != other.src {
                packet::rewrite(pkt, v, End::Dst, other.src, 0);
            }
        }
        End::Src => {
            if v.src == this.src && v.src != other.dst {
                packet::rewrite(pkt, v, End::Src, other.dst, 0);
            }
        }
    }
    // The ICMP checksum covers the quoted bytes that changed: computed afresh.
    let Some(v) = View::parse(pkt, false) else { return };
    let l4 = v.l4;
    if pkt.len() < l4 + 4 {
        return;
    }
    pkt[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let len = v.len.saturating_sub(l4);
    let acc = if v.proto == packet::ICMPV6 { crate::wire::checksum::pseudo(v.src, v.dst, packet::ICMPV6, len) } else { 0 };
    let Some(body) = pkt.get(l4..v.len) else { return };
    let c = !crate::wire::checksum::fold(crate::wire::checksum::sum(acc, body));
    pkt[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
}

/// The conntrack state bits as `ct state` names them, for listings.
pub fn state_name(s: CtState) -> &'static str {
    match s {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::Invalid => "invalid",
        CtState::Untracked => "untracked",
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{icmpv4, Icmpv4Type, PacketBuilder};

    const RULES: &str = r#"
table ip nat {
    chain prerouting { type nat hook prerouting priority dstnat; iifname "wan" tcp dport 8080 dnat to 10.1.0.2:80 }
    chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" masquerade }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid counter drop
        iifname "lan" tcp dport 9 reject with tcp reset
        iifname "lan" accept
        iifname "wan" ct state new tcp dport 80 accept
    }
}
"#;
    const INSIDE: [u8; 4] = [10, 1, 0, 2];
    const SERVER: [u8; 4] = [192, 0, 2, 9];
    const WAN: [u8; 4] = [203, 0, 113, 1];

    fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64).udp(sp, dp).write(&mut v, b"payload").unwrap();
        v
    }

    fn tcp_syn(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, 1, 65535).syn().write(&mut v, &[]).unwrap();
        v
    }

    /// A packet through the router: PREROUTING on `iif`, FORWARD and POSTROUTING to `oif`.
    fn forward(nf: &mut Netfilter, iif: &str, oif: &str, p: &mut [u8], now: Instant) -> Verdict {
        let addr = |i: &str| Some(IpAddr::from(if i == "wan" { WAN } else { [10, 1, 0, 1] }));
        let mut ctx = Ctx::default();
        for hook in [Hook::Prerouting, Hook::Forward, Hook::Postrouting] {
            let at = At { hook, iif: Some(iif), oif: (hook != Hook::Prerouting).then_some(oif), iif_addr: addr(iif), oif_addr: addr(oif) };
            let r = nf.hook(&at, &mut ctx, p, now);
            if r != Verdict::Accept {
                return r;
            }
        }
        Verdict::Accept
    }

    fn nf() -> Netfilter {
        let mut nf = Netfilter::default();
        nf.load(RULES).unwrap();
        nf
    }

    #[test]
    fn masquerade_out_and_the_reply_back() {
        let mut nf = nf();
        let now = Instant::from_millis(1);
        let mut p = udp(INSIDE, SERVER, 5000, 53);
        assert_eq!(forward(&mut nf, "lan", "wan", &mut p, now), Verdict::Accept);
        let v = View::parse(&p, false).unwrap();
        assert_eq!((v.src, v.sport), (IpAddr::from(WAN), 5000), "the source became the WAN address, port kept");
        // A second inside host using the same source port gets another one.
        let mut q = udp([10, 1, 0, 3], SERVER, 5000, 53);
        assert_eq!(forward(&mut nf, "lan", "wan", &mut q, now), Verdict::Accept);
        let w = View::parse(&q, false).unwrap();
        assert_eq!(w.src, IpAddr::from(WAN));
        assert_ne!(w.sport, 5000, "no two flows share a tuple");
        // The server's reply comes back to the right inside host and port.
        let mut r = udp(SERVER, WAN, 53, w.sport);
        assert_eq!(forward(&mut nf, "wan", "lan", &mut r, now), Verdict::Accept);
        let rv = View::parse(&r, false).unwrap();
        assert_eq!((rv.dst, rv.dport), (IpAddr::from([10, 1, 0, 3]), 5000));
        // An unsolicited packet from outside is dropped by the policy.
        let mut u = udp(SERVER, WAN, 53, 6000);
        assert_eq!(forward(&mut nf, "wan", "lan", &mut u, now), Verdict::Drop);
        let l = nf.conntrack_listing(now);
        assert!(l.contains("src=10.1.0.2 dst=192.0.2.9 sport=5000 dport=53"), "{l}");
        assert!(l.contains("src=192.0.2.9 dst=203.0.113.1 sport=53 dport=5000"), "{l}");
    }

    #[test]
    fn an_icmp_error_is_related_and_translated_back() {
        let mut nf = nf();
        let now = Instant::from_millis(1);
        let mut p = udp(INSIDE, SERVER, 5000, 53);
        let original = p.clone();
        forward(&mut nf, "lan", "wan", &mut p, now);
        // The server answers port unreachable, quoting the packet as it saw it (masqueraded).
        let mut e = Vec::new();
        PacketBuilder::ipv4(SERVER, WAN, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port))
            .write(&mut e, &p)
            .unwrap();
        assert_eq!(forward(&mut nf, "wan", "lan", &mut e, now), Verdict::Accept);
        let s = etherparse::SlicedPacket::from_ip(&e).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else { panic!() };
        assert_eq!(ip.header().destination(), INSIDE, "the outer header goes to the inside host");
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &s.transport else { panic!() };
        // The quoted packet is the one the inside host sent, byte for byte.
        assert_eq!(icmp.payload(), &original[..], "quoted packet restored");
        let hdr = icmp.header();
        assert_eq!(hdr.checksum, hdr.icmp_type.calc_checksum(icmp.payload()), "ICMP checksum right");
    }

    #[test]
    fn dnat_port_forward_and_reject() {
        let mut nf = nf();
        let now = Instant::from_millis(1);
        let mut p = tcp_syn(SERVER, WAN, 40000, 8080);
        assert_eq!(forward(&mut nf, "wan", "lan", &mut p, now), Verdict::Accept);
        let v = View::parse(&p, false).unwrap();
        assert_eq!((v.dst, v.dport), (IpAddr::from(INSIDE), 80));
        let mut r = Vec::new();
        PacketBuilder::ipv4(INSIDE, SERVER, 64).tcp(80, 40000, 7, 65535).syn().ack(2).write(&mut r, &[]).unwrap();
        assert_eq!(forward(&mut nf, "lan", "wan", &mut r, now), Verdict::Accept);
        let rv = View::parse(&r, false).unwrap();
        assert_eq!((rv.src, rv.sport), (IpAddr::from(WAN), 8080), "the reply leaves from the forwarded address");
        let mut x = tcp_syn(INSIDE, SERVER, 40001, 9);
        assert_eq!(forward(&mut nf, "lan", "wan", &mut x, now), Verdict::Reject(RejectWith::TcpReset));
        assert_eq!(nf.ct.len(), 1, "the rejected flow's entry went with its first packet");
        // A stray ACK is INVALID and counted by its rule.
        let mut a = Vec::new();
        PacketBuilder::ipv4(INSIDE, SERVER, 64).tcp(40002, 80, 1, 100).ack(1).write(&mut a, &[]).unwrap();
        assert_eq!(forward(&mut nf, "lan", "wan", &mut a, now), Verdict::Drop);
        let listing = nf.rules.listing();
        assert!(listing.contains("ct state invalid counter drop # packets 1"), "{listing}");
    }

    #[test]
    fn without_ct_or_nat_rules_nothing_is_tracked() {
        let mut nf = Netfilter::default();
        let now = Instant::from_millis(1);
        let mut p = udp(INSIDE, SERVER, 5000, 53);
        let before = p.clone();
        assert_eq!(forward(&mut nf, "lan", "wan", &mut p, now), Verdict::Accept);
        assert_eq!((nf.ct.len(), nf.stats.accepted, p), (0, 0, before), "an empty rule set: untouched, untracked");
        nf.load("table inet f { chain fwd { type filter hook forward priority 0; udp dport 53 counter } }").unwrap();
        forward(&mut nf, "lan", "wan", &mut udp(INSIDE, SERVER, 5000, 53), now);
        assert_eq!(nf.ct.len(), 0, "no ct match, no NAT: still untracked");
        assert!(nf.rules.listing().contains("# packets 1 "));
        nf.load(RULES).unwrap();
        forward(&mut nf, "lan", "wan", &mut udp(INSIDE, SERVER, 5000, 53), now);
        assert_eq!(nf.ct.len(), 1);
    }

    #[test]
    fn the_connection_keeps_its_mark_and_replies_take_it_back() {
        // The usual connmark recipe: mark new flows by port, save the mark on the connection, restore it
        // on every later packet (replies included), and match on it.
        let mut nf = Netfilter::default();
        nf.load(
            r#"
table inet mangle {
    chain pre {
        type filter hook prerouting priority mangle;
        meta mark set ct mark
        ct state new udp dport 53 meta mark set 0x35 ct mark set meta mark
        ct state new udp dport 123 ct mark set 0x7b
        ct mark 0x35 meta mark 0x35 counter
        ct mark != 0 counter
    }
}"#,
        )
        .unwrap();
        assert!(nf.rules.needs_conntrack(), "ct mark needs tracking");
        let now = Instant::from_millis(1);
        let pre = |nf: &mut Netfilter, p: &mut Vec<u8>| {
            let at = At { hook: Hook::Prerouting, iif: Some("lan"), oif: None, iif_addr: None, oif_addr: None };
            let mut ctx = Ctx::default();
            assert_eq!(nf.hook(&at, &mut ctx, p, now), Verdict::Accept);
            // Confirmed as INPUT would.
            let at = At { hook: Hook::Input, ..at };
            nf.hook(&at, &mut ctx, p, now);
            ctx.mark
        };
        assert_eq!(pre(&mut nf, &mut udp(INSIDE, SERVER, 5000, 53)), 0x35, "the first packet marked by port");
        // The reply matches no port rule: its mark comes from the connection.
        assert_eq!(pre(&mut nf, &mut udp(SERVER, INSIDE, 53, 5000)), 0x35, "the reply takes the connection's mark");
        // A connection marked directly: its packets carry the mark from the second one on.
        assert_eq!(pre(&mut nf, &mut udp(INSIDE, SERVER, 5001, 123)), 0, "ct mark set alone leaves the packet");
        assert_eq!(pre(&mut nf, &mut udp(INSIDE, SERVER, 5001, 123)), 0x7b);
        assert_eq!(pre(&mut nf, &mut udp(INSIDE, SERVER, 5002, 80)), 0, "unmarked flows stay unmarked");
        let l = nf.rules.listing();
        assert!(l.contains("ct mark 0x35 meta mark 0x35 counter # packets 2 "), "{l}");
        assert!(l.contains("ct mark != 0 counter # packets 4 "), "{l}");
        let ct = nf.conntrack_listing(now);
        assert!(ct.lines().any(|x| x.contains("dport=53") && x.contains("mark=53 ")), "{ct}");
    }

    #[test]
    fn a_bad_rule_file_leaves_the_rules_as_they_were() {
        let mut nf = nf();
        let before = nf.rules.clone();
        let e = nf.load("table ip t {\n chain c { tcp dport x accept }\n}").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(nf.rules, before);
    }
}
