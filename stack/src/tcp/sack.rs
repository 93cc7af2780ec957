//! SACK (RFC 2018): the sender's scoreboard of ranges the peer reported holding above the first
//! unacknowledged byte, which recovery skips; and the blocks a receiver reports for the out-of-order data
//! it holds.

use crate::wire::tcp::Seq;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Scoreboard {
    /// SACKed ranges above snd_una, ordered from snd_una up.
    ranges: Vec<(Seq, Seq)>,
}

impl Scoreboard {
    /// Takes an ACK's blocks: those inside [snd_una, snd_max] are kept (others are stale or bogus), and
    /// ranges the cumulative `ack` covers are dropped.
    pub fn update(&mut self, blocks: &[(Seq, Seq)], snd_una: Seq, snd_max: Seq, ack: Seq) {
        for &(a, b) in blocks {
            if a < b && a >= snd_una && b <= snd_max {
                self.ranges.push((a, b));
            }
        }
        self.ranges.retain(|&(_, b)| b > ack);
        self.ranges.sort_by_key(|x| x.0 - snd_una);
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The end of the SACKed range that holds `seq`, if one does.
    pub fn covering(&self, seq: Seq) -> Option<Seq> {
        self.ranges.iter().find(|(a, b)| seq >= *a && seq < *b).map(|r| r.1)
    }

    /// The start of the first SACKed range above `seq`.
    pub fn next_above(&self, seq: Seq) -> Option<Seq> {
        self.ranges.iter().find(|(a, _)| *a > seq).map(|r| r.0)
    }
}

/// The SACK blocks for the out-of-order data held (keyed by sequence number), adjacent pieces merged,
/// the highest first (the most recent data tends to be the highest), at most `max`.
pub fn blocks(ooo: &BTreeMap<u32, Vec<u8>>, max: usize) -> Vec<(Seq, Seq)> {
    let mut blocks: Vec<(Seq, Seq)> = Vec::new();
    for (&s, d) in ooo {
        let (a, b) = (Seq(s), Seq(s) + d.len());
        match blocks.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => blocks.push((a, b)),
        }
    }
    blocks.reverse();
    blocks.truncate(max);
    blocks
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn scoreboard_keeps_valid_blocks_in_order_and_drops_what_is_acked() {
        let mut s = Scoreboard::default();
        let (una, max) = (Seq(1000), Seq(9000));
        s.update(&[(Seq(5000), Seq(6000)), (Seq(3000), Seq(4000)), (Seq(8000), Seq(9500)), (Seq(700), Seq(900))], una, max, una);
        assert_eq!(s.ranges, vec![(Seq(3000), Seq(4000)), (Seq(5000), Seq(6000))], "beyond snd_max or below snd_una: ignored");
        assert_eq!(s.covering(Seq(3500)), Some(Seq(4000)));
        assert_eq!(s.covering(Seq(4000)), None);
        assert_eq!(s.next_above(Seq(4000)), Some(Seq(5000)));
        s.update(&[], una, max, Seq(4000));
        assert_eq!(s.ranges, vec![(Seq(5000), Seq(6000))]);
        s.clear();
        assert_eq!(s.next_above(Seq(0)), None);
    }

    #[test]
    fn receiver_blocks_merge_and_put_the_highest_first() {
        let mut ooo = BTreeMap::new();
        ooo.insert(100, vec![0; 50]);
        ooo.insert(150, vec![0; 50]);
        ooo.insert(400, vec![0; 10]);
        ooo.insert(600, vec![0; 10]);
        assert_eq!(blocks(&ooo, 4), vec![(Seq(600), Seq(610)), (Seq(400), Seq(410)), (Seq(100), Seq(200))]);
        assert_eq!(blocks(&ooo, 2).len(), 2);
    }
}
