//! Read-only views of the card for the control socket: registers with decoded fields, rings with decoded
//! descriptors, statistics under `ethtool -S` names, PHY, NVM and interrupt state. Nothing here has a side
//! effect on the device (no clear-on-read, no traced or faulted DMA).

use super::fields;
use crate::desc::{RxExtWb, RxLegacy, RxPsRead, RxPsWb, TxDesc};
use crate::intr::{ivar_vector, LEGACY_SLOT, SLOTS};
use crate::nic::{slot_name, Nic};
use crate::regs::*;
use serde_json::{json, Map, Value};
use vm_memory::endian::Le64;

/// Sets a field of a JSON object (nothing for other values).
fn set(v: &mut Value, k: &str, x: Value) {
    if let Some(m) = v.as_object_mut() {
        m.insert(k.to_string(), x);
    }
}

fn hex(v: u32) -> String {
    format!("{v:#010x}")
}

fn reg_json(nic: &Nic, name: &str, off: u32) -> Value {
    let v = nic.peek(off);
    let mut f = Map::new();
    for (n, x) in fields::decode(off, v) {
        f.insert(n.to_string(), json!(x));
    }
    json!({ "name": name, "offset": format!("{off:#07x}"), "value": hex(v), "fields": f })
}

/// Registers by name (every named register when `names` is empty). Unknown names are an error.
pub fn regs(nic: &Nic, names: &[String]) -> Result<Value, String> {
    let out: Vec<Value> = if names.is_empty() {
        all_registers().iter().map(|(n, o)| reg_json(nic, n, *o)).collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            let off = offset_of(n)
                .ok_or_else(|| format!("no register named '{n}' (names as in the datasheet, e.g. CTRL, RDT1, MTA[3], or 0xOFFSET)"))?;
            v.push(reg_json(nic, &name_of(off).unwrap_or_else(|| format!("{off:#07x}")), off));
        }
        v
    };
    Ok(Value::Array(out))
}

/// Descriptor indexes worth showing: around head and around tail.
fn window(n: u32, head: u32, tail: u32) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    if n == 0 {
        return v;
    }
    for (c, before, after) in [(head, 2u32, 3u32), (tail, 2, 1)] {
        for i in 0..before + after {
            let idx = (c.wrapping_add(n).wrapping_sub(before).wrapping_add(i)) % n;
            if !v.contains(&idx) {
                v.push(idx);
            }
        }
    }
    v
}

fn tx_desc(d: &TxDesc) -> Value {
    let addr = u64::from(d.addr);
    let lower = u32::from(d.lower);
    let upper = u32::from(d.upper);
    let cmd = (lower >> 24) as u8;
    let ext = cmd & TXD_CMD_DEXT != 0;
    let dtyp = (lower >> 20) & 0xF;
    let sta = upper & 0xF;
    if !ext {
        return json!({ "type": "legacy", "addr": format!("{addr:#x}"), "length": lower & 0xFFFF, "cso": (lower >> 16) & 0xFF,
            "cmd": format!("{cmd:#04x}"), "eop": cmd & 1 != 0, "rs": cmd & 8 != 0, "dd": sta & 1 != 0, "css": (upper >> 8) & 0xFF, "special": upper >> 16 });
    }
    if dtyp == 0 {
        return json!({ "type": "context", "ipcss": addr & 0xFF, "ipcso": (addr >> 8) & 0xFF, "ipcse": (addr >> 16) & 0xFFFF,
            "tucss": (addr >> 32) & 0xFF, "tucso": (addr >> 40) & 0xFF, "tucse": (addr >> 48) & 0xFFFF, "paylen": lower & 0xF_FFFF,
            "tse": cmd & 4 != 0, "tcp": cmd & 1 != 0, "ip": cmd & 2 != 0, "dd": sta & 1 != 0, "hdrlen": (upper >> 8) & 0xFF, "mss": upper >> 16 });
    }
    json!({ "type": "data", "addr": format!("{addr:#x}"), "length": lower & 0xF_FFFF, "eop": cmd & 1 != 0, "ifcs": cmd & 2 != 0,
        "tse": cmd & 4 != 0, "rs": cmd & 8 != 0, "vle": cmd & 0x40 != 0, "ide": cmd & 0x80 != 0, "dd": sta & 1 != 0,
        "ixsm": upper & (1 << 8) != 0, "txsm": upper & (1 << 9) != 0, "vlan": upper >> 16 })
}

/// A receive descriptor at `addr` in the ring's format; `None` when it is not in guest memory.
fn rx_desc(nic: &Nic, addr: u64, extended: bool, split: bool) -> Option<Value> {
    if !extended {
        let d: RxLegacy = nic.dma.read_obj(addr).ok()?;
        return Some(json!({ "format": "legacy", "addr": format!("{:#x}", u64::from(d.addr)), "length": u16::from(d.length),
            "csum": format!("{:#06x}", u16::from(d.csum)), "status": format!("{:#04x}", d.status), "dd": d.status & 1 != 0,
            "eop": d.status & 2 != 0, "errors": format!("{:#04x}", d.errors), "vlan": u16::from(d.special) }));
    }
    // Extended and packet-split write-backs share their first 16 bytes; DD says which format the
    // descriptor is in.
    let d: RxExtWb = nic.dma.read_obj(addr).ok()?;
    let staterr = u32::from(d.staterr);
    if staterr & RXD_STAT_DD == 0 {
        // Read format: buffer addresses as the driver armed them.
        let bufs: Vec<String> = if split {
            let r: RxPsRead = nic.dma.read_obj(addr).ok()?;
            r.addr.iter().map(|a| format!("{:#x}", u64::from(*a))).collect()
        } else {
            vec![format!("{:#x}", u64::from(nic.dma.read_obj::<Le64>(addr).ok()?))]
        };
        return Some(json!({ "format": if split { "packet-split read" } else { "extended read" }, "buffers": bufs, "dd": false }));
    }
    let mut v = json!({ "format": if split { "packet-split write-back" } else { "extended write-back" }, "dd": true,
        "eop": staterr & RXD_STAT_EOP != 0, "status": format!("{:#07x}", staterr & 0xF_FFFF), "errors": format!("{:#04x}", staterr >> 24),
        "mrq": format!("{:#x}", u32::from(d.mrq)), "rss_or_ipid": format!("{:#010x}", u32::from(d.rss_or_ipid)),
        "length": u16::from(d.length), "vlan": u16::from(d.vlan) });
    if split {
        let p: RxPsWb = nic.dma.read_obj(addr).ok()?;
        set(&mut v, "header_status", json!(format!("{:#06x}", u16::from(p.header_status))));
        set(&mut v, "lengths", json!(p.length.iter().map(|l| u16::from(*l)).collect::<Vec<_>>()));
    }
    Some(v)
}

/// Each queue's ring registers and the descriptors around head and tail, decoded.
pub fn rings(nic: &Nic) -> Value {
    let mut out = Vec::new();
    let rctl = nic.reg(RCTL);
    let extended = nic.reg(RFCTL) & RFCTL_EXTEN != 0;
    let split = extended && rctl & RCTL_DTYP_MASK == RCTL_DTYP_PS;
    for (kind, bal) in [("tx", TDBAL0), ("rx", RDBAL0)] {
        for q in 0..2u32 {
            let o = q * QUEUE_STRIDE;
            let base = nic.reg(bal + o) as u64 | ((nic.reg(bal + 4 + o) as u64) << 32);
            let len = nic.reg(bal + 8 + o);
            let (head, tail) = (nic.reg(bal + 0x10 + o), nic.reg(bal + 0x18 + o));
            // RX packet-split descriptors take two 16-byte units of RDLEN, RDH and RDT.
            let unit = if kind == "rx" && split { 2 } else { 1 };
            let n = len / 16;
            let mut descs = Vec::new();
            for idx in window(n, head, tail).into_iter().filter(|i| i % unit == 0) {
                let addr = base.wrapping_add(idx as u64 * 16);
                let decoded = if kind == "tx" {
                    nic.dma.read_obj::<TxDesc>(addr).ok().map(|d| tx_desc(&d))
                } else {
                    rx_desc(nic, addr, extended, split)
                };
                let mut d = decoded.unwrap_or_else(|| json!({ "unreadable": true }));
                set(&mut d, "index", json!(idx / unit));
                set(&mut d, "at", json!(format!("{addr:#x}")));
                descs.push(d);
            }
            let enabled = if kind == "tx" { nic.reg(TCTL) & TCTL_EN != 0 } else { rctl & RCTL_EN != 0 };
            out.push(json!({ "queue": format!("{kind}{q}"), "enabled": enabled, "base": format!("{base:#x}"), "length_bytes": len,
                "descriptors": n / unit, "head": head / unit, "tail": tail / unit,
                "format": if kind == "tx" { "legacy/extended" } else if split { "packet-split" } else if extended { "extended" } else { "legacy" },
                "ring": descs }));
        }
    }
    Value::Array(out)
}

/// The statistics registers under the names `ethtool -S` gives them (e1000e), as totals since the device
/// started (the registers themselves clear when the driver reads them), plus the device's own counters.
pub fn stats(nic: &Nic) -> Value {
    let total = |off: u32| nic.stats.total(off);
    let mut card = Map::new();
    for &(name, off) in ETHTOOL_NAMES {
        card.insert(name.to_string(), json!(total(off)));
    }
    let mut regs = Map::new();
    for (name, off) in all_registers().iter().filter(|(_, o)| crate::stats::is_stat(*o)) {
        regs.insert(name.clone(), json!(total(*off)));
    }
    let mut dev = Map::new();
    for (k, v) in nic.counters() {
        dev.insert(k.to_string(), json!(v));
    }
    let mut faults = Map::new();
    for (k, v) in &nic.faults.total_hits {
        faults.insert(k.to_string(), json!(v));
    }
    json!({ "ethtool": card, "registers": regs, "device": dev, "fault_hits": faults })
}

/// `ethtool -S` names (Linux e1000e) of the statistics registers they come from; 64-bit pairs by their
/// low register.
pub const ETHTOOL_NAMES: &[(&str, u32)] = &[
    ("rx_packets", GPRC),
    ("tx_packets", GPTC),
    ("rx_bytes", GORCL),
    ("tx_bytes", GOTCL),
    ("rx_broadcast", BPRC),
    ("tx_broadcast", BPTC),
    ("rx_multicast", MPRC),
    ("tx_multicast", MPTC),
    ("multicast", MPRC),
    ("rx_crc_errors", CRCERRS),
    ("rx_no_buffer_count", RNBC),
    ("rx_missed_errors", MPC),
    ("rx_long_length_errors", ROC),
    ("rx_short_length_errors", RUC),
    ("tx_tcp_seg_good", TSCTC),
    ("tx_tcp_seg_failed", TSCTFC),
    ("rx_flow_control_xon", XONRXC),
    ("rx_flow_control_xoff", XOFFRXC),
    ("tx_flow_control_xon", XONTXC),
    ("tx_flow_control_xoff", XOFFTXC),
];

/// PHY registers (page 0) by name, with the link state.
pub fn phy(nic: &Nic) -> Value {
    use crate::phy::*;
    let names: &[(&str, u8)] = &[
        ("BMCR", BMCR),
        ("BMSR", BMSR),
        ("PHYID1", PHYID1),
        ("PHYID2", PHYID2),
        ("ANAR", ANAR),
        ("LPA", LPA),
        ("ANER", ANER),
        ("CTRL1000", CTRL1000),
        ("STAT1000", STAT1000),
        ("ESTATUS", ESTATUS),
        ("PSCR", PSCR),
        ("PSSR", PSSR),
        ("RX_ERR_CNT", RX_ERR_CNT),
        ("PAGE_SELECT", PAGE_SELECT),
    ];
    let regs: Vec<Value> =
        names.iter().map(|&(n, r)| json!({ "name": n, "reg": r, "value": format!("{:#06x}", nic.phy.read(r)) })).collect();
    let bmcr = nic.phy.read(BMCR);
    let bmsr = nic.phy.read(BMSR);
    json!({ "link_up": nic.phy.link_up(), "loopback": nic.phy.loopback(), "autoneg": bmcr & BMCR_ANENABLE != 0,
        "power_down": bmcr & BMCR_PDOWN != 0, "autoneg_complete": bmsr & BMSR_ANEGCOMPLETE != 0, "registers": regs })
}

/// The NVM image: words, checksum, station address.
pub fn nvm(nic: &Nic) -> Value {
    let words: Vec<String> = (0..crate::nvm::WORDS).map(|i| format!("{:#06x}", nic.nvm.read(i).unwrap_or(0xFFFF))).collect();
    let sum = nic.nvm.sum();
    json!({ "words": words, "sum": format!("{sum:#06x}"), "checksum_valid": sum == crate::nvm::NVM_SUM,
        "mac": crate::trace::mac_str(&nic.nvm.mac()) })
}

/// Interrupt state: mode, causes and masks, IVAR routing, moderation, eventfds, message counts.
pub fn irq(nic: &Nic) -> Value {
    let i = &nic.intr;
    let (level, masked, pending) = nic.intx_state();
    let ivar: Map<String, Value> = [("RXQ0", ICR_RXQ0), ("RXQ1", ICR_RXQ1), ("TXQ0", ICR_TXQ0), ("TXQ1", ICR_TXQ1), ("OTHER", ICR_OTHER)]
        .iter()
        .map(|&(n, c)| (n.to_string(), json!(ivar_vector(i.ivar, c))))
        .collect();
    let causes = |v: u32| -> Vec<&str> { fields::decode(ICR, v).into_iter().filter(|f| f.1 != 0).map(|f| f.0).collect() };
    let slots: Vec<Value> = (0..SLOTS)
        .map(|s| {
            let fd = if s == LEGACY_SLOT {
                nic.irq.fds.msi.is_some() || nic.irq.fds.intx.is_some()
            } else {
                nic.irq.fds.msix.get(s).is_some_and(|f| f.is_some())
            };
            let interval = if s == LEGACY_SLOT { i.itr } else { i.eitr.get(s).copied().unwrap_or(0) };
            json!({ "slot": slot_name(s), "eventfd": fd, "interval_256ns": interval & 0xFFFF,
                "sent": i.fired.get(s).copied().unwrap_or(0), "moderated": i.moderated.get(s).copied().unwrap_or(0) })
        })
        .collect();
    let counters: Map<String, Value> =
        nic.counters().into_iter().filter(|(k, _)| k.starts_with("irq")).map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({ "mode": format!("{:?}", nic.mode()), "icr": causes(i.icr), "ims": causes(i.ims), "iam": hex(i.iam), "eiac": hex(i.eiac),
        "ivar": ivar, "itr": i.itr, "eitr": i.eitr, "intx": { "level": level, "masked": masked }, "msix_pending": pending,
        "vectors": slots, "counters": counters })
}
