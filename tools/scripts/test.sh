#!/usr/bin/env bash
# Runs every test: installs the guest rig if needed (QEMU 11.1, guest kernel, initramfs; cached), builds the
# workspace, then runs unit, pair and guest tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
echo "[test] setting up the guest rig" >&2
bash tools/scripts/setup-rig.sh
echo "[test] building" >&2
cargo build --workspace --bins --quiet
echo "[test] running tests" >&2
cargo test --workspace --no-fail-fast "$@"
