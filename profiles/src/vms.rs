//! The VMs of a host, whichever form the profile uses: several in `host.vms`, or the
//! single-VM form (`host.vm` with `host.vcpus`, `host.emulator_cpus`,
//! `host.iothread_cpus`). [`host_vms`] fills in every default, so rt-host's planner,
//! renderers and audit see one shape; its `validate` checks the `host.vms` form, including
//! what only several VMs can get wrong: two real-time vCPUs on one CPU.

use std::collections::BTreeMap;

use rt_sys::sched::Policy;
use rt_sys::CpuSet;

use crate::rules::{self, Errors, Machine, HUGEPAGE_SIZES_KIB};
use crate::{CanBus, Host, VcpuPin, Vm, VmBoot, VmSpec};

/// Longest VM name: a DNS label (KubeVirt `metadata.name`), also fine for libvirt and QEMU.
pub const MAX_VM_NAME: usize = 63;
/// Most I/O threads a VM may ask for.
pub const MAX_IOTHREADS: u32 = 16;
/// Most controllers on one CAN bus.
pub const MAX_CAN_CONTROLLERS: u32 = 4;

/// One VM of a host with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct VmView {
    /// Where it sits in the profile: `host.vms[0]`, or `host` for the single-VM form.
    pub path: String,
    /// Where its vCPU placements are: `host.vms[0].vcpus` or `host.vcpus`.
    pub vcpus_path: String,
    /// Name (domain name, QEMU `-name guest=`, KubeVirt `metadata.name`).
    pub name: String,
    /// How rt-host finds the running VM.
    pub find: Vm,
    /// Guest memory in MiB (the single-VM form may leave it out).
    pub memory_mib: Option<u64>,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Placed vCPUs.
    pub vcpus: Vec<VcpuPin>,
    /// CPUs of the emulator threads.
    pub emulator_cpus: CpuSet,
    /// CPUs of the I/O threads.
    pub iothread_cpus: CpuSet,
    /// Number of I/O threads.
    pub iothreads: u32,
    /// Emulator thread policy.
    pub emulator_policy: Policy,
    /// Emulator thread priority (0 for non-real-time policies).
    pub emulator_priority: u8,
    /// I/O thread policy.
    pub iothread_policy: Policy,
    /// I/O thread priority (0 for non-real-time policies).
    pub iothread_priority: u8,
    /// Hugepage size backing guest memory, KiB.
    pub hugepage_kib: Option<u64>,
    /// Host NUMA node of guest memory.
    pub numa_node: Option<u32>,
    /// CAN buses.
    pub can_buses: Vec<CanBus>,
    /// Boot source.
    pub boot: Option<VmBoot>,
}

impl VmView {
    /// The vCPUs at a real-time policy (Fifo, Rr), by index.
    pub fn realtime_vcpus(&self) -> CpuSet {
        CpuSet::from_cpus(
            self.vcpus
                .iter()
                .filter(|v| v.policy.is_realtime())
                .map(|v| v.vcpu),
        )
    }

    /// The profile field that sets `field` of this VM (`numa_node`, `hugepage_kib`, ...), for
    /// messages: `host.vms[0].numa_node`, or in the single-VM form the host field that
    /// stands for it (`host.hugepages.node`), or a hint to use `host.vms`.
    pub fn field(&self, field: &str) -> String {
        if self.path != "host" {
            return format!("{}.{field}", self.path);
        }
        match field {
            "numa_node" => "host.hugepages.node".into(),
            "hugepage_kib" => "host.hugepages.size_kib".into(),
            "memory_mib" => "host.vm.memory_mib".into(),
            "name" => "host.vm.qemu_name".into(),
            "vcpus" | "emulator_cpus" | "iothread_cpus" => format!("host.{field}"),
            other => format!("host.vms[].{other} (describe the VM in host.vms)"),
        }
    }

    /// The placement of vCPU `index`, if the profile gives one.
    pub fn pin(&self, index: u32) -> Option<&VcpuPin> {
        self.vcpus.iter().find(|v| v.vcpu == index)
    }
}

/// vCPU count when the profile does not give one: the highest placed index plus one.
fn default_cpus(vcpus: &[VcpuPin]) -> u32 {
    vcpus
        .iter()
        .map(|v| v.vcpu.saturating_add(1))
        .max()
        .unwrap_or(1)
}

/// The name of the single-VM form's VM: its QEMU name, else `vm`.
fn single_name(vm: &Vm) -> String {
    vm.qemu_name.clone().unwrap_or_else(|| "vm".to_string())
}

/// Every VM of `host`, defaults applied: the entries of `host.vms`, or the one VM of the
/// single-VM form (none when `host.vm` is absent).
pub fn host_vms(host: &Host) -> Vec<VmView> {
    let hk = &host.housekeeping_cpus;
    let emu_default = host.emulator_cpus.clone().unwrap_or_else(|| hk.clone());
    let io_default = host.iothread_cpus.clone().unwrap_or_else(|| hk.clone());
    let page = host.hugepages.as_ref().map(|h| h.size_kib);
    let node = host.hugepages.as_ref().and_then(|h| h.node);
    if host.vms.is_empty() {
        return host
            .vm
            .iter()
            .map(|vm| VmView {
                path: "host".into(),
                vcpus_path: "host.vcpus".into(),
                name: single_name(vm),
                find: vm.clone(),
                memory_mib: vm.memory_mib,
                cpus: default_cpus(&host.vcpus),
                vcpus: host.vcpus.clone(),
                emulator_cpus: emu_default.clone(),
                iothread_cpus: io_default.clone(),
                iothreads: 1,
                emulator_policy: Policy::Other,
                emulator_priority: 0,
                iothread_policy: Policy::Other,
                iothread_priority: 0,
                hugepage_kib: page,
                numa_node: node,
                can_buses: Vec::new(),
                boot: None,
            })
            .collect();
    }
    host.vms
        .iter()
        .enumerate()
        .map(|(i, s)| view(i, s, &emu_default, &io_default, page, node))
        .collect()
}

fn view(
    i: usize,
    s: &VmSpec,
    emu: &CpuSet,
    io: &CpuSet,
    page: Option<u64>,
    node: Option<u32>,
) -> VmView {
    VmView {
        path: format!("host.vms[{i}]"),
        vcpus_path: format!("host.vms[{i}].vcpus"),
        name: s.name.clone(),
        find: s.find.clone().unwrap_or_else(|| Vm {
            qemu_name: Some(s.name.clone()),
            ..Vm::default()
        }),
        memory_mib: Some(s.memory_mib),
        cpus: s.cpus.unwrap_or_else(|| default_cpus(&s.vcpus)),
        vcpus: s.vcpus.clone(),
        emulator_cpus: s.emulator_cpus.clone().unwrap_or_else(|| emu.clone()),
        iothread_cpus: s.iothread_cpus.clone().unwrap_or_else(|| io.clone()),
        iothreads: s.iothreads,
        emulator_policy: s.emulator_policy,
        emulator_priority: if s.emulator_policy.is_realtime() {
            s.emulator_priority
        } else {
            0
        },
        iothread_policy: s.iothread_policy,
        iothread_priority: if s.iothread_policy.is_realtime() {
            s.iothread_priority
        } else {
            0
        },
        hugepage_kib: s.hugepage_kib.or(page),
        numa_node: s.numa_node.or(node),
        can_buses: s.can_buses.clone(),
        boot: s.boot.clone(),
    }
}

/// Check `host.vms` (nothing to do for the single-VM form, which `validate` checks).
pub(crate) fn validate(h: &Host, e: &mut Errors) {
    if h.vms.is_empty() {
        return;
    }
    if h.vm.is_some() {
        e.push(
            "host.vm",
            format!(
                "is set together with host.vms ({} VM(s)): describe every VM in host.vms",
                h.vms.len()
            ),
        );
    }
    if !h.vcpus.is_empty() {
        e.push(
            "host.vcpus",
            format!(
                "{} placement(s) together with host.vms: give each VM its own \
                 host.vms[i].vcpus",
                h.vcpus.len()
            ),
        );
    }
    let rt = &h.realtime_cpus;
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in h.vms.iter().enumerate() {
        let p = format!("host.vms[{i}]");
        name(e, &p, &s.name);
        if let Some(j) = names.insert(s.name.as_str(), i) {
            names.insert(s.name.as_str(), j);
            e.push(
                format!("{p}.name"),
                format!("{:?} is already the name of host.vms[{j}]", s.name),
            );
        }
        spec(e, h, &p, s);
        let emu = s
            .emulator_cpus
            .clone()
            .or_else(|| h.emulator_cpus.clone())
            .unwrap_or_else(|| h.housekeeping_cpus.clone());
        let beside = rules::BesideMainLoop {
            cpus: emu,
            priority: if s.emulator_policy.is_realtime() && !h.sysctl.rt_runtime_unlimited {
                s.emulator_priority
            } else {
                0
            },
        };
        rules::vcpu_list(e, &format!("{p}.vcpus"), &s.vcpus, rt, &beside);
    }
    shared_cpus(e, &host_vms(h));
}

/// A VM name that libvirt, QEMU (`-name guest=`, no commas) and file names all take.
fn name(e: &mut Errors, p: &str, n: &str) {
    let ok = !n.is_empty()
        && n.len() <= MAX_VM_NAME
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !n.starts_with('.')
        && !n.starts_with('-');
    if !ok {
        e.push(
            format!("{p}.name"),
            format!(
                "{n:?} is not a VM name: 1 to {MAX_VM_NAME} of A-Z a-z 0-9 - _ . \
                 (not starting with - or .)"
            ),
        );
    }
}

fn spec(e: &mut Errors, h: &Host, p: &str, s: &VmSpec) {
    let rt = &h.realtime_cpus;
    if let Some(f) = &s.find {
        rules::vm_locator(e, &format!("{p}.find"), f);
        if let Some(m) = f.memory_mib {
            e.push(
                format!("{p}.find.memory_mib"),
                format!("{m} repeats the VM's memory: give it once, in {p}.memory_mib"),
            );
        }
    }
    if s.memory_mib == 0 {
        e.push(format!("{p}.memory_mib"), "0 is not a memory size");
    }
    let needed = default_cpus(&s.vcpus);
    match s.cpus {
        Some(0) => e.push(format!("{p}.cpus"), "0: a VM needs at least one vCPU"),
        Some(n) if n < needed => e.push(
            format!("{p}.cpus"),
            format!(
                "{n} is fewer than the vCPUs placed in {p}.vcpus (index {} needs {needed})",
                needed - 1
            ),
        ),
        _ => {}
    }
    for (field, set, what) in [
        ("emulator_cpus", &s.emulator_cpus, "QEMU's emulator threads"),
        ("iothread_cpus", &s.iothread_cpus, "QEMU's I/O threads"),
    ] {
        if let Some(set) = set {
            rules::off_realtime(e, &format!("{p}.{field}"), set, rt, what);
        }
    }
    if s.iothreads > MAX_IOTHREADS {
        e.push(
            format!("{p}.iothreads"),
            format!("{} is more than {MAX_IOTHREADS}", s.iothreads),
        );
    }
    rules::priority(
        e,
        &format!("{p}.emulator_priority"),
        s.emulator_policy,
        s.emulator_priority,
        "",
    );
    rules::priority(
        e,
        &format!("{p}.iothread_priority"),
        s.iothread_policy,
        s.iothread_priority,
        "",
    );
    if let Some(kib) = s.hugepage_kib {
        if !HUGEPAGE_SIZES_KIB.contains(&kib) {
            e.push(
                format!("{p}.hugepage_kib"),
                format!("{kib} is not a hugepage size: use 2048 (2 MiB) or 1048576 (1 GiB)"),
            );
        } else if let Some(hp) = h.hugepages.as_ref().filter(|hp| hp.size_kib != kib) {
            e.push(
                format!("{p}.hugepage_kib"),
                format!(
                    "{kib} differs from host.hugepages.size_kib {}: rt-host reserves one page \
                     size",
                    hp.size_kib
                ),
            );
        }
    }
    can_buses(e, p, &s.can_buses);
    if let Some(b) = &s.boot {
        let no_kernel = b.kernel.is_none();
        for (field, set) in [
            ("initrd", b.initrd.is_some()),
            ("cmdline", b.cmdline.is_some()),
        ] {
            if set && no_kernel {
                e.push(
                    format!("{p}.boot.{field}"),
                    format!("is set but {p}.boot.kernel is not: it only applies to a kernel"),
                );
            }
        }
    }
}

fn can_buses(e: &mut Errors, p: &str, buses: &[CanBus]) {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, b) in buses.iter().enumerate() {
        let bp = format!("{p}.can_buses[{k}]");
        let id_ok = !b.id.is_empty()
            && b.id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && b.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !id_ok {
            e.push(
                format!("{bp}.id"),
                format!(
                    "{:?} is not a QEMU object id (a letter, then A-Z a-z 0-9 - _)",
                    b.id
                ),
            );
        } else if let Some(j) = ids.insert(b.id.as_str(), k) {
            ids.insert(b.id.as_str(), j);
            e.push(
                format!("{bp}.id"),
                format!("{:?} is already the id of {p}.can_buses[{j}]", b.id),
            );
        }
        if b.controllers == 0 || b.controllers > MAX_CAN_CONTROLLERS {
            e.push(
                format!("{bp}.controllers"),
                format!("{} is outside 1..={MAX_CAN_CONTROLLERS}", b.controllers),
            );
        }
        if let Some(i) = &b.host_interface {
            rules::ifname(e, &format!("{bp}.host_interface"), i);
        }
    }
}

/// No two real-time vCPUs of different VMs on one CPU, and no other vCPU beside a
/// real-time one (within one VM `vcpu_list` already says so).
fn shared_cpus(e: &mut Errors, vms: &[VmView]) {
    let mut owner: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (a, vm) in vms.iter().enumerate() {
        for (i, v) in vm.vcpus.iter().enumerate() {
            match owner.get(&v.cpu) {
                Some(&(b, j)) if b != a => {
                    let other = &vms[b].vcpus[j];
                    if v.policy.is_realtime() || other.policy.is_realtime() {
                        e.push(
                            format!("{}[{i}].cpu", vm.vcpus_path),
                            format!(
                                "{} already runs vCPU {} of VM {:?} ({}[{j}]): one real-time \
                                 vCPU per CPU, across all VMs",
                                v.cpu, other.vcpu, vms[b].name, vms[b].vcpus_path
                            ),
                        );
                    }
                }
                Some(_) => {}
                None => {
                    owner.insert(v.cpu, (a, i));
                }
            }
        }
    }
}

/// Guest memory that lives on `host.hugepages`-sized pages, in MiB, and which profile
/// fields it comes from (for the hugepage count check).
pub(crate) fn hugepage_memory(h: &Host) -> Option<(u64, String)> {
    let hp = h.hugepages.as_ref()?;
    let vms = host_vms(h);
    let on_pages: Vec<&VmView> = vms
        .iter()
        .filter(|v| v.hugepage_kib == Some(hp.size_kib))
        .collect();
    let total: u64 = on_pages.iter().filter_map(|v| v.memory_mib).sum();
    if total == 0 {
        return None;
    }
    let what = if h.vms.is_empty() {
        format!("host.vm.memory_mib {total}")
    } else {
        format!("the {total} MiB of host.vms[*].memory_mib")
    };
    Some((total, what))
}

/// Machine checks of `host.vms`: every CPU a VM names must exist.
pub(crate) fn validate_against(h: &Host, m: &Machine, e: &mut Errors) {
    for (i, s) in h.vms.iter().enumerate() {
        let p = format!("host.vms[{i}]");
        for (k, v) in s.vcpus.iter().enumerate() {
            m.check_set(
                e,
                &format!("{p}.vcpus[{k}].cpu"),
                &CpuSet::from_cpus([v.cpu]),
            );
        }
        for (field, set) in [
            ("emulator_cpus", &s.emulator_cpus),
            ("iothread_cpus", &s.iothread_cpus),
        ] {
            if let Some(set) = set {
                m.check_set(e, &format!("{p}.{field}"), set);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_vms() -> crate::Profile {
        let text = r#"Profile(name: "two", host: (
            housekeeping_cpus: "0-1", realtime_cpus: "2-7",
            hugepages: (size_kib: 2048, count: 2048),
            emulator_cpus: "0",
            vms: [
                (name: "ecu0", memory_mib: 2048, vcpus: [(vcpu: 0, cpu: 2), (vcpu: 1, cpu: 3)]),
                (name: "ecu1", memory_mib: 1024, cpus: 3, iothread_cpus: "1",
                 vcpus: [(vcpu: 1, cpu: 4), (vcpu: 2, cpu: 5, policy: Rr, priority: 10)],
                 find: (pidfile: "/run/ecu1.pid"),
                 can_buses: [(id: "canbus0", controllers: 2, host_interface: "vcan0")]),
            ],
        ))"#;
        crate::parse(text, "two").unwrap()
    }

    fn errors(p: &crate::Profile) -> Vec<String> {
        match crate::validate(p) {
            Ok(()) => Vec::new(),
            Err(v) => v.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_fill_both_forms() {
        let p = two_vms();
        assert_eq!(errors(&p), Vec::<String>::new());
        let vms = host_vms(p.host.as_ref().unwrap());
        assert_eq!(vms.len(), 2);
        let (a, b) = (&vms[0], &vms[1]);
        assert_eq!(a.find.qemu_name.as_deref(), Some("ecu0"), "found by name");
        assert_eq!((a.cpus, b.cpus), (2, 3));
        assert_eq!(a.emulator_cpus.to_string(), "0", "host.emulator_cpus");
        assert_eq!(a.iothread_cpus.to_string(), "0-1", "housekeeping");
        assert_eq!(b.iothread_cpus.to_string(), "1");
        assert_eq!(a.hugepage_kib, Some(2048), "host.hugepages");
        assert_eq!(
            b.find.pidfile.as_deref(),
            Some(std::path::Path::new("/run/ecu1.pid"))
        );
        assert_eq!(b.realtime_vcpus().to_string(), "1-2");
        let lab = crate::test_profiles::single_vm();
        let one = host_vms(lab.host.as_ref().unwrap());
        assert_eq!(one.len(), 1);
        assert_eq!(
            (
                one[0].name.as_str(),
                one[0].cpus,
                one[0].memory_mib,
                one[0].path.as_str()
            ),
            ("lab", 2, Some(512), "host")
        );
    }

    #[test]
    fn realtime_vcpus_of_two_vms_never_share_a_cpu() {
        let mut p = two_vms();
        p.host.as_mut().unwrap().vms[1].vcpus[0].cpu = 3;
        assert_eq!(
            errors(&p),
            [
                "host.vms[1].vcpus[0].cpu: 3 already runs vCPU 1 of VM \"ecu0\" \
              (host.vms[0].vcpus[1]): one real-time vCPU per CPU, across all VMs"
            ]
        );
        // Two SCHED_OTHER vCPUs of two VMs may share a housekeeping CPU.
        let h = p.host.as_mut().unwrap();
        for (vm, idx) in [(0, 1), (1, 0)] {
            let v = &mut h.vms[vm].vcpus[idx];
            v.cpu = 1;
            v.policy = Policy::Other;
            v.priority = 0;
        }
        assert_eq!(errors(&p), Vec::<String>::new());
    }

    #[test]
    fn housekeeping_stays_free_of_realtime_vcpus_and_emulators_off_realtime() {
        let mut p = two_vms();
        let h = p.host.as_mut().unwrap();
        h.vms[0].vcpus[0].cpu = 0;
        h.vms[1].emulator_cpus = Some(CpuSet::parse("1-2").unwrap());
        let e = errors(&p);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("host.vms[0].vcpus[0].cpu: 0 is not a realtime CPU"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "host.vms[1].emulator_cpus: \"1-2\" has CPU 2, which is also realtime"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn each_field_error_names_its_path_and_value() {
        let mut p = two_vms();
        let h = p.host.as_mut().unwrap();
        h.vms[1].name = "ecu0".into();
        h.vms[1].cpus = Some(2);
        h.vms[0].hugepage_kib = Some(1_048_576);
        h.vms[0].emulator_policy = Policy::Fifo;
        h.vms[1].can_buses[0].controllers = 0;
        h.vms[1].can_buses[0].host_interface = Some("a/b".into());
        h.vms[1].find.as_mut().unwrap().memory_mib = Some(1);
        h.vms[0].boot = Some(VmBoot {
            initrd: Some("/boot/initrd".into()),
            ..VmBoot::default()
        });
        let e = errors(&p);
        assert_eq!(
            e,
            [
                "host.vms[0].emulator_priority: 0 is outside 1..=99 for policy fifo",
                "host.vms[0].hugepage_kib: 1048576 differs from host.hugepages.size_kib 2048: \
                 rt-host reserves one page size",
                "host.vms[0].boot.initrd: is set but host.vms[0].boot.kernel is not: it only \
                 applies to a kernel",
                "host.vms[1].name: \"ecu0\" is already the name of host.vms[0]",
                "host.vms[1].find.memory_mib: 1 repeats the VM's memory: give it once, in \
                 host.vms[1].memory_mib",
                "host.vms[1].cpus: 2 is fewer than the vCPUs placed in host.vms[1].vcpus \
                 (index 2 needs 3)",
                "host.vms[1].can_buses[0].controllers: 0 is outside 1..=4",
                "host.vms[1].can_buses[0].host_interface: \"a/b\" is not an interface name \
                 (at most 15 bytes, no '/' or spaces)",
            ]
        );
    }

    #[test]
    fn both_forms_at_once_and_too_few_hugepages_are_refused() {
        let mut p = two_vms();
        let h = p.host.as_mut().unwrap();
        h.vm = Some(Vm {
            qemu_name: Some("x".into()),
            ..Vm::default()
        });
        h.hugepages.as_mut().unwrap().count = 1024;
        let e = errors(&p);
        assert_eq!(
            e,
            [
                "host.hugepages.count: 1024 pages of 2048 KiB (2048 MiB) cannot hold the 3072 \
                 MiB of host.vms[*].memory_mib",
                "host.vm: is set together with host.vms (2 VM(s)): describe every VM in host.vms",
            ]
        );
        let mut p = two_vms();
        p.host.as_mut().unwrap().vms[0].name = "bad,name".into();
        assert_eq!(
            errors(&p),
            [
                "host.vms[0].name: \"bad,name\" is not a VM name: 1 to 63 of A-Z a-z 0-9 - _ . \
              (not starting with - or .)"
            ]
        );
    }
}
