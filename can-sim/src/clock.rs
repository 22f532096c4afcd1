//! The receiver's time base when sender and receiver run on two clocks (a restbus on the
//! host, the ECU in a guest): `can-sim run --role receiver --clock-dir DIR` measures the
//! offset through `record::clocksync` (an NTP-style file exchange, `rt-guest clock-echo
//! DIR` answering on the sender's side) before the run, applies it to every receive time,
//! and measures again after it, so the recorded uncertainty also covers the drift during
//! the run.
//!
//! The exchange runs from the receiver, so it measures sender minus receiver; can.json
//! records receiver minus sender ([`record::TimeBase::offset_ns`]): the sign flips here.

use record::TimeBase;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(offset_ns: i64, uncertainty_ns: u64) -> TimeBase {
        TimeBase {
            method: METHOD.into(),
            offset_ns,
            uncertainty_ns,
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
}
