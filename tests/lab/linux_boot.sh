#!/bin/bash
# Debian's stock kernel (the dom0's own, bookworm's linux-image-amd64) as an HVM domU on one lab
# host with Xen and xl from the series: the measurements behind docs/linux-guest.md, not a test
# of the pipeline (the page lists what each case shows). Cases: "default" and "masked", Debian's
# QEMU as device model, `nopv`, the default CPU policy and one masking x2APIC, TSC deadline,
# MONITOR, RDRAND and RDSEED, to a shell (the masked one's idle kernel then recorded for 30 s);
# "recorded", the masked boot recorded from its first instruction; "no-qemu", the plain virtual
# PC (device_model_version = "none", the kernel booted by xenft-xen-dm, its idle kernel
# recorded for 30 s); "no-qemu-recorded", that boot recorded from its first instruction. Each
# prints its time to the kernel's init and what the kernel found; WORKDIR/linux-CASE.log has
# the whole log.
#
# usage: tests/lab/linux_boot.sh [WORKDIR]     (default build/lab-linux)
# Env: XEN_WORKDIR, LAB_DOM0_TREE (as tests/lab/build.sh; the dom0 image here adds Debian's
#      qemu-system-xen), LAB_TIMEOUT_S (default 2400), LINUX_CASES (default
#      "default masked recorded no-qemu no-qemu-recorded").
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-linux}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
timeout_s=${LAB_TIMEOUT_S:-2400}
cases=${LINUX_CASES:-default masked recorded no-qemu no-qemu-recorded}
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
# The plain virtual PC: no QEMU, xenft's device model boots the kernel and serves the UART.
# recorded: FT RECORD from the first instruction (xenft-ft-probe measure) to the shell;
# otherwise the idle kernel at its shell is recorded for 30 s.
plain_pc() { # CASE recorded|unrecorded
    name=$1
    cat > /tmp/linux-$name.cfg <<CFG
name = "linux-$name"
type = "hvm"
device_model_version = "none"
firmware = "$(ls /usr/lib/xen-4.17/boot/hvmloader)"
memory = 512
vcpus = 1
tsc_mode = "always_emulate"
$masked
CFG
    # xl and libxl with the series (device_model_version = "none"), hvmloader Debian's.
    t0=$(date +%s)
    if ! LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl create -p /tmp/linux-$name.cfg > /tmp/create-$name 2>&1; then
        say "$name: FAIL xl create: $(tail -n 4 /tmp/create-$name | tr '\n' ' ')"
        return
    fi
    say "$name: xl create: $(($(date +%s) - t0)) s; QEMU processes: $(pgrep -c qemu)"
    domid=$(/usr/sbin/xl domid linux-$name)
    rm -f /tmp/go-$name
    /lab/xenft-xen-dm $domid --memory-mb 512 --linux "$kernel" --initrd "$initrd" \
        --cmdline "earlycon=uart8250,io,0x3f8,115200 keep_bootcon console=ttyS0 nopv lpj=2000000 loglevel=7 rdinit=/bin/sleep -- 3600" \
        --until 'Run /bin/sleep as init process' --linger-s 45 --unpause-after /tmp/go-$name --timeout-s 900 \
        > /tmp/dm-$name 2>&1 &
    dm=$!
    until grep -q '^dm: serving' /tmp/dm-$name || ! kill -0 $dm 2> /dev/null; do sleep 1; done
    if [ $2 = recorded ]; then
        /lab/xenft-ft-probe measure $domid --timeout-s 900 > /tmp/measure-$name 2>&1 &
        probe=$!
        until grep -q 'records for' /tmp/measure-$name || ! kill -0 $probe 2> /dev/null; do sleep 1; done
    fi
    t0=$(date +%s)
    touch /tmp/go-$name
    until grep -q '^dm: the console shows' /tmp/dm-$name || ! kill -0 $dm 2> /dev/null; do sleep 1; done
    if grep -q '^dm: the console shows' /tmp/dm-$name; then
        say "$name: at its init $(($(date +%s) - t0)) s after the unpause"
    else
        say "$name: FAIL no shell: $(grep '^dm: ended' /tmp/dm-$name)"
    fi
    if [ $2 = recorded ]; then
        kill -TERM $probe 2> /dev/null
        wait $probe
        sed "s/^/LAB: $name: boot: /" /tmp/measure-$name
    elif kill -0 $dm 2> /dev/null; then
        sleep 10 # past the boot's last messages
        /lab/xenft-ft-probe measure $domid --timeout-s 30 2>&1 | sed "s/^/LAB: $name: idle: /"
    fi
    wait $dm
    grep -v '^guest: ' /tmp/dm-$name | sed "s/^/LAB: $name: /"
    /usr/sbin/xl dmesg | grep -v 'HVM.*\(save\|restore\):' | tail -n 20 | sed "s/^/LAB: $name: xl dmesg: /"
    sed -n "s/^guest: /LAB: $name: log: /p" /tmp/dm-$name
    LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-$name
}
for c in no-qemu no-qemu-recorded; do
    case " $cases " in *" $c "*) ;; *) continue ;; esac
    if [ $c = no-qemu ]; then plain_pc $c unrecorded; else plain_pc $c recorded; fi
done
for policy in default masked recorded; do
    case " $cases " in *" $policy "*) ;; *) continue ;; esac
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
    limit=900
    [ $policy = recorded ] && limit=400
    until grep -q 'Run /bin/sh as init process' /tmp/serial-$policy.log 2> /dev/null || [ $waited -ge $limit ] ||
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
    echo "== $policy: $(grep -a "LAB: $policy: \(at the shell\|at its init\|FAIL\)" "$work/console.log" | sed "s/LAB: $policy: //")"
    grep -a "LAB: $policy: " "$work/console.log" | grep -a -v "LAB: $policy: log: " | sed 's/^LAB: /    /'
    grep -a -i -E 'x2apic|ioapic|clocksource|clockevent|tsc|hpet|acpi_pm|pit|hypervisor|xen|virtio|8250|rdrand|mwait|apic' \
        "$work/linux-$policy.log" | grep -v -i 'command line' | head -n 60 | sed 's/^/    /'
done
# Exit 1 when a boot failed (its FAIL line says which).
! grep -a 'LAB: .*FAIL' "$work/console.log"
