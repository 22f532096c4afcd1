# In the lab guest: rt-guest probe (A) vs can-sim ECU release latency unpaced (B) and paced (C),
# all SCHED_FIFO 95 on CPU 1, 1 ms period, 10 s, 3 rounds. Run with
#   rtvirt-lab boot --out OUT --exec "sh /lab/bench/jitter3.sh"  (OUT/share/bench = can-sim/bench)
set -x
/usr/bin/ip link add vcan0 type vcan; /usr/bin/ip link set vcan0 up
for i in 1 2 3; do
  rt-guest probe --cpus 1 --interval-us 1000 --priority 95 --policy fifo --duration 10s --out /tmp/probe$i --quiet
  can-sim run /lab/bench/jitter.ron --duration 10s --out /tmp/jit$i > /dev/null 2>&1
  can-sim run /lab/bench/jitter-paced.ron --duration 10s --out /tmp/jitp$i > /dev/null 2>&1
done
mkdir -p /lab/bench/out && cp -r /tmp/probe* /tmp/jit* /lab/bench/out/
