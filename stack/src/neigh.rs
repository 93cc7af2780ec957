//! The neighbour (ARP) cache: entries resolve with retries and time out; packets wait in a small queue per
//! unresolved address and are dropped (and reported) when resolution fails.

use crate::skb::PacketBuf;
use crate::time::Instant;
use crate::wire::Mac;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub reachable_time: Duration,
    pub retrans_time: Duration,
    pub max_probes: u32,
    pub queue_len: usize,
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reachable_time: Duration::from_secs(30),
            retrans_time: Duration::from_secs(1),
            max_probes: 3,
            queue_len: 16,
            max_entries: 1024,
        }
    }
}

#[derive(Debug)]
enum State {
    Incomplete {
        probes: u32,
        next: Instant,
        queue: VecDeque<PacketBuf>,
    },
    Reachable {
        mac: Mac,
        until: Instant,
    },
    /// Known but not confirmed recently: still used, and re-probed.
    Stale {
        mac: Mac,
        probed: Option<Instant>,
    },
}

/// A packet whose next hop never answered ARP.
pub type Failed = ([u8; 4], PacketBuf);

/// What to do with a packet for a next hop.
#[derive(Debug)]
pub enum Resolve {
    Send(Mac),
    /// Queued; send an ARP request now if `request` is set.
    Queued {
        request: bool,
    },
    /// The queue was full: the packet is dropped.
    Dropped,
}

#[derive(Default)]
pub struct NeighCache {
    pub cfg: Config,
    entries: HashMap<[u8; 4], State>,
}

impl NeighCache {
    pub fn new(cfg: Config) -> NeighCache {
        NeighCache { cfg, entries: HashMap::new() }
    }

    pub fn lookup(&self, ip: [u8; 4]) -> Option<Mac> {
        match self.entries.get(&ip)? {
            State::Reachable { mac, .. } | State::Stale { mac, .. } => Some(*mac),
            State::Incomplete { .. } => None,
        }
    }

    pub fn resolve(&mut self, ip: [u8; 4], pkt: PacketBuf, now: Instant) -> Resolve {
        self.resolve_replacing(ip, pkt, now, |_| false)
    }

    /// As `resolve`, but a packet still waiting that `supersedes` says the new one replaces is dropped
    /// first (a retransmission of a segment that never left).
    pub fn resolve_replacing(&mut self, ip: [u8; 4], pkt: PacketBuf, now: Instant, supersedes: impl Fn(&PacketBuf) -> bool) -> Resolve {
        if self.entries.len() >= self.cfg.max_entries && !self.entries.contains_key(&ip) {
            self.entries.retain(|_, s| !matches!(s, State::Stale { .. }));
        }
        let retrans = self.cfg.retrans_time;
        let qlen = self.cfg.queue_len;
        match self.entries.entry(ip).or_insert(State::Incomplete { probes: 0, next: now, queue: VecDeque::new() }) {
            State::Reachable { mac, .. } => Resolve::Send(*mac),
            State::Stale { mac, .. } => Resolve::Send(*mac),
            State::Incomplete { probes, next, queue } => {
                queue.retain(|q| !supersedes(q));
                if queue.len() >= qlen {
                    return Resolve::Dropped;
                }
                queue.push_back(pkt);
                let request = *probes == 0;
                if request {
                    *probes = 1;
                    *next = now + retrans;
                }
                Resolve::Queued { request }
            }
        }
    }

    /// A mapping learned from ARP; returns packets that were waiting for it.
    pub fn update(&mut self, ip: [u8; 4], mac: Mac, now: Instant, create: bool) -> Vec<PacketBuf> {
        let until = now + self.cfg.reachable_time;
        match self.entries.get_mut(&ip) {
            Some(s) => {
                let old = std::mem::replace(s, State::Reachable { mac, until });
                if let State::Incomplete { queue, .. } = old {
                    return queue.into_iter().collect();
                }
                Vec::new()
            }
            None if create => {
                self.entries.insert(ip, State::Reachable { mac, until });
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Timers: returns (addresses to send a request for, packets dropped because resolution failed).
    pub fn poll(&mut self, now: Instant) -> (Vec<[u8; 4]>, Vec<Failed>) {
        let (mut requests, mut failed) = (Vec::new(), Vec::new());
        let cfg = self.cfg.clone();
        self.entries.retain(|ip, s| match s {
            State::Incomplete { probes, next, queue } => {
                if now < *next {
                    return true;
                }
                if *probes >= cfg.max_probes {
                    failed.extend(queue.drain(..).map(|p| (*ip, p)));
                    return false;
                }
                *probes += 1;
                *next = now + cfg.retrans_time;
                requests.push(*ip);
                true
            }
            State::Reachable { mac, until } => {
                if now >= *until {
                    *s = State::Stale { mac: *mac, probed: None };
                }
                true
            }
            State::Stale { probed, .. } => {
                // A stale entry is probed once; if nothing confirms it in reachable_time, it goes.
                match probed {
                    None => {
                        *probed = Some(now);
                        requests.push(*ip);
                        true
                    }
                    Some(t) => now - *t < cfg.reachable_time,
                }
            }
        });
        (requests, failed)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|s| match s {
                State::Incomplete { next, .. } => Some(*next),
                State::Reachable { until, .. } => Some(*until),
                State::Stale { .. } => None,
            })
            .min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn pkt() -> PacketBuf {
        PacketBuf::from_slice(b"x")
    }

    #[test]
    fn resolve_queue_retry_and_fail() {
        let mut n = NeighCache::default();
        let ip = [10, 0, 0, 2];
        let t0 = Instant::ZERO;
        assert!(matches!(n.resolve(ip, pkt(), t0), Resolve::Queued { request: true }));
        assert!(matches!(n.resolve(ip, pkt(), t0), Resolve::Queued { request: false }));
        // Retries at 1 s intervals, then failure after max_probes with the queue handed back.
        let (req, failed) = n.poll(Instant::from_millis(1000));
        assert_eq!((req.len(), failed.len()), (1, 0));
        let (req, _) = n.poll(Instant::from_millis(2000));
        assert_eq!(req.len(), 1);
        let (req, failed) = n.poll(Instant::from_millis(3000));
        assert_eq!((req.len(), failed.len()), (0, 2));
        assert!(n.lookup(ip).is_none());
    }

    #[test]
    fn reply_flushes_queue_and_entries_age() {
        let mut n = NeighCache::default();
        let ip = [10, 0, 0, 2];
        n.resolve(ip, pkt(), Instant::ZERO);
        let flushed = n.update(ip, [2; 6], Instant::ZERO, false);
        assert_eq!(flushed.len(), 1);
        assert!(matches!(n.resolve(ip, pkt(), Instant::ZERO), Resolve::Send(m) if m == [2; 6]));
        // After reachable_time the entry is stale (still used) and probed once.
        let (req, _) = n.poll(Instant::from_millis(30_000));
        assert!(req.is_empty());
        let (req, _) = n.poll(Instant::from_millis(30_001));
        assert_eq!(req, vec![ip]);
        assert_eq!(n.lookup(ip), Some([2; 6]));
        // Unconfirmed for another reachable_time: gone.
        n.poll(Instant::from_millis(61_000));
        assert!(n.lookup(ip).is_none());
        // Unsolicited replies do not create entries unless asked to.
        n.update([10, 0, 0, 9], [9; 6], Instant::ZERO, false);
        assert!(n.lookup([10, 0, 0, 9]).is_none());
    }

    #[test]
    fn queue_is_bounded() {
        let mut n = NeighCache::new(Config { queue_len: 2, ..Default::default() });
        let ip = [10, 0, 0, 3];
        n.resolve(ip, pkt(), Instant::ZERO);
        n.resolve(ip, pkt(), Instant::ZERO);
        assert!(matches!(n.resolve(ip, pkt(), Instant::ZERO), Resolve::Dropped));
    }
}
