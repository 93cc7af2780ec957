//! `nic-lab ... --ip ADDR/PREFIX ping DEST`: the Rust stack pinging through the driver or a TAP device.

use crate::Opts;
use driver::{Config, E1000e};
use stack::dev::Device;
use stack::time::Instant;
use stack::{PingEvent, Stack};
use std::net::Ipv4Addr;
use std::time::Duration;

fn parse_cidr(s: &str) -> Result<([u8; 4], u8), String> {
    let (a, p) = s.split_once('/').ok_or(format!("--ip {s}: expected ADDR/PREFIX"))?;
    let a: Ipv4Addr = a.parse().map_err(|e| format!("--ip {s}: {e}"))?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or(format!("--ip {s}: bad prefix"))?;
    Ok((a.octets(), p))
}

/// The stack on the device the options name.
pub fn open_stack(o: &Opts) -> Result<Stack, String> {
    let (addr, prefix) = parse_cidr(o.ip.as_deref().ok_or("--ip ADDR/PREFIX is required")?)?;
    let dev: Box<dyn Device> = if let Some(t) = &o.tap {
        let pid = std::process::id();
        let mac = [0x02, 0x4e, 0x49, 0x43, (pid >> 8) as u8, pid as u8];
        Box::new(stack::dev::tap::Tap::open(t, mac).map_err(|e| format!("tap {t}: {e}"))?)
    } else {
        let spec = o.transport.as_deref().ok_or("--tap IFNAME, --vfio-user PATH or --vfio-pci BDF is required")?;
        let t = driver::open_transport(spec).map_err(|e| e.to_string())?;
        let d = E1000e::open(t, Config { irq: o.irq, ..Default::default() }).map_err(|e| format!("{spec}: {e}"))?;
        Box::new(stack::dev::nic::NicDevice::new(d))
    };
    let dev: Box<dyn Device> = match &o.impair {
        Some(spec) => {
            let mut imp = stack::dev::sim::Impairment::default();
            let mut seed = 1u64;
            for kv in spec.split(',') {
                let (k, v) = kv.split_once('=').ok_or(format!("--impair {spec}: expected key=value"))?;
                let n: u64 = v.parse().map_err(|e| format!("--impair {k}: {e}"))?;
                match k {
                    "loss" => imp.loss = n as u32,
                    "reorder" => imp.reorder = n as u32,
                    "dup" => imp.duplicate = n as u32,
                    "seed" => seed = n,
                    _ => return Err(format!("--impair: unknown {k}")),
                }
            }
            eprintln!("impairment: loss {}% reorder {}% duplicate {}% (seed {seed})", imp.loss, imp.reorder, imp.duplicate);
            Box::new(stack::dev::sim::Impaired::new(dev, imp, seed))
        }
        None => dev,
    };
    let mut cfg = stack::Config::new(addr, prefix);
    if let Some(g) = &o.gw {
        cfg.gateway = Some(g.parse::<Ipv4Addr>().map_err(|e| format!("--gw {g}: {e}"))?.octets());
    }
    let mut s = Stack::new(dev, cfg);
    if o.cubic {
        s.tcp_cfg.cc = stack::tcp::CongestionControl::Cubic;
    }
    Ok(s)
}

pub fn run(o: &Opts) -> Result<bool, String> {
    let dest: Ipv4Addr = o.dest.as_deref().ok_or("ping needs DEST")?.parse().map_err(|e| format!("DEST: {e}"))?;
    let mut s = open_stack(o)?;
    let count = o.count.max(1);
    let interval = Duration::from_secs_f64(o.interval.max(0.01));
    let ident = std::process::id() as u16;
    let payload: Vec<u8> = (0..56u8).collect();
    println!("PING {dest}: {} data bytes", payload.len());
    let (mut sent, mut received) = (0u64, 0u64);
    let mut sent_at = std::collections::HashMap::new();
    let mut rtts = Vec::new();
    let mut next = Instant::now();
    let deadline_after_last = Duration::from_secs(2);
    let mut last_sent = Instant::now();
    loop {
        let now = Instant::now();
        if sent < count && now >= next {
            match s.ping_send(dest.octets(), ident, sent as u16, &payload, now) {
                Ok(()) => {}
                Err(e) => println!("ping: {e}"),
            }
            sent_at.insert(sent as u16, now);
            sent += 1;
            last_sent = now;
            next = now + interval;
        }
        s.poll(now);
        for ev in s.ping_events(ident) {
            match ev {
                PingEvent::Reply { from, seq, len, at } => {
                    if let Some(t) = sent_at.remove(&seq) {
                        let rtt = (at - t).as_secs_f64() * 1000.0;
                        rtts.push(rtt);
                        received += 1;
                        println!("{} bytes from {}: seq={seq} time={rtt:.3} ms", len + 8, Ipv4Addr::from(from));
                    }
                }
                PingEvent::Error { from, seq, errno } => println!("From {}: icmp_seq={seq} {errno}", Ipv4Addr::from(from)),
            }
        }
        if sent >= count && (received >= count || Instant::now() - last_sent > deadline_after_last) {
            break;
        }
        let _ = s.dev.wait(Duration::from_millis(5));
    }
    let loss = 100.0 * (sent - received) as f64 / sent as f64;
    println!("\n--- {dest} ping statistics ---");
    println!("{sent} packets transmitted, {received} packets received, {loss:.0}% packet loss");
    if !rtts.is_empty() {
        let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
        let max = rtts.iter().cloned().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        println!("round-trip min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    Ok(received == sent)
}
