//! The token bucket filter: frames leave at most at `rate` with bursts up to `burst` bytes; frames wait in
//! a child qdisc (a byte FIFO sized by `latency` by default, as Linux's `tbf ... latency` sizes it).

use super::fifo::PfifoFast;
use super::{tx_time, Qdisc, QdiscStats};
use crate::skb::PacketBuf;
use crate::time::Instant;
use std::time::Duration;

pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    pub burst: usize,
    /// Bytes that may wait (rate x latency + burst), when the child is the default.
    pub limit: usize,
    tokens: f64,
    last: Option<Instant>,
    child: Box<dyn Qdisc>,
    /// The child's next frame, taken out while it waits for tokens.
    held: Option<PacketBuf>,
    own_child: bool,
    stats: QdiscStats,
}

impl Tbf {
    /// A token bucket of `rate` bytes/s and `burst` bytes; `latency` bounds the default child's queue; a
    /// child given replaces it (its own limits then apply).
    pub fn new(rate: u64, burst: usize, latency: Duration, child: Option<Box<dyn Qdisc>>) -> Tbf {
        let limit = (rate as f64 * latency.as_secs_f64()) as usize + burst;
        let own_child = child.is_none();
        let child = child.unwrap_or_else(|| Box::new(PfifoFast::new(usize::MAX)));
        Tbf { rate, burst, limit, tokens: burst as f64, last: None, child, held: None, own_child, stats: QdiscStats::default() }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(l) = self.last {
            self.tokens = (self.tokens + (now - l).as_secs_f64() * self.rate as f64).min(self.burst as f64);
        }
        self.last = Some(now);
    }
}

impl Qdisc for Tbf {
    fn enqueue(&mut self, p: PacketBuf, now: Instant) -> bool {
        let len = p.len();
        let backlog = self.stats().backlog_bytes as usize;
        if len > self.burst || (self.own_child && backlog + len > self.limit) {
            // Larger than the bucket could ever pass, or over the latency bound.
            self.stats.dropped += 1;
            return false;
        }
        if !self.child.enqueue(p, now) {
            // Counted by the child.
            return false;
        }
        self.stats.enq(len);
        true
    }

    fn dequeue(&mut self, now: Instant) -> Option<PacketBuf> {
        self.refill(now);
        if self.held.is_none() {
            self.held = self.child.dequeue(now);
        }
        let len = self.held.as_ref()?.len();
        if self.tokens + 1e-9 < len as f64 {
            self.stats.overlimits += 1;
            return None;
        }
        self.tokens -= len as f64;
        self.stats.deq(len);
        self.held.take()
    }

    fn next_at(&self, now: Instant) -> Option<Instant> {
        let len = match &self.held {
            Some(p) => p.len(),
            None if !self.child.is_empty() => return None,
            None => return None,
        };
        let missing = len as f64 - self.tokens;
        (missing > 0.0).then(|| now + tx_time(missing.ceil() as usize, self.rate))
    }
    fn len(&self) -> usize {
        self.child.len() + usize::from(self.held.is_some())
    }
    fn reset(&mut self) {
        self.child.reset();
        if self.held.take().is_some() {
            self.stats.dropped += 1;
        }
    }
    fn stats(&self) -> QdiscStats {
        // What waits is what the child holds (it may have dropped some) and the frame taken out.
        let c = self.child.stats();
        let held = self.held.as_ref().map_or(0, |p| p.len() as u64);
        QdiscStats {
            backlog_bytes: c.backlog_bytes + held,
            backlog_packets: c.backlog_packets + u64::from(self.held.is_some()),
            dropped: self.stats.dropped + c.dropped,
            ..self.stats
        }
    }
    fn show(&self) -> String {
        let mut s = format!(
            "qdisc tbf rate {}bit burst {}b lat {}ms\n{}",
            self.rate * 8,
            self.burst,
            (self.limit.saturating_sub(self.burst) as u64 * 1000).checked_div(self.rate).unwrap_or(0),
            self.stats().show()
        );
        if !self.own_child {
            s += "\n";
            s += &self.child.show().lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n");
        }
        s
    }
    fn shapes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tc::testing::udp_frame;

    #[test]
    fn the_rate_holds_over_a_second_and_bursts_pass_at_once() {
        // 1 Mbit/s = 125000 B/s, burst 10 frames of 1000 B.
        let mut q = Tbf::new(125_000, 10_000, Duration::from_millis(500), None);
        let mut now = Instant::ZERO;
        for _ in 0..200 {
            q.enqueue(udp_frame(1, 1000, 0), now);
        }
        // The limit: 125000 x 0.5 + 10000 bytes = 72 frames; the rest were dropped.
        assert_eq!(q.len(), 72);
        let mut sent = 0;
        while q.dequeue(now).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 10, "the burst leaves at once");
        // A second of a saturated queue, by the clock the qdisc asks for: 125 more frames.
        let end = Instant::from_millis(1000);
        while now < end {
            while q.len() < 60 {
                q.enqueue(udp_frame(1, 1000, 0), now);
            }
            match q.next_at(now) {
                Some(t) => now = t.min(end),
                None => break,
            }
            while q.dequeue(now).is_some() {
                sent += 1;
            }
        }
        assert!((134..=136).contains(&sent), "10 + 125 in the first second ({sent})");
        assert!(q.stats().overlimits > 0);
    }
}
