//! Forwarding rate: UDP packets of 64 and 1500 bytes (on the wire, without FCS) sent as fast as one
//! socket can from one network namespace to another, through this stack's router (two TAP devices, one per
//! side) and through the Linux kernel (a namespace with forwarding on between two veth pairs), in the same
//! run. Each case RUNS times (default 5); medians of the packets per second the far side received, the
//! lowest and highest run, the offered rate beside them, and the ratio. Needs root.
//!
//! With netfilter: our router with an empty rule set against none at all (the cost of the hooks), and
//! both routers masquerading with 10,000 tracked flows (one datagram from each of 10,000 source ports
//! before the runs) against each other: ours with `tools/topologies/nat.nft`'s kind of rules, Linux with the
//! same in nft (installed with apt if missing).
//!
//!   cargo bench -p nic-stack --bench forward [-- SECONDS [RUNS]]

mod common;
use common::{enter, median, udp_flood};
use stack::netfilter::Netfilter;
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
    let offered = udp_flood(from, &format!("{src_ip}:0"), format!("{to_ip}:9000").parse().unwrap(), payload, secs);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    (offered, rx.join().unwrap())
}

/// Netfilter on a router: none, an empty rule set, or masquerading out of `out` with a stateful forward
/// filter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nf {
    None,
    Empty,
    Nat,
}

fn nat_rules(inside: &str, out: &str) -> String {
    format!(
        "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{out}\" masquerade\n  }}\n}}\n\
         table inet filter {{\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n    ct state established,related accept\n    iifname \"{inside}\" accept\n  }}\n}}\n"
    )
}

/// One datagram from each of `n` source ports, so that a NAT router tracks `n` flows.
fn flows(from: &str, src_ip: &str, to_ip: &str, n: usize) {
    let (ns, src, dst) = (from.to_string(), src_ip.to_string(), format!("{to_ip}:9001"));
    std::thread::spawn(move || {
        enter(&ns);
        // Distinct source ports, 20000 up: n flows, not n draws from the ephemeral range.
        for i in 0..n {
            if let Ok(s) = UdpSocket::bind((src.as_str(), 20_000 + i as u16)) {
                let _ = s.send_to(b"flow", &dst);
            }
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

const FLOWS: usize = 10_000;

/// Two hosts (A, B) on either side of our router, which runs in a thread of its own in namespace N.
fn ours(payload: usize, secs: f64, runs: usize, nf: Nf) -> Vec<(f64, f64)> {
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
        r.ifaces[0].set_name("ta");
        r.ifaces[1].set_name("tb");
        match nf {
            Nf::None => {}
            Nf::Empty => r.set_netfilter(Netfilter::default()),
            Nf::Nat => {
                let mut f = Netfilter::default();
                f.load(&nat_rules("ta", "tb")).unwrap();
                r.set_netfilter(f);
            }
        }
        while !s2.load(Ordering::Relaxed) {
            if !r.poll(StackInstant::now()) {
                let fds = r.ifaces.iter().map(|s| stack::dev::Device::raw_fd(&s.dev)).collect();
                stack::dev::bridge::wait_any(fds, Duration::from_millis(5));
            }
        }
        let tracked = r.nf.as_ref().map_or(0, |f| f.borrow().ct.len());
        (r.stats.forwarded, tracked)
    });
    std::thread::sleep(Duration::from_millis(500));
    sh("ip netns exec fwn sh -c 'ip link set ta netns fwa && ip link set tb netns fwb'");
    sh("ip netns exec fwa sh -c 'ip link set lo up && ip addr add 10.98.1.2/24 dev ta && ip link set ta up && ip route add default via 10.98.1.1'");
    sh("ip netns exec fwb sh -c 'ip link set lo up && ip addr add 10.98.2.2/24 dev tb && ip link set tb up && ip route add default via 10.98.2.1'");
    // Resolve both neighbours once, so that the runs measure forwarding.
    quiet("ip netns exec fwa ping -c 2 -i 0.2 -W 1 10.98.2.2");
    if nf == Nf::Nat {
        flows("fwa", "10.98.1.2", "10.98.2.2", FLOWS);
    }
    let out = (0..runs).map(|_| blast("fwa", "fwb", "10.98.1.2", "10.98.2.2", payload, secs)).collect();
    stop.store(true, Ordering::Relaxed);
    let (_, tracked) = router.join().unwrap();
    if nf == Nf::Nat {
        eprintln!("  (ours: {tracked} flows tracked at the end)");
    }
    quiet("ip netns del fwn; ip netns del fwa; ip netns del fwb");
    out
}

/// The same hosts with the Linux kernel forwarding between them.
fn kernel(payload: usize, secs: f64, runs: usize, nf: Nf) -> Vec<(f64, f64)> {
    quiet("ip netns del fkr; ip netns del fka; ip netns del fkb");
    sh("ip netns add fkr && ip netns add fka && ip netns add fkb");
    sh("ip link add va netns fka type veth peer name ra netns fkr && ip link add vb netns fkb type veth peer name rb netns fkr");
    sh("ip netns exec fkr sh -c 'ip link set lo up && ip addr add 10.99.1.1/24 dev ra && ip addr add 10.99.2.1/24 dev rb && ip link set ra up && ip link set rb up && sysctl -qw net.ipv4.ip_forward=1'");
    sh("ip netns exec fka sh -c 'ip link set lo up && ip addr add 10.99.1.2/24 dev va && ip link set va up && ip route add default via 10.99.1.1'");
    sh("ip netns exec fkb sh -c 'ip link set lo up && ip addr add 10.99.2.2/24 dev vb && ip link set vb up && ip route add default via 10.99.2.1'");
    if nf == Nf::Nat {
        let rules = std::env::temp_dir().join("forward-bench.nft");
        std::fs::write(&rules, nat_rules("ra", "rb")).unwrap();
        sh(&format!("ip netns exec fkr nft -f {}", rules.display()));
    }
    quiet("ip netns exec fka ping -c 2 -i 0.2 -W 1 10.99.2.2");
    if nf == Nf::Nat {
        flows("fka", "10.99.1.2", "10.99.2.2", FLOWS);
        let n = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").ok();
        let c = Command::new("ip").args(["netns", "exec", "fkr", "cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).output();
        let count = c.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).or(n).unwrap_or_default();
        eprintln!("  (Linux: {count} flows tracked before the runs)");
    }
    let out = (0..runs).map(|_| blast("fka", "fkb", "10.99.1.2", "10.99.2.2", payload, secs)).collect();
    quiet("ip netns del fkr; ip netns del fka; ip netns del fkb");
    out
}

/// nft, installed from the Debian archive if missing; false (and said) when it cannot be.
fn have_nft() -> bool {
    let ok = || Command::new("nft").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if ok() {
        return true;
    }
    eprintln!("[forward] installing nftables for the Linux NAT case (apt-get)");
    quiet("DEBIAN_FRONTEND=noninteractive apt-get install -y nftables");
    ok()
}

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<f64>().ok());
    let secs = args.next().unwrap_or(2.0);
    let runs = args.next().map(|r| r as usize).unwrap_or(5).max(1);
    println!("UDP forwarding between two namespaces, {secs} s per run, median of {runs} runs (lowest-highest)");
    println!("{:<26} {:>10} {:>26} {:>14}", "path", "frame", "received pkt/s", "offered pkt/s");
    // 64 and 1500 bytes on the wire: Ethernet 14 + IPv4 20 + UDP 8 + payload.
    let nft = have_nft();
    type Run = fn(usize, f64, usize, Nf) -> Vec<(f64, f64)>;
    for (frame, payload) in [(64usize, 22usize), (1500, 1458)] {
        let mut meds = std::collections::HashMap::new();
        let cases: [(&str, Run, Nf, bool); 5] = [
            ("nic-stack router", ours, Nf::None, false),
            ("nic-stack, empty netfilter", ours, Nf::Empty, false),
            ("nic-stack, NAT 10k flows", ours, Nf::Nat, false),
            ("Linux kernel", kernel, Nf::None, true),
            ("Linux, nft NAT 10k flows", kernel, Nf::Nat, true),
        ];
        for (name, run, nf, linux) in cases {
            if linux && nf == Nf::Nat && !nft {
                println!("{:<26} {:>10} {:>26}", name, frame, "not measured: no nft");
                continue;
            }
            let r = run(payload, secs, runs, nf);
            let (m, lo, hi) = median(r.iter().map(|x| x.1).collect());
            let (off, _, _) = median(r.iter().map(|x| x.0).collect());
            println!("{:<26} {:>10} {:>26} {:>14.0}", name, frame, format!("{m:.0} ({lo:.0}-{hi:.0})"), off);
            meds.insert(name, m);
        }
        let ratio = |a: &str, b: &str| match (meds.get(a), meds.get(b)) {
            (Some(x), Some(y)) if *y > 0.0 => format!("{:.2}", x / y),
            _ => "-".into(),
        };
        println!("{:<26} {:>10} {:>26}", "ratio ours / kernel", frame, ratio("nic-stack router", "Linux kernel"));
        println!("{:<26} {:>10} {:>26}", "empty netfilter / none", frame, ratio("nic-stack, empty netfilter", "nic-stack router"));
        println!("{:<26} {:>10} {:>26}", "NAT: ours / Linux", frame, ratio("nic-stack, NAT 10k flows", "Linux, nft NAT 10k flows"));
    }
}
