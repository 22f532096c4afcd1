//! Cross-checks on what came out of the guest: can-sim's counts in `can.json` against the
//! frames candump logged on the same interface, and the lab's notes attached to each run
//! directory (host check result, accelerator, candump capture) through
//! `record::RunDir`, so the evidence says where it was measured.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::flow::{CanCheck, Summary, MARKER_ID};

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

/// Sum `sent`, `received`, `lost` over the messages of a `can.json`.
pub fn can_totals(can: &Value) -> Option<(u64, u64, u64)> {
    let msgs = can.get("messages")?.as_array()?;
    let mut t = (0, 0, 0);
    for m in msgs {
        t.0 += m.get("sent")?.as_u64()?;
        t.1 += m.get("received")?.as_u64()?;
        t.2 += m.get("lost")?.as_u64()?;
    }
    Some(t)
}

/// The check for run directory `dir`, whose candump log sits beside it as
/// `candump-NAME.log`.
pub fn can_check(dir: &Path, link: &str, rx: &str) -> CanCheck {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log = dir.with_file_name(format!("candump-{name}.log"));
    let candump_frames = fs::read_to_string(log).ok().map(|t| count_candump(&t, rx));
    let totals = fs::read_to_string(dir.join("can.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| can_totals(&v));
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

/// Probe results of one run, in microseconds, for the summary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProbeStats {
    /// Run directory.
    pub run: PathBuf,
    /// `host untuned` or `host tuned`.
    pub condition: String,
    /// Wakeups measured (all threads).
    pub samples: u64,
    /// Missed periods (all threads).
    pub missed_periods: u64,
    /// Median of the first thread.
    pub p50_us: f64,
    /// 99th percentile of the first thread.
    pub p99_us: f64,
    /// Maximum over all threads.
    pub max_us: f64,
}

/// Read `probe.json` of `dir`.
pub fn probe_stats(dir: &Path, condition: &str) -> Option<ProbeStats> {
    let text = fs::read_to_string(dir.join("probe.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let threads = v.get("threads")?.as_array()?;
    let us = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1000.0;
    let first = threads.first()?.get("latency")?;
    let pct = |k: &str| {
        us(first
            .get("percentiles")
            .and_then(|p| p.get(k))
            .and_then(Value::as_u64))
    };
    Some(ProbeStats {
        run: dir.to_path_buf(),
        condition: condition.to_string(),
        samples: threads
            .iter()
            .filter_map(|t| t.get("samples").and_then(Value::as_u64))
            .sum(),
        missed_periods: threads
            .iter()
            .filter_map(|t| t.get("missed_periods").and_then(Value::as_u64))
            .sum(),
        p50_us: pct("p50"),
        p99_us: pct("p99"),
        max_us: threads
            .iter()
            .filter_map(|t| {
                t.get("latency")
                    .and_then(|l| l.get("max_ns"))
                    .and_then(Value::as_u64)
            })
            .map(|n| us(Some(n)))
            .fold(0.0, f64::max),
    })
}

/// Attach the lab's view to each run: the `rt-host check --json` taken while tuned, the
/// accelerator (a TCG run is not real-time evidence), and the candump capture.
pub fn attach(
    runs: &[std::path::PathBuf],
    out: &Path,
    loaded: &profiles::Loaded,
    summary: &Summary,
) -> Result<()> {
    // `rt-host check --json` prints the typed record::CheckReport the manifest keeps; an
    // empty file (the check printed nothing) is no check, one that does not parse is an
    // error.
    let hc_path = out.join("host-check.json");
    let host_check: Option<record::CheckReport> = match fs::read(&hc_path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => None,
        Ok(bytes) => Some(
            record::manifest::from_json(&bytes, &hc_path)
                .with_context(|| format!("Reading the host check {}", hc_path.display()))?,
        ),
        Err(_) => None,
    };
    // The guest's kernel facts as a producer recorded them in one of the runs: every run
    // of the flow was measured in the same guest boot.
    let mut guest_kernel = None;
    for dir in runs {
        if let Ok(rd) = record::RunDir::open(dir) {
            if let Some(k) = rd.manifest().environment.kernel.clone() {
                guest_kernel = Some((
                    k,
                    dir.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ));
                break;
            }
        }
    }
    for dir in runs {
        let mut rd =
            record::RunDir::open(dir).with_context(|| format!("Opening run {}", dir.display()))?;
        rd.begin_tool(
            "rtvirt-lab flow",
            env!("CARGO_PKG_VERSION"),
            record::GIT_SHA,
            std::env::args().skip(1).collect(),
        )
        .with_context(|| format!("Recording the lab in {}", dir.display()))?;
        let origin = match &loaded.origin {
            profiles::Origin::File(p) => p.display().to_string(),
            profiles::Origin::Bundled(n) => format!("bundled:{n}"),
        };
        rd.set_profile(&loaded.profile.name, &origin, &loaded.text)?;
        let env = &mut rd.manifest_mut().environment;
        if host_check.is_some() {
            env.host_check = host_check.clone();
        }
        env.notes.push(format!(
            "rtvirt lab: QEMU accel {} ({}); guest kernel {}; host tuned by rt-host setup {} around the guest steps",
            summary.accel,
            summary.accel_reason,
            summary.guest.as_ref().map(|g| format!("{} {}", g.uname_r, g.uname_v)).unwrap_or_default(),
            summary.profile
        ));
        if let (None, Some((k, from))) = (&env.kernel, &guest_kernel) {
            env.kernel = Some(k.clone());
            env.notes.push(format!(
                "kernel facts copied by rtvirt-lab from run {from}: the same guest boot (this run's tool recorded none)"
            ));
        }
        if summary.accel == "tcg" {
            env.notes
                .push("QEMU TCG (binary translation): latencies are not real-time evidence".into());
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = dir.with_file_name(format!("candump-{name}.log"));
        if let Ok(bytes) = fs::read(&log) {
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

    #[test]
    fn probe_stats_from_probe_json() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("probe.json"),
            r#"{"threads": [{"cpu": 1, "samples": 10553, "missed_periods": 4447,
                "latency": {"max_ns": 206438399, "percentiles": {"p50": 128767, "p99": 4263935}}}]}"#,
        )
        .unwrap();
        let p = probe_stats(dir.path(), "host tuned").unwrap();
        assert_eq!((p.samples, p.missed_periods), (10553, 4447));
        assert!((p.p50_us - 128.767).abs() < 1e-9);
        assert!((p.p99_us - 4263.935).abs() < 1e-9);
        assert!((p.max_us - 206438.399).abs() < 1e-6);
        assert!(probe_stats(&dir.path().join("nope"), "x").is_none());
    }

    #[test]
    fn can_json_totals() {
        let v: Value = serde_json::from_str(
            r#"{"messages": [{"sent": 10, "received": 9, "lost": 1}, {"sent": 5, "received": 5, "lost": 0}]}"#,
        )
        .unwrap();
        assert_eq!(can_totals(&v), Some((15, 14, 1)));
        assert_eq!(
            can_totals(&serde_json::json!({"messages": [{"sent": 1}]})),
            None
        );
    }
}
