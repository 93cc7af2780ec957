#!/usr/bin/env bash
# Installs everything the guest tests need, cached under .cache/rig (git-ignored):
#   - host packages: debootstrap, cpio, iperf3, ethtool, tcpdump, iproute2, iputils-ping
#   - a Debian trixie root with QEMU 11.1 (trixie-backports, has vfio-user-pci) and a guest kernel
#   - a busybox initramfs for the guest with e1000e, vfio-pci, ethtool, iperf3, tcpdump and ip
# A second run only checks the stamps and returns.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RIG="${NIC_RIG_DIR:-$ROOT/.cache/rig}"
CHROOT="$RIG/trixie"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
STEPS=6
step() { echo "[setup-rig $1/$STEPS] $2" >&2; }

mkdir -p "$RIG"

need_apt=()
for p in debootstrap cpio iperf3 ethtool tcpdump tshark iproute2 xz-utils kmod iputils-ping; do
    dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
# The tests' host side uses python3 (http.server, urllib).
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
step 1 "host packages ${need_apt[*]:-(all present)}"
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$RIG/apt-host.log" 2>&1 || { tail -20 "$RIG/apt-host.log" >&2; exit 1; }
    apt-get install -y -q --no-install-recommends "${need_apt[@]}" >>"$RIG/apt-host.log" 2>&1 \
        || { tail -20 "$RIG/apt-host.log" >&2; exit 1; }
fi

INITRAMFS_ID="$(sha256sum "$ROOT/tools/scripts/build-initramfs.sh" | cut -c1-16)"
if [ "$(cat "$RIG/.stamp-initramfs" 2>/dev/null)" = "$INITRAMFS_ID" ] && [ -x "$RIG/bin/qemu-system-x86_64" ]; then
    echo "[setup-rig] cached in $RIG" >&2
    exit 0
fi

step 2 "debootstrap trixie into $CHROOT (about 30 s)"
if [ ! -f "$RIG/.stamp-debootstrap" ]; then
    rm -rf "$CHROOT"
    debootstrap --variant=minbase trixie "$CHROOT" "$MIRROR" >"$RIG/debootstrap.log" 2>&1 \
        || { tail -20 "$RIG/debootstrap.log" >&2; exit 1; }
    touch "$RIG/.stamp-debootstrap"
fi

step 3 "QEMU 11.1 from trixie-backports and the guest kernel (about 60 s)"
if [ ! -f "$RIG/.stamp-packages" ]; then
    echo "deb $MIRROR trixie-backports main" >"$CHROOT/etc/apt/sources.list.d/backports.list"
    mountpoint -q "$CHROOT/proc" || mount -t proc proc "$CHROOT/proc"
    trap 'umount "$CHROOT/proc" 2>/dev/null || true' EXIT
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
    chroot "$CHROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c '
        set -e
        apt-get update -q
        apt-get install -y -q --no-install-recommends -t trixie-backports qemu-system-x86
        apt-get install -y -q --no-install-recommends linux-image-amd64 busybox-static ethtool iperf3 \
            iproute2 tcpdump kmod pciutils' >"$RIG/packages.log" 2>&1 \
        || { tail -30 "$RIG/packages.log" >&2; exit 1; }
    umount "$CHROOT/proc" 2>/dev/null || true
    trap - EXIT
    touch "$RIG/.stamp-packages"
fi

step 4 "QEMU wrapper in $RIG/bin"
mkdir -p "$RIG/bin"
cat >"$RIG/bin/qemu-system-x86_64" <<WRAP
#!/bin/sh
# QEMU 11.1 from the trixie root, run through that root's own loader and libraries.
C="$CHROOT"
exec "\$C/lib64/ld-linux-x86-64.so.2" --library-path "\$C/lib/x86_64-linux-gnu:\$C/usr/lib/x86_64-linux-gnu" \\
    "\$C/usr/bin/qemu-system-x86_64" -L "\$C/usr/share/qemu" -L "\$C/usr/share/seabios" "\$@"
WRAP
chmod +x "$RIG/bin/qemu-system-x86_64"
"$RIG/bin/qemu-system-x86_64" --version | head -1 >&2

step 5 "guest kernel"
KVER="$(ls "$CHROOT/lib/modules" | sort -V | tail -1)"
cp "$CHROOT/boot/vmlinuz-$KVER" "$RIG/vmlinuz"
echo "$KVER" >"$RIG/kernel-version"

step 6 "guest initramfs (busybox, e1000e, vfio-pci, ethtool, iperf3, tcpdump, ip)"
bash "$ROOT/tools/scripts/build-initramfs.sh" "$CHROOT" "$KVER" "$RIG/initramfs.cpio.gz"
echo "$INITRAMFS_ID" >"$RIG/.stamp-initramfs"
echo "[setup-rig] ready: $RIG" >&2
