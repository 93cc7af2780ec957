//! The stack's L2 devices against Linux: a bridge of ours joining two Linux namespaces (ARP and ping
//! through it, each host's address learned on its port, the host on the bridge with netfilter rules of its
//! own), and VLAN sub-interfaces talking to a peer that
//! handles 802.1Q tags itself (this host kernel has no VLAN interfaces), on a TAP and through our driver
//! and nic-device with the card's tag insertion and stripping on and off.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

fn finish(c: std::process::Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The card's interrupts read, from a topology's report.
fn interrupts_read(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("interrupts: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no interrupt count in the report: {report}"))
}

#[test]
fn a_bridge_of_ours_joins_two_linux_namespaces() {
    init_logs();
    let (n, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let topo = std::env::temp_dir().join(format!("{}.toml", unique("bridge")));
    // The host on the bridge has rules of its own: echo requests from A are dropped at its INPUT hook.
    let rules = topo.with_extension("nft");
    std::fs::write(
        &rules,
        "table inet h {\n chain input {\n  type filter hook input priority 0;\n  ip saddr 10.93.0.1 icmp type echo-request counter drop\n }\n}\n",
    )
    .unwrap();
    std::fs::write(
        &topo,
        format!(
            "[[device]]\nname = \"a\"\ntap = \"ta\"\n[[device]]\nname = \"b\"\ntap = \"tb\"\n\
             [[bridge]]\nname = \"br0\"\nports = [\"a\", \"b\"]\n\
             [[host]]\nname = \"h\"\ninterface = \"br0\"\nip = \"10.93.0.3/24\"\nnetfilter = \"{}\"\n",
            rules.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let c = run_topology_between(&n, &a, &b, &topo, 6);
    a.must("ip addr add 10.93.0.1/24 dev ta && ip link set ta up");
    b.must("ip addr add 10.93.0.2/24 dev tb && ip link set tb up");
    let (rc, out) = a.exec("ping -c 3 -i 0.2 -W 2 10.93.0.2");
    assert_eq!(rc, 0, "host A to host B through our bridge: {out}");
    let (rc, out) = b.exec("ping -c 2 -i 0.2 -W 2 10.93.0.3");
    assert_eq!(rc, 0, "host B to the stack on the bridge: {out}");
    let (rc, out) = a.exec("ping -c 1 -W 1 10.93.0.3");
    assert_ne!(rc, 0, "the host's own rules drop A's echo requests: {out}");
    let (mac_a, mac_b) =
        (a.must("cat /sys/class/net/ta/address").trim().to_string(), b.must("cat /sys/class/net/tb/address").trim().to_string());
    let (ok, report) = finish(c);
    let _ = std::fs::remove_file(&topo);
    let _ = std::fs::remove_file(&rules);
    assert!(ok, "{report}");
    let rule = report.lines().find(|l| l.contains("icmp type echo-request counter drop")).unwrap_or_default();
    assert!(rule.contains("# packets 1 "), "the host's rule counted A's request: {report}");
    assert!(report.contains(&format!("fdb {mac_a} port tap:ta")), "A learned on its port: {report}");
    assert!(report.contains(&format!("fdb {mac_b} port tap:tb")), "B learned on its port: {report}");
    // B's first ARP request was flooded (to A's port and the host); nothing ever went back out its own port.
    assert!(report.lines().any(|l| l.contains("port tap:ta") && l.contains("flooded") && !l.contains("flooded 0")), "{report}");
}

#[test]
fn a_vlan_sub_interface_talks_to_a_tag_handling_peer_on_a_tap() {
    init_logs();
    let ns = Netns::new();
    ns.must("ip tuntap add dev tv mode tap && ip link set tv up");
    let mut peer =
        ns.command(&bin("vlan-peer")).args(["tv", "100", "10.94.0.1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = finish(
        ns.command(&bin("nic-lab"))
            .args(["--tap", "tv", "--vlan", "100", "--ip", "10.94.0.2/24", "ping", "10.94.0.1", "-c", "5", "-i", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The same stack without the VLAN reaches nobody: the peer answers tagged frames only.
    let (plain, _) = finish(
        ns.command(&bin("nic-lab"))
            .args(["--tap", "tv", "--ip", "10.94.0.2/24", "ping", "10.94.0.1", "-c", "2", "-i", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Tags in descriptors from a TAP, which has none: refused, not sent untagged.
    let (refused, why) = finish(
        ns.command(&bin("nic-lab"))
            .args(["--tap", "tv", "--vlan", "100", "--vlan-offload", "on", "--ip", "10.94.0.2/24", "ping", "10.94.0.1", "-c", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(ok && zero_loss(&out), "{out}");
    assert!(!plain, "untagged pings got answers from a VLAN-only peer");
    assert!(!refused && why.contains("does not insert VLAN tags"), "{why}");
}

#[test]
fn vlan_through_our_driver_and_nic_device_with_and_without_the_cards_tagging() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("vlandev")));
    let dev = Device::start(Some(&ns), &sock, &["--backend", "tap:td"]);
    ns.must("ip link set td up");
    let mut peer =
        ns.command(&bin("vlan-peer")).args(["td", "200", "10.95.0.1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = sock.to_str().unwrap();
    for (offload, inserted) in [("on", true), ("off", false)] {
        let m0 = dev.metrics();
        let (ok, out) = finish(
            ns.command(&bin("nic-lab"))
                .args([
                    "--vfio-user",
                    s,
                    "--vlan",
                    "200",
                    "--vlan-offload",
                    offload,
                    "--ip",
                    "10.95.0.2/24",
                    "ping",
                    "10.95.0.1",
                    "-c",
                    "5",
                    "-i",
                    "0.2",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        assert!(ok && zero_loss(&out), "offload {offload}: {out}");
        let m1 = dev.metrics();
        let d = |k: &str| m1.get(k).copied().unwrap_or(0) - m0.get(k).copied().unwrap_or(0);
        // Tags from descriptors only when asked for; stripped into descriptors always (our driver sets VME).
        // The answers came through the card's VLAN filter, which the driver turned on for VLAN 200.
        assert_eq!(d("tx_vlan_inserted") >= 5, inserted, "offload {offload}: {} tags inserted by the card", d("tx_vlan_inserted"));
        assert!(d("rx_vlan_stripped") >= 5, "offload {offload}: {} tags stripped", d("rx_vlan_stripped"));
    }
    let _ = peer.kill();
    let _ = peer.wait();
}

/// A host on a card in a topology (`nic-lab run`): the loop sleeps on the card's interrupt eventfds
/// with the other devices' descriptors (it used to poll a card every millisecond, its interrupts never
/// read), so the card's report counts interrupts; Linux's pings through the card are all answered.
#[test]
fn a_topology_sleeps_on_a_cards_interrupts() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("topocard")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tq"]);
    ns.must("ip addr add 10.98.0.1/24 dev tq && ip link set tq up");
    let topo = std::env::temp_dir().join(format!("{}.toml", unique("topocard")));
    std::fs::write(
        &topo,
        format!(
            "[[device]]\nname = \"c\"\nvfio-user = \"{}\"\n[[host]]\nname = \"h\"\ninterface = \"c\"\nip = \"10.98.0.2/24\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let c = ns
        .command(&bin("nic-lab"))
        .args(["run", topo.to_str().unwrap(), "--seconds", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (rc, out) = ns.exec("ping -c 10 -i 0.2 -W 2 10.98.0.2");
    assert_eq!(rc, 0, "Linux to the host on the card: {out}");
    assert!(zero_loss(&out), "{out}");
    let (ok, report) = finish(c);
    let _ = std::fs::remove_file(&topo);
    assert!(ok, "{report}");
    let irqs = interrupts_read(&report);
    assert!(irqs >= 10, "the loop slept on the card's interrupts: {irqs} read\n{report}");
}

/// Two VLANs over one card in a topology, one with the card inserting its tags and one with the tags in
/// the frame: two peers that handle tags themselves ping a host on each at once. The loop sleeps on the
/// card's interrupts through the VLANs (offered once for both; a VLAN over a card used to offer nothing,
/// so the loop polled every millisecond and never read them), every echo is answered, and each VLAN tags
/// its own way (the second VLAN's setting used to be ignored: the first one's held for the whole card).
#[test]
fn two_vlans_on_a_card_in_a_topology_sleep_on_its_interrupts() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("topovlan")));
    let dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tw"]);
    ns.must("ip link set tw up");
    let topo = std::env::temp_dir().join(format!("{}.toml", unique("topovlan")));
    std::fs::write(
        &topo,
        format!(
            "[[device]]\nname = \"c\"\nvfio-user = \"{}\"\n\
             [[vlan]]\nname = \"v100\"\nparent = \"c\"\nid = 100\noffload = true\n\
             [[vlan]]\nname = \"v200\"\nparent = \"c\"\nid = 200\noffload = false\n\
             [[host]]\nname = \"blue\"\ninterface = \"v100\"\nip = \"10.97.1.2/24\"\n\
             [[host]]\nname = \"green\"\ninterface = \"v200\"\nip = \"10.97.2.2/24\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let m0 = dev.metrics();
    let c = ns
        .command(&bin("nic-lab"))
        .args(["run", topo.to_str().unwrap(), "--seconds", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let peer = |vid: &str, me: &str, host: &str| {
        ns.command(&bin("vlan-peer"))
            .args(["tw", vid, me, "--ping", host, "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p100, p200) = (peer("100", "10.97.1.1", "10.97.1.2"), peer("200", "10.97.2.1", "10.97.2.2"));
    let (ok100, out100) = finish(p100);
    let (ok200, out200) = finish(p200);
    let (ok, report) = finish(c);
    let _ = std::fs::remove_file(&topo);
    assert!(ok, "{report}");
    assert!(ok100 && out100.contains("20 of 20"), "VLAN 100: {out100}\n{report}");
    assert!(ok200 && out200.contains("20 of 20"), "VLAN 200: {out200}\n{report}");
    let irqs = interrupts_read(&report);
    assert!(irqs >= 20, "the loop slept on the card's interrupts: {irqs} read\n{report}");
    let vlan = |vid: &str| -> (u64, u64) {
        let l = report.lines().find(|l| l.trim().starts_with(&format!("vlan {vid}: "))).unwrap_or_else(|| panic!("{report}"));
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.get(7), Some(&"0"), "nothing dropped: {l}");
        (w[3].parse().unwrap(), w[5].parse().unwrap())
    };
    let ((rx100, tx100), (rx200, tx200)) = (vlan("100"), vlan("200"));
    assert!(rx100 >= 20 && rx200 >= 20 && tx100 >= 20 && tx200 >= 20, "{report}");
    // Only VLAN 100's frames had their tags inserted by the card; VLAN 200's carried theirs.
    let m1 = dev.metrics();
    let inserted = m1.get("tx_vlan_inserted").copied().unwrap_or(0) - m0.get("tx_vlan_inserted").copied().unwrap_or(0);
    assert_eq!(inserted, tx100, "tags the card inserted: VLAN 100 sent {tx100}, VLAN 200 {tx200}\n{report}");
}

/// Bonding active-backup over two nic-devices, both on one Linux bridge: a TCP transfer from a Linux HTTP
/// server survives the active card losing its link in the middle (the bond fails over, announces itself
/// from the other card's address, and Linux's neighbour table and bridge follow); sha256 intact.
#[test]
fn an_active_backup_bond_over_two_nic_devices_keeps_a_transfer_alive() {
    init_logs();
    let ns = Netns::new();
    let s0 = std::env::temp_dir().join(format!("{}.sock", unique("bond0")));
    let s1 = std::env::temp_dir().join(format!("{}.sock", unique("bond1")));
    let d0 = Device::start(Some(&ns), &s0, &["--backend", "tap:b0"]);
    let d1 = Device::start(Some(&ns), &s1, &["--backend", "tap:b1"]);
    ns.must("ip link add lbr type bridge && ip link set b0 master lbr && ip link set b1 master lbr && ip link set b0 up && ip link set b1 up && ip link set lbr up && ip addr add 10.96.0.1/24 dev lbr");
    let dir = std::env::temp_dir().join(unique("bondget"));
    std::fs::create_dir_all(&dir).unwrap();
    let (rc, o) = sh(&format!("head -c 60M /dev/urandom > {}", dir.join("blob").display()));
    assert_eq!(rc, 0, "{o}");
    let mut srv = ns.http_server("10.96.0.1", &dir);
    let out = dir.join("got");
    let slave0 = format!("vfio-user:{}", s0.display());
    let slave1 = format!("vfio-user:{}", s1.display());
    let c = ns
        .command(&bin("nic-lab"))
        .args([
            "--bond",
            "active-backup",
            "--slave",
            &slave0,
            "--slave",
            &slave1,
            "--ip",
            "10.96.0.2/24",
            "get",
            "http://10.96.0.1:8000/blob",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once data flows through the first card, its link goes down for good.
    let t0 = std::time::Instant::now();
    while d0.metrics().get("rx_frames").copied().unwrap_or(0) < 2000 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    inject(&d0.control, &["link-down"]);
    let (ok, text) = finish(c);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{text}");
    assert!(text.contains("failover to"), "the bond failed over: {text}");
    // The bond's report: one failover, the first slave's link down, both slaves carried frames.
    assert!(text.contains("bond bond0 (active-backup): 1 failovers, 0 dropped with no slave up"), "{text}");
    let slaves: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("slave ")).collect();
    assert_eq!(slaves.len(), 2, "{text}");
    assert!(slaves[0].contains("link down") && slaves[0].contains("link failures 1"), "{text}");
    assert!(slaves[1].contains("link up"), "{text}");
    let sha = |p: &std::path::Path| sh(&format!("sha256sum {}", p.display())).1.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(sha(&out), sha(&dir.join("blob")), "60 MB intact across the failover");
    // The rest went through the second card.
    assert!(d1.metrics().get("rx_frames").copied().unwrap_or(0) > 1000, "second card carried the transfer");
    let _ = std::fs::remove_dir_all(&dir);
}
