#!/usr/bin/env bash
# Boots a Linux guest under TCG with one vfio-user-pci device per --socket (nic-device must be listening).
#
#   launch-guest.sh --socket PATH [--socket PATH ...] [--kernel FILE] [--initrd FILE] [--mem SIZE]
#                   [--append "ARGS"] [--script FILE] [--no-reboot] [-- EXTRA-QEMU-ARGS...]
#
# Defaults: QEMU, kernel and initramfs from the rig that tools/scripts/setup-rig.sh installs in .cache/rig.
# The guest console is on stdio. --script FILE is appended to the initramfs as /run.sh, runs instead of the
# shell, and the guest powers off when it returns.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RIG="${NIC_RIG_DIR:-$ROOT/.cache/rig}"
QEMU="${QEMU:-$RIG/bin/qemu-system-x86_64}"
KERNEL="$RIG/vmlinuz"
INITRD="$RIG/initramfs.cpio.gz"
MEM=512M
APPEND=""
SCRIPT=""
REBOOT=(-no-reboot)
DEVICES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --socket) DEVICES+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$2\"}}"); shift 2 ;;
        --kernel) KERNEL="$2"; shift 2 ;;
        --initrd) INITRD="$2"; shift 2 ;;
        --mem) MEM="$2"; shift 2 ;;
        --append) APPEND="$2"; shift 2 ;;
        --script) SCRIPT="$2"; shift 2 ;;
        --no-reboot) shift ;;
        --allow-reboot) REBOOT=(); shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "launch-guest.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for f in "$QEMU" "$KERNEL" "$INITRD"; do
    [ -e "$f" ] || { echo "launch-guest.sh: $f missing; run tools/scripts/setup-rig.sh" >&2; exit 1; }
done
if [ -n "$SCRIPT" ]; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    mkdir -p "$TMP/root"
    cp "$SCRIPT" "$TMP/root/run.sh"
    chmod +x "$TMP/root/run.sh"
    (cd "$TMP/root" && echo run.sh | cpio -o -H newc --quiet | gzip -1) >"$TMP/extra.cpio.gz"
    cat "$INITRD" "$TMP/extra.cpio.gz" >"$TMP/initrd.cpio.gz"
    INITRD="$TMP/initrd.cpio.gz"
fi
MEMSZ="$MEM"
# The memory backend must be the machine's RAM so that every RAM section reaches the device with an fd.
set -- -accel tcg -machine q35,memory-backend=mem0 \
    -object "memory-backend-memfd,id=mem0,size=$MEMSZ,share=on" -m "$MEMSZ" -smp 1 \
    -display none -monitor none -serial stdio -nic none "${REBOOT[@]}" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 panic=-1 quiet $APPEND" \
    "${DEVICES[@]}" "$@"
if [ -n "$SCRIPT" ]; then
    "$QEMU" "$@"
else
    exec "$QEMU" "$@"
fi
