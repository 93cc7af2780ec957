//! A steady flow through the whole device allocates nothing per frame or per message: vfio-user messages
//! read and answered by the server's connection (tail doorbells posted, a STATUS read answered), the
//! doorbells' rounds run by the data path (transmit engine, backend, receive engine), over the loopback
//! wire, a UDP socket, and a wire with virtio-net headers as a TAP in offload mode carries (TSO sends
//! leave as GSO frames and are cut into wire frames on the way in). Every allocation in this test binary
//! is counted, on every thread but the test harness's main thread: the data path thread included.

mod common;

use common::*;
use nic_device::backend::Backend;
use nic_device::datapath::{DataPath, DoorbellMode, RxOverflow};
use nic_device::nic::lock;
use nic_device::pool::FramePool;
use nic_device::regs::*;
use nic_device::vfio::NicServer;
use nic_tap::VnetHdr;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vfio_user::message::*;
use vfio_user::server::Connection;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Counts an allocation, unless the process's main thread makes it: that is the test harness's (its
/// report of a slow test, say), never the device's or the test's own.
fn count() {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    if unsafe { libc::gettid() != libc::getpid() } {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; counting is two system calls and an
// atomic add, none of which allocates.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as alloc.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: as alloc.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The transmit ring, larger than the burst, placed after the common layout in a larger memory.
const TX_RING_LEN: u32 = 1024;
const TX_RING_AT: u64 = MEM_BASE + (8 << 20);
const TX_BUFS_AT: u64 = MEM_BASE + (9 << 20);
/// Receive buffers handed back per doorbell.
const RX_BATCH: u32 = 16;
const LEN: usize = 1514;

/// A client's side of the socket: messages as a driver sends them.
struct Client {
    sock: UnixStream,
    id: u16,
    buf: Vec<u8>,
}

impl Client {
    fn send(&mut self, cmd: Command, flags: u32, payload: &[u8]) {
        self.buf.clear();
        self.id = self.id.wrapping_add(1);
        let size = (HEADER_SIZE + payload.len()) as u32;
        Header { msg_id: self.id, command: cmd as u16, size, flags, error: 0 }.emit(&mut self.buf);
        self.buf.extend_from_slice(payload);
        self.sock.write_all(&self.buf).unwrap();
    }

    /// A posted 32-bit register write (as the driver's doorbells).
    fn write32(&mut self, reg: u32, val: u32) {
        let mut p = [0u8; RegionAccess::LEN + 4];
        p[..8].copy_from_slice(&u64::from(reg).to_le_bytes());
        p[12..16].copy_from_slice(&4u32.to_le_bytes());
        p[16..].copy_from_slice(&val.to_le_bytes());
        self.send(Command::RegionWrite, FLAG_NO_REPLY, &p);
    }

    /// Reads the reply the server wrote, of `len` bytes; its header must not say error.
    fn reply(&mut self, len: usize) -> [u8; 64] {
        let mut r = [0u8; 64];
        self.sock.read_exact(&mut r[..len]).unwrap();
        let h = Header::parse(&r).unwrap();
        assert!(h.is_reply() && h.flags & FLAG_ERROR == 0, "{h:?}");
        r
    }
}

/// Frame `seq`: to the card's own address, the sequence number in bytes 14..22, then a pattern.
fn fill_frame(f: &mut [u8; LEN], seq: u64) {
    f[..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x88, 0xB5]);
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[22..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
}

/// Over the loopback wire, bursts of 384 frames: more than a pool of 256 buffers holds, fewer than the
/// loopback queue's 512; they wait in the wire and the FIFO for buffers. Over a UDP socket that sends to
/// itself (a wire with a descriptor, which the data path watches and stops watching every round), bursts of
/// 16, which the socket's buffer holds while they wait. Bursts of 8 TSO sends of 44 segments each, with two
/// plain frames after each send: over a wire with virtio-net headers (each send leaves whole and is cut on
/// the way in), and over the loopback wire (the transmit engine cuts them).
#[test]
fn a_steady_flow_through_the_device_allocates_nothing() {
    // The count sees this thread (not the harness's main thread), so a zero below is a real one.
    let start = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(vec![0u8; 64]));
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > start, "the allocation count does not see the test's thread");
    let loopback = Box::new(nic_device::backend::Loopback::default());
    let (allocated, frames, messages) = flow(loopback, 384);
    assert_eq!(allocated, 0, "loopback: {allocated} allocations over {frames} frames and {messages} messages");
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dgram = nic_device::backend::open(&format!("dgram:udp:127.0.0.1:{port}:127.0.0.1:{port}")).unwrap();
    let (allocated, frames, messages) = flow(dgram, 16);
    assert_eq!(allocated, 0, "dgram: {allocated} allocations over {frames} frames and {messages} messages");
    let vnet = VnetWire { q: VecDeque::with_capacity(64), pool: FramePool::default().with_big(8, nic_device::gso::MAX_GSO_FRAME) };
    let (allocated, frames, messages) = tso_flow(Box::new(vnet), true);
    assert_eq!(allocated, 0, "TSO, GSO frames: {allocated} allocations over {frames} frames and {messages} messages");
    let loopback = Box::new(nic_device::backend::Loopback::default());
    let (allocated, frames, messages) = tso_flow(loopback, false);
    assert_eq!(allocated, 0, "TSO cut by the card: {allocated} allocations over {frames} frames and {messages} messages");
}

/// Bursts after the warm-up, over which allocations are counted.
const BURSTS: u32 = 16;
/// Bursts before it.
const WARM_UP: u32 = 4;

/// The allocations over `BURSTS` bursts after `WARM_UP` (pools, queues and buffers reach their steady
/// size).
fn measure(rig: &mut Rig, run_burst: &mut dyn FnMut(&mut Rig)) -> u64 {
    for _ in 0..WARM_UP {
        run_burst(rig);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..BURSTS {
        run_burst(rig);
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// The whole device over `backend`, with a client on its socket.
struct Rig {
    nic: Arc<Mutex<nic_device::nic::Nic>>,
    dp: DataPath,
    dev: NicServer,
    conn: Connection,
    c: Client,
    tdt: u32,
    rdt: u32,
    rx_next: u32,
}

impl Rig {
    fn new(backend: Box<dyn Backend>) -> Rig {
        let mut n = nic();
        n.dma = nic_device::dma::testing::space(MEM_BASE, 16 << 20);
        setup_tx(&mut n);
        n.mmio_write(TDBAL0, TX_RING_AT as u32);
        n.mmio_write(TDLEN0, TX_RING_LEN * 16);
        setup_rx(&mut n, false, false);
        // The receive ring handed over empty: the client gives buffers by doorbell.
        n.mmio_write(RDT0, 0);
        let nic = Arc::new(Mutex::new(n));
        let dp = DataPath::start(nic.clone(), backend, None, RxOverflow::Pause).unwrap();
        let dev = NicServer::new(nic.clone(), dp.kick(DoorbellMode::Inline));
        let (client, server) = UnixStream::pair().unwrap();
        let conn = Connection::new(server).unwrap();
        let c = Client { sock: client, id: 0, buf: Vec::with_capacity(256) };
        let mut rig = Rig { nic, dp, dev, conn, c, tdt: 0, rdt: 0, rx_next: 0 };
        let mut v = Vec::new();
        Version { major: 0, minor: 0, capabilities: String::new() }.emit(&mut v);
        rig.c.send(Command::Version, 0, &v);
        rig.serve();
        let mut r = [0u8; 4096];
        let got = rig.c.sock.read(&mut r).unwrap();
        assert!(Header::parse(&r[..got]).unwrap().is_reply());
        rig
    }

    /// The server's loop: the client's messages, then the rounds they started.
    fn serve(&mut self) {
        self.conn.on_event(&mut self.dev, false).unwrap();
        while self.dev.after_requests() {
            self.conn.on_event(&mut self.dev, false).unwrap();
        }
    }

    /// Writes the transmit descriptor at the tail and moves the tail past it (the doorbell is separate).
    fn queue_tx(&mut self, addr: u64, lower: u32, upper: u32) {
        let d = TX_RING_AT + u64::from(self.tdt) * 16;
        let g = lock(&self.nic);
        w64(&g, d, addr);
        w64(&g, d + 8, u64::from(lower) | u64::from(upper) << 32);
        self.tdt = (self.tdt + 1) % TX_RING_LEN;
    }

    /// Hands `RX_BATCH` receive buffers back with their doorbell, asks for STATUS, and serves.
    fn give_rx_and_read(&mut self) {
        {
            let g = lock(&self.nic);
            for _ in 0..RX_BATCH {
                w64(&g, RX_RING + u64::from(self.rdt) * 16 + 8, 0);
                self.rdt = (self.rdt + 1) % RING_LEN;
            }
        }
        self.c.write32(RDT0, self.rdt);
        let mut p = [0u8; RegionAccess::LEN];
        p[..8].copy_from_slice(&u64::from(STATUS).to_le_bytes());
        p[12..16].copy_from_slice(&4u32.to_le_bytes());
        self.c.send(Command::RegionRead, 0, &p);
        self.serve();
        let reply = self.c.reply(HEADER_SIZE + RegionAccess::LEN + 4);
        let a = RegionAccess::parse(&reply[HEADER_SIZE..]).unwrap();
        assert_eq!((a.offset, a.count), (u64::from(STATUS), 4), "the read's reply");
    }

    /// The next received frame's descriptor, copied into `back` (its length returned). The round may run on
    /// the data path thread, if it held the data path when the doorbell came: waits for DD.
    fn next_rx(&mut self, back: &mut [u8]) -> ([u8; 16], usize) {
        let t0 = std::time::Instant::now();
        let d = loop {
            let d = rx_desc(&lock(&self.nic), u64::from(self.rx_next));
            if d[12] & RXD_STAT_DD as u8 != 0 {
                break d;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "descriptor {} never written back", self.rx_next);
            std::thread::yield_now();
        };
        let len = usize::from(u16::from_le_bytes([d[8], d[9]])).min(back.len());
        lock(&self.nic).dma.read(RX_BUFS + u64::from(self.rx_next) * 0x1000, &mut back[..len]).unwrap();
        self.rx_next = (self.rx_next + 1) % RING_LEN;
        (d, len)
    }

    /// The messages of a burst of `frames` received: its doorbell, and a receive doorbell and a read per
    /// batch.
    fn messages(frames: u32) -> u32 {
        1 + 2 * frames.div_ceil(RX_BATCH)
    }
}

/// Bursts of `burst` frames through the whole device over `backend`: the allocations counted over
/// `BURSTS` of them after the warm-up, with the frames and messages they took.
fn flow(backend: Box<dyn Backend>, burst: u32) -> (u64, u32, u32) {
    let mut rig = Rig::new(backend);
    let (mut sent, mut received) = (0u64, 0u64);
    let mut frame = [0u8; LEN];
    let mut back = [0u8; LEN];
    // A burst of frames with no receive buffer given: they wait in the wire. Then buffers a batch at a
    // time, each batch's frames checked and a register read answered, until the burst is back.
    let mut run_burst = |rig: &mut Rig| {
        for _ in 0..burst {
            fill_frame(&mut frame, sent);
            let buf = TX_BUFS_AT + u64::from(rig.tdt) * 0x800;
            lock(&rig.nic).dma.write(buf, &frame).unwrap();
            rig.queue_tx(buf, legacy(LEN, TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS), 0);
            sent += 1;
        }
        rig.c.write32(TDT0, rig.tdt);
        rig.serve();
        while received < sent {
            rig.give_rx_and_read();
            for _ in 0..RX_BATCH {
                let (_, len) = rig.next_rx(&mut back);
                fill_frame(&mut frame, received);
                assert!(len == LEN && back == frame, "frame {received} corrupt");
                received += 1;
            }
        }
        assert_eq!(received, sent);
    };
    let allocated = measure(&mut rig, &mut run_burst);
    rig.dp.stop();
    (allocated, BURSTS * burst, BURSTS * Rig::messages(burst))
}

/// A wire with virtio-net headers, as a TAP in offload mode carries: what is sent comes back, GSO frames
/// and partial checksums included. Its buffers are kept as the TAP backend keeps them (a few GSO-sized
/// ones beside the wire-sized ones).
struct VnetWire {
    q: VecDeque<(Vec<u8>, VnetHdr)>,
    pool: FramePool,
}

impl Backend for VnetWire {
    fn fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
    fn generation(&self) -> u64 {
        0
    }
    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.q.pop_front().map(|(f, _)| f))
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        self.send_vnet(frame, None)
    }
    fn offloads(&self) -> bool {
        true
    }
    fn recv_vnet(&mut self) -> std::io::Result<Option<(Vec<u8>, Option<VnetHdr>)>> {
        Ok(self.q.pop_front().map(|(f, h)| (f, Some(h))))
    }
    fn send_vnet(&mut self, frame: &[u8], vnet: Option<&VnetHdr>) -> std::io::Result<bool> {
        let f = self.pool.copy_of(frame);
        self.q.push_back((f, vnet.copied().unwrap_or_default()));
        Ok(true)
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        self.pool.put(frame);
    }
    fn describe(&self) -> String {
        "vnet wire".into()
    }
}

/// TSO sends per burst, and the segments of each (64 KiB sends, as a Linux guest's).
const TSO_SENDS: u32 = 8;
const TSO_SEGMENTS: u32 = 44;
const MSS: usize = 1448;
const TSO_HDR: usize = 54;
const TSO_BUFS_AT: u64 = MEM_BASE + (11 << 20);
/// Plain frames sent after each TSO send (as a TCP sender's ACKs go between its sends), of `SMALL` bytes.
const SMALL_FRAMES: u32 = 2;
const SMALL: usize = 60;
const SMALL_AT: u64 = MEM_BASE + (12 << 20);

/// A TSO send as Linux prepares one (IPv4 total length and checksum zero, the TCP checksum field holding
/// the pseudo-header sum without the length), its payload numbered by `send`.
fn fill_tso(p: &mut [u8], send: u64) {
    p[..6].copy_from_slice(&MAC);
    p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p[14..34].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let seq = (send as u32).wrapping_mul((TSO_SEGMENTS as usize * MSS) as u32);
    p[34..36].copy_from_slice(&40000u16.to_be_bytes());
    p[36..38].copy_from_slice(&80u16.to_be_bytes());
    p[38..42].copy_from_slice(&seq.to_be_bytes());
    p[42..54].copy_from_slice(&[0, 0, 0, 5, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    // Pseudo-header: addresses and protocol, no length.
    let mut sum = 0u32;
    for w in p[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    sum += 6;
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    p[50..52].copy_from_slice(&(sum as u16).to_be_bytes());
    for (i, b) in p[TSO_HDR..].iter_mut().enumerate() {
        *b = (send as u8).wrapping_mul(31).wrapping_add((i % 251) as u8);
    }
}

/// Bursts of TSO sends through the whole device: each comes back as wire frames with good checksums, cut
/// by the transmit engine or (`gso`: a backend with virtio-net headers) sent whole as one GSO frame and cut
/// on the way in. The allocations counted over `BURSTS` bursts after the warm-up, with the frames and
/// messages they took.
fn tso_flow(backend: Box<dyn Backend>, gso: bool) -> (u64, u32, u32) {
    let mut rig = Rig::new(backend);
    let len = TSO_HDR + TSO_SEGMENTS as usize * MSS;
    let ctx = tso_ctx_ipv4_tcp(TSO_HDR, MSS, len - TSO_HDR);
    let mut pkt = vec![0u8; len];
    let mut want = vec![0u8; len];
    let mut back = [0u8; 2048];
    let (mut sent, mut received) = (0u64, 0u64);
    // Each send's segments, then its plain frames.
    let group = TSO_SEGMENTS + SMALL_FRAMES;
    let frames_per_burst = TSO_SENDS * group;
    // A malformed send (its context's MSS zero) starts each burst: it is dropped, and the large buffer it
    // was gathered in stays for the sends after it.
    let bad_ctx = nic_device::offload::TxContext { mss: 0, ..ctx };
    let mut run_burst = |rig: &mut Rig| {
        fill_tso(&mut pkt, sent);
        let bad_at = TSO_BUFS_AT + u64::from(TSO_SENDS) * 0x10000;
        lock(&rig.nic).dma.write(bad_at, &pkt).unwrap();
        ctx_desc(&lock(&rig.nic), 0, &bad_ctx);
        let mut raw = [0u8; 16];
        lock(&rig.nic).dma.read(TX_RING, &mut raw).unwrap();
        let (lo, up) = (u32::from_le_bytes(raw[8..12].try_into().unwrap()), u32::from_le_bytes(raw[12..16].try_into().unwrap()));
        rig.queue_tx(u64::from_le_bytes(raw[..8].try_into().unwrap()), lo, up);
        let (lo, up) = data_desc(len, TXD_CMD_TSE | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS, TXD_POPTS_IXSM | TXD_POPTS_TXSM);
        rig.queue_tx(bad_at, lo, up);
        for _ in 0..TSO_SENDS {
            fill_tso(&mut pkt, sent);
            let buf = TSO_BUFS_AT + (sent % u64::from(TSO_SENDS)) * 0x10000;
            lock(&rig.nic).dma.write(buf, &pkt).unwrap();
            ctx_desc(&lock(&rig.nic), 0, &ctx);
            // The context descriptor, written where the tail is.
            let g = lock(&rig.nic);
            let mut raw = [0u8; 16];
            g.dma.read(TX_RING, &mut raw).unwrap();
            drop(g);
            let (lo, up) = (u32::from_le_bytes(raw[8..12].try_into().unwrap()), u32::from_le_bytes(raw[12..16].try_into().unwrap()));
            rig.queue_tx(u64::from_le_bytes(raw[..8].try_into().unwrap()), lo, up);
            let (lo, up) = data_desc(len, TXD_CMD_TSE | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS, TXD_POPTS_IXSM | TXD_POPTS_TXSM);
            rig.queue_tx(buf, lo, up);
            for i in 0..SMALL_FRAMES {
                let at = SMALL_AT + (sent % u64::from(TSO_SENDS)) * 0x1000 + u64::from(i) * 0x100;
                let mut f = [0u8; SMALL];
                f[..6].copy_from_slice(&MAC);
                f[12..14].copy_from_slice(&[0x88, 0xB5]);
                f[14..22].copy_from_slice(&sent.to_be_bytes());
                f[22] = i as u8;
                lock(&rig.nic).dma.write(at, &f).unwrap();
                rig.queue_tx(at, legacy(SMALL, TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS), 0);
            }
            sent += 1;
        }
        rig.c.write32(TDT0, rig.tdt);
        rig.serve();
        let mut done = 0;
        while done < frames_per_burst {
            rig.give_rx_and_read();
            for _ in 0..RX_BATCH {
                let (seg, k) = (received / u64::from(group), (received % u64::from(group)) as usize);
                let (d, n) = rig.next_rx(&mut back);
                if k >= TSO_SEGMENTS as usize {
                    let i = k - TSO_SEGMENTS as usize;
                    assert_eq!(n, SMALL, "plain frame {i} after send {seg}");
                    assert_eq!((&back[14..22], back[22]), (&seg.to_be_bytes()[..], i as u8), "plain frame {i} after send {seg}");
                    received += 1;
                    done += 1;
                    continue;
                }
                assert_eq!(n, TSO_HDR + MSS, "segment {k} of send {seg}");
                let (status, errors) = (d[12], d[13]);
                assert_eq!(status & (RXD_STAT_IPCS | RXD_STAT_TCPCS) as u8, (RXD_STAT_IPCS | RXD_STAT_TCPCS) as u8, "checksums checked");
                assert_eq!(errors, 0, "segment {k} of send {seg}: checksum errors");
                fill_tso(&mut want, seg);
                assert!(back[TSO_HDR..n] == want[TSO_HDR + k * MSS..TSO_HDR + (k + 1) * MSS], "segment {k} of send {seg}: payload");
                received += 1;
                done += 1;
            }
        }
    };
    let allocated = measure(&mut rig, &mut run_burst);
    let m = &lock(&rig.nic).metrics;
    let sends = u64::from((WARM_UP + BURSTS) * TSO_SENDS);
    let (tx_gso, rx_gso, tso) =
        (m.tx_gso_frames.load(Ordering::Relaxed), m.rx_gso_frames.load(Ordering::Relaxed), m.tx_tso_packets.load(Ordering::Relaxed));
    assert_eq!(m.tx_malformed.load(Ordering::Relaxed), u64::from(WARM_UP + BURSTS), "one malformed send dropped per burst");
    if gso {
        assert_eq!((tx_gso, rx_gso), (sends, sends), "every send crossed as one GSO frame");
    } else {
        assert_eq!((tso, tx_gso, rx_gso), (sends, 0, 0), "every send cut by the transmit engine");
    }
    rig.dp.stop();
    (allocated, BURSTS * frames_per_burst, BURSTS * Rig::messages(frames_per_burst))
}
