#!/bin/bash
# Tests of the xl glue (dom0-tools/xl/xl-hook) as `xl create` runs it: an unprotected domain
# is left alone; a bad name, a missing or wrong configuration, or a xenftd that stops while
# starting each stop the domain's creation with exit 1 and a message naming the domain, the
# file and the cause; `check` names the backend and the control socket xenftd will answer on;
# a Xen domain's id reaches xenftd (--domid, through NAME.env for xenftd@.service). Without
# systemd (this machine's container) the hook runs xenftd itself; starting a real xenftd@ unit
# needs systemd as PID 1 (the package test verifies the unit files), and a xenftd that protects
# a domain needs Xen (the lab: tests/lab/failover.sh starts it through this hook). Writes one "PASS name" / "FAIL name" / "SKIP name: reason" line per case to
# $CASES_FILE.
set -u

src=${top_srcdir:-.}
hook=${XL_HOOK:?XL_HOOK must name the built xl-hook}
export XENFTD=${XENFTD:?XENFTD must name the xenftd binary}
export XENFT=${XENFT:?XENFT must name the xenft binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cases=${CASES_FILE:-tests/xl_hook_test.cases}
: > "$cases"
failed=0
export XENFT_CONFDIR=$work XENFT_RUNDIR=$work/run XENFT_LOGDIR=$work/log XENFT_READY_TIMEOUT_S=20

# name, expected exit status, a pattern stderr+stdout must match ('' = must be empty), hook args
expect() {
    local name=$1 want_rc=$2 pattern=$3; shift 3
    "$hook" "$@" > "$work/out" 2>&1
    local rc=$?
    if [ $rc -ne "$want_rc" ]; then
        echo "FAIL $name: exit $rc, expected $want_rc" | tee -a "$cases"; sed 's/^/    /' "$work/out"; failed=1
    elif [ -z "$pattern" ] && [ -s "$work/out" ]; then
        echo "FAIL $name: printed something" | tee -a "$cases"; sed 's/^/    /' "$work/out"; failed=1
    elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$work/out"; then
        echo "FAIL $name: output does not match /$pattern/" | tee -a "$cases"; sed 's/^/    /' "$work/out"; failed=1
    else
        echo "PASS $name" | tee -a "$cases"
    fi
}

# The files the example names, made here (--check-config checks them as a start would): a CA,
# this host's certificate and key, the heartbeat key, a guest image (not a real one: xenftd
# fails loading it, after the checks).
"$XENFT" cert ca --name ca --out "$work" > /dev/null &&
    "$XENFT" cert create --name hosta --out "$work" --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" > /dev/null &&
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/heartbeat.key" && chmod 600 "$work/heartbeat.key" &&
    echo "not an ELF image" > "$work/guest.elf" || { echo "FAIL setup: cannot make the certificates" | tee -a "$cases"; exit 1; }
sed -e "s|/etc/xenft/tls|$work|; s|^image = .*|image = $work/guest.elf|" "$src/etc/xenft.conf.example" > "$work/web.conf"
sed -e 's/^id = 7/id = 0/' "$work/web.conf" > "$work/broken.conf"
# Without the guest's TAP and disk: what xenftd opens first is then the TLS certificate.
sed -e '/^tap = /d' "$work/web.conf" | awk '/^\[disk\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' > "$work/nodev.conf"
sed -e 's/^image = .*/backend = xen/' "$work/nodev.conf" > "$work/dom.conf"

expect usage_error_exits_2 2 '^usage: xl-hook' start web
expect unknown_action_exits_2 2 '^usage: xl-hook' restart web 3 web
expect ft_no_does_nothing 0 '' start web 3 no
expect ft_off_on_stop_does_nothing 0 '' stop web 3 off
expect domid_must_be_a_number 1 '^xenft: domain web \(id 3x\): domain id "3x" is not a number$' start web 3x web
expect name_cannot_climb_directories 1 '^xenft: domain web \(id 3\): ft="\.\./web": "\.\./web" is not a valid name' start web 3 ../web
expect missing_configuration_is_named 1 "^xenft: domain db \\(id 4\\): ft=\"yes\" but $work/db.conf does not exist \\(see xenft.conf\\(5\\)\\)$" start db 4 yes
expect wrong_configuration_names_the_key 1 "^xenft: domain web \\(id 3\\): xenftd: $work/broken.conf:[0-9]+: vm.id: 0 is outside 1\\.\\.4294967295$" start web 3 broken
expect check_names_the_control_socket 0 "^xenftd: $work/web.conf: vm 7 \\(backend kvm\\), host 1 \\(primary\\), peer host 2, control socket /run/xenft/vm-7.sock: ok$" check web 3 yes
# A Xen domain's configuration: a build with the Xen backend (configure found libxen-dev)
# accepts it and the hook passes the domain id on; one without refuses it, and the hook with it.
# (The two-host lab runs the hook and this xenftd on real Xen.)
with_xen=0
"$XENFTD" --version | grep -q 'backends: .*xen' && with_xen=1
if [ $with_xen -eq 1 ]; then
    expect check_accepts_a_xen_domain 0 "^xenftd: $work/dom.conf: vm 7 \\(backend xen\\), host 1 \\(primary\\), peer host 2, console log /var/log/xenft/dom.console, control socket /run/xenft/vm-7.sock: ok$" check web 3 dom
else
    expect check_refuses_xen_without_the_backend 1 "xenftd: $work/dom.conf:[0-9]+: vm.backend: xen, but this xenftd was built without the Xen backend" check web 3 dom
fi
if [ -d /run/systemd/system ]; then
    echo "SKIP start_without_systemd_runs_xenftd: systemd runs on this machine (the case needs a dom0 without it)" | tee -a "$cases"
    echo "SKIP xen_domain_id_reaches_xenftd: systemd runs on this machine (the case needs a dom0 without it)" | tee -a "$cases"
else
    # xenftd passes the checks, starts and stops (no /dev/kvm here, or an image that is not
    # one) and says why: the hook passes that on and xl destroys the domain.
    expect start_without_systemd_runs_xenftd 1 "^xenft: domain web \\(id 3\\): xenftd \\(pid [0-9]+\\) stopped while starting: xenftd: vm 7: " start web 3 nodev
    if grep -qx 'XENFTD_DOMAIN_ARGS=""' "$work/run/nodev.env"; then
        echo "PASS kvm_domain_gets_no_domain_id" | tee -a "$cases"
    else
        echo "FAIL kvm_domain_gets_no_domain_id: $(cat "$work/run/nodev.env" 2>&1 | tr '\n' ' ')" | tee -a "$cases"; failed=1
    fi
    if [ $with_xen -eq 1 ]; then
        # The same for a Xen domain: xenftd gets --domid (and stops here at the arbiter's LUN).
        expect xen_start_without_systemd_runs_xenftd 1 "^xenft: domain web \\(id 3\\): xenftd \\(pid [0-9]+\\) stopped while starting: xenftd: vm 7: " start web 3 dom
        if grep -qx 'XENFTD_DOMAIN_ARGS="--domid 3"' "$work/run/dom.env"; then
            echo "PASS xen_domain_id_reaches_xenftd" | tee -a "$cases"
        else
            echo "FAIL xen_domain_id_reaches_xenftd: $(cat "$work/run/dom.env" 2>&1 | tr '\n' ' ')" | tee -a "$cases"; failed=1
        fi
    fi
fi
exit $failed
