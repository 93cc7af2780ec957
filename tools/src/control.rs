//! `nic-lab --control PATH ...`: a Unix socket the running stack answers on between its polls, and
//! `nic-lab ctl PATH COMMAND` to ask it. One command per connection, one text answer:
//!
//! ```text
//! ss | link | nstat | drops | events [FROM] | conntrack | nft list | tc show | capture FILE | capture stop
//! capture hook HOOK FILE | capture hook stop
//! ```
//!
//! Under `nic-lab run`, a leading host or interface name picks the stack (`inside ss`), and `capture IF FILE`
//! / `capture IF stop` name the interface as tcpdump users do.

use stack::Stack;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Control {
    pub fn bind(path: &Path) -> Result<Control, String> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| format!("--control {}: {e}", path.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Control { listener, path: path.to_path_buf() })
    }

    /// Answers every client waiting now.
    /// The listening socket, readable when a client connects (to wait on beside a device).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    pub fn serve(&mut self, s: &mut Stack) {
        self.serve_with(&mut |cmd| command(cmd, s));
    }

    /// Answers every client waiting now through `f` (command line in, answer out).
    pub fn serve_with(&mut self, f: &mut dyn FnMut(&str) -> String) {
        while let Ok((c, _)) = self.listener.accept() {
            if let Err(e) = answer(c, f) {
                log::debug!("control client: {e}");
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(c: UnixStream, f: &mut dyn FnMut(&str) -> String) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(&c).take(4096).read_line(&mut line)?;
    let reply = f(line.trim());
    let mut w = &c;
    w.write_all(reply.as_bytes())
}

/// A command for one of several stacks (`nic-lab run`): a leading host or interface name picks the
/// stack; without one, the first.
pub fn command_among(cmd: &str, stacks: &mut [(&str, &mut Stack)]) -> String {
    // `capture IF FILE` (and `capture IF stop`) as tcpdump users say it: the interface after the verb.
    let w: Vec<&str> = cmd.split_whitespace().collect();
    if let ["capture", iface, rest @ ..] = w.as_slice() {
        if !rest.is_empty() && stacks.iter().any(|(n, s)| n == iface || s.name() == *iface) {
            return command_among(&format!("{iface} capture {}", rest.join(" ")), stacks);
        }
    }
    let mut words = cmd.split_whitespace();
    let first = words.next().unwrap_or_default();
    let (i, rest) = match stacks.iter().position(|(n, s)| *n == first || s.name() == first) {
        Some(i) => (i, words.collect::<Vec<_>>().join(" ")),
        None => (0, cmd.to_string()),
    };
    let many = stacks.len() > 1;
    match stacks.get_mut(i) {
        Some((name, s)) => {
            let out = command(&rest, s);
            if many && rest == "ss" {
                format!("({name})\n{out}")
            } else {
                out
            }
        }
        None => "error: nothing is running\n".into(),
    }
}

/// One command's answer.
pub fn command(cmd: &str, s: &mut Stack) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["ss"] => s.ss(),
        ["link"] => s.link_show(),
        ["nstat"] => s.nstat(),
        ["drops"] => s.drops_show(),
        ["events", rest @ ..] => {
            let from = rest.first().and_then(|f| f.parse().ok()).unwrap_or(0);
            let (ev, next) = s.mon.events_since(from);
            let mut out: String = ev.iter().map(|e| format!("{e}\n")).collect();
            out += &format!("next {next} lost {}\n", s.mon.events_lost);
            out
        }
        ["conntrack"] | ["conntrack", "-L"] => match s.netfilter() {
            Some(nf) => nf.borrow().conntrack_listing(stack::time::Instant::now()),
            None => "netfilter is not attached\n".into(),
        },
        ["nft", "list"] | ["nft", "list", "ruleset"] => match s.netfilter() {
            Some(nf) => nf.borrow().rules.listing(),
            None => "netfilter is not attached\n".into(),
        },
        ["tc", "show"] | ["tc"] => s.tc_show() + "\n",
        ["capture", "hook", "stop"] => match s.netfilter() {
            Some(nf) => match nf.borrow_mut().set_capture(None) {
                Ok(n) => format!("capture stopped: {n} packets\n"),
                Err(e) => format!("error: {e}\n"),
            },
            None => "error: netfilter is not attached\n".into(),
        },
        ["capture", "hook", hook, file] => {
            let h = match *hook {
                "prerouting" => stack::netfilter::Hook::Prerouting,
                "input" => stack::netfilter::Hook::Input,
                "forward" => stack::netfilter::Hook::Forward,
                "output" => stack::netfilter::Hook::Output,
                "postrouting" => stack::netfilter::Hook::Postrouting,
                _ => return format!("error: {hook}: prerouting, input, forward, output or postrouting\n"),
            };
            match s.netfilter() {
                Some(nf) => match nf.borrow_mut().set_capture(Some((h, Path::new(file)))) {
                    Ok(_) => format!("capturing hook {hook} to {file}\n"),
                    Err(e) => format!("error: {file}: {e}\n"),
                },
                None => "error: netfilter is not attached\n".into(),
            }
        }
        ["capture", "stop"] => match s.set_capture(None) {
            Ok(n) => format!("capture stopped: {n} frames\n"),
            Err(e) => format!("error: {e}\n"),
        },
        ["capture", file] => match s.set_capture(Some(Path::new(file))) {
            Ok(_) => format!("capturing to {file}\n"),
            Err(e) => format!("error: {file}: {e}\n"),
        },
        _ => "commands: ss | link | nstat | drops | events [FROM] | conntrack | nft list | tc show | capture FILE | capture stop | capture hook HOOK FILE | capture hook stop\n".into(),
    }
}

/// `nic-lab ctl PATH COMMAND...`: sends the command, prints the answer.
pub fn ctl(path: &str, cmd: &[String]) -> Result<bool, String> {
    let mut c = UnixStream::connect(path).map_err(|e| format!("{path}: {e}"))?;
    c.write_all(format!("{}\n", cmd.join(" ")).as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    c.read_to_string(&mut out).map_err(|e| e.to_string())?;
    print!("{out}");
    Ok(!out.starts_with("error"))
}
