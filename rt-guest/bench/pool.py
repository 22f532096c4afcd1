#!/usr/bin/env python3
"""Pool the pairs of several vs-cyclictest.sh work directories: ratios probe/cyclictest
of min, avg, p99 and max as min/median/max over all pairs.

    python3 rt-guest/bench/pool.py /tmp/bench2 /tmp/bench3 ...
"""
import glob
import json
import os
import statistics
import sys


def p99_from_h(path):
    counts, overflow = [], 0
    for line in open(path):
        if line[:1].isdigit():
            counts.append(sum(int(c) for c in line.split()[1:]))
        elif line.startswith("# Histogram Overflows:"):
            overflow = sum(int(c) for c in line.split(":")[1].split())
    total, acc = sum(counts) + overflow, 0
    for us, c in enumerate(counts):
        acc += c
        if acc >= 0.99 * total:
            return float(us)
    return float("inf")


ratios = {k: [] for k in ("min", "avg", "p99", "max")}
pairs = 0
for d in sys.argv[1:]:
    for ct_path in sorted(glob.glob(os.path.join(d, "ct-*.json"))):
        i = ct_path.rsplit("-", 1)[1].split(".")[0]
        pr_path = os.path.join(d, f"probe-{i}.json")
        if not os.path.exists(pr_path):
            continue
        ct = json.load(open(ct_path))["thread"]["0"]
        pr = json.load(open(pr_path))["thread"]["0"]
        ct["p99"] = p99_from_h(os.path.join(d, f"ct-{i}.txt"))
        pr["p99"] = p99_from_h(os.path.join(d, f"probe-{i}.txt"))
        pairs += 1
        for k in ratios:
            if ct[k] > 0:
                ratios[k].append(pr[k] / ct[k])

print(f"{pairs} pairs from {len(sys.argv) - 1} sessions")
print("| metric | ratio probe/cyclictest min | median | max |")
print("|---|---|---|---|")
for k, r in ratios.items():
    print(f"| {k} | {min(r):.2f} | {statistics.median(r):.2f} | {max(r):.2f} |")
