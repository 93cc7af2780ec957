//! Traffic control on our stack's egress, judged by Linux over a TAP device in a namespace:
//! - over a link shaped by tbf to 20 Mbit/s (Linux's own byte counters show the rate within 5%, with a
//!   FIFO child and with fq_codel), a bulk TCP send fills the queue: with pfifo_fast the replies to Linux's pings wait behind it, with fq_codel
//!   they keep within a few milliseconds of the idle link's round trip (all three measured in this run);
//! - netem's delay and loss show up in Linux's ping statistics;
//! - htb gives two connections their classes' rates (3:1) and lets the second borrow when the first ends,
//!   with the class picked by port or by the mark a netfilter rule set.

use nic_tests::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn tapnet() -> Netns {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.81.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    ns
}

fn lab(ns: &Netns, args: &[&str]) -> Child {
    let mut all = vec!["--tap", "st0", "--ip", "10.81.0.2/24"];
    all.extend_from_slice(args);
    ns.command(&bin("nic-lab")).args(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn output(c: Child) -> String {
    let o = c.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Linux pings our stack: the round trips in ms, and the loss in percent.
fn ping(ns: &Netns, count: u32, interval: &str) -> (Vec<f64>, f64) {
    let (_, out) = ns.exec(&format!("ping -c {count} -i {interval} -W 1 10.81.0.2"));
    let rtts = out.lines().filter_map(|l| l.split("time=").nth(1)).filter_map(|t| t.split_whitespace().next()?.parse().ok()).collect();
    let loss = out.split("% packet loss").next().and_then(|s| s.rsplit(' ').next()).and_then(|p| p.parse().ok()).unwrap_or(100.0);
    (rtts, loss)
}

/// Every test here measures a rate or a delay that a userspace shaper keeps only when its wake-ups come
/// on time, so they run one at a time: two shapers and their TCP senders on a 2-core machine make each
/// other's wake-ups late.
static PACE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pace() -> std::sync::MutexGuard<'static, ()> {
    PACE.lock().unwrap_or_else(|e| e.into_inner())
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no round trips");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn fq_codel_keeps_latency_low_under_load_where_pfifo_fast_does_not_and_tbf_holds_its_rate() {
    let _pace = pace();
    let ns = tapnet();
    let shaped = |child: &str| format!("tbf rate 20mbit burst 16k latency 1s child {child}");
    let spec = shaped("fq_codel");
    let c = lab(&ns, &["--qdisc", &spec, "idle", "--seconds", "4"]);
    std::thread::sleep(Duration::from_millis(1200));
    let idle = median(ping(&ns, 10, "0.1").0);
    output(c);
    let mut loaded = Vec::new();
    for child in ["pfifo_fast", "fq_codel"] {
        let sink = ns.tcp_sink("10.81.0.1", 5001);
        let spec = shaped(child);
        // 15 MB at 20 Mbit/s: about 6 s.
        let c = lab(&ns, &["--qdisc", &spec, "blast", "10.81.0.1:5001", "--bytes", "15000000"]);
        std::thread::sleep(Duration::from_millis(2000));
        // Each counter read is bracketed by clock reads: starting a command in the namespace takes time
        // on a loaded machine, so the window is known only between its shortest and longest bounds.
        let read = || {
            let before = Instant::now();
            let bytes = ns.link_stats("st0").2;
            (bytes, before, Instant::now())
        };
        let (b0, t0_before, t0_after) = read();
        let rtt = median(ping(&ns, 20, "0.1").0);
        let (b1, t1_before, t1_after) = read();
        let out = output(c);
        assert_eq!(Netns::sink_count(sink), "15000000", "{out}");
        let bits = (b1 - b0) as f64 * 8.0;
        // The rate Linux received lies between these two.
        let (low, high) = (bits / (t1_after - t0_before).as_secs_f64() / 1e6, bits / (t1_before - t0_after).as_secs_f64() / 1e6);
        eprintln!("tbf at 20 Mbit/s with {child}: Linux received {low:.2}-{high:.2} Mbit/s");
        // Either child keeps the bucket busy: one NewReno flow through fq_codel, its window halved at
        // each CoDel drop, still fills the link, since what stays queued covers the round trip.
        let (floor, ceil) = (19.0, 21.0);
        assert!(
            low <= ceil && high >= floor,
            "tbf at 20 Mbit/s with {child}: Linux received {low:.2}-{high:.2} Mbit/s, outside {floor}-{ceil}\n{out}"
        );
        assert!(out.contains("qdisc tbf rate 20000000bit") && out.contains(&format!("  qdisc {child}")), "{out}");
        loaded.push((child, rtt, out));
    }
    let (pfifo, fq) = (loaded[0].1, loaded[1].1);
    assert!(fq <= idle + 5.0, "fq_codel under load {fq:.1} ms, idle {idle:.1} ms\n{}", loaded[1].2);
    assert!(pfifo >= fq + 20.0 && pfifo >= 3.0 * fq, "pfifo_fast under load {pfifo:.1} ms against fq_codel {fq:.1} ms\n{}", loaded[0].2);
}

#[test]
fn netem_delay_and_loss_as_linux_measures_them() {
    let _pace = pace();
    let ns = tapnet();
    let c = lab(&ns, &["--qdisc", "netem delay 40ms 4ms loss 20% seed 9", "idle", "--seconds", "10"]);
    std::thread::sleep(Duration::from_millis(1200));
    // ARP first, so the loss counted is the echo replies'.
    ns.exec("ping -c 3 -i 0.2 -W 1 10.81.0.2");
    let (rtts, loss) = ping(&ns, 100, "0.05");
    let out = output(c);
    assert!((10.0..=30.0).contains(&loss), "loss {loss}% for 20%\n{out}");
    let m = median(rtts);
    assert!((36.0..=48.0).contains(&m), "median round trip {m:.1} ms for a 40 ms delay\n{out}");
    assert!(out.contains("qdisc netem") && out.contains("lost "), "{out}");
}

#[test]
fn htb_shares_a_link_by_class_rates_and_lends_what_is_unused() {
    htb_share("filter proto tcp dport 5001 flowid 10", &[]);
}

/// The same split with the class chosen by the mark that a netfilter rule on OUTPUT sets (tc's `fw`
/// classifier on `meta mark set`).
#[test]
fn htb_classifies_by_the_mark_netfilter_set() {
    let rules = std::env::temp_dir().join(format!("{}.nft", unique("mark")));
    std::fs::write(
        &rules,
        "table inet mangle {\n    chain out {\n        type filter hook output priority -150;\n        tcp dport 5001 meta mark set 0x2a\n    }\n}\n",
    )
    .unwrap();
    htb_share("filter mark 0x2a flowid 10", &["--netfilter", rules.to_str().unwrap()]);
    let _ = std::fs::remove_file(&rules);
}

/// Two TCP flows to ports 5001 and 5002 through a 20 Mbit/s htb whose class 10 (15 Mbit/s, picked by
/// `filter`) and default class 20 (5 Mbit/s) may both borrow up to the link.
fn htb_share(filter: &str, extra: &[&str]) {
    let _pace = pace();
    let ns = tapnet();
    let (s1, s2) = (ns.tcp_sink("10.81.0.1", 5001), ns.tcp_sink("10.81.0.1", 5002));
    let spec = format!(
        "htb default 20 class 1 rate 20mbit class 10 parent 1 rate 15mbit ceil 20mbit class 20 parent 1 rate 5mbit ceil 20mbit {filter}"
    );
    let mut args = extra.to_vec();
    args.extend_from_slice(&["--qdisc", &spec, "blast", "10.81.0.1:5001", "--bytes", "4000000", "--parallel", "2"]);
    let c = lab(&ns, &args);
    let out = output(c);
    assert_eq!(Netns::sink_count(s1), "4000000", "{out}");
    assert_eq!(Netns::sink_count(s2), "4000000", "{out}");
    let secs = |port: &str| -> f64 {
        out.lines()
            .find(|l| l.starts_with(&format!("port {port}: sent")))
            .and_then(|l| l.split(" bytes in ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{port}: {out}"))
    };
    // Class 10 (3/4 of the link) finishes 4 MB first; class 20 then takes the whole link: it ends at the
    // time both flows' 8 MB take at 20 Mbit/s, 1.5 times the first.
    let (a, b) = (secs("5001"), secs("5002"));
    assert!((1.3..=1.7).contains(&(b / a)), "finish times {a:.2} s and {b:.2} s\n{out}");
    let total_mbit = 8.0 * 8e6 / b / 1e6;
    assert!((17.0..=21.0).contains(&total_mbit), "{total_mbit:.1} Mbit/s in all\n{out}");
    let class20 = out.split("class htb 1:20").nth(1).unwrap_or_default();
    let borrowed: u64 =
        class20.split("borrowed ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(borrowed > 100, "class 20 borrowed once class 10 was done\n{out}");
}

#[test]
fn the_ingress_policer_drops_what_exceeds_its_rate() {
    let _pace = pace();
    let ns = tapnet();
    let c = lab(&ns, &["--police", "rate 100kbit burst 4k", "idle", "--seconds", "4"]);
    std::thread::sleep(Duration::from_millis(1200));
    ns.exec("ping -c 1 -W 1 10.81.0.2");
    // 200 datagrams of 1000 bytes at once: the bucket holds four of them.
    ns.must("python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor k in range(200): s.sendto(bytes(1000), ('10.81.0.2', 9))\n\"");
    let out = output(c);
    let line = out.lines().find(|l| l.starts_with("ingress police rate 100000bit burst 4096b")).unwrap_or_else(|| panic!("{out}"));
    let num = |k: &str| -> u64 { line.split(k).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap() };
    assert!(num("dropped ") >= 180 && num("passed ") >= 4, "{line}");
}

/// tbf on our router's interface toward a Linux namespace: iperf3 between two Linux namespaces through it
/// reports the tbf's rate (within 5%) as TCP payload: 1448 bytes of every 1514-byte frame the bucket
/// meters.
#[test]
fn tbf_on_our_router_limits_iperf3_to_its_rate() {
    let _pace = pace();
    init_logs();
    let (n, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let topo = std::env::temp_dir().join(format!("{}.toml", unique("tbfrouter")));
    std::fs::write(
        &topo,
        "[[device]]\nname = \"a\"\ntap = \"ta\"\n\n[[device]]\nname = \"b\"\ntap = \"tb\"\n\n\
         [[host]]\nname = \"left\"\ninterface = \"a\"\nip = \"10.93.1.1/24\"\n\n\
         [[host]]\nname = \"right\"\ninterface = \"b\"\nip = \"10.93.2.1/24\"\nqdisc = \"tbf rate 20mbit burst 16k latency 50ms\"\n\n\
         [[router]]\nname = \"r\"\nhosts = [\"left\", \"right\"]\n",
    )
    .unwrap();
    let c = run_topology_between(&n, &a, &b, &topo, 14);
    for (ns, tap, net) in [(&a, "ta", 1), (&b, "tb", 2)] {
        ns.must(&format!(
            "ip link set lo up && ip link set {tap} up && ip addr add 10.93.{net}.2/24 dev {tap} && ip route add default via 10.93.{net}.1"
        ));
    }
    let mut srv = b.command(std::path::Path::new("iperf3")).args(["-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (rc, out) = a.exec("timeout 30 iperf3 -c 10.93.2.2 -t 6 -f m");
    let _ = srv.kill();
    let _ = srv.wait();
    let report = output(c);
    let _ = std::fs::remove_file(&topo);
    assert_eq!(rc, 0, "{out}");
    let mbits = iperf3_mbits(&out).unwrap_or(0.0);
    let payload = 20.0 * 1448.0 / 1514.0;
    eprintln!("iperf3 through tbf at 20 Mbit/s: {mbits} Mbit/s of payload ({payload:.2} expected)");
    assert!(
        (payload * 0.95..=payload * 1.05).contains(&mbits),
        "iperf3 {mbits} Mbit/s of payload through tbf at 20 Mbit/s ({payload:.2} expected)\n{out}\n{report}"
    );
    assert!(report.contains("host right: dev b:") && report.contains("qdisc tbf rate 20000000bit"), "{report}");
}
