#!/bin/bash
# Builds the protected Linux guest's root filesystem from Debian bookworm's packages: debootstrap
# (minbase) with lighttpd and its WebDAV and CGI modules (a CPU-bound CGI, a poweroff CGI), iproute2 and coreutils, an init
# that brings the network up and starts lighttpd (tests/lab/guest-init), and the files the lab's client
# downloads, made into an ext4 image for the guest's virtio disk. The guest boots Debian's own
# kernel and initrd (the lab dom0's: linux-image-amd64), whose initramfs loads the virtio and
# ext4 modules (udev, from the ACPI tables' LNRO0005 devices), mounts /dev/vda and runs
# /sbin/xenft-guest-init there: see docs/linux-guest.md for the command line.
# Cached: remade only when this script, the init or the packages change.
#
# usage: tests/lab/guest_rootfs.sh WORKDIR
#   WORKDIR/guest-root.img   the ext4 image (512 MiB, sparse)
#   WORKDIR/guest-files.sha256  the SHA-256 of each file it serves (www/big.bin: 32 MiB)
# Env: LAB_GUEST_TREE, where the debootstrap tree is kept (default WORKDIR/guest-tree).
# Needs root, debootstrap and e2fsprogs (scripts/install-deps) and Debian's archive.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: guest_rootfs.sh WORKDIR}
mkdir -p "$work"
work=$(cd "$work" && pwd)
packages=lighttpd,lighttpd-mod-webdav,iproute2,coreutils,procps
stamp=$( (cat "$0" "$here/guest-init"; echo "$packages") | sha256sum | cut -c1-16)
if [ -f "$work/guest-root.img" ] && [ "$(cat "$work/guest-root.stamp" 2> /dev/null)" = "$stamp" ]; then
    echo "lab: guest root filesystem cached ($work/guest-root.img)"
    exit 0
fi
start=$(date +%s)
tree=${LAB_GUEST_TREE:-$work/guest-tree}
if [ ! -x "$tree/usr/sbin/lighttpd" ] || [ "$(cat "$tree/.lab-packages" 2> /dev/null)" != "$packages" ]; then
    rm -rf "$tree"
    echo "lab: debootstrap bookworm for the guest ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$tree" http://deb.debian.org/debian \
        > "$work/guest-debootstrap.log" 2>&1 || { tail -n 20 "$work/guest-debootstrap.log"; exit 1; }
    echo "$packages" > "$tree/.lab-packages"
fi

root=$work/guest-root
rm -rf "$root" && cp -a "$tree" "$root"
rm -f "$root/.lab-packages"
# What a server needs not: the downloaded packages, documentation, translations.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
install -m 755 "$here/guest-init" "$root/sbin/xenft-guest-init"
# lighttpd: the files under /srv/www, WebDAV PUT into /srv/www/put (on the virtio disk, so an
# acknowledged PUT is on the disk the backup replays).
mkdir -p "$root/srv/www/put"
cat > "$root/etc/lighttpd/xenft.conf" <<'CONF'
server.document-root = "/srv/www"
server.port = 80
server.modules = ("mod_webdav", "mod_cgi")
server.errorlog = "/dev/kmsg"
server.max-request-size = 65536
webdav.activate = "enable"
webdav.is-readonly = "disable"
mimetype.assign = ("" => "application/octet-stream")
cgi.assign = ("/spin" => "", "/poweroff" => "")
# A CGI's output reaches the client as it comes (the spin's first line says its count began).
server.stream-response-body = 2
CONF
# The lab's CPU-bound process (docs/linux-guest.md, "Limits"): /cgi-bin/spin?N counts to N in
# mawk, in user space (no system call, no device access: no exit to Xen while it counts), and
# answers when done; its time and a GET's meanwhile show what exit-synchronous injection costs.
# Its first line leaves before the count begins, so the client knows the count is running when
# it sends the GET.
mkdir -p "$root/srv/www/cgi-bin"
cat > "$root/srv/www/cgi-bin/spin" <<'CGI'
#!/bin/sh
n=${QUERY_STRING:-1000000}
case $n in '' | *[!0-9]*) n=1000000 ;; esac
[ "$n" -le 20000000 ] || n=20000000
printf 'Content-Type: text/plain\r\n\r\ncounting to %s\n' "$n"
mawk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) s += i; print "counted to " n }'
CGI
chmod 755 "$root/srv/www/cgi-bin/spin"
# The guest's own poweroff (tests/lab/guest-init): a POST, so that no crawler or stray GET ends
# the VM.
cat > "$root/srv/www/cgi-bin/poweroff" <<'CGI'
#!/bin/sh
if [ "$REQUEST_METHOD" != POST ]; then
    printf 'Status: 405 Method Not Allowed\r\nAllow: POST\r\nContent-Type: text/plain\r\n\r\nPOST to power the guest off\n'
    exit 0
fi
printf 'Content-Type: text/plain\r\n\r\npowering off\n'
echo poweroff > /run/xenft-guest-power
CGI
chmod 755 "$root/srv/www/cgi-bin/poweroff"
# The download: 32 MiB that compress badly, the same on every build (a fixed seed), so the
# client can check it whichever replica served which part.
python3 - "$root/srv/www/big.bin" <<'PY'
import hashlib, sys
with open(sys.argv[1], "wb") as f:
    block = hashlib.sha256(b"xenft lab guest").digest()
    for i in range(32 * 1024 * 1024 // 32):
        block = hashlib.sha256(block).digest()
        f.write(block)
PY
echo "xenft lab guest" > "$root/srv/www/index.html"
(cd "$root/srv/www" && sha256sum big.bin index.html) > "$work/guest-files.sha256"
rm -f "$work/guest-root.img"
mke2fs -q -t ext4 -d "$root" "$work/guest-root.img" 512M
rm -rf "$root"
echo "$stamp" > "$work/guest-root.stamp"
echo "lab: guest root filesystem in $(($(date +%s) - start)) s ($work/guest-root.img)"
