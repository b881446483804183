#!/bin/bash
# System tests of the pair with real processes: tests/ft_demo.sh (two xenftd processes and a
# client in network namespaces, istgt as the shared LUN, the test guest on the KVM backend),
# every scenario repeated PAIR_RUNS times (default 5):
#   failover             kill -9 of the primary under load; the backup goes live; the old
#                        primary's xenftd restarts, joins, and is re-protected by a live copy
#   backup-restart       kill -9 of the backup; the primary wins the test-and-set and continues
#                        alone; the backup restarts and is re-protected without stopping the
#                        guest; then the primary is killed and the re-protected backup goes live
#   partition            channel and heartbeats cut, storage reachable: exactly one side live;
#                        healed: the other side re-protected
#   partition-no-storage channel and storage cut: neither side live, outputs held; storage back:
#                        exactly one live
#   tcp                  (TCP_RUNS times, default 3) the guest's HTTP service under curl, wrk
#                        and PUTs while the primary is killed: the 64 MiB download completes on
#                        the same connection with the right SHA-256, no socket errors, every
#                        acknowledged PUT readable, ping before and after
# Each passes only if its expectations held and the client's history is consistent with every
# request answered. Writes "PASS name" / "FAIL name" / "SKIP name: reason" lines to
# $CASES_FILE. About 25-30 s a run.
set -u
cases=${CASES_FILE:-tests/pair_netns_test.cases}
: > "$cases"
runs=${PAIR_RUNS:-5}
build=${BUILD_DIR:-$(pwd)}
tcp_runs=${TCP_RUNS:-3}
scenarios="failover backup-restart partition partition-no-storage tcp"
runs_of() { if [ "$1" = tcp ]; then echo "$tcp_runs"; else echo "$runs"; fi; }
skip_all() {
    for s in $scenarios; do
        for i in $(seq "$(runs_of "$s")"); do echo "SKIP ${s//-/_}_run_$i: $1" | tee -a "$cases"; done
    done
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip_all "needs root to create network namespaces and TAP interfaces"
[ -c /dev/kvm ] || skip_all "this machine has no /dev/kvm"
command -v ip > /dev/null || skip_all "iproute2 (ip) is not installed"
command -v istgt > /dev/null || skip_all "istgt is not installed"
command -v nft > /dev/null || skip_all "nftables (nft) is not installed"
for tool in curl wrk; do
    command -v $tool > /dev/null || skip_all "$tool is not installed (scripts/install-deps installs it)"
done
failed=0
for s in $scenarios; do
    for i in $(seq "$(runs_of "$s")"); do
        name=${s//-/_}_run_$i
        out=$(mktemp)
        if bash "${top_srcdir:-.}/tests/ft_demo.sh" "$build" --quiet --scenario "$s" > "$out" 2>&1; then
            echo "PASS $name" | tee -a "$cases"
            grep '^ft_demo: PASS' "$out"
        else
            echo "FAIL $name" | tee -a "$cases"
            sed 's/^/    /' "$out"
            failed=1
        fi
        rm -f "$out"
    done
done
exit $failed
