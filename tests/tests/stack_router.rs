//! Our stack as a router between two Linux namespaces, IPv4 and IPv6 (Linux is the judge at both ends):
//! pings through it with the TTL and hop limit lowered by one, the router's far-side addresses answering
//! from the near side, iperf3 TCP through it both families, and time exceeded from the router's address at
//! TTL / hop limit 1.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

/// `nic-lab run` of a topology between two Linux namespaces, for `seconds`, and Linux's ends of its two TAP
/// devices: 10.97.N.2/24 and 2001:db8:97:N::2/64, routed through our .1.
fn two_sides(topology: &str, seconds: u32) -> (Netns, Netns, Netns, std::process::Child) {
    init_logs();
    let (n, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let topo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/topologies").join(topology);
    let c = run_topology_between(&n, &a, &b, &topo, seconds);
    for (ns, tap, net) in [(&a, "ta", 1), (&b, "tb", 2)] {
        ns.must(&format!(
            "ip link set lo up && ip link set {tap} up && ip addr add 10.97.{net}.2/24 dev {tap} && ip route add default via 10.97.{net}.1 && \
             ip -6 addr add 2001:db8:97:{net}::2/64 dev {tap} nodad && ip -6 route add default via 2001:db8:97:{net}::1"
        ));
    }
    (n, a, b, c)
}

#[test]
fn our_router_between_two_linux_namespaces() {
    let (_n, a, b, c) = two_sides("router.toml", 14);
    // Our addresses leave DAD a second after start.
    std::thread::sleep(Duration::from_millis(500));
    let (rc, out) = a.exec("ping -c 3 -i 0.2 -W 2 10.97.2.2");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("ttl=63"), "one hop lowered the TTL: {out}");
    let (rc, out) = a.exec("ping -6 -c 3 -i 0.2 -W 2 2001:db8:97:2::2");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("ttl=63"), "one hop lowered the hop limit: {out}");
    // The router's address on the far side answers from the near side, as one host with two interfaces
    // does (delivered, not forwarded: the TTL is the router's own).
    let (rc, out) = a.exec("ping -c 2 -i 0.2 -W 2 10.97.2.1");
    assert!(rc == 0 && out.contains("ttl=64"), "{out}");
    let (rc, out) = a.exec("ping -6 -c 2 -i 0.2 -W 2 2001:db8:97:2::1");
    assert!(rc == 0 && out.contains("ttl=64"), "{out}");
    let (_, out) = a.exec("ping -c 1 -W 2 -t 1 10.97.2.2");
    assert!(out.contains("From 10.97.1.1") && out.contains("Time to live exceeded"), "{out}");
    let (_, out) = a.exec("ping -6 -c 1 -W 2 -t 1 2001:db8:97:2::2");
    assert!(out.contains("From 2001:db8:97:1::1") && out.to_lowercase().contains("time exceeded"), "{out}");
    let mut srv = b.command(std::path::Path::new("iperf3")).args(["-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for dst in ["10.97.2.2", "2001:db8:97:2::2"] {
        let (rc, out) = a.exec(&format!("timeout 30 iperf3 -c {dst} -t 2 -f m"));
        assert!(rc == 0 && iperf3_mbits(&out).is_some_and(|m| m > 0.0), "iperf3 through our router to {dst}: {out}");
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let o = c.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let forwarded: u64 =
        report.split("forwarded ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(forwarded > 1000, "{report}");
    assert!(report.contains("time exceeded 2"), "{report}");
}

/// One host of ours on two links with forwarding off, as a Linux host by default: Linux on one side
/// reaches both of its addresses (the far one delivered, its TTL the host's own) but not the namespace on
/// the other side, and the host counts what it would not forward. Its left interface's TCP echo answers
/// over IPv4 and IPv6 (a service on a router's interface).
#[test]
fn a_multihomed_host_of_ours_does_not_forward() {
    let (_n, a, _b, c) = two_sides("multihomed.toml", 8);
    std::thread::sleep(Duration::from_millis(1500));
    for dst in ["10.97.1.1", "10.97.2.1", "2001:db8:97:1::1", "2001:db8:97:2::1"] {
        let (rc, out) = a.exec(&format!("ping -c 2 -i 0.2 -W 2 {dst}"));
        assert!(rc == 0 && out.contains("ttl=64"), "{dst}: {out}");
    }
    for dst in ["10.97.2.2", "2001:db8:97:2::2"] {
        let (rc, out) = a.exec(&format!("ping -c 3 -i 0.2 -W 1 {dst}"));
        assert!(rc != 0 && out.contains("100% packet loss"), "{dst} is not reached through a host: {out}");
    }
    for dst in ["10.97.1.1", "2001:db8:97:1::1"] {
        let client = format!(
            "import socket\ns = socket.create_connection((\"{dst}\", 7), timeout=5)\ns.sendall(b\"echo over {dst}\")\n\
             s.shutdown(socket.SHUT_WR)\ngot = b\"\"\nwhile True:\n    b = s.recv(100)\n    if not b: break\n    got += b\nprint(got.decode())\n"
        );
        let out = a.must(&format!("timeout 20 python3 -c '{client}'"));
        assert_eq!(out.trim(), format!("echo over {dst}"), "TCP echo on a router's interface");
    }
    let o = c.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let count =
        |what: &str| -> Option<u64> { report.split(what).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()) };
    assert_eq!(count("forwarded "), Some(0), "{report}");
    assert!(count("not forwarding ").is_some_and(|n| n >= 6), "{report}");
    let echoed = "echo over 10.97.1.1".len() + "echo over 2001:db8:97:1::1".len();
    let line = format!("  service tcp-echo:7  2 connections (0 open), {echoed} bytes in, {echoed} out, 0 errors");
    assert!(report.contains(&line), "{line}: {report}");
    // Each interface's counters, under the host: the pings came in on the left, announcements left on the
    // right.
    for (side, what) in [("  host left on tap:ta: ", "rx "), ("  host right on tap:tb: ", "tx ")] {
        let line = report.split(side).nth(1).and_then(|s| s.lines().next()).unwrap_or_default();
        let frames = line.split(what).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok());
        assert!(frames.is_some_and(|n| n > 0), "{side}{what}: {report}");
    }
}

/// Namespaces inside one process: a Linux host pings a host of ours that lives in a second stack instance,
/// behind our router, joined to it by a veth-like pair; the echo crosses the router (TTL lowered once) and
/// the pair, and the inner host's counters show it. The inner host runs the topology's services: Linux gets
/// 1 MiB back from TCP echo byte for byte (its sender and receiver at once, so that the echo's
/// backpressure is felt), three datagrams back from UDP echo, and sends 2 MB to TCP discard; the report
/// counts each.
#[test]
fn a_linux_host_reaches_an_in_process_namespace_through_our_router() {
    init_logs();
    let (n, a) = (Netns::new(), Netns::new());
    n.must("ip tuntap add dev ta mode tap");
    let topo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/topologies/namespaces.toml");
    let c = n
        .command(&bin("nic-lab"))
        .args(["run", topo.to_str().unwrap(), "--seconds", "12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    n.must(&format!("ip link set ta netns {}", a.name));
    a.must("ip link set lo up && ip link set ta up && ip addr add 10.96.1.2/24 dev ta && ip route add default via 10.96.1.1");
    let (rc, out) = a.exec("ping -c 3 -i 0.2 -W 2 10.96.3.2");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("ttl=63"), "{out}");
    let client = r#"
import os, socket, threading
data = os.urandom(1 << 20)
s = socket.create_connection(("10.96.3.2", 7), timeout=10)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
t.join()
print("tcp-echo", len(got), got == data)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
same = 0
for n in (1, 1000, 1472):
    m = os.urandom(n)
    u.sendto(m, ("10.96.3.2", 7))
    r, _ = u.recvfrom(2048)
    same += r == m
print("udp-echo", same)
d = socket.create_connection(("10.96.3.2", 9), timeout=10)
d.sendall(b"x" * 2000000)
d.close()
print("tcp-discard sent")
"#;
    let out = a.must(&format!("timeout 60 python3 -c '{client}'"));
    assert!(out.contains("tcp-echo 1048576 True"), "TCP echo, byte for byte: {out}");
    assert!(out.contains("udp-echo 3"), "UDP echo of 1, 1000 and 1472 bytes: {out}");
    assert!(out.contains("tcp-discard sent"), "{out}");
    let o = c.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let inner = report.lines().find(|l| l.starts_with("host inner on v2")).unwrap_or_default().to_string();
    let delivered: u64 =
        inner.split("delivered ").nth(1).and_then(|x| x.split_whitespace().next()).and_then(|x| x.parse().ok()).unwrap_or(0);
    assert!(delivered >= 3, "the inner host took the echoes: {report}");
    for line in [
        "service tcp-echo:7  1 connections (0 open), 1048576 bytes in, 1048576 out, 0 errors",
        "service udp-echo:7  3 datagrams, 2473 bytes in, 2473 out, 0 errors",
        "service tcp-discard:9  1 connections (0 open), 2000000 bytes in, 0 out, 0 errors",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
}
