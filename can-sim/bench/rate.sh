# In the lab guest: send rate on vcan0, A/B in one boot. ROUNDS rounds (default 5), each
# running four senders in the order A P S B B S P A, so that a drift of the host's speed
# during a round falls on all four alike:
#   A  cangen -g 0 as can-utils runs it (SCHED_OTHER, any CPU), candump -s 2 receiving;
#   P  the same cangen placed as can-sim's ECU thread (SCHED_FIFO 80 on CPU 1), candump on
#      CPU 0;
#   S  can-sim --role sender (ECU thread SCHED_FIFO 80 on CPU 1), the same candump on CPU 0;
#   B  can-sim run with both roles: its own receiver (CPU 0) timestamps, logs and accounts
#      every frame and loses none.
# The runs and how their rates are taken: rate-lib.sh.
set -x
. /lab/bench/rate-lib.sh
A() { cangen_run $1 A "" ""; }
P() { cangen_run $1 P "chrt -f 80 taskset 2" "taskset 1"; }
S() { cansim_run $1 S "--role sender" candump; }
B() { cansim_run $1 B "--drain 200ms" ""; }
for i in $(seq ${ROUNDS:-5}); do
  A $i; P $i; S $i; B $i; B $i; S $i; P $i; A $i
done
