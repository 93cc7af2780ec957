//! The server side: one connection's message handling, dispatching to a [`Device`].
//! The caller owns the event loop: it calls [`Connection::on_event`] when the socket is readable or
//! writable, and [`Connection::check_deadline`] when [`Connection::deadline`] passes.

use crate::message::*;
use crate::socket::{send_with_fds, Frame, FrameError, Message, Reader};
use log::{debug, warn};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A positive errno value for error replies.
pub type Errno = i32;

/// What a vfio-user device offers. Methods get validated, typed requests; errors are errno values.
pub trait Device {
    /// `(flags, num_regions, num_irqs)` for DEVICE_GET_INFO.
    fn device_info(&self) -> (u32, u32, u32);
    /// `(flags, size)` of a region, `None` for an index the device does not have.
    fn region_info(&self, index: u32) -> Option<(u32, u64)>;
    /// `(flags, count)` of an IRQ index, `None` for an index the device does not have.
    fn irq_info(&self, index: u32) -> Option<(u32, u32)>;
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno>;
    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), Errno>;
    fn dma_map(&mut self, map: &DmaMap, fd: Option<OwnedFd>) -> Result<(), Errno>;
    fn dma_unmap(&mut self, unmap: &DmaUnmap) -> Result<(), Errno>;
    fn set_irqs(&mut self, set: &IrqSet, fds: Vec<OwnedFd>) -> Result<(), Errno>;
    fn reset(&mut self) -> Result<(), Errno>;
    /// The client went away: drop DMA maps and interrupt fds.
    fn disconnected(&mut self);
}

/// Counters for the connection, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct ConnStats {
    pub messages: u64,
    pub error_replies: u64,
    pub posted_write_errors: u64,
    pub unknown_commands: u64,
}

/// Capabilities we answer VERSION with. Kept short: QEMU receives the reply into its request's buffer.
pub const SERVER_CAPABILITIES: &str = r#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"max_dma_maps":1024}}"#;

/// One client connection.
///
/// The connection never blocks the caller's loop: replies go to an output buffer that is flushed as the
/// socket takes them. While that buffer is over [`OUTPUT_HIGH_WATER`] no further request is read (the client
/// is back-pressured), and a client that neither drains its replies nor completes a message it started
/// within [`STALL_LIMIT`] is disconnected (see [`Connection::check_deadline`]).
pub struct Connection {
    sock: UnixStream,
    reader: Reader,
    negotiated: bool,
    out: Vec<u8>,
    /// A reply's payload is built here, kept from one request to the next.
    reply_buf: Vec<u8>,
    /// Since when output has been waiting without the socket taking any of it.
    out_stuck_since: Option<Instant>,
    /// Since when part of a message has been waiting for the rest.
    partial_since: Option<Instant>,
    stall_limit: Duration,
    pub stats: ConnStats,
}

/// The largest reply buffer kept from one request to the next.
const REPLY_BUF_MAX: usize = 4096;
/// Pending reply bytes above which requests are no longer read.
pub const OUTPUT_HIGH_WATER: usize = 2 << 20;
/// How long a client may leave replies unread, or a message half-sent, before it is disconnected.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

impl Connection {
    pub fn new(sock: UnixStream) -> std::io::Result<Connection> {
        sock.set_nonblocking(true)?;
        Ok(Connection {
            sock,
            reader: Reader::new(),
            negotiated: false,
            out: Vec::new(),
            reply_buf: Vec::new(),
            out_stuck_since: None,
            partial_since: None,
            stall_limit: STALL_LIMIT,
            stats: ConnStats::default(),
        })
    }

    /// Sets how long a stalled client is tolerated (default [`STALL_LIMIT`]).
    pub fn set_stall_limit(&mut self, limit: Duration) {
        self.stall_limit = limit;
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Handles a readiness event of either kind: sends what the socket takes, then reads and handles
    /// requests while the output buffer has room. `Err` means the connection is over.
    ///
    /// For edge-triggered readiness (epoll's EPOLLET, as mio registers): reading stops at a read that
    /// left the socket empty, without the read that would only say so (EAGAIN), unless `closing` (the
    /// event reported the client's side shut: EPOLLRDHUP or EPOLLHUP), when reading goes on to the EOF.
    /// Bytes or a shutdown that come after the emptying read raise a new event; a shutdown that came before
    /// it was in this event's flags. With `closing` always set, every event reads until the socket would
    /// block.
    pub fn on_event(&mut self, dev: &mut dyn Device, closing: bool) -> Result<(), FrameError> {
        self.flush()?;
        let mut read = false;
        loop {
            while self.out.len() < OUTPUT_HIGH_WATER {
                let Some(frame) = self.reader.next_frame()? else { break };
                self.handle_frame(dev, frame)?;
            }
            self.flush()?;
            if self.out.len() >= OUTPUT_HIGH_WATER || (read && !closing && self.reader.drained()) {
                break;
            }
            read = true;
            if !self.reader.fill(&self.sock)? {
                break;
            }
        }
        // An unfinished message only counts against the client while we are reading: when its unread
        // replies hold us back, that is the output stall's limit to judge.
        let reading = self.out.len() < OUTPUT_HIGH_WATER;
        self.partial_since = match (self.reader.is_partial() && reading, self.partial_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
        };
        Ok(())
    }

    /// When the caller must call [`Connection::check_deadline`] next, if anything is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        [self.out_stuck_since, self.partial_since].into_iter().flatten().min().map(|t| t + self.stall_limit)
    }

    /// Ends the connection (`Err`) when the client has stalled past [`STALL_LIMIT`].
    pub fn check_deadline(&mut self, now: Instant) -> Result<(), FrameError> {
        self.flush()?;
        if self.out_stuck_since.is_some_and(|t| now.duration_since(t) >= self.stall_limit) {
            return Err(FrameError::Stalled("client leaves its replies unread"));
        }
        if self.partial_since.is_some_and(|t| now.duration_since(t) >= self.stall_limit) {
            return Err(FrameError::Stalled("client started a message and did not finish it"));
        }
        Ok(())
    }

    /// Sends as much pending output as the socket takes now.
    fn flush(&mut self) -> Result<(), FrameError> {
        let mut sent = 0;
        while sent < self.out.len() {
            match send_with_fds(self.sock.as_raw_fd(), self.out.get(sent..).unwrap_or_default(), &[]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.drain(..sent);
        if self.out.is_empty() || sent > 0 {
            self.out_stuck_since = None;
        }
        if !self.out.is_empty() && self.out_stuck_since.is_none() {
            self.out_stuck_since = Some(Instant::now());
        }
        Ok(())
    }

    fn handle_frame(&mut self, dev: &mut dyn Device, frame: Frame) -> Result<(), FrameError> {
        match frame {
            Frame::Oversized(h) => {
                warn!("vfio-user: message {} (command {}) of {} bytes is too large", h.msg_id, h.command, h.size);
                if !h.no_reply() {
                    self.reply_error(&h, libc::E2BIG);
                }
                Ok(())
            }
            Frame::Message(m) => {
                self.handle_message(dev, m);
                Ok(())
            }
        }
    }

    fn reply(&mut self, req: &Header, payload: &[u8]) {
        Header { msg_id: req.msg_id, command: req.command, size: (HEADER_SIZE + payload.len()) as u32, flags: FLAG_REPLY, error: 0 }
            .emit(&mut self.out);
        self.out.extend_from_slice(payload);
    }

    fn reply_error(&mut self, req: &Header, errno: Errno) {
        self.stats.error_replies += 1;
        let errno = if errno == 0 { libc::EINVAL } else { errno };
        Header { msg_id: req.msg_id, command: req.command, size: HEADER_SIZE as u32, flags: FLAG_REPLY | FLAG_ERROR, error: errno as u32 }
            .emit(&mut self.out);
    }

    fn handle_message(&mut self, dev: &mut dyn Device, m: Message) {
        self.stats.messages += 1;
        let h = m.header;
        if h.is_reply() {
            warn!("vfio-user: unexpected reply message {} from client, ignored", h.msg_id);
            return;
        }
        // The reply is built in a buffer kept across requests, and the payload goes back to the reader:
        // register accesses, the hottest messages, allocate nothing.
        let mut reply = std::mem::take(&mut self.reply_buf);
        reply.clear();
        let result = self.dispatch(dev, &h, &m.payload, m.fds, &mut reply);
        self.reader.recycle(m.payload);
        match result {
            Ok(()) => {
                if !h.no_reply() {
                    self.reply(&h, &reply);
                }
            }
            Err(errno) => {
                if h.no_reply() {
                    self.stats.posted_write_errors += 1;
                    debug!("vfio-user: posted command {} failed with errno {errno}", h.command);
                } else {
                    self.reply_error(&h, errno);
                }
            }
        }
        // Kept for the next reply, unless a large read grew it.
        if reply.capacity() <= REPLY_BUF_MAX {
            self.reply_buf = reply;
        }
    }

    /// Handles one request; on success `out` holds the reply payload.
    fn dispatch(&mut self, dev: &mut dyn Device, h: &Header, p: &[u8], mut fds: Vec<OwnedFd>, out: &mut Vec<u8>) -> Result<(), Errno> {
        let bad = |e: ParseError| {
            warn!("vfio-user: command {} message {}: {e}", h.command, h.msg_id);
            libc::EINVAL
        };
        let Some(cmd) = Command::from_u16(h.command) else {
            self.stats.unknown_commands += 1;
            warn!("vfio-user: unknown command {}", h.command);
            return Err(libc::ENOSYS);
        };
        if !self.negotiated && cmd != Command::Version {
            warn!("vfio-user: command {cmd:?} before VERSION");
            return Err(libc::EINVAL);
        }
        match cmd {
            Command::Version => {
                if self.negotiated {
                    warn!("vfio-user: VERSION again after negotiation");
                    return Err(libc::EINVAL);
                }
                let v = Version::parse(p).map_err(bad)?;
                check_capabilities(&v.capabilities).map_err(bad)?;
                if v.major != 0 {
                    warn!("vfio-user: client protocol {}.{} not supported", v.major, v.minor);
                    return Err(libc::ENOTSUP);
                }
                debug!("vfio-user: client version {}.{} caps {}", v.major, v.minor, v.capabilities);
                self.negotiated = true;
                Version { major: 0, minor: 0, capabilities: SERVER_CAPABILITIES.into() }.emit(out);
            }
            Command::DmaMap => {
                let map = DmaMap::parse(p).map_err(bad)?;
                if fds.len() > 1 {
                    return Err(libc::EINVAL);
                }
                dev.dma_map(&map, fds.pop())?;
            }
            Command::DmaUnmap => {
                let un = DmaUnmap::parse(p).map_err(bad)?;
                if un.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
                    return Err(libc::ENOTSUP);
                }
                dev.dma_unmap(&un)?;
                un.emit(out);
            }
            Command::DeviceGetInfo => {
                let req = DeviceInfo::parse(p).map_err(bad)?;
                let (flags, num_regions, num_irqs) = dev.device_info();
                DeviceInfo { argsz: req.argsz.max(DeviceInfo::LEN as u32), flags, num_regions, num_irqs }.emit(out);
                out.truncate(DeviceInfo::LEN);
            }
            Command::DeviceGetRegionInfo => {
                let req = RegionInfo::parse(p).map_err(bad)?;
                let (flags, size) = dev.region_info(req.index).ok_or(libc::EINVAL)?;
                RegionInfo { argsz: RegionInfo::LEN as u32, flags, index: req.index, cap_offset: 0, size, offset: 0 }.emit(out);
            }
            Command::DeviceGetIrqInfo => {
                let req = IrqInfo::parse(p).map_err(bad)?;
                let (flags, count) = dev.irq_info(req.index).ok_or(libc::EINVAL)?;
                IrqInfo { argsz: IrqInfo::LEN as u32, flags, index: req.index, count }.emit(out);
            }
            Command::DeviceSetIrqs => {
                let set = IrqSet::parse(p).map_err(bad)?;
                let eventfd = set.flags & VFIO_IRQ_SET_DATA_EVENTFD != 0;
                if !eventfd && !fds.is_empty() {
                    return Err(libc::EINVAL);
                }
                if eventfd && fds.len() > set.count as usize {
                    return Err(libc::EINVAL);
                }
                dev.set_irqs(&set, fds)?;
            }
            Command::RegionRead => {
                let a = RegionAccess::parse(p).map_err(bad)?;
                if p.len() != RegionAccess::LEN {
                    return Err(bad(ParseError::Range("region read carries data")));
                }
                a.emit(out);
                let at = out.len();
                out.resize(at + a.count as usize, 0);
                dev.region_read(a.region, a.offset, out.get_mut(at..).unwrap_or_default())?;
            }
            Command::RegionWrite => {
                let a = RegionAccess::parse(p).map_err(bad)?;
                if p.len() != RegionAccess::LEN + a.count as usize {
                    return Err(bad(ParseError::Range("region write data length differs from its count")));
                }
                let data = p.get(RegionAccess::LEN..).ok_or(libc::EINVAL)?;
                dev.region_write(a.region, a.offset, data)?;
                a.emit(out);
            }
            Command::RegionWriteMulti => {
                let writes = parse_write_multi(p).map_err(bad)?;
                for (a, d) in writes {
                    let data = d.get(..a.count as usize).ok_or(libc::EINVAL)?;
                    dev.region_write(a.region, a.offset, data)?;
                }
            }
            Command::DeviceReset => {
                dev.reset()?;
            }
            Command::DeviceGetRegionIoFds | Command::DmaRead | Command::DmaWrite | Command::DirtyPages => {
                return Err(libc::ENOTSUP);
            }
        }
        Ok(())
    }
}
