#!/usr/bin/env bash
# Every speed figure of the project in one run, each beside the reference measured in the same run and
# the figure it is meant to reach: the guest's iperf3 through nic-device against QEMU's e1000e and
# virtio-net (tools/scripts/guest-bench.sh), the driver-device pair's frame rates against the handoff,
# the ping round trips against the kernel's own and the stack's own round trip through a TAP, and the
# device's memory (tools/scripts/bench.sh). Both scripts' full tables are printed first, then the summary.
# About 12 minutes for 3 runs; release builds. Not a test: nothing is asserted, and a figure that a run
# did not produce reads "no result".
#
#   tools/scripts/speed-report.sh [RUNS]       (RUNS: per figure, default 3)
#   tools/scripts/speed-report.sh --from DIR   (the summary again, from a run's saved tables)
# The two scripts' tables are kept in a directory whose name is printed (files `guest` and `pair`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = --from ]; then
    OUT="${2:?usage: $0 --from DIR}"
    RUNS="(saved)"
    [ -f "$OUT/guest" ] && [ -f "$OUT/pair" ] || { echo "$0: $OUT has no guest and pair tables" >&2; exit 2; }
else
    RUNS="${1:-3}"
    case "$RUNS" in '' | *[!0-9]* | 0) echo "usage: $0 [RUNS] | --from DIR" >&2; exit 2 ;; esac
    OUT="$(mktemp -d /tmp/speed-report-XXXX)"
    echo "[speed-report] tables kept in $OUT" >&2
    echo "[speed-report] guest iperf3 ($RUNS rounds: nic-device wire and offload, QEMU e1000e and virtio-net) ..." >&2
    # A script that fails leaves its rows as "no result" in the summary; the other's still count.
    bash tools/scripts/guest-bench.sh "$RUNS" wire,offload,e1000e,virtio | tee "$OUT/guest" ||
        echo "[speed-report] guest-bench.sh failed: its rows read no result" >&2
    echo "[speed-report] driver-device pair and round trips ($RUNS runs per case) ..." >&2
    bash tools/scripts/bench.sh --runs "$RUNS" | tee "$OUT/pair" ||
        echo "[speed-report] bench.sh failed: its rows read no result" >&2
fi

# Field N (whitespace-separated) of the first line of FILE that begins with LABEL, after the label; empty
# unless it is a number (a run's "failed", or a cell's "no result", is no figure).
field() {
    awk -v l="$2" 'index($0, l) == 1 { print substr($0, length(l) + 1); exit }' "$1" | awk -v n="$3" '$n ~ /^[0-9.]+$/ { print $n }'
}
# A / B to two decimals, or "-" when either is not a number (missing, or a run's "failed") or B is zero.
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
# "yes" when A OP B holds (OP: ge or le), "no" when not, "-" when A is not a number.
met() { awk -v a="${1:-}" -v b="$3" -v op="$2" 'BEGIN { if (a !~ /^[0-9.]+$/) print "-"; else if ((op == "ge" && a + 0 >= b + 0) || (op == "le" && a + 0 <= b + 0)) print "yes"; else print "no" }'; }
# Frames/s in millions, two decimals.
mega() { awk -v a="${1:-}" 'BEGIN { if (a !~ /^[0-9.]+$/) print "no result"; else printf "%.2f M/s", a / 1e6 }'; }
or_none() { if [ -n "${1:-}" ]; then echo "$1"; else echo "no result"; fi; }
# A ratio as "N.NNx", or "-".
times() { if [ "$1" = - ]; then echo -; else echo "${1}x"; fi; }

G="$OUT/guest" P="$OUT/pair"
row() { printf '%-44s %-14s %-44s %-7s %-12s %s\n' "$@"; }
echo
echo "speed report: $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs, runs per figure: $RUNS (medians); tables in $OUT"
row "measure" "figure" "reference (same run)" "ratio" "goal" "met"

# Guest iperf3: tx is the guest sending (guest -> host), rx the guest receiving.
wire_tx="$(field "$G" "nic-device (wire)" 1)" wire_rx="$(field "$G" "nic-device (wire)" 3)"
e1k_tx="$(field "$G" "QEMU e1000e (vnet_hdr off)" 1)" e1k_rx="$(field "$G" "QEMU e1000e (vnet_hdr off)" 3)"
off_tx="$(field "$G" "nic-device (offload=on)" 1)" off_rx="$(field "$G" "nic-device (offload=on)" 3)"
vio_tx="$(field "$G" "QEMU virtio-net (vnet_hdr on)" 1)" vio_rx="$(field "$G" "QEMU virtio-net (vnet_hdr on)" 3)"
r="$(ratio "$wire_tx" "$e1k_tx")"
row "guest -> host, nic-device (wire), Mbit/s" "$(or_none "$wire_tx")" "QEMU e1000e: $(or_none "$e1k_tx")" "$(times "$r")" ">= 2x" "$(met "$r" ge 2)"
r="$(ratio "$wire_rx" "$e1k_rx")"
row "host -> guest, nic-device (wire), Mbit/s" "$(or_none "$wire_rx")" "QEMU e1000e: $(or_none "$e1k_rx")" "$(times "$r")" ">= 2x" "$(met "$r" ge 2)"
r="$(ratio "$off_tx" "$vio_tx")"
row "guest -> host, nic-device (offload), Mbit/s" "$(or_none "$off_tx")" "QEMU virtio-net (vnet_hdr on): $(or_none "$vio_tx")" "$(times "$r")" ">= 1x" "$(met "$r" ge 1)"
r="$(ratio "$off_rx" "$vio_rx")"
row "host -> guest, nic-device (offload), Mbit/s" "$(or_none "$off_rx")" "QEMU virtio-net (vnet_hdr on): $(or_none "$vio_rx")" "$(times "$r")" "gap stated" "(README)"

# The pair: frames/s is field 1, the handoff field 6, resident memory fields 8 and 9 (KiB).
for c in "1514 B, MSI-X, ring 1024:4000000" "1514 B, poll, ring 1024:4000000" "64 B, MSI-X, ring 1024:5000000" "64 B, poll, ring 1024:5000000"; do
    label="${c%:*}" goal="${c##*:}"
    f="$(field "$P" "$label " 1)" h="$(field "$P" "$label " 6)"
    row "pair, $label" "$(mega "$f")" "handoff: $(mega "$h")" "$(ratio "$f" "$h")" ">= $(mega "$goal")" "$(met "$f" ge "$goal")"
done
# The round trips: p50 is field 1.
msix="$(field "$P" "stack+driver+device (MSI-X)" 1)" tap_sleep="$(field "$P" "stack on a TAP alone (reference)" 1)"
busy="$(field "$P" "  busy poll, device busy-polling" 1)" kernel="$(field "$P" "Linux through a TAP, busy reads (reference)" 1)"
tap_busy="$(field "$P" "  busy polling the TAP" 1)"
row "ping p50, interrupts (MSI-X), us" "$(or_none "$msix")" "stack alone on its TAP, sleeping: $(or_none "$tap_sleep")" "$(ratio "$msix" "$tap_sleep")" "<= 60" "$(met "$msix" le 60)"
row "ping p50, busy poll (driver and device), us" "$(or_none "$busy")" "kernel alone through a TAP: $(or_none "$kernel")" "$(ratio "$busy" "$kernel")" "<= 15" "$(met "$busy" le 15)"
row "  (the stack busy polling its own TAP), us" "$(or_none "$tap_busy")" "" "" "" ""
idle="$(field "$P" "1514 B, MSI-X, ring 1024 " 8)" peak="$(field "$P" "1514 B, MSI-X, ring 1024 " 9)"
row "device memory, resident KiB (idle / peak)" "$(or_none "$idle") / $(or_none "$peak")" "1514 B, ring 1024 case" "" "printed" "$(if [ -n "$idle" ] && [ -n "$peak" ]; then echo yes; else echo -; fi)"
