//! `rt-guest oslat`: options, the kernel (memory locking, ftrace, signals) and the run
//! directory around the busy-loop engine ([`crate::oslat`]), in oslat's formats
//! ([`crate::oslatfmt`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use record::RunDir;
use rt_sys::rt::{self, Ftrace};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::{CpuSet, SysRoot};

use crate::cli::OslatArgs;
use crate::commands::{
    load_profile, online_cpus, open_run, prepare, print_checks, print_flush, report_cpus, Signals,
    EXIT_NOT_MET, EXIT_OK,
};
use crate::cyclictest::{Sysinfo, RT_TESTS_VERSION};
use crate::oslat::{self, OslatCheckpoint, OslatConfig, OslatOutcome};
use crate::output::{self, Reserve};
use crate::probe::Live;
use crate::stalls::{self, StallConfig};
use crate::{oslatfmt, VERSION};

/// The engine configuration from the options and the profile.
pub fn config(args: &OslatArgs, profile: Option<&profiles::Profile>) -> OslatConfig {
    let p = profile
        .and_then(|p| p.guest.as_ref())
        .map(|g| g.probe.clone())
        .unwrap_or_default();
    let duration = args.duration.unwrap_or(Duration::from_secs(60));
    OslatConfig {
        cpus: args.cpus.clone().unwrap_or(p.cpus),
        sched: match args.rtprio {
            Some(prio) => SchedParams {
                policy: Policy::Fifo,
                priority: prio,
            },
            None => SchedParams {
                policy: Policy::Other,
                priority: 0,
            },
        },
        duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        buckets: args.buckets,
        trace_threshold_ns: args.trace_threshold.map(|us| us * 1000),
        report_cpus: args.main_cpus.clone(),
        checkpoint_ns: args
            .checkpoint
            .map(|c| u64::try_from(c.as_nanos()).unwrap_or(u64::MAX)),
    }
}

fn status(live: &Live, elapsed_s: f64, planned_s: f64) -> String {
    let mut s = String::new();
    for t in &live.threads {
        let n = t.samples.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let max_us = t.max_ns.load(Ordering::Relaxed) as f64 / 1000.0;
        s.push_str(&format!(
            "cpu {}: {n:>12} gaps, max {max_us:>10.3} us, {} overflows  ",
            t.cpu.load(Ordering::Relaxed),
            t.missed.load(Ordering::Relaxed)
        ));
    }
    s.push_str(&format!("[{elapsed_s:.0}/{planned_s:.0} s]"));
    s
}

/// `rt-guest oslat`.
pub fn oslat(args: &OslatArgs, argv: Vec<String>) -> Result<u8> {
    let root = SysRoot::live();
    let loaded = load_profile(args.profile.as_deref(), &root)?;
    let mut cfg = config(args, loaded.as_ref().map(|l| &l.profile));
    let online = online_cpus(&root);
    if cfg.report_cpus.is_none() {
        cfg.report_cpus = report_cpus(&root, &cfg.cpus);
    }
    cfg.validate(&online)?;
    let absent = cfg.cpus.difference(&online);
    if !absent.is_empty() {
        anyhow::bail!(
            "Invalid oslat setting cpu-list: CPU {absent} is not online here (online: {online})"
        );
    }
    if args.selftest {
        return selftest(args, cfg, argv);
    }
    output::check(args.json.as_deref(), "JSON file")?;
    let signals = Signals::register()?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(record::new_run_name()));
    let mut rd = open_run(&root, &out_dir, "rt-guest oslat", &argv, loaded.as_ref())?;
    let (mut reserve, warning) = Reserve::hold(rd.path(), output::RESERVE_BYTES);
    let mut prep = prepare(&root, None, args.mlock_all);
    prep.warnings.extend(warning);
    let ftrace = cfg
        .trace_threshold_ns
        .and_then(|_| match Ftrace::open(&root) {
            Ok(f) => Some(f),
            Err(e) => {
                prep.warnings.push(format!(
                    "trace threshold without ftrace (the run still stops): {e}"
                ));
                None
            }
        });
    for w in &prep.warnings {
        eprintln!("warning: {w}");
    }
    let main_cpus = cfg
        .report_cpus
        .as_ref()
        .map_or_else(|| "any".to_string(), CpuSet::to_string);
    let mut head = format!("rt-guest oslat V {VERSION} (oslat {RT_TESTS_VERSION} formats)\n");
    if !args.quiet {
        head.push_str(&oslatfmt::header(&cfg, &main_cpus));
    }
    print_flush(&head);
    let checkpointer = Checkpointer {
        rd: &mut rd,
        cfg: &cfg,
        mlock: prep.mlock,
        quiet: args.quiet,
    };
    let outcome = run_loops(&cfg, ftrace, &signals, args.quiet, checkpointer);
    if prep.mlock {
        rt::munlockall();
        let _ = rt::drop_exe_text(&root);
    }
    reserve.release();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = rd.end_tool(Some(format!("error: {e}")));
            return Err(e.into());
        }
    };
    let partial = outcome
        .stopped
        .then(|| signals.reason().unwrap_or_else(|| "stopped".to_string()));
    let exceeded = args
        .max_us
        .is_some_and(|b| outcome.threads.iter().any(|t| t.gaps.max_ns > b * 1000));
    let code = match signals.exit_code() {
        Some(c) if partial.is_some() => c,
        _ if exceeded => EXIT_NOT_MET,
        _ => EXIT_OK,
    };
    write(
        &root, &mut rd, args, &cfg, &outcome, prep.mlock, partial, &argv, code,
    )?;
    if exceeded {
        eprintln!("max gap above the bound of {} us", args.max_us.unwrap_or(0));
    }
    Ok(code)
}

/// What a checkpoint needs: the run directory and the record's settings.
struct Checkpointer<'a> {
    rd: &'a mut RunDir,
    cfg: &'a OslatConfig,
    mlock: bool,
    quiet: bool,
}

impl Checkpointer<'_> {
    /// Write `oslat.json` as it stands (atomically, hashed in the manifest, marked partial)
    /// and say so; a failed write keeps the previous checkpoint.
    fn write(&mut self, cp: &OslatCheckpoint<'_>) {
        let rec = oslatfmt::record(self.cfg, self.mlock, cp.outcome, true);
        let at = crate::evidence::rfc3339(rt::realtime_ns());
        if let Some(t) = self.rd.manifest_mut().tools.last_mut() {
            t.partial_reason = Some(format!(
                "checkpoint {} at {at}: the run went on (still measuring, or killed)",
                cp.number
            ));
        }
        let worst = cp.outcome.threads.iter().map(|t| t.gaps.max_ns).max();
        let win = cp
            .outcome
            .threads
            .iter()
            .zip(cp.interval_max_ns)
            .max_by_key(|(_, m)| **m)
            .map_or((0, 0), |(t, m)| (*m, t.cpu));
        #[allow(clippy::cast_precision_loss)] // ns of a run fit a double well
        let line = match self.rd.write_json(record::OSLAT, &rec) {
            Ok(()) => format!(
                "checkpoint {} ({:.0} s): max gap {:.1} us this interval (CPU {}), {:.1} us so far",
                cp.number,
                cp.outcome.elapsed_ns as f64 / 1e9,
                win.0 as f64 / 1e3,
                win.1,
                worst.unwrap_or(0) as f64 / 1e3
            ),
            Err(e) => format!(
                "warning: checkpoint {} not written ({e:#}): the previous one stays",
                cp.number
            ),
        };
        if !self.quiet || line.starts_with("warning") {
            eprintln!("{line}");
        }
    }
}

fn run_loops(
    cfg: &OslatConfig,
    ftrace: Option<Ftrace>,
    signals: &Signals,
    quiet: bool,
    mut checkpointer: Checkpointer<'_>,
) -> Result<OslatOutcome, crate::probe::ProbeError> {
    let live = Arc::new(Live::new(&cfg.cpus));
    let t0 = rt::monotonic_ns();
    #[allow(clippy::cast_precision_loss)]
    let planned = cfg.duration_ns as f64 / 1e9;
    let out = oslat::run(
        cfg,
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
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{}", status(l, el, planned));
        },
        |cp| checkpointer.write(cp),
    );
    if !quiet {
        print_flush("Test completed.\n\n");
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn write(
    root: &SysRoot,
    rd: &mut RunDir,
    args: &OslatArgs,
    cfg: &OslatConfig,
    outcome: &OslatOutcome,
    mlock: bool,
    partial: Option<String>,
    argv: &[String],
    code: u8,
) -> Result<()> {
    let rec = oslatfmt::record(cfg, mlock, outcome, partial.is_some());
    if let Some((cpu, ns)) = outcome.threshold {
        rd.manifest_mut().environment.notes.push(format!(
            "oslat trace threshold: the run stopped at a gap of {} us on CPU {cpu}",
            ns / 1000
        ));
    }
    rd.write_json(record::OSLAT, &rec)?;
    if let Some(p) = &args.json {
        let info = oslatfmt::RunInfo {
            cmdline: argv.join(" "),
            return_code: i32::from(code),
            partial: partial.is_some(),
            sysinfo: Sysinfo::read(root),
        };
        output::write(p, oslatfmt::json(&info, outcome).as_bytes())?;
    }
    rd.end_tool(partial.clone())?;
    let mut text = oslatfmt::text(outcome, args.zero_omit);
    if let Some(r) = &partial {
        text.push_str(&format!(
            "Partial: {r}: the histograms hold what was measured until then\n"
        ));
    }
    print_flush(&text);
    eprintln!(
        "run: {}{}",
        rd.path().display(),
        partial
            .map(|r| format!(" (partial: {r})"))
            .unwrap_or_default()
    );
    Ok(())
}

fn selftest(args: &OslatArgs, mut cfg: OslatConfig, argv: Vec<String>) -> Result<u8> {
    let root = SysRoot::live();
    let signals = Signals::register()?;
    if args.duration.is_none() {
        cfg.duration_ns = 3_000_000_000;
    }
    if args.rtprio.is_none() {
        // Above every SCHED_OTHER task: the baseline is the machine, not its compilers.
        cfg.sched = SchedParams {
            policy: Policy::Fifo,
            priority: 90,
        };
    }
    // The self-test's runs are judged, not kept: no checkpoints.
    cfg.checkpoint_ns = None;
    let stall = StallConfig {
        loop_cfg: cfg,
        delay_ns: args.delay_us * 1000,
        every_ns: args.every_ms * 1_000_000,
    };
    let prep = prepare(&root, None, false);
    for w in &prep.warnings {
        eprintln!("warning: {w}");
    }
    let result = stalls::run(&stall, signals.stop.clone())?;
    if let Some(reason) = signals.reason() {
        anyhow::bail!("oslat self-test {reason}: no result");
    }
    let value = serde_json::to_value(&result)?;
    if let Some(dir) = &args.out {
        let mut rd = RunDir::open_or_create(dir)
            .with_context(|| format!("Cannot open run directory {}", dir.display()))?;
        rtvirt_cli::begin_run(&mut rd, "rt-guest oslat --selftest", argv, None)?;
        rd.manifest_mut().environment.notes.push(format!(
            "oslat self-test: {}",
            serde_json::to_string(&value)?
        ));
        rd.end_tool(None)?;
    }
    if let Some(p) = &args.json {
        output::write(
            p,
            format!("{}\n", serde_json::to_string_pretty(&value)?).as_bytes(),
        )?;
    }
    rtvirt_cli::outln!(
        "oslat selftest on cpu {}: {} ({} stalls of {} us injected, {} late, {} disturbed, {} detected; median {:.1} us, max {:.1} us)",
        result.cpu,
        if result.passed { "PASSED" } else { "FAILED" },
        result.injected,
        result.delay_us,
        result.injected_late,
        result.injected_disturbed,
        result.detected,
        result.detected_median_us,
        result.max_us
    );
    print_checks(&result.checks);
    Ok(if result.passed { EXIT_OK } else { EXIT_NOT_MET })
}
