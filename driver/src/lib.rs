//! A userspace driver for the Intel 82574L: bring-up, DMA rings, interrupts and a netdev-style data path,
//! over vfio-user (`nic-device` or any vfio-user server) or kernel VFIO (a function bound to vfio-pci).

pub mod bql;
pub mod desc;
pub mod dma;
pub mod e1000e;
pub mod netdev;
pub mod regs;
pub mod transport;
pub mod xdp;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("transport: {0}")]
    Transport(#[from] transport::TransportError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an 82574L: PCI ID {vendor:04x}:{device:04x}")]
    WrongDevice { vendor: u16, device: u16 },
    #[error("NVM checksum is {0:#06x}, not 0xbaba")]
    BadNvmChecksum(u16),
    #[error("PHY: {0}")]
    Phy(String),
    #[error("no link within {0:?}")]
    LinkTimeout(Duration),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("interrupts: {0}")]
    Irq(String),
    #[error("bad packet: {0}")]
    BadPacket(&'static str),
    #[error("the device is gone (all-ones register read)")]
    Gone,
    #[error("the NVM holds no usable station address ({0})")]
    InvalidMac(String),
    #[error("transmit queue {queue} hung: head {head} has not moved for {stalled:?} with tail at {tail}; reopen (reset) the card")]
    TxHang { queue: usize, head: u32, tail: u32, stalled: Duration },
}

pub use e1000e::{Config, E1000e, IrqMode};
pub use netdev::*;

/// Opens a transport from a command-line style spec: `vfio-user:PATH` or `vfio-pci:BDF`.
pub fn open_transport(spec: &str) -> Result<Box<dyn transport::Transport>, DriverError> {
    if let Some(p) = spec.strip_prefix("vfio-user:") {
        return Ok(Box::new(transport::vfio_user::VfioUserTransport::connect(std::path::Path::new(p))?));
    }
    if let Some(b) = spec.strip_prefix("vfio-pci:") {
        return Ok(Box::new(transport::vfio_pci::VfioPciTransport::open(b)?));
    }
    Err(DriverError::Irq(format!("unknown transport '{spec}'")))
}
