//! Frame buffers handed back after use and reused for the next frames, so that a steady flow allocates
//! nothing per frame: receive buffers that backends give out (`Backend::recycle`), and transmit buffers
//! that the data path returns to the engines once the backend has sent them (`Nic::recycle_tx`).

/// A bounded stack of spare buffers.
pub struct FramePool {
    free: Vec<Vec<u8>>,
    keep: usize,
    max_capacity: usize,
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
        FramePool { free: Vec::new(), keep, max_capacity }
    }

    /// An empty buffer: a spare one when there is one.
    pub fn take(&mut self) -> Vec<u8> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_of(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.take();
        v.extend_from_slice(data);
        v
    }

    /// Takes a buffer back, or frees it when the pool is full or the buffer too large.
    pub fn put(&mut self, v: Vec<u8>) {
        if self.free.len() < self.keep && v.capacity() <= self.max_capacity {
            self.free.push(v);
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
