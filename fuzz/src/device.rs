//! The device model: config space, BAR0 (MMIO), BAR2 (IOADDR/IODATA) and BAR3 (MSI-X) accesses interleaved
//! with guest-memory writes (descriptors of every type, buffers, TSO contexts) and TX/RX ring processing.

use crate::input::Input;
use nic_device::metrics::Metrics;
use nic_device::nic::Nic;
use nic_device::regs::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Guest memory the harness maps: small, so that random addresses often land in it.
pub const MEM_BASE: u64 = 0x1_0000;
pub const MEM_SIZE: u64 = 0x1_0000;
const TX_RING: u64 = MEM_BASE;
const RX_RING: u64 = MEM_BASE + 0x1000;
const RING_BYTES: u32 = 16 * 16;

/// A card as a driver leaves it after bring-up: bus master on, both rings in guest memory, RX and TX on.
/// The input then changes any of it.
pub fn ready_nic() -> Nic {
    let mut n = Nic::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], Arc::new(Metrics::default()));
    n.dma = nic_device::dma::testing::space(MEM_BASE, MEM_SIZE);
    let _ = n.config_write(4, &0x0006u16.to_le_bytes());
    for (reg, v) in [
        (TDBAL0, TX_RING as u32),
        (TDLEN0, RING_BYTES),
        (RDBAL0, RX_RING as u32),
        (RDLEN0, RING_BYTES),
        (RDT0, 15),
        (RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC),
        (TCTL, TCTL_EN | TCTL_PSP),
    ] {
        let _ = n.bar0_write(u64::from(reg), &v.to_le_bytes());
    }
    // RX buffers for every descriptor, 2 KiB apart in the upper half of memory.
    for i in 0..16u64 {
        let _ = n.dma.write(RX_RING + i * 16, &(MEM_BASE + 0x8000 + (i % 4) * 0x800).to_le_bytes());
    }
    n
}

/// Runs both TX queues and receives `frame` (and a broadcast copy), then fires timers: what the data path
/// thread does with whatever state the input left.
pub fn run_rings(n: &mut Nic, frame: &[u8]) {
    n.apply_doorbells();
    for q in 0..2 {
        for _ in 0..4 {
            if !n.tx_pending(q) {
                break;
            }
            let p = n.process_tx(q, 64, &mut |_| {});
            if p.descriptors == 0 {
                break;
            }
        }
    }
    let mut f = frame.to_vec();
    f.resize(f.len().max(60), 0);
    let _ = n.receive(&f);
    if f.len() >= 6 {
        f[..6].fill(0xFF);
        let _ = n.receive(&f);
    }
    n.drain_rx_fifo();
    n.on_timer(Instant::now() + Duration::from_secs(1));
}

fn access_len(i: &mut Input) -> usize {
    [4, 1, 2, 8, 3, 0][usize::from(i.u8() % 6)]
}

/// Interprets the input as a sequence of operations on one card.
pub fn regs(data: &[u8]) {
    let mut n = ready_nic();
    let mut i = Input::new(data);
    // Half the inputs run with an offloading backend behind the card (TAP offload mode on transmit).
    n.gso_out = i.bool();
    let t0 = Instant::now();
    let mut clock = Duration::ZERO;
    let mut steps = 0;
    while !i.is_empty() && steps < 512 {
        steps += 1;
        match i.u8() % 16 {
            0 => {
                // A register write: offsets biased to the register file's first pages, any width.
                let off = u64::from(i.u16()) << u32::from(i.u8() % 2);
                let len = access_len(&mut i);
                let v = i.u64().to_le_bytes();
                let _ = n.bar0_write(off & !3, v.get(..len).unwrap_or(&[]));
            }
            1 => {
                let off = u64::from(i.u32()) % (BAR0_SIZE + 8);
                let mut b = vec![0u8; access_len(&mut i)];
                let _ = n.bar0_read(off, &mut b);
            }
            2 => {
                let off = u64::from(i.u16() % 4200);
                let len = access_len(&mut i);
                let v = i.u64().to_le_bytes();
                let _ = n.config_write(off, v.get(..len).unwrap_or(&[]));
            }
            3 => {
                let off = u64::from(i.u8() % 40);
                let len = access_len(&mut i);
                let v = i.u64().to_le_bytes();
                if i.bool() {
                    let _ = n.io_write(off, v.get(..len).unwrap_or(&[]));
                } else {
                    let mut b = vec![0u8; len];
                    let _ = n.io_read(off, &mut b);
                }
            }
            4 => {
                let off = u64::from(i.u16() % (BAR3_SIZE as u16 + 16));
                let mut b = vec![0u8; access_len(&mut i)];
                let _ = n.msix_bar_read(off, &mut b);
            }
            5 => {
                // Bytes anywhere in guest memory (buffers, headers for offloads).
                let at = MEM_BASE + u64::from(i.u16()) % MEM_SIZE;
                let len = usize::from(i.u8());
                let b = i.bytes(len);
                let _ = n.dma.write(at, b);
            }
            6 => {
                // A TX descriptor: legacy, context or data, as the input spells it, at a ring slot.
                let slot = u64::from(i.u8() % 16);
                let q = u64::from(i.u8() % 2);
                let mut d = [0u8; 16];
                let buf = MEM_BASE + 0x4000 + u64::from(i.u16() % 0x4000);
                d[..8].copy_from_slice(&if i.bool() { buf } else { i.u64() }.to_le_bytes());
                d[8..16].copy_from_slice(&i.array::<8>());
                let _ = n.dma.write(TX_RING + q * 0x800 + slot * 16, &d);
            }
            7 => {
                let q = usize::from(i.u8() % 2);
                let budget = usize::from(i.u8() % 64) + 1;
                if n.tx_pending(q) {
                    let _ = n.process_tx(q, budget, &mut |_| {});
                }
            }
            8 => {
                // A frame from the wire; the first byte picks our address, broadcast or the input's.
                let len = usize::from(i.u16() % 1600);
                let mut f = i.bytes(len).to_vec();
                match f.first().copied().unwrap_or(0) % 3 {
                    0 if f.len() >= 6 => f[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                    1 if f.len() >= 6 => f[..6].fill(0xFF),
                    _ => {}
                }
                let _ = n.receive(&f);
            }
            9 => {
                clock += Duration::from_micros(u64::from(i.u16()) * 8);
                n.on_timer(t0 + clock);
                let _ = n.next_deadline();
            }
            10 => {
                n.drain_rx_fifo();
            }
            11 => n.set_backend_carrier(i.bool()),
            13 => {
                // A fault from the control socket, then the read-only views of it (which read guest memory).
                let kinds = nic_device::fault::Kind::ALL;
                let k = kinds[usize::from(i.u8()) % kinds.len()];
                let mut f = nic_device::fault::Fault::new(k);
                f.count = if i.bool() { None } else { Some(u64::from(i.u8() % 4) + 1) };
                f.delay = Duration::from_micros(u64::from(i.u16()));
                f.queue = i.bool().then(|| usize::from(i.u8() % 2));
                if k == nic_device::fault::Kind::IrqSpurious {
                    n.spurious_irqs(u64::from(i.u8() % 3));
                } else {
                    n.faults.inject(f);
                }
                n.update_carrier(t0 + clock);
            }
            14 => {
                // The control socket's views, now and then (they build much JSON): `rings` decodes
                // descriptors from guest memory; the others format registers.
                let pick = i.u8();
                if pick.is_multiple_of(8) {
                    let _ = nic_device::control::inspect::rings(&n);
                }
                if pick.is_multiple_of(32) {
                    let _ = nic_device::control::inspect::irq(&n);
                    let _ = nic_device::control::inspect::stats(&n);
                    let names: Vec<String> = ["CTRL", "ICR", "RCTL", "RDT1", "MTA[3]"].iter().map(|s| s.to_string()).collect();
                    let _ = nic_device::control::inspect::regs(&n, &names);
                }
                if i.bool() {
                    n.faults.clear(None);
                }
            }
            12 => match i.u8() % 4 {
                0 => n.function_reset(),
                1 => n.intx_mask(),
                2 => n.intx_unmask(),
                _ => n.msix_fd_set(usize::from(i.u8() % 5)),
            },
            _ => {
                // The doorbells directly, as the guest rings them.
                let q = u32::from(i.u8() % 2) * QUEUE_STRIDE;
                let reg = if i.bool() { TDT0 } else { RDT0 };
                let _ = n.bar0_write(u64::from(reg + q), &u32::from(i.u8()).to_le_bytes());
            }
        }
    }
    run_rings(&mut n, &[0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
}

/// A frame as an offloading TAP hands it over (virtio-net header, then the frame), cut into wire frames;
/// or a TSO packet with a context from the input, turned into one GSO frame and cut back. Every segment
/// must hold at most the headers plus one MSS, and a GSO frame the card made must come back as the card's
/// own segmentation of the same packet.
pub fn vnet(data: &[u8]) {
    use nic_device::gso;
    use nic_device::offload::{self, TxContext};
    let mut i = Input::new(data);
    let Some(h) = nic_tap::VnetHdr::parse(&i.array::<10>()) else { return };
    if i.bool() {
        let frame = i.rest().to_vec();
        if let Ok(segs) = gso::to_wire(frame.clone(), &h) {
            if h.is_gso() {
                let most = frame.len().min(255 + usize::from(h.gso_size));
                assert!(segs.iter().all(|s| s.len() <= most), "a segment longer than headers plus MSS");
            } else {
                assert_eq!(segs.len(), 1);
            }
        }
        return;
    }
    let a = i.array::<8>();
    let ctx = TxContext {
        ipcss: a[0],
        ipcso: a[1],
        ipcse: u16::from_le_bytes([a[2], a[3]]),
        tucss: a[4],
        tucso: a[5],
        tucse: u16::from_le_bytes([a[6], a[7]]),
        paylen: 0,
        hdrlen: i.u8(),
        mss: i.u16(),
        tcp: i.bool(),
        ipv4: i.bool(),
        tse: true,
    };
    let (ixsm, txsm) = (i.bool(), i.bool());
    let pkt = i.rest().to_vec();
    let mut whole = pkt.clone();
    if let Ok(Some((hdr, n))) = gso::tso_frame(&mut whole, &ctx, ixsm, txsm) {
        let direct = offload::segment(&pkt, &ctx, ixsm, txsm);
        let again = gso::to_wire(whole, &hdr);
        if let (Ok(d), Ok(a)) = (&direct, &again) {
            assert_eq!(d.len(), n);
            assert_eq!(d, a, "the host's cut of our GSO frame differs from the card's own TSO");
        }
    }
    let mut f = pkt;
    let _ = gso::csum_frame(&mut f, &ctx, ixsm, txsm);
}
