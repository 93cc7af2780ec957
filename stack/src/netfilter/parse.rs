//! The rule file: a subset of `nft`'s syntax that a Linux user reads without a manual.
//!
//! ```text
//! flush ruleset                                  # optional; a load always replaces the whole set
//! table inet filter {
//!     chain forward {
//!         type filter hook forward priority 0; policy drop;
//!         ct state established,related accept
//!         ct state invalid counter drop
//!         iifname "lan" oifname "wan" accept
//!         tcp dport { 22, 8000-8080 } reject with tcp reset
//!         ip saddr 10.0.0.0/8 udp dport 53 log prefix "dns " accept
//!         icmpv6 type { echo-request, echo-reply } accept
//!         meta mark 0x1 jump marked
//!     }
//!     chain marked { counter return }
//! }
//! table ip nat {
//!     chain prerouting { type nat hook prerouting priority dstnat; iifname "wan" tcp dport 8080 dnat to 10.1.0.2:80 }
//!     chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" masquerade }
//! }
//! ```
//!
//! Matches: `iifname`, `oifname` (a name or a `{ set }`), `ip saddr|daddr`, `ip6 saddr|daddr` (address or
//! prefix, or a set), `meta l4proto`, `meta nfproto ipv4|ipv6`, `meta mark`, `tcp|udp|th sport|dport` (port,
//! range or set), `icmp type`, `icmpv6 type`, `tcp flags F[,F]` (any set), `tcp flags == F|F` (exactly),
//! `tcp flags F / M,M` (those of M that are set are F), `ct state`, `ct mark`; `!=` negates a match.
//! Statements: `counter`, `log [prefix "..."]`, `meta mark set N|ct mark`, `ct mark set N|meta mark`, `accept`, `drop`, `reject [with tcp reset | with
//! icmp type T | with icmpv6 type T | with icmpx type T]`, `jump C`, `goto C`, `return`, and in nat chains
//! `snat to A[:P[-Q]]`, `dnat to A[:P]` (`[v6]:P` for IPv6), `masquerade [to :P-Q]`, `redirect [to :P]`.
//! Rules end at a newline or `;`. A bad file is refused whole, with its line and column.

use super::packet::{ICMP, ICMPV6, TCP, UDP};
use super::rules::*;
use std::net::IpAddr;

/// A parse error, at a line and column (both from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
    Newline,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    for (ln, line) in src.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let (line, col) = (ln + 1, i + 1);
            if c == '#' {
                break;
            }
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if matches!(c, '{' | '}' | ';' | ',') {
                out.push(Token { tok: Tok::Punct(c), line, col });
                i += 1;
                continue;
            }
            if c == '"' {
                let start = i + 1;
                let Some(len) = chars[start..].iter().position(|&x| x == '"') else {
                    return Err(ParseError { line, col, msg: "unterminated string".into() });
                };
                out.push(Token { tok: Tok::Str(chars[start..start + len].iter().collect()), line, col });
                i = start + len + 1;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '{' | '}' | ';' | ',' | '"' | '#') {
                i += 1;
            }
            out.push(Token { tok: Tok::Word(chars[start..i].iter().collect()), line, col });
        }
        out.push(Token { tok: Tok::Newline, line: ln + 1, col: chars.len() + 1 });
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
}

/// A jump target named before all chains are known.
struct Pending {
    chain: usize,
    rule: usize,
    action: usize,
    name: String,
    line: usize,
    col: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn here(&self) -> (usize, usize) {
        self.peek().or(self.toks.last()).map(|t| (t.line, t.col)).unwrap_or((1, 1))
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        let (line, col) = self.here();
        Err(ParseError { line, col, msg: msg.into() })
    }

    /// An error at the word just read.
    fn err_back<T>(&mut self, msg: impl Into<String>) -> Result<T, ParseError> {
        self.at -= 1;
        self.err(msg)
    }

    fn skip_newlines(&mut self) {
        while matches!(self.peek().map(|t| &t.tok), Some(Tok::Newline) | Some(Tok::Punct(';'))) {
            self.at += 1;
        }
    }

    fn skip_nl_only(&mut self) {
        while matches!(self.peek().map(|t| &t.tok), Some(Tok::Newline)) {
            self.at += 1;
        }
    }

    fn word(&mut self) -> Result<String, ParseError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Word(w)) => {
                self.at += 1;
                Ok(w)
            }
            Some(Tok::Str(s)) => {
                self.at += 1;
                Ok(s)
            }
            _ => self.err("expected a word"),
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), ParseError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Word(x)) if x == w => {
                self.at += 1;
                Ok(())
            }
            _ => self.err(format!("expected `{w}`")),
        }
    }

    fn punct(&mut self, c: char) -> Result<(), ParseError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Punct(x)) if *x == c => {
                self.at += 1;
                Ok(())
            }
            _ => self.err(format!("expected `{c}`")),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek().map(|t| &t.tok), Some(Tok::Punct(x)) if *x == c)
    }

    /// A `!=` before a match's value.
    /// A mark (decimal or 0x hex); an error points at it.
    fn mark_value(&mut self) -> Result<u32, ParseError> {
        let v = self.word()?;
        parse_u32(&v).or_else(|e| self.err_back(e))
    }

    fn negated(&mut self) -> bool {
        let n = self.is_word("!=");
        if n {
            self.at += 1;
        }
        n
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek().map(|t| &t.tok), Some(Tok::Word(x)) if x == w)
    }

    /// One value, `a,b,c`, or `{ a, b, c }` (newlines allowed inside braces); each item converted by `f`.
    fn list<T>(&mut self, mut f: impl FnMut(&Parser, &str) -> Result<T, String>) -> Result<Vec<T>, ParseError> {
        let braced = self.is_punct('{');
        if braced {
            self.at += 1;
            self.skip_nl_only();
        }
        let mut out = Vec::new();
        loop {
            let w = self.word()?;
            match f(self, &w) {
                Ok(v) => out.push(v),
                Err(e) => {
                    return self.err_back(e);
                }
            }
            if braced {
                self.skip_nl_only();
            }
            if self.is_punct(',') {
                self.at += 1;
                if braced {
                    self.skip_nl_only();
                }
                continue;
            }
            break;
        }
        if braced {
            self.punct('}')?;
        }
        Ok(out)
    }
}

fn parse_prefix(s: &str, v6: bool) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| format!("`{a}` is not an address"))?;
    if addr.is_ipv6() != v6 {
        return Err(format!("`{a}` is not an {} address", if v6 { "IPv6" } else { "IPv4" }));
    }
    let max = if v6 { 128 } else { 32 };
    let len = match l {
        Some(l) => l.parse::<u8>().ok().filter(|&n| n <= max).ok_or(format!("bad prefix length `{l}`"))?,
        None => max,
    };
    Ok(Prefix { addr, len })
}

fn parse_port(s: &str) -> Result<u16, String> {
    let named = match s {
        "ssh" => Some(22),
        "domain" => Some(53),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    named.map(Ok).unwrap_or_else(|| s.parse::<u16>().map_err(|_| format!("`{s}` is not a port")))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port(a)?, parse_port(b)?);
            if a > b {
                return Err(format!("empty range `{s}`"));
            }
            Ok((a, b))
        }
        None => parse_port(s).map(|p| (p, p)),
    }
}

fn tcp_flag(s: &str) -> Result<u8, String> {
    use super::packet::*;
    let mut v = 0;
    for f in s.split('|') {
        v |= match f {
            "fin" => TCP_FIN,
            "syn" => TCP_SYN,
            "rst" => TCP_RST,
            "psh" => TCP_PSH,
            "ack" => TCP_ACK,
            "urg" => TCP_URG,
            "ecn" => TCP_ECE,
            "cwr" => TCP_CWR,
            _ => return Err(format!("unknown TCP flag `{f}`")),
        };
    }
    Ok(v)
}

fn proto_num(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(TCP),
        "udp" => Ok(UDP),
        "icmp" => Ok(ICMP),
        "icmpv6" | "ipv6-icmp" => Ok(ICMPV6),
        _ => s.parse().map_err(|_| format!("unknown protocol `{s}`")),
    }
}

/// `A`, `A:P`, `A:P-Q`, `[V6]:P`, `:P`: address and port range.
/// A NAT target's address and port range, either may be absent.
type NatTo = (Option<IpAddr>, Option<(u16, u16)>);

fn nat_to(s: &str) -> Result<NatTo, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']').ok_or(format!("unclosed `[` in `{s}`"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("`{a}` is not an address"))?;
        let ports = match p.strip_prefix(':') {
            Some(p) => Some(parse_range(p)?),
            None if p.is_empty() => None,
            None => return Err(format!("bad `{s}`")),
        };
        return Ok((Some(addr), ports));
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((Some(a), None));
    }
    if let Some(p) = s.strip_prefix(':') {
        return Ok((None, Some(parse_range(p)?)));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => {
            let addr: IpAddr = a.parse().map_err(|_| format!("`{a}` is not an address"))?;
            if addr.is_ipv6() {
                return Err(format!("write an IPv6 address with a port as `[{a}]:{p}`"));
            }
            Ok((Some(addr), Some(parse_range(p)?)))
        }
        None => Err(format!("`{s}` is not an address")),
    }
}

fn hook(s: &str) -> Result<Hook, String> {
    Ok(match s {
        "prerouting" => Hook::Prerouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::Postrouting,
        _ => return Err(format!("unknown hook `{s}`")),
    })
}

fn priority(s: &str) -> Result<i32, String> {
    Ok(match s {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => s.parse().map_err(|_| format!("bad priority `{s}`"))?,
    })
}

fn reject_code(proto: u8, s: &str) -> Result<u8, String> {
    let table: &[(&str, u8)] = match proto {
        ICMP => &[
            ("net-unreachable", 0),
            ("host-unreachable", 1),
            ("prot-unreachable", 2),
            ("port-unreachable", 3),
            ("net-prohibited", 9),
            ("host-prohibited", 10),
            ("admin-prohibited", 13),
        ],
        ICMPV6 => &[("no-route", 0), ("admin-prohibited", 1), ("addr-unreachable", 3), ("port-unreachable", 4)],
        _ => &[("no-route", 0), ("port-unreachable", 1), ("host-unreachable", 2), ("admin-prohibited", 3)],
    };
    table.iter().find(|(n, _)| *n == s).map(|&(_, c)| c).ok_or(format!("unknown reject type `{s}`"))
}

impl Parser {
    fn ruleset(&mut self) -> Result<(Ruleset, Vec<Pending>), ParseError> {
        let mut rs = Ruleset::default();
        let mut pending = Vec::new();
        loop {
            self.skip_newlines();
            if self.peek().is_none() {
                break;
            }
            if self.is_word("flush") {
                self.at += 1;
                self.expect_word("ruleset")?;
                continue;
            }
            self.expect_word("table")?;
            let fam = match self.word()?.as_str() {
                "ip" => Family::Ip,
                "ip6" => Family::Ip6,
                "inet" => Family::Inet,
                f => {
                    return self.err_back(format!("unknown family `{f}` (ip, ip6 or inet)"));
                }
            };
            let table = self.word()?;
            if rs.chains.iter().any(|c| c.table == table && c.family == fam) {
                return self.err_back(format!("table `{table}` defined twice"));
            }
            self.punct('{')?;
            loop {
                self.skip_newlines();
                if self.is_punct('}') {
                    self.at += 1;
                    break;
                }
                self.expect_word("chain")?;
                let name = self.word()?;
                if rs.chains.iter().any(|c| c.table == table && c.family == fam && c.name == name) {
                    return self.err_back(format!("chain `{name}` defined twice"));
                }
                self.punct('{')?;
                let idx = rs.chains.len();
                rs.chains.push(Chain { table: table.clone(), family: fam, name, base: None, rules: Vec::new() });
                loop {
                    self.skip_newlines();
                    if self.is_punct('}') {
                        self.at += 1;
                        break;
                    }
                    if self.is_word("type") {
                        let b = self.base()?;
                        if let Some(c) = rs.chains.get_mut(idx) {
                            c.base = Some(b);
                        }
                        continue;
                    }
                    if self.is_word("policy") {
                        self.at += 1;
                        let p = self.word()?;
                        let drop = match p.as_str() {
                            "accept" => false,
                            "drop" => true,
                            _ => {
                                return self.err_back("policy is `accept` or `drop`");
                            }
                        };
                        match rs.chains.get_mut(idx).and_then(|c| c.base.as_mut()) {
                            Some(b) => b.drop = drop,
                            None => {
                                return self.err_back("a policy needs a base chain (`type ... hook ...` first)");
                            }
                        }
                        continue;
                    }
                    let base = rs.chains.get(idx).and_then(|c| c.base);
                    let (rule, jumps) = self.rule(fam, base)?;
                    if let Some(c) = rs.chains.get_mut(idx) {
                        for (action, name, line, col) in jumps {
                            pending.push(Pending { chain: idx, rule: c.rules.len(), action, name, line, col });
                        }
                        c.rules.push(rule);
                    }
                }
            }
        }
        Ok((rs, pending))
    }

    fn base(&mut self) -> Result<BaseChain, ParseError> {
        self.expect_word("type")?;
        let kind = match self.word()?.as_str() {
            "filter" => ChainType::Filter,
            "nat" => ChainType::Nat,
            t => {
                return self.err_back(format!("unknown chain type `{t}` (filter or nat)"));
            }
        };
        self.expect_word("hook")?;
        let w = self.word()?;
        let h = hook(&w).or_else(|e| self.err_back(e))?;
        if kind == ChainType::Nat && h == Hook::Forward {
            return self.err_back("nat chains hook prerouting, input, output or postrouting");
        }
        self.expect_word("priority")?;
        let w = self.word()?;
        let priority = priority(&w).or_else(|e| self.err_back(e))?;
        if self.is_punct(';') {
            self.at += 1;
        }
        Ok(BaseChain { kind, hook: h, priority, drop: false })
    }

    /// One rule, up to its newline or `;`; jumps come back by name with their action index.
    #[allow(clippy::type_complexity)]
    fn rule(&mut self, fam: Family, base: Option<BaseChain>) -> Result<(Rule, Vec<(usize, String, usize, usize)>), ParseError> {
        let (line, start) = (self.here().0, self.at);
        let mut matches = Vec::new();
        let mut actions = Vec::new();
        let mut jumps = Vec::new();
        let nat_ok = base.map(|b| b.kind) == Some(ChainType::Nat);
        while let Some(t) = self.peek() {
            if matches!(t.tok, Tok::Newline | Tok::Punct(';') | Tok::Punct('}')) {
                break;
            }
            let (wl, wc) = (t.line, t.col);
            let w = self.word()?;
            match w.as_str() {
                "iifname" | "oifname" => {
                    let neg = self.negated();
                    let names = self.list(|_, s| Ok(s.to_string()))?;
                    matches.push((if w == "iifname" { Match::Iif(names) } else { Match::Oif(names) }, neg));
                }
                "ip" | "ip6" => {
                    let v6 = w == "ip6";
                    if (v6 && fam == Family::Ip) || (!v6 && fam == Family::Ip6) {
                        return self.err_back(format!("`{w}` matches in a {} table never match", fam.name()));
                    }
                    let dst = match self.word()?.as_str() {
                        "saddr" => false,
                        "daddr" => true,
                        "protocol" | "nexthdr" => {
                            let neg = self.negated();
                            let ps = self.list(|_, s| proto_num(s))?;
                            matches.push((Match::NfProto { v6 }, false));
                            matches.push((Match::L4Proto(ps), neg));
                            continue;
                        }
                        x => {
                            return self.err_back(format!("`{w} {x}`: expected saddr, daddr or protocol"));
                        }
                    };
                    let neg = self.negated();
                    let set = self.list(|_, s| parse_prefix(s, v6))?;
                    matches.push((Match::Addr { dst, set }, neg));
                }
                "tcp" | "udp" | "th" => {
                    let proto = match w.as_str() {
                        "tcp" => TCP,
                        "udp" => UDP,
                        _ => 0,
                    };
                    let what = self.word()?;
                    match what.as_str() {
                        "sport" | "dport" => {
                            let neg = self.negated();
                            let ranges = self.list(|_, s| parse_range(s))?;
                            if neg {
                                // `tcp dport != 22` still needs the packet to be TCP.
                                if proto != 0 {
                                    matches.push((Match::L4Proto(vec![proto]), false));
                                }
                            }
                            matches.push((Match::Port { proto, dst: what == "dport", ranges }, neg));
                        }
                        "flags" if proto == TCP => {
                            let exact = self.is_word("==");
                            if exact {
                                self.at += 1;
                            }
                            let first = self.list(|_, s| tcp_flag(s))?;
                            let value = first.iter().fold(0, |a, b| a | b);
                            if self.is_word("/") {
                                self.at += 1;
                                let mask = self.list(|_, s| tcp_flag(s))?.iter().fold(0, |a, b| a | b);
                                matches.push((Match::TcpFlags { mask, value, any: false }, false));
                            } else if exact {
                                matches.push((Match::TcpFlags { mask: 0xFF, value, any: false }, false));
                            } else {
                                matches.push((Match::TcpFlags { mask: value, value, any: true }, false));
                            }
                        }
                        x => {
                            return self
                                .err_back(format!("`{w} {x}`: expected sport, dport{}", if proto == TCP { " or flags" } else { "" }));
                        }
                    }
                }
                "icmp" | "icmpv6" => {
                    let proto = if w == "icmp" { ICMP } else { ICMPV6 };
                    self.expect_word("type")?;
                    let neg = self.negated();
                    let types = self.list(|_, s| icmp_type(proto, s).ok_or(format!("unknown {w} type `{s}`")))?;
                    matches.push((Match::IcmpType { proto, types }, neg));
                }
                "meta" => {
                    let what = self.word()?;
                    match what.as_str() {
                        "l4proto" => {
                            let neg = self.negated();
                            let ps = self.list(|_, s| proto_num(s))?;
                            matches.push((Match::L4Proto(ps), neg));
                        }
                        "nfproto" => {
                            let f = self.word()?;
                            let v6 = match f.as_str() {
                                "ipv4" => false,
                                "ipv6" => true,
                                _ => {
                                    return self.err_back("nfproto is ipv4 or ipv6");
                                }
                            };
                            matches.push((Match::NfProto { v6 }, false));
                        }
                        "mark" => {
                            if self.is_word("set") {
                                self.at += 1;
                                if self.is_word("ct") {
                                    self.at += 1;
                                    self.expect_word("mark")?;
                                    actions.push(Action::MarkFromCt);
                                    continue;
                                }
                                let m = self.mark_value()?;
                                actions.push(Action::SetMark(m));
                            } else {
                                let neg = self.negated();
                                let m = self.mark_value()?;
                                matches.push((Match::Mark(m), neg));
                            }
                        }
                        x => {
                            return self.err_back(format!("`meta {x}`: expected l4proto, nfproto or mark"));
                        }
                    }
                }
                "ct" if self.is_word("mark") => {
                    self.at += 1;
                    if self.is_word("set") {
                        self.at += 1;
                        if self.is_word("meta") {
                            self.at += 1;
                            self.expect_word("mark")?;
                            actions.push(Action::SetCtMark(None));
                        } else {
                            let m = self.mark_value()?;
                            actions.push(Action::SetCtMark(Some(m)));
                        }
                    } else {
                        let neg = self.negated();
                        let m = self.mark_value()?;
                        matches.push((Match::CtMark(m), neg));
                    }
                }
                "ct" => {
                    self.expect_word("state")?;
                    let neg = self.negated();
                    let bits = self.list(|_, s| {
                        Ok(match s {
                            "new" => 8,
                            "established" => 2,
                            "related" => 4,
                            "invalid" => 1,
                            "untracked" => 64,
                            _ => return Err(format!("unknown conntrack state `{s}`")),
                        })
                    })?;
                    matches.push((Match::CtState(bits.iter().fold(0, |a, b| a | b)), neg));
                }
                "counter" => actions.push(Action::Counter),
                "log" => {
                    let mut prefix = String::new();
                    if self.is_word("prefix") {
                        self.at += 1;
                        prefix = self.word()?;
                    }
                    actions.push(Action::Log { prefix });
                }
                "accept" => actions.push(Action::Accept),
                "drop" => actions.push(Action::Drop),
                "return" => actions.push(Action::Return),
                "reject" => {
                    let mut with = RejectWith::Default;
                    if self.is_word("with") {
                        self.at += 1;
                        let kind = self.word()?;
                        with = match kind.as_str() {
                            "tcp" => {
                                self.expect_word("reset")?;
                                RejectWith::TcpReset
                            }
                            "icmp" | "icmpv6" | "icmpx" => {
                                if self.is_word("type") {
                                    self.at += 1;
                                }
                                let t = self.word()?;
                                let proto = match kind.as_str() {
                                    "icmp" => ICMP,
                                    "icmpv6" => ICMPV6,
                                    _ => 0,
                                };
                                let code = reject_code(proto, &t).or_else(|e| self.err_back(e))?;
                                match proto {
                                    ICMP => RejectWith::Icmp(code),
                                    ICMPV6 => RejectWith::Icmp6(code),
                                    _ => RejectWith::Icmpx(code),
                                }
                            }
                            x => {
                                return self.err_back(format!("`reject with {x}`: expected tcp reset, icmp, icmpv6 or icmpx"));
                            }
                        };
                        if with == RejectWith::TcpReset && !matches.iter().any(|(m, n)| !n && matches_tcp_only(m)) {
                            return Err(ParseError {
                                line: wl,
                                col: wc,
                                msg: "`reject with tcp reset` needs a TCP match in the rule".into(),
                            });
                        }
                    }
                    actions.push(Action::Reject(with));
                }
                "jump" | "goto" => {
                    let name = self.word()?;
                    let (l, c) = (wl, wc);
                    jumps.push((actions.len(), name, l, c));
                    actions.push(if w == "jump" { Action::Jump(usize::MAX) } else { Action::Goto(usize::MAX) });
                }
                "snat" | "dnat" | "masquerade" | "redirect" => {
                    let hook_ok = matches!(
                        (w.as_str(), base.map(|b| b.hook)),
                        ("snat" | "masquerade", Some(Hook::Postrouting | Hook::Input))
                            | ("dnat" | "redirect", Some(Hook::Prerouting | Hook::Output))
                    );
                    if !nat_ok || !hook_ok {
                        return Err(ParseError {
                            line: wl,
                            col: wc,
                            msg: format!(
                                "`{w}` belongs in a nat chain on {}",
                                if matches!(w.as_str(), "snat" | "masquerade") { "postrouting or input" } else { "prerouting or output" }
                            ),
                        });
                    }
                    let mut to = (None, None);
                    if self.is_word("to") {
                        self.at += 1;
                        let s = self.word()?;
                        to = nat_to(&s).or_else(|e| self.err_back(e))?;
                    }
                    let nat = match w.as_str() {
                        "snat" | "dnat" => {
                            let Some(addr) = to.0 else {
                                return Err(ParseError { line: wl, col: wc, msg: format!("`{w}` needs `to ADDRESS`") });
                            };
                            if (addr.is_ipv6() && fam == Family::Ip) || (addr.is_ipv4() && fam == Family::Ip6) {
                                return Err(ParseError { line: wl, col: wc, msg: format!("`{w} to {addr}` in a {} table", fam.name()) });
                            }
                            if w == "snat" {
                                Nat::Snat { addr, ports: to.1 }
                            } else {
                                Nat::Dnat { addr, port: to.1.map(|r| r.0) }
                            }
                        }
                        "masquerade" => Nat::Masquerade { ports: to.1 },
                        _ => Nat::Redirect { port: to.1.map(|r| r.0) },
                    };
                    actions.push(Action::Nat(nat));
                }
                x => {
                    return self.err_back(format!("unknown keyword `{x}`"));
                }
            }
        }
        if matches.is_empty() && actions.is_empty() {
            return self.err("empty rule");
        }
        let text = self.toks[start..self.at]
            .iter()
            .map(|t| match &t.tok {
                Tok::Word(w) => w.clone(),
                Tok::Str(s) => format!("\"{s}\""),
                Tok::Punct(c) => c.to_string(),
                Tok::Newline => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ,", ",");
        Ok((Rule { matches, actions, text, line, packets: 0, bytes: 0 }, jumps))
    }
}

fn matches_tcp_only(m: &Match) -> bool {
    match m {
        Match::L4Proto(p) => p == &[TCP],
        Match::Port { proto, .. } => *proto == TCP,
        Match::TcpFlags { .. } => true,
        _ => false,
    }
}

/// A number in decimal or `0x` hex (marks), as nft and tc write them.
pub(crate) fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("`{s}` is not a number"))
}

/// Parses a whole rule file. Nothing is returned unless all of it is valid: jumps name chains of the same
/// table, no jump loops back into a chain it came from.
pub fn parse(src: &str) -> Result<Ruleset, ParseError> {
    let mut p = Parser { toks: tokenize(src)?, at: 0 };
    let (mut rs, pending) = p.ruleset()?;
    for j in &pending {
        let (table, fam) = match rs.chains.get(j.chain) {
            Some(c) => (c.table.clone(), c.family),
            None => continue,
        };
        let Some(target) = rs.chains.iter().position(|c| c.table == table && c.family == fam && c.name == j.name) else {
            return Err(ParseError { line: j.line, col: j.col, msg: format!("no chain `{}` in table `{table}`", j.name) });
        };
        if rs.chains.get(target).is_some_and(|c| c.base.is_some()) {
            return Err(ParseError { line: j.line, col: j.col, msg: format!("`{}` is a base chain; jumps go to regular chains", j.name) });
        }
        if let Some(a) = rs.chains.get_mut(j.chain).and_then(|c| c.rules.get_mut(j.rule)).and_then(|r| r.actions.get_mut(j.action)) {
            *a = match a {
                Action::Goto(_) => Action::Goto(target),
                _ => Action::Jump(target),
            };
        }
    }
    // Jump loops: a depth-first walk from every chain must not come back to a chain on its path.
    fn visit(rs: &Ruleset, c: usize, path: &mut Vec<usize>) -> Option<usize> {
        if path.contains(&c) {
            return Some(c);
        }
        path.push(c);
        for r in rs.chains.get(c).map(|c| c.rules.as_slice()).unwrap_or_default() {
            for a in &r.actions {
                if let Action::Jump(t) | Action::Goto(t) = a {
                    if let Some(l) = visit(rs, *t, path) {
                        return Some(l);
                    }
                }
            }
        }
        path.pop();
        None
    }
    for i in 0..rs.chains.len() {
        if let Some(l) = visit(&rs, i, &mut Vec::new()) {
            let line = pending.iter().find(|j| j.chain == l).map(|j| (j.line, j.col)).unwrap_or((1, 1));
            let name = rs.chains.get(l).map(|c| c.name.clone()).unwrap_or_default();
            return Err(ParseError { line: line.0, col: line.1, msg: format!("jumps loop through chain `{name}`") });
        }
    }
    Ok(rs)
}

#[cfg(test)]
mod test {
    use super::*;

    const GOOD: &str = r#"
flush ruleset
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ct state invalid counter drop
        iifname "lan" oifname "wan" accept
        tcp dport { 22, 8000-8080 } reject with tcp reset
        ip saddr 10.0.0.0/8 udp dport 53 log prefix "dns " accept
        icmpv6 type { echo-request,
                      echo-reply } accept
        tcp flags syn / syn,ack meta mark set 0x7
        meta mark 0x7 jump marked
    }
    chain marked { counter return }
}
table ip nat {
    chain prerouting { type nat hook prerouting priority dstnat; iifname "wan" tcp dport 8080 dnat to 10.1.0.2:80 }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade to :20000-20100
    }
}
"#;

    #[test]
    fn a_realistic_file_loads() {
        let rs = parse(GOOD).unwrap();
        assert_eq!(rs.chains.len(), 4);
        let fwd = &rs.chains[0];
        assert_eq!(fwd.base, Some(BaseChain { kind: ChainType::Filter, hook: Hook::Forward, priority: 0, drop: true }));
        assert_eq!(fwd.rules.len(), 8);
        assert_eq!(fwd.rules[0].matches, vec![(Match::CtState(2 | 4), false)]);
        assert_eq!(fwd.rules[3].matches[0], (Match::Port { proto: TCP, dst: true, ranges: vec![(22, 22), (8000, 8080)] }, false));
        assert_eq!(fwd.rules[3].actions, vec![Action::Reject(RejectWith::TcpReset)]);
        assert_eq!(fwd.rules[5].matches[0], (Match::IcmpType { proto: ICMPV6, types: vec![128, 129] }, false));
        assert_eq!(fwd.rules[6].matches[0], (Match::TcpFlags { mask: 0x12, value: 0x02, any: false }, false));
        assert_eq!(fwd.rules[7].actions, vec![Action::Jump(1)]);
        assert_eq!(rs.chains[2].base.unwrap().priority, -100);
        assert_eq!(rs.chains[2].rules[0].actions, vec![Action::Nat(Nat::Dnat { addr: "10.1.0.2".parse().unwrap(), port: Some(80) })]);
        assert_eq!(rs.chains[3].rules[0].actions, vec![Action::Nat(Nat::Masquerade { ports: Some((20000, 20100)) })]);
        let listing = rs.listing();
        assert!(
            listing.contains("table ip nat {") && listing.contains("oifname \"wan\" masquerade to :20000-20100 # packets 0 bytes 0"),
            "{listing}"
        );
    }

    fn err(src: &str) -> ParseError {
        parse(src).unwrap_err()
    }

    #[test]
    fn errors_name_their_line_and_column() {
        let e = err("table inet f {\n  chain c {\n    tcp dport 99999 accept\n  }\n}\n");
        assert_eq!((e.line, e.col), (3, 15), "{e}");
        assert!(e.msg.contains("99999"), "{e}");
        let e = err("table inet f {\n chain c { ip saddr 10.0.0.0/33 drop }\n}");
        assert_eq!((e.line, e.col), (2, 21), "{e}");
        let e = err("table inet f {\n chain c { jump nowhere }\n}");
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("nowhere"));
        let e = err("table inet f {\n chain a { jump b }\n chain b { jump a }\n}");
        assert!(e.msg.contains("loop"), "{e}");
        let e = err("table inet f { chain c { type filter hook forward priority 0; masquerade } }");
        assert!(e.msg.contains("nat chain"), "{e}");
        let e = err("table ip f { chain c { ip6 saddr ::1 drop } }");
        assert!(e.msg.contains("never match"), "{e}");
        let e = err("table ip f { chain c { udp dport 53 reject with tcp reset } }");
        assert!(e.msg.contains("TCP match"), "{e}");
        let e = err("table ip f { chain c { frobnicate } }");
        assert_eq!((e.line, e.col), (1, 24));
        let e = err("table ip f { chain c { iifname \"x } }");
        assert!(e.msg.contains("unterminated"));
        let e = err("table ip f { chain c { accept }");
        assert!(e.msg.contains("expected"), "{e}");
    }
}
