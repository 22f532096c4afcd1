//! Reading the files of a run without leaving it: manifest entries are plain relative
//! names (no `..`, no absolute path, no empty or `.` component), each component is opened
//! with `openat(2)` and `O_NOFOLLOW` beneath the run directory's descriptor, so a symlink
//! anywhere below the run directory is refused rather than followed; only regular files
//! are read (`O_NONBLOCK` so a FIFO cannot block the open, then `fstat(2)`), their size is
//! checked on the open descriptor, and content is hashed while it streams, never read
//! past the size the manifest recorded. See openat(2), open(2) (`O_NOFOLLOW`).

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use crate::error::RecordError;

/// The largest file of a run this reader hashes (a day of CAN logs fits).
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// The largest record (`manifest.json`, `probe.json`, `can.json`) read into memory.
pub const MAX_RECORD_BYTES: u64 = 512 << 20;

/// Why `name` is not a plain relative name inside a run directory, if it is not.
pub fn entry_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name.starts_with('/') {
        return Some("it is an absolute path");
    }
    if name.contains('\0') {
        return Some("it contains a NUL byte");
    }
    for c in name.split('/') {
        match c {
            "" => return Some("it has an empty path component"),
            "." => return Some("it has a `.` component"),
            ".." => return Some("it leaves the run directory (`..`)"),
            _ if c.len() > 255 => return Some("a component is longer than 255 bytes"),
            _ => {}
        }
    }
    None
}

/// Refuse `name` unless it is a plain relative name (see [`entry_name_problem`]).
pub fn check_entry_name(run: &Path, name: &str) -> Result<(), RecordError> {
    match entry_name_problem(name) {
        None => Ok(()),
        Some(why) => Err(RecordError::BadEntry {
            run: run.to_path_buf(),
            name: name.to_string(),
            why: why.to_string(),
        }),
    }
}

fn bad(run: &Path, name: &str, why: impl Into<String>) -> RecordError {
    RecordError::BadEntry {
        run: run.to_path_buf(),
        name: name.to_string(),
        why: why.into(),
    }
}

/// Open `name` beneath the run directory `run` for reading: every component without
/// following symlinks, the file itself only when it is a regular file. Returns the file
/// and its size (from `fstat` on the open descriptor).
pub fn open_beneath(run: &Path, name: &str) -> Result<(File, u64), RecordError> {
    check_entry_name(run, name)?;
    let path = run.join(name);
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // The run directory itself is the user's to name (it may be a symlink they made).
    let mut dir: OwnedFd = open(run, dir_flags, Mode::empty())
        .map_err(|e| RecordError::io(run)(std::io::Error::from(e)))?;
    let comps: Vec<&str> = name.split('/').collect();
    let (last, parents) = comps.split_last().expect("a checked name has a component");
    for c in parents {
        dir = openat(&dir, *c, dir_flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(
            |e| match e {
                nix::errno::Errno::ENOENT => RecordError::Missing { path: path.clone() },
                nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                    bad(run, name, format!("{c} is a symlink or not a directory"))
                }
                e => RecordError::io(&path)(e.into()),
            },
        )?;
    }
    let fd = openat(
        &dir,
        *last,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENOENT => RecordError::Missing { path: path.clone() },
        nix::errno::Errno::ELOOP => bad(run, name, "it is a symlink"),
        e => RecordError::io(&path)(e.into()),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(RecordError::io(&path))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "a device, FIFO or socket"
        };
        return Err(bad(run, name, format!("it is {kind}, not a regular file")));
    }
    Ok((file, meta.len()))
}

/// Read at most `limit` bytes of `file` (size `len` from `fstat`) into memory.
pub fn read_capped(
    file: &mut File,
    len: u64,
    limit: u64,
    path: &Path,
) -> Result<Vec<u8>, RecordError> {
    if len > limit {
        return Err(RecordError::TooLarge {
            path: path.to_path_buf(),
            bytes: len,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(RecordError::io(path))?;
    let got = buf.len() as u64;
    if got > limit {
        return Err(RecordError::TooLarge {
            path: path.to_path_buf(),
            bytes: got,
            limit,
        });
    }
    Ok(buf)
}

/// The sha256 (hex) and byte count of what `reader` yields, reading at most `limit`
/// bytes (one more tells the caller it was longer), streamed in 64 KiB pieces.
pub fn hash_stream(
    reader: impl Read,
    limit: u64,
    path: &Path,
) -> Result<(String, u64), RecordError> {
    let mut r = reader.take(limit.saturating_add(1));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(RecordError::io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// `run/name` as a path, for messages.
pub fn entry_path(run: &Path, name: &str) -> PathBuf {
    run.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_plain_relative_names_are_entries() {
        for ok in [
            "probe.json",
            "sources/00-run-a.manifest.json",
            "a..b",
            ".hidden",
        ] {
            assert_eq!(entry_name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("../x", "leaves the run directory"),
            ("a/../../x", "leaves the run directory"),
            ("/etc/passwd", "absolute"),
            ("/dev/zero", "absolute"),
            ("a//b", "empty path component"),
            ("./probe.json", "`.` component"),
            ("", "empty"),
        ] {
            assert!(entry_name_problem(bad).unwrap().contains(why), "{bad}");
        }
    }

    #[test]
    fn symlinks_fifos_and_directories_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir_all(run.join("sub")).unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::fs::write(run.join("sub/ok"), b"data").unwrap();
        symlink(d.path().join("outside"), run.join("link")).unwrap();
        symlink(d.path(), run.join("dirlink")).unwrap();
        nix::unistd::mkfifo(&run.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();

        let (mut f, len) = open_beneath(&run, "sub/ok").unwrap();
        assert_eq!(len, 4);
        assert_eq!(read_capped(&mut f, len, 10, &run).unwrap(), b"data");

        let e = open_beneath(&run, "link").unwrap_err();
        assert!(
            e.to_string().contains("\"link\"") && e.to_string().contains("symlink"),
            "{e}"
        );
        let e = open_beneath(&run, "dirlink/outside").unwrap_err();
        assert!(e.to_string().contains("dirlink is a symlink"), "{e}");
        let e = open_beneath(&run, "fifo").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = open_beneath(&run, "sub").unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = open_beneath(&run, "../outside").unwrap_err();
        assert!(matches!(e, RecordError::BadEntry { .. }), "{e}");
        let e = open_beneath(&run, "nope").unwrap_err();
        assert!(matches!(e, RecordError::Missing { .. }), "{e}");
    }

    #[test]
    fn capped_reads_and_streamed_hashes_stop_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![7u8; 100]).unwrap();
        let (mut f, len) = open_beneath(d.path(), "f").unwrap();
        let e = read_capped(&mut f, len, 50, d.path()).unwrap_err();
        assert!(
            e.to_string().contains("100 bytes, above the limit of 50"),
            "{e}"
        );
        let (sha, n) = hash_stream(&b"abc"[..], 10, d.path()).unwrap();
        assert_eq!(n, 3);
        assert_eq!(sha, crate::sha256_hex(b"abc"));
        // /dev/zero never ends: the hash stops one byte past the limit.
        let zero = File::open("/dev/zero").unwrap();
        let (_, n) = hash_stream(zero, 1000, d.path()).unwrap();
        assert_eq!(n, 1001);
    }
}
