//! What the benchmarks share.

/// The median of `v` with its lowest and highest value.
pub fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (m, v[0], v[n - 1])
}

/// Moves the calling thread into namespace `ns` (setns is per thread).
#[allow(dead_code)]
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Sends UDP datagrams of `payload` bytes from namespace `from` (bound to `src`) to `to` for `secs`, as
/// fast as one socket can: packets per second offered.
#[allow(dead_code)]
pub fn udp_flood(from: &str, src: &str, to: std::net::SocketAddr, payload: usize, secs: f64) -> f64 {
    let (from, src) = (from.to_string(), src.to_string());
    std::thread::spawn(move || {
        enter(&from);
        let s = std::net::UdpSocket::bind(&src).unwrap();
        s.connect(to).unwrap();
        let data = vec![0x5au8; payload];
        let t0 = std::time::Instant::now();
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..64 {
                if s.send(&data).is_ok() {
                    n += 1;
                }
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

/// Sends `frame` (a whole Ethernet frame) out of interface `ifname` in namespace `ns` for `secs`, through
/// a raw packet socket that skips the qdisc (PACKET_QDISC_BYPASS), 64 frames per `sendmmsg`: faster than
/// one UDP socket, as a packet generator is. Frames per second the interface took.
#[allow(dead_code)]
pub fn packet_flood(ns: &str, ifname: &str, frame: Vec<u8>, secs: f64) -> f64 {
    let (ns, ifname) = (ns.to_string(), ifname.to_string());
    std::thread::spawn(move || {
        enter(&ns);
        let name = std::ffi::CString::new(ifname.clone()).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{ifname}: no such interface");
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor just opened and owned by nothing else.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(raw, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
        };
        assert_eq!(r, 0, "bind {ifname}: {}", std::io::Error::last_os_error());
        const BATCH: usize = 64;
        let mut iov = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
        // Each header points at the one iovec, which points at `frame`: both outlive the loop and the kernel
        // only reads them.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                // SAFETY: mmsghdr is plain data; zero is a valid start.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let t0 = std::time::Instant::now();
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            // SAFETY: `msgs` holds BATCH valid headers (see above).
            let r = unsafe { libc::sendmmsg(raw, msgs.as_mut_ptr(), BATCH as u32, 0) };
            if r > 0 {
                n += r as u64;
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

/// A UDP/IPv4 Ethernet frame of 64 bytes on the wire (60 without the FCS) from `src` to `dst` port `dport`.
#[allow(dead_code)]
pub fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, 64).udp(40000, dport).write(&mut v, &[0x5a; 18]).unwrap();
    v
}

/// The MAC address of `dev` in namespace `ns`.
#[allow(dead_code)]
pub fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out =
        std::process::Command::new("ip").args(["netns", "exec", ns, "cat", &format!("/sys/class/net/{dev}/address")]).output().unwrap();
    parse_mac(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or_else(|| panic!("{ns}/{dev}: no MAC"))
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
#[allow(dead_code)]
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}
