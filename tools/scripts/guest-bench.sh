#!/usr/bin/env bash
# Guest-level speed in one run: iperf3 both ways from a Linux guest (TCG) through nic-device (wire
# semantics, also with `--timer-poll 100`; and its TAP offload mode), QEMU's e1000e (wire semantics) and
# QEMU's virtio-net with vnet_hdr, RUNS times each (default 3); prints medians with their spread and
# nic-device's ratios. Release builds of the device. About 4 minutes for 3 runs.
#
#   tools/scripts/guest-bench.sh [RUNS [NICS]]     (NICS: comma-separated wire,wire-timer,offload,e1000e,virtio)
#   NIC_DEVICE_ARGS="--doorbells wake" tools/scripts/guest-bench.sh ...   (extra nic-device options)
#   GUEST_BENCH_SECS=20 tools/scripts/guest-bench.sh 1 wire   (longer iperf3 runs, e.g. to profile one)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash tools/scripts/setup-rig.sh >/dev/null
cargo build --release --quiet --workspace --bins
# The harness finds workspace binaries in target/debug first: point it at the release build.
export NIC_BIN_PROFILE=release
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/guest-bench" "${1:-3}" ${2:+"$2"}
