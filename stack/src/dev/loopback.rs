//! A loopback device: what is sent is received.

use super::Device;
use crate::skb::PacketBuf;
use std::collections::VecDeque;

#[derive(Default)]
pub struct Loopback {
    q: VecDeque<PacketBuf>,
}

impl Device for Loopback {
    fn mac(&self) -> crate::wire::Mac {
        [0; 6]
    }
    fn mtu(&self) -> usize {
        65535
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> std::io::Result<usize> {
        let n = q.len();
        self.q.extend(q.drain(..));
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let n = budget.min(self.q.len());
        out.extend(self.q.drain(..n));
        Ok(n)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> std::io::Result<()> {
        if self.q.is_empty() {
            std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
        }
        Ok(())
    }
    fn name(&self) -> String {
        "lo".into()
    }
}
