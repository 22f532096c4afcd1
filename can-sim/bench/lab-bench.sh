#!/bin/bash
# can-sim benchmark in the lab guest (root, after lab/setup.sh), A/B in one boot:
#   send rate on vcan0 (cangen -g 0 vs can-sim flood), CAN FD with BRS, signals and E2E on
#   vcan1 and the split sender/receiver roles (fd.sh), and release latency (rt-guest probe
#   vs a can-sim ECU thread). Prints the ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/lab/out/can-sim-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out/share/bench"
cp "$root"/can-sim/bench/{flood.ron,jitter.ron,fd-e2e.ron,rate.sh,rate-lib.sh,jitter.sh,fd.sh} "$out/share/bench/"
lab=${RTVIRT_LAB:-$root/target/debug/rtvirt-lab}
[ -x "$lab" ] || (cd "$root" && cargo build -p lab)
"$lab" boot --out "$out" --exec "sh /lab/bench/rate.sh" --exec "sh /lab/bench/fd.sh" \
    --exec "sh /lab/bench/jitter.sh" \
    > "$out/guest.out" 2> "$out/boot.err"
python3 "$root/can-sim/bench/summarize.py" "$out/share/bench/out" "$out/guest.out" | tee "$out/summary.txt"
