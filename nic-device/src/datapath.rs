//! The data path: moves frames between the TX/RX rings and the backend. Its own thread does the work while
//! frames flow and sleeps in a mio poll when none do; a transmit doorbell that finds it asleep runs the
//! round at once on the thread that read the doorbell (`Kick`), as a card's DMA engine starts on the write
//! itself, instead of paying a thread wake-up before the first frame leaves.

use crate::backend::Backend;
use crate::doorbell::Doorbells;
use crate::gso;
use crate::tx::TxFrame;

use crate::metrics::Metrics;
use crate::nic::lock;
use crate::nic::Nic;
use crate::pcap::PcapWriter;
use crate::pool::FramePool;
use crate::trace::{self, Tracer};
use log::{debug, error, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKE: Token = Token(0);
const TX_QUEUE_DEPTH: usize = 256;
const TX_BUDGET: usize = 256;
const RX_BUDGET: usize = 128;
/// How long a doorbell's round may run on the vfio-user thread: a round with more to do after this is
/// handed to the data path thread, so that a flood of frames cannot keep that thread from its other work
/// (signals, a new client). About a burst of a full ring of full-sized frames on a slow machine.
const INLINE_LIMIT: Duration = Duration::from_micros(200);
/// How long passes run back to back on the vfio-user thread before it polls for what came meanwhile.
const INLINE_SLICE: Duration = Duration::from_micros(50);
/// The longest sleep with no timer due: the backend's carrier and service are looked at this often.
const IDLE_SLEEP: Duration = Duration::from_millis(500);

/// What a backend's full receive side does: wait (flow control) or drop and count (a wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOverflow {
    Pause,
    Drop,
}

/// Where a transmit doorbell's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellMode {
    /// On the vfio-user thread when the data path is asleep: no wake-up before the frame.
    Inline,
    /// Always on the data path thread, which the doorbell wakes.
    Wake,
}

pub struct DataPath {
    pub waker: Arc<Waker>,
    worker: Arc<Mutex<Worker>>,
    /// Shared with the worker and every `Kick`: a busy-polling thread reads the backend.
    spinning: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The data path's state, shared by its thread and by doorbells that run a round inline.
fn lock_worker(w: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    // A round catches its own panics, so the lock is not poisoned by one; should it be, the state is
    // still the data path's and the next round starts from the register file.
    w.lock().unwrap_or_else(PoisonError::into_inner)
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
        let w = Worker::new(nic, backend, pcap, overflow, poll.registry().try_clone()?);
        let spinning = w.spinning.clone();
        let worker = Arc::new(Mutex::new(w));
        let (w2, s2) = (worker.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("nic-datapath".into()).spawn(move || run(&w2, poll, &s2))?;
        Ok(DataPath { waker, worker, spinning, stop, thread: Some(thread) })
    }

    /// What the vfio-user thread starts the data path with.
    pub fn kick(&self, mode: DoorbellMode) -> Kick {
        Kick {
            waker: self.waker.clone(),
            worker: (mode == DoorbellMode::Inline).then(|| self.worker.clone()),
            spinning: self.spinning.clone(),
        }
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

/// What a busy-polling pass (`Kick::spin_pass`) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinPass {
    /// It moved frames, doorbells or timers.
    Moved,
    /// Nothing to do.
    Idle,
    /// The data path thread was in a round of its own: traffic is moving, without this pass.
    Busy,
}

/// How register traffic starts the data path.
#[derive(Clone)]
pub struct Kick {
    waker: Arc<Waker>,
    /// With inline doorbells: the data path's state, to run a round on when its thread is asleep.
    worker: Option<Arc<Mutex<Worker>>>,
    /// A busy-polling thread reads the backend (`spin_pass`); the data path thread does not wait on it.
    spinning: Arc<AtomicBool>,
}

impl Kick {
    /// A kick that only wakes the thread behind `waker` (a device with no data path of ours around it).
    pub fn waker_only(waker: Arc<Waker>) -> Kick {
        Kick { waker, worker: None, spinning: Arc::default() }
    }

    /// Wakes the data path thread, which looks at the rings and timers in its next round.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Whether doorbells may run their round on the caller's thread (`DoorbellMode::Inline`).
    pub fn inline(&self) -> bool {
        self.worker.is_some()
    }

    /// One pass of a busy-polling device (`--busy-poll`) on the caller's thread, with no doorbell needed:
    /// the rings, the backend and the timers are looked at without anyone being woken, and the data path
    /// thread leaves the backend's descriptors to the caller until `stop_spinning`. Does nothing while the
    /// data path thread holds the data path (`SpinPass::Busy`: it is moving frames), or with doorbells
    /// that wake it (`DoorbellMode::Wake`).
    pub fn spin_pass(&self) -> SpinPass {
        let Some(w) = &self.worker else { return SpinPass::Idle };
        let mut g = match w.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return SpinPass::Busy,
        };
        self.spinning.store(true, Ordering::SeqCst);
        // Timers fall due in these passes too: the data path thread is woken only for a failed one.
        let (moved, wake) = match g.pass(true) {
            Ok(Step::Moved) => (true, false),
            Ok(Step::Idle(_)) => (false, false),
            Err(()) => (false, true),
        };
        if moved {
            Metrics::inc(&g.metrics.busy_poll_passes);
        }
        drop(g);
        if wake {
            let _ = self.waker.wake();
        }
        if moved {
            SpinPass::Moved
        } else {
            SpinPass::Idle
        }
    }

    /// The busy-polling thread is going to sleep: the data path thread waits on the backend again, from
    /// the round this wakes it for (which also looks at whatever came while nothing watched). Does not
    /// wait for the data path, which may be busy with a long round.
    pub fn stop_spinning(&self) {
        self.spinning.store(false, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// One pass of a doorbell's round on the caller's thread (a transmit doorbell, or a receive one with
    /// frames waiting), `first` for the doorbell's first: passes back to back for `INLINE_SLICE`. The caller
    /// (the vfio-user thread) polls its client, signals and listener between slices, so that none waits
    /// behind frames. `Pass::More`: call again.
    /// `Pass::Done`: the round is over, or it was handed to the data path thread, which is woken when the
    /// round failed, when its time (`INLINE_LIMIT`) ran out with frames still moving, when the thread holds
    /// the data path (it is busy: the doorbell is taken in its round), or when a timer falls due before
    /// its sleep ends.
    pub fn pass(&self, first: bool, since: Instant) -> Pass {
        let Some(w) = &self.worker else {
            let _ = self.waker.wake();
            return Pass::Done;
        };
        let mut g = match w.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let _ = self.waker.wake();
                return Pass::Done;
            }
        };
        if first {
            Metrics::inc(&g.metrics.inline_rounds);
        }
        // Passes back to back for a slice of `INLINE_SLICE`, then the caller's requests. Past
        // `INLINE_LIMIT`, one more pass: if that one still moves frames, the round is a flood and goes to
        // the data path thread; a single exchange whose pass was slow (a reply drawn from the backend in
        // the same pass) ends here.
        let slice = Instant::now();
        let mut first = first;
        let mut over = false;
        let wake = loop {
            match g.pass(first) {
                Ok(Step::Moved) if over => break true,
                Ok(Step::Moved) if since.elapsed() >= INLINE_LIMIT => (over, first) = (true, false),
                Ok(Step::Moved) if slice.elapsed() >= INLINE_SLICE => return Pass::More,
                Ok(Step::Moved) => first = false,
                Err(()) => break true,
                Ok(Step::Idle(due)) => break due.is_some_and(|d| g.sleep_until.is_none_or(|s| d < s)),
            }
        };
        // The round is over: the data path thread watches the backend again.
        let watch = g.sleep_watch();
        g.set_watch(watch);
        drop(g);
        if wake {
            let _ = self.waker.wake();
        }
        Pass::Done
    }
}

/// What a doorbell's pass on the caller's thread left (`Kick::pass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    More,
    Done,
}

/// What the data path thread's poll watches a backend's descriptors for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Nothing: another thread's round reads the backend (`Kick::pass`), or a busy-polling thread does.
    Quiet,
    /// Frames to read.
    Frames,
    /// Frames, and room for the frames the backend refused.
    FramesAndRoom,
}

/// What one pass of `work` did.
enum Step {
    /// Frames or doorbells moved: another pass may find more.
    Moved,
    /// Nothing moved; the next timer due.
    Idle(Option<Instant>),
}

/// The data path thread: rounds until nothing moves, then a sleep until the next timer, a doorbell's
/// wake or the backend.
fn run(worker: &Mutex<Worker>, mut poll: Poll, stop: &AtomicBool) {
    let mut events = Events::with_capacity(16);
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        let due = {
            let mut w = lock_worker(worker);
            let due = w.round();
            w.sleep_until = Some(due.ok().flatten().map_or(now + IDLE_SLEEP, |d| d.min(now + IDLE_SLEEP)));
            due
        };
        let Ok(due) = due else {
            // Wait before the next round so that a state that keeps failing cannot spin the thread.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let timeout = due.map(|d| d.saturating_duration_since(now)).unwrap_or(IDLE_SLEEP).min(IDLE_SLEEP);
        // epoll counts in whole milliseconds; a timer due sooner (an interrupt delay of a few microseconds)
        // is slept for exactly instead, and the next round picks up whatever arrived meanwhile.
        if timeout < Duration::from_millis(1) {
            std::thread::sleep(timeout);
            continue;
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                warn!("datapath poll: {e}");
            }
        }
    }
    if let Some(p) = lock_worker(worker).pcap.as_mut() {
        let _ = p.flush();
    }
}

/// Where a received frame's buffer came from, and so where it goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxSrc {
    /// Read from the backend as the wire gave it; captured when the card takes it.
    Wire,
    /// From an offloading backend, taken whole (its partial checksum completed); captured as it came.
    Whole,
    /// Cut from a GSO frame, in a buffer of `Worker::cut_pool`; the GSO frame was captured as it came.
    Cut,
}

struct Worker {
    nic: Arc<Mutex<Nic>>,
    metrics: Arc<Metrics>,
    trace: Arc<Tracer>,
    doorbells: Arc<Doorbells>,
    backend: Box<dyn Backend>,
    pcap: Option<PcapWriter>,
    registry: Registry,
    out: VecDeque<TxFrame>,
    /// The first frame of `out` is in the capture and the trace already (the backend refused it once).
    front_captured: bool,
    /// Frames from an offloading backend (captured as they came) that the card has not taken yet: wire
    /// frames cut from a GSO frame, and frames taken whole.
    rx_pending: VecDeque<(Vec<u8>, RxSrc)>,
    /// One round's received frames and where each came from, reused round to round.
    rx_batch: Vec<(Vec<u8>, RxSrc)>,
    /// A GSO frame's wire frames, between cutting and `rx_pending`.
    cut: Vec<Vec<u8>>,
    /// Buffers for the wire frames cut from GSO frames, back from the card once it took them.
    cut_pool: FramePool,
    /// Buffers of frames the backend sent, on their way back to the transmit engines.
    tx_free: Vec<Vec<u8>>,
    registered: Vec<i32>,
    gen: u64,
    /// Another thread busy-polls the backend (`Kick::spin_pass`): its descriptors are not watched here.
    spinning: Arc<AtomicBool>,
    /// What the data path thread's poll watches the backend's descriptors for.
    watch: Watch,
    /// The backend holds output it could not write yet (its last `flush`).
    unflushed: bool,
    overflow: RxOverflow,
    carrier: Option<bool>,
    /// When the data path thread's current sleep ends (it sleeps at most `IDLE_SLEEP`).
    sleep_until: Option<Instant>,
    /// The backend's next timer, as the doorbell round running on another thread found it (`pass`).
    inline_svc: Option<Instant>,
    /// The backend had nothing to read, and nothing was sent since that could have drawn a reply: the
    /// rest of the round does not ask again (a frame that comes meanwhile wakes the data path's poll).
    rx_drained: bool,
}

impl Worker {
    fn new(nic: Arc<Mutex<Nic>>, backend: Box<dyn Backend>, pcap: Option<PcapWriter>, overflow: RxOverflow, registry: Registry) -> Worker {
        let (metrics, trace, doorbells) = {
            let mut n = lock(&nic);
            n.lossless_rx = overflow == RxOverflow::Pause;
            n.gso_out = backend.offloads();
            (n.metrics.clone(), n.trace.clone(), n.doorbells.clone())
        };
        Worker {
            nic,
            metrics,
            trace,
            doorbells,
            backend,
            pcap,
            registry,
            out: VecDeque::new(),
            front_captured: false,
            rx_pending: VecDeque::new(),
            rx_batch: Vec::with_capacity(RX_BUDGET),
            cut: Vec::new(),
            cut_pool: FramePool::default(),
            tx_free: Vec::with_capacity(crate::nic::TX_SPARE_BUFFERS),
            registered: Vec::new(),
            gen: u64::MAX,
            spinning: Arc::default(),
            watch: Watch::Quiet,
            unflushed: false,
            overflow,
            carrier: None,
            sleep_until: None,
            inline_svc: None,
            rx_drained: false,
        }
    }

    /// Takes the backend's descriptors anew when it changed them (a new peer), watched as `sleep_watch` says.
    fn reregister(&mut self) {
        if self.gen == self.backend.generation() {
            return;
        }
        let watch = std::mem::replace(&mut self.watch, Watch::Quiet);
        for fd in self.registered.drain(..) {
            if watch != Watch::Quiet {
                let _ = self.registry.deregister(&mut SourceFd(&fd));
            }
        }
        self.registered = self.backend.fds();
        self.set_watch(self.sleep_watch());
        self.gen = self.backend.generation();
    }

    /// Changes what the backend's descriptors are watched for. A registration reports the state it finds
    /// (it is edge-triggered, and a new or changed one starts with the present state): a frame that came
    /// while the backend was quiet is reported at once, and so is room, which is why room is watched only
    /// while frames wait for it.
    fn set_watch(&mut self, watch: Watch) {
        if self.watch == watch {
            return;
        }
        let interest = match watch {
            Watch::Quiet => None,
            Watch::Frames => Some(Interest::READABLE),
            Watch::FramesAndRoom => Some(Interest::READABLE | Interest::WRITABLE),
        };
        // In place (inline rounds change the watch twice each): nothing allocated.
        let (registry, old) = (&self.registry, self.watch);
        let mut kept = 0;
        self.registered.retain(|&fd| {
            let token = Token(kept + 1);
            let r = match (old, interest) {
                (_, None) => registry.deregister(&mut SourceFd(&fd)),
                (Watch::Quiet, Some(i)) => registry.register(&mut SourceFd(&fd), token, i),
                (_, Some(i)) => registry.reregister(&mut SourceFd(&fd), token, i),
            };
            let keep = match r {
                Ok(()) => true,
                // An fd that cannot be watched is left out, as at its first registration.
                Err(e) if old == Watch::Quiet => {
                    warn!("backend fd {fd} cannot be watched: {e}");
                    false
                }
                Err(e) => {
                    warn!("backend fd {fd}: its watch could not be changed: {e}");
                    true
                }
            };
            kept += usize::from(keep);
            keep
        });
        self.watch = watch;
    }

    /// What the backend is watched for while the data path thread sleeps: nothing while another thread busy
    /// polls it (`Kick::spin_pass`), otherwise frames, and room while frames (or output the backend holds)
    /// wait for it.
    fn sleep_watch(&self) -> Watch {
        if self.spinning.load(Ordering::SeqCst) {
            Watch::Quiet
        } else if self.out.is_empty() && !self.unflushed {
            Watch::Frames
        } else {
            Watch::FramesAndRoom
        }
    }

    /// What every round starts with: the backend's service (its next timer), its fds and carrier.
    fn begin(&mut self) -> Option<Instant> {
        let svc = self.backend.service();
        self.rx_drained = false;
        self.reregister();
        self.sync_carrier();
        svc
    }

    /// After a pass that moved nothing: receive tail writes wake the data path only while frames wait for
    /// descriptors, so say whether they do, then look once more for a doorbell rung before this was said.
    /// Returns whether one was.
    fn settle(&mut self) -> bool {
        let backlog = lock(&self.nic).rx_backlog();
        self.doorbells.set_rx_backlog(backlog);
        self.doorbells.any()
    }

    /// Catches a failure of the model: a bug in it must not take the device process (and the guest's
    /// NIC) down, so the round is abandoned, counted and logged, and the next one starts from the
    /// register file again.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut Worker) -> R) -> Result<R, ()> {
        std::panic::catch_unwind(AssertUnwindSafe(|| f(self))).map_err(|_| {
            let n = self.metrics.datapath_panics.fetch_add(1, Ordering::Relaxed) + 1;
            error!("data path: internal error #{n} caught; frames of this round dropped");
            self.out.clear();
            self.front_captured = false;
            self.rx_pending.clear();
            self.cut.clear();
        })
    }

    /// The data path thread's round: passes of `work` until nothing moves. Returns the next timer due
    /// (the card's or the backend's).
    fn round(&mut self) -> Result<Option<Instant>, ()> {
        Metrics::inc(&self.metrics.datapath_rounds);
        self.guarded(|w| {
            let svc = w.begin();
            loop {
                while w.work() {}
                if !w.settle() {
                    break;
                }
            }
            w.set_watch(w.sleep_watch());
            w.due(svc)
        })
    }

    /// The next timer due: the card's, or the backend's (`svc`).
    fn due(&self, svc: Option<Instant>) -> Option<Instant> {
        [lock(&self.nic).next_deadline(), svc].into_iter().flatten().min()
    }

    /// One pass of a doorbell's round on another thread (`Kick::pass`); `first` begins the round.
    fn pass(&mut self, first: bool) -> Result<Step, ()> {
        self.guarded(|w| {
            if first {
                w.inline_svc = w.begin();
            }
            // While this round runs, the replies its frames draw are read here: the data path thread,
            // asleep, is not woken for them.
            w.set_watch(Watch::Quiet);
            if w.work() || w.settle() {
                return Step::Moved;
            }
            Step::Idle(w.due(w.inline_svc))
        })
    }

    /// A frame from an offloading backend: captured as it came, then cut into the wire frames it stands for
    /// (queued in `rx_pending`); a header that does not fit the frame drops it, counted.
    fn take_offloaded(&mut self, f: Vec<u8>, h: &nic_tap::VnetHdr) {
        if let Some(p) = self.pcap.as_mut() {
            let _ = p.write(&f);
        }
        self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("in", &f));
        let partial = h.flags & nic_tap::VnetHdr::F_NEEDS_CSUM != 0;
        let mut f = f;
        // Nothing allocated per frame: the wire frames are cut into buffers the card handed back, the GSO
        // frame's own buffer goes back to the backend.
        let r = if h.is_gso() {
            let pool = &mut self.cut_pool;
            let r = gso::cut(&mut f, h, &mut || pool.take(), &mut self.cut).map(|n| {
                Metrics::inc(&self.metrics.rx_gso_frames);
                self.metrics.rx_gso_segments.fetch_add(n as u64, Ordering::Relaxed);
                self.rx_pending.extend(self.cut.drain(..).map(|s| (s, RxSrc::Cut)));
            });
            self.backend.recycle(f);
            r
        } else {
            match gso::complete(&mut f, h) {
                Ok(()) => {
                    if partial {
                        Metrics::inc(&self.metrics.rx_csum_completed);
                    }
                    self.rx_pending.push_back((f, RxSrc::Whole));
                    Ok(())
                }
                Err(e) => {
                    self.backend.recycle(f);
                    Err(e)
                }
            }
        };
        if let Err(e) = r {
            debug!("backend frame refused: {e} ({h:?})");
            Metrics::inc(&self.metrics.rx_gso_errors);
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
            // Transmit write-backs interrupt once the frames are out and the replies they drew are in.
            nic.held_tx.get_or_insert_with(Default::default);
            for q in 0..2 {
                if nic.tx_pending(q) {
                    let out = &mut self.out;
                    let p = nic.process_tx(q, TX_BUDGET, &mut |f| out.push_back(f));
                    progress |= p.descriptors > 0;
                }
            }
            // PAUSE frames the card generated go out ahead of the data, behind a frame the backend refused
            // (as a MAC finishes the frame it has started).
            let at = usize::from(self.front_captured).min(self.out.len());
            for f in nic.control_out.drain(..).rev() {
                self.out.insert(at, TxFrame::wire(f));
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
        // Hand frames to the backend until it refuses one. Each is captured once, before it is offered (a
        // backend may take the buffer itself).
        while let Some(f) = self.out.front_mut() {
            if !self.front_captured {
                if let Some(p) = self.pcap.as_mut() {
                    let _ = p.write(&f.data);
                }
                self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("out", &f.data));
                self.front_captured = true;
            }
            match self.backend.send_owned(&mut f.data, f.vnet.as_ref()) {
                Ok(true) => {
                    self.rx_drained = false;
                    self.front_captured = false;
                    if let Some(f) = self.out.pop_front() {
                        keep_sent(&mut self.tx_free, f.data);
                    }
                    progress = true;
                }
                Ok(false) => break,
                Err(e) => {
                    debug!("backend send: {e}");
                    Metrics::inc(&self.metrics.backend_errors);
                    self.front_captured = false;
                    self.out.pop_front();
                }
            }
        }
        // Output the backend holds (a stream's partial write) waits for room as frames in `out` do.
        self.unflushed = !self.backend.flush().unwrap_or(true);
        // Receive. With flow control, take only what the receive FIFO could hold if no descriptor is free.
        let mut frames = std::mem::take(&mut self.rx_batch);
        let (mut room, max_frame) = {
            let nic = lock(&self.nic);
            (if self.overflow == RxOverflow::Drop { usize::MAX } else { nic.rx_room() }, nic.max_rx_frame())
        };
        while frames.len() < RX_BUDGET && room >= max_frame {
            // Frames from an offloading backend were captured as they came; wire frames are captured here.
            let (f, src) = match self.rx_pending.pop_front() {
                Some(p) => p,
                None if self.rx_drained => break,
                None => match self.backend.recv_vnet() {
                    Ok(Some((f, None))) => (f, RxSrc::Wire),
                    Ok(Some((f, Some(h)))) => {
                        self.take_offloaded(f, &h);
                        continue;
                    }
                    Ok(None) => {
                        self.rx_drained = true;
                        break;
                    }
                    Err(e) => {
                        debug!("backend recv: {e}");
                        break;
                    }
                },
            };
            room = room.saturating_sub(f.len().max(60));
            frames.push((f, src));
        }
        let mut nic = lock(&self.nic);
        nic.apply_doorbells();
        let now = Instant::now();
        nic.round_now = Some(now);
        progress |= nic.drain_rx_fifo() > 0;
        for (f, src) in frames.drain(..) {
            if src == RxSrc::Wire {
                if let Some(p) = self.pcap.as_mut() {
                    let _ = p.write(&f);
                }
                self.trace.emit(trace::FRAMES, "frame", || trace::frame_fields("in", &f));
            }
            nic.receive(&f);
            match src {
                RxSrc::Cut => self.cut_pool.put(f),
                RxSrc::Wire | RxSrc::Whole => self.backend.recycle(f),
            }
            progress = true;
        }
        self.rx_batch = frames;
        nic.release_tx_causes();
        nic.on_timer(now);
        nic.round_now = None;
        progress
    }
}

/// Keeps the buffer of a frame the backend has sent, for the transmit engines (`Nic::recycle_tx`).
fn keep_sent(free: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if free.len() < crate::nic::TX_SPARE_BUFFERS {
        free.push(buf);
    }
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use std::os::fd::RawFd;
    use std::sync::atomic::AtomicUsize;

    /// A wire that always has another frame, counting the reads.
    pub(crate) struct Flood {
        reads: Arc<AtomicUsize>,
        /// Set: the flood has ended (nothing more to read).
        dry: Arc<AtomicBool>,
    }

    impl Flood {
        /// The flood, its read count and its end switch.
        pub(crate) fn new() -> (Box<Flood>, Arc<AtomicUsize>, Arc<AtomicBool>) {
            let (reads, dry) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
            (Box::new(Flood { reads: reads.clone(), dry: dry.clone() }), reads, dry)
        }
    }

    impl Backend for Flood {
        fn fds(&self) -> Vec<RawFd> {
            vec![]
        }
        fn generation(&self) -> u64 {
            0
        }
        fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            if self.dry.load(Ordering::SeqCst) {
                return Ok(None);
            }
            self.reads.fetch_add(1, Ordering::Relaxed);
            let mut f = vec![0xFF; 6];
            f.resize(60, 0x11);
            Ok(Some(f))
        }
        fn send(&mut self, _: &[u8]) -> std::io::Result<bool> {
            Ok(true)
        }
        fn describe(&self) -> String {
            "flood".into()
        }
    }

    /// A busy-polling thread whose window ends while the data path thread is in a long round (a flood
    /// from the wire) neither waits for that round nor takes the backend from it: the vfio-user thread
    /// must stay free for its client.
    #[test]
    fn busy_polling_stops_without_waiting_for_a_busy_data_path() {
        let nic = Arc::new(Mutex::new(Nic::new([2, 0, 0, 0, 0, 1], Arc::default())));
        let (flood, reads, dry) = Flood::new();
        let mut dp = DataPath::start(nic, flood, None, RxOverflow::Drop).unwrap();
        let kick = dp.kick(DoorbellMode::Inline);
        // The data path thread's first round starts at once and lasts as long as the flood.
        let t0 = Instant::now();
        while reads.load(Ordering::Relaxed) < 1000 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the data path thread never read the flood");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(kick.spin_pass(), SpinPass::Busy, "the data path thread holds the data path: the pass does nothing");
        let (tx, rx) = std::sync::mpsc::channel();
        let k = kick.clone();
        std::thread::spawn(move || {
            k.stop_spinning();
            let _ = tx.send(());
        });
        let returned = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        dry.store(true, Ordering::SeqCst);
        assert!(returned, "stop_spinning waited for the data path thread's round");
        dp.stop();
    }

    /// A wire that takes every other frame it is offered, keeping what it took.
    struct Refusing {
        offers: usize,
        taken: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Backend for Refusing {
        fn fds(&self) -> Vec<RawFd> {
            vec![]
        }
        fn generation(&self) -> u64 {
            0
        }
        fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn send(&mut self, f: &[u8]) -> std::io::Result<bool> {
            self.offers += 1;
            if self.offers % 2 == 1 {
                return Ok(false);
            }
            self.taken.lock().unwrap().push(f.to_vec());
            Ok(true)
        }
        fn describe(&self) -> String {
            "refusing".into()
        }
    }

    /// A wire with a descriptor that refuses frames until it is opened.
    struct Gate {
        fd: std::os::unix::net::UnixDatagram,
        open: Arc<AtomicBool>,
        taken: Arc<AtomicUsize>,
    }

    impl Backend for Gate {
        fn fds(&self) -> Vec<RawFd> {
            use std::os::fd::AsRawFd;
            vec![self.fd.as_raw_fd()]
        }
        fn generation(&self) -> u64 {
            0
        }
        fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn send(&mut self, _: &[u8]) -> std::io::Result<bool> {
            let open = self.open.load(Ordering::SeqCst);
            if open {
                self.taken.fetch_add(1, Ordering::SeqCst);
            }
            Ok(open)
        }
        fn describe(&self) -> String {
            "gate".into()
        }
    }

    /// What the poll `epfd` watches descriptor `fd` for (its epoll event bits), from /proc; `None` when it
    /// does not watch it.
    fn watched_for(epfd: RawFd, fd: RawFd) -> Option<u32> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")).unwrap();
        info.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("tfd:") && w.next() == Some(&fd.to_string()) && w.next() == Some("events:"))
                .then(|| u32::from_str_radix(w.next().unwrap_or(""), 16).ok())
                .flatten()
        })
    }

    /// The data path thread sleeps watching the backend for frames, and for room only while frames it
    /// refused wait (a descriptor with room reports it at every registration and after every write, which
    /// would wake the thread for nothing); a doorbell's round on another thread leaves the backend unwatched
    /// while it reads it itself.
    #[test]
    fn the_backend_is_watched_for_room_only_while_frames_wait_for_it() {
        use std::os::fd::AsRawFd;
        let frames = 2;
        let nic = nic_with_frames(&[vec![1; 60], vec![2; 60]]);
        let (open, taken) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (fd, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let raw = fd.as_raw_fd();
        let poll = Poll::new().unwrap();
        let epfd = poll.as_raw_fd();
        let gate = Gate { fd, open: open.clone(), taken: taken.clone() };
        let mut w = Worker::new(Arc::new(Mutex::new(nic)), Box::new(gate), None, RxOverflow::Drop, poll.registry().try_clone().unwrap());
        let (readable, writable) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
        w.round().unwrap();
        assert_eq!(w.out.len(), frames, "the gate refused the frames");
        let ev = watched_for(epfd, raw).expect("watched while frames wait");
        assert!(ev & readable != 0 && ev & writable != 0, "frames waiting: watched for frames and room ({ev:#x})");
        open.store(true, Ordering::SeqCst);
        w.round().unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), frames);
        let ev = watched_for(epfd, raw).expect("watched while asleep");
        assert!(ev & readable != 0 && ev & writable == 0, "nothing waiting: watched for frames only ({ev:#x})");
        // A doorbell's round on another thread: unwatched while it runs, watched again when it ends.
        let _ = w.pass(true);
        assert_eq!(watched_for(epfd, raw), None, "watched during another thread's round");
        let watch = w.sleep_watch();
        w.set_watch(watch);
        assert_eq!(watched_for(epfd, raw).map(|e| e & (readable | writable)), Some(readable));
    }

    /// A card with `frames` on transmit queue 0 (legacy descriptors, EOP | IFCS | RS).
    fn nic_with_frames(frames: &[Vec<u8>]) -> Nic {
        use crate::regs::*;
        const MEM: u64 = 0x10_0000;
        let mut nic = Nic::new([2, 0, 0, 0, 0, 1], Arc::default());
        nic.dma = crate::dma::testing::space(MEM, 1 << 20);
        nic.config_write(crate::pci::COMMAND as u64, &(crate::pci::COMMAND_MEMORY | crate::pci::COMMAND_BUS_MASTER).to_le_bytes()).unwrap();
        nic.mmio_write(TDBAL0, MEM as u32);
        nic.mmio_write(TDBAH0, 0);
        nic.mmio_write(TDLEN0, 16 * 16);
        nic.mmio_write(TCTL, TCTL_EN | TCTL_PSP);
        for (i, f) in frames.iter().enumerate() {
            let buf = MEM + 0x1000 + i as u64 * 0x800;
            nic.dma.write(buf, f).unwrap();
            let d = MEM + i as u64 * 16;
            nic.dma.write(d, &buf.to_le_bytes()).unwrap();
            nic.dma.write(d + 8, &(f.len() as u32 | 0x0B << 24).to_le_bytes()).unwrap(); // EOP | IFCS | RS
            nic.dma.write(d + 12, &0u32.to_le_bytes()).unwrap();
        }
        nic.mmio_write(TDT0, frames.len() as u32);
        nic
    }

    /// A frame the backend refuses stays first in line and is offered again; the capture holds every frame
    /// once, in the order the wire took them, whether the backend copies (here) or takes the buffer (the
    /// loopback, `Backend::send_owned`).
    #[test]
    fn refused_frames_are_offered_again_and_captured_once() {
        let frames: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 60 + i as usize]).collect();
        let nic = nic_with_frames(&frames);
        let pcap = std::env::temp_dir().join(format!("nicdev-refused-{}.pcap", std::process::id()));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let poll = Poll::new().unwrap();
        let mut w = Worker::new(
            Arc::new(Mutex::new(nic)),
            Box::new(Refusing { offers: 0, taken: taken.clone() }),
            Some(PcapWriter::create(&pcap).unwrap()),
            RxOverflow::Drop,
            poll.registry().try_clone().unwrap(),
        );
        for i in 0..100 {
            if taken.lock().unwrap().len() == frames.len() {
                break;
            }
            let _ = w.pass(i == 0);
        }
        assert_eq!(*taken.lock().unwrap(), frames, "every frame, in order, once");
        w.pcap.as_mut().unwrap().flush().unwrap();
        let data = std::fs::read(&pcap).unwrap();
        let _ = std::fs::remove_file(&pcap);
        let mut captured = Vec::new();
        let mut off = 24;
        while off + 16 <= data.len() {
            let len = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
            captured.push(data[off + 16..off + 16 + len].to_vec());
            off += 16 + len;
        }
        assert_eq!(captured, frames, "each frame captured once");
    }

    #[test]
    fn a_doorbell_round_on_the_vfio_user_thread_is_bounded_under_a_flood() {
        let nic = Arc::new(Mutex::new(Nic::new([2, 0, 0, 0, 0, 1], Arc::default())));
        let poll = Poll::new().unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let flood = Box::new(Flood { reads: reads.clone(), dry: Arc::default() });
        let mut w = Worker::new(nic, flood, None, RxOverflow::Drop, poll.registry().try_clone().unwrap());
        // Passes on the vfio-user thread run one at a time, the thread answering its client in between, and
        // a round whose frames keep moving is handed to the data path thread once its time is up.
        assert!(matches!(w.pass(true), Ok(Step::Moved)));
        assert!(matches!(w.pass(false), Ok(Step::Moved)));
        assert!(reads.load(Ordering::Relaxed) > 0 && reads.load(Ordering::Relaxed) <= 2 * RX_BUDGET);
        // A wire with a finite burst: the round ends by itself, with nothing left.
        let mut w = Worker::new(
            Arc::new(Mutex::new(Nic::new([2, 0, 0, 0, 0, 1], Arc::default()))),
            Box::new(crate::backend::Loopback::default()),
            None,
            RxOverflow::Drop,
            poll.registry().try_clone().unwrap(),
        );
        assert!(matches!(w.pass(true), Ok(Step::Idle(_))));
    }
}
