#!/usr/bin/env bash
# can-sim's response-time analysis against pyCPA's (SPNPScheduler) on one synthetic matrix
# of N messages (default 2000, 1 Mbit/s, about 70 % bus load; docs/benchmarks.md): checks
# that every WCRT agrees, then times both whole processes, A then B in each round, with
# GNU time (wall seconds and peak RSS per run, and the ratios).
#   PYCPA=DIR (a checkout of https://github.com/IDA-TUBS/pycpa: not on PyPI)
#   [N=2000] [SCALE=16] [ROUNDS=3] [OUT=DIR] [CAN_SIM=target/release/can-sim]
#   bash can-sim/bench/pycpa.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PYCPA:?PYCPA=DIR: a checkout of the public pyCPA source (not on PyPI)}"
n="${N:-2000}" scale="${SCALE:-16}" rounds="${ROUNDS:-3}"
can_sim="${CAN_SIM:-target/release/can-sim}"
out="${OUT:-$(mktemp -d /tmp/pycpa-bench.XXXXXX)}"
[ -x "$can_sim" ] || cargo build --locked -q --release -p can-sim
python3 can-sim/bench/gen_dbc.py "$n" "$out/m.dbc" "$scale"
"$can_sim" import-dbc "$out/m.dbc" --bitrate 1000000 --name "m$n" --out "$out/m.ron" 2>/dev/null
"$can_sim" analyze "$out/m.ron" --json > "$out/m.json" || [ $? = 1 ]
python3 - "$out/m.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print(len(a["messages"]), "messages, bus load %.1f %%" % a["total_load_pct"])
PY
PYTHONPATH="$PYCPA" python3 can-sim/bench/pycpa_can.py "$out/m.json" --compare
for r in $(seq "$rounds"); do
  /usr/bin/time -f "%e %M" -o "$out/a$r" "$can_sim" analyze "$out/m.ron" --json >/dev/null || true
  PYTHONPATH="$PYCPA" /usr/bin/time -f "%e %M" -o "$out/b$r" python3 can-sim/bench/pycpa_can.py "$out/m.json"
  echo "round $r: can-sim $(tail -1 "$out/a$r") | pycpa $(tail -1 "$out/b$r")  (wall s, peak KiB)"
done
python3 - "$out" "$rounds" <<'PY'
import statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rd = lambda f: [float(x) for x in open(f).read().split()[-2:]]
a = [rd(f"{out}/a{r}") for r in range(1, rounds + 1)]
b = [rd(f"{out}/b{r}") for r in range(1, rounds + 1)]
for i, what in ((0, "time"), (1, "peak memory")):
    q = sorted(x[i] / y[i] for x, y in zip(a, b))
    print(f"{what} can-sim / pycpa: min {q[0]:.4f} median {statistics.median(q):.4f} max {q[-1]:.4f}")
PY
