//! Wire formats: typed, bounds-checked views over byte buffers (`new_checked` validates once, so accessors
//! cannot panic) and small `Repr`s with `parse` and `emit`.

pub mod arp;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// The source and destination addresses of an IPv4 or IPv6 packet, read from its fixed header; `None` for
/// anything shorter or of another version.
pub fn ip_addrs(p: &[u8]) -> Option<(std::net::IpAddr, std::net::IpAddr)> {
    use std::net::IpAddr;
    match p.first()? >> 4 {
        4 => Some((IpAddr::from(<[u8; 4]>::try_from(p.get(12..16)?).ok()?), IpAddr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?))),
        6 => Some((IpAddr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?), IpAddr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?))),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated")]
    Truncated,
    #[error("malformed")]
    Malformed,
    #[error("bad checksum")]
    Checksum,
    #[error("unsupported")]
    Unsupported,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Internet checksum helpers (RFC 1071).
pub mod checksum {
    /// One's-complement sum of `data` added to `acc` (not folded). Eight bytes at a time, in the CPU's byte
    /// order: the sum of byte-swapped words is the byte-swapped sum (RFC 1071 2(B)), so `data` is summed as
    /// little-endian words and the folded result swapped once; and the sum of 32-bit words is congruent to
    /// that of the 16-bit ones modulo 0xFFFF, so it folds to the same checksum (RFC 1071 section 2,
    /// "deferred carries" and "parallel summation").
    pub fn sum(acc: u32, data: &[u8]) -> u32 {
        let mut le = 0u64;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            le += (v >> 32) + (v & 0xFFFF_FFFF);
        }
        let rest = chunks.remainder();
        let mut words = rest.chunks_exact(2);
        for w in &mut words {
            le += u64::from(u16::from_le_bytes([w[0], w[1]]));
        }
        if let [b] = words.remainder() {
            // The odd byte is the high half of a big-endian word: the low half of a little-endian one.
            le += u64::from(*b);
        }
        while le > 0xFFFF {
            le = (le & 0xFFFF) + (le >> 16);
        }
        let mut wide = u64::from(acc) + u64::from((le as u16).swap_bytes());
        // Down to at most 17 bits, so that callers may keep adding.
        while wide > 0xFFFF_FFFF {
            wide = (wide & 0xFFFF_FFFF) + (wide >> 32);
        }
        let mut s = (wide & 0xFFFF) + (wide >> 16);
        s = (s & 0xFFFF) + (s >> 16);
        s as u32
    }

    pub fn fold(mut acc: u32) -> u16 {
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    /// The checksum field value for `data` (complement of the folded sum).
    pub fn compute(data: &[u8]) -> u16 {
        !fold(sum(0, data))
    }

    /// The pseudo-header sum for either family (RFC 791 / RFC 8200 8.1); the two addresses are of one
    /// family (an IPv4 address beside an IPv6 one is taken as IPv4-mapped).
    pub fn pseudo(src: std::net::IpAddr, dst: std::net::IpAddr, proto: u8, len: usize) -> u32 {
        use std::net::IpAddr;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s.octets(), d.octets(), proto, len),
            (s, d) => {
                let six = |a: IpAddr| match a {
                    IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                    IpAddr::V6(v) => v.octets(),
                };
                super::ipv6::pseudo_sum(&six(s), &six(d), proto, len)
            }
        }
    }

    /// IPv4 pseudo-header sum.
    pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
        let mut acc = sum(0, &src);
        acc = sum(acc, &dst);
        acc + proto as u32 + len as u32
    }
}

pub type Mac = [u8; 6];
pub const BROADCAST: Mac = [0xFF; 6];

pub fn fmt_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

#[cfg(test)]
mod checksum_test {
    use super::checksum::{fold, sum};

    /// The plain RFC 1071 loop, 16 bits at a time, as the reference.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for c in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn wide_sum_agrees_with_the_plain_loop_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for start in 0..9 {
            for len in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1499, 1500, 2991] {
                let d = &data[start..start + len];
                assert_eq!(fold(sum(0, d)), reference(d), "start {start} len {len}");
            }
        }
        // All ones: the sum stays 0xFFFF, never the other zero.
        assert_eq!(fold(sum(0, &[0xFF; 1500])), 0xFFFF);
        // Chained sums and a starting value.
        let (a, b) = data.split_at(1000);
        assert_eq!(fold(sum(sum(0x1_2345, a), b)), fold(sum(0x1_2345, &data)));
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(fold(sum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }
}
