//! Where the kernel keeps what rt-host reads and tunes, as shell globs on an absolute
//! root: sysctls, THP and KSM, hugepages, KVM parameters, IRQ affinities, cpuidle, the
//! unbound workqueue mask, every thread's `stat`, `status` and `cgroup`, and the cgroup v2
//! cpuset files. For a copy of that state taken on another machine (the host lab's
//! snapshots of its outer host), to be read back through a [`crate::SysRoot`].
//! See <https://docs.kernel.org/admin-guide/sysctl/>, <https://docs.kernel.org/filesystems/proc.html>
//! and <https://docs.kernel.org/admin-guide/cgroup-v2.html>.

/// The files, as shell globs.
pub const GLOBS: &[&str] = &[
    "/proc/cmdline",
    "/proc/meminfo",
    "/proc/mounts",
    "/proc/interrupts",
    "/proc/cpuinfo",
    "/proc/sys/kernel/*",
    "/proc/sys/vm/*",
    "/sys/kernel/realtime",
    "/sys/kernel/mm/transparent_hugepage/*",
    "/sys/kernel/mm/ksm/*",
    "/sys/kernel/mm/hugepages/*/*",
    "/sys/module/kvm/parameters/*",
    "/sys/module/kvm_amd/parameters/*",
    "/sys/module/kvm_intel/parameters/*",
    "/proc/irq/default_smp_affinity",
    "/proc/irq/*/smp_affinity",
    "/proc/irq/*/smp_affinity_list",
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/cpu*/cpuidle/state*/*",
    "/sys/devices/virtual/workqueue/cpumask",
    "/proc/[0-9]*/stat",
    "/proc/[0-9]*/status",
    "/proc/[0-9]*/task/[0-9]*/stat",
    "/proc/[0-9]*/task/[0-9]*/status",
    "/proc/[0-9]*/task/[0-9]*/cgroup",
];

/// Files among [`GLOBS`] that must not be read: reading them makes the kernel act.
/// `stat_refresh` runs work on every CPU and waits for it, which never ends on a realtime
/// CPU whose FIFO thread polls without RT throttling (seen in the host lab: a reader
/// blocked for minutes in `vmstat_refresh`); the others are write-only triggers.
pub const TRIGGERS: &[&str] = &["*/stat_refresh", "*/drop_caches", "*/compact_memory"];

/// The cgroup v2 hierarchy, whose directories (down to depth 3) hold [`CGROUP_FILES`].
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup files read in each cgroup directory.
pub const CGROUP_FILES: &[&str] = &[
    "cgroup.type",
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cgroup.threads",
    "cgroup.procs",
    "cpuset.cpus",
    "cpuset.cpus.effective",
    "cpuset.cpus.partition",
    "cpuset.mems",
];

/// Every IRQ's affinity file, as a glob.
pub const IRQ_AFFINITIES: &str = "/proc/irq/*/smp_affinity";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_cover_what_rt_host_writes() {
        // The knobs rt-host writes, as the rest of rt-sys names them.
        for rel in [
            crate::kernel::KVM_DEVICE,
            "proc/sys/kernel/sched_rt_runtime_us",
            "sys/devices/virtual/workqueue/cpumask",
        ] {
            let abs = format!("/{rel}");
            let covered = GLOBS.iter().any(|g| {
                g.strip_suffix('*')
                    .map_or(*g == abs, |p| abs.starts_with(p))
            });
            assert!(covered || rel == crate::kernel::KVM_DEVICE, "{abs}");
        }
        assert!(GLOBS.contains(&IRQ_AFFINITIES));
        assert!(TRIGGERS.iter().all(|t| t.starts_with("*/")));
    }
}
