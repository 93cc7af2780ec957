#!/usr/bin/env bash
# Runs every test: installs the guest rig if needed (QEMU 11.1, guest kernel, initramfs; cached), checks
# formatting and lints, builds the workspace, then runs unit, corpus-replay, pair, soak (short) and guest
# tests, and closes with one summary line.
#
#   tools/scripts/test.sh [--soak] [cargo test args...]
#
# --soak runs only the soak and fault tests, at full length (100 QEMU kill cycles, 100 driver resets under
# load, 10 million frames, a 1 GB transfer through 1% loss; well over an hour under TCG) and prints their
# figures. Without it they run in their short versions with everything else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SOAK=0
if [ "${1:-}" = "--soak" ]; then
    SOAK=1
    shift
fi
echo "[test] setting up the guest rig" >&2
bash tools/scripts/setup-rig.sh
if [ "$SOAK" = 0 ]; then
    echo "[test] cargo fmt --check" >&2
    cargo fmt --all --check
    echo "[test] cargo clippy (warnings are errors)" >&2
    cargo clippy --workspace --all-targets --quiet -- -D warnings
fi
echo "[test] building" >&2
cargo build --workspace --bins --quiet
for v in NIC_OFFLOAD_QUICK NIC_PROPTEST_CASES NIC_SOAK; do
    if [ -n "${!v:-}" ]; then
        echo "[test] reduced or changed run: $v=${!v}" >&2
    fi
done
echo "[test] running tests" >&2
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
if [ "$SOAK" = 1 ]; then
    NIC_SOAK=1 cargo test -p nic-tests --test soak --no-fail-fast "$@" -- --nocapture --test-threads=1 2>&1 | tee "$LOG"
else
    cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$LOG"
fi
rc=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$LOG")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$LOG")
# A test binary killed by a signal (or one that exited without its summary) prints no "test result:" line.
killed=$(grep -c "process didn't exit successfully:.*signal" "$LOG" || true)
echo
for v in NIC_OFFLOAD_QUICK NIC_PROPTEST_CASES; do
    if [ -n "${!v:-}" ]; then
        echo "note: reduced run: $v=${!v}"
    fi
done
if [ "$killed" -gt 0 ]; then
    echo "note: $killed test binaries were killed by a signal; each counts as a failure"
    grep "process didn't exit successfully:.*signal" "$LOG" | sed 's/^/  /'
    failed=$((failed + killed))
    [ "$rc" = 0 ] && rc=1
fi
echo "tests: $passed passed, $failed failed"
exit "$rc"
