//! A simulated link between two stacks, deterministic from a seed: loss, reordering and duplication at
//! chosen rates, and a delay, all on the caller's clock.

use super::Device;
use crate::skb::PacketBuf;
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

/// Impairment on any device: seeded loss, reordering and duplication applied to received frames (the
/// stack's view of a bad wire), for interop tests where the host has no netem.
pub struct Impaired<D: Device> {
    inner: D,
    imp: Impairment,
    rng: Rng,
    held: Option<PacketBuf>,
    pub stats: Stats,
}

impl<D: Device> Impaired<D> {
    pub fn new(inner: D, imp: Impairment, seed: u64) -> Impaired<D> {
        Impaired { inner, imp, rng: Rng::new(seed), held: None, stats: Stats::default() }
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
        // Loss on the way out too: drop before the device sees it.
        let mut kept = VecDeque::new();
        let n = q.len();
        for p in q.drain(..) {
            self.stats.sent += 1;
            if self.rng.percent(self.imp.loss) {
                self.stats.lost += 1;
            } else {
                kept.push_back(p);
            }
        }
        self.inner.transmit(&mut kept)?;
        // What the device did not take goes back to the caller's queue front.
        let left = kept.len();
        for p in kept.into_iter().rev() {
            q.push_front(p);
        }
        Ok(n - left)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let mut got = Vec::new();
        self.inner.poll(budget, &mut got)?;
        let before = out.len();
        for p in got {
            if self.rng.percent(self.imp.loss) {
                self.stats.lost += 1;
                continue;
            }
            if self.rng.percent(self.imp.duplicate) {
                self.stats.duplicated += 1;
                out.push(p.clone());
            }
            if self.held.is_none() && self.rng.percent(self.imp.reorder) {
                // Hold this one back behind the next frame.
                self.stats.reordered += 1;
                self.held = Some(p);
                continue;
            }
            out.push(p);
            if let Some(h) = self.held.take() {
                out.push(h);
            }
        }
        if out.len() == before {
            if let Some(h) = self.held.take() {
                out.push(h);
            }
        }
        Ok(out.len() - before)
    }
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.held.is_some() {
            return Ok(());
        }
        self.inner.wait(timeout)
    }
    fn name(&self) -> String {
        format!("impaired({})", self.inner.name())
    }
}
