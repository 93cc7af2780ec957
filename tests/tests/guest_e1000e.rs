//! Linux's e1000e driver in a QEMU guest (TCG) judges nic-device attached over vfio-user.

use nic_tests::*;
use std::time::Duration;

const DMESG_BAD: &str = "dmesg | grep -i e1000e | grep -iE 'error|fail|invalid|unsupported|hang|checksum|MDI |blocked' || true";

/// Disables IPv6 on both ends so the only traffic is what the test sends (ARP, ICMP, TCP).
fn quiet_ipv6(g: &mut Guest, rig: &TapRig) {
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    rig.ns.must(&format!("sysctl -qw net.ipv6.conf.{}.disable_ipv6=1", rig.tap));
}

fn probe_checks(g: &mut Guest) {
    let drv = g.must("for d in /sys/bus/pci/devices/*; do if [ \"$(cat $d/vendor):$(cat $d/device)\" = 0x8086:0x10d3 ]; then basename $(readlink $d/driver); fi; done");
    assert_eq!(drv.trim(), "e1000e", "8086:10d3 bound to: {drv}");
    let bad = g.must(DMESG_BAD);
    assert!(bad.trim().is_empty(), "driver complained:\n{bad}");
    let probe = g.must("dmesg | grep e1000e");
    assert!(probe.contains("Intel(R) PRO/1000 Network Connection"), "{probe}");
}

fn link_checks(g: &mut Guest) {
    let et = g.must("ethtool eth0");
    assert!(et.contains("Speed: 1000Mb/s"), "{et}");
    assert!(et.contains("Duplex: Full"), "{et}");
    assert!(et.contains("Link detected: yes"), "{et}");
}

fn ping_100(g: &mut Guest) {
    let out = g.must(&format!("ping -c 100 -i 0.02 -W 2 {HOST_IP}"));
    assert!(out.contains("100 packets transmitted, 100 packets received, 0% packet loss"), "{out}");
}

/// Guest counters (the device's statistics registers as the driver reads them) against the host side,
/// as deltas over the traffic between two snapshots.
struct Snap {
    guest: std::collections::HashMap<String, u64>,
    tap: (u64, u64, u64, u64),
}

fn snapshot(g: &mut Guest, rig: &TapRig) -> Snap {
    std::thread::sleep(Duration::from_millis(300));
    Snap { guest: g.ethtool_stats("eth0"), tap: rig.ns.link_stats(&rig.tap) }
}

fn counters_agree(a: &Snap, b: &Snap) {
    let d = |k: &str| b.guest[k] - a.guest[k];
    let (tap_rx, tap_tx) = (b.tap.0 - a.tap.0, b.tap.1 - a.tap.1);
    let (tap_rx_bytes, tap_tx_bytes) = (b.tap.2 - a.tap.2, b.tap.3 - a.tap.3);
    assert_eq!(d("tx_packets"), tap_rx, "guest tx_packets vs host tap rx");
    assert_eq!(d("rx_packets"), tap_tx, "guest rx_packets vs host tap tx");
    // Octet counters include the 4-byte FCS; short frames are padded to 60 bytes on the wire.
    assert_eq!(d("tx_bytes"), tap_rx_bytes + 4 * tap_rx, "tx_bytes");
    let rxb = d("rx_bytes");
    assert!(rxb >= tap_tx_bytes + 4 * tap_tx && rxb <= tap_tx_bytes + 22 * tap_tx, "rx_bytes {rxb} vs host {tap_tx_bytes}");
    assert!(tap_rx >= 100 && tap_tx >= 100, "{tap_rx} {tap_tx}");
}

fn intmode_case(mode: u32) {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    let mut g =
        Guest::boot(&GuestOpts { sockets: vec![rig.socket()], append: format!("nic.modargs=IntMode={mode}"), ..Default::default() });
    probe_checks(&mut g);
    quiet_ipv6(&mut g, &rig);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    link_checks(&mut g);
    g.must(&format!("ping -c 1 -W 2 {HOST_IP}"));
    let before = snapshot(&mut g, &rig);
    ping_100(&mut g);
    let after = snapshot(&mut g, &rig);
    let irqs = g.interrupts("eth0");
    let find = |k: &str| irqs.iter().filter(|(n, _)| n.contains(k)).map(|(_, c)| *c).sum::<u64>();
    match mode {
        0 => assert!(find("IO-APIC") > 0, "INTx: {irqs:?}"),
        1 => {
            assert!(find("PCI-MSI-") > 0, "MSI: {irqs:?}");
            assert_eq!(find("PCI-MSIX"), 0, "{irqs:?}");
        }
        _ => {
            assert!(find("eth0-rx-0") > 0, "MSI-X RX vector: {irqs:?}");
            assert!(find("eth0-tx-0") > 0, "MSI-X TX vector: {irqs:?}");
            assert!(irqs.iter().all(|(n, _)| n.contains("PCI-MSIX")), "{irqs:?}");
        }
    }
    counters_agree(&before, &after);
    self_test(&mut g);
}

/// The stock driver's offline self-test: register, NVM, interrupt, loopback and link tests all pass, and
/// the interface carries traffic again afterwards.
fn self_test(g: &mut Guest) {
    let (rc, out) = g.run("ethtool -t eth0 offline", Duration::from_secs(240));
    eprintln!("ethtool -t eth0 offline:\n{out}");
    assert!(out.contains("The test result is PASS"), "rc {rc}:\n{out}\n{}", g.must("dmesg | tail -20"));
    for (name, _) in [("Register test", 0), ("Eeprom test", 0), ("Interrupt test", 0), ("Loopback test", 0), ("Link test", 0)] {
        let line = out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        assert_eq!(line.split_whitespace().last(), Some("0"), "{line}");
    }
    g.must(&format!(
        "for i in $(seq 100); do [ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ] && break; sleep 0.1; done; ping -c 2 -W 3 {HOST_IP}"
    ));
}

#[test]
fn intmode_0_legacy_intx() {
    intmode_case(0);
}

#[test]
fn intmode_1_msi() {
    intmode_case(1);
}

#[test]
fn intmode_2_msix() {
    intmode_case(2);
}

fn host_sha256(rig: &TapRig, url: &str) -> String {
    rig.ns
        .must(&format!("python3 -c \"import urllib.request,hashlib;print(hashlib.sha256(urllib.request.urlopen('{url}', timeout=120).read()).hexdigest())\""))
        .trim()
        .to_string()
}

#[test]
fn iperf3_and_verified_transfers_with_tso() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    let k = g.must("ethtool -k eth0");
    assert!(k.contains("tcp-segmentation-offload: on"), "{k}");
    assert!(k.contains("tx-checksumming: on") && k.contains("rx-checksumming: on"), "{k}");

    // iperf3 both ways against a host server in the namespace.
    let mut srv = rig.ns.command(std::path::Path::new("iperf3"));
    srv.args(["-s", "-p", "5201"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut srv = srv.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for dir in ["", "-R"] {
        let out = g.must(&format!("iperf3 -c {HOST_IP} -t 4 {dir} -f m"));
        let recv = out.lines().find(|l| l.contains("receiver")).unwrap_or_else(|| panic!("{out}"));
        let mbit: f64 = recv.split_whitespace().rev().nth(2).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(mbit > 1.0, "iperf3 {dir}: {recv}");
        eprintln!("iperf3 {} {recv}", if dir.is_empty() { "guest->host" } else { "host->guest" });
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let s = g.ethtool_stats("eth0");
    assert!(s["tx_tcp_seg_good"] > 0, "TSO was used: {s:?}");
    assert_eq!(s["tx_tcp_seg_failed"], 0);
    assert!(s["rx_csum_offload_good"] > 0);
    assert_eq!(s["rx_csum_offload_errors"], 0);

    verified_transfers(&mut g, &rig);
}

/// A timer-polling device (`--timer-poll`): the stock driver probes (thousands of register reads, each
/// waited for), answers 100 pings and moves 8 MiB each way intact, and the device picked up the guest's
/// register writes on its timer (`timer_poll_hits`) instead of being woken by each.
#[test]
fn a_timer_polling_device_serves_the_stock_driver() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&["--timer-poll", "200"]);
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    probe_checks(&mut g);
    quiet_ipv6(&mut g, &rig);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    link_checks(&mut g);
    ping_100(&mut g);
    verified_transfers(&mut g, &rig);
    let (polls, hits) = (rig.dev.stat("device", "timer_polls"), rig.dev.stat("device", "timer_poll_hits"));
    eprintln!("timer polls {polls}, of which found messages {hits}");
    assert!(hits > 0 && hits <= polls, "timer polls {polls}, of which found messages {hits}");
}

/// 8 MiB verified end to end each way: guest -> host (busybox httpd) and host -> guest (python http.server).
fn verified_transfers(g: &mut Guest, rig: &TapRig) {
    g.must("mkdir -p /tmp/www && dd if=/dev/urandom of=/tmp/www/blob bs=1M count=8 2>/dev/null && httpd -p 8080 -h /tmp/www");
    let guest_sum = g.must("sha256sum /tmp/www/blob").split_whitespace().next().unwrap().to_string();
    assert_eq!(host_sha256(rig, &format!("http://{GUEST_IP}:8080/blob")), guest_sum, "guest->host data");
    let dir = std::env::temp_dir().join(unique("www"));
    std::fs::create_dir_all(&dir).unwrap();
    let (rc, _) = sh(&format!("dd if=/dev/urandom of={}/blob bs=1M count=8 2>/dev/null", dir.display()));
    assert_eq!(rc, 0);
    let host_sum = sh(&format!("sha256sum {}/blob", dir.display())).1.split_whitespace().next().unwrap().to_string();
    let mut http = rig.ns.command(std::path::Path::new("python3"));
    http.args(["-m", "http.server", "8000", "--bind", HOST_IP, "--directory"]).arg(&dir);
    http.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut http = http.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let got = g.must(&format!("wget -q -O /tmp/r http://{HOST_IP}:8000/blob && sha256sum /tmp/r"));
    let _ = http.kill();
    let _ = http.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.split_whitespace().next().unwrap(), host_sum, "host->guest data");
}

#[test]
fn link_down_up_and_module_reload() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 3 -W 2 {HOST_IP}"));
    g.must("ip link set eth0 down");
    assert_eq!(g.must("cat /sys/class/net/eth0/operstate"), "down");
    g.must("ip link set eth0 up; for i in $(seq 100); do [ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ] && break; sleep 0.1; done");
    g.must(&format!("ping -c 3 -W 2 {HOST_IP}"));
    g.must("rmmod e1000e && modprobe e1000e");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 5 -W 2 {HOST_IP}"));
    probe_checks(&mut g);
}

#[test]
fn guest_reboot_and_qemu_restart_keep_working() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    let opts = GuestOpts { sockets: vec![rig.socket()], allow_reboot: true, ..Default::default() };
    let mut g = Guest::boot(&opts);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 3 -W 2 {HOST_IP}"));
    // Reboot: QEMU resets the machine and sends DEVICE_RESET.
    g.send("reboot -f");
    g.wait_ready();
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 3 -W 2 {HOST_IP}"));
    drop(g);
    // A new QEMU attaches to the same nic-device process.
    std::thread::sleep(Duration::from_millis(300));
    let mut g = Guest::boot(&opts);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 5 -W 2 {HOST_IP}"));
    probe_checks(&mut g);
    let log = rig.dev.log_text();
    assert!(log.matches("DEVICE_RESET").count() >= 2, "{log}");
    assert!(log.contains("client disconnected"), "{log}");
}

#[test]
fn two_guests_over_stream_backends() {
    init_logs();
    let _l = guest_lock();
    let dir = std::env::temp_dir();
    let link = dir.join(format!("{}.link", unique("stream")));
    let (sa, sb) = (dir.join(format!("{}.sock", unique("devA"))), dir.join(format!("{}.sock", unique("devB"))));
    let listen = format!("stream:{}", link.display());
    let connect = format!("stream-connect:{}", link.display());
    let _a = Device::start(None, &sa, &["--backend", &listen, "--mac", "52:54:00:00:00:0a"]);
    let _b = Device::start(None, &sb, &["--backend", &connect, "--mac", "52:54:00:00:00:0b"]);
    let mut ga = Guest::boot(&GuestOpts { sockets: vec![sa.clone()], ..Default::default() });
    let mut gb = Guest::boot(&GuestOpts { sockets: vec![sb.clone()], ..Default::default() });
    ga.link_up("eth0", "10.78.0.1/24");
    gb.link_up("eth0", "10.78.0.2/24");
    let out = ga.must("ping -c 10 -i 0.1 -W 2 10.78.0.2");
    assert!(zero_loss(&out), "{out}");
    let out = gb.must("ping -c 10 -i 0.1 -W 2 10.78.0.1");
    assert!(zero_loss(&out), "{out}");
    assert_eq!(ga.must("cat /sys/class/net/eth0/address"), "52:54:00:00:00:0a");
}

/// The receive delay timers as the stock driver sets them (module parameters RxIntDelay/RxAbsIntDelay, in
/// 1.024 us units, with interrupt throttling off): the same UDP flood from the host raises far fewer RX
/// interrupts with a 20 ms packet delay than with none. Interrupt counts, not times, are compared.
#[test]
fn receive_delay_timers_cut_the_interrupt_rate() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], append: "nic.modargs=IntMode=2".into(), ..Default::default() });
    quiet_ipv6(&mut g, &rig);
    let mut counts = Vec::new();
    for delay in [0u32, 20000] {
        g.must(&format!("rmmod e1000e; modprobe e1000e IntMode=2 InterruptThrottleRate=0 RxIntDelay={delay} RxAbsIntDelay={}", 2 * delay));
        g.link_up("eth0", &format!("{GUEST_IP}/24"));
        g.must(&format!("ping -c 1 -W 2 {HOST_IP}"));
        g.must("iperf3 -s -D -1");
        std::thread::sleep(Duration::from_millis(500));
        let rx = |g: &mut Guest| g.interrupts("eth0").iter().filter(|(n, _)| n.contains("eth0-rx-0")).map(|(_, c)| *c).sum::<u64>();
        let before = rx(&mut g);
        rig.ns.must(&format!("iperf3 -c {GUEST_IP} -u -b 20M -l 1000 -t 2"));
        counts.push(rx(&mut g) - before);
    }
    eprintln!("RX interrupts during a 2 s, 20 Mbit/s UDP flood: RDTR 0 -> {}, RDTR 20000 -> {}", counts[0], counts[1]);
    assert!(counts[0] > 500, "{counts:?}");
    assert!(counts[1] * 4 < counts[0], "{counts:?}");
}

/// The offline self-test per part on QEMU 11.1's own e1000e, in the same run as ours: a record of where that
/// model departs from the hardware that the stock driver checks (ours passes every part, see the IntMode
/// tests). Found here on QEMU 11.1: the register test fails at TXCW (0x178, which reads back 0 instead of
/// what was written: code 376), the interrupt test fails (code 4: a forced cause posts no interrupt) and the
/// loopback test fails (code 13: the frames do not come back); the NVM and link tests pass.
#[test]
fn self_test_parts_on_qemu_e1000e_for_comparison() {
    init_logs();
    let _l = guest_lock();
    let ns = Netns::new();
    let mut opts = GuestOpts { netns: Some(ns.name.clone()), ..Default::default() };
    attach_tap(&ns, "qtap0", TapNic::Qemu { model: "e1000e", vnet_hdr: false, modules: "e1000e" }, &mut opts);
    let mut g = Guest::boot(&opts);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    let (_, out) = g.run("ethtool -t eth0 offline", Duration::from_secs(240));
    eprintln!("QEMU e1000e, ethtool -t eth0 offline:\n{out}");
    let part = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
    };
    let parts: Vec<(&str, u64)> =
        ["Register test", "Eeprom test", "Interrupt test", "Loopback test", "Link test"].iter().map(|n| (*n, part(n))).collect();
    eprintln!("QEMU e1000e self-test parts (0 = pass): {parts:?}");
    assert!(out.contains("The test result is FAIL"), "QEMU's model now passes the whole self-test:\n{out}");
    assert_eq!(part("Eeprom test"), 0, "{out}");
    assert_eq!(part("Link test"), 0, "{out}");
    assert_eq!(part("Register test"), 0x178, "QEMU's register test result changed:\n{out}");
    assert_ne!(part("Interrupt test"), 0, "QEMU's interrupt test result changed:\n{out}");
    assert_ne!(part("Loopback test"), 0, "QEMU's loopback test result changed:\n{out}");
    let dmesg = g.must("dmesg | grep -i 'test failed' || true");
    eprintln!("QEMU e1000e self-test messages:\n{dmesg}");
}

/// Jumbo frames: at MTU 9000 the stock driver switches the card to long packets (RCTL.LPE) and packet-split
/// receive (RCTL.DTYP=01, PSRCTL: a 128-byte header buffer and three pages). 9000-byte packets with DF set
/// cross both ways, iperf3 runs both ways with frames far above 1514 bytes on the host TAP, and data is
/// verified end to end.
#[test]
fn jumbo_frames_at_mtu_9000() {
    init_logs();
    let _l = guest_lock();
    let rig = TapRig::new(&[]);
    rig.ns.must(&format!("ip link set {} mtu 9000", rig.tap));
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    quiet_ipv6(&mut g, &rig);
    g.must("ip link set eth0 mtu 9000");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    assert!(g.must("ip link show eth0").contains("mtu 9000"));
    // 8972 bytes of ICMP payload + 28 = a 9000-byte IP packet, not fragmented (DF from the host).
    let out = rig.ns.must(&format!("ping -M do -s 8972 -c 5 -i 0.2 -W 2 {GUEST_IP}"));
    assert!(zero_loss(&out), "host -> guest jumbo ping: {out}");
    let out = g.must(&format!("ping -s 8972 -c 5 -W 2 {HOST_IP}"));
    assert!(zero_loss(&out), "guest -> host jumbo ping: {out}");

    let mut srv = rig.ns.command(std::path::Path::new("iperf3"));
    srv.args(["-s", "-p", "5201"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut srv = srv.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for dir in ["", "-R"] {
        let before = rig.ns.link_stats(&rig.tap);
        let out = g.must(&format!("iperf3 -c {HOST_IP} -t 3 {dir} -f m"));
        let after = rig.ns.link_stats(&rig.tap);
        let recv = out.lines().find(|l| l.contains("receiver")).unwrap_or_else(|| panic!("{out}"));
        let mbit: f64 = recv.split_whitespace().rev().nth(2).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(mbit > 1.0, "iperf3 {dir}: {recv}");
        // The data direction's average frame on the host TAP: (rx = from the guest, tx = to the guest).
        let (frames, bytes) =
            if dir.is_empty() { (after.0 - before.0, after.2 - before.2) } else { (after.1 - before.1, after.3 - before.3) };
        let avg = bytes / frames.max(1);
        eprintln!(
            "MTU 9000 iperf3 {}: {recv}; {frames} frames, {avg} bytes on average",
            if dir.is_empty() { "guest->host" } else { "host->guest" }
        );
        assert!(avg > 4000, "iperf3 {dir}: average frame {avg} bytes: jumbo frames not used");
    }
    let _ = srv.kill();
    let _ = srv.wait();

    g.must("mkdir -p /tmp/www && dd if=/dev/urandom of=/tmp/www/blob bs=1M count=4 2>/dev/null && httpd -p 8080 -h /tmp/www");
    let guest_sum = g.must("sha256sum /tmp/www/blob").split_whitespace().next().unwrap().to_string();
    assert_eq!(host_sha256(&rig, &format!("http://{GUEST_IP}:8080/blob")), guest_sum, "guest->host data");
    let dir = std::env::temp_dir().join(unique("www"));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(sh(&format!("dd if=/dev/urandom of={}/blob bs=1M count=4 2>/dev/null", dir.display())).0, 0);
    let host_sum = sh(&format!("sha256sum {}/blob", dir.display())).1.split_whitespace().next().unwrap().to_string();
    let mut http = rig.ns.http_server(HOST_IP, &dir);
    let got = g.must(&format!("wget -q -O /tmp/r http://{HOST_IP}:8000/blob && sha256sum /tmp/r"));
    let _ = http.kill();
    let _ = http.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.split_whitespace().next().unwrap(), host_sum, "host->guest data");

    let s = g.ethtool_stats("eth0");
    assert_eq!(s["rx_long_length_errors"], 0, "{s:?}");
    assert_eq!(s["rx_csum_offload_errors"], 0, "{s:?}");
    let bad = g.must(DMESG_BAD);
    assert!(bad.trim().is_empty(), "driver complained:\n{bad}");
    // Counters the device logs only when they are not zero.
    let m = rig.dev.metrics();
    assert!(m["rx_frames"] > 10_000, "{m:?}");
    assert_eq!(m.get("rx_unsupported"), None, "{m:?}");
    assert_eq!(m.get("rx_length_errors"), None, "{m:?}");
}
