//! Byte-stream framing over a unix socket, with file descriptors passed as SCM_RIGHTS.

use crate::message::{Header, HEADER_SIZE, MAX_MESSAGE_SIZE, MAX_MSG_FDS};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A whole message as received: header, payload (without header) and the fds that came with it.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What the reader yields.
#[derive(Debug)]
pub enum Frame {
    Message(Message),
    /// A message whose size exceeded [`MAX_MESSAGE_SIZE`]; its bytes were drained, the header is kept so the
    /// caller can answer it with an error.
    Oversized(Header),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message size {0} is smaller than the header")]
    Undersized(u32),
    #[error("peer closed the connection")]
    Closed,
    #[error("message size {0} is beyond what is drained to stay in sync ({MAX_DISCARD} bytes): connection closed")]
    TooLarge(u32),
    #[error("{0}")]
    Stalled(&'static str),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// An oversized message up to this size is read and thrown away so that the stream stays in sync and the
/// request gets an error reply; a larger one ends the connection (reading gigabytes to discard them would
/// hold the device's single client slot for as long as the client cares to trickle them).
pub const MAX_DISCARD: usize = 16 << 20;

const CMSG_SPACE_FDS: usize = 512; // room for MAX_MSG_FDS * 4 rounded, with headroom

/// Receives once into `buf`, appending received fds to `fds`. Returns the byte count (0 at EOF).
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut cmsg = [0u64; CMSG_SPACE_FDS / 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid initial state.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: msg points at a live iovec over `buf` and a control buffer of the size given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // The kernel installed this fd for us; we own it from here.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n as usize)
}

/// Sends once; `fds` ride on this call. Returns the number of bytes written.
pub fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut cmsg = [0u64; CMSG_SPACE_FDS / 8];
    // SAFETY: msghdr is plain data; zeroed is a valid initial state.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        if fds.len() > MAX_MSG_FDS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds for one message"));
        }
        let len = std::mem::size_of_val(fds);
        msg.msg_control = cmsg.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as usize;
        // SAFETY: the control buffer is large enough for one SCM_RIGHTS header with `fds`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
        }
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn wait_fd(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// Writes all of `data` (fds with the first byte), waiting for room on a non-blocking socket for at most
/// `timeout_ms` at a time.
pub fn write_all_with_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd], timeout_ms: i32) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut off = 0;
    let mut first = true;
    while off < data.len() {
        match send_with_fds(fd, data.get(off..).unwrap_or_default(), if first { fds } else { &[] }) {
            Ok(n) => {
                off += n;
                first = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_fd(fd, libc::POLLOUT, timeout_ms)? {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "peer does not read"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reassembles messages from a byte stream. Fds are attached to the message whose bytes arrived with them.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    fds: VecDeque<(u64, OwnedFd)>,
    discard: usize,
    oversized: Option<Header>,
    /// What one read lands in, allocated (and zeroed) once rather than on every read.
    scratch: Vec<u8>,
    /// A handled message's payload buffer (`recycle`), reused for the next message's payload.
    spare: Vec<u8>,
    /// The last read took less than it asked for and no fds: the socket held nothing more then.
    drained: bool,
}

/// The most one read takes from the socket.
const READ_CHUNK: usize = 64 * 1024;
/// The largest payload buffer kept for reuse (`Reader::recycle`).
const SPARE_PAYLOAD_MAX: usize = 4096;

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Reads what the socket has. `Ok(false)` when it would block, `Err(Closed)` at EOF.
    pub fn fill(&mut self, sock: &impl AsRawFd) -> Result<bool, FrameError> {
        if self.scratch.len() != READ_CHUNK {
            self.scratch = vec![0u8; READ_CHUNK];
        }
        self.drained = false;
        let tmp = &mut self.scratch;
        let mut got = Vec::new();
        match recv_with_fds(sock.as_raw_fd(), tmp, &mut got) {
            Ok(0) => Err(FrameError::Closed),
            Ok(n) => {
                // A stream read stops short of the buffer only when the socket has no more bytes, or
                // after a segment that carried fds (which ends a read early).
                self.drained = n < READ_CHUNK && got.is_empty();
                // The kernel ends a read after the segment that carried fds, and fds ride on the first
                // segment of a sendmsg: so they belong to the message holding the last byte of this read.
                let at = self.base + (self.buf.len() + n - 1) as u64;
                for f in got {
                    if self.fds.len() < MAX_MSG_FDS * 4 {
                        self.fds.push_back((at, f));
                    }
                }
                self.buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the last read emptied the socket: it took less than it asked for, and no fds ended it
    /// early. Bytes or an EOF that arrived after it are still to be read.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Blocks (on a blocking socket) until one frame is complete.
    pub fn read_frame_blocking(&mut self, sock: &impl AsRawFd) -> Result<Frame, FrameError> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
            if !self.fill(sock)? && !wait_fd(sock.as_raw_fd(), libc::POLLIN, -1)? {
                continue;
            }
        }
    }

    /// Appends bytes received by other means (a test, a fuzzer, a transport with its own reads).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether part of a message (or of an oversized message being drained) has arrived but not all of it.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty() || self.discard > 0
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n as u64;
    }

    /// Takes a handled message's payload back, to carry the next message's: a steady stream of messages
    /// then allocates nothing. A buffer grown past a page by a large message is freed instead.
    pub fn recycle(&mut self, mut payload: Vec<u8>) {
        if payload.capacity() <= SPARE_PAYLOAD_MAX && payload.capacity() > self.spare.capacity() {
            payload.clear();
            self.spare = payload;
        }
    }

    /// The next complete frame in the buffer, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.discard > 0 {
                let n = self.discard.min(self.buf.len());
                self.consume(n);
                self.discard -= n;
                let limit = self.base;
                while self.fds.front().is_some_and(|(o, _)| *o < limit) {
                    self.fds.pop_front();
                }
                if self.discard > 0 {
                    return Ok(None);
                }
                if let Some(h) = self.oversized.take() {
                    return Ok(Some(Frame::Oversized(h)));
                }
            }
            let Some(head) = self.buf.get(..HEADER_SIZE) else { return Ok(None) };
            let header = Header::parse(head).map_err(|_| FrameError::Undersized(0))?;
            let size = header.size as usize;
            if size < HEADER_SIZE {
                return Err(FrameError::Undersized(header.size));
            }
            if size > MAX_DISCARD {
                return Err(FrameError::TooLarge(header.size));
            }
            if size > MAX_MESSAGE_SIZE {
                self.oversized = Some(header);
                self.discard = size;
                continue;
            }
            if self.buf.len() < size {
                return Ok(None);
            }
            let mut payload = std::mem::take(&mut self.spare);
            payload.clear();
            payload.extend_from_slice(self.buf.get(HEADER_SIZE..size).unwrap_or_default());
            let end = self.base + size as u64;
            let mut fds = Vec::new();
            while self.fds.front().is_some_and(|(o, _)| *o < end) {
                if let Some((_, fd)) = self.fds.pop_front() {
                    fds.push(fd);
                }
            }
            self.consume(size);
            return Ok(Some(Frame::Message(Message { header, payload, fds })));
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::*;
    use std::os::unix::net::UnixStream;

    fn msg(id: u16, cmd: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Header { msg_id: id, command: cmd, size: (HEADER_SIZE + payload.len()) as u32, flags: 0, error: 0 }.emit(&mut v);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn fds_travel_with_their_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send_with_fds(a.as_raw_fd(), &msg(1, 4, &[0; 16]), &[]).unwrap();
        send_with_fds(a.as_raw_fd(), &msg(2, 2, &[0; 32]), &[f.as_raw_fd(), f.as_raw_fd()]).unwrap();
        let mut r = Reader::new();
        let Frame::Message(m1) = r.read_frame_blocking(&b).unwrap() else { panic!() };
        assert_eq!(m1.header.msg_id, 1);
        assert!(m1.fds.is_empty());
        let Frame::Message(m2) = r.read_frame_blocking(&b).unwrap() else { panic!() };
        assert_eq!(m2.header.msg_id, 2);
        assert_eq!(m2.fds.len(), 2);
        assert_eq!(m2.payload.len(), 32);
    }

    #[test]
    fn truncated_message_waits_then_eof_closes() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let m = msg(3, 9, &[1; 16]);
        std::io::Write::write_all(&mut a, &m[..20]).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut r = Reader::new();
        assert!(r.fill(&b).unwrap());
        assert!(r.next_frame().unwrap().is_none());
        drop(a);
        assert!(matches!(r.fill(&b), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_is_drained_and_stream_stays_in_sync() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let big = MAX_MESSAGE_SIZE + 100;
        let writer = std::thread::spawn(move || {
            let mut v = Vec::new();
            Header { msg_id: 5, command: 10, size: big as u32, flags: 0, error: 0 }.emit(&mut v);
            v.resize(big, 0xab);
            std::io::Write::write_all(&mut a, &v).unwrap();
            std::io::Write::write_all(&mut a, &msg(6, 4, &[0; 16])).unwrap();
            a
        });
        let mut r = Reader::new();
        match r.read_frame_blocking(&b).unwrap() {
            Frame::Oversized(h) => assert_eq!(h.msg_id, 5),
            f => panic!("{f:?}"),
        }
        let Frame::Message(m) = r.read_frame_blocking(&b).unwrap() else { panic!() };
        assert_eq!(m.header.msg_id, 6);
        drop(writer.join().unwrap());
    }

    #[test]
    fn undersized_size_is_fatal() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut v = Vec::new();
        Header { msg_id: 1, command: 1, size: 8, flags: 0, error: 0 }.emit(&mut v);
        std::io::Write::write_all(&mut a, &v).unwrap();
        let mut r = Reader::new();
        assert!(matches!(r.read_frame_blocking(&b), Err(FrameError::Undersized(8))));
    }
}
