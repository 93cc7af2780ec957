//! Register fields by their datasheet names, for `nicctl regs`: each register that has fields a driver
//! writer looks at, with each field's mask. Values are decoded as `(value & mask) >> mask.trailing_zeros()`.

use crate::regs::*;

const ICR_FIELDS: &[(&str, u32)] = &[
    ("TXDW", ICR_TXDW),
    ("TXQE", ICR_TXQE),
    ("LSC", ICR_LSC),
    ("RXSEQ", ICR_RXSEQ),
    ("RXDMT0", ICR_RXDMT0),
    ("RXO", ICR_RXO),
    ("RXT0", ICR_RXT0),
    ("MDAC", ICR_MDAC),
    ("TXD_LOW", ICR_TXD_LOW),
    ("SRPD", ICR_SRPD),
    ("ACK", ICR_ACK),
    ("MNG", ICR_MNG),
    ("RXQ0", ICR_RXQ0),
    ("RXQ1", ICR_RXQ1),
    ("TXQ0", ICR_TXQ0),
    ("TXQ1", ICR_TXQ1),
    ("OTHER", ICR_OTHER),
    ("INT_ASSERTED", ICR_INT_ASSERTED),
];

const QUEUE_CTL: &[(&str, u32)] =
    &[("PTHRESH", 0x3F), ("HTHRESH", 0x3F << 8), ("WTHRESH", 0x3F << 16), ("GRAN", 1 << 24), ("LWTHRESH", 0x7F << 25)];

/// The fields of the register at `off`, if it has any worth decoding.
pub fn fields(off: u32) -> &'static [(&'static str, u32)] {
    match off {
        CTRL => &[
            ("FD", CTRL_FD),
            ("GIO_MASTER_DISABLE", CTRL_GIO_MASTER_DISABLE),
            ("ASDE", 1 << 5),
            ("SLU", CTRL_SLU),
            ("SPEED", 3 << 8),
            ("FRCSPD", 1 << 11),
            ("FRCDPLX", 1 << 12),
            ("RST", CTRL_RST),
            ("RFCE", CTRL_RFCE),
            ("TFCE", CTRL_TFCE),
            ("VME", CTRL_VME),
            ("PHY_RST", CTRL_PHY_RST),
        ],
        STATUS => &[
            ("FD", STATUS_FD),
            ("LU", STATUS_LU),
            ("TXOFF", 1 << 4),
            ("SPEED", 3 << 6),
            ("PHYRA", STATUS_PHYRA),
            ("GIO_MASTER_ENABLE", STATUS_GIO_MASTER_ENABLE),
        ],
        EECD => &[("PRES", EECD_PRES), ("AUTO_RD", EECD_AUTO_RD)],
        EERD => &[("START", EERD_START), ("DONE", EERD_DONE), ("ADDR", 0x3FFF << EERD_ADDR_SHIFT), ("DATA", 0xFFFF << EERD_DATA_SHIFT)],
        CTRL_EXT => &[
            ("SPD_BYPS", 1 << 15),
            ("RO_DIS", 1 << 17),
            ("EIAME", CTRL_EXT_EIAME),
            ("IAME", CTRL_EXT_IAME),
            ("DRV_LOAD", 1 << 28),
            ("PBA_CLR", CTRL_EXT_PBA_CLR),
        ],
        MDIC => &[
            ("DATA", MDIC_DATA_MASK),
            ("REGADD", 0x1F << MDIC_REG_SHIFT),
            ("PHYADD", 0x1F << MDIC_PHY_SHIFT),
            ("OP", 3 << 26),
            ("R", MDIC_READY),
            ("I", MDIC_INT_EN),
            ("E", MDIC_ERROR),
        ],
        ICR | ICS | IMS | IMC | IAM | EIAC => ICR_FIELDS,
        IVAR => {
            &[("RXQ0", 0xF), ("RXQ1", 0xF << 4), ("TXQ0", 0xF << 8), ("TXQ1", 0xF << 12), ("OTHER", 0xF << 16), ("INT_ON_ALL_WB", 1 << 31)]
        }
        ITR => &[("INTERVAL", 0xFFFF)],
        RCTL => &[
            ("EN", RCTL_EN),
            ("SBP", RCTL_SBP),
            ("UPE", RCTL_UPE),
            ("MPE", RCTL_MPE),
            ("LPE", RCTL_LPE),
            ("LBM", RCTL_LBM_MASK),
            ("RDMTS", 3 << RCTL_RDMTS_SHIFT),
            ("DTYP", RCTL_DTYP_MASK),
            ("MO", 3 << RCTL_MO_SHIFT),
            ("BAM", RCTL_BAM),
            ("BSIZE", 3 << RCTL_BSIZE_SHIFT),
            ("VFE", RCTL_VFE),
            ("CFIEN", 1 << 19),
            ("CFI", 1 << 20),
            ("DPF", 1 << 22),
            ("PMCF", 1 << 23),
            ("BSEX", RCTL_BSEX),
            ("SECRC", RCTL_SECRC),
            ("FLXBUF", 0xF << 27),
        ],
        TCTL => &[
            ("EN", TCTL_EN),
            ("PSP", TCTL_PSP),
            ("CT", 0xFF << 4),
            ("COLD", 0x3FF << 12),
            ("SWXOFF", 1 << 22),
            ("RTLC", 1 << 24),
            ("MULR", 1 << 28),
        ],
        o if o == TXDCTL0 || o == TXDCTL0 + QUEUE_STRIDE || o == RXDCTL0 || o == RXDCTL0 + QUEUE_STRIDE => QUEUE_CTL,
        RXCSUM => &[("PCSS", 0xFF), ("IPOFLD", RXCSUM_IPOFLD), ("TUOFLD", RXCSUM_TUOFLD), ("CRCOFL", 1 << 11), ("PCSD", RXCSUM_PCSD)],
        RFCTL => &[
            ("NFSW_DIS", 1 << 6),
            ("NFSR_DIS", 1 << 7),
            ("ACK_DIS", 1 << 12),
            ("IPFRSP_DIS", RFCTL_IPFRSP_DIS),
            ("EXTEN", RFCTL_EXTEN),
            ("IPV6_EX_DIS", 1 << 16),
            ("NEW_IPV6_EXT_DIS", 1 << 17),
        ],
        PSRCTL => &[
            ("BSIZE0", PSRCTL_BSIZE0_MASK),
            ("BSIZE1", PSRCTL_BSIZE_MASK << 8),
            ("BSIZE2", PSRCTL_BSIZE_MASK << 16),
            ("BSIZE3", PSRCTL_BSIZE_MASK << 24),
        ],
        MRQC => &[("ENABLE", MRQC_ENABLE_MASK), ("RSS_FIELDS", 0x3F << 16)],
        RDTR | TIDV => &[("DELAY", 0xFFFF), ("FPD", DELAY_FPD)],
        RADV | TADV => &[("DELAY", 0xFFFF)],
        FCRTL => &[("RTL", 0x1FFF << 3), ("XONE", FCRTL_XONE)],
        FCRTH => &[("RTH", 0x1FFF << 3)],
        FCTTV => &[("TTV", 0xFFFF)],
        PBA => &[("RXA", 0xFFFF), ("TXA", 0xFFFF << 16)],
        o if (RAH0..RAH0 + RAR_COUNT * 8).contains(&o) && (o - RAH0).is_multiple_of(8) => {
            &[("RAH", 0xFFFF), ("ASEL", 3 << 16), ("AV", RAH_AV)]
        }
        _ => &[],
    }
}

/// `(field, value)` for every field of the register at `off` holding `v`.
pub fn decode(off: u32, v: u32) -> Vec<(&'static str, u32)> {
    fields(off).iter().map(|&(n, m)| (n, (v & m) >> m.trailing_zeros())).collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn decodes_by_datasheet_names() {
        let d = decode(CTRL, CTRL_SLU | CTRL_FD | (2 << 8));
        assert!(d.contains(&("SLU", 1)) && d.contains(&("FD", 1)) && d.contains(&("SPEED", 2)) && d.contains(&("RST", 0)));
        let r = decode(RCTL, RCTL_EN | RCTL_DTYP_PS | RCTL_LPE);
        assert!(r.contains(&("EN", 1)) && r.contains(&("DTYP", 1)) && r.contains(&("LPE", 1)));
        let i = decode(ICR, ICR_LSC | ICR_RXQ0);
        assert!(i.contains(&("LSC", 1)) && i.contains(&("RXQ0", 1)) && i.contains(&("TXDW", 0)));
        assert!(decode(RAH0 + 8, RAH_AV | 0x5634).contains(&("AV", 1)));
        assert!(decode(0x0004, 0xFFFF_FFFF).is_empty());
    }
}
