//! Linux TAP devices (`/dev/net/tun`, IFF_TAP | IFF_NO_PI): the one place the ioctls live, for the device
//! emulator's wire backend and for the stack's TAP device.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54CA;

fn ifreq(name: &str, flags: libc::c_short) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name must be 1 to 15 bytes"));
    }
    let mut req = IfReq { name: [0; 16], flags, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(req)
}

/// A TAP device, non-blocking.
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Attaches to TAP `name`, creating it if it does not exist.
    pub fn open(name: &str) -> io::Result<Tap> {
        let mut req = ifreq(name, (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short)?;
        // SAFETY: open with a constant C string; result checked.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: TUNSETIFF takes a struct ifreq, which IfReq lays out (name, flags, padding to 40 bytes).
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap { fd, name: name.into() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets IFF_UP on the interface.
    pub fn set_up(&self) -> io::Result<()> {
        // SAFETY: a plain datagram socket for interface ioctls; closed by OwnedFd.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: s is a fresh fd we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let mut req = ifreq(&self.name, 0)?;
        // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write ifr_flags of a struct ifreq.
        unsafe {
            if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits until the kernel side of the device is operational (`operstate` up), for at most `timeout`;
    /// whether it is. Attaching to a TAP turns its carrier on, but Linux activates the device's transmit
    /// queue only when its link-watch work runs (rate-limited to once a second): until then the kernel
    /// drops what it sends through the device, such as the answer to our first ARP request. An interface
    /// that is administratively down is not waited for.
    pub fn wait_operational(&self, timeout: std::time::Duration) -> bool {
        let path = format!("/sys/class/net/{}/operstate", self.name);
        let t0 = std::time::Instant::now();
        loop {
            match std::fs::read_to_string(&path) {
                Ok(s) if s.trim() == "up" => return true,
                Ok(_) if !self.is_up().unwrap_or(true) => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
            if t0.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Whether the interface is administratively up (IFF_UP).
    pub fn is_up(&self) -> io::Result<bool> {
        // SAFETY: a plain datagram socket for interface ioctls; closed by OwnedFd.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: s is a fresh fd we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let mut req = ifreq(&self.name, 0)?;
        // SAFETY: SIOCGIFFLAGS fills ifr_flags of a struct ifreq.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(req.flags & libc::IFF_UP as libc::c_short != 0)
    }

    /// One frame into `buf`; `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        Ok(Some(n as usize))
    }

    /// Sends one frame; `Ok(false)` when the device cannot take it now.
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) };
        }
        Ok(true)
    }

    /// Waits until a frame is readable or `timeout` passes.
    pub fn wait(&self, timeout: std::time::Duration) {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(60_000) as i32) };
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Tap::open("").err().unwrap().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(Tap::open("a-name-that-is-too-long").err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }
}
