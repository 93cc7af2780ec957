//! The retransmission timeout (RFC 6298): a smoothed round-trip time and its variation from each sample,
//! the RTO from them clamped to the configured bounds, doubled at every expiry (exponential backoff).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// Before any sample the RTO is `initial` (RFC 6298 2.1: one second).
    pub fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
        RttEstimator { srtt: None, rttvar: Duration::ZERO, rto: initial, min, max }
    }

    /// A round-trip sample (RFC 6298 2.2 for the first, 2.3 after; the variation term at least 1 ms, the
    /// clock granularity).
    pub fn sample(&mut self, rtt: Duration) {
        let srtt = match self.srtt {
            None => {
                self.rttvar = rtt / 2;
                rtt
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                (s * 7 + rtt) / 8
            }
        };
        self.srtt = Some(srtt);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1))).clamp(self.min, self.max);
    }

    /// The timer expired: back off (RFC 6298 5.5).
    pub fn backoff(&mut self) {
        self.rto = (self.rto * 2).min(self.max);
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rfc6298_estimates_clamps_and_backs_off() {
        let mut r = RttEstimator::new(ms(1000), ms(200), ms(120_000));
        assert_eq!(r.rto(), ms(1000));
        r.sample(ms(100));
        // First sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR = 300 ms.
        assert_eq!((r.srtt(), r.rttvar(), r.rto()), (Some(ms(100)), ms(50), ms(300)));
        r.sample(ms(20));
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 20| = 57.5; SRTT = 7/8 * 100 + 1/8 * 20 = 90.
        assert_eq!(r.srtt(), Some(ms(90)));
        assert_eq!(r.rttvar(), Duration::from_micros(57_500));
        assert_eq!(r.rto(), ms(320));
        for _ in 0..20 {
            r.backoff();
        }
        assert_eq!(r.rto(), ms(120_000), "backoff stops at the maximum");
        let mut fast = RttEstimator::new(ms(1000), ms(200), ms(120_000));
        fast.sample(Duration::from_micros(100));
        assert_eq!(fast.rto(), ms(200), "a LAN's RTT still gets the minimum RTO");
    }
}
