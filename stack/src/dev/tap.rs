//! A TAP device: the stack as a host on the Linux kernel's side of a virtual wire.

use super::Device;
use crate::skb::{Csum, GsoKind, PacketBuf};
use std::collections::VecDeque;
use std::io;
use std::time::Duration;

/// Room a plain frame is read into: a 1500-byte MTU's frame with a VLAN tag; longer frames go on into the
/// overflow buffer.
const FRAME_ROOM: usize = 1536;
/// Room a frame is read into with the TAP's offloads: a 64 KiB super-packet with its headers.
const SUPER_PACKET_ROOM: usize = 65536 + 64;

pub struct Tap {
    tap: nic_tap::Tap,
    mac: crate::wire::Mac,
    /// Where the part of a frame beyond a packet buffer's room is read (`poll`).
    overflow: Vec<u8>,
    /// Frames cross with a virtio-net header: TCP super-packets and partial checksums both ways.
    offload: bool,
    /// How long `wait` looks for a frame without sleeping (`set_busy_poll`).
    busy_poll: Duration,
    /// Reads dropped: shorter than their virtio-net header, or with a header that does not parse.
    dropped: u64,
    /// What busy polling saw: the waits it ended with a frame, and those that went on to sleep.
    pub busy_stats: BusyStats,
}

/// The outcome of busy-polling waits (`Tap::set_busy_poll`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyStats {
    /// Waits that found a frame while polling, without sleeping.
    pub hits: u64,
    /// Waits whose polling window (shorter than their timeout) passed with nothing: they slept in poll(2)
    /// for the rest of it.
    pub slept: u64,
}

impl Tap {
    /// Opens (or creates) TAP `name`; the stack uses `mac` as its own address on it.
    /// Attaches to TAP `name` and waits (up to 2 s) until the kernel can send through it, so that the first
    /// ARP request gets its answer instead of a retry a second later.
    pub fn open(name: &str, mac: crate::wire::Mac) -> io::Result<Tap> {
        let tap = nic_tap::Tap::open(name)?;
        if !tap.wait_operational(Duration::from_secs(2)) {
            log::warn!("tap {name}: not operational (down, or its link not up yet); sending anyway");
        }
        Ok(Tap {
            tap,
            mac,
            overflow: vec![0; 65536],
            offload: false,
            busy_poll: Duration::ZERO,
            dropped: 0,
            busy_stats: BusyStats::default(),
        })
    }

    /// As `open`, with the TAP's offloads (IFF_VNET_HDR, TUNSETOFFLOAD): the stack hands the kernel
    /// 64 KiB TCP super-packets with their checksums left partial, and takes the kernel's (GRO-merged or
    /// locally generated) super-packets whole, their checksums trusted as the kernel trusts its own.
    pub fn open_offload(name: &str, mac: crate::wire::Mac) -> io::Result<Tap> {
        let tap = nic_tap::Tap::open_vnet(name)?;
        tap.set_offload(nic_tap::TUN_F_CSUM | nic_tap::TUN_F_TSO4 | nic_tap::TUN_F_TSO6 | nic_tap::TUN_F_TSO_ECN)?;
        if !tap.wait_operational(Duration::from_secs(2)) {
            log::warn!("tap {name}: not operational (down, or its link not up yet); sending anyway");
        }
        Ok(Tap { tap, mac, overflow: Vec::new(), offload: true, busy_poll: Duration::ZERO, dropped: 0, busy_stats: BusyStats::default() })
    }

    /// Busy polling, as Linux's `net.core.busy_poll` does for a socket: each `wait` looks at the TAP
    /// without sleeping for up to `window` (bounded by its own timeout) before it sleeps in poll(2), so
    /// that a frame arriving meanwhile is taken without a wake-up of this thread. Each look yields the
    /// core, so that other work on it still runs. Zero (the default) sleeps at once.
    pub fn set_busy_poll(&mut self, window: Duration) {
        self.busy_poll = window;
    }

    /// The virtio-net header for a frame: GSO for a TCP super-packet, a partial checksum where the stack
    /// left one.
    fn vnet_hdr(p: &PacketBuf) -> nic_tap::VnetHdr {
        use nic_tap::VnetHdr;
        let mut h = VnetHdr::default();
        if let (Csum::Partial { offset, .. }, Some(l4)) = (p.csum, p.transport_header) {
            h.flags = VnetHdr::F_NEEDS_CSUM;
            h.csum_start = l4 as u16;
            h.csum_offset = offset as u16;
            if let Some(g) = p.gso {
                let doff = p.data().get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4);
                h.gso_type = match g.kind {
                    GsoKind::TcpV4 => VnetHdr::GSO_TCPV4,
                    GsoKind::TcpV6 => VnetHdr::GSO_TCPV6,
                };
                h.gso_size = g.size;
                h.hdr_len = (l4 + doff) as u16;
            }
        }
        h
    }
}

impl Device for Tap {
    fn mac(&self) -> crate::wire::Mac {
        self.mac
    }
    fn features(&self) -> super::Features {
        super::Features { tso: self.offload, tx_csum: self.offload, rx_csum: self.offload, vlan: false, tso6: self.offload }
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut n = 0;
        while let Some(p) = q.front() {
            // One write of the parts: the virtio-net header (with the offloads), the linear data and each
            // paged fragment; a packet in more parts than one write takes is joined first.
            let h = Tap::vnet_hdr(p).to_bytes();
            let head: &[u8] = if self.offload { &h } else { &[] };
            let count = 2 + p.frags.len();
            let sent = if count <= nic_tap::MAX_PARTS {
                let mut parts: [&[u8]; nic_tap::MAX_PARTS] = [&[]; nic_tap::MAX_PARTS];
                let pieces = [head, p.data()].into_iter().chain(p.frags.iter().map(|f| f.bytes()));
                for (slot, piece) in parts.iter_mut().zip(pieces) {
                    *slot = piece;
                }
                self.tap.send_parts(parts.get(..count).unwrap_or_default())?
            } else {
                self.tap.send_parts(&[head, &p.to_vec()])?
            };
            if !sent {
                break;
            }
            q.pop_front();
            n += 1;
        }
        Ok(n)
    }
    /// Each frame is read straight into its packet buffer: with the TAP's offloads into one with a
    /// super-packet's room, on plain frames into one with a frame's room, and a longer frame (a larger
    /// MTU) read on into `overflow` and appended.
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        use nic_tap::VnetHdr;
        let room = if self.offload { SUPER_PACKET_ROOM } else { FRAME_ROOM };
        // Reads, bounded by the budget; frames, those handed on.
        let (mut reads, mut n) = (0, 0);
        while reads < budget {
            let mut h = [0u8; VnetHdr::LEN];
            let head: &mut [u8] = if self.offload { &mut h } else { &mut [] };
            let (tap, overflow) = (&self.tap, &mut self.overflow);
            let (mut p, got) = PacketBuf::read_with(room, |v| tap.recv_split(head, v, overflow));
            let Some(len) = got? else { break };
            reads += 1;
            let hlen = if self.offload { VnetHdr::LEN } else { 0 };
            let Some(frame_len) = len.checked_sub(hlen) else {
                self.dropped += 1;
                continue;
            };
            let beyond = frame_len.saturating_sub(p.linear_len());
            if beyond > 0 {
                let more = self.overflow.get(..beyond).unwrap_or_default();
                p.put(more.len()).copy_from_slice(more);
            }
            if self.offload {
                let Some(h) = VnetHdr::parse(&h) else {
                    self.dropped += 1;
                    continue;
                };
                // The kernel's partial checksums (its own packets) and verified ones are trusted, as it does.
                if h.flags & (VnetHdr::F_NEEDS_CSUM | VnetHdr::F_DATA_VALID) != 0 {
                    p.csum = Csum::Verified;
                }
            }
            out.push(p);
            n += 1;
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.busy_poll.is_zero() {
            self.tap.wait(timeout);
            return Ok(());
        }
        let start = std::time::Instant::now();
        let window = self.busy_poll.min(timeout);
        loop {
            if self.tap.wait_for(Duration::ZERO) {
                self.busy_stats.hits += 1;
                return Ok(());
            }
            if start.elapsed() >= window {
                break;
            }
            std::thread::yield_now();
        }
        // The window covered the whole timeout: back to the caller without having slept.
        let left = timeout.saturating_sub(start.elapsed());
        if !left.is_zero() && window < timeout {
            self.busy_stats.slept += 1;
            self.tap.wait(left);
        }
        Ok(())
    }
    fn name(&self) -> String {
        format!("tap:{}", self.tap.name())
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.tap.as_raw_fd())
    }
    fn report(&self) -> Option<String> {
        let b = self.busy_stats;
        let busy = (!self.busy_poll.is_zero())
            .then(|| format!("busy poll {} us: {} waits ended by a frame, {} slept", self.busy_poll.as_micros(), b.hits, b.slept));
        let dropped = (self.dropped > 0).then(|| format!("{} malformed reads dropped", self.dropped));
        match (busy, dropped) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::Mac;
    use std::sync::Arc;
    use std::time::Instant;

    fn ip(args: &[&str]) {
        let s = std::process::Command::new("ip").args(args).status().expect("ip(8)");
        assert!(s.success(), "ip {}", args.join(" "));
    }

    /// Datagrams the kernel sends out of a TAP, each read by `poll` into one packet buffer: in plain mode
    /// a frame longer than a buffer's room (a 9000-byte MTU) is read on into the overflow and appended;
    /// with the offloads the same frames come behind their virtio-net header, into a super-packet's room.
    #[test]
    fn frames_are_read_whole_in_both_modes() {
        const MAC: Mac = [0x02, 0, 0, 0, 0x5a, 0x01];
        for offload in [false, true] {
            let name = format!("st{}m{}", std::process::id() % 100_000, u8::from(offload));
            let net = format!("10.213.{}", (std::process::id() % 120) * 2 + u32::from(offload));
            let mut t =
                if offload { Tap::open_offload(&name, MAC) } else { Tap::open(&name, MAC) }.expect("open a TAP (needs CAP_NET_ADMIN)");
            ip(&["link", "set", &name, "mtu", "9000", "up"]);
            ip(&["addr", "add", &format!("{net}.1/24"), "dev", &name]);
            ip(&["neigh", "replace", &format!("{net}.2"), "lladdr", "02:00:00:00:5a:01", "dev", &name, "nud", "permanent"]);
            let sock = std::net::UdpSocket::bind(format!("{net}.1:0")).unwrap();
            for size in [18usize, 1472, 8000] {
                let payload: Vec<u8> = (0..size).map(|i| (i as u8) ^ (size as u8)).collect();
                // The kernel may drop what it sends through a TAP it has just brought up: sent again every
                // 100 ms until it comes through.
                let t0 = Instant::now();
                let p = 'found: loop {
                    assert!(t0.elapsed() < Duration::from_secs(5), "{name}: no {size}-byte datagram came out");
                    sock.send_to(&payload, format!("{net}.2:9")).unwrap();
                    let t1 = Instant::now();
                    while t1.elapsed() < Duration::from_millis(100) {
                        let mut out = Vec::new();
                        t.poll(8, &mut out).unwrap();
                        if let Some(p) = out.into_iter().find(|p| p.data().len() == 14 + 28 + size && p.data().ends_with(&payload)) {
                            break 'found p;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                };
                let f = p.data();
                assert_eq!((&f[..6], &f[12..14], f[14 + 9]), (&MAC[..], &[0x08, 0x00][..], 17), "{name}: a UDP/IPv4 frame to us");
                assert_eq!(usize::from(u16::from_be_bytes([f[16], f[17]])), 28 + size, "{name}: the IP length");
                assert!(p.headroom() >= crate::skb::DEFAULT_HEADROOM, "{name}: read behind the headroom");
                if offload {
                    assert_eq!(p.csum, Csum::Verified, "{name}: the kernel's partial checksum is trusted");
                }
            }
        }
    }

    /// A packet with paged fragments leaves as one frame, its parts in order: in one write of its parts
    /// (two fragments), and joined first when it has more parts than one write takes (nine). What the
    /// kernel receives on the TAP is read by a packet socket bound to it.
    #[test]
    fn packets_with_fragments_leave_whole_in_both_modes() {
        const MAC: Mac = [0x02, 0, 0, 0, 0x5b, 0x01];
        for offload in [false, true] {
            let name = format!("sf{}m{}", std::process::id() % 100_000, u8::from(offload));
            let mut t =
                if offload { Tap::open_offload(&name, MAC) } else { Tap::open(&name, MAC) }.expect("open a TAP (needs CAP_NET_ADMIN)");
            ip(&["link", "set", &name, "up"]);
            let ifname = std::ffi::CString::new(name.clone()).unwrap();
            // SAFETY: a packet socket of our own (closed by OwnedFd), bound with a zeroed sockaddr_ll
            // naming the TAP; SO_RCVTIMEO takes a timeval.
            let sock = unsafe {
                use std::os::fd::FromRawFd;
                let proto = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto));
                assert!(fd >= 0, "packet socket");
                let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                let mut sa: libc::sockaddr_ll = std::mem::zeroed();
                sa.sll_family = libc::AF_PACKET as u16;
                sa.sll_protocol = proto;
                sa.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
                let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                assert_eq!(libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sa).cast(), len), 0, "bind to {name}");
                let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
                let tvl = std::mem::size_of::<libc::timeval>() as u32;
                libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, std::ptr::addr_of!(tv).cast(), tvl);
                fd
            };
            use std::os::fd::AsRawFd;
            for (round, frags) in [(0u8, 2usize), (1, 9)] {
                let mut head = vec![0u8; 60];
                head[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x5b, 0x02]);
                head[6..12].copy_from_slice(&MAC);
                head[12..14].copy_from_slice(&[0x88, 0xb5]);
                head[14] = round;
                let mut p = PacketBuf::from_slice(&head);
                for i in 0..frags {
                    let data: Arc<[u8]> = (0..300).map(|b| (b as u8) ^ (i as u8 * 31) ^ round).collect::<Vec<u8>>().into();
                    p.add_frag(data, 10 + i, 200 + i);
                }
                let want = p.to_vec();
                // The kernel may drop what comes through a TAP it has just brought up: sent again every 100 ms.
                let t0 = Instant::now();
                'found: loop {
                    assert!(t0.elapsed() < Duration::from_secs(5), "{name}: the {frags}-fragment frame did not arrive");
                    let mut q = VecDeque::from([p.clone()]);
                    assert_eq!(t.transmit(&mut q).unwrap(), 1, "{name}: taken");
                    let mut buf = vec![0u8; 4096];
                    // SAFETY: reading into a live buffer of its length.
                    while let n @ 0.. = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } {
                        let got = buf.get(..n as usize).unwrap_or_default();
                        if got.get(12..15) == Some(&[0x88, 0xb5, round][..]) {
                            assert_eq!(got, &want[..], "{name}: the frame with {frags} fragments, whole and in order");
                            break 'found;
                        }
                    }
                }
            }
        }
    }
}
