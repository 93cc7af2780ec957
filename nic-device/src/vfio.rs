//! The device as the vfio-user server sees it: regions and IRQ indexes of an 82574L function.

use crate::datapath::{Kick, Pass, SpinPass};
use crate::dma::{DmaSpace, MapError};
use crate::doorbell::Doorbells;
use crate::metrics::Metrics;
use crate::nic::{lock, Effects, Nic};
use crate::regs::*;
use crate::timerpoll::TimerPoll;
use crate::trace::{self, Tracer};
use log::{debug, info, warn};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vfio_user::server::{Device, Errno};
use vfio_user::*;

pub struct NicServer {
    pub nic: Arc<Mutex<Nic>>,
    pub kick: Kick,
    /// A doorbell waits for `after_requests` to start the data path.
    kick_pending: bool,
    /// When the doorbell round running on this thread began.
    inline_since: Option<Instant>,
    /// Busy polling (`--busy-poll`): this thread keeps looking at the rings and the backend, without
    /// sleeping, for this long after the last doorbell or frame.
    busy_poll: Option<Duration>,
    /// The last doorbell or frame, while busy polling.
    last_activity: Option<Instant>,
    /// Timer polling of the socket (`--timer-poll`), when on.
    timer: Option<TimerPoll>,
    metrics: Arc<Metrics>,
    doorbells: Arc<Doorbells>,
    trace: Arc<Tracer>,
}

const RW: u32 = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;

impl NicServer {
    /// Changes the DMA maps without holding the device lock while mmap or munmap run: a copy of the maps
    /// (reference-counted regions, cheap to copy) is changed outside the lock and swapped in, so that the
    /// data path, which reads the maps under the lock, waits only for the swap. Only this thread changes
    /// the maps, so nothing is lost between the copy and the swap; the old maps are unmapped after it.
    fn update_dma<R>(&self, f: impl FnOnce(&mut DmaSpace) -> Result<R, MapError>) -> Result<R, MapError> {
        let mut next = lock(&self.nic).dma.clone();
        let r = f(&mut next)?;
        let old = lock(&self.nic).replace_dma(next);
        drop(old);
        Ok(r)
    }

    pub fn new(nic: Arc<Mutex<Nic>>, kick: Kick) -> NicServer {
        let (doorbells, trace, metrics) = {
            let n = lock(&nic);
            (n.doorbells.clone(), n.trace.clone(), n.metrics.clone())
        };
        NicServer {
            nic,
            kick,
            doorbells,
            trace,
            metrics,
            timer: None,
            kick_pending: false,
            inline_since: None,
            busy_poll: None,
            last_activity: None,
        }
    }

    /// Polls the socket on a timer of `interval` while the client is active (`crate::timerpoll`); zero
    /// wakes on every message.
    pub fn set_timer_poll(&mut self, interval: Duration) {
        self.timer = TimerPoll::new(interval);
    }

    /// The client's messages are being read.
    pub fn client_messages(&mut self) {
        if let Some(t) = self.timer.as_mut() {
            t.message(Instant::now());
        }
    }

    /// Sleeps on the timer when the server should (`TimerPoll::sleep`) and returns true; false when the
    /// server should wait on the socket.
    pub fn timer_sleep(&mut self) -> bool {
        let Some(d) = self.timer.as_ref().and_then(|t| t.sleep(Instant::now())) else { return false };
        std::thread::sleep(d);
        Metrics::inc(&self.metrics.timer_polls);
        true
    }

    /// A timer poll found the client's messages waiting: wake-ups its sender did not pay for.
    pub fn timer_poll_found_messages(&self) {
        Metrics::inc(&self.metrics.timer_poll_hits);
    }

    /// Busy polls for `window` after every doorbell or frame (see `after_requests`); `None` sleeps at once.
    pub fn set_busy_poll(&mut self, window: Option<Duration>) {
        self.busy_poll = window.filter(|w| !w.is_zero());
    }

    /// Called when the client's requests read so far have been handled: runs a slice of the data path's
    /// round for the doorbells among them (`Kick::pass`). Returns whether to call again, after handling
    /// whatever came meanwhile (the server's poll, without sleeping).
    ///
    /// A busy-polling device (`set_busy_poll`) goes on after the round: every call is then one pass over
    /// the rings, the backend and the timers (`Kick::spin_pass`), and asks to be called again until the
    /// window has passed with nothing moving, so that neither a doorbell nor a frame from the wire waits
    /// for a thread to wake.
    pub fn after_requests(&mut self) -> bool {
        let first = std::mem::take(&mut self.kick_pending);
        if first {
            let now = Instant::now();
            self.inline_since = Some(now);
            if self.busy_poll.is_some() {
                self.last_activity = Some(now);
            }
        }
        if let Some(since) = self.inline_since {
            match self.kick.pass(first, since) {
                Pass::More => return true,
                Pass::Done => self.inline_since = None,
            }
        }
        let (Some(window), Some(last)) = (self.busy_poll, self.last_activity) else { return false };
        let now = Instant::now();
        if now.duration_since(last) > window {
            self.last_activity = None;
            self.kick.stop_spinning();
            return false;
        }
        // A pass that finds the data path thread in a round of its own counts as activity too: frames are
        // moving, and the window must not end under them.
        match self.kick.spin_pass() {
            SpinPass::Moved | SpinPass::Busy => self.last_activity = Some(now),
            SpinPass::Idle => {}
        }
        true
    }

    fn effects(&self, fx: Option<Effects>) -> Result<(), Errno> {
        match fx {
            Some(fx) => {
                if fx.wake {
                    self.kick.wake();
                }
                Ok(())
            }
            None => Err(libc::EINVAL),
        }
    }
}

/// The errno a refused DMA_MAP or DMA_UNMAP is answered with.
fn map_errno(e: &MapError) -> Errno {
    match e {
        MapError::TooMany(_) => libc::ENOSPC,
        MapError::Unsealable(_) => libc::EPERM,
        MapError::NoSuchMapping => libc::ENOENT,
        MapError::Overlap => libc::EEXIST,
        MapError::FileTooSmall | MapError::Mmap(_) => libc::EINVAL,
    }
}

impl Device for NicServer {
    fn device_info(&self) -> (u32, u32, u32) {
        (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS)
    }

    fn region_info(&self, index: u32) -> Option<(u32, u64)> {
        Some(match index {
            0 => (RW, BAR0_SIZE),
            1 => (RW, BAR1_SIZE),
            2 => (RW, BAR2_SIZE),
            3 => (RW, BAR3_SIZE),
            4 | 5 | 6 | 8 => (0, 0),
            VFIO_PCI_CONFIG_REGION_INDEX => (RW, crate::pci::CONFIG_SIZE as u64),
            _ => return None,
        })
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        Some(match index {
            VFIO_PCI_INTX_IRQ_INDEX => (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1),
            VFIO_PCI_MSI_IRQ_INDEX => (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1),
            VFIO_PCI_MSIX_IRQ_INDEX => (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, MSIX_VECTORS as u32),
            VFIO_PCI_ERR_IRQ_INDEX | VFIO_PCI_REQ_IRQ_INDEX => (VFIO_IRQ_INFO_EVENTFD, 1),
            _ => return None,
        })
    }

    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno> {
        if let Some(t) = self.timer.as_mut() {
            t.read(Instant::now());
        }
        let mut nic = lock(&self.nic);
        let ok = match region {
            0 => nic.bar0_read(offset, data),
            1 => {
                // Flash: erased content.
                let ok = offset.checked_add(data.len() as u64).is_some_and(|e| e <= BAR1_SIZE);
                data.fill(0xFF);
                ok
            }
            2 => nic.io_read(offset, data),
            3 => nic.msix_bar_read(offset, data),
            VFIO_PCI_CONFIG_REGION_INDEX => nic.pci.read(offset, data),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            debug!("region {region} read of {} at {offset:#x} refused", data.len());
            Err(libc::EINVAL)
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        // A whole-register tail write is a doorbell: handed to the data path without taking the lock (and run
        // here, between the server's polls, if the data path is asleep: `after_requests`).
        if let (0, Ok(b)) = (region, <[u8; 4]>::try_from(data)) {
            if let Some(slot) = u32::try_from(offset).ok().and_then(Doorbells::slot) {
                let val = u32::from_le_bytes(b);
                self.trace.emit(trace::REGS, "reg", || crate::nic::reg_fields("write", offset as u32, val));
                if self.doorbells.ring(slot, val) {
                    if self.kick.inline() {
                        // Run once every request that came with this one has been answered.
                        self.kick_pending = true;
                    } else {
                        self.kick.wake();
                    }
                }
                return Ok(());
            }
        }
        let fx = {
            let mut nic = lock(&self.nic);
            match region {
                0 => nic.bar0_write(offset, data),
                1 => offset.checked_add(data.len() as u64).is_some_and(|e| e <= BAR1_SIZE).then_some(Effects::default()),
                2 => nic.io_write(offset, data),
                // The MSI-X table is emulated by the client; PBA writes are ignored.
                3 => offset.checked_add(data.len() as u64).is_some_and(|e| e <= BAR3_SIZE).then_some(Effects::default()),
                VFIO_PCI_CONFIG_REGION_INDEX => nic.config_write(offset, data),
                _ => None,
            }
        };
        self.effects(fx)
    }

    fn dma_map(&mut self, map: &DmaMap, fd: Option<OwnedFd>) -> Result<(), Errno> {
        let Some(fd) = fd else {
            // Sections without an fd (ROM, some VGA RAM) are not reachable by DMA.
            debug!("DMA_MAP without fd: iova {:#x} size {:#x} not DMA-able", map.iova, map.size);
            return self.update_dma(|d| d.map_unreachable(map.iova, map.size)).map_err(|e| {
                warn!("DMA_MAP without fd, iova {:#x} size {:#x}: {e}", map.iova, map.size);
                map_errno(&e)
            });
        };
        let writable = map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0;
        self.update_dma(|d| d.map(map.iova, map.size, fd, map.offset, writable)).map_err(|e| {
            warn!("DMA_MAP iova {:#x} size {:#x}: {e}", map.iova, map.size);
            map_errno(&e)
        })?;
        debug!("DMA_MAP iova {:#x} size {:#x} offset {:#x}", map.iova, map.size, map.offset);
        Ok(())
    }

    fn dma_unmap(&mut self, un: &DmaUnmap) -> Result<(), Errno> {
        if un.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0 {
            self.update_dma(|d| {
                d.unmap_all();
                Ok(())
            })
            .map_err(|e| map_errno(&e))?;
            return Ok(());
        }
        self.update_dma(|d| d.unmap(un.iova, un.size).map(|_| ())).map_err(|e| {
            warn!("DMA_UNMAP iova {:#x} size {:#x}: {e}", un.iova, un.size);
            map_errno(&e)
        })
    }

    fn set_irqs(&mut self, set: &IrqSet, fds: Vec<OwnedFd>) -> Result<(), Errno> {
        let (_, count) = self.irq_info(set.index).ok_or(libc::EINVAL)?;
        if set.start.checked_add(set.count).is_none_or(|e| e > count) {
            return Err(libc::EINVAL);
        }
        let mut nic = lock(&self.nic);
        let action = set.flags & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER);
        let data = set.flags & (VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD);
        debug!("SET_IRQS index {} start {} count {} action {action:#x} data {data:#x} fds {}", set.index, set.start, set.count, fds.len());
        if set.index == VFIO_PCI_INTX_IRQ_INDEX && action != VFIO_IRQ_SET_ACTION_TRIGGER {
            match (action, data) {
                (VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_NONE) => nic.intx_unmask(),
                (VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_DATA_NONE) => nic.intx_mask(),
                (VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL) if set.bools.first() == Some(&1) => nic.intx_unmask(),
                (VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_DATA_BOOL) if set.bools.first() == Some(&1) => nic.intx_mask(),
                _ => {
                    warn!("SET_IRQS INTx action {action:#x} data {data:#x} not supported");
                    return Err(libc::ENOTSUP);
                }
            }
            return Ok(());
        }
        if action != VFIO_IRQ_SET_ACTION_TRIGGER {
            // MSI/MSI-X masking goes through the client's emulated table.
            return Err(libc::ENOTSUP);
        }
        let idx = set.index;
        match data {
            VFIO_IRQ_SET_DATA_EVENTFD => {
                if !fds.is_empty() && fds.len() != set.count as usize {
                    return Err(libc::EINVAL);
                }
                let mut files: Vec<Option<File>> = fds.into_iter().map(|f| Some(File::from(f))).collect();
                files.resize_with(set.count as usize, || None);
                for (i, f) in files.into_iter().enumerate() {
                    let v = set.start as usize + i;
                    let has = f.is_some();
                    match idx {
                        VFIO_PCI_INTX_IRQ_INDEX => nic.irq.fds.intx = f,
                        VFIO_PCI_MSI_IRQ_INDEX => nic.irq.fds.msi = f,
                        VFIO_PCI_MSIX_IRQ_INDEX => {
                            // start + count was checked against the vector count above.
                            let Some(slot) = nic.irq.fds.msix.get_mut(v) else { return Err(libc::EINVAL) };
                            *slot = f;
                            if has {
                                nic.msix_fd_set(v);
                            }
                        }
                        VFIO_PCI_ERR_IRQ_INDEX => nic.irq.fds.err = f,
                        _ => nic.irq.fds.req = f,
                    }
                }
            }
            VFIO_IRQ_SET_DATA_NONE if set.count == 0 => {
                // Disable the whole index.
                match idx {
                    VFIO_PCI_INTX_IRQ_INDEX => nic.irq.fds.intx = None,
                    VFIO_PCI_MSI_IRQ_INDEX => nic.irq.fds.msi = None,
                    VFIO_PCI_MSIX_IRQ_INDEX => nic.irq.fds.msix = Default::default(),
                    VFIO_PCI_ERR_IRQ_INDEX => nic.irq.fds.err = None,
                    _ => nic.irq.fds.req = None,
                }
            }
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL => {
                // Software trigger of the named vectors.
                for i in 0..set.count as usize {
                    if data == VFIO_IRQ_SET_DATA_BOOL && set.bools.get(i) != Some(&1) {
                        continue;
                    }
                    let v = set.start as usize + i;
                    let f = match idx {
                        VFIO_PCI_INTX_IRQ_INDEX => Some(&nic.irq.fds.intx),
                        VFIO_PCI_MSI_IRQ_INDEX => Some(&nic.irq.fds.msi),
                        VFIO_PCI_MSIX_IRQ_INDEX => nic.irq.fds.msix.get(v),
                        VFIO_PCI_ERR_IRQ_INDEX => Some(&nic.irq.fds.err),
                        _ => Some(&nic.irq.fds.req),
                    };
                    if let Some(f) = f {
                        crate::intr::deliver::signal_fd(f);
                    }
                }
            }
            _ => return Err(libc::EINVAL),
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), Errno> {
        info!("DEVICE_RESET");
        lock(&self.nic).function_reset();
        self.kick.wake();
        Ok(())
    }

    fn disconnected(&mut self) {
        if self.last_activity.take().is_some() {
            self.kick.stop_spinning();
        }
        // A doorbell's round left between slices: the data path thread takes over (and watches the backend
        // again when its round ends).
        if self.inline_since.take().is_some() {
            self.kick.wake();
        }
        let mut nic = lock(&self.nic);
        nic.disconnect();
        info!("client disconnected: DMA maps and interrupt fds dropped");
        nic.log_metrics();
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_panic_while_holding_the_device_does_not_poison_the_other_thread() {
        let nic = Arc::new(Mutex::new(Nic::new([0x52, 0x54, 0, 1, 2, 3], Arc::new(Metrics::default()))));
        let n2 = nic.clone();
        let r = std::thread::spawn(move || {
            let _g = lock(&n2);
            panic!("model bug while holding the lock");
        })
        .join();
        assert!(r.is_err());
        assert!(nic.is_poisoned());
        let mut g = lock(&nic);
        g.mmio_write(RAL0, 0x1234_5678);
        assert_eq!(g.reg(RAL0), 0x1234_5678, "the other thread carries on");
    }

    /// A client that leaves while a doorbell's round waits between slices hands the round to the data path
    /// thread (woken), which watches the backend again when it ends; a client that leaves with no round
    /// running wakes nobody.
    #[test]
    fn a_client_leaving_mid_round_hands_the_round_to_the_data_path_thread() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let nic = Arc::new(Mutex::new(Nic::new([0x52, 0x54, 0, 1, 2, 3], Arc::new(Metrics::default()))));
        let mut dev = NicServer::new(nic, Kick::waker_only(waker));
        let mut events = mio::Events::with_capacity(4);
        let mut woken = |dev: &mut NicServer, mid_round: bool| {
            dev.inline_since = mid_round.then(Instant::now);
            dev.disconnected();
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            events.iter().any(|e| e.token() == mio::Token(7))
        };
        assert!(!woken(&mut dev, false), "no round: nobody woken");
        assert!(woken(&mut dev, true), "the round left between slices was not handed over");
        assert!(dev.inline_since.is_none());
    }

    /// A busy-polling device whose passes find the data path thread in a long round of its own (a flood
    /// from the wire) keeps polling: that round is traffic, and the window must not end under it. Once the
    /// flood is over, the window ends.
    #[test]
    fn a_busy_data_path_keeps_the_busy_poll_window_open() {
        use crate::datapath::{test::Flood, DataPath, DoorbellMode, RxOverflow};
        use std::sync::atomic::Ordering;
        let nic = Arc::new(Mutex::new(Nic::new([0x52, 0x54, 0, 1, 2, 3], Arc::new(Metrics::default()))));
        let (flood, reads, dry) = Flood::new();
        let mut dp = DataPath::start(nic.clone(), flood, None, RxOverflow::Drop).unwrap();
        // The flood ends when the test does, failed or not, so that the data path thread can stop.
        struct EndFlood(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for EndFlood {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let end = EndFlood(dry);
        let mut dev = NicServer::new(nic, dp.kick(DoorbellMode::Inline));
        let window = Duration::from_millis(500);
        dev.set_busy_poll(Some(window));
        let t0 = Instant::now();
        while reads.load(Ordering::Relaxed) < 1000 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the data path thread never read the flood");
            std::thread::sleep(Duration::from_millis(1));
        }
        dev.last_activity = Some(Instant::now());
        let t1 = Instant::now();
        while t1.elapsed() < window * 3 {
            assert!(dev.after_requests(), "the window ended while the data path thread moved frames");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(end);
        let t2 = Instant::now();
        while dev.after_requests() {
            assert!(t2.elapsed() < Duration::from_secs(20), "the window never ended after the flood");
            std::thread::sleep(Duration::from_millis(10));
        }
        dp.stop();
    }
}
