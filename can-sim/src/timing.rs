//! The CAN timing model: frame lengths on the wire, frame times, bus load and worst-case
//! response times.
//!
//! Frame lengths follow the kernel's `include/linux/can/length.h` (`can_frame_bits()`,
//! Linux 6.3+): header, data and CRC field are dynamically bit-stuffed in the worst case
//! (`n + (n - 1) / 4` bits for `n` destuffed bits), CAN FD's CRC field carries its fixed
//! stuff bits and stuff count, and the 3-bit intermission is counted so that back-to-back
//! frames are SOF to SOF. See <https://elixir.bootlin.com/linux/latest/source/include/linux/can/length.h>.
//!
//! The response-time analysis on top of these frame times is in [`crate::rta`].
//!
//! Everything here is pure integer arithmetic in nanoseconds and is tested without a bus.

use profiles::FrameKind;

/// Classic CAN standard frame: SOF, 11-bit id, RTR, IDE, r0/FDF, DLC (`CAN_FRAME_HEADER_SFF_BITS`).
pub const CAN_FRAME_HEADER_SFF_BITS: u32 = 19;
/// Classic CAN extended frame header: SOF, id, SRR, IDE, id ext, RTR, r1/FDF, r0, DLC
/// (`CAN_FRAME_HEADER_EFF_BITS`).
pub const CAN_FRAME_HEADER_EFF_BITS: u32 = 39;
/// CAN FD standard frame header incl. RRS, IDE, FDF, res, BRS, ESI, DLC
/// (`CANFD_FRAME_HEADER_SFF_BITS`).
pub const CANFD_FRAME_HEADER_SFF_BITS: u32 = 22;
/// CAN FD extended frame header (`CANFD_FRAME_HEADER_EFF_BITS`).
pub const CANFD_FRAME_HEADER_EFF_BITS: u32 = 41;
/// CRC15 and CRC delimiter (`CAN_FRAME_CRC_FIELD_BITS`).
pub const CAN_FRAME_CRC_FIELD_BITS: u32 = 16;
/// Stuff count 4, CRC17, delimiter 1, 6 fixed stuff bits: FD payloads up to 16 bytes
/// (`CANFD_FRAME_CRC17_FIELD_BITS`).
pub const CANFD_FRAME_CRC17_FIELD_BITS: u32 = 28;
/// Stuff count 4, CRC21, delimiter 1, 7 fixed stuff bits: FD payloads of 20..64 bytes
/// (`CANFD_FRAME_CRC21_FIELD_BITS`).
pub const CANFD_FRAME_CRC21_FIELD_BITS: u32 = 33;
/// ACK slot, ACK delimiter, 7 EOF bits (`CAN_FRAME_FOOTER_BITS`).
pub const CAN_FRAME_FOOTER_BITS: u32 = 9;
/// Intermission, the first part of the inter-frame space (`CAN_INTERMISSION_BITS`).
pub const CAN_INTERMISSION_BITS: u32 = 3;

/// The older byte-granular overheads of `length.h` (Linux 5.12 to 6.2), kept for
/// reference and tested against the bit model: `DIV_ROUND_UP(47, 8)`.
pub const CAN_FRAME_OVERHEAD_SFF: u32 = 47_u32.div_ceil(8);
/// `DIV_ROUND_UP(67, 8)`.
pub const CAN_FRAME_OVERHEAD_EFF: u32 = 67_u32.div_ceil(8);
/// `DIV_ROUND_UP(61, 8)`.
pub const CANFD_FRAME_OVERHEAD_SFF: u32 = 61_u32.div_ceil(8);
/// `DIV_ROUND_UP(80, 8)`.
pub const CANFD_FRAME_OVERHEAD_EFF: u32 = 80_u32.div_ceil(8);

/// Errors of the timing model; each names the message or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    /// A payload length the frame format cannot carry.
    #[error("Payload length {len} is not valid for {kind} frames (classic: 0..=8; FD: 0..=8, 12, 16, 20, 24, 32, 48, 64)")]
    BadLength {
        /// The length.
        len: u8,
        /// The frame format.
        kind: &'static str,
    },
    /// An identifier out of range for its format.
    #[error("Identifier {id:#x} does not fit a {bits}-bit identifier")]
    BadId {
        /// The id.
        id: u32,
        /// 11 or 29.
        bits: u32,
    },
    /// A zero or missing bitrate.
    #[error("Bitrate {what} must be positive (got {value:?})")]
    BadBitrate {
        /// Which bitrate.
        what: &'static str,
        /// The value.
        value: Option<u32>,
    },
    /// A message period or deadline that is zero, negative or not finite.
    #[error("Message {name}: {field} must be a positive duration (got {value})")]
    BadTime {
        /// Message name.
        name: String,
        /// Field.
        field: &'static str,
        /// Value as written.
        value: String,
    },
}

/// The wire format of one message's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Classic, FD, FD with bit-rate switch.
    pub kind: FrameKind,
    /// 29-bit identifier.
    pub extended: bool,
    /// Payload bytes.
    pub len: u8,
}

/// Name of a frame kind as written in records (`classic`, `fd`, `fd_brs`).
pub fn kind_name(kind: FrameKind) -> &'static str {
    match kind {
        FrameKind::Classic => "classic",
        FrameKind::Fd => "fd",
        FrameKind::FdBrs => "fd_brs",
    }
}

/// True when `len` is a payload length CAN FD can carry (DLC 0..15).
pub fn is_fd_len(len: u8) -> bool {
    matches!(len, 0..=8 | 12 | 16 | 20 | 24 | 32 | 48 | 64)
}

impl FrameSpec {
    /// Check the length against the format.
    pub fn validate(&self) -> Result<(), TimingError> {
        let ok = match self.kind {
            FrameKind::Classic => self.len <= 8,
            FrameKind::Fd | FrameKind::FdBrs => is_fd_len(self.len),
        };
        if ok {
            Ok(())
        } else {
            Err(TimingError::BadLength {
                len: self.len,
                kind: kind_name(self.kind),
            })
        }
    }

    /// True for CAN FD (with or without BRS).
    pub fn is_fd(&self) -> bool {
        !matches!(self.kind, FrameKind::Classic)
    }
}

/// Check that `id` fits its identifier format.
pub fn validate_id(id: u32, extended: bool) -> Result<(), TimingError> {
    let (max, bits) = if extended {
        (0x1FFF_FFFF, 29)
    } else {
        (0x7FF, 11)
    };
    if id > max {
        Err(TimingError::BadId { id, bits })
    } else {
        Ok(())
    }
}

/// Worst-case length of a bit-stuffed stream of `destuffed` bits: after the first bit, a
/// stuff bit every four bits (`can_bitstuffing_len()`).
pub fn stuffed_len(destuffed: u32) -> u32 {
    if destuffed == 0 {
        0
    } else {
        destuffed + (destuffed - 1) / 4
    }
}

/// Bits on the wire of one frame, exactly as `can_frame_bits(is_fd, is_eff, bitstuffing,
/// intermission, data_len)` of the kernel computes them.
pub fn can_frame_bits(
    is_fd: bool,
    is_eff: bool,
    bitstuffing: bool,
    intermission: bool,
    data_len: u8,
) -> u32 {
    let stuff = |n: u32| if bitstuffing { stuffed_len(n) } else { n };
    let data = u32::from(data_len) * 8;
    let tail = CAN_FRAME_FOOTER_BITS
        + if intermission {
            CAN_INTERMISSION_BITS
        } else {
            0
        };
    if is_fd {
        let header = if is_eff {
            CANFD_FRAME_HEADER_EFF_BITS
        } else {
            CANFD_FRAME_HEADER_SFF_BITS
        };
        let crc = if data_len <= 16 {
            CANFD_FRAME_CRC17_FIELD_BITS
        } else {
            CANFD_FRAME_CRC21_FIELD_BITS
        };
        stuff(header + data) + crc + tail
    } else {
        let header = if is_eff {
            CAN_FRAME_HEADER_EFF_BITS
        } else {
            CAN_FRAME_HEADER_SFF_BITS
        };
        stuff(header + data + CAN_FRAME_CRC_FIELD_BITS) + tail
    }
}

/// Bytes per frame as `can_frame_bytes()` (rounded up, with intermission): what the
/// kernel's BQL and `can_skb_get_frame_len()` account.
pub fn can_frame_bytes(is_fd: bool, is_eff: bool, bitstuffing: bool, data_len: u8) -> u32 {
    can_frame_bits(is_fd, is_eff, bitstuffing, true, data_len).div_ceil(8)
}

/// A frame's worst-case bits split by bit-rate phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBits {
    /// Bits sent at the nominal (arbitration) bitrate.
    pub nominal: u32,
    /// Bits sent at the data bitrate (0 unless FD with BRS).
    pub data: u32,
}

impl FrameBits {
    /// All bits.
    pub fn total(&self) -> u32 {
        self.nominal + self.data
    }
}

/// Bits of the arbitration phase of an FD frame up to and including BRS (SOF, id, RRS/SRR,
/// IDE, FDF, res, BRS). The bit rate switches at BRS's sample point.
fn fd_arbitration_bits(is_eff: bool) -> u32 {
    if is_eff {
        36
    } else {
        17
    }
}

/// Worst-case bits (with stuffing and intermission) of a frame, split by phase.
///
/// Without BRS every bit is at the nominal rate. With BRS the data phase runs from ESI to
/// the CRC delimiter: the arbitration bits (see `fd_arbitration_bits`) take their own
/// worst-case stuff bits `(a - 1) / 4`, the rest of the dynamically stuffed header+data and
/// the whole CRC field are data phase, and ACK, EOF and intermission are nominal again.
pub fn frame_bits(spec: &FrameSpec) -> Result<FrameBits, TimingError> {
    spec.validate()?;
    let total = can_frame_bits(spec.is_fd(), spec.extended, true, true, spec.len);
    if spec.kind != FrameKind::FdBrs {
        return Ok(FrameBits {
            nominal: total,
            data: 0,
        });
    }
    let a = fd_arbitration_bits(spec.extended);
    let arb = stuffed_len(a);
    let tail = CAN_FRAME_FOOTER_BITS + CAN_INTERMISSION_BITS;
    let nominal = arb + tail;
    Ok(FrameBits {
        nominal,
        data: total - nominal,
    })
}

/// Nanoseconds for `bits` at `bitrate`, rounded up.
pub fn bits_to_ns(bits: u64, bitrate: u32) -> u64 {
    let ns = (u128::from(bits) * 1_000_000_000).div_ceil(u128::from(bitrate.max(1)));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// One bit time `tau_bit` in ns (rounded up).
pub fn tau_bit_ns(bitrate: u32) -> u64 {
    bits_to_ns(1, bitrate)
}

/// Worst-case transmission time `C` of a frame in ns (with intermission, so that frames
/// sent back to back take exactly this long each).
pub fn frame_time_ns(
    spec: &FrameSpec,
    bitrate: u32,
    data_bitrate: Option<u32>,
) -> Result<u64, TimingError> {
    if bitrate == 0 {
        return Err(TimingError::BadBitrate {
            what: "bitrate",
            value: Some(bitrate),
        });
    }
    let bits = frame_bits(spec)?;
    let mut ns = bits_to_ns(u64::from(bits.nominal), bitrate);
    if bits.data > 0 {
        let dbr = match data_bitrate {
            Some(d) if d > 0 => d,
            other => {
                return Err(TimingError::BadBitrate {
                    what: "data_bitrate (needed by FdBrs messages)",
                    value: other,
                })
            }
        };
        ns += bits_to_ns(u64::from(bits.data), dbr);
    }
    Ok(ns)
}

/// Arbitration order key: lower wins. Compares the 11-bit base identifier first; with an
/// equal base a standard frame beats an extended one (its RTR/RRS bit is dominant where
/// the extended frame sends a recessive SRR); then the 18-bit extension.
pub fn arbitration_key(id: u32, extended: bool) -> u64 {
    if extended {
        let base = u64::from(id >> 18) & 0x7FF;
        let ext = u64::from(id) & 0x3FFFF;
        (base << 19) | (1 << 18) | ext
    } else {
        (u64::from(id) & 0x7FF) << 19
    }
}

/// Convert a non-negative finite f64 to u64, None when out of range.
pub fn f64_to_u64(x: f64) -> Option<u64> {
    if x.is_finite() && (0.0..18_446_744_073_709_551_615.0).contains(&x) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(x as u64)
    } else {
        None
    }
}

/// Bus load in percent of a set of (C, T) pairs: `sum C/T * 100`.
pub fn bus_load_pct(c_t: impl IntoIterator<Item = (u64, u64)>) -> f64 {
    c_t.into_iter()
        .map(|(c, t)| {
            #[allow(clippy::cast_precision_loss)]
            let share = c as f64 / t.max(1) as f64;
            share
        })
        .sum::<f64>()
        * 100.0
}

/// ns as ms (for messages).
#[allow(clippy::cast_precision_loss)]
pub fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// ns as us.
#[allow(clippy::cast_precision_loss)]
pub fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// An identifier in the usual hex form: `0x0C0`, `0x18FF5021`.
pub fn id_text(id: u32, extended: bool) -> String {
    if extended {
        format!("0x{id:08X}")
    } else {
        format!("0x{id:03X}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(extended: bool, len: u8) -> FrameSpec {
        FrameSpec {
            kind: FrameKind::Classic,
            extended,
            len,
        }
    }

    /// Hand-computed classic frame lengths (worst-case stuffing, with 3 intermission bits).
    /// SFF: stuffed(19 + 8n + 16) + 9 + 3; EFF: stuffed(39 + 8n + 16) + 9 + 3.
    /// These equal the textbook `g + 8n + 13 + floor((g + 8n - 1) / 4)` with g = 34 / 54
    /// (Davis et al. 2007 eq. 1): 55 + 10n - (n = 0 ... 8 rounding) etc.
    #[test]
    fn classic_lengths_match_hand_computed_values() {
        // n:         0   1   2   3   4   5   6   7   8
        let sff = [55, 65, 75, 85, 95, 105, 115, 125, 135];
        // EFF: 55+8n bits stuffed: 55+8n + (54+8n)/4, + 12
        let eff = [80, 90, 100, 110, 120, 130, 140, 150, 160];
        for n in 0..=8u8 {
            let b = frame_bits(&classic(false, n)).unwrap();
            assert_eq!(b.total(), sff[usize::from(n)], "SFF len {n}");
            assert_eq!(b.data, 0);
            let b = frame_bits(&classic(true, n)).unwrap();
            assert_eq!(b.total(), eff[usize::from(n)], "EFF len {n}");
            // The textbook formula (Davis et al. 2007, eq. 1) gives the same counts.
            for (ext, g) in [(false, 34u32), (true, 54u32)] {
                let s = u32::from(n);
                let textbook = g + 8 * s + 13 + (g + 8 * s - 1) / 4;
                assert_eq!(
                    can_frame_bits(false, ext, true, true, n),
                    textbook,
                    "len {n} ext {ext}"
                );
            }
        }
        // Without stuffing: 19+16+9+3 = 47 bits of overhead for SFF, 67 for EFF: the
        // figures behind the older CAN_FRAME_OVERHEAD_SFF/EFF byte constants.
        assert_eq!(can_frame_bits(false, false, false, true, 0), 47);
        assert_eq!(can_frame_bits(false, true, false, true, 0), 67);
        assert_eq!(CAN_FRAME_OVERHEAD_SFF, 6);
        assert_eq!(CAN_FRAME_OVERHEAD_EFF, 9);
        // CAN_FRAME_LEN_MAX = can_frame_bytes(false, true, false, 8) = 17 = 9 + 8.
        assert_eq!(
            can_frame_bytes(false, true, false, 8),
            CAN_FRAME_OVERHEAD_EFF + 8
        );
    }

    /// CAN FD: stuffed(header + 8n) + CRC field (28 for n <= 16, 33 above) + 12.
    #[test]
    fn fd_lengths_match_hand_computed_values() {
        // (len, SFF bits, EFF bits), computed by hand:
        // len 0:  22 -> 22+21/4=27, +28+12 = 67;   41 -> 41+10=51, +40 = 91
        // len 8:  86 -> 86+21=107, +40 = 147;      105 -> 105+26=131, +40 = 171
        // len 12: 118 -> 118+29=147, +40 = 187;    137 -> 137+34=171, +40 = 211
        // len 16: 150 -> 150+37=187, +40 = 227;    169 -> 169+42=211, +40 = 251
        // len 20: 182 -> 182+45=227, +33+12 = 272; 201 -> 201+50=251, +45 = 296
        // len 64: 534 -> 534+133=667, +45 = 712;   553 -> 553+138=691, +45 = 736
        // Every other FD length, by the same rule: 10 bits more per byte (8 data bits and
        // 2 stuff bits), and 5 more at 20 bytes where CRC21 replaces CRC17.
        let cases = [
            (0u8, 67u32, 91u32),
            (1, 77, 101),
            (2, 87, 111),
            (3, 97, 121),
            (4, 107, 131),
            (5, 117, 141),
            (6, 127, 151),
            (7, 137, 161),
            (8, 147, 171),
            (12, 187, 211),
            (16, 227, 251),
            (20, 272, 296),
            (24, 312, 336),
            (32, 392, 416),
            (48, 552, 576),
            (64, 712, 736),
        ];
        for (len, sff, eff) in cases {
            for (ext, want) in [(false, sff), (true, eff)] {
                let spec = FrameSpec {
                    kind: FrameKind::Fd,
                    extended: ext,
                    len,
                };
                assert_eq!(
                    frame_bits(&spec).unwrap().total(),
                    want,
                    "FD len {len} ext {ext}"
                );
                // BRS moves bits between phases but keeps the total.
                let brs = frame_bits(&FrameSpec {
                    kind: FrameKind::FdBrs,
                    ..spec
                })
                .unwrap();
                assert_eq!(brs.total(), want);
                // Arbitration: SFF 17 bits -> 21 stuffed; EFF 36 -> 44; plus 12 tail bits.
                assert_eq!(brs.nominal, if ext { 44 + 12 } else { 21 + 12 });
            }
        }
        // No-stuffing overhead: 22+28+9+3 = 62 bits (the old DIV_ROUND_UP(61, 8) = 8 bytes
        // counted 61 without ESI/res split), EFF 41+28+12 = 81 (old 80 -> 10 bytes).
        assert_eq!(
            can_frame_bytes(true, false, false, 0),
            CANFD_FRAME_OVERHEAD_SFF
        );
        assert_eq!(can_frame_bytes(true, true, false, 0), 11);
        assert_eq!(CANFD_FRAME_OVERHEAD_EFF, 10);
    }

    #[test]
    fn invalid_lengths_and_ids_are_named() {
        let e = frame_bits(&classic(false, 9)).unwrap_err();
        assert!(e.to_string().contains("Payload length 9"), "{e}");
        let fd = FrameSpec {
            kind: FrameKind::Fd,
            extended: false,
            len: 13,
        };
        let e = format!("{:#}", (frame_bits(&fd)).unwrap_err());
        assert!(
            e.contains("Payload length 13 is not valid for fd frames"),
            "{e}"
        );
        for len in [0u8, 1, 8, 12, 16, 20, 24, 32, 48, 64] {
            assert!(is_fd_len(len));
        }
        let e = format!("{:#}", (validate_id(0x800, false)).unwrap_err());
        assert!(e.contains("0x800 does not fit a 11-bit identifier"), "{e}");
        assert!(validate_id(0x7FF, false).is_ok());
        let e = format!("{:#}", (validate_id(0x2000_0000, true)).unwrap_err());
        assert!(
            e.contains("0x20000000 does not fit a 29-bit identifier"),
            "{e}"
        );
    }

    #[test]
    fn frame_times() {
        // 135 bits at 500 kbit/s = 270 us; at 125 kbit/s 1.08 ms.
        assert_eq!(
            frame_time_ns(&classic(false, 8), 500_000, None).unwrap(),
            270_000
        );
        assert_eq!(
            frame_time_ns(&classic(false, 8), 125_000, None).unwrap(),
            1_080_000
        );
        // FD 64 bytes BRS at 500k/2M: 33 bits * 2 us + 679 bits * 0.5 us = 66 + 339.5 us.
        let spec = FrameSpec {
            kind: FrameKind::FdBrs,
            extended: false,
            len: 64,
        };
        assert_eq!(
            frame_time_ns(&spec, 500_000, Some(2_000_000)).unwrap(),
            66_000 + 339_500
        );
        let e = frame_time_ns(&spec, 500_000, None).unwrap_err();
        assert!(e.to_string().contains("data_bitrate"), "{e}");
        assert_eq!(tau_bit_ns(500_000), 2_000);
    }

    #[test]
    fn arbitration_order() {
        assert!(arbitration_key(0x100, false) < arbitration_key(0x101, false));
        // Same base id: standard beats extended.
        assert!(arbitration_key(0x123, false) < arbitration_key(0x123 << 18, true));
        // An extended id with a lower base beats a standard one.
        assert!(arbitration_key(0x0C0 << 18 | 5, true) < arbitration_key(0x0C1, false));
    }

    #[test]
    fn bus_load() {
        let l = bus_load_pct([(270_000, 10_000_000), (270_000, 20_000_000)]);
        assert!((l - 4.05).abs() < 1e-9, "{l}");
    }
}
