//! Congestion control behind one trait. What differs between algorithms is how the window grows in
//! congestion avoidance and how far the slow-start threshold falls at a loss; slow start, fast retransmit
//! and NewReno recovery (RFC 5681, RFC 6582) are the connection's, common to all.

use crate::time::Instant;

/// Which algorithm a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CongestionControl {
    NewReno,
    Cubic,
}

pub trait Congestion: Send + std::fmt::Debug {
    /// The window after an ACK in congestion avoidance (cwnd >= ssthresh).
    fn avoid(&mut self, cwnd: usize, mss: usize, now: Instant) -> usize;
    /// A loss with `flight` bytes in flight and window `cwnd`: the new slow-start threshold.
    fn on_loss(&mut self, cwnd: usize, flight: usize, mss: usize) -> usize;
}

impl CongestionControl {
    pub fn build(self) -> Box<dyn Congestion> {
        match self {
            CongestionControl::NewReno => Box::new(NewReno),
            CongestionControl::Cubic => Box::new(Cubic::default()),
        }
    }
}

/// RFC 5681: one MSS per window per round trip; half the flight at a loss.
#[derive(Debug, Default)]
pub struct NewReno;

impl Congestion for NewReno {
    fn avoid(&mut self, cwnd: usize, mss: usize, _now: Instant) -> usize {
        cwnd + (mss * mss / cwnd).max(1)
    }
    fn on_loss(&mut self, _cwnd: usize, flight: usize, mss: usize) -> usize {
        ((flight as f64 * 0.5) as usize).max(2 * mss)
    }
}

/// CUBIC (RFC 9438): the window follows a cubic function of the time since the last loss, centred on the
/// window it had then (C = 0.4, beta = 0.7), and never grows slower than Reno would.
#[derive(Debug, Default)]
pub struct Cubic {
    wmax: usize,
    epoch: Option<Instant>,
}

impl Congestion for Cubic {
    fn avoid(&mut self, cwnd: usize, mss: usize, now: Instant) -> usize {
        let mss = mss as f64;
        let epoch = *self.epoch.get_or_insert(now);
        let t = (now - epoch).as_secs_f64();
        let wmax = (self.wmax.max(cwnd) as f64) / mss;
        let k = (wmax * (1.0 - 0.7) / 0.4).cbrt();
        let target = 0.4 * (t - k).powi(3) + wmax;
        let cur = cwnd as f64 / mss;
        let next = if target > cur { cur + (target - cur) / cur } else { cur + 0.01 / cur };
        let reno = cur + 1.0 / cur;
        (next.max(reno) * mss) as usize
    }
    fn on_loss(&mut self, cwnd: usize, flight: usize, mss: usize) -> usize {
        self.wmax = cwnd;
        self.epoch = None;
        ((flight as f64 * 0.7) as usize).max(2 * mss)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn newreno_grows_one_mss_per_window_and_halves() {
        let mut r = NewReno;
        let t = Instant::from_millis(0);
        assert_eq!(r.avoid(10 * 1000, 1000, t), 10 * 1000 + 100);
        assert_eq!(r.on_loss(20_000, 20_000, 1000), 10_000);
        assert_eq!(r.on_loss(20_000, 1000, 1000), 2000, "never below two segments");
    }

    #[test]
    fn cubic_backs_off_less_plateaus_near_its_old_window_then_probes() {
        let mss = 1000;
        let mut c = Cubic::default();
        assert_eq!(c.on_loss(100 * mss, 100 * mss, mss), 70 * mss, "beta 0.7");
        let t0 = Instant::from_millis(0);
        let step = |c: &mut Cubic, cwnd: usize, at_ms: u64| c.avoid(cwnd, mss, t0 + std::time::Duration::from_millis(at_ms)) - cwnd;
        let _ = step(&mut c, 70 * mss, 0); // the epoch starts at the first ACK after the loss
                                           // K = cbrt(100 * 0.3 / 0.4) = 4.22 s: at 99 MSS the target is at the old window, so only the Reno
                                           // floor (1/cwnd per ACK) remains; ten seconds on, the cubic is well above it and pulls hard.
        let reno = mss / 99;
        let near_k = step(&mut c, 99 * mss, 4220);
        let later = step(&mut c, 99 * mss, 10_000);
        assert!(near_k <= reno + 1, "plateau: {near_k} vs Reno {reno}");
        assert!(later > 10 * reno, "probing: {later}");
        // Never slower than Reno, even before the epoch starts.
        assert!(Cubic::default().avoid(10 * mss, mss, t0) > 10 * mss);
    }
}
