//! HDR histograms in records: nanosecond values, HdrHistogram V2 compressed and base64
//! encoded (the format of HdrHistogram's `HistogramLogWriter`, so other HdrHistogram tools
//! read it), plus the summary every record carries next to it.
//!
//! # Decoding untrusted bytes
//!
//! [`decode`] checks the V2 header before the `hdrhistogram` crate sees a byte: the
//! cookie, the compressed length against the bytes present, the inflated size against the
//! largest payload our parameters allow (lowest value 1, 3 significant digits, highest at
//! most [`highest_trackable`], the bucket end of [`HIGHEST_NS`]), that no run of zero counts is one the crate cannot negate, and
//! after decoding that the counts add up without overflow. A
//! 60-character input claiming a 4 GiB payload is an error, not a 4 GiB allocation.
//!
//! # Percentiles
//!
//! [`value_at_percentile`] is the definition every number in a record and a report uses:
//! over n samples, the value at percentile p is that of the sample of rank
//! `max(1, ceil(p / 100 * n))` in ascending order, reported as the highest value of its
//! HDR bucket (as the Rust `hdrhistogram` crate and HdrHistogram's Java original do). The
//! rank is computed in integers from p rounded to 6 decimals, so p99.9 of 1000 samples
//! is the 999th, not the max (the crate's float product `0.999 * 1000` rounds up to 1000).
//!
//! # Min and max
//!
//! [`HistSummary::min_ns`] and [`HistSummary::max_ns`] are *histogram values* everywhere
//! (probe.json, can.json, merged records): the lowest value of the smallest sample's bucket
//! and the highest value of the largest sample's bucket, what any HdrHistogram tool decodes
//! from `hdr`. A producer that also saw the exact extremes (the probe) records them in
//! [`HistSummary::exact`]; a merge keeps them only when every source had them.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable value: 60 s in ns (issue: at least 10 s).
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits (3: 0.1 % value resolution).
pub const SIGFIG: u8 = 3;
/// The longest base64 text [`decode`] accepts (a full 60 s histogram is far below).
pub const MAX_ENCODED_CHARS: usize = 1 << 20;

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;
const V2_HEADER: usize = 40;

/// The percentiles every summary reports, with their keys.
pub const PERCENTILES: &[(&str, f64)] = &[
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
    ("p99.999", 99.999),
    ("p99.9999", 99.9999),
];

/// Errors decoding or combining a histogram.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// Not base64.
    #[error("Histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Longer than any histogram of ours.
    #[error("Histogram text is {0} characters, above the limit of {MAX_ENCODED_CHARS}")]
    TooLong(usize),
    /// A V2 header we refuse (before decoding).
    #[error("Histogram header refused: {0}")]
    Header(String),
    /// Not a V2 histogram.
    #[error("Histogram is not a valid HdrHistogram V2 encoding: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    /// Counts that add up past 2^64 - 1.
    #[error("Histogram counts add up to more than {} samples", u64::MAX)]
    Overflow,
}

/// A new empty histogram for nanosecond values up to [`HIGHEST_NS`], preallocated (no
/// allocation on record: the probe's hot loop) and with every page of its counts written
/// once, so resident: the allocator may hand out zeroed memory it never touched, and a
/// real-time loop's first sample in such a bucket would take a page fault (a locked
/// process locks pages as they fault in, it does not fault them in).
pub fn new_ns() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("static bounds are valid");
    // Opaque to the optimiser: it may not drop the writes as stores of zero into calloc'd
    // memory.
    std::hint::black_box(&mut h).clear();
    h
}

/// A new empty histogram sized to the data: it starts small and grows to the largest
/// value recorded or added (for CAN messages, merges and pools, where thousands of
/// histograms of a preallocated 220 KB each would not fit). Record with [`record`].
pub fn new_auto() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("static sigfig is valid")
}

/// The largest `highest trackable value` one of our histograms can carry: an auto-sized
/// one grows a whole bucket at a time, so holding [`HIGHEST_NS`] (60 s) it tracks up to the
/// end of that bucket (2^36 - 1 ns), beyond [`HIGHEST_NS`] itself. Seen in the host lab:
/// CAN latencies over 34 s in nested TCG gave a can.json that [`decode`] refused.
pub fn highest_trackable() -> u64 {
    static TOP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOP.get_or_init(|| {
        let mut h = new_auto();
        h.record(HIGHEST_NS).expect("an auto-sized histogram grows");
        h.high().max(HIGHEST_NS)
    })
}

/// Record `v` ns; false (not recorded) above [`HIGHEST_NS`], so an auto-sized histogram
/// never grows past what [`decode`] accepts.
pub fn record(h: &mut Histogram<u64>, v: u64) -> bool {
    v <= HIGHEST_NS && h.record(v).is_ok()
}

/// Add `h` into `acc`, refusing a total above 2^64 - 1 (the crate would saturate).
pub fn add(acc: &mut Histogram<u64>, h: &Histogram<u64>) -> Result<(), HistError> {
    acc.len().checked_add(h.len()).ok_or(HistError::Overflow)?;
    acc.add(h)
        .map_err(|e| HistError::Header(format!("cannot add: {e:?}")))
}

/// Encode as base64 of the V2 deflate-compressed form.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .expect("serializing to a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Counts-array length of a histogram with lowest 1, [`SIGFIG`] digits and `high`, as the
/// crate computes it (2048 sub-buckets, half of them per further bucket).
fn counts_len(high: u64) -> u64 {
    let mut smallest_untrackable: u64 = 2048;
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * 1024
}

/// The largest uncompressed V2 encoding our parameters allow (9 bytes per count at most).
fn max_v2_bytes(high: u64) -> usize {
    usize::try_from(counts_len(high) * 9).unwrap_or(usize::MAX) + V2_HEADER
}

/// Check an uncompressed V2 encoding's header against the bytes and our parameters.
fn check_v2_header(b: &[u8]) -> Result<(), HistError> {
    let refuse = |s: String| Err(HistError::Header(s));
    if b.len() < V2_HEADER {
        return refuse(format!(
            "{} bytes, shorter than the 40-byte V2 header",
            b.len()
        ));
    }
    if be_u32(b, 0) != V2_COOKIE {
        return refuse(format!("inner cookie {:#x} is not V2", be_u32(b, 0)));
    }
    let payload = u64::from(be_u32(b, 4));
    let present = (b.len() - V2_HEADER) as u64;
    if payload != present {
        return refuse(format!(
            "payload length {payload} but {present} bytes follow the header"
        ));
    }
    let (offset, digits, low, high) = (be_u32(b, 8), be_u32(b, 12), be_u64(b, 16), be_u64(b, 24));
    let ratio = f64::from_bits(be_u64(b, 32));
    if offset != 0 || ratio.to_bits() != 1.0f64.to_bits() {
        return refuse(format!(
            "normalizing offset {offset} / int-to-double ratio {ratio}: not ours"
        ));
    }
    let top = highest_trackable();
    if digits != u32::from(SIGFIG) || low != 1 || !(2..=top).contains(&high) {
        return refuse(format!(
            "parameters (digits {digits}, lowest {low}, highest {high}) are not ours (digits {SIGFIG}, lowest 1, highest 2..={top})"
        ));
    }
    if b.len() > max_v2_bytes(high) {
        return refuse(format!(
            "payload of {payload} bytes is longer than a histogram up to {high} ns can be"
        ));
    }
    check_counts(&b[V2_HEADER..])
}

/// Walk the counts of a V2 payload as the crate reads them (LEB128 of at most 9 bytes, the
/// 9th taken whole, then ZigZag: a negative number is a run of zero counts) and refuse a
/// run of 2^63 zeros (ZigZag of `i64::MIN`): the crate negates it, which panics in builds
/// with overflow checks (found by `fuzz/`, target hist).
fn check_counts(payload: &[u8]) -> Result<(), HistError> {
    let mut i = 0;
    while i < payload.len() {
        let mut v = 0u64;
        for k in 0..9 {
            // A varint cut short by the end is the crate's to report.
            let Some(&byte) = payload.get(i) else { break };
            i += 1;
            if k == 8 {
                v |= u64::from(byte) << 56;
                break;
            }
            v |= u64::from(byte & 0x7f) << (7 * k);
            if byte & 0x80 == 0 {
                break;
            }
        }
        if v == u64::MAX {
            return Err(HistError::Header(
                "a run of 2^63 zero counts: no histogram has that many buckets".into(),
            ));
        }
    }
    Ok(())
}

/// Decode what [`encode`] wrote (also plain V2, uncompressed), checking the header first
/// (see the module docs).
pub fn decode(s: &str) -> Result<Histogram<u64>, HistError> {
    let s = s.trim();
    if s.len() > MAX_ENCODED_CHARS {
        return Err(HistError::TooLong(s.len()));
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    if bytes.len() < 8 {
        return Err(HistError::Header(format!(
            "{} bytes: no V2 cookie and length",
            bytes.len()
        )));
    }
    let v2 = match be_u32(&bytes, 0) {
        V2_COOKIE => bytes,
        V2_COMPRESSED_COOKIE => {
            let len = u64::from(be_u32(&bytes, 4));
            let present = (bytes.len() - 8) as u64;
            if len != present {
                return Err(HistError::Header(format!(
                    "compressed length {len} but {present} bytes follow"
                )));
            }
            let cap = max_v2_bytes(HIGHEST_NS) as u64;
            let mut inner = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[8..])
                .take(cap + 1)
                .read_to_end(&mut inner)
                .map_err(|e| HistError::Header(format!("deflate stream: {e}")))?;
            if inner.len() as u64 > cap {
                return Err(HistError::Header(format!(
                    "inflates to more than {cap} bytes"
                )));
            }
            inner
        }
        c => {
            return Err(HistError::Header(format!(
                "cookie {c:#x} is not HdrHistogram V2"
            )))
        }
    };
    check_v2_header(&v2)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut v2.as_slice())
        .map_err(HistError::Decode)?;
    h.iter_recorded()
        .try_fold(0u64, |acc, v| acc.checked_add(v.count_at_value()))
        .ok_or(HistError::Overflow)?;
    Ok(h)
}

/// The value at percentile `p` (0 < p <= 100) of `h`, 0 when empty (see the module docs
/// for the definition).
pub fn value_at_percentile(h: &Histogram<u64>, p: f64) -> u64 {
    let n = h.len();
    if n == 0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // p is clamped to [0, 100]: p * 1e6 fits a u128 exactly after rounding.
    let micro = (p.clamp(0.0, 100.0) * 1e6).round() as u128;
    let rank = (micro * u128::from(n)).div_ceil(100_000_000).max(1);
    let mut seen: u128 = 0;
    let mut last = 0;
    for v in h.iter_recorded() {
        seen += u128::from(v.count_at_value());
        last = v.value_iterated_to();
        if seen >= rank {
            return last;
        }
    }
    last
}

/// Exact extremes a producer saw outside the histogram's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exact {
    /// Smallest value recorded, ns.
    pub min_ns: u64,
    /// Largest value seen, ns (also above the histogram's range).
    pub max_ns: u64,
    /// Mean of the recorded values, ns.
    pub mean_ns: f64,
}

/// A histogram with its summary statistics (all values in ns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistSummary {
    /// Number of values in the histogram.
    pub samples: u64,
    /// Lowest value of the smallest sample's bucket (a histogram value, see module docs).
    pub min_ns: u64,
    /// Highest value of the largest sample's bucket (a histogram value, see module docs).
    pub max_ns: u64,
    /// Mean of the histogram (bucket midpoints).
    pub mean_ns: f64,
    /// Standard deviation of the histogram.
    pub stddev_ns: f64,
    /// Percentiles by key (`p50` ... `p99.9999`), [`value_at_percentile`].
    pub percentiles: BTreeMap<String, u64>,
    /// Exact extremes, when the producer saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<Exact>,
    /// The histogram: HdrHistogram V2 deflate, base64.
    pub hdr: String,
}

impl HistSummary {
    /// Summarize `h` (no exact extremes).
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        HistSummary {
            samples: h.len(),
            min_ns: if empty { 0 } else { h.min() },
            max_ns: if empty { 0 } else { h.max() },
            mean_ns: if empty { 0.0 } else { h.mean() },
            stddev_ns: if empty { 0.0 } else { h.stdev() },
            percentiles: PERCENTILES
                .iter()
                .map(|(k, p)| (k.to_string(), value_at_percentile(h, *p)))
                .collect(),
            exact: None,
            hdr: encode(h),
        }
    }

    /// The decoded histogram.
    pub fn histogram(&self) -> Result<Histogram<u64>, HistError> {
        decode(&self.hdr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auto_sized_histogram_of_40_s_latencies_decodes() {
        let mut h = new_auto();
        assert!(record(&mut h, 40_000_000_000));
        assert!(h.high() > HIGHEST_NS, "grown past 60 s: {}", h.high());
        let back = decode(&encode(&h)).expect("what we wrote decodes");
        assert_eq!(back.max(), h.max());
        assert_eq!(highest_trackable(), h.high());
        // One bucket more than that is not ours.
        let e = decode(&b64(&header(0, 3, 1, highest_trackable() + 1))).unwrap_err();
        assert!(e.to_string().contains("are not ours"), "{e}");
    }

    #[test]
    fn round_trip_keeps_every_count() {
        let mut h = new_ns();
        for v in [1_000u64, 2_000, 2_000, 55_000, 9_000_000_000] {
            h.record(v).unwrap();
        }
        let s = HistSummary::from_hist(&h);
        assert_eq!(s.samples, 5);
        assert_eq!(s.min_ns, h.min());
        let back = s.histogram().unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(s.percentiles["p50"], h.highest_equivalent(2_000));
        assert!(s.percentiles["p99.9999"] >= 8_990_000_000);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(decode("not base64 !!"), Err(HistError::Base64(_))));
        let e = decode("AAAA").unwrap_err();
        assert!(e.to_string().contains("no V2 cookie"), "{e}");
        let e = decode(&"A".repeat(MAX_ENCODED_CHARS + 4)).unwrap_err();
        assert!(matches!(e, HistError::TooLong(_)), "{e}");
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn header(payload_len: u32, digits: u32, low: u64, high: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(V2_COOKIE.to_be_bytes());
        b.extend(payload_len.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(digits.to_be_bytes());
        b.extend(low.to_be_bytes());
        b.extend(high.to_be_bytes());
        b.extend(1.0f64.to_bits().to_be_bytes());
        b
    }

    #[test]
    fn a_huge_claimed_payload_is_refused_before_allocating() {
        // The input: 60 characters of base64, payload_len 0xFFFFFFF0.
        let mut b = header(0xFFFF_FFF0, 3, 1, HIGHEST_NS);
        b.extend([2, 2, 2, 2]);
        let s = b64(&b);
        assert!(s.len() <= 60, "{}", s.len());
        let t = std::time::Instant::now();
        let e = decode(&s).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        assert!(
            e.to_string()
                .contains("payload length 4294967280 but 4 bytes follow"),
            "{e}"
        );
    }

    #[test]
    fn foreign_parameters_and_lengths_are_refused() {
        let e = decode(&b64(&header(0, 5, 1, HIGHEST_NS))).unwrap_err();
        assert!(e.to_string().contains("digits 5"), "{e}");
        let e = decode(&b64(&header(0, 3, 1, u64::MAX / 4))).unwrap_err();
        assert!(e.to_string().contains("not ours"), "{e}");
        // A compressed length that does not match what follows.
        let mut c = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        c.extend(0xFFFF_FFF0u32.to_be_bytes());
        c.extend([0x78, 0x9c]);
        let e = decode(&b64(&c)).unwrap_err();
        assert!(
            e.to_string().contains("compressed length 4294967280 but 2"),
            "{e}"
        );
        // A deflate bomb: 100 MB of zeros compress to ~100 KB but inflate past the cap.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &header(100_000_000, 3, 1, HIGHEST_NS)).unwrap();
        std::io::Write::write_all(&mut z, &vec![0u8; 100_000_000]).unwrap();
        let body = z.finish().unwrap();
        let mut c = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        c.extend(u32::try_from(body.len()).unwrap().to_be_bytes());
        c.extend(body);
        let e = decode(&b64(&c)).unwrap_err();
        assert!(e.to_string().contains("inflates to more than"), "{e}");
    }

    #[test]
    fn a_run_of_2_63_zero_counts_is_refused_not_a_panic() {
        // fuzz/regressions/hist/zero-run-i64-min.v2: ZigZag(i64::MIN) is nine 0xFF bytes;
        // the crate's `-count` overflowed on it (a panic in debug builds).
        let mut b = header(11, 3, 1, HIGHEST_NS);
        b.extend([
            0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
        ]);
        let e = decode(&b64(&b)).unwrap_err();
        assert!(e.to_string().contains("a run of 2^63 zero counts"), "{e}");
        // A run of 2^63 - 1 zeros is left to the crate, which refuses it without a panic.
        let mut b = header(11, 3, 1, HIGHEST_NS);
        b.extend([
            0x02, 0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
        ]);
        let e = decode(&b64(&b)).unwrap_err();
        assert!(matches!(e, HistError::Decode(_)), "{e}");
    }

    #[test]
    fn counts_that_add_past_u64_are_refused() {
        // Three buckets of 2^63 - 1 each: the crate saturates the total to 2^64 - 1.
        let mut h = new_auto();
        for v in [60_000, 61_000, 62_000] {
            h.record_n(v, i64::MAX as u64).unwrap();
        }
        assert_eq!(h.len(), u64::MAX, "the crate saturates");
        assert!(matches!(decode(&encode(&h)), Err(HistError::Overflow)));
        let mut a = new_auto();
        a.record_n(1000, u64::MAX - 1).unwrap();
        let mut b = new_auto();
        b.record_n(1000, 2).unwrap();
        assert!(matches!(add(&mut a, &b), Err(HistError::Overflow)));
    }

    #[test]
    fn p999_of_1000_samples_is_the_999th_not_the_max() {
        let mut h = new_auto();
        for us in 1..=1000u64 {
            assert!(record(&mut h, us * 1000));
        }
        // The crate's float rank: 0.999 * 1000 rounds up to 1000, the max.
        assert_eq!(h.value_at_percentile(99.9), h.max());
        let v = value_at_percentile(&h, 99.9);
        assert_eq!(v, h.highest_equivalent(999_000), "{v}");
        assert_eq!(value_at_percentile(&h, 100.0), h.max());
        assert_eq!(value_at_percentile(&h, 50.0), h.highest_equivalent(500_000));
        assert_eq!(value_at_percentile(&h, 0.01), h.highest_equivalent(1000));
        assert_eq!(value_at_percentile(&new_auto(), 50.0), 0);
    }

    #[test]
    fn auto_histograms_are_sized_to_the_data_and_capped() {
        let mut h = new_auto();
        assert!(record(&mut h, 300_000));
        assert!(!record(&mut h, HIGHEST_NS + 1));
        assert_eq!(h.len(), 1);
        assert!(h.distinct_values() < new_ns().distinct_values() / 2);
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back.distinct_values() < new_ns().distinct_values() / 2);
        let mut acc = new_auto();
        add(&mut acc, &back).unwrap();
        assert_eq!(acc.max(), back.max());
    }
}
