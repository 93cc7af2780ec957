//! TCP bulk transfer to the Linux kernel over one TAP device, with this stack and with smoltcp, in the same
//! run: prints both throughputs and the ratio. Needs root (a network namespace and a TAP device are made for
//! the run and removed after). `cargo bench -p nic-stack --bench tap_bulk [-- BYTES]`

use std::process::{Command, Stdio};
use std::time::Duration;

const NS: &str = "nicbench";
const TAP: &str = "bt0";
const HOST: [u8; 4] = [10, 81, 0, 1];

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A host-side sink on `port` that prints the byte count when the sender closes.
fn sink(port: u16) -> std::process::Child {
    let py = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.81.0.1', {port})); s.listen(1)\nc,_=s.accept(); n=0\nwhile True:\n    d=c.recv(1<<20)\n    if not d: break\n    n+=len(d)\nprint(n)\n"
    );
    let c = Command::new("ip").args(["netns", "exec", NS, "python3", "-c", &py]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c
}

fn enter_netns() {
    let f = std::fs::File::open(format!("/var/run/netns/{NS}")).unwrap();
    // SAFETY: setns on a valid namespace fd; this process is single-threaded here.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

fn ours(bytes: usize) -> f64 {
    let child = sink(5001);
    let dev = stack::dev::tap::Tap::open(TAP, [0x02, 0, 0, 0, 0x81, 2]).unwrap();
    let st = stack::Stack::new(Box::new(dev), stack::Config::new([10, 81, 0, 2], 24));
    let mut b = stack::blocking::Blocking::new(st);
    let h = b.connect(HOST, 5001).unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let t0 = std::time::Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        b.send_all(h, &chunk[..n]).unwrap();
        left -= n;
    }
    b.close(h).unwrap();
    let out = child.wait_with_output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), bytes.to_string(), "the sink got everything");
    bytes as f64 / secs
}

fn smol(bytes: usize) -> f64 {
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
    let child = sink(5002);
    let mut device = TunTapInterface::new(TAP, Medium::Ethernet).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&device);
    let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0x81, 3]).into());
    let mut iface = Interface::new(config, &mut device, Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 81, 0, 3), 24)).unwrap();
    });
    let rx = tcp::SocketBuffer::new(vec![0; 65536]);
    let tx = tcp::SocketBuffer::new(vec![0; 1 << 20]);
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(tcp::Socket::new(rx, tx));
    sockets.get_mut::<tcp::Socket>(h).connect(iface.context(), (IpAddress::v4(10, 81, 0, 1), 5002), 49500).unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    let t0 = std::time::Instant::now();
    let mut closed = false;
    loop {
        let ts = Instant::now();
        iface.poll(ts, &mut device, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(h);
        while left > 0 && s.can_send() {
            let n = s.send_slice(&chunk[..left.min(chunk.len())]).unwrap();
            if n == 0 {
                break;
            }
            left -= n;
        }
        if left == 0 && !closed && s.send_queue() == 0 {
            s.close();
            closed = true;
        }
        if closed && !s.is_open() {
            break;
        }
        if closed && matches!(s.state(), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed) {
            break;
        }
        phy_wait(fd, iface.poll_delay(ts, &sockets)).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), bytes.to_string(), "the sink got everything");
    bytes as f64 / secs
}

fn main() {
    let bytes: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000_000);
    let _ = Command::new("ip").args(["netns", "del", NS]).stderr(Stdio::null()).status();
    sh(&format!("ip netns add {NS} && ip netns exec {NS} sh -c 'ip link set lo up && ip tuntap add dev {TAP} mode tap && ip addr add 10.81.0.1/24 dev {TAP} && ip link set {TAP} up && sysctl -qw net.ipv6.conf.{TAP}.disable_ipv6=1'"));
    enter_netns();
    let a = ours(bytes);
    let b = smol(bytes);
    println!("TCP bulk send of {bytes} bytes to Linux over one TAP device");
    println!("{:<14} {:>10} {:>10}", "stack", "MB/s", "Gbit/s");
    println!("{:<14} {:>10.1} {:>10.3}", "nic-stack", a / 1e6, a * 8.0 / 1e9);
    println!("{:<14} {:>10.1} {:>10.3}", "smoltcp 0.14", b / 1e6, b * 8.0 / 1e9);
    println!("ratio nic-stack / smoltcp: {:.2}", a / b);
    let _ = Command::new("ip").args(["netns", "del", NS]).status();
}
