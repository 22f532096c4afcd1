//! The candump log format (`candump -l` / `-L`): `(1700000000.123456) can0 123#DEADBEEF`,
//! CAN FD as `123##<flags><data>`, read by can-utils' `canplayer`/`log2asc` and
//! python-can's `CanutilsLogReader`.
//!
//! Writing and parsing go through socketcan's `dump` module (its `CanDumpRecord` renders
//! exactly what its `Reader` parses); this module adds the conversion from kernel
//! timestamps and the replay timing. The grammar is can-utils' `lib.h`
//! (<https://github.com/linux-can/can-utils/blob/master/lib.h>).

use std::fmt::Write as _;
use std::io;

use socketcan::dump::{CanDumpRecord, Reader};

use socketcan::{CanAnyFrame, EmbeddedFrame, Frame};

/// Errors reading a candump log; each names the line.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A line that is not candump format.
    #[error("{source_name}:{line}: not a candump log line: {reason}")]
    Parse {
        /// File name (or `<memory>`).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// I/O.
    #[error("Cannot read {source_name}")]
    Io {
        /// File name.
        source_name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// One frame with its receive time in ns (`CLOCK_REALTIME`).
#[derive(Debug, Clone)]
pub struct Logged {
    /// Receive time, ns since the epoch.
    pub ts_ns: u64,
    /// The frame.
    pub frame: CanAnyFrame,
}

/// Render frames as candump log text, one line each, for interface `iface`.
pub fn render(entries: &[Logged], iface: &str) -> String {
    let mut out = String::with_capacity(entries.len() * 48);
    for e in entries {
        let rec = CanDumpRecord {
            t_us: e.ts_ns / 1000,
            device: iface.to_string(),
            frame: e.frame,
            direction: None,
        };
        let _ = writeln!(out, "{rec}");
    }
    out
}

/// One log line: the frame, and the raw DLC when the log gave one above 8 for a classic
/// frame (can-utils' `len8_dlc`: `123#1122334455667788_F`, `123#R9`, `123#R8_C`).
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The parsed record (time in us, device, frame, direction).
    pub record: CanDumpRecord,
    /// Raw DLC 9..=15 of a classic frame with 8 bytes (`len8_dlc`), if written.
    pub len8_dlc: Option<u8>,
}

/// The classic-frame forms with a raw DLC above 8, which socketcan's reader refuses:
/// `<id>#<8 data bytes>_<9..F>`, `<id>#R<9..F>`, `<id>#R8_<9..F>`. Returns the frame and
/// its raw DLC, None when the field is not one of these forms.
fn len8_frame(field: &str) -> Option<Result<(CanAnyFrame, u8), &'static str>> {
    let (id_s, rest) = field.split_once('#')?;
    if rest.starts_with('#') {
        return None;
    }
    let nibble = |s: &str| {
        u8::from_str_radix(s, 16)
            .ok()
            .filter(|d| (9..=15).contains(d))
    };
    let (data_s, dlc) = match rest.rsplit_once('_') {
        Some((d, x)) => (d, Some(x)),
        None => (rest, None),
    };
    let remote = data_s.starts_with('R');
    let raw_dlc = match (remote, dlc) {
        (_, Some(x)) => nibble(x),
        // `R0`..`R8` are socketcan's to read.
        (true, None) => Some(nibble(&data_s[1..])?),
        (false, None) => return None,
    };
    let Some(raw_dlc) = raw_dlc else {
        return Some(Err("the DLC after '_' (or 'R') must be a hex digit 9..F"));
    };
    let extended = match id_s.len() {
        3 => false,
        8 => true,
        _ => {
            return Some(Err(
                "the id must have 3 (standard) or 8 (extended) hex digits",
            ))
        }
    };
    let Ok(raw_id) = u32::from_str_radix(id_s, 16) else {
        return Some(Err("the id is not hex"));
    };
    let mut cf = socketcan::frame::can_frame_default();
    cf.can_id = raw_id | if extended { libc::CAN_EFF_FLAG } else { 0 };
    cf.can_dlc = 8;
    cf.len8_dlc = raw_dlc;
    let frame = if remote {
        if !(data_s == "R8" || dlc.is_none()) {
            return Some(Err("a remote frame with a raw DLC is R<9..F> or R8_<9..F>"));
        }
        cf.can_id |= libc::CAN_RTR_FLAG;
        socketcan::CanRemoteFrame::try_from(cf)
            .map(CanAnyFrame::Remote)
            .ok()
    } else {
        let Ok(bytes) = hex::decode(data_s) else {
            return Some(Err("the data is not hex"));
        };
        if bytes.len() != 8 {
            return Some(Err("a raw DLC above 8 needs exactly 8 data bytes"));
        }
        cf.data.copy_from_slice(&bytes);
        socketcan::CanDataFrame::try_from(cf)
            .map(CanAnyFrame::Normal)
            .ok()
    };
    let valid_id = if extended {
        raw_id <= 0x1FFF_FFFF
    } else {
        raw_id <= 0x7FF
    };
    match frame {
        Some(f) if valid_id => Some(Ok((f, raw_dlc))),
        _ => Some(Err("the id is out of range for its width")),
    }
}

/// Parse one non-blank, non-comment line.
fn parse_line(t: &str) -> Result<LogRecord, String> {
    let mut fields = t.split(' ');
    let (ts, dev, field) = (fields.next(), fields.next(), fields.next());
    if let (Some(ts), Some(dev), Some(field)) = (ts, dev, field) {
        if let Some(r) = len8_frame(field) {
            let (frame, raw) = r.map_err(|e| format!("{field}: {e}"))?;
            // Time and direction as socketcan reads them: parse a line with a plain frame.
            let plain = format!(
                "{ts} {dev} 000#{}",
                fields.next().map(|d| format!(" {d}")).unwrap_or_default()
            );
            let mut rdr = Reader::from_reader(plain.trim_end().as_bytes());
            let mut rec = rdr
                .next_record()
                .map_err(|e| e.to_string())?
                .ok_or("empty line")?;
            rec.frame = frame;
            return Ok(LogRecord {
                record: rec,
                len8_dlc: Some(raw),
            });
        }
    }
    let mut rdr = Reader::from_reader(t.as_bytes());
    match rdr.next_record() {
        Ok(Some(record)) => Ok(LogRecord {
            record,
            len8_dlc: None,
        }),
        Ok(None) => Err("empty line".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A candump log read line by line (constant memory, whatever the file's size). Blank
/// lines and `#` comments are skipped; a bad line is an error naming it.
pub struct LogReader<R> {
    rdr: R,
    source_name: String,
    line: usize,
    buf: String,
}

impl<R: std::io::BufRead> LogReader<R> {
    /// Read from `rdr`, naming it `source_name` in errors.
    pub fn new(rdr: R, source_name: &str) -> Self {
        LogReader {
            rdr,
            source_name: source_name.to_string(),
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: std::io::BufRead> Iterator for LogReader<R> {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.rdr.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(LogError::Io {
                        source_name: self.source_name.clone(),
                        source,
                    }))
                }
            }
            let t = self.buf.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            return Some(parse_line(t).map_err(|reason| LogError::Parse {
                source_name: self.source_name.clone(),
                line: self.line,
                reason,
            }));
        }
    }
}

/// Parse candump log text.
pub fn parse(text: &str, source_name: &str) -> Result<Vec<LogRecord>, LogError> {
    LogReader::new(text.as_bytes(), source_name).collect()
}

/// Open a log file for reading line by line.
pub fn open(
    path: &std::path::Path,
) -> Result<LogReader<std::io::BufReader<std::fs::File>>, LogError> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| LogError::Io {
        source_name: name.clone(),
        source,
    })?;
    Ok(LogReader::new(std::io::BufReader::new(f), &name))
}

/// Replay timing: each record's offset in ns from the first one. Logs are sorted by time;
/// a record earlier than its predecessor goes right after it, and a gap longer than
/// `max_gap_ns` (a log spanning a pause, or a clock jump: years) is shortened to it.
#[derive(Debug, Clone, Copy)]
pub struct ReplayClock {
    first_us: Option<u64>,
    last_ns: u64,
    last_raw_ns: u64,
    shift_ns: u64,
    max_gap_ns: Option<u64>,
    /// Gaps shortened so far.
    pub clamped: u64,
}

impl ReplayClock {
    /// A clock that shortens gaps above `max_gap_ns` (None: keeps every gap).
    pub fn new(max_gap_ns: Option<u64>) -> Self {
        ReplayClock {
            first_us: None,
            last_ns: 0,
            last_raw_ns: 0,
            shift_ns: 0,
            max_gap_ns,
            clamped: 0,
        }
    }

    /// The offset of a record logged at `t_us`.
    pub fn offset(&mut self, t_us: u64) -> u64 {
        let first = *self.first_us.get_or_insert(t_us);
        let raw = t_us.saturating_sub(first).saturating_mul(1000);
        let gap = raw.saturating_sub(self.last_raw_ns);
        if let Some(max) = self.max_gap_ns {
            if gap > max {
                self.shift_ns += gap - max;
                self.clamped += 1;
            }
        }
        self.last_raw_ns = self.last_raw_ns.max(raw);
        let off = raw.saturating_sub(self.shift_ns).max(self.last_ns);
        self.last_ns = off;
        off
    }
}

/// Payload of a frame (empty for remote and error frames' data is their error bytes).
pub fn frame_data(f: &CanAnyFrame) -> &[u8] {
    match f {
        CanAnyFrame::Normal(d) => d.data(),
        CanAnyFrame::Remote(_) => &[],
        CanAnyFrame::Error(e) => e.data(),
        CanAnyFrame::Fd(fd) => fd.data(),
    }
}

/// (raw id, extended) of a frame.
pub fn frame_id(f: &CanAnyFrame) -> (u32, bool) {
    match f {
        CanAnyFrame::Normal(d) => (d.raw_id(), d.is_extended()),
        CanAnyFrame::Remote(r) => (r.raw_id(), r.is_extended()),
        CanAnyFrame::Error(e) => (e.raw_id(), false),
        CanAnyFrame::Fd(fd) => (fd.raw_id(), fd.is_extended()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketcan::id::FdFlags;
    use socketcan::{CanDataFrame, CanFdFrame, ExtendedId, StandardId};

    fn sample() -> Vec<Logged> {
        let std_id = StandardId::new(0x123).unwrap();
        let ext_id = ExtendedId::new(0x18FF5021).unwrap();
        vec![
            Logged {
                ts_ns: 1_700_000_000_123_456_789,
                frame: CanAnyFrame::Normal(
                    CanDataFrame::new(std_id, &[0xDE, 0xAD, 0xBE, 0xEF]).unwrap(),
                ),
            },
            Logged {
                ts_ns: 1_700_000_000_124_000_000,
                frame: CanAnyFrame::Normal(
                    CanDataFrame::new(ext_id, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
                ),
            },
            Logged {
                ts_ns: 1_700_000_000_125_500_000,
                frame: CanAnyFrame::Fd(
                    CanFdFrame::with_flags(std_id, &[0x11; 12], FdFlags::BRS).unwrap(),
                ),
            },
            Logged {
                ts_ns: 1_700_000_000_126_000_000,
                frame: CanAnyFrame::Normal(CanDataFrame::new(std_id, &[]).unwrap()),
            },
        ]
    }

    #[test]
    fn writes_candump_lines() {
        let text = render(&sample(), "can1");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "(1700000000.123456) can1 123#DEADBEEF");
        assert_eq!(
            lines[1],
            "(1700000000.124000) can1 18FF5021#0102030405060708"
        );
        assert!(
            lines[2].starts_with("(1700000000.125500) can1 123##")
                && lines[2].ends_with(&"11".repeat(12)),
            "{}",
            lines[2]
        );
        // The FD flag nibble carries BRS (0x1), possibly with FDF (0x4).
        let nib = u8::from_str_radix(&lines[2][30..31], 16).unwrap();
        assert_eq!(nib & 0x1, 0x1, "{}", lines[2]);
        assert_eq!(lines[3], "(1700000000.126000) can1 123#");
    }

    #[test]
    fn round_trip_through_our_reader() {
        let orig = sample();
        let text = render(&orig, "vcan0");
        let back: Vec<CanDumpRecord> = parse(&text, "<memory>")
            .unwrap()
            .into_iter()
            .map(|r| r.record)
            .collect();
        assert_eq!(back.len(), orig.len());
        for (a, b) in orig.iter().zip(&back) {
            assert_eq!(a.ts_ns / 1000, b.t_us);
            assert_eq!(b.device, "vcan0");
            assert_eq!(frame_id(&a.frame), frame_id(&b.frame));
            assert_eq!(frame_data(&a.frame), frame_data(&b.frame));
            assert_eq!(
                matches!(a.frame, CanAnyFrame::Fd(_)),
                matches!(b.frame, CanAnyFrame::Fd(_))
            );
        }
        if let CanAnyFrame::Fd(fd) = &back[2].frame {
            assert!(fd.is_brs());
        }
        let mut clock = ReplayClock::new(None);
        let offsets: Vec<u64> = back.iter().map(|r| clock.offset(r.t_us)).collect();
        assert_eq!(offsets, vec![0, 544_000, 2_044_000, 2_544_000]);
    }

    #[test]
    fn replay_clock_shortens_long_gaps_and_keeps_order() {
        let mut c = ReplayClock::new(Some(1_000_000_000));
        // 0, +0.5 s, +3 years (shortened to 1 s), +0.25 s, one 1 ms out of order.
        let year_us = 365 * 24 * 3600 * 1_000_000u64;
        let t = [
            0,
            500_000,
            500_000 + 3 * year_us,
            750_000 + 3 * year_us,
            749_000 + 3 * year_us,
        ];
        let offs: Vec<u64> = t
            .iter()
            .map(|&u| c.offset(u + 1_700_000_000_000_000))
            .collect();
        assert_eq!(
            offs,
            vec![0, 500_000_000, 1_500_000_000, 1_750_000_000, 1_750_000_000]
        );
        assert_eq!(c.clamped, 1);
        let mut keep = ReplayClock::new(None);
        assert_eq!(keep.offset(0), 0);
        assert_eq!(keep.offset(3 * year_us), 3 * year_us * 1000);
        assert_eq!(keep.clamped, 0);
    }

    /// can-utils' raw DLC forms for classic frames (`len8_dlc`, lib.h): a data frame with
    /// 8 bytes and `_9`..`_F`, a remote frame `R9`..`RF` or `R8_9`..`R8_F`.
    #[test]
    fn raw_dlc_suffixes_and_remote_dlcs() {
        let text = "(1.000000) can0 123#1122334455667788_F\n\
                    (1.000100) can0 12345678#0102030405060708_9 R\n\
                    (1.000200) can0 321#R9\n\
                    (1.000300) can0 321#R8_C\n\
                    (1.000400) can0 321#R5\n";
        let r = parse(text, "x.log").unwrap();
        assert_eq!(
            r.iter().map(|r| r.len8_dlc).collect::<Vec<_>>(),
            vec![Some(15), Some(9), Some(9), Some(12), None]
        );
        assert_eq!(frame_id(&r[0].record.frame), (0x123, false));
        assert_eq!(
            frame_data(&r[0].record.frame),
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(frame_id(&r[1].record.frame), (0x12345678, true));
        assert_eq!(r[1].record.t_us, 1_000_100);
        assert!(r[1].record.direction.is_some());
        assert!(matches!(r[2].record.frame, CanAnyFrame::Remote(_)));
        assert!(matches!(r[4].record.frame, CanAnyFrame::Remote(_)));
        for (bad, why) in [
            ("(1.000000) can0 123#1122_F", "needs exactly 8 data bytes"),
            (
                "(1.000000) can0 123#1122334455667788_7",
                "must be a hex digit 9..F",
            ),
            ("(1.000000) can0 123#R7_9", "R<9..F> or R8_<9..F>"),
        ] {
            let e = parse(bad, "x.log").unwrap_err().to_string();
            assert!(
                e.starts_with("x.log:1: not a candump log line") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_reader_streams() {
        // A reader over a generator of lines never holds more than one.
        let lines =
            (0..100_000u64).map(|i| format!("({}.000000) can0 123#00\n", 1_700_000_000 + i));
        let text: String = lines.collect();
        let n = LogReader::new(std::io::BufReader::with_capacity(64, text.as_bytes()), "m")
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(n, 100_000);
    }

    #[test]
    fn bad_line_is_named() {
        let e = parse("(1.000000) can0 123#00\n(2.000000) can0 XYZ#00\n", "x.log").unwrap_err();
        assert!(e.to_string().starts_with("x.log:2:"), "{e}");
    }

    /// python-can reads our log (its `CanutilsLogReader`); needs python3 with python-can
    /// (`pip install python-can`).
    #[test]
    #[ignore = "needs python3 with python-can (pip install python-can)"]
    fn python_can_reads_our_log() {
        if !testkit::require(
            testkit::python_module("can"),
            "python3 with python-can (pip install python-can)",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("can.log");
        std::fs::write(&path, render(&sample(), "can1")).unwrap();
        let script = "import sys, can\n\
            for m in can.CanutilsLogReader(sys.argv[1]):\n\
            \x20   print('%.6f %s %X %d %d %d %s' % (m.timestamp, m.channel, m.arbitration_id, \
            m.is_extended_id, m.is_fd, m.bitrate_switch, m.data.hex()))\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script, path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "1700000000.123456 can1 123 0 0 0 deadbeef");
        assert_eq!(
            lines[1],
            "1700000000.124000 can1 18FF5021 1 0 0 0102030405060708"
        );
        assert_eq!(
            lines[2],
            format!("1700000000.125500 can1 123 0 1 1 {}", "11".repeat(12))
        );
        assert_eq!(lines[3], "1700000000.126000 can1 123 0 0 0 ");
    }
}
