//! Signals in CAN payloads, encoded and decoded exactly as a DBC lays them out (Intel and
//! Motorola byte order, unsigned, two's complement and IEEE float values, factor and
//! offset, multiplexing), and the values they take frame after frame.
//!
//! A physical value becomes raw as `(phys - offset) / factor`, rounded half to even (as
//! Python's `round`, which cantools uses, so both encode the same bytes), saturated to
//! the raw range; floats go in as their IEEE bits. [`Payload::fill`] writes one frame's
//! signals without allocating: multiplexor switches first, then each signal whose switch
//! (read back from the frame) has one of its values.

use std::path::Path;

use profiles::{Generator, Message, Signal, ValueType};

/// Errors building a payload plan.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// A `Log` generator's file.
    #[error("Signal {message}.{signal}: cannot take values from {path}")]
    Log {
        /// Message.
        message: String,
        /// Signal.
        signal: String,
        /// The log.
        path: String,
        /// Why.
        #[source]
        source: Box<crate::canlog::LogError>,
    },
    /// A `Log` generator whose file has no frame of the message.
    #[error("Signal {message}.{signal}: {path} has no frame with id {id}")]
    LogEmpty {
        /// Message.
        message: String,
        /// Signal.
        signal: String,
        /// The log.
        path: String,
        /// The id looked for.
        id: String,
    },
}

/// The bit layout and scaling of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    /// (byte, mask) of each raw bit, least significant first.
    bits: Vec<(usize, u8)>,
    value_type: ValueType,
    factor: f64,
    offset: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Codec {
    /// The codec of a profile signal (validated: every bit inside the payload).
    pub fn new(s: &Signal) -> Codec {
        Codec {
            bits: s
                .bit_positions()
                .into_iter()
                .map(|p| (usize::try_from(p / 8).unwrap_or(0), 1u8 << (p % 8)))
                .collect(),
            value_type: s.value_type,
            factor: s.factor,
            offset: s.offset,
            min: s.min,
            max: s.max,
        }
    }

    /// Size in bits.
    pub fn size(&self) -> u32 {
        u32::try_from(self.bits.len()).unwrap_or(64)
    }

    fn mask(&self) -> u64 {
        match self.size() {
            64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    /// Write raw bits into `buf` (only this signal's bits change).
    pub fn write(&self, buf: &mut [u8], raw: u64) {
        for (i, &(byte, mask)) in self.bits.iter().enumerate() {
            if raw >> i & 1 == 1 {
                buf[byte] |= mask;
            } else {
                buf[byte] &= !mask;
            }
        }
    }

    /// Read raw bits from `buf`.
    pub fn read(&self, buf: &[u8]) -> u64 {
        self.bits
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &(byte, mask))| {
                acc | (u64::from(buf[byte] & mask != 0) << i)
            })
    }

    /// The raw bits of a physical value (clamped to min/max, rounded half to even,
    /// saturated to the raw range).
    pub fn raw_of(&self, phys: f64) -> u64 {
        let mut v = phys;
        if let Some(lo) = self.min {
            v = v.max(lo);
        }
        if let Some(hi) = self.max {
            v = v.min(hi);
        }
        let scaled = (v - self.offset) / self.factor;
        match self.value_type {
            // f64 -> f32 rounds to the nearest single: what a float signal carries.
            #[allow(clippy::cast_possible_truncation)]
            ValueType::Float32 => u64::from((scaled as f32).to_bits()),
            ValueType::Float64 => scaled.to_bits(),
            ValueType::Unsigned => {
                let r = scaled.round_ties_even();
                // The mask is below 2^64; as f64 it rounds up at 64 bits, then saturates.
                #[allow(clippy::cast_precision_loss)]
                let hi = self.mask() as f64;
                crate::timing::f64_to_u64(r.clamp(0.0, hi)).unwrap_or(self.mask())
            }
            ValueType::Signed => {
                let n = self.size();
                let r = scaled.round_ties_even();
                #[allow(clippy::cast_precision_loss)]
                let (lo, hi) = (
                    -((1u64 << (n - 1).min(63)) as f64),
                    ((1u64 << (n - 1).min(63)) - 1) as f64,
                );
                // In range of i64 after the clamp: the cast is exact for whole values.
                #[allow(clippy::cast_possible_truncation)]
                let i = r.clamp(lo, hi) as i64;
                // Two's complement in n bits.
                u64::from_ne_bytes(i.to_ne_bytes()) & self.mask()
            }
        }
    }

    /// The physical value of raw bits.
    pub fn phys_of(&self, raw: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = match self.value_type {
            ValueType::Unsigned => raw as f64,
            ValueType::Signed => {
                let n = self.size();
                let sign = 1u64 << (n - 1);
                let wide = if n < 64 && raw & sign != 0 {
                    raw | !self.mask()
                } else {
                    raw
                };
                i64::from_ne_bytes(wide.to_ne_bytes()) as f64
            }
            ValueType::Float32 => f64::from(f32::from_bits(
                u32::try_from(raw & 0xFFFF_FFFF).unwrap_or(0),
            )),
            ValueType::Float64 => f64::from_bits(raw),
        };
        v * self.factor + self.offset
    }
}

/// The values of one signal, resolved to raw bits where they are fixed.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    /// The same raw bits every frame.
    Fixed(u64),
    /// `start + seq * step` modulo the raw range.
    Counter { start: u64, step: i64 },
    /// A sawtooth over time.
    Ramp { from: f64, to: f64, period_ns: u64 },
    /// Raw values in turn.
    Cycle(Vec<u64>),
}

/// One signal of a payload plan.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    codec: Codec,
    values: Values,
    switch: bool,
    /// (index of the switch signal, inclusive raw ranges).
    mux: Option<(usize, Vec<(u64, u64)>)>,
}

/// How a message's payload is made: its signals and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    slots: Vec<Slot>,
}

/// Raw switch values the multiplexed signals of `m` use for `switch` (each range's values,
/// at most 256 of them), in order.
fn switch_values(m: &Message, switch: &str, only_switch: bool) -> Vec<u64> {
    let mut v: Vec<u64> = m
        .signals
        .iter()
        .filter_map(|s| s.mux.as_ref())
        .filter(|c| c.switch.as_deref().map_or(only_switch, |n| n == switch))
        .flat_map(|c| {
            c.values
                .iter()
                .flat_map(|&(a, b)| a..=b.min(a.saturating_add(255)))
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v.truncate(256);
    if v.is_empty() {
        v.push(0);
    }
    v
}

impl Payload {
    /// The plan of a message's signals (None when it has none: can-sim's test payload).
    /// `Log` generators read their file here.
    pub fn new(m: &Message, name: &str) -> Result<Option<Payload>, SignalError> {
        if m.signals.is_empty() {
            return Ok(None);
        }
        let switches = m.multiplexors();
        let mut slots = Vec::with_capacity(m.signals.len());
        for s in &m.signals {
            let codec = Codec::new(s);
            let values = match &s.value {
                None if s.multiplexor => {
                    let v = switch_values(m, &s.name, switches.len() == 1);
                    Values::Cycle(v)
                }
                None => Values::Fixed(0),
                Some(Generator::Constant(v)) => Values::Fixed(codec.raw_of(*v)),
                Some(Generator::Counter { start, step }) => Values::Counter {
                    start: *start & codec.mask(),
                    step: *step,
                },
                Some(Generator::Ramp {
                    from,
                    to,
                    period_ms,
                }) => Values::Ramp {
                    from: *from,
                    to: *to,
                    period_ns: crate::timing::f64_to_u64((period_ms * 1e6).round())
                        .unwrap_or(1)
                        .max(1),
                },
                Some(Generator::Cycle(v)) => {
                    Values::Cycle(v.iter().map(|x| codec.raw_of(*x)).collect())
                }
                Some(Generator::Log(path)) => Values::Cycle(log_values(m, name, s, &codec, path)?),
            };
            let mux = s.mux.as_ref().map(|c| {
                let sw = c
                    .switch
                    .as_deref()
                    .unwrap_or(switches.first().copied().unwrap_or(""));
                let idx = m.signals.iter().position(|x| x.name == sw).unwrap_or(0);
                (idx, c.values.clone())
            });
            slots.push(Slot {
                codec,
                values,
                switch: s.multiplexor,
                mux,
            });
        }
        Ok(Some(Payload { slots }))
    }

    /// Number of signals.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there is no signal.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn raw(slot: &Slot, seq: u64, t_ns: u64) -> u64 {
        match &slot.values {
            Values::Fixed(r) => *r,
            Values::Counter { start, step } => {
                let m = u128::from(slot.codec.mask()) + 1;
                let v = i128::from(*start) + i128::from(seq) * i128::from(*step);
                u64::try_from(v.rem_euclid(i128::try_from(m).unwrap_or(i128::MAX))).unwrap_or(0)
            }
            Values::Ramp {
                from,
                to,
                period_ns,
            } => {
                #[allow(clippy::cast_precision_loss)]
                let frac = (t_ns % period_ns) as f64 / *period_ns as f64;
                slot.codec.raw_of(from + (to - from) * frac)
            }
            Values::Cycle(v) => {
                let i =
                    usize::try_from(seq % u64::try_from(v.len().max(1)).unwrap_or(1)).unwrap_or(0);
                v.get(i).copied().unwrap_or(0)
            }
        }
    }

    /// True when `s` is present in the frame so far (its switch, read back, selects it).
    fn selected(&self, s: &Slot, buf: &[u8]) -> bool {
        s.mux.as_ref().is_none_or(|(sw, ranges)| {
            let v = self.slots[*sw].codec.read(buf);
            ranges.iter().any(|&(a, b)| (a..=b).contains(&v))
        })
    }

    /// Write the signals of instance `seq` (nominal release `t_ns` after the start of the
    /// schedule) into `buf`: top-level switches, then multiplexed switches (extended
    /// multiplexing, one level as real matrices use it), then every other signal that its
    /// switch selects. No allocation.
    pub fn fill(&self, buf: &mut [u8], seq: u64, t_ns: u64) {
        let rounds: [fn(&Slot) -> bool; 3] = [
            |s| s.switch && s.mux.is_none(),
            |s| s.switch && s.mux.is_some(),
            |s| !s.switch,
        ];
        for round in rounds {
            for s in self.slots.iter().filter(|s| round(s)) {
                if self.selected(s, buf) {
                    s.codec.write(buf, Self::raw(s, seq, t_ns));
                }
            }
        }
    }
}

/// The raw values of signal `s` in every frame of `path` with the message's id.
fn log_values(
    m: &Message,
    name: &str,
    s: &Signal,
    codec: &Codec,
    path: &Path,
) -> Result<Vec<u64>, SignalError> {
    let err = |source| SignalError::Log {
        message: name.to_string(),
        signal: s.name.clone(),
        path: path.display().to_string(),
        source: Box::new(source),
    };
    let mut out = Vec::new();
    let bytes = usize::from(m.len);
    for r in crate::canlog::open(path).map_err(err)? {
        let r = r.map_err(err)?;
        if crate::canlog::frame_id(&r.record.frame) != (m.id, m.extended) {
            continue;
        }
        let mut buf = [0u8; 64];
        let data = crate::canlog::frame_data(&r.record.frame);
        let n = data.len().min(bytes);
        buf[..n].copy_from_slice(&data[..n]);
        out.push(codec.read(&buf));
    }
    if out.is_empty() {
        return Err(SignalError::LogEmpty {
            message: name.to_string(),
            signal: s.name.clone(),
            path: path.display().to_string(),
            id: crate::timing::id_text(m.id, m.extended),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiles::{ByteOrder, MuxCondition};

    fn sig(name: &str, start: u16, size: u8) -> Signal {
        Signal::new(name, start, size)
    }

    #[test]
    fn intel_and_motorola_layouts() {
        let mut buf = [0u8; 8];
        // Intel 12 bits at 4: raw 0xABC -> byte 0 high nibble C, byte 1 AB.
        Codec::new(&sig("a", 4, 12)).write(&mut buf, 0xABC);
        assert_eq!(buf[..2], [0xC0, 0xAB]);
        // Motorola 16 bits from bit 23 (byte 2 MSB): byte 2 = high byte, byte 3 = low.
        let mut m = sig("b", 23, 16);
        m.byte_order = ByteOrder::BigEndian;
        let c = Codec::new(&m);
        c.write(&mut buf, 0x1234);
        assert_eq!(buf[2..4], [0x12, 0x34]);
        assert_eq!(c.read(&buf), 0x1234);
        // Writing one signal leaves the others alone.
        assert_eq!(buf[..2], [0xC0, 0xAB]);
    }

    #[test]
    fn scaling_signs_rounding_and_floats() {
        let mut s = sig("t", 0, 12);
        s.value_type = ValueType::Signed;
        s.factor = 0.1;
        s.offset = -40.0;
        let c = Codec::new(&s);
        // (-52.35 + 40) / 0.1 = -123.5 -> -124 (half to even); 12-bit two's complement.
        assert_eq!(c.raw_of(-52.35), 0x1000 - 124);
        assert!((c.phys_of(c.raw_of(-52.3)) - -52.3).abs() < 1e-9);
        // Saturation at the raw range: +2047 * 0.1 - 40.
        assert_eq!(c.raw_of(1e9), 2047);
        assert_eq!(c.raw_of(-1e9), 0x800);
        let mut u = sig("u", 0, 8);
        u.min = Some(10.0);
        assert_eq!(Codec::new(&u).raw_of(2.5), 10);
        assert_eq!(Codec::new(&sig("h", 0, 8)).raw_of(2.5), 2);
        assert_eq!(Codec::new(&sig("h", 0, 8)).raw_of(3.5), 4);
        let mut f = sig("f", 0, 32);
        f.value_type = ValueType::Float32;
        assert_eq!(Codec::new(&f).raw_of(1.5), u64::from(1.5f32.to_bits()));
        let mut d = sig("d", 0, 64);
        d.value_type = ValueType::Float64;
        let c = Codec::new(&d);
        assert_eq!(c.phys_of(c.raw_of(-2.25)), -2.25);
        let mut w = sig("w", 0, 64);
        w.value_type = ValueType::Signed;
        assert_eq!(Codec::new(&w).raw_of(-1.0), u64::MAX);
    }

    fn msg(signals: Vec<Signal>) -> Message {
        let text = r#"(id: 0x100, len: 8, period_ms: 10)"#;
        let mut m: Message = ron::from_str(text).unwrap();
        m.signals = signals;
        m
    }

    #[test]
    fn generators_and_multiplexing() {
        let mut sw = sig("Mode", 0, 8);
        sw.multiplexor = true;
        let mut a = sig("A", 8, 8);
        a.mux = Some(MuxCondition {
            switch: None,
            values: vec![(1, 1)],
        });
        a.value = Some(Generator::Counter {
            start: 250,
            step: 3,
        });
        let mut b = sig("B", 8, 8);
        b.mux = Some(MuxCondition {
            switch: None,
            values: vec![(2, 2)],
        });
        b.value = Some(Generator::Constant(7.0));
        let mut r = sig("R", 16, 8);
        r.value = Some(Generator::Ramp {
            from: 0.0,
            to: 100.0,
            period_ms: 10.0,
        });
        let mut cy = sig("C", 24, 8);
        cy.value = Some(Generator::Cycle(vec![5.0, 6.0]));
        let p = Payload::new(&msg(vec![sw, a, b, r, cy]), "M")
            .unwrap()
            .unwrap();
        let frames: Vec<[u8; 4]> = (0..4u64)
            .map(|seq| {
                let mut buf = [0u8; 8];
                p.fill(&mut buf, seq, seq * 2_500_000);
                buf[..4].try_into().unwrap()
            })
            .collect();
        // The switch steps through 1, 2; A counts 250 + 3 seq mod 256; B is 7; the ramp is
        // at 0, 25, 50, 75 % of 100; the cycle 5, 6.
        assert_eq!(
            frames,
            vec![[1, 250, 0, 5], [2, 7, 25, 6], [1, 0, 50, 5], [2, 7, 75, 6]]
        );
    }

    #[test]
    fn log_values_and_missing_frames() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("in.log");
        std::fs::write(
            &log,
            "(1.000000) can0 100#0A\n(1.010000) can0 200#FF\n(1.020000) can0 100#0B\n",
        )
        .unwrap();
        let mut s = sig("L", 0, 8);
        s.value = Some(Generator::Log(log.clone()));
        let p = Payload::new(&msg(vec![s.clone()]), "M").unwrap().unwrap();
        let got: Vec<u8> = (0..3u64)
            .map(|seq| {
                let mut b = [0u8; 8];
                p.fill(&mut b, seq, 0);
                b[0]
            })
            .collect();
        assert_eq!(got, vec![0x0A, 0x0B, 0x0A]);
        let mut m = msg(vec![s]);
        m.id = 0x300;
        let e = Payload::new(&m, "M").unwrap_err();
        assert!(
            e.to_string().ends_with("in.log has no frame with id 0x300"),
            "{e}"
        );
    }
}
