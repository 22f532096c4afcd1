//! Where a measurement thread hands its interval accumulators to the reporting thread at
//! a checkpoint (the probe's histogram and statistics, oslat's gaps): the reporting
//! thread sets `want` on every thread's handoff; after its next sample a thread swaps its
//! accumulators into the spare (`try_lock`: the loop never waits, it tries again after
//! its next sample) and clears `want`; once all have answered (or one finished) the
//! reporting thread takes what each left. No allocation and no blocking in the loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// One thread's handoff: the request and the spare it swaps into.
#[derive(Debug)]
pub(crate) struct Handoff<S> {
    want: AtomicBool,
    slot: Mutex<Slot<S>>,
}

#[derive(Debug)]
struct Slot<S> {
    data: S,
    filled: bool,
}

impl<S> Handoff<S> {
    pub(crate) fn new(spare: S) -> Self {
        Handoff {
            want: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                data: spare,
                filled: false,
            }),
        }
    }

    /// The loop's side: when asked, let `swap` move the interval into the spare. Returns
    /// whether it did (false: not asked, or the reporting thread holds the slot).
    #[inline]
    pub(crate) fn offer(&self, swap: impl FnOnce(&mut S)) -> bool {
        if !self.want.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut s) = self.slot.try_lock() else {
            return false;
        };
        swap(&mut s.data);
        s.filled = true;
        self.want.store(false, Ordering::SeqCst);
        true
    }

    /// The reporting thread's side: `take` what the loop left since the last take, if it
    /// left anything.
    pub(crate) fn take(&self, take: impl FnOnce(&mut S)) {
        if let Ok(mut s) = self.slot.lock() {
            if std::mem::take(&mut s.filled) {
                take(&mut s.data);
            }
        }
    }
}

/// Ask every thread for its interval.
pub(crate) fn request<S>(all: &[Handoff<S>]) {
    all.iter()
        .for_each(|h| h.want.store(true, Ordering::SeqCst));
}

/// Fold an interval histogram a thread handed over into its running total and empty it
/// for the next swap. Returns the interval's max (0 when it is empty).
pub(crate) fn fold(total: &mut Histogram<u64>, interval: &mut Histogram<u64>) -> u64 {
    let max = if interval.is_empty() {
        0
    } else {
        interval.max()
    };
    let _ = total.add(&*interval);
    interval.reset();
    max
}

/// Whether every thread has answered the request.
pub(crate) fn answered<S>(all: &[Handoff<S>]) -> bool {
    all.iter().all(|h| !h.want.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_hands_over_only_when_asked_and_once() {
        let h = [Handoff::new(0u32)];
        assert!(!h[0].offer(|s| *s = 7), "not asked");
        request(&h);
        assert!(!answered(&h));
        assert!(h[0].offer(|s| *s = 7));
        assert!(answered(&h));
        let mut got = Vec::new();
        h[0].take(|s| got.push(*s));
        h[0].take(|s| got.push(*s));
        assert_eq!(got, [7], "taken once");
    }

    #[test]
    fn a_fold_adds_the_interval_to_the_total_and_empties_it() {
        let (mut total, mut interval) = (record::hist::new_ns(), record::hist::new_ns());
        assert_eq!(fold(&mut total, &mut interval), 0, "empty interval");
        interval.record(5000).unwrap();
        interval.record(7000).unwrap();
        let max = fold(&mut total, &mut interval);
        assert_eq!(max, interval.highest_equivalent(7000));
        assert_eq!((total.len(), interval.len()), (2, 0));
    }
}
