#!/usr/bin/env bash
# Driver + nic-device pair speed over vfio-user (release builds, loopback backend): frames/s and Gbit/s for
# 64-byte frames, 1514-byte frames and 64 KiB TSO sends, with interrupts and with busy polling. Each case
# runs RUNS times (default 5) against a fresh device; the table shows the median with the lowest and highest
# run, and next to it the reference measured in the same run: this machine's own copy rate for frames of
# that size (`nic-lab memcpy`, what a device that only copied would reach; 1514-byte segments for TSO). Not a
# test: nothing is asserted. The device process's memory is printed too: resident set at idle (after start)
# and its peak (VmHWM) at the end of the run, medians in KiB.
#
#   tools/scripts/bench.sh [--runs N] [--device BIN]    (--device: another nic-device build, to compare)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS=5
DEVICE_BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --device) DEVICE_BIN="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--device BIN]" >&2; exit 2 ;;
    esac
done
echo "[bench] release build ..." >&2
cargo build --release --quiet -p nic-device -p nic-tools
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DEVICE_BIN="${DEVICE_BIN:-$BIN/nic-device}"
DEV=""
SOCK=""
stop_dev() { [ -n "$DEV" ] && { kill "$DEV" 2>/dev/null; wait "$DEV" 2>/dev/null || true; }; DEV=""; }
trap stop_dev EXIT
start_dev() {
    SOCK="$(mktemp -u /tmp/nic-bench-XXXX.sock)"
    RUST_LOG=warn "$DEVICE_BIN" --socket "$SOCK" --backend loopback &
    DEV=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
}
# rate FIELD of "rate: N frames/s, G Gbit/s": 2 = frames/s, 4 = Gbit/s
field() { awk -v f="$2" '/^rate:/ {print $f}' <<<"$1"; }
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f %.0f %.0f", m, a[1], a[NR]}'; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
printf '%-22s %12s %21s %8s %14s %7s %9s %9s\n' case "frames/s" "(min-max of $RUNS)" Gbit/s "memcpy frames/s" "ratio" "RSS idle" "RSS peak"
bench() {
    local name="$1" size="$2"; shift 2
    local rates="" gbits="" refs="" idle="" peak=""
    for r in $(seq "$RUNS"); do
        start_dev
        idle+="$(kib "$DEV" VmRSS)"$'\n'
        local out
        out="$("$BIN/nic-lab" --vfio-user "$SOCK" "$@")" || { echo "$name: run $r failed: $out" >&2; stop_dev; continue; }
        peak+="$(kib "$DEV" VmHWM)"$'\n'
        stop_dev
        rates+="$(field "$out" 2)"$'\n'
        gbits+="$(field "$out" 4)"$'\n'
        refs+="$(field "$("$BIN/nic-lab" memcpy --size "$size" --count 2000000)" 2)"$'\n'
    done
    [ -z "$rates" ] && return
    read -r med lo hi <<<"$(printf '%s' "$rates" | median)"
    local gb ref
    gb="$(printf '%s' "$gbits" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    read -r ref _ _ <<<"$(printf '%s' "$refs" | median)"
    local ri rp
    read -r ri _ _ <<<"$(printf '%s' "$idle" | median)"
    read -r rp _ _ <<<"$(printf '%s' "$peak" | median)"
    printf '%-22s %12s %21s %8s %14s %7s %9s %9s\n' "$name" "$med" "($lo-$hi)" "$gb" "$ref" \
        "$(awk -v a="$med" -v b="$ref" 'BEGIN {printf "%.3f", a/b}')" "$ri" "$rp"
}
bench "64 B, MSI-X"           64    loopback-test --count 500000 --size 64
bench "1514 B, MSI-X"         1514  loopback-test --count 200000 --size 1514
bench "64 KiB TSO, MSI-X"     1514  loopback-test --count 2000 --size 65000 --tso
bench "64 B, busy poll"       64    --irq poll loopback-test --count 500000 --size 64
bench "1514 B, busy poll"     1514  --irq poll loopback-test --count 200000 --size 1514
bench "64 KiB TSO, busy poll" 1514  --irq poll loopback-test --count 2000 --size 65000 --tso
