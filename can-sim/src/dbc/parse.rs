//! A DBC file into the parts a CAN matrix needs: nodes, messages with their signals,
//! attribute definitions, defaults and values, signal value types (`SIG_VALTYPE_`) and
//! extended multiplexing (`SG_MUL_VAL_`). Statements that carry nothing for the matrix
//! (comments, value tables, environment variables, signal groups, relations, ...) are
//! checked for their end (`;`) and skipped.
//!
//! Written here rather than taken from the `can-dbc` crate (8.1, and 10.0, its latest):
//! that crate converts message ids with `as u16` and masks bits 29-31 (a FIXME in its
//! source), so `BO_ 1075053113` (0x40140639, no extended flag) becomes the valid standard
//! id 0x639 and attributes attach to the wrong message; it offers no way to see the raw
//! id before that; and its whole-file parse tree costs about 750 MB for 100 000 messages.
//! This parser keeps every id as written (`raw_id`, bit 31 the extended flag), rejects
//! ids that are not CAN ids with the message's name and place, resolves every reference
//! through a map of raw ids (linear time), and reports errors as `line:column: what`.
//!
//! Grammar: Vector's "DBC File Format Documentation" 1.0.5, as the statements appear in
//! real files (keywords, then words, numbers and strings; see [`super::lex`]).

use std::collections::HashMap;

use super::lex::{Lexer, Pos, Tok, Token};

/// Extended-id flag of a DBC message id (bit 31).
pub const EXTENDED_FLAG: u64 = 0x8000_0000;
/// Highest 29-bit identifier.
pub const MAX_EXTENDED: u64 = 0x1FFF_FFFF;
/// Highest 11-bit identifier.
pub const MAX_STANDARD: u64 = 0x7FF;
/// The pseudo-message CANdb++ keeps unplaced signals in (id 0xC0000000): not a frame.
pub const INDEPENDENT_SIGNALS: &str = "VECTOR__INDEPENDENT_SIG_MSG";

/// A parse error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where.
    pub pos: Pos,
    /// What is wrong (starts with a capital, names the statement or message).
    pub message: String,
}

/// An attribute value as written: a number or a string (enum values may be either, an
/// index or a name).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
}

/// The value type of an attribute definition (`BA_DEF_`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrKind {
    /// INT / HEX / FLOAT with their range.
    Number,
    /// STRING.
    String,
    /// ENUM with its names (index 0 first).
    Enum(Vec<String>),
}

/// A multiplexer indicator of a signal (`M`, `m3`, `m3M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MuxIndicator {
    /// A plain signal.
    #[default]
    None,
    /// The multiplexer switch (`M`).
    Switch,
    /// Present when the switch has this value (`m3`).
    Multiplexed(u64),
    /// Present for this value, and a switch itself (`m3M`, extended multiplexing).
    MultiplexedSwitch(u64),
}

/// One `SG_`.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcSignal {
    /// Name.
    pub name: String,
    /// Start bit (Intel: the LSB; Motorola: the MSB, in DBC bit numbering).
    pub start_bit: u32,
    /// Length in bits.
    pub size: u32,
    /// `@1` (Intel) when true, `@0` (Motorola) when false.
    pub little_endian: bool,
    /// `-` (two's complement) when true.
    pub signed: bool,
    /// Physical = raw * factor + offset.
    pub factor: f64,
    /// See `factor`.
    pub offset: f64,
    /// Physical minimum.
    pub min: f64,
    /// Physical maximum.
    pub max: f64,
    /// Unit.
    pub unit: String,
    /// Receiving nodes.
    pub receivers: Vec<String>,
    /// Multiplexing.
    pub mux: MuxIndicator,
    /// `SIG_VALTYPE_`: 1 IEEE float, 2 IEEE double.
    pub float: Option<u8>,
    /// `SG_MUL_VAL_`: (switch signal, inclusive ranges of its values).
    pub mux_ranges: Vec<(String, Vec<(u64, u64)>)>,
    /// `BA_ ... SG_` values.
    pub attrs: Vec<(String, AttrValue)>,
    /// Where the `SG_` is.
    pub pos: Pos,
}

/// One `BO_`.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcMessage {
    /// Name.
    pub name: String,
    /// The id as written (bit 31: extended).
    pub raw_id: u32,
    /// The CAN identifier (11 or 29 bits).
    pub id: u32,
    /// 29-bit identifier.
    pub extended: bool,
    /// Size in bytes as written.
    pub size: u32,
    /// Sending node (None for `Vector__XXX`).
    pub transmitter: Option<String>,
    /// Signals.
    pub signals: Vec<DbcSignal>,
    /// `BA_ ... BO_` values.
    pub attrs: Vec<(String, AttrValue)>,
    /// Where the `BO_` is.
    pub pos: Pos,
}

impl DbcMessage {
    /// The value of attribute `name` on this message, if set.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl DbcSignal {
    /// The value of attribute `name` on this signal, if set.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A parsed DBC file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dbc {
    /// `BU_` nodes.
    pub nodes: Vec<String>,
    /// Messages in file order (the independent-signals pseudo-message left out).
    pub messages: Vec<DbcMessage>,
    /// `BA_DEF_` by name.
    pub attr_defs: HashMap<String, AttrKind>,
    /// `BA_DEF_DEF_` by name.
    pub attr_defaults: HashMap<String, AttrValue>,
    /// Network (database) attribute values (`BA_ "name" value;`).
    pub network_attrs: HashMap<String, AttrValue>,
    /// Messages whose id is not a CAN id: (where, name, why). Left out of `messages`;
    /// references to them are ignored.
    pub invalid: Vec<(Pos, String, String)>,
    /// Things that were ignored or read leniently, and why (`line:col: ...`): references
    /// to undefined messages or signals, a missing `;`.
    pub warnings: Vec<String>,
}

impl Dbc {
    /// The value of a message attribute: the message's own, else the default.
    pub fn message_attr<'a>(&'a self, m: &'a DbcMessage, name: &str) -> Option<&'a AttrValue> {
        m.attr(name).or_else(|| self.attr_defaults.get(name))
    }

    /// The value of a signal attribute: the signal's own, else the default.
    pub fn signal_attr<'a>(&'a self, s: &'a DbcSignal, name: &str) -> Option<&'a AttrValue> {
        s.attr(name).or_else(|| self.attr_defaults.get(name))
    }

    /// An enum attribute's value as its name: a number is an index into the definition's
    /// names (CANdb++ writes indices), a string is the name itself.
    pub fn enum_name<'a>(&'a self, attr: &str, v: &'a AttrValue) -> Option<&'a str> {
        match v {
            AttrValue::Str(s) => Some(s.as_str()),
            AttrValue::Num(n) => match self.attr_defs.get(attr) {
                Some(AttrKind::Enum(names)) if n.fract() == 0.0 && *n >= 0.0 => {
                    // An index is small and whole: the cast is exact.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let i = *n as usize;
                    names.get(i).map(String::as_str)
                }
                _ => None,
            },
        }
    }
}

/// Statements skipped up to their `;`.
const SKIPPED: &[&str] = &[
    "CM_",
    "VAL_TABLE_",
    "VAL_",
    "BO_TX_BU_",
    "EV_",
    "ENVVAR_DATA_",
    "SGTYPE_",
    "SGTYPE_VAL_",
    "SIG_TYPE_REF_",
    "SIG_GROUP_",
    "BA_DEF_REL_",
    "BA_REL_",
    "BA_DEF_DEF_REL_",
    "BA_DEF_SGTYPE_",
    "BA_SGTYPE_",
    "BU_SG_REL_",
    "BU_EV_REL_",
    "BU_BO_REL_",
    "CAT_DEF_",
    "CAT_",
    "FILTER",
    "SIGTYPE_VALTYPE_",
];

/// Every statement keyword (those parsed and those skipped).
fn is_keyword(w: &str) -> bool {
    SKIPPED.contains(&w)
        || matches!(
            w,
            "VERSION"
                | "NS_"
                | "BS_"
                | "BU_"
                | "BO_"
                | "SG_"
                | "BA_DEF_"
                | "BA_DEF_DEF_"
                | "BA_"
                | "SIG_VALTYPE_"
                | "SG_MUL_VAL_"
        )
}

/// A keyword in the first column of its line: where a statement starts.
fn starts_statement(t: &Token<'_>) -> bool {
    t.first_on_line && t.pos.col == 1 && matches!(t.tok, Tok::Word(w) if is_keyword(w))
}

/// A reference resolved after the whole file is read (BA_ may come before BO_).
enum Pending {
    MsgAttr(u64, String, AttrValue, Pos),
    SigAttr(u64, String, String, AttrValue, Pos),
    ValType(u64, String, u8, Pos),
    MuxVal(u64, String, String, Vec<(u64, u64)>, Pos),
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token<'a>>,
    last: Pos,
    dbc: Dbc,
    pending: Vec<Pending>,
    /// Raw ids of the independent-signals pseudo-message (references to it are ignored).
    independent: Vec<u64>,
}

type PResult<T> = Result<T, ParseError>;

fn err<T>(pos: Pos, message: impl Into<String>) -> PResult<T> {
    Err(ParseError {
        pos,
        message: message.into(),
    })
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> PResult<Option<Token<'a>>> {
        if self.peeked.is_none() {
            self.peeked = match self.lex.next() {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(u)) => return err(u.pos, "String is never closed (no matching '\"')"),
            };
        }
        Ok(self.peeked)
    }

    fn next(&mut self, what: &str) -> PResult<Token<'a>> {
        match self.peek()? {
            Some(t) => {
                self.peeked = None;
                self.last = t.pos;
                Ok(t)
            }
            None => err(self.last, format!("File ends where {what} was expected")),
        }
    }

    fn expect_punct(&mut self, c: char, ctx: &str) -> PResult<()> {
        let t = self.next(&format!("'{c}'"))?;
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            err(t.pos, format!("Expected '{c}' {ctx}, found {}", t.tok))
        }
    }

    fn peek_is_punct(&mut self, c: char) -> PResult<bool> {
        Ok(self.peek()?.is_some_and(|t| t.tok == Tok::Punct(c)))
    }

    fn word(&mut self, what: &str, ctx: &str) -> PResult<(&'a str, Pos)> {
        let t = self.next(what)?;
        match t.tok {
            Tok::Word(w) => Ok((w, t.pos)),
            other => err(t.pos, format!("Expected {what} {ctx}, found {other}")),
        }
    }

    fn string(&mut self, what: &str, ctx: &str) -> PResult<&'a str> {
        let t = self.next(what)?;
        match t.tok {
            Tok::Str(s) => Ok(s),
            other => err(t.pos, format!("Expected {what} {ctx}, found {other}")),
        }
    }

    fn uint(&mut self, what: &str, ctx: &str) -> PResult<(u64, Pos)> {
        let t = self.next(what)?;
        let text = match t.tok {
            Tok::Word(w) | Tok::Num(w) => w.strip_prefix('+').unwrap_or(w),
            other => return err(t.pos, format!("Expected {what} {ctx}, found {other}")),
        };
        match text.parse::<u64>() {
            Ok(v) => Ok((v, t.pos)),
            Err(_) => err(
                t.pos,
                format!(
                    "Expected {what} {ctx} (an unsigned integer), found {:?}",
                    text
                ),
            ),
        }
    }

    fn number(&mut self, what: &str, ctx: &str) -> PResult<f64> {
        let t = self.next(what)?;
        let text = match t.tok {
            Tok::Word(w) | Tok::Num(w) => w,
            other => return err(t.pos, format!("Expected {what} {ctx}, found {other}")),
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => err(
                t.pos,
                format!("Expected {what} {ctx} (a number), found {text:?}"),
            ),
        }
    }

    /// Skip to the `;` that ends the statement `kw` started at `pos`. A statement keyword
    /// at the start of a line also ends it (real files forget the `;`), with a warning.
    fn skip_statement(&mut self, kw: &str, pos: Pos) -> PResult<()> {
        loop {
            match self.peek()? {
                None => {
                    self.dbc.warnings.push(format!(
                        "{pos}: {kw} has no ';' before the end of the file: ended there"
                    ));
                    return Ok(());
                }
                Some(t) if starts_statement(&t) => {
                    self.dbc.warnings.push(format!(
                        "{pos}: {kw} has no ';' before the next statement ({}): ended there",
                        t.pos
                    ));
                    return Ok(());
                }
                Some(t) => {
                    self.next(";")?;
                    if t.tok == Tok::Punct(';') {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Skip what stays on the current line (`BS_: 500 : 12,34`).
    fn skip_line(&mut self) -> PResult<()> {
        while let Some(t) = self.peek()? {
            if t.first_on_line {
                break;
            }
            self.next("")?;
        }
        Ok(())
    }

    /// Words on this line and on indented continuation lines (`NS_ :`, `BU_:`).
    fn indented_words(&mut self) -> PResult<Vec<&'a str>> {
        let mut out = Vec::new();
        while let Some(t) = self.peek()? {
            if t.first_on_line && t.pos.col == 1 {
                break;
            }
            self.next("")?;
            if let Tok::Word(w) = t.tok {
                out.push(w);
            }
        }
        Ok(out)
    }

    fn attr_value(&mut self, ctx: &str) -> PResult<AttrValue> {
        let t = self.next("a value")?;
        match t.tok {
            Tok::Str(s) => Ok(AttrValue::Str(s.to_string())),
            Tok::Word(w) | Tok::Num(w) => match w.parse::<f64>() {
                Ok(v) => Ok(AttrValue::Num(v)),
                Err(_) => err(
                    t.pos,
                    format!("Expected a number or a string {ctx}, found {w:?}"),
                ),
            },
            other => err(t.pos, format!("Expected a value {ctx}, found {other}")),
        }
    }

    fn statement(&mut self, kw: &'a str, pos: Pos) -> PResult<()> {
        match kw {
            "VERSION" => self.string("the version string", "after VERSION").map(drop),
            "NS_" => {
                self.expect_punct(':', "after NS_")?;
                self.indented_words().map(drop)
            }
            "BS_" => {
                self.expect_punct(':', "after BS_")?;
                self.skip_line()
            }
            "BU_" => {
                self.expect_punct(':', "after BU_")?;
                let nodes = self.indented_words()?;
                self.dbc.nodes.extend(nodes.into_iter().map(str::to_string));
                Ok(())
            }
            "BO_" => self.message(pos),
            "SG_" => err(pos, "SG_ outside a message: a signal follows its BO_ line"),
            "BA_DEF_" => self.attr_def(),
            "BA_DEF_DEF_" => {
                let name = self.string("the attribute name", "after BA_DEF_DEF_")?;
                let v = self.attr_value(&format!("for the default of {name:?}"))?;
                self.expect_punct(';', &format!("after the default of {name:?}"))?;
                self.dbc.attr_defaults.insert(name.to_string(), v);
                Ok(())
            }
            "BA_" => self.attr(),
            "SIG_VALTYPE_" => self.sig_valtype(),
            "SG_MUL_VAL_" => self.mux_val(),
            k if SKIPPED.contains(&k) => self.skip_statement(kw, pos),
            other => err(
                pos,
                format!(
                    "Unknown statement {other:?} (expected a DBC keyword such as BO_, SG_, BA_)"
                ),
            ),
        }
    }

    fn message(&mut self, pos: Pos) -> PResult<()> {
        let (raw, id_pos) = self.uint("the message id", "after BO_")?;
        let (name, _) = self.word("the message name", "after the id")?;
        self.expect_punct(':', &format!("after message {name}"))?;
        let (size, size_pos) = self.uint("the message size", &format!("of message {name}"))?;
        // The transmitter may be missing (the line ends after the size).
        let tx = match self.peek()? {
            Some(Token {
                tok: Tok::Word(w),
                first_on_line: false,
                ..
            }) => {
                self.next("")?;
                w
            }
            _ => "Vector__XXX",
        };
        let mut signals = Vec::new();
        while let Some(t) = self.peek()? {
            if t.tok != Tok::Word("SG_") {
                break;
            }
            self.next("SG_")?;
            signals.push(self.signal(name, t.pos)?);
        }
        if name == INDEPENDENT_SIGNALS {
            self.independent.push(raw);
            return Ok(());
        }
        let (id, extended) = match can_id(raw, name) {
            Ok(v) => v,
            Err(why) => {
                self.independent.push(raw);
                self.dbc.invalid.push((id_pos, name.to_string(), why));
                return Ok(());
            }
        };
        let size = u32::try_from(size).map_err(|_| ParseError {
            pos: size_pos,
            message: format!("Message {name}: size {size} is not a byte count"),
        })?;
        self.dbc.messages.push(DbcMessage {
            name: name.to_string(),
            raw_id: u32::try_from(raw).unwrap_or(u32::MAX),
            id,
            extended,
            size,
            transmitter: (tx != "Vector__XXX").then(|| tx.to_string()),
            signals,
            attrs: Vec::new(),
            pos,
        });
        Ok(())
    }

    fn signal(&mut self, msg: &str, pos: Pos) -> PResult<DbcSignal> {
        let (name, _) = self.word("the signal name", &format!("in message {msg}"))?;
        let ctx = format!("in signal {msg}.{name}");
        let mut mux = MuxIndicator::None;
        if let Some(Token {
            tok: Tok::Word(w),
            pos: mpos,
            ..
        }) = self.peek()?
        {
            self.next("")?;
            mux = mux_indicator(w).ok_or_else(|| ParseError {
                pos: mpos,
                message: format!("{w:?} is not a multiplexer indicator (M, m<n>, m<n>M) {ctx}"),
            })?;
            if w == "m" {
                self.dbc.warnings.push(format!(
                    "{mpos}: signal {msg}.{name}: multiplexer indicator 'm' without a value: \
                     read as the switch 'M'"
                ));
            }
        }
        self.expect_punct(':', &ctx)?;
        let (start, _) = self.uint("the start bit", &ctx)?;
        self.expect_punct('|', &ctx)?;
        let (size, _) = self.uint("the signal size", &ctx)?;
        self.expect_punct('@', &ctx)?;
        let (order, opos) = self.uint("the byte order (0 or 1)", &ctx)?;
        if order > 1 {
            return err(
                opos,
                format!("Byte order {order} is not 0 (Motorola) or 1 (Intel) {ctx}"),
            );
        }
        let t = self.next("'+' or '-'")?;
        let signed = match t.tok {
            Tok::Punct('+') => false,
            Tok::Punct('-') => true,
            other => return err(t.pos, format!("Expected '+' or '-' {ctx}, found {other}")),
        };
        self.expect_punct('(', &ctx)?;
        let factor = self.number("the factor", &ctx)?;
        self.expect_punct(',', &ctx)?;
        let offset = self.number("the offset", &ctx)?;
        self.expect_punct(')', &ctx)?;
        self.expect_punct('[', &ctx)?;
        let min = self.number("the minimum", &ctx)?;
        self.expect_punct('|', &ctx)?;
        let max = self.number("the maximum", &ctx)?;
        self.expect_punct(']', &ctx)?;
        let unit = self.string("the unit", &ctx)?;
        let mut receivers = Vec::new();
        while let Some(t) = self.peek()? {
            if t.first_on_line {
                break;
            }
            self.next("")?;
            match t.tok {
                Tok::Word(w) => receivers.push(w.to_string()),
                Tok::Punct(',') => {}
                other => return err(t.pos, format!("Expected a receiver {ctx}, found {other}")),
            }
        }
        let too_big = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(DbcSignal {
            name: name.to_string(),
            start_bit: too_big(start),
            size: too_big(size),
            little_endian: order == 1,
            signed,
            factor,
            offset,
            min,
            max,
            unit: unit.to_string(),
            receivers,
            mux,
            float: None,
            mux_ranges: Vec::new(),
            attrs: Vec::new(),
            pos,
        })
    }

    fn attr_def(&mut self) -> PResult<()> {
        let mut t = self.next("the attribute name")?;
        if let Tok::Word("BU_" | "BO_" | "SG_" | "EV_") = t.tok {
            t = self.next("the attribute name")?;
        }
        let name = match t.tok {
            Tok::Str(s) => s,
            other => {
                return err(
                    t.pos,
                    format!("Expected the attribute name after BA_DEF_, found {other}"),
                )
            }
        };
        let (kind, kpos) = self.word("the value type", &format!("of attribute {name:?}"))?;
        let ctx = format!("in the definition of {name:?}");
        let def = match kind {
            "INT" | "HEX" | "FLOAT" => {
                self.number("the minimum", &ctx)?;
                self.number("the maximum", &ctx)?;
                AttrKind::Number
            }
            "STRING" => AttrKind::String,
            "ENUM" => {
                let mut names = Vec::new();
                while !self.peek_is_punct(';')? {
                    let t = self.next("an enum name")?;
                    match t.tok {
                        Tok::Str(s) => names.push(s.to_string()),
                        Tok::Punct(',') => {}
                        other => {
                            return err(
                                t.pos,
                                format!("Expected an enum name {ctx}, found {other}"),
                            )
                        }
                    }
                }
                AttrKind::Enum(names)
            }
            other => {
                return err(
                    kpos,
                    format!(
                        "{other:?} is not an attribute type (INT, HEX, FLOAT, STRING, ENUM) {ctx}"
                    ),
                )
            }
        };
        self.expect_punct(';', &ctx)?;
        self.dbc.attr_defs.insert(name.to_string(), def);
        Ok(())
    }

    fn attr(&mut self) -> PResult<()> {
        let name = self.string("the attribute name", "after BA_")?.to_string();
        let ctx = format!("in the value of {name:?}");
        let target = match self.peek()? {
            Some(Token {
                tok: Tok::Word(w @ ("BU_" | "BO_" | "SG_" | "EV_")),
                pos,
                ..
            }) => {
                self.next("")?;
                Some((w, pos))
            }
            _ => None,
        };
        match target {
            None => {
                let v = self.attr_value(&ctx)?;
                self.expect_punct(';', &ctx)?;
                self.dbc.network_attrs.insert(name, v);
            }
            Some(("BO_", pos)) => {
                let (raw, _) = self.uint("the message id", &ctx)?;
                let v = self.attr_value(&ctx)?;
                self.expect_punct(';', &ctx)?;
                self.pending.push(Pending::MsgAttr(raw, name, v, pos));
            }
            Some(("SG_", pos)) => {
                let (raw, _) = self.uint("the message id", &ctx)?;
                let (sig, _) = self.word("the signal name", &ctx)?;
                let v = self.attr_value(&ctx)?;
                self.expect_punct(';', &ctx)?;
                self.pending
                    .push(Pending::SigAttr(raw, sig.to_string(), name, v, pos));
            }
            Some((_, pos)) => {
                // Node and environment variable attributes: nothing for the matrix.
                self.skip_statement("BA_", pos)?;
            }
        }
        Ok(())
    }

    fn sig_valtype(&mut self) -> PResult<()> {
        let (raw, pos) = self.uint("the message id", "after SIG_VALTYPE_")?;
        let (sig, _) = self.word("the signal name", "in SIG_VALTYPE_")?;
        if self.peek_is_punct(':')? {
            self.next(":")?;
        }
        let (n, npos) = self.uint("the value type (0, 1 or 2)", "in SIG_VALTYPE_")?;
        if n > 2 {
            return err(
                npos,
                format!("SIG_VALTYPE_ {n} of {sig} is not 0 (integer), 1 (float) or 2 (double)"),
            );
        }
        self.expect_punct(';', "after SIG_VALTYPE_")?;
        let n = u8::try_from(n).unwrap_or(0);
        self.pending
            .push(Pending::ValType(raw, sig.to_string(), n, pos));
        Ok(())
    }

    fn mux_val(&mut self) -> PResult<()> {
        let (raw, pos) = self.uint("the message id", "after SG_MUL_VAL_")?;
        let (sig, _) = self.word("the signal name", "in SG_MUL_VAL_")?;
        let (switch, _) = self.word("the multiplexer switch", "in SG_MUL_VAL_")?;
        let ctx = format!("in SG_MUL_VAL_ of {sig}");
        let mut ranges = Vec::new();
        while !self.peek_is_punct(';')? {
            let (lo, _) = self.uint("a range start", &ctx)?;
            // `3-5` lexes as 3 then -5, or 3 '-' 5 with spaces.
            let t = self.next("'-'")?;
            let hi = match t.tok {
                Tok::Num(n) if n.starts_with('-') => n[1..].parse::<u64>().ok(),
                Tok::Punct('-') => Some(self.uint("a range end", &ctx)?.0),
                _ => None,
            };
            let Some(hi) = hi else {
                return err(
                    t.pos,
                    format!("Expected a range like 3-5 {ctx}, found {}", t.tok),
                );
            };
            ranges.push((lo, hi));
            if self.peek_is_punct(',')? {
                self.next(",")?;
            }
        }
        self.expect_punct(';', &ctx)?;
        self.pending.push(Pending::MuxVal(
            raw,
            sig.to_string(),
            switch.to_string(),
            ranges,
            pos,
        ));
        Ok(())
    }

    fn file(mut self) -> PResult<Dbc> {
        while let Some(t) = self.peek()? {
            self.next("")?;
            match t.tok {
                Tok::Word(kw) => self.statement(kw, t.pos)?,
                other => {
                    return err(
                        t.pos,
                        format!("Expected a statement (BO_, SG_, BA_, ...), found {other}"),
                    )
                }
            }
        }
        self.resolve();
        Ok(self.dbc)
    }

    /// Attach attributes, value types and multiplexing to their messages and signals.
    fn resolve(&mut self) {
        // A duplicated id keeps its first message: references go there (the import
        // leaves the later ones out and says so).
        let mut by_raw: HashMap<u64, usize> = HashMap::with_capacity(self.dbc.messages.len());
        for (i, m) in self.dbc.messages.iter().enumerate() {
            by_raw.entry(u64::from(m.raw_id)).or_insert(i);
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let (raw, pos) = match &p {
                Pending::MsgAttr(r, .., pos)
                | Pending::SigAttr(r, .., pos)
                | Pending::ValType(r, .., pos)
                | Pending::MuxVal(r, .., pos) => (*r, *pos),
            };
            if self.independent.contains(&raw) {
                continue;
            }
            let Some(&mi) = by_raw.get(&raw) else {
                self.dbc.warnings.push(format!(
                    "{pos}: refers to message id {raw}, which no BO_ defines: ignored"
                ));
                continue;
            };
            let m = &mut self.dbc.messages[mi];
            let sig_name = match &p {
                Pending::MsgAttr(_, name, v, _) => {
                    m.attrs.push((name.clone(), v.clone()));
                    continue;
                }
                Pending::SigAttr(_, s, ..)
                | Pending::ValType(_, s, ..)
                | Pending::MuxVal(_, s, ..) => s.clone(),
            };
            let Some(s) = m.signals.iter_mut().find(|s| s.name == sig_name) else {
                self.dbc.warnings.push(format!(
                    "{pos}: refers to signal {sig_name} of message {}, which has no such signal: ignored",
                    m.name
                ));
                continue;
            };
            match p {
                Pending::SigAttr(_, _, name, v, _) => s.attrs.push((name, v)),
                Pending::ValType(_, _, n, _) => s.float = (n > 0).then_some(n),
                Pending::MuxVal(_, _, switch, ranges, _) => s.mux_ranges.push((switch, ranges)),
                Pending::MsgAttr(..) => {}
            }
        }
    }
}

/// The CAN id of a DBC message id as written: bit 31 set means extended (29 bits below
/// it); otherwise an 11-bit id. Anything else is an error naming the message.
pub fn can_id(raw: u64, name: &str) -> Result<(u32, bool), String> {
    if raw > u64::from(u32::MAX) {
        return Err(format!(
            "Message {name}: id {raw} is above 2^32, not a DBC message id"
        ));
    }
    if raw & EXTENDED_FLAG != 0 {
        let id = raw & !EXTENDED_FLAG;
        if id > MAX_EXTENDED {
            return Err(format!(
                "Message {name}: extended id 0x{id:X} (written {raw}) has bits 29-30 set: a \
                 29-bit id is at most 0x1FFFFFFF"
            ));
        }
        return Ok((u32::try_from(id).unwrap_or(0), true));
    }
    if raw > MAX_STANDARD {
        let fixed = raw | EXTENDED_FLAG;
        let hint = if raw <= MAX_EXTENDED {
            format!("; if it is a 29-bit id, write it with the extended flag: {fixed}")
        } else {
            String::new()
        };
        return Err(format!(
            "Message {name}: id 0x{raw:X} (written {raw}) is above 0x7FF, the highest \
             standard id, and the extended flag (bit 31) is not set{hint}"
        ));
    }
    Ok((u32::try_from(raw).unwrap_or(0), false))
}

fn mux_indicator(w: &str) -> Option<MuxIndicator> {
    if w == "M" || w == "m" {
        return Some(MuxIndicator::Switch);
    }
    let rest = w.strip_prefix('m')?;
    let (digits, switch) = match rest.strip_suffix('M') {
        Some(d) => (d, true),
        None => (rest, false),
    };
    let v: u64 = digits.parse().ok()?;
    Some(if switch {
        MuxIndicator::MultiplexedSwitch(v)
    } else {
        MuxIndicator::Multiplexed(v)
    })
}

/// Parse DBC text.
pub fn parse(text: &str) -> Result<Dbc, ParseError> {
    Parser {
        lex: Lexer::new(text),
        peeked: None,
        last: Pos { line: 1, col: 1 },
        dbc: Dbc::default(),
        pending: Vec::new(),
        independent: Vec::new(),
    }
    .file()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"VERSION "1.0"

NS_ :
	NS_DESC_
	CM_
	BA_DEF_

BS_:

BU_: Engine Brakes
   Gateway

VAL_TABLE_ Gears 0 "P" 1 "R" ;

BO_ 192 EngineSpeed: 8 Engine
 SG_ Rpm : 0|16@1+ (0.25,0) [0|16383.75] "rpm" Brakes,Gateway
 SG_ Temp : 23|12@0- (0.1,-40) [-100|100] "degC" Brakes

BO_ 2566869025 Climate: 8 Vector__XXX
 SG_ Mode M : 0|8@1+ (1,0) [0|3] "" Brakes
 SG_ Fan m1 : 8|8@1+ (1,0) [0|255] "" Brakes
 SG_ Sub m2M : 8|4@1+ (1,0) [0|15] "" Brakes
 SG_ Level m3 : 16|32@1- (1,0) [0|0] "" Brakes

BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX
 SG_ Orphan : 0|8@1+ (1,0) [0|0] "" Vector__XXX

CM_ BO_ 192 "Engine speed; with a ; inside
and a second line";
CM_ SG_ 192 Rpm "rpm";
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","StandardCAN_FD","ExtendedCAN_FD";
BA_DEF_ "Baudrate" INT 0 1000000;
BA_DEF_ SG_ "GenSigStartValue" FLOAT -1e9 1e9;
BA_DEF_DEF_ "GenMsgCycleTime" 0;
BA_DEF_DEF_ "VFrameFormat" "StandardCAN";
BA_ "Baudrate" 250000;
BA_ "GenMsgCycleTime" BO_ 192 10;
BA_ "VFrameFormat" BO_ 2566869025 15;
BA_ "GenSigStartValue" SG_ 192 Rpm 800;
BA_ "GenMsgCycleTime" BO_ 3221225472 5;
VAL_ 192 Rpm 0 "off" ;
SIG_VALTYPE_ 2566869025 Level : 1;
SG_MUL_VAL_ 2566869025 Level Sub 3-3, 5-7;
"#;

    #[test]
    fn small_file_every_part() {
        let d = parse(SMALL).unwrap();
        assert_eq!(d.nodes, vec!["Engine", "Brakes", "Gateway"]);
        assert_eq!(
            d.messages.len(),
            2,
            "the independent-signals message is left out"
        );
        let es = &d.messages[0];
        assert_eq!(
            (es.name.as_str(), es.id, es.extended, es.size),
            ("EngineSpeed", 0xC0, false, 8)
        );
        assert_eq!(es.transmitter.as_deref(), Some("Engine"));
        assert_eq!(es.pos, Pos { line: 15, col: 1 });
        let rpm = &es.signals[0];
        assert_eq!(
            (rpm.start_bit, rpm.size, rpm.little_endian, rpm.signed),
            (0, 16, true, false)
        );
        assert_eq!((rpm.factor, rpm.offset, rpm.max), (0.25, 0.0, 16383.75));
        assert_eq!(rpm.receivers, vec!["Brakes", "Gateway"]);
        assert_eq!(rpm.attr("GenSigStartValue"), Some(&AttrValue::Num(800.0)));
        let temp = &es.signals[1];
        assert_eq!(
            (temp.start_bit, temp.little_endian, temp.signed, temp.offset),
            (23, false, true, -40.0)
        );
        assert_eq!(
            d.message_attr(es, "GenMsgCycleTime"),
            Some(&AttrValue::Num(10.0))
        );

        let cl = &d.messages[1];
        assert_eq!(
            (cl.id, cl.extended, cl.raw_id),
            (0x18FF5021, true, 2566869025)
        );
        assert_eq!(cl.transmitter, None);
        let mux: Vec<MuxIndicator> = cl.signals.iter().map(|s| s.mux).collect();
        assert_eq!(
            mux,
            vec![
                MuxIndicator::Switch,
                MuxIndicator::Multiplexed(1),
                MuxIndicator::MultiplexedSwitch(2),
                MuxIndicator::Multiplexed(3)
            ]
        );
        assert_eq!(cl.signals[3].float, Some(1));
        assert_eq!(
            cl.signals[3].mux_ranges,
            vec![("Sub".to_string(), vec![(3, 3), (5, 7)])]
        );
        // The default applies where the message sets nothing.
        assert_eq!(
            d.message_attr(cl, "GenMsgCycleTime"),
            Some(&AttrValue::Num(0.0))
        );
        // VFrameFormat written as an enum index (CANdb++) and as a name (the default).
        let ff = d.message_attr(cl, "VFrameFormat").unwrap();
        assert_eq!(d.enum_name("VFrameFormat", ff), Some("ExtendedCAN_FD"));
        let ff = d.message_attr(es, "VFrameFormat").unwrap();
        assert_eq!(d.enum_name("VFrameFormat", ff), Some("StandardCAN"));
        assert_eq!(
            d.network_attrs.get("Baudrate"),
            Some(&AttrValue::Num(250000.0))
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    fn invalid(text: &str) -> (Pos, String, String) {
        let d = parse(text).unwrap();
        assert!(d.messages.is_empty());
        d.invalid[0].clone()
    }

    #[test]
    fn ids_that_are_not_can_ids_are_errors_naming_the_message() {
        let (pos, name, why) = invalid("BO_ 1075054137 Bad: 8 X\nBA_ \"x\" BO_ 1075054137 1;\n");
        assert_eq!((pos, name.as_str()), (Pos { line: 1, col: 5 }, "Bad"));
        assert_eq!(
            why,
            "Message Bad: id 0x40140639 (written 1075054137) is above 0x7FF, the highest \
             standard id, and the extended flag (bit 31) is not set"
        );
        let (.., why) = invalid("BO_ 2048 Big: 8 X\n");
        assert!(
            why.ends_with("write it with the extended flag: 2147485696"),
            "{why}"
        );
        // Bit 31 and bit 29 set: not masked away.
        let (.., why) = invalid("BO_ 2684354560 Masked: 8 X\n");
        assert!(
            why.starts_with("Message Masked: extended id 0x20000000"),
            "{why}"
        );
        let (.., why) = invalid("BO_ 99999999999 Huge: 8 X\n");
        assert!(why.contains("above 2^32"), "{why}");
        assert_eq!(can_id(0x7FF, "m"), Ok((0x7FF, false)));
        assert_eq!(can_id(0x9FFF_FFFF, "m"), Ok((0x1FFF_FFFF, true)));
    }

    #[test]
    fn references_resolve_by_the_raw_id_never_a_truncated_one() {
        // 0x40140639 without the flag would become 0x639 under `as u16`: here a BA_ that
        // names it finds no message and says so, and 0x639 keeps its own cycle time.
        let text = "BO_ 1593 Real: 8 X\n\
                    BA_ \"GenMsgCycleTime\" BO_ 1075054137 5;\n\
                    BA_ \"GenMsgCycleTime\" BO_ 1593 20;\n";
        let d = parse(text).unwrap();
        assert_eq!(
            d.messages[0].attr("GenMsgCycleTime"),
            Some(&AttrValue::Num(20.0))
        );
        assert_eq!(
            d.warnings,
            vec!["2:23: refers to message id 1075054137, which no BO_ defines: ignored"]
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let cases = [
            (
                "BO_ 1 A: 8 X\n SG_ s : 0|8@2+ (1,0) [0|1] \"\" X\n",
                "2:14",
                "Byte order 2",
            ),
            (
                "BO_ 1 A 8 X\n",
                "1:9",
                "Expected ':' after message A, found \"8\"",
            ),
            (
                "BO_ 1 A: 8 X\n SG_ s : 0|8@1+ (1,0) [0|1] X\n",
                "2:29",
                "Expected the unit",
            ),
            (
                "CM_ \"never closed;\nBO_ 1 A: 8 X\n",
                "1:5",
                "String is never closed",
            ),
            (
                "BA_DEF_ BO_ \"x\" INT 0 1\n",
                "1:23",
                "File ends where ';' was expected",
            ),
            (
                "BO_ 1 A: 8 X\n SG_ s x : 0|8@1+ (1,0) [0|1] \"\" X\n",
                "2:8",
                "\"x\" is not a multiplexer indicator",
            ),
            ("BOO_ 1 A: 8 X\n", "1:1", "Unknown statement \"BOO_\""),
            (
                " SG_ s : 0|8@1+ (1,0) [0|1] \"\" X\n",
                "1:2",
                "SG_ outside a message",
            ),
            (
                "BA_DEF_ BO_ \"x\" BOOL;\n",
                "1:17",
                "\"BOOL\" is not an attribute type",
            ),
            (
                "BO_ 1 A: 8 X\n SG_ s : 0|8@1+ (one,0) [0|1] \"\" X\n",
                "2:18",
                "Expected the factor",
            ),
        ];
        for (text, at, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.pos.to_string(), at, "{text:?}: {}", e.message);
            assert!(e.message.starts_with(msg), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn dangling_signal_references_are_warnings() {
        let text = "BO_ 1 A: 8 X\n SG_ s : 0|8@1+ (1,0) [0|1] \"\" X\nSIG_VALTYPE_ 1 t : 1;\n";
        let d = parse(text).unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].starts_with("3:14: refers to signal t of message A"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn lenient_where_real_files_are_sloppy() {
        // A forgotten ';' before the next statement, and 'm' for the switch (both seen in
        // public matrices).
        let text = "CM_ \"Front target\"\nBO_ 1 A: 8 X\n SG_ sw m : 0|2@1+ (1,0) [0|3] \"\" X\n \
                    SG_ v m2 : 8|8@1+ (1,0) [0|1] \"\" X\nVAL_ 1 sw 0 \"a\"\nBA_ \"x\" BO_ 1 3;\n\
                    VAL_ 1 v 0 \"b\"\n";
        let d = parse(text).unwrap();
        assert_eq!(d.messages[0].signals[0].mux, MuxIndicator::Switch);
        assert_eq!(d.messages[0].attr("x"), Some(&AttrValue::Num(3.0)));
        assert_eq!(
            d.warnings,
            vec![
                "1:1: CM_ has no ';' before the next statement (2:1): ended there",
                "3:9: signal A.sw: multiplexer indicator 'm' without a value: read as the switch 'M'",
                "5:1: VAL_ has no ';' before the next statement (6:1): ended there",
                "7:1: VAL_ has no ';' before the end of the file: ended there",
            ]
        );
    }

    #[test]
    fn signals_without_receivers_and_space_separated_receivers() {
        let text = "BO_ 1 A: 8 X\n SG_ a : 0|8@1+ (1,0) [0|1] \"\"\n SG_ b : 8|8@1+ (1,0) [0|1] \"\" X Y\n";
        let d = parse(text).unwrap();
        assert!(d.messages[0].signals[0].receivers.is_empty());
        assert_eq!(d.messages[0].signals[1].receivers, vec!["X", "Y"]);
    }
}
