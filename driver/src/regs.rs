//! The 82574L registers and bits this driver uses, named as in the datasheet (section 10). The driver keeps
//! its own map: it must not share register or offload code with the device model it is tested against.
#![allow(dead_code)]

pub const CTRL: u32 = 0x00000;
pub const STATUS: u32 = 0x00008;
pub const EECD: u32 = 0x00010;
pub const EERD: u32 = 0x00014;
pub const CTRL_EXT: u32 = 0x00018;
pub const MDIC: u32 = 0x00020;
pub const FCAL: u32 = 0x00028;
pub const FCAH: u32 = 0x0002C;
pub const FCT: u32 = 0x00030;
pub const VET: u32 = 0x00038;
pub const ICR: u32 = 0x000C0;
pub const ITR: u32 = 0x000C4;
pub const ICS: u32 = 0x000C8;
pub const IMS: u32 = 0x000D0;
pub const IMC: u32 = 0x000D8;
pub const EIAC_82574: u32 = 0x000DC;
pub const IAM: u32 = 0x000E0;
pub const IVAR: u32 = 0x000E4;
pub const EITR_82574_BASE: u32 = 0x000E8;
pub const RCTL: u32 = 0x00100;
pub const FCTTV: u32 = 0x00170;
pub const TCTL: u32 = 0x00400;
pub const TIPG: u32 = 0x00410;
pub const EXTCNF_CTRL: u32 = 0x00F00;
pub const PBA: u32 = 0x01000;
pub const FCRTL: u32 = 0x02160;
pub const FCRTH: u32 = 0x02168;
pub const RDBAL: u32 = 0x02800;
pub const RDBAH: u32 = 0x02804;
pub const RDLEN: u32 = 0x02808;
pub const RDH: u32 = 0x02810;
pub const RDT: u32 = 0x02818;
pub const RDTR: u32 = 0x02820;
pub const RXDCTL: u32 = 0x02828;
pub const RADV: u32 = 0x0282C;
pub const TDBAL: u32 = 0x03800;
pub const TDBAH: u32 = 0x03804;
pub const TDLEN: u32 = 0x03808;
pub const TDH: u32 = 0x03810;
pub const TDT: u32 = 0x03818;
pub const TIDV: u32 = 0x03820;
pub const TXDCTL: u32 = 0x03828;
pub const TADV: u32 = 0x0382C;
pub const TARC0: u32 = 0x03840;
/// Offset between queue 0 and queue 1 ring registers.
pub const QUEUE_1: u32 = 0x100;
pub const MPC: u32 = 0x04010;
/// CRC error count (statistics, clear on read).
pub const CRCERRS: u32 = 0x04000;
pub const GPRC: u32 = 0x04074;
pub const GPTC: u32 = 0x04080;
pub const GORCL: u32 = 0x04088;
pub const GORCH: u32 = 0x0408C;
pub const GOTCL: u32 = 0x04090;
pub const GOTCH: u32 = 0x04094;
pub const RNBC: u32 = 0x040A0;
pub const TSCTC: u32 = 0x040F8;
pub const RXCSUM: u32 = 0x05000;
pub const RFCTL: u32 = 0x05008;
pub const MTA: u32 = 0x05200;
pub const RAL0: u32 = 0x05400;
pub const RAH0: u32 = 0x05404;
pub const VFTA: u32 = 0x05600;
pub const MRQC: u32 = 0x05818;
/// The RSS redirection table: 128 one-byte entries in 32 registers; bit 7 of an entry picks queue 1.
pub const RETA: u32 = 0x05C00;
/// A redirection table entry's queue bit (bit 7 of each byte-wide entry): queue 1, else queue 0.
pub const RETA_QUEUE1: u8 = 1 << 7;
/// The 40-byte RSS key in 10 registers.
pub const RSSRK: u32 = 0x05C80;
pub const MANC: u32 = 0x05820;

pub const CTRL_FD: u32 = 1 << 0;
pub const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
pub const CTRL_ASDE: u32 = 1 << 5;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_FRCSPD: u32 = 1 << 11;
pub const CTRL_FRCDPX: u32 = 1 << 12;
pub const CTRL_RST: u32 = 1 << 26;
pub const CTRL_VME: u32 = 1 << 30;

pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_SHIFT: u32 = 6;
pub const STATUS_GIO_MASTER_ENABLE: u32 = 1 << 19;

pub const EECD_AUTO_RD: u32 = 1 << 9;
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 1;
pub const EERD_ADDR_SHIFT: u32 = 2;
pub const EERD_DATA_SHIFT: u32 = 16;

pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
pub const CTRL_EXT_IAME: u32 = 1 << 27;
pub const CTRL_EXT_EIAME: u32 = 1 << 24;
pub const CTRL_EXT_PBA_CLR: u32 = 1 << 31;

pub const EXTCNF_CTRL_MDIO_SW_OWNERSHIP: u32 = 1 << 5;

pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_OP_READ: u32 = 2 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;

pub const PHY_CONTROL: u32 = 0;
pub const PHY_STATUS: u32 = 1;
pub const PHY_ID1: u32 = 2;
pub const PHY_ID2: u32 = 3;
pub const MII_CR_RESTART_AUTO_NEG: u16 = 1 << 9;
pub const MII_CR_POWER_DOWN: u16 = 1 << 11;
pub const MII_CR_AUTO_NEG_EN: u16 = 1 << 12;
pub const MII_SR_LINK_STATUS: u16 = 1 << 2;
pub const MII_SR_AUTONEG_COMPLETE: u16 = 1 << 5;
/// BME1000 (82574's PHY): PHYID1 0x0141, PHYID2 0x0CB1 (with revision in the low bits).
pub const BME1000_E_PHY_ID: u32 = 0x01410CB0;

pub const IMS_TXDW: u32 = 1 << 0;
pub const IMS_LSC: u32 = 1 << 2;
pub const IMS_RXSEQ: u32 = 1 << 3;
pub const IMS_RXDMT0: u32 = 1 << 4;
pub const IMS_RXO: u32 = 1 << 6;
pub const IMS_RXT0: u32 = 1 << 7;
pub const IMS_RXQ0: u32 = 1 << 20;
pub const IMS_RXQ1: u32 = 1 << 21;
pub const IMS_TXQ0: u32 = 1 << 22;
pub const IMS_TXQ1: u32 = 1 << 23;
pub const IMS_OTHER: u32 = 1 << 24;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_BAM: u32 = 1 << 15;
/// VLAN filter enable: tagged frames pass only for VLANs set in the VFTA.
pub const RCTL_VFE: u32 = 1 << 18;
pub const RCTL_SECRC: u32 = 1 << 26;
pub const RFCTL_EXTEN: u32 = 1 << 15;
pub const RXCSUM_IPOFL: u32 = 1 << 8;
pub const RXCSUM_TUOFL: u32 = 1 << 9;
/// The write-back carries the RSS hash instead of the packet checksum.
pub const RXCSUM_PCSD: u32 = 1 << 13;
pub const MRQC_ENABLE_RSS: u32 = 1;
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 18;
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;

pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;
pub const TCTL_RTLC: u32 = 1 << 24;
pub const TARC_ENABLE: u32 = 1 << 10;
pub const TXDCTL_GRAN: u32 = 1 << 24;
pub const TXDCTL_COUNT_DESC: u32 = 1 << 22;

pub const RAH_AV: u32 = 1 << 31;

/// IVAR entry: valid bit and vector number, per cause.
pub const IVAR_VALID: u32 = 0x8;
pub const IVAR_INT_ALLOC_VALID: u32 = 1 << 31;

/// Sum of NVM words 0x00..=0x3F.
pub const NVM_SUM: u16 = 0xBABA;
pub const NVM_CHECKSUM_REG: u16 = 0x3F;

/// PCI config space offsets used by the driver.
pub const PCI_VENDOR_ID: u64 = 0x00;
pub const PCI_COMMAND: u64 = 0x04;
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;
pub const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The first capability's offset, and the capabilities this driver looks for.
pub const PCI_CAPABILITY_LIST: u64 = 0x34;
pub const PCI_CAP_ID_MSI: u8 = 0x05;
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Message Control, two bytes into the MSI and MSI-X capabilities.
pub const PCI_MSI_FLAGS: u64 = 2;
pub const PCI_MSI_FLAGS_ENABLE: u16 = 1 << 0;
pub const PCI_MSIX_FLAGS_MASKALL: u16 = 1 << 14;
pub const PCI_MSIX_FLAGS_ENABLE: u16 = 1 << 15;
pub const PCI_VENDOR_INTEL: u16 = 0x8086;
pub const PCI_DEVICE_82574L: u16 = 0x10D3;
