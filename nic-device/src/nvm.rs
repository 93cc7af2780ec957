//! The NVM (EEPROM) image read through EERD: 64 words whose sum over 0x00..=0x3F is 0xBABA.

pub const WORDS: usize = 64;
pub const CHECKSUM_WORD: usize = 0x3F;
pub const NVM_SUM: u16 = 0xBABA;

#[derive(Clone)]
pub struct Nvm {
    words: [u16; WORDS],
}

impl Nvm {
    /// An image for `mac` with the 82574L's IDs and a valid checksum.
    pub fn new(mac: [u8; 6]) -> Nvm {
        let mut w = [0u16; WORDS];
        w[0] = u16::from_le_bytes([mac[0], mac[1]]);
        w[1] = u16::from_le_bytes([mac[2], mac[3]]);
        w[2] = u16::from_le_bytes([mac[4], mac[5]]);
        w[3] = 0x0420; // compatibility
        w[4] = 0xF746; // ID LED settings: "use the default"
        w[5] = 0x1080; // image version 1.8-0
        w[8] = 0xE469; // PBA number, printed by the driver as E46981-000
        w[9] = 0x8100;
        w[0x0A] = 0x026B; // initialization control 1
        w[0x0B] = 0x0000; // subsystem ID
        w[0x0C] = 0x8086; // subsystem vendor ID
        w[0x0D] = 0x10D3; // device ID
        w[0x0E] = 0x8086; // vendor ID
        w[0x0F] = 0x3040; // initialization control 2
        w[0x24] = 0x0000; // initialization control 3 (APM off)
        let mut n = Nvm { words: w };
        n.fix_checksum();
        n
    }

    fn fix_checksum(&mut self) {
        let sum = self.words[..CHECKSUM_WORD].iter().fold(0u16, |a, &b| a.wrapping_add(b));
        self.words[CHECKSUM_WORD] = NVM_SUM.wrapping_sub(sum);
    }

    /// Breaks the checksum (fault `nvm-checksum`): the words no longer sum to 0xBABA.
    pub fn corrupt_checksum(&mut self) {
        self.words[CHECKSUM_WORD] = self.words[CHECKSUM_WORD].wrapping_add(0x5A5A);
    }

    /// The word at `addr`, `None` beyond the image.
    pub fn read(&self, addr: usize) -> Option<u16> {
        self.words.get(addr).copied()
    }

    pub fn sum(&self) -> u16 {
        self.words[..=CHECKSUM_WORD].iter().fold(0u16, |a, &b| a.wrapping_add(b))
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        for (pair, w) in m.chunks_exact_mut(2).zip(&self.words) {
            pair.copy_from_slice(&w.to_le_bytes());
        }
        m
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn checksum_is_0xbaba_for_any_mac() {
        for mac in [[0u8; 6], [0x52, 0x54, 0, 0x12, 0x34, 0x56], [0xFF; 6], [0x02, 0xAB, 0xCD, 0xEF, 0x01, 0x99]] {
            let n = Nvm::new(mac);
            assert_eq!(n.sum(), 0xBABA);
            assert_eq!(n.mac(), mac);
            assert_eq!(n.read(0x0D), Some(0x10D3));
        }
        // Hand-computed: MAC 52:54:00:12:34:56 gives words 0x5452, 0x1200, 0x5634.
        let n = Nvm::new([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!((n.read(0), n.read(1), n.read(2)), (Some(0x5452), Some(0x1200), Some(0x5634)));
        assert_eq!(n.read(64), None);
    }
}
