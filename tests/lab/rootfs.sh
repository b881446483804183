#!/bin/bash
# Builds the lab's dom0: a Debian bookworm root filesystem (debootstrap, minbase) with Debian's
# Xen 4.17 tools and kernel, made into an ext4 image, plus the kernel and initrd QEMU boots.
# With DEBDIR, the .deb files in it are installed on top with apt (the patched Xen packages of
# `make xen-deb` and xenft's own), and the hypervisor they bring is copied out to boot.
# Cached: rebuilt only when this script, the files it copies in or the packages change.
#
# usage: tests/lab/rootfs.sh WORKDIR [DEBDIR]
#   WORKDIR/rootfs.img, WORKDIR/vmlinuz, WORKDIR/initrd.img (and with DEBDIR WORKDIR/xen.gz)
# Env: LAB_DOM0_TREE, where the debootstrap tree is kept without DEBDIR (default WORKDIR/rootfs;
#   a cache outside the clone saves its ~2.5 minutes on the next clone: scripts/test).
# Needs root, debootstrap and e2fsprogs (scripts/install-deps) and Debian's archive.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: rootfs.sh WORKDIR [DEBDIR]}
debdir=${2:-}
mkdir -p "$work"
work=$(cd "$work" && pwd)
debs=()
if [ -n "$debdir" ]; then
    mapfile -t debs < <(ls "$debdir"/*.deb 2> /dev/null)
    [ ${#debs[@]} -gt 0 ] || { echo "lab: no .deb files in $debdir" >&2; exit 1; }
fi
stamp=$(cat "$0" "$here/dom0-init" ${debs[@]+"${debs[@]}"} | sha256sum | cut -c1-16)
if [ -f "$work/rootfs.img" ] && [ "$(cat "$work/rootfs.stamp" 2> /dev/null)" = "$stamp" ]; then
    echo "lab: dom0 root filesystem cached ($work/rootfs.img)"
    exit 0
fi

start=$(date +%s)
root=${LAB_DOM0_TREE:-$work/rootfs}
# Packages from DEBDIR change the tree: never a shared one.
[ -z "$debdir" ] || root=$work/rootfs
# curl and ping: dom0 is the client of the guest the lab's device model serves; libiscsi7: the
# pair's driver and xenftd run the test-and-set on the shared LUN; Boost.ProgramOptions: xenftd
# and the xenft CLI (the two-host lab runs them as the xl hook starts them).
packages=xen-utils-4.17,xenstore-utils,linux-image-amd64,iproute2,kmod,procps,curl,iputils-ping,libiscsi7,libboost-program-options1.74.0
# The debootstrap tree is kept between runs (the image is remade from it); a new package list
# makes a new tree.
if [ ! -x "$root/usr/sbin/xl" ] || [ "$(cat "$root/.lab-packages" 2> /dev/null)" != "$packages" ]; then
    rm -rf "$root"
    echo "lab: debootstrap bookworm ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$root" http://deb.debian.org/debian \
        > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
    echo "$packages" > "$root/.lab-packages"
fi
install -m 0755 "$here/dom0-init" "$root/sbin/lab-init"
if [ ${#debs[@]} -gt 0 ]; then
    echo "lab: installing ${#debs[@]} packages into dom0"
    rm -rf "$root/tmp/debs" && mkdir -p "$root/tmp/debs"
    cp "${debs[@]}" "$root/tmp/debs/"
    # No service starts inside the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
    { chroot "$root" apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive chroot "$root" sh -c 'apt-get install -y -qq --no-install-recommends /tmp/debs/*.deb'; } \
        > "$work/packages.log" 2>&1 || { tail -n 20 "$work/packages.log"; exit 1; }
    chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$work/packages.list"
    rm -rf "$root/tmp/debs" "$root/usr/sbin/policy-rc.d"
    cp "$(ls "$root"/boot/xen-4.17-*.gz | head -n 1)" "$work/xen.gz"
fi
mkdir -p "$root/lab"
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
# Room for what each run copies in (the guest, the scenario) through a second disk.
rm -f "$work/rootfs.img"
mke2fs -q -t ext4 -d "$root" -L lab-dom0 "$work/rootfs.img" 1536M
echo "$stamp" > "$work/rootfs.stamp"
echo "lab: dom0 root filesystem built in $(($(date +%s) - start)) s"
