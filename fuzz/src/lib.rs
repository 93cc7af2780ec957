//! Fuzz harnesses, one per input surface. Each takes arbitrary bytes and must never panic, hang or touch
//! memory outside what it was given; cargo-fuzz drives them under libFuzzer (`fuzz/fuzz_targets/`), and the
//! stable test command replays the committed corpus through them (`tests/corpus.rs`).
//!
//! | target | surface |
//! |---|---|
//! | `vfio_decode` | vfio-user framing and every message parser |
//! | `vfio_server` | message sequences against a live device object, then its rings |
//! | `device_regs` | config space, BAR0/IO/MSI-X accesses interleaved with TX/RX ring processing |
//! | `stack_rx` | the stack's frame input against live TCP/UDP sockets on a virtual clock, with the interface taken down and up |
//! | `stack_rx6` | IPv6 input: extension headers, fragments, ICMPv6 and neighbour/router discovery |
//! | `backend_vnet` | frames with a virtio-net header from an offloading TAP; TSO packets sent whole |
//! | `stack_nat` | a NAT router's netfilter: conntrack, NAT, REJECT and every hook, IPv4 and IPv6 |
//! | `driver_writeback` | the userspace driver against a card whose registers and write-backs are hostile |
//! | `stack_l2` | VLANs, a bond and a bridge between two wire ports and two hosts: tags, backpressure, links |

pub mod device;
pub mod driver;
pub mod input;
pub mod l2;
pub mod netfilter;
pub mod stack;
pub mod vfio;

/// A harness: arbitrary bytes in, no panic out.
pub type Harness = fn(&[u8]);

/// Every target by name, for the corpus replay and the fuzz script.
pub const TARGETS: &[(&str, Harness)] = &[
    ("vfio_decode", vfio::decode),
    ("vfio_server", vfio::server),
    ("device_regs", device::regs),
    ("stack_rx", stack::rx),
    ("driver_writeback", driver::writeback),
    ("backend_vnet", device::vnet),
    ("stack_rx6", stack::rx6),
    ("stack_nat", netfilter::nat),
    ("stack_l2", l2::l2),
];
