//! The scheduling state of QEMU's vCPU threads, read from `/proc/PID/task/TID/stat`
//! (policy is field 41, priority field 40; see proc(5)) and the affinity through
//! `rt-sys` thread operations: on the live system, or in a snapshot of another machine's
//! `/proc` (the host lab's outer host) with the same code.

use anyhow::{Context, Result};
use rt_sys::sched::Policy;
use rt_sys::SysRoot;

/// The scheduling state of one vCPU thread at one moment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct VcpuSample {
    /// Thread name (`CPU 1/TCG`).
    pub name: String,
    /// Thread id.
    pub tid: u32,
    /// Policy name (`other`, `fifo`, ...).
    pub policy: String,
    /// Real-time priority.
    pub priority: u32,
    /// CPUs it may run on.
    pub affinity: String,
}

/// The policy name of a raw `stat` policy number.
pub fn policy_name(raw: u32) -> String {
    i32::try_from(raw)
        .ok()
        .and_then(Policy::from_raw)
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("policy-{raw}"))
}

/// The vCPU threads (`CPU n/SUFFIX`) of process `pid` on this machine, sorted by name.
pub fn vcpu_samples(pid: u32, suffix: &str) -> Result<Vec<VcpuSample>> {
    vcpu_samples_in(&SysRoot::live(), pid, suffix)
}

/// The vCPU threads (`CPU n/SUFFIX`) of process `pid` under `root`, sorted by name.
pub fn vcpu_samples_in(root: &SysRoot, pid: u32, suffix: &str) -> Result<Vec<VcpuSample>> {
    samples_in(root, pid, |name| {
        rt_sys::task::vcpu_index(name).is_some() && name.ends_with(suffix)
    })
}

/// Every thread of process `pid` under `root` whose name passes `keep`, sorted by name.
pub fn samples_in(
    root: &SysRoot,
    pid: u32,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<VcpuSample>> {
    let ops = rt_sys::threads::for_root(root);
    let mut out = Vec::new();
    for t in rt_sys::task::threads(root, pid)
        .with_context(|| format!("Listing the threads of QEMU pid {pid}"))?
    {
        if !keep(&t.name) {
            continue;
        }
        let st = rt_sys::task::task_stat(root, pid, t.tid)
            .with_context(|| format!("Reading thread {} of pid {pid}", t.tid))?;
        let affinity = ops
            .get_affinity(root, pid, t.tid)
            .map(|c| c.to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        out.push(VcpuSample {
            name: t.name,
            tid: t.tid,
            policy: policy_name(st.policy),
            priority: st.rt_priority,
            affinity,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.tid.cmp(&b.tid)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names() {
        assert_eq!(policy_name(1), Policy::Fifo.to_string());
        assert_eq!(policy_name(0), Policy::Other.to_string());
        assert_eq!(policy_name(77), "policy-77");
    }

    #[test]
    fn samples_from_a_snapshot_of_another_machines_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let put = |tid: u32, name: &str, policy: u32, prio: u32, cpus: &str| {
            let d = root.path(format!("proc/300/task/{tid}"));
            std::fs::create_dir_all(&d).unwrap();
            let tail = (4..=52)
                .map(|n| match n {
                    22 => "77".to_string(),
                    40 => prio.to_string(),
                    41 => policy.to_string(),
                    _ => "0".to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            std::fs::write(d.join("stat"), format!("{tid} ({name}) S {tail}\n")).unwrap();
            std::fs::write(
                d.join("status"),
                format!("Name:\t{name}\nTgid:\t300\nCpus_allowed_list:\t{cpus}\n"),
            )
            .unwrap();
        };
        put(300, "qemu-system-x86", 0, 0, "0");
        put(302, "CPU 1/KVM", 1, 50, "2");
        put(301, "CPU 0/KVM", 1, 50, "1");
        let v = vcpu_samples_in(&root, 300, "KVM").unwrap();
        let names: Vec<_> = v
            .iter()
            .map(|s| (s.name.as_str(), s.tid, s.affinity.as_str()))
            .collect();
        assert_eq!(names, [("CPU 0/KVM", 301, "1"), ("CPU 1/KVM", 302, "2")]);
        assert_eq!((v[0].policy.as_str(), v[0].priority), ("fifo", 50));
        assert!(vcpu_samples_in(&root, 300, "TCG").unwrap().is_empty());
    }
}
