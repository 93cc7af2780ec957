//! The XDP-style hook in our driver, judged by Linux over nic-device's TAP backend: a drop filter, an L3
//! reflector and a redirector chained on the card's receive path (`nic-lab --xdp ...`), with RSS on. Linux
//! pings the stack through the programs (PASS); a datagram to the reflected port comes back to its socket
//! from the address it was sent to (TX, seen by Linux); one to the dropped port gets no answer at all where
//! one to an unused port gets the stack's port unreachable (ECONNREFUSED); datagrams to the redirected port
//! arrive on a second TAP device (REDIRECT to another interface, counted by Linux), and in a second run
//! reach a user queue with their RX queue and RSS hash.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

/// Sends one datagram from a fresh socket and prints what came back: `answered PAYLOAD FROM`, `refused`
/// or `timeout`.
const UDP_PROBE: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.connect((sys.argv[1],int(sys.argv[2])))\n\
s.settimeout(2)\n\
s.send(sys.argv[3].encode())\n\
try:\n  d,a=s.recvfrom(100); print('answered',d.decode(),a[0]+':'+str(a[1]))\n\
except ConnectionRefusedError: print('refused')\n\
except socket.timeout: print('timeout')\n";

fn probe(ns: &Netns, port: u16, payload: &str) -> String {
    let (_, out) = ns.exec(&format!("python3 -c \"{UDP_PROBE}\" 10.78.0.2 {port} {payload}"));
    out.trim().to_string()
}

/// Sends `n` datagrams to a port without waiting for answers.
fn send(ns: &Netns, port: u16, n: usize) {
    ns.must(&format!(
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor k in range({n}): s.sendto(b'away%d' % k, ('10.78.0.2', {port}))\n\""
    ));
    std::thread::sleep(Duration::from_millis(300));
}

fn lab(ns: &Netns, sock: &str, extra: &[&str], seconds: &str) -> std::process::Child {
    let mut args = vec!["--vfio-user", sock, "--ip", "10.78.0.2/24", "--rss"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["idle", "--seconds", seconds]);
    ns.command(&bin("nic-lab")).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn output(c: std::process::Child) -> String {
    let o = c.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn field(report: &str, name: &str) -> u64 {
    report.split(&format!(" {name} ")).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn xdp_programs_in_our_driver_as_linux_sees_them() {
    init_logs();
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("xdp")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tap0"]);
    ns.must("ip addr add 10.78.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    ns.must("ip tuntap add dev xr0 mode tap && ip link set xr0 up && sysctl -qw net.ipv6.conf.xr0.disable_ipv6=1");
    let s = sock.to_str().unwrap();
    let programs = ["--xdp", "drop=udp:9999", "--xdp", "reflect=udp:7777", "--xdp", "redirect=udp:7778"];
    let mut extra = programs.to_vec();
    extra.extend_from_slice(&["--xdp-redirect", "tap:xr0"]);
    let c = lab(&ns, s, &extra, "9");
    std::thread::sleep(Duration::from_millis(1500));
    let (rc, out) = ns.exec("ping -c 3 -i 0.2 -W 2 10.78.0.2");
    assert_eq!(rc, 0, "PASS: the stack answers pings: {out}");
    let reflected = probe(&ns, 7777, "mirror");
    assert_eq!(reflected, "answered mirror 10.78.0.2:7777", "TX: the reflector sent it back");
    assert_eq!(probe(&ns, 9999, "gone"), "timeout", "DROP: nothing reached the stack, nothing came back");
    assert_eq!(probe(&ns, 9998, "closed"), "refused", "without the program the stack answers port unreachable");
    let before = ns.link_stats("xr0").0;
    send(&ns, 7778, 5);
    let arrived = ns.link_stats("xr0").0 - before;
    let report = output(c);
    assert!(arrived >= 5, "REDIRECT: the datagrams arrived on xr0 ({arrived}): {report}");
    let line = report.lines().find(|l| l.starts_with("xdp drop-filter+reflector-l3+redirector:")).unwrap_or_default();
    assert!(field(line, "drop") >= 1 && field(line, "tx") >= 1 && field(line, "redirect") >= 5 && field(line, "pass") >= 3, "{report}");
    assert!(report.contains("xdp target 0: device tap:xr0: sent 5"), "{report}");

    // A user queue as the target: the frames are there with their queue and hash.
    let mut extra = programs.to_vec();
    extra.extend_from_slice(&["--xdp-redirect", "queue"]);
    let c = lab(&ns, s, &extra, "5");
    std::thread::sleep(Duration::from_millis(1500));
    send(&ns, 7778, 4);
    let report = output(c);
    assert!(report.contains("user queue: received 4 dropped 0") && report.contains("4 with an RSS hash"), "{report}");
}
