//! How the driver reaches the card: register access, config space, DMA mapping, interrupts and reset, over
//! vfio-user ([`vfio_user::VfioUserTransport`]) or kernel VFIO ([`vfio_pci::VfioPciTransport`]).

pub mod vfio_pci;
pub mod vfio_user;

use crate::dma::DmaRegion;
use std::os::fd::OwnedFd;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("vfio-user: {0}")]
    VfioUser(#[from] ::vfio_user::client::ClientError),
    #[error("vfio: {0}")]
    Vfio(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, TransportError>;

/// Interrupt mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqKind {
    Intx,
    Msi,
    Msix,
}

pub trait Transport: Send {
    /// BAR0 register read (a trapped access: slow, never on the fast path).
    fn read32(&mut self, off: u32) -> Result<u32>;
    fn write32(&mut self, off: u32, v: u32) -> Result<()>;
    /// A write that need not wait for completion (doorbells); defaults to an ordinary write.
    fn write32_posted(&mut self, off: u32, v: u32) -> Result<()> {
        self.write32(off, v)
    }
    fn config_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()>;
    fn config_write(&mut self, off: u64, buf: &[u8]) -> Result<()>;
    /// Makes `region` reachable by the device at `iova`.
    fn map_dma(&mut self, region: &mut DmaRegion, iova: u64) -> Result<()>;
    /// Interrupt kinds this transport offers, best first.
    fn irq_kinds(&mut self) -> Vec<(IrqKind, u32)>;
    /// Routes vectors `0..fds.len()` of `kind` to eventfds.
    fn enable_irqs(&mut self, kind: IrqKind, fds: &[&OwnedFd]) -> Result<()>;
    fn disable_irqs(&mut self, kind: IrqKind) -> Result<()>;
    /// Re-arms INTx after it fired (it is masked automatically).
    fn unmask_intx(&mut self) -> Result<()>;
    /// Function-level reset.
    fn reset(&mut self) -> Result<()>;
    fn describe(&self) -> String;
}
