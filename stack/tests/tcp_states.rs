//! The TCP state machine, transition by transition, with two connections passing segments by hand on a
//! virtual clock.

use stack::tcp::{Config, Out, State, Tcb};
use stack::time::Instant;
use stack::wire::tcp::{Repr, Seq, ACK, FIN, RST, SYN};
use std::time::Duration;

const A: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const B: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Delivers everything `from` wants to send into `to`; returns the segments.
fn deliver(from: &mut Tcb, to: &mut Tcb, now: Instant) -> Vec<Out> {
    let outs = from.output(now);
    for o in &outs {
        if let Some(r) = to.input(&o.repr, &o.payload, now) {
            from.input(&r.repr, &r.payload, now);
        }
    }
    outs
}

/// A connected pair: A connected actively to B.
fn established(cfg: Config) -> (Tcb, Tcb) {
    let mut a = Tcb::connect(A, B, Seq(1000), cfg.clone(), t(0));
    let syn = a.output(t(0));
    assert_eq!(syn.len(), 1);
    assert_eq!(syn[0].repr.flags, SYN);
    let mut b = Tcb::accept_syn(B, A, &syn[0].repr, Seq(5000), cfg, t(0));
    assert_eq!(b.state, State::SynReceived);
    let synack = deliver(&mut b, &mut a, t(1));
    assert_eq!(synack[0].repr.flags, SYN | ACK);
    assert_eq!(a.state, State::Established);
    deliver(&mut a, &mut b, t(2));
    assert_eq!(b.state, State::Established);
    (a, b)
}

fn pump(a: &mut Tcb, b: &mut Tcb, now: Instant) {
    for _ in 0..50 {
        let x = deliver(a, b, now).len();
        let y = deliver(b, a, now).len();
        if x + y == 0 {
            break;
        }
    }
}

#[test]
fn three_way_handshake_negotiates_options() {
    let (a, b) = established(Config::default());
    assert_eq!(a.mss(), 1460 - 12, "timestamps take 12 bytes of each segment");
    assert_eq!(b.mss(), a.mss());
}

#[test]
fn simultaneous_open() {
    let cfg = Config::default();
    let mut a = Tcb::connect(A, B, Seq(1000), cfg.clone(), t(0));
    let mut b = Tcb::connect(B, A, Seq(9000), cfg, t(0));
    let sa = a.output(t(0));
    let sb = b.output(t(0));
    // The SYNs cross: each side goes to SYN-RECEIVED.
    a.input(&sb[0].repr, &[], t(1));
    b.input(&sa[0].repr, &[], t(1));
    assert_eq!((a.state, b.state), (State::SynReceived, State::SynReceived));
    // Each answers SYN-ACK; each SYN-ACK completes the other side.
    let ra = a.output(t(2));
    let rb = b.output(t(2));
    assert_eq!(ra[0].repr.flags, SYN | ACK);
    b.input(&ra[0].repr, &[], t(3));
    a.input(&rb[0].repr, &[], t(3));
    assert_eq!((a.state, b.state), (State::Established, State::Established));
}

#[test]
fn active_close_passes_fin_wait_and_time_wait() {
    let (mut a, mut b) = established(Config::default());
    a.shutdown();
    assert_eq!(a.state, State::FinWait1);
    let fin = deliver(&mut a, &mut b, t(10));
    assert_ne!(fin.last().unwrap().repr.flags & FIN, 0);
    assert_eq!(b.state, State::CloseWait);
    deliver(&mut b, &mut a, t(11));
    assert_eq!(a.state, State::FinWait2);
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf), Ok(0), "end of stream");
    b.shutdown();
    assert_eq!(b.state, State::LastAck);
    deliver(&mut b, &mut a, t(12));
    assert_eq!(a.state, State::TimeWait);
    deliver(&mut a, &mut b, t(13));
    assert_eq!(b.state, State::Closed);
    a.on_timer(t(13) + Duration::from_secs(59));
    assert_eq!(a.state, State::TimeWait);
    a.on_timer(t(13) + Duration::from_secs(61));
    assert_eq!(a.state, State::Closed, "2 MSL later");
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let (mut a, mut b) = established(Config::default());
    a.shutdown();
    b.shutdown();
    let fa = a.output(t(10));
    let fb = b.output(t(10));
    a.input(&fb[0].repr, &fb[0].payload, t(11));
    b.input(&fa[0].repr, &fa[0].payload, t(11));
    assert_eq!((a.state, b.state), (State::Closing, State::Closing));
    pump(&mut a, &mut b, t(12));
    assert_eq!((a.state, b.state), (State::TimeWait, State::TimeWait));
}

#[test]
fn rst_rules() {
    // SYN-SENT: a RST acknowledging our SYN is a refusal.
    let mut a = Tcb::connect(A, B, Seq(1000), Config::default(), t(0));
    a.output(t(0));
    let rst = Repr { src_port: B.1, dst_port: A.1, seq: Seq(0), ack: Seq(1001), flags: RST | ACK, ..Default::default() };
    a.input(&rst, &[], t(1));
    assert_eq!(a.state, State::Closed);
    assert_eq!(a.error.map(|e| e.0), Some(libc::ECONNREFUSED));
    // SYN-SENT: a RST without an acceptable ACK is ignored.
    let mut a = Tcb::connect(A, B, Seq(1000), Config::default(), t(0));
    a.output(t(0));
    a.input(&Repr { ack: Seq(77), ..rst.clone() }, &[], t(1));
    assert_eq!(a.state, State::SynSent);
    // ESTABLISHED: a RST at exactly RCV.NXT resets; one elsewhere in the window only draws a challenge ACK.
    let (mut a, mut b) = established(Config::default());
    let probe = b.output(t(5));
    assert!(probe.is_empty());
    let nxt = Seq(5001);
    a.input(&Repr { src_port: B.1, dst_port: A.1, seq: nxt.add(100), flags: RST, ..Default::default() }, &[], t(6));
    assert_eq!(a.state, State::Established);
    let challenge = a.output(t(6));
    assert_eq!(challenge.len(), 1);
    assert_eq!(challenge[0].repr.flags, ACK);
    a.input(&Repr { src_port: B.1, dst_port: A.1, seq: nxt, flags: RST, ..Default::default() }, &[], t(7));
    assert_eq!(a.state, State::Closed);
    assert_eq!(a.error.map(|e| e.0), Some(libc::ECONNRESET));
    // A SYN on an established connection draws a challenge ACK, nothing else.
    let syn = Repr { src_port: A.1, dst_port: B.1, seq: Seq(1001), flags: SYN, ..Default::default() };
    b.input(&syn, &[], t(8));
    assert_eq!(b.state, State::Established);
    assert_eq!(b.output(t(8))[0].repr.flags, ACK);
}

#[test]
fn out_of_window_data_is_dropped_and_acked() {
    let (mut a, _b) = established(Config::default());
    let far =
        Repr { src_port: B.1, dst_port: A.1, seq: Seq(5001).add(5_000_000), ack: Seq(1001), flags: ACK, window: 100, ..Default::default() };
    a.input(&far, b"junk", t(5));
    let mut buf = [0u8; 8];
    assert!(a.recv(&mut buf).is_err(), "nothing delivered");
    assert_eq!(a.output(t(5)).len(), 1, "an ACK for the stray segment");
}

#[test]
fn rto_backoff_and_retry_limit() {
    let cfg = Config { max_retries: 3, ..Config::default() };
    let (mut a, _b) = established(cfg);
    a.send(&[7u8; 100]).unwrap();
    let first = a.output(t(10));
    assert_eq!(first.len(), 1);
    // Nothing comes back: RTO fires, doubling each time, then the connection gives up with a RST.
    let mut now = t(10);
    let mut gaps = Vec::new();
    let mut last = now;
    loop {
        now = now + Duration::from_millis(10);
        let mut outs = a.on_timer(now);
        outs.extend(a.output(now));
        if outs.iter().any(|o| o.payload.len() == 100) {
            gaps.push((now - last).as_millis());
            last = now;
        }
        if a.state == State::Closed {
            assert!(outs.iter().any(|o| o.repr.flags & RST != 0));
            break;
        }
        assert!(now < t(600_000));
    }
    assert_eq!(gaps.len(), 3);
    assert!(gaps[1] >= gaps[0] * 2 - 20 && gaps[2] >= gaps[1] * 2 - 20, "exponential backoff: {gaps:?}");
    assert_eq!(a.error.map(|e| e.0), Some(libc::ETIMEDOUT));
}

#[test]
fn fast_retransmit_and_newreno() {
    let (mut a, mut b) = established(Config { nodelay: true, ..Config::default() });
    let mss = a.mss();
    a.send(&vec![1u8; mss * 8]).unwrap();
    let segs = a.output(t(10));
    assert_eq!(segs.len(), 8);
    // Lose the first segment; the rest make B send duplicate ACKs.
    let mut dups = Vec::new();
    for s in &segs[1..] {
        b.input(&s.repr, &s.payload, t(11));
        dups.extend(b.output(t(11)));
    }
    assert!(dups.len() >= 3);
    assert!(!dups[0].repr.sack.is_empty(), "duplicate ACKs carry SACK blocks");
    let cwnd_before = a.cwnd;
    for d in &dups {
        a.input(&d.repr, &d.payload, t(12));
    }
    let rtx = a.output(t(12));
    assert_eq!(rtx[0].repr.seq, segs[0].repr.seq, "the lost segment goes again at once");
    assert!(a.cwnd < cwnd_before + 4 * mss && a.ssthresh < usize::MAX);
    assert!(a.retransmits >= 1);
    b.input(&rtx[0].repr, &rtx[0].payload, t(13));
    pump(&mut a, &mut b, t(14));
    let mut got = vec![0u8; mss * 8];
    assert_eq!(b.recv(&mut got), Ok(mss * 8));
}

#[test]
fn zero_window_probe_then_resume() {
    let small = Config { rcv_buf: 4096, ..Config::default() };
    let (mut a, mut b) = {
        let mut a = Tcb::connect(A, B, Seq(1000), Config::default(), t(0));
        let syn = a.output(t(0));
        let mut b = Tcb::accept_syn(B, A, &syn[0].repr, Seq(5000), small, t(0));
        deliver(&mut b, &mut a, t(1));
        deliver(&mut a, &mut b, t(2));
        (a, b)
    };
    a.send(&vec![3u8; 20000]).unwrap();
    pump(&mut a, &mut b, t(10));
    assert_eq!(b.recv_available(), 4096, "the receiver is full");
    // The sender waits; after an RTO it probes the zero window.
    let mut probed = false;
    for ms in (20..5000).step_by(50) {
        let outs = a.on_timer(t(ms));
        if outs.iter().any(|o| o.payload.len() == 1) {
            probed = true;
            for o in &outs {
                b.input(&o.repr, &o.payload, t(ms));
            }
            break;
        }
    }
    assert!(probed, "zero-window probe sent");
    let mut buf = vec![0u8; 20000];
    let mut total = 0;
    for ms in 5000..6000 {
        total += b.recv(&mut buf).unwrap_or(0);
        pump(&mut a, &mut b, t(ms));
        for o in a.on_timer(t(ms)) {
            b.input(&o.repr, &o.payload, t(ms));
        }
        if total >= 20000 {
            break;
        }
    }
    assert_eq!(total, 20000, "window reopened, transfer finished");
}

#[test]
fn nagle_holds_small_segments_nodelay_does_not() {
    let (mut a, _b) = established(Config::default());
    a.send(b"first").unwrap();
    assert_eq!(a.output(t(10)).len(), 1);
    a.send(b"second").unwrap();
    assert!(a.output(t(11)).is_empty(), "Nagle: one small segment in flight");
    a.set_nodelay(true);
    assert_eq!(a.output(t(12)).len(), 1, "no-delay sends at once");
}

#[test]
fn delayed_ack() {
    let (mut a, mut b) = established(Config { nodelay: true, ..Config::default() });
    a.send(b"one").unwrap();
    for o in a.output(t(10)) {
        b.input(&o.repr, &o.payload, t(10));
    }
    assert!(b.output(t(10)).is_empty(), "one segment: the ACK waits");
    assert_eq!(b.output(t(51)).len(), 1, "40 ms later it goes");
    a.send(&vec![0u8; 3000]).unwrap();
    for o in a.output(t(60)) {
        b.input(&o.repr, &o.payload, t(60));
    }
    assert_eq!(b.output(t(60)).len(), 1, "two full segments: ACK at once");
}

#[test]
fn keepalive_probes_then_times_out() {
    let cfg = Config { keepalive: Some((Duration::from_secs(10), Duration::from_secs(1), 3)), ..Config::default() };
    let (mut a, _b) = established(cfg);
    let mut probes = 0;
    for s in 0..20u64 {
        let outs = a.on_timer(t(s * 1000));
        probes += outs.iter().filter(|o| o.repr.flags == ACK && o.payload.is_empty()).count();
        if a.state == State::Closed {
            break;
        }
    }
    assert_eq!(probes, 3);
    assert_eq!(a.error.map(|e| e.0), Some(libc::ETIMEDOUT));
}

#[test]
fn window_scaling_advertises_more_than_64k() {
    let (mut a, mut b) = established(Config { nodelay: true, ..Config::default() });
    // B's 1 MiB buffer is advertised scaled by 2^7: more than a 16-bit window can say.
    a.send(&vec![0u8; 200_000]).unwrap();
    let (mut sent, mut max_wnd) = (0, 0usize);
    for round in 0..40 {
        let outs = a.output(t(10 + round));
        sent += outs.iter().map(|o| o.payload.len()).sum::<usize>();
        for o in &outs {
            b.input(&o.repr, &o.payload, t(10 + round));
        }
        for o in b.output(t(10 + round)) {
            max_wnd = max_wnd.max((o.repr.window as usize) << 7);
            a.input(&o.repr, &o.payload, t(10 + round));
        }
    }
    assert_eq!(sent, 200_000);
    assert!(max_wnd > 65535, "advertised {max_wnd}");
    let _ = FIN;
}

#[test]
fn fin_wait_1_straight_to_time_wait_on_fin_ack() {
    let (mut a, mut b) = established(Config::default());
    a.shutdown();
    let fin = a.output(t(10));
    b.input(&fin[0].repr, &fin[0].payload, t(11));
    b.shutdown();
    // B's FIN carries the ACK of A's FIN: FIN-WAIT-1 -> TIME-WAIT in one step.
    let finack = b.output(t(12));
    assert_eq!(finack.len(), 1);
    assert_eq!(finack[0].repr.flags & (FIN | ACK), FIN | ACK);
    a.input(&finack[0].repr, &finack[0].payload, t(13));
    assert_eq!(a.state, State::TimeWait);
}

#[test]
fn syn_received_reset_closes_with_refusal() {
    let mut a = Tcb::connect(A, B, Seq(1000), Config::default(), t(0));
    let syn = a.output(t(0));
    let mut b = Tcb::accept_syn(B, A, &syn[0].repr, Seq(5000), Config::default(), t(0));
    b.output(t(1));
    b.input(&Repr { src_port: A.1, dst_port: B.1, seq: Seq(1001), flags: RST, ..Default::default() }, &[], t(2));
    assert_eq!(b.state, State::Closed);
    assert!(!b.established_once, "never reaches accept()");
}

#[test]
fn sack_steers_retransmission_past_data_the_peer_has() {
    let (mut a, mut b) = established(Config { nodelay: true, ..Config::default() });
    let mss = a.mss();
    a.send(&vec![1u8; mss * 8]).unwrap();
    let segs = a.output(t(10));
    assert_eq!(segs.len(), 8);
    // Segments 0 and 4 are lost; B SACKs 1-3 and 5-7.
    let mut acks = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if i != 0 && i != 4 {
            b.input(&s.repr, &s.payload, t(11));
            acks.extend(b.output(t(11)));
        }
    }
    for o in &acks {
        a.input(&o.repr, &o.payload, t(12));
    }
    let first = a.output(t(12));
    assert_eq!(first[0].repr.seq, segs[0].repr.seq, "fast retransmit of the first hole");
    assert_eq!(first.len(), 1, "only the hole goes again, not what is still in flight");
    // B gets it; a retransmission is one MSS, so the hole (one of A's segments of up to max_gso bytes) may
    // take more than one: B's ACKs are partial until they reach the second hole, with SACK for 5-7.
    let mut outs = first;
    let mut ms = 13;
    let partial = loop {
        for o in &outs {
            b.input(&o.repr, &o.payload, t(ms));
        }
        let acks = b.output(t(ms));
        assert!(!acks.is_empty(), "a segment filling part of a gap is acknowledged at once");
        if acks.last().unwrap().repr.ack == segs[4].repr.seq {
            break acks;
        }
        for o in &acks {
            a.input(&o.repr, &o.payload, t(ms + 1));
        }
        outs = a.output(t(ms + 1));
        assert!(outs.iter().all(|o| o.repr.seq.lt(segs[4].repr.seq)), "only the first hole's bytes so far");
        ms += 2;
        assert!(ms < 40);
    };
    for o in &partial {
        a.input(&o.repr, &o.payload, t(ms + 1));
    }
    let next = a.output(t(ms + 1));
    assert!(!next.is_empty());
    assert_eq!(next[0].repr.seq, segs[4].repr.seq, "the second hole goes next");
    let sacked_again =
        next.iter().any(|o| o.repr.seq.gt(segs[4].repr.seq) && o.repr.seq.lt(segs[7].repr.seq.add(1)) && !o.payload.is_empty());
    assert!(!sacked_again, "data the peer SACKed is not sent again");
    b.input(&next[0].repr, &next[0].payload, t(ms + 2));
    pump(&mut a, &mut b, t(ms + 3));
    let mut got = vec![0u8; mss * 8];
    assert_eq!(b.recv(&mut got), Ok(mss * 8));
}

/// A SYN without an MSS option: RFC 9293 3.7.1 makes the send MSS 536 for IPv4, so data goes out in
/// segments of at most 536 bytes (a peer on a small-MTU path that says nothing must not get 1460).
#[test]
fn no_mss_option_means_536() {
    let syn = Repr { src_port: A.1, dst_port: B.1, seq: Seq(1000), flags: SYN, window: 65535, ..Default::default() };
    assert_eq!(syn.mss, None);
    let mut b = Tcb::accept_syn(B, A, &syn, Seq(5000), Config { timestamps: false, ..Config::default() }, t(0));
    assert_eq!(b.mss(), 536);
    let synack = b.output(t(0));
    assert_eq!(synack[0].repr.mss, Some(1460), "our own MSS is still offered");
    let ack = Repr { src_port: A.1, dst_port: B.1, seq: Seq(1001), ack: Seq(5001), flags: ACK, window: 65535, ..Default::default() };
    b.input(&ack, &[], t(1));
    assert_eq!(b.state, State::Established);
    b.send(&[7u8; 5000]).unwrap();
    let out = b.output(t(2));
    // Each data output's wire segments: the payload itself, or its GSO size when it is to be cut.
    let segs: Vec<usize> = out.iter().filter(|o| !o.payload.is_empty()).map(|o| o.gso.map_or(o.payload.len(), usize::from)).collect();
    assert!(!segs.is_empty());
    assert!(segs.iter().all(|s| *s <= 536), "segments {segs:?}");
}

/// Once our FIN is acknowledged (FIN-WAIT-2), nothing is due: no second FIN, no retransmission timer.
#[test]
fn nothing_is_sent_after_our_fin_is_acknowledged() {
    let (mut a, mut b) = established(Config::default());
    a.send(b"last words").unwrap();
    a.shutdown();
    pump(&mut a, &mut b, t(11));
    assert_eq!(a.state, State::FinWait2);
    assert!(a.output(t(12)).is_empty(), "no FIN again");
    assert!(a.on_timer(t(5000)).is_empty() && a.output(t(5000)).is_empty());
    assert_eq!(a.retransmits, 0);
}

/// Segments the connection discards say why, in Linux's drop-reason terms.
#[test]
fn discarded_segments_name_their_reason() {
    use stack::monitor::DropReason;
    let (mut a, mut b) = established(Config::default());
    a.send(b"hello").unwrap();
    let seg = a.output(t(10)).remove(0);
    let mut far = seg.repr.clone();
    far.seq = far.seq.add(50_000_000);
    b.input(&far, &seg.payload, t(11));
    assert_eq!(b.take_dropped(), Some(DropReason::TcpInvalidSequence), "far outside the window");
    b.input(&seg.repr, &seg.payload, t(12));
    assert_eq!(b.take_dropped(), None, "an acceptable segment is not dropped");
    let mut syn = seg.repr.clone();
    syn.flags = stack::wire::tcp::SYN;
    syn.seq = b_rcv_nxt(&mut a, &mut b);
    b.input(&syn, &[], t(13));
    assert_eq!(b.take_dropped(), Some(DropReason::TcpInvalidSyn));
}

/// The next sequence number B expects from A (what A would send next).
fn b_rcv_nxt(a: &mut Tcb, b: &mut Tcb) -> Seq {
    pump(a, b, t(12));
    a.send(b"x").unwrap();
    a.output(t(12)).remove(0).repr.seq
}
