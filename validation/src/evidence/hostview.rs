//! The host's view of the guest's worst spikes: each of the probe's worst samples
//! (`record::ProbeSpike`, guest `CLOCK_REALTIME`) is moved onto the host's time line with
//! the guest clock offset `rt-host trace` measured (`HostTraceRecord::guest_clock`), and
//! set beside what the host's scheduler did with that vCPU's thread then
//! (`host-trace.json`): was it off its CPU, runnable but waiting, and who ran instead.

use std::collections::BTreeMap;

use record::hosttrace::Coverage;
use record::{HostEvent, HostTraceRecord, ProbeSpike};
use serde::{Deserialize, Serialize};

use super::RunData;

/// One guest spike with the host's scheduling of its vCPU at that moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpikeHostView {
    /// The guest run the spike comes from.
    pub run_id: String,
    /// Guest CPU (the vCPU index).
    pub cpu: u32,
    /// The spike, us.
    pub latency_us: f64,
    /// Guest `CLOCK_REALTIME` after the late wakeup, ns.
    pub guest_wall_ns: u64,
    /// The run holding the host trace.
    pub host_run_id: String,
    /// The spike on the host's `CLOCK_REALTIME`: `[start, end]`, ns.
    pub host_start_ns: u64,
    /// End, ns.
    pub host_end_ns: u64,
    /// How far the host times may be off (guest clock offset and trace clock map), us;
    /// the window examined is widened by this on both sides.
    pub uncertainty_us: f64,
    /// The vCPU thread (host tid), when the trace has this vCPU.
    pub vcpu_tid: Option<u32>,
    /// Its name (`CPU 1/KVM`, `CPU 1/TCG`).
    #[serde(default)]
    pub vcpu_name: Option<String>,
    /// The host CPU it ran on (its last switch before or in the window).
    pub host_cpu: Option<u32>,
    /// Time in the window the vCPU thread was not running, us.
    pub off_cpu_us: f64,
    /// Of that, time it was runnable and waiting (preempted, or woken and not yet in), us.
    pub runnable_wait_us: f64,
    /// Who ran on its CPU in the window instead (`kworker/1:0 (pid 77): 30 us`), longest
    /// first.
    pub ran_instead: Vec<String>,
    /// What the trace can and cannot say here.
    pub note: String,
}

impl SpikeHostView {
    /// The spike and the host's view in one line (for JUnit's output).
    pub fn line(&self) -> String {
        format!(
            "host view: {} us spike of run {} on vCPU {} ({}; host {}..{} ns +-{} us): off CPU {} us, runnable waiting {} us, ran instead: {}{}",
            fmt_us_f(self.latency_us),
            self.run_id,
            self.cpu,
            self.thread(),
            self.host_start_ns,
            self.host_end_ns,
            fmt_us_f(self.uncertainty_us),
            fmt_us_f(self.off_cpu_us),
            fmt_us_f(self.runnable_wait_us),
            if self.ran_instead.is_empty() { "-".to_string() } else { self.ran_instead.join(", ") },
            if self.note.is_empty() { String::new() } else { format!(" ({})", self.note) }
        )
    }
}

impl SpikeHostView {
    /// The host thread and CPU in words: `CPU 1/TCG (tid 812) on CPU 1`.
    pub fn thread(&self) -> String {
        let name = self.vcpu_name.as_deref().unwrap_or("vCPU thread");
        match (self.vcpu_tid, self.host_cpu) {
            (Some(t), Some(cpu)) => format!("{name} (tid {t}) on CPU {cpu}"),
            (Some(t), None) => format!("{name} (tid {t})"),
            _ => "no vCPU thread".into(),
        }
    }
}

/// What each host trace of `runs` is (one line per trace): its guest clock offset with
/// the uncertainty, its trace clock, the vCPU threads it recorded and how much it kept.
pub fn trace_lines(runs: &[RunData]) -> Vec<String> {
    runs.iter()
        .filter_map(|r| r.host_trace.as_ref().map(|h| (r.id(), h)))
        .map(|(id, h)| {
            let threads: Vec<String> = h
                .vcpus
                .iter()
                .map(|v| format!("{} (tid {}, CPUs {})", v.name, v.tid, v.cpus_allowed))
                .collect();
            format!(
                "host trace {id}{}: {}; trace clock {} -> CLOCK_REALTIME by {} +- {} us; vCPU threads {}; {} events seen, {} kept{}, {} dropped, {} lost by the kernel{}",
                if h.partial { " (partial)" } else { "" },
                guest_clock_words(&h.guest_clock),
                h.clock.trace_clock,
                h.clock.method,
                fmt_us(h.clock.uncertainty_ns),
                threads.join(", "),
                h.events_seen,
                h.events.len(),
                match &h.keep {
                    Some(k) => format!(
                        " (those of {} slices of {} ms around the longest vCPU waits)",
                        h.slices.len(),
                        k.slice_ns / 1_000_000
                    ),
                    None => " (the first ones)".into(),
                },
                h.events_dropped(),
                h.lost_events,
                reader_words(h)
            )
        })
        .collect()
}

/// Where the trace's own threads ran, in words (older records do not say).
fn reader_words(h: &HostTraceRecord) -> String {
    let Some(p) = &h.reader else {
        return String::new();
    };
    let mut t = format!(
        "; the trace ran on host CPUs {} (measured: {}), {} switches of its own on the CPUs recorded whole",
        p.cpus, p.measured_cpus, p.switches_on_recorded_cpus
    );
    if !p.note.is_empty() {
        t.push_str(&format!(" (NOTE: {})", p.note));
    }
    t
}

/// The guest clock against the host's, in words.
fn guest_clock_words(t: &record::TimeBase) -> String {
    match t.method.as_str() {
        "unknown" => "guest clock offset unknown (its spikes cannot be placed)".into(),
        m => format!(
            "guest clock offset (guest - host) {} us +- {} us ({m})",
            fmt_signed_us(t.offset_ns),
            fmt_us(t.uncertainty_ns)
        ),
    }
}

#[allow(clippy::cast_precision_loss)] // ns far below 2^52
fn fmt_signed_us(ns: i64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn fmt_us_f(us: f64) -> String {
    format!("{us:.1}")
}

/// The host view of every worst sample of every guest probe run that a host trace of
/// `runs` covers; the second list says which spikes could not be placed and why.
pub fn spike_views(runs: &[RunData]) -> (Vec<SpikeHostView>, Vec<String>) {
    let traces: Vec<(&str, &HostTraceRecord)> = runs
        .iter()
        .filter_map(|r| r.host_trace.as_ref().map(|h| (r.id(), h)))
        .collect();
    let (mut views, mut unplaced) = (Vec::new(), Vec::new());
    if traces.is_empty() {
        return (views, unplaced);
    }
    for r in runs {
        for t in r.probe.iter().flat_map(|p| &p.threads) {
            for s in &t.worst {
                let found: Vec<Placed> = traces
                    .iter()
                    .map(|(id, h)| view(r.id(), t.cpu, s, id, h))
                    .collect();
                let not_kept = found.iter().find_map(|p| match p {
                    Placed::NotKept(why) => Some(why.clone()),
                    _ => None,
                });
                match (found.into_iter().find_map(Placed::view), not_kept) {
                    (Some(v), _) => views.push(v),
                    (None, Some(why)) => unplaced.push(format!(
                        "the {} us spike of run {} on CPU {} at guest time {} ns: no host events kept for it ({why})",
                        us(s.latency_ns),
                        r.id(),
                        t.cpu,
                        s.wall_ns,
                    )),
                    (None, None) => unplaced.push(format!(
                        "the {} us spike of run {} on CPU {} at guest time {} ns: no host trace covers it{}",
                        us(s.latency_ns),
                        r.id(),
                        t.cpu,
                        s.wall_ns,
                        why_unplaced(&traces)
                    )),
                }
            }
        }
    }
    views.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
    (views, unplaced)
}

/// Why no trace placed a spike.
fn why_unplaced(traces: &[(&str, &HostTraceRecord)]) -> String {
    if traces
        .iter()
        .all(|(_, h)| h.guest_clock.method == "unknown")
    {
        return " (the guest clock offset is unknown: run rt-host trace with --clock-dir or --guest-synced)".into();
    }
    " (it falls outside the recording)".into()
}

#[allow(clippy::cast_precision_loss)] // ns far below 2^52
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// What one trace says of a spike.
enum Placed {
    /// Its host view.
    View(Box<SpikeHostView>),
    /// Inside the recording, but its events were not kept: why, and what the whole-run
    /// summary says of that moment.
    NotKept(String),
    /// Outside the recording, or the guest clock is unknown.
    No,
}

impl Placed {
    fn view(self) -> Option<SpikeHostView> {
        match self {
            Placed::View(v) => Some(*v),
            _ => None,
        }
    }
}

/// Why the events of a spike at `[lo, hi]` were not kept, with the summary window it
/// falls in (vCPU `cpu`'s waits there, counted over every event).
fn not_kept(
    host_run: &str,
    h: &HostTraceRecord,
    cpu: u32,
    window: Option<&record::hosttrace::WindowSummary>,
) -> String {
    let Some(k) = &h.keep else {
        return format!(
            "the host trace {host_run} kept its first {} of {} events, up to host time {} ns: give rt-host trace a larger --max-events",
            h.events.len(),
            h.events_seen,
            h.covered_until_ns()
        );
    };
    let mut t = format!(
        "the host trace {host_run} kept the events of {} slices of {} ms around its longest vCPU waits, {} of {} events",
        h.slices.len(),
        k.slice_ns / 1_000_000,
        h.events.len(),
        h.events_seen
    );
    let tid = h.vcpus.iter().find(|v| v.vcpu == cpu).map(|v| v.tid);
    let wv = window.and_then(|w| Some((w, w.vcpus.iter().find(|x| Some(x.tid) == tid)?)));
    if let Some((w, x)) = wv {
        t.push_str(&format!(
            "; over every event, in host {}..{} ns vCPU {cpu} waited runnable at most {} us ({} us in all) and was off its CPU at most {} us",
            w.start_ns,
            w.end_ns,
            fmt_us(x.wait_max_ns),
            fmt_us(x.wait_ns),
            fmt_us(x.off_max_ns)
        ));
    }
    t
}

/// The host view of spike `s` (guest CPU `cpu`) through trace `h`, when `h` places it.
fn view(run: &str, cpu: u32, s: &ProbeSpike, host_run: &str, h: &HostTraceRecord) -> Placed {
    if h.guest_clock.method == "unknown" {
        return Placed::No;
    }
    let end = i128::from(s.wall_ns) - i128::from(h.guest_clock.offset_ns);
    let Ok(end) = u64::try_from(end) else {
        return Placed::No;
    };
    let start = end.saturating_sub(s.latency_ns);
    let margin = h
        .guest_clock
        .uncertainty_ns
        .saturating_add(h.clock.uncertainty_ns);
    let (lo, hi) = (start.saturating_sub(margin), end.saturating_add(margin));
    let capped = match h.coverage(lo, hi) {
        Coverage::Outside => return Placed::No,
        Coverage::NotKept { window } => {
            return Placed::NotKept(not_kept(host_run, h, cpu, window));
        }
        Coverage::Kept { capped } => capped,
    };
    let mut v = SpikeHostView {
        run_id: run.to_string(),
        cpu,
        latency_us: us(s.latency_ns),
        guest_wall_ns: s.wall_ns,
        host_run_id: host_run.to_string(),
        host_start_ns: start,
        host_end_ns: end,
        uncertainty_us: us(margin),
        vcpu_tid: None,
        vcpu_name: None,
        host_cpu: None,
        off_cpu_us: 0.0,
        runnable_wait_us: 0.0,
        ran_instead: vec![],
        note: String::new(),
    };
    let Some(thread) = h.vcpus.iter().find(|t| t.vcpu == cpu) else {
        v.note = format!("the host trace has no vCPU {cpu}");
        return Placed::View(Box::new(v));
    };
    let tid = thread.tid;
    v.vcpu_tid = Some(tid);
    v.vcpu_name = Some(thread.name.clone());
    let w = scan(h, tid, lo, hi);
    v.host_cpu = w.cpu;
    v.off_cpu_us = us(w.off_ns);
    v.runnable_wait_us = us(w.wait_ns);
    let mut by: Vec<(u32, u64)> = w.others.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.ran_instead = by
        .iter()
        .map(|(pid, ns)| format!("{} (pid {pid}): {} us", h.comm(*pid), fmt_us(*ns)))
        .collect();
    v.note = match (w.seen, &h.cpus, h.lost_events) {
        (false, _, _) => "host quiet: every event of the window was kept, none of the vCPU thread: it ran (or slept) throughout".into(),
        (_, None, _) => "only the vCPU threads' switches were recorded: who ran in between is known only at its switches".into(),
        (_, Some(_), 0) => String::new(),
        (_, Some(_), n) => format!("the kernel lost {n} events in this trace: the picture may have holes"),
    };
    if capped {
        v.note = format!(
            "{}{}a slice of this window had more events than the trace keeps of one (its first ones kept): the picture may have holes",
            v.note,
            if v.note.is_empty() { "" } else { "; " }
        );
    }
    Placed::View(Box::new(v))
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}", us(ns))
}

/// What the events say about thread `tid` in `[lo, hi]`.
#[derive(Debug, Default)]
struct Window {
    cpu: Option<u32>,
    off_ns: u64,
    wait_ns: u64,
    others: BTreeMap<u32, u64>,
    seen: bool,
}

/// Walk the events up to `hi`: the vCPU thread's off-CPU spans (and their runnable part)
/// clipped to `[lo, hi]`, and per task the time it held the vCPU's CPU meanwhile.
fn scan(h: &HostTraceRecord, tid: u32, lo: u64, hi: u64) -> Window {
    let clip = |a: u64, b: u64| b.min(hi).saturating_sub(a.max(lo));
    let mut w = Window::default();
    // Off CPU since (time, runnable); woken at; the task on the vCPU's CPU since.
    let mut off: Option<(u64, bool)> = None;
    let mut woke: Option<u64> = None;
    let mut holder: Option<(u32, u64)> = None;
    for e in h.events.iter().take_while(|e| e.t_ns() <= hi) {
        let in_window = e.t_ns() >= lo;
        match e {
            HostEvent::Switch {
                t_ns,
                cpu,
                prev,
                prev_state,
                next,
                ..
            } if *prev == tid => {
                w.cpu = Some(*cpu);
                w.seen |= in_window;
                off = Some((*t_ns, prev_state.starts_with('R')));
                woke = None;
                holder = Some((*next, *t_ns));
            }
            HostEvent::Switch {
                t_ns, cpu, next, ..
            } if *next == tid => {
                w.cpu = Some(*cpu);
                w.seen |= in_window;
                if let Some((t0, runnable)) = off.take() {
                    w.off_ns += clip(t0, *t_ns);
                    let from = if runnable { Some(t0) } else { woke };
                    w.wait_ns += from.map_or(0, |f| clip(f, *t_ns));
                }
                if let Some((p, t0)) = holder.take().filter(|(p, _)| *p != tid) {
                    *w.others.entry(p).or_default() += clip(t0, *t_ns);
                }
                woke = None;
            }
            HostEvent::Switch {
                t_ns, cpu, next, ..
            } if Some(*cpu) == w.cpu && off.is_some() => {
                if let Some((p, t0)) = holder.replace((*next, *t_ns)) {
                    *w.others.entry(p).or_default() += clip(t0, *t_ns);
                }
            }
            HostEvent::Wakeup { t_ns, pid, .. } if *pid == tid && off.is_some() => {
                w.seen |= in_window;
                woke.get_or_insert(*t_ns);
            }
            _ => {}
        }
    }
    // Still off at the end of the window.
    if let Some((t0, runnable)) = off {
        w.off_ns += clip(t0, hi);
        let from = if runnable { Some(t0) } else { woke };
        w.wait_ns += from.map_or(0, |f| clip(f, hi));
        if let Some((p, t0)) = holder {
            *w.others.entry(p).or_default() += clip(t0, hi);
        }
    }
    w.others.retain(|p, ns| *p != 0 && *ns > 0);
    w
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::evidence::fixtures::{at, good_env, host_trace, probe, run};

    pub(crate) fn guest_with_spike(latency_us: u64, guest_wall_ns: u64) -> RunData {
        let mut p = probe(&[(10, 2000)], 0);
        p.threads[0].worst = vec![ProbeSpike {
            latency_ns: latency_us * 1000,
            cycle: 3,
            wall_ns: guest_wall_ns,
        }];
        run(good_env(), Some(p), None)
    }

    pub(crate) fn host_run(h: HostTraceRecord) -> RunData {
        let mut r = run(good_env(), None, None);
        r.manifest.run_id = "host".into();
        r.host_trace = Some(h);
        r
    }

    #[test]
    fn a_spike_is_matched_to_the_preemption_at_its_host_time() {
        // The guest's clock is 5 s ahead; its 35 us spike ends at host +133 us.
        let offset = 5_000_000_000;
        let guest = guest_with_spike(35, at(133) + 5_000_000_000);
        let (views, unplaced) =
            spike_views(&[guest, host_run(host_trace(offset, "file_exchange"))]);
        assert_eq!(unplaced, Vec::<String>::new());
        let v = &views[0];
        assert_eq!((v.host_start_ns, v.host_end_ns), (at(98), at(133)));
        assert_eq!((v.vcpu_tid, v.host_cpu), (Some(50), Some(1)));
        // Window 95..136 us (2 us guest + 1 us trace clock margins): off 100..130.
        assert_eq!(v.off_cpu_us, 30.0);
        assert_eq!(v.runnable_wait_us, 30.0, "preempted: runnable throughout");
        assert_eq!(
            v.ran_instead,
            vec!["kworker/1:0 (pid 77): 30.0 us".to_string()]
        );
        assert_eq!(v.note, "");
        assert!(
            v.line().contains("35.0 us spike of run run-test on vCPU 1")
                && v.line().contains("off CPU 30.0 us"),
            "{}",
            v.line()
        );
    }

    #[test]
    fn a_halt_counts_as_runnable_only_from_its_wakeup() {
        // The spike ends at host +645 us, 200 us long: window 442..648 us.
        let guest = guest_with_spike(200, at(645));
        let (views, _) = spike_views(&[guest, host_run(host_trace(0, "synced"))]);
        let v = &views[0];
        assert_eq!(v.off_cpu_us, 140.0, "off 500..640");
        assert_eq!(v.runnable_wait_us, 40.0, "woken at 600, in at 640");
        assert_eq!(
            v.ran_instead,
            vec!["stress (pid 88): 90.0 us".to_string()],
            "the idle task is not listed"
        );
    }

    #[test]
    fn spikes_outside_the_trace_or_with_an_unknown_clock_are_said_unplaced() {
        let late = guest_with_spike(35, at(20_000));
        let (views, unplaced) = spike_views(&[late, host_run(host_trace(0, "synced"))]);
        assert!(views.is_empty());
        assert!(
            unplaced[0].contains("no host trace covers it"),
            "{unplaced:?}"
        );
        let g = guest_with_spike(35, at(133));
        let (views, unplaced) = spike_views(&[g.clone(), host_run(host_trace(0, "unknown"))]);
        assert!(views.is_empty());
        assert!(unplaced[0].contains("--clock-dir"), "{unplaced:?}");
        // No host trace at all: nothing to say.
        assert_eq!(spike_views(std::slice::from_ref(&g)), (vec![], vec![]));
        // A trace that kept only its first events says so for a spike after them.
        let mut cut = host_trace(0, "synced");
        cut.events_seen = cut.events.len() as u64 + 5;
        cut.events.truncate(3);
        let (views, unplaced) = spike_views(&[guest_with_spike(35, at(645)), host_run(cut)]);
        assert!(views.is_empty());
        assert!(
            unplaced[0]
                .contains("the host trace host kept its first 3 of 12 events, up to host time")
                && unplaced[0].contains("--max-events"),
            "{unplaced:?}"
        );
    }

    /// The fixture as `rt-host trace` writes it now: the events of host 0..1000 us kept
    /// (one slice), the rest of the run (to 10 ms) only summarised.
    fn sliced() -> HostTraceRecord {
        use record::hosttrace::{KeepRule, KeptSlice, WindowSummary, WindowVcpu};
        let mut h = host_trace(0, "synced");
        h.events_seen = 900;
        h.keep = Some(KeepRule {
            slice_ns: 1_000_000,
            pad_ns: 20_000_000,
            slice_cap: 5000,
            window_ns: 1_000_000_000,
            slices_seen: 10,
            dropped_slices_events: 900 - 7,
            dropped_over_cap: 0,
        });
        h.slices = vec![KeptSlice {
            start_ns: at(0),
            end_ns: at(1000),
            score_ns: 40_000,
            seen: 7,
            dropped: 0,
            quiet_from_ns: at(0),
            quiet_until_ns: at(1000),
        }];
        h.windows = vec![WindowSummary {
            start_ns: at(0),
            end_ns: at(10_000),
            events: 900,
            kept: 7,
            vcpus: vec![WindowVcpu {
                tid: 50,
                switches_out: 300,
                off_max_ns: 140_000,
                wait_max_ns: 41_000,
                wait_ns: 90_000,
            }],
        }];
        h
    }

    #[test]
    fn a_sliced_trace_places_kept_spikes_and_says_when_none_were_kept() {
        // Kept: the halt and late wakeup of the fixture, as before.
        let (views, unplaced) = spike_views(&[guest_with_spike(200, at(645)), host_run(sliced())]);
        assert_eq!(unplaced, Vec::<String>::new());
        assert_eq!(
            (views[0].off_cpu_us, views[0].runnable_wait_us),
            (140.0, 40.0)
        );
        // Kept, and nothing of the vCPU thread in it: the host was quiet.
        let (views, _) = spike_views(&[guest_with_spike(50, at(900)), host_run(sliced())]);
        assert_eq!(views[0].off_cpu_us, 0.0);
        assert!(views[0].note.starts_with("host quiet"), "{}", views[0].note);
        // In the recording but in a dropped slice: not placed, and the summary said.
        let (views, unplaced) = spike_views(&[guest_with_spike(50, at(5000)), host_run(sliced())]);
        assert!(views.is_empty());
        assert_eq!(
            unplaced,
            vec![format!(
                "the 50 us spike of run run-test on CPU 1 at guest time {} ns: no host events kept for it (the host trace host kept the events of 1 slices of 1 ms around its longest vCPU waits, 7 of 900 events; over every event, in host {}..{} ns vCPU 1 waited runnable at most 41.0 us (90.0 us in all) and was off its CPU at most 140.0 us)",
                at(5000),
                at(0),
                at(10_000)
            )]
        );
        // A slice cut at its cap says the picture may have holes.
        let mut capped = sliced();
        capped.slices[0].dropped = 3;
        let (views, _) = spike_views(&[guest_with_spike(200, at(645)), host_run(capped)]);
        assert!(
            views[0].note.contains("may have holes"),
            "{}",
            views[0].note
        );
    }
}
