//! PCI configuration space of the 82574L: 4 KiB (PCIe), IDs, BARs with sizing, and the capability chain
//! PM (0xC8) -> MSI (0xD0) -> PCIe (0xE0) -> MSI-X (0xA0), extended AER (0x100) -> serial number (0x140).

use crate::bytes::{le16, le32, put};
use crate::regs::{BAR0_SIZE, BAR1_SIZE, BAR2_SIZE, BAR3_SIZE, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, MSIX_VECTORS};

pub const CONFIG_SIZE: usize = 4096;
pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x10D3;
pub const SUBSYS_VENDOR_ID: u16 = 0x8086;
pub const SUBSYS_ID: u16 = 0x0000;

pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const BAR0: usize = 0x10;
pub const ROM_BAR: usize = 0x30;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3C;
pub const INTERRUPT_PIN: usize = 0x3D;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAP_LIST: u16 = 1 << 4;

pub const PM_CAP: usize = 0xC8;
pub const MSI_CAP: usize = 0xD0;
pub const PCIE_CAP: usize = 0xE0;
pub const MSIX_CAP: usize = 0xA0;
pub const AER_CAP: usize = 0x100;
pub const DSN_CAP: usize = 0x140;

const MSI_ENABLE: u16 = 1 << 0;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// BAR layout: (offset in config space, size, is I/O).
pub const BARS: [(usize, u64, bool); 4] =
    [(0x10, BAR0_SIZE, false), (0x14, BAR1_SIZE, false), (0x18, BAR2_SIZE, true), (0x1C, BAR3_SIZE, false)];

/// Config space contents plus a per-byte writable mask and a per-byte write-1-to-clear mask.
pub struct ConfigSpace {
    data: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    w1c: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    pub fn new(mac: [u8; 6]) -> ConfigSpace {
        let mut c = ConfigSpace { data: [0; CONFIG_SIZE], wmask: [0; CONFIG_SIZE], w1c: [0; CONFIG_SIZE] };
        c.set16(0x00, VENDOR_ID);
        c.set16(0x02, DEVICE_ID);
        c.set16(COMMAND, 0);
        c.writable16(COMMAND, COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | (1 << 6) | (1 << 8) | COMMAND_INTX_DISABLE);
        c.set16(STATUS, STATUS_CAP_LIST);
        c.w1c16(STATUS, 0xF900); // parity / abort / SERR bits
        c.data[0x08] = 0; // revision
        c.data[0x09] = 0x00; // prog-if
        c.data[0x0A] = 0x00; // subclass: Ethernet
        c.data[0x0B] = 0x02; // class: network
        c.writable8(0x0C, 0xFF); // cache line size
        c.writable8(0x0D, 0xFF); // latency timer
        for (off, _, io) in BARS {
            c.set32(off, if io { 1 } else { 0 });
        }
        c.set16(0x2C, SUBSYS_VENDOR_ID);
        c.set16(0x2E, SUBSYS_ID);
        c.data[CAP_PTR] = PM_CAP as u8;
        c.writable8(INTERRUPT_LINE, 0xFF);
        c.data[INTERRUPT_PIN] = 1;

        // Power management: version 2, D3hot, No_Soft_Reset.
        c.data[PM_CAP] = 0x01;
        c.data[PM_CAP + 1] = MSI_CAP as u8;
        c.set16(PM_CAP + 2, 0x0002 | (1 << 15) | (1 << 14));
        c.set16(PM_CAP + 4, 1 << 3);
        c.writable16(PM_CAP + 4, 0x0103);
        c.w1c16(PM_CAP + 4, 1 << 15);

        // MSI: 64-bit, one vector.
        c.data[MSI_CAP] = 0x05;
        c.data[MSI_CAP + 1] = PCIE_CAP as u8;
        c.set16(MSI_CAP + 2, 1 << 7);
        c.writable16(MSI_CAP + 2, MSI_ENABLE | (7 << 4));
        c.writable32(MSI_CAP + 4, 0xFFFF_FFFC);
        c.writable32(MSI_CAP + 8, 0xFFFF_FFFF);
        c.writable16(MSI_CAP + 12, 0xFFFF);

        // PCI Express v1 endpoint, x1 at 2.5 GT/s.
        c.data[PCIE_CAP] = 0x10;
        c.data[PCIE_CAP + 1] = MSIX_CAP as u8;
        c.set16(PCIE_CAP + 2, 0x0001);
        c.set32(PCIE_CAP + 4, 0x0000_8CC1); // devcap: MPS 256, L0s/L1 latencies, role-based errors
        c.set16(PCIE_CAP + 8, 0x2810); // devctl: MPS 128, MRRS 512, relaxed ordering
        c.writable16(PCIE_CAP + 8, 0x7CFF);
        c.w1c16(PCIE_CAP + 10, 0x000F);
        c.set32(PCIE_CAP + 12, 0x0003_0C11); // linkcap: 2.5 GT/s, x1, ASPM L0s+L1
        c.writable16(PCIE_CAP + 16, 0x01C3); // linkctl: ASPM, RCB, common clock, extended sync
        c.set16(PCIE_CAP + 18, 0x1011); // linkstat: 2.5 GT/s, x1, slot clock

        // MSI-X: 5 vectors, table and PBA in BAR3.
        c.data[MSIX_CAP] = 0x11;
        c.data[MSIX_CAP + 1] = 0;
        c.set16(MSIX_CAP + 2, (MSIX_VECTORS - 1) as u16);
        c.writable16(MSIX_CAP + 2, MSIX_ENABLE | MSIX_FUNCTION_MASK);
        c.set32(MSIX_CAP + 4, MSIX_TABLE_OFFSET as u32 | 3);
        c.set32(MSIX_CAP + 8, MSIX_PBA_OFFSET as u32 | 3);

        // AER, version 1, then the device serial number.
        c.set32(AER_CAP, 0x0001 | (1 << 16) | ((DSN_CAP as u32) << 20));
        c.w1c32(AER_CAP + 4, 0x001F_F030); // uncorrectable status
        c.writable32(AER_CAP + 8, 0x001F_F030); // uncorrectable mask
        c.writable32(AER_CAP + 12, 0x001F_F030); // uncorrectable severity
        c.set32(AER_CAP + 12, 0x0006_2030);
        c.w1c32(AER_CAP + 16, 0x0000_31C1); // correctable status
        c.writable32(AER_CAP + 20, 0x0000_31C1); // correctable mask
        c.set32(AER_CAP + 20, 0x0000_2000);
        c.writable32(AER_CAP + 24, 0x0000_0140); // capabilities and control

        c.set32(DSN_CAP, 0x0003 | (1 << 16));
        let dsn = [mac[5], mac[4], mac[3], 0xFE, 0xFF, mac[2], mac[1], mac[0]];
        put(&mut c.data, DSN_CAP + 4, &dsn);
        c
    }

    // Layout helpers: offsets are the capability layout's constants, all inside config space.
    fn set16(&mut self, off: usize, v: u16) {
        put(&mut self.data, off, &v.to_le_bytes());
    }
    fn set32(&mut self, off: usize, v: u32) {
        put(&mut self.data, off, &v.to_le_bytes());
    }
    fn writable8(&mut self, off: usize, m: u8) {
        put(&mut self.wmask, off, &[m]);
    }
    fn writable16(&mut self, off: usize, m: u16) {
        put(&mut self.wmask, off, &m.to_le_bytes());
    }
    fn writable32(&mut self, off: usize, m: u32) {
        put(&mut self.wmask, off, &m.to_le_bytes());
    }
    fn w1c16(&mut self, off: usize, m: u16) {
        put(&mut self.w1c, off, &m.to_le_bytes());
    }
    fn w1c32(&mut self, off: usize, m: u32) {
        put(&mut self.w1c, off, &m.to_le_bytes());
    }

    /// A 16-bit field; 0 outside config space.
    pub fn read16(&self, off: usize) -> u16 {
        le16(&self.data, off).unwrap_or(0)
    }
    /// A 32-bit field; 0 outside config space.
    pub fn read32(&self, off: usize) -> u32 {
        le32(&self.data, off).unwrap_or(0)
    }

    /// Reads `buf.len()` bytes at `off`; `false` when the range leaves config space.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> bool {
        let Some(end) = (off as usize).checked_add(buf.len()) else { return false };
        if off >= CONFIG_SIZE as u64 || end > CONFIG_SIZE {
            return false;
        }
        match self.data.get(off as usize..end) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    /// Writes through the masks. BARs are handled as sizing registers. `false` when out of range.
    pub fn write(&mut self, off: u64, buf: &[u8]) -> bool {
        let Some(end) = (off as usize).checked_add(buf.len()) else { return false };
        if off >= CONFIG_SIZE as u64 || end > CONFIG_SIZE {
            return false;
        }
        let off = off as usize;
        for (i, &b) in buf.iter().enumerate() {
            let a = off + i;
            if let Some(&(bar, size, io)) = BARS.iter().find(|(o, _, _)| a >= *o && a < *o + 4) {
                // Compose the byte into the BAR's dword and re-apply the size mask.
                let mut v = self.read32(bar).to_le_bytes();
                put(&mut v, a - bar, &[b]);
                let raw = u32::from_le_bytes(v);
                let mask = !(size as u32 - 1);
                let v = (raw & mask) | if io { 1 } else { 0 };
                self.set32(bar, v);
                continue;
            }
            let (Some(&m), Some(&c), Some(d)) = (self.wmask.get(a), self.w1c.get(a), self.data.get_mut(a)) else { return false };
            *d = (*d & !m) | (b & m);
            *d &= !(b & c);
        }
        true
    }

    pub fn command(&self) -> u16 {
        self.read16(COMMAND)
    }
    pub fn bus_master(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }
    pub fn msi_enabled(&self) -> bool {
        self.read16(MSI_CAP + 2) & MSI_ENABLE != 0
    }
    pub fn msix_enabled(&self) -> bool {
        self.read16(MSIX_CAP + 2) & MSIX_ENABLE != 0
    }
    pub fn msix_masked(&self) -> bool {
        self.read16(MSIX_CAP + 2) & MSIX_FUNCTION_MASK != 0
    }
    /// Reflects the INTx line in the status register's Interrupt Status bit.
    pub fn set_interrupt_status(&mut self, on: bool) {
        let s = self.read16(STATUS);
        self.set16(STATUS, if on { s | STATUS_INTERRUPT } else { s & !STATUS_INTERRUPT });
    }
    /// Function-level state back to power-on (used on DEVICE_RESET).
    pub fn reset(&mut self, mac: [u8; 6]) {
        *self = ConfigSpace::new(mac);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn cs() -> ConfigSpace {
        ConfigSpace::new([0x52, 0x54, 0, 0x12, 0x34, 0x56])
    }

    #[test]
    fn ids_and_class() {
        let c = cs();
        assert_eq!(c.read16(0), 0x8086);
        assert_eq!(c.read16(2), 0x10D3);
        assert_eq!(c.read32(8) >> 8, 0x020000);
        assert_eq!(c.data[INTERRUPT_PIN], 1);
        assert_eq!(c.read16(STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
    }

    #[test]
    fn capability_chain() {
        let c = cs();
        let mut ids = Vec::new();
        let mut p = c.data[CAP_PTR] as usize;
        while p != 0 {
            ids.push((p, c.data[p]));
            p = c.data[p + 1] as usize;
        }
        assert_eq!(ids, vec![(0xC8, 0x01), (0xD0, 0x05), (0xE0, 0x10), (0xA0, 0x11)]);
        // MSI-X: 5 vectors, table BIR 3 at 0, PBA BIR 3 at 0x2000.
        assert_eq!(c.read16(MSIX_CAP + 2) & 0x7FF, 4);
        assert_eq!(c.read32(MSIX_CAP + 4), 3);
        assert_eq!(c.read32(MSIX_CAP + 8), 0x2003);
        // Extended: AER then DSN, then end.
        assert_eq!(c.read32(0x100) & 0xFFFF, 1);
        assert_eq!(c.read32(0x100) >> 20, 0x140);
        assert_eq!(c.read32(0x140) & 0xFFFF, 3);
        assert_eq!(c.read32(0x140) >> 20, 0);
    }

    #[test]
    fn bar_sizing() {
        let mut c = cs();
        for (off, size, io) in BARS {
            c.write(off as u64, &0xFFFF_FFFFu32.to_le_bytes());
            let v = c.read32(off);
            let sz = !(v & if io { !0x3 } else { !0xF }) + 1;
            assert_eq!(sz as u64, size, "BAR at {off:#x}");
            assert_eq!(v & 1, io as u32);
            c.write(off as u64, &0xFEB0_0000u32.to_le_bytes());
            assert_eq!(c.read32(off) & !0xF, 0xFEB0_0000 & !(size as u32 - 1) & !0xF);
        }
        // No expansion ROM: sizing reads 0.
        c.write(ROM_BAR as u64, &0xFFFF_F800u32.to_le_bytes());
        assert_eq!(c.read32(ROM_BAR), 0);
        // Unused BARs 4 and 5 stay 0.
        c.write(0x20, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(c.read32(0x20), 0);
    }

    #[test]
    fn command_and_masks() {
        let mut c = cs();
        assert!(!c.bus_master());
        c.write(COMMAND as u64, &0xFFFFu16.to_le_bytes());
        assert!(c.bus_master());
        assert_eq!(c.command(), 0x0547);
        // Read-only IDs ignore writes.
        c.write(0, &0u32.to_le_bytes());
        assert_eq!(c.read16(0), 0x8086);
        // MSI and MSI-X enables.
        assert!(!c.msi_enabled() && !c.msix_enabled());
        c.write((MSIX_CAP + 2) as u64, &0x8000u16.to_le_bytes());
        assert!(c.msix_enabled());
        assert_eq!(c.read16(MSIX_CAP + 2) & 0x7FF, 4, "table size is read-only");
        c.write((MSI_CAP + 2) as u64, &1u16.to_le_bytes());
        assert!(c.msi_enabled());
        // Out-of-range accesses are refused.
        assert!(!c.write(4095, &[0, 0]));
        let mut b = [0u8; 4];
        assert!(!c.read(4094, &mut b));
        assert!(!c.read(u64::MAX, &mut b));
    }
}
