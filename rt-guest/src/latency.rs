//! The latency math of the probe, as plain functions and fixed-size accumulators: a
//! wakeup's latency and missed periods, exact min/avg/max, and cyclictest-style
//! microsecond buckets. Nothing here allocates after construction, so it is used as is
//! in the measurement loop (the kernel interface is `clock_nanosleep(2)` with
//! `TIMER_ABSTIME` on `CLOCK_MONOTONIC`, wrapped in `rt_sys::rt`).

use hdrhistogram::Histogram;

/// What one wakeup measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// Wakeup time minus programmed time, ns. Negative means the thread woke early
    /// (a clock or kernel bug): counted as out of range, never wrapped.
    pub latency_ns: i64,
    /// Whole periods that passed without a wakeup (the thread woke more than one period
    /// late): `floor(latency / interval)` when `latency > interval`, else 0.
    pub missed: u64,
    /// The programmed time to continue from: moved past the missed periods, so that the
    /// next period is the first one after `now` (never skipped silently: `missed` counts them).
    pub next_ns: u64,
}

/// Classify a wakeup at `now_ns` for a period programmed at `next_ns`.
pub fn classify(next_ns: u64, now_ns: u64, interval_ns: u64) -> Wakeup {
    let diff = i128::from(now_ns) - i128::from(next_ns);
    let latency_ns = i64::try_from(diff).unwrap_or(if diff > 0 { i64::MAX } else { i64::MIN });
    let interval = interval_ns.max(1);
    let (missed, next_ns) = match u64::try_from(latency_ns) {
        Ok(lat) if lat > interval => {
            let missed = lat / interval;
            (
                missed,
                next_ns.saturating_add(missed.saturating_mul(interval)),
            )
        }
        _ => (0, next_ns),
    };
    Wakeup {
        latency_ns,
        missed,
        next_ns,
    }
}

/// Exact statistics of one thread's wakeups (the HDR histogram keeps the distribution
/// with 0.1 % resolution; these keep min, max and the sum to the nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Wakeups measured (including out-of-range ones).
    pub samples: u64,
    /// Wakeups recorded in the histogram (0 <= latency <= histogram range).
    pub in_range: u64,
    /// Smallest in-range latency, ns (`u64::MAX` while none).
    pub min_ns: u64,
    /// Largest non-negative latency, ns, also above the histogram range.
    pub max_ns: u64,
    /// Sum of the in-range latencies, ns.
    pub sum_ns: u128,
    /// Missed periods.
    pub missed: u64,
    /// Negative or above-range latencies.
    pub out_of_range: u64,
    /// Cycle (0-based wakeup index) of the max.
    pub max_cycle: u64,
    /// `CLOCK_REALTIME` ns when the max was measured.
    pub max_wall_ns: u64,
    /// The largest latencies with their cycle and wall time (fixed size).
    pub worst: Worst,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            samples: 0,
            in_range: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
            missed: 0,
            out_of_range: 0,
            max_cycle: 0,
            max_wall_ns: 0,
            worst: Worst::default(),
        }
    }
}

impl Stats {
    /// Account wakeup `w` of cycle `cycle` and record it in `hist`. Returns true when it
    /// is a new maximum (the caller then stores the wall time in `max_wall_ns`).
    #[inline]
    pub fn record(&mut self, w: &Wakeup, cycle: u64, hist: &mut Histogram<u64>) -> bool {
        self.samples += 1;
        self.missed += w.missed;
        let Ok(lat) = u64::try_from(w.latency_ns) else {
            self.out_of_range += 1;
            return false;
        };
        // The stated range, not the HDR's rounded-up capacity.
        if lat <= record::hist::HIGHEST_NS && hist.record(lat).is_ok() {
            self.in_range += 1;
            self.sum_ns += u128::from(lat);
            self.min_ns = self.min_ns.min(lat);
        } else {
            self.out_of_range += 1;
        }
        if lat > self.max_ns || self.samples == 1 {
            self.max_ns = lat;
            self.max_cycle = cycle;
            return true;
        }
        false
    }

    /// Mean of the in-range latencies in ns (0 when none).
    pub fn mean_ns(&self) -> f64 {
        if self.in_range == 0 {
            0.0
        } else {
            // Precision loss only beyond 2^52 ns per sample: irrelevant here.
            #[allow(clippy::cast_precision_loss)]
            let m = self.sum_ns as f64 / self.in_range as f64;
            m
        }
    }

    /// Min in ns, 0 when nothing was in range.
    pub fn min_or_zero(&self) -> u64 {
        if self.min_ns == u64::MAX {
            0
        } else {
            self.min_ns
        }
    }
}

/// One of the largest latencies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spike {
    /// Latency, ns.
    pub latency_ns: u64,
    /// Cycle.
    pub cycle: u64,
    /// `CLOCK_REALTIME` read right after the wakeup, ns.
    pub wall_ns: u64,
}

/// The [`record::WORST_SAMPLES`] largest latencies, in a fixed array (the hot loop never
/// allocates): a sample takes the place of the smallest kept one when it is larger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Worst {
    spikes: [Spike; record::WORST_SAMPLES],
    len: usize,
    /// The smallest latency kept once the array is full.
    floor: u64,
}

impl Worst {
    /// Whether a latency of `latency_ns` would be kept (the caller then reads the wall
    /// clock and calls [`Worst::insert`]).
    #[inline]
    pub fn wants(&self, latency_ns: i64) -> bool {
        u64::try_from(latency_ns).is_ok_and(|l| self.len < self.spikes.len() || l > self.floor)
    }

    /// Keep `s` in place of the smallest spike when the array is full.
    #[inline]
    pub fn insert(&mut self, s: Spike) {
        if self.len < self.spikes.len() {
            self.spikes[self.len] = s;
            self.len += 1;
        } else if s.latency_ns > self.floor {
            let mut at = 0;
            for (i, x) in self.spikes.iter().enumerate() {
                if x.latency_ns < self.spikes[at].latency_ns {
                    at = i;
                }
            }
            self.spikes[at] = s;
        }
        if self.len == self.spikes.len() {
            self.floor = self.spikes.iter().map(|x| x.latency_ns).min().unwrap_or(0);
        }
    }

    /// The spikes kept, largest first (allocates: not for the loop).
    pub fn sorted(&self) -> Vec<Spike> {
        let mut v = self.spikes[..self.len].to_vec();
        v.sort_by(|a, b| b.latency_ns.cmp(&a.latency_ns).then(a.cycle.cmp(&b.cycle)));
        v
    }
}

/// cyclictest's `-h US` histogram: one bucket per microsecond (latency truncated to us,
/// as cyclictest does), overflows counted with the cycles at which they happened (at most
/// as many as there are buckets, like cyclictest). Preallocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsBuckets {
    /// Count per us bucket.
    pub counts: Box<[u64]>,
    /// Latencies at or above the last bucket (or negative).
    pub overflows: u64,
    cycles: Box<[u64]>,
    cycles_len: usize,
}

impl UsBuckets {
    /// `buckets` buckets (0 .. buckets-1 us).
    pub fn new(buckets: usize) -> Self {
        UsBuckets {
            counts: resident_zeros(buckets),
            overflows: 0,
            cycles: resident_zeros(buckets),
            cycles_len: 0,
        }
    }

    /// Record a latency in ns at cycle `cycle`.
    #[inline]
    pub fn record(&mut self, latency_ns: i64, cycle: u64) {
        let bucket = u64::try_from(latency_ns)
            .ok()
            .and_then(|ns| usize::try_from(ns / 1000).ok())
            .filter(|b| *b < self.counts.len());
        match bucket {
            Some(b) => self.counts[b] += 1,
            None => {
                self.overflows += 1;
                if self.cycles_len < self.cycles.len() {
                    self.cycles[self.cycles_len] = cycle;
                    self.cycles_len += 1;
                }
            }
        }
    }

    /// Samples inside the buckets.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The overflow cycles kept (the first `buckets` ones).
    pub fn overflow_cycles(&self) -> &[u64] {
        &self.cycles[..self.cycles_len]
    }
}

/// `n` zeros, every page written once so resident before a real-time loop counts into
/// them (see `record::hist::new_ns`: zeroed allocations may be untouched pages).
pub fn resident_zeros(n: usize) -> Box<[u64]> {
    let mut v = vec![0; n].into_boxed_slice();
    // Opaque to the optimiser, which would drop zero stores into calloc'd memory.
    std::hint::black_box(&mut v).fill(0);
    v
}

/// ns to whole us, truncated (cyclictest's unit).
pub fn ns_to_us(ns: u64) -> u64 {
    ns / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: u64 = 1_000_000; // 1 ms

    #[test]
    fn on_time_late_and_early_wakeups() {
        let w = classify(10 * I, 10 * I + 15_000, I);
        assert_eq!(w.latency_ns, 15_000);
        assert_eq!(w.missed, 0);
        assert_eq!(w.next_ns, 10 * I);
        let early = classify(10 * I, 10 * I - 7, I);
        assert_eq!(early.latency_ns, -7);
        assert_eq!(early.missed, 0);
        // Exactly one period late: that wakeup still happened, nothing missed.
        assert_eq!(classify(10 * I, 11 * I, I).missed, 0);
    }

    #[test]
    fn missed_periods_are_counted_and_next_moves_past_now() {
        // Woke 3.5 periods late: the 3 periods in between were missed.
        let now = 10 * I + 3 * I + I / 2;
        let w = classify(10 * I, now, I);
        assert_eq!(w.latency_ns, 3_500_000);
        assert_eq!(w.missed, 3);
        assert_eq!(w.next_ns, 13 * I);
        // The following period is the first one after now.
        assert!(w.next_ns + I > now && w.next_ns <= now);
    }

    #[test]
    fn absurd_differences_saturate_instead_of_wrapping() {
        assert_eq!(classify(u64::MAX, 0, I).latency_ns, i64::MIN);
        let w = classify(0, u64::MAX, I);
        assert_eq!(w.latency_ns, i64::MAX);
        assert!(w.missed > 0);
    }

    #[test]
    fn stats_keep_exact_values_and_count_out_of_range() {
        let mut h = record::hist::new_ns();
        let mut s = Stats::default();
        let mut cycle = 0;
        let mut rec = |lat: i64, s: &mut Stats, h: &mut Histogram<u64>| {
            let w = Wakeup {
                latency_ns: lat,
                missed: 0,
                next_ns: 0,
            };
            let new_max = s.record(&w, cycle, h);
            cycle += 1;
            new_max
        };
        assert!(rec(12_345, &mut s, &mut h));
        assert!(!rec(-3, &mut s, &mut h));
        assert!(rec(123_456_789, &mut s, &mut h));
        assert!(!rec(20_001, &mut s, &mut h));
        // Above the 60 s range: out of range, but it is the honest max.
        assert!(rec(61_000_000_000, &mut s, &mut h));
        assert_eq!(s.samples, 5);
        assert_eq!(s.in_range, 3);
        assert_eq!(s.out_of_range, 2);
        assert_eq!(s.min_ns, 12_345);
        assert_eq!(s.max_ns, 61_000_000_000);
        assert_eq!(s.max_cycle, 4);
        assert_eq!(h.len(), 3);
        let mean = (12_345.0 + 123_456_789.0 + 20_001.0) / 3.0;
        assert!((s.mean_ns() - mean).abs() < 1e-6);
    }

    #[test]
    fn the_worst_samples_keep_the_largest_in_a_fixed_array() {
        let mut w = Worst::default();
        let n = record::WORST_SAMPLES as u64;
        // 100 samples rising and falling: 0, 1, ..., 49, 49, ..., 0 (x 1000 ns).
        let lat = |i: u64| if i < 50 { i } else { 99 - i } * 1000;
        for i in 0..100 {
            let l = i64::try_from(lat(i)).unwrap();
            if w.wants(l) {
                w.insert(Spike {
                    latency_ns: lat(i),
                    cycle: i,
                    wall_ns: 1_000_000 + i,
                });
            }
        }
        let s = w.sorted();
        assert_eq!(s.len() as u64, n);
        assert_eq!(
            s[0],
            Spike {
                latency_ns: 49_000,
                cycle: 49,
                wall_ns: 1_000_049
            }
        );
        assert_eq!(s[1].cycle, 50, "equal latencies: earlier cycle first");
        // The 16 largest of the samples: 49, 49, 48, 48, ..., 42, 42 us.
        assert_eq!(s.last().unwrap().latency_ns, 42_000);
        assert!(!w.wants(-5), "early wakeups are never spikes");
        assert!(!w.wants(42_000) && w.wants(42_001));
    }

    #[test]
    fn us_buckets_truncate_and_keep_overflow_cycles() {
        let mut b = UsBuckets::new(3);
        b.record(999, 0); // 0 us
        b.record(1_000, 1); // 1 us
        b.record(2_999, 2); // 2 us
        b.record(3_000, 3); // overflow
        b.record(-1, 4); // overflow
        for c in 5..10 {
            b.record(5_000_000, c);
        }
        assert_eq!(&*b.counts, &[1, 1, 1]);
        assert_eq!(b.total(), 3);
        assert_eq!(b.overflows, 7);
        // Only as many cycles as buckets are kept, as cyclictest does.
        assert_eq!(b.overflow_cycles(), &[3, 4, 5]);
        assert_eq!(ns_to_us(1_999), 1);
    }
}
