#!/bin/bash
# Debian's stock kernel (the dom0's own, bookworm's linux-image-amd64) as an HVM domU on one lab
# host with Xen and xl from the series: the measurements behind docs/linux-guest.md, not a test
# of the pipeline (the page lists what each case shows). Cases: "default" and "masked", Debian's
# QEMU as device model, `nopv`, the default CPU policy and one masking x2APIC, TSC deadline,
# MONITOR, RDRAND and RDSEED, to a shell (the masked one's idle kernel then recorded for 30 s);
# "recorded", the masked boot recorded from its first instruction; "no-qemu", the plain virtual
# PC (device_model_version = "none", the kernel booted by xenft-xen-dm, its idle kernel
# recorded for 30 s); "no-qemu-recorded", that boot recorded from its first instruction;
# "no-qemu-pair", that boot protected from its first instruction (one domain records, another
# replays it; at init the recording one is destroyed and the backup must go live). The plain
# PC has xenft's ACPI tables, a virtio NIC and disk (the "-pic" cases: no tables, so virtual
# wire mode on the 8259 and no virtio devices). Each
# prints its time to the kernel's init and what the kernel found; WORKDIR/linux-CASE.log has
# the whole log. no-qemu-http-pair is also a test (CI's "Xen Linux lab" stage): its checks go
# to WORKDIR/lab_linux.cases as PASS/FAIL lines, and the script ends with
# "lab linux: N passed, N failed".
#
# usage: tests/lab/linux_boot.sh [WORKDIR]     (default build/lab-linux)
# Env: XEN_WORKDIR, LAB_DOM0_TREE (as tests/lab/build.sh; the dom0 image here adds Debian's
#      qemu-system-xen), LAB_TIMEOUT_S (default 2400), LINUX_CASES (default
#      "default masked recorded no-qemu no-qemu-recorded no-qemu-pair"; also no-qemu-pic and
#      no-qemu-pair-pic, no-qemu-http-pair: lighttpd protected through a failover, and
#      no-qemu-diverge-pair: one logged value changed, the divergence reported).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-linux}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
timeout_s=${LAB_TIMEOUT_S:-2400}
cases=${LINUX_CASES:-default masked recorded no-qemu no-qemu-recorded no-qemu-pair}
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }

checks=$work/lab_linux.cases
: > "$checks"
rm -f "${checks%.cases}.trs"
pass() { echo "PASS $1" | tee -a "$checks"; }
fail() { echo "FAIL $1: $2" | tee -a "$checks"; }
finish() {
    stamp "lab linux: $(grep -c '^PASS' "$checks") passed, $(grep -c '^FAIL' "$checks") failed in $(($(date +%s) - start)) s"
    # For tests/summarize.py: the harness result beside the cases.
    local result=PASS
    grep -q '^FAIL' "$checks" && result=FAIL
    printf ':test-result: %s\n' $result > "${checks%.cases}.trs"
    [ $result = PASS ]
    exit
}

[ "$(id -u)" -eq 0 ] || { fail lab_linux "needs root (debootstrap, mke2fs -d, QEMU's TAPs)"; finish; }
# Debian's QEMU in the dom0 only for the cases that run it (an apt-get into a copy of the tree).
qemu_packages=
for c in default masked recorded; do
    case " $cases " in *" $c "*) qemu_packages=qemu-system-xen ;; esac
done
stamp "building Xen and the dom0 image${qemu_packages:+ with QEMU} (tests/lab/build.sh)"
LAB_EXTRA_PACKAGES=$qemu_packages "$top/tests/lab/build.sh" "$work" > "$work/build.log" 2>&1 ||
    { tail -n 20 "$work/build.log"; fail lab_linux_build "$(tail -n 1 "$work/build.log")"; finish; }
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
# The plain PC's kernel: its console on xenft's UART (earlycon until the 8250 driver takes it
# as ttyS0); init is a shell from the dom0's initrd that loads the virtio modules the
# ACPI tables call for (udev would, from their LNRO0005 alias), mounts the virtio disk, says so
# in the kernel's log and sleeps. lpj: calibrate_delay() spins on jiffies with no exit;
# noapictimer: so would the local APIC timer's calibration against the HPET (the HPET's
# one-shot timer is the clock event instead, still tickless).
boot_script='export PATH=/usr/sbin:/usr/bin:/sbin:/bin; mkdir -p /proc /sys /dev /mnt; mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; for m in virtio_mmio virtio_blk virtio_net ext4; do modprobe $m; done; sleep 2; echo xenft-lab: interfaces $(ls /sys/class/net) > /dev/kmsg; mount -t ext4 /dev/vda /mnt; exec sleep 3600'
cmdline="earlycon=uart8250,io,0x3f8,115200 console=ttyS0 nopv lpj=2000000 randomize_kstack_offset=off noapictimer loglevel=7 rdinit=/usr/bin/sh -- -c \"$boot_script\""
# A TAP and an ext4 image for a domain's virtio-net and virtio-blk: NAME
devices_for() {
    modprobe tun 2> /dev/null
    ip tuntap add dev xftl-$1 mode tap 2> /dev/null; ip link set xftl-$1 up
    truncate -s 64M /tmp/vda-$1.img && mkfs.ext4 -q -F /tmp/vda-$1.img || say "$1: FAIL no ext4 image for its disk"
}
# The plain virtual PC: no QEMU, xenft's device model boots the kernel and serves the UART.
# recorded: FT RECORD from the first instruction (xenft-ft-probe measure) to the shell;
# otherwise the idle kernel at its shell is recorded for 30 s.
plain_pc() { # CASE recorded|unrecorded yes|no (ACPI tables and virtio devices)
    name=$1 acpi=$3
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
    devices_for $name
    marker='EXT4-fs (vda): mounted'
    [ $acpi = no ] && marker='Run /usr/bin/sh as init process'
    /lab/xenft-xen-dm $domid --memory-mb 512 --linux "$kernel" --initrd "$initrd" --cmdline "$cmdline" --acpi $acpi \
        --tap xftl-$name --disk /tmp/vda-$name.img \
        --until "$marker" --linger-s 60 --unpause-after /tmp/go-$name --timeout-s 900 \
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
# The plain PC protected from its first instruction: two domains boot the same kernel, one
# records, the other replays it (xenft-xen-pair, one process); once both are at init the
# recording one is destroyed and the backup must go live and keep running.
# Two paused plain PCs of 256 MiB, linux-pair-p and linux-pair-b; sets p and b to their IDs.
create_pair() { # CASE
    for r in p b; do
        cat > /tmp/linux-pair-$r.cfg <<CFG
name = "linux-pair-$r"
type = "hvm"
device_model_version = "none"
firmware = "$(ls /usr/lib/xen-4.17/boot/hvmloader)"
memory = 256
vcpus = 1
tsc_mode = "always_emulate"
$masked
CFG
        if ! LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl create -p /tmp/linux-pair-$r.cfg > /tmp/create-pair-$r 2>&1; then
            say "$1: FAIL xl create: $(tail -n 4 /tmp/create-pair-$r | tr '\n' ' ')"
            return 1
        fi
    done
    p=$(/usr/sbin/xl domid linux-pair-p) b=$(/usr/sbin/xl domid linux-pair-b)
}
plain_pc_pair() { # CASE yes|no (ACPI tables and virtio devices)
    name=$1 acpi=$2
    create_pair $name || return
    devices_for pair-p
    devices_for pair-b
    # Both replicas' init has run (with ACPI: the virtio disk is mounted). Not a text of the
    # command line, which the console shows too.
    marker='EXT4-fs (vda): mounted'
    [ $acpi = no ] && marker='Run /usr/bin/sh as init process'
    t0=$(date +%s)
    /lab/xenft-xen-pair $p $b --memory-mb 256 --linux "$kernel" --initrd "$initrd" --cmdline "$cmdline" --acpi $acpi \
        --tap-primary xftl-pair-p --tap-backup xftl-pair-b --disk-primary /tmp/vda-pair-p.img \
        --disk-backup /tmp/vda-pair-b.img --until "$marker" --timeout-s 1200 > /tmp/pair-linux 2>&1 &
    pair=$!
    until grep -q '^pair: .*both consoles show' /tmp/pair-linux || ! kill -0 $pair 2> /dev/null; do sleep 1; done
    if grep -q '^pair: .*both consoles show' /tmp/pair-linux; then
        say "$name: both replicas at init $(($(date +%s) - t0)) s after the start"
        sleep 20 # the idle kernel replayed for a while
        t1=$(date +%s)
        LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-pair-p
        until grep -q '^pair: .*went live' /tmp/pair-linux || ! kill -0 $pair 2> /dev/null; do sleep 1; done
        sleep 15 # the live backup runs on
        if grep -q '^pair: .*went live' /tmp/pair-linux && kill -0 $pair 2> /dev/null &&
            /usr/sbin/xl list linux-pair-b > /dev/null 2>&1 &&
            ! /usr/sbin/xl list linux-pair-b | grep -q ' -*c-*$\|--c--\|crashed'; then
            say "$name: the backup went live $(($(date +%s) - t1 - 15)) s after the destroy and runs"
        else
            say "$name: FAIL the backup did not go live or stopped: $(grep '^pair: ' /tmp/pair-linux | tail -n 2 | tr '\n' ' ')"
        fi
        kill -TERM $pair 2> /dev/null
    else
        say "$name: FAIL not both at init: $(grep '^pair: ' /tmp/pair-linux | tail -n 2 | tr '\n' ' ')"
    fi
    wait $pair
    grep -v '^guest: ' /tmp/pair-linux | sed "s/^/LAB: $name: /"
    /usr/sbin/xl dmesg | grep -v 'HVM.*\(save\|restore\):' | tail -n 20 | sed "s/^/LAB: $name: xl dmesg: /"
    sed -n "s/^guest: /LAB: $name: log: /p" /tmp/pair-linux
    for r in p b; do LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-pair-$r 2> /dev/null; done
}
# A real service protected: Debian's kernel and initrd boot the root filesystem of
# tests/lab/guest_rootfs.sh from the virtio disk (Debian's initramfs: udev loads the virtio
# modules from the ACPI tables' devices), its init starts lighttpd; dom0 is the client, on a
# bridge with both replicas' TAPs. The client reads a page, PUTs a file, starts a 32 MiB
# download at a limited rate, and the recording replica is destroyed mid-download: the download
# must complete on the same connection with the right SHA-256 and the PUT must read back.
# The service's GET latency (median of 9) and a 4 MiB ranged download's rate: taken while
# protected and again on the backup once it is live (unprotected), on the same guest, for the
# figures (docs/linux-guest.md).
http_figures() { # WHAT
    get_ms=$(for i in 1 2 3 4 5 6 7 8 9; do curl -s -o /dev/null -m 30 -w '%{time_total}\n' $url/index.html; done |
        sort -n | sed -n 5p | awk '{ printf "%.0f", $1 * 1000 }')
    rate=$(curl -s -o /dev/null -m 120 -r 0-4194303 -w '%{speed_download} %{size_download}' $url/big.bin |
        awk '$2 == 4194304 { printf "%.0f", $1 / 1000 }')
    say "$name: figures: $1: GET median ${get_ms:-none} ms, 4 MiB download at ${rate:-no} KB/s"
}
http_pair() {
    name=no-qemu-http-pair
    mkdir -p /guest && mount /dev/vdc /guest || { say "$name: FAIL no guest disks (/dev/vdc)"; return; }
    create_pair $name || return
    modprobe tun 2> /dev/null; modprobe bridge 2> /dev/null
    ip link add xftbr-l type bridge && ip addr add 10.99.0.1/24 dev xftbr-l && ip link set xftbr-l up
    for r in p b; do
        ip tuntap add dev xftl-h$r mode tap && ip link set xftl-h$r master xftbr-l && ip link set xftl-h$r up
    done
    t0=$(date +%s)
    /lab/xenft-xen-pair $p $b --memory-mb 256 --linux "$kernel" --initrd "$initrd" \
        --cmdline "earlycon=uart8250,io,0x3f8,115200 console=ttyS0 nopv lpj=2000000 randomize_kstack_offset=off loglevel=6 net.ifnames=0 root=/dev/vda rw init=/sbin/xenft-guest-init xenft.ip=10.99.0.2/24" \
        --tap-primary xftl-hp --tap-backup xftl-hb --disk-primary /guest/vda-p.img --disk-backup /guest/vda-b.img \
        --until 'xenft-guest: lighttpd serving' --timeout-s 1500 > /tmp/pair-http 2>&1 &
    pair=$!
    until grep -q '^pair: .*both consoles show' /tmp/pair-http || ! kill -0 $pair 2> /dev/null; do sleep 1; done
    if ! grep -q '^pair: .*both consoles show' /tmp/pair-http; then
        say "$name: FAIL the service did not start: $(grep '^pair: ' /tmp/pair-http | tail -n 2 | tr '\n' ' ')"
    else
        say "$name: lighttpd serving on both replicas $(($(date +%s) - t0)) s after the start"
        url=http://10.99.0.2
        t1=$(date +%s%N)
        if curl -s -m 60 -o /tmp/index.html $url/index.html; then
            say "$name: GET /index.html in $((($(date +%s%N) - t1) / 1000000)) ms: $(cat /tmp/index.html)"
        else
            say "$name: FAIL GET /index.html"
        fi
        http_figures protected
        head -c 20000 /dev/urandom > /tmp/put.bin
        if curl -s -m 60 -f -T /tmp/put.bin $url/put/put.bin; then say "$name: PUT /put/put.bin acknowledged"
        else say "$name: FAIL PUT /put/put.bin"; fi
        curl -s -m 900 --limit-rate 200k -o /tmp/big.bin -w '%{http_code} %{size_download} %{num_connects}\n' \
            $url/big.bin > /tmp/curl-big 2>&1 &
        client=$!
        sleep 20 # mid-download
        t2=$(date +%s%N)
        LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-pair-p
        say "$name: recording replica destroyed at $(stat -c %s /tmp/big.bin 2> /dev/null) bytes downloaded"
        wait $client
        say "$name: download ended $((($(date +%s%N) - t2) / 1000000)) ms after the destroy: $(cat /tmp/curl-big)"
        want=$(sed -n 's/ \+big.bin$//p' /guest/guest-files.sha256) got=$(sha256sum /tmp/big.bin | cut -d' ' -f1)
        if [ -n "$want" ] && [ "$want" = "$got" ]; then say "$name: the download's SHA-256 is right ($got)"
        else say "$name: FAIL the download's SHA-256 is $got, not $want"; fi
        if curl -s -m 60 -f -o /tmp/put-back.bin $url/put/put.bin && cmp -s /tmp/put.bin /tmp/put-back.bin; then
            say "$name: the acknowledged PUT reads back after the failover"
        else
            say "$name: FAIL the PUT does not read back after the failover"
        fi
        http_figures "unprotected (the backup live)"
        kill -TERM $pair 2> /dev/null
    fi
    wait $pair
    grep -v '^guest: ' /tmp/pair-http | sed "s/^/LAB: $name: /"
    sed -n "s/^guest: /LAB: $name: log: /p" /tmp/pair-http
    for r in p b; do LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-pair-$r 2> /dev/null; done
}
case " $cases " in *" no-qemu-http-pair "*) http_pair ;; esac
# A corrupted log is reported by name, never replayed silently wrong: the same protected boot
# with one logged TSC value changed on its way to the backup (a bit worth about 16 ms of guest
# time, early in the boot). The guest's time then differs, and with it what it writes (the
# log's timestamps): the next state digest, or Xen's replay, must stop the pair and say where.
diverge_pair() {
    name=no-qemu-diverge-pair
    create_pair $name || return
    devices_for pair-p
    devices_for pair-b
    t0=$(date +%s)
    /lab/xenft-xen-pair $p $b --memory-mb 256 --linux "$kernel" --initrd "$initrd" --cmdline "$cmdline" --acpi yes \
        --tap-primary xftl-pair-p --tap-backup xftl-pair-b --disk-primary /tmp/vda-pair-p.img \
        --disk-backup /tmp/vda-pair-b.img --corrupt-tsc 1000 --timeout-s 300 > /tmp/pair-diverge 2>&1
    say "$name: the pair program exited $? after $(($(date +%s) - t0)) s"
    grep -v '^guest: ' /tmp/pair-diverge | sed "s/^/LAB: $name: /"
    /usr/sbin/xl dmesg | grep 'FT replay diverged' | tail -n 3 | sed "s/^/LAB: $name: xl dmesg: /"
    for r in p b; do LD_LIBRARY_PATH=/lab/xen/lib /lab/xen/xl destroy linux-pair-$r 2> /dev/null; done
}
case " $cases " in *" no-qemu-diverge-pair "*) diverge_pair ;; esac
case " $cases " in *" no-qemu-pair "*) plain_pc_pair no-qemu-pair yes ;; esac
case " $cases " in *" no-qemu-pair-pic "*) plain_pc_pair no-qemu-pair-pic no ;; esac
for c in no-qemu no-qemu-pic no-qemu-recorded; do
    case " $cases " in *" $c "*) ;; *) continue ;; esac
    case $c in
        no-qemu) plain_pc $c unrecorded yes ;;
        no-qemu-pic) plain_pc $c unrecorded no ;;
        no-qemu-recorded) plain_pc $c recorded yes ;;
    esac
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
cp "$work/xenft-ft-probe" "$work/xenft-xen-dm" "$work/xenft-xen-pair" "$payload/"
mkdir -p "$payload/xen/lib"
cp "$XEN_WORKDIR/stage/usr/sbin/xl" "$payload/xen/xl"
cp -P "$XEN_WORKDIR"/stage/usr/lib/lib*.so* "$payload/xen/lib/"
rm -f "$work/payload-linux.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload-linux.img" 96M || { fail lab_linux_payload "mke2fs failed"; finish; }
guest_disks=()
case " $cases " in *" no-qemu-http-pair "*)
    stamp "the guest's root filesystem (tests/lab/guest_rootfs.sh)"
    "$top/tests/lab/guest_rootfs.sh" "$work" || { fail lab_linux_guest_rootfs "tests/lab/guest_rootfs.sh failed"; finish; }
    # The replicas' disks, each a copy of it, on a third disk of the lab host (written in a
    # snapshot, as the dom0's).
    rm -rf "$work/guest-disks" "$work/guest-disks.img" && mkdir -p "$work/guest-disks"
    for r in p b; do cp --sparse=always "$work/guest-root.img" "$work/guest-disks/vda-$r.img"; done
    cp "$work/guest-files.sha256" "$work/guest-disks/"
    mke2fs -q -t ext4 -d "$work/guest-disks" "$work/guest-disks.img" 1200M || { fail lab_linux_guest_disks "mke2fs failed"; finish; }
    rm -rf "$work/guest-disks"
    guest_disks=(-drive "file=$work/guest-disks.img,if=virtio,format=raw,snapshot=on")
    ;;
esac

stamp "booting one Xen host under QEMU (TCG), timeout $timeout_s s"
rm -f "$work/serial.log"
. "$top/tests/lab/host.sh"
# bootscrub: the pair's two domains start from memory Xen scrubbed, as a backup that replays
# from the first instruction must (memory never scrubbed differs between them).
lab_host "$work" "$work/payload-linux.img" "$work/serial.log" "ro init=/sbin/lab-init" bootscrub=true
timeout "$timeout_s" "${lab_host_cmd[@]}" ${guest_disks[@]+"${guest_disks[@]}"} > "$work/qemu.log" 2>&1
stamp "QEMU exited ($?)"
tr -d '\r' < "$work/serial.log" > "$work/console.log"
for policy in $cases; do
    grep -a "LAB: $policy: log: " "$work/console.log" | sed "s/^LAB: $policy: log: //" > "$work/linux-$policy.log"
    echo "== $policy: $(grep -a "LAB: $policy: \(at the shell\|at its init\|FAIL\)" "$work/console.log" | sed "s/LAB: $policy: //")"
    grep -a "LAB: $policy: " "$work/console.log" | grep -a -v "LAB: $policy: log: " | sed 's/^LAB: /    /'
    grep -a -i -E 'x2apic|ioapic|clocksource|clockevent|tsc|hpet|acpi_pm|pit|hypervisor|xen|virtio|8250|rdrand|mwait|apic' \
        "$work/linux-$policy.log" | grep -v -i 'command line' | head -n 60 | sed 's/^/    /'
done
# The HTTP case's checks, from what the host said (each line names what it saw).
case " $cases " in *" no-qemu-http-pair "*)
    n=no-qemu-http-pair
    said() { grep -a "^LAB: $n: $1" "$work/console.log" | head -n 1; }
    check() { # NAME PATTERN: PASS if the host said PATTERN, else FAIL with its first FAIL line
        if [ -n "$(said "$2")" ]; then pass "$1"
        else fail "$1" "$(grep -a "^LAB: $n: .*FAIL" "$work/console.log" | head -n 1 | cut -c1-300) $(grep -a "^LAB: $n: pair: " "$work/console.log" | tail -n 1 | cut -c1-300)"; fi
    }
    check linux_http_lighttpd_serves_on_both_replicas 'lighttpd serving on both replicas'
    check linux_http_get_before_the_failover 'GET /index.html in [0-9]* ms: xenft lab guest'
    check linux_http_put_acknowledged 'PUT /put/put.bin acknowledged'
    # Every digest the recorder took before the failover matched on the replaying replica (a
    # mismatch ends the pair program with the digest's exit and both hashes).
    live=$(said 'pair: \[[0-9]* ms\] domain [0-9]* went live')
    digests=$(said 'pair: \[[0-9]* ms\] primary domain [0-9]* ended' | sed -n 's/.* \([0-9][0-9]*\) digests matched.*/\1/p')
    if [ -n "$live" ] && [ "${digests:-0}" -gt 0 ] && ! grep -aq "^LAB: $n: pair: .*differs" "$work/console.log"; then
        pass linux_http_backup_goes_live_with_every_digest_matched
    else
        fail linux_http_backup_goes_live_with_every_digest_matched "${live:-no go-live} (${digests:-no} digests matched)"
    fi
    # curl's last words: HTTP code, bytes, connections made (1: the same TCP connection).
    ended=$(said 'download ended')
    if [ -n "$(said "the download's SHA-256 is right")" ] && [ "$(echo "$ended" | awk '{ print $NF }')" = 1 ]; then
        pass linux_http_download_completes_intact_on_one_connection
    else
        fail linux_http_download_completes_intact_on_one_connection "${ended:-no download} $(said "FAIL the download")"
    fi
    check linux_http_acknowledged_put_reads_back_after_the_failover 'the acknowledged PUT reads back after the failover'
    # The FADT names Xen's PM blocks where Xen has them: the kernel's ACPI code finds the PM1
    # event block it disables the RTC's event in (with the wrong ports: "ACPI Error: Could not
    # disable RealTimeClock events"). The console shows errors at loglevel=6, info lines not.
    klog="$work/linux-$n.log"
    if grep -aq 'Linux version' "$klog" && ! grep -aq 'ACPI Error' "$klog"; then
        pass linux_http_the_kernel_finds_xens_acpi_pm_blocks
    else
        fail linux_http_the_kernel_finds_xens_acpi_pm_blocks "$(grep -a 'ACPI Error' "$klog" | head -n 1 | cut -c1-300)$(grep -aq 'Linux version' "$klog" || echo "no kernel log in $klog")"
    fi
    ;;
esac
case " $cases " in *" no-qemu-diverge-pair "*)
    n=no-qemu-diverge-pair
    changed=$(grep -a "^LAB: $n: pair: .*changed TSC value" "$work/console.log" | head -n 1)
    # The report: the pair's FAIL line naming a digest that differs or the replaying domain's
    # crash at Xen's divergence (whose xl dmesg line names the record).
    report=$(grep -a "^LAB: $n: pair: FAIL backup: .*\(differs\|crashed\|diverged\)" "$work/console.log" | head -n 1)
    if [ -n "$changed" ] && [ -n "$report" ] && grep -aq "^LAB: $n: the pair program exited 1 " "$work/console.log"; then
        pass linux_a_corrupted_log_value_is_reported_by_name
    else
        fail linux_a_corrupted_log_value_is_reported_by_name "${changed:-no TSC value changed}; $(grep -a "^LAB: $n: \(pair: FAIL\|the pair program\)" "$work/console.log" | head -n 2 | tr '\n' ' ' | cut -c1-400)"
    fi
    ;;
esac
# A boot that failed says so in a FAIL line (the cases above judged their own).
grep -a 'LAB: .*FAIL' "$work/console.log" | grep -v "LAB: no-qemu-\(http\|diverge\)-pair: " | while read -r line; do
    fail lab_linux_boot "$(echo "$line" | cut -c1-300)"
done
finish
