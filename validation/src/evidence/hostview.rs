//! The host's view of the guest's worst spikes: each of the probe's worst samples
//! (`record::ProbeSpike`, guest `CLOCK_REALTIME`) is moved onto the host's time line with
//! the guest clock offset `rt-host trace` measured (`HostTraceRecord::guest_clock`), and
//! set beside what the host's scheduler did with that vCPU's thread then
//! (`host-trace.json`): was it off its CPU, runnable but waiting, and who ran instead.

use std::collections::BTreeMap;

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
                "host trace {id}{}: {}; trace clock {} -> CLOCK_REALTIME by {} +- {} us; vCPU threads {}; {} events seen, {} kept, {} lost by the kernel",
                if h.partial { " (partial)" } else { "" },
                guest_clock_words(&h.guest_clock),
                h.clock.trace_clock,
                h.clock.method,
                fmt_us(h.clock.uncertainty_ns),
                threads.join(", "),
                h.events_seen,
                h.events.len(),
                h.lost_events
            )
        })
        .collect()
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
                match traces
                    .iter()
                    .find_map(|(id, h)| view(r.id(), t.cpu, s, id, h))
                {
                    Some(v) => views.push(v),
                    None => unplaced.push(format!(
                        "the {} us spike of run {} on CPU {} at guest time {} ns: no host trace covers it{}",
                        us(s.latency_ns),
                        r.id(),
                        t.cpu,
                        s.wall_ns,
                        why_unplaced(&traces, s.wall_ns)
                    )),
                }
            }
        }
    }
    views.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
    (views, unplaced)
}

/// Why no trace placed a spike at guest time `wall_ns`, when the traces can say.
fn why_unplaced(traces: &[(&str, &HostTraceRecord)], wall_ns: u64) -> String {
    if traces
        .iter()
        .all(|(_, h)| h.guest_clock.method == "unknown")
    {
        return " (the guest clock offset is unknown: run rt-host trace with --clock-dir or --guest-synced)".into();
    }
    let cut: Vec<String> = traces
        .iter()
        .filter(|(_, h)| h.truncated() && h.guest_clock.method != "unknown")
        .filter(|(_, h)| {
            let host = i128::from(wall_ns) - i128::from(h.guest_clock.offset_ns);
            host > i128::from(h.covered_until_ns()) && host <= i128::from(h.end_ns)
        })
        .map(|(id, h)| {
            format!(
                "{id} kept its first {} of {} events, up to host time {} ns: give rt-host trace a larger --max-events",
                h.events.len(),
                h.events_seen,
                h.covered_until_ns()
            )
        })
        .collect();
    if cut.is_empty() {
        String::new()
    } else {
        format!(" (the host trace {})", cut.join("; "))
    }
}

#[allow(clippy::cast_precision_loss)] // ns far below 2^52
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The host view of spike `s` (guest CPU `cpu`) through trace `h`, when `h` places it.
fn view(
    run: &str,
    cpu: u32,
    s: &ProbeSpike,
    host_run: &str,
    h: &HostTraceRecord,
) -> Option<SpikeHostView> {
    if h.guest_clock.method == "unknown" {
        return None;
    }
    let end = i128::from(s.wall_ns) - i128::from(h.guest_clock.offset_ns);
    let end = u64::try_from(end).ok()?;
    let start = end.saturating_sub(s.latency_ns);
    let margin = h
        .guest_clock
        .uncertainty_ns
        .saturating_add(h.clock.uncertainty_ns);
    let (lo, hi) = (start.saturating_sub(margin), end.saturating_add(margin));
    if lo < h.start_ns || hi > h.covered_until_ns() {
        return None;
    }
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
        return Some(v);
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
        (false, _, _) => "no event of the vCPU thread in the window: it ran (or slept) throughout".into(),
        (_, None, _) => "only the vCPU threads' switches were recorded: who ran in between is known only at its switches".into(),
        (_, Some(_), 0) => String::new(),
        (_, Some(_), n) => format!("the kernel lost {n} events in this trace: the picture may have holes"),
    };
    Some(v)
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
}
