//! The 82574L's integrated PHY (BME1000) behind MDIC: identity, autonegotiation, power-down and link state.

use std::collections::HashMap;

pub const PHY_ADDR: u32 = 1;
pub const BMCR: u8 = 0x00;
pub const BMSR: u8 = 0x01;
pub const PHYID1: u8 = 0x02;
pub const PHYID2: u8 = 0x03;
pub const ANAR: u8 = 0x04;
pub const LPA: u8 = 0x05;
pub const ANER: u8 = 0x06;
pub const CTRL1000: u8 = 0x09;
pub const STAT1000: u8 = 0x0A;
pub const ESTATUS: u8 = 0x0F;
pub const PSCR: u8 = 0x10;
pub const PSSR: u8 = 0x11;
pub const RX_ERR_CNT: u8 = 0x15;
pub const PAGE_SELECT: u8 = 0x16;

pub const BMCR_SPEED1000: u16 = 1 << 6;
pub const BMCR_FULLDPLX: u16 = 1 << 8;
pub const BMCR_ANRESTART: u16 = 1 << 9;
pub const BMCR_PDOWN: u16 = 1 << 11;
pub const BMCR_LOOPBACK: u16 = 1 << 14;
pub const BMCR_ANENABLE: u16 = 1 << 12;
pub const BMCR_RESET: u16 = 1 << 15;
pub const BMSR_LSTATUS: u16 = 1 << 2;
pub const BMSR_ANEGCOMPLETE: u16 = 1 << 5;
/// PSSR: speed 1000 (15:14 = 10b), full duplex, speed/duplex resolved, real-time link.
pub const PSSR_LINK_1000FD: u16 = (2 << 14) | (1 << 13) | (1 << 11) | (1 << 10);

pub const ID1: u16 = 0x0141;
pub const ID2: u16 = 0x0CB1;

pub struct Phy {
    page0: [u16; 32],
    other_pages: HashMap<(u16, u8), u16>,
    /// Whether the wire has carrier (the backend is attached).
    carrier: bool,
}

/// What a PHY register write did to the link.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    None,
    Changed,
}

impl Default for Phy {
    fn default() -> Self {
        Phy::new()
    }
}

impl Phy {
    pub fn new() -> Phy {
        let mut p = Phy { page0: [0; 32], other_pages: HashMap::new(), carrier: true };
        p.reset();
        p
    }

    fn get(&self, reg: u8) -> u16 {
        self.page0.get(usize::from(reg)).copied().unwrap_or(0)
    }

    fn set(&mut self, reg: u8, v: u16) {
        if let Some(r) = self.page0.get_mut(usize::from(reg)) {
            *r = v;
        }
    }

    pub fn reset(&mut self) {
        self.page0 = [0; 32];
        self.set(BMCR, BMCR_ANENABLE | BMCR_FULLDPLX | BMCR_SPEED1000);
        self.set(BMSR, 0x7949);
        self.set(PHYID1, ID1);
        self.set(PHYID2, ID2);
        self.set(ANAR, 0x0DE1);
        self.set(LPA, 0);
        self.set(ANER, 0x0004);
        self.set(CTRL1000, 0x0E00);
        self.set(ESTATUS, 0x3000);
        self.set(PSCR, 0x0068);
        self.other_pages.clear();
        self.update_link();
    }

    pub fn set_carrier(&mut self, on: bool) -> bool {
        let before = self.link_up();
        self.carrier = on;
        self.update_link();
        before != self.link_up()
    }

    /// Autonegotiation resolves at once: the partner is a 1000BASE-T full-duplex peer.
    fn update_link(&mut self) {
        // In loopback the PHY's link is its own: up without a partner.
        let up = (self.carrier || self.loopback()) && self.get(BMCR) & BMCR_PDOWN == 0;
        if up {
            self.set(BMSR, self.get(BMSR) | BMSR_LSTATUS | BMSR_ANEGCOMPLETE);
            self.set(LPA, 0x45E1);
            self.set(STAT1000, 0x3C00 | 0x0800); // local and remote receiver OK, partner 1000FD
            self.set(ANER, 0x000F);
            self.set(PSSR, PSSR_LINK_1000FD);
        } else {
            self.set(BMSR, self.get(BMSR) & !(BMSR_LSTATUS | BMSR_ANEGCOMPLETE));
            self.set(LPA, 0);
            self.set(STAT1000, 0);
            self.set(PSSR, 0);
        }
    }

    /// BMCR loopback: what the MAC sends comes back from the PHY.
    pub fn loopback(&self) -> bool {
        self.get(BMCR) & BMCR_LOOPBACK != 0
    }

    pub fn link_up(&self) -> bool {
        self.get(BMSR) & BMSR_LSTATUS != 0
    }

    fn page(&self) -> u16 {
        self.get(PAGE_SELECT)
    }

    pub fn read(&self, reg: u8) -> u16 {
        let reg = reg & 0x1F;
        if self.page() == 0 || reg == PAGE_SELECT || reg < 0x10 {
            self.get(reg)
        } else {
            self.other_pages.get(&(self.page(), reg)).copied().unwrap_or(0)
        }
    }

    pub fn write(&mut self, reg: u8, val: u16) -> LinkEvent {
        let reg = reg & 0x1F;
        let before = self.link_up();
        match reg {
            BMCR => {
                if val & BMCR_RESET != 0 {
                    let pdown = val & BMCR_PDOWN;
                    self.reset();
                    self.set(BMCR, self.get(BMCR) | pdown);
                } else {
                    self.set(BMCR, val & !(BMCR_RESET | BMCR_ANRESTART));
                }
                self.update_link();
            }
            BMSR | PHYID1 | PHYID2 | LPA | ANER | STAT1000 | ESTATUS | PSSR => {}
            PAGE_SELECT => self.set(PAGE_SELECT, val),
            _ if self.page() != 0 && reg >= 0x10 => {
                self.other_pages.insert((self.page(), reg), val);
            }
            _ => self.set(reg, val),
        }
        if before != self.link_up() {
            LinkEvent::Changed
        } else {
            LinkEvent::None
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn identity_and_link() {
        let mut p = Phy::new();
        assert_eq!(((p.read(PHYID1) as u32) << 16) | p.read(PHYID2) as u32, 0x01410CB1);
        assert!(p.link_up());
        assert_eq!(p.read(BMSR) & (BMSR_LSTATUS | BMSR_ANEGCOMPLETE), BMSR_LSTATUS | BMSR_ANEGCOMPLETE);
        assert_eq!(p.read(PSSR) >> 14, 2, "1000 Mb/s");
        // Power down drops the link; power up restores it.
        assert_eq!(p.write(BMCR, p.read(BMCR) | BMCR_PDOWN), LinkEvent::Changed);
        assert!(!p.link_up());
        assert_eq!(p.write(BMCR, (p.read(BMCR) & !BMCR_PDOWN) | BMCR_ANRESTART), LinkEvent::Changed);
        assert!(p.link_up());
        assert_eq!(p.read(BMCR) & BMCR_ANRESTART, 0, "self-clearing");
        // Reset is self-clearing and keeps identity.
        p.write(ANAR, 0x01E1);
        p.write(BMCR, BMCR_RESET | BMCR_ANENABLE);
        assert_eq!(p.read(BMCR) & BMCR_RESET, 0);
        assert_eq!(p.read(ANAR), 0x0DE1);
        // Read-only registers ignore writes.
        p.write(PHYID1, 0);
        assert_eq!(p.read(PHYID1), ID1);
        // Carrier loss.
        assert!(p.set_carrier(false));
        assert!(!p.link_up());
    }

    #[test]
    fn paged_registers() {
        let mut p = Phy::new();
        p.write(PAGE_SELECT, 2);
        p.write(0x15, 0x1234);
        assert_eq!(p.read(0x15), 0x1234);
        p.write(PAGE_SELECT, 0);
        assert_eq!(p.read(0x15), 0);
        assert_eq!(p.read(PHYID2), ID2);
    }
}
