//! Do the samples carry the claim? A percentile claim is a probability claim, judged with
//! the one-sided 95 % upper confidence bound of [`crate::stats`]; a max claim needs
//! `--min-samples-max` samples; a count claim compares the count. Then the environment:
//! a pass in runs that are not valid evidence becomes inconclusive, a fail stays a fail.

use record::hist;

use super::pool::Pool;
use super::{EvalOptions, RequirementResult, Verdict};
use crate::fmt::{f, fmt_num, fmt_prob, ns_to_us, pct_label};
use crate::stats;

/// Set the final verdict from the data verdict and the pool's environment issues.
pub fn finish(r: &mut RequirementResult, pool: Pool) -> RequirementResult {
    r.trace = pool.trace.into_iter().collect();
    let issues: Vec<String> = pool.issues.into_iter().collect();
    r.verdict = match r.data_verdict {
        Verdict::Fail => Verdict::Fail,
        Verdict::Pass if !issues.is_empty() => Verdict::Inconclusive,
        v => v,
    };
    r.environment = issues;
    r.clone()
}

/// Judge a count against the bound (`samples` the count rests on).
pub fn judge_count(
    r: &mut RequirementResult,
    found: bool,
    count: u64,
    samples: u64,
    missing: &str,
) {
    if !found {
        r.reasons.push(missing.into());
        return;
    }
    r.samples = Some(samples);
    r.measured = Some(f(count));
    let Some(b) = r.bound else {
        r.reasons.push("the requirement gives no bound".into());
        return;
    };
    r.data_verdict = if f(count) <= b {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    r.confidence = Some(format!("{count} in {samples}"));
}

/// Judge the pooled histogram at percentile `p` against the bound.
pub fn judge_percentile(r: &mut RequirementResult, pool: &Pool, p: f64, opts: &EvalOptions) {
    let h = &pool.hist;
    if !pool.found {
        return;
    }
    let n = h.len();
    r.samples = Some(n);
    if n == 0 {
        r.reasons.push("no samples".into());
        return;
    }
    if !(p > 0.0 && p <= 100.0) {
        r.reasons.push(format!("percentile {p} is not in (0, 100]"));
        return;
    }
    let value_ns = hist::value_at_percentile(h, p);
    r.measured = Some(ns_to_us(value_ns));
    let Some(bound_us) = r.bound else {
        r.reasons.push("the requirement gives no bound".into());
        return;
    };
    let bound_ns = bound_us * 1000.0;
    // Samples above the bound, by the upper edge of their bucket (conservative). The
    // decoder checked that the counts add up without overflow.
    let k: u64 = h
        .iter_recorded()
        .filter(|v| f(v.value_iterated_to()) > bound_ns)
        .map(|v| v.count_at_value())
        .sum();
    let u = stats::upper_bound(k, n);
    let above = format!("{k} of {n} samples above {} us", fmt_num(bound_us));
    if f(value_ns) > bound_ns {
        r.data_verdict = Verdict::Fail;
        r.confidence = Some(above);
        return;
    }
    if p >= 100.0 {
        judge_max(r, n, &above, u, opts);
        return;
    }
    let q = 1.0 - p / 100.0;
    r.confidence = Some(format!(
        "{above}: P(exceed) <= {} at 95 % confidence (claim: <= {})",
        fmt_prob(u),
        fmt_prob(q)
    ));
    if u <= q {
        r.data_verdict = Verdict::Pass;
    } else {
        let need = stats::samples_needed(q).unwrap_or(u64::MAX);
        r.reasons.push(format!(
            "too few samples for {}: {n} samples with {k} above the bound bound the exceedance probability only by {}; a claim of {} needs at least {need} samples with none above the bound (rule of three)",
            pct_label(p),
            fmt_prob(u),
            fmt_prob(q)
        ));
    }
}

/// How many samples each percentile claim of `results` needs (no sample above the bound,
/// 95 % confidence), how many it had, and, at the probe's period (`interval_ns`), how long
/// a run must measure to collect them: the sample-size rule in words, one line per claim.
pub fn sample_size_rules(
    results: &[RequirementResult],
    interval_ns: Option<u64>,
    opts: &EvalOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let p = match &r.metric {
            profiles::Metric::ProbeLatency { percentile, .. }
            | profiles::Metric::OslatLatency { percentile, .. }
            | profiles::Metric::CanLatency { percentile, .. }
            | profiles::Metric::CanJitter { percentile, .. } => *percentile,
            _ => continue,
        };
        let (need, claim) = if p >= 100.0 {
            (
                Some(opts.min_samples_max),
                "a max claim (--min-samples-max)".to_string(),
            )
        } else {
            let q = 1.0 - p / 100.0;
            (
                stats::samples_needed(q),
                format!("{} (P(exceed) <= {})", pct_label(p), fmt_prob(q)),
            )
        };
        let Some(need) = need else { continue };
        let time = match (interval_ns, &r.metric) {
            (Some(i), profiles::Metric::ProbeLatency { .. }) if i > 0 => format!(
                ", {} at the probe's {} us period",
                humantime::format_duration(std::time::Duration::from_secs(
                    need.saturating_mul(i).div_ceil(1_000_000_000)
                )),
                i / 1000
            ),
            _ => String::new(),
        };
        out.push(format!(
            "{}: {claim} needs at least {need} samples with none above the bound{time}; this evidence has {}",
            r.id,
            r.samples.map_or("none".to_string(), |n| n.to_string())
        ));
    }
    out
}

fn judge_max(r: &mut RequirementResult, n: u64, above: &str, u: f64, opts: &EvalOptions) {
    r.confidence = Some(format!(
        "{above}: P(exceed) <= {} at 95 % confidence (rule of three)",
        fmt_prob(u)
    ));
    if n >= opts.min_samples_max {
        r.data_verdict = Verdict::Pass;
    } else {
        r.reasons.push(format!(
            "too few samples for a max claim: {n} < {} required",
            opts.min_samples_max
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{eval, good_env, max_latency, probe, req, run};
    use profiles::Metric;

    #[test]
    fn max_latency_pass_and_fail() {
        let runs = [run(
            good_env(),
            Some(probe(&[(10, 59_990), (42, 10)], 0)),
            None,
        )];
        let r = eval(&max_latency(50.0), &runs);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.samples, Some(60_000));
        assert!((r.measured.unwrap() - 42.0).abs() < 0.05, "{r:?}");
        assert!(r.confidence.as_ref().unwrap().contains("4.99e-5"), "{r:?}");
        assert_eq!(r.trace[0].file, "probe.json");
        let r = eval(&max_latency(40.0), &runs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.confidence.unwrap().starts_with("10 of 60000"));
    }

    #[test]
    fn max_claim_needs_min_samples() {
        let runs = [run(good_env(), Some(probe(&[(10, 999)], 0)), None)];
        let r = eval(&max_latency(50.0), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("999 < 1000"), "{:?}", r.reasons);
    }

    #[test]
    fn percentile_needs_enough_samples() {
        // p99.99 <= 20 us: 15 000 samples all at 10 us cannot carry 1e-4 (needs 29 956).
        let r99 = req(
            "R-P",
            Metric::ProbeLatency {
                percentile: 99.99,
                cpu: Some(1),
            },
            Some(20.0),
            None,
        );
        let few = [run(good_env(), Some(probe(&[(10, 15_000)], 0)), None)];
        let r = eval(&r99, &few);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.data_verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("29956"), "{:?}", r.reasons);
        let enough = [run(good_env(), Some(probe(&[(10, 30_000)], 0)), None)];
        assert_eq!(eval(&r99, &enough).verdict, Verdict::Pass);
        // 2 above 20 us in 30 000: U(2, 30 000) ~ 2.1e-4 > 1e-4: inconclusive, not fail.
        let some = [run(
            good_env(),
            Some(probe(&[(10, 29_998), (30, 2)], 0)),
            None,
        )];
        assert_eq!(eval(&r99, &some).verdict, Verdict::Inconclusive);
        // 1 % above the bound: the p99.99 itself is above: fail.
        let bad = [run(
            good_env(),
            Some(probe(&[(10, 29_000), (30, 1000)], 0)),
            None,
        )];
        assert_eq!(eval(&r99, &bad).verdict, Verdict::Fail);
    }

    #[test]
    fn p999_at_1000_samples_is_not_the_max() {
        // 999 samples at 10 us and one at 90 us: p99.9 is the 999th sample, 10 us.
        let runs = [run(good_env(), Some(probe(&[(10, 999), (90, 1)], 0)), None)];
        let r = eval(
            &req(
                "R-P",
                Metric::ProbeLatency {
                    percentile: 99.9,
                    cpu: None,
                },
                Some(50.0),
                None,
            ),
            &runs,
        );
        assert!((r.measured.unwrap() - 10.0).abs() < 0.05, "{r:?}");
        assert_ne!(r.data_verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn the_sample_size_rule_says_what_a_p99_9999_claim_needs_and_how_long() {
        let runs = [run(good_env(), Some(probe(&[(10, 60_000)], 0)), None)];
        let p6 = req(
            "R-SOAK",
            Metric::ProbeLatency {
                percentile: 99.9999,
                cpu: None,
            },
            Some(50.0),
            None,
        );
        let results = [eval(&p6, &runs), eval(&max_latency(100.0), &runs)];
        assert_eq!(
            results[0].verdict,
            Verdict::Inconclusive,
            "60000 samples are too few"
        );
        let need = stats::samples_needed(1e-6).unwrap();
        assert!((2_995_000..2_996_000).contains(&need), "{need}");
        let lines = sample_size_rules(&results, Some(100_000), &EvalOptions::default());
        assert_eq!(
            lines[0],
            format!("R-SOAK: p99.9999 (P(exceed) <= 1.00e-6) needs at least {need} samples with none above the bound, 5m at the probe's 100 us period; this evidence has 60000")
        );
        assert!(
            lines[1]
                .starts_with("R-MAX: a max claim (--min-samples-max) needs at least 1000 samples"),
            "{}",
            lines[1]
        );
        // A count metric has no sample-size rule.
        let missed = req("R-MISS", Metric::ProbeMissed, None, Some(0.0));
        assert!(
            sample_size_rules(&[eval(&missed, &runs)], None, &EvalOptions::default()).is_empty()
        );
    }
}
