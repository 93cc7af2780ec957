#!/usr/bin/env bash
# Boots a Linux guest under TCG with one vfio-user-pci device per --socket (nic-device must be listening).
#
#   launch-guest.sh --socket PATH [--socket PATH ...] [--kernel FILE] [--initrd FILE] [--mem SIZE]
#                   [--append "ARGS"] [--script FILE] [--add SRC:DEST] [--iommu] [--allow-reboot]
#                   [-- EXTRA-QEMU-ARGS...]
#
# Defaults: QEMU, kernel and initramfs from the rig that tools/scripts/setup-rig.sh installs in .cache/rig.
# The guest console is on stdio. --script FILE is appended to the initramfs as /run.sh, runs instead of the
# shell, and the guest powers off when it returns. --add copies a host file into the initramfs at DEST.
# --iommu adds an emulated Intel IOMMU (caching mode) so the guest can give devices to vfio-pci.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RIG="${NIC_RIG_DIR:-$ROOT/.cache/rig}"
QEMU="${QEMU:-$RIG/bin/qemu-system-x86_64}"
KERNEL="$RIG/vmlinuz"
INITRD="$RIG/initramfs.cpio.gz"
MEM=512M
APPEND=""
SCRIPT=""
ADDS=()
MACHINE=q35,memory-backend=mem0
IOMMU=()
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
        --add) ADDS+=("$2"); shift 2 ;;
        --iommu) MACHINE="$MACHINE,kernel-irqchip=split"; IOMMU=(-device intel-iommu,caching-mode=on,intremap=on); APPEND="$APPEND intel_iommu=on"; shift ;;
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
if [ -n "$SCRIPT" ] || [ ${#ADDS[@]} -gt 0 ]; then
    TMP="$(mktemp -d)"
    mkdir -p "$TMP/root"
    if [ -n "$SCRIPT" ]; then
        cp "$SCRIPT" "$TMP/root/run.sh"
        chmod +x "$TMP/root/run.sh"
    fi
    for a in "${ADDS[@]}"; do
        src="${a%%:*}"; dst="${a#*:}"
        mkdir -p "$TMP/root/$(dirname "$dst")"
        cp "$src" "$TMP/root/$dst"
    done
    (cd "$TMP/root" && find . -mindepth 1 | cpio -o -H newc --quiet | gzip -1) >"$TMP/extra.cpio.gz"
    cat "$INITRD" "$TMP/extra.cpio.gz" >"$TMP/initrd.cpio.gz"
    INITRD="$TMP/initrd.cpio.gz"
    # QEMU reads the initrd once at start-up; the files go away soon after, whatever happens to QEMU.
    (sleep 60; rm -rf "$TMP") >/dev/null 2>&1 &
fi
MEMSZ="$MEM"
# The memory backend must be the machine's RAM so that every RAM section reaches the device with an fd.
set -- -accel tcg -machine "$MACHINE" "${IOMMU[@]}" \
    -object "memory-backend-memfd,id=mem0,size=$MEMSZ,share=on" -m "$MEMSZ" -smp 1 \
    -display none -monitor none -serial stdio -nic none "${REBOOT[@]}" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 panic=-1 quiet $APPEND" \
    "${DEVICES[@]}" "$@"
exec "$QEMU" "$@"
