//! Two stacks joined by a deterministic simulated link, on a virtual clock.

mod common;

use common::*;
use stack::dev::sim::Impairment;
use stack::iface::{ECONNREFUSED, EHOSTUNREACH, EMSGSIZE};
use stack::time::Instant;
use stack::{Config, PingEvent, Stack};
use std::time::Duration;

#[test]
fn arp_then_ping_both_ways() {
    let mut w = World::new(Impairment::default(), 1);
    let now = w.now();
    w.a.ping_send(B, 7, 1, b"hello", now).unwrap();
    w.run(Duration::from_millis(20));
    let ev = w.a.ping_events(7);
    assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: B, seq: 1, len: 5, .. }]), "{ev:?}");
    assert_eq!(w.a.neighbour(B), Some([2, 0, 0, 0, 0, 2]));
    assert_eq!(w.b.neighbour(A), Some([2, 0, 0, 0, 0, 1]), "the request taught B our address");
    let now = w.now();
    w.b.ping_send(A, 9, 3, &[0u8; 1000], now).unwrap();
    w.run(Duration::from_millis(20));
    assert_eq!(w.b.ping_events(9).len(), 1);
}

#[test]
fn udp_datagrams_fragments_and_reassembly_under_reordering_and_duplication() {
    for (loss, reorder, dup) in [(0, 0, 0), (0, 10, 10), (0, 30, 5)] {
        let mut w = World::new(Impairment { loss, reorder, duplicate: dup, delay: Duration::from_millis(2) }, 42);
        let sa = w.a.udp_bind(0).unwrap();
        let sb = w.b.udp_bind(9000).unwrap();
        let big: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        let now = w.now();
        w.a.udp_send_to(sa, B, 9000, &big, now).unwrap();
        w.run(Duration::from_millis(50));
        let mut got = Vec::new();
        while let Ok((d, from, _)) = w.b.udp_recv_from(sb) {
            assert_eq!(from, A);
            got.push(d);
        }
        assert_eq!(got.first(), Some(&big), "reorder {reorder}% dup {dup}%: datagram intact");
        assert!(w.a.stats.frag_creates >= 7);
        assert!(w.b.stats.reasm_oks >= 1);
    }
}

#[test]
fn arp_retries_get_through_loss() {
    let mut w = World::new(Impairment { loss: 40, ..Default::default() }, 7);
    let mut replies = 0;
    for seq in 0..20 {
        let now = w.now();
        let _ = w.a.ping_send(B, 1, seq, b"x", now);
        w.run(Duration::from_millis(1500));
        replies += w.a.ping_events(1).iter().filter(|e| matches!(e, PingEvent::Reply { .. })).count();
    }
    assert!(replies >= 5, "{replies} replies through 40% loss");
    assert!(w.a.stats.arp_requests >= 2);
}

#[test]
fn port_unreachable_becomes_econnrefused() {
    let mut w = World::new(Impairment::default(), 3);
    let s = w.a.udp_bind(0).unwrap();
    w.a.udp_connect(s, B, 4444).unwrap();
    let now = w.now();
    w.a.udp_send(s, b"anyone?", now).unwrap();
    w.run(Duration::from_millis(20));
    assert_eq!(w.a.udp_recv_from(s), Err(ECONNREFUSED));
    assert_eq!(w.b.stats.no_ports, 1);
    // The error is reported once.
    assert_eq!(w.a.udp_recv_from(s).unwrap_err().0, libc::EAGAIN);
}

#[test]
fn unresolvable_neighbour_is_ehostunreach() {
    let mut w = World::new(Impairment::default(), 4);
    let s = w.a.udp_bind(0).unwrap();
    w.a.udp_connect(s, [10, 0, 0, 99], 53).unwrap();
    let now = w.now();
    w.a.udp_send(s, b"?", now).unwrap();
    w.a.ping_send([10, 0, 0, 99], 5, 1, b"?", now).unwrap();
    w.run(Duration::from_secs(5));
    assert_eq!(w.a.udp_recv_from(s), Err(EHOSTUNREACH));
    assert!(matches!(w.a.ping_events(5).as_slice(), [PingEvent::Error { errno: EHOSTUNREACH, .. }]));
}

/// Sends a hand-made IPv4 fragment from A to B on the wire.
fn inject_fragment(w: &mut World, ident: u16, off: usize, more: bool, data: &[u8]) {
    let mut p = vec![0u8; 20 + data.len()];
    let r = stack::wire::ipv4::Repr {
        src: A,
        dst: B,
        protocol: 17,
        ttl: 64,
        ident,
        dont_frag: false,
        more_frags: more,
        frag_offset: off,
        payload_len: data.len(),
    };
    r.emit(&mut p[..20]);
    p[20..].copy_from_slice(data);
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&w.b.mac());
    f[6..12].copy_from_slice(&w.a.mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&p);
    let mut q = std::collections::VecDeque::from([stack::skb::PacketBuf::from_slice(&f)]);
    w.a.dev.transmit(&mut q).unwrap();
}

#[test]
fn reassembly_limits_and_timeouts() {
    // Don't-fragment over the MTU is refused locally.
    let mut w = World::new(Impairment::default(), 5);
    let now = w.now();
    assert_eq!(w.a.ip_send(B, 17, &vec![0u8; 3000], true, now), Err(EMSGSIZE));
    // A datagram whose last fragment never comes times out (30 s) and is counted.
    let sb = w.b.udp_bind(7).unwrap();
    inject_fragment(&mut w, 55, 0, true, &[1u8; 64]);
    w.run(Duration::from_secs(29));
    assert_eq!(w.b.stats.reasm_fails, 0, "still waiting");
    w.run(Duration::from_secs(2));
    assert_eq!(w.b.stats.reasm_fails, 1, "timed out");
    assert!(w.b.udp_recv_from(sb).is_err());
    // Overlapping fragments drop the datagram.
    inject_fragment(&mut w, 77, 0, true, &[9u8; 32]);
    inject_fragment(&mut w, 77, 8, true, &[9u8; 32]);
    inject_fragment(&mut w, 77, 40, false, &[9u8; 8]);
    w.run(Duration::from_millis(10));
    assert!(w.b.udp_recv_from(sb).is_err());
    assert_eq!(w.b.stats.reasm_fails, 2);
    // A fragment reaching past 64 KiB is refused.
    inject_fragment(&mut w, 78, 65528, false, &[0u8; 16]);
    w.run(Duration::from_millis(10));
    assert_eq!(w.b.stats.reasm_fails, 3);
    // In-order fragments with a gap filled later reassemble.
    let mut data = vec![0u8; 8];
    data[4..6].copy_from_slice(&16u16.to_be_bytes()); // UDP length 16, checksum 0
    data[2..4].copy_from_slice(&7u16.to_be_bytes());
    inject_fragment(&mut w, 79, 8, false, &[5u8; 8]);
    inject_fragment(&mut w, 79, 0, true, &data);
    w.run(Duration::from_millis(10));
    assert_eq!(w.b.udp_recv_from(sb).unwrap().0, vec![5u8; 8]);
}

/// Sends a hand-made ICMP error from B to A about a datagram A sent.
fn inject_icmp(w: &mut World, kind: u8, code: u8, mtu: u16, original: &[u8]) {
    let mut m = vec![kind, code, 0, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(original);
    let c = stack::wire::checksum::compute(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let now = w.now();
    w.b.ip_send(A, 1, &m, false, now).unwrap();
}

fn quoted_udp(sport: u16, dport: u16) -> Vec<u8> {
    let r = stack::wire::ipv4::Repr {
        src: A,
        dst: [10, 0, 0, 2],
        protocol: 17,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        payload_len: 8,
    };
    let mut q = vec![0u8; 28];
    r.emit(&mut q[..20]);
    q[20..22].copy_from_slice(&sport.to_be_bytes());
    q[22..24].copy_from_slice(&dport.to_be_bytes());
    q
}

#[test]
fn icmp_errors_map_to_socket_errors() {
    let mut w = World::new(Impairment::default(), 9);
    let s = w.a.udp_bind(5000).unwrap();
    w.a.udp_connect(s, B, 53).unwrap();
    w.run(Duration::from_millis(5));
    // Fragmentation needed: EMSGSIZE, and the path MTU is remembered.
    inject_icmp(&mut w, 3, 4, 1200, &quoted_udp(5000, 53));
    w.run(Duration::from_millis(10));
    assert_eq!(w.a.udp_recv_from(s), Err(EMSGSIZE));
    let now = w.now();
    assert_eq!(w.a.ip_send(B, 17, &[0u8; 1300], true, now), Err(EMSGSIZE), "the learned path MTU applies");
    // Time exceeded: EHOSTUNREACH.
    inject_icmp(&mut w, 11, 0, 0, &quoted_udp(5000, 53));
    w.run(Duration::from_millis(10));
    assert_eq!(w.a.udp_recv_from(s), Err(EHOSTUNREACH));
    // Errors about other sockets' datagrams do not leak here.
    inject_icmp(&mut w, 3, 3, 0, &quoted_udp(6000, 53));
    w.run(Duration::from_millis(10));
    assert_eq!(w.a.udp_recv_from(s).unwrap_err().0, libc::EAGAIN);
    // A truncated quote is ignored, not a panic.
    inject_icmp(&mut w, 3, 3, 0, &[0x45, 0, 0]);
    w.run(Duration::from_millis(10));
}

#[test]
fn socket_errors_as_linux_gives_them() {
    let mut w = World::new(Impairment::default(), 10);
    assert!(w.a.udp_bind(7000).is_ok());
    assert_eq!(w.a.udp_bind(7000).unwrap_err().0, libc::EADDRINUSE);
    let l = w.a.tcp_listen(8000, 4).unwrap();
    assert_eq!(w.a.tcp_listen(8000, 4).unwrap_err().0, libc::EADDRINUSE);
    assert_eq!(w.a.tcp_accept(l).unwrap_err().0, libc::EAGAIN);
    let now = w.now();
    let c = w.b.tcp_connect(A, 8000, now).unwrap();
    w.run(Duration::from_millis(20));
    let s = w.a.tcp_accept(l).unwrap();
    let now = w.now();
    let mut buf = [0u8; 4];
    assert_eq!(w.a.tcp_recv(s, &mut buf, now).unwrap_err().0, libc::EAGAIN);
    w.b.tcp_shutdown(c, now).unwrap();
    assert_eq!(w.b.tcp_send(c, b"late", now).unwrap_err().0, libc::EPIPE);
    w.run(Duration::from_millis(20));
    let now = w.now();
    assert_eq!(w.a.tcp_recv(s, &mut buf, now), Ok(0), "end of stream after the peer's FIN");
    assert_eq!(w.a.tcp_send(s, b"x", now), Ok(1), "half-close: the other direction still works");
    assert_eq!(w.a.tcp_recv(99, &mut buf, now).unwrap_err().0, libc::EBADF);
    // Backlog: a full accept queue drops further SYNs (the peers retry).
    let l2 = w.a.tcp_listen(8001, 1).unwrap();
    let now = w.now();
    let _c1 = w.b.tcp_connect(A, 8001, now).unwrap();
    let c2 = w.b.tcp_connect(A, 8001, now).unwrap();
    w.run(Duration::from_millis(20));
    assert!(w.a.tcp_accept(l2).is_ok());
    assert!(w.a.tcp_accept(l2).is_err(), "the second waits outside the backlog");
    w.run(Duration::from_secs(3));
    assert!(w.a.tcp_accept(l2).is_ok(), "its retried SYN gets in once there is room");
    let _ = c2;
}

#[test]
fn loopback_device_carries_the_stack_to_itself() {
    let mut s = Stack::new(Box::new(stack::dev::loopback::Loopback::default()), Config::new([127, 0, 0, 1], 8));
    let mut now = Instant::ZERO;
    let u = s.udp_bind(9).unwrap();
    let v = s.udp_bind(0).unwrap();
    s.udp_send_to(v, [127, 0, 0, 1], 9, b"self", now).unwrap();
    for _ in 0..5 {
        s.poll(now);
        now = now + Duration::from_millis(1);
    }
    assert_eq!(s.udp_recv_from(u).unwrap().0, b"self");
    s.ping_send([127, 0, 0, 1], 3, 1, b"p", now).unwrap();
    for _ in 0..5 {
        s.poll(now);
        now = now + Duration::from_millis(1);
    }
    assert_eq!(s.ping_events(3).len(), 1);
}

#[test]
fn tcp_bind_then_connect_and_simultaneous_open_between_stacks() {
    let mut w = World::new(Impairment::default(), 30);
    let now = w.now();
    // Both sides bind a port and connect to each other at the same time.
    let a = w.a.tcp_connect_from(7000, B, 7001, now).unwrap();
    let b = w.b.tcp_connect_from(7001, A, 7000, now).unwrap();
    assert_eq!(w.a.tcp_connect_from(7000, B, 9, now).unwrap_err().0, libc::EADDRINUSE);
    w.run(Duration::from_millis(50));
    assert_eq!(w.a.tcp_state(a), Some(stack::tcp::State::Established));
    assert_eq!(w.b.tcp_state(b), Some(stack::tcp::State::Established));
    let now = w.now();
    w.a.tcp_send(a, b"both ways", now).unwrap();
    w.run(Duration::from_millis(50));
    let mut buf = [0u8; 16];
    let now = w.now();
    assert_eq!(w.b.tcp_recv(b, &mut buf, now), Ok(9));
}

#[test]
fn tcp_mss_follows_a_learned_path_mtu() {
    let mut w = World::new(Impairment::default(), 31);
    let l = w.b.tcp_listen(80, 4).unwrap();
    let now = w.now();
    w.a.ping_send(B, 1, 1, b"warm", now).unwrap();
    w.run(Duration::from_millis(10));
    inject_icmp(&mut w, 3, 4, 1200, &quoted_udp(5000, 53));
    w.run(Duration::from_millis(10));
    let now = w.now();
    let c = w.a.tcp_connect(B, 80, now).unwrap();
    w.run(Duration::from_millis(20));
    assert!(w.b.tcp_accept(l).is_ok());
    assert!(w.a.tcp_conn(c).unwrap().mss() <= 1200 - 40, "MSS within the path MTU");
}

/// A device that records what the stack sends and delivers what the test injects.
#[derive(Clone, Default)]
struct Recorder {
    sent: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>,
    inbox: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>,
}

impl stack::dev::Device for Recorder {
    fn mac(&self) -> stack::wire::Mac {
        [2, 0, 0, 0, 0, 1]
    }
    fn transmit(&mut self, q: &mut std::collections::VecDeque<stack::skb::PacketBuf>) -> std::io::Result<usize> {
        let n = q.len();
        self.sent.borrow_mut().extend(q.drain(..).map(|p| p.to_vec()));
        Ok(n)
    }
    fn poll(&mut self, _budget: usize, out: &mut Vec<stack::skb::PacketBuf>) -> std::io::Result<usize> {
        let v: Vec<Vec<u8>> = self.inbox.borrow_mut().drain(..).collect();
        let n = v.len();
        out.extend(v.iter().map(|f| stack::skb::PacketBuf::from_slice(f)));
        Ok(n)
    }
    fn wait(&mut self, _: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        "recorder".into()
    }
}

/// A SYN waiting for its neighbour longer than its retransmission timeout leaves once when the address
/// arrives, not once per timeout that passed (the retransmission replaces the waiting copy).
#[test]
fn a_syn_waiting_for_arp_leaves_once() {
    let dev = Recorder::default();
    let mut s = Stack::new(Box::new(dev.clone()), Config::new(A, 24));
    let mut now = Instant::ZERO;
    s.tcp_connect(B, 80, now).unwrap();
    // No ARP answer for 2.5 s: the ARP request and the SYN's timer both fire twice meanwhile.
    while now < Instant::from_millis(2500) {
        s.poll(now);
        now = now + Duration::from_millis(10);
    }
    let is_syn = |f: &Vec<u8>| f.len() >= 14 + 20 + 20 && f[12..14] == [8, 0] && f[14 + 9] == 6 && f[14 + 20 + 13] & 0x02 != 0;
    assert_eq!(dev.sent.borrow().iter().filter(|f| is_syn(f)).count(), 0, "nothing left before the address is known");
    let arps = dev.sent.borrow().iter().filter(|f| f[12..14] == [8, 6]).count();
    assert!(arps >= 2, "{arps} ARP requests");
    // B answers.
    let mut reply = vec![0u8; 14 + 28];
    reply[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    reply[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    reply[12..14].copy_from_slice(&[8, 6]);
    stack::wire::arp::Repr {
        op: stack::wire::arp::OP_REPLY,
        sender_mac: [2, 0, 0, 0, 0, 2],
        sender_ip: B,
        target_mac: [2, 0, 0, 0, 0, 1],
        target_ip: A,
    }
    .emit(&mut reply[14..]);
    dev.inbox.borrow_mut().push(reply);
    s.poll(now);
    s.poll(now + Duration::from_millis(1));
    assert_eq!(dev.sent.borrow().iter().filter(|f| is_syn(f)).count(), 1, "one SYN, not one per timeout");
}

#[test]
fn a_secondary_address_answers_arp_pings_and_tcp_from_itself() {
    use stack::dev::sim::link;
    use std::cell::RefCell;
    use std::rc::Rc;
    let clock = Rc::new(RefCell::new(Instant::ZERO));
    let (pa, pb) = link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 1, clock.clone());
    let mut ca = Config::new(A, 24);
    ca.secondary = vec![([10, 0, 1, 1], 24)];
    let mut cb = Config::new(B, 24);
    cb.secondary = vec![([10, 0, 1, 2], 24)];
    let (mut a, mut b) = (Stack::new(Box::new(pa), ca), Stack::new(Box::new(pb), cb));
    let run = |a: &mut Stack, b: &mut Stack, ms: u64| {
        for _ in 0..ms {
            let now = *clock.borrow();
            a.poll(now);
            b.poll(now);
            *clock.borrow_mut() = now + Duration::from_millis(1);
        }
    };
    let now = Instant::ZERO;
    a.ping_send([10, 0, 1, 2], 5, 1, b"second", now).unwrap();
    run(&mut a, &mut b, 20);
    let ev = a.ping_events(5);
    assert!(matches!(ev.as_slice(), [PingEvent::Reply { from: [10, 0, 1, 2], .. }]), "{ev:?}");
    // B learned A's secondary address from the request, which came from it.
    assert_eq!(b.neighbour([10, 0, 1, 1]), Some([2, 0, 0, 0, 0, 1]));
    let l = b.tcp_listen(80, 1).unwrap();
    let now = Instant::ZERO + Duration::from_millis(20);
    let c = a.tcp_connect([10, 0, 1, 2], 80, now).unwrap();
    run(&mut a, &mut b, 20);
    let s = b.tcp_accept(l).unwrap();
    assert_eq!(
        b.tcp_peer(s),
        Some((std::net::IpAddr::from([10, 0, 1, 1]), a.tcp_conn(c).unwrap().local.1)),
        "from the address on that subnet"
    );
    assert_eq!(a.v4_addrs(), vec![A, [10, 0, 1, 1]]);
}

#[test]
fn an_interface_taken_down_neither_sends_nor_receives_until_it_is_up_again() {
    let mut w = World::new(Impairment::default(), 8);
    let now = w.now();
    w.a.ping_send(B, 2, 1, b"up", now).unwrap();
    w.run(Duration::from_millis(20));
    assert_eq!(w.a.ping_events(2).len(), 1);
    w.b.set_up(false);
    let now = w.now();
    w.a.ping_send(B, 2, 2, b"b is down", now).unwrap();
    w.run(Duration::from_millis(20));
    assert!(w.a.ping_events(2).is_empty(), "a down interface answers nothing");
    w.a.set_up(false);
    let now = w.now();
    assert_eq!(w.a.ping_send(B, 2, 3, b"a is down", now).unwrap_err().0, libc::ENETUNREACH);
    w.a.set_up(true);
    w.b.set_up(true);
    let now = w.now();
    w.a.ping_send(B, 2, 4, b"both up", now).unwrap();
    w.run(Duration::from_millis(20));
    assert!(matches!(w.a.ping_events(2).as_slice(), [PingEvent::Reply { seq: 4, .. }]));
}

/// The MSS follows the link's MTU: over a 9000-byte link both ends use 8,948-byte segments (8960 less the
/// timestamps option), and a megabyte arrives intact in frames no larger than the MTU allows.
#[test]
fn the_mss_follows_the_link_mtu() {
    let clock = std::rc::Rc::new(std::cell::RefCell::new(Instant::ZERO));
    let (pa, pb) = stack::dev::sim::link(([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), Impairment::default(), 3, clock.clone());
    let mut w = World {
        a: Stack::new(Box::new(pa.with_mtu(9000)), Config::new(A, 24)),
        b: Stack::new(Box::new(pb.with_mtu(9000)), Config::new(B, 24)),
        clock,
    };
    let l = w.b.tcp_listen(80, 1).unwrap();
    let now = w.now();
    let c = w.a.tcp_connect(B, 80, now).unwrap();
    w.run(Duration::from_millis(20));
    let s = w.b.tcp_accept(l).unwrap();
    assert_eq!(w.a.tcp_conn(c).map(|t| t.mss()), Some(8960 - 12));
    assert_eq!(w.b.tcp_conn(s).map(|t| t.mss()), Some(8960 - 12));
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
    let (bytes, packets) = (w.a.stats.tx_bytes, w.a.stats.tx_packets);
    let got = transfer(
        &mut w,
        &data,
        10_000,
        |w, d| w.a.tcp_send(c, d, w.now()).unwrap_or(0),
        World::step,
        |w, b| w.b.tcp_recv(s, b, w.now()).unwrap_or(0),
    );
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
    // Frames of 9014 bytes at most: about 112 of them for the megabyte.
    let (b, p) = (w.a.stats.tx_bytes - bytes, w.a.stats.tx_packets - packets);
    assert!(p < 200 && b / p > 8000, "{p} frames, {b} bytes");
}
