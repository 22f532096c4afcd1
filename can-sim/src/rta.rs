//! Worst-case response times of CAN messages: Davis, Burns, Bril and Lukkien,
//! "Controller Area Network (CAN) schedulability analysis: Refuted, revisited and
//! revised", Real-Time Systems 35(3), 2007 (the revised analysis of Section 4 with the
//! error model of Section 6): blocking, the level-m busy period, every instance in it,
//! queuing jitter and `tau_bit`. Sporadic messages enter with their minimum inter-arrival
//! time as T, as in the paper.
//!
//! Limits: a level whose utilisation is above 1, or exactly 1 with blocking, jitter or
//! errors, has a busy period that never ends (decided exactly, in integer arithmetic, so
//! that a level at exactly 100 % without blocking still gets R, possibly R = D). Near 1
//! the fixed points take very many steps: the analysis has a budget of equation terms
//! ([`RtaLimits`]), reports its progress, and calls a message it could not decide within
//! the budget or within [`BUSY_PERIOD_CAP_PERIODS`] longest periods not schedulable,
//! saying so. Pure integer arithmetic in ns, tested without a bus.

use std::cmp::Ordering;

use crate::timing::{f64_to_u64, ns_to_ms};

/// Bits of an error frame plus recovery assumed per error by the error model
/// (Tindell and Burns 1994, used by Davis et al. 2007 Section 6): error flag 6 + up to 6
/// superposed + delimiter 8 + intermission 3 + 8 suspend bits = 31.
pub const ERROR_OVERHEAD_BITS: u64 = 31;

/// A busy period longer than this many times the longest period is treated as one that
/// does not end.
pub const BUSY_PERIOD_CAP_PERIODS: u64 = 10_000;

/// One message as the response-time analysis sees it (all times in ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtaMessage {
    /// Name for reports.
    pub name: String,
    /// Arbitration key ([`crate::timing::arbitration_key`]); lower is higher priority.
    pub key: u64,
    /// Worst-case transmission time C.
    pub c_ns: u64,
    /// Period, or minimum inter-arrival time, T.
    pub t_ns: u64,
    /// Queuing jitter J.
    pub j_ns: u64,
    /// Deadline D (from the initiating event).
    pub d_ns: u64,
}

/// The analysis result for one message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RtaResult {
    /// Blocking B: the longest lower-priority frame.
    pub blocking_ns: u64,
    /// Length of the level-m busy period (None: it does not end, or was not decided).
    pub busy_period_ns: Option<u64>,
    /// Instances examined (Q).
    pub instances: u64,
    /// The instance q with the largest response time.
    pub worst_instance: u64,
    /// Worst-case response time R (None: unbounded or not decided).
    pub wcrt_ns: Option<u64>,
    /// R <= D.
    pub schedulable: bool,
    /// Why not schedulable (None when it is).
    pub reason: Option<String>,
}

/// The error model of Davis et al. 2007 Section 6: `E(t) = n(t) * (31 tau_bit + max C_k)`
/// over `k` in hep(m), with `n(t) = ceil(t * rate)` errors in an interval of length t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorModel {
    /// Errors per second.
    pub rate_per_s: f64,
}

impl ErrorModel {
    /// Number of errors assumed in an interval of `t_ns`.
    pub fn errors_in(&self, t_ns: u64) -> u64 {
        if self.rate_per_s <= 0.0 || t_ns == 0 {
            return 0;
        }
        // t_ns < 2^64 and realistic rates keep this far below 2^53: exact enough.
        #[allow(clippy::cast_precision_loss)]
        let n = (t_ns as f64 * self.rate_per_s / 1e9).ceil();
        f64_to_u64(n).unwrap_or(u64::MAX)
    }

    /// `E(t)` in ns.
    pub fn overhead_ns(&self, t_ns: u64, tau_bit_ns: u64, max_c_ns: u64) -> u64 {
        self.errors_in(t_ns)
            .saturating_mul(ERROR_OVERHEAD_BITS * tau_bit_ns + max_c_ns)
    }
}

/// How much work the analysis may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtaLimits {
    /// Terms (`ceil(..) C_k`) of the fixed-point equations evaluated, over the whole
    /// analysis. About 10^9 per second in a release build.
    pub budget: u64,
}

impl Default for RtaLimits {
    fn default() -> Self {
        RtaLimits {
            budget: 4_000_000_000,
        }
    }
}

/// Where a long analysis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Messages finished.
    pub done: usize,
    /// Messages in all.
    pub total: usize,
    /// Budget used so far.
    pub used: u64,
    /// The budget.
    pub budget: u64,
}

/// How often (in terms evaluated) progress is reported: 64 times over the budget, at most
/// every 16 million terms.
fn progress_every(budget: u64) -> u64 {
    (budget / 64).clamp(1 << 10, 1 << 24)
}

/// Why a fixed point has no value.
enum NoEnd {
    /// The busy period or queuing delay grows beyond the cap.
    Cap(&'static str, u64),
    /// The budget ran out.
    Budget(&'static str, u64),
}

struct Work<'a> {
    used: u64,
    budget: u64,
    next_report: u64,
    done: usize,
    total: usize,
    progress: &'a mut dyn FnMut(Progress),
}

impl Work<'_> {
    /// Account `terms` evaluated; false when the budget is spent.
    fn spend(&mut self, terms: u64) -> bool {
        self.used = self.used.saturating_add(terms.max(1));
        if self.used >= self.next_report {
            self.next_report = self.used.saturating_add(progress_every(self.budget));
            (self.progress)(Progress {
                done: self.done,
                total: self.total,
                used: self.used,
                budget: self.budget,
            });
        }
        self.used <= self.budget
    }
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `sum C/T` compared with 1, exactly (u128 fractions), or None when the fraction
/// outgrows u128 (then the caller compares floats).
pub fn utilisation_vs_one(c_t: impl IntoIterator<Item = (u64, u64)>) -> Option<Ordering> {
    let (mut num, mut den) = (0u128, 1u128);
    for (c, t) in c_t {
        let (c, t) = (u128::from(c), u128::from(t.max(1)));
        let g = gcd(den, t);
        let lcm = den.checked_mul(t / g)?;
        num = num
            .checked_mul(lcm / den)?
            .checked_add(c.checked_mul(lcm / t)?)?;
        den = lcm;
        let r = gcd(num, den).max(1);
        (num, den) = (num / r, den / r);
    }
    Some(num.cmp(&den))
}

/// The equations of one message: its higher-priority set and parameters.
struct Level<'a> {
    m: &'a RtaMessage,
    hp: &'a [&'a RtaMessage],
    blocking: u64,
    tau: u64,
    errors: Option<ErrorModel>,
    max_c_hep: u64,
    cap: u64,
}

impl Level<'_> {
    fn err(&self, t: u64) -> u64 {
        self.errors
            .map_or(0, |e| e.overhead_ns(t, self.tau, self.max_c_hep))
    }

    /// Why the busy period cannot end, if utilisation says so (exactly where it can).
    fn never_ends(&self) -> Option<String> {
        let hep = self.hp.iter().copied().chain([self.m]);
        #[allow(clippy::cast_precision_loss)]
        let float: f64 = hep
            .clone()
            .map(|k| k.c_ns as f64 / k.t_ns.max(1) as f64)
            .sum();
        let pct = |u: f64| format!("{:.7}", u * 100.0);
        if let Some(e) = self.errors {
            #[allow(clippy::cast_precision_loss)]
            let per_err = (ERROR_OVERHEAD_BITS * self.tau + self.max_c_hep) as f64;
            let u = float + e.rate_per_s * per_err / 1e9;
            return (u >= 1.0).then(|| {
                format!(
                    "level utilisation {} % (with errors) >= 100 %: the busy period never ends",
                    pct(u)
                )
            });
        }
        let cmp = utilisation_vs_one(hep.clone().map(|k| (k.c_ns, k.t_ns)))
            .unwrap_or_else(|| float.partial_cmp(&1.0).unwrap_or(Ordering::Greater));
        let jitter = hep.clone().any(|k| k.j_ns > 0);
        match cmp {
            Ordering::Greater => Some(format!(
                "level utilisation {} % > 100 %: the busy period never ends",
                pct(float)
            )),
            Ordering::Equal if self.blocking > 0 || jitter => Some(format!(
                "level utilisation exactly 100 % with {}: the busy period never ends",
                if self.blocking > 0 {
                    "blocking by a lower-priority frame"
                } else {
                    "release jitter"
                }
            )),
            _ => None,
        }
    }

    /// Level-m busy period: `t = B + E(t) + sum_{hep} ceil((t + J_k)/T_k) C_k` from C_m.
    fn busy_period(&self, work: &mut Work) -> Result<u64, NoEnd> {
        let terms = u64::try_from(self.hp.len() + 1).unwrap_or(u64::MAX);
        let mut t = self.m.c_ns;
        loop {
            let next = self.blocking
                + self.err(t)
                + self
                    .hp
                    .iter()
                    .copied()
                    .chain([self.m])
                    .map(|k| ceil_div(t + k.j_ns, k.t_ns) * k.c_ns)
                    .sum::<u64>();
            if next == t {
                return Ok(t);
            }
            t = next;
            if t > self.cap {
                return Err(NoEnd::Cap("busy period", t));
            }
            if !work.spend(terms) {
                return Err(NoEnd::Budget("busy period", t));
            }
        }
    }

    /// Queuing delay of instance q, iterated from `from` (a lower bound: w(q-1) + C_m).
    fn queuing(&self, q: u64, from: u64, work: &mut Work) -> Result<u64, NoEnd> {
        let terms = u64::try_from(self.hp.len().max(1)).unwrap_or(u64::MAX);
        let base = self.blocking + q * self.m.c_ns;
        let mut w = from.max(base);
        loop {
            let next = base
                + self.err(w + self.m.c_ns)
                + self
                    .hp
                    .iter()
                    .map(|k| ceil_div(w + k.j_ns + self.tau, k.t_ns) * k.c_ns)
                    .sum::<u64>();
            if next <= w {
                // From a lower bound the iteration rises to the least fixed point; equal
                // means there.
                return Ok(w);
            }
            w = next;
            if w > self.cap {
                return Err(NoEnd::Cap("queuing delay", w));
            }
            if !work.spend(terms) {
                return Err(NoEnd::Budget("queuing delay", w));
            }
        }
    }

    fn unbounded(&self, reason: String) -> RtaResult {
        RtaResult {
            blocking_ns: self.blocking,
            busy_period_ns: None,
            instances: 0,
            worst_instance: 0,
            wcrt_ns: None,
            schedulable: false,
            reason: Some(reason),
        }
    }

    fn no_end(&self, e: NoEnd, budget: u64) -> RtaResult {
        self.unbounded(match e {
            NoEnd::Cap(what, at) => format!(
                "{what} exceeds {} ms ({BUSY_PERIOD_CAP_PERIODS} longest periods; reached {:.3} ms): \
                 treated as never ending",
                self.cap / 1_000_000,
                ns_to_ms(at)
            ),
            NoEnd::Budget(what, at) => format!(
                "not decided: the analysis budget ({budget} terms, --rta-budget) ran out while \
                 the {what} was {:.3} ms: treated as not schedulable",
                ns_to_ms(at)
            ),
        })
    }

    fn analyse(&self, work: &mut Work) -> RtaResult {
        if let Some(reason) = self.never_ends() {
            return self.unbounded(reason);
        }
        let t = match self.busy_period(work) {
            Ok(t) => t,
            Err(e) => return self.no_end(e, work.budget),
        };
        let m = self.m;
        let q_count = ceil_div(t + m.j_ns, m.t_ns).max(1);
        let mut worst: Option<(u64, u64)> = None; // (R, q)
        let mut w = 0;
        for q in 0..q_count {
            w = match self.queuing(q, if q == 0 { 0 } else { w + m.c_ns }, work) {
                Ok(w) => w,
                Err(e) => return self.no_end(e, work.budget),
            };
            // R(q) = J + w - q T + C; w >= q C and q T < t + J, so this is positive.
            let r = (m.j_ns + w + m.c_ns).saturating_sub(q * m.t_ns);
            if worst.is_none_or(|(rw, _)| r > rw) {
                worst = Some((r, q));
            }
        }
        let (r, q) = worst.unwrap_or((m.c_ns, 0));
        let schedulable = r <= m.d_ns;
        RtaResult {
            blocking_ns: self.blocking,
            busy_period_ns: Some(t),
            instances: q_count,
            worst_instance: q,
            wcrt_ns: Some(r),
            schedulable,
            reason: (!schedulable).then(|| {
                format!(
                    "WCRT {:.3} ms exceeds the deadline {:.3} ms",
                    ns_to_ms(r),
                    ns_to_ms(m.d_ns)
                )
            }),
        }
    }
}

/// Worst-case response times of every message, in input order, with the default budget
/// and no progress reports. See [`response_times_with`].
pub fn response_times(
    msgs: &[RtaMessage],
    tau_bit_ns: u64,
    errors: Option<ErrorModel>,
) -> Vec<RtaResult> {
    response_times_with(msgs, tau_bit_ns, errors, RtaLimits::default(), &mut |_| {})
}

/// Worst-case response times of every message (Davis et al. 2007, Section 4, eq. 9-16,
/// with the error term of Section 6), in input order.
///
/// For message m with hp(m) the higher-priority messages, hep(m) = hp(m) + m:
/// - `B_m = max C_k, k in lp(m)` (0 for the lowest priority message);
/// - busy period `t = B_m + E(t) + sum_{k in hep(m)} ceil((t + J_k) / T_k) C_k`, from `t = C_m`;
/// - `Q_m = ceil((t_m + J_m) / T_m)` instances `q = 0 .. Q_m - 1`;
/// - `w(q) = B_m + q C_m + E(w + C_m) + sum_{k in hp(m)} ceil((w + J_k + tau_bit) / T_k) C_k`,
///   iterated from `w(q-1) + C_m` (a lower bound of its least fixed point);
/// - `R(q) = J_m + w(q) - q T_m + C_m`, `R_m = max_q R(q)`; schedulable iff `R_m <= D_m`.
///
/// `progress` is called every 1/64 of the budget (at most every 16 million terms).
pub fn response_times_with(
    msgs: &[RtaMessage],
    tau_bit_ns: u64,
    errors: Option<ErrorModel>,
    limits: RtaLimits,
    progress: &mut dyn FnMut(Progress),
) -> Vec<RtaResult> {
    let max_t = msgs.iter().map(|m| m.t_ns).max().unwrap_or(1);
    let cap = max_t.saturating_mul(BUSY_PERIOD_CAP_PERIODS);
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| msgs[i].key);
    let sorted: Vec<&RtaMessage> = order.iter().map(|&i| &msgs[i]).collect();
    // Longest frame below each position (blocking), and above it (the error model's C).
    let mut below = vec![0u64; sorted.len() + 1];
    for i in (0..sorted.len()).rev() {
        below[i] = below[i + 1].max(sorted[i].c_ns);
    }
    let mut above = vec![0u64; sorted.len() + 1];
    for (i, m) in sorted.iter().enumerate() {
        above[i + 1] = above[i].max(m.c_ns);
    }
    let mut work = Work {
        used: 0,
        budget: limits.budget,
        next_report: progress_every(limits.budget),
        done: 0,
        total: msgs.len(),
        progress,
    };
    let mut out: Vec<Option<RtaResult>> = vec![None; msgs.len()];
    let mut first_of_key = 0;
    for (i, m) in sorted.iter().enumerate() {
        if sorted[first_of_key].key != m.key {
            first_of_key = i;
        }
        // Messages with an equal key are neither higher nor lower than each other.
        let last_of_key = sorted[i..].partition_point(|k| k.key == m.key) + i;
        let level = Level {
            m,
            hp: &sorted[..first_of_key],
            blocking: below[last_of_key],
            tau: tau_bit_ns,
            errors,
            max_c_hep: above[first_of_key].max(m.c_ns),
            cap,
        };
        out[order[i]] = Some(level.analyse(&mut work));
        work.done += 1;
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::{frame_time_ns, tau_bit_ns, FrameSpec};
    use profiles::FrameKind;

    fn msg(name: &str, key: u64, c_ms: f64, t_ms: f64, d_ms: f64) -> RtaMessage {
        let ns = |ms: f64| f64_to_u64((ms * 1e6).round()).unwrap();
        RtaMessage {
            name: name.into(),
            key,
            c_ns: ns(c_ms),
            t_ns: ns(t_ms),
            j_ns: 0,
            d_ns: ns(d_ms),
        }
    }

    /// Davis, Burns, Bril, Lukkien 2007, Section 3 ("the flaw") and Section 4 (revised
    /// analysis): three messages on a 125 kbit/s bus (tau_bit = 8 us), each frame taking
    /// 1 ms (125 bits: 7 data bytes, 11-bit id, worst-case stuffing):
    ///
    /// | msg | priority | T      | D       | C    |
    /// |-----|----------|--------|---------|------|
    /// | A   | 1        | 2.5 ms | 2.5 ms  | 1 ms |
    /// | B   | 2        | 3.5 ms | 3.25 ms | 1 ms |
    /// | C   | 3        | 3.5 ms | 3.25 ms | 1 ms |
    ///
    /// The original analysis gives R_C = 3 ms (schedulable); the revised analysis finds
    /// the busy period of C lasts 7 ms, holds two instances of C, and the second one
    /// responds after 3.5 ms: a deadline miss. R_A = 2 ms, R_B = 3 ms.
    #[test]
    fn davis_2007_three_message_example() {
        let spec = FrameSpec {
            kind: FrameKind::Classic,
            extended: false,
            len: 7,
        };
        assert_eq!(frame_time_ns(&spec, 125_000, None).unwrap(), 1_000_000);
        let set = [
            msg("A", 1, 1.0, 2.5, 2.5),
            msg("B", 2, 1.0, 3.5, 3.25),
            msg("C", 3, 1.0, 3.5, 3.25),
        ];
        let r = response_times(&set, tau_bit_ns(125_000), None);
        assert_eq!(r[0].wcrt_ns, Some(2_000_000));
        assert_eq!(r[0].blocking_ns, 1_000_000);
        assert!(r[0].schedulable);
        assert_eq!(r[1].wcrt_ns, Some(3_000_000));
        assert!(r[1].schedulable);
        assert_eq!(r[2].blocking_ns, 0);
        assert_eq!(r[2].busy_period_ns, Some(7_000_000));
        assert_eq!(r[2].instances, 2);
        assert_eq!(r[2].worst_instance, 1);
        assert_eq!(r[2].wcrt_ns, Some(3_500_000));
        assert!(!r[2].schedulable);
        assert!(r[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("exceeds the deadline"));
    }

    #[test]
    fn jitter_adds_to_the_response_time() {
        let mut set = vec![msg("A", 1, 1.0, 10.0, 10.0), msg("B", 2, 1.0, 10.0, 10.0)];
        let base = response_times(&set, 8_000, None)[1].wcrt_ns.unwrap();
        set[1].j_ns = 500_000;
        let with_j = response_times(&set, 8_000, None)[1].wcrt_ns.unwrap();
        assert_eq!(with_j, base + 500_000);
        // Jitter of a higher-priority message can pull a second instance in.
        set[0].j_ns = 9_500_000;
        let r = response_times(&set, 8_000, None)[1].wcrt_ns.unwrap();
        assert!(r > with_j, "{r} vs {with_j}");
    }

    #[test]
    fn overload_is_unschedulable_not_a_hang() {
        // A alone: blocked 1 ms by B, two instances in its 3 ms busy period, R = 2 ms.
        let set = [msg("A", 1, 1.0, 1.5, 3.0), msg("B", 2, 1.0, 2.0, 2.0)];
        let r = response_times(&set, 8_000, None);
        assert_eq!(r[0].wcrt_ns, Some(2_000_000));
        assert!(r[0].schedulable);
        assert!(!r[1].schedulable);
        assert_eq!(r[1].wcrt_ns, None);
        assert!(r[1].reason.as_deref().unwrap().contains("utilisation"));
    }

    /// Exactly 100 % utilisation at the lowest priority (no blocking, no jitter): the
    /// busy period ends at the hyperperiod and the equations give R = D.
    #[test]
    fn full_utilisation_without_blocking_gives_r_equal_d() {
        // A: C 1, T 2; B: C 1, T 2 (ms): U = 1. B is the lowest: B = 0.
        let set = [msg("A", 1, 1.0, 2.0, 2.0), msg("B", 2, 1.0, 2.0, 2.0)];
        let r = response_times(&set, 8_000, None);
        assert_eq!(r[1].busy_period_ns, Some(2_000_000));
        assert_eq!(r[1].wcrt_ns, Some(2_000_000));
        assert!(r[1].schedulable, "{:?}", r[1].reason);
        // Three messages with periods that do not divide: U = 1/2 + 1/3 + 1/6 = 1 exactly
        // (floats say 0.9999999999999999 or 1.0000000000000002 depending on the order).
        let set = [
            msg("A", 1, 1.0, 2.0, 2.0),
            msg("B", 2, 1.0, 3.0, 3.0),
            msg("C", 3, 1.0, 6.0, 6.0),
        ];
        let r = response_times(&set, 8_000, None);
        assert_eq!(r[2].wcrt_ns, Some(6_000_000));
        assert!(r[2].schedulable);
        // With blocking (A sees B's frame) the level of A is not full, but B's is: adding a
        // lower-priority frame below B makes B's busy period endless.
        let mut with_lp = set.to_vec();
        with_lp.push(msg("D", 4, 1.0, 1e6, 1e6));
        let r = response_times(&with_lp, 8_000, None);
        assert!(!r[2].schedulable);
        assert_eq!(
            r[2].reason.as_deref(),
            Some("level utilisation exactly 100 % with blocking by a lower-priority frame: the busy period never ends")
        );
        assert_eq!(
            utilisation_vs_one([(1, 2), (1, 3), (1, 6)]),
            Some(Ordering::Equal)
        );
        assert_eq!(
            utilisation_vs_one([(1, 2), (1, 3), (1, 7)]),
            Some(Ordering::Less)
        );
        assert_eq!(
            utilisation_vs_one([(1, 2), (1, 3), (1, 5)]),
            Some(Ordering::Greater)
        );
    }

    /// Utilisation 1 - 1e-9 with blocking: the busy period takes a million steps. A small
    /// budget stops it in bounded time and says so, with progress reported meanwhile; the
    /// default budget decides it (the warm-started instances make its million instances
    /// cheap).
    #[test]
    fn near_full_utilisation_is_capped_and_reports_progress() {
        let set = [
            RtaMessage {
                name: "A".into(),
                key: 1,
                c_ns: 999_999_999,
                t_ns: 1_000_000_000,
                j_ns: 0,
                d_ns: 1_000_000_000,
            },
            msg("B", 2, 1.0, 1e6, 1e6),
        ];
        let mut reports = Vec::new();
        let r = response_times_with(&set, 8_000, None, RtaLimits { budget: 1 << 19 }, &mut |p| {
            reports.push(p)
        });
        assert!(!r[0].schedulable);
        let why = r[0].reason.as_deref().unwrap();
        assert!(
            why.starts_with("not decided: the analysis budget (524288 terms, --rta-budget) ran out while the busy period was"),
            "{why}"
        );
        assert!(!reports.is_empty());
        assert!(reports
            .iter()
            .all(|p| p.total == 2 && p.done == 0 && p.budget == 1 << 19));
        assert!(reports.windows(2).all(|w| w[0].used < w[1].used));
        // The default budget decides: R = B + C_A + (the million instances' backlog).
        let t0 = std::time::Instant::now();
        let r = response_times(&set, 8_000, None);
        assert!(t0.elapsed().as_secs() < 60, "{:?}", t0.elapsed());
        assert_eq!(
            r[0].busy_period_ns.map(|t| t / 1_000_000_000),
            Some(1_000_000)
        );
        assert!(
            r[0].reason
                .as_deref()
                .unwrap()
                .contains("exceeds the deadline"),
            "{:?}",
            r[0].reason
        );
    }

    /// Input order is kept, whatever the priorities.
    #[test]
    fn results_come_in_input_order() {
        let set = [
            msg("low", 9, 1.0, 10.0, 10.0),
            msg("high", 1, 1.0, 10.0, 10.0),
        ];
        let r = response_times(&set, 8_000, None);
        assert_eq!(r[1].wcrt_ns, Some(2_000_000)); // high: blocked by low, then itself
        assert_eq!(r[0].wcrt_ns, Some(2_000_000)); // low: high first, then itself
        assert_eq!(r[1].blocking_ns, 1_000_000);
        assert_eq!(r[0].blocking_ns, 0);
    }

    #[test]
    fn errors_lengthen_response_times() {
        let set = [msg("A", 1, 1.0, 10.0, 10.0), msg("B", 2, 1.0, 10.0, 10.0)];
        let none = response_times(&set, 8_000, None);
        let e = ErrorModel { rate_per_s: 100.0 };
        assert_eq!(e.errors_in(1), 1);
        assert_eq!(e.errors_in(10_000_000), 1);
        assert_eq!(e.errors_in(10_000_001), 2);
        let with = response_times(&set, 8_000, Some(e));
        // One error in the window: + 31 bits (248 us) + max C (1 ms).
        assert_eq!(
            with[1].wcrt_ns.unwrap(),
            none[1].wcrt_ns.unwrap() + 248_000 + 1_000_000
        );
    }
}
