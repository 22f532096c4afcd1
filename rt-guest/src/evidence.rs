//! Turning a probe run into the run-record format (`probe.json`, see
//! `record::ProbeRecord`): HDR summaries with exact min, mean and max, the
//! cycle and wall time of the max, missed periods and out-of-range counts.

use record::hist::HistSummary;
use record::{ProbeRecord, ProbeSettings, ProbeThread};

use crate::probe::{Outcome, ProbeConfig, ThreadResult};

/// RFC 3339 UTC (with ns) of a `CLOCK_REALTIME` value in ns.
pub fn rfc3339(wall_ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The record of one thread. The HDR summary's min, max and mean are replaced by the
/// exact values (the histogram keeps 3 significant digits); the max also counts values
/// above the histogram range.
pub fn thread_record(t: &ThreadResult) -> ProbeThread {
    let s = &t.stats;
    let mut latency = HistSummary::from_hist(&t.hist);
    if s.in_range > 0 {
        latency.min_ns = s.min_or_zero();
        latency.mean_ns = s.mean_ns();
    }
    latency.max_ns = s.max_ns;
    // HDR percentiles are bucket upper bounds: never report one above the exact max.
    for v in latency.percentiles.values_mut() {
        *v = (*v).min(s.max_ns);
    }
    ProbeThread {
        cpu: t.cpu,
        tid: t.tid,
        policy: t.sched.policy.to_string(),
        priority: t.sched.priority,
        samples: s.samples,
        missed_periods: s.missed,
        out_of_range: s.out_of_range,
        max_at_cycle: s.max_cycle,
        max_at: (s.samples > 0 && s.max_wall_ns > 0).then(|| rfc3339(s.max_wall_ns)),
        latency,
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
        threads: out.threads.iter().map(thread_record).collect(),
        elapsed_s: secs(out.elapsed_ns),
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
        };
        let r = probe_record(&cfg, true, true, &out, false);
        let th = &r.threads[0];
        assert_eq!(th.samples, 4);
        assert_eq!(th.out_of_range, 1);
        assert_eq!(th.latency.samples, 3);
        assert_eq!(th.latency.min_ns, 12_345);
        assert_eq!(th.latency.max_ns, 98_765_432);
        assert_eq!(th.max_at_cycle, 2);
        assert_eq!(th.policy, "fifo");
        assert_eq!(th.latency.histogram().unwrap().len(), 3);
        assert!((r.elapsed_s - 2.5).abs() < 1e-9);
        assert_eq!(rfc3339(1_795_667_925_000_000_000), "2026-11-26T04:38:45Z");
    }
}
