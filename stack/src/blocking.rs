//! A blocking convenience layer over the non-blocking stack: each call polls the stack on the system clock
//! and waits on the device until the operation can complete or its deadline passes.

use crate::iface::{Errno, SocketHandle, Stack, EAGAIN};
use crate::time::Instant;
use std::time::Duration;

pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);

/// Work to do once per round of the blocking layer.
pub type TurnHook = Box<dyn FnMut(&mut Stack)>;

pub struct Blocking {
    pub stack: Stack,
    /// Longest a single call waits.
    pub timeout: Duration,
    /// Called once per round (a control socket answering while the calls block, say).
    pub on_turn: Option<TurnHook>,
}

impl Blocking {
    pub fn new(stack: Stack) -> Blocking {
        Blocking { stack, timeout: Duration::from_secs(30), on_turn: None }
    }

    /// One round: poll, then wait for the device or the next timer (at most `max`).
    pub fn turn(&mut self, max: Duration) {
        if let Some(f) = self.on_turn.as_mut() {
            f(&mut self.stack);
        }
        let now = Instant::now();
        if self.stack.poll(now) {
            return;
        }
        let wait = self.stack.poll_at().map(|t| t - now).unwrap_or(max).min(max);
        if !wait.is_zero() {
            let _ = self.stack.dev.wait(wait);
        }
    }

    /// Retries `op` while it says EAGAIN.
    fn until<T>(&mut self, mut op: impl FnMut(&mut Stack, Instant) -> Result<T, Errno>) -> Result<T, Errno> {
        let end = Instant::now() + self.timeout;
        loop {
            let now = Instant::now();
            match op(&mut self.stack, now) {
                Err(e) if e == EAGAIN => {}
                r => return r,
            }
            if now >= end {
                return Err(ETIMEDOUT);
            }
            self.turn(Duration::from_millis(50));
        }
    }

    /// Connects to an IPv4 or IPv6 address; over IPv6 it first waits (within the timeout) for an address
    /// to connect from while duplicate address detection runs.
    pub fn connect(&mut self, dst: impl Into<std::net::IpAddr>, port: u16) -> Result<SocketHandle, Errno> {
        let dst = dst.into();
        let h = self.until(|s, now| match s.tcp_connect_ip(0, dst, port, now) {
            Err(e) if e.0 == libc::EADDRNOTAVAIL && dst.is_ipv6() => Err(EAGAIN),
            r => r,
        })?;
        self.until(|s, _| {
            if let Some(e) = s.tcp_error(h) {
                return Err(e);
            }
            match s.tcp_state(h) {
                Some(crate::tcp::State::SynSent | crate::tcp::State::SynReceived) => Err(EAGAIN),
                _ => Ok(h),
            }
        })
    }

    pub fn accept(&mut self, listener: SocketHandle) -> Result<SocketHandle, Errno> {
        self.until(|s, _| s.tcp_accept(listener))
    }

    /// Writes all of `data`.
    pub fn send_all(&mut self, h: SocketHandle, data: &[u8]) -> Result<(), Errno> {
        let mut off = 0;
        while off < data.len() {
            off += self.until(|s, now| s.tcp_send(h, &data[off..], now))?;
        }
        Ok(())
    }

    /// Reads some bytes; Ok(0) at end of stream.
    pub fn recv(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<usize, Errno> {
        self.until(|s, now| s.tcp_recv(h, buf, now))
    }

    /// Closes gracefully and waits (bounded) until everything queued is acknowledged.
    pub fn close(&mut self, h: SocketHandle) -> Result<(), Errno> {
        let now = Instant::now();
        self.stack.tcp_close(h, now);
        let _ = self.until(|s, _| match s.tcp_state(h) {
            Some(crate::tcp::State::FinWait1 | crate::tcp::State::Closing | crate::tcp::State::LastAck) => Err(EAGAIN),
            _ => Ok(()),
        });
        match self.stack.tcp_error(h) {
            Some(e) if e.0 != libc::ECONNRESET => Err(e),
            _ => Ok(()),
        }
    }
}
