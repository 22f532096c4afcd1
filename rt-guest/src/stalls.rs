//! The self-test of `rt-guest oslat`: inject stalls of a known size and check that the
//! busy loop reports them, by count and by size.
//!
//! Phase 1 runs the loop alone (baseline). Phase 2 adds, on the same CPU, a SCHED_FIFO
//! thread 5 priorities above the loop that wakes every `every` (`clock_nanosleep(2)` on
//! `CLOCK_MONOTONIC`) and busy-spins for D: the loop cannot read the clock meanwhile, so
//! each injection is one gap of at least D. A gap counts as a detected stall when it lies
//! in [0.8 D, 1.5 D]. An injector that woke more than a quarter of D late (RT throttling,
//! a host preemption) does not spin and does not count a stall; one that was itself held
//! off while it spun (its stall ended more than 1.25 D after the wakeup was due, so the
//! loop's gap may lie above the window) counts it as disturbed, not injected. Both are
//! reported, and both widen the "no stalls are invented" bound, as such a gap may still
//! land in the window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rt_sys::rt;
use rt_sys::sched::{self, Policy, SchedParams};
use rt_sys::CpuSet;

use crate::oslat::{self, Gaps, OslatConfig};
use crate::probe::{Live, ProbeError};
use crate::selftest::{median_between, Check};

/// How the self-test disturbs the loop.
#[derive(Debug, Clone, PartialEq)]
pub struct StallConfig {
    /// The loop's settings (one CPU).
    pub loop_cfg: OslatConfig,
    /// Injected stall, ns.
    pub delay_ns: u64,
    /// Period of the injections, ns.
    pub every_ns: u64,
}

/// The result (printed, and kept in the manifest as `environment.oslat_selftest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallResult {
    /// All checks passed.
    pub passed: bool,
    /// CPU.
    pub cpu: u32,
    /// Injected stall, us.
    pub delay_us: f64,
    /// Period of the injections, us.
    pub every_us: f64,
    /// Baseline gaps in the detection window.
    pub baseline_in_window: u64,
    /// Baseline max gap, us.
    pub baseline_max_us: f64,
    /// Stalls injected.
    pub injected: u64,
    /// Injections skipped because the injector woke late.
    pub injected_late: u64,
    /// Stalls the injector spun but was held off in (they ended later than 1.25 D after
    /// the wakeup was due), so not counted as injected.
    #[serde(default)]
    pub injected_disturbed: u64,
    /// Gaps in the detection window in the injection phase.
    pub detected: u64,
    /// Their median, us.
    pub detected_median_us: f64,
    /// Max gap in the injection phase, us.
    pub max_us: f64,
    /// The checks.
    pub checks: Vec<Check>,
}

fn us(ns: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // gaps are far below 2^52 ns
    let v = ns as f64 / 1000.0;
    v
}

/// Margin of the size check, ns.
const SIZE_MARGIN_NS: u64 = 50_000;

/// What the injector did: stalls of the intended size, wakeups too late to spin, and
/// stalls that were stretched while the injector spun.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injections {
    /// Stalls of D that ended within 1.25 D of their due time.
    pub injected: u64,
    /// Wakeups more than D/4 late (no stall).
    pub late: u64,
    /// Stalls that ended later than 1.25 D after their due time.
    pub disturbed: u64,
}

/// Judge the two phases (pure: tested without root).
pub fn judge(cfg: &StallConfig, baseline: &Gaps, run: &Gaps, inj: Injections) -> StallResult {
    let Injections {
        injected,
        late,
        disturbed,
    } = inj;
    let d = cfg.delay_ns;
    let (low, high) = (d * 4 / 5, d * 3 / 2);
    let base_in = baseline.hist.count_between(low, high);
    let detected = run.hist.count_between(low, high);
    let median = median_between(&run.hist, low, high);
    let tol = (injected / 20).max(2);
    let upper = injected + late + disturbed + 2 * base_in + tol;
    let checks = vec![
        Check {
            name: "every injected stall is seen".into(),
            passed: injected > 0 && detected + tol >= injected,
            detail: format!(
                "detected {detected} gaps in [{:.0}, {:.0}] us for {injected} stalls (at least {})",
                us(low),
                us(high),
                injected.saturating_sub(tol)
            ),
        },
        Check {
            name: "no stalls are invented".into(),
            passed: detected <= upper,
            detail: format!(
                "detected {detected} <= {upper} (injected {injected} + late {late} + disturbed {disturbed} + 2 x baseline {base_in} + {tol})"
            ),
        },
        Check {
            name: "the stalls are measured at their size".into(),
            passed: median >= d && median <= d + SIZE_MARGIN_NS,
            detail: format!(
                "median of the detected gaps {:.1} us, expected {:.1} .. {:.1} us",
                us(median),
                us(d),
                us(d + SIZE_MARGIN_NS)
            ),
        },
        Check {
            name: "the max shows the stall".into(),
            passed: run.max_ns >= d,
            detail: format!("max {:.1} us, expected >= {:.1} us", us(run.max_ns), us(d)),
        },
    ];
    StallResult {
        passed: checks.iter().all(|c| c.passed),
        cpu: cfg.loop_cfg.cpus.iter().next().unwrap_or(0),
        delay_us: us(d),
        every_us: us(cfg.every_ns),
        baseline_in_window: base_in,
        baseline_max_us: us(baseline.max_ns),
        injected,
        injected_late: late,
        injected_disturbed: disturbed,
        detected,
        detected_median_us: us(median),
        max_us: us(run.max_ns),
        checks,
    }
}

/// [`Injections`] as the injector thread counts them.
#[derive(Default)]
struct Counts {
    injected: AtomicU64,
    late: AtomicU64,
    disturbed: AtomicU64,
}

impl Counts {
    fn load(&self) -> Injections {
        Injections {
            injected: self.injected.load(Ordering::SeqCst),
            late: self.late.load(Ordering::SeqCst),
            disturbed: self.disturbed.load(Ordering::SeqCst),
        }
    }
}

fn inject(cfg: &StallConfig, cpu: u32, stop: &AtomicBool, counts: &Counts) -> Result<(), String> {
    let prio = cfg.loop_cfg.sched.priority.max(1) + 5;
    sched::set_affinity(0, &CpuSet::from_cpus([cpu]))
        .and_then(|()| {
            sched::set_sched(
                0,
                SchedParams {
                    policy: Policy::Fifo,
                    priority: prio,
                },
            )
        })
        .map_err(|e| e.to_string())?;
    rt::prefault_stack();
    let start = rt::monotonic_ns() + 20_000_000;
    let end = start + cfg.loop_cfg.duration_ns.saturating_sub(40_000_000);
    let mut t = start;
    while t < end && !stop.load(Ordering::Relaxed) {
        while rt::sleep_until_monotonic(t).is_err() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        let woke = rt::monotonic_ns();
        if woke - t > cfg.delay_ns / 4 {
            counts.late.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut now = woke;
            while now < woke + cfg.delay_ns {
                std::hint::spin_loop();
                now = rt::monotonic_ns();
            }
            let stretched = now - t > cfg.delay_ns + cfg.delay_ns / 4;
            let n = if stretched {
                &counts.disturbed
            } else {
                &counts.injected
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
        t += cfg.every_ns;
    }
    Ok(())
}

fn one_run(cfg: &OslatConfig, stop: &Arc<AtomicBool>) -> Result<Gaps, ProbeError> {
    let live = Arc::new(Live::new(&cfg.cpus));
    let out = oslat::run(
        cfg,
        None,
        stop.clone(),
        live,
        Duration::from_secs(3600),
        |_| {},
        |_| {},
    )?;
    Ok(out
        .threads
        .into_iter()
        .next()
        .map(|t| t.gaps)
        .unwrap_or_else(|| Gaps::new(4)))
}

/// Run the baseline and the injection phase and judge them.
pub fn run(cfg: &StallConfig, stop: Arc<AtomicBool>) -> Result<StallResult, ProbeError> {
    let cpu = match (cfg.loop_cfg.cpus.len(), cfg.loop_cfg.cpus.iter().next()) {
        (1, Some(c)) => c,
        _ => {
            return Err(ProbeError::Setting {
                setting: "selftest",
                detail: "the self-test runs on one CPU: give one in -c".into(),
            })
        }
    };
    if cfg.delay_ns == 0 || cfg.delay_ns * 2 >= cfg.every_ns {
        return Err(ProbeError::Setting {
            setting: "selftest",
            detail: format!(
                "a stall of {} us every {} us: the stall must be below half its period",
                cfg.delay_ns / 1000,
                cfg.every_ns / 1000
            ),
        });
    }
    let baseline = one_run(&cfg.loop_cfg, &stop)?;
    let counts = Arc::new(Counts::default());
    let handle = {
        let (c, s, n) = (cfg.clone(), stop.clone(), counts.clone());
        std::thread::Builder::new()
            .name(format!("stall/{cpu}"))
            .stack_size(256 * 1024)
            .spawn(move || inject(&c, cpu, &s, &n))
            .map_err(|source| ProbeError::Spawn { cpu, source })?
    };
    let result = one_run(&cfg.loop_cfg, &stop);
    if result.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let injector = handle
        .join()
        .unwrap_or_else(|_| Err("the injector panicked".into()));
    let gaps = result?;
    injector.map_err(|detail| ProbeError::Setting {
        setting: "selftest injector",
        detail,
    })?;
    Ok(judge(cfg, &baseline, &gaps, counts.load()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StallConfig {
        StallConfig {
            loop_cfg: OslatConfig {
                cpus: CpuSet::from_cpus([1]),
                sched: SchedParams {
                    policy: Policy::Fifo,
                    priority: 90,
                },
                duration_ns: 3_000_000_000,
                buckets: 32,
                trace_threshold_ns: None,
                report_cpus: None,
                checkpoint_ns: None,
            },
            delay_ns: 200_000,
            every_ns: 10_000_000,
        }
    }

    /// A million 30 ns gaps plus `stalls` gaps of `size` ns.
    fn gaps(stalls: u64, size: u64) -> Gaps {
        let mut g = Gaps::new(32);
        for _ in 0..1_000_000 {
            g.record(30);
        }
        for _ in 0..stalls {
            g.record(size);
        }
        g
    }

    fn n(injected: u64) -> Injections {
        Injections {
            injected,
            ..Injections::default()
        }
    }

    #[test]
    fn a_loop_that_sees_the_stalls_passes() {
        let r = judge(&cfg(), &gaps(0, 0), &gaps(300, 203_000), n(300));
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.detected, 300);
        assert!((r.detected_median_us - 203.0).abs() < 0.5, "{r:#?}");
    }

    #[test]
    fn a_loop_that_misses_shrinks_or_invents_stalls_fails() {
        let base = gaps(0, 0);
        let r = judge(&cfg(), &base, &gaps(100, 203_000), n(300));
        assert!(!r.checks[0].passed, "missed 200 of 300: {r:#?}");
        let r = judge(&cfg(), &base, &gaps(300, 170_000), n(300));
        assert!(
            r.checks[0].passed && !r.checks[2].passed,
            "too small: {r:#?}"
        );
        let r = judge(&cfg(), &base, &gaps(300, 290_000), n(300));
        assert!(!r.checks[2].passed, "too large: {r:#?}");
        let r = judge(&cfg(), &base, &gaps(600, 203_000), n(300));
        assert!(!r.checks[1].passed, "invented: {r:#?}");
        assert!(
            !judge(&cfg(), &base, &gaps(0, 0), n(0)).passed,
            "nothing injected"
        );
    }

    #[test]
    fn disturbed_stalls_are_neither_required_nor_invented() {
        // 300 wakeups: 280 clean stalls seen, 20 stretched past the window by the host.
        let inj = Injections {
            injected: 280,
            late: 0,
            disturbed: 20,
        };
        let r = judge(&cfg(), &gaps(0, 0), &gaps(280, 203_000), inj);
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.injected_disturbed, 20);
        // Counted as injected, the same 20 would be missed stalls.
        let r = judge(&cfg(), &gaps(0, 0), &gaps(280, 203_000), n(300));
        assert!(!r.checks[0].passed, "{r:#?}");
        // Some of the disturbed ones landing in the window are not invented stalls.
        let r = judge(&cfg(), &gaps(0, 0), &gaps(300, 203_000), inj);
        assert!(r.checks[1].passed, "{r:#?}");
    }
}
