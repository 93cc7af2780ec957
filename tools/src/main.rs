//! nic-lab: drives an 82574L with the userspace driver.
//!
//!   nic-lab (--vfio-user PATH | --vfio-pci BDF) [--irq auto|msix|msi|intx|poll] COMMAND
//!     info                                  MAC, link, speed, features, queues, interrupts
//!     loopback-test --count N --size S      sequence-numbered frames out and back (nic-device --backend loopback,
//!                                           or any wire that returns them); reports loss, duplicates, order, speed
//!                   [--tso]                 instead: N TCP sends of S bytes (up to 64 KiB) cut by the card (TSO)
//!     exchange --count N                    request frames to a reflector on the wire; counts the replies
//!   nic-lab reflect --ifname IF [--count N] answers exchange requests on a host interface (AF_PACKET)
//!   nic-lab --tap IF --ip ADDR/PREFIX tap-echo DEST   echo requests straight to a TAP, replies read
//!                                           without sleeping: the kernel's own part of a round trip

mod control;
mod frames;
mod handoff;
mod ping;
mod reflect;
mod services;
mod tapecho;
mod tcpcmd;
mod topology;

use driver::{Config, E1000e, IrqMode, NetDev, RxPacket, TxPacket};
use frames::*;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub(crate) struct Opts {
    pub(crate) transport: Option<String>,
    pub(crate) irq: IrqMode,
    pub(crate) ring: Option<u32>,
    pub(crate) cmd: String,
    pub(crate) count: u64,
    pub(crate) size: usize,
    pub(crate) window: usize,
    pub(crate) ifname: Option<String>,
    pub(crate) tso: bool,
    pub(crate) tap: Option<String>,
    pub(crate) tap_offload: bool,
    pub(crate) ip: Option<String>,
    /// More IPv4 addresses after the first --ip.
    pub(crate) ip_more: Vec<String>,
    pub(crate) ip6: Vec<String>,
    pub(crate) ipv6: bool,
    pub(crate) gw6: Option<String>,
    pub(crate) vlan: Option<u16>,
    pub(crate) bond: Option<String>,
    pub(crate) slaves: Vec<String>,
    pub(crate) vlan_offload: Option<bool>,
    pub(crate) seconds: Option<f64>,
    pub(crate) gw: Option<String>,
    pub(crate) dest: Option<String>,
    pub(crate) interval: f64,
    pub(crate) impair: Option<String>,
    pub(crate) output: Option<String>,
    pub(crate) port: u16,
    pub(crate) dir: Option<String>,
    pub(crate) bytes: u64,
    pub(crate) cubic: bool,
    pub(crate) latency: bool,
    pub(crate) busy_poll: Option<u64>,
    pub(crate) xdp: Vec<String>,
    pub(crate) xdp_redirect: Option<String>,
    pub(crate) rss: bool,
    pub(crate) qdisc: Option<String>,
    pub(crate) police: Option<String>,
    pub(crate) control: Option<String>,
    pub(crate) ctl: Vec<String>,
    pub(crate) netfilter: Option<String>,
}

impl Opts {
    /// The driver's configuration the command line asks for.
    pub(crate) fn config(&self) -> Config {
        let d = Config::default();
        Config { irq: self.irq, tx_ring: self.ring.unwrap_or(d.tx_ring), rx_ring: self.ring.unwrap_or(d.rx_ring), ..d }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Irq {
    Auto,
    Msix,
    Msi,
    Intx,
    /// No interrupts: busy polling
    Poll,
}

/// Command-line front end to the userspace 82574L driver and the network stack on it.
#[derive(clap::Parser, Debug)]
#[command(name = "nic-lab", version)]
struct Cli {
    /// The card over vfio-user (nic-device's socket)
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "vfio_pci")]
    vfio_user: Option<String>,
    /// The card bound to vfio-pci, by PCI address
    #[arg(long, value_name = "BDF", global = true)]
    vfio_pci: Option<String>,
    /// Interrupt mode
    #[arg(long, value_enum, default_value = "auto", global = true)]
    irq: Irq,
    /// Descriptors per transmit and receive ring (8-4096, as `ethtool -G`; the driver's default is 256)
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u32).range(8..=4096))]
    ring: Option<u32>,
    /// Run the stack straight on a TAP device instead of the card
    #[arg(long, value_name = "IFNAME", global = true)]
    tap: Option<String>,
    /// With --tap: use the TAP's offloads (64 KiB TCP super-packets and partial checksums both ways)
    #[arg(long, global = true)]
    tap_offload: bool,
    /// Stack commands: the interface address (repeat for more; the first is the primary)
    #[arg(long, value_name = "ADDR/PREFIX", global = true)]
    ip: Vec<String>,
    /// Stack commands: an IPv6 address beside the link-local one (repeatable; turns IPv6 on)
    #[arg(long, value_name = "ADDR/PREFIX", global = true)]
    ip6: Vec<String>,
    /// Stack commands: IPv6 on, with the link-local address and what router advertisements give
    #[arg(long, global = true)]
    ipv6: bool,
    /// Stack commands: the default gateway
    #[arg(long, value_name = "ADDR", global = true)]
    gw: Option<String>,
    /// Stack commands: an IPv6 default router (turns IPv6 on)
    #[arg(long, value_name = "ADDR", global = true)]
    gw6: Option<String>,
    /// Stack commands: run on 802.1Q VLAN ID of the device (a sub-interface)
    #[arg(long, value_name = "ID", global = true)]
    vlan: Option<u16>,
    /// Stack commands: a bond over the --slave devices (active-backup or balance-xor)
    #[arg(long, value_name = "MODE", global = true)]
    bond: Option<String>,
    /// With --bond: a slave, vfio-user:PATH or tap:IFNAME (repeat for each)
    #[arg(long, value_name = "SPEC", global = true)]
    slave: Vec<String>,
    /// With --vlan: the tag in the card's descriptors (on) or in the frame (off); default: the card's
    #[arg(long, value_name = "on|off", global = true, value_parser = parse_on_off)]
    vlan_offload: Option<bool>,
    /// Stack commands: a bad wire built in (loss=P,reorder=P,dup=P,seed=S)
    #[arg(long, value_name = "SPEC", global = true)]
    impair: Option<String>,
    /// Stack commands: CUBIC congestion control instead of NewReno
    #[arg(long, global = true)]
    cubic: bool,
    /// On the card: an XDP program in the driver, drop=ADDR|udp:PORT|tcp:PORT,... reflect[=udp:PORT]
    /// reflect-l2[=...] redirect=udp:PORT,... (repeat to chain them in order)
    #[arg(long, value_name = "PROGRAM", global = true)]
    xdp: Vec<String>,
    /// Where --xdp redirect sends frames: tap:IFNAME (another interface) or queue (a user queue)
    #[arg(long, value_name = "TARGET", global = true)]
    xdp_redirect: Option<String>,
    /// On the card: receive-side scaling over both receive queues
    #[arg(long, global = true)]
    rss: bool,
    /// On the card: latency mode (no interrupt moderation, 50 us of busy polling before each sleep)
    #[arg(long, global = true)]
    latency: bool,
    /// On the card, or on the TAP with --tap: microseconds of busy polling before each sleep (Linux's
    /// net.core.busy_poll; with `--latency`, replaces its 50 us)
    #[arg(long, value_name = "US", global = true)]
    busy_poll: Option<u64>,
    /// Stack commands: the egress qdisc, in tc's words ("fq_codel", "tbf rate 20mbit burst 16k child
    /// fq_codel", "netem delay 40ms 5ms loss 1%", "htb default 20 class 1 rate ...")
    #[arg(long, value_name = "SPEC", global = true)]
    qdisc: Option<String>,
    /// Stack commands: an ingress policer, "rate RATE burst SIZE"
    #[arg(long, value_name = "SPEC", global = true)]
    police: Option<String>,
    /// Stack commands: answer `nic-lab ctl PATH ...` on this Unix socket while running
    #[arg(long, value_name = "PATH", global = true)]
    control: Option<String>,
    /// Stack commands: netfilter rules (nft syntax) on the interface's hooks
    #[arg(long, value_name = "FILE", global = true)]
    netfilter: Option<String>,
    /// Print a shell completion script and exit
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// The card: address, link, features, interrupts
    Info,
    /// Frames out and back through nic-device's loopback backend, checked for loss, order and content
    LoopbackTest {
        #[arg(long, default_value = "1000")]
        count: u64,
        #[arg(long, default_value = "64")]
        size: usize,
        /// Frames in flight (default: half the ring, 128 with the default ring of 256)
        #[arg(long)]
        window: Option<usize>,
        /// Send TSO packets and check the segments
        #[arg(long)]
        tso: bool,
    },
    /// Frames to a reflector on the wire and back
    Exchange {
        #[arg(long, default_value = "1000")]
        count: u64,
        #[arg(long, default_value = "64")]
        size: usize,
    },
    /// The machine's own copy rate for frames of SIZE bytes between two rings of 512 buffers (as a device
    /// copies between a guest's RX/TX buffers and a backend's): the reference the benchmark sets the pair's
    /// rates against
    Memcpy {
        #[arg(long, default_value = "10000000")]
        count: u64,
        #[arg(long, default_value = "1514")]
        size: usize,
    },
    /// The pair's data movement alone: two threads hand SIZE-byte frames over shared rings, one building,
    /// sending and checking them as `loopback-test` does, the other copying each from its transmit slot to
    /// its receive slot through a buffer of its own, as the device does; both spin, nothing else runs. The
    /// bound the benchmark sets the pair's rates against, with the cross-CPU cost of the copies in it
    Handoff {
        #[arg(long, default_value = "2000000")]
        count: u64,
        #[arg(long, default_value = "1514")]
        size: usize,
        /// Frames in flight (the pair with rings of N descriptors has N/2)
        #[arg(long, default_value = "512")]
        window: usize,
    },
    /// Answer `exchange` on a host interface (no card needed)
    Reflect {
        #[arg(long)]
        ifname: String,
        /// Frames to answer (0: forever)
        #[arg(long, default_value = "0")]
        count: u64,
    },
    /// ICMP echo (IPv6 fragments what exceeds the path MTU)
    Ping {
        /// An IPv4 or IPv6 address
        dest: String,
        #[command(flatten)]
        echo: EchoArgs,
    },
    /// ICMP echo written straight to the TAP (--tap) and the replies read back without sleeping: the
    /// Linux kernel's own part of a round trip through a TAP, with no stack, driver or device of ours
    /// (--ip: this end's address)
    TapEcho {
        /// The kernel's IPv4 address on the TAP
        dest: String,
        #[command(flatten)]
        echo: EchoArgs,
    },
    /// Builds devices, VLANs, bridges and hosts from a TOML file (see tools/src/topology.rs) and runs
    /// them until SIGINT or SECONDS; prints each one's counters, the bridges' tables and addresses at exit
    Run {
        file: String,
        #[arg(long)]
        seconds: Option<f64>,
    },
    // In an attribute, not a doc comment: rustdoc would read the optional argument as a link.
    #[command(
        about = "Asks a running nic-lab (started with --control PATH): ss, link, nstat, drops, events [FROM], conntrack, nft list, tc show, capture FILE, capture stop"
    )]
    Ctl {
        /// The control socket
        socket: String,
        /// The command and its arguments
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Runs the stack for SECONDS (answering pings, neighbour and router discovery), then prints its
    /// IPv6 addresses, neighbours and routers
    Idle {
        #[arg(long, default_value = "5")]
        seconds: f64,
    },
    /// HTTP/1.1 client
    Get {
        url: String,
        #[arg(short = 'o', value_name = "FILE")]
        output: Option<String>,
    },
    /// HTTP/1.1 static server
    Serve {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        dir: String,
        /// Requests to serve (0: forever)
        #[arg(long, default_value = "0")]
        count: u64,
    },
    /// Bulk TCP send; prints throughput
    Blast {
        /// HOST:PORT
        dest: String,
        /// Bytes per connection
        #[arg(long)]
        bytes: u64,
        /// Connections at once, to PORT, PORT+1, ...
        #[arg(long, default_value = "1")]
        parallel: u16,
    },
    /// Bulk TCP receive; prints throughput
    Sink {
        #[arg(long)]
        port: u16,
        /// Connections to take
        #[arg(long, default_value = "1")]
        count: u64,
    },
}

/// How many echo requests, how far apart, how large (`ping`, `tap-echo`).
#[derive(clap::Args, Debug)]
struct EchoArgs {
    #[arg(short = 'c', default_value = "4")]
    count: u64,
    /// Seconds between requests
    #[arg(short = 'i', default_value = "1.0")]
    interval: f64,
    /// Payload bytes
    #[arg(short = 's', default_value = "56")]
    size: usize,
}

fn parse() -> Result<Option<Opts>, String> {
    use clap::{CommandFactory, Parser};
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        clap_complete::generate(shell, &mut Cli::command(), "nic-lab", &mut std::io::stdout());
        return Ok(None);
    }
    let Some(cmd) = cli.cmd else {
        let _ = Cli::command().print_help();
        return Err("no command".into());
    };
    let mut o = Opts {
        transport: cli.vfio_user.map(|p| format!("vfio-user:{p}")).or(cli.vfio_pci.map(|b| format!("vfio-pci:{b}"))),
        irq: match cli.irq {
            Irq::Auto => IrqMode::Auto,
            Irq::Msix => IrqMode::Msix,
            Irq::Msi => IrqMode::Msi,
            Irq::Intx => IrqMode::Intx,
            Irq::Poll => IrqMode::BusyPoll,
        },
        ring: cli.ring,
        cmd: String::new(),
        count: 0,
        size: 64,
        window: 128,
        ifname: None,
        tso: false,
        tap: cli.tap,
        tap_offload: cli.tap_offload,
        ip: cli.ip.first().cloned(),
        ip_more: cli.ip.iter().skip(1).cloned().collect(),
        ipv6: cli.ipv6 || !cli.ip6.is_empty() || cli.gw6.is_some(),
        gw6: cli.gw6,
        vlan: cli.vlan,
        bond: cli.bond,
        slaves: cli.slave,
        vlan_offload: cli.vlan_offload,
        seconds: None,
        ip6: cli.ip6,
        gw: cli.gw,
        dest: None,
        interval: 1.0,
        impair: cli.impair,
        output: None,
        port: 0,
        dir: None,
        bytes: 0,
        cubic: cli.cubic,
        latency: cli.latency,
        busy_poll: cli.busy_poll,
        xdp: cli.xdp,
        xdp_redirect: cli.xdp_redirect,
        rss: cli.rss,
        qdisc: cli.qdisc,
        police: cli.police,
        control: cli.control,
        ctl: Vec::new(),
        netfilter: cli.netfilter,
    };
    o.cmd = match cmd {
        Cmd::Info => "info",
        Cmd::LoopbackTest { count, size, window, tso } => {
            let ring = o.config().tx_ring as usize;
            (o.count, o.size, o.window, o.tso) = (count, size, window.unwrap_or(ring / 2).max(1), tso);
            "loopback-test"
        }
        Cmd::Exchange { count, size } => {
            (o.count, o.size) = (count, size);
            "exchange"
        }
        Cmd::Memcpy { count, size } => {
            (o.count, o.size) = (count, size);
            "memcpy"
        }
        Cmd::Handoff { count, size, window } => {
            (o.count, o.size, o.window) = (count, size, window);
            "handoff"
        }
        Cmd::Reflect { ifname, count } => {
            (o.ifname, o.count) = (Some(ifname), count);
            "reflect"
        }
        Cmd::Ping { dest, echo } => {
            (o.dest, o.count, o.interval, o.size) = (Some(dest), echo.count, echo.interval, echo.size);
            "ping"
        }
        Cmd::TapEcho { dest, echo } => {
            (o.dest, o.count, o.interval, o.size) = (Some(dest), echo.count, echo.interval, echo.size);
            "tap-echo"
        }
        Cmd::Run { file, seconds } => {
            (o.dest, o.seconds) = (Some(file), seconds);
            "run"
        }
        Cmd::Ctl { socket, command } => {
            (o.dest, o.ctl) = (Some(socket), command);
            "ctl"
        }
        Cmd::Idle { seconds } => {
            o.interval = seconds;
            "idle"
        }
        Cmd::Get { url, output } => {
            (o.dest, o.output) = (Some(url), output);
            "get"
        }
        Cmd::Serve { port, dir, count } => {
            (o.port, o.dir, o.count) = (port, Some(dir), count);
            "serve"
        }
        Cmd::Blast { dest, bytes, parallel } => {
            (o.dest, o.bytes, o.count) = (Some(dest), bytes, u64::from(parallel.max(1)));
            "blast"
        }
        Cmd::Sink { port, count } => {
            (o.port, o.count) = (port, count);
            "sink"
        }
    }
    .to_string();
    Ok(Some(o))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s}: on or off")),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nic-lab: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match o.cmd.as_str() {
        "reflect" => reflect::run(o.ifname.as_deref(), o.count),
        "memcpy" => Ok(memcpy(&o)),
        "handoff" => handoff::run(o.count, o.size, o.window),
        "ping" => ping::run(&o),
        "tap-echo" => tapecho::run(&o),
        "idle" => ping::idle(&o),
        "ctl" => control::ctl(o.dest.as_deref().unwrap_or_default(), &o.ctl),
        "run" => topology::run(&o),
        "get" => tcpcmd::get(&o),
        "serve" => tcpcmd::serve(&o),
        "blast" => tcpcmd::blast(&o),
        "sink" => tcpcmd::sink(&o),
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

/// Copies `count` frames of `size` bytes from one ring of 512 buffers to another and prints the rate.
fn memcpy(o: &Opts) -> bool {
    let size = o.size.clamp(1, 65536);
    let slots = 512;
    let stride = size.next_power_of_two();
    let src: Vec<u8> = (0..slots * stride).map(|i| i as u8).collect();
    let mut dst = vec![0u8; slots * stride];
    let t0 = Instant::now();
    for i in 0..o.count as usize {
        let at = (i % slots) * stride;
        dst[at..at + size].copy_from_slice(&src[at..at + size]);
        std::hint::black_box(&mut dst);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("elapsed:     {secs:.3} s");
    println!("rate:        {:.0} frames/s, {:.3} Gbit/s", o.count as f64 / secs, (o.count as usize * size) as f64 * 8.0 / secs / 1e9);
    true
}

fn with_device(o: &Opts) -> Result<bool, String> {
    let spec = o.transport.as_deref().ok_or("--vfio-user PATH or --vfio-pci BDF is required")?;
    let t = driver::open_transport(spec).map_err(|e| e.to_string())?;
    let cfg = o.config();
    let mut dev = E1000e::open(t, cfg).map_err(|e| format!("{spec}: {e}"))?;
    match o.cmd.as_str() {
        "info" => info(&mut dev, spec),
        "loopback-test" if o.tso => tso_loopback(&mut dev, o),
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
    let (tx, rx) = dev.ring_sizes();
    println!("rings:      {tx} tx, {rx} rx descriptors");
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

/// A run gives up after 5 s without progress. Busy polling, the clock is read once every 1024 idle polls
/// only: the polls that find nothing come millions of times a second, and a clock read on each would be a
/// measurable part of the run being measured.
struct Stall {
    idle: u32,
    since: Option<Instant>,
    every: u32,
}

impl Stall {
    fn new(dev: &E1000e) -> Stall {
        Stall { idle: 0, since: None, every: if dev.irq_kind().is_some() { 1 } else { 1024 } }
    }

    fn progress(&mut self) {
        self.idle = 0;
        self.since = None;
    }

    /// A poll that found nothing: `true` when the run has made no progress for 5 s.
    fn idle(&mut self) -> bool {
        self.idle = self.idle.wrapping_add(1);
        self.idle.is_multiple_of(self.every) && self.since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5)
    }
}

fn loopback(dev: &mut E1000e, o: &Opts) -> Result<bool, driver::DriverError> {
    let size = o.size.clamp(MIN_FRAME, 1514);
    let mac = dev.mac();
    let mut check = SeqCheck::default();
    let mut next = 0u64;
    let mut pending: Vec<TxPacket> = Vec::new();
    let mut rx: Vec<RxPacket> = Vec::new();
    // Received frames' buffers carry the next frames out (the driver keeps sent ones for its receive
    // side): a steady run allocates nothing per frame, as a real sender's buffers cycle.
    let mut free: Vec<Vec<u8>> = Vec::new();
    let t0 = Instant::now();
    let mut stall = Stall::new(dev);
    while check.received < o.count {
        let in_flight = (next - check.received - check.lost) as usize;
        while pending.len() + in_flight < o.window && next < o.count {
            let buf = free.pop().unwrap_or_default();
            pending.push(TxPacket::plain(build_into(buf, mac, mac, KIND_LOOP, next, size)));
            next += 1;
        }
        if !pending.is_empty() {
            dev.transmit(&mut pending)?;
        }
        let n = dev.poll(64, &mut rx)?;
        for p in rx.drain(..) {
            check.see(&p);
            free.push(p.data);
        }
        if n > 0 {
            stall.progress();
        } else if next >= o.count || !pending.is_empty() || in_flight >= o.window {
            if stall.idle() {
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
    println!(
        "interrupts:  {} polls: {} doorbells: {} ({} sends waited for a busy card)",
        s.interrupts, s.polls, s.tx_doorbells, s.tx_doorbells_deferred
    );
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

/// TCP/IPv4 sends of up to 64 KiB, segmented by the card, returned by the wire, and counted.
fn tso_loopback(dev: &mut E1000e, o: &Opts) -> Result<bool, driver::DriverError> {
    let payload = o.size.clamp(1, 65_000);
    let mss = 1448usize;
    let segs_per_send = payload.div_ceil(mss) as u64;
    let mac = dev.mac();
    let template = tcp_frame(mac, payload);
    let want = o.count * segs_per_send;
    let (mut sent, mut got, mut bytes, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut rx = Vec::new();
    let window = (o.window as u64 / segs_per_send).max(1);
    let t0 = Instant::now();
    let mut stall = Stall::new(dev);
    while got < want {
        while sent < o.count && sent - got / segs_per_send < window {
            let mut p = vec![TxPacket {
                data: template.clone(),
                csum: Some(driver::TxCsum { l3: 14, l4: 34, ipv4: true, tcp: true }),
                tso: Some(mss as u16),
                vlan: None,
            }];
            if dev.transmit(&mut p)? == 0 {
                break;
            }
            sent += 1;
        }
        rx.clear();
        let n = dev.poll(64, &mut rx)?;
        for p in &rx {
            if p.csum != driver::RxCsum::Verified || p.data.len() > 1514 {
                bad += 1;
            }
            bytes += p.data.len() as u64;
            got += 1;
        }
        if n > 0 {
            stall.progress();
        } else {
            if stall.idle() {
                break;
            }
            idle(dev)?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("sends:       {sent} x {payload} bytes (TSO, MSS {mss})");
    println!("received:    {got} segments of {want}");
    println!("bad:         {bad}");
    println!("elapsed:     {secs:.3} s");
    println!("rate:        {:.0} frames/s, {:.3} Gbit/s", got as f64 / secs, bytes as f64 * 8.0 / secs / 1e9);
    Ok(got == want && bad == 0)
}

fn tcp_frame(mac: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 253) as u8));
    f
}
