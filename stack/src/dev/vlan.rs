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
}

pub struct VlanMux {
    parent: Box<dyn Device>,
    /// Tags go in descriptors (the card inserts them) rather than in the frame.
    offload: bool,
    queues: HashMap<Option<u16>, VecDeque<PacketBuf>>,
    stats: HashMap<Option<u16>, VlanStats>,
    unknown: u64,
}

/// A shared multiplexer: every sub-interface polls the parent through it.
pub type Shared = Rc<RefCell<VlanMux>>;

impl VlanMux {
    /// Over `parent`; `offload`: tags in descriptors (`None`: when the parent says it can).
    pub fn new(parent: Box<dyn Device>, offload: Option<bool>) -> Shared {
        let offload = offload.unwrap_or(parent.features().vlan);
        let mut queues = HashMap::new();
        queues.insert(None, VecDeque::new());
        Rc::new(RefCell::new(VlanMux { parent, offload, queues, stats: HashMap::new(), unknown: 0 }))
    }

    /// The sub-interface for VLAN `vid` (1-4094), entered into the parent's VLAN filter.
    pub fn vlan(mux: &Shared, vid: u16) -> io::Result<VlanDev> {
        if !(1..=4094).contains(&vid) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("VLAN id {vid}: 1 to 4094")));
        }
        let mut m = mux.borrow_mut();
        m.queues.entry(Some(vid)).or_default();
        m.parent.join_vlan(vid)?;
        Ok(VlanDev { mux: mux.clone(), vid: Some(vid) })
    }

    /// The parent's untagged traffic, as a device of its own.
    pub fn untagged(mux: &Shared) -> VlanDev {
        VlanDev { mux: mux.clone(), vid: None }
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
                Some(_) => {}
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

/// One VLAN (or the untagged traffic) of a multiplexed device.
pub struct VlanDev {
    mux: Shared,
    vid: Option<u16>,
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
        if self.vid.is_none() || m.offload {
            f
        } else {
            super::Features { tso: false, tx_csum: false, tso6: false, ..f }
        }
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut m = self.mux.borrow_mut();
        let n = q.len();
        let mut out: VecDeque<PacketBuf> = match self.vid {
            None => std::mem::take(q),
            Some(vid) if m.offload => q
                .drain(..)
                .map(|mut p| {
                    p.vlan = Some(vid);
                    p
                })
                .collect(),
            Some(vid) => q.drain(..).map(|p| tag(&p, vid)).collect(),
        };
        m.stats.entry(self.vid).or_default().tx_frames += n as u64;
        while !out.is_empty() {
            if m.parent.transmit(&mut out)? == 0 {
                break;
            }
        }
        Ok(n)
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
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dev::sim::{link, Impairment};

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
        let mux = VlanMux::new(Box::new(a), Some(false));
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

    #[test]
    fn with_offload_the_tag_goes_in_the_metadata() {
        let clock = Rc::new(RefCell::new(crate::time::Instant::ZERO));
        let (a, _b) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock);
        let p = frame([0x08, 0x00], &[0; 46]);
        let t = tag(&p, 7);
        assert_eq!(t.data().len(), p.data().len() + 4);
        let mux = VlanMux::new(Box::new(a), Some(true));
        let v = VlanMux::vlan(&mux, 7).unwrap();
        assert_eq!(v.name(), "sim.7");
    }
}
