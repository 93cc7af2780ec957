//! Frame buffers handed back after use and reused for the next frames, so that a steady flow allocates
//! nothing per frame: receive buffers that backends give out (`Backend::recycle`), transmit buffers that
//! the data path returns to the engines once the backend has sent them (`Nic::recycle_tx`), the receive
//! FIFO's copies, and the wire frames the data path cuts from a host's GSO frames. A pool keeps a bounded
//! number of buffers up to a bounded size, and optionally a few larger ones apart (TSO super-packets and
//! GSO frames), so that rare large frames neither grow every buffer nor allocate each time.

/// A bounded stack of spare buffers, and optionally a few larger ones apart (`with_big`).
pub struct FramePool {
    free: Vec<Vec<u8>>,
    keep: usize,
    max_capacity: usize,
    /// Spare buffers larger than `max_capacity` (up to `big_max`), at most `big_keep` of them.
    big: Vec<Vec<u8>>,
    big_keep: usize,
    big_max: usize,
}

impl Default for FramePool {
    /// A receive round's worth of buffers of up to a jumbo frame each.
    fn default() -> FramePool {
        FramePool::new(256, crate::backend::MAX_FRAME + 64)
    }
}

impl FramePool {
    /// Keeps at most `keep` buffers, none of more than `max_capacity` bytes (a rare large frame does not pin
    /// its size in every slot).
    pub fn new(keep: usize, max_capacity: usize) -> FramePool {
        FramePool { free: Vec::new(), keep, max_capacity, big: Vec::new(), big_keep: 0, big_max: 0 }
    }

    /// Keeps up to `keep` buffers larger than the others too, of up to `max_capacity` bytes, for the rare
    /// large frames (TSO super-packets, GSO frames) to reuse: `take_big` hands them out.
    pub fn with_big(self, keep: usize, max_capacity: usize) -> FramePool {
        FramePool { big_keep: keep, big_max: max_capacity, ..self }
    }

    /// An empty buffer with room for `len` bytes, if a large one is spare: the largest, grown to `len`
    /// if it is short of it (so that the large buffers settle at the largest size asked for).
    pub fn take_big(&mut self, len: usize) -> Option<Vec<u8>> {
        let (at, _) = self.big.iter().enumerate().max_by_key(|(_, b)| b.capacity())?;
        let mut v = self.big.swap_remove(at);
        v.clear();
        v.reserve_exact(len);
        Some(v)
    }

    /// An empty buffer: a spare one when there is one.
    pub fn take(&mut self) -> Vec<u8> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v
    }

    /// A buffer holding a copy of `data`: a large spare one for data longer than the others hold.
    pub fn copy_of(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = match data.len() > self.max_capacity {
            true => self.take_big(data.len()).unwrap_or_default(),
            false => self.take(),
        };
        // Grown to the frame exactly, not doubled: a buffer stays within `max_capacity` as long as the
        // frames do, and comes back.
        v.reserve_exact(data.len());
        v.extend_from_slice(data);
        v
    }

    /// Takes a buffer back, or frees it when the pool is full or the buffer too large.
    pub fn put(&mut self, v: Vec<u8>) {
        if v.capacity() <= self.max_capacity {
            if self.free.len() < self.keep {
                self.free.push(v);
            }
        } else if v.capacity() <= self.big_max && self.big.len() < self.big_keep {
            self.big.push(v);
        }
    }

    /// Buffers waiting for reuse.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn buffers_come_back_by_size_within_their_bounds() {
        let mut p = FramePool::new(2, 100).with_big(1, 1000);
        let small = p.copy_of(&[1; 60]);
        assert!(small.capacity() >= 60 && small.capacity() <= 100, "grown to the frame, not doubled");
        let ptr = small.as_ptr();
        p.put(small);
        let again = p.take();
        assert_eq!(again.as_ptr(), ptr, "reused");
        assert!(p.take_big(10).is_none(), "no large spare yet");
        p.put(Vec::with_capacity(500));
        p.put(Vec::with_capacity(600));
        p.put(Vec::with_capacity(5000));
        assert_eq!(p.len(), 0, "large buffers are not handed out by take");
        let b = p.take_big(700).expect("the large buffer kept");
        assert!(b.is_empty() && b.capacity() >= 700, "grown to what was asked");
        assert!(p.take_big(1).is_none(), "one large buffer kept at most, none larger than 1000");
        p.put(b);
        assert!(p.take_big(10).is_some_and(|b| b.capacity() >= 700), "it stays grown");
        for _ in 0..3 {
            p.put(Vec::with_capacity(50));
        }
        assert_eq!(p.len(), 2, "at most `keep` small buffers");
        let mut plain = FramePool::new(4, 100);
        plain.put(Vec::with_capacity(500));
        assert!(plain.take_big(1).is_none() && plain.is_empty(), "without `with_big`, large buffers are freed");
        // A copy longer than the small buffers takes the large one, and goes back to it.
        let mut p = FramePool::new(2, 100).with_big(1, 1000);
        p.put(Vec::with_capacity(800));
        let big = p.copy_of(&[2; 700]);
        assert!(big.capacity() >= 800 && big == [2; 700]);
        p.put(big);
        assert!(p.take_big(1).is_some(), "back among the large ones");
    }
}
