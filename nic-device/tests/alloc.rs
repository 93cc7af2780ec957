//! A steady flow through the whole device allocates nothing per frame or per message: vfio-user messages
//! read and answered by the server's connection (tail doorbells posted, a STATUS read answered), the
//! doorbells' rounds run by the data path (transmit engine, loopback backend, receive engine). Every
//! allocation in this test binary is counted, on every thread: the data path thread included.

mod common;

use common::*;
use nic_device::datapath::{DataPath, DoorbellMode, RxOverflow};
use nic_device::nic::lock;
use nic_device::regs::*;
use nic_device::vfio::NicServer;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vfio_user::message::*;
use vfio_user::server::Connection;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; counting is one atomic add, which
// does not allocate.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as alloc.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as alloc.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Frames per burst: more than a pool of 256 buffers holds, fewer than the loopback queue's 512.
const BURST: u32 = 384;
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

#[test]
fn a_steady_flow_through_the_device_allocates_nothing() {
    let mut n = nic();
    n.dma = nic_device::dma::testing::space(MEM_BASE, 16 << 20);
    setup_tx(&mut n);
    n.mmio_write(TDBAL0, TX_RING_AT as u32);
    n.mmio_write(TDLEN0, TX_RING_LEN * 16);
    setup_rx(&mut n, false, false);
    // The receive ring handed over empty: the client gives buffers by doorbell.
    n.mmio_write(RDT0, 0);
    let nic = Arc::new(Mutex::new(n));
    let mut dp = DataPath::start(nic.clone(), Box::new(nic_device::backend::Loopback::default()), None, RxOverflow::Pause).unwrap();
    let mut dev = NicServer::new(nic.clone(), dp.kick(DoorbellMode::Inline));
    let (client, server) = UnixStream::pair().unwrap();
    let mut conn = Connection::new(server).unwrap();
    let mut c = Client { sock: client, id: 0, buf: Vec::with_capacity(256) };
    let mut serve = |dev: &mut NicServer| {
        conn.on_event(dev, false).unwrap();
        while dev.after_requests() {
            conn.on_event(dev, false).unwrap();
        }
    };
    let mut v = Vec::new();
    Version { major: 0, minor: 0, capabilities: String::new() }.emit(&mut v);
    c.send(Command::Version, 0, &v);
    serve(&mut dev);
    let mut r = [0u8; 4096];
    let got = c.sock.read(&mut r).unwrap();
    assert!(Header::parse(&r[..got]).unwrap().is_reply());

    let (mut tdt, mut rdt, mut rx_next) = (0u32, 0u32, 0u32);
    let (mut sent, mut received) = (0u64, 0u64);
    let mut frame = [0u8; LEN];
    let mut back = [0u8; LEN];
    // A burst of frames with no receive buffer given: they wait in the loopback wire. Then buffers a batch
    // at a time, each batch's frames checked and a register read answered, until the burst is back.
    let mut burst = |c: &mut Client, dev: &mut NicServer, serve: &mut dyn FnMut(&mut NicServer)| {
        {
            let g = lock(&nic);
            for _ in 0..BURST {
                fill_frame(&mut frame, sent);
                let buf = TX_BUFS_AT + u64::from(tdt) * 0x800;
                g.dma.write(buf, &frame).unwrap();
                let d = TX_RING_AT + u64::from(tdt) * 16;
                w64(&g, d, buf);
                w64(&g, d + 8, u64::from(legacy(LEN, TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS)));
                tdt = (tdt + 1) % TX_RING_LEN;
                sent += 1;
            }
        }
        c.write32(TDT0, tdt);
        serve(dev);
        while received < sent {
            {
                let g = lock(&nic);
                for _ in 0..RX_BATCH {
                    w64(&g, RX_RING + u64::from(rdt) * 16 + 8, 0);
                    rdt = (rdt + 1) % RING_LEN;
                }
            }
            c.write32(RDT0, rdt);
            let mut p = [0u8; RegionAccess::LEN];
            p[..8].copy_from_slice(&u64::from(STATUS).to_le_bytes());
            p[12..16].copy_from_slice(&4u32.to_le_bytes());
            c.send(Command::RegionRead, 0, &p);
            serve(dev);
            let reply = c.reply(HEADER_SIZE + RegionAccess::LEN + 4);
            let a = RegionAccess::parse(&reply[HEADER_SIZE..]).unwrap();
            assert_eq!((a.offset, a.count), (u64::from(STATUS), 4), "the read's reply");
            // The batch's frames are back, in order and intact (the round may run on the data path
            // thread, if it held the data path when the doorbell came).
            let t0 = std::time::Instant::now();
            for _ in 0..RX_BATCH {
                let d = loop {
                    let d = rx_desc(&lock(&nic), u64::from(rx_next));
                    if d[12] & RXD_STAT_DD as u8 != 0 {
                        break d;
                    }
                    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "frame {received} not received");
                    std::thread::yield_now();
                };
                assert_eq!(u16::from_le_bytes([d[8], d[9]]) as usize, LEN);
                lock(&nic).dma.read(RX_BUFS + u64::from(rx_next) * 0x1000, &mut back).unwrap();
                fill_frame(&mut frame, received);
                assert!(back == frame, "frame {received} corrupt");
                rx_next = (rx_next + 1) % RING_LEN;
                received += 1;
            }
        }
        assert_eq!(received, sent);
    };
    // Warm-up: pools, queues and buffers reach their steady size.
    for _ in 0..4 {
        burst(&mut c, &mut dev, &mut serve);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    const BURSTS: u32 = 16;
    for _ in 0..BURSTS {
        burst(&mut c, &mut dev, &mut serve);
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    // Per burst: its doorbell, and a receive doorbell and a read per batch.
    let messages = BURSTS * (1 + 2 * BURST / RX_BATCH);
    assert_eq!(allocated, 0, "{allocated} allocations over {} frames and {messages} messages", BURSTS * BURST);
    dp.stop();
}
