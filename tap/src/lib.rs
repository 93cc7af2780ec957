//! Linux TAP devices (`/dev/net/tun`, IFF_TAP | IFF_NO_PI): the one place the ioctls live, for the device
//! emulator's wire backend and for the stack's TAP device. A TAP opened with a virtio-net header
//! (IFF_VNET_HDR) carries GSO frames and partial checksums once TUNSETOFFLOAD allows them; [`VnetHdr`] is
//! that header's codec.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54CA;
/// `_IOW('T', 208, unsigned int)`: which offloads the kernel may hand us (TUN_F_*).
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54D0;
/// `_IOW('T', 216, int)`: the size of the header in front of every frame.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54D8;
const IFF_VNET_HDR: libc::c_int = 0x4000;

/// TUNSETOFFLOAD flags (linux/if_tun.h).
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;

/// `struct virtio_net_hdr` (virtio 1.x, 5.1.6): what precedes every frame on a TAP opened with
/// IFF_VNET_HDR. Little-endian on the TAP (the kernel's default for a modern header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (a hint: receivers recompute it).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksum computation starts (NEEDS_CSUM).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;
    /// The checksum from `csum_start` to the end still has to be computed and stored.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was verified.
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_ECN: u8 = 0x80;

    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VnetHdr::LEN] = b.get(..VnetHdr::LEN)?.try_into().ok()?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr { flags: b[0], gso_type: b[1], hdr_len: le(2), gso_size: le(4), csum_start: le(6), csum_offset: le(8) })
    }

    pub fn to_bytes(&self) -> [u8; VnetHdr::LEN] {
        let mut b = [0u8; VnetHdr::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the frame is a GSO super-frame (to be segmented before it is a wire frame).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_NONE
    }
}

fn ifreq(name: &str, flags: libc::c_short) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name must be 1 to 15 bytes"));
    }
    let mut req = IfReq { name: [0; 16], flags, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(req)
}

/// The most parts `Tap::send_parts` writes as one frame.
pub const MAX_PARTS: usize = 8;

/// A TAP device, non-blocking.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet: bool,
}

impl Tap {
    /// Attaches to TAP `name`, creating it if it does not exist. Frames are plain Ethernet frames, and the
    /// kernel is told to hand over none of its offloads (a persistent TAP keeps what an earlier user set).
    pub fn open(name: &str) -> io::Result<Tap> {
        let t = Tap::open_flags(name, false)?;
        t.set_offload(0)?;
        Ok(t)
    }

    /// Attaches to TAP `name` with a [`VnetHdr`] in front of every frame in both directions; offloads are
    /// then enabled with [`Tap::set_offload`].
    pub fn open_vnet(name: &str) -> io::Result<Tap> {
        let t = Tap::open_flags(name, true)?;
        let size: libc::c_int = VnetHdr::LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        if unsafe { libc::ioctl(t.fd.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(t)
    }

    fn open_flags(name: &str, vnet: bool) -> io::Result<Tap> {
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | if vnet { IFF_VNET_HDR } else { 0 };
        let mut req = ifreq(name, flags as libc::c_short)?;
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
        Ok(Tap { fd, name: name.into(), vnet })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether every frame carries a [`VnetHdr`].
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet
    }

    /// Which offloads (TUN_F_*) the kernel may use in the frames it hands us: partial checksums, TCP GSO.
    /// Needs the virtio-net header for anything but 0.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags as the argument value itself.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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
    ///
    /// A TAP created by this descriptor is the exception: its carrier has been on since it was made
    /// (`carrier_changes` 0), so its queue was activated when it came up, and the link-watch work that
    /// would report "up" never runs; its operstate stays "unknown", which then means operational.
    pub fn wait_operational(&self, timeout: std::time::Duration) -> bool {
        let path = format!("/sys/class/net/{}/operstate", self.name);
        let t0 = std::time::Instant::now();
        loop {
            match std::fs::read_to_string(&path) {
                Ok(s) if s.trim() == "up" => return true,
                Ok(s) if s.trim() == "unknown" && self.carrier_never_changed() && self.is_up().unwrap_or(false) => {
                    return true;
                }
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

    /// Whether the carrier is on and has never changed since the interface was made.
    fn carrier_never_changed(&self) -> bool {
        let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{}/{f}", self.name));
        matches!((read("carrier"), read("carrier_changes")), (Ok(c), Ok(n)) if c.trim() == "1" && n.trim() == "0")
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

    /// One frame read in one call across three places: its first `head.len()` bytes into `head` (a
    /// virtio-net header), the next appended to `buf` as far as its spare capacity goes, the rest into
    /// `rest`. Returns the length read into all three, `None` when no frame is waiting. A frame longer
    /// than the three together is cut short. No copy between the kernel's and the caller's buffers: a
    /// frame lands where it is used.
    pub fn recv_split(&self, head: &mut [u8], buf: &mut Vec<u8>, rest: &mut [u8]) -> io::Result<Option<usize>> {
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let iov = [
            libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() },
            libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: room },
            libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() },
        ];
        // SAFETY: each iovec covers memory that is live and writable for its length: `head`, the
        // allocated (uninitialised) spare capacity of `buf`, and `rest`; none overlap, and readv writes
        // only within them.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        let n = n as usize;
        let in_buf = n.saturating_sub(head.len()).min(room);
        // SAFETY: readv filled the iovecs in order, so the first `in_buf` bytes of `buf`'s spare capacity
        // were written by it; `in_buf` is at most that capacity.
        unsafe { buf.set_len(buf.len() + in_buf) };
        Ok(Some(n))
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

    /// Sends one frame given in parts (a header, then the frame; at most `MAX_PARTS`) in one write;
    /// `Ok(false)` when the device cannot take it now.
    pub fn send_parts(&self, parts: &[&[u8]]) -> io::Result<bool> {
        // On the stack: a frame and its header are written on every send, allocating nothing.
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_PARTS];
        if parts.len() > MAX_PARTS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a frame in more parts than send_parts takes"));
        }
        for (v, p) in iov.iter_mut().zip(parts) {
            *v = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
        }
        // SAFETY: the first `parts.len()` iovecs point into live slices that writev only reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), parts.len() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) };
        }
        Ok(true)
    }

    /// Waits until a frame is readable or `timeout` passes.
    pub fn wait(&self, timeout: std::time::Duration) {
        self.wait_for(timeout);
    }

    /// As `wait`, returning whether a frame is readable (a zero timeout looks without sleeping).
    pub fn wait_for(&self, timeout: std::time::Duration) -> bool {
        let mut p = [libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        wait_readable(&mut p, timeout) > 0 && p[0].revents & libc::POLLIN != 0
    }
}

/// Waits until one of `fds` is ready or `timeout` (at most an hour) passes, to the nanosecond: poll(2)
/// counts whole milliseconds, so a shorter wait (a shaper's next token) would round to none and spin.
/// Returns what ppoll(2) returns. For any descriptors, not only a TAP's (the driver's interrupt eventfds).
pub fn wait_readable(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> libc::c_int {
    let t = timeout.min(std::time::Duration::from_secs(3600));
    let ts = libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(t.subsec_nanos() as i32) };
    // SAFETY: `fds` is a valid array of its length, `ts` outlives the call, and no signal mask is passed.
    unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) }
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
    fn vnet_header_round_trip_and_layout() {
        let h = VnetHdr { flags: 1, gso_type: 4, hdr_len: 74, gso_size: 1428, csum_start: 54, csum_offset: 16 };
        let b = h.to_bytes();
        // Hand-written little-endian layout.
        assert_eq!(b, [1, 4, 74, 0, 0x94, 0x05, 54, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.is_gso());
        assert!(!VnetHdr { gso_type: VnetHdr::GSO_ECN, ..h }.is_gso());
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn a_wait_shorter_than_a_millisecond_still_waits() {
        // A pipe with nothing to read: the wait lasts its whole timeout (ppoll's guarantee), where poll(2)
        // would have rounded 300 us down to no wait at all.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let t0 = std::time::Instant::now();
        let r = wait_readable(&mut [libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 }], std::time::Duration::from_micros(300));
        let waited = t0.elapsed();
        for fd in fds {
            // SAFETY: closing the two descriptors this test opened.
            unsafe { libc::close(fd) };
        }
        assert_eq!(r, 0, "nothing became readable");
        assert!(waited >= std::time::Duration::from_micros(300), "waited {waited:?}");
    }

    #[test]
    fn a_frame_in_parts_is_one_write_and_too_many_parts_are_refused() {
        // A TAP of its own (not persistent: it goes with the descriptor), up, so that writes are taken.
        let name = format!("ntp{}", std::process::id() % 100_000);
        let t = Tap::open_vnet(&name).expect("open a TAP (needs CAP_NET_ADMIN)");
        t.set_up().unwrap();
        let h = VnetHdr::default().to_bytes();
        let mut frame = [0u8; 60];
        frame[..6].fill(0xff);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert!(t.send_parts(&[&h, &frame]).unwrap(), "header and frame taken as one frame");
        let (a, b) = frame.split_at(30);
        assert!(t.send_parts(&[&h, a, b]).unwrap(), "a frame in two pieces behind its header");
        let many: Vec<&[u8]> = std::iter::once(&h[..]).chain(frame.chunks(6)).collect();
        assert!(many.len() > MAX_PARTS);
        assert_eq!(t.send_parts(&many).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_tap_made_by_its_descriptor_is_operational_once_up() {
        // Its operstate stays "unknown" (its carrier never changes, so link-watch never reports it up),
        // yet the kernel sends through it as soon as it is up.
        let name = format!("nto{}", std::process::id() % 100_000);
        let t = Tap::open(&name).expect("open a TAP (needs CAP_NET_ADMIN)");
        let short = std::time::Duration::from_millis(50);
        assert!(!t.wait_operational(short), "down: not operational");
        t.set_up().unwrap();
        let operstate = std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")).unwrap();
        assert_eq!(operstate.trim(), "unknown");
        assert!(t.wait_operational(std::time::Duration::from_secs(5)), "up: operational");
        // The kernel really sends through it: a packet socket's frame out of the TAP reaches its reader.
        let frame = {
            let mut f = [0u8; 60];
            f[..6].fill(0xff);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
            f[14..18].copy_from_slice(b"oper");
            f
        };
        // SAFETY: a packet socket of our own, closed below; sockaddr_ll is plain data.
        unsafe {
            let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(s >= 0, "packet socket");
            let cname = std::ffi::CString::new(name.clone()).unwrap();
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = libc::if_nametoindex(cname.as_ptr()) as i32;
            sa.sll_halen = 6;
            let n = libc::sendto(
                s,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(s);
            assert_eq!(n, 60, "sent through the TAP");
        }
        let mut buf = [0u8; 2048];
        let got = (0..200).find_map(|_| {
            let r = t.recv(&mut buf).unwrap();
            if r.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r.filter(|&n| buf.get(..n).is_some_and(|f| f.get(14..18) == Some(b"oper")))
        });
        assert_eq!(got, Some(60), "the frame came out of the TAP at once");
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Tap::open("").err().unwrap().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(Tap::open("a-name-that-is-too-long").err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }
}
