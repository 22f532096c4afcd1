//! The building blocks of profile validation, shared by the checks of the whole profile
//! (`validate`) and of `host.vms` (`vms`): the error list, the machine's CPUs, and the
//! rules for priorities, CPU sets, VM locators and interface names.

use std::collections::BTreeMap;

use rt_sys::sched::Policy;
use rt_sys::{CpuSet, SysRoot};

/// One semantic problem in a profile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Field path, e.g. `host.vcpus[0].priority`.
    pub path: String,
    /// What is wrong, with the bad value.
    pub message: String,
}

impl ValidationError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Highest real-time priority of SCHED_FIFO and SCHED_RR.
pub const MAX_RT_PRIORITY: u8 = 99;

/// Hugepage sizes accepted, KiB (x86-64: 2 MiB and 1 GiB).
pub const HUGEPAGE_SIZES_KIB: [u64; 2] = [2048, 1_048_576];

/// Longest Linux network interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The CPUs a machine has, and which file said so.
pub(crate) struct Machine {
    pub(crate) cpus: CpuSet,
    /// `online` or `present`.
    pub(crate) source: &'static str,
}

impl Machine {
    pub(crate) fn read(root: &SysRoot) -> Result<Machine, String> {
        let mut last = String::new();
        use rt_sys::cpulist;
        for (source, read) in [
            ("online", cpulist::online as fn(&SysRoot) -> _),
            ("present", cpulist::present),
        ] {
            match read(root) {
                Ok(cpus) => return Ok(Machine { cpus, source }),
                Err(err @ rt_sys::SysError::Parse { .. }) => {
                    return Err(format!("cannot tell which CPUs exist: {err}"))
                }
                Err(err) => last = err.to_string(),
            }
        }
        Err(format!("cannot tell which CPUs exist: {last}"))
    }

    pub(crate) fn check_set(&self, e: &mut Errors, path: &str, set: &CpuSet) {
        let missing = set.difference(&self.cpus);
        if !missing.is_empty() {
            e.push(
                path,
                format!(
                    "{} not {} on this machine ({}: {})",
                    cpus_are(&missing),
                    self.source,
                    self.source,
                    self.cpus
                ),
            );
        }
    }
}

/// Collected errors.
#[derive(Default)]
pub(crate) struct Errors(Vec<ValidationError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(path, message));
    }

    pub(crate) fn finish(self) -> Result<(), Vec<ValidationError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// A CPU set as written in a profile: `"0-1"`.
pub(crate) fn q(set: &CpuSet) -> String {
    format!("\"{set}\"")
}

/// `CPU 3 is` or `CPUs 2-7 are`.
pub(crate) fn cpus_are(set: &CpuSet) -> String {
    if set.len() == 1 {
        format!("CPU {set} is")
    } else {
        format!("CPUs {set} are")
    }
}

/// Priority rules of the kernel: 1..=99 for FIFO/RR, 0 for the others.
pub(crate) fn priority(e: &mut Errors, path: &str, policy: Policy, prio: u8, default_note: &str) {
    if policy.is_realtime() {
        if prio == 0 || prio > MAX_RT_PRIORITY {
            e.push(
                path,
                format!("{prio} is outside 1..={MAX_RT_PRIORITY} for policy {policy}"),
            );
        }
    } else if prio != 0 {
        e.push(
            path,
            format!("{prio} must be 0 for policy {policy}{default_note}"),
        );
    }
}

/// A real-time priority that is always FIFO (sender threads, IRQ threads).
pub(crate) fn fifo_priority(e: &mut Errors, path: &str, prio: u8) {
    if prio == 0 || prio > MAX_RT_PRIORITY {
        e.push(path, format!("{prio} is outside 1..={MAX_RT_PRIORITY}"));
    }
}

/// An optional CPU set that must not be empty and must stay off the realtime CPUs.
pub(crate) fn off_realtime(
    e: &mut Errors,
    path: &str,
    set: &CpuSet,
    realtime: &CpuSet,
    what: &str,
) {
    if set.is_empty() {
        e.push(path, format!("\"\" is empty: {what} need at least one CPU"));
        return;
    }
    let both = set.intersection(realtime);
    if !both.is_empty() {
        e.push(
            path,
            format!(
                "{} {} also realtime (realtime_cpus {}): {what} belong on housekeeping CPUs",
                q(set),
                if both.len() == 1 {
                    format!("has CPU {both}, which is")
                } else {
                    format!("has CPUs {both}, which are")
                },
                q(realtime)
            ),
        );
    }
}

/// A VM locator (`host.vm`, `host.vms[i].find`): exactly one way to find the process.
pub(crate) fn vm_locator(e: &mut Errors, path: &str, vm: &crate::Vm) {
    let mut set = Vec::new();
    if let Some(n) = &vm.qemu_name {
        set.push(format!("qemu_name {n:?}"));
        if n.trim().is_empty() {
            e.push(format!("{path}.qemu_name"), "\"\" is empty");
        }
    }
    if let Some(n) = &vm.libvirt {
        set.push(format!("libvirt {n:?}"));
        // It names a file in libvirt's run directory.
        if n.trim().is_empty() || n.contains('/') || n.starts_with('.') {
            e.push(
                format!("{path}.libvirt"),
                format!("{n:?} is not a libvirt domain name (empty, a '/' or a leading '.')"),
            );
        }
    }
    if let Some(p) = vm.pid {
        set.push(format!("pid {p}"));
        if p == 0 {
            e.push(format!("{path}.pid"), "0 is not a process id");
        }
    }
    if let Some(p) = &vm.pidfile {
        set.push(format!("pidfile {:?}", p.display().to_string()));
    }
    if let Some(p) = &vm.qmp {
        set.push(format!("qmp {:?}", p.display().to_string()));
    }
    match set.len() {
        0 => e.push(
            path,
            "names no process: set one of qemu_name, libvirt, pid, pidfile or qmp",
        ),
        1 => {}
        2 => e.push(
            path,
            format!("{} are both set: choose one", set.join(" and ")),
        ),
        _ => e.push(path, format!("{} are all set: choose one", set.join(", "))),
    }
    if vm.memory_mib == Some(0) {
        e.push(format!("{path}.memory_mib"), "0 is not a memory size");
    }
}

/// A list of vCPU placements (`host.vcpus`, `host.vms[i].vcpus`): indices unique,
/// priorities valid, real-time vCPUs on realtime CPUs and alone on their CPU.
/// Where a real-time vCPU may sit besides the realtime CPUs: beside a real-time main loop
/// above it (so a busy vCPU never starves QEMU's timers and device emulation), on the
/// VM's emulator CPUs, with RT throttling kept (so the host keeps its share of them).
/// Under TCG this keeps the vCPU that holds QEMU's big lock from being preempted there.
#[derive(Debug, Clone, Default)]
pub(crate) struct BesideMainLoop {
    /// The VM's emulator CPUs (empty: no such place).
    pub cpus: CpuSet,
    /// The main loop's real-time priority (0: not real-time).
    pub priority: u8,
}

impl BesideMainLoop {
    /// Real-time vCPUs at `prio` may sit on `cpu`.
    fn allows(&self, cpu: u32, prio: u8) -> bool {
        self.priority > prio && self.cpus.contains(cpu)
    }
}

pub(crate) fn vcpu_list(
    e: &mut Errors,
    base: &str,
    vcpus: &[crate::VcpuPin],
    rt: &CpuSet,
    beside: &BesideMainLoop,
) {
    let mut by_index: BTreeMap<u32, usize> = BTreeMap::new();
    let mut by_cpu: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, v) in vcpus.iter().enumerate() {
        let p = format!("{base}[{i}]");
        if let Some(j) = by_index.insert(v.vcpu, i) {
            by_index.insert(v.vcpu, j);
            e.push(
                format!("{p}.vcpu"),
                format!("{} is already placed by {base}[{j}]", v.vcpu),
            );
        }
        priority(
            e,
            &format!("{p}.priority"),
            v.policy,
            v.priority,
            " (priority defaults to 50: write priority: 0)",
        );
        let realtime = v.policy.is_realtime();
        if realtime && !rt.is_empty() && !rt.contains(v.cpu) && !beside.allows(v.cpu, v.priority) {
            e.push(
                format!("{p}.cpu"),
                format!(
                    "{} is not a realtime CPU (realtime_cpus {}): a {} vCPU belongs on an \
                     isolated CPU, or on the VM's emulator CPUs below a real-time main loop \
                     (emulator_policy Fifo above its priority, RT throttling kept)",
                    v.cpu,
                    q(rt),
                    v.policy
                ),
            );
        }
        match by_cpu.get(&v.cpu) {
            Some(&j) if realtime || vcpus[j].policy.is_realtime() => e.push(
                format!("{p}.cpu"),
                format!(
                    "{} already runs vCPU {} ({base}[{j}]): one real-time vCPU per CPU",
                    v.cpu, vcpus[j].vcpu
                ),
            ),
            Some(_) => {}
            None => {
                by_cpu.insert(v.cpu, i);
            }
        }
    }
}

pub(crate) fn ifname(e: &mut Errors, path: &str, name: &str) {
    if name.is_empty() {
        e.push(path, "\"\" is empty: name a CAN interface (e.g. \"can0\")");
    } else if name.len() > MAX_IFNAME || name.contains('/') || name.chars().any(char::is_whitespace)
    {
        e.push(
            path,
            format!(
                "{name:?} is not an interface name (at most {MAX_IFNAME} bytes, no '/' or spaces)"
            ),
        );
    }
}
