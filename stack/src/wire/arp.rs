//! ARP for IPv4 over Ethernet (RFC 826).

use super::{Error, Mac, Result};

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: [u8; 4],
    pub target_mac: Mac,
    pub target_ip: [u8; 4],
}

impl Repr {
    pub fn parse(b: &[u8]) -> Result<Repr> {
        if b.len() < LEN {
            return Err(Error::Truncated);
        }
        // Ethernet hardware type, IPv4 protocol type, address lengths 6 and 4.
        if b[0..2] != [0, 1] || b[2..4] != [0x08, 0x00] || b[4] != 6 || b[5] != 4 {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            op: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: b[8..14].try_into().unwrap(),
            sender_ip: b[14..18].try_into().unwrap(),
            target_mac: b[18..24].try_into().unwrap(),
            target_ip: b[24..28].try_into().unwrap(),
        })
    }
    pub fn emit(&self, out: &mut [u8]) {
        out[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        out[6..8].copy_from_slice(&self.op.to_be_bytes());
        out[8..14].copy_from_slice(&self.sender_mac);
        out[14..18].copy_from_slice(&self.sender_ip);
        out[18..24].copy_from_slice(&self.target_mac);
        out[24..28].copy_from_slice(&self.target_ip);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn request_bytes_and_round_trip() {
        let r =
            Repr { op: OP_REQUEST, sender_mac: [2, 0, 0, 0, 0, 1], sender_ip: [10, 0, 0, 1], target_mac: [0; 6], target_ip: [10, 0, 0, 2] };
        let mut b = [0u8; LEN];
        r.emit(&mut b);
        assert_eq!(&b[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(Repr::parse(&b).unwrap(), r);
        assert_eq!(Repr::parse(&b[..27]), Err(Error::Truncated));
        b[4] = 8;
        assert_eq!(Repr::parse(&b), Err(Error::Unsupported));
    }
}
