//! UDP datagrams (RFC 768).

use std::net::IpAddr;

use super::{checksum, Error, Result};

pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    /// Parses and verifies the checksum against the pseudo-header of `src` and `dst`. Over IPv4 a zero
    /// checksum means none was sent; over IPv6 one is required (RFC 8200 8.1) and zero is refused.
    pub fn parse(b: &[u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Result<(Repr, &[u8])> {
        let (src, dst) = (src.into(), dst.into());
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::Malformed);
        }
        let ck = u16::from_be_bytes([b[6], b[7]]);
        if ck == 0 && src.is_ipv6() {
            return Err(Error::Malformed);
        }
        if ck != 0 && checksum::fold(checksum::sum(checksum::pseudo(src, dst, 17, len), &b[..len])) != 0xFFFF {
            return Err(Error::Checksum);
        }
        let r =
            Repr { src_port: u16::from_be_bytes([b[0], b[1]]), dst_port: u16::from_be_bytes([b[2], b[3]]), payload_len: len - HEADER_LEN };
        Ok((r, &b[HEADER_LEN..len]))
    }

    /// Writes header and payload with the checksum (0 is sent as 0xFFFF).
    pub fn emit(&self, out: &mut [u8], payload: &[u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>) {
        let len = HEADER_LEN + payload.len();
        out[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        out[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        out[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        out[6..8].copy_from_slice(&[0, 0]);
        out[8..len].copy_from_slice(payload);
        let mut c = !checksum::fold(checksum::sum(checksum::pseudo(src.into(), dst.into(), 17, len), &out[..len]));
        if c == 0 {
            c = 0xFFFF;
        }
        out[6..8].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn emit_matches_etherparse_and_parse_verifies() {
        let (s, d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let r = Repr { src_port: 5353, dst_port: 53, payload_len: 5 };
        let mut b = [0u8; 13];
        r.emit(&mut b, b"hello", s, d);
        let ip = etherparse::Ipv4Header::new(13, 64, etherparse::IpNumber::UDP, s, d).unwrap();
        let u = etherparse::UdpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&ip, b"hello").unwrap());
        let (p, data) = Repr::parse(&b, s, d).unwrap();
        assert_eq!((p, data), (r, &b"hello"[..]));
        let mut bad = b;
        bad[9] ^= 1;
        assert_eq!(Repr::parse(&bad, s, d), Err(Error::Checksum));
        let mut short = b;
        short[5] = 20;
        assert_eq!(Repr::parse(&short, s, d), Err(Error::Malformed));
    }
}
