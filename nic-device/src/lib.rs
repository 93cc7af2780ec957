//! An Intel 82574L (PCI 8086:10d3) emulated in its own process and served over vfio-user.
//!
//! Modules follow the hardware's blocks: `pci` (config space), `regs` (register map), `nvm`, `phy`, `intr`
//! (interrupt causes, moderation, and their delivery to eventfds), `dma` (guest memory from DMA_MAP),
//! `tx`/`rx` (descriptor rings), `stats` (statistics registers), `offload` (checksums, TSO, VLAN), `gso` (the TAP offload mode's
//! virtio-net header conversions), `nic` (the register file that ties them together), `backend` (the
//! wire), `datapath` (the thread that moves frames), `vfio` (the vfio-user device) and `server` (the socket).
// Guest- and client-controlled paths: no unwrap, expect or unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod backend;
pub mod bytes;
pub mod control;
pub mod datapath;
pub mod delay;
pub mod desc;
pub mod dma;
pub mod doorbell;
pub mod fault;
pub mod flowctl;
pub mod gso;
pub mod intr;
pub mod metrics;
pub mod nic;
pub mod nvm;
pub mod offload;
pub mod pcap;
pub mod pci;
pub mod phy;
pub mod pool;
pub mod port;
pub mod regs;
pub mod rss;
pub mod rx;
pub mod server;
pub mod stats;
pub mod timerpoll;
pub mod trace;
pub mod tx;
pub mod vfio;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}
