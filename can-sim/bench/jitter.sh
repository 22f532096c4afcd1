# In the lab guest: wake-up latency of rt-guest probe (A) vs the release latency of a can-sim
# ECU thread (B), both SCHED_FIFO 95 on CPU 1 with a 1 ms period, 10 s each, 3 rounds.
set -x
for i in 1 2 3; do
  rt-guest probe --cpus 1 --interval-us 1000 --priority 95 --policy fifo --duration 10s --out /tmp/probe$i --quiet; echo "probe $i rc=$?"
  can-sim run /lab/bench/jitter.ron --duration 10s --out /tmp/jit$i > /tmp/jit$i.txt 2>&1; echo "jitter $i rc=$?"; grep -E "ecu/|Tick" /tmp/jit$i.txt
done
mkdir -p /lab/bench/out && cp -r /tmp/probe* /tmp/jit* /lab/bench/out/
