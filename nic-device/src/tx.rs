//! Transmit: walks the TX descriptor rings from TDH to TDT, gathers each packet's buffers, applies the
//! offloads its context asks for, writes DD back where RS is set, and hands frames to the wire.

use crate::desc::{TxDesc, TX_STATUS_AT};
use crate::fault::Kind as FaultKind;
use crate::gso;
use crate::metrics::Metrics;
use crate::nic::{Core, Nic};
use crate::offload::{self, TxContext};
use crate::pool::FramePool;
use crate::port::{QueueCtx, RegFile};
use crate::regs::*;
use crate::stats::Dir;
use log::debug;
use vm_memory::ByteValued;

/// A frame for the backend: a wire frame, or in TAP offload mode a GSO frame or a frame whose TCP checksum
/// is still partial, with the virtio-net header that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    pub data: Vec<u8>,
    pub vnet: Option<nic_tap::VnetHdr>,
}

impl TxFrame {
    pub fn wire(data: Vec<u8>) -> TxFrame {
        TxFrame { data, vnet: None }
    }
}

/// Most transmit descriptors fetched in one read (four cache lines).
const FETCH_BURST: usize = 16;

/// Largest packet gathered from descriptors before it is refused (TSO sends are at most 64 KiB + headers).
pub const MAX_TX_PACKET: usize = 256 * 1024;
/// The most room a TSO super-packet's buffer is given before its data comes: a 64 KiB send (what Linux
/// hands an 82574L) with its headers.
const TSO_RESERVE_MAX: usize = 65536 + 256;

/// Per-queue transmit state that lives between descriptors.
#[derive(Default)]
pub struct TxQueue {
    ctx: TxContext,
    /// The packet being gathered.
    pkt: Vec<u8>,
    /// Options from the packet's first data descriptor.
    popts: u8,
    tse: bool,
    vlan: Option<u16>,
    legacy_csum: Option<(u8, u8)>,
    /// The packet is being dropped (bad descriptor or too long); skip to EOP.
    bad: bool,
    started: bool,
    /// TSO's segments, between cutting and handing out (kept empty, for its room).
    segs: Vec<Vec<u8>>,
}

/// A 16-byte TX descriptor in its raw form.
#[derive(Debug, Clone, Copy)]
struct RawDesc {
    addr: u64,
    lower: u32,
    upper: u32,
}

impl From<TxDesc> for RawDesc {
    fn from(d: TxDesc) -> RawDesc {
        RawDesc { addr: d.addr.into(), lower: d.lower.into(), upper: d.upper.into() }
    }
}

impl RawDesc {
    fn cmd(&self) -> u8 {
        (self.lower >> 24) as u8
    }
    fn is_ext(&self) -> bool {
        self.cmd() & TXD_CMD_DEXT != 0
    }
    fn dtyp(&self) -> u32 {
        (self.lower >> 20) & 0xF
    }
}

/// What one pass over a queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TxPass {
    pub descriptors: usize,
    pub frames: usize,
    pub writebacks: usize,
    /// Write-backs of descriptors without IDE: their interrupt is not delayed.
    pub immediate_writebacks: usize,
}

impl Nic {
    /// Whether queue `q` has descriptors to process.
    pub fn tx_pending(&self, q: usize) -> bool {
        if q >= self.tx.len() || self.tx_paused() || self.doorbell_held() {
            return false;
        }
        let o = q as u32 * QUEUE_STRIDE;
        self.tx_enabled(q) && self.dma_allowed() && self.reg(TDH0 + o) != self.reg(TDT0 + o) && self.regs.ring(TDBAL0, q).1 > 0
    }

    /// Processes up to `budget` descriptors of queue `q`, calling `emit` for every frame for the wire.
    /// The card's conditions (transmit enabled, not paused, bus mastering, an injected stall) are checked
    /// here; the queue's engine then works on its ring, and the causes it raised are delivered.
    pub fn process_tx(&mut self, q: usize, budget: usize, emit: &mut dyn FnMut(TxFrame)) -> TxPass {
        let (core, queues, spare) = self.parts();
        if core.tx_resets != 0 {
            for (i, t) in queues.iter_mut().enumerate() {
                if core.tx_resets & (1 << i) != 0 {
                    *t = TxQueue::default();
                }
            }
            core.tx_resets = 0;
        }
        let Some(t) = queues.get_mut(q) else { return TxPass::default() };
        if !core.tx_enabled(q) || core.tx_paused() {
            return TxPass::default();
        }
        if !core.faults.is_empty() {
            let now = core.now();
            if core.faults.peek(FaultKind::TxStall, now).is_some_and(|f| f.queue.is_none_or(|fq| fq == q)) {
                // The queue does not advance: TDH stays while the driver moves TDT (the "hardware unit hang").
                core.faults.take(FaultKind::TxStall, now);
                return TxPass::default();
            }
        }
        if !core.dma_allowed() {
            Metrics::inc(&core.metrics.dma_blocked);
            return TxPass::default();
        }
        // TAP offload mode hands GSO frames to the backend; looped back, frames go to our own receive.
        let gso_out = core.gso_out && !core.loopback();
        let mut ctx = core.queue_ctx();
        let pass = t.process(q, &mut ctx, spare, budget, gso_out, emit);
        let causes = ctx.causes;
        match core.held_tx.as_mut() {
            Some(held) => held.merge(causes),
            None => core.deliver(causes),
        }
        pass
    }
}

impl TxQueue {
    /// Processes up to `budget` descriptors of this queue (`q`), calling `emit` for every frame for the wire;
    /// packets are gathered and cut into buffers from `spare` (those of frames already sent). With
    /// `gso_out` the backend takes GSO frames and partial checksums (TAP offload mode).
    pub fn process(
        &mut self,
        q: usize,
        nic: &mut QueueCtx,
        spare: &mut FramePool,
        budget: usize,
        gso_out: bool,
        emit: &mut dyn FnMut(TxFrame),
    ) -> TxPass {
        let mut pass = TxPass::default();
        let (base, n) = nic.regs.ring(TDBAL0, q);
        let o = q as u32 * QUEUE_STRIDE;
        if n == 0 {
            return pass;
        }
        let tail = nic.regs.reg(TDT0 + o);
        if tail >= n || nic.regs.reg(TDH0 + o) >= n {
            // A tail or head beyond the ring is the driver's error: nothing is fetched.
            Metrics::inc(&nic.metrics.tx_malformed);
            return pass;
        }
        // Descriptors are fetched in bursts (as the card's prefetch does): up to FETCH_BURST of those the
        // driver handed over, contiguous in the ring, in one read. All of them belong to the card until it
        // moves TDH past them, so none can change before it reads the copy.
        let mut burst = [0u8; FETCH_BURST * 16];
        let (mut next, mut fetched) = (0usize, 0usize);
        while pass.descriptors < budget {
            let head = nic.regs.reg(TDH0 + o);
            if head == tail {
                break;
            }
            let daddr = base.wrapping_add(head as u64 * 16);
            if next == fetched {
                let ahead = if tail > head { tail - head } else { n - head };
                let k = (ahead as usize).min(FETCH_BURST).min(budget - pass.descriptors);
                let Ok(k) = nic.dma.read_burst(daddr, 16, k, &mut burst, "tx-descriptor") else {
                    Metrics::inc(&nic.metrics.dma_errors);
                    debug!("TX queue {q}: descriptor at {daddr:#x} is not mapped");
                    break;
                };
                (next, fetched) = (0, k);
            }
            let mut raw = TxDesc::default();
            raw.as_mut_slice().copy_from_slice(burst.get(next * 16..next * 16 + 16).unwrap_or(&[0; 16]));
            next += 1;
            let d = RawDesc::from(raw);
            self.descriptor(q, nic, d, spare, gso_out, emit, &mut pass);
            // Write back DD (status byte) when RS asks for it.
            if d.cmd() & TXD_CMD_RS != 0 {
                if d.cmd() & TXD_CMD_IDE == 0 {
                    pass.immediate_writebacks += 1;
                }
                let sta = (d.upper as u8) | TXD_STA_DD;
                let q_cause = if q == 0 { ICR_TXQ0 } else { ICR_TXQ1 };
                if nic.dma.write_back_status(daddr.wrapping_add(TX_STATUS_AT), &[sta], ICR_TXDW | q_cause).is_err() {
                    Metrics::inc(&nic.metrics.dma_errors);
                }
                pass.writebacks += 1;
            }
            nic.regs.set_reg(TDH0 + o, crate::port::ring_wrap(head + 1, n));
            pass.descriptors += 1;
        }
        if pass.writebacks > 0 {
            let q_cause = if q == 0 { ICR_TXQ0 } else { ICR_TXQ1 };
            nic.causes.tx |= ICR_TXDW | q_cause;
            nic.causes.tx_all_ide = pass.immediate_writebacks == 0;
        }
        pass
    }

    #[allow(clippy::too_many_arguments)]
    fn descriptor(
        &mut self,
        q: usize,
        nic: &mut QueueCtx,
        d: RawDesc,
        spare: &mut FramePool,
        gso_out: bool,
        emit: &mut dyn FnMut(TxFrame),
        pass: &mut TxPass,
    ) {
        let vme = nic.regs.reg(CTRL) & CTRL_VME != 0;
        let t = &mut *self;
        if d.is_ext() && d.dtyp() == 0 {
            // Context descriptor.
            let a = d.addr;
            let tucmd = d.cmd();
            t.ctx = TxContext {
                ipcss: a as u8,
                ipcso: (a >> 8) as u8,
                ipcse: (a >> 16) as u16,
                tucss: (a >> 32) as u8,
                tucso: (a >> 40) as u8,
                tucse: (a >> 48) as u16,
                paylen: d.lower & TXD_DTALEN_MASK,
                hdrlen: (d.upper >> 8) as u8,
                mss: (d.upper >> 16) as u16,
                tcp: tucmd & TXD_TUCMD_TCP != 0,
                ipv4: tucmd & TXD_TUCMD_IP != 0,
                tse: tucmd & TXD_CMD_TSE != 0,
            };
            return;
        }
        let (len, eop, legacy) = if d.is_ext() {
            if d.dtyp() != TXD_DTYP_DATA {
                Metrics::inc(&nic.metrics.tx_malformed);
                t.bad = true;
                return;
            }
            ((d.lower & TXD_DTALEN_MASK) as usize, d.cmd() & TXD_CMD_EOP != 0, false)
        } else {
            ((d.lower & TXD_LEGACY_LEN_MASK) as usize, d.cmd() & TXD_CMD_EOP != 0, true)
        };
        if !t.started {
            t.started = true;
            if legacy {
                t.popts = 0;
                t.tse = false;
                t.legacy_csum = (d.cmd() & TXD_CMD_IC != 0).then_some(((d.upper >> 8) as u8, (d.lower >> 16) as u8));
            } else {
                t.popts = (d.upper >> 8) as u8;
                t.tse = d.cmd() & TXD_CMD_TSE != 0;
                t.legacy_csum = None;
                // A TSO super-packet is gathered in a large spare buffer when one came back (in TAP
                // offload mode they leave whole), or in one grown once to the size the context gives: not
                // grown step by step from a wire-sized one, descriptor by descriptor.
                // At most a 64 KiB send's room ahead: a context that claims more (PAYLEN has 20 bits) grows
                // the buffer only as far as the data it brings, as before.
                let want = (t.ctx.hdrlen as usize).saturating_add(t.ctx.paylen as usize).min(TSO_RESERVE_MAX);
                if t.tse && t.pkt.capacity() < want {
                    match spare.take_big(want) {
                        Some(big) => spare.put(std::mem::replace(&mut t.pkt, big)),
                        None => t.pkt.reserve_exact(want),
                    }
                }
            }
        }
        if d.cmd() & TXD_CMD_VLE != 0 && vme {
            t.vlan = Some((d.upper >> 16) as u16);
        }
        if !t.bad && len > 0 {
            if t.pkt.len() + len > MAX_TX_PACKET {
                t.bad = true;
            } else {
                let ok = nic.dma.read_append(d.addr, len, &mut t.pkt, "tx-buffer").is_ok();
                t.bad |= !ok;
                if !ok {
                    Metrics::inc(&nic.metrics.dma_errors);
                }
            }
        }
        if eop {
            self.finish(q, nic, spare, gso_out, emit, pass);
        }
    }

    fn finish(
        &mut self,
        q: usize,
        nic: &mut QueueCtx,
        spare: &mut FramePool,
        gso_out: bool,
        emit: &mut dyn FnMut(TxFrame),
        pass: &mut TxPass,
    ) {
        let mut t = std::mem::take(self);
        self.ctx = t.ctx;
        self.pkt = spare.take();
        self.segs = std::mem::take(&mut t.segs);
        // Empty but for what a round cut short by an internal error left.
        self.segs.clear();
        // A packet dropped on the way gives its buffer back (a TSO send's large one among the large spares,
        // for the next TSO send), as a sent one does.
        if t.bad || t.pkt.is_empty() {
            Metrics::inc(&nic.metrics.tx_malformed);
            spare.put(t.pkt);
            return;
        }
        let ixsm = t.popts & TXD_POPTS_IXSM != 0;
        let txsm = t.popts & TXD_POPTS_TXSM != 0;
        // TAP offload mode: what the virtio-net header can say exactly leaves whole or partial.
        let offload_out = gso_out && t.vlan.is_none() && t.legacy_csum.is_none();
        let mut pkt = t.pkt;
        if offload_out {
            let vnet = if t.tse {
                gso::tso_frame(&mut pkt, &t.ctx, ixsm, txsm)
            } else {
                gso::csum_frame(&mut pkt, &t.ctx, ixsm, txsm).map(|h| h.map(|h| (h, 1)))
            };
            match vnet {
                Ok(Some((h, segments))) => {
                    if t.tse {
                        nic.stats.inc(TSCTC, 1);
                        Metrics::inc(&nic.metrics.tx_tso_packets);
                        nic.metrics.tx_tso_segments.fetch_add(segments as u64, std::sync::atomic::Ordering::Relaxed);
                        Metrics::inc(&nic.metrics.tx_gso_frames);
                        nic.metrics.tx_gso_segments.fetch_add(segments as u64, std::sync::atomic::Ordering::Relaxed);
                        nic.stats.count_tx_segments(&pkt, t.ctx.hdrlen as usize, t.ctx.mss as usize, segments);
                    } else {
                        Metrics::inc(&nic.metrics.tx_csum_partial);
                        nic.stats.count_frame(Dir::Tx, pkt.len(), &pkt);
                    }
                    pass.frames += 1;
                    Metrics::inc(&nic.metrics.tx_frames);
                    emit(TxFrame { data: pkt, vnet: Some(h) });
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("TX queue {q}: offload refused: {e}");
                    if t.tse {
                        nic.stats.inc(TSCTFC, 1);
                    }
                    Metrics::inc(&nic.metrics.tx_malformed);
                    spare.put(pkt);
                    return;
                }
            }
        }
        // One frame, or TSO's segments (in the queue's reused vector).
        let single = if t.tse {
            let segments = offload::segment_into(&pkt, &t.ctx, ixsm, txsm, &mut || spare.take(), &mut self.segs);
            // The super-packet's buffer, with the room a TSO send needs, goes back among the large spares
            // for the next TSO send to take. Not into `self.pkt`: a plain packet gathered in it would
            // leave in it, and a backend that takes frames by value would keep a large buffer for a
            // small frame (and drop it), leaving the next TSO send to allocate its own.
            let mut big = pkt;
            big.clear();
            spare.put(big);
            match segments {
                Ok(n) => {
                    nic.stats.inc(TSCTC, 1);
                    Metrics::inc(&nic.metrics.tx_tso_packets);
                    nic.metrics.tx_tso_segments.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                Err(e) => {
                    debug!("TX queue {q}: TSO refused: {e}");
                    nic.stats.inc(TSCTFC, 1);
                    Metrics::inc(&nic.metrics.tx_malformed);
                    return;
                }
            }
        } else {
            let mut f = pkt;
            let r = if let Some((css, cso)) = t.legacy_csum {
                offload::insert_l4_checksum(&mut f, css as usize, cso as usize, 0, false, None)
            } else {
                offload::apply_checksums(&mut f, &t.ctx, ixsm, txsm)
            };
            if let Err(e) = r {
                debug!("TX queue {q}: checksum offload refused: {e}");
                Metrics::inc(&nic.metrics.tx_malformed);
                spare.put(f);
                return;
            }
            Some(f)
        };
        let vet = nic.regs.reg(VET) as u16;
        let pad = nic.regs.reg(TCTL) & TCTL_PSP != 0;
        for mut f in single.into_iter().chain(self.segs.drain(..)) {
            if pad && f.len() < 60 {
                f.resize(60, 0); // short packets are padded on the wire (TCTL.PSP)
            }
            if let Some(tci) = t.vlan {
                offload::insert_vlan(&mut f, vet, tci);
                Metrics::inc(&nic.metrics.tx_vlan_inserted);
            }
            nic.stats.count_frame(Dir::Tx, f.len(), &f);
            pass.frames += 1;
            Metrics::inc(&nic.metrics.tx_frames);
            emit(TxFrame::wire(f));
        }
    }
}

impl Core {
    pub(crate) fn tx_enabled(&self, q: usize) -> bool {
        let en = self.reg(TCTL) & TCTL_EN != 0;
        // Queue 1 also needs TARC1.Enable.
        en && (q == 0 || self.reg(TARC0 + QUEUE_STRIDE) & TARC_ENABLE != 0)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::port::{legacy_tx_desc, ring_regs, Causes};

    /// The engine on a context of its own (a register file, a DMA space, statistics): no card around it.
    #[test]
    fn the_engine_needs_only_its_context() {
        const RING: u64 = 0x10000;
        const BUF: u64 = 0x11000;
        let space = crate::dma::testing::space(RING, 0x4000);
        let frame: Vec<u8> = (0..60u8).collect();
        space.write(BUF, &frame).unwrap();
        // One legacy descriptor: the buffer, its length, EOP | IFCS | RS.
        let desc = legacy_tx_desc(BUF, frame.len() as u32, TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS);
        space.write(RING, &desc).unwrap();
        let mut regs = ring_regs(true, RING, 8, 0, 1);
        let mut card = crate::port::TestCard::default();
        let mut ctx = card.ctx(&mut regs, &space);
        let mut out = Vec::new();
        let pass = TxQueue::default().process(0, &mut ctx, &mut FramePool::default(), 16, false, &mut |f| out.push(f.data));
        assert_eq!((pass.descriptors, pass.frames, pass.writebacks), (1, 1, 1));
        assert_eq!(out, vec![frame]);
        assert_eq!(ctx.regs.reg(TDH0), 1, "the head follows the tail");
        assert_eq!(ctx.causes, Causes { rx: 0, tx: ICR_TXDW | ICR_TXQ0, tx_all_ide: false }, "raised for the caller to deliver");
        let mut sta = [0u8; 1];
        space.read(RING + TX_STATUS_AT, &mut sta).unwrap();
        assert_eq!(sta[0] & TXD_STA_DD, TXD_STA_DD, "DD written back");
        assert_eq!(ctx.stats.peek(GPTC), 1);
    }

    /// A ring that runs past the end of the DMA maps works up to where the mapping ends, as it would one
    /// descriptor at a time: a burst that would reach past it is cut to one descriptor.
    #[test]
    fn a_partly_mapped_ring_works_up_to_the_end_of_the_map() {
        const MAP: u64 = 0x10000;
        const RING: u64 = MAP + 0x4000 - 10 * 16; // ten slots mapped, the rest beyond the map
        let space = crate::dma::testing::space(MAP, 0x4000);
        for i in 0..12u64 {
            let buf = MAP + i * 0x100;
            space.write(buf, &[i as u8; 60]).unwrap();
            let d = legacy_tx_desc(buf, 60, TXD_CMD_EOP | TXD_CMD_IFCS);
            let _ = space.write(RING + i * 16, &d); // slots 10 and 11 are not mapped: not written
        }
        let mut regs = ring_regs(true, RING, 16, 0, 12);
        let mut card = crate::port::TestCard::default();
        let mut ctx = card.ctx(&mut regs, &space);
        let mut out = Vec::new();
        let pass = TxQueue::default().process(0, &mut ctx, &mut FramePool::default(), 64, false, &mut |f| out.push(f.data));
        assert_eq!(pass.frames, 10, "the mapped slots' frames go out");
        assert_eq!(out, (0..10u8).map(|i| vec![i; 60]).collect::<Vec<_>>());
        assert_eq!(ctx.regs.reg(TDH0), 10, "stopped at the first slot beyond the map");
        assert_eq!(ctx.metrics.dma_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// Descriptors fetched in bursts: across the end of the ring, cut by the budget and by the tail (the
    /// descriptor past the tail is never read, and a bad one there changes nothing), and a burst whose read
    /// fails leaves the head where it was, to be fetched again whole.
    #[test]
    fn descriptors_are_fetched_in_bursts_up_to_the_tail_and_again_after_a_failed_read() {
        const RING: u64 = 0x10000;
        const BUF: u64 = 0x11000;
        const N: u32 = 40; // longer than a burst
        let space = crate::dma::testing::space(RING, 0x8000);
        let desc = |i: u32, addr: u64| {
            space.write(RING + u64::from(i) * 16, &legacy_tx_desc(addr, 60, TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS)).unwrap();
        };
        // Frame i is 60 bytes of i, in descriptor slot (30 + i) % 40: 25 frames from slot 30 wrap at 40.
        let frames: Vec<Vec<u8>> = (0..25u8).map(|i| vec![i; 60]).collect();
        for (i, f) in frames.iter().enumerate() {
            let addr = BUF + i as u64 * 64;
            space.write(addr, f).unwrap();
            desc((30 + i as u32) % N, addr);
        }
        // Past the tail (slot 15): a descriptor pointing outside the maps.
        desc(15, 0xDEAD_0000);
        let mut regs = ring_regs(true, RING, N, 30, 15);
        let mut card = crate::port::TestCard::default();
        let mut ctx = card.ctx(&mut regs, &space);
        let mut q = TxQueue::default();
        let mut out = Vec::new();
        // 7 descriptors: one burst, cut by the budget.
        let pass = q.process(0, &mut ctx, &mut FramePool::default(), 7, false, &mut |f| out.push(f.data));
        assert_eq!((pass.descriptors, pass.frames, pass.writebacks), (7, 7, 7));
        assert_eq!(ctx.regs.reg(TDH0), 37);
        // A failed read: nothing moves, nothing is written back.
        ctx.dma.faults.inject(crate::fault::Fault::new(FaultKind::DmaError));
        let pass = q.process(0, &mut ctx, &mut FramePool::default(), 64, false, &mut |f| out.push(f.data));
        assert_eq!(pass, TxPass::default());
        assert_eq!(ctx.regs.reg(TDH0), 37);
        assert_eq!(ctx.metrics.dma_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The rest: a burst to the end of the ring, then bursts from slot 0 up to the tail.
        let pass = q.process(0, &mut ctx, &mut FramePool::default(), 64, false, &mut |f| out.push(f.data));
        assert_eq!((pass.descriptors, pass.frames, pass.writebacks), (18, 18, 18));
        assert_eq!(ctx.regs.reg(TDH0), 15, "stopped at the tail");
        assert_eq!(out, frames, "every frame once, in ring order");
        assert_eq!(ctx.metrics.dma_errors.load(std::sync::atomic::Ordering::Relaxed), 1, "the slot past the tail was not used");
        for i in 0..25u32 {
            let mut sta = [0u8; 1];
            space.read(RING + u64::from((30 + i) % N) * 16 + TX_STATUS_AT, &mut sta).unwrap();
            assert_eq!(sta[0] & TXD_STA_DD, TXD_STA_DD, "DD written back in slot {}", (30 + i) % N);
        }
        let mut sta = [0u8; 1];
        space.read(RING + 15 * 16 + TX_STATUS_AT, &mut sta).unwrap();
        assert_eq!(sta[0], 0, "the slot past the tail untouched");
    }
}
