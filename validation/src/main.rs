//! `validation`: turn rtvirt run directories into ISO 26262 timing evidence.
//!
//! Exit codes: [`TOOL`] (defined in `rtvirt_cli::exit`, printed by every `--help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use validation::evidence::{self, EvalOptions, ProfileRef, RunData};
use validation::merge::safe_name;
use validation::report::{self, Format};

/// Turn rtvirt run directories into ISO 26262 timing evidence: requirement verdicts,
/// measured against analysed timing, traceable to sha256-checked raw data.
#[derive(Debug, Parser)]
#[command(
    name = "validation",
    version,
    about,
    long_about = None,
    after_help = "See docs/evidence.md for how verdicts are decided (an inconclusive requirement exits 0 and is stated in the report)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evidence reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Merge runs (HDR histograms added per CPU / per CAN message; a host trace, an hwlat
    /// record and an oslat record carried unchanged from the one input that has each) into
    /// one run directory.
    Merge {
        /// Run directories to merge.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The new run directory.
        #[arg(long)]
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every file of the runs against the sha256 in their manifests (and that no tool
    /// run was interrupted or killed).
    Verify {
        /// Run directories.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate man pages or shell completions from these definitions.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        what: rtvirt_cli::clidoc::Generate,
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Evaluate the profile's requirements over the runs and write the report.
    Export {
        /// Run directories (their histograms are pooled).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Profile (path or bundled name); default: the copy in the runs' manifests.
        #[arg(long)]
        profile: Option<String>,
        /// Report format.
        #[arg(long, value_enum)]
        format: FormatArg,
        /// Output file (`-` for stdout); default `report-<run id>.<ext>` here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Samples a max (percentile 100) claim needs before it can pass.
        #[arg(long, default_value_t = 1000)]
        min_samples_max: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// One self-contained HTML file with charts.
    Html,
    /// Markdown (no charts).
    Md,
    /// The Evidence struct as JSON.
    Json,
    /// JUnit XML, one testcase per requirement.
    Junit,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Html => Format::Html,
            FormatArg::Md => Format::Md,
            FormatArg::Json => Format::Json,
            FormatArg::Junit => Format::Junit,
        }
    }
}

/// validation's exit codes (in every `--help` and man page).
const TOOL: rtvirt_cli::Tool = rtvirt_cli::Tool {
    bin: "validation",
    not_met: "a requirement failed; verify: a file was changed, truncated, removed or \
              refused, or a run is partial",
    interrupted: false,
};

fn main() -> ExitCode {
    let cli: Cli = TOOL.parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => TOOL.fail(&e),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Report {
            command:
                ReportCommand::Export {
                    runs,
                    profile,
                    format,
                    out,
                    min_samples_max,
                },
        } => export(
            &runs,
            profile.as_deref(),
            format.into(),
            out,
            min_samples_max,
        ),
        Command::Merge { runs, out, json } => {
            let inputs: Vec<&Path> = runs.iter().map(PathBuf::as_path).collect();
            let s = validation::merge::merge(&inputs, &out, std::env::args().collect())
                .with_context(|| format!("Cannot merge into {}", out.display()))?;
            if json {
                rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                rtvirt_cli::outln!(
                    "merged {} runs into {} ({} CPUs, {} CAN messages)",
                    s.sources.len(),
                    s.out,
                    s.cpus,
                    s.messages
                );
                for src in &s.sources {
                    rtvirt_cli::outln!("  source {src}");
                }
                for c in &s.carried {
                    rtvirt_cli::outln!("  carried {c}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { runs, json } => verify(&runs, json),
        Command::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), &TOOL, what, &dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn export(
    runs: &[PathBuf],
    profile: Option<&str>,
    format: Format,
    out: Option<PathBuf>,
    min_samples_max: u64,
) -> Result<ExitCode> {
    let data = runs
        .iter()
        .map(|p| RunData::open(p).with_context(|| format!("Cannot read run {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    evidence::check_distinct(&data)?;
    // The default name comes from the run id: sanitized, so it stays in this directory.
    let out = out.unwrap_or_else(|| {
        let id = data.first().map(|d| d.id().to_string()).unwrap_or_default();
        PathBuf::from(format!("report-{}.{}", safe_name(&id), format.ext()))
    });
    // Refuse an unwritable output (a directory, a missing parent) before evaluating.
    let target = rt_sys::safefile::output_target(&out)?;
    let (profile, pref) = match profile {
        Some(name) => {
            let l = profiles::load(name)?;
            let r = ProfileRef {
                name: l.profile.name.clone(),
                origin: l.origin.to_string(),
                sha256: l.sha256(),
            };
            (l.profile, r)
        }
        None => evidence::profile_of_runs(&data)?,
    };
    if profile.requirements.is_empty() {
        bail!("Profile {} has no requirements to evaluate", pref.origin);
    }
    let ev = evidence::evaluate(&profile, pref, &data, &EvalOptions { min_samples_max })?;
    let text = report::render(&ev, format)?;
    // `-`, a symlink, a device or a FIFO is written through; a file atomically.
    rt_sys::safefile::write_output(&out, text.as_bytes())?;
    // The summary goes to stderr when the report itself goes to stdout.
    let mut msg = String::new();
    for r in &ev.results {
        msg.push_str(&format!(
            "  {:<13} {:<12} {}\n",
            r.id,
            r.verdict.to_string(),
            r.metric_label
        ));
    }
    msg.push_str(&format!(
        "{} pass, {} fail, {} inconclusive, {} WCRT deviation(s)\n",
        ev.summary.pass, ev.summary.fail, ev.summary.inconclusive, ev.summary.deviations
    ));
    if target == rt_sys::safefile::OutputTarget::Stdout {
        eprint!("{msg}");
    } else {
        msg.push_str(&format!("report: {}\n", out.display()));
        rtvirt_cli::out!("{msg}");
    }
    Ok(if ev.any_fail() {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(serde::Serialize)]
struct VerifyResult {
    run: String,
    /// Every file intact and the run complete.
    ok: bool,
    files: usize,
    /// Why the run is partial (a tool interrupted or killed), if it is.
    partial: Vec<String>,
    error: Option<String>,
}

fn verify_one(p: &Path) -> VerifyResult {
    match RunData::open(p) {
        Ok(d) => {
            let partial = d.manifest.partial_because();
            VerifyResult {
                run: p.display().to_string(),
                ok: partial.is_empty(),
                files: d.manifest.files.len(),
                partial,
                error: None,
            }
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            VerifyResult {
                run: p.display().to_string(),
                ok: false,
                files: 0,
                partial: vec![],
                error: Some(msg),
            }
        }
    }
}

fn verify(runs: &[PathBuf], json: bool) -> Result<ExitCode> {
    let results: Vec<VerifyResult> = runs.iter().map(|p| verify_one(p)).collect();
    if json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            match (&r.error, r.partial.is_empty()) {
                (None, true) => rtvirt_cli::outln!("ok      {} ({} files intact)", r.run, r.files),
                (None, false) => rtvirt_cli::outln!(
                    "PARTIAL {} ({} files intact; {})",
                    r.run,
                    r.files,
                    r.partial.join("; ")
                ),
                (Some(e), _) => rtvirt_cli::outln!("FAILED  {}: {e}", r.run),
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    })
}
