//! `probe.json` ([`ProbeRecord`]) and `can.json` ([`CanRecord`]), with the checks a reader
//! applies before believing them ([`ProbeRecord::check`], [`CanRecord::check`]): one
//! entry per CPU and per CAN id, histograms that decode and hold as many samples as the
//! counters say, and counts the elapsed time and the period allow. Every sum is checked:
//! an overflow is an error, never a wrap.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::RecordError;
use crate::hist::HistSummary;

/// Probe settings as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// Period in ns.
    pub interval_ns: u64,
    /// Policy name (`fifo`, `rr`, `other`).
    pub policy: String,
    /// Priority.
    pub priority: u32,
    /// Planned duration in seconds (None when bounded by loops).
    pub duration_s: Option<f64>,
    /// Planned loops (None when bounded by duration).
    pub loops: Option<u64>,
    /// mlockall was in force.
    pub mlock: bool,
    /// /dev/cpu_dma_latency was held at 0.
    pub dma_latency_held: bool,
    /// Clock used.
    pub clock: String,
}

/// One measurement thread's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeThread {
    /// CPU measured.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Policy actually in force (read back).
    pub policy: String,
    /// Priority actually in force.
    pub priority: u32,
    /// Wakeups measured (in the histogram plus `out_of_range`).
    pub samples: u64,
    /// Periods that passed without a wakeup (the thread woke more than a period late):
    /// counted, never skipped silently.
    pub missed_periods: u64,
    /// Values that were negative (woke before the programmed time) or above the histogram
    /// range: counted, never wrapped, not in the histogram.
    pub out_of_range: u64,
    /// Loop cycle at which the max occurred.
    pub max_at_cycle: u64,
    /// Wall time (RFC 3339) at which the max occurred.
    pub max_at: Option<String>,
    /// The largest latencies (at most [`WORST_SAMPLES`], largest first), with when they
    /// happened: what the host's view of the same moments is compared with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<ProbeSpike>,
    /// Latency distribution (wakeup - programmed time), ns.
    pub latency: HistSummary,
}

/// At most this many [`ProbeSpike`]s per thread.
pub const WORST_SAMPLES: usize = 16;

/// One of a thread's largest latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpike {
    /// Latency, ns.
    pub latency_ns: u64,
    /// Loop cycle.
    pub cycle: u64,
    /// `CLOCK_REALTIME` (of the machine that measured) read right after the late wakeup,
    /// ns since the epoch: the spike spans about `[wall_ns - latency_ns, wall_ns]`.
    pub wall_ns: u64,
}

/// `probe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRecord {
    /// Settings.
    pub settings: ProbeSettings,
    /// Per-thread results.
    pub threads: Vec<ProbeThread>,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// True when interrupted.
    pub partial: bool,
}

/// One message's reception results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanMessageRecord {
    /// Sending ECU.
    pub ecu: String,
    /// Message name.
    pub name: String,
    /// CAN id.
    pub id: u32,
    /// Extended id.
    pub extended: bool,
    /// `classic`, `fd`, `fd_brs`.
    pub kind: String,
    /// Payload length.
    pub len: u8,
    /// Period in us.
    pub period_us: u64,
    /// Deadline in us.
    pub deadline_us: u64,
    /// Frames sent (accepted by the kernel).
    pub sent: u64,
    /// Distinct frames received.
    pub received: u64,
    /// Sent but never received (sent - received, after the drain time).
    pub lost: u64,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Frames received with a lower sequence number than one already seen.
    pub reordered: u64,
    /// Receptions later than the deadline.
    pub deadline_misses: u64,
    /// Release -> kernel RX timestamp, ns.
    pub latency: HistSummary,
    /// |inter-arrival - period|, ns.
    pub jitter: HistSummary,
    /// Worst frame time on the bus (us).
    pub frame_time_us: f64,
    /// Analytic worst-case response time (us), if schedulable.
    pub wcrt_us: Option<f64>,
    /// Event-driven: `period_us` is the minimum inter-arrival time.
    #[serde(default)]
    pub sporadic: bool,
    /// Signals encoded in the payload (0: can-sim's test payload).
    #[serde(default)]
    pub signals: u32,
    /// Where the receiver took each frame's instance (for its release time): `payload`
    /// (the test payload's sequence number), `e2e_counter` or `schedule` (the order of
    /// arrival against the schedule).
    #[serde(default)]
    pub instance_from: String,
    /// E2E check outcomes, for a protected message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<E2eCounts>,
}

/// The outcomes of the receiver's E2E check of one protected message, frame by frame (the
/// statuses of AUTOSAR's E2E check), and the timeouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eCounts {
    /// E2E profile (`P01`, `P02`, `P05`, `P11`).
    pub profile: String,
    /// Counter one up from the last valid frame (or the first frame).
    pub ok: u64,
    /// Counter up by 2 ..= max delta: frames were lost, this one is accepted.
    pub ok_some_lost: u64,
    /// Counter equal to the last valid frame's.
    pub repeated: u64,
    /// Counter up by more than the max delta.
    pub wrong_sequence: u64,
    /// CRC (or data id nibble) wrong.
    pub error: u64,
    /// No valid frame within the timeout (between frames, and at the end of the run).
    pub timeout: u64,
    /// The timeout, us.
    pub timeout_us: u64,
}

impl E2eCounts {
    /// Frames whose check did not pass: error, repeated and wrong sequence.
    pub fn failed(&self) -> u64 {
        self.error
            .saturating_add(self.repeated)
            .saturating_add(self.wrong_sequence)
    }
}

/// `can.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanRecord {
    /// Sending interface.
    pub tx: String,
    /// Receiving interface.
    pub rx: String,
    /// Nominal bitrate.
    pub bitrate: u32,
    /// FD data bitrate.
    pub data_bitrate: Option<u32>,
    /// Paced at the bus rate.
    pub paced: bool,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// Analytic bus load in percent (worst-case stuffing).
    pub bus_load_analytic_pct: f64,
    /// Measured bus load in percent (received frames' bits / time).
    pub bus_load_measured_pct: f64,
    /// Transmit attempts that met a full queue (ENOBUFS), retried.
    pub tx_enobufs: u64,
    /// Error frames / controller state changes seen.
    pub bus_errors: Vec<String>,
    /// Where the kernel RX timestamps came from (`kernel` / `user`).
    pub timestamp_source: String,
    /// Per-message results.
    pub messages: Vec<CanMessageRecord>,
    /// True when interrupted.
    pub partial: bool,
    /// What this run did: `both` (send and receive, one clock), `sender` or `receiver`
    /// (the two sides of a restbus, possibly on two machines).
    #[serde(default = "role_both")]
    pub role: String,
    /// How sender and receiver times relate (latency = receive time - release time needs
    /// one clock, or a known offset).
    #[serde(default)]
    pub time_base: TimeBase,
}

fn role_both() -> String {
    "both".into()
}

/// The common time base of two clocks: a CAN run's release and receive times, or a
/// guest's and its host's `CLOCK_REALTIME` (`host-trace.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeBase {
    /// `same_clock` (one process: sender and receiver read the same CLOCK_REALTIME),
    /// `ptp_kvm` (guest clock synchronised to the host's through the ptp_kvm device),
    /// `round_trip_echo` (the far side echoes every frame back; each one-way latency lies
    /// in 0..=RTT and is recorded as RTT/2, see [`RttStats`]), `file_exchange`
    /// (NTP-style exchange through a shared directory, see `clocksync`), `synced` (both
    /// clocks synchronised by other means, uncertainty as stated by the user), or
    /// `unknown`.
    pub method: String,
    /// Receiver (guest) clock minus sender (host) clock, ns, as estimated (0 for
    /// `same_clock`).
    pub offset_ns: i64,
    /// How far the offset may be off, ns (the bound on every latency's error).
    pub uncertainty_ns: u64,
    /// The round trips a `round_trip_echo` time base rests on (None for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStats>,
}

/// Round trips of a `round_trip_echo` time base, frame by frame: nominal release on the
/// sender's clock to the kernel's receive timestamp of the echo, on the same clock. Each
/// frame's one-way latency lies in `0..=RTT`; it is recorded as RTT/2 and
/// [`TimeBase::uncertainty_ns`] is `max_ns / 2` (rounded up), the half-width that covers
/// every frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttStats {
    /// Frames whose echo came back.
    pub samples: u64,
    /// Shortest round trip, ns.
    pub min_ns: u64,
    /// Median round trip, ns.
    pub median_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Longest round trip, ns.
    pub max_ns: u64,
}

impl Default for TimeBase {
    fn default() -> Self {
        TimeBase {
            method: "same_clock".into(),
            offset_ns: 0,
            uncertainty_ns: 0,
            rtt: None,
        }
    }
}

/// `0x0C0 EngineSpeed` (`0x18FF5021 Name` for an extended id).
pub fn msg_label(m: &CanMessageRecord) -> String {
    if m.extended {
        format!("0x{:08X} {}", m.id, m.name)
    } else {
        format!("0x{:03X} {}", m.id, m.name)
    }
}

/// `a + b`, or an error naming `what` when it would overflow.
pub fn checked_sum(a: u64, b: u64, path: &Path, what: &str) -> Result<u64, RecordError> {
    a.checked_add(b).ok_or_else(|| {
        RecordError::inconsistent(path, format!("{what}: {a} + {b} overflows a 64-bit count"))
    })
}

/// How many periods of `period_ns` fit in `elapsed_s`, with room for the first and last
/// period of each of `runs` runs and 1 % for clock and start-up differences.
fn periods_allowed(elapsed_s: f64, period_ns: u64, runs: u64) -> u64 {
    #[allow(clippy::cast_precision_loss)] // periods are far below 2^52
    let p = elapsed_s * 1e9 / period_ns as f64;
    crate::floor_u64(p * 1.01) + 10 * runs.max(1)
}

fn check_elapsed(elapsed_s: f64, path: &Path) -> Result<(), RecordError> {
    if elapsed_s.is_finite() && elapsed_s >= 0.0 {
        Ok(())
    } else {
        Err(RecordError::inconsistent(
            path,
            format!("elapsed_s is {elapsed_s}"),
        ))
    }
}

/// Decode `s` and check it holds `samples` values.
fn check_hist(s: &HistSummary, path: &Path, what: &str) -> Result<(), RecordError> {
    let h = s.histogram().map_err(|source| RecordError::Histogram {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    })?;
    if h.len() != s.samples {
        return Err(RecordError::inconsistent(
            path,
            format!(
                "{what}: the histogram holds {} samples, the summary says {}",
                h.len(),
                s.samples
            ),
        ));
    }
    Ok(())
}

impl ProbeRecord {
    /// Check the record read from `path`, which holds the data of `runs` runs (1, or the
    /// sources of a merged record): see the module docs.
    pub fn check(&self, path: &Path, runs: u64) -> Result<(), RecordError> {
        check_elapsed(self.elapsed_s, path)?;
        if self.settings.interval_ns == 0 {
            return Err(RecordError::inconsistent(path, "settings.interval_ns is 0"));
        }
        let allowed = periods_allowed(self.elapsed_s, self.settings.interval_ns, runs);
        let mut cpus = BTreeSet::new();
        for t in &self.threads {
            let what = format!("CPU {}", t.cpu);
            if !cpus.insert(t.cpu) {
                return Err(RecordError::inconsistent(
                    path,
                    format!("{what} appears twice: its samples would count twice"),
                ));
            }
            check_hist(&t.latency, path, &what)?;
            let counted = checked_sum(t.latency.samples, t.out_of_range, path, &what)?;
            if counted != t.samples {
                return Err(RecordError::inconsistent(
                    path,
                    format!(
                        "{what}: samples {} but the histogram holds {} and {} were out of range",
                        t.samples, t.latency.samples, t.out_of_range
                    ),
                ));
            }
            let periods = checked_sum(t.samples, t.missed_periods, path, &what)?;
            if periods > allowed {
                return Err(RecordError::inconsistent(
                    path,
                    format!(
                        "{what}: {} samples + {} missed periods exceed the {allowed} periods of {} ns that {} s allow",
                        t.samples, t.missed_periods, self.settings.interval_ns, self.elapsed_s
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl CanRecord {
    /// Check the record read from `path` holding the data of `runs` runs (see the module
    /// docs).
    pub fn check(&self, path: &Path, runs: u64) -> Result<(), RecordError> {
        check_elapsed(self.elapsed_s, path)?;
        let mut ids = BTreeSet::new();
        for m in &self.messages {
            let what = msg_label(m);
            if !ids.insert((m.id, m.extended)) {
                return Err(RecordError::inconsistent(
                    path,
                    format!("message id {what} appears twice: its frames would count twice"),
                ));
            }
            check_hist(&m.latency, path, &format!("{what} latency"))?;
            check_hist(&m.jitter, path, &format!("{what} jitter"))?;
            let accounted = checked_sum(m.received, m.lost, path, &what)?;
            if m.lost > m.sent || accounted < m.sent {
                return Err(RecordError::inconsistent(
                    path,
                    format!(
                        "{what}: sent {}, received {}, lost {} do not add up",
                        m.sent, m.received, m.lost
                    ),
                ));
            }
            for (n, field) in [
                (m.latency.samples, "latency samples"),
                (m.jitter.samples, "jitter samples"),
                (m.deadline_misses, "deadline misses"),
            ] {
                if n > m.received {
                    return Err(RecordError::inconsistent(
                        path,
                        format!(
                            "{what}: {n} {field} but only {} frames received",
                            m.received
                        ),
                    ));
                }
            }
            if m.period_us > 0 {
                let allowed =
                    periods_allowed(self.elapsed_s, m.period_us.saturating_mul(1000), runs);
                if m.sent > allowed {
                    return Err(RecordError::inconsistent(
                        path,
                        format!(
                            "{what}: {} frames sent exceed the {allowed} periods of {} us that {} s allow",
                            m.sent, m.period_us, self.elapsed_s
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hist;

    pub(crate) fn hist_of(values_us: &[(u64, u64)]) -> HistSummary {
        let mut h = hist::new_auto();
        for (us, n) in values_us {
            h.record_n(us * 1000, *n).unwrap();
        }
        HistSummary::from_hist(&h)
    }

    pub(crate) fn probe(n: u64, missed: u64) -> ProbeRecord {
        let latency = hist_of(&[(10, n)]);
        ProbeRecord {
            settings: ProbeSettings {
                interval_ns: 1_000_000,
                policy: "fifo".into(),
                priority: 95,
                duration_s: Some(60.0),
                loops: None,
                mlock: true,
                dma_latency_held: true,
                clock: "CLOCK_MONOTONIC".into(),
            },
            threads: vec![ProbeThread {
                cpu: 1,
                tid: 7,
                policy: "fifo".into(),
                priority: 95,
                samples: latency.samples,
                missed_periods: missed,
                out_of_range: 0,
                max_at_cycle: 1,
                max_at: None,
                worst: vec![],
                latency,
            }],
            elapsed_s: 60.0,
            partial: false,
        }
    }

    /// A can.json written before the E2E and time-base fields reads with their defaults.
    #[test]
    fn older_can_records_read_with_defaults() {
        let h = HistSummary::from_hist(&hist::new_auto());
        let m = serde_json::json!({
            "ecu": "e", "name": "m", "id": 1, "extended": false, "kind": "classic", "len": 8,
            "period_us": 10000, "deadline_us": 10000, "sent": 5, "received": 5, "lost": 0,
            "duplicates": 0, "reordered": 0, "deadline_misses": 0, "latency": h, "jitter": h,
            "frame_time_us": 270.0, "wcrt_us": 590.0
        });
        let c = serde_json::json!({
            "tx": "can0", "rx": "can1", "bitrate": 500000, "data_bitrate": null, "paced": true,
            "elapsed_s": 1.0, "bus_load_analytic_pct": 1.0, "bus_load_measured_pct": 1.0,
            "tx_enobufs": 0, "bus_errors": [], "timestamp_source": "kernel", "messages": [m],
            "partial": false
        });
        let r: CanRecord = serde_json::from_value(c).unwrap();
        assert_eq!(r.role, "both");
        assert_eq!(r.time_base, TimeBase::default());
        assert_eq!(r.messages[0].e2e, None);
        assert!(!r.messages[0].sporadic);
        let e = E2eCounts {
            profile: "P05".into(),
            ok: 10,
            ok_some_lost: 1,
            repeated: 2,
            wrong_sequence: 3,
            error: 4,
            timeout: 5,
            timeout_us: 20_000,
        };
        assert_eq!(e.failed(), 9);
    }

    pub(crate) fn can_msg(id: u32, n: u64) -> CanMessageRecord {
        CanMessageRecord {
            ecu: "engine".into(),
            name: format!("Msg{id:X}"),
            id,
            extended: false,
            kind: "classic".into(),
            len: 8,
            period_us: 10_000,
            deadline_us: 5000,
            sent: n,
            received: n,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            deadline_misses: 0,
            latency: hist_of(&[(300, n)]),
            jitter: hist_of(&[(5, n)]),
            frame_time_us: 270.0,
            wcrt_us: Some(800.0),
            sporadic: false,
            signals: 0,
            instance_from: "payload".into(),
            e2e: None,
        }
    }

    pub(crate) fn can(msgs: Vec<CanMessageRecord>) -> CanRecord {
        CanRecord {
            tx: "can0".into(),
            rx: "can1".into(),
            bitrate: 500_000,
            data_bitrate: None,
            paced: true,
            elapsed_s: 60.0,
            bus_load_analytic_pct: 20.0,
            bus_load_measured_pct: 18.0,
            tx_enobufs: 0,
            bus_errors: vec![],
            timestamp_source: "kernel".into(),
            messages: msgs,
            partial: false,
            role: "both".into(),
            time_base: TimeBase::default(),
        }
    }

    fn p() -> &'static Path {
        Path::new("/r/probe.json")
    }

    #[test]
    fn a_consistent_probe_record_passes() {
        probe(60_000, 0).check(p(), 1).unwrap();
    }

    #[test]
    fn the_same_cpu_twice_is_refused() {
        let mut r = probe(20_000, 0);
        r.threads.push(r.threads[0].clone());
        let e = r.check(p(), 1).unwrap_err();
        assert!(e.to_string().contains("CPU 1 appears twice"), "{e}");
    }

    #[test]
    fn histogram_totals_must_match_the_sample_counts() {
        let mut r = probe(1000, 0);
        r.threads[0].samples = 40_000;
        let e = r.check(p(), 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("samples 40000 but the histogram holds 1000"),
            "{e}"
        );
        let mut r = probe(1000, 0);
        r.threads[0].latency.samples = 5;
        let e = r.check(p(), 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 1000 samples, the summary says 5"),
            "{e}"
        );
    }

    #[test]
    fn missed_periods_beyond_the_elapsed_time_are_refused() {
        let e = probe(1000, 1u64 << 63).check(p(), 1).unwrap_err();
        assert!(e.to_string().contains("exceed the 60610 periods"), "{e}");
        let e = probe(1000, u64::MAX).check(p(), 1).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        // A full minute at 1 ms with a few missed: fine.
        probe(59_990, 10).check(p(), 1).unwrap();
    }

    #[test]
    fn can_counts_must_add_up() {
        let c = |f: &dyn Fn(&mut CanMessageRecord)| {
            let mut m = can_msg(0xC0, 6000);
            f(&mut m);
            can(vec![m]).check(Path::new("/r/can.json"), 1)
        };
        c(&|_| {}).unwrap();
        let e = c(&|m| m.lost = 7000).unwrap_err();
        assert!(e.to_string().contains("do not add up"), "{e}");
        let e = c(&|m| {
            m.received = 5000;
            m.lost = 1000;
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("6000 latency samples but only 5000"),
            "{e}"
        );
        let e = c(&|m| {
            m.sent = 1 << 40;
            m.lost = (1 << 40) - 6000;
        })
        .unwrap_err();
        assert!(e.to_string().contains("frames sent exceed"), "{e}");
        let e = c(&|m| m.lost = u64::MAX).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let mut r = can(vec![can_msg(0xC0, 10), can_msg(0xC0, 10)]);
        let e = r.check(Path::new("/r/can.json"), 1).unwrap_err();
        assert!(e.to_string().contains("0x0C0 MsgC0 appears twice"), "{e}");
        r.messages[1].extended = true;
        r.check(Path::new("/r/can.json"), 1).unwrap();
    }
}
