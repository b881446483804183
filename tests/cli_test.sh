#!/bin/bash
# Tests of the xenft CLI as an administrator uses it: sample, dump and stats a log; corrupt and
# truncated files give a precise error, exit 1, and change nothing; usage errors exit 2; the man
# pages render. Writes one "PASS name" / "FAIL name" line per case to $0.cases for .ci/run.
set -u

src=${top_srcdir:-.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cases=${CASES_FILE:-tests/cli_test.cases}
: > "$cases"
failed=0

check() { # name, then a command that must succeed
    local name=$1; shift
    if "$@" > "$work/out" 2> "$work/err"; then
        echo "PASS $name" | tee -a "$cases"
    else
        echo "FAIL $name" | tee -a "$cases"; sed 's/^/    /' "$work/out" "$work/err"; failed=1
    fi
}

xenft=${XENFT:?XENFT must name the xenft binary}
xenftd=${XENFTD:?XENFTD must name the xenftd binary}

sample_and_dump() {
    "$xenft" log sample --workload mixed --entries 300 --seed 4 -o "$work/m.xftl" &&
    "$xenft" log dump "$work/m.xftl" > "$work/dump" &&
    test "$(wc -l < "$work/dump")" -eq 300 &&
    grep -q '^seq [0-9]* epoch [0-9]* vcpu [0-9]* exit [0-9]* protection_start vcpus' "$work/dump"
}
check sample_then_dump_prints_every_entry sample_and_dump

idle_stats() {
    "$xenft" log sample --workload idle --entries 20000 -o "$work/i.xftl" > /dev/null &&
    "$xenft" log stats "$work/i.xftl" > "$work/stats" &&
    grep -q '^entries 20001$' "$work/stats" &&
    grep -q '^kind interrupt 10000$' "$work/stats" &&
    awk '/^bytes_per_entry/ { exit !($2 <= 16) }' "$work/stats"
}
check idle_stats_counts_kinds_and_is_compact idle_stats

corrupt_is_rejected() {
    "$xenft" log sample --workload idle --entries 2000 --per-frame 100 -o "$work/c.xftl" > /dev/null || return 1
    printf '\xff' | dd of="$work/c.xftl" bs=1 seek=1500 conv=notrunc status=none
    local before; before=$(sha256sum < "$work/c.xftl")
    "$xenft" log dump "$work/c.xftl" > /dev/null 2> "$work/e"; local rc=$?
    test $rc -eq 1 && grep -q 'xenft: log .*c.xftl: frame [0-9]* at stream offset [0-9]*: log frame: CRC mismatch at byte' "$work/e" &&
    test "$before" = "$(sha256sum < "$work/c.xftl")"
}
check corrupt_file_is_rejected_with_frame_and_reason corrupt_is_rejected

truncated_is_rejected() { # the frames before the cut are shown, then the error
    "$xenft" log sample --workload idle --entries 300 --per-frame 100 -o "$work/t.xftl" > /dev/null &&
        truncate -s -7 "$work/t.xftl" || return 1
    "$xenft" log dump "$work/t.xftl" > "$work/t.dump" 2> "$work/e"
    test $? -eq 1 && grep -q 'truncated.*(after [0-9]* entries)' "$work/e" || return 1
    local shown; shown=$(sed -n 's/.*(after \([0-9]*\) entries)$/\1/p' "$work/e")
    test "$shown" -ge 200 && test "$(wc -l < "$work/t.dump")" -eq "$shown"
}
check truncated_file_is_rejected truncated_is_rejected

missing_file() {
    "$xenft" log dump "$work/nope.xftl" 2> "$work/e"; test $? -eq 1 && grep -q 'nope.xftl: cannot open: No such file' "$work/e"
}
check missing_file_names_the_file missing_file

directory_is_not_a_log() {
    "$xenft" log dump "$work" 2> "$work/e"; test $? -eq 1 && grep -q "log $work: is a directory, not a log file" "$work/e"
}
check directory_is_refused_as_a_log directory_is_not_a_log

usage_errors() {
    "$xenft" frobnicate 2> /dev/null; test $? -eq 2 || return 1
    "$xenft" log sample --per-frame 0 -o "$work/x" 2> "$work/e"; test $? -eq 2 || return 1
    grep -q -- '--per-frame must be' "$work/e" && test ! -e "$work/x" || return 1
    "$xenft" log dump 2> "$work/e"; test $? -eq 2
}
check usage_errors_exit_2_and_write_nothing usage_errors

version() {
    "$xenft" --version | grep -q '^xenft [0-9.]* (log format 1' && "$xenftd" --version | grep -q '^xenft ' &&
    "$xenft" --help | grep -q '^  version  '
}
check version_reports_format version

daemon_without_config() {
    "$xenftd" --config "$work/none.conf" 2> "$work/e"; test $? -eq 1 && grep -q "configuration $work/none.conf: cannot read it" "$work/e"
}
check xenftd_without_configuration_says_so daemon_without_config

daemon_bad_config() { # a wrong value is named by its key, and nothing starts
    printf '[vm]\nid = 7\nimage = /x\n[pair]\nhost-id = 1\npeer-id = 2\nrole = leader\n[arbiter]\nlun = iscsi://127.0.0.1/iqn.x:y/0\ninitiator = iqn.x:h1\n[channel]\ncert = c\nkey = k\nca = a\npeer-name = b\npeer = 127.0.0.1:7000\n[heartbeat]\nlisten = 127.0.0.1:7001\npeer = 127.0.0.1:7002\nkey-file = /k\n' > "$work/bad.conf"
    "$xenftd" --config "$work/bad.conf" --check-config 2> "$work/e"; test $? -eq 1 || return 1
    grep -q 'pair.role: "leader" is neither primary nor backup' "$work/e" || return 1
    sed -i 's/role = leader/role = primary/; s/^id = 7/id = 7\nmemory-mib = 1/' "$work/bad.conf"
    "$xenftd" --config "$work/bad.conf" --check-config 2> "$work/e"; test $? -eq 1 && grep -q 'vm.memory-mib: 1 is outside 2..4096' "$work/e" || return 1
    sed -i '/memory-mib/d; /^peer-name/d' "$work/bad.conf"
    "$xenftd" --config "$work/bad.conf" --check-config 2> "$work/e"; test $? -eq 1 && grep -q "channel.peer-name: missing" "$work/e" || return 1
    printf 'peer-name = b\n' >> "$work/bad.conf"  # lands in [heartbeat]: an unknown key, on the file's last line
    "$xenftd" --config "$work/bad.conf" --check-config 2> "$work/e"; test $? -eq 1 &&
        grep -q "bad.conf:$(wc -l < "$work/bad.conf"): heartbeat.peer-name: no such key in xenft.conf(5)" "$work/e"
}
check xenftd_names_the_wrong_configuration_key daemon_bad_config

daemon_backend_config() { # vm.backend: kvm runs an image, xen protects the domain --domid names
    local base="$work/backend.conf"
    sed -e "s|/etc/xenft/tls|$work|" "$src/etc/xenft.conf.example" > "$base"
    expect_error() { # FILE PATTERN [ARGS]
        local f=$1 pattern=$2; shift 2
        "$xenftd" --config "$f" "$@" > /dev/null 2> "$work/e"
        test $? -eq 1 && grep -q -- "$pattern" "$work/e" || { echo "    $f $*: $(cat "$work/e")"; return 1; }
    }
    sed 's/^image = .*/backend = qemu/' "$base" > "$work/b1.conf"
    expect_error "$work/b1.conf" 'vm.backend: "qemu" is neither kvm nor xen' --check-config || return 1
    sed '/^image = /d' "$base" > "$work/b2.conf"
    expect_error "$work/b2.conf" 'vm.image: needed with backend = kvm' --check-config || return 1
    sed 's/^image = .*/backend = xen/' "$base" > "$work/b3.conf"
    # The guest disk on the shared LUN, as the example has it, is accepted with backend = xen
    # (what the check finds is the certificates this test did not make).
    if "$xenftd" --version | grep -q 'backends: .*xen'; then
        "$xenftd" --config "$work/b3.conf" --check-config > /dev/null 2> "$work/e"
        grep -q 'channel.cert' "$work/e" && ! grep -q 'disk' "$work/e" || { echo "    b3.conf (xen, disk.lun): $(cat "$work/e")"; return 1; }
    fi
    # The guest disk as a file (the [disk] section's lun; the arbiter's stays).
    awk '/^\[/ { disk = ($0 == "[disk]") } disk && /^lun = / { print "file = /var/lib/xenft/disk.img"; next } { print }' \
        "$work/b3.conf" > "$work/b4.conf"
    # A build without the Xen backend says so, with the line of the key; one with it checks the
    # disk file a start would open.
    if "$xenftd" --version | grep -q 'backends: .*xen'; then
        expect_error "$work/b4.conf" "b4.conf:[0-9]*: disk.file: /var/lib/xenft/disk.img: No such file" --check-config || return 1
        ! grep -q 'without the Xen backend' "$work/e" || { echo "    $(cat "$work/e")"; return 1; }
    else
        expect_error "$work/b4.conf" "b4.conf:[0-9]*: vm.backend: xen, but this xenftd was built without the Xen backend" --check-config || return 1
    fi
    expect_error "$work/b4.conf" 'backend = xen needs --domid' || return 1
    # A Linux guest: the kernel must be a bzImage that fits the memory; an initrd needs a kernel.
    sed 's/^backend = xen/backend = xen\ninitrd = \/boot\/initrd.img/' "$work/b4.conf" > "$work/b5.conf"
    expect_error "$work/b5.conf" 'vm.initrd: without vm.kernel' --check-config || return 1
    head -c 4096 /dev/zero > "$work/not-a-kernel"
    sed "s|^backend = xen|backend = xen\nkernel = $work/not-a-kernel|; s|^memory-mib = .*|memory-mib = 256|" "$work/b4.conf" > "$work/b6.conf"
    if "$xenftd" --version | grep -q 'backends: .*xen'; then
        expect_error "$work/b6.conf" "b6.conf:[0-9]*: vm.kernel: $work/not-a-kernel: not a Linux bzImage" --check-config || return 1
    fi
    sed "s|^image = .*|kernel = $work/not-a-kernel|" "$base" > "$work/b7.conf"
    expect_error "$work/b7.conf" 'vm.kernel: only with backend = xen' --check-config || return 1
    expect_error "$base" '--domid and --unpause are for backend = xen' --domid 3 || return 1
    # The guest's console log: the domain's serial port, so only on xen, and an absolute name.
    sed 's|^image = .*|image = /usr/lib/xenft/xenft-guest.elf\nconsole-log = /var/log/xenft/g.console|' "$base" > "$work/b8.conf"
    expect_error "$work/b8.conf" 'b8.conf:[0-9]*: vm.console-log: only with backend = xen' --check-config || return 1
    sed 's|^backend = xen|backend = xen\nconsole-log = logs/g.console|' "$work/b4.conf" > "$work/b9.conf"
    expect_error "$work/b9.conf" 'vm.console-log: "logs/g.console" is not an absolute file name (or none)' --check-config || return 1
    printf '[failover]\nafter-ms = 2000\nbackup-wait-ms = 1000\n' >> "$work/b4.conf"
    expect_error "$work/b4.conf" 'failover.backup-wait-ms: no longer used' --check-config || return 1
    sed -i 's/^after-ms = 2000/after-ms = 150/; /^backup-wait-ms/d' "$work/b4.conf"
    expect_error "$work/b4.conf" 'failover.after-ms: 150 is outside 200..600000 (at least two heartbeat intervals' --check-config
}
check xenftd_checks_the_backend daemon_backend_config

# A configuration xenftd can load up to its guest: the example with this host's certificate,
# key, CA and heartbeat key made here, its own control socket.
startable_config() { # FILE SOCKET
    local d="$work/tls"
    if [ ! -f "$d/heartbeat.key" ]; then
        mkdir -p "$d" && "$xenft" cert ca --name ca --out "$d" > /dev/null &&
            "$xenft" cert create --name hosta --out "$d" --ca-cert "$d/ca.crt" --ca-key "$d/ca.key" > /dev/null &&
            head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$d/heartbeat.key" && chmod 600 "$d/heartbeat.key" || return 1
    fi
    sed -e "s|/etc/xenft/tls|$d|" "$src/etc/xenft.conf.example" > "$1" && printf '[control]\nsocket = %s\n' "$2" >> "$1"
}

daemon_every_problem() { # --check-config reports every problem, each with its key and line
    startable_config "$work/many.conf" "$work/many.sock" || return 1
    sed -i -e 's/^id = 7/id = -3/' -e 's/^host-id = 1/host-id = -1/' -e 's/^epoch = 1/epoch = 0/' \
        -e 's/^first-lba = 64/first-lba = 0/' -e 's/^listen = 192.0.2.11:7000/listen = 192.0.2.11:0/' \
        -e 's/^initiator = .*/initiator = not an iqn/' -e '/^\[arbiter\]/a timeout-s = 0' "$work/many.conf"
    "$xenftd" --config "$work/many.conf" --check-config > "$work/o" 2> "$work/e"
    test $? -eq 1 && test ! -s "$work/o" || return 1
    at() { grep -n -- "$1" "$work/many.conf" | head -n 1 | cut -d: -f1; } # the line of a setting
    local want
    for want in "$(at '^id = -3'): vm.id: \"-3\" is not a whole number 1..4294967295" \
                "$(at '^host-id = -1'): pair.host-id: \"-1\" is not a whole number 1..4095" \
                "$(at '^epoch = 0'): pair.epoch: 0 is outside 1..[0-9]* (the arbitration record's epochs start at 1)" \
                "$(at '^timeout-s = 0'): arbiter.timeout-s: 0 is outside 1..60 seconds" \
                "$(at '^first-lba = 0'): disk.first-lba: 0 puts the guest's disk over the arbitration record" \
                "$(at '^listen = 192.0.2.11:0'): channel.listen: 192.0.2.11:0: port 0 is not a fixed port" \
                "$(at '^initiator = not'): arbiter.initiator: not an iSCSI name" \
                "$(at '^image = '): vm.image: /usr/lib/xenft/xenft-guest.elf: "; do
        grep -q -- "^xenftd: $work/many.conf:$want" "$work/e" || { echo "    missing: $want"; cat "$work/e"; return 1; }
    done
    grep -q "^xenftd: $work/many.conf: [0-9]* problems; nothing was started$" "$work/e" || return 1
    # A garbage URL, a malformed fingerprint beside the CA, a key others can read: named too.
    startable_config "$work/url.conf" "$work/url.sock" || return 1
    awk '/^\[/ { arb = ($0 == "[arbiter]") } arb && /^lun = / { print "lun = garbage"; next } { print }' "$work/url.conf" > "$work/url2.conf"
    sed -i '/^\[channel\]/a fingerprint = SHA256:XYZ' "$work/url2.conf"
    cp "$work/tls/hosta.key" "$work/tls/open.key" && chmod 644 "$work/tls/open.key" &&
        sed -i "s|^key = .*|key = $work/tls/open.key|" "$work/url2.conf"
    "$xenftd" --config "$work/url2.conf" --check-config 2> "$work/e"
    test $? -eq 1 || return 1
    for want in "arbiter.lun: \"garbage\" is not an iscsi:// URL" \
                "channel.fingerprint: \"SHA256:XYZ\" is not SHA256: and 64 lower-case hex digits" \
                "channel: give exactly one of ca"; do
        grep -q -- "$want" "$work/e" || { echo "    missing: $want"; cat "$work/e"; return 1; }
    done
    # Without the fingerprint the key file is checked (the TLS check needs one of ca/fingerprint).
    sed -i '/^fingerprint = /d' "$work/url2.conf"
    "$xenftd" --config "$work/url2.conf" --check-config 2> "$work/e"
    grep -q "channel.key: .*open.key is readable by group or others (mode 0644): chmod 600" "$work/e" || { cat "$work/e"; return 1; }
}
check xenftd_check_config_reports_every_problem_with_its_line daemon_every_problem

list_and_names() { # xenft list: every configuration of the directory; --vm takes the name
    local d="$work/confs"
    mkdir -p "$d" && startable_config "$d/web.conf" "$work/web.sock" || return 1
    printf '[vm]\nid = -1\n' > "$d/broken.conf"
    cp "$src/etc/xenft.conf.example" "$d/xenft.conf.example" # not a VM's: left out
    XENFT_CONFDIR=$d "$xenft" list > "$work/o" 2> "$work/e" || { cat "$work/e"; return 1; }
    test "$(wc -l < "$work/o")" -eq 3 || { cat "$work/o"; return 1; }
    grep -q '^broken  *-  *bad configuration .*broken.conf:2: vm.id: "-1" is not a whole number' "$work/o" &&
        grep -q "^web  *7  *not running .*cannot reach xenftd at $work/web.sock" "$work/o" || { cat "$work/o"; return 1; }
    XENFT_CONFDIR=$d "$xenft" list --json > "$work/o" || return 1
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
assert j["schema"] == 2, j
assert [v["name"] for v in j["vms"]] == ["broken", "web"], j
assert j["vms"][1]["vm"] == 7 and j["vms"][1]["state"] == "not-running", j' "$work/o" || return 1
    # --vm NAME: its configuration's control socket; an unknown name or a broken file said so.
    XENFT_CONFDIR=$d "$xenft" status --vm web --timeout 1 2> "$work/e"
    test $? -eq 1 && grep -q "cannot reach xenftd at $work/web.sock" "$work/e" || { cat "$work/e"; return 1; }
    XENFT_CONFDIR=$d "$xenft" status --vm nope 2> "$work/e"
    test $? -eq 1 && grep -q "no configuration $d/nope.conf for VM \"nope\"" "$work/e" || { cat "$work/e"; return 1; }
    XENFT_CONFDIR=$d "$xenft" failover --vm broken 2> "$work/e"
    test $? -eq 1 && grep -q "broken.conf:2: vm.id" "$work/e" || { cat "$work/e"; return 1; }
    # --vm ID: the configuration with that id.
    XENFT_CONFDIR=$d "$xenft" status --vm 7 --timeout 1 2> "$work/e"
    test $? -eq 1 && grep -q "cannot reach xenftd at $work/web.sock" "$work/e" || { cat "$work/e"; return 1; }
}
check xenft_list_and_vm_names list_and_names

completion() { # bash completion: commands, subcommands, options, VM names from the configurations
    mkdir -p "$work/comp" && : > "$work/comp/web.conf" && : > "$work/comp/db.conf" || return 1
    bash -c '
        . "$1" || exit 9
        words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _xenft; echo "${COMPREPLY[*]}"; }
        daemon_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _xenftd; echo "${COMPREPLY[*]}"; }
        [ "$(words xenft li)" = list ] || exit 1
        [ "$(words xenft cert f)" = fingerprint ] || exit 2
        [ "$(words xenft status --j)" = --json ] || exit 3
        [ "$(XENFT_CONFDIR=$2 words xenft failover --vm "")" = "db web" ] || exit 4
        [ "$(words xenft log sample --workload m)" = mixed ] || exit 5
        [ "$(daemon_words xenftd --check)" = --check-config ] || exit 6
        complete -p xenft xenftd > /dev/null || exit 7
    ' _ "$src/dom0-tools/bash-completion/xenft" "$work/comp" || { echo "    failed check $?"; return 1; }
}
check bash_completion_offers_commands_options_and_vm_names completion

daemon_second_instance() { # a second xenftd for a VM this host protects: refused, the first untouched
    startable_config "$work/two.conf" "$work/two.sock" || return 1
    : > "$work/two.sock" # the running daemon's socket (a stand-in): it must stay
    ( flock -x 9 && touch "$work/two.locked" && sleep 30 ) 9> "$work/two.sock.lock" &
    local holder=$!
    for _ in $(seq 100); do [ -e "$work/two.locked" ] && break; sleep 0.05; done
    "$xenftd" --config "$work/two.conf" > /dev/null 2> "$work/e"
    local rc=$?
    kill "$holder" 2> /dev/null; wait "$holder" 2> /dev/null
    test $rc -eq 1 && test -e "$work/two.sock" && test -e "$work/two.sock.lock" || { cat "$work/e"; return 1; }
    grep -q "xenftd: vm 7: another xenftd already protects this VM on this host (it holds $work/two.sock.lock); not starting a second one" "$work/e" ||
        { cat "$work/e"; return 1; }
}
check xenftd_refuses_a_second_daemon_for_the_same_vm daemon_second_instance

daemon_without_kvm() { # backend = kvm where /dev/kvm is missing: one line at start, nothing left
    startable_config "$work/nokvm.conf" "$work/run/nokvm.sock" || return 1
    # A private mount namespace with an empty /dev is a machine without /dev/kvm, on any machine.
    unshare --mount sh -c 'mount -t tmpfs none /dev && exec "$0" --config "$1"' "$xenftd" "$work/nokvm.conf" \
        > /dev/null 2> "$work/e"
    test $? -eq 1 && test "$(wc -l < "$work/e")" -eq 1 && test ! -e "$work/run" || { cat "$work/e"; ls -R "$work/run"; return 1; }
    grep -q 'xenftd: vm 7: backend = kvm needs /dev/kvm, which this machine does not have (No such file or directory): .*backend = xen' "$work/e" ||
        { cat "$work/e"; return 1; }
}
if [ "$(id -u)" -eq 0 ] && command -v unshare > /dev/null; then
    check xenftd_without_dev_kvm_refuses_at_start daemon_without_kvm
else
    echo "SKIP xenftd_without_dev_kvm_refuses_at_start: needs root and unshare for a mount namespace without /dev/kvm" | tee -a "$cases"
fi

status_without_daemon() {
    "$xenft" status --socket "$work/nobody.sock" 2> "$work/e"; test $? -eq 1 || return 1
    grep -q "cannot reach xenftd at $work/nobody.sock" "$work/e" || return 1
    "$xenft" status 2> "$work/e"; test $? -eq 2 && grep -q 'give --vm NAME|ID or --socket PATH' "$work/e"
}
check status_without_a_daemon_says_so status_without_daemon

status_of_a_silent_daemon() { # one that takes the connection and never answers: a timeout, not a hang
    python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); open(sys.argv[1] + ".up", "w")
time.sleep(30)' "$work/silent.sock" &
    local silent=$! t0 rc
    for _ in $(seq 100); do [ -e "$work/silent.sock.up" ] && break; sleep 0.05; done
    t0=$(date +%s%N)
    "$xenft" status --socket "$work/silent.sock" --timeout 1 2> "$work/e"
    rc=$?
    kill $silent; wait $silent 2> /dev/null
    test $rc -eq 1 && test $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 || { cat "$work/e"; return 1; }
    grep -q "xenft: status: xenftd at $work/silent.sock did not answer within 1 s" "$work/e" || { cat "$work/e"; return 1; }
    "$xenft" status --socket "$work/silent.sock" --timeout 0 2> "$work/e"; test $? -eq 2 && grep -q 'outside 1..3600' "$work/e"
}
check status_gives_up_on_a_silent_daemon status_of_a_silent_daemon

certs() {
    local d="$work/pki"; mkdir -p "$d"
    "$xenft" cert ca --name xenft-ca --out "$d" > /dev/null &&
    "$xenft" cert create --name hosta.example --out "$d" --ca-cert "$d/xenft-ca.crt" --ca-key "$d/xenft-ca.key" > "$work/created" &&
    openssl verify -CAfile "$d/xenft-ca.crt" -verify_hostname hosta.example "$d/hosta.example.crt" > /dev/null &&
    test "$(stat -c %a "$d/hosta.example.key")" = 600 &&
    local ours theirs
    ours=$("$xenft" cert fingerprint "$d/hosta.example.crt") &&
    theirs=$(openssl x509 -in "$d/hosta.example.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f) &&
    test "$ours" = "SHA256:$theirs" &&
    grep -q "^fingerprint $ours$" "$work/created"
}
check cert_ca_and_host_certificates_verify_with_openssl certs

cert_errors() {
    local d="$work/pki2"; mkdir -p "$d"
    "$xenft" cert create --name hostb.example --out "$d" > /dev/null || return 1   # self-signed
    "$xenft" cert create --name hostb.example --out "$d" 2> "$work/e"; test $? -eq 1 || return 1
    grep -q 'already exists; not overwriting' "$work/e" || return 1
    "$xenft" cert ca --name other --out "$d" > /dev/null || return 1
    "$xenft" cert create --name hostc --out "$d" --ca-cert "$d/hostb.example.crt" --ca-key "$d/other.key" 2> "$work/e"
    test $? -eq 1 && grep -q 'does not match CA certificate' "$work/e" && test ! -e "$d/hostc.key" || return 1
    "$xenft" cert create --name 'bad name' --out "$d" 2> /dev/null; test $? -eq 2 || return 1
    "$xenft" cert fingerprint "$work/nope.crt" 2> "$work/e"; test $? -eq 1 && grep -q 'nope.crt: cannot open' "$work/e"
}
check cert_errors_are_explained_and_write_nothing cert_errors

cert_out_directory() { # --out names a new directory: created private; its parent must exist
    "$xenft" cert ca --name ca --out "$work/newpki" > /dev/null &&
    test "$(stat -c %a "$work/newpki")" = 700 && test -s "$work/newpki/ca.crt" || return 1
    "$xenft" cert ca --name ca --out "$work/no/such/dir" 2> "$work/e"; test $? -eq 1 || return 1
    grep -q "cannot create the directory $work/no/such/dir: No such file or directory" "$work/e"
}
check cert_out_directory_is_created_private cert_out_directory

arbiter_cli() {
    # A real istgt target on a private port, stopped by PID at the end.
    local d="$work/ist" port
    mkdir -p "$d" && truncate -s 4M "$d/lun.img" && : > "$d/auth.conf"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$d/istgt.conf" << CONF
[Global]
  NodeBase "iqn.2026-11.test.xenft"
  PidFile $d/istgt.pid
  AuthFile $d/auth.conf
  MediaDirectory $d
[UnitControl]
  AuthMethod None
  Portal UC1 127.0.0.1:$((port + 1))
  Netmask 127.0.0.1
[PortalGroup1]
  Portal DA1 127.0.0.1:$port
[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.1/32
[LogicalUnit1]
  TargetName cli
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UnitType Disk
  LUN0 Storage $d/lun.img 4MB
CONF
    istgt -c "$d/istgt.conf" -D > "$d/log" 2>&1 &
    local pid=$! url="iscsi://127.0.0.1:$port/iqn.2026-11.test.xenft:cli/0" ok=1
    for _ in $(seq 100); do (: < /dev/tcp/127.0.0.1/$port) 2> /dev/null && break; sleep 0.05; done
    "$xenft" arbiter show --url "$url" 2> "$work/e"; [ $? -eq 1 ] && grep -q "run 'xenft arbiter init'" "$work/e" || ok=0
    "$xenft" arbiter init --url "$url" --vm 7 --epoch 3 > "$work/o" && grep -q '^initialized: VM 7, epoch 3, owner nobody' "$work/o" || ok=0
    "$xenft" arbiter init --url "$url" --vm 7 2> "$work/e"; [ $? -eq 1 ] && grep -q 'use --force' "$work/e" || ok=0
    "$xenft" arbiter show --url "$url" --vm 7 > "$work/o" && grep -q '^VM 7, epoch 3, owner nobody' "$work/o" &&
        grep -q 'COMPARE AND WRITE yes' "$work/o" || ok=0
    "$xenft" arbiter show --url "$url" --vm 8 2> "$work/e"; [ $? -eq 1 ] && grep -q 'arbitrates VM 7, not VM 8' "$work/e" || ok=0
    "$xenft" arbiter show --url "iscsi://127.0.0.1:$((port + 2))/iqn.x:y/0" 2> "$work/e"; [ $? -eq 1 ] &&
        grep -q 'cannot reach portal' "$work/e" || ok=0
    "$xenft" arbiter init --url "$url" 2> "$work/e"; [ $? -eq 2 ] && grep -q -- '--vm is required' "$work/e" || ok=0
    kill -9 $pid; wait $pid 2> /dev/null
    [ $ok -eq 1 ]
}
if command -v istgt > /dev/null; then
    check arbiter_init_and_show_against_a_real_target arbiter_cli
else
    echo "SKIP arbiter_init_and_show_against_a_real_target: istgt is not installed" | tee -a "$cases"
fi

man_pages_render() {
    for page in xenft.8 xenftd.8 xenft.conf.5; do
        MANWIDTH=80 man -l "$src/man/$page" > "$work/man" 2> "$work/manerr" || return 1
        test ! -s "$work/manerr" || { cat "$work/manerr"; return 1; }
        grep -q 'SYNOPSIS' "$work/man" || return 1
    done
}
if command -v man > /dev/null; then
    check man_pages_render_without_warnings man_pages_render
else
    echo "SKIP man_pages_render_without_warnings: man-db is not installed" | tee -a "$cases"
fi

exit $failed
