#!/usr/bin/env bash
# The offload report: runs the guest-level offload suite against nic-device and against QEMU's in-process
# e1000e, igb and virtio-net (TAP netdev, vnet_hdr off so that every model puts wire frames on the TAP) in
# the same run, and prints one table: a row per case, a column per NIC, and where each differs from
# nic-device. Takes about 16 minutes (four TCG guests).
# NIC_OFFLOAD_QUICK=1 runs only the defaults row set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash tools/scripts/setup-rig.sh
cargo build --workspace --bins --quiet
exec target/debug/offload-report
