#!/usr/bin/env bash
# Runs every test: installs the guest rig if needed (QEMU 11.1, guest kernel, initramfs; cached), builds the
# workspace, then runs unit, pair and guest tests, and closes with one summary line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
echo "[test] setting up the guest rig" >&2
bash tools/scripts/setup-rig.sh
echo "[test] building" >&2
cargo build --workspace --bins --quiet
echo "[test] running tests" >&2
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$LOG")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$LOG")
echo
echo "tests: $passed passed, $failed failed"
exit "$rc"
