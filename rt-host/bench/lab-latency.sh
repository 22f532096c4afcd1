#!/usr/bin/env bash
# Wakeup latency in the lab guest while this host runs stress-ng on both CPUs, untuned vs
# after `rt-host setup lab`, in one VM session (rounds alternate untuned/tuned).
#
# The guest measures with cyclictest (-p90 -i1000 on vCPU 1, histogram in 1 us buckets);
# the host runs `stress-ng --cpu 2` during every measurement. Prints a markdown table of
# p99 and max per round and the tuned/untuned ratios of their medians.
#
# Usage (root, after lab/setup.sh):  bash rt-host/bench/lab-latency.sh
# Environment: DURATION (s per run, default 20), ROUNDS (default 2), RT_HOST, RTVIRT_LAB
# (binaries; default target/release/...), OUT (default lab/out/bench-UTC), PROFILE (what
# `rt-host setup` applies, default lab), STRESS (0: no stress-ng, default 1), TRACE (1:
# record the host's sched_switch and sched_wakeup events on both CPUs during every
# measurement into OUT/trace-LABEL.txt, through a tracefs instance; read them with
# rt-host/bench/stalls.py), AFTER_SETUP / BEFORE_REVERT (shell commands run after each
# setup and before each revert, with $qemu_pid set: to try a layout by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "lab-latency.sh: run as root (it tunes this host and boots QEMU)" >&2
  exit 2
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
RT_HOST="${RT_HOST:-$target/release/rt-host}"
RTVIRT_LAB="${RTVIRT_LAB:-$target/release/rtvirt-lab}"
if [ ! -x "$RT_HOST" ] || [ ! -x "$RTVIRT_LAB" ]; then
  echo "lab-latency.sh: building rt-host and rtvirt-lab (cargo build --release -p rt-host -p lab)" >&2
  cargo build --release -p rt-host -p lab
fi
export RTVIRT_LAB_ROOT="${RTVIRT_LAB_ROOT:-$PWD}"
DURATION="${DURATION:-20}"
ROUNDS="${ROUNDS:-2}"
PROFILE="${PROFILE:-lab}"
STRESS="${STRESS:-1}"
TRACE="${TRACE:-0}"
TRACEFS=/sys/kernel/tracing
[ -d "$TRACEFS/instances" ] || TRACEFS=/sys/kernel/debug/tracing
TRACE_DIR="$TRACEFS/instances/rtvirt-bench-$$"
OUT="${OUT:-$PWD/lab/out/bench-$(date -u +%Y%m%dT%H%M%SZ)}"
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"
JOURNAL="$OUT/journal"
lab_pid=""

cleanup() {
  if [ -d "$TRACE_DIR" ]; then
    echo 0 >"$TRACE_DIR/tracing_on" 2>/dev/null || true
    rmdir "$TRACE_DIR" 2>/dev/null || true
  fi
  if [ -f "$JOURNAL/journal.json" ]; then
    "$RT_HOST" revert --journal-dir "$JOURNAL" >&2 || true
  fi
  if [ -n "$lab_pid" ] && kill -0 "$lab_pid" 2>/dev/null; then
    kill -INT "$lab_pid" 2>/dev/null || true
    wait "$lab_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "lab-latency.sh: booting the lab VM into $OUT" >&2
"$RTVIRT_LAB" boot --no-rtvirt --out "$OUT" >"$OUT/lab-boot.log" 2>&1 &
lab_pid=$!
for _ in $(seq 1 1800); do
  [ -f "$OUT/share/ready" ] && break
  kill -0 "$lab_pid" 2>/dev/null || { echo "rtvirt-lab boot died:" >&2; tail -20 "$OUT/lab-boot.log" >&2; exit 2; }
  sleep 0.1
done
[ -f "$OUT/share/ready" ] || { echo "the lab guest did not come up" >&2; exit 2; }

# The QEMU of this session: the one writing our console log.
qemu_pid=""
for p in /proc/[0-9]*; do
  if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "$OUT/console.log"; then
    qemu_pid="${p#/proc/}"
  fi
done
[ -n "$qemu_pid" ] || { echo "cannot find the lab QEMU" >&2; exit 2; }
echo "lab-latency.sh: QEMU pid $qemu_pid" >&2

n=0
guest() { # run a shell script in the guest and wait for its exit code
  n=$((n + 1))
  printf '%s\n' "$1" >"$OUT/share/cmd/$n.sh.tmp"
  mv "$OUT/share/cmd/$n.sh.tmp" "$OUT/share/cmd/$n.sh"
  for _ in $(seq 1 $(( (DURATION + 120) * 10 ))); do
    [ -f "$OUT/share/cmd/$n.rc" ] && return "$(cat "$OUT/share/cmd/$n.rc")"
    sleep 0.1
  done
  echo "guest command $n timed out" >&2
  return 2
}

trace_start() {
  [ "$TRACE" = 1 ] || return 0
  mkdir -p "$TRACE_DIR"
  echo 0 >"$TRACE_DIR/tracing_on"
  echo 65536 >"$TRACE_DIR/buffer_size_kb"
  echo mono >"$TRACE_DIR/trace_clock"
  echo >"$TRACE_DIR/trace"
  for e in sched_switch sched_wakeup sched_migrate_task; do
    echo 1 >"$TRACE_DIR/events/sched/$e/enable"
  done
  echo 1 >"$TRACE_DIR/tracing_on"
}

trace_stop() { # $1 label
  [ "$TRACE" = 1 ] || return 0
  echo 0 >"$TRACE_DIR/tracing_on"
  cat "$TRACE_DIR/trace" >"$OUT/trace-$1.txt"
  {
    echo "qemu_pid $qemu_pid"
    for t in /proc/"$qemu_pid"/task/*; do
      # Fields after "(comm) ": state is field 3, rt_priority 40, policy 41.
      read -r -a f < <(sed 's/.*) //' "$t/stat")
      echo "thread ${t##*/} $(cat "$t/comm") policy=${f[38]} ${f[37]} cpus=$(awk '/Cpus_allowed_list/ {print $2}' "$t/status")"
    done
  } >"$OUT/threads-$1.txt"
}

measure() { # $1 label: cyclictest in the guest while stress-ng loads both host CPUs
  local stress=""
  if [ "$STRESS" = 1 ]; then
    stress-ng --cpu 2 --timeout "$((DURATION + 6))s" --quiet &
    stress=$!
  fi
  sleep 2
  trace_start
  guest "cyclictest -q -m -p 90 -i 1000 -a 1 -t 1 -D $DURATION -h 30000 > /lab/ct-$1.txt 2>&1"
  trace_stop "$1"
  echo "$1 load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
  [ -z "$stress" ] || wait "$stress" || true
}

# p99 and max (us) from a cyclictest histogram (overflows count beyond the last bucket).
summarize() {
  awk '
    /^[0-9]+[ \t]+[0-9]+/ { b[$1 + 0] = $2 + 0; total += $2; next }
    /# Histogram Overflows:/ { over = $4 + 0 }
    /# Max Latencies:/ { max = $4 + 0 }
    END {
      total += over; want = total * 0.99; c = 0; p99 = -1
      for (i = 0; i <= 30000; i++) { c += b[i]; if (c >= want) { p99 = i; break } }
      if (p99 < 0) p99 = ">30000"
      printf "%s %s %d\n", p99, max, total
    }' "$1"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/load.txt"
for r in $(seq 1 "$ROUNDS"); do
  measure "untuned-$r"
  "$RT_HOST" setup "$PROFILE" --vm-pid "$qemu_pid" --journal-dir "$JOURNAL" >"$OUT/setup-$r.txt" 2>&1 || {
    echo "rt-host setup failed:" >&2; cat "$OUT/setup-$r.txt" >&2; exit 2; }
  [ -z "${AFTER_SETUP:-}" ] || eval "$AFTER_SETUP"
  measure "tuned-$r"
  [ -z "${BEFORE_REVERT:-}" ] || eval "$BEFORE_REVERT"
  "$RT_HOST" revert --journal-dir "$JOURNAL" >"$OUT/revert-$r.txt" 2>&1
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "| run | samples | p99 (us) | max (us) |"
echo "|---|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  for k in untuned tuned; do
    read -r p99 max total < <(summarize "$OUT/share/ct-$k-$r.txt")
    echo "| $k $r | $total | $p99 | $max |"
    echo "$k $p99 $max" >>"$OUT/values.txt"
  done
done
for col in 2 3; do
  u=$(awk -v c="$col" '$1 == "untuned" { print $c }' "$OUT/values.txt" | median)
  t=$(awk -v c="$col" '$1 == "tuned" { print $c }' "$OUT/values.txt" | median)
  name=$([ "$col" = 2 ] && echo p99 || echo max)
  awk -v n="$name" -v u="$u" -v t="$t" 'BEGIN { printf "\n%s: median untuned %s us, tuned %s us, tuned/untuned %.2f", n, u, t, (u > 0 ? t / u : 0) }'
done
echo
sed 's/^/host /' "$OUT/load.txt"
echo "raw: $OUT" >&2
