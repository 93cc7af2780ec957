#!/usr/bin/env bash
# The main job, for a newcomer: installs the rig if needed, builds nic-device, serves an emulated 82574L on a
# TAP device inside a private network namespace, boots a Linux guest against it under QEMU, and shows the
# guest's e1000e driver binding the card, bringing the link up and pinging the host through it.
#
#   tools/scripts/demo.sh            (no arguments)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "1/5 guest rig (QEMU 11.1, guest kernel, initramfs; cached after the first run)"
bash tools/scripts/setup-rig.sh
say "2/5 building nic-device"
cargo build --release --quiet -p nic-device

NS="nicdemo$$"
SOCK="$(mktemp -u /tmp/nic-demo-XXXX.sock)"
PCAP="$(mktemp /tmp/nic-demo-XXXX.pcap)"
SCRIPT="$(mktemp /tmp/nic-demo-XXXX.sh)"
DEV_PID=""
cleanup() {
    [ -n "$DEV_PID" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -f "$SCRIPT"
}
trap cleanup EXIT

say "3/5 nic-device on tap0 in network namespace $NS (host side 10.77.0.1)"
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" env RUST_LOG=info "$ROOT/target/release/nic-device" \
    --socket "$SOCK" --backend tap:tap0 --pcap "$PCAP" &
DEV_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "nic-device did not start" >&2; exit 1; }
ip netns exec "$NS" ip addr add 10.77.0.1/24 dev tap0
ip netns exec "$NS" ip link set tap0 up

cat >"$SCRIPT" <<'GUEST'
#!/bin/sh
echo "--- guest: PCI device and driver"
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x10d3 ] && echo "$(basename $d) 8086:10d3 -> $(basename $(readlink $d/driver))"
done
dmesg | grep e1000e
echo "--- guest: link"
ip link set eth0 up
ip addr add 10.77.0.2/24 dev eth0
for i in $(seq 50); do [ "$(cat /sys/class/net/eth0/carrier)" = 1 ] && break; sleep 0.1; done
ethtool eth0 | grep -E 'Speed|Duplex|Link detected'
echo "--- guest: ping the host through the emulated card"
ping -c 5 10.77.0.1
echo "--- guest: interrupts and counters"
grep eth0 /proc/interrupts
ethtool -S eth0 | grep -E ' (rx|tx)_(packets|bytes):'
GUEST

say "4/5 booting a Linux guest (TCG) with the card attached over vfio-user (about 15 s)"
qemu-config/launch-guest.sh --socket "$SOCK" --script "$SCRIPT" | sed -n '/--- guest/,/@@RUN-EXIT/p' | grep -v '@@RUN-EXIT'

say "5/5 done"
kill "$DEV_PID"; wait "$DEV_PID" 2>/dev/null || true; DEV_PID=""
echo "every frame on the wire is in $PCAP (tcpdump -r $PCAP -n)" >&2
