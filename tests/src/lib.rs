//! Test harness: network namespaces, nic-device processes, and QEMU guests driven over their serial console.
//!
//! Guests boot the rig's kernel and busybox initramfs (tools/scripts/setup-rig.sh) through
//! qemu-config/launch-guest.sh under TCG. Each test that boots a guest holds [`guest_lock`], so guests run
//! one at a time on this small machine.

pub mod offload;
pub mod pcap;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn rig_dir() -> PathBuf {
    std::env::var_os("NIC_RIG_DIR").map(PathBuf::from).unwrap_or_else(|| root().join(".cache/rig"))
}

/// Panics with the set-up command when the rig is missing: a guest test must never pass without a guest.
pub fn require_rig() {
    let r = rig_dir();
    for f in ["bin/qemu-system-x86_64", "vmlinuz", "initramfs.cpio.gz"] {
        assert!(r.join(f).exists(), "{} missing: run tools/scripts/setup-rig.sh (or tools/scripts/test.sh)", r.join(f).display());
    }
}

/// A binary of this workspace, built by the test command before the tests run: the debug build first, or
/// the release build first with NIC_BIN_PROFILE=release (the benchmarks).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let release_first = std::env::var("NIC_BIN_PROFILE").is_ok_and(|p| p == "release");
    let order = if release_first { ["release", "debug"] } else { ["debug", "release"] };
    for profile in order {
        let p = dir.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not built: run `cargo build --workspace --bins` first");
}

static GUEST_LOCK: Mutex<()> = Mutex::new(());

/// Serializes guest boots within one test binary.
pub fn guest_lock() -> MutexGuard<'static, ()> {
    GUEST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A unique name for this process and a counter.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100000, N.fetch_add(1, Ordering::SeqCst))
}

pub fn sh(cmd: &str) -> (i32, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), s)
}

/// A network namespace made for one test, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("nict");
        let (rc, out) = sh(&format!("ip netns add {name} && ip netns exec {name} ip link set lo up"));
        assert_eq!(rc, 0, "ip netns add: {out}");
        Netns { name }
    }
    pub fn exec(&self, cmd: &str) -> (i32, String) {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd.replace('\'', "'\\''")))
    }
    pub fn must(&self, cmd: &str) -> String {
        let (rc, out) = self.exec(cmd);
        assert_eq!(rc, 0, "in {}: {cmd}: {out}", self.name);
        out
    }
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
    /// Counters of an interface in this namespace: (rx_packets, tx_packets, rx_bytes, tx_bytes).
    pub fn link_stats(&self, ifname: &str) -> (u64, u64, u64, u64) {
        let r = |f: &str| -> u64 { self.must(&format!("cat /sys/class/net/{ifname}/statistics/{f}")).trim().parse().unwrap() };
        (r("rx_packets"), r("tx_packets"), r("rx_bytes"), r("tx_bytes"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns pids {0} | xargs -r kill -9; ip netns del {0}", self.name));
    }
}

/// A running nic-device.
pub struct Device {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Its control socket (`nicctl`).
    pub control: PathBuf,
}

impl Device {
    /// Starts nic-device with `args` (after --socket), in `ns` if given, and waits for its socket.
    pub fn start(ns: Option<&Netns>, socket: &Path, args: &[&str]) -> Device {
        let exe = bin("nic-device");
        let mut cmd = match ns {
            Some(n) => n.command(&exe),
            None => Command::new(&exe),
        };
        let log = socket.with_extension("log");
        let control = socket.with_extension("ctl");
        let f = std::fs::File::create(&log).unwrap();
        cmd.arg("--socket").arg(socket).arg("--control").arg(&control).args(args).stdout(f.try_clone().unwrap()).stderr(f);
        // Extra device options for a whole run (`NIC_DEVICE_ARGS="--doorbells wake"`), to compare settings.
        if let Ok(extra) = std::env::var("NIC_DEVICE_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        cmd.env("RUST_LOG", std::env::var("NIC_DEVICE_LOG").unwrap_or_else(|_| "info".into()));
        let mut child = cmd.spawn().expect("spawn nic-device");
        let t0 = Instant::now();
        while !socket.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("nic-device exited with {st}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "nic-device socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        while !control.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "nic-device control socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Device { child, socket: socket.into(), log, control }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The device's metrics now: SIGUSR1 makes it log them; the last value of each is read back.
    pub fn metrics(&self) -> std::collections::HashMap<String, u64> {
        let before = self.log_text().matches("metrics (SIGUSR1):").count();
        // SAFETY: kill with a pid we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
        let t0 = Instant::now();
        while self.log_text().matches("metrics (SIGUSR1):").count() == before {
            assert!(t0.elapsed() < Duration::from_secs(10), "nic-device did not log its metrics");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        parse_metrics(&self.log_text())
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill with a pid we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        keep_or_remove(&self.log, "nic-device log");
    }
}

/// A test's artefact (a device's log, a guest's console) is kept when the test is failing, or when
/// `NIC_KEEP_LOGS` is set, and its path printed; otherwise it is removed, so that passing runs leave
/// nothing behind in the temporary directory.
fn keep_or_remove(path: &Path, what: &str) {
    if std::thread::panicking() || std::env::var_os("NIC_KEEP_LOGS").is_some() {
        if path.exists() {
            eprintln!("{what} kept: {}", path.display());
        }
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Options for a guest boot.
#[derive(Default, Clone)]
pub struct GuestOpts {
    pub sockets: Vec<PathBuf>,
    pub append: String,
    pub allow_reboot: bool,
    pub extra: Vec<String>,
    /// Run QEMU inside this network namespace (for a TAP netdev there).
    pub netns: Option<String>,
    /// An emulated IOMMU, so the guest can use vfio-pci.
    pub iommu: bool,
    /// Host files copied into the guest: (source, destination path).
    pub add: Vec<(PathBuf, String)>,
}

/// A QEMU guest whose serial console is our pipe.
pub struct Guest {
    child: Child,
    stdin: std::process::ChildStdin,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    seen: usize,
    pub transcript: PathBuf,
}

impl Guest {
    /// The process that launched the guest (QEMU runs under it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn boot(opts: &GuestOpts) -> Guest {
        require_rig();
        let launcher = root().join("qemu-config/launch-guest.sh");
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&launcher);
                c
            }
            None => Command::new(&launcher),
        };
        if opts.iommu {
            cmd.arg("--iommu");
        }
        for (src, dst) in &opts.add {
            cmd.arg("--add").arg(format!("{}:{dst}", src.display()));
        }
        for s in &opts.sockets {
            cmd.arg("--socket").arg(s);
        }
        if !opts.append.is_empty() {
            cmd.arg("--append").arg(&opts.append);
        }
        if opts.allow_reboot {
            cmd.arg("--allow-reboot");
        }
        if !opts.extra.is_empty() {
            cmd.arg("--").args(&opts.extra);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("launch-guest.sh");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for mut pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let o = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    o.0.lock().unwrap().extend_from_slice(&buf[..n]);
                    o.1.notify_all();
                }
            });
        }
        let transcript = std::env::temp_dir().join(format!("{}.console", unique("guest")));
        let mut g = Guest { child, stdin, out, seen: 0, transcript };
        g.wait_ready();
        g
    }

    /// Waits for the guest's ready marker and syncs with its shell (prompts off, banner consumed).
    pub fn wait_ready(&mut self) {
        self.wait_for("@@GUEST-READY@@", Duration::from_secs(180));
        self.send("export PS1= PS2=; echo \"@@SY\"\"NC@@\"");
        self.wait_for("@@SYNC@@", Duration::from_secs(30));
    }

    fn save_transcript(&self) {
        let b = self.out.0.lock().unwrap().clone();
        let _ = std::fs::write(&self.transcript, b);
    }

    /// Waits until `marker` appears after what was already consumed; returns the text before it.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        let (lock, cv) = &*self.out;
        let mut buf = lock.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&buf[self.seen..]).into_owned();
            if let Some(i) = text.find(marker) {
                let before = text[..i].to_string();
                // Advance by the byte length of what we matched (lossy text may differ in length: recompute).
                let consumed = buf[self.seen..].windows(marker.len()).position(|w| w == marker.as_bytes()).unwrap() + marker.len();
                self.seen += consumed;
                return before;
            }
            let left = timeout.checked_sub(t0.elapsed());
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if left.is_none() || (exited && buf.len() == self.seen) {
                drop(buf);
                self.save_transcript();
                panic!(
                    "guest: '{marker}' not seen within {timeout:?} (qemu exited: {exited}); console in {}; tail:\n{}",
                    self.transcript.display(),
                    text.chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>()
                );
            }
            buf = cv.wait_timeout(buf, left.unwrap().min(Duration::from_millis(200))).unwrap().0;
        }
    }

    /// Runs a shell command in the guest; returns its exit code and output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        let line = format!("{{ {cmd}\n}} 2>&1; echo \"@@R\"\"C=$?@@\"\n");
        self.stdin.write_all(line.as_bytes()).expect("guest console");
        self.stdin.flush().unwrap();
        let out = self.wait_for("@@RC=", timeout);
        let rest = self.wait_for("@@", Duration::from_secs(5));
        let rc = rest.trim().parse().unwrap_or(-1);
        (rc, out.replace('\r', "").trim().to_string())
    }

    /// Runs a command that must succeed.
    pub fn must(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd, Duration::from_secs(300));
        if rc != 0 {
            self.save_transcript();
        }
        assert_eq!(rc, 0, "guest: `{cmd}` failed:\n{out}");
        out
    }

    /// Sends a line without waiting for completion (reboot, poweroff).
    pub fn send(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Brings eth0 up with `addr` and waits for the link.
    pub fn link_up(&mut self, ifname: &str, addr: &str) {
        self.must(&format!(
            "ip link set {ifname} up && ip addr add {addr} dev {ifname} && for i in $(seq 100); do [ \"$(cat /sys/class/net/{ifname}/carrier 2>/dev/null)\" = 1 ] && break; sleep 0.1; done; [ \"$(cat /sys/class/net/{ifname}/carrier)\" = 1 ]"
        ));
    }

    /// Interrupt counts summed per /proc/interrupts line that names `ifname`: (line name, count).
    pub fn interrupts(&mut self, ifname: &str) -> Vec<(String, u64)> {
        let out = self.must("cat /proc/interrupts");
        out.lines()
            .filter(|l| l.contains(ifname))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let count = f.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                (f[2..].join(" "), count)
            })
            .collect()
    }

    /// `ethtool -S` as name -> value.
    pub fn ethtool_stats(&mut self, ifname: &str) -> std::collections::HashMap<String, u64> {
        let out = self.must(&format!("ethtool -S {ifname}"));
        out.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.save_transcript();
        self.kill();
        keep_or_remove(&self.transcript, "guest console");
    }
}

/// A TAP device inside `ns` with `addr`, plus a nic-device serving it: the usual test topology.
pub struct TapRig {
    pub ns: Netns,
    pub dev: Device,
    pub tap: String,
}

pub const HOST_IP: &str = "10.77.0.1";
pub const GUEST_IP: &str = "10.77.0.2";

impl TapRig {
    pub fn new(extra: &[&str]) -> TapRig {
        let ns = Netns::new();
        let tap = "nictap0".to_string();
        let sock = std::env::temp_dir().join(format!("{}.sock", unique("nicdev")));
        let spec = format!("tap:{tap}");
        let mut args = vec!["--backend", spec.as_str()];
        args.extend_from_slice(extra);
        let dev = Device::start(Some(&ns), &sock, &args);
        ns.must(&format!("ip addr add {HOST_IP}/24 dev {tap} && ip link set {tap} up"));
        TapRig { ns, dev, tap }
    }
    pub fn socket(&self) -> PathBuf {
        self.dev.socket.clone()
    }
}

/// The last value of every `  name: value` metric line in a nic-device log.
pub fn parse_metrics(log: &str) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for l in log.lines() {
        let Some((k, v)) = l.rsplit_once(": ") else { continue };
        let Some(name) = k.split_whitespace().last() else { continue };
        if name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()) && name.contains('_') {
            if let Ok(v) = v.trim().parse() {
                m.insert(name.to_string(), v);
            }
        }
    }
    m
}

/// Whether ping's summary reports no loss: "N packets transmitted, N (packets) received" with N > 0, and
/// "0% packet loss" as its own number (not the tail of "10%").
pub fn zero_loss(out: &str) -> bool {
    let Some(line) = out.lines().find(|l| l.contains("packets transmitted")) else { return false };
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    let loss = line.split(',').find(|p| p.contains("packet loss")).map(|p| p.trim().starts_with("0%"));
    matches!(nums.as_slice(), [tx, rx, ..] if tx == rx && *tx > 0) && loss == Some(true)
}

impl Netns {
    /// One of Linux's own network counters in this namespace, by its `nstat` name (`TcpExtTCPTimeouts`,
    /// `TcpInCsumErrors`, `IpInHdrErrors`, ...): its absolute value. A name `nstat` does not know fails.
    pub fn linux_counter(&self, name: &str) -> u64 {
        let out = self.must(&format!("nstat -az {name}"));
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("nstat has no counter {name}: {out}"))
    }

    /// A TCP sink on `addr:port` (IPv4 or IPv6) that prints how many bytes it got once the sender
    /// closes; it is listening when this returns.
    pub fn tcp_sink(&self, addr: &str, port: u16) -> Child {
        let fam = if addr.contains(':') { "AF_INET6" } else { "AF_INET" };
        let py = format!(
            "import socket\ns=socket.socket(socket.{fam}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{addr}', {port})); s.listen(1)\ns.settimeout(120)\nc,_=s.accept(); c.settimeout(120); n=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    n+=len(d)\nprint(n)\n"
        );
        let c = self.command(Path::new("python3")).args(["-c", &py]).stdout(Stdio::piped()).spawn().expect("python3 sink");
        std::thread::sleep(Duration::from_millis(400));
        c
    }

    /// What a `tcp_sink` counted (nothing when it saw no connection, or silence, for two minutes).
    pub fn sink_count(c: Child) -> String {
        String::from_utf8_lossy(&c.wait_with_output().map(|o| o.stdout).unwrap_or_default()).trim().to_string()
    }

    /// `python3 -m http.server` on `bind`:8000 in this namespace, serving `dir`; given a moment to listen.
    pub fn http_server(&self, bind: &str, dir: &Path) -> Child {
        let c = self
            .command(Path::new("python3"))
            .args(["-m", "http.server", "8000", "--bind", bind, "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        std::thread::sleep(Duration::from_millis(800));
        c
    }
}

/// Runs `nic-lab` with `args`; (success, stdout and stderr).
pub fn nic_lab(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("nic-lab")).args(args).output().expect("run nic-lab");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// The number after `name:` on the line of `nic-lab` output that starts with `name`.
pub fn report_field(out: &str, name: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {out}"))
}

/// The GRO line `nic-lab get` and `sink` print: "gro: G of F frames merged into larger packets (P
/// packets)", checked for consistency (G <= F, P = F - G); returns (G, F).
pub fn gro_reported(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.starts_with("gro: ")).unwrap_or_else(|| panic!("no gro line: {out}"));
    let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
    let [g, f, p] = n[..] else { panic!("{line}") };
    assert!(g <= f && p == f - g, "{line}");
    (g, f)
}

/// Runs `nicctl CONTROL args...`; (success, stdout and stderr).
pub fn nicctl(control: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("nicctl")).arg(control).args(args).output().expect("run nicctl");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// `nicctl CONTROL args... --json`, parsed; panics when nicctl fails.
pub fn nicctl_json(control: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (ok, out) = nicctl(control, &a);
    assert!(ok, "nicctl {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nicctl {args:?}: {e}: {out}"))
}

/// `nicctl inject`, checked.
pub fn inject(control: &Path, args: &[&str]) {
    let mut a = vec!["inject"];
    a.extend_from_slice(args);
    let (ok, out) = nicctl(control, &a);
    assert!(ok && out.starts_with("injected: "), "nicctl {a:?}: {out}");
}

impl Device {
    /// A register's value as the control socket reads it (no read side effects).
    pub fn reg(&self, name: &str) -> u32 {
        let v = nicctl_json(&self.control, &["regs", name]);
        let s = v[0]["value"].as_str().unwrap_or_else(|| panic!("{name}: {v}"));
        u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    }
    /// A counter from `nicctl stats`: `section` is ethtool, device, registers or fault_hits.
    pub fn stat(&self, section: &str, name: &str) -> u64 {
        let v = nicctl_json(&self.control, &["stats"]);
        v[section][name].as_u64().unwrap_or(0)
    }
}

/// The receiver's rate in an iperf3 report (`-f m`), in Mbit/s; `None` when there is no receiver line.
pub fn iperf3_mbits(out: &str) -> Option<f64> {
    out.lines()
        .filter(|l| l.contains("receiver"))
        .find_map(|l| l.split_whitespace().collect::<Vec<_>>().windows(2).find(|w| w[1] == "Mbits/sec").and_then(|w| w[0].parse().ok()))
}

/// What gives a guest its NIC on the host TAP `tap`: nic-device serving it over vfio-user, or a QEMU model
/// with the TAP as its netdev (`vnet_hdr` on or off; `modules` the guest modules that drive it).
pub enum TapNic<'a> {
    /// nic-device on the TAP; `offload`: the TAP offload mode (`tap:IFNAME,offload=on`); `args`: more
    /// nic-device options.
    NicDevice {
        offload: bool,
        args: &'a [&'a str],
    },
    Qemu {
        model: &'a str,
        vnet_hdr: bool,
        modules: &'a str,
    },
}

/// Sets up `nic` on TAP `tap` in `ns` for a guest booted with `opts`, and gives the TAP the host address
/// (IPv6 off). Returns the nic-device process when there is one.
pub fn attach_tap(ns: &Netns, tap: &str, nic: TapNic, opts: &mut GuestOpts) -> Option<Device> {
    let dev = match nic {
        TapNic::NicDevice { offload, args } => {
            let sock = std::env::temp_dir().join(format!("{}.sock", unique("tapnic")));
            let backend = format!("tap:{tap}{}", if offload { ",offload=on" } else { "" });
            let all: Vec<&str> = ["--backend", backend.as_str()].into_iter().chain(args.iter().copied()).collect();
            let d = Device::start(Some(ns), &sock, &all);
            opts.sockets.push(sock);
            Some(d)
        }
        TapNic::Qemu { model, vnet_hdr, modules } => {
            ns.must(&format!("ip tuntap add dev {tap} mode tap"));
            let vnet = if vnet_hdr { "on" } else { "off" };
            opts.extra.extend([
                "-netdev".to_string(),
                format!("tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr={vnet}"),
                "-device".to_string(),
                format!("{model},netdev=n0,mac=52:54:00:12:34:56"),
            ]);
            opts.append = format!("{} nic.modules={modules}", opts.append).trim().to_string();
            None
        }
    };
    ns.must(&format!("sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1; ip addr add {HOST_IP}/24 dev {tap}; ip link set {tap} up"));
    dev
}

/// `nic-lab run TOPOLOGY --seconds S` in namespace `n`, where TAP devices `ta` and `tb` are created first;
/// once it has attached to them they move into namespaces `a` and `b` (a TAP keeps its attachment when it
/// moves), each becoming that namespace's only link. The running `nic-lab`.
pub fn run_topology_between(n: &Netns, a: &Netns, b: &Netns, topology: &Path, seconds: u32) -> Child {
    run_topology_between_with(n, a, b, topology, seconds, &[])
}

/// As [`run_topology_between`], with more `nic-lab` options (before `run`).
pub fn run_topology_between_with(n: &Netns, a: &Netns, b: &Netns, topology: &Path, seconds: u32, extra: &[&str]) -> Child {
    n.must("ip tuntap add dev ta mode tap && ip tuntap add dev tb mode tap");
    let c = n
        .command(&bin("nic-lab"))
        .args(extra)
        .args(["run", topology.to_str().unwrap(), "--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    n.must(&format!("ip link set ta netns {} && ip link set tb netns {}", a.name, b.name));
    c
}

/// CPU time from /proc, in clock ticks.
pub mod cpu {
    use std::collections::HashMap;

    /// (pid, tid) -> (thread name, utime + stime).
    pub type Ticks = HashMap<(u32, u32), (String, u64)>;

    /// Clock ticks per second.
    pub fn hz() -> f64 {
        // SAFETY: sysconf has no preconditions.
        (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
    }

    /// A stat file's command name and the fields after it (the state first).
    fn stat(path: &str) -> Option<(String, Vec<String>)> {
        let s = std::fs::read_to_string(path).ok()?;
        let (name, rest) = (s.get(s.find('(')? + 1..s.rfind(')')?)?, s.get(s.rfind(')')? + 2..)?);
        Some((name.to_string(), rest.split_whitespace().map(str::to_string).collect()))
    }

    /// utime + stime of stat fields (the 14th and 15th of the file: 11 and 12 after the state).
    fn used(f: &[String]) -> u64 {
        let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        t(11) + t(12)
    }

    /// CPU time process `pid` has used so far, all threads.
    pub fn process_ticks(pid: u32) -> u64 {
        stat(&format!("/proc/{pid}/stat")).map_or(0, |(_, f)| used(&f))
    }

    /// Every process under `root`, `root` included.
    pub fn tree(root: u32) -> Vec<u32> {
        let mut parent = HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(pp) = stat(&format!("/proc/{pid}/stat")).and_then(|(_, f)| f.get(1)?.parse::<u32>().ok()) {
                parent.insert(pid, pp);
            }
        }
        let mut out = vec![root];
        let mut k = 0;
        while k < out.len() {
            let p = out[k];
            out.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
            k += 1;
        }
        out
    }

    /// Every thread of `pids`, with its name and CPU time.
    pub fn ticks(pids: &[u32]) -> Ticks {
        let mut m = HashMap::new();
        for &pid in pids {
            for e in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
                let Some(tid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                if let Some((name, f)) = stat(&format!("/proc/{pid}/task/{tid}/stat")) {
                    m.insert((pid, tid), (name, used(&f)));
                }
            }
        }
        m
    }

    #[cfg(test)]
    mod tests {
        use std::collections::HashMap;

        /// A thread that burns CPU shows up under its own name with its ticks growing, and a child process is
        /// in the tree of its parent.
        #[test]
        fn a_busy_thread_and_a_child_are_seen() {
            let me = std::process::id();
            let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
            assert!(super::tree(me).contains(&child.id()), "the child is under its parent");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            let spin = std::thread::Builder::new()
                .name("gb-spin".into())
                .spawn(move || {
                    let mut x = 0u64;
                    while !s.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
                .unwrap();
            let of = |m: &HashMap<(u32, u32), (String, u64)>| m.values().find(|(n, _)| n == "gb-spin").map(|x| x.1);
            let t0 = std::time::Instant::now();
            // The new thread names itself once it runs.
            let first = loop {
                if let Some(t) = of(&super::ticks(&[me])) {
                    break t;
                }
                assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the spinning thread is never listed");
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            // Until its CPU time grows (bounded, so a starved machine fails rather than hangs).
            while of(&super::ticks(&[me])).unwrap_or(0) <= first {
                assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the spinning thread's CPU time never grew");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            spin.join().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod zero_loss_test {
    #[test]
    fn ten_percent_is_not_zero() {
        assert!(super::zero_loss("10 packets transmitted, 10 packets received, 0% packet loss"));
        assert!(super::zero_loss("3 packets transmitted, 3 received, 0% packet loss, time 2003ms"));
        assert!(!super::zero_loss("10 packets transmitted, 9 packets received, 10% packet loss"));
        assert!(!super::zero_loss("20 packets transmitted, 16 received, 20% packet loss"));
        assert!(!super::zero_loss("no summary"));
    }

    #[test]
    fn metrics_are_read_from_the_log() {
        let m = super::parse_metrics(
            "[2026 INFO nic_device::nic]   tx_tso_packets: 3\n[x INFO y]   dma_errors: 1\n[x INFO y]   tx_tso_packets: 5\n",
        );
        assert_eq!(m.get("tx_tso_packets"), Some(&5));
        assert_eq!(m.get("dma_errors"), Some(&1));
    }
}

/// A global allocator that counts this thread's heap allocations (and reallocations), for tests that show
/// a steady state makes none: a test binary installs it with
/// `#[global_allocator] static A: nic_tests::Counting = nic_tests::Counting;` and reads [`allocations`].
pub struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Allocations and reallocations made by this thread so far (under [`Counting`]).
pub fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is passed on to the system allocator unchanged; the counter is a thread-local Cell
// with a constant initialiser and no destructor, so counting itself never allocates.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as alloc.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as alloc.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}
