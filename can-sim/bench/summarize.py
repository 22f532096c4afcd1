#!/usr/bin/env python3
"""Ratios of the can-sim lab benchmark: reads OUT/share/bench/out and the guest output."""
import json, os, re, statistics, sys

out, log = sys.argv[1], sys.argv[2]
text = open(log).read()
# Send rate (rate.sh): "rate X round i: R frames/s", two runs of each sender per round.
runs = {}
for label, rnd, rate in re.findall(r"^rate (\w) round (\d+): (\d+) frames/s", text, re.M):
    runs.setdefault(label, {}).setdefault(int(rnd), []).append(float(rate))
def mmm(xs):
    return "min %.2f / median %.2f / max %.2f" % (min(xs), statistics.median(xs), max(xs))
names = {"A": "cangen -g 0 (any CPU, SCHED_OTHER)", "P": "cangen -g 0 (CPU 1, SCHED_FIFO 80)",
         "S": "can-sim sender (CPU 1, SCHED_FIFO 80)", "B": "can-sim run, own receiver"}
for label in "APSB":
    if label in runs:
        print(f"{names[label]}, frames/s by round:",
              [[round(x) for x in runs[label][r]] for r in sorted(runs[label])])
for x, y in (("S", "P"), ("S", "A"), ("B", "A"), ("B", "P")):
    if x in runs and y in runs:
        rounds = sorted(set(runs[x]) & set(runs[y]))
        ratio = [statistics.mean(runs[x][r]) / statistics.mean(runs[y][r]) for r in rounds]
        print(f"send rate {names[x]} / {names[y]}, per round:", mmm(ratio))
ratios = {"p50": [], "p99": [], "max": []}
for i in [k for k in range(1, 10) if os.path.exists(f"{out}/probe{k}/probe.json")]:
    t = json.load(open(f"{out}/probe{i}/probe.json"))["threads"][0]["latency"]
    e = json.load(open(f"{out}/jit{i}/can-tx.json"))["ecus"][0]["release_latency"]
    print(f"round {i}: probe p50 {t['percentiles']['p50']/1e3:.1f} p99 {t['percentiles']['p99']/1e3:.1f} "
          f"max {t['max_ns']/1e3:.1f} us | can-sim release p50 {e['percentiles']['p50']/1e3:.1f} "
          f"p99 {e['percentiles']['p99']/1e3:.1f} max {e['max_ns']/1e3:.1f} us")
    for k in ("p50", "p99"):
        ratios[k].append(e["percentiles"][k] / t["percentiles"][k])
    ratios["max"].append(e["max_ns"] / t["max_ns"])
for k, v in ratios.items():
    if not v:
        continue
    print(f"release latency can-sim / probe {k}:", mmm(v))
