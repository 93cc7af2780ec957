//! Timer polling of the vfio-user socket (`nic-device --timer-poll USECS`).
//!
//! A guest's register writes reach the device as posted messages on the vfio-user socket: the vCPU that
//! writes RDT, IMS or EITR sends a message and goes on. When the device's vfio-user thread sleeps on the
//! socket, every such send also wakes it, and the wake-up (an inter-processor interrupt when the thread
//! sleeps on another CPU) is paid by the sender: by the vCPU. Toward a guest that is busy receiving, that
//! is thousands of wake-ups a second on the CPU that sets the pace.
//!
//! While the client is active, a timer-polling server does not sleep on the socket: it sleeps on a timer
//! for the interval and then reads whatever came meanwhile, so a posted write costs its sender no more
//! than the copy into the socket. The price is latency: a message waits up to the interval (plus the
//! kernel's timer slack). Reads are where that price is paid in full, since the vCPU waits for the reply,
//! so a read puts the server back to waking on every message for a while (`AFTER_READ`): a driver that
//! reads in its hot path (ICR with INTx or MSI) keeps prompt replies. A client that has sent nothing for
//! `ACTIVE` is waited for on the socket again, so an idle device costs nothing. This is the device-side
//! counterpart of Linux's interrupt deferral (`napi_defer_hard_irqs` with `gro_flush_timeout`): fewer
//! wake-ups, each finding more to do.

use std::time::{Duration, Instant};

/// How long after the client's last message the server keeps polling on its timer.
pub const ACTIVE: Duration = Duration::from_millis(2);
/// How long after a read the server wakes on every message again.
pub const AFTER_READ: Duration = Duration::from_millis(2);
/// The longest interval accepted: beyond it, a read could wait longer than a driver's own timeouts allow
/// for comfort, and nothing is gained.
pub const MAX_INTERVAL: Duration = Duration::from_millis(10);

/// When the server sleeps on its timer instead of on the socket.
#[derive(Debug, Clone)]
pub struct TimerPoll {
    interval: Duration,
    last_message: Option<Instant>,
    last_read: Option<Instant>,
}

impl TimerPoll {
    /// Polls every `interval` while the client is active; `None` for a zero interval (off).
    pub fn new(interval: Duration) -> Option<TimerPoll> {
        (!interval.is_zero()).then_some(TimerPoll { interval: interval.min(MAX_INTERVAL), last_message: None, last_read: None })
    }

    /// The client's messages were read at `now`.
    pub fn message(&mut self, now: Instant) {
        self.last_message = Some(now);
    }

    /// The client read a register at `now`: its vCPU waited for the reply.
    pub fn read(&mut self, now: Instant) {
        self.last_read = Some(now);
    }

    /// How long to sleep before the next look at the socket, or `None` to sleep on the socket itself.
    pub fn sleep(&self, now: Instant) -> Option<Duration> {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let active = since(self.last_message).is_some_and(|d| d < ACTIVE);
        let reading = since(self.last_read).is_some_and(|d| d < AFTER_READ);
        (active && !reading).then_some(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_on_the_timer_only_while_the_client_is_active_and_not_reading() {
        let us = Duration::from_micros;
        assert!(TimerPoll::new(Duration::ZERO).is_none(), "zero is off");
        assert_eq!(TimerPoll::new(Duration::from_secs(1)).map(|t| t.interval), Some(MAX_INTERVAL));
        let t0 = Instant::now();
        let mut t = TimerPoll::new(us(100)).unwrap();
        assert_eq!(t.sleep(t0), None, "no message yet: the socket wakes the server");
        t.message(t0);
        assert_eq!(t.sleep(t0 + us(50)), Some(us(100)));
        assert_eq!(t.sleep(t0 + ACTIVE - us(1)), Some(us(100)));
        assert_eq!(t.sleep(t0 + ACTIVE), None, "idle for ACTIVE: back to the socket");
        // A read: prompt replies for AFTER_READ, even with messages coming all the while.
        let t1 = t0 + ACTIVE * 2;
        t.message(t1);
        t.read(t1);
        for k in 0..20 {
            let now = t1 + us(100 * k);
            t.message(now);
            assert_eq!(t.sleep(now), None, "{k}: within AFTER_READ of a read");
        }
        let after = t1 + AFTER_READ;
        t.message(after);
        assert_eq!(t.sleep(after), Some(us(100)), "timer polling again once reads stopped");
    }
}
