//! A mock driver for device-level tests: the card with fake guest memory (a memfd), rings and descriptors
//! written as a driver would write them.
#![allow(dead_code)]

use nic_device::dma::testing;
use nic_device::metrics::Metrics;
use nic_device::nic::Nic;
use nic_device::pci;
use nic_device::regs::*;
use std::sync::Arc;

pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
pub const MEM_BASE: u64 = 0x10_0000;
pub const MEM_SIZE: u64 = 4 << 20;
pub const TX_RING: u64 = MEM_BASE;
pub const RX_RING: u64 = MEM_BASE + 0x1000;
pub const TX_BUFS: u64 = MEM_BASE + 0x10_0000;
pub const RX_BUFS: u64 = MEM_BASE + 0x20_0000;
pub const RING_LEN: u32 = 64;

pub fn nic() -> Nic {
    let mut n = Nic::new(MAC, Arc::new(Metrics::default()));
    n.dma = testing::space(MEM_BASE, MEM_SIZE);
    // Bus mastering on, as the guest's PCI core does.
    n.config_write(pci::COMMAND as u64, &(pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER).to_le_bytes()).unwrap();
    n
}

pub fn setup_tx(n: &mut Nic) {
    n.mmio_write(TDBAL0, TX_RING as u32);
    n.mmio_write(TDBAH0, 0);
    n.mmio_write(TDLEN0, RING_LEN * 16);
    n.mmio_write(TDH0, 0);
    n.mmio_write(TDT0, 0);
    n.mmio_write(TCTL, TCTL_EN | TCTL_PSP);
}

pub fn w64(n: &Nic, a: u64, v: u64) {
    n.dma.write(a, &v.to_le_bytes()).unwrap();
}

pub fn desc(n: &Nic, i: u32, addr: u64, lower: u32, upper: u32) {
    let d = TX_RING + i as u64 * 16;
    w64(n, d, addr);
    n.dma.write(d + 8, &lower.to_le_bytes()).unwrap();
    n.dma.write(d + 12, &upper.to_le_bytes()).unwrap();
}

pub fn run_tx(n: &mut Nic) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while n.tx_pending(0) {
        let p = n.process_tx(0, 1024, &mut |f| out.push(f.data));
        if p.descriptors == 0 {
            break;
        }
    }
    out
}

pub fn legacy(len: usize, cmd: u8) -> u32 {
    len as u32 | ((cmd as u32) << 24)
}

pub fn data_desc(len: usize, dcmd: u8, popts: u8) -> (u32, u32) {
    (len as u32 | (TXD_DTYP_DATA << 20) | (((dcmd | TXD_CMD_DEXT) as u32) << 24), (popts as u32) << 8)
}

/// The TSO context of an IPv4/TCP packet behind a plain Ethernet header (20-byte IP and TCP headers),
/// with both checksums.
pub fn tso_ctx_ipv4_tcp(hdrlen: usize, mss: usize, paylen: usize) -> nic_device::offload::TxContext {
    nic_device::offload::TxContext {
        ipcss: 14,
        ipcso: 24,
        ipcse: 33,
        tucss: 34,
        tucso: 50,
        tucse: 0,
        paylen: paylen as u32,
        hdrlen: hdrlen as u8,
        mss: mss as u16,
        tcp: true,
        ipv4: true,
        tse: true,
    }
}

pub fn ctx_desc(n: &Nic, i: u32, c: &nic_device::offload::TxContext) {
    let addr = c.ipcss as u64
        | (c.ipcso as u64) << 8
        | (c.ipcse as u64) << 16
        | (c.tucss as u64) << 32
        | (c.tucso as u64) << 40
        | (c.tucse as u64) << 48;
    let tucmd = (if c.tcp { TXD_TUCMD_TCP } else { 0 })
        | (if c.ipv4 { TXD_TUCMD_IP } else { 0 })
        | (if c.tse { TXD_CMD_TSE } else { 0 })
        | TXD_CMD_DEXT;
    desc(n, i, addr, c.paylen | ((tucmd as u32) << 24), ((c.hdrlen as u32) << 8) | ((c.mss as u32) << 16));
}

pub fn setup_rx(n: &mut Nic, extended: bool, bsize_256: bool) {
    for i in 0..RING_LEN as u64 {
        w64(n, RX_RING + i * 16, RX_BUFS + i * 0x1000);
        w64(n, RX_RING + i * 16 + 8, 0);
    }
    n.mmio_write(RDBAL0, RX_RING as u32);
    n.mmio_write(RDBAH0, 0);
    n.mmio_write(RDLEN0, RING_LEN * 16);
    n.mmio_write(RDH0, 0);
    n.mmio_write(RDT0, RING_LEN - 1);
    n.mmio_write(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD);
    if extended {
        n.mmio_write(RFCTL, RFCTL_EXTEN);
    }
    let bs = if bsize_256 { 3 << RCTL_BSIZE_SHIFT } else { 0 };
    n.mmio_write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | bs);
    n.mmio_write(IMS, ICR_RXT0 | ICR_RXO | ICR_RXDMT0);
}

pub fn rx_desc(n: &Nic, i: u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    n.dma.read(RX_RING + i * 16, &mut d).unwrap();
    d
}
