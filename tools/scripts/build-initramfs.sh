#!/usr/bin/env bash
# build-initramfs.sh CHROOT KVER OUT.cpio.gz
# A busybox initramfs for test guests. /init mounts the pseudo file systems, loads the modules named by the
# kernel argument nic.modules= (comma separated, default e1000e) with nic.modargs= (comma separated key=value,
# for the first module), prints @@GUEST-READY@@ and runs a shell on the console.
set -euo pipefail
CHROOT="$1"; KVER="$2"; OUT="$3"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib,lib64,usr/bin,usr/sbin,var/run,mnt}

cp "$CHROOT/bin/busybox" "$R/bin/busybox"
for app in $("$R/bin/busybox" --list); do
    [ "$app" = busybox ] && continue
    [ -e "$R/bin/$app" ] || ln -s busybox "$R/bin/$app"
done

# Dynamic tools with their libraries, as the chroot's loader resolves them.
copy_with_libs() {
    local bin="$1" dest="$2"
    mkdir -p "$(dirname "$R$dest")"
    rm -f "$R$dest"
    cp -L "$CHROOT$bin" "$R$dest"
    chroot "$CHROOT" ldd "$bin" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
        [ -n "$lib" ] || continue
        mkdir -p "$(dirname "$R$lib")"
        [ -e "$R$lib" ] || cp -L "$CHROOT$lib" "$R$lib"
    done
}
copy_with_libs /usr/sbin/ethtool /bin/ethtool
copy_with_libs /usr/bin/iperf3 /bin/iperf3
copy_with_libs /usr/bin/tcpdump /bin/tcpdump
copy_with_libs /usr/bin/ip /bin/ip
copy_with_libs /usr/bin/lspci /bin/lspci
# iperf3 loads libgcc_s at exit (pthread_cancel); it is not in ldd's list.
for d in /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu; do
    if [ -e "$CHROOT$d/libgcc_s.so.1" ]; then
        mkdir -p "$R$d"
        cp -L "$CHROOT$d/libgcc_s.so.1" "$R$d/"
    fi
done
mkdir -p "$R/usr/share/misc"
cp -L "$CHROOT"/usr/share/misc/pci.ids "$R/usr/share/misc/" 2>/dev/null || true
# tcpdump wants a tcpdump user or -Z root; give it /etc/passwd anyway
printf 'root:x:0:0:root:/root:/bin/sh\ntcpdump:x:0:0::/:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf '127.0.0.1 localhost\n' >"$R/etc/hosts"

# Kernel modules: the requested ones with their dependencies, decompressed, plus modules.dep.
MODS="e1000e vfio-pci vfio_iommu_type1 8021q igb virtio_pci virtio_net"
MODDIR="/lib/modules/$KVER"
for m in $MODS; do
    chroot "$CHROOT" modprobe -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod" {print $2}'
done | sort -u | while read -r ko; do
    rel="${ko#$MODDIR/}"
    dst="$R$MODDIR/${rel%.xz}"
    mkdir -p "$(dirname "$dst")"
    case "$ko" in
        *.xz) xz -dc "$CHROOT$ko" >"$dst" ;;
        *.zst) zstd -dcq "$CHROOT$ko" >"${dst%.zst}" ;;
        *) cp "$CHROOT$ko" "$dst" ;;
    esac
done
cp "$CHROOT$MODDIR"/modules.{order,builtin,builtin.modinfo} "$R$MODDIR/" 2>/dev/null || true
depmod -b "$R" "$KVER"

cat >"$R/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
echo 1 >/proc/sys/kernel/printk
hostname guest
ip link set lo up
MODULES=e1000e
MODARGS=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        nic.modules=*) MODULES="${arg#nic.modules=}" ;;
        nic.modargs=*) MODARGS="$(echo "${arg#nic.modargs=}" | tr ',' ' ')" ;;
    esac
done
first=1
for m in $(echo "$MODULES" | tr ',' ' '); do
    [ "$m" = none ] && continue
    if [ $first = 1 ]; then modprobe "$m" $MODARGS; first=0; else modprobe "$m"; fi
done
stty -echo 2>/dev/null
# A script appended as a second initramfs (see qemu-config/launch-guest.sh --script) runs instead of a shell.
if [ -x /run.sh ]; then
    /run.sh
    echo "@@RUN-EXIT=$?@@"
    poweroff -f
fi
echo "@@GUEST-READY@@"
while true; do
    setsid cttyhack sh
done
INIT
chmod +x "$R/init"

(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT"
echo "[build-initramfs] $(du -h "$OUT" | cut -f1) $OUT" >&2
