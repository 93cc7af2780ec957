//! What the stack lets people see, in the shape of Linux's tools: drop reasons (every place that drops a
//! packet names one of Linux's `skb_drop_reason` values; counters per reason, as `dropwatch` and the
//! `kfree_skb` tracepoint show), an event stream (drops, TCP state changes, retransmissions, as `perf`
//! reads tracepoints), and packet capture to a pcap file that tcpdump and Wireshark read.

use crate::time::Instant;
use std::collections::VecDeque;
use std::io::Write;
use std::net::IpAddr;

/// Linux's `enum skb_drop_reason` values that this stack's drop sites use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    NotSpecified,
    NoSocket,
    PktTooSmall,
    TcpCsum,
    UdpCsum,
    IcmpCsum,
    IpCsum,
    IpInhdr,
    Otherhost,
    IpInaddrerrors,
    IpLocalnet,
    NetfilterDrop,
    QdiscDrop,
    DevReady,
    NeighQueuefull,
    FragReasmTimeout,
    DupFrag,
    SocketBacklog,
    SocketRcvbuff,
    TcIngress,
    TcpRfc7323Paws,
    TcpInvalidSequence,
    TcpReset,
    TcpInvalidSyn,
    TcpFlags,
}

impl DropReason {
    pub const ALL: [DropReason; 25] = [
        DropReason::NotSpecified,
        DropReason::NoSocket,
        DropReason::PktTooSmall,
        DropReason::TcpCsum,
        DropReason::UdpCsum,
        DropReason::IcmpCsum,
        DropReason::IpCsum,
        DropReason::IpInhdr,
        DropReason::Otherhost,
        DropReason::IpInaddrerrors,
        DropReason::IpLocalnet,
        DropReason::NetfilterDrop,
        DropReason::QdiscDrop,
        DropReason::DevReady,
        DropReason::NeighQueuefull,
        DropReason::FragReasmTimeout,
        DropReason::DupFrag,
        DropReason::SocketBacklog,
        DropReason::SocketRcvbuff,
        DropReason::TcIngress,
        DropReason::TcpRfc7323Paws,
        DropReason::TcpInvalidSequence,
        DropReason::TcpReset,
        DropReason::TcpInvalidSyn,
        DropReason::TcpFlags,
    ];

    /// The name as Linux's tracepoint prints it.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotSpecified => "NOT_SPECIFIED",
            DropReason::NoSocket => "NO_SOCKET",
            DropReason::PktTooSmall => "PKT_TOO_SMALL",
            DropReason::TcpCsum => "TCP_CSUM",
            DropReason::UdpCsum => "UDP_CSUM",
            DropReason::IcmpCsum => "ICMP_CSUM",
            DropReason::IpCsum => "IP_CSUM",
            DropReason::IpInhdr => "IP_INHDR",
            DropReason::Otherhost => "OTHERHOST",
            DropReason::IpInaddrerrors => "IP_INADDRERRORS",
            DropReason::IpLocalnet => "IP_LOCALNET",
            DropReason::NetfilterDrop => "NETFILTER_DROP",
            DropReason::QdiscDrop => "QDISC_DROP",
            DropReason::DevReady => "DEV_READY",
            DropReason::NeighQueuefull => "NEIGH_QUEUEFULL",
            DropReason::FragReasmTimeout => "FRAG_REASM_TIMEOUT",
            DropReason::DupFrag => "DUP_FRAG",
            DropReason::SocketBacklog => "SOCKET_BACKLOG",
            DropReason::SocketRcvbuff => "SOCKET_RCVBUFF",
            DropReason::TcIngress => "TC_INGRESS",
            DropReason::TcpRfc7323Paws => "TCP_RFC7323_PAWS",
            DropReason::TcpInvalidSequence => "TCP_INVALID_SEQUENCE",
            DropReason::TcpReset => "TCP_RESET",
            DropReason::TcpInvalidSyn => "TCP_INVALID_SYN",
            DropReason::TcpFlags => "TCP_FLAGS",
        }
    }
}

/// Something that happened, with when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Drop { at: Instant, reason: DropReason, count: u64 },
    TcpState { at: Instant, local: (IpAddr, u16), remote: (IpAddr, u16), from: &'static str, to: &'static str },
    Retransmit { at: Instant, local: (IpAddr, u16), remote: (IpAddr, u16), total: u64 },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |at: &Instant| format!("{}.{:06}", at.micros / 1_000_000, at.micros % 1_000_000);
        let ep = |(a, p): &(IpAddr, u16)| if a.is_ipv6() { format!("[{a}]:{p}") } else { format!("{a}:{p}") };
        match self {
            Event::Drop { at, reason, count } => write!(f, "{} kfree_skb reason={} count={count}", t(at), reason.name()),
            Event::TcpState { at, local, remote, from, to } => {
                write!(f, "{} tcp:tcp_set_state {} > {} {from} -> {to}", t(at), ep(local), ep(remote))
            }
            Event::Retransmit { at, local, remote, total } => {
                write!(f, "{} tcp:tcp_retransmit_skb {} > {} retransmits={total}", t(at), ep(local), ep(remote))
            }
        }
    }
}

/// Events kept for readers; older ones go first when full (counted).
pub const EVENTS_KEPT: usize = 4096;

#[derive(Debug, Default)]
pub struct Monitor {
    drops: [u64; DropReason::ALL.len()],
    events: VecDeque<(u64, Event)>,
    next_seq: u64,
    pub events_lost: u64,
}

impl Monitor {
    pub fn drop(&mut self, reason: DropReason, count: u64, at: Instant) {
        if count == 0 {
            return;
        }
        if let Some(c) = DropReason::ALL.iter().position(|r| *r == reason).and_then(|i| self.drops.get_mut(i)) {
            *c += count;
        }
        self.event(Event::Drop { at, reason, count });
    }

    pub fn event(&mut self, e: Event) {
        if self.events.len() >= EVENTS_KEPT {
            self.events.pop_front();
            self.events_lost += 1;
        }
        self.events.push_back((self.next_seq, e));
        self.next_seq += 1;
    }

    /// Per-reason counters, those that are not zero.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().zip(self.drops.iter()).filter(|(_, n)| **n > 0).map(|(r, n)| (*r, *n)).collect()
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        DropReason::ALL.iter().position(|r| *r == reason).and_then(|i| self.drops.get(i)).copied().unwrap_or(0)
    }

    /// Events from sequence number `from` on, with the next number to ask for.
    pub fn events_since(&self, from: u64) -> (Vec<&Event>, u64) {
        (self.events.iter().filter(|(s, _)| *s >= from).map(|(_, e)| e).collect(), self.next_seq)
    }
}

pub const LINKTYPE_ETHERNET: u32 = 1;
/// IP packets with no link-layer header (what netfilter hooks see).
pub const LINKTYPE_RAW: u32 = 101;

/// A pcap file being written, as tcpdump -w writes one.
pub struct Capture {
    out: std::io::BufWriter<std::fs::File>,
    pub packets: u64,
}

impl Capture {
    /// A capture of Ethernet frames.
    pub fn create(path: &std::path::Path) -> std::io::Result<Capture> {
        Capture::create_with(path, LINKTYPE_ETHERNET)
    }

    /// A capture with this link type (`LINKTYPE_RAW` for IP packets without a link header).
    pub fn create_with(path: &std::path::Path, linktype: u32) -> std::io::Result<Capture> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        // Magic, version 2.4, timezone 0, accuracy 0, snaplen 262144, LINKTYPE_ETHERNET.
        out.write_all(&0xA1B2_C3D4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&[0; 8])?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&linktype.to_le_bytes())?;
        Ok(Capture { out, packets: 0 })
    }

    /// One frame, stamped with the wall clock.
    pub fn write(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let len = frame.len().min(262_144) as u32;
        self.out.write_all(&(t.as_secs() as u32).to_le_bytes())?;
        self.out.write_all(&t.subsec_micros().to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(frame.get(..len as usize).unwrap_or(frame))?;
        self.packets += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn drops_count_by_reason_and_events_keep_their_order() {
        let mut m = Monitor::default();
        m.drop(DropReason::NoSocket, 2, Instant::from_millis(1));
        m.drop(DropReason::IpCsum, 1, Instant::from_millis(2));
        m.drop(DropReason::NoSocket, 1, Instant::from_millis(3));
        assert_eq!(m.drops(), vec![(DropReason::NoSocket, 3), (DropReason::IpCsum, 1)]);
        let (ev, next) = m.events_since(1);
        assert_eq!(ev.len(), 2);
        assert_eq!(next, 3);
        assert_eq!(ev[0].to_string(), "0.002000 kfree_skb reason=IP_CSUM count=1");
        for k in 0..EVENTS_KEPT as u64 {
            m.drop(DropReason::QdiscDrop, 1, Instant::from_millis(k));
        }
        assert_eq!(m.events_lost, 3);
    }

    #[test]
    fn a_capture_is_a_pcap_file() {
        let p = std::env::temp_dir().join(format!("cap-{}.pcap", std::process::id()));
        let mut c = Capture::create(&p).unwrap();
        c.write(&[0xAB; 60]).unwrap();
        c.flush().unwrap();
        let b = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(&b[..4], &[0xD4, 0xC3, 0xB2, 0xA1]);
        assert_eq!(u32::from_le_bytes([b[20], b[21], b[22], b[23]]), 1, "Ethernet");
        assert_eq!(b.len(), 24 + 16 + 60);
    }
}
