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
# comparing state digests at the exits A took them (xenft/daemon/xen_node.hpp). `xenft status`
# on each host shows the copy and the digests.
#
#   case "a-dies": the client PUTs, then downloads 1 MiB; QEMU A is SIGKILLed in the middle
#     (a power cut); B wins the test-and-set, goes live, and the download finishes intact on
#     the same TCP connection; the PUT is still there.
#   case "b-dies": the same with QEMU B killed: A wins the test-and-set and continues alone.
#   case "b-late": host B boots but holds its xl create: A's primary waits [failover]
#     backup-wait-ms (20 s here, 120 s in the other cases) for a backup, wins the test-and-set
#     and serves alone (the guest's outputs no longer held). Then B creates its domain: its
#     backup takes a live copy of A's domain, which has served alone for a minute, and A is protected
#     again; the client PUTs, QEMU A is killed, B goes live (epoch 3) and has the PUT.
#   case "a-ends": no failure: the administrator runs `xl destroy` on host A. A's xenftd tells
#     the backup through the log (vm_end) before it goes silent; B ends with the VM (its
#     domain powered off and removed by xl) instead of taking it over: no test-and-set, the
#     arbitration record stays at epoch 1, the guest no longer answers, both xenftd exit.
#   case "operator": no failure either: `xenft failover` on host B. B stops acking, wins the
#     test-and-set (epoch 2), says so in its heartbeats and goes live with the client's PUT; A
#     hears it, loses the test-and-set and pauses its domain. Then `xl destroy` and `xl create`
#     of the VM on A: refused, as B runs it.
#
# It prints a timeline per case, the client's verdict and its duration, one PASS/FAIL line per
# check, and ends with "lab failover: N passed, N failed".
#
# usage: tests/lab/failover.sh [WORKDIR]      (default build/lab-failover)
# Env: XEN_WORKDIR (default build/xen), XENFT_GUEST, XENFT_XL_HOOK, XENFT_CLI (the build's
#      xenft CLI, for certificates and the arbitration record), FAILOVER_CASES ("a-dies b-dies
#      b-late a-ends operator").
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$top/build/lab-failover}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export XEN_WORKDIR=${XEN_WORKDIR:-$top/build/xen}
guest=${XENFT_GUEST:-$top/build/main/tests/guest/xenft-guest.elf}
xenft_cli=${XENFT_CLI:-$top/build/main/dom0-tools/xenft/xenft}
cases_to_run=${FAILOVER_CASES:-a-dies b-dies b-late a-ends operator}
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
stamp "building Xen, xenftd with its Xen backend and the dom0 image (tests/lab/build.sh)"
if ! "$top/tests/lab/build.sh" "$work" > "$work/build.log" 2>&1; then
    tail -n 20 "$work/build.log"
    fail lab_builds "tests/lab/build.sh failed ($work/build.log)"
    finish
fi
grep 'step .* done in' "$work/build.log" | sed 's/^/    /'
pass lab_builds
gunzip -c "$XEN_WORKDIR/stage/boot/xen.gz" > "$work/xen"

# --- the scenario disk: the same for both hosts; the role comes on the kernel command line ----
payload=$work/payload-failover
rm -rf "$payload" && mkdir -p "$payload/xen/lib" "$payload/tls"
cp "$guest" "$payload/xenft-guest.elf"
cp "$work/xenftd" "$xenft_cli" "$payload/"
cp "${XENFT_XL_HOOK:-$top/build/main/dom0-tools/xl/xl-hook}" "$payload/xl-hook"
cp "$XEN_WORKDIR/stage/usr/sbin/xl" "$payload/xen/xl"
cp -P "$XEN_WORKDIR"/stage/usr/lib/lib*.so* "$payload/xen/lib/"
{ "$xenft_cli" cert ca --name lab-ca --out "$payload/tls" &&
  for h in hosta hostb; do
      "$xenft_cli" cert create --name $h --out "$payload/tls" --ca-cert "$payload/tls/lab-ca.crt" --ca-key "$payload/tls/lab-ca.key" || exit 1
  done; } > "$work/certs.log" 2>&1 || { fail lab_certificates "$(tail -n 2 "$work/certs.log")"; finish; }
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$payload/tls/hb.key" && chmod 600 "$payload/tls/hb.key"
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
lun=iscsi://10.98.1.1:3260/iqn.2026-11.lab.xenft:shared/0
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
cert = /lab/tls/$me.crt
key = /lab/tls/$me.key
ca = /lab/tls/lab-ca.crt
peer-name = $other
[heartbeat]
listen = 192.168.77.$n:7101
peer = 192.168.77.$peer:7101
key-file = /lab/tls/hb.key
[failover]
after-ms = 2000
digest-ms = 3000
backup-wait-ms = 120000
EOF
done
cat > "$payload/run" <<EOF
#!/bin/sh
# One host of the pair: lab.role=a (records) or b (replays) on the kernel command line.
export LD_LIBRARY_PATH=/lab/xen/lib
xl=/lab/xen/xl
role=\$(sed -n 's/.*lab\.role=\([ab]\).*/\1/p' /proc/cmdline)
n=1
[ "\$role" = b ] && n=2
say() { echo "LAB: \$role: \$*"; }
for m in virtio_net tun bridge; do modprobe \$m 2> /dev/null; done
ifname_of() { ip -o link | awk -v m="\$1" 'index(\$0, m) { sub(":", "", \$2); print \$2 }'; }
ft=\$(ifname_of 52:54:00:fe:00:0\$n) lan=\$(ifname_of 52:54:00:fe:01:0\$n)
ip link set lo up
ip addr add 192.168.77.\$n/24 dev "\$ft" && ip link set "\$ft" up || say "FAIL no logging link (\$ft)"
ip link add xftbr0 type bridge && ip link set "\$lan" master xftbr0 && ip link set "\$lan" up &&
    ip addr add 10.98.1.1\$n/24 dev xftbr0 && ip link set xftbr0 up || say "FAIL no LAN bridge (\$lan)"
ip tuntap add dev xftg0 mode tap && ip link set xftg0 master xftbr0 && ip link set xftg0 up || say "FAIL no guest TAP"
truncate -s 1M /tmp/disk.img
# xenft as the package installs it; xl runs the hook for ft=, the hook starts xenftd (no
# systemd here: itself, logging to /var/log/xenft/ftguest.log, which goes to the serial line).
mkdir -p /etc/xenft /usr/libexec/xenft /var/log/xenft
cp /lab/xenftd /lab/xenft /usr/sbin/ && cp /lab/xl-hook /usr/libexec/xenft/xl-hook &&
    cp /lab/ftguest-\$role.conf /etc/xenft/ftguest.conf || say "FAIL cannot install xenft"
# The case may shorten the primary's wait for a backup (lab.backup_wait=MS) and hold this
# host's xl create until the build machine says so (lab.create=wait: it serves port 7999).
bw=\$(sed -n 's/.*lab\.backup_wait=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "\$bw" ] && sed -i "s/^backup-wait-ms = .*/backup-wait-ms = \$bw/" /etc/xenft/ftguest.conf
if grep -q 'lab\.create=wait' /proc/cmdline; then
    say "xl create waits for the lab's go-ahead"
    until curl -s -o /dev/null --max-time 2 http://10.98.1.1:7999/; do sleep 2; done
fi
export XENFT_CONFDIR=/etc/xenft XENFTD=/usr/sbin/xenftd XENFT=/usr/sbin/xenft XENFT_READY_TIMEOUT_S=120
touch /var/log/xenft/ftguest.log
tail -n +1 -F /var/log/xenft/ftguest.log 2> /dev/null | sed -u "s/^/LAB: \$role: /" &
if \$xl create /lab/pvh-ft.cfg > /tmp/create 2>&1; then
    say "xl create: \$(tr '\n' ' ' < /tmp/create)"
else
    say "FAIL xl create: \$(tail -n 3 /tmp/create | tr '\n' ' ')"
fi
# lab.act=destroy|failover|recreate: what the administrator does on this host once the build
# machine serves /act-a (host A) or /act-b on port 7999: xl destroy of the guest, xenft
# failover, or xl destroy and xl create again.
act=\$(sed -n 's/.*lab\.act=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ -n "\$act" ]; then
    (until curl -sf -o /dev/null --max-time 2 http://10.98.1.1:7999/act-\$role; do sleep 2; done
     case \$act in
         destroy) out=\$(\$xl destroy ft-guest 2>&1); rc=\$?; say "xl destroy ft-guest: exit \$rc \$(echo \$out)" ;;
         failover) out=\$(/usr/sbin/xenft failover --vm 1 2>&1); rc=\$?; say "xenft failover: exit \$rc \$(echo \$out)" ;;
         recreate) \$xl destroy ft-guest > /dev/null 2>&1
                   out=\$(\$xl create /lab/pvh-ft.cfg 2>&1); rc=\$?; say "xl recreate: exit \$rc \$(echo \$out)" ;;
     esac) &
fi
# What the administrator sees, every 10 s, until the host is switched off.
while sleep 10; do
    /usr/sbin/xenft status --vm 1 2>&1 | grep -E 'role|exits|digests|live copy|failover|stopped' | sed "s/^ */LAB: \$role: status: /"
    say "domains: \$(\$xl list 2> /dev/null | awk 'NR > 1 { printf "%s ", \$1 }')"
done
EOF
chmod +x "$payload/run"
rm -f "$work/payload-failover.img"
mke2fs -q -t ext4 -d "$payload" "$work/payload-failover.img" 96M || { fail lab_payload "mke2fs failed"; finish; }

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
bash "$top/tests/istgt_conf.sh" "$work/lun" iqn.2026-11.lab.xenft shared 10.98.1.1:3260 10.98.1.0/24 127.0.0.1:3262 16 \
    > "$work/lun/istgt.conf"

# --- one case: boot both hosts, protect, cut the power of one ---------------------------------
boot() { # HOST(a|b) NETDEV-OF-THE-LOGGING-LINK [DOM0-KERNEL-PARAMETERS]
    local h=$1 n=1
    [ "$h" = b ] && n=2
    rm -f "$work/serial-$h.log"
    qemu-system-x86_64 -machine q35,accel=tcg -cpu qemu64,+svm,+npt -smp 1 -m 2048 \
        -display none -monitor none -no-reboot -serial "file:$work/serial-$h.log" \
        -kernel "$work/xen" \
        -append "console=com1 com1=115200 dom0_mem=768M bootscrub=false apicv=0 loglvl=all guest_loglvl=all" \
        -initrd "$work/vmlinuz root=/dev/vda ro console=hvc0 init=/sbin/lab-init lab.role=$h ${3:-},$work/initrd.img" \
        -drive "file=$work/rootfs.img,if=virtio,format=raw,snapshot=on" \
        -drive "file=$work/payload-failover.img,if=virtio,format=raw,readonly=on" \
        -netdev "$2" -device "virtio-net-pci,netdev=ft,mac=52:54:00:fe:00:0$n" \
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

# A blank shared LUN served by istgt (its pid in istgt_pid) with the arbitration record at
# epoch 1, as `xenft arbiter init` sets it up for a new pair.
fresh_lun() { # CASE
    local c=$1
    truncate -s 0 "$work/lun/lun0.img" && truncate -s 16M "$work/lun/lun0.img"
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
    wait_for a 'LAB: a: .*live copy sent to' 180 &&
        stamp "case $c: host B has the live copy: $(line_in a 'live copy sent to' | sed 's/.*live copy sent/sent/')"
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
    for _ in $(seq 600); do
        [ "$(stat -c %s "$work/download-$c" 2> /dev/null || echo 0)" -ge 131072 ] && break
        sleep 0.5
    done
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
    matched=$(grep -ao '[0-9][0-9]* digests matched\|digests matched [0-9][0-9]*' "$work/serial-b.log" | tail -n 1 | tr -dc '0-9')
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
    if seen_in a 'LAB: a: .*live copy sent to .* at exit [1-9][0-9]*: [1-9][0-9]* pages' &&
       seen_in b "LAB: b: .*live copy taken at the primary's exit [1-9]" &&
       seen_in b 'LAB: b: status: *live copy: *1, the last taken at'; then
        pass "${c}_backup_starts_from_a_live_copy_of_the_primary"
    else
        fail "${c}_backup_starts_from_a_live_copy_of_the_primary" "$(line_in a 'live copy') / $(line_in b 'live copy')"
    fi
    if [ "${matched:-0}" -ge 1 ] && ! seen_in b 'protection failed' && ! seen_in a 'protection failed'; then
        pass "${c}_backup_digests_match_the_primary"
    else
        fail "${c}_backup_digests_match_the_primary" "${matched:-no} digests matched; $(line_in b 'protection failed') $(line_in a 'protection failed')"
    fi
    if grep -aq 'LAB: a: status: *digests: *[1-9][0-9]* taken' "$work/serial-a.log" &&
       grep -aq 'LAB: b: status: *digests: *[1-9][0-9]* matched' "$work/serial-b.log"; then
        pass "${c}_xenft_status_reports_the_digests"
    else
        fail "${c}_xenft_status_reports_the_digests" "$(line_in a 'status: *digests') / $(line_in b 'status: *digests')"
    fi
    if seen_in $survivor "LAB: $survivor: status: *role: *\(live (was the backup)\|primary, running alone\), epoch 2" &&
       seen_in $survivor "LAB: $survivor: status: *last failover: .*\(went live at exit\|continues alone\)"; then
        pass "${c}_xenft_status_reports_the_failover"
    else
        fail "${c}_xenft_status_reports_the_failover" "$(grep -a "LAB: $survivor: status: *\(role\|last failover\)" "$work/serial-$survivor.log" | tr -d '\r' | tail -n 2 | tr '\n' ' ')"
    fi
    if [ "$c" = a-dies ]; then
        if seen_in b 'LAB: b: .*backup: test-and-set .*: won' && seen_in b 'LAB: b: .*went live at exit [1-9]'; then
            pass "${c}_backup_wins_the_test_and_set_and_goes_live"
        else
            fail "${c}_backup_wins_the_test_and_set_and_goes_live" "$(grep -a 'LAB: b: .*\(test-and-set\|live\|FAIL\|failed\)' "$work/serial-b.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
        fi
    else
        if seen_in a 'LAB: a: .*primary: test-and-set .*: won' && seen_in a 'LAB: a: .*won: domain [0-9]* continues alone'; then
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

run_late_case() { # host A alone first; host B joins later by a live copy, then A dies
    local c=b-late t0 put get ping_ok=no port=$((20000 + RANDOM % 20000))
    stamp "case $c: fresh LUN record, host A booting (backup-wait-ms 20000), host B booting but holding its xl create"
    fresh_lun $c
    boot a "socket,id=ft,listen=127.0.0.1:$port" lab.backup_wait=20000
    sleep 1
    boot b "socket,id=ft,connect=127.0.0.1:$port" lab.create=wait
    t0=$(date +%s)
    if ! wait_for a 'continues alone' 400; then
        fail "${c}_primary_without_backup_runs_alone" "no decision on host A within 400 s: $(grep -a 'LAB: a: ' "$work/serial-a.log" | tr -d '\r' | tail -n 3 | tr '\n' ' ')"
        kill -KILL $qemu_a $qemu_b $istgt_pid 2> /dev/null
        return
    fi
    stamp "case $c: host A runs alone, $(($(date +%s) - t0)) s after boot"
    client ping -c 3 -W 20 10.98.1.2 > "$work/ping-$c.log" 2>&1 && ping_ok=yes
    put=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "value-$c" http://10.98.1.2/kv/lab)
    get=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    echo "client: alone: ping $ping_ok, put $put, get $get"
    if seen_in a 'LAB: a: .*no backup took a copy within 20000 ms' && seen_in a 'LAB: a: .*primary: test-and-set .*: won' &&
       seen_in a 'LAB: a: .*won: domain [0-9]* continues alone' && [ "$put" = 201 ] && [ "$get" = "value-$c" ] &&
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
    if wait_for a 'LAB: a: .*protected again' 300; then
        stamp "case $c: host A protected again by host B's copy, $(($(date +%s) - tb)) s after the go-ahead"
    fi
    kill $go 2> /dev/null
    local put2 get2 get_after size
    put2=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X PUT --data-binary "joined-$c" http://10.98.1.2/kv/lab)
    echo "client: protected again: put $put2"
    wait_for b 'LAB: b: status: *digests: *[1-9][0-9]* matched' 90
    stamp "case $c: power cut of host A (SIGKILL to its QEMU)"
    local cut=$(date +%s)
    kill -KILL $qemu_a
    wait $qemu_a 2> /dev/null
    get_after=$(client curl -s --max-time 120 http://10.98.1.2/kv/lab)
    stamp "case $c: the client's GET answered $(($(date +%s) - cut)) s after the cut: '$get_after'"
    wait_for b "LAB: b: status: *last failover: " 30
    echo "timeline of case $c (host A, then host B):"
    grep -a "LAB: a: " "$work/serial-a.log" | tr -d '\r' | grep -v 'cannot connect\|status: ' | sed 's/^/    /' | tail -n 8
    grep -a "LAB: b: " "$work/serial-b.log" | tr -d '\r' | grep -v 'cannot connect\|status: ' | sed 's/^/    /' | tail -n 10
    echo "xenft status on host B at the end:"
    grep -a "LAB: b: status: " "$work/serial-b.log" | tr -d '\r' | tail -n 5 | sed 's/^/    /'
    kill -KILL $qemu_b $istgt_pid 2> /dev/null
    wait $qemu_b $istgt_pid 2> /dev/null
    if seen_in a "LAB: a: .*live copy sent to .* at exit [1-9][0-9]*: [1-9][0-9]* pages in [1-9][0-9]* rounds, then [0-9]* pages and [1-9][0-9]* disk blocks in the final pause.*protected again" &&
       seen_in b "LAB: b: .*live copy taken at the primary's exit [1-9]"; then
        pass "${c}_late_backup_takes_a_live_copy_of_the_running_primary"
    else
        fail "${c}_late_backup_takes_a_live_copy_of_the_running_primary" "$(line_in a 'live copy') / $(line_in b 'live copy') $(line_in b 'protection failed')"
    fi
    local matched
    matched=$(grep -ao '[0-9][0-9]* digests matched\|digests matched [0-9][0-9]*' "$work/serial-b.log" | tail -n 1 | tr -dc '0-9')
    if [ "${matched:-0}" -ge 1 ] && ! seen_in b 'protection failed'; then
        pass "${c}_late_backup_digests_match_the_primary"
    else
        fail "${c}_late_backup_digests_match_the_primary" "${matched:-no} digests matched; $(line_in b 'protection failed')"
    fi
    if [[ $put2 =~ ^20[14]$ ]] && seen_in b 'LAB: b: .*backup: test-and-set .*epoch 2 -> 3: won' &&
       seen_in b 'LAB: b: .*went live at exit [1-9]' && [ "$get_after" = "joined-$c" ]; then
        pass "${c}_late_backup_goes_live_with_the_acknowledged_put"
    else
        fail "${c}_late_backup_goes_live_with_the_acknowledged_put" "put $put2, get after the cut '$get_after'; $(grep -a 'LAB: b: .*\(test-and-set\|live\|failed\)' "$work/serial-b.log" | tr -d '\r' | head -n 3 | tr '\n' ' ')"
    fi
}

# The administrator's action on HOST, booted with lab.act=...: the build machine serves
# /act-HOST (port 7999) until HOST reports it on its serial line ("WHAT: exit N ...").
administrator() { # CASE HOST WHAT
    local go dir=$work/go-$1-$2
    # Only this host's word: a file left by an earlier run would set the other host off too.
    rm -rf "$dir" && mkdir -p "$dir" && touch "$dir/act-$2"
    python3 -m http.server 7999 --bind 10.98.1.1 --directory "$dir" > /dev/null 2>&1 &
    go=$!
    pids+=($go)
    stamp "case $1: go-ahead for $3 on host ${2^^}"
    wait_for "$2" "LAB: $2: $3: " 60 && stamp "case $1: $(line_in "$2" "$3: " | sed "s/.*LAB: $2: //")"
    kill $go 2> /dev/null
}

# Boots a pair for a case without a power cut, with host A's and host B's extra kernel
# parameters, and has the client PUT value-CASE once B has the live copy (put and get: the
# caller's). Fails the case and returns 1 when no copy comes.
protected_pair() { # CASE A-PARAMETERS B-PARAMETERS
    local c=$1 t0 port=$((20000 + RANDOM % 20000))
    fresh_lun $c
    boot a "socket,id=ft,listen=127.0.0.1:$port" "$2"
    sleep 1
    boot b "socket,id=ft,connect=127.0.0.1:$port" "$3"
    t0=$(date +%s)
    if ! wait_for a 'LAB: a: .*live copy sent to' 400; then
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

# Ends a case of protected_pair: prints its timeline (the last N1 lines of host FIRST, then
# N2 of host SECOND), powers both hosts and the LUN's target off, and checks the client's PUT.
close_pair() { # CASE FIRST N1 SECOND N2
    local c=$1
    echo "timeline of case $c (host ${2^^}, then host ${4^^}):"
    grep -a "LAB: $2: " "$work/serial-$2.log" | tr -d '\r' | grep -v 'cannot connect\|status: \|domains: ' | sed 's/^/    /' | tail -n "$3"
    grep -a "LAB: $4: " "$work/serial-$4.log" | tr -d '\r' | grep -v 'cannot connect\|status: \|domains: ' | sed 's/^/    /' | tail -n "$5"
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
    wait_for a 'LAB: a: status: *role: *paused' 40
    wait_for b 'LAB: b: status: *last failover: ' 30
    arbiter=$("$xenft_cli" arbiter show --url "$lun" --vm 1 2>&1 | head -n 1)
    echo "arbitration record: $arbiter"
    # The administrator tries to start the VM again on A while B runs it.
    administrator $c a "xl recreate"
    local get_last
    get_last=$(client curl -s --max-time 60 http://10.98.1.2/kv/lab)
    close_pair $c b 7 a 4
    if seen_in b 'LAB: b: xenft failover: exit 0 failover requested' &&
       seen_in b 'LAB: b: .*operator failover: this backup stops acking' &&
       seen_in b 'LAB: b: .*backup: test-and-set .*epoch 1 -> 2: won' &&
       seen_in b 'LAB: b: .*operator failover: went live at exit [1-9]' &&
       seen_in b 'LAB: b: status: *last failover: .*operator failover: went live'; then
        pass "${c}_xenft_failover_makes_the_backup_go_live"
    else
        fail "${c}_xenft_failover_makes_the_backup_go_live" "$(grep -a 'LAB: b: .*\(xenft failover\|operator\|test-and-set\|failed\)' "$work/serial-b.log" | tr -d '\r' | head -n 4 | tr '\n' ' ')"
    fi
    if [ "$get_after" = "value-$c" ] && [[ $put_after =~ ^20[14]$ ]]; then
        pass "${c}_acknowledged_put_survives_and_service_goes_on"
    else
        fail "${c}_acknowledged_put_survives_and_service_goes_on" "get '$get_after', put $put_after"
    fi
    if seen_in a 'LAB: a: .*the backup says it runs the VM now' && seen_in a 'LAB: a: .*primary: test-and-set .*: lost' &&
       seen_in a 'LAB: a: .*lost: domain [0-9]* paused' && seen_in a 'LAB: a: status: *role: *paused' &&
       [[ $arbiter == *"epoch 2, owner host 2"* ]]; then
        pass "${c}_primary_loses_the_test_and_set_and_pauses"
    else
        fail "${c}_primary_loses_the_test_and_set_and_pauses" "$(grep -a 'LAB: a: .*\(lost\|test-and-set\|paused\)' "$work/serial-a.log" | tr -d '\r' | head -n 3 | tr '\n' ' '); arbiter '$arbiter'"
    fi
    if seen_in a 'LAB: a: xl recreate: exit [1-9].*host 2 runs this VM' && [ "$get_last" = "after-$c" ]; then
        pass "${c}_no_second_copy_on_the_former_primary"
    else
        fail "${c}_no_second_copy_on_the_former_primary" "$(line_in a 'xl recreate'); client GET '$get_last'"
    fi
}

run_end_case() { # the administrator ends the protected VM on host A: host B must not take it over
    local c=a-ends put get
    stamp "case $c: fresh LUN record, both hosts booting (host A ends the VM with xl destroy on the lab's word)"
    protected_pair $c lab.act=destroy "" || return
    local ended=$(date +%s)
    administrator $c a "xl destroy ft-guest"
    wait_for b "LAB: b: .*the primary's domain ended" 60
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
       seen_in a 'LAB: a: .*ended: the domain .*the backup acknowledged the end and does not take over'; then
        pass "${c}_primary_tells_the_backup_that_the_vm_ended"
    else
        fail "${c}_primary_tells_the_backup_that_the_vm_ended" "$(line_in a 'xl destroy ft-guest') / $(line_in a 'ended: ')"
    fi
    if seen_in b "LAB: b: .*the primary's domain ended at its exit [1-9][0-9]* (the domain was destroyed): the VM is not taken over" &&
       ! seen_in b 'test-and-set' && ! seen_in b 'went live' && [[ $arbiter == *"epoch 1,"* ]] &&
       [[ $get_after != *value-$c* ]]; then
        pass "${c}_backup_ends_with_the_vm_and_does_not_take_it_over"
    else
        fail "${c}_backup_ends_with_the_vm_and_does_not_take_it_over" "$(line_in b "primary's domain ended") $(line_in b 'test-and-set') $(line_in b 'went live'); arbiter '$arbiter'; client GET '$get_after'"
    fi
    # A's xenftd is stopped by xl destroy's hook (or exits by itself if it saw the end first).
    if seen_in a 'LAB: a: .*\(xenftd exits\|stopping on signal\)' && seen_in b 'LAB: b: .*xenftd exits' &&
       seen_in b 'LAB: b: domains: Domain-0 [^a-z]*$'; then
        pass "${c}_both_xenftd_exit_and_the_backup_domain_is_removed"
    else
        fail "${c}_both_xenftd_exit_and_the_backup_domain_is_removed" "$(line_in a 'xenftd exits\|stopping on signal') / $(line_in b 'xenftd exits') / $(grep -a 'LAB: b: domains: ' "$work/serial-b.log" | tr -d '\r' | tail -n 1)"
    fi
}

for c in $cases_to_run; do
    case $c in
        b-late) run_late_case ;;
        a-ends) run_end_case ;;
        operator) run_operator_case ;;
        *) run_case "$c" ;;
    esac
done
finish
