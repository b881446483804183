#!/bin/bash
# The lab smoke test: boots Xen built with xenft's patch series (hvm-patches/build) under QEMU
# (TCG: these machines have no hardware virtualisation for a nested hypervisor) with a Debian
# dom0 (tests/lab/rootfs.sh) running the patched xl, and in dom0 runs a scenario: `xl info`;
# the project's bare-metal test guest as a PVH domain with FT off, which must run and print
# through Xen's debug port; record and replay: two identical PVH domains (mode=replay-check),
# one in FT mode RECORD, the other in REPLAY fed its log by tests/lab/ft_probe.cpp, which must
# stop at the same synchronous exit with the same memory, registers and guest digest; the same
# with a corrupted log, which the comparison must catch; a domain created by `xl create` with
# ft="lab" (xl runs the hook, which starts the recording, before it unpauses the domain), its
# log replayed into a second domain, and part of it into a third, which then goes live and
# must run to its end on its own; ft= the hook refuses, which must fail `xl create` and
# leave no domain; and xenft's Xen device model (tests/lab/xen_dm.cpp driving
# xenft/backends/xen/device_model.hpp, FT off): the test guest's service served through an
# ioreq server, its NIC on a TAP in dom0 and its disk on an image file, which dom0 pings and
# uses over HTTP (status page, PUT and GET, a 1 MiB stream checked by SHA-256), then boots
# again from the same disk and finds what was PUT; and a protected pair on that device model
# (tests/lab/xen_pair.cpp driving xenft/backends/xen/ft_domain.hpp): one domain records, an
# identical one replays its log with its own device models and compares state digests, dom0
# talks HTTP to the service through the output gate, then the recording domain is destroyed in
# the middle of a download, which the backup, gone live, must finish intact, keeping what was
# PUT. It prints one PASS/FAIL line per check, the timeline and its duration.
#
# usage: tests/lab/smoke.sh [WORKDIR]          (default build/lab)
# Env: XEN_WORKDIR (where hvm-patches/build works; default build/xen), XENFT_GUEST (the test guest ELF; default build/main/tests/guest/xenft-guest.elf),
#      XENFT_XL_HOOK (xenft's xl glue; default build/main/dom0-tools/xl/xl-hook),
#      LAB_DEBS (a directory of .debs: the patched Xen packages of `make xen-deb` and xenft's;
#      dom0 then runs Xen, xl and xenft as installed from them instead of the staged build),
#      LAB_TIMEOUT_S (default 900), CASES_FILE (default WORKDIR/lab_smoke.cases),
#      LAB_SCENARIOS ("all", the default, or some of "base ftdm": what dom0 runs and checks;
#      for working on one part). Xen, xenft's Xen programs and the dom0 image come from
#      tests/lab/build.sh (shared with the two-host lab; incremental).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab}
mkdir -p "$work"
work=$(cd "$work" && pwd)
xen_work=${XEN_WORKDIR:-$top/build/xen}
guest=${XENFT_GUEST:-$top/build/main/tests/guest/xenft-guest.elf}
hook=${XENFT_XL_HOOK:-$top/build/main/dom0-tools/xl/xl-hook}
debs=${LAB_DEBS:+$(cd "$LAB_DEBS" 2> /dev/null && pwd || echo "$LAB_DEBS")}
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
[ -n "$debs" ] || [ -f "$hook" ] || { fail lab_smoke "no xl hook at $hook (build it: ./scripts/build)"; finish; }
for tool in qemu-system-x86_64 debootstrap mke2fs; do
    command -v $tool > /dev/null || { fail lab_smoke "$tool is missing (./scripts/install-deps)"; finish; }
done

# Xen with the patch series, xenft's Xen programs and the dom0 image (shared with the two-host
# lab and the demo; incremental).
stamp "building Xen, xenft's Xen programs and the dom0 image (tests/lab/build.sh)"
if XEN_WORKDIR="$xen_work" "$top/tests/lab/build.sh" "$work" $debs; then
    pass lab_builds
else
    fail lab_builds "tests/lab/build.sh failed (see above)"
    finish
fi
probe=$work/xenft-ft-probe dm=$work/xenft-xen-dm pair=$work/xenft-xen-pair
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
# The patched xl and its libraries: dom0 runs them from the scenario disk (Debian's own tools
# stay installed and provide xenstored and xenconsoled), unless it has them from LAB_DEBS.
if [ -z "$debs" ]; then
    mkdir -p "$payload/xen/lib"
    cp "$xen_work/stage/usr/sbin/xl" "$payload/xen/xl"
    cp -P "$xen_work"/stage/usr/lib/lib*.so* "$payload/xen/lib/"
    cp "$hook" "$payload/xenft-xl-hook"
fi
# xenft's glue as the lab has it: until xenftd drives Xen (the Xen backend issue), the hook
# the patched xl runs for ft="lab" starts the probe recording the domain. Its ring is 16 pages:
# this case is about ft= in xl; the pair cases fill their 2-page rings on purpose. A recording
# into a 2-page ring here (the probe flushes a file each step, so the ring fills more often)
# once stopped for good at exit 1725 with the machine idle (CI rehearsal of 2026-12-02): a
# suspected lost wake-up when the injection gate finds the ring full while the vCPU halts
# (patch 0004 does not block the vCPU in Xen there, so the probe's notification does not wake it).
cat > "$payload/xl-hook" <<'EOF'
#!/bin/sh
# The lab's stand-in for /usr/libexec/xenft/xl-hook: start DOMAIN DOMID FTSPEC.
action=$1 domain=$2 domid=$3 ft=$4
case $action in
start)
    if [ "$ft" != lab ]; then
        echo "xenft: domain $domain (id $domid): no FT configuration \"$ft\" in the lab" >&2
        exit 1
    fi
    rm -f "/tmp/ft-$domid.ready"
    /lab/xenft-ft-probe record "$domid" --log "/tmp/ft-$domid.log" --ready "/tmp/ft-$domid.ready" \
        --ring-pages 16 --timeout-s 400 > "/tmp/ft-$domid.out" 2>&1 < /dev/null &
    for i in $(seq 100); do
        [ -f "/tmp/ft-$domid.ready" ] && exit 0
        sleep 0.1
    done
    echo "xenft: domain $domain (id $domid): recording did not start: $(cat "/tmp/ft-$domid.out")" >&2
    exit 1 ;;
stop) exit 0 ;;
esac
EOF
chmod +x "$payload/xl-hook"
cat > "$payload/run" <<'EOF'
#!/bin/sh
if [ -x /lab/xen/xl ]; then
    export LD_LIBRARY_PATH=/lab/xen/lib
    xl=/lab/xen/xl
    mkdir -p /usr/libexec/xenft && cp /lab/xenft-xl-hook /usr/libexec/xenft/xl-hook
else
    xl=xl
    echo "LAB: packages $(dpkg-query -W -f '${Package}=${Version} ' xen-hypervisor-4.17-amd64 xen-utils-4.17 libxenmisc4.17 xenft 2>&1)"
    echo "LAB: xenft --version: $(xenft --version 2>&1 | head -n 1)"
fi
if $xl info > /tmp/info 2>&1; then
    echo "LAB: xl info ok: $(grep -E '^(xen_version|virt_caps)' /tmp/info | tr -s ' ' | tr '\n' ' ')"
else
    echo "LAB: FAIL xl info: $(tail -n 3 /tmp/info | tr '\n' ' ')"
fi
# LAB_SCENARIOS (host side) picks what runs: "all", or some of "base" (everything before the
# protected pair) and "ftdm" (the protected pair with xenft's device models).
want() { case " $(cat /lab/scenarios) " in *" all "* | *" $1 "*) return 0 ;; esac; return 1; }
if want base; then
# ft= that xenft's glue refuses (no /etc/xenft/nosuch.conf): xl create fails with its reason
# and leaves no domain.
if $xl create /lab/pvh-ft.cfg 'name="ft-refused"' 'ft="nosuch"' > /tmp/create-bad 2>&1; then
    echo "LAB: xl ft refused: created anyway"
    $xl destroy ft-refused
else
    echo "LAB: xl ft refused: $(grep -E 'xenft|xl:' /tmp/create-bad | tr '\n' ' ')"
    echo "LAB: xl ft refused: domains left $($xl list | grep -c ft-refused)"
fi
# From here on the lab's stand-in for the glue records ft="lab" domains.
cp /lab/xl-hook /usr/libexec/xenft/xl-hook
if $xl create /lab/pvh-ft-off.cfg > /tmp/create 2>&1; then
    echo "LAB: created smoke-ft-off"
else
    echo "LAB: FAIL xl create: $(tail -n 5 /tmp/create | tr '\n' ' ')"
fi
off=$($xl domid smoke-ft-off)
for i in $(seq 60); do
    $xl dmesg | grep -q "(d$off) work 32" && break
    sleep 2
done
$xl dmesg | grep "(d$off)" | head -n 1 | sed 's/^/LAB: guest: /'
$xl dmesg | grep "(d$off)" | tail -n 1 | sed 's/^/LAB: guest: /'
echo "LAB: guest work lines $($xl dmesg | grep -c "(d$off) work ")"
echo "LAB: guest state $($xl list smoke-ft-off 2>&1 | awk 'NR == 2 { print $5 }')"
$xl destroy smoke-ft-off

# Record and replay: two identical domains, created paused; the probe puts one in FT mode
# RECORD and the other in REPLAY, forwards the log and compares them once both stopped.
$xl create -p /lab/pvh-ft.cfg 'name="ft-record"' > /tmp/create-rec 2>&1 || echo "LAB: FAIL xl create ft-record: $(tail -n 3 /tmp/create-rec | tr '\n' ' ')"
$xl create -p /lab/pvh-ft.cfg 'name="ft-replay"' > /tmp/create-rep 2>&1 || echo "LAB: FAIL xl create ft-replay: $(tail -n 3 /tmp/create-rep | tr '\n' ' ')"
rec=$($xl domid ft-record) rep=$($xl domid ft-replay)
/lab/xenft-ft-probe pair "$rec" "$rep" --ring-pages 2 --timeout-s 400 2>&1 | sed 's/^/LAB: pair: /'
$xl dmesg | grep -E "\(d($rec|$rep)\) replay-check digest" | sed 's/^/LAB: pair: guest: /'
$xl dmesg | grep -E "d($rec|$rep)v0 FT" | head -n 5 | sed 's/^/LAB: pair: xen: /'
echo "LAB: pair: states $(for d in ft-record ft-replay; do $xl list $d 2>&1 | awk 'NR == 2 { printf "%s=%s ", $1, $5 }'; done)"
$xl destroy ft-record
$xl destroy ft-replay

# The same with one TSC value of the log changed on its way: the check must see the replay
# go elsewhere.
$xl create -p /lab/pvh-ft.cfg 'name="ft-bad-record"' > /tmp/create-rec 2>&1 || echo "LAB: FAIL xl create ft-bad-record: $(tail -n 3 /tmp/create-rec | tr '\n' ' ')"
$xl create -p /lab/pvh-ft.cfg 'name="ft-bad-replay"' > /tmp/create-rep 2>&1 || echo "LAB: FAIL xl create ft-bad-replay: $(tail -n 3 /tmp/create-rep | tr '\n' ' ')"
rec=$($xl domid ft-bad-record) rep=$($xl domid ft-bad-replay)
/lab/xenft-ft-probe pair "$rec" "$rep" --ring-pages 2 --timeout-s 400 --corrupt-tsc 100 2>&1 | sed 's/^/LAB: corrupted log: /'
$xl dmesg | grep -E "\(d($rec|$rep)\) replay-check digest" | sed 's/^/LAB: corrupted log: guest: /'
$xl destroy ft-bad-record
$xl destroy ft-bad-replay

# ft= in the domain's configuration: the patched xl runs the hook before it unpauses the
# domain, the hook starts the recording; then a second domain replays the recorded log.
if $xl create /lab/pvh-ft.cfg 'name="ft-xl"' 'ft="lab"' > /tmp/create-xl 2>&1; then
    rec=$($xl domid ft-xl)
    echo "LAB: xl ft: created ft-xl (id $rec) with ft=\"lab\""
    for i in $(seq 200); do
        grep -q 'stopped\|FAIL' "/tmp/ft-$rec.out" 2> /dev/null && ! pgrep -f "record $rec " > /dev/null && break
        sleep 1
    done
    sed 's/^/LAB: xl ft: record: /' "/tmp/ft-$rec.out"
    $xl create -p /lab/pvh-ft.cfg 'name="ft-xl-replay"' > /tmp/create-rep 2>&1 || echo "LAB: FAIL xl create ft-xl-replay: $(tail -n 3 /tmp/create-rep | tr '\n' ' ')"
    rep=$($xl domid ft-xl-replay)
    /lab/xenft-ft-probe replay "$rep" --log "/tmp/ft-$rec.log" --ring-pages 2 --timeout-s 400 2>&1 | sed 's/^/LAB: xl ft: replay: /'
    /lab/xenft-ft-probe compare "$rec" "$rep" 2>&1 | sed 's/^/LAB: xl ft: /'
    $xl dmesg | grep -E "\(d($rec|$rep)\) replay-check digest" | sed 's/^/LAB: xl ft: guest: /'
    $xl destroy ft-xl-replay
    # Failover: a third domain replays the first 2,000 records of that log, goes live and must
    # run on to its end by itself (timers re-armed, the TSC never going back).
    $xl create -p /lab/pvh-ft.cfg 'name="ft-live"' > /tmp/create-live 2>&1 || echo "LAB: FAIL xl create ft-live: $(tail -n 3 /tmp/create-live | tr '\n' ' ')"
    live=$($xl domid ft-live)
    /lab/xenft-ft-probe replay "$live" --log "/tmp/ft-$rec.log" --go-live-after 2000 --ring-pages 2 --timeout-s 300 2>&1 | sed 's/^/LAB: go live: /'
    $xl dmesg | grep -E "\(d$live\) replay-check digest" | sed 's/^/LAB: go live: guest: /'
    $xl dmesg | grep "d$live: FT replay ends" | sed 's/^/LAB: go live: xen: /'
    echo "LAB: go live: state $($xl list ft-live 2>&1 | awk 'NR == 2 { print $5 }')"
    $xl destroy ft-live
    $xl destroy ft-xl
else
    echo "LAB: FAIL xl create with ft=\"lab\": $(tail -n 3 /tmp/create-xl | tr '\n' ' ')"
fi

# xenft's device model (FT off): the guest's UART, clock, NIC and disk served from dom0 through
# an ioreq server; the NIC on a TAP in dom0, which is the guest's client.
modprobe tun 2> /dev/null
ip tuntap add dev xftdm0 mode tap && ip addr add 10.98.0.1/24 dev xftdm0 && ip link set xftdm0 up ||
    echo "LAB: FAIL dm: cannot create the TAP xftdm0"
truncate -s 1M /tmp/dm-disk.img
dm_start() { # NAME: create the domain paused, let the device model unpause it, wait for the service
    $xl create -p /lab/pvh-dm.cfg "name=\"$1\"" > /tmp/create-dm 2>&1 || echo "LAB: FAIL xl create $1: $(tail -n 3 /tmp/create-dm | tr '\n' ' ')"
    dmid=$($xl domid "$1")
    /lab/xenft-xen-dm "$dmid" --tap xftdm0 --disk /tmp/dm-disk.img --timeout-s 300 > "/tmp/dm-$1.out" 2>&1 &
    dm_pid=$!
    for i in $(seq 150); do
        $xl dmesg | grep -q "(d$dmid) service: udp port 7000, http port 80" && break
        sleep 1
    done
    $xl dmesg | grep "(d$dmid) service:" | tail -n 1 | sed 's/^/LAB: dm: guest: /'
}
dm_stop() { # NAME
    $xl destroy "$1"
    wait $dm_pid
    grep -v '^guest: ' "/tmp/dm-$1.out" | sed 's/^/LAB: dm: /'
}
dm_start dm-service
if ping -c 2 -W 10 10.98.0.2 > /tmp/dm-ping 2>&1; then echo "LAB: dm: ping ok"; else echo "LAB: dm: ping failed: $(tail -n 2 /tmp/dm-ping | tr '\n' ' ')"; fi
curl -s --max-time 60 http://10.98.0.2/ > /tmp/dm-status
echo "LAB: dm: status page: $(head -n 1 /tmp/dm-status)"
echo "LAB: dm: put $(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary lab-value-1 http://10.98.0.2/kv/lab)"
echo "LAB: dm: get $(curl -s --max-time 60 http://10.98.0.2/kv/lab)"
expected=$(seq -f %015.0f 0 65536 | head -c 1048576 | sha256sum | cut -c1-64)
got=$(curl -s --max-time 200 http://10.98.0.2/stream/1048576 | sha256sum | cut -c1-64)
if [ "$got" = "$expected" ]; then echo "LAB: dm: stream sha256 ok"; else echo "LAB: dm: stream sha256 $got, expected $expected"; fi
dm_stop dm-service
dm_start dm-again
echo "LAB: dm: after a restart from the same disk: get $(curl -s --max-time 60 http://10.98.0.2/kv/lab)"
dm_stop dm-again
fi

# Fault tolerance with xenft's device models (tests/lab/xen_pair.cpp driving
# xenft/backends/xen/ft_domain.hpp): domain ftdm-p records, ftdm-b replays its log on this same
# host and compares state digests at the exits ftdm-p took them; their NICs are TAPs on a
# bridge, the primary's behind the output gate, the backup's silent. dom0 is the client. Then
# ftdm-p is destroyed in the middle of a download: ftdm-b must go live and finish it, and keep
# what was PUT before.
if want ftdm; then
modprobe tun 2> /dev/null
modprobe bridge 2> /dev/null
ip link add xftbr0 type bridge && ip addr add 10.98.1.1/24 dev xftbr0 && ip link set xftbr0 up ||
    echo "LAB: FAIL ftdm: cannot set up the bridge xftbr0"
for t in xftp0 xftb0; do
    ip tuntap add dev $t mode tap && ip link set $t master xftbr0 && ip link set $t up || echo "LAB: FAIL ftdm: cannot set up the TAP $t"
done
truncate -s 1M /tmp/ftdm-p.img && cp /tmp/ftdm-p.img /tmp/ftdm-b.img
for n in ftdm-p ftdm-b; do
    $xl create -p /lab/pvh-ftdm.cfg "name=\"$n\"" > /tmp/create-$n 2>&1 || echo "LAB: FAIL xl create $n: $(tail -n 3 /tmp/create-$n | tr '\n' ' ')"
done
p=$($xl domid ftdm-p) b=$($xl domid ftdm-b)
/lab/xenft-xen-pair "$p" "$b" --tap-primary xftp0 --tap-backup xftb0 --disk-primary /tmp/ftdm-p.img \
    --disk-backup /tmp/ftdm-b.img --digest-ms 2000 --timeout-s 900 > /tmp/pair.out 2>&1 &
pair_pid=$!
ftdm_t0=$(date +%s)
ftdm_stamp() { echo "LAB: ftdm: [$(($(date +%s) - ftdm_t0)) s] $*"; }
for i in $(seq 200); do
    $xl dmesg | grep -q "(d$p) service: udp port 7000, http port 80" && break
    kill -0 $pair_pid 2> /dev/null || break
    sleep 1
done
$xl dmesg | grep "(d$p) service:" | tail -n 1 | sed 's/^/LAB: ftdm: guest: /'
ftdm_stamp "service up"
if kill -0 $pair_pid 2> /dev/null; then
if ping -c 2 -W 20 10.98.1.2 > /tmp/ftdm-ping 2>&1; then echo "LAB: ftdm: ping ok"; else echo "LAB: ftdm: ping failed: $(tail -n 2 /tmp/ftdm-ping | tr '\n' ' ')"; fi
echo "LAB: ftdm: status page: $(curl -s --max-time 60 http://10.98.1.2/ | head -n 1)"
echo "LAB: ftdm: put $(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary ftdm-value-1 http://10.98.1.2/kv/lab)"
echo "LAB: ftdm: get $(curl -s --max-time 60 http://10.98.1.2/kv/lab)"
ftdm_stamp "client requests done"
expected=$(seq -f %015.0f 0 65536 | head -c 1048576 | sha256sum | cut -c1-64)
got=$(curl -s --max-time 300 http://10.98.1.2/stream/262144 | sha256sum | cut -c1-64)
want256=$(seq -f %015.0f 0 16384 | head -c 262144 | sha256sum | cut -c1-64)
if [ "$got" = "$want256" ]; then echo "LAB: ftdm: stream sha256 ok"; else echo "LAB: ftdm: stream sha256 $got, expected $want256"; fi
ftdm_stamp "256 KiB stream done"
# The power cut: ftdm-p destroyed while a 1 MiB download runs.
curl -s --max-time 400 -o /tmp/ftdm-download http://10.98.1.2/stream/1048576 &
curl_pid=$!
for i in $(seq 300); do
    [ "$(stat -c %s /tmp/ftdm-download 2> /dev/null || echo 0)" -ge 131072 ] && break
    sleep 0.2
done
ftdm_stamp "destroying ftdm-p with $(stat -c %s /tmp/ftdm-download 2> /dev/null || echo 0) bytes downloaded"
$xl destroy ftdm-p
wait $curl_pid
echo "LAB: ftdm: download curl exit $?"
ftdm_stamp "download finished"
got=$(sha256sum < /tmp/ftdm-download | cut -c1-64)
if [ "$got" = "$expected" ]; then echo "LAB: ftdm: failover stream sha256 ok"; else echo "LAB: ftdm: failover stream sha256 $got ($(stat -c %s /tmp/ftdm-download) bytes), expected $expected"; fi
echo "LAB: ftdm: after failover: get $(curl -s --max-time 60 http://10.98.1.2/kv/lab)"
echo "LAB: ftdm: after failover: put $(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X PUT --data-binary ftdm-value-2 http://10.98.1.2/kv/lab)"
echo "LAB: ftdm: after failover: get $(curl -s --max-time 60 http://10.98.1.2/kv/lab)"
if ping -c 2 -W 20 10.98.1.2 > /tmp/ftdm-ping 2>&1; then echo "LAB: ftdm: after failover: ping ok"; else echo "LAB: ftdm: after failover: ping failed"; fi
else
    echo "LAB: FAIL ftdm: the pair's driver ended before the service came up"
fi
kill -TERM $pair_pid 2> /dev/null
wait $pair_pid
grep -v '^guest: ' /tmp/pair.out | sed 's/^/LAB: ftdm: /'
$xl dmesg | grep -E "d($p|$b)v0 FT|d($p|$b): FT" | head -n 5 | sed 's/^/LAB: ftdm: xen: /'
echo "LAB: ftdm: backup state $($xl list ftdm-b 2>&1 | awk 'NR == 2 { print $5 }')"
$xl destroy ftdm-b
fi

EOF
cat > "$payload/pvh-dm.cfg" <<'EOF'
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=service ip=10.98.0.2"
memory = 32
vcpus = 1
on_crash = "preserve"
EOF
cat > "$payload/pvh-ftdm.cfg" <<'EOF'
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=service ip=10.98.1.2"
memory = 32
vcpus = 1
tsc_mode = "always_emulate"
on_crash = "preserve"
EOF
echo "${LAB_SCENARIOS:-all}" > "$payload/scenarios"
cat > "$payload/pvh-ft.cfg" <<EOF
type = "pvh"
kernel = "/lab/xenft-guest.elf"
cmdline = "mode=replay-check units=256"
memory = 32
vcpus = 1
tsc_mode = "always_emulate"
on_poweroff = "preserve"
on_crash = "preserve"
EOF
cp "$probe" "$payload/xenft-ft-probe"
cp "$dm" "$payload/xenft-xen-dm"
cp "$pair" "$payload/xenft-xen-pair"
chmod +x "$payload/run"
rm -f "$work/payload.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload.img" 64M

if [ -n "$debs" ]; then gunzip -c "$work/xen.gz" > "$work/xen"; else gunzip -c "$xen_work/stage/boot/xen.gz" > "$work/xen"; fi
stamp "booting Xen and dom0 under QEMU (TCG), timeout $timeout_s s"
rm -f "$work/serial.log"
. "$top/tests/lab/host.sh"
lab_host "$work" "$work/payload.img" "$work/serial.log" "ro init=/sbin/lab-init" bootscrub=true
timeout "$timeout_s" "${lab_host_cmd[@]}" > "$work/qemu.log" 2>&1
rc=$?
[ $rc -eq 124 ] && stamp "QEMU did not power off within $timeout_s s"
stamp "QEMU exited ($rc)"
tr -d '\r' < "$work/serial.log" > "$work/console.log"
grep -a 'LAB: ' "$work/console.log" | sed 's/^/    /'

seen() { grep -aq -- "$1" "$work/console.log"; }
want() { case " ${LAB_SCENARIOS:-all} " in *" all "* | *" $1 "*) return 0 ;; esac; return 1; }
if [ -n "$debs" ]; then
    if seen 'LAB: packages .*xen-hypervisor-4.17-amd64=[^ ]*+xenft1 ' && seen 'LAB: packages .*xen-utils-4.17=[^ ]*+xenft1 ' &&
       seen 'LAB: packages .*libxenmisc4.17=[^ ]*+xenft1 ' && seen 'LAB: packages .*xenft=[0-9]' &&
       seen 'LAB: xenft --version: xenft [0-9]'; then
        pass dom0_runs_the_packaged_patched_xen_and_xenft
    else
        fail dom0_runs_the_packaged_patched_xen_and_xenft "$(grep -a 'LAB: \(packages\|xenft --version\)' "$work/console.log" | tr '\n' ' ')"
    fi
fi
if seen '(XEN) Xen version 4.17'; then pass patched_xen_boots; else fail patched_xen_boots "no Xen banner on the serial console"; fi
if seen 'LAB: dom0 up'; then pass dom0_boots_with_xenstored; else fail dom0_boots_with_xenstored "dom0 did not come up"; fi
if seen 'LAB: xl info ok: .*virt_caps.*hvm'; then pass xl_info_shows_hvm; else fail xl_info_shows_hvm "xl info failed or shows no hvm"; fi
if want base; then
work_lines=$(grep -a 'LAB: guest work lines' "$work/console.log" | tr -dc '0-9\n' | tail -n 1)
if seen 'LAB: guest: (d[0-9]*) xenft test guest: ready, mode cpu' && [ "${work_lines:-0}" -ge 2 ]; then
    pass pvh_guest_runs_with_ft_off
else
    fail pvh_guest_runs_with_ft_off "the PVH guest did not start or did not work (${work_lines:-0} 'work' lines through port 0xe9)"
fi
# The state letters only: Xen's own console output (a guest's "(d2) work N") can land on the
# same serial line right after them.
guest_state=$(grep -ao 'LAB: guest state [-rbpscd]*' "$work/console.log" | head -n 1 | cut -d' ' -f4)
if [ -n "$guest_state" ] && [[ $guest_state != *c* ]]; then
    pass pvh_guest_did_not_crash
else
    fail pvh_guest_did_not_crash "$(grep -a 'LAB: guest state' "$work/console.log")"
fi
# Record and replay (tests/lab/ft_probe.cpp prints what it recorded and compared). $1 is the
# scenario's prefix ("pair", "xl ft"), $2 the name its checks start with.
line_of() { grep -a "LAB: $1: $2" "$work/console.log" | head -n 1; }
check_replay() {
    local scenario=$1 name=$2 exits memory digests
    if [ -n "$(grep -a "LAB: $scenario: .*recording domain stopped at exit [1-9][0-9]*.*inject [1-9][0-9]*, tsc [1-9][0-9]*, io-read [1-9]" "$work/console.log")" ]; then
        pass "${name}_logs_injections_tsc_and_reads"
    else
        fail "${name}_logs_injections_tsc_and_reads" "$(line_of "$scenario" '.*recording domain stopped' || echo 'no record summary') $(line_of "$scenario" '.*FAIL')"
    fi
    exits=$(line_of "$scenario" 'ft-probe: synchronous exits:')
    if [[ $exits =~ recorder\ ([0-9]+),\ replayer\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
        pass "${name}_replay_stops_at_the_recorded_exit"
    else
        fail "${name}_replay_stops_at_the_recorded_exit" "${exits:-the replay did not finish: $(line_of "$scenario" '.*FAIL')}"
    fi
    memory=$(line_of "$scenario" 'ft-probe: memory:')
    if [[ $memory =~ recorder\ ([0-9a-f]+)\ \(([0-9]+)\ pages\),\ replayer\ ([0-9a-f]+) ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[3]}" ]; then
        pass "${name}_replay_memory_identical"
    else
        fail "${name}_replay_memory_identical" "${memory:-no memory comparison} $(line_of "$scenario" 'ft-probe: FAIL memory')"
    fi
    if [ -n "$(line_of "$scenario" 'ft-probe: vCPU registers equal')" ]; then
        pass "${name}_replay_registers_identical"
    else
        fail "${name}_replay_registers_identical" "$(line_of "$scenario" 'ft-probe: FAIL vCPU' || echo 'no register comparison')"
    fi
    digests=$(grep -a "LAB: $scenario: guest: (d[0-9]*) replay-check digest" "$work/console.log" | sed 's/.*digest //' | sort -u)
    if [ "$(grep -ac "LAB: $scenario: guest: (d[0-9]*) replay-check digest" "$work/console.log")" -eq 2 ] && [ "$(echo "$digests" | wc -l)" -eq 1 ]; then
        pass "${name}_guest_digests_equal"
    else
        fail "${name}_guest_digests_equal" "the two domains printed: $(echo $digests)"
    fi
    if [ -n "$(line_of "$scenario" 'ft-probe: PASS')" ]; then
        pass "${name}_probe_passes"
    else
        fail "${name}_probe_passes" "$(line_of "$scenario" '.*FAIL' || echo 'the probe did not finish')"
    fi
}
check_replay pair ft_pair
bad_digests=$(grep -a 'LAB: corrupted log: guest: (d[0-9]*) replay-check digest' "$work/console.log" | sed 's/.*digest //' | sort -u | wc -l)
if seen 'LAB: corrupted log: ft-probe: FAIL memory differs' && [ "$bad_digests" -eq 2 ]; then
    pass ft_replay_check_detects_a_corrupted_log
else
    fail ft_replay_check_detects_a_corrupted_log "with one TSC value changed: $(grep -a 'LAB: corrupted log: ft-probe: \(PASS\|FAIL\)' "$work/console.log" | head -n 2 | tr '\n' ' ') ($bad_digests distinct digests)"
fi
if seen 'LAB: xl ft: created ft-xl (id [0-9]*) with ft="lab"'; then pass xl_create_with_ft_starts_recording; else fail xl_create_with_ft_starts_recording "$(grep -a 'LAB: FAIL xl create with ft' "$work/console.log" | head -n 1)"; fi
check_replay "xl ft" xl_ft
if seen 'LAB: go live: ft-probe: domain [0-9]* went live at exit [1-9]'; then
    pass go_live_after_a_partial_log
else
    fail go_live_after_a_partial_log "$(grep -a 'LAB: go live: ' "$work/console.log" | head -n 4 | tr '\n' ' ')"
fi
if seen 'LAB: go live: ft-probe: the live domain ran to its end' && seen 'LAB: go live: guest: (d[0-9]*) replay-check digest' &&
   seen 'LAB: go live: state [-rbp]*s[-]*$'; then
    pass go_live_domain_runs_to_its_end_with_its_timers
else
    fail go_live_domain_runs_to_its_end_with_its_timers "$(grep -a 'LAB: go live: ' "$work/console.log" | tail -n 4 | tr '\n' ' ')"
fi
if seen 'LAB: go live: guest: (d[0-9]*) replay-check digest .* tsc-back 0$'; then
    pass go_live_tsc_never_goes_back
else
    fail go_live_tsc_never_goes_back "$(grep -a 'LAB: go live: guest' "$work/console.log" || echo 'the live guest did not finish')"
fi
if seen 'LAB: xl ft refused: xenft: domain ft-refused (id [0-9]*): ft="nosuch" but [^ ]*/xenft/nosuch.conf does not exist' &&
   seen 'LAB: xl ft refused: .*could not start; the domain is destroyed' &&
   seen 'LAB: xl ft refused: domains left 0'; then
    pass xl_create_fails_cleanly_when_ft_cannot_start
else
    fail xl_create_fails_cleanly_when_ft_cannot_start "$(grep -a 'LAB: xl ft refused' "$work/console.log" | tr '\n' ' ')"
fi
# xenft's device model on Xen.
if seen 'LAB: dm: guest: (d[0-9]*) service: udp port 7000, http port 80 on 10.98.0.2, persistent'; then
    pass dm_guest_service_up_with_nic_and_disk
else
    fail dm_guest_service_up_with_nic_and_disk "$(grep -a 'LAB: dm: ' "$work/console.log" | head -n 3 | tr '\n' ' ')"
fi
if seen 'LAB: dm: ping ok'; then pass dm_guest_answers_ping; else fail dm_guest_answers_ping "$(grep -a 'LAB: dm: ping' "$work/console.log")"; fi
if seen 'LAB: dm: status page: xenft test guest' && seen 'LAB: dm: put 201' && seen 'LAB: dm: get lab-value-1$'; then
    pass dm_guest_serves_http_get_and_put
else
    fail dm_guest_serves_http_get_and_put "$(grep -a 'LAB: dm: \(status\|put\|get\)' "$work/console.log" | tr '\n' ' ')"
fi
if seen 'LAB: dm: stream sha256 ok'; then pass dm_guest_streams_1_mib_intact; else fail dm_guest_streams_1_mib_intact "$(grep -a 'LAB: dm: stream' "$work/console.log")"; fi
if seen 'LAB: dm: after a restart from the same disk: get lab-value-1$'; then
    pass dm_guest_disk_keeps_what_was_put
else
    fail dm_guest_disk_keeps_what_was_put "$(grep -a 'LAB: dm: after' "$work/console.log")"
fi
# xl destroy ends each domain: the model must notice and stop by itself.
if [ "$(grep -ac 'LAB: dm: dm: ended: the domain \(is gone\|is being destroyed\); [1-9][0-9]* requests, [1-9][0-9]* frames in' "$work/console.log")" = 2 ]; then
    pass dm_served_until_the_domain_ended
else
    fail dm_served_until_the_domain_ended "$(grep -a 'LAB: dm: dm: ' "$work/console.log" | tr '\n' ' ')"
fi
fi
# The protected pair with xenft's device models.
if want ftdm; then
    if seen 'LAB: ftdm: guest: (d[0-9]*) service: udp port 7000, http port 80 on 10.98.1.2' && seen 'LAB: ftdm: ping ok'; then
        pass ftdm_protected_guest_serves_with_xenft_devices
    else
        fail ftdm_protected_guest_serves_with_xenft_devices "$(grep -a 'LAB: ftdm: \(guest\|ping\|pair: FAIL\|FAIL\)' "$work/console.log" | head -n 3 | tr '\n' ' ')"
    fi
    if seen 'LAB: ftdm: status page: xenft test guest' && seen 'LAB: ftdm: put 201' && seen 'LAB: ftdm: get ftdm-value-1$' &&
       seen 'LAB: ftdm: stream sha256 ok'; then
        pass ftdm_http_and_stream_through_the_output_gate
    else
        fail ftdm_http_and_stream_through_the_output_gate "$(grep -a 'LAB: ftdm: \(status\|put\|get\|stream\)' "$work/console.log" | tr '\n' ' ')"
    fi
    matched=$(grep -a 'LAB: ftdm: pair: .* went live at exit' "$work/console.log" | sed -n 's/.*; \([0-9]*\) digests matched.*/\1/p')
    if [ "${matched:-0}" -ge 3 ] && ! seen 'LAB: ftdm: pair: FAIL'; then
        pass ftdm_backup_digests_match_the_primary
    else
        fail ftdm_backup_digests_match_the_primary "${matched:-no} digests matched; $(grep -a 'LAB: ftdm: pair: FAIL' "$work/console.log" | head -n 1)"
    fi
    if seen 'LAB: ftdm: pair: .* domain [0-9]* went live at exit [1-9][0-9]*, [0-9]* ms after the primary ended' &&
       seen 'LAB: ftdm: xen: .*FT replay ends at exit [0-9]*: live'; then
        pass ftdm_backup_goes_live_when_the_primary_dies
    else
        fail ftdm_backup_goes_live_when_the_primary_dies "$(grep -a 'LAB: ftdm: pair: .*\(ended\|live\|FAIL\)' "$work/console.log" | head -n 3 | tr '\n' ' ')"
    fi
    if seen 'LAB: ftdm: download curl exit 0' && seen 'LAB: ftdm: failover stream sha256 ok'; then
        pass ftdm_download_survives_the_failover_intact
    else
        fail ftdm_download_survives_the_failover_intact "$(grep -a 'LAB: ftdm: \(download\|failover stream\|.*destroying\)' "$work/console.log" | tr '\n' ' ')"
    fi
    if seen 'LAB: ftdm: after failover: get ftdm-value-1$' && seen 'LAB: ftdm: after failover: put 20[14]' &&
       seen 'LAB: ftdm: after failover: get ftdm-value-2$' && seen 'LAB: ftdm: after failover: ping ok'; then
        pass ftdm_live_backup_keeps_the_put_and_serves_on
    else
        fail ftdm_live_backup_keeps_the_put_and_serves_on "$(grep -a 'LAB: ftdm: after failover' "$work/console.log" | tr '\n' ' ')"
    fi
fi
if seen 'LAB: FAIL'; then fail no_failures_in_dom0 "$(grep -a 'LAB: FAIL' "$work/console.log" | head -n 3 | tr '\n' ' ')"; fi
if seen 'LAB: done'; then pass scenario_completes; else fail scenario_completes "dom0 did not finish the scenario (see $work/serial.log)"; fi
finish
