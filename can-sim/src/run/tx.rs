//! The sending side of a run: one loop per ECU thread ([`ecu_loop`]) that sleeps to each
//! release of its schedule and sends (unpaced) or queues (paced) the frame, and the paced
//! bus ([`bus_loop`]) that writes queued frames one at a time at the bitrate in
//! arbitration order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use rt_sys::rt::{realtime_ns, sleep_until_realtime};
use socketcan::CanAnyFrame;

use super::{build_frame, Shared};
use crate::schedule::EcuSchedule;
use crate::transport::{CanSock, TxBatch};

/// How long after the end of the run a late sender may still send releases due before it.
pub const END_GRACE_NS: u64 = 20_000_000;

/// A frame waiting for the paced bus: (arbitration key, order of release, message, frame).
type Queued = Reverse<(u64, u64, usize, FrameBox)>;

/// Orderable wrapper (frames are compared only by the key before them).
#[derive(Clone, Copy)]
pub(super) struct FrameBox(CanAnyFrame);
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

/// The queue of the paced bus.
pub(super) struct Bus {
    pub(super) queue: Mutex<BinaryHeap<Queued>>,
    pub(super) ready: Condvar,
}

impl Bus {
    pub(super) fn with_capacity(n: usize) -> Bus {
        Bus {
            queue: Mutex::new(BinaryHeap::with_capacity(n)),
            ready: Condvar::new(),
        }
    }
}

/// Where an ECU thread's frames go.
pub(super) enum Sink<'a> {
    /// The paced bus's queue.
    Bus(&'a Bus),
    /// Straight to a socket, frames due together in one `sendmmsg`.
    Socket(&'a CanSock, Box<TxBatch>),
}

impl Sink<'_> {
    fn send(&mut self, sh: &Shared, msg: usize, key: u64, order: &mut u64, frame: CanAnyFrame) {
        match self {
            Sink::Bus(bus) => {
                *order += 1;
                let mut q = bus.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.push(Reverse((key, *order, msg, FrameBox(frame))));
                let len = u64::try_from(q.len()).unwrap_or(u64::MAX);
                sh.queue_max.fetch_max(len, Ordering::Relaxed);
                drop(q);
                bus.ready.notify_one();
            }
            Sink::Socket(_, batch) => {
                if !batch.push(&frame, msg) {
                    self.flush(sh);
                    self.send(sh, msg, key, order, frame);
                }
            }
        }
    }

    /// Send what the batch holds.
    fn flush(&mut self, sh: &Shared) {
        if let Sink::Socket(sock, batch) = self {
            if batch.is_empty() {
                return;
            }
            let keep = || !sh.stop.load(Ordering::Relaxed);
            let n = sock.send_batch(
                batch,
                keep,
                |msg| {
                    sh.sent[msg].fetch_add(1, Ordering::Relaxed);
                },
                |e| sh.tx_error(e),
            );
            sh.enobufs.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One ECU thread's loop: sleep to each release, then send everything due (a late
/// wake-up releases a batch), until `end_ns`. Returns the releases performed; wake-up
/// lateness goes into `lat`.
pub(super) fn ecu_loop(
    sh: &Shared,
    sink: &mut Sink,
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
        let woke = realtime_ns();
        let _ = lat.record(woke.saturating_sub(t).max(1));
        // Send everything due by now, but stop by the wall clock END_GRACE_NS after the
        // end: a release due before the end still goes out after a late wake-up, while a
        // sender that cannot keep up (a 1 us period) does not work through its backlog.
        let mut due = 0u64;
        while let Some(next) = sched.peek_ns() {
            if next > woke || next >= end_ns {
                break;
            }
            // The clock is read once per batch of frames due together.
            if due % (crate::transport::BATCH as u64) == 0
                && (realtime_ns() >= end_ns + END_GRACE_NS || sh.stop.load(Ordering::Relaxed))
            {
                sink.flush(sh);
                return releases;
            }
            let Some(rel) = sched.next_release() else {
                break;
            };
            releases += 1;
            due += 1;
            let m = &sh.plan.messages[rel.msg];
            if let Some(frame) = build_frame(m, rel.seq, rel.nominal_ns, sh.start_ns) {
                sink.send(sh, rel.msg, m.key, &mut order, frame);
            }
        }
        sink.flush(sh);
    }
    releases
}

/// The paced bus: one frame at a time. When the bus falls free, arbitration picks the
/// highest-priority (lowest key) frame waiting; the frame occupies the bus for its
/// worst-case time C and is written at the end of that slot, when a real receiver would
/// have it, so measured latency covers queuing, blocking and transmission like R_m.
pub(super) fn bus_loop(sh: &Shared, bus: &Bus, sock: &CanSock) {
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
        let now = realtime_ns();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paced bus reproduces the worst case of Davis et al. 2007's three-message example
    /// (see `rta::tests::davis_2007_three_message_example`): released together at 0, C's
    /// second instance (released at 3.5 ms) ends at 7 ms, a response of 3.5 ms, exactly
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
}
