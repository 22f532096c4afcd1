//! `host-trace.json`: what the host's scheduler did with a VM's vCPU threads while the
//! guest measured (written by `rt-host trace`): every switch in and out of a vCPU thread
//! (and, for the CPUs given, every switch on them), its wakeups and migrations, with
//! times in the host's `CLOCK_REALTIME`, how the trace clock was tied to it, and the
//! offset of the guest's `CLOCK_REALTIME` (so a guest spike can be placed on the host's
//! time line), each with its uncertainty.
//!
//! The events kept are bounded (`max_events`) but chosen over the whole run: the run is
//! cut into slices ([`KeepRule`]), and the events of the slices around the longest
//! vCPU waits (runnable but not running) are kept ([`KeptSlice`]); every slice is
//! summarised per window ([`WindowSummary`]) and the per-vCPU summary ([`VcpuSummary`],
//! built by [`SummaryBuilder`]) covers every event seen. Records written before (no
//! `keep`) kept the first `max_events` events.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::RecordError;
use crate::TimeBase;

/// Record file name.
pub const HOST_TRACE: &str = "host-trace.json";

/// One vCPU thread as found when the recording started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuThread {
    /// vCPU index (the guest's CPU number for QEMU's x86 machines).
    pub vcpu: u32,
    /// Host thread id.
    pub tid: u32,
    /// Thread name (`CPU 1/KVM`).
    pub name: String,
    /// Host CPUs it may run on (its affinity, a kernel CPU list).
    pub cpus_allowed: String,
}

/// A task named in the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Thread id (0: the idle task).
    pub pid: u32,
    /// Its comm as the first event showed it.
    pub comm: String,
}

/// A scheduler event; `t_ns` is the host's `CLOCK_REALTIME`, ns since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostEvent {
    /// `prev` left `cpu` in `prev_state` (`R`/`R+`: preempted, still runnable), `next`
    /// came in.
    Switch {
        /// When.
        t_ns: u64,
        /// Host CPU.
        cpu: u32,
        /// The task that left.
        prev: u32,
        /// Its priority (kernel `prio`: 0-99 real-time, 100-139 normal).
        prev_prio: i32,
        /// Its state.
        prev_state: String,
        /// The task that came in.
        next: u32,
        /// Its priority.
        next_prio: i32,
    },
    /// `pid` made runnable, to run on `target_cpu`.
    Wakeup {
        /// When.
        t_ns: u64,
        /// The CPU that woke it.
        cpu: u32,
        /// The task.
        pid: u32,
        /// Where it will run.
        target_cpu: u32,
    },
    /// `pid` moved from `orig_cpu` to `dest_cpu`.
    Migrate {
        /// When.
        t_ns: u64,
        /// The CPU that moved it.
        cpu: u32,
        /// The task.
        pid: u32,
        /// From.
        orig_cpu: u32,
        /// To.
        dest_cpu: u32,
    },
}

impl HostEvent {
    /// When it happened (host `CLOCK_REALTIME` ns).
    pub fn t_ns(&self) -> u64 {
        match self {
            HostEvent::Switch { t_ns, .. }
            | HostEvent::Wakeup { t_ns, .. }
            | HostEvent::Migrate { t_ns, .. } => *t_ns,
        }
    }
}

/// How trace-clock times became `CLOCK_REALTIME` times: markers written into the trace
/// between two `CLOCK_REALTIME` reads, at the start and at the end; times in between are
/// interpolated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockMap {
    /// The tracefs clock (`mono`: `CLOCK_MONOTONIC`).
    pub trace_clock: String,
    /// `trace_marker` (markers between `CLOCK_REALTIME` reads).
    pub method: String,
    /// Markers used.
    pub points: u32,
    /// `CLOCK_REALTIME - trace clock` at the first marker, ns.
    pub offset_start_ns: i64,
    /// At the last marker, ns (drift shows as a difference).
    pub offset_end_ns: i64,
    /// Trace clock at the first and last marker, ns.
    pub trace_start_ns: u64,
    /// Trace clock at the last marker, ns.
    pub trace_end_ns: u64,
    /// How far a mapped time may be off, ns: half the widest bracket of the two reads
    /// around a marker, plus the 1 us resolution of the trace text.
    pub uncertainty_ns: u64,
}

impl ClockMap {
    /// The map of the markers `(trace_ns, realtime_before_ns, realtime_after_ns)`; None
    /// without any.
    pub fn from_points(trace_clock: &str, points: &[(u64, u64, u64)]) -> Option<ClockMap> {
        let first = points.iter().min_by_key(|p| p.0)?;
        let last = points.iter().max_by_key(|p| p.0)?;
        let off = |p: &(u64, u64, u64)| -> i64 {
            let mid = i128::from(p.1) + (i128::from(p.2) - i128::from(p.1)) / 2;
            i64::try_from(mid - i128::from(p.0)).unwrap_or(i64::MAX)
        };
        let widest = points
            .iter()
            .map(|p| p.2.saturating_sub(p.1))
            .max()
            .unwrap_or(0);
        Some(ClockMap {
            trace_clock: trace_clock.to_string(),
            method: "trace_marker".into(),
            points: u32::try_from(points.len()).unwrap_or(u32::MAX),
            offset_start_ns: off(first),
            offset_end_ns: off(last),
            trace_start_ns: first.0,
            trace_end_ns: last.0,
            uncertainty_ns: widest / 2 + 1000,
        })
    }

    /// `CLOCK_REALTIME` of trace time `t` (linear between the first and last marker,
    /// constant outside).
    pub fn to_realtime(&self, t: u64) -> u64 {
        let span = self.trace_end_ns.saturating_sub(self.trace_start_ns);
        let off = if span == 0 || t <= self.trace_start_ns {
            i128::from(self.offset_start_ns)
        } else if t >= self.trace_end_ns {
            i128::from(self.offset_end_ns)
        } else {
            let k = i128::from(t - self.trace_start_ns);
            i128::from(self.offset_start_ns)
                + (i128::from(self.offset_end_ns) - i128::from(self.offset_start_ns)) * k
                    / i128::from(span)
        };
        u64::try_from((i128::from(t) + off).max(0)).unwrap_or(u64::MAX)
    }
}

/// What the host did with one vCPU thread over the whole recording (every event seen,
/// also those beyond `max_events`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuSummary {
    /// vCPU index.
    pub vcpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Times it left its CPU.
    pub switches_out: u64,
    /// Of those, while still runnable (`R`, `R+`): preempted by another task.
    pub preemptions: u64,
    /// Time spent preempted (runnable, not running), ns.
    pub preempted_ns: u64,
    /// The longest preemption, ns.
    pub preempted_max_ns: u64,
    /// When it began (host `CLOCK_REALTIME` ns; 0: none).
    pub preempted_max_at_ns: u64,
    /// Who took the CPU then (pid).
    pub preempted_max_by: u32,
    /// Wakeup to running, the longest, ns.
    pub wakeup_latency_max_ns: u64,
    /// Migrations to another CPU.
    pub migrations: u64,
    /// The longest time off its CPU (preempted, or halted/sleeping until it ran again),
    /// ns (0 in records written before it was counted).
    #[serde(default)]
    pub off_cpu_max_ns: u64,
    /// When it began (host `CLOCK_REALTIME` ns; 0: none).
    #[serde(default)]
    pub off_cpu_max_at_ns: u64,
}

/// One vCPU's state while summarising: the summary, its last switch out (time, still
/// runnable, who came in) while off its CPU, its wakeup while waiting to run.
type Tracking = (VcpuSummary, Option<(u64, bool, u32)>, Option<u64>);

/// Builds the [`VcpuSummary`]s event by event.
#[derive(Debug, Clone, Default)]
pub struct SummaryBuilder {
    by_tid: BTreeMap<u32, Tracking>,
}

impl SummaryBuilder {
    /// For `vcpus`.
    pub fn new(vcpus: &[VcpuThread]) -> Self {
        let by_tid = vcpus
            .iter()
            .map(|v| {
                let s = VcpuSummary {
                    vcpu: v.vcpu,
                    tid: v.tid,
                    ..VcpuSummary::default()
                };
                (v.tid, (s, None, None))
            })
            .collect();
        SummaryBuilder { by_tid }
    }

    /// Account one event (in time order).
    pub fn add(&mut self, e: &HostEvent) {
        match e {
            HostEvent::Switch {
                t_ns,
                prev,
                prev_state,
                next,
                ..
            } => {
                if let Some((s, out, _)) = self.by_tid.get_mut(prev) {
                    s.switches_out += 1;
                    let runnable = prev_state.starts_with('R');
                    s.preemptions += u64::from(runnable);
                    *out = Some((*t_ns, runnable, *next));
                }
                if let Some((s, out, woke)) = self.by_tid.get_mut(next) {
                    if let Some((t0, runnable, by)) = out.take() {
                        let d = t_ns.saturating_sub(t0);
                        if d > s.off_cpu_max_ns {
                            (s.off_cpu_max_ns, s.off_cpu_max_at_ns) = (d, t0);
                        }
                        if runnable {
                            s.preempted_ns = s.preempted_ns.saturating_add(d);
                            if d > s.preempted_max_ns {
                                (s.preempted_max_ns, s.preempted_max_at_ns) = (d, t0);
                                s.preempted_max_by = by;
                            }
                        }
                    }
                    if let Some(w) = woke.take() {
                        s.wakeup_latency_max_ns =
                            s.wakeup_latency_max_ns.max(t_ns.saturating_sub(w));
                    }
                }
            }
            HostEvent::Wakeup { t_ns, pid, .. } => {
                if let Some((_, _, woke)) = self.by_tid.get_mut(pid) {
                    woke.get_or_insert(*t_ns);
                }
            }
            HostEvent::Migrate { pid, .. } => {
                if let Some((s, _, _)) = self.by_tid.get_mut(pid) {
                    s.migrations += 1;
                }
            }
        }
    }

    /// The tasks the summaries name so far (who preempted each vCPU longest).
    pub fn named(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_tid.values().map(|x| x.0.preempted_max_by)
    }

    /// The summaries, by vCPU index.
    pub fn finish(self) -> Vec<VcpuSummary> {
        let mut v: Vec<VcpuSummary> = self.by_tid.into_values().map(|x| x.0).collect();
        v.sort_by_key(|s| s.vcpu);
        v
    }
}

/// How the events to keep were chosen (records written before this have none: they kept
/// the first `max_events` events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRule {
    /// Slice length, ns: the unit events are kept or dropped in.
    pub slice_ns: u64,
    /// A slice's score is the longest vCPU wait (runnable, not running) within this of it,
    /// ns: the slices around a long wait are kept together.
    pub pad_ns: u64,
    /// At most this many events of one slice are kept (the first ones).
    pub slice_cap: u64,
    /// Length of the whole-run summary windows, ns.
    pub window_ns: u64,
    /// Slices that had events.
    pub slices_seen: u64,
    /// Events not kept: in slices dropped for lower scores.
    pub dropped_slices_events: u64,
    /// Events not kept: beyond the cap of a kept slice.
    pub dropped_over_cap: u64,
}

/// A slice whose events were kept (host `CLOCK_REALTIME` ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptSlice {
    /// Start.
    pub start_ns: u64,
    /// End (the next slice's start).
    pub end_ns: u64,
    /// Its score: the longest vCPU wait near it, ns.
    pub score_ns: u64,
    /// Events it had.
    pub seen: u64,
    /// Of those, not kept (beyond `slice_cap`): its picture has holes when not 0.
    pub dropped: u64,
    /// No event happened from here to `start_ns` (the slices before it were empty).
    pub quiet_from_ns: u64,
    /// Nor from `end_ns` to here.
    pub quiet_until_ns: u64,
}

/// One vCPU thread in a summary window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowVcpu {
    /// Thread id.
    pub tid: u32,
    /// Times it left its CPU.
    pub switches_out: u64,
    /// The longest time off its CPU of the spans ending in the window, ns.
    pub off_max_ns: u64,
    /// The longest wait (runnable, not running) ending in the window, ns.
    pub wait_max_ns: u64,
    /// Time runnable but not running, of the waits ending in the window, ns.
    pub wait_ns: u64,
}

/// The whole run, window by window, over every event (kept or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSummary {
    /// Start (host `CLOCK_REALTIME` ns).
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// Events seen in it.
    pub events: u64,
    /// Of those, kept.
    pub kept: u64,
    /// Per vCPU thread.
    pub vcpus: Vec<WindowVcpu>,
}

/// Where the trace's own threads ran: on housekeeping CPUs, away from the measured ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderPlacement {
    /// The CPUs its threads (the reader of the trace, the main thread) were pinned to.
    pub cpus: String,
    /// The CPUs kept free of it: those recorded whole and the vCPU threads' CPUs.
    pub measured_cpus: String,
    /// Its thread ids.
    pub tids: Vec<u32>,
    /// Empty when no vCPU thread may run on its CPUs; else which do, and why.
    pub note: String,
    /// Switches of its threads seen on CPUs recorded whole (0: it never ran there).
    pub switches_on_recorded_cpus: u64,
}

/// Whether a host time span has its events in a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Coverage<'a> {
    /// Every event of the span was kept (`capped`: a slice of it was cut at its cap).
    Kept {
        /// A slice was cut.
        capped: bool,
    },
    /// The span is inside the recording but its events were not kept; the summary
    /// window it ends in, when the record has windows.
    NotKept {
        /// The whole-run summary of that moment.
        window: Option<&'a WindowSummary>,
    },
    /// Outside the recording.
    Outside,
}

/// `host-trace.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTraceRecord {
    /// The VM's QEMU pid.
    pub vm_pid: u32,
    /// How the VM was found (`QEMU -name lab`, `--vm-pid`).
    pub vm_found_by: String,
    /// Its vCPU threads.
    pub vcpus: Vec<VcpuThread>,
    /// Host CPUs on which every switch was recorded, whoever ran (a CPU list); None: only
    /// the switches of the vCPU threads (what ran between a vCPU's switch out and back in
    /// beyond the first and last task is then not known).
    pub cpus: Option<String>,
    /// Where it was recorded (the tracing instance).
    pub place: String,
    /// Per-CPU buffer, KiB.
    pub buffer_kb: u64,
    /// Trace clock to host `CLOCK_REALTIME`.
    pub clock: ClockMap,
    /// Guest `CLOCK_REALTIME` minus host `CLOCK_REALTIME` (`method`: `file_exchange`,
    /// `synced`, `unknown`).
    pub guest_clock: TimeBase,
    /// Host `CLOCK_REALTIME` at the start and end of the recording, ns.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
    /// Every task the events name.
    pub tasks: Vec<Task>,
    /// The events kept, in time order (those of `slices`, each slice preceded by the last
    /// switch of each vCPU thread and on its CPU before it, so its state is known).
    pub events: Vec<HostEvent>,
    /// Events recorded in all (also those not kept).
    pub events_seen: u64,
    /// The bound on `events`.
    pub max_events: u64,
    /// Events the kernel lost (buffer overruns, drops, `[LOST N EVENTS]`): the picture has
    /// holes when this is not 0.
    pub lost_events: u64,
    /// Per vCPU, over every event seen.
    pub summary: Vec<VcpuSummary>,
    /// True when interrupted.
    pub partial: bool,
    /// How the kept events were chosen; None: the first `max_events` (older records).
    #[serde(default)]
    pub keep: Option<KeepRule>,
    /// The slices whose events were kept, in time order.
    #[serde(default)]
    pub slices: Vec<KeptSlice>,
    /// The whole run, window by window.
    #[serde(default)]
    pub windows: Vec<WindowSummary>,
    /// Where the trace's own threads ran.
    #[serde(default)]
    pub reader: Option<ReaderPlacement>,
}

impl HostTraceRecord {
    /// True when events were seen but not kept.
    pub fn truncated(&self) -> bool {
        self.events_seen > self.events.len() as u64
    }

    /// Events seen but not kept.
    pub fn events_dropped(&self) -> u64 {
        match &self.keep {
            Some(k) => k.dropped_slices_events.saturating_add(k.dropped_over_cap),
            None => self.events_seen.saturating_sub(self.events.len() as u64),
        }
    }

    /// For an older record (the first `max_events` kept): the host time the last kept
    /// event has (the end when nothing was cut).
    pub fn covered_until_ns(&self) -> u64 {
        if self.keep.is_none() && self.truncated() {
            self.events.last().map_or(self.start_ns, HostEvent::t_ns)
        } else {
            self.end_ns
        }
    }

    /// Whether the events of host span `[lo, hi]` were kept.
    pub fn coverage(&self, lo: u64, hi: u64) -> Coverage<'_> {
        if lo < self.start_ns || hi > self.end_ns {
            return Coverage::Outside;
        }
        if self.keep.is_none() {
            return if hi <= self.covered_until_ns() {
                Coverage::Kept { capped: false }
            } else {
                Coverage::NotKept { window: None }
            };
        }
        // The kept slices must cover [lo, hi] without a gap.
        let (mut at, mut capped, mut any) = (lo, false, false);
        let reach = |s: &KeptSlice| {
            (
                s.quiet_from_ns.min(s.start_ns),
                s.quiet_until_ns.max(s.end_ns),
            )
        };
        for sl in self
            .slices
            .iter()
            .filter(|s| reach(s).1 > lo && reach(s).0 <= hi)
        {
            let (from, until) = reach(sl);
            if from > at {
                break;
            }
            capped |= sl.dropped > 0;
            any = true;
            at = at.max(until);
        }
        if any && at >= hi {
            return Coverage::Kept { capped };
        }
        let window = self
            .windows
            .iter()
            .find(|w| w.start_ns <= hi && hi < w.end_ns)
            .or_else(|| self.windows.last().filter(|w| w.end_ns <= hi));
        Coverage::NotKept { window }
    }

    /// The comm of `pid` (`pid N` when the events do not name it).
    pub fn comm(&self, pid: u32) -> String {
        match self.tasks.iter().find(|t| t.pid == pid) {
            Some(t) => t.comm.clone(),
            None if pid == 0 => "idle".into(),
            None => format!("pid {pid}"),
        }
    }

    /// Check the record read from `path`: events in time order and within the bound,
    /// start before end, vCPUs listed once.
    pub fn check(&self, path: &Path) -> Result<(), RecordError> {
        let bad = |m: String| Err(RecordError::inconsistent(path, m));
        if self.end_ns < self.start_ns {
            return bad(format!(
                "ends ({}) before it starts ({})",
                self.end_ns, self.start_ns
            ));
        }
        if self.events.len() as u64 > self.max_events || self.events.len() as u64 > self.events_seen
        {
            return bad(format!(
                "{} events kept, but the bound is {} and {} were seen",
                self.events.len(),
                self.max_events,
                self.events_seen
            ));
        }
        if let Some(w) = self
            .events
            .windows(2)
            .position(|w| w[1].t_ns() < w[0].t_ns())
        {
            return bad(format!("event {} is earlier than the one before it", w + 1));
        }
        if let Some(w) = self
            .slices
            .windows(2)
            .position(|w| w[1].start_ns < w[0].end_ns || w[0].end_ns < w[0].start_ns)
        {
            return bad(format!("kept slice {} overlaps the one after it", w));
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.vcpus {
            if !seen.insert(v.vcpu) {
                return bad(format!("vCPU {} is listed twice", v.vcpu));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_map_interpolates_between_markers() {
        // Realtime = trace + 1000 s at the start, + 1000 s + 2 us at the end (drift).
        let m = ClockMap::from_points(
            "mono",
            &[
                (10_000, 1_000_000_010_000 - 300, 1_000_000_010_000 + 300),
                (1_010_000, 1_000_001_012_000 - 100, 1_000_001_012_000 + 100),
            ],
        )
        .unwrap();
        assert_eq!(m.offset_start_ns, 1_000_000_000_000);
        assert_eq!(m.offset_end_ns, 1_000_000_002_000);
        assert_eq!(m.uncertainty_ns, 300 + 1000);
        assert_eq!(m.to_realtime(10_000), 1_000_000_010_000);
        assert_eq!(m.to_realtime(510_000), 1_000_000_510_000 + 1000);
        assert_eq!(m.to_realtime(2_000_000), 1_000_002_002_000);
        assert_eq!(ClockMap::from_points("mono", &[]), None);
    }

    fn sw(t: u64, prev: u32, state: &str, next: u32) -> HostEvent {
        HostEvent::Switch {
            t_ns: t,
            cpu: 1,
            prev,
            prev_prio: 120,
            prev_state: state.into(),
            next,
            next_prio: 120,
        }
    }

    #[test]
    fn the_summary_counts_preemptions_and_wakeup_latency() {
        let v = [VcpuThread {
            vcpu: 1,
            tid: 50,
            name: "CPU 1/KVM".into(),
            cpus_allowed: "1".into(),
        }];
        let mut b = SummaryBuilder::new(&v);
        for e in [
            sw(1_000, 50, "R+", 77), // preempted by 77 ...
            sw(31_000, 77, "S", 50), // ... for 30 us
            sw(40_000, 50, "S", 0),  // halts
            HostEvent::Wakeup {
                t_ns: 90_000,
                cpu: 0,
                pid: 50,
                target_cpu: 1,
            },
            sw(95_000, 0, "R", 50), // 5 us after its wakeup
            HostEvent::Migrate {
                t_ns: 99_000,
                cpu: 0,
                pid: 50,
                orig_cpu: 1,
                dest_cpu: 2,
            },
            sw(100_000, 50, "R", 78),
            sw(110_000, 78, "S", 50),
        ] {
            b.add(&e);
        }
        let s = &b.finish()[0];
        assert_eq!((s.switches_out, s.preemptions), (3, 2));
        assert_eq!((s.preempted_ns, s.preempted_max_ns), (40_000, 30_000));
        assert_eq!((s.preempted_max_at_ns, s.preempted_max_by), (1_000, 77));
        assert_eq!(s.wakeup_latency_max_ns, 5_000);
        assert_eq!(s.migrations, 1);
        assert_eq!(
            (s.off_cpu_max_ns, s.off_cpu_max_at_ns),
            (55_000, 40_000),
            "the halt, woken late"
        );
    }

    #[test]
    fn events_serialise_compactly_and_the_check_finds_disorder() {
        let e = sw(5, 1, "R", 2);
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"e":"switch","t_ns":5,"cpu":1,"prev":1,"prev_prio":120,"prev_state":"R","next":2,"next_prio":120}"#
        );
        assert_eq!(serde_json::from_str::<HostEvent>(&j).unwrap(), e);
        let mut r = sample();
        r.check(Path::new("/r/host-trace.json")).unwrap();
        r.events.swap(0, 1);
        let err = r.check(Path::new("/r/host-trace.json")).unwrap_err();
        assert!(err.to_string().contains("event 1 is earlier"), "{err}");
        let mut r = sample();
        r.max_events = 1;
        let err = r.check(Path::new("/r/host-trace.json")).unwrap_err();
        assert!(err.to_string().contains("the bound is 1"), "{err}");
        let r = sample();
        assert_eq!(
            (r.comm(77), r.comm(0), r.comm(9)),
            ("stress".into(), "idle".into(), "pid 9".into())
        );
    }

    #[test]
    fn coverage_needs_kept_slices_without_a_gap_and_older_records_still_read() {
        let mut r = sample();
        r.end_ns = 100;
        r.keep = Some(KeepRule {
            slice_ns: 10,
            pad_ns: 20,
            slice_cap: 5,
            window_ns: 50,
            slices_seen: 10,
            dropped_slices_events: 7,
            dropped_over_cap: 1,
        });
        let sl = |a: u64, dropped: u64| KeptSlice {
            start_ns: a,
            end_ns: a + 10,
            score_ns: 3,
            seen: 2,
            dropped,
            quiet_from_ns: a,
            quiet_until_ns: a + 10,
        };
        r.slices = vec![sl(0, 0), sl(10, 1), sl(30, 0)];
        r.windows = vec![WindowSummary {
            start_ns: 0,
            end_ns: 50,
            events: 12,
            kept: 4,
            vcpus: vec![],
        }];
        assert_eq!(r.coverage(2, 8), Coverage::Kept { capped: false });
        assert_eq!(r.coverage(5, 15), Coverage::Kept { capped: true });
        assert_eq!(
            r.coverage(15, 32),
            Coverage::NotKept {
                window: Some(&r.windows[0])
            },
            "20..30 was dropped"
        );
        assert_eq!(r.coverage(90, 120), Coverage::Outside);
        // 20..30 had no event at all: no gap.
        r.slices[2].quiet_from_ns = 20;
        assert_eq!(r.coverage(15, 32), Coverage::Kept { capped: true });
        r.slices[2].quiet_from_ns = 30;
        assert_eq!(r.events_dropped(), 8);
        r.check(Path::new("/r/host-trace.json")).unwrap();
        r.slices.swap(0, 1);
        let e = r.check(Path::new("/r/host-trace.json")).unwrap_err();
        assert!(e.to_string().contains("kept slice 0 overlaps"), "{e}");
        // A record written before slices: the first events kept, up to the last of them.
        let mut old = serde_json::to_value(sample()).unwrap();
        for k in ["keep", "slices", "windows", "reader"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let mut old: HostTraceRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.coverage(1, 2), Coverage::Kept { capped: false });
        old.events_seen = 5;
        assert_eq!(old.coverage(1, 3), Coverage::NotKept { window: None });
        assert_eq!(old.events_dropped(), 3);
    }

    fn sample() -> HostTraceRecord {
        HostTraceRecord {
            vm_pid: 40,
            vm_found_by: "--vm-pid".into(),
            vcpus: vec![],
            cpus: None,
            place: "instances/rtvirt-trace-1".into(),
            buffer_kb: 4096,
            clock: ClockMap::from_points("mono", &[(0, 100, 200)]).unwrap(),
            guest_clock: TimeBase::default(),
            start_ns: 0,
            end_ns: 10,
            tasks: vec![Task {
                pid: 77,
                comm: "stress".into(),
            }],
            events: vec![sw(1, 50, "R", 77), sw(2, 77, "S", 50)],
            events_seen: 2,
            max_events: 10,
            lost_events: 0,
            summary: vec![],
            partial: false,
            keep: None,
            slices: vec![],
            windows: vec![],
            reader: None,
        }
    }
}
