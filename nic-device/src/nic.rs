//! The 82574L function: register file and its side effects, reset, and the glue that the data path (tx.rs,
//! rx.rs) and the vfio-user server call into. Interrupt causes and their delivery live in `intr`.

use crate::bytes::{le32, put};
use crate::delay::DelayTimer;
use crate::dma::DmaSpace;
use crate::fault::{Faults, Kind as FaultKind};
use crate::flowctl::FlowControl;
use crate::intr::{Intr, IrqSink, Mode, Signal};
use crate::metrics::Metrics;
use crate::nvm::Nvm;
use crate::pci::ConfigSpace;
use crate::phy::{LinkEvent, Phy, PHY_ADDR};
use crate::port::{CardDma, Causes, QueueCtx, RegFile};
use crate::regs::*;
use crate::rx::{RxFifo, RxOutcome, RxPath};
use crate::stats::{self, Stats};
use crate::trace::{self, Tracer};
use crate::tx::TxQueue;
use log::{debug, info};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

const REG_COUNT: usize = (BAR0_SIZE / 4) as usize;

/// Locks the device. A panic elsewhere while the lock was held leaves the lock poisoned; the device state
/// is plain data that every access re-validates, so the other thread carries on with it instead of
/// panicking in turn (a panic is counted where it is caught, see `datapath`).
pub fn lock(nic: &Mutex<Nic>) -> MutexGuard<'_, Nic> {
    nic.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an access asks of the data path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// A doorbell or enable changed: the data path should look at the rings.
    pub wake: bool,
}

/// The function's shared state: the register file and everything but the queues' engines. The engines
/// (`tx::TxQueue`, `rx::RxQueue`) see only a `port::QueueCtx` borrowed from it (registers, DMA,
/// statistics); the causes they raise come back here to be delivered.
pub struct Core {
    pub regs: Vec<u32>,
    pub pci: ConfigSpace,
    pub nvm: Nvm,
    pub phy: Phy,
    pub intr: Intr,
    pub dma: DmaSpace,
    pub irq: IrqSink,
    /// Tail writes made without the lock, applied by whoever holds it next.
    pub doorbells: Arc<crate::doorbell::Doorbells>,
    pub mac: [u8; 6],
    /// Transmit queues whose engine state a reset (MAC reset, a TDH write) cleared: applied by the
    /// engines before they next run (bit per queue).
    pub(crate) tx_resets: u8,
    pub rx_fifo: RxFifo,
    pub metrics: Arc<Metrics>,
    /// Backend frames lose nothing when the FIFO is full (flow control) instead of counting missed packets.
    pub lossless_rx: bool,
    /// The backend takes GSO frames and partial checksums (TAP offload mode).
    pub gso_out: bool,
    ioaddr: u32,
    start: Instant,
    systim_high_latch: u32,
    /// RDTR/RADV: receive causes waiting for the delay timers.
    rx_delay: DelayTimer,
    /// TIDV/TADV: transmit write-back causes of IDE descriptors waiting for the delay timers.
    tx_delay: DelayTimer,
    /// 802.3x flow control state.
    pub fc: FlowControl,
    /// MAC control frames (PAUSE) the card sends on its own, for the data path to put on the wire first.
    pub control_out: VecDeque<Vec<u8>>,
    /// The live trace (control socket `trace`).
    pub trace: Arc<Tracer>,
    /// Injected faults (control socket `inject`).
    pub faults: Faults,
    /// The statistics registers, and their totals since the device started.
    pub stats: Stats,
    /// Write-backs held back by a `writeback-delay` fault: when, where, what, and the causes to raise then.
    late_writebacks: VecDeque<crate::port::LateWriteback>,
    /// A `doorbell-latency` fault: doorbells written take effect at this time.
    doorbell_hold: Option<Instant>,
    /// The backend's carrier, before faults.
    backend_carrier: bool,
    /// The data path's clock for the round it is in (read once per round instead of once per frame); `None`
    /// outside a round, where `now()` reads the clock.
    pub round_now: Option<Instant>,
    /// While the data path hands a round's frames to the backend: the transmit engines' causes, raised
    /// with the round's receive causes (`release_tx_causes`) so that one wake-up of the driver sees both.
    pub held_tx: Option<Causes>,
    /// The interrupt messages one evaluation decided, kept between evaluations so that none allocates.
    signals: Vec<Signal>,
    /// Changes with every register write but a tail doorbell, every reset and every DMA map change
    /// (`QueueCtx::epoch`).
    epoch: u64,
}

/// The 82574L function: the shared state, the per-queue transmit engines and the receive path with its
/// per-queue engines.
pub struct Nic {
    core: Core,
    pub tx: [TxQueue; 2],
    pub rx: RxPath,
    /// Buffers of frames the backend has sent, for the transmit engine that runs next.
    tx_spare: crate::pool::FramePool,
}

impl std::ops::Deref for Nic {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::ops::DerefMut for Nic {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

/// The transmit engines' spare buffers: wire-sized ones, and a few for TSO super-packets, which leave
/// whole in TAP offload mode and come back from the backend like the others (`Nic::recycle_tx`).
fn tx_spare_pool() -> crate::pool::FramePool {
    crate::pool::FramePool::new(TX_SPARE_BUFFERS, crate::backend::MAX_FRAME + 64).with_big(TX_BIG_BUFFERS, crate::tx::MAX_TX_PACKET)
}

/// Wire-sized transmit buffers kept for reuse: a round's worth. A round's 256 descriptors can carry about
/// 14 of a Linux guest's 64 KiB TSO sends, 616 segments cut in wire mode, each in a buffer of its own
/// until the backend has sent it.
pub const TX_SPARE_BUFFERS: usize = 1024;

/// TSO super-packet buffers kept for reuse: a round's worth (a round's 256 descriptors carry about 14 of
/// a Linux guest's 64 KiB sends), at most 4 MiB with the largest packets.
const TX_BIG_BUFFERS: usize = 16;

impl Nic {
    pub fn new(mac: [u8; 6], metrics: Arc<Metrics>) -> Nic {
        let trace = Arc::new(Tracer::default());
        let mut n = Core {
            regs: vec![0; REG_COUNT],
            pci: ConfigSpace::new(mac),
            nvm: Nvm::new(mac),
            phy: Phy::new(),
            intr: Intr::default(),
            dma: DmaSpace::new(),
            irq: IrqSink::new(metrics.clone(), trace.clone()),
            doorbells: Arc::default(),
            mac,
            tx_resets: 0,
            rx_fifo: RxFifo::default(),
            metrics,
            lossless_rx: false,
            gso_out: false,
            ioaddr: 0,
            start: Instant::now(),
            systim_high_latch: 0,
            rx_delay: DelayTimer::default(),
            tx_delay: DelayTimer::default(),
            fc: FlowControl::default(),
            control_out: VecDeque::new(),
            trace,
            faults: Faults::default(),
            stats: Stats::default(),
            late_writebacks: VecDeque::new(),
            doorbell_hold: None,
            backend_carrier: true,
            round_now: None,
            held_tx: None,
            signals: Vec::new(),
            epoch: 0,
        };
        n.mac_reset();
        Nic { core: n, tx: [TxQueue::default(), TxQueue::default()], rx: RxPath::default(), tx_spare: tx_spare_pool() }
    }

    /// The shared state, the transmit engines and the buffers sent frames left, borrowed apart.
    pub fn parts(&mut self) -> (&mut Core, &mut [TxQueue; 2], &mut crate::pool::FramePool) {
        (&mut self.core, &mut self.tx, &mut self.tx_spare)
    }

    /// A frame from the wire (`RxPath::receive`).
    pub fn receive(&mut self, f: &[u8]) -> RxOutcome {
        self.rx.receive(&mut self.core, f)
    }

    /// Gives the transmit engines back the buffers of frames the backend has sent, for their next packets.
    pub fn recycle_tx(&mut self, bufs: &mut Vec<Vec<u8>>) {
        for b in bufs.drain(..) {
            self.tx_spare.put(b);
        }
    }

    /// Buffers waiting for the transmit engines.
    pub fn tx_spare(&self) -> usize {
        self.tx_spare.len()
    }

    /// Moves frames waiting in the receive FIFO into the rings while descriptors are available.
    pub fn drain_rx_fifo(&mut self) -> usize {
        self.rx.drain_fifo(&mut self.core)
    }

    /// A register write (`Core::mmio_write`), callable with arguments that read the device.
    #[inline]
    pub fn mmio_write(&mut self, off: u32, val: u32) -> Effects {
        self.core.mmio_write(off, val)
    }
}

impl Core {
    /// The time for timers and moderation: the data path's round time, or the clock.
    #[inline]
    pub fn now(&self) -> Instant {
        self.round_now.unwrap_or_else(Instant::now)
    }

    #[inline]
    pub fn reg(&self, off: u32) -> u32 {
        self.regs.reg(off)
    }
    #[inline]
    pub fn set_reg(&mut self, off: u32, v: u32) {
        self.regs.set_reg(off, v)
    }

    /// What a queue engine works with: the register file, the card's DMA, the statistics and metrics,
    /// borrowed apart from the rest of the card.
    pub(crate) fn queue_ctx(&mut self) -> QueueCtx<'_> {
        let now = self.now();
        QueueCtx {
            regs: &mut self.regs,
            dma: CardDma { space: &self.dma, faults: &mut self.faults, trace: &self.trace, late: &mut self.late_writebacks, now },
            stats: &mut self.stats,
            metrics: &self.metrics,
            causes: Causes::default(),
            epoch: self.epoch,
        }
    }

    /// Puts `dma` in place of the DMA maps (a DMA_MAP or DMA_UNMAP) and returns the old ones: a new epoch,
    /// since what the engines fetched ahead came through the old maps.
    pub fn replace_dma(&mut self, dma: DmaSpace) -> DmaSpace {
        self.new_epoch();
        std::mem::replace(&mut self.dma, dma)
    }

    /// Starts a new epoch: whatever the engines fetched ahead is read again.
    fn new_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Raises the transmit causes held since `held_tx` was set, and stops holding.
    pub fn release_tx_causes(&mut self) {
        if let Some(c) = self.held_tx.take() {
            self.deliver(c);
        }
    }

    /// Delivers the interrupt causes an engine raised.
    pub(crate) fn deliver(&mut self, c: Causes) {
        if c.rx != 0 {
            self.raise_rx(c.rx);
        }
        if c.tx != 0 {
            self.raise_tx(c.tx, c.tx_all_ide);
        }
    }

    /// Software reset (CTRL.RST): MAC registers to their defaults, RAR0 from the NVM. PCI state, DMA maps,
    /// interrupt fds and the PHY are kept.
    pub fn mac_reset(&mut self) {
        self.new_epoch();
        // Tails written before the reset are overtaken by it.
        let _ = self.doorbells.take();
        self.held_tx = None;
        self.rx_delay = DelayTimer::default();
        self.tx_delay = DelayTimer::default();
        self.fc = FlowControl::default();
        self.control_out.clear();
        self.regs.iter_mut().for_each(|r| *r = 0);
        self.stats.reset();
        for &(reg, v) in RESET_VALUES {
            self.set_reg(reg, v);
        }
        // The NVM is (re)loaded at reset: faults armed for it act now.
        self.faults.on_reset();
        let now = Instant::now();
        self.nvm = Nvm::new(self.faults.take(FaultKind::NvmMac, now).map_or(self.mac, |f| f.mac));
        if self.faults.take(FaultKind::NvmChecksum, now).is_some() {
            self.nvm.corrupt_checksum();
        }
        self.late_writebacks.clear();
        self.doorbell_hold = None;
        let m = self.nvm.mac();
        self.set_reg(RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set_reg(RAH0, u16::from_le_bytes([m[4], m[5]]) as u32 | RAH_AV);
        self.intr.reset();
        self.tx_resets = 0b11;
        self.rx_fifo.clear();
        self.ioaddr = 0;
        self.irq.mac_reset(&mut self.pci);
    }

    /// Function reset (DEVICE_RESET, or the client going away): everything but DMA maps and irq fds.
    pub fn function_reset(&mut self) {
        self.new_epoch();
        self.pci.reset(self.mac);
        self.phy.reset();
        self.mac_reset();
        self.irq.function_reset();
    }

    /// The client went away: forget its memory and eventfds, and come back as from power-on.
    pub fn disconnect(&mut self) {
        self.dma.unmap_all();
        self.irq.fds = crate::intr::IrqFds::default();
        self.function_reset();
    }

    pub fn mode(&self) -> Mode {
        if self.pci.msix_enabled() {
            Mode::Msix
        } else if self.pci.msi_enabled() {
            Mode::Msi
        } else {
            Mode::Intx
        }
    }

    pub fn dma_allowed(&self) -> bool {
        self.pci.bus_master()
    }

    /// An empty list for the interrupt messages of one evaluation (the kept one, so nothing allocates).
    fn signals(&mut self) -> Vec<Signal> {
        let mut v = std::mem::take(&mut self.signals);
        v.clear();
        v
    }

    /// Sends the messages an evaluation decided, and keeps the list for the next one.
    fn apply(&mut self, mut signals: Vec<Signal>) {
        self.irq.apply(&signals, &self.intr, &mut self.faults, &mut self.pci);
        signals.clear();
        self.signals = signals;
    }

    /// Interrupt messages with no cause behind them (fault `irq-spurious`).
    pub fn spurious_irqs(&mut self, n: u64) {
        let mode = self.mode();
        self.irq.spurious(n, mode);
    }

    /// A DMA write by the card outside the engines (a late write-back).
    fn dma_write(&mut self, addr: u64, buf: &[u8], what: &'static str) -> Result<(), crate::port::DmaFailed> {
        self.queue_ctx().dma.write(addr, buf, what)
    }

    /// Whether a receive tail write must reach the data path at once: received frames wait in the FIFO
    /// for descriptors, or a fault holds doorbells back.
    pub fn rx_backlog(&self) -> bool {
        !self.rx_fifo.is_empty() || self.doorbell_hold.is_some()
    }

    /// Whether doorbells are held back by a `doorbell-latency` fault now.
    pub fn doorbell_held(&self) -> bool {
        self.doorbell_hold.is_some_and(|t| self.now() < t)
    }

    /// The backend's carrier; with link faults applied, the PHY's.
    pub fn set_backend_carrier(&mut self, on: bool) {
        self.backend_carrier = on;
        self.update_carrier(Instant::now());
    }

    /// Applies the backend carrier and the link faults to the PHY (LSC when that changes the link).
    pub fn update_carrier(&mut self, now: Instant) {
        let forced_off = !self.faults.is_empty() && self.faults.carrier_forced_off(now);
        self.set_carrier(self.backend_carrier && !forced_off);
    }

    /// Raises interrupt causes (ICR bits).
    pub fn raise(&mut self, causes: u32) {
        let mut out = self.signals();
        let (mode, ext) = (self.mode(), self.reg(CTRL_EXT));
        let now = self.now();
        self.intr.raise(causes, mode, ext, now, &mut out);
        self.apply(out);
    }

    fn reevaluate(&mut self) {
        let mut out = self.signals();
        let (mode, ext) = (self.mode(), self.reg(CTRL_EXT));
        let now = self.now();
        self.intr.update(mode, ext, now, &mut out);
        self.apply(out);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let now = self.now();
        let pause_end = self.fc.paused_until.filter(|&t| t > now);
        let late = [self.irq.next_deadline(), self.late_writebacks.front().map(|w| w.0)].into_iter().flatten().min();
        let faults = if self.faults.is_empty() { None } else { self.faults.next_deadline(now) };
        [self.intr.next_deadline(), self.rx_delay.deadline(), self.tx_delay.deadline(), pause_end, late, faults, self.doorbell_hold]
            .into_iter()
            .flatten()
            .min()
    }

    /// Receive causes for a frame written back: RXT0 and the queue causes wait for RDTR/RADV; the others
    /// (descriptor minimum threshold) are raised at once.
    pub(crate) fn raise_rx(&mut self, causes: u32) {
        let delayed = causes & (ICR_RXT0 | ICR_RXQ0 | ICR_RXQ1);
        let due = self.rx_delay.packet(delayed, self.reg(RDTR), self.reg(RADV), self.now());
        let now = (causes & !delayed) | due;
        if now != 0 {
            self.raise(now);
        }
    }

    /// Transmit write-back causes: delayed by TIDV/TADV when every written-back descriptor asked for it
    /// (IDE); otherwise raised at once, with anything the timers held.
    pub(crate) fn raise_tx(&mut self, causes: u32, all_ide: bool) {
        let due =
            if all_ide { self.tx_delay.packet(causes, self.reg(TIDV), self.reg(TADV), self.now()) } else { self.tx_delay.flush() | causes };
        if due != 0 {
            self.raise(due);
        }
    }

    pub fn on_timer(&mut self, now: Instant) {
        if self.doorbell_hold.is_some_and(|t| now >= t) {
            self.doorbell_hold = None;
        }
        self.irq.on_timer(now, &mut self.pci);
        while let Some((_, addr, bytes, causes)) = self.late_writebacks.front().filter(|w| w.0 <= now).cloned() {
            self.late_writebacks.pop_front();
            if self.dma_write(addr, &bytes, "write-back (late)").is_err() {
                Metrics::inc(&self.metrics.dma_errors);
            }
            self.raise(causes);
        }
        self.update_carrier(now);
        if !self.faults.is_empty() && self.faults.spurious_due(now) {
            self.spurious_irqs(1);
        }
        let due = self.rx_delay.expire(now) | self.tx_delay.expire(now);
        if due != 0 {
            self.raise(due);
        }
        let mut out = self.signals();
        let mode = self.mode();
        self.intr.on_timer(mode, now, &mut out);
        self.apply(out);
    }

    /// The INTx client unmasked the line: signal again if it is still asserted.
    pub fn intx_unmask(&mut self) {
        self.irq.intx_unmask(&self.pci);
    }
    pub fn intx_mask(&mut self) {
        self.irq.intx_mask();
    }

    /// A vector got an eventfd: deliver what was held pending for it.
    pub fn msix_fd_set(&mut self, v: usize) {
        self.irq.msix_fd_set(v);
    }

    fn set_carrier(&mut self, on: bool) {
        if self.phy.set_carrier(on) {
            self.raise(ICR_LSC);
        }
    }

    pub fn link_up(&self) -> bool {
        self.phy.link_up()
    }

    /// The MAC address held in a low/high register pair (RAL/RAH, FCAL/FCAH): bytes 0-3, then 4-5.
    pub(crate) fn address_in(&self, low: u32, high: u32) -> [u8; 6] {
        let (l, h) = (self.reg(low).to_le_bytes(), self.reg(high).to_le_bytes());
        [l[0], l[1], l[2], l[3], h[0], h[1]]
    }

    /// Whether transmitted frames come straight back to the receive side instead of going to the wire: PHY
    /// loopback (BMCR bit 14, what Linux's self-test uses) or MAC loopback (RCTL.LBM = 01).
    pub fn loopback(&self) -> bool {
        self.phy.loopback() || self.reg(RCTL) & RCTL_LBM_MASK == RCTL_LBM_MAC
    }

    fn status(&self) -> u32 {
        let mut s = self.reg(STATUS) & STATUS_PHYRA;
        if self.phy.link_up() {
            s |= STATUS_LU | STATUS_FD | STATUS_SPEED_1000;
        }
        if self.reg(CTRL) & CTRL_GIO_MASTER_DISABLE == 0 {
            s |= STATUS_GIO_MASTER_ENABLE;
        }
        s
    }

    fn systim(&self) -> u64 {
        // SYSTIM advances by TIMINCA.incvalue every incperiod ticks of a 16 ns clock.
        let t = self.reg(TIMINCA);
        let (period, inc) = ((t >> TIMINCA_INCPERIOD_SHIFT) as u64, (t & TIMINCA_INCVALUE_MASK) as u64);
        if period == 0 {
            return 0;
        }
        let ticks = self.start.elapsed().as_nanos() as u64 / 16;
        ticks / period * inc
    }

    // ---- BAR0 register access ----

    /// A 32-bit register read by the driver, with its side effects.
    pub fn mmio_read(&mut self, off: u32) -> u32 {
        self.apply_doorbells();
        let v = self.mmio_read_inner(off & !3);
        self.trace.emit(trace::REGS, "reg", || reg_fields("read", off & !3, v));
        v
    }

    /// A 32-bit register write by the driver, with its side effects.
    pub fn mmio_write(&mut self, off: u32, val: u32) -> Effects {
        self.trace.emit(trace::REGS, "reg", || reg_fields("write", off & !3, val));
        self.apply_doorbells();
        self.mmio_write_inner(off & !3, val)
    }

    /// Applies the tail writes made without the lock (see `doorbell`); whether there were any.
    pub fn apply_doorbells(&mut self) -> bool {
        if !self.doorbells.any() {
            return false;
        }
        for (off, val) in self.doorbells.take().into_iter().flatten() {
            self.mmio_write_inner(off, val);
        }
        true
    }

    /// A register's value as the driver would read it, without read side effects (ICR and the statistics
    /// registers are not cleared): what the control socket shows.
    pub fn peek(&self, off: u32) -> u32 {
        let off = off & !3;
        match off {
            ICR | ICS => self.intr.icr,
            IMS | IMC => self.intr.ims,
            IAM => self.intr.iam,
            EIAC => self.intr.eiac,
            IVAR => self.intr.ivar,
            ITR => self.intr.itr,
            o if (EITR0..EITR0 + 4 * EITR_COUNT).contains(&o) => self.intr.eitr.get(((o - EITR0) / 4) as usize).copied().unwrap_or(0),
            STATUS => self.status(),
            IAC => self.intr.asserted_count,
            SYSTIML => self.systim() as u32,
            SYSTIMH => (self.systim() >> 32) as u32,
            o if stats::is_stat(o) => self.stats.peek(o),
            o if crate::doorbell::Doorbells::slot(o).is_some() => self.doorbells.waiting(o).map_or(self.reg(o), |v| v & write_mask(o)),
            _ => self.reg(off),
        }
    }

    /// A read with its side effects (clear on read, latches); every other register reads as `peek` shows it.
    fn mmio_read_inner(&mut self, off: u32) -> u32 {
        match off {
            ICR => {
                let mut out = self.signals();
                let (mode, ext) = (self.mode(), self.reg(CTRL_EXT));
                let v = self.intr.read_icr(mode, ext, Instant::now(), &mut out);
                self.apply(out);
                v
            }
            IAC => {
                let v = self.intr.asserted_count;
                self.intr.asserted_count = 0;
                v
            }
            o if stats::is_stat(o) => self.stats.read(o),
            SYSTIML => {
                let t = self.systim();
                self.systim_high_latch = (t >> 32) as u32;
                t as u32
            }
            SYSTIMH => self.systim_high_latch,
            _ => self.peek(off),
        }
    }

    fn mmio_write_inner(&mut self, off: u32, val: u32) -> Effects {
        if crate::doorbell::Doorbells::slot(off).is_none() {
            self.new_epoch();
        }
        let mut fx = Effects::default();
        let (mode, ext) = (self.mode(), self.reg(CTRL_EXT));
        let now = Instant::now();
        let mut out = self.signals();
        match off {
            CTRL => {
                if val & CTRL_RST != 0 {
                    debug!("CTRL.RST: MAC reset");
                    self.mac_reset();
                    self.set_reg(CTRL, val & !(CTRL_RST | CTRL_PHY_RST));
                    return fx;
                }
                if val & CTRL_PHY_RST != 0 {
                    self.phy.reset();
                    let s = self.reg(STATUS) | STATUS_PHYRA;
                    self.set_reg(STATUS, s);
                }
                self.set_reg(CTRL, val & !(CTRL_RST | CTRL_PHY_RST));
            }
            STATUS => {
                // Only PHYRA is writable (cleared by software).
                let s = (self.reg(STATUS) & !STATUS_PHYRA) | (val & STATUS_PHYRA);
                self.set_reg(STATUS, s);
            }
            EECD => {
                let ro = EECD_PRES | EECD_AUTO_RD | EECD_RO_FIELDS;
                self.set_reg(EECD, (self.reg(EECD) & ro) | (val & !ro));
            }
            EERD => {
                let addr = ((val >> EERD_ADDR_SHIFT) & EERD_ADDR_MASK) as usize;
                let mut v = val & !(EERD_DONE | EERD_DATA_MASK);
                if val & EERD_START != 0 {
                    if let Some(w) = self.nvm.read(addr) {
                        v = (v & !EERD_START) | EERD_DONE | ((w as u32) << EERD_DATA_SHIFT);
                    } else {
                        // Beyond the image: DONE with all-ones data, as an absent word reads.
                        v = (v & !EERD_START) | EERD_DONE | EERD_DATA_MASK;
                    }
                }
                self.set_reg(EERD, v);
            }
            MDIC => self.mdic_write(val),
            ICR => self.intr.write_icr(val, mode, ext, now, &mut out),
            ICS => self.intr.raise(val, mode, ext, now, &mut out),
            IMS => self.intr.write_ims(val, mode, ext, now, &mut out),
            IMC => self.intr.write_imc(val, mode, ext, now, &mut out),
            IAM => self.intr.iam = val,
            EIAC => self.intr.eiac = val,
            IVAR => self.intr.ivar = val,
            ITR => self.intr.itr = val & write_mask(ITR),
            o if (EITR0..EITR0 + 4 * EITR_COUNT).contains(&o) => {
                if let Some(e) = self.intr.eitr.get_mut(((o - EITR0) / 4) as usize) {
                    *e = val & write_mask(o);
                }
            }
            RCTL => {
                let was = self.reg(RCTL) & RCTL_EN;
                self.set_reg(RCTL, val);
                fx.wake = was == 0 && val & RCTL_EN != 0;
            }
            TCTL => {
                self.set_reg(TCTL, val);
                fx.wake = val & TCTL_EN != 0;
            }
            o if o == TDT0 || o == TDT0 + QUEUE_STRIDE => {
                self.set_reg(o, val & write_mask(o));
                self.doorbell_fault(now);
                fx.wake = true;
            }
            o if o == RDT0 || o == RDT0 + QUEUE_STRIDE => {
                self.set_reg(o, val & write_mask(o));
                self.doorbell_fault(now);
                fx.wake = self.rx_backlog();
            }
            o if o == TDH0 || o == TDH0 + QUEUE_STRIDE || o == RDH0 || o == RDH0 + QUEUE_STRIDE => {
                self.set_reg(o, val & write_mask(o));
                if o == TDH0 || o == TDH0 + QUEUE_STRIDE {
                    self.tx_resets |= 1 << ((o - TDH0) / QUEUE_STRIDE);
                }
            }
            // The delay timers' flush bit (FPD, 31) releases what they hold and is not stored.
            RDTR | TIDV => {
                self.set_reg(off, val & write_mask(off));
                if val & DELAY_FPD != 0 {
                    let held = if off == RDTR { self.rx_delay.flush() } else { self.tx_delay.flush() };
                    if held != 0 {
                        self.intr.raise(held, mode, ext, now, &mut out);
                    }
                }
            }
            o if stats::is_stat(o) => {}
            SYSTIML | SYSTIMH => {}
            _ => self.set_reg(off, val & write_mask(off)),
        }
        self.apply(out);
        if self.intr.next_deadline().is_some() {
            fx.wake = true;
        }
        fx
    }

    /// A `doorbell-latency` fault holds the doorbell just written (and any before it) back.
    fn doorbell_fault(&mut self, now: Instant) {
        if !self.faults.is_empty() {
            if let Some(f) = self.faults.take(FaultKind::DoorbellLatency, now) {
                self.doorbell_hold = Some(now + f.delay);
            }
        }
    }

    fn mdic_write(&mut self, val: u32) {
        let phy = (val >> MDIC_PHY_SHIFT) & 0x1F;
        let reg = ((val >> MDIC_REG_SHIFT) & 0x1F) as u8;
        let op = val & (3 << 26);
        let mut v = val & !(MDIC_READY | MDIC_ERROR);
        let silent = !self.faults.is_empty() && self.faults.take(FaultKind::PhySilent, Instant::now()).is_some();
        if silent {
            // The PHY does not answer: the cycle ends with an error and all-ones data.
            v |= MDIC_ERROR | MDIC_DATA_MASK;
        } else if phy != PHY_ADDR {
            v |= MDIC_ERROR;
        } else if op == MDIC_OP_READ {
            v = (v & !MDIC_DATA_MASK) | self.phy.read(reg) as u32;
        } else if op == MDIC_OP_WRITE {
            if self.phy.write(reg, (val & MDIC_DATA_MASK) as u16) == LinkEvent::Changed {
                info!("link {}", if self.phy.link_up() { "up, 1000 Mb/s full duplex" } else { "down" });
                self.raise(ICR_LSC);
            }
        } else {
            v |= MDIC_ERROR;
        }
        v |= MDIC_READY;
        self.set_reg(MDIC, v);
        if val & MDIC_INT_EN != 0 {
            self.raise(ICR_MDAC);
        }
    }

    /// BAR0 access of 1, 2, 4 or 8 bytes at any offset inside the BAR.
    pub fn bar0_read(&mut self, off: u64, data: &mut [u8]) -> bool {
        if !Self::access_ok(off, data.len(), BAR0_SIZE) {
            Metrics::inc(&self.metrics.bad_register_accesses);
            return false;
        }
        if data.len() == 8 && off.is_multiple_of(4) {
            let lo = self.mmio_read(off as u32);
            let hi = self.mmio_read(off as u32 + 4);
            put(data, 0, &lo.to_le_bytes());
            put(data, 4, &hi.to_le_bytes());
            return true;
        }
        let base = (off & !3) as u32;
        let v = self.mmio_read(base).to_le_bytes();
        let s = (off & 3) as usize;
        match v.get(s..s + data.len()) {
            Some(part) => data.copy_from_slice(part),
            None => return false,
        }
        true
    }

    pub fn bar0_write(&mut self, off: u64, data: &[u8]) -> Option<Effects> {
        // A sub-dword write merges into the stored value, which must hold the tails already rung.
        self.apply_doorbells();
        if !Self::access_ok(off, data.len(), BAR0_SIZE) {
            Metrics::inc(&self.metrics.bad_register_accesses);
            return None;
        }
        if data.len() == 8 && off.is_multiple_of(4) {
            let a = self.mmio_write(off as u32, le32(data, 0).unwrap_or(0));
            let b = self.mmio_write(off as u32 + 4, le32(data, 4).unwrap_or(0));
            return Some(Effects { wake: a.wake || b.wake });
        }
        let base = (off & !3) as u32;
        let s = (off & 3) as usize;
        let mut v = self.reg(base).to_le_bytes();
        if data.len() < 4 {
            // Sub-dword write: merge into the stored value (no read side effects).
            if base == ICR || base == ICS || base == IMS || base == IMC {
                v = [0; 4];
            }
        }
        if !put(&mut v, s, data) {
            return None;
        }
        Some(self.mmio_write(base, u32::from_le_bytes(v)))
    }

    /// Sizes 1, 2, 4 (within one dword) or 8 (dword aligned), inside the BAR.
    fn access_ok(off: u64, len: usize, size: u64) -> bool {
        let fits = off.checked_add(len as u64).is_some_and(|e| e <= size);
        let shape = match len {
            1 => true,
            2 | 4 => (off & 3) + len as u64 <= 4,
            8 => off.is_multiple_of(4),
            _ => false,
        };
        fits && shape
    }

    /// BAR2: the IOADDR/IODATA window onto BAR0.
    pub fn io_read(&mut self, off: u64, data: &mut [u8]) -> bool {
        if data.len() != 4 || !(off == IOADDR || off == IODATA) {
            Metrics::inc(&self.metrics.bad_register_accesses);
            return false;
        }
        let v = if off == IOADDR {
            self.ioaddr
        } else if (self.ioaddr as u64) < BAR0_SIZE {
            self.mmio_read(self.ioaddr)
        } else {
            0
        };
        data.copy_from_slice(&v.to_le_bytes());
        true
    }

    pub fn io_write(&mut self, off: u64, data: &[u8]) -> Option<Effects> {
        if data.len() != 4 || !(off == IOADDR || off == IODATA) {
            Metrics::inc(&self.metrics.bad_register_accesses);
            return None;
        }
        let v = le32(data, 0)?;
        if off == IOADDR {
            self.ioaddr = v & IOADDR_MASK;
            Some(Effects::default())
        } else {
            Some(self.mmio_write(self.ioaddr, v))
        }
    }

    /// BAR3: the MSI-X table is emulated by the client; the PBA shows vectors held for lack of an eventfd.
    pub fn msix_bar_read(&self, off: u64, data: &mut [u8]) -> bool {
        let Some(end) = off.checked_add(data.len() as u64) else { return false };
        if end > BAR3_SIZE {
            return false;
        }
        data.fill(0);
        if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + 8).contains(&off) {
            let pba = (self.irq.msix_pending() as u64).to_le_bytes();
            let s = (off - MSIX_PBA_OFFSET) as usize;
            let n = data.len().min(8 - s);
            if let (Some(d), Some(p)) = (data.get_mut(..n), pba.get(s..s + n)) {
                d.copy_from_slice(p);
            }
        }
        true
    }

    /// Config space write with what follows from it (interrupt mode, bus mastering).
    pub fn config_write(&mut self, off: u64, data: &[u8]) -> Option<Effects> {
        self.apply_doorbells();
        let mode_before = self.mode();
        let bm_before = self.pci.bus_master();
        if !self.pci.write(off, data) {
            return None;
        }
        let mut fx = Effects::default();
        if self.mode() != mode_before {
            debug!("interrupt mode {:?} -> {:?}", mode_before, self.mode());
            if mode_before == Mode::Intx {
                self.irq.set_intx(false, &mut self.pci);
            }
            self.reevaluate();
        }
        if self.pci.bus_master() != bm_before {
            debug!("bus mastering {}", if self.pci.bus_master() { "on" } else { "off" });
            fx.wake = true;
        }
        Some(fx)
    }

    /// INTx line level, whether it is masked, and the MSI-X vectors held pending for lack of an eventfd.
    pub fn intx_state(&self) -> (bool, bool, u32) {
        self.irq.state()
    }

    /// Counters by name: the device metrics, faults' effects on interrupts, trace events dropped.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.metrics.snapshot();
        v.push(("irq_lost_injected", self.irq.lost));
        v.push(("irq_late_injected", self.irq.delayed));
        v.push(("irq_spurious_injected", self.irq.spurious));
        v.push(("trace_events_dropped", self.trace.dropped.load(std::sync::atomic::Ordering::Relaxed)));
        v
    }

    pub fn log_metrics(&self) {
        for (k, v) in self.metrics.snapshot() {
            if v != 0 {
                info!("  {k}: {v}");
            }
        }
    }
}

/// A register access as a trace line: offset, datasheet name, value, direction, and who made it.
pub(crate) fn reg_fields(dir: &str, off: u32, v: u32) -> serde_json::Value {
    json!({ "dir": dir, "side": "driver", "offset": format!("{off:#07x}"), "name": name_of(off), "value": format!("{v:#010x}") })
}

/// The name of an interrupt moderation slot.
pub fn slot_name(slot: usize) -> String {
    if slot == crate::intr::LEGACY_SLOT {
        "intx/msi".into()
    } else {
        format!("msix{slot}")
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn nic() -> Nic {
        Nic::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], Arc::new(Metrics::default()))
    }

    #[test]
    fn reset_loads_rar0_from_nvm() {
        let mut n = nic();
        assert_eq!(n.mmio_read(RAL0), 0x1200_5452);
        assert_eq!(n.mmio_read(RAH0), 0x8000_5634);
        n.mmio_write(RAL0, 0);
        n.mmio_write(CTRL, CTRL_RST);
        assert_eq!(n.mmio_read(CTRL) & CTRL_RST, 0, "self-clearing");
        assert_eq!(n.mmio_read(RAL0), 0x1200_5452);
        assert_ne!(n.mmio_read(EECD) & EECD_AUTO_RD, 0);
    }

    #[test]
    fn eerd_reads_nvm_words_and_sum_is_baba() {
        let mut n = nic();
        let mut sum = 0u16;
        for a in 0..64u32 {
            n.mmio_write(EERD, (a << EERD_ADDR_SHIFT) | EERD_START);
            let v = n.mmio_read(EERD);
            assert_ne!(v & EERD_DONE, 0);
            sum = sum.wrapping_add((v >> 16) as u16);
        }
        assert_eq!(sum, 0xBABA);
        n.mmio_write(EERD, (0x3FFF << EERD_ADDR_SHIFT) | EERD_START);
        assert_eq!(n.mmio_read(EERD) >> 16, 0xFFFF, "beyond the image, no panic");
    }

    #[test]
    fn mdic_phy_access() {
        let mut n = nic();
        let read = |n: &mut Nic, phy: u32, reg: u32| {
            n.mmio_write(MDIC, MDIC_OP_READ | (phy << MDIC_PHY_SHIFT) | (reg << MDIC_REG_SHIFT));
            n.mmio_read(MDIC)
        };
        let v = read(&mut n, 1, 2);
        assert_ne!(v & MDIC_READY, 0);
        assert_eq!(v & MDIC_ERROR, 0);
        assert_eq!(v & 0xFFFF, 0x0141);
        assert_eq!((v >> MDIC_REG_SHIFT) & 0x1F, 2, "register field echoed");
        assert_eq!(read(&mut n, 1, 3) & 0xFFFF, 0x0CB1);
        assert_ne!(read(&mut n, 2, 2) & MDIC_ERROR, 0, "only PHY address 1 answers");
        // Power-down through MDIC takes the link down with LSC.
        n.intr.ims = ICR_LSC;
        let bmcr = read(&mut n, 1, 0) & 0xFFFF;
        n.mmio_write(MDIC, MDIC_OP_WRITE | (1 << MDIC_PHY_SHIFT) | (bmcr | 0x0800));
        assert_eq!(n.mmio_read(STATUS) & STATUS_LU, 0);
        assert_ne!(n.intr.icr & ICR_LSC, 0);
        n.mmio_write(MDIC, MDIC_OP_WRITE | (1 << MDIC_PHY_SHIFT) | (bmcr & !0x0800));
        let s = n.mmio_read(STATUS);
        assert_eq!(s & (STATUS_LU | STATUS_FD | (3 << 6)), STATUS_LU | STATUS_FD | STATUS_SPEED_1000);
    }

    #[test]
    fn statistics_clear_on_read() {
        let mut n = nic();
        n.stats.inc(GPRC, 3);
        n.stats.add64(GORCL, 0x1_0000_0010);
        assert_eq!(n.mmio_read(GPRC), 3);
        assert_eq!(n.mmio_read(GPRC), 0);
        assert_eq!(n.mmio_read(GORCL), 0x10);
        assert_eq!(n.mmio_read(GORCH), 1);
        assert_eq!(n.mmio_read(GORCL), 0, "reading the high half cleared the pair");
        n.stats.inc(GPRC, u32::MAX);
        n.stats.inc(GPRC, 5);
        assert_eq!(n.mmio_read(GPRC), u32::MAX, "saturates");
    }

    #[test]
    fn gio_master_disable_clears_status_bit() {
        let mut n = nic();
        assert_ne!(n.mmio_read(STATUS) & STATUS_GIO_MASTER_ENABLE, 0);
        n.mmio_write(CTRL, n.reg(CTRL) | CTRL_GIO_MASTER_DISABLE);
        assert_eq!(n.mmio_read(STATUS) & STATUS_GIO_MASTER_ENABLE, 0);
    }

    #[test]
    fn bad_accesses_are_refused() {
        let mut n = nic();
        let mut b = [0u8; 4];
        assert!(!n.bar0_read(BAR0_SIZE - 2, &mut b));
        assert!(!n.bar0_read(u64::MAX - 1, &mut b));
        let mut b3 = [0u8; 3];
        assert!(!n.bar0_read(0, &mut b3));
        assert!(n.bar0_write(BAR0_SIZE, &[0; 4]).is_none());
        assert!(n.io_write(8, &[0; 4]).is_none());
        assert_eq!(n.metrics.bad_register_accesses.load(std::sync::atomic::Ordering::Relaxed), 5);
        // I/O window reaches registers.
        n.io_write(IOADDR, &(RAL0).to_le_bytes()).unwrap();
        n.io_read(IODATA, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x1200_5452);
    }
}
