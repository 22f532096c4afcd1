//! Cross-checks on what came out of the guest, read through the typed records
//! (`record::CanRecord`, `record::ProbeRecord`): can-sim's counts against the frames
//! candump logged on the same interface, the probe's numbers for the summary, and the
//! lab's notes attached to each run directory (host check, accelerator, candump capture)
//! so the evidence says where it was measured.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use record::{CanRecord, ProbeRecord, RunDir};

use crate::scripts::MARKER_ID;
use crate::summary::{CanCheck, ProbeStats};

/// Frames in a candump `-L` log received on `rx`, marker frames excluded.
/// A line reads `(1732590000.123456) can1 0C0#1122334455667788`.
pub fn count_candump(text: &str, rx: &str) -> u64 {
    let marker = format!("{MARKER_ID}#");
    let n = text
        .lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (_, iface, frame) = (f.next(), f.next(), f.next().unwrap_or(""));
            iface == Some(rx) && !frame.starts_with(&marker)
        })
        .count();
    n as u64
}

/// `sent`, `received`, `lost` summed over the messages of a CAN record.
pub fn can_totals(can: &CanRecord) -> (u64, u64, u64) {
    can.messages.iter().fold((0, 0, 0), |t, m| {
        (t.0 + m.sent, t.1 + m.received, t.2 + m.lost)
    })
}

/// The candump log the guest wrote beside run directory `dir` (`candump-NAME.log`).
fn candump_log_of(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("candump-{name}.log"))
}

/// The check for run directory `dir`. A missing or unreadable record leaves the counts
/// unknown (`None`): the summary shows `?` and the tests fail on it.
pub fn can_check(dir: &Path, link: &str, rx: &str) -> CanCheck {
    let candump_frames = fs::read_to_string(candump_log_of(dir))
        .ok()
        .map(|t| count_candump(&t, rx));
    let totals = RunDir::open(dir)
        .and_then(|rd| rd.read_json::<CanRecord>(record::CAN))
        .map_err(|e| eprintln!("lab: no CAN counts from {}: {e}", dir.display()))
        .ok()
        .map(|c| can_totals(&c));
    CanCheck {
        link: link.to_string(),
        rx: rx.to_string(),
        run: dir.to_path_buf(),
        candump_frames,
        sent: totals.map(|t| t.0),
        received: totals.map(|t| t.1),
        lost: totals.map(|t| t.2),
    }
}

/// The summary numbers of a probe record, in microseconds.
pub fn probe_stats_of(p: &ProbeRecord, run: &Path, condition: &str) -> Option<ProbeStats> {
    let us = |ns: u64| ns as f64 / 1000.0;
    let first = &p.threads.first()?.latency;
    let pct = |k: &str| us(first.percentiles.get(k).copied().unwrap_or(0));
    Some(ProbeStats {
        run: run.to_path_buf(),
        condition: condition.to_string(),
        samples: p.threads.iter().map(|t| t.samples).sum(),
        missed_periods: p.threads.iter().map(|t| t.missed_periods).sum(),
        p50_us: pct("p50"),
        p99_us: pct("p99"),
        max_us: p
            .threads
            .iter()
            .map(|t| us(t.latency.max_ns))
            .fold(0.0, f64::max),
    })
}

/// Read `probe.json` of run `dir` (None when the run has no probe record).
pub fn probe_stats(dir: &Path, condition: &str) -> Option<ProbeStats> {
    let rd = RunDir::open(dir).ok()?;
    let p = rd.read_json::<ProbeRecord>(record::PROBE).ok()?;
    probe_stats_of(&p, dir, condition)
}

/// What the lab attaches to every run of one flow.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// The profile the flow ran.
    pub loaded: &'a profiles::Loaded,
    /// `rt-host check --json` taken while tuned, if any.
    pub host_check: Option<record::CheckReport>,
    /// Notes for the run's environment.
    pub notes: Vec<String>,
}

/// The guest's kernel facts as a producer recorded them in one of `runs` (every run of
/// a flow was measured in the same guest boot), with that run's name.
fn guest_kernel(runs: &[PathBuf]) -> Option<(rt_sys::kernel::KernelFacts, String)> {
    runs.iter().find_map(|dir| {
        let rd = RunDir::open(dir).ok()?;
        let k = rd.manifest().environment.kernel.clone()?;
        Some((k, dir.file_name()?.to_string_lossy().into_owned()))
    })
}

/// Attach the lab's view to each run: the host check, the notes (accelerator, where the
/// host was tuned), the guest's kernel facts where the run's own tool recorded none, and
/// the candump capture (`candump.log`, hashed in the manifest).
pub fn attach(runs: &[PathBuf], a: &Attachment<'_>) -> Result<()> {
    let kernel = guest_kernel(runs);
    for dir in runs {
        let mut rd = RunDir::open(dir).with_context(|| format!("Opening run {}", dir.display()))?;
        rtvirt_cli::begin_run(
            &mut rd,
            "rtvirt-lab flow",
            std::env::args().collect(),
            Some(a.loaded),
        )
        .with_context(|| format!("Recording the lab in {}", dir.display()))?;
        let env = &mut rd.manifest_mut().environment;
        if a.host_check.is_some() {
            env.host_check = a.host_check.clone();
        }
        env.notes.extend(a.notes.iter().cloned());
        if let (None, Some((k, from))) = (&env.kernel, &kernel) {
            env.kernel = Some(k.clone());
            env.notes.push(format!(
                "kernel facts copied by rtvirt-lab from run {from}: the same guest boot (this run's tool recorded none)"
            ));
        }
        if let Ok(bytes) = fs::read(candump_log_of(dir)) {
            rd.write_file("candump.log", &bytes)?;
        }
        rd.end_tool(None)?;
        rd.save()
            .with_context(|| format!("Saving the manifest of {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::hist::{new_ns, HistSummary};

    #[test]
    fn candump_counts_frames_on_rx_without_markers() {
        let log = "(1732590000.100000) can1 1FFFFFF0#5354415254\n\
                   (1732590000.200000) can1 0C0#1122334455667788\n\
                   (1732590000.210000) can1 18FF5021#0000000000000000\n\
                   (1732590000.220000) can0 0C0#1122334455667788\n\
                   (1732590000.300000) can1 1FFFFFF0#454E44\n";
        assert_eq!(count_candump(log, "can1"), 2);
        assert_eq!(count_candump(log, "can0"), 1);
        assert_eq!(count_candump("", "can1"), 0);
    }

    fn hist(values_ns: &[u64]) -> HistSummary {
        let mut h = new_ns();
        for v in values_ns {
            h.record(*v).unwrap();
        }
        HistSummary::from_hist(&h)
    }

    fn thread(cpu: u32, samples: u64, missed: u64, lat: &[u64]) -> record::ProbeThread {
        record::ProbeThread {
            cpu,
            tid: 100 + cpu,
            policy: "fifo".into(),
            priority: 95,
            samples,
            missed_periods: missed,
            out_of_range: 0,
            max_at_cycle: 0,
            max_at: None,
            worst: vec![],
            latency: hist(lat),
        }
    }

    #[test]
    fn probe_stats_from_a_typed_record_in_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut rd = RunDir::open_or_create(dir.path()).unwrap();
        rd.begin_tool("rt-guest probe", "0", "x", vec![]).unwrap();
        let rec = ProbeRecord {
            settings: record::ProbeSettings {
                interval_ns: 1_000_000,
                policy: "fifo".into(),
                priority: 95,
                duration_s: Some(15.0),
                loops: None,
                mlock: true,
                dma_latency_held: true,
                clock: "monotonic".into(),
            },
            threads: vec![
                thread(1, 3, 4, &[100_000, 128_000, 4_000_000]),
                thread(2, 2, 1, &[206_000_000, 1_000]),
            ],
            elapsed_s: 15.0,
            partial: false,
        };
        rd.write_json(record::PROBE, &rec).unwrap();
        rd.end_tool(None).unwrap();
        let p = probe_stats(dir.path(), "host tuned").unwrap();
        assert_eq!((p.samples, p.missed_periods), (5, 5));
        // HDR keeps 3 significant digits: 128 us comes back within 0.1 %.
        assert!((p.p50_us - 128.0).abs() < 0.2, "{}", p.p50_us);
        assert!((p.p99_us - 4000.0).abs() < 4.0, "{}", p.p99_us);
        assert!((p.max_us - 206_000.0).abs() < 206.0, "{}", p.max_us);
        assert_eq!(p.condition, "host tuned");
        assert!(probe_stats(&dir.path().join("nope"), "x").is_none());
    }

    #[test]
    fn can_totals_sum_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run-lab-can");
        let mut rd = RunDir::open_or_create(&run).unwrap();
        rd.begin_tool("can-sim run", "0", "x", vec![]).unwrap();
        // Built from JSON: the fields a can-sim record must have, the others defaulted.
        let lat = serde_json::to_value(hist(&[1_000])).unwrap();
        let msg = |sent: u64, received: u64, lost: u64| {
            serde_json::json!({
                "ecu": "engine", "name": "EngineSpeed", "id": 0xC0, "extended": false,
                "kind": "classic", "len": 8, "period_us": 10_000, "deadline_us": 5_000,
                "sent": sent, "received": received, "lost": lost, "duplicates": 0,
                "reordered": 0, "deadline_misses": 0, "latency": lat, "jitter": lat,
                "frame_time_us": 230.0, "wcrt_us": 500.0,
            })
        };
        let rec: CanRecord = serde_json::from_value(serde_json::json!({
            "tx": "can0", "rx": "can1", "bitrate": 500_000, "data_bitrate": null,
            "paced": true, "elapsed_s": 10.0, "bus_load_analytic_pct": 10.0,
            "bus_load_measured_pct": 9.0, "tx_enobufs": 0, "bus_errors": [],
            "timestamp_source": "kernel", "messages": [msg(10, 9, 1), msg(5, 5, 0)],
            "partial": false,
        }))
        .expect("a CAN record");
        rd.write_json(record::CAN, &rec).unwrap();
        rd.end_tool(None).unwrap();
        fs::write(
            dir.path().join("candump-run-lab-can.log"),
            "(1.0) can1 0C0#00\n(1.1) can1 1FFFFFF0#454E44\n",
        )
        .unwrap();
        let c = can_check(&run, "can0->can1", "can1");
        assert_eq!((c.sent, c.received, c.lost), (Some(15), Some(14), Some(1)));
        assert_eq!(c.candump_frames, Some(1));
        // A run without can.json: counts unknown, not zero.
        let c = can_check(dir.path(), "vcan0", "vcan0");
        assert_eq!((c.sent, c.candump_frames), (None, None));
    }
}
