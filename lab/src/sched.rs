//! The scheduling state of QEMU's vCPU threads, read from `/proc/PID/task/TID/stat`
//! through `rt-sys` (policy is field 41, priority field 40; see proc(5)).

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

/// The vCPU threads (`CPU n/SUFFIX`) of process `pid`, sorted by name.
pub fn vcpu_samples(pid: u32, suffix: &str) -> Result<Vec<VcpuSample>> {
    let root = SysRoot::live();
    let mut out = Vec::new();
    for t in rt_sys::task::threads(&root, pid)
        .with_context(|| format!("Listing the threads of QEMU pid {pid}"))?
    {
        if rt_sys::task::vcpu_index(&t.name).is_none() || !t.name.ends_with(suffix) {
            continue;
        }
        let st = rt_sys::task::task_stat(&root, pid, t.tid)
            .with_context(|| format!("Reading thread {} of pid {pid}", t.tid))?;
        let affinity = rt_sys::sched::get_affinity(t.tid)
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
    out.sort_by(|a, b| a.name.cmp(&b.name));
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
}
