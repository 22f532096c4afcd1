//! The statistics behind a percentile claim: how many samples a claim needs, and a
//! one-sided 95 % upper confidence bound on an exceedance probability.
//!
//! A requirement "p99.99 <= 20 us" claims that a wakeup exceeds 20 us with probability at
//! most q = 1e-4. With k of n samples above the bound, the one-sided Clopper-Pearson
//! bound U(k, n) is the largest exceedance probability still consistent with the data at
//! 95 % confidence; the claim is carried when U <= q. For k = 0 this is the rule of three:
//! U = 1 - 0.05^(1/n), about 3/n, so a p99.99 claim needs at least 30 000 samples.

/// One-sided confidence level used for every claim.
pub const CONFIDENCE: f64 = 0.95;

use crate::fmt::f;

/// Samples needed to carry a claim of exceedance probability `q` at 95 % confidence when no
/// sample exceeds the bound (rule of three: the smallest n with 1 - 0.05^(1/n) <= q).
pub fn samples_needed(q: f64) -> Option<u64> {
    if q <= 0.0 || q.is_nan() {
        return None;
    }
    if q >= 1.0 {
        return Some(1);
    }
    // 0.05^(1/n) >= 1 - q  <=>  n >= ln 0.05 / ln(1 - q)
    let n = ((1.0 - CONFIDENCE).ln() / (1.0 - q).ln()).ceil();
    Some(record::floor_u64(n).max(1))
}

/// One-sided 95 % upper confidence bound on a probability from `k` events in `n` trials
/// (Clopper-Pearson; exactly the rule of three's 1 - 0.05^(1/n) for k = 0; Wilson score
/// for k > 2000, where the exact sum gets slow and the two agree closely).
pub fn upper_bound(k: u64, n: u64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let alpha = 1.0 - CONFIDENCE;
    if k == 0 {
        return 1.0 - alpha.powf(1.0 / f(n));
    }
    if k > 2000 {
        let z = 1.644_853_626_951_472_2; // one-sided 95 % normal quantile
        let nf = f(n);
        let p = f(k) / nf;
        let z2 = z * z;
        let centre = p + z2 / (2.0 * nf);
        let spread = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
        return ((centre + spread) / (1.0 + z2 / nf)).min(1.0);
    }
    let (mut lo, mut hi) = (f(k) / f(n), 1.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if binom_cdf(k, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-15 {
            break;
        }
    }
    hi
}

/// P(Bin(n, p) <= k), summed in log space (n may be in the millions).
fn binom_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let ln_ratio = (p / (1.0 - p)).ln();
    let mut ln_term = f(n) * (1.0 - p).ln();
    let mut terms = Vec::with_capacity(usize::try_from(k + 1).unwrap_or(0));
    terms.push(ln_term);
    for i in 1..=k {
        ln_term += (f(n - i + 1) / f(i)).ln() + ln_ratio;
        terms.push(ln_term);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_of_three() {
        // 0 of 30 000: about 3/30 000 = 1e-4.
        let u = upper_bound(0, 30_000);
        assert!((u - 1e-4).abs() < 2e-6, "{u}");
        assert_eq!(samples_needed(1e-4), Some(29_956));
        assert!(upper_bound(0, 29_956) <= 1e-4);
        assert!(upper_bound(0, 29_955) > 1e-4);
        assert_eq!(samples_needed(0.0), None);
    }

    #[test]
    fn clopper_pearson_matches_tables() {
        // 1 of 10: one-sided 95 % upper bound 0.3942 (standard tables).
        let u = upper_bound(1, 10);
        assert!((u - 0.3942).abs() < 1e-3, "{u}");
        // 5 of 100: 0.1024.
        let u = upper_bound(5, 100);
        assert!((u - 0.1024).abs() < 1e-3, "{u}");
        // Wilson for large k lands near the exact value (5000 of 1e6 -> about 0.00512).
        let u = upper_bound(5000, 1_000_000);
        assert!(u > 0.005 && u < 0.0052, "{u}");
        assert_eq!(upper_bound(10, 10), 1.0);
        assert_eq!(upper_bound(0, 0), 1.0);
    }
}
