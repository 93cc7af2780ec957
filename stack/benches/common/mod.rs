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
