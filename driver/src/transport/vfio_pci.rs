//! Kernel VFIO transport: a PCI function bound to vfio-pci, through vfio-ioctls (container, group, device,
//! type1 IOMMU mappings). Region accesses are pread/pwrite on the device fd.

use super::{IrqKind, Result, Transport, TransportError};
use crate::dma::DmaRegion;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

pub struct VfioPciTransport {
    container: Arc<VfioContainer>,
    device: VfioDevice,
    bdf: String,
    /// Mappings made, undone on drop.
    mapped: Vec<(u64, usize)>,
    /// The eventfds as vfio-ioctls wants them (dups of the caller's).
    irq_fds: Vec<EventFd>,
}

fn verr(e: impl std::fmt::Display) -> TransportError {
    TransportError::Vfio(e.to_string())
}

impl VfioPciTransport {
    /// Opens `BDF` (e.g. 0000:00:03.0), which must be bound to vfio-pci.
    pub fn open(bdf: &str) -> Result<VfioPciTransport> {
        let sysfs = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        if !sysfs.exists() {
            return Err(TransportError::Vfio(format!("no PCI device {bdf}")));
        }
        let driver = std::fs::read_link(sysfs.join("driver")).ok().and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(TransportError::Vfio(format!("{bdf} is bound to {}, not vfio-pci", driver.as_deref().unwrap_or("no driver"))));
        }
        let container = Arc::new(VfioContainer::new(None).map_err(verr)?);
        let device = VfioDevice::new(&sysfs, container.clone() as Arc<dyn VfioOps>, false).map_err(verr)?;
        Ok(VfioPciTransport { container, device, bdf: bdf.into(), mapped: Vec::new(), irq_fds: Vec::new() })
    }
}

fn irq_index(kind: IrqKind) -> u32 {
    match kind {
        IrqKind::Intx => VFIO_PCI_INTX_IRQ_INDEX,
        IrqKind::Msi => VFIO_PCI_MSI_IRQ_INDEX,
        IrqKind::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
    }
}

impl Transport for VfioPciTransport {
    fn read32(&mut self, off: u32) -> Result<u32> {
        let mut b = [0u8; 4];
        self.device.region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut b, off as u64);
        Ok(u32::from_le_bytes(b))
    }
    fn write32(&mut self, off: u32, v: u32) -> Result<()> {
        self.device.region_write(VFIO_PCI_BAR0_REGION_INDEX, &v.to_le_bytes(), off as u64);
        Ok(())
    }
    fn config_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.device.region_read(VFIO_PCI_CONFIG_REGION_INDEX, buf, off);
        Ok(())
    }
    fn config_write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        self.device.region_write(VFIO_PCI_CONFIG_REGION_INDEX, buf, off);
        Ok(())
    }
    fn map_dma(&mut self, region: &mut DmaRegion, iova: u64) -> Result<()> {
        // SAFETY: the region stays mapped for as long as this transport lives (the driver owns both and drops
        // the transport's mappings first); it is only accessed through raw pointers with volatile operations.
        unsafe { self.container.vfio_dma_map(iova, region.len(), region.as_ptr()) }.map_err(verr)?;
        self.mapped.push((iova, region.len()));
        region.iova = iova;
        Ok(())
    }
    fn irq_kinds(&mut self) -> Vec<(IrqKind, u32)> {
        [IrqKind::Msix, IrqKind::Msi, IrqKind::Intx]
            .into_iter()
            .filter_map(|k| self.device.get_irq_info(irq_index(k)).filter(|i| i.count > 0).map(|i| (k, i.count)))
            .collect()
    }
    fn enable_irqs(&mut self, kind: IrqKind, fds: &[&OwnedFd]) -> Result<()> {
        self.irq_fds = fds
            .iter()
            .map(|f| {
                // SAFETY: dup of a valid eventfd; EventFd owns the duplicate.
                let d = unsafe { libc::dup(f.as_raw_fd()) };
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: d is a fresh fd we own.
                Ok(unsafe { <EventFd as std::os::fd::FromRawFd>::from_raw_fd(d) })
            })
            .collect::<std::io::Result<_>>()?;
        let refs: Vec<&EventFd> = self.irq_fds.iter().collect();
        self.device.enable_irq(irq_index(kind), refs).map_err(verr)
    }
    fn disable_irqs(&mut self, kind: IrqKind) -> Result<()> {
        self.device.disable_irq(irq_index(kind)).map_err(verr)
    }
    fn unmask_intx(&mut self) -> Result<()> {
        self.device.unmask_irq(VFIO_PCI_INTX_IRQ_INDEX).map_err(verr)
    }
    fn reset(&mut self) -> Result<()> {
        self.device.reset();
        Ok(())
    }
    fn describe(&self) -> String {
        format!("vfio-pci:{}", self.bdf)
    }
}

impl Drop for VfioPciTransport {
    fn drop(&mut self) {
        for (iova, len) in self.mapped.drain(..) {
            let _ = self.container.vfio_dma_unmap(iova, len);
        }
    }
}
