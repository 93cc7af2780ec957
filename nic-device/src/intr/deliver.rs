//! Interrupt delivery: the [`Signal`]s the cause logic returns become eventfd writes. Owns the eventfds
//! SET_IRQS gave, the INTx line (level, and the automask vfio-user requires: after one trigger the client
//! must UNMASK before the next), the MSI-X pending bits (a vector with no eventfd yet, shown in the PBA),
//! the interrupt faults (lost, late, spurious) and the interrupt trace.

use super::{Intr, Mode, Signal, SLOTS};
use crate::fault::{Faults, Kind as FaultKind};
use crate::metrics::Metrics;
use crate::nic::slot_name;
use crate::pci::ConfigSpace;
use crate::regs::MSIX_VECTORS;
use crate::trace::{self, Tracer};
use serde_json::json;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Interrupt eventfds, as SET_IRQS gave them.
#[derive(Default)]
pub struct IrqFds {
    pub intx: Option<File>,
    pub msi: Option<File>,
    pub msix: [Option<File>; MSIX_VECTORS],
    pub err: Option<File>,
    pub req: Option<File>,
}

/// Writes 1 to an interrupt eventfd; `false` when there is none.
pub(crate) fn signal_fd(f: &Option<File>) -> bool {
    match f {
        Some(file) => {
            let mut file: &File = file;
            let _ = file.write(&1u64.to_ne_bytes());
            true
        }
        None => false,
    }
}

/// Where interrupt messages go.
pub struct IrqSink {
    pub fds: IrqFds,
    intx_level: bool,
    intx_masked: bool,
    msix_pending: u32,
    /// Interrupt messages held back by an `irq-late` fault, in the order they fall due (one delay for all);
    /// a message already waiting absorbs a new one for the same vector, as an eventfd counts.
    late: VecDeque<(Instant, Signal)>,
    /// Interrupt messages dropped, delayed or made up by faults.
    pub lost: u64,
    pub delayed: u64,
    pub spurious: u64,
    moderated_seen: [u64; SLOTS],
    metrics: Arc<Metrics>,
    trace: Arc<Tracer>,
}

impl IrqSink {
    pub fn new(metrics: Arc<Metrics>, trace: Arc<Tracer>) -> IrqSink {
        IrqSink {
            fds: IrqFds::default(),
            intx_level: false,
            intx_masked: false,
            msix_pending: 0,
            late: VecDeque::new(),
            lost: 0,
            delayed: 0,
            spurious: 0,
            moderated_seen: [0; SLOTS],
            metrics,
            trace,
        }
    }

    /// Sends what the cause logic decided, through the interrupt faults.
    pub fn apply(&mut self, signals: &[Signal], intr: &Intr, faults: &mut Faults, pci: &mut ConfigSpace) {
        self.trace_moderation(intr);
        for &s in signals {
            let message = !matches!(s, Signal::IntxLevel(false));
            if message && !faults.is_empty() {
                let now = Instant::now();
                if faults.take(FaultKind::IrqLost, now).is_some() {
                    self.lost += 1;
                    self.trace.emit(trace::IRQ, "irq-lost", || json!({ "signal": format!("{s:?}") }));
                    continue;
                }
                if let Some(f) = faults.take(FaultKind::IrqLate, now) {
                    self.delayed += 1;
                    self.trace.emit(
                        trace::IRQ,
                        "irq-late",
                        || json!({ "signal": format!("{s:?}"), "delay_ms": f.delay.as_secs_f64() * 1e3 }),
                    );
                    if !self.late.iter().any(|l| l.1 == s) {
                        self.late.push_back((now + f.delay, s));
                    }
                    continue;
                }
            }
            self.deliver(s, pci);
        }
    }

    /// Interrupts held back by moderation since the last look, for the trace.
    fn trace_moderation(&mut self, intr: &Intr) {
        if !self.trace.on(trace::IRQ) {
            self.moderated_seen = intr.moderated;
            return;
        }
        for (slot, (&m, seen)) in intr.moderated.iter().zip(self.moderated_seen.iter_mut()).enumerate() {
            if m != *seen {
                let n = m - *seen;
                *seen = m;
                self.trace.emit(trace::IRQ, "irq-moderated", || json!({ "slot": slot_name(slot), "held": n }));
            }
        }
    }

    fn deliver(&mut self, s: Signal, pci: &mut ConfigSpace) {
        let sent = match s {
            Signal::IntxLevel(l) => {
                self.set_intx(l, pci);
                None
            }
            Signal::Msi => Some(signal_fd(&self.fds.msi)),
            Signal::Msix(v) => {
                let ok = self.fds.msix.get(v).is_some_and(signal_fd);
                if !ok {
                    self.msix_pending |= 1 << v;
                }
                Some(ok)
            }
        };
        match sent {
            Some(true) => Metrics::inc(&self.metrics.irqs_sent),
            Some(false) => Metrics::inc(&self.metrics.irq_no_fd),
            None => {}
        }
        if s != Signal::IntxLevel(false) {
            self.trace.emit(trace::IRQ, "irq", || json!({ "signal": format!("{s:?}"), "delivered": sent.unwrap_or(true) }));
        }
    }

    /// Sets the INTx line (and the config space's interrupt status); a rising level triggers.
    pub fn set_intx(&mut self, level: bool, pci: &mut ConfigSpace) {
        if level == self.intx_level {
            return;
        }
        self.intx_level = level;
        pci.set_interrupt_status(level);
        if level {
            self.trigger_intx(pci);
        }
    }

    fn trigger_intx(&mut self, pci: &ConfigSpace) {
        if self.intx_masked || pci.intx_disabled() {
            return;
        }
        if signal_fd(&self.fds.intx) {
            self.intx_masked = true;
            Metrics::inc(&self.metrics.irqs_sent);
        } else {
            Metrics::inc(&self.metrics.irq_no_fd);
        }
    }

    /// The INTx client unmasked the line: signal again if it is still asserted.
    pub fn intx_unmask(&mut self, pci: &ConfigSpace) {
        self.intx_masked = false;
        if self.intx_level {
            self.trigger_intx(pci);
        }
    }

    pub fn intx_mask(&mut self) {
        self.intx_masked = true;
    }

    /// A vector got an eventfd: deliver what was held pending for it.
    pub fn msix_fd_set(&mut self, v: usize) {
        if self.msix_pending & (1 << v) != 0 && self.fds.msix.get(v).is_some_and(signal_fd) {
            self.msix_pending &= !(1 << v);
            Metrics::inc(&self.metrics.irqs_sent);
        }
    }

    /// Interrupt messages with no cause behind them (fault `irq-spurious`): every MSI-X vector with an
    /// eventfd, or the MSI or INTx eventfd, `n` times. (Messages sent faster than the client reads its
    /// eventfd merge into one, as eventfds count.)
    pub fn spurious(&mut self, n: u64, mode: Mode) {
        for _ in 0..n {
            let mut any = false;
            match mode {
                Mode::Msix => {
                    for f in &self.fds.msix {
                        any |= signal_fd(f);
                    }
                }
                Mode::Msi => any = signal_fd(&self.fds.msi),
                Mode::Intx => any = signal_fd(&self.fds.intx),
            }
            if any {
                self.spurious += 1;
            }
        }
        self.trace.emit(trace::IRQ, "irq-spurious", || json!({ "count": n }));
    }

    /// Delivers the late messages that fell due.
    pub fn on_timer(&mut self, now: Instant, pci: &mut ConfigSpace) {
        while let Some(&(_, sig)) = self.late.front().filter(|l| l.0 <= now) {
            self.late.pop_front();
            self.deliver(sig, pci);
        }
    }

    /// When the next late message falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.late.front().map(|l| l.0)
    }

    /// Software reset: late messages are forgotten and the line drops.
    pub fn mac_reset(&mut self, pci: &mut ConfigSpace) {
        self.late.clear();
        self.set_intx(false, pci);
    }

    /// Function reset: pending bits and the INTx mask go too.
    pub fn function_reset(&mut self) {
        self.msix_pending = 0;
        self.intx_masked = false;
    }

    /// The MSI-X vectors held pending for lack of an eventfd (the PBA).
    pub fn msix_pending(&self) -> u32 {
        self.msix_pending
    }

    /// INTx line level, whether it is masked, and the MSI-X pending bits.
    pub fn state(&self) -> (bool, bool, u32) {
        (self.intx_level, self.intx_masked, self.msix_pending)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    fn eventfd() -> File {
        // SAFETY: eventfd returns a fresh fd (checked) that the File then owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: as above.
        unsafe { File::from_raw_fd(fd) }
    }

    /// The eventfd's count since the last read (0 when nothing was written).
    fn count(f: &File) -> u64 {
        let mut b = [0u8; 8];
        let mut r: &File = f;
        r.read(&mut b).map(|_| u64::from_ne_bytes(b)).unwrap_or(0)
    }

    fn sink() -> (IrqSink, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (IrqSink::new(m.clone(), Arc::new(Tracer::default())), m)
    }

    #[test]
    fn intx_is_automasked_until_the_client_unmasks() {
        let (mut s, m) = sink();
        let mut pci = ConfigSpace::new([0; 6]);
        let fd = eventfd();
        s.fds.intx = Some(fd.try_clone().unwrap());
        s.set_intx(true, &mut pci);
        assert_eq!(count(&fd), 1);
        s.set_intx(false, &mut pci);
        s.set_intx(true, &mut pci);
        assert_eq!(count(&fd), 0, "masked after the first trigger");
        assert_eq!(s.state(), (true, true, 0));
        s.intx_unmask(&pci);
        assert_eq!(count(&fd), 1, "the line is still up: unmasking triggers again");
        s.set_intx(false, &mut pci);
        s.intx_unmask(&pci);
        assert_eq!(count(&fd), 0, "a low line does not trigger");
        assert_eq!(m.irqs_sent.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn msix_without_an_eventfd_is_pending_until_one_arrives() {
        let (mut s, m) = sink();
        let mut pci = ConfigSpace::new([0; 6]);
        let intr = Intr::default();
        s.apply(&[Signal::Msix(2)], &intr, &mut Faults::default(), &mut pci);
        assert_eq!(s.msix_pending(), 1 << 2);
        assert_eq!(m.irq_no_fd.load(std::sync::atomic::Ordering::Relaxed), 1);
        let fd = eventfd();
        s.fds.msix[2] = Some(fd.try_clone().unwrap());
        s.msix_fd_set(2);
        assert_eq!(count(&fd), 1);
        assert_eq!(s.msix_pending(), 0);
        s.apply(&[Signal::Msix(2)], &intr, &mut Faults::default(), &mut pci);
        assert_eq!(count(&fd), 1);
        s.function_reset();
        assert_eq!(s.state(), (false, false, 0));
    }
}
