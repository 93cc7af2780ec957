//! Receive: address and VLAN filtering (`Core::rx_admit`), then the MAC's stage in `RxPath` (VLAN
//! stripping, FCS, checksum status, the RSS hash and the queue it picks), then the queue's engine
//! (`RxQueue`) writing the frame into its descriptor ring (legacy, extended or packet-split descriptors).
//! Frames that find no descriptor wait in a FIFO the size of the on-chip receive buffer; when that
//! overflows they are missed (MPC, RXO). A frame is copied only when the card changes it (tag stripped,
//! FCS appended), into a buffer reused for every frame.

use crate::bytes::{be16, sub, u8_at};
use crate::desc::{RxExtWb, RxLegacy, RxPsRead, RxPsWb};
use crate::fault::Kind as FaultKind;
use crate::metrics::Metrics;
use crate::nic::Core;
use crate::offload::{csum_add, csum_fold};
use crate::port::{QueueCtx, RegFile};
use crate::regs::*;
use std::collections::VecDeque;
use vm_memory::ByteValued;

/// The on-chip receive packet buffer (PBA.RXA, 20 KiB by default on the 82574L).
pub const RX_FIFO_BYTES: usize = 20 * 1024;
/// Longest frame accepted with RCTL.LPE (longer ones count in ROC). Linux allows the 82574L an MTU of up to
/// 9216 (a 9238-byte frame with tag and FCS); 16 KiB leaves room for that, as QEMU's model does.
pub const MAX_FRAME_LPE: usize = 16 * 1024;
/// Longest frame without LPE: 1514 bytes, 1518 with a VLAN tag.
pub const MAX_FRAME_STD: usize = 1514 + 4;

pub struct RxFifo {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Buffers of frames that left the FIFO, for the next frames into it: a ring that runs short of
    /// descriptors again and again allocates nothing per frame.
    spare: crate::pool::FramePool,
}

impl Default for RxFifo {
    fn default() -> RxFifo {
        // As many buffers as the FIFO holds frames (of the 60-byte minimum, and one past its bytes).
        RxFifo { frames: VecDeque::new(), bytes: 0, spare: crate::pool::FramePool::new(RX_FIFO_BYTES / 60 + 1, MAX_FRAME_LPE + 64) }
    }
}

impl RxFifo {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    pub fn clear(&mut self) {
        for f in self.frames.drain(..) {
            self.spare.put(f);
        }
        self.bytes = 0;
    }
    /// Bytes the FIFO can still take.
    pub fn room(&self) -> usize {
        RX_FIFO_BYTES.saturating_sub(self.bytes)
    }
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes + len <= RX_FIFO_BYTES || self.frames.is_empty()
    }
    /// Queues a copy of `f`, in a spare buffer when there is one.
    fn push_copy(&mut self, f: &[u8]) {
        let v = self.spare.copy_of(f);
        self.bytes += v.len();
        self.frames.push_back(v);
    }
    /// Takes back the buffer of a frame that left the FIFO.
    fn recycle(&mut self, f: Vec<u8>) {
        self.spare.put(f);
    }
    fn pop(&mut self) -> Option<Vec<u8>> {
        let f = self.frames.pop_front()?;
        self.bytes -= f.len();
        Some(f)
    }
    fn push_front(&mut self, f: Vec<u8>) {
        self.bytes += f.len();
        self.frames.push_front(f);
    }
}

/// What happened to a frame offered to the device.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RxOutcome {
    Delivered,
    /// Waiting in the FIFO for descriptors.
    Queued,
    Filtered,
    /// Receive is off, link down, or the frame is malformed.
    Dropped,
    /// FIFO overflow: counted in MPC.
    Missed,
}

/// Checksum and hash facts about a received frame, from the device's own parser.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxInfo {
    pub status: u32,
    pub errors: u32,
    pub ip_id: u16,
    /// RSS type and hash, when MRQC enables a type that applies.
    pub rss: Option<(crate::rss::RssType, u32)>,
}

/// Layer 3 and 4 of a frame, as far as the receive logic needs them.
pub struct L3L4<'a> {
    pub ipv6: bool,
    /// The IP header (IPv4: IHL bytes; IPv6: the fixed 40 bytes).
    pub ip_hdr: &'a [u8],
    pub fragment: bool,
    pub ipv6_ext: bool,
    /// L4 protocol and bytes (to the IP length), when not a fragment.
    pub proto: u8,
    pub l4: &'a [u8],
    /// Pseudo-header sum for the L4 checksum.
    pub pseudo: u64,
}

/// Parses IPv4 or IPv6 after `l2_len` bytes of Ethernet (+ tag) header; `None` if not a well-formed IP packet.
pub fn parse_l3l4(frame: &[u8], l2_len: usize) -> Option<L3L4<'_>> {
    let ethertype = be16(frame, l2_len.checked_sub(2)?)?;
    let ip = frame.get(l2_len..)?;
    let version = u8_at(ip, 0)? >> 4;
    match ethertype {
        0x0800 => {
            if ip.len() < 20 || version != 4 {
                return None;
            }
            let ihl = usize::from(u8_at(ip, 0)? & 0xF) * 4;
            let total = usize::from(be16(ip, 2)?);
            if ihl < 20 || total < ihl {
                return None;
            }
            let frag = be16(ip, 6)? & 0x3FFF != 0;
            let l4 = sub(ip, ihl..total)?;
            let proto = u8_at(ip, 9)?;
            let pseudo = csum_add(0, sub(ip, 12..20)?) + u64::from(proto) + l4.len() as u64;
            Some(L3L4 { ipv6: false, ip_hdr: sub(ip, 0..ihl)?, fragment: frag, ipv6_ext: false, proto, l4, pseudo })
        }
        0x86DD => {
            if ip.len() < 40 || version != 6 {
                return None;
            }
            let end = 40 + usize::from(be16(ip, 4)?);
            if end > ip.len() {
                return None;
            }
            let mut next = u8_at(ip, 6)?;
            let mut off = 40;
            let mut frag = false;
            // Walk hop-by-hop, routing, destination options and fragment headers.
            while matches!(next, 0 | 43 | 44 | 60) {
                if off + 8 > end {
                    return None;
                }
                if next == 44 {
                    frag = true;
                }
                let len = if next == 44 { 8 } else { (usize::from(u8_at(ip, off + 1)?) + 1) * 8 };
                next = u8_at(ip, off)?;
                off += len;
            }
            let l4 = sub(ip, off..end)?;
            let pseudo = csum_add(0, sub(ip, 8..40)?) + u64::from(next) + l4.len() as u64;
            Some(L3L4 { ipv6: true, ip_hdr: sub(ip, 0..40)?, fragment: frag, ipv6_ext: off > 40, proto: next, l4, pseudo })
        }
        _ => None,
    }
}

/// Checksum status as RXCSUM enables it (IXSM when nothing is enabled) and, with `rss`, the RSS hash.
pub fn rx_info(frame: &[u8], l2_len: usize, ipofld: bool, tuofld: bool, rss: Option<(u32, &crate::rss::Toeplitz)>) -> RxInfo {
    let mut info = RxInfo::default();
    if !ipofld && !tuofld {
        info.status |= RXD_STAT_IXSM;
    }
    let Some(p) = parse_l3l4(frame, l2_len) else { return info };
    if let Some((mrqc, key)) = rss {
        let ports = || Some((be16(p.l4, 0)?, be16(p.l4, 2)?));
        let tcp_ports = (!p.fragment && p.proto == 6 && p.l4.len() >= 20).then(ports).flatten();
        let addrs = if p.ipv6 { (sub(p.ip_hdr, 8..24), sub(p.ip_hdr, 24..40)) } else { (sub(p.ip_hdr, 12..16), sub(p.ip_hdr, 16..20)) };
        if let (Some(src), Some(dst)) = addrs {
            let h = crate::rss::HashInput { ipv6: p.ipv6, src, dst, tcp_ports, ipv6_ext: p.ipv6_ext };
            info.rss = crate::rss::hash(mrqc, key, &h);
        }
    }
    if !p.ipv6 {
        info.ip_id = be16(p.ip_hdr, 4).unwrap_or(0);
        if ipofld {
            info.status |= RXD_STAT_IPCS;
            if csum_fold(csum_add(0, p.ip_hdr)) != 0xFFFF {
                info.errors |= RXDEXT_ERR_IPE;
            }
        }
    }
    if !tuofld || p.fragment {
        return info; // fragments: no L4 status
    }
    match p.proto {
        6 if p.l4.len() >= 20 => {
            info.status |= RXD_STAT_TCPCS;
            if csum_fold(csum_add(p.pseudo, p.l4)) != 0xFFFF {
                info.errors |= RXDEXT_ERR_TCPE;
            }
        }
        17 if p.l4.len() >= 8 => {
            if be16(p.l4, 6) == Some(0) {
                return info; // no checksum sent: no status
            }
            info.status |= RXD_STAT_UDPCS;
            if csum_fold(csum_add(p.pseudo, p.l4)) != 0xFFFF {
                info.errors |= RXDEXT_ERR_TCPE;
            }
        }
        _ => {}
    }
    info
}

/// Ethernet FCS (CRC-32, reflected polynomial 0xEDB88320), for when CRC stripping (RCTL.SECRC) is off.
/// `crc32fast` folds with carry-less multiplies where the CPU has them instead of going a bit at a time,
/// which cost several microseconds per full-sized frame.
pub fn fcs(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The receive buffer size RCTL.BSIZE and BSEX select.
fn rx_buffer_size(regs: &[u32]) -> usize {
    let rctl = regs.reg(RCTL);
    let bsize = (rctl >> RCTL_BSIZE_SHIFT) & 3;
    match (rctl & RCTL_BSEX != 0, bsize) {
        (true, 1) => 16384,
        (true, 2) => 8192,
        (true, 3) => 4096,
        (false, 1) => 1024,
        (false, 2) => 512,
        (false, 3) => 256,
        _ => 2048,
    }
}

/// Queue `q`'s ring: base, length, head and the descriptors free between head and tail; `None` when the
/// ring is empty or its head or tail is beyond it.
fn rx_ring_free(regs: &[u32], q: usize) -> Option<(u64, u32, u32, u32)> {
    let o = q as u32 * QUEUE_STRIDE;
    let (base, n) = regs.ring(RDBAL0, q);
    let (h, t) = (regs.reg(RDH0 + o), regs.reg(RDT0 + o));
    if n == 0 || h >= n || t >= n {
        return None;
    }
    Some((base, n, h, crate::port::ring_wrap(t + n - h, n)))
}

impl Core {
    /// Destination address filter: exact (RAR with AV), multicast table, broadcast, promiscuous.
    pub fn rx_filter(&self, f: &[u8]) -> bool {
        let rctl = self.reg(RCTL);
        let Some(da) = crate::bytes::array::<6>(f, 0) else { return false };
        if da == [0xFF; 6] {
            return rctl & RCTL_BAM != 0 || rctl & RCTL_MPE != 0;
        }
        if da[0] & 1 != 0 {
            if rctl & RCTL_MPE != 0 {
                return true;
            }
            let mo = (rctl >> RCTL_MO_SHIFT) & 3;
            let hash = match mo {
                0 => (da[4] as u32 >> 4) | ((da[5] as u32) << 4),
                1 => (da[4] as u32 >> 3) | ((da[5] as u32) << 5),
                2 => (da[4] as u32 >> 2) | ((da[5] as u32) << 6),
                _ => (da[4] as u32) | ((da[5] as u32) << 8),
            } & MTA_HASH_MASK;
            return self.reg(MTA + (hash >> 5) * 4) & (1 << (hash & 31)) != 0;
        }
        if rctl & RCTL_UPE != 0 {
            return true;
        }
        (0..RAR_COUNT).any(|i| {
            let rah = self.reg(RAH0 + i * 8);
            if rah & RAH_AV == 0 {
                return false;
            }
            da == self.address_in(RAL0 + i * 8, RAH0 + i * 8)
        })
    }

    /// Bytes of frames that can be taken from the wire now without loss, even if none finds a descriptor.
    pub fn rx_room(&self) -> usize {
        self.rx_fifo.room()
    }

    /// The longest frame receive accepts now: 1518 bytes with a tag, or jumbo frames with RCTL.LPE.
    pub fn max_rx_frame(&self) -> usize {
        if self.reg(RCTL) & RCTL_LPE != 0 {
            MAX_FRAME_LPE
        } else {
            MAX_FRAME_STD
        }
    }

    /// The MAC's checks on a frame from the wire (receive on, link, length, injected faults, PAUSE,
    /// address and VLAN filters): the bytes to keep (an injected truncation keeps fewer), or what became
    /// of the frame.
    fn rx_admit(&mut self, f: &[u8]) -> Result<usize, RxOutcome> {
        let rctl = self.reg(RCTL);
        if rctl & RCTL_EN == 0 || !self.link_up() {
            return Err(RxOutcome::Dropped);
        }
        if f.len() < 14 {
            Metrics::inc(&self.metrics.rx_length_errors);
            self.stats.inc(RUC, 1);
            return Err(RxOutcome::Dropped);
        }
        let vet = self.reg(VET) as u16;
        let tagged = be16(f, 12) == Some(vet) && f.len() >= 18;
        let max = if rctl & RCTL_LPE != 0 { MAX_FRAME_LPE } else { MAX_FRAME_STD - if tagged { 0 } else { 4 } };
        if f.len() > max {
            Metrics::inc(&self.metrics.rx_length_errors);
            self.stats.inc(ROC, 1);
            return Err(RxOutcome::Dropped);
        }
        let mut keep = f.len();
        if !self.faults.is_empty() {
            let now = self.now();
            if self.faults.take(FaultKind::RxDrop, now).is_some() {
                // A frame with a bad FCS: the MAC drops it and counts it (SBP is not modelled).
                self.stats.inc(CRCERRS, 1);
                self.trace.emit(crate::trace::FRAMES, "frame-dropped", || crate::trace::frame_fields("in", f));
                return Err(RxOutcome::Dropped);
            }
            if self.faults.take(FaultKind::RxTruncate, now).is_some() {
                keep = (keep / 2).max(14);
            }
        }
        let f = f.get(..keep).unwrap_or(f);
        if self.flow_control_rx(f) {
            return Err(RxOutcome::Filtered);
        }
        if !self.rx_filter(f) {
            Metrics::inc(&self.metrics.rx_filtered);
            return Err(RxOutcome::Filtered);
        }
        if tagged && rctl & RCTL_VFE != 0 {
            let vid = be16(f, 14).unwrap_or(0) & VLAN_VID_MASK;
            if self.reg(VFTA + (vid as u32 >> 5) * 4) & (1 << (vid & 31)) == 0 {
                Metrics::inc(&self.metrics.rx_filtered);
                return Err(RxOutcome::Filtered);
            }
        }
        Ok(keep)
    }

    fn count_rx(&mut self, f: &[u8]) {
        self.stats.count_frame(crate::stats::Dir::Rx, f.len(), f);
    }
}

/// What the MAC found out about a frame on its way to a queue.
struct RxMeta {
    info: RxInfo,
    vlan: Option<u16>,
    /// Header length to split at (packet split).
    header: Option<usize>,
    split: bool,
    extended: bool,
    rctl: u32,
    rxcsum: u32,
}

/// One receive queue's engine: writes frames into its descriptor ring (RDBAL/RDBAH, RDLEN, RDH, RDT of its
/// queue) and raises its causes. The card comes in as a `port::QueueCtx` (registers, DMA, statistics; the
/// causes go back in it); what the engine owns is reused from frame to frame, so nothing is allocated per
/// frame.
#[derive(Default)]
pub struct RxQueue {
    /// Bytes per buffer of each descriptor the current frame takes.
    layout: Vec<[usize; 4]>,
    /// Frames this queue delivered.
    pub frames: u64,
    /// Buffer addresses of descriptors fetched ahead (one-buffer rings).
    ahead: RxFetched,
}

/// Most receive descriptors fetched in one read (four cache lines).
const RX_FETCH_BURST: usize = 16;

/// Receive descriptors fetched ahead, in one read, as the card's prefetch does: the buffer addresses of
/// ring slots `slot..slot + count` of the ring at `base`, read in `epoch`, of which the first `used` went
/// to frames. The driver handed them over (they lie between head and tail), so they cannot change until
/// the card writes them back; a register write, a reset or a DMA map change starts a new epoch, and then
/// nothing fetched before is used.
#[derive(Default)]
struct RxFetched {
    epoch: u64,
    base: u64,
    slot: u32,
    count: u32,
    used: u32,
    addr: [u64; RX_FETCH_BURST],
}

impl RxFetched {
    /// The buffer address of slot `head`, fetched ahead if it was, otherwise with the free slots after it
    /// (`free` from `head`, in a ring of `n`) in one read; `Err` when that read fails.
    fn buffer(&mut self, dma: &mut crate::port::CardDma, epoch: u64, base: u64, n: u32, head: u32, free: u32) -> Result<u64, ()> {
        let fresh = self.epoch == epoch && self.base == base && self.used < self.count;
        if !(fresh && self.slot.wrapping_add(self.used) == head) {
            let k = free.min(n - head).min(RX_FETCH_BURST as u32) as usize;
            let mut raw = [0u8; RX_FETCH_BURST * 16];
            let daddr = base.wrapping_add(u64::from(head) * 16);
            self.count = 0;
            let k = dma.read_burst(daddr, 16, k, &mut raw, "rx-descriptor").map_err(|_| ())?;
            for (a, d) in self.addr.iter_mut().zip(raw.chunks_exact(16).take(k)) {
                *a = crate::bytes::le64(d, 0).unwrap_or(0);
            }
            (self.epoch, self.base, self.slot, self.count, self.used) = (epoch, base, head, k as u32, 0);
        }
        let a = self.addr.get(self.used as usize).copied().unwrap_or(0);
        self.used += 1;
        Ok(a)
    }
}

impl RxQueue {
    /// Writes one frame (tag stripped, FCS appended as RCTL asks) into queue `q`'s ring. `false` when the
    /// ring has too few free descriptors; a frame dropped for its own reasons counts as written.
    fn write(&mut self, core: &mut QueueCtx, q: usize, bytes: &[u8], m: &RxMeta) -> bool {
        let (split, extended, rctl, rxcsum, vlan, header) = (m.split, m.extended, m.rctl, m.rxcsum, m.vlan, m.header);
        // Each descriptor's buffers and how many bytes go to each.
        let layout = &mut self.layout;
        if split {
            let sizes = ps_buffer_sizes(core.regs.reg(PSRCTL));
            let header = header.filter(|h| *h <= sizes[0]);
            if !ps_layout(bytes.len(), header, sizes, layout) {
                Metrics::inc(&core.metrics.rx_unsupported);
                return true; // PSRCTL leaves no room for the frame: dropped
            }
        } else {
            let bufsz = rx_buffer_size(core.regs);
            layout.clear();
            layout.extend(bytes.chunks(bufsz).map(|c| [c.len(), 0, 0, 0]));
        }
        let layout = &self.layout;
        // RDH, RDT and RDLEN count 16-byte units; a packet-split descriptor takes two.
        let units = if split { 2 } else { 1 };
        let Some((base, n, mut head, mut free)) = rx_ring_free(core.regs, q) else { return false };
        if u64::from(free) < layout.len() as u64 * units || (split && n % 2 != 0) {
            return false;
        }
        let mut info = m.info;
        let checked = info.status & (RXD_STAT_IPCS | RXD_STAT_TCPCS | RXD_STAT_UDPCS) != 0;
        if checked && core.dma.take_fault(FaultKind::RxBadCsum) {
            // Error status for the checksums the card reports on, although they are good.
            if info.status & RXD_STAT_IPCS != 0 {
                info.errors |= RXDEXT_ERR_IPE;
            }
            if info.status & (RXD_STAT_TCPCS | RXD_STAT_UDPCS) != 0 {
                info.errors |= RXDEXT_ERR_TCPE;
            }
        }
        let last = layout.len() - 1;
        let mut rest = bytes;
        let mut data_error = false;
        for (i, lens) in layout.iter().enumerate() {
            let daddr = base.wrapping_add(u64::from(head) * 16);
            // The read format: one buffer address, or four with packet split.
            let bufs: [u64; 4] = if split {
                match core.dma.read_obj::<RxPsRead>(daddr, "rx-descriptor") {
                    Ok(r) => r.addr.map(u64::from),
                    Err(_) => {
                        Metrics::inc(&core.metrics.dma_errors);
                        return true;
                    }
                }
            } else {
                match self.ahead.buffer(&mut core.dma, core.epoch, base, n, head, free) {
                    Ok(a) => [a, 0, 0, 0],
                    Err(()) => {
                        Metrics::inc(&core.metrics.dma_errors);
                        return true;
                    }
                }
            };
            for (&buf, &len) in bufs.iter().zip(lens.iter()) {
                if len == 0 {
                    continue;
                }
                let (chunk, r) = rest.split_at(len.min(rest.len()));
                rest = r;
                if core.dma.write(buf, chunk, "rx-buffer").is_err() {
                    Metrics::inc(&core.metrics.dma_errors);
                    data_error = true;
                }
            }
            let mut status = RXD_STAT_DD;
            let mut errors = 0;
            if i == last {
                status |= RXD_STAT_EOP | info.status;
                errors = info.errors | if data_error { RXDEXT_ERR_RXE } else { 0 };
                if vlan.is_some() {
                    status |= RXD_STAT_VP;
                }
            }
            // MRQ (RSS type, queue) and the RSS hash with PCSD; the IP identification without.
            let (mrq, rss_or_ipid) = match info.rss {
                _ if rxcsum & RXCSUM_PCSD == 0 => (0, u32::from(info.ip_id)),
                Some((t, h)) => (t as u32 | (q as u32) << 8, h),
                None => (0, 0),
            };
            let ext = RxExtWb {
                mrq: mrq.into(),
                rss_or_ipid: rss_or_ipid.into(),
                staterr: (status | errors).into(),
                length: (lens[0] as u16).into(),
                vlan: vlan.unwrap_or(0).into(),
            };
            let mut wb_bytes = [0u8; 32];
            let wb_len = if split {
                let hdr = match header {
                    Some(h) if i == 0 && lens[0] == h => RXDPS_HDRSTAT_HDRSP | (h as u16 & RXDPS_HDRSTAT_HDRLEN_MASK),
                    _ => 0,
                };
                let length = [(lens[1] as u16).into(), (lens[2] as u16).into(), (lens[3] as u16).into()];
                let wb = RxPsWb { ext, header_status: hdr.into(), length, reserved: 0.into() };
                wb_bytes.copy_from_slice(wb.as_slice());
                32
            } else if extended {
                wb_bytes[..16].copy_from_slice(ext.as_slice());
                16
            } else {
                let wb = RxLegacy {
                    addr: bufs[0].into(),
                    length: (lens[0] as u16).into(),
                    csum: 0.into(),
                    status: status as u8,
                    errors: (errors >> 24) as u8,
                    special: vlan.unwrap_or(0).into(),
                };
                wb_bytes[..16].copy_from_slice(wb.as_slice());
                16
            };
            let wb = wb_bytes.get(..wb_len).unwrap_or_default();
            // The bytes holding DD go last: a driver that sees DD must see the whole write-back. A single
            // copy could land in any order and overwrite a descriptor the driver already re-armed.
            let status_at = crate::desc::status_range(!extended);
            let q_causes = ICR_RXT0 | if q == 0 { ICR_RXQ0 } else { ICR_RXQ1 };
            if core.dma.write_back(daddr, wb, status_at, q_causes).is_err() {
                Metrics::inc(&core.metrics.dma_errors);
            }
            head = crate::port::ring_wrap(head + units as u32, n);
            free = free.saturating_sub(units as u32);
        }
        let o = q as u32 * QUEUE_STRIDE;
        core.regs.set_reg(RDH0 + o, head);
        Metrics::inc(&core.metrics.rx_frames);
        // Minimum threshold: free descriptors at or below RDLEN / 2^(RDMTS+1).
        let mut causes = ICR_RXT0 | if q == 0 { ICR_RXQ0 } else { ICR_RXQ1 };
        let left = crate::port::ring_wrap(core.regs.reg(RDT0 + o).wrapping_add(n - head), n);
        let rdmts = (rctl >> RCTL_RDMTS_SHIFT) & 3;
        if left <= n >> (rdmts + 1) && q == 0 {
            causes |= ICR_RXDMT0;
        }
        core.causes.rx |= causes;
        self.frames += 1;
        true
    }
}

/// The function's receive side: the MAC's stage that every frame passes (tag stripping, FCS, checksum
/// and hash facts, the queue RSS picks) and the per-queue engines behind it.
#[derive(Default)]
pub struct RxPath {
    pub queues: [RxQueue; 2],
    /// The frame as the card writes it, when that differs from the wire (tag stripped, FCS appended).
    scratch: Vec<u8>,
    /// The RSS hash under the key RSSRK held at the last hashed frame.
    toeplitz: crate::rss::Toeplitz,
}

impl RxPath {
    /// A frame from the wire.
    pub fn receive(&mut self, core: &mut Core, f: &[u8]) -> RxOutcome {
        let keep = match core.rx_admit(f) {
            Ok(k) => k,
            Err(o) => return o,
        };
        // Short frames are padded to the 60-byte minimum.
        let mut pad = [0u8; 60];
        let f = match f.get(..keep) {
            Some(f) if f.len() >= 60 => f,
            Some(f) => {
                if let Some(d) = pad.get_mut(..f.len()) {
                    d.copy_from_slice(f);
                }
                &pad[..]
            }
            None => return RxOutcome::Dropped,
        };
        if !core.rx_fifo.is_empty() || !self.write(core, f) {
            if !core.rx_fifo.has_room(f.len()) {
                // Missed packets count in MPC only, not as good packets.
                Metrics::inc(&core.metrics.rx_missed);
                core.stats.inc(MPC, 1);
                core.raise(ICR_RXO);
                return RxOutcome::Missed;
            }
            core.count_rx(f);
            core.stats.inc(RNBC, 1);
            core.rx_fifo.push_copy(f);
            self.drain_fifo(core);
            core.flow_control_fifo();
            return RxOutcome::Queued;
        }
        core.count_rx(f);
        RxOutcome::Delivered
    }

    /// Moves FIFO frames into the rings while descriptors are available.
    pub fn drain_fifo(&mut self, core: &mut Core) -> usize {
        let mut n = 0;
        if core.doorbell_held() {
            return 0;
        }
        while let Some(f) = core.rx_fifo.pop() {
            if core.reg(RCTL) & RCTL_EN == 0 {
                core.rx_fifo.clear();
                break;
            }
            if !self.write(core, &f) {
                core.rx_fifo.push_front(f);
                break;
            }
            core.rx_fifo.recycle(f);
            n += 1;
        }
        if n > 0 {
            core.flow_control_fifo();
        }
        n
    }

    /// Writes one frame into the RX queue RSS picks (0 without RSS). `false` when that ring has too few
    /// free descriptors.
    fn write(&mut self, core: &mut Core, frame: &[u8]) -> bool {
        if !core.dma_allowed() {
            Metrics::inc(&core.metrics.dma_blocked);
            return false;
        }
        let rctl = core.reg(RCTL);
        let extended = core.reg(RFCTL) & RFCTL_EXTEN != 0;
        let split = extended && rctl & RCTL_DTYP_MASK == RCTL_DTYP_PS;
        if extended && rctl & RCTL_DTYP_MASK != 0 && !split {
            Metrics::inc(&core.metrics.rx_unsupported);
            return true; // consumed (dropped): DTYP 10 and 11 are reserved
        }
        // VLAN stripping: the frame without its tag, in the scratch buffer.
        let vet = core.reg(VET) as u16;
        let tagged = frame.len() >= 18 && be16(frame, 12) == Some(vet);
        let mut vlan = None;
        let mut copied = false;
        if tagged && core.reg(CTRL) & CTRL_VME != 0 {
            Metrics::inc(&core.metrics.rx_vlan_stripped);
            vlan = be16(frame, 14);
            self.scratch.clear();
            self.scratch.extend_from_slice(frame.get(..12).unwrap_or_default());
            self.scratch.extend_from_slice(frame.get(16..).unwrap_or_default());
            copied = true;
        }
        let l2 = if tagged && vlan.is_none() { 18 } else { 14 };
        let rxcsum = core.reg(RXCSUM);
        // The hash needs the descriptor dword that carries it (PCSD) and extended descriptors.
        let mrqc = core.reg(MRQC);
        let hashing = extended && rxcsum & RXCSUM_PCSD != 0 && mrqc & MRQC_RSS_FIELDS_MASK != 0;
        let key = if hashing { Some(self.toeplitz.for_regs(&core.regs)) } else { None };
        let data: &[u8] = if copied { &self.scratch } else { frame };
        let info = rx_info(data, l2, rxcsum & RXCSUM_IPOFLD != 0, rxcsum & RXCSUM_TUOFLD != 0, key.map(|k| (mrqc, k)));
        let q = match info.rss {
            Some((_, h)) if mrqc & crate::rss::MRQC_ENABLE_RSS != 0 && mrqc & MRQC_ENABLE_MASK == crate::rss::MRQC_ENABLE_RSS => {
                crate::rss::queue(&core.regs, h)
            }
            _ => 0,
        };
        let header = if split { split_header_len(data, l2, core.reg(RFCTL) & RFCTL_IPFRSP_DIS != 0) } else { None };
        // The frame is copied only when it changes (tag stripped above, or an FCS appended here).
        if rctl & RCTL_SECRC == 0 {
            let c = fcs(data);
            if !copied {
                self.scratch.clear();
                self.scratch.extend_from_slice(frame);
                copied = true;
            }
            self.scratch.extend_from_slice(&c.to_le_bytes());
        }
        let bytes: &[u8] = if copied { &self.scratch } else { frame };
        let m = RxMeta { info, vlan, header, split, extended, rctl, rxcsum };
        let Some(e) = self.queues.get_mut(q) else { return false };
        let mut ctx = core.queue_ctx();
        let written = e.write(&mut ctx, q, bytes, &m);
        let causes = ctx.causes;
        core.deliver(causes);
        written
    }
}

/// Packet-split buffer sizes from PSRCTL: the header buffer, then the three data buffers.
pub fn ps_buffer_sizes(psrctl: u32) -> [usize; 4] {
    let mut s = [(psrctl & PSRCTL_BSIZE0_MASK) as usize * PSRCTL_BSIZE0_UNIT, 0, 0, 0];
    for (b, shift) in s.iter_mut().skip(1).zip(PSRCTL_BSIZE_SHIFTS) {
        *b = ((psrctl >> shift) & PSRCTL_BSIZE_MASK) as usize * 1024;
    }
    s
}

/// Where packet split cuts a frame: after the TCP or UDP header, after the IP header for other protocols
/// and for fragments (unless RFCTL.IPFRSP_DIS), nowhere for frames that are not IP.
pub fn split_header_len(frame: &[u8], l2: usize, no_fragment_split: bool) -> Option<usize> {
    let p = parse_l3l4(frame, l2)?;
    if p.fragment && no_fragment_split {
        return None;
    }
    // Offset of the L4 bytes in the frame (IPv6 extension headers included).
    let l4_at = (p.l4.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    if p.fragment {
        return Some(l4_at);
    }
    match p.proto {
        6 => {
            let doff = usize::from(u8_at(p.l4, 12)? >> 4) * 4;
            (doff >= 20 && doff <= p.l4.len()).then_some(l4_at + doff)
        }
        17 => (p.l4.len() >= 8).then_some(l4_at + 8),
        _ => Some(l4_at),
    }
}

/// Bytes per buffer of each packet-split descriptor a frame of `total` bytes takes. With a header split
/// the header goes alone into the first descriptor's header buffer; without one the frame fills the header
/// buffer and the data buffers in order. Later descriptors leave their header buffer empty (7.1.5.1).
/// Fills `out`; `false` when the buffers PSRCTL sizes cannot take the frame.
pub fn ps_layout(total: usize, header: Option<usize>, sizes: [usize; 4], out: &mut Vec<[usize; 4]>) -> bool {
    out.clear();
    let mut left = total;
    while left > 0 {
        let mut lens = [0usize; 4];
        let first = out.is_empty();
        for (b, (l, &s)) in lens.iter_mut().zip(sizes.iter()).enumerate() {
            let room = match (b, first, header) {
                (0, true, Some(h)) => h,
                (0, true, None) => s,
                (0, false, _) => 0,
                _ => s,
            };
            *l = room.min(left);
            left -= *l;
        }
        if lens.iter().all(|l| *l == 0) {
            return false;
        }
        out.push(lens);
    }
    true
}

#[cfg(test)]
mod test {
    use super::*;

    /// Descriptors fetched ahead: frames land in ring order across the end of the ring and up to the
    /// tail; a failed fetch drops the frame and leaves the head; a new epoch (a register write, a reset,
    /// a DMA map change) reads the descriptors again, so a ring the driver rebuilt is seen as rebuilt.
    #[test]
    fn descriptors_fetched_ahead_are_used_in_order_and_read_again_in_a_new_epoch() {
        const RING: u64 = 0x10000;
        const BUF: u64 = 0x20000;
        const N: u32 = 40;
        let space = crate::dma::testing::space(RING, 0x40000);
        let arm = |slot: u32, buf: u64| {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&buf.to_le_bytes());
            space.write(RING + u64::from(slot) * 16, &d).unwrap();
        };
        // Slot s gets buffer BUF + s * 2048.
        for s in 0..N {
            arm(s, BUF + u64::from(s) * 2048);
        }
        let mut regs = crate::port::ring_regs(false, RING, N, 30, 15);
        regs.set_reg(RCTL, RCTL_EN | RCTL_SECRC);
        let mut card = crate::port::TestCard::default();
        let mut ctx = card.ctx(&mut regs, &space);
        let meta = RxMeta { info: RxInfo::default(), vlan: None, header: None, split: false, extended: false, rctl: RCTL_EN, rxcsum: 0 };
        let mut q = RxQueue::default();
        let frame = |i: u8| vec![i; 60 + usize::from(i)];
        let landed = |slot: u32, i: u8| {
            let mut b = vec![0u8; 60 + usize::from(i)];
            space.read(BUF + u64::from(slot) * 2048, &mut b).unwrap();
            b == frame(i)
        };
        // Five frames from slot 30, then a failed fetch: that frame is dropped, the head stays.
        for i in 0..5u8 {
            assert!(q.write(&mut ctx, 0, &frame(i), &meta));
        }
        assert_eq!(ctx.regs.reg(RDH0), 35);
        // The fetch of slot 30 took slots 30..39 (ten, to the end of the ring): slot 35 comes from it, so
        // the failure has to wait for the next fetch (slot 0).
        for i in 5..10u8 {
            assert!(q.write(&mut ctx, 0, &frame(i), &meta));
        }
        assert_eq!(ctx.regs.reg(RDH0), 0, "wrapped");
        ctx.dma.faults.inject(crate::fault::Fault::new(crate::fault::Kind::DmaError));
        assert!(q.write(&mut ctx, 0, &frame(99), &meta), "dropped, not refused");
        assert_eq!(ctx.metrics.dma_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(ctx.regs.reg(RDH0), 0, "the head stays after a failed fetch");
        for i in 10..20u8 {
            assert!(q.write(&mut ctx, 0, &frame(i), &meta));
        }
        for i in 0..20u8 {
            assert!(landed((30 + u32::from(i)) % N, i), "frame {i} not in slot {}", (30 + u32::from(i)) % N);
        }
        // Slot 10 is fetched ahead (with slots 0..14). The driver resets the ring and rebuilds slot 10 with
        // another buffer: the register writes start a new epoch, and the new buffer is used.
        assert_eq!(ctx.regs.reg(RDH0), 10);
        arm(10, BUF + 60 * 2048);
        ctx.epoch += 1;
        assert!(q.write(&mut ctx, 0, &frame(20), &meta));
        let mut b = vec![0u8; 80];
        space.read(BUF + 60 * 2048, &mut b).unwrap();
        assert_eq!(b, frame(20), "the rebuilt descriptor's buffer");
        // Up to the tail and no further: the ring is full.
        for i in 21..25u8 {
            assert!(q.write(&mut ctx, 0, &frame(i), &meta));
        }
        assert_eq!(ctx.regs.reg(RDH0), 15);
        assert!(!q.write(&mut ctx, 0, &frame(25), &meta), "no descriptor free");
        assert_eq!(q.frames, 25);
    }

    fn ps_layout(total: usize, header: Option<usize>, sizes: [usize; 4]) -> Option<Vec<[usize; 4]>> {
        let mut out = Vec::new();
        super::ps_layout(total, header, sizes, &mut out).then_some(out)
    }

    #[test]
    fn packet_split_layout() {
        // Linux at MTU 9000: a 128-byte header buffer and three 4 KiB pages.
        let sizes = ps_buffer_sizes(0x0404_0401);
        assert_eq!(sizes, [128, 4096, 4096, 4096]);
        // A 9014-byte TCP frame split after 66 header bytes.
        assert_eq!(ps_layout(9014, Some(66), sizes), Some(vec![[66, 4096, 4096, 756]]));
        // Not split (ARP): the header buffer takes the first 128 bytes.
        assert_eq!(ps_layout(60, None, sizes), Some(vec![[60, 0, 0, 0]]));
        assert_eq!(ps_layout(300, None, sizes), Some(vec![[128, 172, 0, 0]]));
        // Larger than one descriptor: later descriptors leave the header buffer empty.
        assert_eq!(ps_layout(14000, Some(54), sizes), Some(vec![[54, 4096, 4096, 4096], [0, 1658, 0, 0]]));
        // One data buffer only.
        let one = ps_buffer_sizes(0x0000_0402);
        assert_eq!(one, [256, 4096, 0, 0]);
        assert_eq!(ps_layout(5000, Some(42), one), Some(vec![[42, 4096, 0, 0], [0, 862, 0, 0]]));
        // No data buffers: a frame past the header buffer has nowhere to go.
        assert_eq!(ps_layout(200, None, ps_buffer_sizes(1)), None);
        assert_eq!(ps_layout(100, None, ps_buffer_sizes(1)), Some(vec![[100, 0, 0, 0]]));
        assert_eq!(ps_layout(100, None, ps_buffer_sizes(0)), None);
    }

    #[test]
    fn split_points() {
        // Ethernet + IPv4 (20) + TCP with 12 bytes of options (32) + payload.
        let mut f = vec![0u8; 14 + 20 + 32 + 10];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(20u16 + 32 + 10).to_be_bytes());
        f[23] = 6;
        f[14 + 20 + 12] = 8 << 4;
        assert_eq!(split_header_len(&f, 14, false), Some(66));
        // UDP: after the 8-byte header.
        f[23] = 17;
        assert_eq!(split_header_len(&f, 14, false), Some(42));
        // ICMP: after the IP header.
        f[23] = 1;
        assert_eq!(split_header_len(&f, 14, false), Some(34));
        // A fragment: after the IP header, or not split with IPFRSP_DIS.
        f[23] = 6;
        f[20] = 0x20; // MF
        assert_eq!(split_header_len(&f, 14, false), Some(34));
        assert_eq!(split_header_len(&f, 14, true), None);
        // Not IP.
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(split_header_len(&f, 14, false), None);
    }

    #[test]
    fn fcs_check_value() {
        // CRC-32 check value for "123456789".
        assert_eq!(fcs(b"123456789"), 0xCBF4_3926);
        assert_eq!(fcs(b""), 0);
    }

    /// The FCS against the CRC's definition, bit by bit (IEEE 802.3 clause 3.2.9), over every length up to
    /// a jumbo frame's worth of patterned bytes and from every start within a word; and the receiver's
    /// check: the CRC over a frame followed by its FCS is the fixed residue 0x2144DF1C.
    #[test]
    fn fcs_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..9100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in (0..300).chain([1514, 1518, 4096, 9014, 9018]) {
            for start in 0..8 {
                let f = &data[start..start + len];
                assert_eq!(fcs(f), bitwise(f), "length {len}, start {start}");
            }
            let mut with = data[..len].to_vec();
            with.extend_from_slice(&fcs(&data[..len]).to_le_bytes());
            assert_eq!(bitwise(&with), 0x2144_DF1C, "residue, length {len}");
        }
    }
}
