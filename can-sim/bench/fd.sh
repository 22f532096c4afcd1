# In the lab guest: CAN FD with BRS, signals and E2E on vcan1 (can-sim and candump -L as
# an independent receiver), then the split roles on vcan2: a receiver-only and a
# sender-only can-sim as two processes agreeing on one start time.
set -x
ip link add vcan1 type vcan 2>/dev/null; ip link set vcan1 mtu 72; ip link set vcan1 up
candump -L vcan1 > /tmp/fd-candump.log &
cdp=$!
sleep 1
can-sim run /lab/bench/fd-e2e.ron --tx vcan1 --rx vcan1 --duration 10s --out /tmp/fd1 > /tmp/fd1.txt 2>&1; echo "fd run rc=$?"
sleep 1; kill $cdp
cat /tmp/fd1.txt
echo "candump FD frames: $(grep -c '##' /tmp/fd-candump.log) with BRS: $(grep -c '##[13579BDF]' /tmp/fd-candump.log)"
ip link add vcan2 type vcan 2>/dev/null; ip link set vcan2 mtu 72; ip link set vcan2 up
start=$(( $(date +%s) + 3 ))000000000
can-sim run /lab/bench/fd-e2e.ron --role receiver --rx vcan2 --start-at $start --duration 5s --out /tmp/split-rx > /tmp/split-rx.txt 2>&1 &
rxp=$!
can-sim run /lab/bench/fd-e2e.ron --role sender --tx vcan2 --start-at $start --duration 5s --out /tmp/split-tx > /tmp/split-tx.txt 2>&1; echo "sender rc=$?"
wait $rxp; echo "receiver rc=$?"
cat /tmp/split-rx.txt /tmp/split-tx.txt
mkdir -p /lab/bench/out && cp -r /tmp/fd1 /tmp/fd1.txt /tmp/fd-candump.log /tmp/split-rx /tmp/split-tx /tmp/split-rx.txt /tmp/split-tx.txt /lab/bench/out/
