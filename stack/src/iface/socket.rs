//! The socket tables of a host, apart from its interfaces (Linux keeps them per network namespace): TCP
//! listeners and connections, UDP sockets, ping identifiers, and the secret behind sequence numbers and
//! ephemeral ports. A stack on its own holds its table; the interfaces of a host with several
//! ([`crate::router::Router`]) share the host's, which is lent to whichever interface the host drives.

use super::tcp::TcpSock;
use super::udp::UdpSock;
use super::{Errno, Ping, Ping6Event, SocketHandle};
use crate::time::Instant;
use std::collections::{HashMap, VecDeque};

pub struct Sockets {
    pub(super) tcp: Vec<Option<TcpSock>>,
    pub(super) udp: Vec<Option<UdpSock>>,
    pub(super) pings: HashMap<u16, VecDeque<Ping>>,
    pub(super) pings6: HashMap<u16, VecDeque<Ping6Event>>,
    /// The secret behind initial sequence numbers (RFC 6528) and ephemeral ports (RFC 6056): random per
    /// table, so that a new process does not reuse the last one's 4-tuples and sequence space.
    pub(super) secret: u64,
    /// RFC 6056's counter of ephemeral port picks.
    pub(super) port_counter: u16,
    /// Each connection's state and retransmission count when last looked at, for the event stream.
    pub(super) tcp_seen: HashMap<SocketHandle, (crate::tcp::State, u64)>,
    /// The table of an interface whose host holds the sockets: nothing may be opened in it.
    detached: bool,
}

impl Default for Sockets {
    fn default() -> Sockets {
        Sockets {
            tcp: Vec::new(),
            udp: Vec::new(),
            pings: HashMap::new(),
            pings6: HashMap::new(),
            secret: super::random_secret(),
            port_counter: 0,
            tcp_seen: HashMap::new(),
            detached: false,
        }
    }
}

impl Sockets {
    /// The placeholder an interface keeps while its host holds the sockets: opening a socket on the
    /// interface itself fails with EOPNOTSUPP (the host's methods open them).
    pub(crate) fn detached() -> Sockets {
        Sockets { detached: true, ..Sockets::default() }
    }

    /// Whether a socket may be opened here (EOPNOTSUPP on an interface of a host with several).
    pub(super) fn open(&self) -> Result<(), Errno> {
        if self.detached {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Whether nothing is open: no TCP or UDP socket and no ping identifier in use.
    pub fn is_empty(&self) -> bool {
        self.tcp.iter().all(Option::is_none) && self.udp.iter().all(Option::is_none) && self.pings.is_empty() && self.pings6.is_empty()
    }

    /// When a connection's timer next runs.
    pub fn poll_at(&self) -> Option<Instant> {
        self.tcp.iter().flatten().filter_map(|s| if let TcpSock::Conn(t, _) = s { t.poll_at() } else { None }).min()
    }
}
