//! A blocking vfio-user client: what QEMU's `vfio-user-pci` does, for tests and userspace drivers.

use crate::message::*;
use crate::socket::{write_all_with_fds, Frame, FrameError, Reader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Frame(#[from] FrameError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("server answered command {command} with errno {errno}")]
    Remote { command: u16, errno: i32 },
    #[error("protocol: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub struct Client {
    sock: UnixStream,
    reader: Reader,
    next_id: u16,
    /// The server's `max_msg_fds`.
    pub max_fds: usize,
    /// Every message is built here, and a posted write's payload in `payload`: both reused, so that a
    /// doorbell allocates nothing.
    out: Vec<u8>,
    payload: Vec<u8>,
}

impl Client {
    /// Connects and negotiates the version.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let sock = UnixStream::connect(path)?;
        let mut c = Client { sock, reader: Reader::new(), next_id: 0, max_fds: 1, out: Vec::new(), payload: Vec::new() };
        let mut p = Vec::new();
        Version { major: 0, minor: 0, capabilities: r#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}"#.into() }
            .emit(&mut p);
        let r = c.request(Command::Version as u16, &p, &[])?;
        let v = Version::parse(&r).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if v.major != 0 {
            return Err(ClientError::Protocol(format!("server version {}.{}", v.major, v.minor)));
        }
        c.max_fds = json_number(&v.capabilities, "max_msg_fds").unwrap_or(1) as usize;
        Ok(c)
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    fn send(&mut self, command: u16, payload: &[u8], fds: &[RawFd], flags: u32) -> Result<u16> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        Header { msg_id: id, command, size: (HEADER_SIZE + payload.len()) as u32, flags, error: 0 }.emit(&mut out);
        out.extend_from_slice(payload);
        let r = write_all_with_fds(&self.sock, &out, fds, 5000);
        self.out = out;
        r?;
        Ok(id)
    }

    /// Sends a raw request and waits for its reply payload; an error reply becomes `Remote`.
    pub fn request(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> Result<Vec<u8>> {
        let id = self.send(command, payload, fds, FLAG_REQUEST)?;
        let Frame::Message(m) = self.reader.read_frame_blocking(&self.sock)? else {
            return Err(ClientError::Protocol("oversized reply".into()));
        };
        if !m.header.is_reply() || m.header.msg_id != id {
            return Err(ClientError::Protocol(format!("unexpected message id {}", m.header.msg_id)));
        }
        if m.header.is_error() {
            return Err(ClientError::Remote { command, errno: m.header.error as i32 });
        }
        Ok(m.payload)
    }

    pub fn device_info(&mut self) -> Result<DeviceInfo> {
        let mut p = Vec::new();
        DeviceInfo { argsz: DeviceInfo::LEN as u32, ..Default::default() }.emit(&mut p);
        let r = self.request(Command::DeviceGetInfo as u16, &p, &[])?;
        DeviceInfo::parse(&r).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn region_info(&mut self, index: u32) -> Result<RegionInfo> {
        let mut p = Vec::new();
        RegionInfo { argsz: RegionInfo::LEN as u32, index, ..Default::default() }.emit(&mut p);
        let r = self.request(Command::DeviceGetRegionInfo as u16, &p, &[])?;
        RegionInfo::parse(&r).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn irq_info(&mut self, index: u32) -> Result<IrqInfo> {
        let mut p = Vec::new();
        IrqInfo { argsz: IrqInfo::LEN as u32, index, ..Default::default() }.emit(&mut p);
        let r = self.request(Command::DeviceGetIrqInfo as u16, &p, &[])?;
        IrqInfo::parse(&r).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn region_read(&mut self, region: u32, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut p = Vec::new();
        RegionAccess { offset, region, count: len as u32 }.emit(&mut p);
        let r = self.request(Command::RegionRead as u16, &p, &[])?;
        r.get(RegionAccess::LEN..RegionAccess::LEN + len)
            .map(|d| d.to_vec())
            .ok_or_else(|| ClientError::Protocol("short region read reply".into()))
    }

    pub fn read32(&mut self, region: u32, offset: u64) -> Result<u32> {
        let d = self.region_read(region, offset, 4)?;
        let b: [u8; 4] = d.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(|| ClientError::Protocol("short read reply".into()))?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let mut p = Vec::new();
        RegionAccess { offset, region, count: data.len() as u32 }.emit(&mut p);
        p.extend_from_slice(data);
        self.request(Command::RegionWrite as u16, &p, &[])?;
        Ok(())
    }

    /// A posted write (NO_REPLY), as QEMU sends MMIO writes.
    pub fn region_write_posted(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let mut p = std::mem::take(&mut self.payload);
        p.clear();
        RegionAccess { offset, region, count: data.len() as u32 }.emit(&mut p);
        p.extend_from_slice(data);
        let r = self.send(Command::RegionWrite as u16, &p, &[], FLAG_NO_REPLY);
        self.payload = p;
        r?;
        Ok(())
    }

    pub fn write32(&mut self, region: u32, offset: u64, v: u32) -> Result<()> {
        self.region_write(region, offset, &v.to_le_bytes())
    }

    pub fn dma_map(&mut self, fd: &impl AsRawFd, file_offset: u64, iova: u64, size: u64) -> Result<()> {
        let mut p = Vec::new();
        DmaMap { argsz: DmaMap::LEN as u32, flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE, offset: file_offset, iova, size }
            .emit(&mut p);
        self.request(Command::DmaMap as u16, &p, &[fd.as_raw_fd()])?;
        Ok(())
    }

    pub fn dma_unmap(&mut self, iova: u64, size: u64, flags: u32) -> Result<()> {
        let mut p = Vec::new();
        DmaUnmap { argsz: DmaUnmap::LEN as u32, flags, iova, size }.emit(&mut p);
        self.request(Command::DmaUnmap as u16, &p, &[])?;
        Ok(())
    }

    /// SET_IRQS with eventfds for vectors `start..start + fds.len()`.
    pub fn set_irq_eventfds(&mut self, index: u32, start: u32, fds: &[&OwnedFd]) -> Result<()> {
        let mut p = Vec::new();
        IrqSet {
            argsz: IrqSet::LEN as u32,
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start,
            count: fds.len() as u32,
            bools: vec![],
        }
        .emit(&mut p);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        self.request(Command::DeviceSetIrqs as u16, &p, &raw)?;
        Ok(())
    }

    /// SET_IRQS with DATA_NONE and the given action (disable with TRIGGER and count 0, or UNMASK).
    pub fn set_irqs_none(&mut self, index: u32, action: u32, start: u32, count: u32) -> Result<()> {
        let mut p = Vec::new();
        IrqSet { argsz: IrqSet::LEN as u32, flags: VFIO_IRQ_SET_DATA_NONE | action, index, start, count, bools: vec![] }.emit(&mut p);
        self.request(Command::DeviceSetIrqs as u16, &p, &[])?;
        Ok(())
    }

    pub fn reset(&mut self) -> Result<()> {
        self.request(Command::DeviceReset as u16, &[], &[])?;
        Ok(())
    }
}
