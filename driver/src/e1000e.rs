//! The 82574L driver: bring-up as Linux's e1000e does it, two queue pairs on DMA rings, MSI-X (or MSI,
//! INTx, or busy polling), and the [`NetDev`] data path with no register reads on it.

use crate::desc::*;
use crate::dma::DmaRegion;
use crate::netdev::*;
use crate::regs::*;
use crate::transport::{IrqKind, Transport};
use crate::xdp::{XdpAction, XdpFrame, XdpMeta, XdpProgram, XdpStats};
use crate::DriverError;
use log::{debug, info};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How the driver learns about work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqMode {
    /// The best the transport offers: MSI-X, then MSI, then INTx.
    Auto,
    Msix,
    Msi,
    Intx,
    /// No interrupts: the caller polls continuously.
    BusyPoll,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub irq: IrqMode,
    /// Interrupt moderation in interrupts per second (0: off).
    pub itr: u32,
    pub tx_ring: u32,
    pub rx_ring: u32,
    pub link_timeout: Duration,
    /// A transmit queue whose head does not move for this long, with work queued, is reported hung.
    pub tx_timeout: Duration,
    pub promiscuous: bool,
    /// I/O address where the driver's DMA memory is mapped.
    pub iova_base: u64,
    /// Receive-side scaling: flows hashed (Toeplitz over addresses and TCP ports) onto both receive queues,
    /// the hash reported with each frame.
    pub rss: bool,
    /// Byte queue limits on the transmit rings (`driver::bql`).
    pub bql: bool,
    /// Latency mode's busy poll (Linux's SO_BUSY_POLL): before sleeping on an interrupt, watch the
    /// receive rings for this long (zero: sleep at once).
    pub busy_poll: Duration,
}

impl Config {
    /// Latency mode: no interrupt moderation, and 50 us of busy polling before each sleep.
    pub fn latency(self) -> Config {
        Config { itr: 0, busy_poll: Duration::from_micros(50), ..self }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            irq: IrqMode::Auto,
            itr: 20000,
            tx_ring: 256,
            rx_ring: 256,
            link_timeout: Duration::from_secs(10),
            tx_timeout: Duration::from_secs(2),
            promiscuous: false,
            iova_base: 0x1_0000_0000,
            rss: false,
            bql: true,
            busy_poll: Duration::ZERO,
        }
    }
}

const BUF_SIZE: usize = 2048;
/// Buffers handed back to the card per RDT write: 16, as Linux's e1000e (E1000_RX_BUFFER_WRITE), for rings of
/// up to 256; a sixteenth of the ring for deeper ones, which leave the card enough descriptors between
/// writes and save the doorbells (each is a message to a vfio-user device).
fn rx_refill_batch(ring: u32) -> u32 {
    (ring / 16).max(16)
}
/// Buffers that make an RDT write when a poll ends under budget: the refill batch, but at most a quarter of
/// the ring (a ring of 8 gets its buffers back two at a time).
fn rx_refill_at_rest(ring: u32, batch: u32) -> u32 {
    batch.min(ring / 4).max(1)
}
/// Frame buffers kept for reuse (`E1000e::spare`), and the largest one kept (a jumbo frame's).
const SPARE_MAX: usize = 512;
const SPARE_CAPACITY_MAX: usize = 16 * 1024 + 64;
/// Most descriptors one packet may take: a context plus 64 KiB of 2 KiB buffers, with headers.
const MAX_DESC_PER_PKT: usize = 1 + (65536 + 256) / BUF_SIZE + 1;

struct TxRing {
    desc: usize,
    bufs: usize,
    n: u32,
    next_to_use: u32,
    next_to_clean: u32,
    /// For a packet's first descriptor: the index of its last one.
    eop_of: Vec<Option<u32>>,
    /// For a packet's first descriptor: the descriptor whose DD says it was sent. RS is set on the last
    /// packet of every `RS_EVERY` and on the last of each send, so one status write-back reports a group.
    done_at: Vec<u32>,
    /// The first descriptors of the packets queued since the last one with RS (at most `RS_EVERY`).
    group: Vec<u32>,
    /// The offload context the card holds for this queue (written with the last context descriptor).
    last_ctx: Option<TxContextDesc>,
    /// Since when work has been queued without the card completing any (hang detection), as first seen
    /// by a clock read (see `STALL_CHECK_EVERY`).
    stalled_since: Option<Instant>,
    /// Polls in a row that found work queued and none of it completed.
    stalled_polls: u32,
    /// For a packet's first descriptor: its length in bytes (for the byte queue limit).
    bytes_of: Vec<u32>,
    /// Byte queue limits (`None` when off).
    bql: Option<crate::bql::Dql>,
    /// The tail last written to TDT: descriptors from here to `next_to_use` are queued but not yet handed
    /// to the card (`E1000e::tx_doorbell`).
    rung_tail: u32,
}

impl TxRing {
    /// The packets queued since the last RS are reported by the DD of descriptor `rs`.
    fn close_group(&mut self, rs: u32) {
        for &f in &self.group {
            if let Some(d) = self.done_at.get_mut(f as usize) {
                *d = rs;
            }
        }
        self.group.clear();
    }
}

/// What a queued packet's offloads change in it (`E1000e::offload_plan`): the pseudo-header sum in its
/// TCP/UDP checksum field, and for TSO the IP length fields (and IPv4 header checksum) zeroed.
#[derive(Clone, Copy, Debug)]
struct OffloadEdits {
    seed_at: usize,
    seed: u16,
    /// Two-byte fields to zero.
    zero: [Option<usize>; 2],
}

impl OffloadEdits {
    /// Makes the edits in the packet's copy at `buf` in `mem`, of which the first `len` bytes are there;
    /// the offsets were checked against the packet's length when they were worked out.
    fn apply_in(&self, mem: &DmaRegion, buf: usize, len: usize) {
        if self.seed_at + 2 <= len {
            mem.write_bytes(buf + self.seed_at, &self.seed.to_be_bytes());
        }
        for &at in self.zero.iter().flatten() {
            if at + 2 <= len {
                mem.write_bytes(buf + at, &[0, 0]);
            }
        }
    }
}

/// RS (report status) is set on every this many packets' last descriptor, and on the last packet of a
/// send: one status write-back for a group instead of one per packet (as DPDK's `tx_rs_thresh`), which
/// spares the card a write and the driver a read per packet.
const RS_EVERY: usize = 32;
/// Most descriptors a transmit queue holds back from a busy card before a doorbell (`tx_doorbell`).
const TX_DEFER_MAX: u32 = 64;

/// Stalled polls between two reads of the clock for hang detection, and busy-polling waits between two
/// checks that the card answers (see `E1000e::clean_tx`).
const STALL_CHECK_EVERY: u32 = 64;

struct RxRing {
    desc: usize,
    bufs: usize,
    n: u32,
    next_to_clean: u32,
    /// Descriptors cleaned but not yet handed back through RDT.
    unrefilled: u32,
    /// How many cleaned descriptors make an RDT write (`rx_refill_batch`).
    refill_batch: u32,
    partial: Vec<u8>,
}

pub struct E1000e {
    t: Box<dyn Transport>,
    mem: DmaRegion,
    tx: [TxRing; 2],
    rx: [RxRing; 2],
    mac: [u8; 6],
    irq_kind: Option<IrqKind>,
    irq_fds: Vec<OwnedFd>,
    /// The interrupt causes enabled after every poll: receive, link and errors.
    ims: u32,
    /// Transmit completion causes: enabled only while a send waits for room (`tx_wait`). A finished
    /// transmit otherwise wakes nobody: its descriptors are reclaimed by the next poll or send, as a
    /// driver that cleans its TX ring from NAPI does, and a round trip takes one wake-up, not two.
    ims_tx: u32,
    /// The last send left packets behind for want of descriptors or BQL room: the caller will wait for
    /// transmit completions.
    tx_wait: bool,
    /// `ims_tx` was written since the card last masked itself.
    tx_armed: bool,
    /// An interrupt was taken and the card masked itself: re-enable when a poll ends under budget.
    irq_masked: bool,
    /// A wait timed out: if the poll after it finds work, the interrupt for that work was lost (and may
    /// have left the card's auto-mask on), so interrupts are enabled again.
    irq_check: bool,
    stats: Stats,
    last_alive: Instant,
    /// The last wait slept (or took an interrupt): the next poll reads the clock for hang detection.
    slept: bool,
    /// Busy-polling waits since the last check that the card answers.
    idle_waits: u32,
    tx_timeout: Duration,
    /// The multicast table as written (the card's MTA cannot be read back cheaply over a transport).
    mta: [u32; 128],
    /// The VLAN filter table as written.
    vfta: [u32; 128],
    rctl: u32,
    rss: bool,
    busy_poll: Duration,
    xdp: Option<Box<dyn XdpProgram + Send>>,
    xdp_stats: XdpStats,
    /// XDP_TX frames waiting for the end of the poll (one doorbell for all).
    xdp_tx: Vec<TxPacket>,
    /// XDP_REDIRECT frames for the caller, with their target.
    xdp_redirected: Vec<(u32, Vec<u8>, XdpMeta)>,
    /// Empty buffers for received frames: those of sent packets once their bytes are in the ring, so that
    /// a steady flow (whose received buffers carry the next packets out) allocates nothing per frame.
    spare: Vec<Vec<u8>>,
    /// Where receive vectors come from when `spare` has none (`NetDev::set_rx_source`).
    rx_source: Option<fn(usize) -> Vec<u8>>,
}

/// The ring slot after `i` in a ring of `n`.
#[inline]
fn ring_next(i: u32, n: u32) -> u32 {
    if i + 1 >= n {
        0
    } else {
        i + 1
    }
}

/// The RSS key Microsoft's RSS specification gives as its verification key (also Linux's default in many
/// drivers before random keys).
const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b,
    0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Redirected frames kept for the caller before more are dropped.
const XDP_REDIRECT_MAX: usize = 4096;

/// The MTA bit for a multicast Ethernet address with RCTL.MO = 0 (the filter looks at bits 47:36 of
/// the destination: the high nibble of byte 4 and all of byte 5): register index and bit.
pub fn mta_bit(mac: [u8; 6]) -> (usize, u32) {
    let hash = ((u32::from(mac[4]) >> 4) | (u32::from(mac[5]) << 4)) & 0xFFF;
    ((hash >> 5) as usize, hash & 31)
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd with valid flags; result checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One's-complement sum (the driver's own, for pseudo-header seeds).
fn csum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}
fn fold(mut s: u32) -> u16 {
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

impl E1000e {
    fn wait_reg(&mut self, reg: u32, mask: u32, want: u32, timeout: Duration, what: &'static str) -> Result<u32, DriverError> {
        let t0 = Instant::now();
        loop {
            let v = self.t.read32(reg)?;
            if v & mask == want {
                return Ok(v);
            }
            if t0.elapsed() > timeout {
                return Err(DriverError::Timeout(what));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn nvm_read(&mut self, word: u16) -> Result<u16, DriverError> {
        self.t.write32(EERD, ((word as u32) << EERD_ADDR_SHIFT) | EERD_START)?;
        let v = self.wait_reg(EERD, EERD_DONE, EERD_DONE, Duration::from_millis(100), "NVM read (EERD.DONE)")?;
        Ok((v >> EERD_DATA_SHIFT) as u16)
    }

    fn phy_read(&mut self, reg: u32) -> Result<u16, DriverError> {
        self.t.write32(MDIC, (reg << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_READ)?;
        let v = self.wait_reg(MDIC, MDIC_READY, MDIC_READY, Duration::from_millis(100), "PHY read (MDIC.READY)")?;
        if v & MDIC_ERROR != 0 {
            return Err(DriverError::Phy(format!("MDIC error reading PHY register {reg}")));
        }
        if (v >> MDIC_REG_SHIFT) & 0x1F != reg {
            return Err(DriverError::Phy(format!("MDIC answered register {} for {reg}", (v >> MDIC_REG_SHIFT) & 0x1F)));
        }
        Ok(v as u16)
    }

    fn phy_write(&mut self, reg: u32, val: u16) -> Result<(), DriverError> {
        self.t.write32(MDIC, val as u32 | (reg << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_WRITE)?;
        let v = self.wait_reg(MDIC, MDIC_READY, MDIC_READY, Duration::from_millis(100), "PHY write (MDIC.READY)")?;
        if v & MDIC_ERROR != 0 {
            return Err(DriverError::Phy(format!("MDIC error writing PHY register {reg}")));
        }
        Ok(())
    }

    fn reset_hw(&mut self) -> Result<(), DriverError> {
        // Stop DMA mastering, then reset the MAC (datasheet 4.6.1; Linux e1000_reset_hw_82571).
        let ctrl = self.t.read32(CTRL)?;
        self.t.write32(CTRL, ctrl | CTRL_GIO_MASTER_DISABLE)?;
        self.wait_reg(STATUS, STATUS_GIO_MASTER_ENABLE, 0, Duration::from_millis(800), "GIO master disable")?;
        self.t.write32(IMC, 0xFFFF_FFFF)?;
        self.t.write32(RCTL, 0)?;
        self.t.write32(TCTL, TCTL_PSP)?;
        let ctrl = self.t.read32(CTRL)?;
        self.t.write32(CTRL, ctrl | CTRL_RST)?;
        // The datasheet's settle time after a reset; a fuzzed card has none to wait for.
        if !cfg!(fuzzing) {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.wait_reg(EECD, EECD_AUTO_RD, EECD_AUTO_RD, Duration::from_millis(500), "NVM auto-read after reset")?;
        self.t.write32(IMC, 0xFFFF_FFFF)?;
        let _ = self.t.read32(ICR)?;
        Ok(())
    }

    /// Brings the card up over `t`.
    pub fn open(mut t: Box<dyn Transport>, cfg: Config) -> Result<E1000e, DriverError> {
        let mut id = [0u8; 4];
        t.config_read(PCI_VENDOR_ID, &mut id)?;
        let (vendor, device) = (u16::from_le_bytes([id[0], id[1]]), u16::from_le_bytes([id[2], id[3]]));
        if (vendor, device) != (PCI_VENDOR_INTEL, PCI_DEVICE_82574L) {
            return Err(DriverError::WrongDevice { vendor, device });
        }
        // Function-level reset first, so nothing a previous user left running touches our memory.
        if let Err(e) = t.reset() {
            log::warn!("{}: function reset not available ({e}); continuing with the MAC reset", t.describe());
        }
        let mut cmd = [0u8; 2];
        t.config_read(PCI_COMMAND, &mut cmd)?;
        let cmd = u16::from_le_bytes(cmd) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        t.config_write(PCI_COMMAND, &cmd.to_le_bytes())?;

        let (ntx, nrx) = (cfg.tx_ring.clamp(8, 4096) & !7, cfg.rx_ring.clamp(8, 4096) & !7);
        // Layout: TX rings, RX rings, then the buffers.
        let ring_bytes = |n: u32| (n as usize * 16).div_ceil(4096) * 4096;
        let mut off = 0;
        let mut alloc = |len: usize| {
            let o = off;
            off += len;
            o
        };
        let txd = [alloc(ring_bytes(ntx)), alloc(ring_bytes(ntx))];
        let rxd = [alloc(ring_bytes(nrx)), alloc(ring_bytes(nrx))];
        let txb = [alloc(ntx as usize * BUF_SIZE), alloc(ntx as usize * BUF_SIZE)];
        let rxb = [alloc(nrx as usize * BUF_SIZE), alloc(nrx as usize * BUF_SIZE)];
        let mut mem = DmaRegion::new(off)?;
        t.map_dma(&mut mem, cfg.iova_base)?;
        let mk_tx = |q: usize| TxRing {
            desc: txd[q],
            bufs: txb[q],
            n: ntx,
            next_to_use: 0,
            next_to_clean: 0,
            eop_of: vec![None; ntx as usize],
            done_at: vec![0; ntx as usize],
            group: Vec::with_capacity(RS_EVERY),
            last_ctx: None,
            stalled_since: None,
            stalled_polls: 0,
            bytes_of: vec![0; ntx as usize],
            // At least two of the largest (TSO) packets; at most what the ring's buffers hold.
            bql: cfg.bql.then(|| crate::bql::Dql::new(2 * (65536 + 256), ntx as usize * BUF_SIZE)),
            rung_tail: 0,
        };
        let mk_rx = |q: usize| RxRing {
            desc: rxd[q],
            bufs: rxb[q],
            n: nrx,
            next_to_clean: 0,
            unrefilled: 0,
            refill_batch: rx_refill_batch(nrx),
            partial: Vec::new(),
        };
        let mut d = E1000e {
            t,
            mem,
            tx: [mk_tx(0), mk_tx(1)],
            rx: [mk_rx(0), mk_rx(1)],
            mac: [0; 6],
            irq_kind: None,
            irq_fds: Vec::new(),
            ims: 0,
            irq_masked: false,
            irq_check: false,
            ims_tx: 0,
            tx_wait: false,
            tx_armed: false,
            stats: Stats::default(),
            last_alive: Instant::now(),
            slept: false,
            idle_waits: 0,
            tx_timeout: cfg.tx_timeout,
            mta: [0; 128],
            vfta: [0; 128],
            rctl: 0,
            rss: cfg.rss,
            busy_poll: cfg.busy_poll,
            xdp: None,
            xdp_stats: XdpStats::default(),
            xdp_tx: Vec::new(),
            xdp_redirected: Vec::new(),
            spare: Vec::new(),
            rx_source: None,
        };
        d.t.write32(IMC, 0xFFFF_FFFF)?;
        d.t.write32(EIAC_82574, 0)?;
        d.reset_hw()?;

        // NVM checksum.
        let mut sum = 0u16;
        for w in 0..=NVM_CHECKSUM_REG {
            sum = sum.wrapping_add(d.nvm_read(w)?);
        }
        if sum != NVM_SUM {
            return Err(DriverError::BadNvmChecksum(sum));
        }
        // Station address: the card copied NVM words 0-2 into RAR0 at reset.
        let (ral, rah) = (d.t.read32(RAL0)?, d.t.read32(RAH0)?);
        if rah & RAH_AV == 0 {
            return Err(DriverError::Phy("RAR0 holds no valid address after reset".into()));
        }
        d.mac = [ral as u8, (ral >> 8) as u8, (ral >> 16) as u8, (ral >> 24) as u8, rah as u8, (rah >> 8) as u8];
        if d.mac[0] & 1 != 0 || d.mac == [0; 6] {
            let m = d.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            return Err(DriverError::InvalidMac(format!("{m} is {}", if d.mac[0] & 1 != 0 { "multicast" } else { "all zeros" })));
        }

        // PHY identity, under MDIO software ownership.
        let ext = d.t.read32(EXTCNF_CTRL)?;
        d.t.write32(EXTCNF_CTRL, ext | EXTCNF_CTRL_MDIO_SW_OWNERSHIP)?;
        d.wait_reg(
            EXTCNF_CTRL,
            EXTCNF_CTRL_MDIO_SW_OWNERSHIP,
            EXTCNF_CTRL_MDIO_SW_OWNERSHIP,
            Duration::from_millis(100),
            "MDIO ownership",
        )?;
        let phy_id = ((d.phy_read(PHY_ID1)? as u32) << 16) | d.phy_read(PHY_ID2)? as u32;
        if phy_id & !0xF != BME1000_E_PHY_ID {
            return Err(DriverError::Phy(format!("unexpected PHY ID {phy_id:#010x}")));
        }
        // Power up, autonegotiate.
        let bmcr = d.phy_read(PHY_CONTROL)?;
        d.phy_write(PHY_CONTROL, (bmcr & !MII_CR_POWER_DOWN) | MII_CR_AUTO_NEG_EN | MII_CR_RESTART_AUTO_NEG)?;
        let ext = d.t.read32(EXTCNF_CTRL)?;
        d.t.write32(EXTCNF_CTRL, ext & !EXTCNF_CTRL_MDIO_SW_OWNERSHIP)?;
        let ctrl = d.t.read32(CTRL)?;
        // VME: tags are inserted from TX descriptors and stripped into RX descriptors.
        d.t.write32(CTRL, (ctrl | CTRL_SLU | CTRL_ASDE | CTRL_VME) & !(CTRL_FRCSPD | CTRL_FRCDPX))?;
        let ext = d.t.read32(CTRL_EXT)?;
        d.t.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD)?;
        info!(
            "{}: 82574L {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, PHY {phy_id:#010x}",
            d.t.describe(),
            d.mac[0],
            d.mac[1],
            d.mac[2],
            d.mac[3],
            d.mac[4],
            d.mac[5]
        );

        d.setup_filters(cfg.promiscuous)?;
        d.setup_tx()?;
        d.setup_rx(cfg.promiscuous)?;
        d.setup_irqs(cfg.irq, cfg.itr)?;

        let t0 = Instant::now();
        loop {
            if d.t.read32(STATUS)? & STATUS_LU != 0 {
                break;
            }
            if t0.elapsed() > cfg.link_timeout {
                return Err(DriverError::LinkTimeout(cfg.link_timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let l = d.link()?;
        info!("link up, {} Mb/s {} duplex, interrupts: {:?}", l.speed_mbps, if l.full_duplex { "full" } else { "half" }, d.irq_kind);
        Ok(d)
    }

    fn setup_filters(&mut self, promiscuous: bool) -> Result<(), DriverError> {
        let m = self.mac;
        self.t.write32(RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]))?;
        self.t.write32(RAH0, u16::from_le_bytes([m[4], m[5]]) as u32 | RAH_AV)?;
        for i in 1..16 {
            self.t.write32(RAL0 + 8 * i, 0)?;
            self.t.write32(RAH0 + 8 * i, 0)?;
        }
        self.mta = [if promiscuous { 0xFFFF_FFFF } else { 0 }; 128];
        for i in 0..128 {
            self.t.write32(MTA + 4 * i, self.mta[i as usize])?;
            self.t.write32(VFTA + 4 * i, 0)?;
        }
        Ok(())
    }

    fn setup_tx(&mut self) -> Result<(), DriverError> {
        for q in 0..2 {
            let o = q as u32 * QUEUE_1;
            let base = self.mem.iova + self.tx[q].desc as u64;
            self.t.write32(TDBAL + o, base as u32)?;
            self.t.write32(TDBAH + o, (base >> 32) as u32)?;
            self.t.write32(TDLEN + o, self.tx[q].n * 16)?;
            self.t.write32(TDH + o, 0)?;
            self.t.write32(TDT + o, 0)?;
            self.t.write32(TXDCTL + o, TXDCTL_GRAN | TXDCTL_COUNT_DESC | (1 << 16))?;
            let tarc = self.t.read32(TARC0 + o)?;
            self.t.write32(TARC0 + o, tarc | TARC_ENABLE)?;
        }
        self.t.write32(TIDV, 0)?;
        self.t.write32(TADV, 0)?;
        self.t.write32(TIPG, 8 | (8 << 10) | (6 << 20))?;
        self.t.write32(TCTL, TCTL_EN | TCTL_PSP | (0x0F << TCTL_CT_SHIFT) | (0x3F << TCTL_COLD_SHIFT) | TCTL_RTLC)?;
        Ok(())
    }

    fn setup_rx(&mut self, promiscuous: bool) -> Result<(), DriverError> {
        self.t.write32(RFCTL, RFCTL_EXTEN)?;
        if self.rss {
            for (i, w) in RSS_KEY.chunks(4).enumerate() {
                self.t.write32(RSSRK + 4 * i as u32, u32::from_le_bytes([w[0], w[1], w[2], w[3]]))?;
            }
            // Entries alternate between the queues.
            for i in 0..32u32 {
                self.t.write32(RETA + 4 * i, u32::from_le_bytes([0, RETA_QUEUE1, 0, RETA_QUEUE1]))?;
            }
            self.t.write32(
                MRQC,
                MRQC_ENABLE_RSS | MRQC_RSS_FIELD_IPV4_TCP | MRQC_RSS_FIELD_IPV4 | MRQC_RSS_FIELD_IPV6_TCP | MRQC_RSS_FIELD_IPV6,
            )?;
        }
        self.t.write32(RXCSUM, RXCSUM_IPOFL | RXCSUM_TUOFL | if self.rss { RXCSUM_PCSD } else { 0 })?;
        self.t.write32(RDTR, 0)?;
        self.t.write32(RADV, 0)?;
        for q in 0..2 {
            let r = &self.rx[q];
            for i in 0..r.n as usize {
                self.mem.write_obj(r.desc + i * 16, RxRead { buffer: self.mem.iova + (r.bufs + i * BUF_SIZE) as u64, zero: 0 });
            }
            let o = q as u32 * QUEUE_1;
            let base = self.mem.iova + r.desc as u64;
            let n = r.n;
            self.mem.publish();
            self.t.write32(RDBAL + o, base as u32)?;
            self.t.write32(RDBAH + o, (base >> 32) as u32)?;
            self.t.write32(RDLEN + o, n * 16)?;
            self.t.write32(RDH + o, 0)?;
            self.t.write32(RDT + o, n - 1)?;
        }
        let mut rctl = RCTL_EN | RCTL_BAM | RCTL_SECRC;
        if promiscuous {
            rctl |= RCTL_UPE | RCTL_MPE;
        }
        self.t.write32(RCTL, rctl)?;
        self.rctl = rctl;
        Ok(())
    }

    fn setup_irqs(&mut self, mode: IrqMode, itr: u32) -> Result<(), DriverError> {
        let kinds = self.t.irq_kinds();
        let want = match mode {
            IrqMode::BusyPoll => None,
            IrqMode::Auto => kinds.first().map(|k| k.0),
            IrqMode::Msix => Some(IrqKind::Msix),
            IrqMode::Msi => Some(IrqKind::Msi),
            IrqMode::Intx => Some(IrqKind::Intx),
        };
        let itr_reg = if itr == 0 { 0 } else { (1_000_000_000 / (itr as u64 * 256)) as u32 };
        self.t.write32(ITR, itr_reg)?;
        let Some(kind) = want else {
            self.irq_kind = None;
            return Ok(());
        };
        if !kinds.iter().any(|k| k.0 == kind) {
            return Err(DriverError::Irq(format!("{kind:?} not offered by {}", self.t.describe())));
        }
        let cfg_cap = |t: &mut Box<dyn Transport>, id: u8| -> Result<Option<u64>, DriverError> {
            let mut p = [0u8; 1];
            t.config_read(PCI_CAPABILITY_LIST, &mut p)?;
            let mut at = p[0] as u64;
            for _ in 0..48 {
                if at == 0 {
                    break;
                }
                let mut h = [0u8; 2];
                t.config_read(at, &mut h)?;
                if h[0] == id {
                    return Ok(Some(at));
                }
                at = h[1] as u64;
            }
            Ok(None)
        };
        let mut cmd = [0u8; 2];
        self.t.config_read(PCI_COMMAND, &mut cmd)?;
        let mut cmd = u16::from_le_bytes(cmd);
        match kind {
            IrqKind::Msix => {
                let fds = (0..3).map(|_| eventfd()).collect::<std::io::Result<Vec<_>>>()?;
                self.t.enable_irqs(kind, &fds.iter().collect::<Vec<_>>())?;
                // For a server that does not emulate the MSI-X capability itself, enable it in config space.
                if let Some(cap) = cfg_cap(&mut self.t, PCI_CAP_ID_MSIX)? {
                    let mut mc = [0u8; 2];
                    self.t.config_read(cap + PCI_MSI_FLAGS, &mut mc)?;
                    let mc = (u16::from_le_bytes(mc) | PCI_MSIX_FLAGS_ENABLE) & !PCI_MSIX_FLAGS_MASKALL;
                    self.t.config_write(cap + PCI_MSI_FLAGS, &mc.to_le_bytes())?;
                }
                self.irq_fds = fds;
                // RXQ0/RXQ1 -> vector 0, TXQ0/TXQ1 -> vector 1, other -> vector 2.
                let ivar = IVAR_INT_ALLOC_VALID
                    | (IVAR_VALID | 2) << 16
                    | (IVAR_VALID | 1) << 12
                    | (IVAR_VALID | 1) << 8
                    | (IVAR_VALID) << 4
                    | IVAR_VALID;
                self.t.write32(IVAR, ivar)?;
                let queues = IMS_RXQ0 | IMS_RXQ1 | IMS_TXQ0 | IMS_TXQ1;
                let ext = self.t.read32(CTRL_EXT)?;
                self.t.write32(CTRL_EXT, (ext & !CTRL_EXT_IAME) | CTRL_EXT_EIAME | CTRL_EXT_PBA_CLR)?;
                self.t.write32(EIAC_82574, queues)?;
                // Auto-mask every cause on its message: interrupts stay off while we poll.
                self.t.write32(IAM, queues | IMS_OTHER)?;
                for v in 0..3 {
                    self.t.write32(EITR_82574_BASE + 4 * v, itr_reg)?;
                }
                self.ims = IMS_RXQ0 | IMS_RXQ1 | IMS_OTHER | IMS_LSC | IMS_RXO;
                self.ims_tx = IMS_TXQ0 | IMS_TXQ1;
            }
            IrqKind::Msi | IrqKind::Intx => {
                let fd = eventfd()?;
                self.t.enable_irqs(kind, &[&fd])?;
                if kind == IrqKind::Msi {
                    if let Some(cap) = cfg_cap(&mut self.t, PCI_CAP_ID_MSI)? {
                        let mut mc = [0u8; 2];
                        self.t.config_read(cap + PCI_MSI_FLAGS, &mut mc)?;
                        self.t.config_write(cap + PCI_MSI_FLAGS, &(u16::from_le_bytes(mc) | PCI_MSI_FLAGS_ENABLE).to_le_bytes())?;
                    }
                    cmd |= PCI_COMMAND_INTX_DISABLE;
                } else {
                    cmd &= !PCI_COMMAND_INTX_DISABLE;
                }
                self.t.config_write(PCI_COMMAND, &cmd.to_le_bytes())?;
                self.irq_fds = vec![fd];
                self.ims = IMS_RXT0 | IMS_LSC | IMS_RXO | IMS_RXDMT0;
                self.ims_tx = IMS_TXDW;
            }
        }
        self.irq_kind = Some(kind);
        self.t.write32(IMS, self.ims)?;
        debug!("interrupts: {kind:?}, IMS {:#x}", self.ims);
        Ok(())
    }

    pub fn irq_kind(&self) -> Option<IrqKind> {
        self.irq_kind
    }

    pub fn transport(&mut self) -> &mut dyn Transport {
        &mut *self.t
    }

    /// The card's statistics registers (clear on read): good packets and octets each way, missed packets.
    pub fn hw_stats(&mut self) -> Result<Vec<(&'static str, u64)>, DriverError> {
        let mut v = Vec::new();
        for (name, reg) in [("gprc", GPRC), ("gptc", GPTC), ("mpc", MPC), ("rnbc", RNBC), ("tsctc", TSCTC), ("crcerrs", CRCERRS)] {
            v.push((name, self.t.read32(reg)? as u64));
        }
        let gorc = self.t.read32(GORCL)? as u64 | (self.t.read32(GORCH)? as u64) << 32;
        let gotc = self.t.read32(GOTCL)? as u64 | (self.t.read32(GOTCH)? as u64) << 32;
        v.push(("gorc", gorc));
        v.push(("gotc", gotc));
        Ok(v)
    }

    // ---- transmit ----

    fn tx_free(&self, q: usize) -> u32 {
        let r = &self.tx[q];
        (r.next_to_clean + r.n - r.next_to_use - 1) % r.n
    }

    /// Reclaims completed transmits; a queue with work that completes nothing for `tx_timeout` is hung.
    /// `slept`: the poll follows a wait that slept.
    fn clean_tx(&mut self, q: usize, slept: bool) -> Result<(), DriverError> {
        let before = self.tx[q].next_to_clean;
        self.reclaim_tx(q);
        let r = &mut self.tx[q];
        if r.next_to_clean != before || r.next_to_clean == r.next_to_use {
            r.stalled_since = None;
            r.stalled_polls = 0;
            return Ok(());
        }
        // A busy-polling driver finds its queue stalled between most completions (RS comes once per
        // group), millions of times a second: the clock is read after a sleep and every
        // `STALL_CHECK_EVERY` stalled polls, not on each (a read on each was a fifth of a polling
        // driver's time in a profile).
        r.stalled_polls = r.stalled_polls.wrapping_add(1);
        if !slept && !r.stalled_polls.is_multiple_of(STALL_CHECK_EVERY) {
            return Ok(());
        }
        let since = *r.stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.tx_timeout {
            return Ok(());
        }
        let tail = r.next_to_use;
        let head = self.t.read32(TDH + q as u32 * QUEUE_1)?;
        Err(DriverError::TxHang { queue: q, head, tail, stalled: since.elapsed() })
    }

    fn reclaim_tx(&mut self, q: usize) {
        let r = &mut self.tx[q];
        let mut done = 0usize;
        while r.next_to_clean != r.next_to_use {
            let Some(eop) = r.eop_of[r.next_to_clean as usize] else {
                // A context-only slot or corrupted bookkeeping: step over it.
                r.next_to_clean = ring_next(r.next_to_clean, r.n);
                continue;
            };
            let done_at = r.done_at.get(r.next_to_clean as usize).copied().unwrap_or(eop);
            if self.mem.read_u8(r.desc + done_at as usize * 16 + TxDataDesc::STATUS_AT) & TXD_STAT_DD == 0 {
                break;
            }
            r.eop_of[r.next_to_clean as usize] = None;
            done += r.bytes_of.get(r.next_to_clean as usize).copied().unwrap_or(0) as usize;
            r.next_to_clean = ring_next(eop, r.n);
        }
        if let Some(d) = r.bql.as_mut().filter(|_| done > 0) {
            d.completed(done, Instant::now());
        }
    }

    /// The byte queue limit and the bytes in flight on queue `q`, when byte queue limits are on.
    pub fn bql(&self, q: usize) -> Option<&crate::bql::Dql> {
        self.tx.get(q)?.bql.as_ref()
    }

    /// The context descriptor a packet's offloads need, and the edits to make to the packet once it is
    /// queued (`OffloadEdits::apply_in`, in the driver's copy): worked out without touching it, so that a packet the ring has no
    /// room for stays as the caller gave it.
    fn offload_plan(p: &TxFrame) -> Result<Option<(TxContextDesc, OffloadEdits)>, DriverError> {
        let Some(c) = p.csum else { return Ok(None) };
        let d = p.data;
        let bad = || DriverError::BadPacket("offload offsets outside the packet");
        let l4_len_min = if c.tcp { 20 } else { 8 };
        if c.l3 >= c.l4 || c.l4 + l4_len_min > d.len() || c.l4 > 255 {
            return Err(bad());
        }
        let csum_off = c.l4 + if c.tcp { 16 } else { 6 };
        let proto = if c.tcp { 6u32 } else { 17 };
        let tso = p.tso.filter(|_| c.tcp);
        let hdrlen = if c.tcp { c.l4 + ((d[c.l4 + 12] >> 4) as usize) * 4 } else { c.l4 + 8 };
        if hdrlen > d.len() || hdrlen > 255 {
            return Err(bad());
        }
        let l4_len = d.len() - c.l4;
        let mut seed = if c.ipv4 {
            if c.l3 + 20 > c.l4 {
                return Err(bad());
            }
            csum16(&d[c.l3 + 12..c.l3 + 20], 0)
        } else {
            if c.l3 + 40 > c.l4 {
                return Err(bad());
            }
            csum16(&d[c.l3 + 8..c.l3 + 40], 0)
        } + proto;
        if tso.is_none() {
            seed += l4_len as u32;
        }
        // The pseudo-header sum goes into the checksum field; for TSO the card writes each segment's IP
        // length (and IPv4 header checksum) itself, so those start at zero.
        let mut edits = OffloadEdits { seed_at: csum_off, seed: fold(seed), zero: [None, None] };
        if tso.is_some() {
            edits.zero = if c.ipv4 { [Some(c.l3 + 2), Some(c.l3 + 10)] } else { [Some(c.l3 + 4), None] };
        }
        // Offsets within 255 bytes (checked above); IPv6 has no header checksum: IPCSO and IPCSE stay 0.
        let mut ctx = TxContextDesc {
            ipcss: c.l3 as u8,
            ipcso: if c.ipv4 { (c.l3 + 10) as u8 } else { 0 },
            ipcse: if c.ipv4 { (c.l4 - 1) as u16 } else { 0 },
            tucss: c.l4 as u8,
            tucso: csum_off as u8,
            tucse: 0,
            cmd_len: TXD_CMD_DEXT | if c.tcp { TXD_TUCMD_TCP } else { 0 } | if c.ipv4 { TXD_TUCMD_IP } else { 0 },
            ..Default::default()
        };
        if let Some(mss) = tso {
            ctx.cmd_len |= TXD_CMD_TSE | (d.len() - hdrlen) as u32;
            (ctx.hdrlen, ctx.mss) = (hdrlen as u8, mss);
        }
        Ok(Some((ctx, edits)))
    }

    /// Queues owned packets on queue `q` as `transmit_on` does; those queued are removed from `pkts`, and
    /// their vectors kept to receive into.
    fn transmit_owned(&mut self, q: usize, pkts: &mut Vec<TxPacket>) -> Result<usize, DriverError> {
        let taken = self.transmit_on(q, pkts.len(), &mut |i| pkts[i].frame())?;
        for p in pkts.drain(..taken) {
            self.keep_spare(p.data);
        }
        Ok(taken)
    }

    /// Queues packets `frame(0)..frame(n)` on queue `q`, copied into the ring's buffers, and rings the
    /// doorbell (`tx_doorbell`): how many were queued.
    fn transmit_on<'a>(&mut self, q: usize, n: usize, frame: &mut dyn FnMut(usize) -> TxFrame<'a>) -> Result<usize, DriverError> {
        self.clean_tx(q, self.slept)?;
        self.tx_wait = false;
        let mut sent = 0;
        // The last packet's EOP descriptor: where it lies and its command word, for RS at the end.
        let mut last_eop: Option<(usize, u32)> = None;
        for k in 0..n {
            let p = frame(k);
            // A packet the card cannot carry ends the batch before it: the packets already written go out
            // with this doorbell, and the next call reports it (first in line, nothing written) for the
            // caller to drop.
            let checked = if p.data.len() < 14 || p.data.len() > 65536 + 256 || (p.tso.is_none() && p.data.len() > 1518 + 4) {
                Err(DriverError::BadPacket("frame length"))
            } else {
                Self::offload_plan(&p)
            };
            let (ctx, edits) = match checked {
                Ok(plan) => plan.unzip(),
                Err(e) if k == 0 => return Err(e),
                Err(_) => break,
            };
            let r = &self.tx[q];
            let need_ctx = ctx.is_some() && ctx != r.last_ctx;
            let need = p.data.len().div_ceil(BUF_SIZE) + need_ctx as usize;
            debug_assert!(need <= MAX_DESC_PER_PKT);
            if (self.tx_free(q) as usize) < need {
                self.stats.tx_busy += 1;
                self.tx_wait = true;
                break;
            }
            if let Some(d) = self.tx[q].bql.as_mut() {
                if !d.may_queue() {
                    self.stats.tx_bql_stops += 1;
                    self.tx_wait = true;
                    break;
                }
            }
            let r = &mut self.tx[q];
            let first = r.next_to_use;
            if let Some(c) = ctx.filter(|_| need_ctx) {
                let at = r.desc + r.next_to_use as usize * 16;
                self.mem.write_obj(at, c);
                r.last_ctx = ctx;
                r.next_to_use = ring_next(r.next_to_use, r.n);
            }
            let popts = match (p.csum, p.tso) {
                (Some(c), Some(_)) if c.tcp => TXD_POPTS_TXSM | if c.ipv4 { TXD_POPTS_IXSM } else { 0 },
                (Some(_), _) => TXD_POPTS_TXSM,
                _ => 0,
            };
            let tse = if ctx.is_some() && p.tso.is_some() && p.csum.is_some_and(|c| c.tcp) { TXD_CMD_TSE } else { 0 };
            let vle = if p.vlan.is_some() { TXD_CMD_VLE } else { 0 };
            let chunks = p.data.chunks(BUF_SIZE).count();
            let mut last = r.next_to_use;
            r.group.push(first);
            let group_full = r.group.len() >= RS_EVERY;
            for (i, chunk) in p.data.chunks(BUF_SIZE).enumerate() {
                let idx = r.next_to_use as usize;
                let buf = r.bufs + idx * BUF_SIZE;
                self.mem.write_bytes(buf, chunk);
                if i == 0 {
                    // The offload edits, in the copy the card reads (all within the headers, so within
                    // the first buffer).
                    if let Some(e) = edits {
                        e.apply_in(&self.mem, buf, chunk.len());
                    }
                }
                let eop = match (i + 1 == chunks, group_full) {
                    (true, true) => TXD_CMD_EOP | TXD_CMD_RS,
                    (true, false) => TXD_CMD_EOP,
                    _ => 0,
                };
                let at = r.desc + idx * 16;
                let cmd_len = chunk.len() as u32 | TXD_DTYP_D | TXD_CMD_DEXT | TXD_CMD_IFCS | tse | vle | eop;
                let vlan = p.vlan.unwrap_or(0);
                self.mem.write_obj(at, TxDataDesc { addr: self.mem.iova + buf as u64, cmd_len, status: 0, popts, vlan });
                last_eop = Some((at, cmd_len));
                last = r.next_to_use;
                r.next_to_use = ring_next(r.next_to_use, r.n);
            }
            if group_full {
                r.close_group(last);
            }
            r.eop_of[first as usize] = Some(last);
            if let Some(b) = r.bytes_of.get_mut(first as usize) {
                *b = p.data.len() as u32;
            }
            if let Some(d) = r.bql.as_mut() {
                d.queued(p.data.len());
            }
            // The context slot (if any) belongs to the packet: clean from its first slot to its EOP.
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += p.data.len() as u64;
            sent = k + 1;
        }
        // The send's last packet reports the packets queued since the last RS.
        let r = &mut self.tx[q];
        if let (Some(&first), Some((at, cmd_len))) = (r.group.last(), last_eop) {
            if let Some(Some(eop)) = r.eop_of.get(first as usize) {
                let eop = *eop;
                self.mem.write_u32(at + TxDataDesc::CMD_LEN_AT, cmd_len | TXD_CMD_RS);
                r.close_group(eop);
            }
        }
        if sent > 0 {
            self.mem.publish();
            // Only a busy-polling driver is sure to be called again soon: with interrupts, every send
            // rings, as its caller may sleep next without a `wait` of ours (on descriptors of its own).
            let busy_polling = self.irq_fds.is_empty();
            if !self.tx_doorbell(q, !busy_polling)? {
                self.stats.tx_doorbells_deferred += 1;
            }
        }
        Ok(sent)
    }

    /// Hands the queued descriptors of queue `q` to the card (a TDT write) when the card has finished
    /// everything handed to it before, when `TX_DEFER_MAX` or more wait, when the card has completed
    /// nothing for `STALL_CHECK_EVERY` polls, or when `force`d (a driver with interrupts, or one closing).
    /// While the card is still busy with earlier sends, a busy-polling driver's new send waits for
    /// the next call: each doorbell is a message the device reads, and one for many sends costs what one
    /// for each did not (Linux's drivers batch theirs the same way, behind `xmit_more`). A busy card's
    /// completions are seen by the next `transmit` or `poll` (a busy-polling caller polls again at once),
    /// which rings for whatever waits, so nothing waits for a card that is idle; a card that stopped
    /// completing gets every doorbell again. Whether it rang.
    fn tx_doorbell(&mut self, q: usize, force: bool) -> Result<bool, DriverError> {
        let r = &self.tx[q];
        let tail = r.next_to_use;
        if tail == r.rung_tail {
            return Ok(false);
        }
        if !force {
            let waiting = (tail + r.n - r.rung_tail) % r.n;
            // The card finished all it was given when every descriptor up to the old tail is reclaimed
            // (both callers have just reclaimed): it never completes one it was not given, so
            // `next_to_clean` stops at `rung_tail`.
            let idle = r.next_to_clean == r.rung_tail;
            if !idle && waiting < TX_DEFER_MAX.min(r.n / 4) && r.stalled_polls < STALL_CHECK_EVERY {
                return Ok(false);
            }
        }
        self.t.write32_posted(TDT + q as u32 * QUEUE_1, tail)?;
        self.tx[q].rung_tail = tail;
        self.stats.tx_doorbells += 1;
        Ok(true)
    }

    /// Transmits on queue `q` (0 or 1).
    pub fn transmit_queue(&mut self, q: usize, pkts: &mut Vec<TxPacket>) -> Result<usize, DriverError> {
        self.transmit_owned(q.min(1), pkts)
    }

    // ---- receive ----

    fn clean_rx(&mut self, q: usize, budget: usize, out: &mut Vec<RxPacket>) -> Result<usize, DriverError> {
        let mut got = 0;
        while got < budget {
            let r = &self.rx[q];
            let idx = r.next_to_clean as usize;
            let at = r.desc + idx * 16;
            // Status first: the rest of the write-back is the card's until DD says otherwise.
            let staterr = self.mem.read_u32(at + RxWb::STATERR_AT);
            if staterr & RXD_STAT_DD == 0 {
                break;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let len = self.mem.read_u16(at + RxWb::LENGTH_AT) as usize;
            let vlan = self.mem.read_u16(at + RxWb::VLAN_AT);
            let buf = r.bufs + idx * BUF_SIZE;
            let mut bad = len > BUF_SIZE || staterr & RXD_ERR_FRAME != 0;
            let r = &mut self.rx[q];
            if !bad {
                let start = r.partial.len();
                if start + len > 16 * 1024 {
                    bad = true;
                } else {
                    self.mem.read_append(buf, len, &mut r.partial);
                }
            }
            // Hand the descriptor back in read format.
            self.mem.write_obj(at, RxRead { buffer: self.mem.iova + buf as u64, zero: 0 });
            r.next_to_clean = ring_next(r.next_to_clean, r.n);
            r.unrefilled += 1;
            if bad {
                self.stats.rx_errors += 1;
                r.partial.clear();
                // Skip the rest of this frame's descriptors, if any.
                continue;
            }
            if staterr & RXD_STAT_EOP == 0 {
                continue;
            }
            if self.xdp.is_some() {
                let rss_hash = self.rss.then(|| self.mem.read_u32(at + RxWb::RSS_AT));
                let meta = XdpMeta { queue: q, rss_hash, vlan: (staterr & RXD_STAT_VP != 0).then_some(vlan) };
                let act = self.run_xdp(q, &meta);
                if act != XdpAction::Pass {
                    got += 1;
                    // Buffers go back to the card at the same pace as for frames handed up.
                    if self.rx[q].unrefilled >= self.rx[q].refill_batch {
                        self.refill(q)?;
                    }
                    continue;
                }
            }
            // The next frame's vector: one kept from a sent packet, or the source's, with room for a
            // frame in one buffer (a longer one grows it).
            let next = self.spare.pop().or_else(|| self.rx_source.map(|f| f(BUF_SIZE))).unwrap_or_default();
            let r = &mut self.rx[q];
            let data = std::mem::replace(&mut r.partial, next);
            let csum = if staterr & RXD_STAT_IXSM != 0 || staterr & (RXD_STAT_TCPCS | RXD_STAT_UDPCS) == 0 {
                if staterr & RXD_ERR_IPE != 0 {
                    RxCsum::Bad
                } else {
                    RxCsum::None
                }
            } else if staterr & (RXD_ERR_TCPE | RXD_ERR_IPE) != 0 {
                RxCsum::Bad
            } else {
                RxCsum::Verified
            };
            match csum {
                RxCsum::Verified => self.stats.rx_csum_good += 1,
                RxCsum::Bad => self.stats.rx_csum_bad += 1,
                RxCsum::None => {}
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += data.len() as u64;
            out.push(RxPacket { data, csum, vlan: (staterr & RXD_STAT_VP != 0).then_some(vlan), queue: q });
            got += 1;
            if self.rx[q].unrefilled >= self.rx[q].refill_batch {
                self.refill(q)?;
            }
        }
        Ok(got)
    }

    /// Runs the attached program on queue `q`'s frame in its receive buffer and carries out all but PASS:
    /// a dropped frame's buffer is kept for the next one, TX frames wait for the end of the poll,
    /// redirected ones for the caller.
    fn run_xdp(&mut self, q: usize, meta: &XdpMeta) -> XdpAction {
        let Some(prog) = self.xdp.as_mut() else { return XdpAction::Pass };
        let r = &mut self.rx[q];
        let mut f = XdpFrame::new(&mut r.partial);
        let mut act = prog.run(&mut f, meta);
        f.finish();
        if matches!(act, XdpAction::Tx | XdpAction::Redirect(_)) && !(14..=1518).contains(&r.partial.len()) {
            act = XdpAction::Aborted;
        }
        self.xdp_stats.count(act);
        match act {
            XdpAction::Pass => {}
            XdpAction::Drop | XdpAction::Aborted => r.partial.clear(),
            XdpAction::Tx => self.xdp_tx.push(TxPacket::plain(std::mem::take(&mut r.partial))),
            XdpAction::Redirect(to) => {
                let data = std::mem::take(&mut r.partial);
                if self.xdp_redirected.len() < XDP_REDIRECT_MAX {
                    self.xdp_redirected.push((to, data, *meta));
                } else {
                    self.xdp_stats.redirect -= 1;
                    self.xdp_stats.drop += 1;
                }
            }
        }
        act
    }

    /// Sends the poll's XDP_TX frames with one doorbell; what the ring cannot take is dropped and counted.
    fn flush_xdp_tx(&mut self) -> Result<(), DriverError> {
        if self.xdp_tx.is_empty() {
            return Ok(());
        }
        let mut pkts = std::mem::take(&mut self.xdp_tx);
        let r = self.transmit_owned(0, &mut pkts);
        self.xdp_stats.tx_errors += pkts.len() as u64;
        pkts.clear();
        self.xdp_tx = pkts;
        r.map(|_| ())
    }

    /// Attaches an XDP program (or detaches, with `None`).
    pub fn set_xdp(&mut self, prog: Option<Box<dyn XdpProgram + Send>>) {
        self.xdp = prog;
    }

    pub fn xdp_stats(&self) -> XdpStats {
        self.xdp_stats
    }

    /// The frames programs redirected since the last call, with their targets.
    pub fn take_redirected(&mut self) -> Vec<(u32, Vec<u8>, XdpMeta)> {
        std::mem::take(&mut self.xdp_redirected)
    }

    /// Descriptors per transmit and receive ring, as the card was set up (`Config` rounded down to a
    /// multiple of 8, within 8-4096).
    pub fn ring_sizes(&self) -> (u32, u32) {
        (self.tx[0].n, self.rx[0].n)
    }

    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_MAX && buf.capacity() > 0 && buf.capacity() <= SPARE_CAPACITY_MAX {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Whether the card wrote back a received frame not yet cleaned (a memory read, no register access).
    fn rx_ready(&self) -> bool {
        self.rx.iter().any(|r| self.mem.read_u32(r.desc + r.next_to_clean as usize * 16 + RxWb::STATERR_AT) & RXD_STAT_DD != 0)
    }

    /// Receive buffers of queue `q` cleaned but not yet given back to the card (fewer than the refill
    /// batch, and than a quarter of the ring, after any poll).
    pub fn rx_unrefilled(&self, q: usize) -> u32 {
        self.rx.get(q).map_or(0, |r| r.unrefilled)
    }

    /// Gives cleaned descriptors back to the card: RDT points at the last one.
    fn refill(&mut self, q: usize) -> Result<(), DriverError> {
        let r = &mut self.rx[q];
        if r.unrefilled == 0 {
            return Ok(());
        }
        r.unrefilled = 0;
        let tail = (r.next_to_clean + r.n - 1) % r.n;
        self.mem.publish();
        self.t.write32_posted(RDT + q as u32 * QUEUE_1, tail)?;
        Ok(())
    }

    /// Checks that the card still answers (a register read); used by callers that idle.
    pub fn check_alive(&mut self) -> Result<(), DriverError> {
        let s = self.t.read32(STATUS)?;
        if s == 0xFFFF_FFFF {
            return Err(DriverError::Gone);
        }
        self.last_alive = Instant::now();
        Ok(())
    }

    /// Before sleeping on the interrupt eventfds (`wait`, or a caller's own poll over several devices):
    /// interrupts enabled again if the last one's work was not polled, or transmit completions armed for
    /// a send that waits for room.
    fn prepare_sleep(&mut self) -> Result<(), DriverError> {
        if self.irq_masked {
            // Waiting without having polled the work that raised the last interrupt: enable first.
            self.irq_masked = false;
            self.rearm()?;
        } else if self.tx_wait && !self.tx_armed && self.irq_kind.is_some() {
            // A send waits for room: transmit completions must wake us.
            self.tx_armed = true;
            self.t.write32_posted(IMS, self.ims_tx)?;
        }
        Ok(())
    }

    /// After sleeping on the interrupt eventfds: `ready[i]` whether vector i's fired. The fired ones are
    /// read and counted, and the card's mask state noted for the next poll to re-enable; none fired (a
    /// timeout, or another device woke the caller) is an idle sleep.
    fn after_sleep(&mut self, ready: &[bool]) -> Result<(), DriverError> {
        self.slept = true;
        if !ready.iter().any(|&r| r) {
            // An interrupt that never came (lost on the way) may have left the card's auto-mask on: the
            // poll after this wait enables interrupts again if it finds work, and once a second they are
            // enabled again regardless, as Linux's watchdog does. Not on every idle timeout: each would be
            // a register write for the card to handle.
            self.irq_check = true;
            if self.last_alive.elapsed() > Duration::from_secs(1) {
                self.check_alive()?;
                self.irq_masked = true;
            }
            return Ok(());
        }
        let mut other = false;
        for (i, (_, f)) in ready.iter().zip(&self.irq_fds).enumerate().filter(|(_, (r, _))| **r) {
            let mut v = [0u8; 8];
            // SAFETY: reading the 8-byte counter of our own (non-blocking) eventfd into a local buffer.
            unsafe { libc::read(f.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
            self.stats.interrupts += 1;
            if i == 2 {
                other = true;
            }
        }
        match self.irq_kind {
            Some(IrqKind::Msix) if other => {
                // The Other vector: link changes and errors. Reading ICR clears it (slow path, rare).
                let icr = self.t.read32(ICR)?;
                debug!("other interrupt, ICR {icr:#x}");
            }
            Some(IrqKind::Msi) | Some(IrqKind::Intx) => {
                // Mask, acknowledge, then poll; `rearm` re-enables. Writes only, posted.
                self.t.write32_posted(IMC, 0xFFFF_FFFF)?;
                self.t.write32_posted(ICR, 0xFFFF_FFFF)?;
            }
            _ => {}
        }
        self.irq_masked = true;
        self.tx_armed = false;
        self.last_alive = Instant::now();
        Ok(())
    }

    fn rearm(&mut self) -> Result<(), DriverError> {
        let ims = self.ims | if self.tx_wait { self.ims_tx } else { 0 };
        self.tx_armed = self.tx_wait;
        match self.irq_kind {
            Some(IrqKind::Intx) => {
                self.t.write32_posted(IMS, ims)?;
                self.t.unmask_intx()?;
            }
            Some(_) => self.t.write32_posted(IMS, ims)?,
            None => {}
        }
        Ok(())
    }
}

impl NetDev for E1000e {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn mtu(&self) -> usize {
        1500
    }
    fn features(&self) -> Features {
        Features { tso: true, tx_csum: true, rx_csum: true, vlan: true }
    }
    fn link(&mut self) -> Result<LinkState, DriverError> {
        let s = self.t.read32(STATUS)?;
        if s == 0xFFFF_FFFF {
            return Err(DriverError::Gone);
        }
        let speed = match (s >> STATUS_SPEED_SHIFT) & 3 {
            0 => 10,
            1 => 100,
            _ => 1000,
        };
        Ok(LinkState { up: s & STATUS_LU != 0, speed_mbps: speed, full_duplex: s & STATUS_FD != 0 })
    }
    fn transmit(&mut self, pkts: &mut Vec<TxPacket>) -> Result<usize, DriverError> {
        self.transmit_owned(0, pkts)
    }
    fn transmit_lent<'a>(&mut self, n: usize, frame: &mut dyn FnMut(usize) -> TxFrame<'a>) -> Result<usize, DriverError> {
        self.transmit_on(0, n, frame)
    }
    fn set_rx_source(&mut self, source: fn(usize) -> Vec<u8>) {
        self.rx_source = Some(source);
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<RxPacket>) -> Result<usize, DriverError> {
        self.stats.polls += 1;
        let cleaned = (self.tx[0].next_to_clean, self.tx[1].next_to_clean);
        let slept = std::mem::take(&mut self.slept);
        self.clean_tx(0, slept)?;
        self.clean_tx(1, slept)?;
        self.tx_doorbell(0, false)?;
        self.tx_doorbell(1, false)?;
        let mut n = self.clean_rx(0, budget, out)?;
        if n < budget {
            n += self.clean_rx(1, budget - n, out)?;
        }
        if std::mem::take(&mut self.irq_check) && (n > 0 || cleaned != (self.tx[0].next_to_clean, self.tx[1].next_to_clean)) {
            self.irq_masked = true;
        }
        self.flush_xdp_tx()?;
        if n < budget {
            // Under budget (NAPI complete): hand the cleaned buffers back once a batch has gathered (as
            // Linux's e1000e writes its tail only every E1000_RX_BUFFER_WRITE buffers: at low rates one RDT
            // write per batch of frames rather than per frame) and turn interrupts on again.
            for q in 0..2 {
                if self.rx[q].unrefilled >= rx_refill_at_rest(self.rx[q].n, self.rx[q].refill_batch) {
                    self.refill(q)?;
                }
            }
            if self.irq_masked {
                self.irq_masked = false;
                self.rearm()?;
            }
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: Duration) -> Result<bool, DriverError> {
        if self.irq_fds.is_empty() {
            // Busy polling never sleeps: the caller polls again at once. The thread only yields, so that
            // other work on its core (the device, on a small machine) still runs.
            let _ = timeout;
            std::thread::yield_now();
            self.idle_waits = self.idle_waits.wrapping_add(1);
            if self.idle_waits.is_multiple_of(STALL_CHECK_EVERY) && self.last_alive.elapsed() > Duration::from_secs(1) {
                self.check_alive()?;
            }
            return Ok(false);
        }
        if !self.busy_poll.is_zero() {
            // Latency mode: a frame that lands within the busy-poll time is seen without an interrupt's
            // round trip through the eventfd and the scheduler. Each turn yields, so that a device on the
            // same cores keeps running.
            let end = Instant::now() + self.busy_poll.min(timeout);
            while Instant::now() < end {
                if self.rx_ready() {
                    self.stats.busy_poll_hits += 1;
                    return Ok(true);
                }
                std::thread::yield_now();
            }
        }
        self.prepare_sleep()?;
        // At most three vectors (MSI-X RX, TX, other): on the stack, nothing allocated per wait.
        let mut fds = [libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 }; 3];
        let n = self.irq_fds.len().min(fds.len());
        for (p, f) in fds.iter_mut().zip(&self.irq_fds) {
            p.fd = f.as_raw_fd();
        }
        let pfds = &mut fds[..n];
        let r = nic_tap::wait_readable(pfds, timeout);
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e.into());
        }
        let mut ready = [false; 3];
        for (r, p) in ready.iter_mut().zip(pfds.iter()) {
            *r = p.revents & libc::POLLIN != 0;
        }
        self.after_sleep(&ready[..n])?;
        Ok(r > 0)
    }
    fn wait_fds(&mut self, out: &mut Vec<RawFd>) -> Result<bool, DriverError> {
        if self.irq_fds.is_empty() {
            return Ok(false);
        }
        self.prepare_sleep()?;
        out.extend(self.irq_fds.iter().take(3).map(|f| f.as_raw_fd()));
        Ok(true)
    }
    fn woke(&mut self, ready: &[bool]) -> Result<(), DriverError> {
        if self.irq_fds.is_empty() {
            return Ok(());
        }
        self.after_sleep(ready)
    }
    fn stats(&self) -> Stats {
        self.stats.clone()
    }
    fn add_vlan(&mut self, vid: u16) -> Result<(), DriverError> {
        let (reg, bit) = ((usize::from(vid) >> 5) & 127, u32::from(vid) & 31);
        if self.vfta[reg] & (1 << bit) == 0 {
            self.vfta[reg] |= 1 << bit;
            self.t.write32(VFTA + 4 * reg as u32, self.vfta[reg])?;
        }
        if self.rctl & RCTL_VFE == 0 {
            self.rctl |= RCTL_VFE;
            self.t.write32(RCTL, self.rctl)?;
        }
        Ok(())
    }
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        let (reg, bit) = mta_bit(mac);
        if self.mta[reg] & (1 << bit) == 0 {
            self.mta[reg] |= 1 << bit;
            self.t.write32(MTA + 4 * reg as u32, self.mta[reg])?;
        }
        Ok(())
    }
    fn set_xdp(&mut self, prog: Option<Box<dyn XdpProgram + Send>>) {
        E1000e::set_xdp(self, prog)
    }
    fn xdp_stats(&self) -> XdpStats {
        E1000e::xdp_stats(self)
    }
    fn take_redirected(&mut self) -> Vec<(u32, Vec<u8>, XdpMeta)> {
        E1000e::take_redirected(self)
    }
}

impl Drop for E1000e {
    fn drop(&mut self) {
        // Sends a busy-polling driver held back for a busy card go to it as they would have before the
        // close (the card takes the doorbell before it is told to stop).
        let _ = self.tx_doorbell(0, true);
        let _ = self.tx_doorbell(1, true);
        // Quiesce the card before its DMA memory goes away.
        let _ = self.t.write32(IMC, 0xFFFF_FFFF);
        let _ = self.t.write32(RCTL, 0);
        let _ = self.t.write32(TCTL, 0);
        if let Some(k) = self.irq_kind {
            let _ = self.t.disable_irqs(k);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// The 16 bytes `d` puts in DMA memory.
    fn bytes_of<T: vm_memory::ByteValued>(d: T) -> [u8; 16] {
        let m = DmaRegion::new(16).unwrap();
        m.write_obj(0, d);
        let mut b = [0u8; 16];
        m.read_bytes(0, &mut b);
        b
    }

    /// The context descriptor for TSO of a TCP/IPv4 packet (14-byte Ethernet, 20-byte IPv4 and TCP headers,
    /// 3,000 bytes of payload, MSS 1448), byte for byte as the datasheet lays it out: IPCSS 14, IPCSO 24,
    /// IPCSE 33, TUCSS 34, TUCSO 50, TUCSE 0; PAYLEN 3000 with TUCMD DEXT|TSE|IP|TCP; HDRLEN 54; MSS 1448.
    /// Then UDP/IPv6 checksum offload: no IP checksum, TUCSO 6 into UDP, no TSO fields.
    #[test]
    fn context_descriptor_hand_vectors() {
        let mut data = vec![0u8; 14 + 20 + 20 + 3000];
        data[14 + 20 + 12] = 5 << 4; // TCP data offset: 20 bytes
        let csum = TxCsum { l3: 14, l4: 34, ipv4: true, tcp: true };
        let mut p = TxPacket { data, csum: Some(csum), tso: Some(1448), vlan: None };
        p.data[14 + 2..14 + 4].copy_from_slice(&[0x0B, 0xEA]); // IP total length 3,050
        p.data[14 + 10..14 + 12].copy_from_slice(&[0x12, 0x34]); // a stale IP header checksum
        let (ctx, edits) = E1000e::offload_plan(&p.frame()).unwrap().unwrap();
        let want = [0x0E, 0x18, 0x21, 0x00, 0x22, 0x32, 0x00, 0x00, 0xB8, 0x0B, 0x00, 0x27, 0x00, 0x36, 0xA8, 0x05];
        assert_eq!(bytes_of(ctx), want);
        // Queued, the packet's copy in the ring's buffer takes the pseudo-header sum (all-zero addresses:
        // just the protocol, 6; TSO leaves the length out) at TUCSO, and zeroed IP length and header
        // checksum; the caller's packet is left as it was.
        let m = DmaRegion::new(4096).unwrap();
        m.write_bytes(64, &p.data[..BUF_SIZE]);
        edits.apply_in(&m, 64, BUF_SIZE);
        let mut copy = vec![0u8; BUF_SIZE];
        m.read_bytes(64, &mut copy);
        assert_eq!(copy[50..52], [0x00, 0x06]);
        assert_eq!(copy[16..18], [0, 0]);
        assert_eq!(copy[24..26], [0, 0]);
        assert_eq!(copy[52..], p.data[52..BUF_SIZE], "only the three fields change");
        assert_eq!(p.data[16..18], [0x0B, 0xEA], "the lent packet is not changed");
        assert_eq!(p.data[24..26], [0x12, 0x34]);
        // A copy of only 20 bytes takes the edit within them (the IP length) and none beyond.
        let m = DmaRegion::new(4096).unwrap();
        m.write_bytes(0, &[0xFF; 60]);
        edits.apply_in(&m, 0, 20);
        let mut head = [0u8; 60];
        m.read_bytes(0, &mut head);
        assert_eq!(head[16..18], [0, 0]);
        assert!(head[..16].iter().chain(&head[18..]).all(|&b| b == 0xFF), "nothing written beyond the copy");
        let data = vec![0u8; 14 + 40 + 8 + 100];
        let csum = TxCsum { l3: 14, l4: 54, ipv4: false, tcp: false };
        let p = TxPacket { data, csum: Some(csum), tso: None, vlan: None };
        let (ctx, _) = E1000e::offload_plan(&p.frame()).unwrap().unwrap();
        let want = [0x0E, 0x00, 0x00, 0x00, 0x36, 0x3C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(bytes_of(ctx), want);
    }

    #[test]
    fn mta_bit_hand_vectors() {
        // 33:33:ff:12:34:56 (an IPv6 solicited-node group): bits 47:36 are 0x563 -> MTA[43], bit 3.
        assert_eq!(mta_bit([0x33, 0x33, 0xff, 0x12, 0x34, 0x56]), (43, 3));
        // 33:33:00:00:00:01 (all nodes): 0x010 -> MTA[0], bit 16.
        assert_eq!(mta_bit([0x33, 0x33, 0, 0, 0, 1]), (0, 16));
        // 01:00:5e:7f:ff:fa: 0xfaf -> MTA[125], bit 15.
        assert_eq!(mta_bit([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]), (125, 15));
    }

    #[test]
    fn receive_buffers_go_back_sixteen_at_a_time_or_a_sixteenth_of_a_deep_ring() {
        assert_eq!([8, 16, 256, 1024, 4096].map(rx_refill_batch), [16, 16, 16, 64, 256]);
        assert_eq!([8, 16, 256, 1024, 4096].map(|n| rx_refill_at_rest(n, rx_refill_batch(n))), [2, 4, 16, 64, 256]);
    }
}
