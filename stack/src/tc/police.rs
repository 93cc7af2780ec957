//! An ingress policer (`tc filter ... action police rate R burst B drop`): a token bucket over received
//! frames; what exceeds it is dropped before the stack sees it.

use crate::time::Instant;

#[derive(Debug, Clone)]
pub struct Policer {
    /// Bytes per second.
    pub rate: u64,
    pub burst: usize,
    tokens: f64,
    last: Option<Instant>,
    pub passed: u64,
    pub dropped: u64,
}

impl Policer {
    pub fn new(rate: u64, burst: usize) -> Policer {
        Policer { rate, burst, tokens: burst as f64, last: None, passed: 0, dropped: 0 }
    }

    /// Whether a frame of `len` bytes passes.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if let Some(l) = self.last {
            self.tokens = (self.tokens + (now - l).as_secs_f64() * self.rate as f64).min(self.burst as f64);
        }
        self.last = Some(now);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            self.passed += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    pub fn show(&self) -> String {
        format!("police rate {}bit burst {}b: passed {} dropped {}", self.rate * 8, self.burst, self.passed, self.dropped)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_policer_passes_its_rate_and_burst() {
        let mut p = Policer::new(100_000, 5000);
        let mut passed = 0;
        // 1000-byte frames every millisecond for a second: 1 MB/s offered, 100 kB/s allowed.
        for ms in 0..1000 {
            passed += usize::from(p.admit(1000, Instant::from_millis(ms)));
        }
        assert!((104..=106).contains(&passed), "5 of burst plus 100 per second: {passed}");
    }
}
