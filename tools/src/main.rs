//! nic-lab: drives an 82574L with the userspace driver.
//!
//!   nic-lab (--vfio-user PATH | --vfio-pci BDF) [--irq auto|msix|msi|intx|poll] COMMAND
//!     info                                  MAC, link, speed, features, queues, interrupts
//!     loopback-test --count N --size S      sequence-numbered frames out and back (nic-device --backend loopback,
//!                                           or any wire that returns them); reports loss, duplicates, order, speed
//!     exchange --count N                    request frames to a reflector on the wire; counts the replies
//!   nic-lab reflect --ifname IF [--count N] answers exchange requests on a host interface (AF_PACKET)

mod frames;
mod reflect;

use driver::{Config, IrqMode, NetDev, RxPacket, TxPacket, E1000e};
use frames::*;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: nic-lab (--vfio-user PATH | --vfio-pci BDF) [--irq auto|msix|msi|intx|poll] COMMAND [ARGS]
commands:
  info
  loopback-test --count N --size BYTES [--window W]
  exchange --count N [--size BYTES]
  reflect --ifname IF [--count N]      (no transport: answers exchange on a host interface)";

struct Opts {
    transport: Option<String>,
    irq: IrqMode,
    cmd: String,
    count: u64,
    size: usize,
    window: usize,
    ifname: Option<String>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts { transport: None, irq: IrqMode::Auto, cmd: String::new(), count: 1000, size: 64, window: 128, ifname: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        match a.as_str() {
            "--vfio-user" => o.transport = Some(format!("vfio-user:{}", val("--vfio-user")?)),
            "--vfio-pci" => o.transport = Some(format!("vfio-pci:{}", val("--vfio-pci")?)),
            "--irq" => {
                o.irq = match val("--irq")?.as_str() {
                    "auto" => IrqMode::Auto,
                    "msix" => IrqMode::Msix,
                    "msi" => IrqMode::Msi,
                    "intx" => IrqMode::Intx,
                    "poll" => IrqMode::BusyPoll,
                    x => return Err(format!("--irq {x}?")),
                }
            }
            "--count" => o.count = val("--count")?.parse().map_err(|e| format!("--count: {e}"))?,
            "--size" => o.size = val("--size")?.parse().map_err(|e| format!("--size: {e}"))?,
            "--window" => o.window = val("--window")?.parse().map_err(|e| format!("--window: {e}"))?,
            "--ifname" => o.ifname = Some(val("--ifname")?),
            "-h" | "--help" => return Err(String::new()),
            c if o.cmd.is_empty() && !c.starts_with('-') => o.cmd = c.into(),
            x => return Err(format!("unknown argument '{x}'")),
        }
    }
    if o.cmd.is_empty() {
        return Err("no command".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nic-lab: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match o.cmd.as_str() {
        "reflect" => reflect::run(o.ifname.as_deref(), o.count),
        "info" | "loopback-test" | "exchange" => with_device(&o),
        c => Err(format!("unknown command '{c}'")),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("nic-lab: {e}");
            ExitCode::from(1)
        }
    }
}

fn with_device(o: &Opts) -> Result<bool, String> {
    let spec = o.transport.as_deref().ok_or("--vfio-user PATH or --vfio-pci BDF is required")?;
    let t = driver::open_transport(spec).map_err(|e| e.to_string())?;
    let cfg = Config { irq: o.irq, ..Default::default() };
    let mut dev = E1000e::open(t, cfg).map_err(|e| format!("{spec}: {e}"))?;
    match o.cmd.as_str() {
        "info" => info(&mut dev, spec),
        "loopback-test" => loopback(&mut dev, o),
        _ => exchange(&mut dev, o),
    }
    .map_err(|e| e.to_string())
}

fn info(dev: &mut E1000e, spec: &str) -> Result<bool, driver::DriverError> {
    let m = dev.mac();
    let l = dev.link()?;
    let f = dev.features();
    println!("device:     82574L (8086:10d3) via {spec}");
    println!("mac:        {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
    println!("link:       {}", if l.up { "up" } else { "down" });
    println!("speed:      {} Mb/s {} duplex", l.speed_mbps, if l.full_duplex { "full" } else { "half" });
    println!("mtu:        {}", dev.mtu());
    println!("features:   tso {} tx-csum {} rx-csum {} vlan {}", on(f.tso), on(f.tx_csum), on(f.rx_csum), on(f.vlan));
    println!("queues:     2 rx, 2 tx");
    println!("interrupts: {}", dev.irq_kind().map(|k| format!("{k:?}")).unwrap_or("none (busy poll)".into()));
    Ok(true)
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Waits for work: interrupts when enabled, a spin otherwise.
fn idle(dev: &mut E1000e) -> Result<(), driver::DriverError> {
    if dev.irq_kind().is_some() {
        dev.wait(Duration::from_millis(100))?;
    }
    Ok(())
}

fn loopback(dev: &mut E1000e, o: &Opts) -> Result<bool, driver::DriverError> {
    let size = o.size.clamp(MIN_FRAME, 1514);
    let mac = dev.mac();
    let mut check = SeqCheck::default();
    let mut next = 0u64;
    let mut pending: Vec<TxPacket> = Vec::new();
    let mut rx: Vec<RxPacket> = Vec::new();
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    while check.received < o.count {
        let in_flight = (next - check.received - check.lost) as usize;
        while pending.len() + in_flight < o.window && next < o.count {
            pending.push(TxPacket::plain(build(mac, mac, KIND_LOOP, next, size)));
            next += 1;
        }
        if !pending.is_empty() {
            dev.transmit(&mut pending)?;
        }
        rx.clear();
        let n = dev.poll(64, &mut rx)?;
        for p in &rx {
            check.see(p);
        }
        if n > 0 {
            last_progress = Instant::now();
        } else if next >= o.count || !pending.is_empty() || in_flight >= o.window {
            if last_progress.elapsed() > Duration::from_secs(5) {
                break;
            }
            idle(dev)?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    check.lost = o.count.saturating_sub(check.received);
    println!("sent:        {next}");
    println!("received:    {}", check.received);
    println!("lost:        {}", check.lost);
    println!("duplicates:  {}", check.duplicates);
    println!("out-of-order:{:>2}", check.reordered);
    println!("corrupt:     {}", check.corrupt);
    println!("elapsed:     {secs:.3} s");
    println!("rate:        {:.0} frames/s, {:.3} Gbit/s", check.received as f64 / secs, check.bytes as f64 * 8.0 / secs / 1e9);
    let s = dev.stats();
    println!("interrupts:  {} polls: {}", s.interrupts, s.polls);
    Ok(check.lost == 0 && check.duplicates == 0 && check.corrupt == 0 && check.reordered == 0)
}

fn exchange(dev: &mut E1000e, o: &Opts) -> Result<bool, driver::DriverError> {
    let mac = dev.mac();
    let size = o.size.clamp(MIN_FRAME, 1514);
    let mut check = SeqCheck::default();
    let mut rx = Vec::new();
    let t0 = Instant::now();
    for seq in 0..o.count {
        let mut v = vec![TxPacket::plain(build([0xFF; 6], mac, KIND_REQUEST, seq, size))];
        while !v.is_empty() {
            dev.transmit(&mut v)?;
        }
        let sent = Instant::now();
        while check.received <= seq && sent.elapsed() < Duration::from_secs(2) {
            rx.clear();
            if dev.poll(64, &mut rx)? == 0 {
                idle(dev)?;
            }
            for p in &rx {
                if p.data.len() >= HDR && kind(&p.data) == Some(KIND_REPLY) {
                    check.see(p);
                }
            }
        }
    }
    println!("requests:    {}", o.count);
    println!("replies:     {}", check.received);
    println!("corrupt:     {}", check.corrupt);
    println!("elapsed:     {:.3} s", t0.elapsed().as_secs_f64());
    Ok(check.received == o.count && check.corrupt == 0)
}
