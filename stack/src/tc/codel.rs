//! CoDel (RFC 8289): drops at the head of a queue while packets' sojourn time has stayed above `target`
//! for at least `interval`, at a rate that rises with the square root of the drop count.

use crate::skb::PacketBuf;
use crate::time::Instant;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub target: Duration,
    pub interval: Duration,
    /// Below this backlog no drop (one MTU, RFC 8289 5.3).
    pub mtu: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params { target: Duration::from_millis(5), interval: Duration::from_millis(100), mtu: 1514 }
    }
}

/// A queue with CoDel's state.
#[derive(Debug, Default)]
pub struct CodelQueue {
    pub q: VecDeque<(PacketBuf, Instant)>,
    pub bytes: usize,
    first_above_time: Option<Instant>,
    drop_next: Instant,
    count: u32,
    lastcount: u32,
    dropping: bool,
    /// Packets CoDel dropped.
    pub drops: u64,
}

fn control_law(t: Instant, interval: Duration, count: u32) -> Instant {
    t + Duration::from_secs_f64(interval.as_secs_f64() / f64::from(count.max(1)).sqrt())
}

impl CodelQueue {
    pub fn push(&mut self, p: PacketBuf, now: Instant) {
        self.bytes += p.len();
        self.q.push_back((p, now));
    }

    /// Takes the head and says whether it may be dropped (its sojourn has been above target long enough).
    fn do_dequeue(&mut self, now: Instant, par: &Params) -> (Option<PacketBuf>, bool) {
        let Some((p, t)) = self.q.pop_front() else {
            self.first_above_time = None;
            return (None, false);
        };
        self.bytes -= p.len();
        let sojourn = now - t;
        let mut ok = false;
        if sojourn < par.target || self.bytes <= par.mtu {
            self.first_above_time = None;
        } else {
            match self.first_above_time {
                None => self.first_above_time = Some(now + par.interval),
                Some(f) if now >= f => ok = true,
                Some(_) => {}
            }
        }
        (Some(p), ok)
    }

    /// The next packet CoDel lets through; the ones it drops on the way are counted in `drops` and passed
    /// to `dropped` (for the caller's backlog accounting).
    pub fn dequeue(&mut self, now: Instant, par: &Params, dropped: &mut dyn FnMut(&PacketBuf)) -> Option<PacketBuf> {
        let (mut p, mut ok) = self.do_dequeue(now, par);
        let Some(_) = p else {
            self.dropping = false;
            return None;
        };
        if self.dropping {
            if !ok {
                self.dropping = false;
            }
            while self.dropping && now >= self.drop_next {
                if let Some(d) = p.take() {
                    dropped(&d);
                    self.drops += 1;
                }
                self.count += 1;
                (p, ok) = self.do_dequeue(now, par);
                if !ok || p.is_none() {
                    self.dropping = false;
                } else {
                    self.drop_next = control_law(self.drop_next, par.interval, self.count);
                }
            }
        } else if ok {
            if let Some(d) = p.take() {
                dropped(&d);
                self.drops += 1;
            }
            (p, _) = self.do_dequeue(now, par);
            self.dropping = true;
            let delta = self.count.saturating_sub(self.lastcount);
            self.count = if delta > 1 && now - self.drop_next < par.interval * 16 { delta } else { 1 };
            self.drop_next = control_law(now, par.interval, self.count);
            self.lastcount = self.count;
        }
        p
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tc::testing::udp_frame;

    #[test]
    fn a_standing_queue_is_drained_by_drops_a_short_one_is_not() {
        let par = Params::default();
        let mut q = CodelQueue::default();
        let ms = |m: u64| Instant::from_millis(m);
        // A burst that leaves within the target: no drop.
        for _ in 0..10 {
            q.push(udp_frame(1, 1500, 0), ms(0));
        }
        for k in 0..10 {
            assert!(q.dequeue(ms(k / 4), &par, &mut |_| {}).is_some());
        }
        assert_eq!(q.drops, 0);
        // A standing queue: 20 ms of delay for every packet, served one per ms for 300 ms.
        let mut t = 1000;
        for _ in 0..20 {
            q.push(udp_frame(1, 1500, 0), ms(t));
        }
        for _ in 0..300 {
            t += 1;
            q.push(udp_frame(1, 1500, 0), ms(t));
            let _ = q.dequeue(ms(t), &par, &mut |_| {});
        }
        assert!(q.drops >= 2, "CoDel dropped to bring the delay down ({})", q.drops);
        assert!(q.q.len() < 20, "the standing queue shrank ({})", q.q.len());
    }
}
