//! A userspace network stack modelled on Linux's: packet buffers with headroom (`skb`), devices polled with
//! a budget (`dev`), Ethernet, ARP with a neighbour cache (`neigh`), IPv4 with routing, fragmentation and
//! reassembly, ICMP, UDP and TCP sockets (`iface`, one module per protocol; `errno` for socket errors), and
//! TCP connections (`tcp`: the state machine, with congestion control, RTO and SACK in modules of their
//! own), one host over several interfaces with one socket table, routing and forwarding (`router`), and
//! netfilter (`netfilter`: hooks, rules, connection tracking and NAT). Wire formats live in `wire`; time is
//! supplied by the caller (`time`), so tests run on a virtual clock.

pub mod blocking;
pub mod dev;
pub mod errno;
pub mod frag;
pub mod gro;
pub mod iface;
pub mod monitor;
pub mod ndisc;
pub mod neigh;
pub mod netfilter;
pub mod route;
pub mod router;
pub mod skb;
pub mod tc;
pub mod tcp;
pub mod time;
pub mod wire;
pub mod xdp;

pub use iface::{Config, Errno, Ipv6Config, Ping6Event, PingEvent, Stack};
