//! Faults injected through the control socket: what a driver must survive, each one-shot (a count of
//! events, or a duration) or persistent until cleared. The model asks [`Faults`] at the points where each
//! fault acts (carrier, MDIC, NVM load at reset, TX fetch, RX, DMA, interrupt delivery, write-back, doorbells).

use serde_json::{json, Value};
use std::time::{Duration, Instant};

macro_rules! kinds {
    ($($(#[$doc:meta])* $v:ident = $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind { $($(#[$doc])* $v,)* }
        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$v,)*];
            pub fn name(self) -> &'static str {
                match self { $(Kind::$v => $name,)* }
            }
            pub fn from_name(s: &str) -> Option<Kind> {
                match s { $($name => Some(Kind::$v),)* _ => None }
            }
        }
    };
}

kinds! {
    /// Carrier off (link down) while active.
    LinkDown = "link-down",
    /// Carrier down and up every half `period`; `count` is the number of down/up cycles.
    LinkFlap = "link-flap",
    /// MDIC accesses end with MDIC.E: the PHY does not answer.
    PhySilent = "phy-silent",
    /// The NVM image loaded at the next reset has a bad checksum.
    NvmChecksum = "nvm-checksum",
    /// The NVM image loaded at the next reset carries another MAC address.
    NvmMac = "nvm-mac",
    /// A transmit queue stops advancing while its tail moves; one-shot lasts until the next reset.
    TxStall = "tx-stall",
    /// Received frames arrive with a bad CRC: dropped and counted in CRCERRS.
    RxDrop = "rx-drop",
    /// Received frames lose their second half.
    RxTruncate = "rx-truncate",
    /// Received frames get checksum error status (IPE/TCPE) although their checksums are good.
    RxBadCsum = "rx-bad-csum",
    /// DMA accesses fail as if the address were not mapped.
    DmaError = "dma-error",
    /// Interrupt messages are not delivered.
    IrqLost = "irq-lost",
    /// Interrupt messages without a cause, one every `delay`.
    IrqSpurious = "irq-spurious",
    /// Interrupt messages delivered `delay` late.
    IrqLate = "irq-late",
    /// Descriptor write-backs (DD) land `delay` late.
    WritebackDelay = "writeback-delay",
    /// Each doorbell (TDT/RDT write) takes effect `delay` late.
    DoorbellLatency = "doorbell-latency",
}

impl Kind {
    /// Faults whose one-shot form lasts until the next reset rather than a count of events.
    fn reset_scoped(self) -> bool {
        matches!(self, Kind::TxStall)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    /// Events (or resets) left; `None` while persistent or timed.
    pub count: Option<u64>,
    /// When a timed fault ends (`--for`).
    pub until: Option<Instant>,
    /// Flap period, spurious interrupt interval, or the delay of late interrupts, write-backs and doorbells.
    pub delay: Duration,
    /// The MAC address `nvm-mac` loads.
    pub mac: [u8; 6],
    /// The transmit queue `tx-stall` stops (both when `None`).
    pub queue: Option<usize>,
    pub since: Instant,
    /// Times the fault acted, and when it last did.
    pub hits: u64,
    pub last_hit: Option<Instant>,
}

impl Fault {
    pub fn new(kind: Kind) -> Fault {
        Fault {
            kind,
            count: Some(1),
            until: None,
            delay: Duration::from_millis(100),
            mac: [0x52, 0x54, 0x00, 0xfa, 0x17, 0x01],
            queue: None,
            since: Instant::now(),
            hits: 0,
            last_hit: None,
        }
    }

    pub fn to_json(&self, now: Instant) -> Value {
        json!({
            "fault": self.kind.name(),
            "remaining": self.count,
            "persistent": self.count.is_none() && self.until.is_none(),
            "ends_in_ms": self.until.map(|u| u.saturating_duration_since(now).as_millis() as u64),
            "delay_ms": self.delay.as_secs_f64() * 1e3,
            "mac": crate::trace::mac_str(&self.mac),
            "queue": self.queue,
            "hits": self.hits,
        })
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    active: Vec<Fault>,
    /// Every fault's hits, including faults that ended.
    pub total_hits: std::collections::HashMap<&'static str, u64>,
}

impl Faults {
    /// Arms a fault, replacing one of the same kind.
    pub fn inject(&mut self, f: Fault) {
        self.active.retain(|a| a.kind != f.kind);
        self.active.push(f);
    }

    /// Clears one kind, or every fault; returns how many were active.
    pub fn clear(&mut self, kind: Option<Kind>) -> usize {
        let before = self.active.len();
        self.active.retain(|a| kind.is_some_and(|k| a.kind != k));
        before - self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn list(&self) -> &[Fault] {
        &self.active
    }

    fn expire(&mut self, now: Instant) {
        self.active.retain(|a| a.until.is_none_or(|u| now < u) && a.count != Some(0));
    }

    /// The active fault of `kind`, without using it up.
    pub fn peek(&mut self, kind: Kind, now: Instant) -> Option<&Fault> {
        if self.active.is_empty() {
            return None;
        }
        self.expire(now);
        self.active.iter().find(|a| a.kind == kind)
    }

    /// Uses one event of `kind`: `Some` (a copy of the fault) when it acts now.
    pub fn take(&mut self, kind: Kind, now: Instant) -> Option<Fault> {
        if self.active.is_empty() {
            return None;
        }
        self.expire(now);
        let a = self.active.iter_mut().find(|a| a.kind == kind)?;
        a.hits += 1;
        a.last_hit = Some(now);
        *self.total_hits.entry(kind.name()).or_default() += 1;
        let f = a.clone();
        if !kind.reset_scoped() {
            if let Some(c) = a.count.as_mut() {
                *c = c.saturating_sub(1);
            }
        }
        self.expire(now);
        Some(f)
    }

    /// A reset happened: one-shot faults scoped to a reset end.
    pub fn on_reset(&mut self) {
        for a in self.active.iter_mut().filter(|a| a.kind.reset_scoped()) {
            if let Some(c) = a.count.as_mut() {
                *c = c.saturating_sub(1);
            }
        }
        self.active.retain(|a| a.count != Some(0));
    }

    /// Whether a spurious interrupt is due now (fault `irq-spurious`, one every `delay`); uses one up.
    pub fn spurious_due(&mut self, now: Instant) -> bool {
        let due = self.peek(Kind::IrqSpurious, now).is_some_and(|f| f.last_hit.is_none_or(|l| now >= l + f.delay));
        due && self.take(Kind::IrqSpurious, now).is_some()
    }

    /// Whether the carrier is forced off now (link-down, or the down half of a flap).
    pub fn carrier_forced_off(&mut self, now: Instant) -> bool {
        if self.peek(Kind::LinkDown, now).is_some() {
            return true;
        }
        let Some(f) = self.peek(Kind::LinkFlap, now) else { return false };
        let half = f.delay.max(Duration::from_millis(1)) / 2;
        let phase = now.duration_since(f.since).as_nanos() / half.as_nanos().max(1);
        if let Some(cycles) = f.count {
            if phase >= 2 * cycles as u128 {
                self.clear(Some(Kind::LinkFlap));
                return false;
            }
        }
        phase.is_multiple_of(2)
    }

    /// The next time a fault changes state on its own (a flap edge, a timed fault ending).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.active
            .iter()
            .filter_map(|a| match a.kind {
                Kind::IrqSpurious => Some(a.last_hit.map_or(a.since, |l| l + a.delay)),
                Kind::LinkFlap => {
                    let half = (a.delay.max(Duration::from_millis(1)) / 2).as_nanos().max(1);
                    let n = now.duration_since(a.since).as_nanos() / half + 1;
                    Some(a.since + Duration::from_nanos((n * half).min(u64::MAX as u128) as u64))
                }
                _ => a.until,
            })
            .min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn counts_durations_and_resets() {
        let mut f = Faults::default();
        let now = Instant::now();
        let mut d = Fault::new(Kind::DmaError);
        d.count = Some(2);
        f.inject(d);
        assert!(f.take(Kind::DmaError, now).is_some());
        assert!(f.take(Kind::IrqLost, now).is_none());
        assert!(f.take(Kind::DmaError, now).is_some());
        assert!(f.take(Kind::DmaError, now).is_none(), "two events, then gone");
        assert_eq!(f.total_hits["dma-error"], 2);

        let mut p = Fault::new(Kind::IrqLost);
        p.count = None;
        f.inject(p);
        for _ in 0..100 {
            assert!(f.take(Kind::IrqLost, now).is_some());
        }
        assert_eq!(f.clear(Some(Kind::IrqLost)), 1);
        assert!(f.take(Kind::IrqLost, now).is_none());

        let mut s = Fault::new(Kind::TxStall);
        s.count = Some(1);
        f.inject(s);
        assert!(f.take(Kind::TxStall, now).is_some());
        assert!(f.take(Kind::TxStall, now).is_some(), "a stall lasts until the reset");
        f.on_reset();
        assert!(f.take(Kind::TxStall, now).is_none());

        let mut t = Fault::new(Kind::LinkDown);
        t.count = None;
        t.until = Some(now + Duration::from_millis(50));
        f.inject(t);
        assert!(f.carrier_forced_off(now));
        assert!(!f.carrier_forced_off(now + Duration::from_millis(60)));
    }

    #[test]
    fn flapping_alternates_and_ends() {
        let mut f = Faults::default();
        let mut fl = Fault::new(Kind::LinkFlap);
        fl.delay = Duration::from_millis(100);
        fl.count = Some(2);
        let t0 = fl.since;
        f.inject(fl);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(f.carrier_forced_off(at(10)));
        assert!(!f.carrier_forced_off(at(60)));
        assert!(f.carrier_forced_off(at(110)));
        assert_eq!(f.next_deadline(at(110)), Some(at(150)));
        assert!(!f.carrier_forced_off(at(160)));
        assert!(!f.carrier_forced_off(at(210)), "two cycles, then the link stays up");
        assert!(f.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(*k));
        }
    }
}
