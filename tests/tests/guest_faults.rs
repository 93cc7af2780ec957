//! Faults injected through the control socket, judged by the stock Linux e1000e driver in a QEMU guest
//! (TCG): each fault's documented reaction in the driver, and its recovery. Our own driver's reactions are
//! in control.rs.

use nic_tests::*;
use std::time::{Duration, Instant};

fn quiet_ipv6(g: &mut Guest, rig: &TapRig) {
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    rig.ns.must(&format!("sysctl -qw net.ipv6.conf.{}.disable_ipv6=1", rig.tap));
}

/// A nic-device on a TAP in a private namespace, its control socket, and a Linux guest on it with eth0 up
/// and the host answering pings.
fn setup() -> (TapRig, std::path::PathBuf, Guest) {
    let rig = TapRig::new(&[]);
    let ctl = rig.dev.control.clone();
    let mut g = Guest::boot(&GuestOpts { sockets: vec![rig.socket()], ..Default::default() });
    quiet_ipv6(&mut g, &rig);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    g.must(&format!("ping -c 1 -W 3 {HOST_IP}"));
    (rig, ctl, g)
}

/// Waits (guest-side) until `cond` (a shell test) holds, for up to `secs`.
fn wait_until(g: &mut Guest, cond: &str, secs: u32) -> bool {
    let script = format!("(for i in $(seq {}); do {cond} && exit 0; sleep 0.1; done; exit 1)", secs * 10);
    g.run(&script, Duration::from_secs(secs as u64 + 30)).0 == 0
}

/// `ethtool -S eth0` counters after the driver's watchdog has read the card's statistics (every 2 s).
fn stats_settled(g: &mut Guest) -> std::collections::HashMap<String, u64> {
    std::thread::sleep(Duration::from_millis(2500));
    g.ethtool_stats("eth0")
}

/// Round-trip times in ms from ping's output.
fn rtts(out: &str) -> Vec<f64> {
    out.lines().filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()).collect()
}

fn ping_ok(g: &mut Guest, n: u32) {
    let out = g.must(&format!("ping -c {n} -i 0.2 -W 3 {HOST_IP}"));
    assert!(zero_loss(&out), "{out}");
}

fn reload(g: &mut Guest) -> String {
    g.must("dmesg -c > /dev/null; rmmod e1000e; modprobe e1000e; sleep 1; dmesg")
}

/// Link down, up and flapping; the PHY not answering and a bad or changed NVM at probe.
#[test]
fn linux_reacts_to_link_phy_and_nvm_faults() {
    init_logs();
    let _l = guest_lock();
    let (rig, ctl, mut g) = setup();

    // Link down: carrier off and the driver says so; up again: carrier back, traffic flows.
    g.must("dmesg -c > /dev/null");
    inject(&ctl, &["link-down"]);
    assert!(wait_until(&mut g, "[ \"$(cat /sys/class/net/eth0/carrier)\" = 0 ]", 10), "carrier stayed on");
    assert!(g.must("dmesg").contains("NIC Link is Down"), "{}", g.must("dmesg"));
    nicctl(&ctl, &["link-up"]);
    assert!(wait_until(&mut g, "[ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ]", 10), "carrier stayed off");
    assert!(g.must("dmesg").contains("NIC Link is Up 1000 Mbps Full Duplex"), "{}", g.must("dmesg"));
    ping_ok(&mut g, 3);

    // Flapping: two down/up cycles with a 4 s period, each seen by the driver.
    let changes = |g: &mut Guest| g.must("cat /sys/class/net/eth0/carrier_changes").trim().parse::<u64>().unwrap();
    let before = changes(&mut g);
    inject(&ctl, &["link-flap", "--delay", "4000", "--count", "2"]);
    std::thread::sleep(Duration::from_secs(9));
    assert!(wait_until(&mut g, "[ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ]", 10));
    assert_eq!(changes(&mut g) - before, 4, "two downs and two ups");
    ping_ok(&mut g, 3);

    // NVM checksum bad: the probe is refused with the driver's message; cleared, the card comes back.
    inject(&ctl, &["nvm-checksum", "--persistent"]);
    let dmesg = reload(&mut g);
    assert!(dmesg.contains("The NVM Checksum Is Not Valid"), "{dmesg}");
    assert_ne!(g.run("ip link show eth0", Duration::from_secs(10)).0, 0, "no interface without a valid NVM");
    nicctl(&ctl, &["clear", "nvm-checksum"]);
    reload(&mut g);
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    ping_ok(&mut g, 2);

    // Another address in the NVM: the interface takes it; a multicast one is refused at probe.
    inject(&ctl, &["nvm-mac", "--mac", "52:54:00:ab:cd:ef", "--persistent"]);
    reload(&mut g);
    assert_eq!(g.must("cat /sys/class/net/eth0/address"), "52:54:00:ab:cd:ef");
    inject(&ctl, &["nvm-mac", "--mac", "01:00:5e:00:00:01", "--persistent"]);
    let dmesg = reload(&mut g);
    assert!(dmesg.contains("Invalid MAC Address"), "{dmesg}");

    // The PHY not answering MDIC: the probe fails on the PHY; answering again, it succeeds.
    nicctl(&ctl, &["clear"]);
    inject(&ctl, &["phy-silent", "--persistent"]);
    let dmesg = reload(&mut g);
    eprintln!("probe with a silent PHY:\n{dmesg}");
    assert!(dmesg.contains("probe with driver e1000e failed"), "{dmesg}");
    assert_ne!(g.run("ip link show eth0", Duration::from_secs(10)).0, 0, "probe succeeded without a PHY:\n{dmesg}");
    assert!(rig.dev.stat("fault_hits", "phy-silent") > 0);
    nicctl(&ctl, &["clear"]);
    reload(&mut g);
    assert_eq!(g.must("cat /sys/class/net/eth0/address"), "52:54:00:12:34:56");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    ping_ok(&mut g, 3);
}

/// Receive faults: CRC errors counted as such, checksum errors counted and recovered in software,
/// truncated frames dropped by IP; DMA errors lose frames and the driver carries on.
#[test]
fn linux_reacts_to_receive_and_dma_faults() {
    init_logs();
    let _l = guest_lock();
    let (rig, ctl, mut g) = setup();
    let s0 = stats_settled(&mut g);

    // Five frames with a bad CRC: the card drops them, the driver counts rx_crc_errors.
    inject(&ctl, &["rx-drop", "--count", "5"]);
    let out = g.must(&format!("ping -c 10 -i 0.2 -W 1 {HOST_IP} || true"));
    assert!(out.contains("10 packets transmitted, 5 packets received"), "{out}");
    let s1 = stats_settled(&mut g);
    assert_eq!(s1["rx_crc_errors"] - s0["rx_crc_errors"], 5, "{s1:?}");

    // Three replies with checksum error status: counted, verified again in software, delivered.
    inject(&ctl, &["rx-bad-csum", "--count", "3"]);
    ping_ok(&mut g, 6);
    let s2 = stats_settled(&mut g);
    assert_eq!(s2["rx_csum_offload_errors"] - s1["rx_csum_offload_errors"], 3, "{s2:?}");

    // Three replies cut short: IP drops them as truncated.
    let truncated = |g: &mut Guest| {
        let t = g.must("grep IpExt: /proc/net/netstat");
        let mut l = t.lines();
        let (names, values) = (l.next().unwrap(), l.next().unwrap());
        let i = names.split_whitespace().position(|n| n == "InTruncatedPkts").unwrap();
        values.split_whitespace().nth(i).unwrap().parse::<u64>().unwrap()
    };
    let t0 = truncated(&mut g);
    inject(&ctl, &["rx-truncate", "--count", "3"]);
    let out = g.must(&format!("ping -c 6 -i 0.2 -W 1 {HOST_IP} || true"));
    assert!(out.contains("6 packets transmitted, 3 packets received"), "{out}");
    assert_eq!(truncated(&mut g) - t0, 3);

    // DMA errors: frames are lost (or a queue hangs and the driver resets the card), then traffic flows.
    inject(&ctl, &["dma-error", "--count", "6"]);
    g.run(&format!("ping -c 20 -i 0.1 -W 1 {HOST_IP}"), Duration::from_secs(60));
    assert_eq!(rig.dev.stat("fault_hits", "dma-error"), 6);
    assert!(wait_until(&mut g, &format!("ping -c 1 -W 1 {HOST_IP} > /dev/null"), 30), "no recovery after DMA errors");
    ping_ok(&mut g, 10);
}

/// Interrupt faults and latency: lost interrupts (MSI-X: receive stays dead until the interface is reset;
/// MSI: the driver's watchdog recovers), spurious ones are harmless, late interrupts, write-backs and doorbells show as latency, and a stalled transmit
/// queue is detected as a hang and cured by the driver's reset.
#[test]
fn linux_reacts_to_interrupt_latency_and_tx_stall_faults() {
    init_logs();
    let _l = guest_lock();
    let (rig, ctl, mut g) = setup();

    // Lost interrupts, MSI-X (the default): Linux sets IAM to all ones with CTRL_EXT.EIAME, so each RX/TX
    // message masks its cause in IMS until NAPI re-enables it; a message that never arrives leaves the
    // vector masked. The watchdog's software interrupt (ICS) cannot get through a masked cause: receive
    // stays dead until the interface is reset (down/up), which the card survives.
    inject(&ctl, &["irq-lost", "--for", "1500"]);
    g.run(&format!("ping -c 5 -i 0.2 -W 1 {HOST_IP}"), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rig.dev.stat("device", "irq_lost_injected") >= 1);
    let out = g.must(&format!("ping -c 3 -i 0.3 -W 1 {HOST_IP} || true"));
    assert!(out.contains("0 packets received"), "MSI-X: a lost message leaves its cause masked: {out}");
    let irq = nicctl_json(&ctl, &["irq"]);
    let ims: Vec<&str> = irq["ims"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(!ims.contains(&"RXQ0"), "RXQ0 masked: {irq}");
    g.must("ip link set eth0 down; ip link set eth0 up");
    assert!(wait_until(&mut g, "[ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ]", 10));
    ping_ok(&mut g, 5);

    // Lost interrupts, MSI: a message lost leaves its causes unacknowledged in ICR; the watchdog's software
    // interrupt (ICS RXDMT0, a fresh cause) sends a new message within seconds and the driver catches up.
    g.must("rmmod e1000e; modprobe e1000e IntMode=1");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));
    assert_eq!(nicctl_json(&ctl, &["irq"])["mode"], "Msi");
    let lost_before = rig.dev.stat("device", "irq_lost_injected");
    inject(&ctl, &["irq-lost", "--for", "1500"]);
    g.run(&format!("ping -c 5 -i 0.2 -W 1 {HOST_IP}"), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rig.dev.stat("device", "irq_lost_injected") > lost_before);
    assert!(wait_until(&mut g, &format!("ping -c 1 -W 1 {HOST_IP} > /dev/null"), 15), "MSI: no recovery after lost interrupts");
    ping_ok(&mut g, 5);
    g.must("rmmod e1000e; modprobe e1000e");
    g.link_up("eth0", &format!("{GUEST_IP}/24"));

    // Spurious interrupts: counted by the kernel, no harm.
    let sum = |g: &mut Guest| g.interrupts("eth0").iter().map(|(_, c)| *c).sum::<u64>();
    let before = sum(&mut g);
    inject(&ctl, &["irq-spurious", "--count", "30", "--delay", "20"]);
    std::thread::sleep(Duration::from_millis(1500));
    let seen = sum(&mut g) - before;
    assert_eq!(rig.dev.stat("device", "irq_spurious_injected"), 30);
    assert!(seen >= 30, "spurious interrupts reached the guest: {seen}");
    ping_ok(&mut g, 3);

    // Late interrupts, write-backs and doorbells: replies wait for the injected delay.
    for (fault, delay) in [("irq-late", 300.0), ("writeback-delay", 300.0), ("doorbell-latency", 200.0)] {
        inject(&ctl, &[fault, "--delay", &delay.to_string(), "--persistent"]);
        let out = g.must(&format!("ping -c 3 -i 0.5 -W 5 {HOST_IP}"));
        assert!(zero_loss(&out), "{fault}: {out}");
        let t = rtts(&out);
        // Late write-backs and doorbells hold the data itself back, so every round trip waits. A late
        // interrupt only delays the poll: another message already waiting for the vector (the watchdog's
        // software interrupt every 2 s, or an earlier late one that absorbed it, as a pending MSI-X vector
        // does) may poll the reply sooner, so only some round trips are sure to wait.
        let waited = t.iter().filter(|&&x| x >= delay).count();
        let want = if fault == "irq-late" { 1 } else { 3 };
        assert!(t.len() == 3 && waited >= want, "{fault}: round trips {t:?} under {delay} ms");
        if fault == "irq-late" {
            assert!(rig.dev.stat("device", "irq_late_injected") >= 3, "every reply's interrupt was held back");
        }
        nicctl(&ctl, &["clear", fault]);
        ping_ok(&mut g, 3);
    }

    // A stalled transmit queue: the driver finds the hang, resets the card (which ends the stall), and
    // traffic resumes.
    g.must("dmesg -c > /dev/null");
    let s0 = g.ethtool_stats("eth0");
    inject(&ctl, &["tx-stall"]);
    let t0 = Instant::now();
    // Enough sends to fill the transmit ring, so that the kernel's watchdog sees a stopped queue.
    g.run(&format!("ping -q -c 600 -i 0.01 -W 1 {HOST_IP} > /dev/null 2>&1"), Duration::from_secs(120));
    assert!(wait_until(&mut g, &format!("ping -c 1 -W 1 {HOST_IP} > /dev/null"), 60), "traffic did not resume after the stall");
    eprintln!("TX stall recovered after {:?}", t0.elapsed());
    let dmesg = g.must("dmesg");
    eprintln!("{dmesg}");
    assert!(dmesg.contains("Detected Hardware Unit Hang") || dmesg.contains("transmit queue 0 timed out"), "{dmesg}");
    assert!(dmesg.contains("Reset adapter unexpectedly"), "{dmesg}");
    assert!(g.ethtool_stats("eth0")["tx_timeout_count"] > s0["tx_timeout_count"]);
    assert!(nicctl_json(&ctl, &["faults"]).as_array().unwrap().is_empty(), "the reset ended the one-shot stall");
    ping_ok(&mut g, 5);
}
