//! The vfio-user socket: listens, serves one client at a time on a mio loop, and goes back to listening
//! when the client leaves. SIGINT/SIGTERM end the loop; the socket file is removed. SIGUSR1 logs the metrics.

use crate::metrics::Metrics;
use crate::nic::lock;
use crate::vfio::NicServer;
use log::{error, info, warn};
use mio::net::UnixListener as MioListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vfio_user::server::{Connection, Device};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const CLIENT: Token = Token(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {0} is in use by a running server")]
    InUse(PathBuf),
    #[error("socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Binds the socket so that it appears only once it accepts connections: bind and listen on a temporary
/// name, then rename into place.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.into()));
        }
        // A stale socket file from a server that is gone.
        let _ = std::fs::remove_file(path);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp).map_err(|e| ServeError::Io(path.into(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| ServeError::Io(path.into(), e))?;
    Ok(l)
}

fn drop_client(poll: &Poll, conn: &mut Option<Connection>, dev: &mut NicServer, why: &str) {
    let Some(c) = conn.take() else { return };
    info!("client gone: {why}");
    let fd = c.socket().as_raw_fd();
    let _ = poll.registry().deregister(&mut SourceFd(&fd));
    let stats = &c.stats;
    info!(
        "session: {} messages, {} error replies, {} failed posted writes, {} unknown commands",
        stats.messages, stats.error_replies, stats.posted_write_errors, stats.unknown_commands
    );
    drop(c);
    dev.disconnected();
}

/// How long a client that connects while another is attached waits for that one to go before it is refused.
const SECOND_CLIENT_WAIT: Duration = Duration::from_millis(500);

/// Makes `s` the client.
fn attach(poll: &Poll, conn: &mut Option<Connection>, s: UnixStream, client_timeout: Duration) -> std::io::Result<()> {
    match Connection::new(s) {
        Ok(mut c) => {
            c.set_stall_limit(client_timeout);
            let fd = c.socket().as_raw_fd();
            poll.registry().register(&mut SourceFd(&fd), CLIENT, Interest::READABLE | Interest::WRITABLE)?;
            info!("client connected");
            *conn = Some(c);
        }
        Err(e) => warn!("client socket: {e}"),
    }
    Ok(())
}

/// Handles the client's messages (`closing`: its side has shut, read to the end); drops the client when
/// the connection is over. A bug in request handling must not take the device down: the client is dropped
/// (as if it had gone away) and the device is reset when it reconnects.
fn serve_client(poll: &Poll, conn: &mut Option<Connection>, dev: &mut NicServer, closing: bool) {
    let Some(c) = conn.as_mut() else { return };
    dev.client_messages();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| c.on_event(dev, closing)));
    let gone = match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => {
            Metrics::inc(&lock(&dev.nic).metrics.server_panics);
            Some("internal error while handling a request".to_string())
        }
    };
    if let Some(why) = gone {
        drop_client(poll, conn, dev, &why);
    }
}

/// The signals `serve` answers (SIGINT and SIGTERM end it, SIGUSR1 logs the metrics), caught from now on:
/// taken before the socket is bound, so that a signal sent as soon as the socket appears is not met by
/// the default action (which would end the process without removing the socket).
pub fn signals() -> std::io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM, SIGUSR1])
}

/// Serves until SIGINT or SIGTERM (`signals`, from `signals()`).
pub fn serve(
    listener: UnixListener,
    mut signals: Signals,
    path: &Path,
    dev: &mut NicServer,
    client_timeout: Duration,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = MioListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let mut conn: Option<Connection> = None;
    // A client that connected while another was attached, and until when it waits for that one to go.
    let mut waiting: Option<(UnixStream, Instant)> = None;
    info!("listening on {}", path.display());
    // A doorbell's round running on this thread (`NicServer::after_requests`): its slices alternate with
    // this loop's polls, which then do not sleep, so that requests, signals and clients never wait behind
    // frames.
    let mut inline_more = false;
    'outer: loop {
        // A timer-polling device (`--timer-poll`) sleeps on its timer while the client is active, then
        // looks at the socket without waiting: the client's sends do not wake it.
        let timer_slept = !inline_more && conn.is_some() && dev.timer_sleep();
        let timeout = match inline_more || timer_slept {
            true => Some(Duration::ZERO),
            false => [conn.as_ref().and_then(Connection::deadline), waiting.as_ref().map(|w| w.1)]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(Instant::now())),
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(c) = conn.as_mut() {
            if let Err(e) = c.check_deadline(Instant::now()) {
                drop_client(&poll, &mut conn, dev, &e.to_string());
            }
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    let mut stop = None;
                    for s in signals.pending() {
                        if s == SIGUSR1 {
                            // A snapshot of the metrics, for tests and operators, while the device runs.
                            info!("metrics (SIGUSR1):");
                            lock(&dev.nic).log_metrics();
                        } else {
                            stop = Some(s);
                        }
                    }
                    if let Some(s) = stop {
                        info!("signal {s}: shutting down");
                        break 'outer;
                    }
                }
                LISTENER => {
                    loop {
                        match listener.accept() {
                            Ok((s, _)) => {
                                let s: UnixStream = {
                                    let fd = std::os::fd::OwnedFd::from(s);
                                    UnixStream::from(fd)
                                };
                                if conn.is_some() {
                                    // A client that closed and connected again at once (a driver reopened):
                                    // its hang-up may be reported after the new connection, and its close may
                                    // take effect late (a fork of the client's process holding its socket for a
                                    // moment). The first to come waits a little for it to go (taken at the end
                                    // of the pass that drops it), the others are refused.
                                    if waiting.is_none() {
                                        info!("a client connects while one is attached: it waits up to {SECOND_CLIENT_WAIT:?} for that one to go");
                                        waiting = Some((s, Instant::now() + SECOND_CLIENT_WAIT));
                                    } else {
                                        warn!("second client refused: one client at a time");
                                    }
                                    continue;
                                }
                                attach(&poll, &mut conn, s, client_timeout)?;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                error!("accept: {e}");
                                break;
                            }
                        }
                    }
                }
                CLIENT => {
                    if conn.is_none() {
                        continue;
                    }
                    if timer_slept && ev.is_readable() {
                        dev.timer_poll_found_messages();
                    }
                    serve_client(&poll, &mut conn, dev, ev.is_read_closed());
                }
                _ => {}
            }
        }
        match waiting.take() {
            Some((s, _)) if conn.is_none() => {
                info!("the waiting client takes the card");
                attach(&poll, &mut conn, s, client_timeout)?;
            }
            Some((_, until)) if Instant::now() >= until => warn!("second client refused: one client at a time"),
            w => waiting = w,
        }
        inline_more = match std::panic::catch_unwind(AssertUnwindSafe(|| dev.after_requests())) {
            Ok(more) => more,
            Err(_) => {
                Metrics::inc(&lock(&dev.nic).metrics.server_panics);
                error!("internal error while starting the data path");
                false
            }
        };
    }
    if conn.is_some() {
        dev.disconnected();
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}
