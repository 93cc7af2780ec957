//! Generic receive offload for TCP over IPv4 and IPv6: in-order segments of one flow that arrive in the same
//! poll are merged into one larger packet before the protocol sees them, under Linux's rules: identical IP
//! and TCP headers apart from the sequence number, length and checksums (so an ACK, window or option change
//! stops the merge), contiguous sequence numbers, no SYN/FIN/RST/URG/CWR/ECE, PSH only on the last segment
//! merged, no IPv4 options or fragments, no IPv6 extension headers, and at most 64 KiB. Each segment's
//! checksum is verified before it is merged.

use crate::skb::{Csum, PacketBuf, DEFAULT_HEADROOM};
use crate::wire::checksum;
use crate::wire::tcp::{CWR, ECE, FIN, PSH, RST, SYN, URG};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an IPv6 header's payload length lies, and its addresses, in an Ethernet frame.
const V6_PLEN: usize = 14 + 4;
const V6_ADDRS: usize = 14 + 8;

#[derive(Clone, Copy)]
struct Seg {
    /// IPv6 (a 40-byte header without extensions) or IPv4 (20 bytes, no options).
    v6: bool,
    l4: usize,
    doff: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

impl Seg {
    /// The IP header's length.
    fn l3_len(&self) -> usize {
        self.l4 - 14
    }
}

/// A TCP frame's layout, if it is one GRO can merge, with its checksums verified; and its destination.
fn inspect(f: &[u8], verified: bool) -> Option<(Seg, IpAddr)> {
    if f.len() < 14 + 40 {
        return None;
    }
    let (v6, l4, ip_payload) = match f[12..14] {
        [0x08, 0x00] if f[14] == 0x45 && f[23] == 6 => {
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            if total < 40 || 14 + total > f.len() || u16::from_be_bytes([f[20], f[21]]) & 0x3FFF != 0 {
                return None;
            }
            (false, 34, total - 20)
        }
        // Next header TCP: no extension headers.
        [0x86, 0xDD] if f[14] >> 4 == 6 && f[20] == 6 => {
            let plen = u16::from_be_bytes([f[V6_PLEN], f[V6_PLEN + 1]]) as usize;
            if plen < 20 || 14 + 40 + plen > f.len() {
                return None;
            }
            (true, 54, plen)
        }
        _ => return None,
    };
    let doff = (f[l4 + 12] >> 4) as usize * 4;
    if doff < 20 || doff > ip_payload {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        let a = |at: usize| -> [u8; 16] { f[at..at + 16].try_into().unwrap_or([0; 16]) };
        (Ipv6Addr::from(a(V6_ADDRS)).into(), Ipv6Addr::from(a(V6_ADDRS + 16)).into())
    } else {
        let a = |at: usize| -> [u8; 4] { f[at..at + 4].try_into().unwrap_or([0; 4]) };
        (Ipv4Addr::from(a(26)).into(), Ipv4Addr::from(a(30)).into())
    };
    if !verified {
        if !v6 && checksum::fold(checksum::sum(0, &f[14..34])) != 0xFFFF {
            return None;
        }
        if checksum::fold(checksum::sum(checksum::pseudo(src, dst, 6, ip_payload), &f[l4..l4 + ip_payload])) != 0xFFFF {
            return None;
        }
    }
    let seg =
        Seg { v6, l4, doff, seq: u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().ok()?), flags: f[l4 + 13], payload: ip_payload - doff };
    Some((seg, dst))
}

/// Whether `b` continues `a` (same flow, same headers but seq/len/checksums, contiguous).
fn mergeable(a: &[u8], sa: &Seg, b: &[u8], sb: &Seg, merged_len: usize) -> bool {
    if sa.flags & (SYN | FIN | RST | URG | CWR | ECE | PSH) != 0 || sb.flags & (SYN | FIN | RST | URG | CWR | ECE) != 0 {
        return false;
    }
    // The merged IP length must fit its 16-bit field (IPv4's counts its header, IPv6's does not).
    let ip_room = if sa.v6 { 65535 } else { 65535 - 20 };
    if sa.v6 != sb.v6 || sa.payload == 0 || sb.payload == 0 || sa.doff != sb.doff || merged_len + sb.payload > ip_room - sa.doff {
        return false;
    }
    if sb.seq != sa.seq.wrapping_add(merged_len as u32) {
        return false;
    }
    // IPv4: addresses, TTL, TOS, protocol. IPv6: version, traffic class and flow label, next header, hop
    // limit, addresses.
    let ip_same = if sa.v6 {
        a[..V6_PLEN] == b[..V6_PLEN] && a[V6_PLEN + 2..54] == b[V6_PLEN + 2..54]
    } else {
        a[..14] == b[..14] && a[15] == b[15] && a[22..24] == b[22..24] && a[26..34] == b[26..34]
    };
    let (la, lb) = (sa.l4, sb.l4);
    // Ports, ACK number, data offset, window and options; the flags byte is judged above.
    let tcp_same = a[la..la + 4] == b[lb..lb + 4]
        && a[la + 8..la + 13] == b[lb + 8..lb + 13]
        && a[la + 14..la + 16] == b[lb + 14..lb + 16]
        && a[la + 20..la + sa.doff] == b[lb + 20..lb + sb.doff];
    ip_same && tcp_same
}

/// The run of segments being merged: the first as it came, until a second joins it; then a buffer of its
/// own (from the thread's pool, with headroom and room for 64 KiB, so it grows without moving) holding
/// the headers and every payload so far, which becomes the merged packet's storage as it is.
enum Run {
    One(PacketBuf),
    Merged(Vec<u8>),
}

impl Run {
    /// The frame's bytes (after the headroom of a merged one).
    fn bytes(&self) -> &[u8] {
        match self {
            Run::One(p) => p.data(),
            Run::Merged(v) => v.get(DEFAULT_HEADROOM..).unwrap_or_default(),
        }
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<PacketBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Merges runs of in-order TCP segments in `frames` (order is kept) whose destination `local` says is this
/// host's: a segment on its way through a router stays as it came, since a merged packet would not fit the
/// egress link (and its TCP checksum is not redone). Returns how many segments merged away. Each byte of a
/// merged packet is copied once, into its buffer; a segment that merges with none is passed on as it is.
pub fn merge(frames: &mut Vec<PacketBuf>, local: &dyn Fn(IpAddr) -> bool) -> usize {
    // The result goes into the thread's spare vector, which then takes the input's: neither is allocated
    // per poll.
    let mut out: Vec<PacketBuf> = SPARE.try_with(|s| std::mem::take(&mut *s.borrow_mut())).unwrap_or_default();
    out.clear();
    out.reserve(frames.len());
    let mut merged_away = 0;
    let mut cur: Option<(Run, Seg, usize)> = None; // (the run, its first segment, payload so far)
    let flush = |cur: &mut Option<(Run, Seg, usize)>, out: &mut Vec<PacketBuf>| {
        let Some((run, s, payload)) = cur.take() else { return };
        let total = s.l3_len() + s.doff + payload;
        let mut p = match run {
            Run::One(mut p) => {
                // Ethernet padding beyond the IP length goes.
                p.trim(14 + total);
                p
            }
            Run::Merged(mut v) => {
                v.truncate(DEFAULT_HEADROOM + 14 + total);
                let f = &mut v[DEFAULT_HEADROOM..];
                if s.v6 {
                    f[V6_PLEN..V6_PLEN + 2].copy_from_slice(&((total - 40) as u16).to_be_bytes());
                } else {
                    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
                    f[24..26].copy_from_slice(&[0, 0]);
                    let c = checksum::compute(&f[14..34]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
                PacketBuf::from_vec_at(v, DEFAULT_HEADROOM)
            }
        };
        p.csum = Csum::Verified;
        out.push(p);
    };
    for p in frames.drain(..) {
        let verified = p.csum == Csum::Verified;
        let d = p.data();
        let Some(seg) = inspect(d, verified).filter(|(_, dst)| local(*dst)).map(|(seg, _)| seg) else {
            flush(&mut cur, &mut out);
            out.push(p);
            continue;
        };
        if let Some((run, first, payload)) = cur.as_mut() {
            let f = run.bytes();
            let head = Seg { flags: f[first.l4 + 13], ..*first };
            if mergeable(f, &head, d, &seg, *payload) {
                let have = first.l4 + first.doff + *payload;
                if let Run::One(p0) = run {
                    let mut v = crate::skb::buffer(DEFAULT_HEADROOM + 14 + 65535);
                    v.resize(DEFAULT_HEADROOM, 0);
                    v.extend_from_slice(&p0.data()[..have]);
                    *run = Run::Merged(v);
                }
                if let Run::Merged(v) = run {
                    v.truncate(DEFAULT_HEADROOM + have);
                    let start = seg.l4 + seg.doff;
                    v.extend_from_slice(&d[start..start + seg.payload]);
                    v[DEFAULT_HEADROOM + first.l4 + 13] |= seg.flags & PSH;
                }
                *payload += seg.payload;
                merged_away += 1;
                continue;
            }
            flush(&mut cur, &mut out);
        }
        if seg.flags & (SYN | FIN | RST | URG | CWR | ECE | PSH) != 0 || seg.payload == 0 {
            let mut p = p;
            p.csum = Csum::Verified;
            out.push(p);
            continue;
        }
        let payload = seg.payload;
        cur = Some((Run::One(p), seg, payload));
    }
    flush(&mut cur, &mut out);
    std::mem::swap(frames, &mut out);
    let _ = SPARE.try_with(|s| *s.borrow_mut() = out);
    merged_away
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::tcp::{Repr, Seq, ACK};

    fn frame(seq: u32, flags: u8, payload: &[u8], ts: u32, ack: u32) -> PacketBuf {
        let r = Repr {
            src_port: 80,
            dst_port: 40000,
            seq: Seq(seq),
            ack: Seq(ack),
            flags,
            window: 500,
            timestamp: Some((ts, 1)),
            ..Default::default()
        };
        let (src, dst) = ([10, 0, 0, 2], [10, 0, 0, 1]);
        let mut tcp = vec![0u8; r.header_len() + payload.len()];
        r.emit(&mut tcp, payload, src, dst, true);
        let ip = crate::wire::ipv4::Repr {
            src,
            dst,
            protocol: 6,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: tcp.len(),
        };
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        ip.emit(&mut f[14..34]);
        f.extend_from_slice(&tcp);
        PacketBuf::from_slice(&f)
    }

    fn payload_of(p: &PacketBuf) -> Vec<u8> {
        let d = p.data();
        // A merged packet carries Csum::Verified (its parts were checked); its TCP checksum is not redone.
        let (r, pl) = Repr::parse(&d[34..], [10, 0, 0, 2], [10, 0, 0, 1], p.csum == Csum::Verified).unwrap();
        let _ = r;
        pl.to_vec()
    }

    #[test]
    fn merges_in_order_segments_and_keeps_checksums_valid() {
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(110, ACK, &[2; 10], 5, 7), frame(120, ACK | PSH, &[3; 5], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 2);
        assert_eq!(v.len(), 1);
        let pl = payload_of(&v[0]);
        assert_eq!(pl.len(), 25);
        assert_eq!(&pl[20..], &[3; 5]);
        assert_ne!(v[0].data()[34 + 13] & PSH, 0, "PSH from the last segment");
        assert!(crate::iface::ipv4_header_ok(&v[0].data()[14..]));
    }

    /// A segment that merges with none goes on in its own buffer (not copied), its padding cut; a merged
    /// packet is built once in a buffer with headroom, so headers can be pushed in front without a copy.
    #[test]
    fn a_lone_segment_is_not_copied_and_a_merged_packet_has_headroom() {
        let mut lone = frame(100, ACK, &[1; 10], 5, 7);
        lone.put(6).fill(0); // Ethernet padding
        let at = lone.data().as_ptr();
        let mut v = vec![lone, frame(300, ACK, &[2; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        assert_eq!(v[0].data().as_ptr(), at, "the same buffer");
        assert_eq!(v[0].len(), 14 + 20 + 32 + 10, "the padding cut");
        assert_eq!(payload_of(&v[0]), [1; 10]);
        let mut v: Vec<PacketBuf> = (0..40u32).map(|i| frame(100 + i * 1000, ACK, &[i as u8; 1000], 5, 7)).collect();
        assert_eq!(merge(&mut v, &|_| true), 39);
        assert_eq!(v[0].headroom(), DEFAULT_HEADROOM);
        let pl = payload_of(&v[0]);
        assert!(pl.chunks(1000).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)) && pl.len() == 40_000);
        assert!(crate::iface::ipv4_header_ok(&v[0].data()[14..]));
    }

    const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DST6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    /// A TCP/IPv6 segment as `frame` builds a TCP/IPv4 one, with flow label `flow`.
    fn frame6(seq: u32, flags: u8, payload: &[u8], flow: u32) -> PacketBuf {
        let r = Repr { src_port: 80, dst_port: 40000, seq: Seq(seq), ack: Seq(7), flags, window: 500, ..Default::default() };
        let mut tcp = vec![0u8; r.header_len() + payload.len()];
        r.emit(&mut tcp, payload, SRC6, DST6, true);
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x86, 0xDD]);
        crate::wire::ipv6::Repr { src: SRC6, dst: DST6, next_header: 6, hop_limit: 64, payload_len: tcp.len() }.emit(&mut f[14..54]);
        f[15] |= (flow >> 16) as u8 & 0x0F;
        f[16..18].copy_from_slice(&(flow as u16).to_be_bytes());
        f.extend_from_slice(&tcp);
        PacketBuf::from_slice(&f)
    }

    fn payload6_of(p: &PacketBuf) -> Vec<u8> {
        let d = p.data();
        let plen = u16::from_be_bytes([d[18], d[19]]) as usize;
        assert_eq!(d.len(), 54 + plen, "the payload length covers the packet");
        let (_, pl) = Repr::parse(&d[54..], SRC6, DST6, p.csum == Csum::Verified).unwrap();
        pl.to_vec()
    }

    /// TCP over IPv6 merges as over IPv4: the payload length covers the merged packet, which is built once
    /// with headroom; a flow label or hop limit change, an extension header, or a segment for another
    /// address stops it, and IPv4 and IPv6 segments never merge with each other.
    #[test]
    fn merges_ipv6_segments_under_the_same_rules() {
        let mut v: Vec<PacketBuf> = (0..30u32).map(|i| frame6(1000 + i * 1200, ACK, &[i as u8; 1200], 5)).collect();
        assert_eq!(merge(&mut v, &|d| d == IpAddr::from(DST6)), 29);
        assert_eq!((v.len(), v[0].headroom()), (1, DEFAULT_HEADROOM));
        let pl = payload6_of(&v[0]);
        assert!(pl.len() == 36_000 && pl.chunks(1200).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)));
        // A checksum that does not verify is not merged; neither is a segment for an address not ours.
        let mut bad = frame6(1100, ACK, &[2; 100], 5);
        bad.data_mut()[70] ^= 1;
        let mut v = vec![frame6(1000, ACK, &[1; 100], 5), bad];
        assert_eq!(merge(&mut v, &|_| true), 0);
        let mut v = vec![frame6(1000, ACK, &[1; 100], 5), frame6(1100, ACK, &[2; 100], 5)];
        assert_eq!(merge(&mut v, &|d| d != IpAddr::from(DST6)), 0);
        // Another flow label, another hop limit.
        let mut v = vec![frame6(1000, ACK, &[1; 100], 5), frame6(1100, ACK, &[2; 100], 6)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        let mut hop = frame6(1100, ACK, &[2; 100], 5);
        hop.data_mut()[21] = 63;
        let mut v = vec![frame6(1000, ACK, &[1; 100], 5), hop];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // An extension header ahead of TCP (next header: hop-by-hop options).
        let mut ext = frame6(1100, ACK, &[2; 100], 5);
        ext.data_mut()[20] = 0;
        let mut v = vec![frame6(1000, ACK, &[1; 100], 5), ext];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // IPv4 then IPv6 then IPv4 of the same sequence space: three packets, none merged.
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame6(110, ACK, &[2; 10], 5), frame(120, ACK, &[3; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn never_merges_what_linux_would_not() {
        // A gap.
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(120, ACK, &[2; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // A FIN, a SYN.
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(110, ACK | FIN, &[2; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // An option change (timestamp) or an ACK change.
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(110, ACK, &[2; 10], 6, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(110, ACK, &[2; 10], 5, 8)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // Nothing after a PSH.
        let mut v = vec![frame(100, ACK | PSH, &[1; 10], 5, 7), frame(110, ACK, &[2; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|_| true), 0);
        // A corrupted segment is not merged (the protocol will drop it).
        let mut bad = frame(110, ACK, &[2; 10], 5, 7);
        bad.data_mut()[60] ^= 1;
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), bad];
        assert_eq!(merge(&mut v, &|_| true), 0);
        assert_eq!(v.len(), 2);
        // Segments for another host (a router forwards them as they came).
        let mut v = vec![frame(100, ACK, &[1; 10], 5, 7), frame(110, ACK, &[2; 10], 5, 7)];
        assert_eq!(merge(&mut v, &|d| d != IpAddr::from([10, 0, 0, 1])), 0);
        assert_eq!(v.len(), 2);
    }
}
