//! The offset between two machines' `CLOCK_REALTIME`s (a guest's and its host's),
//! measured by an exchange of small files through a directory both see (the lab's
//! virtio-9p share, an NFS mount), in the way NTP measures it: the host writes a request
//! at `t1`, the guest sees it at `t2` and answers at `t3`, the host sees the answer at
//! `t4`. Then `offset = ((t2 - t1) + (t3 - t4)) / 2` (guest minus host) and it is off by
//! at most half the round trip minus the guest's own time, `((t4 - t1) - (t3 - t2)) / 2`,
//! whatever the delays of each way. Of several rounds the one with the shortest round
//! trip gives the estimate ([`estimate`]).
//!
//! Files: the host writes `req` (`SEQ T1`), the guest `resp` (`SEQ T2 T3`), each written
//! to a temporary name and renamed, so neither side reads half a file; `stop` ends the
//! guest's side ([`echo`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::RecordError;
use crate::TimeBase;

/// The request file.
pub const REQ: &str = "req";
/// The response file.
pub const RESP: &str = "resp";
/// The file that ends the guest's side.
pub const STOP: &str = "stop";

/// The method name recorded in [`TimeBase::method`].
pub const METHOD: &str = "file_exchange";

/// One round: host send, guest receive, guest send, host receive (ns of each side's
/// `CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Host, request written.
    pub t1: u64,
    /// Guest, request seen.
    pub t2: u64,
    /// Guest, answer written.
    pub t3: u64,
    /// Host, answer seen.
    pub t4: u64,
}

impl Round {
    /// Guest minus host, ns.
    pub fn offset_ns(&self) -> i64 {
        let d = (i128::from(self.t2) - i128::from(self.t1))
            + (i128::from(self.t3) - i128::from(self.t4));
        i64::try_from(d / 2).unwrap_or(i64::MAX)
    }

    /// How far [`Round::offset_ns`] may be off, ns (half the round trip less the guest's
    /// time; rounded up).
    pub fn uncertainty_ns(&self) -> u64 {
        let rtt = self.t4.saturating_sub(self.t1);
        let guest = self.t3.saturating_sub(self.t2);
        rtt.saturating_sub(guest).div_ceil(2)
    }
}

/// The estimate of the rounds: the one with the smallest uncertainty.
pub fn estimate(rounds: &[Round]) -> Option<TimeBase> {
    let best = rounds.iter().min_by_key(|r| r.uncertainty_ns())?;
    Some(TimeBase {
        method: METHOD.into(),
        offset_ns: best.offset_ns(),
        uncertainty_ns: best.uncertainty_ns(),
        rtt: None,
    })
}

/// Two estimates (at the start and at the end of a recording) as one: the mean offset,
/// with an uncertainty that covers both intervals (so a drift between them is inside it).
pub fn combine(a: &TimeBase, b: &TimeBase) -> TimeBase {
    let lo = (i128::from(a.offset_ns) - i128::from(a.uncertainty_ns))
        .min(i128::from(b.offset_ns) - i128::from(b.uncertainty_ns));
    let hi = (i128::from(a.offset_ns) + i128::from(a.uncertainty_ns))
        .max(i128::from(b.offset_ns) + i128::from(b.uncertainty_ns));
    TimeBase {
        method: a.method.clone(),
        offset_ns: i64::try_from((lo + hi) / 2).unwrap_or(i64::MAX),
        uncertainty_ns: u64::try_from((hi - lo + 1) / 2).unwrap_or(u64::MAX),
        rtt: None,
    }
}

fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), RecordError> {
    crate::write_atomic(&dir.join(name), text.as_bytes())
}

fn read_words(dir: &Path, name: &str) -> Option<Vec<u64>> {
    let t = std::fs::read_to_string(dir.join(name)).ok()?;
    t.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// The host's side: `rounds` rounds through `dir` with `clock` (`CLOCK_REALTIME` ns).
/// The first answer may take `first_timeout` (the guest's side starting up), each later
/// one a second. Returns the rounds answered (an error when none was).
pub fn exchange(
    dir: &Path,
    rounds: u32,
    first_timeout: Duration,
    clock: &dyn Fn() -> u64,
) -> Result<Vec<Round>, RecordError> {
    let mut out = Vec::new();
    let base = clock();
    for k in 0..u64::from(rounds) {
        let seq = base.wrapping_add(k);
        let t1 = clock();
        write_atomic(dir, REQ, &format!("{seq} {t1}\n"))?;
        let limit = if k == 0 {
            first_timeout
        } else {
            Duration::from_secs(1)
        };
        let start = Instant::now();
        loop {
            if let Some(w) = read_words(dir, RESP).filter(|w| w.len() == 3 && w[0] == seq) {
                let t4 = clock();
                out.push(Round {
                    t1,
                    t2: w[1],
                    t3: w[2],
                    t4,
                });
                break;
            }
            if start.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        if out.is_empty() {
            return Err(RecordError::inconsistent(
                dir.join(RESP),
                format!(
                    "no answer to the clock exchange in {} s: is `rt-guest clock-echo {}` running on the other side?",
                    limit.as_secs(),
                    dir.display()
                ),
            ));
        }
    }
    Ok(out)
}

/// The guest's side: answer every new request in `dir` with `clock` until `stop` is
/// set, the host writes `stop`, or `timeout` passes. Returns the requests answered.
pub fn echo(
    dir: &Path,
    timeout: Duration,
    stop: &AtomicBool,
    clock: &dyn Fn() -> u64,
) -> Result<u64, RecordError> {
    let start = Instant::now();
    let mut last = None;
    let mut answered = 0;
    while start.elapsed() < timeout && !stop.load(Ordering::Relaxed) {
        if dir.join(STOP).exists() {
            break;
        }
        if let Some(w) = read_words(dir, REQ).filter(|w| w.len() == 2) {
            if last != Some(w[0]) {
                let t2 = clock();
                last = Some(w[0]);
                let t3 = clock();
                write_atomic(dir, RESP, &format!("{} {t2} {t3}\n", w[0]))?;
                answered += 1;
                continue;
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_gives_offset_and_bound() {
        // Guest 5 ms ahead; 300 us out, 100 us in the guest, 500 us back.
        let r = Round {
            t1: 1_000_000,
            t2: 1_000_000 + 5_000_000 + 300_000,
            t3: 1_000_000 + 5_000_000 + 400_000,
            t4: 1_000_000 + 900_000,
        };
        assert_eq!(r.uncertainty_ns(), 400_000);
        // The estimate is off by (300 - 500) / 2 = -100 us: within the bound.
        assert_eq!(r.offset_ns(), 5_000_000 - 100_000);
        let faster = Round {
            t4: r.t4 - 200_000,
            ..r
        };
        let e = estimate(&[r, faster]).unwrap();
        assert_eq!((e.offset_ns, e.uncertainty_ns), (5_000_000, 300_000));
        assert_eq!(e.method, METHOD);
        assert_eq!(estimate(&[]), None);
    }

    #[test]
    fn two_estimates_combine_into_one_that_covers_both() {
        let a = TimeBase {
            method: METHOD.into(),
            offset_ns: 1000,
            uncertainty_ns: 100,
            rtt: None,
        };
        let b = TimeBase {
            method: METHOD.into(),
            offset_ns: 1500,
            uncertainty_ns: 50,
            rtt: None,
        };
        let c = combine(&a, &b);
        assert_eq!((c.offset_ns, c.uncertainty_ns), (1225, 325));
    }

    #[test]
    fn host_and_guest_sides_through_a_directory_recover_a_known_offset() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let stop = AtomicBool::new(false);
        let now = || rt_sys::rt::realtime_ns();
        // The "guest" clock runs 7 s behind the host's.
        let guest = move || rt_sys::rt::realtime_ns() - 7_000_000_000;
        let rounds = std::thread::scope(|s| {
            let g = s.spawn(|| echo(&dir, Duration::from_secs(20), &stop, &guest));
            let r = exchange(&dir, 8, Duration::from_secs(5), &now).unwrap();
            stop.store(true, Ordering::SeqCst);
            assert_eq!(g.join().unwrap().unwrap(), 8);
            r
        });
        assert_eq!(rounds.len(), 8);
        let e = estimate(&rounds).unwrap();
        let err = (e.offset_ns + 7_000_000_000).unsigned_abs();
        assert!(err <= e.uncertainty_ns, "{e:?}");
        assert!(e.uncertainty_ns < 100_000_000, "{e:?}");
    }

    #[test]
    fn no_guest_side_is_an_error_that_says_what_to_run() {
        let d = tempfile::tempdir().unwrap();
        let e = exchange(d.path(), 2, Duration::from_millis(50), &|| 1).unwrap_err();
        assert!(e.to_string().contains("rt-guest clock-echo"), "{e}");
        std::fs::write(d.path().join(STOP), "").unwrap();
        let n = echo(
            d.path(),
            Duration::from_secs(5),
            &AtomicBool::new(false),
            &|| 1,
        )
        .unwrap();
        assert_eq!(n, 0);
    }
}
