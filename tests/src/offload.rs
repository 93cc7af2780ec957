//! The offload suite at guest level: Linux's e1000e in a guest, with `ethtool -K` features toggled one at a
//! time, moving TCP and UDP over a TAP both ways. Every frame on the wire is captured on the host side and
//! judged with etherparse (within the MTU, every IPv4/TCP/UDP checksum valid); guest counters must agree
//! with the host's; a guest VLAN sub-interface talks to a peer that handles tags itself. The same cases run
//! against nic-device or QEMU's in-process e1000e, so a report can set them side by side.

use crate::*;
use std::process::{Child, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    NicDevice,
    /// nic-device with the TAP offload mode: GSO frames and partial checksums cross the TAP.
    NicDeviceOffload,
    QemuE1000e,
    QemuIgb,
    QemuVirtioNet,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::NicDevice, Target::QemuE1000e, Target::QemuIgb, Target::QemuVirtioNet];

    pub fn name(&self) -> &'static str {
        match self {
            Target::NicDevice => "nic-device",
            Target::NicDeviceOffload => "nic-device offload",
            Target::QemuE1000e => "QEMU e1000e",
            Target::QemuIgb => "QEMU igb",
            Target::QemuVirtioNet => "QEMU virtio-net",
        }
    }

    /// QEMU's `-device` model and the guest modules that drive it.
    fn qemu_model(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Target::NicDevice | Target::NicDeviceOffload => None,
            Target::QemuE1000e => Some(("e1000e", "e1000e")),
            Target::QemuIgb => Some(("igb", "igb")),
            Target::QemuVirtioNet => Some(("virtio-net-pci", "virtio_pci,virtio_net")),
        }
    }
}

/// What became of a case. A feature change the driver refuses is neither a pass nor a failure: it is shown
/// as such, and the test decides which refusals it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// `ethtool -K` refused the toggle, so nothing was measured.
    Refused,
}

impl Outcome {
    pub fn of(pass: bool) -> Outcome {
        if pass {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Refused => "refused by driver",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl CaseResult {
    fn new(name: String, pass: bool, detail: String) -> CaseResult {
        CaseResult { name, outcome: Outcome::of(pass), detail }
    }
    pub fn pass(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

const REFUSED: &str = ": refused by the driver";

/// The row name of a toggle the driver refused to change.
pub fn refused_name(label: &str) -> String {
    format!("{label}{REFUSED}")
}

/// The case a row belongs to, whether it ran or its toggle was refused: what the report lines up.
pub fn case_key(name: &str) -> &str {
    name.strip_suffix(REFUSED).unwrap_or(name)
}

/// Feature toggles, one at a time (None: the driver's defaults).
pub const TOGGLES: [Option<&str>; 8] =
    [None, Some("tso"), Some("tx"), Some("rx"), Some("rxvlan"), Some("txvlan"), Some("rxhash"), Some("sg")];
const ALL_ON: &str =
    "ethtool -K eth0 tx on sg on tso on rx on rxvlan on txvlan on 2>/dev/null; ethtool -K eth0 rxhash on 2>/dev/null; true";
const TAP: &str = "tap0";
const VLAN_IP_HOST: &str = "10.79.0.1";
const VLAN_IP_GUEST: &str = "10.79.0.2";

struct Bench {
    target: Target,
    ns: Netns,
    _dev: Option<Device>,
    g: Guest,
    servers: Vec<Child>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn setup(target: Target) -> Bench {
    let ns = Netns::new();
    let modules = format!("{},8021q", target.qemu_model().map_or("e1000e", |m| m.1));
    let mut opts = GuestOpts { netns: Some(ns.name.clone()), ..Default::default() };
    // vnet_hdr=off: every model puts wire frames on the TAP (QEMU's e1000e and igb segment and checksum
    // themselves; virtio-net then offers the guest no offloads), so one judge fits all. nic-device's offload
    // mode puts GSO frames and partial checksums there, and its judge segments and completes them first.
    let nic = match target.qemu_model() {
        None => {
            opts.append = format!("nic.modules={modules}");
            TapNic::NicDevice { offload: target == Target::NicDeviceOffload, args: &[] }
        }
        Some((model, _)) => TapNic::Qemu { model, vnet_hdr: false, modules: &modules },
    };
    let dev = attach_tap(&ns, TAP, nic, &mut opts);
    let mut g = Guest::boot(&opts);
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 2 -W 2 {HOST_IP} >/dev/null && iperf3 -s -D"));
    let iperf = ns.command(std::path::Path::new("iperf3")).args(["-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let peer = ns.command(&bin("vlan-peer")).args([TAP, "100", VLAN_IP_HOST]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Bench { target, ns, _dev: dev, g, servers: vec![iperf, peer] }
}

struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

fn start_capture(ns: &Netns) -> Capture {
    let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
    let child = ns
        .command(std::path::Path::new("tcpdump"))
        // --immediate-mode: without it, packets wait in a kernel block for up to a second and a capture
        // stopped sooner loses them.
        .args(["-i", TAP, "-s", "0", "-B", "32768", "--immediate-mode", "-U", "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(file.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    // tcpdump says "listening on" once its socket is active.
    for _ in 0..500 {
        if std::fs::read_to_string(file.with_extension("log")).is_ok_and(|l| l.contains("listening on")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    Capture { child, file }
}

fn stop_capture(mut c: Capture) -> Vec<Vec<u8>> {
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
    let _ = c.child.wait();
    log::debug!("capture {}: {}", c.file.display(), std::fs::read_to_string(c.file.with_extension("log")).unwrap_or_default().trim());
    let frames = match crate::pcap::read(&c.file) {
        Ok(f) => f,
        Err(e) => {
            log::warn!(
                "capture {}: {e}; tcpdump said: {}",
                c.file.display(),
                std::fs::read_to_string(c.file.with_extension("log")).unwrap_or_default()
            );
            Vec::new()
        }
    };
    let _ = std::fs::remove_file(&c.file);
    let _ = std::fs::remove_file(c.file.with_extension("log"));
    frames
}

fn traffic(b: &mut Bench, label: &str) -> Vec<CaseResult> {
    let mut rows = Vec::new();
    let runs: [(&str, bool, &str); 4] = [
        ("TCP guest->host", true, ""),
        ("TCP host->guest", false, ""),
        ("UDP guest->host", true, "-u -b 30M -l 1400"),
        ("UDP host->guest", false, "-u -b 30M -l 1400"),
    ];
    for (name, from_guest, extra) in runs {
        let (rc, out) = if from_guest {
            b.g.run(&format!("iperf3 -c {HOST_IP} -t 2 -f m {extra}"), Duration::from_secs(120))
        } else {
            b.ns.exec(&format!("timeout 60 iperf3 -c {GUEST_IP} -t 2 -f m {extra}"))
        };
        let rate = iperf3_mbits(&out).unwrap_or(0.0);
        let pass = rc == 0 && rate > 0.0;
        let detail = if pass { format!("{rate:.0} Mbit/s") } else { format!("rc {rc}: {}", out.lines().last().unwrap_or("")) };
        rows.push(CaseResult::new(format!("{label}: {name}"), pass, detail));
    }
    rows
}

/// The guest interface's packet counters (what `ip -s link` shows, from the driver: the card's statistics
/// registers for e1000e and igb) and the host TAP's.
fn counters(b: &mut Bench) -> (std::collections::HashMap<String, u64>, (u64, u64, u64, u64)) {
    std::thread::sleep(Duration::from_millis(300));
    let out = b.g.must("cd /sys/class/net/eth0/statistics && echo tx_packets $(cat tx_packets) rx_packets $(cat rx_packets)");
    let f: Vec<&str> = out.split_whitespace().collect();
    let g = f.chunks(2).filter_map(|c| Some((c.first()?.to_string(), c.get(1)?.parse().ok()?))).collect();
    (g, b.ns.link_stats(TAP))
}

fn run_toggle(b: &mut Bench, toggle: Option<&str>) -> Vec<CaseResult> {
    let label = match toggle {
        None => "defaults".to_string(),
        Some(f) => format!("{f} off"),
    };
    b.g.must(ALL_ON);
    if let Some(f) = toggle {
        let (rc, out) = b.g.run(&format!("ethtool -K eth0 {f} off"), Duration::from_secs(30));
        if rc != 0 {
            // e1000e keeps some features tied together (txvlan follows rxvlan): the driver says so.
            let why = out.lines().find(|l| l.contains("requested")).unwrap_or("refused").trim().to_string();
            return vec![CaseResult { name: refused_name(&label), outcome: Outcome::Refused, detail: why }];
        }
    }
    let offload = b.target == Target::NicDeviceOffload;
    let m0 = b._dev.as_ref().map(|d| d.metrics()).unwrap_or_default();
    let (g0, t0) = counters(b);
    let cap = start_capture(&b.ns);
    let mut rows = traffic(b, &label);
    let frames = stop_capture(cap);
    let (g1, t1) = counters(b);
    let m1 = b._dev.as_ref().map(|d| d.metrics()).unwrap_or_default();
    let v = if offload { crate::pcap::judge_offload(&frames) } else { crate::pcap::judge(&frames) };
    rows.push(CaseResult::new(
        format!("{label}: wire frames within MTU, checksums valid"),
        v.clean() && v.frames > 100,
        if v.clean() && offload {
            format!(
                "{} frames ({} GSO frames segmented by the judge, {} partial checksums completed)",
                v.frames, v.gso_frames, v.partial_csum
            )
        } else if v.clean() {
            format!("{} frames", v.frames)
        } else {
            format!(
                "{} frames, {} unparseable, {} oversize, {} bad IP, {} bad L4: {}",
                v.frames,
                v.unparsed,
                v.oversize,
                v.bad_ip_csum,
                v.bad_l4_csum,
                v.problems.join("; ")
            )
        },
    ));
    let d = |k: &str| g1.get(k).copied().unwrap_or(0) - g0.get(k).copied().unwrap_or(0);
    let (mut tap_rx, mut tap_tx) = (t1.0 - t0.0, t1.1 - t0.1);
    // In offload mode one frame on the TAP stands for several on the wire: the card's own counts of the
    // GSO frames it sent or cut, and of the segments they stood for, turn the TAP's counts into wire frames.
    let md = |k: &str| m1.get(k).copied().unwrap_or(0) - m0.get(k).copied().unwrap_or(0);
    let wire_note = if offload {
        tap_rx = tap_rx - md("tx_gso_frames") + md("tx_gso_segments");
        tap_tx = tap_tx - md("rx_gso_frames") + md("rx_gso_segments") - md("rx_gso_errors");
        format!(" (wire frames: {} GSO frames sent, {} received)", md("tx_gso_frames"), md("rx_gso_frames"))
    } else {
        String::new()
    };
    let ok = d("tx_packets") == tap_rx && d("rx_packets") == tap_tx;
    rows.push(CaseResult::new(
        format!("{label}: guest counters agree with the host"),
        ok,
        format!("guest tx {} / host rx {tap_rx}, guest rx {} / host tx {tap_tx}{wire_note}", d("tx_packets"), d("rx_packets")),
    ));
    rows
}

fn run_vlan(b: &mut Bench) -> Vec<CaseResult> {
    let mut rows = Vec::new();
    b.g.must(&format!(
        "ip link add link eth0 name eth0.100 type vlan id 100 && ip addr add {VLAN_IP_GUEST}/24 dev eth0.100 && ip link set eth0.100 up"
    ));
    for toggle in [None, Some("rxvlan"), Some("txvlan")] {
        b.g.must(ALL_ON);
        if let Some(f) = toggle {
            let (rc, out) = b.g.run(&format!("ethtool -K eth0 {f} off"), Duration::from_secs(30));
            if rc != 0 {
                let why = out.lines().find(|l| l.contains("requested")).unwrap_or("refused").trim().to_string();
                rows.push(CaseResult {
                    name: refused_name(&format!("VLAN 100 sub-interface to a tag-handling peer ({f} off)")),
                    outcome: Outcome::Refused,
                    detail: why,
                });
                continue;
            }
        }
        let cap = start_capture(&b.ns);
        let (rc, out) = b.g.run(&format!("ping -c 10 -i 0.1 -W 2 {VLAN_IP_HOST}"), Duration::from_secs(60));
        let frames = stop_capture(cap);
        let tagged = frames
            .iter()
            .filter(|f| f.len() > 16 && f[12..14] == [0x81, 0x00] && u16::from_be_bytes([f[14], f[15]]) & 0xfff == 100)
            .count();
        let pass = rc == 0 && crate::zero_loss(&out) && tagged >= 10;
        let label = toggle.map(|f| format!("{f} off")).unwrap_or("defaults".into());
        rows.push(CaseResult::new(
            format!("VLAN 100 sub-interface to a tag-handling peer ({label})"),
            pass,
            format!("{} tagged frames; {}", tagged, out.lines().find(|l| l.contains("packet loss")).unwrap_or("no ping summary")),
        ));
    }
    b.g.must(ALL_ON);
    b.g.must("ip link del eth0.100");
    rows
}

/// One 4000-byte write with TSO on (three segments): on the wire, PSH must be on the last segment only
/// (the datasheet's rule, which Linux's GSO follows too). iperf3 opens its data connection with a 37-byte
/// cookie, then writes the 4000 bytes.
fn run_tso_flags(b: &mut Bench) -> CaseResult {
    b.g.must(ALL_ON);
    // On nic-device the card's own counters show that it, not the guest's software GSO, cut the segments.
    let tso_count = |b: &Bench| b._dev.as_ref().map(|d| d.metrics().get("tx_tso_packets").copied().unwrap_or(0));
    let tso0 = tso_count(b);
    let cap = start_capture(&b.ns);
    let (rc, out) = b.g.run(&format!("iperf3 -c {HOST_IP} -n 4000 -l 4000 -f m"), Duration::from_secs(60));
    let mut frames = stop_capture(cap);
    if b.target == Target::NicDeviceOffload {
        // The send crossed the TAP as one GSO frame: the flags are judged on what it stands for on a wire.
        frames = frames.iter().flat_map(|f| crate::pcap::to_wire_equivalent(f).0).collect();
    }
    // The data connection is the one with the most payload from the guest to port 5201.
    // (payload length, flags) per sequence number: a retransmission (a loaded machine can time one out)
    // repeats a segment already counted and is left out.
    let mut by_port: std::collections::HashMap<u16, Vec<(usize, u8)>> = std::collections::HashMap::new();
    let mut seen: std::collections::HashSet<(u16, u32)> = std::collections::HashSet::new();
    let mut retransmitted = 0;
    for f in &frames {
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) else { continue };
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) = (&p.net, &p.transport) else { continue };
        if ip.header().source_addr().to_string() == GUEST_IP && t.destination_port() == 5201 && !t.payload().is_empty() {
            if !seen.insert((t.source_port(), t.sequence_number())) {
                retransmitted += 1;
                continue;
            }
            by_port.entry(t.source_port()).or_default().push((t.payload().len(), t.slice()[13]));
        }
    }
    let mut data = by_port.into_values().max_by_key(|v| v.iter().map(|s| s.0).sum::<usize>()).unwrap_or_default();
    if data.first().is_some_and(|s| s.0 == 37) {
        data.remove(0);
    }
    let total: usize = data.iter().map(|s| s.0).sum();
    let psh: Vec<usize> = data.iter().enumerate().filter(|(_, s)| s.1 & 0x08 != 0).map(|(i, _)| i).collect();
    let tso = tso_count(b).zip(tso0).map(|(a, z)| a - z);
    let pass = rc == 0 && total == 4000 && data.len() >= 3 && psh == vec![data.len() - 1] && tso.is_none_or(|n| n >= 1);
    CaseResult {
        name: "TSO send of 4000 bytes: PSH on its last segment only".into(),
        outcome: Outcome::of(pass),
        detail: format!(
            "{} frames captured ({retransmitted} retransmissions left out); data segments {:?}, PSH on {psh:?}; card TSO packets {}{}",
            frames.len(),
            data.iter().map(|s| s.0).collect::<Vec<_>>(),
            tso.map_or("not visible".to_string(), |n| n.to_string()),
            if !pass { format!("; iperf3 rc {rc}: {out}") } else { String::new() }
        ),
    }
}

/// Runs every case against `target`. `toggles` limits the feature toggles (all when `None`).
pub fn run_suite(target: Target, toggles: Option<&[Option<&str>]>) -> Vec<CaseResult> {
    let _l = guest_lock();
    let mut b = setup(target);
    let mut rows = Vec::new();
    let quick: &[Option<&str>] = &[None];
    let toggles = if std::env::var_os("NIC_OFFLOAD_QUICK").is_some() { Some(quick) } else { toggles };
    for t in toggles.unwrap_or(&TOGGLES) {
        rows.extend(run_toggle(&mut b, *t));
    }
    rows.extend(run_vlan(&mut b));
    rows.push(run_tso_flags(&mut b));
    rows
}

/// The report: one row per case, one column per target, and where a target's outcome differs from
/// nic-device's.
pub fn report(results: &[(Target, Vec<CaseResult>)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, rows) in results {
        for r in rows {
            if !names.contains(&case_key(&r.name)) {
                names.push(case_key(&r.name));
            }
        }
    }
    let w = names.iter().map(|n| n.len()).max().unwrap_or(10).max(4);
    let col = 17;
    let mut s = format!("{:w$}", "case");
    for (t, _) in results {
        s.push_str(&format!("  {:col$}", t.name()));
    }
    s.push_str(&format!("\n{}\n", "-".repeat(w + (col + 2) * results.len())));
    let mut diffs = Vec::new();
    for n in &names {
        s.push_str(&format!("{n:w$}"));
        let ours = results.first().and_then(|(_, rows)| rows.iter().find(|r| case_key(&r.name) == *n));
        for (t, rows) in results {
            let r = rows.iter().find(|r| case_key(&r.name) == *n);
            let cell = r.map(|r| r.outcome.label()).unwrap_or("-");
            let differs = matches!((ours, r), (Some(o), Some(r)) if o.outcome != r.outcome);
            s.push_str(&format!("  {:col$}", if differs { format!("{cell} *") } else { cell.to_string() }));
            if let (true, Some(r)) = (differs, r) {
                diffs.push((n.to_string(), t.name(), r.detail.clone(), ours.map(|o| o.detail.clone()).unwrap_or_default()));
            }
        }
        s.push('\n');
    }
    if !diffs.is_empty() {
        s.push_str("\n* differs from nic-device:\n");
        for (n, t, d, ours) in diffs {
            s.push_str(&format!("  {n}\n    nic-device: {ours}\n    {t}: {d}\n"));
        }
    }
    s
}
