//! Watching a running stack through `nic-lab --control` (`nic-lab ctl SOCKET ...`), with Linux as the
//! judge: `ss` agrees with the Linux end's own `ss` on the bytes each side sent and received, `nstat`
//! counts the passive open, drop reasons name a closed UDP port (NO_SOCKET) and a netfilter rule
//! (NETFILTER_DROP), the event stream shows the connection's state changes, `nft list` shows the rule's
//! counter, a REDIRECT from port 8081 to the server on 8080 answers curl, `link` and `tc show` report, and
//! a capture taken at the interface opens in tcpdump with Linux's pings in it, and one at netfilter's
//! INPUT hook holds the requests alone, in tcpdump and in tshark.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

const RULES: &str = "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 23 drop\n  }\n}\n\
table ip nat {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    tcp dport 8081 redirect to :8080\n  }\n}\n";

/// Connects, asks for /page, reads the whole response, then holds the socket for `hold` seconds.
const CLIENT: &str = "import socket,sys,time\n\
s=socket.create_connection(('10.82.0.2',8080))\n\
s.sendall(b'GET /page HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
d=b''\n\
while True:\n  b=s.recv(65536)\n  if not b: break\n  d+=b\n\
print('got',len(d),flush=True)\n\
time.sleep(float(sys.argv[1]))\n";

fn ctl(sock: &std::path::Path, cmd: &str) -> String {
    let mut args = vec!["ctl", sock.to_str().unwrap()];
    args.extend(cmd.split_whitespace());
    let (ok, out) = nic_lab(&args);
    assert!(ok, "ctl {cmd}: {out}");
    out
}

fn field(line: &str, key: &str) -> u64 {
    line.split(&format!("{key}:")).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
}

#[test]
fn a_running_stack_seen_through_its_control_socket() {
    init_logs();
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.82.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let dir = std::env::temp_dir().join(unique("mon"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page"), vec![b'x'; 50_000]).unwrap();
    std::fs::write(dir.join("rules.nft"), RULES).unwrap();
    let sock = dir.join("ctl.sock");
    let rules = dir.join("rules.nft");
    let mut lab = ns
        .command(&bin("nic-lab"))
        .args(["--tap", "st0", "--ip", "10.82.0.2/24", "--qdisc", "fq_codel", "--netfilter", rules.to_str().unwrap()])
        .args(["--control", sock.to_str().unwrap(), "serve", "--port", "8080", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let client = ns.command(std::path::Path::new("python3")).args(["-c", CLIENT, "6"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2000));

    // Both ends' byte counts: ours from `ctl ss`, Linux's from its own ss.
    let ours = ctl(&sock, "ss");
    let conn = ours.lines().skip_while(|l| !l.contains("10.82.0.1:")).nth(1).unwrap_or_else(|| panic!("{ours}")).to_string();
    let linux = ns.must("ss -tni dst 10.82.0.2");
    let lin = linux.lines().find(|l| l.contains("bytes_")).unwrap_or_else(|| panic!("{linux}")).to_string();
    // Linux's tcp_info counts the acknowledged sequence space with the SYN, the received one without the
    // peer's SYN (both with a FIN): each end's acked is the other's received plus one.
    assert_eq!(field(&conn, "bytes_acked"), field(&lin, "bytes_received") + 1, "what we sent, Linux received\n{ours}\n{linux}");
    assert_eq!(field(&conn, "bytes_received") + 1, field(&lin, "bytes_acked"), "what Linux sent, we received\n{ours}\n{linux}");
    assert!(field(&conn, "bytes_acked") > 50_000 && field(&conn, "retrans") == 0, "{conn}");

    // Drops by reason: a closed UDP port, and the netfilter rule on port 23.
    ns.exec("python3 -c \"import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b'x',('10.82.0.2',9))\"");
    ns.exec("timeout 2 python3 -c \"import socket; socket.create_connection(('10.82.0.2',23),timeout=1)\"");
    std::thread::sleep(Duration::from_millis(300));
    let drops = ctl(&sock, "drops");
    assert!(drops.contains("NO_SOCKET") && drops.contains("NETFILTER_DROP"), "{drops}");
    let nstat = ctl(&sock, "nstat");
    let counter = |k: &str| {
        nstat.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(counter("TcpPassiveOpens") >= 1 && counter("TcpInSegs") > 10 && counter("UdpNoPorts") >= 1, "{nstat}");
    let events = ctl(&sock, "events");
    assert!(events.contains("tcp:tcp_set_state 10.82.0.2:8080 > 10.82.0.1:") && events.contains("-> ESTAB"), "{events}");
    assert!(events.contains("kfree_skb reason=NETFILTER_DROP"), "{events}");
    let nft = ctl(&sock, "nft list");
    let rule = nft.lines().find(|l| l.contains("tcp dport 23 drop")).unwrap_or_default();
    assert!(!rule.contains("# packets 0 "), "{nft}");
    assert!(ctl(&sock, "link").contains("RX:  bytes packets"));
    assert!(ctl(&sock, "tc show").contains("qdisc fq_codel"));

    // A capture at the interface, read by tcpdump.
    let pcap = dir.join("cap.pcap");
    assert!(ctl(&sock, &format!("capture {}", pcap.display())).starts_with("capturing"));
    ns.must("ping -c 3 -i 0.2 -W 1 10.82.0.2");
    let stopped = ctl(&sock, "capture stop");
    assert!(stopped.starts_with("capture stopped:"), "{stopped}");
    let (_, dump) = sh(&format!("tcpdump -nn -r {} 2>&1", pcap.display()));
    assert!(dump.matches("ICMP echo request").count() >= 3 && dump.matches("ICMP echo reply").count() >= 3, "{dump}");
    // At netfilter's INPUT hook: the requests only, as IP packets.
    let hook = dir.join("input.pcap");
    assert!(ctl(&sock, &format!("capture hook input {}", hook.display())).starts_with("capturing hook input"));
    ns.must("ping -c 2 -i 0.2 -W 1 10.82.0.2");
    assert!(ctl(&sock, "capture hook stop").starts_with("capture stopped:"));
    let (_, dump) = sh(&format!("tcpdump -nn -r {} 2>&1", hook.display()));
    assert!(dump.contains("raw IP") || dump.contains("RAW"), "{dump}");
    assert!(dump.matches("ICMP echo request").count() >= 2 && !dump.contains("ICMP echo reply"), "{dump}");
    // The same file in tshark (Wireshark's dissectors): raw IPv4 packets, the requests decoded as such.
    let (rc, dump) = sh(&format!("tshark -n -r {} -T fields -e frame.encap_type -e ip.dst -e icmp.type 2>&1", hook.display()));
    assert_eq!(rc, 0, "tshark: {dump}");
    // (Rows are tab-separated; tshark's own notes, such as running as root, are not.)
    let rows: Vec<&str> = dump.lines().filter(|l| l.contains('\t')).collect();
    assert!(rows.len() >= 2 && rows.iter().all(|l| l.split('\t').collect::<Vec<_>>()[1..] == ["10.82.0.2", "8"]), "{dump}");

    let out = client.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("got "), "the client finished");
    // REDIRECT on the host: port 8081 reaches the server on 8080, the answer comes from 8081.
    let (rc, body) = ns.exec("curl -s --max-time 5 http://10.82.0.2:8081/page | wc -c");
    assert_eq!((rc, body.trim()), (0, "50000"), "curl through REDIRECT");
    let ct = ctl(&sock, "conntrack");
    assert!(ct.lines().any(|l| l.contains("dport=8081") && l.contains("src=10.82.0.2 dst=10.82.0.1 sport=8080")), "{ct}");
    let _ = lab.kill();
    let _ = lab.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
