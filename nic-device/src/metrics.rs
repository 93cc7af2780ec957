//! Device metrics: failures and drops counted where they happen, named like `ethtool -S` counters.
//! These are not registers; the datasheet's statistics registers live in the register file.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }
        impl Metrics {
            /// Name and value of every counter.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

metrics! {
    /// Frames handed to the backend.
    tx_frames,
    /// TSO packets the card segmented.
    tx_tso_packets,
    /// Wire frames those TSO packets became.
    tx_tso_segments,
    /// TSO packets handed to the backend whole, as GSO frames (TAP offload mode).
    tx_gso_frames,
    /// Wire frames those GSO frames stand for.
    tx_gso_segments,
    /// Frames handed to the backend with their TCP checksum left partial (TAP offload mode).
    tx_csum_partial,
    /// GSO frames from the backend that the card segmented (TAP offload mode).
    rx_gso_frames,
    /// Wire frames those GSO frames became.
    rx_gso_segments,
    /// Frames from the backend whose partial checksum the card completed (TAP offload mode).
    rx_csum_completed,
    /// Frames from the backend whose virtio-net header did not fit the frame: dropped.
    rx_gso_errors,
    /// Frames the card tagged from a descriptor's VLAN field (VLE).
    tx_vlan_inserted,
    /// Frames whose tag the card moved into the descriptor (CTRL.VME).
    rx_vlan_stripped,
    /// Frames received from the backend and written to the guest.
    rx_frames,
    /// Descriptor or buffer addresses outside the DMA maps.
    dma_errors,
    /// DMA attempted while PCI bus mastering was off.
    dma_blocked,
    /// Transmit packets dropped for a bad descriptor, length or offload context.
    tx_malformed,
    /// Frames dropped because the receive FIFO was full (also counted in MPC).
    rx_missed,
    /// Frames that did not pass the address or VLAN filters.
    rx_filtered,
    /// Frames dropped as oversized or undersized.
    rx_length_errors,
    /// Frames dropped for an unsupported receive configuration (packet split).
    rx_unsupported,
    /// Register accesses outside BARs or with bad sizes.
    bad_register_accesses,
    /// Interrupts that had no eventfd to go to.
    irq_no_fd,
    /// Interrupt messages sent (MSI, MSI-X, INTx assertions).
    irqs_sent,
    /// Backend write or read errors.
    backend_errors,
    /// Transmit doorbells whose round ran on the vfio-user thread because the data path was asleep.
    inline_rounds,
    /// Rounds of the data path thread: each after it woke (for a frame from the backend, a doorbell handed
    /// to it, a timer) or found more to do.
    datapath_rounds,
    /// Passes of a busy-polling device (`--busy-poll`) that moved frames or doorbells without a wake-up.
    busy_poll_passes,
    /// Sleeps of a timer-polling server (`--timer-poll`) in place of a wait on the client's socket.
    timer_polls,
    /// Timer polls that found the client's messages waiting: wake-ups the client did not pay for.
    timer_poll_hits,
    /// Internal errors (panics) caught in the data path; the round was dropped, the device kept running.
    datapath_panics,
    /// Internal errors (panics) caught while handling a vfio-user request; the client was disconnected.
    server_panics,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
