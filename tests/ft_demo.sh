#!/bin/bash
# The local FT demo (README's main job) and the process-level failover test: two "hosts" and a
# client in network namespaces, a real iSCSI target as the shared LUN, the test guest on host
# A protected by host B, client traffic, then xenftd on A killed with SIGKILL; B goes live and
# the client carries on. Prints a timeline and the client's consistency verdict; exits 0 only
# if B went live and the verdict is "consistent".
#
#   ft_demo.sh BUILD_DIR [--quiet]
#
# Topology (all private, removed at exit):
#   netns xftc-$$ (client + LAN): bridge br0 10.99.0.1/24, istgt on 10.99.0.1, kv_load
#   netns xfta-$$ (host A): bridge bra 10.99.0.11 with the guest's TAP tapa, veth to br0
#   netns xftb-$$ (host B): bridge brb 10.99.0.12 with the guest's TAP tapb, veth to br0
#   guest: 10.99.0.2, MAC 52:54:00:58:46:01 (the same on both hosts; B announces it when live)
# The logging channel and heartbeats go between 10.99.0.11 and 10.99.0.12.
set -euo pipefail
build=$(cd "${1:?usage: ft_demo.sh BUILD_DIR [--quiet]}" && pwd)
quiet=${2:-}
xenft=$build/dom0-tools/xenft/xenft
xenftd=$build/xenft/daemon/xenftd
kv_load=$build/tests/kv_load
guest=$build/tests/guest/xenft-guest.elf
for f in "$xenft" "$xenftd" "$kv_load" "$guest"; do
    [ -e "$f" ] || { echo "ft_demo: $f is missing (build first: make -C $build all check_PROGRAMS=...)" >&2; exit 2; }
done
for tool in ip istgt; do
    command -v $tool >/dev/null || { echo "ft_demo: $tool is not installed" >&2; exit 2; }
done

id=$$
A=xfta-$id B=xftb-$id C=xftc-$id
work=$(mktemp -d /tmp/xenft-demo-XXXXXX)
pids=()
say() { [ -n "$quiet" ] || echo "$@"; }
now_ms() { date +%s%3N; }
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in $A $B $C; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# --- the network ---------------------------------------------------------------------------
for ns in $A $B $C; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n $C link add br0 type bridge
ip -n $C addr add 10.99.0.1/24 dev br0
ip -n $C link set br0 up
for h in a b; do
    ns=$A ip=10.99.0.11
    [ $h = b ] && ns=$B ip=10.99.0.12
    ip -n "$ns" link add br$h type bridge
    ip -n "$ns" tuntap add dev tap$h mode tap
    ip -n "$ns" link set tap$h master br$h
    ip -n "$ns" link add v$h type veth peer name lan$h netns $C
    ip -n "$ns" link set v$h master br$h
    ip -n $C link set lan$h master br0
    ip -n "$ns" addr add $ip/24 dev br$h
    for l in br$h tap$h v$h; do ip -n "$ns" link set $l up; done
    ip -n $C link set lan$h up
done

# --- the shared LUN: istgt in the client's namespace ------------------------------------------
mkdir -p "$work/lun"
: > "$work/lun/auth.conf"
truncate -s 16M "$work/lun/lun0.img"
cat > "$work/lun/istgt.conf" <<EOF
[Global]
  NodeBase "iqn.2026-11.demo.xenft"
  PidFile $work/lun/istgt.pid
  AuthFile $work/lun/auth.conf
  MediaDirectory $work/lun
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod None
  MaxSessions 16
  MaxConnections 4
[UnitControl]
  AuthMethod None
  Portal UC1 127.0.0.1:3261
  Netmask 127.0.0.1
[PortalGroup1]
  Portal DA1 10.99.0.1:3260
[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 10.99.0.0/24
[LogicalUnit1]
  TargetName shared
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  LUN0 Storage $work/lun/lun0.img 16MB
EOF
ip netns exec $C istgt -c "$work/lun/istgt.conf" -D > "$work/istgt.log" 2>&1 &
pids+=($!)
lun=iscsi://10.99.0.1:3260/iqn.2026-11.demo.xenft:shared/0
for _ in $(seq 100); do ip netns exec $C bash -c 'exec 3<>/dev/tcp/10.99.0.1/3260' 2>/dev/null && break; sleep 0.05; done
ip netns exec $C "$xenft" arbiter init --url "$lun" --vm 7 --epoch 1 --force > "$work/arbiter-init.txt"

# --- certificates, heartbeat key, configurations ---------------------------------------------
"$xenft" cert ca --name demo-ca --out "$work" > /dev/null
for h in hosta hostb; do
    "$xenft" cert create --name $h.xenft.demo --out "$work" --ca-cert "$work/demo-ca.crt" --ca-key "$work/demo-ca.key" > /dev/null
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/hb.key"
chmod 600 "$work/hb.key"
config() { # host-letter role self peer my-ip peer-ip peer-name
    cat <<EOF
[vm]
id = 7
image = $guest
cmdline = ip=10.99.0.2
[pair]
host-id = $3
peer-id = $4
role = $2
epoch = 1
[network]
tap = tap$1
mac = 52:54:00:58:46:01
[disk]
lun = $lun
first-lba = 64
size-mib = 1
[arbiter]
lun = $lun
initiator = iqn.2026-11.demo.xenft:host$1
[channel]
listen = $5:7000
peer = $6:7000
cert = $work/host$1.xenft.demo.crt
key = $work/host$1.xenft.demo.key
ca = $work/demo-ca.crt
peer-name = $7
[heartbeat]
listen = $5:7001
peer = $6:7001
key-file = $work/hb.key
[control]
socket = $work/host$1.sock
EOF
}
config a primary 1 2 10.99.0.11 10.99.0.12 hostb.xenft.demo > "$work/a.conf"
config b backup 2 1 10.99.0.12 10.99.0.11 hosta.xenft.demo > "$work/b.conf"

# --- run -------------------------------------------------------------------------------------
t0=$(now_ms)
ip netns exec $B "$xenftd" --config "$work/b.conf" > "$work/b.log" 2>&1 &
pids+=($!)
sleep 0.5
ip netns exec $A "$xenftd" --config "$work/a.conf" > "$work/a.log" 2>&1 &
pid_a=$!
pids+=($pid_a)
for _ in $(seq 100); do [ -S "$work/hosta.sock" ] && break; sleep 0.1; done
say "== host A (primary) and host B (backup) running the test guest; client starts"
ip netns exec $C "$kv_load" --server 10.99.0.2 --local 10.99.0.1 --seconds 16 --seed $id > "$work/client.log" 2>&1 &
client=$!
sleep 6
say "== status before the failure"
[ -n "$quiet" ] || "$xenft" status --socket "$work/hosta.sock" || true
[ -n "$quiet" ] || "$xenft" status --socket "$work/hostb.sock" || true

say "== kill -9 xenftd on host A"
kill -9 $pid_a
t_kill=$(now_ms)
live=
for _ in $(seq 300); do
    if "$xenft" status --socket "$work/hostb.sock" --json 2>/dev/null | grep -q '"role":"primary (alone)"'; then
        live=$(now_ms); break
    fi
    sleep 0.02
done
wait $client && verdict_ok=1 || verdict_ok=0

say "== what host B did after the kill"
# xenftd's lines have no timestamps of their own; the backup's order of events and the first
# status poll that saw it live bound them.
grep -E 'suspected|test-and-set won|going live|running alone' "$work/b.log" | sed 's/^/   host B: /' || true
if [ -n "$live" ]; then
    say "   status shows host B live after $((live - t_kill)) ms"
else
    echo "ft_demo: host B did not go live within 6 s" >&2
fi
say "== client"
[ -n "$quiet" ] || tail -3 "$work/client.log"
[ -n "$quiet" ] || "$xenft" status --socket "$work/hostb.sock" || true
if [ -n "$live" ] && [ $verdict_ok = 1 ]; then
    echo "ft_demo: PASS: host B went live $((live - t_kill)) ms after host A's xenftd was killed; $(grep '^client: .* requests' "$work/client.log")"
    exit 0
fi
echo "ft_demo: FAIL" >&2
echo "--- host A" >&2; cat "$work/a.log" >&2
echo "--- host B" >&2; cat "$work/b.log" >&2
echo "--- client" >&2; cat "$work/client.log" >&2
exit 1
