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

/// Parse candump log text. Blank lines and `#` comments are skipped.
pub fn parse(text: &str, source_name: &str) -> Result<Vec<CanDumpRecord>, LogError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut rdr = Reader::from_reader(t.as_bytes());
        match rdr.next_record() {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => {
                return Err(LogError::Parse {
                    source_name: source_name.to_string(),
                    line: i + 1,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Read and parse a log file.
pub fn read(path: &std::path::Path) -> Result<Vec<CanDumpRecord>, LogError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LogError::Io {
        source_name: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

/// Replay timing: each record's offset in ns from the first one (logs are sorted by
/// time; a record earlier than its predecessor is sent right after it).
pub fn replay_offsets(records: &[CanDumpRecord]) -> Vec<u64> {
    let first = records.first().map_or(0, |r| r.t_us);
    let mut last = 0;
    records
        .iter()
        .map(|r| {
            let off = r.t_us.saturating_sub(first).saturating_mul(1000).max(last);
            last = off;
            off
        })
        .collect()
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
        let back = parse(&text, "<memory>").unwrap();
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
        assert_eq!(
            replay_offsets(&back),
            vec![0, 544_000, 2_044_000, 2_544_000]
        );
    }

    #[test]
    fn bad_line_is_named() {
        let e = parse("(1.000000) can0 123#00\n(2.000000) can0 XYZ#00\n", "x.log").unwrap_err();
        assert!(e.to_string().starts_with("x.log:2:"), "{e}");
    }

    /// python-can reads our log (its `CanutilsLogReader`); skipped with a reason when
    /// python3 or python-can is missing (`pip install python-can`).
    #[test]
    fn python_can_reads_our_log() {
        let probe = std::process::Command::new("python3")
            .args(["-c", "import can"])
            .output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(_) => {
                eprintln!("skipped: python-can is not installed (pip install python-can)");
                return;
            }
            Err(e) => {
                eprintln!("skipped: no python3 ({e})");
                return;
            }
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
