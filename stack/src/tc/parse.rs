//! Qdisc specifications in `tc`'s words, one line each:
//!
//! ```text
//! pfifo_fast [limit N]
//! fq_codel [limit N] [flows N] [quantum BYTES] [target TIME] [interval TIME]
//! tbf rate RATE burst SIZE [latency TIME] [child QDISC...]
//! netem [delay TIME [JITTER [CORR%]]] [loss P%] [duplicate P%] [reorder P%] [corrupt P%] [rate RATE] [limit N] [seed N]
//! htb [default ID] [limit N] class ID [parent ID] rate RATE [ceil RATE] [burst SIZE] ...
//!     filter [src PREFIX] [dst PREFIX] [proto tcp|udp|icmp] [sport N] [dport N] [mark N] flowid ID ...
//! police rate RATE burst SIZE                    (ingress)
//! ```
//!
//! Rates: `bit`, `kbit`, `mbit`, `gbit` (bits per second, decimal) or `bps`, `kbps`, `mbps` (bytes per
//! second). Sizes: bytes, or `k`/`kb`, `m`/`mb` (binary, as tc reads them). Times: `us`, `ms`, `s`.

use super::{fifo::PfifoFast, fq_codel, htb, netem, police::Policer, tbf::Tbf, Qdisc};
use crate::netfilter::rules::Prefix;
use std::time::Duration;

/// A rate in bytes per second.
pub fn rate(s: &str) -> Result<u64, String> {
    let s = s.to_ascii_lowercase();
    let (num, mult): (&str, f64) = if let Some(n) = s.strip_suffix("gbit") {
        (n, 1e9 / 8.0)
    } else if let Some(n) = s.strip_suffix("mbit") {
        (n, 1e6 / 8.0)
    } else if let Some(n) = s.strip_suffix("kbit") {
        (n, 1e3 / 8.0)
    } else if let Some(n) = s.strip_suffix("mbps") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix("kbps") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("bps") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("bit") {
        (n, 1.0 / 8.0)
    } else {
        return Err(format!("rate {s}: give a unit (bit, kbit, mbit, gbit, bps, kbps, mbps)"));
    };
    let v: f64 = num.parse().map_err(|_| format!("rate {s}: not a number"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("rate {s}: must be positive"));
    }
    Ok((v * mult).round().max(1.0) as u64)
}

/// A size in bytes.
pub fn size(s: &str) -> Result<usize, String> {
    let l = s.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = l.strip_suffix("kb").or(l.strip_suffix('k')) {
        (n, 1024)
    } else if let Some(n) = l.strip_suffix("mb").or(l.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else {
        (l.strip_suffix('b').unwrap_or(&l), 1)
    };
    let v: usize = num.parse().map_err(|_| format!("size {s}: not a number"))?;
    v.checked_mul(mult).ok_or(format!("size {s}: too large"))
}

/// A time.
pub fn time(s: &str) -> Result<Duration, String> {
    let l = s.to_ascii_lowercase();
    let (num, scale) = if let Some(n) = l.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = l.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = l.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("time {s}: give a unit (us, ms, s)"));
    };
    let v: f64 = num.parse().map_err(|_| format!("time {s}: not a number"))?;
    if !(0.0..3600.0).contains(&v) {
        return Err(format!("time {s}: out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.strip_suffix('%').unwrap_or(s).parse().map_err(|_| format!("{s}: not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s}: between 0% and 100%"));
    }
    Ok(v / 100.0)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{s}: not a number"))
}

struct Words<'a> {
    w: Vec<&'a str>,
    at: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let w = self.w.get(self.at).copied();
        self.at += 1;
        w
    }
    fn value(&mut self, key: &str) -> Result<&'a str, String> {
        self.next().ok_or(format!("{key}: a value is missing"))
    }
    fn peek(&self) -> Option<&'a str> {
        self.w.get(self.at).copied()
    }
    fn rest(&mut self) -> String {
        let r = self.w.get(self.at..).unwrap_or_default().join(" ");
        self.at = self.w.len();
        r
    }
}

/// Builds an egress qdisc from its specification.
pub fn qdisc(spec: &str) -> Result<Box<dyn Qdisc>, String> {
    let mut w = Words { w: spec.split_whitespace().collect(), at: 0 };
    let kind = w.next().ok_or("an empty qdisc specification")?;
    let q: Box<dyn Qdisc> = match kind {
        "pfifo_fast" => {
            let mut limit = 1000;
            while let Some(k) = w.next() {
                match k {
                    "limit" => limit = num(w.value(k)?)?,
                    _ => return Err(format!("pfifo_fast: unknown `{k}`")),
                }
            }
            Box::new(PfifoFast::new(limit))
        }
        "fq_codel" => {
            let mut c = fq_codel::Config::default();
            while let Some(k) = w.next() {
                match k {
                    "limit" => c.limit = num(w.value(k)?)?,
                    "flows" => c.flows = num::<usize>(w.value(k)?)?.clamp(1, 65536),
                    "quantum" => c.quantum = size(w.value(k)?)?.max(64),
                    "target" => c.codel.target = time(w.value(k)?)?,
                    "interval" => c.codel.interval = time(w.value(k)?)?,
                    _ => return Err(format!("fq_codel: unknown `{k}`")),
                }
            }
            Box::new(fq_codel::FqCodel::new(c))
        }
        "tbf" => {
            let (mut r, mut burst, mut latency, mut child) = (None, None, Duration::from_millis(50), None);
            while let Some(k) = w.next() {
                match k {
                    "rate" => r = Some(rate(w.value(k)?)?),
                    "burst" | "buffer" | "maxburst" => burst = Some(size(w.value(k)?)?),
                    "latency" => latency = time(w.value(k)?)?,
                    "limit" => {
                        return Err("tbf: give `latency` (the queue bound) instead of `limit`".into());
                    }
                    "child" => child = Some(qdisc(&w.rest())?),
                    _ => return Err(format!("tbf: unknown `{k}`")),
                }
            }
            let r = r.ok_or("tbf: `rate` is required")?;
            let burst = burst.ok_or("tbf: `burst` is required")?;
            if burst < 1514 {
                return Err(format!("tbf: burst {burst} is smaller than one frame"));
            }
            Box::new(Tbf::new(r, burst, latency, child))
        }
        "netem" => {
            let mut c = netem::Config::default();
            while let Some(k) = w.next() {
                match k {
                    "delay" => {
                        c.delay = time(w.value(k)?)?;
                        if let Some(j) = w.peek().filter(|x| time(x).is_ok()) {
                            w.next();
                            c.jitter = time(j)?;
                            if let Some(p) = w.peek().filter(|x| x.ends_with('%')) {
                                w.next();
                                c.correlation = percent(p)?;
                            }
                        }
                    }
                    "loss" => c.loss = percent(w.value(k)?)?,
                    "duplicate" => c.duplicate = percent(w.value(k)?)?,
                    "reorder" => c.reorder = percent(w.value(k)?)?,
                    "corrupt" => c.corrupt = percent(w.value(k)?)?,
                    "rate" => c.rate = rate(w.value(k)?)?,
                    "limit" => c.limit = num(w.value(k)?)?,
                    "seed" => c.seed = num(w.value(k)?)?,
                    _ => return Err(format!("netem: unknown `{k}`")),
                }
            }
            if c.reorder > 0.0 && c.delay.is_zero() {
                return Err("netem: reorder needs a delay to reorder against".into());
            }
            Box::new(netem::Netem::new(c))
        }
        "htb" => {
            let mut h = htb::Htb::new(1000);
            let mut default = None;
            let mut first = true;
            while let Some(k) = w.next() {
                match k {
                    "default" => default = Some(num::<u32>(w.value(k)?)?),
                    "limit" if first => h = htb::Htb::new(num(w.value(k)?)?),
                    "class" => {
                        first = false;
                        let id: u32 = num(w.value(k)?)?;
                        let (mut parent, mut r, mut ceil, mut burst) = (None, None, None, 1600);
                        while let Some(k2) = w.peek() {
                            match k2 {
                                "parent" => {
                                    w.next();
                                    parent = Some(num(w.value(k2)?)?);
                                }
                                "rate" => {
                                    w.next();
                                    r = Some(rate(w.value(k2)?)?);
                                }
                                "ceil" => {
                                    w.next();
                                    ceil = Some(rate(w.value(k2)?)?);
                                }
                                "burst" => {
                                    w.next();
                                    burst = size(w.value(k2)?)?;
                                }
                                _ => break,
                            }
                        }
                        let r = r.ok_or(format!("htb class {id}: `rate` is required"))?;
                        h.add_class(id, parent, r, ceil.unwrap_or(r), burst)?;
                    }
                    "filter" => {
                        first = false;
                        let mut f = htb::Filter::default();
                        let mut flow = None;
                        while let Some(k2) = w.peek() {
                            match k2 {
                                "src" | "dst" => {
                                    w.next();
                                    let v = w.value(k2)?;
                                    let p = prefix(v)?;
                                    if k2 == "src" {
                                        f.src = Some(p);
                                    } else {
                                        f.dst = Some(p);
                                    }
                                }
                                "proto" => {
                                    w.next();
                                    f.proto = Some(match w.value(k2)? {
                                        "tcp" => 6,
                                        "udp" => 17,
                                        "icmp" => 1,
                                        "icmpv6" => 58,
                                        x => return Err(format!("htb filter: unknown protocol `{x}`")),
                                    });
                                }
                                "sport" => {
                                    w.next();
                                    f.sport = Some(num(w.value(k2)?)?);
                                }
                                "dport" => {
                                    w.next();
                                    f.dport = Some(num(w.value(k2)?)?);
                                }
                                "mark" => {
                                    w.next();
                                    let v = w.value(k2)?;
                                    f.mark = Some(crate::netfilter::parse::parse_u32(v).map_err(|e| format!("htb filter: mark {e}"))?);
                                }
                                "flowid" | "classid" => {
                                    w.next();
                                    flow = Some(num::<u32>(w.value(k2)?.trim_start_matches("1:"))?);
                                    break;
                                }
                                _ => break,
                            }
                        }
                        h.add_filter(f, flow.ok_or("htb filter: `flowid ID` is required")?)?;
                    }
                    _ => return Err(format!("htb: unknown `{k}`")),
                }
            }
            if let Some(d) = default {
                h.set_default(d)?;
            }
            Box::new(h)
        }
        _ => return Err(format!("unknown qdisc `{kind}` (pfifo_fast, fq_codel, tbf, netem, htb)")),
    };
    Ok(q)
}

fn prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let addr: std::net::IpAddr = a.parse().map_err(|_| format!("{a}: not an address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() { max } else { l.parse().ok().filter(|&n| n <= max).ok_or(format!("{s}: bad prefix length"))? };
    Ok(Prefix { addr, len })
}

/// An ingress policer from `police rate RATE burst SIZE` (the leading word optional).
pub fn policer(spec: &str) -> Result<Policer, String> {
    let mut w = Words { w: spec.split_whitespace().collect(), at: 0 };
    if w.peek() == Some("police") {
        w.next();
    }
    let (mut r, mut b) = (None, None);
    while let Some(k) = w.next() {
        match k {
            "rate" => r = Some(rate(w.value(k)?)?),
            "burst" => b = Some(size(w.value(k)?)?),
            _ => return Err(format!("police: unknown `{k}`")),
        }
    }
    Ok(Policer::new(r.ok_or("police: `rate` is required")?, b.ok_or("police: `burst` is required")?))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn units_read_as_tc_reads_them() {
        assert_eq!(rate("20mbit").unwrap(), 2_500_000);
        assert_eq!(rate("1gbit").unwrap(), 125_000_000);
        assert_eq!(rate("100kbps").unwrap(), 100_000);
        assert!(rate("20").is_err());
        assert_eq!(size("32k").unwrap(), 32768);
        assert_eq!(size("1514").unwrap(), 1514);
        assert_eq!(time("5ms").unwrap(), Duration::from_millis(5));
        assert_eq!(time("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn every_qdisc_parses_and_shows_itself() {
        for spec in [
            "pfifo_fast limit 100",
            "fq_codel limit 1000 target 5ms interval 100ms quantum 1514",
            "tbf rate 20mbit burst 32k latency 400ms",
            "tbf rate 20mbit burst 32k child fq_codel",
            "netem delay 50ms 5ms 25% loss 1% duplicate 1% reorder 10% corrupt 0.1% rate 10mbit seed 3",
            "htb default 20 class 1 rate 10mbit class 10 parent 1 rate 7500kbit ceil 10mbit class 20 parent 1 rate 2500kbit ceil 10mbit filter proto tcp dport 5001 flowid 10",
            "htb default 20 class 1 rate 10mbit class 10 parent 1 rate 10mbit class 20 parent 1 rate 1mbit filter mark 0x10 flowid 10 filter mark 3 proto udp flowid 20",
        ] {
            let q = qdisc(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert!(q.show().starts_with(&format!("qdisc {}", spec.split_whitespace().next().unwrap())), "{}", q.show());
        }
        let nested = qdisc("tbf rate 20mbit burst 32k child fq_codel").unwrap().show();
        assert!(nested.contains("  qdisc fq_codel"), "{nested}");
        assert!(qdisc("tbf rate 20mbit").err().unwrap().contains("burst"));
        assert!(qdisc("netem loss 120%").is_err());
        assert!(qdisc("htb class 10 parent 1 rate 1mbit").err().unwrap().contains("no parent"));
        assert!(qdisc("sfq").is_err());
        assert!(policer("police rate 1mbit burst 10k").is_ok());
    }
}
