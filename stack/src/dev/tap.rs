//! A TAP device: the stack as a host on the Linux kernel's side of a virtual wire.

use super::Device;
use crate::skb::PacketBuf;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Tap {
    fd: OwnedFd,
    name: String,
    mac: crate::wire::Mac,
    buf: Vec<u8>,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54CA;

impl Tap {
    /// Opens (or creates) TAP `name`; the stack uses `mac` as its own address on it.
    pub fn open(name: &str, mac: crate::wire::Mac) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= 16 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name must be 1 to 15 bytes"));
        }
        // SAFETY: open with a constant C string; result checked.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq { name: [0; 16], flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF with a struct ifreq-shaped argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap { fd, name: name.into(), mac, buf: vec![0; 65536] })
    }
}

impl Device for Tap {
    fn mac(&self) -> crate::wire::Mac {
        self.mac
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut n = 0;
        while let Some(p) = q.front() {
            let v = p.to_vec();
            // SAFETY: writing from a live buffer.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), v.as_ptr().cast(), v.len()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            q.pop_front();
            n += 1;
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut n = 0;
        while n < budget {
            // SAFETY: reading into our own buffer.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            out.push(PacketBuf::from_slice(&self.buf[..r as usize]));
            n += 1;
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(60_000) as i32) };
        Ok(())
    }
    fn name(&self) -> String {
        format!("tap:{}", self.name)
    }
}
