#!/bin/bash
# An unmodified Linux protected by xenftd on two Xen hosts, measured in the lab (issue 25,
# docs/linux-guest.md): tests/lab/failover.sh's case linux-a-dies (Debian's kernel and
# lighttpd, its disk on the shared LUN; A's power cut, then B's), after its case
# linux-unprotected, the baseline: the same Linux on the same lab host with xenft off (no
# ft=, no xenftd, Xen's FT mode off; xenft-xen-dm serves the same device models). The client
# measures the guest three ways in each run: unprotected, protected (B acks the log), and
# alone on B after A's power cut (still recorded, its outputs no longer held).
# - get_ms_ft / get_ms_alone / get_ms_unprotected: the median of 9 GETs of a small page;
#   protected minus alone is what the output commit adds, alone against unprotected what
#   recording costs
# - download_kb_s_ft / _alone / _unprotected: a 4 MiB ranged download, the same three ways
# - service_s: from the hosts' boot to the protected guest's first answer (dom0 boot, Linux
#   boot under record on A, B's live copy), against service_s_unprotected: the host's boot to
#   the unprotected guest's first answer (dom0 boot, Linux boot)
# - failover_ms: from B's suspicion of A (the detector's 2 s after the cut) to B live, of
#   which the test-and-set and the disk writes written again are part (their counts too)
# - reverse_failover_ms: the same for A after B's power cut
# - first_answer_ms / reverse_first_answer_ms: from the power cut to the new primary's first
#   answer to a GET (polled every 0.2 s): the failover as a client sees it
# - idle_log_mbit_s: the primary's log on the wire while the guest idles (its status)
# - replay_backlog_entries: what the backup held and had not replayed at the cut
# - wrk_requests_s_ft / _alone / _unprotected: wrk's requests/s (a small page, 4
#   connections, 10 s), the three ways
# - get_during_cpu_bound_s: a GET sent 0.5 s after a CPU-bound count in the protected guest
#   began (about 4 s of user-space work, no exit; its CGI's first line says it began) against
#   how long the count went on after the GET was sent: interrupts wait for the guest's next
#   synchronous exit (docs/linux-guest.md, "Limits"); get_during_cpu_bound_s_unprotected the
#   same with xenft off (the count, calibrated there to about 4 s, is the same in both)
# Medians of RUNS runs (default 3; each about 14 min). Writes OUT/xen_linux_two_hosts.json.
# Needs root and what tests/lab/failover.sh needs (scripts/install-deps, Xen built).
#
#   bench/xen_linux_pair_bench.sh OUT_DIR [WORKDIR]
set -euo pipefail
out=${1:?usage: xen_linux_pair_bench.sh OUT_DIR [WORKDIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$here/build/lab}
runs=${RUNS:-3}
mkdir -p "$out"
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for i in $(seq "$runs"); do
    echo "== run $i of $runs: tests/lab/failover.sh, cases linux-unprotected and linux-a-dies"
    FAILOVER_CASES="linux-unprotected linux-a-dies" "$here/tests/lab/failover.sh" "$work" > "$work.bench-$i.log" 2>&1 ||
        { tail -n 20 "$work.bench-$i.log"; echo "xen linux pair bench: run $i failed ($work.bench-$i.log)" >&2; exit 1; }
    grep -a 'case linux-\(a-dies\|unprotected\): \(the \(protected \)\?Linux serves\|figures: \|PUT .*power cut of host A\)' "$work.bench-$i.log" |
        sed "s/^/$i /" | tee -a "$samples"
    for h in b a; do
        tr -d '\r' < "$work/serial-$h-linux-a-dies.log" | grep -a "LAB: $h: .*xenftd: .*\(suspected\|went live at exit\)" |
            sed "s/^/$i $h /" | tee -a "$samples"
    done
done
python3 - "$samples" "$out/xen_linux_two_hosts.json" "$here/bench" <<'PY'
import datetime, re, sys
sys.path.insert(0, sys.argv[3])
import lab_rows
v, suspected = {}, {}
def take(key, value):
    v.setdefault(key, []).append(float(value))
def when(line):
    m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    return datetime.datetime.fromisoformat(m[1]) if m else None
for line in open(sys.argv[1]):
    if m := re.search(r"the protected Linux serves (\d+) s after the hosts' boot", line):
        take("service", m[1])
    if m := re.search(r"the Linux serves (\d+) s after the host's boot with xenft off", line):
        take("service_off", m[1])
    if m := re.search(r"figures: idle log ([0-9.]+) Mbit/s", line):
        take("idle_log", m[1])
    if m := re.search(r"figures: (reverse )?first answer (\d+) ms after the cut", line):
        take("reverse_answer" if m[1] else "answer", m[2])
    if m := re.search(r"power cut of host A .* B's replay (\d+) entries behind", line):
        take("backlog", m[1])
    if m := re.search(r"figures: (protected|alone|unprotected)[^:]*: GET median (\d+) ms, 4 MiB download at (\d+) KB/s", line):
        tag = {"protected": "ft", "alone": "alone", "unprotected": "off"}[m[1]]
        take("get_" + tag, m[2])
        take("rate_" + tag, m[3])
        if w := re.search(r"wrk (\d+) requests/s, a CPU-bound count of \d+ in ([0-9.]+) s, a GET sent 0.5 s into it answered in ([0-9.]+) s", line):
            take("wrk_" + tag, w[1])
            take("during_spin_" + tag, w[3])
        if w := re.search(r"the count ended ([0-9.]+) s after its first line \(the GET ([0-9.]+) s after it\)", line):
            take("spin_" + tag, float(w[1]) - float(w[2]))
    run_host = tuple(line.split()[:2])
    if "suspected" in line and when(line):
        suspected[run_host] = when(line)
    if (m := re.search(r"went live at exit .* (\d+) disk writes written again", line)) and run_host in suspected:
        key = "failover" if run_host[1] == "b" else "reverse"
        take(key, (when(line) - suspected[run_host]).total_seconds() * 1000)
        take(key + "_writes", m[1])
figures = ("service", "service_off", "get_ft", "get_alone", "get_off", "rate_ft", "rate_alone", "rate_off", "failover",
           "reverse", "idle_log", "answer", "reverse_answer", "backlog", "wrk_ft", "wrk_alone", "wrk_off", "spin_ft",
           "during_spin_ft", "spin_off", "during_spin_off")
samples = lab_rows.Samples(v, figures, "xen linux pair bench", "service")
med, row = samples.med, samples.row
rows = [
    row("get_ms_ft", med("get_ft"), "ms (median of 9 GETs, protected on two hosts; baseline get_ms_unprotected)", med("get_off")),
    row("get_ms_alone", med("get_alone"), "ms (the same guest alone on B after the failover: recorded, outputs not held; baseline get_ms_unprotected)", med("get_off")),
    row("get_ms_unprotected", med("get_off"), "ms (the same guest with xenft off on a lab host)"),
    row("download_kb_s_ft", med("rate_ft"), "KB/s (4 MiB, protected; baseline download_kb_s_unprotected)", med("rate_off")),
    row("download_kb_s_alone", med("rate_alone"), "KB/s (the same guest alone on B; baseline download_kb_s_unprotected)", med("rate_off")),
    row("download_kb_s_unprotected", med("rate_off"), "KB/s (the same guest with xenft off)"),
    row("service_s", med("service"), "s (the hosts' boot to the protected Linux's first answer, B's live copy included; baseline service_s_unprotected)", med("service_off")),
    row("service_s_unprotected", med("service_off"), "s (the host's boot to the first answer with xenft off)"),
    row("failover_ms", med("failover"), "ms (B's suspicion of A to B live; median disk writes written again: %d)" % med("failover_writes")),
    row("reverse_failover_ms", med("reverse"), "ms (A's suspicion of B to A live; median disk writes written again: %d)" % med("reverse_writes")),
    row("idle_log_mbit_s", med("idle_log"), "Mbit/s (the primary's log on the wire, the guest idle; VMware FT: 1.43 for an idle Linux at 1 kHz)", 1.43),
    row("first_answer_ms", med("answer"), "ms (A's power cut to B's first answer to a GET, the detector's 2 s included)"),
    row("reverse_first_answer_ms", med("reverse_answer"), "ms (B's power cut to A's first answer)"),
    row("replay_backlog_entries", med("backlog"), "entries (B's received and not replayed log at A's cut, its last status)"),
    row("wrk_requests_s_ft", med("wrk_ft"), "requests/s (wrk -t1 -c4 -d10s, a small page, protected; baseline wrk_requests_s_unprotected)", med("wrk_off")),
    row("wrk_requests_s_alone", med("wrk_alone"), "requests/s (the same guest alone on B; baseline wrk_requests_s_unprotected)", med("wrk_off")),
    row("wrk_requests_s_unprotected", med("wrk_off"), "requests/s (the same guest with xenft off)"),
    row("get_during_cpu_bound_s", med("during_spin_ft"), "s (a GET sent 0.5 s after a CPU-bound count in the protected guest began; baseline: how long the count went on after the GET was sent)", med("spin_ft")),
    row("get_during_cpu_bound_s_unprotected", med("during_spin_off"), "s (the same with xenft off: the count is preempted; baseline: the count's rest after the GET was sent)", med("spin_off")),
]
for r, key in zip(rows, ("get_ft", "get_alone", "get_off", "rate_ft", "rate_alone", "rate_off", "service", "service_off",
                         "failover", "reverse", "idle_log", "answer", "reverse_answer", "backlog", "wrk_ft", "wrk_alone",
                         "wrk_off", "during_spin_ft", "during_spin_off")):
    r["samples"] = v[key]
lab_rows.write(rows, sys.argv[2])
PY
