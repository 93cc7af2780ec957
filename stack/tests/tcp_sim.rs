//! TCP between two stacks over the simulated link: transfers under seeded loss, reordering and duplication,
//! connection errors, and the close sequence.

mod common;

use common::*;
use stack::dev::sim::Impairment;
use stack::iface::SocketHandle;
use stack::tcp::State;

use std::time::Duration;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed).collect()
}

/// Sends `data` from A to B over a fresh connection and returns what B read.
fn transfer(w: &mut World, data: &[u8], limit: Duration) -> (Vec<u8>, SocketHandle, SocketHandle) {
    let l = w.b.tcp_listen(80, 8).unwrap();
    let now = w.now();
    let c = w.a.tcp_connect(B, 80, now).unwrap();
    let mut s = None;
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 65536];
    let end = w.now() + limit;
    let mut closed = false;
    while w.now() < end {
        let now = w.now();
        if s.is_none() {
            s = w.b.tcp_accept(l).ok();
        }
        if sent < data.len() {
            if let Ok(n) = w.a.tcp_send(c, &data[sent..], now) {
                sent += n;
            }
        } else if !closed {
            w.a.tcp_shutdown(c, now).unwrap();
            closed = true;
        }
        if let Some(s) = s {
            loop {
                match w.b.tcp_recv(s, &mut buf, now) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if closed && got.len() == data.len() && w.b.tcp_state(s) == Some(State::CloseWait) {
                return (got, c, s);
            }
        }
        w.step();
    }
    panic!(
        "transfer did not finish: sent {sent}, got {} of {}, A {:?} {:?} B {:?}",
        got.len(),
        data.len(),
        w.a.tcp_state(c),
        w.a.tcp_error(c),
        s.and_then(|s| w.b.tcp_state(s))
    );
}

#[test]
fn clean_transfer_and_close_sequence() {
    let mut w = World::new(Impairment { delay: Duration::from_millis(5), ..Default::default() }, 1);
    let data = pattern(2_000_000, 1);
    let (got, c, s) = transfer(&mut w, &data, Duration::from_secs(60));
    assert_eq!(got, data);
    w.run(Duration::from_millis(50));
    assert_eq!(w.a.tcp_state(c), Some(State::FinWait2));
    let now = w.now();
    w.b.tcp_close(s, now);
    w.run(Duration::from_millis(50));
    assert_eq!(w.b.tcp_state(s), Some(State::Closed), "LAST-ACK -> CLOSED");
    assert_eq!(w.a.tcp_state(c), Some(State::TimeWait));
    w.run(Duration::from_secs(61));
    assert_eq!(w.a.tcp_state(c), Some(State::Closed), "TIME-WAIT expires");
}

#[test]
fn transfers_complete_intact_under_impairment() {
    for (pct, seed) in [(1u32, 11u64), (5, 12), (10, 13)] {
        let imp = Impairment { loss: pct, reorder: pct, duplicate: pct, delay: Duration::from_millis(2) };
        let mut w = World::new(imp, seed);
        let data = pattern(300_000, seed as u8);
        let (got, c, _) = transfer(&mut w, &data, Duration::from_secs(600));
        assert_eq!(got, data, "{pct}%: data intact");
        let t = w.a.tcp_conn(c).unwrap();
        assert!(t.retransmits > 0, "{pct}%: loss was recovered by retransmission");
    }
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let mut w = World::new(Impairment::default(), 2);
    let now = w.now();
    let c = w.a.tcp_connect(B, 81, now).unwrap();
    w.run(Duration::from_millis(50));
    assert_eq!(w.a.tcp_state(c), Some(State::Closed));
    assert_eq!(w.a.tcp_error(c).map(|e| e.0), Some(libc::ECONNREFUSED));
}

#[test]
fn a_silent_peer_is_unreachable() {
    // The peer's address answers nothing, not even ARP: once resolution gives up (three requests a second
    // apart), the connect ends with EHOSTUNREACH, as Linux's "No route to host".
    let mut w = World::new(Impairment { loss: 100, ..Default::default() }, 3);
    w.a.tcp_cfg.syn_retries = 3;
    let now = w.now();
    let c = w.a.tcp_connect(B, 80, now).unwrap();
    w.run(Duration::from_millis(2500));
    assert_eq!(w.a.tcp_error(c), None, "still resolving");
    w.run(Duration::from_secs(2));
    assert_eq!(w.a.tcp_error(c).map(|e| e.0), Some(libc::EHOSTUNREACH));
    assert_eq!(w.a.tcp_state(c), Some(State::Closed));
}

#[test]
fn cubic_transfers_under_loss_and_readiness_reports_progress() {
    let imp = Impairment { loss: 2, reorder: 2, duplicate: 0, delay: Duration::from_millis(5) };
    let mut w = World::new(imp, 21);
    w.a.tcp_cfg.cc = stack::tcp::CongestionControl::Cubic;
    let data = pattern(500_000, 9);
    let (got, c, s) = transfer(&mut w, &data, Duration::from_secs(600));
    assert_eq!(got, data);
    assert!(w.a.tcp_conn(c).unwrap().retransmits > 0);
    // The receiver has seen the FIN: readable (end of stream), still writable (half-close).
    assert_eq!(w.b.tcp_ready(s), (true, true));
}
