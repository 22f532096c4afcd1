//! The command line of `rt-guest` (clap derive) and how probe options combine with a
//! profile's `guest.probe` section: the command line wins, then the profile, then the
//! defaults of [`profiles::Probe`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::CpuSet;

use crate::probe::{ProbeConfig, ProbeError};

/// rt-guest's exit codes (in every `--help` and man page).
pub const TOOL: rtvirt_cli::Tool = rtvirt_cli::Tool {
    bin: "rt-guest",
    not_met: "a bound was exceeded (--max-us), the self-test failed or the guest check \
              found differences",
    interrupted: true,
};

/// Real-time guest probe and guest-side tuning.
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
    /// Measure wakeup latency (cyclictest-class): one SCHED_FIFO thread per CPU; takes
    /// cyclictest's options (`-h N` is the histogram, help is `--help`).
    #[command(disable_help_flag = true)]
    Probe(ProbeArgs),
    /// cyclictest drop-in: the probe with cyclictest's defaults (SCHED_OTHER without -p,
    /// endless without -l/-D, no run directory without --out) and its stdout (status
    /// lines, `-h` histogram, `# Break thread:` lines). Also run as `cyclictest` (a link
    /// named so).
    #[command(disable_help_flag = true)]
    Cyclictest(ProbeArgs),
    /// Busy-loop latency (oslat-class): read the clock back to back on each CPU and
    /// histogram the gaps; takes oslat's options and prints its format.
    Oslat(OslatArgs),
    /// Show that the probe measures right by injecting known delays on CPU 1.
    Selftest(SelftestArgs),
    /// Check the guest: PREEMPT_RT, isolated CPUs, halt polling, idle states,
    /// clocksource, steal time, IRQ threads.
    Check(CheckArgs),
    /// Tune the guest as the profile says (journalled; undo with `revert`).
    Tune(TuneArgs),
    /// Undo `tune` from the journal.
    Revert(RevertArgs),
    /// Answer the host's clock exchange (`rt-host trace --clock-dir DIR`) through the
    /// shared directory DIR, so that the host can place this guest's spikes on its time
    /// line; runs until the host writes DIR/stop, SIGINT/SIGTERM, or --timeout.
    ClockEcho(ClockEchoArgs),
    /// Generate man pages or shell completions from these definitions.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        what: rtvirt_cli::clidoc::Generate,
        /// Output directory.
        dir: std::path::PathBuf,
    },
}

/// How `--histogram` / `-h` was given: cyclictest's bucket count, or (the form of earlier
/// rt-guest versions) a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistogramArg {
    /// `-h N`, `--histogram=N`: N one-microsecond buckets, printed to stdout after the run
    /// (to `--histfile` when given), as cyclictest does.
    Buckets(usize),
    /// `--histogram FILE` with a value that is not a number: the histogram text goes to
    /// FILE (deprecated: use `--histfile FILE`).
    File(PathBuf),
}

/// A whole number, with surrounding blanks allowed: rteval passes `-h 3500` as one argument,
/// which getopt (and clap) read as `-h` with the value ` 3500`.
pub fn parse_count<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn parse_histogram(s: &str) -> Result<HistogramArg, String> {
    match parse_count::<usize>(s) {
        Ok(0) => Err("0 buckets: give the histogram's range in us (e.g. -h 1000)".into()),
        Ok(n) => Ok(HistogramArg::Buckets(n)),
        Err(_) if s.trim().is_empty() => Err("give a bucket count (e.g. -h 1000)".into()),
        Err(_) => Ok(HistogramArg::File(PathBuf::from(s))),
    }
}

fn parse_cpus(s: &str) -> Result<CpuSet, String> {
    CpuSet::parse(s.trim()).map_err(|e| e.to_string())
}

/// Options of `probe` (and of `cyclictest`, the drop-in), named like cyclictest's where they
/// mean the same: `-qmu -h 3500 -p95 -t2 -a1-2 --default-system -b200 --tracemark` means
/// what it means to cyclictest. Help is `--help` only (`-h N` is the histogram).
#[derive(Debug, Clone, Default, Args)]
pub struct ProbeArgs {
    /// Print help (`-h` is cyclictest's histogram option).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Profile (name or file) whose `guest.probe` gives the defaults.
    #[arg(long)]
    pub profile: Option<String>,
    /// CPUs to measure, one thread each (kernel list, e.g. `1` or `1-3`). Without a list
    /// (`-a` alone), every online CPU, as cyclictest. Default 1.
    #[arg(short = 'a', long = "affinity", visible_alias = "cpus", value_name = "LIST",
          num_args = 0..=1, value_parser = parse_cpus)]
    pub cpus: Option<Option<CpuSet>>,
    /// Threads: with `-a LIST`, the first N CPUs of the list; alone, the first N online
    /// CPUs; `-t` without N, every online CPU (one thread per CPU, always pinned).
    #[arg(short = 't', long = "threads", value_name = "N", num_args = 0..=1,
          value_parser = parse_count::<usize>)]
    pub threads: Option<Option<usize>>,
    /// cyclictest's standard SMP test (`-a -t`, same priority everywhere): every online CPU.
    #[arg(short = 'S', long = "smp", alias = "numa")]
    pub smp: bool,
    /// Period in microseconds. Default 1000.
    #[arg(short = 'i', long = "interval", visible_alias = "interval-us", value_name = "US",
          value_parser = parse_count::<u32>)]
    pub interval_us: Option<u32>,
    /// Priority of the measurement threads (1..=99 for fifo/rr). Default 95 (cyclictest
    /// mode: without -p the threads run at SCHED_OTHER, as cyclictest's).
    #[arg(short = 'p', long, value_parser = parse_count::<u32>)]
    pub priority: Option<u32>,
    /// Scheduling policy: fifo, rr or other. Default fifo.
    #[arg(long)]
    pub policy: Option<Policy>,
    /// Run time (`15s`, `10m`, `1h`; a bare number is seconds, cyclictest's `2m`, `1h`,
    /// `1d` too). Default 60s (cyclictest mode: until stopped).
    #[arg(short = 'D', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Every INTERVAL (`10m`), write a complete probe.json marked partial (atomically, hashed
    /// in the manifest): a crash or power loss loses at most one interval of a long run.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub checkpoint: Option<Duration>,
    /// Wakeups per thread (0: until stopped, as cyclictest); with --duration, whichever
    /// comes first ends the run.
    #[arg(short = 'l', long, value_parser = parse_count::<u64>)]
    pub loops: Option<u64>,
    /// Run directory for probe.json and manifest.json. Default `./run-<utc>` (cyclictest
    /// mode: none unless given).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Also write a cyclictest-format JSON file (rt-tests `--json`; `-` is stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// cyclictest's `-h US`: a histogram of US one-microsecond buckets, printed to stdout
    /// after the run as cyclictest does (to `--histfile` when given).
    #[arg(short = 'h', long = "histogram", value_name = "US", value_parser = parse_histogram)]
    pub histogram: Option<HistogramArg>,
    /// Write the histogram text to PATH instead of stdout (cyclictest `--histfile`).
    #[arg(long, value_name = "PATH")]
    pub histfile: Option<PathBuf>,
    /// Buckets (us) of the cyclictest-format histograms without printing them (for
    /// `--json` and `--histfile`). Default 1000.
    #[arg(long, value_name = "US", value_parser = parse_count::<usize>)]
    pub histogram_us: Option<usize>,
    /// When a latency exceeds US: write a marker to the ftrace trace_marker, stop tracing
    /// and end the run (cyclictest `-b`, with `--tracemark`).
    #[arg(short = 'b', long, value_name = "US", value_parser = parse_count::<u32>)]
    pub breaktrace: Option<u32>,
    /// Accepted for cyclictest: the trace marker is always written on a breaktrace.
    #[arg(long)]
    pub tracemark: bool,
    /// No live status line; only the summary at the end.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Accepted for cyclictest: every line is flushed as it is written.
    #[arg(short = 'u', long)]
    pub unbuffered: bool,
    /// Accepted for cyclictest: the probe always sleeps with clock_nanosleep.
    #[arg(short = 'n', long)]
    pub nanosleep: bool,
    /// Do not hold /dev/cpu_dma_latency while measuring (cyclictest `--default-system`).
    #[arg(long, visible_alias = "default-system")]
    pub no_dma_latency: bool,
    /// Value held in /dev/cpu_dma_latency while measuring, us (cyclictest `--latency`).
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = parse_count::<i32>)]
    pub latency: i32,
    /// CPUs of the reporting (main) thread. Default: the CPUs not measured.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub mainaffinity: Option<CpuSet>,
    /// Lock the whole binary in RAM (`mlockall(MCL_CURRENT|MCL_FUTURE)`, cyclictest `-m`)
    /// instead of only the pages that run (memory is locked either way).
    #[arg(short = 'm', long = "mlockall", visible_alias = "mlock-all")]
    pub mlock_all: bool,
    /// Exit 1 when any thread's max latency exceeds BOUND microseconds.
    #[arg(long, value_name = "BOUND")]
    pub max_us: Option<u64>,
    /// Run the kernel's timerlat tracer on the measured CPUs at the same period and record
    /// the IRQ and thread parts of its latencies (timerlat.json); needs tracefs with
    /// timerlat (rtla's tracer).
    #[arg(long)]
    pub timerlat: bool,
    /// With --timerlat: keep the trace around the first timerlat thread latency above US
    /// as timerlat-trace.txt in the run. Default: --max-us, else -b.
    #[arg(long, value_name = "US", requires = "timerlat")]
    pub timerlat_save_us: Option<u64>,
}

/// Options of `oslat`, named like rt-tests' oslat's.
#[derive(Debug, Clone, Default, Args)]
pub struct OslatArgs {
    /// Profile (name or file) whose `guest.probe` gives the CPUs and the duration.
    #[arg(long)]
    pub profile: Option<String>,
    /// CPUs to run on, one loop each (e.g. `1,3,5-7`). Default: the profile's probe CPUs, 1.
    #[arg(short = 'c', long = "cpu-list", value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuSet>,
    /// CPUs of the main (reporting) thread. Default: the CPUs not measured.
    #[arg(short = 'C', long = "cpu-main-thread", value_name = "LIST", value_parser = parse_cpus)]
    pub main_cpus: Option<CpuSet>,
    /// Run time (`60`, `20m`, `2h`; a bare number is seconds). Default 60s.
    #[arg(short = 'D', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Every INTERVAL (`10m`), write a complete oslat.json marked partial (atomically,
    /// hashed in the manifest): a crash or power loss loses at most one interval of a soak.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub checkpoint: Option<Duration>,
    /// oslat's one-microsecond buckets (5..=1024; the last takes the overflows).
    #[arg(short = 'b', long = "bucket-size", default_value_t = 32, value_parser = parse_count::<usize>)]
    pub buckets: usize,
    /// Run the loops at SCHED_FIFO with this priority (default: SCHED_OTHER, as oslat).
    #[arg(short = 'f', long, value_name = "PRIO", value_parser = parse_count::<u32>)]
    pub rtprio: Option<u32>,
    /// Stop when a gap reaches US: mark the ftrace trace and stop tracing (oslat `-T`).
    #[arg(short = 'T', long = "trace-threshold", value_name = "US", value_parser = parse_count::<u64>)]
    pub trace_threshold: Option<u64>,
    /// Only the summary at the end (no header, no live status).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Omit the buckets that are zero on every CPU.
    #[arg(short = 'z', long = "zero-omit")]
    pub zero_omit: bool,
    /// Also write oslat's JSON file (`-` is stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run directory for oslat.json and manifest.json. Default `./run-<utc>`.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Lock the whole binary in RAM instead of only the pages that run.
    #[arg(long = "mlockall")]
    pub mlock_all: bool,
    /// Exit 1 when any CPU's max gap exceeds BOUND microseconds.
    #[arg(long, value_name = "BOUND")]
    pub max_us: Option<u64>,
    /// Self-test instead: inject stalls of --delay-us every --every-ms on the one CPU of
    /// -c (a FIFO thread above the loop) and check they are seen, by count and size.
    #[arg(long)]
    pub selftest: bool,
    /// Injected stall (self-test), us.
    #[arg(long, default_value_t = 200)]
    pub delay_us: u64,
    /// Period of the injected stalls (self-test), ms.
    #[arg(long, default_value_t = 10)]
    pub every_ms: u64,
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

/// Which command line the probe options come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `rt-guest probe`: real-time defaults, a run directory, a summary table.
    Probe,
    /// `rt-guest cyclictest` / a link named `cyclictest`: cyclictest's defaults and stdout.
    Cyclictest,
}

/// Where the cyclictest `-h` text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistOut {
    /// Not written.
    None,
    /// To stdout after the run (cyclictest `-h` without `--histfile`).
    Stdout,
    /// To this user-named file.
    File(PathBuf),
}

/// The probe settings after combining options, profile and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The engine configuration.
    pub config: ProbeConfig,
    /// The value held in /dev/cpu_dma_latency while measuring (None: not held).
    pub dma_latency: Option<i32>,
    /// Where the histogram text goes.
    pub histogram: HistOut,
    /// Things the user should know (deprecated forms, mapped options).
    pub warnings: Vec<String>,
}

fn setting(setting: &'static str, detail: String) -> ProbeError {
    ProbeError::Setting { setting, detail }
}

/// The CPUs to measure: `-a [LIST]`, `-t [N]`, `-S` as cyclictest reads them, mapped to
/// one pinned thread per CPU.
fn resolve_cpus(args: &ProbeArgs, default: &CpuSet, online: &CpuSet) -> Result<CpuSet, ProbeError> {
    let listed = match &args.cpus {
        Some(Some(list)) => Some(list.clone()),
        Some(None) => Some(online.clone()),
        None if args.smp => Some(online.clone()),
        None => None,
    };
    match args.threads {
        None => Ok(listed.unwrap_or_else(|| default.clone())),
        Some(None) => Ok(listed.unwrap_or_else(|| online.clone())),
        Some(Some(n)) => {
            let from = listed.unwrap_or_else(|| online.clone());
            if n == 0 || n > from.len() {
                return Err(setting(
                    "threads",
                    format!(
                        "-t {n}: rt-guest runs one pinned thread per CPU, and {} CPU(s) ({from}) \
                         are there to run them",
                        from.len()
                    ),
                ));
            }
            Ok(CpuSet::from_cpus(from.iter().take(n)))
        }
    }
}

fn resolve_histogram(args: &ProbeArgs, warnings: &mut Vec<String>) -> (usize, HistOut) {
    let default_us = args.histogram_us.unwrap_or(1000);
    match &args.histogram {
        Some(HistogramArg::Buckets(n)) => (
            *n,
            args.histfile.clone().map_or(HistOut::Stdout, HistOut::File),
        ),
        Some(HistogramArg::File(p)) => {
            warnings.push(format!(
                "--histogram {} names a file: that form is deprecated, --histogram N is \
                 cyclictest's bucket count; use --histfile {}",
                p.display(),
                p.display()
            ));
            (
                default_us,
                HistOut::File(args.histfile.clone().unwrap_or(p.clone())),
            )
        }
        None => (
            default_us,
            args.histfile.clone().map_or(HistOut::None, HistOut::File),
        ),
    }
}

/// Combine `args` with the profile's probe section (or the defaults); `online` is the set
/// that `-a` alone, `-t` and `-S` mean.
pub fn resolve(
    args: &ProbeArgs,
    profile: Option<&profiles::Profile>,
    mode: Mode,
    online: &CpuSet,
) -> Result<Resolved, ProbeError> {
    let p = profile
        .and_then(|p| p.guest.as_ref())
        .map(|g| g.probe.clone())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    let policy = match (args.policy, mode, args.priority) {
        (Some(policy), _, _) => policy,
        // cyclictest: -p makes the threads SCHED_FIFO, without it they run at SCHED_OTHER.
        (None, Mode::Cyclictest, Some(prio)) if prio > 0 => Policy::Fifo,
        (None, Mode::Cyclictest, _) => Policy::Other,
        (None, Mode::Probe, _) => p.policy,
    };
    let priority = match args.priority {
        Some(prio) => prio,
        None if policy.is_realtime() => u32::from(p.priority),
        None => 0,
    };
    // An explicit loop count bounds the run by loops (0: until stopped); otherwise the
    // duration (from the options or the profile; cyclictest: until stopped) applies.
    let loops = args.loops.filter(|l| *l > 0);
    let duration = match (args.duration, args.loops, mode) {
        (Some(d), _, _) => Some(d),
        (None, Some(_), _) | (None, None, Mode::Cyclictest) => None,
        (None, None, Mode::Probe) => Some(p.duration.0),
    };
    let (hist_us, histogram) = resolve_histogram(args, &mut warnings);
    Ok(Resolved {
        config: ProbeConfig {
            cpus: resolve_cpus(args, &p.cpus, online)?,
            interval_ns: u64::from(args.interval_us.unwrap_or(p.interval_us)) * 1000,
            sched: SchedParams { policy, priority },
            loops,
            duration_ns: duration.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            breaktrace_ns: args
                .breaktrace
                .or(p.breaktrace_us)
                .map(|us| u64::from(us) * 1000),
            hist_us,
            report_cpus: None,
            checkpoint_ns: args
                .checkpoint
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        },
        dma_latency: (!args.no_dma_latency && p.dma_latency).then_some(args.latency),
        histogram,
        warnings,
    })
}

/// `rt-guest clock-echo` options.
#[derive(Debug, clap::Args)]
pub struct ClockEchoArgs {
    /// The directory shared with the host (the lab's 9p share, an NFS mount).
    pub dir: PathBuf,
    /// Give up after this long (`13h`: longer than the host's recording).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(cmd: &str, args: &[&str]) -> ProbeArgs {
        let mut v = vec!["rt-guest", cmd];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Probe(p) | Command::Cyclictest(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn probe(args: &[&str]) -> ProbeArgs {
        parse("probe", args)
    }

    fn online() -> CpuSet {
        CpuSet::from_cpus([0, 1, 2, 3])
    }

    fn res(args: &ProbeArgs, mode: Mode) -> Resolved {
        resolve(args, None, mode, &online()).unwrap()
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
        assert_eq!(a.cpus, Some(Some(CpuSet::from_cpus([1]))));
        assert_eq!(a.interval_us, Some(200));
        assert_eq!(a.priority, Some(90));
        assert_eq!(a.loops, Some(1000));
        assert_eq!(a.breaktrace, Some(150));
        assert!(a.quiet);
        let r = res(&a, Mode::Probe);
        assert_eq!(r.config.interval_ns, 200_000);
        assert_eq!(r.config.loops, Some(1000));
        assert_eq!(r.config.duration_ns, None, "loops alone bound the run");
        assert_eq!(r.config.breaktrace_ns, Some(150_000));
        assert_eq!(r.dma_latency, Some(0));
        assert_eq!(r.histogram, HistOut::None);
    }

    #[test]
    fn rtevals_command_line_means_what_it_means_to_cyclictest() {
        // rteval: cyclictest -i100 -qmu '-h 3500' -p95 -t2 -a2-3 --default-system -b150 --tracemark
        for cmd in ["probe", "cyclictest"] {
            let a = parse(
                cmd,
                &[
                    "-i100",
                    "-qmu",
                    "-h 3500",
                    "-p95",
                    "-t2",
                    "-a2-3",
                    "--default-system",
                    "-b150",
                    "--tracemark",
                ],
            );
            assert!(a.quiet && a.mlock_all && a.unbuffered && a.tracemark);
            assert_eq!(a.histogram, Some(HistogramArg::Buckets(3500)));
            let mode = if cmd == "probe" {
                Mode::Probe
            } else {
                Mode::Cyclictest
            };
            let r = res(&a, mode);
            assert_eq!(r.config.cpus, CpuSet::from_cpus([2, 3]));
            assert_eq!(r.config.hist_us, 3500);
            assert_eq!(r.histogram, HistOut::Stdout);
            assert_eq!(
                r.config.sched,
                SchedParams {
                    policy: Policy::Fifo,
                    priority: 95
                }
            );
            assert_eq!(r.dma_latency, None);
            assert_eq!(r.config.interval_ns, 100_000);
            assert_eq!(r.config.breaktrace_ns, Some(150_000));
        }
    }

    #[test]
    fn help_is_long_only_and_h_is_the_histogram() {
        let a = probe(&["-h", "1000", "-l", "0"]);
        assert_eq!(a.histogram, Some(HistogramArg::Buckets(1000)));
        let a = probe(&["--histogram=1000", "--histfile", "h.txt"]);
        let r = res(&a, Mode::Probe);
        assert_eq!(r.histogram, HistOut::File("h.txt".into()));
        assert_eq!(r.config.hist_us, 1000);
        let e = Cli::try_parse_from(["rt-guest", "probe", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let e = Cli::try_parse_from(["rt-guest", "probe", "-h"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
        // The earlier form, --histogram FILE, still works (with a warning).
        let r = res(&probe(&["--histogram", "x.txt"]), Mode::Probe);
        assert_eq!(r.histogram, HistOut::File("x.txt".into()));
        assert!(r.warnings[0].contains("--histfile"), "{:?}", r.warnings);
    }

    #[test]
    fn bare_a_t_and_s_take_the_online_cpus() {
        assert_eq!(res(&probe(&["-a"]), Mode::Probe).config.cpus, online());
        assert_eq!(res(&probe(&["-S"]), Mode::Probe).config.cpus, online());
        assert_eq!(res(&probe(&["-t"]), Mode::Probe).config.cpus, online());
        assert_eq!(
            res(&probe(&["-t", "2"]), Mode::Probe).config.cpus,
            CpuSet::from_cpus([0, 1])
        );
        assert_eq!(
            res(&probe(&["-a", "1-3", "-t2"]), Mode::Probe).config.cpus,
            CpuSet::from_cpus([1, 2])
        );
        let e = resolve(
            &probe(&["-a", "1", "-t", "3"]),
            None,
            Mode::Probe,
            &online(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("one pinned thread per CPU"), "{e}");
        // No -a: the profile's (or the default) CPU.
        assert_eq!(
            res(&probe(&[]), Mode::Probe).config.cpus,
            CpuSet::from_cpus([1])
        );
    }

    #[test]
    fn cyclictest_mode_has_cyclictests_defaults() {
        let r = res(&parse("cyclictest", &["-q"]), Mode::Cyclictest);
        assert_eq!(
            r.config.sched,
            SchedParams {
                policy: Policy::Other,
                priority: 0
            }
        );
        assert_eq!(
            (r.config.loops, r.config.duration_ns),
            (None, None),
            "until stopped"
        );
        r.config.validate().unwrap();
        // -l 0 is endless in both modes; the probe's default duration otherwise.
        let r = res(&probe(&["-l", "0"]), Mode::Probe);
        assert_eq!((r.config.loops, r.config.duration_ns), (None, None));
        let r = res(&probe(&[]), Mode::Probe);
        assert_eq!(r.config.duration_ns, Some(60_000_000_000));
        assert_eq!(r.config.sched.policy, Policy::Fifo);
        let a = parse(
            "cyclictest",
            &["-n", "--latency", "5", "--mainaffinity", "0"],
        );
        assert!(a.nanosleep);
        assert_eq!(a.mainaffinity, Some(CpuSet::from_cpus([0])));
        assert_eq!(res(&a, Mode::Cyclictest).dma_latency, Some(5));
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
            "--histfile",
            "x.txt",
            "--max-us",
            "50",
        ]);
        let r = res(&a, Mode::Probe);
        assert_eq!(r.config.cpus.len(), 2);
        assert_eq!(r.config.sched.policy, Policy::Rr);
        assert_eq!(r.config.sched.priority, 95);
        assert_eq!(r.config.duration_ns, Some(60_000_000_000));
        assert_eq!(r.dma_latency, None);
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("soon").is_err());
        assert!(Cli::try_parse_from(["rt-guest", "probe", "-a", "x"]).is_err());
        assert!(Cli::try_parse_from(["rt-guest", "probe", "--policy", "edf"]).is_err());
        assert!(Cli::try_parse_from(["rt-guest", "probe", "-h", "0"]).is_err());
    }

    #[test]
    fn profile_gives_defaults_and_options_win() {
        let lab = profiles::load("lab").unwrap().profile;
        let r = resolve(&ProbeArgs::default(), Some(&lab), Mode::Probe, &online()).unwrap();
        assert_eq!(r.config.cpus, CpuSet::from_cpus([1]));
        assert_eq!(r.config.sched.priority, 95);
        assert_eq!(r.config.duration_ns, Some(15_000_000_000));
        let r = resolve(
            &probe(&["-p", "80", "-D", "2s"]),
            Some(&lab),
            Mode::Probe,
            &online(),
        )
        .unwrap();
        assert_eq!(r.config.sched.priority, 80);
        assert_eq!(r.config.duration_ns, Some(2_000_000_000));
        // policy other takes priority 0 unless one is given (and then validation fails).
        let r = resolve(
            &probe(&["--policy", "other"]),
            Some(&lab),
            Mode::Probe,
            &online(),
        )
        .unwrap();
        assert_eq!(r.config.sched.priority, 0);
        r.config.validate().unwrap();
    }
}
