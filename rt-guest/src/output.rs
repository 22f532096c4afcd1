//! Files the probe writes besides its run directory, and keeping its data when the disk
//! fills.
//!
//! - User-named outputs (`--json FILE`, `--histfile PATH`) go through
//!   [`rt_sys::safefile::write_output`]: `-` is stdout, an existing symlink, device or FIFO
//!   (`/dev/stdout`) is written through, never replaced; anything else is written
//!   atomically. They are checked with [`rt_sys::safefile::output_target`] before the
//!   measurement starts, so a bad path fails at once, not after an hour.
//! - [`Reserve`]: disk space held in the run directory while measuring
//!   (`posix_fallocate(3)` on a temp file with a random name) and given back just before
//!   the records are written, so a disk that another process filled during the run still
//!   takes them.

use std::path::Path;

use anyhow::{Context, Result};
use rt_sys::safefile;

/// Bytes held back for the records: a probe.json with an HDR histogram per thread, the
/// manifest and the cyclictest files take a few hundred KiB at most.
pub const RESERVE_BYTES: i64 = 4 << 20;

/// Check a user-named output before measuring (see the module docs).
pub fn check(path: Option<&Path>, what: &str) -> Result<()> {
    if let Some(p) = path {
        safefile::output_target(p)
            .with_context(|| format!("Cannot write the {what} to {}", p.display()))?;
    }
    Ok(())
}

/// Write a user-named output (see the module docs).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(safefile::write_output(path, bytes)?)
}

/// Disk space held in a directory until released (or dropped: the file is removed).
#[derive(Debug)]
pub struct Reserve {
    file: Option<tempfile::NamedTempFile>,
}

impl Reserve {
    /// Hold `bytes` in `dir`. A failure (the disk is already full, the file system
    /// refuses) is returned as a warning text and holds nothing.
    pub fn hold(dir: &Path, bytes: i64) -> (Reserve, Option<String>) {
        let made = tempfile::Builder::new()
            .prefix(".rt-guest-reserve.")
            .tempfile_in(dir)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::fcntl::posix_fallocate(f.as_file(), 0, bytes)
                    .map(|()| f)
                    .map_err(|e| e.to_string())
            });
        match made {
            Ok(f) => (Reserve { file: Some(f) }, None),
            Err(e) => (
                Reserve { file: None },
                Some(format!(
                    "no disk space reserved for the records in {}: {e}",
                    dir.display()
                )),
            ),
        }
    }

    /// Give the space back (before writing the records).
    pub fn release(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.close();
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.as_file().metadata().ok())
            .map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_outputs_are_refused_before_measuring() {
        let d = tempfile::tempdir().unwrap();
        let e = check(Some(d.path()), "JSON file").unwrap_err();
        assert!(format!("{e:#}").contains("directory"), "{e:#}");
        let e = check(Some(&d.path().join("no/such/x.json")), "JSON file").unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        check(Some(&d.path().join("x.json")), "JSON file").unwrap();
        check(Some(Path::new("-")), "JSON file").unwrap();
    }

    #[test]
    fn a_reserve_holds_space_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (mut r, warn) = Reserve::hold(d.path(), 1 << 20);
        assert_eq!(warn, None);
        assert_eq!(r.held(), 1 << 20);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        r.release();
        assert_eq!(r.held(), 0);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let (r, warn) = Reserve::hold(&d.path().join("missing"), 1 << 20);
        assert!(warn.unwrap().contains("no disk space reserved"));
        assert_eq!(r.held(), 0);
    }
}
