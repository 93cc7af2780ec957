//! Drop rates: 64-byte UDP frames that a packet generator (a raw packet socket skipping the qdisc,
//! `sendmmsg` of 64 frames at a time) sends as fast as it can to a port nobody may reach,
//! dropped (1) by an XDP program in our driver (`nic-lab --xdp drop=udp:9000`), before any packet buffer
//! exists; (2) by a netfilter rule in our stack at PREROUTING, the same frames having come the same way
//! (TAP -> nic-device -> driver -> stack); (3) by Linux's nft at PREROUTING in a namespace, over a veth. Each
//! case RUNS times (default 5) for SECONDS (default 2); the medians of the packets dropped per second (the
//! drop counters over the sending time), lowest-highest, the rate offered, and the ratios. Needs root, the
//! release builds of nic-device and nic-lab (`cargo build --release -p nic-device -p nic-tools`), and nft.
//!
//!   cargo bench -p nic-stack --bench drop [-- SECONDS [RUNS]]

mod common;
use common::{mac_of, median, packet_flood, parse_mac, udp_frame};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn quiet(cmd: &str) {
    let _ = Command::new("sh").arg("-c").arg(cmd).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn release(bin: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = dir.join("release").join(bin);
    assert!(p.exists(), "{} is missing: cargo build --release -p nic-device -p nic-tools", p.display());
    p
}

/// The number after `key` in `text`.
fn after(text: &str, key: &str) -> u64 {
    text.split(key).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

const RULES: &str =
    "table inet dropbench {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  udp dport 9000 counter drop\n }\n}\n";

/// Our path: the card on a TAP in namespace `dpn`, our driver and stack behind it, with `how` dropping.
/// (dropped, offered) per second.
fn ours(how: &str, secs: f64) -> (f64, f64) {
    quiet("ip netns del dpn");
    sh("ip netns add dpn && ip netns exec dpn ip link set lo up");
    let dir = std::env::temp_dir().join(format!("drop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("nic.sock");
    let rules = dir.join("drop.nft");
    std::fs::write(&rules, RULES).unwrap();
    let mut dev = Command::new("ip")
        .args(["netns", "exec", "dpn"])
        .arg(release("nic-device"))
        .args(["--socket", sock.to_str().unwrap(), "--backend", "tap:dt0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh("ip netns exec dpn sh -c 'ip addr add 10.97.0.1/24 dev dt0 && ip link set dt0 up'");
    let mut args: Vec<String> = vec!["--vfio-user".into(), sock.to_str().unwrap().into(), "--ip".into(), "10.97.0.2/24".into()];
    if how == "xdp" {
        args.extend(["--xdp".into(), "drop=udp:9000".into()]);
    } else {
        args.extend(["--netfilter".into(), rules.to_str().unwrap().into()]);
    }
    args.extend(["idle".into(), "--seconds".into(), format!("{}", secs + 3.0)]);
    let lab = Command::new("ip")
        .args(["netns", "exec", "dpn"])
        .arg(release("nic-lab"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    quiet("ip netns exec dpn ping -c 1 -W 1 10.97.0.2");
    // The card's MAC, as Linux's neighbour table learned it.
    let neigh = Command::new("ip").args(["netns", "exec", "dpn", "ip", "neigh", "show", "10.97.0.2"]).output().unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    let card = neigh
        .split("lladdr ")
        .nth(1)
        .and_then(|s| parse_mac(s.split_whitespace().next()?))
        .unwrap_or_else(|| panic!("no neighbour entry: {neigh}"));
    let frame = udp_frame(mac_of("dpn", "dt0"), card, [10, 97, 0, 1], [10, 97, 0, 2], 9000);
    let offered = packet_flood("dpn", "dt0", frame, secs);
    let out = lab.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let _ = dev.kill();
    let _ = dev.wait();
    quiet("ip netns del dpn");
    let _ = std::fs::remove_dir_all(&dir);
    let dropped = if how == "xdp" { after(&text, " drop ") } else { after(&text, "counter drop # packets ") };
    (dropped as f64 / secs, offered)
}

/// Linux: a sender namespace and a receiver namespace joined by a veth, nft dropping at PREROUTING.
fn kernel(secs: f64) -> (f64, f64) {
    quiet("ip netns del dka; ip netns del dkb");
    sh("ip netns add dka && ip netns add dkb && ip link add va netns dka type veth peer name vb netns dkb");
    sh("ip netns exec dka sh -c 'ip link set lo up && ip addr add 10.96.0.1/24 dev va && ip link set va up'");
    sh("ip netns exec dkb sh -c 'ip link set lo up && ip addr add 10.96.0.2/24 dev vb && ip link set vb up'");
    let rules = std::env::temp_dir().join(format!("drop-bench-{}.nft", std::process::id()));
    std::fs::write(&rules, RULES).unwrap();
    sh(&format!("ip netns exec dkb nft -f {}", rules.display()));
    quiet("ip netns exec dka ping -c 1 -W 1 10.96.0.2");
    let frame = udp_frame(mac_of("dka", "va"), mac_of("dkb", "vb"), [10, 96, 0, 1], [10, 96, 0, 2], 9000);
    let offered = packet_flood("dka", "va", frame, secs);
    let out = Command::new("ip").args(["netns", "exec", "dkb", "nft", "list", "ruleset"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    quiet("ip netns del dka; ip netns del dkb");
    let _ = std::fs::remove_file(&rules);
    (after(&text, "counter packets ") as f64 / secs, offered)
}

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<f64>().ok());
    let secs = args.next().unwrap_or(2.0);
    let runs = args.next().map(|r| r as usize).unwrap_or(5).max(1);
    println!("64-byte UDP frames dropped, {secs} s per run, median of {runs} runs (lowest-highest)");
    println!("{:<34} {:>28} {:>14}", "dropped by", "dropped pkt/s", "offered pkt/s");
    let mut meds = Vec::new();
    for (name, case) in [("XDP in our driver", 0), ("netfilter in our stack", 1), ("Linux nft (veth)", 2)] {
        let r: Vec<(f64, f64)> = (0..runs)
            .map(|_| match case {
                0 => ours("xdp", secs),
                1 => ours("netfilter", secs),
                _ => kernel(secs),
            })
            .collect();
        let (m, lo, hi) = median(r.iter().map(|x| x.0).collect());
        let (off, _, _) = median(r.iter().map(|x| x.1).collect());
        println!("{:<34} {:>28} {:>14.0}", name, format!("{m:.0} ({lo:.0}-{hi:.0})"), off);
        meds.push(m);
    }
    println!("{:<34} {:>28.2}", "ratio XDP / netfilter", meds[0] / meds[1].max(1.0));
    println!("{:<34} {:>28.2}", "ratio XDP / Linux nft", meds[0] / meds[2].max(1.0));
}
