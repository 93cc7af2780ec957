//! Ethernet II frames.

use super::{Error, Mac, Result};

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// A checked view over an Ethernet frame.
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub fn new_checked(buf: T) -> Result<Frame<T>> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Frame { buf })
    }
    pub fn dst(&self) -> Mac {
        self.buf.as_ref()[0..6].try_into().unwrap()
    }
    pub fn src(&self) -> Mac {
        self.buf.as_ref()[6..12].try_into().unwrap()
    }
    pub fn ethertype(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// Ethernet header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Repr {
        Repr { dst: f.dst(), src: f.src(), ethertype: f.ethertype() }
    }
    pub fn emit(&self, out: &mut [u8]) {
        out[0..6].copy_from_slice(&self.dst);
        out[6..12].copy_from_slice(&self.src);
        out[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parse_emit() {
        let r = Repr { dst: [1, 2, 3, 4, 5, 6], src: [7, 8, 9, 10, 11, 12], ethertype: ETHERTYPE_ARP };
        let mut b = [0u8; 20];
        r.emit(&mut b);
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&f), r);
        assert_eq!(f.payload().len(), 6);
        assert!(Frame::new_checked(&b[..13]).is_err());
    }
}
