//! nic-device: an emulated Intel 82574L served over vfio-user.
//!
//! nic-device --socket PATH --backend SPEC [--mac MAC] [--pcap FILE] [--rx-overflow pause|drop] [--client-timeout SECS]

use log::{error, info};
use nic_device::backend;
use nic_device::datapath::{DataPath, RxOverflow};
use nic_device::metrics::Metrics;
use nic_device::nic::Nic;
use nic_device::pcap::PcapWriter;
use nic_device::vfio::NicServer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

const USAGE: &str =
    "usage: nic-device --socket PATH --backend SPEC [--mac MAC] [--pcap FILE] [--rx-overflow pause|drop] [--client-timeout SECS]
  --socket PATH        vfio-user socket to serve (created when the device is ready)
  --backend SPEC       tap:IFNAME | stream:PATH | stream-connect:PATH | stream:tcp:HOST:PORT |
                       stream-connect:tcp:HOST:PORT | loopback
  --mac MAC            station address (default 52:54:00:12:34:56)
  --pcap FILE          write every frame on the wire, both directions, as pcap
  --rx-overflow MODE   when the receive FIFO is full: pause reading the backend (default) or drop and
                       count missed packets (MPC) as a wire would
  --client-timeout S   disconnect a vfio-user client that leaves replies unread or a message half-sent for
                       this long (default 10)";

struct Args {
    socket: PathBuf,
    backend: String,
    mac: [u8; 6],
    pcap: Option<PathBuf>,
    overflow: RxOverflow,
    client_timeout: std::time::Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut socket, mut backend, mut mac, mut pcap, mut overflow) =
        (None, None, [0x52, 0x54, 0, 0x12, 0x34, 0x56], None, RxOverflow::Pause);
    let mut client_timeout = vfio_user::server::STALL_LIMIT;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(val("--socket")?)),
            "--backend" => backend = Some(val("--backend")?),
            "--mac" => {
                let v = val("--mac")?;
                mac = nic_device::parse_mac(&v).ok_or(format!("bad MAC '{v}'"))?;
                if mac[0] & 1 != 0 {
                    return Err(format!("MAC '{v}' is multicast"));
                }
            }
            "--pcap" => pcap = Some(PathBuf::from(val("--pcap")?)),
            "--rx-overflow" => {
                overflow = match val("--rx-overflow")?.as_str() {
                    "pause" => RxOverflow::Pause,
                    "drop" => RxOverflow::Drop,
                    o => return Err(format!("--rx-overflow: '{o}' is not pause or drop")),
                }
            }
            "--client-timeout" => {
                let v = val("--client-timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= 3600.0)
                    .ok_or(format!("--client-timeout: '{v}' is not 0 < SECS <= 3600"))?;
                client_timeout = std::time::Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => return Err(String::new()),
            o => return Err(format!("unknown argument '{o}'")),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket is required")?,
        backend: backend.ok_or("--backend is required")?,
        mac,
        pcap,
        overflow,
        client_timeout,
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nic-device: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match nic_device::server::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let cleanup = |code: u8| {
        let _ = std::fs::remove_file(&args.socket);
        ExitCode::from(code)
    };
    let be = match backend::open(&args.backend) {
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
    let mut dp = match DataPath::start(nic.clone(), be, pcap, args.overflow) {
        Ok(d) => d,
        Err(e) => {
            error!("data path: {e}");
            return cleanup(1);
        }
    };
    let mut dev = NicServer { nic: nic.clone(), waker: dp.waker.clone() };
    let r = nic_device::server::serve(listener, &args.socket, &mut dev, args.client_timeout);
    dp.stop();
    let _ = std::fs::remove_file(&args.socket);
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
