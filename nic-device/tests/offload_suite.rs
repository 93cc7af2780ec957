//! The offload correctness suite at device level: a matrix of packets driven through real TX descriptors in
//! fake guest memory, every wire frame compared with a reference built here (hand-written segmentation and
//! checksums that share no code with the device) and checked again with etherparse; and the receive side's
//! checksum status, VLAN stripping and RSS hash for the same frames.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nic_device::offload::TxContext;
use nic_device::regs::*;

// ---- an independent reference ----

/// RFC 1071 Internet checksum of `data` plus `extra` (already-summed words), not complemented.
fn ones_sum(data: &[u8], extra: u32) -> u16 {
    let mut acc = extra as u64;
    let mut i = 0;
    while i + 1 < data.len() {
        acc += ((data[i] as u64) << 8) | data[i + 1] as u64;
        i += 2;
    }
    if i < data.len() {
        acc += (data[i] as u64) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at] = (v >> 8) as u8;
    b[at + 1] = v as u8;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ip {
    V4,
    V6,
    V6Ext,
}
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vlan {
    None,
    /// The tag is in the packet data.
    InData,
    /// The card inserts it (VLE).
    Inserted,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    ip: Ip,
    tcp: bool,
    vlan: Vlan,
    options: bool,
    payload: usize,
    tso: bool,
    /// How the headers are spread over data descriptors (see `transmit`).
    hsplit: usize,
    /// How the payload is spread over data descriptors (see `transmit`).
    psplit: usize,
    /// Non-TSO IPv4: the card inserts the IPv4 header checksum (POPTS.IXSM) into a zeroed field.
    ixsm: bool,
    mss: usize,
    seq: u32,
    ip_id: u16,
}

const MSS: usize = 1400;

impl Case {
    #[allow(clippy::too_many_arguments)] // one argument per matrix dimension
    fn new(ip: Ip, tcp: bool, vlan: Vlan, options: bool, payload: usize, tso: bool, hsplit: usize, psplit: usize) -> Case {
        let ixsm = ip == Ip::V4 && !tso && hsplit.is_multiple_of(2);
        Case { ip, tcp, vlan, options, payload, tso, hsplit, psplit, ixsm, mss: MSS, seq: 0x1000_0000, ip_id: 0x1234 }
    }
}
const TCI: u16 = 0x6064; // priority 3, VLAN 100

/// A packet as the stack hands it over before offload preparation, and where its layers start.
struct Built {
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    hdrlen: usize,
}

fn build(c: &Case) -> Built {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    if c.vlan == Vlan::InData {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&TCI.to_be_bytes());
    }
    let l3 = f.len() + 2;
    let proto = if c.tcp { 6u8 } else { 17 };
    let l4_hdr = if c.tcp { 20 + if c.options { 12 } else { 0 } } else { 8 };
    let l4_len = l4_hdr + c.payload;
    match c.ip {
        Ip::V4 => {
            f.extend_from_slice(&[0x08, 0x00]);
            let opt: &[u8] = if c.options { &[0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00] } else { &[] };
            let ihl = 20 + opt.len();
            let total = (ihl + l4_len) as u16;
            f.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0x00]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&c.ip_id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0x00, 64, proto, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7]);
            f.extend_from_slice(opt);
            let ck = !ones_sum(&f[l3..l3 + ihl], 0);
            put16(&mut f, l3 + 10, ck);
        }
        Ip::V6 | Ip::V6Ext => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let ext: Vec<u8> = if c.ip == Ip::V6Ext {
                // Hop-by-hop (PadN), then destination options (PadN), then L4.
                vec![60, 0, 1, 4, 0, 0, 0, 0, proto, 0, 1, 4, 0, 0, 0, 0]
            } else {
                vec![]
            };
            let next = if ext.is_empty() { proto } else { 0 };
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&((ext.len() + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&[next, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ext);
        }
    }
    let l4 = f.len();
    if c.tcp {
        let doff = (l4_hdr / 4) as u8;
        f.extend_from_slice(&[0x9c, 0x41, 0x1f, 0x90]);
        f.extend_from_slice(&c.seq.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]);
        // ACK | PSH | FIN | CWR: the per-segment flag rules are visible.
        f.extend_from_slice(&[doff << 4, 0x80 | 0x10 | 0x08 | 0x01, 0xff, 0xff, 0, 0, 0, 0]);
        if c.options {
            f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        }
    } else {
        f.extend_from_slice(&[0x13, 0x89, 0x00, 0x35]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    let hdrlen = f.len();
    f.extend((0..c.payload).map(|i| (i * 31 + 7) as u8));
    Built { frame: f, l3, l4, hdrlen }
}

/// Pseudo-header sum (addresses, protocol, and `len` if given).
fn pseudo(b: &Built, c: &Case, len: Option<usize>) -> u32 {
    let f = &b.frame;
    let addrs = match c.ip {
        Ip::V4 => &f[b.l3 + 12..b.l3 + 20],
        _ => &f[b.l3 + 8..b.l3 + 40],
    };
    ones_sum(addrs, (if c.tcp { 6 } else { 17 }) + len.unwrap_or(0) as u32) as u32
}

fn l4_csum_at(b: &Built, c: &Case) -> usize {
    b.l4 + if c.tcp { 16 } else { 6 }
}

/// The packet as a driver prepares it for the card (Linux's e1000e): the checksum field seeded with the
/// pseudo-header sum (without length for TSO), and for TSO the IP length fields and IPv4 checksum zeroed.
fn prepare(b: &Built, c: &Case) -> Vec<u8> {
    let mut f = b.frame.clone();
    let at = l4_csum_at(b, c);
    if c.tso {
        match c.ip {
            Ip::V4 => {
                put16(&mut f, b.l3 + 2, 0);
                put16(&mut f, b.l3 + 10, 0);
            }
            _ => put16(&mut f, b.l3 + 4, 0),
        }
        put16(&mut f, at, ones_sum(&[], pseudo(b, c, None)));
    } else {
        let seed = ones_sum(&[], pseudo(b, c, Some(f.len() - b.l4)));
        put16(&mut f, at, seed);
        if c.ixsm {
            // Left for the card to fill (IXSM): the reference below has the right value.
            put16(&mut f, b.l3 + 10, 0);
        }
    }
    f
}

fn insert_tag(f: &mut Vec<u8>) {
    let mut t = vec![0x81, 0x00];
    t.extend_from_slice(&TCI.to_be_bytes());
    f.splice(12..12, t);
}

/// What the wire must carry: written from the datasheet's rules, by hand.
fn reference(b: &Built, c: &Case) -> Vec<Vec<u8>> {
    let f = &b.frame;
    let at = l4_csum_at(b, c);
    let mut out = Vec::new();
    if c.tso {
        let payload = &f[b.hdrlen..];
        let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(c.mss).collect() };
        let seq0 = if c.tcp { u32::from_be_bytes(f[b.l4 + 4..b.l4 + 8].try_into().unwrap()) } else { 0 };
        for (i, ch) in chunks.iter().enumerate() {
            let mut s = f[..b.hdrlen].to_vec();
            s.extend_from_slice(ch);
            match c.ip {
                Ip::V4 => {
                    let total = (s.len() - b.l3) as u16;
                    put16(&mut s, b.l3 + 2, total);
                    put16(&mut s, b.l3 + 4, c.ip_id.wrapping_add(i as u16));
                    put16(&mut s, b.l3 + 10, 0);
                    let ihl = (s[b.l3] & 0xf) as usize * 4;
                    let ck = !ones_sum(&s[b.l3..b.l3 + ihl], 0);
                    put16(&mut s, b.l3 + 10, ck);
                }
                _ => {
                    let plen = (s.len() - b.l3 - 40) as u16;
                    put16(&mut s, b.l3 + 4, plen);
                }
            }
            if c.tcp {
                let seq = seq0.wrapping_add((i * c.mss) as u32);
                s[b.l4 + 4..b.l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let last = i + 1 == chunks.len();
                if !last {
                    s[b.l4 + 13] &= !(0x01 | 0x08);
                }
                if i != 0 {
                    s[b.l4 + 13] &= !0x80;
                }
            } else {
                // Each UDP segment is a datagram of its own: its length, then its checksum.
                let ulen = (s.len() - b.l4) as u16;
                put16(&mut s, b.l4 + 4, ulen);
            }
            put16(&mut s, at, 0);
            let len = s.len() - b.l4;
            let mut ck = !ones_sum(&s[b.l4..], pseudo(b, c, Some(len)));
            if !c.tcp && ck == 0 {
                ck = 0xffff;
            }
            put16(&mut s, at, ck);
            out.push(s);
        }
    } else {
        let mut s = f.clone();
        put16(&mut s, at, 0);
        let mut ck = !ones_sum(&s[b.l4..], pseudo(b, c, Some(s.len() - b.l4)));
        if !c.tcp && ck == 0 {
            ck = 0xffff;
        }
        put16(&mut s, at, ck);
        out.push(s);
    }
    for s in out.iter_mut() {
        // Short frames are padded as the driver gave them; an inserted tag comes on top of that.
        if s.len() < 60 {
            s.resize(60, 0);
        }
        if c.vlan == Vlan::Inserted {
            insert_tag(s);
        }
    }
    out
}

/// Drives one packet through TX descriptors (a context, then data descriptors split per `c.hsplit` and `c.psplit`).
fn transmit(c: &Case, b: &Built) -> Vec<Vec<u8>> {
    let mut n = nic();
    setup_tx(&mut n);
    n.mmio_write(TCTL, TCTL_EN | TCTL_PSP);
    if c.vlan == Vlan::Inserted {
        n.mmio_write(CTRL, n.reg(CTRL) | CTRL_VME);
    }
    let pkt = prepare(b, c);
    let ipv4 = c.ip == Ip::V4;
    let ctx = TxContext {
        ipcss: b.l3 as u8,
        ipcso: if ipv4 { (b.l3 + 10) as u8 } else { 0 },
        ipcse: if ipv4 { (b.l4 - 1) as u16 } else { 0 },
        tucss: b.l4 as u8,
        tucso: l4_csum_at(b, c) as u8,
        tucse: 0,
        paylen: (pkt.len() - b.hdrlen) as u32,
        hdrlen: b.hdrlen as u8,
        mss: c.mss as u16,
        tcp: c.tcp,
        ipv4,
        tse: c.tso,
    };
    ctx_desc(&n, 0, &ctx);
    // Header split: the whole header alone, header and payload together, a cut inside the IP header, or
    // cuts after Ethernet and at L4. Payload split: one piece, 4000-byte pieces, or a 1-byte piece, a piece
    // straddling the first segment boundary, then 1777-byte pieces.
    let mut cuts: Vec<usize> = match c.hsplit % 4 {
        0 => vec![b.hdrlen],
        1 => vec![],
        2 => vec![b.l3 + 3],
        _ => vec![14, b.l4],
    };
    match c.psplit % 3 {
        0 => {}
        1 => cuts.extend((1..).map(|k| b.hdrlen + 4000 * k).take_while(|&x| x < pkt.len())),
        _ => {
            cuts.push(b.hdrlen + 1);
            cuts.push(b.hdrlen + c.mss + 5);
            cuts.extend((1..).map(|k| b.hdrlen + c.mss + 5 + 1777 * k).take_while(|&x| x < pkt.len()));
        }
    }
    let mut bounds = vec![0];
    bounds.extend(cuts.into_iter().filter(|&x| x > 0 && x < pkt.len()));
    bounds.push(pkt.len());
    let parts: Vec<&[u8]> = bounds.windows(2).map(|w| &pkt[w[0]..w[1]]).collect();
    let popts = TXD_POPTS_TXSM | if (c.tso && ipv4) || c.ixsm { TXD_POPTS_IXSM } else { 0 };
    let mut addr = TX_BUFS;
    for (i, p) in parts.iter().enumerate() {
        n.dma.write(addr, p).unwrap();
        let last = i + 1 == parts.len();
        let mut dcmd = TXD_CMD_IFCS | if c.tso { TXD_CMD_TSE } else { 0 } | if last { TXD_CMD_EOP | TXD_CMD_RS } else { 0 };
        if c.vlan == Vlan::Inserted {
            dcmd |= TXD_CMD_VLE;
        }
        let (lo, mut up) = data_desc(p.len(), dcmd, popts);
        up |= (TCI as u32) << 16;
        desc(&n, 1 + i as u32, addr, lo, up);
        addr += (p.len() as u64 + 63) & !63;
    }
    n.mmio_write(TDT0, 1 + parts.len() as u32);
    let out = run_tx(&mut n);
    assert_eq!(n.metrics.tx_malformed.load(std::sync::atomic::Ordering::Relaxed), 0, "{c:?}");
    out
}

/// etherparse's view: every checksum in the frame is valid, and the frame fits the MTU.
fn etherparse_valid(f: &[u8], c: &Case) {
    let p = SlicedPacket::from_ethernet(f).unwrap_or_else(|e| panic!("{c:?}: etherparse: {e}"));
    let payload_len;
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(t)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "{c:?}");
            match t {
                TransportSlice::Tcp(t) => {
                    assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(), "{c:?}");
                    payload_len = t.payload().len();
                }
                TransportSlice::Udp(u) => {
                    assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(), "{c:?}");
                    payload_len = u.payload().len();
                }
                _ => panic!("{c:?}"),
            }
        }
        (Some(NetSlice::Ipv6(ip)), Some(t)) => {
            let h = ip.header().to_header();
            match t {
                TransportSlice::Tcp(t) => {
                    assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv6(&h, t.payload()).unwrap(), "{c:?}");
                    payload_len = t.payload().len();
                }
                TransportSlice::Udp(u) => {
                    assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap(), "{c:?}");
                    payload_len = u.payload().len();
                }
                _ => panic!("{c:?}"),
            }
        }
        _ => panic!("{c:?}: not parsed to L4"),
    }
    if c.tso {
        assert!(payload_len <= c.mss, "{c:?}");
    }
    if c.mss <= MSS {
        let tagged = if c.vlan == Vlan::None { 0 } else { 4 };
        assert!(f.len() <= 1514 + tagged, "{c:?}: {} bytes on the wire", f.len());
    }
}

/// Every packet shape with every size, each under every header split and every payload split.
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for ip in [Ip::V4, Ip::V6, Ip::V6Ext] {
        for vlan in [Vlan::None, Vlan::InData, Vlan::Inserted] {
            for options in [false, true] {
                for tcp in [true, false] {
                    let options = options && (tcp || ip == Ip::V4);
                    // Segmentation: empty, 1, odd, exact multiple of MSS, one past it, 64 KiB from L3 on;
                    // then single frames: 1 byte, MSS bytes, and for UDP the largest datagram that fits.
                    let hdr = build(&Case::new(ip, tcp, vlan, options, 0, true, 0, 0));
                    let max = 65536 - (hdr.hdrlen - hdr.l3);
                    let fits = 1514 - hdr.hdrlen + if vlan == Vlan::InData { 4 } else { 0 };
                    let mut sizes =
                        vec![(0, true), (1, true), (7, true), (3 * MSS, true), (3 * MSS + 1, true), (max, true), (1, false), (MSS, false)];
                    if !tcp {
                        sizes.extend([(0, false), (7, false), (fits, false)]);
                    }
                    for (payload, tso) in sizes {
                        for hsplit in 0..4 {
                            for psplit in 0..3 {
                                v.push(Case::new(ip, tcp, vlan, options, payload, tso, hsplit, psplit));
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

#[test]
fn the_matrix_is_the_full_cross_product() {
    let cases = cases();
    let multi = |c: &&Case| c.tso && c.payload > c.mss;
    // Every multi-segment TSO packet appears under every header split and every payload split.
    for h in 0..4 {
        for p in 0..3 {
            assert!(cases.iter().filter(multi).any(|c| c.hsplit == h && c.psplit == p && c.tcp), "TCP TSO h{h} p{p}");
            assert!(cases.iter().filter(multi).any(|c| c.hsplit == h && c.psplit == p && !c.tcp), "UDP TSO h{h} p{p}");
        }
    }
    assert!(cases.iter().any(|c| c.ixsm), "non-TSO IPv4 header checksum insertion");
    assert!(cases.iter().any(|c| !c.tcp && c.tso && c.payload > MSS), "UDP payloads past the MSS");
}

#[test]
fn tx_matrix_matches_reference_segmentation_and_etherparse() {
    let cases = cases();
    assert!(cases.len() >= 2000, "{} cases", cases.len());
    let mut frames = 0;
    for c in &cases {
        let b = build(c);
        let got = transmit(c, &b);
        let want = reference(&b, c);
        assert_eq!(got.len(), want.len(), "{c:?}: segment count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g != w {
                let at = g.iter().zip(w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
                panic!("{c:?}: segment {i} differs from the reference at byte {at} (lengths {} vs {})", g.len(), w.len());
            }
            etherparse_valid(g, c);
        }
        frames += got.len();
    }
    eprintln!("{} cases, {frames} wire frames checked", cases.len());
}

#[test]
fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    // Find a 2-byte payload whose UDP checksum is 0, then check the card sends 0xFFFF.
    for v in 0..=0xffffu32 {
        let c = Case::new(Ip::V4, false, Vlan::None, false, 2, false, 1, 0);
        let mut b = build(&c);
        let n = b.frame.len();
        b.frame[n - 2..].copy_from_slice(&(v as u16).to_be_bytes());
        let mut s = b.frame.clone();
        let at = l4_csum_at(&b, &c);
        put16(&mut s, at, 0);
        if !ones_sum(&s[b.l4..], pseudo(&b, &c, Some(s.len() - b.l4))) != 0 {
            continue;
        }
        let got = transmit(&c, &b);
        assert_eq!(&got[0][at..at + 2], &[0xff, 0xff]);
        etherparse_valid(&got[0], &c);
        return;
    }
    panic!("no payload gives a zero checksum");
}

#[test]
fn one_context_serves_following_packets() {
    let c = Case::new(Ip::V4, true, Vlan::None, false, 3000, true, 0, 0);
    let b = build(&c);
    let mut n = nic();
    setup_tx(&mut n);
    let pkt = prepare(&b, &c);
    let ctx = tso_ctx_ipv4_tcp(b.hdrlen, MSS, 3000);
    ctx_desc(&n, 0, &ctx);
    n.dma.write(TX_BUFS, &pkt).unwrap();
    for i in 0..3 {
        let (lo, up) = data_desc(pkt.len(), TXD_CMD_TSE | TXD_CMD_EOP | TXD_CMD_RS, TXD_POPTS_TXSM | TXD_POPTS_IXSM);
        desc(&n, 1 + i, TX_BUFS, lo, up);
    }
    n.mmio_write(TDT0, 4);
    let got = run_tx(&mut n);
    let want = reference(&b, &c);
    assert_eq!(got.len(), 3 * want.len());
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &want[i % want.len()]);
    }
    assert_eq!(n.mmio_read(TSCTC), 3);
}

// ---- receive ----

/// Toeplitz hash, written from the RSS specification as a bit walk over key || 0s.
fn toeplitz_ref(key: &[u8; 40], input: &[u8]) -> u32 {
    let bit = |k: usize| -> u32 { key.get(k / 8).map_or(0, |b| ((b >> (7 - k % 8)) & 1) as u32) };
    let mut h = 0u32;
    for i in 0..input.len() * 8 {
        if input[i / 8] & (0x80 >> (i % 8)) != 0 {
            let mut w = 0u32;
            for j in 0..32 {
                w = (w << 1) | bit(i + j);
            }
            h ^= w;
        }
    }
    h
}

const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b,
    0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

struct RxResult {
    staterr: u32,
    len: usize,
    vlan: u16,
    dword0: u32,
    dword1: u32,
    data: Vec<u8>,
}

fn receive(frame: &[u8], rxcsum: u32, vme: bool, mrqc: u32) -> RxResult {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    n.mmio_write(RXCSUM, rxcsum);
    if vme {
        n.mmio_write(CTRL, n.reg(CTRL) | CTRL_VME);
    }
    for i in 0..10 {
        n.mmio_write(0x5C80 + 4 * i, u32::from_le_bytes(RSS_KEY[i as usize * 4..i as usize * 4 + 4].try_into().unwrap()));
    }
    n.mmio_write(0x5818, mrqc);
    n.receive(frame);
    let d = rx_desc(&n, 0);
    let len = u16::from_le_bytes([d[12], d[13]]) as usize;
    let mut data = vec![0u8; len];
    n.dma.read(RX_BUFS, &mut data).unwrap();
    RxResult {
        staterr: u32::from_le_bytes(d[8..12].try_into().unwrap()),
        len,
        vlan: u16::from_le_bytes([d[14], d[15]]),
        dword0: u32::from_le_bytes(d[0..4].try_into().unwrap()),
        dword1: u32::from_le_bytes(d[4..8].try_into().unwrap()),
        data,
    }
}

const OFFLOADS: u32 = RXCSUM_IPOFLD | RXCSUM_TUOFLD;
const ERRS: u32 = RXDEXT_ERR_IPE | RXDEXT_ERR_TCPE;

fn rx_frames() -> Vec<(Case, Vec<u8>, Built)> {
    cases()
        .into_iter()
        .filter(|c| c.vlan != Vlan::Inserted && c.payload < 2000 && c.hsplit == 0 && c.psplit == 0)
        .map(|c| {
            let b = build(&c);
            let f = reference(&b, &c).remove(0);
            (c, f, b)
        })
        .collect()
}

#[test]
fn rx_checksum_status_for_every_case() {
    for (c, f, b) in rx_frames() {
        let r = receive(&f, OFFLOADS, false, 0);
        let st = r.staterr;
        assert_eq!(st & (RXD_STAT_DD | RXD_STAT_EOP), RXD_STAT_DD | RXD_STAT_EOP, "{c:?}");
        assert_eq!(st & ERRS, 0, "{c:?}: good frame flagged");
        assert_eq!(st & RXD_STAT_IPCS != 0, c.ip == Ip::V4, "{c:?}: IPCS");
        assert_eq!(st & RXD_STAT_TCPCS != 0, c.tcp, "{c:?}: TCPCS");
        assert_eq!(st & RXD_STAT_UDPCS != 0, !c.tcp, "{c:?}: UDPCS");
        assert_eq!(r.data, f, "{c:?}: frame delivered as sent");
        // A corrupted L4 byte: delivered, TCPE set.
        let mut bad = f.clone();
        let last = b.frame.len() - 1;
        bad[if c.payload > 0 { last } else { b.l4 + 1 }] ^= 0x5a;
        let r = receive(&bad, OFFLOADS, false, 0);
        assert_ne!(r.staterr & RXDEXT_ERR_TCPE, 0, "{c:?}: bad L4 checksum not flagged");
        assert_eq!(r.data, bad, "{c:?}: bad frame still delivered");
        // A corrupted IPv4 header: IPE.
        if c.ip == Ip::V4 {
            let mut bad = f.clone();
            bad[b.l3 + 8] ^= 1; // TTL, checksum not fixed
            let r = receive(&bad, OFFLOADS, false, 0);
            assert_ne!(r.staterr & RXDEXT_ERR_IPE, 0, "{c:?}: bad IP checksum not flagged");
        }
        // Offloads off: the card says it did not check (IXSM), and flags nothing.
        let r = receive(&f, 0, false, 0);
        assert_ne!(r.staterr & RXD_STAT_IXSM, 0, "{c:?}");
        assert_eq!(r.staterr & (ERRS | RXD_STAT_TCPCS | RXD_STAT_UDPCS | RXD_STAT_IPCS), 0, "{c:?}");
        // Only TUOFLD: L4 status without IPCS.
        let r = receive(&f, RXCSUM_TUOFLD, false, 0);
        assert_eq!(r.staterr & RXD_STAT_IPCS, 0, "{c:?}");
        // VLAN: stripped with VME (VP, tag in the descriptor), kept without.
        if c.vlan == Vlan::InData {
            let r = receive(&f, OFFLOADS, true, 0);
            assert_ne!(r.staterr & RXD_STAT_VP, 0, "{c:?}");
            assert_eq!(r.vlan, TCI);
            let mut untagged = f.clone();
            untagged.drain(12..16);
            assert_eq!(r.data, untagged[..r.len.min(untagged.len())].to_vec());
            assert_eq!(r.staterr & ERRS, 0, "{c:?}");
        }
    }
}

#[test]
fn rx_fragments_and_zero_udp_checksums_get_no_l4_status() {
    for (c, f, b) in rx_frames() {
        if c.ip == Ip::V4 {
            // More-fragments set (header checksum fixed): IP status only.
            let mut frag = f.clone();
            frag[b.l3 + 6] |= 0x20;
            put16(&mut frag, b.l3 + 10, 0);
            let ihl = (frag[b.l3] & 0xf) as usize * 4;
            let ck = !ones_sum(&frag[b.l3..b.l3 + ihl], 0);
            put16(&mut frag, b.l3 + 10, ck);
            let r = receive(&frag, OFFLOADS, false, 0);
            assert_ne!(r.staterr & RXD_STAT_IPCS, 0, "{c:?}");
            assert_eq!(r.staterr & (RXD_STAT_TCPCS | RXD_STAT_UDPCS | RXDEXT_ERR_TCPE), 0, "{c:?}: fragment");
        }
        if !c.tcp && c.ip == Ip::V4 {
            let mut z = f.clone();
            put16(&mut z, l4_csum_at(&b, &c), 0);
            let r = receive(&z, OFFLOADS, false, 0);
            assert_eq!(r.staterr & (RXD_STAT_UDPCS | RXD_STAT_TCPCS | RXDEXT_ERR_TCPE), 0, "{c:?}: zero UDP checksum");
        }
    }
}

#[test]
fn rx_rss_hash_matches_the_reference_toeplitz() {
    let mrqc = 0x0037_0000; // Linux's hash types, single queue
    for (c, f, b) in rx_frames() {
        let r = receive(&f, OFFLOADS | RXCSUM_PCSD, false, mrqc);
        let fr = &b.frame;
        let (src, dst) = match c.ip {
            Ip::V4 => (&fr[b.l3 + 12..b.l3 + 16], &fr[b.l3 + 16..b.l3 + 20]),
            _ => (&fr[b.l3 + 8..b.l3 + 24], &fr[b.l3 + 24..b.l3 + 40]),
        };
        let mut input = [src, dst].concat();
        let ext = c.ip == Ip::V6Ext;
        let (want_type, with_ports) = match (c.ip, c.tcp) {
            (Ip::V4, true) => (1, true),
            (Ip::V4, false) => (2, false),
            (_, true) => (3, true),
            (_, false) if ext => (5, false), // IPv6-Ex is not in 0x37's set
            _ => (5, false),
        };
        if with_ports {
            input.extend_from_slice(&fr[b.l4..b.l4 + 4]);
        }
        assert_eq!(r.dword0 & 0xf, want_type, "{c:?}: RSS type");
        assert_eq!(r.dword1, toeplitz_ref(&RSS_KEY, &input), "{c:?}: RSS hash");
        // Checksum status still reported with PCSD.
        assert_eq!(r.staterr & RXD_STAT_TCPCS != 0, c.tcp);
    }
}

fn eventfd() -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd with valid flags; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd, owned by the File from here on.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Whether the eventfd was signalled since the last call (reads and clears it).
fn take_eventfd(f: &std::fs::File) -> bool {
    let mut b = [0u8; 8];
    std::io::Read::read(&mut &*f, &mut b).is_ok()
}

#[test]
fn rss_spreads_flows_over_two_queues_with_their_own_causes() {
    let mut n = nic();
    setup_rx(&mut n, true, false);
    // Queue 1 ring.
    for i in 0..RING_LEN as u64 {
        w64(&n, RX_RING + 0x800 + i * 16, RX_BUFS + 0x80000 + i * 0x1000);
        w64(&n, RX_RING + 0x800 + i * 16 + 8, 0);
    }
    n.mmio_write(RDBAL0 + 0x100, (RX_RING + 0x800) as u32);
    n.mmio_write(RDLEN0 + 0x100, RING_LEN * 16);
    n.mmio_write(RDT0 + 0x100, RING_LEN - 1);
    n.mmio_write(RXCSUM, OFFLOADS | RXCSUM_PCSD);
    for i in 0..10u32 {
        n.mmio_write(0x5C80 + 4 * i, u32::from_le_bytes(RSS_KEY[i as usize * 4..i as usize * 4 + 4].try_into().unwrap()));
    }
    // Odd table entries go to queue 1.
    for i in 0..32u32 {
        n.mmio_write(0x5C00 + 4 * i, 0x8000_8000);
    }
    n.mmio_write(0x5818, 0x0037_0001);
    n.mmio_write(IMS, ICR_RXQ0 | ICR_RXQ1);
    // MSI-X on, with IVAR routing RXQ0 to vector 0 and RXQ1 to vector 2; an eventfd per vector.
    n.config_write(nic_device::pci::MSIX_CAP as u64 + 2, &0x8000u16.to_le_bytes()).unwrap();
    n.mmio_write(IVAR, 0x8000_0000 | 0x8 | ((0x8 | 2) << 4));
    let efds: Vec<std::fs::File> = (0..5).map(|_| eventfd()).collect();
    for (v, f) in efds.iter().enumerate() {
        n.irq.fds.msix[v] = Some(f.try_clone().unwrap());
    }
    let mut per_q = [0u32; 2];
    for port in 0..64u16 {
        let c = Case::new(Ip::V4, true, Vlan::None, false, 10, false, 0, 0);
        let mut b = build(&c);
        b.frame[b.l4..b.l4 + 2].copy_from_slice(&(1000 + port).to_be_bytes());
        let f = reference(&b, &c).remove(0);
        let fr = &b.frame;
        let mut input = [&fr[b.l3 + 12..b.l3 + 20], &fr[b.l4..b.l4 + 4]].concat();
        input.truncate(12);
        let h = toeplitz_ref(&RSS_KEY, &input);
        let q = (h & 1) as usize;
        n.receive(&f);
        per_q[q] += 1;
        // The driver's ICR read: the queue's cause, then cleared for the next frame.
        let icr = n.mmio_read(ICR);
        assert_ne!(icr & if q == 0 { ICR_RXQ0 } else { ICR_RXQ1 }, 0, "cause for queue {q}");
        assert_eq!(n.reg(RDH0 + 0x100 * q as u32), per_q[q], "frame landed on queue {q}");
        let fired: Vec<usize> = efds.iter().enumerate().filter(|(_, f)| take_eventfd(f)).map(|(v, _)| v).collect();
        assert_eq!(fired, vec![if q == 0 { 0 } else { 2 }], "queue {q}'s interrupt on its IVAR vector");
    }
    assert!(per_q[0] > 10 && per_q[1] > 10, "{per_q:?}");
    // Each queue's engine delivered what landed on its ring.
    assert_eq!([n.rx.queues[0].frames, n.rx.queues[1].frames], per_q.map(u64::from));
}

// ---- property tests ----

fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// Random headers, lengths and MSS through the card, against the reference. The seed is printed (set
/// NIC_PROPTEST_SEED to 64 hex digits to replay it); a failing case is written to a pcap file: the packet
/// as handed to the card, then the reference frames, then what the card sent.
#[test]
fn random_packets_match_the_reference() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
    let seed: [u8; 32] = match std::env::var("NIC_PROPTEST_SEED") {
        Ok(h) => {
            let mut s = [0u8; 32];
            for (i, b) in s.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).expect("NIC_PROPTEST_SEED: 64 hex digits");
            }
            s
        }
        Err(_) => {
            let mut s = [0u8; 32];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut s).unwrap();
            s
        }
    };
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    eprintln!("proptest seed: NIC_PROPTEST_SEED={hex}");
    let cases = std::env::var("NIC_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut runner = TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, ..Config::default() },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = (
        0..3u8,
        any::<bool>(),
        0..3u8,
        any::<bool>(),
        0..20_000usize,
        64..9_000usize,
        any::<u32>(),
        any::<u16>(),
        0..12usize,
        any::<bool>(),
    );
    let last_failure = std::cell::RefCell::new(None);
    let result = runner.run(&strategy, |(ip, tcp, vlan, options, payload, mss, seq, ip_id, split, tso)| {
        let ip = [Ip::V4, Ip::V6, Ip::V6Ext][ip as usize];
        let vlan = [Vlan::None, Vlan::InData, Vlan::Inserted][vlan as usize];
        let payload = if tso { payload } else { payload % 1400 };
        let mss = if tcp { mss } else { mss.min(1400) };
        let (hsplit, psplit) = (split % 4, split / 4);
        let ixsm = ip == Ip::V4 && !tso && seq & 1 == 0;
        let c = Case { ip, tcp, vlan, options: options && (tcp || ip == Ip::V4), payload, tso, hsplit, psplit, ixsm, mss, seq, ip_id };
        let b = build(&c);
        let got = transmit(&c, &b);
        let want = reference(&b, &c);
        let ok = got == want;
        if !ok {
            let mut all = vec![prepare(&b, &c)];
            all.extend(want.iter().cloned());
            all.extend(got.iter().cloned());
            *last_failure.borrow_mut() = Some(all);
            return Err(TestCaseError::fail(format!("{c:?}: card sent {} frames, reference {}", got.len(), want.len())));
        }
        for g in &got {
            etherparse_valid(g, &c);
        }
        Ok(())
    });
    if let Err(e) = result {
        let pcap = std::env::temp_dir().join(format!("offload-failure-{}.pcap", &hex[..16]));
        if let Some(frames) = last_failure.borrow().as_ref() {
            write_pcap(&pcap, frames);
        }
        let msg = match e {
            TestError::Fail(m, _) => m.to_string(),
            TestError::Abort(m) => m.to_string(),
        };
        panic!("{msg}\nreplay with NIC_PROPTEST_SEED={hex}; frames (input, reference, card) in {}", pcap.display());
    }
}
