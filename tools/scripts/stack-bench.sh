#!/usr/bin/env bash
# Bulk TCP through the whole userspace chain, both directions: the stack (`nic-lab blast` / `sink`) over
# the driver and nic-device on a TAP (`--backend tap:`) to Linux in a private namespace (a Python socket
# at the other end, reading or writing 1 MiB at a time), BYTES per run (default 1 GB), RUNS runs per case
# (default 5), a fresh device for each run. Beside each, the reference measured in the same run: the same
# stack straight on a TAP of its own (`nic-lab --tap`, no driver, no device, every frame one system call):
# the ratio says what the card and the driver cost or save (the card's TSO sends 64 KiB per doorbell; the
# TAP reference sends plain frames, as it receives them). Release builds; medians with the lowest and
# highest run, and the median CPU time nic-lab used per GB moved (all its threads, user and system, as
# it reports it: the stack and the driver, busy or waiting). Not a test: nothing is asserted.
#
# With `--against-lab BIN`, every case also runs with that other nic-lab build (the driver and the stack
# of another commit), alternating with this one run by run (which goes first alternates too): two more
# columns give its median and the ratio of the two, measured in the same run, and a third its CPU time
# per GB (empty for a build that does not report it).
#
#   tools/scripts/stack-bench.sh [--runs N] [--bytes BYTES] [--against-lab BIN]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS=5
BYTES=1000000000
OTHER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --bytes) BYTES="$2"; shift 2 ;;
        --against-lab) OTHER="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--bytes BYTES] [--against-lab BIN]" >&2; exit 2 ;;
    esac
done
if [ -n "$OTHER" ] && [ ! -x "$OTHER" ]; then
    echo "$0: --against-lab $OTHER: not an executable nic-lab" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "$0: needs python3 for the Linux end" >&2; exit 2; }
echo "[stack-bench] release build ..." >&2
cargo build --release --quiet -p nic-device -p nic-tools
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NS="nicsb$$"
DEV=""
SOCK=""
stop_dev() { [ -n "$DEV" ] && { kill "$DEV" 2>/dev/null; wait "$DEV" 2>/dev/null || true; }; DEV=""; rm -f "$SOCK"; }
cleanup() { stop_dev; ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
inns() { ip netns exec "$NS" "$@"; }
inns ip link set lo up
# The reference's TAP: Linux at 10.88.1.1, the stack at 10.88.1.2.
inns sh -c 'ip tuntap add dev sb1 mode tap && ip addr add 10.88.1.1/24 dev sb1 && ip link set sb1 up'
inns sysctl -qw net.ipv6.conf.all.disable_ipv6=1
start_dev() {
    SOCK="$(mktemp -u /tmp/nic-sb-XXXX.sock)"
    # Not through `inns`: a function run in the background is a subshell, and $! would be its PID.
    ip netns exec "$NS" env RUST_LOG=warn "$BIN/nic-device" --socket "$SOCK" --backend tap:sb0 >/dev/null &
    DEV=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
    inns sh -c 'ip addr add 10.88.0.1/24 dev sb0 2>/dev/null; ip link set sb0 up'
}
SINK='import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5001)); s.listen(1)
c,_=s.accept()
while c.recv(1<<20): pass'
SOURCE='import socket,sys,time
for _ in range(100):
    try:
        s=socket.create_connection((sys.argv[1], 5001)); break
    except OSError: time.sleep(0.05)
b=b"x"*(1<<20); n=0
while n < int(sys.argv[2]):
    s.sendall(b); n+=len(b)
s.close()'
# "MB/s CPU-seconds-per-GB" from nic-lab's output ("...: X MB/s, ..." and "cpu: S s ..."); nothing when
# either is missing.
mbs() {
    awk -v gb="$BYTES" '/ MB\/s/ {sub(/.*: /, ""); r=$1} /^cpu: / {c=$2} END {if (r != "" && c != "") printf "%s %.3f", r, c / (gb / 1e9)}'
}
# One run: LAB (a nic-lab), PATH (card | tap), DIR (blast | sink): MB/s and nic-lab's CPU seconds per GB
# (all its threads, user and system), or nothing when it failed.
one() {
    local lab="$1" path="$2" dir="$3" peer via out
    if [ "$path" = card ]; then
        start_dev
        peer=10.88.0.1
        via=(--vfio-user "$SOCK" --ip 10.88.0.2/24)
    else
        peer=10.88.1.1
        via=(--tap sb1 --ip 10.88.1.2/24)
    fi
    if [ "$dir" = blast ]; then
        ip netns exec "$NS" python3 -c "$SINK" "$peer" >/dev/null & local h=$!
        sleep 0.3
        out="$(inns "$lab" "${via[@]}" blast "$peer:5001" --bytes "$BYTES" 2>&1 || true)"
        # A blast that failed (never connected) leaves the Linux end waiting: it goes with the run.
        grep -q "MB/s" <<<"$out" || kill "$h" 2>/dev/null || true
        wait "$h" 2>/dev/null || true
    else
        local me="${via[-1]%/*}" o
        o="$(mktemp)"
        ip netns exec "$NS" "$lab" "${via[@]}" sink --port 5001 >"$o" 2>&1 & local l=$!
        # A source that never connected would leave the stack's sink waiting: it goes with the run.
        inns python3 -c "$SOURCE" "$me" "$BYTES" || kill "$l" 2>/dev/null || true
        wait "$l" 2>/dev/null || true
        out="$(cat "$o")"
        rm -f "$o"
    fi
    [ "$path" = card ] && stop_dev
    mbs <<<"$out"
}
# Column N (1: MB/s, 2: CPU s/GB) of the runs on stdin.
col() { awk -v n="$1" 'NF >= n {print $n}'; }
# Median, lowest and highest of the numbers on stdin, with DIGITS decimals (1 unless given).
median() { sort -g | awk -v d="${1:-1}" '{a[NR]=$1} END {if (!NR) exit; f="%." d "f"; m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf f " " f " " f, m, a[1], a[NR]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b > 0) printf "%.2f", a/b; else print "-"}'; }
printf '%-34s %8s %17s %9s %9s %6s' case "MB/s" "(min-max of $RUNS)" "CPU s/GB" "TAP alone" ratio
[ -n "$OTHER" ] && printf ' %10s %6s %9s' "other lab" x "its CPU"
printf '\n'
for dir in blast sink; do
    rates="" refs="" others=""
    for r in $(seq "$RUNS"); do
        if [ -n "$OTHER" ] && [ $((r % 2)) = 0 ]; then others+="$(one "$OTHER" card "$dir")"$'\n'; fi
        rates+="$(one "$BIN/nic-lab" card "$dir")"$'\n'
        if [ -n "$OTHER" ] && [ $((r % 2)) = 1 ]; then others+="$(one "$OTHER" card "$dir")"$'\n'; fi
        refs+="$(one "$BIN/nic-lab" tap "$dir")"$'\n'
    done
    read -r med lo hi <<<"$(printf '%s' "$rates" | col 1 | median || true)"
    read -r cpu _ _ <<<"$(printf '%s' "$rates" | col 2 | median 3 || true)"
    read -r ref _ _ <<<"$(printf '%s' "$refs" | col 1 | median || true)"
    failed=$((RUNS - $(printf '%s' "$rates" | grep -c . || true)))
    name="stack -> card -> Linux (blast)"
    [ "$dir" = sink ] && name="Linux -> card -> stack (sink)"
    printf '%-34s %8s %17s %9s %9s %6s' "$name" "${med:-failed}" "(${lo:-}-${hi:-})" "${cpu:--}" "${ref:-failed}" "$(ratio "${med:-}" "${ref:-0}")"
    if [ -n "$OTHER" ]; then
        read -r om _ _ <<<"$(printf '%s' "$others" | col 1 | median || true)"
        read -r oc _ _ <<<"$(printf '%s' "$others" | col 2 | median 3 || true)"
        printf ' %10s %6s %9s' "${om:-failed}" "$(ratio "${med:-}" "${om:-0}")" "${oc:--}"
    fi
    [ "$failed" -gt 0 ] && printf '  (%d of %d runs failed)' "$failed" "$RUNS"
    printf '\n'
done
