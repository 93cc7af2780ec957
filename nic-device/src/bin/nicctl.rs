//! nicctl: talks to a running nic-device's control socket (`nic-device --control PATH`): registers, rings,
//! statistics, PHY, NVM and interrupt state; a live trace; fault injection.

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// Inspect, trace and break a running nic-device through its control socket.
#[derive(Parser, Debug)]
#[command(name = "nicctl", version)]
struct Cli {
    /// The control socket (nic-device --control PATH)
    #[arg(required_unless_present = "completions")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Print a shell completion script and exit
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Registers with their values and decoded fields (all named registers without NAMEs)
    Regs {
        // In an attribute, not a doc comment: rustdoc would read the array index as a link.
        #[arg(help = "Datasheet names (CTRL, RCTL, RDT1, MTA[3]) or offsets (0x100)")]
        names: Vec<String>,
    },
    /// Each queue's head, tail and length, and the descriptors around head and tail, decoded
    Rings,
    /// Statistics under the names `ethtool -S` uses, and the device's own counters
    Stats,
    /// PHY registers and link state
    Phy,
    /// The NVM image, its checksum and MAC address
    Nvm,
    /// Interrupt mode, causes, masks, IVAR routing, moderation and message counts
    Irq,
    /// A live stream of events, one JSON object per line, until interrupted
    Trace {
        /// Register accesses
        #[arg(long)]
        regs: bool,
        /// DMA reads and writes
        #[arg(long)]
        dma: bool,
        /// Interrupts raised, moderated, lost or delayed
        #[arg(long)]
        irq: bool,
        /// Frames to and from the wire
        #[arg(long)]
        frames: bool,
        /// Faults injected and cleared
        #[arg(long)]
        faults: bool,
        /// Only these registers' accesses (with --regs)
        #[arg(long = "reg", value_name = "NAME")]
        reg_names: Vec<String>,
        /// Write to FILE instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Stop after this many events
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Inject a fault
    Inject(InjectArgs),
    /// Clear a fault (`link` clears link-down and link-flap), or all of them
    Clear {
        /// Fault name, `link`, or `all`
        #[arg(default_value = "all")]
        fault: String,
    },
    /// Bring the link back up: clears link-down and link-flap
    LinkUp,
    /// Active faults
    Faults,
}

#[derive(clap::Args, Debug)]
struct InjectArgs {
    /// link-down, link-flap, phy-silent, nvm-checksum, nvm-mac, tx-stall, rx-drop, rx-truncate, rx-bad-csum,
    /// dma-error, irq-lost, irq-spurious, irq-late, writeback-delay, doorbell-latency
    fault: String,
    /// Events it acts on (frames, DMA accesses, interrupts, MDIC cycles, doorbells, resets, flaps); default 1
    #[arg(long, value_name = "N", conflicts_with_all = ["persistent", "for_ms"])]
    count: Option<u64>,
    /// Until cleared
    #[arg(long)]
    persistent: bool,
    /// For this long, then it ends by itself
    #[arg(long = "for", value_name = "MS")]
    for_ms: Option<f64>,
    /// Flap period, or the delay of late interrupts, write-backs and doorbells
    #[arg(long = "delay", value_name = "MS")]
    delay_ms: Option<f64>,
    /// The MAC address nvm-mac loads
    #[arg(long)]
    mac: Option<String>,
    /// The transmit queue tx-stall stops (both by default)
    #[arg(long)]
    queue: Option<u64>,
}

fn request(sock: &PathBuf, req: &Value) -> Result<(Value, BufReader<UnixStream>), String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad reply from the device: {e}"))?;
    if v["ok"] != true {
        return Err(v["error"].as_str().unwrap_or("request failed").to_string());
    }
    Ok((v["data"].clone(), r))
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as other CLIs do.
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        clap_complete::generate(shell, &mut Cli::command(), "nicctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let (Some(sock), Some(cmd)) = (cli.socket, cli.cmd) else {
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    match run(&sock, cmd, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nicctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(sock: &PathBuf, cmd: Cmd, as_json: bool) -> Result<(), String> {
    let req = match &cmd {
        Cmd::Regs { names } => json!({"cmd": "regs", "names": names}),
        Cmd::Rings => json!({"cmd": "rings"}),
        Cmd::Stats => json!({"cmd": "stats"}),
        Cmd::Phy => json!({"cmd": "phy"}),
        Cmd::Nvm => json!({"cmd": "nvm"}),
        Cmd::Irq => json!({"cmd": "irq"}),
        Cmd::Faults => json!({"cmd": "faults"}),
        Cmd::Clear { fault } => json!({"cmd": "clear", "fault": fault}),
        Cmd::LinkUp => json!({"cmd": "clear", "fault": "link"}),
        Cmd::Inject(a) => {
            let mut r = json!({"cmd": "inject", "fault": a.fault, "persistent": a.persistent});
            if let Some(c) = a.count {
                r["count"] = json!(c);
            }
            if let Some(v) = a.for_ms {
                r["for_ms"] = json!(v);
            }
            if let Some(v) = a.delay_ms {
                r["delay_ms"] = json!(v);
            }
            if let Some(v) = &a.mac {
                r["mac"] = json!(v);
            }
            if let Some(v) = a.queue {
                r["queue"] = json!(v);
            }
            r
        }
        Cmd::Trace { regs, dma, irq, frames, faults, reg_names, .. } => {
            let mut cats: Vec<&str> = Vec::new();
            for (on, n) in [(*regs, "regs"), (*dma, "dma"), (*irq, "irq"), (*frames, "frames"), (*faults, "faults")] {
                if on {
                    cats.push(n);
                }
            }
            json!({"cmd": "trace", "categories": cats, "names": reg_names})
        }
    };
    let (data, mut rest) = request(sock, &req)?;
    if let Cmd::Trace { output, count, .. } = cmd {
        let mut out: Box<dyn Write> = match &output {
            Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)),
            None => Box::new(std::io::stdout()),
        };
        let mut n = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            match rest.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
            // Flushed whenever what has arrived is written, so a reader (or a kill) loses nothing already
            // received, while a burst still goes out in large writes.
            if rest.buffer().is_empty() {
                out.flush().map_err(|e| e.to_string())?;
            }
            n += 1;
            if count.is_some_and(|c| n >= c) {
                return out.flush().map_err(|e| e.to_string());
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
        return Ok(());
    }
    match cmd {
        Cmd::Regs { .. } => print_regs(&data),
        Cmd::Rings => print_rings(&data),
        Cmd::Stats => print_stats(&data),
        Cmd::Irq | Cmd::Phy | Cmd::Nvm => print_tree("", &data),
        Cmd::Faults => {
            let list = data.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no faults active");
            }
            for f in list {
                println!("{}", describe_fault(&f));
            }
        }
        Cmd::Inject(_) => println!("injected: {}", describe_fault(&data)),
        Cmd::Clear { .. } | Cmd::LinkUp => println!("cleared {}", data["cleared"]),
        Cmd::Trace { .. } => {}
    }
    Ok(())
}

fn describe_fault(f: &Value) -> String {
    let mut s = f["fault"].as_str().unwrap_or("?").to_string();
    if f["persistent"] == true {
        s.push_str(" persistent");
    } else if let Some(r) = f["remaining"].as_u64() {
        s.push_str(&format!(" remaining {r}"));
    } else if let Some(ms) = f["ends_in_ms"].as_u64() {
        s.push_str(&format!(" ends in {ms} ms"));
    }
    s.push_str(&format!(" (acted {} times)", f["hits"]));
    s
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_regs(data: &Value) {
    for r in data.as_array().into_iter().flatten() {
        // Fields that are set; --json has them all.
        let fields: Vec<String> = r["fields"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64() != Some(0))
            .map(|(k, v)| format!("{}.{k}={}", r["name"].as_str().unwrap_or(""), v))
            .collect();
        println!("{:<12} {} {}  {}", scalar(&r["name"]), scalar(&r["offset"]), scalar(&r["value"]), fields.join(" "));
    }
}

fn print_rings(data: &Value) {
    for q in data.as_array().into_iter().flatten() {
        println!(
            "{}: {} base {} {} descriptors ({}), head {} tail {}",
            scalar(&q["queue"]),
            if q["enabled"] == true { "enabled" } else { "disabled" },
            scalar(&q["base"]),
            q["descriptors"],
            scalar(&q["format"]),
            q["head"],
            q["tail"]
        );
        for d in q["ring"].as_array().into_iter().flatten() {
            let mark = if d["index"] == q["head"] {
                "H"
            } else if d["index"] == q["tail"] {
                "T"
            } else {
                " "
            };
            let fields: Vec<String> = d
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "index" && *k != "at")
                .map(|(k, v)| format!("{k}={}", scalar(v)))
                .collect();
            println!("  {mark} [{:>4}] {}", d["index"], fields.join(" "));
        }
    }
}

fn print_stats(data: &Value) {
    for (section, title) in [("ethtool", "card (ethtool -S names)"), ("device", "device"), ("fault_hits", "faults acted")] {
        let Some(m) = data[section].as_object() else { continue };
        if m.is_empty() {
            continue;
        }
        println!("{title}:");
        for (k, v) in m {
            println!("  {k}: {v}");
        }
    }
}

fn print_tree(indent: &str, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if x.is_object() || x.as_array().is_some_and(|a| a.iter().any(|e| e.is_object())) {
                    println!("{indent}{k}:");
                    print_tree(&format!("{indent}  "), x);
                } else {
                    println!("{indent}{k}: {}", compact(x));
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                match x.as_object() {
                    Some(m) => println!("{indent}- {}", m.iter().map(|(k, v)| format!("{k}={}", compact(v))).collect::<Vec<_>>().join(" ")),
                    None => println!("{indent}- {}", compact(x)),
                }
            }
        }
        other => println!("{indent}{}", compact(other)),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(" "),
        other => scalar(other),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
