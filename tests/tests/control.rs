//! The control socket through `nicctl` (inspect, trace, inject) against a running nic-device, with our own
//! driver on the card: every command, and our driver's reaction to every fault (a clear error or a
//! recovery, never a hang). The stock Linux driver's reactions are in guest_faults.rs.

use driver::{Config, DriverError, E1000e, NetDev, RxCsum, RxPacket, TxCsum, TxPacket};
use nic_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn sock(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.sock", unique(tag)))
}

/// A nic-device on the loopback wire (what is sent comes back), with its control socket.
fn loopback_device(tag: &str) -> (PathBuf, Device) {
    let s = sock(tag);
    let d = Device::start(None, &s, &["--backend", "loopback"]);
    (s, d)
}

fn open_cfg(path: &Path, cfg: Config) -> Result<E1000e, DriverError> {
    let t = driver::open_transport(&format!("vfio-user:{}", path.display()))?;
    E1000e::open(t, cfg)
}

fn open(path: &Path) -> E1000e {
    open_cfg(path, Config { promiscuous: true, tx_timeout: Duration::from_millis(500), ..Default::default() })
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// A TCP/IPv4 frame with good checksums and a sequence number to tell frames apart.
fn frame(mac: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(mac, mac).ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64).tcp(4000, 5000, seq, 65000);
    let mut v = Vec::new();
    b.write(&mut v, &vec![(seq % 251) as u8; len]).unwrap();
    v
}

fn seq_of(f: &[u8]) -> Option<u32> {
    match etherparse::SlicedPacket::from_ethernet(f).ok()?.transport? {
        etherparse::TransportSlice::Tcp(t) => Some(t.sequence_number()),
        _ => None,
    }
}

/// Polls until `want` packets arrived or `timeout` passed; driver errors end it.
fn receive(dev: &mut E1000e, want: usize, timeout: Duration) -> Result<Vec<RxPacket>, DriverError> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < want && t0.elapsed() < timeout {
        if dev.poll(64, &mut got)? == 0 {
            dev.wait(Duration::from_millis(20))?;
        }
    }
    Ok(got)
}

/// Sends `n` frames one at a time through the loopback wire and collects what comes back.
fn round_trip(dev: &mut E1000e, first_seq: u32, n: u32, len: usize) -> Result<Vec<RxPacket>, DriverError> {
    let mut got = Vec::new();
    for s in first_seq..first_seq + n {
        let mut p = vec![TxPacket::plain(frame(dev.mac(), s, len))];
        dev.transmit(&mut p)?;
        got.extend(receive(dev, 1, Duration::from_millis(300))?);
    }
    got.extend(receive(dev, n as usize, Duration::from_millis(500))?);
    Ok(got)
}

/// The queue named `queue` (`tx0`, `rx1`, ...) as `nicctl rings` shows it: base, length, head, tail.
fn ring(control: &Path, queue: &str) -> Value {
    let rings = nicctl_json(control, &["rings"]);
    rings.as_array().and_then(|a| a.iter().find(|r| r["queue"] == queue)).cloned().unwrap_or_else(|| panic!("no ring {queue}: {rings}"))
}

fn intact(p: &RxPacket, len: usize) -> bool {
    seq_of(&p.data).is_some_and(|s| p.data == frame(p.data[0..6].try_into().unwrap(), s, len))
}

/// `nicctl trace FLAGS -o FILE` against the device at `control`, running until `events` ends it.
struct Trace {
    child: std::process::Child,
    file: PathBuf,
}

impl Trace {
    /// Starts the trace and gives it a moment to subscribe.
    fn start(control: &Path, flags: &[&str]) -> Trace {
        let file = std::env::temp_dir().join(format!("{}.jsonl", unique("trace")));
        let child = std::process::Command::new(bin("nicctl")).arg(control).arg("trace").args(flags).arg("-o").arg(&file).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Trace { child, file }
    }

    /// After `settle` for the last events to land: stops the trace and returns what it wrote.
    fn events(mut self, settle: Duration) -> Vec<Value> {
        std::thread::sleep(settle);
        self.stop();
        std::fs::read_to_string(&self.file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test that fails before `events` leaves no `nicctl trace` running, nor its file.
impl Drop for Trace {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn nicctl_shows_registers_rings_stats_phy_nvm_and_irq() {
    let s = sock("ctl");
    let d = Device::start(None, &s, &["--backend", "loopback", "--mac", "52:54:00:c0:ff:ee"]);
    let mut dev = open(&s);
    let got = round_trip(&mut dev, 1, 50, 200).unwrap();
    assert_eq!(got.len(), 50);

    // regs: values and fields by datasheet name, text and JSON.
    let (ok, text) = nicctl(&d.control, &["regs", "CTRL", "RCTL", "STATUS"]);
    assert!(ok, "{text}");
    assert!(text.contains("CTRL.SLU=1") && text.contains("RCTL.EN=1") && text.contains("STATUS.LU=1"), "{text}");
    let regs = nicctl_json(&d.control, &["regs", "RCTL", "TDT0", "RAH[0]"]);
    assert_eq!(regs[0]["fields"]["EN"], 1);
    assert_eq!(regs[0]["fields"]["UPE"], 1, "promiscuous driver: RCTL.UPE");
    assert_eq!(regs[2]["fields"]["AV"], 1);
    let all = nicctl_json(&d.control, &["regs"]);
    assert!(all.as_array().unwrap().len() > 400, "every named register");
    let (ok, err) = nicctl(&d.control, &["regs", "NOSUCH"]);
    assert!(!ok && err.contains("no register named 'NOSUCH'"), "{err}");

    // rings: the driver's TX tail, and decoded descriptors.
    let rings = nicctl_json(&d.control, &["rings"]);
    let tx0 = &rings[0];
    assert_eq!(tx0["queue"], "tx0");
    assert_eq!(tx0["enabled"], true);
    assert_eq!(tx0["descriptors"], 256);
    assert_eq!(tx0["head"], tx0["tail"], "every transmit fetched");
    assert_eq!(tx0["tail"].as_u64().unwrap() as u32, d.reg("TDT0"));
    let done: Vec<&Value> = tx0["ring"].as_array().unwrap().iter().filter(|x| x["dd"] == true).collect();
    assert!(!done.is_empty(), "written-back descriptors before head: {tx0}");
    assert!(done.iter().all(|x| x["type"] == "legacy" || x["type"] == "data" || x["type"] == "context"), "{tx0}");
    let rx0 = &rings[2];
    assert_eq!(rx0["queue"], "rx0");
    assert_eq!(rx0["format"], "extended");
    let (ok, text) = nicctl(&d.control, &["rings"]);
    assert!(ok && text.contains("tx0: enabled") && text.contains("rx0: enabled"), "{text}");

    // stats: ethtool names, totals unaffected by the driver's clear-on-read reads.
    let hw = dev.hw_stats().unwrap();
    assert!(hw.iter().any(|(n, v)| *n == "gprc" && *v == 50), "{hw:?}");
    assert_eq!(d.stat("ethtool", "rx_packets"), 50);
    assert_eq!(d.stat("ethtool", "tx_packets"), 50);
    assert_eq!(d.stat("ethtool", "rx_bytes"), 50 * (14 + 20 + 20 + 200 + 4));
    assert_eq!(d.stat("device", "rx_frames"), 50);
    let (ok, text) = nicctl(&d.control, &["stats"]);
    assert!(ok && text.contains("rx_packets: 50"), "{text}");

    // phy, nvm, irq.
    let phy = nicctl_json(&d.control, &["phy"]);
    assert_eq!(phy["link_up"], true);
    assert_eq!(phy["registers"][2]["name"], "PHYID1");
    assert_eq!(phy["registers"][2]["value"], "0x0141");
    let nvm = nicctl_json(&d.control, &["nvm"]);
    assert_eq!(nvm["checksum_valid"], true);
    assert_eq!(nvm["mac"], "52:54:00:c0:ff:ee");
    let irq = nicctl_json(&d.control, &["irq"]);
    assert_eq!(irq["mode"], "Msix");
    assert_eq!(irq["ivar"]["RXQ0"], 0);
    let sent: u64 = irq["vectors"].as_array().unwrap().iter().map(|v| v["sent"].as_u64().unwrap()).sum();
    assert!(sent > 0 && irq["vectors"][0]["eventfd"] == true, "{irq}");
    for cmd in ["phy", "nvm", "irq", "faults"] {
        let (ok, text) = nicctl(&d.control, &[cmd]);
        assert!(ok && !text.is_empty(), "{cmd}: {text}");
    }
}

#[test]
fn trace_streams_registers_dma_interrupts_and_frames() {
    let (s, d) = loopback_device("trace");
    let tracer = Trace::start(&d.control, &["--regs", "--dma", "--irq", "--frames"]);
    let mut dev = open(&s);
    let got = round_trip(&mut dev, 1, 10, 100).unwrap();
    assert_eq!(got.len(), 10);
    drop(dev);
    let events = tracer.events(Duration::from_millis(500));
    let count = |f: &dyn Fn(&Value) -> bool| events.iter().filter(|e| f(e)).count();
    // The driver's reset, as a register write naming its field.
    assert!(events.iter().any(|e| e["event"] == "reg" && e["name"] == "CTRL" && e["dir"] == "write"), "no CTRL write traced");
    assert!(count(&|e| e["event"] == "reg" && e["name"] == "TDT0" && e["dir"] == "write") >= 10);
    assert!(count(&|e| e["event"] == "dma" && e["what"] == "tx-descriptor") >= 10);
    assert!(count(&|e| e["event"] == "dma" && e["what"] == "rx-buffer" && e["len"] == 154) >= 10);
    assert!(count(&|e| e["event"] == "dma" && e["what"] == "write-back") >= 10);
    assert_eq!(count(&|e| e["event"] == "frame" && e["dir"] == "out"), 10);
    assert_eq!(count(&|e| e["event"] == "frame" && e["dir"] == "in"), 10);
    assert!(count(&|e| e["event"] == "irq") > 0);
    // Timestamps never go back.
    let ts: Vec<f64> = events.iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));

    // A filtered trace: only RDT, and --count ends it.
    let out = std::process::Command::new(bin("nicctl"))
        .arg(&d.control)
        .args(["trace", "--regs", "--reg", "RDT0", "--count", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut dev = open(&s);
    round_trip(&mut dev, 100, 50, 100).unwrap();
    let out = out.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|e| e["name"] == "RDT0"), "{lines:?}");
    // Moderation: with EITR at 100 interrupts/s, round trips faster than 10 ms have interrupts held back,
    // and the trace says so.
    drop(dev);
    let mut dev = open_cfg(&s, Config { promiscuous: true, itr: 100, ..Default::default() }).unwrap();
    let tracer = Trace::start(&d.control, &["--irq"]);
    assert_eq!(round_trip(&mut dev, 5000, 30, 64).unwrap().len(), 30);
    let irq = tracer.events(Duration::from_millis(300));
    assert!(irq.iter().any(|e| e["event"] == "irq-moderated" && e["held"].as_u64().unwrap() >= 1), "no moderation traced: {irq:?}");
    assert!(irq.iter().any(|e| e["event"] == "irq"));
    let irq_state = nicctl_json(&d.control, &["irq"]);
    assert!(irq_state["vectors"].as_array().unwrap().iter().any(|v| v["moderated"].as_u64().unwrap() > 0), "{irq_state}");
    // No subscriber left: the trace is off again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.stat("device", "trace_events_dropped"), 0);
}

/// The driver sets RS (report status) on every 32nd packet and on the last of each send, so the card writes
/// one transmit status back for a group: counted in the DMA trace. Sends of more than the ring holds then
/// show that the groups are reclaimed and every frame arrives intact.
#[test]
fn transmit_status_is_reported_once_per_group_of_packets() {
    let (s, d) = loopback_device("rs-group");
    let tracer = Trace::start(&d.control, &["--dma"]);
    let cfg = Config { promiscuous: true, bql: false, tx_timeout: Duration::from_millis(500), ..Default::default() };
    let mut dev = open_cfg(&s, cfg).unwrap();
    let mac = dev.mac();
    // One send of 100 packets: RS on the 32nd, 64th, 96th and 100th.
    let mut batch: Vec<TxPacket> = (0..100).map(|i| TxPacket::plain(frame(mac, i, 100))).collect();
    assert_eq!(dev.transmit(&mut batch).unwrap(), 100);
    let got = receive(&mut dev, 100, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 100);
    // Three sends of one packet: each its own group.
    let got = round_trip(&mut dev, 100, 3, 100).unwrap();
    assert_eq!(got.len(), 3);
    let events = tracer.events(Duration::from_millis(500));
    // Write-backs by where they land in their 16-byte descriptor and their length: a transmit status is
    // byte 12; a receive write-back's status (STATERR) is bytes 8 to 11.
    let wb = |at: u64, len: u64| {
        let at_in = |e: &&Value| u64::from_str_radix(e["addr"].as_str().unwrap_or("").trim_start_matches("0x"), 16).ok().map(|a| a % 16);
        events.iter().filter(|e| e["event"] == "dma" && e["what"] == "write-back" && e["len"] == len && at_in(e) == Some(at)).count()
    };
    let (tx_status, rx_status) = (wb(12, 1), wb(8, 4));
    assert_eq!(rx_status, 103, "every received frame's status is written back");
    assert_eq!(tx_status, 4 + 3, "one transmit status per group of up to 32 packets and per send");
    // 3,000 packets through a ring of 256 in sends of 100 (the driver takes what fits; `transmit` drains
    // what it took), then 40 of one.
    let mut seq = 1000;
    let mut got = Vec::new();
    for round in 0..30 {
        let mut batch: Vec<TxPacket> = (0..100).map(|i| TxPacket::plain(frame(mac, seq + i, 100))).collect();
        seq += 100;
        let t0 = Instant::now();
        while !batch.is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(20), "round {round}: the ring was never reclaimed");
            let n = dev.transmit(&mut batch).unwrap();
            got.extend(receive(&mut dev, n, Duration::from_secs(5)).unwrap());
        }
    }
    got.extend(round_trip(&mut dev, seq, 40, 100).unwrap());
    let mut seqs: Vec<u32> = got.iter().filter(|p| intact(p, 100)).filter_map(|p| seq_of(&p.data)).collect();
    assert_eq!(seqs.len(), 3040, "every frame back intact");
    seqs.dedup();
    assert_eq!(seqs, (1000..1000 + 3040).collect::<Vec<u32>>(), "in order, once each");
}

#[test]
fn link_faults_reach_our_driver() {
    let (s, d) = loopback_device("link");
    let mut dev = open(&s);
    assert!(dev.link().unwrap().up);
    inject(&d.control, &["link-down"]);
    assert!(!dev.link().unwrap().up, "link-down: STATUS.LU clear");
    assert_eq!(nicctl_json(&d.control, &["phy"])["link_up"], false);
    let (ok, out) = nicctl(&d.control, &["link-up"]);
    assert!(ok && out.contains("cleared 1"), "{out}");
    assert!(dev.link().unwrap().up);
    // Timed: down for 300 ms, then up by itself.
    inject(&d.control, &["link-down", "--for", "300"]);
    assert!(!dev.link().unwrap().up);
    std::thread::sleep(Duration::from_millis(600));
    assert!(dev.link().unwrap().up, "a timed link-down ends by itself");
    // Flapping: 3 cycles of a 200 ms period; the driver sees the link go down and come back.
    inject(&d.control, &["link-flap", "--delay", "200", "--count", "3"]);
    let (mut downs, mut last, t0) = (0, true, Instant::now());
    while t0.elapsed() < Duration::from_millis(900) {
        let up = dev.link().unwrap().up;
        if last && !up {
            downs += 1;
        }
        last = up;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(downs, 3, "three flaps seen");
    assert!(dev.link().unwrap().up, "the link stays up after the flaps");
    // Traffic after the link came back.
    assert_eq!(round_trip(&mut dev, 1, 5, 64).unwrap().len(), 5);
}

#[test]
fn phy_and_nvm_faults_are_clear_errors_at_open() {
    let s = sock("probe");
    let d = Device::start(None, &s, &["--backend", "loopback", "--mac", "52:54:00:00:00:aa"]);
    let cfg = || Config { tx_timeout: Duration::from_millis(500), link_timeout: Duration::from_secs(2), ..Default::default() };

    inject(&d.control, &["phy-silent", "--persistent"]);
    let e = open_cfg(&s, cfg()).err().expect("open with a silent PHY");
    assert!(matches!(e, DriverError::Phy(_)) && e.to_string().contains("MDIC error"), "{e}");
    nicctl(&d.control, &["clear", "phy-silent"]);
    drop(open_cfg(&s, cfg()).unwrap());

    inject(&d.control, &["nvm-checksum", "--persistent"]);
    let e = open_cfg(&s, cfg()).err().expect("open with a bad NVM checksum");
    assert!(matches!(e, DriverError::BadNvmChecksum(_)), "{e}");
    assert_eq!(nicctl_json(&d.control, &["nvm"])["checksum_valid"], false);
    nicctl(&d.control, &["clear", "nvm-checksum"]);
    drop(open_cfg(&s, cfg()).unwrap());

    inject(&d.control, &["nvm-mac", "--mac", "52:54:00:00:00:bb", "--persistent"]);
    let dev = open_cfg(&s, cfg()).unwrap();
    assert_eq!(dev.mac(), [0x52, 0x54, 0, 0, 0, 0xbb], "the NVM's address is the card's");
    drop(dev);
    inject(&d.control, &["nvm-mac", "--mac", "01:00:5e:00:00:01", "--persistent"]);
    let e = open_cfg(&s, cfg()).err().expect("open with a multicast NVM address");
    assert!(matches!(e, DriverError::InvalidMac(_)) && e.to_string().contains("multicast"), "{e}");
    nicctl(&d.control, &["clear"]);
    assert_eq!(open_cfg(&s, cfg()).unwrap().mac(), [0x52, 0x54, 0, 0, 0, 0xaa]);
}

#[test]
fn tx_stall_is_reported_as_a_hang_and_a_reset_recovers() {
    tx_stall_reported(driver::IrqMode::Auto);
}

/// A busy-polling driver reads the clock for hang detection only every so many stalled polls: it still
/// reports the hang.
#[test]
fn tx_stall_is_reported_to_a_busy_polling_driver_too() {
    tx_stall_reported(driver::IrqMode::BusyPoll);
}

fn tx_stall_reported(irq: driver::IrqMode) {
    let (s, d) = loopback_device("stall");
    let open = |s: &Path| {
        open_cfg(s, Config { promiscuous: true, tx_timeout: Duration::from_millis(500), irq, ..Default::default() })
            .unwrap_or_else(|e| panic!("open: {e}"))
    };
    let mut dev = open(&s);
    assert_eq!(dev.irq_kind().is_none(), irq == driver::IrqMode::BusyPoll);
    assert_eq!(round_trip(&mut dev, 1, 3, 64).unwrap().len(), 3);
    inject(&d.control, &["tx-stall"]);
    let t0 = Instant::now();
    let err = loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "our driver did not notice the stalled queue");
        if let Err(e) = round_trip(&mut dev, 10, 1, 64) {
            break e;
        }
    };
    assert!(matches!(err, DriverError::TxHang { queue: 0, .. }), "{err}");
    assert!(err.to_string().contains("hung"), "{err}");
    let rings = nicctl_json(&d.control, &["rings"]);
    assert_ne!(rings[0]["head"], rings[0]["tail"], "TDH stays while TDT moved: {}", rings[0]);
    assert!(d.stat("fault_hits", "tx-stall") > 0);
    // Reopening resets the card, which ends a one-shot stall.
    drop(dev);
    let mut dev = open(&s);
    assert_eq!(round_trip(&mut dev, 20, 5, 64).unwrap().len(), 5);
    assert!(nicctl_json(&d.control, &["faults"]).as_array().unwrap().is_empty());
}

/// A busy-polling driver's transmit doorbells wait while the card is busy: a send to an idle card is
/// handed over at once (one TDT write), sends behind work the card has not finished wait for the next
/// doorbell (held here by a stalled queue, so that the card is busy for as long as the test needs), and
/// none is stranded: once the card completes nothing for a while, it gets every doorbell again. With
/// interrupts every send rings, since the caller may sleep next. Every frame comes back, in order; the
/// card's own TDT shows what was handed over.
#[test]
fn sends_to_a_busy_card_share_a_doorbell_and_none_is_stranded() {
    for irq in [driver::IrqMode::BusyPoll, driver::IrqMode::Auto] {
        let polling = irq == driver::IrqMode::BusyPoll;
        let (s, d) = loopback_device("doorbells");
        let cfg = Config { promiscuous: true, tx_timeout: Duration::from_secs(30), irq, ..Default::default() };
        let mut dev = open_cfg(&s, cfg).unwrap_or_else(|e| panic!("open: {e}"));
        let tdt = || ring(&d.control, "tx0")["tail"].as_u64().unwrap();
        // An idle card: each send is handed over by its own doorbell.
        for seq in 1..=3 {
            let before = dev.stats();
            dev.transmit(&mut vec![TxPacket::plain(frame(dev.mac(), seq, 64))]).unwrap();
            let after = dev.stats();
            assert_eq!(after.tx_doorbells, before.tx_doorbells + 1, "{irq:?}: an idle card gets the send at once");
            assert_eq!(after.tx_doorbells_deferred, before.tx_doorbells_deferred, "{irq:?}");
            let got = receive(&mut dev, 1, Duration::from_secs(5)).unwrap();
            assert!(got.len() == 1 && intact(&got[0], 64) && seq_of(&got[0].data) == Some(seq), "{irq:?}");
        }
        assert_eq!(tdt(), 3, "{irq:?}");
        // A busy card: the first send is handed over; busy polling, the next nine wait behind it.
        inject(&d.control, &["tx-stall", "--persistent"]);
        let before = dev.stats();
        for seq in 4..=13 {
            assert_eq!(dev.transmit(&mut vec![TxPacket::plain(frame(dev.mac(), seq, 64))]).unwrap(), 1);
        }
        let after = dev.stats();
        let (rang, waited, tail) = if polling { (1, 9, 4) } else { (10, 0, 13) };
        assert_eq!(after.tx_doorbells, before.tx_doorbells + rang, "{irq:?}: doorbells");
        assert_eq!(after.tx_doorbells_deferred, before.tx_doorbells_deferred + waited, "{irq:?}: sends that waited");
        assert_eq!(tdt(), tail, "{irq:?}: what the card was given");
        nicctl(&d.control, &["clear", "tx-stall"]);
        // The waiting sends are handed over and come back.
        let got = receive(&mut dev, 10, Duration::from_secs(10)).unwrap();
        let seqs: Vec<u32> = got.iter().filter_map(|p| seq_of(&p.data)).collect();
        assert_eq!(seqs, (4..=13).collect::<Vec<u32>>(), "{irq:?}: every frame, in order");
        assert!(got.iter().all(|p| intact(p, 64)), "{irq:?}");
        assert_eq!(tdt(), 13, "{irq:?}");
        assert!(d.stat("fault_hits", "tx-stall") > 0, "{irq:?}");
    }
}

/// A busy-polling driver closed while a send waits for the card's doorbell hands it over first: held back
/// here by write-backs that land late (the card looks busy to the driver), the second send still crosses
/// the wire to another card before the first driver's close stops its card.
#[test]
fn a_send_held_back_goes_out_when_the_driver_closes() {
    let link = std::env::temp_dir().join(format!("{}.link", unique("close")));
    let (sa, sb) = (sock("closeA"), sock("closeB"));
    let a = Device::start(None, &sa, &["--backend", &format!("stream:{}", link.display()), "--mac", "52:54:00:00:02:0a"]);
    let _b = Device::start(None, &sb, &["--backend", &format!("stream-connect:{}", link.display()), "--mac", "52:54:00:00:02:0b"]);
    let mut tx = open_cfg(&sa, Config { irq: driver::IrqMode::BusyPoll, ..Default::default() }).unwrap();
    let mut rx = open(&sb);
    let to = rx.mac();
    let framed = |seq: u32| {
        let mut f = frame(to, seq, 200);
        f[6..12].copy_from_slice(&tx.mac());
        TxPacket::plain(f)
    };
    let (first, second) = (framed(1), framed(2));
    inject(&a.control, &["writeback-delay", "--delay", "2000", "--persistent"]);
    assert_eq!(tx.transmit(&mut vec![first]).unwrap(), 1);
    assert_eq!(tx.transmit(&mut vec![second]).unwrap(), 1);
    let st = tx.stats();
    assert_eq!((st.tx_doorbells, st.tx_doorbells_deferred), (1, 1), "the second send waits for the busy card");
    drop(tx);
    let got = receive(&mut rx, 2, Duration::from_secs(10)).unwrap();
    let seqs: Vec<u32> = got.iter().filter_map(|p| seq_of(&p.data)).collect();
    assert_eq!(seqs, [1, 2], "both sends crossed the wire");
}

/// Received buffers go back to the card a batch at a time, as Linux's e1000e hands them back: one frame at
/// a time, the card's RDT stays where it was for the first 15 and moves by 16 with the sixteenth (a ring
/// of 256). Every frame arrives.
#[test]
fn receive_buffers_go_back_sixteen_at_a_time() {
    let (s, d) = loopback_device("rdt");
    let mut dev = open(&s);
    let rdt = || {
        let rx0 = ring(&d.control, "rx0");
        (rx0["descriptors"].as_u64().unwrap(), rx0["tail"].as_u64().unwrap())
    };
    let (n, start) = rdt();
    assert_eq!(n, 256);
    for seq in 1..=40u32 {
        dev.transmit(&mut vec![TxPacket::plain(frame(dev.mac(), seq, 64))]).unwrap();
        let got = receive(&mut dev, 1, Duration::from_secs(5)).unwrap();
        assert!(got.len() == 1 && intact(&got[0], 64) && seq_of(&got[0].data) == Some(seq), "frame {seq}");
        let handed_back = seq as u64 / 16 * 16;
        let want = (start + handed_back) % n;
        // The tail write is posted: a register read behind it (the link state) has the device take it in
        // first, and the data path shows it once it applies the doorbell, so a tail that is to move is
        // waited for (on a loaded machine that is a while); one that is not to move is already final.
        dev.link().unwrap();
        let t0 = Instant::now();
        let mut tail = rdt().1;
        while tail != want && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
            tail = rdt().1;
        }
        assert_eq!(tail, want, "after {seq} frames, {handed_back} buffers handed back");
        assert_eq!(dev.rx_unrefilled(0) as u64, seq as u64 - handed_back);
    }
}

#[test]
fn receive_faults_drop_truncate_and_flag_frames() {
    let (s, d) = loopback_device("rx");
    let mut dev = open(&s);
    dev.hw_stats().unwrap();
    // Five frames with a bad CRC: dropped by the card and counted.
    inject(&d.control, &["rx-drop", "--count", "5"]);
    let got = round_trip(&mut dev, 1, 20, 100).unwrap();
    assert_eq!(got.len(), 15);
    assert!(got.iter().all(|p| intact(p, 100)));
    let crc = dev.hw_stats().unwrap().into_iter().find(|(n, _)| *n == "crcerrs").unwrap().1;
    assert_eq!(crc, 5, "CRCERRS as the driver reads it");
    assert_eq!(d.stat("ethtool", "rx_crc_errors"), 5);

    // Three frames cut in half: they arrive short, the rest intact.
    inject(&d.control, &["rx-truncate", "--count", "3"]);
    let got = round_trip(&mut dev, 100, 10, 400).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got.iter().filter(|p| intact(p, 400)).count(), 7);
    assert_eq!(got.iter().filter(|p| p.data.len() == (14 + 40 + 400) / 2).count(), 3);

    // Four frames with checksum error status although their checksums are good.
    inject(&d.control, &["rx-bad-csum", "--count", "4"]);
    let before = dev.stats().rx_csum_bad;
    let mut pkts: Vec<TxPacket> = (200..210)
        .map(|s| TxPacket {
            data: frame(dev.mac(), s, 300),
            csum: Some(TxCsum { l3: 14, l4: 34, ipv4: true, tcp: true }),
            tso: None,
            vlan: None,
        })
        .collect();
    dev.transmit(&mut pkts).unwrap();
    let got = receive(&mut dev, 10, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got.iter().filter(|p| p.csum == RxCsum::Bad).count(), 4);
    assert_eq!(got.iter().filter(|p| p.csum == RxCsum::Verified).count(), 6);
    assert_eq!(dev.stats().rx_csum_bad - before, 4);
    assert!(got.iter().all(|p| intact(p, 300)), "the data itself is untouched");
}

#[test]
fn dma_errors_lose_frames_but_never_corrupt_or_hang() {
    let (s, d) = loopback_device("dma");
    let mut dev = open(&s);
    inject(&d.control, &["dma-error", "--count", "8"]);
    let t0 = Instant::now();
    let mut seq = 1;
    // Until the fault is used up: frames may be lost, a write-back lost for good is reported as a hang.
    while !nicctl_json(&d.control, &["faults"]).as_array().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "fault never used up");
        match round_trip(&mut dev, seq, 5, 100) {
            Ok(got) => assert!(got.iter().all(|p| intact(p, 100)), "a frame hit by a DMA error was delivered"),
            Err(e) => {
                assert!(matches!(e, DriverError::TxHang { .. }), "{e}");
                drop(dev);
                dev = open(&s);
            }
        }
        seq += 5;
    }
    assert_eq!(d.stat("fault_hits", "dma-error"), 8);
    assert!(d.stat("device", "dma_errors") >= 1);
    // Recovered: everything goes through again (after a reset if the queue hung).
    let got = match round_trip(&mut dev, 1000, 20, 100) {
        Ok(g) => g,
        Err(_) => {
            drop(dev);
            dev = open(&s);
            round_trip(&mut dev, 1000, 20, 100).unwrap()
        }
    };
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|p| intact(p, 100)));
}

#[test]
fn interrupt_faults_lost_spurious_and_late() {
    let (s, d) = loopback_device("irq");
    let mut dev = open(&s);
    // Lost interrupts: our driver's wait times out and polls anyway.
    inject(&d.control, &["irq-lost", "--count", "3"]);
    let mut got = round_trip(&mut dev, 1, 10, 64).unwrap();
    while got.len() < 40 && d.stat("device", "irq_lost_injected") < 3 {
        got.extend(round_trip(&mut dev, 1 + got.len() as u32, 10, 64).unwrap());
    }
    assert!(got.iter().all(|p| intact(p, 64)));
    assert_eq!(d.stat("device", "irq_lost_injected"), 3);
    // Spurious interrupts: woken with nothing to do, no harm.
    let before = dev.stats().interrupts;
    inject(&d.control, &["irq-spurious", "--count", "4", "--delay", "30"]);
    let mut woke = 0;
    for _ in 0..20 {
        if dev.wait(Duration::from_millis(50)).unwrap() {
            woke += 1;
            let mut v = Vec::new();
            assert_eq!(dev.poll(64, &mut v).unwrap(), 0);
        }
    }
    assert!(woke >= 1 && dev.stats().interrupts > before, "spurious interrupts seen: {woke}");
    assert_eq!(d.stat("device", "irq_spurious_injected"), 4);
    // Late interrupts: the frame waits for its interrupt (at least the injected delay) and arrives.
    inject(&d.control, &["irq-late", "--delay", "200", "--persistent"]);
    let t0 = Instant::now();
    let mut p = vec![TxPacket::plain(frame(dev.mac(), 77, 64))];
    dev.transmit(&mut p).unwrap();
    let mut got = Vec::new();
    while got.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        // Interrupt-driven only: no poll before the interrupt comes.
        if dev.wait(Duration::from_secs(1)).unwrap() {
            dev.poll(64, &mut got).unwrap();
        }
    }
    assert_eq!(got.len(), 1);
    assert!(t0.elapsed() >= Duration::from_millis(200), "the interrupt came {:?} after the send", t0.elapsed());
    assert!(d.stat("device", "irq_late_injected") >= 1);
    nicctl(&d.control, &["clear", "irq-late"]);
    assert_eq!(round_trip(&mut dev, 500, 5, 64).unwrap().len(), 5);
}

#[test]
fn late_write_backs_and_doorbells_delay_but_keep_every_frame() {
    let (s, d) = loopback_device("late");
    let mut dev = open(&s);
    inject(&d.control, &["writeback-delay", "--delay", "100", "--count", "6"]);
    let got = round_trip(&mut dev, 1, 20, 128).unwrap();
    assert_eq!(got.len(), 20);
    let seqs: Vec<u32> = got.iter().map(|p| seq_of(&p.data).unwrap()).collect();
    assert_eq!(seqs, (1..21).collect::<Vec<_>>(), "in order, none lost");
    assert!(got.iter().all(|p| intact(p, 128)));
    assert_eq!(d.stat("fault_hits", "writeback-delay"), 6);

    inject(&d.control, &["doorbell-latency", "--delay", "50", "--persistent"]);
    let t0 = Instant::now();
    let got = round_trip(&mut dev, 100, 5, 64).unwrap();
    assert_eq!(got.len(), 5);
    assert!(t0.elapsed() >= Duration::from_millis(5 * 50), "5 round trips behind 50 ms doorbells took {:?}", t0.elapsed());
    nicctl(&d.control, &["clear", "doorbell-latency"]);
    assert_eq!(round_trip(&mut dev, 200, 5, 64).unwrap().len(), 5);
}

/// The voluntary context switches of the device's thread named `name` so far.
fn thread_switches(pid: u32, name: &str) -> u64 {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {name}");
}

/// The control socket's accepting thread sleeps until a client comes: no periodic wake-ups while nobody
/// asks anything (it used to look every 20 ms, 50 times a second). A client still gets its answer at
/// once, and the device still exits cleanly, waking the thread to stop.
#[test]
fn an_idle_control_socket_does_not_wake_the_device() {
    let (_s, mut d) = loopback_device("idlectl");
    std::thread::sleep(Duration::from_millis(200));
    let before = thread_switches(d.child.id(), "nic-control");
    std::thread::sleep(Duration::from_secs(1));
    let after = thread_switches(d.child.id(), "nic-control");
    assert!(after - before <= 2, "the accepting thread woke {} times in a second", after - before);
    let (ok, out) = nicctl(&d.control, &["phy"]);
    assert!(ok && out.contains("link"), "{out}");
    assert!(thread_switches(d.child.id(), "nic-control") > after, "a client wakes the accepting thread");
    assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    assert!(!d.control.exists(), "the control socket is removed at exit");
}

#[test]
fn nicctl_refuses_bad_requests_clearly() {
    let (_s, d) = loopback_device("bad");
    for (args, want) in [
        (vec!["inject", "no-such-fault"], "no fault named 'no-such-fault'"),
        (vec!["inject", "rx-drop", "--count", "0"], "count must be at least 1"),
        (vec!["inject", "nvm-mac", "--mac", "zz"], "bad MAC 'zz'"),
        (vec!["inject", "tx-stall", "--queue", "5"], "queue must be 0 or 1"),
        (vec!["clear", "nope"], "no fault named 'nope'"),
    ] {
        let (ok, out) = nicctl(&d.control, &args);
        assert!(!ok && out.contains(want), "{args:?}: {out}");
    }
    // clap: a bad flag is named.
    let (ok, out) = nicctl(&d.control, &["regs", "--bogus"]);
    assert!(!ok && out.contains("--bogus"), "{out}");
    // Raw garbage on the socket: an error line, and the device carries on.
    use std::io::{BufRead, Write};
    let mut c = std::os::unix::net::UnixStream::connect(&d.control).unwrap();
    c.write_all(b"{not json\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&c).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":false") && line.contains("bad request"), "{line}");
    assert!(nicctl(&d.control, &["phy"]).0);
}

#[test]
fn completions_and_help_for_every_command() {
    for (b, sub) in [
        ("nicctl", vec!["regs", "rings", "stats", "phy", "nvm", "irq", "trace", "inject", "clear", "link-up", "faults"]),
        ("nic-device", vec![]),
    ] {
        let out = std::process::Command::new(bin(b)).args(["--completions", "bash"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(&format!("_{}", b.replace('-', "__"))), "{b}: {text}");
        for s in sub {
            let args: Vec<&str> = if b == "nicctl" { vec!["x", s, "--help"] } else { vec![s, "--help"] };
            let out = std::process::Command::new(bin(b)).args(&args).output().unwrap();
            assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage"), "{b} {s} --help");
        }
    }
    let out = std::process::Command::new(bin("nic-device"))
        .args(["--socket", "/tmp/x", "--backend", "loopback", "--rx-overflow", "maybe"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--rx-overflow"), "{err}");
}

/// A trace client that stops reading costs the device nothing but the events it misses: they are dropped
/// and counted, traffic flows at full speed meanwhile, and once the client is gone the trace is off.
#[test]
fn a_trace_reader_that_stalls_does_not_hold_the_device() {
    use std::io::Write;
    let (s, d) = loopback_device("stall-trace");
    let mut dev = open(&s);
    let mut c = std::os::unix::net::UnixStream::connect(&d.control).unwrap();
    c.write_all(b"{\"cmd\":\"trace\",\"categories\":[\"all\"]}\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Never read: the socket buffer fills, then the subscription's backlog, then events are dropped.
    drop(dev);
    let (ok, out) = nic_lab(&["--vfio-user", s.to_str().unwrap(), "loopback-test", "--count", "30000", "--size", "64"]);
    assert!(ok, "{out}");
    assert_eq!(report_field(&out, "received"), 30000);
    let dropped = d.stat("device", "trace_events_dropped");
    assert!(dropped > 0, "the stalled reader's events were dropped and counted");
    drop(c);
    std::thread::sleep(Duration::from_millis(600));
    dev = open(&s);
    assert_eq!(round_trip(&mut dev, 1, 50, 64).unwrap().len(), 50);
    assert_eq!(d.stat("device", "trace_events_dropped"), dropped, "the trace is off once the client is gone");
}
