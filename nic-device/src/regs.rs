//! 82574L register map: byte offsets into BAR0 and the bits we act on, named as in the datasheet.
#![allow(dead_code)]

/// Defines each register's offset once, and the table of names the control socket and the trace use.
macro_rules! registers {
    ($($(#[$m:meta])* $name:ident = $off:expr,)*) => {
        $($(#[$m])* pub const $name: u32 = $off;)*
        /// Every register named in this map, by its datasheet name and BAR0 offset.
        pub const REGISTERS: &[(&str, u32)] = &[$((stringify!($name), $off),)*];
    };
}

registers! {
    CTRL = 0x0000,
    STATUS = 0x0008,
    EECD = 0x0010,
    EERD = 0x0014,
    CTRL_EXT = 0x0018,
    FLA = 0x001C,
    MDIC = 0x0020,
    FCAL = 0x0028,
    FCAH = 0x002C,
    FCT = 0x0030,
    VET = 0x0038,
    ICR = 0x00C0,
    ITR = 0x00C4,
    ICS = 0x00C8,
    IMS = 0x00D0,
    IMC = 0x00D8,
    EIAC = 0x00DC,
    IAM = 0x00E0,
    IVAR = 0x00E4,
    EITR0 = 0x00E8,
    RCTL = 0x0100,
    FCTTV = 0x0170,
    TXCW = 0x0178,
    RXCW = 0x0180,
    TCTL = 0x0400,
    TIPG = 0x0410,
    AIT = 0x0458,
    LEDCTL = 0x0E00,
    EXTCNF_CTRL = 0x0F00,
    EXTCNF_SIZE = 0x0F08,
    PBA = 0x1000,
    PBS = 0x1008,
    EEMNGCTL = 0x1010,
    FCRTL = 0x2160,
    FCRTH = 0x2168,
    PSRCTL = 0x2170,
    RDBAL0 = 0x2800,
    RDBAH0 = 0x2804,
    RDLEN0 = 0x2808,
    RDH0 = 0x2810,
    RDT0 = 0x2818,
    RDTR = 0x2820,
    RXDCTL0 = 0x2828,
    RADV = 0x282C,
    RSRPD = 0x2C00,
    RAID = 0x2C08,
    TDBAL0 = 0x3800,
    TDBAH0 = 0x3804,
    TDLEN0 = 0x3808,
    TDH0 = 0x3810,
    TDT0 = 0x3818,
    TIDV = 0x3820,
    TXDCTL0 = 0x3828,
    TADV = 0x382C,
    TARC0 = 0x3840,
    CRCERRS = 0x4000,
    MPC = 0x4010,
    PRC64 = 0x405C,
    PRC127 = 0x4060,
    PRC255 = 0x4064,
    PRC511 = 0x4068,
    PRC1023 = 0x406C,
    PRC1522 = 0x4070,
    GPRC = 0x4074,
    XONRXC = 0x4048,
    XONTXC = 0x404C,
    XOFFRXC = 0x4050,
    XOFFTXC = 0x4054,
    FCRUC = 0x4058,
    BPRC = 0x4078,
    MPRC = 0x407C,
    GPTC = 0x4080,
    GORCL = 0x4088,
    GORCH = 0x408C,
    GOTCL = 0x4090,
    GOTCH = 0x4094,
    RNBC = 0x40A0,
    RUC = 0x40A4,
    ROC = 0x40AC,
    TORL = 0x40C0,
    TORH = 0x40C4,
    TOTL = 0x40C8,
    TOTH = 0x40CC,
    TPR = 0x40D0,
    TPT = 0x40D4,
    PTC64 = 0x40D8,
    PTC127 = 0x40DC,
    PTC255 = 0x40E0,
    PTC511 = 0x40E4,
    PTC1023 = 0x40E8,
    PTC1522 = 0x40EC,
    MPTC = 0x40F0,
    BPTC = 0x40F4,
    TSCTC = 0x40F8,
    TSCTFC = 0x40FC,
    IAC = 0x4100,
    RXCSUM = 0x5000,
    RFCTL = 0x5008,
    MTA = 0x5200,
    RAL0 = 0x5400,
    RAH0 = 0x5404,
    VFTA = 0x5600,
    WUC = 0x5800,
    WUFC = 0x5808,
    WUS = 0x5810,
    MRQC = 0x5818,
    MANC = 0x5820,
    FACTPS = 0x5B30,
    GCR = 0x5B00,
    SWSM = 0x5B50,
    FWSM = 0x5B54,
    GCR2 = 0x5B64,
    RETA = 0x5C00,
    RSSRK = 0x5C80,
    SYSTIML = 0xB600,
    SYSTIMH = 0xB604,
    TIMINCA = 0xB608,
}

pub const EITR_COUNT: u32 = 5;
/// Queue 1 registers sit this far above queue 0's.
pub const QUEUE_STRIDE: u32 = 0x100;
// Statistics (clear on read).
pub const STATS_START: u32 = 0x4000;
pub const STATS_END: u32 = 0x4124;
/// FCRTL.XONE: send XON when the FIFO falls below the low threshold.
pub const FCRTL_XONE: u32 = 1 << 31;
pub const MTA_COUNT: u32 = 128;
pub const RAR_COUNT: u32 = 16;
pub const VFTA_COUNT: u32 = 128;

// CTRL bits.
pub const CTRL_FD: u32 = 1 << 0;
pub const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
/// Receive flow control enable: honour received PAUSE frames.
pub const CTRL_RFCE: u32 = 1 << 27;
/// Transmit flow control enable: send PAUSE frames at the FIFO thresholds.
pub const CTRL_TFCE: u32 = 1 << 28;
pub const CTRL_VME: u32 = 1 << 30;
pub const CTRL_PHY_RST: u32 = 1 << 31;

// STATUS bits.
pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_1000: u32 = 2 << 6;
pub const STATUS_PHYRA: u32 = 1 << 10;
pub const STATUS_GIO_MASTER_ENABLE: u32 = 1 << 19;

// EECD bits.
pub const EECD_PRES: u32 = 1 << 8;
pub const EECD_AUTO_RD: u32 = 1 << 9;

// EERD bits.
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 1;
pub const EERD_ADDR_SHIFT: u32 = 2;
pub const EERD_DATA_SHIFT: u32 = 16;
/// EERD: word address 15:2, data 31:16.
pub const EERD_ADDR_MASK: u32 = 0x3FFF;
pub const EERD_DATA_MASK: u32 = 0xFFFF_0000;
/// EECD: the NVM type and size fields (bits 14:11, 16:15) are read-only.
pub const EECD_RO_FIELDS: u32 = (0xF << 11) | (3 << 15);
/// CTRL.SPEED (bits 9:8): 10b = 1000 Mb/s.
pub const CTRL_SPEED_1000: u32 = 2 << 8;

// CTRL_EXT bits.
pub const CTRL_EXT_EIAME: u32 = 1 << 24;
pub const CTRL_EXT_IAME: u32 = 1 << 27;
pub const CTRL_EXT_PBA_CLR: u32 = 1 << 31;

// EXTCNF_CTRL bits.
pub const EXTCNF_CTRL_MDIO_SW_OWNERSHIP: u32 = 1 << 5;

// MDIC fields.
pub const MDIC_DATA_MASK: u32 = 0xFFFF;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_OP_READ: u32 = 2 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_INT_EN: u32 = 1 << 29;
pub const MDIC_ERROR: u32 = 1 << 30;

// Interrupt cause bits (ICR, ICS, IMS, IMC).
pub const ICR_TXDW: u32 = 1 << 0;
pub const ICR_TXQE: u32 = 1 << 1;
pub const ICR_LSC: u32 = 1 << 2;
pub const ICR_RXSEQ: u32 = 1 << 3;
pub const ICR_RXDMT0: u32 = 1 << 4;
pub const ICR_RXO: u32 = 1 << 6;
pub const ICR_RXT0: u32 = 1 << 7;
pub const ICR_MDAC: u32 = 1 << 9;
pub const ICR_TXD_LOW: u32 = 1 << 15;
pub const ICR_SRPD: u32 = 1 << 16;
pub const ICR_ACK: u32 = 1 << 17;
pub const ICR_MNG: u32 = 1 << 18;
pub const ICR_RXQ0: u32 = 1 << 20;
pub const ICR_RXQ1: u32 = 1 << 21;
pub const ICR_TXQ0: u32 = 1 << 22;
pub const ICR_TXQ1: u32 = 1 << 23;
pub const ICR_OTHER: u32 = 1 << 24;
pub const ICR_INT_ASSERTED: u32 = 1 << 31;
/// Causes that raise ICR.OTHER in MSI-X mode.
pub const ICR_OTHER_CAUSES: u32 = ICR_LSC | ICR_RXO | ICR_MDAC | ICR_SRPD | ICR_ACK | ICR_MNG | ICR_RXSEQ | ICR_TXQE | ICR_TXD_LOW;
/// Causes that have their own MSI-X vector through IVAR.
pub const ICR_MSIX_CAUSES: u32 = ICR_RXQ0 | ICR_RXQ1 | ICR_TXQ0 | ICR_TXQ1 | ICR_OTHER;

// IVAR.
pub const IVAR_VALID: u32 = 0x8;
pub const IVAR_VECTOR_MASK: u32 = 0x7;

// RCTL bits.
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_SBP: u32 = 1 << 2;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_LPE: u32 = 1 << 5;
/// RDTR/TIDV flush partial descriptor block: releases the held interrupt now.
pub const DELAY_FPD: u32 = 1 << 31;
/// Loopback mode (LBM, bits 7:6): 00 normal, 01 MAC loopback.
pub const RCTL_LBM_MASK: u32 = 3 << 6;
pub const RCTL_LBM_MAC: u32 = 1 << 6;
pub const RCTL_RDMTS_SHIFT: u32 = 8;
pub const RCTL_DTYP_MASK: u32 = 3 << 10;
/// RCTL.DTYP = 01: packet-split descriptors (32 bytes: a header buffer and three data buffers).
pub const RCTL_DTYP_PS: u32 = 1 << 10;
pub const RCTL_MO_SHIFT: u32 = 12;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_BSIZE_SHIFT: u32 = 16;
pub const RCTL_VFE: u32 = 1 << 18;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RCTL_SECRC: u32 = 1 << 26;

// RFCTL bits.
pub const RFCTL_EXTEN: u32 = 1 << 15;
/// RFCTL.IPFRSP_DIS: IP fragments are not split.
pub const RFCTL_IPFRSP_DIS: u32 = 1 << 14;

// RXCSUM bits.
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
pub const RXCSUM_TUOFLD: u32 = 1 << 9;
pub const RXCSUM_PCSD: u32 = 1 << 13;

// TCTL bits.
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;

// TARC bits.
pub const TARC_ENABLE: u32 = 1 << 10;

// RAH bits.
pub const RAH_AV: u32 = 1 << 31;

// MRQC.
pub const MRQC_ENABLE_MASK: u32 = 0x3;
/// MRQC: which header fields feed the RSS hash (bits 21:16); none means no hash.
pub const MRQC_RSS_FIELDS_MASK: u32 = 0x003F_0000;
/// TIMINCA: increment value 23:0, increment period 31:24.
pub const TIMINCA_INCVALUE_MASK: u32 = 0x00FF_FFFF;
pub const TIMINCA_INCPERIOD_SHIFT: u32 = 24;

// TX descriptor command bits (legacy descriptor CMD byte, and DCMD in bits 31:24 of the extended ones).
pub const TXD_CMD_EOP: u8 = 1 << 0;
pub const TXD_CMD_IFCS: u8 = 1 << 1;
pub const TXD_CMD_IC: u8 = 1 << 2;
pub const TXD_CMD_RS: u8 = 1 << 3;
pub const TXD_CMD_DEXT: u8 = 1 << 5;
pub const TXD_CMD_VLE: u8 = 1 << 6;
pub const TXD_CMD_IDE: u8 = 1 << 7;
/// Extended descriptors: TSE in DCMD / TUCMD.
pub const TXD_CMD_TSE: u8 = 1 << 2;
/// Context TUCMD: TCP (else UDP) and IP (IPv4, else IPv6).
pub const TXD_TUCMD_TCP: u8 = 1 << 0;
pub const TXD_TUCMD_IP: u8 = 1 << 1;
pub const TXD_DTYP_DATA: u32 = 1;
/// Legacy TX descriptor: length in bits 15:0 of the lower dword.
pub const TXD_LEGACY_LEN_MASK: u32 = 0xFFFF;
/// Extended TX descriptors: data length (data) or TSO payload length (context) in bits 19:0.
pub const TXD_DTALEN_MASK: u32 = 0xF_FFFF;
/// RDTR/RADV/TIDV/TADV and ITR/EITR: 16-bit counts.
pub const DELAY_COUNT_MASK: u32 = 0xFFFF;
/// The multicast table array is indexed by a 12-bit hash of the destination address (RCTL.MO picks which bits).
pub const MTA_HASH_MASK: u32 = 0xFFF;
/// The 802.1Q tag control field's VLAN id (bits 11:0), as in the VFTA and the descriptors' VLAN field.
pub const VLAN_VID_MASK: u16 = 0xFFF;
pub const TXD_STA_DD: u8 = 1 << 0;
pub const TXD_POPTS_IXSM: u8 = 1 << 0;
pub const TXD_POPTS_TXSM: u8 = 1 << 1;

// RX descriptor status and error bits.
pub const RXD_STAT_DD: u32 = 1 << 0;
pub const RXD_STAT_EOP: u32 = 1 << 1;
pub const RXD_STAT_IXSM: u32 = 1 << 2;
pub const RXD_STAT_VP: u32 = 1 << 3;
pub const RXD_STAT_UDPCS: u32 = 1 << 4;
pub const RXD_STAT_TCPCS: u32 = 1 << 5;
pub const RXD_STAT_IPCS: u32 = 1 << 6;
pub const RXD_STAT_IPIDV: u32 = 1 << 9;
/// Legacy descriptor error byte.
pub const RXD_ERR_TCPE: u8 = 1 << 5;
pub const RXD_ERR_IPE: u8 = 1 << 6;
/// Extended descriptor errors (in the status/error dword).
pub const RXDEXT_ERR_TCPE: u32 = 1 << 29;
/// Packet-split write-back, header status word: the header went to buffer 0 alone (HDRSP), and its length.
pub const RXDPS_HDRSTAT_HDRSP: u16 = 1 << 15;
pub const RXDPS_HDRSTAT_HDRLEN_MASK: u16 = 0x3FF;
/// PSRCTL: BSIZE0 in 128-byte units (bits 6:0), BSIZE1..3 in KiB (bits 13:8, 21:16, 29:24).
pub const PSRCTL_BSIZE0_MASK: u32 = 0x7F;
pub const PSRCTL_BSIZE0_UNIT: usize = 128;
pub const PSRCTL_BSIZE_MASK: u32 = 0x3F;
pub const PSRCTL_BSIZE_SHIFTS: [u32; 3] = [8, 16, 24];
pub const RXDEXT_ERR_IPE: u32 = 1 << 30;
/// RX data error: the frame's data could not be written (a failed DMA); the driver drops it.
pub const RXDEXT_ERR_RXE: u32 = 1 << 31;

/// BAR sizes.
pub const BAR0_SIZE: u64 = 128 * 1024;
pub const BAR1_SIZE: u64 = 128 * 1024;
pub const BAR2_SIZE: u64 = 32;
pub const BAR3_SIZE: u64 = 16 * 1024;
/// MSI-X layout in BAR3.
pub const MSIX_VECTORS: usize = 5;
pub const MSIX_TABLE_OFFSET: u64 = 0;
pub const MSIX_PBA_OFFSET: u64 = 0x2000;

/// I/O BAR window.
pub const IOADDR: u64 = 0;
pub const IODATA: u64 = 4;
/// IOADDR holds a dword-aligned BAR0 offset (bits 16:2).
pub const IOADDR_MASK: u32 = 0x1_FFFC;

/// Registers whose value after a MAC reset is not 0 (datasheet, section 10.2: initial values). RAR0 comes
/// from the NVM and is loaded separately.
pub const RESET_VALUES: &[(u32, u32)] = &[
    (CTRL, CTRL_FD | CTRL_SLU | CTRL_SPEED_1000),
    (EECD, EECD_PRES | EECD_AUTO_RD),
    // 20 KiB receive, 12 KiB transmit packet buffer.
    (PBA, 0x0014_000C),
    // LED0 link/activity, LED1 1000 Mb/s, LED2 link-up, blink off.
    (LEDCTL, 0x0706_8302),
    (VET, 0x8100),
    // GRAN (descriptor granularity) and WTHRESH 1.
    (TXDCTL0, 0x0140_0000),
    (TXDCTL0 + QUEUE_STRIDE, 0x0140_0000),
    // GRAN.
    (RXDCTL0, 0x0001_0000),
    (RXDCTL0 + QUEUE_STRIDE, 0x0001_0000),
    // Count 3; queue 0 enabled.
    (TARC0, 0x3 | TARC_ENABLE),
    (TARC0 + QUEUE_STRIDE, 0x3),
    // IPGT 8, IPGR1 8, IPGR 6.
    (TIPG, 0x0060_2008),
    (RXCSUM, RXCSUM_IPOFLD),
];

/// The bits a plain-storage register keeps on a write, as the datasheet defines its fields (reserved bits
/// read as 0). Registers with side effects have their own handling in `nic.rs`; everything not listed keeps
/// all 32 bits.
pub fn write_mask(off: u32) -> u32 {
    match off {
        // Flow control address high: bits 15:0 of the address.
        FCAH => 0x0000_FFFF,
        // Flow control type and transmit timer value: 16-bit fields.
        FCT | FCTTV => 0x0000_FFFF,
        // VLAN ether type: 16 bits.
        VET => 0x0000_FFFF,
        // Flow control thresholds: RTH bits 15:3; RTL bits 15:3 and XONE (31).
        FCRTH => 0x0000_FFF8,
        FCRTL => 0x8000_FFF8,
        // TX configuration word: TxConfigWord 15:0, TxConfig 30, ANE 31.
        TXCW => 0xC000_FFFF,
        // Inter-packet gap: IPGT 9:0, IPGR1 19:10, IPGR 29:20.
        TIPG => 0x3FFF_FFFF,
        // Delay timers: 16-bit counts of 1.024 us (the flush bits are write-only and read as 0).
        o if o == RDTR || o == RADV || o == TIDV || o == TADV => DELAY_COUNT_MASK,
        o if o == RDTR + QUEUE_STRIDE || o == TIDV + QUEUE_STRIDE => DELAY_COUNT_MASK,
        // Receive address high: address 15:0, ASEL 17:16, AV 31.
        o if (RAL0..RAL0 + RAR_COUNT * 8).contains(&o) && (o - RAL0) % 8 == 4 => 0x8003_FFFF,
        // Interrupt throttling intervals: 16 bits.
        ITR => DELAY_COUNT_MASK,
        o if (EITR0..EITR0 + 4 * EITR_COUNT).contains(&o) => DELAY_COUNT_MASK,
        // Ring heads and tails: 16-bit descriptor indexes.
        o if [TDH0, TDT0, RDH0, RDT0].iter().any(|&r| o == r || o == r + QUEUE_STRIDE) => 0x0000_FFFF,
        // Ring lengths: multiples of 128 bytes, bits 19:7.
        o if [TDLEN0, RDLEN0].iter().any(|&r| o == r || o == r + QUEUE_STRIDE) => 0x000F_FF80,
        // Ring base addresses (low): 16-byte aligned.
        o if [TDBAL0, RDBAL0].iter().any(|&r| o == r || o == r + QUEUE_STRIDE) => !0xF,
        _ => 0xFFFF_FFFF,
    }
}

/// Registers that come as arrays: name, offset of element 0, element count, stride.
pub const REGISTER_ARRAYS: &[(&str, u32, u32, u32)] = &[
    ("EITR", EITR0, EITR_COUNT, 4),
    ("MTA", MTA, MTA_COUNT, 4),
    ("RAL", RAL0, RAR_COUNT, 8),
    ("RAH", RAH0, RAR_COUNT, 8),
    ("VFTA", VFTA, VFTA_COUNT, 4),
    ("RETA", RETA, 32, 4),
    ("RSSRK", RSSRK, 10, 4),
];

/// Every register by name: the named ones, queue 1's (RDBAL1 ... TARC1, QUEUE_STRIDE above queue 0's),
/// and array elements as `NAME[i]`, in offset order. Built once.
pub fn all_registers() -> &'static [(String, u32)] {
    static ALL: std::sync::OnceLock<Vec<(String, u32)>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut v: Vec<(String, u32)> = Vec::new();
        for &(name, off) in REGISTERS {
            if REGISTER_ARRAYS.iter().any(|a| a.1 == off) {
                continue;
            }
            v.push((name.to_string(), off));
            if let Some(stem) = name.strip_suffix('0').filter(|_| is_queue_register(off)) {
                v.push((format!("{stem}1"), off + QUEUE_STRIDE));
            }
        }
        for &(name, base, count, stride) in REGISTER_ARRAYS {
            for i in 0..count {
                v.push((format!("{name}[{i}]"), base + i * stride));
            }
        }
        v.sort_by_key(|r| r.1);
        v
    })
}

fn is_queue_register(off: u32) -> bool {
    (RDBAL0..RDBAL0 + QUEUE_STRIDE).contains(&off) || (TDBAL0..TDBAL0 + QUEUE_STRIDE).contains(&off)
}

/// The datasheet name of the register at `off` (`None` for offsets this map does not name).
pub fn name_of(off: u32) -> Option<String> {
    let off = off & !3;
    if let Some(&(n, _)) = REGISTERS.iter().find(|r| r.1 == off && !REGISTER_ARRAYS.iter().any(|a| a.1 == off)) {
        return Some(n.to_string());
    }
    for &(name, base, count, stride) in REGISTER_ARRAYS {
        if (base..base + count * stride).contains(&off) && (off - base).is_multiple_of(stride) {
            return Some(format!("{name}[{}]", (off - base) / stride));
        }
    }
    let q0 = off.checked_sub(QUEUE_STRIDE).filter(|&o| is_queue_register(o))?;
    let n = REGISTERS.iter().find(|r| r.1 == q0)?.0;
    n.strip_suffix('0').map(|s| format!("{s}1"))
}

/// The offset of a register named as `all_registers` names it (case-insensitive), or a hex offset.
pub fn offset_of(name: &str) -> Option<u32> {
    if let Some(h) = name.strip_prefix("0x").or_else(|| name.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok().filter(|o| *o < BAR0_SIZE as u32).map(|o| o & !3);
    }
    all_registers().iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|r| r.1)
}

#[cfg(test)]
mod names_test {
    use super::*;

    #[test]
    fn names_and_offsets_agree() {
        assert_eq!(name_of(CTRL).as_deref(), Some("CTRL"));
        assert_eq!(name_of(RDT0 + QUEUE_STRIDE).as_deref(), Some("RDT1"));
        assert_eq!(name_of(TARC0 + QUEUE_STRIDE).as_deref(), Some("TARC1"));
        assert_eq!(name_of(MTA + 8).as_deref(), Some("MTA[2]"));
        assert_eq!(name_of(RAH0 + 8).as_deref(), Some("RAH[1]"));
        assert_eq!(name_of(EITR0 + 16).as_deref(), Some("EITR[4]"));
        assert_eq!(name_of(0x0004), None);
        assert_eq!(offset_of("rdt1"), Some(RDT0 + QUEUE_STRIDE));
        assert_eq!(offset_of("0x100"), Some(RCTL));
        let all = all_registers();
        for (n, o) in all {
            assert_eq!(name_of(*o).as_ref(), Some(n), "{n} at {o:#x}");
        }
        assert!(all.len() > 400);
    }
}
