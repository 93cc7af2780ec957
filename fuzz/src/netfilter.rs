//! Netfilter on a NAT router: frames from an inside and an outside link, IPv4 and IPv6, through
//! PREROUTING, INPUT, FORWARD, OUTPUT and POSTROUTING with conntrack, MASQUERADE, DNAT, REDIRECT, REJECT and
//! LOG, on a virtual clock that lets flows time out; the interfaces' egress qdiscs (chosen by the input:
//! fq_codel, htb with classifiers, tbf over fq_codel, netem) and an ingress policer classify and queue
//! what is forwarded. Frames are raw bytes now and then; mostly they are
//! built with valid checksums from a few addresses and ports, or are replies to (or ICMP errors quoting) a
//! packet the router sent, so that the fuzzer reaches established, NATed and RELATED flows.

use crate::input::Input;
use stack::dev::Device;
use stack::netfilter::Netfilter;
use stack::router::Router;
use stack::skb::PacketBuf;
use stack::time::Instant;
use stack::wire::checksum;
use stack::{Config, Stack};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

const RULES: &str = r#"
table ip nat {
    chain prerouting {
        type nat hook prerouting priority dstnat;
        iifname "wan" tcp dport 8080 dnat to 10.0.0.5:80
        iifname "wan" udp dport 5353 redirect to :53
    }
    chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" masquerade to :40000-40003 }
}
table ip6 nat6 {
    chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" snat to 2001:db8:2::1 }
}
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        meta mark set ct mark
        ct state established,related accept
        ct state invalid counter log prefix "invalid " drop
        tcp flags syn / syn,ack jump syn
        iifname "lan" udp dport 9 reject
        iifname "lan" tcp dport 9 reject with tcp reset
        iifname "lan" icmpv6 type echo-request reject with icmpx type admin-prohibited
        iifname "lan" accept
        ip daddr 10.0.0.5 tcp dport 80 accept
    }
    chain syn { meta mark set 0x1 ; ct mark set meta mark ; ip saddr != 10.0.0.0/24 iifname "lan" drop ; return }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "wan" tcp dport 22 reject with tcp reset
        meta mark 0x1 counter
        ct mark 0x1 counter
    }
    chain output { type filter hook output priority 0; policy accept; udp dport 7 drop }
}
"#;

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 2, 1]];
const PEER_MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 1, 9], [2, 0, 0, 0, 2, 9]];

#[derive(Default)]
struct Link {
    inbox: VecDeque<PacketBuf>,
    /// The last IP packets the router sent on this link.
    sent: VecDeque<Vec<u8>>,
}

struct Dev(Rc<RefCell<Link>>, usize);

impl Device for Dev {
    fn mac(&self) -> [u8; 6] {
        MACS[self.1]
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let mut l = self.0.borrow_mut();
        let n = q.len();
        for p in q.drain(..) {
            let d = p.to_vec();
            // The peers answer the router's ARP requests and neighbour solicitations.
            if let Some(reply) = neighbour_reply(&d, self.1) {
                l.inbox.push_back(PacketBuf::from_slice(&reply));
                continue;
            }
            if d.len() > 14 && (d[12..14] == [8, 0] || d[12..14] == [0x86, 0xdd]) {
                if l.sent.len() >= 8 {
                    l.sent.pop_front();
                }
                l.sent.push_back(d[14..].to_vec());
            }
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let mut l = self.0.borrow_mut();
        let n = budget.min(l.inbox.len());
        out.extend(l.inbox.drain(..n));
        Ok(n)
    }
    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        ["lan", "wan"][self.1].into()
    }
}

/// The answer of the peer a frame asks for: an ARP reply or a neighbour advertisement from its MAC.
fn neighbour_reply(d: &[u8], side: usize) -> Option<Vec<u8>> {
    let peer = PEER_MACS[side];
    let mut f = Vec::new();
    f.extend_from_slice(&MACS[side]);
    f.extend_from_slice(&peer);
    if d.get(12..14)? == [8, 6] && d.get(20..22)? == [0, 1] {
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&peer);
        f.extend_from_slice(d.get(38..42)?);
        f.extend_from_slice(d.get(22..28)?);
        f.extend_from_slice(d.get(28..32)?);
        return Some(f);
    }
    // ICMPv6 neighbour solicitation (type 135): answered solicited and overriding.
    if d.get(12..14)? == [0x86, 0xdd] && *d.get(20)? == 58 && *d.get(54)? == 135 {
        let target: [u8; 16] = d.get(62..78)?.try_into().ok()?;
        let to: [u8; 16] = d.get(22..38)?.try_into().ok()?;
        let mut body = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        body.extend_from_slice(&target);
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&peer);
        let mut p = ip_header(IpAddr::from(target), IpAddr::from(to), 58, body.len(), 255);
        p.extend_from_slice(&body);
        fix(&mut p);
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&p);
        return Some(f);
    }
    None
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// Addresses the fuzzer picks from: hosts on each side, the router's own, and strangers.
fn addr(sel: u8, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        a[5] = 1 + sel % 2;
        a[15] = [5, 1, 9, 7][usize::from(sel / 2 % 4)];
        IpAddr::from(a)
    } else {
        [v4([10, 0, 0, 5]), v4([10, 0, 0, 1]), v4([192, 0, 2, 9]), v4([192, 0, 2, 1]), v4([10, 0, 0, 6]), v4([198, 51, 100, 1])]
            [usize::from(sel % 6)]
    }
}

fn port(i: &mut Input) -> u16 {
    let s = i.u8();
    match s % 8 {
        0 => 80,
        1 => 8080,
        2 => 53,
        3 => 5353,
        4 => 9,
        5 => 22,
        6 => 40000 + u16::from(s >> 6),
        _ => i.u16(),
    }
}

/// Fixes the IPv4 header checksum and the transport checksum of an IP packet.
fn fix(p: &mut [u8]) {
    let Some(v) = stack::netfilter::packet::View::parse(p, false) else { return };
    if !v.v6 && p.len() >= 20 {
        let hl = usize::from(p[0] & 0xF) * 4;
        if p.len() >= hl && hl >= 20 {
            p[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::compute(&p[..hl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }
    if v.later_fragment {
        return;
    }
    let at = match v.proto {
        6 => v.l4 + 16,
        17 => v.l4 + 6,
        1 | 58 => v.l4 + 2,
        _ => return,
    };
    if p.len() < at + 2 || v.len > p.len() {
        return;
    }
    p[at..at + 2].copy_from_slice(&[0, 0]);
    let len = v.len - v.l4;
    let acc = if v.proto == 1 { 0 } else { checksum::pseudo(v.src, v.dst, v.proto, len) };
    let c = !checksum::fold(checksum::sum(acc, &p[v.l4..v.len]));
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn ip_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize, ttl: u8) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + len) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 1, 0x40, 0, ttl, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(len as u16).to_be_bytes());
            h.extend_from_slice(&[proto, ttl]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        _ => Vec::new(),
    }
}

/// A packet from the input: built, a reply to something the router sent, an ICMP error quoting it, or raw.
fn packet(i: &mut Input, link: &Link) -> Vec<u8> {
    let kind = i.u8();
    match kind % 8 {
        0 => {
            let n = usize::from(i.u16() % 200);
            i.bytes(n).to_vec()
        }
        1 | 2 if !link.sent.is_empty() => {
            // The peer answers a packet the router sent: addresses and ports swapped, flags from the input.
            let k = usize::from(i.u8()) % link.sent.len();
            let mut p = link.sent[k].clone();
            let Some(v) = stack::netfilter::packet::View::parse(&p, false) else { return p };
            let (sa, da) = if v.v6 { (8, 24) } else { (12, 16) };
            let w = if v.v6 { 16 } else { 4 };
            let src: Vec<u8> = p[sa..sa + w].to_vec();
            let dst: Vec<u8> = p[da..da + w].to_vec();
            p[sa..sa + w].copy_from_slice(&dst);
            p[da..da + w].copy_from_slice(&src);
            if matches!(v.proto, 6 | 17) && p.len() >= v.l4 + 4 {
                let (a, b) = (p[v.l4..v.l4 + 2].to_vec(), p[v.l4 + 2..v.l4 + 4].to_vec());
                p[v.l4..v.l4 + 2].copy_from_slice(&b);
                p[v.l4 + 2..v.l4 + 4].copy_from_slice(&a);
            }
            if let Some(t) = v.tcp {
                if p.len() >= v.l4 + 14 {
                    let ack = t.seq.wrapping_add(t.payload as u32).wrapping_add(u32::from(t.flags & 3 != 0));
                    let seq = t.ack.wrapping_add(i.u32() % 4);
                    p[v.l4 + 4..v.l4 + 8].copy_from_slice(&seq.to_be_bytes());
                    p[v.l4 + 8..v.l4 + 12].copy_from_slice(&ack.to_be_bytes());
                    p[v.l4 + 13] = [0x12, 0x10, 0x11, 0x04, 0x18, i.u8()][usize::from(kind >> 5) % 6];
                }
            }
            if matches!(v.proto, 1 | 58) && p.len() > v.l4 {
                p[v.l4] = if v.proto == 1 { 0 } else { 129 };
            }
            if kind & 8 == 0 {
                fix(&mut p);
            }
            p
        }
        3 if !link.sent.is_empty() => {
            // An ICMP error about a packet the router sent.
            let k = usize::from(i.u8()) % link.sent.len();
            let q = &link.sent[k];
            let v6 = q.first().is_some_and(|b| b >> 4 == 6);
            let quoted = &q[..q.len().min(usize::from(i.u8()) + 8)];
            let from = addr(i.u8(), v6);
            let to = if v6 { IpAddr::from(<[u8; 16]>::try_from(&q[8..24]).unwrap_or([0; 16])) } else { v4([q[12], q[13], q[14], q[15]]) };
            let (t, c) = if v6 { ([1u8, 2, 3][usize::from(kind >> 6) % 3], 4) } else { ([3u8, 11, 12][usize::from(kind >> 6) % 3], 3) };
            let mut body = vec![t, c, 0, 0, 0, 0, 0, 0];
            body.extend_from_slice(quoted);
            let mut p = ip_header(from, to, if v6 { 58 } else { 1 }, body.len(), 64);
            p.extend_from_slice(&body);
            fix(&mut p);
            p
        }
        _ => {
            let v6 = kind & 0x10 != 0;
            let (src, dst) = (addr(i.u8(), v6), addr(i.u8(), v6));
            let proto = [6u8, 17, if v6 { 58 } else { 1 }, 6][usize::from(kind >> 6)];
            let mut body = match proto {
                6 => {
                    let mut t = vec![0u8; 20];
                    t[0..2].copy_from_slice(&port(i).to_be_bytes());
                    t[2..4].copy_from_slice(&port(i).to_be_bytes());
                    t[4..8].copy_from_slice(&i.u32().to_be_bytes());
                    t[8..12].copy_from_slice(&i.u32().to_be_bytes());
                    t[12] = 5 << 4;
                    t[13] = [0x02, 0x10, 0x12, 0x11, 0x04, 0x18][usize::from(i.u8() % 6)];
                    t[14..16].copy_from_slice(&i.u16().to_be_bytes());
                    t
                }
                17 => {
                    let mut u = vec![0u8; 8];
                    u[0..2].copy_from_slice(&port(i).to_be_bytes());
                    u[2..4].copy_from_slice(&port(i).to_be_bytes());
                    u[4..6].copy_from_slice(&8u16.to_be_bytes());
                    u
                }
                _ => {
                    let t = if v6 { [128u8, 129, 1, 135][usize::from(i.u8() % 4)] } else { [8u8, 0, 3, 11][usize::from(i.u8() % 4)] };
                    let mut m = vec![t, 0, 0, 0];
                    m.extend_from_slice(&i.u32().to_be_bytes());
                    m
                }
            };
            let n = usize::from(i.u8() % 64);
            let extra = i.bytes(n);
            body.extend_from_slice(extra);
            if proto == 17 {
                let l = body.len() as u16;
                body[4..6].copy_from_slice(&l.to_be_bytes());
            }
            let mut p = ip_header(src, dst, proto, body.len(), i.u8().max(1));
            p.extend_from_slice(&body);
            if kind & 8 == 0 {
                fix(&mut p);
            }
            p
        }
    }
}

/// Interprets the input as packets arriving on either side of the NAT router, between polls.
pub fn nat(data: &[u8]) {
    let links = [Rc::new(RefCell::new(Link::default())), Rc::new(RefCell::new(Link::default()))];
    let mut stacks = Vec::new();
    for (k, (ip, ip6)) in [([10, 0, 0, 1], 1u8), ([192, 0, 2, 1], 2)].into_iter().enumerate() {
        let mut cfg = Config::new(ip, 24);
        let a: stack::wire::ipv6::Addr = [0x20, 0x01, 0x0d, 0xb8, 0, ip6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        cfg.ipv6 = Some(stack::Ipv6Config { addrs: vec![(a, 64)], dad_transmits: 0, ..Default::default() });
        let mut s = Stack::new(Box::new(Dev(links[k].clone(), k)), cfg);
        s.set_secret(0x5EED);
        stacks.push(s);
    }
    // The first byte picks each interface's egress qdisc and whether it polices what arrives.
    let pick = data.first().copied().unwrap_or(0);
    const QDISCS: [&str; 5] = [
        "pfifo_fast limit 16",
        "fq_codel limit 32 flows 8 target 1ms interval 10ms",
        "htb default 20 class 1 rate 1mbit class 10 parent 1 rate 500kbit ceil 1mbit class 20 parent 1 rate 100kbit filter proto tcp dport 80 flowid 10 filter src 10.0.0.0/24 flowid 20",
        "tbf rate 1mbit burst 3k latency 20ms child fq_codel limit 16",
        "netem delay 5ms 2ms 25% loss 10% duplicate 10% reorder 20% corrupt 5% rate 1mbit limit 32 seed 1",
    ];
    for (k, s) in stacks.iter_mut().enumerate() {
        let q = QDISCS[usize::from(pick >> (3 * k)) % QDISCS.len()];
        if let Ok(q) = stack::tc::parse::qdisc(q) {
            s.set_qdisc(q);
        }
        if pick & 0x40 != 0 {
            s.set_policer(stack::tc::parse::policer("rate 100kbit burst 3k").ok());
        }
    }
    let mut r = Router::new(stacks);
    let mut nf = Netfilter::default();
    if nf.load(RULES).is_err() {
        return;
    }
    nf.ct.max = 16;
    r.set_netfilter(nf);
    let mut now = Instant::from_millis(1);
    // The router's own sockets, in its one table: what reaches them from either side is answered.
    let listener = r.tcp_listen(22, 4).ok();
    let dns = r.udp_bind(5353).ok();
    let mut conns = Vec::new();
    r.poll(now);
    let mut i = Input::new(data);
    for _ in 0..48 {
        if i.is_empty() {
            break;
        }
        let side = usize::from(i.u8() & 1);
        let p = {
            let l = links[side].borrow();
            packet(&mut i, &l)
        };
        let mut f = Vec::with_capacity(14 + p.len());
        f.extend_from_slice(&MACS[side]);
        f.extend_from_slice(&PEER_MACS[side]);
        f.extend_from_slice(if p.first().is_some_and(|b| b >> 4 == 6) { &[0x86, 0xdd] } else { &[8, 0] });
        f.extend_from_slice(&p);
        links[side].borrow_mut().inbox.push_back(PacketBuf::from_slice(&f));
        let step = i.u16();
        now = now + Duration::from_millis(u64::from(step % 500) * if step & 0x8000 != 0 { 1000 } else { 1 });
        r.poll(now);
        if let Some(c) = listener.and_then(|l| r.tcp_accept(l).ok()) {
            conns.push(c);
        }
        for &c in &conns {
            let mut buf = [0u8; 256];
            if let Ok(n) = r.tcp_recv(c, &mut buf, now) {
                let _ = r.tcp_send(c, &buf[..n], now);
            }
        }
        if let Some(u) = dns {
            if let Ok((d, from, port)) = r.udp_recv_from(u) {
                let _ = r.udp_send_to(u, from, port, &d, now);
            }
        }
        if let Some(s) = r.ifaces.get_mut(side) {
            // The router's own traffic through OUTPUT and POSTROUTING: an echo request.
            let _ = s.ip_send([10, 0, 0, 5], 1, &[8, 0, 0xF7, 0xFD, 0, 1, 0, 1], false, now);
        }
    }
    let _ = r.report("fuzz");
    for _ in 0..4 {
        now = now + Duration::from_secs(200);
        r.poll(now);
    }
}
