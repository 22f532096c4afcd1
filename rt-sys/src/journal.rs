//! The tuning journal: a write-ahead record of every prior value, so that a revert
//! restores the system exactly, also after a crash (kill -9) in the middle of a setup.
//!
//! Before each change the entry (target + prior value) is appended and the journal file
//! is replaced atomically (temp file, fsync, rename, fsync dir); then the change is made.
//! A revert walks the entries in reverse order and restores each prior value; threads
//! are identified by tid and start time, so a reused tid is never touched.
//! Shared by `rt-host` and `rt-guest` (`/run/rt-host`, `/run/rt-guest` by default).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupRef};
use crate::sched::SchedParams;
use crate::threads::{Live, ThreadOps};
use crate::{task, CpuSet, SysError, SysRoot};

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

/// The journal file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalData {
    /// Profile that was applied.
    pub profile: String,
    /// When the setup started (RFC 3339 or seconds since epoch).
    pub started: String,
    /// Entries in the order they were applied.
    pub entries: Vec<Entry>,
    /// True once the setup finished (false after a crash mid-way).
    pub complete: bool,
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
    #[error("Journal {path} is corrupt: {detail}")]
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

/// An open journal in a directory (`journal.json`, `lock`).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    data: JournalData,
    _lock: Option<fs::File>,
}

const FILE: &str = "journal.json";
const LOCK: &str = "lock";

fn jio(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Path of the journal file in `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Take the exclusive lock of `dir` (flock on `dir/lock`) and load the journal there,
    /// or start an empty one. The lock is held until the Journal is dropped.
    pub fn open_locked(dir: &Path) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir).map_err(jio(dir))?;
        let lock_path = dir.join(LOCK);
        let mut lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(jio(&lock_path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let pid = fs::read_to_string(&lock_path)
                .unwrap_or_default()
                .trim()
                .to_string();
            return Err(JournalError::Locked {
                path: lock_path,
                pid,
            });
        }
        lock.set_len(0).map_err(jio(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(jio(&lock_path))?;
        let data = Self::read(dir)?.unwrap_or_default();
        Ok(Journal {
            dir: dir.to_path_buf(),
            data,
            _lock: Some(lock),
        })
    }

    /// Read the journal in `dir` without locking; None when there is none.
    pub fn read(dir: &Path) -> Result<Option<JournalData>, JournalError> {
        let p = dir.join(FILE);
        match fs::read(&p) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Corrupt {
                        path: p,
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::Io { path: p, source: e }),
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

    /// Write the journal atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self) -> Result<(), JournalError> {
        let p = self.dir.join(FILE);
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.data).map_err(|e| JournalError::Corrupt {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        {
            let mut f = fs::File::create(&tmp).map_err(jio(&tmp))?;
            f.write_all(&bytes).map_err(jio(&tmp))?;
            f.sync_all().map_err(jio(&tmp))?;
        }
        fs::rename(&tmp, &p).map_err(jio(&p))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Restore every entry in reverse order, then remove the journal file if everything
    /// was restored or had vanished. Returns the outcome per entry.
    pub fn revert(&mut self, root: &SysRoot) -> Result<Vec<Reverted>, JournalError> {
        self.revert_with(root, &Live)
    }

    /// [`Journal::revert`] with the given thread operations (a fake tree in tests).
    pub fn revert_with(
        &mut self,
        root: &SysRoot,
        ops: &dyn ThreadOps,
    ) -> Result<Vec<Reverted>, JournalError> {
        self.revert_from(root, ops, 0)
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

/// Check that thread `tid` of `pid` is still the one journalled (same start time).
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

/// Restore one entry's prior value.
pub fn restore(root: &SysRoot, entry: &Entry) -> Result<(), SysError> {
    restore_with(root, &Live, entry)
}

/// Restore one entry's prior value with the given thread operations.
pub fn restore_with(root: &SysRoot, ops: &dyn ThreadOps, entry: &Entry) -> Result<(), SysError> {
    match &entry.target {
        Target::File { path } => root.write(path, &entry.prior),
        Target::Mkdir { path } => cgroup::remove(root, path),
        Target::CgroupThread {
            pid,
            tid,
            start_time,
            mount,
            v2,
            ..
        } => {
            same_thread(root, *pid, *tid, *start_time)?;
            let to = CgroupRef {
                mount: mount.clone(),
                path: entry.prior.clone(),
                v2: *v2,
            };
            ops.move_to_cgroup(root, *pid, *tid, &to)
        }
        Target::ThreadSched {
            pid,
            tid,
            start_time,
            ..
        } => {
            same_thread(root, *pid, *tid, *start_time)?;
            ops.set_sched(root, *pid, *tid, parse_sched(&entry.prior)?)
        }
        Target::ThreadAffinity {
            pid,
            tid,
            start_time,
            ..
        } => {
            same_thread(root, *pid, *tid, *start_time)?;
            let cpus = CpuSet::parse(&entry.prior).map_err(|e| SysError::Parse {
                what: "journal affinity value".into(),
                detail: e.to_string(),
            })?;
            ops.set_affinity(root, *pid, *tid, &cpus)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path) -> SysRoot {
        let root = SysRoot::new(dir.join("root"));
        let p = root.path("sys/module/kvm/parameters/halt_poll_ns");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "0").unwrap();
        root
    }

    #[test]
    fn journal_survives_a_crash_and_reverts_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let jdir = dir.path().join("run");
        {
            let mut j = Journal::open_locked(&jdir).unwrap();
            let t = Target::File {
                path: "sys/module/kvm/parameters/halt_poll_ns".into(),
            };
            j.record(Entry {
                target: t.clone(),
                prior: "0".into(),
                applied: "200000".into(),
            })
            .unwrap();
            root.write("sys/module/kvm/parameters/halt_poll_ns", "200000")
                .unwrap();
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
        let mut j = Journal::open_locked(&jdir).unwrap();
        let r = j.revert(&root).unwrap();
        assert_eq!(r[0].outcome, RevertOutcome::Restored);
        assert_eq!(
            root.read_trim("sys/module/kvm/parameters/halt_poll_ns")
                .unwrap(),
            "0"
        );
        assert!(Journal::read(&jdir).unwrap().is_none());
    }

    #[test]
    fn lock_stops_a_second_setup() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Journal::open_locked(dir.path()).unwrap();
        let e = Journal::open_locked(dir.path()).unwrap_err();
        assert!(matches!(e, JournalError::Locked { .. }), "{e}");
    }

    #[test]
    fn vanished_thread_is_skipped_and_failed_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake(dir.path());
        let mut j = Journal::open_locked(&dir.path().join("j")).unwrap();
        j.record(Entry {
            target: Target::ThreadSched {
                pid: 1,
                tid: 999_999,
                start_time: 5,
                name: "CPU 1/KVM".into(),
            },
            prior: "other:0".into(),
            applied: "fifo:50".into(),
        })
        .unwrap();
        j.record(Entry {
            target: Target::File {
                path: "sys/nope/missing_dir/x".into(),
            },
            prior: "1".into(),
            applied: "0".into(),
        })
        .unwrap();
        let r = j.revert(&root).unwrap();
        // Both vanish: a thread not in the fake /proc, a knob that no longer exists.
        assert!(
            r.iter().all(|x| x.outcome == RevertOutcome::Vanished),
            "{r:?}"
        );
        assert_eq!(parse_sched("fifo:50").unwrap().priority, 50);
        assert!(parse_sched("fifo").is_err());
    }
}
