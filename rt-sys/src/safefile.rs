//! Safe file writes: the one way rtvirt writes a file.
//!
//! - [`write_atomic`]: a temp file with a random name, created exclusively (`O_EXCL`, so
//!   a planted symlink is never followed) in the target's own directory, written, fsynced,
//!   then renamed over the target and the directory fsynced. A reader sees the old content
//!   or the new one, never half of it; a crash or a full disk leaves the old file and no
//!   temp file behind (the temp file is removed when the write fails).
//! - [`write_output`]: for a path the *user* named (`--json FILE`, `--histogram FILE`,
//!   `-o FILE`): `-` is standard output; an existing symlink, device or FIFO (for example
//!   `/dev/stdout`) is written *through*, never replaced by a regular file; anything else
//!   is written with [`write_atomic`].
//!
//! See open(2) (`O_EXCL`, `O_NOFOLLOW`) and rename(2).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A failed write, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("Cannot write {path}")]
pub struct WriteError {
    /// The file that was being written (or its temp file's directory).
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically with mode 0644 (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file mode `mode` (e.g. 0o600 for a journal). The mode is set
/// on the temp file before any byte is written, whatever the umask.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    write_atomic_with(path, mode, |w| w.write_all(bytes))
}

/// [`write_atomic_mode`] with the content streamed by `fill` into the temp file (a copy
/// that need not fit in memory). When `fill` fails, nothing is renamed and the temp file
/// is removed.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err(path))?;
    // The umask may have narrowed the mode given at creation: set it exactly.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(err(path))?;
    {
        let mut w = io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w).map_err(err(path))?;
        w.flush().map_err(err(path))?;
    }
    tmp.as_file().sync_all().map_err(err(path))?;
    tmp.persist(path).map_err(|e| WriteError {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    if let Ok(d) = File::open(dir) {
        // Best effort: some file systems refuse fsync on a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Where a user-named output goes, decided before any measurement starts (see
/// [`output_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// `-`: standard output.
    Stdout,
    /// An existing symlink, device, FIFO or socket: opened and written through.
    Through(PathBuf),
    /// A regular file or a new name: written with [`write_atomic`].
    Atomic(PathBuf),
}

/// Classify a user-named output path and check it can be written, so that a tool can
/// refuse a bad `--json` path before an hour of measurement rather than after it: a
/// directory, or a new file in a directory that does not exist, is an error now.
pub fn output_target(path: &Path) -> Result<OutputTarget, WriteError> {
    if path.as_os_str() == "-" {
        return Ok(OutputTarget::Stdout);
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Ok(OutputTarget::Through(path.to_path_buf())),
        Ok(m) if m.is_dir() => Err(WriteError {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
        }),
        Ok(m) if m.is_file() => Ok(OutputTarget::Atomic(path.to_path_buf())),
        Ok(_) => Ok(OutputTarget::Through(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if dir.is_dir() {
                Ok(OutputTarget::Atomic(path.to_path_buf()))
            } else {
                Err(WriteError {
                    path: path.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("directory {} does not exist", dir.display()),
                    ),
                })
            }
        }
        Err(e) => Err(err(path)(e)),
    }
}

/// Write `bytes` to a user-named output (see the module docs).
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    match output_target(path)? {
        OutputTarget::Stdout => {
            let mut out = io::stdout().lock();
            match out.write_all(bytes).and_then(|()| out.flush()) {
                // The reader of the pipe has gone (`... --histogram - | head`): what it did
                // not read is not wanted, and that is no error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(err(path)),
            }
        }
        OutputTarget::Through(p) => {
            // Truncate only a regular file behind a link; a device or FIFO has no length.
            let regular = fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false);
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(regular)
                .open(&p)
                .map_err(err(&p))?;
            f.write_all(bytes).and_then(|()| f.flush()).map_err(err(&p))
        }
        OutputTarget::Atomic(p) => write_atomic(&p, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("probe.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("probe.json")]);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn mode_is_exact_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal.json");
        write_atomic_mode(&p, b"{}", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_planted_symlink_at_the_target_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.path().join("out.json");
        symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn failed_write_names_the_file_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nodir").join("x.json");
        let e = write_atomic(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("nodir/x.json"), "{e}");
    }

    #[test]
    fn user_output_through_a_symlink_writes_the_target() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("real.txt");
        fs::write(&target, b"old old old").unwrap();
        let link = d.path().join("link.txt");
        symlink(&target, &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn user_output_to_a_device_is_written_through() {
        assert_eq!(
            output_target(Path::new("/dev/null")).unwrap(),
            OutputTarget::Through(PathBuf::from("/dev/null"))
        );
        write_output(Path::new("/dev/null"), b"discarded").unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device_like());
    }

    #[test]
    fn user_output_classification() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(output_target(Path::new("-")).unwrap(), OutputTarget::Stdout);
        let e = output_target(d.path()).unwrap_err();
        assert!(e.source.to_string().contains("directory"), "{e:?}");
        let e = output_target(&d.path().join("missing/x")).unwrap_err();
        assert!(e.source.to_string().contains("does not exist"), "{e:?}");
        let new = d.path().join("new.json");
        assert_eq!(output_target(&new).unwrap(), OutputTarget::Atomic(new));
    }

    trait CharDev {
        fn is_char_device_like(&self) -> bool;
    }
    impl CharDev for fs::FileType {
        fn is_char_device_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_char_device()
        }
    }
}
