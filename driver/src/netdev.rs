//! The interface the driver offers a network stack: batches out, a budgeted poll in, features, link, MTU,
//! MAC and statistics. Offload requests and results travel as per-packet metadata.

use crate::DriverError;

/// Checksum offload request for a transmitted packet: where its headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxCsum {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    pub ipv4: bool,
    pub tcp: bool,
}

/// A packet to send, lent by the caller (`NetDev::transmit_lent`): the driver copies its bytes into its
/// own transmit buffers and makes the offload edits (pseudo-header sum, TSO length fields) there, so the
/// caller's buffer is neither changed nor given up. Offloads as for [`TxPacket`].
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    pub data: &'a [u8],
    pub csum: Option<TxCsum>,
    pub tso: Option<u16>,
    pub vlan: Option<u16>,
}

impl<'a> TxFrame<'a> {
    /// A frame without offloads.
    pub fn plain(data: &'a [u8]) -> TxFrame<'a> {
        TxFrame { data, csum: None, tso: None, vlan: None }
    }
}

/// A packet to send. With `csum`, the driver has the card fill the IPv4 header and TCP/UDP checksums; with
/// `tso` as well, the card cuts the TCP payload into segments of `tso` bytes.
#[derive(Debug, Clone, Default)]
pub struct TxPacket {
    pub data: Vec<u8>,
    pub csum: Option<TxCsum>,
    pub tso: Option<u16>,
    pub vlan: Option<u16>,
}

impl TxPacket {
    pub fn plain(data: Vec<u8>) -> TxPacket {
        TxPacket { data, ..Default::default() }
    }

    /// The packet lent as a [`TxFrame`].
    pub fn frame(&self) -> TxFrame<'_> {
        TxFrame { data: &self.data, csum: self.csum, tso: self.tso, vlan: self.vlan }
    }
}

/// What the card said about a received packet's checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxCsum {
    /// Not checked (not IP, fragment, zero UDP checksum, offload off).
    None,
    /// L4 (and IPv4 header) checksums verified good.
    Verified,
    /// The card found a bad checksum; the frame is delivered anyway.
    Bad,
}

#[derive(Debug, Clone)]
pub struct RxPacket {
    pub data: Vec<u8>,
    pub csum: RxCsum,
    /// The stripped 802.1Q tag, when the card removed one.
    pub vlan: Option<u16>,
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub tso: bool,
    pub tx_csum: bool,
    pub rx_csum: bool,
    pub vlan: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Software counters kept by the driver.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_busy: u64,
    /// Packets held back by the byte queue limit (left in the caller's queue).
    pub tx_bql_stops: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_csum_good: u64,
    pub rx_csum_bad: u64,
    /// Descriptors the card wrote with impossible lengths or error bits: dropped.
    pub rx_errors: u64,
    pub interrupts: u64,
    /// Waits that latency mode's busy poll ended with a frame, before any interrupt.
    pub busy_poll_hits: u64,
    pub polls: u64,
    /// Transmit doorbells (TDT writes), and sends whose doorbell waited for a busy card to finish.
    pub tx_doorbells: u64,
    pub tx_doorbells_deferred: u64,
}

pub trait NetDev {
    fn mac(&self) -> [u8; 6];
    fn mtu(&self) -> usize;
    fn features(&self) -> Features;
    /// Reads the link state from the card (a register read: not for the fast path).
    fn link(&mut self) -> Result<LinkState, DriverError>;
    /// Queues as many packets from the front of `pkts` as fit, removes them, and rings the doorbell once.
    /// A busy-polling driver, while the card is still busy with earlier sends, leaves them for the doorbell
    /// of its next `transmit` or `poll` instead (none waits for a card that is idle).
    /// Returns how many were queued. A packet the card cannot carry (its length, or offload offsets outside
    /// it) ends the batch before it; when it is the first, nothing is queued and the error
    /// (`DriverError::BadPacket`) says so: the caller drops it, as a kernel driver drops a malformed skb.
    fn transmit(&mut self, pkts: &mut Vec<TxPacket>) -> Result<usize, DriverError>;
    /// As `transmit`, for `n` packets the caller lends (`frame(i)` is the i-th, asked for at most once, in
    /// order): a stack whose packets live in buffers of its own hands them over
    /// without copying each into a vector first, and keeps them when the ring is full. Returns how many
    /// were queued; the caller removes those.
    fn transmit_lent<'a>(&mut self, n: usize, frame: &mut dyn FnMut(usize) -> TxFrame<'a>) -> Result<usize, DriverError>;
    /// Where the vectors received frames are copied into come from when the driver has none of its own to
    /// reuse (it keeps those of packets given to `transmit`): `source(cap)` returns an empty vector with
    /// room for `cap` bytes. A stack that keeps a pool of packet buffers hands it its pool, so that frames
    /// received while nothing is sent are not each a fresh allocation. Drivers without the hook ignore it.
    fn set_rx_source(&mut self, source: fn(usize) -> Vec<u8>) {
        let _ = source;
    }
    /// Reclaims finished transmits and collects up to `budget` received packets into `out`.
    fn poll(&mut self, budget: usize, out: &mut Vec<RxPacket>) -> Result<usize, DriverError>;
    /// For a caller that sleeps on several devices at once (one poll(2) over all of them) instead of in
    /// `wait`: gets the card ready to be slept on (interrupts enabled again, as `wait` does first) and
    /// appends the descriptors that become readable when it has work; `false` when it has none to offer
    /// (busy polling), and the caller polls it again without a long sleep. After the sleep, `woke` says
    /// which of them were readable.
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> Result<bool, DriverError> {
        let _ = out;
        Ok(false)
    }
    /// After a sleep on what `wait_fds` appended: which of those descriptors were readable, in its order
    /// (none after a timeout, or when another device woke the caller).
    fn woke(&mut self, ready: &[bool]) -> Result<(), DriverError> {
        let _ = ready;
        Ok(())
    }
    /// Waits for an interrupt (interrupts are re-enabled first); `Ok(false)` on timeout.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool, DriverError>;
    fn stats(&self) -> Stats;
    /// Lets frames to a multicast Ethernet address through the card's filter.
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), DriverError>;
    /// Enters VLAN `vid` into the card's VLAN filter table and turns the filter on: tagged frames of other
    /// VLANs are dropped by the card.
    fn add_vlan(&mut self, vid: u16) -> Result<(), DriverError>;
    /// Attaches an XDP program that runs on every received frame in the driver's buffer (`None` detaches).
    fn set_xdp(&mut self, prog: Option<Box<dyn crate::xdp::XdpProgram + Send>>);
    fn xdp_stats(&self) -> crate::xdp::XdpStats;
    /// Frames XDP programs redirected, with their targets, since the last call.
    fn take_redirected(&mut self) -> Vec<(u32, Vec<u8>, crate::xdp::XdpMeta)>;
}
