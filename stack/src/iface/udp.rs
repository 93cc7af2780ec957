//! UDP: the socket table and datagrams in and out.

use super::*;
use crate::wire::{icmp, icmpv6, ipv4, ipv6, udp};
use std::net::IpAddr;

/// A UDP socket: bound to a port for both families (a datagram from IPv4 or IPv6 reaches it), connected
/// or not.
pub(super) struct UdpSock {
    pub(super) port: u16,
    pub(super) remote: Option<(IpAddr, u16)>,
    pub(super) rx: VecDeque<(Vec<u8>, IpAddr, u16)>,
    pub(super) error: Option<Errno>,
}

const UDP_RX_QUEUE: usize = 256;

impl Stack {
    /// A datagram; `header` is the IP header it came with (quoted if no socket takes it).
    pub(super) fn udp_input(&mut self, src: IpAddr, dst: IpAddr, header: &[u8], data: &[u8], verified: bool, now: Instant) {
        let parsed = if verified {
            // The device checked the checksum: parse without summing again.
            if data.len() < 8 {
                return;
            }
            let len = u16::from_be_bytes([data[4], data[5]]) as usize;
            if len < 8 || len > data.len() {
                self.stats.in_hdr_errors += 1;
                self.drop_reason(crate::monitor::DropReason::PktTooSmall, 1);
                return;
            }
            Ok((
                udp::Repr {
                    src_port: u16::from_be_bytes([data[0], data[1]]),
                    dst_port: u16::from_be_bytes([data[2], data[3]]),
                    payload_len: len - 8,
                },
                &data[8..len],
            ))
        } else {
            udp::Repr::parse(data, src, dst)
        };
        let Some((r, payload)) = self.count_parse_error(parsed, crate::monitor::DropReason::UdpCsum) else { return };
        let sock = self.socks.udp.iter_mut().flatten().find(|s| s.port == r.dst_port && s.remote.is_none_or(|rm| rm == (src, r.src_port)));
        match sock {
            Some(s) => {
                if s.rx.len() < UDP_RX_QUEUE {
                    s.rx.push_back((payload.to_vec(), src, r.src_port));
                    self.stats.udp_in_datagrams += 1;
                } else {
                    self.stats.udp_rcvbuf_errors += 1;
                    self.drop_reason(crate::monitor::DropReason::SocketRcvbuff, 1);
                }
            }
            None => {
                self.stats.no_ports += 1;
                self.drop_reason(crate::monitor::DropReason::NoSocket, 1);
                match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) if self.local_v4(d.octets()) => {
                        // Port unreachable, quoting the IP header and the first 8 bytes.
                        let mut quote = header.to_vec();
                        quote.extend_from_slice(&data[..data.len().min(8)]);
                        let m = icmp::Repr::Unreachable { code: icmp::CODE_PORT_UNREACHABLE, mtu: 0, original: &quote };
                        let mut b = vec![0u8; m.buffer_len()];
                        m.emit(&mut b);
                        let _ = self.ip_send(s.octets(), ipv4::PROTO_ICMP, &b, false, now);
                    }
                    (IpAddr::V6(_), IpAddr::V6(_)) => {
                        // RFC 4443 3.1: port unreachable, quoting as much of the packet as fits.
                        let Ok(ip) = ipv6::Repr::parse_quoted(header) else { return };
                        let mut packet = header.to_vec();
                        packet.extend_from_slice(data);
                        self.icmp6_error(&ip, icmpv6::DEST_UNREACHABLE, icmpv6::UNREACH_PORT, 0, &packet, now);
                    }
                    _ => {}
                }
            }
        }
    }

    // ---- UDP sockets ----

    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, Errno> {
        self.socks.open()?;
        let port = if port == 0 { self.ephemeral_port() } else { port };
        if self.socks.udp.iter().flatten().any(|s| s.port == port) {
            return Err(EADDRINUSE);
        }
        let s = UdpSock { port, remote: None, rx: VecDeque::new(), error: None };
        if let Some(i) = self.socks.udp.iter().position(|s| s.is_none()) {
            self.socks.udp[i] = Some(s);
            return Ok(i);
        }
        self.socks.udp.push(Some(s));
        Ok(self.socks.udp.len() - 1)
    }

    pub(super) fn ephemeral_port(&self) -> u16 {
        (32768..61000).find(|p| !self.socks.udp.iter().flatten().any(|s| s.port == *p)).unwrap_or(0)
    }

    pub fn udp_connect(&mut self, h: SocketHandle, dst: [u8; 4], port: u16) -> Result<(), Errno> {
        self.udp_connect_ip(h, dst.into(), port)
    }

    pub fn udp_connect_ip(&mut self, h: SocketHandle, dst: IpAddr, port: u16) -> Result<(), Errno> {
        let s = self.socks.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        s.remote = Some((dst, port));
        Ok(())
    }

    pub fn udp_local_port(&self, h: SocketHandle) -> Option<u16> {
        self.socks.udp.get(h)?.as_ref().map(|s| s.port)
    }

    pub fn udp_send_to(&mut self, h: SocketHandle, dst: [u8; 4], port: u16, data: &[u8], now: Instant) -> Result<(), Errno> {
        self.udp_send_to_ip(h, dst.into(), port, data, now)
    }

    /// Sends a datagram to an IPv4 or IPv6 address (over IPv6 from the address source selection picks).
    pub fn udp_send_to_ip(&mut self, h: SocketHandle, dst: IpAddr, port: u16, data: &[u8], now: Instant) -> Result<(), Errno> {
        let s = self.socks.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        let sport = s.port;
        let r = udp::Repr { src_port: sport, dst_port: port, payload_len: data.len() };
        self.stats.udp_out_datagrams += 1;
        let mut b = vec![0u8; udp::HEADER_LEN + data.len()];
        match dst {
            IpAddr::V4(d) => {
                r.emit(&mut b, data, self.src_v4(d.octets()), d);
                self.ip_send(d.octets(), ipv4::PROTO_UDP, &b, false, now)
            }
            IpAddr::V6(d) => {
                if self.route_down(dst) {
                    return Err(ENETUNREACH);
                }
                let src = self.v6.as_ref().ok_or(ENETUNREACH)?.source_for(&d.octets()).ok_or(EADDRNOTAVAIL)?;
                r.emit(&mut b, data, src, d);
                self.ip6_send(Some(src), d.octets(), ipv6::NH_UDP, &b, now)
            }
        }
    }

    pub fn udp_send(&mut self, h: SocketHandle, data: &[u8], now: Instant) -> Result<(), Errno> {
        let (dst, port) = self.socks.udp.get(h).and_then(|s| s.as_ref()).and_then(|s| s.remote).ok_or(Errno(libc::EDESTADDRREQ))?;
        self.udp_send_to_ip(h, dst, port, data, now)
    }

    /// A received IPv4 datagram, a pending error (once), or EAGAIN. (IPv6 datagrams wait for
    /// [`Stack::udp_recv_from_ip`].)
    pub fn udp_recv_from(&mut self, h: SocketHandle) -> Result<(Vec<u8>, [u8; 4], u16), Errno> {
        let s = self.socks.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        if let Some(i) = s.rx.iter().position(|d| d.1.is_ipv4()) {
            if let Some((d, IpAddr::V4(a), p)) = s.rx.remove(i) {
                return Ok((d, a.octets(), p));
            }
        }
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        Err(EAGAIN)
    }

    /// A received datagram from either family, a pending error (once), or EAGAIN.
    pub fn udp_recv_from_ip(&mut self, h: SocketHandle) -> Result<(Vec<u8>, IpAddr, u16), Errno> {
        let s = self.socks.udp.get_mut(h).and_then(|s| s.as_mut()).ok_or(EBADF)?;
        if let Some(d) = s.rx.pop_front() {
            return Ok(d);
        }
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        Err(EAGAIN)
    }

    pub fn udp_close(&mut self, h: SocketHandle) {
        if let Some(s) = self.socks.udp.get_mut(h) {
            *s = None;
        }
    }
}
