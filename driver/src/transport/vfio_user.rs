//! vfio-user transport: `nic-device` (or any vfio-user server) over its unix socket. The driver's DMA memory
//! goes to the server as a memfd in DMA_MAP; doorbells are posted writes.

use super::{IrqKind, Result, Transport};
use crate::dma::DmaRegion;
use std::os::fd::OwnedFd;
use std::path::Path;
use vfio_user::client::Client;
use vfio_user::*;

pub struct VfioUserTransport {
    client: Client,
    path: String,
}

impl VfioUserTransport {
    pub fn connect(path: &Path) -> Result<VfioUserTransport> {
        let mut client = Client::connect(path)?;
        let info = client.device_info()?;
        if info.flags & VFIO_DEVICE_FLAGS_PCI == 0 || info.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX {
            return Err(super::TransportError::Vfio(format!("{} is not a PCI device (flags {:#x})", path.display(), info.flags)));
        }
        Ok(VfioUserTransport { client, path: path.display().to_string() })
    }
}

fn irq_index(kind: IrqKind) -> u32 {
    match kind {
        IrqKind::Intx => VFIO_PCI_INTX_IRQ_INDEX,
        IrqKind::Msi => VFIO_PCI_MSI_IRQ_INDEX,
        IrqKind::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
    }
}

impl Transport for VfioUserTransport {
    fn read32(&mut self, off: u32) -> Result<u32> {
        Ok(self.client.read32(0, off as u64)?)
    }
    fn write32(&mut self, off: u32, v: u32) -> Result<()> {
        Ok(self.client.write32(0, off as u64, v)?)
    }
    fn write32_posted(&mut self, off: u32, v: u32) -> Result<()> {
        Ok(self.client.region_write_posted(0, off as u64, &v.to_le_bytes())?)
    }
    fn config_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        let d = self.client.region_read(VFIO_PCI_CONFIG_REGION_INDEX, off, buf.len())?;
        buf.copy_from_slice(&d);
        Ok(())
    }
    fn config_write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        Ok(self.client.region_write(VFIO_PCI_CONFIG_REGION_INDEX, off, buf)?)
    }
    fn map_dma(&mut self, region: &mut DmaRegion, iova: u64) -> Result<()> {
        self.client.dma_map(region.fd(), 0, iova, region.len() as u64)?;
        region.iova = iova;
        Ok(())
    }
    fn irq_kinds(&mut self) -> Vec<(IrqKind, u32)> {
        [IrqKind::Msix, IrqKind::Msi, IrqKind::Intx]
            .into_iter()
            .filter_map(|k| self.client.irq_info(irq_index(k)).ok().filter(|i| i.count > 0).map(|i| (k, i.count)))
            .collect()
    }
    fn enable_irqs(&mut self, kind: IrqKind, fds: &[&OwnedFd]) -> Result<()> {
        Ok(self.client.set_irq_eventfds(irq_index(kind), 0, fds)?)
    }
    fn disable_irqs(&mut self, kind: IrqKind) -> Result<()> {
        Ok(self.client.set_irqs_none(irq_index(kind), VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0)?)
    }
    fn unmask_intx(&mut self) -> Result<()> {
        Ok(self.client.set_irqs_none(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, 0, 1)?)
    }
    fn reset(&mut self) -> Result<()> {
        Ok(self.client.reset()?)
    }
    fn describe(&self) -> String {
        format!("vfio-user:{}", self.path)
    }
}
