//! Tail doorbells without the device lock. A driver's TDT and RDT writes are the hottest register traffic
//! there is; the vfio-user thread stores them here and starts the data path (`datapath::Kick`) instead of
//! waiting for the lock that the data path holds while it works a ring. Whoever holds the lock next applies them, in order
//! with everything else: the data path at the start of its rounds, and any other register access before it
//! runs, so that the driver sees the card as if every write had taken the lock.

use crate::regs::{QUEUE_STRIDE, RDT0, TDT0};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The four tail registers, in slot order.
const TAILS: [u32; 4] = [TDT0, TDT0 + QUEUE_STRIDE, RDT0, RDT0 + QUEUE_STRIDE];

#[derive(Debug, Default)]
pub struct Doorbells {
    values: [AtomicU32; 4],
    /// One bit per slot written since the last `take`.
    pending: AtomicU32,
    /// Received frames wait in the FIFO for descriptors (or a fault holds doorbells back): only then does
    /// a receive tail write need the data path at once. Set by the data path before it sleeps.
    rx_backlog: AtomicBool,
}

impl Doorbells {
    /// The slot of a tail register, if `off` is one.
    pub fn slot(off: u32) -> Option<usize> {
        TAILS.iter().position(|&t| t == off)
    }

    /// A tail write (the value as the driver wrote it; the register keeps 16 bits). Returns whether the
    /// data path must look now: always for a transmit tail; for a receive tail only while frames wait for
    /// descriptors (otherwise the new buffers are found when the next frame comes).
    pub fn ring(&self, slot: usize, val: u32) -> bool {
        let Some(v) = self.values.get(slot) else { return false };
        v.store(val, Ordering::Release);
        // SeqCst with `set_rx_backlog`: either the data path sees this doorbell before it sleeps, or this
        // sees the backlog it announced.
        self.pending.fetch_or(1 << slot, Ordering::SeqCst);
        slot < 2 || self.rx_backlog.load(Ordering::SeqCst)
    }

    /// The data path says whether received frames wait for descriptors; it then looks at `any` once more
    /// before it sleeps.
    pub fn set_rx_backlog(&self, backlog: bool) {
        self.rx_backlog.store(backlog, Ordering::SeqCst);
    }

    /// Whether any doorbell waits to be applied.
    #[inline]
    pub fn any(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != 0
    }

    /// The doorbells written since the last call, as (register, value), in slot order (nothing allocated:
    /// this runs every round). A slot written again while this runs is applied with its newest value and
    /// stays pending, which applying twice makes no difference to.
    pub fn take(&self) -> [Option<(u32, u32)>; 4] {
        let bits = self.pending.swap(0, Ordering::AcqRel);
        let mut out = [None; 4];
        for ((o, (&reg, v)), s) in out.iter_mut().zip(TAILS.iter().zip(&self.values)).zip(0..) {
            if bits & (1 << s) != 0 {
                *o = Some((reg, v.load(Ordering::Acquire)));
            }
        }
        out
    }

    /// The value waiting for a tail register, if one is.
    pub fn waiting(&self, off: u32) -> Option<u32> {
        let s = Doorbells::slot(off)?;
        (self.pending.load(Ordering::Acquire) & (1 << s) != 0).then(|| self.values.get(s).map(|v| v.load(Ordering::Acquire))).flatten()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn newest_value_per_tail_in_register_order() {
        let d = Doorbells::default();
        assert!(!d.any());
        assert_eq!(Doorbells::slot(TDT0 + QUEUE_STRIDE), Some(1));
        assert_eq!(Doorbells::slot(RDT0 + 4), None);
        assert!(!d.ring(2, 7), "a receive tail with no backlog needs no wake");
        assert!(d.ring(0, 3));
        assert!(d.ring(0, 5));
        assert_eq!(d.waiting(TDT0), Some(5));
        assert_eq!(d.waiting(RDT0 + QUEUE_STRIDE), None);
        assert_eq!(d.take(), [Some((TDT0, 5)), None, Some((RDT0, 7)), None]);
        assert!(!d.any());
        assert_eq!(d.take(), [None; 4]);
        assert!(!d.ring(9, 1)); // no such slot: ignored
        assert!(!d.any());
        d.set_rx_backlog(true);
        assert!(d.ring(3, 1), "frames wait for descriptors: the receive tail wakes the data path");
    }
}
