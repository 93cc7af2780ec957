//! The IPv6 neighbour cache and its reachability state machine (RFC 4861 7.3): INCOMPLETE while a
//! multicast solicitation waits for its advertisement (packets queue), REACHABLE for ReachableTime after a
//! confirmation, STALE after that (still used), DELAY for a moment after a STALE entry is used (an upper
//! layer may confirm it), then PROBE with unicast solicitations until an advertisement comes back or the
//! entry goes. Pure state on the caller's clock; the interface sends what `poll` asks for.

use crate::skb::PacketBuf;
use crate::time::Instant;
use crate::wire::ipv6::Addr;
use crate::wire::Mac;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// REACHABLE_TIME (30 s; a router advertisement may change it).
    pub reachable_time: Duration,
    /// RETRANS_TIMER (1 s).
    pub retrans_time: Duration,
    /// DELAY_FIRST_PROBE_TIME (5 s).
    pub delay_first_probe: Duration,
    /// MAX_MULTICAST_SOLICIT and MAX_UNICAST_SOLICIT (3 each).
    pub max_multicast: u32,
    pub max_unicast: u32,
    /// Bytes that may wait for one neighbour (Linux's unres_qlen_bytes): a fragmented datagram's
    /// fragments all wait together.
    pub queue_bytes: usize,
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reachable_time: Duration::from_secs(30),
            retrans_time: Duration::from_secs(1),
            delay_first_probe: Duration::from_secs(5),
            max_multicast: 3,
            max_unicast: 3,
            queue_bytes: 212_992,
            max_entries: 1024,
        }
    }
}

#[derive(Debug)]
enum Nud {
    Incomplete { probes: u32, next: Instant, queue: VecDeque<PacketBuf> },
    Reachable { mac: Mac, until: Instant },
    Stale { mac: Mac },
    Delay { mac: Mac, until: Instant },
    Probe { mac: Mac, probes: u32, next: Instant },
}

/// The state's name as `ip -6 neigh` prints it.
fn name(n: &Nud) -> &'static str {
    match n {
        Nud::Incomplete { .. } => "INCOMPLETE",
        Nud::Reachable { .. } => "REACHABLE",
        Nud::Stale { .. } => "STALE",
        Nud::Delay { .. } => "DELAY",
        Nud::Probe { .. } => "PROBE",
    }
}

/// What to do with a packet for a neighbour.
#[derive(Debug)]
pub enum Resolve {
    /// Send it (handed back) to this address.
    Send(Mac, PacketBuf),
    /// Queued; send a multicast solicitation now if `solicit`.
    Queued { solicit: bool },
    /// The queue was full (or the cache): dropped.
    Dropped,
}

/// A solicitation to send: multicast to the target's solicited-node group, or unicast to what we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicit {
    pub target: Addr,
    pub unicast: Option<Mac>,
}

#[derive(Default)]
pub struct NeighCache {
    pub cfg: Config,
    entries: HashMap<Addr, Nud>,
}

impl NeighCache {
    pub fn new(cfg: Config) -> NeighCache {
        NeighCache { cfg, entries: HashMap::new() }
    }

    /// The link-layer address and state of a neighbour.
    pub fn get(&self, ip: &Addr) -> Option<(Option<Mac>, &'static str)> {
        let n = self.entries.get(ip)?;
        let mac = match n {
            Nud::Incomplete { .. } => None,
            Nud::Reachable { mac, .. } | Nud::Stale { mac } | Nud::Delay { mac, .. } | Nud::Probe { mac, .. } => Some(*mac),
        };
        Some((mac, name(n)))
    }

    /// Every entry: address, link-layer address, state.
    pub fn entries(&self) -> Vec<(Addr, Option<Mac>, &'static str)> {
        let mut v: Vec<_> = self.entries.keys().filter_map(|k| self.get(k).map(|(m, s)| (*k, m, s))).collect();
        v.sort();
        v
    }

    /// A packet for `ip` (7.3.3: sending to a STALE entry starts DELAY).
    pub fn resolve(&mut self, ip: Addr, p: PacketBuf, now: Instant) -> Resolve {
        let cfg = self.cfg.clone();
        if !self.entries.contains_key(&ip) {
            if self.entries.len() >= cfg.max_entries {
                return Resolve::Dropped;
            }
            let mut queue = VecDeque::new();
            queue.push_back(p);
            self.entries.insert(ip, Nud::Incomplete { probes: 1, next: now + cfg.retrans_time, queue });
            return Resolve::Queued { solicit: true };
        }
        let Some(e) = self.entries.get_mut(&ip) else { return Resolve::Dropped };
        match e {
            Nud::Incomplete { queue, .. } => {
                if queue.iter().map(|q| q.len()).sum::<usize>() + p.len() > cfg.queue_bytes {
                    return Resolve::Dropped;
                }
                queue.push_back(p);
                Resolve::Queued { solicit: false }
            }
            Nud::Reachable { mac, until } => {
                let mac = *mac;
                if now >= *until {
                    *e = Nud::Delay { mac, until: now + cfg.delay_first_probe };
                }
                Resolve::Send(mac, p)
            }
            Nud::Stale { mac } => {
                let mac = *mac;
                *e = Nud::Delay { mac, until: now + cfg.delay_first_probe };
                Resolve::Send(mac, p)
            }
            Nud::Delay { mac, .. } | Nud::Probe { mac, .. } => Resolve::Send(*mac, p),
        }
    }

    /// A Neighbor Advertisement for `ip` (7.2.5). Returns the packets that waited for it, with the address
    /// to send them to. An advertisement for a neighbour not in the cache is ignored.
    pub fn on_advert(
        &mut self,
        ip: Addr,
        ll: Option<Mac>,
        solicited: bool,
        override_: bool,
        now: Instant,
    ) -> (Option<Mac>, Vec<PacketBuf>) {
        let reach = now + self.cfg.reachable_time;
        let Some(e) = self.entries.get_mut(&ip) else { return (None, Vec::new()) };
        match e {
            Nud::Incomplete { queue, .. } => {
                let Some(mac) = ll else { return (None, Vec::new()) };
                let q: Vec<PacketBuf> = queue.drain(..).collect();
                *e = if solicited { Nud::Reachable { mac, until: reach } } else { Nud::Stale { mac } };
                (Some(mac), q)
            }
            Nud::Reachable { mac, .. } | Nud::Stale { mac } | Nud::Delay { mac, .. } | Nud::Probe { mac, .. } => {
                let old = *mac;
                let differs = ll.is_some_and(|m| m != old);
                if !override_ && differs {
                    // Keep the address; a REACHABLE entry is no longer confirmed.
                    if matches!(e, Nud::Reachable { .. }) {
                        *e = Nud::Stale { mac: old };
                    }
                    return (Some(old), Vec::new());
                }
                let mac = ll.unwrap_or(old);
                if solicited {
                    *e = Nud::Reachable { mac, until: reach };
                } else if differs {
                    *e = Nud::Stale { mac };
                }
                (Some(mac), Vec::new())
            }
        }
    }

    /// A solicitation, router solicitation or advertisement, or redirect carrying the sender's link-layer
    /// address (7.2.3, 6.3.4): the entry is created or updated as STALE. Packets that waited go out.
    pub fn on_source_ll(&mut self, ip: Addr, mac: Mac, now: Instant) -> Vec<PacketBuf> {
        let _ = now;
        match self.entries.get_mut(&ip) {
            None => {
                if self.entries.len() < self.cfg.max_entries {
                    self.entries.insert(ip, Nud::Stale { mac });
                }
                Vec::new()
            }
            Some(e) => match e {
                Nud::Incomplete { queue, .. } => {
                    let q = queue.drain(..).collect();
                    *e = Nud::Stale { mac };
                    q
                }
                Nud::Reachable { mac: m, .. } | Nud::Stale { mac: m } | Nud::Delay { mac: m, .. } | Nud::Probe { mac: m, .. } => {
                    if *m != mac {
                        *e = Nud::Stale { mac };
                    }
                    Vec::new()
                }
            },
        }
    }

    /// Forward progress seen by an upper layer (7.3.1): the entry is REACHABLE again.
    pub fn confirm(&mut self, ip: &Addr, now: Instant) {
        let until = now + self.cfg.reachable_time;
        if let Some(e) = self.entries.get_mut(ip) {
            match e {
                Nud::Reachable { mac, .. } | Nud::Stale { mac } | Nud::Delay { mac, .. } | Nud::Probe { mac, .. } => {
                    *e = Nud::Reachable { mac: *mac, until };
                }
                Nud::Incomplete { .. } => {}
            }
        }
    }

    /// Timers: solicitations to send, and the queued packets of neighbours that never answered.
    pub fn poll(&mut self, now: Instant) -> (Vec<Solicit>, Vec<(Addr, PacketBuf)>) {
        let cfg = self.cfg.clone();
        let mut solicit = Vec::new();
        let mut failed = Vec::new();
        let mut gone = Vec::new();
        for (ip, e) in self.entries.iter_mut() {
            match e {
                Nud::Incomplete { probes, next, queue } if now >= *next => {
                    if *probes >= cfg.max_multicast {
                        failed.extend(queue.drain(..).map(|p| (*ip, p)));
                        gone.push(*ip);
                    } else {
                        *probes += 1;
                        *next = now + cfg.retrans_time;
                        solicit.push(Solicit { target: *ip, unicast: None });
                    }
                }
                Nud::Reachable { mac, until } if now >= *until => *e = Nud::Stale { mac: *mac },
                Nud::Delay { mac, until } if now >= *until => {
                    let mac = *mac;
                    *e = Nud::Probe { mac, probes: 1, next: now + cfg.retrans_time };
                    solicit.push(Solicit { target: *ip, unicast: Some(mac) });
                }
                Nud::Probe { mac, probes, next } if now >= *next => {
                    if *probes >= cfg.max_unicast {
                        gone.push(*ip);
                    } else {
                        *probes += 1;
                        *next = now + cfg.retrans_time;
                        solicit.push(Solicit { target: *ip, unicast: Some(*mac) });
                    }
                }
                _ => {}
            }
        }
        for ip in gone {
            self.entries.remove(&ip);
        }
        (solicit, failed)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Nud::Incomplete { next, .. } | Nud::Probe { next, .. } => Some(*next),
                Nud::Reachable { until, .. } | Nud::Delay { until, .. } => Some(*until),
                Nud::Stale { .. } => None,
            })
            .min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const IP: Addr = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    const MAC: Mac = [2, 0, 0, 0, 0, 9];

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn pkt() -> PacketBuf {
        PacketBuf::from_slice(&[0x60; 40])
    }

    #[test]
    fn incomplete_resolves_on_a_solicited_advert_and_releases_the_queue() {
        let mut c = NeighCache::default();
        assert!(matches!(c.resolve(IP, pkt(), t(0)), Resolve::Queued { solicit: true }));
        assert!(matches!(c.resolve(IP, pkt(), t(1)), Resolve::Queued { solicit: false }));
        assert_eq!(c.get(&IP), Some((None, "INCOMPLETE")));
        // No link-layer address: nothing learned.
        assert!(c.on_advert(IP, None, true, true, t(2)).1.is_empty());
        let (mac, q) = c.on_advert(IP, Some(MAC), true, true, t(3));
        assert_eq!((mac, q.len()), (Some(MAC), 2));
        assert_eq!(c.get(&IP), Some((Some(MAC), "REACHABLE")));
        assert!(matches!(c.resolve(IP, pkt(), t(4)), Resolve::Send(MAC, _)));
    }

    #[test]
    fn reachable_goes_stale_then_delay_then_probe_then_away() {
        let mut c = NeighCache::default();
        c.resolve(IP, pkt(), t(0));
        c.on_advert(IP, Some(MAC), true, true, t(0));
        let (s, _) = c.poll(t(30_000));
        assert!(s.is_empty());
        assert_eq!(c.get(&IP).unwrap().1, "STALE", "ReachableTime ran out");
        // Using a STALE entry sends at once and starts DELAY.
        assert!(matches!(c.resolve(IP, pkt(), t(31_000)), Resolve::Send(MAC, _)));
        assert_eq!(c.get(&IP).unwrap().1, "DELAY");
        // No confirmation within DELAY_FIRST_PROBE_TIME: unicast probes, one per RetransTimer.
        let (s, _) = c.poll(t(36_000));
        assert_eq!(s, vec![Solicit { target: IP, unicast: Some(MAC) }]);
        assert_eq!(c.get(&IP).unwrap().1, "PROBE");
        assert_eq!(c.poll(t(37_000)).0.len(), 1);
        assert_eq!(c.poll(t(38_000)).0.len(), 1);
        assert!(c.poll(t(39_000)).0.is_empty());
        assert_eq!(c.get(&IP), None, "MAX_UNICAST_SOLICIT probes unanswered: gone");
    }

    #[test]
    fn a_probe_answered_or_a_confirmation_makes_it_reachable() {
        let mut c = NeighCache::default();
        c.on_source_ll(IP, MAC, t(0));
        assert_eq!(c.get(&IP), Some((Some(MAC), "STALE")), "learned from a solicitation");
        c.resolve(IP, pkt(), t(1));
        c.confirm(&IP, t(2));
        assert_eq!(c.get(&IP).unwrap().1, "REACHABLE");
        c.resolve(IP, pkt(), t(40_000));
        c.poll(t(46_000));
        assert_eq!(c.get(&IP).unwrap().1, "PROBE");
        c.on_advert(IP, Some(MAC), true, false, t(46_500));
        assert_eq!(c.get(&IP).unwrap().1, "REACHABLE");
    }

    #[test]
    fn overrides_and_unsolicited_adverts_follow_7_2_5() {
        let mut c = NeighCache::default();
        c.resolve(IP, pkt(), t(0));
        c.on_advert(IP, Some(MAC), true, true, t(0));
        let other = [2, 0, 0, 0, 0, 0x10];
        // A different address without O: kept, but no longer confirmed.
        c.on_advert(IP, Some(other), true, false, t(1));
        assert_eq!(c.get(&IP), Some((Some(MAC), "STALE")));
        // With O: taken, STALE when unsolicited.
        c.on_advert(IP, Some(other), false, true, t(2));
        assert_eq!(c.get(&IP), Some((Some(other), "STALE")));
        // An advertisement for an address not in the cache creates nothing.
        let stranger = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77];
        c.on_advert(stranger, Some(MAC), false, true, t(3));
        assert_eq!(c.get(&stranger), None);
    }

    #[test]
    fn unanswered_solicitations_fail_the_queue() {
        let mut c = NeighCache::default();
        c.resolve(IP, pkt(), t(0));
        assert_eq!(c.poll(t(1000)).0.len(), 1);
        assert_eq!(c.poll(t(2000)).0.len(), 1);
        let (s, failed) = c.poll(t(3000));
        assert!(s.is_empty());
        assert_eq!(failed.len(), 1);
        assert_eq!(c.get(&IP), None);
        let full = NeighCache::new(Config { max_entries: 0, ..Default::default() });
        let mut full = full;
        assert!(matches!(full.resolve(IP, pkt(), t(0)), Resolve::Dropped));
    }
}
