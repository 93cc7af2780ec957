//! Guest memory as the device sees it: the client's DMA_MAP regions, mmapped with vm-memory. Every access is
//! checked against the maps; nothing outside them is ever touched.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use thiserror::Error;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DmaError {
    #[error("DMA {len} bytes at {addr:#x} is outside the mapped guest memory")]
    Unmapped { addr: u64, len: usize },
    #[error("DMA write to read-only mapping at {0:#x}")]
    ReadOnly(u64),
}

#[derive(Debug, Error)]
pub enum MapError {
    #[error("mapping overlaps an existing one")]
    Overlap,
    #[error("file is smaller than offset + size")]
    FileTooSmall,
    #[error("mmap: {0}")]
    Mmap(String),
    #[error("no mapping covers exactly that range")]
    NoSuchMapping,
    #[error("the fd cannot be held at its size: {0}")]
    Unsealable(String),
    #[error("too many DMA maps (limit {0})")]
    TooMany(usize),
}

/// Most DMA maps one client may hold (with fds and without). QEMU maps a handful of RAM sections; a client
/// that sends thousands is refused rather than growing the device's memory without bound.
pub const MAX_DMA_MAPS: usize = vfio_user::MAX_DMA_MAPS;

/// Makes sure the file behind `fd` can never shrink while the device has it mapped.
///
/// A `MAP_SHARED` mapping of a file that is later truncated raises SIGBUS on the next access to the lost
/// pages, and that access is a descriptor fetch or a buffer copy on the data path: a client could kill the
/// device at will. Instead of catching the signal (a process-wide handler unwinding out of a memcpy, which
/// Rust cannot do soundly) or copying through `pread`/`pwrite` on every access, the device requires the
/// memfd seal `F_SEAL_SHRINK`, the mechanism the kernel offers for exactly this contract between processes
/// sharing memory: QEMU's `memory-backend-memfd` sets it by default (`seal=on`); for a memfd that allows
/// sealing but is not sealed yet the device adds the seal itself; anything that cannot be sealed (a plain
/// file, a device node, a memfd created without `MFD_ALLOW_SEALING`, or one sealed with `F_SEAL_SEAL` but
/// without `F_SEAL_SHRINK`) is refused at DMA_MAP time with this error. Growing the file stays allowed: it
/// cannot fault the pages the device mapped.
pub fn hold_size(fd: &impl AsRawFd) -> Result<(), MapError> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl(F_GET_SEALS) on an fd we own; only reads the file's seal set.
    let seals = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(MapError::Unsealable(format!(
            "not a sealable memfd ({}); pass guest memory as a memfd, e.g. QEMU's memory-backend-memfd",
            std::io::Error::last_os_error()
        )));
    }
    if seals & libc::F_SEAL_SHRINK != 0 {
        return Ok(());
    }
    // SAFETY: fcntl(F_ADD_SEALS) on an fd we own; adds a seal, touches no memory of ours.
    let r = unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
    if r < 0 {
        return Err(MapError::Unsealable(format!("F_SEAL_SHRINK could not be added ({})", std::io::Error::last_os_error())));
    }
    Ok(())
}

#[derive(Clone)]
struct Map {
    iova: u64,
    size: u64,
    writable: bool,
    region: Arc<GuestRegionMmap>,
}

/// The DMA-mapped guest memory.
#[derive(Default, Clone)]
pub struct DmaSpace {
    maps: Vec<Map>,
    mem: Option<GuestMemoryMmap>,
    /// Sections mapped without an fd: known, but not reachable by DMA.
    unreachable: Vec<(u64, u64)>,
    /// Every map is writable (the usual case): writes skip the per-map check.
    all_writable: bool,
}

impl DmaSpace {
    pub fn new() -> DmaSpace {
        DmaSpace::default()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.maps.iter().map(|m| m.size).sum()
    }

    fn rebuild(&mut self) -> Result<(), MapError> {
        self.all_writable = self.maps.iter().all(|m| m.writable);
        if self.maps.is_empty() {
            self.mem = None;
            return Ok(());
        }
        self.maps.sort_by_key(|m| m.iova);
        let regions: Vec<Arc<GuestRegionMmap>> = self.maps.iter().map(|m| m.region.clone()).collect();
        self.mem = Some(GuestMemoryMmap::from_arc_regions(regions).map_err(|e| MapError::Mmap(e.to_string()))?);
        Ok(())
    }

    /// Adds a mapping of `size` bytes of `fd` from `offset`, seen by the device at `iova`.
    pub fn map(&mut self, iova: u64, size: u64, fd: OwnedFd, offset: u64, writable: bool) -> Result<(), MapError> {
        let end = iova.checked_add(size).ok_or(MapError::Overlap)?;
        if size == 0 {
            return Err(MapError::FileTooSmall);
        }
        if self.maps.len() + self.unreachable.len() >= MAX_DMA_MAPS {
            return Err(MapError::TooMany(MAX_DMA_MAPS));
        }
        if self.maps.iter().any(|m| iova < m.iova.wrapping_add(m.size) && m.iova < end) {
            return Err(MapError::Overlap);
        }
        // Sealed first, measured second: once it cannot shrink, the size read below stays true.
        hold_size(&fd)?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| MapError::Mmap(e.to_string()))?;
        // A mapping beyond the end of the file would fault on access (SIGBUS): refuse it.
        if !meta.is_file() || offset.checked_add(size).is_none_or(|e| e > meta.len()) {
            return Err(MapError::FileTooSmall);
        }
        let size_us = usize::try_from(size).map_err(|_| MapError::FileTooSmall)?;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let region = MmapRegion::build(Some(FileOffset::new(file, offset)), size_us, prot, libc::MAP_SHARED)
            .map_err(|e| MapError::Mmap(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(iova)).map_err(|e| MapError::Mmap(e.to_string()))?;
        self.maps.push(Map { iova, size, writable, region: Arc::new(region) });
        if let Err(e) = self.rebuild() {
            self.maps.retain(|m| m.iova != iova);
            self.rebuild()?;
            return Err(e);
        }
        Ok(())
    }

    /// Removes every mapping inside `[iova, iova + size)`. A mapping cut in part is refused.
    pub fn unmap(&mut self, iova: u64, size: u64) -> Result<usize, MapError> {
        let end = iova.saturating_add(size);
        let cut = |a: u64, s: u64| {
            let me = a.saturating_add(s);
            a < end && iova < me && (a < iova || me > end)
        };
        if self.maps.iter().any(|m| cut(m.iova, m.size)) || self.unreachable.iter().any(|&(a, s)| cut(a, s)) {
            return Err(MapError::NoSuchMapping);
        }
        let before = self.maps.len() + self.unreachable.len();
        let inside = |a: u64, s: u64| a >= iova && a.saturating_add(s) <= end;
        self.maps.retain(|m| !inside(m.iova, m.size));
        self.unreachable.retain(|&(a, s)| !inside(a, s));
        let removed = before - self.maps.len() - self.unreachable.len();
        if removed == 0 {
            // Unmapping what was never mapped is the client's error, as the kernel's VFIO treats it.
            return Err(MapError::NoSuchMapping);
        }
        self.rebuild()?;
        Ok(removed)
    }

    /// Records a section mapped without an fd: known to the device, never reachable by DMA.
    pub fn map_unreachable(&mut self, iova: u64, size: u64) -> Result<(), MapError> {
        let end = iova.checked_add(size).ok_or(MapError::Overlap)?;
        if self.maps.len() + self.unreachable.len() >= MAX_DMA_MAPS {
            return Err(MapError::TooMany(MAX_DMA_MAPS));
        }
        let overlaps = |a: u64, s: u64| iova < a.wrapping_add(s) && a < end;
        if self.maps.iter().any(|m| overlaps(m.iova, m.size)) || self.unreachable.iter().any(|&(a, s)| overlaps(a, s)) {
            return Err(MapError::Overlap);
        }
        self.unreachable.push((iova, size));
        Ok(())
    }

    pub fn unmap_all(&mut self) {
        self.maps.clear();
        self.unreachable.clear();
        self.mem = None;
        self.all_writable = true;
    }

    /// Whether all `len` bytes at `addr` are mapped.
    pub fn is_mapped(&self, addr: u64, len: usize) -> bool {
        self.mem.as_ref().is_some_and(|m| m.check_range(GuestAddress(addr), len))
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let err = DmaError::Unmapped { addr, len: buf.len() };
        if buf.is_empty() {
            return Ok(());
        }
        let mem = self.mem.as_ref().ok_or(err.clone())?;
        mem.read_slice(buf, GuestAddress(addr)).map_err(|_| err)
    }

    /// Appends `len` bytes of guest memory at `addr` to `out`, copied straight into its spare room (no
    /// zeroing first, which costs as much as the copy for a full-sized frame). Nothing is appended on error.
    pub fn read_append(&self, addr: u64, len: usize, out: &mut Vec<u8>) -> Result<(), DmaError> {
        if len == 0 {
            return Ok(());
        }
        let err = DmaError::Unmapped { addr, len };
        let mem = self.mem.as_ref().ok_or(err.clone())?;
        let Ok(src) = mem.get_slice(GuestAddress(addr), len) else {
            // Unmapped, or across two regions: the checked path, which tells the two apart.
            let at = out.len();
            out.resize(at + len, 0);
            let r = self.read(addr, out.get_mut(at..).unwrap_or_default());
            if r.is_err() {
                out.truncate(at);
            }
            return r;
        };
        out.reserve(len);
        let at = out.len();
        let guard = src.ptr_guard();
        // SAFETY: `get_slice` checked that `len` bytes from `guard.as_ptr()` lie inside one mapped region,
        // which `self.mem` keeps mapped while `src` lives; `reserve` left at least `len` bytes of spare
        // capacity after `at`; the two ranges cannot overlap (one is this process's heap, the other a
        // shared mapping). The guest may write those bytes meanwhile, as it may during any DMA: the copy
        // then holds some mix of old and new bytes, and every bit pattern is a valid u8, so `set_len` only
        // covers initialised bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(guard.as_ptr(), out.as_mut_ptr().add(at), len);
            out.set_len(at + len);
        }
        Ok(())
    }

    /// A descriptor (or any plain value) read whole from guest memory.
    pub fn read_obj<T: vm_memory::ByteValued + Default>(&self, addr: u64) -> Result<T, DmaError> {
        let mut v = T::default();
        self.read(addr, v.as_mut_slice())?;
        Ok(v)
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaError> {
        let err = DmaError::Unmapped { addr, len: buf.len() };
        if buf.is_empty() {
            return Ok(());
        }
        self.check_writable(addr, buf.len())?;
        let mem = self.mem.as_ref().ok_or(err.clone())?;
        mem.write_slice(buf, GuestAddress(addr)).map_err(|_| err)
    }

    /// Every map `len` bytes at `addr` touch must be writable.
    fn check_writable(&self, addr: u64, len: usize) -> Result<(), DmaError> {
        if self.all_writable {
            return Ok(());
        }
        let end = addr.checked_add(len as u64).ok_or(DmaError::Unmapped { addr, len })?;
        for m in &self.maps {
            if addr < m.iova.wrapping_add(m.size) && m.iova < end && !m.writable {
                return Err(DmaError::ReadOnly(addr));
            }
        }
        Ok(())
    }

    /// A descriptor write-back: `bytes` written at `addr`, the bytes in `status` (those holding DD) last
    /// (`in_status_order`). One lookup for the three copies when the descriptor lies in one map (as it does
    /// unless it straddles two).
    pub fn write_desc(&self, addr: u64, bytes: &[u8], status: std::ops::Range<usize>) -> Result<(), DmaError> {
        let err = DmaError::Unmapped { addr, len: bytes.len() };
        self.check_writable(addr, bytes.len())?;
        let mem = self.mem.as_ref().ok_or(err.clone())?;
        match mem.get_slice(GuestAddress(addr), bytes.len()) {
            Ok(dst) => in_status_order(bytes, status, err.clone(), |at, part, _| {
                dst.subslice(at, part.len()).map(|d| d.copy_from(part)).map_err(|_| err.clone())
            }),
            // Across two maps: each part on its own, once the whole range is known to be mapped.
            Err(_) if mem.check_range(GuestAddress(addr), bytes.len()) => {
                in_status_order(bytes, status, err, |at, part, _| self.write(addr.wrapping_add(at as u64), part))
            }
            Err(_) => Err(err),
        }
    }
}

/// Writes a descriptor write-back's `bytes` in three parts through `write(offset, part, is_status)`: the
/// bytes before `status`, those after it, then, behind a release fence, the `status` bytes (those holding
/// DD), so that a driver that sees DD sees the whole write-back. A single copy could land in any order.
/// `bad` when `status` does not lie within `bytes`.
pub fn in_status_order<E>(
    bytes: &[u8],
    status: std::ops::Range<usize>,
    bad: E,
    mut write: impl FnMut(usize, &[u8], bool) -> Result<(), E>,
) -> Result<(), E> {
    let (Some(head), Some(st), Some(tail)) = (bytes.get(..status.start), bytes.get(status.clone()), bytes.get(status.end..)) else {
        return Err(bad);
    };
    write(0, head, false)?;
    write(status.end, tail, false)?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    write(status.start, st, true)
}

/// Test support: guest memory backed by a memfd, as QEMU's `memory-backend-memfd` provides it. Not part of
/// the production build: tests, benches and fuzz targets enable the `testing` feature.
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::expect_used)] // test support: a failure to set up test memory is the test's failure
pub mod testing {
    use super::*;
    use std::os::fd::FromRawFd;

    pub fn memfd(size: u64) -> OwnedFd {
        let name = c"nic-test-mem";
        // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let f = File::from(fd);
        f.set_len(size).expect("ftruncate memfd");
        f.into()
    }

    /// A DMA space with one writable map of `size` bytes at `iova`.
    pub fn space(iova: u64, size: u64) -> DmaSpace {
        let mut d = DmaSpace::new();
        d.map(iova, size, memfd(size), 0, true).expect("map");
        d
    }
}

#[cfg(test)]
mod test {
    use super::testing::*;
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let d = space(0x10000, 0x4000);
        d.write(0x10000, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        d.read(0x10000, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert!(d.read(0xFFFF, &mut b).is_err());
        assert!(d.read(0x13FFE, &mut b).is_err(), "straddles the end");
        assert!(d.write(u64::MAX - 1, &b).is_err());
        assert!(d.read(0, &mut []).is_ok());
    }

    #[test]
    fn overlap_and_small_files_are_refused_and_unmap_works() {
        let mut d = space(0x10000, 0x4000);
        assert!(matches!(d.map(0x12000, 0x4000, memfd(0x4000), 0, true), Err(MapError::Overlap)));
        assert!(matches!(d.map(0x20000, 0x4000, memfd(0x1000), 0, true), Err(MapError::FileTooSmall)));
        assert!(matches!(d.map(0x20000, 0x1000, memfd(0x1000), 0x1000, true), Err(MapError::FileTooSmall)));
        d.map(0x14000, 0x1000, memfd(0x1000), 0, true).unwrap();
        // Maps arrive in any order (QEMU maps high RAM before some low ROM sections).
        d.map(0x1000, 0x1000, memfd(0x1000), 0, true).unwrap();
        d.write(0x1000, &[1]).unwrap();
        // Contiguous maps read across the seam.
        let mut b = [0u8; 16];
        d.read(0x13FF8, &mut b).unwrap();
        assert!(matches!(d.unmap(0x11000, 0x1000), Err(MapError::NoSuchMapping)));
        assert_eq!(d.unmap(0x14000, 0x1000).unwrap(), 1);
        assert!(d.read(0x14000, &mut b).is_err());
        d.unmap_all();
        assert!(d.read(0x10000, &mut b).is_err());
    }

    #[test]
    fn read_append_copies_within_and_across_maps_and_appends_nothing_on_error() {
        let mut d = space(0x10000, 0x1000);
        d.map(0x11000, 0x1000, memfd(0x1000), 0, true).unwrap();
        let pattern: Vec<u8> = (0..64u8).collect();
        d.write(0x10FE0, &pattern).unwrap(); // 32 bytes in each map
        let mut out = vec![0xAA];
        d.read_append(0x10FE0, 16, &mut out).unwrap(); // inside the first map
        d.read_append(0x10FF0, 48, &mut out).unwrap(); // across the seam
        assert_eq!(out[0], 0xAA);
        assert_eq!(&out[1..], &pattern[..]);
        assert_eq!(d.read_append(0x11FF0, 32, &mut out), Err(DmaError::Unmapped { addr: 0x11FF0, len: 32 }));
        assert_eq!(d.read_append(0x30000, 1, &mut out), Err(DmaError::Unmapped { addr: 0x30000, len: 1 }));
        assert_eq!(out.len(), 65, "nothing appended on error");
        d.read_append(0x30000, 0, &mut out).unwrap();
        assert_eq!(out.len(), 65);
    }

    #[test]
    fn descriptor_write_backs_land_whole_within_and_across_maps_and_respect_read_only_maps() {
        let mut d = space(0x10000, 0x1000);
        d.map(0x11000, 0x1000, memfd(0x1000), 0, true).unwrap();
        let wb: Vec<u8> = (1..=16u8).collect();
        for at in [0x10100, 0x10FF8] {
            // Inside the first map, and across the seam of the two.
            d.write_desc(at, &wb, 8..12).unwrap();
            let mut back = [0u8; 16];
            d.read(at, &mut back).unwrap();
            assert_eq!(&back[..], &wb[..], "at {at:#x}");
        }
        // The status range at either end.
        d.write_desc(0x10200, &wb, 0..1).unwrap();
        d.write_desc(0x10300, &wb, 12..16).unwrap();
        let mut back = [0u8; 16];
        d.read(0x10300, &mut back).unwrap();
        assert_eq!(&back[..], &wb[..]);
        assert_eq!(d.write_desc(0x11FF8, &wb, 8..12), Err(DmaError::Unmapped { addr: 0x11FF8, len: 16 }));
        assert!(d.write_desc(0x10100, &wb, 12..20).is_err(), "a status range beyond the bytes");
        d.map(0x20000, 0x1000, memfd(0x1000), 0, false).unwrap();
        assert_eq!(d.write_desc(0x20000, &wb, 8..12), Err(DmaError::ReadOnly(0x20000)));
        d.read(0x20000, &mut back).unwrap();
        assert_eq!(back, [0u8; 16], "nothing written to a read-only map");
    }

    #[test]
    fn read_only_maps_refuse_writes() {
        let mut d = DmaSpace::new();
        d.map(0, 0x1000, memfd(0x1000), 0, false).unwrap();
        let mut b = [0u8; 4];
        d.read(0, &mut b).unwrap();
        assert_eq!(d.write(0, &b), Err(DmaError::ReadOnly(0)));
    }
}
