#!/bin/bash
# A/B: rt-guest oslat vs rt-tests' oslat on the same CPU, priority and duration,
# alternating runs in one session (which goes first alternates). Prints the ratios
# rt-guest/oslat of p99 and max (min/median/max over the pairs), both read from the
# oslat-format JSON histograms (1-us buckets, oslat's "us + 1" unit), and the loop rates.
#
#   sudo flock /tmp/rtvirt-host-tests.lock rt-guest/bench/vs-oslat.sh [PAIRS] [SECONDS]
#
# Env: RT_GUEST (binary; default target/release/rt-guest), CPU (1), PRIO (1: SCHED_FIFO,
# as KubeVirt's checkup runs oslat), OUT (work dir). Needs root, oslat, python3.
set -euo pipefail
PAIRS=${1:-10}
SECS=${2:-10}
CPU=${CPU:-1}
PRIO=${PRIO:-1}
RT_GUEST=${RT_GUEST:-${CARGO_TARGET_DIR:-target}/release/rt-guest}
OUT=${OUT:-$(mktemp -d /tmp/rtguest-oslat.XXXXXX)}
[ -x "$RT_GUEST" ] || { echo "no rt-guest binary at $RT_GUEST" >&2; exit 2; }
command -v oslat >/dev/null || { echo "oslat not installed (rt-tests)" >&2; exit 2; }
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -r) cpu=$CPU fifo=$PRIO ${PAIRS}x${SECS}s buckets=1024"
echo "# $(oslat --version 2>&1 | head -1) vs $("$RT_GUEST" --version); work dir $OUT"
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) -eq 1 ]; then order="ref ours"; else order="ours ref"; fi
    for t in $order; do
        if [ "$t" = ref ]; then
            oslat -c "$CPU" -f "$PRIO" -D "$SECS" -b 1024 -q --json="$OUT/ref-$i.json" > /dev/null
        else
            "$RT_GUEST" oslat -c "$CPU" -f "$PRIO" -D "${SECS}s" -b 1024 -q \
                --json "$OUT/ours-$i.json" --out "$OUT/run-$i" > /dev/null 2>&1
        fi
    done
done
python3 - "$OUT" "$PAIRS" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def load(p):
    t = json.load(open(p))["thread"]["0"]
    h = {int(k): v for k, v in t["histogram"].items()}
    n = sum(h.values())
    acc, p99 = 0, None
    for us in sorted(h):
        acc += h[us]
        if p99 is None and acc >= 0.99 * n:
            p99 = us
    return dict(p99=p99, max=t["max"], n=n, dur=t["duration"])
rows = []
for i in range(1, pairs + 1):
    r, o = load(f"{out}/ref-{i}.json"), load(f"{out}/ours-{i}.json")
    rows.append((r, o))
    print(f"pair {i}: oslat p99 {r['p99']} max {r['max']} us ({r['n']/r['dur']/1e6:.1f} M reads/s) | "
          f"rt-guest p99 {o['p99']} max {o['max']} us ({o['n']/o['dur']/1e6:.1f} M reads/s)")
print()
print("| metric | ratio rt-guest/oslat min | median | max |")
print("|---|---|---|---|")
for k in ("p99", "max"):
    v = [o[k] / r[k] for r, o in rows if r[k]]
    print(f"| {k} | {min(v):.2f} | {statistics.median(v):.2f} | {max(v):.2f} |")
v = [(o['n'] / o['dur']) / (r['n'] / r['dur']) for r, o in rows]
print(f"| reads/s | {min(v):.2f} | {statistics.median(v):.2f} | {max(v):.2f} |")
PY
