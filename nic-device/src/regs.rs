//! 82574L register map: byte offsets into BAR0 and the bits we act on, named as in the datasheet.
#![allow(dead_code)]

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const EECD: u32 = 0x0010;
pub const EERD: u32 = 0x0014;
pub const CTRL_EXT: u32 = 0x0018;
pub const FLA: u32 = 0x001C;
pub const MDIC: u32 = 0x0020;
pub const FCAL: u32 = 0x0028;
pub const FCAH: u32 = 0x002C;
pub const FCT: u32 = 0x0030;
pub const VET: u32 = 0x0038;
pub const ICR: u32 = 0x00C0;
pub const ITR: u32 = 0x00C4;
pub const ICS: u32 = 0x00C8;
pub const IMS: u32 = 0x00D0;
pub const IMC: u32 = 0x00D8;
pub const EIAC: u32 = 0x00DC;
pub const IAM: u32 = 0x00E0;
pub const IVAR: u32 = 0x00E4;
pub const EITR0: u32 = 0x00E8;
pub const EITR_COUNT: u32 = 5;
pub const RCTL: u32 = 0x0100;
pub const FCTTV: u32 = 0x0170;
pub const TXCW: u32 = 0x0178;
pub const RXCW: u32 = 0x0180;
pub const TCTL: u32 = 0x0400;
pub const TIPG: u32 = 0x0410;
pub const AIT: u32 = 0x0458;
pub const LEDCTL: u32 = 0x0E00;
pub const EXTCNF_CTRL: u32 = 0x0F00;
pub const EXTCNF_SIZE: u32 = 0x0F08;
pub const PBA: u32 = 0x1000;
pub const PBS: u32 = 0x1008;
pub const EEMNGCTL: u32 = 0x1010;
pub const FCRTL: u32 = 0x2160;
pub const FCRTH: u32 = 0x2168;
pub const PSRCTL: u32 = 0x2170;
pub const RDBAL0: u32 = 0x2800;
pub const RDBAH0: u32 = 0x2804;
pub const RDLEN0: u32 = 0x2808;
pub const RDH0: u32 = 0x2810;
pub const RDT0: u32 = 0x2818;
pub const RDTR: u32 = 0x2820;
pub const RXDCTL0: u32 = 0x2828;
pub const RADV: u32 = 0x282C;
pub const RSRPD: u32 = 0x2C00;
pub const RAID: u32 = 0x2C08;
pub const TDBAL0: u32 = 0x3800;
pub const TDBAH0: u32 = 0x3804;
pub const TDLEN0: u32 = 0x3808;
pub const TDH0: u32 = 0x3810;
pub const TDT0: u32 = 0x3818;
pub const TIDV: u32 = 0x3820;
pub const TXDCTL0: u32 = 0x3828;
pub const TADV: u32 = 0x382C;
pub const TARC0: u32 = 0x3840;
/// Queue 1 registers sit this far above queue 0's.
pub const QUEUE_STRIDE: u32 = 0x100;

// Statistics (clear on read).
pub const STATS_START: u32 = 0x4000;
pub const STATS_END: u32 = 0x4124;
pub const CRCERRS: u32 = 0x4000;
pub const MPC: u32 = 0x4010;
pub const PRC64: u32 = 0x405C;
pub const PRC127: u32 = 0x4060;
pub const PRC255: u32 = 0x4064;
pub const PRC511: u32 = 0x4068;
pub const PRC1023: u32 = 0x406C;
pub const PRC1522: u32 = 0x4070;
pub const GPRC: u32 = 0x4074;
pub const XONRXC: u32 = 0x4048;
pub const XONTXC: u32 = 0x404C;
pub const XOFFRXC: u32 = 0x4050;
pub const XOFFTXC: u32 = 0x4054;
pub const FCRUC: u32 = 0x4058;
/// FCRTL.XONE: send XON when the FIFO falls below the low threshold.
pub const FCRTL_XONE: u32 = 1 << 31;
pub const BPRC: u32 = 0x4078;
pub const MPRC: u32 = 0x407C;
pub const GPTC: u32 = 0x4080;
pub const GORCL: u32 = 0x4088;
pub const GORCH: u32 = 0x408C;
pub const GOTCL: u32 = 0x4090;
pub const GOTCH: u32 = 0x4094;
pub const RNBC: u32 = 0x40A0;
pub const RUC: u32 = 0x40A4;
pub const ROC: u32 = 0x40AC;
pub const TORL: u32 = 0x40C0;
pub const TORH: u32 = 0x40C4;
pub const TOTL: u32 = 0x40C8;
pub const TOTH: u32 = 0x40CC;
pub const TPR: u32 = 0x40D0;
pub const TPT: u32 = 0x40D4;
pub const PTC64: u32 = 0x40D8;
pub const PTC127: u32 = 0x40DC;
pub const PTC255: u32 = 0x40E0;
pub const PTC511: u32 = 0x40E4;
pub const PTC1023: u32 = 0x40E8;
pub const PTC1522: u32 = 0x40EC;
pub const MPTC: u32 = 0x40F0;
pub const BPTC: u32 = 0x40F4;
pub const TSCTC: u32 = 0x40F8;
pub const TSCTFC: u32 = 0x40FC;
pub const IAC: u32 = 0x4100;

pub const RXCSUM: u32 = 0x5000;
pub const RFCTL: u32 = 0x5008;
pub const MTA: u32 = 0x5200;
pub const MTA_COUNT: u32 = 128;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const RAR_COUNT: u32 = 16;
pub const VFTA: u32 = 0x5600;
pub const VFTA_COUNT: u32 = 128;
pub const WUC: u32 = 0x5800;
pub const WUFC: u32 = 0x5808;
pub const WUS: u32 = 0x5810;
pub const MRQC: u32 = 0x5818;
pub const MANC: u32 = 0x5820;
pub const FACTPS: u32 = 0x5B30;
pub const GCR: u32 = 0x5B00;
pub const SWSM: u32 = 0x5B50;
pub const FWSM: u32 = 0x5B54;
pub const GCR2: u32 = 0x5B64;
pub const RETA: u32 = 0x5C00;
pub const RSSRK: u32 = 0x5C80;
pub const SYSTIML: u32 = 0xB600;
pub const SYSTIMH: u32 = 0xB604;
pub const TIMINCA: u32 = 0xB608;

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
        o if o == RDTR || o == RADV || o == TIDV || o == TADV => 0x0000_FFFF,
        o if o == RDTR + QUEUE_STRIDE || o == TIDV + QUEUE_STRIDE => 0x0000_FFFF,
        // Receive address high: address 15:0, ASEL 17:16, AV 31.
        o if (RAL0..RAL0 + RAR_COUNT * 8).contains(&o) && (o - RAL0) % 8 == 4 => 0x8003_FFFF,
        _ => 0xFFFF_FFFF,
    }
}
