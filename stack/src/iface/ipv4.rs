//! IPv4: output with routing, fragmentation and the neighbour queue; input with header checks and
//! reassembly.

use super::tcp::tcp_segment_key;
use super::*;
use crate::frag::Outcome;
use crate::neigh::Resolve;
use crate::wire::{checksum, ethernet, icmp, ipv4};

impl Stack {
    /// The interface's IPv4 addresses, the primary first.
    pub fn v4_addrs(&self) -> Vec<[u8; 4]> {
        std::iter::once(self.cfg.addr).chain(self.cfg.secondary.iter().map(|s| s.0)).collect()
    }

    /// Whether `a` is one of our IPv4 addresses.
    pub(super) fn owns_v4(&self, a: [u8; 4]) -> bool {
        a == self.cfg.addr || self.cfg.secondary.iter().any(|s| s.0 == a)
    }

    /// An address of this host: one of the interface's, or in 127.0.0.0/8, which every host holds on
    /// `lo` (Linux's local table).
    pub(super) fn local_v4(&self, a: [u8; 4]) -> bool {
        self.owns_v4(a) || ipv4::is_loopback(a)
    }

    /// The source address toward `dst`: the one whose subnet holds it, the primary otherwise.
    pub(super) fn src_v4(&self, dst: [u8; 4]) -> [u8; 4] {
        if ipv4::is_loopback(dst) {
            return ipv4::LOOPBACK;
        }
        std::iter::once((self.cfg.addr, self.cfg.prefix))
            .chain(self.cfg.secondary.iter().copied())
            .find(|&(a, p)| crate::route::Route { dest: a, prefix: p, gateway: None }.matches(dst))
            .map_or(self.cfg.addr, |x| x.0)
    }

    pub(super) fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// The first hop toward `dst`: this interface's own routes, or (an interface of a host with several)
    /// the host's routing for anything off the link.
    pub(super) fn next_hop_v4(&self, dst: [u8; 4]) -> Option<[u8; 4]> {
        if ipv4::is_loopback(dst) {
            return Some(dst); // through `lo`
        }
        match self.routes.lookup(dst) {
            Some(r) if r.gateway.is_none() || !self.host_routed => Some(r.gateway.unwrap_or(dst)),
            _ if self.host_routed => Some(super::HOST_HOP4),
            _ => None,
        }
    }

    pub(super) fn mtu_to(&self, dst: [u8; 4]) -> usize {
        if ipv4::is_loopback(dst) {
            return super::LO_MTU;
        }
        let dev = self.dev.mtu();
        self.pmtu.get(&dst).copied().unwrap_or(dev).min(dev)
    }

    /// Sends an IPv4 datagram with `payload` (an L4 packet), fragmenting it when it exceeds the MTU and
    /// `dont_frag` is clear.
    pub fn ip_send(&mut self, dst: [u8; 4], protocol: u8, payload: &[u8], dont_frag: bool, now: Instant) -> Result<(), Errno> {
        if self.route_down(dst.into()) {
            return Err(ENETUNREACH);
        }
        let src = self.src_v4(dst);
        self.ip_send_packet(src, dst, protocol, PacketBuf::from_slice(payload), dont_frag, None, now)
    }

    /// As [`Stack::ip_send`] from `src`, for an L4 packet already in a packet buffer (its data), with room
    /// in front for the headers: the IP header is pushed there, and the packet leaves in that buffer. Only
    /// a datagram to fragment is copied, into its fragments. `offload` = (checksum left to the device, GSO
    /// segment size for a super-packet): such a packet is never fragmented.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ip_send_packet(
        &mut self,
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        mut p: PacketBuf,
        dont_frag: bool,
        offload: Option<(bool, Option<u16>)>,
        now: Instant,
    ) -> Result<(), Errno> {
        let Some(next_hop) = self.next_hop_v4(dst) else { return Err(ENETUNREACH) };
        let len = p.len();
        if len > 65535 - ipv4::MIN_HEADER_LEN {
            return Err(EMSGSIZE);
        }
        let mtu = self.mtu_to(dst);
        if offload.is_none() && ipv4::MIN_HEADER_LEN + len > mtu {
            if dont_frag {
                return Err(EMSGSIZE);
            }
            p.linearize();
            return self.ip_fragment(src, dst, protocol, p.data(), mtu, next_hop, now);
        }
        let r = ipv4::Repr {
            src,
            dst,
            protocol,
            ttl: self.cfg.ttl,
            ident: self.next_ident(),
            dont_frag: dont_frag || offload.is_some(),
            more_frags: false,
            frag_offset: 0,
            payload_len: len,
        };
        r.emit(p.push(ipv4::MIN_HEADER_LEN));
        p.network_header = Some(0);
        p.transport_header = Some(ipv4::MIN_HEADER_LEN);
        if let Some((partial, gso)) = offload {
            if partial {
                p.csum = crate::skb::Csum::Partial { start: ipv4::MIN_HEADER_LEN, offset: 16 };
            }
            p.gso = gso.map(|size| crate::skb::Gso { size, kind: crate::skb::GsoKind::TcpV4 });
        }
        self.stats.out_requests += 1;
        self.local_out(p, next_hop, now);
        Ok(())
    }

    /// RFC 791 fragments of an L4 packet too large for the MTU, each a multiple of 8 bytes but the last.
    #[allow(clippy::too_many_arguments)]
    fn ip_fragment(
        &mut self,
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        payload: &[u8],
        mtu: usize,
        next_hop: [u8; 4],
        now: Instant,
    ) -> Result<(), Errno> {
        let ident = self.next_ident();
        let max_payload = (mtu.saturating_sub(ipv4::MIN_HEADER_LEN) & !7).max(8);
        let n = payload.len().div_ceil(max_payload);
        for (i, c) in payload.chunks(max_payload).enumerate() {
            let mut p = PacketBuf::with_headroom(64, ipv4::MIN_HEADER_LEN + c.len());
            let r = ipv4::Repr {
                src,
                dst,
                protocol,
                ttl: self.cfg.ttl,
                ident,
                dont_frag: false,
                more_frags: i + 1 < n,
                frag_offset: i * max_payload,
                payload_len: c.len(),
            };
            let b = p.put(ipv4::MIN_HEADER_LEN + c.len());
            r.emit(&mut b[..ipv4::MIN_HEADER_LEN]);
            b[ipv4::MIN_HEADER_LEN..].copy_from_slice(c);
            p.network_header = Some(0);
            p.transport_header = Some(ipv4::MIN_HEADER_LEN);
            self.stats.frag_creates += 1;
            self.stats.out_requests += 1;
            self.local_out(p, next_hop, now);
        }
        Ok(())
    }

    /// Sends a forwarded IPv4 packet (TTL already lowered by the router) to `next_hop`; one larger than the
    /// link MTU is fragmented, or refused with EMSGSIZE when it says don't fragment (the router answers
    /// "fragmentation needed" with this link's MTU). `mark` is the packet's netfilter mark, for the qdisc.
    pub fn forward_out_v4(&mut self, packet: &[u8], next_hop: [u8; 4], mark: u32, now: Instant) -> Result<(), Errno> {
        let ip = ipv4::Packet::new_checked(packet).map_err(|_| Errno(libc::EINVAL))?;
        let mtu = self.dev.mtu();
        if packet.len() <= mtu {
            let mut p = PacketBuf::from_slice(packet);
            p.mark = mark;
            self.output(p, next_hop, now);
            return Ok(());
        }
        if ip.flags_frag() & ipv4::FLAG_DF != 0 {
            return Err(EMSGSIZE);
        }
        // RFC 791 fragmentation of a packet in transit: the header repeated (options are not copied here,
        // the stack's own headers have none), offsets continuing the packet's own.
        let hl = ip.header_len();
        let (header, payload) = packet.split_at(hl);
        let base = usize::from(ip.flags_frag() & 0x1FFF) * 8;
        let last_more = ip.flags_frag() & ipv4::FLAG_MF != 0;
        let per = (mtu - hl) & !7;
        let n = payload.len().div_ceil(per);
        for (i, c) in payload.chunks(per).enumerate() {
            let mut f = header.to_vec();
            f.extend_from_slice(c);
            let more = i + 1 < n || last_more;
            let off = ((base + i * per) / 8) as u16 | if more { ipv4::FLAG_MF } else { 0 };
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            f[6..8].copy_from_slice(&off.to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::compute(&f[..hl]);
            f[10..12].copy_from_slice(&c.to_be_bytes());
            self.stats.frag_creates += 1;
            let mut p = PacketBuf::from_slice(&f);
            p.mark = mark;
            self.output(p, next_hop, now);
        }
        Ok(())
    }

    /// Sends an ICMP error about `packet` (an IPv4 packet that arrived here) to its source, from this
    /// interface's address: time exceeded (type 11) or destination unreachable (type 3, with `mtu` for
    /// "fragmentation needed").
    pub fn icmp_error_v4(&mut self, packet: &[u8], kind: u8, code: u8, mtu: u16, now: Instant) {
        let Ok(ip) = ipv4::Packet::new_checked(packet) else { return };
        let src = ip.src();
        // Never about an ICMP error, a fragment after the first, or a broadcast/multicast source.
        if src[0] >= 224 || src == [0; 4] || ip.flags_frag() & 0x1FFF != 0 {
            return;
        }
        if ip.protocol() == ipv4::PROTO_ICMP
            && packet.get(ip.header_len()).is_some_and(|&t| t != icmp::ECHO_REQUEST && t != icmp::ECHO_REPLY)
        {
            return;
        }
        let quote = &packet[..(ip.header_len() + 8).min(packet.len())];
        let m = if kind == icmp::TIME_EXCEEDED {
            icmp::Repr::TimeExceeded { code, original: quote }
        } else {
            icmp::Repr::Unreachable { code, mtu, original: quote }
        };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        let _ = self.ip_send(src, ipv4::PROTO_ICMP, &b, false, now);
    }

    /// Hands an IP packet to its next hop, resolving the link-layer address.
    pub(super) fn output(&mut self, p: PacketBuf, next_hop: [u8; 4], now: Instant) {
        self.clock = now;
        if next_hop == super::HOST_HOP4 && self.host_routed {
            let ctx = crate::netfilter::Ctx { mark: p.mark, ..Default::default() };
            self.send_to_host(p, ctx);
            return;
        }
        if self.local_v4(next_hop) {
            // To ourselves: back in through `lo` at the next poll.
            self.looped.push(p);
            return;
        }
        if self.is_broadcast(next_hop) {
            self.send_l2(p, BROADCAST, ethernet::ETHERTYPE_IPV4);
            return;
        }
        if let Some(mac) = self.neigh.lookup(next_hop) {
            self.send_l2(p, mac, ethernet::ETHERTYPE_IPV4);
            return;
        }
        // A TCP retransmission of a segment still waiting for the neighbour replaces it: when the address
        // arrives, the segment leaves once, not once per retransmission timeout that passed meanwhile.
        let key = tcp_segment_key(p.data());
        let supersedes = |q: &PacketBuf| key.is_some() && tcp_segment_key(q.data()) == key;
        match self.neigh.resolve_replacing(next_hop, p, now, supersedes) {
            Resolve::Queued { request: true } => self.send_arp(arp::OP_REQUEST, [0; 6], next_hop, BROADCAST),
            Resolve::Queued { request: false } => {}
            Resolve::Dropped => {
                self.stats.qdisc_drops += 1;
                self.drop_reason(crate::monitor::DropReason::NeighQueuefull, 1);
            }
            Resolve::Send(_) => unreachable!("lookup() found no entry"),
        }
    }

    /// The limited broadcast, or the directed broadcast of one of our subnets.
    pub(super) fn is_broadcast(&self, ip: [u8; 4]) -> bool {
        ip == [255; 4]
            || std::iter::once((self.cfg.addr, self.cfg.prefix)).chain(self.cfg.secondary.iter().copied()).any(|(a, p)| {
                let host_mask = if p >= 32 { 0 } else { u32::MAX >> p };
                u32::from_be_bytes(ip) & host_mask == host_mask && crate::route::Route { dest: a, prefix: p, gateway: None }.matches(ip)
            })
    }

    pub(super) fn ipv4_input(&mut self, mut p: PacketBuf, now: Instant) {
        self.stats.in_receives += 1;
        if self.nf.is_some() {
            // As Linux's nf_defrag: conntrack and NAT see whole datagrams, fragments are held until then
            // (what is forwarded is fragmented again on the way out if the link needs it).
            match self.defrag_v4(p, now) {
                Some(whole) => p = whole,
                None => return,
            }
            if !self.nf_input(&mut p, now) {
                return;
            }
        }
        self.ipv4_local(p, now);
    }

    /// The input path after netfilter's hooks: header checks, then local delivery or (another host's) the
    /// router.
    pub(super) fn ipv4_local(&mut self, p: PacketBuf, now: Instant) {
        let Ok(ip) = ipv4::Packet::new_checked(p.data()) else {
            self.stats.in_hdr_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IpInhdr, 1);
            return;
        };
        if !ip.verify_checksum() {
            self.stats.in_csum_errors += 1;
            self.drop_reason(crate::monitor::DropReason::IpCsum, 1);
            return;
        }
        let dst = ip.dst();
        if self.dropped_martian(p.data()) {
            return;
        }
        if !self.local_v4(dst) && !self.is_broadcast(dst) {
            // Sent through `lo` to another interface of this host: the host delivers it there.
            if self.looped_to_host(&p.data()[..ip.total_len()]) {
                return;
            }
            // For another host: a router's, if forwarding is on (never a multicast or limited broadcast).
            if self.cfg.forwarding && dst[0] < 224 && self.forwarded.len() < 4096 {
                self.forwarded.push((p.data()[..ip.total_len()].to_vec(), self.nf_ctx));
            } else {
                self.drop_reason(crate::monitor::DropReason::Otherhost, 1);
            }
            return;
        }
        let r = ipv4::Repr::parse(&ip);
        // The transport reads the payload where it lies in the packet buffer; only a reassembled
        // datagram has a buffer of its own.
        let reassembled;
        let payload: &[u8] = if r.more_frags || r.frag_offset > 0 {
            match self.reassemble(&r, ip.payload(), now) {
                Some(d) => {
                    reassembled = d;
                    &reassembled
                }
                None => return,
            }
        } else {
            ip.payload()
        };
        self.stats.in_delivers += 1;
        let verified = p.csum == crate::skb::Csum::Verified && !(r.more_frags || r.frag_offset > 0);
        match r.protocol {
            ipv4::PROTO_ICMP => self.icmp_input(r.src, dst, payload, now),
            ipv4::PROTO_UDP => self.udp_input(r.src.into(), dst.into(), ip.header(), payload, verified, now),
            ipv4::PROTO_TCP => self.tcp_input(r.src.into(), dst.into(), payload, verified, now),
            _ => {}
        }
    }

    /// A fragment joins its datagram: the whole datagram once complete (one header, no fragment fields),
    /// `None` while held or when it is malformed. Anything else passes as it is.
    fn defrag_v4(&mut self, p: PacketBuf, now: Instant) -> Option<PacketBuf> {
        let (r, payload) = {
            let Ok(ip) = ipv4::Packet::new_checked(p.data()) else { return Some(p) };
            let r = ipv4::Repr::parse(&ip);
            if !(r.more_frags || r.frag_offset > 0) || !ip.verify_checksum() {
                return Some(p);
            }
            (r, ip.payload().to_vec())
        };
        let data = self.reassemble(&r, &payload, now)?;
        if data.len() + ipv4::MIN_HEADER_LEN > 65535 {
            return None;
        }
        let whole = ipv4::Repr { more_frags: false, frag_offset: 0, payload_len: data.len(), ..r };
        let mut b = vec![0u8; ipv4::MIN_HEADER_LEN + data.len()];
        whole.emit(&mut b[..ipv4::MIN_HEADER_LEN]);
        b[ipv4::MIN_HEADER_LEN..].copy_from_slice(&data);
        Some(PacketBuf::from_slice(&b))
    }

    pub(super) fn reassemble(&mut self, r: &ipv4::Repr, data: &[u8], now: Instant) -> Option<Vec<u8>> {
        let key = (r.src, r.dst, r.ident, r.protocol);
        match self.reasm.add(key, r.frag_offset, data, r.more_frags, now) {
            Outcome::Done(d) => {
                self.stats.reasm_oks += 1;
                Some(d)
            }
            Outcome::Held => None,
            Outcome::Failed => {
                self.stats.reasm_fails += 1;
                self.drop_reason(crate::monitor::DropReason::DupFrag, 1);
                None
            }
        }
    }

    /// A parse result, with failures counted as checksum or header errors.
    /// A transport header that did not parse: counted, with `csum` as the drop reason for a bad checksum.
    pub(super) fn count_parse_error<T>(&mut self, r: crate::wire::Result<T>, csum: crate::monitor::DropReason) -> Option<T> {
        match r {
            Ok(x) => Some(x),
            Err(crate::wire::Error::Checksum) => {
                self.stats.in_csum_errors += 1;
                self.drop_reason(csum, 1);
                None
            }
            Err(_) => {
                self.stats.in_hdr_errors += 1;
                self.drop_reason(crate::monitor::DropReason::PktTooSmall, 1);
                None
            }
        }
    }
}

/// Verifies a whole IPv4 packet's header checksum (helper for tests and tools).
pub fn ipv4_header_ok(b: &[u8]) -> bool {
    b.len() >= 20 && checksum::fold(checksum::sum(0, &b[..((b[0] & 0xF) as usize * 4).min(b.len())])) == 0xFFFF
}
