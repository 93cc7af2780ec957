//! `nic-lab --tap IF --ip ADDR/PREFIX tap-echo DEST`: ICMP echo requests written straight to a TAP and
//! their replies read back by a thread that never sleeps, not even between requests: the Linux kernel's own part of any round trip
//! through a TAP (no stack, no driver, no device of ours). The benchmark sets the round trips through the
//! stack, the driver and the device beside it.

use crate::Opts;
use stack::wire::{arp, ethernet, icmp, ipv4, Mac};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long one request waits for its reply before it counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest echo payload in one 1500-byte IPv4 packet (no fragments are sent).
const MAX_PAYLOAD: usize = 1500 - 20 - 8;

pub fn run(o: &Opts) -> Result<bool, String> {
    let name = o.tap.as_deref().ok_or("tap-echo needs --tap IFNAME")?;
    let ip = o.ip.as_deref().ok_or("tap-echo needs --ip ADDR/PREFIX (this end's address)")?;
    let me: Ipv4Addr = ip.split('/').next().unwrap_or_default().parse().map_err(|e| format!("--ip {ip}: {e}"))?;
    let dest: Ipv4Addr = o.dest.as_deref().unwrap_or_default().parse().map_err(|e| format!("DEST: {e}"))?;
    if o.size > MAX_PAYLOAD {
        return Err(format!("tap-echo: -s {} is more than one frame carries ({MAX_PAYLOAD})", o.size));
    }
    let tap = nic_tap::Tap::open(name).map_err(|e| format!("tap {name}: {e}"))?;
    if !tap.wait_operational(Duration::from_secs(2)) {
        return Err(format!("tap {name}: not operational (down, or its link not up)"));
    }
    let pid = std::process::id();
    let mac: Mac = [0x02, 0x4e, 0x49, 0x45, (pid >> 8) as u8, pid as u8];
    let mut e = Echo { tap, mac, me: me.octets(), buf: vec![0; 65536] };
    let peer = e.resolve(dest.octets())?;
    let ident = pid as u16;
    let payload: Vec<u8> = (0..o.size).map(|i| i as u8).collect();
    println!("TAP ECHO {dest} on {name}: {} data bytes, busy reads", payload.len());
    let (mut sent, mut received) = (0u64, 0u64);
    let mut rtts = Vec::new();
    for seq in 0..o.count.max(1) {
        let seq = seq as u16;
        let frame = e.request(peer, dest.octets(), ident, seq, &payload);
        let t0 = Instant::now();
        e.tap.send(&frame).map_err(|err| format!("tap {name}: {err}"))?;
        sent += 1;
        if e.await_reply(ident, seq, t0 + REPLY_TIMEOUT)? {
            let rtt = t0.elapsed().as_secs_f64() * 1000.0;
            rtts.push(rtt);
            received += 1;
            println!("{} bytes from {dest}: seq={seq} time={rtt:.3} ms", payload.len() + 8);
        } else {
            println!("seq={seq}: no reply within {} s", REPLY_TIMEOUT.as_secs());
        }
        // Until the next request, the TAP is read on (ARP answered, strays passed over) instead of sleeping:
        // a CPU that slept between requests would start each round trip cold, as the stack's busy-polling
        // rows never do.
        e.idle_until(Instant::now() + Duration::from_secs_f64(o.interval.max(0.0)))?;
    }
    println!("\n--- {dest} tap-echo statistics ---");
    println!("{sent} packets transmitted, {received} packets received, {:.0}% packet loss", 100.0 * (sent - received) as f64 / sent as f64);
    if !rtts.is_empty() {
        let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
        let max = rtts.iter().cloned().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        println!("round-trip min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    Ok(received == sent)
}

struct Echo {
    tap: nic_tap::Tap,
    mac: Mac,
    me: [u8; 4],
    buf: Vec<u8>,
}

impl Echo {
    /// The peer's MAC address, asked for with ARP (three requests, a second apart).
    fn resolve(&mut self, ip: [u8; 4]) -> Result<Mac, String> {
        for _ in 0..3 {
            let mut f = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
            ethernet::Repr { dst: [0xff; 6], src: self.mac, ethertype: ethernet::ETHERTYPE_ARP }.emit(&mut f);
            arp::Repr { op: arp::OP_REQUEST, sender_mac: self.mac, sender_ip: self.me, target_mac: [0; 6], target_ip: ip }
                .emit(&mut f[ethernet::HEADER_LEN..]);
            self.tap.send(&f).map_err(|e| format!("tap: {e}"))?;
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                self.tap.wait(Duration::from_millis(10));
                while let Some(n) = self.tap.recv(&mut self.buf).map_err(|e| format!("tap: {e}"))? {
                    if let Some(a) = self.arp(n) {
                        if a.op == arp::OP_REPLY && a.sender_ip == ip {
                            return Ok(a.sender_mac);
                        }
                    }
                }
            }
        }
        Err(format!("{} does not answer ARP", Ipv4Addr::from(ip)))
    }

    /// The ARP packet in the frame of `n` bytes in `buf`, if it is one; a request for our address is
    /// answered on the way, so that the peer can reply to us.
    fn arp(&mut self, n: usize) -> Option<arp::Repr> {
        let f = self.buf.get(..n)?;
        if f.get(12..14)? != ethernet::ETHERTYPE_ARP.to_be_bytes() {
            return None;
        }
        let a = arp::Repr::parse(f.get(ethernet::HEADER_LEN..)?).ok()?;
        if a.op == arp::OP_REQUEST && a.target_ip == self.me {
            let mut r = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
            ethernet::Repr { dst: a.sender_mac, src: self.mac, ethertype: ethernet::ETHERTYPE_ARP }.emit(&mut r);
            arp::Repr { op: arp::OP_REPLY, sender_mac: self.mac, sender_ip: self.me, target_mac: a.sender_mac, target_ip: a.sender_ip }
                .emit(&mut r[ethernet::HEADER_LEN..]);
            let _ = self.tap.send(&r);
        }
        Some(a)
    }

    /// An echo request frame to `dst` (at `peer`).
    fn request(&self, peer: Mac, dst: [u8; 4], ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let m = icmp::Repr::EchoRequest { ident, seq, data };
        let ip = ipv4::Repr {
            src: self.me,
            dst,
            protocol: ipv4::PROTO_ICMP,
            ttl: 64,
            ident: seq,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: m.buffer_len(),
        };
        let mut f = vec![0u8; ethernet::HEADER_LEN + ip.buffer_len() + m.buffer_len()];
        ethernet::Repr { dst: peer, src: self.mac, ethertype: ethernet::ETHERTYPE_IPV4 }.emit(&mut f);
        ip.emit(&mut f[ethernet::HEADER_LEN..]);
        m.emit(&mut f[ethernet::HEADER_LEN + ip.buffer_len()..]);
        f
    }

    /// Reads the TAP without sleeping until `end`, answering ARP requests for our address.
    fn idle_until(&mut self, end: Instant) -> Result<(), String> {
        while Instant::now() < end {
            if let Some(n) = self.tap.recv(&mut self.buf).map_err(|e| format!("tap: {e}"))? {
                self.arp(n);
            }
        }
        Ok(())
    }

    /// Reads the TAP without sleeping until the echo reply `ident`/`seq` comes (true) or `deadline` passes
    /// (false); ARP requests for our address are answered meanwhile, anything else is passed over.
    fn await_reply(&mut self, ident: u16, seq: u16, deadline: Instant) -> Result<bool, String> {
        loop {
            let Some(n) = self.tap.recv(&mut self.buf).map_err(|e| format!("tap: {e}"))? else {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                continue;
            };
            if self.arp(n).is_some() {
                continue;
            }
            let Some(p) = self.buf.get(ethernet::HEADER_LEN..n) else { continue };
            let Ok(ip) = ipv4::Packet::new_checked(p) else { continue };
            if ip.protocol() != ipv4::PROTO_ICMP || ip.dst() != self.me {
                continue;
            }
            let Some(l4) = p.get(ip.header_len()..ip.total_len()) else { continue };
            if let Ok(icmp::Repr::EchoReply { ident: i, seq: s, .. }) = icmp::Repr::parse(l4) {
                if (i, s) == (ident, seq) {
                    return Ok(true);
                }
            }
        }
    }
}
