//! Interrupts in one home. This module: ICR/ICS/IMS/IMC/IAM/EIAC/IVAR semantics and ITR/EITR moderation,
//! pure state that returns [`Signal`]s; `deliver`: those signals to eventfds (INTx automask, MSI-X pending
//! bits, interrupt faults).

pub mod deliver;
pub use deliver::{IrqFds, IrqSink};

use crate::regs::*;
use std::time::{Duration, Instant};

/// How the function currently signals, from its PCI config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Intx,
    Msi,
    Msix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The INTx line level.
    IntxLevel(bool),
    Msi,
    Msix(usize),
}

/// Slot for moderation state: MSI-X vectors 0..5, and one for INTx/MSI.
pub const SLOTS: usize = MSIX_VECTORS + 1;
pub const LEGACY_SLOT: usize = MSIX_VECTORS;
/// ITR/EITR interval unit.
const ITR_UNIT_NS: u64 = 256;

#[derive(Debug)]
pub struct Intr {
    pub icr: u32,
    pub ims: u32,
    pub iam: u32,
    pub eiac: u32,
    pub ivar: u32,
    pub itr: u32,
    pub eitr: [u32; MSIX_VECTORS],
    /// Causes already signalled by a message that are still pending.
    signaled: u32,
    last_fire: [Option<Instant>; SLOTS],
    /// Causes waiting on a slot's moderation timer.
    deferred: [u32; SLOTS],
    /// Interrupt assertions (the IAC counter).
    pub asserted_count: u32,
    /// Per slot (MSI-X vectors, then INTx/MSI): messages sent and causes held back by moderation.
    pub fired: [u64; SLOTS],
    pub moderated: [u64; SLOTS],
}

impl Default for Intr {
    fn default() -> Self {
        Intr {
            icr: 0,
            ims: 0,
            iam: 0,
            eiac: 0,
            ivar: 0,
            itr: 0,
            eitr: [0; MSIX_VECTORS],
            signaled: 0,
            last_fire: [None; SLOTS],
            deferred: [0; SLOTS],
            asserted_count: 0,
            fired: [0; SLOTS],
            moderated: [0; SLOTS],
        }
    }
}

/// The MSI-X vector IVAR routes `cause` to, if the entry is valid.
pub fn ivar_vector(ivar: u32, cause: u32) -> Option<usize> {
    let shift = match cause {
        ICR_RXQ0 => 0,
        ICR_RXQ1 => 4,
        ICR_TXQ0 => 8,
        ICR_TXQ1 => 12,
        ICR_OTHER => 16,
        _ => return None,
    };
    let f = (ivar >> shift) & 0xF;
    (f & IVAR_VALID != 0).then_some((f & IVAR_VECTOR_MASK) as usize).filter(|&v| v < MSIX_VECTORS)
}

impl Intr {
    /// Back to reset values; the message counters (not registers) carry on.
    pub fn reset(&mut self) {
        let (fired, moderated) = (self.fired, self.moderated);
        *self = Intr { fired, moderated, ..Intr::default() };
    }

    fn interval(&self, slot: usize) -> Duration {
        let units = if slot == LEGACY_SLOT { self.itr } else { self.eitr.get(slot).copied().unwrap_or(0) } & DELAY_COUNT_MASK;
        Duration::from_nanos(units as u64 * ITR_UNIT_NS)
    }

    /// Fires a slot now or defers it under moderation.
    fn fire(&mut self, slot: usize, causes: u32, signal: Signal, now: Instant, out: &mut Vec<Signal>) {
        let iv = self.interval(slot);
        let (Some(deferred), Some(last_fire)) = (self.deferred.get_mut(slot), self.last_fire.get_mut(slot)) else { return };
        let moderated = self.moderated.get_mut(slot);
        if *deferred != 0 {
            *deferred |= causes;
            if let Some(m) = moderated {
                *m += 1;
            }
            return;
        }
        if let Some(last) = *last_fire {
            if !iv.is_zero() && now < last + iv {
                *deferred |= causes;
                if let Some(m) = moderated {
                    *m += 1;
                }
                return;
            }
        }
        *last_fire = Some(now);
        if let Some(f) = self.fired.get_mut(slot) {
            *f += 1;
        }
        self.asserted_count = self.asserted_count.wrapping_add(1);
        out.push(signal);
    }

    /// Re-evaluates the pending state after any change.
    pub fn update(&mut self, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) {
        if mode == Mode::Msix && self.icr & ICR_OTHER_CAUSES != 0 {
            self.icr |= ICR_OTHER;
        }
        let pending = self.icr & self.ims & !ICR_INT_ASSERTED;
        self.signaled &= pending;
        match mode {
            Mode::Intx => {
                if pending != 0 && self.signaled == 0 {
                    self.signaled = pending;
                    self.fire(LEGACY_SLOT, pending, Signal::IntxLevel(true), now, out);
                } else if pending == 0 {
                    self.deferred[LEGACY_SLOT] = 0;
                    out.push(Signal::IntxLevel(false));
                } else {
                    self.signaled |= pending;
                }
            }
            Mode::Msi => {
                let fresh = pending & !self.signaled;
                if fresh != 0 {
                    self.signaled |= fresh;
                    self.fire(LEGACY_SLOT, fresh, Signal::Msi, now, out);
                }
            }
            Mode::Msix => {
                for cause in [ICR_RXQ0, ICR_RXQ1, ICR_TXQ0, ICR_TXQ1, ICR_OTHER] {
                    if pending & cause == 0 || self.signaled & cause != 0 {
                        continue;
                    }
                    self.signaled |= cause;
                    if let Some(vec) = ivar_vector(self.ivar, cause) {
                        self.fire(vec, cause, Signal::Msix(vec), now, out);
                    }
                    // Auto-clear (EIAC) and auto-mask (EIAME with IAM) happen as the message is sent.
                    let clear = self.eiac & cause;
                    self.icr &= !clear;
                    self.signaled &= !clear;
                    if ctrl_ext & CTRL_EXT_EIAME != 0 {
                        self.ims &= !(self.iam & cause);
                    }
                }
            }
        }
    }

    pub fn raise(&mut self, causes: u32, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) {
        self.icr |= causes & !ICR_INT_ASSERTED;
        self.update(mode, ctrl_ext, now, out);
    }

    /// ICR read: returns the causes (with INT_ASSERTED when an enabled cause is pending) and clears them when
    /// an interrupt was asserted or no cause is enabled; with CTRL_EXT.IAME the read also masks IAM.
    pub fn read_icr(&mut self, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) -> u32 {
        let asserted = self.icr & self.ims != 0;
        let ret = if asserted { self.icr | ICR_INT_ASSERTED } else { self.icr };
        if asserted || self.ims == 0 {
            self.icr = 0;
            if asserted && ctrl_ext & CTRL_EXT_IAME != 0 {
                self.ims &= !self.iam;
            }
        }
        self.update(mode, ctrl_ext, now, out);
        ret
    }

    pub fn write_icr(&mut self, val: u32, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) {
        self.icr &= !val;
        self.update(mode, ctrl_ext, now, out);
    }

    pub fn write_ims(&mut self, val: u32, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) {
        self.ims |= val & !ICR_INT_ASSERTED;
        self.update(mode, ctrl_ext, now, out);
    }

    pub fn write_imc(&mut self, val: u32, mode: Mode, ctrl_ext: u32, now: Instant, out: &mut Vec<Signal>) {
        self.ims &= !val;
        self.update(mode, ctrl_ext, now, out);
    }

    /// The earliest moderation deadline, if any slot is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        (0..SLOTS)
            .filter(|&s| self.deferred.get(s).is_some_and(|&d| d != 0))
            .filter_map(|s| self.last_fire.get(s).copied().flatten().map(|l| l + self.interval(s)))
            .min()
    }

    /// Fires moderated slots whose time has come, if their causes are still enabled.
    pub fn on_timer(&mut self, mode: Mode, now: Instant, out: &mut Vec<Signal>) {
        for slot in 0..SLOTS {
            let causes = self.deferred.get(slot).copied().unwrap_or(0);
            if causes == 0 {
                continue;
            }
            let due = self.last_fire.get(slot).copied().flatten().map(|l| l + self.interval(slot)).unwrap_or(now);
            if now < due {
                continue;
            }
            if let Some(d) = self.deferred.get_mut(slot) {
                *d = 0;
            }
            let still = match mode {
                Mode::Msix => causes & (self.ims | self.eiac) != 0,
                _ => self.icr & self.ims != 0,
            };
            if !still {
                continue;
            }
            let sig = match (mode, slot) {
                (Mode::Msix, v) if v < MSIX_VECTORS => Signal::Msix(v),
                (Mode::Msi, LEGACY_SLOT) => Signal::Msi,
                (Mode::Intx, LEGACY_SLOT) => Signal::IntxLevel(true),
                _ => continue,
            };
            self.fire(slot, causes, sig, now, out);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn legacy_icr_read_clears_and_iame_masks() {
        let mut i = Intr::default();
        let now = t0();
        let mut out = Vec::new();
        i.iam = 0xFFFF_FFFF;
        i.write_ims(ICR_RXT0 | ICR_TXDW | ICR_LSC, Mode::Intx, CTRL_EXT_IAME, now, &mut out);
        assert!(out.iter().all(|s| *s == Signal::IntxLevel(false)));
        out.clear();
        i.raise(ICR_RXT0, Mode::Intx, CTRL_EXT_IAME, now, &mut out);
        assert_eq!(out, vec![Signal::IntxLevel(true)]);
        out.clear();
        let v = i.read_icr(Mode::Intx, CTRL_EXT_IAME, now, &mut out);
        assert_eq!(v, ICR_RXT0 | ICR_INT_ASSERTED);
        assert_eq!(i.icr, 0);
        assert_eq!(i.ims, 0, "IAME + IAM all ones masks everything on read");
        assert_eq!(out, vec![Signal::IntxLevel(false)]);
        // A cause that arrives while masked is kept and fires on IMS write.
        out.clear();
        i.raise(ICR_TXDW, Mode::Intx, CTRL_EXT_IAME, now, &mut out);
        assert_eq!(out, vec![Signal::IntxLevel(false)]);
        out.clear();
        i.write_ims(ICR_TXDW, Mode::Intx, CTRL_EXT_IAME, now, &mut out);
        assert_eq!(out, vec![Signal::IntxLevel(true)]);
    }

    #[test]
    fn icr_read_with_nothing_enabled_clears_without_assert_bit() {
        let mut i = Intr::default();
        let mut out = Vec::new();
        i.raise(ICR_LSC, Mode::Msi, 0, t0(), &mut out);
        assert!(out.is_empty());
        assert_eq!(i.read_icr(Mode::Msi, 0, t0(), &mut out), ICR_LSC);
        assert_eq!(i.icr, 0);
    }

    #[test]
    fn ics_sets_causes_and_msi_fires_once_per_new_cause() {
        let mut i = Intr::default();
        let now = t0();
        let mut out = Vec::new();
        i.write_ims(ICR_RXSEQ | ICR_RXT0 | ICR_TXDW, Mode::Msi, 0, now, &mut out);
        i.raise(ICR_RXSEQ, Mode::Msi, 0, now, &mut out); // Linux's MSI self-test
        assert_eq!(out, vec![Signal::Msi]);
        i.raise(ICR_RXSEQ, Mode::Msi, 0, now, &mut out);
        assert_eq!(out.len(), 1, "same pending cause does not re-fire");
        i.raise(ICR_TXDW, Mode::Msi, 0, now, &mut out);
        assert_eq!(out.len(), 2, "a new cause fires");
        i.write_icr(0xFFFF_FFFF, Mode::Msi, 0, now, &mut out);
        assert_eq!(i.icr, 0);
    }

    #[test]
    fn msix_routes_by_ivar_with_autoclear_and_automask() {
        let mut i = Intr::default();
        let now = t0();
        let mut out = Vec::new();
        let ext = CTRL_EXT_EIAME | CTRL_EXT_PBA_CLR;
        i.ivar = 0x800A_0908; // RXQ0 -> 0, TXQ0 -> 1, OTHER -> 2 (Linux's value)
        i.eiac = ICR_RXQ0 | ICR_TXQ0;
        i.iam = !(ICR_RXQ0 | ICR_RXQ1 | ICR_TXQ0 | ICR_TXQ1) | ICR_OTHER;
        i.write_ims(ICR_RXQ0 | ICR_TXQ0 | ICR_OTHER | ICR_LSC, Mode::Msix, ext, now, &mut out);
        assert!(out.is_empty());
        i.raise(ICR_RXT0 | ICR_RXQ0, Mode::Msix, ext, now, &mut out);
        assert_eq!(out, vec![Signal::Msix(0)]);
        assert_eq!(i.icr & ICR_RXQ0, 0, "EIAC auto-clears RXQ0");
        assert_ne!(i.ims & ICR_RXQ0, 0, "RXQ0 not in IAM: stays enabled");
        i.raise(ICR_RXQ0, Mode::Msix, ext, now, &mut out);
        assert_eq!(out, vec![Signal::Msix(0), Signal::Msix(0)], "each RX event signals");
        out.clear();
        i.raise(ICR_TXDW | ICR_TXQ0, Mode::Msix, ext, now, &mut out);
        assert_eq!(out, vec![Signal::Msix(1)]);
        out.clear();
        i.raise(ICR_LSC, Mode::Msix, ext, now, &mut out);
        assert_eq!(out, vec![Signal::Msix(2)]);
        assert_eq!(i.ims & ICR_OTHER, 0, "OTHER auto-masked through IAM");
        // The Other handler reads ICR (clears it) and re-enables OTHER: no new message.
        out.clear();
        let v = i.read_icr(Mode::Msix, ext, now, &mut out);
        assert_ne!(v & ICR_LSC, 0);
        assert_eq!(i.icr, 0);
        i.write_ims(ICR_OTHER, Mode::Msix, ext, now, &mut out);
        assert!(out.is_empty());
        // Invalid IVAR entry: nothing is sent.
        i.ivar = 0;
        i.raise(ICR_RXQ0, Mode::Msix, ext, now, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn moderation_defers_then_fires() {
        let mut i = Intr::default();
        let now = t0();
        let mut out = Vec::new();
        i.itr = 4000; // 1.024 ms
        i.write_ims(ICR_RXT0, Mode::Msi, 0, now, &mut out);
        i.raise(ICR_RXT0, Mode::Msi, 0, now, &mut out);
        assert_eq!(out, vec![Signal::Msi]);
        i.write_icr(ICR_RXT0, Mode::Msi, 0, now, &mut out);
        i.raise(ICR_RXT0, Mode::Msi, 0, now, &mut out);
        assert_eq!(out.len(), 1, "second interrupt inside the interval is held");
        let due = i.next_deadline().unwrap();
        assert_eq!(due - now, Duration::from_nanos(4000 * 256));
        i.on_timer(Mode::Msi, now + Duration::from_micros(10), &mut out);
        assert_eq!(out.len(), 1);
        i.on_timer(Mode::Msi, due, &mut out);
        assert_eq!(out, vec![Signal::Msi, Signal::Msi]);
        assert!(i.next_deadline().is_none());
    }
}
