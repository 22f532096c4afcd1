//! The busy-loop measurement (`rt-guest oslat`), DPDK-style like rt-tests' oslat: one
//! thread per CPU reads `CLOCK_MONOTONIC` (`clock_gettime(2)` through the vDSO) back to
//! back and records every gap between two reads. A loop that owns its CPU sees gaps of a
//! few tens of ns; anything larger is time the CPU spent elsewhere (an interrupt, a
//! kernel thread, RT throttling, the host descheduling the vCPU), which a wakeup test
//! such as the probe can miss when it falls between two wakeups.
//!
//! As the probe's: each thread (`oslat/N`) pins itself, sets its policy, prefaults its
//! stack and waits on a barrier; the loop neither allocates nor locks (histograms are
//! preallocated by the calling thread); the live status goes through atomics every 4096
//! reads, where the stop flag and the deadline are checked too. Gaps are kept in
//! nanoseconds in an HDR histogram with the exact min, mean and max, and in oslat's
//! one-microsecond buckets (the last one takes the overflows).
//!
//! Checkpoints (`--checkpoint`), as the probe's: once per interval the reporting thread
//! asks every loop for its histogram; the loop, at its next 4096-read check, swaps it for
//! an empty spare (a pointer swap under a lock nobody else holds then) and copies its
//! counters, and the reporting thread folds the interval into its totals and hands a
//! complete picture of the run so far to the caller ([`OslatCheckpoint`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hdrhistogram::Histogram;
use rt_sys::rt::{self, Ftrace};
use rt_sys::sched::{self, SchedParams};
use rt_sys::CpuSet;

use crate::handoff::{self, Handoff};
use crate::probe::{
    block_stop_signals, join_all, mark_and_stop, pin_and_set, Finished, Live, ProbeError,
};

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct OslatConfig {
    /// One loop per CPU.
    pub cpus: CpuSet,
    /// Policy and priority of the loops.
    pub sched: SchedParams,
    /// Run time, ns.
    pub duration_ns: u64,
    /// oslat's one-microsecond buckets (5..=1024; the last takes the overflows).
    pub buckets: usize,
    /// Stop, mark and stop the trace when a gap reaches this (ns; oslat `-T`).
    pub trace_threshold_ns: Option<u64>,
    /// CPUs of the calling (reporting) thread.
    pub report_cpus: Option<CpuSet>,
    /// A complete picture of the run so far every this many ns (see [`OslatCheckpoint`]).
    pub checkpoint_ns: Option<u64>,
}

impl OslatConfig {
    /// Check the settings before any thread starts; `online` is the set of online CPUs.
    pub fn validate(&self, online: &CpuSet) -> Result<(), ProbeError> {
        let bad = |setting, detail: String| Err(ProbeError::Setting { setting, detail });
        if self.cpus.is_empty() {
            return bad("cpu-list", "the CPU list is empty".into());
        }
        if !(5..=1024).contains(&self.buckets) {
            return bad(
                "bucket-size",
                format!("{} is outside 5..=1024 (as oslat)", self.buckets),
            );
        }
        if self.duration_ns == 0 {
            return bad("duration", "a zero duration measures nothing".into());
        }
        if self.checkpoint_ns.is_some_and(|c| c < 1_000_000_000) {
            return bad(
                "checkpoint",
                "checkpoints come at most once per second".into(),
            );
        }
        let p = self.sched.priority;
        if self.sched.policy.is_realtime() != (p > 0) || p > 99 {
            return bad(
                "rtprio",
                format!("priority {p} does not fit policy {}", self.sched.policy),
            );
        }
        if self.sched.policy.is_realtime() && online.is_subset(&self.cpus) {
            return bad(
                "cpu-list",
                format!(
                    "a real-time busy loop on every online CPU ({online}) would starve the \
                     system: leave one CPU out"
                ),
            );
        }
        Ok(())
    }
}

/// One loop's accumulators: preallocated, nothing allocates on record.
#[derive(Debug, Clone)]
pub struct Gaps {
    /// Gaps in ns (1 ns .. 60 s).
    pub hist: Histogram<u64>,
    /// oslat's buckets: index = gap in whole us (truncated), the last one also takes every
    /// larger gap.
    pub buckets: Box<[u64]>,
    /// Gaps measured.
    pub samples: u64,
    /// Smallest gap, ns (`u64::MAX` while none).
    pub min_ns: u64,
    /// Largest gap, ns (also above the HDR range).
    pub max_ns: u64,
    /// Sum of the gaps, ns.
    pub sum_ns: u128,
    /// Gaps beyond the last bucket.
    pub overflows: u64,
    /// Gaps above the HDR range.
    pub out_of_range: u64,
    /// `CLOCK_REALTIME` ns of the largest gap.
    pub max_wall_ns: u64,
}

impl Gaps {
    /// Empty accumulators with `buckets` oslat buckets.
    pub fn new(buckets: usize) -> Gaps {
        Gaps {
            hist: record::hist::new_ns(),
            buckets: crate::latency::resident_zeros(buckets.max(1)),
            samples: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
            overflows: 0,
            out_of_range: 0,
            max_wall_ns: 0,
        }
    }

    /// Record one gap; true when it is a new maximum.
    #[inline]
    pub fn record(&mut self, gap_ns: u64) -> bool {
        self.samples += 1;
        self.sum_ns += u128::from(gap_ns);
        self.min_ns = self.min_ns.min(gap_ns);
        let last = self.buckets.len() - 1;
        let us = usize::try_from(gap_ns / 1000).unwrap_or(usize::MAX);
        if us >= last {
            self.overflows += u64::from(us > last);
        }
        self.buckets[us.min(last)] += 1;
        if gap_ns > record::hist::HIGHEST_NS || self.hist.record(gap_ns.max(1)).is_err() {
            self.out_of_range += 1;
        }
        if gap_ns > self.max_ns {
            self.max_ns = gap_ns;
            return true;
        }
        false
    }

    /// Mean gap, ns.
    pub fn mean_ns(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // sums of ns over a run fit a double well
        let m = self.sum_ns as f64 / self.samples.max(1) as f64;
        m
    }

    /// Min in ns, 0 when nothing was measured.
    pub fn min_or_zero(&self) -> u64 {
        if self.min_ns == u64::MAX {
            0
        } else {
            self.min_ns
        }
    }
}

/// One loop's result.
#[derive(Debug, Clone)]
pub struct OslatThread {
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Policy read back.
    pub sched: SchedParams,
    /// The gaps.
    pub gaps: Gaps,
}

/// A finished (or interrupted) run.
#[derive(Debug, Clone)]
pub struct OslatOutcome {
    /// Per CPU, in CPU order.
    pub threads: Vec<OslatThread>,
    /// `CLOCK_REALTIME` ns at the start.
    pub start_wall_ns: u64,
    /// `CLOCK_REALTIME` ns at the end.
    pub end_wall_ns: u64,
    /// Measured time, ns.
    pub elapsed_ns: u64,
    /// The stop flag ended it (SIGINT/SIGTERM).
    pub stopped: bool,
    /// The trace threshold ended it: (CPU, gap ns).
    pub threshold: Option<(u32, u64)>,
}

/// A checkpoint: everything measured up to it, as an outcome (the loops go on).
#[derive(Debug)]
pub struct OslatCheckpoint<'a> {
    /// 1, 2, ...
    pub number: u64,
    /// The run so far (`stopped` false).
    pub outcome: &'a OslatOutcome,
    /// Per thread, the largest gap since the previous checkpoint, ns.
    pub interval_max_ns: &'a [u64],
}

/// One loop's side of the checkpoints ([`Handoff`]): the spare accumulators it swaps its
/// histogram into, with a copy of its counters.
type Exchange = Handoff<Gaps>;

/// A loop's spare: a token histogram when there will be no checkpoint to swap it in.
fn spare(cfg: &OslatConfig) -> Exchange {
    let mut gaps = Gaps::new(cfg.buckets);
    if cfg.checkpoint_ns.is_none() {
        gaps.hist = Histogram::new_with_bounds(1, 2, 1).expect("static bounds are valid");
    }
    Handoff::new(gaps)
}

/// The loop's side: hand over the histogram so far and a copy of the counters (when asked,
/// and never waiting: `false` when the reporting thread holds the spare).
fn hand_over(x: &Exchange, gaps: &mut Gaps) -> bool {
    x.offer(|g| {
        std::mem::swap(&mut g.hist, &mut gaps.hist);
        g.buckets.copy_from_slice(&gaps.buckets);
        (g.samples, g.min_ns, g.max_ns, g.sum_ns) =
            (gaps.samples, gaps.min_ns, gaps.max_ns, gaps.sum_ns);
        (g.overflows, g.out_of_range, g.max_wall_ns) =
            (gaps.overflows, gaps.out_of_range, gaps.max_wall_ns);
    })
}

/// The reporting thread's side: per loop, the histogram of everything before the last
/// swap, and the picture of the run it hands out.
struct Collector {
    totals: Vec<Histogram<u64>>,
    snapshot: OslatOutcome,
    interval_max: Vec<u64>,
    pending: bool,
    number: u64,
    last_ns: u64,
}

impl Collector {
    fn new(cfg: &OslatConfig, now: u64, wall0: u64) -> Collector {
        let n = cfg.cpus.len();
        Collector {
            totals: (0..n).map(|_| record::hist::new_ns()).collect(),
            snapshot: OslatOutcome {
                threads: cfg
                    .cpus
                    .iter()
                    .map(|cpu| OslatThread {
                        cpu,
                        tid: 0,
                        sched: cfg.sched,
                        gaps: Gaps::new(cfg.buckets),
                    })
                    .collect(),
                start_wall_ns: wall0,
                end_wall_ns: wall0,
                elapsed_ns: 0,
                stopped: false,
                threshold: None,
            },
            interval_max: vec![0; n],
            pending: false,
            number: 0,
            last_ns: now,
        }
    }

    /// Ask for the swap; once every loop swapped (or one finished), fold the intervals
    /// into the totals and call `cb`.
    fn tick(
        &mut self,
        sh: &Shared,
        now: u64,
        every: u64,
        cb: &mut dyn FnMut(&OslatCheckpoint<'_>),
    ) {
        if !self.pending {
            if now.saturating_sub(self.last_ns) >= every {
                self.last_ns = now;
                handoff::request(&sh.exchange);
                self.pending = true;
            }
            return;
        }
        if !handoff::answered(&sh.exchange) && sh.live.finished.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.pending = false;
        for (i, x) in sh.exchange.iter().enumerate() {
            x.take(|slot| {
                self.interval_max[i] = handoff::fold(&mut self.totals[i], &mut slot.hist);
                let t = &mut self.snapshot.threads[i];
                t.tid = sh.live.threads[i].tid.load(Ordering::Relaxed);
                let g = &mut t.gaps;
                g.hist.clone_from(&self.totals[i]);
                g.buckets.copy_from_slice(&slot.buckets);
                (g.samples, g.min_ns, g.max_ns, g.sum_ns) =
                    (slot.samples, slot.min_ns, slot.max_ns, slot.sum_ns);
                (g.overflows, g.out_of_range, g.max_wall_ns) =
                    (slot.overflows, slot.out_of_range, slot.max_wall_ns);
            });
        }
        self.number += 1;
        let o = &mut self.snapshot;
        o.elapsed_ns = now.saturating_sub(sh.start_ns.load(Ordering::SeqCst));
        o.end_wall_ns = o.start_wall_ns + o.elapsed_ns;
        cb(&OslatCheckpoint {
            number: self.number,
            outcome: o,
            interval_max_ns: &self.interval_max,
        });
    }

    /// At the end: a swap not yet folded and the totals go into the loops' results, which
    /// then hold the whole run.
    fn finish(&mut self, sh: &Shared, threads: &mut [OslatThread]) {
        for (i, (x, t)) in sh.exchange.iter().zip(threads.iter_mut()).enumerate() {
            x.take(|slot| {
                let _ = self.totals[i].add(&slot.hist);
            });
            let _ = t.gaps.hist.add(&self.totals[i]);
        }
    }
}

struct Shared {
    exchange: Vec<Exchange>,
    cfg: OslatConfig,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    abort: AtomicBool,
    ready: Barrier,
    start_ns: AtomicU64,
    fired_cpu: AtomicU32,
    fired_ns: AtomicU64,
    ftrace: Option<Ftrace>,
}

/// Run the loops. `stop` ends them early (within 4096 reads); `report` is called about
/// once per `report_every` from the calling thread, `checkpoint` once per
/// `cfg.checkpoint_ns` (never when that is None).
pub fn run(
    cfg: &OslatConfig,
    ftrace: Option<Ftrace>,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    report_every: Duration,
    mut report: impl FnMut(&Live),
    mut checkpoint: impl FnMut(&OslatCheckpoint<'_>),
) -> Result<OslatOutcome, ProbeError> {
    if let Some(cpus) = cfg.report_cpus.as_ref().filter(|c| !c.is_empty()) {
        let _ = sched::set_affinity(0, cpus);
    }
    let n = cfg.cpus.len();
    let sh = Arc::new(Shared {
        exchange: (0..n).map(|_| spare(cfg)).collect(),
        cfg: cfg.clone(),
        live: live.clone(),
        stop: stop.clone(),
        abort: AtomicBool::new(false),
        ready: Barrier::new(n + 1),
        start_ns: AtomicU64::new(0),
        fired_cpu: AtomicU32::new(0),
        fired_ns: AtomicU64::new(0),
        ftrace,
    });
    let mut handles = Vec::with_capacity(n);
    for (slot, cpu) in cfg.cpus.iter().enumerate() {
        let gaps = Gaps::new(cfg.buckets);
        let s = sh.clone();
        let h = std::thread::Builder::new()
            .name(format!("oslat/{cpu}"))
            .stack_size(96 * 1024)
            .spawn(move || spin(&s, slot, cpu, gaps));
        match h {
            Ok(h) => handles.push((cpu, h)),
            Err(source) => {
                sh.abort.store(true, Ordering::SeqCst);
                return Err(ProbeError::Spawn { cpu, source });
            }
        }
    }
    let wall0 = rt::realtime_ns();
    let start = rt::monotonic_ns();
    sh.start_ns.store(start, Ordering::SeqCst);
    sh.ready.wait();
    let every = u64::try_from(report_every.as_nanos()).unwrap_or(u64::MAX);
    let mut last = rt::monotonic_ns();
    let mut collector = cfg.checkpoint_ns.map(|_| Collector::new(cfg, start, wall0));
    while live.finished.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(20));
        let now = rt::monotonic_ns();
        if now.saturating_sub(last) >= every {
            last = now;
            report(&live);
        }
        if let (Some(c), Some(cp)) = (collector.as_mut(), cfg.checkpoint_ns) {
            c.tick(&sh, now, cp, &mut checkpoint);
        }
    }
    let end = rt::monotonic_ns();
    let mut threads = join_all(handles)?;
    if let Some(c) = collector.as_mut() {
        c.finish(&sh, &mut threads);
    }
    let threshold = match sh.fired_cpu.load(Ordering::SeqCst) {
        0 => None,
        c => Some((c - 1, sh.fired_ns.load(Ordering::SeqCst))),
    };
    Ok(OslatOutcome {
        threads,
        start_wall_ns: wall0,
        end_wall_ns: wall0 + (end - start),
        elapsed_ns: end - start,
        stopped: threshold.is_none() && stop.load(Ordering::SeqCst),
        threshold,
    })
}

fn spin(sh: &Shared, slot: usize, cpu: u32, mut gaps: Gaps) -> Result<OslatThread, ProbeError> {
    let _done = Finished(&sh.live.finished);
    block_stop_signals();
    let tid = sched::gettid();
    let setup = pin_and_set(cpu, sh.cfg.sched);
    if setup.is_err() {
        sh.abort.store(true, Ordering::SeqCst);
    }
    rt::prefault_stack();
    // Warm-up into scratch accumulators: the loop's pages are resident before it counts.
    let mut scratch = Gaps::new(4);
    let mut prev = rt::monotonic_ns();
    for _ in 0..4096 {
        let now = rt::monotonic_ns();
        scratch.record(now.saturating_sub(prev));
        prev = now;
    }
    // And the rare branches (bucket overflow, beyond the histogram's range), whose code
    // would otherwise fault in at the first such gap (see the probe's `warm_branches`).
    for gap in [5_000, 50_000, record::hist::HIGHEST_NS + 1] {
        scratch.record(gap);
    }
    drop(scratch);
    sh.ready.wait();
    let read_back = setup.map_err(|source| ProbeError::Setup { cpu, source })?;
    let live = &sh.live.threads[slot];
    live.tid.store(tid, Ordering::Relaxed);
    if !sh.abort.load(Ordering::SeqCst) {
        let end = sh.start_ns.load(Ordering::SeqCst) + sh.cfg.duration_ns;
        busy_loop(sh, slot, cpu, end, &mut gaps);
    }
    Ok(OslatThread {
        cpu,
        tid,
        sched: read_back,
        gaps,
    })
}

/// The hot loop: no allocation, no system call but the vDSO clock read, and no lock but
/// the checkpoint's swap (once per interval, when asked).
fn busy_loop(sh: &Shared, slot: usize, cpu: u32, end: u64, gaps: &mut Gaps) {
    let live = &sh.live.threads[slot];
    let exchange = &sh.exchange[slot];
    let threshold = sh.cfg.trace_threshold_ns.unwrap_or(u64::MAX);
    let mut prev = rt::monotonic_ns();
    let mut i: u32 = 0;
    loop {
        let now = rt::monotonic_ns();
        let gap = now.saturating_sub(prev);
        prev = now;
        if gaps.record(gap) {
            gaps.max_wall_ns = rt::realtime_ns();
            // The wall clock read is not part of the next gap.
            prev = rt::monotonic_ns();
        }
        if gap >= threshold {
            fire(sh, cpu, gap);
        }
        i = i.wrapping_add(1);
        if i & 0xfff == 0 {
            live.samples.store(gaps.samples, Ordering::Relaxed);
            live.max_ns.store(gaps.max_ns, Ordering::Relaxed);
            live.min_ns.store(gaps.min_ns, Ordering::Relaxed);
            live.last_ns
                .store(i64::try_from(gap).unwrap_or(i64::MAX), Ordering::Relaxed);
            live.sum_ns.store(
                u64::try_from(gaps.sum_ns).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            live.missed.store(gaps.overflows, Ordering::Relaxed);
            if hand_over(exchange, gaps) {
                // The swap is not part of the next gap.
                prev = rt::monotonic_ns();
            }
            if now >= end || sh.stop.load(Ordering::Relaxed) || sh.abort.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    live.samples.store(gaps.samples, Ordering::Relaxed);
    live.max_ns.store(gaps.max_ns, Ordering::Relaxed);
}

/// The trace threshold was reached: mark the trace and stop it (first loop only), then
/// stop the run.
fn fire(sh: &Shared, cpu: u32, gap_ns: u64) {
    if sh
        .fired_cpu
        .compare_exchange(0, cpu + 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        if let Some(f) = &sh.ftrace {
            mark_and_stop(
                f,
                format_args!(
                    "rt-guest oslat: trace threshold ({} us) triggered with {} us on cpu {cpu}",
                    sh.cfg.trace_threshold_ns.unwrap_or(0) / 1000,
                    gap_ns / 1000 + 1
                ),
            );
        }
        sh.fired_ns.store(gap_ns, Ordering::SeqCst);
    }
    sh.stop.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::sched::Policy;

    fn cfg(cpu: u32) -> OslatConfig {
        OslatConfig {
            cpus: CpuSet::from_cpus([cpu]),
            sched: SchedParams {
                policy: Policy::Other,
                priority: 0,
            },
            duration_ns: 200_000_000,
            buckets: 32,
            trace_threshold_ns: None,
            report_cpus: None,
            checkpoint_ns: None,
        }
    }

    #[test]
    fn gaps_keep_exact_values_buckets_and_overflows() {
        let mut g = Gaps::new(4);
        for ns in [40, 999, 1_000, 2_500, 3_000, 9_999, 61_000_000_000] {
            g.record(ns);
        }
        assert_eq!(g.samples, 7);
        assert_eq!(g.min_ns, 40);
        assert_eq!(g.max_ns, 61_000_000_000);
        // 0 us: 40, 999; 1 us: 1000; 2 us: 2500; last (3 us and above): 3000, 9999, 61 s.
        assert_eq!(&*g.buckets, &[2, 1, 1, 3]);
        assert_eq!(
            g.overflows, 2,
            "3 us is the last bucket itself, not an overflow"
        );
        assert_eq!(g.out_of_range, 1);
        assert_eq!(g.hist.len(), 6);
    }

    #[test]
    fn settings_are_checked() {
        let online = CpuSet::from_cpus([0, 1]);
        cfg(1).validate(&online).unwrap();
        let mut c = cfg(1);
        c.buckets = 2;
        assert!(c
            .validate(&online)
            .unwrap_err()
            .to_string()
            .contains("bucket-size"));
        let mut c = cfg(0);
        c.cpus = online.clone();
        c.sched = SchedParams {
            policy: Policy::Fifo,
            priority: 1,
        };
        let e = c.validate(&online).unwrap_err().to_string();
        assert!(e.contains("starve"), "{e}");
        c.sched.priority = 0;
        let e = format!("{:#}", (c.validate(&online)).unwrap_err());
        assert!(e.contains("priority 0 does not fit policy fifo"), "{e}");
    }

    /// [`run`] without a stop flag or status lines.
    fn run_quietly(
        c: &OslatConfig,
        checkpoint: impl FnMut(&OslatCheckpoint<'_>),
    ) -> Result<OslatOutcome, ProbeError> {
        let live = Arc::new(Live::new(&c.cpus));
        let stop = Arc::new(AtomicBool::new(false));
        run(
            c,
            None,
            stop,
            live,
            Duration::from_secs(10),
            |_| {},
            checkpoint,
        )
    }

    #[test]
    fn checkpoints_hold_everything_so_far_and_the_end_holds_the_whole_run() {
        let cpu = sched::get_affinity(0).unwrap().iter().next().unwrap();
        let c = OslatConfig {
            duration_ns: 2_600_000_000,
            checkpoint_ns: Some(1_000_000_000),
            ..cfg(cpu)
        };
        let mut seen: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
        let out = run_quietly(&c, |cp| {
            let g = &cp.outcome.threads[0].gaps;
            assert!(!cp.outcome.stopped);
            seen.push((
                cp.number,
                g.samples,
                g.hist.len() + g.out_of_range,
                g.buckets.iter().sum(),
                cp.outcome.elapsed_ns,
            ));
        })
        .unwrap();
        // One checkpoint a second over 2.6 s: 2 (a loaded machine may delay the second).
        assert!(!seen.is_empty() && seen.len() <= 2, "{seen:?}");
        let mut before = 0;
        for (i, (n, samples, in_hist, in_buckets, elapsed)) in seen.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1);
            assert_eq!(samples, in_hist, "the histogram holds every gap counted");
            assert_eq!(samples, in_buckets, "the buckets too");
            assert!(*samples > before, "{seen:?}");
            assert!(*elapsed >= (i as u64 + 1) * 1_000_000_000, "{seen:?}");
            before = *samples;
        }
        let g = &out.threads[0].gaps;
        assert!(
            g.samples > before,
            "the end holds more than the last checkpoint"
        );
        assert_eq!(
            g.hist.len() + g.out_of_range,
            g.samples,
            "nothing lost in the swaps"
        );
        assert_eq!(g.buckets.iter().sum::<u64>(), g.samples);
        let mut c = cfg(cpu);
        c.checkpoint_ns = Some(999_999_999);
        let e = c.validate(&CpuSet::from_cpus([0, 1])).unwrap_err();
        assert!(e.to_string().contains("at most once per second"), "{e}");
    }

    #[test]
    fn an_unprivileged_loop_measures_and_stops() {
        let cpu = sched::get_affinity(0).unwrap().iter().next().unwrap();
        let c = cfg(cpu);
        let out = run_quietly(&c, |_| {}).unwrap();
        let g = &out.threads[0].gaps;
        assert!(g.samples > 1000, "{}", g.samples);
        assert_eq!(g.buckets.iter().sum::<u64>(), g.samples);
        assert!(g.min_ns < 10_000, "{}", g.min_ns);
        assert!(out.elapsed_ns >= 200_000_000);
        assert!(!out.stopped && out.threshold.is_none());
        // A threshold of 0 fires at the first gap.
        let c = OslatConfig {
            trace_threshold_ns: Some(0),
            ..cfg(cpu)
        };
        let out = run_quietly(&c, |_| {}).unwrap();
        assert_eq!(out.threshold.map(|t| t.0), Some(cpu));
        assert!(out.threads[0].gaps.samples < 10_000);
    }
}
