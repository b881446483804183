#!/bin/bash
# The local FT demo (README's main job) and the process-level system tests: two "hosts" and a
# client in network namespaces, a real iSCSI target as the shared LUN, the test guest on host A
# protected by host B, client traffic, and a fault. Prints a timeline and the client's
# consistency verdict; exits 0 only if the scenario's expectations held and the verdict is
# "consistent" (every request answered, one history).
#
#   ft_demo.sh BUILD_DIR [--quiet] [--scenario NAME]
#
# XENFT_DEMO_KEEP=1 keeps the logs and configurations (the path is printed at the end).
#
# Scenarios (the demo is "failover"):
#   failover             kill -9 of A's xenftd under load: B goes live; A's xenftd starts again
#                        with its unchanged configuration, joins and is re-protected by a live
#                        copy of the running VM
#   backup-restart       kill -9 of B's xenftd: A wins the test-and-set and runs alone; B starts
#                        again and is re-protected without stopping the guest; then A is killed
#                        and B goes live
#   partition            the logging channel and heartbeats between A and B cut, storage
#                        reachable: exactly one side live; healed: the other re-protected
#   partition-no-storage the channel cut and both hosts cut from the storage: neither goes live,
#                        outputs stay held; storage back: exactly one live, nothing lost
#   tcp                  the guest's HTTP service (lwIP) with standard clients: a curl download
#                        of /stream/ (64 MiB) and wrk run while A's xenftd is killed; the
#                        download completes on the same TCP connection with the right SHA-256,
#                        wrk sees no socket errors but timeouts, every PUT acknowledged before
#                        or after is readable; ping works before and after. Prints the longest
#                        stall of the download around the failover
#   measure              (bench/tcp_bench.sh) HTTP requests/s with wrk and a /stream/ download's
#                        rate with curl through the protected pair; prints "measure: ..."
#   measure-alone        the same with host A alone (host B never started: no FT, outputs
#                        leave at once), the baseline
#
# Topology (all private, removed at exit):
#   netns xftc-$$ (client + LAN): bridge br0 10.99.0.1/24, istgt on 10.99.0.1, kv_load
#   netns xfta-$$ (host A): bridge bra 10.99.0.11 with the guest's TAP tapa, veth to br0
#   netns xftb-$$ (host B): bridge brb 10.99.0.12 with the guest's TAP tapb, veth to br0
#   guest: 10.99.0.2, MAC 52:54:00:58:46:01 (the same on both hosts; the live one announces it)
# The logging channel and heartbeats go between 10.99.0.11 and 10.99.0.12; faults are nftables
# rules on the hosts' own traffic (the guest's frames are bridged and never see them).
set -euo pipefail
build=$(cd "${1:?usage: ft_demo.sh BUILD_DIR [--quiet] [--scenario NAME]}" && pwd)
shift
quiet= scenario=failover
while [ $# -gt 0 ]; do
    case $1 in
    --quiet) quiet=1 ;;
    --scenario) scenario=${2:?--scenario needs a name}; shift ;;
    *) echo "ft_demo: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case $scenario in
failover | backup-restart | partition | partition-no-storage | tcp | measure | measure-alone) ;;
*) echo "ft_demo: unknown scenario $scenario (failover, backup-restart, partition, partition-no-storage, tcp, measure, measure-alone)" >&2; exit 2 ;;
esac
xenft=$build/dom0-tools/xenft/xenft
xenftd=$build/xenft/daemon/xenftd
kv_load=$build/tests/kv_load
guest=$build/tests/guest/xenft-guest.elf
for f in "$xenft" "$xenftd" "$kv_load" "$guest"; do
    [ -e "$f" ] || { echo "ft_demo: $f is missing (build first: make -C $build all check_PROGRAMS=...)" >&2; exit 2; }
done
if ! [ -c /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "ft_demo: the KVM backend needs a usable /dev/kvm, which this machine does not have (./scripts/demo runs the demo on two Xen hosts under QEMU instead)" >&2
    exit 2
fi
tools="ip istgt nft"
case $scenario in tcp | measure*) tools="$tools curl wrk ping sha256sum" ;; esac
for tool in $tools; do
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
    if [ -n "${XENFT_DEMO_KEEP:-}" ]; then echo "ft_demo: logs kept in $work" >&2; else rm -rf "$work"; fi
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
truncate -s 16M "$work/lun/lun0.img"
bash "$(dirname "$0")/istgt_conf.sh" "$work/lun" iqn.2026-11.demo.xenft shared 10.99.0.1:3260 10.99.0.0/24 \
    127.0.0.1:3261 16 > "$work/lun/istgt.conf"
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

# --- helpers -----------------------------------------------------------------------------------
declare -A pid host_ns sock
host_ns[a]=$A host_ns[b]=$B
sock[a]=$work/hosta.sock sock[b]=$work/hostb.sock
t0=$(now_ms)
mark() { say "   [+$(( $(now_ms) - t0 )) ms] $*"; }
# xenftd's lines, each prefixed with the wall-clock time in ms it was read (for the timeline).
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s%3N)" "$line"; done; }
start_host() { # a|b
    ip netns exec "${host_ns[$1]}" "$xenftd" --config "$work/$1.conf" > >(stamp >> "$work/$1.log") 2>&1 &
    pid[$1]=$!
    pids+=(${pid[$1]})
}
kill_host() { # sets t_kill
    t_kill=$(now_ms)
    kill -9 "${pid[$1]}" 2>/dev/null || fail "host ${1^^}'s xenftd had already exited before it was to be killed"
    wait "${pid[$1]}" 2>/dev/null || true
}
role_of() {
    local r
    r=$("$xenft" status --socket "${sock[$1]}" --json 2>/dev/null | grep -o '"role_text":"[^"]*"' | cut -d'"' -f4) || true
    echo "${r:-not answering on ${sock[$1]}}"
}
epoch_of() { "$xenft" status --socket "${sock[$1]}" --json 2>/dev/null | grep -o '"epoch":[0-9]*' | cut -d: -f2; }
# wait_role HOST ROLE SECONDS: polls every 20 ms
wait_role() {
    local end=$(( $(now_ms) + $3 * 1000 ))
    while [ "$(now_ms)" -lt $end ]; do
        [ "$(role_of "$1")" = "$2" ] && return 0
        sleep 0.02
    done
    return 1
}
show_status() { [ -n "$quiet" ] || { "$xenft" status --socket "${sock[$1]}" 2>/dev/null | sed "s/^/   host ${1^^}: /" || true; }; }
# nftables faults on a host's own traffic: the channel and heartbeats to the peer, the storage.
cut_off() { # HOST peer|storage
    local match
    if [ "$2" = peer ]; then
        local other=10.99.0.12
        [ "$1" = b ] && other=10.99.0.11
        match="ip daddr $other drop; ip saddr $other drop"
    else
        match="ip daddr 10.99.0.1 tcp dport 3260 drop; ip saddr 10.99.0.1 tcp sport 3260 drop"
    fi
    printf 'table inet xft_%s {\n chain out { type filter hook output priority 0; %s; }\n chain in { type filter hook input priority 0; %s; }\n}\n' \
        "$2" "${match%%;*}" "${match#*; }" | ip netns exec "${host_ns[$1]}" nft -f -
}
heal() { # HOST peer|storage
    ip netns exec "${host_ns[$1]}" nft delete table inet "xft_$2" 2>/dev/null || true
}
# What each host's xenftd last logged, once per run: the cause behind a failed expectation
# (its log is deleted at exit unless XENFT_DEMO_KEEP is set).
cause_shown=
daemon_cause() {
    local h state
    for h in a b; do
        [ -s "$work/$h.log" ] || { echo "ft_demo:   host ${h^^}'s xenftd logged nothing" >&2; continue; }
        state=running
        kill -0 "${pid[$h]:-0}" 2>/dev/null || state="not running"
        echo "ft_demo:   host ${h^^}'s xenftd ($state) last logged:" >&2
        tail -n 4 "$work/$h.log" | cut -d' ' -f2- | sed 's/^/ft_demo:     /' >&2
    done
}
fail() {
    echo "ft_demo: $scenario: $*" >&2
    [ -n "$cause_shown" ] || { cause_shown=1; daemon_cause; }
    failed=1
}
# kill -9 of A's xenftd; B must go live within 6 s (sets live_ms); then B's timeline.
kill_a_until_b_live() {
    kill_host a
    if wait_role b "primary (alone)" 6; then
        live_ms=$(( $(now_ms) - t_kill ))
        mark "host B live ($live_ms ms after the kill)"
    else
        fail "host B did not go live within 6 s"
    fi
    timeline_after_kill
}
timeline_after_kill() {
    say "== timeline: host B after the kill (ms after SIGKILL, as B's lines were written)"
    sleep 0.5 # the first released output follows the go-live by a client's retry at most
    grep -E 'suspected|test-and-set won|going live|first output released' "$work/b.log" |
        while read -r ms line; do say "   +$((ms - t_kill)) ms  ${line#vm 7 (host 2): }"; done || true
}
# rejoin HOST PRIMARY: HOST's xenftd starts again with its unchanged configuration; it must
# become the backup of PRIMARY through a live copy within 30 s, the guest running throughout.
rejoin() {
    local t_back
    t_back=$(now_ms)
    start_host "$1"
    if wait_role "$1" "backup (replaying)" 30 && wait_role "$2" "primary (protected)" 5; then
        mark "host ${1^^} re-protects the VM: backup again $(( $(now_ms) - t_back )) ms after its xenftd started"
        grep -hE 'joining|live copy to host [12] done' "$work/$1.log" "$work/$2.log" | sed 's/^[0-9]* /   /' || true
    else
        fail "host ${1^^} was not re-protected within 30 s (A: $(role_of a), B: $(role_of b))"
    fi
}
# The tcp scenario: standard clients in the client's namespace against the guest's HTTP
# service, host A's xenftd killed while they run. Logs are $work/http-*.log.
http() { ip netns exec $C "$@"; }
url=http://10.99.0.2
tcp_scenario() {
    local size=$((64 << 20))
    http ping -c 3 -i 0.2 -W 2 10.99.0.2 > "$work/http-ping-before.log" 2>&1 || fail "ping before the failover got no reply"
    mark "ping: $(grep -o '[0-9]* received' "$work/http-ping-before.log" || echo 'no reply'), $(grep -o 'rtt.*' "$work/http-ping-before.log" || true)"
    http curl -sS --max-time 10 "$url/" > "$work/http-status.log" 2>&1 && grep -q '^xenft test guest' "$work/http-status.log" ||
        fail "GET / did not return the status page"
    [ -n "$quiet" ] || sed 's/^/   GET \/: /' "$work/http-status.log"
    http_refusals
    say "== clients start: curl downloads $((size >> 20)) MiB of /stream/, wrk loads GET / (4 connections), a loop PUTs one key per request"
    # PUTs, one connection each, through the failover; "i code" per request.
    : > "$work/http-puts.log"
    (i=0; while [ ! -e "$work/stop-puts" ]; do
        i=$((i + 1))
        code=$(http curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT --data-binary "value-$i-$id" "$url/kv/k$i") || code=000
        echo "$i $code" >> "$work/http-puts.log"
    done) &
    local puts=$!
    # The download and its progress, sampled every 10 ms.
    http curl -sS -v --max-time 120 -w 'connects %{num_connects} bytes %{size_download}\n' \
        -o "$work/stream.bin" "$url/stream/$size" > "$work/http-curl.log" 2> "$work/http-curl-verbose.log" &
    local download=$!
    (while kill -0 $download 2> /dev/null; do echo "$(now_ms) $(stat -c %s "$work/stream.bin" 2> /dev/null || echo 0)"; sleep 0.01; done) > "$work/http-progress.log" &
    local sampler=$!
    http wrk -t1 -c4 -d10s --timeout 4s "$url/" > "$work/http-wrk.log" 2>&1 &
    local load=$!
    # The kill falls when a quarter of the download is in.
    while kill -0 $download 2> /dev/null && [ "$(stat -c %s "$work/stream.bin" 2> /dev/null || echo 0)" -lt $((size / 4)) ]; do
        sleep 0.01
    done
    kill -0 $download 2> /dev/null || fail "the download ended before the failover"
    say "== kill -9 xenftd on host A during the download, wrk and the PUTs"
    kill_a_until_b_live
    wait $download || fail "curl's download failed: $(tail -n 2 "$work/http-curl-verbose.log")"
    wait $sampler $load || true
    touch "$work/stop-puts"
    wait $puts || true
    # The download: complete, the right bytes, one connection.
    local expected got connects
    expected=$(set +o pipefail; seq -f %015.0f 0 $((size / 16)) | head -c $size | sha256sum | cut -d' ' -f1)
    got=$(sha256sum < "$work/stream.bin" | cut -d' ' -f1)
    connects=$(grep -c '^\* Connected to' "$work/http-curl-verbose.log" || true)
    [ "$got" = "$expected" ] || fail "the download's SHA-256 is $got, not $expected ($(stat -c %s "$work/stream.bin") of $size bytes)"
    grep -q '^connects 1 ' "$work/http-curl.log" && [ "$connects" = 1 ] ||
        fail "the download used more than one TCP connection ($(cat "$work/http-curl.log"), $connects 'Connected to')"
    # The longest gap in the download's progress (10 ms samples), and where the kill fell.
    stall_ms=$(awk -v kill="$t_kill" 'NR > 1 && $2 == last_size { if ($1 - since > worst) worst = $1 - since; next }
        { last_size = $2; since = $1 } END { print worst + 0 }' "$work/http-progress.log")
    mark "download: $size bytes, SHA-256 ${got:0:16}..., one connection; longest stall $stall_ms ms"
    # wrk: socket errors other than timeouts fail the run.
    local errors
    errors=$(grep -o 'Socket errors: connect [0-9]*, read [0-9]*, write [0-9]*' "$work/http-wrk.log" || true)
    if [ -n "$errors" ] && [ "$errors" != "Socket errors: connect 0, read 0, write 0" ]; then
        fail "wrk: $errors"
    fi
    grep -q 'requests in' "$work/http-wrk.log" || fail "wrk did not finish: $(tail -n 3 "$work/http-wrk.log")"
    grep -q 'Non-2xx' "$work/http-wrk.log" && fail "wrk got non-2xx answers"
    mark "wrk: $(grep 'requests in' "$work/http-wrk.log" | sed 's/^ *//'); $(grep -o 'Socket errors.*' "$work/http-wrk.log" || echo 'no socket errors')"
    # Every acknowledged PUT is readable after the failover.
    local acked=0 lost=0 i code value
    while read -r i code; do
        case $code in 201 | 204) ;; *) continue ;; esac
        acked=$((acked + 1))
        value=$(http curl -s --max-time 10 "$url/kv/k$i") || value=
        [ "$value" = "value-$i-$id" ] || { lost=$((lost + 1)); echo "k$i: acknowledged ($code), now '$value'" >> "$work/http-lost.log"; }
    done < "$work/http-puts.log"
    [ $acked -gt 0 ] || fail "no PUT was acknowledged"
    [ $lost = 0 ] || fail "$lost of $acked acknowledged PUTs are not readable after the failover: $(head -n 3 "$work/http-lost.log")"
    say "== after the failover"
    mark "PUTs: $acked acknowledged ($(grep -vc ' 20[14]$' "$work/http-puts.log" || true) not), every one readable after the failover"
    http ping -c 3 -i 0.2 -W 2 10.99.0.2 > "$work/http-ping-after.log" 2>&1 || fail "ping after the failover got no reply"
    mark "ping: $(grep -o '[0-9]* received' "$work/http-ping-after.log" || echo 'no reply')"
    summary="host B went live ${live_ms:-?} ms after the kill; a $((size >> 20)) MiB download on one connection completed with the right SHA-256 (longest stall $stall_ms ms); wrk: no socket errors but timeouts; all $acked acknowledged PUTs readable"
}
# Bad requests get their error status and change nothing: the service answers normally after.
http_refusals() {
    local code expect what
    check_code() { # EXPECTED WHAT CURL-ARGS...
        expect=$1 what=$2
        shift 2
        code=$(http curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@") || true
        [ "$code" = "$expect" ] || fail "$what: HTTP $code, not $expect"
    }
    check_code 405 "DELETE /" -X DELETE "$url/"
    check_code 404 "GET of an unknown path" "$url/nothing/here"
    check_code 404 "GET of a key never stored" "$url/kv/never-stored-$id"
    check_code 400 "a key with a character outside [A-Za-z0-9._-]" "$url/kv/a%20b"
    check_code 413 "a 1,000-byte value" -X PUT --data-binary "$(head -c 1000 /dev/zero | tr '\0' x)" "$url/kv/big"
    check_code 501 "a chunked body" -X PUT -H 'Transfer-Encoding: chunked' --data-binary x "$url/kv/chunked"
    check_code 431 "a 3 KiB header" -H "X-Filler: $(head -c 3000 /dev/zero | tr '\0' y)" "$url/"
    check_code 400 "/stream/ with a non-number" "$url/stream/12ab"
    # Not HTTP at all: a 400 and the connection closed.
    code=$(http bash -c 'exec 3<>/dev/tcp/10.99.0.2/80; printf "\x01\x02 garbage\r\n\r\n" >&3; head -c 12 <&3') || true
    [ "$code" = "HTTP/1.1 400" ] || fail "raw garbage: the guest answered '$code', not 'HTTP/1.1 400'"
    check_code 200 "GET / after the bad requests" "$url/"
    mark "bad requests refused (405, 404, 404, 400, 413, 501, 431, 400, 400 for raw bytes); the service still answers"
}

# measure, measure-alone: requests/s of GET / under wrk (4 connections, 5 s), then the rate
# of a 64 MiB /stream/ download alone.
measure_http() {
    local rps bytes_s idle
    read -r _ u1 n1 s1 i1 w1 _ < /proc/stat
    http wrk -t1 -c"${MEASURE_CONNECTIONS:-4}" -d5s --timeout 4s "$url/" > "$work/http-wrk.log" 2>&1 || fail "wrk failed: $(tail -n 2 "$work/http-wrk.log")"
    read -r _ u2 n2 s2 i2 w2 _ < /proc/stat
    idle=$(( 100 * (i2 + w2 - i1 - w1) / (u2 + n2 + s2 + i2 + w2 - u1 - n1 - s1 - i1 - w1) ))
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/http-wrk.log")
    bytes_s=$(http curl -sS --max-time 120 -o /dev/null -w '%{speed_download}' "$url/stream/$((64 << 20))") ||
        fail "the download failed"
    [ -n "$rps" ] && [ -n "$bytes_s" ] || fail "no figures (wrk: $(tail -n 2 "$work/http-wrk.log"))"
    echo "measure: http_rps ${rps:-0} stream_mb_s $(awk -v b="${bytes_s:-0}" 'BEGIN { printf "%.3f", b / 1048576 }') cpu_idle_pct_under_wrk $idle"
    summary="measured"
}
failed=0

# --- run ---------------------------------------------------------------------------------------
seconds=24
[ "$scenario" = failover ] && seconds=20
[ "$scenario" = measure-alone ] || start_host b
sleep 0.5
start_host a
for _ in $(seq 100); do [ -S "${sock[a]}" ] && break; sleep 0.1; done
if [ "$scenario" = measure-alone ]; then
    say "== host A runs the test guest alone (no backup: no FT)"
    wait_role a "primary (alone)" 15 || fail "host A did not run alone (it is $(role_of a))"
    client=
elif [ "$scenario" = tcp ] || [ "$scenario" = measure ]; then
    say "== host A (primary) and host B (backup) run the test guest"
    wait_role a "primary (protected)" 15 || fail "the pair did not form (A is $(role_of a))"
    client=
else
    say "== host A (primary) and host B (backup) run the test guest; the client starts (${seconds} s)"
    ip netns exec $C "$kv_load" --server 10.99.0.2 --local 10.99.0.1 --seconds $seconds --seed $id > "$work/client.log" 2>&1 &
    client=$!
    sleep 5
    wait_role a "primary (protected)" 10 || fail "the pair did not form (A is $(role_of a))"
fi
show_status a
show_status b
summary=

case $scenario in
failover)
    say "== kill -9 xenftd on host A"
    kill_a_until_b_live
    sleep 2
    say "== host A comes back: xenftd starts again with the same configuration"
    rejoin a b
    summary="host B went live ${live_ms:-?} ms after host A's xenftd was killed; A rejoined as backup"
    ;;
backup-restart)
    say "== kill -9 xenftd on host B (the backup)"
    kill_host b
    wait_role a "primary (alone)" 6 && mark "host A runs alone ($(( $(now_ms) - t_kill )) ms after the kill, epoch $(epoch_of a))" ||
        fail "host A did not continue alone"
    sleep 1
    say "== host B's xenftd starts again"
    rejoin b a
    sleep 2
    say "== kill -9 xenftd on host A: the re-protected backup takes over"
    kill_host a
    wait_role b "primary (alone)" 6 && live_ms=$(( $(now_ms) - t_kill )) && mark "host B live ($live_ms ms after the kill, epoch $(epoch_of b))" ||
        fail "host B did not go live"
    summary="A ran alone, B re-protected by a live copy, then live ${live_ms:-?} ms after A was killed"
    ;;
partition | partition-no-storage)
    say "== cut the logging channel and heartbeats between A and B"
    [ "$scenario" = partition-no-storage ] && { say "== and both hosts from the storage"; cut_off a storage; cut_off b storage; }
    cut_off a peer
    t_cut=$(now_ms)
    if [ "$scenario" = partition-no-storage ]; then
        # Nobody can win the test-and-set: nobody may go live, whatever the wait.
        end=$(( t_cut + 4000 ))
        while [ "$(now_ms)" -lt $end ]; do
            ra=$(role_of a) rb=$(role_of b)
            [ "$ra" = "primary (alone)" ] && fail "host A went live without the arbiter"
            [ "$rb" = "primary (alone)" ] && fail "host B went live without the arbiter"
            sleep 0.05
        done
        mark "4 s without storage: A is $(role_of a), B is $(role_of b); outputs held on A: $("$xenft" status --socket "${sock[a]}" --json | grep -o '"held_outputs":[0-9]*' | cut -d: -f2)"
        say "== storage back (the channel stays cut)"
        heal a storage
        heal b storage
        t_cut=$(now_ms)
    fi
    # Exactly one side live: watch for 3 s after the first one is.
    live=
    end=$(( t_cut + 15000 ))
    while [ "$(now_ms)" -lt $end ] && [ -z "$live" ]; do
        [ "$(role_of a)" = "primary (alone)" ] && live=a
        [ "$(role_of b)" = "primary (alone)" ] && live=${live:+both}${live:-b}
        sleep 0.02
    done
    [ -n "$live" ] || fail "neither side went live"
    since="the cut"
    [ "$scenario" = partition-no-storage ] && since="the storage came back"
    mark "host ${live^^} live ($(( $(now_ms) - t_cut )) ms after $since)"
    end=$(( $(now_ms) + 3000 ))
    while [ "$(now_ms)" -lt $end ]; do
        [ "$(role_of a)" = "primary (alone)" ] && [ "$(role_of b)" = "primary (alone)" ] && { fail "both sides live"; break; }
        sleep 0.05
    done
    other=a
    [ "$live" = a ] && other=b
    mark "the other side, host ${other^^}: $(role_of $other)"
    say "== heal the partition"
    heal a peer
    t_heal=$(now_ms)
    if wait_role "$other" "backup (replaying)" 30; then
        mark "host ${other^^} re-protected $(( $(now_ms) - t_heal )) ms after the heal"
    else
        fail "host ${other^^} was not re-protected (it is $(role_of $other))"
    fi
    summary="exactly one side live (host ${live^^}), the other re-protected after the heal"
    ;;
tcp)
    tcp_scenario
    ;;
measure | measure-alone)
    measure_http
    ;;
esac

if [ -n "$client" ]; then
    wait $client && verdict_ok=1 || verdict_ok=0
    say "== client"
    [ -n "$quiet" ] || tail -3 "$work/client.log"
else
    verdict_ok=$((1 - failed))
fi
show_status a
show_status b
if [ $failed = 0 ] && [ $verdict_ok = 1 ]; then
    echo "ft_demo: PASS ($scenario): $summary${client:+; $(grep '^client: .* requests' "$work/client.log")}"
    exit 0
fi
echo "ft_demo: FAIL ($scenario)" >&2
echo "--- host A" >&2; cat "$work/a.log" >&2
echo "--- host B" >&2; cat "$work/b.log" >&2
for f in "$work"/client.log "$work"/http-*.log; do [ -f "$f" ] && { echo "--- ${f##*/}" >&2; cat "$f" >&2; }; done
exit 1
