//! 802.1Q VLAN sub-interfaces on any Ethernet device (as Linux's `ip link add link eth0 name eth0.100
//! type vlan id 100`). A [`VlanMux`] owns the parent device and hands out one device per VLAN plus one for
//! the untagged traffic; frames are sorted by their tag, whether it is still in the frame or the card
//! stripped it into the descriptor. On transmit the tag goes into the descriptor when the card inserts
//! tags (the 82574L with CTRL.VME, through our driver) and into the frame otherwise; each VLAN joined is
//! entered into the card's VLAN filter table where it has one.

use super::Device;
use crate::skb::{Csum, PacketBuf};
use crate::wire::Mac;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

const TPID: [u8; 2] = [0x81, 0x00];
const VID_MASK: u16 = 0x0FFF;
const QUEUE: usize = 1024;

/// Per-VLAN counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VlanStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames for a VLAN nobody joined.
    pub rx_unknown: u64,
    /// Frames dropped because the sub-interface's queue was full (it was not polled for QUEUE frames).
    pub rx_dropped: u64,
}

pub struct VlanMux {
    parent: Box<dyn Device>,
    /// Tags go in descriptors (the card inserts them) rather than in the frame.
    offload: bool,
    queues: HashMap<Option<u16>, VecDeque<PacketBuf>>,
    stats: HashMap<Option<u16>, VlanStats>,
    unknown: u64,
    /// The sub-interface that offers the parent's descriptors to a loop sleeping on several devices: the
    /// parent is armed and told what woke it once per sleep, not once per VLAN.
    waiter: Option<u64>,
    next_id: u64,
    /// How many times the parent asked for its addresses to be announced (a bond that failed over): each
    /// sub-interface passes every such request on once, as Linux's VLANs pass on NETDEV_NOTIFY_PEERS.
    announces: u64,
}

/// A shared multiplexer: every sub-interface polls the parent through it.
pub type Shared = Rc<RefCell<VlanMux>>;

impl VlanMux {
    /// Over `parent`; `offload`: tags in descriptors (`None`: when the parent says it can). Asking for
    /// tags in descriptors from a parent that does not insert them is an error: its frames would leave
    /// untagged.
    pub fn new(parent: Box<dyn Device>, offload: Option<bool>) -> io::Result<Shared> {
        check_offload(parent.as_ref(), offload)?;
        let offload = offload.unwrap_or(parent.features().vlan);
        let mut queues = HashMap::new();
        queues.insert(None, VecDeque::new());
        Ok(Rc::new(RefCell::new(VlanMux {
            parent,
            offload,
            queues,
            stats: HashMap::new(),
            unknown: 0,
            waiter: None,
            next_id: 0,
            announces: 0,
        })))
    }

    fn sub(mux: &Shared, vid: Option<u16>) -> VlanDev {
        let mut m = mux.borrow_mut();
        m.next_id += 1;
        VlanDev { mux: mux.clone(), vid, id: m.next_id, offload: m.offload, offered: Offered::default(), announced: m.announces }
    }

    /// The sub-interface for VLAN `vid` (1-4094), entered into the parent's VLAN filter.
    pub fn vlan(mux: &Shared, vid: u16) -> io::Result<VlanDev> {
        if !(1..=4094).contains(&vid) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("VLAN id {vid}: 1 to 4094")));
        }
        {
            let mut m = mux.borrow_mut();
            m.queues.entry(Some(vid)).or_default();
            m.parent.join_vlan(vid)?;
        }
        Ok(Self::sub(mux, Some(vid)))
    }

    /// The parent's untagged traffic, as a device of its own.
    pub fn untagged(mux: &Shared) -> VlanDev {
        Self::sub(mux, None)
    }

    /// What the parent has to report (a card's interrupts read, an XDP program's counters).
    pub fn parent_report(&self) -> Option<String> {
        self.parent.report()
    }

    /// Counters per VLAN (`None`: untagged), and frames for VLANs nobody joined.
    pub fn stats(&self) -> (Vec<(Option<u16>, VlanStats)>, u64) {
        let mut v: Vec<_> = self.stats.iter().map(|(k, s)| (*k, *s)).collect();
        v.sort_by_key(|e| e.0);
        (v, self.unknown)
    }

    /// Polls the parent and sorts what came by VLAN.
    fn pump(&mut self, budget: usize) -> io::Result<()> {
        let mut frames = Vec::new();
        self.parent.poll(budget, &mut frames)?;
        for p in frames {
            let (vid, p) = untag(p);
            let st = self.stats.entry(vid).or_default();
            match self.queues.get_mut(&vid) {
                Some(q) if q.len() < QUEUE => {
                    st.rx_frames += 1;
                    q.push_back(p);
                }
                Some(_) => st.rx_dropped += 1,
                None => self.unknown += 1,
            }
        }
        Ok(())
    }
}

/// A frame's VLAN and the frame without its tag (in the frame, or in the metadata the card filled).
fn untag(mut p: PacketBuf) -> (Option<u16>, PacketBuf) {
    if let Some(tci) = p.vlan.take() {
        return (Some(tci & VID_MASK), p);
    }
    let d = p.data();
    if d.len() >= 18 && d[12..14] == TPID {
        let vid = u16::from_be_bytes([d[14], d[15]]) & VID_MASK;
        let mut f = d[..12].to_vec();
        f.extend_from_slice(&d[16..]);
        let mut q = PacketBuf::from_slice(&f);
        q.csum = p.csum;
        return (Some(vid), q);
    }
    (None, p)
}

/// The frame with an 802.1Q tag after the addresses; offsets behind it move by four bytes.
fn tag(p: &PacketBuf, vid: u16) -> PacketBuf {
    let d = p.to_vec();
    let mut f = Vec::with_capacity(d.len() + 4);
    f.extend_from_slice(&d[..12.min(d.len())]);
    f.extend_from_slice(&TPID);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(d.get(12..).unwrap_or(&[]));
    let mut q = PacketBuf::from_slice(&f);
    let shift = |o: Option<usize>| o.map(|o| if o >= 12 { o + 4 } else { o });
    q.mac_header = p.mac_header;
    q.network_header = shift(p.network_header);
    q.transport_header = shift(p.transport_header);
    q.csum = match p.csum {
        Csum::Partial { start, offset } => Csum::Partial { start: start + 4, offset },
        c => c,
    };
    q.gso = p.gso;
    q
}

/// What a sub-interface offered at its last `wait_fds`, in order: the always-readable descriptor, then
/// the parent's descriptors.
#[derive(Default)]
struct Offered {
    ready: bool,
    parent: Option<usize>,
}

/// One VLAN (or the untagged traffic) of a multiplexed device.
pub struct VlanDev {
    mux: Shared,
    vid: Option<u16>,
    /// Which sub-interface of the mux this is (two may carry one VLAN).
    id: u64,
    /// Tags in descriptors (the card inserts them) rather than in the frame.
    offload: bool,
    offered: Offered,
    /// The parent's announcement requests this sub-interface has passed on.
    announced: u64,
}

impl VlanDev {
    /// Tags in descriptors (`Some(true)`) or in the frame (`Some(false)`) for this VLAN alone; `None`
    /// keeps the mux's choice. Tags in descriptors from a parent that does not insert them: an error.
    pub fn offload(mut self, on: Option<bool>) -> io::Result<VlanDev> {
        check_offload(self.mux.borrow().parent.as_ref(), on)?;
        if let Some(on) = on {
            self.offload = on;
        }
        Ok(self)
    }
}

fn check_offload(parent: &dyn Device, offload: Option<bool>) -> io::Result<()> {
    if offload == Some(true) && !parent.features().vlan {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tags in descriptors: {} does not insert VLAN tags (carry them in the frame)", parent.name()),
        ));
    }
    Ok(())
}

impl Drop for VlanDev {
    fn drop(&mut self) {
        if let Ok(mut m) = self.mux.try_borrow_mut() {
            if m.waiter == Some(self.id) {
                m.waiter = None;
            }
        }
    }
}

impl Device for VlanDev {
    fn mac(&self) -> Mac {
        self.mux.borrow().parent.mac()
    }
    fn mtu(&self) -> usize {
        self.mux.borrow().parent.mtu()
    }
    fn features(&self) -> super::Features {
        let m = self.mux.borrow();
        let f = m.parent.features();
        // Checksums and segmentation stay with the card only where it sees through the tag: with the tag
        // in the descriptor.
        if self.vid.is_none() || self.offload {
            f
        } else {
            super::Features { tso: false, tx_csum: false, tso6: false, ..f }
        }
    }
    /// Takes from the front of `q` what the parent takes, as the parent does: frames it had no room for
    /// stay in `q`, untagged, for the next call.
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut m = self.mux.borrow_mut();
        let sent = match self.vid {
            None => m.parent.transmit(q)?,
            Some(vid) if self.offload => {
                for p in q.iter_mut() {
                    p.vlan = Some(vid);
                }
                let r = m.parent.transmit(q);
                for p in q.iter_mut() {
                    p.vlan = None;
                }
                r?
            }
            Some(vid) => {
                // Tagged copies, a batch at a time so that few are made for a full ring.
                let mut sent = 0;
                while !q.is_empty() {
                    let batch = q.len().min(64);
                    let mut out: VecDeque<PacketBuf> = q.iter().take(batch).map(|p| tag(p, vid)).collect();
                    let k = m.parent.transmit(&mut out)?.min(batch);
                    q.drain(..k);
                    sent += k;
                    if k < batch {
                        break;
                    }
                }
                sent
            }
        };
        m.stats.entry(self.vid).or_default().tx_frames += sent as u64;
        Ok(sent)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut m = self.mux.borrow_mut();
        m.pump(budget)?;
        let q = m.queues.entry(self.vid).or_default();
        let n = q.len().min(budget);
        out.extend(q.drain(..n));
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let mut m = self.mux.borrow_mut();
        if m.queues.get(&self.vid).is_some_and(|q| !q.is_empty()) {
            return Ok(());
        }
        m.parent.wait(timeout)
    }
    fn name(&self) -> String {
        let m = self.mux.borrow();
        match self.vid {
            Some(v) => format!("{}.{v}", m.parent.name()),
            None => m.parent.name(),
        }
    }
    fn join_multicast(&mut self, mac: Mac) -> io::Result<()> {
        self.mux.borrow_mut().parent.join_multicast(mac)
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.mux.borrow().parent.raw_fd()
    }
    /// Frames already sorted into this VLAN's queue (by another VLAN's poll) offer a descriptor that is
    /// readable now; the parent's own descriptors (a card's interrupt eventfds) are offered by one
    /// sub-interface of the mux only, so that the parent is armed, and told what woke it, once per sleep.
    fn wait_fds(&mut self, out: &mut Vec<RawFd>) -> io::Result<bool> {
        let mut m = self.mux.borrow_mut();
        let mut all = true;
        self.offered = Offered::default();
        if m.queues.get(&self.vid).is_some_and(|q| !q.is_empty()) {
            match super::ready_now() {
                Some(fd) => {
                    out.push(fd);
                    self.offered.ready = true;
                }
                None => all = false,
            }
        }
        if m.waiter.is_none_or(|w| w == self.id) {
            m.waiter = Some(self.id);
            let before = out.len();
            all &= m.parent.wait_fds(out)?;
            self.offered.parent = Some(out.len() - before);
        }
        Ok(all)
    }
    fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
        let start = usize::from(self.offered.ready);
        match self.offered.parent.take() {
            Some(n) => self.mux.borrow_mut().parent.woke(ready.get(start..start + n).unwrap_or_default()),
            None => Ok(()),
        }
    }
    fn link_up(&mut self) -> bool {
        self.mux.borrow_mut().parent.link_up()
    }
    fn announce_wanted(&mut self) -> bool {
        let mut m = self.mux.borrow_mut();
        if m.parent.announce_wanted() {
            m.announces += 1;
        }
        let wanted = self.announced < m.announces;
        self.announced = m.announces;
        wanted
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dev::sim::{link, Impairment};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn frame(ethertype: [u8; 2], body: &[u8]) -> PacketBuf {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(body);
        PacketBuf::from_slice(&f)
    }

    #[test]
    fn frames_are_sorted_by_tag_and_tagged_on_the_way_out() {
        let clock = Rc::new(RefCell::new(crate::time::Instant::ZERO));
        let (a, mut b) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock);
        let mux = VlanMux::new(Box::new(a), Some(false)).unwrap();
        let mut v100 = VlanMux::vlan(&mux, 100).unwrap();
        let mut plain = VlanMux::untagged(&mux);
        assert!(VlanMux::vlan(&mux, 4095).is_err());
        // In: one tagged for 100, one for 200 (nobody's), one untagged, one tagged in metadata only.
        let mut tagged = vec![0x00, 0x64, 0x08, 0x00];
        tagged.extend_from_slice(&[0xAB; 46]);
        let mut other = vec![0x00, 0xC8, 0x08, 0x00];
        other.extend_from_slice(&[0; 46]);
        let mut meta = frame([0x08, 0x00], &[0xCD; 46]);
        meta.vlan = Some(0x2064); // priority 1, VID 100
        let mut q = VecDeque::from([frame(TPID, &tagged), frame(TPID, &other), frame([0x08, 0x00], &[0xEE; 46]), meta]);
        b.transmit(&mut q).unwrap();
        let mut got = Vec::new();
        v100.poll(64, &mut got).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data()[12..14], [0x08, 0x00], "tag removed");
        assert_eq!(got[0].data()[14], 0xAB);
        assert_eq!(got[1].data()[14], 0xCD);
        got.clear();
        plain.poll(64, &mut got).unwrap();
        assert_eq!((got.len(), got[0].data()[14]), (1, 0xEE));
        assert_eq!(mux.borrow().stats().1, 1, "VLAN 200 counted as unknown");
        // Out through VLAN 100 without offload: the tag is in the frame, offsets behind it moved.
        let mut p = frame([0x08, 0x00], &[0x45; 46]);
        p.network_header = Some(14);
        p.csum = Csum::Partial { start: 34, offset: 16 };
        v100.transmit(&mut VecDeque::from([p])).unwrap();
        let mut seen = Vec::new();
        b.poll(64, &mut seen).unwrap();
        assert_eq!(seen[0].data()[12..16], [0x81, 0x00, 0x00, 0x64]);
        assert_eq!(seen[0].network_header, Some(18), "offsets behind the tag moved");
        assert_eq!(seen[0].csum, Csum::Partial { start: 38, offset: 16 });
        assert!(!v100.features().tx_csum, "no checksum offload through a tag in the frame");
    }

    /// A parent with a descriptor of its own, counting how often it is armed (`wait_fds`) and what it is
    /// told woke it.
    struct Armed {
        fd: OwnedFd,
        frames: VecDeque<PacketBuf>,
        armed: Rc<std::cell::Cell<u32>>,
        woken: Rc<RefCell<Vec<Vec<bool>>>>,
    }

    impl Device for Armed {
        fn mac(&self) -> Mac {
            [2, 0, 0, 0, 0, 1]
        }
        fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
            let n = q.len();
            q.clear();
            Ok(n)
        }
        fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
            let n = self.frames.len().min(budget);
            out.extend(self.frames.drain(..n));
            Ok(n)
        }
        fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "armed".into()
        }
        fn wait_fds(&mut self, out: &mut Vec<RawFd>) -> io::Result<bool> {
            self.armed.set(self.armed.get() + 1);
            out.push(self.fd.as_raw_fd());
            Ok(true)
        }
        fn woke(&mut self, ready: &[bool]) -> io::Result<()> {
            self.woken.borrow_mut().push(ready.to_vec());
            Ok(())
        }
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor, owned from here on.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: one pollfd of ours, no wait.
        unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
        p[0].revents & libc::POLLIN != 0
    }

    /// Sub-interfaces sleeping in one loop: the parent (a card, whose `wait_fds` re-arms its interrupts and
    /// whose `woke` reads them) is armed and told once per sleep, whichever VLANs are slept on and in which
    /// order; a VLAN whose frames another VLAN's poll sorted into its queue offers a descriptor that is
    /// readable at once, so the loop does not sleep past them.
    #[test]
    fn the_parent_is_armed_once_per_sleep_and_queued_frames_keep_the_loop_awake() {
        let armed = Rc::new(std::cell::Cell::new(0));
        let woken: Rc<RefCell<Vec<Vec<bool>>>> = Rc::default();
        let mut t100 = vec![0x00, 0x64, 0x08, 0x00];
        t100.extend_from_slice(&[0xAB; 46]);
        let mut t200 = vec![0x00, 0xC8, 0x08, 0x00];
        t200.extend_from_slice(&[0xCD; 46]);
        let fd = eventfd();
        let parent_fd = fd.as_raw_fd();
        let parent =
            Armed { fd, frames: VecDeque::from([frame(TPID, &t200), frame(TPID, &t100)]), armed: armed.clone(), woken: woken.clone() };
        let mux = VlanMux::new(Box::new(parent), Some(false)).unwrap();
        let mut v100 = VlanMux::vlan(&mux, 100).unwrap();
        let mut v200 = VlanMux::vlan(&mux, 200).unwrap();
        let mut got = Vec::new();
        assert_eq!(v100.poll(64, &mut got).unwrap(), 1);
        // VLAN 200's frame waits in its queue: its offer starts with a descriptor readable now.
        let mut fds = Vec::new();
        assert!(v200.wait_fds(&mut fds).unwrap());
        let mine = fds.len();
        assert!(v100.wait_fds(&mut fds).unwrap());
        assert_eq!(armed.get(), 1, "the parent armed once for two VLANs");
        assert_eq!(mine, 2, "VLAN 200: the ready descriptor and the parent's");
        assert_eq!(fds.len(), 2, "VLAN 100 offered nothing more");
        assert!(readable(fds[0]) && fds[1] == parent_fd && !readable(parent_fd));
        v200.woke(&[true, false]).unwrap();
        v100.woke(&[]).unwrap();
        assert_eq!(*woken.borrow(), vec![vec![false]]);
        got.clear();
        assert_eq!(v200.poll(64, &mut got).unwrap(), 1);
        assert_eq!(got[0].data()[14], 0xCD);
        // Queues empty: a real sleep, woken by the parent's descriptor, the VLANs in the other order.
        // SAFETY: an 8-byte write of a local to our eventfd.
        assert_eq!(unsafe { libc::write(parent_fd, 1u64.to_ne_bytes().as_ptr().cast(), 8) }, 8);
        crate::dev::wait_devices(&mut [&mut v100 as &mut dyn Device, &mut v200], Duration::from_secs(20)).unwrap();
        assert_eq!(armed.get(), 2);
        assert_eq!(*woken.borrow(), vec![vec![false], vec![true]], "the parent heard its own descriptor, once");
        // The sub-interface that offered the parent goes: another takes over.
        drop(v200);
        fds.clear();
        assert!(v100.wait_fds(&mut fds).unwrap());
        assert_eq!((armed.get(), fds), (3, vec![parent_fd]));
        v100.woke(&[true]).unwrap();
        assert_eq!(woken.borrow().len(), 3);
    }

    /// A parent that inserts tags, takes at most `room` frames per call and keeps them, and wants its
    /// addresses announced (as a bond that failed over) as many times as `announce` says, once each.
    struct Recorder {
        room: usize,
        took: Rc<RefCell<Vec<PacketBuf>>>,
        announce: Rc<std::cell::Cell<u32>>,
    }

    impl Recorder {
        fn new(room: usize) -> Recorder {
            Recorder { room, took: Rc::default(), announce: Rc::default() }
        }
    }

    impl Device for Recorder {
        fn mac(&self) -> Mac {
            [2, 0, 0, 0, 0, 1]
        }
        fn features(&self) -> crate::dev::Features {
            crate::dev::Features { vlan: true, ..Default::default() }
        }
        fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
            let n = q.len().min(self.room);
            self.took.borrow_mut().extend(q.drain(..n));
            Ok(n)
        }
        fn poll(&mut self, _budget: usize, _out: &mut Vec<PacketBuf>) -> io::Result<usize> {
            Ok(0)
        }
        fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "recorder".into()
        }
        fn announce_wanted(&mut self) -> bool {
            let n = self.announce.get();
            self.announce.set(n.saturating_sub(1));
            n > 0
        }
    }

    /// A VLAN takes what its parent has room for, no more: the rest stay with the caller, untagged, and
    /// go on the next call (they used to be dropped while the call reported them sent). Each VLAN tags
    /// its own way: one in descriptors, one in the frame, over one mux.
    #[test]
    fn frames_the_parent_has_no_room_for_stay_with_the_caller() {
        let parent = Recorder::new(3);
        let took = parent.took.clone();
        let mux = VlanMux::new(Box::new(parent), Some(true)).unwrap();
        let mut meta = VlanMux::vlan(&mux, 100).unwrap();
        let mut inframe = VlanMux::vlan(&mux, 200).unwrap().offload(Some(false)).unwrap();
        for (dev, vid) in [(&mut meta, 100u16), (&mut inframe, 200)] {
            took.borrow_mut().clear();
            let mut q: VecDeque<PacketBuf> = (0..5u8).map(|i| frame([0x08, 0x00], &[i; 46])).collect();
            assert_eq!(dev.transmit(&mut q).unwrap(), 3, "VLAN {vid}");
            assert_eq!(q.len(), 2);
            for (i, p) in q.iter().enumerate() {
                assert_eq!((p.vlan, p.data().len(), p.data()[14]), (None, 60, 3 + i as u8), "VLAN {vid}: left as given");
            }
            assert_eq!(dev.transmit(&mut q).unwrap(), 2);
            assert!(q.is_empty());
            let took = took.borrow();
            assert_eq!(took.len(), 5);
            for (i, p) in took.iter().enumerate() {
                if vid == 100 {
                    assert_eq!((p.vlan, p.data()[14]), (Some(100), i as u8));
                } else {
                    assert_eq!((p.vlan, &p.data()[12..16], p.data()[18]), (None, &[0x81, 0x00, 0x00, 0xC8][..], i as u8));
                }
            }
        }
        let (per, _) = mux.borrow().stats();
        assert!(per.iter().filter(|e| e.0.is_some()).all(|e| e.1.tx_frames == 5), "{per:?}");
    }

    /// A failover under VLANs is announced on every VLAN once (it was lost: no VLAN passed it on), however
    /// the VLANs' polls interleave; a stack on a VLAN sends its gratuitous ARP tagged with that VLAN.
    #[test]
    fn every_vlan_passes_on_the_parents_announcement_once() {
        let parent = Recorder::new(usize::MAX);
        let (sent, pending) = (parent.took.clone(), parent.announce.clone());
        let mux = VlanMux::new(Box::new(parent), Some(false)).unwrap();
        let (mut v100, mut v200, mut plain) =
            (VlanMux::vlan(&mux, 100).unwrap(), VlanMux::vlan(&mux, 200).unwrap(), VlanMux::untagged(&mux));
        assert!(!v100.announce_wanted() && !v200.announce_wanted() && !plain.announce_wanted());
        pending.set(1);
        assert!(v200.announce_wanted() && !v200.announce_wanted());
        assert!(v100.announce_wanted() && plain.announce_wanted());
        assert!(!v100.announce_wanted() && !plain.announce_wanted() && !v200.announce_wanted());
        // Two failovers before a VLAN looks: it announces once, which covers both.
        pending.set(1);
        assert!(v100.announce_wanted());
        pending.set(1);
        assert!(v100.announce_wanted() && v200.announce_wanted() && plain.announce_wanted());
        assert!(!v200.announce_wanted());
        // A stack on VLAN 300: after its first announcement, a failover makes it announce again, tagged.
        let mut st = crate::Stack::new(Box::new(VlanMux::vlan(&mux, 300).unwrap()), crate::Config::new([10, 3, 0, 2], 24));
        let mut now = crate::time::Instant::from_millis(1);
        st.poll(now);
        let garp = |p: &PacketBuf| {
            let f = p.data();
            f.len() >= 46 && f[12..18] == [0x81, 0x00, 0x01, 0x2C, 0x08, 0x06] && f[32..36] == [10, 3, 0, 2]
        };
        let first = sent.borrow().iter().filter(|f| garp(f)).count();
        assert!(first >= 1, "announced at start");
        now = now + Duration::from_millis(10);
        st.poll(now);
        assert_eq!(sent.borrow().iter().filter(|f| garp(f)).count(), first, "nothing new without a failover");
        pending.set(1);
        now = now + Duration::from_millis(10);
        st.poll(now);
        assert_eq!(sent.borrow().iter().filter(|f| garp(f)).count(), 2 * first, "announced again after the failover, tagged 300");
    }

    /// A sub-interface nobody polls loses what does not fit its queue, counted.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut frames = VecDeque::new();
        for _ in 0..QUEUE + 5 {
            let mut t = vec![0x00, 0xC8, 0x08, 0x00];
            t.extend_from_slice(&[0; 46]);
            frames.push_back(frame(TPID, &t));
        }
        let parent = Armed { fd: eventfd(), frames, armed: Rc::default(), woken: Rc::default() };
        let mux = VlanMux::new(Box::new(parent), Some(false)).unwrap();
        let mut v100 = VlanMux::vlan(&mux, 100).unwrap();
        let _v200 = VlanMux::vlan(&mux, 200).unwrap();
        let mut got = Vec::new();
        for _ in 0..((QUEUE + 5) / 64 + 1) {
            v100.poll(64, &mut got).unwrap();
        }
        assert!(got.is_empty());
        let (per, _) = mux.borrow().stats();
        let s200 = per.iter().find(|e| e.0 == Some(200)).unwrap().1;
        assert_eq!((s200.rx_frames, s200.rx_dropped), (QUEUE as u64, 5));
    }

    #[test]
    fn with_offload_the_tag_goes_in_the_metadata() {
        let clock = Rc::new(RefCell::new(crate::time::Instant::ZERO));
        let (a, _b) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock.clone());
        let p = frame([0x08, 0x00], &[0; 46]);
        let t = tag(&p, 7);
        assert_eq!(t.data().len(), p.data().len() + 4);
        assert!(VlanMux::new(Box::new(a), Some(true)).is_err(), "the simulated link does not insert tags");
        let (a, _b) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock);
        let mux = VlanMux::new(Box::new(a), None).unwrap();
        let v = VlanMux::vlan(&mux, 7).unwrap();
        assert_eq!(v.name(), "sim.7");
        assert!(v.offload(Some(true)).is_err());
    }
}
