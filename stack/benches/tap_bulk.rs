//! TCP bulk transfer between the Linux kernel and a userspace stack over one TAP device, both directions,
//! with this stack (plain frames, and with the TAP's offloads: 64 KiB super-packets and partial checksums)
//! and with smoltcp configured as its own `benchmark` example configures it (64 KiB socket buffers), in the
//! same run: RUNS rounds (default 5) of every case once, medians with the lowest and highest run, and the
//! ratios (IPv6 over IPv4 also as the median of each round's ratio).
//! Needs root (a network namespace and a TAP device are made for the run and removed after).
//!
//!   cargo bench -p nic-stack --bench tap_bulk [-- BYTES [RUNS]]
//!
//! `TAP_BULK_CASES="offload v6 receive,offload receive"` runs only those cases (to profile one path).

mod common;
use common::median;
use std::process::{Command, Stdio};
use std::time::Duration;

const NS: &str = "nicbench";
const TAP: &str = "bt0";
const HOST: [u8; 4] = [10, 81, 0, 1];

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A host-side sink on `port` (over IPv6 with `v6`) that prints the byte count when the sender closes.
fn sink(port: u16, v6: bool) -> std::process::Child {
    let (fam, addr) = if v6 { ("AF_INET6", "2001:db8:81::1") } else { ("AF_INET", "10.81.0.1") };
    let py = format!(
        "import socket\ns=socket.socket(socket.{fam}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{addr}', {port})); s.listen(1)\nc,_=s.accept(); n=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    n+=len(d)\nprint(n)\n"
    );
    let c = Command::new("ip").args(["netns", "exec", NS, "python3", "-c", &py]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    c
}

/// A host-side source: connects to `ip:port` (retrying until the stack listens) and writes `bytes`.
fn source(ip: &str, port: u16, bytes: usize) -> std::process::Child {
    let py = format!(
        "import socket, time\nfor i in range(200):\n    try:\n        s = socket.create_connection(('{ip}', {port})); break\n    except OSError: time.sleep(0.02)\nb = memoryview(bytes(1 << 20)); left = {bytes}\nwhile left > 0:\n    n = min(left, len(b)); s.sendall(b[:n]); left -= n\ns.close()\n"
    );
    Command::new("ip").args(["netns", "exec", NS, "python3", "-c", &py]).spawn().unwrap()
}

fn enter_netns() {
    let f = std::fs::File::open(format!("/var/run/netns/{NS}")).unwrap();
    // SAFETY: setns on a valid namespace fd; this process is single-threaded here.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

fn our_stack(offload: bool) -> stack::blocking::Blocking {
    let mac = [0x02, 0, 0, 0, 0x81, 2];
    let dev = if offload { stack::dev::tap::Tap::open_offload(TAP, mac) } else { stack::dev::tap::Tap::open(TAP, mac) }.unwrap();
    let mut cfg = stack::Config::new([10, 81, 0, 2], 24);
    let ours: [u8; 16] = "2001:db8:81::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    cfg.ipv6 = Some(stack::Ipv6Config { addrs: vec![(ours, 64)], accept_ra: false, ..Default::default() });
    stack::blocking::Blocking::new(stack::Stack::new(Box::new(dev), cfg))
}

/// This stack sending `bytes` to a Linux sink: bytes per second.
fn ours_send(bytes: usize, offload: bool, v6: bool, port: u16) -> f64 {
    let child = sink(port, v6);
    let mut b = our_stack(offload);
    let dst: std::net::IpAddr = if v6 { "2001:db8:81::1".parse().unwrap() } else { HOST.into() };
    let h = b.connect(dst, port).unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let t0 = std::time::Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        b.send_all(h, &chunk[..n]).unwrap();
        left -= n;
    }
    b.close(h).unwrap();
    let out = child.wait_with_output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), bytes.to_string(), "the sink got everything");
    bytes as f64 / secs
}

/// This stack receiving `bytes` from a Linux source: bytes per second, from the connection to the end.
fn ours_recv(bytes: usize, offload: bool, v6: bool, port: u16) -> f64 {
    let mut b = our_stack(offload);
    let l = b.stack.tcp_listen(port, 1).unwrap();
    if v6 {
        // The source connects once our address is out of duplicate address detection.
        let t0 = std::time::Instant::now();
        while !b.stack.ipv6_addrs().iter().any(|a| a.2 == "preferred" && a.0[0] == 0x20) && t0.elapsed() < Duration::from_secs(5) {
            b.stack.poll(stack::time::Instant::now());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut src = source(if v6 { "2001:db8:81::2" } else { "10.81.0.2" }, port, bytes);
    let h = b.accept(l).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = vec![0u8; 1 << 18];
    let mut got = 0;
    loop {
        match b.recv(h, &mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("recv: {e}"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = b.close(h);
    let _ = src.wait();
    assert_eq!(got, bytes, "everything arrived");
    bytes as f64 / secs
}

/// smoltcp as its benchmark example sets it up: an Ethernet TAP interface, 64 KiB socket buffers.
fn smol(bytes: usize, send: bool, port: u16) -> f64 {
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
    // A TAP left with offloads on by the previous case would hand smoltcp super-packets: reset it.
    drop(stack::dev::tap::Tap::open(TAP, [2, 0, 0, 0, 0x81, 9]).unwrap());
    let child = if send { Some(sink(port, false)) } else { None };
    let mut device = TunTapInterface::new(TAP, Medium::Ethernet).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&device);
    let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0x81, 3]).into());
    let mut iface = Interface::new(config, &mut device, Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 81, 0, 3), 24)).unwrap();
    });
    let rx = tcp::SocketBuffer::new(vec![0; 65535]);
    let tx = tcp::SocketBuffer::new(vec![0; 65535]);
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(tcp::Socket::new(rx, tx));
    let mut src = None;
    if send {
        sockets.get_mut::<tcp::Socket>(h).connect(iface.context(), (IpAddress::v4(10, 81, 0, 1), port), 49500 + port).unwrap();
    } else {
        sockets.get_mut::<tcp::Socket>(h).listen(port).unwrap();
        src = Some(source("10.81.0.3", port, bytes));
    }
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    let mut t0: Option<std::time::Instant> = None;
    let mut closed = false;
    loop {
        let ts = Instant::now();
        iface.poll(ts, &mut device, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(h);
        if t0.is_none() && s.state() == tcp::State::Established {
            t0 = Some(std::time::Instant::now());
        }
        if send {
            while left > 0 && s.can_send() {
                let n = s.send_slice(&chunk[..left.min(chunk.len())]).unwrap();
                if n == 0 {
                    break;
                }
                left -= n;
            }
            if left == 0 && !closed && s.send_queue() == 0 {
                s.close();
                closed = true;
            }
            if closed && matches!(s.state(), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed) {
                break;
            }
        } else {
            while s.can_recv() {
                let n = s.recv(|b| (b.len(), b.len())).unwrap();
                left = left.saturating_sub(n);
            }
            if left == 0 && !s.may_recv() {
                break;
            }
            if t0.is_some() && !s.is_active() && !s.may_recv() && left > 0 {
                panic!("smoltcp: the connection ended with {left} bytes missing");
            }
        }
        phy_wait(fd, iface.poll_delay(ts, &sockets)).unwrap();
    }
    let secs = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    if let Some(c) = child {
        let out = c.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), bytes.to_string(), "the sink got everything");
    }
    if let Some(mut s) = src {
        let _ = s.wait();
    }
    bytes as f64 / secs
}

fn main() {
    let mut nums = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let bytes = nums.next().unwrap_or(1_000_000_000);
    let runs = nums.next().unwrap_or(5).max(1);
    let _ = Command::new("ip").args(["netns", "del", NS]).stderr(Stdio::null()).status();
    sh(&format!("ip netns add {NS} && ip netns exec {NS} sh -c 'ip link set lo up && ip tuntap add dev {TAP} mode tap && ip addr add 10.81.0.1/24 dev {TAP} && ip -6 addr add 2001:db8:81::1/64 dev {TAP} nodad && ip link set {TAP} up'"));
    enter_netns();
    type Case = (&'static str, &'static str, Box<dyn Fn(u16) -> f64>);
    let cases: Vec<Case> = vec![
        ("nic-stack", "send", Box::new(move |p| ours_send(bytes, false, false, p))),
        ("nic-stack", "receive", Box::new(move |p| ours_recv(bytes, false, false, p))),
        ("nic-stack offload", "send", Box::new(move |p| ours_send(bytes, true, false, p))),
        ("nic-stack offload", "receive", Box::new(move |p| ours_recv(bytes, true, false, p))),
        ("nic-stack offload v6", "send", Box::new(move |p| ours_send(bytes, true, true, p))),
        ("nic-stack offload v6", "receive", Box::new(move |p| ours_recv(bytes, true, true, p))),
        ("smoltcp 0.14", "send", Box::new(move |p| smol(bytes, true, p))),
        ("smoltcp 0.14", "receive", Box::new(move |p| smol(bytes, false, p))),
    ];
    let mut port = 5100u16;
    // TAP_BULK_CASES="offload v6 receive,offload receive" runs only the cases whose "stack dir" ends with
    // one of these (for profiling one path at a time).
    let only: Vec<String> =
        std::env::var("TAP_BULK_CASES").map(|s| s.split(',').map(|x| x.trim().to_string()).collect()).unwrap_or_default();
    let chosen: Vec<&Case> =
        cases.iter().filter(|(st, d, _)| only.is_empty() || only.iter().any(|o| format!("{st} {d}").ends_with(o.as_str()))).collect();
    // Rounds: every case once per round, so that a slow spell of the machine falls on all of them, and
    // ratios can be taken within a round.
    let mut runs_of: Vec<Vec<f64>> = vec![Vec::new(); chosen.len()];
    for round in 0..runs {
        for (i, (stack, dir, f)) in chosen.iter().enumerate() {
            eprintln!("[tap_bulk] round {}/{runs}: {stack} {dir}", round + 1);
            port += 1;
            runs_of[i].push(f(port));
        }
    }
    let results: Vec<(&str, &str, (f64, f64, f64))> =
        chosen.iter().zip(&runs_of).map(|((st, d, _), v)| (*st, *d, median(v.clone()))).collect();
    // The median over rounds of one case's rate over another's in the same round.
    let round_ratio = |a: (&str, &str), b: (&str, &str)| {
        let find = |x: (&str, &str)| chosen.iter().position(|c| c.0 == x.0 && c.1 == x.1);
        match (find(a), find(b)) {
            (Some(i), Some(j)) => median(runs_of[i].iter().zip(&runs_of[j]).map(|(x, y)| x / y).collect()).0,
            _ => f64::NAN,
        }
    };
    println!("TCP bulk transfer of {bytes} bytes between Linux and a userspace stack over one TAP device");
    println!("(median of {runs} runs, lowest-highest; send: stack to Linux, receive: Linux to stack)");
    println!("{:<20} {:<8} {:>10} {:>24}", "stack", "dir", "MB/s", "(min-max)");
    for (s, d, (m, lo, hi)) in &results {
        println!("{:<20} {:<8} {:>10.1} {:>24}", s, d, m / 1e6, format!("({:.1}-{:.1})", lo / 1e6, hi / 1e6));
    }
    let get = |s: &str, d: &str| results.iter().find(|r| r.0 == s && r.1 == d).map(|r| r.2 .0).unwrap_or(f64::NAN);
    println!(
        "TCP over IPv6 / over IPv4 (offload): {:.2}x send, {:.2}x receive (medians of the rates); {:.2}x send, {:.2}x receive (median of each round's ratio)",
        get("nic-stack offload v6", "send") / get("nic-stack offload", "send"),
        get("nic-stack offload v6", "receive") / get("nic-stack offload", "receive"),
        round_ratio(("nic-stack offload v6", "send"), ("nic-stack offload", "send")),
        round_ratio(("nic-stack offload v6", "receive"), ("nic-stack offload", "receive")),
    );
    for ours in ["nic-stack", "nic-stack offload"] {
        println!(
            "{ours} / smoltcp: {:.2}x send, {:.2}x receive",
            get(ours, "send") / get("smoltcp 0.14", "send"),
            get(ours, "receive") / get("smoltcp 0.14", "receive")
        );
    }
    let _ = Command::new("ip").args(["netns", "del", NS]).status();
}
