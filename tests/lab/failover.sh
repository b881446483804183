#!/bin/bash
# The two-host lab (make lab-failover): two Xen hosts under QEMU (TCG), each the patched
# hypervisor with a Debian dom0, joined by a virtual link for xenft's logging channel (QEMU's
# socket network), with their guest LAN on a bridge of the build machine, where a client
# namespace talks to the protected guest and istgt serves the shared LUN of the arbitration
# record. On each host `xl create` of the guest's configuration, which has ft="ftguest", runs
# xenft's xl hook, which starts xenftd with the new domain's id (vm.backend = xen in
# /etc/xenft/ftguest.conf): on host A it records the test guest's service (xenft's device
# models, FT RECORD); host B's domain waits paused for a live copy of A's running domain
# (memory, written disk blocks, HVM context, device state), then replays A's log from there,
# comparing state digests at the exits A took them. One node runs on both (xenft/daemon/
# node.hpp, driven by the protocol core, with xen_execution.hpp): A's xenftd claims the VM
# (test-and-set epoch 1 -> 2) and runs it alone until B's backup has its copy. `xenft status`
# on each host shows the copy and the digests.
#
#   case "a-dies": the client PUTs, then downloads 1 MiB; QEMU A is SIGKILLed in the middle
#     (a power cut); B wins the test-and-set (epoch 3), goes live, and the download finishes
#     intact on the same TCP connection; the PUT is still there.
#   case "b-dies": the same with QEMU B killed: A wins the test-and-set and continues alone.
#   case "b-late": host B boots but holds its xl create: A claims the VM and serves alone (the
#     guest's outputs are not held). Then B creates its domain: its backup takes a live copy of
#     A's domain, which has served alone for a minute, and A is protected; the client PUTs,
#     QEMU A is killed, B goes live (epoch 3) and has the PUT.
#   case "a-ends": no failure: the administrator runs `xl destroy` on host A. A's xenftd tells
#     the backup through the log (vm_end) before it goes silent; B ends with the VM (its
#     domain powered off and removed by xl) instead of taking it over: no test-and-set, the
#     arbitration record stays at epoch 2, the guest no longer answers, both xenftd exit.
#   case "operator": no failure either: `xenft failover` on host B. B waits out A's lease,
#     wins the test-and-set (epoch 3) and goes live with the client's PUT; A hears B's
#     heartbeats in epoch 3, is deposed, pauses its domain and joins B as its backup (a live
#     copy from B, recorded again since it went live). Then `xl destroy` and `xl create` of
#     the VM on A: the record names B, so A's new domain joins as the backup again.
#   case "backup-dies-in-copy": host B's QEMU is killed as host A starts the live copy: the
#     copy fails, A keeps the VM (it runs alone until a backup has a copy), the client is
#     served within a few of the detector's timeouts.
#   case "backup-diverges": a byte of host B's guest memory is flipped (xenft-xen-poke): once
#     the digests' sweep reaches the page, B's digest differs, B halts and says so in its
#     heartbeats, A runs the test-and-set at once and continues alone (epoch 3); B's xenftd
#     joins again by a live copy. Then `xenft unprotect` on A (epoch 4: B, deposed, gets no
#     copy) and `xenft protect` (B gets one).
#   The last three run the hosts' link as UDP between the QEMUs (a host can boot again; the
#   link and the storage are cut with nftables on the build machine):
#   case "link-cut": the link cut mid-download, storage reachable: both suspect, exactly one
#     wins the test-and-set and runs the VM; the download finishes intact on one connection,
#     the PUT is there; healed, the other host (halted, joined again) takes a live copy.
#   case "storage-cut": the link and the LUN cut: both test-and-sets are unknown, nobody goes
#     live, the client's GET gets no answer (outputs held); storage back: exactly one runs the
#     VM with the PUT.
#   case "reprotect-after-failover": B booted first (it joins knowing epoch 1, A claims 2), A's
#     power cut, B live (epoch 3, recorded again); A booted
#     again: its xl create joins B by a live copy (the record names B), digests match; then
#     B's power cut mid-download: A goes live (epoch 4) with every acknowledged PUT and the
#     download intact on one connection.
#   case "linux-a-dies": an unmodified Linux through both hosts' power cuts (issue 25,
#     docs/linux-guest.md): Debian's kernel on the plain virtual PC (xl: type hvm,
#     device_model_version "none"; xenft.conf: vm.kernel, vm.initrd, vm.cmdline), its root
#     filesystem (tests/lab/guest_rootfs.sh: lighttpd) on the virtio disk on the shared LUN
#     (disk.lun, after the arbitration record). A boots it (the 8250 driver takes xenft's UART
#     as ttyS0 on IRQ 4, user space writes to it) and serves alone until B's backup has a live
#     copy of the running Linux; the client PUTs and downloads 16 MiB at 400 KB/s;
#     A's power cut mid-download: B goes live (epoch 3), the download finishes on the same
#     connection with the right SHA-256, the PUT reads back. Then A booted again joins B by a
#     live copy, the client PUTs again and downloads 16 MiB; B's power cut: A goes live (epoch
#     4), the download is intact on one connection, both PUTs read back. Then the guest powers
#     itself off (POST /cgi-bin/poweroff: ACPI S5): A's xenftd ends the VM, says so and exits,
#     the domain is removed. Last, the LUN's ext4 is consistent (e2fsck after its journal's
#     replay) and holds the first PUT. Alone:
#     FAILOVER_CASES=linux-a-dies (`make lab-failover-linux`).
#   case "linux-unprotected" (only when named: the baseline of bench/xen_linux_pair_bench.sh):
#     the same Linux on host A with xenft off (no ft=, no xenftd, Xen's FT mode off;
#     xenft-xen-dm serves the same device models), its root filesystem a disk of A's own; the
#     client measures what linux-a-dies measures.
#
# With LAB_DEBS (make lab-failover-debs) the hosts are dom0s set up as the README's install
# section says, from packages only: Debian's Xen packages with xenft's patches (make xen-deb) and
# xenft's package, installed with apt and the Xen ones held; the dom0 boots systemd and Debian's
# Xen init script; the certificates, heartbeat key and /etc/xenft/ftguest.conf are put where the
# README puts them and checked with xenftd --check-config; the packaged xl runs the packaged
# hook, which starts xenftd@ftguest through systemd, and xenftd logs to the journal. Its checks
# add that each host runs those packages and that systemd runs xenftd. Default cases there:
# "a-dies a-ends" (a power cut and an administrator's xl destroy; the rest run as well). With
# XENFT_DEB (CI's shorter check of the packaged path) only xenft comes from its package,
# installed with apt into both dom0s; Xen is the lab's build and dom0-init runs the scenario.
#
# It prints a timeline per case, the client's verdict and its duration, one PASS/FAIL line per
# check, and ends with "lab failover: N passed, N failed".
#
# usage: tests/lab/failover.sh [WORKDIR]      (default build/lab-failover)
# Env: XEN_WORKDIR (default build/xen), XENFT_GUEST, XENFT_XL_HOOK, XENFT_CLI (the build's
#      xenft CLI, for certificates and the arbitration record), XENFT_XENFTD (the ordinary
#      build's xenftd: built against Debian's libxen-dev, it runs on the patched hypervisor
#      as the package's would; default build/main/xenft/daemon/xenftd), FAILOVER_CASES ("a-dies b-dies
#      b-late a-ends operator backup-dies-in-copy backup-diverges link-cut storage-cut
#      reprotect-after-failover linux-a-dies"; linux-unprotected runs when named), LAB_DEBS (a directory of .debs: the patched Xen packages of
#      make xen-deb and xenft's; the dom0 image is built from them, above), XENFT_DEB (xenft's
#      .deb, above; instead of XENFT_XENFTD, XENFT_CLI's copy in dom0 and XENFT_XL_HOOK).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-failover}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
guest=${XENFT_GUEST:-$top/build/main/tests/guest/xenft-guest.elf}
xenft_cli=${XENFT_CLI:-$top/build/main/dom0-tools/xenft/xenft}
xenftd_bin=${XENFT_XENFTD:-$top/build/main/xenft/daemon/xenftd}
debs=${LAB_DEBS:+$(cd "$LAB_DEBS" 2> /dev/null && pwd || echo "$LAB_DEBS")}
all_cases="a-dies b-dies b-late a-ends operator backup-dies-in-copy backup-diverges link-cut storage-cut reprotect-after-failover linux-a-dies"
if [ -n "$debs" ]; then cases_to_run=${FAILOVER_CASES:-a-dies a-ends}; else cases_to_run=${FAILOVER_CASES:-$all_cases}; fi
xenft_deb=${XENFT_DEB:-}
# What the dom0 image gets from packages: xen_packaged (Xen's and xenft's, systemd boots) or
# xenft_packaged (xenft's alone); the directory of .debs tests/lab/build.sh installs.
xen_packaged=0 xenft_packaged=0 debdir=
if [ -n "$debs" ]; then
    xen_packaged=1 xenft_packaged=1 debdir=$debs
elif [ -n "$xenft_deb" ]; then
    xenft_packaged=1 debdir=$work/debs-xenft
fi
cases=$work/lab_failover.cases
: > "$cases"
start=$(date +%s)
failed=0
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
pass() { echo "PASS $1" | tee -a "$cases"; }
fail() { echo "FAIL $1: $2" | tee -a "$cases"; failed=1; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null; done
    wait 2> /dev/null
    ip netns del xftlabc 2> /dev/null
    for l in xftqa0 xftqb0 xftlabv0 xftlab0; do ip link del "$l" 2> /dev/null; done
    for t in xftlablink xftlabstore; do nft delete table inet $t 2> /dev/null; done
}
finish() {
    cleanup
    stamp "lab failover: $(grep -c '^PASS' "$cases") passed, $(grep -c '^FAIL' "$cases") failed in $(($(date +%s) - start)) s"
    printf ':test-result: %s\n' "$([ $failed -eq 0 ] && echo PASS || echo FAIL)" > "${cases%.cases}.trs"
    exit $failed
}
trap 'fail interrupted "stopped by a signal"; finish' INT TERM

[ "$(id -u)" -eq 0 ] || { fail lab_failover "needs root (bridges, taps, namespaces, debootstrap)"; finish; }
for tool in qemu-system-x86_64 istgt ip curl; do
    command -v $tool > /dev/null || { fail lab_failover "$tool is missing (./scripts/install-deps)"; finish; }
done
[ -x "$xenft_cli" ] || { fail lab_failover "no xenft CLI at $xenft_cli (build it: ./scripts/build)"; finish; }

# --- what the hosts run: Xen, xenft's Xen programs, the dom0 image (shared with the smoke lab) ----
stamp "building Xen, xenft's Xen test programs and the dom0 image (tests/lab/build.sh)"
if [ $xenft_packaged = 1 ] && [ $xen_packaged = 0 ]; then
    [ -f "$xenft_deb" ] || { fail lab_failover "XENFT_DEB: no file $xenft_deb"; finish; }
    rm -rf "$debdir" && mkdir -p "$debdir" && cp "$xenft_deb" "$debdir/"
fi
if ! "$top/tests/lab/build.sh" "$work" $debdir > "$work/build.log" 2>&1; then
    tail -n 20 "$work/build.log"
    fail lab_builds "tests/lab/build.sh failed ($work/build.log)"
    finish
fi
grep 'step .* done in' "$work/build.log" | sed 's/^/    /'
pass lab_builds
if [ $xen_packaged = 1 ]; then gunzip -c "$work/xen.gz" > "$work/xen"; else gunzip -c "$XEN_WORKDIR/stage/boot/xen.gz" > "$work/xen"; fi

# --- the scenario disk: the same for both hosts; the role comes on the kernel command line ----
payload=$work/payload-failover
rm -rf "$payload" && mkdir -p "$payload/tls"
cp "$guest" "$payload/xenft-guest.elf"
cp "$work/xenft-xen-poke" "$payload/"
# The Linux guest with xenft off (case linux-unprotected): xenft's device models alone.
cp "$work/xenft-xen-dm" "$payload/"
# xenft, and xl with Xen's libraries: in the dom0 image where they come from packages, else
# from the builds.
if [ $xenft_packaged = 0 ]; then
    "$xenftd_bin" --version | grep -q 'backends: .*xen' ||
        { fail xenftd_has_the_xen_backend "$xenftd_bin: $("$xenftd_bin" --version 2>&1) (configure found no libxen-dev?)"; finish; }
    cp "$xenftd_bin" "$xenft_cli" "$payload/"
    cp "${XENFT_XL_HOOK:-$top/build/main/dom0-tools/xl/xl-hook}" "$payload/xl-hook"
fi
if [ $xen_packaged = 0 ]; then
    mkdir -p "$payload/xen/lib"
    cp "$XEN_WORKDIR/stage/usr/sbin/xl" "$payload/xen/xl"
    cp -P "$XEN_WORKDIR"/stage/usr/lib/lib*.so* "$payload/xen/lib/"
fi
# The README's step 1 (certificates and the heartbeat key), done on the build machine: the
# CA's key never reaches a host; each host gets its own certificate and key (installed into
# /etc/xenft/tls by the run script below).
rm -rf "$work/ca"
{ "$xenft_cli" cert ca --name ca --out "$work/ca" &&
  for h in hosta hostb; do
      "$xenft_cli" cert create --name $h --out "$payload/tls" --ca-cert "$work/ca/ca.crt" --ca-key "$work/ca/ca.key" || exit 1
  done && cp "$work/ca/ca.crt" "$payload/tls/"; } > "$work/certs.log" 2>&1 || { fail lab_certificates "$(tail -n 2 "$work/certs.log")"; finish; }
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$payload/tls/heartbeat.key" && chmod 600 "$payload/tls/heartbeat.key"
cat > "$payload/pvh-ft.cfg" <<'EOF'
name = "ft-guest"
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=service ip=10.98.1.2"
memory = 32
vcpus = 1
tsc_mode = "always_emulate"
on_crash = "preserve"
ft = "ftguest"
EOF
# The Linux guest (case linux-a-dies): the same domain name and ft= name, another platform.
cat > "$payload/linux-ft.cfg" <<'EOF'
name = "ft-guest"
type = "hvm"
device_model_version = "none"
firmware = "/usr/lib/xen-4.17/boot/hvmloader"
memory = 256
vcpus = 1
tsc_mode = "always_emulate"
cpuid = "host,x2apic=0,tsc-deadline=0,monitor=0,rdrand=0,rdseed=0"
on_crash = "preserve"
ft = "ftguest"
EOF
lun=iscsi://10.98.1.1:3260/iqn.2026-11.lab.xenft:shared/0
# The Linux guest's disk on that LUN: its root filesystem image (tests/lab/guest_rootfs.sh).
guest_disk_lba=64 guest_disk_mib=512
# Each host's /etc/xenft/ftguest.conf (xenft.conf(5)): A starts as the primary, B as the backup.
for h in a b; do
    n=1 peer=2 me=hosta other=hostb role=primary
    [ $h = b ] && n=2 peer=1 me=hostb other=hosta role=backup
    cat > "$payload/ftguest-$h.conf" <<EOF
[vm]
id = 1
backend = xen
memory-mib = 32
[pair]
host-id = $n
peer-id = $peer
role = $role
[network]
tap = xftg0
[disk]
file = /tmp/disk.img
[arbiter]
lun = $lun
initiator = iqn.2026-11.lab.xenft:$me
[channel]
listen = 192.168.77.$n:7100
peer = 192.168.77.$peer:7100
cert = /etc/xenft/tls/$me.crt
key = /etc/xenft/tls/$me.key
ca = /etc/xenft/tls/ca.crt
peer-name = $other
[heartbeat]
listen = 192.168.77.$n:7101
peer = 192.168.77.$peer:7101
key-file = /etc/xenft/tls/heartbeat.key
[failover]
after-ms = 2000
digest-ms = 3000
EOF
    # The Linux guest's: its kernel and initrd are the dom0's own (the run script fills in their
    # names), its disk the root filesystem on the shared LUN, after the arbitration record.
    sed -e 's|^memory-mib = 32$|memory-mib = 256\nkernel = @KERNEL@\ninitrd = @INITRD@\ncmdline = earlycon=uart8250,io,0x3f8,115200 console=ttyS0 nopv lpj=2000000 randomize_kstack_offset=off loglevel=6 net.ifnames=0 root=/dev/vda rw init=/sbin/xenft-guest-init xenft.ip=10.98.1.2/24|' \
        -e "s|^file = /tmp/disk.img\$|lun = $lun\nfirst-lba = $guest_disk_lba\nsize-mib = $guest_disk_mib|" "$payload/ftguest-$h.conf" > "$payload/ftlinux-$h.conf"
done
cat > "$payload/run" <<EOF
#!/bin/sh
# One host of the pair: lab.role=a (records) or b (replays) on the kernel command line. With
# xen_packaged=1 it runs under systemd (dom0-lab.service) on a dom0 whose Xen and xenft come
# from packages; else dom0-init runs it and xl and its libraries come from /lab, and xenft
# and the hook too unless xenft_packaged=1.
xen_packaged=$xen_packaged xenft_packaged=$xenft_packaged
role=\$(sed -n 's/.*lab\.role=\([ab]\).*/\1/p' /proc/cmdline)
n=1 me=hosta
[ "\$role" = b ] && n=2 me=hostb
say() { echo "LAB: \$role: \$*"; }
if [ \$xen_packaged = 1 ]; then
    xl=/usr/sbin/xl
    if systemctl is-active --quiet xen.service && xenstore-read domid > /dev/null 2>&1; then
        say "dom0 up: systemd, xen.service active"
    else
        say "FAIL xen.service: \$(systemctl is-active xen.service) \$(journalctl -b -u xen.service -o cat | tail -n 2 | tr '\n' ' ')"
    fi
    echo "LAB: dom0 up"
else
    export LD_LIBRARY_PATH=/lab/xen/lib
    xl=/lab/xen/xl
fi
if [ \$xenft_packaged = 1 ]; then
    say "packages \$(dpkg-query -W -f '\${Package}=\${Version} ' xen-hypervisor-4.17-amd64 xen-utils-4.17 libxenmisc4.17 xenft 2>&1)"
    say "held: \$(apt-mark showhold | tr '\n' ' ')"
    if [ \$xen_packaged = 1 ]; then
        # The security archive's newer Xen (in this image's package lists) stays out.
        newer=\$(apt-get -s upgrade 2> /dev/null | awk '/^Inst (xen|libxen)/ { print \$2 }' | tr '\n' ' ')
        [ -z "\$newer" ] && say "apt-get upgrade keeps the patched Xen" || say "FAIL apt-get upgrade would replace \$newer"
    fi
    say "xenft --version: \$(xenft --version 2>&1 | tr '\n' ' ')"
fi
for m in virtio_net tun bridge; do modprobe \$m 2> /dev/null; done
ifname_of() { ip -o link | awk -v m="\$1" 'index(\$0, m) { sub(":", "", \$2); print \$2 }'; }
ft=\$(ifname_of 52:54:00:fe:00:0\$n) lan=\$(ifname_of 52:54:00:fe:01:0\$n)
ip link set lo up
ip addr add 192.168.77.\$n/24 dev "\$ft" && ip link set "\$ft" up || say "FAIL no logging link (\$ft)"
ip link add xftbr0 type bridge && ip link set "\$lan" master xftbr0 && ip link set "\$lan" up &&
    ip addr add 10.98.1.1\$n/24 dev xftbr0 && ip link set xftbr0 up || say "FAIL no LAN bridge (\$lan)"
ip tuntap add dev xftg0 mode tap && ip link set xftg0 master xftbr0 && ip link set xftg0 up || say "FAIL no guest TAP"
truncate -s 1M /tmp/disk.img
# lab.guest=linux: Debian's kernel on the plain PC (case linux-a-dies) instead of the test guest.
cfg=/lab/pvh-ft.cfg conf=/lab/ftguest-\$role.conf
if grep -q 'lab\.guest=linux' /proc/cmdline; then
    cfg=/lab/linux-ft.cfg conf=/tmp/ftlinux.conf
    sed -e "s|@KERNEL@|\$(ls /boot/vmlinuz-* | head -n 1)|" -e "s|@INITRD@|\$(ls /boot/initrd.img-* | head -n 1)|" \
        /lab/ftlinux-\$role.conf > \$conf
fi
if [ \$xenft_packaged = 0 ]; then
    # xenft where the package installs it; xl runs the hook for ft=, the hook starts xenftd (no
    # systemd here: itself, logging to /var/log/xenft/ftguest.log).
    mkdir -p /etc/xenft/tls /usr/libexec/xenft /var/log/xenft
    cp /lab/xenftd /lab/xenft /usr/sbin/ && cp /lab/xl-hook /usr/libexec/xenft/xl-hook || say "FAIL cannot install xenft"
fi
# The README's steps 1 and 3 on this host: its certificate and key, the CA's certificate, the
# heartbeat key (keys 0600), the VM's configuration, checked.
install -m 0644 /lab/tls/\$me.crt /lab/tls/ca.crt /etc/xenft/tls/ &&
    install -m 0600 /lab/tls/\$me.key /lab/tls/heartbeat.key /etc/xenft/tls/ &&
    install -m 0644 \$conf /etc/xenft/ftguest.conf || say "FAIL cannot install the configuration"
say "check-config: \$(xenftd --config /etc/xenft/ftguest.conf --check-config 2>&1 | tr '\n' ' ')"
# The case may hold this host's xl create until the build machine says so (lab.create=wait:
# it serves port 7999).
if grep -q 'lab\.create=wait' /proc/cmdline; then
    say "xl create waits for the lab's go-ahead"
    until curl -s -o /dev/null --max-time 2 http://10.98.1.1:7999/; do sleep 2; done
fi
# The hook waits for xenftd's first answer up to 30 s by default; under QEMU TCG it can take
# longer (the iSCSI login and the TLS handshake run emulated).
export XENFT_READY_TIMEOUT_S=120
if [ \$xen_packaged = 1 ]; then
    journalctl -f -n all -o cat -u xenftd@ftguest.service 2> /dev/null | sed -u "s/^/LAB: \$role: /" &
else
    # xenftd runs with Debian's own Xen libraries (xl needs the lab's patched ones, so the hook
    # it starts inherits them): as on a dom0 where only the hypervisor carries xenft's patches.
    printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec /usr/sbin/xenftd "\$@"\n' > /usr/local/sbin/xenftd-debian-libs &&
        chmod 755 /usr/local/sbin/xenftd-debian-libs
    export XENFTD=/usr/local/sbin/xenftd-debian-libs
    # The build's hook has configure's paths (/usr/local): the package's are these.
    [ \$xenft_packaged = 1 ] || export XENFT_CONFDIR=/etc/xenft XENFT=/usr/sbin/xenft
    mkdir -p /var/log/xenft && touch /var/log/xenft/ftguest.log
    tail -n +1 -F /var/log/xenft/ftguest.log 2> /dev/null | sed -u "s/^/LAB: \$role: /" &
fi
# The guest's console as xenftd keeps it (xenft.conf(5), vm.console-log), in this host's log.
tail -n +1 -F /var/log/xenft/ftguest.console 2> /dev/null | sed -u "s/^/LAB: \$role: guest: /" &
# lab.guest=linux-off (case linux-unprotected, the figures' baseline): the same Linux with
# xenft off: no ft= in its configuration, no xenftd, Xen's FT mode off; xenft-xen-dm serves
# its devices (the same models) and boots the kernel, its disk the guest's root filesystem
# image QEMU gives this host as a disk of its own (copy-on-write: the LUN is not involved).
xenft_off=0
grep -q 'lab\.guest=linux-off' /proc/cmdline && xenft_off=1
if [ \$xenft_off = 1 ]; then
    disk=
    for d in /sys/block/vd*; do [ "\$(cat \$d/size)" = $((guest_disk_mib * 2048)) ] && disk=/dev/\${d##*/}; done
    sed '/^ft = /d' /lab/linux-ft.cfg > /tmp/linux-off.cfg
    if [ -z "\$disk" ]; then
        say "FAIL xenft off: no disk of $guest_disk_mib MiB (the guest's root filesystem)"
    elif \$xl create -p /tmp/linux-off.cfg > /tmp/create 2>&1; then
        domid=\$(\$xl domid ft-guest)
        say "xenft off: domain \$domid (no ft=) served by xenft-xen-dm, its disk \$disk"
        (/lab/xenft-xen-dm \$domid --memory-mb 256 --linux "\$(ls /boot/vmlinuz-* | head -n 1)" \
             --initrd "\$(ls /boot/initrd.img-* | head -n 1)" --cmdline "\$(sed -n 's/^cmdline = //p' \$conf)" \
             --acpi yes --tap xftg0 --disk \$disk --timeout-s 7200 > /tmp/dm-off 2>&1
         say "xenft-xen-dm exited \$?: \$(grep -v '^guest: ' /tmp/dm-off | tail -n 4 | tr '\n' ' ') \$(grep '^guest: ' /tmp/dm-off | tail -n 6 | tr '\n' ' ')") &
    else
        say "FAIL xl create: \$(tail -n 3 /tmp/create | tr '\n' ' ')"
    fi
elif \$xl create \$cfg > /tmp/create 2>&1; then
    say "xl create: \$(tr '\n' ' ' < /tmp/create)"
    pid=\$(pgrep -x xenftd | head -n 1)
    say "xenftd's Xen libraries: \$(grep -o '/[^ ]*lib\(xenctrl\|xencall\)[^ ]*' /proc/\$pid/maps 2>&1 | sort -u | tr '\n' ' ')"
    [ \$xen_packaged = 0 ] || say "xenftd runs as \$(systemctl show -p Id --value xenftd@ftguest.service) (\$(systemctl is-active xenftd@ftguest.service), main pid \$(systemctl show -p MainPID --value xenftd@ftguest.service), xenftd pid \$pid)"
else
    say "FAIL xl create: \$(tail -n 3 /tmp/create | tr '\n' ' ')"
fi
# lab.act=ACT[+ACT...]: what the administrator does on this host, the k-th action once the
# build machine serves /act-a-k (host A) or /act-b-k on port 7999: xl destroy of the guest,
# xenft failover, xl destroy and xl create again, a byte of the guest's memory flipped (a
# replica made to diverge), xenft unprotect, xenft protect.
acts=\$(sed -n 's/.*lab\.act=\([a-z+]*\).*/\1/p' /proc/cmdline)
if [ -n "\$acts" ]; then
    (k=0
     for act in \$(echo "\$acts" | tr + ' '); do
         k=\$((k + 1))
         until curl -sf -o /dev/null --max-time 2 http://10.98.1.1:7999/act-\$role-\$k; do sleep 2; done
         case \$act in
             destroy) out=\$(\$xl destroy ft-guest 2>&1); rc=\$?; say "xl destroy ft-guest: exit \$rc \$(echo \$out)" ;;
             failover) out=\$(/usr/sbin/xenft failover --vm 1 2>&1); rc=\$?; say "xenft failover: exit \$rc \$(echo \$out)" ;;
             recreate) \$xl destroy ft-guest > /dev/null 2>&1
                       out=\$(\$xl create /lab/pvh-ft.cfg 2>&1); rc=\$?; say "xl recreate: exit \$rc \$(echo \$out)" ;;
             poke) out=\$(/lab/xenft-xen-poke "\$(\$xl domid ft-guest)" 8191 100 2>&1); rc=\$?; say "poke: exit \$rc \$(echo \$out)" ;;
             unprotect|protect) out=\$(/usr/sbin/xenft \$act --vm 1 2>&1); rc=\$?; say "xenft \$act: exit \$rc \$(echo \$out)" ;;
         esac
     done) &
fi
# What the administrator sees, every 10 s, until the host is switched off; its errors too (a
# daemon that does not answer), and once, how a xenftd that is gone ended (the kernel says
# whether it was a signal: a crash is in no log of its own).
xenftd_gone_said=0
while sleep 10; do
    [ \$xenft_off = 1 ] || /usr/sbin/xenft status --vm 1 2>&1 | grep -E 'role|exits|digests|live copy|failover|stopped|halt|event|lag: |log rate|replay: |^xenft: ' | sed "s/^ */LAB: \$role: status: /"
    if [ -n "\$pid" ] && ! kill -0 "\$pid" 2> /dev/null; then
        now_pid=\$(pgrep -x xenftd | head -n 1)
        if [ -n "\$now_pid" ]; then
            pid=\$now_pid xenftd_gone_said=0 # started again (xenft protect, xl create)
        elif [ \$xenftd_gone_said = 0 ]; then
            xenftd_gone_said=1
            say "xenftd (pid \$pid) is gone: \$(dmesg | grep -a 'xenftd\|segfault\|traps:' | tail -n 3 | tr '\n' ' ')"
        fi
    fi
    [ \$xen_packaged = 0 ] || say "unit: xenftd@ftguest.service \$(systemctl is-active xenftd@ftguest.service)"
    say "domains: \$(\$xl list 2> /dev/null | awk 'NR > 1 { printf "%s ", \$1 }')"
done
EOF
chmod +x "$payload/run"
rm -f "$work/payload-failover.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload-failover.img" 96M || { fail lab_payload "mke2fs failed"; finish; }
case " $cases_to_run " in *" linux-a-dies "* | *" linux-unprotected "*)
    # The Linux guest's root filesystem (lighttpd), one image both hosts start from.
    stamp "the Linux guest's root filesystem (tests/lab/guest_rootfs.sh)"
    "$top/tests/lab/guest_rootfs.sh" "$work" > "$work/guest-rootfs.log" 2>&1 ||
        { tail -n 5 "$work/guest-rootfs.log"; fail lab_linux_guest_rootfs "tests/lab/guest_rootfs.sh failed"; finish; }
    [ "$(stat -c %s "$work/guest-root.img")" -le $((guest_disk_mib << 20)) ] ||
        { fail lab_linux_guest_rootfs "the image is larger than the guest's disk ($guest_disk_mib MiB)"; finish; }
    ;;
esac

# --- the build machine's side: LAN bridge, client namespace, istgt ----------------------------
cleanup
ip link add xftlab0 type bridge && ip addr add 10.98.1.1/24 dev xftlab0 && ip link set xftlab0 up || { fail lab_network "no bridge"; finish; }
for t in xftqa0 xftqb0; do ip tuntap add dev $t mode tap && ip link set $t master xftlab0 && ip link set $t up; done
ip netns add xftlabc && ip link add xftlabv0 type veth peer name eth0 netns xftlabc &&
    ip link set xftlabv0 master xftlab0 && ip link set xftlabv0 up &&
    ip -n xftlabc addr add 10.98.1.100/24 dev eth0 && ip -n xftlabc link set eth0 up && ip -n xftlabc link set lo up ||
    { fail lab_network "no client namespace"; finish; }
client() { ip netns exec xftlabc "$@"; }
mkdir -p "$work/lun"
# 576 MB: the arbitration record and, for the Linux guest, its disk (istgt grows the sparse file).
bash "$top/tests/istgt_conf.sh" "$work/lun" iqn.2026-11.lab.xenft shared 10.98.1.1:3260 10.98.1.0/24 127.0.0.1:3262 576 \
    > "$work/lun/istgt.conf"

# --- one case: boot both hosts, protect, cut the power of one ---------------------------------
# The dom0's init: dom0-init, or with LAB_DEBS systemd (the root file system writable, as on a
# real dom0; QEMU's snapshot throws the writes away), with the kernel's interface names.
dom0_init="ro init=/sbin/lab-init"
[ $xen_packaged = 0 ] || dom0_init="rw net.ifnames=0 systemd.show_status=0"
. "$top/tests/lab/host.sh"
# QEMU arguments of more disks for the next boot (case linux-unprotected).
boot_drives=()
boot() { # HOST(a|b) NETDEV-OF-THE-LOGGING-LINK [DOM0-KERNEL-PARAMETERS]
    local h=$1 n=1
    [ "$h" = b ] && n=2
    rm -f "$work/serial-$h.log"
    lab_host "$work" "$work/payload-failover.img" "$work/serial-$h.log" "$dom0_init lab.role=$h ${3:-}"
    "${lab_host_cmd[@]}" "${boot_drives[@]}" -netdev "$2" -device "virtio-net-pci,netdev=ft,mac=52:54:00:fe:00:0$n" \
        -netdev "tap,id=lan,ifname=xftq${h}0,script=no,downscript=no" -device "virtio-net-pci,netdev=lan,mac=52:54:00:fe:01:0$n" \
        > "$work/qemu-$h.log" 2>&1 &
    eval "qemu_$h=\$!"
    pids+=($!)
}
seen_in() { grep -aq -- "$2" "$work/serial-$1.log" 2> /dev/null; }
wait_for() { # HOST PATTERN SECONDS
    local i
    for i in $(seq "$3"); do
        seen_in "$1" "$2" && return 0
        sleep 1
    done
    return 1
}
line_in() { grep -a -- "$2" "$work/serial-$1.log" 2> /dev/null | tr -d '\r' | head -n 1; }
# HOST's last N lines of xenftd and the lab, the status samples left out, on one line: what a
# failure message needs when the line it looked for is missing.
recent_lines() { # HOST N
    { grep -a "LAB: $1: " "$work/serial-$1.log" 2> /dev/null | tr -d '\r' | grep -v "LAB: $1: \(status\|domains\|guest\): " | tail -n "$2"
      # Xen's own word on a replay that diverged (hvm-patches 0006 crashes the domain).
      grep -ao 'd[0-9]*v[0-9]* FT replay diverged.*' "$work/serial-$1.log" 2> /dev/null | tr -d '\r' | tail -n 2 | sed 's/^/Xen: /'
    } | tr '\n' ' ' | cut -c1-1800
}
# Until the client's download NAME (work/download-NAME) has BYTES, at most 5 min.
wait_downloaded() { # NAME BYTES
    for _ in $(seq 600); do
        [ "$(stat -c %s "$work/download-$1" 2> /dev/null || echo 0)" -ge "$2" ] && break
        sleep 0.5
    done
}

# A blank shared LUN served by istgt (its pid in istgt_pid) with the arbitration record at
# epoch 1, as `xenft arbiter init` sets it up for a new pair; with GUEST-DISK that image as the
# guest's disk from block guest_disk_lba.
fresh_lun() { # CASE [GUEST-DISK]
    local c=$1
    truncate -s 0 "$work/lun/lun0.img" && truncate -s 16M "$work/lun/lun0.img"
    [ -z "${2:-}" ] || dd if="$2" of="$work/lun/lun0.img" bs=1M seek=$((guest_disk_lba * 512)) oflag=seek_bytes conv=notrunc,sparse status=none ||
        fail "${c}_guest_disk_on_the_lun" "dd failed"
    istgt -c "$work/lun/istgt.conf" -D > "$work/istgt-$c.log" 2>&1 &
    istgt_pid=$!
    pids+=($istgt_pid)
    for _ in $(seq 100); do bash -c 'exec 3<>/dev/tcp/10.98.1.1/3260' 2> /dev/null && break; sleep 0.1; done
    "$xenft_cli" arbiter init --url "$lun" --vm 1 --epoch 1 --force > "$work/arbiter-$c.log" 2>&1 ||
        fail "${c}_arbitration_record" "$(tail -n 2 "$work/arbiter-$c.log")"
}

run_case() { # CASE
    local c=$1 victim survivor t0 expected got size
    [ "$c" = a-dies ] && victim=a survivor=b || victim=b survivor=a
    stamp "case $c: fresh LUN record, both hosts booting"
    fresh_lun $c
    local port=$((20000 + RANDOM % 20000))
    boot a "socket,id=ft,listen=127.0.0.1:$port"
    sleep 1
    boot b "socket,id=ft,connect=127.0.0.1:$port"
    t0=$(date +%s)
    if ! wait_for a "service: udp port 7000, http port 80 on 10.98.1.2" 400; then
        fail "${c}_protected_guest_comes_up" "no service line from host A's guest within 400 s: $(grep -a 'LAB: ' "$work/serial-a.log" | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: the guest serves on host A, $(($(date +%s) - t0)) s after boot"
    # Its outputs (ARP replies too) leave once B has the live copy and acks the log.
    wait_for a 'LAB: a: .*live copy to host 2 done' 180 &&
        stamp "case $c: host B has the live copy: $(line_in a 'live copy to host 2 done' | sed 's/.*live copy to host 2 done: //')"
    local put get ping_ok=no
    client ping -c 3 -w 60 10.98.1.2 > "$work/ping-$c.log" 2>&1 && ping_ok=yes
    echo "client: ping $ping_ok"
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "value-$c" http://10.98.1.2/kv/lab)
    get=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    echo "client: put $put, get $get"
    expected=$(seq -f %015.0f 0 65536 | head -c 1048576 | sha256sum | cut -c1-64)
    rm -f "$work/download-$c"
    client curl -s -v --max-time 900 -o "$work/download-$c" http://10.98.1.2/stream/1048576 2> "$work/curl-$c.log" &
    local curl_pid=$!
    wait_downloaded $c 131072
    # Both hosts' `xenft status` has shown a digest (taken on A, matched on B) before the cut.
    wait_for a 'LAB: a: status: *digests: *[1-9][0-9]* taken' 60
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 60
    size=$(stat -c %s "$work/download-$c" 2> /dev/null || echo 0)
    stamp "case $c: power cut of host ${victim^^} (SIGKILL to its QEMU) with $size bytes downloaded"
    local cut=$(date +%s)
    eval "kill -KILL \$qemu_$victim"
    wait $curl_pid 2> /dev/null # (also silences bash's note that it killed QEMU)
    local curl_rc=$?
    stamp "case $c: download ended (curl exit $curl_rc), $(($(date +%s) - cut)) s after the cut"
    got=$(sha256sum < "$work/download-$c" | cut -c1-64)
    local get_after put_after
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    put_after=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "after-$c" http://10.98.1.2/kv/lab)
    echo "client: after the cut: get $get_after, put $put_after, get $(client curl -s --max-time 120 http://10.98.1.2/kv/lab)"
    # The survivor's `xenft status` reports the failover (it asks every 10 s).
    wait_for $survivor "LAB: $survivor: status: *last failover: " 30
    echo "timeline of case $c (host ${survivor^^}):"
    grep -a "LAB: $survivor: " "$work/serial-$survivor.log" | tr -d '\r' | grep -v 'cannot connect\|status: ' | sed 's/^/    /' | tail -n 14
    echo "xenft status on host ${survivor^^} at the end:"
    grep -a "LAB: $survivor: status: " "$work/serial-$survivor.log" | tr -d '\r' | tail -n 4 | sed 's/^/    /'
    kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
    wait $qemu_a $qemu_b $istgt_pid 2> /dev/null

    # The checks.
    local matched
    matched=$(grep -ao '[0-9][0-9]* digests matched\|digests: *[0-9][0-9]* matched' "$work/serial-b.log" | tail -n 1 | tr -dc '0-9')
    if [ "$put" = 201 ] && [ "$get" = "value-$c" ] && [ $ping_ok = yes ]; then
        pass "${c}_client_uses_the_protected_guest"
    else
        fail "${c}_client_uses_the_protected_guest" "put $put, get '$get', $(tail -n 2 "$work/ping-$c.log" | tr '\n' ' ')"
    fi
    if seen_in a 'LAB: a: xl create: .*protected by xenftd' && seen_in b 'LAB: b: xl create: .*protected by xenftd'; then
        pass "${c}_xl_create_with_ft_starts_xenftd_on_both_hosts"
    else
        fail "${c}_xl_create_with_ft_starts_xenftd_on_both_hosts" "$(line_in a 'xl create') $(line_in b 'xl create')"
    fi
    # xenftd (built against Debian's libxen-dev) runs on the dom0's installed Xen libraries, not
    # the lab's build of them: Debian's own, which know nothing of FT (the FT interface is
    # xenft's copy, ft_abi.hpp, issued through libxencall), or with LAB_DEBS the patched packages'.
    local libs=debians_own
    [ $xen_packaged = 0 ] || libs=the_packaged
    if seen_in a "LAB: a: xenftd's Xen libraries: [^ ]*/lib/x86_64-linux-gnu/libxencall" &&
       seen_in a "LAB: a: xenftd's Xen libraries: .*/lib/x86_64-linux-gnu/libxenctrl" &&
       ! seen_in a "LAB: a: xenftd's Xen libraries: .*/lab/"; then
        pass "${c}_xenftd_runs_on_${libs}_xen_libraries"
    else
        fail "${c}_xenftd_runs_on_${libs}_xen_libraries" "$(line_in a "xenftd's Xen libraries")"
    fi
    if seen_in a 'LAB: a: .*live copy to host 2 done: sent at exit [1-9][0-9]*: [1-9][0-9]* pages' &&
       seen_in b "LAB: b: .*live copy taken at the primary's exit [1-9]" &&
       seen_in b 'LAB: b: status: *live copy: *1, the last taken: [1-9][0-9]* pages'; then
        pass "${c}_backup_starts_from_a_live_copy_of_the_primary"
    else
        fail "${c}_backup_starts_from_a_live_copy_of_the_primary" "$(line_in a 'live copy') / $(line_in b 'live copy')"
    fi
    if [ "${matched:-0}" -ge 1 ] && ! seen_in b 'cannot go on' && ! seen_in a 'cannot go on'; then
        pass "${c}_backup_digests_match_the_primary"
    else
        fail "${c}_backup_digests_match_the_primary" "${matched:-no} digests matched; $(line_in b 'cannot go on') $(line_in a 'cannot go on')"
    fi
    if grep -aq 'LAB: a: status: *digests: *[1-9][0-9]* taken' "$work/serial-a.log" &&
       grep -aq 'LAB: b: status: *digests: *[1-9][0-9]* matched' "$work/serial-b.log"; then
        pass "${c}_xenft_status_reports_the_digests"
    else
        fail "${c}_xenft_status_reports_the_digests" "$(line_in a 'status: *digests') / $(line_in b 'status: *digests')"
    fi
    # Epoch 2 is host A's claim of the VM at the start; the failover takes epoch 3.
    if seen_in $survivor "LAB: $survivor: status: *role: *primary (alone), epoch 3" &&
       seen_in $survivor "LAB: $survivor: status: *last failover: .*\(went live\|continued alone\) in epoch 3"; then
        pass "${c}_xenft_status_reports_the_failover"
    else
        fail "${c}_xenft_status_reports_the_failover" "$(grep -a "LAB: $survivor: status: *\(role\|last failover\)" "$work/serial-$survivor.log" | tr -d '\r' | tail -n 2 | tr '\n' ' ')"
    fi
    if [ "$c" = a-dies ]; then
        if seen_in b 'LAB: b: .*peer host 1 suspected (primary silent): test-and-set epoch 2 -> 3' &&
           seen_in b 'LAB: b: .*test-and-set won' && seen_in b 'LAB: b: .*went live at exit [1-9]'; then
            pass "${c}_backup_wins_the_test_and_set_and_goes_live"
        else
            fail "${c}_backup_wins_the_test_and_set_and_goes_live" "$(grep -a 'LAB: b: .*\(test-and-set\|live\|FAIL\|failed\)' "$work/serial-b.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
        fi
    else
        if seen_in a 'LAB: a: .*peer host 2 suspected (backup silent): test-and-set epoch 2 -> 3' &&
           seen_in a 'LAB: a: .*running alone in epoch 3 (held outputs released)'; then
            pass "${c}_primary_wins_the_test_and_set_and_continues_alone"
        else
            fail "${c}_primary_wins_the_test_and_set_and_continues_alone" "$(grep -a 'LAB: a: .*\(test-and-set\|alone\|FAIL\|failed\)' "$work/serial-a.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
        fi
    fi
    if [ $curl_rc -eq 0 ] && [ "$got" = "$expected" ] && [ "$(grep -c 'Connected to' "$work/curl-$c.log")" = 1 ]; then
        pass "${c}_download_survives_on_one_connection_intact"
    else
        fail "${c}_download_survives_on_one_connection_intact" "curl exit $curl_rc, $(stat -c %s "$work/download-$c" 2> /dev/null) bytes, sha256 ${got:0:16} (expected ${expected:0:16})"
    fi
    if [ "$get_after" = "value-$c" ] && [[ $put_after =~ ^20[14]$ ]]; then
        pass "${c}_acknowledged_put_survives_and_service_goes_on"
    else
        fail "${c}_acknowledged_put_survives_and_service_goes_on" "get '$get_after', put $put_after"
    fi
}

# The client's GET, N times in a row: the median time in ms (what the guest's service answers
# takes, seen by a client on the LAN).
get_median_ms() { # N
    local i
    for i in $(seq "$1"); do
        client curl -s -o /dev/null -w '%{time_total}\n' --max-time 60 http://10.98.1.2/kv/lab
    done | sort -n | awk '{ t[NR] = $1 } END { printf "%.0f", 1000 * t[int((NR + 1) / 2)] }'
}

run_late_case() { # host A alone first; host B joins later by a live copy, then A dies
    local c=b-late t0 put get ping_ok=no port=$((20000 + RANDOM % 20000))
    stamp "case $c: fresh LUN record, host A booting, host B booting but holding its xl create"
    fresh_lun $c
    boot a "socket,id=ft,listen=127.0.0.1:$port"
    sleep 1
    boot b "socket,id=ft,connect=127.0.0.1:$port" lab.create=wait
    t0=$(date +%s)
    if ! wait_for a 'running the VM alone' 400; then
        fail "${c}_primary_without_backup_runs_alone" "no decision on host A within 400 s: $(grep -a 'LAB: a: ' "$work/serial-a.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: host A runs alone, $(($(date +%s) - t0)) s after boot"
    client ping -c 3 -W 20 10.98.1.2 > "$work/ping-$c.log" 2>&1 && ping_ok=yes
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "value-$c" http://10.98.1.2/kv/lab)
    get=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    echo "client: alone: ping $ping_ok, put $put, get $get"
    local alone_ms protected_ms
    alone_ms=$(get_median_ms 7)
    if seen_in a 'LAB: a: .*claiming the VM: test-and-set epoch 1 -> 2' && seen_in a 'LAB: a: .*test-and-set won' &&
       seen_in a 'LAB: a: .*running the VM alone in epoch 2' && [ "$put" = 201 ] && [ "$get" = "value-$c" ] &&
       [ $ping_ok = yes ]; then
        pass "${c}_primary_without_backup_runs_alone"
    else
        fail "${c}_primary_without_backup_runs_alone" "put $put, get '$get', ping $ping_ok; $(grep -a 'LAB: a: .*\(backup\|test-and-set\|alone\|failed\)' "$work/serial-a.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
    fi

    # Host B comes: its backup takes a copy of the domain A has been running all along.
    stamp "case $c: go-ahead for host B's xl create, $(($(date +%s) - t0)) s after host A booted"
    python3 -m http.server 7999 --bind 10.98.1.1 --directory "$work/lun" > /dev/null 2>&1 &
    local go=$!
    pids+=($go)
    local tb=$(date +%s)
    if wait_for a 'LAB: a: .*live copy to host 2 done' 300; then
        stamp "case $c: host A protected by host B's copy, $(($(date +%s) - tb)) s after the go-ahead"
    fi
    kill $go 2> /dev/null
    local put2 get2 get_after size
    put2=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "joined-$c" http://10.98.1.2/kv/lab)
    echo "client: protected: put $put2"
    protected_ms=$(get_median_ms 7)
    # What output commit adds to a request: its reply waits for the backup's ack of the log
    # before it (under QEMU TCG, two emulated hosts on one machine: indicative only).
    stamp "case $c: the client's GET, median of 7: ${alone_ms} ms alone, ${protected_ms} ms protected"
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 90
    stamp "case $c: power cut of host A (SIGKILL to its QEMU)"
    local cut=$(date +%s)
    kill -KILL $qemu_a
    wait $qemu_a 2> /dev/null
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    stamp "case $c: the client's GET answered $(($(date +%s) - cut)) s after the cut: '$get_after'"
    wait_for b "LAB: b: status: *last failover: " 30
    timeline $c a 8 b 10
    echo "xenft status on host B at the end:"
    grep -a "LAB: b: status: " "$work/serial-b.log" | tr -d '\r' | tail -n 5 | sed 's/^/    /'
    kill -KILL $qemu_b $istgt_pid 2> /dev/null
    wait $qemu_b $istgt_pid 2> /dev/null
    if seen_in a "LAB: a: .*live copy to host 2 done: sent at exit [1-9][0-9]*: [1-9][0-9]* pages in [1-9][0-9]* rounds, then [0-9]* pages and [1-9][0-9]* disk blocks in the final pause" &&
       seen_in b "LAB: b: .*live copy taken at the primary's exit [1-9]"; then
        pass "${c}_late_backup_takes_a_live_copy_of_the_running_primary"
    else
        fail "${c}_late_backup_takes_a_live_copy_of_the_running_primary" "$(line_in a 'live copy to') / $(line_in b 'live copy') $(line_in b 'cannot go on')"
    fi
    local matched
    matched=$(grep -ao '[0-9][0-9]* digests matched\|digests: *[0-9][0-9]* matched' "$work/serial-b.log" | tail -n 1 | tr -dc '0-9')
    if [ "${matched:-0}" -ge 1 ] && ! seen_in b 'cannot go on'; then
        pass "${c}_late_backup_digests_match_the_primary"
    else
        fail "${c}_late_backup_digests_match_the_primary" "${matched:-no} digests matched; $(line_in b 'cannot go on')"
    fi
    if [[ $put2 =~ ^20[14]$ ]] && seen_in b 'LAB: b: .*suspected (primary silent): test-and-set epoch 2 -> 3' &&
       seen_in b 'LAB: b: .*test-and-set won' &&
       seen_in b 'LAB: b: .*went live at exit [1-9]' && [ "$get_after" = "joined-$c" ]; then
        pass "${c}_late_backup_goes_live_with_the_acknowledged_put"
    else
        fail "${c}_late_backup_goes_live_with_the_acknowledged_put" "put $put2, get after the cut '$get_after'; $(grep -a 'LAB: b: .*\(test-and-set\|live\|failed\)' "$work/serial-b.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
    fi
}

# The administrator's K-th action (default 1) on HOST, booted with lab.act=...: the build
# machine serves /act-HOST-K (port 7999) until HOST reports it on its serial line ("WHAT: exit
# N ...").
administrator() { # CASE HOST WHAT [K]
    local go dir=$work/go-$1-$2
    # Only this host's word: a file left by an earlier run would set the other host off too.
    rm -rf "$dir" && mkdir -p "$dir" && touch "$dir/act-$2-${4:-1}"
    python3 -m http.server 7999 --bind 10.98.1.1 --directory "$dir" > /dev/null 2>&1 &
    go=$!
    pids+=($go)
    stamp "case $1: go-ahead for $3 on host ${2^^}"
    wait_for "$2" "LAB: $2: $3: " 60 && stamp "case $1: $(line_in "$2" "$3: " | sed "s/.*LAB: $2: //")"
    kill $go 2> /dev/null
}

# Boots a pair for a case without a power cut, with host A's and host B's extra kernel
# parameters, and has the client PUT value-CASE once B has the live copy (put and get: the
# caller's). LINK "udp" joins the hosts by UDP (udp_link; its ports in pa and pb), else by a
# TCP socket; "udp-b-first" boots host B first and host A once B's xenftd read the record (so B
# joins knowing an epoch that A's claim then moves on). Fails the case and returns 1 when no
# copy comes.
protected_pair() { # CASE A-PARAMETERS B-PARAMETERS [LINK]
    local c=$1 t0 port=$((20000 + RANDOM % 20000))
    fresh_lun $c
    if [ "${4:-}" = udp-b-first ]; then
        pa=$((20000 + RANDOM % 20000)) pb=$((40000 + RANDOM % 20000))
        boot b "$(udp_link b $pa $pb)" "$3"
        wait_for b 'LAB: b: .*joining the pair in epoch 1' 300
        boot a "$(udp_link a $pa $pb)" "$2"
    elif [ "${4:-}" = udp ]; then
        pa=$((20000 + RANDOM % 20000)) pb=$((40000 + RANDOM % 20000))
        boot a "$(udp_link a $pa $pb)" "$2"
        boot b "$(udp_link b $pa $pb)" "$3"
    else
        boot a "socket,id=ft,listen=127.0.0.1:$port" "$2"
        sleep 1
        boot b "socket,id=ft,connect=127.0.0.1:$port" "$3"
    fi
    t0=$(date +%s)
    if ! wait_for a 'LAB: a: .*live copy to host 2 done' 400; then
        fail "${c}_backup_protects_the_vm" "no live copy within 400 s: $(grep -a 'LAB: ' "$work/serial-a.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return 1
    fi
    stamp "case $c: host B has the live copy, $(($(date +%s) - t0)) s after boot"
    # The first exchange waits for the guest's ARP reply, held by the output gate until the
    # backup acks: ping allows it 60 s (curl's connect would fail after ARP's 3 s).
    client ping -c 1 -w 60 10.98.1.2 > "$work/ping-$c.log" 2>&1
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "value-$c" http://10.98.1.2/kv/lab)
    get=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    echo "client: put $put, get $get"
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 60
}

# A case's timeline: the last N1 lines of host FIRST, then N2 of host SECOND.
timeline() { # CASE FIRST N1 SECOND N2
    echo "timeline of case $1 (host ${2^^}, then host ${4^^}):"
    grep -a "LAB: $2: " "$work/serial-$2.log" | tr -d '\r' | grep -v 'cannot connect\|status: \|domains: ' | sed 's/^/    /' | tail -n "$3"
    grep -a "LAB: $4: " "$work/serial-$4.log" | tr -d '\r' | grep -v 'cannot connect\|status: \|domains: ' | sed 's/^/    /' | tail -n "$5"
}

# Ends a case of protected_pair: prints its timeline, powers both hosts and the LUN's target
# off, and checks the client's PUT.
close_pair() { # CASE FIRST N1 SECOND N2
    local c=$1
    timeline "$@"
    kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
    wait $qemu_a $qemu_b $istgt_pid 2> /dev/null
    if [ "$put" = 201 ] && [ "$get" = "value-$c" ]; then
        pass "${c}_client_uses_the_protected_guest"
    else
        fail "${c}_client_uses_the_protected_guest" "put $put, get '$get'"
    fi
}

run_operator_case() { # the administrator moves the VM to host B with `xenft failover` there
    local c=operator put get
    stamp "case $c: fresh LUN record, both hosts booting (host B runs xenft failover on the lab's word)"
    protected_pair $c lab.act=recreate lab.act=failover || return
    local asked=$(date +%s)
    administrator $c b "xenft failover"
    local get_after put_after arbiter
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    put_after=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "after-$c" http://10.98.1.2/kv/lab)
    stamp "case $c: $(($(date +%s) - asked)) s after the go-ahead: client GET '$get_after', PUT $put_after"
    # Host A, deposed, pauses its domain and joins host B as its backup: a live copy into it.
    wait_for a "LAB: a: .*live copy taken at the primary's exit" 120
    wait_for b 'LAB: b: status: *last failover: ' 30
    arbiter=$("$xenft_cli" arbiter show --url "$lun" --vm 1 2>&1 | head -n 1)
    echo "arbitration record: $arbiter"
    # The administrator starts the VM again on A while B runs it: A joins as the backup again.
    administrator $c a "xl recreate"
    wait_for a "LAB: a: .*joining as its backup" 60
    local copies_before=$(grep -ac "LAB: a: .*live copy taken at the primary's exit" "$work/serial-a.log")
    local t_re=$(date +%s)
    while [ "$(grep -ac "LAB: a: .*live copy taken at the primary's exit" "$work/serial-a.log")" -le "$copies_before" ] &&
          [ $(($(date +%s) - t_re)) -lt 120 ]; do sleep 2; done
    local get_last
    get_last=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    close_pair $c b 8 a 8
    if seen_in b 'LAB: b: xenft failover: exit 0 failover requested' &&
       seen_in b 'LAB: b: .*suspected (operator failover): test-and-set epoch 2 -> 3' &&
       seen_in b 'LAB: b: .*test-and-set won' && seen_in b 'LAB: b: .*went live at exit [1-9]' &&
       seen_in b 'LAB: b: status: *last failover: .*went live in epoch 3 (operator failover)'; then
        pass "${c}_xenft_failover_makes_the_backup_go_live"
    else
        fail "${c}_xenft_failover_makes_the_backup_go_live" "$(grep -a 'LAB: b: .*\(xenft failover\|operator\|test-and-set\|cannot\)' "$work/serial-b.log" | tr -d '\r' | head -n 4 | tr '\n' ' ')"
    fi
    if [ "$get_after" = "value-$c" ] && [[ $put_after =~ ^20[14]$ ]]; then
        pass "${c}_acknowledged_put_survives_and_service_goes_on"
    else
        fail "${c}_acknowledged_put_survives_and_service_goes_on" "get '$get_after', put $put_after"
    fi
    if seen_in a 'LAB: a: .*was deposed' && seen_in a 'LAB: a: .*domain [0-9]* paused: it must not run on here' &&
       seen_in a 'LAB: a: .*joining the pair again as a backup' &&
       seen_in a "LAB: a: .*live copy taken at the primary's exit [1-9]" && [[ $arbiter == *"epoch 3, owner host 2"* ]]; then
        pass "${c}_deposed_primary_pauses_and_becomes_the_backup"
    else
        fail "${c}_deposed_primary_pauses_and_becomes_the_backup" "$(grep -a 'LAB: a: .*\(deposed\|paused\|joining\|live copy taken\)' "$work/serial-a.log" | tr -d '\r' | head -n 4 | tr '\n' ' '); arbiter '$arbiter'"
    fi
    if seen_in a 'LAB: a: xl recreate: exit 0' && seen_in a 'LAB: a: .*owned by host 2: that host runs the VM; joining as its backup' &&
       [ "$(grep -ac "LAB: a: .*live copy taken at the primary's exit" "$work/serial-a.log")" -ge 2 ] &&
       [ "$get_last" = "after-$c" ]; then
        pass "${c}_the_vm_created_again_on_the_former_primary_joins_as_the_backup"
    else
        fail "${c}_the_vm_created_again_on_the_former_primary_joins_as_the_backup" "$(line_in a 'xl recreate'); $(line_in a 'joining as its backup'); $(grep -ac "live copy taken" "$work/serial-a.log") copies taken; client GET '$get_last'"
    fi
}

run_end_case() { # the administrator ends the protected VM on host A: host B must not take it over
    local c=a-ends put get
    stamp "case $c: fresh LUN record, both hosts booting (host A ends the VM with xl destroy on the lab's word)"
    protected_pair $c lab.act=destroy "" || return
    local ended=$(date +%s)
    administrator $c a "xl destroy ft-guest"
    wait_for b "LAB: b: .*the pair ends" 60
    # Longer than the failover time (after-ms 2000) and the status period: a backup that took
    # the silence for a failure would have run the test-and-set and gone live by now.
    wait_for b 'LAB: b: domains: Domain-0 [^a-z]*$' 40
    sleep 10
    local get_after arbiter
    get_after=$(client curl -s -w ' %{http_code}' --max-time 10 http://10.98.1.2/kv/lab)
    arbiter=$("$xenft_cli" arbiter show --url "$lun" --vm 1 2>&1 | head -n 1)
    stamp "case $c: $(($(date +%s) - ended)) s after the go-ahead: client GET '$get_after'; arbitration record: $arbiter"
    close_pair $c a 6 b 6
    if seen_in a 'LAB: a: xl destroy ft-guest: exit 0' &&
       seen_in a 'LAB: a: .*the pair ends: .*the backup \(acknowledged the end\|ended with it\) and does not take the VM over'; then
        pass "${c}_primary_tells_the_backup_that_the_vm_ended"
    else
        fail "${c}_primary_tells_the_backup_that_the_vm_ended" "$(line_in a 'xl destroy ft-guest') / $(line_in a 'the VM ended\|pair ends')"
    fi
    # (Epoch 2: host A's claim of the VM at the start; nobody took it over.)
    if seen_in b "LAB: b: .*the pair ends: the primary's VM ended at log entry [1-9]" &&
       seen_in b 'LAB: b: .*domain [0-9]* powered off' &&
       ! seen_in b 'test-and-set' && ! seen_in b 'went live' && [[ $arbiter == *"epoch 2,"* ]] &&
       [[ $get_after != *value-$c* ]]; then
        pass "${c}_backup_ends_with_the_vm_and_does_not_take_it_over"
    else
        fail "${c}_backup_ends_with_the_vm_and_does_not_take_it_over" "$(line_in b "pair ends") $(line_in b 'powered off') $(line_in b 'test-and-set') $(line_in b 'went live'); arbiter '$arbiter'; client GET '$get_after'"
    fi
    # A's xenftd is stopped by xl destroy's hook (or exits by itself if it saw the end first).
    if seen_in a 'LAB: a: .*\(xenftd exits\|stopping on signal\)' && seen_in b 'LAB: b: .*xenftd exits' &&
       seen_in b 'LAB: b: domains: Domain-0 [^a-z]*$'; then
        pass "${c}_both_xenftd_exit_and_the_backup_domain_is_removed"
    else
        fail "${c}_both_xenftd_exit_and_the_backup_domain_is_removed" "$(line_in a 'xenftd exits\|stopping on signal') / $(line_in b 'xenftd exits') / $(grep -a 'LAB: b: domains: ' "$work/serial-b.log" | tr -d '\r' | tail -n 1)"
    fi
}

run_copy_death_case() { # host B's power cut while it takes its live copy: A keeps serving, unheld
    local c=backup-dies-in-copy t0 cut put get answered i port=$((20000 + RANDOM % 20000))
    stamp "case $c: fresh LUN record, both hosts booting (host B's QEMU is killed as host A starts the live copy)"
    fresh_lun $c
    boot a "socket,id=ft,listen=127.0.0.1:$port"
    sleep 1
    boot b "socket,id=ft,connect=127.0.0.1:$port"
    t0=$(date +%s)
    for i in $(seq 4000); do
        seen_in a 'LAB: a: .*starting a live copy to' && break
        sleep 0.1
    done
    if ! seen_in a 'LAB: a: .*starting a live copy to'; then
        fail "${c}_the_copy_fails_and_the_primary_keeps_the_vm" "no live copy started within 400 s: $(grep -a 'LAB: a: ' "$work/serial-a.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    kill -KILL $qemu_b
    cut=$(date +%s.%N)
    wait $qemu_b 2> /dev/null
    stamp "case $c: power cut of host B as host A starts the live copy, $(($(date +%s) - t0)) s after boot"
    # The guest's first exchange waits for nothing but the guest itself: no backup holds it.
    client ping -c 1 -w 60 10.98.1.2 > "$work/ping-$c.log" 2>&1
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary "value-$c" http://10.98.1.2/kv/lab)
    answered=$(awk -v a="$(date +%s.%N)" -v b="$cut" 'BEGIN { printf "%.1f", a - b }')
    get=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    stamp "case $c: the client's PUT ($put) answered $answered s after the cut; GET '$get'"
    wait_for a 'LAB: a: .*live copy to host 2 failed' 30
    wait_for a 'LAB: a: status: *role: ' 15
    echo "timeline of case $c (host A):"
    grep -a "LAB: a: " "$work/serial-a.log" | tr -d '\r' | grep -v 'cannot connect\|status: \|domains: ' | sed 's/^/    /' | tail -n 8
    kill -KILL $qemu_a $istgt_pid 2> /dev/null
    wait $qemu_a $istgt_pid 2> /dev/null
    if seen_in a 'LAB: a: .*live copy to host 2 failed' && ! seen_in a 'halting the VM' && ! seen_in a 'suspected' &&
       seen_in a 'LAB: a: status: *role: *primary (alone), epoch 2'; then
        pass "${c}_the_copy_fails_and_the_primary_keeps_the_vm"
    else
        fail "${c}_the_copy_fails_and_the_primary_keeps_the_vm" "$(line_in a 'live copy to host 2') $(line_in a 'suspected\|halting') $(grep -a 'LAB: a: status: *role' "$work/serial-a.log" | tr -d '\r' | tail -n 1)"
    fi
    # A few of the detector's timeouts (after-ms 2000) at most: before, the primary held its
    # outputs for backup-wait-ms (120 s) when its backup died in the copy.
    if [ "$put" = 201 ] && [ "$get" = "value-$c" ] && awk -v s="$answered" 'BEGIN { exit !(s < 10) }'; then
        pass "${c}_the_client_is_served_within_a_few_detector_timeouts"
    else
        fail "${c}_the_client_is_served_within_a_few_detector_timeouts" "PUT $put answered $answered s after the cut, GET '$get'; $(tail -n 1 "$work/ping-$c.log")"
    fi
}

copies_on() { grep -ac "$2" "$work/serial-$1.log" 2> /dev/null; } # HOST PATTERN: lines so far
wait_count() { # HOST PATTERN N SECONDS: until PATTERN's lines reach N
    local i
    for i in $(seq "$4"); do
        [ "$(copies_on "$1" "$2")" -ge "$3" ] && return 0
        sleep 1
    done
    return 1
}

run_diverge_case() { # a byte of the backup's memory flipped; then unprotect and protect on A
    local c=backup-diverges put get done_line="LAB: a: .*live copy to host 2 done"
    stamp "case $c: fresh LUN record, both hosts booting (a byte of host B's guest memory is flipped on the lab's word)"
    protected_pair $c lab.act=unprotect+protect lab.act=poke || return
    administrator $c b poke
    # The flipped page is one no write logged: the digests' sweep finds it (2 MiB a digest,
    # the 32 MiB guest in 16). Digests come at the guest's device writes, so the client keeps
    # using the service meanwhile, as clients would.
    local poked=$(date +%s) load
    ( while :; do client curl -s -o /dev/null --max-time 5 http://10.98.1.2/kv/lab; sleep 0.5; done ) &
    load=$!
    pids+=($load)
    wait_for b 'LAB: b: .*the VM cannot go on' 120
    kill $load 2> /dev/null
    stamp "case $c: the backup found the flipped byte $(($(date +%s) - poked)) s after the poke"
    wait_for a 'LAB: a: .*running alone in epoch 3' 30
    stamp "case $c: $(line_in b 'the VM cannot go on' | sed 's/.*: the VM cannot go on: /backup: /')"
    # B's xenftd joins again: a second copy, into the same domain.
    wait_count a "$done_line" 2 120
    local get_after put_after
    get_after=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    put_after=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary "after-$c" http://10.98.1.2/kv/lab)
    wait_for b 'LAB: b: status: *last halt: ' 30
    wait_for a 'LAB: a: status: *last failover: ' 30
    # unprotect on A: B, deposed, waits for a copy A does not give until protect.
    administrator $c a "xenft unprotect" 1
    wait_for a 'LAB: a: .*running alone in epoch 4' 30
    local copies_unprotected=$(copies_on a "$done_line")
    sleep 15
    local copies_later=$(copies_on a "$done_line") get_unprotected
    get_unprotected=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    administrator $c a "xenft protect" 2
    wait_count a "$done_line" $((copies_later + 1)) 120
    local put_last get_last
    put_last=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary "last-$c" http://10.98.1.2/kv/lab)
    get_last=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    stamp "case $c: after protect: PUT $put_last, GET '$get_last'"
    close_pair $c a 14 b 10
    if seen_in b 'LAB: b: poke: exit 0' &&
       seen_in b "LAB: b: .*the VM cannot go on: .*state digest [0-9a-f]* differs from the primary's" &&
       seen_in b 'LAB: b: .*halting the VM for good: .*differs' &&
       seen_in b 'LAB: b: status: *last halt: .*differs from the primary'; then
        pass "${c}_the_backup_says_it_diverged_and_stops"
    else
        fail "${c}_the_backup_says_it_diverged_and_stops" "$(line_in b 'poke') $(line_in b 'cannot go on') $(line_in b 'last halt')"
    fi
    if seen_in a 'LAB: a: .*suspected (backup host 2 says its VM halted): test-and-set epoch 2 -> 3' &&
       seen_in a 'LAB: a: .*running alone in epoch 3 (held outputs released)' &&
       seen_in a 'LAB: a: status: *last failover: .*continued alone in epoch 3 (backup host 2 says its VM halted)' &&
       [ "$get_after" = "value-$c" ] && [[ $put_after =~ ^20[14]$ ]]; then
        pass "${c}_the_primary_continues_alone_after_its_test_and_set"
    else
        fail "${c}_the_primary_continues_alone_after_its_test_and_set" "$(line_in a 'suspected') / $(line_in a 'running alone in epoch 3') / $(grep -a 'LAB: a: status: *last failover' "$work/serial-a.log" | tr -d '\r' | tail -n 1); GET '$get_after', PUT $put_after"
    fi
    if [ "$(copies_on b "LAB: b: .*live copy taken at the primary's exit")" -ge 2 ] && seen_in b 'LAB: b: .*joining the pair again as a backup'; then
        pass "${c}_the_backup_joins_again_by_a_live_copy"
    else
        fail "${c}_the_backup_joins_again_by_a_live_copy" "$(copies_on b "live copy taken") copies taken on B; $(line_in b 'joining the pair again')"
    fi
    if seen_in a 'LAB: a: xenft unprotect: exit 0' && seen_in a 'LAB: a: .*(operator unprotect): test-and-set epoch 3 -> 4' &&
       [ "$copies_later" = "$copies_unprotected" ] && [ "$get_unprotected" = "after-$c" ] &&
       seen_in a 'LAB: a: xenft protect: exit 0' && [ "$(copies_on a "$done_line")" -gt "$copies_later" ] &&
       [[ $put_last =~ ^20[14]$ ]] && [ "$get_last" = "last-$c" ]; then
        pass "${c}_unprotect_and_protect_on_xen"
    else
        fail "${c}_unprotect_and_protect_on_xen" "$(line_in a 'xenft unprotect') / $(line_in a 'operator unprotect'); copies $copies_unprotected -> $copies_later while unprotected, $(copies_on a "$done_line") after protect; GET '$get_unprotected', PUT $put_last, GET '$get_last'"
    fi
}

# The hosts' link (channel and heartbeats) as UDP between the two QEMUs, so either host can
# be booted again, and the link cut and healed with nftables on the build machine.
udp_link() { # HOST PORT-A PORT-B: the netdev of HOST's end
    [ "$1" = a ] && echo "socket,id=ft,udp=127.0.0.1:$3,localaddr=127.0.0.1:$2" ||
        echo "socket,id=ft,udp=127.0.0.1:$2,localaddr=127.0.0.1:$3"
}
link_cut() { # PORT-A PORT-B
    nft add table inet xftlablink && nft add chain inet xftlablink in '{ type filter hook input priority 0; }' &&
        nft add rule inet xftlablink in udp dport "{ $1, $2 }" drop
}
link_heal() { nft delete table inet xftlablink 2> /dev/null; }
storage_cut() {
    nft add table inet xftlabstore && nft add chain inet xftlabstore in '{ type filter hook input priority 0; }' &&
        nft add rule inet xftlabstore in ip daddr 10.98.1.1 tcp dport 3260 drop
}
storage_heal() { nft delete table inet xftlabstore 2> /dev/null; }

# Boots a pair on a UDP link (protected_pair; LINK udp or udp-b-first), and waits for both
# hosts' status to show a digest. Sets pa, pb, put, get.
udp_pair() { # CASE [LINK]
    protected_pair "$1" "" "" "${2:-udp}" || return 1
    wait_for a 'LAB: a: status: *digests: *[1-9][0-9]* taken' 60
}

# A 1 MiB download in the background into WORKDIR/download-NAME (its pid in dl_pid), returning
# once 128 KiB arrived.
download_start() { # NAME
    rm -f "$work/download-$1"
    client curl -s -v --max-time 900 -o "$work/download-$1" http://10.98.1.2/stream/1048576 2> "$work/curl-$1.log" &
    dl_pid=$!
    wait_downloaded $1 131072
}
# Waits for the download (in this shell: curl is its child); sets verdict to "ok" if it ended
# well, intact, on one TCP connection, else to what went wrong.
download_verdict() { # NAME
    wait $dl_pid 2> /dev/null
    local rc=$? expected got
    expected=$(seq -f %015.0f 0 65536 | head -c 1048576 | sha256sum | cut -c1-64)
    got=$(sha256sum < "$work/download-$1" | cut -c1-64)
    if [ $rc -eq 0 ] && [ "$got" = "$expected" ] && [ "$(grep -c 'Connected to' "$work/curl-$1.log")" = 1 ]; then
        verdict=ok
    else
        verdict="curl exit $rc, $(stat -c %s "$work/download-$1" 2> /dev/null) bytes, sha256 ${got:0:16}, $(grep -c 'Connected to' "$work/curl-$1.log") connections"
    fi
}

# Which host runs the VM in EPOCH by its own word ("went live" or "running alone"), one per line.
runners_in() { # EPOCH
    local h
    for h in a b; do
        grep -aq "LAB: $h: .*\\(going live in epoch $1\\|went live in epoch $1\\|running alone in epoch $1 \\|running the VM alone in epoch $1\\)" \
            "$work/serial-$h.log" 2> /dev/null && echo $h
    done
}

run_link_cut_case() { # the hosts' link cut, storage reachable: one runs the VM; healed: the other is its backup
    local c=link-cut put get pa pb dl_pid
    stamp "case $c: fresh LUN record, both hosts booting on a UDP link"
    udp_pair $c || return
    download_start $c
    local before_a before_b
    before_a=$(grep -ac "LAB: a: .*live copy taken" "$work/serial-a.log") before_b=$(grep -ac "LAB: b: .*live copy taken" "$work/serial-b.log")
    stamp "case $c: the hosts' link cut (channel and heartbeats), $(stat -c %s "$work/download-$c") bytes downloaded"
    link_cut $pa $pb || fail "${c}_link_cut" "nft failed"
    local verdict
    download_verdict $c
    stamp "case $c: download: $verdict"
    local get_after put_after
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    put_after=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "after-$c" http://10.98.1.2/kv/lab)
    local runners winner loser
    runners=$(runners_in 3 | tr '\n' ' ')
    winner=${runners%% *}
    [ "$winner" = a ] && loser=b || loser=a
    stamp "case $c: runs the VM in epoch 3: ${runners:-nobody}; client GET '$get_after', PUT $put_after"
    wait_for $loser "LAB: $loser: .*joining the pair again as a backup" 60
    sleep 5
    stamp "case $c: the link healed"
    link_heal
    local before_loser
    [ "$loser" = a ] && before_loser=$before_a || before_loser=$before_b
    wait_count $loser "LAB: $loser: .*live copy taken" $((before_loser + 1)) 120
    local get_last
    get_last=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    close_pair $c $winner 8 $loser 8
    if [ "$(echo $runners | wc -w)" = 1 ] && seen_in $loser "LAB: $loser: .*halting the VM for good" &&
       ! seen_in $loser "LAB: $loser: .*\\(going live in epoch 3\\|running alone in epoch 3\\)"; then
        pass "${c}_exactly_one_host_runs_the_vm"
    else
        fail "${c}_exactly_one_host_runs_the_vm" "epoch 3 run by: '${runners}'; $(line_in $loser 'halting the VM')"
    fi
    if [ "$verdict" = ok ] && [ "$get_after" = "value-$c" ] && [[ $put_after =~ ^20[14]$ ]] && [ "$get_last" = "after-$c" ]; then
        pass "${c}_the_client_sees_no_gap_and_no_rollback"
    else
        fail "${c}_the_client_sees_no_gap_and_no_rollback" "download: $verdict; GET '$get_after', PUT $put_after, GET at the end '$get_last'"
    fi
    if [ "$(grep -ac "LAB: $loser: .*live copy taken" "$work/serial-$loser.log")" -gt "$before_loser" ]; then
        pass "${c}_healed_the_other_host_is_its_backup_again"
    else
        fail "${c}_healed_the_other_host_is_its_backup_again" "$(line_in $loser 'joining the pair again') $(grep -a "LAB: $loser: .*live copy" "$work/serial-$loser.log" | tr -d '\r' | tail -n 1)"
    fi
}

run_storage_cut_case() { # the link and the storage cut: nobody goes live, outputs held; storage back: one runs it
    local c=storage-cut put get pa pb
    stamp "case $c: fresh LUN record, both hosts booting on a UDP link"
    udp_pair $c || return
    stamp "case $c: the hosts' link and their storage cut"
    storage_cut || fail "${c}_storage_cut" "nft failed"
    link_cut $pa $pb || fail "${c}_link_cut" "nft failed"
    sleep 8 # four of the detector's timeouts: both suspect, neither can reach the record
    local held rc
    held=$(client curl -s -w ' %{http_code}' --max-time 10 http://10.98.1.2/kv/lab)
    rc=$?
    local undecided_a undecided_b early
    undecided_a=$(grep -ac 'LAB: a: .*test-and-set unknown' "$work/serial-a.log")
    undecided_b=$(grep -ac 'LAB: b: .*test-and-set unknown' "$work/serial-b.log")
    early=$(runners_in 3 | tr '\n' ' ')
    stamp "case $c: during the cut: client GET exit $rc '$held'; unknown test-and-sets: A $undecided_a, B $undecided_b; epoch 3 run by: '${early}'"
    storage_heal
    stamp "case $c: storage back"
    local t=$(date +%s) runners
    while [ -z "$(runners_in 3)" ] && [ $(($(date +%s) - t)) -lt 60 ]; do sleep 1; done
    runners=$(runners_in 3 | tr '\n' ' ')
    local get_after
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    stamp "case $c: runs the VM in epoch 3: '${runners}' ($(($(date +%s) - t)) s after storage came back); client GET '$get_after'"
    link_heal
    local winner=${runners%% *} loser
    [ "$winner" = a ] && loser=b || loser=a
    wait_for $loser "LAB: $loser: .*joining the pair again as a backup" 60
    close_pair $c $winner 8 $loser 8
    if [ -z "$early" ] && [ "$undecided_a" -ge 1 ] && [ "$undecided_b" -ge 1 ]; then
        pass "${c}_nobody_goes_live_while_the_record_cannot_be_reached"
    else
        fail "${c}_nobody_goes_live_while_the_record_cannot_be_reached" "epoch 3 run by '${early}' during the cut; unknown test-and-sets: A $undecided_a, B $undecided_b"
    fi
    if [ $rc -ne 0 ] && [[ $held != *value-$c* ]]; then
        pass "${c}_outputs_are_held_while_undecided"
    else
        fail "${c}_outputs_are_held_while_undecided" "the client's GET during the cut: exit $rc '$held'"
    fi
    if [ "$(echo $runners | wc -w)" = 1 ] && [ "$get_after" = "value-$c" ] && seen_in $loser "LAB: $loser: .*halting the VM for good"; then
        pass "${c}_storage_back_exactly_one_runs_it_with_nothing_lost"
    else
        fail "${c}_storage_back_exactly_one_runs_it_with_nothing_lost" "epoch 3 run by '${runners}'; GET '$get_after'; $(line_in $loser 'halting the VM')"
    fi
}

run_reprotect_case() { # A's power cut, B live; A booted again joins B; then B's power cut: A live with everything
    local c=reprotect-after-failover put get pa pb dl_pid
    stamp "case $c: fresh LUN record, host B booting first on a UDP link, then host A"
    udp_pair $c udp-b-first || return
    stamp "case $c: power cut of host A"
    kill -KILL $qemu_a
    wait $qemu_a 2> /dev/null
    wait_for b 'LAB: b: .*went live at exit' 60
    local put2
    put2=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "second-$c" http://10.98.1.2/kv/lab)
    stamp "case $c: host B live; the client's PUT there: $put2; host A booted again"
    local t0=$(date +%s)
    boot a "$(udp_link a $pa $pb)"
    if ! wait_for a "LAB: a: .*live copy taken at the primary's exit" 400; then
        fail "${c}_the_host_booted_again_becomes_the_backup_by_a_live_copy" "no copy within 400 s: $(grep -a 'LAB: a: ' "$work/serial-a.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: host A has B's live copy, $(($(date +%s) - t0)) s after it booted"
    wait_for a 'LAB: a: status: *digests: *[1-9][0-9]* matched' 90
    local put3
    put3=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "third-$c" http://10.98.1.2/kv/lab)
    download_start $c
    stamp "case $c: the client's PUT with A as the backup: $put3; power cut of host B with $(stat -c %s "$work/download-$c") bytes downloaded"
    kill -KILL $qemu_b
    wait $qemu_b 2> /dev/null
    local verdict get_last
    download_verdict $c
    get_last=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    stamp "case $c: download: $verdict; GET '$get_last'"
    wait_for a 'LAB: a: status: *last failover: ' 30
    timeline $c b 8 a 10
    kill -KILL $qemu_a $istgt_pid 2> /dev/null
    wait $qemu_a $istgt_pid 2> /dev/null
    # B joined knowing epoch 1 (owned by nobody), took A's copy in epoch 2 and, A gone, moves the
    # record on from epoch 2 as it is now (owned by A).
    if seen_in b 'LAB: b: .*joining the pair in epoch 1' && seen_in b 'LAB: b: .*taking its copy in epoch 2' &&
       seen_in b 'LAB: b: .*test-and-set epoch 2 -> 3' &&
       seen_in b 'LAB: b: .*went live at exit [1-9].*recorded again' && [ "$put2" = 204 -o "$put2" = 201 ] &&
       seen_in a 'LAB: a: .*owned by host 2: that host runs the VM; joining as its backup' &&
       seen_in a "LAB: a: .*live copy taken at the primary's exit [1-9]" &&
       seen_in a 'LAB: a: status: *digests: *[1-9][0-9]* matched'; then
        pass "${c}_the_host_booted_again_becomes_the_backup_by_a_live_copy"
    else
        fail "${c}_the_host_booted_again_becomes_the_backup_by_a_live_copy" "$(line_in b 'went live at exit') / $(line_in a 'joining as its backup') / $(line_in a 'live copy taken') / $(grep -a 'LAB: a: status: *digests' "$work/serial-a.log" | tr -d '\r' | tail -n 1)"
    fi
    if seen_in a 'LAB: a: .*test-and-set epoch 3 -> 4' && seen_in a 'LAB: a: .*went live at exit [1-9]' &&
       [ "$verdict" = ok ] && [[ $put3 =~ ^20[14]$ ]] && [ "$get_last" = "third-$c" ]; then
        pass "${c}_the_former_primary_goes_live_with_everything_acknowledged"
    else
        fail "${c}_the_former_primary_goes_live_with_everything_acknowledged" "$(line_in a 'test-and-set epoch 3') / $(line_in a 'went live'); download: $verdict; PUT $put3, GET '$get_last'"
    fi
}

# The Linux guest's service as the client sees it, in one "figures" line: the median of nine
# GETs of a small page, the rate of a 4 MiB download (its first 4 MiB of big.bin), wrk's
# requests/s (10 s, 4 connections), and a CPU-bound process: the guest's /cgi-bin/spin counts
# in user space without an exit for about 4 s (calibrated once by a short count), and a GET
# sent 0.5 s after the spin's first line arrived (the count had begun) waits for it
# (interrupts are injected at synchronous exits only); how long the count went on after the
# GET was sent says whether it did. The count must stay far below the backup's 30 s
# stuck-replay limit (the backup replays it too).
spin_count=
linux_figures() { # CASE WHAT
    local url=http://10.98.1.2 get_ms rate rps spin_s during_s began sent ended i
    get_ms=$(for i in 1 2 3 4 5 6 7 8 9; do client curl -s -o /dev/null -m 30 -w '%{time_total}\n' $url/index.html; done |
        sort -n | sed -n 5p | awk '{ printf "%.0f", $1 * 1000 }')
    rate=$(client curl -s -o /dev/null -m 120 -r 0-4194303 -w '%{speed_download} %{size_download}' $url/big.bin |
        awk '$2 == 4194304 { printf "%.0f", $1 / 1000 }')
    rps=$(client wrk -t1 -c4 -d10s $url/index.html 2> /dev/null | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
    if [ -z "$spin_count" ]; then
        spin_s=$(client curl -s -o /dev/null -m 60 -w '%{time_total}' "$url/cgi-bin/spin?1000000")
        spin_count=$(awk -v t="${spin_s:-0}" 'BEGIN { n = t > 0 ? int(1000000 * 4 / t) : 1000000; print (n > 20000000 ? 20000000 : n) }')
    fi
    rm -f "$work/spin-body-$1"
    client curl -sN -m 60 -o "$work/spin-body-$1" -w '%{time_total}' "$url/cgi-bin/spin?$spin_count" > "$work/spin-$1" &
    local spin_pid=$!
    for i in $(seq 300); do
        grep -q '^counting to ' "$work/spin-body-$1" 2> /dev/null && break
        sleep 0.1
    done
    began=$(date +%s.%N)
    sleep 0.5
    sent=$(date +%s.%N)
    during_s=$(client curl -s -o /dev/null -m 60 -w '%{time_total}' $url/index.html)
    wait $spin_pid
    ended=$(date +%s.%N)
    spin_s=$(cat "$work/spin-$1")
    local after
    after=$(grep -q '^counting to ' "$work/spin-body-$1" 2> /dev/null &&
        awk -v b="$began" -v s="$sent" -v e="$ended" 'BEGIN { printf "%.2f s after its first line (the GET %.2f s after it)", e - b, s - b }')
    stamp "case $1: figures: $2: GET median ${get_ms:-none} ms, 4 MiB download at ${rate:-no} KB/s, wrk ${rps:-no} requests/s, a CPU-bound count of $spin_count in ${spin_s:-no} s, a GET sent 0.5 s into it answered in ${during_s:-no} s; the count ended ${after:-without its first line}"
}

# The primary's log rate on the wire while the guest idles (HOST, its status lines every 10 s
# from the last SAMPLES): the median, in Mbit/s.
idle_log_rate() { # HOST SAMPLES
    tr -d '\r' < "$work/serial-$1.log" | grep -a "LAB: $1: status: *log rate: " | tail -n "$2" |
        sed 's/.*log rate: *\([0-9.]*\) Mbit.*/\1/' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
# What the backup HOST had received and not replayed yet, as its last status said.
replay_backlog() { # HOST
    tr -d '\r' < "$work/serial-$1.log" | grep -a "LAB: $1: status: *lag: .*not replayed" | tail -n 1 |
        sed 's/.*lag: *\([0-9]*\) entries.*/\1/'
}
# Whether the backup HOST replays in step before a power cut: its last status says "backup
# (replaying)" and its replay's exit moved on between its last two status samples (10 s
# apart). A backup halted, stuck or still joining would lose the VM at the cut: that is its own
# failure, not the failover's. Up to SECONDS.
backup_in_step() { # HOST SECONDS
    local _ role exits
    for _ in $(seq "$2"); do
        role=$(grep -a "LAB: $1: status: *role: " "$work/serial-$1.log" | tr -d '\r' | tail -n 1)
        exits=($(grep -a "LAB: $1: status: *replay: *at exit " "$work/serial-$1.log" | tail -n 2 | sed 's/.*at exit \([0-9]*\).*/\1/'))
        [[ $role == *"backup (replaying)"* ]] && [ ${#exits[@]} = 2 ] && [ "${exits[1]}" -gt "${exits[0]}" ] && return 0
        sleep 1
    done
    return 1
}
# Passes CASE's check that HOST replays in step before its peer's power cut, or fails it, ends
# the case's hosts and returns 1.
check_in_step_before_cut() { # CASE HOST
    if backup_in_step "$2" 60; then
        pass "${1}_${2}_replays_in_step_before_the_cut"
        return 0
    fi
    fail "${1}_${2}_replays_in_step_before_the_cut" "$(grep -a "LAB: $2: status: *\(role\|replay\):" "$work/serial-$2.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ' | cut -c1-600)"
    kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
    wait $qemu_a $qemu_b $istgt_pid 2> /dev/null
    return 1
}
# After a power cut at CUT_MS (ms since the epoch): GETs of the small page every 0.2 s, the
# first answer's time after the cut into FILE (the failover as a client sees it, the
# detector's 2 s included).
first_answer_after() { # CUT_MS FILE
    local _
    for _ in $(seq 600); do
        if client curl -s -o /dev/null -m 1 http://10.98.1.2/index.html; then
            echo $(($(date +%s%3N) - $1)) > "$2"
            return
        fi
        sleep 0.2
    done
}

# The figures' baseline (bench/xen_linux_pair_bench.sh): the same Linux, the same kernel
# command line and root filesystem, on host A with xenft off (no ft=, no xenftd, Xen's FT mode
# off; xenft-xen-dm serves the same device models), and the same client measurements as
# linux-a-dies. Not in CI: it checks no protection, only that the baseline was measured.
run_linux_off_case() {
    local c=linux-unprotected url=http://10.98.1.2 served=no
    stamp "case $c: host A alone boots the same Linux with xenft off (no ft=, no xenftd: xenft-xen-dm serves its devices)"
    boot_drives=(-drive "file=$work/guest-root.img,if=virtio,format=raw,snapshot=on")
    boot a "$(udp_link a $((20000 + RANDOM % 20000)) $((40000 + RANDOM % 20000)))" lab.guest=linux-off
    boot_drives=()
    local t0=$(date +%s)
    for _ in $(seq 240); do
        client curl -s -o "$work/index-$c.html" --max-time 5 $url/index.html && { served=yes; break; }
        sleep 5
    done
    if [ $served = yes ] && seen_in a 'LAB: a: xenft off: domain [1-9][0-9]* (no ft=) served by xenft-xen-dm'; then
        stamp "case $c: the Linux serves $(($(date +%s) - t0)) s after the host's boot with xenft off: $(cat "$work/index-$c.html")"
        pass "${c}_the_same_linux_serves_with_xenft_off"
        linux_figures $c "unprotected (xenft off, the same host)"
    else
        fail "${c}_the_same_linux_serves_with_xenft_off" "served: $served; $(recent_lines a 6)"
    fi
    kill -KILL $qemu_a 2> /dev/null
    wait $qemu_a 2> /dev/null
}

# An unmodified Linux protected by xenftd on two hosts, its disk on the shared LUN: A boots
# Debian's kernel, B joins by a live copy of the running Linux, A's power cut mid-download;
# then the reverse: A booted again joins B by a live copy, B's power cut mid-download.
run_linux_case() {
    local c=linux-a-dies url=http://10.98.1.2 pa pb
    stamp "case $c: fresh LUN record and the guest's root filesystem on the LUN, both hosts booting (Debian's kernel on the plain virtual PC)"
    fresh_lun $c "$work/guest-root.img"
    pa=$((20000 + RANDOM % 20000)) pb=$((40000 + RANDOM % 20000))
    boot a "$(udp_link a $pa $pb)" lab.guest=linux
    boot b "$(udp_link b $pa $pb)" lab.guest=linux
    local t0=$(date +%s)
    # The guest's outputs leave once B has its copy and acks the log: the first answer says both.
    local served=no
    for _ in $(seq 240); do
        client curl -s -o "$work/index-$c.html" --max-time 5 $url/index.html && { served=yes; break; }
        sleep 5
    done
    if [ $served = no ]; then
        fail "${c}_protected_linux_serves" "no answer from the guest within 20 min: $(grep -a 'LAB: [ab]: ' "$work"/serial-[ab].log | tr -d '\r' | grep -v status | tail -n 4 | tr '\n' ' ' | cut -c1-600)"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        wait $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: the protected Linux serves $(($(date +%s) - t0)) s after the hosts' boot: $(cat "$work/index-$c.html"); $(line_in a 'live copy to host 2 done' | sed 's/.*live copy to host 2 done: //')"
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 60
    # The idle guest's log on the wire: three of A's status samples, 10 s apart, no client.
    sleep 32
    stamp "case $c: figures: idle log $(idle_log_rate a 3) Mbit/s on the wire (the median of A's last three status samples, the guest idle)"
    linux_figures $c "protected (B acks the log)"
    head -c 20000 /dev/urandom > "$work/put-$c.bin"
    local put
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -T "$work/put-$c.bin" $url/put/put.bin)
    # 16 MiB of big.bin (its first part), cut at 1 MiB, as in the reverse direction below.
    local part=$((16 << 20))
    rm -f "$work/download-$c"
    client curl -s -v --max-time 600 --limit-rate 400k -r 0-$((part - 1)) -o "$work/download-$c" $url/big.bin 2> "$work/curl-$c.log" &
    local curl_pid=$!
    wait_downloaded $c 1048576
    wait_for a 'LAB: a: status: *digests: *[1-9][0-9]* taken' 60
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 60
    check_in_step_before_cut $c b || return
    stamp "case $c: PUT $put; power cut of host A with $(stat -c %s "$work/download-$c" 2> /dev/null) bytes downloaded, B's replay $(replay_backlog b) entries behind"
    local cut=$(date +%s) cut_ms=$(date +%s%3N)
    kill -KILL $qemu_a
    rm -f "$work/first-answer-$c"
    first_answer_after $cut_ms "$work/first-answer-$c" &
    local poll_pid=$!
    wait $qemu_a $curl_pid 2> /dev/null
    local curl_rc=$?
    wait $poll_pid 2> /dev/null
    stamp "case $c: download ended (curl exit $curl_rc), $(($(date +%s) - cut)) s after the cut"
    stamp "case $c: figures: first answer $(cat "$work/first-answer-$c" 2> /dev/null || echo none) ms after the cut"

    local expected got connections
    expected=$(debugfs -R 'cat /srv/www/big.bin' "$work/guest-root.img" 2> /dev/null | head -c $part | sha256sum | cut -c1-64)
    got=$(sha256sum < "$work/download-$c" | cut -c1-64)
    connections=$(grep -c 'Connected to' "$work/curl-$c.log")
    wait_for b 'LAB: b: status: *last failover: ' 60
    # The guest's console (A's xenftd's console log, from the boot, before B's copy): Linux's
    # 8250 driver took xenft's UART as ttyS0 on IRQ 4 and user space wrote to it through the
    # driver's interrupts, recorded and replayed like any other device's.
    if seen_in a 'LAB: a: guest: .*xenft-guest: user space writes to its console, ttyS0; uart:16450 port:000003F8 irq:4 tx:[1-9]'; then
        pass "${c}_the_guest_takes_the_uart_as_its_console_on_irq_4"
    else
        fail "${c}_the_guest_takes_the_uart_as_its_console_on_irq_4" "$(line_in a 'guest: .*user space writes') / $(line_in a 'guest: .*console \[ttyS0\]')"
    fi
    if seen_in b 'LAB: b: .*live copy taken at the primary.s exit [1-9]' && seen_in b 'LAB: b: status: *digests: *[1-9][0-9]* matched'; then
        pass "${c}_the_backup_takes_a_live_copy_of_the_running_linux_and_matches_digests"
    else
        fail "${c}_the_backup_takes_a_live_copy_of_the_running_linux_and_matches_digests" "$(line_in b 'live copy taken') / $(grep -a 'LAB: b: status: *digests' "$work/serial-b.log" | tr -d '\r' | tail -n 1)"
    fi
    if [ $curl_rc -eq 0 ] && [ -n "$expected" ] && [ "$got" = "$expected" ] && [ "$connections" = 1 ] &&
       seen_in b 'LAB: b: .*test-and-set epoch 2 -> 3' && seen_in b 'LAB: b: .*went live at exit [1-9].*disk reads replayed'; then
        pass "${c}_b_goes_live_and_the_download_finishes_intact_on_one_connection"
    else
        fail "${c}_b_goes_live_and_the_download_finishes_intact_on_one_connection" "curl exit $curl_rc, $(stat -c %s "$work/download-$c" 2> /dev/null) bytes, sha256 ${got:0:16} (expected ${expected:0:16}), $connections connections; $(line_in b 'test-and-set epoch 2') / $(line_in b 'went live'); B's last lines: $(recent_lines b 8)"
    fi
    linux_figures $c "alone on B after the failover (recorded, outputs not held)"
    local back
    rm -f "$work/put-back-$c.bin"
    back=$(client curl -s --max-time 120 -o "$work/put-back-$c.bin" -w '%{http_code} %{size_download} bytes in %{time_total} s' $url/put/put.bin)
    if [[ $put =~ ^20[14]$ ]] && [[ $back == 200\ * ]] && cmp -s "$work/put-$c.bin" "$work/put-back-$c.bin"; then
        pass "${c}_the_acknowledged_put_reads_back_after_the_failover"
    else
        fail "${c}_the_acknowledged_put_reads_back_after_the_failover" "PUT answered $put; the read-back: ${back:-no answer} ($(cmp "$work/put-$c.bin" "$work/put-back-$c.bin" 2>&1 | head -n 1))"
    fi

    # The reverse direction: A booted again takes B's live copy; B's power cut mid-download.
    stamp "case $c: host A booted again"
    local t1=$(date +%s)
    boot a "$(udp_link a $pa $pb)" lab.guest=linux
    if ! wait_for a "LAB: a: .*live copy taken at the primary's exit" 600; then
        fail "${c}_the_host_booted_again_becomes_the_backup_by_a_live_copy" "no copy within 600 s: $(grep -a 'LAB: a: ' "$work/serial-a.log" | tr -d '\r' | grep -v 'status\|domains' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        wait $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: host A has B's live copy, $(($(date +%s) - t1)) s after it booted; $(line_in b 'live copy to host 1 done' | sed 's/.*live copy to host 1 done: //')"
    wait_for a 'LAB: a: status: *digests: *[1-9][0-9]* matched' 120
    head -c 30000 /dev/urandom > "$work/put2-$c.bin"
    local put2
    put2=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -T "$work/put2-$c.bin" $url/put/put2.bin)
    rm -f "$work/download2-$c"
    client curl -s -v --max-time 600 --limit-rate 400k -r 0-$((part - 1)) -o "$work/download2-$c" $url/big.bin 2> "$work/curl2-$c.log" &
    curl_pid=$!
    for _ in $(seq 600); do
        [ "$(stat -c %s "$work/download2-$c" 2> /dev/null || echo 0)" -ge 1048576 ] && break
        sleep 0.5
    done
    check_in_step_before_cut $c a || return
    stamp "case $c: PUT $put2 with A as the backup; power cut of host B with $(stat -c %s "$work/download2-$c" 2> /dev/null) bytes downloaded, A's replay $(replay_backlog a) entries behind"
    cut=$(date +%s) cut_ms=$(date +%s%3N)
    kill -KILL $qemu_b
    rm -f "$work/first-answer2-$c"
    first_answer_after $cut_ms "$work/first-answer2-$c" &
    poll_pid=$!
    wait $qemu_b $curl_pid 2> /dev/null
    curl_rc=$?
    wait $poll_pid 2> /dev/null
    stamp "case $c: download ended (curl exit $curl_rc), $(($(date +%s) - cut)) s after the cut"
    stamp "case $c: figures: reverse first answer $(cat "$work/first-answer2-$c" 2> /dev/null || echo none) ms after the cut"
    expected=$(debugfs -R 'cat /srv/www/big.bin' "$work/guest-root.img" 2> /dev/null | head -c $part | sha256sum | cut -c1-64)
    got=$(sha256sum < "$work/download2-$c" | cut -c1-64)
    connections=$(grep -c 'Connected to' "$work/curl2-$c.log")
    wait_for a 'LAB: a: status: *last failover: ' 60
    local back1 back2
    rm -f "$work/put-back-$c.bin" "$work/put2-back-$c.bin"
    back1=$(client curl -s --max-time 120 -o "$work/put-back-$c.bin" -w '%{http_code}' $url/put/put.bin)
    back2=$(client curl -s --max-time 120 -o "$work/put2-back-$c.bin" -w '%{http_code}' $url/put/put2.bin)
    timeline $c b 8 a 12
    if seen_in a 'LAB: a: .*owned by host 2: that host runs the VM; joining as its backup' &&
       seen_in a "LAB: a: .*live copy taken at the primary's exit [1-9]" && seen_in a 'LAB: a: status: *digests: *[1-9][0-9]* matched'; then
        pass "${c}_host_a_booted_again_becomes_the_backup_by_a_live_copy"
    else
        fail "${c}_host_a_booted_again_becomes_the_backup_by_a_live_copy" "$(line_in a 'joining as its backup') / $(line_in a 'live copy taken') / $(grep -a 'LAB: a: status: *digests' "$work/serial-a.log" | tr -d '\r' | tail -n 1)"
    fi
    if [ $curl_rc -eq 0 ] && [ "$got" = "$expected" ] && [ "$connections" = 1 ] &&
       seen_in a 'LAB: a: .*test-and-set epoch 3 -> 4' && seen_in a 'LAB: a: .*went live at exit [1-9]' &&
       [[ $put2 =~ ^20[14]$ ]] && [ "$back1" = 200 ] && [ "$back2" = 200 ] &&
       cmp -s "$work/put-$c.bin" "$work/put-back-$c.bin" && cmp -s "$work/put2-$c.bin" "$work/put2-back-$c.bin"; then
        pass "${c}_reverse_a_goes_live_with_the_download_intact_and_both_puts"
    else
        fail "${c}_reverse_a_goes_live_with_the_download_intact_and_both_puts" "curl exit $curl_rc, $(stat -c %s "$work/download2-$c" 2> /dev/null) bytes, sha256 ${got:0:16} (expected ${expected:0:16}), $connections connections; $(line_in a 'test-and-set epoch 3') / $(line_in a 'went live'); PUT $put2, read back $back1 / $back2"
    fi
    # The guest's own poweroff ends the VM (on A, alone since B's cut): Linux writes ACPI S5,
    # xenftd has Xen shut the domain down, says why and exits; the toolstack removes the domain
    # (on_poweroff). A GET of the CGI is refused and changes nothing.
    local mark get_off post_off ended=no
    mark=$(wc -l < "$work/serial-a.log")
    get_off=$(client curl -s -o /dev/null --max-time 30 -w '%{http_code}' $url/cgi-bin/poweroff)
    post_off=$(client curl -s -d '' -o /dev/null --max-time 30 -w '%{http_code}' $url/cgi-bin/poweroff)
    for _ in $(seq 120); do
        tail -n +"$mark" "$work/serial-a.log" | grep -aq 'LAB: a: domains: Domain-0 [^a-z]*$' && { ended=yes; break; }
        sleep 1
    done
    if [ "$get_off" = 405 ] && [ "$post_off" = 200 ] && [ $ended = yes ] &&
       seen_in a 'LAB: a: guest: .*reboot: Power down' &&
       seen_in a 'LAB: a: .*the VM ended: the guest powered off (ACPI S5)' && seen_in a 'LAB: a: .*xenftd exits'; then
        pass "${c}_the_guests_own_poweroff_ends_the_vm"
    else
        fail "${c}_the_guests_own_poweroff_ends_the_vm" "GET $get_off (405 expected), POST $post_off; domain removed: $ended; $(line_in a 'guest: .*\(powering off\|Power down\)') / $(line_in a 'the VM ended') / $(line_in a 'xenftd exits'); A's last lines: $(recent_lines a 6)"
    fi
    stamp "case $c: the guest's poweroff: $(line_in a 'the VM ended' | sed 's/.*the VM ended/the VM ended/')"
    kill -KILL $qemu_a 2> /dev/null
    wait $qemu_a 2> /dev/null
    # What the hosts wrote on the shared LUN: an ext4 that is consistent once its journal is
    # replayed (as after a power cut; this one's was a clean poweroff), holding the first PUT's bytes.
    kill -KILL $istgt_pid 2> /dev/null
    wait $istgt_pid 2> /dev/null
    local fs="$work/lun-fs-$c.img" fsck_out lun_put
    dd if="$work/lun/lun0.img" of="$fs" bs=1M skip=$((guest_disk_lba * 512)) iflag=skip_bytes count=$guest_disk_mib conv=sparse status=none
    e2fsck -E journal_only -y "$fs" > "$work/fsck-$c.log" 2>&1
    fsck_out=$(e2fsck -fn "$fs" 2>&1)
    local fsck_rc=$?
    echo "$fsck_out" >> "$work/fsck-$c.log"
    debugfs -R 'cat /srv/www/put/put.bin' "$fs" > "$work/put-lun-$c.bin" 2> /dev/null
    if [ $fsck_rc -eq 0 ] && cmp -s "$work/put-$c.bin" "$work/put-lun-$c.bin"; then
        pass "${c}_the_shared_lun_holds_a_consistent_ext4_with_the_put"
    else
        fail "${c}_the_shared_lun_holds_a_consistent_ext4_with_the_put" "e2fsck -fn exit $fsck_rc: $(echo "$fsck_out" | grep -v '^Pass\|^e2fsck' | head -n 3 | tr '\n' ' '); put.bin on the LUN: $(cmp "$work/put-$c.bin" "$work/put-lun-$c.bin" 2>&1 | head -n 1)"
    fi
    rm -f "$fs"
}

# With LAB_DEBS or XENFT_DEB, what the case ran on: each host's xenft from its package (with
# LAB_DEBS Xen's too, the patched ones held, systemd booted), its configuration accepted by
# --check-config; with LAB_DEBS xenftd run by systemd as the VM's unit.
packaged_checks() { # CASE
    local c=$1 h why= name=${1}_hosts_run_xenft_from_its_package
    [ $xen_packaged = 0 ] || name=${1}_hosts_run_xen_and_xenft_from_the_packages
    for h in a b; do
        seen_in $h "LAB: $h: packages .*xenft=[0-9]" &&
            seen_in $h "LAB: $h: xenft --version: xenft [0-9].*backends: .*xen" &&
            seen_in $h "LAB: $h: check-config: .*/etc/xenft/ftguest.conf: .*: ok" &&
            { [ $xen_packaged = 0 ] ||
              { seen_in $h "LAB: $h: packages .*xen-hypervisor-4.17-amd64=[^ ]*+xenft1 .*xen-utils-4.17=[^ ]*+xenft1 " &&
                seen_in $h "LAB: $h: held: .*xen-hypervisor-4.17-amd64" && seen_in $h "LAB: $h: apt-get upgrade keeps the patched Xen" &&
                seen_in $h "LAB: $h: dom0 up: systemd"; }; } ||
            why+="host ${h^^}: $(line_in $h 'dom0 up\|FAIL xen.service') $(line_in $h 'packages') $(line_in $h 'held:') $(line_in $h 'apt-get upgrade') $(line_in $h 'xenft --version') $(line_in $h 'check-config'); "
    done
    if [ -z "$why" ]; then pass "$name"; else fail "$name" "$why"; fi
    [ $xen_packaged = 1 ] || return 0
    why=
    for h in a b; do
        seen_in $h "LAB: $h: xenftd runs as xenftd@ftguest.service (active, main pid \([0-9][0-9]*\), xenftd pid \1)" ||
            why+="host ${h^^}: $(line_in $h 'xenftd runs as') $(line_in $h 'FAIL xl create'); "
    done
    if [ -z "$why" ]; then pass "${c}_xl_create_starts_xenftd_at_ftguest_through_systemd"; else fail "${c}_xl_create_starts_xenftd_at_ftguest_through_systemd" "$why"; fi
}

for c in $cases_to_run; do
    case $c in
        b-late) run_late_case ;;
        a-ends) run_end_case ;;
        operator) run_operator_case ;;
        backup-dies-in-copy) run_copy_death_case ;;
        backup-diverges) run_diverge_case ;;
        link-cut) run_link_cut_case ;;
        storage-cut) run_storage_cut_case ;;
        reprotect-after-failover) run_reprotect_case ;;
        linux-a-dies) run_linux_case ;;
        linux-unprotected) run_linux_off_case ;;
        *) run_case "$c" ;;
    esac
    [ $xenft_packaged = 0 ] || [ $c = linux-unprotected ] || packaged_checks "$c"
    # Each case's host logs, for a failure found later (the next case boots the hosts again).
    for h in a b; do cp "$work/serial-$h.log" "$work/serial-$h-$c.log" 2> /dev/null || true; done
done
finish
