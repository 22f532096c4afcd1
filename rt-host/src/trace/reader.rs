//! Where `rt-host trace` itself runs: its threads (the one that reads `trace_pipe`, the
//! clock exchange, writing the record) are pinned with `sched_setaffinity(2)` (through
//! [`rt_sys::sched`]) to housekeeping CPUs, so that the tool does not disturb the CPUs it
//! measures. Measured were 0.9-1.8 ms of the reader on the measured CPU inside the guest's
//! spike windows before it was pinned (docs/host-trace.md).

use rt_sys::CpuSet;

use record::hosttrace::VcpuThread;

use super::TraceError;

/// The CPUs chosen for the trace's own threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderCpus {
    /// Where its threads run.
    pub cpus: CpuSet,
    /// What they keep off: the CPUs recorded whole and those of the vCPU threads.
    pub measured: CpuSet,
    /// Empty, or which vCPU threads may also run on `cpus` and why that was accepted.
    pub note: String,
}

/// The housekeeping CPUs for the trace's threads: the online CPUs that are neither
/// recorded whole (`recorded`, `--cpus`) nor allowed to a vCPU thread. When every online
/// CPU carries a vCPU thread (a 2-CPU host with vCPU 0 on the housekeeping CPU, as the
/// lab), the CPUs not recorded whole are taken and the vCPU threads sharing them are named
/// in the note (the trace's threads run `SCHED_OTHER`: a FIFO vCPU there is not preempted
/// by them); when every online CPU is recorded whole, it is refused.
pub fn reader_cpus(
    online: &CpuSet,
    recorded: Option<&CpuSet>,
    vcpus: &[VcpuThread],
) -> Result<ReaderCpus, TraceError> {
    let recorded = recorded.cloned().unwrap_or_default();
    let vcpu_cpus = super::vcpu_cpus(vcpus);
    let measured = recorded.union(&vcpu_cpus);
    let free = online.difference(&measured);
    if !free.is_empty() {
        return Ok(ReaderCpus {
            cpus: free,
            measured,
            note: String::new(),
        });
    }
    let cpus = online.difference(&recorded);
    if cpus.is_empty() {
        return Err(TraceError::NoHousekeeping {
            online: online.to_string(),
            recorded: recorded.to_string(),
        });
    }
    let sharing: Vec<String> = vcpus
        .iter()
        .filter(|v| !super::allowed(v).intersection(&cpus).is_empty())
        .map(|v| format!("{} (vCPU {}, CPUs {})", v.name, v.vcpu, v.cpus_allowed))
        .collect();
    let note = format!(
        "no online CPU is free of the recorded CPUs ({}) and the vCPU threads' CPUs ({vcpu_cpus}): the trace runs on CPUs {cpus}, beside {}",
        if recorded.is_empty() { "none".to_string() } else { recorded.to_string() },
        sharing.join(", ")
    );
    Ok(ReaderCpus {
        cpus,
        measured: recorded,
        note,
    })
}

/// Pin the calling thread to `cpus` (threads it starts inherit it) and read it back; its
/// thread id.
pub fn pin_self(cpus: &CpuSet) -> Result<u32, TraceError> {
    let tid = rt_sys::sched::gettid();
    let doing = || format!("Pinning rt-host trace (tid {tid}) to its housekeeping CPUs {cpus}");
    rt_sys::sched::set_affinity(tid, cpus).map_err(super::sys(doing()))?;
    let got = rt_sys::sched::get_affinity(tid).map_err(super::sys(doing()))?;
    if &got != cpus {
        return Err(TraceError::Option {
            option: "reader CPUs",
            detail: format!("{}: the kernel gave CPUs {got}", doing()),
        });
    }
    Ok(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(vcpu: u32, cpus: &str) -> VcpuThread {
        VcpuThread {
            vcpu,
            tid: 100 + vcpu,
            name: format!("CPU {vcpu}/KVM"),
            cpus_allowed: cpus.into(),
        }
    }

    fn set(s: &str) -> CpuSet {
        CpuSet::parse(s).unwrap()
    }

    #[test]
    fn the_reader_runs_on_cpus_free_of_recorded_cpus_and_vcpus() {
        // 4 CPUs, vCPUs on 2 and 3, CPU 3 recorded whole: CPUs 0-1 are free.
        let r = reader_cpus(&set("0-3"), Some(&set("3")), &[v(0, "2"), v(1, "3")]).unwrap();
        assert_eq!((r.cpus, r.measured), (set("0-1"), set("2-3")));
        assert_eq!(r.note, "");
        // Only the vCPU threads' switches, unpinned vCPUs on 1-3: CPU 0.
        let r = reader_cpus(&set("0-3"), None, &[v(0, "1-3")]).unwrap();
        assert_eq!(r.cpus, set("0"));
    }

    #[test]
    fn on_the_lab_layout_it_shares_the_housekeeping_vcpu_and_says_so() {
        // 2 CPUs, vCPU 0 on CPU 0, vCPU 1 on CPU 1, CPU 1 recorded whole.
        let r = reader_cpus(&set("0-1"), Some(&set("1")), &[v(0, "0"), v(1, "1")]).unwrap();
        assert_eq!((r.cpus, r.measured), (set("0"), set("1")));
        assert_eq!(
            r.note,
            "no online CPU is free of the recorded CPUs (1) and the vCPU threads' CPUs (0-1): the trace runs on CPUs 0, beside CPU 0/KVM (vCPU 0, CPUs 0)"
        );
    }

    #[test]
    fn with_every_cpu_recorded_it_is_refused_naming_them() {
        let e = reader_cpus(&set("0-1"), Some(&set("0-1")), &[v(1, "1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "No CPU is left for rt-host trace's own threads: CPUs 0-1 are online and every switch is recorded on 0-1 (give --cpus only the CPUs under test)"
        );
    }
}
