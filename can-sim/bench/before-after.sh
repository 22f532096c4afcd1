# In the lab guest: send rate of two can-sim builds against each other and cangen -g 0, one
# boot, ROUNDS rounds (default 4) of A, old, new, new, old, A. Put the two static builds
# (target-lab-static/x86_64-unknown-linux-gnu/release/can-sim of each commit) into the
# boot's share/bench as can-sim-old and can-sim-new, with flood.ron beside them
# (PROFILE=/lab/bench/flood4.ron: the four-ECU flood).
ip link add vcan0 type vcan 2>/dev/null; ip link set vcan0 up
N=${FRAMES:-120000}
DUR=${DURATION_MS:-2500}
A() {
  candump -s 2 vcan0 > /dev/null & cd_pid=$!; sleep 0.2
  t0=$(cut -d' ' -f1 /proc/uptime); cangen vcan0 -g 0 -i -I 123 -L 8 -D i -n $N; t1=$(cut -d' ' -f1 /proc/uptime)
  kill $cd_pid
  awk -v a=$t0 -v b=$t1 -v i=$1 -v n=$N 'BEGIN { printf "rate cangen round %d: %.0f frames/s\n", i, n / (b - a) }'
}
B() {
  out=/tmp/$2-$1-$(cut -d' ' -f1 /proc/uptime)
  /lab/bench/can-sim-$2 run ${PROFILE:-/lab/bench/flood.ron} --no-pace --duration ${DUR}ms --drain 200ms --out $out > $out.txt 2>&1
  grep Flood $out.txt
  awk -v i=$1 -v m=$2 -v d=$DUR '/"0x123"/ { gsub(/[^0-9]/, "", $2); printf "rate %s round %d: %.0f frames/s\n", m, i, $2 / ((d + 20) / 1000) }' $out/can-tx.json
}
for i in $(seq ${ROUNDS:-4}); do A $i; B $i old; B $i new; B $i new; B $i old; A $i; done
