//! TCP commands on the Rust stack: an HTTP/1.1 client and static server, and bulk send/receive.

use crate::ping::open_stack;
use crate::Opts;
use stack::blocking::Blocking;
use stack::time::Instant;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

/// `ADDR:PORT` or `[IPV6]:PORT` (an address, not a name: the stack has no resolver).
fn host_port(s: &str) -> Result<(IpAddr, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or(format!("{s}: expected HOST:PORT"))?;
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    let ip: IpAddr = h.parse().map_err(|e| format!("{h}: {e} (an IPv4 address or a bracketed IPv6 address is expected)"))?;
    Ok((ip, p.parse().map_err(|e| format!("port {p}: {e}"))?))
}

fn rate(bytes: u64, d: Duration) -> String {
    let s = d.as_secs_f64().max(1e-9);
    format!("{bytes} bytes in {s:.3} s: {:.1} MB/s, {:.3} Gbit/s", bytes as f64 / s / 1e6, bytes as f64 * 8.0 / s / 1e9)
}

/// The CPU time this process (every thread of it) has used so far: user and system.
fn cpu_used() -> (Duration, Duration) {
    // SAFETY: getrusage fills the rusage it is given (zeroed, a plain C struct); RUSAGE_SELF is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is to our own local.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let t = |v: libc::timeval| Duration::from_secs(v.tv_sec.max(0) as u64) + Duration::from_micros(v.tv_usec.max(0) as u64);
    (t(u.ru_utime), t(u.ru_stime))
}

/// The CPU time used since `since` (a `cpu_used`) over `wall`, as iperf3 reports its own: "cpu: 1.234 s
/// (0.900 s user, 0.334 s system), 61% of the elapsed time".
fn cpu_report(since: (Duration, Duration), wall: Duration) -> String {
    let now = cpu_used();
    let (u, s) = (now.0.saturating_sub(since.0), now.1.saturating_sub(since.1));
    let pct = (u + s).as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0;
    format!(
        "cpu: {:.3} s ({:.3} s user, {:.3} s system), {pct:.0}% of the elapsed time",
        (u + s).as_secs_f64(),
        u.as_secs_f64(),
        s.as_secs_f64()
    )
}

/// What GRO made of the frames received since `since` (the stack's `rx_packets` and `gro_merged` then):
/// "gro: G of F frames merged into larger packets (P packets)".
fn gro_report(st: &stack::Stack, since: (u64, u64)) -> String {
    let frames = st.stats.rx_packets.saturating_sub(since.0);
    let merged = st.stats.gro_merged.saturating_sub(since.1);
    format!("gro: {merged} of {frames} frames merged into larger packets ({} packets)", frames.saturating_sub(merged))
}

fn gro_counters(st: &stack::Stack) -> (u64, u64) {
    (st.stats.rx_packets, st.stats.gro_merged)
}

/// The stack behind the blocking layer, answering the control socket between rounds when asked.
fn blocking(o: &Opts) -> Result<Blocking, String> {
    let mut b = Blocking::new(open_stack(o)?);
    if let Some(p) = &o.control {
        let mut c = crate::control::Control::bind(std::path::Path::new(p))?;
        b.on_turn = Some(Box::new(move |s: &mut stack::Stack| c.serve(s)));
    }
    Ok(b)
}

fn errno(e: stack::Errno) -> String {
    e.to_string()
}

/// `get http://HOST:PORT/PATH -o FILE`
pub fn get(o: &Opts) -> Result<bool, String> {
    let url = o.dest.as_deref().ok_or("get needs a URL")?;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (hp, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A port after the host (for a bracketed IPv6 address, after the closing bracket).
    let has_port = if hp.starts_with('[') { hp.contains("]:") } else { hp.contains(':') };
    let (ip, port) = if has_port { host_port(hp)? } else { host_port(&format!("{hp}:80"))? };
    let out_path = o.output.as_deref().ok_or("get needs -o FILE")?;
    let mut b = blocking(o)?;
    let t0 = Instant::now();
    let gro0 = gro_counters(&b.stack);
    let h = b.connect(ip, port).map_err(|e| format!("connect {hp}: {}", errno(e)))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hp}\r\nUser-Agent: nic-lab\r\nConnection: close\r\n\r\n");
    b.send_all(h, req.as_bytes()).map_err(errno)?;
    let mut file = std::fs::File::create(out_path).map_err(|e| format!("{out_path}: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let (mut body, mut want): (u64, Option<u64>) = (0, None);
    let mut status = 0u32;
    let mut chunked: Option<Chunked> = None;
    loop {
        let n = b.recv(h, &mut buf).map_err(|e| format!("recv: {}", errno(e)))?;
        if n == 0 {
            break;
        }
        let mut data: Vec<u8> = buf[..n].to_vec();
        if status == 0 {
            head.extend_from_slice(&data);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        want = v.trim().parse().ok();
                    }
                    if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                        chunked = Some(Chunked::default());
                    }
                }
            }
            data = head[end + 4..].to_vec();
        }
        let out = match chunked.as_mut() {
            Some(c) => c.feed(&data)?,
            None => data,
        };
        file.write_all(&out).map_err(|e| e.to_string())?;
        body += out.len() as u64;
        if want.is_some_and(|w| body >= w) || chunked.as_ref().is_some_and(|c| c.done) {
            break;
        }
    }
    if chunked.as_ref().is_some_and(|c| !c.done) {
        return Err("connection closed inside a chunked body".into());
    }
    let delayed_acks = b.stack.tcp_conn(h).map_or(0, |t| t.delayed_acks);
    let _ = b.close(h);
    let d = Instant::now() - t0;
    println!("HTTP {status}: {}", rate(body, d));
    println!("delayed ACKs: {delayed_acks}");
    println!("{}", gro_report(&b.stack, gro0));
    if let Some(r) = b.stack.dev.report() {
        println!("{r}");
    }
    if want.is_some_and(|w| w != body) {
        return Err(format!("short body: {body} of {} bytes", want.unwrap()));
    }
    Ok(status == 200)
}

fn content_type(p: &str) -> &'static str {
    match p.rsplit('.').next() {
        Some("html") => "text/html",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// How long a connection may sit without progress (no request bytes, no response bytes taken) before it
/// is reset: one client that connects and sends nothing must not hold the server.
const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNS: usize = 64;

/// One connection of `serve`: reading its request, then writing its response.
struct Conn {
    h: stack::iface::SocketHandle,
    req: Vec<u8>,
    /// The response and how much of it the stack has taken, once the request is complete.
    resp: Option<(Vec<u8>, usize)>,
    last_progress: std::time::Instant,
    log: String,
}

/// The response to a request: (head and body, log line).
fn respond(dir: &std::path::Path, req: &[u8]) -> (Vec<u8>, String) {
    let text = String::from_utf8_lossy(req).into_owned();
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let rel = path.trim_start_matches('/');
    let file = if rel.split('/').any(|c| c == "..") { None } else { std::fs::read(dir.join(rel)).ok().filter(|_| !rel.is_empty()) };
    let (head, body) = match (method, file) {
        ("GET", Some(data)) | ("HEAD", Some(data)) => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
                data.len(),
                content_type(rel)
            ),
            if method == "GET" { data } else { Vec::new() },
        ),
        ("GET", None) | ("HEAD", None) => {
            let body = b"not found\n".to_vec();
            (format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()), body)
        }
        _ => ("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(), Vec::new()),
    };
    let log = format!("{method} {path}: {} bytes", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    (out, log)
}

/// `serve --port P --dir D [--count N]`: many connections at once from one poll loop, each with its own
/// idle limit.
pub fn serve(o: &Opts) -> Result<bool, String> {
    let dir = std::path::PathBuf::from(o.dir.as_deref().ok_or("serve needs --dir D")?);
    let port = if o.port == 0 { 80 } else { o.port };
    let mut b = blocking(o)?;
    let l = b.stack.tcp_listen(port, MAX_CONNS).map_err(errno)?;
    eprintln!("serving {} on port {port}", dir.display());
    let mut conns: Vec<Conn> = Vec::new();
    let mut served = 0u64;
    let mut buf = vec![0u8; 16384];
    loop {
        b.turn(Duration::from_millis(20));
        let now = stack::time::Instant::now();
        let wall = std::time::Instant::now();
        while conns.len() < MAX_CONNS {
            match b.stack.tcp_accept(l) {
                Ok(h) => conns.push(Conn { h, req: Vec::new(), resp: None, last_progress: wall, log: String::new() }),
                Err(_) => break,
            }
        }
        let mut i = 0;
        while i < conns.len() {
            let c = &mut conns[i];
            let mut done = false;
            if c.resp.is_none() {
                loop {
                    match b.stack.tcp_recv(c.h, &mut buf, now) {
                        Ok(0) => {
                            // The client closed before finishing its request.
                            done = true;
                            break;
                        }
                        Ok(n) => {
                            c.req.extend_from_slice(&buf[..n]);
                            c.last_progress = wall;
                        }
                        Err(e) if e == stack::iface::EAGAIN => break,
                        Err(_) => {
                            done = true;
                            break;
                        }
                    }
                    if c.req.windows(4).any(|w| w == b"\r\n\r\n") || c.req.len() >= 16384 {
                        let (resp, log) = respond(&dir, &c.req);
                        c.resp = Some((resp, 0));
                        c.log = log;
                        break;
                    }
                }
            }
            if let Some((resp, off)) = c.resp.as_mut() {
                while *off < resp.len() {
                    match b.stack.tcp_send(c.h, &resp[*off..], now) {
                        Ok(0) => break,
                        Ok(n) => {
                            *off += n;
                            c.last_progress = wall;
                        }
                        Err(e) if e == stack::iface::EAGAIN => break,
                        Err(_) => {
                            done = true;
                            break;
                        }
                    }
                }
                if *off == resp.len() && !done {
                    // All taken: close gracefully; the stack finishes the connection in the background.
                    b.stack.tcp_close(c.h, now);
                    eprintln!("{}", c.log);
                    served += 1;
                    conns.swap_remove(i);
                    continue;
                }
            }
            if done {
                b.stack.tcp_abort(c.h, now);
                conns.swap_remove(i);
                continue;
            }
            if wall.duration_since(c.last_progress) > IDLE_LIMIT {
                eprintln!("connection idle for {:?}: reset", IDLE_LIMIT);
                b.stack.tcp_abort(c.h, now);
                conns.swap_remove(i);
                continue;
            }
            i += 1;
        }
        if o.count > 0 && served >= o.count {
            // Let the last connections finish closing.
            let end = std::time::Instant::now() + Duration::from_millis(500);
            while std::time::Instant::now() < end {
                b.turn(Duration::from_millis(10));
            }
            return Ok(true);
        }
    }
}

/// `blast HOST:PORT --bytes N`
pub fn blast(o: &Opts) -> Result<bool, String> {
    let (ip, port) = host_port(o.dest.as_deref().ok_or("blast needs HOST:PORT")?)?;
    let mut b = blocking(o)?;
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let n = o.count.max(1) as u16;
    if n == 1 {
        let h = b.connect(ip, port).map_err(|e| format!("connect: {}", errno(e)))?;
        let t0 = Instant::now();
        let c0 = cpu_used();
        let mut left = o.bytes;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            b.send_all(h, &chunk[..k]).map_err(|e| format!("send: {}", errno(e)))?;
            left -= k as u64;
        }
        b.close(h).map_err(errno)?;
        let wall = Instant::now() - t0;
        println!("sent {}", rate(o.bytes, wall));
        println!("{}", cpu_report(c0, wall));
    } else {
        // Several connections fed side by side from one loop.
        let mut conns = Vec::new();
        for k in 0..n {
            let p = port.checked_add(k).ok_or("--parallel: ports beyond 65535")?;
            conns.push((p, b.connect(ip, p).map_err(|e| format!("connect to port {p}: {}", errno(e)))?, o.bytes, None));
        }
        let t0 = Instant::now();
        while conns.iter().any(|c| c.3.is_none()) {
            let now = stack::time::Instant::now();
            for (p, h, left, done) in conns.iter_mut() {
                if done.is_some() {
                    continue;
                }
                while *left > 0 {
                    let k = (*left).min(chunk.len() as u64) as usize;
                    match b.stack.tcp_send(*h, &chunk[..k], now) {
                        Ok(sent) if sent > 0 => *left -= sent as u64,
                        Ok(_) => break,
                        Err(e) if e == stack::iface::EAGAIN => break,
                        Err(e) => return Err(format!("send to port {p}: {}", errno(e))),
                    }
                }
                if *left == 0 && b.stack.tcp_send_queue(*h) == Some(0) {
                    *done = Some(Instant::now() - t0);
                }
            }
            b.turn(Duration::from_millis(20));
        }
        for (p, h, _, done) in conns {
            let _ = b.close(h);
            println!("port {p}: sent {}", rate(o.bytes, done.unwrap_or_default()));
        }
    }
    if o.qdisc.is_some() {
        println!("{}", b.stack.tc_show());
    }
    Ok(true)
}

/// `sink --port P [--count N]`
pub fn sink(o: &Opts) -> Result<bool, String> {
    let port = if o.port == 0 { 5001 } else { o.port };
    let mut b = blocking(o)?;
    b.timeout = Duration::from_secs(3600);
    let l = b.stack.tcp_listen(port, 4).map_err(errno)?;
    eprintln!("sink on port {port}");
    for _ in 0..o.count.max(1) {
        let h = b.accept(l).map_err(errno)?;
        let t0 = Instant::now();
        let c0 = cpu_used();
        let gro0 = gro_counters(&b.stack);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match b.recv(h, &mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) => return Err(format!("recv: {}", errno(e))),
            }
        }
        let _ = b.close(h);
        let wall = Instant::now() - t0;
        println!("received {}", rate(total, wall));
        println!("{}", cpu_report(c0, wall));
        println!("{}", gro_report(&b.stack, gro0));
    }
    Ok(true)
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 7.1).
#[derive(Default)]
struct Chunked {
    line: Vec<u8>,
    /// Bytes left in the current chunk's data.
    left: usize,
    /// Expecting the CRLF after a chunk's data.
    crlf: bool,
    /// The last chunk was seen; now reading trailers.
    trailers: bool,
    done: bool,
}

impl Chunked {
    fn feed(&mut self, mut d: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while !d.is_empty() && !self.done {
            if self.left > 0 {
                let n = self.left.min(d.len());
                out.extend_from_slice(&d[..n]);
                self.left -= n;
                d = &d[n..];
                if self.left == 0 {
                    self.crlf = true;
                }
                continue;
            }
            let b = d[0];
            d = &d[1..];
            self.line.push(b);
            if !self.line.ends_with(b"\r\n") {
                if self.line.len() > 4096 {
                    return Err("chunk line too long".into());
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line[..self.line.len() - 2]).into_owned();
            self.line.clear();
            if self.crlf {
                if !line.is_empty() {
                    return Err("missing CRLF after chunk data".into());
                }
                self.crlf = false;
            } else if self.trailers {
                if line.is_empty() {
                    self.done = true;
                }
            } else {
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size line '{line}'"))?;
                if size == 0 {
                    self.trailers = true;
                } else {
                    self.left = size;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod test {
    use super::{host_port, Chunked};

    #[test]
    fn host_port_takes_both_families() {
        assert_eq!(host_port("10.0.0.1:80"), Ok(("10.0.0.1".parse().unwrap(), 80)));
        assert_eq!(host_port("[2001:db8::1]:8080"), Ok(("2001:db8::1".parse().unwrap(), 8080)));
        assert!(host_port("2001:db8::1").is_err(), "an unbracketed IPv6 address has no port");
        assert!(host_port("example.com:80").is_err(), "no resolver");
    }

    #[test]
    fn chunked_bodies_decode_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n";
        for split in 1..wire.len() {
            let mut c = Chunked::default();
            let mut out = c.feed(&wire[..split]).unwrap();
            out.extend(c.feed(&wire[split..]).unwrap());
            assert_eq!(out, b"hello, world");
            assert!(c.done);
        }
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"2\r\nabXY\r\n").is_err(), "data must end with CRLF");
    }
}
