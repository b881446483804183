#!/bin/bash
# Builds the lab's dom0: a Debian bookworm root filesystem (debootstrap, minbase) with Debian's
# Xen 4.17 tools and kernel, made into an ext4 image, plus the kernel and initrd QEMU boots.
# Cached: rebuilt only when this script or the files it copies in change.
#
# usage: tests/lab/rootfs.sh WORKDIR
#   WORKDIR/rootfs.img, WORKDIR/vmlinuz, WORKDIR/initrd.img
# Needs root, debootstrap and e2fsprogs (scripts/install-deps) and Debian's archive.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: rootfs.sh WORKDIR}
mkdir -p "$work"
work=$(cd "$work" && pwd)
stamp=$(cat "$0" "$here/dom0-init" | sha256sum | cut -c1-16)
if [ -f "$work/rootfs.img" ] && [ "$(cat "$work/rootfs.stamp" 2> /dev/null)" = "$stamp" ]; then
    echo "lab: dom0 root filesystem cached ($work/rootfs.img)"
    exit 0
fi

start=$(date +%s)
root=$work/rootfs
packages=xen-utils-4.17,xenstore-utils,linux-image-amd64,iproute2,kmod,procps
if [ ! -x "$root/usr/sbin/xl" ]; then
    rm -rf "$root"
    echo "lab: debootstrap bookworm ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$root" http://deb.debian.org/debian \
        > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
fi
install -m 0755 "$here/dom0-init" "$root/sbin/lab-init"
mkdir -p "$root/lab"
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
# Room for what each run copies in (the guest, the scenario) through a second disk.
rm -f "$work/rootfs.img"
mke2fs -q -t ext4 -d "$root" -L lab-dom0 "$work/rootfs.img" 1536M
echo "$stamp" > "$work/rootfs.stamp"
echo "lab: dom0 root filesystem built in $(($(date +%s) - start)) s"
