//! Reading runs: every file verified against the manifest, the records parsed strictly and
//! checked for consistency (`record::ProbeRecord::check`, `record::CanRecord::check`), and
//! runs that hold the same data refused, also when one of them is inside a merged run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use profiles::Profile;
use record::{
    self, CanRecord, HostTraceRecord, HwlatRecord, Manifest, OslatRecord, ProbeRecord, RecordError,
    RunDir,
};

use super::{EvidenceError, ProfileRef, Trace};

/// Directory inside a merged run that holds the source runs' manifests and logs.
pub const SOURCES_DIR: &str = "sources";

/// The files whose content identifies a measurement.
const DATA_FILES: [&str; 6] = [
    record::HWLAT,
    record::PROBE,
    record::CAN,
    record::CAN_LOG,
    record::OSLAT,
    record::HOST_TRACE,
];

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
    /// `oslat.json`, when the run has one (every histogram decoded).
    pub oslat: Option<OslatRecord>,
    /// `hwlat.json` (`rt-host hwlat`), when the run has one.
    pub hwlat: Option<HwlatRecord>,
    /// `host-trace.json` (`rt-host trace`), when the run has one (checked: events in
    /// order and within their bound).
    pub host_trace: Option<HostTraceRecord>,
    /// For merged runs: the source runs' manifests (`sources/*.manifest.json`), with the
    /// sha256 of each as stored.
    pub sources: Vec<(Manifest, String)>,
}

fn no_tool_run(path: &Path) -> EvidenceError {
    RecordError::inconsistent(
        path,
        "the manifest records no tool run: nothing says which tool produced the data",
    )
    .into()
}

impl RunData {
    /// Open a run directory, verify every file, parse its records and check them (every
    /// histogram decoded).
    pub fn open(path: &Path) -> Result<RunData, EvidenceError> {
        let rd = RunDir::open(path)?;
        rd.verify()?;
        let manifest = rd.manifest().clone();
        let mpath = path.join(record::MANIFEST);
        if manifest.tools.is_empty() {
            return Err(no_tool_run(&mpath));
        }
        let mut sources = Vec::new();
        for (name, entry) in &manifest.files {
            if name.starts_with(&format!("{SOURCES_DIR}/")) && name.ends_with(".manifest.json") {
                let spath = path.join(name);
                let m = Manifest::parse(&rd.read_verified(name)?, &spath)?;
                if m.tools.is_empty() {
                    return Err(no_tool_run(&spath));
                }
                sources.push((m, entry.sha256.clone()));
            }
        }
        let runs = sources.len().max(1) as u64;
        let probe: Option<ProbeRecord> = match manifest.files.contains_key(record::PROBE) {
            true => Some(rd.read_json(record::PROBE)?),
            false => None,
        };
        if let Some(p) = &probe {
            p.check(&path.join(record::PROBE), runs)?;
        }
        let can: Option<CanRecord> = match manifest.files.contains_key(record::CAN) {
            true => Some(rd.read_json(record::CAN)?),
            false => None,
        };
        if let Some(c) = &can {
            c.check(&path.join(record::CAN), runs)?;
        }
        let oslat: Option<OslatRecord> = match manifest.files.contains_key(record::OSLAT) {
            true => Some(rd.read_json(record::OSLAT)?),
            false => None,
        };
        for t in oslat.iter().flat_map(|o| &o.threads) {
            t.gaps
                .histogram()
                .map_err(|source| RecordError::Histogram {
                    path: path.join(record::OSLAT),
                    what: format!("CPU {}", t.cpu),
                    source,
                })?;
        }
        let hwlat: Option<HwlatRecord> = match manifest.files.contains_key(record::HWLAT) {
            true => Some(rd.read_json(record::HWLAT)?),
            false => None,
        };
        let host_trace: Option<HostTraceRecord> =
            match manifest.files.contains_key(record::HOST_TRACE) {
                true => Some(rd.read_json(record::HOST_TRACE)?),
                false => None,
            };
        if let Some(h) = &host_trace {
            h.check(&path.join(record::HOST_TRACE))?;
        }
        Ok(RunData {
            path: path.to_path_buf(),
            manifest_sha256: rd.manifest_sha256().to_string(),
            manifest,
            probe,
            can,
            oslat,
            hwlat,
            host_trace,
            sources,
        })
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.manifest.run_id
    }

    /// The number of measured runs this one holds (its sources, or itself).
    pub fn leaf_runs(&self) -> u64 {
        self.sources.len().max(1) as u64
    }

    /// The trace of `file` of this run.
    pub fn trace(&self, file: &str) -> Trace {
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

    /// What identifies the measurements this run holds: for itself and each source, the
    /// manifest's sha256, its creation time, each tool run's start, and the sha256 of each
    /// non-empty data file.
    pub fn identities(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        ids.insert(format!("manifest sha256 {}", self.manifest_sha256));
        let leaves: Vec<(&Manifest, &str)> = if self.sources.is_empty() {
            vec![(&self.manifest, self.manifest_sha256.as_str())]
        } else {
            self.sources.iter().map(|(m, s)| (m, s.as_str())).collect()
        };
        for (m, sha) in leaves {
            ids.insert(format!("manifest sha256 {sha}"));
            ids.insert(format!("run created {}", m.created));
            for t in &m.tools {
                ids.insert(format!("tool run {} started {}", t.tool, t.start));
            }
            for f in DATA_FILES {
                if let Some(e) = m.files.get(f).filter(|e| e.bytes > 0) {
                    ids.insert(format!("{f} sha256 {}", e.sha256));
                }
            }
        }
        ids
    }
}

/// Refuse runs that hold the same measurement (see [`RunData::identities`]): its samples
/// would count twice. A copy with one more newline in its manifest, or with a new run id,
/// is the same run.
pub fn check_distinct(runs: &[RunData]) -> Result<(), EvidenceError> {
    let ids: Vec<BTreeSet<String>> = runs.iter().map(RunData::identities).collect();
    for (i, a) in ids.iter().enumerate() {
        for (j, b) in ids[..i].iter().enumerate() {
            if let Some(why) = a.intersection(b).next() {
                return Err(EvidenceError::Duplicate {
                    a: runs[j].path.clone(),
                    b: runs[i].path.clone(),
                    why: format!("same {why}"),
                });
            }
        }
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Choose the profile: the copy in the runs' manifests (all the same).
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
            // The reader checked it against the text (record::Manifest::parse).
            sha256: copy.sha256.clone(),
        },
    ))
}

/// The short form of a sha256 the messages use.
pub fn short_sha(sha: &str) -> &str {
    short(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{good_env, probe, run};

    #[test]
    fn a_copy_with_a_new_run_id_or_manifest_bytes_is_the_same_run() {
        let a = run(good_env(), Some(probe(&[(10, 600)], 0)), None);
        let mut b = a.clone();
        b.path = "/runs/copy".into();
        b.manifest.run_id = "run-copy".into();
        b.manifest_sha256 = "ef".repeat(32);
        let e = check_distinct(&[a.clone(), b.clone()]).unwrap_err();
        assert!(matches!(e, EvidenceError::Duplicate { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("/runs/copy holds the same run as /runs/run-test"),
            "{e}"
        );
        // Another measurement: distinct.
        let mut c = run(good_env(), Some(probe(&[(10, 600)], 0)), None);
        c.manifest.created = "2026-11-26T01:00:00Z".into();
        c.manifest.tools[0].start = "2026-11-26T01:00:01Z".into();
        c.manifest_sha256 = "01".repeat(32);
        for (_, e) in c.manifest.files.iter_mut() {
            e.sha256 = "02".repeat(32);
        }
        check_distinct(&[a.clone(), c.clone()]).unwrap();
        // A merged run that holds `a` is the same run as `a`.
        let mut m = c.clone();
        m.manifest_sha256 = "03".repeat(32);
        m.sources = vec![(a.manifest.clone(), a.manifest_sha256.clone())];
        let e = check_distinct(&[m, a]).unwrap_err();
        assert!(e.to_string().contains("same"), "{e}");
    }
}
