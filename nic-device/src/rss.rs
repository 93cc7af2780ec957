//! Receive-side scaling as the 82574L does it: the Toeplitz hash over addresses (and TCP ports) selected by
//! MRQC, the 40-byte key in RSSRK, and the 128-entry redirection table RETA whose bit 7 picks queue 0 or 1.

use crate::regs::*;

/// MRQC hash-field enables.
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 18;
pub const MRQC_RSS_FIELD_IPV6_EX: u32 = 1 << 19;
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;
/// `MRQC[1:0]` = 01: multiple receive queues by RSS.
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

/// The longest hash input: two IPv6 addresses and two ports.
const MAX_INPUT: usize = 36;

/// The Toeplitz hash (Microsoft's RSS specification) under one key, a byte at a time: for each input
/// position, the XOR of the key windows each of the 256 byte values selects. Built once per key (the
/// receive path keeps one and rebuilds it when RSSRK changes); a hash is then one lookup per input byte
/// instead of a branch per bit.
pub struct Toeplitz {
    /// The key as RSSRK's ten registers hold it (`key_from_regs`): compared as is on every frame.
    rssrk: [u32; 10],
    table: Box<[[u32; 256]; MAX_INPUT]>,
}

impl Default for Toeplitz {
    /// The all-zero key (RSSRK's reset value), under which every window and so every entry is zero.
    fn default() -> Self {
        Toeplitz { rssrk: [0; 10], table: Box::new([[0; 256]; MAX_INPUT]) }
    }
}

impl Toeplitz {
    pub fn new(key: &[u8; 40]) -> Self {
        // The 32 key bits from bit `p` on (bits past the key's end are zero).
        let window = |p: usize| {
            let byte = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
            let b = p / 8;
            let five = (byte(b) << 32) | (byte(b + 1) << 24) | (byte(b + 2) << 16) | (byte(b + 3) << 8) | byte(b + 4);
            (five >> (8 - p % 8)) as u32
        };
        let mut table = Box::new([[0u32; 256]; MAX_INPUT]);
        for (i, row) in table.iter_mut().enumerate() {
            for bit in 0..8 {
                let w = window(i * 8 + bit);
                for (v, slot) in row.iter_mut().enumerate() {
                    if v & (0x80 >> bit) != 0 {
                        *slot ^= w;
                    }
                }
            }
        }
        let (words, _) = key.as_chunks::<4>();
        let rssrk = std::array::from_fn(|i| words.get(i).map_or(0, |w| u32::from_le_bytes(*w)));
        Toeplitz { rssrk, table }
    }

    /// This hasher for the key RSSRK holds in `regs`, rebuilt first if the guest changed it since.
    pub fn for_regs(&mut self, regs: &[u32]) -> &Toeplitz {
        let at = (RSSRK / 4) as usize;
        if regs.get(at..at + 10).is_some_and(|w| w != self.rssrk) {
            *self = Toeplitz::new(&key_from_regs(regs));
        }
        self
    }

    /// The hash of `input` (at most 36 bytes, as every RSS type's input is; bytes past that are not hashed).
    pub fn hash(&self, input: &[u8]) -> u32 {
        input.iter().zip(self.table.iter()).fold(0, |h, (&b, row)| h ^ row.get(usize::from(b)).copied().unwrap_or(0))
    }
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
pub fn hash(mrqc: u32, toeplitz: &Toeplitz, h: &HashInput) -> Option<(RssType, u32)> {
    // The type, and the ports for the TCP types.
    let (ty, ports) = match (h.ipv6, h.tcp_ports) {
        (false, Some(p)) if mrqc & MRQC_RSS_FIELD_IPV4_TCP != 0 => (RssType::Ipv4Tcp, Some(p)),
        (false, _) if mrqc & MRQC_RSS_FIELD_IPV4 != 0 => (RssType::Ipv4, None),
        (true, Some(p)) if mrqc & MRQC_RSS_FIELD_IPV6_TCP != 0 => (RssType::Ipv6Tcp, Some(p)),
        (true, _) if h.ipv6_ext && mrqc & MRQC_RSS_FIELD_IPV6_EX != 0 => (RssType::Ipv6Ex, None),
        (true, _) if mrqc & MRQC_RSS_FIELD_IPV6 != 0 => (RssType::Ipv6, None),
        _ => return None,
    };
    // Source and destination address, then the two ports: on the stack, not allocated.
    let ports = ports.map(|(s, d)| [s.to_be_bytes(), d.to_be_bytes()]);
    let mut input = [0u8; MAX_INPUT];
    let mut n = 0;
    for part in [h.src, h.dst, ports.as_ref().map_or(&[][..], |p| p.as_flattened())] {
        input.get_mut(n..n + part.len())?.copy_from_slice(part);
        n += part.len();
    }
    Some((ty, toeplitz.hash(input.get(..n)?)))
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
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4_TCP | MRQC_RSS_FIELD_IPV4, &Toeplitz::new(&KEY), &h), Some((RssType::Ipv4Tcp, with_tcp)));
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4, &Toeplitz::new(&KEY), &h), Some((RssType::Ipv4, ip_only)));
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
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6_TCP | MRQC_RSS_FIELD_IPV6, &Toeplitz::new(&KEY), &h), Some((RssType::Ipv6Tcp, with_tcp)));
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6, &Toeplitz::new(&KEY), &h), Some((RssType::Ipv6, ip_only)));
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        v6("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2cc18cd5, 0x40207d3d);
        v6("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0f0c461c, 0xdde51bbf);
        v6("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4b61e985, 0x02d1feef);
    }

    /// The hash as the specification defines it: a 32-bit window over the key, one bit per input bit.
    fn bitwise(key: &[u8; 40], input: &[u8]) -> u32 {
        let mut result = 0u32;
        let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        for (i, &byte) in input.iter().enumerate() {
            let next = key.get(i + 4).copied().unwrap_or(0);
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    result ^= window;
                }
                window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
            }
        }
        result
    }

    /// The table gives the bitwise hash for every input length up to 36 bytes, under keys of patterned
    /// bytes written to RSSRK; `for_regs` rebuilds the table when the registers change and keeps it while
    /// they do not.
    #[test]
    fn table_matches_the_bitwise_definition() {
        let mut t = Toeplitz::default();
        let mut regs = vec![0u32; 0x8000];
        for seed in 0..4u32 {
            let key: [u8; 40] = std::array::from_fn(|i| (i as u32 * 73 + seed * 151).wrapping_mul(2_654_435_761).to_be_bytes()[0]);
            for i in 0..10 {
                regs[(RSSRK / 4) as usize + i] = u32::from_le_bytes(key[i * 4..i * 4 + 4].try_into().unwrap());
            }
            let input: Vec<u8> = (0..36u32).map(|i| (i * 29 + seed).wrapping_mul(40_503).to_be_bytes()[1]).collect();
            let h = t.for_regs(&regs);
            for n in 0..=36 {
                assert_eq!(h.hash(&input[..n]), bitwise(&key, &input[..n]), "key {seed}, {n} bytes");
            }
            assert_eq!(t.for_regs(&regs).rssrk, Toeplitz::new(&key).rssrk);
            assert_eq!(key_from_regs(&regs), key);
        }
        assert_eq!(Toeplitz::new(&KEY).hash(&[0xFF; 36]), bitwise(&KEY, &[0xFF; 36]));
        let zero = Toeplitz::default();
        assert_eq!((zero.rssrk, zero.table.iter().flatten().any(|&e| e != 0)), ([0; 10], false));
        assert_eq!(Toeplitz::new(&[0; 40]).table, zero.table);
    }

    #[test]
    fn disabled_types_give_no_hash() {
        let (s, d) = ([1u8; 4], [2u8; 4]);
        let h = HashInput { ipv6: false, src: &s, dst: &d, tcp_ports: None, ipv6_ext: false };
        assert_eq!(hash(MRQC_RSS_FIELD_IPV6, &Toeplitz::new(&KEY), &h), None);
        assert_eq!(hash(MRQC_RSS_FIELD_IPV4_TCP, &Toeplitz::new(&KEY), &h), None, "not TCP: the TCP type does not apply");
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
