//! The receiver's time base when sender and receiver run on two clocks (a restbus on the
//! host, the ECU in a guest): `can-sim run --role receiver --clock-dir DIR` measures the
//! offset through `record::clocksync` (an NTP-style file exchange, `rt-guest clock-echo
//! DIR` answering on the sender's side) before the run, applies it to every receive time,
//! and measures again after it, so the recorded uncertainty also covers the drift during
//! the run.
//!
//! The exchange runs from the receiver, so it measures sender minus receiver; can.json
//! records receiver minus sender ([`record::TimeBase::offset_ns`]): the sign flips here.
//!
//! The other time base needs no second clock: `can-sim run --role round-trip` sends the
//! matrix and receives each frame back from a `--role echo` on the far side ([`RoundTrips`]
//! keeps the round trips), so every one-way latency lies in 0..=RTT on the sender's clock
//! and is recorded as RTT/2, the time base `round_trip_echo` with RTT/2 as uncertainty.

use hdrhistogram::Histogram;
use record::hist;
use record::{RttStats, TimeBase};

/// A duration in ns, saturated at `u64::MAX / 4` (585 years / 4: never reached, and
/// still safe to add to a time since the epoch).
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).map_or(u64::MAX / 4, |n| n.min(u64::MAX / 4))
}

/// The method recorded in can.json for offsets measured by the file exchange.
pub const METHOD: &str = record::clocksync::METHOD;

/// Rounds of each exchange (the one with the shortest round trip counts; each costs a
/// round trip through the shared directory, up to a second through 9p under nested TCG).
pub const ROUNDS: u32 = 8;

/// The receiver's time base from an exchange run by the receiver (`measured`: sender
/// minus receiver).
pub fn receiver_base(measured: &TimeBase) -> TimeBase {
    TimeBase {
        method: METHOD.into(),
        offset_ns: measured.offset_ns.saturating_neg(),
        uncertainty_ns: measured.uncertainty_ns,
        rtt: None,
    }
}

/// The time base to record after the run: `applied` (the offset taken off every receive
/// time, measured before) with an uncertainty that also covers `after` (measured after
/// the run), so a drift of the clocks during the run stays inside the bound. With no
/// later measurement, `applied` as it is.
pub fn recorded(applied: &TimeBase, after: Option<&TimeBase>) -> TimeBase {
    let Some(after) = after else {
        return applied.clone();
    };
    let drift = (i128::from(after.offset_ns) - i128::from(applied.offset_ns)).unsigned_abs();
    let late = drift.saturating_add(u128::from(after.uncertainty_ns));
    TimeBase {
        uncertainty_ns: u64::try_from(late)
            .unwrap_or(u64::MAX)
            .max(applied.uncertainty_ns),
        ..applied.clone()
    }
}

/// A sender-clock time (ns) as the receiver's clock reads it (`offset_ns`: receiver minus
/// sender).
pub fn to_receiver(sender_ns: u64, offset_ns: i64) -> u64 {
    sender_ns.saturating_add_signed(offset_ns)
}

/// A receiver-clock time (ns) on the sender's clock.
pub fn to_sender(receiver_ns: u64, offset_ns: i64) -> u64 {
    receiver_ns.saturating_add_signed(offset_ns.saturating_neg())
}

/// The method recorded in can.json for latencies estimated as half an echo's round trip.
pub const ROUND_TRIP: &str = "round_trip_echo";

/// The round trips of a `--role round-trip` run, frame by frame (fed by the receive loop:
/// no allocation per frame).
#[derive(Debug, Clone)]
pub struct RoundTrips {
    rtt: Histogram<u64>,
    min_ns: u64,
    max_ns: u64,
    /// Echoes received before their frame's release (a clock step), or beyond the
    /// histogram's range: not counted.
    pub out_of_range: u64,
}

impl Default for RoundTrips {
    fn default() -> Self {
        RoundTrips {
            rtt: hist::new_ns(),
            min_ns: u64::MAX,
            max_ns: 0,
            out_of_range: 0,
        }
    }
}

impl RoundTrips {
    /// The echo of a frame released at `release_ns` came back at `rx_ns` (one clock):
    /// the time the far side received it, estimated as the release plus half the round
    /// trip (the one-way latency lies in 0..=RTT). None when the echo is not usable.
    pub fn on_echo(&mut self, release_ns: u64, rx_ns: u64) -> Option<u64> {
        let rtt = rx_ns.checked_sub(release_ns)?;
        if !hist::record(&mut self.rtt, rtt.max(1)) {
            self.out_of_range += 1;
            return None;
        }
        self.min_ns = self.min_ns.min(rtt);
        self.max_ns = self.max_ns.max(rtt);
        Some(release_ns + rtt / 2)
    }

    /// Frames whose round trip was counted.
    pub fn samples(&self) -> u64 {
        self.rtt.len()
    }

    /// Min, median, p99, max (exact extremes; median and p99 from the histogram).
    pub fn stats(&self) -> RttStats {
        if self.rtt.is_empty() {
            return RttStats::default();
        }
        RttStats {
            samples: self.rtt.len(),
            min_ns: self.min_ns,
            median_ns: hist::value_at_percentile(&self.rtt, 50.0).min(self.max_ns),
            p99_ns: hist::value_at_percentile(&self.rtt, 99.0).min(self.max_ns),
            max_ns: self.max_ns,
        }
    }

    /// The time base to record: `round_trip_echo`, no offset (one clock), uncertainty
    /// half the longest round trip (rounded up), so every frame's true one-way latency
    /// lies within it of the RTT/2 recorded. With no echo back, uncertainty 0 (and no
    /// latency either).
    pub fn time_base(&self) -> TimeBase {
        let stats = self.stats();
        TimeBase {
            method: ROUND_TRIP.into(),
            offset_ns: 0,
            uncertainty_ns: stats.max_ns.div_ceil(2),
            rtt: Some(stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(offset_ns: i64, uncertainty_ns: u64) -> TimeBase {
        TimeBase {
            method: METHOD.into(),
            offset_ns,
            uncertainty_ns,
            rtt: None,
        }
    }

    #[test]
    fn the_receivers_offset_is_the_exchanges_negated() {
        // The sender's clock is 3 ms ahead of the receiver's.
        let b = receiver_base(&tb(3_000_000, 40_000));
        assert_eq!(
            (b.method.as_str(), b.offset_ns),
            ("file_exchange", -3_000_000)
        );
        assert_eq!(b.uncertainty_ns, 40_000);
        // A frame released at sender time 10 ms is received 200 us later: the receiver's
        // clock reads 7.2 ms, which is 10.2 ms on the sender's clock.
        assert_eq!(to_receiver(10_000_000, b.offset_ns), 7_000_000);
        assert_eq!(to_sender(7_200_000, b.offset_ns), 10_200_000);
    }

    #[test]
    fn the_recorded_uncertainty_covers_the_drift_during_the_run() {
        let applied = tb(-3_000_000, 40_000);
        assert_eq!(recorded(&applied, None), applied);
        // 25 us of drift, measured to 30 us: 55 us off at the end.
        let r = recorded(&applied, Some(&tb(-3_025_000, 30_000)));
        assert_eq!((r.offset_ns, r.uncertainty_ns), (-3_000_000, 55_000));
        // A better end measurement never narrows what the start measurement allows.
        let r = recorded(&applied, Some(&tb(-3_000_000, 1_000)));
        assert_eq!(r.uncertainty_ns, 40_000);
    }

    #[test]
    fn round_trips_give_half_the_rtt_and_its_bound() {
        let mut r = RoundTrips::default();
        assert_eq!(r.time_base().uncertainty_ns, 0);
        assert_eq!(r.stats().samples, 0);
        let t0 = 1_700_000_000_000_000_000u64;
        // 100 frames with round trips of 1..=100 ms, one of 301 us odd (rounding up).
        for k in 1..=100u64 {
            let rel = t0 + k * 10_000_000;
            let est = r.on_echo(rel, rel + k * 1_000_000).unwrap();
            assert_eq!(est, rel + k * 500_000, "frame {k}: RTT/2 after the release");
        }
        assert_eq!(r.on_echo(t0, t0 + 301_001), Some(t0 + 150_500));
        // An echo before its release (a clock step) is not a round trip.
        assert_eq!(r.on_echo(t0 + 10, t0), None);
        let s = r.stats();
        assert_eq!((s.samples, s.min_ns, s.max_ns), (101, 301_001, 100_000_000));
        // Median and p99 within the histogram's 3 significant digits.
        assert!(s.median_ns.abs_diff(50_000_000) <= 50_000, "{s:?}");
        assert!(s.p99_ns.abs_diff(99_000_000) <= 100_000, "{s:?}");
        let tb = r.time_base();
        assert_eq!(
            (tb.method.as_str(), tb.offset_ns, tb.uncertainty_ns),
            ("round_trip_echo", 0, 50_000_000)
        );
        assert_eq!(tb.rtt, Some(s));
        // Odd maximum: the half-width rounds up, so it still covers that frame.
        let mut r = RoundTrips::default();
        r.on_echo(t0, t0 + 3);
        assert_eq!(r.time_base().uncertainty_ns, 2);
        // Beyond the histogram's 60 s: counted apart, no estimate.
        assert_eq!(r.on_echo(t0, t0 + 61_000_000_000), None);
        assert_eq!((r.out_of_range, r.samples()), (1, 1));
    }
}
