#!/usr/bin/env bash
# The offload report: runs the guest-level offload suite against nic-device and against QEMU's in-process
# e1000e (TAP netdev, vnet_hdr off so the model does its own segmentation) in the same run, and prints one
# table: case, our device, QEMU's model, and the difference. Takes about 8 minutes (two TCG guests).
# NIC_OFFLOAD_QUICK=1 runs only the defaults row set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash tools/scripts/setup-rig.sh
cargo build --workspace --bins --quiet
exec target/debug/offload-report
