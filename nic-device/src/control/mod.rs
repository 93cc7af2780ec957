//! The control socket (`nic-device --control PATH`): inspect the card, trace it, inject faults, while it
//! keeps serving its vfio-user client. One JSON request per line, one JSON reply per line:
//! `{"cmd":"regs","names":["CTRL"]}` -> `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`. `trace`
//! replies once, then streams one JSON event per line until the client closes the connection.
//!
//! Commands: `regs [names]`, `rings`, `stats`, `phy`, `nvm`, `irq`, `trace {categories, names}`,
//! `inject {fault, count | persistent | for_ms, delay_ms, mac, queue}`, `clear {fault}`, `faults`.

// Requests are JSON values: `req["key"]` reads through serde_json's `Index`, which gives `Null` for what is
// absent instead of panicking.
#![allow(clippy::indexing_slicing)]

pub mod fields;
pub mod inspect;

use crate::fault::{Fault, Kind};
use crate::nic::{lock, Nic};
use log::{debug, info, warn};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Control clients served at once; more are refused with an error line.
const MAX_CLIENTS: usize = 16;
/// Longest request line.
const MAX_REQUEST: usize = 64 * 1024;
/// A client that sends no request for this long, or stops reading its trace for this long, is dropped, so
/// that idle clients cannot hold every slot.
const CLIENT_IDLE: Duration = Duration::from_secs(120);

pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Wakes the accepting thread (asleep on the listener) to see `stop`.
    wake: mio::Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The accepting thread's poll tokens.
const LISTENER: mio::Token = mio::Token(0);
const STOP: mio::Token = mio::Token(1);

impl ControlServer {
    /// Binds `path` (replacing a stale socket file) and serves it on a thread of its own.
    pub fn start(path: &Path, nic: Arc<Mutex<Nic>>, waker: Arc<mio::Waker>) -> std::io::Result<ControlServer> {
        let listener = crate::server::bind(path).map_err(|e| std::io::Error::other(e.to_string()))?;
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        // The thread sleeps until a client connects or the server stops: no periodic wake-ups while idle.
        let mut poll = mio::Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, mio::Interest::READABLE)?;
        let wake = mio::Waker::new(poll.registry(), STOP)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let clients = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new().name("nic-control".into()).spawn(move || {
            let mut events = mio::Events::with_capacity(4);
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        // Back to a std stream (blocking, with timeouts) for the client thread.
                        let s = UnixStream::from(std::os::fd::OwnedFd::from(s));
                        let _ = s.set_nonblocking(false);
                        if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                            let _ = reply(&s, &json!({"ok": false, "error": "too many control clients"}));
                            continue;
                        }
                        clients.fetch_add(1, Ordering::Relaxed);
                        let (nic, waker, clients, stop) = (nic.clone(), waker.clone(), clients.clone(), s2.clone());
                        let r = std::thread::Builder::new().name("nic-control-client".into()).spawn(move || {
                            if let Err(e) = client(s, &nic, &waker, &stop) {
                                debug!("control client: {e}");
                            }
                            clients.fetch_sub(1, Ordering::Relaxed);
                        });
                        if r.is_err() {
                            warn!("control: no thread for a client");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = poll.poll(&mut events, None) {
                            if e.kind() != std::io::ErrorKind::Interrupted {
                                warn!("control poll: {e}");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                    Err(e) => {
                        warn!("control accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        info!("control socket on {}", path.display());
        Ok(ControlServer { path: path.to_path_buf(), stop, wake, thread: Some(thread) })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn reply(mut s: &UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())
}

fn client(s: UnixStream, nic: &Mutex<Nic>, waker: &mio::Waker, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_read_timeout(Some(CLIENT_IDLE))?;
    s.set_write_timeout(Some(CLIENT_IDLE))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut r, MAX_REQUEST as u64 + 1).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_REQUEST {
            return reply(&s, &json!({"ok": false, "error": "request too long"}));
        }
        if line.trim().is_empty() {
            continue;
        }
        let req: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                reply(&s, &json!({"ok": false, "error": format!("bad request: {e}")}))?;
                continue;
            }
        };
        if req["cmd"] == "trace" {
            return trace(s, nic, &req, stop);
        }
        let out = match handle(nic, &req) {
            Ok((data, wake)) => {
                if wake {
                    let _ = waker.wake();
                }
                json!({"ok": true, "data": data})
            }
            Err(e) => json!({"ok": false, "error": e}),
        };
        reply(&s, &out)?;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// One request; the data and whether the data path should look at the device again.
fn handle(nic: &Mutex<Nic>, req: &Value) -> Result<(Value, bool), String> {
    let cmd = req["cmd"].as_str().ok_or("request without \"cmd\"")?;
    let n = || lock(nic);
    Ok(match cmd {
        "regs" => (inspect::regs(&n(), &strings(&req["names"]))?, false),
        "rings" => (inspect::rings(&n()), false),
        "stats" => (inspect::stats(&n()), false),
        "phy" => (inspect::phy(&n()), false),
        "nvm" => (inspect::nvm(&n()), false),
        "irq" => (inspect::irq(&n()), false),
        "faults" => {
            let g = n();
            let now = Instant::now();
            (Value::Array(g.faults.list().iter().map(|f| f.to_json(now)).collect()), false)
        }
        "inject" => {
            let f = parse_fault(req)?;
            let mut g = n();
            let desc = f.to_json(Instant::now());
            info!("fault injected: {desc}");
            g.trace.emit(crate::trace::FAULTS, "fault-injected", || desc.clone());
            g.faults.inject(f);
            g.update_carrier(Instant::now());
            (desc, true)
        }
        "clear" => {
            let kind = match req["fault"].as_str() {
                None | Some("all") => None,
                Some("link") => {
                    let mut g = n();
                    let c = g.faults.clear(Some(Kind::LinkDown)) + g.faults.clear(Some(Kind::LinkFlap));
                    g.update_carrier(Instant::now());
                    return Ok((json!({ "cleared": c }), true));
                }
                Some(k) => Some(Kind::from_name(k).ok_or_else(|| format!("no fault named '{k}'"))?),
            };
            let mut g = n();
            let c = g.faults.clear(kind);
            g.update_carrier(Instant::now());
            info!("faults cleared: {c}");
            g.trace.emit(crate::trace::FAULTS, "fault-cleared", || json!({ "fault": req["fault"], "cleared": c }));
            (json!({ "cleared": c }), true)
        }
        other => return Err(format!("unknown command '{other}'")),
    })
}

fn parse_fault(req: &Value) -> Result<Fault, String> {
    let name = req["fault"].as_str().ok_or("inject needs \"fault\"")?;
    let kind = Kind::from_name(name)
        .ok_or_else(|| format!("no fault named '{name}'; faults: {}", Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")))?;
    let mut f = Fault::new(kind);
    if kind == Kind::LinkDown {
        // Down until cleared (or for a time), not for a count of events.
        f.count = None;
    }
    if let Some(c) = req.get("count").and_then(Value::as_u64) {
        if c == 0 {
            return Err("count must be at least 1".into());
        }
        f.count = Some(c);
    }
    if req["persistent"].as_bool() == Some(true) {
        f.count = None;
    }
    if let Some(ms) = req.get("for_ms").and_then(Value::as_f64) {
        if !(ms > 0.0 && ms <= 86_400_000.0) {
            return Err("for_ms must be in (0, 86400000]".into());
        }
        f.until = Some(Instant::now() + Duration::from_secs_f64(ms / 1e3));
        f.count = None;
    }
    if let Some(ms) = req.get("delay_ms").and_then(Value::as_f64) {
        if !(0.0..=60_000.0).contains(&ms) {
            return Err("delay_ms must be in [0, 60000]".into());
        }
        f.delay = Duration::from_secs_f64(ms / 1e3);
    } else if kind == Kind::LinkFlap {
        f.delay = Duration::from_secs(2);
    } else if kind == Kind::IrqSpurious {
        f.delay = Duration::from_millis(20);
    }
    if let Some(m) = req.get("mac").and_then(Value::as_str) {
        f.mac = crate::parse_mac(m).ok_or_else(|| format!("bad MAC '{m}'"))?;
    }
    if let Some(q) = req.get("queue").and_then(Value::as_u64) {
        if q > 1 {
            return Err("queue must be 0 or 1".into());
        }
        f.queue = Some(q as usize);
    }
    Ok(f)
}

fn trace(s: UnixStream, nic: &Mutex<Nic>, req: &Value, stop: &AtomicBool) -> std::io::Result<()> {
    let mut mask = 0;
    let cats = strings(&req["categories"]);
    for c in &cats {
        match crate::trace::category(c) {
            Some(m) => mask |= m,
            None => {
                return reply(&s, &json!({"ok": false, "error": format!("no trace category '{c}' (regs, dma, irq, frames, faults, all)")}))
            }
        }
    }
    if cats.is_empty() {
        mask = crate::trace::ALL;
    }
    // Register names to keep (all when empty).
    let names: Vec<String> = strings(&req["names"]).iter().map(|n| n.to_ascii_uppercase()).collect();
    let tracer = lock(nic).trace.clone();
    let sub = tracer.subscribe(mask);
    reply(&s, &json!({"ok": true, "data": {"tracing": cats}}))?;
    let mut w = std::io::BufWriter::new(&s);
    // The client closing the connection ends the subscription: a read of 0 bytes says so. The socket stays
    // blocking (a slow reader makes writes wait, up to CLIENT_IDLE, rather than fail); the probe read waits
    // at most a millisecond (SO_RCVTIMEO: nothing else reads this socket any more).
    let mut probe = s.try_clone()?;
    probe.set_read_timeout(Some(Duration::from_millis(1)))?;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        match sub.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                // Everything waiting goes out in one write, then a flush so a live reader sees it promptly.
                let mut batch = vec![first];
                while let Ok(l) = sub.rx.try_recv() {
                    batch.push(l);
                    if batch.len() >= 1024 {
                        break;
                    }
                }
                let mut err = None;
                for line in batch.iter().filter(|l| keep(l, &names)) {
                    if let Err(e) = w.write_all(line.as_bytes()).and_then(|_| w.write_all(b"\n")) {
                        err = Some(e);
                        break;
                    }
                }
                if let Some(e) = err.or_else(|| w.flush().err()) {
                    break Err(e);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = w.flush() {
                    break Err(e);
                }
                let mut b = [0u8; 1];
                // Ok(0): the client is gone; a timeout (WouldBlock/TimedOut) or stray bytes: it is still there.
                if let Ok(0) = std::io::Read::read(&mut probe, &mut b) {
                    break Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    drop(sub);
    tracer.prune();
    result
}

/// The register-name filter of a trace: register events for the named registers only; other events pass.
fn keep(line: &str, names: &[String]) -> bool {
    if names.is_empty() || !line.contains("\"event\":\"reg\"") {
        return true;
    }
    names.iter().any(|n| line.contains(&format!("\"name\":\"{n}\"")))
}
