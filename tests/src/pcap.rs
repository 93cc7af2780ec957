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
    pub tcp_data_frames: usize,
    /// First problems, for the report.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.oversize == 0 && self.bad_ip_csum == 0 && self.bad_l4_csum == 0
    }
}

/// Checks every frame: within the MTU (1514 bytes, 1518 with one tag) and every IPv4, TCP and UDP checksum
/// valid (UDP may carry 0).
pub fn judge(frames: &[Vec<u8>]) -> Verdict {
    let mut v = Verdict { frames: frames.len(), ..Default::default() };
    for (i, f) in frames.iter().enumerate() {
        let Ok(p) = SlicedPacket::from_ethernet(f) else { continue };
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
                let h = ip.header().to_header();
                if h.header_checksum != h.calc_header_checksum() {
                    v.bad_ip_csum += 1;
                    note(&mut v, "bad IPv4 header checksum");
                }
                if ip.is_payload_fragmented() {
                    continue;
                }
                match t {
                    Some(TransportSlice::Tcp(t)) => {
                        if !t.payload().is_empty() {
                            v.tcp_data_frames += 1;
                        }
                        if t.to_header().calc_checksum_ipv4(&h, t.payload()).ok() != Some(t.checksum()) {
                            v.bad_l4_csum += 1;
                            note(&mut v, "bad TCP checksum");
                        }
                    }
                    Some(TransportSlice::Udp(u)) if u.checksum() != 0 && u.to_header().calc_checksum_ipv4(&h, u.payload()).ok() != Some(u.checksum()) => {
                        v.bad_l4_csum += 1;
                        note(&mut v, "bad UDP checksum");
                    }
                    _ => {}
                }
            }
            (Some(NetSlice::Ipv6(ip)), t) => {
                let h = ip.header().to_header();
                match t {
                    Some(TransportSlice::Tcp(t)) if t.to_header().calc_checksum_ipv6(&h, t.payload()).ok() != Some(t.checksum()) => {
                        v.bad_l4_csum += 1;
                        note(&mut v, "bad TCP/IPv6 checksum");
                    }
                    Some(TransportSlice::Udp(u)) if u.to_header().calc_checksum_ipv6(&h, u.payload()).ok() != Some(u.checksum()) => {
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
