//! A learning bridge (IEEE 802.1D without spanning tree, as Linux's `bridge` with STP off) over any member
//! devices, itself a device: the host stack on it is one more port. Source addresses are learned per port
//! and age out; frames to a learned address go to its port only (never back out of the port they came
//! in on), broadcast, multicast and unknown destinations are flooded to every other port, and the bridge's
//! own address (and every broadcast and multicast) reaches the host. Counters per port.

use super::Device;
use crate::skb::PacketBuf;
use crate::wire::{fmt_mac, Mac};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Per-port counters, as `bridge -s link` and `ip -s link` would show them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames this port sent because their destination was unknown, broadcast or multicast.
    pub flooded: u64,
    /// Frames dropped: their destination was learned on the port they came in on.
    pub filtered: u64,
    /// Frames dropped on the way out of this port: its queue was full (the device could not keep up) or
    /// the device failed. For the host's port: frames for the host that it did not poll in time.
    pub dropped: u64,
}

/// Frames a port (or the host) may have waiting before more are dropped, as a switch's queue.
const PORT_QUEUE: usize = 1024;

struct Port {
    dev: Box<dyn Device>,
    stats: PortStats,
    out: VecDeque<PacketBuf>,
}

/// Where the host's own port is, in forwarding decisions.
const HOST: usize = usize::MAX;

pub struct Bridge {
    name: String,
    mac: Mac,
    ports: Vec<Port>,
    fdb: HashMap<Mac, (usize, Instant)>,
    /// How long a learned address stays (Linux's default ageing time: 300 s).
    pub ageing: Duration,
    /// Frames for the host, received on member ports.
    local: VecDeque<PacketBuf>,
    pub host_stats: PortStats,
    clock: Box<dyn Fn() -> Instant>,
    /// The ports' descriptors offered to a loop that sleeps on several devices.
    fan: super::WaitFan,
    /// Whether the last `wait_fds` offered `ready_now` first (frames for the host were waiting).
    ready_offered: bool,
}

impl Bridge {
    pub fn new(name: &str, mac: Mac, members: Vec<Box<dyn Device>>) -> Bridge {
        Bridge::with_clock(name, mac, members, Box::new(Instant::now))
    }

    /// The same on a given clock (tests age the table without waiting).
    pub fn with_clock(name: &str, mac: Mac, members: Vec<Box<dyn Device>>, clock: Box<dyn Fn() -> Instant>) -> Bridge {
        Bridge {
            name: name.into(),
            mac,
            ports: members.into_iter().map(|dev| Port { dev, stats: PortStats::default(), out: VecDeque::new() }).collect(),
            fdb: HashMap::new(),
            ageing: Duration::from_secs(300),
            local: VecDeque::new(),
            host_stats: PortStats::default(),
            clock,
            fan: super::WaitFan::default(),
            ready_offered: false,
        }
    }

    /// The forwarding database: address, port (by member name) and age, as `bridge fdb` lists it.
    pub fn fdb(&self) -> Vec<(Mac, String, Duration)> {
        let now = (self.clock)();
        let mut v: Vec<_> = self
            .fdb
            .iter()
            .filter_map(|(m, (p, t))| Some((*m, self.ports.get(*p)?.dev.name(), now.saturating_duration_since(*t))))
            .collect();
        v.sort_by_key(|a| a.0);
        v
    }

    /// Each member's name and counters.
    pub fn port_stats(&self) -> Vec<(String, PortStats)> {
        self.ports.iter().map(|p| (p.dev.name(), p.stats)).collect()
    }

    /// Prints the table and the counters (what `nic-lab run` shows at exit), with what each member device
    /// reports itself (a card's interrupts, a bond's slaves) under its port.
    pub fn report(&self) -> String {
        let mut s = format!("bridge {} ({})\n", self.name, fmt_mac(&self.mac));
        for pt in &self.ports {
            let st = pt.stats;
            s += &format!(
                "  port {}: rx {} tx {} flooded {} filtered {} dropped {}\n",
                pt.dev.name(),
                st.rx_frames,
                st.tx_frames,
                st.flooded,
                st.filtered,
                st.dropped
            );
            if let Some(r) = pt.dev.report() {
                for l in r.lines() {
                    s += &format!("    {l}\n");
                }
            }
        }
        let h = self.host_stats;
        s += &format!("  host: rx {} tx {} dropped {}\n", h.rx_frames, h.tx_frames, h.dropped);
        for (m, port, age) in self.fdb() {
            s += &format!("  fdb {} port {port} age {:.1} s\n", fmt_mac(&m), age.as_secs_f64());
        }
        s
    }

    /// Sends `p`, which came in on `from` (a member index or HOST), where its destination says.
    fn forward(&mut self, p: PacketBuf, from: usize) {
        let Some(dst) = p.data().get(..6).and_then(|d| <[u8; 6]>::try_from(d).ok()) else { return };
        let now = (self.clock)();
        let group = dst[0] & 1 != 0;
        if from != HOST && (group || dst == self.mac) {
            if self.local.len() < PORT_QUEUE {
                self.host_stats.rx_frames += 1;
                self.local.push_back(p.clone());
            } else {
                self.host_stats.dropped += 1;
            }
            if !group {
                return;
            }
        }
        let known =
            if group { None } else { self.fdb.get(&dst).filter(|(_, t)| now.saturating_duration_since(*t) < self.ageing).map(|e| e.0) };
        match known {
            Some(port) if port == from => {
                if let Some(pt) = self.ports.get_mut(from) {
                    pt.stats.filtered += 1;
                }
            }
            Some(port) => {
                if let Some(pt) = self.ports.get_mut(port) {
                    pt.stats.tx_frames += 1;
                    pt.out.push_back(p);
                }
            }
            None => {
                for (i, pt) in self.ports.iter_mut().enumerate() {
                    if i != from {
                        pt.stats.tx_frames += 1;
                        pt.stats.flooded += 1;
                        pt.out.push_back(p.clone());
                    }
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        for pt in self.ports.iter_mut() {
            while !pt.out.is_empty() {
                match pt.dev.transmit(&mut pt.out) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("bridge port {}: {e}", pt.dev.name());
                        pt.stats.dropped += pt.out.len() as u64;
                        pt.out.clear();
                    }
                }
            }
            // A port that cannot keep up loses what it could not take, as a switch's queue would.
            pt.stats.dropped += pt.out.len().saturating_sub(PORT_QUEUE) as u64;
            pt.out.truncate(PORT_QUEUE);
        }
        Ok(())
    }
}

impl Device for Bridge {
    fn mac(&self) -> Mac {
        self.mac
    }
    fn mtu(&self) -> usize {
        self.ports.iter().map(|p| p.dev.mtu()).min().unwrap_or(1500)
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let n = q.len();
        for p in q.drain(..) {
            self.host_stats.tx_frames += 1;
            self.forward(p, HOST);
        }
        self.flush()?;
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let now = (self.clock)();
        let ageing = self.ageing;
        self.fdb.retain(|_, (_, t)| now.saturating_duration_since(*t) < ageing);
        let mut frames = Vec::new();
        for i in 0..self.ports.len() {
            frames.clear();
            if let Some(pt) = self.ports.get_mut(i) {
                if let Err(e) = pt.dev.poll(budget, &mut frames) {
                    log::debug!("bridge port {}: {e}", pt.dev.name());
                }
                pt.stats.rx_frames += frames.len() as u64;
            }
            for p in frames.drain(..) {
                // Learn the source (a unicast address only).
                if let Some(src) = p.data().get(6..12).and_then(|s| <[u8; 6]>::try_from(s).ok()) {
                    if src[0] & 1 == 0 {
                        self.fdb.insert(src, (i, now));
                    }
                }
                self.forward(p, i);
            }
        }
        self.flush()?;
        let mut n = 0;
        while n < budget {
            let Some(p) = self.local.pop_front() else { break };
            out.push(p);
            n += 1;
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.local.is_empty() {
            return Ok(());
        }
        // The ports' descriptors, through this bridge's own `wait_fds` and `woke`.
        super::wait_devices(&mut [self as &mut dyn Device], timeout)
    }
    fn wait_fds(&mut self, out: &mut Vec<RawFd>) -> io::Result<bool> {
        // Frames for the host already here: a descriptor readable now, so that the loop does not sleep.
        self.ready_offered = false;
        if !self.local.is_empty() {
            match super::ready_now() {
                Some(fd) => {
                    out.push(fd);
                    self.ready_offered = true;
                }
                None => return Ok(false),
            }
        }
        self.fan.offer(self.ports.iter_mut().map(|p| p.dev.as_mut() as &mut dyn Device), out)
    }
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        let ready = if self.ready_offered { ready.get(1..).unwrap_or_default() } else { ready };
        self.fan.woke(self.ports.iter_mut().map(|p| p.dev.as_mut() as &mut dyn Device), ready)
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn report(&self) -> Option<String> {
        Some(Bridge::report(self))
    }
    fn join_multicast(&mut self, mac: Mac) -> io::Result<()> {
        for p in self.ports.iter_mut() {
            p.dev.join_multicast(mac)?;
        }
        Ok(())
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; with a device that has no descriptor to wait
/// on, a short sleep instead, so that it is polled again soon.
pub fn wait_any(fds: Vec<Option<RawFd>>, timeout: Duration) {
    if fds.iter().any(|f| f.is_none()) {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        return;
    }
    let mut p: Vec<libc::pollfd> = fds.into_iter().flatten().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    nic_tap::wait_readable(&mut p, timeout);
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dev::sim::{link, Impairment, SimPort};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    const M1: Mac = [2, 0, 0, 0, 0, 1];
    const M2: Mac = [2, 0, 0, 0, 0, 2];
    const M3: Mac = [2, 0, 0, 0, 0, 3];
    const BR: Mac = [2, 0, 0, 0, 0, 0xb];

    fn frame(dst: Mac, src: Mac) -> PacketBuf {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0; 46]);
        PacketBuf::from_slice(&f)
    }

    /// A bridge over three simulated links; the far ends, to send and receive on.
    fn setup() -> (Bridge, Vec<SimPort>, Rc<Cell<Instant>>) {
        let vclock = Rc::new(RefCell::new(crate::time::Instant::ZERO));
        let mut members: Vec<Box<dyn Device>> = Vec::new();
        let mut far = Vec::new();
        for i in 0..3u8 {
            let (a, b) = link(([2, 0, 0, 0, 1, i], [2, 0, 0, 0, 2, i]), Impairment::default(), 1, vclock.clone());
            members.push(Box::new(a));
            far.push(b);
        }
        let t0 = Instant::now();
        let clock = Rc::new(Cell::new(t0));
        let c2 = clock.clone();
        (Bridge::with_clock("br0", BR, members, Box::new(move || c2.get())), far, clock)
    }

    fn recv(p: &mut SimPort) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        p.poll(64, &mut out).unwrap();
        out.iter().map(|f| f.data().to_vec()).collect()
    }

    fn send(p: &mut SimPort, f: PacketBuf) {
        p.transmit(&mut VecDeque::from([f])).unwrap();
    }

    #[test]
    fn floods_unknown_learns_forwards_and_never_hairpins() {
        let (mut br, mut far, _) = setup();
        let mut host = Vec::new();
        // M1 behind port 0 asks for M2: unknown, flooded to ports 1 and 2 (not back to 0), not to the host.
        send(&mut far[0], frame(M2, M1));
        br.poll(64, &mut host).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len(), recv(&mut far[2]).len(), host.len()), (0, 1, 1, 0));
        // M2 answers from port 1: M1 is known, only port 0 gets it.
        send(&mut far[1], frame(M1, M2));
        br.poll(64, &mut host).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len(), recv(&mut far[2]).len()), (1, 0, 0));
        // A frame for M2 arriving on M2's own port is not sent back.
        send(&mut far[1], frame(M2, M3));
        br.poll(64, &mut host).unwrap();
        assert_eq!(recv(&mut far[1]).len() + recv(&mut far[0]).len() + recv(&mut far[2]).len(), 0);
        assert_eq!(br.port_stats()[1].1.filtered, 1);
        let fdb: Vec<(Mac, String)> = br.fdb().into_iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(fdb, vec![(M1, "sim".into()), (M2, "sim".into()), (M3, "sim".into())]);
    }

    #[test]
    fn broadcast_reaches_every_port_and_the_host_and_the_host_is_a_port() {
        let (mut br, mut far, _) = setup();
        let mut host = Vec::new();
        send(&mut far[2], frame([0xff; 6], M3));
        br.poll(64, &mut host).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len(), recv(&mut far[2]).len(), host.len()), (1, 1, 0, 1));
        // The host answers M3: learned on port 2, so only there.
        br.transmit(&mut VecDeque::from([frame(M3, BR)])).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len(), recv(&mut far[2]).len()), (0, 0, 1));
        // A frame to the bridge's own address is the host's only.
        send(&mut far[0], frame(BR, M1));
        host.clear();
        br.poll(64, &mut host).unwrap();
        assert_eq!((host.len(), recv(&mut far[1]).len(), recv(&mut far[2]).len()), (1, 0, 0));
    }

    #[test]
    fn learned_addresses_age_out_and_are_flooded_again() {
        let (mut br, mut far, clock) = setup();
        let mut host = Vec::new();
        send(&mut far[0], frame([0xff; 6], M1));
        br.poll(64, &mut host).unwrap();
        for f in far.iter_mut() {
            recv(f);
        }
        br.transmit(&mut VecDeque::from([frame(M1, BR)])).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len()), (1, 0));
        clock.set(clock.get() + Duration::from_secs(301));
        br.poll(64, &mut host).unwrap();
        assert!(br.fdb().is_empty(), "aged out after 300 s");
        br.transmit(&mut VecDeque::from([frame(M1, BR)])).unwrap();
        assert_eq!((recv(&mut far[0]).len(), recv(&mut far[1]).len(), recv(&mut far[2]).len()), (1, 1, 1), "flooded again");
    }

    /// A port device that hands out the frames put in its inbox and never has room to send.
    struct Stuck(Rc<RefCell<VecDeque<PacketBuf>>>);

    impl Device for Stuck {
        fn mac(&self) -> Mac {
            M3
        }
        fn transmit(&mut self, _q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
            Ok(0)
        }
        fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
            let mut i = self.0.borrow_mut();
            let n = budget.min(i.len());
            out.extend(i.drain(..n));
            Ok(n)
        }
        fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "stuck".into()
        }
        fn raw_fd(&self) -> Option<RawFd> {
            None
        }
    }

    /// A port that cannot send keeps at most PORT_QUEUE frames and counts the rest as dropped (they were
    /// dropped uncounted); frames for the host that it has not polled yet offer a descriptor readable at
    /// once (the loop used to sleep up to 1 ms on them), and the host's queue is bounded and counted too.
    #[test]
    fn a_port_that_cannot_keep_up_counts_its_drops_and_host_frames_keep_the_loop_awake() {
        let inbox: Rc<RefCell<VecDeque<PacketBuf>>> = Rc::default();
        let out_box: Rc<RefCell<VecDeque<PacketBuf>>> = Rc::default();
        let mut br = Bridge::new("br0", BR, vec![Box::new(Stuck(inbox.clone())), Box::new(Stuck(out_box.clone()))]);
        let bcast = [0xff; 6];
        let mut host = Vec::new();
        for _ in 0..20 {
            inbox.borrow_mut().extend((0..64).map(|_| frame(bcast, M1)));
            host.clear();
            assert_eq!(br.poll(64, &mut host).unwrap(), 64);
        }
        let st = br.port_stats();
        assert_eq!((st[1].1.tx_frames, st[1].1.dropped), (1280, 1280 - PORT_QUEUE as u64), "{st:?}");
        assert!(br.report().contains(&format!("  port stuck: rx 0 tx 1280 flooded 1280 filtered 0 dropped {}", 1280 - PORT_QUEUE)));
        // 64 for the host on each port, of which one poll takes 64: the rest offer a readable descriptor.
        inbox.borrow_mut().extend((0..64).map(|_| frame(bcast, M1)));
        out_box.borrow_mut().extend((0..64).map(|_| frame(bcast, M2)));
        host.clear();
        assert_eq!(br.poll(64, &mut host).unwrap(), 64);
        let mut fds = Vec::new();
        // `false`: these ports have no descriptors of their own to offer.
        assert!(!br.wait_fds(&mut fds).unwrap());
        assert_eq!(fds, vec![crate::dev::ready_now().unwrap()]);
        let mut p = [libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 }];
        // SAFETY: one pollfd of ours, no wait.
        assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 0) }, 1);
        br.woke(&[true]).unwrap();
        // Two ports feed the host twice what it polls: its queue stops at PORT_QUEUE, the rest counted, and
        // every frame is either delivered, waiting or counted as dropped.
        let (mut arrived, mut delivered) = (20 * 64 + 128, 20 * 64 + 64);
        for _ in 0..20 {
            inbox.borrow_mut().extend((0..64).map(|_| frame(bcast, M1)));
            out_box.borrow_mut().extend((0..64).map(|_| frame(bcast, M2)));
            arrived += 128;
            host.clear();
            delivered += br.poll(64, &mut host).unwrap() as u64;
            assert!(br.local.len() <= PORT_QUEUE);
        }
        assert!(br.host_stats.dropped > 0);
        assert_eq!(br.host_stats.rx_frames, delivered + br.local.len() as u64);
        assert_eq!(br.host_stats.rx_frames + br.host_stats.dropped, arrived);
    }
}
