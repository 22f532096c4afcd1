//! Merging runs: HDR histograms added losslessly per CPU and per CAN message id across
//! runs, VMs and hosts, counters summed, into one run directory whose manifest lists its
//! sources (run id + manifest sha256) and keeps their manifests and CAN logs under
//! `sources/` so every merged number stays traceable to its raw data.

use std::collections::BTreeMap;
use std::path::Path;

use crate::evidence::{msg_label, EvidenceError, RunData, SOURCES_DIR};
use record::hist::{self, HistSummary};
use record::{self, CanMessageRecord, CanRecord, ProbeRecord, ProbeThread, RecordError, RunDir};

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
}

fn add(
    a: &mut hdrhistogram::Histogram<u64>,
    s: &HistSummary,
    what: &str,
) -> Result<(), EvidenceError> {
    let h = s.histogram().map_err(|source| EvidenceError::Histogram {
        path: what.into(),
        what: what.to_string(),
        source,
    })?;
    a.add(&h).map_err(|e| EvidenceError::Merge {
        what: format!("{what}: {e:?}"),
    })
}

/// Merge the probe records of `runs` (per CPU).
pub fn merge_probe(runs: &[RunData]) -> Result<Option<ProbeRecord>, EvidenceError> {
    let mut out: Option<ProbeRecord> = None;
    let mut by_cpu: BTreeMap<u32, (ProbeThread, hdrhistogram::Histogram<u64>)> = BTreeMap::new();
    for r in runs {
        let Some(p) = &r.probe else { continue };
        match &mut out {
            None => {
                out = Some(ProbeRecord {
                    threads: vec![],
                    ..p.clone()
                })
            }
            Some(o) => {
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
                if o.settings.duration_s.is_some() {
                    o.settings.duration_s = Some(
                        o.settings.duration_s.unwrap_or(0.0) + p.settings.duration_s.unwrap_or(0.0),
                    );
                }
                if o.settings.loops.is_some() {
                    o.settings.loops =
                        Some(o.settings.loops.unwrap_or(0) + p.settings.loops.unwrap_or(0));
                }
                o.settings.mlock &= p.settings.mlock;
                o.settings.dma_latency_held &= p.settings.dma_latency_held;
            }
        }
        for t in &p.threads {
            let what = format!("{} CPU {}", r.path.join(record::PROBE).display(), t.cpu);
            let e = by_cpu.entry(t.cpu).or_insert_with(|| {
                (
                    ProbeThread {
                        samples: 0,
                        missed_periods: 0,
                        out_of_range: 0,
                        ..t.clone()
                    },
                    hist::new_ns(),
                )
            });
            let before_max = if e.1.is_empty() { 0 } else { e.1.max() };
            add(&mut e.1, &t.latency, &what)?;
            e.0.samples += t.samples;
            e.0.missed_periods += t.missed_periods;
            e.0.out_of_range += t.out_of_range;
            if t.policy != e.0.policy {
                e.0.policy = "mixed".into();
            }
            if t.latency.max_ns > before_max {
                e.0.max_at_cycle = t.max_at_cycle;
                e.0.max_at.clone_from(&t.max_at);
                e.0.tid = t.tid;
            }
        }
    }
    Ok(out.map(|mut o| {
        o.threads = by_cpu
            .into_values()
            .map(|(mut t, h)| {
                t.latency = HistSummary::from_hist(&h);
                t
            })
            .collect();
        o
    }))
}

/// Merge the CAN records of `runs` (per message id).
pub fn merge_can(runs: &[RunData]) -> Result<Option<CanRecord>, EvidenceError> {
    let mut out: Option<CanRecord> = None;
    type Acc = (
        CanMessageRecord,
        hdrhistogram::Histogram<u64>,
        hdrhistogram::Histogram<u64>,
    );
    let mut by_id: BTreeMap<(u32, bool), Acc> = BTreeMap::new();
    let mut weighted_load = 0.0;
    for r in runs {
        let Some(c) = &r.can else { continue };
        match &mut out {
            None => {
                out = Some(CanRecord {
                    messages: vec![],
                    ..c.clone()
                })
            }
            Some(o) => {
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
                o.tx_enobufs += c.tx_enobufs;
                o.bus_errors.extend(c.bus_errors.iter().cloned());
                o.paced &= c.paced;
                o.partial |= c.partial;
                if o.timestamp_source != c.timestamp_source {
                    o.timestamp_source = "mixed".into();
                }
            }
        }
        weighted_load += c.bus_load_measured_pct * c.elapsed_s;
        for m in &c.messages {
            let what = format!("{} {}", r.path.join(record::CAN).display(), msg_label(m));
            let e = by_id.entry((m.id, m.extended)).or_insert_with(|| {
                (
                    CanMessageRecord {
                        sent: 0,
                        received: 0,
                        lost: 0,
                        duplicates: 0,
                        reordered: 0,
                        deadline_misses: 0,
                        ..m.clone()
                    },
                    hist::new_ns(),
                    hist::new_ns(),
                )
            });
            add(&mut e.1, &m.latency, &what)?;
            add(&mut e.2, &m.jitter, &what)?;
            e.0.sent += m.sent;
            e.0.received += m.received;
            e.0.lost += m.lost;
            e.0.duplicates += m.duplicates;
            e.0.reordered += m.reordered;
            e.0.deadline_misses += m.deadline_misses;
            e.0.frame_time_us = e.0.frame_time_us.max(m.frame_time_us);
            e.0.wcrt_us = match (e.0.wcrt_us, m.wcrt_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
    }
    Ok(out.map(|mut o| {
        if o.elapsed_s > 0.0 {
            o.bus_load_measured_pct = weighted_load / o.elapsed_s;
        }
        o.messages = by_id
            .into_values()
            .map(|(mut m, lat, jit)| {
                m.latency = HistSummary::from_hist(&lat);
                m.jitter = HistSummary::from_hist(&jit);
                m
            })
            .collect();
        o
    }))
}

/// Merge the run directories `inputs` into a new run directory `out` (which must not be a
/// run already). Every input is verified first.
pub fn merge(
    inputs: &[&Path],
    out: &Path,
    args: Vec<String>,
) -> Result<MergeSummary, EvidenceError> {
    if out.join(record::MANIFEST).exists() {
        return Err(EvidenceError::Merge {
            what: format!("into {}: it is a run directory already", out.display()),
        });
    }
    let runs = inputs
        .iter()
        .map(|p| RunData::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    crate::evidence::check_distinct(&runs)?;
    let probe = merge_probe(&runs)?;
    let can = merge_can(&runs)?;

    let mut rd = RunDir::open_or_create(out)?;
    rd.begin_tool(
        "validation merge",
        env!("CARGO_PKG_VERSION"),
        record::GIT_SHA,
        args,
    )?;
    // The profile: all sources must agree (the first copy is kept).
    let mut profile_sha: Option<(String, String)> = None;
    for r in &runs {
        if let Some(p) = &r.manifest.profile {
            match &profile_sha {
                None => {
                    profile_sha = Some((p.sha256.clone(), r.id().to_string()));
                    rd.set_profile(&p.name, &p.origin, &p.text)?;
                }
                Some((sha, first)) if *sha != p.sha256 => {
                    return Err(EvidenceError::ProfileMismatch {
                        a: sha.get(..12).unwrap_or(sha).to_string(),
                        a_run: first.clone(),
                        b: p.sha256.get(..12).unwrap_or(&p.sha256).to_string(),
                        b_run: r.id().to_string(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    let mut sources = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        sources.push(format!("{} sha256:{}", r.id(), r.manifest_sha256));
        let stem = format!("{SOURCES_DIR}/{i:02}-{}", safe(r.id()));
        let bytes =
            std::fs::read(r.path.join(record::MANIFEST)).map_err(|source| RecordError::Io {
                path: r.path.join(record::MANIFEST),
                source,
            })?;
        // Nested directory: make sure it exists before the atomic write.
        std::fs::create_dir_all(out.join(SOURCES_DIR)).map_err(|source| RecordError::Io {
            path: out.join(SOURCES_DIR),
            source,
        })?;
        if r.sources.is_empty() {
            rd.write_file(&format!("{stem}.manifest.json"), &bytes)?;
        } else {
            // A merged input: keep its manifest for the trace, and bring its sources'
            // manifests and logs along, since their environments are what is judged.
            rd.write_file(&format!("{stem}.merged-manifest.json"), &bytes)?;
            let src = RunDir::open(&r.path)?;
            for name in r.manifest.files.keys() {
                if let Some(rest) = name.strip_prefix(&format!("{SOURCES_DIR}/")) {
                    let bytes = src.read_verified(name)?;
                    rd.write_file(&format!("{stem}-{rest}"), &bytes)?;
                }
            }
        }
        if r.manifest.files.contains_key(record::CAN_LOG) {
            let log = rd_read(r, record::CAN_LOG)?;
            rd.write_file(&format!("{stem}.can.log"), &log)?;
        }
    }
    {
        let m = rd.manifest_mut();
        m.sources = sources.clone();
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
    rd.end_tool(None)?;
    Ok(MergeSummary {
        out: out.display().to_string(),
        sources,
        cpus: probe.map_or(0, |p| p.threads.len()),
        messages: can.map_or(0, |c| c.messages.len()),
    })
}

fn rd_read(r: &RunData, name: &str) -> Result<Vec<u8>, EvidenceError> {
    Ok(RunDir::open(&r.path)?.read_verified(name)?)
}

fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
