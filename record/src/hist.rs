//! HDR histograms in records: nanosecond values, HdrHistogram V2 compressed and base64
//! encoded (the format of HdrHistogram's `HistogramLogWriter`, so other HdrHistogram tools
//! read it), plus the summary every record carries next to it.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable value: 60 s in ns (issue: at least 10 s).
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits (3: 0.1 % value resolution).
pub const SIGFIG: u8 = 3;

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

/// Errors decoding a histogram.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// Not base64.
    #[error("Histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not a V2 histogram.
    #[error("Histogram is not a valid HdrHistogram V2 encoding: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
}

/// A new empty histogram for nanosecond values, preallocated (no allocation on record).
pub fn new_ns() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("static bounds are valid")
}

/// Encode as base64 of the V2 deflate-compressed form.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .expect("serializing to a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Decode what [`encode`] wrote (also plain V2, uncompressed).
pub fn decode(s: &str) -> Result<Histogram<u64>, HistError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistError::Decode)
}

/// A histogram with its summary statistics (all values in ns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistSummary {
    /// Number of values.
    pub samples: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Largest value (exact: HDR keeps the max at full precision via `max()`; equivalent
    /// to the highest bucket's upper bound within 0.1 %).
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Standard deviation.
    pub stddev_ns: f64,
    /// Percentiles by key (`p50` ... `p99.9999`).
    pub percentiles: BTreeMap<String, u64>,
    /// The histogram: HdrHistogram V2 deflate, base64.
    pub hdr: String,
}

impl HistSummary {
    /// Summarize `h`.
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
                .map(|(k, p)| {
                    (
                        k.to_string(),
                        if empty { 0 } else { h.value_at_percentile(*p) },
                    )
                })
                .collect(),
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
        assert_eq!(back.value_at_percentile(50.0), h.value_at_percentile(50.0));
        assert!(s.percentiles["p99.9999"] >= 8_990_000_000);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode("not base64 !!").is_err());
        assert!(decode("AAAA").is_err());
    }
}
