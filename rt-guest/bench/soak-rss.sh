#!/bin/bash
# Memory of a long probe run: the resident set sampled every minute (ps) and the peak
# (/usr/bin/time -v), for a short run and a long one with checkpoints, both at 100 us.
#
#   rt-guest/bench/soak-rss.sh [SECONDS] [POLICY_ARGS...]
#
# Default 3600 s at SCHED_OTHER (no privilege, no tuning of the host); pass e.g.
# `-p 90` as root for FIFO. Env: RT_GUEST (binary, default target/release/rt-guest),
# CPU (1), OUT (work dir, default a temp dir). Needs /usr/bin/time and ps.
set -euo pipefail
SECS=${1:-3600}
shift || true
POLICY=("$@")
[ ${#POLICY[@]} -eq 0 ] && POLICY=(--policy other)
RT_GUEST=${RT_GUEST:-${CARGO_TARGET_DIR:-target}/release/rt-guest}
CPU=${CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/rtguest-soak.XXXXXX)}
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -r) cpu=$CPU interval=100us ${POLICY[*]} long=${SECS}s checkpoint=60s"
echo "# rt-guest: $("$RT_GUEST" --version)   work dir: $OUT"
peak() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

/usr/bin/time -v -o "$OUT/short.time" "$RT_GUEST" probe -a "$CPU" "${POLICY[@]}" -i 100 -l 1000 -q \
    --no-dma-latency --out "$OUT/short" > /dev/null 2>&1
/usr/bin/time -v -o "$OUT/long.time" "$RT_GUEST" probe -a "$CPU" "${POLICY[@]}" -i 100 -D "${SECS}s" -q \
    --checkpoint 60s --no-dma-latency --out "$OUT/long" > /dev/null 2> "$OUT/long.err" &
TPID=$!
sleep 2
PID=$(pgrep -P "$TPID" -x rt-guest || true)
echo "| minute | RSS (KiB) |"
echo "|---|---|"
m=0
while kill -0 "$TPID" 2>/dev/null; do
    [ -n "$PID" ] && r=$(ps -o rss= -p "$PID" 2>/dev/null | tr -d ' ') && [ -n "$r" ] && echo "| $m | $r |"
    m=$((m + 1))
    for _ in $(seq 60); do kill -0 "$TPID" 2>/dev/null || break; sleep 1; done
done
wait "$TPID" || true
echo
echo "peak RSS: short run (1000 loops) $(peak "$OUT/short.time") KiB, long run (${SECS} s) $(peak "$OUT/long.time") KiB"
grep -c '^checkpoint' "$OUT/long.err" | sed 's/^/checkpoints written: /'
tail -1 "$OUT/long.err"
