//! VM definitions from a profile: what is decided when a real-time VM is defined, rendered
//! for libvirt ([`libvirt`], domain XML), plain QEMU ([`qemu`], the command line) and
//! KubeVirt ([`kubevirt`], a `VirtualMachineInstance`), and checked on a running VM
//! ([`audit`]).
//!
//! Every real-time choice is a [`Knob`] with a one-line reason and its source (the libvirt
//! real-time guide <https://libvirt.org/kbase/kvm-realtime.html>, KubeVirt's dedicated-CPU
//! and realtime support, the kernel's guest halt-polling and KVM CPUID documentation); the
//! renderers put the reason beside what they write (XML comment, shell comment, YAML
//! comment) and list the choices for `rt-host vm --explain`. See `docs/vm-definition.md`.

pub mod audit;
pub mod kubevirt;
pub mod libvirt;
pub mod qemu;

use profiles::VmView;
use rt_sys::sched::Policy;
use rt_sys::{hugepages, CpuSet, SysRoot};
use serde::{Deserialize, Serialize};

/// Output formats of `rt-host vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// libvirt domain XML (`virsh define`).
    Libvirt,
    /// A bash script running `qemu-system-x86_64`.
    Qemu,
    /// A KubeVirt `VirtualMachineInstance` (`kubectl apply -f`).
    Kubevirt,
}

/// The accelerator a QEMU definition is rendered for (`rt-host vm --accel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM: the profile's definition as it is.
    #[default]
    Kvm,
    /// QEMU's binary translator, for a machine without usable KVM: the definition with
    /// the accelerator and CPU model substituted, each substitution named (not real-time).
    Tcg,
}

/// Where a definition runs, when that is not a KVM host prepared by `rt-host setup`: what
/// to substitute in the profile's QEMU definition. The default substitutes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant {
    /// The accelerator.
    pub accel: Accel,
    /// Why hugepage memory cannot be had where QEMU starts (None: it can).
    pub no_hugepages: Option<String>,
    /// Why memory cannot be locked where QEMU starts (None: it can).
    pub no_mem_lock: Option<String>,
}

/// One argument of the profile's definition replaced or dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitution {
    /// The option (`-cpu`, `-machine`, `-object`, `-overcommit`).
    pub option: String,
    /// Its value in the profile's definition.
    pub profile: String,
    /// The value that runs instead; None: the option and its value are dropped.
    pub now: Option<String>,
    /// Why, in one line.
    pub why: String,
}

impl std::fmt::Display for Substitution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.now {
            Some(n) => write!(f, "{} {} -> {n}: {}", self.option, self.profile, self.why),
            None => write!(f, "{} {} dropped: {}", self.option, self.profile, self.why),
        }
    }
}

/// Where a recommendation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Document title.
    pub title: &'static str,
    /// Where to read it.
    pub url: &'static str,
}

/// libvirt's real-time guest guide.
pub const LIBVIRT_RT: Source = Source {
    title: "libvirt: KVM Real Time Guest Config",
    url: "https://libvirt.org/kbase/kvm-realtime.html",
};
/// libvirt's domain XML reference.
pub const LIBVIRT_FORMAT: Source = Source {
    title: "libvirt: Domain XML format",
    url: "https://libvirt.org/formatdomain.html",
};
/// The kernel's guest halt-polling documentation (cpuidle-haltpoll needs the realtime hint).
pub const KERNEL_HALTPOLL: Source = Source {
    title: "Linux: Guest halt polling",
    url: "https://docs.kernel.org/virt/guest-halt-polling.html",
};
/// The kernel's KVM CPUID documentation (`KVM_HINTS_REALTIME`).
pub const KERNEL_KVM_CPUID: Source = Source {
    title: "Linux: KVM CPUID bits (KVM_HINTS_REALTIME)",
    url: "https://docs.kernel.org/virt/kvm/x86/cpuid.html",
};
/// KubeVirt's dedicated CPU resources.
pub const KUBEVIRT_DEDICATED: Source = Source {
    title: "KubeVirt: Dedicated CPU resources",
    url: "https://kubevirt.io/user-guide/compute/dedicated_cpu_resources/",
};
/// KubeVirt's realtime support (vcpusched FIFO 1, PMU off, locked, no shared pages).
pub const KUBEVIRT_RT: Source = Source {
    title: "KubeVirt: realtime VMIs (kubevirt/kubevirt#6182)",
    url: "https://kubevirt.io/2021/Running-Realtime-Workloads.html",
};
/// QEMU's CAN bus emulation.
pub const QEMU_CAN: Source = Source {
    title: "QEMU: CAN bus emulation support",
    url: "https://www.qemu.org/docs/master/system/devices/can.html",
};
/// QEMU's invocation reference.
pub const QEMU_INVOCATION: Source = Source {
    title: "QEMU: Invocation",
    url: "https://www.qemu.org/docs/master/system/invocation.html",
};
/// This project's lab findings (thread names, main loop off realtime CPUs).
pub const RTVIRT_DESIGN: Source = Source {
    title: "rtvirt: DESIGN.md (the lab's findings)",
    url: "docs/vm-definition.md",
};

/// A real-time choice in a VM definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// Each vCPU on its own host CPU.
    VcpuPin,
    /// A vCPU the profile does not place: kept on the emulator CPUs.
    VcpuUnplaced,
    /// Emulator threads on housekeeping CPUs.
    EmulatorPin,
    /// I/O threads on housekeeping CPUs.
    IothreadPin,
    /// I/O threads exist (disk I/O off the main loop and vCPUs).
    Iothreads,
    /// Real-time policy of the vCPUs.
    VcpuSched,
    /// Policy of the emulator threads.
    EmulatorSched,
    /// Policy of the I/O threads.
    IothreadSched,
    /// Guest topology matching the placement.
    Topology,
    /// The host CPU model, unchanged.
    HostPassthrough,
    /// The TSC-deadline timer.
    TscDeadline,
    /// Invariant TSC.
    Invtsc,
    /// No virtual PMU.
    PmuOff,
    /// KVM's dedicated-CPU hint (`KVM_HINTS_REALTIME`).
    HintDedicated,
    /// Guest memory on hugepages.
    Hugepages,
    /// Guest memory locked in RAM.
    Locked,
    /// No page merging (KSM).
    NoSharePages,
    /// Memory strictly on one NUMA node.
    NumaStrict,
    /// No memory balloon.
    NoBalloon,
    /// No USB controller.
    NoUsb,
    /// No graphics or video device.
    NoGraphics,
    /// A serial console for emergencies.
    SerialConsole,
    /// Emulated CAN bus and controllers.
    CanBus,
    /// Thread names `CPU n/KVM` so rt-host finds the vCPUs.
    ThreadNames,
    /// A QMP socket for rt-host's audit.
    Qmp,
    /// What the VM boots.
    Boot,
}

impl Knob {
    /// One-line reason, for a real-time reader.
    pub fn why(self) -> &'static str {
        match self {
            Knob::VcpuPin => "one vCPU per isolated host CPU: nothing else is scheduled there, no migration, no cache sharing with other vCPUs",
            Knob::VcpuUnplaced => "not placed by the profile: kept on the emulator (housekeeping) CPUs so it can never land on a realtime CPU",
            Knob::EmulatorPin => "QEMU's main loop, RCU and workers on housekeeping CPUs: never beside a real-time vCPU, which would starve them (timers, device emulation)",
            Knob::IothreadPin => "I/O threads on housekeeping CPUs: disk and event work stays off the realtime CPUs",
            Knob::Iothreads => "disk I/O in a dedicated, pinned I/O thread instead of the main loop or a vCPU thread",
            Knob::VcpuSched => "real-time policy for the vCPU threads: the guest's real-time tasks are not preempted by host tasks on their CPU",
            Knob::EmulatorSched => "policy of the emulator threads: a real-time main loop answers device and timer events of the guest without waiting behind host tasks",
            Knob::IothreadSched => "policy of the I/O threads: disk and event completions of the guest do not wait behind host tasks on the housekeeping CPUs",
            Knob::Topology => "topology matching the placement (one socket, one thread per core): the guest scheduler sees no SMT siblings that do not exist",
            Knob::HostPassthrough => "the host CPU unchanged: every feature and timer the hardware has, no emulated CPUID (not migratable: invtsc forbids it anyway)",
            Knob::TscDeadline => "TSC-deadline timer: one MSR write arms the guest's timer, the lowest-latency APIC timer mode",
            Knob::Invtsc => "invariant TSC: a constant-rate TSC the guest can use as its clocksource and for timer calibration",
            Knob::PmuOff => "no virtual PMU: no PMU MSR save/restore on VM exits and no perf NMIs in the guest",
            Knob::HintDedicated => "KVM_HINTS_REALTIME: tells the guest its vCPUs are never preempted, so it polls instead of using PV spinlocks and loads cpuidle-haltpoll (without it guest_halt_poll_ns does nothing unless the guest boots with cpuidle_haltpoll.force=1)",
            Knob::Hugepages => "guest RAM on hugepages: fewer TLB misses and page walks for the guest, no page faults on 4 KiB pages",
            Knob::Locked => "guest memory locked in RAM: the host never swaps or compacts it under the guest",
            Knob::NoSharePages => "no KSM merging of guest pages: no copy-on-write faults and no ksmd scanning",
            Knob::NumaStrict => "guest memory strictly on the NUMA node of its vCPUs: no remote memory accesses",
            Knob::NoBalloon => "no memory balloon: guest memory never shrinks and no balloon driver runs in the guest",
            Knob::NoUsb => "no USB controller: no polled USB emulation waking the host",
            Knob::NoGraphics => "no graphics or video device: no display updates or VNC work in QEMU's main loop",
            Knob::SerialConsole => "a serial console instead of graphics: emergency access without a display device",
            Knob::CanBus => "emulated CAN bus and SJA1000-class controllers: the guest's real SocketCAN drivers with threaded IRQs",
            Knob::ThreadNames => "threads named `CPU n/KVM`, `IO iothreadN`: rt-host setup and check find and tune each vCPU by its name",
            Knob::Qmp => "a QMP socket: rt-host check reads the guest CPU's features and hints through it",
            Knob::Boot => "what the VM boots",
        }
    }

    /// Where the recommendation comes from.
    pub fn source(self) -> Source {
        match self {
            Knob::VcpuPin
            | Knob::EmulatorPin
            | Knob::VcpuSched
            | Knob::Topology
            | Knob::HostPassthrough
            | Knob::TscDeadline
            | Knob::PmuOff
            | Knob::Hugepages
            | Knob::Locked
            | Knob::NoSharePages
            | Knob::NoBalloon
            | Knob::NoUsb
            | Knob::NoGraphics
            | Knob::SerialConsole => LIBVIRT_RT,
            Knob::HintDedicated => KERNEL_HALTPOLL,
            Knob::Invtsc => KERNEL_KVM_CPUID,
            Knob::NumaStrict
            | Knob::IothreadPin
            | Knob::Iothreads
            | Knob::EmulatorSched
            | Knob::IothreadSched => LIBVIRT_FORMAT,
            Knob::CanBus => QEMU_CAN,
            Knob::VcpuUnplaced | Knob::ThreadNames | Knob::Qmp => RTVIRT_DESIGN,
            Knob::Boot => QEMU_INVOCATION,
        }
    }
}

/// One element, argument or field as rendered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The choice.
    pub knob: Knob,
    /// What was written (`<vcpupin vcpu='0' cpuset='2'/>`, `-overcommit mem-lock=on`).
    pub rendered: String,
    /// Why, in one line (the knob's reason, made specific where it helps).
    pub why: String,
    /// Where the recommendation comes from.
    pub source: Source,
}

impl Choice {
    /// A choice with the knob's own reason.
    pub fn new(knob: Knob, rendered: impl Into<String>) -> Choice {
        Choice::with(knob, rendered, knob.why())
    }

    /// A choice with a specific reason.
    pub fn with(knob: Knob, rendered: impl Into<String>, why: impl Into<String>) -> Choice {
        Choice {
            knob,
            rendered: rendered.into(),
            why: why.into(),
            source: knob.source(),
        }
    }
}

/// A rendered definition.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// VM name.
    pub vm: String,
    /// Format.
    pub format: Format,
    /// The text (XML, bash script, YAML).
    pub text: String,
    /// The QEMU argv (QEMU format only), without the program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Every choice with its reason.
    pub choices: Vec<Choice>,
    /// What differs from the profile's definition ([`Variant`]; QEMU format only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub substitutions: Vec<Substitution>,
}

/// Why a VM cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum VmDefError {
    /// The profile has no VM of that name.
    #[error("Profile {profile:?} has no VM {name:?} (VMs: {known})")]
    NoSuchVm {
        /// Profile name.
        profile: String,
        /// Asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// Several VMs and none chosen.
    #[error("Profile {profile:?} has {count} VMs ({known}): choose one with --vm NAME")]
    Ambiguous {
        /// Profile name.
        profile: String,
        /// How many.
        count: usize,
        /// Their names.
        known: String,
    },
    /// The profile has no VM.
    #[error("Profile {0:?} has no VM: add host.vms (or host.vm with memory_mib)")]
    NoVm(String),
    /// A field the format needs is missing or does not fit it.
    #[error("{path}: {message}")]
    Field {
        /// Profile field path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A variant asked of a format that has none.
    #[error("A substituted definition (--accel tcg) renders only for --format qemu, not {format}")]
    Variant {
        /// The format asked for (`libvirt`, `kubevirt`).
        format: String,
    },
    /// Writing the XML failed.
    #[error("Writing the domain XML")]
    Xml(#[from] std::io::Error),
}

/// A VM with what its definition needs beyond the profile: the host NUMA node of its
/// memory, and where that choice came from.
#[derive(Debug, Clone)]
pub struct Def<'a> {
    /// Profile name (for the header comments).
    pub profile: &'a str,
    /// The VM.
    pub vm: &'a VmView,
    /// Host NUMA node of guest memory (strict), if known.
    pub node: Option<u32>,
    /// Where `node` came from, or why there is none.
    pub node_why: String,
}

/// Every vCPU's host CPUs: the profile's pin, or the emulator CPUs for an unplaced vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// vCPU index.
    pub vcpu: u32,
    /// Host CPUs.
    pub cpus: CpuSet,
    /// Placed by the profile (false: kept on the emulator CPUs).
    pub placed: bool,
}

/// vCPUs sharing one scheduling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedGroup {
    /// vCPU indices.
    pub vcpus: CpuSet,
    /// Policy.
    pub policy: Policy,
    /// Priority.
    pub priority: u8,
}

impl<'a> Def<'a> {
    /// The definition of `vm`, with its NUMA node from the profile or, failing that, the
    /// node of this machine (`root`) that holds all its placed CPUs.
    pub fn new(profile: &'a str, vm: &'a VmView, root: &SysRoot) -> Def<'a> {
        let (node, node_why) = host_node(vm, root);
        Def {
            profile,
            vm,
            node,
            node_why,
        }
    }

    /// Memory in MiB, which every format needs.
    pub fn memory_mib(&self) -> Result<u64, VmDefError> {
        self.vm.memory_mib.ok_or_else(|| VmDefError::Field {
            path: self.vm.field("memory_mib"),
            message: "missing: a VM definition needs the guest memory".into(),
        })
    }

    /// Where each vCPU runs.
    pub fn placements(&self) -> Vec<Placement> {
        (0..self.vm.cpus)
            .map(|i| match self.vm.pin(i) {
                Some(p) => Placement {
                    vcpu: i,
                    cpus: CpuSet::from_cpus([p.cpu]),
                    placed: true,
                },
                None => Placement {
                    vcpu: i,
                    cpus: self.vm.emulator_cpus.clone(),
                    placed: false,
                },
            })
            .collect()
    }

    /// The placed vCPUs with a real-time, batch or idle policy, grouped by policy and
    /// priority (libvirt `<vcpusched>` has no `other`).
    pub fn sched_groups(&self) -> Vec<SchedGroup> {
        let mut groups: Vec<SchedGroup> = Vec::new();
        for v in self.vm.vcpus.iter().filter(|v| v.policy != Policy::Other) {
            let prio = if v.policy.is_realtime() {
                v.priority
            } else {
                0
            };
            match groups
                .iter_mut()
                .find(|g| g.policy == v.policy && g.priority == prio)
            {
                Some(g) => g.vcpus.insert(v.vcpu),
                None => groups.push(SchedGroup {
                    vcpus: CpuSet::from_cpus([v.vcpu]),
                    policy: v.policy,
                    priority: prio,
                }),
            }
        }
        groups
    }

    /// The host CPUs of the placed vCPUs.
    pub fn vcpu_host_cpus(&self) -> CpuSet {
        CpuSet::from_cpus(self.vm.vcpus.iter().map(|v| v.cpu))
    }
}

/// The host NUMA node for a VM's memory: the profile's, else the one node of this machine
/// whose CPUs hold all the VM's placed vCPUs.
fn host_node(vm: &VmView, root: &SysRoot) -> (Option<u32>, String) {
    if let Some(n) = vm.numa_node {
        return (
            Some(n),
            format!("node {n} from the profile ({})", vm.field("numa_node")),
        );
    }
    let cpus = CpuSet::from_cpus(vm.vcpus.iter().map(|v| v.cpu));
    if cpus.is_empty() {
        return (
            None,
            "no vCPU is placed, so no NUMA node follows from the placement".into(),
        );
    }
    match hugepages::nodes(root) {
        Ok(nodes) => match nodes.iter().find(|(_, c)| cpus.is_subset(c)) {
            Some((n, c)) => (
                Some(*n),
                format!(
                    "node {n} holds the vCPUs' CPUs {cpus} on this machine ({} cpulist {c})",
                    root.display(hugepages::node_dir(*n))
                ),
            ),
            None => (
                None,
                format!(
                    "no NUMA node of this machine holds all of CPUs {cpus}: set {}",
                    vm.field("numa_node")
                ),
            ),
        },
        Err(e) => (
            None,
            format!(
                "this machine's NUMA nodes cannot be read ({e}): set {}",
                vm.field("numa_node")
            ),
        ),
    }
}

/// The VMs of a profile to render: the one named `name`, or all of them.
pub fn select<'v>(
    profile: &str,
    vms: &'v [VmView],
    name: Option<&str>,
    allow_all: bool,
) -> Result<Vec<&'v VmView>, VmDefError> {
    let known = || {
        vms.iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if vms.is_empty() {
        return Err(VmDefError::NoVm(profile.to_string()));
    }
    match name {
        Some(n) => vms
            .iter()
            .find(|v| v.name == n)
            .map(|v| vec![v])
            .ok_or_else(|| VmDefError::NoSuchVm {
                profile: profile.to_string(),
                name: n.to_string(),
                known: known(),
            }),
        None if vms.len() == 1 || allow_all => Ok(vms.iter().collect()),
        None => Err(VmDefError::Ambiguous {
            profile: profile.to_string(),
            count: vms.len(),
            known: known(),
        }),
    }
}

/// Render `def` in `format`; `variant` (QEMU only) says what to substitute for where it
/// runs.
pub fn render(def: &Def<'_>, format: Format, variant: &Variant) -> Result<Rendered, VmDefError> {
    if format != Format::Qemu && *variant != Variant::default() {
        return Err(VmDefError::Variant {
            format: format!("{format:?}").to_lowercase(),
        });
    }
    match format {
        Format::Libvirt => libvirt::render(def),
        Format::Qemu => qemu::render_variant(def, variant),
        Format::Kubevirt => kubevirt::render(def),
    }
}

/// `--explain`: every choice of a rendering with its reason and source.
pub fn explain(r: &Rendered) -> String {
    let mut out = format!("# VM {:?} ({:?}): every choice and why\n", r.vm, r.format);
    for s in &r.substitutions {
        out.push_str(&format!("substituted: {s}\n"));
    }
    for c in &r.choices {
        out.push_str(&format!(
            "{}\n    {}\n    source: {} <{}>\n",
            c.rendered, c.why, c.source.title, c.source.url
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> profiles::Profile {
        crate::fake::lab_profile()
    }

    #[test]
    fn unplaced_vcpus_stay_on_the_emulator_cpus() {
        let p = lab();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let root = SysRoot::new("/nonexistent");
        let d = Def::new(&p.name, &vms[0], &root);
        let pl = d.placements();
        assert_eq!(pl.len(), 2);
        assert_eq!((pl[0].placed, pl[0].cpus.to_string()), (false, "0".into()));
        assert_eq!((pl[1].placed, pl[1].cpus.to_string()), (true, "1".into()));
        let g = d.sched_groups();
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].vcpus.to_string(), g[0].policy, g[0].priority),
            ("1".into(), Policy::Fifo, 50)
        );
        assert_eq!(d.node, None);
        assert_eq!(
            d.node_why,
            "no NUMA node of this machine holds all of CPUs 1: set host.vms[0].numa_node"
        );
    }

    #[test]
    fn the_node_comes_from_the_profile_or_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let p = lab();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        let d = Def::new(&p.name, &vms[0], &m.root);
        assert_eq!(d.node, Some(0));
        assert!(
            d.node_why.starts_with("node 0 holds the vCPUs' CPUs 1"),
            "{}",
            d.node_why
        );
        let mut v = vms[0].clone();
        v.numa_node = Some(3);
        let d = Def::new(&p.name, &v, &m.root);
        assert_eq!(d.node, Some(3));
    }

    #[test]
    fn select_names_what_exists() {
        let p = lab();
        let vms = profiles::host_vms(p.host.as_ref().unwrap());
        assert_eq!(select("lab", &vms, None, false).unwrap().len(), 1);
        let e = select("lab", &vms, Some("ecu9"), false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Profile \"lab\" has no VM \"ecu9\" (VMs: lab)");
        let two = [
            vms[0].clone(),
            VmView {
                name: "b".into(),
                ..vms[0].clone()
            },
        ];
        let e = select("x", &two, None, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "Profile \"x\" has 2 VMs (lab, b): choose one with --vm NAME"
        );
        assert_eq!(select("x", &two, None, true).unwrap().len(), 2);
        assert!(matches!(
            select("x", &[], None, true),
            Err(VmDefError::NoVm(_))
        ));
    }
}
