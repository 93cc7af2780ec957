//! The Rust stack against the Linux kernel's: over a TAP device in a namespace this test creates, and over
//! the whole chain stack -> driver -> nic-device (TAP backend) -> Linux.

use nic_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn stack_ping(ns: &Netns, args: &[&str]) -> std::process::Child {
    ns.command(&bin("nic-lab")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(c: std::process::Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn stack_on_a_tap_pings_linux_and_answers_its_pings() {
    let ns = Netns::new();
    ns.must("ip tuntap add dev st0 mode tap && ip addr add 10.80.0.1/24 dev st0 && ip link set st0 up && sysctl -qw net.ipv6.conf.st0.disable_ipv6=1");
    let c = stack_ping(&ns, &["--tap", "st0", "--ip", "10.80.0.2/24", "ping", "10.80.0.1", "-c", "20", "-i", "0.2"]);
    std::thread::sleep(Duration::from_millis(1000));
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.80.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack: {out}");
    assert!(out.contains(" 0% packet loss"), "{out}");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(out.contains("20 packets transmitted, 20 packets received, 0% packet loss"), "{out}");
}

#[test]
fn stack_through_driver_and_nic_device_pings_linux() {
    let ns = Netns::new();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("stk")));
    let _dev = Device::start(Some(&ns), &sock, &["--backend", "tap:tap0"]);
    ns.must("ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up && sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1");
    let s = sock.to_str().unwrap();
    let c = stack_ping(&ns, &["--vfio-user", s, "--ip", "10.77.0.2/24", "ping", "10.77.0.1", "-c", "20", "-i", "0.2"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (rc, out) = ns.exec("ping -c 5 -i 0.2 -W 2 10.77.0.2");
    assert_eq!(rc, 0, "Linux pinging the stack through nic-device: {out}");
    let (ok, out) = finish(c);
    assert!(ok, "{out}");
    assert!(out.contains("20 packets received, 0% packet loss"), "{out}");
    let _ = Command::new("true").status();
}
