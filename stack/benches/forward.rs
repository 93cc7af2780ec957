//! Forwarding rate: UDP packets of 64 and 1500 bytes (on the wire, without FCS) sent as fast as one
//! socket can from one network namespace to another, through this stack's router (two TAP devices, one per
//! side) and through the Linux kernel (a namespace with forwarding on between two veth pairs), in the same
//! run. Each case RUNS times (default 5); medians of the packets per second the far side received, the
//! lowest and highest run, the offered rate beside them, and the ratio. Needs root.
//!
//!   cargo bench -p nic-stack --bench forward [-- SECONDS [RUNS]]

mod common;
use common::median;
use stack::router::Router;
use stack::time::Instant as StackInstant;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn quiet(cmd: &str) {
    let _ = Command::new("sh").arg("-c").arg(cmd).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Moves the calling thread into namespace `ns` (setns is per thread).
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Sends UDP datagrams of `payload` bytes from namespace `from` to `to_ip` for `secs`, while a receiver in
/// namespace `to` counts them: (offered, received) packets per second.
fn blast(from: &str, to: &str, src_ip: &str, to_ip: &str, payload: usize, secs: f64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (to_ns, bind) = (to.to_string(), format!("{to_ip}:9000"));
    let s2 = stop.clone();
    let rx = std::thread::spawn(move || {
        enter(&to_ns);
        let s = UdpSocket::bind(&bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while !s2.load(Ordering::Relaxed) {
            if s.recv(&mut buf).is_ok() {
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
        }
        let span = first.map(|f| last.duration_since(f).as_secs_f64()).unwrap_or(0.0);
        if span > 0.0 {
            n as f64 / span
        } else {
            0.0
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (from_ns, src, dst) = (from.to_string(), format!("{src_ip}:0"), format!("{to_ip}:9000"));
    let tx = std::thread::spawn(move || {
        enter(&from_ns);
        let s = UdpSocket::bind(&src).unwrap();
        s.connect(&dst).unwrap();
        let data = vec![0x5au8; payload];
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..64 {
                if s.send(&data).is_ok() {
                    n += 1;
                }
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    });
    let offered = tx.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    (offered, rx.join().unwrap())
}

/// Two hosts (A, B) on either side of our router, which runs in a thread of its own in namespace N.
fn ours(payload: usize, secs: f64, runs: usize) -> Vec<(f64, f64)> {
    quiet("ip netns del fwn; ip netns del fwa; ip netns del fwb");
    sh("ip netns add fwn && ip netns add fwa && ip netns add fwb && ip netns exec fwn sh -c 'ip tuntap add dev ta mode tap && ip tuntap add dev tb mode tap'");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let router = std::thread::spawn(move || {
        enter("fwn");
        let mk = |tap: &str, mac: [u8; 6], ip: [u8; 4]| {
            let dev = stack::dev::tap::Tap::open(tap, mac).unwrap();
            stack::Stack::new(Box::new(dev), stack::Config::new(ip, 24))
        };
        let mut r = Router::new(vec![mk("ta", [2, 0, 0, 0, 0xfa, 1], [10, 98, 1, 1]), mk("tb", [2, 0, 0, 0, 0xfb, 1], [10, 98, 2, 1])]);
        while !s2.load(Ordering::Relaxed) {
            if !r.poll(StackInstant::now()) {
                let fds = r.ifaces.iter().map(|s| stack::dev::Device::raw_fd(&s.dev)).collect();
                stack::dev::bridge::wait_any(fds, Duration::from_millis(5));
            }
        }
        r.stats.forwarded
    });
    std::thread::sleep(Duration::from_millis(500));
    sh("ip netns exec fwn sh -c 'ip link set ta netns fwa && ip link set tb netns fwb'");
    sh("ip netns exec fwa sh -c 'ip link set lo up && ip addr add 10.98.1.2/24 dev ta && ip link set ta up && ip route add default via 10.98.1.1'");
    sh("ip netns exec fwb sh -c 'ip link set lo up && ip addr add 10.98.2.2/24 dev tb && ip link set tb up && ip route add default via 10.98.2.1'");
    // Resolve both neighbours once, so that the runs measure forwarding.
    quiet("ip netns exec fwa ping -c 2 -i 0.2 -W 1 10.98.2.2");
    let out = (0..runs).map(|_| blast("fwa", "fwb", "10.98.1.2", "10.98.2.2", payload, secs)).collect();
    stop.store(true, Ordering::Relaxed);
    let _ = router.join();
    quiet("ip netns del fwn; ip netns del fwa; ip netns del fwb");
    out
}

/// The same hosts with the Linux kernel forwarding between them.
fn kernel(payload: usize, secs: f64, runs: usize) -> Vec<(f64, f64)> {
    quiet("ip netns del fkr; ip netns del fka; ip netns del fkb");
    sh("ip netns add fkr && ip netns add fka && ip netns add fkb");
    sh("ip link add va netns fka type veth peer name ra netns fkr && ip link add vb netns fkb type veth peer name rb netns fkr");
    sh("ip netns exec fkr sh -c 'ip link set lo up && ip addr add 10.99.1.1/24 dev ra && ip addr add 10.99.2.1/24 dev rb && ip link set ra up && ip link set rb up && sysctl -qw net.ipv4.ip_forward=1'");
    sh("ip netns exec fka sh -c 'ip link set lo up && ip addr add 10.99.1.2/24 dev va && ip link set va up && ip route add default via 10.99.1.1'");
    sh("ip netns exec fkb sh -c 'ip link set lo up && ip addr add 10.99.2.2/24 dev vb && ip link set vb up && ip route add default via 10.99.2.1'");
    quiet("ip netns exec fka ping -c 2 -i 0.2 -W 1 10.99.2.2");
    let out = (0..runs).map(|_| blast("fka", "fkb", "10.99.1.2", "10.99.2.2", payload, secs)).collect();
    quiet("ip netns del fkr; ip netns del fka; ip netns del fkb");
    out
}

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<f64>().ok());
    let secs = args.next().unwrap_or(2.0);
    let runs = args.next().map(|r| r as usize).unwrap_or(5).max(1);
    println!("UDP forwarding between two namespaces, {secs} s per run, median of {runs} runs (lowest-highest)");
    println!("{:<26} {:>10} {:>26} {:>14}", "path", "frame", "received pkt/s", "offered pkt/s");
    // 64 and 1500 bytes on the wire: Ethernet 14 + IPv4 20 + UDP 8 + payload.
    for (frame, payload) in [(64usize, 22usize), (1500, 1458)] {
        let mut meds = Vec::new();
        for (name, runs_of) in [("nic-stack router", ours as fn(usize, f64, usize) -> Vec<(f64, f64)>), ("Linux kernel", kernel)] {
            let r = runs_of(payload, secs, runs);
            let (m, lo, hi) = median(r.iter().map(|x| x.1).collect());
            let (off, _, _) = median(r.iter().map(|x| x.0).collect());
            println!("{:<26} {:>10} {:>26} {:>14.0}", name, frame, format!("{m:.0} ({lo:.0}-{hi:.0})"), off);
            meds.push(m);
        }
        println!("{:<26} {:>10} {:>26.2}", "ratio ours / kernel", frame, meds[0] / meds[1]);
    }
}
