# In the lab guest: send rate on vcan0, cangen -g 0 (A) vs can-sim unpaced flood (B), 3 rounds.
set -x
ip link add vcan0 type vcan 2>/dev/null; ip link set vcan0 up
for i in $(seq ${ROUNDS:-3}); do
  # Both senders get a receiver on vcan0: can-sim has its own; cangen gets candump -s 2.
  candump -s 2 vcan0 > /dev/null &
  cdpid=$!
  # cangen -g 0: back-to-back frames; 300000 frames timed by the shell clock.
  # busybox date has no %N: time with /proc/uptime (10 ms resolution over seconds).
  t0=$(cut -d' ' -f1 /proc/uptime); cangen vcan0 -g 0 -i -I 123 -L 8 -D i -n 300000; t1=$(cut -d' ' -f1 /proc/uptime)
  kill $cdpid
  awk -v a=$t0 -v b=$t1 -v i=$i 'BEGIN { printf "cangen run %d: 300000 frames in %.2f s = %.0f frames/s\n", i, b - a, 300000 / (b - a) }'
  can-sim run /lab/bench/flood.ron --no-pace --duration 3s --drain 200ms --out /tmp/flood$i > /tmp/flood$i.txt 2>&1
  echo "can-sim flood run $i rc=$?"; grep -E "Flood|ENOBUFS" /tmp/flood$i.txt
done
mkdir -p /lab/bench/out && cp -r /tmp/flood* /lab/bench/out/
