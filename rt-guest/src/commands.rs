//! The subcommands of `rt-guest`: wiring options, the kernel (`mlockall`,
//! `/dev/cpu_dma_latency`, ftrace, signals) and the run directory around the engine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use record::{self, RunDir};
use rt_sys::journal::{Journal, RevertOutcome};
use rt_sys::rt::{self, DmaLatency, Ftrace};
use rt_sys::{kernel, CpuSet, SysRoot};

use crate::cli::{
    self, CheckArgs, HistOut, Mode, ProbeArgs, Resolved, RevertArgs, SelftestArgs, TuneArgs,
};
use crate::cyclictest::{self, Header, Sysinfo};
use crate::guest::{self, Status};
use crate::output::{self, Reserve};
use crate::probe::{self, Checkpoint, Ending, Live, LiveThread, Outcome};
use crate::selftest::{self, SelftestConfig};
use crate::{evidence, timerlat, VERSION};
use rtvirt_cli::progress::Bar;

/// Exit code: all good.
pub const EXIT_OK: u8 = rtvirt_cli::exit::OK;
/// Exit code: a bound or check was not met.
pub const EXIT_NOT_MET: u8 = rtvirt_cli::exit::NOT_MET;

/// Stop flag set by SIGINT/SIGTERM, and which signal it was.
pub struct Signals {
    /// Set on SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl Signals {
    /// Register the handlers.
    pub fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, stop.clone())
                .with_context(|| format!("Cannot install the handler for signal {sig}"))?;
            signal_hook::flag::register_usize(
                sig,
                which.clone(),
                usize::try_from(sig).unwrap_or(0),
            )
            .with_context(|| format!("Cannot install the handler for signal {sig}"))?;
        }
        Ok(Signals { stop, which })
    }

    /// The signal's name, if one arrived.
    pub fn reason(&self) -> Option<String> {
        if !self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.which.load(Ordering::SeqCst);
        let name = if n == usize::try_from(signal_hook::consts::SIGTERM).unwrap_or(0) {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        Some(format!("interrupted by {name}"))
    }
}

/// The CPUs for the reporting thread: online CPUs minus the measured ones.
pub(crate) fn report_cpus(root: &SysRoot, measured: &CpuSet) -> Option<CpuSet> {
    let online = rt_sys::cpulist::online(root).ok()?;
    let rest = online.difference(measured);
    (!rest.is_empty()).then_some(rest)
}

/// Every measured CPU must be online; measuring every CPU at a real-time policy leaves
/// no CPU for the reporting thread and the rest of the system (warned, as cyclictest
/// allows it; RT throttling still applies).
pub(crate) fn check_cpus(root: &SysRoot, cfg: &probe::ProbeConfig) -> Result<()> {
    let online = match rt_sys::cpulist::online(root) {
        Ok(c) => c,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e).context("Cannot read the online CPUs"),
    };
    let absent = cfg.cpus.difference(&online);
    if !absent.is_empty() {
        anyhow::bail!(
            "Invalid probe setting cpus: CPU {absent} is not online here (online: {online})"
        );
    }
    if cfg.report_cpus.is_none() && cfg.sched.policy.is_realtime() {
        eprintln!(
            "warning: every online CPU ({online}) is measured at {}: the reporting thread \
             and the rest of the system share them",
            cfg.sched
        );
    }
    Ok(())
}

/// The NUMA node of `cpu` (the `nodeN` link in its sysfs directory), 0 when unknown.
fn numa_node(root: &SysRoot, cpu: u32) -> u32 {
    root.list(rt_sys::cpulist::cpu_dir(cpu))
        .unwrap_or_default()
        .iter()
        .find_map(|n| n.strip_prefix("node").and_then(|k| k.parse().ok()))
        .unwrap_or(0)
}

/// Memory locking and the PM QoS hold for a measurement.
pub(crate) struct Prepared {
    pub(crate) mlock: bool,
    pub(crate) dma: Option<DmaLatency>,
    pub(crate) warnings: Vec<String>,
}

pub(crate) fn prepare(root: &SysRoot, hold_dma: Option<i32>, mlock_all: bool) -> Prepared {
    let mut warnings = Vec::new();
    let locked = if mlock_all {
        rt::mlockall()
    } else {
        // Start-up code (options, profile, checks) leaves the resident set before
        // locking: only what runs from here on is faulted back in and locked.
        let _ = rt::drop_exe_text(root);
        rt::mlockall_touched()
    };
    let mlock = match locked {
        Ok(()) => true,
        Err(e) => {
            warnings.push(format!("memory not locked: {e}"));
            false
        }
    };
    let dma = if let Some(us) = hold_dma {
        match DmaLatency::hold(root, us) {
            Ok(h) => Some(h),
            Err(e) => {
                let dev = root.display(rt_sys::cpuidle::DMA_LATENCY);
                warnings.push(format!("{dev} not held: {e}"));
                None
            }
        }
    } else {
        None
    };
    Prepared {
        mlock,
        dma,
        warnings,
    }
}

/// cyclictest's numbers of one live thread.
fn live_status(i: usize, t: &LiveThread, cfg: &probe::ProbeConfig) -> cyclictest::Status {
    let n = t.samples.load(Ordering::Relaxed);
    let min = t.min_ns.load(Ordering::Relaxed);
    cyclictest::Status {
        index: i,
        tid: t.tid.load(Ordering::Relaxed),
        priority: cfg.sched.priority,
        interval_us: cfg.interval_ns / 1000,
        cycles: n,
        min_us: if min == u64::MAX { 0 } else { min / 1000 },
        act_us: t.last_ns.load(Ordering::Relaxed) / 1000,
        avg_us: t.sum_ns.load(Ordering::Relaxed).checked_div(n).unwrap_or(0) / 1000,
        max_us: t.max_ns.load(Ordering::Relaxed) / 1000,
    }
}

/// The status lines, one per thread; `extra` adds missed periods and the time (the
/// probe's form; cyclictest's form without).
fn status_lines(
    live: &Live,
    cfg: &probe::ProbeConfig,
    extra: Option<(f64, Option<f64>)>,
) -> String {
    let mut s = String::new();
    for (i, t) in live.threads.iter().enumerate() {
        s.push_str(&cyclictest::status_line(&live_status(i, t, cfg)));
        if extra.is_some() {
            // The rolling max: the largest latency since the previous status line.
            s.push_str(&format!(
                " Missed:{} Win:{}",
                t.missed.load(Ordering::Relaxed),
                t.window_max_ns.swap(0, Ordering::Relaxed) / 1000
            ));
        }
        if i + 1 < live.threads.len() {
            s.push('\n');
        }
    }
    match extra {
        Some((el, Some(p))) => s.push_str(&format!("  [{el:.0}/{p:.0} s]")),
        Some((el, None)) => s.push_str(&format!("  [{el:.0} s]")),
        None => {}
    }
    s
}

/// Exit code after SIGINT or SIGTERM: 128 + the signal number (130, 143), as a shell
/// reports a process that a signal ended. The data measured until then is written and
/// marked partial.
pub const EXIT_SIGNAL_BASE: u8 = rtvirt_cli::exit::SIGNAL_BASE;

impl Signals {
    /// The exit code for the signal that arrived, if one did.
    pub fn exit_code(&self) -> Option<u8> {
        if !self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let n = u8::try_from(self.which.load(Ordering::SeqCst)).unwrap_or(2);
        Some(EXIT_SIGNAL_BASE + n)
    }
}

/// Load profile `p` and check its guest-side CPUs against this machine (the profiles
/// crate's machine checks, as every tool does).
fn load_for_guest(p: &str, root: &SysRoot) -> Result<profiles::Loaded> {
    let loaded = profiles::load(p).with_context(|| format!("Cannot load profile {p:?}"))?;
    loaded.check_guest(root)?;
    Ok(loaded)
}

pub(crate) fn load_profile(name: Option<&str>, root: &SysRoot) -> Result<Option<profiles::Loaded>> {
    name.map(|p| load_for_guest(p, root)).transpose()
}

/// The online CPUs (`-a` alone, `-t`, `-S`); this process's affinity where the kernel
/// does not say.
pub(crate) fn online_cpus(root: &SysRoot) -> CpuSet {
    rt_sys::cpulist::online(root)
        .ok()
        .or_else(|| rt_sys::sched::get_affinity(0).ok())
        .unwrap_or_else(|| CpuSet::from_cpus([0]))
}

/// The partial reason of a tool run that has not ended (yet, or ever: killed).
pub const RUNNING: &str = "running: no end recorded (killed or still measuring)";

/// Open (or create) the run directory and record the tool run, the profile, the kernel
/// facts and the guest check.
pub(crate) fn open_run(
    root: &SysRoot,
    dir: &Path,
    tool: &str,
    argv: &[String],
    loaded: Option<&profiles::Loaded>,
) -> Result<RunDir> {
    let mut rd = RunDir::open_or_create(dir)
        .with_context(|| format!("Cannot open run directory {}", dir.display()))?;
    rtvirt_cli::begin_run(&mut rd, tool, argv.to_vec(), loaded)?;
    // Partial until it ends: a run killed (SIGKILL, power loss) leaves a manifest that says
    // so instead of `end: null, partial: false`.
    if let Some(t) = rd.manifest_mut().tools.last_mut() {
        t.partial = true;
        t.partial_reason = Some(RUNNING.into());
    }
    let facts = kernel::facts(root).context("Cannot read the kernel facts")?;
    let check = guest::check(root, loaded.map(|l| &l.profile), Duration::from_millis(200));
    let env = &mut rd.manifest_mut().environment;
    if facts.virtualization == kernel::Virtualization::Tcg {
        env.notes
            .push("measured under QEMU TCG: latencies are not real-time".into());
    }
    env.kernel = Some(facts.clone());
    env.guest_check = Some(evidence::check_report(&check, Some(facts.clone())));
    rd.save()?;
    Ok(rd)
}

/// How a probe run talks: cyclictest's stdout, or the probe's (status on stderr, a table).
#[derive(Debug, Clone, Copy)]
struct Voice {
    quiet: bool,
    /// stdout carries cyclictest's output (cyclictest mode, or `-h` to stdout).
    cyclictest: bool,
    tty: bool,
}

/// What a checkpoint needs: the run directory and the record's settings.
struct Checkpointer<'a> {
    rd: Option<&'a mut RunDir>,
    mlock: bool,
    dma_held: bool,
}

impl Checkpointer<'_> {
    /// Write `probe.json` as it stands (atomically, hashed in the manifest, marked partial)
    /// and say so; a failed write keeps the previous checkpoint.
    fn write(&mut self, cfg: &probe::ProbeConfig, cp: &Checkpoint<'_>, bar: &Bar) {
        let Some(rd) = self.rd.as_deref_mut() else {
            return;
        };
        let rec = evidence::checkpoint_record(cfg, self.mlock, self.dma_held, cp);
        let at = evidence::rfc3339(rt::realtime_ns());
        if let Some(t) = rd.manifest_mut().tools.last_mut() {
            t.partial_reason = Some(format!(
                "checkpoint {} at {at}: the run went on (still measuring, or killed)",
                cp.number
            ));
        }
        let (mut worst, mut win) = (0, (0, 0));
        for t in &cp.threads {
            worst = worst.max(t.stats.max_ns);
            if t.interval_max_ns >= win.0 {
                win = (t.interval_max_ns, t.cpu);
            }
        }
        bar.println(&match rd.write_json(record::PROBE, &rec) {
            Ok(()) => format!(
                "checkpoint {} ({:.0} s): max {:.1} us this interval (CPU {}), {:.1} us so far",
                cp.number,
                ns_f(cp.elapsed_ns) / 1e9,
                ns_f(win.0) / 1e3,
                win.1,
                ns_f(worst) / 1e3
            ),
            Err(e) => format!(
                "warning: checkpoint {} not written ({e:#}): the previous one stays",
                cp.number
            ),
        });
    }
}

fn ns_f(ns: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // ns of a run fit a double well
    let v = ns as f64;
    v
}

fn run_engine(
    cfg: &probe::ProbeConfig,
    ftrace: Option<Ftrace>,
    signals: &Signals,
    live: Arc<Live>,
    voice: Voice,
    mut checkpointer: Checkpointer<'_>,
    mut timerlat: Option<&mut timerlat::Collector>,
) -> Result<Outcome, probe::ProbeError> {
    #[allow(clippy::cast_precision_loss)]
    let planned_s = cfg.duration_ns.map(|d| d as f64 / 1e9);
    let t0 = rt::monotonic_ns();
    let cfg2 = cfg.clone();
    // On a terminal the status lines are a progress bar's message (indicatif), below the
    // bar over the planned duration; elsewhere, plain lines as before.
    let bar = if voice.tty && !voice.quiet && !voice.cyclictest {
        Bar::driven("rt-guest probe", cfg.duration_ns.map(Duration::from_nanos))
    } else {
        Bar::default()
    };
    let bar = &bar;
    probe::run(
        cfg,
        ftrace,
        signals.stop.clone(),
        live,
        Duration::from_secs(1),
        move |l| {
            if let Some(t) = timerlat.as_deref_mut() {
                if let Err(e) = t.drain() {
                    eprintln!("warning: timerlat trace not read further: {e}");
                }
            }
            if voice.quiet {
                return;
            }
            if voice.cyclictest {
                rtvirt_cli::outln!("{}", status_lines(l, &cfg2, None));
                return;
            }
            let elapsed = rt::monotonic_ns().saturating_sub(t0);
            let line = status_lines(l, &cfg2, Some((ns_f(elapsed) / 1e9, planned_s)));
            if bar.visible() {
                bar.set_elapsed(Duration::from_nanos(elapsed));
                bar.set_message(line);
            } else {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{line}");
                let _ = e.flush();
            }
        },
        |cp| checkpointer.write(cfg, cp, bar),
    )
}

/// The arguments clap reads: a binary run under the name `cyclictest` (a link, for tools
/// such as rteval that call cyclictest by name) is `rt-guest cyclictest ARGS`.
pub fn cli_args(argv: &[String]) -> Vec<String> {
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() == Some("cyclictest") {
        let mut v = vec!["rt-guest".to_string(), "cyclictest".to_string()];
        v.extend(argv.iter().skip(1).cloned());
        v
    } else {
        argv.to_vec()
    }
}

/// `rt-guest probe` and `rt-guest cyclictest`.
pub fn probe(args: &ProbeArgs, argv: Vec<String>, mode: Mode) -> Result<u8> {
    let root = SysRoot::live();
    let (loaded, resolved, cfg) = configure(args, mode, &root)?;
    let mut timerlat = start_timerlat(args, &cfg, &root)?;
    let signals = Signals::register()?;
    let (mut rd, mut reserve) = open_output(args, mode, &root, &argv, loaded.as_ref())?;
    let voice = Voice {
        quiet: args.quiet,
        cyclictest: mode == Mode::Cyclictest || resolved.histogram == HistOut::Stdout,
        tty: rtvirt_cli::progress::enabled(),
    };

    let mut prep = prepare(&root, resolved.dma_latency, args.mlock_all);
    let ftrace = open_ftrace(&root, &cfg, &mut prep.warnings);
    for w in &prep.warnings {
        eprintln!("warning: {w}");
    }
    let dma_value = prep.dma.as_mut().and_then(|d| d.current().ok());
    if voice.cyclictest {
        if let Some(v) = dma_value {
            print_flush(&cyclictest::dma_line(v));
        }
    }
    let live = Arc::new(Live::new(&cfg.cpus));
    let checkpointer = Checkpointer {
        rd: rd.as_mut(),
        mlock: prep.mlock,
        dma_held: dma_value.is_some(),
    };
    let outcome = run_engine(
        &cfg,
        ftrace,
        &signals,
        live.clone(),
        voice,
        checkpointer,
        timerlat.as_mut(),
    );
    drop(prep.dma.take());
    // Measuring is over: what is allocated from here on (HDR encoding, JSON) need not be
    // locked nor populated in full.
    if prep.mlock {
        rt::munlockall();
        let _ = rt::drop_exe_text(&root);
    }
    if let Some(r) = reserve.as_mut() {
        r.release();
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(rd) = rd.as_mut() {
                let _ = rd.end_tool(Some(format!("error: {e}")));
            }
            return Err(e.into());
        }
    };
    let partial = match outcome.ending {
        Ending::Stopped => signals.reason().or(Some("stopped".into())),
        _ => None,
    };
    if let (Some(t), Some(rd)) = (timerlat.take(), rd.as_mut()) {
        finish_timerlat(t, rd, partial.is_some())?;
    }
    let done = Done {
        cfg: &cfg,
        args,
        resolved: &resolved,
        outcome: &outcome,
        live: &live,
        partial,
        mlock: prep.mlock,
        dma_value,
        voice,
    };
    let exceeded = args
        .max_us
        .is_some_and(|b| outcome.threads.iter().any(|t| t.stats.max_ns > b * 1000));
    let code = match signals.exit_code() {
        Some(c) if done.partial.is_some() => c,
        _ if exceeded => EXIT_NOT_MET,
        _ => EXIT_OK,
    };
    done.write(&root, rd.as_mut(), &argv, code)?;
    if exceeded {
        eprintln!(
            "max latency above the bound of {} us",
            args.max_us.unwrap_or(0)
        );
    }
    Ok(code)
}

/// The profile, the options resolved against it and the machine, and the probe's
/// configuration, with every output path checked before anything is measured.
fn configure(
    args: &ProbeArgs,
    mode: Mode,
    root: &SysRoot,
) -> Result<(Option<profiles::Loaded>, Resolved, probe::ProbeConfig)> {
    let loaded = load_profile(args.profile.as_deref(), root)?;
    let online = online_cpus(root);
    let resolved = cli::resolve(args, loaded.as_ref().map(|l| &l.profile), mode, &online)?;
    for w in &resolved.warnings {
        eprintln!("warning: {w}");
    }
    output::check(args.json.as_deref(), "JSON file")?;
    if let HistOut::File(p) = &resolved.histogram {
        output::check(Some(p), "histogram")?;
    }
    let mut cfg = resolved.config.clone();
    cfg.report_cpus = args
        .mainaffinity
        .clone()
        .or_else(|| report_cpus(root, &cfg.cpus));
    cfg.validate()?;
    check_cpus(root, &cfg)?;
    Ok((loaded, resolved, cfg))
}

/// The timerlat tracer beside the probe when asked for, saving the trace around a
/// latency above `--timerlat-save-us` (or the bound, or the breaktrace value).
fn start_timerlat(
    args: &ProbeArgs,
    cfg: &probe::ProbeConfig,
    root: &SysRoot,
) -> Result<Option<timerlat::Collector>> {
    if !args.timerlat {
        return Ok(None);
    }
    let save = args
        .timerlat_save_us
        .or(args.max_us)
        .or(cfg.breaktrace_ns.map(|n| n / 1000))
        .map(|us| us * 1000);
    let c = timerlat::Collector::start(root, &cfg.cpus, cfg.interval_ns / 1000, save)
        .context("Cannot run the timerlat tracer beside the probe")?;
    Ok(Some(c))
}

/// The run directory (a new one for `probe` without `--out`, none for `cyclictest`) and
/// the disk space held back so a full disk still lets the records be written.
fn open_output(
    args: &ProbeArgs,
    mode: Mode,
    root: &SysRoot,
    argv: &[String],
    loaded: Option<&profiles::Loaded>,
) -> Result<(Option<RunDir>, Option<Reserve>)> {
    let tool = match mode {
        Mode::Probe => "rt-guest probe",
        Mode::Cyclictest => "rt-guest cyclictest",
    };
    let out_dir = match (&args.out, mode) {
        (Some(d), _) => Some(d.clone()),
        (None, Mode::Probe) => Some(PathBuf::from(record::new_run_name())),
        (None, Mode::Cyclictest) => None,
    };
    let rd = out_dir
        .as_deref()
        .map(|d| open_run(root, d, tool, argv, loaded))
        .transpose()?;
    let reserve = rd.as_ref().map(|rd| {
        let (r, warning) = Reserve::hold(rd.path(), output::RESERVE_BYTES);
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        r
    });
    Ok((rd, reserve))
}

/// The ftrace marker for `--breaktrace`; without tracefs the run still stops there.
fn open_ftrace(
    root: &SysRoot,
    cfg: &probe::ProbeConfig,
    warnings: &mut Vec<String>,
) -> Option<Ftrace> {
    cfg.breaktrace_ns?;
    match Ftrace::open(root) {
        Ok(f) => Some(f),
        Err(e) => {
            warnings.push(format!(
                "breaktrace without ftrace (the run still stops): {e}"
            ));
            None
        }
    }
}

/// The timerlat record of the run, and the trace saved around an exceedance.
fn finish_timerlat(t: timerlat::Collector, rd: &mut RunDir, partial: bool) -> Result<()> {
    let (rec, saved) = t.finish(partial);
    if let Some(text) = saved {
        rd.write_file(record::TIMERLAT_TRACE, text.as_bytes())?;
    }
    rd.write_json(record::TIMERLAT, &rec)?;
    Ok(())
}

/// A finished measurement and what to write of it.
struct Done<'a> {
    cfg: &'a probe::ProbeConfig,
    args: &'a ProbeArgs,
    resolved: &'a Resolved,
    outcome: &'a Outcome,
    live: &'a Live,
    partial: Option<String>,
    mlock: bool,
    dma_value: Option<i32>,
    voice: Voice,
}

impl Done<'_> {
    fn write(
        &self,
        root: &SysRoot,
        rd: Option<&mut RunDir>,
        argv: &[String],
        code: u8,
    ) -> Result<()> {
        let (cfg, outcome) = (self.cfg, self.outcome);
        let rec = evidence::probe_record(
            cfg,
            self.mlock,
            self.dma_value.is_some(),
            outcome,
            self.partial.is_some(),
        );
        if let Some(p) = &self.args.json {
            let header = Header {
                cmdline: argv.join(" "),
                version: format!("rt-guest {VERSION}"),
                start_wall_ns: outcome.start_wall_ns,
                end_wall_ns: outcome.end_wall_ns,
                return_code: i32::from(code),
                partial: self.partial.is_some(),
                sysinfo: Sysinfo::read(root),
            };
            let nodes: Vec<u32> = outcome
                .threads
                .iter()
                .map(|t| numa_node(root, t.cpu))
                .collect();
            output::write(
                p,
                cyclictest::json(&header, &outcome.threads, &nodes).as_bytes(),
            )?;
        }
        let mut text = String::new();
        if let Some(r) = &self.partial {
            text.push_str(&cyclictest::partial_line(r));
        }
        let breaks = cfg
            .breaktrace_ns
            .map(|_| cyclictest::break_lines(&outcome.threads, outcome.breaktrace))
            .unwrap_or_default();
        match &self.resolved.histogram {
            HistOut::File(p) => {
                text.push_str(&cyclictest::histogram_text(
                    &outcome.threads,
                    self.dma_value,
                ));
                text.push_str(&breaks);
                output::write(p, text.as_bytes())?;
            }
            HistOut::Stdout => {
                text.push_str(&cyclictest::histogram_text(&outcome.threads, None));
                text.push_str(&breaks);
                print_flush(&text);
            }
            HistOut::None if self.voice.cyclictest => {
                text.push_str(&status_lines(self.live, cfg, None));
                text.push('\n');
                text.push_str(&breaks);
                print_flush(&text);
            }
            HistOut::None => {}
        }
        if let Some(rd) = rd {
            if outcome.ending == Ending::Breaktrace {
                rd.manifest_mut().environment.notes.push(format!(
                    "breaktrace: the run stopped at a latency above {} us",
                    cfg.breaktrace_ns.unwrap_or(0) / 1000
                ));
            }
            rd.write_json(record::PROBE, &rec)?;
            rd.end_tool(self.partial.clone())?;
            let line = format!(
                "run: {}{}",
                rd.path().display(),
                match &self.partial {
                    Some(r) => format!(" (partial: {r})"),
                    None => String::new(),
                }
            );
            if self.voice.cyclictest {
                eprintln!("{line}");
            } else {
                rtvirt_cli::outln!("{line}");
            }
        }
        if !self.voice.cyclictest {
            print_flush(&(summary_table(&rec, outcome) + &breaks));
        }
        Ok(())
    }
}

pub(crate) fn print_flush(text: &str) {
    rtvirt_cli::out::write_bytes(text.as_bytes());
}

/// The probe's summary: exact values per CPU.
fn summary_table(rec: &record::ProbeRecord, outcome: &Outcome) -> String {
    let mut s = format!(
        "{:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>6} {:>6}\n",
        "cpu",
        "samples",
        "min us",
        "avg us",
        "p99 us",
        "p99.99us",
        "max us",
        "max cycle",
        "missed",
        "o.o.r.",
        "faults"
    );
    for (t, r) in rec.threads.iter().zip(&outcome.threads) {
        let l = &t.latency;
        #[allow(clippy::cast_precision_loss)]
        let u = |ns: u64| ns as f64 / 1000.0;
        s.push_str(&format!(
            "{:>4} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10} {:>7} {:>6} {:>6}\n",
            t.cpu,
            t.samples,
            u(l.exact.map_or(l.min_ns, |e| e.min_ns)),
            l.exact.map_or(l.mean_ns, |e| e.mean_ns) / 1000.0,
            u(l.percentiles.get("p99").copied().unwrap_or(0)),
            u(l.percentiles.get("p99.99").copied().unwrap_or(0)),
            u(l.exact.map_or(l.max_ns, |e| e.max_ns)),
            t.max_at_cycle,
            t.missed_periods,
            t.out_of_range,
            r.faults_in_loop
        ));
    }
    s
}

/// A self-test's checks, one line each.
pub(crate) fn print_checks(checks: &[selftest::Check]) {
    for c in checks {
        let word = if c.passed { "ok" } else { "FAIL" };
        rtvirt_cli::outln!("  [{word}] {}: {}", c.name, c.detail);
    }
}

/// `rt-guest selftest`.
pub fn selftest(args: &SelftestArgs, argv: Vec<String>) -> Result<u8> {
    let root = SysRoot::live();
    let signals = Signals::register()?;
    let cpus = CpuSet::from_cpus([args.cpu]);
    let cfg = SelftestConfig {
        cpu: args.cpu,
        interval_ns: u64::from(args.interval_us) * 1000,
        delay_ns: u64::from(args.delay_us) * 1000,
        every: args.every,
        loops: args.loops,
        priority: 90,
        report_cpus: report_cpus(&root, &cpus),
    };
    let mut prep = prepare(&root, Some(0), false);
    for w in &prep.warnings {
        eprintln!("warning: {w}");
    }
    let result = selftest::run(&cfg, signals.stop.clone());
    drop(prep.dma.take());
    let result = result?;
    if let Some(reason) = signals.reason() {
        anyhow::bail!("Self-test {reason}: no result");
    }
    if let Some(dir) = &args.out {
        let mut rd = RunDir::open_or_create(dir)
            .with_context(|| format!("Cannot open run directory {}", dir.display()))?;
        rtvirt_cli::begin_run(&mut rd, "rt-guest selftest", argv, None)?;
        rd.manifest_mut().environment.selftest = Some(evidence::selftest_summary(&result));
        rd.end_tool(None)?;
    }
    if args.json {
        // The full result (baseline, tolerance); the run record keeps its summary.
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        rtvirt_cli::outln!(
            "selftest on cpu {}: {} ({} delays of {} us every {} periods injected, {} detected; max {:.1} us)",
            result.cpu,
            if result.passed { "PASSED" } else { "FAILED" },
            result.injected,
            result.delay_us,
            result.every,
            result.detected,
            result.max_us
        );
        print_checks(&result.checks);
    }
    Ok(if result.passed { EXIT_OK } else { EXIT_NOT_MET })
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Bad => "BAD",
        Status::NotPresent => "not present",
        Status::NotPermitted => "not permitted here",
        Status::Info => "info",
    }
}

/// `rt-guest check`.
pub fn check(args: &CheckArgs) -> Result<u8> {
    let root = SysRoot::live();
    let loaded = match &args.profile {
        Some(p) => Some(load_for_guest(p, &root)?),
        None => None,
    };
    let report = guest::check(
        &root,
        loaded.as_ref().map(|l| &l.profile),
        Duration::from_millis(args.steal_window_ms),
    );
    if args.json {
        let facts = kernel::facts(&root).ok();
        let typed = evidence::check_report(&report, facts);
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&typed)?);
    } else {
        for i in &report.items {
            let want = i
                .desired
                .as_ref()
                .map(|d| format!(" (want {d})"))
                .unwrap_or_default();
            rtvirt_cli::outln!(
                "{:<40} {:<18} {}{}{}",
                i.name,
                status_word(i.status),
                i.current,
                want,
                if i.detail.is_empty() {
                    String::new()
                } else {
                    format!("  - {}", i.detail)
                }
            );
        }
    }
    Ok(if report.ok() { EXIT_OK } else { EXIT_NOT_MET })
}

/// `rt-guest tune`.
pub fn tune(args: &TuneArgs) -> Result<u8> {
    let root = SysRoot::live();
    let loaded = load_for_guest(&args.profile, &root)?;
    let changes = guest::plan(&root, &loaded.profile);
    let mut journal = Journal::open_locked(&args.journal_dir)
        .with_context(|| format!("Cannot open the journal in {}", args.journal_dir.display()))?;
    let id = rt_sys::journal::ProfileId {
        name: loaded.profile.name.clone(),
        sha256: loaded.sha256(),
    };
    let applied = guest::apply(&root, &mut journal, &id, changes)?;
    if args.json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&applied)?);
    } else if applied.is_empty() {
        rtvirt_cli::outln!("nothing to change");
    } else {
        for a in &applied {
            rtvirt_cli::outln!(
                "{:<40} {} -> {}: {}",
                a.change.item,
                a.change.current,
                a.change.desired,
                a.outcome
            );
        }
        rtvirt_cli::outln!("journal: {}", Journal::file_in(&args.journal_dir).display());
    }
    Ok(if applied.iter().all(|a| a.ok) {
        EXIT_OK
    } else {
        EXIT_NOT_MET
    })
}

/// `rt-guest revert`.
pub fn revert(args: &RevertArgs) -> Result<u8> {
    let root = SysRoot::live();
    let mut journal = Journal::open_locked(&args.journal_dir)
        .with_context(|| format!("Cannot open the journal in {}", args.journal_dir.display()))?;
    let out = journal.revert(&root)?;
    if args.json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.is_empty() {
        rtvirt_cli::outln!("nothing to revert");
    } else {
        for r in &out {
            let what = match &r.outcome {
                RevertOutcome::Restored => "restored".to_string(),
                RevertOutcome::Vanished => "gone (nothing to restore)".to_string(),
                RevertOutcome::Failed(e) => format!("FAILED: {e}"),
            };
            rtvirt_cli::outln!(
                "{:<50} {} <- {}: {what}",
                r.entry.target.to_string(),
                r.entry.prior,
                r.entry.applied
            );
        }
    }
    let failed = out
        .iter()
        .any(|r| matches!(r.outcome, RevertOutcome::Failed(_)));
    Ok(if failed { EXIT_NOT_MET } else { EXIT_OK })
}

/// `rt-guest clock-echo`: answer the host's clock exchange until it says stop.
pub fn clock_echo(a: &crate::cli::ClockEchoArgs) -> Result<u8> {
    let stop = rtvirt_cli::stop_on_signals()?;
    let n = record::clocksync::echo(&a.dir, a.timeout, &stop, &rt_sys::rt::realtime_ns)
        .with_context(|| format!("Answering the clock exchange in {}", a.dir.display()))?;
    rtvirt_cli::outln!(
        "rt-guest clock-echo: answered {n} request(s) in {}",
        a.dir.display()
    );
    Ok(0)
}
