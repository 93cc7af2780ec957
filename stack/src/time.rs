//! Time as the stack sees it: an instant in microseconds that the caller supplies to every poll, so tests
//! run on a virtual clock and the real runtime on the system clock.

use std::ops::{Add, Sub};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Instant {
    pub micros: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant { micros: 0 };
    pub fn from_millis(ms: u64) -> Instant {
        Instant { micros: ms * 1000 }
    }
    /// The system's monotonic clock.
    pub fn now() -> Instant {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let s = START.get_or_init(std::time::Instant::now);
        Instant { micros: s.elapsed().as_micros() as u64 }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant { micros: self.micros + d.as_micros() as u64 }
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, o: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(o.micros))
    }
}
