//! Our stack as a NAT router and firewall between two Linux namespaces (tools/topologies/nat.toml and
//! nat.nft), with Linux judging at both ends: curl from the inside reaches a server outside through
//! MASQUERADE (the outside has no route back, and its server logs the router's address as the client); a
//! DNAT port forward reaches a server inside from outside; an ICMP port unreachable comes back through
//! the NAT to the inside socket as ECONNREFUSED; REJECT gives curl its "connection refused" (TCP reset),
//! a UDP socket ECONNREFUSED (ICMP port unreachable) and a TCP connect EHOSTUNREACH (host unreachable); a
//! stray ACK is INVALID and counted; IPv6 is filtered statefully (pings from inside answered, pings from
//! outside dropped, fragments reassembled before conntrack, also behind a hop-by-hop header), masqueraded (NAT66: the outside v6 server logs the router's address) and port
//! forwarded inward (DNAT66); the conntrack listing shows the masqueraded flow.

use nic_tests::*;
use std::process::Stdio;
use std::time::Duration;

/// A UDP probe from inside a namespace: sends one datagram and prints what the socket reports.
const UDP_PROBE: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.connect((sys.argv[1],int(sys.argv[2])))\n\
s.settimeout(3)\n\
s.send(b'probe')\n\
try:\n  s.recv(100); print('answered')\n\
except ConnectionRefusedError: print('refused')\n\
except socket.timeout: print('timeout')\n";

/// A bare TCP ACK, outside any connection (raw socket).
const STRAY_ACK: &str = "import socket,struct,sys\n\
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_TCP)\n\
h=struct.pack('!HHIIBBHHH',40123,int(sys.argv[2]),1000,2000,5<<4,0x10,1000,0,0)\n\
src=socket.inet_aton(sys.argv[3]); dst=socket.inet_aton(sys.argv[1])\n\
ph=src+dst+struct.pack('!BBH',0,6,len(h))\n\
d=ph+h; c=sum(struct.unpack('!%dH'%(len(d)//2),d)); c=(c&0xffff)+(c>>16); c=(c&0xffff)+(c>>16)\n\
h=h[:16]+struct.pack('!H',(~c)&0xffff)+h[18:]\n\
s.sendto(h,(sys.argv[1],0)); print('sent')\n";

/// UDP over IPv6 with a hop-by-hop header on every packet (PadN): `serve ADDR PORT` echoes one datagram
/// and prints its sender and length; `send ADDR PORT LEN` sends LEN bytes and prints whether they came
/// back intact. Linux fragments a large one behind the hop-by-hop header (RFC 8200 4.5).
const UDP6_HBH: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_HOPOPTS,bytes([0,0,1,4,0,0,0,0]))\n\
s.settimeout(10)\n\
if sys.argv[1]=='serve':\n  s.bind((sys.argv[2],int(sys.argv[3])))\n  \
d,a=s.recvfrom(65536); print(a[0],len(d),flush=True); s.sendto(d,a)\n\
else:\n  d=bytes(i*7%251 for i in range(int(sys.argv[4])))\n  \
s.connect((sys.argv[2],int(sys.argv[3]))); s.send(d)\n  \
try: print('intact' if s.recv(65536)==d else 'corrupt')\n  \
except socket.timeout: print('timeout')\n";

#[test]
fn our_nat_router_between_two_linux_namespaces() {
    init_logs();
    let (n, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let topo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/topologies/nat.toml");
    let ctl = std::env::temp_dir().join(format!("{}.sock", unique("natctl")));
    let c = run_topology_between_with(&n, &a, &b, &topo, 16, &["--control", ctl.to_str().unwrap()]);
    let ask = |cmd: &str| {
        let mut args = vec!["ctl", ctl.to_str().unwrap()];
        args.extend(cmd.split_whitespace());
        let (ok, out) = nic_lab(&args);
        assert!(ok, "ctl {cmd}: {out}");
        out
    };
    a.must("ip link set lo up && ip link set ta up && ip addr add 10.95.1.2/24 dev ta && ip route add default via 10.95.1.1");
    // The outside knows nothing of 10.95.1.0/24: only masquerading lets its answers back.
    b.must("ip link set lo up && ip link set tb up && ip addr add 10.95.2.2/24 dev tb");
    // IPv6 is routed, not translated: the same stateful filter applies.
    a.must("ip -6 addr add 2001:db8:95:1::2/64 dev ta nodad && ip -6 route add default via 2001:db8:95:1::1");
    b.must("ip -6 addr add 2001:db8:95:2::2/64 dev tb nodad && ip -6 route add default via 2001:db8:95:2::1");
    let dir = std::env::temp_dir().join(unique("nat"));
    let page_dir = dir.join("www");
    std::fs::create_dir_all(&page_dir).unwrap();
    std::fs::write(page_dir.join("index.html"), "served through our NAT\n").unwrap();
    let log_in = dir.join("inside.log");
    let log_out = dir.join("outside.log");
    // An HTTP server on `bind`:`port` in `ns`, logging its clients to `log`.
    let server_on = |ns: &Netns, bind: &str, port: u16, log: &std::path::Path| {
        ns.command(std::path::Path::new("python3"))
            .args(["-m", "http.server", &port.to_string(), "--bind", bind, "--directory", page_dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let mut srv_out = server_on(&b, "10.95.2.2", 8000, &log_out);
    let mut srv_in = server_on(&a, "10.95.1.2", 8000, &log_in);
    std::thread::sleep(Duration::from_millis(800));

    // Inside to outside, masqueraded.
    let (rc, out) = a.exec("curl -s --max-time 5 http://10.95.2.2:8000/index.html");
    assert_eq!((rc, out.trim()), (0, "served through our NAT"), "curl through MASQUERADE");
    let (rc, out) = a.exec("ping -c 2 -i 0.3 -W 2 10.95.2.2");
    assert_eq!(rc, 0, "ping through MASQUERADE: {out}");
    // Fragmented both ways: the router reassembles before conntrack and NAT, and fragments again.
    let (rc, out) = a.exec("ping -c 2 -s 4000 -i 0.3 -W 2 10.95.2.2");
    assert_eq!(rc, 0, "4000-byte pings through MASQUERADE: {out}");
    let (rc, out) = a.exec("ping -6 -c 2 -i 0.3 -W 2 2001:db8:95:2::2");
    assert_eq!(rc, 0, "IPv6 from inside out, its replies ESTABLISHED: {out}");
    // Fragmented IPv6 both ways: reassembled before conntrack and NAT66, fragmented again on the way out
    // (no larger than the fragments that came).
    let (rc, out) = a.exec("ping -6 -c 2 -s 4000 -i 0.3 -W 2 2001:db8:95:2::2");
    assert_eq!(rc, 0, "4000-byte IPv6 pings through NAT66: {out}");
    // Fragments behind a hop-by-hop header: reassembled with it before conntrack, so NAT66 applies to the
    // datagram, and fragmented again with the header repeated in each fragment.
    let script = UDP6_HBH.replace('"', "\\\"");
    let echo = b
        .command(std::path::Path::new("python3"))
        .args(["-c", UDP6_HBH, "serve", "2001:db8:95:2::2", "7007"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (_, out) = a.exec(&format!("python3 -c \"{script}\" send 2001:db8:95:2::2 7007 4000"));
    let served = echo.wait_with_output().unwrap();
    let served = String::from_utf8_lossy(&served.stdout).to_string() + &String::from_utf8_lossy(&served.stderr);
    assert_eq!(out.trim(), "intact", "a 4000-byte datagram with a hop-by-hop header through NAT66 and back: {served}");
    assert_eq!(served.trim(), "2001:db8:95:2::1 4000", "the outside saw the router as the sender");
    // NAT66: a v6 client inside reaches a v6 server outside as the router's outside address.
    let log6 = dir.join("outside6.log");
    let mut srv6 = server_on(&b, "2001:db8:95:2::2", 8006, &log6);
    std::thread::sleep(Duration::from_millis(800));
    let (rc, out) = a.exec("curl -s --max-time 5 http://[2001:db8:95:2::2]:8006/index.html");
    let _ = srv6.kill();
    let _ = srv6.wait();
    assert_eq!((rc, out.trim()), (0, "served through our NAT"), "curl -6 through NAT66");
    let served6 = std::fs::read_to_string(&log6).unwrap();
    assert!(served6.contains("2001:db8:95:2::1 - -") && !served6.contains("2001:db8:95:1::2"), "{served6}");
    let (rc, out) = b.exec("ping -6 -c 2 -i 0.3 -W 1 2001:db8:95:1::2");
    assert_ne!(rc, 0, "IPv6 from outside in: NEW, dropped by the forward policy: {out}");
    // Outside to inside, through the port forward on the router's outside address.
    let (rc, out) = b.exec("curl -s --max-time 5 http://10.95.2.1:8080/index.html");
    assert_eq!((rc, out.trim()), (0, "served through our NAT"), "curl through the DNAT port forward");
    // And over IPv6: the outside reaches the inside's v6 server through the router's v6 port forward, and
    // the server sees the real client (no source translation inward).
    let log_in6 = dir.join("inside6.log");
    let mut srv_in6 = server_on(&a, "2001:db8:95:1::2", 8000, &log_in6);
    std::thread::sleep(Duration::from_millis(800));
    let (rc, out) = b.exec("curl -s --max-time 5 http://[2001:db8:95:2::1]:8086/index.html");
    let _ = srv_in6.kill();
    let _ = srv_in6.wait();
    assert_eq!((rc, out.trim()), (0, "served through our NAT"), "curl -6 through the DNAT66 port forward");
    let served_in6 = std::fs::read_to_string(&log_in6).unwrap();
    assert!(served_in6.contains("2001:db8:95:2::2 - -"), "{served_in6}");
    // An ICMP error from the outside host, about a masqueraded datagram, reaches the inside socket.
    let probe = |ns: &Netns, dst: &str, port: u16| {
        let (_, out) = ns.exec(&format!("python3 -c \"{}\" {dst} {port}", UDP_PROBE.replace('"', "\\\"")));
        out.trim().to_string()
    };
    assert_eq!(probe(&a, "10.95.2.2", 9999), "refused", "port unreachable through NAT");
    // REJECT: a TCP reset for curl, an ICMP port unreachable for UDP.
    let (rc, _) = a.exec("curl -s --max-time 5 http://10.95.2.2:9/");
    assert_eq!(rc, 7, "curl: connection refused by the router's reset");
    assert_eq!(probe(&a, "10.95.2.2", 9), "refused", "reject with ICMP port unreachable");
    let (_, out) = a.exec(
        "python3 -c \"import socket,errno\ntry: socket.create_connection(('10.95.2.2',10),timeout=3)\nexcept OSError as e: print(errno.errorcode.get(e.errno))\"",
    );
    assert_eq!(out.trim(), "EHOSTUNREACH", "reject with icmp type host-unreachable");
    // The router's own input chain: a reset for port 22 from outside.
    let (rc, _) = b.exec("curl -s --max-time 5 http://10.95.2.1:22/");
    assert_eq!(rc, 7, "input chain reject with tcp reset");
    // Unsolicited from outside to inside: dropped (no route would exist anyway, but the policy counts it).
    let (_, out) = a.exec(&format!("python3 -c \"{}\" 10.95.2.2 8000 10.95.1.2", STRAY_ACK.replace('"', "\\\"")));
    assert_eq!(out.trim(), "sent");
    std::thread::sleep(Duration::from_millis(300));
    // While it runs: the control socket lists the masqueraded flow, and the inside interface's drops name
    // netfilter.
    let live = ask("conntrack");
    assert!(
        live.lines().any(|l| l.starts_with("tcp") && l.contains("src=10.95.1.2 dst=10.95.2.2") && l.contains("dst=10.95.2.1 sport=8000")),
        "{live}"
    );
    let drops = ask("inside drops");
    assert!(drops.contains("NETFILTER_DROP"), "{drops}");
    assert!(ask("outside nft list").contains("masquerade # packets"), "the router's rules from any of its interfaces");
    // A capture on the outside interface while the inside pings out: what leaves is masqueraded.
    let cap = std::env::temp_dir().join(format!("{}.pcap", unique("natcap")));
    assert!(ask(&format!("capture wan {}", cap.display())).starts_with("capturing"));
    a.must("ping -c 2 -i 0.2 -W 2 10.95.2.2");
    assert!(ask("capture wan stop").starts_with("capture stopped:"));
    let (_, dump) = sh(&format!("tcpdump -nn -r {} icmp 2>&1", cap.display()));
    let _ = std::fs::remove_file(&cap);
    assert!(dump.contains("10.95.2.1 > 10.95.2.2: ICMP echo request") && !dump.contains("10.95.1.2"), "{dump}");

    let _ = srv_out.kill();
    let _ = srv_in.kill();
    let _ = srv_out.wait();
    let _ = srv_in.wait();
    let o = c.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    // The outside server saw the router as its client; the inside server saw the real outside client.
    let outside_log = std::fs::read_to_string(&log_out).unwrap();
    assert!(outside_log.contains("10.95.2.1 - -") && !outside_log.contains("10.95.1.2"), "{outside_log}");
    let inside_log = std::fs::read_to_string(&log_in).unwrap();
    assert!(inside_log.contains("10.95.2.2 - -"), "{inside_log}");
    // conntrack lists the masqueraded flow: original from the inside host, reply to the router.
    assert!(
        report.lines().any(|l| l.starts_with("tcp")
            && l.contains("src=10.95.1.2 dst=10.95.2.2")
            && l.contains("src=10.95.2.2 dst=10.95.2.1 sport=8000")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("tcp")
            && l.contains("src=10.95.2.2 dst=10.95.2.1")
            && l.contains("dport=8080")
            && l.contains("src=10.95.1.2 dst=10.95.2.2 sport=8000")),
        "the port forward's entry: {report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let invalid = report.lines().find(|l| l.contains("ct state invalid counter drop")).unwrap_or_default();
    assert!(invalid.contains("# packets 1 "), "the stray ACK was INVALID: {report}");
}
