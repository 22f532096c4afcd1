//! Requirements -> verdicts: read run directories (every file checked against the sha256
//! the manifest recorded), pool their HDR histograms, evaluate each requirement of the
//! profile and judge whether the environment can carry the claim at all.
//!
//! Verdicts (see `docs/evidence.md`):
//! - **Fail**: the measured value misses the bound. A miss is a miss: it stays Fail in an
//!   environment that is not valid evidence.
//! - **Pass**: the bound holds, the samples are enough for the percentile claimed at 95 %
//!   confidence, and every run that contributed data is valid evidence.
//! - **Inconclusive**: anything else (no data, too few samples, TCG, nested
//!   virtualization, no PREEMPT_RT, host tuning not verified, a partial run, a failed
//!   probe self-test); the reasons are listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use profiles::{Asil, Metric, Profile, Requirement};
use rt_sys::kernel::Virtualization;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::{self, f};
use record::hist::{self, HistError};
use record::{
    self, CanMessageRecord, CanRecord, Environment, Manifest, ProbeRecord, RecordError, RunDir,
    ToolRun,
};

/// Evidence format version.
pub const EVIDENCE_FORMAT: u32 = 1;

/// Directory inside a merged run that holds the source runs' manifests and logs.
pub const SOURCES_DIR: &str = "sources";

/// Errors reading runs or evaluating them; each names the run or file.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A run directory problem (tampered, missing, unreadable file).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A file whose size differs from the manifest's (truncated or appended to).
    #[error("{path} was {how} after the run: {actual} bytes, the manifest recorded {expected}")]
    Size {
        /// The file.
        path: PathBuf,
        /// "truncated" or "extended".
        how: &'static str,
        /// Size now.
        actual: u64,
        /// Size in the manifest.
        expected: u64,
    },
    /// A histogram in a record that does not decode.
    #[error("{path}: {what}")]
    Histogram {
        /// The record file.
        path: PathBuf,
        /// Which histogram (thread / message).
        what: String,
        /// The cause.
        #[source]
        source: HistError,
    },
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
    /// The same run given twice.
    #[error("{b} is the same run as {a} (same manifest sha256): its samples would count twice")]
    Duplicate {
        /// First path.
        a: PathBuf,
        /// Second path.
        b: PathBuf,
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

/// A run directory read and verified.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The directory.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// sha256 of `manifest.json` as read.
    pub manifest_sha256: String,
    /// `probe.json`, when the run has one.
    pub probe: Option<ProbeRecord>,
    /// `can.json`, when the run has one.
    pub can: Option<CanRecord>,
    /// For merged runs: the source runs' manifests (`sources/*.manifest.json`).
    pub sources: Vec<Manifest>,
}

/// Check every file the manifest lists: present, same size, same sha256.
pub fn verify_dir(rd: &RunDir) -> Result<(), EvidenceError> {
    for (name, entry) in &rd.manifest().files {
        let p = rd.path().join(name);
        let meta = fs::metadata(&p).map_err(|_| RecordError::Missing { path: p.clone() })?;
        if meta.len() != entry.bytes {
            return Err(EvidenceError::Size {
                how: if meta.len() < entry.bytes {
                    "truncated"
                } else {
                    "extended"
                },
                path: p,
                actual: meta.len(),
                expected: entry.bytes,
            });
        }
        rd.read_verified(name)?;
    }
    Ok(())
}

impl RunData {
    /// Open a run directory, verify every file, parse its records and decode-check every
    /// histogram.
    pub fn open(path: &Path) -> Result<RunData, EvidenceError> {
        let rd = RunDir::open(path)?;
        verify_dir(&rd)?;
        let mpath = path.join(record::MANIFEST);
        let mbytes = fs::read(&mpath).map_err(|source| RecordError::Io {
            path: mpath.clone(),
            source,
        })?;
        let manifest = rd.manifest().clone();
        let probe: Option<ProbeRecord> = if manifest.files.contains_key(record::PROBE) {
            Some(rd.read_json(record::PROBE)?)
        } else {
            None
        };
        let can: Option<CanRecord> = if manifest.files.contains_key(record::CAN) {
            Some(rd.read_json(record::CAN)?)
        } else {
            None
        };
        let mut sources = Vec::new();
        for name in manifest.files.keys() {
            if name.starts_with(&format!("{SOURCES_DIR}/")) && name.ends_with(".manifest.json") {
                sources.push(rd.read_json::<Manifest>(name)?);
            }
        }
        let data = RunData {
            path: path.to_path_buf(),
            manifest,
            manifest_sha256: record::sha256_hex(&mbytes),
            probe,
            can,
            sources,
        };
        data.check_histograms()?;
        Ok(data)
    }

    fn check_histograms(&self) -> Result<(), EvidenceError> {
        if let Some(p) = &self.probe {
            for t in &p.threads {
                self.decode(record::PROBE, &format!("CPU {}", t.cpu), &t.latency.hdr)?;
            }
        }
        if let Some(c) = &self.can {
            for m in &c.messages {
                self.decode(record::CAN, &msg_label(m), &m.latency.hdr)?;
                self.decode(record::CAN, &msg_label(m), &m.jitter.hdr)?;
            }
        }
        Ok(())
    }

    fn decode(&self, file: &str, what: &str, hdr: &str) -> Result<Histogram<u64>, EvidenceError> {
        hist::decode(hdr).map_err(|source| EvidenceError::Histogram {
            path: self.path.join(file),
            what: what.to_string(),
            source,
        })
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.manifest.run_id
    }

    fn trace(&self, file: &str) -> Trace {
        Trace {
            run_id: self.manifest.run_id.clone(),
            file: file.to_string(),
            sha256: self
                .manifest
                .files
                .get(file)
                .map(|e| e.sha256.clone())
                .unwrap_or_default(),
        }
    }
}

/// `0x0C0 EngineSpeed`.
pub fn msg_label(m: &CanMessageRecord) -> String {
    if m.extended {
        format!("0x{:08X} {}", m.id, m.name)
    } else {
        format!("0x{:03X} {}", m.id, m.name)
    }
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

/// One latency distribution (per CPU, per CAN message), pooled over the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// `probe CPU 1`, `CAN latency 0x0C0 EngineSpeed`.
    pub label: String,
    /// Samples.
    pub samples: u64,
    /// Min (us).
    pub min_us: f64,
    /// Max (us).
    pub max_us: f64,
    /// Mean (us).
    pub mean_us: f64,
    /// p99 (us).
    pub p99_us: f64,
    /// p99.99 (us).
    pub p9999_us: f64,
    /// Non-empty bins of equal width (OSADL-style latency plot data).
    pub bins: Vec<Bin>,
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
}

impl Evidence {
    /// True when any requirement failed.
    pub fn any_fail(&self) -> bool {
        self.summary.fail > 0
    }
}

/// Refuse a run given twice (same manifest): its samples would count twice.
pub fn check_distinct(runs: &[RunData]) -> Result<(), EvidenceError> {
    for (i, a) in runs.iter().enumerate() {
        if let Some(b) = runs[..i]
            .iter()
            .find(|b| b.manifest_sha256 == a.manifest_sha256)
        {
            return Err(EvidenceError::Duplicate {
                a: b.path.clone(),
                b: a.path.clone(),
            });
        }
    }
    Ok(())
}

/// Choose the profile: the given one, or the copy in the runs' manifests (all the same).
pub fn profile_of_runs(runs: &[RunData]) -> Result<(Profile, ProfileRef), EvidenceError> {
    let mut chosen: Option<(&RunData, &record::ProfileCopy)> = None;
    for r in runs {
        let Some(copy) = &r.manifest.profile else {
            continue;
        };
        match chosen {
            None => chosen = Some((r, copy)),
            Some((cr, c)) if c.sha256 != copy.sha256 => {
                return Err(EvidenceError::ProfileMismatch {
                    a: format!("{} {}", c.name, short(&c.sha256)),
                    a_run: cr.id().to_string(),
                    b: format!("{} {}", copy.name, short(&copy.sha256)),
                    b_run: r.id().to_string(),
                })
            }
            Some(_) => {}
        }
    }
    let Some((run, copy)) = chosen else {
        return Err(EvidenceError::NoProfile {
            path: runs.first().map(|r| r.path.clone()).unwrap_or_default(),
        });
    };
    let mpath = run.path.join(record::MANIFEST);
    let origin = format!("{} (profile copy, from {})", mpath.display(), copy.origin);
    let profile =
        profiles::parse(&copy.text, &origin).map_err(|source| EvidenceError::Profile {
            path: mpath.clone(),
            source,
        })?;
    profiles::validate(&profile).map_err(|errors| EvidenceError::Profile {
        path: mpath.clone(),
        source: profiles::ProfileError::Invalid {
            origin: origin.clone(),
            errors,
        },
    })?;
    Ok((
        profile,
        ProfileRef {
            name: copy.name.clone(),
            origin,
            sha256: record::sha256_hex(copy.text.as_bytes()),
        },
    ))
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

// ---------------------------------------------------------------- environment

/// Is `host_check` (the `rt-host check --json` output) all ok?
///
/// `rt-host check --json` prints `{"profile", "met", "summary", "vm", "changes": [{"item",
/// "target", "status": "ok" | "differs" | "needs-reboot" | "not-permitted" |
/// "not-applicable", ...}]}`. Every item must be `ok` or `not-applicable`: an item the
/// kernel refused (`not-permitted`) is tuning that is not in place, so the host is not
/// verified even though `check` exits 0 for it. Also accepted: a top-level boolean `ok` /
/// `all_ok` / `passed` / `met` (false fails), and item lists under `items`, `checks`,
/// `results` or at the top level, each item with `ok: bool` or a `status`.
pub fn host_check_ok(v: &Value) -> Result<(), String> {
    let mut flag = None;
    for key in ["ok", "all_ok", "passed", "met"] {
        if let Some(b) = v.get(key).and_then(Value::as_bool) {
            flag = Some((key, b));
        }
    }
    let items = match v {
        Value::Array(a) => Some(a),
        _ => ["changes", "items", "checks", "results"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_array)),
    };
    let Some(items) = items else {
        return match flag {
            Some((_, true)) => Ok(()),
            Some((key, false)) => Err(format!("rt-host check reported {key}: false")),
            None => Err("rt-host check output has no ok flag and no item list".into()),
        };
    };
    if items.is_empty() && flag.is_none() {
        return Err("rt-host check listed no items".into());
    }
    let bad: Vec<String> = items
        .iter()
        .filter(|it| !item_ok(it))
        .map(|it| {
            let name: Vec<&str> = ["item", "name", "target", "what"]
                .iter()
                .filter_map(|k| it.get(*k).and_then(Value::as_str))
                .take(2)
                .collect();
            let name = if name.is_empty() {
                it.to_string()
            } else {
                name.join(" ")
            };
            match it.get("status").and_then(Value::as_str) {
                Some(st) => format!("{name}: {st}"),
                None => name,
            }
        })
        .collect();
    if bad.is_empty() {
        match flag {
            Some((key, false)) => Err(format!("rt-host check reported {key}: false")),
            _ => Ok(()),
        }
    } else {
        Err(format!(
            "rt-host check: {} of {} items not ok ({}{})",
            bad.len(),
            items.len(),
            bad.iter().take(6).cloned().collect::<Vec<_>>().join(", "),
            if bad.len() > 6 { ", ..." } else { "" }
        ))
    }
}

fn item_ok(it: &Value) -> bool {
    if let Some(b) = it.get("ok").and_then(Value::as_bool) {
        return b;
    }
    it.get("status")
        .and_then(Value::as_str)
        .map(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "ok" | "pass" | "passed" | "applied" | "match" | "matches" | "not-applicable"
            )
        })
        .unwrap_or(false)
}

/// The host's own virtualization from `host_check`, when it says (`kernel.virtualization`,
/// `environment.kernel.virtualization` or `virtualization`).
fn host_virtualization(v: &Value) -> Option<String> {
    [
        "/kernel/virtualization",
        "/environment/kernel/virtualization",
        "/facts/virtualization",
        "/virtualization",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_str))
    .map(str::to_string)
}

/// The self-test in words, and whether it failed.
fn selftest_words(v: Option<&Value>) -> (String, bool) {
    let Some(v) = v else {
        return ("not run".into(), false);
    };
    let ok = ["ok", "passed", "pass"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_bool));
    let rt_guest = match (
        v.get("injected").and_then(Value::as_u64),
        v.get("detected").and_then(Value::as_u64),
        v.get("delay_us").and_then(Value::as_f64),
        v.get("max_us").and_then(Value::as_f64),
    ) {
        // `rt-guest selftest`: known delays injected, detected by the probe.
        (Some(inj), Some(det), Some(d), Some(max)) => Some(format!(
            ": {inj} delays of {} us injected on CPU {}, {det} detected, max {} us",
            fmt_num(d),
            v.get("cpu").and_then(Value::as_u64).unwrap_or(0),
            fmt_num(max)
        )),
        _ => None,
    };
    let detail = ["summary", "message", "detail"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .map(|s| format!(": {s}"))
        .or(rt_guest)
        .unwrap_or_default();
    match ok {
        Some(true) => (format!("passed{detail}"), false),
        Some(false) => (format!("FAILED{detail}"), true),
        None => {
            let mut s = v.to_string();
            if s.len() > 200 {
                s.truncate(s.floor_char_boundary_compat(200));
                s.push_str("...");
            }
            (format!("recorded, no ok flag: {s}"), false)
        }
    }
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorBoundary for String {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Why the host in `host_check` is itself a guest (so the measured VM was nested): the
/// `nested-virtualization` item of `rt-host check --json` when it is not ok, or the host's
/// kernel facts when they name a hypervisor.
fn nested_host(hc: &Value) -> Option<String> {
    if let Some(item) = hc.get("changes").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .find(|c| c.get("item").and_then(Value::as_str) == Some("nested-virtualization"))
    }) {
        if item_ok(item) {
            return None;
        }
        return Some(
            item.get("current")
                .and_then(Value::as_str)
                .unwrap_or("rt-host check found the host virtualized")
                .to_string(),
        );
    }
    host_virtualization(hc)
        .filter(|v| v != "none" && !v.is_empty())
        .map(|v| format!("the host itself runs under {v}"))
}

/// The host kernel release when `rt-host check --json` says it is not PREEMPT_RT.
fn host_kernel_not_rt(hc: &Value) -> Option<String> {
    let item = hc
        .get("changes")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("item").and_then(Value::as_str) == Some("kernel"))?;
    let current = item.get("current").and_then(Value::as_str)?;
    current.contains("not PREEMPT_RT").then(|| {
        item.get("target")
            .and_then(Value::as_str)
            .map(|t| t.trim_start_matches("kernel ").to_string())
            .unwrap_or_else(|| "?".into())
    })
}

/// Why the environment of `m` is not valid evidence (empty: valid). `prefix` names a
/// source run of a merged record.
pub fn environment_issues(m: &Manifest, prefix: &str) -> Vec<String> {
    let env = &m.environment;
    let mut out = Vec::new();
    match &env.kernel {
        None => out.push("no kernel facts recorded: the environment is unknown".into()),
        Some(k) => {
            if k.virtualization == Virtualization::Tcg {
                out.push(
                    "measured under QEMU TCG emulation: timing is not real-time, not valid evidence"
                        .into(),
                );
            }
            if !k.preempt_rt {
                out.push(format!(
                    "kernel {} is not PREEMPT_RT: not valid evidence",
                    k.release
                ));
            }
        }
    }
    if let Some(hc) = &env.host_check {
        if let Some(why) = nested_host(hc) {
            out.push(format!("nested virtualization ({why}): not valid evidence"));
        }
        if let Some(release) = host_kernel_not_rt(hc) {
            out.push(format!(
                "the host kernel {release} is not PREEMPT_RT: not valid evidence"
            ));
        }
    }
    match &env.host_check {
        None => out
            .push("host tuning not verified: no rt-host check result recorded at run time".into()),
        Some(v) => {
            if let Err(e) = host_check_ok(v) {
                out.push(format!("host tuning not verified: {e}"));
            }
        }
    }
    let (_, selftest_failed) = selftest_words(env.selftest.as_ref());
    if selftest_failed {
        out.push("the probe self-test failed: the measuring tool is not validated".into());
    }
    for t in m.tools.iter().filter(|t| t.partial) {
        out.push(format!(
            "partial run: {} was interrupted ({})",
            t.tool,
            t.partial_reason.as_deref().unwrap_or("no reason recorded")
        ));
    }
    if prefix.is_empty() {
        out
    } else {
        out.into_iter().map(|s| format!("{prefix}{s}")).collect()
    }
}

/// Issues of a run: its own, or for a merged run those of every source (the merged
/// manifest's own environment is only a summary).
fn run_issues(r: &RunData) -> Vec<String> {
    let mut out: Vec<String> = if r.sources.is_empty() {
        environment_issues(&r.manifest, "")
    } else {
        let mut v = Vec::new();
        for s in &r.sources {
            v.extend(environment_issues(s, &format!("source {}: ", s.run_id)));
        }
        v.extend(
            r.manifest
                .tools
                .iter()
                .filter(|t| t.partial)
                .map(|t| format!("partial run: {} was interrupted", t.tool)),
        );
        v
    };
    if r.probe.as_ref().is_some_and(|p| p.partial) {
        out.push("partial run: probe.json is marked partial".into());
    }
    if r.can.as_ref().is_some_and(|c| c.partial) {
        out.push("partial run: can.json is marked partial".into());
    }
    out.sort();
    out.dedup();
    out
}

fn run_info(r: &RunData) -> RunInfo {
    let env = &r.manifest.environment;
    let host_check = match &env.host_check {
        None => "not recorded".to_string(),
        Some(v) => match host_check_ok(v) {
            Ok(()) => "all items ok".to_string(),
            Err(e) => e,
        },
    };
    RunInfo {
        run_id: r.id().to_string(),
        path: r.path.display().to_string(),
        manifest_sha256: r.manifest_sha256.clone(),
        created: r.manifest.created.clone(),
        tools: r.manifest.tools.clone(),
        environment: env.clone(),
        files: r.manifest.files.keys().map(|n| r.trace(n)).collect(),
        sources: r.manifest.sources.clone(),
        invalid_because: run_issues(r),
        selftest: selftest_words(env.selftest.as_ref()).0,
        host_check,
        guest_check: match &env.guest_check {
            None => "not recorded".to_string(),
            Some(v) => match host_check_ok(v) {
                Ok(()) => "all items ok".to_string(),
                Err(e) => e.replace("rt-host check", "rt-guest check"),
            },
        },
    }
}

// ---------------------------------------------------------------- pooling

/// Histograms pooled over runs, with the runs and files they came from.
struct Pool {
    hist: Histogram<u64>,
    trace: BTreeSet<Trace>,
    issues: BTreeSet<String>,
    found: bool,
    out_of_range: u64,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            hist: hist::new_ns(),
            trace: BTreeSet::new(),
            issues: BTreeSet::new(),
            found: false,
            out_of_range: 0,
        }
    }

    fn add(
        &mut self,
        run: &RunData,
        file: &str,
        what: &str,
        hdr: &str,
    ) -> Result<(), EvidenceError> {
        let h = run.decode(file, what, hdr)?;
        self.hist.add(&h).map_err(|e| EvidenceError::Merge {
            what: format!("{what} of {}: {e:?}", run.path.join(file).display()),
        })?;
        self.trace.insert(run.trace(file));
        self.issues.extend(run_issues(run));
        self.found = true;
        Ok(())
    }
}

fn ns_to_us(ns: u64) -> f64 {
    f(ns) / 1000.0
}

fn pct_label(p: f64) -> String {
    if p >= 100.0 {
        "max".into()
    } else {
        format!("p{p}")
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
        let k = stats::floor_u64(us / width);
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

fn distribution(label: String, pool: &Pool) -> Distribution {
    let h = &pool.hist;
    let e = h.is_empty();
    Distribution {
        label,
        samples: h.len(),
        min_us: if e { 0.0 } else { ns_to_us(h.min()) },
        max_us: if e { 0.0 } else { ns_to_us(h.max()) },
        mean_us: if e { 0.0 } else { h.mean() / 1000.0 },
        p99_us: if e {
            0.0
        } else {
            ns_to_us(h.value_at_percentile(99.0))
        },
        p9999_us: if e {
            0.0
        } else {
            ns_to_us(h.value_at_percentile(99.99))
        },
        bins: bins(h),
        trace: pool.trace.iter().cloned().collect(),
    }
}

// ---------------------------------------------------------------- evaluation

/// Evaluate every requirement of `profile` over `runs`.
pub fn evaluate(
    profile: &Profile,
    profile_ref: ProfileRef,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<Evidence, EvidenceError> {
    let mut results = Vec::new();
    for req in &profile.requirements {
        results.push(evaluate_one(req, runs, opts)?);
    }
    let wcrt = wcrt_comparisons(runs)?;
    // An analysis the measurement contradicts cannot carry a slack claim.
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
    let distributions = distributions(runs)?;
    let run_infos: Vec<RunInfo> = runs.iter().map(run_info).collect();

    let mut deviations = Vec::new();
    for r in results.iter().filter(|r| r.verdict == Verdict::Fail) {
        deviations.push(format!(
            "{} ({}) failed: {} measured {} {} against the bound {}{}",
            r.id,
            r.asil,
            r.metric_label,
            fmt_opt(r.measured),
            r.unit,
            crate::report::bound_text(r),
            if r.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reasons.join("; "))
            }
        ));
    }
    for c in wcrt.iter().filter(|c| c.deviation) {
        deviations.push(format!(
            "{}: measured worst case {} us is above the analytic WCRT {} us: the model or the system is wrong",
            c.message,
            fmt_opt(c.measured_max_us),
            fmt_opt(c.wcrt_us)
        ));
    }

    let mut limits: Vec<String> = Vec::new();
    for r in runs {
        match &r.manifest.profile {
            Some(p) if p.sha256 != profile_ref.sha256 => limits.push(format!(
                "run {} was made with profile {} (sha256 {}), not with the evaluated profile {} (sha256 {}): its settings may not be the ones these requirements assume",
                r.id(),
                p.name,
                short(&p.sha256),
                profile_ref.name,
                short(&profile_ref.sha256)
            )),
            None => limits.push(format!("run {} records no profile", r.id())),
            Some(_) => {}
        }
    }
    for ri in &run_infos {
        for why in &ri.invalid_because {
            limits.push(format!("run {}: {why}", ri.run_id));
        }
        if ri.selftest == "not run" {
            limits.push(format!(
                "run {}: no probe self-test recorded: the measuring tool's confidence rests on its tests only",
                ri.run_id
            ));
        }
    }
    limits.push(format!(
        "Percentile claims are statistical: a Pass states the exceedance probability the samples bound at {:.0} % confidence, not a guarantee; a max claim needs at least {} samples.",
        stats::CONFIDENCE * 100.0,
        opts.min_samples_max
    ));
    limits.push("Latencies are compared at the HDR histogram's resolution (3 significant digits), conservatively at the upper edge of each bucket.".into());
    limits.push("Measurements cover only the load, duration and configuration of these runs; they are not a worst-case execution time analysis.".into());

    let summary = Summary {
        pass: results
            .iter()
            .filter(|r| r.verdict == Verdict::Pass)
            .count(),
        fail: results
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .count(),
        inconclusive: results
            .iter()
            .filter(|r| r.verdict == Verdict::Inconclusive)
            .count(),
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
        deviations,
        limits,
        distributions,
        summary,
    })
}

/// A number as the reports print it (`-` when absent).
pub fn fmt_opt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) => fmt_num(x),
    }
}

/// A number with at most 3 decimals, trailing zeros dropped.
pub fn fmt_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn fmt_prob(p: f64) -> String {
    format!("{p:.2e}")
}

fn base(req: &Requirement, label: String, unit: &str, kind: BoundKind) -> RequirementResult {
    let bound = match &req.metric {
        Metric::ProbeLatency { .. }
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

fn evaluate_one(
    req: &Requirement,
    runs: &[RunData],
    opts: &EvalOptions,
) -> Result<RequirementResult, EvidenceError> {
    let mut r = match &req.metric {
        Metric::ProbeLatency { percentile, cpu } => {
            let mut r = base(
                req,
                format!(
                    "probe wakeup latency {}, {}",
                    pct_label(*percentile),
                    which_cpu(*cpu)
                ),
                "us",
                BoundKind::AtMost,
            );
            let mut pool = Pool::new();
            let mut missing = true;
            for run in runs {
                let Some(p) = &run.probe else { continue };
                missing = false;
                for t in p.threads.iter().filter(|t| cpu.is_none_or(|c| c == t.cpu)) {
                    pool.add(
                        run,
                        record::PROBE,
                        &format!("CPU {}", t.cpu),
                        &t.latency.hdr,
                    )?;
                    pool.out_of_range += t.out_of_range;
                }
            }
            if missing {
                r.reasons.push("no probe.json in any run".into());
            } else if !pool.found {
                r.reasons
                    .push(format!("no probe thread measured {}", which_cpu(*cpu)));
            }
            judge_percentile(&mut r, &pool, *percentile, opts);
            if pool.out_of_range > 0 {
                r.reasons.push(format!(
                    "{} values were outside the histogram range (early wakeups or above 60 s) and are not in the distribution",
                    pool.out_of_range
                ));
            }
            finish(&mut r, pool)
        }
        Metric::CanLatency { percentile, id } | Metric::CanJitter { percentile, id } => {
            let jitter = matches!(req.metric, Metric::CanJitter { .. });
            let mut r = base(
                req,
                format!(
                    "CAN {} {}, {}",
                    if jitter {
                        "inter-arrival jitter"
                    } else {
                        "reception latency"
                    },
                    pct_label(*percentile),
                    which_msg(*id, runs)
                ),
                "us",
                BoundKind::AtMost,
            );
            let mut pool = Pool::new();
            let mut missing = true;
            for run in runs {
                let Some(c) = &run.can else { continue };
                missing = false;
                for m in c.messages.iter().filter(|m| id.is_none_or(|i| i == m.id)) {
                    let h = if jitter { &m.jitter } else { &m.latency };
                    pool.add(run, record::CAN, &msg_label(m), &h.hdr)?;
                }
            }
            if missing {
                r.reasons.push("no can.json in any run".into());
            } else if !pool.found {
                r.reasons
                    .push(format!("no message {} in can.json", which_msg(*id, runs)));
            }
            judge_percentile(&mut r, &pool, *percentile, opts);
            finish(&mut r, pool)
        }
        Metric::ProbeMissed => {
            let mut r = base(
                req,
                "probe missed periods, all CPUs".into(),
                "periods",
                BoundKind::AtMost,
            );
            let mut pool = Pool::new();
            let (mut missed, mut samples) = (0u64, 0u64);
            for run in runs {
                let Some(p) = &run.probe else { continue };
                for t in &p.threads {
                    missed += t.missed_periods;
                    samples += t.samples;
                    pool.trace.insert(run.trace(record::PROBE));
                    pool.issues.extend(run_issues(run));
                    pool.found = true;
                }
            }
            judge_count(
                &mut r,
                pool.found,
                missed,
                samples,
                "no probe.json in any run",
            );
            finish(&mut r, pool)
        }
        Metric::CanDeadlineMisses { id } | Metric::CanLoss { id } => {
            let loss = matches!(req.metric, Metric::CanLoss { .. });
            let mut r = base(
                req,
                format!(
                    "CAN {}, {}",
                    if loss {
                        "lost frames"
                    } else {
                        "deadline misses (late or lost frames)"
                    },
                    which_msg(*id, runs)
                ),
                "frames",
                BoundKind::AtMost,
            );
            let mut pool = Pool::new();
            let (mut count, mut sent, mut lost) = (0u64, 0u64, 0u64);
            for run in runs {
                let Some(c) = &run.can else { continue };
                for m in c.messages.iter().filter(|m| id.is_none_or(|i| i == m.id)) {
                    count += if loss {
                        m.lost
                    } else {
                        m.deadline_misses + m.lost
                    };
                    lost += m.lost;
                    sent += m.sent;
                    pool.trace.insert(run.trace(record::CAN));
                    pool.issues.extend(run_issues(run));
                    pool.found = true;
                }
            }
            let found = pool.found && sent > 0;
            let missing = if runs.iter().any(|r| r.can.is_some()) {
                "no CAN frames sent for this metric"
            } else {
                "no can.json in any run"
            };
            judge_count(&mut r, found, count, sent, missing);
            if !loss && lost > 0 {
                r.reasons
                    .push(format!("{lost} lost frames count as deadline misses"));
            }
            finish(&mut r, pool)
        }
        Metric::BusLoad => {
            let mut r = base(
                req,
                "CAN bus load (measured)".into(),
                "%",
                BoundKind::AtMost,
            );
            let mut pool = Pool::new();
            let mut worst: Option<(f64, f64)> = None;
            for run in runs {
                let Some(c) = &run.can else { continue };
                if c.elapsed_s <= 0.0 {
                    continue;
                }
                pool.trace.insert(run.trace(record::CAN));
                pool.issues.extend(run_issues(run));
                pool.found = true;
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
        Metric::WcrtSlack { id } => {
            let mut r = base(
                req,
                format!(
                    "analytic WCRT slack (deadline - WCRT), {}",
                    which_msg(*id, runs)
                ),
                "us",
                BoundKind::AtLeast,
            );
            let mut trace = BTreeSet::new();
            let mut worst: Option<f64> = None;
            let mut unschedulable = Vec::new();
            let mut found = false;
            // Analysis depends on the profile only: the first run with can.json carries it.
            if let Some(run) = runs.iter().find(|r| r.can.is_some()) {
                let c = run.can.as_ref().expect("found above");
                for m in c.messages.iter().filter(|m| id.is_none_or(|i| i == m.id)) {
                    found = true;
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
            r.trace = trace.into_iter().collect();
            if !found {
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
                r.confidence =
                    Some("response-time analysis (Davis et al. 2007), not a measurement".into());
            } else {
                r.reasons.push("the requirement gives no bound".into());
            }
            // Analysis does not depend on where it ran: the environment does not matter.
            r.verdict = r.data_verdict;
            return Ok(r);
        }
    };
    r.trace.sort();
    Ok(r)
}

/// Set the final verdict: Fail stays Fail; Pass in an environment that is not valid
/// evidence becomes Inconclusive.
fn finish(r: &mut RequirementResult, pool: Pool) -> RequirementResult {
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

fn judge_count(r: &mut RequirementResult, found: bool, count: u64, samples: u64, missing: &str) {
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

fn judge_percentile(r: &mut RequirementResult, pool: &Pool, p: f64, opts: &EvalOptions) {
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
    let value_ns = if p >= 100.0 {
        h.max()
    } else {
        h.value_at_percentile(p)
    };
    r.measured = Some(ns_to_us(value_ns));
    let Some(bound_us) = r.bound else {
        r.reasons.push("the requirement gives no bound".into());
        return;
    };
    let bound_ns = bound_us * 1000.0;
    // Samples above the bound, by the upper edge of their bucket (conservative).
    let k: u64 = h
        .iter_recorded()
        .filter(|v| f(v.value_iterated_to()) > bound_ns)
        .map(|v| v.count_at_value())
        .sum();
    let u = stats::upper_bound(k, n);
    if f(value_ns) > bound_ns {
        r.data_verdict = Verdict::Fail;
        r.confidence = Some(format!("{k} of {n} samples above {} us", fmt_num(bound_us)));
        return;
    }
    if p >= 100.0 {
        r.confidence = Some(format!(
            "0 of {n} samples above {} us: P(exceed) <= {} at 95 % confidence (rule of three)",
            fmt_num(bound_us),
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
        return;
    }
    let q = 1.0 - p / 100.0;
    r.confidence = Some(format!(
        "{k} of {n} samples above {} us: P(exceed) <= {} at 95 % confidence (claim: <= {})",
        fmt_num(bound_us),
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

fn wcrt_comparisons(runs: &[RunData]) -> Result<Vec<WcrtComparison>, EvidenceError> {
    let mut by_id: BTreeMap<(u32, bool), (CanMessageRecord, Pool)> = BTreeMap::new();
    for run in runs {
        let Some(c) = &run.can else { continue };
        for m in &c.messages {
            let e = by_id
                .entry((m.id, m.extended))
                .or_insert_with(|| (m.clone(), Pool::new()));
            e.1.add(run, record::CAN, &msg_label(m), &m.latency.hdr)?;
            if let (Some(a), Some(b)) = (e.0.wcrt_us, m.wcrt_us) {
                e.0.wcrt_us = Some(a.max(b));
            }
        }
    }
    Ok(by_id
        .into_values()
        .map(|(m, pool)| {
            let measured = (!pool.hist.is_empty()).then(|| ns_to_us(pool.hist.max()));
            WcrtComparison {
                message: msg_label(&m),
                id: m.id,
                samples: pool.hist.len(),
                measured_max_us: measured,
                wcrt_us: m.wcrt_us,
                deadline_us: m.deadline_us,
                deviation: matches!((measured, m.wcrt_us), (Some(x), Some(w)) if x > w),
            }
        })
        .collect())
}

fn distributions(runs: &[RunData]) -> Result<Vec<Distribution>, EvidenceError> {
    let mut cpus: BTreeMap<u32, Pool> = BTreeMap::new();
    let mut msgs: BTreeMap<(u32, bool), (String, Pool)> = BTreeMap::new();
    for run in runs {
        if let Some(p) = &run.probe {
            for t in &p.threads {
                cpus.entry(t.cpu).or_insert_with(Pool::new).add(
                    run,
                    record::PROBE,
                    &format!("CPU {}", t.cpu),
                    &t.latency.hdr,
                )?;
            }
        }
        if let Some(c) = &run.can {
            for m in &c.messages {
                let label = msg_label(m);
                msgs.entry((m.id, m.extended))
                    .or_insert_with(|| (label.clone(), Pool::new()))
                    .1
                    .add(run, record::CAN, &label, &m.latency.hdr)?;
            }
        }
    }
    let mut out: Vec<Distribution> = cpus
        .iter()
        .map(|(cpu, pool)| distribution(format!("Probe wakeup latency, CPU {cpu}"), pool))
        .collect();
    out.extend(
        msgs.values()
            .map(|(label, pool)| distribution(format!("CAN reception latency, {label}"), pool)),
    );
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use record::hist::HistSummary;
    use record::{ProbeSettings, ProbeThread};
    use rt_sys::kernel::KernelFacts;

    pub(crate) fn facts(virt: Virtualization, rt: bool) -> KernelFacts {
        KernelFacts {
            release: "6.1.0-rt-amd64".into(),
            version: if rt { "#1 SMP PREEMPT_RT" } else { "#1 SMP" }.into(),
            preempt_rt: rt,
            cmdline: "isolcpus=1".into(),
            virtualization: virt,
            hypervisor_signature: None,
            cpu_model: "test cpu".into(),
            online_cpus: "0-1".into(),
            nested_capable: false,
            cgroup_version: 2,
        }
    }

    pub(crate) fn good_env() -> Environment {
        Environment {
            hostname: "rig".into(),
            kernel: Some(facts(Virtualization::Kvm, true)),
            guest_check: None,
            host_check: Some(serde_json::json!({"ok": true, "kernel": {"virtualization": "none"}})),
            selftest: Some(serde_json::json!({"ok": true, "summary": "timer accuracy 2 us"})),
            notes: vec![],
        }
    }

    pub(crate) fn hist_of(values_us: &[(u64, u64)]) -> HistSummary {
        let mut h = hist::new_ns();
        for (us, count) in values_us {
            h.record_n(us * 1000, *count).unwrap();
        }
        HistSummary::from_hist(&h)
    }

    pub(crate) fn probe(values_us: &[(u64, u64)], missed: u64) -> ProbeRecord {
        let latency = hist_of(values_us);
        ProbeRecord {
            settings: ProbeSettings {
                interval_ns: 1_000_000,
                policy: "fifo".into(),
                priority: 95,
                duration_s: Some(60.0),
                loops: None,
                mlock: true,
                dma_latency_held: true,
                clock: "CLOCK_MONOTONIC".into(),
            },
            threads: vec![ProbeThread {
                cpu: 1,
                tid: 100,
                policy: "fifo".into(),
                priority: 95,
                samples: latency.samples,
                missed_periods: missed,
                out_of_range: 0,
                max_at_cycle: 7,
                max_at: None,
                latency,
            }],
            elapsed_s: 60.0,
            partial: false,
        }
    }

    pub(crate) fn can_msg(id: u32, lat_us: &[(u64, u64)], wcrt: Option<f64>) -> CanMessageRecord {
        let latency = hist_of(lat_us);
        CanMessageRecord {
            ecu: "engine".into(),
            name: format!("Msg{id:X}"),
            id,
            extended: false,
            kind: "classic".into(),
            len: 8,
            period_us: 10_000,
            deadline_us: 2000,
            sent: latency.samples,
            received: latency.samples,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            deadline_misses: 0,
            jitter: hist_of(&[(5, latency.samples)]),
            latency,
            frame_time_us: 270.0,
            wcrt_us: wcrt,
        }
    }

    pub(crate) fn can(msgs: Vec<CanMessageRecord>) -> CanRecord {
        CanRecord {
            tx: "can0".into(),
            rx: "can1".into(),
            bitrate: 500_000,
            data_bitrate: None,
            paced: true,
            elapsed_s: 10.0,
            bus_load_analytic_pct: 20.0,
            bus_load_measured_pct: 18.0,
            tx_enobufs: 0,
            bus_errors: vec![],
            timestamp_source: "kernel".into(),
            messages: msgs,
            partial: false,
        }
    }

    pub(crate) fn run(
        env: Environment,
        probe: Option<ProbeRecord>,
        can: Option<CanRecord>,
    ) -> RunData {
        let mut files = BTreeMap::new();
        for name in [record::PROBE, record::CAN] {
            files.insert(
                name.to_string(),
                record::FileEntry {
                    sha256: "ab".repeat(32),
                    bytes: 1,
                    written_by: "test".into(),
                },
            );
        }
        RunData {
            path: PathBuf::from("/runs/run-test"),
            manifest: Manifest {
                format: record::FORMAT,
                run_id: "run-test".into(),
                created: "2026-11-26T00:00:00Z".into(),
                tools: vec![],
                profile: None,
                environment: env,
                files,
                sources: vec![],
            },
            manifest_sha256: "cd".repeat(32),
            probe,
            can,
            sources: vec![],
        }
    }

    fn req(id: &str, metric: Metric, bound_us: Option<f64>, bound: Option<f64>) -> Requirement {
        Requirement {
            id: id.into(),
            asil: Asil::D,
            text: format!("{id} text"),
            metric,
            bound_us,
            bound,
        }
    }

    fn max_latency(bound: f64) -> Requirement {
        req(
            "R-MAX",
            Metric::ProbeLatency {
                percentile: 100.0,
                cpu: None,
            },
            Some(bound),
            None,
        )
    }

    fn eval(r: &Requirement, runs: &[RunData]) -> RequirementResult {
        evaluate_one(r, runs, &EvalOptions::default()).unwrap()
    }

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
        let r = eval(&r99, &some);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        // 1 % above the bound: the p99.99 itself is above: fail.
        let bad = [run(
            good_env(),
            Some(probe(&[(10, 29_000), (30, 1000)], 0)),
            None,
        )];
        assert_eq!(eval(&r99, &bad).verdict, Verdict::Fail);
        // A CPU that was not measured: inconclusive, with the reason.
        let r2 = req(
            "R-P",
            Metric::ProbeLatency {
                percentile: 99.0,
                cpu: Some(3),
            },
            Some(20.0),
            None,
        );
        let r = eval(&r2, &enough);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("CPU 3"), "{:?}", r.reasons);
    }

    #[test]
    fn max_claim_needs_min_samples() {
        let runs = [run(good_env(), Some(probe(&[(10, 999)], 0)), None)];
        let r = eval(&max_latency(50.0), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("999 < 1000"), "{:?}", r.reasons);
    }

    fn assert_env_cause(env: Environment, probe_partial: bool, needle: &str) {
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
        let r = eval(&max_latency(5.0), &runs);
        assert_eq!(r.verdict, Verdict::Fail);
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
        e.host_check = Some(serde_json::json!({"ok": true, "kernel": {"virtualization": "kvm"}}));
        assert_env_cause(e, false, "nested virtualization");

        let mut e = good_env();
        e.host_check = Some(serde_json::json!({"met": true, "changes": [
            {"item": "kernel", "target": "kernel 6.1.0-rt", "current": "PREEMPT_RT", "status": "ok"},
            {"item": "nested-virtualization", "target": "hypervisor", "status": "ok", "current": "bare metal"}]}));
        let runs = [run(e.clone(), Some(probe(&[(10, 60_000)], 0)), None)];
        assert_eq!(eval(&max_latency(50.0), &runs).verdict, Verdict::Pass);
        e.host_check = Some(serde_json::json!({"met": false, "changes": [
            {"item": "kernel", "target": "kernel 6.18.44-fc", "current": "not PREEMPT_RT", "status": "not-applicable"},
            {"item": "nested-virtualization", "target": "hypervisor", "status": "differs",
             "current": "this host is itself a kvm guest: its VMs are nested"}]}));
        assert_env_cause(
            e.clone(),
            false,
            "nested virtualization (this host is itself a kvm guest",
        );
        assert_env_cause(e, false, "host kernel 6.18.44-fc is not PREEMPT_RT");

        let mut e = good_env();
        e.host_check = None;
        assert_env_cause(e, false, "host tuning not verified");

        let mut e = good_env();
        e.host_check = Some(serde_json::json!({"items": [
            {"name": "halt_poll_ns", "status": "ok"},
            {"name": "irq 24 affinity", "status": "differs"}]}));
        assert_env_cause(e, false, "irq 24 affinity");

        let mut e = good_env();
        e.kernel = None;
        assert_env_cause(e, false, "environment is unknown");

        let mut e = good_env();
        e.selftest = Some(serde_json::json!({"ok": false}));
        assert_env_cause(e, false, "self-test failed");

        assert_env_cause(good_env(), true, "partial run");
    }

    #[test]
    fn partial_tool_run_in_manifest_counts() {
        let mut r0 = run(good_env(), Some(probe(&[(10, 60_000)], 0)), None);
        r0.manifest.tools.push(ToolRun {
            tool: "rt-guest probe".into(),
            version: "0.1.0".into(),
            git_sha: "x".into(),
            args: vec![],
            start: "s".into(),
            end: None,
            partial: true,
            partial_reason: Some("SIGINT".into()),
        });
        let r = eval(&max_latency(50.0), &[r0]);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.environment.iter().any(|s| s.contains("SIGINT")));
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
            assert!(!r.reasons.is_empty(), "{m:?}");
        }
        // A requirement without a bound cannot pass.
        let runs = [run(good_env(), Some(probe(&[(10, 60_000)], 0)), None)];
        let r = eval(&req("R", Metric::ProbeMissed, None, None), &runs);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reasons[0].contains("no bound"));
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
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.measured, Some(18.0));
        let r = eval(&req("R-B", Metric::BusLoad, None, Some(10.0)), &runs);
        assert_eq!(r.verdict, Verdict::Fail);
        // Measured 18 % within 19 %, analytic 20 % above it: not shown either way.
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
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.measured, Some(100.0));
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
        // Jitter at p99 over all messages: 1502 samples at 5 us.
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
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.samples, Some(1502));
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
    fn measured_above_wcrt_is_a_deviation() {
        let runs = [run(
            good_env(),
            None,
            Some(can(vec![
                can_msg(0xC0, &[(300, 1000), (900, 2)], Some(800.0)),
                can_msg(0x1A0, &[(400, 500)], Some(1900.0)),
            ])),
        )];
        let ev = evaluate(
            &Profile {
                name: "t".into(),
                description: String::new(),
                host: None,
                guest: None,
                can: None,
                requirements: vec![],
            },
            ProfileRef {
                name: "t".into(),
                origin: "test".into(),
                sha256: "00".into(),
            },
            &runs,
            &EvalOptions::default(),
        )
        .unwrap();
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
        let profile = Profile {
            name: "t".into(),
            description: String::new(),
            host: None,
            guest: None,
            can: None,
            requirements: vec![
                req("W-ALL", Metric::WcrtSlack { id: None }, Some(100.0), None),
                req(
                    "W-1A0",
                    Metric::WcrtSlack { id: Some(0x1A0) },
                    Some(100.0),
                    None,
                ),
            ],
        };
        let pref = ProfileRef {
            name: "t".into(),
            origin: "test".into(),
            sha256: "00".into(),
        };
        let ev = evaluate(&profile, pref, &runs, &EvalOptions::default()).unwrap();
        assert_eq!(ev.results[0].verdict, Verdict::Inconclusive);
        assert!(
            ev.results[0].reasons[0].contains("0x0C0"),
            "{:?}",
            ev.results[0]
        );
        assert_eq!(ev.results[1].verdict, Verdict::Pass);
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
    fn selftest_in_words() {
        let v = serde_json::json!({"passed": true, "cpu": 1, "interval_us": 1000, "delay_us": 200.0,
            "every": 10, "injected": 100, "detected": 100, "max_us": 231.5, "checks": []});
        let (s, failed) = selftest_words(Some(&v));
        assert_eq!(
            s,
            "passed: 100 delays of 200 us injected on CPU 1, 100 detected, max 231.5 us"
        );
        assert!(!failed);
        let (s, failed) = selftest_words(Some(&serde_json::json!({"passed": false})));
        assert!(failed && s.starts_with("FAILED"));
        assert_eq!(selftest_words(None), ("not run".to_string(), false));
    }

    #[test]
    fn host_check_shapes() {
        assert!(host_check_ok(&serde_json::json!({"ok": true})).is_ok());
        assert!(host_check_ok(&serde_json::json!({"all_ok": false})).is_err());
        assert!(host_check_ok(&serde_json::json!([{"ok": true}, {"status": "Applied"}])).is_ok());
        let e =
            host_check_ok(&serde_json::json!({"checks": [{"target": "cpu1 idle", "ok": false}]}))
                .unwrap_err();
        assert!(e.contains("cpu1 idle"), "{e}");
        assert!(host_check_ok(&serde_json::json!("yes")).is_err());
        // rt-host check --json as printed on this machine (halt_poll_ns refused: EPERM).
        let rt_host = serde_json::json!({
            "profile": "lab", "met": true,
            "summary": {"ok": 1, "differs": 0, "needs_reboot": 0, "not_permitted": 1, "not_applicable": 1},
            "vm": null,
            "changes": [
                {"item": "cpuidle", "target": "cpu1 state1", "current": "1", "desired": "1", "when": "now", "status": "ok"},
                {"item": "halt-poll", "target": "/sys/module/kvm/parameters/halt_poll_ns", "current": "200000", "desired": "200000", "when": "now", "status": "not-permitted"},
                {"item": "hugepages", "target": "-", "current": "-", "desired": "-", "when": "now", "status": "not-applicable"}
            ]
        });
        let e = host_check_ok(&rt_host).unwrap_err();
        assert!(e.contains("1 of 3 items not ok (halt-poll /sys/module/kvm/parameters/halt_poll_ns: not-permitted)"), "{e}");
        let mut all_ok = rt_host.clone();
        all_ok["changes"][1]["status"] = "ok".into();
        assert!(host_check_ok(&all_ok).is_ok());
        all_ok["met"] = false.into();
        assert!(host_check_ok(&all_ok).is_err());
    }
}
