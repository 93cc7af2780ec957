//! Wire backends: where transmitted frames go and received frames come from.
//! `tap:IFNAME`, `stream:PATH` (listen), `stream-connect:PATH` (QEMU `-netdev stream` framing: a 4-byte
//! big-endian length, then the frame), and `loopback`.

use log::{info, warn};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
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
    #[error("unknown backend '{0}': use tap:IFNAME, stream:PATH, stream-connect:PATH or loopback")]
    Unknown(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

pub fn open(spec: &str) -> Result<Box<dyn Backend>, BackendError> {
    if spec == "loopback" {
        return Ok(Box::new(Loopback::default()));
    }
    if let Some(name) = spec.strip_prefix("tap:") {
        return Ok(Box::new(Tap::open(name).map_err(|e| BackendError::Io(format!("tap {name}"), e))?));
    }
    if let Some(p) = spec.strip_prefix("stream-connect:") {
        return Ok(Box::new(Stream::connect(PathBuf::from(p))));
    }
    if let Some(p) = spec.strip_prefix("stream:") {
        return Ok(Box::new(Stream::listen(PathBuf::from(p)).map_err(|e| BackendError::Io(format!("stream {p}"), e))?));
    }
    Err(BackendError::Unknown(spec.into()))
}

// ---- loopback ----

/// What is sent comes back, in order; a full queue back-pressures the sender.
#[derive(Default)]
pub struct Loopback {
    q: VecDeque<Vec<u8>>,
}

const LOOPBACK_DEPTH: usize = 512;

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
        self.q.push_back(frame.to_vec());
        Ok(true)
    }
    fn describe(&self) -> String {
        "loopback".into()
    }
}

// ---- TAP ----

pub struct Tap {
    tap: nic_tap::Tap,
    buf: Vec<u8>,
}

impl Tap {
    pub fn open(name: &str) -> io::Result<Tap> {
        let tap = nic_tap::Tap::open(name)?;
        if let Err(e) = tap.set_up() {
            warn!("tap {name}: could not bring the interface up: {e}");
        }
        info!("tap {name} attached");
        Ok(Tap { tap, buf: vec![0; MAX_FRAME + 64] })
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
        Ok(self.tap.recv(&mut self.buf)?.and_then(|n| self.buf.get(..n)).map(<[u8]>::to_vec))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.tap.send(frame)
    }
    fn describe(&self) -> String {
        format!("tap:{}", self.tap.name())
    }
}

// ---- unix stream (QEMU -netdev stream framing) ----

pub struct Stream {
    path: PathBuf,
    listener: Option<UnixListener>,
    peer: Option<UnixStream>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    gen: u64,
    next_try: Instant,
}

/// Output buffered per peer before the sender is back-pressured.
const STREAM_WBUF: usize = 256 * 1024;

impl Stream {
    pub fn listen(path: PathBuf) -> io::Result<Stream> {
        if path.exists() && UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let l = UnixListener::bind(&path)?;
        l.set_nonblocking(true)?;
        info!("stream backend listening on {}", path.display());
        Ok(Stream { path, listener: Some(l), peer: None, rbuf: Vec::new(), wbuf: Vec::new(), gen: 0, next_try: Instant::now() })
    }

    pub fn connect(path: PathBuf) -> Stream {
        let mut s = Stream { path, listener: None, peer: None, rbuf: Vec::new(), wbuf: Vec::new(), gen: 0, next_try: Instant::now() };
        s.service();
        s
    }

    fn set_peer(&mut self, p: Option<UnixStream>) {
        if let Some(p) = &p {
            let _ = p.set_nonblocking(true);
            info!("stream backend {}: peer attached", self.path.display());
        } else if self.peer.is_some() {
            info!("stream backend {}: peer gone", self.path.display());
        }
        self.peer = p;
        self.rbuf.clear();
        self.wbuf.clear();
        self.gen += 1;
    }

    fn drop_peer(&mut self) {
        self.set_peer(None);
        self.next_try = Instant::now() + Duration::from_millis(200);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
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
            if let Ok((s, _)) = l.accept() {
                if self.peer.is_some() {
                    warn!("stream backend {}: second peer refused", self.path.display());
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
            match UnixStream::connect(&self.path) {
                Ok(s) => self.set_peer(Some(s)),
                Err(_) => {
                    self.next_try = Instant::now() + Duration::from_millis(200);
                    return Some(self.next_try);
                }
            }
        }
        None
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(len) = crate::bytes::be32(&self.rbuf, 0) {
                let len = len as usize;
                if len > MAX_FRAME {
                    warn!("stream backend: frame length {len} from peer is too large; dropping the peer");
                    self.drop_peer();
                    return Ok(None);
                }
                if let Some(f) = self.rbuf.get(4..4 + len) {
                    let f = f.to_vec();
                    self.rbuf.drain(..4 + len);
                    return Ok(Some(f));
                }
            }
            let Some(p) = self.peer.as_mut() else { return Ok(None) };
            let mut tmp = [0u8; 65536];
            match p.read(&mut tmp) {
                Ok(0) => {
                    self.drop_peer();
                    return Ok(None);
                }
                Ok(n) => self.rbuf.extend_from_slice(tmp.get(..n).unwrap_or_default()),
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
        if self.wbuf.len() > STREAM_WBUF {
            self.flush()?;
            if self.wbuf.len() > STREAM_WBUF {
                return Ok(false);
            }
        }
        self.wbuf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.wbuf.extend_from_slice(frame);
        Ok(true)
    }
    fn flush(&mut self) -> io::Result<bool> {
        while !self.wbuf.is_empty() {
            let Some(p) = self.peer.as_mut() else {
                self.wbuf.clear();
                return Ok(true);
            };
            match p.write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_peer();
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }
    fn describe(&self) -> String {
        format!("stream:{}", self.path.display())
    }
}

#[cfg(test)]
mod test {
    use super::*;

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

    #[test]
    fn stream_framing_between_two_ends() {
        let dir = std::env::temp_dir().join(format!("nicdev-stream-{}", std::process::id()));
        let mut a = Stream::listen(dir.clone()).unwrap();
        let mut b = Stream::connect(dir.clone());
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
}
