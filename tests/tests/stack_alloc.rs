//! The stack's receive path in its steady state allocates nothing per frame: a frame arrives in a buffer
//! from the stack's pool (as the driver receives into, `skb::rx_buffer`), becomes a packet without a copy,
//! and when the packet is gone its buffer and its shared holder go back to the thread's pools; the vector
//! the stack polls into keeps its room from one poll to the next. (Each packet's holder used to be
//! allocated and freed, and the poll vector grown again from nothing on every poll.)

use stack::dev::Device;
use stack::skb::PacketBuf;
use std::collections::VecDeque;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: nic_tests::Counting = nic_tests::Counting;

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// Hands out `left` frames, 64 to a poll, each in a pooled receive buffer: an IPv4 datagram for another
/// host's MAC (which the stack's Ethernet input leaves alone), or a broadcast ARP request for an address
/// that is not the stack's.
struct Feed {
    left: usize,
    arp: bool,
}

impl Device for Feed {
    fn mac(&self) -> [u8; 6] {
        OUR_MAC
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let n = q.len();
        q.clear();
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let n = budget.min(self.left);
        for _ in 0..n {
            let mut v = stack::skb::rx_buffer(1518);
            if self.arp {
                v.extend_from_slice(&[0xff; 6]);
                v.extend_from_slice(&[2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
                v.extend_from_slice(&[0; 6]);
                v.extend_from_slice(&[10, 0, 0, 99]);
                v.resize(60, 0);
            } else {
                v.extend_from_slice(&[2, 0, 0, 0, 0, 0x99, 2, 0, 0, 0, 0, 1, 8, 0]);
                v.resize(1514, 0x45);
            }
            out.push(PacketBuf::from_vec(v));
        }
        self.left -= n;
        Ok(n)
    }
    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        "feed".into()
    }
}

#[test]
fn received_frames_the_stack_drops_allocate_nothing_per_frame() {
    for arp in [false, true] {
        let warm = 64 * 20;
        let frames = 64 * 500;
        let mut st = stack::Stack::new(Box::new(Feed { left: warm + frames, arp }), stack::Config::new([10, 0, 0, 2], 24));
        let mut now = stack::time::Instant::from_millis(1);
        let mut step = || {
            now = now + Duration::from_micros(10);
            st.poll(now);
        };
        for _ in 0..warm / 64 {
            step();
        }
        let before = nic_tests::allocations();
        for _ in 0..frames / 64 {
            step();
        }
        let n = nic_tests::allocations() - before;
        assert!(st.stats.rx_packets as usize == warm + frames, "arp {arp}: {} frames seen", st.stats.rx_packets);
        assert!(n <= 10, "arp {arp}: {n} allocations for {frames} frames");
    }
}
