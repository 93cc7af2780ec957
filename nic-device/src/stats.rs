//! The statistics registers (0x4000-0x4124): counters that stick at their maximum and clear when read,
//! 64-bit octet counters as low/high pairs (reading the high half clears both), and beside them totals
//! since the device started, which no read clears (what the control socket shows). The frame counters a
//! good frame bumps (packets, octets, size buckets, broadcast and multicast) are counted here too.

use crate::regs::*;

const COUNT: usize = ((STATS_END - STATS_START) / 4 + 1) as usize;

#[derive(Debug, Clone)]
pub struct Stats {
    regs: [u32; COUNT],
    totals: [u64; COUNT],
}

impl Default for Stats {
    fn default() -> Stats {
        Stats { regs: [0; COUNT], totals: [0; COUNT] }
    }
}

/// Whether `off` is a statistics register.
pub fn is_stat(off: u32) -> bool {
    (STATS_START..=STATS_END).contains(&off)
}

fn index(off: u32) -> Option<usize> {
    is_stat(off).then(|| ((off - STATS_START) / 4) as usize)
}

/// The size bucket register (of the six from `base`: 64, 65-127, 128-255, 256-511, 512-1023, 1024 and
/// more) for a frame of `len` bytes with FCS.
pub fn size_bucket(len: usize, base: u32) -> u32 {
    let i = match len {
        0..=64 => 0,
        65..=127 => 1,
        128..=255 => 2,
        256..=511 => 3,
        512..=1023 => 4,
        _ => 5,
    };
    base + 4 * i
}

/// Which way a frame went, for the counters it bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Rx,
    Tx,
}

impl Stats {
    /// Adds to a 32-bit counter.
    pub fn inc(&mut self, off: u32, n: u32) {
        if let Some(i) = index(off) {
            if let Some(r) = self.regs.get_mut(i) {
                *r = r.saturating_add(n);
            }
            if let Some(t) = self.totals.get_mut(i) {
                *t = t.saturating_add(u64::from(n));
            }
        }
    }

    /// Adds to a 64-bit counter held as a low/high register pair.
    pub fn add64(&mut self, low: u32, n: u64) {
        let (Some(lo), Some(hi)) = (index(low), index(low + 4)) else { return };
        let cur = u64::from(self.regs.get(lo).copied().unwrap_or(0)) | (u64::from(self.regs.get(hi).copied().unwrap_or(0)) << 32);
        let v = cur.saturating_add(n);
        if let Some(r) = self.regs.get_mut(lo) {
            *r = v as u32;
        }
        if let Some(r) = self.regs.get_mut(hi) {
            *r = (v >> 32) as u32;
        }
        if let Some(t) = self.totals.get_mut(lo) {
            *t = t.saturating_add(n);
        }
    }

    /// A driver's read: the value, then cleared (a 64-bit pair clears when its high half is read).
    pub fn read(&mut self, off: u32) -> u32 {
        let v = self.peek(off);
        match off {
            GORCL | GOTCL | TORL | TOTL => {}
            GORCH | GOTCH | TORH | TOTH => {
                self.clear(off);
                self.clear(off - 4);
            }
            _ => self.clear(off),
        }
        v
    }

    fn clear(&mut self, off: u32) {
        if let Some(r) = index(off).and_then(|i| self.regs.get_mut(i)) {
            *r = 0;
        }
    }

    /// The value without clearing it.
    pub fn peek(&self, off: u32) -> u32 {
        index(off).and_then(|i| self.regs.get(i)).copied().unwrap_or(0)
    }

    /// The total since the device started (for a pair, at its low half).
    pub fn total(&self, off: u32) -> u64 {
        index(off).and_then(|i| self.totals.get(i)).copied().unwrap_or(0)
    }

    /// A reset clears the registers; the totals stay.
    pub fn reset(&mut self) {
        self.regs = [0; COUNT];
    }

    /// A good frame of `len` bytes (without FCS) received or sent: packets, octets with FCS (a short frame
    /// counts as padded to 64), its size bucket, and broadcast or multicast by its destination.
    pub fn count_frame(&mut self, dir: Dir, len: usize, dst: &[u8]) {
        let wire = len.max(60) + 4;
        let (total, good, octets, all_octets, bucket, bcast, mcast) = match dir {
            Dir::Rx => (TPR, GPRC, GORCL, TORL, PRC64, BPRC, MPRC),
            Dir::Tx => (TPT, GPTC, GOTCL, TOTL, PTC64, BPTC, MPTC),
        };
        self.inc(total, 1);
        self.inc(good, 1);
        self.add64(octets, wire as u64);
        self.add64(all_octets, wire as u64);
        self.inc(size_bucket(wire, bucket), 1);
        if dst.first().is_some_and(|b| b & 1 != 0) {
            self.inc(if dst.starts_with(&[0xFF; 6]) { bcast } else { mcast }, 1);
        }
    }

    /// The wire frames a TSO packet sent whole stands for: `segments` frames of HDRLEN plus up to MSS
    /// payload bytes each.
    pub fn count_tx_segments(&mut self, pkt: &[u8], hdrlen: usize, mss: usize, segments: usize) {
        let mut left = pkt.len().saturating_sub(hdrlen);
        for _ in 0..segments {
            let chunk = left.min(mss);
            left -= chunk;
            self.count_frame(Dir::Tx, hdrlen + chunk, pkt);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn counters_stick_clear_on_read_and_keep_totals() {
        let mut s = Stats::default();
        s.inc(MPC, u32::MAX);
        s.inc(MPC, 5);
        assert_eq!(s.read(MPC), u32::MAX, "sticks at the maximum");
        assert_eq!(s.read(MPC), 0, "cleared by the read");
        assert_eq!(s.total(MPC), u64::from(u32::MAX) + 5);
        s.add64(GORCL, 0x1_0000_0010);
        assert_eq!(s.read(GORCL), 0x10);
        assert_eq!(s.read(GORCL), 0x10, "the low half alone does not clear");
        assert_eq!(s.read(GORCH), 1);
        assert_eq!(s.peek(GORCL), 0, "reading the high half cleared the pair");
        s.inc(0x3FFC, 1); // not a statistics register: ignored
        s.reset();
        assert_eq!(s.total(GORCL), 0x1_0000_0010);
    }

    #[test]
    fn a_frame_counts_where_the_datasheet_puts_it() {
        let mut s = Stats::default();
        s.count_frame(Dir::Rx, 1514, &[0xFF; 6]);
        s.count_frame(Dir::Rx, 42, &[0x01, 0, 0x5e, 0, 0, 1]);
        s.count_frame(Dir::Tx, 100, &[0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!((s.peek(TPR), s.peek(GPRC), s.peek(BPRC), s.peek(MPRC)), (2, 2, 1, 1));
        assert_eq!(s.peek(GORCL), 1518 + 64, "octets with FCS, a short frame as 64");
        assert_eq!((s.peek(PRC64), s.peek(PRC64 + 20)), (1, 1));
        assert_eq!((s.peek(GPTC), s.peek(GOTCL), s.peek(PTC64 + 4), s.peek(MPTC)), (1, 104, 1, 0));
    }
}
