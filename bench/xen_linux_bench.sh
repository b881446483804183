#!/bin/bash
# An unmodified Linux protected on Xen, measured in the lab (issue 25, docs/linux-guest.md):
# tests/lab/linux_boot.sh's case no-qemu-http-pair on one Xen host under QEMU (TCG), Debian's
# kernel recorded and replayed from its first instruction, lighttpd serving from its virtio
# disk, the recorder destroyed mid-download. The protected figures and their baselines come
# from the same guest in the same run: once the backup is live it runs unprotected, and the
# client measures again.
# - get_ms_ft / get_ms_live: the median of 9 GETs of a small page, through the output gate
#   (a frame leaves once the backup has replayed to it) and from the live backup
# - download_kb_s_ft / download_kb_s_live: a 4 MiB ranged download, the same two ways
# - boot_to_service_s: from the pair's start to lighttpd serving on both replicas (recorded
#   and replayed; an unprotected boot is not in this run: docs/linux-guest.md has the plain
#   PC's unrecorded boot to init)
# - failover_ms: from the recorder's end to the backup live
# - digest_stall_ms: the median stall a state digest costs the recording guest (256 MiB)
# Medians of RUNS runs (default 3; each boots a lab host: about 8 min). Writes OUT/xen_linux.json.
# Needs root and what tests/lab/linux_boot.sh needs (scripts/install-deps, Xen built).
#
#   bench/xen_linux_bench.sh OUT_DIR [WORKDIR]
set -euo pipefail
out=${1:?usage: xen_linux_bench.sh OUT_DIR [WORKDIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$here/build/lab-linux}
runs=${RUNS:-3}
mkdir -p "$out"
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for i in $(seq "$runs"); do
    echo "== run $i of $runs: tests/lab/linux_boot.sh, case no-qemu-http-pair"
    LINUX_CASES=no-qemu-http-pair "$here/tests/lab/linux_boot.sh" "$work" > "$work.bench-$i.log" 2>&1 ||
        { tail -n 20 "$work.bench-$i.log"; echo "xen linux bench: run $i failed ($work.bench-$i.log)" >&2; exit 1; }
    grep -a '^LAB: no-qemu-http-pair: \(lighttpd serving on both\|figures: \|pair: .*\(went live\|digests stalled\)\)' \
        "$work/console.log" | sed "s/^/$i /" | tee -a "$samples"
done
python3 - "$samples" "$out/xen_linux.json" "$here/bench" <<'EOF'
import re, sys
sys.path.insert(0, sys.argv[3])
import lab_rows
v = {}
def take(key, value):
    v.setdefault(key, []).append(float(value))
for line in open(sys.argv[1]):
    if m := re.search(r"lighttpd serving on both replicas (\d+) s after the start", line):
        take("boot", m[1])
    if m := re.search(r"figures: (protected|unprotected)[^:]*: GET median (\d+) ms, 4 MiB download at (\d+) KB/s", line):
        tag = "ft" if m[1] == "protected" else "live"
        take("get_" + tag, m[2])
        take("rate_" + tag, m[3])
    if m := re.search(r"went live at exit \d+, (\d+) ms after the primary ended", line):
        take("failover", m[1])
    if m := re.search(r"digests stalled the primary (\d+) ms \(median\), (\d+) ms at most", line):
        take("stall", m[1])
        take("stall_max", m[2])
samples = lab_rows.Samples(v, ("boot", "get_ft", "get_live", "rate_ft", "rate_live", "failover", "stall"), "xen linux bench", "boot")
med, row = samples.med, samples.row
rows = [
    row("get_ms_ft", med("get_ft"), "ms (median of 9 GETs, protected; baseline get_ms_live)", med("get_live")),
    row("get_ms_live", med("get_live"), "ms (the same guest live on the backup, unprotected)"),
    row("download_kb_s_ft", med("rate_ft"), "KB/s (4 MiB, protected; baseline download_kb_s_live)", med("rate_live")),
    row("download_kb_s_live", med("rate_live"), "KB/s (the same guest live, unprotected)"),
    row("boot_to_service_s", med("boot"), "s (Debian's kernel to lighttpd, recorded and replayed from the first instruction)"),
    row("failover_ms", med("failover"), "ms (the recorder's end to the backup live)"),
    row("digest_stall_ms", med("stall"), "ms (median stall of a state digest, 256 MiB guest; baseline: the longest)", med("stall_max")),
]
lab_rows.write(rows, sys.argv[2])
EOF
