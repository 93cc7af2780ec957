#!/usr/bin/env bash
# A worked bring-up session: Linux's e1000e probes nic-device while `nicctl trace` records every register
# access and interrupt; then `nicctl inject tx-stall` stops the transmit queue and the guest driver finds
# the hang, resets the card and carries on. Prints the start of the probe trace, the register accesses by
# name, and what the guest driver logged. Needs root (a network namespace and a TAP device); about a
# minute under TCG.
#
#   tools/scripts/bringup-demo.sh [OUTDIR]     (OUTDIR keeps probe.jsonl, console.log, device.log)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
echo "[bringup-demo] rig and binaries ..." >&2
bash tools/scripts/setup-rig.sh >/dev/null
cargo build --workspace --bins --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
NS="nicdemo$$"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
rm -f "$OUT/nic.sock" "$OUT/nic.ctl"
ip netns exec "$NS" "$BIN/nic-device" --socket "$OUT/nic.sock" --backend tap:demo0 --control "$OUT/nic.ctl" >"$OUT/device.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -S "$OUT/nic.ctl" ] && break; sleep 0.05; done
ip netns exec "$NS" sh -c 'ip addr add 10.77.0.1/24 dev demo0 && ip link set demo0 up'

echo "[bringup-demo] tracing the probe ..." >&2
"$BIN/nicctl" "$OUT/nic.ctl" trace --regs --irq -o "$OUT/probe.jsonl" &
TRACE=$!
PIDS+=($TRACE)
sleep 0.3
cat >"$OUT/guest.sh" <<'EOF'
ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0
for i in $(seq 100); do [ "$(cat /sys/class/net/eth0/carrier)" = 1 ] && break; sleep 0.1; done
ping -c 2 -W 2 10.77.0.1
echo @@PROBED@@
sleep 4
# Enough sends to fill the transmit ring while the host holds it stalled.
ping -q -c 600 -i 0.01 -W 1 10.77.0.1 >/dev/null 2>&1
for i in $(seq 60); do ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1 && break; done
ping -c 3 -W 2 10.77.0.1
dmesg | grep e1000e
EOF
qemu-config/launch-guest.sh --socket "$OUT/nic.sock" --script "$OUT/guest.sh" </dev/null >"$OUT/console.log" 2>&1 &
GUEST=$!
PIDS+=($GUEST)
for _ in $(seq 1200); do grep -q '@@PROBED@@' "$OUT/console.log" && break; sleep 0.1; done
kill "$TRACE" 2>/dev/null || true

echo "[bringup-demo] injecting a TX stall ..." >&2
"$BIN/nicctl" "$OUT/nic.ctl" inject tx-stall
wait "$GUEST" || true

echo "== the probe, first 40 register accesses (nicctl trace --regs --irq) =="
head -n 40 "$OUT/probe.jsonl"
echo
echo "== register accesses during the probe, by register =="
python3 - "$OUT/probe.jsonl" <<'EOF'
import collections, json, sys
c = collections.Counter()
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "reg":
        c[(e.get("name") or e["offset"], e["dir"])] += 1
for (name, d), n in sorted(c.items(), key=lambda x: -x[1])[:25]:
    print(f"  {name:<10} {d:<5} {n}")
print(f"  ... {sum(c.values())} accesses in all, {len(c)} (register, direction) pairs")
EOF
echo
echo "== the guest driver, before and after the stall =="
grep -E 'e1000e|packets transmitted' "$OUT/console.log" | grep -v '^+' || true
echo
echo "== the card's counters (nicctl stats) =="
"$BIN/nicctl" "$OUT/nic.ctl" stats | sed -n '1,40p'
echo "[bringup-demo] files in $OUT" >&2
