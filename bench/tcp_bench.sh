#!/bin/bash
# TCP through the protected pair, measured with standard clients (tests/ft_demo.sh's topology:
# two xenftd processes and a client in network namespaces, istgt as the shared LUN, the test
# guest's HTTP service on lwIP):
# - http_rps_ft / http_rps_noft: wrk, 1 thread, 32 connections, 5 s of GET /, through the
#   protected pair and through host A alone (no backup started: no FT, outputs leave at once);
#   ratio FT / no FT (goal >= 0.9)
# - stream_mb_s_ft / stream_mb_s_noft: curl downloading 64 MiB of /stream/, the same two ways
# - failover_stall_ms: the longest gap in a 64 MiB download's progress (10 ms samples) when the
#   primary's xenftd is SIGKILLed at a quarter of it (the tcp scenario), against the time from
#   the kill to the backup being live in the same run
# Medians of RUNS runs (default 3), FT and no FT interleaved. Writes OUT/tcp.json.
# Needs root, /dev/kvm, istgt, curl and wrk. About 20 s a measurement, 30 s a failover.
#
#   bench/tcp_bench.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?usage: tcp_bench.sh BUILD_DIR OUT_DIR}
out=${2:?usage: tcp_bench.sh BUILD_DIR OUT_DIR}
runs=${RUNS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
demo() { MEASURE_CONNECTIONS=32 bash "$here/tests/ft_demo.sh" "$build" --quiet --scenario "$1"; }
mkdir -p "$out"
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for i in $(seq "$runs"); do
    for mode in measure measure-alone; do
        line=$(demo $mode | grep '^measure:') || { echo "tcp bench: the $mode run failed" >&2; exit 1; }
        tag=ft
        [ $mode = measure-alone ] && tag=noft
        echo "$tag $line" | tee -a "$samples"
    done
    result=$(demo tcp | grep '^ft_demo: PASS') || { echo "tcp bench: the failover run failed" >&2; exit 1; }
    stall=$(echo "$result" | grep -o 'longest stall [0-9]*' | grep -o '[0-9]*$')
    live=$(echo "$result" | grep -o 'went live [0-9]*' | grep -o '[0-9]*$')
    echo "failover stall_ms $stall live_ms $live" | tee -a "$samples"
done
python3 - "$samples" "$out/tcp.json" <<'EOF'
import json, statistics, sys
ft, noft, stall, live = {}, {}, [], []
for line in open(sys.argv[1]):
    w = line.split()
    if w[0] in ("ft", "noft"):
        d = ft if w[0] == "ft" else noft
        d.setdefault("rps", []).append(float(w[3]))
        d.setdefault("mb", []).append(float(w[5]))
    else:
        stall.append(float(w[2]))
        live.append(float(w[4]))
med = statistics.median
def row(metric, value, unit, baseline=None):
    r = {"metric": metric, "value": value, "unit": unit, "baseline": baseline,
         "ratio": value / baseline if baseline else None}
    print(f"  {metric} = {value:.1f} {unit}" + (f"   (baseline {baseline:.1f}, ratio {r['ratio']:.3f})" if baseline else ""))
    return r
rows = [
    row("http_rps_ft", med(ft["rps"]), "requests/s (wrk, 32 connections; baseline http_rps_noft)", med(noft["rps"])),
    row("http_rps_noft", med(noft["rps"]), "requests/s (host A alone, no FT)"),
    row("stream_mb_s_ft", med(ft["mb"]), "MiB/s (curl, 64 MiB; baseline stream_mb_s_noft)", med(noft["mb"])),
    row("stream_mb_s_noft", med(noft["mb"]), "MiB/s (host A alone, no FT)"),
    row("failover_stall_ms", med(stall), "ms (longest download stall; baseline: kill to live)", med(live)),
]
with open(sys.argv[2], "w") as f:
    json.dump(rows, f, indent=2)
    f.write("\n")
print("  wrote " + sys.argv[2])
EOF
