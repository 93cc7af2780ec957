//! The stack's views for people: drop reasons and events (`crate::monitor`), `ss`, `nstat`, `ip -s link`,
//! and packet capture on the interface.

use super::tcp::TcpSock;
use super::*;
use crate::monitor::{Capture, DropReason, Event};

/// One line of `ss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockLine {
    pub proto: &'static str,
    pub local: (std::net::IpAddr, u16),
    pub remote: Option<(std::net::IpAddr, u16)>,
    pub info: Option<crate::tcp::TcpInfo>,
    pub state: &'static str,
    pub recv_q: usize,
    pub send_q: usize,
}

fn ep((a, p): &(std::net::IpAddr, u16)) -> String {
    if a.is_ipv6() {
        format!("[{a}]:{p}")
    } else {
        format!("{a}:{p}")
    }
}

impl Stack {
    /// Counts a drop under its reason, with an event.
    pub(super) fn drop_reason(&mut self, reason: DropReason, n: u64) {
        self.mon.drop(reason, n, self.clock);
    }

    /// Emits events for a connection whose state or retransmission count moved since last seen.
    pub(super) fn tcp_observe(&mut self, h: SocketHandle, now: Instant) {
        let Some(Some(TcpSock::Conn(t, _))) = self.socks.tcp.get(h) else { return };
        let (state, rtx, local, remote) = (t.state, t.retransmits, t.local, t.remote);
        let (was, was_rtx) = self.socks.tcp_seen.get(&h).copied().unwrap_or((crate::tcp::State::Closed, 0));
        if state != was {
            self.mon.event(Event::TcpState { at: now, local, remote, from: was.ss_name(), to: state.ss_name() });
        }
        if rtx > was_rtx {
            self.mon.event(Event::Retransmit { at: now, local, remote, total: rtx });
        }
        self.socks.tcp_seen.insert(h, (state, rtx));
    }

    /// Starts (a path) or stops (`None`) capturing every frame received and sent to a pcap file.
    pub fn set_capture(&mut self, path: Option<&std::path::Path>) -> std::io::Result<u64> {
        let done = match self.capture.take() {
            Some(mut c) => {
                c.flush()?;
                c.packets
            }
            None => 0,
        };
        if let Some(p) = path {
            self.capture = Some(Capture::create(p)?);
        }
        Ok(done)
    }

    /// Frames captured so far, when capturing.
    pub fn capture_count(&self) -> Option<u64> {
        self.capture.as_ref().map(|c| c.packets)
    }

    /// The sockets, as `ss -tuna` lists them (TCP with `-i`'s details).
    pub fn sockets(&self) -> Vec<SockLine> {
        let mut v = Vec::new();
        let any = std::net::IpAddr::from([0u8; 16]);
        for s in self.socks.tcp.iter().flatten() {
            match s {
                TcpSock::Listener { port, accept, .. } => v.push(SockLine {
                    proto: "tcp",
                    local: (any, *port),
                    remote: None,
                    info: None,
                    state: "LISTEN",
                    recv_q: accept.len(),
                    send_q: 0,
                }),
                TcpSock::Conn(t, _) if t.state != crate::tcp::State::Closed => {
                    let i = t.info();
                    v.push(SockLine {
                        proto: "tcp",
                        local: t.local,
                        remote: Some(t.remote),
                        info: Some(i),
                        state: i.state.ss_name(),
                        recv_q: i.recv_q,
                        send_q: i.send_q,
                    });
                }
                TcpSock::Conn(..) => {}
            }
        }
        for u in self.socks.udp.iter().flatten() {
            v.push(SockLine {
                proto: "udp",
                local: (any, u.port),
                remote: u.remote,
                info: None,
                state: "UNCONN",
                recv_q: u.rx.iter().map(|(d, _, _)| d.len()).sum(),
                send_q: 0,
            });
        }
        v
    }

    /// `ss -tuni`.
    pub fn ss(&self) -> String {
        let mut s =
            format!("{:<6}{:<11}{:>8} {:>8} {:<45} {}\n", "Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port");
        for l in self.sockets() {
            let peer = l.remote.map(|r| ep(&r)).unwrap_or_else(|| "*:*".into());
            s += &format!("{:<6}{:<11}{:>8} {:>8} {:<45} {}\n", l.proto, l.state, l.recv_q, l.send_q, ep(&l.local), peer);
            if let Some(i) = l.info {
                let rtt =
                    i.srtt.map(|d| format!(" rtt:{:.3}/{:.3}", d.as_secs_f64() * 1e3, i.rttvar.as_secs_f64() * 1e3)).unwrap_or_default();
                let ws = i.wscale.map(|(a, b)| format!(" wscale:{a},{b}")).unwrap_or_default();
                let ssthresh = if i.ssthresh < usize::MAX / 2 { format!(" ssthresh:{}", i.ssthresh / i.mss.max(1)) } else { String::new() };
                s += &format!(
                    "\t{}{}{ws} rto:{}{rtt} mss:{} cwnd:{}{ssthresh} bytes_acked:{} bytes_received:{} retrans:{}\n",
                    if i.timestamps { "ts " } else { "" },
                    if i.sack { "sack" } else { "" },
                    i.rto.as_millis(),
                    i.mss,
                    i.cwnd / i.mss.max(1),
                    i.bytes_acked,
                    i.bytes_received,
                    i.retransmits
                );
            }
        }
        s
    }

    /// MIB counters under Linux's names, as `nstat -az` prints them.
    pub fn mib(&self) -> Vec<(&'static str, u64)> {
        let st = &self.stats;
        let (mut estab, mut retrans) = (0u64, 0u64);
        for s in self.socks.tcp.iter().flatten() {
            if let TcpSock::Conn(t, _) = s {
                retrans += t.retransmits;
                estab += u64::from(matches!(t.state, crate::tcp::State::Established | crate::tcp::State::CloseWait));
            }
        }
        vec![
            ("IpInReceives", st.in_receives),
            ("IpInHdrErrors", st.in_hdr_errors),
            ("IpInDelivers", st.in_delivers),
            ("IpOutRequests", st.out_requests),
            ("IpReasmOKs", st.reasm_oks),
            ("IpReasmFails", st.reasm_fails),
            ("IpFragCreates", st.frag_creates),
            ("IpExtInCsumErrors", st.in_csum_errors),
            ("IcmpInEchos", st.icmp_in_echos),
            ("IcmpOutEchoReps", st.icmp_out_echo_reps),
            ("TcpActiveOpens", st.tcp_active_opens),
            ("TcpPassiveOpens", st.tcp_passive_opens),
            ("TcpCurrEstab", estab),
            ("TcpInSegs", st.tcp_in_segs),
            ("TcpOutSegs", st.tcp_out_segs),
            ("TcpRetransSegs", retrans),
            ("UdpInDatagrams", st.udp_in_datagrams),
            ("UdpNoPorts", st.no_ports),
            ("UdpOutDatagrams", st.udp_out_datagrams),
            ("UdpRcvbufErrors", st.udp_rcvbuf_errors),
            ("Ip6InReceives", st.in6_receives),
            ("Ip6InHdrErrors", st.in6_hdr_errors),
            ("Ip6InDelivers", st.in6_delivers),
            ("Icmp6InEchos", st.icmp6_in_echos),
            ("Icmp6OutEchoReplies", st.icmp6_out_echo_replies),
            ("Icmp6OutErrors", st.icmp6_out_errors),
            ("TcpExtTCPBacklogDrop", self.mon.drop_count(DropReason::SocketBacklog)),
        ]
    }

    /// `nstat -az`.
    pub fn nstat(&self) -> String {
        self.mib().iter().map(|(k, v)| format!("{k:<24}{v:>12}\n")).collect()
    }

    /// `ip -s link show dev X`.
    pub fn link_show(&self) -> String {
        let st = &self.stats;
        let m = self.mac;
        let dropped_rx = st.down_drops + self.mon.drop_count(DropReason::TcIngress);
        format!(
            "{}: <{}> mtu {} qdisc {}\n    link/ether {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n    RX:  bytes packets errors dropped\n    {:>10} {:>7} {:>6} {:>7}\n    TX:  bytes packets errors dropped\n    {:>10} {:>7} {:>6} {:>7}\n",
            self.name(),
            if self.up { "UP" } else { "DOWN" },
            self.dev.mtu(),
            self.qdisc.show().split_whitespace().nth(1).unwrap_or("?"),
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            st.rx_bytes,
            st.rx_packets,
            st.in_hdr_errors + st.in_csum_errors,
            dropped_rx,
            st.tx_bytes,
            st.tx_packets,
            0,
            st.qdisc_drops
        )
    }

    /// Drop counters by reason, as `dropwatch` would sum them.
    pub fn drops_show(&self) -> String {
        let d = self.mon.drops();
        if d.is_empty() {
            return "no drops\n".into();
        }
        d.iter().map(|(r, n)| format!("{:<22}{n:>10}\n", r.name())).collect()
    }
}
