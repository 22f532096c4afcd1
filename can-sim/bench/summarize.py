#!/usr/bin/env python3
"""Ratios of the can-sim lab benchmark: reads OUT/share/bench/out and the guest output."""
import json, os, re, statistics, sys

out, log = sys.argv[1], sys.argv[2]
text = open(log).read()
cangen = [float(x) for x in re.findall(r"cangen run \d+: \d+ frames in [\d.]+ s = (\d+) frames/s", text)]
rates = []
for i in range(1, len(cangen) + 1):
    r = json.load(open(f"{out}/flood{i}/can.json"))
    rates.append(r["messages"][0]["sent"] / r["elapsed_s"])
def mmm(xs):
    return "min %.2f / median %.2f / max %.2f" % (min(xs), statistics.median(xs), max(xs))
print("cangen frames/s:", [round(x) for x in cangen])
print("can-sim frames/s:", [round(x) for x in rates])
print("send rate can-sim / cangen:", mmm([a / b for a, b in zip(rates, cangen)]))
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
