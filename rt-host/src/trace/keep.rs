//! A bounded picture of the whole recording: events stream through a [`Collector`], which
//! counts and summarises every one ([`record::hosttrace::SummaryBuilder`], per window
//! [`WindowSummary`]) and keeps the full events only of the slices (10 ms) around the
//! longest vCPU waits (runnable but not running: preempted, or woken and not yet in) and,
//! for the vCPUs on the CPUs under test (recorded whole), around the end of their longest
//! spans off CPU (a halt woken late: under TCG the guest's worst spikes), up to
//! `max_events`. A slice is scored once `pad` has passed after it, by the longest
//! wait within `pad` of it; the kept slices form a min-heap by score, the lowest evicted
//! when the budget is exceeded. Memory stays below [`KeepConfig::held_bound`] events,
//! whatever the length of the run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use record::hosttrace::{
    ClockMap, KeepRule, KeptSlice, SummaryBuilder, Task, VcpuSummary, VcpuThread, WindowSummary,
    WindowVcpu,
};
use record::HostEvent;
use rt_sys::tracefs::sched::{SchedEvent, SchedLine};
use rt_sys::CpuSet;

/// Slice length: the unit kept or dropped.
pub const SLICE_NS: u64 = 10_000_000;
/// Events kept of one slice at most (500 000 switches a second on the recorded CPUs).
pub const SLICE_CAP: u64 = 5_000;
/// Summary windows of a run at most (their length grows with the duration).
pub const MAX_WINDOWS: u64 = 4096;
/// The scoring pad: at least this, more when the guest clock is less certain.
pub const MIN_PAD_NS: u64 = 20_000_000;
/// And at most this.
pub const MAX_PAD_NS: u64 = 200_000_000;

/// How to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepConfig {
    /// Events kept at most.
    pub max_events: u64,
    /// Slice length, ns.
    pub slice_ns: u64,
    /// Scoring pad, ns.
    pub pad_ns: u64,
    /// Events kept of one slice at most.
    pub slice_cap: u64,
    /// Summary window length, ns.
    pub window_ns: u64,
}

impl KeepConfig {
    /// For a run of `duration` keeping `max_events`, the guest's clock known within
    /// `guest_uncertainty_ns`: windows of whole seconds, at most [`MAX_WINDOWS`] of them; a
    /// pad twice the guest clock's uncertainty (a spike is placed that far off).
    pub fn for_run(duration: Duration, max_events: u64, guest_uncertainty_ns: u64) -> Self {
        let secs = duration.as_secs().div_ceil(MAX_WINDOWS).max(1);
        KeepConfig {
            max_events,
            slice_ns: SLICE_NS,
            pad_ns: guest_uncertainty_ns
                .saturating_mul(2)
                .clamp(MIN_PAD_NS, MAX_PAD_NS),
            slice_cap: SLICE_CAP.min(max_events).max(1),
            window_ns: secs * 1_000_000_000,
        }
    }

    /// Slices held until scored, besides the current one.
    fn pending_slices(&self) -> u64 {
        self.pad_ns.div_ceil(self.slice_ns) + 1
    }

    /// The most events a [`Collector`] for `vcpus` vCPU threads holds at once: the kept
    /// ones, the slices waiting for their score (each with its lead-in) and one more slice
    /// while it is weighed against the kept.
    pub fn held_bound(&self, vcpus: usize) -> u64 {
        let slice = self.slice_cap + 3 * vcpus as u64;
        self.max_events + (self.pending_slices() + 2) * slice
    }
}

/// A slice of the trace clock.
#[derive(Debug)]
struct Slice {
    idx: u64,
    /// Its lead-in (the vCPU threads' last switches before it), then its own events.
    events: Vec<HostEvent>,
    seen: u64,
    dropped: u64,
    score: u64,
    /// The first of the empty slices before it.
    quiet_from: u64,
    /// The next slice with events (None: none came, up to the end).
    quiet_until: Option<u64>,
}

/// What is known of one vCPU thread while streaming.
#[derive(Debug, Default)]
struct VcpuState {
    /// On the CPUs under test: its spans off CPU score too.
    measured: bool,
    /// Off its CPU since, runnable when it left.
    off: Option<(u64, bool)>,
    woke: Option<u64>,
    cpu: Option<u32>,
    last_switch: Option<HostEvent>,
    last_wakeup: Option<HostEvent>,
}

impl VcpuState {
    /// Since when it waits (runnable, not running), if it does.
    fn waiting_since(&self) -> Option<u64> {
        match self.off {
            Some((t0, true)) => Some(t0),
            Some((_, false)) => self.woke,
            None => None,
        }
    }
}

/// What the collector hands back.
#[derive(Debug)]
pub struct Collected {
    /// The kept events, host `CLOCK_REALTIME`, in time order.
    pub events: Vec<HostEvent>,
    /// Every event seen.
    pub seen: u64,
    /// The tasks the kept events and the summaries name.
    pub tasks: Vec<Task>,
    /// Per vCPU, over every event.
    pub summary: Vec<VcpuSummary>,
    /// How the events were kept.
    pub keep: KeepRule,
    /// The kept slices.
    pub slices: Vec<KeptSlice>,
    /// The whole run, window by window.
    pub windows: Vec<WindowSummary>,
    /// Switches of the trace's own threads on the CPUs recorded whole.
    pub own_on_recorded: u64,
}

/// Events as the recorder hands them (times on the trace clock).
#[derive(Debug)]
pub struct Collector {
    cfg: KeepConfig,
    order: Vec<u32>,
    vcpus: BTreeMap<u32, VcpuState>,
    cpu_last: BTreeMap<u32, HostEvent>,
    own: Vec<u32>,
    recorded: Option<CpuSet>,
    own_on_recorded: u64,
    pending: VecDeque<Slice>,
    kept: BTreeMap<u64, Slice>,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    /// Waits that score slices still to come: (until, score), until rising, score falling.
    forward: VecDeque<(u64, u64)>,
    prune_at: usize,
    last_slice: Option<u64>,
    kept_events: u64,
    dropped_slices_events: u64,
    slices_seen: u64,
    windows: BTreeMap<u64, (u64, Vec<WindowVcpu>)>,
    last_t: u64,
    seen: u64,
    tasks: BTreeMap<u32, String>,
    summary: SummaryBuilder,
}

impl Collector {
    /// For `vcpus`; `own` are the trace's thread ids, `recorded` the CPUs recorded whole.
    pub fn new(
        vcpus: &[VcpuThread],
        cfg: KeepConfig,
        own: &[u32],
        recorded: Option<CpuSet>,
    ) -> Self {
        Collector {
            cfg,
            order: vcpus.iter().map(|v| v.tid).collect(),
            vcpus: vcpus
                .iter()
                .map(|v| {
                    let allowed = super::allowed(v);
                    let measured = recorded
                        .as_ref()
                        .is_some_and(|r| !allowed.is_empty() && allowed.is_subset(r));
                    let st = VcpuState {
                        measured,
                        ..VcpuState::default()
                    };
                    (v.tid, st)
                })
                .collect(),
            cpu_last: BTreeMap::new(),
            own: own.to_vec(),
            recorded,
            own_on_recorded: 0,
            pending: VecDeque::new(),
            kept: BTreeMap::new(),
            heap: BinaryHeap::new(),
            forward: VecDeque::new(),
            prune_at: 4096,
            last_slice: None,
            kept_events: 0,
            dropped_slices_events: 0,
            slices_seen: 0,
            windows: BTreeMap::new(),
            last_t: 0,
            seen: 0,
            tasks: BTreeMap::new(),
            summary: SummaryBuilder::new(vcpus),
        }
    }

    /// Events held in memory now (kept and waiting for their score).
    pub fn held(&self) -> u64 {
        self.kept_events
            + self
                .pending
                .iter()
                .map(|s| s.events.len() as u64)
                .sum::<u64>()
    }

    /// Tasks named now.
    pub fn named(&self) -> usize {
        self.tasks.len()
    }

    /// Take one line of the trace.
    pub fn add(&mut self, l: SchedLine) {
        let (t_ns, cpu) = (l.ts_ns, l.cpu);
        let e = match l.event {
            SchedEvent::Switch(s) => {
                self.name(s.prev_pid, &s.prev_comm);
                self.name(s.next_pid, &s.next_comm);
                HostEvent::Switch {
                    t_ns,
                    cpu,
                    prev: s.prev_pid,
                    prev_prio: s.prev_prio,
                    prev_state: s.prev_state,
                    next: s.next_pid,
                    next_prio: s.next_prio,
                }
            }
            SchedEvent::Wakeup {
                comm,
                pid,
                target_cpu,
                ..
            } => {
                self.name(pid, &comm);
                HostEvent::Wakeup {
                    t_ns,
                    cpu,
                    pid,
                    target_cpu,
                }
            }
            SchedEvent::Migrate {
                comm,
                pid,
                orig_cpu,
                dest_cpu,
                ..
            } => {
                self.name(pid, &comm);
                HostEvent::Migrate {
                    t_ns,
                    cpu,
                    pid,
                    orig_cpu,
                    dest_cpu,
                }
            }
            SchedEvent::Marker(_) => return,
        };
        self.take(e);
    }

    fn name(&mut self, pid: u32, comm: &str) {
        if pid != 0 && !self.tasks.contains_key(&pid) {
            self.tasks.insert(pid, comm.to_string());
            if self.tasks.len() > self.prune_at {
                self.prune_tasks();
            }
        }
    }

    /// Take one event (trace clock time; nearly in time order, as `trace_pipe` merges the
    /// CPUs' buffers).
    pub fn take(&mut self, e: HostEvent) {
        let t = e.t_ns();
        self.seen += 1;
        self.last_t = self.last_t.max(t);
        self.summary.add(&e);
        if let HostEvent::Switch {
            cpu, prev, next, ..
        } = &e
        {
            let on_recorded = self.recorded.as_ref().is_some_and(|c| c.contains(*cpu));
            if on_recorded && (self.own.contains(prev) || self.own.contains(next)) {
                self.own_on_recorded += 1;
            }
        }
        self.window_event(t);
        let idx = t / self.cfg.slice_ns;
        self.advance(idx);
        // Scores only: the event then goes into its slice without a copy.
        self.track(&e);
        let cap = self.cfg.slice_cap;
        let s = match self.pending.iter().rposition(|s| s.idx <= idx) {
            Some(i) => &mut self.pending[i],
            None => self.pending.front_mut().expect("advance made a slice"),
        };
        s.seen += 1;
        if s.seen <= cap {
            s.events.push(e);
        } else {
            s.dropped += 1;
        }
    }

    /// Count `t` in its window (beyond the expected ones: in the last).
    fn window_event(&mut self, t: u64) {
        let mut w = t / self.cfg.window_ns;
        if self.windows.len() as u64 > MAX_WINDOWS + 8 {
            w = w.min(*self.windows.keys().next_back().expect("windows"));
        }
        let order = &self.order;
        let entry = self.windows.entry(w).or_insert_with(|| {
            let v = order
                .iter()
                .map(|&tid| WindowVcpu {
                    tid,
                    ..WindowVcpu::default()
                })
                .collect();
            (0, v)
        });
        entry.0 += 1;
    }

    fn window_vcpu(&mut self, t: u64, tid: u32) -> Option<&mut WindowVcpu> {
        let w = t / self.cfg.window_ns;
        let (_, v) = self.windows.range_mut(..=w).next_back().map(|(_, x)| x)?;
        v.iter_mut().find(|x| x.tid == tid)
    }

    /// The vCPU threads' states; a wait that ends raises the score of the slices near it.
    fn track(&mut self, e: &HostEvent) {
        match e {
            HostEvent::Switch {
                t_ns,
                cpu,
                prev,
                prev_state,
                next,
                ..
            } => {
                if let Some(st) = self.vcpus.get_mut(prev) {
                    st.off = Some((*t_ns, prev_state.starts_with('R')));
                    (st.woke, st.last_wakeup) = (None, None);
                    st.cpu = Some(*cpu);
                    st.last_switch = Some(e.clone());
                    if let Some(w) = self.window_vcpu(*t_ns, *prev) {
                        w.switches_out += 1;
                    }
                }
                if let Some(st) = self.vcpus.get_mut(next) {
                    let waited = st.waiting_since();
                    let off = st.off.take().map(|(t0, _)| t0);
                    let measured = st.measured;
                    (st.woke, st.last_wakeup) = (None, None);
                    st.cpu = Some(*cpu);
                    st.last_switch = Some(e.clone());
                    let wait = waited.map(|w0| (w0, t_ns.saturating_sub(w0)));
                    if let Some(w) = self.window_vcpu(*t_ns, *next) {
                        if let Some(t0) = off {
                            w.off_max_ns = w.off_max_ns.max(t_ns.saturating_sub(t0));
                        }
                        if let Some((_, d)) = wait {
                            w.wait_max_ns = w.wait_max_ns.max(d);
                            w.wait_ns = w.wait_ns.saturating_add(d);
                        }
                    }
                    if let Some((w0, d)) = wait {
                        self.raise(w0, *t_ns, d);
                    }
                    if let Some(t0) = off.filter(|_| measured) {
                        // Its end, where a guest spike from it lies.
                        let from = t0.max(t_ns.saturating_sub(self.cfg.pad_ns));
                        self.raise(from, *t_ns, t_ns.saturating_sub(t0));
                    }
                }
                if self.vcpus.values().any(|v| v.cpu == Some(*cpu)) {
                    self.cpu_last.insert(*cpu, e.clone());
                }
            }
            HostEvent::Wakeup { t_ns, pid, .. } => {
                if let Some(st) = self.vcpus.get_mut(pid).filter(|s| s.off.is_some()) {
                    if st.woke.is_none() {
                        st.woke = Some(*t_ns);
                        st.last_wakeup = Some(e.clone());
                    }
                }
            }
            HostEvent::Migrate { .. } => {}
        }
    }

    /// A wait `[from, to]` of `d` ns: the pending slices within the pad of it score `d`.
    fn raise(&mut self, from: u64, to: u64, d: u64) {
        let (pad, len) = (self.cfg.pad_ns, self.cfg.slice_ns);
        for s in &mut self.pending {
            let (a, b) = (s.idx * len, (s.idx + 1) * len);
            if a <= to.saturating_add(pad) && b.saturating_add(pad) >= from {
                s.score = s.score.max(d);
            }
        }
        let until = to.saturating_add(pad);
        while self
            .forward
            .back()
            .is_some_and(|f| f.1 <= d && f.0 <= until)
        {
            self.forward.pop_back();
        }
        self.forward.push_back((until, d));
    }

    /// Open slice `idx` (with its lead-in) when it is new, and score and weigh the pending
    /// slices whose pad has passed.
    fn advance(&mut self, idx: u64) {
        if self.pending.back().is_some_and(|s| s.idx >= idx) {
            return;
        }
        let horizon = self.cfg.pending_slices();
        while self.pending.front().is_some_and(|s| s.idx + horizon < idx) {
            let mut s = self.pending.pop_front().expect("front");
            s.quiet_until = Some(self.pending.front().map_or(idx, |n| n.idx));
            self.settle(s);
        }
        let quiet_from = self.last_slice.map_or(0, |l| l + 1);
        self.last_slice = Some(idx);
        let start = idx * self.cfg.slice_ns;
        while self.forward.front().is_some_and(|f| f.0 < start) {
            self.forward.pop_front();
        }
        let lead = self.lead();
        self.pending.push_back(Slice {
            idx,
            events: lead,
            seen: 0,
            dropped: 0,
            score: self.forward.front().map_or(0, |f| f.1),
            quiet_from,
            quiet_until: None,
        });
    }

    /// The vCPU threads' last switches and wakeups, and the last switch on their CPUs: the
    /// state a reader of a slice needs at its start.
    fn lead(&self) -> Vec<HostEvent> {
        let mut v: Vec<HostEvent> = Vec::new();
        for st in self.vcpus.values() {
            v.extend(st.last_switch.iter().cloned());
            v.extend(st.last_wakeup.iter().cloned());
            if let Some(e) = st.cpu.and_then(|c| self.cpu_last.get(&c)) {
                v.push(e.clone());
            }
        }
        v.sort_by_key(HostEvent::t_ns);
        v.dedup();
        v
    }

    /// A slice whose pad has passed: scored by the waits still going on, then kept or
    /// not against the kept ones.
    fn settle(&mut self, mut s: Slice) {
        let end = (s.idx + 1) * self.cfg.slice_ns + self.cfg.pad_ns;
        for st in self.vcpus.values() {
            if let Some(w0) = st.waiting_since().filter(|&w0| w0 <= end) {
                s.score = s.score.max(self.last_t.saturating_sub(w0));
            }
        }
        self.slices_seen += 1;
        self.kept_events += s.events.len() as u64;
        self.heap.push(Reverse((s.score, s.idx)));
        self.kept.insert(s.idx, s);
        while self.kept_events > self.cfg.max_events {
            let Some(Reverse((_, idx))) = self.heap.pop() else {
                break;
            };
            if let Some(out) = self.kept.remove(&idx) {
                self.kept_events -= out.events.len() as u64;
                self.dropped_slices_events += out.seen;
            }
        }
    }

    /// Forget the names no held event, summary or vCPU needs (a long run meets many
    /// short-lived tasks).
    fn prune_tasks(&mut self) {
        let mut keep: BTreeSet<u32> = self.order.iter().copied().collect();
        keep.extend(self.summary.named());
        let held = self.kept.values().chain(self.pending.iter());
        for e in held.flat_map(|s| &s.events) {
            keep.extend(pids(e));
        }
        self.tasks.retain(|p, _| keep.contains(p));
        self.prune_at = (2 * self.tasks.len()).max(4096);
    }

    /// Everything, with host `CLOCK_REALTIME` times.
    pub fn finish(mut self, map: &ClockMap) -> Collected {
        while let Some(mut s) = self.pending.pop_front() {
            s.quiet_until = self.pending.front().map(|n| n.idx);
            self.settle(s);
        }
        let (len, wlen) = (self.cfg.slice_ns, self.cfg.window_ns);
        let mut events = Vec::new();
        let mut slices = Vec::new();
        let mut kept_in: BTreeMap<u64, u64> = BTreeMap::new();
        let mut over_cap = 0;
        for s in self.kept.into_values() {
            *kept_in.entry(s.idx * len / wlen).or_default() += s.seen - s.dropped;
            over_cap += s.dropped;
            slices.push(KeptSlice {
                start_ns: map.to_realtime(s.idx * len),
                end_ns: map.to_realtime((s.idx + 1) * len),
                score_ns: s.score,
                seen: s.seen,
                dropped: s.dropped,
                quiet_from_ns: map.to_realtime(s.quiet_from * len),
                quiet_until_ns: s.quiet_until.map_or(u64::MAX, |n| map.to_realtime(n * len)),
            });
            events.extend(s.events);
        }
        for e in &mut events {
            match e {
                HostEvent::Switch { t_ns, .. }
                | HostEvent::Wakeup { t_ns, .. }
                | HostEvent::Migrate { t_ns, .. } => *t_ns = map.to_realtime(*t_ns),
            }
        }
        // trace_pipe merges the CPUs' buffers in time order; a stable sort keeps that and
        // mends the rare event of one CPU read ahead of another's. A lead-in repeats an
        // event of the slice before when both were kept.
        events.sort_by_key(HostEvent::t_ns);
        events.dedup();
        let windows = self
            .windows
            .into_iter()
            .map(|(w, (n, vcpus))| WindowSummary {
                start_ns: map.to_realtime(w * wlen),
                end_ns: map.to_realtime((w + 1) * wlen),
                events: n,
                kept: kept_in.get(&w).copied().unwrap_or(0),
                vcpus,
            })
            .collect();
        let mut summary = self.summary.finish();
        for s in &mut summary {
            for at in [&mut s.preempted_max_at_ns, &mut s.off_cpu_max_at_ns] {
                if *at > 0 {
                    *at = map.to_realtime(*at);
                }
            }
        }
        let mut named: BTreeSet<u32> = events.iter().flat_map(pids).collect();
        named.extend(summary.iter().map(|s| s.preempted_max_by));
        let tasks = self
            .tasks
            .into_iter()
            .filter(|(p, _)| named.contains(p))
            .map(|(pid, comm)| Task { pid, comm })
            .collect();
        Collected {
            keep: KeepRule {
                slice_ns: len,
                pad_ns: self.cfg.pad_ns,
                slice_cap: self.cfg.slice_cap,
                window_ns: wlen,
                slices_seen: self.slices_seen,
                dropped_slices_events: self.dropped_slices_events,
                dropped_over_cap: over_cap,
            },
            events,
            seen: self.seen,
            tasks,
            summary,
            slices,
            windows,
            own_on_recorded: self.own_on_recorded,
        }
    }
}

/// The tasks an event names.
fn pids(e: &HostEvent) -> Vec<u32> {
    match e {
        HostEvent::Switch { prev, next, .. } => vec![*prev, *next],
        HostEvent::Wakeup { pid, .. } | HostEvent::Migrate { pid, .. } => vec![*pid],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::v;

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

    fn cfg(max_events: u64) -> KeepConfig {
        KeepConfig {
            max_events,
            slice_ns: SLICE_NS,
            pad_ns: MIN_PAD_NS,
            slice_cap: 50,
            window_ns: 1_000_000_000,
        }
    }

    const MS: u64 = 1_000_000;

    /// vCPU thread 10 on CPU 1 halts and wakes every ms, other tasks switching in between;
    /// at each `(ms, d)` of `long` it is preempted by task 77 for d ms, at each of `halts`
    /// it halts for d ms.
    fn stream(c: &mut Collector, ms: u64, long: &[(u64, u64)], halts: &[(u64, u64)]) {
        for i in 0..ms {
            let t = i * MS;
            if let Some(&(_, d)) = long.iter().find(|l| l.0 == i) {
                c.take(sw(t, 10, "R+", 77));
                c.take(sw(t + d * MS, 77, "S", 10));
                continue;
            }
            if long.iter().any(|l| i > l.0 && i < l.0 + l.1) {
                continue;
            }
            if let Some(&(_, d)) = halts.iter().find(|l| l.0 == i) {
                // Halts at +100 us and is woken (and runs) only d ms later.
                c.take(sw(t + 100_000, 10, "S", 0));
                c.take(HostEvent::Wakeup {
                    t_ns: t + d * MS,
                    cpu: 0,
                    pid: 10,
                    target_cpu: 1,
                });
                c.take(sw(t + d * MS + 5_000, 0, "R", 10));
                continue;
            }
            if halts.iter().any(|l| i > l.0 && i < l.0 + l.1) {
                continue;
            }
            c.take(sw(t + 100_000, 10, "S", 0));
            c.take(sw(t + 300_000, 0, "R", 88));
            c.take(sw(t + 400_000, 88, "S", 0));
            c.take(HostEvent::Wakeup {
                t_ns: t + 900_000,
                cpu: 0,
                pid: 10,
                target_cpu: 1,
            });
            c.take(sw(t + 905_000, 0, "R", 10));
        }
    }

    fn map() -> ClockMap {
        // Realtime = trace + 1 s.
        ClockMap::from_points("mono", &[(0, 1_000_000_000, 1_000_000_000)]).unwrap()
    }

    #[test]
    fn the_slices_around_the_longest_waits_are_kept_and_all_is_counted() {
        let vc = [v(1, 10, "1")];
        // 3 s; preempted 8 ms at 500 ms, 3 ms at 2000 ms, 5 ms at 2600 ms, halted 6 ms at
        // 1200 ms (on CPU 1, recorded whole: its off-CPU span scores); room for about 24
        // slices of 50 events (and their lead-in): each takes 5 (its pad).
        let mut c = Collector::new(&vc, cfg(1300), &[], Some(CpuSet::from_cpus([1])));
        stream(
            &mut c,
            3000,
            &[(500, 8), (2000, 3), (2600, 5)],
            &[(1200, 6)],
        );
        let got = c.finish(&map());
        assert!(got.events.len() <= 1300, "{}", got.events.len());
        assert!(got.slices.len() >= 20, "{:?}", got.slices);
        let s = &got.summary[0];
        assert_eq!(s.preempted_max_ns, 8 * MS, "over every event");
        assert_eq!(s.preempted_max_at_ns, 1_000_000_000 + 500 * MS);
        assert_eq!(s.preemptions, 3);
        assert_eq!(got.seen, 5 * (3000 - 22) + 6 + 3);
        // Each long wait's slices (and their pad) are kept: the record covers them.
        let rec = record_of(&got);
        for (at, d) in [(500, 8), (2000, 3), (2600, 5), (1200, 6)] {
            let (lo, hi) = (
                1_000_000_000 + at * MS - 2 * MS,
                1_000_000_000 + (at + d) * MS + 2 * MS,
            );
            assert_eq!(
                rec.coverage(lo, hi),
                record::hosttrace::Coverage::Kept { capped: false },
                "wait at {at} ms"
            );
        }
        // A quiet moment far from them was dropped, and says where its summary is.
        let quiet = 1_000_000_000 + 1500 * MS;
        match rec.coverage(quiet, quiet + MS) {
            record::hosttrace::Coverage::NotKept { window: Some(w) } => {
                assert_eq!(w.start_ns, 2_000_000_000);
                assert_eq!(w.vcpus[0].wait_max_ns, 5_000, "woken 5 us before it ran");
                assert_eq!(w.events, 5 * 1000 - 5 * 6 + 3, "the halt at 1200 ms");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            got.seen,
            got.slices.iter().map(|s| s.seen - s.dropped).sum::<u64>()
                + got.keep.dropped_slices_events
                + got.keep.dropped_over_cap,
            "every event is kept or counted as dropped"
        );
        assert_eq!(got.windows.len(), 3);
        assert_eq!(got.windows.iter().map(|w| w.events).sum::<u64>(), got.seen);
    }

    fn record_of(c: &Collected) -> record::HostTraceRecord {
        record::HostTraceRecord {
            vm_pid: 1,
            vm_found_by: "--vm-pid".into(),
            vcpus: vec![v(1, 10, "1")],
            cpus: Some("1".into()),
            place: "instances/x".into(),
            buffer_kb: 4096,
            clock: map(),
            guest_clock: record::TimeBase::default(),
            start_ns: 1_000_000_000,
            end_ns: 1_000_000_000 + 3000 * MS,
            tasks: c.tasks.clone(),
            events: c.events.clone(),
            events_seen: c.seen,
            max_events: 1300,
            lost_events: 0,
            summary: c.summary.clone(),
            partial: false,
            keep: Some(c.keep.clone()),
            slices: c.slices.clone(),
            windows: c.windows.clone(),
            reader: None,
        }
    }

    #[test]
    fn a_slice_keeps_the_state_it_starts_in() {
        // Preempted at 5 ms (slice 0), back at 45 ms (slice 4): a reader of slice 4 alone
        // must see that it was off since 5 ms.
        let vc = [v(1, 10, "1")];
        let mut c = Collector::new(&vc, cfg(10_000), &[], None);
        c.take(sw(5 * MS, 10, "R+", 77));
        c.take(sw(41 * MS, 77, "S", 88));
        c.take(sw(45 * MS, 88, "S", 10));
        let got = c.finish(&map());
        let lead: Vec<u64> = got.events.iter().map(HostEvent::t_ns).collect();
        assert_eq!(lead, vec![1_005_000_000, 1_041_000_000, 1_045_000_000]);
        assert_eq!(got.slices.len(), 2, "slices 0 and 4: {:?}", got.slices);
        assert_eq!(got.slices[1].score_ns, 40 * MS, "the wait it ends");
        // Slices 1-3 had no event: slice 4 is quiet back to the end of slice 0, and the
        // last one to the end of the recording.
        assert_eq!(got.slices[1].quiet_from_ns, 1_000_000_000 + 10 * MS);
        assert_eq!(got.slices[0].quiet_until_ns, 1_000_000_000 + 40 * MS);
        assert_eq!(got.slices[1].quiet_until_ns, u64::MAX);
    }

    #[test]
    fn ten_million_events_stay_within_the_bound() {
        let vc = [v(0, 9, "0"), v(1, 10, "1")];
        let k = KeepConfig::for_run(Duration::from_secs(12 * 3600), 200_000, 5_000_000);
        assert_eq!((k.window_ns, k.pad_ns), (11_000_000_000, 20_000_000));
        let bound = k.held_bound(vc.len());
        let mut c = Collector::new(&vc, k, &[], Some(CpuSet::from_cpus([1])));
        let mut max_held = 0;
        // 10 million events, 40 000 a second (TCG's rate) for 250 s: 4 switches a
        // millisecond between the vCPU thread and a fresh task each time.
        for i in 0..2_500_000u64 {
            let t = i * 100_000;
            // A fresh task each time: names are pruned, not kept for every task met.
            let other = 1000 + u32::try_from(i).unwrap();
            let state = if i % 977 == 0 { "R" } else { "S" };
            c.take(sw(t, 10, state, other));
            c.take(sw(t + 10_000 + (i % 7) * 1000, other, "S", 10));
            c.take(sw(t + 50_000, 9, "S", 0));
            c.take(sw(t + 60_000, 0, "R", 9));
            if i % 1000 == 0 {
                max_held = max_held.max(c.held());
                assert!(c.named() as u64 <= 4 * bound + 4096, "names: {}", c.named());
            }
        }
        let got = c.finish(&map());
        assert_eq!(got.seen, 10_000_000);
        assert!(max_held <= bound, "held {max_held} > {bound}");
        assert!(got.events.len() <= 200_000, "{}", got.events.len());
        assert!(
            got.windows.len() <= 24,
            "{} windows of 11 s",
            got.windows.len()
        );
        assert!(got.tasks.len() <= 2 * got.events.len() + 2);
        eprintln!(
            "10M events: at most {max_held} held (bound {bound}), {} kept in {} slices",
            got.events.len(),
            got.slices.len()
        );
    }
}
