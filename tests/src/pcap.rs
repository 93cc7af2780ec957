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
