//! What REJECT sends back: a TCP reset that answers the rejected segment (RFC 9293 3.10.7.1), or an ICMP /
//! ICMPv6 destination unreachable (sent by the caller, which knows the interface's address).

use super::packet::{View, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use super::rules::RejectWith;
use crate::wire::checksum;
use std::net::IpAddr;

/// The reply a REJECT calls for, in the packet's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    TcpReset,
    /// ICMP destination unreachable with this code.
    Icmp(u8),
    /// ICMPv6 destination unreachable with this code.
    Icmp6(u8),
}

/// Resolves `with` for a packet of this family and protocol: `icmpx` codes and the default become the
/// family's own; a TCP reset for something not TCP becomes port unreachable.
pub fn reply_for(with: RejectWith, v6: bool, proto: u8) -> Reply {
    let icmpx = |c: u8| {
        if v6 {
            // no route 0, port 4, address 3, admin 1
            Reply::Icmp6([0, 4, 3, 1][usize::from(c.min(3))])
        } else {
            // net 0, port 3, host 1, admin 13
            Reply::Icmp([0, 3, 1, 13][usize::from(c.min(3))])
        }
    };
    match with {
        RejectWith::TcpReset if proto == TCP => Reply::TcpReset,
        RejectWith::TcpReset | RejectWith::Default => icmpx(1),
        RejectWith::Icmp(c) if !v6 => Reply::Icmp(c),
        RejectWith::Icmp6(c) if v6 => Reply::Icmp6(c),
        RejectWith::Icmp(_) | RejectWith::Icmp6(_) => icmpx(1),
        RejectWith::Icmpx(c) => icmpx(c),
    }
}

/// The reset answering TCP segment `pkt`, from its destination to its source; `None` for a reset (never
/// answered) or a packet that is not TCP.
pub fn tcp_reset(pkt: &[u8]) -> Option<Vec<u8>> {
    let v = View::parse(pkt, false)?;
    let t = v.tcp?;
    if t.flags & TCP_RST != 0 {
        return None;
    }
    let (seq, ack, flags) = if t.flags & TCP_ACK != 0 {
        (t.ack, 0, TCP_RST)
    } else {
        let len = t.payload as u32 + u32::from(t.flags & TCP_SYN != 0) + u32::from(t.flags & TCP_FIN != 0);
        (0, t.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&v.dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&v.sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    let c = !checksum::fold(checksum::sum(checksum::pseudo(v.dst, v.src, TCP, 20), &tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut out = match (v.dst, v.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, TCP, 0, 0];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum::compute(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0, 0, 20, TCP, 64];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        _ => return None,
    };
    out.extend_from_slice(&tcp);
    Some(out)
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    #[test]
    fn a_syn_is_answered_with_rst_ack_that_etherparse_accepts() {
        let mut syn = Vec::new();
        PacketBuilder::ipv4([10, 1, 0, 2], [10, 2, 0, 2], 64).tcp(40000, 22, 7777, 64240).syn().write(&mut syn, &[]).unwrap();
        let r = tcp_reset(&syn).unwrap();
        let s = SlicedPacket::from_ip(&r).unwrap();
        let Some(TransportSlice::Tcp(t)) = s.transport else { panic!() };
        assert!(t.rst() && t.ack());
        assert_eq!((t.source_port(), t.destination_port()), (22, 40000));
        assert_eq!(t.acknowledgment_number(), 7778);
        let h = t.to_header();
        assert_eq!(h.calc_checksum_ipv4_raw([10, 2, 0, 2], [10, 1, 0, 2], &[]).unwrap(), h.checksum);
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!() };
        let ih = ip.header().to_header();
        assert_eq!(ih.calc_header_checksum(), ih.header_checksum);
    }

    #[test]
    fn an_ack_is_answered_with_its_ack_number_and_a_reset_never() {
        let mut a = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64).tcp(1, 2, 100, 1000).ack(5555).write(&mut a, b"data").unwrap();
        let r = tcp_reset(&a).unwrap();
        let v = View::parse(&r, false).unwrap();
        assert_eq!(v.tcp.unwrap().seq, 5555);
        assert_eq!(v.tcp.unwrap().flags, TCP_RST);
        assert!(tcp_reset(&r).is_none());
    }

    #[test]
    fn icmpx_codes_follow_the_family() {
        assert_eq!(reply_for(RejectWith::Default, false, 17), Reply::Icmp(3));
        assert_eq!(reply_for(RejectWith::Default, true, 17), Reply::Icmp6(4));
        assert_eq!(reply_for(RejectWith::Icmpx(3), false, 6), Reply::Icmp(13));
        assert_eq!(reply_for(RejectWith::TcpReset, false, 6), Reply::TcpReset);
        assert_eq!(reply_for(RejectWith::TcpReset, false, 17), Reply::Icmp(3));
    }
}
