#!/bin/bash
# Prints the path of Debian bookworm's stock kernel (the vmlinuz of linux-image-amd64's current
# version), extracted from its package into DIR on first use, for the direct Linux boot's tests
# (tests/linux_image_test lays it out; scripts/test exports it as XENFT_LINUX_KERNEL). Needs
# apt's package lists.
#
# usage: tests/debian_kernel.sh DIR
set -euo pipefail
dir=${1:?usage: tests/debian_kernel.sh DIR}
pkg=$(apt-cache depends linux-image-amd64 2> /dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$pkg" ] || { echo "debian_kernel: apt knows no linux-image-amd64 (apt-get update?)" >&2; exit 1; }
out=$dir/$pkg
if ! ls "$out"/boot/vmlinuz-* > /dev/null 2>&1; then
    rm -rf "$dir/download" "$out.tmp" && mkdir -p "$dir/download" "$out.tmp"
    (cd "$dir/download" && apt-get download "$pkg" > /dev/null 2>&1) ||
        { echo "debian_kernel: apt-get download $pkg failed" >&2; exit 1; }
    dpkg-deb --fsys-tarfile "$dir/download/${pkg}"_*.deb | tar -x -C "$out.tmp" ./boot
    rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$dir/download"
fi
ls "$out"/boot/vmlinuz-* | head -n 1
