#!/usr/bin/env python3
"""The same CAN matrix through pyCPA's non-preemptive static-priority analysis.

Reads what `can-sim analyze PROFILE --json` printed (each message's worst-case frame time,
period, jitter and id; the bit time), builds one pyCPA resource with SPNPScheduler (lower id
wins, scheduler granularity one bit time, as Davis et al. 2007), analyses it, and prints
how many worst-case response times agree with can-sim's (to the nanosecond) and the
largest difference. pyCPA measures a response from the frame's queuing (its jittered
activation); can-sim, as Davis et al. 2007 eq. 8, from the message's nominal release, so
its WCRT carries the queuing jitter J on top: compared is can-sim's WCRT - J. pyCPA is not on PyPI: put a checkout of its public source on
PYTHONPATH (can-sim/bench/pycpa.sh does).
Usage: python3 pycpa_can.py ANALYSIS.json [--compare]
"""
import json
import sys

from pycpa import analysis, model, options, schedulers


def main(path, compare):
    options.init_pycpa(implicit=True)
    options.set_opt("max_iterations", 10**6)
    a = json.load(open(path))
    tau = int(a["tau_bit_ns"])
    system = model.System()
    bus = system.bind_resource(
        model.Resource("CAN", schedulers.SPNPScheduler(cycle_time=tau)))
    tasks = []
    for m in a["messages"]:
        c = round(m["frame_time_us"] * 1000)
        t = bus.bind_task(model.Task(m["name"], wcet=c, bcet=c,
                                     scheduling_parameter=m["id"]))
        t.in_event_model = model.PJdEventModel(
            P=round(m["period_us"] * 1000), J=round(m["jitter_us"] * 1000))
        tasks.append((t, m))
    results = analysis.analyze_system(system)
    same, worst = 0, 0
    for t, m in tasks:
        ours = None
        if m["wcrt_us"] is not None:
            ours = round((m["wcrt_us"] - m["jitter_us"]) * 1000)
        theirs = results[t].wcrt
        if ours == theirs:
            same += 1
        elif ours is not None:
            worst = max(worst, abs(ours - theirs))
    if compare:
        print(f"{len(tasks)} messages: {same} WCRTs equal to can-sim's, "
              f"largest difference {worst} ns")


if __name__ == "__main__":
    main(sys.argv[1], "--compare" in sys.argv[2:])
