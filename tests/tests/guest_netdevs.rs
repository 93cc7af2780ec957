//! nic-device's wire backends against QEMU's own netdevs, over loopback in a private namespace: a guest
//! whose NICs are QEMU's e1000e on `-netdev stream` (TCP and Unix) and `-netdev dgram` (UDP unicast and
//! multicast), each sharing a wire with a nic-device that our driver and stack (nic-lab) run on. Pings
//! both ways prove the framing; restarting either end proves reconnection.

use nic_tests::*;
use std::time::Duration;

/// A free port on the namespace's loopback (ports are per namespace; the host's free ones are free there).
fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Link {
    /// nic-device's backend spec.
    backend: String,
    /// QEMU's netdev.
    netdev: String,
    mac: String,
    net: u8,
}

fn stack_ping(sock: &std::path::Path, net: u8, count: u32) -> (bool, String) {
    let ip = format!("10.90.{net}.2/24");
    let dest = format!("10.90.{net}.1");
    let c = count.to_string();
    nic_lab(&["--vfio-user", sock.to_str().unwrap(), "--ip", &ip, "ping", &dest, "-c", &c, "-i", "0.2"])
}

fn guest_if(g: &mut Guest, mac: &str) -> String {
    g.must(&format!("for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && basename $d; done; true")).trim().to_string()
}

#[test]
fn qemu_stream_and_dgram_netdevs_share_a_wire_with_nic_device() {
    init_logs();
    let _l = guest_lock();
    let ns = Netns::new();
    ns.must("ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo");
    let dir = std::env::temp_dir();
    let unix_path = dir.join(format!("{}.wire", unique("qstream")));
    let (tcp, uq, ud, mc) = (port(), port(), port(), port());
    let links = [
        // QEMU connects to our TCP listener, and reconnects when it goes away.
        Link {
            backend: format!("stream:tcp:127.0.0.1:{tcp}"),
            netdev: format!("stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={tcp},reconnect-ms=300"),
            mac: "52:54:00:00:90:00".into(),
            net: 0,
        },
        // QEMU listens on a Unix socket; we connect (and keep trying until it is there).
        Link {
            backend: format!("stream-connect:{}", unix_path.display()),
            netdev: format!("stream,id=n1,server=on,addr.type=unix,addr.path={}", unix_path.display()),
            mac: "52:54:00:00:90:01".into(),
            net: 1,
        },
        Link {
            backend: format!("dgram:udp:127.0.0.1:{ud}:127.0.0.1:{uq}"),
            netdev: format!(
                "dgram,id=n2,local.type=inet,local.host=127.0.0.1,local.port={uq},remote.type=inet,remote.host=127.0.0.1,remote.port={ud}"
            ),
            mac: "52:54:00:00:90:02".into(),
            net: 2,
        },
        Link {
            backend: format!("dgram:mcast:239.9.9.9:{mc}"),
            netdev: format!("dgram,id=n3,remote.type=inet,remote.host=239.9.9.9,remote.port={mc}"),
            mac: "52:54:00:00:90:03".into(),
            net: 3,
        },
    ];
    // Our ends first (the Unix stream one connects once QEMU listens).
    let mut devs: Vec<Device> = links
        .iter()
        .map(|l| {
            let s = dir.join(format!("{}.sock", unique("wire")));
            Device::start(Some(&ns), &s, &["--backend", &l.backend, "--mac", &format!("52:54:00:00:91:0{}", l.net)])
        })
        .collect();
    let mut extra = Vec::new();
    for (i, l) in links.iter().enumerate() {
        extra.extend(["-netdev".to_string(), l.netdev.clone(), "-device".into(), format!("e1000e,netdev=n{i},mac={}", l.mac)]);
    }
    let mut g = Guest::boot(&GuestOpts { netns: Some(ns.name.clone()), extra, ..Default::default() });
    g.must("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    for l in &links {
        let ifname = guest_if(&mut g, &l.mac);
        assert!(!ifname.is_empty(), "no guest interface with {}", l.mac);
        g.link_up(&ifname, &format!("10.90.{}.1/24", l.net));
    }
    for (l, d) in links.iter().zip(&devs) {
        // Our stack pings the guest (ARP and ICMP across QEMU's netdev), and the guest pings our stack.
        let (ok, out) = stack_ping(&d.socket, l.net, 5);
        assert!(ok && zero_loss(&out), "{}: our stack -> guest: {out}", l.backend);
        let mut lab = std::process::Command::new(bin("nic-lab"))
            .args(["--vfio-user", d.socket.to_str().unwrap(), "--ip", &format!("10.90.{}.2/24", l.net), "ping"])
            .arg(format!("10.90.{}.1", l.net))
            .args(["-c", "30", "-i", "0.2"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let out = g.must(&format!("ping -c 5 -i 0.2 -W 2 10.90.{}.2", l.net));
        assert!(zero_loss(&out), "{}: guest -> our stack: {out}", l.backend);
        let _ = lab.kill();
        let _ = lab.wait();
        // Frames, not bytes: the device counted whole frames in and out of its backend.
        let m = d.metrics();
        assert!(m["rx_frames"] >= 10 && m["tx_frames"] >= 10, "{}: {m:?}", l.backend);
        assert_eq!(m.get("backend_errors"), None, "{}: {m:?}", l.backend);
    }

    // Reconnects: our TCP listener restarts (QEMU reconnects to it), and the Unix one restarts and connects
    // to QEMU's listener again.
    for i in [0usize, 1] {
        let s = devs[i].socket.clone();
        devs[i].stop();
        std::thread::sleep(Duration::from_millis(300));
        devs[i] = Device::start(Some(&ns), &s, &["--backend", &links[i].backend, "--mac", &format!("52:54:00:00:91:0{i}")]);
        let mut ok = false;
        let mut last = String::new();
        for _ in 0..10 {
            let (done, out) = stack_ping(&devs[i].socket, links[i].net, 2);
            if done && zero_loss(&out) {
                ok = true;
                break;
            }
            last = out;
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(ok, "{}: no traffic after the restart: {last}", links[i].backend);
    }
}
