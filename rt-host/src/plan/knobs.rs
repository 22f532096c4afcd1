//! Host-wide knobs: tuned's realtime-virtual-host sysctls, THP and KSM, RT throttling
//! (`/proc/sys/kernel/sched_rt_runtime_us`), KVM halt polling
//! (`/sys/module/kvm/parameters/halt_poll_ns`) and the C-states of the realtime CPUs
//! (`/sys/devices/system/cpu/cpuN/cpuidle/stateK/disable`).

use profiles::Host;
use rt_sys::{cpuidle, kernel, sysctl};

use super::{Action, Change, Status, When, B};
use crate::error::{sys, TuneError};

/// tuned's realtime-virtual-host sysctls (name, value; from the network-latency profile
/// it includes): no timer migration to busy CPUs, no NUMA balancing scans, vmstat updates
/// every 10 s, no NMI watchdog (a perf NMI on every CPU), a hung-task timeout of 600 s (a
/// task that waits behind a FIFO vCPU is not reported after 120 s).
pub const REALTIME_VIRTUAL_HOST: &[(&str, &str)] = &[
    ("kernel.timer_migration", "0"),
    ("kernel.numa_balancing", "0"),
    ("vm.stat_interval", "10"),
    ("kernel.nmi_watchdog", "0"),
    ("kernel.hung_task_timeout_secs", "600"),
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

/// tuned's low-latency KVM module parameters ([`crate::modprobe`]): written at runtime
/// where the kernel lets it, else `needs module reload`.
pub(super) fn kvm_params(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    for p in crate::modprobe::params(host) {
        if p.name == "halt_poll_ns" {
            continue; // its own item (halt-poll)
        }
        let rel = kernel::module_param(&p.module, &p.name);
        let target = root.display(&rel);
        let cur = match root.read_trim(&rel) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => {
                let why = if root.exists(kernel::module_dir(&p.module)) {
                    format!("module {} has no parameter {}", p.module, p.name)
                } else {
                    format!("module {} is not loaded", p.module)
                };
                b.push(
                    Change::report(
                        "kvm-param",
                        target,
                        "(absent)",
                        &p.value,
                        Status::NotApplicable,
                    )
                    .note(why),
                );
                continue;
            }
            Err(e) => return Err(sys(format!("Reading {target}"))(e)),
        };
        let c = Change::report("kvm-param", target, &cur, &p.value, Status::Ok).note(p.why.clone());
        let c = if p.name == "nx_huge_pages" {
            let v = root.read_trim(kernel::ITLB_MULTIHIT).unwrap_or_default();
            let n = c.note.clone().unwrap_or_default();
            c.note(format!(
                "{n}; this CPU's iTLB multihit: {}",
                if v.is_empty() { "unknown" } else { &v }
            ))
        } else {
            c
        };
        b.push(if p.matches(&cur) {
            c
        } else if p.runtime && kernel::writable(root, &rel) {
            c.act(Action::Write {
                path: rel,
                value: p.value.clone(),
                prior: cur,
            })
        } else {
            let why = c.note.clone().unwrap_or_default();
            Change {
                status: Status::NeedsModuleReload,
                when: When::NextBoot,
                ..c
            }
            .note(format!("{why}; read-only while {} is loaded", p.module))
            .fix(format!(
                "put `options {} {}={}` in /etc/modprobe.d (rt-host modprobe PROFILE prints the \
                 file) and load the module again with every VM stopped",
                p.module, p.name, p.value
            ))
        });
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
        // Without throttling the kernel threads of CPU 1 must stand above its vCPU: the
        // lab's ladder does.
        assert!(h.kthread_priorities.is_some());
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
    fn kvm_parameters_change_at_runtime_where_writable_else_need_a_module_reload() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(&dir.path().join("root"));
        let params = "sys/module/kvm/parameters";
        m.put(&format!("{params}/nx_huge_pages"), "Y\n");
        m.put(&format!("{params}/kvmclock_periodic_sync"), "Y\n");
        m.put("sys/module/kvm_intel/parameters/ple_gap", "128\n");
        m.put(
            "sys/devices/system/cpu/vulnerabilities/itlb_multihit",
            "KVM: Mitigation: Split huge pages\n",
        );
        for f in [
            "kvmclock_periodic_sync",
            "../../kvm_intel/parameters/ple_gap",
        ] {
            let path = m.root.path(format!("{params}/{f}"));
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        let h = crate::fake::lab_host();
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let st = |name: &str| {
            let c = p
                .changes
                .iter()
                .find(|c| c.item == "kvm-param" && c.target.ends_with(name))
                .unwrap_or_else(|| panic!("no {name}: {:#?}", p.changes));
            (c.status, c.current.clone(), c.desired.clone())
        };
        assert_eq!(
            st("nx_huge_pages"),
            (Status::Differs, "Y".into(), "off".into())
        );
        assert_eq!(
            st("kvmclock_periodic_sync"),
            (Status::NeedsModuleReload, "Y".into(), "0".into())
        );
        assert_eq!(
            st("ple_gap"),
            (Status::NeedsModuleReload, "128".into(), "0".into())
        );
        assert_eq!(st("pause_filter_count").0, Status::NotApplicable);
        assert!(!p.met(), "a module reload is still to do");
        let nx = p
            .changes
            .iter()
            .find(|c| c.target.ends_with("nx_huge_pages"))
            .unwrap();
        assert!(nx
            .note
            .as_deref()
            .unwrap()
            .contains("iTLB multihit: KVM: Mitigation"));
        let reload = p
            .changes
            .iter()
            .find(|c| c.target.ends_with("ple_gap"))
            .unwrap();
        assert!(
            reload
                .fix
                .as_deref()
                .unwrap()
                .starts_with("put `options kvm_intel ple_gap=0` in /etc/modprobe.d"),
            "{reload:?}"
        );
        let text = crate::render::plan(&p, true);
        assert_eq!(text.matches("needs module reload").count(), 2, "{text}");
        assert!(text.contains("2 need a module reload"), "{text}");
        // Setup writes nx_huge_pages; the kernel then reads N, which is "off".
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let r = crate::fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r
            .done
            .iter()
            .any(|d| d.change.target.ends_with("nx_huge_pages")));
        m.put(&format!("{params}/nx_huge_pages"), "N\n");
        let again = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let nx = again
            .changes
            .iter()
            .find(|c| c.target.ends_with("nx_huge_pages"))
            .unwrap();
        assert_eq!(nx.status, Status::Ok);
        crate::fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }
}
