//! Checked byte access for guest-supplied frames, descriptors and register data: a read past the end is
//! `None`, a write past the end does nothing and says so. Nothing here panics.

use std::ops::Range;

/// The bytes in `r`, if all of them are there.
#[inline]
pub fn sub(b: &[u8], r: Range<usize>) -> Option<&[u8]> {
    b.get(r)
}

/// `N` bytes at `off`.
#[inline]
pub fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

#[inline]
pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

#[inline]
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_be_bytes)
}

#[inline]
pub fn be32(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_be_bytes)
}

#[inline]
pub fn le16(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

#[inline]
pub fn le32(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

#[inline]
pub fn le64(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// Copies `src` into `b` at `off`; `false` (and nothing written) if it does not fit.
#[inline]
pub fn put(b: &mut [u8], off: usize, src: &[u8]) -> bool {
    match off.checked_add(src.len()).and_then(|end| b.get_mut(off..end)) {
        Some(d) => {
            d.copy_from_slice(src);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn out_of_range_is_none_not_a_panic() {
        let b = [1u8, 2, 3, 4];
        assert_eq!(be16(&b, 2), Some(0x0304));
        assert_eq!(be16(&b, 3), None);
        assert_eq!(le32(&b, usize::MAX), None);
        let mut m = [0u8; 4];
        assert!(put(&mut m, 2, &[9, 9]));
        assert!(!put(&mut m, 3, &[9, 9]));
        assert!(!put(&mut m, usize::MAX, &[9]));
        assert_eq!(m, [0, 0, 9, 9]);
    }
}
