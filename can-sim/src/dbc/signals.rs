//! A DBC message's `SG_` lines into profile signals: layout, value type (`SIG_VALTYPE_`),
//! scaling, multiplexing (`M`, `m3`, `m3M` and `SG_MUL_VAL_`), and the start value
//! (`GenSigStartValue`, raw) as a constant. What cannot be kept is left out with a warning.

use std::collections::HashMap;

use profiles::{ByteOrder, Generator, MuxCondition, Signal, ValueType};

use super::parse::{AttrValue, Dbc, DbcMessage, DbcSignal, MuxIndicator};

fn value_type(s: &DbcSignal) -> Result<ValueType, String> {
    match (s.float, s.size) {
        (Some(1), 32) => Ok(ValueType::Float32),
        (Some(2), 64) => Ok(ValueType::Float64),
        (Some(k), n) => Err(format!(
            "SIG_VALTYPE_ {k} ({}) needs {} bits, the signal has {n}",
            if k == 1 { "float" } else { "double" },
            if k == 1 { 32 } else { 64 }
        )),
        (None, _) if s.signed => Ok(ValueType::Signed),
        (None, _) => Ok(ValueType::Unsigned),
    }
}

/// The signal's multiplexing: its own switch role and its condition.
fn mux(s: &DbcSignal, only_switch: Option<&str>) -> (bool, Option<MuxCondition>) {
    let (switch, value) = match s.mux {
        MuxIndicator::None => (false, None),
        MuxIndicator::Switch => (true, None),
        MuxIndicator::Multiplexed(v) => (false, Some(v)),
        MuxIndicator::MultiplexedSwitch(v) => (true, Some(v)),
    };
    let cond = value.map(|v| match s.mux_ranges.first() {
        // SG_MUL_VAL_ names the switch and the ranges (extended multiplexing).
        Some((sw, ranges)) => MuxCondition {
            switch: Some(sw.clone()),
            values: ranges.clone(),
        },
        None => MuxCondition {
            switch: only_switch.map(str::to_string),
            values: vec![(v, v)],
        },
    });
    (switch, cond)
}

/// One signal, or why it is left out.
fn signal(dbc: &Dbc, s: &DbcSignal, len: u8, only_switch: Option<&str>) -> Result<Signal, String> {
    let size = u8::try_from(s.size)
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| format!("size {} bits is outside 1..=64", s.size))?;
    let start_bit = u16::try_from(s.start_bit)
        .map_err(|_| format!("start bit {} is too large", s.start_bit))?;
    let (multiplexor, mux) = mux(s, only_switch);
    // GenSigStartValue is a raw value.
    let start = match dbc.signal_attr(s, "GenSigStartValue") {
        Some(AttrValue::Num(raw)) if *raw != 0.0 => {
            Some(Generator::Constant(raw * s.factor + s.offset))
        }
        _ => None,
    };
    let range = (s.min != 0.0 || s.max != 0.0) && s.min <= s.max;
    let sig = Signal {
        name: s.name.clone(),
        start_bit,
        size,
        byte_order: if s.little_endian {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        },
        value_type: value_type(s)?,
        factor: if s.factor == 0.0 { 1.0 } else { s.factor },
        offset: s.offset,
        // `[0|0]` says nothing, and neither does a minimum above the maximum.
        min: range.then_some(s.min),
        max: range.then_some(s.max),
        unit: s.unit.clone(),
        multiplexor,
        mux,
        value: start,
    };
    let high = sig.bit_positions().into_iter().max().unwrap_or(0);
    if high >= u32::from(len) * 8 {
        return Err(format!(
            "its bits reach payload bit {high}, beyond the {len} bytes of the message"
        ));
    }
    Ok(sig)
}

/// The signals of `m` (payload `len` bytes), warnings for what was changed or left out.
pub fn signals(dbc: &Dbc, m: &DbcMessage, len: u8, warn: &mut Vec<String>) -> Vec<Signal> {
    let top: Vec<&str> = m
        .signals
        .iter()
        .filter(|s| s.mux == MuxIndicator::Switch)
        .map(|s| s.name.as_str())
        .collect();
    let switches = m
        .signals
        .iter()
        .filter(|s| {
            matches!(
                s.mux,
                MuxIndicator::Switch | MuxIndicator::MultiplexedSwitch(_)
            )
        })
        .count();
    // With several switches and no SG_MUL_VAL_, `m3` means the top-level one.
    let only = (switches > 1).then(|| top.first().copied()).flatten();
    let mut out: Vec<Signal> = Vec::with_capacity(m.signals.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    for s in &m.signals {
        match signal(dbc, s, len, only) {
            Ok(mut sig) => {
                let n = names.entry(s.name.as_str()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    sig.name = format!("{}_{n}", s.name);
                    warn.push(format!(
                        "{}: message {}: a second signal is named {}: renamed {}",
                        s.pos, m.name, s.name, sig.name
                    ));
                }
                out.push(sig);
            }
            Err(why) => warn.push(format!(
                "{}: signal {}.{}: {why}: left out",
                s.pos, m.name, s.name
            )),
        }
    }
    // A multiplexed signal whose switch was left out cannot be placed.
    let present: Vec<String> = out
        .iter()
        .filter(|s| s.multiplexor)
        .map(|s| s.name.clone())
        .collect();
    out.retain(|s| {
        let ok = s.mux.as_ref().is_none_or(|c| match &c.switch {
            Some(sw) => present.contains(sw),
            None => present.len() == 1,
        });
        if !ok {
            warn.push(format!(
                "{}: signal {}.{}: its multiplexer switch is not in the message: left out",
                m.pos, m.name, s.name
            ));
        }
        ok
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbc::parse::parse;

    #[test]
    fn signals_with_types_mux_and_start_values() {
        let text = "BO_ 1 M: 8 X\n \
            SG_ Mode M : 0|4@1+ (1,0) [0|15] \"\" X\n \
            SG_ A m1 : 8|8@1- (0.5,-10) [-74|53.5] \"V\" X\n \
            SG_ B m2 : 15|16@0+ (1,0) [0|0] \"\" X\n \
            SG_ F : 32|32@1- (1,0) [0|0] \"\" X\n \
            SG_ Big : 40|70@1+ (1,0) [0|0] \"\" X\n \
            SG_ Out : 60|8@1+ (1,0) [0|0] \"\" X\n \
            SG_ Inv : 48|8@1+ (1,0) [500|-500] \"\" X\n\
            SIG_VALTYPE_ 1 F : 1;\n\
            BA_DEF_ SG_ \"GenSigStartValue\" INT 0 65535;\n\
            BA_ \"GenSigStartValue\" SG_ 1 A 30;\n";
        let d = parse(text).unwrap();
        let mut w = Vec::new();
        let s = signals(&d, &d.messages[0], 8, &mut w);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["Mode", "A", "B", "F", "Inv"]);
        assert_eq!((s[4].min, s[4].max), (None, None));
        assert!(s[0].multiplexor);
        assert_eq!(s[1].mux.as_ref().unwrap().values, vec![(1, 1)]);
        assert_eq!(s[1].mux.as_ref().unwrap().switch, None);
        assert_eq!(
            (s[1].value_type, s[1].min, s[1].max),
            (ValueType::Signed, Some(-74.0), Some(53.5))
        );
        // Start value raw 30 -> 30 * 0.5 - 10 = 5.
        assert_eq!(s[1].value, Some(Generator::Constant(5.0)));
        assert_eq!((s[2].byte_order, s[2].min), (ByteOrder::BigEndian, None));
        assert_eq!(s[3].value_type, ValueType::Float32);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("signal M.Big: size 70 bits is outside 1..=64: left out"),
            "{w:?}"
        );
        assert!(
            w[1].contains("signal M.Out: its bits reach payload bit 67, beyond the 8 bytes"),
            "{w:?}"
        );
    }

    #[test]
    fn extended_multiplexing_names_the_switch() {
        let text = "BO_ 2 E: 8 X\n \
            SG_ S0 M : 0|4@1+ (1,0) [0|15] \"\" X\n \
            SG_ S1 m1M : 4|4@1+ (1,0) [0|15] \"\" X\n \
            SG_ V m2 : 8|8@1+ (1,0) [0|0] \"\" X\n\
            SG_MUL_VAL_ 2 V S1 2-3, 5-5;\n\
            SG_MUL_VAL_ 2 S1 S0 1-1;\n";
        let d = parse(text).unwrap();
        let mut w = Vec::new();
        let s = signals(&d, &d.messages[0], 8, &mut w);
        assert!(w.is_empty(), "{w:?}");
        assert!(s[1].multiplexor);
        assert_eq!(
            s[1].mux,
            Some(MuxCondition {
                switch: Some("S0".into()),
                values: vec![(1, 1)]
            })
        );
        assert_eq!(
            s[2].mux,
            Some(MuxCondition {
                switch: Some("S1".into()),
                values: vec![(2, 3), (5, 5)]
            })
        );
    }
}
