//! `can-sim analyze`: the timing model applied to a profile's CAN matrix, message by
//! message in priority order: frame time, load share, WCRT, deadline, slack.

use std::fmt::Write as _;

use profiles::Can;
use serde::Serialize;

use crate::rta::{self, ErrorModel, Progress, RtaLimits};
use crate::schedule::{id_text, Plan};
use crate::timing::{self, TimingError};

/// One message's analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageReport {
    /// Sending ECU.
    pub ecu: String,
    /// Message name.
    pub name: String,
    /// Identifier in hex (`0x0C0`).
    pub id_hex: String,
    /// Identifier.
    pub id: u32,
    /// 29-bit identifier.
    pub extended: bool,
    /// `classic`, `fd`, `fd_brs`.
    pub kind: String,
    /// Payload bytes.
    pub len: u8,
    /// Worst-case frame bits (with stuffing and intermission).
    pub frame_bits: u32,
    /// Worst-case frame time C, us.
    pub frame_time_us: f64,
    /// Period T, us (for a sporadic message its minimum inter-arrival time).
    pub period_us: f64,
    /// Event-driven: T is a minimum inter-arrival time.
    pub sporadic: bool,
    /// Release jitter J, us.
    pub jitter_us: f64,
    /// C / T in percent.
    pub load_pct: f64,
    /// Blocking B, us.
    pub blocking_us: f64,
    /// Level-m busy period, us (None: unbounded).
    pub busy_period_us: Option<f64>,
    /// Instances in the busy period.
    pub instances: u64,
    /// Worst-case response time R, us (None: unbounded).
    pub wcrt_us: Option<f64>,
    /// Deadline D, us.
    pub deadline_us: f64,
    /// D - R, us (None when unbounded).
    pub slack_us: Option<f64>,
    /// R <= D.
    pub schedulable: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// The analysis of a matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Nominal bitrate.
    pub bitrate: u32,
    /// FD data bitrate.
    pub data_bitrate: Option<u32>,
    /// One bit time, ns.
    pub tau_bit_ns: u64,
    /// Errors per second in the error model.
    pub error_rate_per_s: f64,
    /// Sum of C / T in percent.
    pub total_load_pct: f64,
    /// Every message meets its deadline.
    pub schedulable: bool,
    /// Per message, highest priority first.
    pub messages: Vec<MessageReport>,
    /// The model's sources.
    pub model: String,
}

/// Analyse a CAN matrix (default budget, no progress reports).
pub fn analyze(can: &Can) -> Result<Report, TimingError> {
    analyze_with(can, RtaLimits::default(), &mut |_| {})
}

/// Analyse a CAN matrix within `limits`, reporting `progress` on long analyses.
pub fn analyze_with(
    can: &Can,
    limits: RtaLimits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, TimingError> {
    let plan = Plan::from_can(can)?;
    let tau = timing::tau_bit_ns(can.bitrate);
    let errors = (can.error_rate_per_s > 0.0).then_some(ErrorModel {
        rate_per_s: can.error_rate_per_s,
    });
    let results = rta::response_times_with(&plan.rta_messages(), tau, errors, limits, progress);
    let us = timing::ns_to_us;
    let mut messages: Vec<(u64, MessageReport)> = plan
        .messages
        .iter()
        .zip(&results)
        .map(|(m, r)| {
            let bits =
                timing::can_frame_bits(m.spec.is_fd(), m.spec.extended, true, true, m.spec.len);
            (
                m.key,
                MessageReport {
                    ecu: m.ecu_name.clone(),
                    name: m.name.clone(),
                    id_hex: id_text(m.id, m.spec.extended),
                    id: m.id,
                    extended: m.spec.extended,
                    kind: timing::kind_name(m.spec.kind).to_string(),
                    len: m.spec.len,
                    frame_bits: bits,
                    frame_time_us: us(m.frame_ns),
                    period_us: us(m.period_ns),
                    sporadic: m.sporadic,
                    jitter_us: us(m.jitter_ns),
                    load_pct: timing::bus_load_pct([(m.frame_ns, m.period_ns)]),
                    blocking_us: us(r.blocking_ns),
                    busy_period_us: r.busy_period_ns.map(us),
                    instances: r.instances,
                    wcrt_us: r.wcrt_ns.map(us),
                    deadline_us: us(m.deadline_ns),
                    slack_us: r.wcrt_ns.map(|w| us(m.deadline_ns) - us(w)),
                    schedulable: r.schedulable,
                    reason: r.reason.clone(),
                },
            )
        })
        .collect();
    messages.sort_by_key(|(k, _)| *k);
    let messages: Vec<MessageReport> = messages.into_iter().map(|(_, m)| m).collect();
    Ok(Report {
        bitrate: can.bitrate,
        data_bitrate: can.data_bitrate,
        tau_bit_ns: tau,
        error_rate_per_s: can.error_rate_per_s,
        total_load_pct: plan.bus_load_pct(),
        schedulable: messages.iter().all(|m| m.schedulable),
        messages,
        model: "frame bits: Linux include/linux/can/length.h can_frame_bits() worst-case stuffing \
                with intermission; WCRT: Davis, Burns, Bril, Lukkien 2007 (revised analysis)"
            .to_string(),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "unbounded".to_string(), |x| format!("{x:.1}"))
}

/// The report as a table.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "bitrate {} bit/s{}, tau_bit {} ns, error rate {}/s",
        r.bitrate,
        r.data_bitrate
            .map(|d| format!(" (data {d} bit/s)"))
            .unwrap_or_default(),
        r.tau_bit_ns,
        r.error_rate_per_s
    );
    let _ = writeln!(
        s,
        "{:<12} {:<16} {:<10} {:<7} {:>3} {:>5} {:>9} {:>10} {:>7} {:>10} {:>10} {:>10}  ok",
        "ecu",
        "message",
        "id",
        "kind",
        "len",
        "bits",
        "C us",
        "T ms",
        "load %",
        "WCRT us",
        "D us",
        "slack us"
    );
    for m in &r.messages {
        let _ = writeln!(
            s,
            "{:<12} {:<16} {:<10} {:<7} {:>3} {:>5} {:>9.1} {:>10} {:>7.2} {:>10} {:>10.1} {:>10}  {}",
            m.ecu,
            m.name,
            m.id_hex,
            m.kind,
            m.len,
            m.frame_bits,
            m.frame_time_us,
            // A sporadic message's T is a minimum inter-arrival time.
            format!(
                "{}{}",
                if m.sporadic { ">=" } else { "" },
                m.period_us / 1000.0
            ),
            m.load_pct,
            opt(m.wcrt_us),
            m.deadline_us,
            opt(m.slack_us),
            if m.schedulable { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(s, "total bus load {:.2} %", r.total_load_pct);
    let sporadic = r.messages.iter().filter(|m| m.sporadic).count();
    if sporadic > 0 {
        let _ = writeln!(
            s,
            "{sporadic} sporadic message(s) (T >=: minimum inter-arrival time) analysed at their \
             highest rate"
        );
    }
    for m in r.messages.iter().filter(|m| !m.schedulable) {
        let _ = writeln!(
            s,
            "not schedulable: {} ({}): {}",
            m.name,
            m.id_hex,
            m.reason.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        s,
        "{}",
        if r.schedulable {
            "all messages schedulable"
        } else {
            "NOT SCHEDULABLE"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_profile_is_schedulable_with_hand_checked_numbers() {
        let p = profiles::load("lab").unwrap().profile;
        let r = analyze(p.can.as_ref().unwrap()).unwrap();
        assert!(r.schedulable);
        assert_eq!(r.messages[0].name, "EngineSpeed"); // 0x0C0 is the highest priority
        assert_eq!(r.messages.last().unwrap().name, "Climate"); // extended 0x18FF5021
                                                                // EngineSpeed: blocked by one 320 us extended frame, no higher priority: R = B + C.
        assert_eq!(r.messages[0].blocking_us, 320.0);
        assert_eq!(r.messages[0].wcrt_us, Some(590.0));
        assert_eq!(r.messages[0].slack_us, Some(5000.0 - 590.0));
        let text = render(&r);
        assert!(
            text.contains("EngineSpeed") && text.contains("all messages schedulable"),
            "{text}"
        );
    }

    #[test]
    fn overloaded_matrix_reports_not_schedulable() {
        let text = r#"(bitrate: 125000, tx: "vcan0", rx: "vcan0", ecus: [(name: "e", messages: [
            (name: Some("A"), id: 1, len: 8, period_ms: 1),
            (name: Some("B"), id: 2, len: 8, period_ms: 1),
        ])])"#;
        let can: Can = ron::from_str(text).unwrap();
        let r = analyze(&can).unwrap();
        assert!(!r.schedulable);
        assert!(render(&r).contains("NOT SCHEDULABLE"));
        assert_eq!(r.messages[1].wcrt_us, None);
    }

    /// A sporadic message is analysed with its minimum inter-arrival time as T: the same
    /// numbers as a periodic message of that period, marked as such.
    #[test]
    fn sporadic_messages_use_their_minimum_inter_arrival_time() {
        let text = |sporadic: bool| {
            format!(
                r#"(bitrate: 500000, tx: "vcan0", rx: "vcan0", ecus: [(name: "e", messages: [
                (name: Some("Cyc"), id: 1, len: 8, period_ms: 10),
                (name: Some("Ev"), id: 2, len: 8, period_ms: 5, sporadic: {sporadic}),
            ])])"#
            )
        };
        let spor = analyze(&ron::from_str(&text(true)).unwrap()).unwrap();
        let per = analyze(&ron::from_str(&text(false)).unwrap()).unwrap();
        assert!(spor.messages[1].sporadic && !per.messages[1].sporadic);
        assert_eq!(spor.messages[1].wcrt_us, per.messages[1].wcrt_us);
        assert_eq!(spor.messages[1].period_us, 5000.0);
        assert_eq!(spor.total_load_pct, per.total_load_pct);
        let table = render(&spor);
        assert!(table.contains(">=5"), "{table}");
        assert!(table.contains("1 sporadic message(s)"), "{table}");
    }
}
