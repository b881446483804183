#!/bin/bash
# Builds the lab's dom0: a Debian bookworm root filesystem (debootstrap, minbase) with Debian's
# Xen 4.17 tools and kernel, made into an ext4 image, plus the kernel and initrd QEMU boots.
# With DEBDIR, the .deb files in it are installed with apt into a copy of that tree, with
# systemd, as on an administrator's dom0 (the patched Xen packages of `make xen-deb` held, as
# the README says), and dom0-lab.service is enabled to run the scenario where the lab boots
# systemd (tests/lab/failover.sh with LAB_DEBS); when DEBDIR has the hypervisor's package, its
# xen.gz is copied out to boot. Without DEBDIR, or with init=/sbin/lab-init on the kernel's
# command line, dom0-init runs the scenario instead of an init system.
# Cached: rebuilt only when this script, the files it copies in or the packages change.
#
# usage: tests/lab/rootfs.sh WORKDIR [DEBDIR]
#   WORKDIR/rootfs.img, WORKDIR/vmlinuz, WORKDIR/initrd.img (and WORKDIR/xen.gz when DEBDIR
#   has the hypervisor's package)
# Env: LAB_DOM0_TREE, where the debootstrap tree is kept (default WORKDIR/rootfs; a cache
#   outside the clone saves its ~2.5 minutes on the next clone: scripts/test); with DEBDIR the
#   packages go into a copy of it, WORKDIR/rootfs-debs. LAB_EXTRA_PACKAGES, packages from
#   Debian's archive added to that copy like DEBDIR's (tests/lab/linux_boot.sh: QEMU).
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
extra=${LAB_EXTRA_PACKAGES:-}
stamp=$( (cat "$0" "$here/dom0-init" "$here/dom0-lab.service" ${debs[@]+"${debs[@]}"}; echo "$extra") | sha256sum | cut -c1-16)
if [ -f "$work/rootfs.img" ] && [ "$(cat "$work/rootfs.stamp" 2> /dev/null)" = "$stamp" ]; then
    echo "lab: dom0 root filesystem cached ($work/rootfs.img)"
    exit 0
fi

start=$(date +%s)
base=${LAB_DOM0_TREE:-$work/rootfs}
# curl and ping: dom0 is the client of the guest the lab's device model serves; libiscsi7: the
# pair's driver and xenftd run the test-and-set on the shared LUN; Boost.ProgramOptions: xenftd
# and the xenft CLI (the two-host lab runs them as the xl hook starts them).
packages=xen-utils-4.17,xenstore-utils,linux-image-amd64,iproute2,kmod,procps,curl,iputils-ping,libiscsi7,libboost-program-options1.74.0
# The debootstrap tree is kept between runs (the image is remade from it); a new package list
# makes a new tree.
if [ ! -x "$base/usr/sbin/xl" ] || [ "$(cat "$base/.lab-packages" 2> /dev/null)" != "$packages" ]; then
    rm -rf "$base"
    echo "lab: debootstrap bookworm ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$base" http://deb.debian.org/debian \
        > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
    echo "$packages" > "$base/.lab-packages"
fi
root=$base
if [ ${#debs[@]} -gt 0 ] || [ -n "$extra" ]; then
    # Packages change the tree: they go into a copy of the kept one.
    root=$work/rootfs-debs
    rm -rf "$root" && cp -a "$base" "$root"
    echo "lab: installing ${#debs[@]} packages and ${extra:-no others} into dom0, and systemd"
    rm -rf "$root/tmp/debs" && mkdir -p "$root/tmp/debs"
    debglob=
    [ ${#debs[@]} -eq 0 ] || { cp "${debs[@]}" "$root/tmp/debs/"; debglob='/tmp/debs/*.deb'; }
    # No service starts inside the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
    allow=
    if ls "$root"/tmp/debs/xen-utils-4.17_*.deb > /dev/null 2>&1; then
        # As on an administrator's dom0: Debian's security archive enabled and Xen's packages up
        # to date from it (4.17.7 and later, newer than the patched 4.17.5 ones), so installing
        # the patched packages is a downgrade, which apt-get does only when told.
        echo "deb http://deb.debian.org/debian-security bookworm-security main" > "$root/etc/apt/sources.list.d/security.list"
        allow=--allow-downgrades
    fi
    { chroot "$root" apt-get update -qq &&
      { [ -z "$allow" ] ||
        DEBIAN_FRONTEND=noninteractive chroot "$root" sh -c 'apt-get install -y -qq --only-upgrade $(dpkg-query -W -f "\${Package}\n" "xen*" "libxen*")'; } &&
      DEBIAN_FRONTEND=noninteractive chroot "$root" sh -c "apt-get install -y -qq $allow --no-install-recommends $debglob $extra systemd-sysv"; } \
        > "$work/packages.log" 2>&1 || { tail -n 20 "$work/packages.log"; exit 1; }
    chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$work/packages.list"
    # The README's step: hold the patched Xen packages, so that an upgrade from Debian's archive
    # (a newer xen in bookworm-security) does not replace the hypervisor xenft needs.
    held=$(chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' | awk '$2 ~ /\+xenft1$/ { print $1 }')
    [ -z "$held" ] || chroot "$root" apt-mark hold $held > /dev/null
    # The scenario runs once the system is up; no getty competes with it for the console, and
    # interfaces keep the kernel's names (no renaming while the scenario sets them up).
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    install -m 0644 "$here/dom0-lab.service" "$root/etc/systemd/system/dom0-lab.service"
    ln -sf ../dom0-lab.service "$root/etc/systemd/system/multi-user.target.wants/dom0-lab.service"
    ln -sf /dev/null "$root/etc/systemd/system/serial-getty@hvc0.service"
    ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
    rm -rf "$root/tmp/debs" "$root/usr/sbin/policy-rc.d"
    # The packaged hypervisor, when DEBDIR has it (else the lab boots its own build's).
    rm -f "$work/xen.gz"
    for xen_gz in "$root"/boot/xen-4.17-*.gz; do
        [ ! -f "$xen_gz" ] || { cp "$xen_gz" "$work/xen.gz"; break; }
    done
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
