//! ICMPv4 messages the stack sends and understands (RFC 792, RFC 1191).

use super::{checksum, Error, Result};

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// Destination unreachable with its code, next-hop MTU (for code 4), and the offending datagram's start.
    Unreachable {
        code: u8,
        mtu: u16,
        original: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        original: &'a [u8],
    },
    Other {
        kind: u8,
        code: u8,
    },
}

impl<'a> Repr<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Repr<'a>> {
        if b.len() < 8 {
            return Err(Error::Truncated);
        }
        if checksum::fold(checksum::sum(0, b)) != 0xFFFF {
            return Err(Error::Checksum);
        }
        let (kind, code) = (b[0], b[1]);
        let ident = u16::from_be_bytes([b[4], b[5]]);
        let seq = u16::from_be_bytes([b[6], b[7]]);
        Ok(match kind {
            ECHO_REQUEST => Repr::EchoRequest { ident, seq, data: &b[8..] },
            ECHO_REPLY => Repr::EchoReply { ident, seq, data: &b[8..] },
            DEST_UNREACHABLE => Repr::Unreachable { code, mtu: seq, original: &b[8..] },
            TIME_EXCEEDED => Repr::TimeExceeded { code, original: &b[8..] },
            _ => Repr::Other { kind, code },
        })
    }

    pub fn buffer_len(&self) -> usize {
        8 + match self {
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data.len(),
            Repr::Unreachable { original, .. } | Repr::TimeExceeded { original, .. } => original.len(),
            Repr::Other { .. } => 0,
        }
    }

    pub fn emit(&self, out: &mut [u8]) {
        let (kind, code, w, data): (u8, u8, [u8; 4], &[u8]) = match self {
            Repr::EchoRequest { ident, seq, data } => (ECHO_REQUEST, 0, words(*ident, *seq), data),
            Repr::EchoReply { ident, seq, data } => (ECHO_REPLY, 0, words(*ident, *seq), data),
            Repr::Unreachable { code, mtu, original } => (DEST_UNREACHABLE, *code, words(0, *mtu), original),
            Repr::TimeExceeded { code, original } => (TIME_EXCEEDED, *code, [0; 4], original),
            Repr::Other { kind, code } => (*kind, *code, [0; 4], &[]),
        };
        out[0] = kind;
        out[1] = code;
        out[2..4].copy_from_slice(&[0, 0]);
        out[4..8].copy_from_slice(&w);
        out[8..8 + data.len()].copy_from_slice(data);
        let c = checksum::compute(&out[..8 + data.len()]);
        out[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

fn words(a: u16, b: u16) -> [u8; 4] {
    let (x, y) = (a.to_be_bytes(), b.to_be_bytes());
    [x[0], x[1], y[0], y[1]]
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn echo_round_trip_and_checksum() {
        let r = Repr::EchoRequest { ident: 0x1234, seq: 7, data: b"abcdefgh" };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        assert_eq!(Repr::parse(&b).unwrap(), r);
        b[9] ^= 1;
        assert_eq!(Repr::parse(&b), Err(Error::Checksum));
        // Cross-check with etherparse's ICMPv4 checksum.
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        let s = etherparse::Icmpv4Slice::from_slice(&b).unwrap();
        assert_eq!(s.checksum(), s.header().icmp_type.calc_checksum(s.payload()));
    }
}
