//! Profile -> [`Plan`]: one [`Change`] per knob, thread or boot argument, with the
//! current and desired value, when it can take effect and its status. Building a plan
//! only reads (through a [`SysRoot`] and [`ThreadOps`]), so it is tested on fake trees.
//!
//! The changes come in the order setup applies them: host-wide knobs first, then the
//! cgroup cpusets, then every thread's affinity, then scheduling policies (as libvirt:
//! cpuset, affinity, policy), so a vCPU thread is pinned before it becomes FIFO and the
//! QEMU main loop is on a housekeeping CPU before any vCPU can spin at FIFO.

use std::collections::BTreeSet;

use profiles::Host;
use rt_sys::cgroup::CgroupRef;
use rt_sys::journal::{Entry, Target};
use rt_sys::sched::SchedParams;
use rt_sys::task::Thread;
use rt_sys::threads::{self, ThreadOps};
use rt_sys::{CpuSet, SysRoot};
use serde::Serialize;

use crate::error::TuneError;
use crate::vm::VmThreads;

mod cpuset;
mod daemons;
mod irqs;
mod kernel;
mod knobs;
mod kthreads;
mod ladder;
mod memory;
mod power;
pub mod rtgroup;
mod vm_threads;

/// When a change can take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// At runtime: setup applies it.
    Now,
    /// After a reboot (kernel, boot arguments) or outside this tool's reach.
    NextBoot,
}

/// The state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Already as wanted.
    Ok,
    /// Not as wanted; setup changes it (when `Now`).
    Differs,
    /// Needs a reboot (kernel or boot arguments).
    NeedsReboot,
    /// A module parameter that only takes effect when the module is loaded again
    /// (`rt-host modprobe` prints the modprobe.d file).
    NeedsModuleReload,
    /// As the profile allows, but risky here (said in the note): check still passes.
    Warn,
    /// The kernel refuses the change on this machine.
    NotPermitted,
    /// Does not apply here (knob missing, VM not running, profile leaves it alone).
    NotApplicable,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::NeedsReboot => "needs reboot",
            Status::NeedsModuleReload => "needs module reload",
            Status::Warn => "warning",
            Status::NotPermitted => "not permitted here",
            Status::NotApplicable => "not applicable",
        })
    }
}

/// A thread as the journal identifies it (tid + start time guard against reuse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadRef {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Start time in clock ticks.
    pub start_time: u64,
    /// Thread name.
    pub name: String,
}

impl From<&Thread> for ThreadRef {
    fn from(t: &Thread) -> Self {
        ThreadRef {
            pid: t.pid,
            tid: t.tid,
            start_time: t.start_time,
            name: t.name.clone(),
        }
    }
}

/// What setup does for a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Write `value` to a kernel file; `prior` is the exact text that restores it.
    Write {
        /// Path relative to the root.
        path: String,
        /// Value to write.
        value: String,
        /// Value that restores the current state.
        prior: String,
    },
    /// Set a thread's CPU affinity.
    Affinity {
        /// The thread.
        thread: ThreadRef,
        /// New affinity.
        cpus: CpuSet,
        /// Current affinity.
        prior: CpuSet,
    },
    /// Set a thread's policy and priority.
    Sched {
        /// The thread.
        thread: ThreadRef,
        /// New policy and priority.
        params: SchedParams,
        /// Current policy and priority.
        prior: SchedParams,
    },
    /// Create a cgroup and write its knobs, in order.
    CreateCgroup {
        /// Directory relative to the root.
        path: String,
        /// cgroup2.
        v2: bool,
        /// (file name, value) written after mkdir.
        knobs: Vec<(String, String)>,
    },
    /// Move a thread into a cgroup.
    MoveCgroup {
        /// The thread.
        thread: ThreadRef,
        /// Destination.
        to: CgroupRef,
        /// Current cgroup path inside the hierarchy.
        prior: String,
    },
    /// Stop a daemon (`SIGSTOP`; revert sends `SIGCONT`).
    StopDaemon {
        /// Its process id.
        pid: u32,
        /// Its start time (clock ticks).
        start_time: u64,
        /// Its name.
        name: String,
    },
    /// Set a variable of a daemon's environment file and restart the daemon.
    ConfigLine {
        /// The file relative to the root.
        path: String,
        /// The variable.
        key: String,
        /// The new value.
        value: String,
        /// The value now ([`rt_sys::daemon::ABSENT`] when unset).
        prior: String,
    },
}

impl Action {
    /// The journal target this action changes.
    pub fn target(&self) -> Target {
        let t = |t: &ThreadRef| (t.pid, t.tid, t.start_time, t.name.clone());
        match self {
            Action::Write { path, .. } => Target::File { path: path.clone() },
            Action::Affinity { thread, .. } => {
                let (pid, tid, start_time, name) = t(thread);
                Target::ThreadAffinity {
                    pid,
                    tid,
                    start_time,
                    name,
                }
            }
            Action::Sched { thread, .. } => {
                let (pid, tid, start_time, name) = t(thread);
                Target::ThreadSched {
                    pid,
                    tid,
                    start_time,
                    name,
                }
            }
            Action::CreateCgroup { path, .. } => Target::Mkdir { path: path.clone() },
            Action::StopDaemon {
                pid,
                start_time,
                name,
            } => Target::Process {
                pid: *pid,
                start_time: *start_time,
                name: name.clone(),
            },
            Action::ConfigLine { path, key, .. } => Target::ConfigLine {
                path: path.clone(),
                key: key.clone(),
            },
            Action::MoveCgroup { thread, to, .. } => {
                let (pid, tid, start_time, name) = t(thread);
                Target::CgroupThread {
                    pid,
                    tid,
                    start_time,
                    name,
                    mount: to.mount.clone(),
                    v2: to.v2,
                }
            }
        }
    }

    /// The journal entry written before the action runs.
    pub fn entry(&self) -> Entry {
        let (prior, applied) = match self {
            Action::Write { value, prior, .. } => (prior.clone(), value.clone()),
            Action::Affinity { cpus, prior, .. } => (prior.to_string(), cpus.to_string()),
            Action::Sched { params, prior, .. } => (prior.to_string(), params.to_string()),
            Action::CreateCgroup { .. } => (String::new(), rt_sys::journal::CREATED.into()),
            Action::MoveCgroup { to, prior, .. } => (prior.clone(), to.path.clone()),
            Action::StopDaemon { .. } => (
                rt_sys::daemon::RUNNING.into(),
                rt_sys::daemon::STOPPED.into(),
            ),
            Action::ConfigLine { value, prior, .. } => (prior.clone(), value.clone()),
        };
        Entry {
            target: self.target(),
            prior,
            applied,
        }
    }
}

/// One item of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The item (`halt-poll`, `cpuidle`, `vcpu-affinity`, ...).
    pub item: String,
    /// What it is about, as a user would find it (`/sys/...`, `affinity of "CPU 1/TCG" (tid 7)`).
    pub target: String,
    /// The value now.
    pub current: String,
    /// The value the profile wants.
    pub desired: String,
    /// When it can take effect.
    pub when: When,
    /// Its state.
    pub status: Status,
    /// Why, or what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The fix, when the item is not as wanted and setup cannot make it so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The item carries the real-time claim (a vCPU's affinity and policy, the RT runtime
    /// of its cgroups): refused or not applicable, it is "not met", never "fine".
    pub essential: bool,
    /// What setup does (None for report-only items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl Change {
    pub(crate) fn report(
        item: &str,
        target: impl Into<String>,
        current: impl Into<String>,
        desired: impl Into<String>,
        status: Status,
    ) -> Change {
        Change {
            item: item.into(),
            target: target.into(),
            current: current.into(),
            desired: desired.into(),
            when: if matches!(status, Status::NeedsReboot | Status::NeedsModuleReload) {
                When::NextBoot
            } else {
                When::Now
            },
            status,
            note: None,
            fix: None,
            essential: false,
            action: None,
        }
    }

    pub(crate) fn note(mut self, n: impl Into<String>) -> Change {
        self.note = Some(n.into());
        self
    }

    pub(crate) fn fix(mut self, f: impl Into<String>) -> Change {
        self.fix = Some(f.into());
        self
    }

    pub(crate) fn essential(mut self) -> Change {
        self.essential = true;
        self
    }

    pub(crate) fn act(mut self, a: Action) -> Change {
        self.status = Status::Differs;
        self.action = Some(a);
        self
    }

    /// True when setup would act on it.
    pub fn pending(&self) -> bool {
        self.status == Status::Differs && self.when == When::Now && self.action.is_some()
    }

    /// True when the item is not as wanted (differs, needs a reboot or a module reload).
    pub fn unmet_now(&self) -> bool {
        matches!(
            self.status,
            Status::Differs | Status::NeedsReboot | Status::NeedsModuleReload
        )
    }

    /// True for the items of a running VM (its threads' affinity and policies, their
    /// cgroups and RT runtime, its kvm-pit thread): what `setup --vm-items`, `rt-host watch`
    /// and the libvirt hook apply again when the VM restarts with new threads.
    pub fn vm_item(&self) -> bool {
        const VM_ITEMS: &[&str] = &[
            "vm",
            "emulator",
            "iothread",
            "vcpu-affinity",
            "vcpu-sched",
            "emulator-sched",
            "iothread-sched",
            "rt-runtime",
            "cpuset",
        ];
        VM_ITEMS.contains(&self.item.as_str())
            || (self.item.starts_with("kthread-") && self.target.contains("\"kvm-pit/"))
    }

    /// True for an essential item that cannot be met here (refused, or missing).
    pub fn not_met(&self) -> bool {
        self.essential && matches!(self.status, Status::NotPermitted | Status::NotApplicable)
    }
}

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Ok items.
    pub ok: usize,
    /// Differing items.
    pub differs: usize,
    /// Items needing a reboot.
    pub needs_reboot: usize,
    /// Module parameters needing a module reload.
    pub needs_module_reload: usize,
    /// Items with a warning.
    pub warn: usize,
    /// Items the kernel refuses here.
    pub not_permitted: usize,
    /// Items that do not apply.
    pub not_applicable: usize,
    /// Essential items (among the above) that are refused or missing: not met.
    pub not_met: usize,
}

/// The plan for one profile on one machine.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Profile name.
    pub profile: String,
    /// The VM found, if any (the first one, with several VMs).
    pub vm: Option<VmThreads>,
    /// Every item.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Counts per status.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.status {
                Status::Ok => s.ok += 1,
                Status::Differs => s.differs += 1,
                Status::NeedsReboot => s.needs_reboot += 1,
                Status::NeedsModuleReload => s.needs_module_reload += 1,
                Status::Warn => s.warn += 1,
                Status::NotPermitted => s.not_permitted += 1,
                Status::NotApplicable => s.not_applicable += 1,
            }
            s.not_met += usize::from(c.not_met());
        }
        s
    }

    /// True when everything that can be met is met (exit 0 of `check`): nothing differs or
    /// needs a reboot or module reload, and no essential item is refused or missing.
    pub fn met(&self) -> bool {
        self.changes.iter().all(|c| !c.unmet_now() && !c.not_met())
    }
}

/// What the plan reads the machine with.
pub struct Ctx<'a> {
    /// The tree (`/` or a fake one).
    pub root: &'a SysRoot,
    /// Thread operations fitting the root.
    pub ops: &'a dyn ThreadOps,
    /// `--vm-pid`.
    pub vm_pid: Option<u32>,
    /// Targets the kernel refused at the last setup (shown as not permitted).
    pub refused: BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    /// A context with the thread operations that fit `root`.
    pub fn new(root: &'a SysRoot) -> Ctx<'a> {
        Ctx {
            root,
            ops: threads::for_root(root),
            vm_pid: None,
            refused: BTreeSet::new(),
        }
    }
}

/// Name of the cgroup for the realtime vCPU threads.
pub const CG_RT: &str = "rtvirt-rt";
/// Name of the v1 cgroup for everything else.
pub const CG_HK: &str = "rtvirt-hk";

/// Refuse a host section that the profile rules refuse, on this machine: the checks of
/// [`profiles::validate()`] (no housekeeping CPU, housekeeping and realtime CPUs overlapping,
/// a real-time vCPU off the realtime CPUs or two on one CPU, emulator or I/O threads on a
/// realtime CPU, priorities) and [`profiles::validate_against`] (every CPU online, realtime
/// CPUs not covering the machine, hugepage sizes and nodes). [`build`] runs them itself, so a
/// caller with a hand-made `Host` cannot tune an unsafe one: a FIFO vCPU that spins where
/// QEMU's main loop runs hangs the guest, FIFO on every CPU starves the host.
pub fn check_safe(name: &str, host: &Host, root: &SysRoot) -> Result<(), TuneError> {
    let profile = profiles::Profile {
        name: name.to_string(),
        description: String::new(),
        host: Some(host.clone()),
        guest: None,
        can: None,
        requirements: Vec::new(),
    };
    let errors = match profiles::validate(&profile) {
        Ok(()) => profiles::validate_against(&profile, root).err(),
        Err(e) => Some(e),
    };
    match errors {
        None => Ok(()),
        Some(e) => Err(TuneError::Unsafe(
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// The plan being built: what it reads the machine with, the VMs once found (each with
/// its single-VM host, see [`crate::placement::per_vm_hosts`]), the changes.
pub(crate) struct B<'c, 'a> {
    ctx: &'c Ctx<'a>,
    vms: Vec<FoundVm>,
    out: Vec<Change>,
}

/// A VM of the profile that runs: its single-VM host, the profile's view of it, and its
/// threads.
#[derive(Debug, Clone)]
pub(crate) struct FoundVm {
    host: Host,
    view: profiles::VmView,
    threads: VmThreads,
}

impl<'a> B<'_, 'a> {
    fn root(&self) -> &'a SysRoot {
        self.ctx.root
    }

    /// Add `c`; a change the kernel refused at the last setup becomes not permitted (an
    /// essential one with the cause and the fix).
    fn push(&mut self, mut c: Change) {
        if c.status == Status::Differs && self.ctx.refused.contains(&c.target) {
            c.status = Status::NotPermitted;
            c.note = Some("refused by the kernel at the last setup".into());
            if let (true, Some(a)) = (c.essential, &c.action) {
                let (cause, fix) = rtgroup::diagnose(self.root(), a);
                c.note = Some(format!("refused by the kernel at the last setup: {cause}"));
                c.fix = Some(fix);
            }
        }
        self.out.push(c);
    }

    /// A one-value file: Ok when `current == desired`, else a write. `prior` restores it.
    fn file(&mut self, item: &str, rel: &str, desired: &str, compare: impl Fn(&str) -> String) {
        let target = self.root().display(rel);
        match self.root().read_trim(rel) {
            Ok(cur) => {
                let shown = compare(&cur);
                let c = Change::report(item, target, shown.clone(), desired, Status::Ok);
                if shown == desired {
                    self.push(c);
                } else {
                    self.push(c.act(Action::Write {
                        path: rel.into(),
                        value: desired.into(),
                        prior: shown,
                    }));
                }
            }
            Err(e) if e.is_not_found() => self.push(
                Change::report(item, target, "(absent)", desired, Status::NotApplicable)
                    .note("this kernel has no such knob"),
            ),
            Err(e) => self.push(
                Change::report(item, target, "(unreadable)", desired, Status::NotPermitted)
                    .note(e.to_string()),
            ),
        }
    }
}

/// One stage of a plan: the items of one area, pushed in the order setup applies them.
type Stage = fn(&mut B<'_, '_>, &Host) -> Result<(), TuneError>;

/// The stages, in setup's order: host-wide knobs, then (once the VM is found) the cgroup
/// cpusets, kernel threads, and the VM's threads (affinities first, then policies, as
/// libvirt: cpuset, affinity, policy). A new area is one more function here.
const STAGES: &[(&str, Stage)] = &[
    ("kernel", kernel::items),
    ("sysctl", knobs::sysctls),
    ("halt-poll", knobs::halt_poll),
    ("kvm-param", knobs::kvm_params),
    ("cpuidle", knobs::cpuidle),
    ("power", power::items),
    ("irq", irqs::steering),
    ("irqbalance", daemons::irqbalance),
    ("ksmtuned", daemons::ksmtuned),
    ("workqueue", irqs::workqueues),
    ("hugepages", memory::hugepages),
    ("numa", memory::numa),
    ("vm", vm_threads::find),
    ("cpuset", cpuset::items),
    ("kthread", kthreads::items),
    ("ladder", ladder::items),
    ("vm threads", vm_threads::items),
];

/// Build the plan of `host` (profile `name`) on the machine of `ctx`.
pub fn build(name: &str, host: &Host, ctx: &Ctx<'_>) -> Result<Plan, TuneError> {
    check_safe(name, host, ctx.root)?;
    crate::placement::check_shared(&crate::placement::per_vm_hosts(host))?;
    let mut b = B {
        ctx,
        vms: Vec::new(),
        out: Vec::new(),
    };
    for (_, stage) in STAGES {
        stage(&mut b, host)?;
    }
    Ok(Plan {
        profile: name.into(),
        vm: b.vms.into_iter().next().map(|v| v.threads),
        changes: b.out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::sched::Policy;

    #[test]
    fn unsafe_profiles_are_refused_with_the_profile_rules_and_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = crate::fake::lab_host();
        check_safe("lab", &h, &m.root).unwrap();
        let refused = |h: &Host| match build("lab", h, &Ctx::new(&m.root)) {
            Err(TuneError::Unsafe(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        // A FIFO vCPU on the housekeeping CPU (where QEMU's main loop runs).
        h.vms[0].vcpus.push(profiles::VcpuPin {
            vcpu: 0,
            cpu: 0,
            policy: Policy::Fifo,
            priority: 1,
        });
        let e = refused(&h);
        assert!(
            e.starts_with(
                "host.vms[0].vcpus[1].cpu: 0 is not a realtime CPU (realtime_cpus \"1\")"
            ),
            "{e}"
        );
        h.vms[0].vcpus.pop();
        h.housekeeping_cpus = CpuSet::new();
        assert!(refused(&h).starts_with("host.housekeeping_cpus: \"\" is empty"));
        // Valid on its own, but this 2-CPU machine has no CPUs 2-3.
        let mut h = crate::fake::lab_host();
        h.realtime_cpus = CpuSet::parse("1-3").unwrap();
        assert_eq!(
            refused(&h),
            "host.realtime_cpus: CPUs 2-3 are not online on this machine (online: 0-1)"
        );
    }
}
