//! The measurement engine: one thread per CPU sleeping on `clock_nanosleep(2)`
//! (`CLOCK_MONOTONIC`, `TIMER_ABSTIME`) and measuring how late it wakes.
//!
//! Each thread, named `probe/N`, sets its affinity, then its policy and priority, prefaults
//! its stack and waits on a barrier; the first sample is taken after every thread is set
//! up. The loop neither allocates nor locks: histograms are preallocated by the caller's
//! thread, the live status goes through atomics read by the reporting thread, which runs
//! off the measured CPUs. Missed periods are counted, out-of-range values are counted,
//! and a stop flag (set by SIGINT/SIGTERM) is checked every period.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hdrhistogram::Histogram;
use nix::errno::Errno;
use rt_sys::rt::{self, Ftrace};
use rt_sys::sched::{self, SchedParams};
use rt_sys::{CpuSet, SysError};

use crate::handoff::{self, Handoff};
use crate::latency::{classify, Spike, Stats, UsBuckets, Wakeup};

/// Errors of the probe; each names the thread or setting.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A setting is unusable.
    #[error("Invalid probe setting {setting}: {detail}")]
    Setting {
        /// The option or profile field.
        setting: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A measurement thread could not be set up (affinity, policy).
    #[error("Cannot set up measurement thread probe/{cpu}")]
    Setup {
        /// The CPU.
        cpu: u32,
        /// The cause.
        #[source]
        source: SysError,
    },
    /// A thread could not be started.
    #[error("Cannot start thread probe/{cpu}")]
    Spawn {
        /// The CPU.
        cpu: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `clock_nanosleep` failed.
    #[error("clock_nanosleep failed in probe/{cpu}: {errno}")]
    Sleep {
        /// The CPU.
        cpu: u32,
        /// The errno.
        errno: Errno,
    },
    /// A thread panicked.
    #[error("Measurement thread probe/{cpu} panicked")]
    Panicked {
        /// The CPU.
        cpu: u32,
    },
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// One thread per CPU.
    pub cpus: CpuSet,
    /// Period, ns.
    pub interval_ns: u64,
    /// Policy and priority of the measurement threads.
    pub sched: SchedParams,
    /// Stop after this many wakeups per thread.
    pub loops: Option<u64>,
    /// Stop after this long. With neither this nor `loops`, the run goes on until the
    /// stop flag is set (cyclictest's `-l 0`).
    pub duration_ns: Option<u64>,
    /// Stop and mark the trace when a latency exceeds this (ns).
    pub breaktrace_ns: Option<u64>,
    /// Buckets (us) of the cyclictest-style histogram.
    pub hist_us: usize,
    /// CPUs for the calling (reporting) thread, off the measured CPUs. None: leave it.
    pub report_cpus: Option<CpuSet>,
    /// Hand a snapshot of every thread's data to the caller this often (ns): a long run
    /// then keeps a complete record of all but the last interval (see [`Checkpoint`]).
    pub checkpoint_ns: Option<u64>,
}

impl ProbeConfig {
    /// Check the settings before any thread starts.
    pub fn validate(&self) -> Result<(), ProbeError> {
        let bad = |setting, detail: String| Err(ProbeError::Setting { setting, detail });
        if self.cpus.is_empty() {
            return bad("cpus", "the CPU list is empty".into());
        }
        let min_us = profiles::validate::MIN_PROBE_INTERVAL_US;
        if self.interval_ns < u64::from(min_us) * 1000 {
            return bad(
                "interval",
                format!(
                    "{} us is below the {min_us} us minimum",
                    self.interval_ns / 1000
                ),
            );
        }
        let p = self.sched.priority;
        if self.sched.policy.is_realtime() && !(1..=99).contains(&p) {
            return bad(
                "priority",
                format!("{p} is outside 1..=99 for {}", self.sched.policy),
            );
        }
        if !self.sched.policy.is_realtime() && p != 0 {
            return bad(
                "priority",
                format!("{p}: policy {} takes priority 0", self.sched.policy),
            );
        }
        if self.checkpoint_ns.is_some_and(|c| c < 1_000_000_000) {
            return bad(
                "checkpoint",
                "checkpoints come at most once per second".into(),
            );
        }
        if self.loops == Some(0) {
            return bad("loops", "0 loops measure nothing".into());
        }
        if self.duration_ns == Some(0) {
            return bad("duration", "a zero duration measures nothing".into());
        }
        Ok(())
    }
}

/// Live status of one thread, written by it and read by the reporting thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LiveThread {
    /// CPU.
    pub cpu: AtomicU32,
    /// Thread id (0 until set up).
    pub tid: AtomicU32,
    /// Wakeups so far.
    pub samples: AtomicU64,
    /// Last latency, ns.
    pub last_ns: AtomicI64,
    /// Max so far, ns.
    pub max_ns: AtomicU64,
    /// Min so far, ns.
    pub min_ns: AtomicU64,
    /// Sum of in-range latencies, ns (wraps after 584 years of 1 s latencies).
    pub sum_ns: AtomicU64,
    /// Missed periods so far.
    pub missed: AtomicU64,
    /// Max since the reporting thread last took it (`swap(0)`), ns: the rolling max.
    pub window_max_ns: AtomicU64,
}

/// Live status of a run.
#[derive(Debug)]
pub struct Live {
    /// One per thread, in CPU order.
    pub threads: Vec<LiveThread>,
    /// `CLOCK_MONOTONIC` ns of the grid's origin: the first wakeup is one interval later.
    /// 0 until the threads are released.
    pub start_ns: AtomicU64,
    /// Threads that have finished.
    pub finished: AtomicUsize,
    /// Set when a breaktrace fired: (cpu + 1) of the thread that fired.
    pub breaktrace_cpu: AtomicU32,
    /// The latency that fired the breaktrace, ns.
    pub breaktrace_ns: AtomicU64,
}

impl Live {
    /// Status slots for `cpus`.
    pub fn new(cpus: &CpuSet) -> Self {
        Live {
            threads: cpus
                .iter()
                .map(|c| {
                    let t = LiveThread::default();
                    t.cpu.store(c, Ordering::Relaxed);
                    t.min_ns.store(u64::MAX, Ordering::Relaxed);
                    t
                })
                .collect(),
            start_ns: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            breaktrace_cpu: AtomicU32::new(0),
            breaktrace_ns: AtomicU64::new(0),
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Loops or duration reached.
    Completed,
    /// The stop flag was set (SIGINT/SIGTERM).
    Stopped,
    /// A latency exceeded the breaktrace bound.
    Breaktrace,
}

/// One thread's results.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    /// CPU measured.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Policy and priority read back after setting them.
    pub sched: SchedParams,
    /// Exact statistics.
    pub stats: Stats,
    /// ns histogram.
    pub hist: Histogram<u64>,
    /// cyclictest-style us buckets.
    pub buckets: UsBuckets,
    /// Page faults the thread took while measuring (should be 0: memory locked, stack
    /// prefaulted, loop warmed up).
    pub faults_in_loop: u64,
}

/// A finished (or interrupted) run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Per thread, in CPU order.
    pub threads: Vec<ThreadResult>,
    /// `CLOCK_REALTIME` ns at the grid origin.
    pub start_wall_ns: u64,
    /// `CLOCK_REALTIME` ns when the last thread finished.
    pub end_wall_ns: u64,
    /// Measured time, ns.
    pub elapsed_ns: u64,
    /// Why it ended.
    pub ending: Ending,
    /// The breaktrace that ended it: (CPU, latency ns).
    pub breaktrace: Option<(u32, u64)>,
}

/// What a measurement thread hands over at a checkpoint ([`Handoff`]): its interval
/// histogram (swapped with the empty spare) and a copy of its statistics.
#[derive(Debug)]
struct Spare {
    hist: Histogram<u64>,
    stats: Stats,
}

type Exchange = Handoff<Spare>;

/// One thread's data at a checkpoint: everything measured from the start to the swap.
#[derive(Debug)]
pub struct CheckpointThread<'a> {
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Statistics at the swap.
    pub stats: Stats,
    /// The histogram from the start to the swap.
    pub hist: &'a Histogram<u64>,
    /// The largest latency since the previous checkpoint, ns.
    pub interval_max_ns: u64,
}

/// A checkpoint: a complete picture of the run so far.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    /// 1, 2, ...
    pub number: u64,
    /// Measured time so far, ns.
    pub elapsed_ns: u64,
    /// `CLOCK_REALTIME` ns at the grid origin.
    pub start_wall_ns: u64,
    /// Per thread, in CPU order.
    pub threads: Vec<CheckpointThread<'a>>,
}

/// The reporting thread's side of the checkpoints: the histogram of everything before
/// the last swap, per thread.
struct Collector {
    totals: Vec<Histogram<u64>>,
    stats: Vec<Stats>,
    interval_max: Vec<u64>,
    pending: bool,
    number: u64,
    last_ns: u64,
    start_wall_ns: u64,
}

impl Collector {
    fn new(n: usize, now: u64, start_wall_ns: u64) -> Self {
        Collector {
            start_wall_ns,
            totals: (0..n).map(|_| record::hist::new_ns()).collect(),
            stats: vec![Stats::default(); n],
            interval_max: vec![0; n],
            pending: false,
            number: 0,
            last_ns: now,
        }
    }

    /// Ask for the swap, then (once every thread has swapped or finished) fold the
    /// intervals into the totals and call `cb`.
    fn tick(&mut self, sh: &Shared, now: u64, every: u64, cb: &mut dyn FnMut(&Checkpoint<'_>)) {
        if !self.pending {
            if now.saturating_sub(self.last_ns) < every {
                return;
            }
            self.last_ns = now;
            handoff::request(&sh.exchange);
            self.pending = true;
            return;
        }
        if !handoff::answered(&sh.exchange) && sh.live.finished.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.pending = false;
        for (i, x) in sh.exchange.iter().enumerate() {
            x.take(|slot| {
                self.interval_max[i] = handoff::fold(&mut self.totals[i], &mut slot.hist);
                self.stats[i] = slot.stats;
            });
        }
        self.number += 1;
        let cp = Checkpoint {
            number: self.number,
            elapsed_ns: now.saturating_sub(sh.live.start_ns.load(Ordering::SeqCst)),
            start_wall_ns: self.start_wall_ns,
            threads: sh
                .live
                .threads
                .iter()
                .enumerate()
                .map(|(i, t)| CheckpointThread {
                    cpu: t.cpu.load(Ordering::Relaxed),
                    tid: t.tid.load(Ordering::Relaxed),
                    stats: self.stats[i],
                    hist: &self.totals[i],
                    interval_max_ns: self.interval_max[i],
                })
                .collect(),
        };
        cb(&cp);
    }

    /// At the end: fold a swap not yet taken and the totals into the threads' results,
    /// which then hold the whole run.
    fn finish(&mut self, sh: &Shared, threads: &mut [ThreadResult]) {
        for (i, (x, t)) in sh.exchange.iter().zip(threads.iter_mut()).enumerate() {
            x.take(|slot| {
                let _ = self.totals[i].add(&slot.hist);
            });
            let _ = t.hist.add(&self.totals[i]);
        }
    }
}

struct Shared {
    exchange: Vec<Exchange>,
    cfg: ProbeConfig,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    abort: AtomicBool,
    ready: Barrier,
    go: Barrier,
    ftrace: Option<Ftrace>,
}

/// What the reporting thread shares with the measurement threads: a spare histogram per
/// CPU for checkpoints, the stop flags, the start barriers.
fn shared_state(
    cfg: &ProbeConfig,
    ftrace: Option<Ftrace>,
    stop: &Arc<AtomicBool>,
    live: &Arc<Live>,
) -> Arc<Shared> {
    let n = cfg.cpus.len();
    let exchange = (0..n)
        .map(|_| {
            Exchange::new(Spare {
                // The spare histogram: full size only when it will be swapped in.
                hist: match cfg.checkpoint_ns {
                    Some(_) => record::hist::new_ns(),
                    None => Histogram::new_with_bounds(1, 2, 1).expect("static bounds are valid"),
                },
                stats: Stats::default(),
            })
        })
        .collect();
    Arc::new(Shared {
        exchange,
        cfg: cfg.clone(),
        live: live.clone(),
        stop: stop.clone(),
        abort: AtomicBool::new(false),
        ready: Barrier::new(n + 1),
        go: Barrier::new(n + 1),
        ftrace,
    })
}

/// Run the probe. `stop` ends it early (within one period); `report` is called about
/// once per `report_every` from the calling thread while measuring, `checkpoint` once
/// per `cfg.checkpoint_ns` (never when that is None).
pub fn run(
    cfg: &ProbeConfig,
    ftrace: Option<Ftrace>,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    report_every: Duration,
    mut report: impl FnMut(&Live),
    mut checkpoint: impl FnMut(&Checkpoint<'_>),
) -> Result<Outcome, ProbeError> {
    cfg.validate()?;
    if let Some(cpus) = &cfg.report_cpus {
        if !cpus.is_empty() {
            // Best effort: the reporting thread must not disturb the measured CPUs.
            let _ = sched::set_affinity(0, cpus);
        }
    }
    let n = cfg.cpus.len();
    let shared = shared_state(cfg, ftrace, &stop, &live);
    let mut handles = Vec::with_capacity(n);
    for (slot, cpu) in cfg.cpus.iter().enumerate() {
        // Allocated here, on the reporting thread: the measurement thread never allocates.
        let hist = record::hist::new_ns();
        let buckets = UsBuckets::new(cfg.hist_us);
        let scratch = Scratch::new();
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("probe/{cpu}"))
            .stack_size(96 * 1024)
            .spawn(move || measure(&sh, slot, cpu, hist, buckets, scratch));
        match h {
            Ok(h) => handles.push((cpu, h)),
            Err(source) => {
                // The threads already started wait on the barrier for good; the caller
                // exits on this error, which ends them.
                shared.abort.store(true, Ordering::SeqCst);
                return Err(ProbeError::Spawn { cpu, source });
            }
        }
    }
    shared.ready.wait();
    let wall0 = rt::realtime_ns();
    let mono0 = rt::monotonic_ns();
    // The grid origin: a little later, so that every thread is asleep before the first
    // wakeup.
    let start = mono0 + 1_000_000;
    live.start_ns.store(start, Ordering::SeqCst);
    shared.go.wait();

    let mut last_report = rt::monotonic_ns();
    let every = u64::try_from(report_every.as_nanos()).unwrap_or(u64::MAX);
    let mut collector = cfg
        .checkpoint_ns
        .map(|_| Collector::new(n, last_report, wall0 + (start - mono0)));
    while live.finished.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(20));
        let now = rt::monotonic_ns();
        if now.saturating_sub(last_report) >= every {
            last_report = now;
            report(&live);
        }
        if let (Some(c), Some(cp)) = (collector.as_mut(), cfg.checkpoint_ns) {
            c.tick(&shared, now, cp, &mut checkpoint);
        }
    }
    let end_mono = rt::monotonic_ns();
    let mut threads = join_all(handles)?;
    if let Some(c) = collector.as_mut() {
        c.finish(&shared, &mut threads);
    }
    let ending = if live.breaktrace_cpu.load(Ordering::SeqCst) != 0 {
        Ending::Breaktrace
    } else if stop.load(Ordering::SeqCst) {
        Ending::Stopped
    } else {
        Ending::Completed
    };
    let elapsed_ns = end_mono.saturating_sub(start);
    let breaktrace = match live.breaktrace_cpu.load(Ordering::SeqCst) {
        0 => None,
        c => Some((c - 1, live.breaktrace_ns.load(Ordering::SeqCst))),
    };
    Ok(Outcome {
        breaktrace,
        threads,
        start_wall_ns: wall0 + (start - mono0),
        end_wall_ns: wall0 + (end_mono - mono0),
        elapsed_ns,
        ending,
    })
}

/// Join every measurement thread (all of them, also after an error); the first error
/// wins.
pub(crate) fn join_all<T>(
    handles: Vec<(u32, std::thread::JoinHandle<Result<T, ProbeError>>)>,
) -> Result<Vec<T>, ProbeError> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for (cpu, h) in handles {
        match h.join() {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(ProbeError::Panicked { cpu });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Counts the thread as finished when it leaves, whatever the path.
pub(crate) struct Finished<'a>(pub(crate) &'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn block_stop_signals() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Signals go to the reporting thread, which sets the stop flag; a failure here only
    // means a signal may interrupt a sleep, which the loop handles (EINTR).
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// Pin the calling thread to `cpu`, then set its policy; returns the policy read back.
pub(crate) fn pin_and_set(cpu: u32, params: SchedParams) -> Result<SchedParams, SysError> {
    sched::set_affinity(0, &CpuSet::from_cpus([cpu]))?;
    sched::set_sched(0, params)?;
    sched::get_sched(0)
}

/// Periods run before the barrier, into scratch accumulators, so that every page the
/// loop touches (code, vDSO, stack) is resident and locked before the first sample.
const WARMUP_LOOPS: u64 = 3;

/// Scratch accumulators for the warm-up pass (allocated by the reporting thread).
pub(crate) struct Scratch {
    hist: Histogram<u64>,
    buckets: UsBuckets,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            // Small bounds: the same code as the real histogram, little memory.
            hist: Histogram::new_with_bounds(1, 10_000_000, 1).expect("static bounds are valid"),
            buckets: UsBuckets::new(16),
        }
    }
}

fn measure(
    sh: &Shared,
    slot: usize,
    cpu: u32,
    mut hist: Histogram<u64>,
    mut buckets: UsBuckets,
    mut scratch: Scratch,
) -> Result<ThreadResult, ProbeError> {
    let _done = Finished(&sh.live.finished);
    block_stop_signals();
    let tid = sched::gettid();
    let setup = pin_and_set(cpu, sh.cfg.sched);
    if setup.is_err() {
        sh.abort.store(true, Ordering::SeqCst);
    }
    rt::prefault_stack();
    if setup.is_ok() {
        let now = rt::monotonic_ns();
        let mut s = Stats::default();
        let warm = Span {
            start: now,
            loops: WARMUP_LOOPS,
            end: None,
        };
        cycles(
            sh,
            None,
            slot,
            cpu,
            &warm,
            &mut s,
            &mut scratch.hist,
            &mut scratch.buckets,
        )?;
        warm_branches(sh, slot, cpu, &mut s, &mut scratch);
    }
    drop(scratch);
    sh.ready.wait();
    sh.go.wait();
    let read_back = setup.map_err(|source| ProbeError::Setup { cpu, source })?;
    let live = &sh.live.threads[slot];
    live.tid.store(tid, Ordering::Relaxed);
    let mut stats = Stats::default();
    let mut faults_in_loop = 0;
    if !sh.abort.load(Ordering::SeqCst) {
        let cfg = &sh.cfg;
        let start = sh.live.start_ns.load(Ordering::SeqCst);
        let span = Span {
            start,
            loops: cfg.loops.unwrap_or(u64::MAX),
            end: cfg.duration_ns.map(|d| start.saturating_add(d)),
        };
        let f0 = rt::thread_faults();
        cycles(
            sh,
            Some(live),
            slot,
            cpu,
            &span,
            &mut stats,
            &mut hist,
            &mut buckets,
        )?;
        faults_in_loop = rt::thread_faults().saturating_sub(f0);
    }
    Ok(ThreadResult {
        cpu,
        tid,
        sched: read_back,
        stats,
        hist,
        buckets,
        faults_in_loop,
    })
}

/// Synthetic wakeups through the loop's own per-sample code ([`take`]) into the scratch
/// accumulators, so that the code of its rare branches is resident before the first
/// sample: a full worst-spike array (replace the smallest, new floor), missed periods,
/// bucket overflow, early and out-of-range wakeups. In the default lock-on-touch mode a
/// branch first taken mid-run faulted its code page in: `perf record -e page-faults -d`
/// showed the fault at the 17th sample, in the comparison that runs once the worst-spike
/// array is full (1 fault in 4 of 10 runs here before this).
fn warm_branches(sh: &Shared, slot: usize, cpu: u32, s: &mut Stats, scratch: &mut Scratch) {
    let interval = sh.cfg.interval_ns.max(1);
    let next = rt::monotonic_ns();
    let mut late = |cycle: u64, now: u64| {
        let w = classify(next, now, interval);
        take(
            sh,
            None,
            slot,
            cpu,
            &w,
            cycle,
            s,
            &mut scratch.hist,
            &mut scratch.buckets,
        );
    };
    let n = u64::try_from(record::WORST_SAMPLES).unwrap_or(64) + 2;
    for k in 0..n {
        late(k, next + 1000 * (k + 1)); // growing: fills the worst array, then replaces
    }
    late(n, next + 500); // below the floor once full
    late(n + 1, next + 3 * interval + 1); // missed periods
    late(n + 2, next + 20_000_000); // past the scratch buckets: an overflow
    late(n + 3, next.saturating_sub(1000)); // early
    late(n + 4, next + record::hist::HIGHEST_NS + 1); // beyond the histogram's range
}

/// Where the grid starts and when to stop.
struct Span {
    start: u64,
    loops: u64,
    end: Option<u64>,
}

/// The hot loop: no allocation, no lock. `live` is None for the warm-up pass.
#[allow(clippy::too_many_arguments)]
fn cycles(
    sh: &Shared,
    live: Option<&LiveThread>,
    slot: usize,
    cpu: u32,
    span: &Span,
    stats: &mut Stats,
    hist: &mut Histogram<u64>,
    buckets: &mut UsBuckets,
) -> Result<(), ProbeError> {
    let interval = sh.cfg.interval_ns;
    let mut next = span.start;
    let mut cycle: u64 = 0;
    while cycle < span.loops {
        next += interval;
        if span.end.is_some_and(|e| next > e)
            || sh.stop.load(Ordering::Relaxed)
            || sh.abort.load(Ordering::Relaxed)
        {
            break;
        }
        loop {
            match rt::sleep_until_monotonic(next) {
                Ok(()) => break,
                Err(Errno::EINTR) => {
                    if sh.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(errno) => return Err(ProbeError::Sleep { cpu, errno }),
            }
        }
        let now = rt::monotonic_ns();
        if now < next && sh.stop.load(Ordering::Relaxed) {
            break; // interrupted sleep: not a sample
        }
        let w = classify(next, now, interval);
        if take(sh, live, slot, cpu, &w, cycle, stats, hist, buckets) {
            break;
        }
        next = w.next_ns;
        cycle += 1;
    }
    Ok(())
}

/// One wakeup into the accumulators and, while measuring (`live`), the live view and the
/// checkpoint handoff. True when the run must stop (the latency crossed `--breaktrace`).
#[allow(clippy::too_many_arguments)]
#[inline]
fn take(
    sh: &Shared,
    live: Option<&LiveThread>,
    slot: usize,
    cpu: u32,
    w: &Wakeup,
    cycle: u64,
    stats: &mut Stats,
    hist: &mut Histogram<u64>,
    buckets: &mut UsBuckets,
) -> bool {
    let new_max = stats.record(w, cycle, hist);
    let worst = stats.worst.wants(w.latency_ns);
    if new_max || worst {
        let wall_ns = rt::realtime_ns();
        if new_max {
            stats.max_wall_ns = wall_ns;
        }
        if worst {
            stats.worst.insert(Spike {
                latency_ns: w.latency_ns.unsigned_abs(),
                cycle,
                wall_ns,
            });
        }
    }
    buckets.record(w.latency_ns, cycle);
    if let Some(live) = live {
        live.window_max_ns
            .fetch_max(u64::try_from(w.latency_ns).unwrap_or(0), Ordering::Relaxed);
        if let Some(x) = sh.exchange.get(slot) {
            hand_over(x, hist, stats);
        }
        live.samples.store(stats.samples, Ordering::Relaxed);
        live.last_ns.store(w.latency_ns, Ordering::Relaxed);
        live.max_ns.store(stats.max_ns, Ordering::Relaxed);
        live.min_ns.store(stats.min_ns, Ordering::Relaxed);
        live.sum_ns.store(
            u64::try_from(stats.sum_ns).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        live.missed.store(stats.missed, Ordering::Relaxed);
        if let Some(bound) = sh.cfg.breaktrace_ns {
            if w.latency_ns > 0 && w.latency_ns.unsigned_abs() > bound {
                breaktrace(sh, cpu, w.latency_ns.unsigned_abs());
                return true;
            }
        }
    }
    false
}

/// Swap the interval histogram out when the reporting thread asked for it (never waits).
#[inline]
fn hand_over(x: &Exchange, hist: &mut Histogram<u64>, stats: &Stats) {
    x.offer(|s| {
        std::mem::swap(hist, &mut s.hist);
        s.stats = *stats;
    });
}

/// Write `msg` (and a newline) to the trace marker, then stop tracing; formatted into a
/// stack buffer: this runs in a measurement thread.
pub(crate) fn mark_and_stop(f: &Ftrace, msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut buf = [0u8; 128];
    let len = {
        let mut w = &mut buf[..];
        let _ = w.write_fmt(msg);
        let _ = w.write_all(b"\n");
        128 - w.len()
    };
    f.mark(&buf[..len]);
    f.stop();
}

/// Mark the trace and stop tracing (first thread only), then stop the run.
fn breaktrace(sh: &Shared, cpu: u32, latency_ns: u64) {
    if sh
        .live
        .breaktrace_cpu
        .compare_exchange(0, cpu + 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        if let Some(f) = &sh.ftrace {
            mark_and_stop(
                f,
                format_args!(
                    "rt-guest: hit latency threshold ({} us > {} us) on cpu {cpu}",
                    latency_ns / 1000,
                    sh.cfg.breaktrace_ns.unwrap_or(0) / 1000
                ),
            );
        }
        sh.live.breaktrace_ns.store(latency_ns, Ordering::SeqCst);
    }
    sh.stop.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::sched::Policy;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            cpus: CpuSet::from_cpus([0]),
            interval_ns: 1_000_000,
            sched: SchedParams {
                policy: Policy::Other,
                priority: 0,
            },
            loops: Some(5),
            duration_ns: None,
            breaktrace_ns: None,
            hist_us: 100,
            report_cpus: None,
            checkpoint_ns: None,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.sched = SchedParams {
            policy: Policy::Fifo,
            priority: 0,
        };
        assert!(c.validate().unwrap_err().to_string().contains("priority"));
        // The profile's limit (profiles::validate::MIN_PROBE_INTERVAL_US), in both places.
        let mut c = cfg();
        c.interval_ns = 9_999;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "Invalid probe setting interval: 9 us is below the 10 us minimum"
        );
        c.interval_ns = u64::from(profiles::validate::MIN_PROBE_INTERVAL_US) * 1000;
        c.validate().expect("the profile's minimum is the probe's");
        let mut c = cfg();
        c.loops = Some(0);
        assert!(c.validate().unwrap_err().to_string().contains("loops"));
        c.loops = None;
        c.validate()
            .expect("neither loops nor duration: until stopped");
        let mut c = cfg();
        c.cpus = CpuSet::new();
        assert!(c.validate().is_err());
    }

    #[test]
    fn an_unprivileged_run_measures_every_loop() {
        // SCHED_OTHER needs no privilege: the engine itself runs in a plain `cargo test`.
        let c = ProbeConfig {
            cpus: CpuSet::from_cpus([sched::get_affinity(0).unwrap().iter().next().unwrap()]),
            loops: Some(20),
            ..cfg()
        };
        let live = Arc::new(Live::new(&c.cpus));
        let out = run(
            &c,
            None,
            Arc::new(AtomicBool::new(false)),
            live.clone(),
            Duration::from_secs(10),
            |_| {},
            |_| {},
        )
        .unwrap();
        assert_eq!(out.ending, Ending::Completed);
        let t = &out.threads[0];
        assert_eq!(t.stats.samples, 20);
        assert_eq!(t.hist.len() + t.stats.out_of_range, 20);
        assert_eq!(t.buckets.total() + t.buckets.overflows, 20);
        // The worst samples: the 16 largest of 20, the first one the max, each with a wall
        // time near the run's.
        let worst = t.stats.worst.sorted();
        assert_eq!(worst.len(), record::WORST_SAMPLES);
        assert_eq!(
            (worst[0].latency_ns, worst[0].cycle),
            (t.stats.max_ns, t.stats.max_cycle)
        );
        assert_eq!(worst[0].wall_ns, t.stats.max_wall_ns);
        assert!(worst
            .iter()
            .all(|w| w.wall_ns >= out.start_wall_ns && w.wall_ns <= out.end_wall_ns + 1_000_000));
        assert!(out.elapsed_ns >= 20 * c.interval_ns, "{}", out.elapsed_ns);
        assert_eq!(live.threads[0].samples.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn checkpoints_hold_everything_so_far_and_the_end_holds_the_whole_run() {
        let c = ProbeConfig {
            cpus: CpuSet::from_cpus([sched::get_affinity(0).unwrap().iter().next().unwrap()]),
            interval_ns: 1_000_000,
            loops: Some(2_600),
            checkpoint_ns: Some(1_000_000_000),
            ..cfg()
        };
        let mut seen: Vec<(u64, u64, u64)> = Vec::new();
        let out = run(
            &c,
            None,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Live::new(&c.cpus)),
            Duration::from_secs(10),
            |_| {},
            |cp| {
                let t = &cp.threads[0];
                seen.push((
                    cp.number,
                    t.stats.samples,
                    t.hist.len() + t.stats.out_of_range,
                ));
            },
        )
        .unwrap();
        // About one checkpoint a second over at least 2.6 s (more on a loaded machine).
        assert!(!seen.is_empty(), "{seen:?}");
        let mut before = 0;
        for (i, (n, samples, in_hist)) in seen.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1);
            assert_eq!(samples, in_hist, "the histogram holds every sample counted");
            assert!(*samples > before && *samples < 2_600, "{seen:?}");
            before = *samples;
        }
        let t = &out.threads[0];
        assert_eq!(t.stats.samples, 2_600);
        assert_eq!(
            t.hist.len() + t.stats.out_of_range,
            2_600,
            "nothing lost in the swaps"
        );
    }

    #[test]
    fn the_stop_flag_ends_a_run_within_a_period() {
        let c = ProbeConfig {
            cpus: CpuSet::from_cpus([sched::get_affinity(0).unwrap().iter().next().unwrap()]),
            loops: None,
            duration_ns: Some(60_000_000_000),
            ..cfg()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::new(&c.cpus));
        let s2 = stop.clone();
        let out = run(
            &c,
            None,
            stop,
            live,
            Duration::from_millis(20),
            move |l| {
                if l.threads[0].samples.load(Ordering::Relaxed) >= 3 {
                    s2.store(true, Ordering::SeqCst);
                }
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(out.ending, Ending::Stopped);
        assert!(out.threads[0].stats.samples >= 3);
        assert!(out.elapsed_ns < 10_000_000_000);
    }
}
