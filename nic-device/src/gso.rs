//! The TAP offload mode (`tap:IFNAME,offload=on`): frames cross the backend with a virtio-net header, as
//! QEMU's virtio-net hands them to a TAP with `vnet_hdr=on`, so that neither side segments or checksums
//! what the other can.
//!
//! Host to card: a GSO super-frame, or a frame whose TCP/UDP checksum is partial, becomes what the card
//! would have received from a wire: segments of `gso_size` payload cut by the card's own TSO rules, every
//! checksum complete. Card to host: a TCP TSO packet the guest queued leaves whole, as one GSO frame whose
//! header says how to segment it, and a TCP checksum the guest asked the card for stays partial for the
//! host to complete (or trust, when it delivers the frame locally). Whatever the header cannot express
//! exactly as the card would put it on a wire (a VLAN tag to insert, a HDRLEN that is not the real header
//! length, a TSO packet without the checksums requested) is segmented in the card as before.

use crate::bytes::{be16, put, u8_at};
use crate::offload::{self, csum_fold, OffloadError, TxContext};
use nic_tap::VnetHdr;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GsoError {
    #[error("GSO type {0:#x} is not TCP over IPv4 or IPv6")]
    Type(u8),
    #[error("the frame's headers do not match its virtio-net header")]
    Layout,
    #[error(transparent)]
    Offload(#[from] OffloadError),
}

/// Largest frame a TAP hands over in offload mode: 64 KiB of IP behind an Ethernet header and one tag.
pub const MAX_GSO_FRAME: usize = 65535 + 18;

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const TCP_CHECK: usize = 16;

/// Where the IP header starts: behind the Ethernet header and at most one tag.
fn l3_offset(f: &[u8]) -> Option<usize> {
    match be16(f, 12)? {
        ETH_P_8021Q | ETH_P_8021AD => Some(18),
        _ => Some(14),
    }
}

/// Host to card: the wire frames a received frame stands for.
pub fn to_wire(mut frame: Vec<u8>, h: &VnetHdr) -> Result<Vec<Vec<u8>>, GsoError> {
    if !h.is_gso() {
        complete(&mut frame, h)?;
        return Ok(vec![frame]);
    }
    let mut out = Vec::new();
    cut(&mut frame, h, &mut Vec::new, &mut out)?;
    Ok(out)
}

/// Host to card, a frame that is not GSO: its partial checksum (if the header says so) completed in place.
pub fn complete(frame: &mut [u8], h: &VnetHdr) -> Result<(), GsoError> {
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        complete_checksum(frame, h)?;
    }
    Ok(())
}

/// Host to card, a GSO frame: the wire frames it stands for, each built in a buffer from `buf` (empty; a
/// reused one) and appended to `out`. Returns how many; on an error, none are appended. The frame's
/// checksum fields are rewritten on the way (it is spent afterwards).
pub fn cut(frame: &mut [u8], h: &VnetHdr, buf: &mut dyn FnMut() -> Vec<u8>, out: &mut Vec<Vec<u8>>) -> Result<usize, GsoError> {
    let ipv4 = match h.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_TCPV4 => true,
        VnetHdr::GSO_TCPV6 => false,
        t => return Err(GsoError::Type(t)),
    };
    let ipcss = l3_offset(frame).ok_or(GsoError::Layout)?;
    let first = u8_at(frame, ipcss).ok_or(GsoError::Layout)?;
    if first >> 4 != if ipv4 { 4 } else { 6 } {
        return Err(GsoError::Layout);
    }
    let ihl = if ipv4 { (first & 0xF) as usize * 4 } else { 40 };
    let tucss = h.csum_start as usize;
    if (ipv4 && ihl < 20) || tucss < ipcss + ihl || h.csum_offset as usize != TCP_CHECK {
        return Err(GsoError::Layout);
    }
    let doff = (u8_at(frame, tucss + 12).ok_or(GsoError::Layout)? >> 4) as usize * 4;
    let hdrlen = tucss + doff;
    if doff < 20 || hdrlen > frame.len() {
        return Err(GsoError::Layout);
    }
    let narrow = |v: usize| u8::try_from(v).map_err(|_| GsoError::Layout);
    let ctx = TxContext {
        ipcss: narrow(ipcss)?,
        ipcso: narrow(ipcss + 10)?,
        ipcse: (ipcss + ihl - 1) as u16,
        tucss: narrow(tucss)?,
        tucso: narrow(tucss + TCP_CHECK)?,
        tucse: 0,
        paylen: 0,
        hdrlen: narrow(hdrlen)?,
        mss: h.gso_size,
        tcp: true,
        ipv4,
        tse: true,
    };
    // The host seeds the TCP checksum with the whole L4 length; the card's TSO adds each segment's length
    // to a seed without it. Taking the length back out (one's-complement subtraction) is what Linux's own
    // GSO does with the field, whatever it holds. The IPv4 header checksum is recomputed over a zeroed field.
    let whole = frame.len() - tucss;
    let field = be16(frame, tucss + TCP_CHECK).ok_or(GsoError::Layout)?;
    let seed = csum_fold(u64::from(field) + u64::from(!(whole as u16)));
    if whole > 0xFFFF {
        return Err(GsoError::Layout);
    }
    put(frame, tucss + TCP_CHECK, &seed.to_be_bytes());
    if ipv4 {
        put(frame, ipcss + 10, &[0, 0]);
    }
    Ok(offload::segment_into(frame, &ctx, ipv4, true, buf, out)?)
}

/// Completes a partial checksum: the sum from `csum_start` to the end (the field holds the pseudo-header
/// sum), stored at `csum_start + csum_offset`. A result of 0 goes out as 0xFFFF, which UDP requires and
/// TCP receivers read as the same value.
fn complete_checksum(frame: &mut [u8], h: &VnetHdr) -> Result<(), GsoError> {
    let start = h.csum_start as usize;
    let off = start + h.csum_offset as usize;
    Ok(offload::insert_l4_checksum(frame, start, off, 0, true, None)?)
}

/// Card to host: a TSO packet as one GSO frame, or `None` when the header cannot say what the card would
/// put on the wire (the caller segments it instead). The packet's IP length fields are set to the whole
/// packet, the IPv4 header checksum computed, and the TCP checksum field turned from the driver's seed
/// (pseudo-header without the length) into the host's (with the whole L4 length), still partial.
/// Returns the frame's header and how many segments it stands for.
pub fn tso_frame(pkt: &mut [u8], ctx: &TxContext, ixsm: bool, txsm: bool) -> Result<Option<(VnetHdr, usize)>, GsoError> {
    let n = offload::tso_segments(pkt.len(), ctx)?;
    let (ipcss, tucss, hdrlen) = (ctx.ipcss as usize, ctx.tucss as usize, ctx.hdrlen as usize);
    let doff = (u8_at(pkt, tucss + 12).ok_or(GsoError::Layout)? >> 4) as usize * 4;
    let first = u8_at(pkt, ipcss).ok_or(GsoError::Layout)?;
    // The host cuts by the headers themselves and recomputes the IPv4 checksum over a zeroed field; the
    // card cuts at HDRLEN and sums what the context points at. Only where both agree does the packet leave
    // whole: TCP with both checksums asked for, the context pointing at the real headers (no IPv6
    // extension headers), the IPv4 checksum field zero as drivers leave it.
    let l3_ok = if ctx.ipv4 {
        let ihl = (first & 0xF) as usize * 4;
        first >> 4 == 4
            && ixsm
            && u8_at(pkt, ipcss + 9) == Some(6)
            && tucss == ipcss + ihl
            && ctx.ipcso as usize == ipcss + 10
            && ctx.ipcse as usize == tucss - 1
            && be16(pkt, ipcss + 10) == Some(0)
    } else {
        first >> 4 == 6 && u8_at(pkt, ipcss + 6) == Some(6) && tucss == ipcss + 40
    };
    let exact = ctx.tcp
        && txsm
        && l3_ok
        && ctx.tucso as usize == tucss + TCP_CHECK
        && ctx.tucse == 0
        && hdrlen == tucss + doff
        && l3_offset(pkt) == Some(ipcss);
    let ip_len = pkt.len() - ipcss;
    if !exact || ip_len > 0xFFFF {
        return Ok(None);
    }
    if ctx.ipv4 {
        put(pkt, ipcss + 2, &(ip_len as u16).to_be_bytes());
        offload::insert_ip_checksum(pkt, ctx)?;
    } else {
        put(pkt, ipcss + 4, &((ip_len - 40) as u16).to_be_bytes());
    }
    let seed = be16(pkt, tucss + TCP_CHECK).ok_or(GsoError::Layout)?;
    let with_len = csum_fold(seed as u64 + (pkt.len() - tucss) as u64);
    put(pkt, tucss + TCP_CHECK, &with_len.to_be_bytes());
    let h = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: if ctx.ipv4 { VnetHdr::GSO_TCPV4 } else { VnetHdr::GSO_TCPV6 },
        hdr_len: hdrlen as u16,
        gso_size: ctx.mss,
        csum_start: tucss as u16,
        csum_offset: TCP_CHECK as u16,
    };
    Ok(Some((h, n)))
}

/// Card to host, one frame: a TCP checksum the guest asked for (TXSM) left partial, the IPv4 header
/// checksum (IXSM) computed. `None` when the frame does not fit that shape (the caller computes both).
pub fn csum_frame(f: &mut [u8], ctx: &TxContext, ixsm: bool, txsm: bool) -> Result<Option<VnetHdr>, GsoError> {
    let (tucss, tucso) = (ctx.tucss as usize, ctx.tucso as usize);
    if !txsm || !ctx.tcp || ctx.tucse != 0 || tucso != tucss + TCP_CHECK || tucso + 2 > f.len() {
        return Ok(None);
    }
    if ixsm {
        offload::insert_ip_checksum(f, ctx)?;
    }
    Ok(Some(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: tucss as u16,
        csum_offset: TCP_CHECK as u16,
    }))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::offload::csum_add;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    /// A TCP frame built and checksummed by etherparse: the independent reference.
    fn tcp_frame(v6: bool, seq: u32, payload: &[u8], flags_psh_fin: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if v6 { b.ipv6([0xfd; 16], [0xfe; 16], 64) } else { b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
        let mut b = b.tcp(40000, 5201, seq, 65535).ack(7);
        if flags_psh_fin {
            b = b.psh().fin();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Checks every checksum of a frame by summing, as a receiver does.
    fn valid(f: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { return false };
        let ph: Vec<u8> = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                if csum_fold(csum_add(0, ip.header().slice())) != 0xFFFF {
                    return false;
                }
                let mut v = ip.header().source().to_vec();
                v.extend(ip.header().destination());
                v.extend([0, 6]);
                v.extend((t.slice().len() as u16).to_be_bytes());
                v
            }
            Some(NetSlice::Ipv6(ip)) => {
                let mut v = ip.header().source().to_vec();
                v.extend(ip.header().destination());
                v.extend((t.slice().len() as u32).to_be_bytes());
                v.extend([0, 0, 0, 6]);
                v
            }
            _ => return false,
        };
        csum_fold(csum_add(csum_add(0, &ph), t.slice())) == 0xFFFF
    }

    /// What the host's stack hands a TAP for a 64 KiB-ish send: one frame, lengths of the whole, the TCP
    /// checksum field holding the pseudo-header sum with the whole L4 length (not complemented).
    fn host_gso_frame(v6: bool, payload: &[u8]) -> (Vec<u8>, VnetHdr) {
        let mut f = tcp_frame(v6, 1000, payload, true);
        let l3 = 14;
        let tucss = if v6 { l3 + 40 } else { l3 + 20 };
        let addrs = if v6 { &f[l3 + 8..l3 + 40] } else { &f[l3 + 12..l3 + 20] };
        let seed = csum_fold(csum_add(0, addrs) + 6 + (f.len() - tucss) as u64);
        f[tucss + 16..tucss + 18].copy_from_slice(&seed.to_be_bytes());
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: if v6 { VnetHdr::GSO_TCPV6 } else { VnetHdr::GSO_TCPV4 },
            hdr_len: (tucss + 20) as u16,
            gso_size: if v6 { 1440 } else { 1448 },
            csum_start: tucss as u16,
            csum_offset: 16,
        };
        (f, h)
    }

    #[test]
    fn host_gso_frames_become_valid_wire_segments_v4_and_v6() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        for v6 in [false, true] {
            let (f, h) = host_gso_frame(v6, &payload);
            let mss = h.gso_size as usize;
            let segs = to_wire(f, &h).unwrap();
            assert_eq!(segs.len(), 10_000usize.div_ceil(mss));
            let mut data = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                assert!(valid(s), "segment {i} (v6 {v6}) has a bad checksum");
                assert!(s.len() <= 1514);
                let p = SlicedPacket::from_ethernet(s).unwrap();
                let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!() };
                assert_eq!(t.sequence_number(), 1000 + (i * mss) as u32);
                let last = i + 1 == segs.len();
                assert_eq!(t.psh() && t.fin(), last, "PSH/FIN only on the last segment");
                data.extend_from_slice(t.payload());
            }
            assert_eq!(data, payload);
        }
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut f = tcp_frame(false, 5, b"hello, partial", false);
        assert!(valid(&f));
        let good = f.clone();
        // The host leaves the pseudo-header sum (with length) in the field.
        let seed = csum_fold(csum_add(0, &f[26..34]) + 6 + (f.len() - 34) as u64);
        f[50..52].copy_from_slice(&seed.to_be_bytes());
        assert!(!valid(&f));
        let h = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Default::default() };
        let out = to_wire(f, &h).unwrap();
        assert_eq!(out, vec![good]);
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let (f, h) = host_gso_frame(false, &[1; 3000]);
        assert_eq!(to_wire(f.clone(), &VnetHdr { gso_type: VnetHdr::GSO_UDP, ..h }), Err(GsoError::Type(3)));
        assert_eq!(to_wire(f.clone(), &VnetHdr { gso_type: VnetHdr::GSO_TCPV6, ..h }), Err(GsoError::Layout));
        assert_eq!(to_wire(f.clone(), &VnetHdr { csum_start: 20, ..h }), Err(GsoError::Layout));
        assert_eq!(to_wire(f.clone(), &VnetHdr { csum_start: 60_000, ..h }), Err(GsoError::Layout));
        assert!(to_wire(f.clone(), &VnetHdr { gso_size: 0, ..h }).is_err());
        assert!(to_wire(f[..30].to_vec(), &h).is_err());
        assert!(to_wire(vec![], &h).is_err());
        let p = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 9000, ..Default::default() };
        assert!(to_wire(f, &p).is_err());
    }

    /// The driver's view of a TSO send: lengths zero, IP checksum zero, the TCP field seeded without length.
    fn driver_tso_packet(v6: bool, payload: &[u8]) -> (Vec<u8>, TxContext) {
        let mut f = tcp_frame(v6, 77, payload, true);
        let tucss = if v6 { 54 } else { 34 };
        if v6 {
            f[18..20].copy_from_slice(&[0, 0]);
        } else {
            f[16..18].copy_from_slice(&[0, 0]);
            f[24..26].copy_from_slice(&[0, 0]);
        }
        let addrs = if v6 { f[22..54].to_vec() } else { f[26..34].to_vec() };
        let seed = csum_fold(csum_add(0, &addrs) + 6);
        f[tucss + 16..tucss + 18].copy_from_slice(&seed.to_be_bytes());
        let ctx = TxContext {
            ipcss: 14,
            ipcso: 24,
            ipcse: if v6 { 0 } else { 33 },
            tucss: tucss as u8,
            tucso: (tucss + 16) as u8,
            tucse: 0,
            paylen: payload.len() as u32,
            hdrlen: (tucss + 20) as u8,
            mss: 1460,
            tcp: true,
            ipv4: !v6,
            tse: true,
        };
        (f, ctx)
    }

    #[test]
    fn tso_frame_round_trips_through_the_hosts_segmentation() {
        // Card to host, then host to card: the segments equal the card's own TSO of the same packet.
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for v6 in [false, true] {
            let (pkt, ctx) = driver_tso_packet(v6, &payload);
            let direct = offload::segment(&pkt, &ctx, true, true).unwrap();
            let mut whole = pkt.clone();
            let (h, n) = tso_frame(&mut whole, &ctx, true, true).unwrap().unwrap();
            assert_eq!(n, direct.len());
            assert_eq!(h.gso_size, 1460);
            assert_eq!(h.csum_start, ctx.tucss as u16);
            let p = SlicedPacket::from_ethernet(&whole).unwrap();
            match &p.net {
                Some(NetSlice::Ipv4(ip)) => assert_eq!(ip.header().total_len() as usize, whole.len() - 14),
                Some(NetSlice::Ipv6(ip)) => assert_eq!(ip.header().payload_length() as usize, whole.len() - 54),
                _ => panic!(),
            }
            let again = to_wire(whole, &h).unwrap();
            assert_eq!(again, direct);
            assert!(again.iter().all(|s| valid(s)));
        }
    }

    #[test]
    fn tso_that_the_header_cannot_express_is_left_to_the_card() {
        let (pkt, ctx) = driver_tso_packet(false, &[3; 5000]);
        for (c, ixsm, txsm) in [
            (ctx, true, false),
            (ctx, false, true),
            (TxContext { hdrlen: ctx.hdrlen + 4, ..ctx }, true, true),
            (TxContext { tucso: ctx.tucso - 2, ..ctx }, true, true),
            (TxContext { tcp: false, ..ctx }, true, true),
        ] {
            let mut p = pkt.clone();
            assert_eq!(tso_frame(&mut p, &c, ixsm, txsm), Ok(None), "{c:?} {ixsm} {txsm}");
        }
        let mut p = pkt.clone();
        assert!(tso_frame(&mut p, &TxContext { mss: 0, ..ctx }, true, true).is_err());
    }

    #[test]
    fn partial_tcp_checksum_stays_partial_and_completes_to_the_same_bytes() {
        let good = tcp_frame(false, 9, &[0x5a; 300], false);
        let mut f = good.clone();
        let seed = csum_fold(csum_add(0, &f[26..34]) + 6 + (f.len() - 34) as u64);
        f[50..52].copy_from_slice(&seed.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let ctx = TxContext { ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tcp: true, ipv4: true, ..Default::default() };
        let h = csum_frame(&mut f, &ctx, true, true).unwrap().unwrap();
        assert_eq!(&f[24..26], &good[24..26], "IP checksum computed");
        assert_eq!(to_wire(f, &h).unwrap(), vec![good]);
        let mut u = tcp_frame(false, 9, &[1; 10], false);
        assert_eq!(csum_frame(&mut u, &TxContext { tcp: false, ..ctx }, true, true), Ok(None));
    }
}
