//! The Rust stack against the Linux kernel's: over a TAP device in a namespace this test creates, and over
//! the whole chain stack -> driver -> nic-device (TAP backend) -> Linux.

use nic_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn stack_ping(ns: &Netns, args: &[&str]) -> std::process::Child {
    ns.command(&bin("nic-lab")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(c: std::process::Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn stack_on_a_tap_pings_linux_and_answers_its_pings() {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.80.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let c = stack_ping(&ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "ping", "10.80.0.1", "-c", "20", "-i", "0.2"]);
    std::thread::sleep(Duration::from_millis(1000));
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.80.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack: {out}");
    assert!(nic_tests::zero_loss(&out), "{out}");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(out.contains("20 packets transmitted, 20 packets received, 0% packet loss"), "{out}");
}

/// `--busy-poll` on a TAP: the stack looks at the TAP between its polls instead of sleeping in poll(2), so
/// every reply is taken by a look (a "hit"), and with a window longer than the ping loop's waits no wait
/// sleeps. Without it, nothing is reported (the waits sleep at once).
#[test]
fn stack_on_a_tap_busy_polls_instead_of_sleeping() {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.80.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let ping = ["--tap", "st0", "--ip", "10.80.0.2/24", "ping", "10.80.0.1", "-c", "20", "-i", "0.05"];
    let busy: Vec<&str> = ["--busy-poll", "1000000"].into_iter().chain(ping).collect();
    let (ok, out) = finish(stack_ping(&ns, &busy));
    assert!(ok && out.contains("20 packets transmitted, 20 packets received, 0% packet loss"), "{out}");
    let line = out.lines().find(|l| l.starts_with("busy poll 1000000 us:")).unwrap_or_else(|| panic!("no busy-poll report: {out}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [_, hits, slept] = nums[..] else { panic!("{line}") };
    assert!(hits >= 20, "every reply (and the ARP reply) found by a look: {line}");
    assert_eq!(slept, 0, "no wait slept: {line}");
    // A window shorter than the loop's waits: those that find nothing sleep for the rest.
    let short: Vec<&str> = ["--busy-poll", "100"].into_iter().chain(ping).collect();
    let (ok, out) = finish(stack_ping(&ns, &short));
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with("busy poll 100 us:")).unwrap_or_else(|| panic!("no busy-poll report: {out}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(nums.get(2).is_some_and(|&slept| slept > 0), "20 pings 50 ms apart leave waits to sleep: {line}");
    let (ok, out) = finish(stack_ping(&ns, &ping));
    assert!(ok && !out.contains("busy poll"), "{out}");
}

/// `nic-lab tap-echo`, the benchmark's kernel-only reference: echo requests written straight to a TAP
/// draw Linux's replies; replies the kernel does not send are counted lost, and a peer that does not
/// answer ARP is an error, never a result.
#[test]
fn tap_echo_measures_the_kernel_alone_and_counts_what_does_not_come_back() {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.80.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let echo = |dest: &str, count: &str| {
        finish(stack_ping(&ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "tap-echo", dest, "-c", count, "-i", "0.01"]))
    };
    let (ok, out) = echo("10.80.0.1", "50");
    assert!(ok && out.contains("50 packets transmitted, 50 packets received, 0% packet loss"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("bytes from 10.80.0.1: seq=") && l.contains(" time=")).count(), 50, "{out}");
    // The kernel told not to answer echoes: each request is reported lost, and the command fails.
    ns.must("sysctl -qw net.ipv4.icmp_echo_ignore_all=1");
    let (ok, out) = echo("10.80.0.1", "2");
    assert!(!ok && out.contains("2 packets transmitted, 0 packets received, 100% packet loss"), "{out}");
    assert_eq!(out.matches("no reply within 1 s").count(), 2, "{out}");
    let (ok, out) = echo("10.80.0.77", "1");
    assert!(!ok && out.contains("10.80.0.77 does not answer ARP"), "{out}");
}

/// A namespace with `nic-device` on a TAP (`tap0`, host side 10.77.0.1/24, IPv6 off), started with
/// `extra` arguments: the namespace, the device's socket, the device.
fn tap_device(tag: &str, extra: &[&str]) -> (Netns, std::path::PathBuf, Device) {
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique(tag)));
    let args: Vec<&str> = ["--backend", "tap:tap0"].into_iter().chain(extra.iter().copied()).collect();
    let dev = Device::start(Some(&ns), &sock, &args);
    ns.must("ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    (ns, sock, dev)
}

#[test]
fn stack_through_driver_and_nic_device_pings_linux() {
    let (ns, sock, _dev) = tap_device("stk", &[]);
    let s = sock.to_str().unwrap();
    let c = stack_ping(&ns, &["--vfio-user", s, "--ip", "10.77.0.2/24", "ping", "10.77.0.1", "-c", "20", "-i", "0.2"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.77.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack through nic-device: {out}");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(out.contains("20 packets received, 0% packet loss"), "{out}");
    let _ = Command::new("true").status();
}

/// Whether an epoll instance of process `pid` watches its TAP (`/dev/net/tun`) descriptor.
fn tap_watched(pid: u32) -> bool {
    let fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read_link(e.path()).ok()?.display().to_string())))
        .collect();
    let tun: Vec<&str> = fds.iter().filter(|(_, l)| l == "/dev/net/tun").map(|(n, _)| n.as_str()).collect();
    assert!(!tun.is_empty(), "the device has no TAP open: {fds:?}");
    fds.iter().filter(|(_, l)| l.contains("eventpoll")).any(|(n, _)| {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap_or_default();
        info.lines().filter_map(|l| l.strip_prefix("tfd:")).any(|l| l.split_whitespace().next().is_some_and(|t| tun.contains(&t)))
    })
}

/// Whether the TAP is watched by then (the data path thread registers it in its next round).
fn watched_within(pid: u32, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while !tap_watched(pid) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A device that busy polls (`--busy-poll`, a 20 ms window) serves a stack pinging Linux every 10 ms: the
/// polling thread reads the TAP itself, so that nothing waits on it meanwhile, and picks up the replies.
/// Once the window has passed it sleeps (almost no CPU while idle), the data path thread waits on the TAP
/// again, and Linux's pings, coming 200 ms apart (each after the window), are answered.
#[test]
fn a_busy_polling_device_answers_while_spinning_and_after_it_sleeps() {
    let (ns, sock, dev) = tap_device("spin", &["--busy-poll", "20000"]);
    let pid = dev.child.id();
    assert!(watched_within(pid, Duration::from_secs(5)), "before any client, the data path thread waits on the TAP");
    let s = sock.to_str().unwrap();
    let mut c =
        stack_ping(&ns, &["--vfio-user", s, "--irq", "poll", "--ip", "10.77.0.2/24", "ping", "10.77.0.1", "-c", "200", "-i", "0.01"]);
    let mut unwatched = false;
    while c.try_wait().unwrap().is_none() && !unwatched {
        unwatched = !tap_watched(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(unwatched, "while it polled, the TAP stayed watched by the data path thread");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(out.contains("200 packets received, 0% packet loss"), "{out}");
    assert!(dev.stat("device", "busy_poll_passes") > 0, "no reply was picked up by a polling pass");
    // Frames from the wire while the device sleeps; the stack's replies start a polling window each.
    let c = stack_ping(&ns, &["--vfio-user", s, "--ip", "10.77.0.2/24", "idle", "--seconds", "5"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.77.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack through a busy-polling nic-device: {out}");
    assert!(nic_tests::zero_loss(&out), "{out}");
    // The client stays, idle: the window is long over, the polling thread sleeps and the data path thread
    // watches the TAP.
    std::thread::sleep(Duration::from_millis(300));
    assert!(watched_within(pid, Duration::from_secs(5)), "after the polling stopped, nothing waits on the TAP");
    let before = nic_tests::cpu::process_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let idle = nic_tests::cpu::process_ticks(pid) - before;
    assert!(idle < 30, "the device used {idle} ticks of CPU in an idle second: still spinning");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(watched_within(pid, Duration::from_secs(5)), "the client gone, the data path thread waits on the TAP");
}

/// A doorbell's round on the vfio-user thread reads the reply its frame drew from the TAP itself: the
/// data path thread, asleep, is not woken for it (nor for the room the TAP reports after each write). Linux
/// pinging the stack afterwards wakes it as before.
#[test]
fn replies_read_by_a_doorbell_round_do_not_wake_the_data_path_thread() {
    let (ns, sock, dev) = tap_device("quiet", &[]);
    let s = sock.to_str().unwrap();
    for irq in ["poll", "auto"] {
        let (inline0, rounds0) = (dev.stat("device", "inline_rounds"), dev.stat("device", "datapath_rounds"));
        let c = stack_ping(&ns, &["--vfio-user", s, "--irq", irq, "--ip", "10.77.0.2/24", "ping", "10.77.0.1", "-c", "100", "-i", "0.01"]);
        let (ok, out) = finish(c);
        assert!(ok && out.contains("100 packets received, 0% packet loss"), "{irq}: {out}");
        let inline = dev.stat("device", "inline_rounds") - inline0;
        let rounds = dev.stat("device", "datapath_rounds") - rounds0;
        assert!(inline >= 100, "{irq}: {inline} doorbell rounds for 100 echoes");
        // The thread still wakes for its timers and for the bring-up's frames: far fewer than the echoes.
        assert!(rounds < 40, "{irq}: the data path thread ran {rounds} rounds for 100 echoes read by doorbell rounds");
    }
    let c = stack_ping(&ns, &["--vfio-user", s, "--ip", "10.77.0.2/24", "idle", "--seconds", "4"]);
    std::thread::sleep(Duration::from_millis(1500));
    let rounds0 = dev.stat("device", "datapath_rounds");
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.77.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack: {out}");
    assert!(nic_tests::zero_loss(&out), "{out}");
    assert!(dev.stat("device", "datapath_rounds") - rounds0 >= 5, "Linux's requests were not read by the data path thread");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
}

struct TapNet {
    ns: Netns,
    dir: std::path::PathBuf,
}

/// A namespace with a TAP (`st0`, host side 10.80.0.1) for the stack (10.80.0.2).
fn tapnet() -> TapNet {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.80.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let dir = std::env::temp_dir().join(unique("stk"));
    std::fs::create_dir_all(&dir).unwrap();
    TapNet { ns, dir }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha(path: &std::path::Path) -> String {
    sh(&format!("sha256sum {}", path.display())).1.split_whitespace().next().unwrap_or("").to_string()
}

fn make_file(path: &std::path::Path, mb: usize) {
    let (rc, out) = sh(&format!("head -c {}M /dev/urandom > {}", mb, path.display()));
    assert_eq!(rc, 0, "{out}");
}

fn lab(ns: &Netns, args: &[&str]) -> (bool, String) {
    finish(stack_ping(ns, args))
}

fn http_server(t: &TapNet) -> std::process::Child {
    t.ns.http_server("10.80.0.1", &t.dir)
}

#[test]
fn get_100mb_from_a_linux_http_server() {
    let t = tapnet();
    get_blob(&t, 100);
}

/// The stack on st0 gets an `mb`-megabyte file from Linux's http.server and checks it; `nic-lab`'s output.
fn get_blob(t: &TapNet, mb: usize) -> String {
    get_blob_with(t, mb, &[])
}

/// As `get_blob`, with more `nic-lab` options.
fn get_blob_with(t: &TapNet, mb: usize, extra: &[&str]) -> String {
    make_file(&t.dir.join("blob"), mb);
    let mut srv = http_server(t);
    let out = t.dir.join("got");
    let mut args = vec!["--tap", "st0", "--ip", "10.80.0.2/24"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["get", "http://10.80.0.1:8000/blob", "-o", out.to_str().unwrap()]);
    let (ok, text) = lab(&t.ns, &args);
    let _ = srv.kill();
    let _ = srv.wait();
    eprintln!("{text}");
    assert!(ok, "{text}");
    assert_eq!(sha(&out), sha(&t.dir.join("blob")), "{mb} MB intact");
    text
}

#[test]
fn get_with_loss_reordering_and_duplication() {
    let t = tapnet();
    make_file(&t.dir.join("blob"), 10);
    let mut srv = http_server(&t);
    let out = t.dir.join("got");
    let (ok, text) = lab(
        &t.ns,
        &[
            "--tap",
            "st0",
            "--ip",
            "10.80.0.2/24",
            "--impair",
            "loss=1,reorder=1,dup=1,seed=7",
            "get",
            "http://10.80.0.1:8000/blob",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{text}");
    assert_eq!(sha(&out), sha(&t.dir.join("blob")), "intact through impairment");
    let line = text.lines().find(|l| l.starts_with("impairment: sent")).unwrap_or_else(|| panic!("{text}"));
    let n = |k: &str| line.split(k).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(n(" lost ") > 0 && n(" duplicated ") > 0 && n(" reordered ") > 0, "the wire was bad: {line}");
}

#[test]
fn curl_against_the_stacks_server() {
    let t = tapnet();
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    make_file(&www.join("file.bin"), 5);
    let c = stack_ping(
        &t.ns,
        &["--tap", "st0", "--ip", "10.80.0.2/24", "serve", "--port", "8080", "--dir", www.to_str().unwrap(), "--count", "2"],
    );
    std::thread::sleep(Duration::from_millis(800));
    let got = t.dir.join("curl.bin");
    let (rc, out) = t.ns.exec(&format!("curl -sS --max-time 60 -o {} -w '%{{http_code}}' http://10.80.0.2:8080/file.bin", got.display()));
    assert_eq!((rc, out.trim()), (0, "200"), "{out}");
    assert_eq!(sha(&got), sha(&www.join("file.bin")));
    let (rc, out) = t.ns.exec("curl -sS --max-time 20 -o /dev/null -w '%{http_code}' http://10.80.0.2:8080/missing");
    assert_eq!((rc, out.trim()), (0, "404"));
    let (ok, text) = finish(c);
    assert!(ok, "{text}");
}

/// The CPU line `blast` and `sink` print after the rate: "cpu: T s (U s user, S s system), P% of the
/// elapsed time", with T = U + S (to the printed digits), some CPU used, and P within what the machine's
/// CPUs allow. Returns T.
fn cpu_reported(text: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with("cpu: ")).unwrap_or_else(|| panic!("no cpu line: {text}"));
    let nums: Vec<f64> =
        line.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
    let [t, u, s, pct] = nums[..] else { panic!("{line}") };
    assert!(t > 0.0 && (t - (u + s)).abs() <= 0.0015, "{line}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(pct > 0.0 && pct <= cpus * 100.0 + 5.0, "{line}");
    t
}

#[test]
fn blast_into_a_linux_sink_and_sink_fed_by_linux() {
    let t = tapnet();
    // Host sink: counts bytes until EOF.
    let count = t.dir.join("count");
    let py = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.80.0.1', 5001)); s.listen(1)\nc,_=s.accept(); n=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    n+=len(d)\nopen('{}','w').write(str(n))\n",
        count.display()
    );
    std::fs::write(t.dir.join("sink.py"), py).unwrap();
    let mut host = t.ns.command(std::path::Path::new("python3")).arg(t.dir.join("sink.py")).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) = lab(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "blast", "10.80.0.1:5001", "--bytes", "50000000"]);
    assert!(ok, "{text}");
    assert!(text.contains("MB/s"), "{text}");
    cpu_reported(&text);
    let _ = host.wait();
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "50000000");
    // The stack's sink fed by the host.
    let c = stack_ping(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "sink", "--port", "5002"]);
    std::thread::sleep(Duration::from_millis(800));
    let (rc, out) = t.ns.exec("python3 -c \"import socket\ns=socket.create_connection(('10.80.0.2', 5002), timeout=30)\nb=bytes(1<<20)\nfor i in range(40): s.sendall(b)\ns.shutdown(socket.SHUT_WR)\ns.recv(1)\ns.close()\"");
    assert_eq!(rc, 0, "{out}");
    let (ok, text) = finish(c);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("received {} bytes", 40 << 20)), "{text}");
    cpu_reported(&text);
    // Linux's bursts arrive several frames to a poll: GRO merged some of them.
    let (merged, frames) = nic_tests::gro_reported(&text);
    assert!(frames >= (40 << 20) / 1460 && merged > 0, "{text}");
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let t = tapnet();
    let (ok, text) = lab(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "get", "http://10.80.0.1:9/x", "-o", "/dev/null"]);
    assert!(!ok);
    assert!(text.contains("Connection refused"), "{text}");
}

#[test]
fn whole_chain_get_through_driver_and_nic_device() {
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("chain")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tap0"]);
    ns.must("ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    let dir = std::env::temp_dir().join(unique("chain"));
    std::fs::create_dir_all(&dir).unwrap();
    make_file(&dir.join("blob"), 100);
    let mut srv = ns
        .command(std::path::Path::new("python3"))
        .args(["-m", "http.server", "8000", "--bind", "10.77.0.1", "--directory"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = dir.join("got");
    let (ok, text) = lab(
        &ns,
        &["--vfio-user", sock.to_str().unwrap(), "--ip", "10.77.0.2/24", "get", "http://10.77.0.1:8000/blob", "-o", out.to_str().unwrap()],
    );
    let _ = srv.kill();
    let _ = srv.wait();
    eprintln!("{text}");
    assert!(ok, "{text}");
    assert_eq!(sha(&out), sha(&dir.join("blob")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blast_through_driver_uses_tso_and_the_wire_stays_within_the_mtu() {
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("tso")));
    let pcap = std::env::temp_dir().join(format!("{}.pcap", unique("tso")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tap0", "--pcap", pcap.to_str().unwrap()]);
    ns.must("ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    let count = std::env::temp_dir().join(unique("count"));
    let py = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.77.0.1', 5001)); s.listen(1)\nc,_=s.accept(); n=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    n+=len(d)\nopen('{}','w').write(str(n))\n",
        count.display()
    );
    let mut host = ns.command(std::path::Path::new("python3")).args(["-c", &py]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) =
        lab(&ns, &["--vfio-user", sock.to_str().unwrap(), "--ip", "10.77.0.2/24", "blast", "10.77.0.1:5001", "--bytes", "20000000"]);
    assert!(ok, "{text}");
    let _ = host.wait();
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "20000000");
    // The card, not the stack, cut the segments: its TSO counters moved.
    let m = _dev.metrics();
    let (pkts, segs) = (m.get("tx_tso_packets").copied().unwrap_or(0), m.get("tx_tso_segments").copied().unwrap_or(0));
    assert!(pkts > 100 && segs > 10 * pkts, "TSO packets {pkts}, segments {segs}");
    drop(_dev);
    let frames = nic_tests::pcap::read(&pcap).unwrap();
    let v = nic_tests::pcap::judge(&frames);
    assert!(v.clean() && v.tcp_data_frames > 10_000, "{v:?}");
    let _ = std::fs::remove_file(&pcap);
    let _ = std::fs::remove_file(&count);
}

#[test]
fn get_decodes_a_chunked_response() {
    let t = tapnet();
    make_file(&t.dir.join("blob"), 3);
    let py = format!(
        "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n    def do_GET(self):\n        data = open('{}', 'rb').read()\n        self.send_response(200)\n        self.send_header('Transfer-Encoding', 'chunked')\n        self.end_headers()\n        for i in range(0, len(data), 70001):\n            c = data[i:i+70001]\n            self.wfile.write(b'%x\\r\\n' % len(c) + c + b'\\r\\n')\n        self.wfile.write(b'0\\r\\n\\r\\n')\n    def log_message(self, *a): pass\nhttp.server.HTTPServer(('10.80.0.1', 8001), H).handle_request()\n",
        t.dir.join("blob").display()
    );
    std::fs::write(t.dir.join("chunked.py"), py).unwrap();
    let mut srv = t.ns.command(std::path::Path::new("python3")).arg(t.dir.join("chunked.py")).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = t.dir.join("got");
    let (ok, text) =
        lab(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "get", "http://10.80.0.1:8001/blob", "-o", out.to_str().unwrap()]);
    let _ = srv.wait();
    assert!(ok, "{text}");
    assert_eq!(sha(&out), sha(&t.dir.join("blob")));
}

/// Programs started one after another connect at their first SYN. Two causes of a one-second stall are
/// covered: with a fixed first ephemeral port and sequence number, each new get met Linux's TIME_WAIT for
/// the same 4-tuple, was answered with an ACK, reset it, and connected only at its SYN retransmission (now
/// ports, RFC 6056, and initial sequence numbers, RFC 6528, come from a random per-stack secret); and on a
/// TAP just attached, Linux drops its answer to the first ARP request until its link-watch work activates
/// the device (now the stack waits for the TAP to be operational).
#[test]
fn consecutive_gets_connect_at_their_first_syn() {
    let t = tapnet();
    std::fs::write(t.dir.join("one"), b"x").unwrap();
    let mut srv = http_server(&t);
    let cap = t.dir.join("syns.txt");
    let mut dump =
        t.ns.command(std::path::Path::new("tcpdump"))
            .args(["-i", "st0", "-n", "-l", "--immediate-mode", "src host 10.80.0.2 and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0"])
            .stdout(std::fs::File::create(&cap).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = t.dir.join("got");
    for i in 0..4 {
        let (ok, text) =
            lab(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "get", "http://10.80.0.1:8000/one", "-o", out.to_str().unwrap()]);
        assert!(ok, "get {i}: {text}");
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    let _ = srv.kill();
    let _ = srv.wait();
    let lines = std::fs::read_to_string(&cap).unwrap();
    let syns = lines.lines().filter(|l| l.contains("Flags [S]")).count();
    let rsts = lines.lines().filter(|l| l.contains("Flags [R")).count();
    assert_eq!((syns, rsts), (4, 0), "one SYN per get and no reset:\n{lines}");
}

/// Without window scaling (`net.ipv4.tcp_window_scaling=0` on the Linux side) the sender may have at most
/// 64 KiB in flight, which it sends as one burst that GRO hands the stack as few large segments. Counting
/// those as one segment each left every burst waiting for the 40 ms delayed-ACK timer (229 delayed ACKs for
/// 20 MB, 10 s instead of 0.1 s). Received data now counts in MSS-sized segments, so every second one is
/// acknowledged at once; the connection's delayed-ACK count (TcpExtDelayedACKs) says whether it waited.
#[test]
fn get_without_window_scaling_does_not_wait_for_delayed_acks() {
    let t = tapnet();
    t.ns.must("sysctl -qw net.ipv4.tcp_window_scaling=0");
    let text = get_blob(&t, 20);
    let delayed = report_field(&text, "delayed ACKs");
    assert!(delayed <= 5, "{delayed} ACKs waited for the delayed-ACK timer:\n{text}");
}

/// The stack's server serves connections side by side from its poll loop: a client that connects and sends
/// nothing holds nobody up (it is reset after the idle limit, 10 s), and eight curls at once all get their
/// file while it sits there.
#[test]
fn server_serves_many_connections_while_one_idles() {
    let t = tapnet();
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    make_file(&www.join("file.bin"), 2);
    let c = stack_ping(
        &t.ns,
        &["--tap", "st0", "--ip", "10.80.0.2/24", "serve", "--port", "8080", "--dir", www.to_str().unwrap(), "--count", "8"],
    );
    std::thread::sleep(Duration::from_millis(800));
    // The idle client: connects, sends nothing, stays 15 s.
    let mut idle =
        t.ns.command(std::path::Path::new("python3"))
            .args(["-c", "import socket,time\ns=socket.create_connection(('10.80.0.2',8080))\ntime.sleep(15)\n"])
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Eight at once, each with a deadline well under the idle client's stay.
    let script: String = (0..8)
        .map(|i| format!("curl -sS --max-time 8 -o {}/got{i} http://10.80.0.2:8080/file.bin & ", t.dir.display()))
        .collect::<String>()
        + "wait";
    let (rc, out) = t.ns.exec(&script);
    assert_eq!(rc, 0, "{out}");
    for i in 0..8 {
        assert_eq!(sha(&t.dir.join(format!("got{i}"))), sha(&www.join("file.bin")), "curl {i}");
    }
    let _ = idle.kill();
    let _ = idle.wait();
    let (ok, text) = finish(c);
    assert!(ok, "{text}");
    assert_eq!(text.matches("GET /file.bin").count(), 8, "{text}");
}

/// With SACK off on the Linux side (`net.ipv4.tcp_sack=0`), transfers to the stack used to stall now and
/// then for seconds; now three 20 MB gets pass without Linux ever waiting for a retransmission timeout.
#[test]
fn gets_without_sack_cause_no_retransmission_timeout() {
    let t = tapnet();
    t.ns.must("sysctl -qw net.ipv4.tcp_sack=0");
    let before = t.ns.linux_counter("TcpExtTCPTimeouts");
    for _ in 0..3 {
        get_blob(&t, 20);
    }
    assert_eq!(t.ns.linux_counter("TcpExtTCPTimeouts") - before, 0, "Linux timed out sending to the stack");
}

/// With the TAP's offloads the stack sends 64 KiB super-packets (the kernel cuts them, or takes them
/// whole) and takes the kernel's: a 100 MB get and a 100 MB blast stay intact, and what crossed the TAP
/// averages well above one Ethernet frame per packet in both directions.
#[test]
fn get_and_blast_with_the_taps_offloads() {
    let t = tapnet();
    let before = t.ns.link_stats("st0");
    let text = get_blob_with(&t, 100, &["--tap-offload"]);
    assert!(text.contains("HTTP 200"), "{text}");
    let sink = t.ns.tcp_sink("10.80.0.1", 5009);
    let (ok, out) =
        lab(&t.ns, &["--tap", "st0", "--tap-offload", "--ip", "10.80.0.2/24", "blast", "10.80.0.1:5009", "--bytes", "100000000"]);
    assert!(ok, "{out}");
    let got = Netns::sink_count(sink);
    assert_eq!(got, "100000000", "the Linux sink got every byte");
    let after = t.ns.link_stats("st0");
    // Linux's counters for the TAP: rx is what the stack wrote, tx what the kernel handed it.
    let (rx_p, tx_p, rx_b, tx_b) = (after.0 - before.0, after.1 - before.1, after.2 - before.2, after.3 - before.3);
    assert!(rx_b / rx_p.max(1) > 3000, "the stack's packets average {} bytes", rx_b / rx_p.max(1));
    assert!(tx_b / tx_p.max(1) > 3000, "the kernel's packets average {} bytes", tx_b / tx_p.max(1));
}

/// Two IPv4 addresses on one interface (`--ip` twice): Linux reaches both, resolving each by ARP.
#[test]
fn linux_reaches_both_addresses_of_an_interface() {
    let t = tapnet();
    t.ns.must("ip addr add 10.81.1.1/24 dev st0");
    let c = stack_ping(&t.ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "--ip", "10.81.1.2/24", "idle", "--seconds", "4"]);
    std::thread::sleep(Duration::from_millis(800));
    for a in ["10.80.0.2", "10.81.1.2"] {
        let (rc, out) = t.ns.exec(&format!("ping -c 2 -i 0.2 -W 2 {a}"));
        assert_eq!(rc, 0, "{a}: {out}");
    }
    let neigh = t.ns.must("ip neigh show dev st0");
    assert!(neigh.contains("10.80.0.2 lladdr") && neigh.contains("10.81.1.2 lladdr"), "{neigh}");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
}
