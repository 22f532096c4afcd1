//! `can-sim import-dbc`: a CAN matrix from a DBC file (Vector's CAN database format) into
//! a profile's `can` section.
//!
//! - [`lex`] and [`parse`]: the file into messages, signals and attributes, every id kept
//!   as written and checked (see [`parse`] for why not the `can-dbc` crate);
//! - this module: the mapping to [`profiles::Can`], every change it makes reported as a
//!   warning, and the result validated (parsed back and checked by
//!   [`profiles::validate()`]) before the caller writes it.
//!
//! Mapping: `BO_` id/size/transmitter -> message id, `extended`, `len`, sending ECU;
//! `GenMsgCycleTime` (ms) -> `period_ms`; event messages (`GenMsgSendType` spontaneous,
//! event, on change/write, or no cycle time) -> `sporadic: true` with the minimum
//! inter-arrival time from `GenMsgDelayTime`, else `--default-period`, else left out and
//! listed; a per-message override wins over both. `GenMsgStartDelayTime` (ms) ->
//! `offset_us`; `VFrameFormat` (`*CAN_FD`, as a name or as CANdb++'s enum index) or a size
//! above 8 -> CAN FD, with `CANFD_BRS` = 1 -> bit-rate switch; database `Baudrate` ->
//! bitrate and `BaudrateCANFD` -> data bitrate, unless given.

pub mod lex;
pub mod parse;
pub mod signals;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use profiles::{Can, Ecu, FrameKind, Message};

use self::parse::{AttrValue, Dbc, DbcMessage};

/// Errors importing a DBC file.
#[derive(Debug, thiserror::Error)]
pub enum DbcImportError {
    /// The file is not valid DBC text.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// What is wrong.
        message: String,
    },
    /// Messages that cannot be imported (each with its place), without `--skip-invalid`.
    #[error("{path}: {} message(s) cannot be imported (--skip-invalid leaves them out): {}", .errors.len(), .errors.join("; "))]
    Messages {
        /// The file.
        path: String,
        /// `line:col: Message X: why`, one per message.
        errors: Vec<String>,
    },
    /// No message left to simulate.
    #[error("{path} has no message to simulate: {why}")]
    Empty {
        /// The file.
        path: String,
        /// Why (periodic messages missing, all skipped, ...).
        why: String,
    },
    /// A per-message override names no message of the file.
    #[error("{path}: --period/--min-interval {target:?} names no message (by name or id)")]
    UnknownOverride {
        /// The file.
        path: String,
        /// What was given.
        target: String,
    },
    /// The generated section does not validate (a bug in the mapping: nothing is written).
    #[error("{path}: the generated profile does not validate, nothing written: {errors}")]
    Invalid {
        /// The file.
        path: String,
        /// The validation errors.
        errors: String,
    },
}

/// A period or minimum inter-arrival time for one message, from the command line:
/// `NAME=MS` or `0xID=MS`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodOverride {
    /// Message name, or id as `0x...` / decimal.
    pub message: String,
    /// Milliseconds.
    pub period_ms: f64,
    /// True: the value is a minimum inter-arrival time (sporadic), else a cycle time.
    pub sporadic: bool,
}

impl FromStr for PeriodOverride {
    type Err = String;

    /// `MSG=MS` (cyclic; the caller sets `sporadic` for `--min-interval`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (m, ms) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not MESSAGE=MS (e.g. EngineSpeed=10 or 0x0C0=10)"))?;
        let period_ms: f64 = ms
            .trim()
            .parse()
            .map_err(|_| format!("{ms:?} in {s:?} is not a number of ms"))?;
        if !(period_ms > 0.0 && period_ms.is_finite()) {
            return Err(format!("{ms:?} in {s:?} is not a positive number of ms"));
        }
        Ok(PeriodOverride {
            message: m.trim().to_string(),
            period_ms,
            sporadic: false,
        })
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Nominal bitrate (else the file's `Baudrate`, else 500 kbit/s).
    pub bitrate: Option<u32>,
    /// Data-phase bitrate for FD messages with BRS (else the file's `BaudrateCANFD`).
    pub data_bitrate: Option<u32>,
    /// Minimum inter-arrival time (ms) for event messages that give none.
    pub default_period_ms: Option<f64>,
    /// Per-message periods / minimum inter-arrival times.
    pub overrides: Vec<PeriodOverride>,
    /// Leave out messages that cannot be imported (with a warning) instead of failing.
    pub skip_invalid: bool,
    /// Leave the signals out (can-sim then sends its own test payload).
    pub skip_signals: bool,
}

/// The import result.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The `can` section.
    pub can: Can,
    /// Messages left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// What the import changed or ignored, each with its place.
    pub warnings: Vec<String>,
    /// The section rendered as RON (by [`import`], which checked that it loads; empty from
    /// [`from_dbc`]: rendered when written).
    pub ron: String,
}

impl Imported {
    /// Number of (periodic, sporadic) messages.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.can.ecus.iter().flat_map(|e| &e.messages);
        let sporadic = all.clone().filter(|m| m.sporadic).count();
        (all.count() - sporadic, sporadic)
    }
}

fn num(v: Option<&AttrValue>) -> Option<f64> {
    match v? {
        AttrValue::Num(n) => Some(*n),
        AttrValue::Str(s) => s.trim().parse().ok(),
    }
}

/// Smallest CAN FD length that holds `size` bytes (None above 64).
fn fd_len(size: u32) -> Option<u8> {
    profiles::validate::FD_LENGTHS
        .into_iter()
        .find(|l| u32::from(*l) >= size)
}

/// How a message is sent, from its attributes and the options.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Timing {
    Periodic(f64),
    Sporadic(f64),
}

fn event_send_type(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["spontan", "event", "onchange", "onwrite"]
        .iter()
        .any(|k| n.contains(k))
}

/// The timing of `m`, or why it has none.
fn timing(dbc: &Dbc, m: &DbcMessage, opts: &ImportOptions) -> Result<Timing, String> {
    let by_name = |o: &&PeriodOverride| {
        o.message == m.name || parse_id(&o.message).is_some_and(|id| id == m.id)
    };
    if let Some(o) = opts.overrides.iter().rev().find(by_name) {
        return Ok(if o.sporadic {
            Timing::Sporadic(o.period_ms)
        } else {
            Timing::Periodic(o.period_ms)
        });
    }
    let positive = |v: Option<f64>| v.filter(|x| *x > 0.0 && x.is_finite());
    let cycle = positive(num(dbc.message_attr(m, "GenMsgCycleTime")));
    let delay = positive(num(dbc.message_attr(m, "GenMsgDelayTime")));
    let send_type = dbc
        .message_attr(m, "GenMsgSendType")
        .and_then(|v| dbc.enum_name("GenMsgSendType", v));
    let event = send_type.is_some_and(event_send_type);
    match (cycle, event) {
        (Some(c), false) => Ok(Timing::Periodic(c)),
        _ => match delay
            .or(if event { cycle } else { None })
            .or(opts.default_period_ms)
        {
            Some(t) => Ok(Timing::Sporadic(t)),
            None => Err(format!(
                "event-driven ({}), no GenMsgDelayTime: give --default-period MS or \
                 --min-interval {}=MS",
                send_type.map_or_else(
                    || "no GenMsgCycleTime".to_string(),
                    |t| format!("GenMsgSendType {t}")
                ),
                m.name
            )),
        },
    }
}

/// `0x1F0` or `496` as an id.
fn parse_id(s: &str) -> Option<u32> {
    parse_hex_or_dec(s).ok()
}

/// `0x1F0` (hex with `0x` or `0X`) or `496` (decimal) as a number.
pub fn parse_hex_or_dec(s: &str) -> Result<u32, std::num::ParseIntError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
}

/// Vector's `VFrameFormat` values by index, for files that define it as INT 0..15.
fn vframe_format_name(n: f64) -> Option<&'static str> {
    match n {
        0.0 => Some("StandardCAN"),
        1.0 => Some("ExtendedCAN"),
        3.0 => Some("J1939PG"),
        14.0 => Some("StandardCAN_FD"),
        15.0 => Some("ExtendedCAN_FD"),
        _ => None,
    }
}

/// The message's name: CANdb++ keeps names over 32 characters in
/// `SystemMessageLongSymbol` and a shortened one in `BO_`.
fn message_name(m: &DbcMessage) -> String {
    match m.attr("SystemMessageLongSymbol") {
        Some(AttrValue::Str(long)) if !long.trim().is_empty() => long.clone(),
        _ => m.name.clone(),
    }
}

/// Frame kind and payload length of `m`; warnings for what was changed.
fn frame(
    dbc: &Dbc,
    m: &DbcMessage,
    data_bitrate: Option<u32>,
    warn: &mut Vec<String>,
) -> Result<(FrameKind, u8), String> {
    let at = m.pos;
    let format = dbc.message_attr(m, "VFrameFormat").and_then(|v| {
        dbc.enum_name("VFrameFormat", v).or(match v {
            // Defined as INT: the index of Vector's list.
            AttrValue::Num(n) => vframe_format_name(*n),
            AttrValue::Str(_) => None,
        })
    });
    let fd_format = format.is_some_and(|f| f.to_ascii_uppercase().contains("FD"));
    if let Some(f) = format {
        let says_ext = f.to_ascii_lowercase().starts_with("extended") || f == "J1939PG";
        let says_std = f.to_ascii_lowercase().starts_with("standard");
        if (says_ext && !m.extended) || (says_std && m.extended) {
            warn.push(format!(
                "{at}: message {}: VFrameFormat {f} disagrees with its id {} ({}): the id's \
                 flag is kept",
                m.name,
                m.raw_id,
                if m.extended { "extended" } else { "standard" }
            ));
        }
    }
    if m.size > 64 {
        return Err(format!(
            "size {} bytes is above 64, the CAN FD maximum",
            m.size
        ));
    }
    if !fd_format && m.size <= 8 {
        return Ok((FrameKind::Classic, u8::try_from(m.size).unwrap_or(8)));
    }
    if !fd_format {
        warn.push(format!(
            "{at}: message {}: size {} is above 8 {}: imported as CAN FD",
            m.name,
            m.size,
            format.map_or_else(
                || "and no VFrameFormat says CAN FD".to_string(),
                |f| format!("but its VFrameFormat is {f}")
            )
        ));
    }
    let len = fd_len(m.size).unwrap_or(64);
    if u32::from(len) != m.size {
        warn.push(format!(
            "{at}: message {}: size {} is not a CAN FD length: rounded up to {len}",
            m.name, m.size
        ));
    }
    let brs = num(dbc.message_attr(m, "CANFD_BRS")).is_some_and(|b| b == 1.0)
        || dbc
            .message_attr(m, "CANFD_BRS")
            .and_then(|v| dbc.enum_name("CANFD_BRS", v))
            .is_some_and(|n| n == "1");
    let kind = match (brs, data_bitrate) {
        (true, Some(_)) => FrameKind::FdBrs,
        (true, None) => {
            warn.push(format!(
                "{at}: message {}: CANFD_BRS is set but no data bitrate is known (give \
                 --data-bitrate or the BaudrateCANFD attribute): imported as FD without \
                 bit-rate switch, which is slower (the analysis stays on the safe side)",
                m.name
            ));
            FrameKind::Fd
        }
        (false, _) => FrameKind::Fd,
    };
    Ok((kind, len))
}

fn bitrates(dbc: &Dbc, opts: &ImportOptions, warn: &mut Vec<String>) -> (u32, Option<u32>) {
    let attr = |name: &str| {
        num(dbc
            .network_attrs
            .get(name)
            .or_else(|| dbc.attr_defaults.get(name)))
        .and_then(crate::timing::f64_to_u64)
        .and_then(|b| u32::try_from(b).ok())
        .filter(|b| *b > 0)
    };
    let max = profiles::validate::MAX_BITRATE;
    let bitrate = match opts.bitrate.or_else(|| attr("Baudrate")) {
        Some(b) if b <= max => b,
        Some(b) => {
            warn.push(format!(
                "Baudrate {b} is above {max} bit/s, the highest nominal CAN bitrate (a data \
                 bitrate?): using 500000; give --bitrate"
            ));
            500_000
        }
        None => 500_000,
    };
    let data = opts.data_bitrate.or_else(|| attr("BaudrateCANFD"));
    (bitrate, data)
}

/// One message as the profile has it, or why it is left out (with an error flag: true
/// when the message is invalid rather than just not simulable).
fn message(
    dbc: &Dbc,
    m: &DbcMessage,
    opts: &ImportOptions,
    data_bitrate: Option<u32>,
    warn: &mut Vec<String>,
) -> Result<Message, (bool, String)> {
    let timing = timing(dbc, m, opts).map_err(|w| (false, w))?;
    let (kind, len) = frame(dbc, m, data_bitrate, warn).map_err(|e| (true, e))?;
    let (period_ms, sporadic) = match timing {
        Timing::Periodic(t) => (t, false),
        Timing::Sporadic(t) => (t, true),
    };
    let period_us = crate::timing::f64_to_u64((period_ms * 1000.0).round()).unwrap_or(0);
    let mut offset_us = num(dbc.message_attr(m, "GenMsgStartDelayTime"))
        .and_then(|ms| crate::timing::f64_to_u64((ms * 1000.0).round()))
        .unwrap_or(0);
    if period_us > 0 && offset_us >= period_us {
        let reduced = offset_us % period_us;
        warn.push(format!(
            "{}: message {}: GenMsgStartDelayTime {} ms is not below its period {period_ms} \
             ms: offset {reduced} us (the same phase)",
            m.pos,
            m.name,
            crate::timing::ns_to_ms(offset_us * 1000)
        ));
        offset_us = reduced;
    }
    Ok(Message {
        name: Some(message_name(m)),
        id: m.id,
        extended: m.extended,
        kind,
        len,
        period_ms,
        sporadic,
        offset_us,
        jitter_us: 0,
        deadline_us: None,
        signals: if opts.skip_signals {
            Vec::new()
        } else {
            signals::signals(dbc, m, len, warn)
        },
        e2e: None,
    })
}

fn check_overrides(dbc: &Dbc, path: &str, opts: &ImportOptions) -> Result<(), DbcImportError> {
    for o in &opts.overrides {
        let known = dbc
            .messages
            .iter()
            .any(|m| m.name == o.message || parse_id(&o.message) == Some(m.id));
        if !known {
            return Err(DbcImportError::UnknownOverride {
                path: path.to_string(),
                target: o.message.clone(),
            });
        }
    }
    Ok(())
}

/// What the import gathers, message by message.
#[derive(Default)]
struct Gathered {
    ecus: BTreeMap<String, Vec<Message>>,
    skipped: Vec<(String, String)>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Gathered {
    /// Messages whose id is not a CAN id: errors, or left out with `--skip-invalid`.
    fn invalid(&mut self, dbc: &Dbc, opts: &ImportOptions) {
        for (pos, name, why) in &dbc.invalid {
            if opts.skip_invalid {
                self.warnings.push(format!("{pos}: {why}: left out"));
                self.skipped
                    .push((name.clone(), "not a CAN id".to_string()));
            } else {
                self.errors.push(format!("{pos}: {why}"));
            }
        }
    }

    /// Every message, once per id and name, grouped by sending ECU.
    fn messages(&mut self, dbc: &Dbc, opts: &ImportOptions, data_bitrate: Option<u32>) {
        let mut ids: HashMap<(u32, bool), &str> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for m in &dbc.messages {
            if let Some(first) = ids.get(&(m.id, m.extended)) {
                self.warnings.push(format!(
                    "{}: message {} has the id {} of message {first}: left out (one sender per id)",
                    m.pos,
                    m.name,
                    crate::schedule::id_text(m.id, m.extended)
                ));
                self.skipped
                    .push((m.name.clone(), format!("duplicate id of {first}")));
                continue;
            }
            ids.insert((m.id, m.extended), &m.name);
            let mut msg = match message(dbc, m, opts, data_bitrate, &mut self.warnings) {
                Ok(msg) => msg,
                Err((true, e)) if !opts.skip_invalid => {
                    self.errors
                        .push(format!("{}: Message {}: {e}", m.pos, m.name));
                    continue;
                }
                Err((_, why)) => {
                    self.skipped.push((m.name.clone(), why));
                    continue;
                }
            };
            let name = msg.name.clone().unwrap_or_default();
            let seen = names.entry(name.clone()).or_insert(0);
            *seen += 1;
            if *seen > 1 {
                let renamed = format!("{name}_{seen}");
                self.warnings.push(format!(
                    "{}: a second message is named {name}: renamed {renamed}",
                    m.pos
                ));
                msg.name = Some(renamed);
            }
            let ecu = m
                .transmitter
                .clone()
                .unwrap_or_else(|| "Vector__XXX".into());
            self.ecus.entry(ecu).or_default().push(msg);
        }
    }
}

/// The section from a parsed file.
pub fn from_dbc(dbc: &Dbc, path: &str, opts: &ImportOptions) -> Result<Imported, DbcImportError> {
    check_overrides(dbc, path, opts)?;
    let mut g = Gathered {
        warnings: dbc.warnings.clone(),
        ..Gathered::default()
    };
    let (bitrate, data_bitrate) = bitrates(dbc, opts, &mut g.warnings);
    g.invalid(dbc, opts);
    g.messages(dbc, opts, data_bitrate);
    if !g.errors.is_empty() {
        return Err(DbcImportError::Messages {
            path: path.to_string(),
            errors: g.errors,
        });
    }
    if g.ecus.is_empty() {
        return Err(DbcImportError::Empty {
            path: path.to_string(),
            why: match g.skipped.first() {
                None => "it defines no BO_".to_string(),
                Some((name, why)) => format!(
                    "all {} messages were left out (first: {name}: {why})",
                    g.skipped.len()
                ),
            },
        });
    }
    let fd_brs = g
        .ecus
        .values()
        .flatten()
        .any(|m| m.kind == FrameKind::FdBrs);
    Ok(Imported {
        can: Can {
            bitrate,
            data_bitrate: data_bitrate.filter(|_| fd_brs),
            tx: "vcan0".to_string(),
            rx: "vcan0".to_string(),
            pace: true,
            error_rate_per_s: 0.0,
            ecus: g
                .ecus
                .into_iter()
                .map(|(name, messages)| Ecu {
                    name,
                    cpu: None,
                    priority: 80,
                    messages,
                })
                .collect(),
        },
        skipped: g.skipped,
        warnings: g.warnings,
        ron: String::new(),
    })
}

/// Import DBC text: parse, map, render, then check that the rendered RON loads back as
/// the same matrix and validates as a profile (what [`to_ron`] and [`to_profile`] write).
pub fn import(text: &str, path: &str, opts: &ImportOptions) -> Result<Imported, DbcImportError> {
    let dbc = parse::parse(text).map_err(|e| DbcImportError::Parse {
        path: path.to_string(),
        line: e.pos.line,
        col: e.pos.col,
        message: e.message,
    })?;
    let mut imp = from_dbc(&dbc, path, opts)?;
    // The parse tree is not needed any more: free it before the text and its read-back
    // copy exist (peak memory).
    drop(dbc);
    // Rendered once: checked here, written by the caller.
    imp.ron = render_can(&imp.can);
    check(&imp, path)?;
    Ok(imp)
}

/// The rendered section must load as a profile equal to what was imported, and validate.
fn check(imp: &Imported, path: &str) -> Result<(), DbcImportError> {
    let invalid = |errors: String| DbcImportError::Invalid {
        path: path.to_string(),
        errors,
    };
    let text = to_profile(imp, "dbc-import");
    let back = profiles::parse(&text, path).map_err(|e| invalid(e.to_string()))?;
    if back.can.as_ref() != Some(&imp.can) {
        return Err(invalid(
            "the RON text does not read back as the same matrix".into(),
        ));
    }
    profiles::validate(&back).map_err(|errs| {
        invalid(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

fn render_can(can: &Can) -> String {
    let cfg = ron::ser::PrettyConfig::new()
        .depth_limit(4)
        .separate_tuple_members(false)
        .enumerate_arrays(false);
    ron::ser::to_string_pretty(can, cfg).unwrap_or_else(|e| format!("/* cannot render: {e} */"))
}

fn body(imp: &Imported) -> std::borrow::Cow<'_, str> {
    if imp.ron.is_empty() {
        render_can(&imp.can).into()
    } else {
        imp.ron.as_str().into()
    }
}

fn comments(imp: &Imported) -> String {
    let mut out = String::new();
    for (name, why) in &imp.skipped {
        out.push_str(&format!("// skipped {name}: {why}\n"));
    }
    out
}

/// The section as RON, ready to paste into a profile: `can: Some(<this>),`.
pub fn to_ron(imp: &Imported) -> String {
    format!("{}can: Some({}),\n", comments(imp), body(imp))
}

/// A whole profile named `name` holding the section (`can-sim run FILE` takes it as is).
pub fn to_profile(imp: &Imported, name: &str) -> String {
    format!(
        "{}Profile(\n    name: {name:?},\n    can: Some({}),\n)\n",
        comments(imp),
        body(imp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small DBC written for these tests (tests/fixtures/powertrain.dbc): two nodes,
    /// three periodic messages (one with an extended id and a start delay), one event
    /// message without a cycle time.
    pub const FIXTURE: &str = include_str!("../../tests/fixtures/powertrain.dbc");

    fn opts() -> ImportOptions {
        ImportOptions::default()
    }

    #[test]
    fn imports_periodic_messages_by_transmitter() {
        let imp = import(FIXTURE, "fixture.dbc", &opts()).unwrap();
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
        assert!(
            imp.skipped[0]
                .1
                .starts_with("event-driven (no GenMsgCycleTime)"),
            "{}",
            imp.skipped[0].1
        );
        let o = ImportOptions {
            bitrate: Some(500_000),
            ..opts()
        };
        assert_eq!(import(FIXTURE, "f", &o).unwrap().can.bitrate, 500_000);
    }

    fn brake_event(imp: &Imported) -> &Message {
        imp.can.ecus[0]
            .messages
            .iter()
            .find(|m| m.id == 0x400)
            .unwrap()
    }

    #[test]
    fn event_messages_become_sporadic() {
        // --default-period: every event message gets that minimum inter-arrival time.
        let o = ImportOptions {
            default_period_ms: Some(50.0),
            ..opts()
        };
        let imp = import(FIXTURE, "f", &o).unwrap();
        let ev = brake_event(&imp);
        assert!(ev.sporadic);
        assert_eq!(ev.period_ms, 50.0);
        assert_eq!(imp.counts(), (3, 1));
        // A per-message override wins, by name or by id.
        for target in ["BrakeEvent", "0x400", "1024"] {
            let o = ImportOptions {
                default_period_ms: Some(50.0),
                overrides: vec![PeriodOverride {
                    message: target.into(),
                    period_ms: 5.0,
                    sporadic: true,
                }],
                ..opts()
            };
            let imp = import(FIXTURE, "f", &o).unwrap();
            let ev = brake_event(&imp);
            assert_eq!((ev.period_ms, ev.sporadic), (5.0, true), "{target}");
        }
        let o = ImportOptions {
            overrides: vec!["Nope=5".parse().unwrap()],
            ..opts()
        };
        let e = import(FIXTURE, "f.dbc", &o).unwrap_err();
        assert!(
            matches!(e, DbcImportError::UnknownOverride { ref target, .. } if target == "Nope"),
            "{e}"
        );
        assert_eq!(
            "X=0".parse::<PeriodOverride>().unwrap_err(),
            "\"0\" in \"X=0\" is not a positive number of ms"
        );
    }

    fn dbc(body: &str) -> String {
        format!(
            "BU_: A\n{body}\nBA_DEF_ BO_ \"GenMsgCycleTime\" INT 0 65535;\n\
             BA_DEF_ BO_ \"GenMsgDelayTime\" INT 0 65535;\n\
             BA_DEF_ BO_ \"GenMsgSendType\" ENUM \"Cyclic\",\"Spontaneous\",\"IfActive\";\n\
             BA_DEF_ BO_ \"GenMsgStartDelayTime\" INT 0 65535;\n\
             BA_DEF_ BO_ \"VFrameFormat\" ENUM \"StandardCAN\",\"ExtendedCAN\",\"reserved\",\"J1939PG\",\
             \"reserved\",\"reserved\",\"reserved\",\"reserved\",\"reserved\",\"reserved\",\"reserved\",\
             \"reserved\",\"reserved\",\"reserved\",\"StandardCAN_FD\",\"ExtendedCAN_FD\";\n\
             BA_DEF_ BO_ \"CANFD_BRS\" ENUM \"0\",\"1\";\n\
             BA_DEF_DEF_ \"GenMsgSendType\" \"Cyclic\";\n"
        )
    }

    #[test]
    fn send_types_and_delay_times() {
        let text = dbc("BO_ 1 Cyc: 8 A\nBO_ 2 Spont: 8 A\nBO_ 3 Both: 8 A\n\
            BA_ \"GenMsgCycleTime\" BO_ 1 10;\n\
            BA_ \"GenMsgSendType\" BO_ 2 1;\nBA_ \"GenMsgDelayTime\" BO_ 2 20;\n\
            BA_ \"GenMsgCycleTime\" BO_ 3 100;\nBA_ \"GenMsgSendType\" BO_ 3 \"Spontaneous\";\n\
            BA_ \"GenMsgDelayTime\" BO_ 3 5;\n");
        let imp = import(&text, "t.dbc", &opts()).unwrap();
        let m: Vec<(f64, bool)> = imp.can.ecus[0]
            .messages
            .iter()
            .map(|m| (m.period_ms, m.sporadic))
            .collect();
        assert_eq!(m, vec![(10.0, false), (20.0, true), (5.0, true)]);
    }

    #[test]
    fn fd_in_both_spellings_and_brs() {
        let text = dbc(
            "BO_ 1 Idx: 64 A\nBO_ 2 Name: 8 A\nBO_ 3 Big: 12 A\nBO_ 4 Odd: 10 A\n\
            BA_ \"VFrameFormat\" BO_ 1 14;\nBA_ \"CANFD_BRS\" BO_ 1 1;\n\
            BA_ \"VFrameFormat\" BO_ 2 \"StandardCAN_FD\";\n\
            BA_ \"GenMsgCycleTime\" BO_ 1 10;\nBA_ \"GenMsgCycleTime\" BO_ 2 10;\n\
            BA_ \"GenMsgCycleTime\" BO_ 3 10;\nBA_ \"GenMsgCycleTime\" BO_ 4 10;\n",
        );
        let o = ImportOptions {
            data_bitrate: Some(2_000_000),
            ..opts()
        };
        let imp = import(&text, "t.dbc", &o).unwrap();
        let k: Vec<(FrameKind, u8)> = imp.can.ecus[0]
            .messages
            .iter()
            .map(|m| (m.kind, m.len))
            .collect();
        // VFrameFormat defined as INT instead of ENUM: Vector's index table.
        let int_def = text.replace(
            &text[text.find("BA_DEF_ BO_ \"VFrameFormat\"").unwrap()
                ..text.find("BA_DEF_ BO_ \"CANFD_BRS\"").unwrap()],
            "BA_DEF_ BO_ \"VFrameFormat\" INT 0 15;\n",
        );
        let imp2 = import(&int_def, "t.dbc", &o).unwrap();
        assert_eq!(imp2.can.ecus[0].messages[0].kind, FrameKind::FdBrs);
        assert_eq!(
            k,
            vec![
                (FrameKind::FdBrs, 64),
                (FrameKind::Fd, 8),
                (FrameKind::Fd, 12),
                (FrameKind::Fd, 12)
            ]
        );
        assert_eq!(imp.can.data_bitrate, Some(2_000_000));
        let w = imp.warnings.join("\n");
        assert!(w.contains("message Big: size 12 is above 8 and no VFrameFormat says CAN FD: imported as CAN FD"), "{w}");
        assert!(
            w.contains("message Odd: size 10 is not a CAN FD length: rounded up to 12"),
            "{w}"
        );
        // BRS without a data bitrate: FD without BRS, said so.
        let imp = import(&text, "t.dbc", &opts()).unwrap();
        assert_eq!(imp.can.ecus[0].messages[0].kind, FrameKind::Fd);
        assert_eq!(imp.can.data_bitrate, None);
        assert!(imp
            .warnings
            .iter()
            .any(|w| w.contains("CANFD_BRS is set but no data bitrate")));
    }

    #[test]
    fn what_can_sim_would_reject_is_fixed_and_said() {
        let text = dbc(
            "BO_ 1 A1: 8 A\nBO_ 1 Dup: 8 A\nBO_ 2 A1: 8 A\nBO_ 3 Late: 8 A\n\
            BA_ \"Baudrate\" 5000000;\n\
            BA_ \"GenMsgCycleTime\" BO_ 1 10;\nBA_ \"GenMsgCycleTime\" BO_ 2 10;\n\
            BA_ \"GenMsgCycleTime\" BO_ 3 10;\nBA_ \"GenMsgStartDelayTime\" BO_ 3 25;\n",
        );
        let imp = import(&text, "t.dbc", &opts()).unwrap();
        assert_eq!(imp.can.bitrate, 500_000);
        let msgs = &imp.can.ecus[0].messages;
        let names: Vec<&str> = msgs.iter().map(|m| m.name.as_deref().unwrap()).collect();
        assert_eq!(names, vec!["A1", "A1_2", "Late"]);
        assert_eq!(msgs[2].offset_us, 5000);
        let w = imp.warnings.join("\n");
        assert!(w.contains("Baudrate 5000000 is above 1000000"), "{w}");
        assert!(
            w.contains("message Dup has the id 0x001 of message A1: left out"),
            "{w}"
        );
        assert!(
            w.contains("a second message is named A1: renamed A1_2"),
            "{w}"
        );
        assert!(
            w.contains("GenMsgStartDelayTime 25 ms is not below its period 10 ms: offset 5000 us"),
            "{w}"
        );
    }

    #[test]
    fn oversized_messages_are_errors_or_skipped() {
        let text = dbc("BO_ 1 Huge: 70 A\nBO_ 2 Fine: 8 A\n\
            BA_ \"GenMsgCycleTime\" BO_ 1 10;\nBA_ \"GenMsgCycleTime\" BO_ 2 10;\n");
        let e = import(&text, "t.dbc", &opts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.dbc: 1 message(s) cannot be imported (--skip-invalid leaves them out): 2:1: \
             Message Huge: size 70 bytes is above 64, the CAN FD maximum"
        );
        let o = ImportOptions {
            skip_invalid: true,
            ..opts()
        };
        let imp = import(&text, "t.dbc", &o).unwrap();
        assert_eq!(imp.skipped[0].0, "Huge");
        assert_eq!(imp.can.ecus[0].messages.len(), 1);
    }

    #[test]
    fn ron_output_loads_as_a_profile() {
        let imp = import(FIXTURE, "fixture.dbc", &opts()).unwrap();
        let section = to_ron(&imp);
        assert!(section.contains("// skipped BrakeEvent"));
        let profile = format!("Profile(name: \"dbc\", {section})");
        let p: profiles::Profile =
            profiles::parse(&profile, "t").unwrap_or_else(|e| panic!("{e}\n{profile}"));
        assert_eq!(p.can.unwrap(), imp.can);
        let whole = profiles::parse(&to_profile(&imp, "pt"), "t").unwrap();
        assert_eq!(whole.name, "pt");
        assert_eq!(whole.can.unwrap(), imp.can);
    }

    #[test]
    fn garbage_is_named_with_line_and_column() {
        let e = import("BO_ what", "bad.dbc", &opts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad.dbc:1:5: Expected the message id after BO_ (an unsigned integer), found \"what\""
        );
        let e = import(
            "BO_ 1075054137 Bad: 8 X\nBO_ 2048 Big: 8 X\n",
            "ids.dbc",
            &opts(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, DbcImportError::Messages { errors, .. } if errors.len() == 2),
            "{e}"
        );
        assert!(e.to_string().starts_with("ids.dbc: 2 message(s) cannot be imported (--skip-invalid leaves them out): 1:5: Message Bad: id 0x40140639"), "{e}");
        let e = import("VERSION \"\"\n", "empty.dbc", &opts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "empty.dbc has no message to simulate: it defines no BO_"
        );
    }

    /// Linear time: 20 000 messages with references at the end import in well under a
    /// second even in a debug build (the old importer searched every attribute for
    /// every message).
    #[test]
    fn import_is_linear() {
        let mut text = String::from("BU_: A\n");
        let n = 20_000u32;
        for i in 0..n {
            text.push_str(&format!(
                "BO_ {} M{i}: 8 A\n SG_ S{i} : 0|8@1+ (1,0) [0|255] \"\" A\n",
                0x8000_0000u32 | (0x10000 + i)
            ));
        }
        text.push_str("BA_DEF_ BO_ \"GenMsgCycleTime\" INT 0 65535;\n");
        for i in 0..n {
            text.push_str(&format!(
                "BA_ \"GenMsgCycleTime\" BO_ {} 1000;\n",
                0x8000_0000u32 | (0x10000 + i)
            ));
        }
        let t0 = std::time::Instant::now();
        let imp = import(&text, "big.dbc", &opts()).unwrap();
        let took = t0.elapsed();
        assert_eq!(imp.counts(), (20_000, 0));
        assert!(took.as_secs_f64() < 20.0, "{took:?}");
    }
}
