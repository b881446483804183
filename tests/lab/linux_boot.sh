#!/bin/bash
# Debian's stock kernel as an HVM domU on one lab host (Xen with the series, FT off): the
# measurements behind docs/linux-guest.md, not a test of the pipeline. The dom0's own kernel
# and initrd (bookworm's linux-image-amd64) boot with `nopv` (the kernel ignores Xen: no
# hypercalls, no event channels, no pvclock) and Debian's QEMU as the device model, to a shell
# (rdinit=/bin/sh): once with the default CPU policy and once with x2APIC, TSC deadline,
# MONITOR/MWAIT, RDRAND and RDSEED masked. For each it prints the time from xl create to the
# shell and what the kernel's log says it found (APIC mode, IOAPIC, clock sources and events,
# the devices it probed), then the whole log to WORKDIR/linux-CASE.log. With the masked policy
# the idle kernel at its shell is then recorded for 30 s (xenft-ft-probe measure: exits, Xen's
# records by type, the log's rate); and a third boot, "recorded", is recorded from its first
# instruction to the shell (or to the first thing record mode refuses, which it names). The
# fourth, "no-qemu", is the plain virtual PC of docs/linux-guest.md: an HVM domain without QEMU
# (device_model_version = "none", hvm-patches 0010) whose only device model is xenft's
# (xenft-xen-dm), which boots the kernel directly at its 64-bit entry (xenft/engine/
# linux_image.hpp); its console is xenft's UART, through the kernel's early console.
#
# usage: tests/lab/linux_boot.sh [WORKDIR]     (default build/lab-linux)
# Env: XEN_WORKDIR, LAB_DOM0_TREE (as tests/lab/build.sh; the dom0 image here adds Debian's
#      qemu-system-xen), LAB_TIMEOUT_S (default 2400), LINUX_CASES (default
#      "default masked recorded no-qemu").
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-linux}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
timeout_s=${LAB_TIMEOUT_S:-2400}
cases=${LINUX_CASES:-default masked recorded no-qemu}
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }

[ "$(id -u)" -eq 0 ] || { echo "linux_boot: needs root" >&2; exit 1; }
stamp "building Xen and the dom0 image with QEMU (tests/lab/build.sh)"
LAB_EXTRA_PACKAGES=qemu-system-xen "$top/tests/lab/build.sh" "$work" > "$work/build.log" 2>&1 ||
    { tail -n 20 "$work/build.log"; exit 1; }
gunzip -c "$XEN_WORKDIR/stage/boot/xen.gz" > "$work/xen"

payload=$work/payload-linux
rm -rf "$payload" && mkdir -p "$payload"
echo "#!/bin/sh" > "$payload/run"
echo "cases=\"$cases\"" >> "$payload/run"
cat >> "$payload/run" <<'EOF'
# Boots the dom0's kernel as an HVM guest with Debian's xl and QEMU, for each CPU policy, and
# without QEMU on xenft's device model.
say() { echo "LAB: $*"; }
kernel=$(ls /boot/vmlinuz-* | head -n 1) initrd=$(ls /boot/initrd.img-* | head -n 1)
masked='cpuid = "host,x2apic=0,tsc-deadline=0,monitor=0,rdrand=0,rdseed=0"'
if echo "$cases" | grep -q no-qemu; then
    # xl and libxl with the series (device_model_version = "none"), hvmloader Debian's.
    cat > /tmp/linux-no-qemu.cfg <<CFG
name = "linux-no-qemu"
type = "hvm"
device_model_version = "none"
firmware = "$(ls /usr/lib/xen-4.17/boot/hvmloader)"
memory = 512
vcpus = 1
tsc_mode = "always_emulate"
$masked
CFG
    t0=$(date +%s)
    if LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl create -p /tmp/linux-no-qemu.cfg > /tmp/create-no-qemu 2>&1; then
        say "no-qemu: xl create: $(($(date +%s) - t0)) s; QEMU processes: $(pgrep -c qemu)"
        /lab/xenft-xen-dm "$(/usr/sbin/xl domid linux-no-qemu)" --memory-mb 512 --linux "$kernel" --initrd "$initrd" \
            --cmdline "earlycon=uart8250,io,0x3f8,115200 keep_bootcon console=ttyS0 nopv rdinit=/bin/sh loglevel=7" \
            --until 'Run /bin/sh as init process' --timeout-s 900 > /tmp/dm-no-qemu 2>&1
        if grep -q 'Run /bin/sh as init process' /tmp/dm-no-qemu; then
            say "no-qemu: at the shell $(($(date +%s) - t0)) s after xl create"
        else
            say "no-qemu: FAIL no shell: $(grep '^dm: ended' /tmp/dm-no-qemu)"
        fi
        grep -v '^guest: ' /tmp/dm-no-qemu | sed 's/^/LAB: no-qemu: /'
        /usr/sbin/xl dmesg | tail -n 30 | sed 's/^/LAB: no-qemu: xl dmesg: /'
        sed -n 's/^guest: /LAB: no-qemu: log: /p' /tmp/dm-no-qemu
        LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-no-qemu
    else
        say "no-qemu: FAIL xl create: $(tail -n 4 /tmp/create-no-qemu | tr '\n' ' ')"
    fi
fi
for policy in default masked recorded; do
    echo "$cases" | grep -q -w $policy || continue
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
    [ $policy != default ] && echo "$masked" >> $cfg
    t0=$(date +%s)
    paused=
    [ $policy = recorded ] && paused=-p
    if ! /usr/sbin/xl create $paused $cfg > /tmp/create-$policy 2>&1; then
        say "$policy: FAIL xl create: $(tail -n 4 /tmp/create-$policy | tr '\n' ' ')"
        continue
    fi
    created=$(($(date +%s) - t0))
    domid=$(/usr/sbin/xl domid linux-$policy)
    if [ $policy = recorded ]; then
        /lab/xenft-ft-probe measure $domid --timeout-s 900 > /tmp/measure-boot 2>&1 &
        probe=$!
        sleep 2
        /usr/sbin/xl unpause linux-$policy
    fi
    waited=0
    until grep -q 'Run /bin/sh as init process' /tmp/serial-$policy.log 2> /dev/null || [ $waited -ge 900 ] ||
        { [ $policy = recorded ] && ! kill -0 $probe 2> /dev/null; }; do
        sleep 2; waited=$((waited + 2))
    done
    if grep -q 'Run /bin/sh as init process' /tmp/serial-$policy.log; then
        say "$policy: at the shell $(($(date +%s) - t0)) s after xl create (xl create itself $created s)"
    else
        say "$policy: FAIL no shell within $waited s"
    fi
    if [ $policy = recorded ]; then
        kill -TERM $probe 2> /dev/null
        wait $probe
        sed "s/^/LAB: $policy: boot: /" /tmp/measure-boot
        /usr/sbin/xl dmesg | grep -i -E 'ft|d[0-9]+v0' | tail -n 20 | sed "s/^/LAB: $policy: xl dmesg: /"
    elif [ $policy = masked ]; then
        sleep 10 # past the boot's last messages
        /lab/xenft-ft-probe measure $domid --timeout-s 30 2>&1 | sed "s/^/LAB: $policy: idle: /"
    fi
    sed "s/^/LAB: $policy: log: /" /tmp/serial-$policy.log
    /usr/sbin/xl destroy linux-$policy
done
EOF
chmod +x "$payload/run"
cp "$work/xenft-ft-probe" "$work/xenft-xen-dm" "$payload/"
mkdir -p "$payload/xen/lib"
cp "$XEN_WORKDIR/stage/usr/sbin/xl" "$payload/xen/xl"
cp -P "$XEN_WORKDIR"/stage/usr/lib/lib*.so* "$payload/xen/lib/"
rm -f "$work/payload-linux.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload-linux.img" 96M || exit 1

stamp "booting one Xen host under QEMU (TCG), timeout $timeout_s s"
rm -f "$work/serial.log"
. "$top/tests/lab/host.sh"
lab_host "$work" "$work/payload-linux.img" "$work/serial.log" "ro init=/sbin/lab-init"
timeout "$timeout_s" "${lab_host_cmd[@]}" > "$work/qemu.log" 2>&1
stamp "QEMU exited ($?)"
tr -d '\r' < "$work/serial.log" > "$work/console.log"
for policy in $cases; do
    grep -a "LAB: $policy: log: " "$work/console.log" | sed "s/^LAB: $policy: log: //" > "$work/linux-$policy.log"
    echo "== $policy: $(grep -a "LAB: $policy: \(at the shell\|FAIL\)" "$work/console.log" | sed "s/LAB: $policy: //")"
    grep -a "LAB: $policy: " "$work/console.log" | grep -a -v "LAB: $policy: log: " | sed 's/^LAB: /    /'
    grep -a -i -E 'x2apic|ioapic|clocksource|clockevent|tsc|hpet|acpi_pm|pit|hypervisor|xen|virtio|8250|rdrand|mwait|apic' \
        "$work/linux-$policy.log" | grep -v -i 'command line' | head -n 60 | sed 's/^/    /'
done
# Exit 1 when a boot failed (its FAIL line says which).
! grep -a 'LAB: .*FAIL' "$work/console.log"
