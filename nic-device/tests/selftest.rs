//! What Linux's e1000e offline self-test (`ethtool -t eth0 offline`) asks of the register file: its register
//! test, transcribed from the driver's table for an 82574L (pattern tests: write each of four patterns masked
//! by the write mask, read back the pattern masked by the register's defined bits; set-and-check tests;
//! STATUS read-only; every RAR high and MTA entry).

mod common;

use common::*;
use nic_device::regs::*;

const PATTERNS: [u32; 4] = [0x5A5A_5A5A, 0xA5A5_A5A5, 0x0000_0000, 0xFFFF_FFFF];

fn pattern_test(n: &mut nic_device::nic::Nic, reg: u32, mask: u32, write: u32) {
    for p in PATTERNS {
        n.mmio_write(reg, p & write);
        let got = n.mmio_read(reg);
        assert_eq!(got, p & write & mask, "pattern test failed (reg {reg:#07x}): wrote {:#010x}", p & write);
    }
}

fn set_and_check(n: &mut nic_device::nic::Nic, reg: u32, mask: u32, write: u32) {
    n.mmio_write(reg, write & mask);
    assert_eq!(n.mmio_read(reg) & mask, write & mask, "set/check test failed (reg {reg:#07x})");
}

#[test]
fn linux_register_test_passes() {
    let mut n = nic();
    // STATUS is read-only for the bits the driver toggles.
    let toggle = 0x7FFF_F033;
    let before = n.mmio_read(STATUS) & toggle;
    n.mmio_write(STATUS, toggle);
    assert_eq!(n.mmio_read(STATUS) & toggle, before, "STATUS changed by a write");
    for (reg, mask, write) in [
        (FCAL, 0xFFFF_FFFF, 0xFFFF_FFFF),
        (FCAH, 0x0000_FFFF, 0xFFFF_FFFF),
        (FCT, 0x0000_FFFF, 0xFFFF_FFFF),
        (VET, 0x0000_FFFF, 0xFFFF_FFFF),
        (RDTR, 0x0000_FFFF, 0xFFFF_FFFF),
        (RDBAH0, 0xFFFF_FFFF, 0xFFFF_FFFF),
        (RDLEN0, 0x000F_FF80, 0x000F_FFFF),
        (RDH0, 0x0000_FFFF, 0x0000_FFFF),
        (RDT0, 0x0000_FFFF, 0x0000_FFFF),
        (FCRTH, 0x0000_FFF8, 0x0000_FFF8),
        (FCTTV, 0x0000_FFFF, 0x0000_FFFF),
        (TIPG, 0x3FFF_FFFF, 0x3FFF_FFFF),
        (TDBAH0, 0xFFFF_FFFF, 0xFFFF_FFFF),
        (TDLEN0, 0x000F_FF80, 0x000F_FFFF),
    ] {
        pattern_test(&mut n, reg, mask, write);
    }
    set_and_check(&mut n, RCTL, 0xFFFF_FFFF, 0);
    set_and_check(&mut n, RCTL, 0x06DF_B3FE, 0x003F_FFFB);
    set_and_check(&mut n, TCTL, 0xFFFF_FFFF, 0);
    set_and_check(&mut n, RCTL, 0x06DF_B3FE, 0xFFFF_FFFF);
    for (reg, mask, write) in [
        (RDBAL0, 0xFFFF_FFF0, 0xFFFF_FFFF),
        (TXCW, 0xC000_FFFF, 0x0000_FFFF),
        (TDBAL0, 0xFFFF_FFF0, 0xFFFF_FFFF),
        (TIDV, 0x0000_FFFF, 0x0000_FFFF),
    ] {
        pattern_test(&mut n, reg, mask, write);
    }
    // RAR high registers (15 entries on the 82574L), then the multicast table.
    for i in 0..15 {
        pattern_test(&mut n, RAL0 + i * 8 + 4, 0x8003_FFFF, 0xFFFF_FFFF);
    }
    for i in 0..128 {
        pattern_test(&mut n, MTA + i * 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
    }
}
