//! Reassembly of fragmented datagrams, for IPv4 and IPv6 alike: fragments are collected per datagram key
//! until the last one and every hole are in; a datagram over 64 KiB, a middle fragment whose length is not
//! a multiple of 8, or fragments that overlap (RFC 5722; an attack pattern, refused for IPv4 too) drop the
//! whole datagram; at most `max` datagrams are in progress, each for at most the timeout.

use crate::time::Instant;
use std::collections::HashMap;
use std::hash::Hash;

struct Partial {
    data: Vec<u8>,
    have: Vec<(usize, usize)>,
    total: Option<usize>,
    deadline: Instant,
    /// What the first fragment carried ahead of its fragmentable part (IPv6's unfragmentable extension
    /// headers, RFC 8200 4.5): the whole datagram carries it once.
    head: Vec<u8>,
    /// Bytes the caller keeps from the first fragment beside its head (not part of the datagram).
    meta: [u8; 8],
}

/// What one fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The datagram is whole: its payload.
    Done(Vec<u8>),
    /// Held, waiting for more.
    Held,
    /// Refused: the datagram (if any was in progress) is dropped.
    Failed,
}

pub struct Reassembly<K> {
    parts: HashMap<K, Partial>,
    /// The largest fragment (payload bytes) of the datagram completed last.
    last_largest: usize,
    /// The head and meta bytes of the datagram completed last.
    last_head: Vec<u8>,
    last_meta: [u8; 8],
    /// Datagrams in progress at most, and how long each may take.
    max: usize,
    timeout: std::time::Duration,
}

impl<K: Hash + Eq + Clone> Reassembly<K> {
    pub fn new(max: usize, timeout: std::time::Duration) -> Reassembly<K> {
        Reassembly { parts: HashMap::new(), last_largest: 0, last_head: Vec::new(), last_meta: [0; 8], max, timeout }
    }

    /// Adds the fragment at byte `offset` with `data`; `more` is the more-fragments flag.
    pub fn add(&mut self, key: K, offset: usize, data: &[u8], more: bool, now: Instant) -> Outcome {
        self.add_headed(key, offset, data, more, &[], [0; 8], now)
    }

    /// As `add`, for a fragment that carries `head` ahead of its fragmentable part: the first fragment's
    /// head is the datagram's (`last_head` once it is whole) and counts toward its 64 KiB; so are the
    /// caller's `meta` bytes about it (`last_meta`), which do not count.
    #[allow(clippy::too_many_arguments)]
    pub fn add_headed(&mut self, key: K, offset: usize, data: &[u8], more: bool, head: &[u8], meta: [u8; 8], now: Instant) -> Outcome {
        let (max, timeout) = (self.max, self.timeout);
        let (start, end) = (offset, offset + data.len());
        if end > 65535 || (more && !data.len().is_multiple_of(8)) {
            self.parts.remove(&key);
            return Outcome::Failed;
        }
        if !self.parts.contains_key(&key) && self.parts.len() >= max {
            return Outcome::Failed;
        }
        let e = self.parts.entry(key.clone()).or_insert(Partial {
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            deadline: now + timeout,
            head: Vec::new(),
            meta: [0; 8],
        });
        if e.have.iter().any(|&(a, b)| start < b && a < end && (a, b) != (start, end)) || (e.total.is_some_and(|t| end > t)) {
            self.parts.remove(&key);
            return Outcome::Failed;
        }
        if e.data.len() < end {
            e.data.resize(end, 0);
        }
        if let Some(d) = e.data.get_mut(start..end) {
            d.copy_from_slice(data);
        }
        if start == 0 {
            e.head.clear();
            e.head.extend_from_slice(head);
            e.meta = meta;
        }
        if e.data.len() + e.head.len() > 65535 {
            self.parts.remove(&key);
            return Outcome::Failed;
        }
        if !e.have.contains(&(start, end)) {
            e.have.push((start, end));
        }
        if !more {
            e.total = Some(end);
        }
        let Some(total) = e.total else { return Outcome::Held };
        e.have.sort();
        let mut at = 0;
        for &(a, b) in &e.have {
            if a > at {
                return Outcome::Held;
            }
            at = at.max(b);
        }
        if at < total {
            return Outcome::Held;
        }
        self.last_largest = e.have.iter().map(|&(a, b)| b - a).max().unwrap_or(0);
        let (mut d, head, meta) = self.parts.remove(&key).map(|p| (p.data, p.head, p.meta)).unwrap_or_default();
        d.truncate(total);
        self.last_head = head;
        self.last_meta = meta;
        Outcome::Done(d)
    }

    /// The largest fragment's payload bytes in the datagram the last `Done` returned (what a router that
    /// reassembled it fragments it to again, as Linux keeps `frag_max_size`).
    pub fn last_largest(&self) -> usize {
        self.last_largest
    }

    /// The head (see `add_headed`) of the datagram the last `Done` returned.
    pub fn last_head(&self) -> &[u8] {
        &self.last_head
    }

    pub fn last_meta(&self) -> [u8; 8] {
        self.last_meta
    }

    /// Drops datagrams whose time ran out; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.parts.len();
        self.parts.retain(|_, p| now < p.deadline);
        before - self.parts.len()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.parts.values().map(|p| p.deadline).min()
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn out_of_order_fragments_make_the_datagram() {
        let mut r = Reassembly::new(4, T);
        let now = Instant::from_millis(0);
        let data: Vec<u8> = (0..100u8).collect();
        assert_eq!(r.add(1, 48, &data[48..96], true, now), Outcome::Held);
        assert_eq!(r.add(1, 96, &data[96..], false, now), Outcome::Held);
        assert_eq!(r.add(1, 0, &data[..48], true, now), Outcome::Done(data));
        assert!(r.is_empty());
    }

    #[test]
    fn the_first_fragments_head_is_the_datagrams() {
        let mut r = Reassembly::new(4, T);
        let now = Instant::from_millis(0);
        let data: Vec<u8> = (0..64u8).collect();
        assert_eq!(r.add_headed(1, 32, &data[32..], false, &[9; 8], [9; 8], now), Outcome::Held);
        assert_eq!(r.add_headed(1, 0, &data[..32], true, &[7; 16], [7; 8], now), Outcome::Done(data));
        assert_eq!(r.last_head(), &[7; 16], "the head of the fragment at offset 0, whatever came before");
        assert_eq!(r.last_meta(), [7; 8]);
        // The head counts toward the datagram's 64 KiB, the meta bytes do not.
        assert_eq!(r.add_headed(2, 65520, &[0; 8], false, &[0; 8], [1; 8], now), Outcome::Held);
        assert_eq!(r.add_headed(2, 0, &[0; 8], true, &[0; 7], [1; 8], now), Outcome::Held, "65528 + 7 bytes fit");
        assert_eq!(r.add_headed(3, 65520, &[0; 8], false, &[0; 8], [1; 8], now), Outcome::Held);
        assert_eq!(r.add_headed(3, 0, &[0; 8], true, &[0; 8], [1; 8], now), Outcome::Failed, "65528 + 8 do not");
        assert_eq!(r.len(), 1, "only the datagram that fits is still held");
    }

    #[test]
    fn overlaps_odd_sizes_limits_and_timeouts_fail() {
        let now = Instant::from_millis(0);
        let mut r = Reassembly::new(4, T);
        assert_eq!(r.add(1, 0, &[0; 16], true, now), Outcome::Held);
        assert_eq!(r.add(1, 8, &[0; 16], true, now), Outcome::Failed, "overlap drops the datagram");
        assert!(r.is_empty());
        assert_eq!(r.add(2, 0, &[0; 12], true, now), Outcome::Failed, "middle fragment not a multiple of 8");
        assert_eq!(r.add(3, 65530, &[0; 16], false, now), Outcome::Failed, "beyond 64 KiB");
        let mut r = Reassembly::new(2, T);
        for k in 10..12 {
            assert_eq!(r.add(k, 0, &[0; 8], true, now), Outcome::Held);
        }
        assert_eq!(r.add(12, 0, &[0; 8], true, now), Outcome::Failed, "at most `max` in progress");
        assert_eq!(r.next_deadline(), Some(now + T));
        assert_eq!(r.expire(now + T), 2);
        assert!(r.is_empty());
    }
}
