//! Descriptor layouts as the 82574L datasheet defines them, read and written whole from guest memory
//! (`DmaSpace::read_obj` / `write_obj`). These are the device's definitions; the driver has its own.

use vm_memory::endian::{Le16, Le32, Le64};
use vm_memory::ByteValued;

/// A transmit descriptor (16 bytes): legacy, or by DEXT and DTYP a context or a data descriptor. The
/// fields are the datasheet's dwords; `tx.rs` takes them apart by descriptor type.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct TxDesc {
    pub addr: Le64,
    pub lower: Le32,
    pub upper: Le32,
}

/// Offset of the status byte (DD) in a transmit descriptor, where write-back puts it.
pub const TX_STATUS_AT: u64 = 12;

/// A receive descriptor in legacy format: the read format is just `addr`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RxLegacy {
    pub addr: Le64,
    pub length: Le16,
    pub csum: Le16,
    pub status: u8,
    pub errors: u8,
    pub special: Le16,
}

/// Extended receive write-back (16 bytes); its read format is one buffer address.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RxExtWb {
    /// RSS type (7:0) and queue (15:8) under MRQ.
    pub mrq: Le32,
    /// The RSS hash with RXCSUM.PCSD, else IP identification (15:0) and packet checksum (31:16).
    pub rss_or_ipid: Le32,
    /// Extended status (19:0) and errors (31:20).
    pub staterr: Le32,
    pub length: Le16,
    pub vlan: Le16,
}

/// Packet-split receive write-back (32 bytes); its read format is four buffer addresses. The first 16
/// bytes are the extended write-back, with `length` the bytes in the header buffer.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RxPsWb {
    pub ext: RxExtWb,
    /// HDRSP (15) and the header length (9:0).
    pub header_status: Le16,
    /// Bytes in data buffers 1-3.
    pub length: [Le16; 3],
    pub reserved: Le64,
}

/// Packet-split read format: the header buffer and three data buffers.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RxPsRead {
    pub addr: [Le64; 4],
}

// SAFETY: each is a #[repr(C)] struct of little-endian integer fields (and arrays of them) laid out without
// padding (sizes checked below), so every byte pattern is a valid value and reading one from guest memory
// cannot produce an invalid value.
unsafe impl ByteValued for TxDesc {}
// SAFETY: as above.
unsafe impl ByteValued for RxLegacy {}
// SAFETY: as above.
unsafe impl ByteValued for RxExtWb {}
// SAFETY: as above.
unsafe impl ByteValued for RxPsWb {}
// SAFETY: as above.
unsafe impl ByteValued for RxPsRead {}

const _: () = {
    assert!(std::mem::size_of::<TxDesc>() == 16);
    assert!(std::mem::size_of::<RxLegacy>() == 16);
    assert!(std::mem::size_of::<RxExtWb>() == 16);
    assert!(std::mem::size_of::<RxPsWb>() == 32);
    assert!(std::mem::size_of::<RxPsRead>() == 32);
    assert!(std::mem::offset_of!(RxLegacy, status) == 12);
    assert!(std::mem::offset_of!(RxExtWb, staterr) == 8);
    assert!(std::mem::offset_of!(RxPsWb, header_status) == 16);
};

/// A write-back's bytes and where its status (with DD) sits in them: what must land last.
pub fn status_range(legacy: bool) -> std::ops::Range<usize> {
    if legacy {
        let at = std::mem::offset_of!(RxLegacy, status);
        at..at + 1
    } else {
        // Extended and packet-split write-backs both keep status/errors in the third dword.
        let at = std::mem::offset_of!(RxExtWb, staterr);
        at..at + 4
    }
}
