//! Measured against analysed (each CAN message's worst measured latency against its
//! analytic WCRT), the deviations the report lists, and the limits of what it claims.

use profiles::Metric;

use super::pool::{msg_keys, msg_pool};
use super::runs::short_sha;
use super::{
    EvalOptions, EvidenceError, ProfileRef, RequirementResult, RunData, RunInfo, Verdict,
    WcrtComparison,
};
use crate::fmt::{fmt_opt, ns_to_us};
use crate::stats;

/// One comparison per CAN message (pooled over the runs, one message at a time).
pub fn wcrt_comparisons(runs: &[RunData]) -> Result<Vec<WcrtComparison>, EvidenceError> {
    let mut out = Vec::new();
    for key in msg_keys(runs) {
        let msgs: Vec<&record::CanMessageRecord> = runs
            .iter()
            .flat_map(|r| r.can.iter().flat_map(|c| &c.messages))
            .filter(|m| (m.id, m.extended) == key)
            .collect();
        let wcrt = msgs
            .iter()
            .map(|m| m.wcrt_us)
            .try_fold(0.0f64, |acc, w| w.map(|w| acc.max(w)));
        let (label, pool) = msg_pool(runs, key)?;
        let measured = (!pool.hist.is_empty()).then(|| ns_to_us(pool.hist.max()));
        out.push(WcrtComparison {
            e2e: e2e_of(runs, key, &label)?,
            message: label,
            id: key.0,
            samples: pool.hist.len(),
            measured_max_us: measured,
            wcrt_us: wcrt,
            deadline_us: msgs[0].deadline_us,
            deviation: matches!((measured, wcrt), (Some(x), Some(w)) if x > w),
        });
    }
    Ok(out)
}

/// The E2E check outcomes of message `key` summed over the runs (None: not protected).
fn e2e_of(
    runs: &[RunData],
    key: (u32, bool),
    label: &str,
) -> Result<Option<record::E2eCounts>, EvidenceError> {
    let mut sum: Option<record::E2eCounts> = None;
    for r in runs {
        let msgs = r.can.iter().flat_map(|c| &c.messages);
        for e in msgs
            .filter(|m| (m.id, m.extended) == key)
            .filter_map(|m| m.e2e.as_ref())
        {
            match sum.as_mut() {
                None => sum = Some(e.clone()),
                Some(s) => {
                    super::pool::add_e2e(s, e, &r.path.join(record::CAN), &format!("{label} E2E"))?;
                }
            }
        }
    }
    Ok(sum)
}

/// E2E check outcomes in words: `P05: 990 ok, 4 ok after losses, 1 repeated, 2 wrong
/// sequence, 3 error, 0 timeout (timeout 20000 us)`.
pub fn e2e_words(e: &record::E2eCounts) -> String {
    format!(
        "{}: {} ok, {} ok after losses, {} repeated, {} wrong sequence, {} error, {} timeout (timeout {} us)",
        e.profile, e.ok, e.ok_some_lost, e.repeated, e.wrong_sequence, e.error, e.timeout, e.timeout_us
    )
}

/// An analysis the measurement contradicts cannot carry a slack claim.
pub fn refute_slack_claims(results: &mut [RequirementResult], wcrt: &[WcrtComparison]) {
    for r in results.iter_mut().filter(|r| r.verdict == Verdict::Pass) {
        let Metric::WcrtSlack { id } = r.metric else {
            continue;
        };
        let refuted: Vec<&str> = wcrt
            .iter()
            .filter(|c| c.deviation && id.is_none_or(|i| i == c.id))
            .map(|c| c.message.as_str())
            .collect();
        if !refuted.is_empty() {
            r.verdict = Verdict::Inconclusive;
            r.reasons.push(format!(
                "the measurement contradicts the analysis (measured above the WCRT: {})",
                refuted.join(", ")
            ));
        }
    }
}

/// Failed requirements and measurements above the analytic WCRT, in words.
pub fn deviations(results: &[RequirementResult], wcrt: &[WcrtComparison]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.verdict == Verdict::Fail) {
        out.push(format!(
            "{} ({}) failed: {} measured {} {} against the bound {}{}",
            r.id,
            r.asil,
            r.metric_label,
            fmt_opt(r.measured),
            r.unit,
            r.bound_text(),
            if r.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reasons.join("; "))
            }
        ));
    }
    for c in wcrt.iter().filter(|c| c.deviation) {
        out.push(format!(
            "{}: measured worst case {} us is above the analytic WCRT {} us: the model or the system is wrong",
            c.message,
            fmt_opt(c.measured_max_us),
            fmt_opt(c.wcrt_us)
        ));
    }
    out
}

/// What the evidence cannot claim: profile mismatches, invalid runs, the statistics.
pub fn limits(
    runs: &[RunData],
    infos: &[RunInfo],
    profile: &ProfileRef,
    opts: &EvalOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        match &r.manifest.profile {
            Some(p) if p.sha256 != profile.sha256 => out.push(format!(
                "run {} was made with profile {} (sha256 {}), not with the evaluated profile {} (sha256 {}): its settings may not be the ones these requirements assume",
                r.id(),
                p.name,
                short_sha(&p.sha256),
                profile.name,
                short_sha(&profile.sha256)
            )),
            None => out.push(format!("run {} records no profile", r.id())),
            Some(_) => {}
        }
    }
    for ri in infos {
        for why in &ri.invalid_because {
            out.push(format!("run {}: {why}", ri.run_id));
        }
        if ri.selftest == "not run" {
            out.push(format!(
                "run {}: no probe self-test recorded: the measuring tool's confidence rests on its tests only",
                ri.run_id
            ));
        }
    }
    out.push(format!(
        "Percentile claims are statistical: a Pass states the exceedance probability the samples bound at {:.0} % confidence, not a guarantee; a max claim needs at least {} samples.",
        stats::CONFIDENCE * 100.0,
        opts.min_samples_max
    ));
    out.push("Latencies are compared at the HDR histogram's resolution (3 significant digits), conservatively at the upper edge of each bucket; the value at percentile p is the sample of rank ceil(p/100 n).".into());
    out.push("Measurements cover only the load, duration and configuration of these runs; they are not a worst-case execution time analysis.".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{can, can_msg, good_env, req, run};
    use crate::evidence::{evaluate, EvalOptions};
    use profiles::Profile;

    fn profile(reqs: Vec<profiles::Requirement>) -> Profile {
        Profile {
            name: "t".into(),
            description: String::new(),
            host: None,
            guest: None,
            can: None,
            requirements: reqs,
        }
    }

    fn pref() -> ProfileRef {
        ProfileRef {
            name: "t".into(),
            origin: "test".into(),
            sha256: "00".into(),
        }
    }

    #[test]
    fn measured_above_wcrt_is_a_deviation() {
        let runs = [run(
            good_env(),
            None,
            Some(can(vec![
                can_msg(0xC0, &[(300, 1000), (900, 2)], Some(800.0)),
                can_msg(0x1A0, &[(400, 500)], Some(1900.0)),
            ])),
        )];
        let ev = evaluate(&profile(vec![]), pref(), &runs, &EvalOptions::default()).unwrap();
        assert_eq!(ev.wcrt.len(), 2);
        assert!(ev.wcrt[0].deviation, "{:?}", ev.wcrt[0]);
        assert!(!ev.wcrt[1].deviation);
        assert_eq!(ev.summary.deviations, 1);
        assert!(ev.deviations[0].contains("model or the system is wrong"));
        assert_eq!(ev.distributions.len(), 2);
    }

    #[test]
    fn a_refuted_analysis_cannot_pass_a_slack_claim() {
        let runs = [run(
            good_env(),
            None,
            Some(can(vec![
                can_msg(0xC0, &[(300, 1000), (900, 2)], Some(800.0)),
                can_msg(0x1A0, &[(400, 500)], Some(1500.0)),
            ])),
        )];
        let p = profile(vec![
            req("W-ALL", Metric::WcrtSlack { id: None }, Some(100.0), None),
            req(
                "W-1A0",
                Metric::WcrtSlack { id: Some(0x1A0) },
                Some(100.0),
                None,
            ),
        ]);
        let ev = evaluate(&p, pref(), &runs, &EvalOptions::default()).unwrap();
        assert_eq!(ev.results[0].verdict, Verdict::Inconclusive);
        assert!(
            ev.results[0].reasons[0].contains("0x0C0"),
            "{:?}",
            ev.results[0]
        );
        assert_eq!(ev.results[1].verdict, Verdict::Pass);
    }
}
