//! The subcommands of `rt-guest`: wiring options, the kernel (`mlockall`,
//! `/dev/cpu_dma_latency`, ftrace, signals) and the run directory around the engine.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use record::{self, RunDir};
use rt_sys::journal::{Journal, RevertOutcome};
use rt_sys::rt::{self, DmaLatency, Ftrace};
use rt_sys::{kernel, CpuSet, SysRoot};

use crate::cli::{CheckArgs, ProbeArgs, RevertArgs, SelftestArgs, TuneArgs};
use crate::cyclictest::{self, Header, Sysinfo};
use crate::guest::{self, Status};
use crate::probe::{self, Ending, Live};
use crate::selftest::{self, SelftestConfig};
use crate::{evidence, VERSION};

/// Exit code: all good.
pub const EXIT_OK: u8 = 0;
/// Exit code: a bound or check was not met.
pub const EXIT_NOT_MET: u8 = 1;

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
fn report_cpus(root: &SysRoot, measured: &CpuSet) -> Option<CpuSet> {
    let online = rt_sys::cpulist::online(root).ok()?;
    let rest = online.difference(measured);
    (!rest.is_empty()).then_some(rest)
}

/// Every measured CPU must be online; measuring every CPU at a real-time policy leaves
/// no CPU for the reporting thread and the rest of the system (warned, as cyclictest
/// allows it; RT throttling still applies).
fn check_cpus(root: &SysRoot, cfg: &probe::ProbeConfig) -> Result<()> {
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
struct Prepared {
    mlock: bool,
    dma: Option<DmaLatency>,
    warnings: Vec<String>,
}

fn prepare(root: &SysRoot, hold_dma: bool, mlock_all: bool) -> Prepared {
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
    let dma = if hold_dma {
        match DmaLatency::hold(root, 0) {
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

fn status_line(
    live: &Live,
    cfg: &probe::ProbeConfig,
    elapsed_s: f64,
    planned_s: Option<f64>,
) -> String {
    let mut s = String::new();
    for (i, t) in live.threads.iter().enumerate() {
        let n = t.samples.load(Ordering::Relaxed);
        let sum = t.sum_ns.load(Ordering::Relaxed);
        let min = t.min_ns.load(Ordering::Relaxed);
        let avg = sum.checked_div(n).unwrap_or(0) / 1000;
        s.push_str(&format!(
            "T:{i:2} ({:6}) P:{:2} I:{} C:{n:8} Min:{:7} Act:{:7} Avg:{avg:7} Max:{:7} Missed:{}",
            t.tid.load(Ordering::Relaxed),
            cfg.sched.priority,
            cfg.interval_ns / 1000,
            if min == u64::MAX { 0 } else { min / 1000 },
            t.last_ns.load(Ordering::Relaxed) / 1000,
            t.max_ns.load(Ordering::Relaxed) / 1000,
            t.missed.load(Ordering::Relaxed),
        ));
        if i + 1 < live.threads.len() {
            s.push('\n');
        }
    }
    match planned_s {
        Some(p) => s.push_str(&format!("  [{elapsed_s:.0}/{p:.0} s]")),
        None => s.push_str(&format!("  [{elapsed_s:.0} s]")),
    }
    s
}

/// Load profile `p` and check its guest-side CPUs against this machine (the profiles
/// crate's machine checks, as every tool does).
fn load_for_guest(p: &str, root: &SysRoot) -> Result<profiles::Loaded> {
    let loaded = profiles::load(p).with_context(|| format!("Cannot load profile {p:?}"))?;
    loaded.check_guest(root)?;
    Ok(loaded)
}

/// `rt-guest probe`.
pub fn probe(args: &ProbeArgs, argv: Vec<String>) -> Result<u8> {
    let root = SysRoot::live();
    let loaded = match &args.profile {
        Some(p) => Some(load_for_guest(p, &root)?),
        None => None,
    };
    let resolved = crate::cli::resolve(args, loaded.as_ref().map(|l| &l.profile));
    let mut cfg = resolved.config;
    cfg.report_cpus = report_cpus(&root, &cfg.cpus);
    cfg.validate()?;
    check_cpus(&root, &cfg)?;
    let signals = Signals::register()?;

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(record::new_run_name()));
    let mut rd = RunDir::open_or_create(&out_dir)
        .with_context(|| format!("Cannot open run directory {}", out_dir.display()))?;
    rd.begin_tool("rt-guest probe", VERSION, record::GIT_SHA, argv.clone())?;
    if let Some(l) = &loaded {
        rd.set_profile(&l.profile.name, &l.origin.to_string(), &l.text)?;
    }
    let facts = kernel::facts(&root).context("Cannot read the kernel facts")?;
    let check = guest::check(
        &root,
        loaded.as_ref().map(|l| &l.profile),
        Duration::from_millis(200),
    );
    {
        let env = &mut rd.manifest_mut().environment;
        env.kernel = Some(facts.clone());
        env.guest_check = Some(evidence::check_report(&check, Some(facts.clone())));
        if facts.virtualization == kernel::Virtualization::Tcg {
            env.notes
                .push("measured under QEMU TCG: latencies are not real-time".into());
        }
    }
    rd.save()?;

    let mut prep = prepare(&root, resolved.dma_latency, args.mlock_all);
    let ftrace = match cfg.breaktrace_ns {
        Some(_) => match Ftrace::open(&root) {
            Ok(f) => Some(f),
            Err(e) => {
                prep.warnings.push(format!(
                    "breaktrace without ftrace (the run still stops): {e}"
                ));
                None
            }
        },
        None => None,
    };
    for w in &prep.warnings {
        eprintln!("warning: {w}");
    }
    let dma_value = prep.dma.as_mut().and_then(|d| d.current().ok());

    let live = Arc::new(Live::new(&cfg.cpus));
    #[allow(clippy::cast_precision_loss)]
    let planned_s = cfg.duration_ns.map(|d| d as f64 / 1e9);
    let quiet = args.quiet;
    let tty = std::io::stderr().is_terminal();
    let t0 = rt::monotonic_ns();
    let cfg2 = cfg.clone();
    let outcome = probe::run(
        &cfg,
        ftrace,
        signals.stop.clone(),
        live,
        Duration::from_secs(1),
        move |l| {
            if quiet {
                return;
            }
            #[allow(clippy::cast_precision_loss)]
            let el = rt::monotonic_ns().saturating_sub(t0) as f64 / 1e9;
            let line = status_line(l, &cfg2, el, planned_s);
            let mut e = std::io::stderr().lock();
            if tty && cfg2.cpus.len() == 1 {
                let _ = write!(e, "\r{line}");
            } else {
                let _ = writeln!(e, "{line}");
            }
            let _ = e.flush();
        },
    );
    if !quiet && tty {
        eprintln!();
    }
    drop(prep.dma.take());
    // Measuring is over: what is allocated from here on (HDR encoding, JSON) need not be
    // locked nor populated in full.
    if prep.mlock {
        rt::munlockall();
        let _ = rt::drop_exe_text(&root);
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = rd.end_tool(Some(format!("error: {e}")));
            return Err(e.into());
        }
    };
    let partial = match outcome.ending {
        Ending::Stopped => signals.reason().or(Some("stopped".into())),
        _ => None,
    };
    if outcome.ending == Ending::Breaktrace {
        rd.manifest_mut().environment.notes.push(format!(
            "breaktrace: the run stopped at a latency above {} us",
            cfg.breaktrace_ns.unwrap_or(0) / 1000
        ));
    }
    let rec = evidence::probe_record(
        &cfg,
        prep.mlock,
        dma_value.is_some(),
        &outcome,
        partial.is_some(),
    );
    rd.write_json(record::PROBE, &rec)?;

    let exceeded = args
        .max_us
        .is_some_and(|b| outcome.threads.iter().any(|t| t.stats.max_ns > b * 1000));
    let code = if exceeded { EXIT_NOT_MET } else { EXIT_OK };
    if let Some(p) = &args.json {
        let header = Header {
            cmdline: argv.join(" "),
            version: format!("rt-guest {VERSION}"),
            start_wall_ns: outcome.start_wall_ns,
            end_wall_ns: outcome.end_wall_ns,
            return_code: i32::from(code),
            sysinfo: Sysinfo::read(&root),
        };
        let nodes: Vec<u32> = outcome
            .threads
            .iter()
            .map(|t| numa_node(&root, t.cpu))
            .collect();
        write_user_file(
            p,
            cyclictest::json(&header, &outcome.threads, &nodes).as_bytes(),
        )?;
    }
    if let Some(p) = &args.histogram {
        write_user_file(
            p,
            cyclictest::histogram_text(&outcome.threads, dma_value).as_bytes(),
        )?;
    }
    rd.end_tool(partial.clone())?;

    println!(
        "run: {}{}",
        out_dir.display(),
        match &partial {
            Some(r) => format!(" (partial: {r})"),
            None => String::new(),
        }
    );
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>6} {:>6}",
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
        println!(
            "{:>4} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10} {:>7} {:>6} {:>6}",
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
        );
    }
    if exceeded {
        eprintln!(
            "max latency above the bound of {} us",
            args.max_us.unwrap_or(0)
        );
    }
    Ok(code)
}

fn write_user_file(p: &Path, bytes: &[u8]) -> Result<()> {
    let p = if p.parent().is_some_and(|d| d.as_os_str().is_empty()) {
        Path::new(".").join(p)
    } else {
        p.to_path_buf()
    };
    record::write_atomic(&p, bytes).with_context(|| format!("Cannot write {}", p.display()))
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
    let mut prep = prepare(&root, true, false);
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
        rd.begin_tool("rt-guest selftest", VERSION, record::GIT_SHA, argv)?;
        rd.manifest_mut().environment.selftest = Some(evidence::selftest_summary(&result));
        rd.end_tool(None)?;
    }
    if args.json {
        // The full result (baseline, tolerance); the run record keeps its summary.
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "selftest on cpu {}: {} ({} delays of {} us every {} periods injected, {} detected; max {:.1} us)",
            result.cpu,
            if result.passed { "PASSED" } else { "FAILED" },
            result.injected,
            result.delay_us,
            result.every,
            result.detected,
            result.max_us
        );
        for c in &result.checks {
            println!(
                "  [{}] {}: {}",
                if c.passed { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
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
        println!("{}", serde_json::to_string_pretty(&typed)?);
    } else {
        for i in &report.items {
            let want = i
                .desired
                .as_ref()
                .map(|d| format!(" (want {d})"))
                .unwrap_or_default();
            println!(
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
        println!("{}", serde_json::to_string_pretty(&applied)?);
    } else if applied.is_empty() {
        println!("nothing to change");
    } else {
        for a in &applied {
            println!(
                "{:<40} {} -> {}: {}",
                a.change.item, a.change.current, a.change.desired, a.outcome
            );
        }
        println!("journal: {}", Journal::file_in(&args.journal_dir).display());
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
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.is_empty() {
        println!("nothing to revert");
    } else {
        for r in &out {
            let what = match &r.outcome {
                RevertOutcome::Restored => "restored".to_string(),
                RevertOutcome::Vanished => "gone (nothing to restore)".to_string(),
                RevertOutcome::Failed(e) => format!("FAILED: {e}"),
            };
            println!(
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
