//! IPv4 headers (RFC 791).

use super::{checksum, Error, Result};

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;
/// The loopback address every host holds (on `lo`), the source of what it sends into 127.0.0.0/8.
pub const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

/// 127.0.0.0/8: the host itself, never a wire (RFC 1122 3.2.1.3).
pub fn is_loopback(a: [u8; 4]) -> bool {
    a[0] == 127
}

/// A checked view: version 4, IHL within the buffer, total length within the buffer.
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Packet<T>> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let ihl = (b[0] & 0xF) as usize * 4;
        let total = u16::from_be_bytes([b[2], b[3]]) as usize;
        if ihl < MIN_HEADER_LEN || total < ihl || total > b.len() {
            return Err(Error::Malformed);
        }
        Ok(Packet { buf })
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn header_len(&self) -> usize {
        (self.b()[0] & 0xF) as usize * 4
    }
    pub fn total_len(&self) -> usize {
        u16::from_be_bytes([self.b()[2], self.b()[3]]) as usize
    }
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    pub fn flags_frag(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        (self.flags_frag() & 0x1FFF) as usize * 8
    }
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }
    pub fn src(&self) -> [u8; 4] {
        self.b()[12..16].try_into().unwrap()
    }
    pub fn dst(&self) -> [u8; 4] {
        self.b()[16..20].try_into().unwrap()
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(0, &self.b()[..self.header_len()])) == 0xFFFF
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }
}

/// The fields we send (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// In bytes, a multiple of 8.
    pub frag_offset: usize,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
            payload_len: p.total_len() - p.header_len(),
        }
    }
    pub fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }
    /// Writes the 20-byte header with its checksum.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = 0x45;
        out[1] = 0;
        out[2..4].copy_from_slice(&((MIN_HEADER_LEN + self.payload_len) as u16).to_be_bytes());
        out[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let mut ff = (self.frag_offset / 8) as u16 & 0x1FFF;
        if self.dont_frag {
            ff |= FLAG_DF;
        }
        if self.more_frags {
            ff |= FLAG_MF;
        }
        out[6..8].copy_from_slice(&ff.to_be_bytes());
        out[8] = self.ttl;
        out[9] = self.protocol;
        out[10..12].copy_from_slice(&[0, 0]);
        out[12..16].copy_from_slice(&self.src);
        out[16..20].copy_from_slice(&self.dst);
        let c = checksum::compute(&out[..MIN_HEADER_LEN]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7: a well-known header.
    const HDR: [u8; 20] =
        [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];

    #[test]
    fn parse_known_header() {
        let mut b = HDR.to_vec();
        b.resize(0x73, 0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Repr::parse(&p);
        assert_eq!(
            (r.src, r.dst, r.protocol, r.ttl, r.dont_frag, r.payload_len),
            ([192, 168, 0, 1], [192, 168, 0, 199], 17, 64, true, 0x73 - 20)
        );
        let mut out = [0u8; 20];
        r.emit(&mut out);
        assert_eq!(out, HDR);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut b = HDR.to_vec();
        b.resize(0x73, 0);
        assert_eq!(Packet::new_checked(&b[..0x72]).err(), Some(Error::Malformed), "total length beyond buffer");
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert!(Packet::new_checked(&v6[..]).is_err());
        let mut ihl = b.clone();
        ihl[0] = 0x44;
        assert!(Packet::new_checked(&ihl[..]).is_err());
        assert_eq!(Packet::new_checked(&b[..10]).err(), Some(Error::Truncated));
    }
}
