//! `nic-lab handoff`: the bytes the driver–device pair moves per frame, moved by two threads and nothing
//! else. One thread stands for the driver: it builds each sequence-numbered frame in a buffer of its own,
//! copies it into a transmit slot of shared memory, and later copies the frame back out of a receive slot
//! and checks it, as `loopback-test` does. The other stands for the device: it copies each transmit slot
//! into a frame buffer of its own and that buffer into the receive slot (the two copies `nic-device` makes
//! per frame). Slots are handed over by two counters: the driver thread moves its own after each run of
//! frames it writes, the device thread its own every 16 frames and when it runs out (a counter moved per
//! frame sends its cache line across CPUs per frame, which cost this machine up to three quarters of the
//! rate). Both threads spin instead of sleeping (yielding the CPU after a run of empty looks), and up to
//! WINDOW frames are in flight, as in the pair with rings of twice that size. No descriptors, registers,
//! messages or interrupts: what remains is the cost of the copies and of the cache lines crossing between
//! the two CPUs, which is what the machine allows any pair with this structure. Memory is `vm-memory`
//! guest memory, accessed the way the device and the driver access theirs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::netdev::RxCsum;
use driver::RxPacket;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::frames::{build_into, SeqCheck, KIND_LOOP, MIN_FRAME};

/// The shared state: the memory with both rings' slots and the two hand-over counters.
struct Shared {
    mem: GuestMemoryMmap,
    /// Frames the driver thread has written to transmit slots.
    sent: AtomicU64,
    /// Frames the device thread has written to receive slots.
    done: AtomicU64,
    stop: AtomicBool,
}

const RX_BASE: u64 = 1 << 30;
/// The device thread hands back this many frames at a time, as the card writes back a burst of descriptors.
const BURST: u64 = 16;

fn slot(base: u64, i: u64, window: u64, stride: u64) -> GuestAddress {
    GuestAddress(base + (i % (2 * window)) * stride)
}

/// Moves `count` frames of `size` bytes with `window` in flight; prints the rate as `loopback-test` does.
pub fn run(count: u64, size: usize, window: usize) -> Result<bool, String> {
    let (check, next, secs) = move_frames(count, size, window, None)?;
    println!("sent:        {next}");
    println!("received:    {}", check.received);
    println!("lost:        {}", check.lost);
    println!("corrupt:     {}", check.corrupt);
    println!("elapsed:     {secs:.3} s");
    println!("rate:        {:.0} frames/s, {:.3} Gbit/s", check.received as f64 / secs, check.bytes as f64 * 8.0 / secs / 1e9);
    Ok(check.lost == 0 && check.corrupt == 0 && check.duplicates == 0 && check.reordered == 0)
}

/// The two threads at work: the driver thread's check of what came back, the frames it sent and the
/// seconds it took. `damage` makes the device thread flip a payload byte of every frame whose number is
/// a multiple of it (the check must see those).
fn move_frames(count: u64, size: usize, window: usize, damage: Option<u64>) -> Result<(SeqCheck, u64, f64), String> {
    let size = size.clamp(MIN_FRAME, 1514);
    let window = window.clamp(1, 4096) as u64;
    let stride = 2048u64;
    let len = (2 * window * stride) as usize;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len), (GuestAddress(RX_BASE), len)])
        .map_err(|e| format!("guest memory: {e}"))?;
    let sh = Arc::new(Shared { mem, sent: AtomicU64::new(0), done: AtomicU64::new(0), stop: AtomicBool::new(false) });
    let dev = {
        let sh = Arc::clone(&sh);
        std::thread::Builder::new()
            .name("handoff-device".into())
            .spawn(move || device(&sh, size, window, stride, damage))
            .map_err(|e| format!("thread: {e}"))?
    };
    let mac = [0x02, 0, 0, 0, 0, 1];
    let mut check = SeqCheck::default();
    let mut frame = Vec::with_capacity(size);
    let mut rx = RxPacket { data: Vec::with_capacity(size), csum: RxCsum::None, vlan: None, queue: 0 };
    let (mut next, mut taken) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut last = Instant::now();
    let mut result = Ok(());
    let mut idle = 0u32;
    while taken < count {
        let mut moved = false;
        while next < count && next - taken < window {
            frame = build_into(std::mem::take(&mut frame), mac, mac, KIND_LOOP, next, size);
            if let Err(e) = sh.mem.write_slice(&frame, slot(0, next, window, stride)) {
                result = Err(format!("transmit slot: {e}"));
                break;
            }
            next += 1;
            moved = true;
        }
        sh.sent.store(next, Ordering::Release);
        let done = sh.done.load(Ordering::Acquire);
        while taken < done {
            rx.data.resize(size, 0);
            if let Err(e) = sh.mem.read_slice(&mut rx.data, slot(RX_BASE, taken, window, stride)) {
                result = Err(format!("receive slot: {e}"));
                break;
            }
            check.see(&rx);
            taken += 1;
            moved = true;
        }
        if result.is_err() {
            break;
        }
        if moved {
            last = Instant::now();
            idle = 0;
        } else if last.elapsed() > Duration::from_secs(5) {
            result = Err(format!("the device thread stopped after {taken} frames"));
            break;
        } else {
            idle = spin(idle);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    let moved = dev.join().map_err(|_| "the device thread panicked".to_string())?;
    result?;
    moved?;
    check.lost = count.saturating_sub(check.received);
    Ok((check, next, secs))
}

/// The device thread: each handed-over transmit slot is copied into its own buffer, then into the
/// receive slot of the same number.
fn device(sh: &Shared, size: usize, window: u64, stride: u64, damage: Option<u64>) -> Result<(), String> {
    let mut frame = vec![0u8; size];
    let mut done = 0u64;
    let mut idle = 0u32;
    while !sh.stop.load(Ordering::Relaxed) {
        let sent = sh.sent.load(Ordering::Acquire);
        idle = if done == sent { spin(idle) } else { 0 };
        while done < sent {
            sh.mem.read_slice(&mut frame, slot(0, done, window, stride)).map_err(|e| format!("transmit slot: {e}"))?;
            if damage.is_some_and(|d| d > 0 && done.is_multiple_of(d)) {
                if let Some(b) = frame.last_mut() {
                    *b ^= 0xFF;
                }
            }
            sh.mem.write_slice(&frame, slot(RX_BASE, done, window, stride)).map_err(|e| format!("receive slot: {e}"))?;
            done += 1;
            if done.is_multiple_of(BURST) {
                sh.done.store(done, Ordering::Release);
            }
        }
        sh.done.store(done, Ordering::Release);
    }
    Ok(())
}

/// One empty look of a spinning thread: after a run of them it yields the CPU, which lets the other
/// thread run when the scheduler has put both on one CPU. The count of empty looks so far comes back.
fn spin(idle: u32) -> u32 {
    if idle >= 256 {
        std::thread::yield_now();
        return 0;
    }
    idle + 1
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_frame_comes_back_intact_and_in_order() {
        for (size, window) in [(60, 1), (64, 7), (1514, 512), (1514, 4096)] {
            let (check, sent, _) = move_frames(20_000, size, window, None).unwrap();
            assert_eq!((sent, check.received, check.lost), (20_000, 20_000, 0), "size {size} window {window}");
            assert_eq!((check.corrupt, check.duplicates, check.reordered), (0, 0, 0), "size {size} window {window}");
            assert_eq!(check.bytes, 20_000 * size as u64);
        }
    }

    #[test]
    fn a_frame_damaged_in_the_hand_over_is_seen() {
        let (check, _, _) = move_frames(10_000, 1514, 64, Some(100)).unwrap();
        assert_eq!(check.received, 10_000);
        assert_eq!(check.corrupt, 100);
    }
}
