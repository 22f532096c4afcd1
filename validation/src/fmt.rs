//! Numbers and bounds in words, as every report format prints them.

/// `x` as f64 (counts here stay far below 2^53, where f64 is exact).
pub fn f(x: u64) -> f64 {
    // u64 -> f64 rounds above 2^53 only; sample counts never get there.
    x as f64
}

/// Nanoseconds in microseconds.
pub fn ns_to_us(ns: u64) -> f64 {
    f(ns) / 1000.0
}

/// A number with at most 3 decimals, trailing zeros dropped.
pub fn fmt_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A number as the reports print it (`-` when absent).
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), fmt_num)
}

/// A probability: `4.99e-5`.
pub fn fmt_prob(p: f64) -> String {
    format!("{p:.2e}")
}

/// `max` for 100, else `p99.9`.
pub fn pct_label(p: f64) -> String {
    if p >= 100.0 {
        "max".into()
    } else {
        format!("p{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(fmt_num(31.007), "31.007");
        assert_eq!(fmt_num(120.0), "120");
        assert_eq!(fmt_num(0.0004), "0");
        assert_eq!(fmt_num(-0.0001), "0");
        assert_eq!(fmt_opt(None), "-");
        assert_eq!(fmt_prob(4.99e-5), "4.99e-5");
        assert_eq!(pct_label(100.0), "max");
        assert_eq!(pct_label(99.99), "p99.99");
    }
}
