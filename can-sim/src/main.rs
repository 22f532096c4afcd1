//! `can-sim`: simulate ECUs on SocketCAN and measure frame reception against the analytic
//! worst case.
//!
//! Exit codes: [`TOOL`] (defined in `rtvirt_cli::exit`, printed by every `--help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use can_sim::{analyze, dbc, run, transport};
use clap::{CommandFactory, Parser, Subcommand};
use record::{self, RunDir};

#[derive(Parser)]
#[command(
    name = "can-sim",
    version,
    about = "Virtual CAN ECUs with measured frame-reception determinism"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send the profile's CAN matrix from one SCHED_FIFO thread per ECU and measure reception.
    Run(RunArgs),
    /// Frame times, bus load and worst-case response times (Davis et al. 2007) of a profile.
    Analyze {
        /// Profile file or bundled name.
        profile: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Most equation terms the analysis evaluates (about 10^9 per second) before it
        /// calls the messages it has not decided not schedulable.
        #[arg(long, default_value_t = can_sim::rta::RtaLimits::default().budget)]
        rta_budget: u64,
    },
    /// Play a candump log back on an interface with its original timing (streamed: any
    /// size of log).
    Replay {
        /// candump log (`candump -l` format).
        log: PathBuf,
        /// Interface to send on.
        #[arg(long)]
        iface: String,
        /// Shorten gaps between frames longer than this (a log spanning a pause or a
        /// clock jump); `none` keeps every gap.
        #[arg(long, default_value = "1s", value_parser = parse_max_gap)]
        max_gap: MaxGap,
        /// Print what was replayed as JSON.
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
    /// Convert a DBC file into a profile `can` section (RON on stdout, or a whole profile
    /// with --name); every change is a warning on stderr, the result is validated first.
    ImportDbc {
        /// The DBC file.
        file: PathBuf,
        /// Nominal bitrate (default: the DBC's Baudrate attribute, else 500000).
        #[arg(long)]
        bitrate: Option<u32>,
        /// Data-phase bitrate for CAN FD messages with BRS (default: BaudrateCANFD).
        #[arg(long)]
        data_bitrate: Option<u32>,
        /// Minimum inter-arrival time (ms) of event messages that give no GenMsgDelayTime.
        #[arg(long, value_name = "MS")]
        default_period: Option<f64>,
        /// Cycle time of one message, by name or id: NAME=MS or 0x1F0=MS (repeatable).
        #[arg(long, value_name = "MSG=MS")]
        period: Vec<dbc::PeriodOverride>,
        /// Minimum inter-arrival time of one event message (sporadic): NAME=MS (repeatable).
        #[arg(long, value_name = "MSG=MS")]
        min_interval: Vec<dbc::PeriodOverride>,
        /// Leave out messages that cannot be imported (oversized) instead of failing.
        #[arg(long)]
        skip_invalid: bool,
        /// Leave the signals out (can-sim then sends its own test payload).
        #[arg(long)]
        no_signals: bool,
        /// Write a whole profile with this name (loadable by `can-sim run FILE`).
        #[arg(long)]
        name: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// `can-sim run`'s arguments.
#[derive(clap::Args)]
struct RunArgs {
    /// Profile file or bundled name (ecu, lab, canfd).
    profile: String,
    /// Interface to send on (default: the profile's can.tx).
    #[arg(long)]
    tx: Option<String>,
    /// Interface to receive on (default: the profile's can.rx).
    #[arg(long)]
    rx: Option<String>,
    /// How long to send, e.g. 10s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Run directory to write can.json, can-tx.json and can.log into (default ./run-<utc>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bring the interfaces up over netlink first (profile bitrate; vcan* created if missing).
    #[arg(long)]
    setup: bool,
    /// Send at release times without pacing at the bus rate (overrides the profile).
    #[arg(long)]
    no_pace: bool,
    /// How long the receiver keeps listening after the last release.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// After --drain, go on listening while frames still come (a sender's queue
    /// emptying), until none came for this long; at most another --drain.
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_idle: Option<Duration>,
    /// Print the can.json record on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Which side to play: both (one process), sender (the restbus: no receiver, no
    /// can.json), receiver (the ECU side: sent = what the schedule releases), echo (send
    /// every frame of the matrix straight back on its reply id: can-echo.json; ends
    /// --drain after the last frame, or --duration + --drain after it starts) or
    /// round-trip (send, and receive the echoes: latency RTT/2, time base
    /// round_trip_echo).
    #[arg(long, default_value = "both")]
    role: run::Role,
    /// Echo and round-trip: a frame's reply id is its id XOR this (hex with 0x, or decimal).
    #[arg(long, default_value = "0x400", value_parser = parse_mask)]
    echo_xor: u32,
    /// Start of the schedule, ns since the epoch on the sender's CLOCK_REALTIME (give both
    /// sides of a split run the same; default: now + 500 ms).
    #[arg(long, value_name = "NS")]
    start_at: Option<u64>,
    /// How receive and release times relate: same_clock, ptp_kvm (the guest's clock
    /// follows the host's through ptp_kvm) or synced (both synchronised otherwise, to
    /// --clock-uncertainty-ns); recorded in can.json (round_trip_echo: --role round-trip).
    #[arg(long, default_value = "same_clock")]
    time_base: String,
    /// Receiver clock minus sender clock, ns (taken off every receive time).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_ns: i64,
    /// How far --clock-offset-ns may be off, ns (recorded: the error bound of every latency).
    #[arg(long, default_value_t = 0)]
    clock_uncertainty_ns: u64,
    /// Receiver only: measure the clock offset through this directory shared with the
    /// sender's machine (`rt-guest clock-echo DIR` runs there), before the run (applied)
    /// and after it (widens the uncertainty by the drift); recorded as `file_exchange`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["time_base", "clock_offset_ns", "clock_uncertainty_ns"])]
    clock_dir: Option<PathBuf>,
}

/// can-sim's exit codes (in every `--help` and man page).
const TOOL: rtvirt_cli::Tool = rtvirt_cli::Tool {
    bin: "can-sim",
    not_met: "analyze: a message is not schedulable; run: frames were lost, missed their \
              deadline or failed their E2E check; replay: not every frame was sent",
    interrupted: false,
};

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => TOOL.fail(&e),
    }
}

fn real_main() -> Result<ExitCode> {
    let cli: Cli = TOOL.parse();
    match cli.cmd {
        Cmd::Analyze {
            profile,
            json,
            rta_budget,
        } => {
            let loaded = profiles::load(&profile)?;
            let Some(can) = &loaded.profile.can else {
                bail!(
                    "Profile {} has no can section: nothing to analyse",
                    loaded.origin
                );
            };
            let limits = can_sim::rta::RtaLimits { budget: rta_budget };
            let mut bar = AnalysisProgress::default();
            let r = analyze::analyze_with(can, limits, &mut |p| bar.update(p))
                .with_context(|| format!("Analysing {}", loaded.origin))?;
            bar.finish();
            if json {
                rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                rtvirt_cli::out!("{}", analyze::render(&r));
            }
            Ok(if r.schedulable {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(rtvirt_cli::exit::NOT_MET)
            })
        }
        Cmd::ImportDbc {
            file,
            bitrate,
            data_bitrate,
            default_period,
            period,
            min_interval,
            skip_invalid,
            no_signals,
            name,
            out,
        } => {
            let overrides = period
                .into_iter()
                .chain(min_interval.into_iter().map(|o| dbc::PeriodOverride {
                    sporadic: true,
                    ..o
                }))
                .collect();
            let opts = dbc::ImportOptions {
                bitrate,
                data_bitrate,
                default_period_ms: default_period,
                overrides,
                skip_invalid,
                skip_signals: no_signals,
            };
            import_dbc(&file, &opts, name.as_deref(), out.as_deref())
        }
        Cmd::Replay {
            log,
            iface,
            max_gap,
            json,
        } => replay(&log, &iface, max_gap.0, json),
        Cmd::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), &TOOL, what, &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(args) => run_cmd(args),
    }
}

/// A progress bar on stderr for analyses that take more than a second.
#[derive(Default)]
struct AnalysisProgress {
    start: Option<std::time::Instant>,
    bar: Option<indicatif::ProgressBar>,
}

impl AnalysisProgress {
    fn update(&mut self, p: can_sim::rta::Progress) {
        let start = *self.start.get_or_insert_with(std::time::Instant::now);
        if self.bar.is_none() && start.elapsed() < Duration::from_secs(1) {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(u64::try_from(p.total).unwrap_or(0));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "can-sim: analysing {pos}/{len} messages {wide_bar} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        bar.set_position(u64::try_from(p.done).unwrap_or(0));
        #[allow(clippy::cast_precision_loss)]
        let share = p.used as f64 / p.budget.max(1) as f64 * 100.0;
        bar.set_message(format!("{share:.0} % of the budget"));
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn import_dbc(
    file: &std::path::Path,
    opts: &dbc::ImportOptions,
    name: Option<&str>,
    out: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let text = std::fs::read(file).with_context(|| format!("Cannot read {}", file.display()))?;
    // DBC files are often Windows-1252; keep what is valid UTF-8 and replace the rest (only
    // comments and units carry such characters).
    let text = String::from_utf8_lossy(&text);
    let imp = dbc::import(&text, &file.display().to_string(), opts)?;
    for w in &imp.warnings {
        eprintln!("can-sim: warning: {}: {w}", file.display());
    }
    let (periodic, sporadic) = imp.counts();
    eprintln!(
        "can-sim: {}: {periodic} periodic and {sporadic} sporadic messages from {} ECUs, {} left out",
        file.display(),
        imp.can.ecus.len(),
        imp.skipped.len()
    );
    let ron = match name {
        Some(n) => dbc::to_profile(&imp, n),
        None => dbc::to_ron(&imp),
    };
    match out {
        Some(p) => rt_sys::safefile::write_output(p, ron.as_bytes())
            .with_context(|| format!("Cannot write {}", p.display()))?,
        None => rtvirt_cli::out!("{ron}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `can-sim replay --json`: the summary with what was replayed where.
#[derive(serde::Serialize)]
struct ReplayReport<'a> {
    log: &'a std::path::Path,
    iface: &'a str,
    /// `--max-gap` in ms, `null` for none.
    max_gap_ms: Option<f64>,
    #[serde(flatten)]
    summary: can_sim::replay::ReplaySummary,
    /// Every frame of the log was sent.
    complete: bool,
}

fn replay(
    log: &std::path::Path,
    iface: &str,
    max_gap: Option<Duration>,
    json: bool,
) -> Result<ExitCode> {
    let stop = rtvirt_cli::stop_on_signals()?;
    let max_gap_ns = max_gap.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let bar = rtvirt_cli::progress::Bar::timed(&format!("can-sim: replaying on {iface}"), None);
    let s = can_sim::replay::replay(log, iface, max_gap_ns, &stop);
    bar.finish();
    let s = s?;
    let report = ReplayReport {
        log,
        iface,
        max_gap_ms: max_gap.map(|d| d.as_secs_f64() * 1000.0),
        summary: s,
        complete: s.sent == s.frames,
    };
    if json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_replay(&report);
    }
    Ok(if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    })
}

fn print_replay(r: &ReplayReport<'_>) {
    let (s, log, iface, max_gap) = (&r.summary, r.log, r.iface, r.max_gap_ms);
    rtvirt_cli::outln!(
        "replayed {} of {} frames from {} on {iface} ({} ENOBUFS retries, finished {:.3} ms after the last frame's time)",
        s.sent,
        s.frames,
        log.display(),
        s.enobufs,
        can_sim::timing::ns_to_ms(s.late_ns)
    );
    if s.gaps_clamped > 0 {
        rtvirt_cli::outln!(
            "{} gap(s) longer than {} shortened to it (--max-gap)",
            s.gaps_clamped,
            max_gap.map_or_else(String::new, |ms| format!("{ms} ms"))
        );
    }
    if s.len8_dlc > 0 {
        rtvirt_cli::outln!(
            "{} classic frame(s) sent with a raw DLC above 8 (len8_dlc)",
            s.len8_dlc
        );
    }
}

/// `--max-gap`: a duration, or none (keep every gap).
#[derive(Debug, Clone, Copy)]
struct MaxGap(Option<Duration>);

/// `--max-gap`: a duration, or `none` to keep every gap.
fn parse_max_gap(s: &str) -> Result<MaxGap, String> {
    match s {
        "none" | "off" => Ok(MaxGap(None)),
        _ => humantime::parse_duration(s)
            .map(|d| MaxGap(Some(d)))
            .map_err(|e| format!("{s:?} is not a duration or \"none\": {e}")),
    }
}

/// Bring the interfaces up (`--setup`).
fn setup_ifaces(can: &profiles::Can, opts: &run::RunOptions) -> Result<()> {
    let mut ifaces = Vec::new();
    if opts.role != run::Role::Receiver {
        ifaces.push(opts.tx.clone());
    }
    if opts.role != run::Role::Sender && !ifaces.contains(&opts.rx) {
        ifaces.push(opts.rx.clone());
    }
    let fd = can
        .ecus
        .iter()
        .flat_map(|e| &e.messages)
        .any(|m| m.kind != profiles::FrameKind::Classic);
    for i in ifaces {
        let msg = transport::setup(&i, can.bitrate, can.data_bitrate, fd)?;
        eprintln!("can-sim: {msg}");
    }
    Ok(())
}

/// Open the run directory, begin the tool run, record the profile and the kernel.
fn open_run_dir(dir: &std::path::Path, loaded: &profiles::Loaded) -> Result<RunDir> {
    let mut rd = RunDir::open_or_create(dir)?;
    rtvirt_cli::begin_run(
        &mut rd,
        "can-sim run",
        std::env::args().collect(),
        Some(loaded),
    )?;
    // The measuring machine's kernel, unless a tool before us (rt-guest probe) recorded it.
    if rd.manifest().environment.kernel.is_none() {
        match rt_sys::kernel::facts(&rt_sys::SysRoot::live()) {
            Ok(facts) => {
                let env = &mut rd.manifest_mut().environment;
                if facts.virtualization == rt_sys::kernel::Virtualization::Tcg {
                    env.notes
                        .push("measured under QEMU TCG: latencies are not real-time".into());
                }
                env.kernel = Some(facts);
                rd.save()?;
            }
            Err(e) => eprintln!("can-sim: warning: cannot read the kernel facts: {e}"),
        }
    }
    Ok(rd)
}

/// SIGINT and SIGTERM set `stop`, and each its own flag (to say which in the record).
struct Signals {
    stop: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> Result<Signals> {
        let s = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            int: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (signal_hook::consts::SIGINT, &s.int),
            (signal_hook::consts::SIGTERM, &s.term),
        ] {
            signal_hook::flag::register(sig, s.stop.clone())?;
            signal_hook::flag::register(sig, (*flag).clone())?;
        }
        Ok(s)
    }

    fn partial(&self) -> Option<String> {
        if self.int.load(Ordering::Relaxed) {
            Some("interrupted by SIGINT".to_string())
        } else if self.term.load(Ordering::Relaxed) {
            Some("interrupted by SIGTERM".to_string())
        } else {
            None
        }
    }
}

fn run_options(a: &RunArgs, can: &profiles::Can) -> run::RunOptions {
    run::RunOptions {
        tx: a.tx.clone().unwrap_or_else(|| can.tx.clone()),
        rx: a.rx.clone().unwrap_or_else(|| can.rx.clone()),
        duration: a.duration,
        pace: can.pace && !a.no_pace,
        drain: a.drain,
        drain_idle: a.drain_idle,
        lead: Duration::from_millis(500),
        role: a.role,
        start_at_ns: a.start_at,
        time_base: record::TimeBase {
            method: a.time_base.clone(),
            offset_ns: a.clock_offset_ns,
            uncertainty_ns: a.clock_uncertainty_ns,
            rtt: None,
        },
        echo_xor: a.echo_xor,
    }
}

/// `0x400` or `1024`.
fn parse_mask(s: &str) -> Result<u32, String> {
    dbc::parse_hex_or_dec(s).map_err(|e| format!("{s:?} is not a mask (0x400 or 1024): {e}"))
}

fn run_cmd(a: RunArgs) -> Result<ExitCode> {
    let loaded = profiles::load(&a.profile)?;
    // The ECU sender CPUs must exist in this guest (the profiles crate's machine check);
    // an echo side runs no ECU and no probe: it is not the guest the profile describes.
    if a.role != run::Role::Echo {
        loaded.check_guest(&rt_sys::SysRoot::live())?;
    }
    let Some(can) = loaded.profile.can.clone() else {
        bail!(
            "Profile {} has no can section: nothing to simulate",
            loaded.origin
        );
    };
    if !["same_clock", "ptp_kvm", "synced"].contains(&a.time_base.as_str()) {
        bail!(
            "--time-base {:?} is not same_clock, ptp_kvm or synced (file_exchange: use --clock-dir; round_trip_echo: --role round-trip)",
            a.time_base
        );
    }
    let mut opts = run_options(&a, &can);
    if a.clock_dir.is_some() && opts.role != run::Role::Receiver {
        bail!("--clock-dir measures the receiver's clock against the sender's: it needs --role receiver");
    }
    if matches!(opts.role, run::Role::Echo | run::Role::RoundTrip) {
        // The reply ids, before anything touches the bus.
        let plan = can_sim::schedule::Plan::from_can(&can)?;
        run::echo::reply_index(&plan, opts.echo_xor)?;
    }
    transport::check_af_can()?;
    if opts.role == run::Role::Echo {
        return echo_cmd(&a, &loaded, &can, &opts);
    }
    if let Some(d) = &a.clock_dir {
        opts.time_base = clock_exchange(d, Duration::from_secs(60))?;
        eprintln!(
            "can-sim: clock offset (receiver - sender) {} ns +- {} ns ({})",
            opts.time_base.offset_ns, opts.time_base.uncertainty_ns, opts.time_base.method
        );
    }
    if a.setup {
        setup_ifaces(&can, &opts)?;
    }
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(record::new_run_name()));
    let mut rd = open_run_dir(&dir, &loaded)?;
    let signals = Signals::register()?;
    let path = match opts.role {
        run::Role::Both => format!("{} -> {}", opts.tx, opts.rx),
        run::Role::Sender => format!("sending on {} (sender only)", opts.tx),
        run::Role::Receiver => format!("receiving on {} (receiver only)", opts.rx),
        run::Role::RoundTrip => format!(
            "{} -> echo -> {} (round trip, reply id XOR 0x{:X})",
            opts.tx, opts.rx, opts.echo_xor
        ),
        run::Role::Echo => unreachable!("the echo role returned above"),
    };
    eprintln!(
        "can-sim: {} messages from {} ECUs, {path}, {}, {} s",
        can.ecus.iter().map(|e| e.messages.len()).sum::<usize>(),
        can.ecus.len(),
        if opts.pace {
            "paced at the bitrate"
        } else {
            "unpaced"
        },
        a.duration.as_secs_f64()
    );
    // On a terminal: a bar over the schedule (lead, duration, drain); nothing otherwise.
    let bar = rtvirt_cli::progress::Bar::timed(
        &format!("can-sim: {path}"),
        Some(opts.lead + a.duration + opts.drain),
    );
    let outcome = run::run(&can, &opts, signals.stop.clone());
    bar.finish();
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = rd.end_tool(Some(format!("error: {e}")));
            return Err(e.into());
        }
    };
    if let Some(d) = &a.clock_dir {
        remeasure(d, &opts.time_base, &mut outcome);
    }
    let partial = signals.partial();
    let bad = write_outcome(&mut rd, outcome, partial.clone(), a.json)?;
    eprintln!("can-sim: wrote {}", dir.display());
    if let Some(p) = &partial {
        eprintln!("can-sim: partial run ({p})");
    }
    Ok(if bad {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--role echo`: echo the matrix until the window closes, write `can-echo.json`. Exit 1
/// when nothing was echoed.
fn echo_cmd(
    a: &RunArgs,
    loaded: &profiles::Loaded,
    can: &profiles::Can,
    opts: &run::RunOptions,
) -> Result<ExitCode> {
    if a.setup {
        setup_ifaces(can, opts)?;
    }
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(record::new_run_name()));
    let mut rd = open_run_dir(&dir, loaded)?;
    let signals = Signals::register()?;
    eprintln!(
        "can-sim: echoing {} -> {} on reply id XOR 0x{:X}, until {} s quiet (at most {} s)",
        opts.rx,
        opts.tx,
        opts.echo_xor,
        opts.drain.as_secs_f64(),
        (opts.duration + opts.drain).as_secs_f64()
    );
    let r = match run::echo::run_echo(can, opts, signals.stop.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ = rd.end_tool(Some(format!("error: {e}")));
            return Err(e.into());
        }
    };
    rd.write_json("can-echo.json", &r)?;
    rd.end_tool(signals.partial())?;
    if a.json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        rtvirt_cli::outln!(
            "echoed {} frames ({} ENOBUFS retries, {} refused), turnaround max {:.1} us, ended: {}",
            r.total(),
            r.tx_enobufs,
            r.tx_errors,
            us(r.turnaround_max_ns),
            r.ended
        );
        for w in &r.warnings {
            rtvirt_cli::outln!("warning: {w}");
        }
    }
    eprintln!("can-sim: wrote {}", dir.display());
    Ok(if r.total() == 0 || r.tx_errors > 0 {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    } else {
        ExitCode::SUCCESS
    })
}

/// The receiver's time base from the exchange through `dir` (the sender's side answers).
fn clock_exchange(dir: &std::path::Path, first: Duration) -> Result<record::TimeBase> {
    let rounds =
        record::clocksync::exchange(dir, can_sim::clock::ROUNDS, first, &rt_sys::rt::realtime_ns)
            .with_context(|| format!("Measuring the clock offset through {}", dir.display()))?;
    let measured = record::clocksync::estimate(&rounds)
        .with_context(|| format!("No clock exchange round through {}", dir.display()))?;
    Ok(can_sim::clock::receiver_base(&measured))
}

/// After the run: measure again and record an uncertainty that covers the drift; when
/// the sender's side no longer answers, keep the first measurement and say so.
fn remeasure(dir: &std::path::Path, applied: &record::TimeBase, outcome: &mut run::RunOutcome) {
    let after = match clock_exchange(dir, Duration::from_secs(5)) {
        Ok(t) => Some(t),
        Err(e) => {
            outcome.tx.warnings.push(format!(
                "the clock offset was not measured again after the run ({e:#}): its uncertainty is the first measurement's"
            ));
            None
        }
    };
    if let Some(r) = outcome.record.as_mut() {
        r.time_base = can_sim::clock::recorded(applied, after.as_ref());
    }
}

/// Write can.json (when something was received), can-tx.json and can.log, end the tool
/// run, print the summary. True when a requirement of the run is not met: a frame lost
/// or late, or an E2E check failed or timed out.
fn write_outcome(
    rd: &mut RunDir,
    outcome: run::RunOutcome,
    partial: Option<String>,
    json: bool,
) -> Result<bool> {
    let mut rec = outcome.record;
    if let Some(r) = rec.as_mut() {
        r.partial = partial.is_some();
        rd.write_json(record::CAN, r)?;
    }
    rd.write_json("can-tx.json", &outcome.tx)?;
    if let Some(log) = &outcome.log {
        rd.write_file(record::CAN_LOG, log.as_bytes())?;
    }
    rd.end_tool(partial)?;
    match (&rec, json) {
        (Some(r), true) => rtvirt_cli::outln!("{}", serde_json::to_string_pretty(r)?),
        (None, true) => rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&outcome.tx)?),
        (Some(r), false) => print_summary(r, &outcome.tx),
        (None, false) => print_tx_summary(&outcome.tx),
    }
    Ok(rec.is_some_and(|r| {
        r.messages.iter().any(|m| {
            m.lost > 0
                || m.deadline_misses > 0
                || m.e2e
                    .as_ref()
                    .is_some_and(|e| e.failed() > 0 || e.timeout > 0)
        })
    }))
}

fn us(ns: u64) -> f64 {
    can_sim::timing::ns_to_us(ns)
}

fn pct(h: &record::hist::HistSummary, key: &str) -> f64 {
    us(h.percentiles.get(key).copied().unwrap_or(0))
}

fn print_summary(rec: &record::CanRecord, tx: &run::TxReport) {
    rtvirt_cli::outln!(
        "{:<14} {:<10} {:>7} {:>7} {:>5} {:>4} {:>4} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "message",
        "id",
        "sent",
        "recv",
        "lost",
        "dup",
        "ooo",
        "lat p50",
        "lat p99",
        "lat max",
        "WCRT",
        "miss"
    );
    for m in &rec.messages {
        let id = can_sim::schedule::id_text(m.id, m.extended);
        rtvirt_cli::outln!(
            "{:<14} {:<10} {:>7} {:>7} {:>5} {:>4} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>6}",
            m.name,
            id,
            m.sent,
            m.received,
            m.lost,
            m.duplicates,
            m.reordered,
            pct(&m.latency, "p50"),
            pct(&m.latency, "p99"),
            us(m.latency.max_ns),
            m.wcrt_us.map_or("-".to_string(), |w| format!("{w:.1}")),
            m.deadline_misses
        );
    }
    rtvirt_cli::outln!("(latency in us: kernel RX timestamp - nominal release)");
    for m in &rec.messages {
        if let Some(e) = &m.e2e {
            rtvirt_cli::outln!(
                "e2e {} {}: ok {}, some lost {}, repeated {}, wrong sequence {}, error {}, timeout {} (> {:.1} ms)",
                e.profile,
                m.name,
                e.ok,
                e.ok_some_lost,
                e.repeated,
                e.wrong_sequence,
                e.error,
                e.timeout,
                e.timeout_us as f64 / 1000.0
            );
        }
    }
    print_tx_summary(tx);
    rtvirt_cli::outln!(
        "bus load analytic {:.2} %, measured {:.2} %; ENOBUFS retries {}; timestamps {}; time base {}; foreign frames {}",
        rec.bus_load_analytic_pct,
        rec.bus_load_measured_pct,
        rec.tx_enobufs,
        rec.timestamp_source,
        rec.time_base.method,
        tx.foreign_frames
    );
    if let Some(r) = &rec.time_base.rtt {
        rtvirt_cli::outln!(
            "round trips: {} frames, min {:.1} us, median {:.1} us, p99 {:.1} us, max {:.1} us (one-way latency = RTT/2 +- {:.1} us)",
            r.samples,
            us(r.min_ns),
            us(r.median_ns),
            us(r.p99_ns),
            us(r.max_ns),
            us(rec.time_base.uncertainty_ns)
        );
    }
    for e in &rec.bus_errors {
        rtvirt_cli::outln!("bus error: {e}");
    }
}

fn print_tx_summary(tx: &run::TxReport) {
    for e in &tx.ecus {
        rtvirt_cli::outln!(
            "ecu/{:<12} {} releases, wake-up late p50 {:.1} us, p99 {:.1} us, max {:.1} us ({}{})",
            e.name,
            e.releases,
            pct(&e.release_latency, "p50"),
            pct(&e.release_latency, "p99"),
            us(e.release_latency.max_ns),
            e.sched,
            e.cpus
                .as_deref()
                .map(|c| format!(", cpu {c}"))
                .unwrap_or_default()
        );
        for w in &e.warnings {
            rtvirt_cli::outln!("  warning: {w}");
        }
    }
    for w in &tx.warnings {
        rtvirt_cli::outln!("warning: {w}");
    }
    if tx.role == "sender" {
        rtvirt_cli::outln!(
            "sender only: schedule start {} ns, {} frames sent (give the receiver --start-at {})",
            tx.start_ns,
            tx.sent.values().sum::<u64>(),
            tx.start_ns
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_json_names_the_log_the_interface_and_every_count() {
        let summary = can_sim::replay::ReplaySummary {
            frames: 10,
            sent: 9,
            enobufs: 2,
            gaps_clamped: 1,
            len8_dlc: 0,
            late_ns: 1500,
        };
        let r = ReplayReport {
            log: std::path::Path::new("can.log"),
            iface: "can0",
            max_gap_ms: Some(1000.0),
            summary,
            complete: false,
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"log": "can.log", "iface": "can0", "max_gap_ms": 1000.0,
                "frames": 10, "sent": 9, "enobufs": 2, "gaps_clamped": 1, "len8_dlc": 0,
                "late_ns": 1500, "complete": false})
        );
    }
}
