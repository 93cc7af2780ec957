#!/usr/bin/env bash
# Driver + nic-device pair speed over vfio-user (release builds, loopback backend): frames/s and Gbit/s for
# 64-byte frames, 1514-byte frames and 64 KiB TSO sends, with interrupts and with busy polling. Each case
# runs RUNS times (default 5) against a fresh device; four rows repeat the frame cases with rings of 1024
# descriptors instead of the driver's default 256 (`nic-lab --ring 1024`, 512 frames in flight), and one the
# TSO case with interrupts ("64 KiB TSO, ring 1024": as many 64 KiB sends in flight as the ring holds). The table
# shows the median with the lowest and highest run, and next to it the reference measured in the same run: this machine's own copy rate for frames of
# that size (`nic-lab memcpy`, what a device that only copied would reach; 1514-byte segments for TSO), and
# the pair's data movement alone (`nic-lab handoff`: two spinning threads, one building, sending and checking
# the frames, the other copying each from a transmit slot to a receive slot through a buffer of its own,
# with as many in flight as the case's driver): the rate no pair with this structure can pass on this
# machine, cache lines crossing between the two CPUs included. Not a
# test: nothing is asserted. The device process's memory is printed too: resident set at idle (after start)
# and its peak (VmHWM) at the end of the run, medians in KiB. Two rows repeat a case with the device's
# `--doorbells wake` (every transmit doorbell wakes the data path thread instead of running the round on
# the thread that read it when the data path is asleep), the design before, measured in the same run.
# Then the round trip a user sees: ping from the
# stack through the driver and nic-device to Linux on a TAP in a private namespace, 200 echoes 10 ms apart
# per run, with interrupts, with busy polling and in latency mode (`--latency`): the median (p50) and p90
# per run, medians over the runs, beside Linux pinging its own loopback in the namespace (the reference:
# the kernel's own path, no device). The three rows are repeated with the device busy polling as well
# (`nic-device --busy-poll`), and the MSI-X row with the device and the driver pinned (taskset) to two CPUs
# and to one. Two more references: the stack straight on a TAP of its own (no driver, no
# device), sleeping on it and busy polling it (`nic-lab --tap --busy-poll`): the device rows minus these
# are what the driver and the device add; and echo requests written to that TAP with the replies read by
# a thread that never sleeps (`nic-lab tap-echo`): the kernel's own part of any round trip through a TAP,
# the floor under every row.
#
# With `--against BIN`, every frame case also runs against that other nic-device build, alternating
# with this one run by run (which goes first alternates too): two more columns give the other build's
# median and the ratio of the two, measured in the same run. `--against-driver BIN` does the same with
# another build of the driver's side (a `nic-lab` binary) against this device.
#
#   tools/scripts/bench.sh [--runs N] [--device BIN] [--against BIN | --against-driver BIN] [--cases REGEX]
#                          [--rtt-only]
#   (--device: another nic-device build to measure; --against: one to compare with, interleaved;
#   --against-driver: a nic-lab build to compare with, interleaved; --cases: only the frame cases whose
#   name matches the extended regular expression, and no round trips; --rtt-only: the round trips alone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS=5
RTT_ONLY=0
CASES=""
DEVICE_BIN=""
AGAINST_BIN=""
AGAINST_LAB=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --device) DEVICE_BIN="$2"; shift 2 ;;
        --against) AGAINST_BIN="$2"; shift 2 ;;
        --against-driver) AGAINST_LAB="$2"; shift 2 ;;
        --rtt-only) RTT_ONLY=1; shift ;;
        --cases) CASES="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--device BIN] [--against BIN | --against-driver BIN] [--cases REGEX] [--rtt-only]" >&2; exit 2 ;;
    esac
done
if [ -n "$AGAINST_BIN" ] && [ -n "$AGAINST_LAB" ]; then
    echo "$0: --against and --against-driver compare one side each; give one of them" >&2
    exit 2
fi
if [ -n "$AGAINST_LAB" ] && [ ! -x "$AGAINST_LAB" ]; then
    echo "$0: --against-driver $AGAINST_LAB: not an executable nic-lab" >&2
    exit 2
fi
# The round trips' reference needs ping(8) (iputils-ping), which the rig's set-up installs.
if ! command -v ping >/dev/null; then
    echo "[bench] setting up the host packages (tools/scripts/setup-rig.sh) ..." >&2
    bash tools/scripts/setup-rig.sh >/dev/null
fi
echo "[bench] release build ..." >&2
cargo build --release --quiet -p nic-device -p nic-tools
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DEVICE_BIN="${DEVICE_BIN:-$BIN/nic-device}"
DEV=""
SOCK=""
DEV_ARGS=()
PIN_DEV=()
stop_dev() { [ -n "$DEV" ] && { kill "$DEV" 2>/dev/null; wait "$DEV" 2>/dev/null || true; }; DEV=""; }
trap stop_dev EXIT
start_dev() {
    SOCK="$(mktemp -u /tmp/nic-bench-XXXX.sock)"
    RUST_LOG=warn "${1:-$DEVICE_BIN}" --socket "$SOCK" --backend loopback "${DEV_ARGS[@]}" &
    DEV=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
}
# rate FIELD of "rate: N frames/s, G Gbit/s": 2 = frames/s, 4 = Gbit/s
field() { awk -v f="$2" '/^rate:/ {print $f}' <<<"$1"; }
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f %.0f %.0f", m, a[1], a[NR]}'; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
if [ "$RTT_ONLY" = 0 ]; then
    printf '%-26s %12s %21s %8s %14s %7s %14s %7s %9s %9s' case "frames/s" "(min-max of $RUNS)" Gbit/s "memcpy frames/s" "ratio" \
        "handoff fr/s" "ratio" "RSS idle" "RSS peak"
    [ -n "$AGAINST_BIN" ] && printf ' %12s %7s' "other build" "x"
    [ -n "$AGAINST_LAB" ] && printf ' %12s %7s' "other driver" "x"
    printf '\n'
fi
# One run of the case against the other build (`--against`: the other device with this driver;
# `--against-driver`: this device with the other driver): its frames/s.
COMPARE="$AGAINST_BIN$AGAINST_LAB"
against() {
    start_dev "${AGAINST_BIN:-$DEVICE_BIN}"
    local out
    out="$("${AGAINST_LAB:-$BIN/nic-lab}" --vfio-user "$SOCK" "$@")" || { echo "other build: run failed: $out" >&2; stop_dev; return; }
    stop_dev
    field "$out" 2
}
bench() {
    local name="$1" size="$2"; shift 2
    if [ -n "$CASES" ] && ! grep -qE -- "$CASES" <<<"$name"; then
        return
    fi
    local rates="" gbits="" refs="" hands="" idle="" peak="" others=""
    # The handoff reference moves as many frames in flight as the case's driver: half its ring.
    local window=128 a prev=""
    for a in "$@"; do [ "$prev" = --ring ] && window=$((a / 2)); prev="$a"; done
    for r in $(seq "$RUNS"); do
        [ -n "$COMPARE" ] && [ $((r % 2)) = 0 ] && others+="$(against "$@")"$'\n'
        start_dev
        idle+="$(kib "$DEV" VmRSS)"$'\n'
        local out
        out="$("$BIN/nic-lab" --vfio-user "$SOCK" "$@")" || { echo "$name: run $r failed: $out" >&2; stop_dev; continue; }
        peak+="$(kib "$DEV" VmHWM)"$'\n'
        stop_dev
        rates+="$(field "$out" 2)"$'\n'
        gbits+="$(field "$out" 4)"$'\n'
        refs+="$(field "$("$BIN/nic-lab" memcpy --size "$size" --count 2000000)" 2)"$'\n'
        hands+="$(field "$("$BIN/nic-lab" handoff --size "$size" --count 1000000 --window "$window")" 2)"$'\n'
        [ -n "$COMPARE" ] && [ $((r % 2)) = 1 ] && others+="$(against "$@")"$'\n'
    done
    [ -z "$rates" ] && return
    read -r med lo hi <<<"$(printf '%s' "$rates" | median)"
    local gb ref
    gb="$(printf '%s' "$gbits" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    read -r ref _ _ <<<"$(printf '%s' "$refs" | median)"
    local hand
    read -r hand _ _ <<<"$(printf '%s' "$hands" | grep . | median)"
    local ri rp
    read -r ri _ _ <<<"$(printf '%s' "$idle" | median)"
    read -r rp _ _ <<<"$(printf '%s' "$peak" | median)"
    printf '%-26s %12s %21s %8s %14s %7s %14s %7s %9s %9s' "$name" "$med" "($lo-$hi)" "$gb" "$ref" \
        "$(awk -v a="$med" -v b="$ref" 'BEGIN {printf "%.3f", a/b}')" "${hand:-failed}" \
        "$(awk -v a="$med" -v b="${hand:-0}" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "-"}')" "$ri" "$rp"
    if [ -n "$COMPARE" ]; then
        local om
        read -r om _ _ <<<"$(printf '%s' "$others" | grep . | median)"
        printf ' %12s %7s' "${om:-failed}" "$(awk -v a="$med" -v b="${om:-0}" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "-"}')"
    fi
    printf '\n'
}
if [ "$RTT_ONLY" = 0 ]; then
bench "64 B, MSI-X"           64    loopback-test --count 500000 --size 64
bench "1514 B, MSI-X"         1514  loopback-test --count 200000 --size 1514
bench "64 KiB TSO, MSI-X"     1514  loopback-test --count 20000 --size 65000 --tso
bench "64 B, busy poll"       64    --irq poll loopback-test --count 500000 --size 64
bench "1514 B, busy poll"     1514  --irq poll loopback-test --count 200000 --size 1514
bench "64 KiB TSO, busy poll" 1514  --irq poll loopback-test --count 20000 --size 65000 --tso
bench "64 B, MSI-X, ring 1024"    64    --ring 1024 loopback-test --count 1000000 --size 64
bench "1514 B, MSI-X, ring 1024"  1514  --ring 1024 loopback-test --count 400000 --size 1514
bench "64 B, poll, ring 1024"     64    --ring 1024 --irq poll loopback-test --count 1000000 --size 64
bench "1514 B, poll, ring 1024"   1514  --ring 1024 --irq poll loopback-test --count 400000 --size 1514
bench "64 KiB TSO, ring 1024"  1514  --ring 1024 loopback-test --count 20000 --size 65000 --tso
DEV_ARGS=(--doorbells wake)
bench "64 B, MSI-X, wake"     64    loopback-test --count 500000 --size 64
bench "1514 B, MSI-X, wake"   1514  loopback-test --count 200000 --size 1514
DEV_ARGS=()
fi

# ---- round trip through stack, driver, device and TAP ----
[ -n "$CASES" ] && exit 0
NS="nicrtt$$"
cleanup_ns() { ip netns del "$NS" 2>/dev/null || true; }
trap 'stop_dev; cleanup_ns' EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
rtt_dev() {
    SOCK="$(mktemp -u /tmp/nic-rtt-XXXX.sock)"
    ip netns exec "$NS" env RUST_LOG=warn "${PIN_DEV[@]}" "$DEVICE_BIN" --socket "$SOCK" --backend tap:rt0 "$@" &
    DEV=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
    ip netns exec "$NS" sh -c 'ip addr add 10.87.0.1/24 dev rt0 2>/dev/null; ip link set rt0 up'
}
# p50 and p90 of the "time=X ms" replies, in microseconds.
pct() { awk -F'time=' '/time=/ {split($2, a, " "); print a[1] * 1000}' | sort -g | awk '{v[NR]=$1} END {if (NR) printf "%.0f %.0f", v[int(NR*0.5+0.5)], v[int(NR*0.9+0.5)]}'; }
# One run's ping output on stdin: its p50 and p90 join the row's; a run without a reply is counted instead.
take() {
    local a b
    read -r a b <<<"$(pct)"
    if [ -n "${a:-}" ]; then p50s+="$a"$'\n'; p90s+="$b"$'\n'; else failed=$((failed + 1)); fi
}
# The row of LABEL: medians over the runs taken, the runs without replies said; then a new row begins.
row() {
    local m50 m90 note=""
    [ "$failed" -gt 0 ] && note="  ($failed of $RUNS runs without replies)"
    if [ -z "$p50s" ]; then
        printf '%-46s %10s %10s%s\n' "$1" failed failed "$note"
    else
        read -r m50 _ _ <<<"$(printf '%s' "$p50s" | median)"
        read -r m90 _ _ <<<"$(printf '%s' "$p90s" | median)"
        printf '%-46s %10s %10s%s\n' "$1" "$m50" "$m90" "$note"
    fi
    p50s="" p90s="" failed=0
}
p50s="" p90s="" failed=0
printf '\n%-46s %10s %10s\n' "ping round trip (us)" "p50" "p90"
# Driver mode, then whether the device busy polls too (`--busy-poll`: its vfio-user thread polls the rings
# and the TAP for a second after the last frame instead of sleeping).
# `apart` and `together` pin the device and the driver (taskset) to two CPUs or to one: what a wake-up
# from one CPU to the other costs on this machine, beside one on the same CPU.
for mode in auto poll latency auto:spin poll:spin latency:spin auto:apart auto:together; do
    dev_flags=()
    [ "${mode#*:}" = spin ] && dev_flags=(--busy-poll 1000000)
    PIN_DEV=() PIN_LAB=()
    case "${mode#*:}" in
        apart) PIN_DEV=(taskset -c 1) PIN_LAB=(taskset -c 0) ;;
        together) PIN_DEV=(taskset -c 0) PIN_LAB=(taskset -c 0) ;;
    esac
    if [ "${mode#*:}" = apart ] && [ "$(nproc)" -lt 2 ]; then
        printf '%-46s %10s %10s\n' "  MSI-X, device and driver on two CPUs" skipped "(1 CPU)"
        continue
    fi
    drv="${mode%:*}"
    for r in $(seq "$RUNS"); do
        rtt_dev "${dev_flags[@]}"
        if [ "$drv" = latency ]; then flags=(--latency); else flags=(--irq "$drv"); fi
        out="$("${PIN_LAB[@]}" "$BIN/nic-lab" --vfio-user "$SOCK" "${flags[@]}" --ip 10.87.0.2/24 ping 10.87.0.1 -c 200 -i 0.01 2>/dev/null || true)"
        stop_dev
        take <<<"$out"
    done
    case "$mode" in
        auto) label="stack+driver+device (MSI-X)" ;;
        poll) label="stack+driver+device (busy poll)" ;;
        latency) label="stack+driver+device (latency mode)" ;;
        auto:spin) label="  MSI-X, device busy-polling" ;;
        poll:spin) label="  busy poll, device busy-polling" ;;
        latency:spin) label="  latency mode, device busy-polling" ;;
        auto:apart) label="  MSI-X, device and driver on two CPUs" ;;
        *) label="  MSI-X, device and driver on one CPU" ;;
    esac
    row "$label"
done
# The stack straight on a TAP of its own (no driver, no device): what the kernel's side and the stack take
# without us, sleeping in poll(2) on the TAP and busy polling it (`--busy-poll`). The device rows above
# minus these are what the driver and the device add. Then the kernel alone: echo requests written to the
# TAP and the replies read without sleeping (`tap-echo`), no stack of ours either.
ip netns exec "$NS" sh -c 'ip tuntap add dev rf0 mode tap && ip addr add 10.87.1.1/24 dev rf0 && ip link set rf0 up'
for mode in sleep busy kernel; do
    flags=()
    [ "$mode" = busy ] && flags=(--busy-poll 1000000)
    cmd=ping
    [ "$mode" = kernel ] && cmd=tap-echo
    for r in $(seq "$RUNS"); do
        take <<<"$(ip netns exec "$NS" "$BIN/nic-lab" --tap rf0 "${flags[@]}" --ip 10.87.1.2/24 "$cmd" 10.87.1.1 -c 200 -i 0.01 2>/dev/null || true)"
    done
    case "$mode" in
        sleep) row "stack on a TAP alone (reference)" ;;
        busy) row "  busy polling the TAP" ;;
        *) row "Linux through a TAP, busy reads (reference)" ;;
    esac
done
# The reference: Linux pinging its own loopback (no device, no stack of ours).
for r in $(seq "$RUNS"); do
    take <<<"$(ip netns exec "$NS" ping -c 200 -i 0.01 127.0.0.1 2>/dev/null || true)"
done
row "Linux loopback (reference)"
