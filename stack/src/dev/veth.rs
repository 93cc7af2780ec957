//! A veth-like pair: two devices joined back to back in memory, for stack instances (namespaces) in one
//! process. What one end transmits the other receives, in order; each end has an eventfd that becomes
//! readable when frames wait for it, so that a poll loop over many devices sleeps when nothing moves.

use super::Device;
use crate::skb::PacketBuf;
use crate::wire::Mac;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

/// Frames a peer may have waiting before the sender is told to wait (as a device's full queue).
const QUEUE: usize = 1024;

struct Side {
    q: VecDeque<PacketBuf>,
    ready: OwnedFd,
}

pub struct Veth {
    name: String,
    mac: Mac,
    /// What this end receives.
    inbox: Rc<RefCell<Side>>,
    /// The other end's inbox.
    peer: Rc<RefCell<Side>>,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd with valid flags; the result is checked and owned at once.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) {
    // SAFETY: writing the 8-byte counter increment to our own eventfd.
    unsafe { libc::write(fd.as_raw_fd(), 1u64.to_ne_bytes().as_ptr().cast(), 8) };
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    // SAFETY: reading the 8-byte counter of our own non-blocking eventfd into a live buffer.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
}

/// Two joined ends named `a` and `b`, with their own addresses.
pub fn pair(a: (&str, Mac), b: (&str, Mac)) -> io::Result<(Veth, Veth)> {
    let sa = Rc::new(RefCell::new(Side { q: VecDeque::new(), ready: eventfd()? }));
    let sb = Rc::new(RefCell::new(Side { q: VecDeque::new(), ready: eventfd()? }));
    Ok((Veth { name: a.0.into(), mac: a.1, inbox: sa.clone(), peer: sb.clone() }, Veth { name: b.0.into(), mac: b.1, inbox: sb, peer: sa }))
}

impl Device for Veth {
    fn mac(&self) -> Mac {
        self.mac
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut peer = self.peer.borrow_mut();
        let room = QUEUE.saturating_sub(peer.q.len());
        let n = q.len().min(room);
        peer.q.extend(q.drain(..n));
        if n > 0 {
            signal(&peer.ready);
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut me = self.inbox.borrow_mut();
        drain(&me.ready);
        let n = budget.min(me.q.len());
        out.extend(me.q.drain(..n));
        if !me.q.is_empty() {
            // More than the budget waits: stay readable.
            signal(&me.ready);
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.inbox.borrow().q.is_empty() {
            return Ok(());
        }
        super::bridge::wait_any(vec![self.raw_fd()], timeout);
        Ok(())
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.inbox.borrow().ready.as_raw_fd())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::time::Instant;
    use crate::{Config, PingEvent, Stack};

    #[test]
    fn two_stacks_on_a_pair_ping_and_the_ends_signal() {
        let (a, b) = pair(("va", [2, 0, 0, 0, 0xa, 1]), ("vb", [2, 0, 0, 0, 0xb, 1])).unwrap();
        let fd_b = b.raw_fd().unwrap();
        let mut sa = Stack::new(Box::new(a), Config::new([10, 9, 0, 1], 24));
        let mut sb = Stack::new(Box::new(b), Config::new([10, 9, 0, 2], 24));
        let now = Instant::from_millis(1);
        sa.ping_send([10, 9, 0, 2], 3, 1, b"in-process", now).unwrap();
        sa.poll(now);
        // The ARP request (and the gratuitous one) wait at b: its descriptor is readable.
        let mut p = libc::pollfd { fd: fd_b, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1);
        for _ in 0..10 {
            sa.poll(now);
            sb.poll(now);
        }
        let ev = sa.ping_events(3);
        assert!(matches!(ev.as_slice(), [PingEvent::Reply { seq: 1, .. }]), "{ev:?}");
        // Idle: nothing readable.
        let mut p = libc::pollfd { fd: fd_b, events: libc::POLLIN, revents: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0, "no busy loop when nothing waits");
    }
}
