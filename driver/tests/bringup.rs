//! Bring-up against a scripted card (a fake transport) to check that every failure Linux would refuse to
//! continue past is a clear error here too.

use driver::dma::DmaRegion;
use driver::transport::{IrqKind, Result, Transport};
use driver::{Config, DriverError, E1000e, IrqMode, NetDev};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

struct FakeCard {
    regs: HashMap<u32, u32>,
    vendor_device: u32,
    nvm: Vec<u16>,
    phy_id: (u16, u16),
    link: bool,
    writes: Vec<(u32, u32)>,
}

impl FakeCard {
    fn good() -> FakeCard {
        let mut nvm = vec![0u16; 64];
        nvm[0] = 0x5452;
        nvm[1] = 0x1200;
        nvm[2] = 0x5634;
        let s: u16 = nvm[..63].iter().fold(0u16, |a, &b| a.wrapping_add(b));
        nvm[63] = 0xBABAu16.wrapping_sub(s);
        FakeCard { regs: HashMap::new(), vendor_device: 0x10D3_8086, nvm, phy_id: (0x0141, 0x0CB1), link: true, writes: Vec::new() }
    }
}

impl Transport for FakeCard {
    fn read32(&mut self, off: u32) -> Result<u32> {
        Ok(match off {
            0x8 => (if self.link { 0x83 } else { 0 }) | if self.regs.get(&0).copied().unwrap_or(0) & 4 != 0 { 0 } else { 1 << 19 },
            0x10 => 1 << 9,
            0x5400 => 0x1200_5452,
            0x5404 => 0x8000_5634,
            o => self.regs.get(&o).copied().unwrap_or(0),
        })
    }
    fn write32(&mut self, off: u32, v: u32) -> Result<()> {
        self.writes.push((off, v));
        let v = match off {
            0x14 => {
                let a = ((v >> 2) & 0x3FFF) as usize;
                ((self.nvm.get(a).copied().unwrap_or(0xFFFF) as u32) << 16) | 2
            }
            0x20 => {
                let reg = (v >> 16) & 0x1F;
                let data = match reg {
                    2 => self.phy_id.0,
                    3 => self.phy_id.1,
                    _ => 0,
                };
                (v & 0xFFFF_0000) | data as u32 | (1 << 28)
            }
            _ => v,
        };
        self.regs.insert(off, v);
        Ok(())
    }
    fn config_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut cfg = [0u8; 256];
        cfg[..4].copy_from_slice(&self.vendor_device.to_le_bytes());
        buf.copy_from_slice(&cfg[off as usize..off as usize + buf.len()]);
        Ok(())
    }
    fn config_write(&mut self, _off: u64, _buf: &[u8]) -> Result<()> {
        Ok(())
    }
    fn map_dma(&mut self, region: &mut DmaRegion, iova: u64) -> Result<()> {
        region.iova = iova;
        Ok(())
    }
    fn irq_kinds(&mut self) -> Vec<(IrqKind, u32)> {
        vec![]
    }
    fn enable_irqs(&mut self, _kind: IrqKind, _fds: &[&OwnedFd]) -> Result<()> {
        Ok(())
    }
    fn disable_irqs(&mut self, _kind: IrqKind) -> Result<()> {
        Ok(())
    }
    fn unmask_intx(&mut self) -> Result<()> {
        Ok(())
    }
    fn reset(&mut self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

fn cfg() -> Config {
    Config { irq: IrqMode::BusyPoll, link_timeout: Duration::from_millis(100), tx_ring: 16, rx_ring: 16, ..Default::default() }
}

#[test]
fn good_card_comes_up_with_the_mac_from_rar0() {
    let d = E1000e::open(Box::new(FakeCard::good()), cfg()).unwrap();
    assert_eq!(d.mac(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert!(d.features().tso);
}

#[test]
fn wrong_device_id_is_refused() {
    let mut c = FakeCard::good();
    c.vendor_device = 0x100E_8086; // an 82540EM
    match E1000e::open(Box::new(c), cfg()) {
        Err(DriverError::WrongDevice { vendor: 0x8086, device: 0x100E }) => {}
        r => panic!("{:?}", r.err()),
    }
}

#[test]
fn bad_nvm_checksum_is_refused() {
    let mut c = FakeCard::good();
    c.nvm[5] ^= 1;
    match E1000e::open(Box::new(c), cfg()) {
        Err(DriverError::BadNvmChecksum(s)) => assert_ne!(s, 0xBABA),
        r => panic!("{:?}", r.err()),
    }
}

#[test]
fn unknown_phy_is_refused() {
    let mut c = FakeCard::good();
    c.phy_id = (0x0141, 0x0C20);
    let e = E1000e::open(Box::new(c), cfg()).err().unwrap();
    assert!(e.to_string().contains("PHY"), "{e}");
}

#[test]
fn no_link_is_a_timeout_error() {
    let mut c = FakeCard::good();
    c.link = false;
    match E1000e::open(Box::new(c), cfg()) {
        Err(DriverError::LinkTimeout(t)) => assert_eq!(t, Duration::from_millis(100)),
        r => panic!("{:?}", r.err()),
    }
}

#[test]
fn bad_offload_offsets_are_refused_before_the_card_sees_them() {
    let mut d = E1000e::open(Box::new(FakeCard::good()), cfg()).unwrap();
    let mut p = vec![driver::TxPacket {
        data: vec![0u8; 60],
        csum: Some(driver::TxCsum { l3: 14, l4: 200, ipv4: true, tcp: true }),
        tso: None,
        vlan: None,
    }];
    assert!(matches!(d.transmit(&mut p), Err(DriverError::BadPacket(_))));
    let mut p = vec![driver::TxPacket::plain(vec![0u8; 9000])];
    assert!(matches!(d.transmit(&mut p), Err(DriverError::BadPacket(_))));
}
