//! `manifest.json`: the tool runs, the profile copy, the environment and every file of the
//! run with its sha256. Format version [`FORMAT`]; [`Manifest::parse`] refuses any other
//! version, unknown fields and shapes that contradict themselves (a profile copy whose
//! sha256 is not that of its text, an accelerator the kernel facts do not give, a
//! self-test whose verdict disagrees with its checks, an entry that leaves the run).

use std::collections::BTreeMap;
use std::path::Path;

use rt_sys::kernel::KernelFacts;
use serde::{Deserialize, Serialize};

use crate::check::{Accelerator, CheckReport, SelftestSummary};
use crate::error::RecordError;
use crate::fsafe;

/// Current manifest format version (2: typed check reports, self-test and accelerator).
pub const FORMAT: u32 = 2;

/// One tool invocation that wrote into the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRun {
    /// Tool name (`rt-guest probe`, `can-sim run`, ...).
    pub tool: String,
    /// Crate version.
    pub version: String,
    /// Git commit the tool was built from (`unknown` outside a checkout).
    pub git_sha: String,
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Start, RFC 3339 UTC.
    pub start: String,
    /// End, RFC 3339 UTC. None while running, and forever when the tool was killed: a
    /// run with such a tool run is partial.
    pub end: Option<String>,
    /// True when the run was interrupted (Ctrl-C, SIGTERM, error) and the data is partial.
    pub partial: bool,
    /// Why it is partial, if it is.
    #[serde(default)]
    pub partial_reason: Option<String>,
}

impl ToolRun {
    /// Why this tool run's data is partial, if it is: marked partial, or never ended.
    pub fn partial_because(&self) -> Option<String> {
        if self.partial {
            return Some(format!(
                "{} was interrupted ({})",
                self.tool,
                self.partial_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ));
        }
        self.end.is_none().then(|| {
            format!(
                "{} started {} and never recorded its end (killed, or still running)",
                self.tool, self.start
            )
        })
    }
}

/// The profile the run used, verbatim, with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileCopy {
    /// Profile name.
    pub name: String,
    /// Where it was loaded from.
    pub origin: String,
    /// sha256 of `text` (the reader recomputes it).
    pub sha256: String,
    /// The RON text.
    pub text: String,
}

/// Where and on what the run happened. Every fact validation judges is a typed field here;
/// `notes` are for people and are never read by a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Host name of the machine that produced the run.
    pub hostname: String,
    /// Kernel facts of the machine that measured (the guest for probe/can runs).
    pub kernel: Option<KernelFacts>,
    /// What the measured machine ran on, derived from `kernel` and `host_check.kernel`
    /// ([`Accelerator::of`]); [`crate::RunDir::save`] keeps it up to date.
    pub accelerator: Accelerator,
    /// `rt-guest check --json` at run time.
    pub guest_check: Option<CheckReport>,
    /// `rt-host check --json` at run time (attached by the lab or the user).
    pub host_check: Option<CheckReport>,
    /// `rt-guest selftest` result.
    pub selftest: Option<SelftestSummary>,
    /// Free notes for people (e.g. "host under stress-ng").
    pub notes: Vec<String>,
}

impl Environment {
    /// The accelerator the recorded kernel facts give.
    pub fn derived_accelerator(&self) -> Accelerator {
        Accelerator::of(
            self.kernel.as_ref(),
            self.host_check.as_ref().and_then(|h| h.kernel.as_ref()),
        )
    }

    /// Why the environment contradicts itself, if it does.
    pub fn contradiction(&self) -> Option<String> {
        let derived = self.derived_accelerator();
        if derived != self.accelerator {
            return Some(format!(
                "environment.accelerator is {} but the recorded kernel facts give {derived}",
                self.accelerator
            ));
        }
        self.selftest
            .as_ref()
            .and_then(SelftestSummary::contradiction)
            .map(|s| format!("environment.selftest: {s}"))
    }
}

/// A file of the run with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// sha256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Tool that wrote it.
    pub written_by: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Run id (directory name by default).
    pub run_id: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Tool invocations, in order.
    pub tools: Vec<ToolRun>,
    /// The profile used.
    pub profile: Option<ProfileCopy>,
    /// Environment.
    pub environment: Environment,
    /// Files of the run (not the manifest itself) with their hashes, by plain relative
    /// name inside the run directory.
    pub files: BTreeMap<String, FileEntry>,
    /// For merged records: the runs merged (run ids with their manifest sha256).
    pub sources: Vec<String>,
}

#[derive(Deserialize)]
struct FormatOnly {
    format: Option<serde_json::Value>,
}

/// `serde_json` from bytes, the error naming the field path (`environment.host_check.items[3].status`).
pub fn from_json<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    path: &Path,
) -> Result<T, RecordError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| RecordError::Json {
        path: path.to_path_buf(),
        message: format!("at {}: {}", e.path(), e.inner()),
    })
}

impl Manifest {
    /// A new manifest of the current format.
    pub fn new(run_id: String, created: String, hostname: String) -> Manifest {
        Manifest {
            format: FORMAT,
            run_id,
            created,
            tools: Vec::new(),
            profile: None,
            environment: Environment {
                hostname,
                ..Environment::default()
            },
            files: BTreeMap::new(),
            sources: Vec::new(),
        }
    }

    /// Parse `manifest.json` bytes read from `path` (named in every error): the format
    /// version first, then every field strictly, then the checks of the module docs.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, RecordError> {
        let probe: FormatOnly = from_json(bytes, path)?;
        match probe.format.as_ref().and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(FORMAT) => {}
            _ => {
                return Err(RecordError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found: probe
                        .format
                        .map_or_else(|| "(none)".to_string(), |v| v.to_string()),
                    supported: FORMAT,
                })
            }
        }
        let m: Manifest = from_json(bytes, path)?;
        m.check(path)?;
        Ok(m)
    }

    fn check(&self, path: &Path) -> Result<(), RecordError> {
        if let Some(p) = &self.profile {
            let actual = crate::sha256_hex(p.text.as_bytes());
            if actual != p.sha256 {
                return Err(RecordError::inconsistent(
                    path,
                    format!(
                        "the profile copy's sha256 {} is not that of its text ({actual}): the copy was edited",
                        p.sha256
                    ),
                ));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        for name in self.files.keys() {
            fsafe::check_entry_name(dir, name)?;
        }
        match self.environment.contradiction() {
            Some(why) => Err(RecordError::inconsistent(path, why)),
            None => Ok(()),
        }
    }

    /// Why the run's data is partial: every tool run marked partial or never ended.
    pub fn partial_because(&self) -> Vec<String> {
        self.tools
            .iter()
            .filter_map(ToolRun::partial_because)
            .collect()
    }

    /// True when any tool run is partial or never ended.
    pub fn partial(&self) -> bool {
        !self.partial_because().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::facts;
    use rt_sys::kernel::Virtualization;

    fn sample() -> Manifest {
        let mut m = Manifest::new("run-1".into(), "2026-11-26T00:00:00Z".into(), "rig".into());
        m.environment.kernel = Some(facts(Virtualization::Kvm));
        m.environment.accelerator = Accelerator::Kvm;
        m
    }

    fn parse(v: &serde_json::Value) -> Result<Manifest, RecordError> {
        Manifest::parse(
            &serde_json::to_vec(v).unwrap(),
            Path::new("/r/manifest.json"),
        )
    }

    #[test]
    fn round_trip_and_strict_fields() {
        let m = sample();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(parse(&v).unwrap(), m);
        let mut extra = v.clone();
        extra["environment"]["virtualisation"] = "kvm".into();
        let e = parse(&extra).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `virtualisation`"),
            "{e}"
        );
        let mut st = v.clone();
        st["environment"]["selftest"] = serde_json::json!({"passed": "failed"});
        let e = parse(&st).unwrap_err();
        assert!(e.to_string().contains("environment.selftest.passed"), "{e}");
    }

    #[test]
    fn other_format_versions_are_refused_by_name() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format"] = 999.into();
        let e = parse(&v).unwrap_err();
        assert!(matches!(e, RecordError::UnsupportedFormat { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("/r/manifest.json has run-record format 999"),
            "{msg}"
        );
        assert!(msg.contains("reads format 2"), "{msg}");
        v.as_object_mut().unwrap().remove("format");
        assert!(parse(&v).unwrap_err().to_string().contains("format (none)"));
    }

    #[test]
    fn an_edited_profile_copy_is_refused() {
        let mut m = sample();
        m.profile = Some(ProfileCopy {
            name: "lab".into(),
            origin: "bundled".into(),
            sha256: crate::sha256_hex(b"bound_us: 50"),
            text: "bound_us: 50000".into(),
        });
        let e = parse(&serde_json::to_value(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("the copy was edited"), "{e}");
    }

    #[test]
    fn an_accelerator_the_facts_do_not_give_is_refused() {
        let mut m = sample();
        m.environment.kernel = Some(facts(Virtualization::Tcg));
        let e = parse(&serde_json::to_value(&m).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("accelerator is kvm but the recorded kernel facts give tcg"),
            "{e}"
        );
    }

    #[test]
    fn entries_outside_the_run_are_refused() {
        for name in ["../../x", "/dev/zero"] {
            let mut m = sample();
            m.files.insert(
                name.into(),
                FileEntry {
                    sha256: "00".into(),
                    bytes: 1,
                    written_by: "x".into(),
                },
            );
            let e = parse(&serde_json::to_value(&m).unwrap()).unwrap_err();
            assert!(matches!(e, RecordError::BadEntry { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn a_killed_tool_run_makes_the_run_partial() {
        let mut m = sample();
        m.tools.push(ToolRun {
            tool: "rt-guest probe".into(),
            version: "0.1.0".into(),
            git_sha: "x".into(),
            args: vec![],
            start: "2026-11-26T00:00:01Z".into(),
            end: None,
            partial: false,
            partial_reason: None,
        });
        assert!(m.partial());
        assert!(m.partial_because()[0].contains("never recorded its end"));
        m.tools[0].end = Some("2026-11-26T00:01:01Z".into());
        assert!(!m.partial());
    }
}
