//! A userspace network stack modelled on Linux's: packet buffers with headroom (`skb`), devices polled with
//! a budget (`dev`), Ethernet, ARP with a neighbour cache (`neigh`), IPv4 with routing, fragmentation and
//! reassembly, ICMP, and UDP sockets (`iface`). Wire formats live in `wire`; time is supplied by the caller
//! (`time`), so tests run on a virtual clock.

pub mod blocking;
pub mod dev;
pub mod errno;
pub mod gro;
pub mod iface;
pub mod neigh;
pub mod route;
pub mod skb;
pub mod tcp;
pub mod time;
pub mod wire;

pub use iface::{Config, Errno, PingEvent, Stack};
