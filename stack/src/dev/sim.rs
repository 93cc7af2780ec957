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

/// xorshift64*: small, deterministic, seedable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn percent(&mut self, p: u32) -> bool {
        (self.next() % 100) < p as u64
    }
}

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
    let pa = SimPort { mac: macs.0, tx: a.clone(), rx: b.clone(), imp, rng: Rng::new(seed), clock: clock.clone(), stats: stats.clone(), mtu: 1500 };
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
