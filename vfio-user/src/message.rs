//! Message layouts: a typed view over each command's payload with `parse` and `emit`.
//! All fields are little-endian (the protocol uses host order; both ends here are x86-64 or little-endian).

use thiserror::Error;

/// Size of the common header that starts every message.
pub const HEADER_SIZE: usize = 16;
/// Largest message this crate accepts (header included): a region transfer of `MAX_DATA_XFER` plus slack.
pub const MAX_MESSAGE_SIZE: usize = MAX_DATA_XFER + 4096;
/// Largest region read or write we accept; advertised as `max_data_xfer_size`.
pub const MAX_DATA_XFER: usize = 1 << 20;
/// File descriptors we accept in one message; advertised as `max_msg_fds`.
pub const MAX_MSG_FDS: usize = 16;
/// Most DMA maps a server built on this crate keeps for one client (announced as `max_dma_maps`).
pub const MAX_DMA_MAPS: usize = 1024;

pub const FLAG_TYPE_MASK: u32 = 0xf;
pub const FLAG_REQUEST: u32 = 0x0;
pub const FLAG_REPLY: u32 = 0x1;
pub const FLAG_NO_REPLY: u32 = 0x10;
pub const FLAG_ERROR: u32 = 0x20;

/// Commands (`enum vfio_user_command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Version = 1,
    DmaMap = 2,
    DmaUnmap = 3,
    DeviceGetInfo = 4,
    DeviceGetRegionInfo = 5,
    DeviceGetRegionIoFds = 6,
    DeviceGetIrqInfo = 7,
    DeviceSetIrqs = 8,
    RegionRead = 9,
    RegionWrite = 10,
    DmaRead = 11,
    DmaWrite = 12,
    DeviceReset = 13,
    DirtyPages = 14,
    RegionWriteMulti = 15,
}

impl Command {
    pub fn from_u16(v: u16) -> Option<Command> {
        use Command::*;
        Some(match v {
            1 => Version,
            2 => DmaMap,
            3 => DmaUnmap,
            4 => DeviceGetInfo,
            5 => DeviceGetRegionInfo,
            6 => DeviceGetRegionIoFds,
            7 => DeviceGetIrqInfo,
            8 => DeviceSetIrqs,
            9 => RegionRead,
            10 => RegionWrite,
            11 => DmaRead,
            12 => DmaWrite,
            13 => DeviceReset,
            14 => DirtyPages,
            15 => RegionWriteMulti,
            _ => return None,
        })
    }
}

// VFIO constants the protocol borrows from linux/vfio.h.
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const VFIO_IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const VFIO_IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const VFIO_IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
pub const VFIO_IRQ_INFO_NORESIZE: u32 = 1 << 3;
pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const VFIO_IRQ_SET_DATA_BOOL: u32 = 1 << 1;
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const VFIO_IRQ_SET_ACTION_MASK: u32 = 1 << 3;
pub const VFIO_IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;

// PCI region and IRQ indexes (vfio_pci).
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const VFIO_PCI_NUM_REGIONS: u32 = 9;
pub const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;
pub const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
pub const VFIO_PCI_ERR_IRQ_INDEX: u32 = 3;
pub const VFIO_PCI_REQ_IRQ_INDEX: u32 = 4;
pub const VFIO_PCI_NUM_IRQS: u32 = 5;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("payload too short: need {need} bytes, have {have}")]
    Short { need: usize, have: usize },
    #[error("field {0} out of range")]
    Range(&'static str),
    #[error("version string is not NUL-terminated UTF-8")]
    BadVersionString,
    #[error("capabilities: {0}")]
    BadCapabilities(String),
}

pub type ParseResult<T> = std::result::Result<T, ParseError>;

fn need(buf: &[u8], n: usize) -> ParseResult<()> {
    if buf.len() < n {
        Err(ParseError::Short { need: n, have: buf.len() })
    } else {
        Ok(())
    }
}

/// `N` bytes at `o`; callers check the length first (`need`), and a range that is not there reads as zeros
/// rather than panicking.
fn bytes_at<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    b.get(o..o.saturating_add(N)).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, o))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, o))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, o))
}

/// The common message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub msg_id: u16,
    pub command: u16,
    /// Whole message size, header included.
    pub size: u32,
    pub flags: u32,
    pub error: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> ParseResult<Header> {
        need(b, HEADER_SIZE)?;
        Ok(Header { msg_id: u16_at(b, 0), command: u16_at(b, 2), size: u32_at(b, 4), flags: u32_at(b, 8), error: u32_at(b, 12) })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.msg_id.to_le_bytes());
        out.extend_from_slice(&self.command.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.error.to_le_bytes());
    }
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_TYPE_MASK == FLAG_REPLY
    }
    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }
    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }
}

/// VERSION payload: major, minor, then a NUL-terminated JSON capabilities string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub capabilities: String,
}

impl Version {
    pub fn parse(b: &[u8]) -> ParseResult<Version> {
        need(b, 4)?;
        let rest = b.get(4..).unwrap_or_default();
        let caps = if rest.is_empty() {
            String::new()
        } else {
            let end = rest.iter().position(|&c| c == 0).ok_or(ParseError::BadVersionString)?;
            String::from_utf8(rest.get(..end).unwrap_or_default().to_vec()).map_err(|_| ParseError::BadVersionString)?
        };
        Ok(Version { major: u16_at(b, 0), minor: u16_at(b, 2), capabilities: caps })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.major.to_le_bytes());
        out.extend_from_slice(&self.minor.to_le_bytes());
        out.extend_from_slice(self.capabilities.as_bytes());
        out.push(0);
    }
}

/// Checks a VERSION capabilities string: empty, or a JSON object whose `capabilities` member (if any) is an
/// object, with the numeric members the protocol defines as non-negative integers and `migration` an object.
pub fn check_capabilities(json: &str) -> ParseResult<()> {
    if json.is_empty() {
        return Ok(());
    }
    let bad = |m: &str| ParseError::BadCapabilities(m.to_string());
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| ParseError::BadCapabilities(e.to_string()))?;
    let top = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let Some(caps) = top.get("capabilities") else { return Ok(()) };
    let caps = caps.as_object().ok_or_else(|| bad("\"capabilities\" is not an object"))?;
    for key in ["max_msg_fds", "max_data_xfer_size", "pgsizes", "max_dma_maps"] {
        if caps.get(key).is_some_and(|n| n.as_u64().is_none()) {
            return Err(ParseError::BadCapabilities(format!("\"{key}\" is not a non-negative integer")));
        }
    }
    if caps.get("migration").is_some_and(|m| !m.is_object()) {
        return Err(bad("\"migration\" is not an object"));
    }
    if caps.get("write_multiple").is_some_and(|m| !m.is_boolean()) {
        return Err(bad("\"write_multiple\" is not a boolean"));
    }
    Ok(())
}

/// Looks up an integer member of the capabilities JSON (`"name": 123`), at any depth, with the same JSON
/// parser that [`check_capabilities`] uses.
pub fn json_number(json: &str, name: &str) -> Option<u64> {
    fn find(v: &serde_json::Value, name: &str) -> Option<u64> {
        let obj = v.as_object()?;
        obj.get(name).and_then(serde_json::Value::as_u64).or_else(|| obj.values().find_map(|c| find(c, name)))
    }
    find(&serde_json::from_str(json).ok()?, name)
}

/// DMA_MAP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    /// Offset into the passed file.
    pub offset: u64,
    pub iova: u64,
    pub size: u64,
}

impl DmaMap {
    pub const LEN: usize = 32;
    pub fn parse(b: &[u8]) -> ParseResult<DmaMap> {
        need(b, Self::LEN)?;
        let m = DmaMap { argsz: u32_at(b, 0), flags: u32_at(b, 4), offset: u64_at(b, 8), iova: u64_at(b, 16), size: u64_at(b, 24) };
        if m.size == 0 || m.iova.checked_add(m.size).is_none() || m.offset.checked_add(m.size).is_none() {
            return Err(ParseError::Range("dma_map.size"));
        }
        Ok(m)
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.offset, self.iova, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// DMA_UNMAP payload (also its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

impl DmaUnmap {
    pub const LEN: usize = 24;
    pub fn parse(b: &[u8]) -> ParseResult<DmaUnmap> {
        need(b, Self::LEN)?;
        Ok(DmaUnmap { argsz: u32_at(b, 0), flags: u32_at(b, 4), iova: u64_at(b, 8), size: u64_at(b, 16) })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.iova, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// DEVICE_GET_INFO payload (`struct vfio_device_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

impl DeviceInfo {
    pub const LEN: usize = 16;
    pub fn parse(b: &[u8]) -> ParseResult<DeviceInfo> {
        need(b, Self::LEN)?;
        Ok(DeviceInfo { argsz: u32_at(b, 0), flags: u32_at(b, 4), num_regions: u32_at(b, 8), num_irqs: u32_at(b, 12) })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags, self.num_regions, self.num_irqs] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// DEVICE_GET_REGION_INFO payload (`struct vfio_region_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

impl RegionInfo {
    pub const LEN: usize = 32;
    pub fn parse(b: &[u8]) -> ParseResult<RegionInfo> {
        need(b, Self::LEN)?;
        Ok(RegionInfo {
            argsz: u32_at(b, 0),
            flags: u32_at(b, 4),
            index: u32_at(b, 8),
            cap_offset: u32_at(b, 12),
            size: u64_at(b, 16),
            offset: u64_at(b, 24),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags, self.index, self.cap_offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.size, self.offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// DEVICE_GET_IRQ_INFO payload (`struct vfio_irq_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

impl IrqInfo {
    pub const LEN: usize = 16;
    pub fn parse(b: &[u8]) -> ParseResult<IrqInfo> {
        need(b, Self::LEN)?;
        Ok(IrqInfo { argsz: u32_at(b, 0), flags: u32_at(b, 4), index: u32_at(b, 8), count: u32_at(b, 12) })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags, self.index, self.count] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// DEVICE_SET_IRQS payload (`struct vfio_irq_set`); eventfds travel as SCM_RIGHTS, boolean data follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    /// DATA_BOOL payload, one byte per vector.
    pub bools: Vec<u8>,
}

impl IrqSet {
    pub const LEN: usize = 20;
    pub fn parse(b: &[u8]) -> ParseResult<IrqSet> {
        need(b, Self::LEN)?;
        let mut s = IrqSet {
            argsz: u32_at(b, 0),
            flags: u32_at(b, 4),
            index: u32_at(b, 8),
            start: u32_at(b, 12),
            count: u32_at(b, 16),
            bools: Vec::new(),
        };
        let data = s.flags & (VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD);
        if data.count_ones() != 1 {
            return Err(ParseError::Range("irq_set.flags data type"));
        }
        let action = s.flags & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER);
        if action.count_ones() != 1 {
            return Err(ParseError::Range("irq_set.flags action"));
        }
        if s.start.checked_add(s.count).is_none() {
            return Err(ParseError::Range("irq_set.count"));
        }
        if data == VFIO_IRQ_SET_DATA_BOOL {
            let n = s.count as usize;
            need(b, Self::LEN + n)?;
            s.bools = b.get(Self::LEN..Self::LEN + n).ok_or(ParseError::Short { need: Self::LEN + n, have: b.len() })?.to_vec();
        }
        Ok(s)
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.argsz, self.flags, self.index, self.start, self.count] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.bools);
    }
}

/// REGION_READ / REGION_WRITE header part; the data follows in writes and read replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionAccess {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
}

impl RegionAccess {
    pub const LEN: usize = 16;
    pub fn parse(b: &[u8]) -> ParseResult<RegionAccess> {
        need(b, Self::LEN)?;
        let a = RegionAccess { offset: u64_at(b, 0), region: u32_at(b, 8), count: u32_at(b, 12) };
        if a.count as usize > MAX_DATA_XFER {
            return Err(ParseError::Range("region access count"));
        }
        Ok(a)
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.region.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
    }
}

/// One entry of REGION_WRITE_MULTI (QEMU's layout: 8 data bytes inline).
pub const MULTI_ENTRY_LEN: usize = 24;
pub const MULTI_MAX: u64 = 200;

/// Parses REGION_WRITE_MULTI into (access, data) pairs.
pub fn parse_write_multi(b: &[u8]) -> ParseResult<Vec<(RegionAccess, [u8; 8])>> {
    need(b, 8)?;
    let n = u64_at(b, 0);
    if n > MULTI_MAX {
        return Err(ParseError::Range("write_multi count"));
    }
    let n = n as usize;
    need(b, 8 + n * MULTI_ENTRY_LEN)?;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let e = b.get(8 + i * MULTI_ENTRY_LEN..8 + (i + 1) * MULTI_ENTRY_LEN).unwrap_or_default();
        let a = RegionAccess { offset: u64_at(e, 0), region: u32_at(e, 8), count: u32_at(e, 12) };
        if a.count > 8 {
            return Err(ParseError::Range("write_multi entry count"));
        }
        let d: [u8; 8] = bytes_at(e, 16);
        v.push((a, d));
    }
    Ok(v)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header { msg_id: 7, command: 9, size: 48, flags: FLAG_REPLY | FLAG_ERROR, error: 22 };
        let mut v = Vec::new();
        h.emit(&mut v);
        assert_eq!(v.len(), HEADER_SIZE);
        assert_eq!(Header::parse(&v).unwrap(), h);
        assert!(h.is_reply() && h.is_error() && !h.no_reply());
        assert!(matches!(Header::parse(&v[..15]), Err(ParseError::Short { need: 16, have: 15 })));
    }

    #[test]
    fn version_parse_and_caps() {
        let v = Version { major: 0, minor: 0, capabilities: r#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}"#.into() };
        let mut b = Vec::new();
        v.emit(&mut b);
        let p = Version::parse(&b).unwrap();
        assert_eq!(p, v);
        assert_eq!(json_number(&p.capabilities, "max_msg_fds"), Some(16));
        assert_eq!(json_number(&p.capabilities, "max_data_xfer_size"), Some(1048576));
        assert_eq!(json_number(&p.capabilities, "pgsizes"), None);
        // Missing NUL is rejected, not read past the end.
        assert_eq!(Version::parse(&[0, 0, 0, 0, b'{']), Err(ParseError::BadVersionString));
        assert!(Version::parse(&[0, 0]).is_err());
    }

    #[test]
    fn dma_map_rejects_wrapping_ranges() {
        let m = DmaMap { argsz: 32, flags: 3, offset: 0, iova: u64::MAX - 10, size: 4096 };
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(DmaMap::parse(&b), Err(ParseError::Range("dma_map.size")));
        let m = DmaMap { argsz: 32, flags: 3, offset: 4096, iova: 0x10000, size: 4096 };
        b.clear();
        m.emit(&mut b);
        assert_eq!(DmaMap::parse(&b).unwrap(), m);
        assert!(DmaMap::parse(&b[..31]).is_err());
    }

    #[test]
    fn irq_set_validates_flags() {
        let s = IrqSet {
            argsz: 20,
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: 2,
            start: 0,
            count: 3,
            bools: vec![],
        };
        let mut b = Vec::new();
        s.emit(&mut b);
        assert_eq!(IrqSet::parse(&b).unwrap(), s);
        let bad = IrqSet { flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_DATA_BOOL | 32, ..s.clone() };
        b.clear();
        bad.emit(&mut b);
        assert!(IrqSet::parse(&b).is_err());
        // DATA_BOOL needs `count` bytes.
        let bools = IrqSet { flags: VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, bools: vec![1, 0, 1], ..s };
        b.clear();
        bools.emit(&mut b);
        assert_eq!(IrqSet::parse(&b).unwrap().bools, vec![1, 0, 1]);
        assert!(IrqSet::parse(&b[..21]).is_err());
    }

    #[test]
    fn region_access_and_multi() {
        let a = RegionAccess { offset: 0x3818, region: 0, count: 4 };
        let mut b = Vec::new();
        a.emit(&mut b);
        assert_eq!(RegionAccess::parse(&b).unwrap(), a);
        let big = RegionAccess { count: (MAX_DATA_XFER + 1) as u32, ..a };
        b.clear();
        big.emit(&mut b);
        assert!(RegionAccess::parse(&b).is_err());

        let mut m = Vec::new();
        m.extend_from_slice(&2u64.to_le_bytes());
        for (off, val) in [(0x3818u64, 5u32), (0x2818, 9)] {
            RegionAccess { offset: off, region: 0, count: 4 }.emit(&mut m);
            m.extend_from_slice(&(val as u64).to_le_bytes());
        }
        let p = parse_write_multi(&m).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].0.offset, 0x2818);
        assert_eq!(u32::from_le_bytes(p[1].1[..4].try_into().unwrap()), 9);
        assert!(parse_write_multi(&m[..40]).is_err());
        let mut huge = Vec::new();
        huge.extend_from_slice(&(MULTI_MAX + 1).to_le_bytes());
        assert!(parse_write_multi(&huge).is_err());
    }
}
