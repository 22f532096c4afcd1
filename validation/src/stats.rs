//! The statistics behind a percentile claim: how many samples a claim needs, and a
//! one-sided 95 % upper confidence bound on an exceedance probability.
//!
//! A requirement "p99.99 <= 20 us" claims that a wakeup exceeds 20 us with probability at
//! most q = 1e-4. With k of n samples above the bound, the one-sided Clopper-Pearson
//! bound U(k, n) is the largest exceedance probability still consistent with the data at
//! 95 % confidence; the claim is carried when U <= q. U is exact for every k: the 0.95
//! quantile of Beta(k + 1, n - k), found by bisection on the regularized incomplete beta
//! function (statrs), since P(Bin(n, p) <= k) = 1 - I_p(k + 1, n - k). For k = 0 this is
//! the rule of three: U = 1 - 0.05^(1/n), about 3/n, so a p99.99 claim needs at least
//! 29 956 samples.

use statrs::function::beta::checked_beta_reg;

use crate::fmt::f;

/// One-sided confidence level used for every claim.
pub const CONFIDENCE: f64 = 0.95;

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
/// (exact Clopper-Pearson, see the module docs).
pub fn upper_bound(k: u64, n: u64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    if k == 0 {
        return 1.0 - (1.0 - CONFIDENCE).powf(1.0 / f(n));
    }
    let (a, b) = (f(k) + 1.0, f(n - k));
    // I_p(a, b) grows with p from 0 to 1: find where it reaches the confidence.
    let (mut lo, mut hi) = (f(k) / f(n), 1.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        match checked_beta_reg(a, b, mid) {
            Ok(v) if v < CONFIDENCE => lo = mid,
            _ => hi = mid,
        }
        if hi - lo <= hi * 1e-12 {
            break;
        }
    }
    hi
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
        // One-sided 95 % upper bounds from standard tables.
        for (k, n, want) in [(1, 10, 0.3942), (5, 100, 0.1023), (2, 30_000, 2.0975e-4)] {
            let u = upper_bound(k, n);
            assert!(
                (u - want).abs() < want * 1e-3,
                "U({k}, {n}) = {u}, want {want}"
            );
        }
        assert_eq!(upper_bound(10, 10), 1.0);
        assert_eq!(upper_bound(0, 0), 1.0);
    }

    #[test]
    fn exact_above_2000_exceedances_too() {
        // 5000 of 1e6: the normal approximation gives 0.005116; exact is slightly above.
        let u = upper_bound(5000, 1_000_000);
        assert!(u > 0.005116 && u < 0.00513, "{u}");
        // The bound is the 0.95 quantile: P(Bin(n, U) <= k) = 0.05.
        let tail = 1.0 - checked_beta_reg(5001.0, 995_000.0, u).unwrap();
        assert!((tail - 0.05).abs() < 1e-6, "{tail}");
        // Monotone in k.
        assert!(upper_bound(2001, 1_000_000) > upper_bound(2000, 1_000_000));
    }
}
