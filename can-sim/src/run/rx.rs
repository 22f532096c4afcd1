//! The receiving side of a run: the receive loop (`can/rx`), which timestamps in the kernel,
//! keeps the candump log and accounts every frame into its message's statistics: which
//! instance it is (test payload, E2E counter, or the schedule), its latency, jitter and
//! E2E check.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use socketcan::CanAnyFrame;

use super::Shared;
use crate::canlog::{self, Logged};
use crate::clock::RoundTrips;
use crate::metrics::MsgStats;
use crate::payload;
use crate::schedule::{MessagePlan, Plan};
use crate::timing;
use crate::transport::{self, CanSock, RxBatch};

/// What the receiver saw.
pub(super) struct RxResult {
    pub(super) stats: Vec<MsgStats>,
    pub(super) log: Vec<Logged>,
    pub(super) log_dropped: u64,
    pub(super) bus_errors: Vec<String>,
    pub(super) foreign: u64,
    pub(super) bus_ns: u64,
    pub(super) kernel_ts: bool,
    pub(super) error: Option<String>,
    /// A round-trip run's echoes (None: frames are received one way).
    pub(super) rtt: Option<RoundTrips>,
}

impl RxResult {
    /// Nothing received (no receiver in this role, or it failed).
    pub(super) fn empty(plan: &Plan, why: Option<&str>) -> RxResult {
        RxResult {
            stats: plan.messages.iter().map(MsgStats::new).collect(),
            log: Vec::new(),
            log_dropped: 0,
            bus_errors: why.map(|w| vec![w.to_string()]).unwrap_or_default(),
            foreign: 0,
            bus_ns: 0,
            kernel_ts: why.is_none(),
            error: None,
            rtt: None,
        }
    }
}

/// How the receiver takes frames: one way (`clock_offset_ns`, receiver clock - sender
/// clock, taken off every timestamp before it is compared with a release), or as the
/// echoes of a round trip (the reply ids, [`super::echo::reply_index`]; the matrix's own
/// ids are this process's frames seen through the loopback).
pub(super) enum RxMode {
    OneWay { clock_offset_ns: i64 },
    Echoes(HashMap<(u32, bool), usize>),
}

/// The receive loop, until `rx_stop`.
pub(super) fn rx_loop(sock: &CanSock, sh: &Shared, log_cap: usize, mode: RxMode) -> RxResult {
    let plan = &sh.plan;
    let (index, own, clock_offset_ns) = match mode {
        RxMode::OneWay { clock_offset_ns } => (message_index(plan), None, clock_offset_ns),
        RxMode::Echoes(replies) => (replies, Some(message_index(plan)), 0),
    };
    let mut r = RxResult::empty(plan, None);
    r.log = Vec::with_capacity(log_cap);
    r.rtt = own.is_some().then(RoundTrips::default);
    let mut err_counts: BTreeMap<String, u64> = BTreeMap::new();
    // One recvmmsg(2) takes every frame queued (up to RX_BATCH), not one system call each.
    let mut batch = Box::<RxBatch>::default();
    'run: while !sh.rx_stop.load(Ordering::Relaxed) {
        if let Err(e) = sock.recv_batch(&mut batch) {
            r.error = Some(format!("receive failed: {e}"));
            break;
        }
        let mut newest = 0;
        for got in batch.frames() {
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    r.error = Some(format!("receive failed: {e}"));
                    break 'run;
                }
            };
            newest = got.ts_ns;
            r.kernel_ts &= got.kernel;
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
            let ts = got
                .ts_ns
                .saturating_add_signed(clock_offset_ns.saturating_neg());
            if let Some(own) = &own {
                if own.contains_key(&canlog::frame_id(&got.frame)) {
                    r.bus_ns += bus_ns(plan, &got.frame);
                    continue;
                }
            }
            let at = Rx {
                ts_ns: ts,
                rtt: r.rtt.as_mut(),
            };
            match account_at(plan, &index, &mut r.stats, sh.start_ns, &got.frame, at) {
                Accounted::Ours(ns) => r.bus_ns += ns,
                Accounted::Foreign(ns) => {
                    r.foreign += 1;
                    r.bus_ns += ns;
                }
            }
        }
        if newest > 0 {
            // For an idle drain (`--drain-idle`): when the last frame came.
            sh.last_rx_ns.store(newest, Ordering::Relaxed);
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

/// The instance (sequence number) and nominal release of a received frame of `m`.
fn instance(
    m: &MessagePlan,
    st: &mut MsgStats,
    start_ns: u64,
    data: &[u8],
    ts_ns: u64,
) -> (Option<u64>, Option<u64>) {
    if m.test_payload() {
        let d = payload::decode(data, st.next_seq(), ts_ns);
        // The schedule knows each instance's nominal release: a truncated stamp is widened
        // against it rather than against the RX time, so latencies beyond 2.1 s (a sender
        // far behind) stay exact; a full 64-bit stamp is used as sent.
        let nominal = d.seq.map(|s| m.nominal_release(start_ns, s));
        let release = match (d.release_ns, nominal) {
            (Some(r), Some(n)) if data.len() < 12 => Some(payload::widen(r, 32, n)),
            (Some(r), _) => Some(r),
            (None, n) => n,
        };
        return (d.seq, release);
    }
    let next = st.next_seq();
    let counter = match (&m.e2e, st.e2e.as_mut()) {
        (Some(spec), Some(state)) => {
            let since = start_ns + m.offset_ns;
            state
                .on_frame(spec, data, ts_ns, since)
                .1
                .map(|c| payload::widen_mod(u64::from(c), spec.modulus(), next))
        }
        _ => None,
    };
    let seq = counter.unwrap_or_else(|| instance_in_order(m, start_ns, next, ts_ns));
    (Some(seq), Some(m.nominal_release(start_ns, seq)))
}

/// The instance of a frame that carries no sequence number (or a bad E2E CRC). A
/// message's frames arrive in order (one sender, FIFO per message on the bus), so it is
/// the next one expected, unless that would mean a latency beyond period + deadline:
/// then frames were lost, and it is the instance released last before the reception.
pub fn instance_in_order(m: &MessagePlan, start_ns: u64, next: u64, rx_ns: u64) -> u64 {
    let late = rx_ns.saturating_sub(m.nominal_release(start_ns, next));
    if late <= m.period_ns + m.deadline_ns {
        next
    } else {
        m.instance_at(start_ns, rx_ns).max(next)
    }
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
    let at = Rx { ts_ns, rtt: None };
    account_at(plan, index, stats, start_ns, frame, at)
}

/// When a frame came, and whether it is the echo of a round trip.
pub struct Rx<'a> {
    /// Receive time on the sender's clock, ns.
    pub ts_ns: u64,
    /// A round trip's bookkeeping: the frame is an echo, its latency half the round trip.
    pub rtt: Option<&'a mut RoundTrips>,
}

/// [`account`] for a frame received at `at`: an echo (`at.rtt`) is timed from its release
/// to its return, and accounted as received at release + RTT/2 (the far side's reception,
/// estimated).
pub fn account_at(
    plan: &Plan,
    index: &HashMap<(u32, bool), usize>,
    stats: &mut [MsgStats],
    start_ns: u64,
    frame: &CanAnyFrame,
    at: Rx<'_>,
) -> Accounted {
    let data = canlog::frame_data(frame);
    let Some(&i) = index.get(&canlog::frame_id(frame)) else {
        return Accounted::Foreign(bus_ns(plan, frame));
    };
    let m = &plan.messages[i];
    let st = &mut stats[i];
    let (seq, release) = instance(m, st, start_ns, data, at.ts_ns);
    let ts = match (at.rtt, release) {
        (Some(book), Some(rel)) => book.on_echo(rel, at.ts_ns).unwrap_or(at.ts_ns),
        _ => at.ts_ns,
    };
    st.on_frame(m, seq, release, ts);
    Accounted::Ours(m.frame_ns)
}

/// Worst-case bus time of a frame not accounted as one of the matrix, ns.
fn bus_ns(plan: &Plan, frame: &CanAnyFrame) -> u64 {
    let (_, ext) = canlog::frame_id(frame);
    let fd = matches!(frame, CanAnyFrame::Fd(_));
    let len = u8::try_from(canlog::frame_data(frame).len()).unwrap_or(64);
    let bits = timing::can_frame_bits(fd, ext, true, true, len);
    timing::bits_to_ns(u64::from(bits), plan.bitrate)
}

/// (id, extended) -> message index.
pub fn message_index(plan: &Plan) -> HashMap<(u32, bool), usize> {
    plan.messages
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.id, m.spec.extended), i))
        .collect()
}
