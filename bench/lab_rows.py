# The rows a lab bench writes (bench/xen_linux_bench.sh, bench/xen_linux_pair_bench.sh): a
# figure's median over the runs next to its baseline from the same runs and their ratio,
# printed as they are made and written as JSON like the other benches' results.
import json
import statistics


def shown(value):
    # Three significant digits for small figures (an idle log of 0.007 Mbit/s), one decimal else.
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def row(metric, value, unit, runs, baseline=None):
    r = {"metric": metric, "value": value, "unit": unit, "baseline": baseline,
         "ratio": value / baseline if baseline else None, "runs": runs}
    print(f"  {metric} = {shown(value)} {unit}" + (f"   (baseline {shown(baseline)}, ratio {r['ratio']:.3f})" if baseline else ""))
    return r


def write(rows, path):
    with open(path, "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")
    print("  wrote " + path)


class Samples:
    """The runs' samples by figure name; stops the bench if a run did not report one."""

    def __init__(self, values, required, who, runs_key):
        missing = [k for k in required if k not in values]
        if missing:
            raise SystemExit(who + ": the runs did not report " + ", ".join(missing))
        self.values, self.runs = values, len(values[runs_key])

    def med(self, key):
        return statistics.median(self.values[key])

    def row(self, metric, value, unit, baseline=None):
        return row(metric, value, unit, self.runs, baseline)
