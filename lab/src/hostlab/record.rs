//! `host-lab.json`: for every value rt-host touched in the outer host (each entry of its
//! journal), the value before setup, while tuned and after revert; and for the vCPU
//! threads of each of the profile's VMs (and every thread of the second VM, which rt-host
//! must leave alone) their policy, priority and affinity at the same three moments.
//!
//! Every value is read from a [`super::snapshot`] of the outer host by the same code
//! that reads the live system: rt-host's own `status` ([`rt_host::apply::status`] on the
//! snapshot's tree, with a copy of the journal), and [`crate::sched::samples_in`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rt_sys::SysRoot;
use serde::{Deserialize, Serialize};

use crate::sched::{samples_in, VcpuSample};
pub use crate::summary::{HostLabSummary, InnerVmFacts, OuterHost};
use rt_sys::journal::Target;

/// What `rt-host status` shows for a value that does not exist (a thread that exited).
pub const GONE: &str = "(gone)";

/// The file name in the flow's output.
pub const FILE: &str = "host-lab.json";

/// Its format version (2: the vCPU threads per VM, `vms`).
pub const FORMAT: u32 = 2;

/// One thing at the three moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments<T> {
    /// Before `rt-host setup`.
    pub before: T,
    /// Right after `rt-host setup`.
    pub tuned: T,
    /// After `rt-host revert`.
    pub after: T,
}

impl<T> Moments<T> {
    /// Apply `f` to each moment.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Moments<U> {
        Moments {
            before: f(&self.before),
            tuned: f(&self.tuned),
            after: f(&self.after),
        }
    }
}

/// One journalled value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TouchedValue {
    /// What (`/proc/sys/kernel/sched_rt_runtime_us`, `affinity of "CPU 0/KVM" (tid 152)`).
    pub target: String,
    /// The prior value rt-host journalled.
    pub journal_prior: String,
    /// The value rt-host set.
    pub applied: String,
    /// The value at each moment, as `rt-host status` reads it (`(gone)` when absent).
    pub value: Moments<String>,
    /// True when the value after revert is the value before setup.
    pub restored: bool,
    /// True for a thread that was not there at one end: it started after the snapshot
    /// before setup, or exited before the one after revert (a QEMU worker, the setup's
    /// own shell). There is nothing to compare.
    pub absent: bool,
}

/// One thread at the three moments (None: it did not exist then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadHistory {
    /// Thread name.
    pub name: String,
    /// Thread id.
    pub tid: u32,
    /// Its scheduling state at each moment.
    pub state: Moments<Option<VcpuSample>>,
}

impl ThreadHistory {
    /// True when the state after revert equals the state before setup.
    pub fn restored(&self) -> bool {
        self.state.before == self.state.after
    }

    /// True when the thread was not there at one end (started later, or exited).
    pub fn absent(&self) -> bool {
        self.state.before.is_none() || self.state.after.is_none()
    }

    /// True when the state never changed.
    pub fn untouched(&self) -> bool {
        self.restored() && self.state.before == self.state.tuned
    }
}

/// One of the profile's VMs: its vCPU threads at the three moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmHistory {
    /// Its name in the profile.
    pub name: String,
    /// Its QEMU pid in the outer host.
    pub pid: u32,
    /// Its vCPU threads.
    pub vcpus: Vec<ThreadHistory>,
}

/// `host-lab.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLabRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// Profile name.
    pub profile: String,
    /// The outer host.
    pub outer: OuterHost,
    /// Every journalled value.
    pub values: Vec<TouchedValue>,
    /// The profile's VMs, in profile order, with their vCPU threads.
    pub vms: Vec<VmHistory>,
    /// Every thread of the second VM.
    pub other_vm: Vec<ThreadHistory>,
}

impl HostLabRecord {
    /// The values not restored, as `target: before -> after` (threads that were not
    /// there at one end are not among them: see [`HostLabRecord::absent`]).
    pub fn not_restored(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|v| !v.restored && !v.absent)
            .map(|v| format!("{}: {} -> {}", v.target, v.value.before, v.value.after))
            .chain(
                self.vms
                    .iter()
                    .flat_map(|v| &v.vcpus)
                    .chain(&self.other_vm)
                    .filter(|t| !t.restored() && !t.absent())
                    .map(|t| format!("thread {:?} (tid {}) not as before", t.name, t.tid)),
            )
            .collect()
    }

    /// The journalled threads that were not there at one end, with their values.
    pub fn absent(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|v| v.absent)
            .map(|v| format!("{}: {} -> {}", v.target, v.value.before, v.value.after))
            .collect()
    }
}

/// Every journalled value at the three moments: rt-host's `status` with the journal in
/// `journal_dir`, on each snapshot's tree.
pub fn values(journal_dir: &Path, snaps: &Moments<PathBuf>) -> Result<Vec<TouchedValue>> {
    let status = |dir: &PathBuf| -> Result<rt_host::apply::StatusReport> {
        let root = SysRoot::new(dir);
        rt_host::apply::status(&root, rt_sys::threads::for_root(&root), journal_dir)
            .with_context(|| format!("rt-host status on the snapshot {}", dir.display()))
    };
    let (before, tuned, after) = (
        status(&snaps.before)?,
        status(&snaps.tuned)?,
        status(&snaps.after)?,
    );
    Ok(before
        .entries
        .iter()
        .zip(&tuned.entries)
        .zip(&after.entries)
        .map(|((b, t), a)| TouchedValue {
            target: b.entry.target.to_string(),
            journal_prior: b.entry.prior.clone(),
            applied: b.entry.applied.clone(),
            restored: a.now == b.now,
            absent: (a.now == GONE || b.now == GONE)
                && !matches!(b.entry.target, Target::File { .. } | Target::Mkdir { .. }),
            value: Moments {
                before: b.now.clone(),
                tuned: t.now.clone(),
                after: a.now.clone(),
            },
        })
        .collect())
}

/// The threads of `pid` whose names pass `keep`, at the three moments (joined by tid).
pub fn threads(
    snaps: &Moments<PathBuf>,
    pid: u32,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<Vec<ThreadHistory>> {
    let at = |dir: &PathBuf| -> Result<BTreeMap<u32, VcpuSample>> {
        let root = SysRoot::new(dir);
        // A process gone at this moment (the VM shut down) has no threads then.
        if !rt_sys::task::pids(&root).is_ok_and(|p| p.contains(&pid)) {
            return Ok(BTreeMap::new());
        }
        Ok(samples_in(&root, pid, keep)?
            .into_iter()
            .map(|s| (s.tid, s))
            .collect())
    };
    let m = Moments {
        before: at(&snaps.before)?,
        tuned: at(&snaps.tuned)?,
        after: at(&snaps.after)?,
    };
    let mut tids: Vec<u32> = m
        .before
        .keys()
        .chain(m.tuned.keys())
        .chain(m.after.keys())
        .copied()
        .collect();
    tids.sort_unstable();
    tids.dedup();
    let mut out: Vec<ThreadHistory> = tids
        .into_iter()
        .map(|tid| {
            let state = m.map(|x| x.get(&tid).cloned());
            let name = [&state.before, &state.tuned, &state.after]
                .into_iter()
                .flatten()
                .map(|s| s.name.clone())
                .next()
                .unwrap_or_default();
            ThreadHistory { name, tid, state }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.tid.cmp(&b.tid)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::journal::{Entry, Journal};

    /// A snapshot tree with one knob and one vCPU thread.
    fn tree(dir: &Path, halt_poll: &str, policy: u32, prio: u32, cpus: &str) {
        let root = SysRoot::new(dir);
        let put = |rel: &str, text: &str| {
            let p = root.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            "sys/module/kvm/parameters/halt_poll_ns",
            &format!("{halt_poll}\n"),
        );
        let tail = (4..=52)
            .map(|n| match n {
                22 => "900".to_string(),
                40 => prio.to_string(),
                41 => policy.to_string(),
                _ => "0".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        put(
            "proc/141/task/152/stat",
            &format!("152 (CPU 0/KVM) S {tail}\n"),
        );
        put(
            "proc/141/task/152/status",
            &format!("Name:\tCPU 0/KVM\nTgid:\t141\nCpus_allowed_list:\t{cpus}\n"),
        );
    }

    #[test]
    fn every_journalled_value_at_three_moments() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Moments {
            before: dir.path().join("before"),
            tuned: dir.path().join("tuned"),
            after: dir.path().join("after"),
        };
        tree(&snaps.before, "200000", 0, 0, "0-3");
        tree(&snaps.tuned, "400000", 1, 50, "1");
        // After revert: halt polling back, the vCPU still pinned (a revert bug).
        tree(&snaps.after, "200000", 0, 0, "1");
        let jdir = dir.path().join("journal");
        let mut j = Journal::open_locked(&jdir).unwrap();
        j.record(Entry {
            target: Target::File {
                path: "sys/module/kvm/parameters/halt_poll_ns".into(),
            },
            prior: "200000".into(),
            applied: "400000".into(),
        })
        .unwrap();
        j.record(Entry {
            target: Target::ThreadAffinity {
                pid: 141,
                tid: 152,
                start_time: 900,
                name: "CPU 0/KVM".into(),
            },
            prior: "0-3".into(),
            applied: "1".into(),
        })
        .unwrap();
        drop(j);
        let v = values(&jdir, &snaps).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].target, "/sys/module/kvm/parameters/halt_poll_ns");
        assert_eq!(
            v[0].value,
            Moments {
                before: "200000".into(),
                tuned: "400000".into(),
                after: "200000".into()
            }
        );
        assert!(v[0].restored);
        assert_eq!(v[1].value.after, "1");
        assert!(!v[1].restored);
        let rec = HostLabRecord {
            format: FORMAT,
            profile: "hil".into(),
            outer: OuterHost::default(),
            values: v,
            vms: vec![VmHistory {
                name: "ecu0".into(),
                pid: 141,
                vcpus: threads(&snaps, 141, |n| n.starts_with("CPU ")).unwrap(),
            }],
            other_vm: Vec::new(),
        };
        let t = &rec.vms[0].vcpus[0];
        assert_eq!(t.name, "CPU 0/KVM");
        let tuned = t.state.tuned.as_ref().unwrap();
        assert_eq!((tuned.policy.as_str(), tuned.priority), ("fifo", 50));
        assert!(!t.restored() && !t.untouched());
        assert_eq!(
            rec.not_restored(),
            [
                "affinity of \"CPU 0/KVM\" (tid 152): 0-3 -> 1",
                "thread \"CPU 0/KVM\" (tid 152) not as before"
            ]
        );
    }

    #[test]
    fn a_vm_gone_at_a_moment_has_no_threads_then() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Moments {
            before: dir.path().join("b"),
            tuned: dir.path().join("t"),
            after: dir.path().join("a"),
        };
        tree(&snaps.before, "0", 0, 0, "0");
        tree(&snaps.tuned, "0", 0, 0, "0");
        std::fs::create_dir_all(&snaps.after).unwrap();
        let t = threads(&snaps, 141, |_| true).unwrap();
        assert_eq!(t.len(), 1);
        assert!(t[0].state.after.is_none());
        assert!(!t[0].restored() && t[0].absent());
    }
}
