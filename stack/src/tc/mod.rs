//! Traffic control: egress queueing disciplines per interface, as Linux's `tc` has them, and an ingress
//! policer. A qdisc takes every frame the stack sends (`enqueue`) and gives them to the device when it
//! may (`dequeue`); shaping qdiscs say when the next frame will be ready (`next_at`) so the poll loop
//! sleeps until then. Statistics follow `tc -s qdisc show`: sent bytes and packets, drops, overlimits,
//! requeues and backlog.
//!
//! - `pfifo_fast`: three bands by the priority the IP TOS maps to, band 0 first;
//! - `fq_codel` (RFC 8290): per-flow queues served by deficit round robin, new flows first, each with CoDel
//!   (RFC 8289, `codel`) dropping at the head when the queueing delay stays above target;
//! - `tbf`: a token bucket (rate, burst) in front of a child qdisc, with a queue bounded by latency;
//! - `htb`: a class tree with rate and ceil, leaves borrowing from their parent up to ceil, packets
//!   classified by address, protocol and port;
//! - `netem`: delay with jitter and correlation, loss, duplication, reordering, corruption and a rate;
//! - `police`: an ingress token bucket that drops what exceeds it.

pub mod codel;
pub mod fifo;
pub mod fq_codel;
pub mod htb;
pub mod netem;
pub mod parse;
pub mod police;
pub mod tbf;

use crate::netfilter::packet::View;
use crate::skb::PacketBuf;
use crate::time::Instant;
use std::time::Duration;

/// `tc -s qdisc show` counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QdiscStats {
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub dropped: u64,
    pub overlimits: u64,
    pub requeues: u64,
    pub backlog_bytes: u64,
    pub backlog_packets: u64,
}

impl QdiscStats {
    pub fn show(&self) -> String {
        format!(
            " Sent {} bytes {} pkt (dropped {}, overlimits {} requeues {})\n backlog {}b {}p",
            self.sent_bytes, self.sent_packets, self.dropped, self.overlimits, self.requeues, self.backlog_bytes, self.backlog_packets
        )
    }
    pub(crate) fn enq(&mut self, len: usize) {
        self.backlog_bytes += len as u64;
        self.backlog_packets += 1;
    }
    pub(crate) fn deq(&mut self, len: usize) {
        self.backlog_bytes = self.backlog_bytes.saturating_sub(len as u64);
        self.backlog_packets = self.backlog_packets.saturating_sub(1);
        self.sent_bytes += len as u64;
        self.sent_packets += 1;
    }
    /// A queued packet dropped.
    pub(crate) fn drop_queued(&mut self, len: usize) {
        self.backlog_bytes = self.backlog_bytes.saturating_sub(len as u64);
        self.backlog_packets = self.backlog_packets.saturating_sub(1);
        self.dropped += 1;
    }
}

/// An egress queueing discipline.
pub trait Qdisc {
    /// Takes a frame; false when it was dropped (counted in the qdisc's statistics).
    fn enqueue(&mut self, p: PacketBuf, now: Instant) -> bool;
    /// The next frame the device may send now.
    fn dequeue(&mut self, now: Instant) -> Option<PacketBuf>;
    /// When a frame will be ready, if some wait (shaping, delay); `None` when nothing waits or one is ready.
    fn next_at(&self, now: Instant) -> Option<Instant>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Drops everything queued (the interface went down).
    fn reset(&mut self);
    fn stats(&self) -> QdiscStats;
    /// `tc -s qdisc show` for this qdisc and its children.
    fn show(&self) -> String;
    /// Whether it limits the rate (the stack then sends MTU-sized frames, not 64 KiB super-packets).
    fn shapes(&self) -> bool {
        false
    }
}

/// The IP view of a frame (after Ethernet and any 802.1Q tag).
pub fn ip_view(frame: &[u8]) -> Option<View> {
    crate::netfilter::packet::frame_ip(frame, true).map(|(_, v)| v)
}

/// A flow's hash over its 5-tuple (non-IP frames share flow 0).
pub fn flow_hash(frame: &[u8], perturb: u64) -> u64 {
    let Some(v) = ip_view(frame) else { return 0 };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    use std::hash::{Hash, Hasher};
    (v.src, v.dst, v.proto, v.sport, v.dport, perturb).hash(&mut h);
    h.finish()
}

/// The IPv4 TOS or IPv6 traffic class of a frame.
pub fn tos(frame: &[u8]) -> u8 {
    let mut at = 14;
    if frame.get(12..14) == Some(&[0x81, 0x00]) {
        at += 4;
    }
    match frame.get(at).map(|b| b >> 4) {
        Some(4) => frame.get(at + 1).copied().unwrap_or(0),
        Some(6) => {
            let a = frame.get(at).copied().unwrap_or(0);
            let b = frame.get(at + 1).copied().unwrap_or(0);
            (a << 4) | (b >> 4)
        }
        _ => 0,
    }
}

/// Time for `bytes` at `rate` bytes per second.
pub fn tx_time(bytes: usize, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((bytes as u128 * 1_000_000_000 / u128::from(rate)).min(u128::from(u64::MAX)) as u64)
}

/// A deterministic random source (xorshift64*), seeded so that runs replay (qdiscs, simulated links).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: u32) -> bool {
        (self.next_u64() % 100) < u64::from(p)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::skb::PacketBuf;

    /// An Ethernet + IPv4 + UDP frame of `len` bytes in all, from port `sport`, with TOS `tos`.
    pub fn udp_frame(sport: u16, len: usize, tos: u8) -> PacketBuf {
        let mut f = vec![0u8; len.max(42)];
        f[12] = 8;
        f[14] = 0x45;
        f[15] = tos;
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        let ulen = (f.len() - 34) as u16;
        f[38..40].copy_from_slice(&ulen.to_be_bytes());
        PacketBuf::from_slice(&f)
    }
}
