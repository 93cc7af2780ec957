//! `pfifo_fast`: three FIFO bands, band 0 served first; a frame's band comes from the priority its IP TOS
//! maps to (Linux's `ip_tos2prio` and `prio2band` tables), non-IP frames in band 1. A packet limit over
//! all bands (`txqueuelen`).

use super::{tos, Qdisc, QdiscStats};
use crate::skb::PacketBuf;
use crate::time::Instant;
use std::collections::VecDeque;

/// Linux's `ip_tos2prio`: TOS bits 1-4 to a priority.
const TOS2PRIO: [u8; 16] = [0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4];
/// Linux's `prio2band` for pfifo_fast.
const PRIO2BAND: [usize; 16] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

pub fn band_of(frame: &[u8]) -> usize {
    let prio = TOS2PRIO[usize::from((tos(frame) & 0x1E) >> 1)];
    PRIO2BAND[usize::from(prio)]
}

pub struct PfifoFast {
    bands: [VecDeque<PacketBuf>; 3],
    pub limit: usize,
    stats: QdiscStats,
}

impl PfifoFast {
    pub fn new(limit: usize) -> PfifoFast {
        PfifoFast { bands: Default::default(), limit, stats: QdiscStats::default() }
    }
}

impl Qdisc for PfifoFast {
    fn enqueue(&mut self, p: PacketBuf, _now: Instant) -> bool {
        if self.len() >= self.limit {
            self.stats.dropped += 1;
            return false;
        }
        self.stats.enq(p.len());
        let b = band_of(p.data());
        self.bands[b].push_back(p);
        true
    }
    fn dequeue(&mut self, _now: Instant) -> Option<PacketBuf> {
        let p = self.bands.iter_mut().find_map(|b| b.pop_front())?;
        self.stats.deq(p.len());
        Some(p)
    }
    fn next_at(&self, _now: Instant) -> Option<Instant> {
        None
    }
    fn len(&self) -> usize {
        self.bands.iter().map(|b| b.len()).sum()
    }
    fn reset(&mut self) {
        for b in self.bands.iter_mut() {
            for p in b.drain(..) {
                self.stats.drop_queued(p.len());
            }
        }
    }
    fn stats(&self) -> QdiscStats {
        self.stats
    }
    fn show(&self) -> String {
        format!("qdisc pfifo_fast limit {}p bands 3 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1\n{}", self.limit, self.stats.show())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tc::testing::udp_frame;

    #[test]
    fn interactive_tos_goes_first_and_the_limit_holds() {
        let mut q = PfifoFast::new(3);
        let t = Instant::ZERO;
        assert!(q.enqueue(udp_frame(1, 100, 0x00), t));
        assert!(q.enqueue(udp_frame(2, 100, 0x08), t), "TOS 0x08 (max throughput): bulk, band 2");
        assert!(q.enqueue(udp_frame(3, 100, 0x10), t), "TOS 0x10 (low delay): interactive, band 0");
        assert!(!q.enqueue(udp_frame(4, 100, 0), t), "over the limit");
        let order: Vec<u8> = std::iter::from_fn(|| q.dequeue(t)).map(|p| p.data()[35]).collect();
        assert_eq!(order, vec![3, 1, 2]);
        let s = q.stats();
        assert_eq!((s.sent_packets, s.dropped, s.backlog_packets), (3, 1, 0));
    }
}
