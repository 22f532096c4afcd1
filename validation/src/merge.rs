//! Merging runs: HDR histograms added losslessly per CPU and per CAN message id across
//! runs, VMs and hosts, counters summed with checked arithmetic, into one run directory
//! whose manifest lists its sources (run id + manifest sha256) and keeps their manifests
//! and CAN logs under `sources/` so every merged number stays traceable to its raw data.
//!
//! One CPU or message is merged at a time into a histogram sized to the data, so memory
//! stays at a few histograms however many messages the runs hold; logs are copied
//! streamed and checked against their sources' manifests, never through a symlink. The
//! same run given twice, also inside a merged input, is refused before anything is written.
//!
//! A host trace (`host-trace.json`: one host's time line of one VM's vCPU threads), an
//! hwlat record (`hwlat.json`: one host's hardware) and an oslat record (`oslat.json`: the
//! guest's busy loops) are carried: the merged run carries the one input's file unchanged
//! (copied and checked against that input's manifest, hashed in the merged one), so the
//! merged report keeps its host view and its hwlat and oslat requirements; two inputs with
//! such a file are refused, naming both.

use std::collections::BTreeSet;
use std::path::Path;

use hdrhistogram::Histogram;
use record::hist::{self, Exact, HistSummary};
use record::{
    checked_sum, fsafe, msg_label, CanMessageRecord, CanRecord, ProbeRecord, ProbeThread,
    RecordError, RunDir,
};

use crate::evidence::{check_distinct, EvidenceError, RunData, SOURCES_DIR};

/// What a merge wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MergeSummary {
    /// The merged run directory.
    pub out: String,
    /// Sources as listed in the manifest.
    pub sources: Vec<String>,
    /// Probe threads (CPUs) in the merged probe.json.
    pub cpus: usize,
    /// CAN messages in the merged can.json.
    pub messages: usize,
    /// Files carried unchanged from one input (`host-trace.json from run-x`).
    pub carried: Vec<String>,
}

/// The files a merged run carries unchanged from the one input that has them.
pub const CARRIED: [&str; 3] = [record::HOST_TRACE, record::HWLAT, record::OSLAT];

/// For each of [`CARRIED`], the input that has it; two inputs with the same kind of file
/// are refused, naming both files.
pub fn carried(runs: &[RunData]) -> Result<Vec<(&'static str, usize)>, EvidenceError> {
    let mut out = Vec::new();
    for name in CARRIED {
        let with: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].manifest.files.contains_key(name))
            .collect();
        match with.as_slice() {
            [] => {}
            [i] => out.push((name, *i)),
            [a, b, ..] => {
                return Err(EvidenceError::Merge {
                    what: format!(
                        "{} and {}: a merged run carries one {name} unchanged; report these runs side by side instead",
                        runs[*a].path.join(name).display(),
                        runs[*b].path.join(name).display()
                    ),
                })
            }
        }
    }
    Ok(out)
}

/// Histograms of one key being merged: the sum, and the exact extremes while every
/// source had them.
struct Acc {
    hist: Histogram<u64>,
    exact: Option<Exact>,
    first: bool,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            hist: hist::new_auto(),
            exact: None,
            first: true,
        }
    }

    fn add(&mut self, s: &HistSummary, path: &Path, what: &str) -> Result<(), EvidenceError> {
        let err = |source| RecordError::Histogram {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        let h = s.histogram().map_err(err)?;
        let before = self.hist.len();
        hist::add(&mut self.hist, &h).map_err(err)?;
        self.exact = match (self.first, self.exact, s.exact) {
            (true, _, e) => e,
            (false, Some(a), Some(b)) => {
                #[allow(clippy::cast_precision_loss)] // sample counts stay below 2^52
                let w = |n: u64| n as f64;
                let n = w(before) + w(h.len());
                Some(Exact {
                    min_ns: a.min_ns.min(b.min_ns),
                    max_ns: a.max_ns.max(b.max_ns),
                    mean_ns: if n > 0.0 {
                        (a.mean_ns * w(before) + b.mean_ns * w(h.len())) / n
                    } else {
                        0.0
                    },
                })
            }
            _ => None,
        };
        self.first = false;
        Ok(())
    }

    fn summary(&self) -> HistSummary {
        HistSummary {
            exact: self.exact,
            ..HistSummary::from_hist(&self.hist)
        }
    }
}

fn merge_thread(recs: &[(&RunData, &ProbeRecord)], cpu: u32) -> Result<ProbeThread, EvidenceError> {
    let mut acc = Acc::new();
    let mut out: Option<ProbeThread> = None;
    let mut worst = 0u64;
    let mut spikes: Vec<record::ProbeSpike> = Vec::new();
    for (r, p) in recs {
        let path = r.path.join(record::PROBE);
        for t in p.threads.iter().filter(|t| t.cpu == cpu) {
            let what = format!("CPU {cpu}");
            acc.add(&t.latency, &path, &what)?;
            let o = out.get_or_insert_with(|| ProbeThread {
                samples: 0,
                missed_periods: 0,
                out_of_range: 0,
                ..t.clone()
            });
            o.samples = checked_sum(o.samples, t.samples, &path, &what)?;
            o.missed_periods = checked_sum(o.missed_periods, t.missed_periods, &path, &what)?;
            o.out_of_range = checked_sum(o.out_of_range, t.out_of_range, &path, &what)?;
            if t.policy != o.policy {
                o.policy = "mixed".into();
            }
            spikes.extend(t.worst.iter().copied());
            let max = t.latency.exact.map_or(t.latency.max_ns, |e| e.max_ns);
            if max >= worst {
                worst = max;
                o.max_at_cycle = t.max_at_cycle;
                o.max_at.clone_from(&t.max_at);
                o.tid = t.tid;
            }
        }
    }
    let mut t = out.expect("the CPU came from these records");
    t.latency = acc.summary();
    // The largest of every source's worst samples (each keeps its own wall time).
    spikes.sort_by(|a, b| {
        b.latency_ns
            .cmp(&a.latency_ns)
            .then(a.wall_ns.cmp(&b.wall_ns))
    });
    spikes.truncate(record::WORST_SAMPLES);
    t.worst = spikes;
    Ok(t)
}

/// Merge the probe records of `runs` (per CPU).
pub fn merge_probe(runs: &[RunData]) -> Result<Option<ProbeRecord>, EvidenceError> {
    let recs: Vec<(&RunData, &ProbeRecord)> = runs
        .iter()
        .filter_map(|r| r.probe.as_ref().map(|p| (r, p)))
        .collect();
    let Some((_, first)) = recs.first() else {
        return Ok(None);
    };
    let mut o = ProbeRecord {
        threads: vec![],
        ..(*first).clone()
    };
    for (r, p) in &recs[1..] {
        if o.settings.interval_ns != p.settings.interval_ns {
            return Err(EvidenceError::Merge {
                what: format!(
                    "probe runs with different intervals: {} ns and {} ns in {}",
                    o.settings.interval_ns,
                    p.settings.interval_ns,
                    r.path.display()
                ),
            });
        }
        o.elapsed_s += p.elapsed_s;
        o.partial |= p.partial;
        let s = &mut o.settings;
        s.duration_s = s
            .duration_s
            .map(|d| d + p.settings.duration_s.unwrap_or(0.0));
        if let Some(l) = s.loops {
            let path = r.path.join(record::PROBE);
            s.loops = Some(checked_sum(
                l,
                p.settings.loops.unwrap_or(0),
                &path,
                "loops",
            )?);
        }
        s.mlock &= p.settings.mlock;
        s.dma_latency_held &= p.settings.dma_latency_held;
    }
    let cpus: BTreeSet<u32> = recs
        .iter()
        .flat_map(|(_, p)| &p.threads)
        .map(|t| t.cpu)
        .collect();
    for cpu in cpus {
        o.threads.push(merge_thread(&recs, cpu)?);
    }
    Ok(Some(o))
}

fn merge_message(
    recs: &[(&RunData, &CanRecord)],
    key: (u32, bool),
) -> Result<CanMessageRecord, EvidenceError> {
    let (mut lat, mut jit) = (Acc::new(), Acc::new());
    let mut out: Option<CanMessageRecord> = None;
    for (r, c) in recs {
        let path = r.path.join(record::CAN);
        for m in c.messages.iter().filter(|m| (m.id, m.extended) == key) {
            let what = msg_label(m);
            lat.add(&m.latency, &path, &what)?;
            jit.add(&m.jitter, &path, &what)?;
            let o = out.get_or_insert_with(|| CanMessageRecord {
                sent: 0,
                received: 0,
                lost: 0,
                duplicates: 0,
                reordered: 0,
                deadline_misses: 0,
                e2e: m.e2e.as_ref().map(|x| record::E2eCounts {
                    profile: x.profile.clone(),
                    timeout_us: x.timeout_us,
                    ..record::E2eCounts::default()
                }),
                ..m.clone()
            });
            o.sent = checked_sum(o.sent, m.sent, &path, &what)?;
            o.received = checked_sum(o.received, m.received, &path, &what)?;
            o.lost = checked_sum(o.lost, m.lost, &path, &what)?;
            o.duplicates = checked_sum(o.duplicates, m.duplicates, &path, &what)?;
            o.reordered = checked_sum(o.reordered, m.reordered, &path, &what)?;
            o.deadline_misses = checked_sum(o.deadline_misses, m.deadline_misses, &path, &what)?;
            if let (Some(a), Some(b)) = (o.e2e.as_mut(), m.e2e.as_ref()) {
                crate::evidence::pool::add_e2e(a, b, &path, &what)?;
            }
            o.frame_time_us = o.frame_time_us.max(m.frame_time_us);
            o.wcrt_us = match (o.wcrt_us, m.wcrt_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
    }
    let mut m = out.expect("the message came from these records");
    m.latency = lat.summary();
    m.jitter = jit.summary();
    Ok(m)
}

/// Merge the CAN records of `runs` (per message id).
pub fn merge_can(runs: &[RunData]) -> Result<Option<CanRecord>, EvidenceError> {
    let recs: Vec<(&RunData, &CanRecord)> = runs
        .iter()
        .filter_map(|r| r.can.as_ref().map(|c| (r, c)))
        .collect();
    let Some((_, first)) = recs.first() else {
        return Ok(None);
    };
    let mut o = CanRecord {
        messages: vec![],
        ..(*first).clone()
    };
    let mut weighted_load = first.bus_load_measured_pct * first.elapsed_s;
    for (r, c) in &recs[1..] {
        if o.bitrate != c.bitrate || o.data_bitrate != c.data_bitrate {
            return Err(EvidenceError::Merge {
                what: format!(
                    "CAN runs with different bitrates: {} and {} in {}",
                    o.bitrate,
                    c.bitrate,
                    r.path.display()
                ),
            });
        }
        o.elapsed_s += c.elapsed_s;
        o.bus_load_analytic_pct = o.bus_load_analytic_pct.max(c.bus_load_analytic_pct);
        o.tx_enobufs = checked_sum(
            o.tx_enobufs,
            c.tx_enobufs,
            &r.path.join(record::CAN),
            "ENOBUFS",
        )?;
        o.bus_errors.extend(c.bus_errors.iter().cloned());
        o.paced &= c.paced;
        o.partial |= c.partial;
        if o.timestamp_source != c.timestamp_source {
            o.timestamp_source = "mixed".into();
        }
        weighted_load += c.bus_load_measured_pct * c.elapsed_s;
    }
    if o.elapsed_s > 0.0 {
        o.bus_load_measured_pct = weighted_load / o.elapsed_s;
    }
    let keys: BTreeSet<(u32, bool)> = recs
        .iter()
        .flat_map(|(_, c)| &c.messages)
        .map(|m| (m.id, m.extended))
        .collect();
    for key in keys {
        o.messages.push(merge_message(&recs, key)?);
    }
    Ok(Some(o))
}

/// A run id as a file name: anything but `[A-Za-z0-9._-]` becomes `_`, and a name of
/// dots only cannot climb (`..` becomes `__`).
pub fn safe_name(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".repeat(s.len().max(1))
    } else {
        s
    }
}

/// The profile all inputs carry (the first copy); refuse inputs that disagree.
fn common_profile(runs: &[RunData]) -> Result<Option<&record::ProfileCopy>, EvidenceError> {
    let mut first: Option<(&record::ProfileCopy, &str)> = None;
    for r in runs {
        let Some(p) = &r.manifest.profile else {
            continue;
        };
        match first {
            None => first = Some((p, r.id())),
            Some((f, id)) if f.sha256 != p.sha256 => {
                return Err(EvidenceError::ProfileMismatch {
                    a: f.sha256.get(..12).unwrap_or(&f.sha256).to_string(),
                    a_run: id.to_string(),
                    b: p.sha256.get(..12).unwrap_or(&p.sha256).to_string(),
                    b_run: r.id().to_string(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(p, _)| p))
}

/// The source's manifest bytes, read again beneath it and checked against the sha256 it
/// had when the run was opened.
fn manifest_bytes(r: &RunData) -> Result<Vec<u8>, EvidenceError> {
    let (mut f, len) = fsafe::open_beneath(&r.path, record::MANIFEST)?;
    let p = r.path.join(record::MANIFEST);
    let bytes = fsafe::read_capped(&mut f, len, fsafe::MAX_RECORD_BYTES, &p)?;
    let actual = record::sha256_hex(&bytes);
    if actual != r.manifest_sha256 {
        return Err(RecordError::Tampered {
            path: p,
            expected: r.manifest_sha256.clone(),
            actual,
        }
        .into());
    }
    Ok(bytes)
}

/// Keep source `i`'s manifest (and, for a merged input, its sources) and CAN log.
fn copy_source(rd: &mut RunDir, i: usize, r: &RunData) -> Result<(), EvidenceError> {
    let stem = format!("{SOURCES_DIR}/{i:02}-{}", safe_name(r.id()));
    let bytes = manifest_bytes(r)?;
    let src = RunDir::open(&r.path)?;
    if r.sources.is_empty() {
        rd.write_file(&format!("{stem}.manifest.json"), &bytes)?;
    } else {
        // A merged input: keep its manifest for the trace, and bring its sources'
        // manifests and logs along, since their environments are what is judged.
        rd.write_file(&format!("{stem}.merged-manifest.json"), &bytes)?;
        for name in r.manifest.files.keys() {
            if let Some(rest) = name.strip_prefix(&format!("{SOURCES_DIR}/")) {
                rd.copy_from(&format!("{stem}-{rest}"), &src, name)?;
            }
        }
    }
    if r.manifest.files.contains_key(record::CAN_LOG) {
        rd.copy_from(&format!("{stem}.can.log"), &src, record::CAN_LOG)?;
    }
    Ok(())
}

/// Merge the run directories `inputs` into a new run directory `out` (which must not be a
/// run already). Every input is verified and every refusal made before `out` is created.
pub fn merge(
    inputs: &[&Path],
    out: &Path,
    args: Vec<String>,
) -> Result<MergeSummary, EvidenceError> {
    if std::fs::symlink_metadata(out.join(record::MANIFEST)).is_ok() {
        return Err(EvidenceError::Merge {
            what: format!("into {}: it is a run directory already", out.display()),
        });
    }
    let runs = inputs
        .iter()
        .map(|p| RunData::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    check_distinct(&runs)?;
    let profile = common_profile(&runs)?;
    let probe = merge_probe(&runs)?;
    let can = merge_can(&runs)?;
    let carry = carried(&runs)?;

    let mut rd = RunDir::open_or_create(out)?;
    rd.begin_tool(
        "validation merge",
        env!("CARGO_PKG_VERSION"),
        record::GIT_SHA,
        args,
    )?;
    if let Some(p) = profile {
        rd.set_profile(&p.name, &p.origin, &p.text)?;
    }
    let mut sources = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        sources.push(format!("{} sha256:{}", r.id(), r.manifest_sha256));
        copy_source(&mut rd, i, r)?;
    }
    {
        let m = rd.manifest_mut();
        m.sources.clone_from(&sources);
        m.environment.hostname = "merged".into();
        m.environment.notes.push(format!(
            "merged record of {} runs: each source's environment is in {SOURCES_DIR}/*.manifest.json and is judged on its own",
            runs.len()
        ));
    }
    if let Some(p) = &probe {
        rd.write_json(record::PROBE, p)?;
    }
    if let Some(c) = &can {
        rd.write_json(record::CAN, c)?;
    }
    let mut carried = Vec::new();
    for (name, i) in carry {
        let r = &runs[i];
        rd.copy_from(name, &RunDir::open(&r.path)?, name)?;
        let what = format!("{name} from {}", r.id());
        rd.manifest_mut()
            .environment
            .notes
            .push(format!("{what}, carried unchanged"));
        carried.push(what);
    }
    rd.end_tool(None)?;
    Ok(MergeSummary {
        out: out.display().to_string(),
        sources,
        cpus: probe.map_or(0, |p| p.threads.len()),
        messages: can.map_or(0, |c| c.messages.len()),
        carried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{can, can_msg, good_env, probe, run};

    #[test]
    fn run_ids_become_safe_file_names() {
        assert_eq!(safe_name("run-lab-can"), "run-lab-can");
        assert_eq!(safe_name("../../etc/x"), ".._.._etc_x");
        assert_eq!(safe_name(".."), "__");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("a/b c"), "a_b_c");
    }

    #[test]
    fn counters_add_and_exact_extremes_merge() {
        let mut a = run(good_env(), Some(probe(&[(10, 600)], 1)), None);
        let mut b = run(good_env(), Some(probe(&[(20, 400)], 2)), None);
        a.probe.as_mut().unwrap().threads[0].latency.exact = Some(Exact {
            min_ns: 9_990,
            max_ns: 10_004,
            mean_ns: 10_000.0,
        });
        b.probe.as_mut().unwrap().threads[0].latency.exact = Some(Exact {
            min_ns: 19_990,
            max_ns: 20_004,
            mean_ns: 20_000.0,
        });
        let m = merge_probe(&[a.clone(), b.clone()]).unwrap().unwrap();
        let t = &m.threads[0];
        assert_eq!((t.samples, t.missed_periods), (1000, 3));
        let e = t.latency.exact.unwrap();
        assert_eq!((e.min_ns, e.max_ns), (9_990, 20_004));
        assert!((e.mean_ns - 14_000.0).abs() < 1e-6, "{e:?}");
        assert_eq!(m.elapsed_s, 120.0);
        // One source without exact values: the merge has none either.
        b.probe.as_mut().unwrap().threads[0].latency.exact = None;
        let m = merge_probe(&[a, b]).unwrap().unwrap();
        assert_eq!(m.threads[0].latency.exact, None);
    }

    #[test]
    fn merged_counters_that_overflow_are_an_error() {
        let mut a = run(
            good_env(),
            None,
            Some(can(vec![can_msg(0xC0, &[(300, 10)], None)])),
        );
        a.can.as_mut().unwrap().messages[0].duplicates = u64::MAX;
        let b = run(
            good_env(),
            None,
            Some(can(vec![{
                let mut m = can_msg(0xC0, &[(300, 10)], None);
                m.duplicates = 1;
                m
            }])),
        );
        let e = merge_can(&[a, b]).unwrap_err();
        assert!(e.to_string().contains("overflows a 64-bit count"), "{e}");
    }
}
