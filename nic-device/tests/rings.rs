//! TX and RX descriptor processing against fake guest memory (a memfd, as QEMU's memory backend gives it),
//! driven the way a driver would: registers, descriptors, doorbells. Frames on the wire are checked with
//! etherparse, which shares no code with the device.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nic_device::pci;
use nic_device::regs::*;
use std::sync::atomic::Ordering;

fn eth_ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], MAC).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1000, 2000);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum()
}
fn fold(mut s: u32) -> u16 {
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

#[test]
fn legacy_descriptors_frame_over_three_buffers_with_dd_writeback() {
    let mut n = nic();
    setup_tx(&mut n);
    n.mmio_write(IMS, ICR_TXDW);
    let frame = eth_ipv4_udp(&[7u8; 300]);
    let parts = [&frame[..14], &frame[14..100], &frame[100..]];
    for (i, p) in parts.iter().enumerate() {
        let a = TX_BUFS + i as u64 * 0x1000;
        n.dma.write(a, p).unwrap();
        let last = i == parts.len() - 1;
        let cmd = TXD_CMD_IFCS | if last { TXD_CMD_EOP | TXD_CMD_RS } else { 0 };
        desc(&n, i as u32, a, legacy(p.len(), cmd), 0);
    }
    n.mmio_write(TDT0, 3);
    let out = run_tx(&mut n);
    assert_eq!(out, vec![frame.clone()]);
    assert_eq!(n.reg(TDH0), 3);
    let mut sta = [0u8; 1];
    n.dma.read(TX_RING + 2 * 16 + 12, &mut sta).unwrap();
    assert_eq!(sta[0] & TXD_STA_DD, TXD_STA_DD, "DD written where RS was set");
    n.dma.read(TX_RING + 12, &mut sta).unwrap();
    assert_eq!(sta[0] & TXD_STA_DD, 0, "no DD without RS");
    assert_ne!(n.intr.icr & ICR_TXDW, 0);
    assert_eq!(n.mmio_read(GPTC), 1);
    assert_eq!(n.mmio_read(GOTCL), frame.len() as u32 + 4);
}

#[test]
fn a_head_write_discards_the_half_gathered_packet() {
    let mut n = nic();
    setup_tx(&mut n);
    // The first buffer of a packet without its EOP: the engine holds it between passes.
    n.dma.write(TX_BUFS, &[0xEE; 64]).unwrap();
    desc(&n, 0, TX_BUFS, legacy(64, 0), 0);
    n.mmio_write(TDT0, 1);
    assert!(run_tx(&mut n).is_empty());
    assert_eq!(n.reg(TDH0), 1);
    // The driver resets the ring (TDH = TDT = 0) and sends a whole packet: only that packet leaves.
    n.mmio_write(TDH0, 0);
    n.mmio_write(TDT0, 0);
    let frame = eth_ipv4_udp(&[0x5A; 100]);
    n.dma.write(TX_BUFS + 0x1000, &frame).unwrap();
    desc(&n, 0, TX_BUFS + 0x1000, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 1);
    assert_eq!(run_tx(&mut n), vec![frame.clone()]);
    // The same after a MAC reset (CTRL.RST) that leaves a packet half gathered.
    desc(&n, 1, TX_BUFS, legacy(64, 0), 0);
    n.mmio_write(TDT0, 2);
    assert!(run_tx(&mut n).is_empty());
    n.mmio_write(CTRL, CTRL_RST);
    setup_tx(&mut n);
    desc(&n, 0, TX_BUFS + 0x1000, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 1);
    assert_eq!(run_tx(&mut n), vec![frame]);
}

#[test]
fn sent_frames_buffers_carry_the_next_packets() {
    let mut n = nic();
    setup_tx(&mut n);
    let first = eth_ipv4_udp(&[1u8; 600]);
    n.dma.write(TX_BUFS, &first).unwrap();
    desc(&n, 0, TX_BUFS, legacy(first.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 1);
    let mut out = run_tx(&mut n);
    assert_eq!(out, vec![first]);
    // The backend sent it; its buffer goes back to the engines.
    let at = out[0].as_ptr();
    n.recycle_tx(&mut out);
    assert_eq!(n.tx_spare(), 1);
    // The next packet after the one being gathered lands in it, with its own bytes only.
    let (second, third) = (eth_ipv4_udp(&[2u8; 100]), eth_ipv4_udp(&[3u8; 80]));
    n.dma.write(TX_BUFS + 0x1000, &second).unwrap();
    n.dma.write(TX_BUFS + 0x2000, &third).unwrap();
    desc(&n, 1, TX_BUFS + 0x1000, legacy(second.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    desc(&n, 2, TX_BUFS + 0x2000, legacy(third.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 3);
    let mut frames = Vec::new();
    n.process_tx(0, 64, &mut |f| frames.push(f.data));
    assert_eq!(frames, vec![second, third]);
    assert_eq!(frames[1].as_ptr(), at, "the recycled buffer carried the third packet");
}

#[test]
fn short_frames_are_padded_when_psp_is_set() {
    let mut n = nic();
    setup_tx(&mut n);
    let arp = vec![0xFFu8; 42];
    n.dma.write(TX_BUFS, &arp).unwrap();
    desc(&n, 0, TX_BUFS, legacy(42, TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 1);
    let out = run_tx(&mut n);
    assert_eq!(out[0].len(), 60);
    assert_eq!(&out[0][..42], &arp[..]);
}

#[test]
fn checksum_offload_for_udp_ipv4() {
    let mut n = nic();
    setup_tx(&mut n);
    let mut f = eth_ipv4_udp(b"hello, checksum offload!");
    // Driver-style: IP checksum zero (IXSM fills it), UDP field seeded with the pseudo-header sum.
    f[24] = 0;
    f[25] = 0;
    let udp_len = (f.len() - 34) as u32;
    let seed = fold(sum16(&f[26..34]) + 17 + udp_len);
    f[40..42].copy_from_slice(&seed.to_be_bytes());
    n.dma.write(TX_BUFS, &f).unwrap();
    let c = nic_device::offload::TxContext {
        ipcss: 14,
        ipcso: 24,
        ipcse: 33,
        tucss: 34,
        tucso: 40,
        tucse: 0,
        ipv4: true,
        ..Default::default()
    };
    ctx_desc(&n, 0, &c);
    let (lo, up) = data_desc(f.len(), TXD_CMD_EOP | TXD_CMD_RS | TXD_CMD_IFCS, TXD_POPTS_IXSM | TXD_POPTS_TXSM);
    desc(&n, 1, TX_BUFS, lo, up);
    n.mmio_write(TDT0, 2);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 1);
    let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!() };
    assert_eq!(ip.header().header_checksum(), ip.header().to_header().calc_header_checksum());
    let Some(TransportSlice::Udp(u)) = &p.transport else { panic!() };
    let expect = u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap();
    assert_eq!(u.checksum(), expect);
}

fn tcp_packet_v4(payload_len: usize, flags_fin_psh_cwr: bool) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], MAC)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1_000_000, 65535)
        .ack(5);
    if flags_fin_psh_cwr {
        b = b.fin().psh().cwr();
    }
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
    let mut v = Vec::new();
    b.write(&mut v, &payload).unwrap();
    v
}

#[test]
fn tso_ipv4_tcp_segments_are_correct() {
    let mut n = nic();
    setup_tx(&mut n);
    let mss = 1000usize;
    let mut f = tcp_packet_v4(4500, true);
    let hdr = 14 + 20 + 20;
    // As Linux prepares TSO: IP total length and checksum zero, TCP checksum = pseudo-header sum without length.
    f[16..18].copy_from_slice(&[0, 0]);
    f[24..26].copy_from_slice(&[0, 0]);
    let seed = fold(sum16(&f[26..34]) + 6);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    n.dma.write(TX_BUFS, &f[..hdr]).unwrap();
    n.dma.write(TX_BUFS + 0x1000, &f[hdr..]).unwrap();
    let c = tso_ctx_ipv4_tcp(hdr, mss, 4500);
    ctx_desc(&n, 0, &c);
    let popts = TXD_POPTS_IXSM | TXD_POPTS_TXSM;
    // The header and payload descriptors of the send, from ring slot `at`.
    let send = |n: &mut nic_device::nic::Nic, at: u32| {
        let (lo, up) = data_desc(hdr, TXD_CMD_TSE | TXD_CMD_IFCS, popts);
        desc(n, at, TX_BUFS, lo, up);
        let (lo, up) = data_desc(4500, TXD_CMD_TSE | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS, popts);
        desc(n, at + 1, TX_BUFS + 0x1000, lo, up);
        n.mmio_write(TDT0, at + 2);
    };
    send(&mut n, 1);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 5);
    let mut payload = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!() };
        let iph = ip.header().to_header();
        assert_eq!(ip.header().header_checksum(), iph.calc_header_checksum(), "segment {i} IP checksum");
        assert_eq!(ip.header().identification(), i as u16, "IP id +1 per segment");
        assert_eq!(ip.header().total_len() as usize, seg.len() - 14);
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!() };
        assert_eq!(t.sequence_number(), 1_000_000 + (i * mss) as u32);
        assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&iph, t.payload()).unwrap(), "segment {i} TCP checksum");
        let last = i == out.len() - 1;
        assert_eq!(t.fin(), last, "FIN only on the last segment");
        assert_eq!(t.psh(), last, "PSH only on the last segment");
        assert_eq!(t.cwr(), i == 0, "CWR only on the first segment");
        assert!(t.ack());
        assert_eq!(t.payload().len(), if last { 500 } else { mss });
        payload.extend_from_slice(t.payload());
    }
    assert_eq!(payload, f[hdr..].to_vec());
    assert_eq!(n.mmio_read(TSCTC), 1);
    // The backend sent them: the same send again is cut into those buffers, to the same bytes.
    let mut sent = out.clone();
    let ptrs: Vec<*const u8> = sent.iter().map(|v| v.as_ptr()).collect();
    n.recycle_tx(&mut sent);
    send(&mut n, 3);
    let again = run_tx(&mut n);
    assert_eq!(again, out, "the same segments, byte for byte");
    assert!(again.iter().filter(|v| ptrs.contains(&v.as_ptr())).count() >= 3, "segments built in recycled buffers");
}

#[test]
fn tso_ipv6_tcp_segments_are_correct() {
    let mut n = nic();
    setup_tx(&mut n);
    let payload: Vec<u8> = (0..3000).map(|i| i as u8).collect();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], MAC).ipv6([1; 16], [2; 16], 64).tcp(1, 2, 77, 1000);
    let mut f = Vec::new();
    b.write(&mut f, &payload).unwrap();
    let hdr = 14 + 40 + 20;
    f[18..20].copy_from_slice(&[0, 0]); // payload length 0, as Linux leaves it for TSO
    let seed = fold(sum16(&f[22..54]) + 6);
    f[70..72].copy_from_slice(&seed.to_be_bytes());
    n.dma.write(TX_BUFS, &f).unwrap();
    let c = nic_device::offload::TxContext {
        ipcss: 14,
        tucss: 54,
        tucso: 70,
        paylen: 3000,
        hdrlen: hdr as u8,
        mss: 1220,
        tcp: true,
        ipv4: false,
        tse: true,
        ..Default::default()
    };
    ctx_desc(&n, 0, &c);
    let (lo, up) = data_desc(f.len(), TXD_CMD_TSE | TXD_CMD_EOP | TXD_CMD_RS, TXD_POPTS_TXSM);
    desc(&n, 1, TX_BUFS, lo, up);
    n.mmio_write(TDT0, 2);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 3);
    for (i, seg) in out.iter().enumerate() {
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else { panic!() };
        assert_eq!(ip.header().payload_length() as usize, seg.len() - 54);
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!() };
        assert_eq!(t.sequence_number(), 77 + (i * 1220) as u32);
        assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv6(&ip.header().to_header(), t.payload()).unwrap());
    }
}

#[test]
fn descriptors_outside_guest_memory_are_counted_not_fatal() {
    let mut n = nic();
    setup_tx(&mut n);
    // A buffer address outside the map: the packet is dropped, the ring moves on.
    desc(&n, 0, 0xDEAD_0000_0000, legacy(100, TXD_CMD_EOP | TXD_CMD_RS), 0);
    let ok = eth_ipv4_udp(b"fine");
    n.dma.write(TX_BUFS, &ok).unwrap();
    desc(&n, 1, TX_BUFS, legacy(ok.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 2);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][..ok.len()], &ok[..]);
    assert_eq!(n.metrics.dma_errors.load(Ordering::Relaxed), 1);
    assert_eq!(n.metrics.tx_malformed.load(Ordering::Relaxed), 1);
    // The ring itself outside memory: nothing is fetched, nothing panics.
    n.mmio_write(TDBAL0, 0xF000_0000);
    n.mmio_write(TDH0, 0);
    n.mmio_write(TDT0, 5);
    assert!(run_tx(&mut n).is_empty());
    assert_eq!(n.reg(TDH0), 0);
    assert_eq!(n.metrics.dma_errors.load(Ordering::Relaxed), 2);
    // A tail beyond the ring is refused.
    n.mmio_write(TDBAL0, TX_RING as u32);
    n.mmio_write(TDT0, RING_LEN + 3);
    assert!(run_tx(&mut n).is_empty());
    // Three 64 KiB buffers (192 KiB) stay within the packet limit and go out.
    n.mmio_write(TDH0, 0);
    for i in 0..3 {
        desc(&n, i, MEM_BASE, legacy(0xFFFF, if i == 2 { TXD_CMD_EOP } else { 0 }), 0);
    }
    n.mmio_write(TDT0, 3);
    let before = n.metrics.tx_malformed.load(Ordering::Relaxed);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 1, "three 64 KiB buffers are within the limit");
    assert_eq!(out[0].len(), 3 * 0xFFFF);
    assert_eq!(n.metrics.tx_malformed.load(Ordering::Relaxed), before);
    // Five of them (320 KiB) pass MAX_TX_PACKET: gathering stops, the packet is dropped and counted at EOP,
    // and the ring moves on to the next packet.
    const _: () = assert!(5 * 0xFFFF > nic_device::tx::MAX_TX_PACKET && 3 * 0xFFFF <= nic_device::tx::MAX_TX_PACKET);
    for i in 3..8 {
        desc(&n, i, MEM_BASE, legacy(0xFFFF, if i == 7 { TXD_CMD_EOP } else { 0 }), 0);
    }
    desc(&n, 8, MEM_BASE, legacy(100, TXD_CMD_EOP), 0);
    n.mmio_write(TDT0, 9);
    let out = run_tx(&mut n);
    assert_eq!(out.len(), 1, "only the small packet after the oversized one goes out");
    assert_eq!(out[0].len(), 100);
    assert_eq!(n.metrics.tx_malformed.load(Ordering::Relaxed), before + 1);
    assert_eq!(n.reg(TDH0), 9, "every descriptor was consumed");
}

#[test]
fn no_dma_while_bus_mastering_is_off() {
    let mut n = nic();
    setup_tx(&mut n);
    let f = eth_ipv4_udp(b"x");
    n.dma.write(TX_BUFS, &f).unwrap();
    desc(&n, 0, TX_BUFS, legacy(f.len(), TXD_CMD_EOP), 0);
    n.config_write(pci::COMMAND as u64, &pci::COMMAND_MEMORY.to_le_bytes()).unwrap();
    n.mmio_write(TDT0, 1);
    assert!(!n.tx_pending(0));
    assert!(n.process_tx(0, 10, &mut |_| panic!("sent without bus mastering")).descriptors == 0);
}

// ---- receive ----

#[test]
fn rx_extended_descriptor_writeback_with_checksum_status() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    let f = eth_ipv4_udp(&[9u8; 200]);
    assert_eq!(n.receive(&f.clone()), nic_device::rx::RxOutcome::Delivered);
    let d = rx_desc(&n, 0);
    let staterr = u32::from_le_bytes(d[8..12].try_into().unwrap());
    let len = u16::from_le_bytes([d[12], d[13]]) as usize;
    assert_eq!(len, f.len());
    assert_eq!(staterr & (RXD_STAT_DD | RXD_STAT_EOP), RXD_STAT_DD | RXD_STAT_EOP);
    assert_eq!(staterr & (RXD_STAT_IPCS | RXD_STAT_UDPCS), RXD_STAT_IPCS | RXD_STAT_UDPCS);
    assert_eq!(staterr & (RXDEXT_ERR_IPE | RXDEXT_ERR_TCPE), 0);
    let mut buf = vec![0u8; len];
    n.dma.read(RX_BUFS, &mut buf).unwrap();
    assert_eq!(buf, f);
    assert_eq!(n.reg(RDH0), 1);
    assert_ne!(n.intr.icr & ICR_RXT0, 0);
    assert_eq!(n.mmio_read(GPRC), 1);
}

#[test]
fn rx_bad_l4_checksum_is_delivered_with_error_bit() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    let mut f = tcp_packet_v4(100, false);
    f[51] ^= 0x55;
    n.receive(&f);
    let d = rx_desc(&n, 0);
    let staterr = u32::from_le_bytes(d[8..12].try_into().unwrap());
    assert_ne!(staterr & RXD_STAT_TCPCS, 0);
    assert_ne!(staterr & RXDEXT_ERR_TCPE, 0);
    assert_eq!(staterr & RXDEXT_ERR_IPE, 0);
}

#[test]
fn rx_legacy_descriptors_span_small_buffers_and_append_crc_without_secrc() {
    let mut n = nic();
    setup_rx(&mut n, false, true);
    n.mmio_write(RCTL, n.reg(RCTL) & !RCTL_SECRC);
    let f = eth_ipv4_udp(&[1u8; 600]);
    n.receive(&f.clone());
    let total = f.len() + 4;
    let ndesc = total.div_ceil(256);
    let mut got = Vec::new();
    for i in 0..ndesc as u64 {
        let d = rx_desc(&n, i);
        let len = u16::from_le_bytes([d[8], d[9]]) as usize;
        assert_ne!(d[12] as u32 & RXD_STAT_DD, 0);
        assert_eq!(d[12] as u32 & RXD_STAT_EOP != 0, i as usize == ndesc - 1);
        let mut b = vec![0u8; len];
        n.dma.read(RX_BUFS + i * 0x1000, &mut b).unwrap();
        got.extend_from_slice(&b);
    }
    assert_eq!(&got[..f.len()], &f[..]);
    // The receiver's check, bit by bit: the CRC-32 over the frame and its FCS is the fixed residue.
    let mut crc = !0u32;
    for &b in &got {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    assert_eq!(!crc, 0x2144_DF1C, "the appended FCS does not check");
}

#[test]
fn rx_filters() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    use nic_device::rx::RxOutcome::*;
    let mut f = eth_ipv4_udp(b"x");
    f[..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    assert_eq!(n.receive(&f.clone()), Filtered, "other unicast");
    n.mmio_write(RCTL, n.reg(RCTL) | RCTL_UPE);
    assert_eq!(n.receive(&f.clone()), Delivered, "promiscuous");
    n.mmio_write(RCTL, n.reg(RCTL) & !RCTL_UPE);
    f[..6].copy_from_slice(&[0xFF; 6]);
    assert_eq!(n.receive(&f.clone()), Delivered, "broadcast with BAM");
    n.mmio_write(RCTL, n.reg(RCTL) & !RCTL_BAM);
    assert_eq!(n.receive(&f.clone()), Filtered, "broadcast without BAM");
    // Multicast 01:00:5e:00:00:fb with MO=0: hash = (0x00 >> 4) | (0xfb << 4) = 0xfb0.
    f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    assert_eq!(n.receive(&f.clone()), Filtered, "multicast not in MTA");
    let hash = 0xfb0u32;
    n.mmio_write(MTA + (hash >> 5) * 4, 1 << (hash & 31));
    assert_eq!(n.receive(&f.clone()), Delivered, "multicast in MTA");
    // A second exact address in RAR1.
    n.mmio_write(RAL0 + 8, u32::from_le_bytes([2, 0, 0, 0]));
    let mut g = eth_ipv4_udp(b"y");
    g[..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
    n.mmio_write(RAH0 + 8, u32::from_le_bytes([0, 7, 0, 0]) | RAH_AV);
    assert_eq!(n.receive(&g), Delivered, "RAR1 exact match");
    // Oversized without LPE.
    let mut big = eth_ipv4_udp(&[0u8; 1600]);
    big[..6].copy_from_slice(&MAC);
    assert_eq!(n.receive(&big), Dropped);
    assert_eq!(n.mmio_read(ROC), 1);
}

#[test]
fn ring_full_queues_in_fifo_then_misses_with_mpc() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    use nic_device::rx::RxOutcome::*;
    let f = eth_ipv4_udp(&[5u8; 1000]);
    // RDT = RING_LEN - 1: 63 descriptors free.
    for _ in 0..63 {
        assert_eq!(n.receive(&f.clone()), Delivered);
    }
    assert_ne!(n.intr.icr & ICR_RXDMT0, 0, "minimum threshold reached on the way");
    let mut queued = 0;
    let mut missed = 0;
    for _ in 0..40 {
        match n.receive(&f.clone()) {
            Queued => queued += 1,
            Missed => missed += 1,
            o => panic!("{o:?}"),
        }
    }
    assert!(queued > 0 && missed > 0);
    assert_eq!(n.mmio_read(MPC), missed);
    assert_ne!(n.intr.icr & ICR_RXO, 0);
    assert!(n.mmio_read(RNBC) >= queued);
    // The driver hands back descriptors: the FIFO drains into them in order.
    n.mmio_write(RDT0, 62);
    assert_eq!(n.drain_rx_fifo(), 63.min(queued as usize));
}

#[test]
fn rx_buffer_outside_guest_memory_is_counted() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    w64(&n, RX_RING, 0xBAD0_0000_0000);
    n.receive(&eth_ipv4_udp(b"z"));
    assert_eq!(n.metrics.dma_errors.load(Ordering::Relaxed), 1);
    // The descriptor is still completed, and the next frame lands normally.
    n.receive(&eth_ipv4_udp(b"z"));
    assert_eq!(n.reg(RDH0), 2);
}

#[test]
fn vlan_strip_and_filter() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    let mut f = eth_ipv4_udp(b"tagged");
    nic_device::offload::insert_vlan(&mut f, 0x8100, 0x2064);
    n.mmio_write(CTRL, n.reg(CTRL) | CTRL_VME);
    n.receive(&f.clone());
    let d = rx_desc(&n, 0);
    let staterr = u32::from_le_bytes(d[8..12].try_into().unwrap());
    assert_ne!(staterr & RXD_STAT_VP, 0);
    assert_eq!(u16::from_le_bytes([d[14], d[15]]), 0x2064);
    // The wire frame is at least 60 bytes; the tag comes out of it.
    assert_eq!(u16::from_le_bytes([d[12], d[13]]) as usize, f.len().max(60) - 4, "tag stripped");
    n.mmio_write(RCTL, n.reg(RCTL) | RCTL_VFE);
    assert_eq!(n.receive(&f.clone()), nic_device::rx::RxOutcome::Filtered, "VLAN 100 not in VFTA");
    n.mmio_write(VFTA + (100 >> 5) * 4, 1 << (100 & 31));
    assert_eq!(n.receive(&f), nic_device::rx::RxOutcome::Delivered);
}

#[test]
fn tx_queue_1_needs_tarc1_enable_and_raises_txq1() {
    let mut n = nic();
    n.mmio_write(TCTL, TCTL_EN | TCTL_PSP);
    let q1 = QUEUE_STRIDE;
    n.mmio_write(TDBAL0 + q1, TX_RING as u32);
    n.mmio_write(TDLEN0 + q1, RING_LEN * 16);
    let f = eth_ipv4_udp(b"queue one");
    n.dma.write(TX_BUFS, &f).unwrap();
    desc(&n, 0, TX_BUFS, legacy(f.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0 + q1, 1);
    assert!(!n.tx_pending(1), "TARC1.Enable is off after reset");
    n.mmio_write(TARC0 + q1, n.reg(TARC0 + q1) | TARC_ENABLE);
    assert!(n.tx_pending(1));
    let mut out = Vec::new();
    n.process_tx(1, 16, &mut |fr| out.push(fr.data));
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][..f.len()], &f[..]);
    assert_ne!(n.intr.icr & ICR_TXQ1, 0);
    assert_eq!(n.reg(TDH0 + q1), 1);
}

/// RDTR/RADV hold the receive interrupt (RXT0) until the packet timer or the absolute timer expires; FPD
/// releases it at once; RDTR 0 means no delay.
#[test]
fn receive_delay_timers_hold_rxt0() {
    let mut n = nic();
    setup_rx(&mut n, false, false);
    let frame = [[0xFF; 6].as_slice(), &[2, 0, 0, 0, 0, 1, 0x88, 0xB5], &[0u8; 50]].concat();
    // No delay: RXT0 with the frame.
    n.receive(&frame.clone());
    assert_ne!(n.mmio_read(ICR) & ICR_RXT0, 0);
    // 100 units (102.4 us) packet delay, 1000 units absolute.
    n.mmio_write(RDTR, 100);
    n.mmio_write(RADV, 1000);
    let t0 = std::time::Instant::now();
    n.receive(&frame.clone());
    assert_eq!(n.mmio_read(ICR) & ICR_RXT0, 0, "held by RDTR");
    let due = n.next_deadline().expect("a timer is running");
    assert!(due >= t0 + std::time::Duration::from_micros(100) && due <= std::time::Instant::now() + std::time::Duration::from_micros(103));
    n.on_timer(due + std::time::Duration::from_micros(1));
    assert_ne!(n.mmio_read(ICR) & ICR_RXT0, 0, "raised when the packet timer expired");
    // FPD flushes what is held.
    n.receive(&frame.clone());
    assert_eq!(n.mmio_read(ICR) & ICR_RXT0, 0);
    n.mmio_write(RDTR, 100 | DELAY_FPD);
    assert_ne!(n.mmio_read(ICR) & ICR_RXT0, 0, "FPD released it");
    assert_eq!(n.reg(RDTR), 100, "FPD is not stored");
}

/// TIDV/TADV hold TXDW for descriptors with IDE; a write-back without IDE interrupts at once.
#[test]
fn transmit_delay_timers_apply_to_ide_descriptors_only() {
    let mut n = nic();
    setup_tx(&mut n);
    n.mmio_write(IMS, ICR_TXDW);
    n.mmio_write(TIDV, 50);
    n.mmio_write(TADV, 200);
    let frame = [[0xFF; 6].as_slice(), &[2, 0, 0, 0, 0, 1, 0x88, 0xB5], &[0u8; 50]].concat();
    n.dma.write(TX_BUFS, &frame).unwrap();
    desc(&n, 0, TX_BUFS, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS | TXD_CMD_IDE), 0);
    n.mmio_write(TDT0, 1);
    assert_eq!(run_tx(&mut n).len(), 1);
    assert_eq!(n.mmio_read(ICR) & ICR_TXDW, 0, "held by TIDV");
    let due = n.next_deadline().expect("TIDV running");
    n.on_timer(due);
    assert_ne!(n.mmio_read(ICR) & ICR_TXDW, 0, "raised when TIDV expired");
    desc(&n, 1, TX_BUFS, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 2);
    assert_eq!(run_tx(&mut n).len(), 1);
    assert_ne!(n.mmio_read(ICR) & ICR_TXDW, 0, "no IDE: at once");
}

fn program_flow_control(n: &mut nic_device::nic::Nic, ctrl_bits: u32) {
    n.mmio_write(FCAL, 0x00C2_8001);
    n.mmio_write(FCAH, 0x0100);
    n.mmio_write(FCT, 0x8808);
    n.mmio_write(CTRL, n.reg(CTRL) | ctrl_bits);
}

/// A received XOFF stops the transmitter for its pause time (CTRL.RFCE); XON resumes it; both are counted
/// and neither reaches the host. Without RFCE a PAUSE is counted and ignored.
#[test]
fn received_pause_frames_stop_and_resume_transmission() {
    use nic_device::flowctl::pause_frame;
    let mut n = nic();
    setup_tx(&mut n);
    setup_rx(&mut n, false, false);
    program_flow_control(&mut n, CTRL_RFCE);
    let frame = [[0xFF; 6].as_slice(), &[2, 0, 0, 0, 0, 1, 0x88, 0xB5], &[0u8; 50]].concat();
    n.dma.write(TX_BUFS, &frame).unwrap();
    desc(&n, 0, TX_BUFS, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    // XOFF for 0xFFFF quanta (about 33.5 ms at 1000 Mb/s).
    assert_eq!(n.receive(&pause_frame([2, 0, 0, 0, 0, 9], 0xFFFF)), nic_device::rx::RxOutcome::Filtered);
    assert_eq!(n.reg(RDH0), 0, "not delivered to the host");
    n.mmio_write(TDT0, 1);
    assert!(!n.tx_pending(0), "paused");
    assert!(run_tx(&mut n).is_empty());
    assert!(n.next_deadline().is_some(), "the data path wakes when the pause ends");
    // XON resumes at once.
    n.receive(&pause_frame([2, 0, 0, 0, 0, 9], 0));
    assert_eq!(run_tx(&mut n).len(), 1);
    assert_eq!((n.mmio_read(XOFFRXC), n.mmio_read(XONRXC)), (1, 1));
    // Without RFCE: counted, not honoured.
    n.mmio_write(CTRL, n.reg(CTRL) & !CTRL_RFCE);
    n.receive(&pause_frame([2, 0, 0, 0, 0, 9], 0xFFFF));
    desc(&n, 1, TX_BUFS, legacy(frame.len(), TXD_CMD_EOP | TXD_CMD_RS), 0);
    n.mmio_write(TDT0, 2);
    assert_eq!(run_tx(&mut n).len(), 1);
    assert_eq!(n.mmio_read(XOFFRXC), 1);
}

/// With CTRL.TFCE the card sends XOFF (pause time FCTTV) when its receive FIFO passes FCRTH, and XON (with
/// FCRTL.XONE) once it drains below FCRTL; both counted.
#[test]
fn receive_fifo_thresholds_send_xoff_and_xon() {
    let mut n = nic();
    setup_rx(&mut n, false, false);
    program_flow_control(&mut n, CTRL_TFCE);
    n.mmio_write(FCTTV, 0x0680);
    n.mmio_write(FCRTH, 8 * 1024);
    n.mmio_write(FCRTL, (4 * 1024) | FCRTL_XONE);
    // No free descriptors: frames wait in the 20 KiB FIFO.
    n.mmio_write(RDT0, 0);
    let frame = [[0xFF; 6].as_slice(), &[2, 0, 0, 0, 0, 1, 0x88, 0xB5], &[0u8; 1000]].concat();
    for _ in 0..7 {
        n.receive(&frame.clone());
    }
    assert!(n.control_out.is_empty(), "below the high threshold");
    for _ in 0..3 {
        n.receive(&frame.clone());
    }
    assert_eq!(n.control_out.len(), 1, "XOFF once past FCRTH");
    let xoff = n.control_out.pop_front().unwrap();
    assert_eq!(&xoff[..6], &nic_device::flowctl::PAUSE_DA);
    assert_eq!(&xoff[6..12], &MAC, "from the station address");
    assert_eq!(&xoff[12..18], &[0x88, 0x08, 0x00, 0x01, 0x06, 0x80], "PAUSE with FCTTV's time");
    assert_eq!(n.mmio_read(XOFFTXC), 1);
    // Descriptors come back: the FIFO drains, XON goes out.
    n.mmio_write(RDT0, RING_LEN - 1);
    n.drain_rx_fifo();
    assert_eq!(n.control_out.len(), 1, "XON below FCRTL");
    assert_eq!(&n.control_out[0][16..18], &[0, 0], "pause time 0");
    assert_eq!(n.mmio_read(XONTXC), 1);
}
