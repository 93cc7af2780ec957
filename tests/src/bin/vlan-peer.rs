//! A host-side peer that handles 802.1Q tags itself (this host kernel has no VLAN interfaces): on an
//! interface, it answers ARP and ICMP echo for one IPv4 address inside one VLAN, with tagged frames. With
//! `--ping DST COUNT` it also pings DST in that VLAN (ARP first, then COUNT echo requests 100 ms apart),
//! prints how many were answered and exits 0 only if all were (within 3 s of the last request).
//!
//!   vlan-peer IFNAME VID IPV4 [--ping DST COUNT]

use std::net::Ipv4Addr;

const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x00];

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The frame with an 802.1Q tag for `vid` after its addresses.
fn tagged(mut f: Vec<u8>, vid: u16) -> Vec<u8> {
    let mut t = vec![0x81, 0x00];
    t.extend_from_slice(&vid.to_be_bytes());
    f.splice(12..12, t);
    f
}

const ECHO_ID: u16 = 0x7e57;

/// Pings one address inside the VLAN: ARP until answered, then echo requests 100 ms apart.
struct Pinger {
    dst: [u8; 4],
    count: u16,
    mac: Option<[u8; 6]>,
    sent: u16,
    answered: std::collections::BTreeSet<u16>,
    next: std::time::Instant,
    /// When the last request went.
    last: Option<std::time::Instant>,
    began: std::time::Instant,
}

impl Pinger {
    /// The next frame to send (untagged), if one is due.
    fn turn(&mut self, ip: [u8; 4]) -> Option<Vec<u8>> {
        let now = std::time::Instant::now();
        if now < self.next || self.sent >= self.count {
            return None;
        }
        let Some(mac) = self.mac else {
            self.next = now + std::time::Duration::from_millis(300);
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&self.dst);
            return Some(f);
        };
        self.next = now + std::time::Duration::from_millis(100);
        self.last = Some(now);
        self.sent += 1;
        let mut f = mac.to_vec();
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut icmp = vec![8, 0, 0, 0];
        icmp.extend_from_slice(&ECHO_ID.to_be_bytes());
        icmp.extend_from_slice(&self.sent.to_be_bytes());
        icmp.extend_from_slice(&[0x5a; 56]);
        let ck = csum(&icmp);
        icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        let mut iph = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
        iph[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        iph.extend_from_slice(&ip);
        iph.extend_from_slice(&self.dst);
        let ck = csum(&iph);
        iph[10..12].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&iph);
        f.extend_from_slice(&icmp);
        Some(f)
    }

    /// A frame of the VLAN (untagged): an ARP reply from the destination, or an echo reply to us.
    fn heard(&mut self, f: &[u8], ip: [u8; 4]) {
        let et = u16::from_be_bytes([f[12], f[13]]);
        if et == 0x0806 && f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == self.dst {
            self.mac.get_or_insert_with(|| f[22..28].try_into().unwrap());
        }
        if et == 0x0800 && f.len() >= 42 && f[26..30] == self.dst && f[30..34] == ip && f[23] == 1 {
            let l4 = 14 + (f[14] & 0xf) as usize * 4;
            if f.len() >= l4 + 8 && f[l4] == 0 && f[l4 + 4..l4 + 6] == ECHO_ID.to_be_bytes() {
                self.answered.insert(u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]));
            }
        }
    }

    /// Whether all were answered, once that is known.
    fn done(&self) -> Option<bool> {
        let all = self.answered.len() == usize::from(self.count);
        let late = self.last.is_some_and(|t| self.sent == self.count && t.elapsed() > std::time::Duration::from_secs(3));
        let unresolved = self.mac.is_none() && self.began.elapsed() > std::time::Duration::from_secs(10);
        if unresolved {
            println!("no ARP reply from the destination");
        }
        (all || late || unresolved).then_some(all)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && !(args.len() == 7 && args[4] == "--ping") {
        eprintln!("usage: vlan-peer IFNAME VID IPV4 [--ping DST COUNT]");
        std::process::exit(2);
    }
    let mut pinger = (args.len() == 7).then(|| Pinger {
        dst: args[5].parse::<Ipv4Addr>().expect("DST").octets(),
        count: args[6].parse().expect("COUNT"),
        mac: None,
        sent: 0,
        answered: std::collections::BTreeSet::new(),
        next: std::time::Instant::now(),
        last: None,
        began: std::time::Instant::now(),
    });
    let vid: u16 = args[2].parse().expect("VID");
    let ip: Ipv4Addr = args[3].parse().expect("IPV4");
    let ip = ip.octets();
    let name = std::ffi::CString::new(args[1].clone()).unwrap();
    // SAFETY: plain socket calls with checked results; buffers are ours and sized as passed.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one as *const _ as *const libc::c_void, 4);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        assert!(sll.sll_ifindex > 0, "no interface {}", args[1]);
        assert!(libc::bind(fd, &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) == 0);
        // Wake every 20 ms to send the pings' next frame on time.
        let tv = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let mut buf = vec![0u8; 65536];
        let mut cmsg = [0u64; 64];
        loop {
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cmsg);
            if let Some(p) = pinger.as_mut() {
                if let Some(frame) = p.turn(ip) {
                    let frame = tagged(frame, vid);
                    libc::send(fd, frame.as_ptr().cast(), frame.len(), 0);
                }
                if let Some(ok) = p.done() {
                    println!("{} of {} echo requests answered", p.answered.len(), p.count);
                    std::process::exit(if ok { 0 } else { 1 });
                }
            }
            let n = libc::recvmsg(fd, &mut msg, 0);
            if n < 0 {
                continue;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            // The kernel moves the tag out of the data into auxdata.
            let mut tag: Option<u16> = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::tpacket_auxdata);
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        tag = Some(aux.tp_vlan_tci);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            let mut f = buf[..n as usize].to_vec();
            if tag.is_none() && f.len() >= 18 && f[12..14] == [0x81, 0x00] {
                tag = Some(u16::from_be_bytes([f[14], f[15]]));
                f.drain(12..16);
            }
            let Some(tci) = tag else { continue };
            if tci & 0xfff != vid || f.len() < 14 {
                continue;
            }
            let et = u16::from_be_bytes([f[12], f[13]]);
            if let Some(p) = pinger.as_mut() {
                p.heard(&f, ip);
            }
            let reply: Option<Vec<u8>> = match et {
                0x0806 if f.len() >= 42 && f[20..22] == [0, 1] && f[38..42] == ip => {
                    let mut r = f[..42].to_vec();
                    r[0..6].copy_from_slice(&f[6..12]);
                    r[6..12].copy_from_slice(&PEER_MAC);
                    r[20..22].copy_from_slice(&[0, 2]);
                    r[22..28].copy_from_slice(&PEER_MAC);
                    r[28..32].copy_from_slice(&ip);
                    r[32..42].copy_from_slice(&f[22..32]);
                    Some(r)
                }
                0x0800 if f.len() >= 34 && f[30..34] == ip && f[23] == 1 => {
                    let ihl = (f[14] & 0xf) as usize * 4;
                    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
                    if f.len() < 14 + total || f.get(14 + ihl) != Some(&8) {
                        None
                    } else {
                        let mut r = f[..14 + total].to_vec();
                        r[0..6].copy_from_slice(&f[6..12]);
                        r[6..12].copy_from_slice(&PEER_MAC);
                        r[26..30].copy_from_slice(&f[30..34]);
                        r[30..34].copy_from_slice(&f[26..30]);
                        r[24..26].copy_from_slice(&[0, 0]);
                        let ck = csum(&r[14..14 + ihl]);
                        r[24..26].copy_from_slice(&ck.to_be_bytes());
                        let l4 = 14 + ihl;
                        r[l4] = 0;
                        r[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
                        let ck = csum(&r[l4..]);
                        r[l4 + 2..l4 + 4].copy_from_slice(&ck.to_be_bytes());
                        Some(r)
                    }
                }
                _ => None,
            };
            if let Some(r) = reply {
                let r = tagged(r, tci & 0xfff);
                libc::send(fd, r.as_ptr().cast(), r.len(), 0);
            }
        }
    }
}
