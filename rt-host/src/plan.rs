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
use rt_sys::cgroup::{self, CgroupRef};
use rt_sys::journal::{Entry, Target};
use rt_sys::sched::SchedParams;
use rt_sys::task::Thread;
use rt_sys::threads::{self, ThreadOps};
use rt_sys::{cpuidle, hugepages, irq, kernel, sysctl, CpuSet, SysError, SysRoot};
use serde::Serialize;

use crate::bootargs;
use crate::error::{sys, TuneError};
use crate::vm::{self, VmThreads};

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
            when: if status == Status::NeedsReboot {
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
    /// The VM found, if any.
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
                Status::NotPermitted => s.not_permitted += 1,
                Status::NotApplicable => s.not_applicable += 1,
            }
            s.not_met += usize::from(c.not_met());
        }
        s
    }

    /// True when everything that can be met is met (exit 0 of `check`): nothing differs or
    /// needs a reboot, and no essential item is refused or missing.
    pub fn met(&self) -> bool {
        self.changes
            .iter()
            .all(|c| !matches!(c.status, Status::Differs | Status::NeedsReboot) && !c.not_met())
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

/// Refuse profiles that would make every CPU FIFO or starve the QEMU main loop.
pub fn check_safe(host: &Host, online: &CpuSet) -> Result<(), TuneError> {
    let hk = &host.housekeeping_cpus;
    if hk.is_empty() {
        return Err(TuneError::Unsafe("host.housekeeping_cpus is empty: keep at least one CPU for the OS and QEMU's main loop".into()));
    }
    let overlap = hk.intersection(&host.realtime_cpus);
    if !overlap.is_empty() {
        return Err(TuneError::Unsafe(format!(
            "CPUs {overlap} are both housekeeping and realtime"
        )));
    }
    if !online.is_empty() && !hk.intersection(online).len().eq(&hk.len()) {
        return Err(TuneError::Unsafe(format!(
            "housekeeping CPUs {hk} are not all online (online: {online})"
        )));
    }
    let fifo: CpuSet = CpuSet::from_cpus(
        host.vcpus
            .iter()
            .filter(|v| v.policy.is_realtime())
            .map(|v| v.cpu),
    );
    if !online.is_empty() && online.is_subset(&fifo) {
        return Err(TuneError::Unsafe(format!(
            "FIFO vCPUs on every online CPU ({online}) would starve the host"
        )));
    }
    let bad = fifo.intersection(hk);
    if !bad.is_empty() {
        return Err(TuneError::Unsafe(format!(
            "a FIFO vCPU on housekeeping CPU {bad} would starve QEMU's main loop"
        )));
    }
    for (name, set) in [
        ("emulator_cpus", &host.emulator_cpus),
        ("iothread_cpus", &host.iothread_cpus),
    ] {
        if let Some(s) = set {
            let bad = s.intersection(&fifo);
            if !bad.is_empty() {
                return Err(TuneError::Unsafe(format!(
                    "host.{name} {s} shares CPU {bad} with a FIFO vCPU"
                )));
            }
        }
    }
    for v in &host.vcpus {
        if !online.is_empty() && !online.contains(v.cpu) {
            return Err(TuneError::Unsafe(format!(
                "vCPU {} is pinned to CPU {}, which is not online ({online})",
                v.vcpu, v.cpu
            )));
        }
        if v.policy.is_realtime() && !(1..=99).contains(&v.priority) {
            return Err(TuneError::Unsafe(format!(
                "vCPU {} priority {} is not 1..=99",
                v.vcpu, v.priority
            )));
        }
    }
    Ok(())
}

struct B<'c, 'a> {
    ctx: &'c Ctx<'a>,
    out: Vec<Change>,
}

impl<'a> B<'_, 'a> {
    fn root(&self) -> &'a SysRoot {
        self.ctx.root
    }

    fn push(&mut self, mut c: Change) {
        if c.status == Status::Differs && self.ctx.refused.contains(&c.target) {
            c.status = Status::NotPermitted;
            c.note = Some("refused by the kernel at the last setup".into());
            if let (true, Some(a)) = (c.essential, &c.action) {
                let (cause, fix) = crate::rtgroup::diagnose(self.root(), a);
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

fn read_cpus(root: &SysRoot, rel: &str) -> Result<CpuSet, SysError> {
    let t = root.read_trim(rel)?;
    CpuSet::parse(&t).map_err(|e| SysError::Parse {
        what: root.display(rel),
        detail: e.to_string(),
    })
}

/// Build the plan of `host` (profile `name`) on the machine of `ctx`.
pub fn build(name: &str, host: &Host, ctx: &Ctx<'_>) -> Result<Plan, TuneError> {
    let root = ctx.root;
    let online =
        read_cpus(root, "sys/devices/system/cpu/online").map_err(sys("Reading the online CPUs"))?;
    check_safe(host, &online)?;
    let facts = kernel::facts(root).map_err(sys("Reading kernel facts"))?;
    let mut b = B {
        ctx,
        out: Vec::new(),
    };
    let hk = host.housekeeping_cpus.clone();

    // Kernel.
    let rt_now = if facts.preempt_rt {
        "PREEMPT_RT"
    } else {
        "not PREEMPT_RT"
    };
    let c = Change::report(
        "kernel",
        format!("kernel {}", facts.release),
        rt_now,
        "PREEMPT_RT",
        Status::Ok,
    );
    b.push(match (host.kernel.require_preempt_rt, facts.preempt_rt) {
        (_, true) => c,
        (true, false) => Change {
            status: Status::NeedsReboot,
            when: When::NextBoot,
            ..c
        }
        .note("install and boot a PREEMPT_RT kernel (e.g. Debian linux-image-rt-amd64)"),
        (false, false) => Change {
            status: Status::NotApplicable,
            ..c
        }
        .note("the profile does not require PREEMPT_RT (host.kernel.require_preempt_rt)"),
    });
    // Nested virtualization.
    let nested = facts.virtualization != kernel::Virtualization::None;
    let virt = format!("{:?}", facts.virtualization).to_lowercase();
    if nested {
        b.push(Change {
            when: When::NextBoot,
            ..Change::report("nested-virtualization", "hypervisor", format!("this host is itself a {virt} guest: its VMs are nested"), "bare-metal host", Status::Differs)
        }.note("nested virtualization multiplies VM-exit costs: a published case saw a CI build go from 23 to 89 minutes nested, and back on bare-metal KVM; latency results here are not real-time evidence"));
    } else {
        b.push(Change::report(
            "nested-virtualization",
            "hypervisor",
            "bare metal",
            "bare-metal host",
            Status::Ok,
        ));
    }
    // Boot arguments.
    for a in bootargs::boot_args(host) {
        let have = kernel::cmdline_value(&facts.cmdline, &a.key);
        let cur = match have {
            Some("") => a.key.clone(),
            Some(v) => format!("{}={v}", a.key),
            None => "(absent)".into(),
        };
        let st = if bootargs::satisfied(&facts.cmdline, &a) {
            Status::Ok
        } else {
            Status::NeedsReboot
        };
        b.push(
            Change::report(
                "boot-arg",
                format!("/proc/cmdline {}", a.key),
                cur,
                a.to_string(),
                st,
            )
            .note(a.why.clone()),
        );
    }

    // Sysctls.
    let s = &host.sysctl;
    let ident = |v: &str| v.to_string();
    if s.realtime_virtual_host {
        b.file("sysctl", "proc/sys/kernel/timer_migration", "0", ident);
        b.file("sysctl", "proc/sys/kernel/numa_balancing", "0", ident);
        b.file("sysctl", "proc/sys/vm/stat_interval", "10", ident);
        b.file("thp", sysctl::THP_ENABLED, "never", |v| {
            sysctl::selected(v)
                .map(str::to_string)
                .unwrap_or_else(|_| v.to_string())
        });
        b.file("ksm", sysctl::KSM_RUN, "0", ident);
    }
    let rt_rel = "proc/sys/kernel/sched_rt_runtime_us";
    if s.rt_runtime_unlimited {
        b.file("sysctl", rt_rel, "-1", ident);
    } else {
        let cur = root.read_trim(rt_rel).unwrap_or_else(|_| "(absent)".into());
        b.push(
            Change::report("sysctl", root.display(rt_rel), cur.clone(), cur, Status::Ok)
                .note("RT throttling kept (host.sysctl.rt_runtime_unlimited is false)"),
        );
    }
    for (k, v) in &s.extra {
        let rel = sysctl::path_of(k).map_err(sys("host.sysctl.extra"))?;
        b.file("sysctl", &rel, v, ident);
    }

    // KVM halt polling.
    if let Some(ns) = host.kvm.halt_poll_ns {
        let rel = "sys/module/kvm/parameters/halt_poll_ns";
        if root.exists("sys/module/kvm") {
            b.file("halt-poll", rel, &ns.to_string(), ident);
        } else {
            b.push(
                Change::report(
                    "halt-poll",
                    root.display(rel),
                    "(kvm not loaded)",
                    ns.to_string(),
                    Status::NotApplicable,
                )
                .note("the kvm module is not loaded"),
            );
        }
    }

    // C-states on the realtime CPUs.
    if let Some(max) = host.idle.max_exit_latency_us {
        for cpu in host.realtime_cpus.iter() {
            let states = cpuidle::states(root, cpu)
                .map_err(sys(format!("Reading cpuidle states of CPU {cpu}")))?;
            if states.is_empty() {
                b.push(Change::report(
                    "cpuidle",
                    format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle"),
                    "(no cpuidle driver)",
                    format!("states over {max} us disabled"),
                    Status::NotApplicable,
                ));
            }
            for st in states {
                if st.latency_us <= u64::from(max) {
                    continue;
                }
                let rel = st.disable_path();
                let c = Change::report(
                    "cpuidle",
                    root.display(&rel),
                    if st.disabled { "1" } else { "0" },
                    "1",
                    Status::Ok,
                )
                .note(format!(
                    "CPU {cpu} state{} {:?}: exit latency {} us > {max} us",
                    st.index, st.name, st.latency_us
                ));
                if st.disabled {
                    b.push(c);
                } else {
                    b.push(c.act(Action::Write {
                        path: rel,
                        value: "1".into(),
                        prior: "0".into(),
                    }));
                }
            }
        }
    }

    // IRQ steering.
    if host.irqs.skip {
        b.push(
            Change::report(
                "irq",
                "/proc/irq",
                "(left alone)",
                "(left alone)",
                Status::NotApplicable,
            )
            .note("host.irqs.skip"),
        );
    } else if root.exists("proc/irq") {
        let to = host.irqs.steer_to.clone().unwrap_or_else(|| hk.clone());
        let names = root
            .read("proc/interrupts")
            .ok()
            .and_then(|t| irq::parse_interrupts(&t).ok())
            .unwrap_or_default();
        let mut rels = vec![(irq::DEFAULT_AFFINITY.to_string(), "new IRQs".to_string())];
        for n in irq::irqs(root).map_err(sys("Listing /proc/irq"))? {
            let dev = names
                .iter()
                .find(|l| l.irq == n)
                .map(|l| l.device.clone())
                .unwrap_or_default();
            let dev = if dev.is_empty() {
                "no device".to_string()
            } else {
                dev
            };
            rels.push((irq::affinity_path(n), dev));
        }
        for (rel, label) in rels {
            let (raw, set) = match irq::read_mask(root, &rel) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(sys("Reading IRQ affinity")(e)),
            };
            let c = Change::report(
                "irq",
                format!("{} ({label})", root.display(&rel)),
                set.to_string(),
                to.to_string(),
                Status::Ok,
            );
            if set.is_subset(&to) && !set.is_empty() {
                b.push(c);
            } else {
                b.push(c.act(Action::Write {
                    path: rel,
                    value: to.to_mask(),
                    prior: raw,
                }));
            }
        }
    }

    // Unbound workqueues.
    if host.isolation.workqueues {
        let rel = "sys/devices/virtual/workqueue/cpumask";
        match irq::read_mask(root, rel) {
            Ok((raw, set)) => {
                let c = Change::report(
                    "workqueue",
                    root.display(rel),
                    set.to_string(),
                    hk.to_string(),
                    Status::Ok,
                );
                b.push(if set == hk {
                    c
                } else {
                    c.act(Action::Write {
                        path: rel.into(),
                        value: hk.to_mask(),
                        prior: raw,
                    })
                });
            }
            Err(e) if e.is_not_found() => b.push(Change::report(
                "workqueue",
                root.display(rel),
                "(absent)",
                hk.to_string(),
                Status::NotApplicable,
            )),
            Err(e) => return Err(sys("Reading the workqueue cpumask")(e)),
        }
    }

    // Hugepages and NUMA.
    hugepage_items(&mut b, host)?;

    // The VM.
    let found = match &host.vm {
        Some(v) => vm::find(root, v, ctx.vm_pid)?,
        None if ctx.vm_pid.is_some() => vm::find(root, &profiles::Vm::default(), ctx.vm_pid)?,
        None => None,
    };
    if host.vm.is_some() && found.is_none() {
        let how = host.vm.as_ref().map(vm::describe).unwrap_or_default();
        b.push(
            Change::report("vm", how, "not running", "running", Status::NotApplicable)
                .note("VM items are skipped until the VM runs (setup after the guest has booted)"),
        );
    }

    // Isolation: cgroup cpusets, then movable kernel threads.
    if host.isolation.cpuset_partition {
        cgroup_items(&mut b, host, found.as_ref())?;
    }
    if host.isolation.kthreads {
        kthread_items(&mut b, host)?;
    }

    if let Some(v) = &found {
        vm_items(&mut b, host, v)?;
    }
    Ok(Plan {
        profile: name.into(),
        vm: found,
        changes: b.out,
    })
}

fn hugepage_items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let mem = host.vm.as_ref().and_then(|v| v.memory_mib);
    let info = hugepages::meminfo(root).ok();
    let shown = info
        .map(|m| {
            format!(
                "HugePages_Total {} Free {} ({} kB pages)",
                m.total, m.free, m.size_kib
            )
        })
        .unwrap_or_else(|| "(no hugepage info)".into());
    match &host.hugepages {
        None => b.push(
            Change::report(
                "hugepages",
                "/proc/meminfo",
                shown,
                "(none asked)",
                Status::NotApplicable,
            )
            .note("the profile reserves no hugepages (host.hugepages)"),
        ),
        Some(h) => {
            let rel = hugepages::nr_path(h.size_kib, h.node);
            let want = h.count.to_string();
            let mut notes = Vec::new();
            if let Some(m) = mem {
                let have_mib = h.count.saturating_mul(h.size_kib) / 1024;
                if have_mib < m {
                    notes.push(format!(
                        "{} x {} kB = {have_mib} MiB is less than the VM's {m} MiB",
                        h.count, h.size_kib
                    ));
                }
            }
            if h.size_kib >= 1_048_576 {
                notes.push("1 GB pages are very sensitive to fragmentation: try 2 MB pages first, or reserve 1 GB pages at boot (hugepagesz=1G hugepages=N)".into());
            }
            match root.read_trim(&rel) {
                Ok(cur) => {
                    let n: u64 = cur.parse().unwrap_or(0);
                    let free = root
                        .read_trim(hugepages::free_path(h.size_kib, h.node))
                        .unwrap_or_default();
                    notes.push(format!("free now: {free}"));
                    let c = Change::report(
                        "hugepages",
                        root.display(&rel),
                        cur.clone(),
                        format!(">= {want}"),
                        Status::Ok,
                    )
                    .note(notes.join("; "));
                    b.push(if n >= h.count {
                        c
                    } else {
                        c.act(Action::Write {
                            path: rel,
                            value: want,
                            prior: cur,
                        })
                    });
                }
                Err(e) if e.is_not_found() => {
                    notes.push(format!(
                        "this kernel has no {} kB pages{}",
                        h.size_kib,
                        h.node.map(|n| format!(" on node {n}")).unwrap_or_default()
                    ));
                    b.push(
                        Change::report(
                            "hugepages",
                            root.display(&rel),
                            "(absent)",
                            want,
                            Status::NotApplicable,
                        )
                        .note(notes.join("; ")),
                    );
                }
                Err(e) => return Err(sys("Reading hugepages")(e)),
            }
        }
    }
    // NUMA: the vCPUs (and their memory) on one node.
    let nodes = hugepages::nodes(root).map_err(sys("Reading NUMA nodes"))?;
    let cpus = CpuSet::from_cpus(host.vcpus.iter().map(|v| v.cpu));
    if nodes.len() <= 1 || cpus.is_empty() {
        b.push(Change::report(
            "numa",
            "/sys/devices/system/node",
            format!("{} node(s)", nodes.len().max(1)),
            "vCPUs and memory on one node",
            Status::Ok,
        ));
    } else {
        let home = nodes
            .iter()
            .find(|(_, c)| cpus.is_subset(c))
            .map(|(n, _)| *n);
        let want_node = host.hugepages.as_ref().and_then(|h| h.node);
        let (cur, ok) = match (home, want_node) {
            (Some(n), Some(w)) => (format!("vCPUs on node {n}, hugepages on node {w}"), n == w),
            (Some(n), None) => (format!("vCPUs on node {n}"), true),
            (None, _) => (format!("vCPU CPUs {cpus} span nodes"), false),
        };
        let c = Change::report(
            "numa",
            "/sys/devices/system/node",
            cur,
            "vCPUs and memory on one node",
            if ok { Status::Ok } else { Status::Differs },
        );
        b.push(if ok {
            c
        } else {
            Change {
                when: When::NextBoot,
                ..c
            }
            .note("change host.vcpus / host.hugepages.node in the profile")
        });
    }
    Ok(())
}

fn thread_cg(b: &B<'_, '_>, t: &Thread, v2: bool) -> Option<String> {
    cgroup::thread_cgroup(b.root(), t.pid, t.tid, v2).ok()
}

fn cgroup_items(b: &mut B<'_, '_>, host: &Host, vm: Option<&VmThreads>) -> Result<(), TuneError> {
    let root = b.root().clone();
    let layout = cgroup::layout(&root).map_err(sys("Reading /proc/mounts"))?;
    let rt = host.realtime_cpus.to_string();
    let hk = host.housekeeping_cpus.to_string();
    let vcpu_threads: Vec<&Thread> = match vm {
        Some(v) => host
            .vcpus
            .iter()
            .filter_map(|p| v.vcpus.get(&p.vcpu))
            .collect(),
        None => Vec::new(),
    };
    if let (true, Some(mount)) = (layout.v2_has_cpuset, layout.v2.clone()) {
        // cgroup v2: a threaded child of QEMU's cgroup, made an isolated partition, holds
        // the vCPU threads; QEMU's other threads stay where they are.
        let Some(first) = vcpu_threads.first() else {
            b.push(
                Change::report(
                    "cpuset",
                    root.display(&mount),
                    "(no vCPU threads)",
                    "isolated partition",
                    Status::NotApplicable,
                )
                .note("cgroup v2 isolation needs the running VM"),
            );
            return Ok(());
        };
        let parent = thread_cg(
            b,
            &Thread {
                tid: first.pid,
                ..(*first).clone()
            },
            true,
        )
        .unwrap_or_else(|| "/".into());
        let pref = CgroupRef {
            mount: mount.clone(),
            path: parent.clone(),
            v2: true,
        };
        // Partitions: cpuset.cpus.partition in non-root cpusets (5.11+ for "isolated");
        // the root shows cpuset.cpus.isolated from 6.10 on.
        let has_partition = root.exists(format!("{mount}/cpuset.cpus.isolated"))
            || root.exists(pref.file("cpuset.cpus.partition"));
        if !has_partition {
            b.push(
                Change::report(
                    "cpuset",
                    root.display(pref.dir()),
                    "(no cpuset.cpus.partition)",
                    "isolated partition",
                    Status::NotApplicable,
                )
                .note("this kernel's cgroup v2 cpuset has no partitions"),
            );
            return Ok(());
        }
        let sc = pref.file("cgroup.subtree_control");
        let cur = root.read_trim(&sc).unwrap_or_default();
        if !cur
            .split_whitespace()
            .any(|w| w.trim_start_matches('+') == "cpuset")
        {
            b.push(
                Change::report("cpuset", root.display(&sc), cur, "+cpuset", Status::Ok).act(
                    Action::Write {
                        path: sc.clone(),
                        value: "+cpuset".into(),
                        prior: "-cpuset".into(),
                    },
                ),
            );
        }
        let path = format!("{}/{CG_RT}", parent.trim_end_matches('/'));
        let dest = CgroupRef {
            mount: mount.clone(),
            path: path.clone(),
            v2: true,
        };
        let knobs = vec![
            ("cgroup.type".to_string(), "threaded".to_string()),
            ("cpuset.cpus".into(), rt.clone()),
            ("cpuset.cpus.partition".into(), "isolated".into()),
        ];
        cgroup_dir(b, &dest, knobs);
        move_threads(b, &vcpu_threads, &dest);
        return Ok(());
    }
    let Some(mount) = layout.v1_cpuset.clone() else {
        b.push(
            Change::report(
                "cpuset",
                "cpuset cgroup",
                "(not mounted)",
                "isolated cpuset",
                Status::NotApplicable,
            )
            .note("no cgroup v1 cpuset mount and no cpuset controller in cgroup2"),
        );
        return Ok(());
    };
    // cgroup v1 (as `cset shield`): an exclusive cpuset for the vCPUs, one for everything
    // else, and no load balancing across them.
    let mems = root
        .read_trim(format!("{mount}/cpuset.mems"))
        .unwrap_or_else(|_| "0".into());
    let rt_cg = CgroupRef {
        mount: mount.clone(),
        path: format!("/{CG_RT}"),
        v2: false,
    };
    let hk_cg = CgroupRef {
        mount: mount.clone(),
        path: format!("/{CG_HK}"),
        v2: false,
    };
    cgroup_dir(
        b,
        &rt_cg,
        vec![
            ("cpuset.cpus".into(), rt.clone()),
            ("cpuset.mems".into(), mems.clone()),
            ("cpuset.cpu_exclusive".into(), "1".into()),
            ("cpuset.sched_load_balance".into(), "0".into()),
        ],
    );
    cgroup_dir(
        b,
        &hk_cg,
        vec![
            ("cpuset.cpus".into(), hk.clone()),
            ("cpuset.mems".into(), mems),
        ],
    );
    b.file(
        "cpuset",
        &format!("{mount}/cpuset.sched_load_balance"),
        "0",
        |v| v.to_string(),
    );
    move_threads(b, &vcpu_threads, &rt_cg);
    // Every user thread of the root cpuset moves to the housekeeping one, except
    // real-time threads (never moved) and kernel threads (see the kthread item).
    let vcpu_tids: BTreeSet<u32> = vcpu_threads.iter().map(|t| t.tid).collect();
    let mut others = Vec::new();
    for pid in rt_sys::task::pids(&root).map_err(sys("Listing processes"))? {
        let Ok(stats) = rt_sys::task::task_stats(&root, pid) else {
            continue;
        };
        for st in stats {
            if vcpu_tids.contains(&st.tid)
                || st.flags & threads::PF_KTHREAD != 0
                || matches!(st.policy, 1 | 2 | 6)
            {
                continue;
            }
            let t = Thread::from_stat(pid, &st);
            if thread_cg(b, &t, false).as_deref() == Some("/") {
                others.push(t);
            }
        }
    }
    let n = others.len();
    let refs: Vec<&Thread> = others.iter().collect();
    if n > 0 {
        move_threads(b, &refs, &hk_cg);
    }
    Ok(())
}

fn cgroup_dir(b: &mut B<'_, '_>, cg: &CgroupRef, knobs: Vec<(String, String)>) {
    let dir = cg.dir();
    if b.root().exists(&dir) {
        for (f, v) in knobs {
            if f == "cgroup.type" {
                continue;
            }
            b.file("cpuset", &cg.file(&f), &v, |x| x.to_string());
        }
    } else {
        let desired = knobs
            .iter()
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let d = b.root().display(&dir);
        b.push(
            Change::report("cpuset", d, "(absent)", desired, Status::Ok).act(
                Action::CreateCgroup {
                    path: dir,
                    v2: cg.v2,
                    knobs,
                },
            ),
        );
    }
}

fn move_threads(b: &mut B<'_, '_>, ts: &[&Thread], to: &CgroupRef) {
    for t in ts {
        let Some(cur) = thread_cg(b, t, to.v2) else {
            // Exited, or no such hierarchy line: nothing to move back to later.
            b.push(
                Change::report(
                    "cpuset",
                    format!("cgroup of {:?} (tid {})", t.name, t.tid),
                    "(unknown)",
                    to.path.clone(),
                    Status::NotApplicable,
                )
                .note("the thread's cgroup cannot be read"),
            );
            continue;
        };
        let c = Change::report(
            "cpuset",
            format!("cgroup of {:?} (tid {})", t.name, t.tid),
            cur.clone(),
            to.path.clone(),
            Status::Ok,
        );
        b.push(if cur == to.path {
            c
        } else {
            c.act(Action::MoveCgroup {
                thread: ThreadRef::from(*t),
                to: to.clone(),
                prior: cur,
            })
        });
    }
}

fn kthread_items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root().clone();
    let hk = &host.housekeeping_cpus;
    let mut n_ok = 0usize;
    for pid in rt_sys::task::pids(&root).map_err(sys("Listing processes"))? {
        let Ok(st) = rt_sys::task::tid_stat(&root, pid) else {
            continue;
        };
        let is_kthread = st.flags & threads::PF_KTHREAD != 0 && (pid == 2 || st.ppid == 2);
        if !is_kthread
            || st.flags & threads::PF_NO_SETAFFINITY != 0
            || matches!(st.policy, 1 | 2 | 6)
        {
            continue;
        }
        let Ok(cur) = b.ctx.ops.get_affinity(&root, pid, pid) else {
            continue;
        };
        if cur.is_subset(hk) {
            n_ok += 1;
            continue;
        }
        let t = ThreadRef {
            pid,
            tid: pid,
            start_time: st.start_time,
            name: st.comm.clone(),
        };
        b.push(
            Change::report(
                "kthread",
                format!("affinity of {:?} (tid {pid})", st.comm),
                cur.to_string(),
                hk.to_string(),
                Status::Ok,
            )
            .act(Action::Affinity {
                thread: t,
                cpus: hk.clone(),
                prior: cur,
            }),
        );
    }
    b.push(
        Change::report(
            "kthread",
            "movable kernel threads",
            format!("{n_ok} already on {hk}"),
            format!("on {hk}"),
            Status::Ok,
        )
        .note("per-CPU kernel threads (PF_NO_SETAFFINITY) and real-time ones are never moved"),
    );
    Ok(())
}

fn vm_items(b: &mut B<'_, '_>, host: &Host, v: &VmThreads) -> Result<(), TuneError> {
    let root = b.root().clone();
    let ops = b.ctx.ops;
    let hk = &host.housekeeping_cpus;
    b.push(Change::report(
        "vm",
        vm::describe(host.vm.as_ref().unwrap_or(&profiles::Vm::default())),
        format!(
            "pid {} ({}), {} vCPU thread(s)",
            v.pid,
            v.found_by,
            v.vcpus.len()
        ),
        "running",
        Status::Ok,
    ));
    let mut affinities = Vec::new();
    let mut scheds = Vec::new();
    // Emulator and I/O threads to their housekeeping CPUs, before any vCPU is FIFO.
    let emu = host.emulator_cpus.clone().unwrap_or_else(|| hk.clone());
    let io = host.iothread_cpus.clone().unwrap_or_else(|| hk.clone());
    for (kind, list, cpus) in [
        ("emulator", &v.emulator, &emu),
        ("iothread", &v.iothreads, &io),
    ] {
        for t in list {
            let target = format!("affinity of {:?} (tid {})", t.name, t.tid);
            let (cur, sch) = match (
                ops.get_affinity(&root, t.pid, t.tid),
                ops.get_sched(&root, t.pid, t.tid),
            ) {
                (Ok(a), Ok(s)) => (a, s),
                _ => continue, // exited meanwhile
            };
            let c = Change::report(kind, target, cur.to_string(), cpus.to_string(), Status::Ok);
            if sch.policy.is_realtime() {
                affinities.push(
                    Change {
                        status: Status::NotApplicable,
                        ..c
                    }
                    .note(format!("already {sch}: a real-time thread is never moved")),
                );
            } else if cur == *cpus {
                affinities.push(c);
            } else {
                affinities.push(c.act(Action::Affinity {
                    thread: t.into(),
                    cpus: cpus.clone(),
                    prior: cur,
                }));
            }
        }
    }
    // RT group scheduling: runtime for the cgroups of the real-time vCPUs, parents first.
    let rt_threads: Vec<&Thread> = host
        .vcpus
        .iter()
        .filter(|p| p.policy.is_realtime())
        .filter_map(|p| v.vcpus.get(&p.vcpu))
        .collect();
    for c in crate::rtgroup::items(&root, &rt_threads)
        .map_err(sys("Reading the RT runtime of the vCPUs' cpu cgroups"))?
    {
        b.push(c);
    }
    for pin in &host.vcpus {
        let Some(t) = v.vcpus.get(&pin.vcpu) else {
            affinities.push(Change::report("vcpu-affinity", format!("vCPU {}", pin.vcpu), "(no such vCPU thread)", pin.cpu.to_string(), Status::NotApplicable)
                .essential()
                .note(format!("QEMU pid {} has vCPUs {:?}", v.pid, v.vcpus.keys().collect::<Vec<_>>()))
                .fix("name the vCPU threads (QEMU -name ...,debug-threads=on; libvirt does) or give host.vm.qmp, and list only the VM's vCPUs in host.vcpus"));
            continue;
        };
        let cur = ops
            .get_affinity(&root, t.pid, t.tid)
            .map_err(sys(format!("Reading the affinity of {:?}", t.name)))?;
        let want = CpuSet::from_cpus([pin.cpu]);
        let c = Change::report(
            "vcpu-affinity",
            format!("affinity of {:?} (tid {})", t.name, t.tid),
            cur.to_string(),
            want.to_string(),
            Status::Ok,
        )
        .essential();
        // The cpuset shield moves the vCPU into a cpuset of the realtime CPUs first.
        let blocked = if host.isolation.cpuset_partition || cur == want {
            None
        } else {
            crate::rtgroup::affinity_blocked(&root, t, &want)
        };
        let pinnable = blocked.is_none();
        affinities.push(match blocked {
            _ if cur == want => c,
            Some((cause, fix)) => Change {
                status: Status::NotPermitted,
                ..c
            }
            .note(cause)
            .fix(fix),
            None => c.act(Action::Affinity {
                thread: t.into(),
                cpus: want,
                prior: cur,
            }),
        });
        let cur = ops
            .get_sched(&root, t.pid, t.tid)
            .map_err(sys(format!("Reading the policy of {:?}", t.name)))?;
        let prio = if pin.policy.is_realtime() {
            u32::from(pin.priority)
        } else {
            0
        };
        let want = SchedParams {
            policy: pin.policy,
            priority: prio,
        };
        let mut c = Change::report(
            "vcpu-sched",
            format!("sched of {:?} (tid {})", t.name, t.tid),
            cur.to_string(),
            want.to_string(),
            Status::Ok,
        );
        c.essential = pin.policy.is_realtime();
        scheds.push(if cur == want {
            c
        } else if !pinnable && pin.policy.is_realtime() {
            // A real-time vCPU off its CPU could spin where QEMU's main loop runs.
            Change {
                status: Status::NotApplicable,
                ..c
            }
            .note("not made real-time: its affinity cannot be set (see vcpu-affinity)")
        } else {
            c.act(Action::Sched {
                thread: t.into(),
                params: want,
                prior: cur,
            })
        });
    }
    let pinned: BTreeSet<u32> = host.vcpus.iter().map(|p| p.vcpu).collect();
    for (i, t) in &v.vcpus {
        if !pinned.contains(i) {
            affinities.push(Change::report(
                "vcpu-affinity",
                format!("affinity of {:?} (tid {})", t.name, t.tid),
                "(left alone)",
                "(not in host.vcpus)",
                Status::NotApplicable,
            ));
        }
    }
    for c in affinities.into_iter().chain(scheds) {
        b.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt_sys::sched::Policy;

    #[test]
    fn unsafe_profiles_are_refused() {
        let mut h = profiles::load("lab").unwrap().profile.host.unwrap();
        let online = CpuSet::parse("0-1").unwrap();
        check_safe(&h, &online).unwrap();
        h.vcpus.push(profiles::VcpuPin {
            vcpu: 0,
            cpu: 0,
            policy: Policy::Fifo,
            priority: 50,
        });
        let e = check_safe(&h, &online).unwrap_err().to_string();
        assert!(e.contains("every online CPU"), "{e}");
        h.vcpus.pop();
        h.housekeeping_cpus = CpuSet::new();
        assert!(check_safe(&h, &online)
            .unwrap_err()
            .to_string()
            .contains("housekeeping"));
    }

    #[test]
    fn sysctl_items_follow_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = profiles::load("lab").unwrap().profile.host.unwrap();
        let find = |p: &Plan, t: &str| p.changes.iter().find(|c| c.target.ends_with(t)).cloned();
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let rt = find(&p, "sched_rt_runtime_us").unwrap();
        assert_eq!(
            (rt.status, rt.desired.as_str()),
            (Status::Ok, "950000"),
            "kept by default"
        );
        assert_eq!(find(&p, "timer_migration").unwrap().status, Status::Differs);
        h.sysctl.rt_runtime_unlimited = true;
        h.sysctl.realtime_virtual_host = false;
        h.sysctl.extra.insert("vm.swappiness".into(), "10".into());
        m.put("proc/sys/vm/dirty_ratio", "20\n");
        h.sysctl.extra.insert("vm.dirty_ratio".into(), "20".into());
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let rt = find(&p, "sched_rt_runtime_us").unwrap();
        assert_eq!((rt.status, rt.desired.as_str()), (Status::Differs, "-1"));
        assert!(find(&p, "timer_migration").is_none());
        assert_eq!(
            find(&p, "swappiness").unwrap().status,
            Status::NotApplicable
        );
        assert_eq!(find(&p, "dirty_ratio").unwrap().status, Status::Ok);
    }

    #[test]
    fn hugepages_compare_with_vm_memory_and_warn_about_1g() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = profiles::load("lab").unwrap().profile.host.unwrap();
        h.hugepages = Some(profiles::Hugepages {
            size_kib: 2048,
            count: 128,
            node: None,
        });
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "hugepages").unwrap();
        assert_eq!(c.status, Status::Differs);
        assert!(
            c.note
                .as_deref()
                .unwrap()
                .contains("256 MiB is less than the VM's 512 MiB"),
            "{c:?}"
        );
        h.hugepages = Some(profiles::Hugepages {
            size_kib: 1_048_576,
            count: 1,
            node: None,
        });
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "hugepages").unwrap();
        assert_eq!(
            c.status,
            Status::NotApplicable,
            "no 1 GB pages in the fake kernel"
        );
        assert!(
            c.note.as_deref().unwrap().contains("try 2 MB pages first"),
            "{c:?}"
        );
        assert!(p
            .changes
            .iter()
            .any(|c| c.target.ends_with("hugepagesz") && c.status == Status::NeedsReboot));
    }
}
