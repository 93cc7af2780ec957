#!/usr/bin/env bash
# Driver + nic-device pair speed over vfio-user (release builds, loopback backend): frames/s and Gbit/s for
# 64-byte frames, 1514-byte frames and 64 KiB TSO sends, with interrupts and with busy polling.
# Prints a table. Not a test: nothing is asserted.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
cargo build --release --quiet -p nic-device -p nic-tools
SOCK="$(mktemp -u /tmp/nic-bench-XXXX.sock)"
RUST_LOG=warn target/release/nic-device --socket "$SOCK" --backend loopback &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
printf '%-24s %12s %9s %9s\n' case frames/s Gbit/s seconds
bench() {
    local name="$1"; shift
    local out
    out="$(target/release/nic-lab --vfio-user "$SOCK" "$@")" || { echo "$name: failed: $out" >&2; return; }
    printf '%-24s %12s %9s %9s\n' "$name" \
        "$(echo "$out" | awk '/^rate:/ {print $2}')" "$(echo "$out" | awk '/^rate:/ {print $4}')" \
        "$(echo "$out" | awk '/^elapsed:/ {print $2}')"
}
bench "64 B, MSI-X"            loopback-test --count 500000 --size 64
bench "1514 B, MSI-X"          loopback-test --count 200000 --size 1514
bench "64 KiB TSO, MSI-X"      loopback-test --count 2000 --size 65000 --tso
bench "64 B, busy poll"        --irq poll loopback-test --count 500000 --size 64
bench "1514 B, busy poll"      --irq poll loopback-test --count 200000 --size 1514
bench "64 KiB TSO, busy poll"  --irq poll loopback-test --count 2000 --size 65000 --tso
