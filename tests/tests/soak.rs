//! Soak and fault tests: the device under clients that die, drivers that reset under load, long frame runs
//! and a lossy bulk transfer. Short versions run with every test; `NIC_SOAK=1` (`tools/scripts/test.sh
//! --soak`) runs the full lengths. Each prints a `soak:` line with its figures.

use nic_tests::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn soak() -> bool {
    std::env::var_os("NIC_SOAK").is_some_and(|v| v != "0")
}

/// (open fds, resident KiB) of a process.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Waits until the device log shows `n` client disconnects.
fn wait_disconnects(dev: &Device, n: usize) {
    let t0 = Instant::now();
    while dev.log_text().matches("client disconnected").count() < n {
        assert!(t0.elapsed() < Duration::from_secs(30), "the device did not notice the client going away");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// QEMU is SIGKILLed in the middle of an iperf3 transfer, again and again, and a new QEMU attaches to the
/// same device process each time: every new guest passes traffic, and the device's fds and memory come
/// back to where they were.
#[test]
fn qemu_killed_during_iperf3_and_a_new_one_attaches() {
    init_logs();
    let _l = guest_lock();
    let cycles = if soak() { 100 } else { 3 };
    let rig = TapRig::new(&[]);
    rig.ns.must("sysctl -qw net.ipv6.conf.nictap0.disable_ipv6=1");
    // An iperf3 server per guest: one whose client was killed stays busy until its own timeout.
    let server = |port: u16| {
        rig.ns
            .command(Path::new("iperf3"))
            .args(["-s", "-B", HOST_IP, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let pid = rig.dev.child.id();
    let opts = GuestOpts { sockets: vec![rig.socket()], ..Default::default() };
    let mut baseline = None;
    let mut after = (0, 0);
    let t0 = Instant::now();
    for cycle in 0..cycles {
        let port = 5300 + cycle as u16;
        let mut iperf = server(port);
        let mut g = Guest::boot(&opts);
        g.link_up("eth0", &format!("{GUEST_IP}/24"));
        let out = g.must(&format!("ping -c 3 -i 0.2 -W 2 {HOST_IP}"));
        assert!(zero_loss(&out), "cycle {cycle}: {out}");
        g.send(&format!("iperf3 -c {HOST_IP} -p {port} -t 60 >/dev/null 2>&1 &"));
        // Somewhere in the transfer: 1 to 2.5 s in.
        std::thread::sleep(Duration::from_millis(1000 + (cycle as u64 * 373) % 1500));
        // SIGKILL: no DMA_UNMAP, no goodbye; the device learns from the closed socket.
        g.kill();
        let _ = iperf.kill();
        let _ = iperf.wait();
        wait_disconnects(&rig.dev, cycle + 1);
        std::thread::sleep(Duration::from_millis(200));
        let now = fds_and_rss(pid);
        if cycle == 0 {
            baseline = Some(now);
        }
        after = now;
        if cycles > 10 && cycle % 10 == 9 {
            eprintln!("soak: kill cycle {} of {cycles}, device fds {} rss {} KiB, {:?}", cycle + 1, now.0, now.1, t0.elapsed());
        }
    }
    // One more guest after the last kill passes traffic too.
    let mut iperf = server(5299);
    let mut g = Guest::boot(&opts);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    let out = g.must(&format!("iperf3 -c {HOST_IP} -p 5299 -t 2 -f m"));
    assert!(out.contains("receiver"), "{out}");
    drop(g);
    let _ = iperf.kill();
    let _ = iperf.wait();
    let (fd0, rss0) = baseline.unwrap_or_default();
    eprintln!(
        "soak: {cycles} QEMU kill cycles during iperf3 in {:?}: device fds {fd0} -> {}, RSS {rss0} -> {} KiB",
        t0.elapsed(),
        after.0,
        after.1
    );
    assert!(rig.dev.child.id() == pid && rig.dev.log_text().matches("client connected").count() > cycles);
    assert_eq!(after.0, fd0, "fds leak across clients");
    assert!(after.1 <= rss0 + 16 * 1024, "RSS grew from {rss0} to {} KiB", after.1);
}

/// The guest's driver resets the card again and again while iperf3 runs: link down/up and module
/// unload/reload, alternating. After every reset the link comes back and the host answers.
#[test]
fn guest_driver_resets_under_load() {
    init_logs();
    let _l = guest_lock();
    let resets = if soak() { 100 } else { 4 };
    let rig = TapRig::new(&[]);
    rig.ns.must("sysctl -qw net.ipv6.conf.nictap0.disable_ipv6=1");
    let mut iperf =
        rig.ns.command(Path::new("iperf3")).args(["-s", "-B", HOST_IP]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    let t0 = Instant::now();
    let script = format!(
        "ok=0; bad=0; for i in $(seq {resets}); do \
           iperf3 -c {HOST_IP} -t 3 >/dev/null 2>&1 & sleep 1; \
           if [ $((i % 2)) = 0 ]; then ip link set eth0 down; sleep 0.2; ip link set eth0 up; \
           else rmmod e1000e; modprobe e1000e; sleep 0.5; ip link set eth0 up; ip addr add {GUEST_IP}/24 dev eth0 2>/dev/null; fi; \
           for t in $(seq 100); do [ \"$(cat /sys/class/net/eth0/carrier 2>/dev/null)\" = 1 ] && break; sleep 0.1; done; \
           if ping -c 1 -W 3 {HOST_IP} >/dev/null 2>&1; then ok=$((ok+1)); else bad=$((bad+1)); fi; \
           wait; \
         done; echo \"resets={resets} ok=$ok bad=$bad\""
    );
    let (rc, out) = g.run(&script, Duration::from_secs(60 + 30 * resets as u64));
    assert_eq!(rc, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with("resets=")).unwrap_or_else(|| panic!("{out}"));
    eprintln!("soak: {line} in {:?}", t0.elapsed());
    assert_eq!(line, format!("resets={resets} ok={resets} bad=0"), "{out}");
    let out = g.must(&format!("iperf3 -c {HOST_IP} -t 2 -f m"));
    assert!(out.contains("receiver"), "traffic after the resets: {out}");
    let _ = iperf.kill();
    let _ = iperf.wait();
}

/// Sequence-numbered frames through the driver and the device (loopback backend): none lost, duplicated,
/// reordered or corrupted.
#[test]
fn sequence_numbered_frames_through_the_driver_device_pair() {
    let count: u64 = if soak() { 10_000_000 } else { 300_000 };
    let s = std::env::temp_dir().join(format!("{}.sock", unique("soakframes")));
    let d = Device::start(None, &s, &["--backend", "loopback"]);
    let t0 = Instant::now();
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "loopback-test", "--count", &count.to_string(), "--size", "64"]);
    assert!(ok, "{out}");
    let (received, lost, dup, corrupt) =
        (report_field(&out, "received"), report_field(&out, "lost"), report_field(&out, "duplicates"), report_field(&out, "corrupt"));
    let reordered = report_field(&out, "out-of-order");
    eprintln!(
        "soak: {count} frames in {:?}: received {received}, lost {lost}, duplicates {dup}, corrupt {corrupt}, out of order {reordered}",
        t0.elapsed()
    );
    assert_eq!((received, lost, dup, corrupt, reordered), (count, 0, 0, 0, 0), "{out}");
    drop(d);
}

fn sha256(path: &Path) -> String {
    sh(&format!("sha256sum {}", path.display())).1.split_whitespace().next().unwrap_or("").to_string()
}

/// A bulk TCP transfer from Linux through nic-device and the userspace driver into the stack, with 1% of
/// frames lost both ways (the stack's own impairment, since this host has no netem): the file arrives
/// intact.
#[test]
fn bulk_transfer_through_driver_and_device_with_one_percent_loss() {
    let mb: usize = if soak() { 1024 } else { 20 };
    let ns = Netns::new();
    let dir: PathBuf = std::env::temp_dir().join(unique("soakget"));
    std::fs::create_dir_all(&dir).unwrap();
    let (rc, out) = sh(&format!("head -c {mb}M /dev/urandom > {}", dir.join("blob").display()));
    assert_eq!(rc, 0, "{out}");
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("soakget")));
    let dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tap0"]);
    ns.must("ip addr add 10.79.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    let mut srv = ns.http_server("10.79.0.1", &dir);
    let got = dir.join("got");
    let t0 = Instant::now();
    let out = ns
        .command(&bin("nic-lab"))
        .args([
            "--vfio-user",
            sock.to_str().unwrap(),
            "--ip",
            "10.79.0.2/24",
            "--impair",
            "loss=1,seed=11",
            "get",
            "http://10.79.0.1:8000/blob",
            "-o",
        ])
        .arg(&got)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let _ = srv.kill();
    let _ = srv.wait();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let ok = sha256(&got) == sha256(&dir.join("blob"));
    eprintln!("soak: {mb} MB through driver and device with 1% loss in {secs:.1} s ({:.1} MB/s), sha256 intact: {ok}", mb as f64 / secs);
    assert!(ok, "sha256 differs");
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
