//! The tuning journal: a write-ahead record of every prior value, so that a revert
//! restores the system exactly, also after a crash (kill -9) in the middle of a setup.
//!
//! Before each change the entry (target + prior value) is appended and the journal file
//! is replaced atomically ([`crate::safefile::write_atomic_mode`]: a random temp name,
//! created exclusively, mode 0600, fsync, rename); then the change is made. A revert walks
//! the entries in reverse order and restores each prior value; threads are identified by
//! tid and start time, so a reused tid is never touched.
//!
//! Root runs `revert`, so the journal must not be a way to make root write or remove
//! arbitrary files:
//! - the directory is created 0700 and checked on every open (a directory, not a link,
//!   owned by the user running this, not writable by group or others, in a parent that
//!   others cannot rename it in); the lock is `flock(2)` on the directory itself;
//! - entries name only the kernel interfaces setup touches ([`Interfaces`]): normalized
//!   relative paths under `proc/sys/`, `proc/irq/`, a few sysfs trees and the cgroup
//!   mounts of `/proc/mounts`, never `..`, opened beneath the root without following links;
//!   besides those only the daemons and environment files of [`crate::daemon`] (a stop
//!   signal, a CPU-list variable);
//! - the journal records the root, boot id, host name and profile ([`Origin`]); a revert
//!   on another root, boot or host, or with another profile, is refused unless forced.
//!
//! Shared by `rt-host` and `rt-guest` (`/run/rt-host`, `/run/rt-guest` by default).

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupRef};
use crate::sched::SchedParams;
use crate::threads::{self, ThreadOps};
use crate::{daemon, kernel, task, CpuSet, SysError, SysRoot};

/// What a journal entry changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A sysfs/procfs file, relative to the SysRoot (`sys/module/kvm/parameters/halt_poll_ns`).
    File {
        /// Path relative to the root.
        path: String,
    },
    /// Scheduling policy and priority of a thread.
    ThreadSched {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Thread start time (clock ticks), guards against tid reuse.
        start_time: u64,
        /// Thread name, for messages.
        name: String,
    },
    /// CPU affinity of a thread.
    ThreadAffinity {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Thread start time (clock ticks).
        start_time: u64,
        /// Thread name, for messages.
        name: String,
    },
    /// A directory created by the setup (a cgroup); revert removes it.
    Mkdir {
        /// Path relative to the root.
        path: String,
    },
    /// The cgroup a thread is in (prior and applied values are paths inside the
    /// hierarchy, e.g. `/` and `/rtvirt-rt`).
    CgroupThread {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Thread start time (clock ticks).
        start_time: u64,
        /// Thread name, for messages.
        name: String,
        /// The hierarchy's mount point relative to the root.
        mount: String,
        /// True for cgroup2 (threads move through `cgroup.threads`).
        v2: bool,
    },
    /// A daemon of [`daemon::DAEMONS`] stopped (`SIGSTOP`) or running; the value is
    /// [`daemon::STOPPED`] or [`daemon::RUNNING`].
    Process {
        /// Process id.
        pid: u32,
        /// Start time (clock ticks): a restarted daemon is another process.
        start_time: u64,
        /// Its name (one of [`daemon::DAEMONS`]).
        name: String,
    },
    /// One variable of a daemon's environment file ([`daemon::IRQBALANCE_CONFIGS`],
    /// [`daemon::CONFIG_KEYS`]); the value is a CPU list or [`daemon::ABSENT`]. Setting it
    /// restarts the daemon through its init system.
    ConfigLine {
        /// The file, relative to the root.
        path: String,
        /// The variable.
        key: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File { path } => write!(f, "/{}", path.trim_start_matches('/')),
            Target::ThreadSched { tid, name, .. } => write!(f, "sched of {name:?} (tid {tid})"),
            Target::ThreadAffinity { tid, name, .. } => {
                write!(f, "affinity of {name:?} (tid {tid})")
            }
            Target::Mkdir { path } => write!(f, "directory /{}", path.trim_start_matches('/')),
            Target::CgroupThread { tid, name, .. } => {
                write!(f, "cgroup of {name:?} (tid {tid})")
            }
            Target::Process { pid, name, .. } => write!(f, "{name} (pid {pid})"),
            Target::ConfigLine { path, key } => {
                write!(f, "{key} in /{}", path.trim_start_matches('/'))
            }
        }
    }
}

/// One journalled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What changed.
    pub target: Target,
    /// The value before the change (file text; `policy:prio` for sched; a cpu list for
    /// affinity).
    pub prior: String,
    /// The value written.
    pub applied: String,
}

/// A profile as the journal knows it: its name and the SHA-256 of its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileId {
    /// Profile name.
    pub name: String,
    /// SHA-256 of the profile's text, lower-case hex.
    pub sha256: String,
}

impl std::fmt::Display for ProfileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{:?} (sha256 {short})", self.name)
    }
}

/// Where a journal was written: the tree, the boot, the host and the profiles applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The root directory (canonical), `/` on the live system.
    pub root: String,
    /// `/proc/sys/kernel/random/boot_id` of that boot (empty when the tree has none).
    pub boot_id: String,
    /// The host name (empty when the tree has none).
    pub hostname: String,
    /// Every profile a setup applied on top of this journal, in order.
    pub profiles: Vec<ProfileId>,
}

impl Origin {
    /// The root, boot and host of `root` now (no profile).
    pub fn here(root: &SysRoot) -> Origin {
        let canonical = fs::canonicalize(root.root()).unwrap_or_else(|_| root.root().into());
        Origin {
            root: canonical.display().to_string(),
            boot_id: kernel::boot_id(root).unwrap_or_default(),
            hostname: kernel::hostname(root).unwrap_or_default(),
            profiles: Vec::new(),
        }
    }
}

/// One way a journal does not belong to the system it is about to be applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mismatch {
    /// The journal records no origin (written by an older version).
    NoOrigin,
    /// Written for another root.
    Root {
        /// In the journal.
        journal: String,
        /// Now.
        here: String,
    },
    /// Written before a reboot.
    Boot {
        /// In the journal.
        journal: String,
        /// Now.
        here: String,
    },
    /// Written on another host.
    Host {
        /// In the journal.
        journal: String,
        /// Now.
        here: String,
    },
    /// The profile given is not one that was set up.
    Profile {
        /// The profile given.
        given: ProfileId,
        /// The profiles the journal records.
        recorded: Vec<ProfileId>,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NoOrigin => {
                f.write_str("it records no root, boot or host (written by an older version)")
            }
            Mismatch::Root { journal, here } => {
                write!(f, "it was written for root {journal}, this is root {here}")
            }
            Mismatch::Boot { journal, here } => write!(
                f,
                "it was written in boot {journal}, this is boot {here} (the machine \
                 rebooted since: its threads are gone and a reboot undid every runtime value)"
            ),
            Mismatch::Host { journal, here } => {
                write!(f, "it was written on host {journal:?}, this is {here:?}")
            }
            Mismatch::Profile { given, recorded } => write!(
                f,
                "profile {given} is not the one set up ({})",
                recorded
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The journal file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalData {
    /// Profile that was applied first.
    pub profile: String,
    /// When the setup started (RFC 3339 or seconds since epoch).
    pub started: String,
    /// Where the journal was written (None in journals of older versions).
    #[serde(default)]
    pub origin: Option<Origin>,
    /// Entries in the order they were applied.
    pub entries: Vec<Entry>,
    /// True once the setup finished (false after a crash mid-way).
    pub complete: bool,
}

impl JournalData {
    /// How this journal does not belong to `here` (and, when given, `profile`).
    pub fn mismatches(&self, here: &Origin, profile: Option<&ProfileId>) -> Vec<Mismatch> {
        let Some(o) = &self.origin else {
            return vec![Mismatch::NoOrigin];
        };
        let mut out = Vec::new();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        if o.root != here.root {
            let (journal, here) = pair(&o.root, &here.root);
            out.push(Mismatch::Root { journal, here });
        }
        if o.boot_id != here.boot_id {
            let (journal, here) = pair(&o.boot_id, &here.boot_id);
            out.push(Mismatch::Boot { journal, here });
        }
        if o.hostname != here.hostname {
            let (journal, here) = pair(&o.hostname, &here.hostname);
            out.push(Mismatch::Host { journal, here });
        }
        if let Some(p) = profile {
            if !o.profiles.iter().any(|r| r.sha256 == p.sha256) {
                out.push(Mismatch::Profile {
                    given: p.clone(),
                    recorded: o.profiles.clone(),
                });
            }
        }
        out
    }
}

/// The kernel interfaces a journal entry may name: the trees setup writes (a table, so a
/// new item adds its tree here) and the cgroup hierarchies mounted on the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// cgroup mount points relative to the root (from `/proc/mounts`).
    pub cgroup_mounts: Vec<String>,
    /// The cgroup2 mount points among them.
    pub cgroup2_mounts: Vec<String>,
}

/// The trees of kernel files setup writes (relative to the root).
pub const KERNEL_TREES: &[&str] = &[
    "proc/sys/",
    "proc/irq/",
    "sys/devices/system/cpu/",
    "sys/devices/system/node/",
    "sys/devices/virtual/workqueue/",
    "sys/kernel/mm/",
    "sys/module/",
];

/// File names no journal may write: each makes the kernel run a program as root
/// (core dump pipe, module loader, poweroff, hotplug and uevent helpers, cgroup v1
/// release agent).
const RUNS_A_PROGRAM: &[&str] = &[
    "core_pattern",
    "modprobe",
    "poweroff_cmd",
    "hotplug",
    "uevent_helper",
    "release_agent",
];

/// A normalized relative path: no leading or trailing `/`, no empty, `.` or `..` part.
fn normalized(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains('\0') {
        return Err("not a normalized path relative to the root".into());
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("not a normalized path (empty, `.` or `..` part)".into());
    }
    Ok(())
}

/// A path inside a cgroup hierarchy: `/` or `/a/b`, normalized.
fn cgroup_path(p: &str) -> Result<(), String> {
    match p.strip_prefix('/') {
        Some("") => Ok(()),
        Some(rest) => normalized(rest).map_err(|e| format!("cgroup path {p:?}: {e}")),
        None => Err(format!("cgroup path {p:?} does not start with /")),
    }
}

impl Interfaces {
    /// The interfaces of `root`: its cgroup mounts from `/proc/mounts` (none when unreadable).
    pub fn of(root: &SysRoot) -> Interfaces {
        let mounts = root
            .read(cgroup::MOUNTS)
            .map(|t| cgroup::parse_mounts(&t))
            .unwrap_or_default();
        Interfaces {
            cgroup2_mounts: mounts
                .iter()
                .filter(|m| m.v2)
                .map(|m| m.path.clone())
                .collect(),
            cgroup_mounts: mounts.into_iter().map(|m| m.path).collect(),
        }
    }

    /// True when `path` is below a cgroup2 mount.
    pub fn is_v2(&self, path: &str) -> bool {
        self.cgroup2_mounts.iter().any(|m| {
            path.strip_prefix(m.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
    }

    fn below_cgroup_mount(&self, p: &str) -> bool {
        self.cgroup_mounts.iter().any(|m| {
            p.strip_prefix(m.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
    }

    fn file(&self, p: &str) -> Result<(), String> {
        normalized(p)?;
        let name = p.rsplit('/').next().unwrap_or(p);
        if RUNS_A_PROGRAM.contains(&name) || p.starts_with("proc/sys/fs/binfmt_misc/") {
            return Err("it makes the kernel run a program".into());
        }
        let in_tree = KERNEL_TREES.iter().any(|t| p.starts_with(t));
        // Only module parameters under sys/module (not e.g. a module's `uevent`).
        let module_param =
            !p.starts_with("sys/module/") || p.split('/').nth(3) == Some("parameters");
        if (in_tree && module_param) || self.below_cgroup_mount(p) {
            Ok(())
        } else {
            Err(
                "not a kernel interface setup touches (proc/sys, proc/irq, cpu, node, \
                 workqueue, mm and module-parameter sysfs trees, cgroup mounts)"
                    .into(),
            )
        }
    }

    /// Whether `entry` may be applied: its target and both values are ones a setup writes.
    pub fn check(&self, entry: &Entry) -> Result<(), String> {
        self.check_value(&entry.target, &entry.prior)?;
        self.check_value(&entry.target, &entry.applied)
    }

    /// Whether `target` may be set to `value` (only cgroup paths are values checked here;
    /// the others are parsed when applied).
    pub fn check_value(&self, target: &Target, value: &str) -> Result<(), String> {
        match target {
            Target::File { path } => self.file(path),
            Target::Mkdir { path } => {
                normalized(path)?;
                if self.below_cgroup_mount(path) {
                    Ok(())
                } else {
                    Err("a directory outside the cgroup mounts of /proc/mounts".into())
                }
            }
            Target::CgroupThread { mount, .. } => {
                if !self.cgroup_mounts.contains(mount) {
                    return Err(format!("{mount:?} is not a cgroup mount of /proc/mounts"));
                }
                cgroup_path(value)
            }
            Target::ThreadSched { .. } | Target::ThreadAffinity { .. } => Ok(()),
            Target::Process { name, .. } => {
                if !daemon::DAEMONS.contains(&name.as_str()) {
                    return Err(format!("{name:?} is not a daemon rtvirt stops"));
                }
                if value == daemon::STOPPED || value == daemon::RUNNING {
                    Ok(())
                } else {
                    Err(format!(
                        "{value:?} is neither {:?} nor {:?}",
                        daemon::STOPPED,
                        daemon::RUNNING
                    ))
                }
            }
            Target::ConfigLine { path, key } => {
                if !daemon::IRQBALANCE_CONFIGS.contains(&path.as_str()) {
                    return Err(format!(
                        "{path:?} is not a daemon configuration rtvirt edits"
                    ));
                }
                if !daemon::CONFIG_KEYS.iter().any(|(k, _)| k == key) {
                    return Err(format!("{key:?} is not a variable rtvirt sets"));
                }
                // The file is sourced by a shell: only a CPU list may go in.
                let list = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
                    && CpuSet::parse(value).is_ok();
                if value == daemon::ABSENT || list {
                    Ok(())
                } else {
                    Err(format!("{value:?} is not a CPU list"))
                }
            }
        }
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O on the journal file or lock.
    #[error("Journal I/O on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal does not parse.
    #[error(
        "Journal {path} is corrupt ({detail}); nothing was changed. To recover: move it aside \
         (mv {path} {path}.corrupt), see what is still tuned with `rt-host check PROFILE` \
         (`rt-guest check` in a guest) and set those values back by hand, or reboot: a reboot \
         undoes every runtime change rtvirt makes"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another setup holds the lock.
    #[error("Another rtvirt setup is running (lock {path} held by pid {pid})")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Holder pid, as written in the lock file.
        pid: String,
    },
    /// The journal directory or a file in it could be planted by someone else.
    #[error(
        "Refusing journal {path}: {why} (the journal directory must be a real directory, \
         owned by the user running this, mode 0700; its files regular files of that user)"
    )]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An entry names something a setup never changes: the journal was altered.
    #[error(
        "Journal {path} entry {index} ({target}) is refused: {why}. Nothing was changed: \
         rtvirt never writes such an entry, so the journal was altered; move it aside and \
         check the host"
    )]
    Entry {
        /// The journal file.
        path: PathBuf,
        /// Entry index (0-based).
        index: usize,
        /// The entry's target.
        target: String,
        /// Why it is refused.
        why: String,
    },
    /// The journal was written for another root, boot, host or profile.
    #[error("Journal {path} does not belong here: {}", .mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Mismatch {
        /// The journal file.
        path: PathBuf,
        /// Every difference.
        mismatches: Vec<Mismatch>,
    },
}

/// What happened to one entry on revert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevertOutcome {
    /// The prior value is back.
    Restored,
    /// The thread is gone (or its tid was reused): nothing to restore.
    Vanished,
    /// Restoring failed.
    Failed(String),
}

/// A revert result per entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// The entry.
    pub entry: Entry,
    /// What happened.
    pub outcome: RevertOutcome,
}

/// How a revert checks the journal against the system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RevertOptions<'a> {
    /// The profile the user named: it must be one the journal records.
    pub profile: Option<&'a ProfileId>,
    /// Revert even when the journal was written for another root, boot, host or profile.
    pub force: bool,
}

/// The result of a checked revert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertDone {
    /// One outcome per entry, in the order restored.
    pub entries: Vec<Reverted>,
    /// The mismatches `force` overrode (empty without force).
    pub overridden: Vec<Mismatch>,
}

/// An open journal in a directory (`journal.json`; `lock` holds the pid of the setup).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    data: JournalData,
    _lock: nix::fcntl::Flock<OwnedFd>,
}

const FILE: &str = "journal.json";
const LOCK: &str = "lock";

fn jio(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refuse(path: &Path, why: impl Into<String>) -> JournalError {
    JournalError::Unsafe {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// `st` belongs to the user running this and is not writable by group or others.
fn owned_and_private(path: &Path, st: &nix::sys::stat::FileStat) -> Result<(), JournalError> {
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(refuse(
            path,
            format!(
                "it is owned by uid {}, not by uid {me} who runs this",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(refuse(
            path,
            format!(
                "it is writable by group or others (mode {:o})",
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Open (and with `create`, first make) the journal directory and check it. `Ok(None)`:
/// it does not exist and `create` is false.
fn open_dir(dir: &Path, create: bool) -> Result<Option<OwnedFd>, JournalError> {
    if create {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(jio(parent))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            // The umask may have narrowed 0700: set it exactly.
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(jio(dir))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(jio(dir)(e)),
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(Errno::ELOOP) => return Err(refuse(dir, "it is a symbolic link")),
        Err(Errno::ENOTDIR) => {
            let link = fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
            let why = if link {
                "it is a symbolic link"
            } else {
                "it is not a directory"
            };
            return Err(refuse(dir, why));
        }
        Err(e) => return Err(jio(dir)(e.into())),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| jio(dir)(e.into()))?;
    owned_and_private(dir, &st)?;
    // Someone who may write the parent could rename the directory away and put their own
    // in its place, unless the parent is sticky (as /tmp).
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let pst = nix::sys::stat::stat(parent).map_err(|e| jio(parent)(e.into()))?;
        let me = nix::unistd::geteuid().as_raw();
        let sticky = pst.st_mode & libc::S_ISVTX != 0;
        if pst.st_uid != me && pst.st_uid != 0 {
            return Err(refuse(
                dir,
                format!(
                    "its parent {} is owned by uid {}",
                    parent.display(),
                    pst.st_uid
                ),
            ));
        }
        if pst.st_mode & 0o022 != 0 && !sticky {
            return Err(refuse(
                dir,
                format!(
                    "its parent {} is writable by group or others and not sticky (mode {:o})",
                    parent.display(),
                    pst.st_mode & 0o7777
                ),
            ));
        }
    }
    Ok(Some(fd))
}

/// Read file `name` of the checked directory `dir` (no link followed, a regular file of
/// ours); `Ok(None)` when absent.
fn read_in(dir: &OwnedFd, path: &Path, name: &str) -> Result<Option<Vec<u8>>, JournalError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(refuse(path, "it is a symbolic link")),
        Err(e) => return Err(jio(path)(e.into())),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| jio(path)(e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refuse(path, "it is not a regular file"));
    }
    owned_and_private(path, &st)?;
    let mut bytes = Vec::new();
    fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(jio(path))?;
    Ok(Some(bytes))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<JournalData, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Write `bytes` to `dir/name` atomically with mode 0600 (random exclusive temp name).
fn write_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    crate::safefile::write_atomic_mode(&dir.join(name), bytes, 0o600).map_err(|e| {
        JournalError::Io {
            path: e.path,
            source: e.source,
        }
    })
}

impl Journal {
    /// Path of the journal file in `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Take the exclusive lock of `dir` (`flock(2)` on the checked directory, created 0700
    /// when missing) and load the journal there, or start an empty one. The lock is held
    /// until the Journal is dropped.
    pub fn open_locked(dir: &Path) -> Result<Journal, JournalError> {
        let fd = open_dir(dir, true)?.ok_or_else(|| refuse(dir, "it does not exist"))?;
        let lock_path = dir.join(LOCK);
        let lock = match nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((fd, Errno::EWOULDBLOCK)) => {
                let pid = read_in(&fd, &lock_path, LOCK)
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                return Err(JournalError::Locked {
                    path: lock_path,
                    pid,
                });
            }
            Err((_, e)) => return Err(jio(dir)(e.into())),
        };
        write_in(dir, LOCK, std::process::id().to_string().as_bytes())?;
        let file = dir.join(FILE);
        let data = match read_in(&lock, &file, FILE)? {
            Some(b) => parse(&file, &b)?,
            None => JournalData::default(),
        };
        Ok(Journal {
            dir: dir.to_path_buf(),
            data,
            _lock: lock,
        })
    }

    /// Read the journal in `dir` without locking (the directory and file checked as by
    /// [`Journal::open_locked`]); None when there is none.
    pub fn read(dir: &Path) -> Result<Option<JournalData>, JournalError> {
        let Some(fd) = open_dir(dir, false)? else {
            return Ok(None);
        };
        let file = dir.join(FILE);
        read_in(&fd, &file, FILE)?
            .map(|b| parse(&file, &b))
            .transpose()
    }

    /// [`Journal::read`], with every entry checked against the interfaces of `root`.
    pub fn read_checked(dir: &Path, root: &SysRoot) -> Result<Option<JournalData>, JournalError> {
        let data = Self::read(dir)?;
        if let Some(d) = &data {
            check_entries(&Self::file_in(dir), d, root)?;
        }
        Ok(data)
    }

    /// Read a side file `name` of the journal directory `dir` (checked as the journal);
    /// None when the directory or the file is absent.
    pub fn read_side(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, JournalError> {
        match open_dir(dir, false)? {
            Some(fd) => read_in(&fd, &dir.join(name), name),
            None => Ok(None),
        }
    }

    /// Replace the side file `name` (mode 0600, atomically), or remove it when `bytes` is
    /// None. Needs the lock.
    pub fn write_side(&self, name: &str, bytes: Option<&[u8]>) -> Result<(), JournalError> {
        match bytes {
            Some(b) => write_in(&self.dir, name, b),
            None => {
                let p = self.dir.join(name);
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(jio(&p)(e)),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The journal's content.
    pub fn data(&self) -> &JournalData {
        &self.data
    }

    /// Mutable content (call [`Journal::save`] after).
    pub fn data_mut(&mut self) -> &mut JournalData {
        &mut self.data
    }

    /// Start (or continue) a setup of `profile` on `root`: an empty journal records the
    /// origin; a journal with entries must have been written on this root, boot and host
    /// (its entries checked), and records the profile when it is a new one. Saves.
    pub fn begin(
        &mut self,
        root: &SysRoot,
        profile: ProfileId,
        started: String,
    ) -> Result<(), JournalError> {
        let here = Origin::here(root);
        if self.data.entries.is_empty() {
            self.data.profile = profile.name.clone();
            self.data.started = started;
            self.data.origin = Some(Origin {
                profiles: vec![profile],
                ..here
            });
        } else {
            let path = Self::file_in(&self.dir);
            check_entries(&path, &self.data, root)?;
            let mismatches = self.data.mismatches(&here, None);
            if !mismatches.is_empty() {
                return Err(JournalError::Mismatch { path, mismatches });
            }
            if let Some(o) = self.data.origin.as_mut() {
                if !o.profiles.contains(&profile) {
                    o.profiles.push(profile);
                }
            }
        }
        self.data.complete = false;
        self.save()
    }
    /// True when `target` is already journalled (its first prior value is the one to keep).
    pub fn has(&self, target: &Target) -> bool {
        self.data.entries.iter().any(|e| &e.target == target)
    }

    /// Record `entry` durably before the change is made. A target already journalled keeps
    /// its first prior value (idempotent setups do not overwrite the original).
    pub fn record(&mut self, entry: Entry) -> Result<(), JournalError> {
        if !self.has(&entry.target) {
            self.data.entries.push(entry);
            self.save()?;
        }
        Ok(())
    }

    /// Record several entries with one durable save (a setup moving many threads).
    /// Targets already journalled keep their first prior value.
    pub fn record_many(&mut self, entries: Vec<Entry>) -> Result<(), JournalError> {
        let mut added = false;
        for e in entries {
            if !self.has(&e.target) {
                self.data.entries.push(e);
                added = true;
            }
        }
        if added {
            self.save()?;
        }
        Ok(())
    }

    /// Drop the entry for `target` (the change was refused, so there is nothing to undo).
    pub fn forget(&mut self, target: &Target) -> Result<(), JournalError> {
        let before = self.data.entries.len();
        self.data.entries.retain(|e| &e.target != target);
        if self.data.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Drop the entries for `targets` with one save.
    pub fn forget_many(&mut self, targets: &[Target]) -> Result<(), JournalError> {
        if targets.is_empty() {
            return Ok(());
        }
        let before = self.data.entries.len();
        self.data.entries.retain(|e| !targets.contains(&e.target));
        if self.data.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Write the journal atomically (random exclusive temp name, mode 0600, fsync, rename).
    pub fn save(&self) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(&self.data).map_err(|e| JournalError::Corrupt {
            path: Self::file_in(&self.dir),
            detail: e.to_string(),
        })?;
        write_in(&self.dir, FILE, &bytes)
    }

    /// Restore every entry in reverse order with the thread operations that fit `root`,
    /// refusing a journal of another root, boot or host (see [`Journal::revert_with`]).
    pub fn revert(&mut self, root: &SysRoot) -> Result<Vec<Reverted>, JournalError> {
        let ops = threads::for_root(root);
        Ok(self
            .revert_with(root, ops, &RevertOptions::default())?
            .entries)
    }

    /// Check every entry and the origin (a mismatch is an error unless `opts.force`), then
    /// restore every entry in reverse order and remove the journal file if everything was
    /// restored or had vanished.
    pub fn revert_with(
        &mut self,
        root: &SysRoot,
        ops: &dyn ThreadOps,
        opts: &RevertOptions<'_>,
    ) -> Result<RevertDone, JournalError> {
        let path = Self::file_in(&self.dir);
        let mut overridden = Vec::new();
        if !self.data.entries.is_empty() {
            check_entries(&path, &self.data, root)?;
            let mismatches = self.data.mismatches(&Origin::here(root), opts.profile);
            if !mismatches.is_empty() && !opts.force {
                return Err(JournalError::Mismatch { path, mismatches });
            }
            overridden = mismatches;
        }
        let entries = self.revert_from(root, ops, 0)?;
        Ok(RevertDone {
            entries,
            overridden,
        })
    }

    /// Restore the entries from index `from` on, in reverse order (undo what one setup
    /// added after earlier ones). Entries before `from` stay; the journal file is
    /// removed only when nothing is left.
    pub fn revert_from(
        &mut self,
        root: &SysRoot,
        ops: &dyn ThreadOps,
        from: usize,
    ) -> Result<Vec<Reverted>, JournalError> {
        check_entries(&Self::file_in(&self.dir), &self.data, root)?;
        let from = from.min(self.data.entries.len());
        let head: Vec<Entry> = self.data.entries[..from].to_vec();
        let mut out = Vec::new();
        for entry in self.data.entries[from..].iter().rev() {
            let outcome = match restore_with(root, ops, entry) {
                Ok(()) => RevertOutcome::Restored,
                Err(e) if e.is_not_found() => RevertOutcome::Vanished,
                Err(e) => RevertOutcome::Failed(e.to_string()),
            };
            out.push(Reverted {
                entry: entry.clone(),
                outcome,
            });
        }
        let failed = out
            .iter()
            .any(|r| matches!(r.outcome, RevertOutcome::Failed(_)));
        if failed || !head.is_empty() {
            // Keep only what failed, so a second revert retries just those.
            let mut keep = head;
            keep.extend(
                out.iter()
                    .rev()
                    .filter(|r| matches!(r.outcome, RevertOutcome::Failed(_)))
                    .map(|r| r.entry.clone()),
            );
            self.data.entries = keep;
            self.save()?;
        } else {
            let p = self.dir.join(FILE);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::Io { path: p, source: e }),
            }
            self.data = JournalData::default();
        }
        Ok(out)
    }
}

/// Check every entry of `data` against the interfaces of `root`.
fn check_entries(path: &Path, data: &JournalData, root: &SysRoot) -> Result<(), JournalError> {
    let ifs = Interfaces::of(root);
    for (index, e) in data.entries.iter().enumerate() {
        ifs.check(e).map_err(|why| JournalError::Entry {
            path: path.to_path_buf(),
            index,
            target: e.target.to_string(),
            why,
        })?;
    }
    Ok(())
}

/// The value of a [`Target::Mkdir`] entry when the directory exists (its prior is empty).
pub const CREATED: &str = "created";

impl Target {
    /// `(pid, tid, start time)` of a thread target.
    pub fn thread(&self) -> Option<(u32, u32, u64)> {
        match self {
            Target::ThreadSched {
                pid,
                tid,
                start_time,
                ..
            }
            | Target::ThreadAffinity {
                pid,
                tid,
                start_time,
                ..
            }
            | Target::CgroupThread {
                pid,
                tid,
                start_time,
                ..
            } => Some((*pid, *tid, *start_time)),
            Target::File { .. }
            | Target::Mkdir { .. }
            | Target::Process { .. }
            | Target::ConfigLine { .. } => None,
        }
    }
}

/// Check that thread `tid` of `pid` is still the one journalled (same start time): a tid
/// the kernel gave to a newer thread is "not found", never changed.
fn same_thread(root: &SysRoot, pid: u32, tid: u32, start_time: u64) -> Result<(), SysError> {
    let st = task::task_stat(root, pid, tid)?;
    if st.start_time != start_time {
        return Err(SysError::NotFound {
            what: format!(
                "thread {tid} (tid reused: start time {} != {start_time})",
                st.start_time
            ),
        });
    }
    Ok(())
}

/// Parse `policy:priority` as written in sched entries.
pub fn parse_sched(s: &str) -> Result<SchedParams, SysError> {
    let bad = || SysError::Parse {
        what: "journal sched value".into(),
        detail: s.to_string(),
    };
    let (p, prio) = s.split_once(':').ok_or_else(bad)?;
    Ok(SchedParams {
        policy: p.parse().map_err(|_| bad())?,
        priority: prio.parse().map_err(|_| bad())?,
    })
}

fn parse_cpus(s: &str) -> Result<CpuSet, SysError> {
    CpuSet::parse(s).map_err(|e| SysError::Parse {
        what: "journal affinity value".into(),
        detail: e.to_string(),
    })
}

/// Set `target` to `value`: the one way a journalled value is applied, by setup (the
/// applied value) and by revert (the prior one), in rt-host and in rt-guest.
///
/// The target and value are checked against the [`Interfaces`] of `root` first; a thread
/// target must still be the journalled thread (same start time), so a reused tid is
/// reported not found and never changed. A [`Target::Mkdir`] is created for [`CREATED`]
/// and removed for an empty value.
pub fn set(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    target: &Target,
    value: &str,
) -> Result<(), SysError> {
    let ifs = Interfaces::of(root);
    ifs.check_value(target, value)
        .map_err(|why| SysError::Unsafe {
            what: target.to_string(),
            why,
        })?;
    if let Some((pid, tid, start_time)) = target.thread() {
        same_thread(root, pid, tid, start_time)?;
    }
    match target {
        Target::File { path } => root.write(path, value),
        Target::Mkdir { path } if value == CREATED => cgroup::create(root, path, ifs.is_v2(path)),
        Target::Mkdir { path } => cgroup::remove(root, path),
        Target::CgroupThread {
            pid,
            tid,
            mount,
            v2,
            ..
        } => {
            let to = CgroupRef {
                mount: mount.clone(),
                path: value.to_string(),
                v2: *v2,
            };
            ops.move_to_cgroup(root, *pid, *tid, &to)
        }
        Target::ThreadSched { pid, tid, .. } => {
            ops.set_sched(root, *pid, *tid, parse_sched(value)?)
        }
        Target::ThreadAffinity { pid, tid, .. } => {
            ops.set_affinity(root, *pid, *tid, &parse_cpus(value)?)
        }
        Target::Process {
            pid, start_time, ..
        } => {
            same_thread(root, *pid, *pid, *start_time)?;
            ops.stop_process(root, *pid, value == daemon::STOPPED)
        }
        Target::ConfigLine { path, key } => set_config(root, path, key, value),
    }
}

/// Write `key=value` (or remove `key` for [`daemon::ABSENT`]) in the environment file
/// `path`, then restart its daemon; a failed restart puts the file back as it was.
fn set_config(root: &SysRoot, path: &str, key: &str, value: &str) -> Result<(), SysError> {
    let old = root.read_nofollow(path)?;
    let new = daemon::edit_config(&old, key, (value != daemon::ABSENT).then_some(value));
    if new == old {
        return Ok(());
    }
    let owner = daemon::CONFIG_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(daemon::IRQBALANCE, |(_, d)| *d);
    root.replace(path, &new)?;
    daemon::restart(root, owner).inspect_err(|_| {
        let _ = root.replace(path, &old);
    })
}

/// The value of `target` now, in the form [`set`] writes (a file's text with a choice
/// file's selected word, `policy:prio`, a CPU list, a cgroup path, [`CREATED`]). Files are
/// read beneath the root without following links; a reused tid is not found.
pub fn current(root: &SysRoot, ops: &dyn ThreadOps, target: &Target) -> Result<String, SysError> {
    if let Some((pid, tid, start_time)) = target.thread() {
        same_thread(root, pid, tid, start_time)?;
    }
    match target {
        Target::File { path } => {
            let v = root.read_nofollow(path)?.trim().to_string();
            Ok(crate::sysctl::selected(&v).map(str::to_string).unwrap_or(v))
        }
        Target::Mkdir { path } => Ok(if root.exists(path) { CREATED } else { "" }.to_string()),
        Target::CgroupThread { pid, tid, v2, .. } => cgroup::thread_cgroup(root, *pid, *tid, *v2),
        Target::ThreadSched { pid, tid, .. } => Ok(ops.get_sched(root, *pid, *tid)?.to_string()),
        Target::ThreadAffinity { pid, tid, .. } => {
            Ok(ops.get_affinity(root, *pid, *tid)?.to_string())
        }
        Target::Process {
            pid, start_time, ..
        } => {
            let st = task::task_stat(root, *pid, *pid)?;
            if st.start_time != *start_time {
                return Err(SysError::NotFound {
                    what: format!("process {pid} (pid reused)"),
                });
            }
            Ok(if st.state == 'T' {
                daemon::STOPPED
            } else {
                daemon::RUNNING
            }
            .to_string())
        }
        Target::ConfigLine { path, key } => {
            let text = root.read_nofollow(path)?;
            Ok(daemon::config_value(&text, key)
                .unwrap_or(daemon::ABSENT)
                .to_string())
        }
    }
}

impl Entry {
    /// True when `now` (as [`current`] reads it) is the applied value: policies and CPU
    /// lists compare as values, a hex mask as its CPU set.
    pub fn in_effect(&self, now: &str) -> bool {
        match &self.target {
            Target::ThreadSched { .. } => parse_sched(now).ok() == parse_sched(&self.applied).ok(),
            Target::ThreadAffinity { .. } => {
                CpuSet::parse(now).ok() == CpuSet::parse(&self.applied).ok()
            }
            Target::File { .. } => {
                now == self.applied
                    || match (CpuSet::from_mask(now), CpuSet::from_mask(&self.applied)) {
                        (Ok(a), Ok(b)) => {
                            a == b && now.chars().all(|c| c.is_ascii_hexdigit() || c == ',')
                        }
                        _ => false,
                    }
            }
            Target::Mkdir { .. }
            | Target::CgroupThread { .. }
            | Target::Process { .. }
            | Target::ConfigLine { .. } => now == self.applied,
        }
    }
}

/// Restore one entry's prior value with the given thread operations ([`set`] to the prior).
pub fn restore_with(root: &SysRoot, ops: &dyn ThreadOps, entry: &Entry) -> Result<(), SysError> {
    set(root, ops, &entry.target, &entry.prior)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const KNOB: &str = "sys/module/kvm/parameters/halt_poll_ns";

    fn fake(dir: &Path) -> SysRoot {
        let root = SysRoot::new(dir.join("root"));
        for (p, t) in [
            (KNOB, "0"),
            (kernel::BOOT_ID, "0b7e2c1a-boot-one\n"),
            (kernel::HOSTNAME, "rig\n"),
            (
                cgroup::MOUNTS,
                "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n",
            ),
        ] {
            let p = root.path(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, t).unwrap();
        }
        root
    }

    fn lab() -> ProfileId {
        ProfileId {
            name: "lab".into(),
            sha256: "ab".repeat(32),
        }
    }

    fn file_entry(path: &str, prior: &str) -> Entry {
        Entry {
            target: Target::File { path: path.into() },
            prior: prior.into(),
            applied: "1".into(),
        }
    }

    fn proc_entry(name: &str, applied: &str) -> Entry {
        Entry {
            target: Target::Process {
                pid: 1,
                start_time: 1,
                name: name.into(),
            },
            prior: daemon::RUNNING.into(),
            applied: applied.into(),
        }
    }

    fn conf_entry(path: &str, key: &str, applied: &str) -> Entry {
        Entry {
            target: Target::ConfigLine {
                path: path.into(),
                key: key.into(),
            },
            prior: daemon::ABSENT.into(),
            applied: applied.into(),
        }
    }

    #[test]
    fn a_daemon_is_stopped_and_its_config_line_set_and_both_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let w = |rel: &str, t: &str| {
            fs::create_dir_all(root.path(rel).parent().unwrap()).unwrap();
            fs::write(root.path(rel), t).unwrap();
        };
        let stat = "300 (irqbalance) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 777 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        w("proc/300/stat", stat);
        w("proc/300/task/300/stat", stat);
        w("etc/init.d/irqbalance", "");
        let conf = daemon::IRQBALANCE_CONFIGS[0];
        w(conf, "IRQBALANCE_ARGS=\"\"\n");
        fs::set_permissions(root.path(conf), fs::Permissions::from_mode(0o640)).unwrap();
        let ops = threads::for_root(&root);
        let p = proc_entry(daemon::IRQBALANCE, daemon::STOPPED).target;
        let p = match p {
            Target::Process { name, .. } => Target::Process {
                pid: 300,
                start_time: 777,
                name,
            },
            t => t,
        };
        let c = conf_entry(conf, daemon::BANNED_CPULIST, "1").target;
        assert_eq!(current(&root, ops, &p).unwrap(), daemon::RUNNING);
        assert_eq!(current(&root, ops, &c).unwrap(), daemon::ABSENT);
        set(&root, ops, &p, daemon::STOPPED).unwrap();
        set(&root, ops, &c, "1").unwrap();
        assert_eq!(current(&root, ops, &p).unwrap(), daemon::STOPPED);
        assert_eq!(current(&root, ops, &c).unwrap(), "1");
        assert_eq!(mode(&root.path(conf)), 0o640, "the file keeps its mode");
        set(&root, ops, &c, daemon::ABSENT).unwrap();
        set(&root, ops, &p, daemon::RUNNING).unwrap();
        assert_eq!(
            fs::read_to_string(root.path(conf)).unwrap(),
            "IRQBALANCE_ARGS=\"\"\n"
        );
        assert_eq!(current(&root, ops, &p).unwrap(), daemon::RUNNING);
        // No init system: the restart is refused and the file stays as it was.
        fs::remove_file(root.path("etc/init.d/irqbalance")).unwrap();
        let e = set(&root, ops, &c, "1").unwrap_err();
        assert!(e.is_not_permitted(), "{e}");
        assert_eq!(current(&root, ops, &c).unwrap(), daemon::ABSENT);
        // A restarted daemon is another process: never signalled.
        let other = Target::Process {
            pid: 300,
            start_time: 1,
            name: daemon::IRQBALANCE.into(),
        };
        assert!(set(&root, ops, &other, daemon::STOPPED)
            .unwrap_err()
            .is_not_found());
    }

    /// A journal in `jdir` begun on `root` holding `entries`.
    fn journal_with(jdir: &Path, root: &SysRoot, entries: Vec<Entry>) {
        let mut j = Journal::open_locked(jdir).unwrap();
        j.begin(root, lab(), "0".into()).unwrap();
        j.record_many(entries).unwrap();
    }

    /// A journal file written by hand (as an attacker would), with this root's origin.
    fn planted(jdir: &Path, root: &SysRoot, entries: Vec<Entry>) {
        let mut origin = Origin::here(root);
        origin.profiles = vec![lab()];
        let data = JournalData {
            profile: "lab".into(),
            started: "0".into(),
            origin: Some(origin),
            entries,
            complete: true,
        };
        fs::create_dir_all(jdir).unwrap();
        fs::set_permissions(jdir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(jdir.join(FILE), serde_json::to_vec(&data).unwrap()).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn journal_survives_a_crash_and_reverts_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("run");
        {
            let mut j = Journal::open_locked(&jdir).unwrap();
            j.begin(&root, lab(), "0".into()).unwrap();
            let t = Target::File { path: KNOB.into() };
            j.record(Entry {
                target: t.clone(),
                prior: "0".into(),
                applied: "200000".into(),
            })
            .unwrap();
            root.write(KNOB, "200000").unwrap();
            // A second record of the same target keeps the original prior value.
            j.record(Entry {
                target: t,
                prior: "200000".into(),
                applied: "1".into(),
            })
            .unwrap();
            // Dropped without `complete`: as after kill -9.
        }
        let data = Journal::read(&jdir).unwrap().unwrap();
        assert!(!data.complete);
        assert_eq!(data.entries.len(), 1);
        assert_eq!(data.origin.as_ref().unwrap().boot_id, "0b7e2c1a-boot-one");
        assert_eq!(data.origin.as_ref().unwrap().profiles, vec![lab()]);
        let mut j = Journal::open_locked(&jdir).unwrap();
        let r = j.revert(&root).unwrap();
        assert_eq!(r[0].outcome, RevertOutcome::Restored);
        assert_eq!(root.read_trim(KNOB).unwrap(), "0");
        assert!(Journal::read(&jdir).unwrap().is_none());
    }

    #[test]
    fn lock_stops_a_second_setup() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Journal::open_locked(dir.path()).unwrap();
        let e = Journal::open_locked(dir.path()).unwrap_err();
        let JournalError::Locked { pid, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(pid, &std::process::id().to_string());
    }

    #[test]
    fn vanished_thread_is_skipped_and_failed_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("j");
        journal_with(
            &jdir,
            &root,
            vec![
                Entry {
                    target: Target::ThreadSched {
                        pid: 1,
                        tid: 999_999,
                        start_time: 5,
                        name: "CPU 1/KVM".into(),
                    },
                    prior: "other:0".into(),
                    applied: "fifo:50".into(),
                },
                file_entry("sys/module/nope/parameters/x", "1"),
            ],
        );
        let mut j = Journal::open_locked(&jdir).unwrap();
        let r = j.revert(&root).unwrap();
        // Both vanish: a thread not in the fake /proc, a knob that no longer exists.
        assert!(
            r.iter().all(|x| x.outcome == RevertOutcome::Vanished),
            "{r:?}"
        );
        assert_eq!(parse_sched("fifo:50").unwrap().priority, 50);
        let e = parse_sched("fifo").unwrap_err();
        assert!(e.to_string().contains("journal sched value"), "{e}");
    }

    #[test]
    fn entries_outside_the_kernel_interfaces_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        fs::create_dir_all(root.path("etc")).unwrap();
        fs::write(root.path("etc/passwd"), "root:x:0:0\n").unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let cg = |mount: &str, prior: &str| Entry {
            target: Target::CgroupThread {
                pid: 1,
                tid: 1,
                start_time: 1,
                name: "x".into(),
                mount: mount.into(),
                v2: false,
            },
            prior: prior.into(),
            applied: "/rtvirt-rt".into(),
        };
        let mkdir = |p: &str| Entry {
            target: Target::Mkdir { path: p.into() },
            prior: String::new(),
            applied: "created".into(),
        };
        let hostile = [
            (file_entry("etc/passwd", "pwned"), "not a kernel interface"),
            (file_entry("/etc/passwd", "pwned"), "not a normalized"),
            (file_entry("sys/../etc/passwd", "pwned"), "not a normalized"),
            (file_entry("sys/../../victim", "pwned"), "not a normalized"),
            (
                file_entry("sys/module/kvm/parameters/../../../../etc/passwd", "x"),
                "not a normalized",
            ),
            (
                file_entry("proc/sys/kernel/core_pattern", "|/tmp/x"),
                "run a program",
            ),
            (
                file_entry("sys/fs/cgroup/cpuset/release_agent", "/tmp/x"),
                "run a program",
            ),
            (
                file_entry("proc/sys/fs/binfmt_misc/register", ":x:"),
                "run a program",
            ),
            (
                file_entry("sys/module/kvm/uevent", "add"),
                "not a kernel interface",
            ),
            (
                file_entry("sys/devices/pci0000:00/remove", "1"),
                "not a kernel interface",
            ),
            (mkdir("etc"), "outside the cgroup mounts"),
            (mkdir("sys/fs/cgroup/cpuset"), "outside the cgroup mounts"),
            (
                mkdir("sys/fs/cgroup/cpuset/../../../../etc"),
                "not a normalized",
            ),
            (cg("etc", "/"), "not a cgroup mount"),
            (cg("sys/fs/cgroup/cpuset", "/../../x"), "not a normalized"),
            (
                proc_entry("sshd", daemon::STOPPED),
                "not a daemon rtvirt stops",
            ),
            (proc_entry(daemon::IRQBALANCE, "killed"), "neither"),
            (
                conf_entry("etc/passwd", daemon::BANNED_CPULIST, "1"),
                "not a daemon configuration",
            ),
            (
                conf_entry(daemon::IRQBALANCE_CONFIGS[0], "PATH", "1"),
                "not a variable",
            ),
            (
                conf_entry(
                    daemon::IRQBALANCE_CONFIGS[0],
                    daemon::BANNED_CPULIST,
                    "1; rm -rf /",
                ),
                "not a CPU list",
            ),
            (
                conf_entry(
                    daemon::IRQBALANCE_CONFIGS[0],
                    daemon::BANNED_CPULIST,
                    "$(id)",
                ),
                "not a CPU list",
            ),
        ];
        for (i, (entry, why)) in hostile.into_iter().enumerate() {
            let jdir = dir.path().join(format!("j{i}"));
            let target = entry.target.to_string();
            planted(&jdir, &root, vec![file_entry(KNOB, "7"), entry]);
            let mut j = Journal::open_locked(&jdir).unwrap();
            let e = j.revert(&root).unwrap_err();
            let JournalError::Entry { index, .. } = &e else {
                panic!("{target}: {e}")
            };
            assert_eq!(*index, 1, "{e}");
            assert!(e.to_string().contains(why), "{target}: {e}");
            // Refused as a whole: not even the good entry was applied.
            assert_eq!(root.read_trim(KNOB).unwrap(), "0", "{target}");
            let e = Journal::read_checked(&jdir, &root).unwrap_err();
            assert!(matches!(e, JournalError::Entry { .. }), "{e}");
        }
        assert_eq!(
            fs::read_to_string(root.path("etc/passwd")).unwrap(),
            "root:x:0:0\n"
        );
        assert!(
            root.path("etc").is_dir(),
            "a named directory is never removed"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_link_planted_in_the_tree_is_not_followed_by_revert() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let jdir = dir.path().join("j");
        journal_with(&jdir, &root, vec![file_entry(KNOB, "0")]);
        fs::remove_file(root.path(KNOB)).unwrap();
        symlink(&victim, root.path(KNOB)).unwrap();
        let mut j = Journal::open_locked(&jdir).unwrap();
        let r = j.revert(&root).unwrap();
        let RevertOutcome::Failed(why) = &r[0].outcome else {
            panic!("{r:?}")
        };
        assert!(why.contains("symbolic link"), "{why}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            Journal::read(&jdir).unwrap().unwrap().entries.len(),
            1,
            "the failed entry stays for another revert"
        );
    }

    #[test]
    fn a_journal_of_another_root_boot_host_or_profile_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("j");
        journal_with(&jdir, &root, vec![file_entry(KNOB, "5")]);
        // Another root.
        let other = fake(&dir.path().join("other"));
        let mut j = Journal::open_locked(&jdir).unwrap();
        let e = j.revert(&other).unwrap_err();
        let JournalError::Mismatch { mismatches, .. } = &e else {
            panic!("{e}")
        };
        assert!(matches!(mismatches[..], [Mismatch::Root { .. }]), "{e}");
        assert!(e.to_string().contains("was written for root"), "{e}");
        assert_eq!(other.read_trim(KNOB).unwrap(), "0");
        // Another boot, another host.
        fs::write(root.path(kernel::BOOT_ID), "boot-two\n").unwrap();
        fs::write(root.path(kernel::HOSTNAME), "elsewhere\n").unwrap();
        let e = j.revert(&root).unwrap_err();
        let JournalError::Mismatch { mismatches, .. } = &e else {
            panic!("{e}")
        };
        assert!(
            matches!(
                mismatches[..],
                [Mismatch::Boot { .. }, Mismatch::Host { .. }]
            ),
            "{e}"
        );
        assert!(e.to_string().contains("rebooted"), "{e}");
        // A profile that was not set up.
        fs::write(root.path(kernel::BOOT_ID), "0b7e2c1a-boot-one\n").unwrap();
        fs::write(root.path(kernel::HOSTNAME), "rig\n").unwrap();
        let ecu = ProfileId {
            name: "ecu".into(),
            sha256: "cd".repeat(32),
        };
        let opts = RevertOptions {
            profile: Some(&ecu),
            force: false,
        };
        let e = j.revert_with(&root, &threads::Tree, &opts).unwrap_err();
        assert!(
            e.to_string()
                .contains("profile \"ecu\" (sha256 cdcdcdcdcdcd) is not the one set up (\"lab\""),
            "{e}"
        );
        assert_eq!(root.read_trim(KNOB).unwrap(), "0", "nothing reverted yet");
        // Forced: reverted, and the override is reported.
        let opts = RevertOptions {
            profile: Some(&ecu),
            force: true,
        };
        let done = j.revert_with(&root, &threads::Tree, &opts).unwrap();
        assert!(
            matches!(done.overridden[..], [Mismatch::Profile { .. }]),
            "{done:?}"
        );
        assert_eq!(done.entries[0].outcome, RevertOutcome::Restored);
        assert_eq!(root.read_trim(KNOB).unwrap(), "5");
    }

    #[test]
    fn setup_on_a_journal_of_another_boot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("j");
        journal_with(&jdir, &root, vec![file_entry(KNOB, "5")]);
        fs::write(root.path(kernel::BOOT_ID), "boot-two\n").unwrap();
        let mut j = Journal::open_locked(&jdir).unwrap();
        let e = j.begin(&root, lab(), "1".into()).unwrap_err();
        assert!(matches!(e, JournalError::Mismatch { .. }), "{e}");
        // A journal without an origin (an older version) is refused too.
        planted(&dir.path().join("old"), &root, vec![file_entry(KNOB, "5")]);
        let p = dir.path().join("old").join(FILE);
        let mut d: JournalData = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        d.origin = None;
        fs::write(&p, serde_json::to_vec(&d).unwrap()).unwrap();
        let mut j = Journal::open_locked(&dir.path().join("old")).unwrap();
        let e = j.revert(&root).unwrap_err();
        assert!(e.to_string().contains("records no root"), "{e}");
    }

    #[test]
    fn the_directory_is_made_0700_and_files_0600_and_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("a/b/journal");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::create_dir_all(&jdir).unwrap();
        fs::set_permissions(&jdir, fs::Permissions::from_mode(0o700)).unwrap();
        // Links planted at the lock and at the old fixed temp name.
        symlink(&victim, jdir.join(LOCK)).unwrap();
        symlink(&victim, jdir.join(".journal.json.tmp")).unwrap();
        journal_with(&jdir, &root, vec![file_entry(KNOB, "5")]);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(mode(&jdir.join(FILE)), 0o600);
        assert_eq!(mode(&jdir.join(LOCK)), 0o600);
        assert!(!fs::symlink_metadata(jdir.join(LOCK))
            .unwrap()
            .file_type()
            .is_symlink());
        let fresh = dir.path().join("fresh");
        drop(Journal::open_locked(&fresh).unwrap());
        assert_eq!(mode(&fresh), 0o700);
        // A journal file that is a link is refused, not read.
        fs::remove_file(jdir.join(FILE)).unwrap();
        fs::write(&victim, "{}").unwrap();
        symlink(&victim, jdir.join(FILE)).unwrap();
        let e = Journal::open_locked(&jdir).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(matches!(
            Journal::read(&jdir),
            Err(JournalError::Unsafe { .. })
        ));
    }

    #[test]
    fn a_linked_or_writable_journal_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        let e = Journal::open_locked(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(matches!(
            Journal::read(&link),
            Err(JournalError::Unsafe { .. })
        ));
        fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Journal::open_locked(&real).unwrap_err();
        assert!(
            e.to_string()
                .contains("writable by group or others (mode 777)"),
            "{e}"
        );
        // A parent anyone may write (not sticky) could swap the directory.
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Journal::open_locked(&open.join("j")).unwrap_err();
        assert!(e.to_string().contains("not sticky"), "{e}");
    }

    #[test]
    #[ignore = "needs root: chowns a directory to another user"]
    fn root_a_journal_directory_of_another_user_is_refused() {
        if !testkit::require_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("j");
        fs::create_dir(&j).unwrap();
        fs::set_permissions(&j, fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&j, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = Journal::open_locked(&j).unwrap_err();
        assert!(
            e.to_string().contains("owned by uid 65534, not by uid 0"),
            "{e}"
        );
    }

    #[test]
    fn a_corrupt_journal_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        fs::create_dir(&jdir).unwrap();
        fs::set_permissions(&jdir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(jdir.join(FILE), "{\"profile\": \"lab\", \"entr").unwrap();
        let e = Journal::open_locked(&jdir).unwrap_err();
        let t = e.to_string();
        assert!(matches!(e, JournalError::Corrupt { .. }), "{t}");
        assert!(t.contains("nothing was changed"), "{t}");
        assert!(
            t.contains(&format!("mv {}", jdir.join(FILE).display())),
            "{t}"
        );
        assert!(
            t.contains("rt-host check PROFILE") && t.contains("reboot"),
            "{t}"
        );
    }

    #[test]
    fn set_is_the_one_apply_with_the_start_time_guard_and_current_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let task = root.path("proc/40/task/41");
        fs::create_dir_all(&task).unwrap();
        let stat = "41 (CPU 1/KVM) S 1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        fs::write(task.join("stat"), stat).unwrap();
        fs::write(
            task.join("status"),
            "Name:\tCPU 1/KVM\nCpus_allowed_list:\t0-1\n",
        )
        .unwrap();
        let ops = &threads::Tree;
        let sched = |start_time| Target::ThreadSched {
            pid: 40,
            tid: 41,
            start_time,
            name: "CPU 1/KVM".into(),
        };
        set(&root, ops, &sched(777), "fifo:50").unwrap();
        assert_eq!(current(&root, ops, &sched(777)).unwrap(), "fifo:50");
        // The tid now belongs to a newer thread: not found, and nothing changes.
        let e = set(&root, ops, &sched(776), "other:0").unwrap_err();
        assert!(
            e.is_not_found() && e.to_string().contains("tid reused"),
            "{e}"
        );
        let aff = Target::ThreadAffinity {
            pid: 40,
            tid: 41,
            start_time: 776,
            name: "CPU 1/KVM".into(),
        };
        assert!(set(&root, ops, &aff, "1").unwrap_err().is_not_found());
        assert!(current(&root, ops, &sched(776)).unwrap_err().is_not_found());
        assert_eq!(ops.get_sched(&root, 40, 41).unwrap().to_string(), "fifo:50");
        assert_eq!(ops.get_affinity(&root, 40, 41).unwrap().to_string(), "0-1");
        // Files and cgroup directories, checked as journal entries are.
        let knob = Target::File { path: KNOB.into() };
        set(&root, ops, &knob, "200000").unwrap();
        assert_eq!(current(&root, ops, &knob).unwrap(), "200000");
        let bad = Target::File {
            path: "etc/x".into(),
        };
        assert!(matches!(
            set(&root, ops, &bad, "1"),
            Err(SysError::Unsafe { .. })
        ));
        fs::create_dir_all(root.path("sys/fs/cgroup/cpuset")).unwrap();
        let cg = Target::Mkdir {
            path: "sys/fs/cgroup/cpuset/rtvirt-rt".into(),
        };
        set(&root, ops, &cg, CREATED).unwrap();
        assert!(root.exists("sys/fs/cgroup/cpuset/rtvirt-rt/tasks"));
        assert_eq!(current(&root, ops, &cg).unwrap(), CREATED);
        set(&root, ops, &cg, "").unwrap();
        assert_eq!(current(&root, ops, &cg).unwrap(), "");
        let e = Entry {
            target: Target::File {
                path: "proc/irq/36/smp_affinity".into(),
            },
            prior: "3".into(),
            applied: "1".into(),
        };
        assert!(e.in_effect("00000001") && !e.in_effect("3"));
    }
}
