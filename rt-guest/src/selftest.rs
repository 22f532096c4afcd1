//! The probe's self-test: inject known delays and check that the probe reports them.
//!
//! Phase 1 measures a baseline. Phase 2 adds, on the same CPU, a SCHED_FIFO thread of
//! higher priority that wakes shortly before every k-th programmed wakeup of the probe
//! (`clock_nanosleep(2)` on `CLOCK_MONOTONIC`, the same grid) and busy-spins until D us
//! after it. The probe's timer fires while the CPU is busy, so that wakeup is at least D
//! late. The probe's histogram must then hold about one sample >= 0.8 D per injection,
//! and its max must be at least D (and, when it falls on an injected cycle, no more than
//! D plus the baseline max plus a margin).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rt_sys::rt;
use rt_sys::sched::{self, Policy, SchedParams};
use rt_sys::CpuSet;

use crate::probe::{self, Live, Outcome, ProbeConfig, ProbeError};

/// How the self-test disturbs the probe.
#[derive(Debug, Clone, PartialEq)]
pub struct SelftestConfig {
    /// The CPU measured and disturbed.
    pub cpu: u32,
    /// Probe period, ns.
    pub interval_ns: u64,
    /// Injected delay, ns.
    pub delay_ns: u64,
    /// Inject every k-th period.
    pub every: u64,
    /// Wakeups per phase.
    pub loops: u64,
    /// Probe priority (FIFO); the injector runs 5 above.
    pub priority: u32,
    /// CPUs for the reporting thread.
    pub report_cpus: Option<CpuSet>,
}

/// How early before the probe's wakeup the injector wakes: a quarter period (250 us at
/// 1 ms), room for the injector's own wakeup latency.
fn lead_ns(interval_ns: u64) -> u64 {
    interval_ns / 4
}
/// Margin for the size check, ns.
const SIZE_MARGIN_NS: u64 = 50_000;

/// One check of the self-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What.
    pub name: String,
    /// Passed.
    pub passed: bool,
    /// The numbers.
    pub detail: String,
}

/// The tolerance the checks use, stated in the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// A sample counts as a detected delay when it is at least this many us (0.8 D) ...
    pub window_low_us: f64,
    /// ... and at most this many (1.5 D): an injected delay shows as D plus a wakeup.
    pub window_high_us: f64,
    /// detected must be >= injected - this.
    pub count_below: u64,
    /// detected must be <= injected + late injections + 2 x baseline samples in the
    /// window + this.
    pub count_above: u64,
    /// The max must be at least this many us.
    pub max_low_us: f64,
    /// The median of the detected delays must be at least this (D) ...
    pub size_low_us: f64,
    /// ... and at most this many us (D + baseline p99 + 50 us).
    pub size_high_us: f64,
}

/// The result (printed as JSON, kept in the manifest as `environment.selftest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestResult {
    /// All checks passed.
    pub passed: bool,
    /// CPU.
    pub cpu: u32,
    /// Period, us.
    pub interval_us: u64,
    /// Injected delay, us.
    pub delay_us: f64,
    /// Every k-th period.
    pub every: u64,
    /// Wakeups per phase.
    pub loops: u64,
    /// Baseline: samples in the detection window.
    pub baseline_above: u64,
    /// Baseline max, us.
    pub baseline_max_us: f64,
    /// Baseline p99, us.
    pub baseline_p99_us: f64,
    /// Delays injected (the injector was spinning when the probe's timer fired).
    pub injected: u64,
    /// Injections skipped because the injector itself woke too late.
    pub injected_late: u64,
    /// Samples in the detection window in the injection phase.
    pub detected: u64,
    /// Max in the injection phase, us.
    pub max_us: f64,
    /// Its cycle.
    pub max_at_cycle: u64,
    /// True when the max fell on an injected cycle.
    pub max_on_injected_cycle: bool,
    /// Median of the samples in the detection window (the measured delays), us.
    pub detected_median_us: f64,
    /// Missed periods in the injection phase.
    pub missed_periods: u64,
    /// The tolerance.
    pub tolerance: Tolerance,
    /// The checks.
    pub checks: Vec<Check>,
}

fn us(ns: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // latencies are far below 2^52 ns
    let v = ns as f64 / 1000.0;
    v
}

/// The median of the values of `h` in `[low, high]` (0 when there are none): the size of
/// the injected delays, which a stray spike of the machine does not move as it moves a max.
pub fn median_between(h: &hdrhistogram::Histogram<u64>, low: u64, high: u64) -> u64 {
    let inside = h.count_between(low, high);
    if inside == 0 {
        return 0;
    }
    let below = h.count_between(0, low.saturating_sub(1));
    #[allow(clippy::cast_precision_loss)] // sample counts
    let q = (below + inside.div_ceil(2)) as f64 / h.len().max(1) as f64;
    h.value_at_quantile(q.min(1.0))
}

/// True when grid period `g` (0-based) gets a delay.
pub fn injected_cycle(g: u64, every: u64) -> bool {
    every > 0 && g % every == every - 1
}

/// Judge the two phases (pure: tested without root).
pub fn judge(
    cfg: &SelftestConfig,
    baseline: &Outcome,
    run: &Outcome,
    injected: u64,
    injected_late: u64,
) -> SelftestResult {
    // The window [0.8 D, 1.5 D]: every injected delay lands in it (D plus the probe's
    // wakeup), most of the machine's own spikes do not.
    let (low, high_w) = (cfg.delay_ns * 4 / 5, cfg.delay_ns * 3 / 2);
    let above = |o: &Outcome| -> u64 {
        o.threads
            .first()
            .map(|t| t.hist.count_between(low, high_w))
            .unwrap_or(0)
    };
    let b = baseline.threads.first();
    let baseline_max = b.map(|t| t.stats.max_ns).unwrap_or(0);
    let baseline_p99 = b
        .filter(|t| !t.hist.is_empty())
        .map(|t| t.hist.value_at_percentile(99.0))
        .unwrap_or(0);
    let baseline_above = above(baseline);
    let detected = above(run);
    let t = run.threads.first();
    let max = t.map(|t| t.stats.max_ns).unwrap_or(0);
    let max_cycle = t.map(|t| t.stats.max_cycle).unwrap_or(0);
    let missed = t.map(|t| t.stats.missed).unwrap_or(0);
    let on_injected = injected_cycle(max_cycle, cfg.every);

    // 5 % of the injections: this VM's own wakeups land in the window now and then, in
    // bursts.
    let count_below = (injected / 20).max(2);
    let count_above = count_below;
    // The median of the detected delays: D plus the probe's wakeup after the injector
    // stops. Unlike the max, a host preemption of this VM does not move it.
    let median = t.map_or(0, |t| median_between(&t.hist, low, high_w));
    let high = cfg.delay_ns + baseline_p99 + SIZE_MARGIN_NS;
    let tolerance = Tolerance {
        window_low_us: us(low),
        window_high_us: us(high_w),
        count_below,
        count_above,
        max_low_us: us(cfg.delay_ns),
        size_low_us: us(cfg.delay_ns),
        size_high_us: us(high),
    };
    let checks = checks(&Seen {
        delay_ns: cfg.delay_ns,
        window_ns: (low, high_w),
        high_ns: high,
        count_below,
        count_above,
        injected,
        injected_late,
        baseline_above,
        detected,
        median_ns: median,
        max_ns: max,
        max_cycle,
        on_injected,
    });
    SelftestResult {
        passed: checks.iter().all(|c| c.passed),
        cpu: cfg.cpu,
        interval_us: cfg.interval_ns / 1000,
        delay_us: us(cfg.delay_ns),
        every: cfg.every,
        loops: cfg.loops,
        baseline_above,
        baseline_max_us: us(baseline_max),
        baseline_p99_us: us(baseline_p99),
        injected,
        injected_late,
        detected,
        max_us: us(max),
        max_at_cycle: max_cycle,
        max_on_injected_cycle: on_injected,
        detected_median_us: us(median),
        missed_periods: missed,
        tolerance,
        checks,
    }
}

/// What the self-test saw, for its checks (times in ns).
struct Seen {
    delay_ns: u64,
    /// The window every injected delay lands in.
    window_ns: (u64, u64),
    /// The largest size a detected delay may have.
    high_ns: u64,
    count_below: u64,
    count_above: u64,
    injected: u64,
    injected_late: u64,
    baseline_above: u64,
    detected: u64,
    median_ns: u64,
    max_ns: u64,
    max_cycle: u64,
    on_injected: bool,
}

/// The four checks of the self-test.
fn checks(s: &Seen) -> Vec<Check> {
    let (low, high_w) = s.window_ns;
    let upper = s.injected + s.injected_late + 2 * s.baseline_above + s.count_above;
    vec![
        Check {
            name: "every injected delay is seen".into(),
            passed: s.detected + s.count_below >= s.injected && s.injected > 0,
            detail: format!(
                "detected {} samples in [{:.0}, {:.0}] us for {} injections (at least {})",
                s.detected,
                us(low),
                us(high_w),
                s.injected,
                s.injected.saturating_sub(s.count_below)
            ),
        },
        Check {
            name: "no delays are invented".into(),
            passed: s.detected <= upper,
            detail: format!(
                "detected {} <= {upper} (injected {} + late {} + 2 x baseline {} + {})",
                s.detected, s.injected, s.injected_late, s.baseline_above, s.count_above
            ),
        },
        Check {
            name: "the delays are measured at their size".into(),
            passed: s.median_ns >= s.delay_ns && s.median_ns <= s.high_ns,
            detail: format!(
                "median of the detected delays {:.1} us, expected {:.1} .. {:.1} us (D .. D + baseline p99 + 50 us)",
                us(s.median_ns),
                us(s.delay_ns),
                us(s.high_ns)
            ),
        },
        Check {
            name: "the max shows the delay".into(),
            passed: s.max_ns >= s.delay_ns,
            detail: format!(
                "max {:.1} us at cycle {} ({}), expected >= {:.1} us",
                us(s.max_ns),
                s.max_cycle,
                if s.on_injected {
                    "an injected cycle"
                } else {
                    "not an injected cycle"
                },
                us(s.delay_ns),
            ),
        },
    ]
}

impl SelftestConfig {
    fn probe(&self) -> ProbeConfig {
        ProbeConfig {
            cpus: CpuSet::from_cpus([self.cpu]),
            interval_ns: self.interval_ns,
            sched: SchedParams {
                policy: Policy::Fifo,
                priority: self.priority,
            },
            loops: Some(self.loops),
            duration_ns: None,
            breaktrace_ns: None,
            hist_us: 1,
            report_cpus: self.report_cpus.clone(),
            checkpoint_ns: None,
        }
    }
}

struct Injector {
    injected: AtomicU64,
    late: AtomicU64,
    setup_error: std::sync::Mutex<Option<String>>,
}

fn inject(cfg: &SelftestConfig, live: &Live, stop: &AtomicBool, inj: &Injector) {
    let setup = sched::set_affinity(0, &CpuSet::from_cpus([cfg.cpu])).and_then(|()| {
        sched::set_sched(
            0,
            SchedParams {
                policy: Policy::Fifo,
                priority: cfg.priority + 5,
            },
        )
    });
    if let Err(e) = setup {
        if let Ok(mut s) = inj.setup_error.lock() {
            *s = Some(e.to_string());
        }
        return;
    }
    rt::prefault_stack();
    let mut start = live.start_ns.load(Ordering::SeqCst);
    while start == 0 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
        start = live.start_ns.load(Ordering::SeqCst);
    }
    let lead = lead_ns(cfg.interval_ns);
    let mut g = cfg.every - 1;
    while g < cfg.loops && !stop.load(Ordering::Relaxed) {
        let t = start + (g + 1) * cfg.interval_ns;
        while rt::sleep_until_monotonic(t - lead).is_err() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        if rt::monotonic_ns() >= t {
            inj.late.fetch_add(1, Ordering::Relaxed);
        } else {
            let end = t + cfg.delay_ns;
            while rt::monotonic_ns() < end {
                std::hint::spin_loop();
            }
            inj.injected.fetch_add(1, Ordering::Relaxed);
        }
        g += cfg.every;
    }
}

/// Run the baseline and the injection phase and judge them.
pub fn run(cfg: &SelftestConfig, stop: Arc<AtomicBool>) -> Result<SelftestResult, ProbeError> {
    if cfg.every < 2 || cfg.delay_ns + lead_ns(cfg.interval_ns) >= cfg.interval_ns {
        return Err(ProbeError::Setting {
            setting: "selftest",
            detail: format!(
                "delay {} us plus a quarter period must fit in the {} us period, and k >= 2",
                cfg.delay_ns / 1000,
                cfg.interval_ns / 1000
            ),
        });
    }
    let pcfg = cfg.probe();
    let quiet = |_: &Live| {};
    let live = Arc::new(Live::new(&pcfg.cpus));
    let baseline = probe::run(
        &pcfg,
        None,
        stop.clone(),
        live,
        Duration::from_secs(3600),
        quiet,
        |_| {},
    )?;

    let live = Arc::new(Live::new(&pcfg.cpus));
    let inj = Arc::new(Injector {
        injected: AtomicU64::new(0),
        late: AtomicU64::new(0),
        setup_error: std::sync::Mutex::new(None),
    });
    let handle = {
        let cpu = cfg.cpu;
        let (cfg, live, stop, inj) = (cfg.clone(), live.clone(), stop.clone(), inj.clone());
        std::thread::Builder::new()
            .name(format!("inject/{cpu}"))
            .stack_size(256 * 1024)
            .spawn(move || inject(&cfg, &live, &stop, &inj))
            .map_err(|source| ProbeError::Spawn { cpu, source })?
    };
    let result = probe::run(
        &pcfg,
        None,
        stop.clone(),
        live,
        Duration::from_secs(3600),
        quiet,
        |_| {},
    );
    if result.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let _ = handle.join();
    let run = result?;
    if let Some(e) = inj.setup_error.lock().ok().and_then(|s| s.clone()) {
        return Err(ProbeError::Setting {
            setting: "selftest injector",
            detail: e,
        });
    }
    Ok(judge(
        cfg,
        &baseline,
        &run,
        inj.injected.load(Ordering::SeqCst),
        inj.late.load(Ordering::SeqCst),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyclictest::tests::result;
    use crate::probe::Ending;

    fn outcome(lats: &[i64]) -> Outcome {
        Outcome {
            threads: vec![result(1, 1, lats)],
            start_wall_ns: 0,
            end_wall_ns: 0,
            elapsed_ns: 0,
            ending: Ending::Completed,
            breaktrace: None,
        }
    }

    fn cfg() -> SelftestConfig {
        SelftestConfig {
            cpu: 1,
            interval_ns: 1_000_000,
            delay_ns: 400_000,
            every: 10,
            loops: 100,
            priority: 90,
            report_cpus: None,
        }
    }

    /// 100 wakeups of 20 us, with the injected ones (cycle 9, 19, ...) at `injected_ns`.
    fn lats(injected_ns: i64, spikes: &[(usize, i64)]) -> Vec<i64> {
        let mut v: Vec<i64> = (0..100u64)
            .map(|c| {
                if injected_cycle(c, 10) {
                    injected_ns
                } else {
                    20_000
                }
            })
            .collect();
        for (c, l) in spikes {
            v[*c] = *l;
        }
        v
    }

    #[test]
    fn a_probe_that_sees_the_delays_passes() {
        let base = outcome(&lats(20_000, &[]));
        let r = judge(&cfg(), &base, &outcome(&lats(405_000, &[])), 10, 0);
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.detected, 10);
        assert!(r.max_on_injected_cycle);
        assert_eq!(r.max_at_cycle, 9);
    }

    #[test]
    fn a_probe_that_misses_or_invents_delays_fails() {
        let base = outcome(&lats(20_000, &[]));
        // Sees nothing (e.g. it measured the wrong clock).
        let r = judge(&cfg(), &base, &outcome(&lats(20_000, &[])), 10, 0);
        assert!(!r.passed);
        assert!(!r.checks[0].passed);
        // Reports the delays too large (e.g. a constant offset) or too small.
        let r = judge(&cfg(), &base, &outcome(&lats(560_000, &[])), 10, 0);
        assert!(r.checks[0].passed && !r.checks[2].passed, "{r:#?}");
        let r = judge(&cfg(), &base, &outcome(&lats(330_000, &[])), 10, 0);
        assert!(!r.checks[2].passed && !r.checks[3].passed, "{r:#?}");
        // Sees delays where there were none.
        let spikes: Vec<(usize, i64)> = (0..20).map(|i| (i * 4 + 1, 500_000)).collect();
        let r = judge(&cfg(), &base, &outcome(&lats(405_000, &spikes)), 10, 0);
        assert!(!r.checks[1].passed, "{r:#?}");
    }

    #[test]
    fn a_natural_spike_off_the_injected_cycles_is_allowed() {
        let base = outcome(&lats(20_000, &[(3, 900_000)]));
        let r = judge(
            &cfg(),
            &base,
            &outcome(&lats(405_000, &[(4, 2_000_000)])),
            10,
            0,
        );
        assert!(r.passed, "{r:#?}");
        assert!(!r.max_on_injected_cycle);
    }
}
