//! IEEE 802.3x flow control (82574L datasheet, "Flow Control"): PAUSE frames received stop the transmitter
//! for the time they ask (CTRL.RFCE), and the receive FIFO passing its high threshold (FCRTH) sends XOFF
//! with the pause time in FCTTV, falling below the low threshold (FCRTL, with XONE) sends XON (CTRL.TFCE).
//! Counted as the statistics registers count them: XONRXC, XOFFRXC, XONTXC, XOFFTXC, FCRUC.

use crate::bytes::{be16, sub};
use crate::nic::Core;
use crate::regs::*;
use std::time::{Duration, Instant};

/// The reserved multicast address of MAC control frames.
pub const PAUSE_DA: [u8; 6] = [0x01, 0x80, 0xC2, 0x00, 0x00, 0x01];
/// MAC control opcode for PAUSE.
const OPCODE_PAUSE: u16 = 0x0001;
/// A pause quantum is 512 bit times: 512 ns at 1000 Mb/s.
const QUANTUM: Duration = Duration::from_nanos(512);

/// Flow-control state of the MAC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowControl {
    /// Transmission paused by a received XOFF until then.
    pub paused_until: Option<Instant>,
    /// An XOFF was sent and no XON since.
    pub xoff_sent: bool,
}

/// A PAUSE frame from `src` asking for `quanta` (0 is XON).
pub fn pause_frame(src: [u8; 6], quanta: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&PAUSE_DA);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x8808u16.to_be_bytes());
    f.extend_from_slice(&OPCODE_PAUSE.to_be_bytes());
    f.extend_from_slice(&quanta.to_be_bytes());
    f.resize(60, 0);
    f
}

impl Core {
    /// A received frame that is a MAC control frame (type FCT to the FCAL/FCAH address) is taken here: a
    /// PAUSE pauses or resumes transmission when CTRL.RFCE allows, anything else counts in FCRUC. `true`
    /// when the frame was a control frame and must not reach the host.
    pub(crate) fn flow_control_rx(&mut self, f: &[u8]) -> bool {
        let fct = self.reg(FCT) as u16;
        let addr = self.address_in(FCAL, FCAH);
        // Until software programs FCT and FCAL/FCAH (Linux writes 0x8808 and 01:80:C2:00:00:01), nothing is a
        // control frame.
        if fct == 0 || addr == [0; 6] || be16(f, 12) != Some(fct) || sub(f, 0..6) != Some(&addr[..]) {
            return false;
        }
        match (be16(f, 14), be16(f, 16)) {
            (Some(OPCODE_PAUSE), Some(quanta)) => {
                if self.reg(CTRL) & CTRL_RFCE != 0 {
                    self.fc.paused_until = (quanta != 0).then(|| self.now() + QUANTUM * u32::from(quanta));
                }
                self.stats.inc(if quanta == 0 { XONRXC } else { XOFFRXC }, 1);
            }
            _ => self.stats.inc(FCRUC, 1),
        }
        true
    }

    /// Whether a received PAUSE holds the transmitter now (the clock is read only while a pause is set).
    pub fn tx_paused(&self) -> bool {
        self.fc.paused_until.is_some_and(|t| self.now() < t)
    }

    /// After the receive FIFO changed: XOFF when it passes FCRTH, XON when it falls below FCRTL (with XONE).
    pub(crate) fn flow_control_fifo(&mut self) {
        // With a lossless backend (`--rx-overflow pause`) the device holds the backend back instead: nothing
        // is lost, and no PAUSE frame needs to go on the wire.
        if self.reg(CTRL) & CTRL_TFCE == 0 || self.lossless_rx {
            return;
        }
        let used = crate::rx::RX_FIFO_BYTES - self.rx_fifo.room();
        let high = (self.reg(FCRTH) & 0xFFF8) as usize;
        let low = (self.reg(FCRTL) & 0xFFF8) as usize;
        let src = self.address_in(RAL0, RAH0);
        if !self.fc.xoff_sent && high != 0 && used >= high {
            self.fc.xoff_sent = true;
            let quanta = self.reg(FCTTV) as u16;
            self.control_out.push_back(pause_frame(src, quanta));
            self.stats.inc(XOFFTXC, 1);
        } else if self.fc.xoff_sent && used <= low {
            self.fc.xoff_sent = false;
            if self.reg(FCRTL) & FCRTL_XONE != 0 {
                self.control_out.push_back(pause_frame(src, 0));
                self.stats.inc(XONTXC, 1);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn pause_frame_layout() {
        let f = pause_frame([2, 0, 0, 0, 0, 1], 0xFFFF);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &PAUSE_DA);
        assert_eq!(&f[12..18], &[0x88, 0x08, 0x00, 0x01, 0xFF, 0xFF]);
    }
}
