//! The stack's L2 devices between the wire and two hosts: a VLAN demultiplexer over one port (VLAN 100
//! with its tag in metadata or in the frame, VLAN 200, the untagged traffic), a bond (active-backup or
//! balance-xor, on a virtual clock) over VLAN 100 and a second port, and a learning bridge over the bond and
//! VLAN 200 with a host on it; a second host on the untagged traffic. Frames from the input arrive on
//! either port (tagged in the frame, tagged in metadata as a card strips them, or not), the hosts send
//! datagrams and pings out through all of it, the ports take only as many frames as the input gives them
//! room for, slaves lose and regain their link, and a sleeping loop's `wait_fds`/`woke` run in between with
//! readiness the input chooses.
//!
//! Beyond no panic, every device the hosts send through keeps the transmit contract (`Device::transmit`
//! returns how many frames it took from the front of the queue, and the queue is short by exactly that
//! many: a device that dropped what its member had no room for while reporting it sent broke it), and the
//! VLAN demultiplexer accounts for every frame it read from its port.

use crate::input::Input;
use stack::dev::bond::{Bond, Mode};
use stack::dev::bridge::Bridge;
use stack::dev::vlan::VlanMux;
use stack::dev::Device;
use stack::skb::PacketBuf;
use stack::time::Instant;
use stack::wire::Mac;
use stack::{Config, Stack};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

const PEER_MAC: Mac = [2, 0, 0, 0, 0, 1];
const PORT_A: Mac = [2, 0, 0, 0, 0xa, 0];
const PORT_B: Mac = [2, 0, 0, 0, 0xb, 0];
const BRIDGE: Mac = [2, 0, 0, 0, 0xbb, 0];
const BRIDGED_IP: [u8; 4] = [10, 0, 0, 2];
const UNTAGGED_IP: [u8; 4] = [10, 0, 1, 2];

/// One wire port: frames the input puts in, room for as many frames out as the input allows.
#[derive(Default)]
struct Wire {
    inbox: VecDeque<PacketBuf>,
    room: usize,
    link: bool,
    delivered: u64,
    sent: u64,
}

struct Port {
    mac: Mac,
    wire: Rc<RefCell<Wire>>,
}

impl Device for Port {
    fn mac(&self) -> Mac {
        self.mac
    }
    fn features(&self) -> stack::dev::Features {
        stack::dev::Features { vlan: true, ..Default::default() }
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let mut w = self.wire.borrow_mut();
        let n = q.len().min(w.room);
        q.drain(..n);
        w.room -= n;
        w.sent += n as u64;
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let mut w = self.wire.borrow_mut();
        let n = budget.min(w.inbox.len());
        out.extend(w.inbox.drain(..n));
        w.delivered += n as u64;
        Ok(n)
    }
    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        format!("port{:x}", self.mac[4])
    }
    fn link_up(&mut self) -> bool {
        self.wire.borrow().link
    }
}

/// A device, checked: `transmit` keeps its contract, every call; what it took is counted.
struct Checked(Box<dyn Device>, Rc<Cell<u64>>);

/// `dev` checked, and its count of frames taken.
fn checked(dev: Box<dyn Device>) -> (Checked, Rc<Cell<u64>>) {
    let n = Rc::new(Cell::new(0));
    (Checked(dev, n.clone()), n)
}

impl Device for Checked {
    fn mac(&self) -> Mac {
        self.0.mac()
    }
    fn mtu(&self) -> usize {
        self.0.mtu()
    }
    fn features(&self) -> stack::dev::Features {
        self.0.features()
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let before = q.len();
        let n = self.0.transmit(q)?;
        assert!(n <= before && q.len() == before - n, "{}: took {n} of {before}, {} left", self.0.name(), q.len());
        self.1.set(self.1.get() + n as u64);
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let before = out.len();
        let n = self.0.poll(budget, out)?;
        assert_eq!(out.len() - before, n, "{}: poll's count", self.0.name());
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.0.wait(timeout)
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> std::io::Result<bool> {
        self.0.wait_fds(out)
    }
    fn woke(&mut self, ready: &[bool]) -> std::io::Result<()> {
        self.0.woke(ready)
    }
    fn link_up(&mut self) -> bool {
        self.0.link_up()
    }
    fn announce_wanted(&mut self) -> bool {
        self.0.announce_wanted()
    }
    fn report(&self) -> Option<String> {
        self.0.report()
    }
}

/// A frame from the input: a destination (broadcast, a host's, the bridge's, the input's), our peer's
/// source, maybe an 802.1Q tag (VLAN 100, 200 or the input's), an ARP request for a host's address or an
/// IPv4 packet to it or raw bytes; and maybe the tag in metadata instead, as a card that strips tags
/// leaves it.
fn frame(i: &mut Input) -> PacketBuf {
    let mode = i.u8();
    let len = usize::from(i.u16() % 300);
    let body = i.bytes(len);
    let ip = if mode & 0x40 != 0 { UNTAGGED_IP } else { BRIDGED_IP };
    let mut f = Vec::with_capacity(18 + 28 + body.len());
    match mode & 3 {
        0 => f.extend_from_slice(&[0xFF; 6]),
        1 => f.extend_from_slice(&BRIDGE),
        2 => f.extend_from_slice(&PORT_A),
        _ => f.extend_from_slice(&i.array::<6>()),
    }
    f.extend_from_slice(&PEER_MAC);
    let vid: Option<u16> = match (mode >> 2) & 3 {
        0 => None,
        1 => Some(100),
        2 => Some(200),
        _ => Some(i.u16()),
    };
    let in_meta = mode & 0x10 != 0;
    if let (Some(v), false) = (vid, in_meta) {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    if mode & 0x20 != 0 {
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ip);
    } else if mode & 0x80 != 0 {
        f.extend_from_slice(&[8, 0, 0x45, 0]);
        f.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(body);
    let mut p = PacketBuf::from_slice(&f);
    if in_meta {
        p.vlan = vid;
    }
    p
}

pub fn l2(data: &[u8]) {
    let mut i = Input::new(data);
    let setup = i.u8();
    let (a, b) =
        (Rc::new(RefCell::new(Wire { link: true, ..Wire::default() })), Rc::new(RefCell::new(Wire { link: true, ..Wire::default() })));
    let (port_a, to_a) = checked(Box::new(Port { mac: PORT_A, wire: a.clone() }));
    let Ok(mux) = VlanMux::new(Box::new(port_a), Some(setup & 1 != 0)) else { return };
    let Ok(v100) = VlanMux::vlan(&mux, 100) else { return };
    let Ok(v100) = v100.offload(Some(setup & 2 != 0)) else { return };
    let (v100, to_v100) = checked(Box::new(v100));
    let Ok(v200) = VlanMux::vlan(&mux, 200) else { return };
    let (v200, to_v200) = checked(Box::new(v200));
    let (untagged, to_untagged) = checked(Box::new(VlanMux::untagged(&mux)));
    let (port_b, to_b) = checked(Box::new(Port { mac: PORT_B, wire: b.clone() }));
    let clock = Rc::new(Cell::new(std::time::Instant::now()));
    let (c1, c2) = (clock.clone(), clock.clone());
    let mode = if setup & 4 != 0 { Mode::BalanceXor } else { Mode::ActiveBackup };
    let bond = Bond::with_clock("bond0", mode, vec![Box::new(v100), Box::new(port_b)], Box::new(move || c1.get()));
    let (bond, to_bond) = checked(Box::new(bond));
    let bridge = Bridge::with_clock("br0", BRIDGE, vec![Box::new(bond), Box::new(v200)], Box::new(move || c2.get()));
    let mut hosts = [
        Stack::new(Box::new(checked(Box::new(bridge)).0), Config::new(BRIDGED_IP, 24)),
        Stack::new(Box::new(untagged), Config::new(UNTAGGED_IP, 24)),
    ];
    for h in hosts.iter_mut() {
        h.set_secret(0x5EED);
    }
    let mut sockets = Vec::new();
    for h in hosts.iter_mut() {
        sockets.push(h.udp_bind(7).ok());
    }
    let mut now = Instant::from_millis(1);
    let payload = [0x5a; 1400];
    for _ in 0..96 {
        if i.is_empty() {
            break;
        }
        let op = i.u8();
        match op % 6 {
            0 | 1 => {
                let p = frame(&mut i);
                let to = if op & 0x10 != 0 { &b } else { &a };
                to.borrow_mut().inbox.push_back(p);
            }
            2 => {
                // Room on the ports for what the hosts send.
                a.borrow_mut().room = usize::from(i.u8() % 8);
                b.borrow_mut().room = usize::from(i.u8() % 8);
            }
            3 => {
                // A host sends datagrams (to the peer, to broadcast) or pings: out through the devices.
                let h = usize::from(op >> 7);
                let n = usize::from(i.u8() % 16);
                let dst = if op & 0x10 != 0 { [10, 0, h as u8, 255] } else { [10, 0, h as u8, 1] };
                let len = usize::from(i.u16()) % payload.len();
                for k in 0..n {
                    if let Some(s) = sockets[h] {
                        let _ = hosts[h].udp_send_to(s, dst, 7 + k as u16, &payload[..len], now);
                    }
                    if op & 0x20 != 0 {
                        let _ = hosts[h].ping_send(dst, 1, k as u16, &payload[..len.min(64)], now);
                    }
                }
            }
            4 => {
                // A link changes; time passes for the bond's monitoring and the bridge's ageing.
                let w = if op & 0x10 != 0 { &b } else { &a };
                let up = op & 0x20 != 0;
                w.borrow_mut().link = up;
                clock.set(clock.get() + Duration::from_millis(u64::from(i.u8()) * 10));
            }
            _ => {
                // A sleeping loop's two halves, with the readiness the input chooses.
                for h in hosts.iter_mut() {
                    let mut fds = Vec::new();
                    if h.dev.wait_fds(&mut fds).is_ok() {
                        let ready: Vec<bool> = fds.iter().map(|_| i.bool()).collect();
                        let _ = h.dev.woke(&ready);
                    }
                }
            }
        }
        now = now + Duration::from_micros(u64::from(i.u16()) * 10);
        for h in hosts.iter_mut() {
            h.poll(now);
        }
        for (h, s) in hosts.iter_mut().zip(&sockets) {
            if let Some(s) = s {
                while h.udp_recv_from(*s).is_ok() {}
            }
            let _ = h.ping_events(1);
        }
    }
    // What the VLANs took went to their port; what the bond took went to a slave, or was dropped with no
    // slave up (counted in its report).
    assert_eq!(to_a.get(), to_v100.get() + to_v200.get() + to_untagged.get(), "VLANs' frames on port A");
    let report = hosts[0].dev.report().unwrap_or_default();
    let dropped: u64 = report
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("bond bond0 ("))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|w| w.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bond in the report: {report}"));
    assert_eq!(to_bond.get(), to_v100.get() + to_b.get() + dropped, "the bond's frames on its slaves: {report}");
    // Every frame the VLAN demultiplexer read from its port is in a VLAN's count, dropped or unknown.
    let (per, unknown) = mux.borrow().stats();
    let sorted: u64 = per.iter().map(|(_, s)| s.rx_frames + s.rx_dropped).sum::<u64>() + unknown;
    assert_eq!(sorted, a.borrow().delivered, "frames read from the port: {per:?}, {unknown} unknown");
}
