//! Guest-level speed, in one run: iperf3 from a Linux guest (TCG, 1 vCPU) to the host over a TAP in a
//! private namespace and back, through nic-device with wire semantics and in its TAP offload mode, QEMU's
//! in-process e1000e (wire semantics: vnet_hdr off) and QEMU's virtio-net with its TAP offloads (vnet_hdr
//! on). Each direction runs RUNS times (default 3); the table prints the median Mbit/s with the lowest and
//! highest run, and the ratios that compare like with like: nic-device (wire) to QEMU's e1000e, nic-device
//! (offload mode) to QEMU's virtio-net. Not a test: nothing is asserted.
//!
//!   guest-bench [RUNS [NICS]]   (tools/scripts/guest-bench.sh builds and runs it)
//!
//! NICS picks rows, comma-separated from `wire`, `offload`, `e1000e`, `virtio` (all by default); the ratios
//! print only for rows that ran. `GUEST_BENCH_SECS` sets the length of each iperf3 run (default 4), for a
//! profile or a thread sampler to watch one direction long enough.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Nic {
    Ours,
    OursOffload,
    QemuE1000e,
    QemuVirtio,
}

impl Nic {
    fn name(self) -> &'static str {
        match self {
            Nic::Ours => "nic-device (wire)",
            Nic::OursOffload => "nic-device (offload=on)",
            Nic::QemuE1000e => "QEMU e1000e (vnet_hdr off)",
            Nic::QemuVirtio => "QEMU virtio-net (vnet_hdr on)",
        }
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (m, v[0], v[n - 1])
}

/// (tx = guest to host, rx = host to guest) Mbit/s of each run.
fn measure(nic: Nic, runs: usize, secs: u32) -> (Vec<f64>, Vec<f64>) {
    let ns = Netns::new();
    let tap = "gbtap0";
    let mut opts = GuestOpts { netns: Some(ns.name.clone()), ..Default::default() };
    let nic_kind = match nic {
        Nic::Ours => TapNic::NicDevice { offload: false },
        Nic::OursOffload => TapNic::NicDevice { offload: true },
        Nic::QemuE1000e => TapNic::Qemu { model: "e1000e", vnet_hdr: false, modules: "e1000e" },
        Nic::QemuVirtio => TapNic::Qemu { model: "virtio-net-pci", vnet_hdr: true, modules: "virtio_pci,virtio_net" },
    };
    let _dev = attach_tap(&ns, tap, nic_kind, &mut opts);
    let mut g = Guest::boot(&opts);
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 2 -W 2 {HOST_IP} > /dev/null"));
    let mut srv = ns.command(std::path::Path::new("iperf3")).args(["-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (mut tx, mut rx) = (Vec::new(), Vec::new());
    for r in 0..runs {
        for (dir, v) in [("", &mut tx), ("-R", &mut rx)] {
            eprintln!("[guest-bench] {} run {r} {}", nic.name(), if dir.is_empty() { "guest -> host" } else { "host -> guest" });
            let (_, out) = g.run(&format!("iperf3 -c {HOST_IP} -t {secs} -f m {dir}"), Duration::from_secs(120 + u64::from(secs)));
            match iperf3_mbits(&out) {
                Some(m) => v.push(m),
                None => eprintln!("{} run {r} {dir}: no result: {out}", nic.name()),
            }
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    (tx, rx)
}

fn main() {
    init_logs();
    require_rig();
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let secs: u32 = match std::env::var("GUEST_BENCH_SECS") {
        Ok(v) => match v.parse() {
            Ok(s) if (1..=3600).contains(&s) => s,
            _ => {
                eprintln!("guest-bench: GUEST_BENCH_SECS must be 1-3600 seconds, not {v:?}");
                std::process::exit(2);
            }
        },
        Err(_) => 4,
    };
    let pick = std::env::args().nth(2).unwrap_or_else(|| "wire,offload,e1000e,virtio".into());
    let all = [("wire", Nic::Ours), ("offload", Nic::OursOffload), ("e1000e", Nic::QemuE1000e), ("virtio", Nic::QemuVirtio)];
    let mut nics = Vec::new();
    for p in pick.split(',') {
        match all.iter().find(|(n, _)| *n == p) {
            Some(&(_, nic)) => nics.push(nic),
            None => {
                eprintln!("guest-bench: unknown NIC {p} (wire, offload, e1000e, virtio)");
                std::process::exit(2);
            }
        }
    }
    let mut rows = Vec::new();
    for nic in nics {
        eprintln!("[guest-bench] {} ({runs} runs each way) ...", nic.name());
        let (tx, rx) = measure(nic, runs, secs);
        rows.push((nic, tx, rx));
    }
    println!("guest iperf3 (Linux guest under TCG, 1 vCPU; median Mbit/s of {runs} runs of {secs} s, lowest-highest)");
    println!("{:32} {:>26} {:>26}", "NIC", "guest -> host", "host -> guest");
    let mut med = Vec::new();
    for (nic, tx, rx) in &rows {
        let cell = |v: &Vec<f64>| {
            if v.is_empty() {
                return ("no result".to_string(), 0.0);
            }
            let (m, lo, hi) = median(v.clone());
            (format!("{m:.0} ({lo:.0}-{hi:.0})"), m)
        };
        let ((t, tm), (r, rm)) = (cell(tx), cell(rx));
        println!("{:32} {:>26} {:>26}", nic.name(), t, r);
        med.push((tm, rm));
    }
    let row = |n: Nic| rows.iter().position(|r| r.0 == n);
    for (ours, theirs) in [(Nic::Ours, Nic::QemuE1000e), (Nic::OursOffload, Nic::QemuVirtio), (Nic::Ours, Nic::QemuVirtio)] {
        let (Some(a), Some(b)) = (row(ours), row(theirs)) else { continue };
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
        println!("{} / {}: {} tx, {} rx", ours.name(), theirs.name(), ratio(med[a].0, med[b].0), ratio(med[a].1, med[b].1));
    }
}
