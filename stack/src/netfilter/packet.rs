//! What netfilter reads from a raw IP packet (family, addresses, protocol, ports or ICMP id, TCP sequence
//! fields), and the rewrites NAT makes. Checksums are updated incrementally (RFC 1624), so a checksum that
//! was wrong stays wrong, as in Linux.

use std::net::IpAddr;

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// A connection's address tuple in one direction. For ICMP echo both ports are the echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn invert(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, proto: self.proto, sport: self.dport, dport: self.sport }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            ICMP | ICMPV6 => write!(f, "src={} dst={} id={}", self.src, self.dst, self.sport),
            _ => write!(f, "src={} dst={} sport={} dport={}", self.src, self.dst, self.sport, self.dport),
        }
    }
}

/// TCP header fields connection tracking follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Payload bytes after the TCP header.
    pub payload: usize,
    /// The window scale option (SYN segments only).
    pub wscale: Option<u8>,
}

/// A parsed view of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
    /// A fragment after the first: no transport header.
    pub later_fragment: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp: Option<TcpInfo>,
    /// ICMP or ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// The IP packet's length (header included).
    pub len: usize,
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn be32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*p.get(at)?, *p.get(at + 1)?, *p.get(at + 2)?, *p.get(at + 3)?]))
}

fn addr4(p: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::from(b))
}

fn addr6(p: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
    Some(IpAddr::from(b))
}

impl View {
    /// Parses an IPv4 or IPv6 packet; `None` when its headers are cut short or malformed. `quoted` accepts
    /// the truncated packet an ICMP error carries (length fields larger than the bytes present).
    pub fn parse(p: &[u8], quoted: bool) -> Option<View> {
        let (v6, src, dst, mut proto, mut l4, later_fragment, len) = match p.first()? >> 4 {
            4 => {
                let hl = usize::from(p.first()? & 0xF) * 4;
                let total = usize::from(be16(p, 2)?);
                if hl < 20 || total < hl || (!quoted && total > p.len()) || p.len() < hl {
                    return None;
                }
                let frag = be16(p, 6)? & 0x1FFF;
                (false, addr4(p, 12)?, addr4(p, 16)?, *p.get(9)?, hl, frag != 0, total.min(p.len()))
            }
            6 => {
                let total = 40 + usize::from(be16(p, 4)?);
                if p.len() < 40 || (!quoted && total > p.len()) {
                    return None;
                }
                (true, addr6(p, 8)?, addr6(p, 24)?, *p.get(6)?, 40, false, total.min(p.len()))
            }
            _ => return None,
        };
        let mut later_fragment = later_fragment;
        if v6 {
            // Extension headers up to the transport header.
            for _ in 0..8 {
                match proto {
                    0 | 43 | 60 => {
                        let next = *p.get(l4)?;
                        l4 += (usize::from(*p.get(l4 + 1)?) + 1) * 8;
                        proto = next;
                    }
                    44 => {
                        let next = *p.get(l4)?;
                        later_fragment = be16(p, l4 + 2)? & !7 != 0;
                        l4 += 8;
                        proto = next;
                    }
                    _ => break,
                }
            }
        }
        if l4 > len {
            // Extension headers running past the packet's own length.
            return None;
        }
        let mut v = View { v6, src, dst, proto, l4, later_fragment, sport: 0, dport: 0, tcp: None, icmp: None, len };
        if later_fragment {
            return Some(v);
        }
        match proto {
            TCP => {
                v.sport = be16(p, l4)?;
                v.dport = be16(p, l4 + 2)?;
                // A quoted segment carries only its first 8 bytes.
                if quoted && p.len() < l4 + 20 {
                    return Some(v);
                }
                let doff = usize::from(p.get(l4 + 12)? >> 4) * 4;
                if doff < 20 || l4 + doff > len {
                    return None;
                }
                let flags = *p.get(l4 + 13)?;
                let mut wscale = None;
                if flags & TCP_SYN != 0 {
                    let mut i = l4 + 20;
                    while i < l4 + doff {
                        match p.get(i)? {
                            0 => break,
                            1 => i += 1,
                            &kind => {
                                let l = usize::from(*p.get(i + 1)?);
                                if l < 2 {
                                    break;
                                }
                                if kind == 3 && l == 3 {
                                    wscale = Some((*p.get(i + 2)?).min(14));
                                }
                                i += l;
                            }
                        }
                    }
                }
                v.tcp = Some(TcpInfo {
                    flags,
                    seq: be32(p, l4 + 4)?,
                    ack: be32(p, l4 + 8)?,
                    win: be16(p, l4 + 14)?,
                    payload: len - l4 - doff,
                    wscale,
                });
            }
            UDP => {
                v.sport = be16(p, l4)?;
                v.dport = be16(p, l4 + 2)?;
            }
            ICMP | ICMPV6 => {
                let (t, c) = (*p.get(l4)?, *p.get(l4 + 1)?);
                v.icmp = Some((t, c));
                if is_echo(proto, t) {
                    let id = be16(p, l4 + 4)?;
                    (v.sport, v.dport) = (id, id);
                }
            }
            _ => {}
        }
        Some(v)
    }

    pub fn tuple(&self) -> Tuple {
        Tuple { src: self.src, dst: self.dst, proto: self.proto, sport: self.sport, dport: self.dport }
    }

    /// An ICMP or ICMPv6 error, quoting the packet that caused it.
    pub fn is_icmp_error(&self) -> bool {
        match (self.proto, self.icmp) {
            (ICMP, Some((t, _))) => matches!(t, 3 | 4 | 5 | 11 | 12),
            (ICMPV6, Some((t, _))) => (1..=4).contains(&t),
            _ => false,
        }
    }

    /// Where an ICMP error's quoted packet starts.
    pub fn quote_at(&self) -> usize {
        self.l4 + 8
    }
}

/// The IP packet in an Ethernet frame (after any 802.1Q tag): where it starts, and its view (`quoted`
/// as for [`View::parse`]).
pub fn frame_ip(frame: &[u8], quoted: bool) -> Option<(usize, View)> {
    let mut at = 12;
    let mut et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    if et == 0x8100 {
        at += 4;
        et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if et != 0x0800 && et != 0x86DD {
        return None;
    }
    let ip = at + 2;
    Some((ip, View::parse(frame.get(ip..)?, quoted)?))
}

/// ICMP echo request or reply.
pub fn is_echo(proto: u8, t: u8) -> bool {
    (proto == ICMP && (t == 8 || t == 0)) || (proto == ICMPV6 && (t == 128 || t == 129))
}

/// The echo request that an echo reply answers (for tracking), or the same type.
pub fn is_echo_request(proto: u8, t: u8) -> bool {
    (proto == ICMP && t == 8) || (proto == ICMPV6 && t == 128)
}

/// RFC 1624 incremental update of a ones'-complement checksum when `old` bytes become `new` (both of
/// even length).
pub fn csum_replace(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for w in old.chunks(2) {
        sum += u32::from(!u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    for w in new.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn update_field(p: &mut [u8], at: usize, old: &[u8], new: &[u8]) {
    if let Some(f) = p.get_mut(at..at + 2) {
        let c = u16::from_be_bytes([f[0], f[1]]);
        f.copy_from_slice(&csum_replace(c, old, new).to_be_bytes());
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Which end of the packet a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Rewrites the source or destination address and port of the packet `v` describes, keeping the IPv4
/// header checksum and the transport checksum right. For ICMP echo the port is the identifier. A UDP
/// checksum of zero (none, IPv4) stays zero. `quoted` rewrites the packet inside an ICMP error, whose
/// transport checksum may be cut off.
pub fn rewrite(p: &mut [u8], v: &View, end: End, addr: IpAddr, port: u16) {
    let (addr_at, port_at) = match (end, v.v6) {
        (End::Src, false) => (12, 0),
        (End::Dst, false) => (16, 2),
        (End::Src, true) => (8, 0),
        (End::Dst, true) => (24, 2),
    };
    let old_addr = match end {
        End::Src => v.src,
        End::Dst => v.dst,
    };
    let (old_a, new_a) = (addr_bytes(old_addr), addr_bytes(addr));
    if old_a.len() != new_a.len() {
        return;
    }
    let l4 = v.l4;
    if old_a != new_a {
        if let Some(f) = p.get_mut(addr_at..addr_at + old_a.len()) {
            f.copy_from_slice(&new_a);
        }
        if !v.v6 {
            update_field(p, 10, &old_a, &new_a);
        }
        if !v.later_fragment {
            // The pseudo-header's addresses are in TCP, UDP and ICMPv6 checksums.
            match v.proto {
                TCP if p.len() >= l4 + 18 => update_field(p, l4 + 16, &old_a, &new_a),
                UDP if p.len() >= l4 + 8 && (v.v6 || be16(p, l4 + 6) != Some(0)) => {
                    update_field(p, l4 + 6, &old_a, &new_a);
                    if be16(p, l4 + 6) == Some(0) {
                        p[l4 + 6..l4 + 8].copy_from_slice(&[0xFF, 0xFF]);
                    }
                }
                ICMPV6 if p.len() >= l4 + 4 => update_field(p, l4 + 2, &old_a, &new_a),
                _ => {}
            }
        }
    }
    if v.later_fragment {
        return;
    }
    match v.proto {
        TCP | UDP => {
            let Some(old_p) = be16(p, l4 + port_at) else { return };
            if old_p == port {
                return;
            }
            p[l4 + port_at..l4 + port_at + 2].copy_from_slice(&port.to_be_bytes());
            let check_at = if v.proto == TCP { l4 + 16 } else { l4 + 6 };
            if v.proto == UDP && !v.v6 && be16(p, check_at) == Some(0) {
                return;
            }
            update_field(p, check_at, &old_p.to_be_bytes(), &port.to_be_bytes());
            if v.proto == UDP && be16(p, check_at) == Some(0) {
                p[check_at..check_at + 2].copy_from_slice(&[0xFF, 0xFF]);
            }
        }
        ICMP | ICMPV6 if v.icmp.is_some_and(|(t, _)| is_echo(v.proto, t)) => {
            let Some(old_id) = be16(p, l4 + 4) else { return };
            if old_id != port {
                p[l4 + 4..l4 + 6].copy_from_slice(&port.to_be_bytes());
                update_field(p, l4 + 2, &old_id.to_be_bytes(), &port.to_be_bytes());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{IpNumber, PacketBuilder, SlicedPacket, TransportSlice};

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 1, 0, 2], [10, 2, 0, 2], 64).udp(5000, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn tcp6() -> Vec<u8> {
        let b = PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0x20, 1, 0xd, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(40000, 80, 1000, 65535)
        .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    /// etherparse (an independent implementation) recomputes the checksums after our rewrite.
    fn checksums_ok(p: &[u8]) -> bool {
        let s = SlicedPacket::from_ip(p).unwrap();
        let ip_ok = match &s.net {
            Some(etherparse::NetSlice::Ipv4(h)) => {
                let hdr = h.header().to_header();
                hdr.calc_header_checksum() == hdr.header_checksum
            }
            _ => true,
        };
        let (src, dst) = match &s.net {
            Some(etherparse::NetSlice::Ipv4(h)) => (IpAddr::from(h.header().source()), IpAddr::from(h.header().destination())),
            Some(etherparse::NetSlice::Ipv6(h)) => (IpAddr::from(h.header().source()), IpAddr::from(h.header().destination())),
            _ => unreachable!(),
        };
        let l4_ok = match s.transport {
            Some(TransportSlice::Udp(u)) => {
                let h = u.to_header();
                let want = match (src, dst) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => h.calc_checksum_ipv4_raw(a.octets(), b.octets(), u.payload()).unwrap(),
                    (IpAddr::V6(a), IpAddr::V6(b)) => h.calc_checksum_ipv6_raw(a.octets(), b.octets(), u.payload()).unwrap(),
                    _ => unreachable!(),
                };
                want == h.checksum
            }
            Some(TransportSlice::Tcp(t)) => {
                let h = t.to_header();
                let want = match (src, dst) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => h.calc_checksum_ipv4_raw(a.octets(), b.octets(), t.payload()).unwrap(),
                    (IpAddr::V6(a), IpAddr::V6(b)) => h.calc_checksum_ipv6_raw(a.octets(), b.octets(), t.payload()).unwrap(),
                    _ => unreachable!(),
                };
                want == h.checksum
            }
            _ => true,
        };
        let _ = IpNumber::UDP;
        ip_ok && l4_ok
    }

    #[test]
    fn parse_reads_the_tuple() {
        let p = udp4(b"hello");
        let v = View::parse(&p, false).unwrap();
        assert_eq!(
            v.tuple(),
            Tuple { src: "10.1.0.2".parse().unwrap(), dst: "10.2.0.2".parse().unwrap(), proto: UDP, sport: 5000, dport: 53 }
        );
        let t = tcp6();
        let v = View::parse(&t, false).unwrap();
        assert!(v.v6);
        assert_eq!((v.sport, v.dport), (40000, 80));
        assert_eq!(v.tcp.unwrap().flags & TCP_SYN, TCP_SYN);
        assert!(View::parse(&p[..20], false).is_none(), "a packet shorter than its length field");
    }

    #[test]
    fn rewrites_keep_checksums_right() {
        let mut p = udp4(b"hello world");
        let v = View::parse(&p, false).unwrap();
        rewrite(&mut p, &v, End::Src, "192.0.2.7".parse().unwrap(), 61000);
        let v = View::parse(&p, false).unwrap();
        assert_eq!((v.src, v.sport), ("192.0.2.7".parse().unwrap(), 61000));
        assert!(checksums_ok(&p));
        rewrite(&mut p, &v, End::Dst, "10.9.9.9".parse().unwrap(), 5353);
        assert!(checksums_ok(&p));
        let mut t = tcp6();
        let v = View::parse(&t, false).unwrap();
        rewrite(&mut t, &v, End::Dst, "2001:db8:9::1".parse().unwrap(), 8080);
        assert!(checksums_ok(&t));
        assert_eq!(View::parse(&t, false).unwrap().dport, 8080);
    }

    #[test]
    fn a_wrong_checksum_stays_wrong() {
        let mut p = udp4(b"x");
        let n = p.len();
        p[n - 3] ^= 0x55; // into the checksum's low byte
        let v = View::parse(&p, false).unwrap();
        rewrite(&mut p, &v, End::Src, "192.0.2.1".parse().unwrap(), 1);
        assert!(!checksums_ok(&p));
    }

    #[test]
    fn extension_headers_past_the_length_field_are_refused() {
        // IPv6 with payload length 8 but a hop-by-hop header claiming 16 bytes, then "ICMPv6".
        let mut p = vec![0u8; 40 + 24];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = 0; // hop-by-hop
        p[40] = ICMPV6;
        p[41] = 1; // (1 + 1) * 8 = 16 bytes
        p[56] = 1; // destination unreachable
        assert!(View::parse(&p, false).is_none());
    }

    #[test]
    fn rfc1624_vector() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(csum_replace(0xDD2F, &[0x55, 0x55], &[0x32, 0x85]), 0x0000);
    }
}
