//! The small services a topology host runs (`services = [...]` on a `[[host]]`), as inetd runs them for
//! a Linux host: TCP and UDP echo (RFC 862) and TCP discard (RFC 863), on any port, over IPv4 and IPv6.
//! Each runs from the topology's poll loop without blocking it: a turn takes what the host's sockets
//! hold, answers what it can, and leaves the rest for the next turn.

use stack::iface::{SocketHandle, Stack, EAGAIN};
use stack::time::Instant;

/// What a service does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TcpEcho,
    TcpDiscard,
    UdpEcho,
}

/// The services by name.
const KINDS: [(&str, Kind); 3] = [("tcp-echo", Kind::TcpEcho), ("tcp-discard", Kind::TcpDiscard), ("udp-echo", Kind::UdpEcho)];

/// Bytes one TCP connection may hold back while its peer does not read the echo: reading stops there,
/// so the peer's window closes rather than the host's memory growing.
const ECHO_BACKLOG: usize = 256 * 1024;
/// Connections one service keeps at a time; more wait in the listener's queue.
const MAX_CONNS: usize = 64;

/// A service's counters, as the topology's report prints them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub datagrams: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections that ended in an error (reset, timed out) rather than a close; datagrams that could not
    /// be answered, and errors the UDP socket reported (an ICMP unreachable about an earlier answer).
    pub errors: u64,
}

struct Conn {
    h: SocketHandle,
    /// Received, not yet echoed.
    pending: Vec<u8>,
    /// The peer closed its side: close ours once `pending` is out.
    eof: bool,
}

pub struct Service {
    pub kind: Kind,
    pub port: u16,
    sock: SocketHandle,
    conns: Vec<Conn>,
    pub counters: Counters,
}

/// `tcp-echo:7`, `udp-echo:7`, `tcp-discard:9`.
pub fn parse(spec: &str) -> Result<(Kind, u16), String> {
    let (name, port) = spec.split_once(':').ok_or(format!("service '{spec}': give NAME:PORT (tcp-echo:7, udp-echo:7, tcp-discard:9)"))?;
    let Some(&(_, kind)) = KINDS.iter().find(|k| k.0 == name) else {
        return Err(format!("service '{spec}': unknown service '{name}' (tcp-echo, tcp-discard, udp-echo)"));
    };
    let port: u16 = port.parse().map_err(|_| format!("service '{spec}': '{port}' is not a port"))?;
    if port == 0 {
        return Err(format!("service '{spec}': port 0"));
    }
    Ok((kind, port))
}

impl Service {
    /// Opens the service's socket on `stack`.
    pub fn start(stack: &mut Stack, spec: &str) -> Result<Service, String> {
        let (kind, port) = parse(spec)?;
        let sock = match kind {
            Kind::UdpEcho => stack.udp_bind(port),
            _ => stack.tcp_listen(port, MAX_CONNS),
        }
        .map_err(|e| format!("service '{spec}': {e}"))?;
        Ok(Service { kind, port, sock, conns: Vec::new(), counters: Counters::default() })
    }

    /// One turn: takes new connections and what arrived, sends what can be sent. Whether anything moved.
    pub fn turn(&mut self, stack: &mut Stack, now: Instant, buf: &mut [u8]) -> bool {
        match self.kind {
            Kind::UdpEcho => self.udp_turn(stack, now),
            _ => self.tcp_turn(stack, now, buf),
        }
    }

    fn udp_turn(&mut self, stack: &mut Stack, now: Instant) -> bool {
        let mut moved = false;
        loop {
            match stack.udp_recv_from_ip(self.sock) {
                Ok((data, from, port)) => {
                    moved = true;
                    self.counters.datagrams += 1;
                    self.counters.bytes_in += data.len() as u64;
                    match stack.udp_send_to_ip(self.sock, from, port, &data, now) {
                        Ok(()) => self.counters.bytes_out += data.len() as u64,
                        Err(_) => self.counters.errors += 1,
                    }
                }
                Err(e) if e == EAGAIN => return moved,
                // An ICMP error about an earlier answer: reported once, the socket goes on.
                Err(_) => self.counters.errors += 1,
            }
        }
    }

    fn tcp_turn(&mut self, stack: &mut Stack, now: Instant, buf: &mut [u8]) -> bool {
        let mut moved = false;
        while self.conns.len() < MAX_CONNS {
            let Ok(h) = stack.tcp_accept(self.sock) else { break };
            self.counters.connections += 1;
            self.conns.push(Conn { h, pending: Vec::new(), eof: false });
            moved = true;
        }
        let echo = self.kind == Kind::TcpEcho;
        let mut i = 0;
        while let Some(c) = self.conns.get_mut(i) {
            let mut failed = false;
            // Out first: what waits frees room for more to come in.
            while !c.pending.is_empty() {
                match stack.tcp_send(c.h, &c.pending, now) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.pending.drain(..n.min(c.pending.len()));
                        self.counters.bytes_out += n as u64;
                        moved = true;
                    }
                    Err(e) if e == EAGAIN => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            while !failed && !c.eof && c.pending.len() < ECHO_BACKLOG {
                let room = buf.len().min(ECHO_BACKLOG - c.pending.len());
                match stack.tcp_recv(c.h, buf.get_mut(..room).unwrap_or_default(), now) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        self.counters.bytes_in += n as u64;
                        if echo {
                            c.pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                        }
                        moved = true;
                    }
                    Err(e) if e == EAGAIN => break,
                    Err(_) => failed = true,
                }
            }
            if failed {
                self.counters.errors += 1;
                stack.tcp_abort(c.h, now);
                self.conns.swap_remove(i);
                moved = true;
            } else if c.eof && c.pending.is_empty() {
                // All echoed that came before the peer's FIN: ours goes (the stack finishes the close).
                stack.tcp_close(c.h, now);
                self.conns.swap_remove(i);
                moved = true;
            } else {
                i += 1;
            }
        }
        moved
    }

    /// One line for the report: `tcp-echo:7  3 connections, 1048576 bytes in, 1048576 out`.
    pub fn report(&self) -> String {
        let c = &self.counters;
        let name = KINDS.iter().find(|k| k.1 == self.kind).map_or("?", |k| k.0);
        let what = match self.kind {
            Kind::UdpEcho => format!("{} datagrams", c.datagrams),
            _ => format!("{} connections ({} open)", c.connections, self.conns.len()),
        };
        format!("{name}:{}  {what}, {} bytes in, {} out, {} errors", self.port, c.bytes_in, c.bytes_out, c.errors)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn specs_parse_and_mistakes_are_named() {
        assert_eq!(parse("tcp-echo:7"), Ok((Kind::TcpEcho, 7)));
        assert_eq!(parse("udp-echo:7007"), Ok((Kind::UdpEcho, 7007)));
        assert_eq!(parse("tcp-discard:9"), Ok((Kind::TcpDiscard, 9)));
        assert!(parse("tcp-echo").unwrap_err().contains("NAME:PORT"));
        assert!(parse("chargen:19").unwrap_err().contains("unknown service 'chargen'"));
        assert!(parse("tcp-echo:seven").unwrap_err().contains("not a port"));
        assert!(parse("tcp-echo:0").unwrap_err().contains("port 0"));
        assert!(parse("tcp-echo:70000").unwrap_err().contains("not a port"));
    }
}
