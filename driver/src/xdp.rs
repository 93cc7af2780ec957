//! An XDP-style hook: a program attached to the driver runs on each received frame in the driver's own
//! receive buffer, before the frame is handed up as a packet, and decides its fate: PASS (up to the stack),
//! DROP (the buffer is reused at once, nothing is allocated), TX (back out of the same card, from the
//! driver's own transmit ring) or REDIRECT (to a target the caller resolves: another interface, or a user
//! queue in the manner of AF_XDP). The program sees the RX queue and, with RSS on, the card's hash; it may
//! rewrite the frame and move its head (`adjust_head`) to push or pop headers. Programs are Rust values
//! implementing [`XdpProgram`].

/// A program's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    Pass,
    Drop,
    Tx,
    /// To target `n` (the caller's numbering: an interface or a user queue).
    Redirect(u32),
    /// The program failed (Linux's XDP_ABORTED): dropped and counted apart.
    Aborted,
}

/// What the program knows of the frame beside its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpMeta {
    /// The receive queue the card put it on.
    pub queue: usize,
    /// The card's RSS hash (with RSS on and a hashable frame).
    pub rss_hash: Option<u32>,
    /// The stripped 802.1Q tag, when the card removed one.
    pub vlan: Option<u16>,
}

/// The frame as the program sees it: bytes it may change, and a head it may move.
pub struct XdpFrame<'a> {
    buf: &'a mut Vec<u8>,
    /// Where the frame starts in `buf`.
    head: usize,
}

/// Most a head may grow into headroom (Linux's XDP_PACKET_HEADROOM).
pub const XDP_HEADROOM: usize = 256;

impl<'a> XdpFrame<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> XdpFrame<'a> {
        XdpFrame { buf, head: 0 }
    }

    pub fn data(&self) -> &[u8] {
        self.buf.get(self.head..).unwrap_or_default()
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let h = self.head;
        self.buf.get_mut(h..).unwrap_or_default()
    }

    /// Moves the frame's start by `delta` bytes: negative grows it (new bytes at the front, zeroed, at
    /// most [`XDP_HEADROOM`] in all), positive drops bytes from the front. False, and nothing changes, when
    /// the move is out of range (the frame would be shorter than an Ethernet header).
    pub fn adjust_head(&mut self, delta: isize) -> bool {
        if delta >= 0 {
            let d = delta as usize;
            if self.data().len() < d + 14 {
                return false;
            }
            self.head += d;
            return true;
        }
        let grow = delta.unsigned_abs();
        if grow > XDP_HEADROOM {
            return false;
        }
        if grow <= self.head {
            self.head -= grow;
            if let Some(b) = self.buf.get_mut(self.head..self.head + grow) {
                b.fill(0);
            }
        } else {
            let more = grow - self.head;
            self.buf.splice(0..0, std::iter::repeat_n(0u8, more));
            self.head = 0;
            if let Some(b) = self.buf.get_mut(..grow) {
                b.fill(0);
            }
        }
        true
    }

    /// Makes the buffer the frame alone (what was before the head goes).
    pub fn finish(self) {
        if self.head > 0 {
            self.buf.drain(..self.head);
        }
    }
}

/// A program attached to an interface.
pub trait XdpProgram {
    fn run(&mut self, frame: &mut XdpFrame, meta: &XdpMeta) -> XdpAction;
    /// A name for listings.
    fn name(&self) -> String {
        "xdp".into()
    }
}

/// Per-verdict counters (`ip -s link`'s xdp lines, `ethtool -S`'s xdp_* counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub pass: u64,
    pub drop: u64,
    pub tx: u64,
    pub redirect: u64,
    pub aborted: u64,
    /// TX verdicts the transmit ring had no room for (dropped).
    pub tx_errors: u64,
}

impl XdpStats {
    pub fn count(&mut self, a: XdpAction) {
        match a {
            XdpAction::Pass => self.pass += 1,
            XdpAction::Drop => self.drop += 1,
            XdpAction::Tx => self.tx += 1,
            XdpAction::Redirect(_) => self.redirect += 1,
            XdpAction::Aborted => self.aborted += 1,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_head_moves_both_ways_within_limits() {
        let mut b: Vec<u8> = (0..64).collect();
        let mut f = XdpFrame::new(&mut b);
        assert!(f.adjust_head(4));
        assert_eq!(f.data()[0], 4);
        assert!(f.adjust_head(-8), "grows past the original start");
        assert_eq!(f.data().len(), 68);
        assert_eq!(&f.data()[..8], &[0; 8]);
        assert_eq!(f.data()[8], 4, "the old frame follows");
        assert!(!f.adjust_head(60), "a frame shorter than an Ethernet header");
        assert!(!f.adjust_head(-(XDP_HEADROOM as isize) - 1));
        f.data_mut()[0] = 0xAA;
        f.finish();
        assert_eq!(b.len(), 68);
        assert_eq!(b[0], 0xAA);
    }
}
