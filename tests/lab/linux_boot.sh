#!/bin/bash
# Debian's stock kernel as an HVM domU on one lab host (Xen with the series, FT off): the
# measurements behind docs/linux-guest.md, not a test of the pipeline. The dom0's own kernel
# and initrd (bookworm's linux-image-amd64) boot with `nopv` (the kernel ignores Xen: no
# hypercalls, no event channels, no pvclock) and Debian's QEMU as the device model, to a shell
# (rdinit=/bin/sh): once with the default CPU policy and once with x2APIC, TSC deadline,
# MONITOR/MWAIT, RDRAND and RDSEED masked. For each it prints the time from xl create to the
# shell and what the kernel's log says it found (APIC mode, IOAPIC, clock sources and events,
# the devices it probed), then the whole log to WORKDIR/linux-CASE.log.
#
# usage: tests/lab/linux_boot.sh [WORKDIR]     (default build/lab-linux)
# Env: XEN_WORKDIR, LAB_DOM0_TREE (as tests/lab/build.sh; the dom0 image here adds Debian's
#      qemu-system-xen), LAB_TIMEOUT_S (default 1500).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-linux}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
timeout_s=${LAB_TIMEOUT_S:-1500}
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }

[ "$(id -u)" -eq 0 ] || { echo "linux_boot: needs root" >&2; exit 1; }
stamp "building Xen and the dom0 image with QEMU (tests/lab/build.sh)"
LAB_EXTRA_PACKAGES=qemu-system-xen "$top/tests/lab/build.sh" "$work" > "$work/build.log" 2>&1 ||
    { tail -n 20 "$work/build.log"; exit 1; }
gunzip -c "$XEN_WORKDIR/stage/boot/xen.gz" > "$work/xen"

payload=$work/payload-linux
rm -rf "$payload" && mkdir -p "$payload"
cat > "$payload/run" <<'EOF'
#!/bin/sh
# Boots the dom0's kernel as an HVM guest with Debian's xl and QEMU, for each CPU policy.
say() { echo "LAB: $*"; }
kernel=$(ls /boot/vmlinuz-* | head -n 1) initrd=$(ls /boot/initrd.img-* | head -n 1)
for policy in default masked; do
    cfg=/tmp/linux-$policy.cfg
    cat > $cfg <<CFG
name = "linux-$policy"
type = "hvm"
kernel = "$kernel"
ramdisk = "$initrd"
extra = "console=ttyS0,115200 nopv rdinit=/bin/sh loglevel=7"
memory = 512
vcpus = 1
serial = "file:/tmp/serial-$policy.log"
vga = "none"
vnc = 0
sdl = 0
tsc_mode = "always_emulate"
CFG
    [ $policy = masked ] && echo 'cpuid = "host,x2apic=0,tsc-deadline=0,monitor=0,rdrand=0,rdseed=0"' >> $cfg
    t0=$(date +%s)
    if ! /usr/sbin/xl create $cfg > /tmp/create-$policy 2>&1; then
        say "$policy: FAIL xl create: $(tail -n 4 /tmp/create-$policy | tr '\n' ' ')"
        continue
    fi
    created=$(($(date +%s) - t0))
    waited=0
    until grep -q 'Run /bin/sh as init process' /tmp/serial-$policy.log 2> /dev/null || [ $waited -ge 600 ]; do
        sleep 2; waited=$((waited + 2))
    done
    if grep -q 'Run /bin/sh as init process' /tmp/serial-$policy.log; then
        say "$policy: at the shell $(($(date +%s) - t0)) s after xl create (xl create itself $created s)"
    else
        say "$policy: FAIL no shell within 600 s"
    fi
    sed "s/^/LAB: $policy: log: /" /tmp/serial-$policy.log
    /usr/sbin/xl destroy linux-$policy
done
EOF
chmod +x "$payload/run"
rm -f "$work/payload-linux.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload-linux.img" 16M

stamp "booting one Xen host under QEMU (TCG), timeout $timeout_s s"
rm -f "$work/serial.log"
. "$top/tests/lab/host.sh"
lab_host "$work" "$work/payload-linux.img" "$work/serial.log" "ro init=/sbin/lab-init"
timeout "$timeout_s" "${lab_host_cmd[@]}" > "$work/qemu.log" 2>&1
stamp "QEMU exited ($?)"
tr -d '\r' < "$work/serial.log" > "$work/console.log"
for policy in default masked; do
    grep -a "LAB: $policy: log: " "$work/console.log" | sed "s/^LAB: $policy: log: //" > "$work/linux-$policy.log"
    echo "== $policy CPU policy: $(grep -a "LAB: $policy: \(at the shell\|FAIL\)" "$work/console.log" | sed "s/LAB: $policy: //")"
    grep -a -i -E 'x2apic|ioapic|clocksource|clockevent|tsc|hpet|acpi_pm|pit|hypervisor|xen|virtio|8250|rdrand|mwait|apic' \
        "$work/linux-$policy.log" | grep -v -i 'command line' | head -n 60 | sed 's/^/    /'
done
# Exit 1 when a boot failed (its FAIL line says which).
! grep -a 'LAB: .*FAIL' "$work/console.log"
