//! The userspace driver against a hostile card: after an ordinary bring-up, every register read and every
//! byte the card writes into the driver's DMA memory (descriptor write-backs, lengths, status, buffers)
//! comes from the input, while the driver transmits and polls.

use crate::input::Input;
use driver::dma::DmaRegion;
use driver::transport::{IrqKind, Result, Transport};
use driver::{Config, E1000e, IrqMode, NetDev, TxCsum, TxPacket};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
struct Card {
    regs: HashMap<u32, u32>,
    /// After bring-up: register reads answered from the input.
    hostile: HashMap<u32, u32>,
    mem: Option<(File, u64)>,
}

struct FuzzCard(Arc<Mutex<Card>>);

const NVM: [u16; 3] = [0x5452, 0x1200, 0x5634];

impl FuzzCard {
    fn card(&self) -> std::sync::MutexGuard<'_, Card> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Transport for FuzzCard {
    fn read32(&mut self, off: u32) -> Result<u32> {
        let c = self.card();
        if let Some(v) = c.hostile.get(&off) {
            return Ok(*v);
        }
        Ok(match off {
            0x8 => 0x83 | if c.regs.get(&0).copied().unwrap_or(0) & 4 != 0 { 0 } else { 1 << 19 },
            0x10 => 1 << 9,
            0x5400 => 0x1200_5452,
            0x5404 => 0x8000_5634,
            o => c.regs.get(&o).copied().unwrap_or(0),
        })
    }
    fn write32(&mut self, off: u32, v: u32) -> Result<()> {
        let v = match off {
            0x14 => {
                // EERD: the NVM words, with the checksum word making the sum 0xBABA.
                let a = ((v >> 2) & 0x3FFF) as usize;
                let sum = NVM.iter().fold(0u16, |s, &w| s.wrapping_add(w));
                let w = match a {
                    0..=2 => NVM[a],
                    0x3F => 0xBABAu16.wrapping_sub(sum),
                    _ => 0,
                };
                (u32::from(w) << 16) | 2
            }
            0x20 => {
                let data = match (v >> 16) & 0x1F {
                    2 => 0x0141,
                    3 => 0x0CB1,
                    _ => 0,
                };
                (v & 0xFFFF_0000) | data | (1 << 28)
            }
            _ => v,
        };
        self.card().regs.insert(off, v);
        Ok(())
    }
    fn config_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut cfg = [0u8; 256];
        cfg[..4].copy_from_slice(&0x10D3_8086u32.to_le_bytes());
        let start = (off as usize).min(256);
        let end = start.saturating_add(buf.len()).min(256);
        buf[..end - start].copy_from_slice(&cfg[start..end]);
        Ok(())
    }
    fn config_write(&mut self, _off: u64, _buf: &[u8]) -> Result<()> {
        Ok(())
    }
    fn map_dma(&mut self, region: &mut DmaRegion, iova: u64) -> Result<()> {
        region.iova = iova;
        let f = File::from(region.fd().try_clone()?);
        self.card().mem = Some((f, region.len() as u64));
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
        "fuzz card".into()
    }
}

/// Rings of 16 descriptors: TX rings at 0 and 4 KiB, RX rings at 8 and 12 KiB of the driver's memory.
const RX_RING0: u64 = 0x2000;

pub fn writeback(data: &[u8]) {
    let card = Arc::new(Mutex::new(Card::default()));
    // The first byte: RSS on, and an XDP program (drop, reflect, redirect) on the receive path.
    let first = data.first().copied().unwrap_or(0);
    let cfg = Config {
        irq: IrqMode::BusyPoll,
        link_timeout: Duration::from_millis(50),
        tx_ring: 16,
        rx_ring: 16,
        rss: first & 0x40 != 0,
        ..Default::default()
    };
    let Ok(mut d) = E1000e::open(Box::new(FuzzCard(card.clone())), cfg) else { return };
    if first & 0x80 != 0 {
        let specs = ["drop=udp:9,10.0.0.9".to_string(), "reflect=udp:7".into(), "redirect=udp:8,tcp:8".into(), "reflect-l2".into()];
        let n = 1 + usize::from(first & 3);
        if let Ok(p) = stack::xdp::program(&specs[..n]) {
            d.set_xdp(Some(p));
        }
    }
    let mut i = Input::new(data);
    let mut out = Vec::new();
    let mut steps = 0;
    while !i.is_empty() && steps < 256 {
        steps += 1;
        match i.u8() % 8 {
            0 => {
                // Any bytes anywhere in the driver's memory.
                let c = card.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((f, len)) = c.mem.as_ref() {
                    let at = u64::from(i.u32()) % len.max(&1);
                    let n = usize::from(i.u8());
                    let _ = f.write_all_at(i.bytes(n), at);
                }
            }
            1 => {
                // An RX write-back: status/errors, length, VLAN as the input says, DD usually set.
                let q = u64::from(i.u8() % 2);
                let slot = u64::from(i.u8() % 16);
                let mut wb = i.array::<16>();
                wb[8] |= i.u8() & 1;
                let c = card.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((f, _)) = c.mem.as_ref() {
                    let _ = f.write_all_at(&wb, RX_RING0 + q * 0x1000 + slot * 16);
                }
            }
            2 => {
                let reg = u32::from(i.u16() % 0x6000) & !3;
                let v = i.u32();
                card.lock().unwrap_or_else(PoisonError::into_inner).hostile.insert(reg, v);
            }
            3 => {
                let budget = usize::from(i.u8() % 80);
                out.clear();
                let _ = d.poll(budget, &mut out);
                let _ = d.take_redirected();
                let _ = d.xdp_stats();
            }
            4 => {
                // Up to 4 packets, or now and then up to 40: past a group of 32, where the driver sets RS.
                let k = i.u8();
                let n = if k & 0x80 != 0 { usize::from(k % 40) + 1 } else { usize::from(k % 4) + 1 };
                let mut pkts = Vec::new();
                for _ in 0..n {
                    let len = usize::from(i.u16()) % 70000;
                    let mut p = TxPacket::plain(vec![0x45; len]);
                    let flags = i.u8();
                    if flags & 1 != 0 {
                        p.csum =
                            Some(TxCsum { l3: usize::from(i.u8()), l4: usize::from(i.u8()), ipv4: flags & 2 != 0, tcp: flags & 4 != 0 });
                    }
                    if flags & 8 != 0 {
                        p.tso = Some(i.u16());
                    }
                    if flags & 16 != 0 {
                        p.vlan = Some(i.u16());
                    }
                    pkts.push(p);
                }
                let _ = d.transmit(&mut pkts);
            }
            5 => {
                let _ = d.link();
                let _ = d.stats();
            }
            6 => {
                let _ = d.hw_stats();
            }
            _ => {
                let _ = d.check_alive();
                let _ = d.mac();
                let _ = d.features();
            }
        }
    }
    out.clear();
    let _ = d.poll(64, &mut out);
}
