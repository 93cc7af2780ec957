//! Bonding, as Linux's bonding driver does it, over any member ("slave") devices.
//!
//! - **active-backup**: one slave carries all traffic; link monitoring (`miimon`, 100 ms) notices when its
//!   link goes down and makes the next slave with link the active one. The bond's address follows the
//!   active slave (Linux's `fail_over_mac=active`, which needs no address change on the cards), and the
//!   stack announces its addresses again (gratuitous ARP, unsolicited neighbour advertisements) so that the
//!   neighbours' tables and the switches follow at once. Frames arriving on a backup slave are dropped.
//! - **balance-xor** with the `layer3+4` transmit hash: each flow (addresses and ports) keeps to one slave
//!   with link, flows spread over all of them; frames are received on every slave.

use super::Device;
use crate::skb::PacketBuf;
use crate::wire::{fmt_mac, Mac};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ActiveBackup,
    BalanceXor,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "active-backup" => Ok(Mode::ActiveBackup),
            "balance-xor" => Ok(Mode::BalanceXor),
            _ => Err(format!("bonding mode {s}: active-backup or balance-xor")),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlaveStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames that arrived on a backup slave (dropped, as Linux does in active-backup).
    pub rx_dropped: u64,
    pub link_failures: u64,
}

struct Slave {
    dev: Box<dyn Device>,
    up: bool,
    stats: SlaveStats,
}

pub struct Bond {
    name: String,
    mode: Mode,
    slaves: Vec<Slave>,
    active: usize,
    /// How often link states are read (Linux's miimon).
    pub miimon: Duration,
    last_check: Option<Instant>,
    pub failovers: u64,
    /// Frames sent while no slave had link (balance-xor), dropped.
    pub tx_dropped: u64,
    announce: bool,
    clock: Box<dyn Fn() -> Instant>,
    /// The slaves' descriptors offered to a loop that sleeps on several devices.
    fan: super::WaitFan,
    /// Balance-xor's frames per slave while they are handed over (empty between calls; kept for their room).
    xor_queues: Vec<VecDeque<PacketBuf>>,
}

impl Bond {
    pub fn new(name: &str, mode: Mode, slaves: Vec<Box<dyn Device>>) -> Bond {
        Bond::with_clock(name, mode, slaves, Box::new(Instant::now))
    }

    pub fn with_clock(name: &str, mode: Mode, slaves: Vec<Box<dyn Device>>, clock: Box<dyn Fn() -> Instant>) -> Bond {
        Bond {
            name: name.into(),
            mode,
            slaves: slaves.into_iter().map(|dev| Slave { dev, up: true, stats: SlaveStats::default() }).collect(),
            active: 0,
            miimon: Duration::from_millis(100),
            last_check: None,
            failovers: 0,
            tx_dropped: 0,
            announce: false,
            clock,
            fan: super::WaitFan::default(),
            xor_queues: Vec::new(),
        }
    }

    /// The active slave's name (active-backup).
    pub fn active(&self) -> Option<String> {
        self.slaves.get(self.active).map(|s| s.dev.name())
    }

    pub fn slave_stats(&self) -> Vec<(String, bool, SlaveStats)> {
        self.slaves.iter().map(|s| (s.dev.name(), s.up, s.stats)).collect()
    }

    /// Reads the slaves' links every `miimon`; in active-backup a down active slave hands over.
    fn monitor(&mut self) {
        let now = (self.clock)();
        if self.last_check.is_some_and(|t| now.saturating_duration_since(t) < self.miimon) {
            return;
        }
        self.last_check = Some(now);
        for s in self.slaves.iter_mut() {
            let up = s.dev.link_up();
            if s.up && !up {
                s.stats.link_failures += 1;
                log::warn!("{}: slave {} link down", self.name, s.dev.name());
            }
            s.up = up;
        }
        if self.mode == Mode::ActiveBackup && !self.slaves.get(self.active).is_some_and(|s| s.up) {
            let n = self.slaves.len();
            if let Some(next) = (1..n).map(|k| (self.active + k) % n).find(|&i| self.slaves.get(i).is_some_and(|s| s.up)) {
                self.active = next;
                self.failovers += 1;
                self.announce = true;
                if let Some(s) = self.slaves.get(next) {
                    log::warn!("{}: failover to {} ({})", self.name, s.dev.name(), fmt_mac(&s.dev.mac()));
                }
            }
        }
    }

    /// The slave a frame goes out on in balance-xor: the layer3+4 hash (addresses and ports of IPv4 or
    /// IPv6 TCP/UDP; addresses alone otherwise; the MAC addresses for what is not IP) over the slaves with
    /// link.
    fn xor_slave(&self, frame: &[u8]) -> Option<usize> {
        let up = self.slaves.iter().filter(|s| s.up).count();
        if up == 0 {
            return None;
        }
        let k = layer34_hash(frame) as usize % up;
        self.slaves.iter().enumerate().filter(|(_, s)| s.up).nth(k).map(|(i, _)| i)
    }
}

/// Linux's `layer3+4` transmit hash inputs, folded: source and destination addresses, and for a TCP or
/// UDP packet that is not a fragment, the ports.
pub fn layer34_hash(f: &[u8]) -> u32 {
    let fold = |b: &[u8]| b.chunks(4).fold(0u32, |h, c| h ^ c.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)));
    let et = f.get(12..14).map(|e| u16::from_be_bytes([e[0], e[1]])).unwrap_or(0);
    let (addrs, proto, l4, frag) = match et {
        0x0800 if f.len() >= 34 => {
            let ihl = usize::from(f[14] & 0xF) * 4;
            let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3FFF != 0;
            (&f[26..34], f[23], 14 + ihl, frag)
        }
        0x86DD if f.len() >= 54 => (&f[22..54], f[20], 54, false),
        _ => return fold(f.get(..12).unwrap_or(f)),
    };
    let mut h = fold(addrs);
    if !frag && (proto == 6 || proto == 17) {
        if let Some(p) = f.get(l4..l4 + 4) {
            h ^= fold(p);
        }
    }
    h ^ (h >> 16) ^ (h >> 8)
}

impl Device for Bond {
    fn mac(&self) -> Mac {
        let i = if self.mode == Mode::ActiveBackup { self.active } else { 0 };
        self.slaves.get(i).map(|s| s.dev.mac()).unwrap_or([0; 6])
    }
    fn mtu(&self) -> usize {
        self.slaves.iter().map(|s| s.dev.mtu()).min().unwrap_or(1500)
    }
    fn features(&self) -> super::Features {
        // What every slave offers, so that a failover never finds a packet the new slave cannot send.
        self.slaves
            .iter()
            .map(|s| s.dev.features())
            .reduce(|a, b| super::Features {
                tso: a.tso && b.tso,
                tx_csum: a.tx_csum && b.tx_csum,
                rx_csum: a.rx_csum && b.rx_csum,
                vlan: a.vlan && b.vlan,
                tso6: a.tso6 && b.tso6,
            })
            .unwrap_or_default()
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        self.monitor();
        match self.mode {
            Mode::ActiveBackup => {
                let Some(s) = self.slaves.get_mut(self.active) else { return Ok(0) };
                let n = s.dev.transmit(q)?;
                s.stats.tx_frames += n as u64;
                Ok(n)
            }
            Mode::BalanceXor => {
                // Each frame to its flow's slave (in that slave's queue, kept from call to call); what a
                // slave has no room for goes back into `q`, each flow's frames in their order: a full slave
                // holds back its own flows, not the others'.
                let total = q.len();
                let mut per = std::mem::take(&mut self.xor_queues);
                per.resize_with(self.slaves.len(), VecDeque::new);
                for p in q.drain(..) {
                    match self.xor_slave(p.data()).and_then(|i| per.get_mut(i)) {
                        Some(v) => v.push_back(p),
                        // No slave with link: dropped, as Linux's bond does, and counted.
                        None => self.tx_dropped += 1,
                    }
                }
                let mut failed = None;
                for (s, v) in self.slaves.iter_mut().zip(per.iter_mut()) {
                    while !v.is_empty() && failed.is_none() {
                        match s.dev.transmit(v) {
                            Ok(0) => break,
                            Ok(k) => s.stats.tx_frames += k as u64,
                            Err(e) => failed = Some(e),
                        }
                    }
                    q.extend(v.drain(..));
                }
                self.xor_queues = per;
                match failed {
                    Some(e) => Err(e),
                    None => Ok(total - q.len()),
                }
            }
        }
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        self.monitor();
        let mut n = 0;
        let mut frames = Vec::new();
        for (i, s) in self.slaves.iter_mut().enumerate() {
            frames.clear();
            if let Err(e) = s.dev.poll(budget, &mut frames) {
                log::debug!("{}: slave {}: {e}", self.name, s.dev.name());
            }
            if self.mode == Mode::ActiveBackup && i != self.active {
                s.stats.rx_dropped += frames.len() as u64;
                continue;
            }
            s.stats.rx_frames += frames.len() as u64;
            n += frames.len();
            out.append(&mut frames);
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        // The slaves' descriptors, through this bond's own `wait_fds` and `woke`.
        let timeout = timeout.min(self.miimon);
        super::wait_devices(&mut [self as &mut dyn Device], timeout)
    }
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> io::Result<bool> {
        self.fan.offer(self.slaves.iter_mut().map(|s| s.dev.as_mut() as &mut dyn Device), out)
    }
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        self.fan.woke(self.slaves.iter_mut().map(|s| s.dev.as_mut() as &mut dyn Device), ready)
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn join_multicast(&mut self, mac: Mac) -> io::Result<()> {
        for s in self.slaves.iter_mut() {
            s.dev.join_multicast(mac)?;
        }
        Ok(())
    }
    fn join_vlan(&mut self, vid: u16) -> io::Result<()> {
        for s in self.slaves.iter_mut() {
            s.dev.join_vlan(vid)?;
        }
        Ok(())
    }
    fn link_up(&mut self) -> bool {
        self.slaves.iter().any(|s| s.up)
    }
    /// The mode, the active slave, failovers and drops, each slave's link and counters, and what each
    /// slave has to report itself (a card's interrupts).
    fn report(&self) -> Option<String> {
        let mode = match self.mode {
            Mode::ActiveBackup => "active-backup",
            Mode::BalanceXor => "balance-xor",
        };
        let mut s = format!("bond {} ({mode}): {} failovers, {} dropped with no slave up", self.name, self.failovers, self.tx_dropped);
        if self.mode == Mode::ActiveBackup {
            s += &format!(", active {}", self.active().unwrap_or_default());
        }
        for sl in &self.slaves {
            let st = sl.stats;
            s += &format!(
                "\n  slave {}: link {}, rx {} tx {} dropped {} link failures {}",
                sl.dev.name(),
                if sl.up { "up" } else { "down" },
                st.rx_frames,
                st.tx_frames,
                st.rx_dropped,
                st.link_failures
            );
            if let Some(r) = sl.dev.report() {
                for l in r.lines() {
                    s += &format!("\n    {l}");
                }
            }
        }
        Some(s)
    }
    fn announce_wanted(&mut self) -> bool {
        std::mem::take(&mut self.announce)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// A device whose link the test sets, recording what it sent.
    struct Fake {
        mac: Mac,
        link: Rc<Cell<bool>>,
        sent: Rc<RefCell<Vec<Vec<u8>>>>,
        inbox: Rc<RefCell<VecDeque<PacketBuf>>>,
        /// Frames it has room for (a ring's free descriptors).
        room: Rc<Cell<usize>>,
    }

    impl Device for Fake {
        fn mac(&self) -> Mac {
            self.mac
        }
        fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
            let n = q.len().min(self.room.get());
            self.room.set(self.room.get() - n);
            self.sent.borrow_mut().extend(q.drain(..n).map(|p| p.data().to_vec()));
            Ok(n)
        }
        fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
            let mut i = self.inbox.borrow_mut();
            let n = budget.min(i.len());
            out.extend(i.drain(..n));
            Ok(n)
        }
        fn wait(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            format!("fake{}", self.mac[5])
        }
        fn link_up(&mut self) -> bool {
            self.link.get()
        }
    }

    type Handles = (Rc<Cell<bool>>, Rc<RefCell<Vec<Vec<u8>>>>, Rc<RefCell<VecDeque<PacketBuf>>>, Rc<Cell<usize>>);

    fn fake(i: u8) -> (Box<dyn Device>, Handles) {
        let h: Handles = (Rc::new(Cell::new(true)), Rc::default(), Rc::default(), Rc::new(Cell::new(usize::MAX)));
        (Box::new(Fake { mac: [2, 0, 0, 0, 0, i], link: h.0.clone(), sent: h.1.clone(), inbox: h.2.clone(), room: h.3.clone() }), h)
    }

    fn tcp(sport: u16) -> PacketBuf {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        PacketBuf::from_slice(&f)
    }

    #[test]
    fn active_backup_fails_over_announces_and_drops_what_backups_receive() {
        let (a, ha) = fake(1);
        let (b, hb) = fake(2);
        let clock = Rc::new(Cell::new(Instant::now()));
        let c2 = clock.clone();
        let mut bond = Bond::with_clock("bond0", Mode::ActiveBackup, vec![a, b], Box::new(move || c2.get()));
        bond.transmit(&mut VecDeque::from([tcp(1)])).unwrap();
        assert_eq!((ha.1.borrow().len(), hb.1.borrow().len()), (1, 0));
        assert_eq!(bond.mac(), [2, 0, 0, 0, 0, 1]);
        hb.2.borrow_mut().push_back(tcp(9));
        let mut got = Vec::new();
        bond.poll(8, &mut got).unwrap();
        assert!(got.is_empty(), "a backup's frames are dropped");
        // The active link goes down: after the next monitor tick the backup takes over.
        ha.0.set(false);
        bond.transmit(&mut VecDeque::from([tcp(1)])).unwrap();
        assert_eq!(ha.1.borrow().len(), 2, "not noticed before miimon");
        clock.set(clock.get() + Duration::from_millis(100));
        bond.transmit(&mut VecDeque::from([tcp(1)])).unwrap();
        assert_eq!((bond.active().unwrap(), hb.1.borrow().len()), ("fake2".to_string(), 1));
        assert_eq!(bond.mac(), [2, 0, 0, 0, 0, 2], "the address follows the active slave");
        assert!(bond.announce_wanted() && !bond.announce_wanted(), "one announcement per failover");
        assert_eq!(bond.slave_stats()[0].2.link_failures, 1);
        // Back up: no failback (Linux's default primary_reselect with no primary).
        ha.0.set(true);
        clock.set(clock.get() + Duration::from_millis(100));
        bond.transmit(&mut VecDeque::from([tcp(1)])).unwrap();
        assert_eq!(bond.active().unwrap(), "fake2");
    }

    #[test]
    fn balance_xor_keeps_flows_together_and_spreads_them() {
        let (a, ha) = fake(1);
        let (b, hb) = fake(2);
        let clock = Rc::new(Cell::new(Instant::now()));
        let c2 = clock.clone();
        let mut bond = Bond::with_clock("bond0", Mode::BalanceXor, vec![a, b], Box::new(move || c2.get()));
        for _ in 0..3 {
            let mut q: VecDeque<PacketBuf> = (0..64).map(tcp).collect();
            bond.transmit(&mut q).unwrap();
        }
        let (na, nb) = (ha.1.borrow().len(), hb.1.borrow().len());
        assert_eq!(na + nb, 192);
        assert!(na >= 48 && nb >= 48, "64 flows spread over two slaves: {na} / {nb}");
        // Each flow always on the same slave.
        for port in 0..64u16 {
            let on_a = ha.1.borrow().iter().filter(|f| f[34..36] == port.to_be_bytes()).count();
            assert!(on_a == 0 || on_a == 3, "flow {port} split");
        }
        // A slave down: everything on the other.
        hb.0.set(false);
        clock.set(clock.get() + Duration::from_millis(100));
        let mut q: VecDeque<PacketBuf> = (0..10).map(tcp).collect();
        bond.transmit(&mut q).unwrap();
        assert_eq!(ha.1.borrow().len(), na + 10);
        assert_ne!(layer34_hash(tcp(1).data()), layer34_hash(tcp(2).data()));
    }

    /// A slave with no room holds back its own flows, not the other slave's: what it could not take stays
    /// in the caller's queue in order (it used to be dropped while the call reported it sent) and goes when
    /// room comes; with no slave up, frames are dropped and counted, and the report shows it all.
    #[test]
    fn balance_xor_leaves_what_a_full_slave_cannot_take_with_the_caller() {
        let (a, ha) = fake(1);
        let (b, hb) = fake(2);
        let clock = Rc::new(Cell::new(Instant::now()));
        let c2 = clock.clone();
        let mut bond = Bond::with_clock("bond0", Mode::BalanceXor, vec![a, b], Box::new(move || c2.get()));
        let port = |f: &[u8]| u16::from_be_bytes([f[34], f[35]]);
        // Which flows go to which slave, learned with room everywhere.
        bond.transmit(&mut (0..64).map(tcp).collect()).unwrap();
        let on_a: Vec<u16> = ha.1.borrow().iter().map(|f| port(f)).collect();
        let on_b: Vec<u16> = hb.1.borrow().iter().map(|f| port(f)).collect();
        assert!(on_a.len() >= 8 && on_b.len() >= 8, "{on_a:?} {on_b:?}");
        ha.1.borrow_mut().clear();
        hb.1.borrow_mut().clear();
        // Slave A has room for 3.
        ha.3.set(3);
        let mut q: VecDeque<PacketBuf> = (0..64).map(tcp).collect();
        let n = bond.transmit(&mut q).unwrap();
        assert_eq!(n, 3 + on_b.len());
        assert_eq!(hb.1.borrow().iter().map(|f| port(f)).collect::<Vec<_>>(), on_b, "B's flows all went");
        assert_eq!(ha.1.borrow().iter().map(|f| port(f)).collect::<Vec<_>>(), on_a[..3]);
        let kept: Vec<u16> = q.iter().map(|p| port(p.data())).collect();
        assert_eq!(kept, on_a[3..], "A's other frames wait with the caller, in order");
        ha.3.set(usize::MAX);
        assert_eq!(bond.transmit(&mut q).unwrap(), on_a.len() - 3);
        assert!(q.is_empty());
        assert_eq!(ha.1.borrow().iter().map(|f| port(f)).collect::<Vec<_>>(), on_a);
        // No slave up: dropped and counted.
        ha.0.set(false);
        hb.0.set(false);
        clock.set(clock.get() + Duration::from_millis(100));
        let mut q: VecDeque<PacketBuf> = (0..5).map(tcp).collect();
        assert_eq!(bond.transmit(&mut q).unwrap(), 5);
        assert_eq!(bond.tx_dropped, 5);
        let r = bond.report().unwrap();
        assert!(r.starts_with("bond bond0 (balance-xor): 0 failovers, 5 dropped with no slave up"), "{r}");
        assert!(r.contains(&format!("slave fake1: link down, rx 0 tx {} dropped 0 link failures 1", 2 * on_a.len())), "{r}");
    }
}
