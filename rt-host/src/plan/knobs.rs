//! Host-wide knobs: tuned's realtime-virtual-host sysctls, THP and KSM, RT throttling
//! (`/proc/sys/kernel/sched_rt_runtime_us`), KVM halt polling
//! (`/sys/module/kvm/parameters/halt_poll_ns`) and the C-states of the realtime CPUs
//! (`/sys/devices/system/cpu/cpuN/cpuidle/stateK/disable`).

use profiles::Host;
use rt_sys::{cpuidle, kernel, sysctl};

use super::{Action, Change, Status, B};
use crate::error::{sys, TuneError};

/// tuned's realtime-virtual-host sysctls (name, value): no timer migration to busy CPUs,
/// no NUMA balancing scans, vmstat updates every 10 s.
pub const REALTIME_VIRTUAL_HOST: &[(&str, &str)] = &[
    ("kernel.timer_migration", "0"),
    ("kernel.numa_balancing", "0"),
    ("vm.stat_interval", "10"),
];

/// The sysctl stage: the realtime-virtual-host set, THP, KSM, RT throttling, extras.
pub(super) fn sysctls(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let s = &host.sysctl;
    let ident = |v: &str| v.to_string();
    if s.realtime_virtual_host {
        for (name, value) in REALTIME_VIRTUAL_HOST {
            let rel = sysctl::path_of(name).map_err(sys("The realtime-virtual-host sysctls"))?;
            b.file("sysctl", &rel, value, ident);
        }
        b.file("thp", sysctl::THP_ENABLED, "never", |v| {
            sysctl::selected(v)
                .map(str::to_string)
                .unwrap_or_else(|_| v.to_string())
        });
        b.file("ksm", sysctl::KSM_RUN, "0", ident);
    }
    let rt_rel = sysctl::SCHED_RT_RUNTIME;
    if s.rt_runtime_unlimited {
        b.file("sysctl", rt_rel, "-1", ident);
    } else {
        let cur = b
            .root()
            .read_trim(rt_rel)
            .unwrap_or_else(|_| "(absent)".into());
        b.push(
            Change::report(
                "sysctl",
                b.root().display(rt_rel),
                cur.clone(),
                cur,
                Status::Ok,
            )
            .note("RT throttling kept (host.sysctl.rt_runtime_unlimited is false)"),
        );
    }
    for (k, v) in &s.extra {
        let rel = sysctl::path_of(k).map_err(sys("host.sysctl.extra"))?;
        b.file("sysctl", &rel, v, ident);
    }
    Ok(())
}

/// KVM halt polling, when the profile sets it and kvm is loaded.
pub(super) fn halt_poll(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let ident = |v: &str| v.to_string();
    if let Some(ns) = host.kvm.halt_poll_ns {
        let rel = kernel::KVM_HALT_POLL_NS;
        if b.root().exists(kernel::module_dir("kvm")) {
            b.file("halt-poll", rel, &ns.to_string(), ident);
        } else {
            b.push(
                Change::report(
                    "halt-poll",
                    b.root().display(rel),
                    "(kvm not loaded)",
                    ns.to_string(),
                    Status::NotApplicable,
                )
                .note("the kvm module is not loaded"),
            );
        }
    }
    Ok(())
}

/// The idle states of the realtime CPUs deeper than the profile's exit-latency limit.
pub(super) fn cpuidle(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    if let Some(max) = host.idle.max_exit_latency_us {
        for cpu in host.realtime_cpus.iter() {
            let states = cpuidle::states(root, cpu)
                .map_err(sys(format!("Reading cpuidle states of CPU {cpu}")))?;
            if states.is_empty() {
                b.push(Change::report(
                    "cpuidle",
                    root.display(cpuidle::dir(cpu)),
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{build, Ctx, Plan, Status};

    #[test]
    fn sysctl_items_follow_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = crate::fake::lab_host();
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
        // Without throttling, the kernel threads of CPU 1 must stand above its vCPU.
        h.kthread_priorities = Some(profiles::KthreadPriorities::default());
        h.vcpus[0].priority = 1;
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
}
