//! Ethernet in and out, and ARP.

use super::*;
use crate::wire::ethernet;

impl Stack {
    // ---- output ----

    pub(super) fn enqueue(&mut self, p: PacketBuf) {
        if !self.up {
            self.stats.qdisc_drops += 1;
            self.drop_reason(crate::monitor::DropReason::DevReady, 1);
        } else if !self.qdisc.enqueue(p, self.clock) {
            self.stats.qdisc_drops += 1;
            self.drop_reason(crate::monitor::DropReason::QdiscDrop, 1);
        }
    }

    pub(super) fn send_l2(&mut self, mut p: PacketBuf, dst: Mac, ethertype: u16) {
        let h = p.push(ethernet::HEADER_LEN);
        ethernet::Repr { dst, src: self.mac, ethertype }.emit(h);
        p.mac_header = Some(0);
        self.enqueue(p);
    }

    /// An ARP message from `sender_ip` (one of ours).
    pub(super) fn send_arp_from(&mut self, sender_ip: [u8; 4], op: u16, target_mac: Mac, target_ip: [u8; 4], dst: Mac) {
        let mut p = PacketBuf::with_headroom(64, arp::LEN);
        arp::Repr { op, sender_mac: self.mac, sender_ip, target_mac, target_ip }.emit(p.put(arp::LEN));
        if op == arp::OP_REQUEST {
            self.stats.arp_requests += 1;
        } else {
            self.stats.arp_replies += 1;
        }
        self.send_l2(p, dst, ethernet::ETHERTYPE_ARP);
    }

    /// An ARP message from the address we would use toward `target_ip`.
    pub(super) fn send_arp(&mut self, op: u16, target_mac: Mac, target_ip: [u8; 4], dst: Mac) {
        let from = self.src_v4(target_ip);
        self.send_arp_from(from, op, target_mac, target_ip, dst);
    }

    /// Announces our addresses (gratuitous ARP).
    pub fn announce(&mut self) {
        for a in self.v4_addrs() {
            self.send_arp_from(a, arp::OP_REQUEST, [0; 6], a, BROADCAST);
        }
    }

    // ---- input ----

    pub(super) fn input(&mut self, mut p: PacketBuf, now: Instant) {
        let Ok(f) = ethernet::Frame::new_checked(p.data()) else { return };
        let eth = ethernet::Repr::parse(&f);
        if eth.dst != self.mac && eth.dst != BROADCAST && eth.dst[0] & 1 == 0 {
            return;
        }
        p.mac_header = Some(0);
        p.pull(ethernet::HEADER_LEN);
        match eth.ethertype {
            ethernet::ETHERTYPE_ARP => self.arp_input(&p, now),
            ethernet::ETHERTYPE_IPV4 => self.ipv4_input(p, now),
            ethernet::ETHERTYPE_IPV6 => self.ipv6_input(p, now),
            _ => {}
        }
    }

    pub(super) fn arp_input(&mut self, p: &PacketBuf, now: Instant) {
        let Ok(a) = arp::Repr::parse(p.data()) else { return };
        let for_us = self.owns_v4(a.target_ip);
        // RFC 826: update an existing entry for the sender; create one when the request is for us.
        let waiting = self.neigh.update(a.sender_ip, a.sender_mac, now, for_us);
        for w in waiting {
            self.send_l2(w, a.sender_mac, ethernet::ETHERTYPE_IPV4);
        }
        if for_us && a.op == arp::OP_REQUEST && !self.owns_v4(a.sender_ip) {
            self.send_arp_from(a.target_ip, arp::OP_REPLY, a.sender_mac, a.sender_ip, a.sender_mac);
        }
    }
}
