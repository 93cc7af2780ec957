//! ICMP: echo both ways, errors sent for what we cannot deliver, errors received mapped to socket errors.

use super::*;
use crate::wire::{icmp, ipv4};

/// An echo reply or error that arrived for a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingEvent {
    Reply { from: [u8; 4], seq: u16, len: usize, at: Instant },
    Error { from: [u8; 4], seq: u16, errno: Errno },
}

impl Stack {
    /// An ICMP message from `src` to `dst` (one of our addresses, or a broadcast).
    pub(super) fn icmp_input(&mut self, src: [u8; 4], dst: [u8; 4], data: &[u8], now: Instant) {
        let Ok(m) = icmp::Repr::parse(data) else {
            self.stats.in_csum_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IcmpCsum, 1);
            return;
        };
        match m {
            icmp::Repr::EchoRequest { ident, seq, data } => {
                self.stats.icmp_in_echos += 1;
                self.stats.icmp_out_echo_reps += 1;
                let reply = icmp::Repr::EchoReply { ident, seq, data };
                let mut b = vec![0u8; reply.buffer_len()];
                reply.emit(&mut b);
                // From the address the request was sent to (as Linux answers), unless that was a broadcast.
                let from = if self.local_v4(dst) { dst } else { self.src_v4(src) };
                let _ = self.ip_send_packet(from, src, ipv4::PROTO_ICMP, PacketBuf::from_slice(&b), false, None, now);
            }
            icmp::Repr::EchoReply { ident, seq, data } => {
                if let Some(q) = self.socks.pings.get_mut(&ident) {
                    q.push_back(PingEvent::Reply { from: src, seq, len: data.len(), at: now });
                }
            }
            icmp::Repr::Unreachable { code, mtu, original } => self.icmp_error(src, code, Some(mtu), original),
            icmp::Repr::TimeExceeded { original, .. } => self.icmp_error(src, 255, None, original),
            icmp::Repr::Other { .. } => {}
        }
    }

    /// Maps an ICMP error about one of our datagrams to the socket that sent it. The quoted datagram is
    /// usually cut short, so only its header and the first 8 bytes of L4 are read.
    pub(super) fn icmp_error(&mut self, from: [u8; 4], code: u8, mtu: Option<u16>, original: &[u8]) {
        if original.len() < 20 || original[0] >> 4 != 4 {
            return;
        }
        let ihl = (original[0] & 0xF) as usize * 4;
        if ihl < 20 || original.len() < ihl {
            return;
        }
        let dst: [u8; 4] = original[16..20].try_into().unwrap();
        self.icmp_error_to(from, code, mtu, dst, original[9], &original[ihl..]);
    }

    pub(super) fn icmp_error_to(&mut self, from: [u8; 4], code: u8, mtu: Option<u16>, dst: [u8; 4], proto: u8, l4: &[u8]) {
        let errno = match code {
            icmp::CODE_PORT_UNREACHABLE => ECONNREFUSED,
            icmp::CODE_FRAG_NEEDED => {
                if let Some(m) = mtu.filter(|&m| m >= 68) {
                    self.pmtu.insert(dst, m as usize);
                    // TCP never goes below the 536-byte default MSS here (RFC 9293 3.7.1).
                    self.tcp_path_mtu(dst.into(), (m as usize).saturating_sub(40).max(536));
                }
                EMSGSIZE
            }
            _ => EHOSTUNREACH,
        };
        match proto {
            ipv4::PROTO_UDP if l4.len() >= 4 => {
                let sport = u16::from_be_bytes([l4[0], l4[1]]);
                let dport = u16::from_be_bytes([l4[2], l4[3]]);
                for s in self.socks.udp.iter_mut().flatten() {
                    if s.port == sport && s.remote.is_none_or(|r| r == (dst.into(), dport)) {
                        s.error = Some(errno);
                    }
                }
            }
            ipv4::PROTO_TCP if l4.len() >= 4 && code != icmp::CODE_FRAG_NEEDED => {
                let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
                self.tcp_icmp_error(dst.into(), sport, dport, errno);
            }
            ipv4::PROTO_ICMP if l4.len() >= 8 && l4[0] == icmp::ECHO_REQUEST => {
                let ident = u16::from_be_bytes([l4[4], l4[5]]);
                let seq = u16::from_be_bytes([l4[6], l4[7]]);
                if let Some(q) = self.socks.pings.get_mut(&ident) {
                    q.push_back(PingEvent::Error { from, seq, errno });
                }
            }
            _ => {}
        }
    }

    // ---- ping ----

    /// Sends an ICMP echo request; replies and errors arrive through [`Stack::ping_events`].
    pub fn ping_send(&mut self, dst: [u8; 4], ident: u16, seq: u16, payload: &[u8], now: Instant) -> Result<(), Errno> {
        self.socks.open()?;
        self.socks.pings.entry(ident).or_default();
        let m = icmp::Repr::EchoRequest { ident, seq, data: payload };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        self.ip_send(dst, ipv4::PROTO_ICMP, &b, false, now)
    }

    pub fn ping_events(&mut self, ident: u16) -> Vec<PingEvent> {
        self.socks.pings.get_mut(&ident).map(|q| q.drain(..).collect()).unwrap_or_default()
    }
}
