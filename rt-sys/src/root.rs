//! [`SysRoot`]: all kernel paths relative to a root directory (`/` in production, a temp
//! dir in tests), with reads and writes that turn errno into [`SysError`] naming the path.
//!
//! Writes to sysfs/procfs are single `write(2)` calls of the whole value, as the kernel
//! expects; the value is not truncated-then-written in pieces.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::SysError;

/// A root under which `/sys`, `/proc`, `/dev` and `/run` are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot::new("/")
    }
}

impl SysRoot {
    /// A root at `root` (use `/` for the live system).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysRoot { root: root.into() }
    }

    /// The live system (`/`).
    pub fn live() -> Self {
        SysRoot::default()
    }

    /// True when this root is the live system.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel` (e.g. `"sys/devices/system/cpu/online"`; a leading `/`
    /// is allowed and ignored).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    /// Display form of `rel` as it would appear on the live system (`/sys/...`).
    pub fn display(&self, rel: impl AsRef<Path>) -> String {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        format!("/{}", rel.display())
    }

    /// True when `rel` exists.
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.path(rel).exists()
    }

    /// Read `rel` as text.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String, SysError> {
        let p = self.path(&rel);
        fs::read_to_string(&p).map_err(|e| SysError::from_io(self.display(&rel), Some(p), e))
    }

    /// Read `rel` as text and trim surrounding whitespace (one-value sysfs files).
    pub fn read_trim(&self, rel: impl AsRef<Path>) -> Result<String, SysError> {
        Ok(self.read(rel)?.trim().to_string())
    }

    /// Read `rel` and parse it as an integer.
    pub fn read_u64(&self, rel: impl AsRef<Path>) -> Result<u64, SysError> {
        let s = self.read_trim(&rel)?;
        s.parse().map_err(|_| SysError::Parse {
            what: self.display(&rel),
            detail: format!("expected an integer, found {s:?}"),
        })
    }

    /// Write `value` to an existing kernel file `rel` in one `write(2)`.
    ///
    /// The file is not created: a missing knob is [`SysError::NotFound`], not a new file.
    pub fn write(&self, rel: impl AsRef<Path>, value: &str) -> Result<(), SysError> {
        let p = self.path(&rel);
        let what = self.display(&rel);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(!self.is_live())
            .open(&p)
            .map_err(|e| SysError::from_io(what.clone(), Some(p.clone()), e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| SysError::from_io(what, Some(p), e))
    }

    /// List the entry names of directory `rel`, sorted.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, SysError> {
        let p = self.path(&rel);
        let rd = fs::read_dir(&p).map_err(|e| SysError::from_io(self.display(&rel), Some(p), e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_tree_read_write_and_missing_knob() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(root.path("sys/module/kvm/parameters")).unwrap();
        std::fs::write(root.path("/sys/module/kvm/parameters/halt_poll_ns"), "0\n").unwrap();
        assert_eq!(
            root.read_u64("sys/module/kvm/parameters/halt_poll_ns")
                .unwrap(),
            0
        );
        root.write("sys/module/kvm/parameters/halt_poll_ns", "200000")
            .unwrap();
        assert_eq!(
            root.read_u64("sys/module/kvm/parameters/halt_poll_ns")
                .unwrap(),
            200000
        );
        let err = root
            .write("sys/module/kvm/parameters/nope", "1")
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("/sys/module/kvm/parameters/nope"));
    }

    #[test]
    fn unparsable_integer_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(root.path("proc/sys/kernel")).unwrap();
        std::fs::write(root.path("proc/sys/kernel/sched_rt_runtime_us"), "abc\n").unwrap();
        let err = root
            .read_u64("proc/sys/kernel/sched_rt_runtime_us")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("/proc/sys/kernel/sched_rt_runtime_us"),
            "{err}"
        );
    }
}
