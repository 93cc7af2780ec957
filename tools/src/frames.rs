//! Test frames: Ethernet, ethertype 0x88B5 (local experimental), a kind byte, a sequence number, and a
//! payload pattern derived from the sequence number so corruption is detected.

use driver::RxPacket;

pub const ETHERTYPE: u16 = 0x88B5;
pub const KIND_LOOP: u8 = 1;
pub const KIND_REQUEST: u8 = 2;
pub const KIND_REPLY: u8 = 3;
/// Ethernet header, kind, sequence number.
pub const HDR: usize = 14 + 1 + 8;
pub const MIN_FRAME: usize = 60;

/// A fixed pseudo-random pattern; each frame's payload is a window into it chosen by its sequence number,
/// so building and checking a frame are memory copies and compares.
fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..PATTERN_LEN + 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}
const PATTERN_LEN: usize = 65536 + 64;

fn window(seq: u64, len: usize) -> &'static [u8] {
    let start = (seq.wrapping_mul(2654435761) % 4096) as usize;
    &pattern()[start..start + len]
}

pub fn build(dst: [u8; 6], src: [u8; 6], kind: u8, seq: u64, size: usize) -> Vec<u8> {
    build_into(Vec::with_capacity(size.max(HDR)), dst, src, kind, seq, size)
}

/// `build` into a buffer that is reused (its contents are replaced).
pub fn build_into(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6], kind: u8, seq: u64, size: usize) -> Vec<u8> {
    f.clear();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&seq.to_be_bytes());
    if size > HDR {
        f.extend_from_slice(window(seq, size - HDR));
    }
    f
}

pub fn kind(f: &[u8]) -> Option<u8> {
    (f.len() >= HDR && u16::from_be_bytes([f[12], f[13]]) == ETHERTYPE).then_some(f[14])
}

pub fn seq(f: &[u8]) -> u64 {
    u64::from_be_bytes(f[15..23].try_into().unwrap())
}

/// Whether the payload after the header matches the pattern for its sequence number (trailing padding
/// added on the wire is allowed).
/// Whether the payload after the header matches the pattern for its sequence number (the first `size`
/// bytes; padding added on the wire after them is allowed).
pub fn intact(f: &[u8], size: usize) -> bool {
    let n = size.min(f.len());
    n < HDR || f[HDR..n] == *window(seq(f), n - HDR)
}

#[derive(Default)]
pub struct SeqCheck {
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub bytes: u64,
    next: u64,
    seen_max: Option<u64>,
    size: Option<usize>,
}

impl SeqCheck {
    pub fn see(&mut self, p: &RxPacket) {
        let f = &p.data;
        if kind(f).is_none() {
            return;
        }
        let s = seq(f);
        let size = *self.size.get_or_insert(f.len());
        if !intact(f, size.min(f.len())) {
            self.corrupt += 1;
        }
        self.bytes += f.len() as u64;
        match self.seen_max {
            Some(m) if s <= m => {
                if s == m || s < self.next {
                    log::warn!("sequence {s} again (highest seen {m})");
                    self.duplicates += 1;
                } else {
                    self.reordered += 1;
                }
                return;
            }
            _ => {}
        }
        if s != self.next {
            self.reordered += 1;
            log::warn!("sequence {s} arrived when {} was expected", self.next);
        }
        self.seen_max = Some(s);
        self.next = s + 1;
        self.received += 1;
    }
}
