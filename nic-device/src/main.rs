//! nic-device: an emulated Intel 82574L served over vfio-user.

use clap::{CommandFactory, Parser};
use log::{error, info};
use nic_device::backend;
use nic_device::datapath::{DataPath, DoorbellMode, RxOverflow};
use nic_device::metrics::Metrics;
use nic_device::nic::Nic;
use nic_device::pcap::PcapWriter;
use nic_device::vfio::NicServer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Doorbells {
    /// Inline, except with a TAP in offload mode, whose 64 KiB writes run better on the data path thread.
    Auto,
    /// On the vfio-user thread when the data path is asleep.
    Inline,
    /// Always on the data path thread.
    Wake,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Overflow {
    /// Stop reading the backend until the card has room (nothing is lost).
    Pause,
    /// Drop and count missed packets (MPC), as a wire would.
    Drop,
}

/// An Intel 82574L (PCI 8086:10d3) network card emulated in its own process and served over vfio-user.
#[derive(Parser, Debug)]
#[command(name = "nic-device", version)]
struct Args {
    /// vfio-user socket to serve (created when the device is ready)
    #[arg(long, value_name = "PATH", required_unless_present = "completions")]
    socket: Option<PathBuf>,
    /// The wire: tap:IFNAME | stream:PATH | stream-connect:PATH | stream:tcp:HOST:PORT |
    /// stream-connect:tcp:HOST:PORT | dgram:udp:LOCAL_HOST:PORT:REMOTE_HOST:PORT | dgram:mcast:GROUP:PORT | loopback
    #[arg(long, value_name = "SPEC", required_unless_present = "completions")]
    backend: Option<String>,
    /// Station address (the NVM's MAC)
    #[arg(long, value_name = "MAC", default_value = "52:54:00:12:34:56", value_parser = parse_unicast_mac)]
    mac: [u8; 6],
    /// Write every frame on the wire, both directions, as pcap
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// What a full receive FIFO does
    #[arg(long, value_enum, default_value = "pause")]
    rx_overflow: Overflow,
    /// Where a transmit doorbell's work runs: `inline` on the thread that read it when the data path is
    /// asleep (no wake-up before the frame leaves), or `wake` the data path thread every time; `auto`
    /// picks `wake` for a TAP in offload mode and `inline` otherwise
    #[arg(long, value_enum, default_value = "auto")]
    doorbells: Doorbells,
    /// Busy-poll the rings and the wire for up to USECS after the last doorbell or frame, on the thread
    /// that serves vfio-user, instead of sleeping until a wake-up: lower latency for a core's worth of CPU
    /// while traffic flows (0: off). Needs `--doorbells inline` (the default for wire backends)
    #[arg(long, value_name = "USECS", default_value = "0")]
    busy_poll: u64,
    /// While the client is active, read its messages every USECS on a timer instead of waking for each:
    /// a guest's register writes then cost its vCPU no wake-up of this thread, at up to USECS of latency
    /// per message (reads keep prompt replies for 2 ms after each; 0: off, at most 10000)
    #[arg(long, value_name = "USECS", default_value = "0", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    timer_poll: u64,
    /// Disconnect a vfio-user client that leaves replies unread or a message half-sent for this long
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    client_timeout: std::time::Duration,
    /// Serve the control socket (inspect, trace, inject faults; see `nicctl`) on PATH
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Print a shell completion script and exit
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

fn parse_unicast_mac(s: &str) -> Result<[u8; 6], String> {
    let m = nic_device::parse_mac(s).ok_or(format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if m[0] & 1 != 0 {
        return Err(format!("'{s}' is a multicast address"));
    }
    Ok(m)
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s.parse().ok().filter(|s: &f64| *s > 0.0 && *s <= 3600.0).ok_or(format!("'{s}' is not 0 < SECS <= 3600"))?;
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut Args::command(), "nic-device", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (Some(socket), Some(backend_spec)) = (args.socket, args.backend) else { return ExitCode::from(2) };
    let signals = match nic_device::server::signals() {
        Ok(s) => s,
        Err(e) => {
            error!("signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match nic_device::server::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let cleanup = |code: u8| {
        let _ = std::fs::remove_file(&socket);
        ExitCode::from(code)
    };
    let be = match backend::open(&backend_spec) {
        Ok(b) => b,
        Err(e) => {
            error!("{e}");
            return cleanup(1);
        }
    };
    let pcap = match args.pcap.as_deref().map(PcapWriter::create).transpose() {
        Ok(p) => p,
        Err(e) => {
            error!("pcap: {e}");
            return cleanup(1);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let nic = Arc::new(Mutex::new(Nic::new(args.mac, metrics.clone())));
    let m = args.mac;
    info!("82574L (8086:10d3) mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} backend {}", m[0], m[1], m[2], m[3], m[4], m[5], be.describe());
    let overflow = match args.rx_overflow {
        Overflow::Pause => RxOverflow::Pause,
        Overflow::Drop => RxOverflow::Drop,
    };
    let offloads = be.offloads();
    let mut dp = match DataPath::start(nic.clone(), be, pcap, overflow) {
        Ok(d) => d,
        Err(e) => {
            error!("data path: {e}");
            return cleanup(1);
        }
    };
    let control =
        match args.control.as_deref().map(|p| nic_device::control::ControlServer::start(p, nic.clone(), dp.waker.clone())).transpose() {
            Ok(c) => c,
            Err(e) => {
                error!("control socket: {e}");
                dp.stop();
                return cleanup(1);
            }
        };
    let mode = match args.doorbells {
        Doorbells::Auto if offloads => DoorbellMode::Wake,
        Doorbells::Auto | Doorbells::Inline => DoorbellMode::Inline,
        Doorbells::Wake => DoorbellMode::Wake,
    };
    if args.busy_poll > 0 && args.timer_poll > 0 {
        error!("--busy-poll and --timer-poll exclude each other: a busy-polling thread never sleeps");
        dp.stop();
        return cleanup(2);
    }
    if args.busy_poll > 0 && mode == DoorbellMode::Wake {
        error!("--busy-poll needs --doorbells inline: with doorbells that wake the data path thread, nothing polls");
        dp.stop();
        return cleanup(2);
    }
    let mut dev = NicServer::new(nic.clone(), dp.kick(mode));
    dev.set_busy_poll(Some(std::time::Duration::from_micros(args.busy_poll)));
    dev.set_timer_poll(std::time::Duration::from_micros(args.timer_poll));
    let r = nic_device::server::serve(listener, signals, &socket, &mut dev, args.client_timeout);
    drop(control);
    dp.stop();
    let _ = std::fs::remove_file(&socket);
    info!("metrics:");
    nic_device::nic::lock(&nic).log_metrics();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("server: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
