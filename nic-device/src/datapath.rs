//! The data path thread: moves frames between the TX/RX rings and the backend. Doorbells wake it through a
//! mio Waker; it never runs on the vfio-user thread.

use crate::backend::Backend;
use crate::gso;
use crate::tx::TxFrame;

use crate::metrics::Metrics;
use crate::nic::lock;
use crate::nic::Nic;
use crate::pcap::PcapWriter;
use crate::trace::{self, Tracer};
use log::{debug, error, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKE: Token = Token(0);
const TX_QUEUE_DEPTH: usize = 256;
const TX_BUDGET: usize = 256;
const RX_BUDGET: usize = 128;

/// What a backend's full receive side does: wait (flow control) or drop and count (a wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOverflow {
    Pause,
    Drop,
}

pub struct DataPath {
    pub waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DataPath {
    pub fn start(
        nic: Arc<Mutex<Nic>>,
        backend: Box<dyn Backend>,
        pcap: Option<PcapWriter>,
        overflow: RxOverflow,
    ) -> std::io::Result<DataPath> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new().name("nic-datapath".into()).spawn(move || {
            let (metrics, trace) = {
                let mut n = lock(&nic);
                n.lossless_rx = overflow == RxOverflow::Pause;
                n.gso_out = backend.offloads();
                (n.metrics.clone(), n.trace.clone())
            };
            let mut w = Worker {
                nic,
                metrics,
                trace,
                backend,
                pcap,
                poll,
                stop: s2,
                out: VecDeque::new(),
                rx_pending: VecDeque::new(),
                rx_batch: Vec::with_capacity(RX_BUDGET),
                tx_free: Vec::with_capacity(TX_QUEUE_DEPTH),
                registered: Vec::new(),
                gen: u64::MAX,
                overflow,
                carrier: None,
            };
            w.run();
        })?;
        Ok(DataPath { waker, stop, thread: Some(thread) })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DataPath {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    nic: Arc<Mutex<Nic>>,
    metrics: Arc<Metrics>,
    trace: Arc<Tracer>,
    backend: Box<dyn Backend>,
    pcap: Option<PcapWriter>,
    poll: Poll,
    stop: Arc<AtomicBool>,
    out: VecDeque<TxFrame>,
    /// Wire frames cut from a GSO frame that the card has not taken yet.
    rx_pending: VecDeque<Vec<u8>>,
    /// One round's received frames (and whether each was captured already), reused round to round.
    rx_batch: Vec<(Vec<u8>, bool)>,
    /// Buffers of frames the backend sent, on their way back to the transmit engines.
    tx_free: Vec<Vec<u8>>,
    registered: Vec<i32>,
    gen: u64,
    overflow: RxOverflow,
    carrier: Option<bool>,
}

impl Worker {
    fn reregister(&mut self) {
        if self.gen == self.backend.generation() {
            return;
        }
        for fd in self.registered.drain(..) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        for (i, fd) in self.backend.fds().into_iter().enumerate() {
            if self.poll.registry().register(&mut SourceFd(&fd), Token(i + 1), Interest::READABLE | Interest::WRITABLE).is_ok() {
                self.registered.push(fd);
            }
        }
        self.gen = self.backend.generation();
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(16);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            // A bug in the model must not take the device process (and the guest's NIC) down with it: the
            // round is abandoned, counted and logged, and the next one starts from the register file again.
            let round = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let svc = self.backend.service();
                self.reregister();
                self.sync_carrier();
                while self.work() {}
                svc
            }));
            let svc = match round {
                Ok(svc) => svc,
                Err(_) => {
                    let n = self.metrics.datapath_panics.fetch_add(1, Ordering::Relaxed) + 1;
                    error!("data path: internal error #{n} caught; frames of this round dropped");
                    self.out.clear();
                    self.rx_pending.clear();
                    // Wait before the next round so that a state that keeps failing cannot spin the thread.
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
            };
            let now = Instant::now();
            let deadline = [lock(&self.nic).next_deadline(), svc].into_iter().flatten().min();
            let timeout = deadline.map(|d| d.saturating_duration_since(now)).or(Some(Duration::from_millis(500)));
            // epoll counts in whole milliseconds; a timer due sooner (an interrupt delay of a few microseconds)
            // is slept for exactly instead, and the next round picks up whatever arrived meanwhile.
            if let Some(t) = timeout.filter(|t| *t < Duration::from_millis(1)) {
                std::thread::sleep(t);
                continue;
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    warn!("datapath poll: {e}");
                }
            }
        }
        if let Some(p) = self.pcap.as_mut() {
            let _ = p.flush();
        }
    }

    /// A frame from an offloading backend: captured as it came, then cut into the wire frames it stands for
    /// (queued in `rx_pending`); a header that does not fit the frame drops it, counted.
    fn take_offloaded(&mut self, f: Vec<u8>, h: &nic_tap::VnetHdr) {
        if let Some(p) = self.pcap.as_mut() {
            let _ = p.write(&f);
        }
        self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("in", &f));
        let gso = h.is_gso();
        let partial = h.flags & nic_tap::VnetHdr::F_NEEDS_CSUM != 0;
        match gso::to_wire(f, h) {
            Ok(segs) => {
                if gso {
                    Metrics::inc(&self.metrics.rx_gso_frames);
                    self.metrics.rx_gso_segments.fetch_add(segs.len() as u64, Ordering::Relaxed);
                } else if partial {
                    Metrics::inc(&self.metrics.rx_csum_completed);
                }
                self.rx_pending.extend(segs);
            }
            Err(e) => {
                debug!("backend frame refused: {e} ({h:?})");
                Metrics::inc(&self.metrics.rx_gso_errors);
            }
        }
    }

    fn sync_carrier(&mut self) {
        let c = self.backend.carrier();
        if self.carrier != Some(c) {
            self.carrier = Some(c);
            lock(&self.nic).set_backend_carrier(c);
        }
    }

    /// One round of TX, backend output, RX and timers. Returns whether anything moved.
    fn work(&mut self) -> bool {
        let mut progress = false;
        // Transmit: fetch descriptors while our output queue has room.
        if self.out.len() < TX_QUEUE_DEPTH {
            let mut nic = lock(&self.nic);
            progress |= nic.apply_doorbells();
            nic.recycle_tx(&mut self.tx_free);
            // One clock read for the round's timers and moderation, not one per frame.
            nic.round_now = Some(Instant::now());
            for q in 0..2 {
                if nic.tx_pending(q) {
                    let out = &mut self.out;
                    let p = nic.process_tx(q, TX_BUDGET, &mut |f| out.push_back(f));
                    progress |= p.descriptors > 0;
                }
            }
            // PAUSE frames the card generated go out ahead of the data.
            for f in nic.control_out.drain(..).rev() {
                self.out.push_front(TxFrame::wire(f));
            }
            // Loopback (PHY or MAC): the frames go to the card's own receive side, never to the wire.
            if nic.loopback() {
                while let Some(f) = self.out.pop_front() {
                    nic.receive(&f.data);
                    keep_sent(&mut self.tx_free, f.data);
                    progress = true;
                }
            }
            nic.round_now = None;
        }
        // Hand frames to the backend until it refuses one.
        while let Some(f) = self.out.front() {
            match self.backend.send_vnet(&f.data, f.vnet.as_ref()) {
                Ok(true) => {
                    if let Some(p) = self.pcap.as_mut() {
                        let _ = p.write(&f.data);
                    }
                    self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("out", &f.data));
                    if let Some(f) = self.out.pop_front() {
                        keep_sent(&mut self.tx_free, f.data);
                    }
                    progress = true;
                }
                Ok(false) => break,
                Err(e) => {
                    debug!("backend send: {e}");
                    Metrics::inc(&self.metrics.backend_errors);
                    self.out.pop_front();
                }
            }
        }
        let _ = self.backend.flush();
        // Receive. With flow control, take only what the receive FIFO could hold if no descriptor is free.
        let mut frames = std::mem::take(&mut self.rx_batch);
        let (mut room, max_frame) = {
            let nic = lock(&self.nic);
            (if self.overflow == RxOverflow::Drop { usize::MAX } else { nic.rx_room() }, nic.max_rx_frame())
        };
        while frames.len() < RX_BUDGET && room >= max_frame {
            // Frames cut from a GSO frame were captured whole when they came; wire frames are captured here.
            let (f, captured) = match self.rx_pending.pop_front() {
                Some(f) => (f, true),
                None => match self.backend.recv_vnet() {
                    Ok(Some((f, None))) => (f, false),
                    Ok(Some((f, Some(h)))) => {
                        self.take_offloaded(f, &h);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!("backend recv: {e}");
                        break;
                    }
                },
            };
            room = room.saturating_sub(f.len().max(60));
            frames.push((f, captured));
        }
        let mut nic = lock(&self.nic);
        nic.apply_doorbells();
        let now = Instant::now();
        nic.round_now = Some(now);
        progress |= nic.drain_rx_fifo() > 0;
        for (f, captured) in frames.drain(..) {
            if !captured {
                if let Some(p) = self.pcap.as_mut() {
                    let _ = p.write(&f);
                }
                self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("in", &f));
            }
            nic.receive(&f);
            self.backend.recycle(f);
            progress = true;
        }
        self.rx_batch = frames;
        nic.on_timer(now);
        nic.round_now = None;
        progress
    }
}

/// Keeps the buffer of a frame the backend has sent, for the transmit engines (`Nic::recycle_tx`).
fn keep_sent(free: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if free.len() < TX_QUEUE_DEPTH {
        free.push(buf);
    }
}
