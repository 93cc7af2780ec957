//! Packet buffers in the sk_buff mould: linear data with headroom and tailroom (push, pull, put, trim),
//! header offsets, cheap shared clones that copy on write, paged fragments for large sends, checksum state,
//! and GSO parameters.

use std::sync::Arc;

/// How far the packet's checksums are known good or still to be filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Csum {
    /// Nothing known: software checks or fills checksums.
    #[default]
    None,
    /// The device verified them on receive.
    Verified,
    /// To be completed: sum from `start` to the end, store at `start + offset` (as Linux's CHECKSUM_PARTIAL).
    Partial { start: usize, offset: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    TcpV4,
    TcpV6,
}

/// Segmentation request: the payload is cut into `size`-byte segments by the device (TSO) or by software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub size: u16,
    pub kind: GsoKind,
}

/// A page-like fragment shared by reference.
#[derive(Debug, Clone)]
pub struct Frag {
    pub data: Arc<[u8]>,
    pub off: usize,
    pub len: usize,
}

impl Frag {
    /// The fragment's bytes (`add_frag` checked that they lie within its data).
    pub fn bytes(&self) -> &[u8] {
        self.data.get(self.off..self.off.saturating_add(self.len)).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct PacketBuf {
    store: Arc<Vec<u8>>,
    head: usize,
    tail: usize,
    pub frags: Vec<Frag>,
    /// Header offsets, relative to the start of the data.
    pub mac_header: Option<usize>,
    pub network_header: Option<usize>,
    pub transport_header: Option<usize>,
    pub csum: Csum,
    pub gso: Option<Gso>,
    pub vlan: Option<u16>,
    /// The packet's mark (Linux's `skb->mark`): set by netfilter's `meta mark set`, read by tc classifiers.
    pub mark: u32,
    /// What connection tracking made of the packet on its way out (Linux's `skb->_nfct`): it keeps it
    /// through `lo`, so that its connection is found again although NAT changed its addresses.
    pub ct: Option<crate::netfilter::conntrack::Track>,
}

pub const DEFAULT_HEADROOM: usize = 128;

/// Buffers at least this large come from, and go back to, the thread's pool: a 64 KiB super-packet per
/// frame allocated and freed would otherwise let the allocator give the memory back to the kernel and fault
/// it in again on the next frame (page faults took about a tenth of a TAP bulk receive in some runs).
const POOLED_MIN: usize = 4096;
/// Buffers kept per thread in each size class, and the largest kept.
const POOL_KEEP: usize = 128;
const POOLED_MAX: usize = 256 * 1024;
/// Pooled buffers below this capacity (a received frame's) are kept apart from larger ones (a
/// super-packet's), so that neither kind is handed out for the other: a frame's 4 KiB buffer grown to
/// 64 KiB would be an allocation and a copy, a 64 KiB one held by a frame a waste.
const POOL_LARGE: usize = 16 * 1024;

thread_local! {
    static POOL: std::cell::RefCell<[Vec<Vec<u8>>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// An empty vector with room for `cap` bytes: a pooled one for large sizes (a packet built from it with
/// [`PacketBuf::from_vec_at`] goes back to the pool with the packet).
pub(crate) fn buffer(cap: usize) -> Vec<u8> {
    if cap >= POOLED_MIN {
        let class = usize::from(cap >= POOL_LARGE);
        if let Some(mut v) = POOL.try_with(|p| p.borrow_mut()[class].pop()).ok().flatten() {
            v.clear();
            v.reserve(cap);
            return v;
        }
    }
    Vec::with_capacity(cap)
}

/// A buffer for a driver to receive a frame of up to `cap` bytes into (`driver::NetDev::set_rx_source`):
/// from the thread's pool, at least `POOLED_MIN` large, so that the packet made of it
/// ([`PacketBuf::from_vec`]) gives it back to the pool when it is done with.
pub fn rx_buffer(cap: usize) -> Vec<u8> {
    buffer(cap.max(POOLED_MIN))
}

thread_local! {
    /// Emptied `Arc`s of packets gone, to hold the next packets' buffers: the `Arc` a packet's storage
    /// needs is not allocated and freed per packet.
    static SHELLS: std::cell::RefCell<Vec<Arc<Vec<u8>>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// What a dropped packet's storage is replaced with while its `Arc` goes back to `SHELLS`.
    static EMPTY: Arc<Vec<u8>> = Arc::new(Vec::new());
}

/// `store` in a shared holder, an emptied one from the thread's pool when there is one.
fn shell(store: Vec<u8>) -> Arc<Vec<u8>> {
    if let Some(mut a) = SHELLS.try_with(|s| s.borrow_mut().pop()).ok().flatten() {
        if let Some(slot) = Arc::get_mut(&mut a) {
            *slot = store;
            return a;
        }
    }
    Arc::new(store)
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        // The last holder of a large buffer gives it back to the thread's pool, and the emptied `Arc` to
        // the pool of holders.
        let Some(v) = Arc::get_mut(&mut self.store) else { return };
        let v = std::mem::take(v);
        if (POOLED_MIN..=POOLED_MAX).contains(&v.capacity()) {
            let class = usize::from(v.capacity() >= POOL_LARGE);
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p[class].len() < POOL_KEEP {
                    p[class].push(v);
                }
            });
        }
        let Ok(empty) = EMPTY.try_with(Arc::clone) else { return };
        let a = std::mem::replace(&mut self.store, empty);
        let _ = SHELLS.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < POOL_KEEP * 2 {
                s.push(a);
            }
        });
    }
}

impl PacketBuf {
    /// An empty buffer with `headroom` bytes before the data and room for `capacity` bytes after.
    pub fn with_headroom(headroom: usize, capacity: usize) -> PacketBuf {
        let mut v = buffer(headroom + capacity);
        v.resize(headroom + capacity, 0);
        PacketBuf::from_store(v, headroom, headroom)
    }

    /// A packet of `store[head..tail]`, with nothing else set.
    fn from_store(store: Vec<u8>, head: usize, tail: usize) -> PacketBuf {
        PacketBuf {
            store: shell(store),
            head,
            tail,
            frags: Vec::new(),
            mac_header: None,
            network_header: None,
            transport_header: None,
            csum: Csum::None,
            gso: None,
            vlan: None,
            mark: 0,
            ct: None,
        }
    }

    /// A buffer holding `data` (a received frame), with the default headroom.
    pub fn from_slice(data: &[u8]) -> PacketBuf {
        // The bytes are copied in, not zeroed first (a 64 KiB super-packet from a TAP would be written
        // twice).
        let mut v = buffer(DEFAULT_HEADROOM + data.len());
        v.resize(DEFAULT_HEADROOM, 0);
        v.extend_from_slice(data);
        PacketBuf::from_store(v, DEFAULT_HEADROOM, DEFAULT_HEADROOM + data.len())
    }

    /// A received frame in a vector of its own (a driver's), taken over as it is: no copy, and no headroom
    /// (a header pushed in front, as a tunnel or a VLAN tag added on the way out would, copies the packet
    /// into a buffer that has some, as `make_writable` does for a shared one).
    pub fn from_vec(data: Vec<u8>) -> PacketBuf {
        PacketBuf::from_vec_at(data, 0)
    }

    /// A packet of `data[head..]`, taken over without a copy: what lies before `head` is its headroom.
    pub fn from_vec_at(data: Vec<u8>, head: usize) -> PacketBuf {
        let len = data.len();
        PacketBuf::from_store(data, head.min(len), len)
    }

    /// A frame read straight into a packet buffer, with the default headroom: no copy between. `read`
    /// appends the frame to the vector it is given (the headroom, with room for at least `room` bytes
    /// after it) and returns what it returns; the packet then holds what was appended. The buffer comes
    /// from the thread's pool when it is large, as `from_slice`'s does.
    pub fn read_with<T>(room: usize, read: impl FnOnce(&mut Vec<u8>) -> T) -> (PacketBuf, T) {
        let mut v = buffer(DEFAULT_HEADROOM + room);
        v.resize(DEFAULT_HEADROOM, 0);
        let r = read(&mut v);
        // A reader that cut into the headroom leaves an empty packet, not a short headroom.
        v.resize(v.len().max(DEFAULT_HEADROOM), 0);
        let tail = v.len();
        (PacketBuf::from_store(v, DEFAULT_HEADROOM, tail), r)
    }

    /// Linear bytes only.
    pub fn data(&self) -> &[u8] {
        &self.store[self.head..self.tail]
    }
    pub fn linear_len(&self) -> usize {
        self.tail - self.head
    }
    /// All bytes, fragments included.
    pub fn len(&self) -> usize {
        self.linear_len() + self.frags.iter().map(|f| f.len).sum::<usize>()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn headroom(&self) -> usize {
        self.head
    }
    pub fn tailroom(&self) -> usize {
        self.store.len() - self.tail
    }
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.store) > 1
    }

    /// Unshares the storage (copy on write), keeping at least `headroom` and `tailroom`.
    fn make_writable(&mut self, headroom: usize, tailroom: usize) {
        if !self.is_shared() && self.head >= headroom && self.tailroom() >= tailroom {
            return;
        }
        let new_head = headroom.max(self.head.min(DEFAULT_HEADROOM));
        let n = new_head + self.linear_len() + tailroom.max(self.tailroom());
        let mut v = buffer(n);
        v.resize(n, 0);
        v[new_head..new_head + self.linear_len()].copy_from_slice(self.data());
        let len = self.linear_len();
        self.store = shell(v);
        self.head = new_head;
        self.tail = new_head + len;
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.make_writable(0, 0);
        let (h, t) = (self.head, self.tail);
        &mut Arc::get_mut(&mut self.store).expect("unique after make_writable")[h..t]
    }

    /// Prepends `n` bytes (a header) and returns them. Header offsets move with the data start.
    pub fn push(&mut self, n: usize) -> &mut [u8] {
        self.make_writable(n, 0);
        self.head -= n;
        self.shift_offsets(n as isize);
        let h = self.head;
        &mut Arc::get_mut(&mut self.store).unwrap()[h..h + n]
    }

    /// Removes `n` bytes from the front (a parsed header); `None` if the linear part is shorter.
    pub fn pull(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.linear_len() {
            return None;
        }
        self.head += n;
        self.shift_offsets(-(n as isize));
        Some(&self.store[self.head - n..self.head])
    }

    /// Appends `n` bytes and returns them.
    pub fn put(&mut self, n: usize) -> &mut [u8] {
        assert!(self.frags.is_empty(), "put after paged fragments");
        self.make_writable(0, n);
        self.tail += n;
        let t = self.tail;
        &mut Arc::get_mut(&mut self.store).unwrap()[t - n..t]
    }

    /// Cuts the packet to `len` bytes (drops trailing padding).
    pub fn trim(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        if len <= self.linear_len() {
            self.tail = self.head + len;
            self.frags.clear();
            return;
        }
        let mut left = len - self.linear_len();
        let mut keep = 0;
        for f in &mut self.frags {
            if left == 0 {
                break;
            }
            f.len = f.len.min(left);
            left -= f.len;
            keep += 1;
        }
        self.frags.truncate(keep);
    }

    fn shift_offsets(&mut self, by: isize) {
        for o in [&mut self.mac_header, &mut self.network_header, &mut self.transport_header] {
            *o = o.and_then(|v| (v as isize + by >= 0).then(|| (v as isize + by) as usize));
        }
    }

    /// Appends a shared fragment (zero-copy for large sends).
    pub fn add_frag(&mut self, data: Arc<[u8]>, off: usize, len: usize) {
        assert!(off + len <= data.len());
        self.frags.push(Frag { data, off, len });
    }

    /// All bytes in one contiguous vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(self.data());
        for f in &self.frags {
            v.extend_from_slice(f.bytes());
        }
        v
    }

    /// Folds the fragments into the linear part.
    pub fn linearize(&mut self) {
        if self.frags.is_empty() {
            return;
        }
        let extra: usize = self.frags.iter().map(|f| f.len).sum();
        let frags = std::mem::take(&mut self.frags);
        let mut at = self.linear_len();
        self.put(extra);
        let h = self.head;
        let buf = &mut Arc::get_mut(&mut self.store).unwrap()[h..];
        for f in frags {
            buf[at..at + f.len].copy_from_slice(f.bytes());
            at += f.len;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn large_buffers_are_reused_and_never_while_shared() {
        let p = PacketBuf::from_slice(&[1u8; 65536]);
        let at = p.data().as_ptr();
        drop(p);
        let q = PacketBuf::from_slice(&[2u8; 60000]);
        assert_eq!(q.data().as_ptr(), at, "the dropped buffer carries the next packet");
        assert!(q.data().iter().all(|&b| b == 2) && q.len() == 60000);
        // A clone keeps the buffer: dropping the original gives nothing back.
        let c = q.clone();
        drop(q);
        let r = PacketBuf::from_slice(&[3u8; 60000]);
        assert_ne!(r.data().as_ptr(), at);
        assert!(c.data().iter().all(|&b| b == 2), "the clone's bytes are intact");
        // Headroom for a header, whatever the buffer held before.
        let mut h = PacketBuf::with_headroom(64, 5000);
        assert!(h.push(14).iter().all(|&b| b == 0));
    }

    #[test]
    fn push_pull_put_trim() {
        let mut p = PacketBuf::with_headroom(64, 100);
        p.put(5).copy_from_slice(b"hello");
        p.network_header = Some(0);
        p.push(3).copy_from_slice(b"HDR");
        assert_eq!(p.data(), b"HDRhello");
        assert_eq!(p.network_header, Some(3), "offsets move with the data start");
        assert_eq!(p.headroom(), 61);
        assert_eq!(p.pull(3).unwrap(), b"HDR");
        assert_eq!(p.network_header, Some(0));
        assert!(p.pull(10).is_none());
        p.trim(2);
        assert_eq!(p.data(), b"he");
    }

    #[test]
    fn clones_share_until_written() {
        let mut a = PacketBuf::from_slice(b"payload");
        let b = a.clone();
        assert!(a.is_shared());
        a.push(2).copy_from_slice(b"xx");
        assert_eq!(a.data(), b"xxpayload");
        assert_eq!(b.data(), b"payload", "the clone is untouched");
        assert!(!b.is_shared());
    }

    #[test]
    fn headroom_grows_when_needed() {
        let mut p = PacketBuf::with_headroom(2, 4);
        p.put(4).copy_from_slice(b"data");
        p.push(20).fill(1);
        assert_eq!(p.len(), 24);
        assert_eq!(&p.data()[20..], b"data");
    }

    #[test]
    fn fragments() {
        let big: Arc<[u8]> = (0..100u8).collect::<Vec<_>>().into();
        let mut p = PacketBuf::from_slice(b"hdr");
        p.add_frag(big.clone(), 10, 20);
        p.add_frag(big, 50, 5);
        assert_eq!(p.len(), 28);
        let v = p.to_vec();
        assert_eq!(&v[3..5], &[10, 11]);
        p.trim(10);
        assert_eq!(p.len(), 10);
        p.linearize();
        assert_eq!(p.data(), &[b'h', b'd', b'r', 10, 11, 12, 13, 14, 15, 16]);
        assert!(p.frags.is_empty());
    }
}
