//! DMA memory: a memfd mapped into this process, shared with the device (vfio-user passes the fd; kernel
//! VFIO pins the pages). The device may write it at any time, so it is only touched through raw pointers
//! with volatile loads and stores, bounds-checked here. This is the driver's one home for that `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

pub struct DmaRegion {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
    /// The device's address of byte 0, set when the region is mapped for DMA.
    pub iova: u64,
}

// SAFETY: the region is plain memory; access goes through &self/&mut self methods with volatile operations.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// A zeroed region of `len` bytes (rounded up to pages).
    pub fn new(len: usize) -> io::Result<DmaRegion> {
        let len = len.div_ceil(4096) * 4096;
        // SAFETY: memfd_create with a valid name; result checked.
        let raw = unsafe { libc::memfd_create(c"nic-driver-dma".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // The device maps this memory for DMA and refuses memory that could shrink under it; seal the size
        // as QEMU's memory-backend-memfd does.
        // SAFETY: fcntl(F_ADD_SEALS) on our own fd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: mapping our own fd, shared, whole length; result checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(DmaRegion { ptr: ptr.cast(), len, fd, iova: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, off: usize, n: usize) {
        assert!(off.checked_add(n).is_some_and(|e| e <= self.len), "DMA access {off:#x}+{n} outside region of {:#x}", self.len);
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        // SAFETY: in bounds (checked), aligned by the callers' layouts; volatile because the device writes it.
        unsafe { std::ptr::read_volatile(self.ptr.add(off) as *const u32) }
    }
    pub fn read_u16(&self, off: usize) -> u16 {
        self.check(off, 2);
        // SAFETY: as read_u32.
        unsafe { std::ptr::read_volatile(self.ptr.add(off) as *const u16) }
    }
    pub fn read_u8(&self, off: usize) -> u8 {
        self.check(off, 1);
        // SAFETY: as read_u32.
        unsafe { std::ptr::read_volatile(self.ptr.add(off)) }
    }
    pub fn write_u64(&self, off: usize, v: u64) {
        self.check(off, 8);
        // SAFETY: in bounds; the device reads it only after a doorbell.
        unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut u64, v) }
    }
    pub fn write_u32(&self, off: usize, v: u32) {
        self.check(off, 4);
        // SAFETY: as write_u64.
        unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut u32, v) }
    }
    /// Stores a descriptor whole (`T` is one of `desc`'s plain layouts: `ByteValued`, so it has no padding
    /// and every byte of it is defined). Little-endian host assumed, as everywhere in this driver (x86-64).
    pub fn write_obj<T: vm_memory::ByteValued>(&self, off: usize, v: T) {
        self.check(off, std::mem::size_of::<T>());
        assert!((self.ptr as usize + off).is_multiple_of(std::mem::align_of::<T>()), "unaligned descriptor at {off:#x}");
        // SAFETY: in bounds and aligned (checked); the device reads it only after a doorbell.
        unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut T, v) }
    }

    /// Copies out of the region, after the status read that made the bytes ours (acquire).
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        fence(Ordering::Acquire);
        // SAFETY: in bounds; raw-pointer copy, no reference to shared memory is formed.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) }
    }
    /// Appends `n` bytes of the region to `out`, copied straight into its spare room (no zeroing first, which
    /// would cost as much as the copy), after the status read that made them ours (acquire).
    pub fn read_append(&self, off: usize, n: usize, out: &mut Vec<u8>) {
        self.check(off, n);
        fence(Ordering::Acquire);
        out.reserve(n);
        let at = out.len();
        // SAFETY: the source is in bounds (checked); `reserve` left at least `n` bytes of spare room after
        // `at`; the heap buffer and the shared mapping cannot overlap. Every bit pattern is a valid u8, so
        // the bytes `set_len` covers are initialised, whatever the device wrote meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr().add(at), n);
            out.set_len(at + n);
        }
    }
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        // SAFETY: in bounds; raw-pointer copy.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) }
    }
    /// Orders descriptor and buffer stores before a doorbell.
    pub fn publish(&self) {
        fence(Ordering::Release);
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn region_roundtrip_and_bounds() {
        let r = DmaRegion::new(100).unwrap();
        assert_eq!(r.len(), 4096);
        r.write_u32(8, 0xAABBCCDD);
        assert_eq!(r.read_u32(8), 0xAABBCCDD);
        assert_eq!(r.read_u16(8), 0xCCDD);
        r.write_bytes(100, b"hello");
        let mut b = [0u8; 5];
        r.read_bytes(100, &mut b);
        assert_eq!(&b, b"hello");
        assert!(std::panic::catch_unwind(|| r.read_u32(4094)).is_err());
    }
}
