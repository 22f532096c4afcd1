//! From a profile's CAN matrix to what the sender does: one [`MessagePlan`] per message
//! (frame format, worst-case frame time, period, offset, jitter, deadline, arbitration
//! key) and, per ECU, an [`EcuSchedule`] that yields releases in time order from a heap
//! holding each message's next release.
//!
//! Times are absolute `CLOCK_REALTIME` nanoseconds (the clock of the kernel's socket RX
//! timestamps, `SO_TIMESTAMPNS`), so a release time in a payload and the receive timestamp
//! subtract directly. Pure: tested without a bus or a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use profiles::{Can, FrameKind};

use crate::e2e::E2eSpec;
use crate::signal::{Payload, SignalError};

use crate::rta::RtaMessage;
use crate::timing::{self, f64_to_u64, FrameSpec, TimingError};

/// One message of the matrix, ready for the sender, receiver and analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePlan {
    /// Index of the sending ECU in `can.ecus`.
    pub ecu: usize,
    /// ECU name.
    pub ecu_name: String,
    /// Message name (`0x123` when the profile gives none).
    pub name: String,
    /// CAN identifier.
    pub id: u32,
    /// Frame format.
    pub spec: FrameSpec,
    /// Period in ns (sporadic: the minimum inter-arrival time, released at that rate).
    pub period_ns: u64,
    /// Event-driven: `period_ns` is a minimum inter-arrival time.
    pub sporadic: bool,
    /// Offset of the first release from the start, ns.
    pub offset_ns: u64,
    /// Maximum release jitter, ns.
    pub jitter_ns: u64,
    /// Deadline from the nominal release, ns.
    pub deadline_ns: u64,
    /// Worst-case frame time C, ns.
    pub frame_ns: u64,
    /// Arbitration key (lower wins).
    pub key: u64,
    /// Signals of the payload (None: the test payload, or not loaded yet: see
    /// [`Plan::with_payloads`]).
    pub payload: Option<Arc<Payload>>,
    /// Number of signals the profile gives (known before the payload is loaded).
    pub signals: usize,
    /// E2E protection.
    pub e2e: Option<E2eSpec>,
}

impl MessagePlan {
    /// True for a 29-bit identifier.
    pub fn extended(&self) -> bool {
        self.spec.extended
    }

    /// Nominal (jitter-free) release of instance `seq` for a run starting at `start_ns`.
    pub fn nominal_release(&self, start_ns: u64, seq: u64) -> u64 {
        start_ns + self.offset_ns + seq * self.period_ns
    }

    /// The instance a frame received at `rx_ns` belongs to, by the schedule alone: the
    /// last one released by then. Exact while release jitter + latency < period.
    pub fn instance_at(&self, start_ns: u64, rx_ns: u64) -> u64 {
        rx_ns.saturating_sub(start_ns + self.offset_ns) / self.period_ns.max(1)
    }

    /// True when frames carry can-sim's test payload (sequence number, release time):
    /// no signals and no E2E protection.
    pub fn test_payload(&self) -> bool {
        self.signals == 0 && self.e2e.is_none()
    }

    /// Release jitter of instance `seq`: a deterministic pseudo-random value in
    /// `0..=jitter_ns` (SplitMix64 of id and seq), so runs are reproducible.
    pub fn jitter_of(&self, seq: u64) -> u64 {
        if self.jitter_ns == 0 {
            return 0;
        }
        splitmix64((u64::from(self.id) << 32) ^ seq) % (self.jitter_ns + 1)
    }
}

/// SplitMix64: a tiny, well-mixed hash for reproducible jitter.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The whole matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nominal bitrate.
    pub bitrate: u32,
    /// FD data bitrate.
    pub data_bitrate: Option<u32>,
    /// Messages in profile order (ECU by ECU).
    pub messages: Vec<MessagePlan>,
    /// ECU names in profile order.
    pub ecus: Vec<String>,
}

fn ms_to_ns(name: &str, field: &'static str, ms: f64) -> Result<u64, TimingError> {
    let bad = || TimingError::BadTime {
        name: name.to_string(),
        field,
        value: ms.to_string(),
    };
    if !(ms.is_finite() && ms > 0.0) {
        return Err(bad());
    }
    match f64_to_u64((ms * 1e6).round()) {
        Some(ns) if ns > 0 => Ok(ns),
        _ => Err(bad()),
    }
}

impl Plan {
    /// Build the plan of a profile's `can` section.
    pub fn from_can(can: &Can) -> Result<Plan, TimingError> {
        let mut messages = Vec::new();
        for (ei, ecu) in can.ecus.iter().enumerate() {
            for m in &ecu.messages {
                let name = m.name.clone().unwrap_or_else(|| id_text(m.id, m.extended));
                timing::validate_id(m.id, m.extended)?;
                let spec = FrameSpec {
                    kind: m.kind,
                    extended: m.extended,
                    len: m.len,
                };
                let period_ns = ms_to_ns(&name, "period_ms", m.period_ms)?;
                let frame_ns = timing::frame_time_ns(&spec, can.bitrate, can.data_bitrate)?;
                let deadline_ns = m.deadline_us.map_or(period_ns, |d| d.saturating_mul(1000));
                messages.push(MessagePlan {
                    ecu: ei,
                    ecu_name: ecu.name.clone(),
                    name,
                    id: m.id,
                    spec,
                    period_ns,
                    sporadic: m.sporadic,
                    offset_ns: m.offset_us.saturating_mul(1000),
                    jitter_ns: m.jitter_us.saturating_mul(1000),
                    deadline_ns,
                    frame_ns,
                    key: timing::arbitration_key(m.id, m.extended),
                    payload: None,
                    signals: m.signals.len(),
                    e2e: m
                        .e2e
                        .as_ref()
                        .map(|x| E2eSpec::new(x, period_ns, deadline_ns)),
                });
            }
        }
        Ok(Plan {
            bitrate: can.bitrate,
            data_bitrate: can.data_bitrate,
            messages,
            ecus: can.ecus.iter().map(|e| e.name.clone()).collect(),
        })
    }

    /// Load the signal payloads (and the logs `Log` generators take values from).
    pub fn with_payloads(mut self, can: &Can) -> Result<Plan, SignalError> {
        let msgs = can.ecus.iter().flat_map(|e| &e.messages);
        for (mp, m) in self.messages.iter_mut().zip(msgs) {
            mp.payload = Payload::new(m, &mp.name)?.map(Arc::new);
        }
        Ok(self)
    }

    /// True when any message is CAN FD (the sockets must be FD sockets).
    pub fn has_fd(&self) -> bool {
        self.messages
            .iter()
            .any(|m| m.spec.kind != FrameKind::Classic)
    }

    /// The messages as the response-time analysis sees them.
    pub fn rta_messages(&self) -> Vec<RtaMessage> {
        self.messages
            .iter()
            .map(|m| RtaMessage {
                name: m.name.clone(),
                key: m.key,
                c_ns: m.frame_ns,
                t_ns: m.period_ns,
                j_ns: m.jitter_ns,
                d_ns: m.deadline_ns,
            })
            .collect()
    }

    /// Analytic bus load in percent.
    pub fn bus_load_pct(&self) -> f64 {
        timing::bus_load_pct(self.messages.iter().map(|m| (m.frame_ns, m.period_ns)))
    }

    /// Index of the message with this id and format.
    pub fn find(&self, id: u32, extended: bool) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| m.id == id && m.spec.extended == extended)
    }
}

pub use crate::timing::id_text;

/// One release of one message instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Index into `Plan::messages`.
    pub msg: usize,
    /// Instance number (0, 1, 2, ...).
    pub seq: u64,
    /// Nominal release (start + offset + seq * period), ns.
    pub nominal_ns: u64,
    /// Actual release: nominal plus this instance's jitter, ns.
    pub release_ns: u64,
}

/// The releases of one ECU's messages, in time order (ties: higher priority first).
///
/// The heap holds exactly one entry per message (its next release), so `next` never
/// allocates.
#[derive(Debug, Clone)]
pub struct EcuSchedule {
    heap: BinaryHeap<Reverse<(u64, u64, usize, u64)>>,
    msgs: Vec<(usize, MessagePlan)>,
    start_ns: u64,
}

impl EcuSchedule {
    /// The schedule of ECU `ecu` for a run starting at `start_ns`.
    pub fn new(plan: &Plan, ecu: usize, start_ns: u64) -> EcuSchedule {
        let msgs: Vec<(usize, MessagePlan)> = plan
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.ecu == ecu)
            .map(|(i, m)| (i, m.clone()))
            .collect();
        let mut heap = BinaryHeap::with_capacity(msgs.len() + 1);
        for (local, (_, m)) in msgs.iter().enumerate() {
            let rel = m.nominal_release(start_ns, 0) + m.jitter_of(0);
            heap.push(Reverse((rel, m.key, local, 0)));
        }
        EcuSchedule {
            heap,
            msgs,
            start_ns,
        }
    }

    /// Number of messages this ECU sends.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// True when the ECU sends nothing.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The time of the next release, without taking it.
    pub fn peek_ns(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }

    /// Take the next release and queue that message's following instance.
    pub fn next_release(&mut self) -> Option<Release> {
        let Reverse((rel, key, local, seq)) = self.heap.pop()?;
        let (global, m) = &self.msgs[local];
        let nominal = m.nominal_release(self.start_ns, seq);
        let next = seq + 1;
        let next_rel = m.nominal_release(self.start_ns, next) + m.jitter_of(next);
        self.heap.push(Reverse((next_rel, key, local, next)));
        Some(Release {
            msg: *global,
            seq,
            nominal_ns: nominal,
            release_ns: rel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Plan {
        let p = profiles::load("lab").unwrap().profile;
        Plan::from_can(p.can.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn lab_profile_plan() {
        let plan = lab();
        assert_eq!(plan.messages.len(), 5);
        let es = &plan.messages[0];
        assert_eq!(es.name, "EngineSpeed");
        assert_eq!(es.period_ns, 10_000_000);
        assert_eq!(es.deadline_ns, 5_000_000);
        assert_eq!(es.frame_ns, 270_000); // 135 bits at 500 kbit/s
        let climate = &plan.messages[plan.find(0x18FF5021, true).unwrap()];
        assert_eq!(climate.frame_ns, 320_000); // 160 bits
        assert_eq!(climate.offset_ns, 7_000_000);
        assert_eq!(plan.messages[3].jitter_ns, 500_000);
        // 3 x 270 us / 10 ms + 270 us / 20 ms + 270 us / 100 ms + 320 us / 100 ms
        let want = (0.027 + 0.0135 + 0.027 + 0.0027 + 0.0032) * 100.0;
        assert!(
            (plan.bus_load_pct() - want).abs() < 1e-9,
            "{}",
            plan.bus_load_pct()
        );
        assert!(!plan.has_fd());
    }

    #[test]
    fn schedule_releases_in_time_order_with_offsets() {
        let plan = lab();
        // ECU "engine": EngineSpeed every 10 ms from 0, EngineTorque every 20 ms from 0.5 ms.
        let mut s = EcuSchedule::new(&plan, 0, 1_000_000_000);
        assert_eq!(s.len(), 2);
        let got: Vec<(usize, u64, u64)> = (0..6)
            .map(|_| {
                let r = s.next_release().unwrap();
                (r.msg, r.seq, r.release_ns - 1_000_000_000)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 0),
                (1, 0, 500_000),
                (0, 1, 10_000_000),
                (0, 2, 20_000_000),
                (1, 1, 20_500_000),
                (0, 3, 30_000_000),
            ]
        );
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_reproducible() {
        let plan = lab();
        let body = plan.messages[3].ecu;
        let mut a = EcuSchedule::new(&plan, body, 0);
        let mut b = EcuSchedule::new(&plan, body, 0);
        let mut jittered = 0;
        for _ in 0..200 {
            let r = a.next_release().unwrap();
            assert_eq!(Some(r), b.next_release());
            let m = &plan.messages[r.msg];
            assert!(r.release_ns >= r.nominal_ns);
            assert!(r.release_ns - r.nominal_ns <= m.jitter_ns);
            if r.release_ns != r.nominal_ns {
                jittered += 1;
            }
        }
        assert!(jittered > 50, "only {jittered} releases had jitter");
    }

    #[test]
    fn simultaneous_releases_come_in_priority_order() {
        let text = r#"Profile(name: "t", can: Some((bitrate: 500000, tx: "vcan0", rx: "vcan0",
            ecus: [(name: "e", messages: [
                (id: 0x300, len: 8, period_ms: 10),
                (id: 0x100, len: 8, period_ms: 10),
                (id: 0x200, len: 8, period_ms: 5),
            ])])))"#;
        let p: profiles::Profile = ron::from_str(text).unwrap();
        let plan = Plan::from_can(p.can.as_ref().unwrap()).unwrap();
        let mut s = EcuSchedule::new(&plan, 0, 0);
        let ids: Vec<u32> = (0..4)
            .map(|_| plan.messages[s.next_release().unwrap().msg].id)
            .collect();
        assert_eq!(ids, vec![0x100, 0x200, 0x300, 0x200]);
        assert_eq!(plan.messages[0].name, "0x300");
    }

    #[test]
    fn bad_period_is_named() {
        let text = r#"Profile(name: "t", can: Some((bitrate: 500000, tx: "vcan0", rx: "vcan0",
            ecus: [(name: "e", messages: [(name: Some("Bad"), id: 0x300, len: 8, period_ms: 0)])])))"#;
        let p: profiles::Profile = ron::from_str(text).unwrap();
        let e = Plan::from_can(p.can.as_ref().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("Bad") && e.to_string().contains("period_ms"),
            "{e}"
        );
    }
}
