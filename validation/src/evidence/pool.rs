//! Histograms pooled over runs (added losslessly, sized to the data), and the latency
//! distributions the reports chart. One key (CPU, CAN message) is pooled at a time, so
//! memory stays at one histogram however many messages the runs hold.

use std::collections::{BTreeMap, BTreeSet};

use hdrhistogram::Histogram;
use profiles::{Metric, Requirement};
use record::hist::{self, HistSummary};
use record::{msg_label, RecordError};

use super::environment::run_issues;
use super::{Bin, Distribution, EvidenceError, RunData, Trace};
use crate::fmt::{f, ns_to_us};

/// Histograms pooled over runs, with the runs and files they came from.
pub struct Pool {
    /// The pooled histogram.
    pub hist: Histogram<u64>,
    /// Files it rests on.
    pub trace: BTreeSet<Trace>,
    /// Why the runs it rests on are not valid evidence.
    pub issues: BTreeSet<String>,
    /// True once anything was added.
    pub found: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool {
            hist: hist::new_auto(),
            trace: BTreeSet::new(),
            issues: BTreeSet::new(),
            found: false,
        }
    }

    /// Note that `run`'s `file` contributes (without a histogram: counts).
    pub fn touch(&mut self, run: &RunData, file: &str) {
        self.trace.insert(run.trace(file));
        self.issues.extend(run_issues(run));
        self.found = true;
    }

    /// Add the histogram `s` (`what`: thread or message) of `run`'s `file`.
    pub fn add(
        &mut self,
        run: &RunData,
        file: &str,
        what: &str,
        s: &HistSummary,
    ) -> Result<(), EvidenceError> {
        let path = run.path.join(file);
        let err = |source| RecordError::Histogram {
            path: path.clone(),
            what: what.to_string(),
            source,
        };
        let h = s.histogram().map_err(err)?;
        hist::add(&mut self.hist, &h).map_err(err)?;
        self.touch(run, file);
        Ok(())
    }
}

/// Equal-width bins (1, 2, 5, 10, ... us) with at most ~400 bins up to the max.
pub fn bins(h: &Histogram<u64>) -> Vec<Bin> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_us = ns_to_us(h.max());
    let mut width = 1.0f64;
    let steps = [1.0, 2.0, 5.0];
    let mut i = 0usize;
    while max_us / width > 400.0 {
        i += 1;
        width = steps[i % 3] * 10f64.powi(i32::try_from(i / 3).unwrap_or(0));
    }
    let mut map: BTreeMap<u64, u64> = BTreeMap::new();
    for v in h.iter_recorded() {
        let us = ns_to_us(v.value_iterated_to());
        let k = record::floor_u64(us / width);
        *map.entry(k).or_default() += v.count_at_value();
    }
    map.into_iter()
        .map(|(k, count)| Bin {
            lo_us: f(k) * width,
            hi_us: f(k + 1) * width,
            count,
        })
        .collect()
}

/// The bounds (us) of the latency requirements that cover a probe CPU (`cpu`) or a CAN
/// message (`can_id`).
fn bounds(reqs: &[Requirement], cpu: Option<u32>, can_id: Option<u32>) -> Vec<f64> {
    let mut out: Vec<f64> = reqs
        .iter()
        .filter(|r| match (&r.metric, cpu, can_id) {
            (Metric::ProbeLatency { cpu: c, .. }, Some(k), _) => c.is_none_or(|c| c == k),
            (Metric::CanLatency { id, .. }, _, Some(k)) => id.is_none_or(|i| i == k),
            _ => false,
        })
        .filter_map(|r| r.bound_us)
        .collect();
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

/// The distribution of `pool` named `label`.
pub fn distribution(label: String, pool: &Pool) -> Distribution {
    let h = &pool.hist;
    let e = h.is_empty();
    let at = |p| ns_to_us(hist::value_at_percentile(h, p));
    Distribution {
        label,
        samples: h.len(),
        min_us: if e { 0.0 } else { ns_to_us(h.min()) },
        max_us: if e { 0.0 } else { ns_to_us(h.max()) },
        mean_us: if e { 0.0 } else { h.mean() / 1000.0 },
        p99_us: at(99.0),
        p9999_us: at(99.99),
        bins: bins(h),
        bounds_us: Vec::new(),
        trace: pool.trace.iter().cloned().collect(),
    }
}

/// One pooled probe CPU.
fn cpu_pool(runs: &[RunData], cpu: u32) -> Result<Pool, EvidenceError> {
    let mut pool = Pool::new();
    for run in runs {
        for t in run
            .probe
            .iter()
            .flat_map(|p| &p.threads)
            .filter(|t| t.cpu == cpu)
        {
            pool.add(run, record::PROBE, &format!("CPU {cpu}"), &t.latency)?;
        }
    }
    Ok(pool)
}

/// One pooled CAN message's reception latency, with its label.
pub fn msg_pool(runs: &[RunData], key: (u32, bool)) -> Result<(String, Pool), EvidenceError> {
    let mut pool = Pool::new();
    let mut label = String::new();
    for run in runs {
        let msgs = run.can.iter().flat_map(|c| &c.messages);
        for m in msgs.filter(|m| (m.id, m.extended) == key) {
            label = msg_label(m);
            pool.add(run, record::CAN, &label, &m.latency)?;
        }
    }
    Ok((label, pool))
}

/// Add `b`'s E2E check outcomes to `a`'s (the profile and timeout stay `a`'s); an
/// overflow is an error naming `what` in `path`.
pub fn add_e2e(
    a: &mut record::E2eCounts,
    b: &record::E2eCounts,
    path: &std::path::Path,
    what: &str,
) -> Result<(), EvidenceError> {
    for (x, y) in [
        (&mut a.ok, b.ok),
        (&mut a.ok_some_lost, b.ok_some_lost),
        (&mut a.repeated, b.repeated),
        (&mut a.wrong_sequence, b.wrong_sequence),
        (&mut a.error, b.error),
        (&mut a.timeout, b.timeout),
    ] {
        *x = record::checked_sum(*x, y, path, what)?;
    }
    Ok(())
}

/// Every CAN message key over the runs.
pub fn msg_keys(runs: &[RunData]) -> BTreeSet<(u32, bool)> {
    runs.iter()
        .flat_map(|r| r.can.iter().flat_map(|c| &c.messages))
        .map(|m| (m.id, m.extended))
        .collect()
}

/// The distributions: one per probe CPU, one per CAN message, with the bounds of `reqs`
/// that cover each.
pub fn distributions(
    runs: &[RunData],
    reqs: &[Requirement],
) -> Result<Vec<Distribution>, EvidenceError> {
    let cpus: BTreeSet<u32> = runs
        .iter()
        .flat_map(|r| r.probe.iter().flat_map(|p| &p.threads))
        .map(|t| t.cpu)
        .collect();
    let mut out = Vec::new();
    for cpu in cpus {
        let pool = cpu_pool(runs, cpu)?;
        let mut d = distribution(format!("Probe wakeup latency, CPU {cpu}"), &pool);
        d.bounds_us = bounds(reqs, Some(cpu), None);
        out.push(d);
    }
    for key in msg_keys(runs) {
        let (label, pool) = msg_pool(runs, key)?;
        let mut d = distribution(format!("CAN reception latency, {label}"), &pool);
        d.bounds_us = bounds(reqs, None, Some(key.0));
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{can, can_msg, good_env, hist_of, probe, run};

    #[test]
    fn bins_are_equal_width_and_keep_counts() {
        let s = hist_of(&[(3, 10), (3, 5), (250, 1), (2500, 1)]);
        let h = s.histogram().unwrap();
        let b = bins(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 17);
        let w = b[0].hi_us - b[0].lo_us;
        assert!((w - 10.0).abs() < 1e-9, "{w}");
        assert_eq!(b[0].count, 15);
    }

    #[test]
    fn one_distribution_per_cpu_and_message() {
        let runs = [run(
            good_env(),
            Some(probe(&[(10, 600)], 0)),
            Some(can(vec![
                can_msg(0xC0, &[(300, 10)], None),
                can_msg(0x1A0, &[(400, 5)], None),
            ])),
        )];
        let reqs = [crate::evidence::fixtures::max_latency(50.0)];
        let d = distributions(&runs, &reqs).unwrap();
        assert_eq!(d[0].bounds_us, [50.0]);
        assert!(d[1].bounds_us.is_empty());
        let labels: Vec<&str> = d.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Probe wakeup latency, CPU 1",
                "CAN reception latency, 0x0C0 MsgC0",
                "CAN reception latency, 0x1A0 Msg1A0"
            ]
        );
        assert_eq!(d[1].samples, 10);
    }
}
