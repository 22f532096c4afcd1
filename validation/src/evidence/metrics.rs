//! The measured value of each metric, pooled over the runs: one function per metric of
//! `profiles::Metric`, each leaving the judging to [`super::sufficiency`]. Counts are
//! summed with checked arithmetic (an overflow is an error naming the file).

use std::collections::BTreeSet;

use profiles::{Metric, Requirement};
use record::hist::HistSummary;
use record::{checked_sum, msg_label};

use super::pool::Pool;
use super::sufficiency::{finish, judge_count, judge_percentile};
use super::{BoundKind, EvalOptions, EvidenceError, RequirementResult, RunData, Verdict};
use crate::fmt::{f, fmt_num, ns_to_us, pct_label};

fn base(req: &Requirement, label: String, unit: &str, kind: BoundKind) -> RequirementResult {
    let bound = match &req.metric {
        Metric::ProbeLatency { .. }
        | Metric::OslatLatency { .. }
        | Metric::HwlatLatency
        | Metric::CanLatency { .. }
        | Metric::CanJitter { .. }
        | Metric::WcrtSlack { .. } => req.bound_us,
        _ => req.bound,
    };
    RequirementResult {
        id: req.id.clone(),
        asil: req.asil,
        text: req.text.clone(),
        metric: req.metric.clone(),
        metric_label: label,
        bound,
        bound_kind: kind,
        unit: unit.to_string(),
        measured: None,
        verdict: Verdict::Inconclusive,
        data_verdict: Verdict::Inconclusive,
        samples: None,
        confidence: None,
        reasons: Vec::new(),
        environment: Vec::new(),
        trace: Vec::new(),
    }
}

fn which_cpu(cpu: Option<u32>) -> String {
    cpu.map(|c| format!("CPU {c}"))
        .unwrap_or_else(|| "all CPUs".into())
}

fn which_msg(id: Option<u32>, runs: &[RunData]) -> String {
    match id {
        None => "all messages".into(),
        Some(id) => runs
            .iter()
            .filter_map(|r| r.can.as_ref())
            .flat_map(|c| c.messages.iter())
            .find(|m| m.id == id)
            .map(msg_label)
            .unwrap_or_else(|| format!("0x{id:03X}")),
    }
}

/// Evaluate one requirement over the runs.
pub fn evaluate_one(
    req: &Requirement,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<RequirementResult, EvidenceError> {
    let mut r = match &req.metric {
        Metric::ProbeLatency { percentile, cpu } => {
            probe_latency(req, *percentile, *cpu, runs, opts)?
        }
        Metric::CanLatency { percentile, id } => {
            can_hist(req, *percentile, *id, false, runs, opts)?
        }
        Metric::CanJitter { percentile, id } => can_hist(req, *percentile, *id, true, runs, opts)?,
        Metric::OslatLatency { percentile, cpu } => {
            oslat_latency(req, *percentile, *cpu, runs, opts)?
        }
        Metric::ProbeMissed => probe_missed(req, runs)?,
        Metric::CanDeadlineMisses { id } => can_counts(req, *id, false, runs)?,
        Metric::CanLoss { id } => can_counts(req, *id, true, runs)?,
        Metric::BusLoad => bus_load(req, runs),
        Metric::HwlatLatency => hwlat_latency(req, runs),
        Metric::WcrtSlack { id } => return Ok(wcrt_slack(req, *id, runs)),
        Metric::E2eErrors { id } | Metric::E2eTimeouts { id } => e2e_counts(req, *id, runs)?,
    };
    r.trace.sort();
    Ok(r)
}

/// Per-CPU histograms of one record (`probe.json` or `oslat.json`): (CPU, histogram,
/// values outside its range) of each thread.
type CpuHists = fn(&RunData) -> Vec<(u32, &HistSummary, u64)>;

fn probe_hists(run: &RunData) -> Vec<(u32, &HistSummary, u64)> {
    let threads = run.probe.iter().flat_map(|p| &p.threads);
    threads
        .map(|t| (t.cpu, &t.latency, t.out_of_range))
        .collect()
}

fn oslat_hists(run: &RunData) -> Vec<(u32, &HistSummary, u64)> {
    let threads = run.oslat.iter().flat_map(|o| &o.threads);
    threads.map(|t| (t.cpu, &t.gaps, t.out_of_range)).collect()
}

fn probe_latency(
    req: &Requirement,
    p: f64,
    cpu: Option<u32>,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<RequirementResult, EvidenceError> {
    let label = format!("probe wakeup latency {}, {}", pct_label(p), which_cpu(cpu));
    let oor = "values were outside the histogram range (early wakeups or above 60 s)";
    let has = |r: &RunData| r.probe.is_some();
    let what = (record::PROBE, "probe thread", oor);
    cpu_latency(req, label, (p, cpu), runs, opts, (has, probe_hists), what)
}

fn oslat_latency(
    req: &Requirement,
    p: f64,
    cpu: Option<u32>,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<RequirementResult, EvidenceError> {
    let label = format!("busy-loop gap {}, {}", pct_label(p), which_cpu(cpu));
    let oor = "gaps were above the histogram range (60 s)";
    let has = |r: &RunData| r.oslat.is_some();
    let what = (record::OSLAT, "oslat loop", oor);
    cpu_latency(req, label, (p, cpu), runs, opts, (has, oslat_hists), what)
}

/// A latency percentile over per-CPU histograms, pooled over the runs; `what` is (the
/// record's file, what measures one CPU, what the out-of-range values are).
fn cpu_latency(
    req: &Requirement,
    label: String,
    (p, cpu): (f64, Option<u32>),
    runs: &[RunData],
    opts: &EvalOptions,
    (has, hists): (fn(&RunData) -> bool, CpuHists),
    (file, measurer, oor): (&str, &str, &str),
) -> Result<RequirementResult, EvidenceError> {
    let mut r = base(req, label, "us", BoundKind::AtMost);
    let mut pool = Pool::new();
    let mut out_of_range = 0u64;
    for run in runs {
        let path = run.path.join(file);
        for (c, h, oo) in hists(run) {
            if cpu.is_none_or(|want| want == c) {
                pool.add(run, file, &format!("CPU {c}"), h)?;
                out_of_range = checked_sum(out_of_range, oo, &path, "out of range")?;
            }
        }
    }
    if !runs.iter().any(has) {
        r.reasons.push(format!("no {file} in any run"));
    } else if !pool.found {
        r.reasons
            .push(format!("no {measurer} measured {}", which_cpu(cpu)));
    }
    judge_percentile(&mut r, &pool, p, opts);
    if out_of_range > 0 {
        r.reasons.push(format!(
            "{out_of_range} {oor} and are not in the distribution"
        ));
    }
    Ok(finish(&mut r, pool))
}

fn can_hist(
    req: &Requirement,
    p: f64,
    id: Option<u32>,
    jitter: bool,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<RequirementResult, EvidenceError> {
    let what = if jitter {
        "inter-arrival jitter"
    } else {
        "reception latency"
    };
    let label = format!("CAN {what} {}, {}", pct_label(p), which_msg(id, runs));
    let mut r = base(req, label, "us", BoundKind::AtMost);
    let mut pool = Pool::new();
    for run in runs {
        for m in run.can.iter().flat_map(|c| &c.messages) {
            if id.is_none_or(|i| i == m.id) {
                let h = if jitter { &m.jitter } else { &m.latency };
                pool.add(run, record::CAN, &msg_label(m), h)?;
            }
        }
    }
    if runs.iter().all(|r| r.can.is_none()) {
        r.reasons.push("no can.json in any run".into());
    } else if !pool.found {
        r.reasons
            .push(format!("no message {} in can.json", which_msg(id, runs)));
    }
    judge_percentile(&mut r, &pool, p, opts);
    if !jitter {
        clock_uncertainty(&mut r, id, runs);
    }
    Ok(finish(&mut r, pool))
}

/// A latency measured across two clocks (restbus on the host, ECU in a guest) is only as
/// exact as the offset between them (`can.json` `time_base`): a verdict that the
/// uncertainty could turn is inconclusive, with the reason. Jitter (differences on one
/// clock) is not affected.
fn clock_uncertainty(r: &mut RequirementResult, id: Option<u32>, runs: &[RunData]) {
    let worst = runs
        .iter()
        .filter_map(|run| run.can.as_ref())
        .filter(|c| c.messages.iter().any(|m| id.is_none_or(|i| i == m.id)))
        .max_by_key(|c| c.time_base.uncertainty_ns)
        .map(|c| &c.time_base)
        .filter(|t| t.uncertainty_ns > 0);
    let (Some(t), Some(m), Some(b)) = (worst, r.measured, r.bound) else {
        return;
    };
    let u = ns_to_us(t.uncertainty_ns);
    let turns = match r.data_verdict {
        Verdict::Pass => m + u > b,
        Verdict::Fail => m - u <= b,
        Verdict::Inconclusive => false,
    };
    if turns {
        r.data_verdict = Verdict::Inconclusive;
        r.reasons.push(format!(
            "the latency is measured across two clocks ({} time base) whose offset is known only to +- {} us: the {} us measured lies in {}..{} us, on both sides of the {} us bound",
            t.method,
            fmt_num(u),
            fmt_num(m),
            fmt_num((m - u).max(0.0)),
            fmt_num(m + u),
            fmt_num(b)
        ));
    }
}

fn probe_missed(req: &Requirement, runs: &[RunData]) -> Result<RequirementResult, EvidenceError> {
    let label = "probe missed periods, all CPUs".to_string();
    let mut r = base(req, label, "periods", BoundKind::AtMost);
    let mut pool = Pool::new();
    let (mut missed, mut samples) = (0u64, 0u64);
    for run in runs {
        let path = run.path.join(record::PROBE);
        for t in run.probe.iter().flat_map(|p| &p.threads) {
            missed = checked_sum(missed, t.missed_periods, &path, "missed periods")?;
            samples = checked_sum(samples, t.samples, &path, "samples")?;
            pool.touch(run, record::PROBE);
        }
    }
    judge_count(
        &mut r,
        pool.found,
        missed,
        samples,
        "no probe.json in any run",
    );
    Ok(finish(&mut r, pool))
}

fn can_counts(
    req: &Requirement,
    id: Option<u32>,
    loss: bool,
    runs: &[RunData],
) -> Result<RequirementResult, EvidenceError> {
    let what = if loss {
        "lost frames"
    } else {
        "deadline misses (late or lost frames)"
    };
    let label = format!("CAN {what}, {}", which_msg(id, runs));
    let mut r = base(req, label, "frames", BoundKind::AtMost);
    let mut pool = Pool::new();
    let (mut count, mut sent, mut lost) = (0u64, 0u64, 0u64);
    for run in runs {
        let path = run.path.join(record::CAN);
        for m in run.can.iter().flat_map(|c| &c.messages) {
            if id.is_none_or(|i| i == m.id) {
                let late = if loss { 0 } else { m.deadline_misses };
                count = checked_sum(count, checked_sum(late, m.lost, &path, what)?, &path, what)?;
                lost = checked_sum(lost, m.lost, &path, "lost")?;
                sent = checked_sum(sent, m.sent, &path, "sent")?;
                pool.touch(run, record::CAN);
            }
        }
    }
    let missing = if runs.iter().any(|r| r.can.is_some()) {
        "no CAN frames sent for this metric"
    } else {
        "no can.json in any run"
    };
    judge_count(&mut r, pool.found && sent > 0, count, sent, missing);
    if !loss && lost > 0 {
        r.reasons
            .push(format!("{lost} lost frames count as deadline misses"));
    }
    Ok(finish(&mut r, pool))
}

/// `E2eErrors` / `E2eTimeouts`: the receiver's E2E check outcomes of the protected
/// messages, summed over the runs. Errors are frames whose check failed (CRC error,
/// repeated, wrong sequence) out of the frames checked; timeouts count each time no valid
/// frame came within the message's E2E timeout.
fn e2e_counts(
    req: &Requirement,
    id: Option<u32>,
    runs: &[RunData],
) -> Result<RequirementResult, EvidenceError> {
    let timeouts = matches!(req.metric, Metric::E2eTimeouts { .. });
    let what = if timeouts {
        "timeouts (no valid frame within the E2E timeout)"
    } else {
        "check failures (CRC error, repeated, wrong sequence)"
    };
    let label = format!("E2E {what}, {}", which_msg(id, runs));
    let mut r = base(req, label, "frames", BoundKind::AtMost);
    let mut pool = Pool::new();
    let (mut count, mut checked) = (0u64, 0u64);
    for run in runs {
        let path = run.path.join(record::CAN);
        for m in run.can.iter().flat_map(|c| &c.messages) {
            let Some(e) = m.e2e.as_ref().filter(|_| id.is_none_or(|i| i == m.id)) else {
                continue;
            };
            let n = if timeouts { e.timeout } else { e.failed() };
            count = checked_sum(count, n, &path, "E2E count")?;
            let seen = checked_sum(e.ok, e.ok_some_lost, &path, "E2E checks")?;
            checked = checked_sum(
                checked,
                checked_sum(seen, e.failed(), &path, "E2E checks")?,
                &path,
                "E2E checks",
            )?;
            pool.touch(run, record::CAN);
        }
    }
    let missing = if runs.iter().any(|r| r.can.is_some()) {
        "no E2E-protected message in can.json"
    } else {
        "no can.json in any run"
    };
    judge_count(&mut r, pool.found, count, checked, missing);
    Ok(finish(&mut r, pool))
}

/// The largest hwlat gap over the runs. The detector reports only gaps above its
/// threshold: a threshold above the bound leaves gaps between them unseen, so the claim
/// cannot pass then.
fn hwlat_latency(req: &Requirement, runs: &[RunData]) -> RequirementResult {
    let label = "host hardware/firmware latency (hwlat detector), max".to_string();
    let mut r = base(req, label, "us", BoundKind::AtMost);
    let mut pool = Pool::new();
    let (mut max_us, mut threshold_us, mut secs, mut gaps) = (0u64, 0u64, 0.0f64, 0u64);
    for run in runs {
        let Some(h) = run.hwlat.as_ref() else {
            continue;
        };
        pool.touch(run, record::HWLAT);
        max_us = max_us.max(h.max_us);
        threshold_us = threshold_us.max(h.threshold_us);
        secs += h.duration_s;
        gaps = gaps.saturating_add(h.total_samples);
    }
    #[allow(clippy::cast_precision_loss)] // us values far below 2^52
    let (max, threshold) = (max_us as f64, threshold_us as f64);
    match (pool.found, r.bound) {
        (false, _) => r.reasons.push("no hwlat.json in any run".into()),
        (true, None) => r.reasons.push("the requirement gives no bound".into()),
        (true, Some(b)) => {
            // No gap above the threshold: every gap was at most the threshold.
            r.measured = Some(if gaps == 0 { threshold } else { max });
            r.data_verdict = if max > b {
                Verdict::Fail
            } else if threshold > b {
                r.reasons.push(format!(
                    "the detector's threshold {threshold_us} us is above the bound: gaps between them are not reported"
                ));
                Verdict::Inconclusive
            } else {
                Verdict::Pass
            };
            r.confidence = Some(format!(
                "{gaps} gap(s) above the {threshold_us} us threshold in {} s of detection",
                fmt_num(secs)
            ));
        }
    }
    finish(&mut r, pool)
}

fn bus_load(req: &Requirement, runs: &[RunData]) -> RequirementResult {
    let mut r = base(
        req,
        "CAN bus load (measured)".into(),
        "%",
        BoundKind::AtMost,
    );
    let mut pool = Pool::new();
    let mut worst: Option<(f64, f64)> = None;
    for run in runs {
        let Some(c) = run.can.as_ref().filter(|c| c.elapsed_s > 0.0) else {
            continue;
        };
        pool.touch(run, record::CAN);
        let w = worst.get_or_insert((c.bus_load_measured_pct, c.bus_load_analytic_pct));
        w.0 = w.0.max(c.bus_load_measured_pct);
        w.1 = w.1.max(c.bus_load_analytic_pct);
    }
    match (worst, r.bound) {
        (None, _) => r.reasons.push("no can.json with a measured time".into()),
        (Some(_), None) => r.reasons.push("the requirement gives no bound".into()),
        (Some((measured, analytic)), Some(b)) => {
            r.measured = Some(measured);
            r.data_verdict = if measured <= b {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            r.confidence = Some(format!(
                "worst run; analytic worst-case load {} %",
                fmt_num(analytic)
            ));
            if analytic > b && r.data_verdict == Verdict::Pass {
                // The runs stayed below, the worst case does not: not shown.
                r.data_verdict = Verdict::Inconclusive;
                r.reasons.push(format!(
                    "the analytic worst-case load {} % is above the bound: the runs did not meet the worst case",
                    fmt_num(analytic)
                ));
            }
        }
    }
    finish(&mut r, pool)
}

/// Slack rests on the response-time analysis, not on a measurement: the environment does
/// not change it (the analysis depends on the profile only: the first can.json carries it).
fn wcrt_slack(req: &Requirement, id: Option<u32>, runs: &[RunData]) -> RequirementResult {
    let label = format!(
        "analytic WCRT slack (deadline - WCRT), {}",
        which_msg(id, runs)
    );
    let mut r = base(req, label, "us", BoundKind::AtLeast);
    let mut trace = BTreeSet::new();
    let mut worst: Option<f64> = None;
    let mut unschedulable = Vec::new();
    if let Some(run) = runs.iter().find(|r| r.can.is_some()) {
        for m in run.can.iter().flat_map(|c| &c.messages) {
            if id.is_none_or(|i| i == m.id) {
                trace.insert(run.trace(record::CAN));
                match m.wcrt_us {
                    Some(w) => {
                        let s = f(m.deadline_us) - w;
                        worst = Some(worst.map_or(s, |x: f64| x.min(s)));
                    }
                    None => unschedulable.push(msg_label(m)),
                }
            }
        }
    }
    r.trace = trace.into_iter().collect();
    if r.trace.is_empty() {
        r.reasons.push("no analysed message in can.json".into());
    } else if !unschedulable.is_empty() {
        r.data_verdict = Verdict::Fail;
        r.measured = worst;
        r.reasons.push(format!(
            "not schedulable (no finite WCRT): {}",
            unschedulable.join(", ")
        ));
    } else if let (Some(s), Some(b)) = (worst, r.bound) {
        r.measured = Some(s);
        r.data_verdict = if s >= b { Verdict::Pass } else { Verdict::Fail };
        r.confidence = Some("response-time analysis (Davis et al. 2007), not a measurement".into());
    } else {
        r.reasons.push("the requirement gives no bound".into());
    }
    r.verdict = r.data_verdict;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{
        can, can_msg, eval, facts, good_env, host_check, max_latency, oslat, probe, req, run,
        selftest, tool,
    };
    use rt_sys::kernel::Virtualization;

    fn assert_env_cause(mut env: record::Environment, probe_partial: bool, needle: &str) {
        env.accelerator = env.derived_accelerator();
        let mut p = probe(&[(10, 60_000)], 0);
        p.partial = probe_partial;
        let runs = [run(env, Some(p), None)];
        let r = eval(&max_latency(50.0), &runs);
        assert_eq!(r.data_verdict, Verdict::Pass);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{needle}: {r:?}");
        assert!(
            r.environment.iter().any(|s| s.contains(needle)),
            "{needle} not in {:?}",
            r.environment
        );
        // A miss in the same environment stays a miss.
        assert_eq!(eval(&max_latency(5.0), &runs).verdict, Verdict::Fail);
    }

    #[test]
    fn each_invalid_environment_makes_a_pass_inconclusive() {
        let mut e = good_env();
        e.kernel = Some(facts(Virtualization::Tcg, true));
        assert_env_cause(e, false, "TCG");
        let mut e = good_env();
        e.kernel = Some(facts(Virtualization::Kvm, false));
        assert_env_cause(e, false, "not PREEMPT_RT");
        let mut e = good_env();
        e.host_check = Some(host_check(Virtualization::Kvm, true));
        assert_env_cause(
            e,
            false,
            "nested virtualization (the host itself runs under kvm)",
        );
        let mut e = good_env();
        e.host_check = Some(host_check(Virtualization::None, false));
        assert_env_cause(e, false, "the host kernel 6.1.0-rt-amd64 is not PREEMPT_RT");
        let mut e = good_env();
        e.host_check = None;
        assert_env_cause(e, false, "host tuning not verified");
        let mut e = good_env();
        e.kernel = None;
        assert_env_cause(e, false, "environment is unknown");
        let mut e = good_env();
        e.selftest = Some(selftest(false));
        assert_env_cause(e, false, "self-test failed");
        assert_env_cause(good_env(), true, "partial run");
    }

    #[test]
    fn partial_and_killed_tool_runs_count() {
        let mut r0 = run(good_env(), Some(probe(&[(10, 60_000)], 0)), None);
        let mut t = tool("can-sim run");
        t.partial = true;
        t.partial_reason = Some("SIGINT".into());
        r0.manifest.tools.push(t);
        let r = eval(&max_latency(50.0), &[r0.clone()]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.environment.iter().any(|s| s.contains("SIGINT")));
        r0.manifest.tools[1].partial = false;
        r0.manifest.tools[1].end = None;
        let r = eval(&max_latency(50.0), &[r0]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.environment
                .iter()
                .any(|s| s.contains("never recorded its end")),
            "{r:?}"
        );
    }

    #[test]
    fn missing_data_is_inconclusive() {
        let runs = [run(good_env(), None, None)];
        for m in [
            Metric::ProbeLatency {
                percentile: 99.0,
                cpu: None,
            },
            Metric::ProbeMissed,
            Metric::CanLatency {
                percentile: 100.0,
                id: Some(0xC0),
            },
            Metric::CanDeadlineMisses { id: None },
            Metric::CanLoss { id: None },
            Metric::BusLoad,
            Metric::WcrtSlack { id: None },
        ] {
            let r = eval(&req("R", m.clone(), Some(1.0), Some(1.0)), &runs);
            assert_eq!(r.verdict, Verdict::Inconclusive, "{m:?}");
            assert!(r.reasons[0].starts_with("no "), "{m:?}: {:?}", r.reasons);
        }
        let runs = [run(good_env(), Some(probe(&[(10, 60_000)], 0)), None)];
        let r = eval(&req("R", Metric::ProbeMissed, None, None), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("no bound"));
        let r = eval(
            &req(
                "R-P",
                Metric::ProbeLatency {
                    percentile: 99.0,
                    cpu: Some(3),
                },
                Some(20.0),
                None,
            ),
            &runs,
        );
        assert!(r.reasons[0].contains("CPU 3"), "{:?}", r.reasons);
    }

    #[test]
    fn e2e_metrics_sum_the_check_outcomes() {
        let mut m1 = can_msg(0xC0, &[(300, 1000)], Some(800.0));
        m1.e2e = Some(record::E2eCounts {
            profile: "P05".into(),
            ok: 990,
            ok_some_lost: 4,
            repeated: 1,
            wrong_sequence: 2,
            error: 3,
            timeout: 0,
            timeout_us: 20_000,
        });
        let m2 = can_msg(0x1A0, &[(400, 500)], Some(1900.0));
        let runs = [run(good_env(), None, Some(can(vec![m1, m2])))];
        let errs = req("E-1", Metric::E2eErrors { id: None }, None, Some(0.0));
        let r = eval(&errs, &runs);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.measured, Some(6.0));
        assert_eq!(r.samples, Some(1000));
        let t = req(
            "E-2",
            Metric::E2eTimeouts { id: Some(0xC0) },
            None,
            Some(0.0),
        );
        let r = eval(&t, &runs);
        assert_eq!(r.data_verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.measured, Some(0.0));
        // A message without protection has nothing to say.
        let u = req(
            "E-3",
            Metric::E2eErrors { id: Some(0x1A0) },
            None,
            Some(0.0),
        );
        let r = eval(&u, &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(
            r.reasons,
            vec!["no E2E-protected message in can.json".to_string()]
        );
    }

    #[test]
    fn can_latency_across_two_clocks_is_no_more_exact_than_their_offset() {
        // Max latency 900 us (bucket upper edge), jitter untouched by the offset.
        let lat = |bound| {
            req(
                "R-X",
                Metric::CanLatency {
                    percentile: 100.0,
                    id: Some(0xC0),
                },
                Some(bound),
                None,
            )
        };
        let with = |uncertainty_ns| {
            let mut c = can(vec![can_msg(0xC0, &[(300, 1000), (900, 2)], Some(800.0))]);
            c.role = "receiver".into();
            c.time_base = record::TimeBase {
                method: "file_exchange".into(),
                offset_ns: -3_000_000,
                uncertainty_ns,
                rtt: None,
            };
            [run(good_env(), None, Some(c))]
        };
        // +- 50 us: 900 us is clearly inside 2000 us and clearly above 500 us.
        assert_eq!(eval(&lat(2000.0), &with(50_000)).verdict, Verdict::Pass);
        assert_eq!(eval(&lat(500.0), &with(50_000)).verdict, Verdict::Fail);
        // +- 1.5 ms: the same 900 us could be 2.4 ms or 0 us.
        for bound in [2000.0, 500.0] {
            let r = eval(&lat(bound), &with(1_500_000));
            assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
            assert!(
                r.reasons
                    .iter()
                    .any(|s| s.contains("file_exchange time base") && s.contains("+- 1500 us")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn counts_and_can_metrics() {
        let runs = [run(good_env(), Some(probe(&[(10, 5000)], 3)), None)];
        let r = eval(&req("R", Metric::ProbeMissed, None, Some(0.0)), &runs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.measured, Some(3.0));

        let mut m1 = can_msg(0xC0, &[(300, 1000), (900, 2)], Some(800.0));
        m1.lost = 1;
        m1.sent += 1;
        let m2 = can_msg(0x1A0, &[(400, 500)], Some(1900.0));
        let runs = [run(good_env(), None, Some(can(vec![m1, m2])))];
        let lat = req(
            "R-L",
            Metric::CanLatency {
                percentile: 100.0,
                id: Some(0xC0),
            },
            Some(2000.0),
            None,
        );
        let r = eval(&lat, &runs);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.metric_label.contains("0x0C0 MsgC0"));
        let r = eval(
            &req(
                "R-D",
                Metric::CanDeadlineMisses { id: None },
                None,
                Some(0.0),
            ),
            &runs,
        );
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.reasons.iter().any(|s| s.contains("1 lost")));
        let r = eval(&req("R-B", Metric::BusLoad, None, Some(50.0)), &runs);
        assert_eq!((r.verdict, r.measured), (Verdict::Pass, Some(18.0)));
        let r = eval(&req("R-B", Metric::BusLoad, None, Some(10.0)), &runs);
        assert_eq!(r.verdict, Verdict::Fail);
        let r = eval(&req("R-B", Metric::BusLoad, None, Some(19.0)), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.reasons[0].contains("analytic worst-case load 20 %"),
            "{r:?}"
        );
        // Slack: min(2000 - 800, 2000 - 1900) = 100 us.
        let r = eval(
            &req("R-W", Metric::WcrtSlack { id: None }, Some(200.0), None),
            &runs,
        );
        assert_eq!((r.verdict, r.measured), (Verdict::Fail, Some(100.0)));
        let r = eval(
            &req(
                "R-W",
                Metric::WcrtSlack { id: Some(0xC0) },
                Some(200.0),
                None,
            ),
            &runs,
        );
        assert_eq!(r.verdict, Verdict::Pass);
        let r = eval(
            &req(
                "R-J",
                Metric::CanJitter {
                    percentile: 99.0,
                    id: None,
                },
                Some(10.0),
                None,
            ),
            &runs,
        );
        assert_eq!((r.verdict, r.samples), (Verdict::Pass, Some(1502)), "{r:?}");
    }

    #[test]
    fn analysis_verdict_ignores_environment() {
        let mut e = good_env();
        e.kernel = Some(facts(Virtualization::Tcg, false));
        let runs = [run(
            e,
            None,
            Some(can(vec![can_msg(0xC0, &[(300, 10)], Some(800.0))])),
        )];
        let r = eval(
            &req("R-W", Metric::WcrtSlack { id: None }, Some(200.0), None),
            &runs,
        );
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn runs_pool_their_histograms() {
        let a = run(good_env(), Some(probe(&[(10, 600)], 0)), None);
        let b = run(good_env(), Some(probe(&[(20, 600)], 0)), None);
        let r = eval(&max_latency(50.0), &[a, b]);
        assert_eq!(r.samples, Some(1200));
        assert_eq!(r.verdict, Verdict::Pass);
        assert!((r.measured.unwrap() - 20.0).abs() < 0.05);
    }

    #[test]
    fn summed_counts_that_overflow_are_an_error() {
        let mut a = run(good_env(), Some(probe(&[(10, 600)], u64::MAX)), None);
        a.probe.as_mut().unwrap().threads[0].missed_periods = u64::MAX;
        let b = run(good_env(), Some(probe(&[(10, 600)], 1)), None);
        let e = evaluate_one(
            &req("R", Metric::ProbeMissed, None, Some(0.0)),
            &[a, b],
            &EvalOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("overflows a 64-bit count"), "{e}");
    }

    fn hwlat(threshold_us: u64, gaps_us: &[u64]) -> record::HwlatRecord {
        record::HwlatRecord {
            threshold_us,
            width_us: 500_000,
            window_us: 1_000_000,
            duration_s: 300.0,
            total_samples: gaps_us.len() as u64,
            max_us: gaps_us.iter().copied().max().unwrap_or(0),
            samples: vec![],
            partial: false,
        }
    }

    #[test]
    fn hwlat_latency_is_the_largest_gap_and_needs_a_threshold_within_the_bound() {
        let hw = |bound: f64| req("R-HW", Metric::HwlatLatency, Some(bound), None);
        let with = |h: record::HwlatRecord| {
            let mut r = run(good_env(), None, None);
            r.hwlat = Some(h);
            r
        };
        let r = eval(&hw(20.0), &[with(hwlat(10, &[12, 17]))]);
        assert_eq!((r.verdict, r.measured), (Verdict::Pass, Some(17.0)));
        assert_eq!(
            r.confidence.as_deref(),
            Some("2 gap(s) above the 10 us threshold in 300 s of detection")
        );
        assert_eq!(r.trace[0].file, "hwlat.json");
        let r = eval(&hw(15.0), &[with(hwlat(10, &[12, 17]))]);
        assert_eq!((r.verdict, r.measured), (Verdict::Fail, Some(17.0)));
        // Nothing above a 30 us threshold says nothing about a 20 us bound.
        let r = eval(&hw(20.0), &[with(hwlat(30, &[]))]);
        assert_eq!((r.verdict, r.measured), (Verdict::Inconclusive, Some(30.0)));
        assert!(
            r.reasons[0].contains("threshold 30 us is above the bound"),
            "{r:?}"
        );
        let mut partial = hwlat(10, &[]);
        partial.partial = true;
        let r = eval(&hw(20.0), &[with(partial)]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.environment
                .iter()
                .any(|e| e.contains("hwlat.json is marked partial")),
            "{r:?}"
        );
        let r = eval(&hw(20.0), &[run(good_env(), None, None)]);
        assert_eq!(r.reasons, vec!["no hwlat.json in any run".to_string()]);
    }

    #[test]
    fn oslat_latency_is_judged_from_oslat_json() {
        let oslat_max = |bound: f64, cpu: Option<u32>| {
            req(
                "R-OSLAT",
                Metric::OslatLatency {
                    percentile: 100.0,
                    cpu,
                },
                Some(bound),
                None,
            )
        };
        let mut r1 = run(good_env(), None, None);
        r1.manifest.files.insert(
            record::OSLAT.into(),
            record::FileEntry {
                sha256: "ef".repeat(32),
                bytes: 1,
                written_by: "test".into(),
            },
        );
        r1.oslat = Some(oslat(1, &[(1, 99_000), (38, 1_000)]));
        let runs = [r1];
        let r = eval(&oslat_max(40.0, None), &runs);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.samples, Some(100_000));
        assert!((r.measured.unwrap() - 38.0).abs() < 0.05, "{r:?}");
        assert_eq!(r.trace[0].file, "oslat.json");
        assert_eq!(r.metric_label, "busy-loop gap max, all CPUs");
        let r = eval(&oslat_max(30.0, Some(1)), &runs);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!(r.confidence.unwrap().starts_with("1000 of 100000"));
        let r = eval(&oslat_max(40.0, Some(2)), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.reasons
                .iter()
                .any(|x| x.contains("no oslat loop measured CPU 2")),
            "{r:?}"
        );
        let none = [run(good_env(), Some(probe(&[(10, 100)], 0)), None)];
        let r = eval(&oslat_max(40.0, None), &none);
        assert!(
            r.reasons.iter().any(|x| x == "no oslat.json in any run"),
            "{r:?}"
        );
    }
}
