//! The card's live trace: register accesses, DMA, interrupts and frames as timestamped JSON lines for the
//! control socket's `trace` subscribers. Off (no subscriber) it costs one relaxed atomic load per site.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Register reads and writes by the driver.
pub const REGS: u32 = 1 << 0;
/// DMA reads and writes: descriptor fetches, write-backs, buffers.
pub const DMA: u32 = 1 << 1;
/// Interrupts raised, moderated, dropped or delayed.
pub const IRQ: u32 = 1 << 2;
/// Frames to and from the wire.
pub const FRAMES: u32 = 1 << 3;
/// Faults injected and cleared.
pub const FAULTS: u32 = 1 << 4;
pub const ALL: u32 = REGS | DMA | IRQ | FRAMES | FAULTS;

/// Events a slow subscriber may fall behind by before events are dropped (and counted).
const BACKLOG: usize = 65536;

/// The category names `nicctl trace` filters by.
pub fn category(name: &str) -> Option<u32> {
    Some(match name {
        "regs" => REGS,
        "dma" => DMA,
        "irq" => IRQ,
        "frames" => FRAMES,
        "faults" => FAULTS,
        "all" => ALL,
        _ => return None,
    })
}

struct Sub {
    mask: u32,
    tx: SyncSender<String>,
    alive: std::sync::Weak<()>,
}

impl Sub {
    fn gone(&self) -> bool {
        self.alive.strong_count() == 0
    }
}

/// A subscription: events arrive on `rx` until it is dropped.
pub struct Subscription {
    pub rx: Receiver<String>,
    _alive: std::sync::Arc<()>,
}

pub struct Tracer {
    mask: AtomicU32,
    subs: Mutex<Vec<Sub>>,
    start: Instant,
    /// Events dropped because a subscriber did not keep up.
    pub dropped: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer { mask: AtomicU32::new(0), subs: Mutex::new(Vec::new()), start: Instant::now(), dropped: AtomicU64::new(0) }
    }
}

impl Tracer {
    /// Whether anyone listens to `cat`: the check every trace site makes first.
    #[inline]
    pub fn on(&self, cat: u32) -> bool {
        self.mask.load(Ordering::Relaxed) & cat != 0
    }

    /// Sends an event of category `cat` to its subscribers. `fields` is built only when someone listens; the
    /// time (seconds since the device started) and category are added.
    #[inline(always)]
    pub fn emit(&self, cat: u32, kind: &str, fields: impl FnOnce() -> Value) {
        if self.on(cat) {
            self.build_and_send(cat, kind, fields);
        }
    }

    /// Builds the fields of an event someone listens to: out of line and cold, so that the callers of `emit`
    /// carry only the test of the mask.
    #[cold]
    #[inline(never)]
    fn build_and_send(&self, cat: u32, kind: &str, fields: impl FnOnce() -> Value) {
        self.send(cat, kind, fields());
    }

    /// An event someone listens to, out of line so that `emit` stays a load and a branch where nobody does.
    #[inline(never)]
    fn send(&self, cat: u32, kind: &str, mut v: Value) {
        // The time is read under the lock, so that events from the vfio-user and data-path threads reach
        // every subscriber in time order.
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Value::Object(m) = &mut v {
            m.insert("t".into(), json!((self.start.elapsed().as_nanos() as f64 / 1e9 * 1e6).round() / 1e6));
            m.insert("event".into(), json!(kind));
        }
        let line = v.to_string();
        let before = subs.len();
        subs.retain(|s| {
            if s.mask & cat == 0 {
                return true;
            }
            let kept = match s.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            };
            kept && !s.gone()
        });
        if subs.len() != before {
            self.recompute(&subs);
        }
    }

    /// A new subscriber for the categories in `mask`.
    pub fn subscribe(&self, mask: u32) -> Subscription {
        let (tx, rx) = sync_channel(BACKLOG);
        let alive = std::sync::Arc::new(());
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        subs.push(Sub { mask, tx, alive: std::sync::Arc::downgrade(&alive) });
        self.recompute(&subs);
        Subscription { rx, _alive: alive }
    }

    /// Ends every subscription whose receiver is gone (a `trace` client that disconnected), so that the
    /// trace sites go quiet again.
    pub fn prune(&self) {
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        subs.retain(|s| !s.gone());
        self.recompute(&subs);
    }

    fn recompute(&self, subs: &[Sub]) {
        self.mask.store(subs.iter().fold(0, |m, s| m | s.mask), Ordering::Relaxed);
    }
}

/// A MAC address as text.
pub fn mac_str(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What a trace line says about a frame: length, addresses, EtherType.
pub fn frame_fields(dir: &str, f: &[u8]) -> Value {
    let mac = |r: std::ops::Range<usize>| f.get(r).map(mac_str).unwrap_or_default();
    let ethertype = crate::bytes::be16(f, 12).unwrap_or(0);
    json!({ "dir": dir, "len": f.len(), "dst": mac(0..6), "src": mac(6..12), "ethertype": format!("{ethertype:#06x}") })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn subscribers_get_what_they_asked_for() {
        let t = Tracer::default();
        assert!(!t.on(REGS));
        let sub = t.subscribe(REGS | IRQ);
        let rx = &sub.rx;
        assert!(t.on(REGS) && t.on(IRQ) && !t.on(DMA));
        t.emit(REGS, "reg", || json!({"name": "CTRL"}));
        t.emit(DMA, "dma", || panic!("not built when nobody listens to DMA"));
        let line = rx.try_recv().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "reg");
        assert_eq!(v["name"], "CTRL");
        assert!(v["t"].as_f64().unwrap() >= 0.0);
        assert!(rx.try_recv().is_err());
        drop(sub);
        t.prune();
        assert!(!t.on(REGS), "a gone subscriber is dropped");
    }
}
