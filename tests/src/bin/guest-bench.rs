//! Guest-level speed, in one run: iperf3 from a Linux guest (TCG, 1 vCPU) to the host over a TAP in a
//! private namespace and back, through nic-device with wire semantics (waking for every vfio-user message,
//! the default, and reading them on a timer, `--timer-poll 100`) and in its TAP offload mode, QEMU's
//! in-process e1000e (wire semantics: vnet_hdr off) and QEMU's virtio-net with its TAP offloads (vnet_hdr
//! on). Each direction runs RUNS times (default 3), in rounds: every NIC once per round on a freshly booted
//! guest, the round's first NIC rotating, so that each NIC's runs spread over the same minutes as the
//! others'. The table prints the median Mbit/s with the lowest and highest run, and the ratios that
//! compare like with like: nic-device (wire, either way) to QEMU's e1000e, timer polling to waking,
//! nic-device (offload mode) to QEMU's virtio-net. Not a test: nothing is asserted.
//!
//!   `guest-bench [RUNS [NICS]]`   (tools/scripts/guest-bench.sh builds and runs it)
//!
//! NICS picks rows, comma-separated from `wire`, `wire-timer`, `offload`, `e1000e`, `virtio` (all by
//! default); the ratios
//! print only for rows that ran. `GUEST_BENCH_SECS` sets the length of each iperf3 run (default 4), for a
//! profile to watch one direction long enough.
//!
//! A second table says where the host's CPU went during the runs, per thread (from /proc, utime + stime
//! over each run): the guest's vCPU, QEMU's other threads (its main loop, which runs QEMU's own NICs and
//! injects interrupts) and each nic-device thread. A vCPU near 100% means the guest, not the NIC, sets the
//! pace.

use nic_tests::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Nic {
    Ours,
    /// Wire semantics with the vfio-user socket read on a timer (`--timer-poll 100`).
    OursTimer,
    OursOffload,
    QemuE1000e,
    QemuVirtio,
}

impl Nic {
    fn name(self) -> &'static str {
        match self {
            Nic::Ours => "nic-device (wire)",
            Nic::OursTimer => "nic-device (wire, timer-poll)",
            Nic::OursOffload => "nic-device (offload=on)",
            Nic::QemuE1000e => "QEMU e1000e (vnet_hdr off)",
            Nic::QemuVirtio => "QEMU virtio-net (vnet_hdr on)",
        }
    }
}

/// The CPU shares of the roles a guest run has.
mod cpu {
    use nic_tests::cpu::Ticks;

    /// Percent of one CPU per role between two samples `secs` apart: "vCPU" (QEMU's "CPU n/TCG" threads),
    /// "QEMU other" (the rest of a process with a vCPU), and the device's threads by name.
    pub fn shares(before: &Ticks, after: &Ticks, device: &[u32], secs: f64) -> Vec<(String, f64)> {
        let hz = nic_tests::cpu::hz();
        let qemu: Vec<u32> = after.iter().filter(|(_, (n, _))| n.starts_with("CPU ")).map(|((p, _), _)| *p).collect();
        let mut by: Vec<(String, f64)> = Vec::new();
        for ((pid, tid), (name, t)) in after {
            let role = if name.starts_with("CPU ") {
                "vCPU".to_string()
            } else if qemu.contains(pid) {
                "QEMU other".to_string()
            } else if device.contains(pid) {
                name.clone()
            } else {
                continue;
            };
            let d = t.saturating_sub(before.get(&(*pid, *tid)).map_or(0, |b| b.1));
            let pct = d as f64 / hz / secs * 100.0;
            match by.iter_mut().find(|(r, _)| *r == role) {
                Some(e) => e.1 += pct,
                None => by.push((role, pct)),
            }
        }
        by
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (m, v[0], v[n - 1])
}

/// What one direction measured over its runs: Mbit/s, and each run's CPU shares by role.
#[derive(Default)]
struct Dir {
    mbits: Vec<f64>,
    cpu: Vec<Vec<(String, f64)>>,
}

impl Dir {
    fn append(&mut self, mut other: Dir) {
        self.mbits.append(&mut other.mbits);
        self.cpu.append(&mut other.cpu);
    }
}

/// One run each way on a freshly booted guest: (tx = guest to host, rx = host to guest).
fn measure(nic: Nic, secs: u32) -> (Dir, Dir) {
    let ns = Netns::new();
    let tap = "gbtap0";
    let mut opts = GuestOpts { netns: Some(ns.name.clone()), ..Default::default() };
    let nic_kind = match nic {
        Nic::Ours => TapNic::NicDevice { offload: false, args: &[] },
        Nic::OursTimer => TapNic::NicDevice { offload: false, args: &["--timer-poll", "100"] },
        Nic::OursOffload => TapNic::NicDevice { offload: true, args: &[] },
        Nic::QemuE1000e => TapNic::Qemu { model: "e1000e", vnet_hdr: false, modules: "e1000e" },
        Nic::QemuVirtio => TapNic::Qemu { model: "virtio-net-pci", vnet_hdr: true, modules: "virtio_pci,virtio_net" },
    };
    let dev = attach_tap(&ns, tap, nic_kind, &mut opts);
    let mut g = Guest::boot(&opts);
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 2 -W 2 {HOST_IP} > /dev/null"));
    let mut srv = ns.command(std::path::Path::new("iperf3")).args(["-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let device = dev.as_ref().map(|d| nic_tests::cpu::tree(d.child.id())).unwrap_or_default();
    let (mut tx, mut rx) = (Dir::default(), Dir::default());
    for (dir, v) in [("", &mut tx), ("-R", &mut rx)] {
        eprintln!("[guest-bench] {} {}", nic.name(), if dir.is_empty() { "guest -> host" } else { "host -> guest" });
        let procs: Vec<u32> = nic_tests::cpu::tree(g.pid()).into_iter().chain(device.iter().copied()).collect();
        let (t0, before) = (Instant::now(), nic_tests::cpu::ticks(&procs));
        let (_, out) = g.run(&format!("iperf3 -c {HOST_IP} -t {secs} -f m {dir}"), Duration::from_secs(120 + u64::from(secs)));
        let after = nic_tests::cpu::ticks(&procs);
        match iperf3_mbits(&out) {
            Some(m) => {
                v.mbits.push(m);
                v.cpu.push(cpu::shares(&before, &after, &device, t0.elapsed().as_secs_f64()));
            }
            None => eprintln!("{} {dir}: no result: {out}", nic.name()),
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
    let pick = std::env::args().nth(2).unwrap_or_else(|| "wire,wire-timer,offload,e1000e,virtio".into());
    let all = [
        ("wire", Nic::Ours),
        ("wire-timer", Nic::OursTimer),
        ("offload", Nic::OursOffload),
        ("e1000e", Nic::QemuE1000e),
        ("virtio", Nic::QemuVirtio),
    ];
    let mut nics = Vec::new();
    for p in pick.split(',') {
        match all.iter().find(|(n, _)| *n == p) {
            Some(&(_, nic)) => nics.push(nic),
            None => {
                eprintln!("guest-bench: unknown NIC {p} (wire, wire-timer, offload, e1000e, virtio)");
                std::process::exit(2);
            }
        }
    }
    // Round by round, each NIC once per round on a fresh guest, the first NIC of a round rotating: this
    // machine changes pace from one minute to the next, and NICs measured one after the other would each
    // get a different minute.
    let mut rows: Vec<(Nic, Dir, Dir)> = nics.iter().map(|&n| (n, Dir::default(), Dir::default())).collect();
    for r in 0..runs {
        for k in 0..rows.len() {
            let row = &mut rows[(r + k) % nics.len()];
            eprintln!("[guest-bench] round {}/{runs}: {} ...", r + 1, row.0.name());
            let (tx, rx) = measure(row.0, secs);
            row.1.append(tx);
            row.2.append(rx);
        }
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
        let ((t, tm), (r, rm)) = (cell(&tx.mbits), cell(&rx.mbits));
        println!("{:32} {:>26} {:>26}", nic.name(), t, r);
        med.push((tm, rm));
    }
    println!("host CPU during the runs (median % of one CPU, per thread role)");
    for (nic, tx, rx) in &rows {
        for (label, d) in [("guest -> host", tx), ("host -> guest", rx)] {
            let mut roles: Vec<String> = Vec::new();
            for run in &d.cpu {
                for (r, _) in run {
                    if !roles.contains(r) {
                        roles.push(r.clone());
                    }
                }
            }
            // The guest's first, then the device's threads by name.
            roles.sort_by_key(|r| (r != "vCPU", r != "QEMU other", r.clone()));
            let cells: Vec<String> = roles
                .iter()
                .map(|r| {
                    let v: Vec<f64> = d.cpu.iter().map(|run| run.iter().find(|x| x.0 == *r).map_or(0.0, |x| x.1)).collect();
                    format!("{r} {:.0}%", median(v).0)
                })
                .collect();
            let cells = if cells.is_empty() { "no result".to_string() } else { cells.join(", ") };
            println!("{:32} {:13}  {cells}", nic.name(), label);
        }
    }
    let row = |n: Nic| rows.iter().position(|r| r.0 == n);
    for (ours, theirs) in [
        (Nic::Ours, Nic::QemuE1000e),
        (Nic::OursTimer, Nic::QemuE1000e),
        (Nic::OursTimer, Nic::Ours),
        (Nic::OursOffload, Nic::QemuVirtio),
        (Nic::Ours, Nic::QemuVirtio),
    ] {
        let (Some(a), Some(b)) = (row(ours), row(theirs)) else { continue };
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
        println!("{} / {}: {} tx, {} rx", ours.name(), theirs.name(), ratio(med[a].0, med[b].0), ratio(med[a].1, med[b].1));
    }
}

#[cfg(test)]
mod tests {
    use super::cpu;

    /// The roles: QEMU's vCPU threads, the rest of QEMU, the device's threads by name; nothing else.
    #[test]
    fn shares_are_grouped_by_role() {
        let hz = nic_tests::cpu::hz() as u64;
        let t = |v: &[((u32, u32), &str, u64)]| -> nic_tests::cpu::Ticks { v.iter().map(|(k, n, t)| (*k, (n.to_string(), *t))).collect() };
        let before = t(&[((10, 11), "CPU 0/TCG", 5), ((10, 10), "qemu-system-x86", 0), ((20, 20), "nic-device", 0), ((30, 30), "bash", 0)]);
        let after = t(&[
            ((10, 11), "CPU 0/TCG", 5 + hz * 9 / 10),
            ((10, 10), "qemu-system-x86", hz / 10),
            ((10, 12), "worker", hz / 10),
            ((20, 20), "nic-device", hz / 4),
            ((20, 21), "nic-datapath", hz / 2),
            ((30, 30), "bash", hz),
        ]);
        let mut s = cpu::shares(&before, &after, &[20], 1.0);
        s.sort_by(|a, b| a.0.cmp(&b.0));
        let s: Vec<(String, u64)> = s.into_iter().map(|(r, p)| (r, p.round() as u64)).collect();
        let want = [("QEMU other", 20), ("nic-datapath", 50), ("nic-device", 25), ("vCPU", 90)];
        assert_eq!(s, want.iter().map(|(r, p)| (r.to_string(), *p)).collect::<Vec<_>>());
    }
}
