//! The far side of a round-trip run: `can-sim run --role echo` sends every frame of the
//! matrix it receives straight back on the message's reply id (its id XOR `--echo-xor`),
//! unchanged otherwise, so the `--role round-trip` side times each frame's round trip on
//! its own clock ([`crate::clock::RoundTrips`]). No second clock, no offset to measure:
//! the two sides may sit on either side of a VM boundary or in two VMs.
//!
//! Reply ids are checked before the run: each must be a valid identifier of the frame's
//! format and none may be a message of the matrix (the echo side would echo its own
//! echoes back through the loopback, the round-trip side would count its own frames).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use socketcan::{CanAnyFrame, ExtendedId, Frame, Id, StandardId};

use super::{message_index, setup_thread, spawn_named, RunError, RunOptions};
use crate::canlog;
use crate::clock::duration_ns;
use crate::schedule::Plan;
use crate::transport::{CanSock, RxBatch};
use profiles::Can;
use rt_sys::rt::realtime_ns;

/// The default `--echo-xor`: bit 10 (a standard id stays standard; none of the bundled
/// matrices has two ids 0x400 apart).
pub const DEFAULT_XOR: u32 = 0x400;

/// Why a matrix cannot be echoed with a mask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    /// Mask 0.
    #[error("--echo-xor 0 would echo every frame on its own id")]
    ZeroMask,
    /// The reply id does not fit the frame's format.
    #[error("The reply id 0x{reply:X} of message {message} (0x{id:X} XOR 0x{xor:X}) is beyond the {bits}-bit identifiers of its frame format")]
    OutOfRange {
        /// The message (name and id).
        message: String,
        /// Its id.
        id: u32,
        /// The mask.
        xor: u32,
        /// The reply id.
        reply: u32,
        /// 11 or 29.
        bits: u32,
    },
    /// The reply id is another message of the matrix.
    #[error("The reply id 0x{reply:X} of message {message} is the id of message {other}: choose another --echo-xor")]
    Collides {
        /// The message.
        message: String,
        /// The reply id.
        reply: u32,
        /// The message that has it.
        other: String,
    },
}

/// The reply id of `id` (None: beyond the format's identifiers).
pub fn reply_id(id: u32, extended: bool, xor: u32) -> Option<u32> {
    let r = id ^ xor;
    let top = if extended { 0x1FFF_FFFF } else { 0x7FF };
    (r <= top).then_some(r)
}

/// (reply id, extended) -> message index, every reply id checked.
pub fn reply_index(plan: &Plan, xor: u32) -> Result<HashMap<(u32, bool), usize>, EchoError> {
    if xor == 0 {
        return Err(EchoError::ZeroMask);
    }
    let matrix = message_index(plan);
    let label = |i: usize| {
        let m = &plan.messages[i];
        format!(
            "{} ({})",
            m.name,
            crate::schedule::id_text(m.id, m.spec.extended)
        )
    };
    let mut out = HashMap::with_capacity(plan.messages.len());
    for (i, m) in plan.messages.iter().enumerate() {
        let ext = m.spec.extended;
        let reply = reply_id(m.id, ext, xor).ok_or_else(|| EchoError::OutOfRange {
            message: label(i),
            id: m.id,
            xor,
            reply: m.id ^ xor,
            bits: if ext { 29 } else { 11 },
        })?;
        if let Some(&j) = matrix.get(&(reply, ext)) {
            return Err(EchoError::Collides {
                message: label(i),
                reply,
                other: label(j),
            });
        }
        out.insert((reply, ext), i);
    }
    Ok(out)
}

/// `frame` with its id replaced by the reply id (data, format and flags kept).
pub fn echo_frame(frame: &CanAnyFrame, xor: u32) -> Option<CanAnyFrame> {
    let (id, ext) = canlog::frame_id(frame);
    let reply = reply_id(id, ext, xor)?;
    let new_id = if ext {
        Id::Extended(ExtendedId::new(reply)?)
    } else {
        Id::Standard(StandardId::new(u16::try_from(reply).ok()?)?)
    };
    let mut f = *frame;
    f.set_id(new_id);
    Some(f)
}

/// What a received frame means to the echo side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A frame of message `usize`: echo it.
    Matrix(usize),
    /// One of the echoes (ours, through the loopback, or another echo side's).
    Echo,
    /// Anything else (error frames included).
    Foreign,
}

/// Classify `frame` against the matrix and the reply ids.
pub fn classify(
    matrix: &HashMap<(u32, bool), usize>,
    replies: &HashMap<(u32, bool), usize>,
    frame: &CanAnyFrame,
) -> Seen {
    if matches!(frame, CanAnyFrame::Error(_)) {
        return Seen::Foreign;
    }
    let key = canlog::frame_id(frame);
    match (matrix.get(&key), replies.contains_key(&key)) {
        (Some(&i), _) => Seen::Matrix(i),
        (None, true) => Seen::Echo,
        (None, false) => Seen::Foreign,
    }
}

/// `can-echo.json`: what the echo side did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EchoReport {
    /// `echo`.
    pub role: String,
    /// Receiving interface.
    pub rx: String,
    /// Sending interface.
    pub tx: String,
    /// The reply id mask.
    pub echo_xor: u32,
    /// Frames echoed per message id (hex).
    pub echoed: BTreeMap<String, u64>,
    /// Echo frames seen (our own through the loopback, on a shared interface).
    pub echoes_seen: u64,
    /// Frames neither of the matrix nor echoes.
    pub foreign_frames: u64,
    /// Echoes the kernel refused (first error kept).
    pub tx_errors: u64,
    /// The first refusal.
    pub tx_error_first: Option<String>,
    /// ENOBUFS retries.
    pub tx_enobufs: u64,
    /// Longest time from a frame's kernel receive timestamp to its echo accepted by the
    /// kernel, ns (a full TX queue shows here: the write waits for room).
    pub turnaround_max_ns: u64,
    /// Start of echoing, ns since the epoch.
    pub start_ns: u64,
    /// End of echoing.
    pub end_ns: u64,
    /// Why it ended: `idle` (nothing for `--drain` after the first frame), `duration`,
    /// `stopped` (a signal), or the receive error.
    pub ended: String,
    /// Set-up problems.
    pub warnings: Vec<String>,
}

impl EchoReport {
    /// Frames echoed in all.
    pub fn total(&self) -> u64 {
        self.echoed.values().sum()
    }
}

/// When the echo loop ends: `duration` after it starts at the latest, or `idle` after the
/// last frame of the matrix once one came.
#[derive(Debug, Clone, Copy)]
pub struct EchoWindow {
    /// Hard end, ns (this side's clock).
    pub end_ns: u64,
    /// Quiet time that ends it, ns.
    pub idle_ns: u64,
}

impl EchoWindow {
    /// Why the loop should end at `now`, given the last frame of the matrix (None: none yet).
    pub fn over(&self, now: u64, last_ns: Option<u64>) -> Option<&'static str> {
        if now >= self.end_ns {
            Some("duration")
        } else if last_ns.is_some_and(|l| now.saturating_sub(l) >= self.idle_ns) {
            Some("idle")
        } else {
            None
        }
    }
}

/// Echo the matrix of `can` from `opts.rx` to `opts.tx` on the reply ids of
/// `opts.echo_xor` until the window closes or `stop`. The echo thread (`can/echo`) runs at
/// the highest ECU priority, off the ECU CPUs.
pub fn run_echo(
    can: &Can,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<EchoReport, RunError> {
    let xor = opts.echo_xor;
    let plan = Plan::from_can(can)?;
    let replies = reply_index(&plan, xor)?;
    let matrix = message_index(&plan);
    let fd = plan.has_fd();
    let rx = CanSock::open_rx(&opts.rx, fd)?;
    let tx = CanSock::open_tx(&opts.tx, fd)?;
    let start = realtime_ns();
    let win = EchoWindow {
        end_ns: start.saturating_add(duration_ns(opts.duration) + duration_ns(opts.drain)),
        idle_ns: duration_ns(opts.drain),
    };
    let allowed = rt_sys::sched::get_affinity(0).unwrap_or_default();
    let (cpus, _) = super::helper_placement(&allowed, &can.ecus);
    let prio = can.ecus.iter().map(|e| e.priority).max().unwrap_or(80);
    let mut warnings: Vec<String> = super::lock_memory().into_iter().collect();
    let h = spawn_named("can/echo".into(), move || {
        let (_, _, _, warnings) = setup_thread(cpus, prio);
        let mut counts = vec![0u64; plan.messages.len()];
        let r = echo_loop(&rx, &tx, (&matrix, &replies), xor, win, &stop, &mut counts);
        (r, counts, warnings, plan)
    })?;
    let (mut r, counts, thread_warnings, plan) = h.join().map_err(|_| RunError::Thread {
        name: "can/echo".into(),
        source: std::io::Error::other("the echo thread panicked"),
    })?;
    warnings.extend(thread_warnings);
    r.echoed = plan
        .messages
        .iter()
        .zip(&counts)
        .map(|(m, n)| (crate::schedule::id_text(m.id, m.spec.extended), *n))
        .collect();
    Ok(EchoReport {
        role: "echo".into(),
        rx: opts.rx.clone(),
        tx: opts.tx.clone(),
        echo_xor: xor,
        start_ns: start,
        warnings,
        ..r
    })
}

type Indexes<'a> = (
    &'a HashMap<(u32, bool), usize>,
    &'a HashMap<(u32, bool), usize>,
);

/// The hot loop: receive, classify, echo at once (no allocation but on a transmit error).
fn echo_loop(
    rx: &CanSock,
    tx: &CanSock,
    (matrix, replies): Indexes<'_>,
    xor: u32,
    win: EchoWindow,
    stop: &AtomicBool,
    counts: &mut [u64],
) -> EchoReport {
    let mut r = EchoReport::default();
    let mut last = None;
    // Checked before each frame is taken, as with one read per frame.
    let ended = |last| {
        if stop.load(Ordering::Relaxed) {
            return Some("stopped".to_string());
        }
        win.over(realtime_ns(), last).map(String::from)
    };
    let mut batch = Box::<RxBatch>::default();
    'run: loop {
        if let Some(why) = ended(last) {
            r.ended = why;
            break;
        }
        if let Err(e) = rx.recv_batch(&mut batch) {
            r.ended = format!("receive failed: {e}");
            break;
        }
        for (k, got) in batch.frames().enumerate() {
            if k > 0 {
                if let Some(why) = ended(last) {
                    r.ended = why;
                    break 'run;
                }
            }
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    r.ended = format!("receive failed: {e}");
                    break 'run;
                }
            };
            match classify(matrix, replies, &got.frame) {
                Seen::Matrix(i) => {
                    last = Some(got.ts_ns);
                    let Some(f) = echo_frame(&got.frame, xor) else {
                        continue;
                    };
                    match tx.write_backoff(&f, || !stop.load(Ordering::Relaxed)) {
                        Ok(n) => {
                            r.tx_enobufs += n;
                            counts[i] += 1;
                            let took = realtime_ns().saturating_sub(got.ts_ns);
                            r.turnaround_max_ns = r.turnaround_max_ns.max(took);
                        }
                        Err(e) => {
                            r.tx_errors += 1;
                            r.tx_error_first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                Seen::Echo => r.echoes_seen += 1,
                Seen::Foreign => r.foreign_frames += 1,
            }
        }
    }
    r.end_ns = realtime_ns();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketcan::{CanDataFrame, CanFdFrame, EmbeddedFrame};

    fn hil_plan() -> Plan {
        let p = profiles::load("hil").unwrap().profile;
        Plan::from_can(p.can.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn reply_ids_are_checked_against_the_matrix_and_the_format() {
        let plan = hil_plan();
        let r = reply_index(&plan, DEFAULT_XOR).unwrap();
        assert_eq!(r.len(), plan.messages.len());
        let i = plan.find(0x0C0, false).unwrap();
        assert_eq!(r.get(&(0x4C0, false)), Some(&i));
        assert_eq!(
            r.get(&(0x18FF_5421, true)),
            plan.find(0x18FF5021, true).as_ref()
        );
        assert_eq!(reply_index(&plan, 0).unwrap_err(), EchoError::ZeroMask);
        // A mask that maps EngineSpeed (0x0C0) onto WheelSpeeds (0x0F0) and back.
        let e = reply_index(&plan, 0x0C0 ^ 0x0F0).unwrap_err();
        assert!(
            matches!(&e, EchoError::Collides { reply, .. } if *reply == 0x0F0 || *reply == 0x0C0),
            "{e}"
        );
        assert!(e.to_string().contains("choose another --echo-xor"), "{e}");
        // A standard id pushed past 11 bits.
        let e = reply_index(&plan, 0x800).unwrap_err();
        assert!(
            matches!(e, EchoError::OutOfRange { bits: 11, reply, .. } if reply > 0x7FF),
            "{e}"
        );
        assert_eq!(reply_id(0x1FFF_FFFF, true, 0x2000_0000), None);
        assert_eq!(reply_id(0x7FF, false, 0x400), Some(0x3FF));
    }

    #[test]
    fn echoes_keep_data_and_format_and_are_told_apart() {
        let plan = hil_plan();
        let matrix = message_index(&plan);
        let replies = reply_index(&plan, DEFAULT_XOR).unwrap();
        let f = CanAnyFrame::Normal(
            CanDataFrame::new(StandardId::new(0x0C0).unwrap(), &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
        );
        let e = echo_frame(&f, DEFAULT_XOR).unwrap();
        assert_eq!(canlog::frame_id(&e), (0x4C0, false));
        assert_eq!(canlog::frame_data(&e), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let i = plan.find(0x0C0, false).unwrap();
        assert_eq!(classify(&matrix, &replies, &f), Seen::Matrix(i));
        assert_eq!(classify(&matrix, &replies, &e), Seen::Echo);
        let other =
            CanAnyFrame::Normal(CanDataFrame::new(StandardId::new(0x123).unwrap(), &[0]).unwrap());
        assert_eq!(classify(&matrix, &replies, &other), Seen::Foreign);
        // Extended and FD with BRS: the format and flags come back.
        let x = CanAnyFrame::Fd(
            CanFdFrame::with_flags(
                ExtendedId::new(0x18FF_5021).unwrap(),
                &[9; 12],
                socketcan::id::FdFlags::BRS,
            )
            .unwrap(),
        );
        match echo_frame(&x, DEFAULT_XOR).unwrap() {
            CanAnyFrame::Fd(fd) => {
                assert!(fd.is_brs());
                assert_eq!(fd.id(), Id::Extended(ExtendedId::new(0x18FF_5421).unwrap()));
                assert_eq!(fd.data(), &[9; 12]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_echo_window_ends_on_idle_or_duration() {
        let w = EchoWindow {
            end_ns: 100,
            idle_ns: 10,
        };
        assert_eq!(w.over(50, None), None, "nothing came yet: wait");
        assert_eq!(w.over(50, Some(45)), None);
        assert_eq!(w.over(55, Some(45)), Some("idle"));
        assert_eq!(w.over(100, None), Some("duration"));
    }
}
