//! The last stages of a flow, on this machine: the run directories brought out of the
//! share, the CAN and probe cross-checks, the lab's notes attached to each run, and the
//! evidence exported with `validation report export` (html, md, json, junit).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::check;
use crate::flow::guest::{RUN_BASE, RUN_CAN, RUN_VCAN};
use crate::flow::host::{Exec, Local};
use crate::qemu::tail;
use crate::summary::{Step, Summary};

/// Move `share/runs` to `out/runs` (replacing an older one); returns `out/runs`.
pub fn bring_out(share: &Path, out: &Path) -> Result<PathBuf> {
    let runs_dir = out.join("runs");
    if runs_dir.exists() {
        fs::remove_dir_all(&runs_dir)
            .with_context(|| format!("Removing {}", runs_dir.display()))?;
    }
    let shared = share.join("runs");
    if shared.exists() {
        fs::rename(&shared, &runs_dir)
            .with_context(|| format!("Moving {} to {}", shared.display(), runs_dir.display()))?;
    }
    Ok(runs_dir)
}

/// Move the run directory `run` (made on this machine or in the outer host) into
/// `runs_dir`, replacing one of the same name; returns its new place.
pub fn bring_in(run: &Path, runs_dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(runs_dir).with_context(|| format!("Creating {}", runs_dir.display()))?;
    let name = run.file_name().context("A run directory without a name")?;
    let dest = runs_dir.join(name);
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("Removing {}", dest.display()))?;
    }
    fs::rename(run, &dest)
        .with_context(|| format!("Moving {} to {}", run.display(), dest.display()))?;
    Ok(dest)
}

/// The cross-checks of the runs in `runs_dir` into the summary; returns the run
/// directories that have a manifest (the ones the report is made of).
pub fn cross_check(runs_dir: &Path, can: &profiles::Can, summary: &mut Summary) -> Vec<PathBuf> {
    let mut runs = Vec::new();
    let pair = format!("{}->{}", can.tx, can.rx);
    for (name, link, rx) in [
        (RUN_CAN, pair.as_str(), can.rx.as_str()),
        (RUN_VCAN, "vcan0", "vcan0"),
    ] {
        let dir = runs_dir.join(name);
        summary.can.push(check::can_check(&dir, link, rx));
        if dir.join("manifest.json").is_file() {
            runs.push(dir);
        }
    }
    for (name, condition) in [(RUN_BASE, "host untuned"), (RUN_CAN, "host tuned")] {
        if let Some(p) = check::probe_stats(&runs_dir.join(name), condition) {
            summary.probe.push(p);
        }
    }
    summary.runs = runs.clone();
    runs
}

/// The note every run of a flow carries: where it ran and how the host was tuned.
pub fn lab_notes(summary: &Summary, where_tuned: &str) -> Vec<String> {
    let guest = summary
        .guest
        .as_ref()
        .map(|g| format!("{} {}", g.uname_r, g.uname_v))
        .unwrap_or_default();
    let mut notes = vec![format!(
        "rtvirt lab: QEMU accel {} ({}); guest kernel {guest}; {where_tuned} tuned by rt-host setup {} around the guest steps",
        summary.accel, summary.accel_reason, summary.profile
    )];
    if summary.accel == "tcg" {
        notes.push("QEMU TCG (binary translation): latencies are not real-time evidence".into());
    }
    if let Some(l) = &summary.vm_definition {
        let subs: Vec<String> = l.substitutions.iter().map(|s| s.to_string()).collect();
        notes.push(format!(
            "QEMU from `{}`, substituted: {}",
            l.definition,
            if subs.is_empty() {
                "nothing".into()
            } else {
                subs.join("; ")
            }
        ));
    }
    notes
}

/// The host check a run carries: `OUT/host-check.json`, the typed `record::CheckReport`
/// `rt-host check --json` prints. A missing or empty file (the check printed nothing) is
/// no check; one that does not parse is an error.
pub fn host_check(out: &Path) -> Result<Option<record::CheckReport>> {
    let path = out.join("host-check.json");
    match fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(bytes) => record::manifest::from_json(&bytes, &path)
            .map(Some)
            .with_context(|| format!("Reading the host check {}", path.display())),
        Err(_) => Ok(None),
    }
}

/// `validation report export RUNS --format F --out OUT/report.EXT` for every format.
/// Exit 1 (a requirement failed) is a result; anything else fails the flow.
pub fn export(
    validation: &Path,
    runs: &[PathBuf],
    out: &Path,
    summary: &mut Summary,
) -> Result<()> {
    let mut report_rc = None;
    for (format, ext) in [
        ("html", "html"),
        ("md", "md"),
        ("json", "json"),
        ("junit", "xml"),
    ] {
        let path = out.join(format!("report.{ext}"));
        let mut argv: Vec<String> = vec![
            validation.to_string_lossy().into_owned(),
            "report".into(),
            "export".into(),
        ];
        argv.extend(runs.iter().map(|r| r.to_string_lossy().into_owned()));
        argv.extend([
            "--format".into(),
            format.into(),
            "--out".into(),
            path.to_string_lossy().into_owned(),
        ]);
        let t = Instant::now();
        let o = Local.exec(&argv, Duration::from_secs(300))?;
        let ok = matches!(o.rc, Some(0) | Some(1)) && path.is_file();
        summary.steps.push(Step {
            name: format!("host: validation report export --format {format}"),
            rc: o.rc,
            secs: t.elapsed().as_secs_f64(),
            ok,
            note: tail(&o.text(), 10),
        });
        if !ok {
            bail!(
                "validation report export --format {format} failed (exit {:?}): {}",
                o.rc,
                tail(&o.text(), 10)
            );
        }
        report_rc = o.rc;
        summary.reports.insert(format.to_string(), path);
    }
    summary.report_rc = report_rc;
    Ok(())
}

/// What the report stage needs and how the guest stages went.
pub struct Evidence<'a> {
    /// `validation`, when it was found.
    pub validation: Option<&'a Path>,
    /// The runs that came out.
    pub runs: &'a [PathBuf],
    /// Guest steps that failed.
    pub guest_failures: &'a [String],
    /// Contract binaries that are missing.
    pub missing: &'a [String],
}

/// Export the evidence (also when a guest step failed: the report shows what exists),
/// then fail for what went wrong before.
pub fn report(e: &Evidence<'_>, out: &Path, summary: &mut Summary) -> Result<()> {
    let guest_error = (!e.guest_failures.is_empty())
        .then(|| format!("Guest steps failed: {}", e.guest_failures.join("; ")));
    let prefix = guest_error.clone().map(|g| g + "; ").unwrap_or_default();
    let Some(validation) = e.validation else {
        bail!("{prefix}Cannot export the report: {}", e.missing.join("; "))
    };
    if e.runs.is_empty() {
        bail!(
            "{prefix}No run directory came out of the guest (looked in {})",
            out.join("runs").display()
        );
    }
    export(validation, e.runs, out, summary)?;
    if let Some(g) = guest_error {
        bail!("{g}");
    }
    if !e.missing.is_empty() {
        bail!("Contract commands missing: {}", e.missing.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_move_out_of_the_share() {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        fs::create_dir_all(share.join("runs/run-lab-can")).unwrap();
        fs::write(share.join("runs/run-lab-can/x"), "1").unwrap();
        fs::create_dir_all(dir.path().join("runs/old")).unwrap();
        let runs = bring_out(&share, dir.path()).unwrap();
        assert!(runs.join("run-lab-can/x").is_file());
        assert!(!runs.join("old").exists());
        assert!(!share.join("runs").exists());
        fs::create_dir_all(dir.path().join("run-lab-host")).unwrap();
        let host = bring_in(&dir.path().join("run-lab-host"), &runs).unwrap();
        assert_eq!(host, runs.join("run-lab-host"));
        assert!(host.is_dir() && !dir.path().join("run-lab-host").exists());
    }

    #[test]
    fn tcg_runs_are_noted_as_not_evidence() {
        let s = Summary {
            accel: "tcg".into(),
            accel_reason: "TCG: this machine has no /dev/kvm".into(),
            profile: "lab".into(),
            ..Summary::default()
        };
        let n = lab_notes(&s, "this host");
        assert!(
            n[0].contains("QEMU accel tcg (TCG: this machine has no /dev/kvm)"),
            "{n:?}"
        );
        assert!(
            n[0].contains("this host tuned by rt-host setup lab"),
            "{n:?}"
        );
        assert!(n[1].contains("not real-time evidence"));
    }

    #[test]
    fn report_without_runs_names_the_guest_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Summary::default();
        let e = report(
            &Evidence {
                validation: Some(Path::new("/bin/true")),
                runs: &[],
                guest_failures: &["guest `rt-guest probe` exited 2: boom".into()],
                missing: &[],
            },
            dir.path(),
            &mut s,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("Guest steps failed: guest `rt-guest probe` exited 2"),
            "{e}"
        );
        assert!(e.contains("No run directory came out of the guest"), "{e}");
    }
}
