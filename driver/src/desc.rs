//! Descriptor layouts as this driver writes and reads them (its own definitions, apart from the device
//! emulator's): the transmit context and data descriptors, and the extended receive descriptor in its
//! read and write-back forms, with their command and status bits. Stored into DMA memory whole (`DmaRegion::write_obj`); the receive write-back
//! is read field by field, status first, as `E1000e::clean_rx` must.

/// Transmit context descriptor (16 bytes; DEXT, DTYP 0), as Linux's `e1000_context_desc`: where the card
/// inserts the IP and TCP/UDP checksums, and for TSO the header length and MSS. Its settings last until the
/// next context descriptor, so a queue writes one only when they change.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxContextDesc {
    /// IP checksum start, offset (where it goes) and end (inclusive; 0: to the end of the packet).
    pub ipcss: u8,
    pub ipcso: u8,
    pub ipcse: u16,
    /// TCP/UDP checksum start, offset and end.
    pub tucss: u8,
    pub tucso: u8,
    pub tucse: u16,
    /// PAYLEN (bits 19:0: the TSO payload after the headers), DTYP (0) and TUCMD (bits 31:24).
    pub cmd_len: u32,
    pub status: u8,
    /// TSO: the headers' length, repeated in every segment.
    pub hdrlen: u8,
    /// TSO: the most payload bytes per segment.
    pub mss: u16,
}

/// Transmit data descriptor (16 bytes; DEXT, DTYP 1), as Linux's `e1000_tx_desc` in extended form: one
/// buffer of a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDataDesc {
    pub addr: u64,
    /// DTALEN (bits 19:0), DTYP (bits 23:20) and DCMD (bits 31:24).
    pub cmd_len: u32,
    /// DD, written back by the card when RS asks for it.
    pub status: u8,
    /// IXSM and TXSM: insert the IP or TCP/UDP checksum the context describes.
    pub popts: u8,
    /// The VLAN tag inserted with VLE.
    pub vlan: u16,
}

impl TxDataDesc {
    /// Byte offset of the status field, where the card writes DD back.
    pub const STATUS_AT: usize = std::mem::offset_of!(TxDataDesc, status);
    /// Byte offset of the command word (DTALEN, DTYP and DCMD).
    pub const CMD_LEN_AT: usize = std::mem::offset_of!(TxDataDesc, cmd_len);
}

// Transmit descriptor command word (`cmd_len` of both forms) and fields.
pub const TXD_DTYP_D: u32 = 1 << 20;
pub const TXD_CMD_EOP: u32 = 1 << 24;
pub const TXD_CMD_IFCS: u32 = 1 << 25;
pub const TXD_CMD_TSE: u32 = 1 << 26;
pub const TXD_CMD_RS: u32 = 1 << 27;
pub const TXD_CMD_DEXT: u32 = 1 << 29;
pub const TXD_CMD_VLE: u32 = 1 << 30;
/// TUCMD of a context descriptor: TCP (else UDP), and IPv4 (else IPv6).
pub const TXD_TUCMD_TCP: u32 = 1 << 24;
pub const TXD_TUCMD_IP: u32 = 1 << 25;
pub const TXD_POPTS_IXSM: u8 = 1 << 0;
pub const TXD_POPTS_TXSM: u8 = 1 << 1;
pub const TXD_STAT_DD: u8 = 1 << 0;

// Extended receive write-back STATERR: status in bits 7:0, errors in bits 31:24.
pub const RXD_STAT_DD: u32 = 1 << 0;
pub const RXD_STAT_EOP: u32 = 1 << 1;
pub const RXD_STAT_IXSM: u32 = 1 << 2;
pub const RXD_STAT_VP: u32 = 1 << 3;
pub const RXD_STAT_UDPCS: u32 = 1 << 4;
pub const RXD_STAT_TCPCS: u32 = 1 << 5;
pub const RXD_ERR_TCPE: u32 = 1 << 29;
pub const RXD_ERR_IPE: u32 = 1 << 30;
/// Frame errors (CE, SE, SEQ, CXE, RXE).
pub const RXD_ERR_FRAME: u32 = (1 << 24) | (1 << 25) | (1 << 26) | (1 << 28) | (1 << 31);

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
    assert!(std::mem::size_of::<TxDataDesc>() == 16 && TxDataDesc::STATUS_AT == 12 && TxDataDesc::CMD_LEN_AT == 8);
    assert!(std::mem::size_of::<TxContextDesc>() == 16);
    assert!(std::mem::offset_of!(TxContextDesc, tucss) == 4 && std::mem::offset_of!(TxContextDesc, cmd_len) == 8);
    assert!(std::mem::offset_of!(TxContextDesc, hdrlen) == 13 && std::mem::offset_of!(TxContextDesc, mss) == 14);
    assert!(std::mem::size_of::<RxRead>() == 16);
    assert!(std::mem::size_of::<RxWb>() == 16 && RxWb::STATERR_AT == 8 && RxWb::LENGTH_AT == 12 && RxWb::VLAN_AT == 14);
};

// SAFETY: `#[repr(C)]` structs of integers whose sizes (asserted above) leave no padding: every byte is
// defined, and every byte pattern is a valid value.
unsafe impl vm_memory::ByteValued for TxContextDesc {}
// SAFETY: as above.
unsafe impl vm_memory::ByteValued for TxDataDesc {}
// SAFETY: as above.
unsafe impl vm_memory::ByteValued for RxRead {}
// SAFETY: as above.
unsafe impl vm_memory::ByteValued for RxWb {}
