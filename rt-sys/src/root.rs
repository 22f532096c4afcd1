//! [`SysRoot`]: all kernel paths relative to a root directory (`/` in production, a temp
//! dir in tests), with reads and writes that turn errno into [`SysError`] naming the path.
//!
//! Writes to sysfs/procfs are single `write(2)` calls of the whole value, as the kernel
//! expects; the value is not truncated-then-written in pieces. Every write (and the
//! no-follow reads) opens its file *beneath* the root without following any symbolic
//! link (`openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a link planted in
//! a tree, or a `..` in a path, can never send a write elsewhere.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

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

    /// Write `value` to an existing kernel file `rel` in one `write(2)`, opened beneath the
    /// root without following symbolic links.
    ///
    /// The file is not created: a missing knob is [`SysError::NotFound`], not a new file.
    /// A link on the way or a path leaving the root is [`SysError::Unsafe`].
    pub fn write(&self, rel: impl AsRef<Path>, value: &str) -> Result<(), SysError> {
        let mut flags = OFlag::O_WRONLY;
        if !self.is_live() {
            flags |= OFlag::O_TRUNC;
        }
        let fd = self.open_beneath(&rel, flags)?;
        File::from(fd)
            .write_all(value.as_bytes())
            .map_err(|e| SysError::from_io(self.display(&rel), Some(self.path(&rel)), e))
    }

    /// Replace the regular file `rel` (a daemon's configuration, not a kernel file) with
    /// `text` atomically: a random temp name created exclusively in its directory, with the
    /// file's mode, fsync, rename. The directory is opened beneath the root without
    /// following links, and the temp file and the rename go through that directory's
    /// descriptor, so no link on the way is ever followed.
    pub fn replace(&self, rel: impl AsRef<Path>, text: &str) -> Result<(), SysError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let rel = rel.as_ref();
        let io = |e: io::Error| SysError::from_io(self.display(rel), Some(self.path(rel)), e);
        let file = File::from(self.open_beneath(rel, OFlag::O_RDONLY)?);
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SysError::Unsafe {
                what: self.display(rel),
                why: "not a regular file".into(),
            });
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or_else(|| SysError::Unsafe {
            what: self.display(rel),
            why: "no file name".into(),
        })?;
        let dir = self.open_beneath(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        // kernel-path-ok: this process's descriptor of the directory opened above.
        let through = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        crate::safefile::write_atomic_mode(
            &through,
            text.as_bytes(),
            meta.permissions().mode() & 0o7777,
        )
        .map_err(|e| io(e.source))
    }

    /// Read `rel` as text, opened beneath the root without following symbolic links (for
    /// paths taken from a file such as a journal, which must not lead elsewhere).
    pub fn read_nofollow(&self, rel: impl AsRef<Path>) -> Result<String, SysError> {
        let fd = self.open_beneath(&rel, OFlag::O_RDONLY)?;
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .map_err(|e| SysError::from_io(self.display(&rel), Some(self.path(&rel)), e))?;
        Ok(text)
    }

    /// Open `rel` with `flags` beneath the root, refusing symbolic links anywhere on the way
    /// and any path that leaves the root. An empty `rel` (or `.`) is the root itself.
    pub(crate) fn open_beneath(
        &self,
        rel: impl AsRef<Path>,
        flags: OFlag,
    ) -> Result<OwnedFd, SysError> {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let what = self.display(rel);
        let unsafe_path = |why: &str| SysError::Unsafe {
            what: what.clone(),
            why: why.to_string(),
        };
        let dir = nix::fcntl::open(
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::from_io(self.root.display().to_string(), None, e.into()))?;
        let rel_or_dot = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let r = match nix::fcntl::openat2(dir.as_fd(), rel_or_dot, how) {
            // No openat2 (Linux < 5.6, or a seccomp filter): walk the components.
            Err(Errno::ENOSYS) => open_walk(&dir, rel, flags),
            r => r,
        };
        r.map_err(|e| match e {
            Errno::ELOOP => unsafe_path("a symbolic link is on the way (links are not followed)"),
            Errno::EXDEV => unsafe_path("the path leaves the root"),
            e => SysError::from_io(what.clone(), Some(self.path(rel)), e.into()),
        })
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

/// [`SysRoot::open_beneath`] without `openat2(2)`: one `openat(2)` per component, each
/// with `O_NOFOLLOW`; `..` and absolute components are refused (`EXDEV`).
fn open_walk(root: &OwnedFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            _ => return Err(Errno::EXDEV),
        }
    }
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Some((last, parents)) = names.split_last() else {
        return nix::fcntl::openat(root.as_fd(), ".", flags | OFlag::O_CLOEXEC, Mode::empty());
    };
    let mut cur = nix::fcntl::openat(root.as_fd(), ".", dir_flags, Mode::empty())?;
    for n in parents {
        cur = match nix::fcntl::openat(cur.as_fd(), *n, dir_flags, Mode::empty()) {
            // O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR: tell a link from a file.
            Err(Errno::ENOTDIR) => {
                let st = nix::sys::stat::fstatat(
                    cur.as_fd(),
                    *n,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                let link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
                return Err(if link { Errno::ELOOP } else { Errno::ENOTDIR });
            }
            r => r?,
        };
    }
    nix::fcntl::openat(
        cur.as_fd(),
        *last,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_never_follow_a_planted_link_or_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path().join("root"));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::create_dir_all(root.path("sys/module/kvm/parameters")).unwrap();
        let knob = root.path("sys/module/kvm/parameters/halt_poll_ns");
        std::os::unix::fs::symlink(&victim, &knob).unwrap();
        let e = root
            .write("sys/module/kvm/parameters/halt_poll_ns", "1")
            .unwrap_err();
        assert!(matches!(e, SysError::Unsafe { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A link as a directory on the way.
        std::fs::remove_file(&knob).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/x"), "precious").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.path("sys/kernel")).unwrap();
        let e = root.write("sys/kernel/x", "1").unwrap_err();
        assert!(matches!(e, SysError::Unsafe { .. }), "{e}");
        let e = root.read_nofollow("sys/kernel/x").unwrap_err();
        assert!(matches!(e, SysError::Unsafe { .. }), "{e}");
        // `..` out of the root.
        let e = root.write("sys/../../victim", "1").unwrap_err();
        assert!(e.to_string().contains("leaves the root"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("elsewhere/x")).unwrap(),
            "precious"
        );
    }

    #[test]
    fn the_component_walk_refuses_links_and_dotdot_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("l")).unwrap();
        let fd = nix::fcntl::open(
            dir.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let f = open_walk(&fd, Path::new("a/b/f"), OFlag::O_RDONLY).unwrap();
        let mut text = String::new();
        File::from(f).read_to_string(&mut text).unwrap();
        assert_eq!(text, "x");
        assert_eq!(
            open_walk(&fd, Path::new("l/b/f"), OFlag::O_RDONLY).unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(
            open_walk(&fd, Path::new("a/../a/b/f"), OFlag::O_RDONLY).unwrap_err(),
            Errno::EXDEV
        );
    }

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
