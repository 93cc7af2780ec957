//! Runs the guest-level offload suite against nic-device and against QEMU's in-process e1000e, igb and
//! virtio-net in the same run, and prints one table: a row per case, a column per NIC, and where each
//! differs from nic-device. The suite is a tool for any NIC that Linux drives in the guest.

use nic_tests::offload::{report, run_suite, Target};

fn main() {
    nic_tests::init_logs();
    nic_tests::require_rig();
    let mut results = Vec::new();
    for (i, t) in Target::ALL.iter().enumerate() {
        eprintln!("[offload-report {}/{}] {} ...", i + 1, Target::ALL.len(), t.name());
        results.push((*t, run_suite(*t, None)));
    }
    println!("{}", report(&results));
    for r in &results[0].1 {
        if !r.pass() {
            eprintln!("nic-device {}: {}: {}", r.outcome.label(), r.name, r.detail);
        }
    }
}
