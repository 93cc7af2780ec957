//! Transmit offloads as the 82574L performs them: checksum insertion at the offsets a context descriptor
//! gives, and TCP/UDP segmentation (TSO). The device trusts nothing: every offset is checked against the
//! frame, and a context that does not fit the packet is refused rather than applied.

use crate::bytes::{be16, be32, put};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OffloadError {
    #[error("checksum offsets {0} out of the frame")]
    Offsets(&'static str),
    #[error("TSO with MSS 0")]
    ZeroMss,
    #[error("TSO header length {hdrlen} does not fit a {len}-byte packet")]
    HeaderLength { hdrlen: usize, len: usize },
    #[error("TSO would produce {0} segments")]
    TooManySegments(usize),
}

/// Offload parameters from a context descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxContext {
    pub ipcss: u8,
    pub ipcso: u8,
    pub ipcse: u16,
    pub tucss: u8,
    pub tucso: u8,
    pub tucse: u16,
    pub paylen: u32,
    pub hdrlen: u8,
    pub mss: u16,
    /// TUCMD.TCP: TCP (else UDP).
    pub tcp: bool,
    /// TUCMD.IP: IPv4 (else IPv6).
    pub ipv4: bool,
    /// TUCMD.TSE.
    pub tse: bool,
}

/// Adds `data` to a one's-complement partial sum (16-bit big-endian words, odd byte padded).
///
/// Eight bytes at a time, read in the CPU's order (RFC 1071 2(B)): the one's-complement sum of byte-swapped
/// words is the byte-swapped sum, so `data` is summed as little-endian words and the folded result swapped
/// once, with no swap per word. A 32-bit word is worth its two 16-bit halves modulo 0xFFFF (2^16 = 1), so the
/// sum of the halves of each 32-bit word folds (`csum_fold`) to the same result as the 16-bit words would.
pub fn csum_add(sum: u64, data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut wide = data.chunks_exact(8);
    for c in &mut wide {
        if let Ok(b) = <[u8; 8]>::try_from(c) {
            let w = u64::from_le_bytes(b);
            acc += (w >> 32) + (w & 0xFFFF_FFFF);
        }
    }
    let mut chunks = wide.remainder().chunks_exact(2);
    for c in &mut chunks {
        if let [a, b] = c {
            acc += u64::from(u16::from_le_bytes([*a, *b]));
        }
    }
    if let [b] = chunks.remainder() {
        // The odd byte is the high half of a big-endian word: the low half of a little-endian one.
        acc += u64::from(*b);
    }
    sum + u64::from(csum_fold(acc).swap_bytes())
}

/// Folds a partial sum to 16 bits (not complemented).
pub fn csum_fold(mut sum: u64) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The inclusive end offset given by a CSE field (0 means the end of the frame), as an exclusive end.
fn range_end(cse: u16, len: usize) -> usize {
    if cse == 0 {
        len
    } else {
        (cse as usize + 1).min(len)
    }
}

/// IPv4 header checksum (IXSM): the one's complement of the sum over IPCSS..=IPCSE, stored at IPCSO.
pub fn insert_ip_checksum(frame: &mut [u8], ctx: &TxContext) -> Result<(), OffloadError> {
    let (start, off) = (ctx.ipcss as usize, ctx.ipcso as usize);
    let end = range_end(ctx.ipcse, frame.len());
    if start >= end || off + 2 > frame.len() || off < start || off + 2 > end {
        return Err(OffloadError::Offsets("IP"));
    }
    let range = frame.get(start..end).ok_or(OffloadError::Offsets("IP"))?;
    let c = !csum_fold(csum_add(0, range));
    if !put(frame, off, &c.to_be_bytes()) {
        return Err(OffloadError::Offsets("IP"));
    }
    Ok(())
}

/// TCP/UDP checksum (TXSM): the one's complement of the sum over TUCSS..=TUCSE (the driver seeds the field
/// with the pseudo-header sum), plus `extra_len` (the L4 length, which TSO drivers leave out of the seed).
/// A UDP result of 0 is sent as 0xFFFF.
pub fn insert_l4_checksum(
    frame: &mut [u8],
    start: usize,
    off: usize,
    cse: u16,
    udp: bool,
    extra_len: Option<usize>,
) -> Result<(), OffloadError> {
    let end = range_end(cse, frame.len());
    if start >= end || off + 2 > frame.len() || off < start {
        return Err(OffloadError::Offsets("L4"));
    }
    let mut sum = csum_add(0, frame.get(start..end).ok_or(OffloadError::Offsets("L4"))?);
    if let Some(l) = extra_len {
        sum += l as u64;
    }
    let mut c = !csum_fold(sum);
    if udp && c == 0 {
        c = 0xFFFF;
    }
    if !put(frame, off, &c.to_be_bytes()) {
        return Err(OffloadError::Offsets("L4"));
    }
    Ok(())
}

/// Inserts the checksums POPTS asks for into one (non-TSO) frame.
pub fn apply_checksums(frame: &mut [u8], ctx: &TxContext, ixsm: bool, txsm: bool) -> Result<(), OffloadError> {
    if ixsm {
        insert_ip_checksum(frame, ctx)?;
    }
    if txsm {
        insert_l4_checksum(frame, ctx.tucss as usize, ctx.tucso as usize, ctx.tucse, !ctx.tcp, None)?;
    }
    Ok(())
}

/// Header fields inside HDRLEN, which `segment` checked against the header layout first.
fn put16(f: &mut [u8], off: usize, v: u16) {
    put(f, off, &v.to_be_bytes());
}

/// Most segments one TSO packet may produce (64 KiB at the smallest sensible MSS, with margin).
pub const MAX_SEGMENTS: usize = 2048;

/// How many segments a TSO packet of `len` bytes becomes, once its context is checked against it: an MSS,
/// and the IP header before the L4 header, both within HDRLEN and the packet.
pub fn tso_segments(len: usize, ctx: &TxContext) -> Result<usize, OffloadError> {
    let hdrlen = ctx.hdrlen as usize;
    let mss = ctx.mss as usize;
    if mss == 0 {
        return Err(OffloadError::ZeroMss);
    }
    let ipcss = ctx.ipcss as usize;
    let tucss = ctx.tucss as usize;
    let l4_min = if ctx.tcp { 20 } else { 8 };
    let ip_min = if ctx.ipv4 { 20 } else { 40 };
    if hdrlen > len || tucss + l4_min > hdrlen || ipcss + ip_min > tucss || ipcss + ip_min > hdrlen {
        return Err(OffloadError::HeaderLength { hdrlen, len });
    }
    let n = (len - hdrlen).div_ceil(mss).max(1);
    if n > MAX_SEGMENTS {
        return Err(OffloadError::TooManySegments(n));
    }
    Ok(n)
}

/// Segments a TSO packet (HDRLEN header bytes, then payload) into frames of at most MSS payload each.
/// Per segment: IPv4 total length and id (+1 each), or IPv6 payload length; TCP sequence number advanced,
/// CWR only on the first segment and FIN/PSH only on the last; or UDP length; then the checksums POPTS asks
/// for, the L4 one including the segment's L4 length.
pub fn segment(pkt: &[u8], ctx: &TxContext, ixsm: bool, txsm: bool) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut out = Vec::new();
    segment_into(pkt, ctx, ixsm, txsm, &mut Vec::new, &mut out)?;
    Ok(out)
}

/// As [`segment`], each segment built in a buffer from `buf` (empty; a reused one) and appended to `out`
/// (a reused vector), so that a steady flow of TSO sends allocates nothing per segment. Returns how many
/// were appended; on an error, none are.
pub fn segment_into(
    pkt: &[u8],
    ctx: &TxContext,
    ixsm: bool,
    txsm: bool,
    buf: &mut dyn FnMut() -> Vec<u8>,
    out: &mut Vec<Vec<u8>>,
) -> Result<usize, OffloadError> {
    let n = tso_segments(pkt.len(), ctx)?;
    let hdrlen = ctx.hdrlen as usize;
    let mss = ctx.mss as usize;
    let ipcss = ctx.ipcss as usize;
    let tucss = ctx.tucss as usize;
    let (hdr, payload) = pkt.split_at_checked(hdrlen).ok_or(OffloadError::HeaderLength { hdrlen, len: pkt.len() })?;
    let ip_id = if ctx.ipv4 { be16(hdr, ipcss + 4).unwrap_or(0) } else { 0 };
    let seq = if ctx.tcp { be32(hdr, tucss + 4).unwrap_or(0) } else { 0 };
    let start = out.len();
    out.reserve(n);
    let empty: &[u8] = &[];
    for (i, chunk) in payload.chunks(mss).chain((payload.is_empty()).then_some(empty)).enumerate() {
        let mut f = buf();
        f.reserve(hdrlen + chunk.len());
        f.extend_from_slice(hdr);
        f.extend_from_slice(chunk);
        let len = f.len();
        if ctx.ipv4 {
            put16(&mut f, ipcss + 2, (len - ipcss) as u16);
            put16(&mut f, ipcss + 4, ip_id.wrapping_add(i as u16));
        } else {
            put16(&mut f, ipcss + 4, (len - ipcss - 40) as u16);
        }
        if ctx.tcp {
            let s = seq.wrapping_add((i * mss) as u32);
            put(&mut f, tucss + 4, &s.to_be_bytes());
            if let Some(flags) = f.get_mut(tucss + 13) {
                if i + 1 < n {
                    *flags &= !(0x01 | 0x08); // FIN, PSH only on the last segment
                }
                if i > 0 {
                    *flags &= !0x80; // CWR only on the first
                }
            }
        } else {
            put16(&mut f, tucss + 4, (len - tucss) as u16);
        }
        let sums = (|| {
            if ixsm && ctx.ipv4 {
                insert_ip_checksum(&mut f, ctx)?;
            }
            if txsm {
                insert_l4_checksum(&mut f, tucss, ctx.tucso as usize, 0, !ctx.tcp, Some(len - tucss))?;
            }
            Ok(())
        })();
        if let Err(e) = sums {
            // The segments appended before this one go too: a packet is cut whole or not at all.
            out.truncate(start);
            return Err(e);
        }
        out.push(f);
    }
    Ok(n)
}

/// Inserts an 802.1Q tag (`vet` ethertype, `tci`) after the MAC addresses.
pub fn insert_vlan(frame: &mut Vec<u8>, vet: u16, tci: u16) -> bool {
    if frame.len() < 12 {
        return false;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&vet.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    frame.splice(12..12, tag);
    true
}

#[cfg(test)]
mod test {

    /// The plain 16-bit sum, word by word: the definition `csum_add` must agree with.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut sum = 0u64;
        for (i, b) in data.iter().enumerate() {
            sum += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
        }
        csum_fold(sum)
    }

    /// A packet is cut whole or not at all: when a later segment cannot take its checksum (here the last
    /// one, too short for the offset the context gives), the segments before it are not left in `out`.
    #[test]
    fn a_cut_that_fails_on_a_later_segment_appends_nothing() {
        let ctx = TxContext {
            ipcss: 14,
            ipcso: 24,
            ipcse: 33,
            tucss: 34,
            tucso: 56,
            hdrlen: 42,
            mss: 100,
            ipv4: true,
            tse: true,
            ..Default::default()
        };
        let mut pkt = vec![0u8; 42 + 101];
        pkt[14] = 0x45;
        let mut out = vec![vec![7u8]];
        let r = segment_into(&pkt, &ctx, false, true, &mut Vec::new, &mut out);
        assert_eq!(r, Err(OffloadError::Offsets("L4")), "the second segment is 43 bytes, its field at 56");
        assert_eq!(out, vec![vec![7u8]], "what was there before stays, nothing of this packet");
        let ok = TxContext { tucso: 40, ..ctx };
        assert_eq!(segment_into(&pkt, &ok, false, true, &mut Vec::new, &mut out), Ok(2));
        assert_eq!(out.len(), 3, "appended behind what was there");
    }

    #[test]
    fn wide_sum_folds_to_the_sixteen_bit_sum() {
        let mut x = 0x9E37_79B9u32;
        for len in (0..80).chain([1447, 1448, 1514, 9018, 65535]) {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert_eq!(csum_fold(csum_add(0, &data)), reference_sum(&data), "length {len}");
            assert_eq!(csum_fold(csum_add(0xFFFF_0001, &data)), csum_fold(0xFFFF_0001 + u64::from(reference_sum(&data))), "length {len}");
        }
        for seed in [0, 1, 0xFFFF, 0x1_0000, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF] {
            for len in [0, 1, 2, 7, 8, 9, 63, 1448] {
                let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                assert_eq!(
                    csum_fold(csum_add(seed, &data)),
                    csum_fold(seed + u64::from(reference_sum(&data))),
                    "seed {seed:#x}, length {len}"
                );
            }
        }
        assert_eq!(csum_fold(csum_add(0, &[0xFF; 64])), 0xFFFF);
        assert_eq!(csum_fold(csum_add(0, &[0; 64])), 0);
    }

    use super::*;

    #[test]
    fn tso_context_with_the_l4_header_inside_the_ip_header_is_refused() {
        // IPv4 at 14 (20 bytes), L4 claimed at 20: the two headers overlap.
        let ctx = TxContext {
            ipcss: 14,
            ipcso: 24,
            tucss: 20,
            tucso: 36,
            hdrlen: 54,
            mss: 100,
            tcp: true,
            ipv4: true,
            tse: true,
            ..Default::default()
        };
        let pkt = vec![0u8; 400];
        assert!(matches!(segment(&pkt, &ctx, true, true), Err(OffloadError::HeaderLength { .. })));
        // The same headers laid out one after the other are fine.
        let ok = TxContext { tucss: 34, tucso: 50, ..ctx };
        assert_eq!(segment(&pkt, &ok, true, true).unwrap().len(), 4);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_fold(csum_add(0, &d)), 0xddf2);
        // Odd length pads with a zero byte.
        assert_eq!(csum_fold(csum_add(0, &[0x12])), 0x1200);
    }

    #[test]
    fn ipv4_header_checksum_hand_vector() {
        // A well-known header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        let ctx = TxContext { ipcss: 14, ipcso: 24, ipcse: 33, ..Default::default() };
        insert_ip_checksum(&mut f, &ctx).unwrap();
        assert_eq!(&f[24..26], &[0xb8, 0x61]);
    }

    #[test]
    fn offsets_out_of_range_are_refused() {
        let mut f = vec![0u8; 40];
        let ctx = TxContext { ipcss: 14, ipcso: 60, ipcse: 33, ..Default::default() };
        assert!(insert_ip_checksum(&mut f, &ctx).is_err());
        assert!(insert_l4_checksum(&mut f, 50, 52, 0, false, None).is_err());
        assert!(insert_l4_checksum(&mut f, 20, 39, 0, false, None).is_err());
        let ctx = TxContext { hdrlen: 54, mss: 0, ..Default::default() };
        assert_eq!(segment(&f, &ctx, true, true), Err(OffloadError::ZeroMss));
        let ctx = TxContext { hdrlen: 54, mss: 100, tcp: true, ipv4: true, ipcss: 14, tucss: 34, ..Default::default() };
        assert!(matches!(segment(&f, &ctx, true, true), Err(OffloadError::HeaderLength { .. })));
    }

    #[test]
    fn udp_zero_checksum_is_sent_as_ffff() {
        // A UDP "packet" whose one's-complement sum is 0xFFFF gives checksum 0, sent as 0xFFFF.
        let mut f = vec![0xFF, 0xFF, 0x00, 0x00];
        insert_l4_checksum(&mut f, 0, 2, 0, true, None).unwrap();
        assert_eq!(&f[2..4], &[0xFF, 0xFF]);
        let mut f = vec![0xFF, 0xFF, 0x00, 0x00];
        insert_l4_checksum(&mut f, 0, 2, 0, false, None).unwrap();
        assert_eq!(&f[2..4], &[0x00, 0x00], "TCP keeps 0");
    }

    #[test]
    fn vlan_insertion() {
        let mut f: Vec<u8> = (0..20).collect();
        assert!(insert_vlan(&mut f, 0x8100, 0x2005));
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x20, 0x05]);
        assert_eq!(f[16], 12);
        let mut short = vec![0u8; 5];
        assert!(!insert_vlan(&mut short, 0x8100, 1));
    }
}
