//! The host side of `exchange`: an AF_PACKET socket on an interface that answers each request frame with a
//! reply carrying the same sequence number and payload.

use crate::frames::*;
use std::ffi::CString;

pub fn run(ifname: Option<&str>, count: u64) -> Result<bool, String> {
    let ifname = ifname.ok_or("reflect needs --ifname IF")?;
    let mac_txt = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).map_err(|e| format!("{ifname}: {e}"))?;
    let mut mac = [0u8; 6];
    for (i, p) in mac_txt.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(p, 16).map_err(|e| e.to_string())?;
    }
    let proto = ETHERTYPE.to_be() as i32;
    // SAFETY: socket() with constant arguments; result checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(format!("AF_PACKET socket: {}", std::io::Error::last_os_error()));
    }
    let cname = CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {ifname}"));
    }
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETHERTYPE.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our socket to a valid sockaddr_ll of the right size.
    if unsafe { libc::bind(fd, &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) } < 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    eprintln!("reflecting on {ifname}");
    let mut buf = vec![0u8; 2048];
    let mut answered = 0u64;
    while count == 0 || answered < count {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(format!("recv: {}", std::io::Error::last_os_error()));
        }
        let f = &buf[..n as usize];
        if kind(f) != Some(KIND_REQUEST) {
            continue;
        }
        let mut r = f.to_vec();
        r[..6].copy_from_slice(&f[6..12]);
        r[6..12].copy_from_slice(&mac);
        r[14] = KIND_REPLY;
        // SAFETY: sending from our buffer on the bound socket.
        if unsafe { libc::send(fd, r.as_ptr().cast(), r.len(), 0) } < 0 {
            return Err(format!("send: {}", std::io::Error::last_os_error()));
        }
        answered += 1;
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    Ok(true)
}
