//! CPU frequency, power and SMT of the realtime CPUs: the cpufreq governor and
//! energy-performance preference of their policies, their energy-performance bias, turbo
//! ([`rt_sys::cpufreq`]); and the hyperthread siblings of each real-time vCPU's CPU
//! (`topology/thread_siblings_list`): a sibling that runs host work or another vCPU shares
//! the core's execution units, caches and its frequency with it.

use profiles::Host;
use rt_sys::cpufreq::{self, Policy};
use rt_sys::{cpulist, CpuSet, SysRoot};

use super::{Action, Change, Status, B};
use crate::error::{sys, TuneError};

/// One cpufreq word file of a policy (governor, EPP), `offered` naming what it accepts.
fn word(b: &mut B<'_, '_>, item: &str, p: &Policy, file: &str, offered: &str, want: &str) {
    let root = b.root();
    let rel = p.file(file);
    let Ok(cur) = root.read_trim(&rel) else {
        b.push(
            Change::report(
                item,
                root.display(&rel),
                "(absent)",
                want,
                Status::NotApplicable,
            )
            .note("this cpufreq driver has no such file"),
        );
        return;
    };
    let choices = root.read(p.file(offered)).unwrap_or_default();
    let c = Change::report(item, root.display(&rel), &cur, want, Status::Ok)
        .note(format!("CPUs {}", p.cpus));
    b.push(if cur == want {
        c
    } else if !choices.is_empty() && !cpufreq::words(&choices).contains(&want) {
        Change {
            status: Status::NotApplicable,
            ..c
        }
        .note(format!("this driver offers {}", choices.trim()))
    } else {
        c.act(Action::Write {
            path: rel,
            value: want.into(),
            prior: cur,
        })
    });
}

/// A one-value file the profile sets when it exists.
fn value(b: &mut B<'_, '_>, item: &str, rel: &str, want: &str, why: &str) {
    let root = b.root();
    match root.read_trim(rel) {
        Ok(cur) => {
            let c = Change::report(item, root.display(rel), &cur, want, Status::Ok).note(why);
            b.push(if cur == want {
                c
            } else {
                c.act(Action::Write {
                    path: rel.into(),
                    value: want.into(),
                    prior: cur,
                })
            });
        }
        Err(_) => b.push(
            Change::report(
                item,
                root.display(rel),
                "(absent)",
                want,
                Status::NotApplicable,
            )
            .note("no such file on this machine"),
        ),
    }
}

/// The power stage: governor and EPP per policy of the realtime CPUs, EPB per realtime
/// CPU, turbo.
pub(super) fn items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let pw = &host.power;
    let rt = &host.realtime_cpus;
    let pols: Vec<Policy> = cpufreq::policies(root)
        .map_err(sys("Reading the cpufreq policies"))?
        .into_iter()
        .filter(|p| !p.cpus.intersection(rt).is_empty())
        .collect();
    if pols.is_empty() && (pw.governor.is_some() || pw.epp.is_some()) {
        b.push(
            Change::report(
                "cpufreq",
                root.display(cpufreq::POLICIES),
                "(no cpufreq policy)",
                "governor and EPP of the realtime CPUs",
                Status::NotApplicable,
            )
            .note("no cpufreq driver drives the realtime CPUs (a VM has none)"),
        );
    }
    for p in &pols {
        if let Some(g) = &pw.governor {
            word(b, "cpufreq", p, cpufreq::GOVERNOR, cpufreq::GOVERNORS, g);
        }
        if let Some(e) = &pw.epp {
            word(b, "epp", p, cpufreq::EPP, cpufreq::EPPS, e);
        }
    }
    if let Some(epb) = pw.epb {
        let files: Vec<(u32, String)> = rt.iter().map(|c| (c, cpufreq::epb_path(c))).collect();
        if files.iter().all(|(_, f)| !root.exists(f)) {
            b.push(
                Change::report(
                    "epb",
                    format!("energy_perf_bias of CPUs {rt}"),
                    "(absent)",
                    epb.to_string(),
                    Status::NotApplicable,
                )
                .note("no energy-performance bias here (not an Intel CPU, or a VM)"),
            );
        } else {
            for (cpu, f) in files {
                value(b, "epb", &f, &epb.to_string(), &format!("CPU {cpu}"));
            }
        }
    }
    if let Some(on) = pw.boost {
        if root.exists(cpufreq::NO_TURBO) {
            let want = if on { "0" } else { "1" };
            value(
                b,
                "boost",
                cpufreq::NO_TURBO,
                want,
                "intel_pstate: 1 is turbo off",
            );
        } else {
            let want = if on { "1" } else { "0" };
            value(b, "boost", cpufreq::BOOST, want, "1 is boost on");
        }
    }
    smt(b, host)
}

/// The SMT siblings of each real-time vCPU's CPU: flagged when one is a housekeeping CPU
/// or runs another vCPU.
fn smt(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root: &SysRoot = b.root();
    let vms = profiles::host_vms(host);
    let vcpu_cpus = CpuSet::from_cpus(vms.iter().flat_map(|v| v.vcpus.iter().map(|p| p.cpu)));
    for v in &vms {
        for p in v.vcpus.iter().filter(|p| p.policy.is_realtime()) {
            let sib = match cpulist::thread_siblings(root, p.cpu) {
                Ok(s) => s.difference(&CpuSet::from_cpus([p.cpu])),
                Err(e) if e.is_not_found() => continue, // no topology files (fake trees)
                Err(e) => return Err(sys("Reading the CPU topology")(e)),
            };
            let hk = sib.intersection(&host.housekeeping_cpus);
            let busy = sib.intersection(&vcpu_cpus);
            let target = format!(
                "SMT siblings of CPU {} (vCPU {} of {:?})",
                p.cpu, p.vcpu, v.name
            );
            let shown = if sib.is_empty() {
                "none".to_string()
            } else {
                sib.to_string()
            };
            let c = Change::report("smt", target, shown, "no busy sibling", Status::Ok);
            b.push(if !hk.is_empty() || !busy.is_empty() {
                let what = if hk.is_empty() {
                    format!("CPUs {busy} run other vCPUs")
                } else {
                    format!("CPUs {hk} are housekeeping CPUs (host work, IRQs, QEMU's main loop)")
                };
                Change {
                    status: Status::Warn,
                    ..c
                }
                .note(format!(
                    "{what} on the same core: they share its execution units and caches with \
                     the real-time vCPU"
                ))
                .fix("place real-time vCPUs on cores whose siblings stay idle realtime CPUs, or boot with nosmt")
            } else if sib.is_empty() {
                c
            } else {
                c.note(format!("keep CPUs {sib} idle (no vCPU, not housekeeping)"))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::fake::{self, FakeMachine};
    use crate::plan::{build, Ctx, Status};

    #[test]
    fn governor_epp_epb_and_boost_of_the_realtime_cpus_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let h = fake::host_from(
            r#"(housekeeping_cpus: "0", realtime_cpus: "1", power: (boost: false),
                vms: [(name: "lab", memory_mib: 512, vcpus: [(vcpu: 1, cpu: 1, priority: 1)])])"#,
        );
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "cpufreq").unwrap();
        assert_eq!(
            c.status,
            Status::NotApplicable,
            "a VM without cpufreq: {c:?}"
        );
        for (n, cpus) in [(0, "0"), (1, "1")] {
            let d = format!("sys/devices/system/cpu/cpufreq/policy{n}");
            m.put(&format!("{d}/affected_cpus"), &format!("{cpus}\n"));
            m.put(&format!("{d}/scaling_governor"), "powersave\n");
            m.put(
                &format!("{d}/scaling_available_governors"),
                "performance powersave\n",
            );
            m.put(
                &format!("{d}/energy_performance_preference"),
                "balance_performance\n",
            );
            m.put(
                &format!("{d}/energy_performance_available_preferences"),
                "default performance balance_performance balance_power power\n",
            );
            m.put(
                &format!("sys/devices/system/cpu/cpu{n}/power/energy_perf_bias"),
                "6\n",
            );
        }
        m.put("sys/devices/system/cpu/intel_pstate/no_turbo", "0\n");
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let got: Vec<(String, &str, &str)> = p
            .changes
            .iter()
            .filter(|c| ["cpufreq", "epp", "epb", "boost"].contains(&c.item.as_str()))
            .map(|c| (c.target.clone(), c.current.as_str(), c.desired.as_str()))
            .collect();
        let cpu = "/sys/devices/system/cpu";
        assert_eq!(
            got,
            [
                (
                    format!("{cpu}/cpufreq/policy1/scaling_governor"),
                    "powersave",
                    "performance"
                ),
                (
                    format!("{cpu}/cpufreq/policy1/energy_performance_preference"),
                    "balance_performance",
                    "performance"
                ),
                (format!("{cpu}/cpu1/power/energy_perf_bias"), "6", "0"),
                (format!("{cpu}/intel_pstate/no_turbo"), "0", "1"),
            ],
            "only CPU 1's policy and bias; turbo off through intel_pstate"
        );
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?}", r.verify_failed);
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }

    #[test]
    fn a_vcpu_beside_a_housekeeping_hyperthread_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let h = fake::lab_host();
        for cpu in 0..2 {
            m.put(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
                "0-1\n",
            );
        }
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "smt").unwrap();
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.note
                .as_deref()
                .unwrap()
                .starts_with("CPUs 0 are housekeeping CPUs"),
            "{c:?}"
        );
        assert!(p.changes.iter().all(|c| c.item != "smt" || c.fix.is_some()));
        m.put(
            "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
            "1\n",
        );
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let c = p.changes.iter().find(|c| c.item == "smt").unwrap();
        assert_eq!((c.status, c.current.as_str()), (Status::Ok, "none"));
    }
}
