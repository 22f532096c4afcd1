//! `can-sim run`: one sender thread per ECU (`ecu/<name>`), an optional bus thread
//! (`can/bus`) that paces frames at the bitrate in arbitration order, and a receiver
//! (`can/rx`) that timestamps in the kernel (`SO_TIMESTAMPNS`) and keeps per-message
//! statistics, E2E checks and the candump log.
//!
//! [`run`] is a sequence of stages: plan, sockets, memory lock, shared state, then the
//! threads (receiver, bus, ECUs; each sets affinity, then `SCHED_FIFO`, then waits on a
//! `Barrier`), then the end of sending, the drain, and the records. A run plays one of
//! roles ([`Role`]): both sides in one process (one clock), only the senders (a
//! restbus), or only the receiver (the ECU side), so the two sides can run on two
//! machines against a start time given to both (`start_at_ns`); or, with no common clock,
//! the round trip: the senders and a receiver of the echoes that a far side playing
//! [`echo`] sends back.
//!
//! Sender threads sleep with `clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME)` (rt-sys)
//! until each release of their precomputed schedule. Nothing in the send and receive
//! loops allocates (buffers and histograms are sized up front; a histogram grows only for
//! a value far beyond the message's deadline).

pub mod echo;
mod rx;
mod tx;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use profiles::{Can, FrameKind};
use record::hist::{self, HistSummary};
use record::{CanRecord, TimeBase};
use rt_sys::rt::realtime_ns;
use rt_sys::sched::{self, Policy, SchedParams};
use rt_sys::CpuSet;
use serde::Serialize;
use socketcan::id::FdFlags;
use socketcan::{CanAnyFrame, CanDataFrame, CanFdFrame, EmbeddedFrame, ExtendedId, Id, StandardId};

pub use self::rx::{account, account_at, instance_in_order, message_index, Accounted, Rx};
use self::rx::{rx_loop, RxMode, RxResult};
use self::tx::{bus_loop, ecu_loop, Bus, Sink};
pub use self::tx::{simulate_paced, PacedBus, END_GRACE_NS};
use crate::canlog;
use crate::clock::duration_ns;
use crate::payload;
use crate::rta::{self, ErrorModel};
use crate::schedule::{EcuSchedule, MessagePlan, Plan};
use crate::signal::SignalError;
use crate::timing;
use crate::transport::{self, CanSock, TransportError, TxBatch};

/// Which side of the bus this run plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Senders and receiver in one process (one clock).
    #[default]
    Both,
    /// Only the senders: the restbus side (`can-tx.json`, no `can.json`).
    Sender,
    /// Only the receiver: the ECU side; `sent` is what the schedule releases.
    Receiver,
    /// The far side of a round trip: every frame of the matrix straight back on its reply
    /// id ([`echo`]; `can-echo.json`, no `can.json`).
    Echo,
    /// The senders, and a receiver of the echoes: latency RTT/2, time base
    /// `round_trip_echo`.
    RoundTrip,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(Role::Both),
            "sender" => Ok(Role::Sender),
            "receiver" => Ok(Role::Receiver),
            "echo" => Ok(Role::Echo),
            "round-trip" => Ok(Role::RoundTrip),
            _ => Err(format!(
                "{s:?} is not a role (both, sender, receiver, echo, round-trip)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Both => "both",
            Role::Sender => "sender",
            Role::Receiver => "receiver",
            Role::Echo => "echo",
            Role::RoundTrip => "round-trip",
        })
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Interface the ECUs send on.
    pub tx: String,
    /// Interface the receiver listens on.
    pub rx: String,
    /// Sending time.
    pub duration: Duration,
    /// Pace at the bus rate in arbitration order.
    pub pace: bool,
    /// Time the receiver keeps listening after the last release.
    pub drain: Duration,
    /// After `drain`, listen on until no frame came for this long (at most another
    /// `drain`); None: stop at the end of `drain`.
    pub drain_idle: Option<Duration>,
    /// Delay from set-up to the first release (threads start, sockets open), when no
    /// start time is given.
    pub lead: Duration,
    /// Which side this run plays.
    pub role: Role,
    /// Start of the schedule, ns since the epoch on the sender's `CLOCK_REALTIME` (both
    /// sides of a split run take the same); None: now + `lead`, on a millisecond.
    pub start_at_ns: Option<u64>,
    /// How receive and release times relate; its offset is taken off every timestamp.
    pub time_base: TimeBase,
    /// Reply id = id XOR this, for [`Role::Echo`] and [`Role::RoundTrip`].
    pub echo_xor: u32,
}

/// What one sender thread saw.
#[derive(Debug, Clone, Serialize)]
pub struct EcuReport {
    /// ECU name.
    pub name: String,
    /// Thread id.
    pub tid: u32,
    /// Policy and priority in force (read back), e.g. `fifo:80`.
    pub sched: String,
    /// CPU list it was pinned to (None: not pinned).
    pub cpus: Option<String>,
    /// Set-up problems (not fatal: the run goes on, these are its caveats).
    pub warnings: Vec<String>,
    /// Releases performed.
    pub releases: u64,
    /// Wake-up lateness: time the thread ran after the planned release, ns.
    pub release_latency: HistSummary,
}

/// `can-tx.json`: the sender side of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TxReport {
    /// The run's role.
    pub role: String,
    /// Paced at the bus rate.
    pub paced: bool,
    /// Start of the schedule (first release base), ns since the epoch.
    pub start_ns: u64,
    /// End of sending, ns since the epoch.
    pub end_ns: u64,
    /// Per ECU.
    pub ecus: Vec<EcuReport>,
    /// Frames sent per message id (hex).
    pub sent: BTreeMap<String, u64>,
    /// ENOBUFS retries.
    pub tx_enobufs: u64,
    /// Longest paced queue seen (frames waiting for the bus).
    pub bus_queue_max: u64,
    /// Frames received that are not in the matrix (other senders).
    pub foreign_frames: u64,
    /// Frames the receiver could not keep in the log (buffer full).
    pub log_dropped: u64,
    /// Process-wide set-up problems (memory not locked, ...): caveats of the run.
    pub warnings: Vec<String>,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// `can.json` (None for a sender-only run: it received nothing).
    pub record: Option<CanRecord>,
    /// `can-tx.json`.
    pub tx: TxReport,
    /// `can.log` text (None for a sender-only run).
    pub log: Option<String>,
}

/// Errors of a run (set-up; the measurement itself does not fail).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Transport set-up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The matrix.
    #[error(transparent)]
    Timing(#[from] timing::TimingError),
    /// The reply ids of a round trip.
    #[error(transparent)]
    Echo(#[from] echo::EchoError),
    /// `run` was asked for the echo role (that is [`echo::run_echo`]).
    #[error("The echo role runs through run_echo, not run")]
    EchoRole,
    /// A signal's values.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// A thread could not be started.
    #[error("Cannot start thread {name}")]
    Thread {
        /// Thread name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Build the frame of one instance: the signals (and E2E protection) of the message, or
/// the test payload (sequence number and nominal release). No allocation.
pub fn build_frame(
    m: &MessagePlan,
    seq: u64,
    release_ns: u64,
    start_ns: u64,
) -> Option<CanAnyFrame> {
    let mut buf = [0u8; 64];
    let len = usize::from(m.spec.len);
    if m.test_payload() {
        payload::encode(&mut buf, len, seq, release_ns);
    } else if let Some(p) = &m.payload {
        p.fill(&mut buf[..len], seq, release_ns.saturating_sub(start_ns));
    }
    if let Some(e) = &m.e2e {
        e.protect(&mut buf[..len], seq);
    }
    let id: Id = if m.spec.extended {
        Id::Extended(ExtendedId::new(m.id)?)
    } else {
        Id::Standard(StandardId::new(u16::try_from(m.id).ok()?)?)
    };
    match m.spec.kind {
        FrameKind::Classic => CanDataFrame::new(id, &buf[..len]).map(CanAnyFrame::Normal),
        FrameKind::Fd => {
            CanFdFrame::with_flags(id, &buf[..len], FdFlags::empty()).map(CanAnyFrame::Fd)
        }
        FrameKind::FdBrs => {
            CanFdFrame::with_flags(id, &buf[..len], FdFlags::BRS).map(CanAnyFrame::Fd)
        }
    }
}

/// The state the threads share.
pub(crate) struct Shared {
    plan: Plan,
    start_ns: u64,
    sent: Vec<AtomicU64>,
    enobufs: AtomicU64,
    tx_errors: AtomicU64,
    tx_error_first: Mutex<Option<String>>,
    stop: Arc<AtomicBool>,
    senders_done: AtomicBool,
    rx_stop: AtomicBool,
    /// Kernel time of the newest frame the receiver took, ns (0: none yet).
    last_rx_ns: AtomicU64,
    queue_max: AtomicU64,
}

impl Shared {
    fn new(plan: Plan, start_ns: u64, stop: Arc<AtomicBool>) -> Shared {
        let n = plan.messages.len();
        Shared {
            plan,
            start_ns,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            enobufs: AtomicU64::new(0),
            tx_errors: AtomicU64::new(0),
            tx_error_first: Mutex::new(None),
            stop,
            senders_done: AtomicBool::new(false),
            rx_stop: AtomicBool::new(false),
            last_rx_ns: AtomicU64::new(0),
            queue_max: AtomicU64::new(0),
        }
    }

    /// A write that failed for another reason than a full queue (or was cut by a stop):
    /// counted; the first one is kept (the error path may allocate).
    fn tx_error(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::Interrupted {
            return;
        }
        if self.tx_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            *self
                .tx_error_first
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    }
}

/// Pin, then set FIFO; failures become warnings (the run still measures, and says so).
fn setup_thread(cpus: Option<CpuSet>, priority: u8) -> (u32, String, Option<String>, Vec<String>) {
    let tid = sched::gettid();
    let mut warnings = Vec::new();
    let mut pinned = None;
    if let Some(set) = cpus {
        match sched::set_affinity(tid, &set) {
            Ok(()) => pinned = Some(set.to_string()),
            Err(e) => warnings.push(format!("affinity to CPUs {set}: {e}")),
        }
    }
    if let Err(e) = sched::set_sched(
        tid,
        SchedParams {
            policy: Policy::Fifo,
            priority: u32::from(priority),
        },
    ) {
        warnings.push(format!("SCHED_FIFO {priority}: {e}"));
    }
    let sched_now = sched::get_sched(tid)
        .map(|p| p.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    (tid, sched_now, pinned, warnings)
}

/// Stack of each thread: small, since `mlockall(MCL_FUTURE)` locks all of it.
const THREAD_STACK: usize = 512 << 10;

fn spawn_named<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, RunError> {
    thread::Builder::new()
        .stack_size(THREAD_STACK)
        .name(name.chars().take(15).collect())
        .spawn(f)
        .map_err(|source| RunError::Thread { name, source })
}

/// Most frames kept for `can.log` (80 bytes each: 40 MB, locked in memory by mlockall).
pub const LOG_CAP_MAX: usize = 500_000;

/// Where the receiver and bus threads run: on the allowed CPUs no ECU is pinned to (None:
/// no such CPU, or no ECU is pinned: left to the scheduler), so they never preempt a
/// sender; the receiver one priority below the lowest ECU (it only has to keep up: the
/// latency is the kernel's timestamp, not its wake-up).
pub fn helper_placement(allowed: &CpuSet, ecus: &[profiles::Ecu]) -> (Option<CpuSet>, u8) {
    let ecu_cpus = CpuSet::from_cpus(ecus.iter().filter_map(|e| e.cpu));
    let rest = allowed.difference(&ecu_cpus);
    let cpus = (!ecu_cpus.is_empty() && !rest.is_empty()).then_some(rest);
    let low = ecus.iter().map(|e| e.priority).min().unwrap_or(80);
    (cpus, low.saturating_sub(1).max(1))
}

fn estimate_frames(plan: &Plan, duration: Duration) -> usize {
    let d = duration_ns(duration);
    let n: u64 = plan
        .messages
        .iter()
        .map(|m| d / m.period_ns.max(1) + 2)
        .sum();
    usize::try_from(n.saturating_mul(2).saturating_add(4096))
        .unwrap_or(4096)
        .min(LOG_CAP_MAX)
}

/// Releases the schedule makes of `m` in `[start, end)` (a receiver-only run's `sent`).
pub fn scheduled_releases(m: &MessagePlan, start_ns: u64, end_ns: u64) -> u64 {
    end_ns
        .saturating_sub(start_ns + m.offset_ns)
        .div_ceil(m.period_ns.max(1))
}

/// The sockets a role needs.
struct Sockets {
    rx: Option<CanSock>,
    /// One per ECU (unpaced senders).
    ecus: Vec<Option<CanSock>>,
    /// The paced bus's.
    bus: Option<CanSock>,
}

fn open_sockets(plan: &Plan, opts: &RunOptions) -> Result<Sockets, RunError> {
    let fd = plan.has_fd();
    transport::check_af_can()?;
    let sends = opts.role != Role::Receiver;
    let receives = opts.role != Role::Sender;
    if fd {
        if sends {
            transport::check_fd_mtu(&opts.tx)?;
        }
        if receives {
            transport::check_fd_mtu(&opts.rx)?;
        }
    }
    let rx = receives
        .then(|| CanSock::open_rx(&opts.rx, fd))
        .transpose()?;
    let mut ecus = Vec::new();
    for _ in &plan.ecus {
        ecus.push(if sends && !opts.pace {
            Some(CanSock::open_tx(&opts.tx, fd)?)
        } else {
            None
        });
    }
    let bus = (sends && opts.pace)
        .then(|| CanSock::open_tx(&opts.tx, fd))
        .transpose()?;
    Ok(Sockets { rx, ecus, bus })
}

/// Lock all memory (the log buffer and histograms are touched before the run); a
/// refusal is a caveat of the run, said in `can-tx.json`.
fn lock_memory() -> Option<String> {
    rt_sys::rt::mlockall()
        .err()
        .map(|e| format!("memory not locked (page faults may land in the run): {e}"))
}

/// Everything the threads of a run need that is not shared.
struct Ctx {
    barrier: Arc<Barrier>,
    helper_cpus: Option<CpuSet>,
    rx_prio: u8,
    max_prio: u8,
    end_ns: u64,
    log_cap: usize,
}

fn spawn_receiver(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    sock: CanSock,
    mode: RxMode,
) -> Result<JoinHandle<RxResult>, RunError> {
    let (sh, b, cpus, prio, cap) = (
        sh.clone(),
        ctx.barrier.clone(),
        ctx.helper_cpus.clone(),
        ctx.rx_prio,
        ctx.log_cap,
    );
    spawn_named("can/rx".into(), move || {
        let _ = setup_thread(cpus, prio);
        b.wait();
        rx_loop(&sock, &sh, cap, mode)
    })
}

fn spawn_bus(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    bus: &Arc<Bus>,
    sock: CanSock,
) -> Result<JoinHandle<()>, RunError> {
    let (sh, b, bus, cpus, prio) = (
        sh.clone(),
        ctx.barrier.clone(),
        bus.clone(),
        ctx.helper_cpus.clone(),
        ctx.max_prio,
    );
    spawn_named("can/bus".into(), move || {
        let _ = setup_thread(cpus, prio);
        b.wait();
        bus_loop(&sh, &bus, &sock);
    })
}

fn spawn_ecus(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    can: &Can,
    bus: Option<&Arc<Bus>>,
    socks: Vec<Option<CanSock>>,
) -> Result<Vec<JoinHandle<EcuReport>>, RunError> {
    let mut handles = Vec::new();
    for (i, (ecu, sock)) in can.ecus.iter().zip(socks).enumerate() {
        let (sh, b, bus) = (sh.clone(), ctx.barrier.clone(), bus.cloned());
        let sched = EcuSchedule::new(&sh.plan, i, sh.start_ns);
        let (cpu, prio, name, end_ns) = (ecu.cpu, ecu.priority, ecu.name.clone(), ctx.end_ns);
        handles.push(spawn_named(format!("ecu/{}", ecu.name), move || {
            let (tid, sched_now, cpus, warnings) =
                setup_thread(cpu.map(|c| CpuSet::from_cpus([c])), prio);
            let mut lat = hist::new_ns();
            let batch = Box::new(TxBatch::default());
            b.wait();
            let mut sink = match (&bus, &sock) {
                (Some(bus), _) => Sink::Bus(bus),
                (None, Some(s)) => Sink::Socket(s, batch),
                (None, None) => return EcuReport::idle(name, tid, sched_now, cpus, warnings),
            };
            let releases = ecu_loop(&sh, &mut sink, sched, end_ns, &mut lat);
            EcuReport {
                name,
                tid,
                sched: sched_now,
                cpus,
                warnings,
                releases,
                release_latency: HistSummary::from_hist(&lat),
            }
        })?);
    }
    Ok(handles)
}

impl EcuReport {
    fn idle(
        name: String,
        tid: u32,
        sched: String,
        cpus: Option<String>,
        warnings: Vec<String>,
    ) -> EcuReport {
        EcuReport {
            name,
            tid,
            sched,
            cpus,
            warnings,
            releases: 0,
            release_latency: HistSummary::from_hist(&hist::new_ns()),
        }
    }
}

/// The threads of a run while it goes on.
struct Threads {
    rx: Option<JoinHandle<RxResult>>,
    bus: Option<JoinHandle<()>>,
    ecus: Vec<JoinHandle<EcuReport>>,
}

/// Wait for the senders (or, receiving only, for the end of sending: `end_ns` on this
/// process's clock), stop the paced bus,
/// let frames in flight arrive for `drain` (cut short by a second stop request) and,
/// with `drain_idle`, on while they keep coming (see [`drain_until_idle`]), then stop and
/// collect the receiver.
fn finish(
    sh: &Shared,
    bus: &Bus,
    t: Threads,
    end_ns: u64,
    (drain, drain_idle): (Duration, Option<Duration>),
) -> (Vec<EcuReport>, Option<RxResult>) {
    let ecus: Vec<EcuReport> = t.ecus.into_iter().filter_map(|h| h.join().ok()).collect();
    if ecus.is_empty() {
        // Receiver only: wait out the schedule.
        while realtime_ns() < end_ns && !sh.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    sh.senders_done.store(true, Ordering::Release);
    bus.ready.notify_all();
    if let Some(h) = t.bus {
        let _ = h.join();
    }
    let rx = t.rx.map(|h| {
        let drain_end = realtime_ns() + duration_ns(drain);
        while realtime_ns() < drain_end {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(idle) = drain_idle {
            let cap = drain_end.saturating_add(duration_ns(drain));
            while !drain_until_idle(
                realtime_ns(),
                sh.last_rx_ns.load(Ordering::Relaxed),
                duration_ns(idle),
                cap,
            ) && !sh.stop.load(Ordering::Relaxed)
            {
                thread::sleep(Duration::from_millis(10));
            }
        }
        sh.rx_stop.store(true, Ordering::Release);
        h.join()
            .unwrap_or_else(|_| RxResult::empty(&sh.plan, Some("receiver thread panicked")))
    });
    (ecus, rx)
}

/// Whether an idle drain is over at `now_ns`: no frame for `idle_ns` since the newest
/// (`last_rx_ns`, 0: none came) or the cap reached.
pub fn drain_until_idle(now_ns: u64, last_rx_ns: u64, idle_ns: u64, cap_ns: u64) -> bool {
    now_ns >= cap_ns || now_ns.saturating_sub(last_rx_ns) >= idle_ns
}

/// Transmit problems as bus errors: the receiver's own error and failed writes.
fn bus_errors(sh: &Shared, rxr: &RxResult, tx_iface: &str) -> Vec<String> {
    let mut out = rxr.bus_errors.clone();
    if let Some(e) = &rxr.error {
        out.push(e.clone());
    }
    let n = sh.tx_errors.load(Ordering::Relaxed);
    if n > 0 {
        let first = sh
            .tx_error_first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        out.push(format!("{n} x transmit failed on {tx_iface}: {first}"));
    }
    out
}

/// `can.json` from what the receiver saw.
fn can_record(
    can: &Can,
    opts: &RunOptions,
    sh: &Shared,
    rxr: &RxResult,
    sent: &[u64],
    end_ns: u64,
) -> CanRecord {
    let plan = &sh.plan;
    let now = crate::clock::to_sender(realtime_ns(), opts.time_base.offset_ns);
    let actual_end = now.min(end_ns).max(sh.start_ns + 1);
    let elapsed_ns = actual_end - sh.start_ns;
    let errors = (can.error_rate_per_s > 0.0).then_some(ErrorModel {
        rate_per_s: can.error_rate_per_s,
    });
    let wcrt = rta::response_times(
        &plan.rta_messages(),
        timing::tau_bit_ns(can.bitrate),
        errors,
    );
    let messages = plan
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| rxr.stats[i].record(m, sent[i], wcrt[i].wcrt_ns, sh.start_ns, actual_end))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let measured = rxr.bus_ns as f64 / elapsed_ns as f64 * 100.0;
    CanRecord {
        tx: opts.tx.clone(),
        rx: opts.rx.clone(),
        bitrate: can.bitrate,
        data_bitrate: can.data_bitrate,
        paced: opts.pace,
        elapsed_s: timing::ns_to_ms(elapsed_ns) / 1000.0,
        bus_load_analytic_pct: plan.bus_load_pct(),
        bus_load_measured_pct: measured,
        tx_enobufs: sh.enobufs.load(Ordering::Relaxed),
        bus_errors: bus_errors(sh, rxr, &opts.tx),
        timestamp_source: if rxr.kernel_ts { "kernel" } else { "user" }.to_string(),
        messages,
        partial: sh.stop.load(Ordering::Relaxed),
        role: opts.role.to_string(),
        time_base: rxr.rtt.as_ref().map_or_else(
            || opts.time_base.clone(),
            crate::clock::RoundTrips::time_base,
        ),
    }
}

/// The start and end of sending.
fn timeline(opts: &RunOptions) -> (u64, u64) {
    let lead = duration_ns(opts.lead);
    let start = opts
        .start_at_ns
        .unwrap_or_else(|| (realtime_ns() + lead) / 1_000_000 * 1_000_000);
    let end = start.saturating_add(duration_ns(opts.duration));
    (start, end)
}

/// Run the simulation. `stop` ends it early (Ctrl-C); the result is then partial.
pub fn run(can: &Can, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunOutcome, RunError> {
    let plan = Plan::from_can(can)?.with_payloads(can)?;
    let mode = match opts.role {
        Role::Echo => return Err(RunError::EchoRole),
        Role::RoundTrip => RxMode::Echoes(echo::reply_index(&plan, opts.echo_xor)?),
        _ => RxMode::OneWay {
            clock_offset_ns: opts.time_base.offset_ns,
        },
    };
    let socks = open_sockets(&plan, opts)?;
    let mut warnings: Vec<String> = lock_memory().into_iter().collect();
    let log_cap = estimate_frames(&plan, opts.duration);
    let (start_ns, end_ns) = timeline(opts);
    // The schedule is on the sender's clock; this process waits on its own.
    let offset = opts.time_base.offset_ns;
    if crate::clock::to_receiver(start_ns, offset) < realtime_ns() {
        warnings.push(format!(
            "the start time {start_ns} ns was already past when the threads started"
        ));
    }
    let n_msgs = plan.messages.len();
    let sh = Arc::new(Shared::new(plan, start_ns, stop));
    let bus = Arc::new(Bus::with_capacity(n_msgs * 4 + 16));
    let senders = opts.role != Role::Receiver;
    let n_threads = usize::from(socks.rx.is_some())
        + usize::from(socks.bus.is_some())
        + if senders { can.ecus.len() } else { 0 };
    let allowed = sched::get_affinity(0).unwrap_or_default();
    let (helper_cpus, rx_prio) = helper_placement(&allowed, &can.ecus);
    let ctx = Ctx {
        barrier: Arc::new(Barrier::new(n_threads + 1)),
        helper_cpus,
        rx_prio,
        max_prio: can.ecus.iter().map(|e| e.priority).max().unwrap_or(80),
        end_ns,
        log_cap,
    };
    let threads = Threads {
        rx: socks
            .rx
            .map(|s| spawn_receiver(&sh, &ctx, s, mode))
            .transpose()?,
        bus: socks
            .bus
            .map(|s| spawn_bus(&sh, &ctx, &bus, s))
            .transpose()?,
        ecus: if senders {
            spawn_ecus(&sh, &ctx, can, opts.pace.then_some(&bus), socks.ecus)?
        } else {
            Vec::new()
        },
    };
    ctx.barrier.wait();
    let local_end = crate::clock::to_receiver(end_ns, offset);
    let (ecus, rxr) = finish(&sh, &bus, threads, local_end, (opts.drain, opts.drain_idle));
    Ok(outcome(can, opts, &sh, ecus, rxr, warnings, end_ns))
}

fn outcome(
    can: &Can,
    opts: &RunOptions,
    sh: &Shared,
    ecus: Vec<EcuReport>,
    rxr: Option<RxResult>,
    warnings: Vec<String>,
    end_ns: u64,
) -> RunOutcome {
    let plan = &sh.plan;
    let sent: Vec<u64> = match opts.role {
        Role::Receiver => plan
            .messages
            .iter()
            .map(|m| {
                let now = crate::clock::to_sender(realtime_ns(), opts.time_base.offset_ns);
                scheduled_releases(m, sh.start_ns, now.min(end_ns))
            })
            .collect(),
        _ => sh.sent.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
    };
    let record = rxr
        .as_ref()
        .map(|r| can_record(can, opts, sh, r, &sent, end_ns));
    let tx = TxReport {
        role: opts.role.to_string(),
        paced: opts.pace,
        start_ns: sh.start_ns,
        end_ns,
        ecus,
        sent: plan
            .messages
            .iter()
            .zip(&sent)
            .map(|(m, n)| (crate::schedule::id_text(m.id, m.spec.extended), *n))
            .collect(),
        tx_enobufs: sh.enobufs.load(Ordering::Relaxed),
        bus_queue_max: sh.queue_max.load(Ordering::Relaxed),
        foreign_frames: rxr.as_ref().map_or(0, |r| r.foreign),
        log_dropped: rxr.as_ref().map_or(0, |r| r.log_dropped),
        warnings,
    };
    let log = rxr.map(|r| canlog::render(&r.log, &opts.rx));
    RunOutcome { record, tx, log }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MsgStats;

    /// An idle drain goes on while frames are younger than the idle time, ends after a
    /// gap of that long, when none came at all, and at the cap whatever still comes.
    #[test]
    fn an_idle_drain_ends_after_a_quiet_gap_or_at_the_cap() {
        let (idle, cap) = (2_000, 100_000);
        assert!(!drain_until_idle(50_000, 49_000, idle, cap));
        assert!(!drain_until_idle(50_000, 48_001, idle, cap));
        assert!(drain_until_idle(50_000, 48_000, idle, cap));
        assert!(drain_until_idle(50_000, 0, idle, cap));
        assert!(drain_until_idle(100_000, 99_999, idle, cap));
        // A frame stamped after `now` (another CPU's clock read) keeps it going.
        assert!(!drain_until_idle(50_000, 50_010, idle, cap));
    }

    #[test]
    fn frames_carry_the_payload_and_format() {
        let p = profiles::load("canfd").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        for m in &plan.messages {
            let f =
                build_frame(m, 7, 1_700_000_000_000_000_123, 1_700_000_000_000_000_000).unwrap();
            let data = canlog::frame_data(&f);
            assert_eq!(data.len(), usize::from(m.spec.len));
            let d = payload::decode(data, 7, 1_700_000_000_000_500_000);
            assert_eq!(d.seq, Some(7));
            assert_eq!(d.release_ns, Some(1_700_000_000_000_000_123));
            assert_eq!(canlog::frame_id(&f), (m.id, m.spec.extended));
            match (m.spec.kind, f) {
                (FrameKind::FdBrs, CanAnyFrame::Fd(fd)) => assert!(fd.is_brs()),
                (FrameKind::Fd, CanAnyFrame::Fd(fd)) => assert!(!fd.is_brs()),
                (FrameKind::Classic, CanAnyFrame::Normal(_)) => {}
                (k, f) => panic!("{k:?} built {f:?}"),
            }
        }
    }

    /// The receive path on built frames: latency from the payload, a 3 s latency (beyond
    /// the 2.1 s a 32-bit stamp spans) kept exact through the schedule, short payloads
    /// timed from the schedule, foreign frames counted apart.
    #[test]
    fn receive_path_accounts_frames() {
        let p = profiles::load("lab").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let index = message_index(&plan);
        let mut stats: Vec<MsgStats> = plan.messages.iter().map(MsgStats::new).collect();
        let start = 1_700_000_000_000_000_000u64;
        let es = &plan.messages[0];
        for (seq, lat) in [(0u64, 400_000u64), (1, 3_000_000_000)] {
            let rel = es.nominal_release(start, seq);
            let f = build_frame(es, seq, rel, start).unwrap();
            assert_eq!(
                account(&plan, &index, &mut stats, start, &f, rel + lat),
                Accounted::Ours(270_000)
            );
        }
        assert_eq!(stats[0].received, 2);
        assert_eq!(
            stats[0].latency.max(),
            stats[0].latency.highest_equivalent(3_000_000_000)
        );
        assert!(stats[0].latency.min() >= 399_000 && stats[0].latency.min() <= 401_000);
        assert_eq!(stats[0].deadline_misses, 1);
        // A 2-byte frame of the same id: sequence only, release from the schedule.
        let short = CanAnyFrame::Normal(
            CanDataFrame::new(StandardId::new(0x0C0).unwrap(), &[2, 0]).unwrap(),
        );
        let rel2 = es.nominal_release(start, 2);
        account(&plan, &index, &mut stats, start, &short, rel2 + 500_000);
        assert_eq!(stats[0].received, 3);
        assert_eq!(stats[0].latency.len(), 3);
        // A foreign frame: counted with its bus time.
        let other = CanAnyFrame::Normal(
            CanDataFrame::new(StandardId::new(0x7FF).unwrap(), &[0; 8]).unwrap(),
        );
        assert_eq!(
            account(&plan, &index, &mut stats, start, &other, 0),
            Accounted::Foreign(270_000)
        );
    }

    /// A round trip's receive path: the echo (reply id) of each frame is timed from its
    /// release, accounted at release + RTT/2, and the time base says so.
    #[test]
    fn echoes_are_accounted_at_half_the_round_trip() {
        let p = profiles::load("hil").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let replies = echo::reply_index(&plan, echo::DEFAULT_XOR).unwrap();
        let mut stats: Vec<MsgStats> = plan.messages.iter().map(MsgStats::new).collect();
        let mut book = crate::clock::RoundTrips::default();
        let start = 1_700_000_000_000_000_000u64;
        let i = plan.find(0x0C0, false).unwrap();
        let m = &plan.messages[i];
        for (seq, rtt) in [(0u64, 2_000_000u64), (1, 8_000_000), (2, 4_000_000)] {
            let rel = m.nominal_release(start, seq);
            let f = build_frame(m, seq, rel, start).unwrap();
            let e = echo::echo_frame(&f, echo::DEFAULT_XOR).unwrap();
            let at = Rx {
                ts_ns: rel + rtt,
                rtt: Some(&mut book),
            };
            assert_eq!(
                account_at(&plan, &replies, &mut stats, start, &e, at),
                Accounted::Ours(m.frame_ns)
            );
            // The frame itself (this process's, through the loopback) is not an echo.
            let at = Rx {
                ts_ns: rel,
                rtt: Some(&mut book),
            };
            assert!(matches!(
                account_at(&plan, &replies, &mut stats, start, &f, at),
                Accounted::Foreign(_)
            ));
        }
        let r = stats[i].record(m, 3, None, start, m.nominal_release(start, 3));
        assert_eq!((r.received, r.lost), (3, 0));
        // Latency RTT/2: 1, 4 and 2 ms (within the histogram's resolution).
        assert!(
            r.latency.min_ns.abs_diff(1_000_000) <= 1_000,
            "{:?}",
            r.latency
        );
        assert!(
            r.latency.max_ns.abs_diff(4_000_000) <= 4_000,
            "{:?}",
            r.latency
        );
        let tb = book.time_base();
        assert_eq!(
            (tb.method.as_str(), tb.uncertainty_ns),
            ("round_trip_echo", 4_000_000)
        );
        let s = tb.rtt.unwrap();
        assert_eq!((s.samples, s.min_ns, s.max_ns), (3, 2_000_000, 8_000_000));
    }

    #[test]
    fn helpers_stay_off_the_ecu_cpus() {
        let p = profiles::load("lab").unwrap().profile;
        let ecus = &p.can.as_ref().unwrap().ecus; // all on CPU 0, priorities 80, 80, 70
        let (cpus, prio) = helper_placement(&CpuSet::parse("0-1").unwrap(), ecus);
        assert_eq!(cpus.map(|c| c.to_string()), Some("1".to_string()));
        assert_eq!(prio, 69);
        // Only CPU 0 allowed: nowhere else to go.
        assert_eq!(helper_placement(&CpuSet::parse("0").unwrap(), ecus).0, None);
        // No ECU pinned: left to the scheduler.
        let p = profiles::load("canfd").unwrap().profile;
        let (cpus, prio) = helper_placement(&CpuSet::parse("0-3").unwrap(), &p.can.unwrap().ecus);
        assert_eq!((cpus, prio), (None, 79));
    }

    #[test]
    fn log_buffer_is_sized_from_the_matrix() {
        let p = profiles::load("lab").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        // 10 s: 1000 + 500 + 1000 + 100 + 100 frames (+2 each), doubled, + 4096.
        assert_eq!(
            estimate_frames(&plan, Duration::from_secs(10)),
            (2710 * 2) + 4096
        );
    }

    fn protected_profile() -> profiles::Profile {
        let text = r#"Profile(name: "e2e", can: Some((bitrate: 500000, tx: "vcan0", rx: "vcan0",
            ecus: [(name: "body", messages: [
                (name: Some("Door"), id: 0x210, len: 8, period_ms: 10,
                 signals: [
                    (name: "Crc", start_bit: 0, size: 8),
                    (name: "Alive", start_bit: 8, size: 4),
                    (name: "Open", start_bit: 16, size: 1, value: Some(Cycle([0, 1, 1]))),
                    (name: "Speed", start_bit: 24, size: 16, factor: 0.01, value: Some(Ramp(from: 0, to: 100, period_ms: 40))),
                 ],
                 e2e: Some((profile: P11, data_id: 0x123))),
            ])])))"#;
        profiles::parse(text, "t").unwrap()
    }

    /// Signals and E2E end to end without a bus: built frames carry the signals and a
    /// valid E2E header; the receiver takes the instance from the counter, checks every
    /// frame, and counts a corrupted and a repeated one.
    #[test]
    fn signal_frames_with_e2e_round_trip_through_the_receiver() {
        let p = protected_profile();
        profiles::validate(&p).unwrap();
        let can = p.can.as_ref().unwrap();
        let plan = Plan::from_can(can).unwrap().with_payloads(can).unwrap();
        let m = &plan.messages[0];
        assert!(!m.test_payload());
        let start = 1_700_000_000_000_000_000u64;
        let index = message_index(&plan);
        let mut stats: Vec<MsgStats> = plan.messages.iter().map(MsgStats::new).collect();
        let mut frames = Vec::new();
        for seq in 0..20u64 {
            let rel = m.nominal_release(start, seq);
            let f = build_frame(m, seq, rel, start).unwrap();
            let d = canlog::frame_data(&f);
            assert_eq!(u64::from(d[1] & 0x0F), seq % 15, "alive counter");
            assert_eq!(d[2] & 1, [0, 1, 1][usize::try_from(seq % 3).unwrap()]);
            // Ramp over 40 ms at 10 ms steps: 0, 25, 50, 75 (raw / 0.01).
            let speed = u16::from_le_bytes([d[3], d[4]]);
            assert_eq!(
                speed,
                [0, 2500, 5000, 7500][usize::try_from(seq % 4).unwrap()]
            );
            frames.push((f, rel));
        }
        // Frame 5 corrupted, frame 9 sent twice.
        let mut order: Vec<(CanAnyFrame, u64)> = Vec::new();
        for (i, (f, rel)) in frames.iter().enumerate() {
            let mut f = *f;
            if i == 5 {
                let mut d = canlog::frame_data(&f).to_vec();
                d[6] ^= 0xFF;
                f = CanAnyFrame::Normal(
                    CanDataFrame::new(StandardId::new(0x210).unwrap(), &d).unwrap(),
                );
            }
            order.push((f, rel + 300_000));
            if i == 9 {
                order.push((f, rel + 400_000));
            }
        }
        for (f, ts) in &order {
            account(&plan, &index, &mut stats, start, f, *ts);
        }
        let end = m.nominal_release(start, 20);
        let r = stats[0].record(m, 20, Some(1_000_000), start, end);
        let e = r.e2e.unwrap();
        assert_eq!(
            (
                e.ok,
                e.ok_some_lost,
                e.repeated,
                e.error,
                e.wrong_sequence,
                e.timeout
            ),
            // The frame after the corrupted one is two counts on (max delta 1): a wrong
            // sequence, as AUTOSAR's check says.
            (18, 0, 1, 1, 1, 0)
        );
        assert_eq!(r.instance_from, "e2e_counter");
        assert_eq!(r.signals, 4);
        // The corrupted frame still counts as received (by the schedule), the repeat as
        // a duplicate; every latency is the 300 us (400 us for the repeat, not recorded).
        assert_eq!((r.received, r.duplicates, r.lost), (20, 1, 0));
        assert!(
            r.latency.max_ns <= 301_000 && r.latency.min_ns >= 299_000,
            "{:?}",
            r.latency
        );
    }

    /// Frames without a sequence number: in order they are the next instance, also when
    /// late by more than a period; a gap beyond period + deadline is a loss.
    #[test]
    fn instances_without_a_counter() {
        let p = profiles::load("lab").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let m = &plan.messages[0]; // EngineSpeed: 10 ms, deadline 5 ms
        let ms = 1_000_000u64;
        // Instance 3 arrives 12 ms late (after instance 4's release): still instance 3.
        assert_eq!(instance_in_order(m, 0, 3, 42 * ms), 3);
        // 20 ms after instance 3's release is beyond 15 ms: 3 and 4 were lost, this is 5.
        assert_eq!(instance_in_order(m, 0, 3, 51 * ms), 5);
        assert_eq!(instance_in_order(m, 0, 0, ms), 0);
    }

    #[test]
    fn roles_and_scheduled_releases() {
        assert_eq!("sender".parse::<Role>(), Ok(Role::Sender));
        assert_eq!(Role::Receiver.to_string(), "receiver");
        assert_eq!(
            "ecu".parse::<Role>().unwrap_err(),
            "\"ecu\" is not a role (both, sender, receiver, echo, round-trip)"
        );
        assert_eq!("round-trip".parse::<Role>(), Ok(Role::RoundTrip));
        assert_eq!(Role::Echo.to_string(), "echo");
        let p = profiles::load("lab").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let m = &plan.messages[0]; // 10 ms, offset 0
        assert_eq!(scheduled_releases(m, 0, 1_000_000_000), 100);
        assert_eq!(scheduled_releases(m, 0, 1_000_000_001), 101);
        let climate = &plan.messages[plan.find(0x18FF5021, true).unwrap()]; // 100 ms from 7 ms
        assert_eq!(scheduled_releases(climate, 0, 1_000_000_000), 10);
        assert_eq!(scheduled_releases(climate, 0, 5_000_000), 0);
    }
}
