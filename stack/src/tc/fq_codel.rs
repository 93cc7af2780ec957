//! FQ-CoDel (RFC 8290): frames hashed by 5-tuple into flow queues; new flows (a queue that was empty) are
//! served before old ones, each by deficit round robin with a quantum of bytes, and each queue runs CoDel.
//! Over the packet limit, frames are dropped from the head of the queue holding the most bytes.

use super::codel::{CodelQueue, Params};
use super::{flow_hash, Qdisc, QdiscStats};
use crate::skb::PacketBuf;
use crate::time::Instant;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub limit: usize,
    pub flows: usize,
    pub quantum: usize,
    pub codel: Params,
}

impl Default for Config {
    /// Linux's defaults: 10240 packets, 1024 flows, quantum 1514, target 5 ms, interval 100 ms.
    fn default() -> Config {
        Config { limit: 10240, flows: 1024, quantum: 1514, codel: Params::default() }
    }
}

#[derive(Debug, Default)]
struct Flow {
    q: CodelQueue,
    deficit: i64,
    /// In the new or old list.
    listed: bool,
}

pub struct FqCodel {
    cfg: Config,
    flows: Vec<Flow>,
    new_flows: VecDeque<usize>,
    old_flows: VecDeque<usize>,
    packets: usize,
    stats: QdiscStats,
    /// Flows that became new (Linux's new_flow_count) and drops by CoDel and by overlimit.
    pub new_flow_count: u64,
    pub ecn_mark: u64,
    pub drop_overlimit: u64,
    pub codel_drops: u64,
}

impl FqCodel {
    pub fn new(cfg: Config) -> FqCodel {
        let n = cfg.flows.max(1);
        FqCodel {
            cfg,
            flows: (0..n).map(|_| Flow::default()).collect(),
            new_flows: VecDeque::new(),
            old_flows: VecDeque::new(),
            packets: 0,
            stats: QdiscStats::default(),
            new_flow_count: 0,
            ecn_mark: 0,
            drop_overlimit: 0,
            codel_drops: 0,
        }
    }

    /// Over the limit: drop from the head of the fattest flow.
    fn drop_fattest(&mut self) {
        let Some((i, _)) = self.flows.iter().enumerate().max_by_key(|(_, f)| f.q.bytes) else { return };
        if let Some(f) = self.flows.get_mut(i) {
            if let Some((p, _)) = f.q.q.pop_front() {
                f.q.bytes -= p.len();
                self.packets -= 1;
                self.stats.drop_queued(p.len());
                self.drop_overlimit += 1;
            }
        }
    }
}

impl Qdisc for FqCodel {
    fn enqueue(&mut self, p: PacketBuf, now: Instant) -> bool {
        let i = (flow_hash(p.data(), 0) % self.flows.len() as u64) as usize;
        self.stats.enq(p.len());
        self.packets += 1;
        let quantum = self.cfg.quantum as i64;
        let Some(f) = self.flows.get_mut(i) else { return false };
        f.q.push(p, now);
        if !f.listed {
            f.listed = true;
            f.deficit = quantum;
            self.new_flows.push_back(i);
            self.new_flow_count += 1;
        }
        let mut ok = true;
        while self.packets > self.cfg.limit {
            let before = self.flows.get(i).map(|f| f.q.q.len()).unwrap_or(0);
            self.drop_fattest();
            if self.flows.get(i).map(|f| f.q.q.len()).unwrap_or(0) < before {
                ok = false;
            }
        }
        ok
    }

    fn dequeue(&mut self, now: Instant) -> Option<PacketBuf> {
        loop {
            let (from_new, i) = match (self.new_flows.front(), self.old_flows.front()) {
                (Some(&i), _) => (true, i),
                (None, Some(&i)) => (false, i),
                (None, None) => return None,
            };
            let quantum = self.cfg.quantum as i64;
            let par = self.cfg.codel;
            let f = self.flows.get_mut(i)?;
            if f.deficit <= 0 {
                f.deficit += quantum;
                if from_new {
                    self.new_flows.pop_front();
                } else {
                    self.old_flows.pop_front();
                }
                self.old_flows.push_back(i);
                continue;
            }
            let mut dropped = Vec::new();
            let p = f.q.dequeue(now, &par, &mut |d| dropped.push(d.len()));
            for len in dropped {
                self.packets -= 1;
                self.stats.drop_queued(len);
                self.codel_drops += 1;
            }
            let Some(p) = p else {
                // Empty: a new flow moves to the old list (so it cannot starve others by coming back
                // as new at once), an old one leaves the lists.
                if from_new {
                    self.new_flows.pop_front();
                    if !self.old_flows.is_empty() {
                        self.old_flows.push_back(i);
                        continue;
                    }
                } else {
                    self.old_flows.pop_front();
                }
                if let Some(f) = self.flows.get_mut(i) {
                    f.listed = false;
                }
                continue;
            };
            let f = self.flows.get_mut(i)?;
            f.deficit -= p.len() as i64;
            self.packets -= 1;
            self.stats.deq(p.len());
            return Some(p);
        }
    }

    fn next_at(&self, _now: Instant) -> Option<Instant> {
        None
    }
    fn len(&self) -> usize {
        self.packets
    }
    fn reset(&mut self) {
        for f in self.flows.iter_mut() {
            for (p, _) in f.q.q.drain(..) {
                self.stats.drop_queued(p.len());
            }
            f.q.bytes = 0;
            f.listed = false;
        }
        self.new_flows.clear();
        self.old_flows.clear();
        self.packets = 0;
    }
    fn stats(&self) -> QdiscStats {
        self.stats
    }
    fn show(&self) -> String {
        let c = &self.cfg;
        format!(
            "qdisc fq_codel limit {}p flows {} quantum {} target {}us interval {}us\n{}\n  maxpacket {} drop_overlimit {} codel_drops {} new_flow_count {} ecn_mark {}\n  new_flows_len {} old_flows_len {}",
            c.limit,
            c.flows,
            c.quantum,
            c.codel.target.as_micros(),
            c.codel.interval.as_micros(),
            self.stats.show(),
            c.codel.mtu,
            self.drop_overlimit,
            self.codel_drops,
            self.new_flow_count,
            self.ecn_mark,
            self.new_flows.len(),
            self.old_flows.len()
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tc::testing::udp_frame;

    #[test]
    fn a_sparse_flow_overtakes_a_bulk_backlog() {
        let mut q = FqCodel::new(Config::default());
        let t = Instant::ZERO;
        for _ in 0..100 {
            q.enqueue(udp_frame(1000, 1500, 0), t);
        }
        // Drain a couple so the bulk flow becomes old.
        q.dequeue(t);
        q.dequeue(t);
        q.enqueue(udp_frame(2000, 100, 0), t);
        let next: Vec<u16> = (0..3).filter_map(|_| q.dequeue(t)).map(|p| u16::from_be_bytes([p.data()[34], p.data()[35]])).collect();
        assert!(next[..2].contains(&2000), "the new sparse flow within two packets: {next:?}");
    }

    #[test]
    fn two_bulk_flows_share_by_bytes_and_the_limit_drops_from_the_fattest() {
        let mut q = FqCodel::new(Config { limit: 50, ..Config::default() });
        let t = Instant::ZERO;
        for _ in 0..40 {
            q.enqueue(udp_frame(1, 1000, 0), t);
        }
        for _ in 0..20 {
            q.enqueue(udp_frame(2, 500, 0), t);
        }
        assert_eq!(q.len(), 50);
        assert_eq!(q.drop_overlimit, 10, "the fattest flow (port 1) paid for the overflow");
        let mut bytes = [0usize; 3];
        for _ in 0..20 {
            let p = q.dequeue(t).unwrap();
            bytes[usize::from(p.data()[35])] += p.len();
        }
        let ratio = bytes[1] as f64 / bytes[2] as f64;
        assert!((0.7..1.5).contains(&ratio), "DRR shares bytes, not packets: {bytes:?}");
    }
}
