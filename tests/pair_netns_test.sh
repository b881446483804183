#!/bin/bash
# System test of the pair with real processes: tests/ft_demo.sh (two xenftd processes and a
# client in network namespaces, istgt as the shared LUN, the test guest on the KVM backend),
# repeated; each run kills the primary's xenftd with SIGKILL under client load and passes only
# if the backup goes live and the client's history is consistent with nothing acknowledged
# lost. Writes "PASS name" / "FAIL name" / "SKIP name: reason" lines to $CASES_FILE.
# Takes about 20 s a run.
set -u
cases=${CASES_FILE:-tests/pair_netns_test.cases}
: > "$cases"
runs=${PAIR_RUNS:-5}
build=${BUILD_DIR:-$(pwd)}
skip_all() {
    for i in $(seq "$runs"); do echo "SKIP primary_killed_run_$i: $1" | tee -a "$cases"; done
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip_all "needs root to create network namespaces and TAP interfaces"
[ -c /dev/kvm ] || skip_all "this machine has no /dev/kvm"
command -v ip > /dev/null || skip_all "iproute2 (ip) is not installed"
command -v istgt > /dev/null || skip_all "istgt is not installed"
failed=0
for i in $(seq "$runs"); do
    out=$(mktemp)
    if bash "${top_srcdir:-.}/tests/ft_demo.sh" "$build" --quiet > "$out" 2>&1; then
        echo "PASS primary_killed_run_$i" | tee -a "$cases"
        grep '^ft_demo: PASS' "$out"
    else
        echo "FAIL primary_killed_run_$i" | tee -a "$cases"
        sed 's/^/    /' "$out"
        failed=1
    fi
    rm -f "$out"
done
exit $failed
