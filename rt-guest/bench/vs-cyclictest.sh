#!/bin/bash
# A/B: rt-guest probe vs cyclictest (rt-tests) on the same CPU, interval, priority and
# mlock, alternating runs in one session. Prints ratios probe/cyclictest of min, avg, p99
# and max (min/median/max over the pairs) and the max RSS of a short and a 100x longer run.
#
#   sudo rt-guest/bench/vs-cyclictest.sh [PAIRS] [SECONDS]
#
# Env: RT_GUEST (binary, default $CARGO_TARGET_DIR or target, release), CPU (default 1),
# OUT (work directory, default a temp dir). Needs root, cyclictest, /usr/bin/time, python3.
set -euo pipefail

PAIRS=${1:-5}
SECS=${2:-20}
CPU=${CPU:-1}
RT_GUEST=${RT_GUEST:-${CARGO_TARGET_DIR:-target}/release/rt-guest}
OUT=${OUT:-$(mktemp -d /tmp/rtguest-bench.XXXXXX)}
PRIO=90
INTERVAL=1000
BUCKETS=2000

[ -x "$RT_GUEST" ] || { echo "no rt-guest binary at $RT_GUEST (cargo build --release -p rt-guest)" >&2; exit 2; }
command -v cyclictest >/dev/null || { echo "cyclictest not installed (rt-tests)" >&2; exit 2; }
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -r) cpu=$CPU prio=$PRIO interval=${INTERVAL}us ${PAIRS}x${SECS}s"
echo "# cyclictest: $(cyclictest --help 2>&1 | head -1)"
echo "# rt-guest:   $("$RT_GUEST" --version)"
echo "# work dir:   $OUT"

for i in $(seq 1 "$PAIRS"); do
    # Alternate which tool goes first, so a drift in the machine's noise hits both.
    if [ $((i % 2)) -eq 1 ]; then order="ct probe"; else order="probe ct"; fi
    for tool in $order; do
        if [ "$tool" = ct ]; then
            cyclictest -m -p $PRIO -i $INTERVAL -a "$CPU" -t 1 -h $BUCKETS -q -D "$SECS" \
                --json="$OUT/ct-$i.json" > "$OUT/ct-$i.txt"
        else
            "$RT_GUEST" probe -a "$CPU" -p $PRIO -i $INTERVAL -D "${SECS}s" -q \
                --histogram-us $BUCKETS --histogram "$OUT/probe-$i.txt" \
                --json "$OUT/probe-$i.json" --out "$OUT/run-$i" > /dev/null
        fi
    done
done

# Max RSS: 1000 vs 100000 loops at 100 us.
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'; }
CT_SHORT=$(rss cyclictest -m -p $PRIO -i 100 -a "$CPU" -t 1 -h $BUCKETS -q -l 1000)
CT_LONG=$(rss cyclictest -m -p $PRIO -i 100 -a "$CPU" -t 1 -h $BUCKETS -q -l 100000)
PR_SHORT=$(rss "$RT_GUEST" probe -a "$CPU" -p $PRIO -i 100 -l 1000 -q --histogram-us $BUCKETS --out "$OUT/rss-short")
PR_LONG=$(rss "$RT_GUEST" probe -a "$CPU" -p $PRIO -i 100 -l 100000 -q --histogram-us $BUCKETS --out "$OUT/rss-long")

python3 - "$OUT" "$PAIRS" "$CT_SHORT" "$CT_LONG" "$PR_SHORT" "$PR_LONG" <<'EOF'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
ct_short, ct_long, pr_short, pr_long = map(int, sys.argv[3:7])

def p99_from_h(path):
    """p99 in us from a cyclictest -h text (buckets + overflows), as a CI script would."""
    counts, overflow = [], 0
    for line in open(path):
        if line[:1].isdigit():
            counts.append(sum(int(c) for c in line.split()[1:]))
        elif line.startswith("# Histogram Overflows:"):
            overflow = sum(int(c) for c in line.split(":")[1].split())
    total = sum(counts) + overflow
    acc = 0
    for us, c in enumerate(counts):
        acc += c
        if acc >= 0.99 * total:
            return float(us)
    return float("inf")

rows = []
for i in range(1, pairs + 1):
    ct = json.load(open(f"{out}/ct-{i}.json"))["thread"]["0"]
    pr = json.load(open(f"{out}/run-{i}/probe.json"))["threads"][0]
    lat = pr["latency"]
    c = dict(min=ct["min"], avg=ct["avg"], p99=p99_from_h(f"{out}/ct-{i}.txt"), max=ct["max"],
             cycles=ct["cycles"])
    p = dict(min=lat["min_ns"] / 1e3, avg=lat["mean_ns"] / 1e3, p99=p99_from_h(f"{out}/probe-{i}.txt"),
             max=lat["max_ns"] / 1e3, cycles=pr["samples"], missed=pr["missed_periods"],
             p99_hdr=lat["percentiles"]["p99"] / 1e3)
    rows.append((c, p))
    print(f"pair {i}: cyclictest min {c['min']} avg {c['avg']} p99 {c['p99']} max {c['max']} us ({c['cycles']} cycles) | "
          f"probe min {p['min']:.3f} avg {p['avg']:.3f} p99 {p['p99']} (hdr {p['p99_hdr']:.3f}) max {p['max']:.3f} us "
          f"({p['cycles']} samples, {p['missed']} missed periods)")

print()
print("| metric | ratio probe/cyclictest min | median | max |")
print("|---|---|---|---|")
for k in ("min", "avg", "p99", "max"):
    r = [p[k] / c[k] for c, p in rows if c[k] > 0]
    print(f"| {k} | {min(r):.2f} | {statistics.median(r):.2f} | {max(r):.2f} |")
print()
print("| max RSS (KiB) | 1000 loops @100us | 100000 loops @100us | growth |")
print("|---|---|---|---|")
print(f"| cyclictest -m -h {2000} | {ct_short} | {ct_long} | {ct_long - ct_short:+d} |")
print(f"| rt-guest probe | {pr_short} | {pr_long} | {pr_long - pr_short:+d} |")
EOF
