//! The vfio-user protocol (QEMU's `vfio-user-pci` speaks it): message layouts, a codec that carries file
//! descriptors with SCM_RIGHTS, a server loop that dispatches to a [`server::Device`] trait, and a client.
//!
//! The crate holds no device logic. Every message from the peer is untrusted: a message that does not parse
//! gets an error reply with a non-zero errno and the stream stays in sync; a message that cannot be framed
//! (bad size) closes the connection.
// Guest- and client-controlled paths: no unwrap, expect or unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod client;
pub mod message;
pub mod server;
pub mod socket;

pub use message::*;
