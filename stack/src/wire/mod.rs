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
    /// One's-complement sum of `data` added to `acc` (not folded).
    pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc = acc.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
            if acc >= 0xFFFF_0000 {
                acc = (acc & 0xFFFF) + (acc >> 16);
            }
        }
        if let [b] = chunks.remainder() {
            acc = acc.wrapping_add((*b as u32) << 8);
        }
        acc
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
