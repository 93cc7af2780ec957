//! Receive-side scaling as the 82574L does it: the Toeplitz hash over addresses (and TCP ports) selected by
//! MRQC, the 40-byte key in RSSRK, and the 128-entry redirection table RETA whose bit 7 picks queue 0 or 1.

use crate::regs::*;

/// MRQC hash-field enables.
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 18;
pub const MRQC_RSS_FIELD_IPV6_EX: u32 = 1 << 19;
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;
/// MRQC[1:0] = 01: multiple receive queues by RSS.
pub const MRQC_ENABLE_RSS: u32 = 0x1;

/// RSS type reported in the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RssType {
    None = 0,
    Ipv4Tcp = 1,
    Ipv4 = 2,
    Ipv6Tcp = 3,
    Ipv6Ex = 4,
    Ipv6 = 5,
}

/// The Toeplitz hash of `input` under `key` (Microsoft's RSS specification).
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut result = 0u32;
    // A 32-bit window over the key, advanced one bit per input bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, &byte) in input.iter().enumerate() {
        let next = key.get(i + 4).copied().unwrap_or(0);
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | ((next >> (7 - bit)) & 1) as u32;
        }
    }
    result
}

/// What the hash is computed over, as parsed from a frame.
pub struct HashInput<'a> {
    pub ipv6: bool,
    pub src: &'a [u8],
    pub dst: &'a [u8],
    /// TCP source and destination ports, for unfragmented TCP.
    pub tcp_ports: Option<(u16, u16)>,
    /// IPv6 with extension headers.
    pub ipv6_ext: bool,
}

/// The RSS type and hash MRQC asks for, or `None` when no enabled type applies.
pub fn hash(mrqc: u32, key: &[u8; 40], h: &HashInput) -> Option<(RssType, u32)> {
    let with_ports = |ports: (u16, u16)| {
        let mut v = Vec::with_capacity(36);
        v.extend_from_slice(h.src);
        v.extend_from_slice(h.dst);
        v.extend_from_slice(&ports.0.to_be_bytes());
        v.extend_from_slice(&ports.1.to_be_bytes());
        v
    };
    let addrs = || [h.src, h.dst].concat();
    let t = if !h.ipv6 {
        match h.tcp_ports {
            Some(p) if mrqc & MRQC_RSS_FIELD_IPV4_TCP != 0 => (RssType::Ipv4Tcp, with_ports(p)),
            _ if mrqc & MRQC_RSS_FIELD_IPV4 != 0 => (RssType::Ipv4, addrs()),
            _ => return None,
        }
    } else {
        match h.tcp_ports {
            Some(p) if mrqc & MRQC_RSS_FIELD_IPV6_TCP != 0 => (RssType::Ipv6Tcp, with_ports(p)),
            _ if h.ipv6_ext && mrqc & MRQC_RSS_FIELD_IPV6_EX != 0 => (RssType::Ipv6Ex, addrs()),
            _ if mrqc & MRQC_RSS_FIELD_IPV6 != 0 => (RssType::Ipv6, addrs()),
            _ => return None,
        }
    };
    Some((t.0, toeplitz(key, &t.1)))
}

/// The key as the registers hold it: byte j in RSSRK[j / 4] bits 8 * (j % 4).
pub fn key_from_regs(regs: &[u32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    for (j, b) in k.iter_mut().enumerate() {
        *b = (regs.get((RSSRK / 4) as usize + j / 4).copied().unwrap_or(0) >> (8 * (j % 4))) as u8;
    }
    k
}

/// The queue RETA gives a hash: entry `hash & 0x7F`, bit 7.
pub fn queue(regs: &[u32], hash: u32) -> usize {
    let i = (hash & 0x7F) as usize;
    let entry = (regs.get((RETA / 4) as usize + i / 4).copied().unwrap_or(0) >> (8 * (i % 4))) as u8;
    (entry >> 7) as usize
}

#[cfg(test)]
mod test {
    use super::*;

    /// Microsoft's RSS verification key.
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b,
        0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ip_only: u32, with_tcp: u32) {
        let h = HashInput { ipv6: false, src: &src, dst: &dst, tcp_ports: Some((sport, dport)), ipv6_ext: false };
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4_TCP | MRQC_RSS_FIELD_IPV4, &KEY, &h), Some((RssType::Ipv4Tcp, with_tcp)));
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4, &KEY, &h), Some((RssType::Ipv4, ip_only)));
    }

    #[test]
    fn microsoft_ipv4_vectors() {
        v4([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766, 0x323e8fc2, 0x51ccc178);
        v4([199, 92, 111, 2], 14230, [65, 69, 140, 83], 4739, 0xd718262a, 0xc626b0ea);
        v4([24, 19, 198, 95], 12898, [12, 22, 207, 184], 38024, 0xd2d0a5de, 0x5c2b394a);
        v4([38, 27, 205, 30], 48228, [209, 142, 163, 6], 2217, 0x82989176, 0xafc7327f);
        v4([153, 39, 163, 191], 44251, [202, 188, 127, 2], 1303, 0x5d1809c5, 0x10e828a2);
    }

    fn ip6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    fn v6(src: &str, sport: u16, dst: &str, dport: u16, ip_only: u32, with_tcp: u32) {
        let (s, d) = (ip6(src), ip6(dst));
        let h = HashInput { ipv6: true, src: &s, dst: &d, tcp_ports: Some((sport, dport)), ipv6_ext: false };
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6_TCP | MRQC_RSS_FIELD_IPV6, &KEY, &h), Some((RssType::Ipv6Tcp, with_tcp)));
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6, &KEY, &h), Some((RssType::Ipv6, ip_only)));
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        v6("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2cc18cd5, 0x40207d3d);
        v6("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0f0c461c, 0xdde51bbf);
        v6("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4b61e985, 0x02d1feef);
    }

    #[test]
    fn disabled_types_give_no_hash() {
        let (s, d) = ([1u8; 4], [2u8; 4]);
        let h = HashInput { ipv6: false, src: &s, dst: &d, tcp_ports: None, ipv6_ext: false };
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6, &KEY, &h), None);
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4_TCP, &KEY, &h), None, "not TCP: the TCP type does not apply");
    }

    #[test]
    fn registers_hold_key_and_table_little_endian() {
        let mut regs = vec![0u32; 0x8000];
        for i in 0..10 {
            regs[(RSSRK / 4) as usize + i] = u32::from_le_bytes(KEY[i * 4..i * 4 + 4].try_into().unwrap());
        }
        assert_eq!(key_from_regs(&regs), KEY);
        regs[(RETA / 4) as usize + 1] = 0x0080_0000; // entry 6 -> queue 1
        assert_eq!(queue(&regs, 6), 1);
        assert_eq!(queue(&regs, 6 + 128), 1, "only the low 7 bits index the table");
        assert_eq!(queue(&regs, 5), 0);
    }
}
