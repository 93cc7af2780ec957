//! `netem`: a network emulator on egress. Each frame may be lost, duplicated or corrupted (one bit
//! flipped) and is delayed by `delay` plus jitter (uniform within +-jitter, each draw correlated with the
//! last by `correlation`); with `reorder`, that share of frames leaves at once, ahead of delayed ones;
//! with `rate`, frames leave no faster than the rate allows. Decisions come from a seeded generator so a
//! run replays.

use super::{tx_time, Qdisc, QdiscStats, Rng};
use crate::skb::PacketBuf;
use crate::time::Instant;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Config {
    pub delay: Duration,
    pub jitter: Duration,
    /// 0..1: how much each jitter draw follows the previous one.
    pub correlation: f64,
    /// Probabilities, 0..1.
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// Bytes per second (0: no limit).
    pub rate: u64,
    pub limit: usize,
    pub seed: u64,
}

pub struct Netem {
    pub cfg: Config,
    /// Frames with the time they may leave, in that order.
    q: VecDeque<(Instant, PacketBuf)>,
    rng: Rng,
    last_jitter: f64,
    /// When the last frame finished leaving at `rate`.
    rate_free: Instant,
    stats: QdiscStats,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

impl Netem {
    pub fn new(cfg: Config) -> Netem {
        let limit = if cfg.limit == 0 { 1000 } else { cfg.limit };
        Netem {
            cfg: Config { limit, ..cfg },
            q: VecDeque::new(),
            rng: Rng::new(cfg.seed ^ 0x006E_6574_656D),
            last_jitter: 0.5,
            rate_free: Instant::ZERO,
            stats: QdiscStats::default(),
            lost: 0,
            duplicated: 0,
            reordered: 0,
            corrupted: 0,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.unit() < p
    }

    fn insert(&mut self, at: Instant, p: PacketBuf) {
        let i = self.q.partition_point(|(t, _)| *t <= at);
        self.q.insert(i, (at, p));
    }

    fn one(&mut self, mut p: PacketBuf, now: Instant) -> bool {
        if self.q.len() >= self.cfg.limit {
            self.stats.dropped += 1;
            return false;
        }
        if self.chance(self.cfg.corrupt) && p.len() > 14 {
            let d = p.data_mut();
            let at = 14 + (self.rng.next_u64() as usize % (d.len() - 14));
            d[at] ^= 1 << (self.rng.next_u64() % 8);
            self.corrupted += 1;
        }
        let mut at = now;
        if self.cfg.reorder > 0.0 && self.chance(self.cfg.reorder) {
            self.reordered += 1;
        } else {
            let j = self.cfg.jitter.as_secs_f64();
            let r = self.rng.unit();
            let c = self.cfg.correlation.clamp(0.0, 1.0);
            self.last_jitter = c * self.last_jitter + (1.0 - c) * r;
            let d = (self.cfg.delay.as_secs_f64() + (self.last_jitter * 2.0 - 1.0) * j).max(0.0);
            at = now + Duration::from_secs_f64(d);
        }
        if self.cfg.rate > 0 {
            let start = if self.rate_free > at { self.rate_free } else { at };
            at = start + tx_time(p.len(), self.cfg.rate);
            self.rate_free = at;
        }
        self.stats.enq(p.len());
        self.insert(at, p);
        true
    }
}

impl Qdisc for Netem {
    fn enqueue(&mut self, p: PacketBuf, now: Instant) -> bool {
        if self.chance(self.cfg.loss) {
            self.lost += 1;
            self.stats.dropped += 1;
            return false;
        }
        if self.chance(self.cfg.duplicate) {
            self.duplicated += 1;
            let copy = PacketBuf::from_slice(&p.to_vec());
            self.one(copy, now);
        }
        self.one(p, now)
    }
    fn dequeue(&mut self, now: Instant) -> Option<PacketBuf> {
        if self.q.front().is_some_and(|(t, _)| *t <= now) {
            let (_, p) = self.q.pop_front()?;
            self.stats.deq(p.len());
            return Some(p);
        }
        if self.q.front().is_some() {
            self.stats.overlimits += 0;
        }
        None
    }
    fn next_at(&self, now: Instant) -> Option<Instant> {
        self.q.front().map(|(t, _)| *t).filter(|t| *t > now)
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn reset(&mut self) {
        for (_, p) in self.q.drain(..) {
            self.stats.drop_queued(p.len());
        }
    }
    fn stats(&self) -> QdiscStats {
        self.stats
    }
    fn show(&self) -> String {
        let c = &self.cfg;
        format!(
            "qdisc netem limit {} delay {}ms {}ms {:.0}% loss {:.2}% duplicate {:.2}% reorder {:.2}% corrupt {:.2}% rate {}bit seed {}\n{}\n  lost {} duplicated {} reordered {} corrupted {}",
            c.limit,
            c.delay.as_millis(),
            c.jitter.as_millis(),
            c.correlation * 100.0,
            c.loss * 100.0,
            c.duplicate * 100.0,
            c.reorder * 100.0,
            c.corrupt * 100.0,
            c.rate * 8,
            c.seed,
            self.stats.show(),
            self.lost,
            self.duplicated,
            self.reordered,
            self.corrupted
        )
    }
    fn shapes(&self) -> bool {
        self.cfg.rate > 0
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tc::testing::udp_frame;

    fn drain(q: &mut Netem, until: Instant) -> Vec<(Instant, PacketBuf)> {
        let mut out = Vec::new();
        let mut now = Instant::ZERO;
        loop {
            while let Some(p) = q.dequeue(now) {
                out.push((now, p));
            }
            match q.next_at(now) {
                Some(t) if t <= until => now = t,
                _ => break,
            }
        }
        out
    }

    #[test]
    fn delay_with_jitter_stays_in_its_window() {
        let mut q =
            Netem::new(Config { delay: Duration::from_millis(50), jitter: Duration::from_millis(10), seed: 7, ..Default::default() });
        for k in 0..200 {
            q.enqueue(udp_frame(k, 100, 0), Instant::ZERO);
        }
        let out = drain(&mut q, Instant::from_millis(1000));
        assert_eq!(out.len(), 200);
        let ms: Vec<u64> = out.iter().map(|(t, _)| t.micros / 1000).collect();
        assert!(ms.iter().all(|&m| (40..=60).contains(&m)), "{ms:?}");
        let mean = ms.iter().sum::<u64>() as f64 / ms.len() as f64;
        assert!((47.0..53.0).contains(&mean), "{mean}");
    }

    #[test]
    fn loss_duplication_and_reordering_at_their_rates() {
        let mut q = Netem::new(Config {
            delay: Duration::from_millis(10),
            loss: 0.2,
            duplicate: 0.05,
            reorder: 0.25,
            seed: 11,
            limit: 100_000,
            ..Default::default()
        });
        for k in 0..10_000u32 {
            q.enqueue(udp_frame(k as u16, 100, 0), Instant::ZERO);
        }
        let lost = q.lost as f64 / 10_000.0;
        assert!((0.18..0.22).contains(&lost), "{lost}");
        assert!((320..480).contains(&q.duplicated), "5% of the 8000 not lost: {}", q.duplicated);
        let out = drain(&mut q, Instant::from_millis(100));
        let early = out.iter().filter(|(t, _)| t.micros == 0).count() as f64 / out.len() as f64;
        assert!((0.22..0.28).contains(&early), "a quarter left at once, ahead of the delayed: {early}");
    }

    #[test]
    fn rate_spaces_frames() {
        // 100 kB/s: a 1000-byte frame every 10 ms.
        let mut q = Netem::new(Config { rate: 100_000, seed: 1, ..Default::default() });
        for k in 0..5 {
            q.enqueue(udp_frame(k, 1000, 0), Instant::ZERO);
        }
        let ms: Vec<u64> = drain(&mut q, Instant::from_millis(1000)).iter().map(|(t, _)| t.micros / 1000).collect();
        assert_eq!(ms, vec![10, 20, 30, 40, 50]);
    }
}
