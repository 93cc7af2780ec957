//! Two stacks joined by the simulated link, on a virtual clock.
#![allow(dead_code)]

use stack::dev::sim::{link, Impairment};
use stack::time::Instant;
use stack::{Config, Stack};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const A: [u8; 4] = [10, 0, 0, 1];
pub const B: [u8; 4] = [10, 0, 0, 2];

pub struct World {
    pub clock: Rc<RefCell<Instant>>,
    pub a: Stack,
    pub b: Stack,
}

impl World {
    pub fn new(imp: Impairment, seed: u64) -> World {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (pa, pb) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), imp, seed, clock.clone());
        let (mut a, mut b) = (Stack::new(Box::new(pa), Config::new(A, 24)), Stack::new(Box::new(pb), Config::new(B, 24)));
        // Repeatable runs: the secrets behind sequence numbers and ports follow the seed.
        a.set_secret(seed ^ 0xA);
        b.set_secret(seed ^ 0xB);
        World { a, b, clock }
    }
    pub fn now(&self) -> Instant {
        *self.clock.borrow()
    }
    /// Polls both stacks, then advances the clock by 1 ms.
    pub fn step(&mut self) {
        let now = self.now();
        self.a.poll(now);
        self.b.poll(now);
        *self.clock.borrow_mut() = now + Duration::from_millis(1);
    }
    pub fn run(&mut self, d: Duration) {
        let end = self.now() + d;
        while self.now() < end {
            self.step();
        }
    }
}

/// Moves `data` over a connection: each round offers what is left to `send`, runs `step` (polls and the
/// clock) and drains `recv`, for at most `rounds` rounds or until everything arrived. What arrived.
pub fn transfer<W>(
    w: &mut W,
    data: &[u8],
    rounds: usize,
    send: impl Fn(&mut W, &[u8]) -> usize,
    step: impl Fn(&mut W),
    recv: impl Fn(&mut W, &mut [u8]) -> usize,
) -> Vec<u8> {
    let (mut sent, mut got, mut buf) = (0, Vec::new(), vec![0u8; 1 << 16]);
    for _ in 0..rounds {
        if sent < data.len() {
            sent += send(w, &data[sent..]);
        }
        step(w);
        loop {
            let n = recv(w, &mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= data.len() {
            break;
        }
    }
    got
}
