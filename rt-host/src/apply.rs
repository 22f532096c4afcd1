//! Setup, revert and status: apply a [`Plan`] in order with the journal written before
//! each change, verify by planning again, and restore from the journal.
//!
//! A change the kernel refuses (EPERM, EACCES, EIO, EROFS) is reported "not permitted
//! here" and setup goes on; a thread that has exited is reported and skipped; any other
//! error undoes this run's changes and fails, so the host is never left half-tuned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use profiles::Host;
use rt_sys::journal::{
    self, Entry, Journal, Mismatch, Origin, ProfileId, RevertOptions, RevertOutcome, Reverted,
    Target,
};
use rt_sys::threads::ThreadOps;
use rt_sys::{task, CpuSet, SysError, SysRoot};
use serde::Serialize;

use crate::error::{Aborted, TuneError};
use crate::plan::{self, Action, Change, Ctx, Plan, Status};

/// File in the journal directory listing the targets the kernel refused at the last setup.
pub const REFUSED: &str = "refused.json";

/// The targets refused at the last setup (empty when none; read, as the journal, from the
/// checked journal directory without following links).
pub fn load_refused(dir: &Path) -> Result<BTreeSet<String>, TuneError> {
    let Some(bytes) = Journal::read_side(dir, REFUSED)? else {
        return Ok(BTreeSet::new());
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        TuneError::Journal(rt_sys::journal::JournalError::Corrupt {
            path: dir.join(REFUSED),
            detail: e.to_string(),
        })
    })
}

fn save_refused(journal: &Journal, refused: &BTreeSet<String>) -> Result<(), TuneError> {
    let bytes = serde_json::to_vec_pretty(refused).unwrap_or_default();
    let bytes = (!refused.is_empty()).then_some(bytes.as_slice());
    Ok(journal.write_side(REFUSED, bytes)?)
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
    /// Not tried: a real-time policy for a vCPU whose affinity the kernel refused (a FIFO
    /// vCPU off its CPU could starve the host).
    Skipped,
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
    /// Items that need a reboot or a module reload.
    pub needs_reboot: Vec<Change>,
    /// Essential items (vCPU affinity and real-time policy, the RT runtime of their
    /// cgroups) refused or missing after setup, each with its cause (`note`) and `fix`.
    pub not_met: Vec<Change>,
}

impl SetupReport {
    /// True when verification found every runtime item as wanted.
    pub fn verified(&self) -> bool {
        self.verify_failed.is_empty()
    }

    /// True when verified and every essential item is met (exit 0 of `setup`).
    pub fn met(&self) -> bool {
        self.verified() && self.not_met.is_empty()
    }
}

/// Setup options.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Stop (sleep until killed) after this many applied changes: a test hook to kill
    /// setup at a known point.
    pub pause_after: Option<usize>,
    /// Test hook: fail with an unexpected error before the change after N applied ones,
    /// to exercise the undo of a half-done setup.
    pub fail_after: Option<usize>,
    /// Apply and verify only the VM items ([`Change::vm_item`]): a VM that restarted gets
    /// its new threads tuned, the host-wide knobs are left as they are.
    pub vm_only: bool,
}

/// The journal entries of a cgroup move: the thread's affinity first (attaching a task
/// to a cpuset resets its affinity to the cpuset's CPUs, and moving it back resets it to
/// the parent's, so revert, walking backwards, moves the thread back and then restores
/// its own mask), then the move.
fn move_entries(root: &SysRoot, ops: &dyn ThreadOps, a: &Action) -> Vec<Entry> {
    let mut v = Vec::new();
    if let Action::MoveCgroup { thread, to, .. } = a {
        if let Ok(prior) = ops.get_affinity(root, thread.pid, thread.tid) {
            let applied = root
                .read_trim(to.file("cpuset.cpus"))
                .unwrap_or_else(|_| prior.to_string());
            v.push(Entry {
                target: Action::Affinity {
                    thread: thread.clone(),
                    cpus: CpuSet::new(),
                    prior: prior.clone(),
                }
                .target(),
                prior: prior.to_string(),
                applied,
            });
        }
    }
    v.push(a.entry());
    v
}

/// The journal entries before an isolated cgroup v2 partition is made: the affinity of
/// every thread in its parent cgroup. Making the partition takes its CPUs from the
/// parent's effective CPUs, and kernels before 6.2 overwrite the affinity of every task
/// there with them (and again with all CPUs when the partition is removed), also of
/// threads rt-host never tunes: another VM, the QEMU main loop, unbound kernel threads.
/// Journalled first, they are restored last, after the partition is gone. Per-CPU kernel
/// threads (`PF_NO_SETAFFINITY`) are left out: the kernel keeps theirs.
fn partition_entries(root: &SysRoot, ops: &dyn ThreadOps, a: &Action) -> Vec<Entry> {
    let Action::CreateCgroup {
        path,
        v2: true,
        knobs,
    } = a
    else {
        return Vec::new();
    };
    let knob = |k: &str| knobs.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    if knob("cpuset.cpus.partition").is_none() {
        return Vec::new();
    }
    let Some((parent, _)) = path.rsplit_once('/') else {
        return Vec::new();
    };
    let taken = knob("cpuset.cpus")
        .and_then(|c| CpuSet::parse(c).ok())
        .unwrap_or_default();
    let effective = root
        .read_trim(format!("{parent}/cpuset.cpus.effective"))
        .ok()
        .and_then(|c| CpuSet::parse(&c).ok());
    let tids: Vec<u32> = root
        .read(format!("{parent}/cgroup.threads"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut v = Vec::new();
    for tid in tids {
        let Ok(pid) = rt_sys::threads::tgid_of(root, tid) else {
            continue;
        };
        // rt-host itself is gone by the time anyone reverts.
        if root.is_live() && pid == std::process::id() {
            continue;
        }
        let Ok(st) = task::task_stat(root, pid, tid) else {
            continue;
        };
        if st.flags & rt_sys::threads::PF_NO_SETAFFINITY != 0 {
            continue;
        }
        let Ok(prior) = ops.get_affinity(root, pid, tid) else {
            continue;
        };
        let left = effective
            .as_ref()
            .map(|e| e.difference(&taken).intersection(&prior))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| prior.clone());
        let thread = plan::ThreadRef {
            pid,
            tid,
            start_time: st.start_time,
            name: st.comm.clone(),
        };
        v.push(Entry {
            target: Action::Affinity {
                thread,
                cpus: CpuSet::new(),
                prior: prior.clone(),
            }
            .target(),
            prior: prior.to_string(),
            applied: left.to_string(),
        });
    }
    v
}

/// Make one change: [`journal::set`] to the value the journal entry records as applied
/// (the thread still the planned one, the target one a journal may name). A cgroup is
/// created, then its knobs written; a refused knob removes the new cgroup again.
pub fn perform(root: &SysRoot, ops: &dyn ThreadOps, a: &Action) -> Result<(), SysError> {
    let Action::CreateCgroup { path, knobs, .. } = a else {
        return journal::set(root, ops, &a.target(), &a.entry().applied);
    };
    let dir = a.target();
    journal::set(root, ops, &dir, journal::CREATED)?;
    for (f, v) in knobs {
        let knob = Target::File {
            path: format!("{path}/{f}"),
        };
        if let Err(e) = journal::set(root, ops, &knob, v) {
            // Leave no half-made cgroup behind (it holds no task yet).
            let _ = journal::set(root, ops, &dir, "");
            return Err(e);
        }
    }
    Ok(())
}

/// Plan and apply `host` (profile `profile`), journalling in `journal_dir`, then verify.
pub fn setup(
    profile: &ProfileId,
    host: &Host,
    ctx: &Ctx<'_>,
    journal_dir: &Path,
    opts: &SetupOptions,
) -> Result<SetupReport, TuneError> {
    let (root, ops) = (ctx.root, ctx.ops);
    let fresh = Ctx {
        root,
        ops,
        vm_pid: ctx.vm_pid,
        refused: BTreeSet::new(),
    };
    let name = profile.name.as_str();
    let mut journal = Journal::open_locked(journal_dir)?;
    let plan = plan::build(name, host, &fresh)?;
    let start = journal.data().entries.len();
    journal.begin(root, profile.clone(), now_secs().to_string())?;
    let chosen = |c: &Change| !opts.vm_only || c.vm_item();
    let pending: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.pending() && chosen(c))
        .collect();
    let mut run = Run {
        root,
        ops,
        opts,
        journal,
        start,
        done: Vec::new(),
        refused: BTreeSet::new(),
        unpinned: BTreeSet::new(),
        applied: 0,
        batch: Batch::default(),
    };
    for i in 0..pending.len() {
        run.step(&pending, i)?;
    }
    let (done, refused) = run.finish()?;
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
    let matching = |f: &dyn Fn(&Change) -> bool| {
        after
            .changes
            .iter()
            .filter(|c| chosen(c) && f(c))
            .cloned()
            .collect()
    };
    Ok(SetupReport {
        profile: name.into(),
        journal: journal_dir.to_path_buf(),
        verify_failed: matching(&|c| c.status == Status::Differs && c.when == plan::When::Now),
        needs_reboot: matching(&|c| {
            matches!(c.status, Status::NeedsReboot | Status::NeedsModuleReload)
        }),
        not_met: matching(&|c| c.not_met()),
        plan,
        done,
    })
}

/// Consecutive cgroup moves (a cpuset shield moves every thread) are journalled with one
/// durable save; their entries are still written before any of them is made.
#[derive(Debug, Default)]
struct Batch {
    /// Index (in the pending changes) after the current batch.
    end: usize,
    /// For each change of the batch: its target was not journalled before.
    fresh: Vec<bool>,
    /// Targets to drop from the journal once the batch is done (refused or vanished).
    forget: Vec<Target>,
}

/// One setup run: the journal, what was done, what the kernel refused.
struct Run<'a> {
    root: &'a SysRoot,
    ops: &'a dyn ThreadOps,
    opts: &'a SetupOptions,
    journal: Journal,
    /// Journal entries before this run (an abort undoes only this run's).
    start: usize,
    done: Vec<Done>,
    refused: BTreeSet<String>,
    /// Threads whose essential affinity the kernel refused: never made real-time.
    unpinned: BTreeSet<u32>,
    applied: usize,
    batch: Batch,
}

impl Run<'_> {
    /// Journal, then make, the change `pending[i]`.
    fn step(&mut self, pending: &[&Change], i: usize) -> Result<(), TuneError> {
        let c = pending[i];
        let Some(a) = &c.action else { return Ok(()) };
        if matches!(a, Action::MoveCgroup { .. }) && i >= self.batch.end {
            self.journal_moves(pending, i)?;
        }
        if let Action::Sched { thread, params, .. } = a {
            if params.policy.is_realtime() && self.unpinned.contains(&thread.tid) {
                self.done.push(Done {
                    change: c.clone(),
                    outcome: Outcome::Skipped,
                    detail: Some(
                        "its affinity was refused: a real-time vCPU off its CPU could starve \
                         the host"
                            .into(),
                    ),
                });
                return Ok(());
            }
        }
        let in_batch = i < self.batch.end;
        self.journal
            .record_many(partition_entries(self.root, self.ops, a))?;
        let entry = a.entry();
        let target = entry.target.clone();
        let fresh = if in_batch {
            let k = i + self.batch.fresh.len() - self.batch.end;
            self.batch.fresh.get(k).copied().unwrap_or(false)
        } else {
            !self.journal.has(&target)
        };
        self.journal.record(entry)?;
        let result = if self.opts.fail_after == Some(self.applied) {
            Err(SysError::Io {
                path: PathBuf::from(&c.target),
                source: std::io::Error::other("injected fault (--fail-after)"),
            })
        } else {
            perform(self.root, self.ops, a)
        };
        match result {
            Ok(()) => {
                self.applied += 1;
                self.done.push(Done {
                    change: c.clone(),
                    outcome: Outcome::Applied,
                    detail: None,
                });
                self.pause_if_asked();
            }
            Err(e) if e.is_not_found() || e.is_not_permitted() || c.item == "kthread" => {
                if fresh && in_batch {
                    self.batch.forget.push(target);
                } else if fresh {
                    self.journal.forget(&target)?;
                }
                self.refusal(c, a, e);
            }
            Err(e) => return Err(self.abort(c, e)),
        }
        Ok(())
    }

    /// Journal the run of cgroup moves starting at `pending[i]` with one save.
    fn journal_moves(&mut self, pending: &[&Change], i: usize) -> Result<(), TuneError> {
        let end = pending[i..]
            .iter()
            .position(|c| !matches!(c.action, Some(Action::MoveCgroup { .. })))
            .map_or(pending.len(), |n| i + n);
        let mut entries = Vec::new();
        self.batch.fresh.clear();
        for a in pending[i..end].iter().filter_map(|c| c.action.as_ref()) {
            entries.extend(move_entries(self.root, self.ops, a));
            self.batch.fresh.push(!self.journal.has(&a.target()));
        }
        self.journal.record_many(entries)?;
        self.batch.end = end;
        Ok(())
    }

    /// A change the kernel refused, or whose thread or knob vanished: reported, not fatal.
    fn refusal(&mut self, c: &Change, a: &Action, e: SysError) {
        let outcome = if e.is_not_found() {
            Outcome::Vanished
        } else {
            Outcome::NotPermitted
        };
        if outcome == Outcome::NotPermitted {
            self.refused.insert(c.target.clone());
            if let (true, Action::Affinity { thread, .. }) = (c.essential, a) {
                self.unpinned.insert(thread.tid);
            }
        }
        self.done.push(Done {
            change: c.clone(),
            outcome,
            detail: Some(e.to_string()),
        });
    }

    /// An unexpected error: undo this run's changes and say where it stopped.
    fn abort(&mut self, c: &Change, e: SysError) -> TuneError {
        let undo = self
            .journal
            .forget_many(&self.batch.forget)
            .and_then(|()| self.journal.revert_from(self.root, self.ops, self.start));
        let r = match undo {
            Ok(r) => r,
            Err(j) => return j.into(),
        };
        let failed = r
            .iter()
            .filter(|x| matches!(x.outcome, RevertOutcome::Failed(_)))
            .count();
        Aborted {
            change: format!("{} {}", c.item, c.target),
            reverted: r.len() - failed,
            failed,
            source: e,
        }
        .into()
    }

    /// The `--pause-after` test hook: sleep until killed after N applied changes.
    fn pause_if_asked(&self) {
        if self.opts.pause_after == Some(self.applied) {
            eprintln!(
                "rt-host: paused after {} change(s) (--pause-after); waiting to be killed",
                self.applied
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    /// Mark the journal complete and record the refusals; the outcomes and refused targets.
    fn finish(mut self) -> Result<(Vec<Done>, BTreeSet<String>), TuneError> {
        self.journal.forget_many(&self.batch.forget)?;
        self.journal.data_mut().complete = true;
        self.journal.save()?;
        save_refused(&self.journal, &self.refused)?;
        Ok((self.done, self.refused))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drop the journal entries of threads and processes that no longer exist (a VM that
/// exited): nothing is left to restore for them, and a VM restarted many times under
/// `rt-host watch` would grow the journal for ever. Returns how many were dropped.
pub fn prune_vanished(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    journal_dir: &Path,
) -> Result<usize, TuneError> {
    if Journal::read_checked(journal_dir, root)?.is_none() {
        return Ok(0);
    }
    let mut j = Journal::open_locked(journal_dir)?;
    let gone: Vec<Target> = j
        .data()
        .entries
        .iter()
        .filter(|e| e.target.thread().is_some() || matches!(e.target, Target::Process { .. }))
        .filter(|e| journal::current(root, ops, &e.target).is_err_and(|x| x.is_not_found()))
        .map(|e| e.target.clone())
        .collect();
    j.forget_many(&gone)?;
    Ok(gone.len())
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
    /// What `--force` overrode: the journal was written for another root, boot, host or
    /// profile.
    pub overridden: Vec<Mismatch>,
}

impl RevertReport {
    /// True when nothing failed to restore.
    pub fn ok(&self) -> bool {
        self.entries
            .iter()
            .all(|r| !matches!(r.outcome, RevertOutcome::Failed(_)))
    }
}

/// Restore everything journalled in `journal_dir`. The journal must have been written on
/// this root, boot and host (and for `opts.profile`, when given) unless `opts.force`.
pub fn revert(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    journal_dir: &Path,
    opts: &RevertOptions<'_>,
) -> Result<RevertReport, TuneError> {
    let mut j = Journal::open_locked(journal_dir)?;
    let profile = j.data().profile.clone();
    let setup_complete = j.data().complete;
    let done = j.revert_with(root, ops, opts)?;
    save_refused(&j, &BTreeSet::new())?;
    Ok(RevertReport {
        journal: journal_dir.to_path_buf(),
        profile,
        setup_complete,
        entries: done.entries,
        overridden: done.overridden,
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
    /// How the journal does not belong to this root, boot or host (a revert would refuse it).
    pub mismatches: Vec<Mismatch>,
}

/// Read the journal in `journal_dir` (without locking) and compare with the system.
pub fn status(
    root: &SysRoot,
    ops: &dyn ThreadOps,
    journal_dir: &Path,
) -> Result<StatusReport, TuneError> {
    // Every entry is checked before anything is read: a journal naming other files is an
    // error, so status never prints their content.
    let data = Journal::read_checked(journal_dir, root)?;
    let refused = load_refused(journal_dir)?.into_iter().collect();
    let Some(data) = data else {
        return Ok(StatusReport {
            journal: journal_dir.to_path_buf(),
            profile: None,
            complete: false,
            entries: Vec::new(),
            refused,
            mismatches: Vec::new(),
        });
    };
    let mismatches = data.mismatches(&Origin::here(root), None);
    let entries = data
        .entries
        .iter()
        .map(|e| {
            let now = journal::current(root, ops, &e.target).unwrap_or_else(|err| {
                if err.is_not_found() {
                    "(gone)".into()
                } else {
                    format!("(unreadable: {err})")
                }
            });
            StatusLine {
                in_effect: e.in_effect(&now),
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
        mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeMachine, QEMU_PID};
    use profiles::Host;
    use rt_sys::sched::{Policy, SchedParams};
    use rt_sys::threads::{ThreadOps, Tree};

    fn lab_host() -> Host {
        crate::fake::lab_host()
    }

    fn lab_id() -> ProfileId {
        let l = profiles::load("lab").unwrap();
        ProfileId {
            name: l.profile.name.clone(),
            sha256: l.sha256(),
        }
    }

    fn full_host() -> Host {
        let mut h = lab_host();
        h.isolation.cpuset_partition = true;
        h.isolation.kthreads = true;
        h.hugepages = Some(profiles::Hugepages {
            size_kib: 2048,
            count: 256,
            node: None,
        });
        h
    }

    fn setup_in(
        m: &FakeMachine,
        host: &Host,
        jdir: &Path,
        opts: &SetupOptions,
    ) -> Result<SetupReport, TuneError> {
        setup(&lab_id(), host, &Ctx::new(&m.root), jdir, opts)
    }

    #[test]
    fn plan_on_the_fake_machine_orders_cpuset_affinity_policy() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let p = plan::build("lab", &full_host(), &Ctx::new(&m.root)).unwrap();
        let find = |item: &str, target: &str| {
            p.changes
                .iter()
                .position(|c| c.item == item && c.target.contains(target))
                .unwrap_or_else(|| panic!("no {item} {target}: {:#?}", p.changes))
        };
        let st = |i: usize| p.changes[i].status;
        assert_eq!(st(find("halt-poll", "halt_poll_ns")), Status::Differs);
        assert_eq!(st(find("cpuidle", "cpu1/cpuidle/state1")), Status::Differs);
        assert!(!p
            .changes
            .iter()
            .any(|c| c.target.contains("cpu0/cpuidle") || c.target.contains("state0")));
        assert_eq!(st(find("irq", "irq/26/")), Status::Differs);
        assert_eq!(st(find("irq", "irq/36/")), Status::Differs);
        assert_eq!(
            st(find("nested-virtualization", "hypervisor")),
            Status::Differs
        );
        assert_eq!(st(find("boot-arg", "isolcpus")), Status::NeedsReboot);
        // The FIFO emulator thread is never moved; the per-CPU kworker is not listed.
        assert_eq!(st(find("emulator", "rt-worker")), Status::NotApplicable);
        assert!(!p.changes.iter().any(|c| c.target.contains("kworker")));
        assert_eq!(st(find("kthread", "kcompactd0")), Status::Differs);
        assert_eq!(st(find("hugepages", "nr_hugepages")), Status::Differs);
        // Order: cgroup moves, then affinities (main loop before vCPU), then policy.
        let cg = find("cpuset", "cgroup of \"CPU 1/TCG\"");
        let main_aff = find("emulator", "qemu-system-x86");
        let vcpu_aff = find("vcpu-affinity", "CPU 1/TCG");
        let vcpu_sched = find("vcpu-sched", "CPU 1/TCG");
        assert!(
            cg < main_aff && main_aff < vcpu_aff && vcpu_aff < vcpu_sched,
            "{cg} {main_aff} {vcpu_aff} {vcpu_sched}"
        );
        assert_eq!(p.changes[vcpu_sched].desired, "fifo:50");
        assert!(!p.met());
    }

    #[test]
    fn setup_applies_verifies_and_revert_restores_every_file_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        // A process started with `taskset -c 1`: the cpuset shield moves it to CPU 0 and
        // the move back to the root cpuset alone would widen it to 0-1.
        m.thread(300, 300, "pinned-app", 1, 0, 0, 0, "1");
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = setup_in(&m, &full_host(), &jdir, &SetupOptions::default()).unwrap();
        assert_eq!(
            Tree.get_affinity(&m.root, 300, 300).unwrap().to_string(),
            "0"
        );
        assert!(r.verified(), "{:#?}", r.verify_failed);
        let t = Tree;
        let fifo = SchedParams {
            policy: Policy::Fifo,
            priority: 50,
        };
        assert_eq!(t.get_sched(&m.root, QEMU_PID, 4003).unwrap(), fifo);
        assert_eq!(
            t.get_affinity(&m.root, QEMU_PID, 4003).unwrap().to_string(),
            "1"
        );
        assert_eq!(
            t.get_affinity(&m.root, QEMU_PID, 4000).unwrap().to_string(),
            "0"
        );
        assert_eq!(
            t.get_affinity(&m.root, QEMU_PID, 4005).unwrap().to_string(),
            "0-1",
            "a FIFO thread is never moved"
        );
        assert_eq!(t.get_affinity(&m.root, 60, 60).unwrap().to_string(), "0");
        assert_eq!(
            m.root
                .read_trim("sys/devices/system/cpu/cpu1/cpuidle/state1/disable")
                .unwrap(),
            "1"
        );
        assert_eq!(
            m.root
                .read_trim("sys/devices/system/cpu/cpu0/cpuidle/state1/disable")
                .unwrap(),
            "0"
        );
        assert_eq!(
            m.root
                .read_trim("sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap(),
            "never"
        );
        assert_eq!(
            m.root.read_trim("proc/irq/36/smp_affinity").unwrap(),
            "00000001"
        );
        assert_eq!(
            m.root
                .read_trim("sys/fs/cgroup/cpuset/rtvirt-rt/cpuset.cpus")
                .unwrap(),
            "1"
        );
        assert_eq!(
            rt_sys::cgroup::thread_cgroup(&m.root, QEMU_PID, 4003, false).unwrap(),
            "/rtvirt-rt"
        );
        assert_eq!(
            rt_sys::cgroup::thread_cgroup(&m.root, QEMU_PID, 4000, false).unwrap(),
            "/rtvirt-hk"
        );
        let s = status(&m.root, &Tree, &jdir).unwrap();
        assert!(
            s.complete && !s.entries.is_empty() && s.entries.iter().all(|e| e.in_effect),
            "{s:#?}"
        );
        // Idempotent: a second setup changes nothing and keeps the first prior values.
        let r2 = setup_in(&m, &full_host(), &jdir, &SetupOptions::default()).unwrap();
        assert!(r2.done.is_empty(), "{:#?}", r2.done);
        let rv = revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        assert!(rv.ok(), "{rv:#?}");
        assert!(rv
            .entries
            .iter()
            .all(|e| e.outcome == RevertOutcome::Restored));
        m.assert_unchanged(&before);
        assert!(rt_sys::journal::Journal::read(&jdir).unwrap().is_none());
    }

    #[test]
    fn refused_write_is_not_permitted_and_setup_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        // As this machine refuses halt_poll_ns.
        let _refusal = m.refuse_writes("sys/module/kvm/parameters/halt_poll_ns");
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        let d = r
            .done
            .iter()
            .find(|d| d.change.item == "halt-poll")
            .unwrap();
        assert_eq!(d.outcome, Outcome::NotPermitted);
        assert!(
            d.detail.as_deref().unwrap().contains("Not permitted here"),
            "{d:?}"
        );
        assert!(
            r.verified(),
            "refused items do not fail verify: {:#?}",
            r.verify_failed
        );
        assert!(r
            .done
            .iter()
            .any(|d| d.change.item == "vcpu-sched" && d.outcome == Outcome::Applied));
        // check shows it as not permitted from the refusal record.
        let mut ctx = Ctx::new(&m.root);
        ctx.refused = load_refused(&jdir).unwrap();
        let p = plan::build("lab", &lab_host(), &ctx).unwrap();
        let c = p.changes.iter().find(|c| c.item == "halt-poll").unwrap();
        assert_eq!(c.status, Status::NotPermitted);
        let j = rt_sys::journal::Journal::read(&jdir).unwrap().unwrap();
        assert!(!j
            .entries
            .iter()
            .any(|e| e.target.to_string().contains("halt_poll_ns")));
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        m.assert_unchanged(&before);
        assert!(load_refused(&jdir).unwrap().is_empty());
    }

    #[test]
    fn unexpected_error_reverts_this_run_and_names_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let e = setup_in(
            &m,
            &lab_host(),
            &jdir,
            &SetupOptions {
                fail_after: Some(4),
                ..Default::default()
            },
        )
        .unwrap_err();
        let TuneError::Aborted(a) = &e else {
            panic!("{e}")
        };
        // The 4 applied changes and the failing one (journalled before it was tried).
        assert_eq!(a.reverted, 5, "{e}");
        assert_eq!(a.failed, 0);
        assert!(e.to_string().starts_with("Setup stopped at "), "{e}");
        m.assert_unchanged(&before);
    }

    #[test]
    fn vanished_vm_and_reused_tid_are_skipped_on_revert() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let jdir = dir.path().join("journal");
        let halt_before = m
            .root
            .read_trim("sys/module/kvm/parameters/halt_poll_ns")
            .unwrap();
        setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        // vCPU 1's thread exits; the main thread's tid is reused by a newer thread.
        std::fs::remove_dir_all(m.root.path(format!("proc/{QEMU_PID}/task/4003"))).unwrap();
        let st = m.root.path(format!("proc/{QEMU_PID}/task/4000/stat"));
        let text = std::fs::read_to_string(&st)
            .unwrap()
            .replace(" 5000 ", " 777777 ");
        std::fs::write(&st, text).unwrap();
        let r = revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        assert!(r.ok());
        let vanished: Vec<String> = r
            .entries
            .iter()
            .filter(|e| e.outcome == RevertOutcome::Vanished)
            .map(|e| e.entry.target.to_string())
            .collect();
        assert!(
            vanished.iter().any(|t| t.contains("CPU 1/TCG")),
            "{vanished:?}"
        );
        assert!(
            vanished.iter().any(|t| t.contains("qemu-system-x86")),
            "{vanished:?}"
        );
        assert_eq!(
            Tree.get_affinity(&m.root, QEMU_PID, 4000)
                .unwrap()
                .to_string(),
            "0",
            "a reused tid is never touched"
        );
        assert_eq!(
            m.root
                .read_trim("sys/module/kvm/parameters/halt_poll_ns")
                .unwrap(),
            halt_before
        );
    }

    #[test]
    fn a_thread_that_exits_between_plan_and_change_is_reported_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let p = plan::build("lab", &lab_host(), &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "vcpu-sched").unwrap();
        std::fs::remove_dir_all(m.root.path(format!("proc/{QEMU_PID}/task/4003"))).unwrap();
        let e = perform(&m.root, &Tree, c.action.as_ref().unwrap()).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn cgroup_v2_partition_for_the_vcpus() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.put("proc/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        m.put(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        m.put("sys/fs/cgroup/cpuset.cpus.isolated", "\n");
        m.put(
            "sys/fs/cgroup/machine.slice/qemu/cgroup.subtree_control",
            "\n",
        );
        m.put("sys/fs/cgroup/machine.slice/qemu/cgroup.threads", "");
        for (tid, ..) in crate::fake::QEMU_THREADS {
            m.put(
                &format!("proc/{QEMU_PID}/task/{tid}/cgroup"),
                "0::/machine.slice/qemu\n",
            );
        }
        let mut h = lab_host();
        h.isolation.cpuset_partition = true;
        let jdir = dir.path().join("journal");
        let p = plan::build("lab", &h, &Ctx::new(&m.root)).unwrap();
        assert!(p.changes.iter().any(|c| c.item == "cpuset" && c.pending()));
        // Without partition support the item does not apply.
        std::fs::remove_file(m.root.path("sys/fs/cgroup/cpuset.cpus.isolated")).unwrap();
        let p = plan::build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "cpuset").unwrap();
        assert_eq!(c.status, Status::NotApplicable, "{c:?}");
        m.put("sys/fs/cgroup/cpuset.cpus.isolated", "\n");
        let before = m.snapshot();
        let r = setup_in(&m, &h, &jdir, &SetupOptions::default()).unwrap();
        assert!(r.verified(), "{:#?}", r.verify_failed);
        let cg = "sys/fs/cgroup/machine.slice/qemu/rtvirt-rt";
        assert_eq!(
            m.root
                .read_trim(format!("{cg}/cpuset.cpus.partition"))
                .unwrap(),
            "isolated"
        );
        assert_eq!(
            m.root.read_trim(format!("{cg}/cgroup.type")).unwrap(),
            "threaded"
        );
        assert_eq!(
            rt_sys::cgroup::thread_cgroup(&m.root, QEMU_PID, 4003, true).unwrap(),
            "/machine.slice/qemu/rtvirt-rt"
        );
        assert_eq!(
            rt_sys::cgroup::thread_cgroup(&m.root, QEMU_PID, 4002, true).unwrap(),
            "/machine.slice/qemu"
        );
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        // cgroupfs undoes `+cpuset` with `-cpuset`; a fake file just keeps what was written.
        let diff = FakeMachine::diff(&before, &m.snapshot());
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(
            diff[0].contains("subtree_control") && diff[0].contains("-cpuset"),
            "{diff:?}"
        );
    }

    /// Two VMs: one partition holds both QEMUs' real-time vCPUs when the QEMUs share a
    /// cgroup; in different cgroups (libvirt's per-domain scopes) none can.
    #[test]
    fn cgroup_v2_partition_for_two_vms_in_one_cgroup_only() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.put("proc/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        m.put("sys/fs/cgroup/cgroup.controllers", "cpuset cpu\n");
        m.put("sys/fs/cgroup/cpuset.cpus.isolated", "\n");
        m.put("sys/fs/cgroup/vms/cgroup.subtree_control", "\n");
        m.put(
            "proc/4100/cmdline",
            "qemu-system-x86_64\0-name\0ecu1,debug-threads=on\0",
        );
        m.thread(4100, 4100, "qemu-system-x86", 1, 0x40_0040, 0, 0, "0-1");
        m.thread(4100, 4102, "CPU 0/KVM", 1, 0x40_0040, 0, 0, "0-1");
        let put_cgroups = |ecu1: &str| {
            for (tid, ..) in crate::fake::QEMU_THREADS {
                m.put(&format!("proc/{QEMU_PID}/task/{tid}/cgroup"), "0::/vms\n");
            }
            for tid in [4100, 4102] {
                m.put(
                    &format!("proc/4100/task/{tid}/cgroup"),
                    &format!("0::{ecu1}\n"),
                );
            }
        };
        let mut h = lab_host();
        h.isolation.cpuset_partition = true;
        let mut ecu1 = h.vms[0].clone();
        ecu1.name = "ecu1".into();
        ecu1.vcpus = vec![profiles::VcpuPin {
            vcpu: 0,
            cpu: 1,
            policy: rt_sys::sched::Policy::Fifo,
            priority: 50,
        }];
        h.vms[0].vcpus.retain(|p| p.cpu != 1);
        h.vms.push(ecu1);
        put_cgroups("/vms");
        let p = plan::build("two", &h, &Ctx::new(&m.root)).unwrap();
        let moves: Vec<&str> = p
            .changes
            .iter()
            .filter(|c| c.item == "cpuset" && c.pending() && c.target.contains("tid"))
            .map(|c| c.target.as_str())
            .collect();
        assert!(
            moves.iter().any(|t| t.contains("(tid 4102)")),
            "ecu1's vCPU goes into the partition: {moves:?}"
        );
        put_cgroups("/other");
        let p = plan::build("two", &h, &Ctx::new(&m.root)).unwrap();
        let c: Vec<_> = p.changes.iter().filter(|c| c.item == "cpuset").collect();
        assert_eq!(c.len(), 1, "{c:#?}");
        assert_eq!(c[0].status, Status::NotApplicable);
        assert_eq!(c[0].current, "QEMUs in the cgroups /other, /vms");
    }

    /// A QEMU in the root cgroup of a 6.1 kernel (no systemd, as on the host lab's outer
    /// host): the root has neither `cpuset.cpus.isolated` nor `cpuset.cpus.partition`,
    /// yet a child of it can be an isolated partition.
    #[test]
    fn cgroup_v2_partition_under_the_root_cgroup_of_a_6_1_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.put("proc/mounts", "none /sys/fs/cgroup cgroup2 rw 0 0\n");
        m.put(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        m.put("sys/fs/cgroup/cgroup.subtree_control", "\n");
        m.put("sys/fs/cgroup/cpuset.cpus.effective", "0-1\n");
        // Everything in the root cgroup: QEMU, another VM's vCPU on CPU 0, kthreadd,
        // and a per-CPU kworker whose affinity nobody may change.
        m.thread(5000, 5000, "CPU 0/KVM", 1, 0x40_0040, 0, 0, "0");
        m.thread(2, 7, "kworker/1:1", 2, 0x0420_8060, 0, 0, "1");
        let tids: Vec<String> = crate::fake::QEMU_THREADS
            .iter()
            .map(|t| t.0)
            .chain([5000, 2, 7])
            .map(|t| t.to_string())
            .collect();
        m.put("sys/fs/cgroup/cgroup.threads", &(tids.join("\n") + "\n"));
        for (tid, ..) in crate::fake::QEMU_THREADS {
            m.put(&format!("proc/{QEMU_PID}/task/{tid}/cgroup"), "0::/\n");
        }
        let mut h = lab_host();
        h.isolation.cpuset_partition = true;
        let p = plan::build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let targets: Vec<&str> = p
            .changes
            .iter()
            .filter(|c| c.item == "cpuset" && c.pending())
            .map(|c| c.target.as_str())
            .collect();
        assert!(
            targets
                .iter()
                .any(|t| t.ends_with("/sys/fs/cgroup/cgroup.subtree_control")),
            "{targets:?}"
        );
        assert!(
            targets
                .iter()
                .any(|t| t.contains("/sys/fs/cgroup/rtvirt-rt")),
            "{targets:?}"
        );
        let jdir = dir.path().join("journal");
        let r = setup_in(&m, &h, &jdir, &SetupOptions::default()).unwrap();
        assert!(r.verified(), "{:#?}", r.verify_failed);
        assert_eq!(
            m.root
                .read_trim("sys/fs/cgroup/rtvirt-rt/cpuset.cpus.partition")
                .unwrap(),
            "isolated"
        );
        // Before the partition is made, the affinity of every thread in the root cgroup
        // is journalled (6.1 resets them), except the per-CPU kworker's.
        let j = rt_sys::journal::Journal::read(&jdir).unwrap().unwrap();
        let mkdir = j
            .entries
            .iter()
            .position(|e| matches!(e.target, Target::Mkdir { .. }))
            .unwrap();
        let before: Vec<(String, &str, &str)> = j.entries[..mkdir]
            .iter()
            .filter_map(|e| match &e.target {
                Target::ThreadAffinity { tid, .. } => {
                    Some((tid.to_string(), e.prior.as_str(), e.applied.as_str()))
                }
                _ => None,
            })
            .collect();
        assert!(before.contains(&("5000".into(), "0", "0")), "{before:?}");
        assert!(before.contains(&("4001".into(), "0-1", "0")), "{before:?}");
        assert!(before.contains(&("4002".into(), "0-1", "0")), "{before:?}");
        assert!(!before.iter().any(|b| b.0 == "7"), "{before:?}");
        m.thread(5000, 5000, "CPU 0/KVM", 1, 0x40_0040, 0, 0, "0-1");
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        assert!(!m.root.exists("sys/fs/cgroup/rtvirt-rt"));
        // What the kernel reset when the partition went away is put back.
        assert_eq!(
            Tree.get_affinity(&m.root, 5000, 5000).unwrap().to_string(),
            "0"
        );
    }

    #[test]
    fn no_vm_running_skips_vm_items() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        std::fs::remove_dir_all(m.root.path(format!("proc/{QEMU_PID}"))).unwrap();
        let p = plan::build("lab", &lab_host(), &Ctx::new(&m.root)).unwrap();
        let vm = p.changes.iter().find(|c| c.item == "vm").unwrap();
        assert_eq!(vm.status, Status::NotApplicable);
        assert!(!p.changes.iter().any(|c| c.item.starts_with("vcpu")));
        assert!(p.vm.is_none());
    }

    /// (target, prior, applied) of the journal entries whose target contains `part`.
    fn journalled(jdir: &Path, part: &str) -> Vec<(String, String, String)> {
        rt_sys::journal::Journal::read(jdir)
            .unwrap()
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.target.to_string().contains(part))
            .map(|e| (e.target.to_string(), e.prior, e.applied))
            .collect()
    }

    #[test]
    fn rt_runtime_of_the_vcpu_cgroups_is_given_parents_first_and_reverted_children_first() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let vcpu1 = m.libvirt_cpu_cgroups();
        // Another group already holds 100000 us of the root's 950000.
        m.put("sys/fs/cgroup/cpu/rt-app/cpu.rt_runtime_us", "100000\n");
        m.put("sys/fs/cgroup/cpu/rt-app/cpu.rt_period_us", "1000000\n");
        let p = plan::build("lab", &lab_host(), &Ctx::new(&m.root)).unwrap();
        let rt: Vec<(&str, &str, bool)> = p
            .changes
            .iter()
            .filter(|c| c.item == "rt-runtime")
            .map(|c| (c.target.as_str(), c.desired.as_str(), c.essential))
            .collect();
        let dom = format!("/sys/fs/cgroup/cpu/machine/{}", crate::fake::LIBVIRT_GROUP);
        assert_eq!(
            rt,
            [
                (
                    "/sys/fs/cgroup/cpu/machine/cpu.rt_runtime_us",
                    "850000",
                    true
                ),
                (&format!("{dom}/cpu.rt_runtime_us")[..], "850000", true),
                (
                    &format!("{dom}/vcpu1/cpu.rt_runtime_us")[..],
                    "850000",
                    true
                ),
            ]
        );
        let pos = |item: &str| p.changes.iter().position(|c| c.item == item).unwrap();
        assert!(
            pos("rt-runtime") < pos("vcpu-sched"),
            "runtime before the policy"
        );
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        assert!(r.met(), "{:#?} {:#?}", r.not_met, r.verify_failed);
        assert_eq!(
            m.root
                .read_trim(format!("{vcpu1}/cpu.rt_runtime_us"))
                .unwrap(),
            "850000"
        );
        let order: Vec<String> = journalled(&jdir, "rt_runtime_us")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(order.len(), 3);
        assert!(order[0].ends_with("machine/cpu.rt_runtime_us"), "{order:?}");
        assert!(order[2].ends_with("vcpu1/cpu.rt_runtime_us"), "{order:?}");
        let rv = revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        let back: Vec<String> = rv
            .entries
            .iter()
            .map(|e| e.entry.target.to_string())
            .filter(|t| t.contains("rt_runtime_us"))
            .collect();
        assert!(
            back[0].ends_with("vcpu1/cpu.rt_runtime_us"),
            "children first: {back:?}"
        );
        assert!(back[2].ends_with("machine/cpu.rt_runtime_us"), "{back:?}");
        let sched = rv
            .entries
            .iter()
            .position(|e| e.entry.target.to_string().starts_with("sched of"))
            .unwrap();
        let vcpu_rt = rv
            .entries
            .iter()
            .position(|e| {
                e.entry
                    .target
                    .to_string()
                    .ends_with("vcpu1/cpu.rt_runtime_us")
            })
            .unwrap();
        assert!(
            sched < vcpu_rt,
            "the vCPU leaves FIFO before its group loses the runtime"
        );
        m.assert_unchanged(&before);
    }

    #[test]
    fn no_rt_runtime_left_is_not_met_and_the_vcpu_stays_other() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.libvirt_cpu_cgroups();
        m.put("sys/fs/cgroup/cpu/rt-app/cpu.rt_runtime_us", "950000\n");
        m.put("sys/fs/cgroup/cpu/rt-app/cpu.rt_period_us", "1000000\n");
        let p = plan::build("lab", &lab_host(), &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "rt-runtime").unwrap();
        assert_eq!(
            (c.status, c.not_met()),
            (Status::NotPermitted, true),
            "{c:?}"
        );
        assert!(c.note.as_deref().unwrap().contains("none is left"), "{c:?}");
        assert!(!p.met());
        assert_eq!(p.summary().not_met, 3, "{:#?}", p.summary());
    }

    #[test]
    fn a_refused_fifo_vcpu_is_not_met_with_the_cause_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.libvirt_cpu_cgroups();
        // The kernel refuses the runtime of libvirt's `machine` group (as without
        // CAP_SYS_ADMIN) and so the FIFO policy of the vCPU.
        let _a = m.refuse_writes("sys/fs/cgroup/cpu/machine/cpu.rt_runtime_us");
        let _b = m.refuse_writes(&format!("proc/{QEMU_PID}/task/4003/stat"));
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        assert!(!r.met());
        assert!(
            r.verified(),
            "refusals are not verify failures: {:#?}",
            r.verify_failed
        );
        let sched = r.not_met.iter().find(|c| c.item == "vcpu-sched").unwrap();
        assert_eq!(sched.status, Status::NotPermitted);
        let cause = sched.note.as_deref().unwrap();
        assert!(
            cause.contains("cpu cgroup /sys/fs/cgroup/cpu/machine has cpu.rt_runtime_us 0"),
            "{cause}"
        );
        assert!(
            sched.fix.as_deref().unwrap().contains("parents first"),
            "{sched:?}"
        );
        assert!(
            r.not_met.iter().any(|c| c.item == "rt-runtime"),
            "{:#?}",
            r.not_met
        );
        assert!(
            !r.not_met.iter().any(|c| c.item == "halt-poll"),
            "optional refusals stay 'not permitted here'"
        );
        let text = crate::render::setup(&r);
        assert!(text.contains("NOT MET: 2 essential item(s)"), "{text}");
        assert!(
            text.contains("    cause: refused by the kernel at the last setup: RT group"),
            "{text}"
        );
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
        drop((_a, _b));
        m.assert_unchanged(&before);
    }

    #[test]
    fn a_vcpu_its_cpuset_keeps_off_its_cpu_is_not_met_and_never_made_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        // libvirt's cpuset for vCPU 1 allows CPU 0 only (its <vcpupin> says 0).
        let g = format!(
            "sys/fs/cgroup/cpuset/machine/{}/vcpu1",
            crate::fake::LIBVIRT_GROUP
        );
        m.put(&format!("{g}/cpuset.cpus"), "0\n");
        m.put(
            &format!("proc/{QEMU_PID}/task/4003/cgroup"),
            &format!(
                "3:cpuset:/machine/{}/vcpu1\n0::/\n",
                crate::fake::LIBVIRT_GROUP
            ),
        );
        let jdir = dir.path().join("journal");
        let r = setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        let aff = r
            .not_met
            .iter()
            .find(|c| c.item == "vcpu-affinity")
            .unwrap();
        assert!(
            aff.note.as_deref().unwrap().contains("allows CPUs 0 only"),
            "{aff:?}"
        );
        assert!(aff.fix.as_deref().unwrap().contains("<vcpupin"), "{aff:?}");
        let sched = r
            .plan
            .changes
            .iter()
            .find(|c| c.item == "vcpu-sched")
            .unwrap();
        assert_eq!(sched.status, Status::NotApplicable, "{sched:?}");
        assert_eq!(
            Tree.get_sched(&m.root, QEMU_PID, 4003).unwrap().to_string(),
            "other:0"
        );
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
    }

    #[test]
    fn a_vcpu_whose_affinity_is_refused_at_setup_is_not_made_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let _r = m.refuse_writes(&format!("proc/{QEMU_PID}/task/4003/status"));
        let jdir = dir.path().join("journal");
        let r = setup_in(&m, &lab_host(), &jdir, &SetupOptions::default()).unwrap();
        let d = r
            .done
            .iter()
            .find(|d| d.change.item == "vcpu-sched")
            .unwrap();
        assert_eq!(d.outcome, Outcome::Skipped, "{d:?}");
        assert_eq!(
            Tree.get_sched(&m.root, QEMU_PID, 4003).unwrap().to_string(),
            "other:0"
        );
        assert!(
            r.not_met.iter().any(|c| c.item == "vcpu-affinity"),
            "{:#?}",
            r.not_met
        );
        assert!(!r.met());
        revert(&m.root, &Tree, &jdir, &RevertOptions::default()).unwrap();
    }
}
