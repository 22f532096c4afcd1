//! Kernel facts an evidence record needs: release, PREEMPT_RT, command line, the
//! hypervisor we run under (KVM, TCG, ...), nested virtualization, cgroup version.
//!
//! PREEMPT_RT: `/sys/kernel/realtime` reads `1` on RT kernels, and `/proc/version`
//! (uname -v) contains `PREEMPT_RT`. Hypervisor: the `hypervisor` flag in
//! `/proc/cpuinfo` and the CPUID leaf 0x40000000 signature (`KVMKVMKVM`, `TCGTCGTCGTCG`).
//! See <https://docs.kernel.org/virt/kvm/x86/cpuid.html>.

use serde::{Deserialize, Serialize};

use crate::{SysError, SysRoot};

/// What the machine we run on is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    /// No hypervisor flag: bare metal.
    None,
    /// Under KVM (hardware-assisted).
    Kvm,
    /// Under QEMU's TCG emulator: timing is not real-time.
    Tcg,
    /// Under another hypervisor (Hyper-V, VMware, Xen, ...).
    Other,
}

/// Facts about the running kernel and machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `uname -v` (holds `PREEMPT_RT` on RT kernels).
    pub version: String,
    /// True for a PREEMPT_RT kernel.
    pub preempt_rt: bool,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// The hypervisor, if any.
    pub virtualization: Virtualization,
    /// The hypervisor signature from CPUID leaf 0x40000000, if any.
    pub hypervisor_signature: Option<String>,
    /// The CPU model name.
    pub cpu_model: String,
    /// Number of online CPUs.
    pub online_cpus: String,
    /// True when we are a guest and the CPU exposes vmx/svm: guests of ours would be nested.
    pub nested_capable: bool,
    /// cgroup version: 2 when `/sys/fs/cgroup` is cgroup2 only, 1 otherwise.
    pub cgroup_version: u8,
}

/// True when a `uname -v` text or `/sys/kernel/realtime` says PREEMPT_RT.
pub fn is_preempt_rt(version: &str, realtime_flag: Option<&str>) -> bool {
    realtime_flag.map(str::trim) == Some("1") || version.contains("PREEMPT_RT")
}

/// The value of `key` in one-line-per-key `/proc/cpuinfo` text (first CPU).
pub fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The CPU vendor (`vendor_id` of `/proc/cpuinfo`: `GenuineIntel`, `AuthenticAMD`, ...).
pub fn cpu_vendor(root: &SysRoot) -> Option<String> {
    let text = root.read(CPUINFO).ok()?;
    cpuinfo_field(&text, "vendor_id").map(str::to_string)
}

/// Classify the hypervisor from the `hypervisor` cpuinfo flag and the CPUID signature.
pub fn classify(has_hypervisor_flag: bool, signature: Option<&str>) -> Virtualization {
    match signature {
        Some(s) if s.starts_with("TCG") => Virtualization::Tcg,
        Some(s) if s.starts_with("KVMKVMKVM") => Virtualization::Kvm,
        Some(s) if !s.is_empty() => Virtualization::Other,
        _ if has_hypervisor_flag => Virtualization::Other,
        _ => Virtualization::None,
    }
}

/// The hypervisor vendor signature from CPUID leaf 0x40000000 (x86 only).
pub fn hypervisor_signature() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID is available on every x86_64 CPU; leaf 0x40000000 is reserved for
        // hypervisors and returns zeros (or garbage we filter) on bare metal.
        #[allow(unused_unsafe)]
        let r = unsafe { __cpuid(0x4000_0000) };
        let mut bytes = Vec::with_capacity(12);
        for w in [r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let s: String = bytes
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        if s.chars().all(|c| c.is_ascii_graphic()) && !s.is_empty() {
            return Some(s);
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The kernel command line (`/proc/cmdline`).
pub const CMDLINE: &str = "proc/cmdline";
/// `uname -r`.
pub const OSRELEASE: &str = "proc/sys/kernel/osrelease";
/// `uname -v` (holds `PREEMPT_RT` on RT kernels).
pub const VERSION: &str = "proc/sys/kernel/version";
/// `uname -s`.
pub const OSTYPE: &str = "proc/sys/kernel/ostype";
/// `1` on PREEMPT_RT kernels (`/sys/kernel/realtime`).
pub const REALTIME: &str = "sys/kernel/realtime";
/// CPU model and flags (`/proc/cpuinfo`).
pub const CPUINFO: &str = "proc/cpuinfo";
/// Per-CPU time counters, steal time among them (`/proc/stat`).
pub const STAT: &str = "proc/stat";
/// The clocksource in use.
/// See <https://docs.kernel.org/timers/timekeeping.html>.
pub const CLOCKSOURCE: &str = "sys/devices/system/clocksource/clocksource0/current_clocksource";
/// The KVM device (`/dev/kvm`).
pub const KVM_DEVICE: &str = "dev/kvm";
/// KVM's halt polling (`halt_poll_ns` of module kvm).
/// See <https://docs.kernel.org/virt/kvm/halt-polling.html>.
pub const KVM_HALT_POLL_NS: &str = "sys/module/kvm/parameters/halt_poll_ns";
/// The guest's halt polling (`guest_halt_poll_ns` of module haltpoll).
/// See <https://docs.kernel.org/virt/guest-halt-polling.html>.
pub const GUEST_HALT_POLL_NS: &str = "sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The sysfs directory of module `module` (present while it is loaded or built in).
pub fn module_dir(module: &str) -> String {
    format!("sys/module/{module}")
}

/// The file of parameter `name` of module `module` (`sys/module/kvm/parameters/...`).
pub fn module_param(module: &str, name: &str) -> String {
    format!("sys/module/{module}/parameters/{name}")
}

/// True when a module parameter (or any sysfs file) is writable by its owner: the kernel
/// gives runtime-changeable parameters mode 0644, the others 0444.
pub fn writable(root: &SysRoot, rel: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(root.path(rel)).is_ok_and(|m| m.permissions().mode() & 0o200 != 0)
}

/// Whether this CPU is affected by iTLB multihit, which `kvm.nx_huge_pages` mitigates
/// (`Not affected`, `KVM: Mitigation: Split huge pages`, `KVM: Vulnerable`).
/// See <https://docs.kernel.org/admin-guide/hw-vuln/multihit.html>.
pub const ITLB_MULTIHIT: &str = "sys/devices/system/cpu/vulnerabilities/itlb_multihit";

/// A random id the kernel draws at each boot (`/proc/sys/kernel/random/boot_id`).
pub const BOOT_ID: &str = "proc/sys/kernel/random/boot_id";
/// The host name (`/proc/sys/kernel/hostname`).
pub const HOSTNAME: &str = "proc/sys/kernel/hostname";

/// This boot's id: a journal written before a reboot names threads and values of another boot.
pub fn boot_id(root: &SysRoot) -> Result<String, SysError> {
    root.read_trim(BOOT_ID)
}

/// The host name.
pub fn hostname(root: &SysRoot) -> Result<String, SysError> {
    root.read_trim(HOSTNAME)
}

/// Gather [`KernelFacts`] from `root`. On a fake root the CPUID signature is not read.
pub fn facts(root: &SysRoot) -> Result<KernelFacts, SysError> {
    let release = root.read_trim(OSRELEASE)?;
    let version = root.read_trim(VERSION)?;
    let rt_flag = root.read(REALTIME).ok();
    let cmdline = root.read_trim(CMDLINE)?;
    let cpuinfo = root.read(CPUINFO).unwrap_or_default();
    let flags: Vec<&str> = cpuinfo_field(&cpuinfo, "flags")
        .unwrap_or("")
        .split(' ')
        .collect();
    let has_hv = flags.contains(&"hypervisor");
    let signature = if root.is_live() && has_hv {
        hypervisor_signature()
    } else {
        None
    };
    let virtualization = classify(has_hv, signature.as_deref());
    let cgroup_version = if root.exists("sys/fs/cgroup/cgroup.controllers") {
        2
    } else {
        1
    };
    Ok(KernelFacts {
        preempt_rt: is_preempt_rt(&version, rt_flag.as_deref()),
        release,
        version,
        cmdline,
        virtualization,
        hypervisor_signature: signature,
        cpu_model: cpuinfo_field(&cpuinfo, "model name")
            .unwrap_or("unknown")
            .to_string(),
        online_cpus: crate::cpulist::online(root)
            .map(|c| c.to_string())
            .unwrap_or_default(),
        nested_capable: has_hv && (flags.contains(&"vmx") || flags.contains(&"svm")),
        cgroup_version,
    })
}

/// The value of `key` in a kernel command line (`isolcpus=1-3` gives `Some("1-3")`,
/// a bare `nosoftlockup` gives `Some("")`). The last occurrence wins, as in the kernel.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter_map(|w| match w.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if w == key => Some(""),
            _ => None,
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preempt_rt_detection() {
        assert!(is_preempt_rt(
            "#1 SMP PREEMPT_RT Debian 6.1.192-2 (2026-10-01)",
            None
        ));
        assert!(is_preempt_rt("#1 SMP", Some("1\n")));
        assert!(!is_preempt_rt("#1 SMP PREEMPT_DYNAMIC @0", None));
    }

    #[test]
    fn hypervisor_classification() {
        assert_eq!(classify(true, Some("TCGTCGTCGTCG")), Virtualization::Tcg);
        assert_eq!(classify(true, Some("KVMKVMKVM")), Virtualization::Kvm);
        assert_eq!(classify(true, None), Virtualization::Other);
        assert_eq!(classify(false, None), Virtualization::None);
    }

    #[test]
    fn cmdline_values() {
        // The command line of this machine, shortened.
        let c = "console=ttyS0 quiet isolcpus=managed_irq,domain,1 nohz_full=1 nosoftlockup -- --addr 0.0.0.0";
        assert_eq!(cmdline_value(c, "isolcpus"), Some("managed_irq,domain,1"));
        assert_eq!(cmdline_value(c, "nosoftlockup"), Some(""));
        assert_eq!(cmdline_value(c, "rcu_nocbs"), None);
        assert_eq!(cmdline_value(c, "--addr"), None);
    }

    #[test]
    fn facts_from_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let w = |p: &str, v: &str| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        w("proc/sys/kernel/osrelease", "6.1.0-41-rt-amd64\n");
        w(
            "proc/sys/kernel/version",
            "#1 SMP PREEMPT_RT Debian 6.1.192-2\n",
        );
        w("proc/cmdline", "console=ttyS0 isolcpus=1\n");
        w("proc/cpuinfo", "processor\t: 0\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu vme hypervisor vmx\n");
        w("sys/devices/system/cpu/online", "0-1\n");
        let f = facts(&root).unwrap();
        assert!(f.preempt_rt);
        assert_eq!(f.virtualization, Virtualization::Other);
        assert!(f.nested_capable);
        assert_eq!(f.online_cpus, "0-1");
        assert_eq!(f.cgroup_version, 1);
    }

    #[test]
    fn live_facts_read() {
        let f = facts(&SysRoot::live()).unwrap();
        assert!(!f.release.is_empty());
    }
}
