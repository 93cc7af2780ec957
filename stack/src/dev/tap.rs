//! A TAP device: the stack as a host on the Linux kernel's side of a virtual wire.

use super::Device;
use crate::skb::PacketBuf;
use std::collections::VecDeque;
use std::io;

pub struct Tap {
    tap: nic_tap::Tap,
    mac: crate::wire::Mac,
    buf: Vec<u8>,
}

impl Tap {
    /// Opens (or creates) TAP `name`; the stack uses `mac` as its own address on it.
    /// Attaches to TAP `name` and waits (up to 2 s) until the kernel can send through it, so that the first
    /// ARP request gets its answer instead of a retry a second later.
    pub fn open(name: &str, mac: crate::wire::Mac) -> io::Result<Tap> {
        let tap = nic_tap::Tap::open(name)?;
        if !tap.wait_operational(std::time::Duration::from_secs(2)) {
            log::warn!("tap {name}: not operational (down, or its link not up yet); sending anyway");
        }
        Ok(Tap { tap, mac, buf: vec![0; 65536] })
    }
}

impl Device for Tap {
    fn mac(&self) -> crate::wire::Mac {
        self.mac
    }
    fn transmit(&mut self, q: &mut VecDeque<PacketBuf>) -> io::Result<usize> {
        let mut n = 0;
        while let Some(p) = q.front() {
            let sent = if p.frags.is_empty() { self.tap.send(p.data())? } else { self.tap.send(&p.to_vec())? };
            if !sent {
                break;
            }
            q.pop_front();
            n += 1;
        }
        Ok(n)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut n = 0;
        while n < budget {
            let Some(len) = self.tap.recv(&mut self.buf)? else { break };
            out.push(PacketBuf::from_slice(&self.buf[..len]));
            n += 1;
        }
        Ok(n)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        self.tap.wait(timeout);
        Ok(())
    }
    fn name(&self) -> String {
        format!("tap:{}", self.tap.name())
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.tap.as_raw_fd())
    }
}
