# In the lab guest: send rate of two can-sim builds against each other and cangen -g 0, one
# boot, ROUNDS rounds (default 4) of A, old, new, new, old, A. Put the two static builds
# (target-lab-static/x86_64-unknown-linux-gnu/release/can-sim of each commit) into the
# boot's share/bench as can-sim-old and can-sim-new, with flood.ron and rate-lib.sh beside them
# (PROFILE=/lab/bench/flood4.ron: the four-ECU flood).
. /lab/bench/rate-lib.sh
A() { cangen_run $1 cangen "" ""; }
B() { CAN_SIM=/lab/bench/can-sim-$2 cansim_run $1 $2 "--drain 200ms" ""; }
for i in $(seq ${ROUNDS:-4}); do A $i; B $i old; B $i new; B $i new; B $i old; A $i; done
