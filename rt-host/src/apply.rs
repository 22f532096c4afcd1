//! Setup, revert and status: apply a [`Plan`] in order with the journal written before
//! each change, verify by planning again, and restore from the journal.
//!
//! A change the kernel refuses (EPERM, EACCES, EIO, EROFS) is reported "not permitted
//! here" and setup goes on; a thread that has exited is reported and skipped; any other
//! error undoes this run's changes and fails, so the host is never left half-tuned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use profiles::Host;
use rt_sys::journal::{parse_sched, Entry, Journal, RevertOutcome, Reverted, Target};
use rt_sys::threads::ThreadOps;
use rt_sys::{cgroup, task, CpuSet, SysError, SysRoot};
use serde::Serialize;

use crate::error::{Aborted, TuneError};
use crate::plan::{self, Action, Change, Ctx, Plan, Status};

/// File in the journal directory listing the targets the kernel refused at the last setup.
pub const REFUSED: &str = "refused.json";

/// The targets refused at the last setup (empty when none or unreadable).
pub fn load_refused(dir: &Path) -> BTreeSet<String> {
    std::fs::read(dir.join(REFUSED))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_refused(dir: &Path, refused: &BTreeSet<String>) -> Result<(), TuneError> {
    let p = dir.join(REFUSED);
    let r = if refused.is_empty() {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    } else {
        let tmp = dir.join(format!(".{REFUSED}.tmp"));
        let bytes = serde_json::to_vec_pretty(refused).unwrap_or_default();
        std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &p))
    };
    r.map_err(|source| TuneError::Journal(rt_sys::journal::JournalError::Io { path: p, source }))
}

/// What happened to one change at setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Changed (and journalled).
    Applied,
    /// The kernel refused: nothing changed.
    NotPermitted,
    /// The thread or knob vanished before the change.
    Vanished,
}

/// One change setup acted on.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// The change.
    pub change: Change,
    /// What happened.
    pub outcome: Outcome,
    /// The error text when not applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The result of a setup.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// Profile name.
    pub profile: String,
    /// Journal directory.
    pub journal: PathBuf,
    /// The plan before.
    pub plan: Plan,
    /// What setup did, in order.
    pub done: Vec<Done>,
    /// Items still not as wanted after setup (verify), excluding refused ones.
    pub verify_failed: Vec<Change>,
    /// Items that need a reboot.
    pub needs_reboot: Vec<Change>,
}

impl SetupReport {
    /// True when verification found every runtime item as wanted.
    pub fn verified(&self) -> bool {
        self.verify_failed.is_empty()
    }
}

/// Setup options.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Stop (sleep until killed) after this many applied changes: a test hook to kill
    /// setup at a known point.
    pub pause_after: Option<usize>,
}

fn same_thread(root: &SysRoot, t: &plan::ThreadRef) -> Result<(), SysError> {
    let st = task::task_stat(root, t.pid, t.tid)?;
    if st.start_time != t.start_time {
        return Err(SysError::NotFound {
            what: format!("thread {} (tid reused)", t.tid),
        });
    }
    Ok(())
}

/// Make one change.
pub fn perform(root: &SysRoot, ops: &dyn ThreadOps, a: &Action) -> Result<(), SysError> {
    match a {
        Action::Write { path, value, .. } => root.write(path, value),
        Action::Affinity { thread, cpus, .. } => {
            same_thread(root, thread)?;
            ops.set_affinity(root, thread.pid, thread.tid, cpus)
        }
        Action::Sched { thread, params, .. } => {
            same_thread(root, thread)?;
            ops.set_sched(root, thread.pid, thread.tid, *params)
        }
        Action::CreateCgroup { path, v2, knobs } => {
            cgroup::create(root, path, *v2)?;
            for (f, v) in knobs {
                root.write(format!("{path}/{f}"), v)?;
            }
            Ok(())
        }
        Action::MoveCgroup { thread, to, .. } => {
            same_thread(root, thread)?;
            ops.move_to_cgroup(root, thread.pid, thread.tid, to)
        }
    }
}

/// Plan and apply `host`, journalling in `journal_dir`, then verify.
pub fn setup(
    name: &str,
    host: &Host,
    ctx: &Ctx<'_>,
    journal_dir: &Path,
    opts: &SetupOptions,
) -> Result<SetupReport, TuneError> {
    let root = ctx.root;
    let ops = ctx.ops;
    let fresh = Ctx {
        root,
        ops,
        vm_pid: ctx.vm_pid,
        refused: BTreeSet::new(),
    };
    let mut journal = Journal::open_locked(journal_dir)?;
    let plan = plan::build(name, host, &fresh)?;
    let start = journal.data().entries.len();
    {
        let d = journal.data_mut();
        if d.entries.is_empty() {
            d.profile = name.to_string();
            d.started = format!("{}", now_secs());
        }
        d.complete = false;
    }
    journal.save()?;
    let mut done = Vec::new();
    let mut refused = BTreeSet::new();
    let mut applied = 0usize;
    for c in plan.changes.iter().filter(|c| c.pending()) {
        let Some(a) = &c.action else { continue };
        let entry = a.entry();
        let target = entry.target.clone();
        let fresh_target = !journal.has(&target);
        journal.record(entry)?;
        match perform(root, ops, a) {
            Ok(()) => {
                applied += 1;
                done.push(Done {
                    change: c.clone(),
                    outcome: Outcome::Applied,
                    detail: None,
                });
            }
            Err(e) if e.is_not_found() || e.is_not_permitted() || c.item == "kthread" => {
                if fresh_target {
                    journal.forget(&target)?;
                }
                let outcome = if e.is_not_found() {
                    Outcome::Vanished
                } else {
                    Outcome::NotPermitted
                };
                if outcome == Outcome::NotPermitted {
                    refused.insert(c.target.clone());
                }
                done.push(Done {
                    change: c.clone(),
                    outcome,
                    detail: Some(e.to_string()),
                });
            }
            Err(e) => {
                let r = journal.revert_from(root, ops, start)?;
                let failed = r
                    .iter()
                    .filter(|x| matches!(x.outcome, RevertOutcome::Failed(_)))
                    .count();
                return Err(Aborted {
                    change: format!("{} {}", c.item, c.target),
                    reverted: r.len() - failed,
                    failed,
                    source: e,
                }
                .into());
            }
        }
        if opts.pause_after == Some(applied)
            && matches!(done.last().map(|d| &d.outcome), Some(Outcome::Applied))
        {
            eprintln!(
                "rt-host: paused after {applied} change(s) (--pause-after); waiting to be killed"
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    journal.data_mut().complete = true;
    journal.save()?;
    save_refused(journal_dir, &refused)?;
    let after = plan::build(
        name,
        host,
        &Ctx {
            root,
            ops,
            vm_pid: ctx.vm_pid,
            refused,
        },
    )?;
    let verify_failed = after
        .changes
        .iter()
        .filter(|c| c.status == Status::Differs && c.when == plan::When::Now)
        .cloned()
        .collect();
    let needs_reboot = after
        .changes
        .iter()
        .filter(|c| c.status == Status::NeedsReboot)
        .cloned()
        .collect();
    Ok(SetupReport {
        profile: name.into(),
        journal: journal_dir.to_path_buf(),
        plan,
        done,
        verify_failed,
        needs_reboot,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The result of a revert.
#[derive(Debug, Clone, Serialize)]
pub struct RevertReport {
    /// Journal directory.
    pub journal: PathBuf,
    /// Profile the journal was written for.
    pub profile: String,
    /// True when the setup that wrote the journal had finished (false after a crash).
    pub setup_complete: bool,
    /// One outcome per entry, in the order restored (reverse of setup).
    pub entries: Vec<Reverted>,
}

impl RevertReport {
    /// True when nothing failed to restore.
    pub fn ok(&self) -> bool {
        self.entries
            .iter()
            .all(|r| !matches!(r.outcome, RevertOutcome::Failed(_)))
    }
}

/// Restore everything journalled in `journal_dir`.
pub fn revert(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    journal_dir: &Path,
) -> Result<RevertReport, TuneError> {
    let mut j = Journal::open_locked(journal_dir)?;
    let profile = j.data().profile.clone();
    let setup_complete = j.data().complete;
    let entries = j.revert_with(root, ops)?;
    save_refused(journal_dir, &BTreeSet::new())?;
    Ok(RevertReport {
        journal: journal_dir.to_path_buf(),
        profile,
        setup_complete,
        entries,
    })
}

/// One journalled change and the system's value now.
#[derive(Debug, Clone, Serialize)]
pub struct StatusLine {
    /// The journal entry.
    pub entry: Entry,
    /// The value now (`(gone)` for a vanished thread or knob).
    pub now: String,
    /// True when the applied value is still in place.
    pub in_effect: bool,
}

/// What the journal says is applied, and whether it still is.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Journal directory.
    pub journal: PathBuf,
    /// Profile, when a journal exists.
    pub profile: Option<String>,
    /// True when the last setup finished.
    pub complete: bool,
    /// Each entry.
    pub entries: Vec<StatusLine>,
    /// Targets refused at the last setup.
    pub refused: Vec<String>,
}

fn now_value(root: &SysRoot, ops: &dyn ThreadOps, e: &Entry) -> Result<String, SysError> {
    let guard = |pid: u32, tid: u32, start: u64| -> Result<(), SysError> {
        let st = task::task_stat(root, pid, tid)?;
        if st.start_time != start {
            return Err(SysError::NotFound {
                what: format!("tid {tid} reused"),
            });
        }
        Ok(())
    };
    match &e.target {
        Target::File { path } => {
            let v = root.read_trim(path)?;
            // Choice files (THP) show the selected word.
            Ok(rt_sys::sysctl::selected(&v)
                .map(str::to_string)
                .unwrap_or(v))
        }
        Target::ThreadSched {
            pid,
            tid,
            start_time,
            ..
        } => {
            guard(*pid, *tid, *start_time)?;
            Ok(ops.get_sched(root, *pid, *tid)?.to_string())
        }
        Target::ThreadAffinity {
            pid,
            tid,
            start_time,
            ..
        } => {
            guard(*pid, *tid, *start_time)?;
            Ok(ops.get_affinity(root, *pid, *tid)?.to_string())
        }
        Target::Mkdir { path } => Ok(if root.exists(path) {
            "created".into()
        } else {
            "(gone)".into()
        }),
        Target::CgroupThread {
            pid,
            tid,
            start_time,
            v2,
            ..
        } => {
            guard(*pid, *tid, *start_time)?;
            cgroup::thread_cgroup(root, *pid, *tid, *v2)
        }
    }
}

fn same_value(e: &Entry, now: &str) -> bool {
    match &e.target {
        Target::ThreadSched { .. } => parse_sched(now).ok() == parse_sched(&e.applied).ok(),
        Target::ThreadAffinity { .. } => CpuSet::parse(now).ok() == CpuSet::parse(&e.applied).ok(),
        Target::File { .. } => {
            now == e.applied
                || match (CpuSet::from_mask(now), CpuSet::from_mask(&e.applied)) {
                    (Ok(a), Ok(b)) => {
                        a == b && now.chars().all(|c| c.is_ascii_hexdigit() || c == ',')
                    }
                    _ => false,
                }
        }
        _ => now == e.applied,
    }
}

/// Read the journal in `journal_dir` (without locking) and compare with the system.
pub fn status(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    journal_dir: &Path,
) -> Result<StatusReport, TuneError> {
    let data = Journal::read(journal_dir)?;
    let refused = load_refused(journal_dir).into_iter().collect();
    let Some(data) = data else {
        return Ok(StatusReport {
            journal: journal_dir.to_path_buf(),
            profile: None,
            complete: false,
            entries: Vec::new(),
            refused,
        });
    };
    let entries = data
        .entries
        .iter()
        .map(|e| {
            let now = now_value(root, ops, e).unwrap_or_else(|err| {
                if err.is_not_found() {
                    "(gone)".into()
                } else {
                    format!("(unreadable: {err})")
                }
            });
            StatusLine {
                in_effect: same_value(e, &now),
                entry: e.clone(),
                now,
            }
        })
        .collect();
    Ok(StatusReport {
        journal: journal_dir.to_path_buf(),
        profile: Some(data.profile),
        complete: data.complete,
        entries,
        refused,
    })
}
