//! The guest-level offload suite against nic-device: every case must pass.

use nic_tests::offload::{run_suite, Target};

#[test]
fn offload_suite_passes_on_nic_device() {
    nic_tests::init_logs();
    let rows = run_suite(Target::NicDevice, None);
    let failed: Vec<String> = rows.iter().filter(|r| !r.pass).map(|r| format!("{}: {}", r.name, r.detail)).collect();
    for r in &rows {
        eprintln!("{} {}: {}", if r.pass { "pass" } else { "FAIL" }, r.name, r.detail);
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    if std::env::var_os("NIC_OFFLOAD_QUICK").is_none() {
        assert!(rows.len() >= 7 * 6 + 3, "{} rows", rows.len());
    }
}
