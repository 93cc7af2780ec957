//! Runs the guest-level offload suite against nic-device and against QEMU's in-process e1000e in the same
//! run, and prints one table: case, our device, QEMU's model, and where they differ.

use nic_tests::offload::{report, run_suite, Target};

fn main() {
    nic_tests::init_logs();
    nic_tests::require_rig();
    eprintln!("[offload-report] nic-device ...");
    let ours = run_suite(Target::NicDevice, None);
    eprintln!("[offload-report] QEMU e1000e ...");
    let qemu = run_suite(Target::QemuE1000e, None);
    println!("{}", report(&ours, &qemu));
    for r in &ours {
        if !r.pass() {
            eprintln!("nic-device {}: {}: {}", r.outcome.label(), r.name, r.detail);
        }
    }
}
