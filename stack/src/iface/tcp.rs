//! TCP: the socket table (listeners with their accept queues, connections) and the glue between
//! segments on the wire and [`crate::tcp::Tcb`].

use super::*;
use crate::tcp::Endpoint;
use crate::wire::ipv4;
use std::net::IpAddr;

/// An address's bytes, for hashing.
fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// An address as IPv6 (IPv4 as IPv4-mapped).
fn six(a: IpAddr) -> crate::wire::ipv6::Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

pub(super) enum TcpSock {
    Listener {
        port: u16,
        backlog: usize,
        /// IPV6_V6ONLY: IPv4 peers are refused (a listener takes both families otherwise).
        v6only: bool,
        accept: VecDeque<SocketHandle>,
        embryos: Vec<SocketHandle>,
    },
    /// A connection and, until accept() can take it, the listener it came from.
    Conn(Box<crate::tcp::Tcb>, Option<SocketHandle>),
}

/// Addresses, ports, sequence number, flags and payload length of an IPv4/TCP segment.
pub(super) type SegmentKey = ([u8; 8], [u8; 4], u32, u8, usize);

/// What makes an IPv4/TCP segment a copy of another: addresses, ports, sequence number, flags and payload
/// length (the timestamp option and the ACK may differ between a segment and its retransmission).
pub(super) fn tcp_segment_key(ip: &[u8]) -> Option<SegmentKey> {
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip.first()? & 0xF) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let tcp = ip.get(ihl..total)?;
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let addrs: [u8; 8] = ip.get(12..20)?.try_into().ok()?;
    let ports: [u8; 4] = tcp.get(0..4)?.try_into().ok()?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some((addrs, ports, seq, *tcp.get(13)?, tcp.len().checked_sub(doff)?))
}

impl Stack {
    /// The device's offloads, unless netfilter may rewrite what the stack sends (NAT then needs whole
    /// checksums, not partial ones).
    pub(super) fn features(&self) -> crate::dev::Features {
        let f = self.dev.features();
        if self.nf.is_some() || self.host_routed {
            return crate::dev::Features { tso: false, tso6: false, tx_csum: false, ..f };
        }
        if self.qdisc.shapes() {
            // A shaper meters frames as they will be on the wire, not 64 KiB super-packets.
            return crate::dev::Features { tso: false, ..f };
        }
        f
    }

    /// RFC 6528: ISS = M + F(local, remote, secret), M a clock ticking every 4 microseconds. The secret is
    /// random per stack, so a restarted program does not start where the last one did.
    pub(super) fn new_iss(&self, local: Endpoint, remote: Endpoint, now: Instant) -> crate::wire::tcp::Seq {
        let f = tuple_hash(self.socks.secret, &[&octets(local.0), &local.1.to_be_bytes(), &octets(remote.0), &remote.1.to_be_bytes()]);
        crate::wire::tcp::Seq(((now.micros / 4) as u32).wrapping_add(f as u32))
    }

    /// Fixes the secret behind sequence numbers and ephemeral ports (simulations that want repeatable runs).
    pub fn set_secret(&mut self, secret: u64) {
        self.socks.secret = secret;
    }

    /// RFC 6056 algorithm 3: a port from 32768-60999 at an offset keyed by the destination, stepping past
    /// ports in use, so that successive programs (and destinations) do not reuse the same 4-tuple.
    pub(super) fn ephemeral_tcp_port(&mut self, dst: IpAddr, dport: u16) -> Option<u16> {
        const LOW: u32 = 32768;
        const COUNT: u32 = 61000 - 32768;
        let offset = tuple_hash(self.socks.secret, &[&self.cfg.addr, &octets(dst), &dport.to_be_bytes()]) as u32;
        for i in 0..COUNT {
            let p = (LOW + offset.wrapping_add(u32::from(self.socks.port_counter)).wrapping_add(i) % COUNT) as u16;
            if !self.tcp_port_used(p) {
                self.socks.port_counter = self.socks.port_counter.wrapping_add(1);
                return Some(p);
            }
        }
        None
    }

    /// Settings for a new connection to `peer`: the MSS follows the MTU toward it (the device's, or `lo`'s
    /// for 127.0.0.0/8 and ::1) and any path MTU learned for the peer (ICMP fragmentation needed, Packet
    /// Too Big), capped by the configured MSS. Over IPv6 the device's offloads are not used:
    /// segments leave whole and checksummed.
    pub(super) fn conn_cfg(&self, peer: IpAddr) -> crate::tcp::Config {
        let mut c = self.tcp_cfg.clone();
        let f = self.features();
        let mss = match peer {
            IpAddr::V4(p) => self.mtu_to(p.octets()).saturating_sub(40).clamp(536, 65495),
            IpAddr::V6(p) => self.ipv6_mtu(&p.octets()).unwrap_or(1280).saturating_sub(60).clamp(1220, 65475),
        } as u16;
        c.mss = c.mss.min(mss);
        let tso = if peer.is_ipv4() { f.tso } else { f.tso6 };
        c.max_gso = if tso && f.tx_csum { 65000 } else { c.mss as usize };
        c
    }

    /// Sends a segment: its header is written in front of the payload, in the buffer the payload was
    /// copied into out of the send buffer, and the IP header in front of that.
    pub(super) fn tcp_emit(&mut self, local: IpAddr, remote: IpAddr, o: crate::tcp::Out, now: Instant) {
        self.stats.tcp_out_segs += 1;
        let f = self.features();
        let (tso, partial) = if local.is_ipv4() { (f.tso, f.tx_csum) } else { (f.tso6, f.tso6 && f.tx_csum) };
        let gso = o.gso.filter(|_| tso);
        let mut p = o.payload.into_packet();
        p.push(o.repr.header_len());
        o.repr.emit_in_place(p.data_mut(), local, remote, !partial);
        match (local, remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                let _ = self.ip_send_packet(l.octets(), r.octets(), ipv4::PROTO_TCP, p, true, Some((partial, gso)), now);
            }
            (l, r) => {
                let _ = self.ip6_send_packet(Some(six(l)), six(r), crate::wire::ipv6::NH_TCP, p, partial, gso, now);
            }
        }
    }

    pub(super) fn tcp_flush(&mut self, h: SocketHandle, now: Instant) {
        let Some(Some(TcpSock::Conn(t, _))) = self.socks.tcp.get_mut(h) else { return };
        let mut outs = t.on_timer(now);
        outs.extend(t.output(now));
        let (l, r) = (t.local.0, t.remote.0);
        for o in outs {
            self.tcp_emit(l, r, o, now);
        }
        self.tcp_observe(h, now);
    }

    pub(super) fn tcp_input(&mut self, src: IpAddr, dst: IpAddr, data: &[u8], verified: bool, now: Instant) {
        let Some((seg, payload)) =
            self.count_parse_error(crate::wire::tcp::Repr::parse(data, src, dst, verified), crate::monitor::DropReason::TcpCsum)
        else {
            return;
        };
        use crate::wire::tcp::{ACK, RST, SYN};
        self.stats.tcp_in_segs += 1;
        let conn = self.socks.tcp.iter().position(|s| matches!(s, Some(TcpSock::Conn(t, _)) if t.local == (dst, seg.dst_port) && t.remote == (src, seg.src_port) && t.state != crate::tcp::State::Closed));
        if let Some(h) = conn {
            let Some(Some(TcpSock::Conn(t, _))) = self.socks.tcp.get_mut(h) else { unreachable!() };
            let rst = t.input(&seg, payload, now);
            let dropped = t.take_dropped();
            let (l, r) = (t.local.0, t.remote.0);
            if let Some(reason) = dropped {
                self.drop_reason(reason, 1);
            }
            if let Some(o) = rst {
                self.tcp_emit(l, r, o, now);
            }
            self.tcp_promote(h);
            self.tcp_flush(h, now);
            return;
        }
        let listener = self.socks.tcp.iter().position(
            |s| matches!(s, Some(TcpSock::Listener { port, v6only, .. }) if *port == seg.dst_port && !(*v6only && src.is_ipv4())),
        );
        if let (Some(lh), true) = (listener, seg.flags & (SYN | ACK | RST) == SYN) {
            let Some(Some(TcpSock::Listener { backlog, accept, embryos, .. })) = self.socks.tcp.get(lh) else { unreachable!() };
            if accept.len() + embryos.len() >= *backlog {
                // Backlog full: drop the SYN, the peer retries.
                self.drop_reason(crate::monitor::DropReason::SocketBacklog, 1);
                return;
            }
            let cfg = self.conn_cfg(src);
            let iss = self.new_iss((dst, seg.dst_port), (src, seg.src_port), now);
            let t = crate::tcp::Tcb::accept_syn((dst, seg.dst_port), (src, seg.src_port), &seg, iss, cfg, now);
            let h = self.tcp_alloc(TcpSock::Conn(Box::new(t), Some(lh)));
            self.stats.tcp_passive_opens += 1;
            if let Some(Some(TcpSock::Listener { embryos, .. })) = self.socks.tcp.get_mut(lh) {
                embryos.push(h);
            }
            self.tcp_flush(h, now);
            return;
        }
        // No socket: RST (RFC 9293 3.10.7.1), never in answer to a RST.
        if seg.flags & RST != 0 {
            return;
        }
        self.stats.no_ports += 1;
        self.drop_reason(crate::monitor::DropReason::NoSocket, 1);
        let len = payload.len() + (seg.flags & SYN != 0) as usize + (seg.flags & crate::wire::tcp::FIN != 0) as usize;
        let r = if seg.flags & ACK != 0 {
            crate::wire::tcp::Repr { src_port: seg.dst_port, dst_port: seg.src_port, seq: seg.ack, flags: RST, ..Default::default() }
        } else {
            crate::wire::tcp::Repr {
                src_port: seg.dst_port,
                dst_port: seg.src_port,
                seq: crate::wire::tcp::Seq(0),
                ack: (seg.seq + len),
                flags: RST | ACK,
                ..Default::default()
            }
        };
        let mut b = vec![0u8; r.header_len()];
        r.emit(&mut b, &[], dst, src, true);
        match src {
            IpAddr::V4(s) => {
                let _ = self.ip_send(s.octets(), ipv4::PROTO_TCP, &b, true, now);
            }
            IpAddr::V6(s) => {
                let _ = self.ip6_send(Some(six(dst)), s.octets(), crate::wire::ipv6::NH_TCP, &b, now);
            }
        }
    }

    /// An ICMP error about a segment from `sport` to `dst:dport` reaches its connection.
    pub(super) fn tcp_icmp_error(&mut self, dst: IpAddr, sport: u16, dport: u16, e: Errno) {
        for s in self.socks.tcp.iter_mut().flatten() {
            if let TcpSock::Conn(t, _) = s {
                if t.local.1 == sport && t.remote == (dst, dport) {
                    t.icmp_error(e);
                }
            }
        }
    }

    /// A smaller path MTU toward `dst`: every connection to it cuts its segments to `mss` and resends what
    /// is in flight.
    pub(super) fn tcp_path_mtu(&mut self, dst: IpAddr, mss: usize) {
        for s in self.socks.tcp.iter_mut().flatten() {
            if let TcpSock::Conn(t, _) = s {
                if t.remote.0 == dst {
                    t.path_mtu_reduced(mss);
                }
            }
        }
    }

    /// Moves a connection that became established from its listener's embryos to the accept queue.
    pub(super) fn tcp_promote(&mut self, h: SocketHandle) {
        let Some(Some(TcpSock::Conn(t, parent))) = self.socks.tcp.get_mut(h) else { return };
        let Some(lh) = *parent else { return };
        let (established, closed) = (t.established_once, t.state == crate::tcp::State::Closed);
        if !established && !closed {
            return;
        }
        *parent = None;
        if let Some(Some(TcpSock::Listener { accept, embryos, .. })) = self.socks.tcp.get_mut(lh) {
            embryos.retain(|&e| e != h);
            if established {
                accept.push_back(h);
                return;
            }
        }
        if !established {
            // An embryo that died before accept() is nobody's: free it.
            self.socks.tcp[h] = None;
        }
    }

    pub(super) fn tcp_alloc(&mut self, s: TcpSock) -> SocketHandle {
        if let Some(i) = self.socks.tcp.iter().position(|s| s.is_none()) {
            self.socks.tcp[i] = Some(s);
            return i;
        }
        self.socks.tcp.push(Some(s));
        self.socks.tcp.len() - 1
    }

    pub(super) fn tcp_port_used(&self, port: u16) -> bool {
        self.socks.tcp.iter().flatten().any(|s| match s {
            TcpSock::Listener { port: p, .. } => *p == port,
            TcpSock::Conn(t, _) => t.local.1 == port && t.state != crate::tcp::State::Closed,
        })
    }

    /// Runs TCP timers and output for every connection (called from poll).
    pub(super) fn tcp_poll(&mut self, now: Instant) {
        for h in 0..self.socks.tcp.len() {
            if matches!(self.socks.tcp.get(h), Some(Some(TcpSock::Conn(_, _)))) {
                self.tcp_flush(h, now);
                self.tcp_promote(h);
            }
        }
    }

    /// A listener on `port` for both families (as an IPv6 socket that accepts IPv4 peers; see
    /// [`Stack::tcp_set_v6only`]).
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<SocketHandle, Errno> {
        self.socks.open()?;
        if self.tcp_port_used(port) {
            return Err(EADDRINUSE);
        }
        Ok(self.tcp_alloc(TcpSock::Listener { port, backlog: backlog.max(1), v6only: false, accept: VecDeque::new(), embryos: Vec::new() }))
    }

    /// IPV6_V6ONLY on a listener: IPv4 peers are refused (answered with a reset, as with no listener).
    pub fn tcp_set_v6only(&mut self, h: SocketHandle, on: bool) -> Result<(), Errno> {
        match self.socks.tcp.get_mut(h) {
            Some(Some(TcpSock::Listener { v6only, .. })) => {
                *v6only = on;
                Ok(())
            }
            _ => Err(EBADF),
        }
    }

    /// A connection's peer address and port.
    pub fn tcp_peer(&self, h: SocketHandle) -> Option<(IpAddr, u16)> {
        match self.socks.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => Some(t.remote),
            _ => None,
        }
    }

    /// An established connection from the listener's queue (EAGAIN when none).
    pub fn tcp_accept(&mut self, h: SocketHandle) -> Result<SocketHandle, Errno> {
        match self.socks.tcp.get_mut(h) {
            Some(Some(TcpSock::Listener { accept, .. })) => accept.pop_front().ok_or(EAGAIN),
            _ => Err(EBADF),
        }
    }

    pub fn tcp_connect(&mut self, dst: [u8; 4], port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        self.tcp_connect_from(0, dst, port, now)
    }

    /// Connects from a chosen local port (bind, then connect); 0 picks an ephemeral one.
    pub fn tcp_connect_from(&mut self, local_port: u16, dst: [u8; 4], port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        self.tcp_connect_ip(local_port, dst.into(), port, now)
    }

    /// Connects to an IPv4 or IPv6 address from `local_port` (0: an ephemeral one). Over IPv6 the source
    /// address is the one source address selection picks (EADDRNOTAVAIL while none is ready).
    pub fn tcp_connect_ip(&mut self, local_port: u16, dst: IpAddr, port: u16, now: Instant) -> Result<SocketHandle, Errno> {
        self.socks.open()?;
        if self.route_down(dst) {
            return Err(ENETUNREACH);
        }
        let local_addr: IpAddr = match dst {
            IpAddr::V4(d) => {
                if self.next_hop_v4(d.octets()).is_none() {
                    return Err(ENETUNREACH);
                }
                IpAddr::from(self.src_v4(d.octets()))
            }
            IpAddr::V6(d) => {
                let v = self.v6.as_ref().ok_or(ENETUNREACH)?;
                if v.next_hop(&d.octets()).is_none() {
                    return Err(ENETUNREACH);
                }
                IpAddr::from(v.source_for(&d.octets()).ok_or(Errno(libc::EADDRNOTAVAIL))?)
            }
        };
        let lport = if local_port != 0 {
            if self.tcp_port_used(local_port) {
                return Err(EADDRINUSE);
            }
            local_port
        } else {
            self.ephemeral_tcp_port(dst, port).ok_or(Errno(libc::EADDRNOTAVAIL))?
        };
        let cfg = self.conn_cfg(dst);
        let iss = self.new_iss((local_addr, lport), (dst, port), now);
        let t = crate::tcp::Tcb::connect((local_addr, lport), (dst, port), iss, cfg, now);
        let h = self.tcp_alloc(TcpSock::Conn(Box::new(t), None));
        self.stats.tcp_active_opens += 1;
        self.tcp_flush(h, now);
        Ok(h)
    }

    pub(super) fn conn(&mut self, h: SocketHandle) -> Result<&mut crate::tcp::Tcb, Errno> {
        match self.socks.tcp.get_mut(h) {
            Some(Some(TcpSock::Conn(t, _))) => Ok(t),
            _ => Err(EBADF),
        }
    }

    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8], now: Instant) -> Result<usize, Errno> {
        let n = self.conn(h)?.send(data)?;
        self.tcp_flush(h, now);
        Ok(n)
    }

    pub fn tcp_recv(&mut self, h: SocketHandle, buf: &mut [u8], now: Instant) -> Result<usize, Errno> {
        let n = self.conn(h)?.recv(buf)?;
        self.tcp_flush(h, now);
        Ok(n)
    }

    pub fn tcp_shutdown(&mut self, h: SocketHandle, now: Instant) -> Result<(), Errno> {
        self.conn(h)?.shutdown();
        self.tcp_flush(h, now);
        Ok(())
    }

    /// Closes the handle: a graceful close for a connection (it finishes in the background), or the end of
    /// a listener (its queued connections are reset).
    pub fn tcp_close(&mut self, h: SocketHandle, now: Instant) {
        match self.socks.tcp.get_mut(h) {
            Some(Some(TcpSock::Conn(t, _))) => {
                t.shutdown();
                self.tcp_flush(h, now);
            }
            Some(Some(TcpSock::Listener { accept, embryos, .. })) => {
                let kids: Vec<_> = accept.drain(..).chain(embryos.drain(..)).collect();
                self.socks.tcp[h] = None;
                for k in kids {
                    self.tcp_abort(k, now);
                }
            }
            _ => {}
        }
    }

    pub fn tcp_abort(&mut self, h: SocketHandle, now: Instant) {
        if let Ok(t) = self.conn(h) {
            let rst = t.abort(now);
            let (l, r) = (t.local.0, t.remote.0);
            if let Some(o) = rst {
                self.tcp_emit(l, r, o, now);
            }
        }
        if let Some(s) = self.socks.tcp.get_mut(h) {
            *s = None;
        }
    }

    /// Frees a closed connection's handle.
    pub fn tcp_release(&mut self, h: SocketHandle) {
        if let Some(s) = self.socks.tcp.get_mut(h) {
            *s = None;
        }
    }

    pub fn tcp_state(&self, h: SocketHandle) -> Option<crate::tcp::State> {
        match self.socks.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => Some(t.state),
            Some(TcpSock::Listener { .. }) => Some(crate::tcp::State::Listen),
            None => None,
        }
    }

    /// Bytes written but not yet acknowledged by the peer (`ss`'s Send-Q).
    pub fn tcp_send_queue(&self, h: SocketHandle) -> Option<usize> {
        match self.socks.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => Some(t.send_queue()),
            _ => None,
        }
    }

    pub fn tcp_error(&self, h: SocketHandle) -> Option<Errno> {
        match self.socks.tcp.get(h)? {
            Some(TcpSock::Conn(t, _)) => t.error,
            _ => None,
        }
    }

    /// Readiness for non-blocking use: (readable, writable). Readable includes end of stream and errors.
    pub fn tcp_ready(&self, h: SocketHandle) -> (bool, bool) {
        match self.socks.tcp.get(h) {
            Some(Some(TcpSock::Listener { accept, .. })) => (!accept.is_empty(), false),
            Some(Some(TcpSock::Conn(t, _))) => {
                let eof_or_err = t.error.is_some()
                    || matches!(
                        t.state,
                        crate::tcp::State::CloseWait
                            | crate::tcp::State::Closed
                            | crate::tcp::State::LastAck
                            | crate::tcp::State::TimeWait
                            | crate::tcp::State::Closing
                    );
                let writable = matches!(t.state, crate::tcp::State::Established | crate::tcp::State::CloseWait) && t.send_space() > 0;
                (t.recv_available() > 0 || eof_or_err, writable)
            }
            _ => (false, false),
        }
    }

    pub fn tcp_conn(&mut self, h: SocketHandle) -> Option<&mut crate::tcp::Tcb> {
        self.conn(h).ok()
    }
}
