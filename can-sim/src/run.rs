//! `can-sim run`: one sender thread per ECU (`ecu/<name>`), an optional bus thread
//! (`can/bus`) that paces frames at the bitrate in arbitration order, and a receiver
//! (`can/rx`) that timestamps in the kernel (`SO_TIMESTAMPNS`) and keeps per-message
//! statistics and the candump log.
//!
//! Sender threads set affinity (the ECU's `cpu`), then `SCHED_FIFO` at the ECU's priority,
//! then wait on a `Barrier`; they sleep with `clock_nanosleep(CLOCK_REALTIME,
//! TIMER_ABSTIME)` until each release of their precomputed schedule. Nothing in the send
//! and receive loops allocates (buffers and histograms are sized up front).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use hdrhistogram::Histogram;
use profiles::{Can, FrameKind};
use record::hist::{self, HistSummary};
use record::CanRecord;
use rt_sys::rt::sleep_until_realtime;
use rt_sys::sched::{self, Policy, SchedParams};
use rt_sys::CpuSet;
use serde::Serialize;
use socketcan::id::FdFlags;
use socketcan::{CanAnyFrame, CanDataFrame, CanFdFrame, EmbeddedFrame, ExtendedId, Id, StandardId};

use crate::canlog::{self, Logged};
use crate::metrics::MsgStats;
use crate::payload;
use crate::rta::{self, ErrorModel};
use crate::schedule::{EcuSchedule, MessagePlan, Plan};
use crate::timing;
use crate::transport::{self, CanSock, TransportError};

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
    /// Delay from set-up to the first release (threads start, sockets open).
    pub lead: Duration,
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
    /// Paced at the bus rate.
    pub paced: bool,
    /// Start of the schedule (first release base), ns since the epoch.
    pub start_ns: u64,
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
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// `can.json`.
    pub record: CanRecord,
    /// `can-tx.json`.
    pub tx: TxReport,
    /// `can.log` text.
    pub log: String,
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

fn now_ns() -> u64 {
    rt_sys::rt::realtime_ns()
}

/// Build the frame for one instance (payload: sequence number and nominal release).
pub fn build_frame(m: &MessagePlan, seq: u64, release_ns: u64) -> Option<CanAnyFrame> {
    let mut buf = [0u8; 64];
    let len = usize::from(m.spec.len);
    payload::encode(&mut buf, len, seq, release_ns);
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

/// A frame waiting for the paced bus.
type Queued = Reverse<(u64, u64, usize, FrameBox)>;

/// Orderable wrapper (frames are compared only by the key before them).
#[derive(Clone, Copy)]
struct FrameBox(CanAnyFrame);
impl PartialEq for FrameBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for FrameBox {}
impl PartialOrd for FrameBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FrameBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

struct Bus {
    queue: Mutex<BinaryHeap<Queued>>,
    ready: Condvar,
}

struct Shared {
    plan: Plan,
    sent: Vec<AtomicU64>,
    enobufs: AtomicU64,
    tx_errors: AtomicU64,
    tx_error_first: Mutex<Option<String>>,
    stop: Arc<AtomicBool>,
    senders_done: AtomicBool,
    rx_stop: AtomicBool,
    queue_max: AtomicU64,
}

impl Shared {
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

struct RxResult {
    stats: Vec<MsgStats>,
    log: Vec<Logged>,
    log_dropped: u64,
    bus_errors: Vec<String>,
    foreign: u64,
    bus_ns: u64,
    kernel_ts: bool,
    error: Option<String>,
}

fn rx_loop(sock: &CanSock, sh: &Shared, start_ns: u64, log_cap: usize) -> RxResult {
    let plan = &sh.plan;
    let index = message_index(plan);
    let mut r = RxResult {
        stats: plan.messages.iter().map(|_| MsgStats::default()).collect(),
        log: Vec::with_capacity(log_cap),
        log_dropped: 0,
        bus_errors: Vec::new(),
        foreign: 0,
        bus_ns: 0,
        kernel_ts: true,
        error: None,
    };
    let mut err_counts: BTreeMap<String, u64> = BTreeMap::new();
    while !sh.rx_stop.load(Ordering::Relaxed) {
        let got = match sock.recv() {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(e) => {
                r.error = Some(format!("receive failed: {e}"));
                break;
            }
        };
        if !got.kernel {
            r.kernel_ts = false;
        }
        if r.log.len() < log_cap {
            r.log.push(Logged {
                ts_ns: got.ts_ns,
                frame: got.frame,
            });
        } else {
            r.log_dropped += 1;
        }
        if let CanAnyFrame::Error(ef) = got.frame {
            // Error frames are rare; naming them may allocate.
            *err_counts
                .entry(transport::describe_error_frame(&ef))
                .or_default() += 1;
            continue;
        }
        match account(plan, &index, &mut r.stats, start_ns, &got.frame, got.ts_ns) {
            Accounted::Ours(ns) => r.bus_ns += ns,
            Accounted::Foreign(ns) => {
                r.foreign += 1;
                r.bus_ns += ns;
            }
        }
    }
    r.bus_errors = err_counts
        .into_iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect();
    r
}

/// What a received data frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounted {
    /// A frame of the matrix; its bus time in ns.
    Ours(u64),
    /// Not in the matrix; its worst-case bus time in ns.
    Foreign(u64),
}

/// Account one received data frame into the per-message statistics. `index` maps
/// (id, extended) to the message; `start_ns` is the schedule's start (for nominal
/// releases). Does not allocate.
pub fn account(
    plan: &Plan,
    index: &HashMap<(u32, bool), usize>,
    stats: &mut [MsgStats],
    start_ns: u64,
    frame: &CanAnyFrame,
    ts_ns: u64,
) -> Accounted {
    let (id, ext) = canlog::frame_id(frame);
    let data = canlog::frame_data(frame);
    let Some(&i) = index.get(&(id, ext)) else {
        let fd = matches!(frame, CanAnyFrame::Fd(_));
        let len = u8::try_from(data.len()).unwrap_or(64);
        let bits = timing::can_frame_bits(fd, ext, true, true, len);
        return Accounted::Foreign(timing::bits_to_ns(u64::from(bits), plan.bitrate));
    };
    let m = &plan.messages[i];
    let st = &mut stats[i];
    let d = payload::decode(data, st.next_seq(), ts_ns);
    // The schedule knows each instance's nominal release: a truncated stamp is widened
    // against it rather than against the RX time, so latencies beyond 2.1 s (a sender far
    // behind) stay exact; a full 64-bit stamp is used as sent.
    let nominal = d.seq.map(|s| m.nominal_release(start_ns, s));
    let release = match (d.release_ns, nominal) {
        (Some(r), Some(n)) if data.len() < 12 => Some(payload::widen(r, 32, n)),
        (Some(r), _) => Some(r),
        (None, n) => n,
    };
    st.on_frame(m, d.seq, release, ts_ns);
    Accounted::Ours(m.frame_ns)
}

/// (id, extended) -> message index.
pub fn message_index(plan: &Plan) -> HashMap<(u32, bool), usize> {
    plan.messages
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.id, m.spec.extended), i))
        .collect()
}

/// Stack of each thread: small, since `mlockall(MCL_FUTURE)` locks all of it.
const THREAD_STACK: usize = 512 << 10;

/// How long after the end of the run a late sender may still send releases due before it.
pub const END_GRACE_NS: u64 = 20_000_000;

fn ecu_loop(
    sh: &Shared,
    bus: Option<&Bus>,
    sock: Option<&CanSock>,
    mut sched: EcuSchedule,
    end_ns: u64,
    lat: &mut Histogram<u64>,
) -> u64 {
    let mut releases = 0u64;
    let mut order = 0u64;
    while let Some(t) = sched.peek_ns() {
        if t >= end_ns || sh.stop.load(Ordering::Relaxed) {
            break;
        }
        sleep_until_realtime(t);
        let woke = now_ns();
        let _ = lat.record(woke.saturating_sub(t).max(1));
        // Send everything of this ECU that is due by now (a late wake-up releases a batch),
        // but stop by the wall clock END_GRACE_NS after the end of the run: a release due
        // before the end still goes out after a late wake-up, while a sender that cannot
        // keep up (a 1 us period) does not work through its backlog after the run.
        while let Some(next) = sched.peek_ns() {
            if next > woke || next >= end_ns {
                break;
            }
            if now_ns() >= end_ns + END_GRACE_NS || sh.stop.load(Ordering::Relaxed) {
                return releases;
            }
            let Some(rel) = sched.next_release() else {
                break;
            };
            releases += 1;
            let m = &sh.plan.messages[rel.msg];
            let Some(frame) = build_frame(m, rel.seq, rel.nominal_ns) else {
                continue;
            };
            match (bus, sock) {
                (Some(bus), _) => {
                    order += 1;
                    let mut q = bus.queue.lock().unwrap_or_else(|p| p.into_inner());
                    q.push(Reverse((m.key, order, rel.msg, FrameBox(frame))));
                    let len = u64::try_from(q.len()).unwrap_or(u64::MAX);
                    sh.queue_max.fetch_max(len, Ordering::Relaxed);
                    drop(q);
                    bus.ready.notify_one();
                }
                (None, Some(sock)) => {
                    let keep = || !sh.stop.load(Ordering::Relaxed);
                    match sock.write_backoff(&frame, keep) {
                        Ok(n) => {
                            sh.enobufs.fetch_add(n, Ordering::Relaxed);
                            sh.sent[rel.msg].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => sh.tx_error(&e),
                    }
                }
                (None, None) => {}
            }
        }
    }
    releases
}

/// The paced bus: one frame at a time. When the bus falls free, arbitration picks the
/// highest-priority (lowest key) frame waiting; the frame occupies the bus for its
/// worst-case time C and is written at the end of that slot, when a real receiver would
/// have it, so measured latency covers queuing, blocking and transmission like R_m.
fn bus_loop(sh: &Shared, bus: &Bus, sock: &CanSock) {
    let mut line = PacedBus::default();
    loop {
        {
            let mut q = bus.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.is_empty() {
                if sh.senders_done.load(Ordering::Acquire) {
                    return;
                }
                q = bus
                    .ready
                    .wait_timeout(q, Duration::from_millis(20))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        let now = now_ns();
        // Start of frame: arbitration among everything released by then.
        let start = line.start(now);
        if start > now {
            sleep_until_realtime(start);
        }
        let Some(Reverse((_, _, msg, FrameBox(frame)))) =
            bus.queue.lock().unwrap_or_else(|p| p.into_inner()).pop()
        else {
            continue;
        };
        let end = line.occupy(start, sh.plan.messages[msg].frame_ns);
        sleep_until_realtime(end);
        let keep = || !sh.stop.load(Ordering::Relaxed);
        match sock.write_backoff(&frame, keep) {
            Ok(n) => {
                sh.enobufs.fetch_add(n, Ordering::Relaxed);
                sh.sent[msg].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => sh.tx_error(&e),
        }
        // A slow write (ENOBUFS) moves the next start out through `now` above, never into
        // a catch-up burst.
    }
}

/// The paced bus's clock: when the line falls free.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacedBus {
    free_at: u64,
}

impl PacedBus {
    /// When the next frame can start if one is ready at `now`.
    pub fn start(&self, now: u64) -> u64 {
        self.free_at.max(now)
    }

    /// Occupy the line from `start` for `c_ns`; returns the end of the frame.
    pub fn occupy(&mut self, start: u64, c_ns: u64) -> u64 {
        self.free_at = start + c_ns;
        self.free_at
    }
}

/// What the paced bus does with a set of releases `(time, key, C)`, without a clock:
/// returns each release's end-of-frame time, in input order. The same arbitration as
/// `bus_loop` (lowest key among those released when the line falls free).
pub fn simulate_paced(releases: &[(u64, u64, u64)]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..releases.len()).collect();
    order.sort_by_key(|&i| releases[i].0);
    let mut line = PacedBus::default();
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut ends = vec![0; releases.len()];
    let mut next = 0;
    let mut now = 0;
    while next < order.len() || !ready.is_empty() {
        if ready.is_empty() {
            now = now.max(releases[order[next]].0);
        }
        let start = line.start(now);
        while next < order.len() && releases[order[next]].0 <= start {
            let i = order[next];
            ready.push(Reverse((releases[i].1, i)));
            next += 1;
        }
        let Some(Reverse((_, i))) = ready.pop() else {
            continue;
        };
        ends[i] = line.occupy(start, releases[i].2);
        now = ends[i];
    }
    ends
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
    let d = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let n: u64 = plan
        .messages
        .iter()
        .map(|m| d / m.period_ns.max(1) + 2)
        .sum();
    usize::try_from(n.saturating_mul(2).saturating_add(4096))
        .unwrap_or(4096)
        .min(LOG_CAP_MAX)
}

/// Run the simulation. `stop` ends it early (Ctrl-C); the result is then partial.
pub fn run(can: &Can, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunOutcome, RunError> {
    let plan = Plan::from_can(can)?;
    let fd = plan.has_fd();
    transport::check_af_can()?;
    if fd {
        transport::check_fd_mtu(&opts.tx)?;
        transport::check_fd_mtu(&opts.rx)?;
    }
    let rx_sock = CanSock::open_rx(&opts.rx, fd)?;
    // One TX socket per ECU (unpaced) or one for the bus thread (paced).
    let mut ecu_socks: Vec<Option<CanSock>> = Vec::new();
    for _ in &plan.ecus {
        ecu_socks.push(if opts.pace {
            None
        } else {
            Some(CanSock::open(&opts.tx, fd)?)
        });
    }
    let bus_sock = if opts.pace {
        Some(CanSock::open(&opts.tx, fd)?)
    } else {
        None
    };
    let _ = nix::sys::mman::mlockall(
        nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE,
    );

    let n_msgs = plan.messages.len();
    let log_cap = estimate_frames(&plan, opts.duration);
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        sent: (0..n_msgs).map(|_| AtomicU64::new(0)).collect(),
        enobufs: AtomicU64::new(0),
        tx_errors: AtomicU64::new(0),
        tx_error_first: Mutex::new(None),
        stop: stop.clone(),
        senders_done: AtomicBool::new(false),
        rx_stop: AtomicBool::new(false),
        queue_max: AtomicU64::new(0),
    });
    let bus = Arc::new(Bus {
        queue: Mutex::new(BinaryHeap::with_capacity(n_msgs * 4 + 16)),
        ready: Condvar::new(),
    });
    let lead = u64::try_from(opts.lead.as_nanos()).unwrap_or(500_000_000);
    let start_ns = (now_ns() + lead) / 1_000_000 * 1_000_000;
    let end_ns = start_ns + u64::try_from(opts.duration.as_nanos()).unwrap_or(u64::MAX / 4);
    let n_threads = plan.ecus.len() + 1 + usize::from(opts.pace) + 1;
    let barrier = Arc::new(Barrier::new(n_threads));
    let max_prio = can.ecus.iter().map(|e| e.priority).max().unwrap_or(80);
    let allowed = sched::get_affinity(0).unwrap_or_default();
    let (helper_cpus, rx_prio) = helper_placement(&allowed, &can.ecus);

    // Receiver.
    let rx = {
        let sh = shared.clone();
        let b = barrier.clone();
        let (prio, cpus) = (rx_prio, helper_cpus.clone());
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .name("can/rx".into())
            .spawn(move || {
                let _ = setup_thread(cpus, prio);
                b.wait();
                rx_loop(&rx_sock, &sh, start_ns, log_cap)
            })
            .map_err(|source| RunError::Thread {
                name: "can/rx".into(),
                source,
            })?
    };
    // Bus.
    let bus_thread = match bus_sock {
        Some(sock) => {
            let sh = shared.clone();
            let b = barrier.clone();
            let bus = bus.clone();
            let (prio, cpus) = (max_prio, helper_cpus.clone());
            Some(
                thread::Builder::new()
                    .stack_size(THREAD_STACK)
                    .name("can/bus".into())
                    .spawn(move || {
                        let _ = setup_thread(cpus, prio);
                        b.wait();
                        bus_loop(&sh, &bus, &sock);
                    })
                    .map_err(|source| RunError::Thread {
                        name: "can/bus".into(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    // ECUs.
    let mut ecu_threads = Vec::new();
    for (i, (ecu, sock)) in can.ecus.iter().zip(ecu_socks).enumerate() {
        let sh = shared.clone();
        let b = barrier.clone();
        let bus = bus.clone();
        let pace = opts.pace;
        let sched = EcuSchedule::new(&plan, i, start_ns);
        let (cpu, prio, name) = (ecu.cpu, ecu.priority, ecu.name.clone());
        let tname = format!("ecu/{}", ecu.name);
        let h = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .name(tname.chars().take(15).collect())
            .spawn(move || {
                let (tid, sched_now, cpus, warnings) =
                    setup_thread(cpu.map(|c| CpuSet::from_cpus([c])), prio);
                let mut lat = hist::new_ns();
                b.wait();
                let releases = ecu_loop(
                    &sh,
                    pace.then_some(&*bus),
                    sock.as_ref(),
                    sched,
                    end_ns,
                    &mut lat,
                );
                EcuReport {
                    name,
                    tid,
                    sched: sched_now,
                    cpus,
                    warnings,
                    releases,
                    release_latency: HistSummary::from_hist(&lat),
                }
            })
            .map_err(|source| RunError::Thread {
                name: tname,
                source,
            })?;
        ecu_threads.push(h);
    }
    barrier.wait();

    let ecus: Vec<EcuReport> = ecu_threads
        .into_iter()
        .filter_map(|h| h.join().ok())
        .collect();
    shared.senders_done.store(true, Ordering::Release);
    bus.ready.notify_all();
    if let Some(h) = bus_thread {
        let _ = h.join();
    }
    // Drain: frames in flight reach the receiver (cut short by a second stop request).
    let drain_end = now_ns() + u64::try_from(opts.drain.as_nanos()).unwrap_or(0);
    while now_ns() < drain_end {
        thread::sleep(Duration::from_millis(10));
    }
    shared.rx_stop.store(true, Ordering::Release);
    let rxr = rx.join().unwrap_or_else(|_| RxResult {
        stats: plan.messages.iter().map(|_| MsgStats::default()).collect(),
        log: Vec::new(),
        log_dropped: 0,
        bus_errors: vec!["receiver thread panicked".into()],
        foreign: 0,
        bus_ns: 0,
        kernel_ts: false,
        error: None,
    });
    let actual_end = now_ns().min(end_ns).max(start_ns + 1);
    let elapsed_ns = actual_end - start_ns;

    let tau = timing::tau_bit_ns(can.bitrate);
    let errors = (can.error_rate_per_s > 0.0).then_some(ErrorModel {
        rate_per_s: can.error_rate_per_s,
    });
    let rta = rta::response_times(&plan.rta_messages(), tau, errors);
    let sent: Vec<u64> = shared
        .sent
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let messages = plan
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| rxr.stats[i].record(m, sent[i], rta[i].wcrt_ns))
        .collect();
    let mut bus_errors = rxr.bus_errors.clone();
    if let Some(e) = &rxr.error {
        bus_errors.push(e.clone());
    }
    let tx_errors = shared.tx_errors.load(Ordering::Relaxed);
    if tx_errors > 0 {
        let first = shared
            .tx_error_first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        bus_errors.push(format!(
            "{tx_errors} x transmit failed on {}: {first}",
            opts.tx
        ));
    }
    let partial = stop.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let measured = rxr.bus_ns as f64 / elapsed_ns as f64 * 100.0;
    let record = CanRecord {
        tx: opts.tx.clone(),
        rx: opts.rx.clone(),
        bitrate: can.bitrate,
        data_bitrate: can.data_bitrate,
        paced: opts.pace,
        elapsed_s: timing::ns_to_ms(elapsed_ns) / 1000.0,
        bus_load_analytic_pct: plan.bus_load_pct(),
        bus_load_measured_pct: measured,
        tx_enobufs: shared.enobufs.load(Ordering::Relaxed),
        bus_errors,
        timestamp_source: if rxr.kernel_ts { "kernel" } else { "user" }.to_string(),
        messages,
        partial,
        role: "both".into(),
        time_base: record::TimeBase::default(),
    };
    let tx = TxReport {
        paced: opts.pace,
        start_ns,
        ecus,
        sent: plan
            .messages
            .iter()
            .zip(&sent)
            .map(|(m, n)| (crate::schedule::id_text(m.id, m.spec.extended), *n))
            .collect(),
        tx_enobufs: record.tx_enobufs,
        bus_queue_max: shared.queue_max.load(Ordering::Relaxed),
        foreign_frames: rxr.foreign,
        log_dropped: rxr.log_dropped,
    };
    let log = canlog::render(&rxr.log, &opts.rx);
    Ok(RunOutcome { record, tx, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_payload_and_format() {
        let p = profiles::load("canfd").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        for m in &plan.messages {
            let f = build_frame(m, 7, 1_700_000_000_000_000_123).unwrap();
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

    /// The paced bus reproduces the worst case of Davis et al. 2007's three-message example
    /// (see `timing::tests::davis_2007_three_message_example`): released together at 0,
    /// C's second instance (released at 3.5 ms) ends at 7 ms, a response of 3.5 ms, exactly
    /// the analysis' R_C.
    #[test]
    fn paced_bus_arbitrates_like_the_analysis() {
        let ms = 1_000_000u64;
        let rel = [
            (0, 1, ms),          // A0
            (5 * ms / 2, 1, ms), // A1
            (5 * ms, 1, ms),     // A2
            (0, 2, ms),          // B0
            (7 * ms / 2, 2, ms), // B1
            (0, 3, ms),          // C0
            (7 * ms / 2, 3, ms), // C1
        ];
        let ends = simulate_paced(&rel);
        assert_eq!(
            ends,
            vec![ms, 4 * ms, 6 * ms, 2 * ms, 5 * ms, 3 * ms, 7 * ms]
        );
        assert_eq!(ends[6] - rel[6].0, 7 * ms / 2);
        // An idle line starts a lone frame at its release.
        assert_eq!(simulate_paced(&[(10 * ms, 5, ms)]), vec![11 * ms]);
    }

    /// The receive path on built frames: latency from the payload, a 3 s latency (beyond
    /// the 2.1 s a 32-bit stamp spans) kept exact through the schedule, short payloads
    /// timed from the schedule, foreign frames counted apart.
    #[test]
    fn receive_path_accounts_frames() {
        let p = profiles::load("lab").unwrap().profile;
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let index = message_index(&plan);
        let mut stats: Vec<MsgStats> = plan.messages.iter().map(|_| MsgStats::default()).collect();
        let start = 1_700_000_000_000_000_000u64;
        let es = &plan.messages[0];
        for (seq, lat) in [(0u64, 400_000u64), (1, 3_000_000_000)] {
            let rel = es.nominal_release(start, seq);
            let f = build_frame(es, seq, rel).unwrap();
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
    fn absolute_sleep_reaches_its_deadline() {
        let t = now_ns() + 2_000_000;
        sleep_until_realtime(t);
        assert!(now_ns() >= t);
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
}
