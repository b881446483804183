#!/bin/bash
# The lab smoke test: boots Xen built with xenft's patch series (hvm-patches/build) under QEMU
# (TCG: these machines have no hardware virtualisation for a nested hypervisor) with a Debian
# dom0 (tests/lab/rootfs.sh), and in dom0 runs a scenario: `xl info`, then the project's
# bare-metal test guest as a PVH domain with FT off, which must run and print through Xen's
# debug port. It prints one PASS/FAIL line per check, the timeline and its duration.
#
# usage: tests/lab/smoke.sh [WORKDIR]          (default build/lab)
# Env: XEN_WORKDIR (where hvm-patches/build works; default build/xen), XENFT_GUEST (the test guest ELF; default build/main/tests/guest/xenft-guest.elf),
#      LAB_TIMEOUT_S (default 900), CASES_FILE (default WORKDIR/lab_smoke.cases).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab}
mkdir -p "$work"
work=$(cd "$work" && pwd)
xen_work=${XEN_WORKDIR:-$top/build/xen}
guest=${XENFT_GUEST:-$top/build/main/tests/guest/xenft-guest.elf}
probe=${XENFT_FT_PROBE:-$work/xenft-ft-probe}
timeout_s=${LAB_TIMEOUT_S:-900}
cases=${CASES_FILE:-$work/lab_smoke.cases}
: > "$cases"
start=$(date +%s)
failed=0
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
pass() { echo "PASS $1" | tee -a "$cases"; }
fail() { echo "FAIL $1: $2" | tee -a "$cases"; failed=1; }
finish() {
    stamp "lab smoke: $(grep -c '^PASS' "$cases") passed, $(grep -c '^FAIL' "$cases") failed in $(($(date +%s) - start)) s"
    # For tests/summarize.py: the harness result beside the cases.
    printf ':test-result: %s\n' "$([ $failed -eq 0 ] && echo PASS || echo FAIL)" > "${cases%.cases}.trs"
    exit $failed
}

[ "$(id -u)" -eq 0 ] || { fail lab_smoke "needs root (debootstrap, mke2fs -d of a root filesystem)"; finish; }
[ -f "$guest" ] || { fail lab_smoke "no test guest at $guest (build it: ./scripts/build)"; finish; }
for tool in qemu-system-x86_64 debootstrap mke2fs; do
    command -v $tool > /dev/null || { fail lab_smoke "$tool is missing (./scripts/install-deps)"; finish; }
done

stamp "building Xen with the patch series"
if ! "$top/hvm-patches/build" "$xen_work"; then fail xen_builds "hvm-patches/build failed"; finish; fi
pass xen_builds
stamp "preparing dom0"
if ! "$top/tests/lab/rootfs.sh" "$work"; then fail dom0_rootfs_builds "tests/lab/rootfs.sh failed"; finish; fi

# The scenario disk: what dom0 runs, and the guest.
payload=$work/payload
rm -rf "$payload" && mkdir -p "$payload"
cp "$guest" "$payload/xenft-guest.elf"
cat > "$payload/pvh-ft-off.cfg" <<'EOF'
name = "smoke-ft-off"
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=cpu"
memory = 32
vcpus = 1
on_crash = "preserve"
EOF
cat > "$payload/run" <<'EOF'
#!/bin/sh
if xl info > /tmp/info 2>&1; then
    echo "LAB: xl info ok: $(grep -E '^(xen_version|virt_caps)' /tmp/info | tr -s ' ' | tr '\n' ' ')"
else
    echo "LAB: FAIL xl info: $(tail -n 3 /tmp/info | tr '\n' ' ')"
fi
if xl create /lab/pvh-ft-off.cfg > /tmp/create 2>&1; then
    echo "LAB: created smoke-ft-off"
else
    echo "LAB: FAIL xl create: $(tail -n 5 /tmp/create | tr '\n' ' ')"
fi
for i in $(seq 60); do
    xl dmesg | grep -q '(d1) work 32' && break
    sleep 2
done
xl dmesg | grep '(d1)' | head -n 1 | sed 's/^/LAB: guest: /'
xl dmesg | grep '(d1)' | tail -n 1 | sed 's/^/LAB: guest: /'
echo "LAB: guest work lines $(xl dmesg | grep -c '(d1) work ')"
echo "LAB: guest state $(xl list smoke-ft-off 2>&1 | awk 'NR == 2 { print $5 }')"
xl destroy smoke-ft-off

# Record and replay: two identical domains, created paused; the probe puts one in FT mode
# RECORD and the other in REPLAY, forwards the log and compares them once both stopped.
xl create -p /lab/pvh-ft-record.cfg > /tmp/create-rec 2>&1 || echo "LAB: FAIL xl create ft-record: $(tail -n 3 /tmp/create-rec | tr '\n' ' ')"
xl create -p /lab/pvh-ft-replay.cfg > /tmp/create-rep 2>&1 || echo "LAB: FAIL xl create ft-replay: $(tail -n 3 /tmp/create-rep | tr '\n' ' ')"
rec=$(xl domid ft-record) rep=$(xl domid ft-replay)
echo "LAB: ft domains $rec $rep"
/lab/xenft-ft-probe "$rec" "$rep" --ring-pages 2 --timeout-s 400 2>&1 | sed 's/^/LAB: /'
xl dmesg | grep -E "\(d($rec|$rep)\) replay-check digest" | sed 's/^/LAB: guest: /'
xl dmesg | grep -E "\(d($rec|$rep)\).*FT" | head -n 5 | sed 's/^/LAB: xen: /'
echo "LAB: ft states $(xl list ft-record ft-replay 2>&1 | awk 'NR > 1 { printf "%s=%s ", $1, $5 }')"
xl destroy ft-record
xl destroy ft-replay
EOF
for role in record replay; do
    cat > "$payload/pvh-ft-$role.cfg" <<EOF
name = "ft-$role"
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=replay-check units=256"
memory = 32
vcpus = 1
tsc_mode = "always_emulate"
on_poweroff = "preserve"
on_crash = "preserve"
EOF
done
cp "$probe" "$payload/xenft-ft-probe"
chmod +x "$payload/run"
rm -f "$work/payload.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload.img" 64M

gunzip -c "$xen_work/stage/boot/xen.gz" > "$work/xen"
stamp "booting Xen and dom0 under QEMU (TCG), timeout $timeout_s s"
rm -f "$work/serial.log"
timeout "$timeout_s" qemu-system-x86_64 -machine q35,accel=tcg -cpu qemu64,+svm,+npt -smp 1 -m 2048 \
    -display none -monitor none -no-reboot -serial "file:$work/serial.log" \
    -kernel "$work/xen" \
    -append "console=com1 com1=115200 dom0_mem=768M bootscrub=true apicv=0 loglvl=all guest_loglvl=all" \
    -initrd "$work/vmlinuz root=/dev/vda ro console=hvc0 init=/sbin/lab-init,$work/initrd.img" \
    -drive "file=$work/rootfs.img,if=virtio,format=raw,snapshot=on" \
    -drive "file=$work/payload.img,if=virtio,format=raw,readonly=on" \
    > "$work/qemu.log" 2>&1
rc=$?
[ $rc -eq 124 ] && stamp "QEMU did not power off within $timeout_s s"
stamp "QEMU exited ($rc)"
tr -d '\r' < "$work/serial.log" > "$work/console.log"
grep -a 'LAB: ' "$work/console.log" | sed 's/^/    /'

seen() { grep -aq -- "$1" "$work/console.log"; }
if seen '(XEN) Xen version 4.17'; then pass patched_xen_boots; else fail patched_xen_boots "no Xen banner on the serial console"; fi
if seen 'LAB: dom0 up'; then pass dom0_boots_with_xenstored; else fail dom0_boots_with_xenstored "dom0 did not come up"; fi
if seen 'LAB: xl info ok: .*virt_caps.*hvm'; then pass xl_info_shows_hvm; else fail xl_info_shows_hvm "xl info failed or shows no hvm"; fi
work_lines=$(grep -a 'LAB: guest work lines' "$work/console.log" | tr -dc '0-9\n' | tail -n 1)
if seen 'LAB: guest: (d1) xenft test guest: ready, mode cpu' && [ "${work_lines:-0}" -ge 2 ]; then
    pass pvh_guest_runs_with_ft_off
else
    fail pvh_guest_runs_with_ft_off "the PVH guest did not start or did not work (${work_lines:-0} 'work' lines through port 0xe9)"
fi
if seen 'LAB: guest state [-rbps]*$' && ! seen 'LAB: guest state .*c'; then
    pass pvh_guest_did_not_crash
else
    fail pvh_guest_did_not_crash "$(grep -a 'LAB: guest state' "$work/console.log")"
fi
if seen 'LAB: FAIL'; then fail no_failures_in_dom0 "$(grep -a 'LAB: FAIL' "$work/console.log" | head -n 3 | tr '\n' ' ')"; fi
if seen 'LAB: done'; then pass scenario_completes; else fail scenario_completes "dom0 did not finish the scenario (see $work/serial.log)"; fi
finish
