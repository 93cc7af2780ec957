//! The stack's frame input: Ethernet, ARP, IPv4 (with fragments), ICMP, UDP and TCP against live sockets (a
//! listener with accepted connections, an active open, a bound UDP socket) on a virtual clock.
//!
//! Frames are either raw input bytes or built from a template (our MAC and address, lengths and checksums
//! fixed up, TCP sequence and acknowledgment numbers taken from the last segment the stack sent) so that the
//! fuzzer reaches established connections instead of stopping at the first checksum.

use crate::input::Input;
use stack::dev::Device;
use stack::skb::{Csum, PacketBuf};
use stack::time::Instant;
use stack::{Config, Stack};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const OUR_IP: [u8; 4] = [10, 0, 0, 2];
const PEER_IP: [u8; 4] = [10, 0, 0, 1];

#[derive(Default)]
struct Shared {
    inbox: VecDeque<PacketBuf>,
    /// (src port, dst port, seq, sequence space used, ack) of the last TCP segment the stack sent.
    last_tcp: Option<(u16, u16, u32, u32, u32)>,
    sent: usize,
}

struct FuzzDev(Rc<RefCell<Shared>>);

impl Device for FuzzDev {
    fn mac(&self) -> [u8; 6] {
        OUR_MAC
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let mut s = self.0.borrow_mut();
        let n = q.len();
        for p in q.drain(..) {
            s.sent += 1;
            let d = p.to_vec();
            if let Some(seg) = tcp_of(&d) {
                s.last_tcp = Some(seg);
            }
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let mut s = self.0.borrow_mut();
        let n = budget.min(s.inbox.len());
        out.extend(s.inbox.drain(..n));
        Ok(n)
    }
    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        "fuzz".into()
    }
}

/// The TCP fields of a frame the stack sent (Ethernet + IPv4 + TCP), if it is one.
fn tcp_of(f: &[u8]) -> Option<(u16, u16, u32, u32, u32)> {
    let ip = f.get(14..)?;
    if f.get(12..14)? != [8, 0] || ip.get(9)? != &6 {
        return None;
    }
    let ihl = usize::from(ip.first()? & 0xF) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let t = ip.get(ihl..total.max(ihl))?;
    let be16 = |o: usize| Some(u16::from_be_bytes([*t.get(o)?, *t.get(o + 1)?]));
    let be32 = |o: usize| Some(u32::from_be_bytes([*t.get(o)?, *t.get(o + 1)?, *t.get(o + 2)?, *t.get(o + 3)?]));
    let doff = usize::from(t.get(12)? >> 4) * 4;
    let flags = *t.get(13)?;
    let len = t.len().saturating_sub(doff) as u32 + u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    Some((be16(0)?, be16(2)?, be32(4)?, len, be32(8)?))
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    !(s as u16)
}

/// Builds a frame from the input: raw, ARP or IPv4 with the fix-ups its flag bits ask for.
fn frame(i: &mut Input, shared: &Shared) -> Vec<u8> {
    let mode = i.u8();
    let len = usize::from(i.u16() % 1600);
    let body = i.bytes(len);
    let mut f = Vec::with_capacity(14 + 20 + body.len());
    let dst = if mode & 0x10 != 0 { [0xFF; 6] } else { OUR_MAC };
    match mode % 3 {
        0 => return body.to_vec(),
        1 => {
            f.extend_from_slice(&dst);
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&[8, 6]);
            let mut arp = [0u8; 28];
            arp[..body.len().min(28)].copy_from_slice(&body[..body.len().min(28)]);
            if mode & 0x20 != 0 {
                arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, if mode & 0x40 != 0 { 1 } else { 2 }]);
                arp[8..14].copy_from_slice(&PEER_MAC);
                arp[14..18].copy_from_slice(&PEER_IP);
                arp[24..28].copy_from_slice(&OUR_IP);
            }
            f.extend_from_slice(&arp);
        }
        _ => {
            f.extend_from_slice(&dst);
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&[8, 0]);
            let mut ip = [0u8; 20];
            ip[..body.len().min(20)].copy_from_slice(&body[..body.len().min(20)]);
            let mut payload = body.get(20..).unwrap_or(&[]).to_vec();
            let fix = mode & 0x20 != 0;
            if fix {
                ip[0] = 0x45;
                let total = (20 + payload.len()) as u16;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[8] = ip[8].max(1);
                ip[9] = [6, 17, 1, ip[9]][usize::from(ip[9] % 4)];
                ip[12..16].copy_from_slice(&PEER_IP);
                ip[16..20].copy_from_slice(&OUR_IP);
            }
            let proto = ip[9];
            if proto == 6 && payload.len() >= 20 && mode & 0x40 != 0 {
                if let Some((sp, dp, seq, used, ack)) = shared.last_tcp {
                    payload[0..2].copy_from_slice(&dp.to_be_bytes());
                    payload[2..4].copy_from_slice(&sp.to_be_bytes());
                    payload[4..8].copy_from_slice(&ack.to_be_bytes());
                    payload[8..12].copy_from_slice(&seq.wrapping_add(used).to_be_bytes());
                }
                payload[12] = (payload[12] & 0xF0).clamp(0x50, 0xF0);
            }
            if fix && mode & 0x80 != 0 {
                // The L4 checksum over the pseudo-header.
                let at = match proto {
                    6 => Some(16),
                    17 => Some(6),
                    1 => Some(2),
                    _ => None,
                };
                if let Some(at) = at.filter(|a| payload.len() >= a + 2) {
                    payload[at..at + 2].fill(0);
                    let init = if proto == 1 {
                        0
                    } else {
                        let mut p = Vec::with_capacity(12);
                        p.extend_from_slice(&PEER_IP);
                        p.extend_from_slice(&OUR_IP);
                        p.extend_from_slice(&[0, proto]);
                        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                        p.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum()
                    };
                    let c = csum(&payload, init);
                    payload[at..at + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
            if fix {
                ip[10..12].fill(0);
                let c = csum(&ip, 0);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            f.extend_from_slice(&ip);
            f.extend_from_slice(&payload);
        }
    }
    f
}

/// Interprets the input as frames arriving between polls, with the application reading, writing and
/// closing its sockets in between, and taking the interface down and up.
pub fn rx(data: &[u8]) {
    let shared = Rc::new(RefCell::new(Shared::default()));
    let mut st = Stack::new(Box::new(FuzzDev(shared.clone())), Config::new(OUR_IP, 24));
    // Repeatable runs: a fixed secret behind sequence numbers and ports.
    st.set_secret(0x5EED);
    let mut now = Instant::from_millis(1);
    let Ok(listener) = st.tcp_listen(80, 4) else { return };
    let Ok(udp) = st.udp_bind(53) else { return };
    let active = st.tcp_connect(PEER_IP, 5000, now).ok();
    let mut conns: Vec<_> = active.into_iter().collect();
    let mut i = Input::new(data);
    let mut buf = vec![0u8; 4096];
    st.poll(now);
    for _ in 0..64 {
        if i.is_empty() {
            break;
        }
        let f = {
            let s = shared.borrow();
            frame(&mut i, &s)
        };
        let ctl = i.u8();
        let mut p = PacketBuf::from_slice(&f);
        if ctl & 1 != 0 {
            p.csum = Csum::Verified;
        }
        shared.borrow_mut().inbox.push_back(p);
        // Sometimes two frames in one poll, for GRO.
        if ctl & 2 == 0 {
            now = now + Duration::from_micros(u64::from(i.u16()) * if ctl & 4 != 0 { 1000 } else { 1 });
            st.poll(now);
        }
        while let Ok(c) = st.tcp_accept(listener) {
            conns.push(c);
        }
        for (k, &c) in conns.iter().enumerate() {
            let _ = st.tcp_recv(c, &mut buf, now);
            if ctl & 8 != 0 {
                let _ = st.tcp_send(c, &buf[..usize::from(ctl) * 8], now);
            }
            if ctl & 0x30 == 0x30 && k == usize::from(ctl >> 6) {
                st.tcp_close(c, now);
            }
            let _ = st.tcp_ready(c);
            let _ = st.tcp_state(c);
        }
        if ctl & 0x30 == 0x20 {
            // The interface goes down (and its frames are dropped) or comes back up; going down, the host
            // connects to itself through `lo`, which stays up: to 127.0.0.1, or to the interface's own
            // address, whose local route stays too.
            let up = !st.is_up();
            st.set_up(up);
            if !up && conns.len() < 16 {
                let to = if ctl & 0x80 != 0 { std::net::Ipv4Addr::from(OUR_IP) } else { std::net::Ipv4Addr::LOCALHOST };
                conns.extend(st.tcp_connect_ip(0, to.into(), 80, now).ok());
            }
        }
        while st.udp_recv_from(udp).is_ok() {}
        if ctl & 0x40 != 0 {
            let _ = st.udp_send_to(udp, PEER_IP, 9, &buf[..usize::from(ctl) * 16], now);
        }
        let _ = st.ping_events(0);
    }
    // Let every timer run out.
    for _ in 0..8 {
        now = now + Duration::from_secs(30);
        st.poll(now);
    }
}

/// IPv6 input: frames to our addresses and groups carrying extension headers, fragments and ICMPv6 (echo,
/// errors, neighbour and router discovery, redirects) with lengths and checksums fixed up so that the
/// fuzzer reaches the handlers, between polls that run DAD, router solicitation and the neighbour timers.
pub fn rx6(data: &[u8]) {
    use stack::wire::ipv6;
    let shared = Rc::new(RefCell::new(Shared::default()));
    let mut cfg = Config::new(OUR_IP, 24);
    let ours: ipv6::Addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    cfg.ipv6 = Some(stack::Ipv6Config { addrs: vec![(ours, 64)], ..Default::default() });
    let mut st = Stack::new(Box::new(FuzzDev(shared.clone())), cfg);
    let mut now = Instant::from_millis(1);
    st.poll(now);
    now = now + Duration::from_secs(2);
    st.poll(now);
    let ll = ipv6::link_local(OUR_MAC);
    let peer_ll: ipv6::Addr = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let peer: ipv6::Addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut i = Input::new(data);
    for _ in 0..32 {
        if i.is_empty() {
            break;
        }
        let sel = i.u8();
        let src = if sel & 1 != 0 { peer_ll } else { peer };
        let dst = match (sel >> 1) & 3 {
            0 => ours,
            1 => ll,
            2 => ipv6::ALL_NODES,
            _ => ipv6::solicited_node(&ours),
        };
        let nh = match (sel >> 3) & 3 {
            0 | 1 => ipv6::NH_ICMPV6,
            2 => i.u8(),
            _ => [ipv6::NH_FRAGMENT, ipv6::NH_HOP_BY_HOP, ipv6::NH_ROUTING, ipv6::NH_DEST_OPTS][usize::from(i.u8() % 4)],
        };
        let len = usize::from(i.u16() % 1600);
        let mut body = i.bytes(len).to_vec();
        if nh == ipv6::NH_ICMPV6 && body.len() >= 4 {
            // A known type most of the time, and a valid checksum.
            if sel & 0x20 == 0 {
                body[0] = [1, 2, 3, 4, 128, 129, 133, 134, 135, 136, 137][usize::from(body[0] % 11)];
            }
            body[2] = 0;
            body[3] = 0;
            let c = ipv6::l4_checksum(&src, &dst, nh, &body);
            body[2..4].copy_from_slice(&c.to_be_bytes());
        }
        if nh == 6 && body.len() >= 20 {
            // TCP with a valid checksum, so that GRO looks further than the checksum.
            body[16] = 0;
            body[17] = 0;
            let c = ipv6::l4_checksum(&src, &dst, nh, &body);
            body[16..18].copy_from_slice(&c.to_be_bytes());
        }
        let mut f = Vec::with_capacity(54 + body.len());
        f.extend_from_slice(&if ipv6::is_multicast(&dst) { ipv6::multicast_mac(&dst) } else { OUR_MAC });
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut h = [0u8; 40];
        let hop_limit = if sel & 0x40 != 0 { 255 } else { i.u8() };
        ipv6::Repr { src, dst, next_header: nh, hop_limit, payload_len: body.len() }.emit(&mut h);
        f.extend_from_slice(&h);
        f.extend_from_slice(&body);
        if sel & 0x80 != 0 {
            // Now and then cut short or padded: the length field no longer agrees with the frame.
            let cut = usize::from(i.u16()) % (f.len() + 8);
            f.resize(cut, 0);
        }
        shared.borrow_mut().inbox.push_back(PacketBuf::from_slice(&f));
        if nh == 6 && i.u8() & 1 == 1 {
            // Left for the next frame's poll: GRO sees runs of segments.
            continue;
        }
        now = now + Duration::from_millis(u64::from(i.u16() % 2000));
        st.poll(now);
        if sel & 0x10 != 0 {
            let size = usize::from(i.u16() % 4000);
            let _ = st.ping6_send(if sel & 1 != 0 { peer_ll } else { peer }, 1, 1, &vec![0; size], now);
        }
        let _ = st.ping6_events(1);
    }
    for _ in 0..8 {
        now = now + Duration::from_secs(30);
        st.poll(now);
    }
    let _ = (st.ipv6_addrs(), st.ipv6_neighbours(), st.ipv6_routers());
}
