#!/usr/bin/env python3
"""Where the lab guest's stalls come from: read a host sched trace (tracefs text of
sched_switch and sched_wakeup, as `lab-latency.sh` with TRACE=1 writes it) and name, for
the QEMU threads, the longest times they were runnable but not running (woken or
preempted, until switched in) and the longest times the main loop was off its CPU, each
with what ran on that CPU meanwhile.

Usage: stalls.py TRACE THREADS [--top N] [--min-ms MS]
  TRACE    trace-LABEL.txt (tracefs `trace` text)
  THREADS  threads-LABEL.txt (`qemu_pid PID` and `thread TID NAME ...` lines)
"""

import argparse
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
SWITCH = re.compile(
    r"prev_comm=(.*) prev_pid=(\d+) prev_prio=(\d+) prev_state=(\S+) ==> "
    r"next_comm=(.*) next_pid=(\d+) next_prio=(\d+)"
)
WAKEUP = re.compile(r"comm=(.*) pid=(\d+) prio=(\d+)(?: success=\d+)? target_cpu=(\d+)")


def parse(path):
    """Yield (time s, cpu, event, fields) from a tracefs text file."""
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            _, _, cpu, ts, ev, rest = m.groups()
            if ev == "sched_switch":
                s = SWITCH.match(rest)
                if s:
                    yield float(ts), int(cpu), ev, s.groups()
            elif ev == "sched_wakeup":
                w = WAKEUP.match(rest)
                if w:
                    yield float(ts), int(cpu), ev, w.groups()


def read_threads(path):
    names, pid = {}, None
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[:1] == ["qemu_pid"]:
                pid = int(parts[1])
            elif parts[:1] == ["thread"]:
                tid = int(parts[1])
                rest = line.split(None, 2)[2]
                names[tid] = rest.split(" policy=")[0].strip()
    return pid, names


class Timeline:
    """What ran on each CPU, as (start, end, tid, comm) segments."""

    def __init__(self):
        self.segs = collections.defaultdict(list)
        self.cur = {}

    def switch(self, t, cpu, next_tid, next_comm):
        if cpu in self.cur:
            start, tid, comm = self.cur[cpu]
            self.segs[cpu].append((start, t, tid, comm))
        self.cur[cpu] = (t, next_tid, next_comm)

    def ran(self, cpu, a, b):
        """Time per (comm, tid) on `cpu` within [a, b]."""
        out = collections.Counter()
        for s, e, tid, comm in self.segs[cpu]:
            if e <= a or s >= b:
                continue
            out[(comm, tid)] += min(e, b) - max(s, a)
        return out


def analyse(trace, qemu_tids):
    tl = Timeline()
    runnable = {}  # tid -> since
    asleep = {}  # tid -> (since, cpu)
    waits, sleeps = [], []
    for t, cpu, ev, f in parse(trace):
        if ev == "sched_wakeup":
            tid = int(f[1])
            if tid in qemu_tids and tid not in runnable:
                runnable[tid] = t
            if tid in asleep:
                since, c = asleep.pop(tid)
                sleeps.append((t - since, tid, c, since, t))
            continue
        pcomm, ppid, _, pstate, ncomm, npid, _ = f
        ppid, npid = int(ppid), int(npid)
        tl.switch(t, cpu, npid, ncomm)
        if ppid in qemu_tids:
            if pstate.startswith("R"):
                runnable[ppid] = t
            else:
                asleep[ppid] = (t, cpu)
        if npid in qemu_tids and npid in runnable:
            since = runnable.pop(npid)
            waits.append((t - since, npid, cpu, since, t))
    return tl, waits, sleeps


def show(title, rows, tl, names, top, min_s):
    print(f"## {title}")
    rows = sorted(rows, reverse=True)
    shown = 0
    for d, tid, cpu, a, b in rows:
        if d < min_s or shown >= top:
            break
        shown += 1
        ran = tl.ran(cpu, a, b)
        who = ", ".join(
            f"{c}/{p} {v * 1000:.1f} ms" for (c, p), v in ran.most_common(4)
        )
        print(
            f"{d * 1000:8.1f} ms  {names.get(tid, tid)!r} (tid {tid}) CPU {cpu} "
            f"{a:.6f}..{b:.6f}: {who or '(idle)'}"
        )
    if shown == 0:
        print(f"(none over {min_s * 1000:.0f} ms)")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("threads")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--min-ms", type=float, default=5.0)
    a = ap.parse_args()
    pid, names = read_threads(a.threads)
    if pid is None:
        sys.exit(f"{a.threads}: no qemu_pid line")
    tl, waits, sleeps = analyse(a.trace, set(names))
    total = collections.Counter()
    for cpu, segs in tl.segs.items():
        for s, e, tid, comm in segs:
            total[(cpu, comm if tid not in names else names[tid])] += e - s
    print(f"# QEMU pid {pid}: {len(names)} threads; {len(waits)} waits, {len(sleeps)} sleeps")
    print()
    show("runnable but not running (woken or preempted, until switched in)", waits, tl, names, a.top, a.min_ms / 1000)
    main_loop = [s for s in sleeps if s[1] == pid]
    show("main loop off CPU (sleeping until woken)", main_loop, tl, names, a.top, a.min_ms / 1000)
    print("## CPU time per CPU (top 8 each)")
    for cpu in sorted({c for c, _ in total}):
        row = sorted(((v, n) for (c, n), v in total.items() if c == cpu), reverse=True)[:8]
        print(f"CPU {cpu}: " + ", ".join(f"{n} {v:.2f} s" for v, n in row))


if __name__ == "__main__":
    main()
