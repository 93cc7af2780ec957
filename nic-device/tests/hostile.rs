//! The device process as a security boundary: each defect a hostile guest or vfio-user client could use to
//! crash, stall or bloat `nic-device`, reproduced against the real binary, and the answer it now gets (an
//! error reply, a counted drop, a disconnect) while the device keeps serving.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use vfio_user::client::{Client, ClientError};
use vfio_user::Command;
use vfio_user::*;

struct Dev {
    child: Child,
    sock: PathBuf,
}

fn start(tag: &str, extra: &[&str]) -> Dev {
    let sock = std::env::temp_dir().join(format!("nicdev-hostile-{tag}-{}.sock", std::process::id()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nic-device"))
        .args(["--socket", sock.to_str().unwrap(), "--backend", "loopback"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "device did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Dev { child, sock }
}

impl Dev {
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, wait at most `limit`, and return (exit success, log).
    fn stop(mut self, limit: Duration) -> (bool, String) {
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < limit, "device did not exit within {limit:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (status.success(), log)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a metric in the device's exit log (`  name: value`), 0 when not printed.
fn metric(log: &str, name: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.trim().split_once(": ").filter(|(k, _)| k.ends_with(name)))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

fn memfd(size: u64, flags: libc::c_uint) -> File {
    // SAFETY: valid name; result checked.
    let fd = unsafe { libc::memfd_create(c"hostile".as_ptr(), libc::MFD_CLOEXEC | flags) };
    assert!(fd >= 0);
    // SAFETY: fresh fd, owned here.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

fn errno_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> i32 {
    match r {
        Err(ClientError::Remote { errno, .. }) => errno,
        o => panic!("expected an error reply, got {o:?}"),
    }
}

fn msg(id: u16, cmd: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    Header { msg_id: id, command: cmd, size: (HEADER_SIZE + payload.len()) as u32, flags: 0, error: 0 }.emit(&mut v);
    v.extend_from_slice(payload);
    v
}

fn reply_header(s: &mut UnixStream) -> Header {
    let mut h = [0u8; HEADER_SIZE];
    s.read_exact(&mut h).unwrap();
    let h = Header::parse(&h).unwrap();
    let mut rest = vec![0u8; h.size as usize - HEADER_SIZE];
    s.read_exact(&mut rest).unwrap();
    h
}

fn version_payload(caps: &str) -> Vec<u8> {
    let mut p = Vec::new();
    Version { major: 0, minor: 0, capabilities: caps.into() }.emit(&mut p);
    p
}

/// Waits until the server closes `s` (EOF), at most `limit`.
fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 4096];
    let t0 = Instant::now();
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if t0.elapsed() > limit {
            return false;
        }
    }
}

/// Programs an RX ring whose base is 16 bytes below the top of the 64-bit address space and a TX ring in
/// `mem`, then sends one frame through loopback: the RX descriptor address computation used to overflow
/// and panic the data path, and the next request then died on the poisoned lock.
#[test]
fn rx_ring_at_the_top_of_the_address_space_is_a_dma_error_not_a_crash() {
    let mut d = start("ringtop", &[]);
    let mut c = Client::connect(&d.sock).unwrap();
    let iova = 0x4000_0000u64;
    let mem = memfd(1 << 20, libc::MFD_ALLOW_SEALING);
    c.dma_map(&mem, 0, iova, 1 << 20).unwrap();
    c.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 4, &0x0006u16.to_le_bytes()).unwrap();
    let w = |c: &mut Client, r: u64, v: u32| c.write32(0, r, v).unwrap();
    w(&mut c, 0x2800, 0xFFFF_FFF0); // RDBAL0
    w(&mut c, 0x2804, 0xFFFF_FFFF); // RDBAH0
    w(&mut c, 0x2808, 8 * 16); // RDLEN0
    w(&mut c, 0x2810, 1); // RDH0
    w(&mut c, 0x2818, 5); // RDT0
    w(&mut c, 0x100, (1 << 1) | (1 << 15) | (1 << 26)); // RCTL: EN, BAM, SECRC
    w(&mut c, 0x3800, iova as u32);
    w(&mut c, 0x3804, 0);
    w(&mut c, 0x3808, 8 * 16);
    w(&mut c, 0x400, 1 << 1); // TCTL.EN
    let mut frame = vec![0xFF; 6];
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xB5]);
    frame.resize(100, 0x5A);
    mem.write_all_at(&frame, 0x8000).unwrap();
    let mut desc = (iova + 0x8000).to_le_bytes().to_vec();
    desc.extend_from_slice(&(frame.len() as u32 | (0x0B << 24)).to_le_bytes());
    desc.extend_from_slice(&0u32.to_le_bytes());
    mem.write_all_at(&desc, 0).unwrap();
    for _ in 0..3 {
        c.write32(0, 0x3818, 1).unwrap(); // TDT
        std::thread::sleep(Duration::from_millis(100));
        c.write32(0, 0x3810, 0).unwrap(); // TDH back: the same frame again
    }
    assert_eq!(c.read32(0, 0x8).unwrap() & 2, 2, "STATUS still answers (link up)");
    assert!(d.alive());
    drop(c);
    let (ok, log) = d.stop(Duration::from_secs(5));
    assert!(ok, "{log}");
    assert!(metric(&log, "dma_errors") >= 1, "the bad ring is counted as a DMA error:\n{log}");
    assert_eq!(metric(&log, "datapath_panics"), 0, "{log}");
}

/// DMA_MAP a memfd, then shrink it: the mapped pages would vanish and the next descriptor fetch would raise
/// SIGBUS. The device holds every DMA-mapped file at its size (F_SEAL_SHRINK), so the truncation fails in
/// the client, and memory that cannot be sealed is refused at DMA_MAP.
#[test]
fn dma_memory_cannot_shrink_under_the_device() {
    let mut d = start("shrink", &[]);
    let mut c = Client::connect(&d.sock).unwrap();
    let iova = 0x4000_0000u64;
    let mem = memfd(1 << 20, libc::MFD_ALLOW_SEALING);
    c.dma_map(&mem, 0, iova, 1 << 20).unwrap();
    let r = mem.set_len(0);
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EPERM)), "the device sealed the memfd against shrinking");
    // Growing is harmless and still allowed.
    mem.set_len(2 << 20).unwrap();
    c.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 4, &0x0006u16.to_le_bytes()).unwrap();
    c.write32(0, 0x3800, iova as u32).unwrap();
    c.write32(0, 0x3808, 8 * 16).unwrap();
    c.write32(0, 0x400, 1 << 1).unwrap();
    c.write32(0, 0x3818, 4).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086);
    // Punching a hole under the ring (the seal does not forbid it) reads back as zeros, never a fault.
    // SAFETY: fallocate on our own fd, a range inside the file.
    let r = unsafe { libc::fallocate(mem.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) };
    assert_eq!(r, 0);
    c.write32(0, 0x3810, 0).unwrap();
    c.write32(0, 0x3818, 6).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086);
    // A memfd created without sealing support, a regular file and a pipe cannot be held at their size.
    let unsealable = memfd(1 << 20, 0);
    assert_eq!(errno_of(c.dma_map(&unsealable, 0, 0x8000_0000, 1 << 20)), libc::EPERM);
    let path = std::env::temp_dir().join(format!("nicdev-hostile-file-{}", std::process::id()));
    let file = File::options().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    file.set_len(1 << 20).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(errno_of(c.dma_map(&file, 0, 0x8000_0000, 1 << 20)), libc::EPERM);
    let (rd, _wr) = std::io::pipe().unwrap();
    assert_eq!(errno_of(c.dma_map(&rd, 0, 0x8000_0000, 4096)), libc::EPERM);
    // A memfd already sealed by its owner (as QEMU's memory-backend-memfd does) is taken as it is.
    let sealed = memfd(1 << 20, libc::MFD_ALLOW_SEALING);
    // SAFETY: fcntl on our own fd.
    let r = unsafe { libc::fcntl(sealed.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) };
    assert_eq!(r, 0);
    c.dma_map(&sealed, 0, 0x8000_0000, 1 << 20).unwrap();
    assert!(d.alive());
}

#[test]
fn dma_maps_are_bounded_and_unmapping_the_unmapped_is_an_error() {
    let d = start("maps", &[]);
    let mut c = Client::connect(&d.sock).unwrap();
    let map_nofd = |c: &mut Client, iova: u64| {
        let mut p = Vec::new();
        DmaMap { argsz: DmaMap::LEN as u32, flags: 3, offset: 0, iova, size: 4096 }.emit(&mut p);
        c.request(Command::DmaMap as u16, &p, &[])
    };
    for i in 0..MAX_DMA_MAPS as u64 {
        map_nofd(&mut c, i * 4096).unwrap();
    }
    assert_eq!(errno_of(map_nofd(&mut c, 1 << 40)), libc::ENOSPC, "map {} is one too many", MAX_DMA_MAPS + 1);
    assert_eq!(errno_of(map_nofd(&mut c, 0)), libc::ENOSPC);
    // Unmap a range that was never mapped.
    assert_eq!(errno_of(c.dma_unmap(1 << 44, 4096, 0)), libc::ENOENT);
    // Unmapping frees room again.
    c.dma_unmap(0, 4096 * 16, 0).unwrap();
    map_nofd(&mut c, 0).unwrap();
    assert_eq!(errno_of(map_nofd(&mut c, 0)), libc::EEXIST, "an overlapping map is refused");
}

#[test]
fn version_twice_garbage_capabilities_and_trailing_bytes_are_refused() {
    let d = start("version", &[]);
    {
        let mut s = UnixStream::connect(&d.sock).unwrap();
        s.write_all(&msg(1, Command::Version as u16, &version_payload("{\"capabilities\": [1, 2"))).unwrap();
        let h = reply_header(&mut s);
        assert!(h.is_error() && h.error == libc::EINVAL as u32, "garbage JSON: {h:?}");
        s.write_all(&msg(2, Command::Version as u16, &version_payload("{\"capabilities\":{\"max_msg_fds\":\"many\"}}"))).unwrap();
        let h = reply_header(&mut s);
        assert!(h.is_error(), "a string where a number belongs: {h:?}");
        s.write_all(&msg(3, Command::Version as u16, &version_payload("{\"capabilities\":{\"max_msg_fds\":8}}"))).unwrap();
        assert!(!reply_header(&mut s).is_error(), "a well-formed VERSION after refused ones negotiates");
        s.write_all(&msg(4, Command::Version as u16, &version_payload(""))).unwrap();
        let h = reply_header(&mut s);
        assert!(h.is_error() && h.error == libc::EINVAL as u32, "second VERSION: {h:?}");
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(&d.sock).unwrap();
    let mut p = Vec::new();
    RegionAccess { offset: 0x5400, region: 0, count: 4 }.emit(&mut p);
    p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(errno_of(c.request(Command::RegionWrite as u16, &p, &[])), libc::EINVAL, "four bytes more than count");
    assert_ne!(c.read32(0, 0x5400).unwrap(), 0x0403_0201, "the refused write did not happen");
    let mut p = Vec::new();
    RegionAccess { offset: 0x8, region: 0, count: 4 }.emit(&mut p);
    p.extend_from_slice(&[0; 4]);
    assert_eq!(errno_of(c.request(Command::RegionRead as u16, &p, &[])), libc::EINVAL, "a read carrying data");
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086, "stream in sync");
}

/// A header announcing 4 GiB would have the server read and discard 4 GiB; a message started and never
/// finished would hold the single client slot forever. Both now end the connection, and the next client
/// is served.
#[test]
fn huge_and_unfinished_messages_free_the_client_slot() {
    let d = start("huge", &["--client-timeout", "1"]);
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(&msg(1, Command::Version as u16, &version_payload(""))).unwrap();
    reply_header(&mut s);
    let mut h = Vec::new();
    Header { msg_id: 2, command: Command::RegionWrite as u16, size: u32::MAX, flags: 0, error: 0 }.emit(&mut h);
    s.write_all(&h).unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)), "a 4 GiB message ends the connection");
    std::thread::sleep(Duration::from_millis(50));
    // Half a header, then silence.
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(&msg(1, Command::Version as u16, &version_payload(""))[..10]).unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)), "an unfinished message times out");
    assert!(t0.elapsed() >= Duration::from_millis(900), "not before the client timeout");
    std::thread::sleep(Duration::from_millis(50));
    let mut c = Client::connect(&d.sock).unwrap();
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086);
}

/// A client that sends requests and never reads the replies: the server used to block 5 s per reply
/// (SIGTERM included). It now buffers a bounded amount, stops reading that client, drops it after the
/// client timeout, and answers SIGTERM at once throughout.
/// Negotiates, then sends up to `n` 128 KiB flash reads without reading a reply; returns how many went out
/// before the socket stopped taking them.
fn flood_without_reading(d: &Dev, n: u16) -> (UnixStream, usize) {
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(&msg(1, Command::Version as u16, &version_payload(""))).unwrap();
    reply_header(&mut s);
    let mut p = Vec::new();
    RegionAccess { offset: 0, region: 1, count: 128 << 10 }.emit(&mut p);
    s.set_nonblocking(true).unwrap();
    let mut sent = 0;
    for i in 0..n {
        let m = msg(i + 2, Command::RegionRead as u16, &p);
        match s.write(&m) {
            Ok(k) if k == m.len() => sent += 1,
            _ => break,
        }
    }
    (s, sent)
}

/// A client that sends requests and never reads the replies: the server used to block 5 s per reply
/// (SIGTERM included). It now buffers a bounded amount, stops reading that client, drops it after the
/// client timeout, and answers SIGTERM at once throughout.
#[test]
fn a_client_that_never_reads_cannot_stall_the_server() {
    let d = start("noread", &["--client-timeout", "2"]);
    // 200 reads: 25 MiB of replies nobody reads.
    let (_s, sent) = flood_without_reading(&d, 200);
    assert!(sent > 20, "requests went out ({sent})");
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the device answers SIGTERM promptly.
    let t0 = Instant::now();
    let (ok, log) = d.stop(Duration::from_secs(3));
    assert!(ok, "{log}");
    assert!(t0.elapsed() < Duration::from_secs(2), "SIGTERM took {:?}", t0.elapsed());
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_next_one_served() {
    let d = start("noread2", &["--client-timeout", "1"]);
    let (_s, sent) = flood_without_reading(&d, 100);
    assert!(sent > 0);
    let t0 = Instant::now();
    let mut c = loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(c) = Client::connect(&d.sock) {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the stalled client still holds the slot");
    };
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086);
}
