//! vfio-user: the framing and message parsers, and a live device object behind a server connection.

use crate::device::{self, MEM_BASE, MEM_SIZE};
use nic_device::metrics::Metrics;
use nic_device::nic::lock;
use nic_device::nic::Nic;
use nic_device::vfio::NicServer;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use vfio_user::server::Connection;
use vfio_user::socket::{Frame, Reader};
use vfio_user::*;

/// Splits the input into a byte stream, reassembles frames and runs every parser on every payload; what
/// parses must emit and parse back to the same value.
pub fn decode(data: &[u8]) {
    let mut r = Reader::new();
    // Feed in two pieces so that a frame straddling a read is exercised too.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(cut);
    for piece in [a, b] {
        r.push(piece);
        loop {
            match r.next_frame() {
                Ok(Some(Frame::Message(m))) => parse_all(&m.payload),
                Ok(Some(Frame::Oversized(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    parse_all(data);
}

fn parse_all(p: &[u8]) {
    if let Ok(v) = Version::parse(p) {
        let _ = check_capabilities(&v.capabilities);
        let _ = json_number(&v.capabilities, "max_msg_fds");
        if !v.capabilities.contains('\0') {
            let mut out = Vec::new();
            v.emit(&mut out);
            assert_eq!(Version::parse(&out).ok(), Some(v));
        }
    }
    macro_rules! round_trip {
        ($t:ty) => {
            if let Ok(v) = <$t>::parse(p) {
                let mut out = Vec::new();
                v.emit(&mut out);
                assert_eq!(<$t>::parse(&out).ok(), Some(v), stringify!($t));
            }
        };
    }
    round_trip!(DmaMap);
    round_trip!(DmaUnmap);
    round_trip!(DeviceInfo);
    round_trip!(RegionInfo);
    round_trip!(IrqInfo);
    round_trip!(IrqSet);
    round_trip!(RegionAccess);
    let _ = parse_write_multi(p);
    if let Ok(h) = Header::parse(p) {
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(Header::parse(&out).ok(), Some(h));
    }
}

thread_local! {
    static WAKER: (mio::Poll, Arc<mio::Waker>) = {
        let poll = mio::Poll::new().expect("epoll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        (poll, waker)
    };
}

/// A message stream from a client (the input, as bytes on the socket) against a live device with guest
/// memory mapped; afterwards the rings the messages programmed are run, as the data path would.
pub fn server(data: &[u8]) {
    let nic = Arc::new(Mutex::new(Nic::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], Arc::new(Metrics::default()))));
    lock(&nic).dma = nic_device::dma::testing::space(MEM_BASE, MEM_SIZE);
    let waker = WAKER.with(|w| w.1.clone());
    let mut dev = NicServer::new(nic.clone(), nic_device::datapath::Kick::waker_only(waker));
    let Ok((mut client, server)) = UnixStream::pair() else { return };
    let Ok(mut conn) = Connection::new(server) else { return };
    // The first message is always VERSION, so that the rest reach the commands behind it.
    let mut stream = Vec::with_capacity(data.len() + 32);
    if data.first().is_some_and(|b| b & 1 == 0) {
        let mut v = Vec::new();
        Version { major: 0, minor: 0, capabilities: String::new() }.emit(&mut v);
        Header { msg_id: 0, command: Command::Version as u16, size: (HEADER_SIZE + v.len()) as u32, flags: 0, error: 0 }.emit(&mut stream);
        stream.extend_from_slice(&v);
    }
    stream.extend_from_slice(data.get(1..).unwrap_or(&[]));
    if std::io::Write::write_all(&mut client, &stream).is_err() {
        return;
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = client.set_nonblocking(true);
    let mut sink = vec![0u8; 1 << 16];
    // Events with and without the shutdown flag: reading stops at the read that empties the socket, or
    // goes on to the EOF (bit 1 of the first byte picks which).
    let closing = data.first().is_some_and(|b| b & 2 == 0);
    for _ in 0..256 {
        let r = conn.on_event(&mut dev, closing);
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        if r.is_err() {
            break;
        }
    }
    let mut n = lock(&nic);
    device::run_rings(&mut n, &[0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    drop(n);
    vfio_user::server::Device::disconnected(&mut dev);
}
