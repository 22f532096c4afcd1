# Sourced by rate.sh and before-after.sh in the lab guest: one timed run of cangen -g 0 or
# of a can-sim flood on vcan0, printed as "rate LABEL round I: R frames/s".
# cangen: N frames / time (/proc/uptime, 10 ms resolution); can-sim: frames the kernel
# accepted ("sent" in can-tx.json) / (duration + 20 ms, the sender's end grace), so the
# rate is never overstated.
ip link add vcan0 type vcan 2>/dev/null; ip link set vcan0 up
N=${FRAMES:-120000}
DUR=${DURATION_MS:-2500}
mkdir -p /lab/bench/out
cangen_run() { # $1 round, $2 label, $3 placement of cangen, $4 placement of candump
  $4 candump -s 2 vcan0 > /dev/null &
  cd_pid=$!
  sleep 0.2
  t0=$(cut -d' ' -f1 /proc/uptime)
  $3 cangen vcan0 -g 0 -i -I 123 -L 8 -D i -n $N
  rc=$?
  t1=$(cut -d' ' -f1 /proc/uptime)
  kill $cd_pid
  [ $rc = 0 ] || echo "cangen $2 run $1 rc=$rc"
  awk -v a=$t0 -v b=$t1 -v i=$1 -v m=$2 -v n=$N 'BEGIN { printf "rate %s round %d: %.0f frames/s\n", m, i, n / (b - a) }'
}
cansim_run() { # $1 round, $2 label, $3 extra can-sim arguments; $4: candump too
  # (CAN_SIM: the binary, PROFILE: the flood profile)
  out=/tmp/$2-$1-$(cut -d' ' -f1 /proc/uptime)
  if [ -n "$4" ]; then taskset 1 candump -s 2 vcan0 > /dev/null & cd_pid=$!; sleep 0.2; fi
  ${CAN_SIM:-can-sim} run ${PROFILE:-/lab/bench/flood.ron} --no-pace --duration ${DUR}ms $3 --out $out > $out.txt 2>&1
  echo "can-sim $2 run $1 rc=$?"
  if [ -n "$4" ]; then kill $cd_pid; fi
  grep -E "Flood|ENOBUFS" $out.txt
  cp -r $out $out.txt /lab/bench/out/
  awk -v i=$1 -v m=$2 -v d=$DUR '/"0x123"/ { gsub(/[^0-9]/, "", $2); printf "rate %s round %d: %.0f frames/s\n", m, i, $2 / ((d + 20) / 1000) }' $out/can-tx.json
}
