//! `can-sim replay`: a candump log played back on an interface with its timing.
//!
//! The log is read twice, line by line, never held in memory (a 500 MB log costs its read
//! buffer, not gigabytes): once to check every line and see whether it holds CAN FD
//! frames (so a bad line or an interface without FD is an error before anything is
//! sent), then to send each frame at `start + its offset` ([`ReplayClock`]: gaps longer
//! than `max_gap` shortened, out-of-order records sent right after their predecessor),
//! sleeping with `clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME)`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use socketcan::CanAnyFrame;

use crate::canlog::{self, LogError, ReplayClock};
use crate::transport::{self, CanSock, TransportError};

/// Errors of a replay, each naming the file or interface.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Opening the socket, or an interface without FD for an FD log.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A write failed (not a full queue: that is retried).
    #[error("Cannot send frame {frame} of {log} on {iface}")]
    Send {
        /// The log.
        log: String,
        /// The interface.
        iface: String,
        /// 1-based frame number.
        frame: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log has no frame.
    #[error("{0} holds no frames")]
    Empty(String),
}

/// What a replay did (`can-sim replay --json` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Frames in the log.
    pub frames: u64,
    /// Frames sent.
    pub sent: u64,
    /// ENOBUFS retries.
    pub enobufs: u64,
    /// Gaps shortened to `max_gap`.
    pub gaps_clamped: u64,
    /// Classic frames sent with a raw DLC above 8 (`len8_dlc`).
    pub len8_dlc: u64,
    /// How late the last frame went out after its planned time, ns.
    pub late_ns: u64,
}

/// Count the frames of `log` and tell whether any is CAN FD, checking every line.
pub fn survey(log: &Path) -> Result<(u64, bool), ReplayError> {
    let mut frames = 0;
    let mut fd = false;
    for r in canlog::open(log)? {
        let r = r?;
        frames += 1;
        fd |= matches!(r.record.frame, CanAnyFrame::Fd(_));
    }
    Ok((frames, fd))
}

/// Play `log` on `iface`, shortening gaps above `max_gap_ns` (None: real gaps), until the
/// end or until `stop` is set.
pub fn replay(
    log: &Path,
    iface: &str,
    max_gap_ns: Option<u64>,
    stop: &AtomicBool,
) -> Result<ReplaySummary, ReplayError> {
    let (frames, fd) = survey(log)?;
    if frames == 0 {
        return Err(ReplayError::Empty(log.display().to_string()));
    }
    if fd {
        transport::check_fd_mtu(iface)?;
    }
    let sock = CanSock::open_tx(iface, fd)?;
    let mut clock = ReplayClock::new(max_gap_ns);
    let start = rt_sys::rt::realtime_ns() + 100_000_000;
    let mut s = ReplaySummary {
        frames,
        sent: 0,
        enobufs: 0,
        gaps_clamped: 0,
        len8_dlc: 0,
        late_ns: 0,
    };
    let mut planned = start;
    for r in canlog::open(log)? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = r?;
        planned = start + clock.offset(r.record.t_us);
        rt_sys::rt::sleep_until_realtime(planned);
        let keep = || !stop.load(Ordering::Relaxed);
        match sock.write_backoff(&r.record.frame, keep) {
            Ok(n) => {
                s.enobufs += n;
                s.sent += 1;
                s.len8_dlc += u64::from(r.len8_dlc.is_some());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
            Err(source) => {
                return Err(ReplayError::Send {
                    log: log.display().to_string(),
                    iface: iface.to_string(),
                    frame: s.sent + 1,
                    source,
                })
            }
        }
    }
    s.gaps_clamped = clock.clamped;
    s.late_ns = rt_sys::rt::realtime_ns().saturating_sub(planned);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_counts_checks_and_finds_fd() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(
            &p,
            "(1.000000) can0 123#00\n\n# note\n(1.000100) can0 123##1AABB\n",
        )
        .unwrap();
        assert_eq!(survey(&p).unwrap(), (2, true));
        std::fs::write(&p, "(1.000000) can0 123#00\n(x) can0 123#00\n").unwrap();
        let e = survey(&p).unwrap_err();
        assert!(
            matches!(e, ReplayError::Log(LogError::Parse { line: 2, .. })),
            "{e}"
        );
        let e = survey(&dir.path().join("none.log")).unwrap_err();
        assert!(e.to_string().starts_with("Cannot read"), "{e}");
    }

    /// An empty log is refused before a socket is opened (no AF_CAN needed here).
    #[test]
    fn an_empty_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.log");
        std::fs::write(&p, "# nothing\n").unwrap();
        let stop = AtomicBool::new(false);
        let e = replay(&p, "vcan0", None, &stop).unwrap_err();
        assert!(matches!(e, ReplayError::Empty(_)), "{e}");
        assert!(e.to_string().ends_with("e.log holds no frames"), "{e}");
    }
}
