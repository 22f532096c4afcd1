//! The test payload each simulated frame carries, so that any receiver can measure it:
//! a sequence number (loss, duplicates, reordering) and the nominal release time in
//! `CLOCK_REALTIME` ns (latency = kernel RX timestamp - release).
//!
//! Little-endian layouts by payload length (what fits):
//!
//! | len     | bytes 0.. | then                                   |
//! |---------|-----------|----------------------------------------|
//! | >= 12   | seq u32   | release u64 (full ns)                  |
//! | 8..=11  | seq u32   | release low 32 bits (wraps every 4.29 s) |
//! | 6..=7   | seq u16   | release low 32 bits                    |
//! | 2..=5   | seq u16   | - (release taken from the schedule)    |
//! | 1       | seq u8    | -                                      |
//! | 0       | -         | - (counted only)                       |
//!
//! Truncated fields are widened again against a reference: the sequence against the
//! highest one seen, the release against the RX timestamp (valid while latency < 2.1 s).
//! Bytes after the fields are zero.

/// What a payload said, widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Sequence number (None for empty payloads).
    pub seq: Option<u64>,
    /// Release time in ns (None when it did not fit).
    pub release_ns: Option<u64>,
}

/// Bits of sequence number a payload of `len` bytes carries.
pub fn seq_bits(len: usize) -> u32 {
    match len {
        0 => 0,
        1 => 8,
        2..=7 => 16,
        _ => 32,
    }
}

/// Write `seq` and `release_ns` into `buf[..len]` (`buf` must hold `len` bytes).
pub fn encode(buf: &mut [u8], len: usize, seq: u64, release_ns: u64) {
    let buf = &mut buf[..len];
    buf.fill(0);
    let seq_b = seq.to_le_bytes();
    let rel_b = release_ns.to_le_bytes();
    match len {
        0 => {}
        1 => buf[0] = seq_b[0],
        2..=5 => buf[..2].copy_from_slice(&seq_b[..2]),
        6..=7 => {
            buf[..2].copy_from_slice(&seq_b[..2]);
            buf[2..6].copy_from_slice(&rel_b[..4]);
        }
        8..=11 => {
            buf[..4].copy_from_slice(&seq_b[..4]);
            buf[4..8].copy_from_slice(&rel_b[..4]);
        }
        _ => {
            buf[..4].copy_from_slice(&seq_b[..4]);
            buf[4..12].copy_from_slice(&rel_b);
        }
    }
}

/// The value congruent to `raw` modulo `2^bits` nearest to `reference`.
pub fn widen(raw: u64, bits: u32, reference: u64) -> u64 {
    if bits >= 64 {
        return raw;
    }
    let m = 1u64 << bits;
    let base = reference & !(m - 1);
    let cand = base | (raw & (m - 1));
    let half = m / 2;
    if cand > reference && cand - reference > half && cand >= m {
        cand - m
    } else if cand < reference && reference - cand > half {
        cand.checked_add(m).unwrap_or(cand)
    } else {
        cand
    }
}

/// The value congruent to `raw` modulo `m` (any modulus, e.g. an E2E counter's 15)
/// nearest to `reference`, never below 0.
pub fn widen_mod(raw: u64, m: u64, reference: u64) -> u64 {
    let m = m.max(1);
    let cand = reference - reference % m + raw % m;
    if cand > reference && cand - reference > m / 2 && cand >= m {
        cand - m
    } else if cand < reference && reference - cand > m / 2 {
        cand.saturating_add(m)
    } else {
        cand
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// Read a payload. `next_seq` is the sequence number expected next (widening reference),
/// `rx_ns` the receive timestamp (release widening reference).
pub fn decode(data: &[u8], next_seq: u64, rx_ns: u64) -> Decoded {
    let len = data.len();
    let (seq_raw, rel) = match len {
        0 => (None, None),
        1 => (Some(le(&data[..1])), None),
        2..=5 => (Some(le(&data[..2])), None),
        6..=7 => (Some(le(&data[..2])), Some((le(&data[2..6]), 32))),
        8..=11 => (Some(le(&data[..4])), Some((le(&data[4..8]), 32))),
        _ => (Some(le(&data[..4])), Some((le(&data[4..12]), 64))),
    };
    Decoded {
        seq: seq_raw.map(|s| widen(s, seq_bits(len), next_seq)),
        release_ns: rel.map(|(r, bits)| widen(r, bits, rx_ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_length() {
        let rel = 1_700_000_000_123_456_789u64;
        let rx = rel + 250_000;
        for len in [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 64] {
            let mut buf = [0xAAu8; 64];
            encode(&mut buf, len, 70_000, rel);
            let d = decode(&buf[..len], 69_990, rx);
            match len {
                0 => assert_eq!(d.seq, None),
                _ => assert_eq!(d.seq, Some(70_000), "len {len}"),
            }
            match len {
                6.. => assert_eq!(d.release_ns, Some(rel), "len {len}"),
                _ => assert_eq!(d.release_ns, None, "len {len}"),
            }
            if len > 12 {
                assert!(buf[12..len].iter().all(|b| *b == 0));
            }
        }
    }

    #[test]
    fn widening_across_wraps() {
        // 16-bit sequence 0xFFFF followed by 0x0000 -> 65536.
        assert_eq!(widen(0, 16, 65_535), 65_536);
        assert_eq!(widen(0xFFFF, 16, 65_536), 65_535);
        assert_eq!(widen(5, 16, 3), 5);
        // 32-bit release stamp just before the RX time crosses a 2^32 boundary.
        let rel = (7u64 << 32) - 100;
        let rx = (7u64 << 32) + 1_000;
        assert_eq!(widen(rel & 0xFFFF_FFFF, 32, rx), rel);
        assert_eq!(widen(42, 64, 0), 42);
        // Nothing below zero.
        assert_eq!(widen(0xFFFF, 16, 0), 0xFFFF);
        // An E2E counter modulo 15: 14 then 0 is the next one; 13 after 30 is 28.
        assert_eq!(widen_mod(0, 15, 15), 15);
        assert_eq!(widen_mod(14, 15, 15), 14);
        assert_eq!(widen_mod(13, 15, 30), 28);
        assert_eq!(widen_mod(3, 256, 1000), 1027);
        assert_eq!(widen_mod(7, 15, 0), 7);
    }
}
