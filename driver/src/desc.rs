//! Descriptor layouts as this driver writes and reads them (its own definitions, apart from the device
//! emulator's): a transmit descriptor in any of its three forms, and the extended receive descriptor in its
//! read and write-back forms. Stored into DMA memory whole (`DmaRegion::write_obj`); the receive write-back
//! is read field by field, status first, as `E1000e::clean_rx` must.

/// A transmit descriptor (16 bytes): legacy, context (DEXT, DTYP 0) or data (DEXT, DTYP 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDesc {
    /// Buffer address (data), or the IP and TCP/UDP checksum offsets (context).
    pub addr: u64,
    /// Length, DTYP and command bits (data); PAYLEN, DTYP and TUCMD (context).
    pub lower: u32,
    /// Status (DD), POPTS and VLAN (data); HDRLEN and MSS (context).
    pub upper: u32,
}

impl TxDesc {
    /// Byte offset of the status field, where the card writes DD back.
    pub const STATUS_AT: usize = std::mem::offset_of!(TxDesc, upper);
    /// Byte offset of the command word (length, DTYP and command bits).
    pub const LOWER_AT: usize = std::mem::offset_of!(TxDesc, lower);
}

/// Extended receive descriptor, read format: the buffer, and a zeroed upper half the card overwrites.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRead {
    pub buffer: u64,
    pub zero: u64,
}

/// Extended receive descriptor, write-back format.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxWb {
    pub mrq: u32,
    pub rss: u32,
    /// Status (DD, EOP, checksum bits) and errors.
    pub staterr: u32,
    pub length: u16,
    pub vlan: u16,
}

impl RxWb {
    pub const STATERR_AT: usize = std::mem::offset_of!(RxWb, staterr);
    pub const LENGTH_AT: usize = std::mem::offset_of!(RxWb, length);
    pub const VLAN_AT: usize = std::mem::offset_of!(RxWb, vlan);
    pub const RSS_AT: usize = std::mem::offset_of!(RxWb, rss);
}

const _: () = {
    assert!(std::mem::size_of::<TxDesc>() == 16 && TxDesc::STATUS_AT == 12);
    assert!(std::mem::size_of::<RxRead>() == 16);
    assert!(std::mem::size_of::<RxWb>() == 16 && RxWb::STATERR_AT == 8 && RxWb::LENGTH_AT == 12 && RxWb::VLAN_AT == 14);
};
