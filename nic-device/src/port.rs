//! What a queue engine is given to work with, and nothing more of the card: the register file, the card's
//! DMA (bus-master reads and writes, with the injected faults and the trace that every access of the card
//! goes through), the statistics registers, the metrics, and the interrupt causes it raises. Engines
//! (`tx::TxQueue`, `rx::RxQueue`) own their ring state and take a [`QueueCtx`] per call; the interrupt
//! causes they leave in [`Causes`] are delivered by the caller, where moderation, masks and vectors live
//! (`intr`).

use crate::dma::DmaSpace;
use crate::fault::{Faults, Kind as FaultKind};
use crate::metrics::Metrics;
use crate::regs::QUEUE_STRIDE;
use crate::stats::Stats;
use crate::trace::{self, Tracer};
use serde_json::json;
use std::collections::VecDeque;
use std::time::Instant;

/// A descriptor status write-back held back by a `writeback-delay` fault: when it lands, where, its bytes,
/// and the causes to raise then.
pub type LateWriteback = (Instant, u64, Vec<u8>, u32);

/// Reads and writes of the register file (one `u32` per 4-byte offset of BAR0's register space). Offsets
/// come from the register map or from accesses checked against BAR0's size; one beyond the file reads 0
/// and writes nothing.
pub trait RegFile {
    fn reg(&self, off: u32) -> u32;
    fn set_reg(&mut self, off: u32, v: u32);

    /// Queue `q`'s descriptor ring from its base register (TDBAL0 or RDBAL0): base address and length in
    /// 16-byte descriptors.
    fn ring(&self, base_reg: u32, q: usize) -> (u64, u32) {
        let o = q as u32 * QUEUE_STRIDE;
        let base = self.reg(base_reg + o) as u64 | ((self.reg(base_reg + 4 + o) as u64) << 32);
        (base, self.reg(base_reg + 8 + o) / 16)
    }
}

impl RegFile for [u32] {
    #[inline]
    fn reg(&self, off: u32) -> u32 {
        self.get((off / 4) as usize).copied().unwrap_or(0)
    }
    #[inline]
    fn set_reg(&mut self, off: u32, v: u32) {
        if let Some(r) = self.get_mut((off / 4) as usize) {
            *r = v;
        }
    }
}

/// `sum % n` for a ring index moved forward (`sum` is an index below `n` plus a step), without a
/// division in the usual case, where `sum` is below `2 * n`; 0 for an empty ring.
#[inline]
pub fn ring_wrap(sum: u32, n: u32) -> u32 {
    if sum < n {
        sum
    } else if sum - n < n {
        sum - n
    } else if n == 0 {
        0
    } else {
        sum % n
    }
}

/// A DMA access that failed: the address is not mapped (or not writable there), or a fault was injected.
/// The engine counts it (`dma_errors`) and goes on as the hardware would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFailed;

/// The card's DMA as an engine sees it: every access may meet an injected `dma-error`, and is traced.
pub struct CardDma<'a> {
    pub(crate) space: &'a DmaSpace,
    pub(crate) faults: &'a mut Faults,
    pub(crate) trace: &'a Tracer,
    pub(crate) late: &'a mut VecDeque<LateWriteback>,
    pub(crate) now: Instant,
}

impl CardDma<'_> {
    /// A DMA read by the card; `what` says what it was for (the trace's word for it).
    pub fn read(&mut self, addr: u64, buf: &mut [u8], what: &'static str) -> Result<(), DmaFailed> {
        let injected = self.fault();
        let r = if injected { Err(DmaFailed) } else { self.space.read(addr, buf).map_err(|_| DmaFailed) };
        self.traced("read", addr, buf.len(), what, injected, r.is_ok());
        r
    }

    /// A burst of `n` descriptors of `size` bytes read by the card's DMA into `buf` (which holds at least
    /// `n * size` bytes): the number read. A burst that reaches past the DMA maps is cut to its first
    /// descriptor, so that a ring that is only partly mapped works up to where its mapping ends, as it
    /// would one descriptor at a time.
    pub fn read_burst(&mut self, addr: u64, size: usize, n: usize, buf: &mut [u8], what: &'static str) -> Result<usize, DmaFailed> {
        let n = n.max(1);
        let bytes = buf.get_mut(..n * size).ok_or(DmaFailed)?;
        match self.read(addr, bytes, what) {
            Ok(()) => Ok(n),
            // Looked at only after a failure: the maps are not searched twice per burst.
            Err(_) if n > 1 && !self.space.is_mapped(addr, n * size) => {
                self.read(addr, buf.get_mut(..size).ok_or(DmaFailed)?, what)?;
                Ok(1)
            }
            Err(e) => Err(e),
        }
    }

    /// `len` bytes read by the card's DMA, appended to `out` (nothing appended on failure).
    pub fn read_append(&mut self, addr: u64, len: usize, out: &mut Vec<u8>, what: &'static str) -> Result<(), DmaFailed> {
        let injected = self.fault();
        let r = if injected { Err(DmaFailed) } else { self.space.read_append(addr, len, out).map_err(|_| DmaFailed) };
        self.traced("read", addr, len, what, injected, r.is_ok());
        r
    }

    /// A descriptor (or any plain value) read by the card's DMA.
    pub fn read_obj<T: vm_memory::ByteValued + Default>(&mut self, addr: u64, what: &'static str) -> Result<T, DmaFailed> {
        let mut v = T::default();
        self.read(addr, v.as_mut_slice(), what)?;
        Ok(v)
    }

    /// A DMA write by the card.
    pub fn write(&mut self, addr: u64, buf: &[u8], what: &'static str) -> Result<(), DmaFailed> {
        let injected = self.fault();
        let r = if injected { Err(DmaFailed) } else { self.space.write(addr, buf).map_err(|_| DmaFailed) };
        self.traced("write", addr, buf.len(), what, injected, r.is_ok());
        r
    }

    /// The status part of a descriptor write-back (the bytes holding DD), which a `writeback-delay` fault
    /// holds back; `causes` are raised when it lands late.
    pub fn write_back_status(&mut self, addr: u64, status: &[u8], causes: u32) -> Result<(), DmaFailed> {
        if !self.faults.is_empty() {
            if let Some(f) = self.faults.take(FaultKind::WritebackDelay, self.now) {
                self.late.push_back((self.now + f.delay, addr, status.to_vec(), causes));
                return Ok(());
            }
        }
        self.write(addr, status, "write-back")
    }

    /// A whole descriptor write-back, the `status` bytes (those holding DD) last: a driver that sees DD sees
    /// the whole write-back. With a fault armed or DMA traced, three accesses as the trace shows them (the
    /// status one may be held back by `writeback-delay`); otherwise one.
    pub fn write_back(&mut self, addr: u64, bytes: &[u8], status: std::ops::Range<usize>, causes: u32) -> Result<(), DmaFailed> {
        if self.faults.is_empty() && !self.trace.on(trace::DMA) {
            return self.space.write_desc(addr, bytes, status).map_err(|_| DmaFailed);
        }
        crate::dma::in_status_order(bytes, status, DmaFailed, |at, part, is_status| {
            let at = addr.wrapping_add(at as u64);
            if is_status {
                self.write_back_status(at, part, causes)
            } else {
                self.write(at, part, "write-back")
            }
        })
    }

    /// Whether an armed fault of `kind` acts on this access (and is used up by it).
    pub fn take_fault(&mut self, kind: FaultKind) -> bool {
        !self.faults.is_empty() && self.faults.take(kind, self.now).is_some()
    }

    fn fault(&mut self) -> bool {
        self.take_fault(FaultKind::DmaError)
    }

    #[inline]
    fn traced(&self, dir: &str, addr: u64, len: usize, what: &str, injected: bool, ok: bool) {
        self.trace.emit(
            trace::DMA,
            "dma",
            || json!({ "dir": dir, "addr": format!("{addr:#x}"), "len": len, "what": what, "ok": ok, "injected": injected }),
        );
    }
}

/// Interrupt causes an engine raised, for the caller to deliver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Causes {
    /// Receive causes (RXT0 and the queue causes wait for RDTR/RADV).
    pub rx: u32,
    /// Transmit write-back causes, and whether every descriptor written back asked for a delayed
    /// interrupt (IDE; TIDV/TADV then apply).
    pub tx: u32,
    pub tx_all_ide: bool,
}

impl Causes {
    /// Adds `o`'s causes: a transmit interrupt is delayed only if every write-back behind it asked to be.
    pub fn merge(&mut self, o: Causes) {
        if o.tx != 0 {
            self.tx_all_ide = if self.tx != 0 { self.tx_all_ide && o.tx_all_ide } else { o.tx_all_ide };
            self.tx |= o.tx;
        }
        self.rx |= o.rx;
    }
}

/// An engine's view of the card for one call.
pub struct QueueCtx<'a> {
    pub regs: &'a mut [u32],
    pub dma: CardDma<'a>,
    pub stats: &'a mut Stats,
    pub metrics: &'a Metrics,
    pub causes: Causes,
    /// Changes with every register write but a tail doorbell, every reset and every DMA map change: what
    /// an engine fetched ahead in an earlier epoch is not used.
    pub epoch: u64,
}

#[cfg(test)]
mod test {
    #[test]
    fn ring_wrap_is_the_remainder() {
        for n in [0u32, 1, 2, 7, 256, 4096] {
            for sum in (0..3 * n + 3).chain([u32::MAX - 1, u32::MAX]) {
                assert_eq!(super::ring_wrap(sum, n), if n == 0 { 0 } else { sum % n }, "{sum} % {n}");
            }
        }
    }
}

/// Test support: the parts of the card a queue engine borrows, on their own.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestCard {
    pub faults: Faults,
    pub trace: Tracer,
    pub late: VecDeque<LateWriteback>,
    pub stats: Stats,
    pub metrics: Metrics,
}

/// Test support: a register file with queue 0's transmit (`tx`) or receive ring at `base`, `n`
/// descriptors long, its head and tail at `head` and `tail`.
#[cfg(test)]
pub(crate) fn ring_regs(tx: bool, base: u64, n: u32, head: u32, tail: u32) -> Vec<u32> {
    use crate::regs::*;
    let (bal, len, h, t) = if tx { (TDBAL0, TDLEN0, TDH0, TDT0) } else { (RDBAL0, RDLEN0, RDH0, RDT0) };
    let mut regs = vec![0u32; (BAR0_SIZE / 4) as usize];
    regs.set_reg(bal, base as u32);
    regs.set_reg(len, n * 16);
    regs.set_reg(h, head);
    regs.set_reg(t, tail);
    regs
}

/// Test support: a legacy transmit descriptor for `len` bytes at `addr` with the command bits `cmd`.
#[cfg(test)]
pub(crate) fn legacy_tx_desc(addr: u64, len: u32, cmd: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&(len | u32::from(cmd) << 24).to_le_bytes());
    d
}

#[cfg(test)]
impl TestCard {
    /// An engine's context on this card, with the register file `regs` and the guest memory `space`.
    pub fn ctx<'a>(&'a mut self, regs: &'a mut [u32], space: &'a DmaSpace) -> QueueCtx<'a> {
        QueueCtx {
            regs,
            dma: CardDma { space, faults: &mut self.faults, trace: &self.trace, late: &mut self.late, now: Instant::now() },
            stats: &mut self.stats,
            metrics: &self.metrics,
            causes: Causes::default(),
            epoch: 0,
        }
    }
}
