//! `nic-lab ... --ip ADDR/PREFIX ping DEST`: the Rust stack pinging through the driver or a TAP device.

use crate::Opts;
use driver::{Config, E1000e};
use stack::dev::Device;
use stack::time::Instant;
use stack::{Ping6Event, PingEvent, Stack};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

fn parse_cidr(s: &str) -> Result<([u8; 4], u8), String> {
    let (a, p) = s.split_once('/').ok_or(format!("--ip {s}: expected ADDR/PREFIX"))?;
    let a: Ipv4Addr = a.parse().map_err(|e| format!("--ip {s}: {e}"))?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or(format!("--ip {s}: bad prefix"))?;
    Ok((a.octets(), p))
}

/// A device from a spec: `tap:IFNAME` or `vfio-user:PATH` (a card through our driver).
pub fn open_device(spec: &str, o: &Opts, index: u8) -> Result<Box<dyn Device>, String> {
    if let Some(t) = spec.strip_prefix("tap:") {
        let pid = std::process::id();
        let mac = [0x02, 0x4e, 0x49, 0x50u8.wrapping_add(index), (pid >> 8) as u8, pid as u8];
        return tap(t, mac, false, o);
    }
    card(spec, o)
}

/// TAP `name` with the stack at `mac` on it, with its offloads if asked, busy polled as `--busy-poll` says.
fn tap(name: &str, mac: stack::wire::Mac, offload: bool, o: &Opts) -> Result<Box<dyn Device>, String> {
    let tap = if offload { stack::dev::tap::Tap::open_offload(name, mac) } else { stack::dev::tap::Tap::open(name, mac) };
    let mut tap = tap.map_err(|e| format!("tap {name}: {e}"))?;
    tap.set_busy_poll(Duration::from_micros(o.busy_poll.unwrap_or(0)));
    Ok(Box::new(tap))
}

/// The card through our driver, with the options' RSS and XDP program.
fn card(spec: &str, o: &Opts) -> Result<Box<dyn Device>, String> {
    let t = driver::open_transport(spec).map_err(|e| format!("{spec}: {e}"))?;
    let mut cfg = Config { rss: o.rss, ..o.config() };
    if o.latency {
        cfg = cfg.latency();
    }
    if let Some(us) = o.busy_poll {
        cfg.busy_poll = std::time::Duration::from_micros(us);
    }
    let d = E1000e::open(t, cfg).map_err(|e| format!("{spec}: {e}"))?;
    let mut nic = stack::dev::nic::NicDevice::new(d);
    if !o.xdp.is_empty() {
        let prog = stack::xdp::program(&o.xdp)?;
        let mut sinks: Vec<Box<dyn stack::xdp::XdpSink>> = Vec::new();
        match o.xdp_redirect.as_deref() {
            None => {}
            Some("queue") => sinks.push(Box::new(stack::xdp::XskQueue::new(4096))),
            Some(t) => {
                let name = t.strip_prefix("tap:").ok_or(format!("--xdp-redirect {t}: tap:IFNAME or queue"))?;
                let pid = std::process::id();
                let mac = [0x02, 0x58, 0x44, 0x50, (pid >> 8) as u8, pid as u8];
                let tap = stack::dev::tap::Tap::open(name, mac).map_err(|e| format!("--xdp-redirect tap {name}: {e}"))?;
                sinks.push(Box::new(stack::xdp::DeviceSink::new(tap)));
            }
        }
        eprintln!(
            "xdp: {} attached{}",
            prog.name(),
            o.xdp_redirect.as_deref().map(|t| format!(", redirecting to {t}")).unwrap_or_default()
        );
        nic.set_xdp(prog, sinks);
    }
    Ok(Box::new(nic))
}

/// The stack on the device the options name.
pub fn open_stack(o: &Opts) -> Result<Stack, String> {
    if let Some(mode) = &o.bond {
        let mode: stack::dev::bond::Mode = mode.parse()?;
        if o.slaves.len() < 2 {
            return Err("--bond needs two or more --slave devices".into());
        }
        let mut slaves = Vec::new();
        for (i, sp) in o.slaves.iter().enumerate() {
            slaves.push(open_device(sp, o, i as u8)?);
        }
        return stack_on(Box::new(stack::dev::bond::Bond::new("bond0", mode, slaves)), o);
    }
    let dev: Box<dyn Device> = if let Some(t) = &o.tap {
        let pid = std::process::id();
        let mac = [0x02, 0x4e, 0x49, 0x43, (pid >> 8) as u8, pid as u8];
        tap(t, mac, o.tap_offload, o)?
    } else {
        let spec = o.transport.as_deref().ok_or("--tap IFNAME, --vfio-user PATH or --vfio-pci BDF is required")?;
        card(spec, o)?
    };
    stack_on(dev, o)
}

/// A stack on `dev` as the options configure it (VLAN, impairment, addresses, routes, IPv6).
pub fn stack_on(dev: Box<dyn Device>, o: &Opts) -> Result<Stack, String> {
    let (addr, prefix) = parse_cidr(o.ip.as_deref().ok_or("--ip ADDR/PREFIX is required")?)?;
    let dev: Box<dyn Device> = match o.vlan {
        Some(vid) => {
            let mux = stack::dev::vlan::VlanMux::new(dev, o.vlan_offload).map_err(|e| format!("--vlan {vid}: {e}"))?;
            Box::new(stack::dev::vlan::VlanMux::vlan(&mux, vid).map_err(|e| format!("--vlan {vid}: {e}"))?)
        }
        None => dev,
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
    for more in &o.ip_more {
        cfg.secondary.push(parse_cidr(more)?);
    }
    if o.ipv6 {
        let mut v6 = stack::Ipv6Config::default();
        for a in &o.ip6 {
            let (ip, p) = a.split_once('/').ok_or(format!("--ip6 {a}: expected ADDR/PREFIX"))?;
            let ip: Ipv6Addr = ip.parse().map_err(|e| format!("--ip6 {a}: {e}"))?;
            let p: u8 = p.parse().ok().filter(|p| *p <= 128).ok_or(format!("--ip6 {a}: bad prefix"))?;
            v6.addrs.push((ip.octets(), p));
        }
        if let Some(g) = &o.gw6 {
            v6.gateway = Some(g.parse::<Ipv6Addr>().map_err(|e| format!("--gw6 {g}: {e}"))?.octets());
        }
        cfg.ipv6 = Some(v6);
    }
    if let Some(g) = &o.gw {
        cfg.gateway = Some(g.parse::<Ipv4Addr>().map_err(|e| format!("--gw {g}: {e}"))?.octets());
    }
    let mut s = Stack::new(dev, cfg);
    if let Some(q) = &o.qdisc {
        s.set_qdisc(stack::tc::parse::qdisc(q).map_err(|e| format!("--qdisc: {e}"))?);
    }
    if let Some(p) = &o.police {
        s.set_policer(Some(stack::tc::parse::policer(p).map_err(|e| format!("--police: {e}"))?));
    }
    if let Some(f) = &o.netfilter {
        let nf = stack::netfilter::Netfilter::from_file(std::path::Path::new(f))?;
        s.set_netfilter(std::rc::Rc::new(std::cell::RefCell::new(nf)));
    }
    if o.cubic {
        s.tcp_cfg.cc = stack::tcp::CongestionControl::Cubic;
    }
    Ok(s)
}

/// What came back for one echo request.
enum Event {
    Reply { from: IpAddr, seq: u16, len: usize, at: Instant },
    Error { from: IpAddr, seq: u16, errno: stack::Errno },
}

/// `nic-lab ... ping DEST`: IPv4 or IPv6 echo. For IPv6 the first request waits (at most 5 s) for an
/// address to send from while duplicate address detection runs; the IPv6 neighbour table and addresses
/// are printed at the end.
pub fn run(o: &Opts) -> Result<bool, String> {
    let dest: IpAddr = o.dest.as_deref().ok_or("ping needs DEST")?.parse().map_err(|e| format!("DEST: {e}"))?;
    if dest.is_ipv6() && !o.ipv6 {
        return Err("an IPv6 destination needs --ipv6 or --ip6".into());
    }
    let mut s = open_stack(o)?;
    let count = o.count.max(1);
    let interval = Duration::from_secs_f64(o.interval.max(0.01));
    let ident = std::process::id() as u16;
    let payload: Vec<u8> = (0..o.size).map(|i| i as u8).collect();
    println!("PING {dest}: {} data bytes", payload.len());
    let (mut sent, mut received) = (0u64, 0u64);
    let mut sent_at = std::collections::HashMap::new();
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut next = start;
    let mut last_sent = start;
    loop {
        let now = Instant::now();
        if sent < count && now >= next {
            let r = match dest {
                IpAddr::V4(d) => s.ping_send(d.octets(), ident, sent as u16, &payload, now),
                IpAddr::V6(d) => s.ping6_send(d.octets(), ident, sent as u16, &payload, now),
            };
            let waiting_for_dad = r == Err(stack::errno::EADDRNOTAVAIL) && now - start < Duration::from_secs(5);
            if !waiting_for_dad {
                if let Err(e) = r {
                    println!("ping: {e}");
                }
                sent_at.insert(sent as u16, now);
                sent += 1;
                last_sent = now;
                next = now + interval;
            }
        }
        s.poll(now);
        let events: Vec<Event> = match dest {
            IpAddr::V4(_) => s
                .ping_events(ident)
                .into_iter()
                .map(|e| match e {
                    PingEvent::Reply { from, seq, len, at } => Event::Reply { from: Ipv4Addr::from(from).into(), seq, len, at },
                    PingEvent::Error { from, seq, errno } => Event::Error { from: Ipv4Addr::from(from).into(), seq, errno },
                })
                .collect(),
            IpAddr::V6(_) => s
                .ping6_events(ident)
                .into_iter()
                .map(|e| match e {
                    Ping6Event::Reply { from, seq, len, at } => Event::Reply { from: Ipv6Addr::from(from).into(), seq, len, at },
                    Ping6Event::Error { from, seq, errno } => Event::Error { from: Ipv6Addr::from(from).into(), seq, errno },
                })
                .collect(),
        };
        for ev in events {
            match ev {
                Event::Reply { from, seq, len, at } => {
                    if let Some(t) = sent_at.remove(&seq) {
                        let rtt = (at - t).as_secs_f64() * 1000.0;
                        rtts.push(rtt);
                        received += 1;
                        println!("{} bytes from {from}: seq={seq} time={rtt:.3} ms", len + 8);
                    }
                }
                Event::Error { from, seq, errno } => println!("From {from}: icmp_seq={seq} {errno}"),
            }
        }
        if sent >= count && (received >= count || Instant::now() - last_sent > Duration::from_secs(2)) {
            break;
        }
        let _ = s.dev.wait(Duration::from_millis(5));
    }
    let loss = 100.0 * (sent - received) as f64 / sent.max(1) as f64;
    println!("\n--- {dest} ping statistics ---");
    println!("{sent} packets transmitted, {received} packets received, {loss:.0}% packet loss");
    if !rtts.is_empty() {
        let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
        let max = rtts.iter().cloned().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        println!("round-trip min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    if let Some(x) = s.dev.report() {
        println!("{x}");
    }
    if dest.is_ipv6() {
        print_ipv6(&s);
    }
    Ok(received == sent)
}

/// The interface's IPv6 state, as `ip -6 addr`, `ip -6 neigh` and `ip -6 route` would show it.
fn print_ipv6(s: &Stack) {
    for (a, p, st) in s.ipv6_addrs() {
        println!("inet6 {}/{p} {st}", Ipv6Addr::from(a));
    }
    for (a, mac, st) in s.ipv6_neighbours() {
        let mac = mac.map(|m| stack::wire::fmt_mac(&m)).unwrap_or_else(|| "-".into());
        println!("neigh {} lladdr {mac} {st}", Ipv6Addr::from(a));
    }
    for r in s.ipv6_routers() {
        let mtu = s.ipv6_mtu(&[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap_or(0);
        println!("default via {} mtu {mtu}", Ipv6Addr::from(r));
    }
}

/// `nic-lab ... idle --seconds S`: the stack runs (answering whatever comes); its IPv6 addresses are
/// printed whenever they change (so that a script can wait for an autoconfigured one), and the whole
/// state at the end.
pub fn idle(o: &Opts) -> Result<bool, String> {
    use std::io::Write;
    let mut s = open_stack(o)?;
    let mut ctl = o.control.as_deref().map(|p| crate::control::Control::bind(std::path::Path::new(p))).transpose()?;
    let end = Instant::now() + Duration::from_secs_f64(o.interval.max(0.0));
    let mut shown = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        s.poll(now);
        if let Some(c) = ctl.as_mut() {
            c.serve(&mut s);
        }
        // Asleep until the stack's next deadline, a frame, or a control client: the control socket is waited
        // on beside the device when the device has one descriptor; otherwise it is looked at every 5 ms.
        let fds = ctl.as_ref().map(|c| (c.raw_fd(), s.dev.raw_fd()));
        let cap = if matches!(fds, Some((_, None))) { Duration::from_millis(5) } else { Duration::from_secs(1) };
        let wait = s.poll_at().map(|t| t - now).unwrap_or(cap).min(cap).min(end - now);
        let addrs = s.ipv6_addrs();
        if addrs != shown {
            for (a, p, st) in &addrs {
                println!("addr {}/{p} {st}", Ipv6Addr::from(*a));
            }
            let _ = std::io::stdout().flush();
            shown = addrs;
        }
        match fds {
            _ if wait.is_zero() => {}
            Some((c, Some(d))) => stack::dev::bridge::wait_any(vec![Some(d), Some(c)], wait),
            _ => {
                let _ = s.dev.wait(wait);
            }
        }
    }
    println!("--- state ---");
    if o.qdisc.is_some() || o.police.is_some() {
        println!("{}", s.tc_show());
    }
    if let Some(nf) = s.netfilter() {
        print!("{}", nf.borrow().rules.listing());
    }
    if let Some(x) = s.dev.report() {
        println!("{x}");
    }
    let st = &s.stats;
    println!("ip: in {} delivered {} no ports {}", st.in_receives, st.in_delivers, st.no_ports);
    print_ipv6(&s);
    Ok(true)
}
