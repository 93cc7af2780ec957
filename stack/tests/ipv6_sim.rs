//! IPv6 on the virtual clock: two stacks on a simulated link (duplicate address detection, neighbour
//! discovery, echo with fragmentation), and one stack beside a raw port that plays a router or a hostile
//! node with hand-built frames (router advertisements, redirects, Packet Too Big, extension headers).

mod common;

use stack::dev::sim::{link, Impairment, SimPort};
use stack::dev::Device;
use stack::iface::Ipv6Config;
use stack::skb::PacketBuf;
use stack::time::Instant;
use stack::wire::icmpv6::{self, NdOptions, PrefixInfo};
use stack::wire::ipv6::{self, Addr};
use stack::{Config, Ping6Event, Stack};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn a6(s: &str) -> Addr {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn cfg(addrs: &[(&str, u8)]) -> Config {
    let mut c = Config::new([10, 0, 0, 1], 24);
    c.ipv6 = Some(Ipv6Config { addrs: addrs.iter().map(|(a, p)| (a6(a), *p)).collect(), ..Default::default() });
    c
}

struct Two {
    clock: Rc<RefCell<Instant>>,
    a: Stack,
    b: Stack,
}

impl Two {
    fn new(ca: Config, cb: Config) -> Two {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (pa, pb) = link((MAC_A, MAC_B), Impairment::default(), 1, clock.clone());
        Two { a: Stack::new(Box::new(pa), ca), b: Stack::new(Box::new(pb), cb), clock }
    }
    fn now(&self) -> Instant {
        *self.clock.borrow()
    }
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            let now = self.now();
            self.a.poll(now);
            self.b.poll(now);
            *self.clock.borrow_mut() = now + Duration::from_millis(1);
        }
    }
}

fn state(s: &Stack, a: &Addr) -> &'static str {
    s.ipv6_addrs().iter().find(|x| x.0 == *a).map(|x| x.2).unwrap_or("absent")
}

#[test]
fn dad_then_link_local_echo_both_ways_with_neighbours_learned() {
    let mut w = Two::new(cfg(&[]), cfg(&[]));
    let (lla, llb) = (ipv6::link_local(MAC_A), ipv6::link_local(MAC_B));
    w.run(10);
    assert_eq!(state(&w.a, &lla), "tentative", "DAD runs first");
    let now = w.now();
    assert_eq!(w.a.ping6_send(llb, 1, 1, b"x", now).unwrap_err().0, libc::EADDRNOTAVAIL, "no source while tentative");
    w.run(1100);
    assert_eq!(state(&w.a, &lla), "preferred");
    assert_eq!(state(&w.b, &llb), "preferred");
    let now = w.now();
    w.a.ping6_send(llb, 7, 1, b"hello", now).unwrap();
    w.run(20);
    let ev = w.a.ping6_events(7);
    assert!(matches!(ev.as_slice(), [Ping6Event::Reply { from, seq: 1, len: 5, .. }] if *from == llb), "{ev:?}");
    let na = w.a.ipv6_neighbours();
    assert!(na.iter().any(|n| n.0 == llb && n.1 == Some(MAC_B) && n.2 == "REACHABLE"), "{na:?}");
    let nb = w.b.ipv6_neighbours();
    assert!(nb.iter().any(|n| n.0 == lla && n.1 == Some(MAC_A)), "the solicitation taught B our address: {nb:?}");
    let now = w.now();
    w.b.ping6_send(lla, 9, 2, &[7; 100], now).unwrap();
    w.run(20);
    assert_eq!(w.b.ping6_events(9).len(), 1);
}

/// Down, the interface loses its IPv6 addresses, as Linux's does by default (`keep_addr_on_down` 0), and
/// what it learned on the link (neighbours); up, it forms its link-local address again, through DAD, while
/// the configured global address stays gone (a global destination is then unreachable). With
/// `keep_addr_on_down`, the configured and link-local addresses stay, and go through DAD again when the
/// interface comes up.
#[test]
fn a_downed_interface_loses_its_ipv6_addresses_unless_told_to_keep_them() {
    let (lla, llb, ga, gb) = (ipv6::link_local(MAC_A), ipv6::link_local(MAC_B), a6("2001:db8::1"), a6("2001:db8::2"));
    for keep in [false, true] {
        let mut ca = cfg(&[("2001:db8::1", 64)]);
        ca.ipv6.as_mut().unwrap().keep_addr_on_down = keep;
        let mut w = Two::new(ca, cfg(&[("2001:db8::2", 64)]));
        w.run(1100);
        assert_eq!((state(&w.a, &lla), state(&w.a, &ga)), ("preferred", "preferred"));
        let now = w.now();
        w.a.ping6_send(gb, 1, 1, b"before", now).unwrap();
        w.run(20);
        assert_eq!(w.a.ping6_events(1).len(), 1);
        assert!(!w.a.ipv6_neighbours().is_empty());

        w.a.set_up(false);
        let addrs: Vec<Addr> = w.a.ipv6_addrs().iter().map(|a| a.0).collect();
        assert_eq!(addrs, if keep { vec![lla, ga] } else { vec![] }, "keep_addr_on_down {keep}");
        assert!(w.a.ipv6_neighbours().is_empty(), "the link's neighbours go with it");

        w.a.set_up(true);
        w.run(1);
        assert_eq!(state(&w.a, &lla), "tentative", "link-local again, through DAD");
        assert_eq!(state(&w.a, &ga), if keep { "tentative" } else { "absent" });
        w.run(1100);
        assert_eq!((state(&w.a, &lla), state(&w.a, &ga)), ("preferred", if keep { "preferred" } else { "absent" }));
        let now = w.now();
        w.a.ping6_send(llb, 2, 1, b"link-local", now).unwrap();
        let global = w.a.ping6_send(gb, 3, 1, b"global", now);
        w.run(20);
        assert_eq!(w.a.ping6_events(2).len(), 1, "the link works again");
        if keep {
            global.unwrap();
            assert_eq!(w.a.ping6_events(3).len(), 1, "from the kept global address");
        } else {
            assert_eq!(global.unwrap_err().0, libc::ENETUNREACH, "no global address, no prefix, no router");
        }
    }
}

#[test]
fn a_thirty_thousand_byte_echo_is_fragmented_and_reassembled_both_ways() {
    let mut w = Two::new(cfg(&[("2001:db8::1", 64)]), cfg(&[("2001:db8::2", 64)]));
    w.run(1200);
    let big: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
    let now = w.now();
    w.a.ping6_send(a6("2001:db8::2"), 3, 1, &big, now).unwrap();
    w.run(50);
    let ev = w.a.ping6_events(3);
    assert!(matches!(ev.as_slice(), [Ping6Event::Reply { len: 30_000, .. }]), "{ev:?}");
    assert!(w.a.stats.frag_creates >= 21 && w.b.stats.frag_creates >= 21, "1500-byte link: 21 fragments each way");
    assert!(w.a.stats.reasm_oks >= 1 && w.b.stats.reasm_oks >= 1);
}

#[test]
fn an_address_in_use_is_detected_by_dad_and_never_used() {
    let mut w = Two::new(cfg(&[("2001:db8::7", 64)]), cfg(&[]));
    w.run(1200);
    assert_eq!(state(&w.a, &a6("2001:db8::7")), "preferred");
    let now = w.now();
    w.b.add_ipv6_addr(a6("2001:db8::7"), 64, now);
    w.run(1200);
    assert_eq!(state(&w.b, &a6("2001:db8::7")), "duplicate", "A defended it");
    assert_eq!(state(&w.a, &a6("2001:db8::7")), "preferred");
}

/// A stack and a raw port for hand-built frames.
struct Raw {
    clock: Rc<RefCell<Instant>>,
    s: Stack,
    port: SimPort,
    seen: Vec<Vec<u8>>,
    /// Addresses the raw port answers neighbour solicitations for, as a live node would.
    owned: Vec<Addr>,
}

const R_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

impl Raw {
    fn new(c: Config) -> Raw {
        let clock = Rc::new(RefCell::new(Instant::ZERO));
        let (pa, pr) = link((MAC_A, R_MAC), Impairment::default(), 1, clock.clone());
        Raw { s: Stack::new(Box::new(pa), c), port: pr, clock, seen: Vec::new(), owned: Vec::new() }
    }
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            let now = *self.clock.borrow();
            self.s.poll(now);
            let mut out = Vec::new();
            self.port.poll(64, &mut out).unwrap();
            for p in &out {
                let f = p.data().to_vec();
                let ns = f.len() >= 78 && f[12..14] == [0x86, 0xdd] && f[20] == ipv6::NH_ICMPV6 && f[54] == icmpv6::NEIGHBOR_SOLICIT;
                if ns {
                    let target: Addr = f[62..78].try_into().unwrap();
                    let asker: Addr = f[22..38].try_into().unwrap();
                    if self.owned.contains(&target) {
                        let na = icmpv6::Repr::NeighborAdvert {
                            flags: icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE,
                            target,
                            target_ll: Some(R_MAC),
                        };
                        let body = na.emit(&target, &asker);
                        self.send(MAC_A, target, asker, ipv6::NH_ICMPV6, 255, &body);
                    }
                }
                self.seen.push(f);
            }
            *self.clock.borrow_mut() = now + Duration::from_millis(1);
        }
    }
    /// Sends an IPv6 packet from the raw port to `dst_mac`.
    fn send(&mut self, dst_mac: [u8; 6], src: Addr, dst: Addr, nh: u8, hop_limit: u8, payload: &[u8]) {
        let mut f = Vec::new();
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&R_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut h = [0u8; 40];
        ipv6::Repr { src, dst, next_header: nh, hop_limit, payload_len: payload.len() }.emit(&mut h);
        f.extend_from_slice(&h);
        f.extend_from_slice(payload);
        let mut q = VecDeque::from([PacketBuf::from_slice(&f)]);
        self.port.transmit(&mut q).unwrap();
    }
    /// ICMPv6 messages the stack sent.
    fn icmp6(&self) -> Vec<Sent> {
        self.seen
            .iter()
            .filter(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == ipv6::NH_ICMPV6)
            .map(|f| {
                let r = ipv6::Repr::parse(&f[14..]).unwrap();
                (f[..6].try_into().unwrap(), r.src, r.dst, f[54], f[54..].to_vec())
            })
            .collect()
    }
}

/// An ICMPv6 message the stack sent: destination MAC, source, destination, type, body.
type Sent = ([u8; 6], Addr, Addr, u8, Vec<u8>);

const ROUTER: &str = "fe80::1";

fn ra(prefix: &str, mtu: Option<u32>, lifetime: u16) -> Vec<u8> {
    let pi = PrefixInfo { prefix: a6(prefix), len: 64, on_link: true, autonomous: true, valid: 3600, preferred: 1800 };
    icmpv6::Repr::RouterAdvert {
        hop_limit: 64,
        lifetime,
        reachable_ms: 0,
        retrans_ms: 0,
        options: NdOptions { source_ll: Some(R_MAC), target_ll: None, prefixes: vec![pi], mtu },
    }
    .emit(&a6(ROUTER), &ipv6::ALL_NODES)
}

#[test]
fn router_solicitation_then_an_advertisement_gives_an_address_a_router_and_the_mtu() {
    let mut r = Raw::new(cfg(&[]));
    r.run(1100);
    let rs: Vec<_> = r.icmp6().into_iter().filter(|m| m.3 == icmpv6::ROUTER_SOLICIT).collect();
    assert_eq!(rs.len(), 1, "one solicitation once the link-local address is ready");
    assert_eq!((rs[0].0, rs[0].2), (ipv6::multicast_mac(&ipv6::ALL_ROUTERS), ipv6::ALL_ROUTERS));
    // Hop limit below 255: not from the link, ignored.
    r.send(ipv6::multicast_mac(&ipv6::ALL_NODES), a6(ROUTER), ipv6::ALL_NODES, ipv6::NH_ICMPV6, 64, &ra("2001:db8:5::", Some(1400), 1800));
    r.run(10);
    assert!(r.s.ipv6_routers().is_empty());
    r.send(ipv6::multicast_mac(&ipv6::ALL_NODES), a6(ROUTER), ipv6::ALL_NODES, ipv6::NH_ICMPV6, 255, &ra("2001:db8:5::", Some(1400), 1800));
    r.run(1200);
    let slaac = ipv6::with_interface_id([0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 0], MAC_A);
    assert_eq!(state(&r.s, &slaac), "preferred", "{:?}", r.s.ipv6_addrs());
    assert_eq!(r.s.ipv6_routers(), vec![a6(ROUTER)]);
    let far = a6("2001:db8:99::5");
    assert_eq!(r.s.ipv6_mtu(&far), Some(1400));
    // Off-link traffic goes to the router's MAC (learned from its advertisement), from the new address.
    r.seen.clear();
    let now = *r.clock.borrow();
    r.s.ping6_send(far, 4, 1, &[1; 2000], now).unwrap();
    r.run(5);
    let frames: Vec<&Vec<u8>> = r.seen.iter().filter(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[38..54] == far).collect();
    assert_eq!(frames.len(), 2, "a 2000-byte echo in two fragments");
    for f in frames {
        assert_eq!(f[20], ipv6::NH_FRAGMENT);
        assert!(f.len() - 14 <= 1400, "fragments fit the advertised MTU");
        assert_eq!((f[..6].try_into().unwrap(), f[22..38].try_into().unwrap()), (R_MAC, slaac), "to the router, from the new address");
    }
}

#[test]
fn packet_too_big_lowers_the_path_mtu_and_errors_reach_the_pinger() {
    let mut r = Raw::new(cfg(&[("2001:db8::1", 64)]));
    r.run(1100);
    r.send(ipv6::multicast_mac(&ipv6::ALL_NODES), a6(ROUTER), ipv6::ALL_NODES, ipv6::NH_ICMPV6, 255, &ra("2001:db8::", None, 1800));
    r.run(10);
    let far = a6("2001:db8:77::1");
    let now = *r.clock.borrow();
    r.s.ping6_send(far, 5, 1, &[0; 1400], now).unwrap();
    r.run(5);
    let sent = r.seen.iter().rev().find(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd]).unwrap().clone();
    let ptb = icmpv6::Repr::Error { kind: icmpv6::PACKET_TOO_BIG, code: 0, param: 1280, original: &sent[14..] }
        .emit(&a6(ROUTER), &a6("2001:db8::1"));
    r.send(MAC_A, a6(ROUTER), a6("2001:db8::1"), ipv6::NH_ICMPV6, 64, &ptb);
    r.run(5);
    assert_eq!(r.s.ipv6_mtu(&far), Some(1280));
    let ev = r.s.ping6_events(5);
    assert!(matches!(ev.as_slice(), [Ping6Event::Error { errno, .. }] if errno.0 == libc::EMSGSIZE), "{ev:?}");
    // A report below the IPv6 minimum is taken as 1280 (RFC 8201).
    let ptb = icmpv6::Repr::Error { kind: icmpv6::PACKET_TOO_BIG, code: 0, param: 600, original: &sent[14..] }
        .emit(&a6(ROUTER), &a6("2001:db8::1"));
    r.send(MAC_A, a6(ROUTER), a6("2001:db8::1"), ipv6::NH_ICMPV6, 64, &ptb);
    r.run(5);
    assert_eq!(r.s.ipv6_mtu(&far), Some(1280));
}

#[test]
fn redirects_only_from_the_current_router() {
    let mut r = Raw::new(cfg(&[("2001:db8::1", 64)]));
    r.run(1100);
    r.send(ipv6::multicast_mac(&ipv6::ALL_NODES), a6(ROUTER), ipv6::ALL_NODES, ipv6::NH_ICMPV6, 255, &ra("2001:db8::", None, 1800));
    r.run(10);
    let dest = a6("2001:db8:42::9");
    let better = a6("fe80::77");
    let better_mac = [2, 0, 0, 0, 0, 0x77];
    let redirect =
        |from: &str| icmpv6::Repr::Redirect { target: better, dest, target_ll: Some(better_mac) }.emit(&a6(from), &a6("2001:db8::1"));
    // From another link-local address than the router's: ignored.
    let forged = redirect("fe80::66");
    r.send(MAC_A, a6("fe80::66"), a6("2001:db8::1"), ipv6::NH_ICMPV6, 255, &forged);
    r.run(5);
    r.seen.clear();
    let now = *r.clock.borrow();
    r.s.ping6_send(dest, 6, 1, b"a", now).unwrap();
    r.run(5);
    assert!(r.icmp6().iter().any(|m| m.2 == dest && m.0 == R_MAC), "still through the router");
    let real = redirect(ROUTER);
    r.send(MAC_A, a6(ROUTER), a6("2001:db8::1"), ipv6::NH_ICMPV6, 255, &real);
    r.run(5);
    r.seen.clear();
    let now = *r.clock.borrow();
    r.s.ping6_send(dest, 6, 2, b"b", now).unwrap();
    r.run(5);
    assert!(r.icmp6().iter().any(|m| m.2 == dest && m.0 == better_mac), "to the better first hop");
}

#[test]
fn routing_header_type_0_and_unknown_options_get_parameter_problems() {
    let mut r = Raw::new(cfg(&[("2001:db8::1", 64)]));
    r.run(1100);
    let me = a6("2001:db8::1");
    let peer = a6("2001:db8::50");
    r.owned.push(peer);
    let echo = icmpv6::Repr::EchoRequest { ident: 1, seq: 1, data: b"rh0" }.emit(&peer, &me);
    // Routing header type 0 with one segment left (RFC 5095).
    let mut p = vec![ipv6::NH_ICMPV6, 2, 0, 1, 0, 0, 0, 0];
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(&echo);
    r.send(MAC_A, peer, me, ipv6::NH_ROUTING, 64, &p);
    // Destination options with an unknown option of action 10.
    let mut q = vec![ipv6::NH_ICMPV6, 0, 0x9f, 4, 0, 0, 0, 0];
    q.extend_from_slice(&echo);
    r.send(MAC_A, peer, me, ipv6::NH_DEST_OPTS, 64, &q);
    r.run(1100);
    let problems: Vec<(u8, u32)> = r
        .icmp6()
        .into_iter()
        .filter(|m| m.3 == icmpv6::PARAM_PROBLEM && m.2 == peer)
        .map(|m| (m.4[1], u32::from_be_bytes([m.4[4], m.4[5], m.4[6], m.4[7]])))
        .collect();
    assert_eq!(problems, vec![(0, 42), (2, 42)], "erroneous field at the routing type; unrecognised option at its type");
    assert!(!r.icmp6().iter().any(|m| m.3 == icmpv6::ECHO_REPLY), "neither echo was answered");
    // Each is one header error and one drop, counted once.
    let inhdr = r.s.drops_show().lines().find(|l| l.starts_with("IP_INHDR")).map(|l| l.split_whitespace().nth(1).unwrap().to_string());
    assert_eq!(inhdr.as_deref(), Some("2"), "{}", r.s.drops_show());
    // Cut-short and garbage packets are dropped, never a panic.
    for n in [0usize, 1, 7, 39, 41] {
        r.send(MAC_A, peer, me, ipv6::NH_HOP_BY_HOP, 64, &vec![0xff; n]);
    }
    r.run(5);
}

/// Moves `data` from `from`'s connection to `to`'s, polling both, until all arrived; what arrived.
fn pump(w: &mut Two, a_to_b: bool, from: usize, to: usize, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..20_000 {
        let now = w.now();
        let (tx, rx) = if a_to_b { (&mut w.a, &mut w.b) } else { (&mut w.b, &mut w.a) };
        if sent < data.len() {
            if let Ok(n) = tx.tcp_send(from, &data[sent..], now) {
                sent += n;
            }
        }
        while let Ok(n) = rx.tcp_recv(to, &mut buf, now) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() == data.len() {
            break;
        }
        w.run(1);
    }
    got
}

#[test]
fn tcp_over_ipv6_and_a_dual_stack_listener() {
    let mut ca = cfg(&[("2001:db8::1", 64)]);
    ca.addr = [10, 0, 0, 1];
    let mut cb = cfg(&[("2001:db8::2", 64)]);
    cb.addr = [10, 0, 0, 2];
    let mut w = Two::new(ca, cb);
    w.run(1200);
    let l = w.b.tcp_listen(80, 4).unwrap();
    // Over IPv6.
    let now = w.now();
    let c6 = w.a.tcp_connect_ip(0, a6("2001:db8::2").into(), 80, now).unwrap();
    w.run(20);
    let s6 = w.b.tcp_accept(l).unwrap();
    assert_eq!(w.b.tcp_peer(s6).map(|p| p.0), Some(a6("2001:db8::1").into()));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    assert_eq!(pump(&mut w, true, c6, s6, &data), data, "IPv6 stream intact");
    assert_eq!(pump(&mut w, false, s6, c6, &data[..50_000]), data[..50_000].to_vec());
    // The same listener takes an IPv4 peer.
    let now = w.now();
    let c4 = w.a.tcp_connect([10, 0, 0, 2], 80, now).unwrap();
    w.run(20);
    let s4 = w.b.tcp_accept(l).unwrap();
    assert_eq!(w.b.tcp_peer(s4).map(|p| p.0), Some(std::net::IpAddr::from([10, 0, 0, 1])));
    assert_eq!(pump(&mut w, true, c4, s4, b"dual stack"), b"dual stack");
    // V6ONLY: an IPv4 peer is refused, an IPv6 one still taken.
    w.b.tcp_set_v6only(l, true).unwrap();
    let now = w.now();
    let refused = w.a.tcp_connect([10, 0, 0, 2], 80, now).unwrap();
    w.run(20);
    assert_eq!(w.a.tcp_error(refused).map(|e| e.0), Some(libc::ECONNREFUSED));
    let now = w.now();
    let ok = w.a.tcp_connect_ip(0, a6("2001:db8::2").into(), 80, now).unwrap();
    w.run(20);
    assert!(w.b.tcp_accept(l).is_ok());
    assert_eq!(w.a.tcp_state(ok), Some(stack::tcp::State::Established));
    // No listener on IPv6: a reset, ECONNREFUSED.
    let now = w.now();
    let closed = w.a.tcp_connect_ip(0, a6("2001:db8::2").into(), 81, now).unwrap();
    w.run(20);
    assert_eq!(w.a.tcp_error(closed).map(|e| e.0), Some(libc::ECONNREFUSED));
}

#[test]
fn udp_over_ipv6_both_ways_and_port_unreachable() {
    let mut w = Two::new(cfg(&[("2001:db8::1", 64)]), cfg(&[("2001:db8::2", 64)]));
    w.run(1200);
    let sa = w.a.udp_bind(0).unwrap();
    let sb = w.b.udp_bind(9000).unwrap();
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let now = w.now();
    w.a.udp_send_to_ip(sa, a6("2001:db8::2").into(), 9000, &big, now).unwrap();
    w.run(20);
    let (d, from, port) = w.b.udp_recv_from_ip(sb).unwrap();
    assert_eq!((d, from), (big, a6("2001:db8::1").into()), "a fragmented datagram, whole");
    assert_eq!(w.b.udp_recv_from(sb).unwrap_err().0, libc::EAGAIN, "the IPv4 call does not see IPv6 datagrams twice");
    let now = w.now();
    w.b.udp_send_to_ip(sb, from, port, b"back", now).unwrap();
    w.run(20);
    assert_eq!(w.a.udp_recv_from_ip(sa).unwrap().0, b"back");
    // A closed port: ICMPv6 port unreachable, ECONNREFUSED on the next call.
    w.a.udp_connect_ip(sa, a6("2001:db8::2").into(), 4444).unwrap();
    let now = w.now();
    w.a.udp_send(sa, b"anyone?", now).unwrap();
    w.run(20);
    assert_eq!(w.a.udp_recv_from_ip(sa).unwrap_err().0, libc::ECONNREFUSED);
}

#[test]
fn an_unreachable_from_the_router_ends_a_connect_at_once() {
    let mut r = Raw::new(cfg(&[("2001:db8::1", 64)]));
    r.run(1100);
    r.send(ipv6::multicast_mac(&ipv6::ALL_NODES), a6(ROUTER), ipv6::ALL_NODES, ipv6::NH_ICMPV6, 255, &ra("2001:db8::", None, 1800));
    r.run(10);
    let far = a6("2001:db8:66::1");
    let now = *r.clock.borrow();
    let h = r.s.tcp_connect_ip(0, far.into(), 80, now).unwrap();
    r.run(5);
    let syn = r.seen.iter().rev().find(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == ipv6::NH_TCP).unwrap().clone();
    let unreach = icmpv6::Repr::Error { kind: icmpv6::DEST_UNREACHABLE, code: icmpv6::UNREACH_NO_ROUTE, param: 0, original: &syn[14..] }
        .emit(&a6(ROUTER), &a6("2001:db8::1"));
    r.send(MAC_A, a6(ROUTER), a6("2001:db8::1"), ipv6::NH_ICMPV6, 64, &unreach);
    r.run(5);
    assert_eq!(r.s.tcp_error(h).map(|e| e.0), Some(libc::ENETUNREACH), "not after the SYN retries, at once");
    assert_eq!(r.s.tcp_state(h), Some(stack::tcp::State::Closed));
}

/// `lo` is not the interface: with it down, the host still reaches 127.0.0.0/8 and ::1 (pings, TCP, UDP),
/// as Linux's `lo` stays up when `eth0` goes down, and the interface's own IPv4 address (Linux keeps its
/// local route). Anything for the link fails with ENETUNREACH, as Linux's routes go down with the link,
/// and so does the interface's own IPv6 address (Linux drops its local route too); the device sees
/// nothing.
#[test]
fn lo_stays_up_while_the_interface_is_down() {
    let mut cb = cfg(&[("2001:db8::2", 64)]);
    cb.addr = [10, 0, 0, 2];
    let mut w = Two::new(cfg(&[("2001:db8::1", 64)]), cb);
    w.run(1100);
    w.a.set_up(false);
    let tx = w.a.stats.tx_packets;
    let now = w.now();
    let llb = ipv6::link_local(MAC_B);
    assert_eq!(w.a.ping_send([10, 0, 0, 2], 1, 1, b"the link", now).unwrap_err().0, libc::ENETUNREACH);
    assert_eq!(w.a.ping6_send(llb, 1, 1, b"the link", now).unwrap_err().0, libc::ENETUNREACH);
    assert_eq!(w.a.ping6_send(a6("2001:db8::1"), 1, 1, b"own IPv6", now).unwrap_err().0, libc::ENETUNREACH);
    for dst in ["10.0.0.2", "2001:db8::2", "2001:db8::1"] {
        let r = w.a.tcp_connect_ip(0, dst.parse().unwrap(), 7000, now).map(|_| ());
        assert_eq!(r.map_err(|e| e.0), Err(libc::ENETUNREACH), "connect to {dst}");
    }
    w.a.ping_send([127, 0, 0, 1], 2, 1, b"localhost", now).unwrap();
    w.a.ping6_send(std::net::Ipv6Addr::LOCALHOST.octets(), 3, 1, b"localhost", now).unwrap();
    w.a.ping_send([10, 0, 0, 1], 5, 1, b"own IPv4", now).unwrap();
    let l = w.a.tcp_listen(7000, 4).unwrap();
    let u = w.a.udp_bind(5353).unwrap();
    let v = w.a.udp_bind(0).unwrap();
    for (k, dst) in ["127.0.0.1", "::1", "10.0.0.1"].into_iter().enumerate() {
        let dst: std::net::IpAddr = dst.parse().unwrap();
        let now = w.now();
        let c = w.a.tcp_connect_ip(0, dst, 7000, now).unwrap();
        w.a.udp_send_to_ip(v, dst, 5353, b"dgram", now).unwrap();
        w.run(20);
        let s = w.a.tcp_accept(l).unwrap_or_else(|e| panic!("{dst}: not accepted ({e:?})"));
        let now = w.now();
        assert_eq!(w.a.tcp_send(c, b"hello", now), Ok(5));
        w.run(20);
        let mut buf = [0u8; 8];
        let now = w.now();
        assert_eq!(w.a.tcp_recv(s, &mut buf, now).map(|n| buf[..n].to_vec()), Ok(b"hello".to_vec()), "{dst}");
        assert!(matches!(w.a.udp_recv_from_ip(u), Ok((d, from, _)) if d == b"dgram" && from == dst), "{dst} ({k})");
    }
    let ev = w.a.ping_events(2);
    assert!(matches!(ev.as_slice(), [stack::PingEvent::Reply { from: [127, 0, 0, 1], .. }]), "{ev:?}");
    let ev6 = w.a.ping6_events(3);
    assert!(matches!(ev6.as_slice(), [Ping6Event::Reply { from, .. }] if *from == std::net::Ipv6Addr::LOCALHOST.octets()), "{ev6:?}");
    let ev = w.a.ping_events(5);
    assert!(matches!(ev.as_slice(), [stack::PingEvent::Reply { from: [10, 0, 0, 1], .. }]), "{ev:?}");
    assert_eq!(w.a.stats.tx_packets, tx, "the device saw none of it");
    // Up again, the link works as before.
    w.a.set_up(true);
    w.run(1100);
    let now = w.now();
    w.a.ping6_send(llb, 4, 1, b"up", now).unwrap();
    w.run(20);
    assert!(matches!(w.a.ping6_events(4).as_slice(), [Ping6Event::Reply { .. }]));
}

/// A connection to 127.0.0.1 or ::1 takes its MSS from `lo`'s MTU (65536, as Linux's), not the link's: a
/// megabyte crosses in segments of 65,483 and 65,463 bytes (the MSS less the timestamps option), intact.
#[test]
fn connections_over_lo_use_lo_s_mtu() {
    let mut w = Two::new(cfg(&[]), cfg(&[]));
    w.run(1100);
    let l = w.a.tcp_listen(7000, 4).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for (dst, mss) in [("127.0.0.1", 65495 - 12), ("::1", 65475 - 12)] {
        let dst: std::net::IpAddr = dst.parse().unwrap();
        let now = w.now();
        let c = w.a.tcp_connect_ip(0, dst, 7000, now).unwrap();
        w.run(5);
        let s = w.a.tcp_accept(l).unwrap_or_else(|e| panic!("{dst}: not accepted ({e:?})"));
        assert_eq!(w.a.tcp_conn(c).map(|t| t.mss()), Some(mss), "{dst}: the client's MSS");
        assert_eq!(w.a.tcp_conn(s).map(|t| t.mss()), Some(mss), "{dst}: the server's MSS");
        let (segs, tx) = (w.a.stats.tcp_out_segs, w.a.stats.tx_packets);
        let got = common::transfer(
            &mut w,
            &data,
            5000,
            |w, d| w.a.tcp_send(c, d, w.now()).unwrap_or(0),
            |w| w.run(1),
            |w, b| w.a.tcp_recv(s, b, w.now()).unwrap_or(0),
        );
        assert!(got == data, "{dst}: {} of {} bytes, intact: {}", got.len(), data.len(), data.starts_with(&got));
        // Data and acknowledgments both ways: about 16 data segments of 65 kB, where 1448-byte segments
        // would take 691.
        let n = w.a.stats.tcp_out_segs - segs;
        assert!(n < 200, "{dst}: {n} segments for a megabyte");
        assert_eq!(w.a.stats.tx_packets, tx, "{dst}: nothing reached the device");
    }
}
