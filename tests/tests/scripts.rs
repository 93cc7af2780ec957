//! The speed report's summary (`tools/scripts/speed-report.sh --from DIR`) read from the tables of a real
//! run (`tests/fixtures/speed-report`: `guest-bench.sh` and `bench.sh` output of 2026-11-27): each figure
//! next to its reference, the ratio, and whether the goal is met; and a figure missing from a run shows
//! as "no result", never as a number or a met goal.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn summary(dir: &Path) -> Vec<String> {
    let out = Command::new("bash").arg(root().join("tools/scripts/speed-report.sh")).arg("--from").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "speed-report.sh --from failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::to_string).collect()
}

/// The summary's row that begins with `measure`, split on runs of two or more spaces.
fn row(lines: &[String], measure: &str) -> Vec<String> {
    let l = lines.iter().find(|l| l.starts_with(measure)).unwrap_or_else(|| panic!("no row {measure:?} in\n{}", lines.join("\n")));
    l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
}

#[test]
fn the_summary_reads_every_figure_beside_its_reference() {
    let lines = summary(&root().join("tests/fixtures/speed-report"));
    let cells = |m: &str| row(&lines, m);
    assert_eq!(
        cells("guest -> host, nic-device (wire)"),
        ["guest -> host, nic-device (wire), Mbit/s", "1680", "QEMU e1000e: 856", "1.96x", ">= 2x", "no"]
    );
    assert_eq!(cells("host -> guest, nic-device (wire)")[1..4], ["1463", "QEMU e1000e: 1063", "1.38x"]);
    assert_eq!(cells("guest -> host, nic-device (offload)")[1..], ["3738", "QEMU virtio-net (vnet_hdr on): 2530", "1.48x", ">= 1x", "yes"]);
    assert_eq!(cells("host -> guest, nic-device (offload)")[1..4], ["1858", "QEMU virtio-net (vnet_hdr on): 3606", "0.52x"]);
    assert_eq!(cells("pair, 1514 B, MSI-X, ring 1024")[1..], ["2.11 M/s", "handoff: 5.47 M/s", "0.39", ">= 4.00 M/s", "no"]);
    assert_eq!(cells("pair, 64 B, poll, ring 1024")[1..], ["4.47 M/s", "handoff: 14.28 M/s", "0.31", ">= 5.00 M/s", "no"]);
    assert_eq!(cells("ping p50, interrupts (MSI-X)")[1..], ["191", "stack alone on its TAP, sleeping: 72", "2.65", "<= 60", "no"]);
    assert_eq!(cells("ping p50, busy poll")[1..], ["66", "kernel alone through a TAP: 25", "2.64", "<= 15", "no"]);
    assert_eq!(cells("  (the stack busy polling its own TAP)")[1], "32");
    assert_eq!(cells("device memory")[1], "3636 / 9644");
}

#[test]
fn a_figure_missing_from_a_run_is_no_result() {
    let dir = std::env::temp_dir().join(format!("speed-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = root().join("tests/fixtures/speed-report");
    // A run where QEMU's e1000e gave no result, the 64-byte polling case is missing, the MSI-X round trip
    // failed, and our card's host-to-guest cell says "no result".
    let guest = std::fs::read_to_string(fixtures.join("guest")).unwrap();
    let guest: String = guest
        .lines()
        .filter(|l| !l.starts_with("QEMU e1000e"))
        .map(|l| if l.starts_with("nic-device (offload=on)  ") { l.replace("1858 (1459-1983)", "no result") } else { l.to_string() })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("guest"), guest).unwrap();
    let pair = std::fs::read_to_string(fixtures.join("pair")).unwrap();
    let pair: String = pair
        .lines()
        .map(|l| {
            if l.starts_with("stack+driver+device (MSI-X)") {
                "stack+driver+device (MSI-X)    failed    failed".to_string()
            } else {
                l.to_string()
            }
        })
        .filter(|l| !l.starts_with("64 B, poll, ring 1024"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("pair"), pair).unwrap();
    let lines = summary(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(row(&lines, "guest -> host, nic-device (wire)")[1..], ["1680", "QEMU e1000e: no result", "-", ">= 2x", "-"]);
    assert_eq!(row(&lines, "pair, 64 B, poll, ring 1024")[1..], ["no result", "handoff: no result", "-", ">= 5.00 M/s", "-"]);
    assert_eq!(row(&lines, "host -> guest, nic-device (offload)")[1..4], ["no result", "QEMU virtio-net (vnet_hdr on): 3606", "-"]);
    assert_eq!(row(&lines, "guest -> host, nic-device (offload)")[1], "3738");
    let ping = row(&lines, "ping p50, interrupts (MSI-X)");
    assert_eq!(ping[1..], ["no result", "stack alone on its TAP, sleeping: 72", "-", "<= 60", "-"]);
}
