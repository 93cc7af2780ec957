//! The rule set: tables of chains of ordered rules, as `nft` has them, and how a packet walks them.
//! Base chains hang on a hook with a priority and a policy; rules match on interfaces, addresses, protocol,
//! ports, ICMP type, TCP flags, conntrack state and mark, and end in a verdict (accept, drop, reject, jump,
//! goto, return) or a NAT target. Every rule counts the packets and bytes it matched.

use super::conntrack::CtState;
use super::packet::{View, ICMP, ICMPV6, TCP, UDP};
use std::net::IpAddr;

/// The five netfilter hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// A table's family: which packets its chains see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
    pub fn sees(self, v6: bool) -> bool {
        match self {
            Family::Ip => !v6,
            Family::Ip6 => v6,
            Family::Inet => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    /// `true` for `policy drop`.
    pub drop: bool,
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(x)) => {
                let m = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len.min(32))) };
                u32::from(p) & m == u32::from(x) & m
            }
            (IpAddr::V6(p), IpAddr::V6(x)) => {
                let m = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len.min(128))) };
                u128::from(p) & m == u128::from(x) & m
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Iif(Vec<String>),
    Oif(Vec<String>),
    /// `ip`/`ip6` `saddr`/`daddr`: the family is the prefix's; `dst` selects the destination.
    Addr {
        dst: bool,
        set: Vec<Prefix>,
    },
    /// `meta nfproto ipv4|ipv6`.
    NfProto {
        v6: bool,
    },
    L4Proto(Vec<u8>),
    /// `tcp`/`udp` `sport`/`dport` ranges (the protocol is matched too; 0 for `th`, either).
    Port {
        proto: u8,
        dst: bool,
        ranges: Vec<(u16, u16)>,
    },
    IcmpType {
        proto: u8,
        types: Vec<u8>,
    },
    /// `tcp flags`: the flags under `mask` equal `value`; with `any`, any of `mask` set.
    TcpFlags {
        mask: u8,
        value: u8,
        any: bool,
    },
    CtState(u8),
    Mark(u32),
    /// `ct mark`: the connection's mark.
    CtMark(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectWith {
    TcpReset,
    /// ICMP destination unreachable with this code (IPv4).
    Icmp(u8),
    /// ICMPv6 destination unreachable with this code.
    Icmp6(u8),
    /// `icmpx`: the code that means the same in either family (0 no route, 1 port, 2 host, 3 admin).
    Icmpx(u8),
    /// No `with`: port unreachable (ICMP or ICMPv6 by family).
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nat {
    Snat { addr: IpAddr, ports: Option<(u16, u16)> },
    Dnat { addr: IpAddr, port: Option<u16> },
    Masquerade { ports: Option<(u16, u16)> },
    Redirect { port: Option<u16> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Counter,
    Log {
        prefix: String,
    },
    SetMark(u32),
    /// `meta mark set ct mark`: the packet takes its connection's mark.
    MarkFromCt,
    /// `ct mark set N`, or with `None` `ct mark set meta mark`: the connection keeps a mark.
    SetCtMark(Option<u32>),
    Accept,
    Drop,
    Reject(RejectWith),
    Jump(usize),
    Goto(usize),
    Return,
    Nat(Nat),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<(Match, bool)>,
    pub actions: Vec<Action>,
    /// The rule as written, for listings.
    pub text: String,
    pub line: usize,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub table: String,
    pub family: Family,
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// The whole rule set; the chains that jumps name are indices into `chains`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
}

/// What a packet carries through a chain.
pub struct Pkt<'a> {
    pub v: &'a View,
    pub iif: Option<&'a str>,
    pub oif: Option<&'a str>,
    pub ct: CtState,
    pub mark: u32,
    /// The connection's mark (0 untracked).
    pub ct_mark: u32,
}

/// A chain walk's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject(RejectWith),
    /// A NAT target (nat chains only): the packet is accepted with this binding.
    Nat(Nat),
}

/// Side effects a walk asks for.
#[derive(Debug, Default)]
pub struct Effects {
    /// Log lines (prefix and the matched rule's location) for the caller to rate-limit and print.
    pub logs: Vec<String>,
}

fn matches(m: &Match, p: &Pkt) -> bool {
    let v = p.v;
    match m {
        Match::Iif(names) => p.iif.is_some_and(|i| names.iter().any(|n| n == i)),
        Match::Oif(names) => p.oif.is_some_and(|i| names.iter().any(|n| n == i)),
        Match::Addr { dst, set } => {
            let a = if *dst { v.dst } else { v.src };
            set.iter().any(|pre| pre.contains(a))
        }
        Match::NfProto { v6 } => v.v6 == *v6,
        Match::L4Proto(ps) => ps.contains(&v.proto),
        Match::Port { proto, dst, ranges } => {
            let proto_ok = if *proto == 0 { v.proto == TCP || v.proto == UDP } else { v.proto == *proto };
            let port = if *dst { v.dport } else { v.sport };
            proto_ok && !v.later_fragment && ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
        }
        Match::IcmpType { proto, types } => v.proto == *proto && v.icmp.is_some_and(|(t, _)| types.contains(&t)),
        Match::TcpFlags { mask, value, any } => v.tcp.is_some_and(|t| if *any { t.flags & mask != 0 } else { t.flags & mask == *value }),
        Match::CtState(bits) => p.ct.bit() & bits != 0,
        Match::Mark(m) => p.mark == *m,
        Match::CtMark(m) => p.ct_mark == *m,
    }
}

/// Jumps nest at most this deep (Linux allows 16 levels).
pub const MAX_DEPTH: usize = 16;

impl Ruleset {
    /// The base chains on `hook` that see this family, in priority order (ties in load order).
    pub fn base_chains(&self, hook: Hook, v6: bool) -> Vec<usize> {
        let mut v: Vec<(i32, usize)> = self
            .chains
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.base.filter(|b| b.hook == hook && c.family.sees(v6)).map(|b| (b.priority, i)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// Whether any rule needs connection tracking (a `ct state` or `ct mark` rule, or a NAT chain). Without one,
    /// packets are not tracked at all, as Linux does not load conntrack for such a rule set.
    pub fn needs_conntrack(&self) -> bool {
        self.chains.iter().any(|c| {
            c.base.is_some_and(|b| b.kind == ChainType::Nat)
                || c.rules.iter().any(|r| {
                    r.matches.iter().any(|(m, _)| matches!(m, Match::CtState(_) | Match::CtMark(_)))
                        || r.actions.iter().any(|a| matches!(a, Action::MarkFromCt | Action::SetCtMark(_)))
                })
        })
    }

    /// Walks base chain `start` for packet `p`, counting matched rules.
    pub fn walk(&mut self, start: usize, p: &mut Pkt, fx: &mut Effects) -> Verdict {
        let policy_drop = self.chains.get(start).and_then(|c| c.base).is_some_and(|b| b.drop);
        // (chain, next rule) to return to.
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let (mut chain, mut at) = (start, 0usize);
        while let Some(c) = self.chains.get_mut(chain) {
            let Some(rule) = c.rules.get_mut(at) else {
                // The chain's end: back to the caller, or the base chain's policy.
                match stack.pop() {
                    Some((ch, r)) => {
                        (chain, at) = (ch, r);
                        continue;
                    }
                    None => break,
                }
            };
            at += 1;
            if !rule.matches.iter().all(|(m, neg)| matches(m, p) != *neg) {
                continue;
            }
            rule.packets += 1;
            rule.bytes += p.v.len as u64;
            let line = rule.line;
            let actions = rule.actions.clone();
            for a in actions {
                match a {
                    Action::Counter => {}
                    Action::Log { prefix } => fx.logs.push(format!("{prefix}(rule at line {line})")),
                    Action::SetMark(m) => p.mark = m,
                    Action::MarkFromCt => p.mark = p.ct_mark,
                    Action::SetCtMark(m) => p.ct_mark = m.unwrap_or(p.mark),
                    Action::Accept => return Verdict::Accept,
                    Action::Drop => return Verdict::Drop,
                    Action::Reject(w) => return Verdict::Reject(w),
                    Action::Nat(n) => return Verdict::Nat(n),
                    Action::Return => {
                        match stack.pop() {
                            Some((ch, r)) => (chain, at) = (ch, r),
                            None => return if policy_drop { Verdict::Drop } else { Verdict::Accept },
                        }
                        break;
                    }
                    Action::Jump(to) | Action::Goto(to) => {
                        if stack.len() >= MAX_DEPTH {
                            return Verdict::Drop;
                        }
                        if matches!(a, Action::Jump(_)) {
                            stack.push((chain, at));
                        }
                        (chain, at) = (to, 0);
                        break;
                    }
                }
            }
        }
        if policy_drop {
            Verdict::Drop
        } else {
            Verdict::Accept
        }
    }

    /// `nft list ruleset`, with each rule's counters.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let mut tables: Vec<(Family, &str)> = Vec::new();
        for c in &self.chains {
            if !tables.contains(&(c.family, c.table.as_str())) {
                tables.push((c.family, c.table.as_str()));
            }
        }
        for (fam, t) in tables {
            out += &format!("table {} {t} {{\n", fam.name());
            for c in self.chains.iter().filter(|c| c.family == fam && c.table == t) {
                out += &format!("\tchain {} {{\n", c.name);
                if let Some(b) = c.base {
                    let kind = if b.kind == ChainType::Nat { "nat" } else { "filter" };
                    let policy = if b.drop { "drop" } else { "accept" };
                    out += &format!("\t\ttype {kind} hook {} priority {}; policy {policy};\n", b.hook.name(), b.priority);
                }
                for r in &c.rules {
                    out += &format!("\t\t{} # packets {} bytes {}\n", r.text, r.packets, r.bytes);
                }
                out += "\t}\n";
            }
            out += "}\n";
        }
        out
    }
}

/// The ICMP type names `nft` knows, for `icmp type` and `icmpv6 type`.
pub fn icmp_type(proto: u8, name: &str) -> Option<u8> {
    let v4 = [
        ("echo-reply", 0),
        ("destination-unreachable", 3),
        ("source-quench", 4),
        ("redirect", 5),
        ("echo-request", 8),
        ("router-advertisement", 9),
        ("router-solicitation", 10),
        ("time-exceeded", 11),
        ("parameter-problem", 12),
        ("timestamp-request", 13),
        ("timestamp-reply", 14),
    ];
    let v6 = [
        ("destination-unreachable", 1),
        ("packet-too-big", 2),
        ("time-exceeded", 3),
        ("parameter-problem", 4),
        ("echo-request", 128),
        ("echo-reply", 129),
        ("mld-listener-query", 130),
        ("mld-listener-report", 131),
        ("nd-router-solicit", 133),
        ("nd-router-advert", 134),
        ("nd-neighbor-solicit", 135),
        ("nd-neighbor-advert", 136),
        ("nd-redirect", 137),
    ];
    let table: &[(&str, u8)] = if proto == ICMP {
        &v4
    } else if proto == ICMPV6 {
        &v6
    } else {
        &[]
    };
    table.iter().find(|(n, _)| *n == name).map(|&(_, t)| t).or_else(|| name.parse().ok())
}
