//! Byte queue limits on a transmit ring, after Linux's dynamic queue limits (`lib/dynamic_queue_limits.c`):
//! the driver stops taking packets while the bytes queued on the card and not yet completed reach the
//! limit, so that backlog waits in the stack's qdisc (where fq_codel and friends can act) instead of in
//! the ring. The limit grows when the ring ran dry while packets were held back (the card was starved),
//! and shrinks by the slack it never used over an interval.

use std::time::{Duration, Instant};

/// How long the unused slack is watched before the limit comes down by it.
pub const SLACK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Dql {
    pub limit: usize,
    pub min_limit: usize,
    pub max_limit: usize,
    /// Bytes queued to the card and not completed.
    pub inflight: usize,
    /// Packets were refused since the last completion.
    stopped: bool,
    lowest_slack: usize,
    slack_since: Option<Instant>,
    /// Times packets were held back, and times the limit grew or shrank.
    pub stops: u64,
    pub grew: u64,
    pub shrank: u64,
}

impl Dql {
    /// A limit between `min` (at least one largest packet) and `max` bytes, starting at `min`.
    pub fn new(min: usize, max: usize) -> Dql {
        Dql {
            limit: min,
            min_limit: min,
            max_limit: max.max(min),
            inflight: 0,
            stopped: false,
            lowest_slack: usize::MAX,
            slack_since: None,
            stops: 0,
            grew: 0,
            shrank: 0,
        }
    }

    /// Whether another packet may be queued (one may take the ring past the limit, as in Linux).
    pub fn may_queue(&mut self) -> bool {
        if self.inflight < self.limit {
            return true;
        }
        if !self.stopped {
            self.stops += 1;
        }
        self.stopped = true;
        false
    }

    pub fn queued(&mut self, bytes: usize) {
        self.inflight += bytes;
    }

    /// The card completed `bytes`.
    pub fn completed(&mut self, bytes: usize, now: Instant) {
        if bytes == 0 {
            return;
        }
        self.inflight = self.inflight.saturating_sub(bytes);
        if self.stopped && self.inflight == 0 {
            // The ring ran dry while packets waited: the limit starved the card.
            let grown = (self.limit + self.limit / 2).min(self.max_limit);
            if grown > self.limit {
                self.limit = grown;
                self.grew += 1;
            }
            self.slack_since = None;
            self.lowest_slack = usize::MAX;
        } else if !self.stopped {
            // Room that went unused while nothing was held back.
            let slack = self.limit.saturating_sub(self.inflight);
            self.lowest_slack = self.lowest_slack.min(slack);
            let since = *self.slack_since.get_or_insert(now);
            if now.duration_since(since) >= SLACK_INTERVAL {
                let shrunk = self.limit.saturating_sub(self.lowest_slack).max(self.min_limit);
                if shrunk < self.limit {
                    self.limit = shrunk;
                    self.shrank += 1;
                }
                self.slack_since = Some(now);
                self.lowest_slack = usize::MAX;
            }
        }
        self.stopped = false;
    }

    /// Everything queued is gone (a ring reset).
    pub fn reset(&mut self) {
        self.inflight = 0;
        self.stopped = false;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn starvation_grows_the_limit_and_unused_slack_shrinks_it() {
        let t0 = Instant::now();
        let mut d = Dql::new(3000, 100_000);
        // Two 1500-byte packets fill the limit; the third waits.
        assert!(d.may_queue());
        d.queued(1500);
        assert!(d.may_queue());
        d.queued(1500);
        assert!(!d.may_queue());
        assert_eq!(d.stops, 1);
        // Both complete while the third waited: starved, the limit grows.
        d.completed(3000, t0);
        assert_eq!(d.limit, 4500);
        // A trickle that never uses the room: after the interval the limit comes back down.
        for ms in 0..1200u64 {
            if d.may_queue() {
                d.queued(500);
            }
            d.completed(500, t0 + Duration::from_millis(ms));
        }
        assert!(d.limit < 4500 && d.limit >= d.min_limit, "{}", d.limit);
        assert_eq!(d.inflight, 0);
    }
}
