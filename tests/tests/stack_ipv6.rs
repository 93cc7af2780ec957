//! IPv6 against Linux, the independent judge, in a private namespace over TAP devices: echo both ways
//! with 30,000-byte fragmented echoes, both neighbour tables learning the other's address through
//! solicitations and advertisements, duplicate address detection against an address Linux holds, SLAAC
//! from a router advertisement the test sends, and the same through our driver and nic-device (whose
//! multicast filter our driver programs for the solicited-node groups).

use nic_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn lab(ns: &Netns, args: &[&str]) -> Child {
    ns.command(&bin("nic-lab")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(c: Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// A namespace with TAP `tap` up and `addr` on it (no DAD on Linux's side, so it is usable at once).
fn tap_ns(tap: &str, addr: &str) -> Netns {
    let ns = Netns::new();
    ns.must(&format!("ip tuntap add dev {tap} mode tap && ip link set {tap} up && ip addr add {addr} dev {tap} nodad"));
    ns
}

/// A running `nic-lab`'s output, line by line.
struct Lines {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    fn new(mut child: Child) -> Lines {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// Reads lines until one satisfies `want` (or `timeout` passes): whether one did, and the lines read.
    fn until(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> (bool, Vec<String>) {
        let t0 = Instant::now();
        let mut lines = Vec::new();
        while t0.elapsed() < timeout {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = want(&l);
                    lines.push(l);
                    if hit {
                        return (true, lines);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        (false, lines)
    }

    /// Waits for the exit; the rest of the output, then what went to stderr.
    fn rest(mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = self.child.wait();
        self.rx.iter().collect::<Vec<_>>().join("\n") + "\n" + &err
    }
}

#[test]
fn echo_both_ways_with_30000_byte_fragments_and_both_neighbour_tables() {
    init_logs();
    let ns = tap_ns("s6a", "2001:db8:61::1/64");
    let (ok, out) = finish(lab(
        &ns,
        &[
            "--tap",
            "s6a",
            "--ip",
            "10.61.0.2/24",
            "--ip6",
            "2001:db8:61::2/64",
            "ping",
            "2001:db8:61::1",
            "-c",
            "3",
            "-i",
            "0.3",
            "-s",
            "30000",
        ],
    ));
    assert!(ok, "the stack pinging Linux: {out}");
    assert_eq!(out.matches("30008 bytes from 2001:db8:61::1").count(), 3, "{out}");
    // Our table learned Linux's address from its advertisement.
    let linux_mac = ns.must("cat /sys/class/net/s6a/address").trim().to_string();
    assert!(out.lines().any(|l| l.starts_with("neigh 2001:db8:61::1 lladdr ") && l.contains(&linux_mac)), "{out}");
    // Linux pings us, with and without fragments, while the stack idles; its table learns our address.
    let mut c = Lines::new(lab(&ns, &["--tap", "s6a", "--ip", "10.61.0.2/24", "--ip6", "2001:db8:61::2/64", "idle", "--seconds", "8"]));
    let (ready, lines) = c.until(|l| l.contains("2001:db8:61::2/64 preferred"), Duration::from_secs(6));
    assert!(ready, "our address never left DAD: {lines:?}");
    let (rc, p) = ns.exec("ping -6 -c 3 -i 0.3 -W 2 -s 30000 2001:db8:61::2");
    assert_eq!(rc, 0, "Linux pinging the stack with 30,000 bytes: {p}");
    let (rc, p) = ns.exec("ping -6 -c 3 -i 0.3 -W 2 2001:db8:61::2");
    assert_eq!(rc, 0, "{p}");
    let neigh = ns.must("ip -6 neigh show dev s6a");
    let entry = neigh.lines().find(|l| l.starts_with("2001:db8:61::2 ")).unwrap_or_default().to_string();
    assert!(
        entry.contains("lladdr 02:") && ["REACHABLE", "STALE", "DELAY", "PROBE"].iter().any(|s| entry.contains(s)),
        "Linux's entry for us: {neigh}"
    );
    let rest = c.rest();
    assert!(rest.contains("neigh 2001:db8:61::1 lladdr"), "{rest}");
}

#[test]
fn dad_finds_an_address_that_linux_holds() {
    init_logs();
    let ns = tap_ns("s6b", "2001:db8:62::5/64");
    let (ok, out) = finish(lab(
        &ns,
        &["--tap", "s6b", "--ip", "10.62.0.2/24", "--ip6", "2001:db8:62::5/64", "--ip6", "2001:db8:62::6/64", "idle", "--seconds", "3"],
    ));
    assert!(ok, "{out}");
    let state = out.split("--- state ---").nth(1).unwrap_or_default();
    assert!(state.contains("inet6 2001:db8:62::5/64 duplicate"), "Linux answered our DAD probe: {out}");
    assert!(state.contains("inet6 2001:db8:62::6/64 preferred"), "{out}");
}

/// A router advertisement from Linux's side of the TAP, sent by a raw ICMPv6 socket (the kernel fills the
/// checksum; hop limit 255 as ND requires), every half second for `secs` seconds.
fn send_ras(ns: &Netns, tap: &str, secs: u32) -> Child {
    let script = format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("{tap}"))
mac = bytes.fromhex(open("/sys/class/net/{tap}/address").read().strip().replace(":", ""))
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
ra += struct.pack("!BB", 1, 1) + mac
ra += struct.pack("!BBHI", 5, 1, 0, 1400)
ra += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 1800, 0) + socket.inet_pton(socket.AF_INET6, "2001:db8:77::")
end = time.time() + {secs}
while time.time() < end:
    s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex("{tap}")))
    time.sleep(0.5)
"#
    );
    ns.command(std::path::Path::new("python3")).args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn slaac_from_a_router_advertisement() {
    init_logs();
    let ns = tap_ns("s6c", "2001:db8:77::1/64");
    let mut c = Lines::new(lab(&ns, &["--tap", "s6c", "--ip", "10.63.0.2/24", "--ipv6", "idle", "--seconds", "10"]));
    let mut ra = send_ras(&ns, "s6c", 9);
    let (ok, lines) = c.until(|l| l.starts_with("addr 2001:db8:77:") && l.ends_with("preferred"), Duration::from_secs(8));
    assert!(ok, "no address from the advertisement: {lines:?}");
    let addr = lines.last().unwrap().split_whitespace().nth(1).unwrap().split('/').next().unwrap().to_string();
    // The interface identifier is the modified EUI-64 of our MAC, as Linux forms it.
    assert!(addr.contains("ff:fe"), "{addr}");
    let (rc, p) = ns.exec(&format!("ping -6 -c 3 -i 0.3 -W 2 {addr}"));
    assert_eq!(rc, 0, "Linux pinging our autoconfigured address: {p}");
    let _ = ra.kill();
    let _ = ra.wait();
    let rest = c.rest();
    let router_ll = ns
        .must("ip -6 addr show dev s6c scope link")
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    assert!(rest.contains(&format!("default via {router_ll} mtu 1400")), "router and MTU from the advertisement ({router_ll}): {rest}");
}

#[test]
fn echo_through_our_driver_and_nic_device_on_its_multicast_filter() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("v6dev")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:d6a"]);
    ns.must("ip link set d6a up && ip addr add 2001:db8:64::1/64 dev d6a nodad");
    let s = sock.to_str().unwrap();
    let (ok, out) = finish(lab(
        &ns,
        &[
            "--vfio-user",
            s,
            "--ip",
            "10.64.0.2/24",
            "--ip6",
            "2001:db8:64::2/64",
            "ping",
            "2001:db8:64::1",
            "-c",
            "3",
            "-i",
            "0.3",
            "-s",
            "4000",
        ],
    ));
    assert!(ok, "{out}");
    assert_eq!(out.matches("4008 bytes from 2001:db8:64::1").count(), 3, "{out}");
    // Linux resolves us by a solicitation to our solicited-node group: it reaches the stack only through the
    // card's multicast table.
    let mut c = Lines::new(lab(&ns, &["--vfio-user", s, "--ip", "10.64.0.2/24", "--ip6", "2001:db8:64::2/64", "idle", "--seconds", "6"]));
    let (ready, lines) = c.until(|l| l.contains("2001:db8:64::2/64 preferred"), Duration::from_secs(5));
    assert!(ready, "{lines:?}");
    ns.must("ip -6 neigh flush dev d6a");
    let (rc, p) = ns.exec("ping -6 -c 3 -i 0.3 -W 2 2001:db8:64::2");
    assert_eq!(rc, 0, "Linux pinging the stack through nic-device: {p}");
    assert!(ns.must("ip -6 neigh show dev d6a").contains("2001:db8:64::2 lladdr 52:54:00:12:34:56"));
    let rest = c.rest();
    assert!(rest.contains("neigh 2001:db8:64::1 lladdr"), "{rest}");
}

fn sha(path: &std::path::Path) -> String {
    sh(&format!("sha256sum {}", path.display())).1.split_whitespace().next().unwrap_or("").to_string()
}

/// The stack on TAP `tap` (Linux holding `net`::1, the stack `net`::2) gets an `mb`-megabyte file over
/// IPv6 from Linux's http.server and checks it; `extra` are more `nic-lab` options. Returns nic-lab's output.
fn get_over_ipv6(tap: &str, net: &str, mb: usize, extra: &[&str]) -> String {
    let ns = tap_ns(tap, &format!("{net}::1/64"));
    let dir = std::env::temp_dir().join(unique("v6get"));
    std::fs::create_dir_all(&dir).unwrap();
    let (rc, o) = sh(&format!("head -c {mb}M /dev/urandom > {}", dir.join("blob").display()));
    assert_eq!(rc, 0, "{o}");
    let mut srv = ns.http_server(&format!("{net}::1"), &dir);
    let out = dir.join("got");
    let (ip6, url) = (format!("{net}::2/64"), format!("http://[{net}::1]:8000/blob"));
    let mut args = vec!["--tap", tap, "--ip", "10.65.0.2/24", "--ip6", &ip6];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["get", &url, "-o", out.to_str().unwrap()]);
    let (ok, text) = finish(lab(&ns, &args));
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{text}");
    assert_eq!(sha(&out), sha(&dir.join("blob")), "{mb} MB intact over IPv6: {text}");
    let _ = std::fs::remove_dir_all(&dir);
    text
}

/// With sha256 intact, and GRO over IPv6 seen at work: Linux's bursts arrive several segments to a poll.
#[test]
fn get_100mb_over_tcp_ipv6_from_a_linux_http_server() {
    init_logs();
    let text = get_over_ipv6("s6d", "2001:db8:65", 100, &[]);
    let (merged, frames) = nic_tests::gro_reported(&text);
    assert!(frames >= (100 << 20) / 1440 && merged > 0, "{text}");
}

#[test]
fn curl_over_ipv6_and_ipv4_against_the_stacks_dual_stack_server() {
    init_logs();
    let ns = tap_ns("s6e", "2001:db8:66::1/64");
    ns.must("ip addr add 10.66.0.1/24 dev s6e");
    let www = std::env::temp_dir().join(unique("v6www"));
    std::fs::create_dir_all(&www).unwrap();
    let (rc, o) = sh(&format!("head -c 3M /dev/urandom > {}", www.join("f.bin").display()));
    assert_eq!(rc, 0, "{o}");
    let c = Lines::new(lab(
        &ns,
        &[
            "--tap",
            "s6e",
            "--ip",
            "10.66.0.2/24",
            "--ip6",
            "2001:db8:66::2/64",
            "serve",
            "--port",
            "8080",
            "--dir",
            www.to_str().unwrap(),
            "--count",
            "2",
        ],
    ));
    // The server's address is ready once DAD is over: curl retries until then.
    std::thread::sleep(Duration::from_millis(1500));
    let got6 = www.join("got6");
    let got4 = www.join("got4");
    let (rc, out) = ns.exec(&format!(
        "curl -6 -sS --retry 5 --retry-connrefused --max-time 20 -o {} 'http://[2001:db8:66::2]:8080/f.bin'",
        got6.display()
    ));
    assert_eq!(rc, 0, "curl -6: {out}");
    let (rc, out) = ns.exec(&format!("curl -4 -sS --max-time 20 -o {} http://10.66.0.2:8080/f.bin", got4.display()));
    assert_eq!(rc, 0, "curl -4 to the same listener: {out}");
    assert_eq!(sha(&got6), sha(&www.join("f.bin")));
    assert_eq!(sha(&got4), sha(&www.join("f.bin")));
    let rest = c.rest();
    assert_eq!(rest.matches("GET /f.bin").count(), 2, "{rest}");
    let _ = std::fs::remove_dir_all(&www);
}

/// A Linux router between the stack's TAP and a server namespace, its interface toward the server with a
/// 1280-byte MTU (the server's own side has 1500, so it advertises an MSS of 1440): the stack's bulk send
/// over TCP/IPv6 starts with 1500-byte packets, the router answers Packet Too Big, and
/// the live connection cuts its segments to the path and resends; every byte arrives in order (the server
/// checks the stream against the sender's pattern).
#[test]
fn packet_too_big_from_a_linux_router_shrinks_a_live_connection() {
    init_logs();
    let r = Netns::new();
    let s = Netns::new();
    r.must("ip tuntap add dev p6 mode tap && ip link set p6 up && ip addr add 2001:db8:70::1/64 dev p6 nodad && sysctl -qw net.ipv6.conf.all.forwarding=1");
    sh(&format!("ip link add r0 netns {} type veth peer name s0 netns {}", r.name, s.name));
    r.must("ip link set r0 mtu 1280 up && ip addr add 2001:db8:71::1/64 dev r0 nodad");
    s.must("ip link set lo up && ip link set s0 up && ip addr add 2001:db8:71::2/64 dev s0 nodad && ip -6 route add default via 2001:db8:71::1");
    let bytes = 8_000_000u64;
    let script = format!(
        r#"
import socket, hashlib
l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("2001:db8:71::2", 5001)); l.listen(1)
c, _ = l.accept()
got = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 20)
    if not d: break
    got.update(d); n += len(d)
chunk = bytes(i % 251 for i in range(65536))
want = hashlib.sha256(); left = {bytes}
while left > 0:
    k = min(left, 65536); want.update(chunk[:k]); left -= k
print(n, got.hexdigest() == want.hexdigest(), flush=True)
"#
    );
    let srv =
        s.command(std::path::Path::new("python3")).args(["-c", &script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let bytes_s = bytes.to_string();
    let (ok, out) = finish(lab(
        &r,
        &[
            "--tap",
            "p6",
            "--ip",
            "10.70.0.2/24",
            "--ip6",
            "2001:db8:70::2/64",
            "--gw6",
            "2001:db8:70::1",
            "blast",
            "[2001:db8:71::2]:5001",
            "--bytes",
            &bytes_s,
        ],
    ));
    assert!(ok, "{out}");
    let (_, verdict) = finish(srv);
    assert_eq!(verdict.trim(), format!("{bytes} True"), "the server's count and check of the stream; sender: {out}");
    // The router did send Packet Too Big (Linux counts it in its ICMPv6 output statistics).
    let snmp = r.must("cat /proc/net/snmp6");
    let ptb: u64 = snmp
        .lines()
        .find(|l| l.starts_with("Icmp6OutPktTooBigs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ptb >= 1, "the router sent no Packet Too Big: {snmp}");
}

/// TCP over IPv6 with the TAP's offloads: the stack's 64 KiB IPv6 super-packets (GSO TCPv6 with the
/// checksum partial) and the kernel's reach the other side intact both ways.
#[test]
fn tcp_ipv6_with_the_taps_offloads_both_ways() {
    init_logs();
    let _ = get_over_ipv6("s6g", "2001:db8:67", 40, &["--tap-offload"]);
    let ns = tap_ns("s6g", "2001:db8:68::1/64");
    let sink = ns.tcp_sink("2001:db8:68::1", 5010);
    let before = ns.link_stats("s6g");
    let (ok, text) = finish(lab(
        &ns,
        &[
            "--tap",
            "s6g",
            "--tap-offload",
            "--ip",
            "10.68.0.2/24",
            "--ip6",
            "2001:db8:68::2/64",
            "blast",
            "[2001:db8:68::1]:5010",
            "--bytes",
            "40000000",
        ],
    ));
    assert!(ok, "{text}");
    let got = Netns::sink_count(sink);
    assert_eq!(got, "40000000", "the Linux sink got every byte");
    let after = ns.link_stats("s6g");
    let (rx_p, rx_b) = (after.0 - before.0, after.2 - before.2);
    assert!(rx_b / rx_p.max(1) > 3000, "the stack's IPv6 packets average {} bytes", rx_b / rx_p.max(1));
}

/// TCP over IPv6 through our driver and nic-device: the driver asks the card for IPv6 TSO and checksums
/// (the 82574L does both), the card cuts the segments (its TSO counters move), and every frame on the wire
/// is within the MTU with valid checksums; the Linux sink gets every byte.
#[test]
fn tcp_ipv6_through_the_driver_uses_the_cards_tso() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("tso6")));
    let pcap = std::env::temp_dir().join(format!("{}.pcap", unique("tso6")));
    let dev = Device::start(Some(&ns), &sock, &["--backend", "tap:t6", "--pcap", pcap.to_str().unwrap()]);
    ns.must("ip link set t6 up && ip addr add 2001:db8:69::1/64 dev t6 nodad");
    let sink = ns.tcp_sink("2001:db8:69::1", 5011);
    let (ok, text) = finish(lab(
        &ns,
        &[
            "--vfio-user",
            sock.to_str().unwrap(),
            "--ip",
            "10.69.0.2/24",
            "--ip6",
            "2001:db8:69::2/64",
            "blast",
            "[2001:db8:69::1]:5011",
            "--bytes",
            "20000000",
        ],
    ));
    assert!(ok, "{text}");
    let got = Netns::sink_count(sink);
    assert_eq!(got, "20000000");
    let m = dev.metrics();
    let (pkts, segs) = (m.get("tx_tso_packets").copied().unwrap_or(0), m.get("tx_tso_segments").copied().unwrap_or(0));
    assert!(pkts > 50 && segs > 10 * pkts, "the card cut the IPv6 segments: TSO packets {pkts}, segments {segs}");
    drop(dev);
    let frames = nic_tests::pcap::read(&pcap).unwrap();
    let v = nic_tests::pcap::judge(&frames);
    assert!(v.clean() && v.frames > 10_000, "{v:?}");
    let _ = std::fs::remove_file(&pcap);
}
