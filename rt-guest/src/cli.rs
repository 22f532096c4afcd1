//! The command line of `rt-guest` (clap derive) and how probe options combine with a
//! profile's `guest.probe` section: the command line wins, then the profile, then the
//! defaults of [`profiles::Probe`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::CpuSet;

use crate::probe::ProbeConfig;

/// Real-time guest probe and guest-side tuning.
///
/// Exit codes: 0 ok; 1 a bound was exceeded (`--max-us`), the self-test failed or the
/// guest check found differences; 2 error.
#[derive(Debug, Parser)]
#[command(name = "rt-guest", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure wakeup latency (cyclictest-class): one SCHED_FIFO thread per CPU.
    Probe(ProbeArgs),
    /// Show that the probe measures right by injecting known delays on CPU 1.
    Selftest(SelftestArgs),
    /// Check the guest: PREEMPT_RT, isolated CPUs, halt polling, idle states,
    /// clocksource, steal time, IRQ threads.
    Check(CheckArgs),
    /// Tune the guest as the profile says (journalled; undo with `revert`).
    Tune(TuneArgs),
    /// Undo `tune` from the journal.
    Revert(RevertArgs),
    /// Generate man pages or shell completions from these definitions.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        what: rtvirt_cli::clidoc::Generate,
        /// Output directory.
        dir: std::path::PathBuf,
    },
}

/// Options of `probe`, named like cyclictest's where they mean the same.
#[derive(Debug, Clone, Default, Args)]
pub struct ProbeArgs {
    /// Profile (name or file) whose `guest.probe` gives the defaults.
    #[arg(long)]
    pub profile: Option<String>,
    /// CPUs to measure, one thread each (kernel list, e.g. `1` or `1-3`). Default 1.
    #[arg(short = 'a', long = "cpus", value_name = "LIST")]
    pub cpus: Option<CpuSet>,
    /// Period in microseconds. Default 1000.
    #[arg(short = 'i', long = "interval-us", value_name = "US")]
    pub interval_us: Option<u32>,
    /// Priority of the measurement threads (1..=99 for fifo/rr). Default 95.
    #[arg(short = 'p', long)]
    pub priority: Option<u32>,
    /// Scheduling policy: fifo, rr or other. Default fifo.
    #[arg(long)]
    pub policy: Option<Policy>,
    /// Run time (`15s`, `10m`, `1h`; a bare number is seconds). Default 60s.
    #[arg(short = 'D', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Wakeups per thread; with --duration, whichever comes first ends the run.
    #[arg(short = 'l', long)]
    pub loops: Option<u64>,
    /// Run directory for probe.json and manifest.json. Default `./run-<utc>`.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Also write a cyclictest-format JSON file (rt-tests `--json`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a cyclictest `-h` format histogram text file.
    #[arg(long, value_name = "FILE")]
    pub histogram: Option<PathBuf>,
    /// Buckets (us) of the cyclictest-format histograms (cyclictest's `-h US`).
    #[arg(long, value_name = "US", default_value_t = 1000)]
    pub histogram_us: usize,
    /// When a latency exceeds US: write a marker to the ftrace trace_marker, stop tracing
    /// and end the run (cyclictest `-b`).
    #[arg(short = 'b', long, value_name = "US")]
    pub breaktrace: Option<u32>,
    /// No live status line; only the summary at the end.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not hold /dev/cpu_dma_latency at 0 while measuring.
    #[arg(long)]
    pub no_dma_latency: bool,
    /// Lock the whole binary in RAM (`mlockall(MCL_CURRENT|MCL_FUTURE)`, as cyclictest
    /// `-m`) instead of only the pages that run.
    #[arg(long)]
    pub mlock_all: bool,
    /// Exit 1 when any thread's max latency exceeds BOUND microseconds.
    #[arg(long, value_name = "BOUND")]
    pub max_us: Option<u64>,
}

/// Options of `selftest`.
#[derive(Debug, Clone, Args)]
pub struct SelftestArgs {
    /// Record the result in this run directory's manifest (`environment.selftest`).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Print the result as JSON only.
    #[arg(long)]
    pub json: bool,
    /// CPU to measure and disturb.
    #[arg(long, default_value_t = 1)]
    pub cpu: u32,
    /// Probe period in microseconds (raise it under emulation, e.g. QEMU TCG).
    #[arg(long, default_value_t = 1000)]
    pub interval_us: u32,
    /// Injected delay in microseconds (plus a quarter period, it must fit in one period).
    #[arg(long, default_value_t = 500)]
    pub delay_us: u32,
    /// Inject every k-th period.
    #[arg(long, default_value_t = 10)]
    pub every: u64,
    /// Wakeups per phase (baseline, then injection).
    #[arg(long, default_value_t = 3000)]
    pub loops: u64,
}

/// Options of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Profile (name or file); without one only profile-independent items are judged.
    pub profile: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Steal-time sampling window in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub steal_window_ms: u64,
}

/// Options of `tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Profile (name or file).
    pub profile: String,
    /// Journal directory.
    #[arg(long, default_value = "/run/rt-guest")]
    pub journal_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `revert`.
#[derive(Debug, Clone, Args)]
pub struct RevertArgs {
    /// Journal directory.
    #[arg(long, default_value = "/run/rt-guest")]
    pub journal_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A duration as `15s`, `10m`, `1h 30m` (humantime), or a bare number of seconds; also
/// cyclictest's `2m`, `1h`, `1d` suffixes.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The probe settings after combining options, profile and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The engine configuration.
    pub config: ProbeConfig,
    /// Hold /dev/cpu_dma_latency at 0.
    pub dma_latency: bool,
}

/// Combine `args` with the profile's probe section (or the defaults).
pub fn resolve(args: &ProbeArgs, profile: Option<&profiles::Profile>) -> Resolved {
    let p = profile
        .and_then(|p| p.guest.as_ref())
        .map(|g| g.probe.clone())
        .unwrap_or_default();
    let policy = args.policy.unwrap_or(p.policy);
    let priority = match args.priority {
        Some(prio) => prio,
        None if policy.is_realtime() => u32::from(p.priority),
        None => 0,
    };
    // An explicit loop count alone bounds the run by loops; otherwise the duration
    // (from the options or the profile) applies.
    let duration = match (args.duration, args.loops) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(p.duration.0),
    };
    Resolved {
        config: ProbeConfig {
            cpus: args.cpus.clone().unwrap_or(p.cpus),
            interval_ns: u64::from(args.interval_us.unwrap_or(p.interval_us)) * 1000,
            sched: SchedParams { policy, priority },
            loops: args.loops,
            duration_ns: duration.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            breaktrace_ns: args
                .breaktrace
                .or(p.breaktrace_us)
                .map(|us| u64::from(us) * 1000),
            hist_us: args.histogram_us,
            report_cpus: None,
        },
        dma_latency: !args.no_dma_latency && p.dma_latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn probe(args: &[&str]) -> ProbeArgs {
        let mut v = vec!["rt-guest", "probe"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Probe(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cyclictest_style_short_options() {
        let a = probe(&[
            "-a", "1", "-i", "200", "-p", "90", "-l", "1000", "-b", "150", "-q",
        ]);
        assert_eq!(a.cpus, Some(CpuSet::from_cpus([1])));
        assert_eq!(a.interval_us, Some(200));
        assert_eq!(a.priority, Some(90));
        assert_eq!(a.loops, Some(1000));
        assert_eq!(a.breaktrace, Some(150));
        assert!(a.quiet);
        let r = resolve(&a, None);
        assert_eq!(r.config.interval_ns, 200_000);
        assert_eq!(r.config.loops, Some(1000));
        assert_eq!(r.config.duration_ns, None, "loops alone bound the run");
        assert_eq!(r.config.breaktrace_ns, Some(150_000));
        assert!(r.dma_latency);
    }

    #[test]
    fn long_options_and_durations() {
        let a = probe(&[
            "--cpus",
            "1-2",
            "--policy",
            "rr",
            "--duration",
            "1m",
            "--no-dma-latency",
            "--json",
            "x.json",
            "--histogram",
            "x.txt",
            "--max-us",
            "50",
        ]);
        let r = resolve(&a, None);
        assert_eq!(r.config.cpus.len(), 2);
        assert_eq!(r.config.sched.policy, Policy::Rr);
        assert_eq!(r.config.sched.priority, 95);
        assert_eq!(r.config.duration_ns, Some(60_000_000_000));
        assert!(!r.dma_latency);
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert!(Cli::try_parse_from(["rt-guest", "probe", "-a", "x"]).is_err());
        assert!(Cli::try_parse_from(["rt-guest", "probe", "--policy", "edf"]).is_err());
    }

    #[test]
    fn profile_gives_defaults_and_options_win() {
        let lab = profiles::load("lab").unwrap().profile;
        let r = resolve(&ProbeArgs::default(), Some(&lab));
        assert_eq!(r.config.cpus, CpuSet::from_cpus([1]));
        assert_eq!(r.config.sched.priority, 95);
        assert_eq!(r.config.duration_ns, Some(15_000_000_000));
        let r = resolve(&probe(&["-p", "80", "-D", "2s"]), Some(&lab));
        assert_eq!(r.config.sched.priority, 80);
        assert_eq!(r.config.duration_ns, Some(2_000_000_000));
        // policy other takes priority 0 unless one is given (and then validation fails).
        let r = resolve(&probe(&["--policy", "other"]), Some(&lab));
        assert_eq!(r.config.sched.priority, 0);
        r.config.validate().unwrap();
    }
}
