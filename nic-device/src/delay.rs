//! Interrupt delay timers: RDTR/RADV for receive, TIDV/TADV for transmit (82574L datasheet, "Receive
//! Interrupt Delay" and "Transmit Interrupt Delay"). A packet timer restarts with every packet; an absolute
//! timer, started by the first packet after the last interrupt, bounds the wait. The causes they hold are
//! raised when either expires (or when software writes the flush bit, FPD), and ITR/EITR moderation then
//! applies to the interrupt as to any other. Pure state, like `intr`.

use crate::regs::DELAY_COUNT_MASK;
use std::time::{Duration, Instant};

/// The timers' unit: 1.024 us.
const UNIT_NS: u64 = 1024;

fn units(n: u32) -> Duration {
    Duration::from_nanos(u64::from(n & DELAY_COUNT_MASK) * UNIT_NS)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DelayTimer {
    held: u32,
    packet: Option<Instant>,
    absolute: Option<Instant>,
}

impl DelayTimer {
    /// Causes for a packet: returned to raise now when the packet delay is 0; otherwise held, the packet timer
    /// restarted and the absolute timer started if it was not running (and is set).
    pub fn packet(&mut self, causes: u32, delay: u32, absolute: u32, now: Instant) -> u32 {
        if delay & DELAY_COUNT_MASK == 0 {
            // No delay: anything held goes out with it.
            return std::mem::take(&mut self.held) | causes;
        }
        self.held |= causes;
        self.packet = Some(now + units(delay));
        if self.absolute.is_none() && absolute & DELAY_COUNT_MASK != 0 {
            self.absolute = Some(now + units(absolute));
        }
        0
    }

    /// Causes whose time has come (either timer expired), to raise now.
    pub fn expire(&mut self, now: Instant) -> u32 {
        if self.held != 0 && self.deadline().is_some_and(|d| now >= d) {
            return self.flush();
        }
        0
    }

    /// Everything held, now (FPD, or a reset).
    pub fn flush(&mut self) -> u32 {
        let held = self.held;
        *self = DelayTimer::default();
        held
    }

    pub fn deadline(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        [self.packet, self.absolute].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const RXT0: u32 = 1 << 7;

    #[test]
    fn no_delay_raises_at_once() {
        let mut t = DelayTimer::default();
        let now = Instant::now();
        assert_eq!(t.packet(RXT0, 0, 100, now), RXT0);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn packet_timer_restarts_and_absolute_timer_bounds_it() {
        let mut t = DelayTimer::default();
        let t0 = Instant::now();
        // RDTR 100 units (102.4 us), RADV 250 units (256 us).
        assert_eq!(t.packet(RXT0, 100, 250, t0), 0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_nanos(102_400)));
        // A packet every 80 us keeps restarting the packet timer ...
        for k in 1..=3u64 {
            let at = t0 + Duration::from_micros(80 * k);
            assert_eq!(t.expire(at), 0, "not yet at {k}");
            assert_eq!(t.packet(RXT0, 100, 250, at), 0);
        }
        // ... until the absolute timer, started by the first packet, fires at 256 us.
        assert_eq!(t.deadline(), Some(t0 + Duration::from_nanos(256_000)));
        assert_eq!(t.expire(t0 + Duration::from_micros(255)), 0);
        assert_eq!(t.expire(t0 + Duration::from_micros(257)), RXT0);
        assert_eq!(t.deadline(), None);
        // The next packet starts a fresh absolute timer.
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(t.packet(RXT0, 100, 250, t1), 0);
        assert_eq!(t.expire(t1 + Duration::from_micros(103)), RXT0, "the packet timer alone");
    }

    #[test]
    fn without_an_absolute_delay_only_the_packet_timer_counts_and_flush_releases() {
        let mut t = DelayTimer::default();
        let t0 = Instant::now();
        t.packet(RXT0, 10, 0, t0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_nanos(10_240)));
        assert_eq!(t.flush(), RXT0);
        assert_eq!(t.flush(), 0);
    }
}
