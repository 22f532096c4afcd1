//! HDR histograms as the records carry them, through [`record::hist::decode`]: the input
//! both as the base64 text itself and as the bytes it encodes (so mutations reach the V2
//! header and the zlib stream). Properties: what decodes re-encodes and decodes equal, and
//! the summaries and percentiles the evidence reads work on it.

use base64::Engine as _;
use record::hist::{self, HistSummary};

/// One input.
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        one(text);
    }
    one(&base64::engine::general_purpose::STANDARD.encode(data));
}

fn one(text: &str) {
    let h = match hist::decode(text) {
        Ok(h) => h,
        Err(e) => {
            crate::refused("hist::decode", &e);
            return;
        }
    };
    let again = hist::decode(&hist::encode(&h)).expect("a decoded histogram re-encodes");
    assert_eq!(again, h, "re-encoded histogram decodes different");
    let s = HistSummary::from_hist(&h);
    assert_eq!(s.samples, h.len());
    let back = s.histogram().expect("a summary's own histogram decodes");
    assert_eq!(back.len(), h.len());
    let mut last = 0;
    for (_, p) in hist::PERCENTILES {
        let v = hist::value_at_percentile(&h, *p);
        assert!(v >= last, "percentile {p} below a lower one: {v} < {last}");
        last = v;
    }
}
