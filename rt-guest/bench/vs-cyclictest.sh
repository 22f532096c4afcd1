#!/bin/bash
# A/B: rt-guest probe vs cyclictest (rt-tests) on the same CPU, interval, priority and
# mlock, alternating runs in one session. Prints ratios probe/cyclictest of min, avg, p99
# and max (min/median/max over the pairs) and the max RSS of a short and a 100x longer run.
#
#   sudo rt-guest/bench/vs-cyclictest.sh [PAIRS] [SECONDS]
#
# The binary is the static build the lab guest runs:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile small -p rt-guest \
#       --target x86_64-unknown-linux-gnu
# Env: RT_GUEST (binary; default that build under $CARGO_TARGET_DIR or target), CPU
# (default 1), OUT (work directory, default a temp dir), CT_EXTRA (more cyclictest
# options, e.g. --mainaffinity=0 to keep its main thread off the measured CPU, as the probe
# does). Needs root, cyclictest,
# /usr/bin/time, python3.
set -euo pipefail

PAIRS=${1:-5}
SECS=${2:-20}
CPU=${CPU:-1}
RT_GUEST=${RT_GUEST:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/small/rt-guest}
OUT=${OUT:-$(mktemp -d /tmp/rtguest-bench.XXXXXX)}
PRIO=90
INTERVAL=1000
BUCKETS=2000

[ -x "$RT_GUEST" ] || { echo "no rt-guest binary at $RT_GUEST (see the build command above)" >&2; exit 2; }
command -v cyclictest >/dev/null || { echo "cyclictest not installed (rt-tests)" >&2; exit 2; }
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -r) cpu=$CPU prio=$PRIO interval=${INTERVAL}us ${PAIRS}x${SECS}s"
echo "# cyclictest: $(cyclictest --help 2>&1 | head -1)"
echo "# rt-guest:   $("$RT_GUEST" --version)"
echo "# work dir:   $OUT"
echo "# cyclictest extra options: ${CT_EXTRA:-none}"

for i in $(seq 1 "$PAIRS"); do
    # Alternate which tool goes first, so a drift in the machine's noise hits both.
    if [ $((i % 2)) -eq 1 ]; then order="ct probe"; else order="probe ct"; fi
    for tool in $order; do
        if [ "$tool" = ct ]; then
            # shellcheck disable=SC2086
            cyclictest -m -p $PRIO -i $INTERVAL -a "$CPU" -t 1 -h $BUCKETS -q -D "$SECS" ${CT_EXTRA:-} \
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
    # Both from their cyclictest-format JSON (whole us, truncated the same way) and their
    # -h text, so the units match; the probe's exact ns are printed beside.
    ct = json.load(open(f"{out}/ct-{i}.json"))["thread"]["0"]
    pj = json.load(open(f"{out}/probe-{i}.json"))["thread"]["0"]
    c = dict(min=ct["min"], avg=ct["avg"], p99=p99_from_h(f"{out}/ct-{i}.txt"), max=ct["max"],
             cycles=ct["cycles"])
    p = dict(min=pj["min"], avg=pj["avg"], p99=p99_from_h(f"{out}/probe-{i}.txt"), max=pj["max"],
             cycles=pj["cycles"])
    rows.append((c, p))
    print(f"pair {i}: cyclictest min {c['min']} avg {c['avg']} p99 {c['p99']:.0f} max {c['max']} us "
          f"({c['cycles']} cycles) | probe min {p['min']} avg {p['avg']} p99 {p['p99']:.0f} max {p['max']} us "
          f"({p['cycles']} cycles, {pj['missed_periods']} missed periods, exact min {pj['min_ns']} ns, "
          f"max {pj['max_ns']} ns, {pj['page_faults_in_loop']} page faults in the loop)")

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
