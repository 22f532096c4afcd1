//! Requirements -> verdicts: read run directories (every file checked against the sha256
//! the manifest recorded, every record checked for consistency), pool their HDR
//! histograms, evaluate each requirement of the profile and judge whether the environment
//! can carry the claim at all.
//!
//! Verdicts (see `docs/evidence.md`):
//! - **Fail**: the measured value misses the bound. A miss is a miss: it stays Fail in an
//!   environment that is not valid evidence.
//! - **Pass**: the bound holds, the samples are enough for the percentile claimed at 95 %
//!   confidence, and every run that contributed data is valid evidence.
//! - **Inconclusive**: anything else (no data, too few samples, TCG, nested
//!   virtualization, no PREEMPT_RT, host tuning not verified, a partial run, a failed
//!   probe self-test); the reasons are listed.
//!
//! By concern: [`runs`] (reading runs, refusing duplicates), [`environment`] (is a run
//! valid evidence), [`metrics`] (the measured value of each metric), [`sufficiency`]
//! (do the samples carry the claim), [`pool`] (histograms pooled over runs, the
//! distributions), [`deviations`] (measured against analysed, deviations, limits).

use std::path::PathBuf;

use profiles::{Asil, Metric, Profile};
use record::{Environment, RecordError, ToolRun};
use serde::{Deserialize, Serialize};

pub mod deviations;
pub mod environment;
pub mod hostview;
pub mod metrics;
pub mod pool;
pub mod runs;
pub mod sufficiency;

pub use environment::environment_issues;
pub use runs::{check_distinct, profile_of_runs, RunData, SOURCES_DIR};

/// Evidence format version.
pub const EVIDENCE_FORMAT: u32 = 2;

/// Errors reading runs or evaluating them; each names the run or file.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A run directory problem (tampered, missing, unreadable, inconsistent file).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The profile copy in a manifest does not parse or validate.
    #[error("Profile copy in {path} is not usable")]
    Profile {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        #[source]
        source: profiles::ProfileError,
    },
    /// No profile given and none in the run.
    #[error("{path} holds no profile copy: give --profile")]
    NoProfile {
        /// The run.
        path: PathBuf,
    },
    /// Runs with different profiles and no --profile to decide.
    #[error("Runs use different profiles ({a} in {a_run}, {b} in {b_run}): give --profile")]
    ProfileMismatch {
        /// First profile (name sha256).
        a: String,
        /// Its run.
        a_run: String,
        /// Second profile.
        b: String,
        /// Its run.
        b_run: String,
    },
    /// The same run given twice (directly, or inside a merged run).
    #[error("{b} holds the same run as {a} ({why}): its samples would count twice")]
    Duplicate {
        /// First path.
        a: PathBuf,
        /// Second path.
        b: PathBuf,
        /// What they share.
        why: String,
    },
    /// Runs that cannot be merged.
    #[error("Cannot merge {what}")]
    Merge {
        /// What differs.
        what: String,
    },
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    /// The bound holds and the data and environment carry the claim.
    Pass,
    /// The bound is missed.
    Fail,
    /// The data or the environment cannot carry the claim.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// Which way a bound goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundKind {
    /// measured <= bound.
    AtMost,
    /// measured >= bound (WCRT slack).
    AtLeast,
}

/// Options of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Samples a max (percentile 100) claim needs before it can pass (default 1000: no
    /// exceedance in 1000 samples bounds the exceedance probability by 0.3 % at 95 %).
    pub min_samples_max: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            min_samples_max: 1000,
        }
    }
}

/// Where the profile came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// Where it was loaded from.
    pub origin: String,
    /// sha256 of its text.
    pub sha256: String,
}

/// A data file a result rests on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Trace {
    /// Run id.
    pub run_id: String,
    /// File in the run.
    pub file: String,
    /// Its sha256 (verified when read).
    pub sha256: String,
}

/// One requirement's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequirementResult {
    /// Requirement id.
    pub id: String,
    /// ASIL.
    pub asil: Asil,
    /// Requirement text.
    pub text: String,
    /// Metric as in the profile.
    pub metric: Metric,
    /// Metric in words (`probe latency max, all CPUs`).
    pub metric_label: String,
    /// Bound, in `unit`.
    pub bound: Option<f64>,
    /// Direction of the bound.
    pub bound_kind: BoundKind,
    /// `us`, `frames`, `periods`, `%`.
    pub unit: String,
    /// Measured (or analysed, for WCRT slack) value, in `unit`.
    pub measured: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict the data alone gives, before the environment is judged.
    pub data_verdict: Verdict,
    /// Samples the value rests on.
    pub samples: Option<u64>,
    /// What the samples support, with confidence (`0 of 60000 above 50 us: P <= 5.0e-5 at 95 %`).
    pub confidence: Option<String>,
    /// Why the verdict is what it is, from the data (no data, too few samples, notes).
    pub reasons: Vec<String>,
    /// Why the runs the value rests on are not valid evidence (empty: valid).
    #[serde(default)]
    pub environment: Vec<String>,
    /// Data files the value rests on.
    pub trace: Vec<Trace>,
}

/// Measured worst case of a CAN message against its analytic WCRT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WcrtComparison {
    /// `0x0C0 EngineSpeed`.
    pub message: String,
    /// CAN id.
    pub id: u32,
    /// Frames received.
    pub samples: u64,
    /// Worst measured reception latency (us).
    pub measured_max_us: Option<f64>,
    /// Analytic WCRT (us); None when unschedulable.
    pub wcrt_us: Option<f64>,
    /// Deadline (us).
    pub deadline_us: u64,
    /// True when the measurement exceeds the analytic bound.
    pub deviation: bool,
    /// The receiver's E2E check outcomes over the runs (E2E-protected messages only).
    #[serde(default)]
    pub e2e: Option<record::E2eCounts>,
}

/// A histogram bin for charts: [lo_us, hi_us) with its count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge (us).
    pub lo_us: f64,
    /// Upper edge (us).
    pub hi_us: f64,
    /// Samples in the bin.
    pub count: u64,
}

/// One latency distribution (per CPU, per CAN message), pooled over the runs. Min and max
/// are histogram values (bucket edges, see `record::hist`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// `probe CPU 1`, `CAN latency 0x0C0 EngineSpeed`.
    pub label: String,
    /// Samples.
    pub samples: u64,
    /// Min (us, lowest value of the smallest sample's bucket).
    pub min_us: f64,
    /// Max (us, highest value of the largest sample's bucket).
    pub max_us: f64,
    /// Mean (us).
    pub mean_us: f64,
    /// p99 (us).
    pub p99_us: f64,
    /// p99.99 (us).
    pub p9999_us: f64,
    /// Non-empty bins of equal width (OSADL-style latency plot data).
    pub bins: Vec<Bin>,
    /// Bounds (us) of the latency requirements that cover it (drawn on its chart).
    #[serde(default)]
    pub bounds_us: Vec<f64>,
    /// Files it comes from.
    pub trace: Vec<Trace>,
}

/// One run as the evidence shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Directory as given.
    pub path: String,
    /// sha256 of its manifest.json.
    pub manifest_sha256: String,
    /// Creation time.
    pub created: String,
    /// Tools that wrote into it (name, version, git sha, args, times, partial).
    pub tools: Vec<ToolRun>,
    /// Environment as recorded.
    pub environment: Environment,
    /// Files with sha256.
    pub files: Vec<Trace>,
    /// For merged runs: the runs merged.
    pub sources: Vec<String>,
    /// Why this run is not valid evidence (empty: valid).
    pub invalid_because: Vec<String>,
    /// The probe self-test, in words.
    pub selftest: String,
    /// Host tuning check, in words.
    pub host_check: String,
    /// Guest tuning check (`rt-guest check`), in words (shown, not judged).
    #[serde(default)]
    pub guest_check: String,
}

/// Counts of verdicts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Passed.
    pub pass: usize,
    /// Failed.
    pub fail: usize,
    /// Inconclusive.
    pub inconclusive: usize,
    /// Measurements above the analytic WCRT.
    pub deviations: usize,
}

/// The whole evidence: what every report format renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// [`EVIDENCE_FORMAT`].
    pub format: u32,
    /// When evaluated (RFC 3339 UTC).
    pub generated: String,
    /// `validation` version.
    pub tool_version: String,
    /// `validation` git sha.
    pub tool_git_sha: String,
    /// The profile the requirements come from.
    pub profile: ProfileRef,
    /// Samples a max claim needs.
    pub min_samples_max: u64,
    /// The runs.
    pub runs: Vec<RunInfo>,
    /// One result per requirement, in profile order.
    pub results: Vec<RequirementResult>,
    /// Measured vs analysed, per CAN message.
    pub wcrt: Vec<WcrtComparison>,
    /// Deviations: failed requirements, measurements above the analytic bound.
    pub deviations: Vec<String>,
    /// Limits: what this evidence cannot claim.
    pub limits: Vec<String>,
    /// Latency distributions for the charts.
    pub distributions: Vec<Distribution>,
    /// Verdict counts.
    pub summary: Summary,
    /// The guest's worst spikes beside the host's scheduling of their vCPU (runs with a
    /// `host-trace.json`), largest first.
    #[serde(default)]
    pub host_view: Vec<hostview::SpikeHostView>,
    /// Worst spikes no host trace could place, and why.
    #[serde(default)]
    pub host_view_unplaced: Vec<String>,
    /// The host traces: guest clock offset and uncertainty, vCPU threads, events.
    #[serde(default)]
    pub host_traces: Vec<String>,
    /// The sample-size rule per percentile claim: samples needed, samples had, time.
    #[serde(default)]
    pub sample_size: Vec<String>,
}

impl Evidence {
    /// True when any requirement failed.
    pub fn any_fail(&self) -> bool {
        self.summary.fail > 0
    }

    /// FAIL if any requirement failed, INCONCLUSIVE if any is (or there are none), else PASS.
    pub fn overall(&self) -> Verdict {
        if self.summary.fail > 0 {
            Verdict::Fail
        } else if self.summary.inconclusive > 0 || self.results.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }
}

fn count(results: &[RequirementResult], v: Verdict) -> usize {
    results.iter().filter(|r| r.verdict == v).count()
}

/// Evaluate every requirement of `profile` over `runs`: a sequence of the stages of the
/// module docs.
pub fn evaluate(
    profile: &Profile,
    profile_ref: ProfileRef,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<Evidence, EvidenceError> {
    let mut results = profile
        .requirements
        .iter()
        .map(|req| metrics::evaluate_one(req, runs, opts))
        .collect::<Result<Vec<_>, _>>()?;
    let wcrt = deviations::wcrt_comparisons(runs)?;
    deviations::refute_slack_claims(&mut results, &wcrt);
    let distributions = pool::distributions(runs, &profile.requirements)?;
    let run_infos: Vec<RunInfo> = runs.iter().map(environment::run_info).collect();
    let deviation_list = deviations::deviations(&results, &wcrt);
    let limits = deviations::limits(runs, &run_infos, &profile_ref, opts);
    let (host_view, host_view_unplaced) = hostview::spike_views(runs);
    let host_traces = hostview::trace_lines(runs);
    let interval = runs
        .iter()
        .filter_map(|r| r.probe.as_ref())
        .map(|p| p.settings.interval_ns)
        .max();
    let sample_size = sufficiency::sample_size_rules(&results, interval, opts);
    let summary = Summary {
        pass: count(&results, Verdict::Pass),
        fail: count(&results, Verdict::Fail),
        inconclusive: count(&results, Verdict::Inconclusive),
        deviations: wcrt.iter().filter(|c| c.deviation).count(),
    };
    Ok(Evidence {
        format: EVIDENCE_FORMAT,
        generated: record::now_utc(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        tool_git_sha: record::GIT_SHA.to_string(),
        profile: profile_ref,
        min_samples_max: opts.min_samples_max,
        runs: run_infos,
        results,
        wcrt,
        deviations: deviation_list,
        limits,
        distributions,
        summary,
        host_view,
        host_view_unplaced,
        host_traces,
        sample_size,
    })
}

#[cfg(test)]
pub(crate) mod fixtures;

/// The result in words, as every report prints it.
impl RequirementResult {
    /// The bound in words: `<= 50 us`, `>= 200 us`.
    pub fn bound_text(&self) -> String {
        match self.bound {
            None => "none given".into(),
            Some(b) => format!(
                "{} {} {}",
                match self.bound_kind {
                    BoundKind::AtMost => "<=",
                    BoundKind::AtLeast => ">=",
                },
                crate::fmt::fmt_num(b),
                self.unit
            ),
        }
    }

    /// Measured value in words.
    pub fn measured_text(&self) -> String {
        match self.measured {
            None => "-".into(),
            Some(v) => format!("{} {}", crate::fmt::fmt_num(v), self.unit),
        }
    }

    /// `n = 60000; 0 of 60000 samples above ...` (or `-`).
    pub fn samples_text(&self) -> String {
        let parts: Vec<String> = self
            .samples
            .map(|n| format!("n = {n}"))
            .into_iter()
            .chain(self.confidence.clone())
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join("; ")
        }
    }
}
