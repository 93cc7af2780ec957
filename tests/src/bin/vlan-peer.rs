//! A host-side peer that handles 802.1Q tags itself (this host kernel has no VLAN interfaces): on an
//! interface, it answers ARP and ICMP echo for one IPv4 address inside one VLAN, with tagged frames.
//!
//!   vlan-peer IFNAME VID IPV4

use std::net::Ipv4Addr;

const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x00];

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: vlan-peer IFNAME VID IPV4");
        std::process::exit(2);
    }
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
            if let Some(mut r) = reply {
                let mut t = vec![0x81, 0x00];
                t.extend_from_slice(&(tci & 0xfff).to_be_bytes());
                r.splice(12..12, t);
                libc::send(fd, r.as_ptr().cast(), r.len(), 0);
            }
        }
    }
}
