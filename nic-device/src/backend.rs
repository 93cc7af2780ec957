//! Wire backends: where transmitted frames go and received frames come from.
//! `tap:IFNAME`, `stream:PATH` (listen), `stream-connect:PATH` (QEMU `-netdev stream` framing: a 4-byte
//! big-endian length, then the frame), both also over TCP (`stream:tcp:HOST:PORT`), `dgram:udp:...` and
//! `dgram:mcast:...` (QEMU `-netdev dgram`: one frame per datagram), and `loopback`.
//! `tap:IFNAME,offload=on` exchanges frames with a virtio-net header instead (see `gso`).

use crate::pool::FramePool;
use log::{info, warn};
use nic_tap::VnetHdr;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Largest frame any backend accepts (jumbo, with VLAN tag).
pub const MAX_FRAME: usize = 16 * 1024 + 4;

pub trait Backend: Send {
    /// Descriptors to wait on for readability (may change; see `generation`).
    fn fds(&self) -> Vec<RawFd>;
    /// Bumped whenever `fds` changes.
    fn generation(&self) -> u64;
    /// One received frame, `None` when nothing is waiting.
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Offers a frame; `Ok(false)` when the backend cannot take it yet (the caller keeps it and retries).
    fn send(&mut self, frame: &[u8]) -> io::Result<bool>;
    /// Whether frames cross with a virtio-net header (GSO frames and partial checksums allowed).
    fn offloads(&self) -> bool {
        false
    }
    /// One received frame with its virtio-net header when `offloads`.
    fn recv_vnet(&mut self) -> io::Result<Option<(Vec<u8>, Option<VnetHdr>)>> {
        Ok(self.recv()?.map(|f| (f, None)))
    }
    /// Offers a frame with its virtio-net header; only a backend that `offloads` takes a header.
    fn send_vnet(&mut self, frame: &[u8], vnet: Option<&VnetHdr>) -> io::Result<bool> {
        match vnet {
            None => self.send(frame),
            Some(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "this backend carries wire frames only")),
        }
    }
    /// Offers a frame by value. A backend that keeps frames as they are until they leave (the loopback,
    /// the datagram wire) takes the buffer itself instead of a copy and leaves an empty spare in `frame`
    /// for the caller to reuse; the others copy, as `send_vnet`. `Ok(false)`: not taken, `frame` unchanged.
    fn send_owned(&mut self, frame: &mut Vec<u8>, vnet: Option<&VnetHdr>) -> io::Result<bool> {
        self.send_vnet(frame, vnet)
    }
    /// Gives back the buffer of a frame `recv` returned, once the card has taken its bytes, for a later
    /// `recv` to reuse: a steady flow allocates nothing per frame.
    fn recycle(&mut self, frame: Vec<u8>) {
        drop(frame);
    }
    /// Flushes buffered output; `Ok(true)` when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// Whether a peer is attached (carrier).
    fn carrier(&self) -> bool {
        true
    }
    /// Periodic work (accept, reconnect); returns when it next wants to run.
    fn service(&mut self) -> Option<Instant> {
        None
    }
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend '{0}': use tap:IFNAME[,offload=on], stream:PATH, stream-connect:PATH, stream:tcp:HOST:PORT, stream-connect:tcp:HOST:PORT, dgram:udp:LOCAL_HOST:PORT:REMOTE_HOST:PORT, dgram:mcast:GROUP:PORT or loopback")]
    Unknown(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

pub fn open(spec: &str) -> Result<Box<dyn Backend>, BackendError> {
    if spec == "loopback" {
        return Ok(Box::new(Loopback::default()));
    }
    if let Some(rest) = spec.strip_prefix("tap:") {
        let (name, offload) = match rest.split_once(',') {
            None => (rest, false),
            Some((name, "offload=on")) => (name, true),
            Some((name, "offload=off")) => (name, false),
            Some(_) => return Err(BackendError::Unknown(spec.into())),
        };
        return Ok(Box::new(Tap::open(name, offload).map_err(|e| BackendError::Io(format!("tap {name}"), e))?));
    }
    if let Some(p) = spec.strip_prefix("dgram:") {
        return Ok(Box::new(Dgram::open(p).map_err(|e| BackendError::Io(format!("dgram {p}"), e))?));
    }
    if let Some(p) = spec.strip_prefix("stream-connect:") {
        return Ok(Box::new(Stream::connect(StreamAddr::parse(p))));
    }
    if let Some(p) = spec.strip_prefix("stream:") {
        return Ok(Box::new(Stream::listen(StreamAddr::parse(p)).map_err(|e| BackendError::Io(format!("stream {p}"), e))?));
    }
    Err(BackendError::Unknown(spec.into()))
}

// ---- loopback ----

/// What is sent comes back, in order; a full queue back-pressures the sender.
pub struct Loopback {
    q: VecDeque<Vec<u8>>,
    pool: FramePool,
}

const LOOPBACK_DEPTH: usize = 512;

impl Default for Loopback {
    /// The pool keeps as many buffers as the queue holds: a full queue that drains hands them all back,
    /// and the sends that fill it again take them, so a steady flow allocates nothing.
    fn default() -> Loopback {
        Loopback { q: VecDeque::with_capacity(LOOPBACK_DEPTH), pool: FramePool::new(LOOPBACK_DEPTH, MAX_FRAME + 64) }
    }
}

impl Backend for Loopback {
    fn fds(&self) -> Vec<RawFd> {
        vec![]
    }
    fn generation(&self) -> u64 {
        0
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.q.pop_front())
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.q.len() >= LOOPBACK_DEPTH {
            return Ok(false);
        }
        let f = self.pool.copy_of(frame);
        self.q.push_back(f);
        Ok(true)
    }
    fn send_owned(&mut self, frame: &mut Vec<u8>, vnet: Option<&VnetHdr>) -> io::Result<bool> {
        if vnet.is_some() {
            return self.send_vnet(frame, vnet);
        }
        if self.q.len() >= LOOPBACK_DEPTH {
            return Ok(false);
        }
        let spare = self.pool.take();
        self.q.push_back(std::mem::replace(frame, spare));
        Ok(true)
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.pool.put(frame);
    }
    fn describe(&self) -> String {
        "loopback".into()
    }
}

// ---- TAP ----

/// GSO-sized buffers a TAP in offload mode keeps beside its wire-sized ones (so that those are not each
/// grown to 64 KiB): the data path holds one GSO frame at a time while it cuts it, and a round reads a few.
const TAP_BIG_BUFFERS: usize = 8;

/// Room a TAP frame is read into: the longest frame the card takes, and a VLAN tag's slack.
const TAP_FRAME_ROOM: usize = MAX_FRAME + 64;

pub struct Tap {
    tap: nic_tap::Tap,
    /// In offload mode, where the part of a GSO frame beyond a frame buffer's room is read.
    overflow: Vec<u8>,
    offload: bool,
    pool: FramePool,
}

impl Tap {
    /// Attaches to TAP `name`; with `offload`, frames carry a virtio-net header and the kernel may hand
    /// over TCP GSO frames (IPv4 and IPv6, ECN) and partial checksums.
    pub fn open(name: &str, offload: bool) -> io::Result<Tap> {
        let tap = if offload {
            let t = nic_tap::Tap::open_vnet(name)?;
            use nic_tap::*;
            t.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)?;
            t
        } else {
            nic_tap::Tap::open(name)?
        };
        if let Err(e) = tap.set_up() {
            warn!("tap {name}: could not bring the interface up: {e}");
        }
        info!("tap {name} attached{}", if offload { " (offload mode: virtio-net header, GSO, partial checksums)" } else { "" });
        let overflow = if offload { vec![0; crate::gso::MAX_GSO_FRAME.saturating_sub(TAP_FRAME_ROOM)] } else { Vec::new() };
        let pool = FramePool::default().with_big(TAP_BIG_BUFFERS, crate::gso::MAX_GSO_FRAME);
        Ok(Tap { tap, overflow, offload, pool })
    }
}

impl Backend for Tap {
    fn fds(&self) -> Vec<RawFd> {
        vec![self.tap.as_raw_fd()]
    }
    fn generation(&self) -> u64 {
        0
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.recv_vnet()?.map(|(f, _)| f))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.send_vnet(frame, None)
    }
    fn offloads(&self) -> bool {
        self.offload
    }
    /// A frame is read straight into a pooled buffer, the one the card then DMAs from: in wire mode
    /// whole, in offload mode behind its header. A GSO frame longer than a frame buffer's room is read
    /// on into `overflow` and joined in a large buffer.
    fn recv_vnet(&mut self) -> io::Result<Option<(Vec<u8>, Option<VnetHdr>)>> {
        // Empty (the pool clears it), with a frame's room.
        let mut f = self.pool.take();
        f.reserve_exact(TAP_FRAME_ROOM);
        let mut h = [0u8; VnetHdr::LEN];
        let head: &mut [u8] = if self.offload { &mut h } else { &mut [] };
        let n = match self.tap.recv_split(head, &mut f, &mut self.overflow) {
            Ok(Some(n)) => n,
            other => {
                self.pool.put(f);
                return other.map(|_| None);
            }
        };
        if !self.offload {
            return Ok(Some((f, None)));
        }
        let Some(hdr) = VnetHdr::parse(&h).filter(|_| n >= VnetHdr::LEN) else {
            self.pool.put(f);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame shorter than its virtio-net header"));
        };
        let len = n - VnetHdr::LEN;
        if len > f.len() {
            let more = self.overflow.get(..len - f.len()).unwrap_or_default();
            let mut whole = self.pool.take_big(len).unwrap_or_else(|| Vec::with_capacity(len));
            whole.extend_from_slice(&f);
            whole.extend_from_slice(more);
            self.pool.put(f);
            f = whole;
        }
        Ok(Some((f, Some(hdr))))
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.pool.put(frame);
    }
    fn send_vnet(&mut self, frame: &[u8], vnet: Option<&VnetHdr>) -> io::Result<bool> {
        if !self.offload {
            return match vnet {
                None => self.tap.send(frame),
                Some(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "TAP opened without offload=on")),
            };
        }
        // A wire frame needs nothing of the host: an all-zero header.
        let h = vnet.copied().unwrap_or_default().to_bytes();
        self.tap.send_parts(&[&h, frame])
    }
    fn describe(&self) -> String {
        format!("tap:{}{}", self.tap.name(), if self.offload { ",offload=on" } else { "" })
    }
}

// ---- stream (QEMU -netdev stream framing) over a unix socket or TCP ----

/// Where a stream backend listens or connects: a unix socket path, or `tcp:HOST:PORT` (QEMU's
/// `-netdev stream,addr.type=inet`), so that the wire can cross machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl StreamAddr {
    pub fn parse(s: &str) -> StreamAddr {
        match s.strip_prefix("tcp:") {
            Some(hp) => StreamAddr::Tcp(hp.to_string()),
            None => StreamAddr::Unix(PathBuf::from(s)),
        }
    }
}

impl std::fmt::Display for StreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamAddr::Unix(p) => write!(f, "{}", p.display()),
            StreamAddr::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

enum StreamListener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl StreamListener {
    fn accept(&self) -> io::Result<StreamPeer> {
        Ok(match self {
            StreamListener::Unix(l) => StreamPeer::Unix(l.accept()?.0),
            StreamListener::Tcp(l) => StreamPeer::Tcp(l.accept()?.0),
        })
    }
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StreamListener::Unix(l) => l.as_raw_fd(),
            StreamListener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

enum StreamPeer {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl StreamPeer {
    fn connect(addr: &StreamAddr) -> io::Result<StreamPeer> {
        Ok(match addr {
            StreamAddr::Unix(p) => StreamPeer::Unix(UnixStream::connect(p)?),
            StreamAddr::Tcp(hp) => StreamPeer::Tcp(TcpStream::connect(hp.as_str())?),
        })
    }
    fn prepare(&self) -> io::Result<()> {
        match self {
            StreamPeer::Unix(s) => s.set_nonblocking(true),
            StreamPeer::Tcp(s) => {
                // Frames are whole messages: no Nagle delay between them.
                s.set_nodelay(true)?;
                s.set_nonblocking(true)
            }
        }
    }
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StreamPeer::Unix(s) => s.as_raw_fd(),
            StreamPeer::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for StreamPeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamPeer::Unix(s) => s.read(buf),
            StreamPeer::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for StreamPeer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamPeer::Unix(s) => s.write(buf),
            StreamPeer::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Stream {
    path: StreamAddr,
    listener: Option<StreamListener>,
    peer: Option<StreamPeer>,
    /// What was read from the peer: frames from `rpos` to `rend` (the last one maybe incomplete). Frames are
    /// taken from the front without moving the rest; what is left of an incomplete one moves to the start
    /// once, before the next read.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Framed output from `wpos` on, waiting for the peer to take it.
    wbuf: Vec<u8>,
    wpos: usize,
    gen: u64,
    next_try: Instant,
    pool: FramePool,
}

/// Output buffered per peer before the sender is back-pressured.
const STREAM_WBUF: usize = 256 * 1024;
/// The read buffer: a read of up to 64 KiB behind the incomplete frame the last one left.
const STREAM_RBUF: usize = 65536 + 4 + MAX_FRAME;

impl Stream {
    pub fn listen(path: StreamAddr) -> io::Result<Stream> {
        let l = match &path {
            StreamAddr::Unix(p) => {
                if p.exists() && UnixStream::connect(p).is_err() {
                    let _ = std::fs::remove_file(p);
                }
                let l = UnixListener::bind(p)?;
                l.set_nonblocking(true)?;
                StreamListener::Unix(l)
            }
            StreamAddr::Tcp(hp) => {
                let l = TcpListener::bind(hp.as_str())?;
                l.set_nonblocking(true)?;
                StreamListener::Tcp(l)
            }
        };
        info!("stream backend listening on {path}");
        Ok(Stream::new(path, Some(l)))
    }

    fn new(path: StreamAddr, listener: Option<StreamListener>) -> Stream {
        Stream {
            path,
            listener,
            peer: None,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            gen: 0,
            next_try: Instant::now(),
            pool: FramePool::default(),
        }
    }

    pub fn connect(path: StreamAddr) -> Stream {
        let mut s = Stream::new(path, None);
        s.service();
        s
    }

    fn set_peer(&mut self, p: Option<StreamPeer>) {
        if let Some(p) = &p {
            let _ = p.prepare();
            info!("stream backend {}: peer attached", self.path);
        } else if self.peer.is_some() {
            info!("stream backend {}: peer gone", self.path);
        }
        self.peer = p;
        (self.rpos, self.rend) = (0, 0);
        self.wbuf.clear();
        self.wpos = 0;
        self.gen += 1;
    }

    fn drop_peer(&mut self) {
        self.set_peer(None);
        self.next_try = Instant::now() + Duration::from_millis(200);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let (Some(StreamListener::Unix(_)), StreamAddr::Unix(p)) = (&self.listener, &self.path) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Backend for Stream {
    fn fds(&self) -> Vec<RawFd> {
        let mut v = Vec::new();
        if let Some(l) = &self.listener {
            v.push(l.as_raw_fd());
        }
        if let Some(p) = &self.peer {
            v.push(p.as_raw_fd());
        }
        v
    }
    fn generation(&self) -> u64 {
        self.gen
    }
    fn carrier(&self) -> bool {
        self.peer.is_some()
    }
    fn service(&mut self) -> Option<Instant> {
        if let Some(l) = &self.listener {
            if let Ok(s) = l.accept() {
                if self.peer.is_some() {
                    warn!("stream backend {}: second peer refused", self.path);
                } else {
                    self.set_peer(Some(s));
                }
            }
            return None;
        }
        if self.peer.is_none() {
            if Instant::now() < self.next_try {
                return Some(self.next_try);
            }
            match StreamPeer::connect(&self.path) {
                Ok(s) => self.set_peer(Some(s)),
                Err(_) => {
                    self.next_try = Instant::now() + Duration::from_millis(200);
                    return Some(self.next_try);
                }
            }
        }
        None
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.pool.put(frame);
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let buffered = self.rbuf.get(self.rpos..self.rend).unwrap_or_default();
            if let Some(len) = crate::bytes::be32(buffered, 0) {
                let len = len as usize;
                if len > MAX_FRAME {
                    warn!("stream backend: frame length {len} from peer is too large; dropping the peer");
                    self.drop_peer();
                    return Ok(None);
                }
                if let Some(f) = buffered.get(4..4 + len) {
                    let f = self.pool.copy_of(f);
                    self.rpos += 4 + len;
                    if self.rpos == self.rend {
                        (self.rpos, self.rend) = (0, 0);
                    }
                    return Ok(Some(f));
                }
            }
            let Some(p) = self.peer.as_mut() else { return Ok(None) };
            // The incomplete frame (less than a frame) to the start, once per read: at least 64 KiB of
            // room behind it.
            if self.rbuf.is_empty() {
                self.rbuf = vec![0; STREAM_RBUF];
            }
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                (self.rpos, self.rend) = (0, self.rend - self.rpos);
            }
            let room = self.rbuf.get_mut(self.rend..).unwrap_or_default();
            match p.read(room) {
                Ok(0) => {
                    self.drop_peer();
                    return Ok(None);
                }
                Ok(n) => self.rend += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_peer();
                    return Ok(None);
                }
            }
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.peer.is_none() {
            return Ok(true); // no carrier: the frame goes nowhere, as on an unplugged cable
        }
        if self.wbuf.len() - self.wpos > STREAM_WBUF {
            self.flush()?;
            if self.wbuf.len() - self.wpos > STREAM_WBUF {
                return Ok(false);
            }
        }
        // What the peer took goes from the front once it is half the buffer, not after every write.
        if self.wpos > 0 && self.wpos >= self.wbuf.len() / 2 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        self.wbuf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.wbuf.extend_from_slice(frame);
        Ok(true)
    }
    fn flush(&mut self) -> io::Result<bool> {
        while self.wpos < self.wbuf.len() {
            let Some(p) = self.peer.as_mut() else {
                self.wbuf.clear();
                self.wpos = 0;
                return Ok(true);
            };
            match p.write(self.wbuf.get(self.wpos..).unwrap_or_default()) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_peer();
                    return Ok(true);
                }
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }
    fn describe(&self) -> String {
        format!("stream:{}", self.path)
    }
}

// ---- dgram (QEMU's -netdev dgram: one frame per UDP datagram) ----

/// Splits `A:B` where A and B are each `HOST:PORT` (an IPv6 host in brackets) and both resolve.
fn split_addr_pair(s: &str) -> Option<(SocketAddr, SocketAddr)> {
    s.match_indices(':').find_map(|(i, _)| Some((resolve(s.get(..i)?)?, resolve(s.get(i + 1..)?)?)))
}

fn resolve(s: &str) -> Option<SocketAddr> {
    if s.matches(':').count() != 1 && !s.starts_with('[') {
        return None;
    }
    s.to_socket_addrs().ok()?.next()
}

/// UDP datagrams carrying one Ethernet frame each, without framing, as QEMU's `-netdev dgram` sends them:
/// `udp:LOCAL:REMOTE` (unicast: bound to LOCAL, sending to REMOTE) or `mcast:GROUP:PORT` (every member of
/// the group hears every frame; our own come back through multicast loopback and are dropped).
///
/// Datagrams are read and written up to `DGRAM_BATCH` per system call (recvmmsg, sendmmsg): frames read
/// ahead wait here in order, and frames sent wait for the data path's `flush` at the end of its round.
pub struct Dgram {
    sock: UdpSocket,
    /// Multicast: frames leave from a socket of their own, whose port tells our frames apart when
    /// multicast loopback brings them back.
    send_sock: Option<UdpSocket>,
    /// That socket's port.
    own_port: Option<u16>,
    remote: SocketAddr,
    mcast: bool,
    /// recvmmsg's buffers, one per datagram of a batch: empty, with a frame's room. A datagram is read
    /// straight into one, which is then handed on whole and replaced from the pool.
    rbufs: Vec<Vec<u8>>,
    /// Frames read ahead, in order.
    rx: VecDeque<Vec<u8>>,
    /// Frames waiting for the next sendmmsg.
    tx: VecDeque<Vec<u8>>,
    spec: String,
    pool: FramePool,
    /// System calls that read or wrote datagrams, and the datagrams they moved.
    pub calls: u64,
    pub datagrams: u64,
}

/// Datagrams per recvmmsg or sendmmsg.
pub const DGRAM_BATCH: usize = 32;
/// Room a datagram is read into: more than the longest frame, so that a longer datagram shows as one.
const DGRAM_ROOM: usize = MAX_FRAME + 64;

impl Dgram {
    pub fn open(spec: &str) -> io::Result<Dgram> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "expected udp:LOCAL_HOST:PORT:REMOTE_HOST:PORT or mcast:GROUP:PORT");
        let (sock, remote, mcast) = if let Some(p) = spec.strip_prefix("udp:") {
            let (local, remote) = split_addr_pair(p).ok_or_else(bad)?;
            (UdpSocket::bind(local)?, remote, false)
        } else if let Some(p) = spec.strip_prefix("mcast:") {
            let group = resolve(p).ok_or_else(bad)?;
            let SocketAddr::V4(g) = group else { return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 multicast groups only")) };
            if !g.ip().is_multicast() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a multicast address", g.ip())));
            }
            let sock = mcast_socket(g)?;
            (sock, group, true)
        } else {
            return Err(bad());
        };
        sock.set_nonblocking(true)?;
        let send_sock = if mcast {
            let s = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
            s.set_multicast_loop_v4(true)?;
            s.set_multicast_ttl_v4(1)?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        info!("dgram: {} -> {remote}{}", sock.local_addr()?, if mcast { " (multicast)" } else { "" });
        let own_port = send_sock.as_ref().map(|s| s.local_addr()).transpose()?.map(|a| a.port());
        Ok(Dgram {
            sock,
            send_sock,
            own_port,
            remote,
            mcast,
            rbufs: (0..DGRAM_BATCH).map(|_| Vec::with_capacity(DGRAM_ROOM)).collect(),
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            spec: spec.to_string(),
            pool: FramePool::default(),
            calls: 0,
            datagrams: 0,
        })
    }
}

/// A socket bound to the group's port (shared with the other members on this host), joined to the group,
/// with multicast loopback so that members on one host hear each other.
fn mcast_socket(g: std::net::SocketAddrV4) -> io::Result<UdpSocket> {
    // SO_REUSEADDR before bind, so several members share the port; std has no knob for it, so the socket
    // is made by hand.
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = UdpSocket::from(owned);
    let bind_to = std::net::SocketAddrV4::new(*g.ip(), g.port());
    sock2_bind(&sock, bind_to)?;
    sock.join_multicast_v4(g.ip(), &std::net::Ipv4Addr::UNSPECIFIED)?;
    sock.set_multicast_loop_v4(true)?;
    Ok(sock)
}

/// The port of a sender's address as recvmmsg filled it in.
fn port_of(a: &libc::sockaddr_storage) -> Option<u16> {
    let p = (a as *const libc::sockaddr_storage).cast::<u8>();
    match libc::c_int::from(a.ss_family) {
        // SAFETY: sockaddr_storage is large and aligned enough for either family's address, and the family
        // says which one the kernel wrote.
        libc::AF_INET => Some(u16::from_be(unsafe { (*p.cast::<libc::sockaddr_in>()).sin_port })),
        // SAFETY: as above.
        libc::AF_INET6 => Some(u16::from_be(unsafe { (*p.cast::<libc::sockaddr_in6>()).sin6_port })),
        _ => None,
    }
}

/// `a` as a socket address for sendmmsg, with its length.
fn sockaddr_of(a: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let p = (&mut st as *mut libc::sockaddr_storage).cast::<u8>();
    match a {
        SocketAddr::V4(v) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            unsafe { p.cast::<libc::sockaddr_in>().write(sin) };
            (st, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v.port().to_be(),
                sin6_flowinfo: v.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v.ip().octets() },
                sin6_scope_id: v.scope_id(),
            };
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            unsafe { p.cast::<libc::sockaddr_in6>().write(sin6) };
            (st, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// bind(2) on a socket std made from a raw fd.
fn sock2_bind(sock: &UdpSocket, a: std::net::SocketAddrV4) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    };
    // SAFETY: bind with a valid sockaddr_in and its size.
    let r =
        unsafe { libc::bind(sock.as_raw_fd(), (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Backend for Dgram {
    fn fds(&self) -> Vec<RawFd> {
        vec![self.sock.as_raw_fd()]
    }
    fn generation(&self) -> u64 {
        0
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.pool.put(frame);
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.rx.is_empty() {
            self.read_batch()?;
        }
        Ok(self.rx.pop_front())
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.tx.len() >= DGRAM_BATCH && !self.flush()? {
            return Ok(false);
        }
        let f = self.pool.copy_of(frame);
        self.tx.push_back(f);
        Ok(true)
    }
    /// The frame's own buffer waits for the next sendmmsg, no copy; a spare from the pool takes its place.
    fn send_owned(&mut self, frame: &mut Vec<u8>, vnet: Option<&VnetHdr>) -> io::Result<bool> {
        if vnet.is_some() {
            return self.send_vnet(frame, vnet);
        }
        if self.tx.len() >= DGRAM_BATCH && !self.flush()? {
            return Ok(false);
        }
        let spare = self.pool.take();
        self.tx.push_back(std::mem::replace(frame, spare));
        Ok(true)
    }
    fn flush(&mut self) -> io::Result<bool> {
        while !self.tx.is_empty() {
            match self.write_batch() {
                Ok(n) => {
                    for f in self.tx.drain(..n) {
                        self.pool.put(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // Nobody listening at the remote end: the frame is lost, as on a wire without a peer.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if let Some(f) = self.tx.pop_front() {
                        self.pool.put(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The frames are dropped rather than retried forever.
                    self.tx.clear();
                    return Err(e);
                }
            }
        }
        Ok(true)
    }
    fn describe(&self) -> String {
        format!("dgram:{}", self.spec)
    }
}

impl Dgram {
    /// Reads up to `DGRAM_BATCH` datagrams with one recvmmsg into `rx`, leaving out our own frames back
    /// through multicast loopback and datagrams longer than a frame.
    fn read_batch(&mut self) -> io::Result<()> {
        // SAFETY: all-zero is a valid value for these C structures (null pointers, zero lengths).
        let mut names: [libc::sockaddr_storage; DGRAM_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iov: [libc::iovec; DGRAM_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; DGRAM_BATCH] = unsafe { std::mem::zeroed() };
        for (((b, v), name), h) in self.rbufs.iter_mut().zip(iov.iter_mut()).zip(names.iter_mut()).zip(hdrs.iter_mut()) {
            // Into the buffer's spare room (all of it: the buffers are kept empty).
            b.clear();
            let room = b.spare_capacity_mut();
            *v = libc::iovec { iov_base: room.as_mut_ptr().cast(), iov_len: room.len() };
            let h = &mut h.msg_hdr;
            h.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = v;
            h.msg_iovlen = 1;
        }
        let n = loop {
            // SAFETY: `hdrs` holds DGRAM_BATCH headers, each pointing at a live buffer of its stated length
            // and at a sockaddr_storage for the sender; all of them outlive the call.
            let r = unsafe {
                libc::recvmmsg(self.sock.as_raw_fd(), hdrs.as_mut_ptr(), DGRAM_BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                // A previous send to a peer that is not listening (yet): ICMP port unreachable. The wire
                // stays up, as QEMU's does.
                io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        };
        self.calls += 1;
        self.datagrams += n as u64;
        for ((h, name), b) in hdrs.iter().zip(names.iter()).zip(self.rbufs.iter_mut()).take(n) {
            let len = h.msg_len as usize;
            if self.mcast && self.own_port.is_some() && port_of(name) == self.own_port {
                continue;
            }
            if len > MAX_FRAME || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                warn!("dgram: {len}-byte datagram dropped (frames are at most {MAX_FRAME} bytes)");
                continue;
            }
            let len = len.min(b.capacity());
            // SAFETY: recvmmsg wrote this datagram's `msg_len` bytes (without MSG_TRUNC in the call's flags,
            // what it copied, at most the iovec's length: the buffer's capacity) at the start of the buffer,
            // which was empty.
            unsafe { b.set_len(len) };
            let mut spare = self.pool.take();
            spare.reserve_exact(DGRAM_ROOM);
            self.rx.push_back(std::mem::replace(b, spare));
        }
        Ok(())
    }

    /// Sends the frames at the head of `tx` with one sendmmsg to the remote end; how many left.
    fn write_batch(&mut self) -> io::Result<usize> {
        let (name, namelen) = sockaddr_of(self.remote);
        let count = self.tx.len().min(DGRAM_BATCH);
        // SAFETY: all-zero is a valid value for these C structures (null pointers, zero lengths).
        let mut iov: [libc::iovec; DGRAM_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; DGRAM_BATCH] = unsafe { std::mem::zeroed() };
        for ((f, v), h) in self.tx.iter().take(count).zip(iov.iter_mut()).zip(hdrs.iter_mut()) {
            // sendmmsg only reads through iov_base.
            *v = libc::iovec { iov_base: f.as_ptr().cast_mut().cast(), iov_len: f.len() };
            let h = &mut h.msg_hdr;
            h.msg_name = (&name as *const libc::sockaddr_storage).cast_mut().cast();
            h.msg_namelen = namelen;
            h.msg_iov = v;
            h.msg_iovlen = 1;
        }
        let fd = self.send_sock.as_ref().unwrap_or(&self.sock).as_raw_fd();
        // SAFETY: `hdrs[..count]` point at `count` live frames and at the remote's address, all of which
        // outlive the call; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), count as u32, libc::MSG_DONTWAIT) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.calls += 1;
        self.datagrams += r as u64;
        Ok(r as usize)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn recycled_buffers_carry_the_next_frames() {
        let mut l = Loopback::default();
        assert!(l.send(&[1u8; 1514]).unwrap());
        let f = l.recv().unwrap().unwrap();
        let at = f.as_ptr();
        l.recycle(f);
        // The next frame lands in the same buffer, with its own bytes and length.
        assert!(l.send(&[2u8; 60]).unwrap());
        let g = l.recv().unwrap().unwrap();
        assert_eq!((g.as_ptr(), g.as_slice()), (at, &[2u8; 60][..]));
        // A buffer larger than any frame is not kept.
        let mut p = FramePool::default();
        p.put(Vec::with_capacity(64 * 1024));
        p.put(Vec::with_capacity(2048));
        assert_eq!(p.len(), 1);
    }

    /// Writes `frame` out of interface `ifname` through a packet socket (what the kernel sends out of a
    /// TAP is what its reader gets), behind a virtio-net header when `vnet` is given (PACKET_VNET_HDR: a
    /// GSO frame, for a TAP that takes them).
    fn send_out_of(ifname: &str, vnet: Option<&VnetHdr>, frame: &[u8]) {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{ifname}: no such interface");
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: a descriptor just opened and owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        let mut data = Vec::new();
        if let Some(h) = vnet {
            // SAFETY: an int option of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_VNET_HDR,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "PACKET_VNET_HDR: {}", io::Error::last_os_error());
            data.extend_from_slice(&h.to_bytes());
        }
        data.extend_from_slice(frame);
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `data` is live for its length and `sll` is a valid sockaddr_ll of the size given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(n, data.len() as isize, "send {} bytes out of {ifname}: {}", data.len(), io::Error::last_os_error());
    }

    /// The next frame of EtherType `ty` the TAP backend reads (the kernel sends its own too: IPv6 router
    /// solicitations and the like), within two seconds.
    fn next_of_type(t: &mut Tap, ty: [u8; 2]) -> (Vec<u8>, Option<VnetHdr>) {
        let t0 = std::time::Instant::now();
        loop {
            match t.recv_vnet().unwrap() {
                Some((f, h)) if f.get(12..14) == Some(&ty[..]) => return (f, h),
                Some((f, _)) => t.recycle(f),
                None => {
                    assert!(t0.elapsed() < std::time::Duration::from_secs(2), "no frame of type {ty:02x?} came out of the TAP");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// Waits until what is sent out of the new TAP `name` reaches its reader (a TAP the kernel has just
    /// brought up may still drop it), then drains what came meanwhile.
    fn ready(t: &mut Tap, name: &str) {
        const PROBE: [u8; 2] = [0x88, 0xb6];
        let t0 = std::time::Instant::now();
        'probe: loop {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5), "nothing sent out of {name} reached its reader");
            send_out_of(name, None, &test_frame(PROBE, 60, 0));
            let t1 = std::time::Instant::now();
            while t1.elapsed() < std::time::Duration::from_millis(100) {
                match t.recv_vnet().unwrap() {
                    Some((f, _)) if f.get(12..14) == Some(&PROBE[..]) => break 'probe,
                    Some((f, _)) => t.recycle(f),
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        while let Some((f, _)) = t.recv_vnet().unwrap() {
            t.recycle(f);
        }
    }

    fn test_frame(ty: [u8; 2], len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        f[12..14].copy_from_slice(&ty);
        f
    }

    #[test]
    fn tap_frames_are_read_straight_into_pooled_buffers_in_both_modes() {
        const LOCAL: [u8; 2] = [0x88, 0xb5]; // IEEE 802 local experimental EtherType
        let name = format!("nbt{}", std::process::id() % 100_000);
        // Wire mode: each frame whole, in a buffer with a jumbo frame's room that comes back for the next.
        {
            let mut t = Tap::open(&name, false).expect("open a TAP (needs CAP_NET_ADMIN)");
            ready(&mut t, &name);
            let mut last = None;
            for (i, len) in [60usize, 1514, 1000, 9014].into_iter().enumerate() {
                let sent = test_frame(LOCAL, len, i as u8);
                if len > 1514 {
                    let ok = std::process::Command::new("ip").args(["link", "set", &name, "mtu", "9000"]).status();
                    assert!(ok.is_ok_and(|s| s.success()), "raise {name}'s MTU");
                }
                send_out_of(&name, None, &sent);
                let (f, h) = next_of_type(&mut t, LOCAL);
                assert_eq!((f.len(), h), (len, None), "frame {i}");
                assert!(f == sent, "frame {i}: its bytes");
                assert!(f.capacity() >= TAP_FRAME_ROOM, "read into a buffer with a frame's room");
                if let Some(p) = last {
                    assert_eq!(f.as_ptr(), p, "frame {i}: the buffer handed back is read into again");
                }
                last = Some(f.as_ptr());
                t.recycle(f);
            }
        }
        // Offload mode: a frame behind its (empty) header, and a GSO frame longer than a frame buffer,
        // read on past it and joined.
        let mut t = Tap::open(&name, true).expect("open a TAP in offload mode");
        ready(&mut t, &name);
        let plain = test_frame(LOCAL, 1514, 9);
        send_out_of(&name, None, &plain);
        let (f, h) = next_of_type(&mut t, LOCAL);
        assert_eq!(h.map(|h| (h.flags, h.gso_type)), Some((0, 0)), "a plain frame's header says nothing");
        assert!(f == plain, "the plain frame's bytes");
        t.recycle(f);
        // One TCP/IPv4 send of 30,000 bytes, as a host's TCP would hand it to the TAP.
        let payload = 30_000usize;
        let mut gso = test_frame([0x08, 0x00], 14 + 40 + payload, 3);
        let ip_len = (40 + payload) as u16;
        let mut ip = [0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        gso[14..34].copy_from_slice(&ip);
        let tcp = [0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
        gso[34..54].copy_from_slice(&tcp);
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        send_out_of(&name, Some(&h), &gso);
        let (f, got) = next_of_type(&mut t, [0x08, 0x00]);
        let got = got.expect("a header in offload mode");
        assert!(got.is_gso() && got.gso_size == 1448, "left the TAP as one GSO frame: {got:?}");
        assert_eq!(f.len(), gso.len(), "whole, past a frame buffer's room ({TAP_FRAME_ROOM})");
        assert!(f == gso, "the GSO frame's bytes, joined across the two reads");
        t.recycle(f);
        assert!(t.pool.take_big(1).is_some(), "the joined frame's buffer goes back among the large ones");
    }

    #[test]
    fn dgram_unicast_carries_one_frame_per_datagram() {
        let (pa, pb) = (free_udp_port(), free_udp_port());
        let mut a = Dgram::open(&format!("udp:127.0.0.1:{pa}:127.0.0.1:{pb}")).unwrap();
        let mut b = Dgram::open(&format!("udp:127.0.0.1:{pb}:127.0.0.1:{pa}")).unwrap();
        // Before the peer existed, sends were lost, not errors; now frames of any size up to jumbo cross.
        for len in [60usize, 1514, 9018] {
            let f: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert!(a.send(&f).unwrap());
            assert!(a.flush().unwrap(), "sent at the end of the round");
            let got = wait_recv(&mut b);
            assert_eq!(got, f);
        }
        assert!(b.send(&[7u8; 64]).unwrap());
        assert!(b.flush().unwrap());
        assert_eq!(wait_recv(&mut a), vec![7u8; 64]);
        // A raw datagram as QEMU sends it (no length prefix) is one frame.
        let q = UdpSocket::bind("127.0.0.1:0").unwrap();
        q.send_to(&[9u8; 100], format!("127.0.0.1:{pb}")).unwrap();
        assert_eq!(wait_recv(&mut b), vec![9u8; 100]);
        assert!(Dgram::open("udp:nonsense").is_err());
        assert!(Dgram::open("mcast:10.0.0.1:5000").is_err(), "not a multicast group");
    }

    #[test]
    fn dgram_takes_sent_frames_by_value_and_reads_straight_into_pooled_buffers() {
        let (pa, pb) = (free_udp_port(), free_udp_port());
        let mut a = Dgram::open(&format!("udp:127.0.0.1:{pa}:127.0.0.1:{pb}")).unwrap();
        let mut b = Dgram::open(&format!("udp:127.0.0.1:{pb}:127.0.0.1:{pa}")).unwrap();
        let mut ptrs = Vec::new();
        for (i, len) in [60usize, 1514, 9018, 600].into_iter().enumerate() {
            let sent: Vec<u8> = (0..len).map(|j| (j as u8) ^ (i as u8)).collect();
            let mut f = sent.clone();
            let at = f.as_ptr();
            assert!(a.send_owned(&mut f, None).unwrap());
            assert!(f.is_empty() && f.as_ptr() != at, "frame {i}: its buffer taken, a spare left");
            assert!(a.flush().unwrap());
            let spare = a.pool.take();
            assert_eq!(spare.as_ptr(), at, "frame {i}: once sent, the buffer is a spare");
            a.pool.put(spare);
            let got = wait_recv(&mut b);
            assert!(got == sent, "frame {i}: its bytes");
            assert!(got.capacity() >= DGRAM_ROOM, "frame {i}: read into a buffer with a frame's room");
            // The buffer handed back replaces the next one taken from the batch's slot: every other frame
            // lands in it.
            if i >= 2 {
                assert_eq!(Some(&got.as_ptr()), ptrs.get(i - 2), "frame {i}: a buffer handed back is read into again");
            }
            ptrs.push(got.as_ptr());
            b.recycle(got);
        }
        // A datagram longer than any frame is dropped, and the next one comes whole.
        let q = UdpSocket::bind("127.0.0.1:0").unwrap();
        q.send_to(&vec![1u8; MAX_FRAME + 1], format!("127.0.0.1:{pb}")).unwrap();
        q.send_to(&[2u8; 70], format!("127.0.0.1:{pb}")).unwrap();
        assert_eq!(wait_recv(&mut b), vec![2u8; 70]);
    }

    #[test]
    fn dgram_moves_a_burst_in_batches_and_in_order() {
        let (pa, pb) = (free_udp_port(), free_udp_port());
        let mut a = Dgram::open(&format!("udp:127.0.0.1:{pa}:127.0.0.1:{pb}")).unwrap();
        let mut b = Dgram::open(&format!("udp:127.0.0.1:{pb}:127.0.0.1:{pa}")).unwrap();
        let frames: Vec<Vec<u8>> = (0..100u32).map(|i| [i.to_be_bytes().as_slice(), &[0x5a; 56]].concat()).collect();
        for f in &frames {
            assert!(a.send(f).unwrap());
        }
        assert!(a.flush().unwrap());
        assert_eq!((a.calls, a.datagrams), (4, 100), "100 frames in sendmmsg calls of up to {DGRAM_BATCH}");
        let mut got = Vec::new();
        while got.len() < frames.len() {
            got.push(wait_recv(&mut b));
        }
        assert_eq!(got, frames, "every frame, in order");
        // Over loopback every datagram was queued before the first read: batches of up to 32.
        assert_eq!((b.calls, b.datagrams), (4, 100));
    }

    fn free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn wait_recv(b: &mut dyn Backend) -> Vec<u8> {
        let t0 = Instant::now();
        loop {
            if let Some(f) = b.recv().unwrap() {
                return f;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "nothing received");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn loopback_returns_in_order_and_backpressures() {
        let mut l = Loopback::default();
        for i in 0..LOOPBACK_DEPTH {
            assert!(l.send(&[i as u8; 60]).unwrap());
        }
        assert!(!l.send(&[0; 60]).unwrap());
        assert_eq!(l.recv().unwrap().unwrap()[0], 0);
        assert_eq!(l.recv().unwrap().unwrap()[0], 1);
    }

    /// The loopback takes a frame's buffer instead of copying it and leaves a spare behind; a full queue
    /// leaves the frame with the caller.
    #[test]
    fn loopback_takes_buffers_and_leaves_spares() {
        let mut l = Loopback::default();
        let mut f = vec![7u8; 1514];
        let at = f.as_ptr();
        assert!(l.send_owned(&mut f, None).unwrap());
        assert!(f.is_empty(), "a spare is left");
        let got = l.recv().unwrap().unwrap();
        assert_eq!(got.as_ptr(), at, "the same buffer, not a copy");
        assert_eq!(got, vec![7u8; 1514]);
        l.recycle(got);
        let mut f = vec![1u8; 60];
        assert!(l.send_owned(&mut f, None).unwrap());
        assert_eq!(f.as_ptr(), at, "the recycled buffer comes back as the spare");
        for i in 1..LOOPBACK_DEPTH {
            let mut f = vec![i as u8; 60];
            assert!(l.send_owned(&mut f, None).unwrap());
        }
        let mut f = vec![9u8; 60];
        assert!(!l.send_owned(&mut f, None).unwrap());
        assert_eq!(f, vec![9u8; 60], "refused: the frame stays with the caller");
        assert_eq!(l.recv().unwrap().unwrap(), vec![1u8; 60]);
        assert!(l.send_owned(&mut vec![0u8; 60], Some(&VnetHdr::default())).is_err(), "no virtio-net headers");
    }

    #[test]
    fn stream_frames_split_anyhow_across_reads_come_whole_and_in_order() {
        let dir = std::env::temp_dir().join(format!("nicdev-stream-burst-{}", std::process::id()));
        let mut a = Stream::listen(StreamAddr::Unix(dir.clone())).unwrap();
        let mut raw = UnixStream::connect(&dir).unwrap();
        for _ in 0..100 {
            a.service();
            if a.carrier() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(a.carrier());
        // Frames of every size up to the largest, packed as QEMU's stream netdev packs them, written in
        // pieces that cut headers and frames at odd places; more than a read buffer's worth at once.
        let frames: Vec<Vec<u8>> = (0..300usize).map(|i| vec![(i % 251) as u8; [60, 1514, 9018, MAX_FRAME, 61][i % 5]]).collect();
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend_from_slice(&(f.len() as u32).to_be_bytes());
            bytes.extend_from_slice(f);
        }
        let writer = std::thread::spawn(move || {
            for piece in bytes.chunks(70_001) {
                raw.write_all(piece).unwrap();
            }
            raw
        });
        let mut got = 0;
        let t0 = Instant::now();
        while got < frames.len() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{got} of {} frames came", frames.len());
            match a.recv().unwrap() {
                Some(f) => {
                    assert!(f == frames[got], "frame {got}: {} bytes", f.len());
                    a.recycle(f);
                    got += 1;
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        drop(writer.join().unwrap());
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn stream_framing_between_two_ends() {
        let dir = std::env::temp_dir().join(format!("nicdev-stream-{}", std::process::id()));
        let mut a = Stream::listen(StreamAddr::Unix(dir.clone())).unwrap();
        let mut b = Stream::connect(StreamAddr::Unix(dir.clone()));
        for _ in 0..100 {
            a.service();
            if a.carrier() && b.carrier() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(a.carrier() && b.carrier());
        let frames: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 60 + i * 100]).collect();
        for f in &frames {
            assert!(b.send(f).unwrap());
        }
        while !b.flush().unwrap() {}
        let mut got = Vec::new();
        for _ in 0..1000 {
            if let Some(f) = a.recv().unwrap() {
                got.push(f);
            }
            if got.len() == frames.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, frames);
        // A hostile length drops the peer instead of allocating it.
        let mut raw = UnixStream::connect(&dir);
        assert!(raw.is_ok());
        drop(b);
        for _ in 0..100 {
            let _ = a.recv();
            if !a.carrier() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!a.carrier());
        a.service();
        let r = raw.as_mut().unwrap();
        r.write_all(&(u32::MAX).to_be_bytes()).unwrap();
        for _ in 0..100 {
            a.service();
            let _ = a.recv();
            std::thread::sleep(Duration::from_millis(2));
            if a.generation() >= 4 {
                break;
            }
        }
        assert!(!a.carrier());
    }

    /// The same framing over TCP on loopback (`stream:tcp:` / `stream-connect:tcp:`), both ways, and a peer
    /// that goes away is reconnected.
    #[test]
    fn stream_over_tcp_carries_frames_both_ways_and_reconnects() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = StreamAddr::parse(&format!("tcp:127.0.0.1:{port}"));
        assert_eq!(addr, StreamAddr::Tcp(format!("127.0.0.1:{port}")));
        let mut a = Stream::listen(addr.clone()).unwrap();
        let attach = |a: &mut Stream, b: &mut Stream| {
            for _ in 0..200 {
                a.service();
                b.service();
                if a.carrier() && b.carrier() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        };
        let exchange = |from: &mut Stream, to: &mut Stream, frames: &[Vec<u8>]| {
            for f in frames {
                assert!(from.send(f).unwrap());
            }
            while !from.flush().unwrap() {}
            let mut got = Vec::new();
            for _ in 0..2000 {
                if let Some(f) = to.recv().unwrap() {
                    got.push(f);
                }
                if got.len() == frames.len() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        };
        let mut b = Stream::connect(addr.clone());
        assert!(attach(&mut a, &mut b));
        let frames: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 60 + i * 70]).collect();
        assert_eq!(exchange(&mut b, &mut a, &frames), frames);
        assert_eq!(exchange(&mut a, &mut b, &frames), frames);
        assert_eq!(b.describe(), format!("stream:tcp:127.0.0.1:{port}"));
        // The connecting side goes away; a new one attaches to the same listener.
        drop(b);
        for _ in 0..200 {
            let _ = a.recv();
            if !a.carrier() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!a.carrier());
        let mut c = Stream::connect(addr);
        assert!(attach(&mut a, &mut c));
        assert_eq!(exchange(&mut c, &mut a, &frames[..3]), frames[..3].to_vec());
    }
}
