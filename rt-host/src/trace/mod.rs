//! `rt-host trace`: record what the host's scheduler does with a VM's vCPU threads while
//! the guest measures, into `host-trace.json` (`record::HostTraceRecord`).
//!
//! The VM is found as every other command finds it ([`crate::vm::find`]); its vCPU
//! threads' switches, wakeups and migrations are recorded through
//! [`rt_sys::tracefs::sched::Recorder`] (a tracing instance of its own, removed at the
//! end, also on SIGINT/SIGTERM), and, on the CPUs the vCPUs are pinned to, every switch
//! whoever ran. Times become the host's `CLOCK_REALTIME` through clock markers; the guest's
//! `CLOCK_REALTIME` is tied to it by an exchange through a shared directory with
//! `rt-guest clock-echo` (`--clock-dir`), or declared synchronised (`--guest-synced`), so
//! that validation can put a guest spike next to what the host ran at that moment.
//! Its own threads run on housekeeping CPUs ([`reader`]); what it keeps is bounded but
//! chosen over the whole run ([`keep`]). See `docs/host-trace.md`.

pub mod keep;
pub mod reader;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use record::clocksync;
use record::hosttrace::{ClockMap, ReaderPlacement, VcpuThread};
use record::{HostTraceRecord, TimeBase};
use rt_sys::tracefs::sched::{Recorder, SchedConfig};
use rt_sys::{threads, CpuSet, SysError, SysRoot};

use keep::{Collector, KeepConfig};

use crate::vm::{self, VmThreads};

/// Errors of a recording; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A kernel interface failed while doing `doing`.
    #[error("{doing}")]
    Sys {
        /// What we were doing.
        doing: String,
        /// The cause, with the path.
        #[source]
        source: SysError,
    },
    /// The clock exchange with the guest failed.
    #[error("Measuring the guest's clock offset through {dir}")]
    Clock {
        /// The shared directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: record::RecordError,
    },
    /// Every online CPU is recorded whole: none is left for the trace's own threads.
    #[error("No CPU is left for rt-host trace's own threads: CPUs {online} are online and every switch is recorded on {recorded} (give --cpus only the CPUs under test)")]
    NoHousekeeping {
        /// The online CPUs.
        online: String,
        /// The CPUs recorded whole.
        recorded: String,
    },
    /// A bad option.
    #[error("Invalid option {option}: {detail}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn sys(doing: impl Into<String>) -> impl FnOnce(SysError) -> TraceError {
    let doing = doing.into();
    move |source| TraceError::Sys { doing, source }
}

/// Which CPUs get every switch recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuScope {
    /// The CPUs the vCPU threads may run on, when that is not every online CPU (pinned
    /// vCPUs: cheap, and the whole picture); else only the vCPU threads' switches.
    Auto,
    /// Only the vCPU threads' switches (the task that took over and the one that handed
    /// back are known; tasks in between are not).
    Threads,
    /// These CPUs.
    List(CpuSet),
}

impl std::str::FromStr for CpuScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CpuScope::Auto),
            "threads" => Ok(CpuScope::Threads),
            l => CpuSet::parse(l)
                .map(CpuScope::List)
                .map_err(|e| format!("{e} (give auto, threads or a CPU list)")),
        }
    }
}

/// How to record.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Recording time.
    pub duration: Duration,
    /// CPUs with every switch.
    pub cpus: CpuScope,
    /// Per-CPU buffer, KiB.
    pub buffer_kb: u64,
    /// Events kept in the record at most (those around the longest vCPU waits).
    pub max_events: u64,
    /// Shared directory for the clock exchange with `rt-guest clock-echo`.
    pub clock_dir: Option<PathBuf>,
    /// Guest and host clocks synchronised within this (ns) by other means.
    pub guest_synced_ns: Option<u64>,
}

/// The vCPU threads of `vm` with their affinities.
pub fn vcpu_threads(root: &SysRoot, vm: &VmThreads) -> Result<Vec<VcpuThread>, TraceError> {
    let ops = threads::for_root(root);
    vm.vcpus
        .iter()
        .map(|(i, t)| {
            let cpus = ops.get_affinity(root, t.pid, t.tid).map_err(sys(format!(
                "Reading the affinity of vCPU {i} (tid {})",
                t.tid
            )))?;
            Ok(VcpuThread {
                vcpu: *i,
                tid: t.tid,
                name: t.name.clone(),
                cpus_allowed: cpus.to_string(),
            })
        })
        .collect()
}

/// The CPUs on which every switch is recorded (see [`CpuScope`]).
pub fn choose_cpus(scope: &CpuScope, vcpus: &[VcpuThread], online: &CpuSet) -> Option<CpuSet> {
    match scope {
        CpuScope::Threads => None,
        CpuScope::List(l) => Some(l.clone()),
        CpuScope::Auto => {
            let all = vcpu_cpus(vcpus);
            (!all.is_empty() && !online.is_subset(&all)).then_some(all)
        }
    }
}

/// The CPUs vCPU thread `v` may run on, as recorded (empty when unreadable).
fn allowed(v: &VcpuThread) -> CpuSet {
    CpuSet::parse(&v.cpus_allowed).unwrap_or_default()
}

/// The CPUs any of the vCPU threads may run on.
fn vcpu_cpus(vcpus: &[VcpuThread]) -> CpuSet {
    vcpus
        .iter()
        .fold(CpuSet::new(), |all, v| all.union(&allowed(v)))
}

/// The guest's clock against the host's: measured through `dir`, declared synchronised,
/// or unknown.
fn guest_clock_at(
    opts: &TraceOptions,
    first_timeout: Duration,
) -> Result<Option<TimeBase>, TraceError> {
    if let Some(dir) = &opts.clock_dir {
        let clock = rt_sys::rt::realtime_ns;
        let rounds = clocksync::exchange(dir, 16, first_timeout, &clock).map_err(|source| {
            TraceError::Clock {
                dir: dir.clone(),
                source,
            }
        })?;
        return Ok(clocksync::estimate(&rounds));
    }
    Ok(Some(match opts.guest_synced_ns {
        Some(u) => TimeBase {
            method: "synced".into(),
            offset_ns: 0,
            uncertainty_ns: u,
            rtt: None,
        },
        None => TimeBase {
            method: "unknown".into(),
            offset_ns: 0,
            uncertainty_ns: u64::MAX,
            rtt: None,
        },
    }))
}

/// The map of the recorder's clock markers; with none (markers lost), `CLOCK_REALTIME`
/// against `CLOCK_MONOTONIC` read now, when the trace clock is `mono`.
fn clock_map(rec: &Recorder) -> Option<ClockMap> {
    let pts: Vec<(u64, u64, u64)> = rec
        .clock_points
        .iter()
        .map(|p| (p.trace_ns, p.realtime_before_ns, p.realtime_after_ns))
        .collect();
    if let Some(m) = ClockMap::from_points(rec.trace_clock(), &pts) {
        return Some(m);
    }
    (rec.trace_clock() == "mono").then(|| {
        let a = rt_sys::rt::realtime_ns();
        let m = rt_sys::rt::monotonic_ns();
        let b = rt_sys::rt::realtime_ns();
        let mut map = ClockMap::from_points("mono", &[(m, a, b)]).expect("one point");
        map.method = "clock_gettime (CLOCK_MONOTONIC against CLOCK_REALTIME)".into();
        map
    })
}

/// Record the vCPU threads of `vm` for `opts.duration` (until `stop` is set). The calling
/// thread is pinned to the housekeeping CPUs first ([`reader::reader_cpus`]) and left
/// there (the record is written from there too).
pub fn record(
    root: &SysRoot,
    vm: &VmThreads,
    opts: &TraceOptions,
    stop: &AtomicBool,
) -> Result<HostTraceRecord, TraceError> {
    let vcpus = vcpu_threads(root, vm)?;
    let online = rt_sys::cpulist::online(root).map_err(sys("Reading the online CPUs"))?;
    let cpus = choose_cpus(&opts.cpus, &vcpus, &online);
    let place_self = reader::reader_cpus(&online, cpus.as_ref(), &vcpus)?;
    let own = reader::pin_self(&place_self.cpus)?;
    let cfg = SchedConfig {
        tids: vcpus.iter().map(|v| v.tid).collect(),
        cpus: cpus.clone(),
        buffer_kb: opts.buffer_kb,
    };
    let guest_start = guest_clock_at(opts, Duration::from_secs(60))?;
    let keep = KeepConfig::for_run(
        opts.duration,
        opts.max_events,
        guest_start.as_ref().map_or(0, |g| g.uncertainty_ns),
    );
    let mut rec = Recorder::start(root, &cfg).map_err(sys("Setting up the scheduler trace"))?;
    let place = rec.place();
    let mut col = Collector::new(&vcpus, keep, &[own], cpus.clone());
    let start_ns = rt_sys::rt::realtime_ns();
    rec.mark_clock().map_err(sys("Writing a clock marker"))?;
    let end = Instant::now() + opts.duration;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
        rec.drain(&mut |l| col.add(l))
            .map_err(sys("Reading the scheduler trace"))?;
    }
    rec.mark_clock().map_err(sys("Writing a clock marker"))?;
    rec.pause().map_err(sys("Stopping the scheduler trace"))?;
    let end_ns = rt_sys::rt::realtime_ns();
    rec.drain(&mut |l| col.add(l))
        .map_err(sys("Reading the scheduler trace"))?;
    let stats = rec.cpu_stats(&online);
    let lost = stats.iter().fold(rec.lost, |n, (_, s)| {
        n.saturating_add(s.overrun).saturating_add(s.dropped)
    });
    let map = clock_map(&rec);
    rec.close()
        .map_err(sys("Putting the trace settings back"))?;
    let map = map.ok_or_else(|| TraceError::Option {
        option: "trace clock",
        detail: "no clock marker came back and the trace clock is not mono: times cannot be tied to CLOCK_REALTIME".into(),
    })?;
    let guest_clock = finish_guest_clock(opts, guest_start)?;
    let got = col.finish(&map);
    Ok(HostTraceRecord {
        vm_pid: vm.pid,
        vm_found_by: vm.found_by.clone(),
        vcpus,
        cpus: cpus.map(|c| c.to_string()),
        place,
        buffer_kb: opts.buffer_kb,
        clock: map,
        guest_clock,
        start_ns,
        end_ns,
        tasks: got.tasks,
        events: got.events,
        events_seen: got.seen,
        max_events: opts.max_events,
        lost_events: lost,
        summary: got.summary,
        partial: stop.load(Ordering::Relaxed),
        keep: Some(got.keep),
        slices: got.slices,
        windows: got.windows,
        reader: Some(ReaderPlacement {
            cpus: place_self.cpus.to_string(),
            measured_cpus: place_self.measured.to_string(),
            tids: vec![own],
            note: place_self.note,
            switches_on_recorded_cpus: got.own_on_recorded,
        }),
    })
}

/// The guest clock over the whole recording: a second exchange at the end, combined with
/// the first (a drift between them stays inside the uncertainty); the guest's side is
/// then told to stop.
fn finish_guest_clock(
    opts: &TraceOptions,
    start: Option<TimeBase>,
) -> Result<TimeBase, TraceError> {
    let Some(start) = start else {
        return Err(TraceError::Option {
            option: "--clock-dir",
            detail: "the clock exchange gave no round".into(),
        });
    };
    let Some(dir) = &opts.clock_dir else {
        return Ok(start);
    };
    let end = guest_clock_at(opts, Duration::from_secs(5))?;
    let _ = std::fs::write(dir.join(clocksync::STOP), "");
    Ok(match end {
        Some(e) => clocksync::combine(&start, &e),
        None => start,
    })
}

/// The recording in words.
pub fn text(r: &HostTraceRecord) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    #[allow(clippy::cast_precision_loss)] // ns spans far below 2^52
    let secs = r.end_ns.saturating_sub(r.start_ns) as f64 / 1e9;
    let _ = writeln!(
        o,
        "rt-host trace: VM pid {} ({}), {} vCPU thread(s), {secs:.1} s{}",
        r.vm_pid,
        r.vm_found_by,
        r.vcpus.len(),
        if r.partial { " (interrupted)" } else { "" }
    );
    let _ = writeln!(
        o,
        "  {} events, {} kept (at most {}), {} dropped, {} lost by the kernel; recorded in {}, {}",
        r.events_seen,
        r.events.len(),
        r.max_events,
        r.events_dropped(),
        r.lost_events,
        r.place,
        match &r.cpus {
            Some(c) => format!("every switch on CPUs {c}"),
            None => "the vCPU threads' switches only".into(),
        }
    );
    if let Some(k) = &r.keep {
        let _ = writeln!(o, "  {}", keep_text(r, k));
    }
    if let Some(p) = &r.reader {
        let _ = writeln!(o, "  {}", reader_text(p));
    }
    let _ = writeln!(
        o,
        "  trace clock {} -> CLOCK_REALTIME by {} (+-{} ns); guest clock: {}",
        r.clock.trace_clock,
        r.clock.method,
        r.clock.uncertainty_ns,
        guest_clock_text(&r.guest_clock)
    );
    for s in &r.summary {
        let v = r.vcpus.iter().find(|v| v.tid == s.tid);
        let _ = writeln!(
            o,
            "  vCPU {} (tid {}, {}, CPUs {}): {} switches out, {} preempted ({} us in all, longest {} us by {}), wakeup to run at most {} us, {} migrations",
            s.vcpu,
            s.tid,
            v.map_or("?", |v| v.name.as_str()),
            v.map_or("?", |v| v.cpus_allowed.as_str()),
            s.switches_out,
            s.preemptions,
            s.preempted_ns / 1000,
            s.preempted_max_ns / 1000,
            if s.preempted_max_ns > 0 { r.comm(s.preempted_max_by) } else { "-".into() },
            s.wakeup_latency_max_ns / 1000,
            s.migrations
        );
    }
    o
}

/// What was kept, in words.
fn keep_text(r: &HostTraceRecord, k: &record::hosttrace::KeepRule) -> String {
    format!(
        "kept: the events of {} of {} slices of {} ms, those within {} ms of the longest vCPU waits ({} events dropped with their slices, {} over the cap of {} a slice); {} summary windows of {} s over every event",
        r.slices.len(),
        k.slices_seen,
        k.slice_ns / 1_000_000,
        k.pad_ns / 1_000_000,
        k.dropped_slices_events,
        k.dropped_over_cap,
        k.slice_cap,
        r.windows.len(),
        k.window_ns / 1_000_000_000
    )
}

/// Where the trace ran, in words.
pub fn reader_text(p: &ReaderPlacement) -> String {
    let mut t = format!(
        "its own threads (tid {}) ran on CPUs {}, off the measured CPUs {}; {} switches of theirs on the CPUs recorded whole",
        p.tids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        p.cpus,
        p.measured_cpus,
        p.switches_on_recorded_cpus
    );
    if !p.note.is_empty() {
        t.push_str(&format!("\n  NOTE: {}", p.note));
    }
    t
}

/// The guest clock in words.
pub fn guest_clock_text(t: &TimeBase) -> String {
    match t.method.as_str() {
        "unknown" => "unknown (no --clock-dir or --guest-synced: guest spikes cannot be placed on the host's time line)".into(),
        m => format!(
            "{m}, guest - host = {} us +- {} us",
            t.offset_ns / 1000,
            t.uncertainty_ns.div_ceil(1000)
        ),
    }
}

/// `rt-host trace` options.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Profile file or bundled name (finds the VM: host.vm or host.vms).
    pub profile: String,
    /// The VM's QEMU pid (overrides the profile's host.vm).
    #[arg(long, value_name = "PID")]
    pub vm_pid: Option<u32>,
    /// Recording time (`60s`, `12h`); SIGINT/SIGTERM end it early (the record is then
    /// marked partial).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Run directory to write host-trace.json into (created if missing; give the host its
    /// own run directory, beside the guest's, and both to `validation report`).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: PathBuf,
    /// Events kept in the record at most: those of the 10 ms slices around the longest
    /// vCPU waits over the whole run (the summaries count every event).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub max_events: u64,
    /// CPUs on which every switch is recorded: `auto` (the vCPUs' CPUs when they are
    /// pinned), `threads` (only the vCPU threads' switches) or a CPU list.
    #[arg(long, default_value = "auto", value_name = "auto|threads|LIST")]
    pub cpus: CpuScope,
    /// Trace buffer per CPU, KiB.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    pub buffer_kb: u64,
    /// Shared directory (the lab's 9p share, an NFS mount) to measure the guest's clock
    /// offset through, with `rt-guest clock-echo DIR` running in the guest.
    #[arg(long, value_name = "DIR", conflicts_with = "guest_synced")]
    pub clock_dir: Option<PathBuf>,
    /// The guest's and the host's CLOCK_REALTIME are synchronised (ptp_kvm + chrony, PTP)
    /// within this (`20us`).
    #[arg(long, value_name = "UNCERTAINTY", value_parser = humantime::parse_duration)]
    pub guest_synced: Option<Duration>,
    /// Print JSON (the record) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Root of the /sys and /proc tree (a fake tree for tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Find the one VM of the profile (or `--vm-pid`).
fn find_vm(root: &SysRoot, l: &profiles::Loaded, vm_pid: Option<u32>) -> Result<VmThreads> {
    let host = l.profile.host.clone().with_context(|| {
        format!(
            "Profile {:?} has no host section: no VM to find",
            l.profile.name
        )
    })?;
    let hosts = crate::placement::per_vm_hosts(&host);
    let vm = match (hosts.as_slice(), vm_pid) {
        (_, Some(_)) | ([], None) => hosts.first().and_then(|h| h.vm.clone()).unwrap_or_default(),
        ([h], None) => h.vm.clone().unwrap_or_default(),
        (many, None) => anyhow::bail!(
            "Profile {:?} has {} VMs: give --vm-pid for the one to trace",
            l.profile.name,
            many.len()
        ),
    };
    let found = vm::find(root, &vm, vm_pid)
        .with_context(|| format!("Finding the VM ({})", vm::describe(&vm)))?
        .with_context(|| format!("The VM ({}) is not running", vm::describe(&vm)))?;
    anyhow::ensure!(
        !found.vcpus.is_empty(),
        "QEMU pid {} has no vCPU threads named `CPU n/KVM` (start it with -name ...,debug-threads=on, or give the profile a QMP socket)",
        found.pid
    );
    Ok(found)
}

/// `rt-host trace`: exit 0 with the record written, 2 on an error.
pub fn command(a: &TraceArgs) -> Result<u8> {
    let root = SysRoot::new(&a.root);
    let loaded =
        profiles::load(&a.profile).with_context(|| format!("Loading profile {:?}", a.profile))?;
    let vm = find_vm(&root, &loaded, a.vm_pid)?;
    let opts = TraceOptions {
        duration: a.duration,
        cpus: a.cpus.clone(),
        buffer_kb: a.buffer_kb,
        max_events: a.max_events,
        clock_dir: a.clock_dir.clone(),
        guest_synced_ns: a
            .guest_synced
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    };
    let stop = rtvirt_cli::stop_on_signals()?;
    let mut rd = record::RunDir::open_or_create(&a.out)?;
    rtvirt_cli::begin_run(
        &mut rd,
        "rt-host trace",
        std::env::args().collect(),
        Some(&loaded),
    )?;
    let rec = record(&root, &vm, &opts, &stop).context("Recording the vCPU threads' scheduling")?;
    rd.write_json(record::HOST_TRACE, &rec)?;
    rd.end_tool(rec.partial.then(|| "interrupted".to_string()))?;
    if a.json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&rec)?);
    } else {
        rtvirt_cli::out!("{}", text(&rec));
        rtvirt_cli::outln!("  wrote {}", a.out.join(record::HOST_TRACE).display());
    }
    Ok(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use record::HostEvent;

    /// A vCPU thread `CPU n/KVM` allowed on `cpus`.
    pub(crate) fn v(vcpu: u32, tid: u32, cpus: &str) -> VcpuThread {
        VcpuThread {
            vcpu,
            tid,
            name: format!("CPU {vcpu}/KVM"),
            cpus_allowed: cpus.into(),
        }
    }

    #[test]
    fn auto_records_every_switch_only_on_pinned_cpus() {
        let online = CpuSet::parse("0-3").unwrap();
        let pinned = [v(0, 10, "2"), v(1, 11, "3")];
        assert_eq!(
            choose_cpus(&CpuScope::Auto, &pinned, &online),
            Some(CpuSet::parse("2-3").unwrap())
        );
        let free = [v(0, 10, "0-3"), v(1, 11, "0-3")];
        assert_eq!(choose_cpus(&CpuScope::Auto, &free, &online), None);
        assert_eq!(choose_cpus(&CpuScope::Threads, &pinned, &online), None);
        assert_eq!(
            "1,3".parse::<CpuScope>().unwrap(),
            CpuScope::List(CpuSet::parse("1,3").unwrap())
        );
        assert!("x"
            .parse::<CpuScope>()
            .unwrap_err()
            .contains("auto, threads"));
    }

    #[test]
    fn the_guest_clock_without_a_method_is_unknown_and_says_so() {
        let opts = TraceOptions {
            duration: Duration::from_secs(1),
            cpus: CpuScope::Auto,
            buffer_kb: 4096,
            max_events: 10,
            clock_dir: None,
            guest_synced_ns: None,
        };
        let t = guest_clock_at(&opts, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!((t.method.as_str(), t.uncertainty_ns), ("unknown", u64::MAX));
        assert!(guest_clock_text(&t).contains("cannot be placed"));
        let synced = TraceOptions {
            guest_synced_ns: Some(20_000),
            ..opts
        };
        let t = guest_clock_at(&synced, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(guest_clock_text(&t), "synced, guest - host = 0 us +- 20 us");
    }

    /// The fake machine with a fake tracefs (no instances: the recorder works at its top
    /// level), `CPU 1/TCG` pinned to CPU 1 and `CPU 0/TCG` on CPU 0.
    fn fake_with_tracefs(dir: &std::path::Path) -> crate::fake::FakeMachine {
        let m = crate::fake::FakeMachine::new(dir);
        let q = crate::fake::QEMU_PID;
        m.thread(q, q + 2, "CPU 0/TCG", 1, 0x40_0040, 0, 0, "0");
        m.thread(q, q + 3, "CPU 1/TCG", 1, 0x40_0040, 0, 0, "1");
        let t = "sys/kernel/tracing";
        for e in rt_sys::tracefs::sched::EVENTS {
            m.put(&format!("{t}/events/sched/{e}/enable"), "0\n");
            m.put(&format!("{t}/events/sched/{e}/filter"), "none\n");
        }
        for (f, v) in [
            ("available_tracers", "function nop\n"),
            ("current_tracer", "nop\n"),
            ("tracing_on", "1\n"),
            ("trace_clock", "[local] global mono\n"),
            ("buffer_size_kb", "1408\n"),
            ("trace_marker", ""),
            ("trace_pipe", ""),
        ] {
            m.put(&format!("{t}/{f}"), v);
        }
        m
    }

    #[test]
    fn the_running_reader_is_pinned_off_the_measured_cpu_and_counts_itself_there() {
        let d = tempfile::tempdir().unwrap();
        let m = fake_with_tracefs(d.path());
        let vm = vm::find(
            &m.root,
            &profiles::Vm::default(),
            Some(crate::fake::QEMU_PID),
        )
        .unwrap()
        .expect("the fake QEMU");
        let opts = TraceOptions {
            duration: Duration::from_secs(60),
            cpus: CpuScope::List(CpuSet::from_cpus([1])),
            buffer_kb: 1024,
            max_events: 1000,
            clock_dir: None,
            guest_synced_ns: Some(20_000),
        };
        let stop = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let (during, r) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let me = rt_sys::sched::gettid();
                rt_sys::sched::set_affinity(me, &CpuSet::from_cpus([0, 1])).unwrap();
                tx.send(me).unwrap();
                record(&m.root, &vm, &opts, &stop)
            });
            let tid = rx.recv().unwrap();
            // Until the recorder set tracing up and wrote its first clock marker (what the
            // pipe held before is dropped), then what the reader's affinity is.
            let marker = m.root.path("sys/kernel/tracing/trace_marker");
            let t0 = Instant::now();
            while std::fs::read_to_string(&marker).unwrap().trim() != "rtvirt-sync 1" {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the recording did not start"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let during = rt_sys::sched::get_affinity(tid).unwrap();
            // It ran on the measured CPU once (as the kernel would trace it), and the
            // vCPU thread switched on its own: both are seen; only the first is its own.
            let pipe = m.root.path("sys/kernel/tracing/trace_pipe");
            let mut f = std::fs::OpenOptions::new().append(true).open(pipe).unwrap();
            std::io::Write::write_all(&mut f, format!(
                "  t-{tid} [001] d..2. 100.000100: sched_switch: prev_comm=rt-host prev_pid={tid} prev_prio=120 prev_state=S ==> next_comm=CPU 1/TCG next_pid=4003 next_prio=120\n\
                 CPU 1/TCG-4003 [001] d..2. 100.000200: sched_switch: prev_comm=CPU 1/TCG prev_pid=4003 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120\n"
            ).as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            stop.store(true, Ordering::SeqCst);
            (during, h.join().unwrap().unwrap())
        });
        assert_eq!(during, CpuSet::from_cpus([0]), "the reader, while it read");
        assert!(!during.contains(1), "off the measured CPU 1");
        let p = r.reader.clone().expect("placement recorded");
        assert_eq!((p.cpus.as_str(), p.measured_cpus.as_str()), ("0", "1"));
        assert!(
            p.note.contains("beside CPU 0/TCG (vCPU 0, CPUs 0)"),
            "{}",
            p.note
        );
        assert_eq!(p.switches_on_recorded_cpus, 1, "{r:?}");
        assert_eq!((r.events_seen, r.events.len()), (2, 2));
        assert!(r.partial);
        assert!(
            text(&r).contains("NOTE: no online CPU is free"),
            "{}",
            text(&r)
        );
    }

    /// A QEMU (TCG, no disk: SeaBIOS halts and wakes vCPU 0) ended when dropped.
    struct Qemu(std::process::Child);

    impl Drop for Qemu {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The top-level tracefs files a recording must leave as they were.
    fn top_level(fs: &rt_sys::tracefs::Tracefs) -> Vec<(String, String)> {
        [
            "tracing_on",
            "current_tracer",
            "trace_clock",
            "buffer_size_kb",
            "events/sched/sched_switch/enable",
            "events/sched/sched_switch/filter",
            "events/sched/sched_wakeup/filter",
        ]
        .iter()
        .map(|f| (f.to_string(), fs.read(f).unwrap_or_default()))
        .collect()
    }

    #[test]
    #[ignore = "root, tracefs and QEMU (TCG): run by lab/test.sh"]
    fn a_real_recording_of_a_tcg_qemu_leaves_tracefs_as_it_was() {
        let _g = testkit::host_lock();
        if !testkit::require_root() || !testkit::require_command("qemu-system-x86_64") {
            return;
        }
        let root = SysRoot::live();
        let fs = rt_sys::tracefs::Tracefs::find(&root);
        if !testkit::require(fs.is_ok(), format!("tracefs: {fs:?}")) {
            return;
        }
        let fs = fs.unwrap();
        let before = top_level(&fs);
        let child = std::process::Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-smp", "2", "-m", "64", "-nodefaults"])
            .args(["-display", "none", "-serial", "none", "-monitor", "none"])
            .args(["-name", "rtvirt-trace-test,debug-threads=on"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        let q = Qemu(child);
        std::thread::sleep(Duration::from_millis(800));
        let vm = vm::find(&root, &profiles::Vm::default(), Some(q.0.id()))
            .unwrap()
            .expect("QEMU runs");
        assert_eq!(vm.vcpus.len(), 2, "{vm:?}");
        let opts = TraceOptions {
            duration: Duration::from_secs(2),
            cpus: CpuScope::List(CpuSet::from_cpus([1])),
            buffer_kb: 1024,
            max_events: 100_000,
            clock_dir: None,
            guest_synced_ns: None,
        };
        let r = record(&root, &vm, &opts, &AtomicBool::new(false)).unwrap();
        r.check(std::path::Path::new("host-trace.json")).unwrap();
        let tids: Vec<u32> = r.vcpus.iter().map(|v| v.tid).collect();
        let vcpu_switch = |e: &HostEvent| matches!(e, HostEvent::Switch { prev, next, .. } if tids.contains(prev) || tids.contains(next));
        assert!(
            r.events.iter().any(vcpu_switch),
            "vCPU 0 halts and wakes: {}",
            text(&r)
        );
        // CPU 1 is recorded whole: switches between two other tasks are there too.
        assert!(
            r.events
                .iter()
                .any(|e| matches!(e, HostEvent::Switch { cpu: 1, .. }) && !vcpu_switch(e)),
            "{}",
            text(&r)
        );
        assert_eq!(
            (r.clock.method.as_str(), r.clock.points),
            ("trace_marker", 2)
        );
        assert!(r.clock.uncertainty_ns < 10_000_000, "{:?}", r.clock);
        for e in &r.events {
            assert!(
                e.t_ns() + 1_000_000 >= r.start_ns && e.t_ns() <= r.end_ns + 1_000_000,
                "{e:?} outside {}..{}",
                r.start_ns,
                r.end_ns
            );
        }
        assert!(!r.partial);
        // Interrupted: a partial record, and tracefs still as it was.
        let stop = AtomicBool::new(false);
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(400));
                stop.store(true, Ordering::SeqCst);
            });
            let long = TraceOptions {
                duration: Duration::from_secs(60),
                cpus: CpuScope::Threads,
                ..opts.clone()
            };
            record(&root, &vm, &long, &stop).unwrap()
        });
        assert!(r.partial);
        assert!(r.end_ns - r.start_ns < 10_000_000_000);
        assert_eq!(r.cpus, None);
        drop(q);
        let own = format!(
            "{}{}",
            rt_sys::tracefs::sched::INSTANCE_PREFIX,
            std::process::id()
        );
        assert!(
            !fs.has(&format!("instances/{own}")),
            "the instance is removed"
        );
        assert_eq!(top_level(&fs), before, "the top level is untouched");
    }
}
