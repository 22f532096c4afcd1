//! `can-sim import-dbc`: a CAN matrix from a DBC file (Vector's CAN database format,
//! parsed by the `can-dbc` crate) into a profile's `can` section.
//!
//! Mapping: `BO_` id/size/transmitter -> message id, `extended`, `len`, sending ECU;
//! attribute `GenMsgCycleTime` (ms; its `BA_DEF_DEF_` default when a message has none)
//! -> `period_ms`; `GenMsgStartDelayTime` (ms) -> `offset_us`; `VFrameFormat` (`*CAN_FD*`)
//! or a size above 8 -> CAN FD; database attribute `Baudrate` -> bitrate unless given.
//! Messages without a cycle time are event-driven: they are left out, and listed.

use std::collections::BTreeMap;

use can_dbc::{AttributeValue, Dbc, MessageId, Transmitter};
use profiles::{Can, Ecu, FrameKind, Message};

/// Errors importing a DBC file.
#[derive(Debug, thiserror::Error)]
pub enum DbcImportError {
    /// The parser rejected the file.
    #[error("{path} is not a valid DBC file: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// No periodic messages at all.
    #[error("{path} has no periodic message (no GenMsgCycleTime > 0): nothing to simulate")]
    Empty {
        /// The file.
        path: String,
    },
}

/// The import result: the section and the messages left out (name, why).
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The `can` section.
    pub can: Can,
    /// Messages skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

fn as_f64(v: &AttributeValue) -> Option<f64> {
    match v {
        AttributeValue::Uint(u) => u64_to_f64(*u),
        AttributeValue::Int(i) => i32::try_from(*i).ok().map(f64::from),
        AttributeValue::Double(d) => Some(*d),
        AttributeValue::String(s) => s.trim().parse().ok(),
    }
}

fn u64_to_f64(u: u64) -> Option<f64> {
    u32::try_from(u).ok().map(f64::from)
}

fn as_string(v: &AttributeValue) -> Option<String> {
    match v {
        AttributeValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Smallest CAN FD length that holds `size` bytes.
fn fd_len(size: u64) -> u8 {
    [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]
        .into_iter()
        .find(|l| u64::from(*l) >= size)
        .unwrap_or(64)
}

/// Convert DBC text. `bitrate` overrides the file's `Baudrate` (default 500 kbit/s).
pub fn import(text: &str, path: &str, bitrate: Option<u32>) -> Result<Imported, DbcImportError> {
    let dbc = Dbc::try_from(text).map_err(|e| DbcImportError::Parse {
        path: path.to_string(),
        reason: format!("{e:?}"),
    })?;
    let default = |name: &str| {
        dbc.attribute_defaults
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.clone())
    };
    let msg_attr = |id: MessageId, name: &str| {
        dbc.attribute_values_message
            .iter()
            .find(|a| a.message_id == id && a.name == name)
            .map(|a| a.value.clone())
            .or_else(|| default(name))
    };
    let bitrate = bitrate
        .or_else(|| {
            dbc.attribute_values_database
                .iter()
                .find(|a| a.name == "Baudrate")
                .and_then(|a| as_f64(&a.value))
                .and_then(|b| crate::timing::f64_to_u64(b).and_then(|b| u32::try_from(b).ok()))
        })
        .unwrap_or(500_000);

    let mut ecus: BTreeMap<String, Vec<Message>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for m in &dbc.messages {
        let (id, extended) = match m.id {
            MessageId::Standard(s) => (u32::from(s), false),
            MessageId::Extended(e) => (e, true),
        };
        // VECTOR__INDEPENDENT_SIG_MSG carries orphan signals, not a frame.
        if m.name == "VECTOR__INDEPENDENT_SIG_MSG" {
            continue;
        }
        let cycle = msg_attr(m.id, "GenMsgCycleTime").and_then(|v| as_f64(&v));
        let Some(period_ms) = cycle.filter(|c| *c > 0.0) else {
            skipped.push((
                m.name.clone(),
                "no GenMsgCycleTime (event-driven)".to_string(),
            ));
            continue;
        };
        let format = msg_attr(m.id, "VFrameFormat").and_then(|v| as_string(&v));
        let fd = m.size > 8 || format.as_deref().is_some_and(|f| f.contains("FD"));
        let (kind, len) = if fd {
            (FrameKind::Fd, fd_len(m.size))
        } else {
            (FrameKind::Classic, u8::try_from(m.size.min(8)).unwrap_or(8))
        };
        let offset_us = msg_attr(m.id, "GenMsgStartDelayTime")
            .and_then(|v| as_f64(&v))
            .and_then(|ms| crate::timing::f64_to_u64((ms * 1000.0).round()))
            .unwrap_or(0);
        let ecu = match &m.transmitter {
            Transmitter::NodeName(n) => n.clone(),
            Transmitter::VectorXXX => "Vector__XXX".to_string(),
        };
        ecus.entry(ecu).or_default().push(Message {
            name: Some(m.name.clone()),
            id,
            extended,
            kind,
            len,
            period_ms,
            offset_us,
            jitter_us: 0,
            deadline_us: None,
        });
    }
    if ecus.is_empty() {
        return Err(DbcImportError::Empty {
            path: path.to_string(),
        });
    }
    Ok(Imported {
        can: Can {
            bitrate,
            data_bitrate: None,
            tx: "vcan0".to_string(),
            rx: "vcan0".to_string(),
            pace: true,
            error_rate_per_s: 0.0,
            ecus: ecus
                .into_iter()
                .map(|(name, messages)| Ecu {
                    name,
                    cpu: None,
                    priority: 80,
                    messages,
                })
                .collect(),
        },
        skipped,
    })
}

/// The section as RON, ready to paste into a profile as `can: Some(<this>)`.
pub fn to_ron(imp: &Imported) -> String {
    let cfg = ron::ser::PrettyConfig::new()
        .depth_limit(4)
        .separate_tuple_members(false)
        .enumerate_arrays(false);
    let body = ron::ser::to_string_pretty(&imp.can, cfg)
        .unwrap_or_else(|e| format!("/* cannot render: {e} */"));
    let mut out = String::new();
    for (name, why) in &imp.skipped {
        out.push_str(&format!("// skipped {name}: {why}\n"));
    }
    out.push_str(&format!("can: Some({body}),\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small DBC written for these tests (tests/fixtures/powertrain.dbc): two nodes,
    /// three periodic messages (one with an extended id and a start delay), one event
    /// message without a cycle time.
    pub const FIXTURE: &str = include_str!("../tests/fixtures/powertrain.dbc");

    #[test]
    fn imports_periodic_messages_by_transmitter() {
        let imp = import(FIXTURE, "fixture.dbc", None).unwrap();
        assert_eq!(imp.can.bitrate, 250_000);
        let names: Vec<&str> = imp.can.ecus.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["Brakes", "Engine"]);
        let engine = &imp.can.ecus[1].messages;
        assert_eq!(engine[0].id, 0x0C0);
        assert!(!engine[0].extended);
        assert_eq!(engine[0].period_ms, 10.0);
        assert_eq!(engine[1].id, 0x18FF5021);
        assert!(engine[1].extended);
        assert_eq!(engine[1].offset_us, 7000);
        let brakes = &imp.can.ecus[0].messages;
        assert_eq!(brakes.len(), 1);
        assert_eq!(brakes[0].len, 6);
        assert_eq!(brakes[0].period_ms, 20.0);
        assert_eq!(imp.skipped.len(), 1);
        assert_eq!(imp.skipped[0].0, "BrakeEvent");
        assert_eq!(
            import(FIXTURE, "f", Some(500_000)).unwrap().can.bitrate,
            500_000
        );
    }

    #[test]
    fn ron_output_loads_as_a_profile() {
        let imp = import(FIXTURE, "fixture.dbc", None).unwrap();
        let section = to_ron(&imp);
        assert!(section.contains("// skipped BrakeEvent"));
        let profile = format!("Profile(name: \"dbc\", {section})");
        let p: profiles::Profile =
            ron::from_str(&profile).unwrap_or_else(|e| panic!("{e}\n{profile}"));
        assert_eq!(p.can.unwrap(), imp.can);
    }

    #[test]
    fn garbage_is_named() {
        let e = import("BO_ what", "bad.dbc", None).unwrap_err();
        assert!(
            e.to_string().starts_with("bad.dbc is not a valid DBC file"),
            "{e}"
        );
    }
}
