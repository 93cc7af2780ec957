//! nic-device as a process, spoken to over its vfio-user socket by this crate's client: protocol handling,
//! hostile messages, reconnects, and a full loopback data path (DMA from a memfd, doorbells, MSI-X eventfd).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vfio_user::client::{Client, ClientError};
use vfio_user::*;

struct Dev {
    child: Child,
    sock: PathBuf,
}

fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nicdev-test-{tag}-{}.sock", std::process::id()))
}

fn start(tag: &str, backend: &str) -> Dev {
    start_with(tag, &["--backend", backend])
}

fn start_with(tag: &str, args: &[&str]) -> Dev {
    let sock = sock_path(tag);
    let child = Command::new(env!("CARGO_BIN_EXE_nic-device"))
        .args(["--socket", sock.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    Dev { child, sock }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn raw_request(c: &mut Client, cmd: u16, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
    c.request(cmd, payload, &[])
}

#[test]
fn device_info_regions_irqs_and_config_space() {
    let d = start("info", "loopback");
    let mut c = Client::connect(&d.sock).unwrap();
    let info = c.device_info().unwrap();
    assert_eq!(info.flags & (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET), VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    assert!(info.num_regions >= 8 && info.num_irqs >= 3);
    let sizes: Vec<u64> = (0..8).map(|i| c.region_info(i).unwrap().size).collect();
    assert_eq!(sizes, vec![128 << 10, 128 << 10, 32, 16 << 10, 0, 0, 0, 4096]);
    assert_eq!(c.irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap().count, 5);
    assert!(matches!(c.region_info(99), Err(ClientError::Remote { errno: libc::EINVAL, .. })));
    let id = c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap();
    assert_eq!(id, 0x10D3_8086);
    c.write32(VFIO_PCI_CONFIG_REGION_INDEX, 0x10, 0xFFFF_FFFF).unwrap();
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0x10).unwrap(), 0xFFFE_0000, "BAR0 sizing: 128 KiB");
    // STATUS through BAR0: link up at 1000 full duplex.
    let status = c.read32(0, 0x8).unwrap();
    assert_eq!(status & 0xC3, 0x83);
    // Out of range accesses are errors, not crashes.
    assert!(c.region_read(0, 128 << 10, 4).is_err());
    assert!(c.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 4094, 4).is_err());
    assert!(c.region_read(5, 0, 4).is_err());
    c.reset().unwrap();
}

#[test]
fn hostile_messages_get_errors_and_the_stream_stays_in_sync() {
    let d = start("hostile", "loopback");
    let mut c = Client::connect(&d.sock).unwrap();
    // Unknown command.
    assert!(matches!(raw_request(&mut c, 99, &[1, 2, 3]), Err(ClientError::Remote { errno: libc::ENOSYS, .. })));
    // Truncated payloads.
    assert!(matches!(
        raw_request(&mut c, vfio_user::Command::DmaMap as u16, &[0; 10]),
        Err(ClientError::Remote { errno: libc::EINVAL, .. })
    ));
    assert!(matches!(raw_request(&mut c, vfio_user::Command::DeviceSetIrqs as u16, &[0; 4]), Err(ClientError::Remote { .. })));
    assert!(matches!(
        raw_request(&mut c, vfio_user::Command::RegionWrite as u16, &{
            let mut p = Vec::new();
            RegionAccess { offset: 0, region: 0, count: 64 }.emit(&mut p);
            p.extend_from_slice(&[0; 4]); // count says 64, only 4 bytes follow
            p
        }),
        Err(ClientError::Remote { errno: libc::EINVAL, .. })
    ));
    // A DMA map whose file is smaller than the range (would fault on access).
    let small = memfd(4096);
    let r = c.dma_map(&small, 0, 0x1000_0000, 1 << 20);
    assert!(matches!(r, Err(ClientError::Remote { errno: libc::EINVAL, .. })), "{r:?}");
    // SET_IRQS with an index or range the device does not have.
    let efd = eventfd();
    assert!(c.set_irq_eventfds(7, 0, &[&efd]).is_err());
    assert!(c.set_irq_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 5, &[&efd]).is_err());
    // Oversized message: drained, answered E2BIG.
    let big = vec![0u8; MAX_MESSAGE_SIZE + 10];
    assert!(matches!(
        raw_request(&mut c, vfio_user::Command::RegionWrite as u16, &big),
        Err(ClientError::Remote { errno: libc::E2BIG, .. })
    ));
    // Still in sync.
    assert_eq!(c.read32(VFIO_PCI_CONFIG_REGION_INDEX, 0).unwrap(), 0x10D3_8086);
    // A posted write gets no reply: the next reply belongs to the next request.
    c.region_write_posted(0, 0x5400, &0xAABB_CCDDu32.to_le_bytes()).unwrap();
    assert_eq!(c.read32(0, 0x5400).unwrap(), 0xAABB_CCDD);
    // REGION_WRITE_MULTI (QEMU's batch of small posted writes).
    let mut m = Vec::new();
    m.extend_from_slice(&2u64.to_le_bytes());
    for (off, v) in [(0x5200u64, 0x11u64), (0x5204, 0x22)] {
        RegionAccess { offset: off, region: 0, count: 4 }.emit(&mut m);
        m.extend_from_slice(&v.to_le_bytes());
    }
    raw_request(&mut c, vfio_user::Command::RegionWriteMulti as u16, &m).unwrap();
    assert_eq!((c.read32(0, 0x5200).unwrap(), c.read32(0, 0x5204).unwrap()), (0x11, 0x22));
    let mut bad = Vec::new();
    bad.extend_from_slice(&1000u64.to_le_bytes());
    assert!(raw_request(&mut c, vfio_user::Command::RegionWriteMulti as u16, &bad).is_err());
}

#[test]
fn clients_come_and_go_and_a_second_one_is_refused() {
    let d = start("reconnect", "loopback");
    {
        let mut c = Client::connect(&d.sock).unwrap();
        c.write32(0, 0x5400, 0x1234_5678).unwrap();
        // A second concurrent client is closed at once.
        assert!(Client::connect(&d.sock).is_err());
    }
    std::thread::sleep(Duration::from_millis(200));
    // After the first left, the device is fresh again (function reset on disconnect).
    let mut c = Client::connect(&d.sock).unwrap();
    assert_eq!(c.read32(0, 0x5400).unwrap(), 0x1200_5452, "RAL0 back from the NVM");
    // A client sending garbage framing is dropped; the server keeps listening.
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    std::io::Write::write_all(&mut s, &[0u8; 16]).unwrap(); // size 0 < header
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    assert!(Client::connect(&d.sock).is_ok());
}

/// A client whose last messages and shutdown reach the device together (posted writes, then close): the
/// device reads the messages, sees the EOF in the same event, resets the function and takes the next
/// client. Had it stopped at the read that emptied the socket without looking for the EOF, the next
/// client would be refused as a second one.
#[test]
fn a_client_that_writes_and_closes_at_once_is_seen_gone() {
    let d = start("write-close", "loopback");
    for round in 0..50u32 {
        let mut c = Client::connect(&d.sock).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if round > 0 {
            assert_eq!(c.read32(0, 0x5400).unwrap(), 0x1200_5452, "round {round}: RAL0 back from the NVM after a reset");
        }
        // Posted writes need no reply: the client is gone before the device reads them.
        for i in 0..=(round % 4) {
            c.region_write_posted(0, 0x5400, &(0x1000 + round + i).to_le_bytes()).unwrap();
        }
        c.socket().shutdown(std::net::Shutdown::Both).unwrap();
        drop(c);
    }
}

/// A client that closes and connects again at once (a driver reopened) is served, not refused as a second
/// client, whichever the device sees first: the new connection or the old client's hang-up (stopped
/// meanwhile, it finds both waiting; in odd rounds the new one connects before the old one closes). The
/// old one's close can also come late (a fork of this process, by a test running beside this one,
/// holds the socket until it execs): the new client waits for it.
#[test]
fn a_client_that_closes_and_connects_again_at_once_is_served() {
    let d = start("reopen", "loopback");
    let pid = d.child.id() as i32;
    for round in 0..100u32 {
        let mut c = Client::connect(&d.sock).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(c.read32(0, 0x5400).unwrap(), 0x1200_5452, "round {round}: RAL0");
        c.region_write_posted(0, 0x5400, &round.to_le_bytes()).unwrap();
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let close_first = round % 2 == 0;
        let mut old = Some(c);
        if close_first {
            drop(old.take());
        }
        let sock = d.sock.clone();
        let next = std::thread::spawn(move || Client::connect(&sock));
        // The connection and its version request are in the socket before the device runs again.
        std::thread::sleep(Duration::from_millis(20));
        drop(old);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let mut c = next.join().unwrap().unwrap_or_else(|e| panic!("round {round}: the new client refused: {e}"));
        assert_eq!(c.read32(0, 0x5400).unwrap(), 0x1200_5452, "round {round}: a new client, a reset card");
    }
}

#[test]
fn socket_in_use_fails_and_sigterm_removes_the_socket() {
    let d = start("inuse", "loopback");
    let out = Command::new(env!("CARGO_BIN_EXE_nic-device"))
        .args(["--socket", d.sock.to_str().unwrap(), "--backend", "loopback"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.sock.exists(), "the running server keeps its socket");
    let sock = d.sock.clone();
    let mut d = d;
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let st = d.child.wait().unwrap();
    assert!(st.success());
    assert!(!sock.exists());
    // Bad arguments: clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_nic-device")).args(["--socket", "/tmp/x.sock", "--backend", "bogus:1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend"));
}

/// A signal sent the moment the socket appears ends the device cleanly (exit 0, socket removed): the
/// handlers are in place before the socket is.
#[test]
fn a_signal_as_soon_as_the_socket_appears_ends_the_device_cleanly() {
    for i in 0..5 {
        let sock = std::env::temp_dir().join(format!("nic-sig-{}-{i}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nic-device"))
            .args(["--socket", sock.to_str().unwrap(), "--backend", "loopback"])
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the socket never appeared");
            std::hint::spin_loop();
        }
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        assert!(st.success(), "run {i}: {st}");
        assert!(!sock.exists(), "run {i}: the socket was left behind");
    }
}

fn memfd(size: u64) -> File {
    // SAFETY: valid name; result checked.
    let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: fresh fd, owned here.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd with valid flags; result checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: fresh fd, owned here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn wait_eventfd(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    if r == 1 {
        let mut v = [0u8; 8];
        // SAFETY: reading 8 bytes from an eventfd into a local buffer.
        unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
        true
    } else {
        false
    }
}

#[test]
fn loopback_frame_travels_tx_ring_to_rx_ring_with_msix() {
    let pcap = std::env::temp_dir().join(format!("nicdev-test-{}.pcap", std::process::id()));
    let d = start_with("loop", &["--backend", "loopback", "--pcap", pcap.to_str().unwrap()]);
    let mut c = Client::connect(&d.sock).unwrap();
    let iova = 0x4000_0000u64;
    let mem = memfd(1 << 20);
    c.dma_map(&mem, 0, iova, 1 << 20).unwrap();
    let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
    c.region_write(cfg, 4, &0x0006u16.to_le_bytes()).unwrap(); // memory + bus master
    c.region_write(cfg, 0xA2, &0x8000u16.to_le_bytes()).unwrap(); // MSI-X enable
    let rx_efd = eventfd();
    let tx_efd = eventfd();
    c.set_irq_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, &[&rx_efd, &tx_efd]).unwrap();
    let (txr, rxr, txb, rxb) = (0u64, 0x1000u64, 0x10000u64, 0x20000u64);
    for i in 0..8u64 {
        mem.write_all_at(&(iova + rxb + i * 2048).to_le_bytes(), rxr + i * 16).unwrap();
    }
    let w = |c: &mut Client, r: u64, v: u32| c.write32(0, r, v).unwrap();
    w(&mut c, 0xE4, 0x8000_0908); // IVAR: RXQ0 -> 0, TXQ0 -> 1
    w(&mut c, 0xD0, (1 << 20) | (1 << 22)); // IMS: RXQ0 | TXQ0
    w(&mut c, 0x2800, (iova + rxr) as u32);
    w(&mut c, 0x2804, (iova >> 32) as u32);
    w(&mut c, 0x2808, 8 * 16);
    w(&mut c, 0x2818, 7);
    w(&mut c, 0x5008, 1 << 15); // extended descriptors
    w(&mut c, 0x100, (1 << 1) | (1 << 15) | (1 << 26)); // RCTL: EN, BAM, SECRC
    w(&mut c, 0x3800, (iova + txr) as u32);
    w(&mut c, 0x3804, 0);
    w(&mut c, 0x3808, 8 * 16);
    w(&mut c, 0x400, 1 << 1); // TCTL.EN
    let mut frame = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x88, 0xB5];
    frame.extend((0..200).map(|i| i as u8));
    mem.write_all_at(&frame, txb).unwrap();
    let mut desc = (iova + txb).to_le_bytes().to_vec();
    desc.extend_from_slice(&(frame.len() as u32 | (0x0B << 24)).to_le_bytes()); // EOP | IFCS | RS
    desc.extend_from_slice(&0u32.to_le_bytes());
    mem.write_all_at(&desc, txr).unwrap();
    c.region_write_posted(0, 0x3818, &1u32.to_le_bytes()).unwrap(); // TDT doorbell, posted
    assert!(wait_eventfd(&rx_efd, Duration::from_secs(5)), "RX vector fired");
    assert!(wait_eventfd(&tx_efd, Duration::from_secs(5)), "TX vector fired");
    let mut wb = [0u8; 16];
    mem.read_exact_at(&mut wb, rxr).unwrap();
    let staterr = u32::from_le_bytes(wb[8..12].try_into().unwrap());
    assert_eq!(staterr & 3, 3, "DD and EOP");
    let len = u16::from_le_bytes([wb[12], wb[13]]) as usize;
    assert_eq!(len, frame.len());
    let mut got = vec![0u8; len];
    mem.read_exact_at(&mut got, rxb).unwrap();
    assert_eq!(got, frame);
    let mut sta = [0u8; 1];
    mem.read_exact_at(&mut sta, txr + 12).unwrap();
    assert_eq!(sta[0] & 1, 1, "TX DD");
    assert_eq!(c.read32(0, 0x2810).unwrap(), 1, "RDH advanced");
    c.dma_unmap(iova, 1 << 20, 0).unwrap();
    drop(c);
    drop(d);
    // The pcap has the frame twice (out and back in), readable by tcpdump when it is installed.
    let data = std::fs::read(&pcap).unwrap();
    assert_eq!(u32::from_le_bytes(data[..4].try_into().unwrap()), 0xA1B2_C3D4);
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        assert_eq!(&data[off + 16..off + 16 + caplen], &frame[..]);
        off += 16 + caplen;
        n += 1;
    }
    assert_eq!(n, 2);
    if let Ok(out) = Command::new("tcpdump").args(["-nn", "-e", "-q", "-r", pcap.to_str().unwrap()]).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().filter(|l| l.contains(" > ")).count(), 2, "{text}");
        assert!(text.contains("ethertype Unknown (0x88b5)") || text.contains("0x88b5"), "{text}");
    }
    let _ = std::fs::remove_file(&pcap);
}

/// PHY loopback (BMCR bit 14 through MDIC, as Linux's self-test sets it): a transmitted frame comes back on
/// the receive ring and never reaches the wire (the pcap stays empty); the link stays up without a partner.
#[test]
fn phy_loopback_returns_frames_to_the_receive_ring() {
    let link = std::env::temp_dir().join(format!("nicdev-test-lb-{}.link", std::process::id()));
    let pcap = std::env::temp_dir().join(format!("nicdev-test-lb-{}.pcap", std::process::id()));
    let backend = format!("stream:{}", link.display());
    let d = start_with("phylb", &["--backend", &backend, "--pcap", pcap.to_str().unwrap()]);
    let mut c = Client::connect(&d.sock).unwrap();
    let iova = 0x4000_0000u64;
    let mem = memfd(1 << 20);
    c.dma_map(&mem, 0, iova, 1 << 20).unwrap();
    c.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 4, &0x0006u16.to_le_bytes()).unwrap();
    let w = |c: &mut Client, r: u64, v: u32| c.write32(0, r, v).unwrap();
    // MDIC write, PHY 1, register 0 (BMCR): loopback, 1000 Mb/s, full duplex.
    w(&mut c, 0x20, 0x4140 | (1 << 21) | (1 << 26));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.read32(0, 0x8).unwrap() & 2, 2, "STATUS.LU in loopback with no partner");
    let (txr, rxr, txb, rxb) = (0u64, 0x1000u64, 0x10000u64, 0x20000u64);
    for i in 0..8u64 {
        mem.write_all_at(&(iova + rxb + i * 2048).to_le_bytes(), rxr + i * 16).unwrap();
    }
    w(&mut c, 0x2800, (iova + rxr) as u32);
    w(&mut c, 0x2808, 8 * 16);
    w(&mut c, 0x2818, 7);
    w(&mut c, 0x5008, 1 << 15); // extended descriptors
                                // RCTL as the self-test sets it: EN, UPE, MPE, LPE, SBP, BAM, SECRC.
    w(&mut c, 0x100, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 15) | (1 << 26));
    w(&mut c, 0x3800, (iova + txr) as u32);
    w(&mut c, 0x3808, 8 * 16);
    w(&mut c, 0x400, 1 << 1);
    // The self-test's frame: 1024 bytes of 0xFF, the second half 0xAA with 0xBE and 0xAF markers.
    let mut frame = vec![0xFFu8; 1024];
    frame[512..1023].fill(0xAA);
    frame[522] = 0xBE;
    frame[524] = 0xAF;
    mem.write_all_at(&frame, txb).unwrap();
    let mut desc = (iova + txb).to_le_bytes().to_vec();
    desc.extend_from_slice(&(frame.len() as u32 | (0x0B << 24)).to_le_bytes());
    desc.extend_from_slice(&0u32.to_le_bytes());
    mem.write_all_at(&desc, txr).unwrap();
    w(&mut c, 0x3818, 1);
    let t0 = Instant::now();
    let mut wb = [0u8; 16];
    loop {
        mem.read_exact_at(&mut wb, rxr).unwrap();
        if wb[8] & 1 != 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the frame did not come back");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(u16::from_le_bytes([wb[12], wb[13]]) as usize, frame.len());
    let mut got = vec![0u8; frame.len()];
    mem.read_exact_at(&mut got, rxb).unwrap();
    assert_eq!(got, frame);
    drop(c);
    drop(d);
    let data = std::fs::read(&pcap).unwrap();
    assert_eq!(data.len(), 24, "nothing reached the wire: the pcap holds only its header");
    let _ = std::fs::remove_file(&pcap);
    let _ = std::fs::remove_file(&link);
}
