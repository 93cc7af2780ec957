//! The userspace driver against nic-device over vfio-user, without QEMU.

use driver::{Config, E1000e, NetDev, RxCsum, RxPacket, TxCsum, TxPacket};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nic_tests::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn sock(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.sock", unique(tag)))
}

/// `nic-lab loopback-test` of `count` 1514-byte frames through the device at `s`, with interrupt mode `irq`:
/// every frame back, none lost, duplicated or damaged (`what` names the case in failures).
fn loopback_loses_nothing(s: &std::path::Path, irq: &str, count: u64, what: &str) {
    let n = count.to_string();
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "--irq", irq, "loopback-test", "--count", &n, "--size", "1514"]);
    assert!(ok, "{what}: {out}");
    for (field, want) in [("received", count), ("lost", 0), ("duplicates", 0), ("corrupt", 0)] {
        assert_eq!(report_field(&out, field), want, "{what} {field}: {out}");
    }
}

/// nic-device with `args` (after a loopback backend) refuses to start: exit status 2, `want` in what it
/// says, and its socket removed again.
fn refused(args: &[&str], want: &str) {
    let s = sock("refused");
    let out = std::process::Command::new(bin("nic-device"))
        .args(["--socket", s.to_str().unwrap(), "--backend", "loopback"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{args:?}: {out:?}");
    assert!(!s.exists(), "{args:?}: the socket is removed again");
}

#[test]
fn info_reports_the_card() {
    let s = sock("info");
    let _d = Device::start(None, &s, &["--backend", "loopback", "--mac", "52:54:00:ab:cd:ef"]);
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "info"]);
    assert!(ok, "{out}");
    assert!(out.contains("mac:        52:54:00:ab:cd:ef"), "{out}");
    assert!(out.contains("link:       up"), "{out}");
    assert!(out.contains("speed:      1000 Mb/s full duplex"), "{out}");
    assert!(out.contains("tso on"), "{out}");
    assert!(out.contains("interrupts: Msix"), "{out}");
}

#[test]
fn one_million_frames_through_loopback_without_loss() {
    let s = sock("million");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "loopback-test", "--count", "1000000", "--size", "64"]);
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert_eq!(report_field(&out, "received"), 1_000_000);
    assert_eq!(report_field(&out, "lost"), 0);
    assert_eq!(report_field(&out, "duplicates"), 0);
    assert_eq!(report_field(&out, "corrupt"), 0);
}

/// The benchmark's bound for the pair (`nic-lab handoff`): its two threads move every frame, intact and in
/// order, at any window, and it reports a rate.
#[test]
fn the_handoff_reference_moves_every_frame() {
    for (size, window) in ["64", "1514"].iter().zip(["1", "512"]) {
        let (ok, out) = nic_lab(&["handoff", "--count", "200000", "--size", size, "--window", window]);
        assert!(ok, "{out}");
        assert_eq!(report_field(&out, "sent"), 200_000, "{out}");
        assert_eq!(report_field(&out, "received"), 200_000, "{out}");
        assert_eq!(report_field(&out, "lost"), 0, "{out}");
        assert_eq!(report_field(&out, "corrupt"), 0, "{out}");
        assert!(out.lines().any(|l| l.starts_with("rate:") && l.contains("frames/s")), "{out}");
    }
}

#[test]
fn doorbells_inline_or_woken_lose_nothing() {
    // Inline (the default): a transmit doorbell that finds the data path asleep runs its round on the
    // vfio-user thread. Wake: every doorbell wakes the data path thread. Both must deliver every frame,
    // in order and intact, with interrupts and with busy polling.
    for mode in ["inline", "wake"] {
        for irq in ["msix", "poll"] {
            let s = sock(&format!("db-{mode}-{irq}"));
            let d = Device::start(None, &s, &["--backend", "loopback", "--doorbells", mode]);
            loopback_loses_nothing(&s, irq, 50000, &format!("{mode} {irq}"));
            let inline = d.stat("device", "inline_rounds");
            if mode == "inline" {
                assert!(inline > 0, "{irq}: no doorbell ran inline");
            } else {
                assert_eq!(inline, 0, "{irq}: --doorbells wake ran a round inline");
            }
        }
    }
}

/// A busy-polling device (`--busy-poll`) does the data path's work on its vfio-user thread between
/// polls of the client, with no wake-up: every frame still arrives, in order and intact, with the driver
/// taking interrupts and with the driver busy polling too; the passes that moved frames are counted.
#[test]
fn a_busy_polling_device_loses_nothing() {
    for irq in ["msix", "poll"] {
        let s = sock(&format!("spin-{irq}"));
        let d = Device::start(None, &s, &["--backend", "loopback", "--busy-poll", "200000"]);
        loopback_loses_nothing(&s, irq, 50000, irq);
        assert!(d.stat("device", "busy_poll_passes") > 0, "{irq}: no busy-poll pass moved a frame");
    }
    // Doorbells that always wake the data path thread leave nothing for a busy poll to do: refused.
    refused(&["--busy-poll", "100", "--doorbells", "wake"], "--busy-poll needs --doorbells inline");
}

/// A timer-polling device (`--timer-poll`) reads the driver's messages on a timer while the driver is
/// active: every frame still arrives, in order and intact, whether the driver takes MSI-X interrupts, legacy
/// interrupts (an ICR read, waited for, in each) or busy polls; with MSI-X, whose hot path has no reads,
/// timer polls find the driver's doorbells waiting. It excludes busy polling and takes at most 10 ms.
#[test]
fn a_timer_polling_device_loses_nothing() {
    for irq in ["msix", "intx", "poll"] {
        let s = sock(&format!("timer-{irq}"));
        let d = Device::start(None, &s, &["--backend", "loopback", "--timer-poll", "200"]);
        loopback_loses_nothing(&s, irq, 20000, irq);
        let (polls, hits) = (d.stat("device", "timer_polls"), d.stat("device", "timer_poll_hits"));
        assert!(hits <= polls, "{irq}: {hits} of {polls}");
        if irq == "msix" {
            assert!(hits > 0, "msix: no timer poll found a doorbell waiting ({polls} polls)");
        }
    }
    refused(&["--timer-poll", "100", "--busy-poll", "100"], "exclude each other");
    refused(&["--timer-poll", "10001"], "10001 is not in 0..=10000");
}

/// Rings of other sizes (`nic-lab --ring`, as `ethtool -G`): the card is set up with them, and frames
/// cross small and large rings without loss, with the loopback test's window at half the ring.
#[test]
fn rings_of_any_size_lose_nothing() {
    let s = sock("ring-info");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "--ring", "1001", "info"]);
    assert!(ok, "{out}");
    assert!(out.contains("rings:      1000 tx, 1000 rx descriptors"), "rounded down to a multiple of 8: {out}");
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "--ring", "5000", "info"]);
    assert!(!ok && out.contains("5000"), "more than the card's 4096 is refused: {out}");
    for ring in ["16", "1024", "4096"] {
        for irq in ["msix", "poll"] {
            let s = sock(&format!("ring-{ring}-{irq}"));
            let _d = Device::start(None, &s, &["--backend", "loopback"]);
            let (ok, out) = nic_lab(&[
                "--vfio-user",
                s.to_str().unwrap(),
                "--irq",
                irq,
                "--ring",
                ring,
                "loopback-test",
                "--count",
                "30000",
                "--size",
                "1514",
            ]);
            assert!(ok, "{ring} {irq}: {out}");
            for (field, want) in [("received", 30000), ("lost", 0), ("duplicates", 0), ("corrupt", 0), ("out-of-order", 0)] {
                assert_eq!(report_field(&out, field), want, "{ring} {irq} {field}: {out}");
            }
        }
    }
}

#[test]
fn interrupt_modes_and_busy_poll() {
    for irq in ["msix", "msi", "intx", "poll"] {
        let s = sock(irq);
        let _d = Device::start(None, &s, &["--backend", "loopback"]);
        let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "--irq", irq, "loopback-test", "--count", "20000", "--size", "1514"]);
        assert!(ok, "{irq}: {out}");
        assert_eq!(report_field(&out, "received"), 20000, "{irq}");
        let irqs: u64 = out.lines().find(|l| l.starts_with("interrupts:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        if irq == "poll" {
            assert_eq!(irqs, 0, "busy poll takes no interrupts");
        } else {
            assert!(irqs > 0, "{irq}: {out}");
        }
    }
}

#[global_allocator]
static ALLOCATOR: nic_tests::Counting = nic_tests::Counting;

/// A steady flow through the driver allocates nothing per frame: received buffers carry the next frames
/// out, the driver keeps sent ones for its receive side, doorbells are built in a reused buffer and an
/// interrupt wait polls its eventfds from the stack. With interrupts and with busy polling, 20,000
/// full-sized frames out and back after a warm-up, in order and intact.
#[test]
fn a_steady_flow_allocates_nothing_per_frame() {
    for irq in [driver::IrqMode::Msix, driver::IrqMode::BusyPoll] {
        let s = sock("alloc");
        let _d = Device::start(None, &s, &["--backend", "loopback"]);
        let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
        let mut dev = E1000e::open(t, Config { promiscuous: true, irq, ..Default::default() }).unwrap();
        let mac = dev.mac();
        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<TxPacket> = Vec::with_capacity(256);
        let mut rx: Vec<RxPacket> = Vec::with_capacity(256);
        let (mut sent, mut got) = (0u64, 0u64);
        let mut run = |frames: u64, free: &mut Vec<Vec<u8>>| {
            let t0 = Instant::now();
            while got < frames {
                assert!(t0.elapsed() < Duration::from_secs(30), "{irq:?}: {got} of {frames} frames back");
                while sent < frames && sent - got < 128 && pending.len() < 64 {
                    let mut f = free.pop().unwrap_or_default();
                    f.clear();
                    f.extend_from_slice(&mac);
                    f.extend_from_slice(&mac);
                    f.extend_from_slice(&sent.to_be_bytes());
                    f.resize(1514, sent as u8);
                    pending.push(TxPacket::plain(f));
                    sent += 1;
                }
                dev.transmit(&mut pending).unwrap();
                if dev.poll(64, &mut rx).unwrap() == 0 {
                    dev.wait(Duration::from_millis(50)).unwrap();
                }
                for p in rx.drain(..) {
                    assert_eq!(u64::from_be_bytes(p.data[12..20].try_into().unwrap()), got, "in order");
                    assert_eq!(p.data.len(), 1514);
                    assert_eq!(p.data[1513], got as u8);
                    got += 1;
                    free.push(p.data);
                }
            }
        };
        run(2_000, &mut free);
        let before = nic_tests::allocations();
        run(22_000, &mut free);
        let n = nic_tests::allocations() - before;
        // None per frame; a register read of the once-a-second liveness check allocates its reply.
        assert!(n <= 20, "{irq:?}: {n} allocations for 20,000 frames");
    }
}

fn open(path: &std::path::Path, promiscuous: bool) -> E1000e {
    let t = driver::open_transport(&format!("vfio-user:{}", path.display())).unwrap();
    E1000e::open(t, Config { promiscuous, ..Default::default() }).unwrap()
}

fn receive_until(dev: &mut E1000e, want: usize, timeout: Duration) -> Vec<RxPacket> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < want && t0.elapsed() < timeout {
        if dev.poll(64, &mut got).unwrap() == 0 {
            dev.wait(Duration::from_millis(50)).unwrap();
        }
    }
    got
}

fn tcp4(src: [u8; 6], dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let b =
        etherparse::PacketBuilder::ethernet2(src, dst).ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64).tcp(5555, 80, 7000, 64000).ack(1).psh().fin();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

#[test]
fn tso_frames_cross_two_devices_as_correct_segments() {
    let link = std::env::temp_dir().join(format!("{}.link", unique("pair")));
    tso_across_two_devices(&format!("stream:{}", link.display()), &format!("stream-connect:{}", link.display()), false);
}

/// The same sends lent (`transmit_lent`, as the stack sends): the same segments and checksums on the
/// wire, and the lender's packets left as they were.
#[test]
fn lent_tso_frames_cross_two_devices_as_correct_segments() {
    let link = std::env::temp_dir().join(format!("{}.link", unique("lent")));
    tso_across_two_devices(&format!("stream:{}", link.display()), &format!("stream-connect:{}", link.display()), true);
}

/// Lends `frames` from `sent` on (those before went already) to `dev`, plain, as the ring takes them, and
/// collects what comes back (a loopback backend) until as many frames as `frames` holds are back.
fn lend_until_back(dev: &mut E1000e, frames: &[Vec<u8>], mut sent: usize) -> Vec<RxPacket> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < frames.len() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{} of {} back", got.len(), frames.len());
        if sent < frames.len() {
            sent += dev.transmit_lent(frames.len() - sent, &mut |i| driver::TxFrame::plain(&frames[sent + i])).unwrap();
        }
        if dev.poll(64, &mut got).unwrap() == 0 {
            dev.wait(Duration::from_millis(50)).unwrap();
        }
    }
    got
}

/// Lent packets beyond what the ring holds stay the lender's: the driver asks for each packet at most
/// once, in order, stops at the first the ring has no room for, and reports how many it queued; those
/// come back intact and in order, and the rest go with later calls.
#[test]
fn lent_packets_beyond_the_ring_stay_with_the_lender() {
    let s = sock("lend");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, true);
    let mac = dev.mac();
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut f = [mac, mac].concat();
            f.extend_from_slice(&i.to_be_bytes());
            f.resize(200, i as u8);
            f
        })
        .collect();
    let mut asked = Vec::new();
    let first = dev.transmit_lent(frames.len(), &mut |i| {
        asked.push(i);
        driver::TxFrame::plain(&frames[i])
    });
    let first = first.unwrap();
    assert!(first > 0 && first < 256, "one ring of 256 takes at most 255 packets: {first}");
    assert!(asked.len() <= first + 1, "asked for {} packets to queue {first}", asked.len());
    assert!(asked.iter().enumerate().all(|(k, &i)| k == i), "in order, each once: {asked:?}");
    // The rest, as the ring frees up.
    let got = lend_until_back(&mut dev, &frames, first);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data, frames[i], "frame {i} intact and in order");
    }
}

static SOURCED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A receive source that counts its calls and marks its vectors by their capacity (1000 beyond what was
/// asked for).
fn counting_source(cap: usize) -> Vec<u8> {
    SOURCED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Vec::with_capacity(cap + 1000)
}

/// With nothing sent whose vectors could be kept, received frames land in vectors from the receive source
/// the stack gave (`set_rx_source`): one per frame, each frame in the vector before.
#[test]
fn received_frames_land_in_vectors_from_the_source() {
    let s = sock("source");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, true);
    dev.set_rx_source(counting_source);
    let mac = dev.mac();
    let frames: Vec<Vec<u8>> = (0..50u8).map(|i| [&mac[..], &mac[..], &[0x88, 0xb5, i][..], &[i; 500][..]].concat()).collect();
    let got = lend_until_back(&mut dev, &frames, 0);
    assert_eq!(SOURCED.load(std::sync::atomic::Ordering::Relaxed), frames.len(), "one vector from the source per frame");
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data, frames[i]);
        // The first frame went into the ring's first vector; each after it into the source's.
        assert_eq!(p.data.capacity() >= 1000, i > 0, "frame {i}: capacity {}", p.data.capacity());
    }
}

/// A caller that sleeps on several devices at once uses `wait_fds` and `woke` instead of `wait`: with
/// MSI-X the card offers its three vectors' eventfds (interrupts re-armed first), and frames sent and
/// received that way all come back, each sleep ended by an interrupt the driver then reads and counts.
/// A busy-polling driver has none to offer.
#[test]
fn a_caller_can_sleep_on_the_cards_eventfds_itself() {
    let s = sock("fds");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let mut dev = E1000e::open(t, Config { promiscuous: true, irq: driver::IrqMode::Msix, ..Default::default() }).unwrap();
    let mac = dev.mac();
    let frames: Vec<Vec<u8>> =
        (0..300u32).map(|i| [&mac[..], &mac[..], &[0x88, 0xb5], &i.to_be_bytes()[..], &[7; 100][..]].concat()).collect();
    let (mut sent, mut got, mut sleeps) = (0, Vec::new(), 0);
    let t0 = Instant::now();
    while got.len() < frames.len() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{} of {} back", got.len(), frames.len());
        if sent < frames.len() {
            sent += dev.transmit_lent(frames.len() - sent, &mut |i| driver::TxFrame::plain(&frames[sent + i])).unwrap();
        }
        if dev.poll(64, &mut got).unwrap() > 0 {
            continue;
        }
        let mut fds = Vec::new();
        assert!(dev.wait_fds(&mut fds).unwrap(), "MSI-X offers its eventfds");
        assert_eq!(fds.len(), 3, "RX, TX and other vectors");
        let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: poll(2) on our own array of pollfds, its length given.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 1000) };
        assert!(r >= 0);
        let ready: Vec<bool> = p.iter().map(|p| p.revents & libc::POLLIN != 0).collect();
        sleeps += 1;
        dev.woke(&ready).unwrap();
    }
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data, frames[i], "frame {i}");
    }
    let interrupts = dev.stats().interrupts;
    assert!(sleeps > 0 && interrupts > 0, "{sleeps} sleeps, {interrupts} interrupts read");
    drop(dev);
    // Busy polling: nothing to sleep on.
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let mut dev = E1000e::open(t, Config { irq: driver::IrqMode::BusyPoll, ..Default::default() }).unwrap();
    let mut fds = Vec::new();
    assert!(!dev.wait_fds(&mut fds).unwrap());
    assert!(fds.is_empty());
}

/// The same two cards joined over TCP on loopback (`stream:tcp:` / `stream-connect:tcp:`).
#[test]
fn tso_frames_cross_two_devices_joined_over_tcp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    tso_across_two_devices(&format!("stream:tcp:127.0.0.1:{port}"), &format!("stream-connect:tcp:127.0.0.1:{port}"), false);
}

/// Sends `p` on `dev`, owned (`transmit`) or lent (`transmit_lent`, after which the lender's bytes must be
/// as they were: the offload edits are made in the driver's copy): whether it was queued.
fn send_one(dev: &mut E1000e, p: TxPacket, lent: bool) -> bool {
    if lent {
        let before = p.data.clone();
        let n = dev.transmit_lent(1, &mut |_| p.frame()).unwrap();
        assert_eq!(p.data, before, "a lent packet's bytes stay the lender's, unchanged");
        n == 1
    } else {
        dev.transmit(&mut vec![p]).unwrap() == 1
    }
}

fn tso_across_two_devices(listen: &str, connect: &str, lent: bool) {
    let (sa, sb) = (sock("tsoA"), sock("tsoB"));
    let _a = Device::start(None, &sa, &["--backend", listen, "--mac", "52:54:00:00:01:0a"]);
    let _b = Device::start(None, &sb, &["--backend", connect, "--mac", "52:54:00:00:01:0b"]);
    let mut a = open(&sa, false);
    let mut b = open(&sb, false);
    let payload: Vec<u8> = (0..60000u32).map(|i| (i % 251) as u8).collect();
    let f = tcp4(a.mac(), b.mac(), &payload);
    let mss = 1448usize;
    let p = TxPacket { data: f, csum: Some(TxCsum { l3: 14, l4: 34, ipv4: true, tcp: true }), tso: Some(mss as u16), vlan: None };
    assert!(send_one(&mut a, p, lent));
    let nseg = payload.len().div_ceil(mss);
    let got = receive_until(&mut b, nseg, Duration::from_secs(20));
    assert_eq!(got.len(), nseg);
    let mut data = Vec::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.csum, RxCsum::Verified, "segment {i}: receiving card verified the checksums");
        let s = SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &s.net else { panic!() };
        let iph = ip.header().to_header();
        assert_eq!(iph.header_checksum, iph.calc_header_checksum());
        let Some(TransportSlice::Tcp(t)) = &s.transport else { panic!() };
        assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&iph, t.payload()).unwrap());
        assert_eq!(t.sequence_number(), 7000 + (i * mss) as u32);
        let last = i + 1 == nseg;
        assert_eq!((t.fin(), t.psh()), (last, last));
        assert!(p.data.len() <= 1514);
        data.extend_from_slice(t.payload());
    }
    assert_eq!(data, payload);

    // UDP over IPv6 with checksum offload, and a VLAN tag inserted by A and stripped by B.
    let b6 = etherparse::PacketBuilder::ethernet2(a.mac(), b.mac()).ipv6([0xfe; 16], [0xfd; 16], 9).udp(53, 5353);
    let mut f6 = Vec::new();
    b6.write(&mut f6, &[0x42; 333]).unwrap();
    let p = TxPacket { data: f6, csum: Some(TxCsum { l3: 14, l4: 54, ipv4: false, tcp: false }), tso: None, vlan: Some(0x0123) };
    assert!(send_one(&mut a, p, lent));
    let got = receive_until(&mut b, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let s = SlicedPacket::from_ethernet(&got[0].data).unwrap();
    assert_eq!(got[0].vlan, Some(0x0123), "tag inserted by the sender, stripped by the receiver");
    let Some(NetSlice::Ipv6(ip)) = &s.net else { panic!() };
    let Some(TransportSlice::Udp(u)) = &s.transport else { panic!() };
    assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap());
}

#[test]
fn device_going_away_is_a_clear_error_not_a_hang() {
    let s = sock("gone");
    let mut d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, false);
    let _ = d.child.kill();
    let _ = d.child.wait();
    let t0 = Instant::now();
    let err = loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "driver did not notice the device left");
        let mut p = vec![TxPacket::plain(vec![0xFF; 60])];
        if let Err(e) = dev.transmit(&mut p) {
            break e;
        }
        if let Err(e) = dev.wait(Duration::from_millis(200)) {
            break e;
        }
    };
    let msg = err.to_string();
    assert!(msg.contains("vfio-user") || msg.contains("gone"), "{msg}");
    // A fresh connection attempt to a dead socket fails at once too.
    assert!(driver::open_transport(&format!("vfio-user:{}", s.display())).is_err());
}

/// Busy polling never sleeps: with no interrupts, `wait` hands control straight back (it only yields the
/// core) instead of sleeping for the timeout, so a poll loop sees a frame as soon as the card writes it.
#[test]
fn busy_poll_wait_does_not_block() {
    let s = sock("busy");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let mut dev = E1000e::open(t, Config { irq: driver::IrqMode::BusyPoll, ..Default::default() }).unwrap();
    let t0 = Instant::now();
    for _ in 0..100 {
        assert!(!dev.wait(Duration::from_secs(5)).unwrap(), "no interrupt in busy-poll mode");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "a hundred waits of 5 s returned at once, not after their timeout");
    let mac = dev.mac();
    let mut p = vec![TxPacket::plain(tcp4(mac, mac, b"busy"))];
    dev.transmit(&mut p).unwrap();
    assert_eq!(receive_until(&mut dev, 1, Duration::from_secs(5)).len(), 1);
}

/// Byte queue limits: however fast packets are offered, the bytes on the ring and not completed stay
/// within the limit (plus the one packet that may cross it), what is held back stays with the caller,
/// and every frame still arrives.
#[test]
fn byte_queue_limits_hold_the_ring_to_its_limit() {
    let s = sock("bql");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, true);
    let mac = dev.mac();
    let mut frame = vec![0u8; 1514];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let total = 3000;
    let (mut offered, mut received, mut held_back) = (0usize, 0usize, 0u64);
    let mut rx = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while received < total && Instant::now() < end {
        let mut batch: Vec<TxPacket> = (offered..total.min(offered + 256)).map(|_| TxPacket::plain(frame.clone())).collect();
        let want = batch.len();
        let n = dev.transmit(&mut batch).unwrap();
        offered += n;
        if n < want {
            held_back += 1;
        }
        let q = dev.bql(0).expect("byte queue limits are on by default");
        assert!(q.inflight <= q.limit + 1514, "in flight {} over the limit {}", q.inflight, q.limit);
        rx.clear();
        received += dev.poll(64, &mut rx).unwrap();
    }
    assert_eq!(received, total, "every frame came back");
    let q = dev.bql(0).unwrap();
    assert!(held_back > 0 && dev.stats().tx_bql_stops > 0, "offered 256 at a time, the limit held some back");
    assert!(q.limit >= q.min_limit && q.limit <= q.max_limit);
}

/// Transmit completions wake only a send that waits for room: frames that fit the ring go out without an
/// interrupt (their descriptors are reclaimed by the next poll or send), so a round trip costs the driver
/// one wake-up, not two. Offered more than the ring and the byte queue limit take, the send is woken by
/// the completions, including those the card finished before the driver went to sleep, and every frame
/// goes out. The frames are for another station, so the card's own receive filter drops them as they
/// come back over the loopback backend: no receive interrupt either.
#[test]
fn only_a_send_waiting_for_room_is_woken_by_transmit_completions() {
    for irq in [driver::IrqMode::Msix, driver::IrqMode::Msi, driver::IrqMode::Intx] {
        completions_wake_only_a_held_send(irq);
    }
}

fn completions_wake_only_a_held_send(irq: driver::IrqMode) {
    let s = sock("txirq");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let mut dev = E1000e::open(t, Config { irq, ..Default::default() }).unwrap();
    let mac = dev.mac();
    let mut frame = vec![0u8; 1514];
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut rx = Vec::new();
    // Whatever bring-up raised (link) is taken first.
    while dev.wait(Duration::from_millis(300)).unwrap() {
        dev.poll(64, &mut rx).unwrap();
    }
    let before = dev.stats().interrupts;
    let mut batch: Vec<TxPacket> = (0..16).map(|_| TxPacket::plain(frame.clone())).collect();
    assert_eq!(dev.transmit(&mut batch).unwrap(), 16);
    assert!(!dev.wait(Duration::from_millis(500)).unwrap(), "{irq:?}: nothing waits for these completions");
    assert_eq!(dev.stats().interrupts, before, "{irq:?}");
    dev.poll(64, &mut rx).unwrap();
    assert!(rx.is_empty(), "{irq:?}: another station's frames stay out");
    // Many more than fit: each time the send is held back, a completion interrupt ends the wait.
    let total = 3000;
    let (mut sent, mut woken, mut held) = (0usize, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(30);
    while sent < total && Instant::now() < end {
        let mut batch: Vec<TxPacket> = (sent..total).map(|_| TxPacket::plain(frame.clone())).collect();
        let want = batch.len();
        let n = dev.transmit(&mut batch).unwrap();
        sent += n;
        if n < want {
            held += 1;
            if dev.wait(Duration::from_secs(2)).unwrap() {
                woken += 1;
            }
            dev.poll(64, &mut rx).unwrap();
        }
    }
    assert_eq!(sent, total, "{irq:?}: every frame went out");
    assert!(held > 0, "{irq:?}: the ring and the byte queue limit held sends back");
    assert_eq!(woken, held, "{irq:?}: every held-back send was woken by an interrupt, none by a 2 s timeout");
    assert!(dev.stats().interrupts > before, "{irq:?}");
}

/// An XDP program that drops every frame: far more frames than the receive ring holds are all seen and
/// dropped (the buffers go back to the card while nothing is handed up).
#[test]
fn xdp_drop_keeps_the_receive_ring_fed() {
    struct DropAll;
    impl driver::xdp::XdpProgram for DropAll {
        fn run(&mut self, _f: &mut driver::xdp::XdpFrame, _m: &driver::xdp::XdpMeta) -> driver::xdp::XdpAction {
            driver::xdp::XdpAction::Drop
        }
    }
    let s = sock("xdpdrop");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, true);
    dev.set_xdp(Some(Box::new(DropAll)));
    let mac = dev.mac();
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let total = 5000u64;
    let mut offered = 0u64;
    let mut rx = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while dev.xdp_stats().drop < total && Instant::now() < end {
        if offered < total {
            let mut batch: Vec<TxPacket> = (offered..total.min(offered + 64)).map(|_| TxPacket::plain(frame.clone())).collect();
            offered += dev.transmit(&mut batch).unwrap() as u64;
        }
        rx.clear();
        dev.poll(64, &mut rx).unwrap();
        assert!(rx.is_empty(), "nothing is handed up");
        assert!(dev.rx_unrefilled(0) < 16, "dropped frames' buffers go back to the card as they are cleaned");
    }
    let st = dev.xdp_stats();
    assert_eq!((st.drop, st.pass), (total, 0), "every frame dropped in the driver, none lost on the way");
}

/// Latency mode: a frame that comes back within the busy-poll time is found by watching the ring, before
/// any interrupt (counted apart), and nothing is lost either way.
#[test]
fn latency_mode_finds_frames_by_busy_polling() {
    let s = sock("latency");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let cfg = Config { promiscuous: true, busy_poll: Duration::from_millis(5), ..Config::default().latency() };
    let mut dev = E1000e::open(t, cfg).unwrap();
    let mac = dev.mac();
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut rx = Vec::new();
    let mut got = 0;
    for _ in 0..20 {
        dev.transmit(&mut vec![TxPacket::plain(frame.clone())]).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let mut this = 0;
        while this == 0 && Instant::now() < until {
            dev.wait(Duration::from_millis(100)).unwrap();
            rx.clear();
            this = dev.poll(64, &mut rx).unwrap();
        }
        got += this;
    }
    assert_eq!(got, 20);
    assert!(dev.stats().busy_poll_hits > 0, "the busy poll saw frames land: {:?}", dev.stats());
}

/// A packet the card cannot carry (too long without TSO, or offload offsets outside it) ends a batch
/// before it: the packets ahead go out with that doorbell, the next send reports it first in line with
/// nothing written, and once the caller drops it the rest go out. Every good frame comes back once.
#[test]
fn a_packet_the_card_cannot_carry_ends_the_batch_before_it() {
    let s = sock("bad-packet");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let mut dev = open(&s, true);
    let mac = dev.mac();
    let good = |n: u8| TxPacket::plain(tcp4(mac, mac, &[n; 100]));
    let too_long = TxPacket::plain(tcp4(mac, mac, &[0xEE; 3000]));
    let mut bad_offsets = TxPacket::plain(tcp4(mac, mac, &[0xDD; 100]));
    bad_offsets.csum = Some(TxCsum { l3: 14, l4: 250, ipv4: true, tcp: true });
    for bad in [too_long, bad_offsets] {
        let mut pkts = vec![good(1), bad, good(2)];
        assert_eq!(dev.transmit(&mut pkts).unwrap(), 1, "the packet ahead of the bad one goes");
        assert_eq!(pkts.len(), 2);
        assert!(matches!(dev.transmit(&mut pkts), Err(driver::DriverError::BadPacket(_))), "then the bad one is reported");
        assert_eq!(pkts.len(), 2, "and left to the caller");
        pkts.remove(0);
        assert_eq!(dev.transmit(&mut pkts).unwrap(), 1);
        let got = receive_until(&mut dev, 2, Duration::from_secs(5));
        let payloads: Vec<u8> = got.iter().map(|p| p.data[p.data.len() - 1]).collect();
        assert_eq!(payloads, [1, 2], "each good frame once, in order");
        assert!(receive_until(&mut dev, 1, Duration::from_millis(200)).is_empty(), "nothing more");
    }
}

/// A packet the ring has no room for is left to the caller as it was given: the offload edits (the
/// pseudo-header sum, TSO's zeroed IP length) are made only to packets that are queued.
#[test]
fn a_packet_left_for_want_of_room_is_untouched() {
    let s = sock("untouched");
    let _d = Device::start(None, &s, &["--backend", "loopback"]);
    let t = driver::open_transport(&format!("vfio-user:{}", s.display())).unwrap();
    let mut dev = E1000e::open(t, Config { promiscuous: true, tx_ring: 64, bql: false, ..Default::default() }).unwrap();
    let mac = dev.mac();
    // Two 40 KB TSO sends: 21 descriptors each with the context, so the second fits beside the first, a
    // third does not.
    let tso = |n: u8| {
        let mut p = TxPacket::plain(tcp4(mac, mac, &vec![n; 40_000]));
        p.csum = Some(TxCsum { l3: 14, l4: 34, ipv4: true, tcp: true });
        p.tso = Some(1448);
        p
    };
    let mut pkts = vec![tso(1), tso(2), tso(3), tso(4)];
    let before: Vec<Vec<u8>> = pkts.iter().map(|p| p.data.clone()).collect();
    let n = dev.transmit(&mut pkts).unwrap();
    assert!((1..4).contains(&n), "some fit, some do not: {n}");
    for (left, orig) in pkts.iter().zip(&before[n..]) {
        let first_change = left.data.iter().zip(orig).position(|(a, b)| a != b);
        assert!(left.data.len() == orig.len() && first_change.is_none(), "a packet left behind changed at byte {first_change:?}");
    }
    let segs = receive_until(&mut dev, n * 28, Duration::from_secs(5));
    assert_eq!(segs.len(), n * 28, "{n} sends of 40,000 bytes are 28 segments each");
}
