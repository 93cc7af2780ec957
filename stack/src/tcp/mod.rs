//! A TCP connection (RFC 9293): the state machine, retransmission with RFC 6298 timers and exponential
//! backoff ending in ETIMEDOUT, congestion control per RFC 5681/6582 (slow start, congestion avoidance,
//! fast retransmit, NewReno recovery; CUBIC as an option), window scaling and timestamps (RFC 7323), SACK
//! (RFC 2018) for the receiver's out-of-order data and the sender's retransmissions, MSS, delayed ACK,
//! Nagle (and no-delay), keepalive, zero-window probing, and silly-window avoidance on both sides.
//!
//! A `Tcb` is pure state: segments in through [`Tcb::input`], segments out through [`Tcb::output`], timers
//! through [`Tcb::poll_at`]; the interface layer does the IP work and the demultiplexing. Beside the state
//! machine: `cc` (congestion control algorithms behind one trait), `rto` (the RFC 6298 estimator) and
//! `sack` (the sender's scoreboard and the receiver's blocks).

mod cc;
mod rto;
mod sack;

pub use cc::{Congestion, CongestionControl, Cubic, NewReno};
pub use rto::RttEstimator;
pub use sack::Scoreboard;

use crate::errno::Errno;
use crate::monitor::DropReason;
use crate::skb::PacketBuf;
use crate::time::Instant;
use crate::wire::tcp::{Repr, Seq, ACK, FIN, PSH, RST, SYN};

pub use crate::wire::tcp::Seq as SeqNumber;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// The name `ss` prints.
    pub fn ss_name(self) -> &'static str {
        match self {
            State::Closed => "CLOSE",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECV",
            State::Established => "ESTAB",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }
}

/// A connection's state as `ss -ti` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: State,
    pub recv_q: usize,
    pub send_q: usize,
    pub mss: usize,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub srtt: Option<std::time::Duration>,
    pub rttvar: std::time::Duration,
    pub rto: std::time::Duration,
    pub retransmits: u64,
    pub sack: bool,
    pub timestamps: bool,
    /// Window scale (send, receive), when both sides use it.
    pub wscale: Option<(u8, u8)>,
    /// As Linux's tcp_info counts them: sequence space the peer acknowledged (our SYN and FIN included),
    /// and sequence space received in order after the peer's SYN (its FIN included).
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mss: u16,
    pub rcv_buf: usize,
    pub snd_buf: usize,
    pub wscale: u8,
    pub nodelay: bool,
    pub timestamps: bool,
    pub sack: bool,
    pub delayed_ack: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub initial_rto: Duration,
    pub max_retries: u32,
    pub syn_retries: u32,
    pub time_wait: Duration,
    /// (idle time, probe interval, probes)
    pub keepalive: Option<(Duration, Duration, u32)>,
    pub cc: CongestionControl,
    /// Largest segment handed down at once (GSO): the MSS without TSO, up to 64 KiB with it.
    pub max_gso: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            rcv_buf: 1 << 20,
            snd_buf: 1 << 20,
            wscale: 7,
            nodelay: false,
            timestamps: true,
            sack: true,
            delayed_ack: Duration::from_millis(40),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            initial_rto: Duration::from_secs(1),
            max_retries: 15,
            syn_retries: 6,
            time_wait: Duration::from_secs(60),
            keepalive: None,
            cc: CongestionControl::NewReno,
            max_gso: 1460,
        }
    }
}

/// A segment to send: header fields and payload.
#[derive(Debug, Clone)]
pub struct Out {
    pub repr: Repr,
    pub payload: Payload,
    /// For a payload longer than the MSS: cut it in segments of this size (TSO).
    pub gso: Option<u16>,
}

/// A segment's payload, already in the packet buffer it leaves in: copied once out of the send buffer,
/// behind the default headroom, where the TCP, IP and link headers are then pushed in front of it.
#[derive(Debug, Clone)]
pub struct Payload(PacketBuf);

impl Payload {
    /// No payload (a bare ACK, SYN, FIN or RST): a small buffer for the headers alone.
    pub fn empty() -> Payload {
        Payload(PacketBuf::with_headroom(crate::skb::DEFAULT_HEADROOM, 0))
    }

    /// `len` bytes of `q` from `at` (as far as `q` holds them), copied a contiguous run at a time.
    fn from_deque(q: &VecDeque<u8>, at: usize, len: usize) -> Payload {
        let (a, b) = q.as_slices();
        let (p, ()) = PacketBuf::read_with(len, |v| {
            let end = at.saturating_add(len);
            v.extend_from_slice(a.get(at.min(a.len())..end.min(a.len())).unwrap_or_default());
            let (from, to) = (at.saturating_sub(a.len()), end.saturating_sub(a.len()));
            v.extend_from_slice(b.get(from.min(b.len())..to.min(b.len())).unwrap_or_default());
        });
        Payload(p)
    }

    /// The packet buffer, the payload its data.
    pub fn into_packet(self) -> PacketBuf {
        self.0
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.data()
    }
}

const MAX_OOO_BYTES: usize = 1 << 20;

/// An address and port, IPv4 or IPv6.
pub type Endpoint = (IpAddr, u16);

pub struct Tcb {
    pub state: State,
    pub local: Endpoint,
    pub remote: Endpoint,
    cfg: Config,
    // send side
    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    snd_max: Seq,
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: Seq,
    snd_wl2: Seq,
    snd_shift: u8,
    peer_mss: usize,
    send_buf: VecDeque<u8>,
    fin_queued: bool,
    ts_ok: bool,
    ts_recent: u32,
    sack_ok: bool,
    /// SACKed ranges reported by the peer, above snd_una.
    sacked: Scoreboard,
    // receive side
    irs: Seq,
    rcv_nxt: Seq,
    rcv_buf: VecDeque<u8>,
    rcv_shift: u8,
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
    fin_at: Option<Seq>,
    fin_received: bool,
    rcv_adv: Seq,
    ack_pending: u32,
    ack_now: bool,
    ack_deadline: Option<Instant>,
    // timers
    rtt: RttEstimator,
    rtx_deadline: Option<Instant>,
    retries: u32,
    rtt_probe: Option<(Seq, Instant)>,
    persist_deadline: Option<Instant>,
    persist_backoff: u32,
    tw_deadline: Option<Instant>,
    last_recv: Instant,
    ka_probes: u32,
    ka_deadline: Option<Instant>,
    // congestion
    pub cwnd: usize,
    pub ssthresh: usize,
    dupacks: u32,
    recover: Option<Seq>,
    /// One segment to retransmit at this sequence before new data (fast retransmit, a partial ACK, a hole
    /// SACK shows), without moving `snd_nxt`: what is still in flight is not sent again.
    rtx_once: Option<Seq>,
    /// Retransmitted up to here in this recovery.
    rtx_high: Seq,
    /// The last input segment was discarded, for this reason.
    dropped: Option<DropReason>,
    cc: Box<dyn Congestion>,
    pub error: Option<Errno>,
    /// Set once the connection reached Established (for accept()).
    pub established_once: bool,
    pub retransmits: u64,
    /// ACKs sent because the delayed-ACK timer ran out (Linux's TcpExtDelayedACKs, per connection).
    pub delayed_acks: u64,
    /// A SYN (or SYN-ACK) is due.
    syn_pending: bool,
    /// The largest segment the path takes, once an ICMP error said so.
    path_mss: Option<usize>,
    /// The last ICMP error about this connection while established: reported instead of ETIMEDOUT if
    /// the connection times out (Linux's sk_err_soft).
    soft_error: Option<Errno>,
}

fn now_ms(now: Instant) -> u32 {
    (now.micros / 1000) as u32
}

impl Tcb {
    /// Why the last segment given to `input` was discarded, if it was (taken once).
    pub fn take_dropped(&mut self) -> Option<DropReason> {
        self.dropped.take()
    }

    /// Bytes written and not yet acknowledged.
    pub fn send_queue(&self) -> usize {
        self.send_buf.len()
    }

    /// What `ss -ti` shows of the connection.
    pub fn info(&self) -> TcpInfo {
        TcpInfo {
            state: self.state,
            recv_q: self.rcv_buf.len(),
            send_q: self.send_buf.len(),
            mss: self.mss(),
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            retransmits: self.retransmits,
            sack: self.sack_ok,
            timestamps: self.ts_ok,
            wscale: (self.snd_shift > 0 || self.rcv_shift > 0).then_some((self.snd_shift, self.rcv_shift)),
            bytes_acked: (self.snd_una - self.iss).max(0) as u64,
            bytes_received: if self.state == State::SynSent { 0 } else { ((self.rcv_nxt - self.irs).max(1) - 1) as u64 },
        }
    }

    fn new(local: Endpoint, remote: Endpoint, iss: Seq, cfg: Config, now: Instant) -> Tcb {
        let mss = cfg.mss as usize;
        Tcb {
            state: State::Closed,
            local,
            remote,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: mss,
            max_snd_wnd: mss,
            snd_wl1: Seq(0),
            snd_wl2: iss,
            snd_shift: 0,
            // RFC 9293 3.7.1: without an MSS option, 536 over IPv4 and 1220 over IPv6.
            peer_mss: if remote.0.is_ipv6() { 1220 } else { 536 },
            send_buf: VecDeque::new(),
            fin_queued: false,
            ts_ok: false,
            ts_recent: 0,
            sack_ok: false,
            sacked: Scoreboard::default(),
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_buf: VecDeque::new(),
            rcv_shift: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            fin_at: None,
            fin_received: false,
            rcv_adv: Seq(0),
            ack_pending: 0,
            ack_now: false,
            ack_deadline: None,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            rtx_deadline: None,
            retries: 0,
            rtt_probe: None,
            persist_deadline: None,
            persist_backoff: 0,
            tw_deadline: None,
            last_recv: now,
            ka_probes: 0,
            ka_deadline: None,
            cwnd: 10 * mss,
            ssthresh: usize::MAX,
            dupacks: 0,
            recover: None,
            rtx_once: None,
            rtx_high: iss,
            dropped: None,
            cc: cfg.cc.build(),
            error: None,
            established_once: false,
            retransmits: 0,
            delayed_acks: 0,
            syn_pending: true,
            path_mss: None,
            soft_error: None,
            cfg,
        }
    }

    /// Active open: SYN-SENT.
    pub fn connect(local: (impl Into<IpAddr>, u16), remote: (impl Into<IpAddr>, u16), iss: Seq, cfg: Config, now: Instant) -> Tcb {
        let mut t = Tcb::new((local.0.into(), local.1), (remote.0.into(), remote.1), iss, cfg, now);
        t.state = State::SynSent;
        t.snd_nxt = iss + 1;
        t.snd_max = t.snd_nxt;
        t.rtx_deadline = Some(now + t.rtt.rto());
        t
    }

    /// Passive open: a SYN reached a listener; SYN-RECEIVED.
    pub fn accept_syn(
        local: (impl Into<IpAddr>, u16),
        remote: (impl Into<IpAddr>, u16),
        syn: &Repr,
        iss: Seq,
        cfg: Config,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::new((local.0.into(), local.1), (remote.0.into(), remote.1), iss, cfg, now);
        t.state = State::SynReceived;
        t.take_syn_options(syn);
        t.irs = syn.seq;
        t.rcv_nxt = syn.seq + 1;
        t.snd_nxt = iss + 1;
        t.snd_max = t.snd_nxt;
        t.snd_wnd = syn.window as usize; // the window in a SYN is never scaled
        t.snd_wl1 = syn.seq;
        t.rtx_deadline = Some(now + t.rtt.rto());
        t
    }

    fn take_syn_options(&mut self, syn: &Repr) {
        self.peer_mss = syn.mss.map(|m| m as usize).unwrap_or(536).clamp(64, 65495);
        if let Some(ws) = syn.wscale {
            self.snd_shift = ws.min(14);
            self.rcv_shift = self.cfg.wscale;
        }
        self.sack_ok = self.cfg.sack && syn.sack_permitted;
        if let Some((v, _)) = syn.timestamp.filter(|_| self.cfg.timestamps) {
            self.ts_ok = true;
            self.ts_recent = v;
        }
        self.cwnd = 10 * self.mss();
    }

    /// The effective MSS (what fits in a segment with our options).
    pub fn mss(&self) -> usize {
        let opts = if self.ts_ok { 12 } else { 0 };
        let path = self.path_mss.unwrap_or(usize::MAX);
        (self.peer_mss.min(self.cfg.mss as usize).min(path)).saturating_sub(opts).max(64)
    }

    /// An ICMP error (destination unreachable, time exceeded, parameter problem) about one of our
    /// segments (RFC 1122 4.2.3.9, as Linux handles it): while the handshake runs the connection ends with
    /// that error at once; afterwards it is kept and reported only if the connection times out.
    pub fn icmp_error(&mut self, e: Errno) {
        match self.state {
            State::SynSent | State::SynReceived => {
                self.error = Some(e);
                self.state = State::Closed;
                self.rtx_deadline = None;
            }
            _ => self.soft_error = Some(e),
        }
    }

    /// The path MTU fell (ICMP fragmentation needed, ICMPv6 Packet Too Big, RFC 8201): segments are cut
    /// to `mss` from now on, and what is in flight, sent too big, goes again at once at the new size
    /// (without counting as a congestion loss, as Linux's tcp_simple_retransmit).
    pub fn path_mtu_reduced(&mut self, mss: usize) {
        if self.path_mss.is_some_and(|m| m <= mss) || mss >= self.peer_mss.min(self.cfg.mss as usize) {
            return;
        }
        self.path_mss = Some(mss);
        self.cfg.max_gso = self.cfg.max_gso.min(mss);
        if self.snd_nxt != self.snd_una && !matches!(self.state, State::SynSent | State::SynReceived) {
            self.snd_nxt = self.snd_una;
            self.retransmits += 1;
        }
    }

    fn flight(&self) -> usize {
        (self.snd_nxt - self.snd_una).max(0) as usize
    }

    fn rcv_free(&self) -> usize {
        self.cfg.rcv_buf.saturating_sub(self.rcv_buf.len() + self.ooo_bytes)
    }

    /// The window to advertise, avoiding silly windows: the right edge moves only in steps of at least
    /// min(MSS, buffer / 2), and never backwards.
    fn rcv_window(&mut self) -> usize {
        let free = self.rcv_free();
        let edge = self.rcv_nxt + free;
        let step = (self.cfg.mss as usize).min(self.cfg.rcv_buf / 2);
        if edge - self.rcv_adv >= step as i32 || self.rcv_adv < self.rcv_nxt {
            self.rcv_adv = edge;
        }
        (self.rcv_adv - self.rcv_nxt).max(0) as usize
    }

    fn header(&mut self, flags: u8, seq: Seq, now: Instant) -> Repr {
        let wnd = self.rcv_window();
        let syn = flags & SYN != 0;
        let window = if syn { wnd.min(65535) } else { (wnd >> self.rcv_shift).min(65535) } as u16;
        let mut r = Repr { src_port: self.local.1, dst_port: self.remote.1, seq, ack: self.rcv_nxt, flags, window, ..Default::default() };
        if flags & ACK == 0 {
            r.ack = Seq(0);
        }
        if syn {
            r.mss = Some(self.cfg.mss);
            // On a SYN-ACK, offer only what the peer offered.
            let synack = flags & ACK != 0;
            if !synack || self.rcv_shift != 0 || self.snd_shift != 0 {
                r.wscale = Some(self.cfg.wscale);
            }
            r.sack_permitted = self.cfg.sack && (!synack || self.sack_ok);
            if self.cfg.timestamps && (!synack || self.ts_ok) {
                r.timestamp = Some((now_ms(now), self.ts_recent));
            }
        } else {
            if self.ts_ok {
                r.timestamp = Some((now_ms(now), self.ts_recent));
            }
            if self.sack_ok && !self.ooo.is_empty() {
                r.sack = sack::blocks(&self.ooo, if self.ts_ok { 3 } else { 4 });
            }
        }
        r
    }

    // ---- user side ----

    /// Queues data; returns how much fit (EAGAIN when none did, EPIPE after close/shutdown).
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Errno> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::Established | State::CloseWait | State::SynSent | State::SynReceived => {}
            _ => return Err(Errno(libc::EPIPE)),
        }
        if self.fin_queued {
            return Err(Errno(libc::EPIPE));
        }
        let room = self.cfg.snd_buf.saturating_sub(self.send_buf.len());
        if room == 0 {
            return Err(Errno(libc::EAGAIN));
        }
        let n = room.min(data.len());
        self.send_buf.extend(&data[..n]);
        Ok(n)
    }

    /// Reads received data; Ok(0) at end of stream, EAGAIN when nothing is there yet.
    pub fn recv(&mut self, out: &mut [u8]) -> Result<usize, Errno> {
        if !self.rcv_buf.is_empty() {
            let n = out.len().min(self.rcv_buf.len());
            let (a, b) = self.rcv_buf.as_slices();
            let k = a.len().min(n);
            out[..k].copy_from_slice(&a[..k]);
            out[k..n].copy_from_slice(&b[..n - k]);
            self.rcv_buf.drain(..n);
            // Reopening a window that had closed: tell the peer.
            if self.rcv_free() >= (self.cfg.mss as usize).min(self.cfg.rcv_buf / 2) && self.rcv_adv - self.rcv_nxt < self.cfg.mss as i32 {
                self.ack_now = true;
            }
            return Ok(n);
        }
        if self.fin_received {
            return Ok(0);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::Closed | State::TimeWait | State::CloseWait | State::LastAck | State::Closing => Ok(0),
            _ => Err(Errno(libc::EAGAIN)),
        }
    }

    pub fn recv_available(&self) -> usize {
        self.rcv_buf.len()
    }
    pub fn send_space(&self) -> usize {
        self.cfg.snd_buf.saturating_sub(self.send_buf.len())
    }
    pub fn unsent_or_unacked(&self) -> usize {
        self.send_buf.len()
    }
    pub fn set_nodelay(&mut self, on: bool) {
        self.cfg.nodelay = on;
    }
    pub fn set_keepalive(&mut self, ka: Option<(Duration, Duration, u32)>) {
        self.cfg.keepalive = ka;
    }
    pub fn set_max_gso(&mut self, n: usize) {
        self.cfg.max_gso = n;
    }

    /// Half-close: FIN after the queued data.
    pub fn shutdown(&mut self) {
        match self.state {
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            // RFC 9293 3.10.4: with the handshake under way, the FIN follows once established.
            State::SynReceived | State::SynSent => self.fin_queued = true,
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            State::Listen => self.state = State::Closed,
            _ => {}
        }
    }

    fn established(&mut self) {
        self.state = if self.fin_queued { State::FinWait1 } else { State::Established };
        self.established_once = true;
    }

    /// Abort: the peer gets a RST.
    pub fn abort(&mut self, now: Instant) -> Option<Out> {
        let synced = !matches!(self.state, State::Closed | State::Listen | State::SynSent | State::TimeWait);
        self.state = State::Closed;
        if synced {
            let r = self.header(RST | ACK, self.snd_nxt, now);
            return Some(Out { repr: r, payload: Payload::empty(), gso: None });
        }
        None
    }

    // ---- input ----

    fn acceptable(&self, seq: Seq, len: usize) -> bool {
        let wnd = (self.rcv_adv - self.rcv_nxt).max(0) as usize;
        let wnd = wnd.max(self.rcv_free().min(1));
        match (len, wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => seq >= self.rcv_nxt && seq < self.rcv_nxt + wnd,
            (_, 0) => false,
            (_, _) => {
                let end = seq + (len - 1);
                (seq >= self.rcv_nxt && seq < self.rcv_nxt + wnd) || (end >= self.rcv_nxt && end < self.rcv_nxt + wnd)
            }
        }
    }

    /// A segment for this connection. Returns a RST to send, if the segment calls for one.
    pub fn input(&mut self, seg: &Repr, payload: &[u8], now: Instant) -> Option<Out> {
        self.last_recv = now;
        self.ka_probes = 0;
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent => return self.input_syn_sent(seg, now),
            _ => {}
        }
        if self.state == State::SynReceived && seg.flags & SYN != 0 && seg.seq == self.irs && seg.flags & RST == 0 {
            // The peer's SYN again (it lost our SYN-ACK), or its SYN-ACK in a simultaneous open.
            if seg.flags & ACK != 0 && seg.ack > self.snd_una && seg.ack <= self.snd_max {
                self.snd_una = seg.ack;
                self.snd_wnd = seg.window as usize;
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
                self.rtx_deadline = None;
                self.retries = 0;
                self.established();
                self.ack_now = true;
            } else {
                self.syn_pending = true;
            }
            return None;
        }
        let len = payload.len() + (seg.flags & SYN != 0) as usize + (seg.flags & FIN != 0) as usize;
        // PAWS (RFC 7323): an old timestamp marks an old duplicate.
        if self.ts_ok && seg.flags & RST == 0 {
            if let Some((v, _)) = seg.timestamp {
                if (v.wrapping_sub(self.ts_recent) as i32) < 0 && len > 0 {
                    self.ack_now = true;
                    self.dropped = Some(DropReason::TcpRfc7323Paws);
                    return None;
                }
            }
        }
        if !self.acceptable(seg.seq, len) {
            if seg.flags & RST == 0 {
                self.ack_now = true;
            }
            self.dropped = Some(DropReason::TcpInvalidSequence);
            return None;
        }
        if seg.flags & RST != 0 {
            // RFC 5961: only an exact match resets; otherwise challenge.
            if seg.seq == self.rcv_nxt {
                self.error = Some(if self.state == State::SynReceived && !self.established_once {
                    Errno(libc::ECONNREFUSED)
                } else {
                    Errno(libc::ECONNRESET)
                });
                self.state = State::Closed;
            } else {
                self.ack_now = true;
                self.dropped = Some(DropReason::TcpReset);
            }
            return None;
        }
        if seg.flags & SYN != 0 {
            self.ack_now = true; // challenge ACK (RFC 5961)
            self.dropped = Some(DropReason::TcpInvalidSyn);
            return None;
        }
        if seg.flags & ACK == 0 {
            self.dropped = Some(DropReason::TcpFlags);
            return None;
        }
        if let Some((v, _)) = seg.timestamp.filter(|_| self.ts_ok) {
            if seg.seq <= self.rcv_nxt {
                self.ts_recent = v;
            }
        }
        if self.state == State::SynReceived {
            if seg.ack > self.snd_una && seg.ack <= self.snd_max {
                self.established();
                self.snd_wnd = (seg.window as usize) << self.snd_shift;
                self.max_snd_wnd = self.snd_wnd.max(self.max_snd_wnd);
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
            } else {
                let r = Repr { src_port: self.local.1, dst_port: self.remote.1, seq: seg.ack, flags: RST, ..Default::default() };
                return Some(Out { repr: r, payload: Payload::empty(), gso: None });
            }
        }
        self.process_ack(seg, payload.is_empty(), now);
        if self.state == State::Closed {
            return None;
        }
        // Data.
        if !payload.is_empty() && matches!(self.state, State::Established | State::FinWait1 | State::FinWait2) {
            self.take_data(seg.seq, payload, seg.flags & PSH != 0, now);
        }
        if seg.flags & FIN != 0 {
            self.fin_at = Some(seg.seq + payload.len());
        }
        if let Some(f) = self.fin_at {
            if f == self.rcv_nxt && !self.fin_received {
                self.fin_received = true;
                self.rcv_nxt += 1;
                self.ack_now = true;
                self.state = match self.state {
                    State::Established | State::SynReceived => State::CloseWait,
                    State::FinWait1 => State::Closing,
                    State::FinWait2 => {
                        self.tw_deadline = Some(now + self.cfg.time_wait);
                        State::TimeWait
                    }
                    s => s,
                };
            }
        }
        None
    }

    fn input_syn_sent(&mut self, seg: &Repr, now: Instant) -> Option<Out> {
        let ack_ok = seg.flags & ACK != 0 && seg.ack > self.iss && seg.ack <= self.snd_max;
        if seg.flags & ACK != 0 && !ack_ok {
            if seg.flags & RST != 0 {
                return None;
            }
            let r = Repr { src_port: self.local.1, dst_port: self.remote.1, seq: seg.ack, flags: RST, ..Default::default() };
            return Some(Out { repr: r, payload: Payload::empty(), gso: None });
        }
        if seg.flags & RST != 0 {
            if ack_ok {
                self.error = Some(Errno(libc::ECONNREFUSED));
                self.state = State::Closed;
            }
            return None;
        }
        if seg.flags & SYN == 0 {
            return None;
        }
        self.take_syn_options(seg);
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.rcv_adv = self.rcv_nxt;
        if ack_ok {
            if let Some((_, e)) = seg.timestamp.filter(|_| self.ts_ok) {
                self.rtt.sample(Duration::from_millis(now_ms(now).wrapping_sub(e) as u64));
            }
            self.snd_una = seg.ack;
            self.snd_wnd = (seg.window as usize) << self.snd_shift;
            self.max_snd_wnd = self.snd_wnd.max(1);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.established();
            self.retries = 0;
            self.rtx_deadline = None;
            self.ack_now = true;
        } else {
            // Simultaneous open: answer with SYN-ACK.
            self.state = State::SynReceived;
            self.syn_pending = true;
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
        None
    }

    fn process_ack(&mut self, seg: &Repr, pure: bool, now: Instant) {
        let ack = seg.ack;
        if ack > self.snd_max {
            self.ack_now = true;
            return;
        }
        // Window update (RFC 9293 3.10.7.4).
        let wnd = (seg.window as usize) << self.snd_shift;
        let window_changed = wnd != self.snd_wnd;
        if self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack) {
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if wnd > 0 {
                self.persist_deadline = None;
                self.persist_backoff = 0;
            } else if self.send_buf.len() > self.flight() && self.persist_deadline.is_none() {
                // The window closed with data waiting: probe it after an RTO.
                self.persist_deadline = Some(now + self.rtt.rto());
            }
        }
        // SACK scoreboard.
        if self.sack_ok {
            self.sacked.update(&seg.sack, self.snd_una, self.snd_max, ack);
        }
        if ack > self.snd_una {
            let acked = (ack - self.snd_una) as usize;
            // Our SYN and FIN take a sequence number each but no buffer byte.
            let data_acked = acked.min(self.send_buf.len());
            self.send_buf.drain(..data_acked);
            if let Some((_, e)) = seg.timestamp.filter(|_| self.ts_ok) {
                if e != 0 {
                    self.rtt.sample(Duration::from_millis(now_ms(now).wrapping_sub(e) as u64));
                }
            } else if let Some((s, t)) = self.rtt_probe {
                if ack > s {
                    self.rtt.sample(now - t);
                    self.rtt_probe = None;
                }
            }
            self.snd_una = ack;
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            self.retries = 0;
            self.on_ack_cc(acked, ack, now);
            self.rtx_deadline = if self.snd_una != self.snd_max { Some(now + self.rtt.rto()) } else { None };
            if self.fin_queued && self.send_buf.is_empty() && self.snd_una == self.snd_max {
                // Our FIN is acknowledged.
                self.state = match self.state {
                    State::FinWait1 => State::FinWait2,
                    State::Closing => {
                        self.tw_deadline = Some(now + self.cfg.time_wait);
                        State::TimeWait
                    }
                    State::LastAck => State::Closed,
                    s => s,
                };
            }
        } else if ack == self.snd_una && pure && !window_changed && self.snd_una != self.snd_max && seg.flags & (SYN | FIN) == 0 {
            self.dupacks += 1;
            self.on_dupack();
        }
    }

    fn on_ack_cc(&mut self, acked: usize, ack: Seq, now: Instant) {
        let mss = self.mss();
        if let Some(rec) = self.recover {
            if ack >= rec {
                // Full acknowledgement: leave recovery (RFC 6582).
                self.cwnd = self.ssthresh.min(self.flight().max(mss) + mss);
                self.recover = None;
                self.dupacks = 0;
            } else {
                // Partial: retransmit the next hole (unless SACK recovery already did), deflate.
                if !(self.sack_ok && self.rtx_high > self.snd_una) {
                    self.rtx_once = Some(self.snd_una);
                }
                self.cwnd = self.cwnd.saturating_sub(acked) + mss;
            }
            return;
        }
        self.dupacks = 0;
        if self.cwnd < self.ssthresh {
            self.cwnd += acked.min(mss); // slow start (RFC 5681, ABC with L = 1 MSS)
        } else {
            self.cwnd = self.cc.avoid(self.cwnd, mss, now);
        }
    }

    /// A loss: the algorithm sets the new slow-start threshold.
    fn enter_loss(&mut self) {
        let (cwnd, flight, mss) = (self.cwnd, self.flight(), self.mss());
        self.ssthresh = self.cc.on_loss(cwnd, flight, mss);
    }

    fn on_dupack(&mut self) {
        let mss = self.mss();
        if self.recover.is_some() {
            self.cwnd += mss; // inflation during recovery
                              // With SACK, a further hole below what the peer holds goes again (RFC 6675's NextSeg, rule 1).
            if self.sack_ok && self.rtx_once.is_none() {
                let mut x = self.rtx_high.max(self.snd_una);
                while let Some(e) = self.sacked.covering(x) {
                    x = e;
                }
                if x < self.snd_max && self.sacked.next_above(x).is_some() {
                    self.rtx_once = Some(x);
                }
            }
            return;
        }
        if self.dupacks == 3 {
            // Fast retransmit, NewReno recovery: the first unacknowledged segment goes again, nothing else.
            self.enter_loss();
            self.cwnd = self.ssthresh + 3 * mss;
            self.recover = Some(self.snd_max);
            self.rtx_high = self.snd_una;
            self.rtx_once = Some(self.snd_una);
        }
    }

    fn take_data(&mut self, seq: Seq, payload: &[u8], psh: bool, now: Instant) {
        // Trim what we already have.
        let skip = (self.rcv_nxt - seq).max(0) as usize;
        if skip >= payload.len() {
            self.ack_now = true;
            return;
        }
        let data = &payload[skip..];
        let seq = seq + skip;
        if seq == self.rcv_nxt {
            let room = self.cfg.rcv_buf.saturating_sub(self.rcv_buf.len());
            let n = data.len().min(room);
            self.rcv_buf.extend(&data[..n]);
            self.rcv_nxt += n;
            // Pull in what was waiting out of order.
            while let Some((&s, _)) = self.ooo.first_key_value() {
                let s = Seq(s);
                if s > self.rcv_nxt {
                    break;
                }
                let d = self.ooo.remove(&s.0).unwrap();
                self.ooo_bytes -= d.len();
                let skip = (self.rcv_nxt - s) as usize;
                if skip < d.len() {
                    self.rcv_buf.extend(&d[skip..]);
                    self.rcv_nxt += d.len() - skip;
                }
                self.ack_now = true; // a hole was filled
            }
            if !self.ooo.is_empty() {
                // Part of a gap filled: acknowledged at once (RFC 5681 4.2), so the sender's recovery goes on.
                self.ack_now = true;
            }
            // Counted in segments of the MSS: a segment that GRO merged from several counts as all of them,
            // or a burst that filled the peer's window (64 KiB without window scaling) would wait for the
            // delayed-ACK timer every time.
            self.ack_pending += n.div_ceil(self.mss().max(1)).max(1) as u32;
            // Every second full segment is acknowledged at once (RFC 9293 3.8.6.3); PSH does not hurry it.
            let _ = psh;
            if self.ack_pending >= 2 {
                self.ack_now = true;
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + self.cfg.delayed_ack);
            }
        } else {
            // Out of order: keep it (bounded) and send a duplicate ACK with SACK at once.
            if self.ooo_bytes + data.len() <= MAX_OOO_BYTES.min(self.cfg.rcv_buf) && !self.ooo.contains_key(&seq.0) {
                self.ooo_bytes += data.len();
                self.ooo.insert(seq.0, data.to_vec());
            }
            self.ack_now = true;
        }
    }

    // ---- output ----

    /// Segments to send now.
    pub fn output(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        match self.state {
            State::Closed | State::Listen | State::TimeWait => {
                if self.ack_now && self.state == State::TimeWait {
                    self.ack_now = false;
                    let r = self.header(ACK, self.snd_nxt, now);
                    out.push(Out { repr: r, payload: Payload::empty(), gso: None });
                }
                return out;
            }
            State::SynSent | State::SynReceived => {
                if self.syn_pending {
                    let flags = if self.state == State::SynSent { SYN } else { SYN | ACK };
                    let r = self.header(flags, self.iss, now);
                    out.push(Out { repr: r, payload: Payload::empty(), gso: None });
                    self.syn_pending = false;
                    self.ack_now = false;
                    if self.rtx_deadline.is_none() {
                        self.rtx_deadline = Some(now + self.rtt.rto());
                    }
                }
                return out;
            }
            _ => {}
        }
        let mss = self.mss();
        if let Some(at) = self.rtx_once.take() {
            self.retransmit_one(at, mss, now, &mut out);
        }
        loop {
            let sent_off = (self.snd_nxt - self.snd_una).max(0) as usize;
            let unsent = self.send_buf.len().saturating_sub(sent_off);
            let wnd = self.snd_wnd.min(self.cwnd);
            let room = wnd.saturating_sub(self.flight());
            // Our FIN is outstanding only in these states: once acknowledged (FIN-WAIT-2, TIME-WAIT) it is
            // never due again.
            let fin_state = matches!(self.state, State::FinWait1 | State::Closing | State::LastAck);
            let fin_due =
                fin_state && self.fin_queued && unsent == 0 && self.snd_max == (self.snd_una + self.send_buf.len()) && !self.fin_sent();
            let fin_retx = self.fin_queued && unsent == 0 && self.fin_sent() && self.snd_nxt != self.snd_max;
            if unsent == 0 && !fin_due && !fin_retx {
                break;
            }
            // In recovery with SACK: skip data the peer already has.
            if self.recover.is_some() && self.sack_ok {
                if let Some(b) = self.sacked.covering(self.snd_nxt) {
                    self.snd_nxt = b;
                    continue;
                }
            }
            // A segment's payload is the MSS less its options; only a super-packet (`max_gso` of two
            // segments or more, cut by the device) is larger.
            let max = if self.cfg.max_gso >= 2 * mss { self.cfg.max_gso } else { mss };
            let mut len = unsent.min(room).min(max);
            if self.sack_ok && self.recover.is_some() {
                // Stop at the next SACKed block.
                if let Some(a) = self.sacked.next_above(self.snd_nxt) {
                    len = len.min((a - self.snd_nxt) as usize);
                }
            }
            if unsent > 0 && len == 0 {
                // Zero window with data waiting: the persist timer probes.
                if self.snd_wnd == 0 && self.flight() == 0 && self.persist_deadline.is_none() {
                    self.persist_deadline = Some(now + self.rtt.rto());
                }
                break;
            }
            if unsent > 0 && len < mss && len < unsent.min(max) {
                // Window-limited to less than a segment: sender-side silly window avoidance.
                if len < self.max_snd_wnd / 2 {
                    break;
                }
            }
            if unsent > 0 && len < mss && self.flight() > 0 && !self.cfg.nodelay && !self.fin_queued {
                break; // Nagle: one small segment in flight at a time
            }
            let payload = Payload::from_deque(&self.send_buf, sent_off, len);
            let mut flags = ACK;
            let all_out = sent_off + len == self.send_buf.len();
            if all_out {
                flags |= PSH;
            }
            if self.fin_queued && all_out && (fin_due || fin_retx || len > 0) {
                flags |= FIN;
            }
            if len == 0 && flags & FIN == 0 {
                break;
            }
            let seq = self.snd_nxt;
            let retransmit = seq < self.snd_max;
            let r = self.header(flags, seq, now);
            let gso = (len > mss).then_some(mss as u16);
            out.push(Out { repr: r, payload, gso });
            self.snd_nxt = seq + (len + (flags & FIN != 0) as usize);
            self.snd_max = self.snd_max.max(self.snd_nxt);
            if !retransmit && self.rtt_probe.is_none() && !self.ts_ok {
                self.rtt_probe = Some((seq, now));
            }
            if self.rtx_deadline.is_none() {
                self.rtx_deadline = Some(now + self.rtt.rto());
            }
            self.ack_now = false;
            self.ack_pending = 0;
            self.ack_deadline = None;
            if flags & FIN != 0 {
                break;
            }
        }
        if self.ack_now || self.ack_deadline.is_some_and(|d| now >= d) {
            if !self.ack_now {
                self.delayed_acks += 1;
            }
            let r = self.header(ACK, self.snd_nxt.max(self.snd_una), now);
            out.push(Out { repr: r, payload: Payload::empty(), gso: None });
            self.ack_now = false;
            self.ack_pending = 0;
            self.ack_deadline = None;
        }
        out
    }

    /// Sends the segment at `at` again (up to one MSS, short of a SACKed block), leaving `snd_nxt` where
    /// it is. A FIN alone to resend falls back to going back to it.
    fn retransmit_one(&mut self, at: Seq, mss: usize, now: Instant, out: &mut Vec<Out>) {
        if at < self.snd_una || at >= self.snd_max {
            return;
        }
        let off = (at - self.snd_una).max(0) as usize;
        let mut len = mss.min(self.send_buf.len().saturating_sub(off)).min((self.snd_max - at).max(0) as usize);
        if self.sack_ok {
            if let Some(a) = self.sacked.next_above(at) {
                len = len.min((a - at).max(0) as usize);
            }
        }
        if len == 0 {
            // Only the FIN is missing.
            self.snd_nxt = at;
            self.retransmits += 1;
            return;
        }
        let payload = Payload::from_deque(&self.send_buf, off, len);
        let r = self.header(ACK, at, now);
        out.push(Out { repr: r, payload, gso: None });
        self.retransmits += 1;
        self.rtx_high = self.rtx_high.max(at + len);
        if self.rtx_deadline.is_none() {
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
        self.ack_now = false;
        self.ack_pending = 0;
        self.ack_deadline = None;
    }

    fn fin_sent(&self) -> bool {
        self.fin_queued && self.snd_max == (self.snd_una + (self.send_buf.len() + 1))
    }

    // ---- timers ----

    pub fn poll_at(&self) -> Option<Instant> {
        let ka = match self.cfg.keepalive {
            Some((idle, _, _)) if self.state == State::Established => self.ka_deadline.or(Some(self.last_recv + idle)),
            _ => None,
        };
        [self.rtx_deadline, self.ack_deadline, self.persist_deadline, self.tw_deadline, ka].into_iter().flatten().min()
    }

    /// Runs expired timers; returns segments they produce (probes, RST on giving up).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        if self.tw_deadline.is_some_and(|d| now >= d) {
            self.tw_deadline = None;
            self.state = State::Closed;
            return out;
        }
        if self.rtx_deadline.is_some_and(|d| now >= d) {
            self.rtx_deadline = None;
            match self.state {
                State::SynSent | State::SynReceived => {
                    self.retries += 1;
                    if self.retries > self.cfg.syn_retries {
                        self.error = Some(self.soft_error.unwrap_or(Errno(libc::ETIMEDOUT)));
                        self.state = State::Closed;
                        return out;
                    }
                    self.rtt.backoff();
                    self.syn_pending = true;
                    self.rtx_deadline = Some(now + self.rtt.rto());
                }
                State::Closed | State::Listen | State::TimeWait => {}
                _ if self.snd_una != self.snd_max => {
                    self.retries += 1;
                    if self.retries > self.cfg.max_retries {
                        self.error = Some(self.soft_error.unwrap_or(Errno(libc::ETIMEDOUT)));
                        if let Some(r) = self.abort(now) {
                            out.push(r);
                        }
                        return out;
                    }
                    // RFC 5681 3.1 / RFC 6298 5.5: loss window, back off, go back to the first unacked byte.
                    self.enter_loss();
                    self.cwnd = self.mss();
                    self.recover = None;
                    self.dupacks = 0;
                    self.sacked.clear();
                    self.snd_nxt = self.snd_una;
                    self.rtx_once = None;
                    self.rtx_high = self.snd_una;
                    self.rtt_probe = None;
                    self.retransmits += 1;
                    self.rtt.backoff();
                    self.rtx_deadline = Some(now + self.rtt.rto());
                }
                _ => {}
            }
        }
        if self.persist_deadline.is_some_and(|d| now >= d) {
            self.persist_deadline = None;
            let off = (self.snd_nxt - self.snd_una).max(0) as usize;
            if self.snd_wnd == 0 && off < self.send_buf.len() {
                // Zero-window probe: one byte beyond the window.
                let byte = Payload::from_deque(&self.send_buf, off, 1);
                let r = self.header(ACK, self.snd_nxt, now);
                out.push(Out { repr: r, payload: byte, gso: None });
                self.persist_backoff = (self.persist_backoff + 1).min(10);
                self.persist_deadline = Some(now + (self.rtt.rto() * (1 << self.persist_backoff)).min(self.cfg.max_rto));
            }
        }
        if let Some((idle, intvl, probes)) = self.cfg.keepalive {
            if self.state == State::Established && self.send_buf.is_empty() {
                let due = self.ka_deadline.unwrap_or(self.last_recv + idle);
                if now >= due {
                    if self.ka_probes >= probes {
                        self.error = Some(Errno(libc::ETIMEDOUT));
                        if let Some(r) = self.abort(now) {
                            out.push(r);
                        }
                        return out;
                    }
                    self.ka_probes += 1;
                    // A keepalive: an old sequence number so the peer answers with an ACK.
                    let r = self.header(ACK, Seq(self.snd_una.0.wrapping_sub(1)), now);
                    out.push(Out { repr: r, payload: Payload::empty(), gso: None });
                    self.ka_deadline = Some(now + intvl);
                } else if self.ka_deadline.is_some() && now - self.last_recv < idle {
                    self.ka_deadline = None;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod deque_test {
    use super::Payload;
    use std::collections::VecDeque;

    #[test]
    fn slices_across_the_wrap() {
        let mut q: VecDeque<u8> = VecDeque::with_capacity(8);
        q.extend(0..8u8);
        q.drain(..5);
        q.extend(8..13u8); // wraps: [5, 6, 7] then [8 .. 12]
        assert!(!q.as_slices().1.is_empty());
        let all: Vec<u8> = q.iter().copied().collect();
        for at in 0..all.len() {
            for len in 0..=all.len() - at {
                let p = Payload::from_deque(&q, at, len);
                assert_eq!(&p[..], &all[at..at + len], "at {at} len {len}");
                assert_eq!(p.clone().into_packet().headroom(), crate::skb::DEFAULT_HEADROOM, "headers go in front");
            }
        }
    }
}
