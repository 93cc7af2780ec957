//! TCP segments (RFC 9293) with the options the stack uses: MSS, window scale (RFC 7323), SACK-permitted and
//! SACK blocks (RFC 2018), timestamps (RFC 7323).

use std::net::IpAddr;

use super::{checksum, Error, Result};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;
pub const MIN_HEADER_LEN: usize = 20;

/// A sequence number: 32-bit, compared modulo 2^32 (RFC 1982 serial arithmetic): `seq + n` advances it,
/// `a - b` is the signed distance, and `<`, `<=`, `>`, `>=` compare by that distance. (Not a total order:
/// two numbers 2^31 apart compare as less than each other.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl std::ops::Add<usize> for Seq {
    type Output = Seq;
    fn add(self, n: usize) -> Seq {
        Seq(self.0.wrapping_add(n as u32))
    }
}

impl std::ops::AddAssign<usize> for Seq {
    fn add_assign(&mut self, n: usize) {
        *self = *self + n;
    }
}

impl std::ops::Sub for Seq {
    type Output = i32;
    /// The signed distance from `other` to `self`.
    fn sub(self, other: Seq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl PartialOrd for Seq {
    fn partial_cmp(&self, other: &Seq) -> Option<std::cmp::Ordering> {
        Some((*self - *other).cmp(&0))
    }
}

/// The same operations by name, taking values (for callers that chain them).
impl Seq {
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, n: usize) -> Seq {
        self + n
    }
    pub fn diff(self, other: Seq) -> i32 {
        self - other
    }
    pub fn lt(self, o: Seq) -> bool {
        self < o
    }
    pub fn le(self, o: Seq) -> bool {
        self <= o
    }
    pub fn gt(self, o: Seq) -> bool {
        self > o
    }
    pub fn ge(self, o: Seq) -> bool {
        self >= o
    }
    pub fn max(self, o: Seq) -> Seq {
        if self >= o {
            self
        } else {
            o
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: Seq,
    pub ack: Seq,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: Vec<(Seq, Seq)>,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
}

impl Repr {
    /// Parses and verifies the checksum against the pseudo-header of `src` and `dst` (IPv4 or IPv6),
    /// unless `verified`.
    pub fn parse(b: &[u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>, verified: bool) -> Result<(Repr, &[u8])> {
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let doff = (b[12] >> 4) as usize * 4;
        if doff < MIN_HEADER_LEN || doff > b.len() {
            return Err(Error::Malformed);
        }
        if !verified && checksum::fold(checksum::sum(checksum::pseudo(src.into(), dst.into(), 6, b.len()), b)) != 0xFFFF {
            return Err(Error::Checksum);
        }
        let mut r = Repr {
            src_port: u16::from_be_bytes([b[0], b[1]]),
            dst_port: u16::from_be_bytes([b[2], b[3]]),
            seq: Seq(u32::from_be_bytes(b[4..8].try_into().unwrap())),
            ack: Seq(u32::from_be_bytes(b[8..12].try_into().unwrap())),
            flags: b[13],
            window: u16::from_be_bytes([b[14], b[15]]),
            ..Default::default()
        };
        let mut o = &b[MIN_HEADER_LEN..doff];
        while let Some(&kind) = o.first() {
            match kind {
                0 => break,
                1 => {
                    o = &o[1..];
                    continue;
                }
                _ => {}
            }
            let len = *o.get(1).ok_or(Error::Malformed)? as usize;
            if len < 2 || len > o.len() {
                return Err(Error::Malformed);
            }
            let v = &o[2..len];
            match (kind, len) {
                (2, 4) => r.mss = Some(u16::from_be_bytes([v[0], v[1]])),
                (3, 3) => r.wscale = Some(v[0].min(14)),
                (4, 2) => r.sack_permitted = true,
                (5, _) if (len - 2).is_multiple_of(8) => {
                    for c in v.chunks(8) {
                        r.sack.push((
                            Seq(u32::from_be_bytes(c[0..4].try_into().unwrap())),
                            Seq(u32::from_be_bytes(c[4..8].try_into().unwrap())),
                        ));
                    }
                }
                (8, 10) => {
                    r.timestamp = Some((u32::from_be_bytes(v[0..4].try_into().unwrap()), u32::from_be_bytes(v[4..8].try_into().unwrap())))
                }
                _ => {}
            }
            o = &o[len..];
        }
        Ok((r, &b[doff..]))
    }

    pub fn header_len(&self) -> usize {
        let mut n = MIN_HEADER_LEN;
        if self.mss.is_some() {
            n += 4;
        }
        if self.wscale.is_some() {
            n += 4; // NOP + 3
        }
        if self.sack_permitted {
            n += 4; // NOP NOP + 2
        }
        if self.timestamp.is_some() {
            n += 12; // NOP NOP + 10
        }
        if !self.sack.is_empty() {
            n += 4 + 8 * self.sack.len().min(3); // NOP NOP + 2 + blocks
        }
        n
    }

    /// Writes header and payload. `csum`: fill the checksum (else leave the pseudo-header seed for offload).
    pub fn emit(&self, out: &mut [u8], payload: &[u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>, csum: bool) {
        let hl = self.header_len();
        out[hl..hl + payload.len()].copy_from_slice(payload);
        self.emit_in_place(&mut out[..hl + payload.len()], src, dst, csum);
    }

    /// As `emit`, for a segment whose payload is already in place behind `header_len()` bytes of room:
    /// `out` is the whole segment, header room and payload.
    pub fn emit_in_place(&self, out: &mut [u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>, csum: bool) {
        let hl = self.header_len();
        out[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        out[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        out[12] = ((hl / 4) as u8) << 4;
        out[13] = self.flags;
        out[14..16].copy_from_slice(&self.window.to_be_bytes());
        out[16..20].copy_from_slice(&[0, 0, 0, 0]);
        let mut at = MIN_HEADER_LEN;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(m) = self.mss {
            let m = m.to_be_bytes();
            put(&[2, 4, m[0], m[1]]);
        }
        if let Some(w) = self.wscale {
            put(&[1, 3, 3, w]);
        }
        if self.sack_permitted {
            put(&[1, 1, 4, 2]);
        }
        if let Some((v, e)) = self.timestamp {
            put(&[1, 1, 8, 10]);
            put(&v.to_be_bytes());
            put(&e.to_be_bytes());
        }
        if !self.sack.is_empty() {
            let n = self.sack.len().min(3);
            put(&[1, 1, 5, (2 + 8 * n) as u8]);
            for (a, b) in &self.sack[..n] {
                put(&a.0.to_be_bytes());
                put(&b.0.to_be_bytes());
            }
        }
        let len = out.len();
        let seed = checksum::pseudo(src.into(), dst.into(), 6, len);
        let c = if csum { !checksum::fold(checksum::sum(seed, &out[..len])) } else { checksum::fold(seed) };
        out[16..18].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn options_round_trip_and_checksum_matches_etherparse() {
        let r = Repr {
            src_port: 40000,
            dst_port: 80,
            seq: Seq(0xFFFF_FFF0),
            ack: Seq(5),
            flags: SYN | ACK,
            window: 65535,
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            sack: vec![(Seq(100), Seq(200))],
            timestamp: Some((123456, 654321)),
        };
        let (s, d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut b = vec![0u8; r.header_len() + 3];
        r.emit(&mut b, b"abc", s, d, true);
        let (p, data) = Repr::parse(&b, s, d, false).unwrap();
        assert_eq!(p, r);
        assert_eq!(data, b"abc");
        let ip = etherparse::Ipv4Header::new(b.len() as u16, 64, etherparse::IpNumber::TCP, s, d).unwrap();
        let t = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&ip, b"abc").unwrap());
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert!(Repr::parse(&bad, s, d, false).is_err());
        // A bad option length is malformed, not a panic.
        let mut m = b.clone();
        m[21] = 40;
        assert!(Repr::parse(&m, s, d, true).is_err());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let a = Seq(0xFFFF_FFFF);
        let b = a.add(2);
        assert_eq!(b, Seq(1));
        assert!(a.lt(b) && b.gt(a) && a.le(a));
        assert_eq!(b.diff(a), 2);
    }

    #[test]
    fn sequence_number_operators_compare_modulo_2_32() {
        let a = Seq(0xFFFF_FFF0);
        let mut b = a + 0x20;
        assert_eq!(b, Seq(0x10));
        assert!(a < b);
        assert!(b > a);
        assert!(a <= b);
        assert!(b >= a && a != b);
        assert_eq!(b - a, 0x20);
        assert_eq!(a - b, -0x20);
        b += 1;
        assert_eq!(b, Seq(0x11));
        // Half the space away is the edge of the comparison.
        assert!(Seq(0) < Seq(0x7FFF_FFFF) && Seq(0) > Seq(0x8000_0001));
    }
}
