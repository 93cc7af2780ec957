//! Reading captures (tcpdump's pcap) and judging every frame in them with etherparse.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::path::Path;

pub fn read(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let d = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pcap file");
    if d.len() < 24 {
        return Err(bad());
    }
    let magic = u32::from_le_bytes(d[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        _ => return Err(bad()),
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = d[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let caplen = u32_at(off + 8) as usize;
        if off + 16 + caplen > d.len() {
            break; // a capture cut short while writing
        }
        frames.push(d[off + 16..off + 16 + caplen].to_vec());
        off += 16 + caplen;
    }
    Ok(frames)
}

/// What a capture says about the frames in it.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub frames: usize,
    pub oversize: usize,
    pub bad_ip_csum: usize,
    pub bad_l4_csum: usize,
    /// Frames etherparse could not parse: a failure, never skipped.
    pub unparsed: usize,
    pub tcp_data_frames: usize,
    /// Offload mode: GSO super-frames the judge segmented, and frames whose partial checksum it completed.
    pub gso_frames: usize,
    pub partial_csum: usize,
    /// First problems, for the report.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.oversize == 0 && self.bad_ip_csum == 0 && self.bad_l4_csum == 0 && self.unparsed == 0
    }
}

/// One's-complement sum (RFC 1071), folded: 0xFFFF over data that includes a correct checksum field. Summing
/// rather than comparing with a recomputed value accepts both encodings of zero (0x0000 and 0xFFFF), as
/// receivers do.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u64 = 0;
    for p in parts {
        let mut c = p.chunks_exact(2);
        for w in &mut c {
            acc += u16::from_be_bytes([w[0], w[1]]) as u64;
        }
        if let [b] = c.remainder() {
            acc += (*b as u64) << 8;
        }
    }
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

fn l4_ok_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> bool {
    let len = (l4.len() as u16).to_be_bytes();
    ones_sum(&[&src, &dst, &[0, proto], &len, l4]) == 0xFFFF
}

fn l4_ok_v6(src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> bool {
    let len = (l4.len() as u32).to_be_bytes();
    ones_sum(&[&src, &dst, &len, &[0, 0, 0, proto], l4]) == 0xFFFF
}

/// Checks every frame: within the MTU (1514 bytes, 1518 with one tag) and every IPv4, TCP and UDP checksum
/// valid (UDP may carry 0).
pub fn judge(frames: &[Vec<u8>]) -> Verdict {
    let mut v = Verdict { frames: frames.len(), ..Default::default() };
    for (i, f) in frames.iter().enumerate() {
        let p = match SlicedPacket::from_ethernet(f) {
            Ok(p) => p,
            Err(e) => {
                v.unparsed += 1;
                if v.problems.len() < 5 {
                    v.problems.push(format!("frame {i}: etherparse cannot parse it: {e}"));
                }
                continue;
            }
        };
        let tags = if f.len() >= 14 && f[12..14] == [0x81, 0x00] { 4 } else { 0 };
        if f.len() > 1514 + tags {
            v.oversize += 1;
            if v.problems.len() < 5 {
                v.problems.push(format!("frame {i}: {} bytes", f.len()));
            }
        }
        let note = |v: &mut Verdict, what: &str| {
            if v.problems.len() < 5 {
                v.problems.push(format!("frame {i}: {what}"));
            }
        };
        match (&p.net, &p.transport) {
            (Some(NetSlice::Ipv4(ip)), t) => {
                let hdr = ip.header().slice();
                if ones_sum(&[hdr]) != 0xFFFF {
                    v.bad_ip_csum += 1;
                    note(&mut v, "bad IPv4 header checksum");
                }
                if ip.is_payload_fragmented() {
                    continue;
                }
                let (src, dst) = (ip.header().source(), ip.header().destination());
                match t {
                    Some(TransportSlice::Tcp(t)) => {
                        if !t.payload().is_empty() {
                            v.tcp_data_frames += 1;
                        }
                        if !l4_ok_v4(src, dst, 6, t.slice()) {
                            v.bad_l4_csum += 1;
                            let what = format!(
                                "bad TCP checksum {}:{} -> {}:{} seq {} len {} (field {:#06x})",
                                ip.header().source_addr(),
                                t.source_port(),
                                ip.header().destination_addr(),
                                t.destination_port(),
                                t.sequence_number(),
                                t.payload().len(),
                                t.checksum()
                            );
                            note(&mut v, &what);
                        }
                    }
                    Some(TransportSlice::Udp(u)) if u.checksum() != 0 && !l4_ok_v4(src, dst, 17, u.slice()) => {
                        v.bad_l4_csum += 1;
                        note(&mut v, "bad UDP checksum");
                    }
                    _ => {}
                }
            }
            (Some(NetSlice::Ipv6(ip)), t) => {
                let (src, dst) = (ip.header().source(), ip.header().destination());
                match t {
                    Some(TransportSlice::Tcp(t)) if !l4_ok_v6(src, dst, 6, t.slice()) => {
                        v.bad_l4_csum += 1;
                        note(&mut v, "bad TCP/IPv6 checksum");
                    }
                    Some(TransportSlice::Udp(u)) if !l4_ok_v6(src, dst, 17, u.slice()) => {
                        v.bad_l4_csum += 1;
                        note(&mut v, "bad UDP/IPv6 checksum");
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    v
}

/// The pseudo-header sum of an L4 segment, folded, not complemented: what a partial checksum field holds
/// (the host's stack and a card in offload mode both leave it there for the other side to finish).
fn pseudo_partial(net: &NetSlice, proto: u8, l4_len: usize) -> u16 {
    match net {
        NetSlice::Ipv4(ip) => ones_sum(&[&ip.header().source(), &ip.header().destination(), &[0, proto], &(l4_len as u16).to_be_bytes()]),
        NetSlice::Ipv6(ip) => {
            ones_sum(&[&ip.header().source(), &ip.header().destination(), &(l4_len as u32).to_be_bytes(), &[0, 0, 0, proto]])
        }
    }
}

/// Stores the complete L4 checksum at `at` (the field counted as zero).
fn finish_l4(f: &mut [u8], l4: usize, at: usize, net_pseudo: &[&[u8]]) {
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut parts: Vec<&[u8]> = net_pseudo.to_vec();
    parts.push(&f[l4..]);
    let c = !ones_sum(&parts);
    let c = if c == 0 { 0xFFFF } else { c };
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// What one frame on a TAP in offload mode stands for on a wire, by the judge's own rules: a TCP
/// super-frame (over the MTU, checksum field partial) is cut at the largest payload that fits 1514 bytes,
/// with lengths, IPv4 ids, sequence numbers, CWR/PSH/FIN and both checksums set per segment; a TCP or UDP
/// frame whose field holds the partial sum gets its checksum completed. Anything else is returned as it
/// is, for `judge` to flag. Returns the frames and whether it was a super-frame / a partial checksum.
pub fn to_wire_equivalent(f: &[u8]) -> (Vec<Vec<u8>>, bool, bool) {
    let keep = || (vec![f.to_vec()], false, false);
    let Ok(p) = SlicedPacket::from_ethernet(f) else { return keep() };
    let Some(net) = &p.net else { return keep() };
    let (l3, v4) = match net {
        NetSlice::Ipv4(ip) => (ip.header().slice().as_ptr() as usize - f.as_ptr() as usize, true),
        NetSlice::Ipv6(ip) => (ip.header().slice().as_ptr() as usize - f.as_ptr() as usize, false),
    };
    let (l4_slice, proto, csum_at) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.slice(), 6u8, 16),
        Some(TransportSlice::Udp(u)) => (u.slice(), 17u8, 6),
        _ => return keep(),
    };
    if let NetSlice::Ipv4(ip) = net {
        if ip.is_payload_fragmented() {
            return keep();
        }
    }
    let l4 = l4_slice.as_ptr() as usize - f.as_ptr() as usize;
    let field = u16::from_be_bytes([f[l4 + csum_at], f[l4 + csum_at + 1]]);
    let partial = field == pseudo_partial(net, proto, f.len() - l4);
    let tags = if f[12..14] == [0x81, 0x00] { 4 } else { 0 };
    let addrs: Vec<u8> = if v4 { f[l3 + 12..l3 + 20].to_vec() } else { f[l3 + 8..l3 + 40].to_vec() };
    let pseudo = |l4_len: usize| -> Vec<u8> {
        let mut v = addrs.clone();
        if v4 {
            v.extend([0, proto]);
            v.extend((l4_len as u16).to_be_bytes());
        } else {
            v.extend((l4_len as u32).to_be_bytes());
            v.extend([0, 0, 0, proto]);
        }
        v
    };
    if f.len() <= 1514 + tags {
        if !partial {
            return keep();
        }
        let mut g = f.to_vec();
        let ph = pseudo(g.len() - l4);
        finish_l4(&mut g, l4, l4 + csum_at, &[&ph]);
        return (vec![g], false, true);
    }
    if proto != 6 || !partial {
        return keep();
    }
    let hdr_len = l4 + ((f[l4 + 12] >> 4) as usize) * 4;
    let mss = 1514 + tags - hdr_len;
    let payload = &f[hdr_len..];
    let n = payload.len().div_ceil(mss);
    let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
    let id = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
    let mut out = Vec::new();
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut g = f[..hdr_len].to_vec();
        g.extend_from_slice(chunk);
        let len = g.len();
        if v4 {
            g[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            g[l3 + 4..l3 + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
            g[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let ihl = (g[l3] & 0xF) as usize * 4;
            let c = !ones_sum(&[&g[l3..l3 + ihl]]);
            g[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            g[l3 + 4..l3 + 6].copy_from_slice(&((len - l3 - 40) as u16).to_be_bytes());
        }
        g[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        if i + 1 < n {
            g[l4 + 13] &= !0x09; // FIN and PSH: last segment only
        }
        if i > 0 {
            g[l4 + 13] &= !0x80; // CWR: first segment only
        }
        let ph = pseudo(len - l4);
        finish_l4(&mut g, l4, l4 + csum_at, &[&ph]);
        out.push(g);
    }
    (out, true, false)
}

/// The judge for a capture on a TAP in offload mode: every frame turned into what it stands for on a
/// wire (`to_wire_equivalent`), then judged as wire frames. `frames` counts the captured frames.
pub fn judge_offload(frames: &[Vec<u8>]) -> Verdict {
    let mut wire = Vec::new();
    let (mut gso, mut partial) = (0, 0);
    for f in frames {
        let (w, g, p) = to_wire_equivalent(f);
        gso += g as usize;
        partial += p as usize;
        wire.extend(w);
    }
    let mut v = judge(&wire);
    v.frames = frames.len();
    v.gso_frames = gso;
    v.partial_csum = partial;
    v
}

/// TCP data segments from `src_ip` to `dst_port`, in capture order: (payload length, flags byte).
pub fn tcp_segments(frames: &[Vec<u8>], src_ip: [u8; 4], dst_port: u16) -> Vec<(usize, u8)> {
    let mut out = Vec::new();
    for f in frames {
        // Selection only: the judge above counts what cannot be parsed.
        let Ok(p) = SlicedPacket::from_ethernet(f) else { continue };
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport) else { continue };
        if ip.header().source() != src_ip || t.destination_port() != dst_port || t.payload().is_empty() {
            continue;
        }
        let flags = t.slice()[13];
        out.push((t.payload().len(), flags));
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn offload_judge_segments_super_frames_and_completes_partial_checksums() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let good = tcp_frame(&payload);
        // The plain judge calls the super-frame oversize.
        assert_eq!(judge(std::slice::from_ref(&good)).oversize, 1);
        // As a TAP in offload mode carries it: the TCP field holds the partial (pseudo-header) sum.
        let mut gso = good.clone();
        let ph = ones_sum(&[&gso[26..30], &gso[30..34], &[0, 6], &((gso.len() - 34) as u16).to_be_bytes()]);
        gso[50..52].copy_from_slice(&ph.to_be_bytes());
        let (w, is_gso, _) = to_wire_equivalent(&gso);
        assert!(is_gso);
        assert_eq!(w.len(), 5000usize.div_ceil(1460));
        assert!(w.iter().all(|s| s.len() <= 1514));
        let v = judge_offload(&[gso.clone()]);
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.frames, v.gso_frames), (1, 1));
        // The data comes out whole and in order (etherparse reads each segment).
        let mut data = Vec::new();
        for s in &w {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else { panic!() };
            data.extend_from_slice(t.payload());
        }
        assert_eq!(data, payload);
        // A super-frame whose field is neither complete nor partial stays oversize.
        let mut wrong = gso.clone();
        wrong[51] ^= 0x10;
        assert!(!judge_offload(&[wrong]).clean());
        // A small frame with a partial field is completed; with a wrong one it is a bad checksum.
        let small = tcp_frame(b"partial");
        let mut p = small.clone();
        let ph = ones_sum(&[&p[26..34], &[0, 6], &((p.len() - 34) as u16).to_be_bytes()]);
        p[50..52].copy_from_slice(&ph.to_be_bytes());
        assert_eq!(to_wire_equivalent(&p), (vec![small], false, true));
        p[50] ^= 1;
        assert_eq!(judge_offload(&[p]).bad_l4_csum, 1);
    }

    #[test]
    fn judge_accepts_good_frames_and_both_zero_encodings() {
        let f = tcp_frame(b"hello");
        assert!(judge(std::slice::from_ref(&f)).clean());
        // Find a payload whose checksum is 0x0000 and send it as 0xFFFF: still valid.
        for x in 0..=0xFFFFu16 {
            let f = tcp_frame(&x.to_be_bytes());
            if f[50..52] == [0, 0] {
                let mut g = f.clone();
                g[50..52].copy_from_slice(&[0xFF, 0xFF]);
                assert!(judge(&[g]).clean(), "0xFFFF is the other zero");
                break;
            }
        }
        let mut bad = f;
        bad[55] ^= 1;
        let v = judge(&[bad]);
        assert_eq!(v.bad_l4_csum, 1);
        let big = tcp_frame(&[0u8; 1500]);
        assert_eq!(judge(&[big]).oversize, 1);
        // A frame etherparse cannot parse is a failure, not skipped.
        let mut cut = tcp_frame(b"hello");
        cut.truncate(30);
        let v = judge(&[cut]);
        assert_eq!(v.unparsed, 1);
        assert!(!v.clean());
    }
}
