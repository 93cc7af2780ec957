//! A simulated link between two stacks, deterministic from a seed: loss, reordering and duplication at
//! chosen rates, and a delay, all on the caller's clock; and `Impaired`, netem on both directions of any
//! device.

use super::Device;
use crate::skb::PacketBuf;
use crate::tc::netem::{self, Netem};
use crate::tc::Qdisc;
use crate::time::Instant;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Per-frame probabilities, in percent.
    pub loss: u32,
    pub reorder: u32,
    pub duplicate: u32,
    pub delay: Duration,
}

pub use crate::tc::Rng;

#[derive(Default)]
struct Wire {
    /// Frames in flight: (deliver at, frame).
    q: VecDeque<(Instant, PacketBuf)>,
}

#[derive(Default)]
pub struct Stats {
    pub sent: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// Frames longer than the MTU allows (with their Ethernet header and any 802.1Q tag): not carried, as
    /// a receiver without jumbo frames drops them.
    pub oversize: u64,
}

/// One end of a simulated link.
pub struct SimPort {
    mac: crate::wire::Mac,
    tx: Rc<RefCell<Wire>>,
    rx: Rc<RefCell<Wire>>,
    imp: Impairment,
    rng: Rng,
    clock: Rc<RefCell<Instant>>,
    pub stats: Rc<RefCell<Stats>>,
    mtu: usize,
}

/// Two connected ports sharing `clock`.
pub fn link(macs: (crate::wire::Mac, crate::wire::Mac), imp: Impairment, seed: u64, clock: Rc<RefCell<Instant>>) -> (SimPort, SimPort) {
    let a = Rc::new(RefCell::new(Wire::default()));
    let b = Rc::new(RefCell::new(Wire::default()));
    let stats = Rc::new(RefCell::new(Stats::default()));
    let pa = SimPort {
        mac: macs.0,
        tx: a.clone(),
        rx: b.clone(),
        imp,
        rng: Rng::new(seed),
        clock: clock.clone(),
        stats: stats.clone(),
        mtu: 1500,
    };
    let pb = SimPort { mac: macs.1, tx: b, rx: a, imp, rng: Rng::new(seed ^ 0x9E37_79B9), clock, stats, mtu: 1500 };
    (pa, pb)
}

impl SimPort {
    /// The port's MTU (1500 unless set): what it sends larger than this is dropped.
    pub fn with_mtu(mut self, mtu: usize) -> SimPort {
        self.mtu = mtu;
        self
    }
}

impl Device for SimPort {
    fn mac(&self) -> crate::wire::Mac {
        self.mac
    }
    fn mtu(&self) -> usize {
        self.mtu
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let now = *self.clock.borrow();
        let n = q.len();
        let mut w = self.tx.borrow_mut();
        let mut st = self.stats.borrow_mut();
        for p in q.drain(..) {
            st.sent += 1;
            let tagged = p.data().get(12..14) == Some(&[0x81, 0x00]);
            if p.len() > self.mtu + 14 + if tagged { 4 } else { 0 } {
                st.oversize += 1;
                continue;
            }
            if self.rng.percent(self.imp.loss) {
                st.lost += 1;
                continue;
            }
            let at = now + self.imp.delay;
            if self.rng.percent(self.imp.duplicate) {
                st.duplicated += 1;
                w.q.push_back((at, p.clone()));
            }
            if self.rng.percent(self.imp.reorder) && !w.q.is_empty() {
                // Overtake the frame in front of it.
                st.reordered += 1;
                let i = w.q.len() - 1;
                w.q.insert(i, (at, p));
            } else {
                w.q.push_back((at, p));
            }
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let now = *self.clock.borrow();
        let mut w = self.rx.borrow_mut();
        let mut n = 0;
        while n < budget && w.q.front().is_some_and(|(at, _)| *at <= now) {
            out.push(w.q.pop_front().unwrap().1);
            n += 1;
        }
        Ok(n)
    }
    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        "sim".into()
    }
}

/// Impairment on any device, for interop tests where the host has no netem: received frames go through a
/// netem (`tc::netem`, as Linux puts netem on an ifb for ingress) with the loss, duplication and
/// reordering asked for (reordering needs a delay to overtake: at least a millisecond), and sent frames
/// through a second one that only loses them.
pub struct Impaired<D: Device> {
    inner: D,
    ingress: Netem,
    egress: Netem,
    pub stats: Stats,
}

impl<D: Device> Impaired<D> {
    pub fn new(inner: D, imp: Impairment, seed: u64) -> Impaired<D> {
        let pct = |p: u32| f64::from(p.min(100)) / 100.0;
        let delay = if imp.reorder > 0 { imp.delay.max(Duration::from_millis(1)) } else { imp.delay };
        let ingress = Netem::new(netem::Config {
            delay,
            loss: pct(imp.loss),
            duplicate: pct(imp.duplicate),
            reorder: pct(imp.reorder),
            limit: 10_000,
            seed,
            ..Default::default()
        });
        let egress = Netem::new(netem::Config { loss: pct(imp.loss), limit: 10_000, seed: seed ^ 0x5EED, ..Default::default() });
        Impaired { inner, ingress, egress, stats: Stats::default() }
    }

    fn count(&mut self) {
        self.stats.lost = self.ingress.lost + self.egress.lost;
        self.stats.duplicated = self.ingress.duplicated;
        self.stats.reordered = self.ingress.reordered;
    }
}

impl<D: Device> Device for Impaired<D> {
    fn mac(&self) -> crate::wire::Mac {
        self.inner.mac()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn features(&self) -> super::Features {
        self.inner.features()
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        // Loss on the way out too: what the egress netem keeps goes to the device at once (no delay).
        let now = Instant::now();
        let n = q.len();
        self.stats.sent += n as u64;
        let mut kept = VecDeque::new();
        for p in q.drain(..) {
            self.egress.enqueue(p, now);
            while let Some(p) = self.egress.dequeue(now) {
                kept.push_back(p);
            }
        }
        self.count();
        self.inner.transmit(&mut kept)?;
        // What the device did not take goes back to the caller's queue front.
        let left = kept.len();
        for p in kept.into_iter().rev() {
            q.push_front(p);
        }
        Ok(n - left)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let now = Instant::now();
        let mut got = Vec::new();
        self.inner.poll(budget, &mut got)?;
        for p in got {
            self.ingress.enqueue(p, now);
        }
        let before = out.len();
        while let Some(p) = self.ingress.dequeue(now) {
            out.push(p);
        }
        self.count();
        Ok(out.len() - before)
    }
    fn report(&self) -> Option<String> {
        let s = &self.stats;
        let inner = self.inner.report().map(|r| format!("\n{r}")).unwrap_or_default();
        Some(format!("impairment: sent {} lost {} duplicated {} reordered {}{inner}", s.sent, s.lost, s.duplicated, s.reordered))
    }
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        // Frames held for their delay are due before the device has anything new, perhaps.
        let now = Instant::now();
        match self.ingress.next_at(now) {
            Some(t) => self.inner.wait(timeout.min(t - now)),
            None if !self.ingress.is_empty() => Ok(()),
            None => self.inner.wait(timeout),
        }
    }
    fn name(&self) -> String {
        format!("impaired({})", self.inner.name())
    }
}
