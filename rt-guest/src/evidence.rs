//! Turning rt-guest's results into the run-record format: the probe run into
//! `probe.json` (see `record::ProbeRecord`: HDR summaries with the exact min, mean and max
//! beside the histogram's, the cycle and wall time of the max, missed periods and
//! out-of-range counts), `rt-guest check` into a `record::CheckReport` and the self-test
//! into a `record::SelftestSummary`.

use record::hist::{Exact, HistSummary};
use record::{
    CheckItem, CheckReport, CheckStatus, ProbeRecord, ProbeSettings, ProbeThread, SelftestCheck,
    SelftestSummary,
};
use rt_sys::kernel::KernelFacts;

use hdrhistogram::Histogram;
use rt_sys::sched::SchedParams;

use crate::guest::{Report, Status};
use crate::latency::Stats;
use crate::probe::{Checkpoint, Outcome, ProbeConfig, ThreadResult};
use crate::selftest::SelftestResult;

/// RFC 3339 UTC (with ns) of a `CLOCK_REALTIME` value in ns.
pub fn rfc3339(wall_ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The record of one thread. The HDR summary keeps the histogram's own min, max and
/// percentiles (what any HdrHistogram tool decodes from it); the exact min, mean and max
/// (the max also counting values above the histogram range) go into `latency.exact`.
pub fn thread_record(t: &ThreadResult) -> ProbeThread {
    thread_parts(t.cpu, t.tid, t.sched, &t.stats, &t.hist)
}

/// [`thread_record`] from its parts (a checkpoint has no [`ThreadResult`]).
pub fn thread_parts(
    cpu: u32,
    tid: u32,
    sched: SchedParams,
    s: &Stats,
    hist: &Histogram<u64>,
) -> ProbeThread {
    let mut latency = HistSummary::from_hist(hist);
    if s.samples > 0 {
        latency.exact = Some(Exact {
            min_ns: s.min_or_zero(),
            max_ns: s.max_ns,
            mean_ns: s.mean_ns(),
        });
    }
    ProbeThread {
        cpu,
        tid,
        policy: sched.policy.to_string(),
        priority: sched.priority,
        samples: s.samples,
        missed_periods: s.missed,
        out_of_range: s.out_of_range,
        max_at_cycle: s.max_cycle,
        max_at: (s.samples > 0 && s.max_wall_ns > 0).then(|| rfc3339(s.max_wall_ns)),
        worst: s
            .worst
            .sorted()
            .into_iter()
            .map(|x| record::ProbeSpike {
                latency_ns: x.latency_ns,
                cycle: x.cycle,
                wall_ns: x.wall_ns,
            })
            .collect(),
        latency,
    }
}

/// The record's status for a guest check status.
pub fn check_status(s: Status) -> CheckStatus {
    match s {
        Status::Ok => CheckStatus::Ok,
        Status::Warn => CheckStatus::Warn,
        Status::Bad => CheckStatus::Bad,
        Status::NotPresent => CheckStatus::NotPresent,
        Status::NotPermitted => CheckStatus::NotPermitted,
        Status::Info => CheckStatus::Info,
    }
}

/// `rt-guest check` as the run record keeps it (and `check --json` prints it).
pub fn check_report(r: &Report, kernel: Option<KernelFacts>) -> CheckReport {
    CheckReport {
        tool: "rt-guest check".into(),
        profile: r.profile.clone(),
        kernel,
        items: r
            .items
            .iter()
            .map(|i| CheckItem {
                name: i.name.clone(),
                target: None,
                status: check_status(i.status),
                current: i.current.clone(),
                desired: i.desired.clone(),
                detail: (!i.detail.is_empty()).then(|| i.detail.clone()),
            })
            .collect(),
    }
}

/// The self-test as the run record keeps it (`environment.selftest`).
pub fn selftest_summary(r: &SelftestResult) -> SelftestSummary {
    SelftestSummary {
        passed: r.passed,
        cpu: r.cpu,
        interval_us: r.interval_us,
        delay_us: r.delay_us,
        every: r.every,
        injected: r.injected,
        detected: r.detected,
        max_us: r.max_us,
        baseline_max_us: r.baseline_max_us,
        missed_periods: r.missed_periods,
        checks: r
            .checks
            .iter()
            .map(|c| SelftestCheck {
                name: c.name.clone(),
                passed: c.passed,
                detail: c.detail.clone(),
            })
            .collect(),
    }
}

/// The whole `probe.json`.
pub fn probe_record(
    cfg: &ProbeConfig,
    mlock: bool,
    dma_latency_held: bool,
    out: &Outcome,
    partial: bool,
) -> ProbeRecord {
    let threads = out.threads.iter().map(thread_record).collect();
    record_of(
        cfg,
        mlock,
        dma_latency_held,
        threads,
        out.elapsed_ns,
        partial,
    )
}

/// `probe.json` at a checkpoint: complete up to it, marked partial (the run goes on).
pub fn checkpoint_record(
    cfg: &ProbeConfig,
    mlock: bool,
    dma_latency_held: bool,
    cp: &Checkpoint<'_>,
) -> ProbeRecord {
    let threads = cp
        .threads
        .iter()
        .map(|t| thread_parts(t.cpu, t.tid, cfg.sched, &t.stats, t.hist))
        .collect();
    record_of(cfg, mlock, dma_latency_held, threads, cp.elapsed_ns, true)
}

fn record_of(
    cfg: &ProbeConfig,
    mlock: bool,
    dma_latency_held: bool,
    threads: Vec<ProbeThread>,
    elapsed_ns: u64,
    partial: bool,
) -> ProbeRecord {
    #[allow(clippy::cast_precision_loss)] // ns of a run fit a double exactly enough
    let secs = |ns: u64| ns as f64 / 1e9;
    ProbeRecord {
        settings: ProbeSettings {
            interval_ns: cfg.interval_ns,
            policy: cfg.sched.policy.to_string(),
            priority: cfg.sched.priority,
            duration_s: cfg.duration_ns.map(secs),
            loops: cfg.loops,
            mlock,
            dma_latency_held,
            clock: "CLOCK_MONOTONIC, clock_nanosleep TIMER_ABSTIME".into(),
        },
        threads,
        elapsed_s: secs(elapsed_ns),
        partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyclictest::tests::result;
    use crate::probe::Ending;
    use rt_sys::sched::{Policy, SchedParams};
    use rt_sys::CpuSet;

    #[test]
    fn record_has_exact_extremes_and_the_histogram() {
        let t = result(1, 100, &[12_345, 20_001, 98_765_432, -4]);
        let out = Outcome {
            threads: vec![t],
            start_wall_ns: 0,
            end_wall_ns: 0,
            elapsed_ns: 2_500_000_000,
            ending: Ending::Completed,
            breaktrace: None,
        };
        let cfg = ProbeConfig {
            cpus: CpuSet::from_cpus([1]),
            interval_ns: 1_000_000,
            sched: SchedParams {
                policy: Policy::Fifo,
                priority: 90,
            },
            loops: Some(4),
            duration_ns: None,
            breaktrace_ns: None,
            hist_us: 100,
            report_cpus: None,
            checkpoint_ns: None,
        };
        let r = probe_record(&cfg, true, true, &out, false);
        let th = &r.threads[0];
        assert_eq!(th.samples, 4);
        assert_eq!(th.out_of_range, 1);
        assert_eq!(th.latency.samples, 3);
        let exact = th.latency.exact.unwrap();
        assert_eq!(exact.min_ns, 12_345);
        assert_eq!(exact.max_ns, 98_765_432);
        // The histogram's own values: bucket edges, what an HdrHistogram tool decodes.
        let h = th.latency.histogram().unwrap();
        assert_eq!(th.latency.max_ns, h.max());
        assert_eq!(th.latency.min_ns, h.min());
        assert_ne!(th.latency.max_ns, exact.max_ns);
        assert_eq!(th.max_at_cycle, 2);
        assert_eq!(th.policy, "fifo");
        assert_eq!(th.latency.histogram().unwrap().len(), 3);
        assert!((r.elapsed_s - 2.5).abs() < 1e-9);
        assert_eq!(rfc3339(1_795_667_925_000_000_000), "2026-11-26T04:38:45Z");
    }

    #[test]
    fn guest_statuses_map_to_the_record_and_warn_stays_ok() {
        let mut r = Report {
            profile: Some("lab".into()),
            items: vec![],
        };
        for (s, kebab) in [
            (Status::Ok, "ok"),
            (Status::Warn, "warn"),
            (Status::Bad, "bad"),
            (Status::NotPresent, "not-present"),
            (Status::NotPermitted, "not-permitted"),
            (Status::Info, "info"),
        ] {
            assert_eq!(check_status(s).as_str(), kebab);
            r.items.push(crate::guest::Item {
                name: kebab.into(),
                status: s,
                current: "x".into(),
                desired: None,
                detail: String::new(),
            });
        }
        let c = check_report(&r, None);
        let not_ok: Vec<&str> = c.not_ok().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(not_ok, ["bad", "not-permitted"]);
        assert_eq!(c.items[1].detail, None);
    }
}
