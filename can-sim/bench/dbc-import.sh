#!/bin/bash
# DBC import: can-sim import-dbc (A) against cantools' load_file (B) on the same synthetic
# matrices (can-sim/bench/gen_dbc.py: N messages, 4 signals each, cycle times), wall time
# and peak RSS (GNU time), ROUNDS rounds alternating A and B. Prints the ratios.
#   bash can-sim/bench/dbc-import.sh            (needs python3 with cantools, /usr/bin/time)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(mktemp -d)}
rounds=${ROUNDS:-3}
sizes=${SIZES:-"10000 100000"}
exe=${CAN_SIM:-$root/target/release/can-sim}
[ -x "$exe" ] || (cd "$root" && cargo build --release -p can-sim)
for n in $sizes; do
  python3 "$root/can-sim/bench/gen_dbc.py" "$n" "$out/m$n.dbc"
  for i in $(seq "$rounds"); do
    /usr/bin/time -f "can-sim $n $i %e %M" "$exe" import-dbc "$out/m$n.dbc" --out "$out/m$n.ron" 2>>"$out/times.txt" >/dev/null \
      || { echo "can-sim failed"; exit 2; }
    /usr/bin/time -f "cantools $n $i %e %M" python3 -c \
      'import sys, cantools; db = cantools.database.load_file(sys.argv[1]); print(len(db.messages))' \
      "$out/m$n.dbc" >/dev/null 2>>"$out/times.txt"
  done
done
grep -E '^(can-sim|cantools) ' "$out/times.txt" > "$out/t.txt"
python3 - "$out/t.txt" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for tool, n, i, t, kb in rows:
    by.setdefault((tool, n), {})[i] = (float(t), int(kb))
def mmm(xs): return "%.3f / %.3f / %.3f" % (min(xs), statistics.median(xs), max(xs))
for n in sorted({r[1] for r in rows}, key=int):
    a, b = by[("can-sim", n)], by[("cantools", n)]
    rounds = sorted(a)
    print(f"{n} messages: can-sim", [f"{a[i][0]:.2f} s {a[i][1]//1024} MB" for i in rounds],
          "cantools", [f"{b[i][0]:.2f} s {b[i][1]//1024} MB" for i in rounds])
    print(f"  time   can-sim / cantools min / median / max: {mmm([a[i][0] / b[i][0] for i in rounds])}")
    print(f"  memory can-sim / cantools min / median / max: {mmm([a[i][1] / b[i][1] for i in rounds])}")
PY
