//! IPv6 headers (RFC 8200): the fixed header, the extension headers a host walks (hop-by-hop options,
//! routing, fragment, destination options), addresses (link-local from a MAC by EUI-64, solicited-node
//! multicast and its Ethernet mapping) and the pseudo-header for upper-layer checksums.

use super::{checksum, Error, Mac, Result};

pub const HEADER_LEN: usize = 40;
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_TCP: u8 = 6;
pub const NH_UDP: u8 = 17;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_ICMPV6: u8 = 58;
pub const NH_NONE: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;
/// The minimum link MTU IPv6 requires (RFC 8200 section 5).
pub const MIN_MTU: usize = 1280;
pub const FRAG_HEADER_LEN: usize = 8;

pub type Addr = [u8; 16];
pub const UNSPECIFIED: Addr = [0; 16];
pub const ALL_NODES: Addr = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const ALL_ROUTERS: Addr = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// ::1, the host itself, never a wire (RFC 4291 2.5.3).
pub const LOOPBACK: Addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

pub fn is_loopback(a: &Addr) -> bool {
    *a == LOOPBACK
}

pub fn is_multicast(a: &Addr) -> bool {
    a[0] == 0xff
}

/// fe80::/10.
pub fn is_link_local(a: &Addr) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// fe80::/64 with the interface identifier from `mac` (modified EUI-64, RFC 4291 appendix A).
pub fn link_local(mac: Mac) -> Addr {
    with_interface_id([0xfe, 0x80, 0, 0, 0, 0, 0, 0], mac)
}

/// A /64 prefix and the modified EUI-64 interface identifier of `mac`.
pub fn with_interface_id(prefix: [u8; 8], mac: Mac) -> Addr {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&prefix);
    a[8..].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]);
    a
}

/// ff02::1:ffXX:XXXX for `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: &Addr) -> Addr {
    let mut m = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    m[13..].copy_from_slice(&a[13..]);
    m
}

/// The Ethernet address a multicast group maps to: 33:33 and its last four bytes (RFC 2464 7).
pub fn multicast_mac(a: &Addr) -> Mac {
    [0x33, 0x33, a[12], a[13], a[14], a[15]]
}

/// Whether the first `len` bits of `a` and `b` agree.
pub fn prefix_match(a: &Addr, b: &Addr, len: u8) -> bool {
    let len = usize::from(len.min(128));
    let (bytes, bits) = (len / 8, len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0
}

pub fn fmt_addr(a: &Addr) -> String {
    std::net::Ipv6Addr::from(*a).to_string()
}

/// The upper-layer pseudo-header sum (RFC 8200 8.1): addresses, L4 length, next header.
pub fn pseudo_sum(src: &Addr, dst: &Addr, next_header: u8, len: usize) -> u32 {
    let mut acc = checksum::sum(0, src);
    acc = checksum::sum(acc, dst);
    acc = checksum::sum(acc, &(len as u32).to_be_bytes());
    acc + u32::from(next_header)
}

/// An upper-layer checksum over `l4` (its checksum field included) is valid.
pub fn l4_checksum_ok(src: &Addr, dst: &Addr, next_header: u8, l4: &[u8]) -> bool {
    checksum::fold(checksum::sum(pseudo_sum(src, dst, next_header, l4.len()), l4)) == 0xFFFF
}

/// The checksum field value for `l4` (its field zero).
pub fn l4_checksum(src: &Addr, dst: &Addr, next_header: u8, l4: &[u8]) -> u16 {
    !checksum::fold(checksum::sum(pseudo_sum(src, dst, next_header, l4.len()), l4))
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Addr,
    pub dst: Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

impl Repr {
    /// Parses the fixed header; the payload length must fit the buffer (the rest is link padding).
    pub fn parse(b: &[u8]) -> Result<Repr> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        let payload_len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if HEADER_LEN + payload_len > b.len() {
            return Err(Error::Truncated);
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&b[8..24]);
        dst.copy_from_slice(&b[24..40]);
        Ok(Repr { src, dst, next_header: b[6], hop_limit: b[7], payload_len })
    }

    /// The header an ICMPv6 error quotes: the packet behind it may be cut short.
    pub fn parse_quoted(b: &[u8]) -> Result<Repr> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&b[8..24]);
        dst.copy_from_slice(&b[24..40]);
        Ok(Repr { src, dst, next_header: b[6], hop_limit: b[7], payload_len: usize::from(u16::from_be_bytes([b[4], b[5]])) })
    }

    pub fn emit(&self, b: &mut [u8]) {
        b[0] = 0x60;
        b[1..4].fill(0);
        b[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        b[6] = self.next_header;
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src);
        b[24..40].copy_from_slice(&self.dst);
    }
}

/// The fragment header (RFC 8200 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub next_header: u8,
    /// Offset in bytes (a multiple of 8).
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
}

impl Fragment {
    pub fn parse(b: &[u8]) -> Result<Fragment> {
        if b.len() < FRAG_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let off = u16::from_be_bytes([b[2], b[3]]);
        Ok(Fragment {
            next_header: b[0],
            offset: usize::from(off & !7),
            more: off & 1 != 0,
            ident: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.next_header;
        b[1] = 0;
        b[2..4].copy_from_slice(&((self.offset as u16 & !7) | u16::from(self.more)).to_be_bytes());
        b[4..8].copy_from_slice(&self.ident.to_be_bytes());
    }
}

/// What walking the extension headers found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// The upper layer: its protocol number and offset in the payload; a fragment header on the way.
    Upper { next_header: u8, offset: usize, fragment: Option<(Fragment, usize)> },
    /// A header the host must refuse with a Parameter Problem (RFC 8200 4): code and the pointer (offset
    /// of the offending byte from the start of the IPv6 header).
    Problem { code: u8, pointer: usize },
    /// An option says to drop the packet without a word (action 01), or no next header.
    Discard,
}

pub const PARAM_ERRONEOUS_FIELD: u8 = 0;
pub const PARAM_UNRECOGNIZED_NH: u8 = 1;
pub const PARAM_UNRECOGNIZED_OPTION: u8 = 2;

/// Walks the extension headers of `payload` (which follows a fixed header whose Next Header is `first`).
/// Hop-by-hop only first; options with an unknown type act by their two high bits (RFC 8200 4.2); a
/// routing header with segments left is refused (type 0, RFC 5095, and any other this host cannot process);
/// the walk stops at a fragment header that is not the first fragment (its upper layer is in fragment 0).
pub fn walk(first: u8, payload: &[u8], dst_multicast: bool) -> Chain {
    let mut nh = first;
    let mut off = 0usize;
    let mut fragment = None;
    let mut n = 0;
    loop {
        n += 1;
        if n > 16 {
            return Chain::Discard;
        }
        match nh {
            NH_HOP_BY_HOP | NH_DEST_OPTS => {
                if nh == NH_HOP_BY_HOP && off != 0 {
                    return Chain::Problem { code: PARAM_UNRECOGNIZED_NH, pointer: 6 };
                }
                let Some(h) = payload.get(off..off + 2) else { return Chain::Discard };
                let len = (usize::from(h[1]) + 1) * 8;
                let Some(opts) = payload.get(off + 2..off + len) else { return Chain::Discard };
                let mut i = 0;
                while i < opts.len() {
                    let t = opts[i];
                    if t == 0 {
                        i += 1; // Pad1
                        continue;
                    }
                    let Some(&l) = opts.get(i + 1) else { return Chain::Discard };
                    if t != 1 {
                        // Not PadN: no option is understood here; act as the type's high bits say.
                        match t >> 6 {
                            0 => {}
                            1 => return Chain::Discard,
                            2 => return Chain::Problem { code: PARAM_UNRECOGNIZED_OPTION, pointer: HEADER_LEN + off + 2 + i },
                            _ if dst_multicast => return Chain::Discard,
                            _ => return Chain::Problem { code: PARAM_UNRECOGNIZED_OPTION, pointer: HEADER_LEN + off + 2 + i },
                        }
                    }
                    i += 2 + usize::from(l);
                }
                nh = h[0];
                off += len;
            }
            NH_ROUTING => {
                let Some(h) = payload.get(off..off + 4) else { return Chain::Discard };
                let len = (usize::from(h[1]) + 1) * 8;
                if h[3] != 0 {
                    // Segments left: a routing type this host does not process (type 0 is deprecated).
                    return Chain::Problem { code: PARAM_ERRONEOUS_FIELD, pointer: HEADER_LEN + off + 2 };
                }
                nh = h[0];
                off += len;
            }
            NH_FRAGMENT => {
                let Some(h) = payload.get(off..) else { return Chain::Discard };
                let Ok(f) = Fragment::parse(h) else { return Chain::Discard };
                fragment = Some((f, off));
                off += FRAG_HEADER_LEN;
                if f.offset != 0 {
                    return Chain::Upper { next_header: f.next_header, offset: off, fragment };
                }
                nh = f.next_header;
            }
            NH_NONE => return Chain::Discard,
            _ => {
                if off > payload.len() {
                    return Chain::Discard;
                }
                return Chain::Upper { next_header: nh, offset: off, fragment };
            }
        }
    }
}

/// The extension headers ahead of a fragment header (RFC 8200 4.5: hop-by-hop, destination options and
/// routing), as Linux's `nf_ct_frag6_gather` finds them: where the fragment header starts in `payload` and
/// where the Next Header byte that names it is (`None`: the fixed header's). `None` when no fragment header
/// comes first after those.
pub fn find_fragment(first: u8, payload: &[u8]) -> Option<(usize, Option<usize>)> {
    let (mut nh, mut off, mut prev) = (first, 0usize, None);
    for _ in 0..16 {
        match nh {
            NH_FRAGMENT => return (payload.len() >= off + FRAG_HEADER_LEN).then_some((off, prev)),
            NH_HOP_BY_HOP | NH_DEST_OPTS | NH_ROUTING => {
                let h = payload.get(off..off + 2)?;
                prev = Some(off);
                nh = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            _ => return None,
        }
    }
    None
}

/// The part of a whole datagram's payload that every fragment repeats (RFC 8200 4.5; Linux's
/// `ip6_find_1stfragopt`): hop-by-hop, and destination options up to a routing header with the routing
/// header itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfragmentable {
    /// Its length in bytes from the start of the payload.
    pub len: usize,
    /// Where the Next Header byte of its last header is (`None`: the part is empty, the fixed header's).
    pub next_header_at: Option<usize>,
    /// What that byte names: the first fragmentable header.
    pub next_header: u8,
}

impl Unfragmentable {
    pub fn of(first: u8, payload: &[u8]) -> Unfragmentable {
        let mut u = Unfragmentable { len: 0, next_header_at: None, next_header: first };
        let (mut nh, mut off) = (first, 0usize);
        for _ in 0..16 {
            if !matches!(nh, NH_HOP_BY_HOP | NH_DEST_OPTS | NH_ROUTING) {
                break;
            }
            let Some(h) = payload.get(off..off + 2) else { break };
            let end = off + (usize::from(h[1]) + 1) * 8;
            if end > payload.len() {
                break;
            }
            if nh != NH_DEST_OPTS {
                u = Unfragmentable { len: end, next_header_at: Some(off), next_header: h[0] };
            }
            nh = h[0];
            off = end;
        }
        u
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn addresses_from_a_mac() {
        // RFC 4291 appendix A: 52:54:00:12:34:56 -> fe80::5054:ff:fe12:3456.
        let ll = link_local([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(fmt_addr(&ll), "fe80::5054:ff:fe12:3456");
        assert!(is_link_local(&ll) && !is_multicast(&ll));
        assert_eq!(fmt_addr(&solicited_node(&ll)), "ff02::1:ff12:3456");
        assert_eq!(multicast_mac(&solicited_node(&ll)), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let a: Addr = "2001:db8:1::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let b: Addr = "2001:db8:1:0:ffff::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert!(prefix_match(&a, &b, 64) && !prefix_match(&a, &b, 65));
        assert!(prefix_match(&a, &b, 0));
    }

    #[test]
    fn header_round_trip_and_truncation() {
        let r = Repr { src: [1; 16], dst: ALL_NODES, next_header: NH_ICMPV6, hop_limit: 255, payload_len: 8 };
        let mut b = vec![0u8; 48];
        r.emit(&mut b);
        assert_eq!(Repr::parse(&b), Ok(r));
        assert_eq!(Repr::parse(&b[..47]), Err(Error::Truncated));
        b[0] = 0x40;
        assert_eq!(Repr::parse(&b), Err(Error::Malformed));
    }

    #[test]
    fn extension_headers_are_walked_or_refused() {
        // Hop-by-hop with PadN, then a fragment header (first fragment), then UDP.
        let mut p = vec![NH_FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
        let f = Fragment { next_header: NH_UDP, offset: 0, more: true, ident: 7 };
        let mut fh = [0u8; 8];
        f.emit(&mut fh);
        p.extend_from_slice(&fh);
        p.extend_from_slice(&[0; 8]);
        assert_eq!(walk(NH_HOP_BY_HOP, &p, false), Chain::Upper { next_header: NH_UDP, offset: 16, fragment: Some((f, 8)) });
        // An unknown option with action 10: Parameter Problem pointing at the option type.
        let bad = [NH_UDP, 0, 0x80, 2, 0, 0, 0, 0];
        assert_eq!(walk(NH_DEST_OPTS, &bad, false), Chain::Problem { code: PARAM_UNRECOGNIZED_OPTION, pointer: 42 });
        // Action 11 to a multicast destination: dropped silently; action 01 always.
        let m = [NH_UDP, 0, 0xC0, 2, 0, 0, 0, 0];
        assert_eq!(walk(NH_DEST_OPTS, &m, true), Chain::Discard);
        let s = [NH_UDP, 0, 0x40, 2, 0, 0, 0, 0];
        assert_eq!(walk(NH_DEST_OPTS, &s, false), Chain::Discard);
        // A type 0 routing header with segments left: erroneous field, pointing at the routing type.
        let rh0 = [NH_UDP, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(walk(NH_ROUTING, &rh0, false), Chain::Problem { code: PARAM_ERRONEOUS_FIELD, pointer: 42 });
        // Hop-by-hop after another header is refused.
        let late = [NH_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0, NH_UDP, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(walk(NH_DEST_OPTS, &late, false), Chain::Problem { code: PARAM_UNRECOGNIZED_NH, pointer: 6 });
        // Cut short: dropped, never a panic.
        assert_eq!(walk(NH_HOP_BY_HOP, &[NH_UDP], false), Chain::Discard);
        assert_eq!(walk(NH_HOP_BY_HOP, &[NH_UDP, 5, 1, 2], false), Chain::Discard);
    }

    #[test]
    fn the_fragment_header_and_the_unfragmentable_part() {
        let hbh = [NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        let dst = [NH_ROUTING, 0, 1, 4, 0, 0, 0, 0];
        let rt = [NH_FRAGMENT, 0, 0, 0, 0, 0, 0, 0];
        let p: Vec<u8> = [&hbh[..], &dst, &rt, &[NH_UDP, 0, 0, 1, 0, 0, 0, 7], &[0; 8]].concat();
        assert_eq!(find_fragment(NH_HOP_BY_HOP, &p), Some((24, Some(16))));
        assert_eq!(find_fragment(NH_FRAGMENT, &p[24..]), Some((0, None)));
        assert_eq!(find_fragment(NH_UDP, &p), None, "no fragment header");
        assert_eq!(find_fragment(NH_HOP_BY_HOP, &p[..20]), None, "cut short");
        // Whole (fragment header gone, the routing header naming UDP): all three are unfragmentable.
        let mut whole: Vec<u8> = [&hbh[..], &dst, &rt, &[0; 8]].concat();
        whole[16] = NH_UDP;
        assert_eq!(Unfragmentable::of(NH_HOP_BY_HOP, &whole), Unfragmentable { len: 24, next_header_at: Some(16), next_header: NH_UDP });
        // Destination options with no routing header after them travel in the fragments.
        let tail: Vec<u8> = [&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0][..], &[NH_UDP, 0, 1, 4, 0, 0, 0, 0], &[0; 8]].concat();
        assert_eq!(Unfragmentable::of(NH_HOP_BY_HOP, &tail), Unfragmentable { len: 8, next_header_at: Some(0), next_header: NH_DEST_OPTS });
        assert_eq!(Unfragmentable::of(NH_UDP, &tail), Unfragmentable { len: 0, next_header_at: None, next_header: NH_UDP });
    }

    #[test]
    fn checksum_against_a_hand_vector() {
        // ICMPv6 echo request fe80::1 -> fe80::2, id 1 seq 1, no data: sum computed by hand.
        let mut src = [0u8; 16];
        src[0] = 0xfe;
        src[1] = 0x80;
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        let mut m = [128u8, 0, 0, 0, 0, 1, 0, 1];
        // Pseudo: fe80*2 + 1 + 2 + len 8 + nh 58 = 0x1fd00 + 3 + 8 + 58 = 0x1fd45; + 0x8000 + 1 + 1 = 0x27d47
        // -> fold 0x7d49 -> checksum 0x82b6.
        let c = l4_checksum(&src, &dst, NH_ICMPV6, &m);
        assert_eq!(c, 0x82b6);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(l4_checksum_ok(&src, &dst, NH_ICMPV6, &m));
    }
}
