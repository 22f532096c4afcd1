//! The VM and its threads: QEMU found (see [`crate::vm`]), its emulator and I/O threads
//! to their CPUs before any vCPU is real-time, the RT runtime of the real-time threads'
//! cpu cgroups ([`super::rtgroup`]), then each vCPU pinned and given its policy, and the
//! emulator (main loop) and I/O threads given theirs (libvirt's `<emulatorsched>` and
//! `<iothreadsched>`).

use std::collections::BTreeSet;

use profiles::{Host, VcpuPin, VmView};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::task::Thread;
use rt_sys::CpuSet;

use super::{rtgroup, Action, Change, FoundVm, Status, B};
use crate::error::{sys, TuneError};
use crate::vm::{self, VmThreads};

/// The vm stage: find each VM of the profile (`host.vms` or `host.vm`; `--vm-pid` for a
/// single one) for the stages after it.
pub(super) fn find(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let (root, vm_pid) = (b.root(), b.ctx.vm_pid);
    let mut hosts = crate::placement::per_vm(host);
    if hosts.len() > 1 && vm_pid.is_some() {
        return Err(TuneError::Vm(format!(
            "--vm-pid names one QEMU, but the profile has {} VMs: let each be found by its host.vms[].find",
            hosts.len()
        )));
    }
    if hosts.is_empty() && vm_pid.is_some() {
        let h = Host {
            vm: Some(profiles::Vm::default()),
            ..host.clone()
        };
        let view = profiles::host_vms(&h).remove(0);
        hosts.push((h, view));
    }
    for (h, view) in hosts {
        let v = h.vm.clone().unwrap_or_default();
        match vm::find(root, &v, vm_pid)? {
            Some(threads) => b.vms.push(FoundVm {
                host: h,
                view,
                threads,
            }),
            None => b.push(
                Change::report(
                    "vm",
                    vm::describe(&v),
                    "not running",
                    "running",
                    Status::NotApplicable,
                )
                .note("VM items are skipped until the VM runs (setup after the guest has booted)"),
            ),
        }
    }
    Ok(())
}

/// The VM threads stage: affinities (emulator and I/O threads first), the RT runtime of
/// the vCPUs' cgroups, then policies.
pub(super) fn items(b: &mut B<'_, '_>, _host: &Host) -> Result<(), TuneError> {
    for f in b.vms.clone() {
        vm_items(b, &f.host, &f.view, &f.threads)?;
    }
    Ok(())
}

/// The emulator threads libvirt's `<emulatorsched>` sets: QEMU's main thread (the main
/// loop; threads it starts later inherit its policy), as libvirt does with the domain's pid.
fn main_loop(v: &VmThreads) -> Vec<&Thread> {
    v.emulator.iter().filter(|t| t.tid == v.pid).collect()
}

/// The policy the profile gives a helper thread of `kind` (`emulator` or `iothread`).
fn helper_sched(view: &VmView, kind: &str) -> SchedParams {
    let (policy, priority) = match kind {
        "emulator" => (view.emulator_policy, view.emulator_priority),
        _ => (view.iothread_policy, view.iothread_priority),
    };
    SchedParams {
        policy,
        priority: u32::from(priority),
    }
}

/// [`items`] for one VM (`host` is that VM's single-VM host, `view` the profile's VM).
fn vm_items(b: &mut B<'_, '_>, host: &Host, view: &VmView, v: &VmThreads) -> Result<(), TuneError> {
    b.push(Change::report(
        "vm",
        vm::describe(host.vm.as_ref().unwrap_or(&profiles::Vm::default())),
        format!(
            "pid {} ({}), {} vCPU thread(s)",
            v.pid,
            v.found_by,
            v.vcpus.len()
        ),
        "running",
        Status::Ok,
    ));
    let mut affinities = helper_affinities(b, host, view, v);
    // RT group scheduling: runtime for the cgroups of the real-time threads, parents first.
    let rt_threads: Vec<&Thread> = host
        .vcpus
        .iter()
        .filter(|p| p.policy.is_realtime())
        .filter_map(|p| v.vcpus.get(&p.vcpu))
        .collect();
    let mut helpers = Vec::new();
    if view.emulator_policy.is_realtime() {
        helpers.extend(main_loop(v));
    }
    if view.iothread_policy.is_realtime() {
        helpers.extend(v.iothreads.iter());
    }
    for c in rtgroup::items(b.root(), &rt_threads, &helpers)
        .map_err(sys("Reading the RT runtime of the VM's cpu cgroups"))?
    {
        b.push(c);
    }
    let mut scheds = Vec::new();
    for pin in &host.vcpus {
        let Some(t) = v.vcpus.get(&pin.vcpu) else {
            affinities.push(missing_vcpu(v, pin));
            continue;
        };
        let (aff, pinnable) = vcpu_affinity(b, host, t, pin)?;
        affinities.push(aff);
        scheds.push(vcpu_sched(b, t, pin, pinnable)?);
    }
    let pinned: BTreeSet<u32> = host.vcpus.iter().map(|p| p.vcpu).collect();
    for (i, t) in &v.vcpus {
        if !pinned.contains(i) {
            affinities.push(Change::report(
                "vcpu-affinity",
                format!("affinity of {:?} (tid {})", t.name, t.tid),
                "(left alone)",
                "(not in host.vcpus)",
                Status::NotApplicable,
            ));
        }
    }
    scheds.extend(helper_scheds(b, view, v));
    for c in affinities.into_iter().chain(scheds) {
        b.push(c);
    }
    Ok(())
}

/// The emulator (main loop) and I/O threads' policies, when the profile sets one (libvirt
/// renders no `<emulatorsched>` for `Other`, and rt-host leaves such threads alone).
fn helper_scheds(b: &B<'_, '_>, view: &VmView, v: &VmThreads) -> Vec<Change> {
    let mut out = Vec::new();
    for (kind, threads) in [
        ("emulator", main_loop(v)),
        ("iothread", v.iothreads.iter().collect()),
    ] {
        let want = helper_sched(view, kind);
        if want.policy == Policy::Other {
            continue;
        }
        for t in threads {
            let Ok(cur) = b.ctx.ops.get_sched(b.root(), t.pid, t.tid) else {
                continue; // exited meanwhile
            };
            let c = Change::report(
                &format!("{kind}-sched"),
                format!("sched of {:?} (tid {})", t.name, t.tid),
                cur.to_string(),
                want.to_string(),
                Status::Ok,
            );
            out.push(if cur == want {
                c
            } else {
                c.act(Action::Sched {
                    thread: t.into(),
                    params: want,
                    prior: cur,
                })
            });
        }
    }
    out
}

/// Emulator and I/O threads to their CPUs (default housekeeping), before any vCPU is
/// FIFO; a thread that is already real-time is never moved, unless it has the policy the
/// profile gives it (an earlier setup made it so).
fn helper_affinities(b: &B<'_, '_>, host: &Host, view: &VmView, v: &VmThreads) -> Vec<Change> {
    let (root, ops) = (b.root(), b.ctx.ops);
    let hk = &host.housekeeping_cpus;
    let emu = host.emulator_cpus.clone().unwrap_or_else(|| hk.clone());
    let io = host.iothread_cpus.clone().unwrap_or_else(|| hk.clone());
    let mut out = Vec::new();
    for (kind, list, cpus) in [
        ("emulator", &v.emulator, &emu),
        ("iothread", &v.iothreads, &io),
    ] {
        for t in list {
            let target = format!("affinity of {:?} (tid {})", t.name, t.tid);
            let (cur, sch) = match (
                ops.get_affinity(root, t.pid, t.tid),
                ops.get_sched(root, t.pid, t.tid),
            ) {
                (Ok(a), Ok(s)) => (a, s),
                _ => continue, // exited meanwhile
            };
            let c = Change::report(kind, target, cur.to_string(), cpus.to_string(), Status::Ok);
            let ours = helper_sched(view, kind) == sch && (kind == "iothread" || t.tid == v.pid);
            out.push(if sch.policy.is_realtime() && !ours {
                Change {
                    status: Status::NotApplicable,
                    ..c
                }
                .note(format!("already {sch}: a real-time thread is never moved"))
            } else if cur == *cpus {
                c
            } else {
                c.act(Action::Affinity {
                    thread: t.into(),
                    cpus: cpus.clone(),
                    prior: cur,
                })
            });
        }
    }
    out
}

/// A `host.vcpus` entry the VM has no thread for: not met.
fn missing_vcpu(v: &VmThreads, pin: &VcpuPin) -> Change {
    Change::report(
        "vcpu-affinity",
        format!("vCPU {}", pin.vcpu),
        "(no such vCPU thread)",
        pin.cpu.to_string(),
        Status::NotApplicable,
    )
    .essential()
    .note(format!(
        "QEMU pid {} has vCPUs {:?}",
        v.pid,
        v.vcpus.keys().collect::<Vec<_>>()
    ))
    .fix(
        "name the vCPU threads (QEMU -name ...,debug-threads=on; libvirt does) or give \
         host.vm.qmp, and list only the VM's vCPUs in host.vcpus",
    )
}

/// The vCPU's affinity (essential), and whether it can be pinned at all: its cpuset
/// cgroup may keep it off its CPU (checked unless the cpuset shield moves it first).
fn vcpu_affinity(
    b: &B<'_, '_>,
    host: &Host,
    t: &Thread,
    pin: &VcpuPin,
) -> Result<(Change, bool), TuneError> {
    let root = b.root();
    let cur = b
        .ctx
        .ops
        .get_affinity(root, t.pid, t.tid)
        .map_err(sys(format!("Reading the affinity of {:?}", t.name)))?;
    let want = CpuSet::from_cpus([pin.cpu]);
    let c = Change::report(
        "vcpu-affinity",
        format!("affinity of {:?} (tid {})", t.name, t.tid),
        cur.to_string(),
        want.to_string(),
        Status::Ok,
    )
    .essential();
    if cur == want {
        return Ok((c, true));
    }
    let blocked = if host.isolation.cpuset_partition {
        None
    } else {
        rtgroup::affinity_blocked(root, t, &want)
    };
    Ok(match blocked {
        Some((cause, fix)) => (
            Change {
                status: Status::NotPermitted,
                ..c
            }
            .note(cause)
            .fix(fix),
            false,
        ),
        None => (
            c.act(Action::Affinity {
                thread: t.into(),
                cpus: want,
                prior: cur,
            }),
            true,
        ),
    })
}

/// The vCPU's policy (essential when real-time); a real-time vCPU that cannot be pinned
/// is not made real-time (it could spin where QEMU's main loop runs).
fn vcpu_sched(
    b: &B<'_, '_>,
    t: &Thread,
    pin: &VcpuPin,
    pinnable: bool,
) -> Result<Change, TuneError> {
    let cur = b
        .ctx
        .ops
        .get_sched(b.root(), t.pid, t.tid)
        .map_err(sys(format!("Reading the policy of {:?}", t.name)))?;
    let rt = pin.policy.is_realtime();
    let want = SchedParams {
        policy: pin.policy,
        priority: if rt { u32::from(pin.priority) } else { 0 },
    };
    let mut c = Change::report(
        "vcpu-sched",
        format!("sched of {:?} (tid {})", t.name, t.tid),
        cur.to_string(),
        want.to_string(),
        Status::Ok,
    );
    c.essential = rt;
    Ok(if cur == want {
        c
    } else if !pinnable && rt {
        Change {
            status: Status::NotApplicable,
            ..c
        }
        .note("not made real-time: its affinity cannot be set (see vcpu-affinity)")
    } else {
        c.act(Action::Sched {
            thread: t.into(),
            params: want,
            prior: cur,
        })
    })
}

#[cfg(test)]
mod tests {
    use crate::fake::{self, FakeMachine, QEMU_PID};
    use crate::plan::{build, Ctx, Status};
    use rt_sys::threads::{ThreadOps, Tree};

    const HELPERS: &str = r#"(housekeeping_cpus: "0", realtime_cpus: "1",
        vms: [(name: "lab", memory_mib: 512, vcpus: [(vcpu: 1, cpu: 1, priority: 1)],
               emulator_policy: Fifo, emulator_priority: 1,
               iothread_policy: Rr, iothread_priority: 2)])"#;

    #[test]
    fn main_loop_and_io_threads_get_the_profiles_policies_and_lose_them_on_revert() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let h = fake::host_from(HELPERS);
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let of = |item: &str| {
            p.changes
                .iter()
                .filter(|c| c.item == item)
                .map(|c| (c.target.clone(), c.desired.clone(), c.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of("emulator-sched"),
            [(
                "sched of \"qemu-system-x86\" (tid 4000)".to_string(),
                "fifo:1".to_string(),
                Status::Differs
            )],
            "only the main loop, as libvirt's <emulatorsched>"
        );
        assert_eq!(
            of("iothread-sched"),
            [(
                "sched of \"IO iothread0\" (tid 4004)".to_string(),
                "rr:2".to_string(),
                Status::Differs
            )]
        );
        let pos = |item: &str| p.changes.iter().position(|c| c.item == item).unwrap();
        assert!(
            pos("emulator") < pos("emulator-sched"),
            "pinned before FIFO"
        );
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?} {:#?}", r.not_met, r.verify_failed);
        let sched = |tid| Tree.get_sched(&m.root, QEMU_PID, tid).unwrap().to_string();
        assert_eq!((sched(4000), sched(4004)), ("fifo:1".into(), "rr:2".into()));
        // Planned again, the real-time main loop is still ours to pin (not "never moved").
        let again = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let emu = again
            .changes
            .iter()
            .find(|c| c.item == "emulator" && c.target.contains("tid 4000"))
            .unwrap();
        assert_eq!(emu.status, Status::Ok, "{emu:?}");
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }

    #[test]
    fn a_real_time_main_loop_gets_rt_runtime_but_is_not_essential() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.libvirt_cpu_cgroups();
        let h = fake::host_from(HELPERS);
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let rt: Vec<(String, bool)> = p
            .changes
            .iter()
            .filter(|c| c.item == "rt-runtime")
            .map(|c| {
                (
                    c.target.rsplit('/').nth(1).unwrap().to_string(),
                    c.essential,
                )
            })
            .collect();
        let dom = fake::LIBVIRT_GROUP.to_string();
        assert_eq!(
            rt,
            [
                ("machine".to_string(), true),
                (dom, true),
                ("emulator".to_string(), false),
                ("vcpu1".to_string(), true),
            ]
        );
        let share = |g: &str| {
            p.changes
                .iter()
                .find(|c| c.item == "rt-runtime" && c.target.contains(&format!("/{g}/")))
                .unwrap()
                .desired
                .clone()
        };
        assert_eq!(
            (share("emulator"), share("vcpu1")),
            ("475000".into(), "475000".into())
        );
    }

    #[test]
    fn the_lab_layout_puts_vcpu_0_below_the_main_loop_on_cpu_0_and_reverts() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let h = fake::lab_profile_host();
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let get = |item: &str, t: &str| {
            p.changes
                .iter()
                .find(|c| c.item == item && c.target.contains(t))
                .unwrap_or_else(|| panic!("no {item} {t}: {:#?}", p.changes))
        };
        assert_eq!(get("vcpu-affinity", "CPU 0/TCG").desired, "0");
        assert_eq!(get("vcpu-sched", "CPU 0/TCG").desired, "fifo:1");
        assert_eq!(get("emulator-sched", "qemu-system-x86").desired, "fifo:2");
        assert_eq!(get("iothread-sched", "IO iothread0").desired, "fifo:2");
        // CPU 0 is housekeeping: the ladder leaves ksoftirqd/0, only RT throttling rescues it.
        assert!(!p
            .changes
            .iter()
            .any(|c| c.item == "kthread-sched" && c.target.contains("ksoftirqd/0")));
        let cpu0 = get("rt-starvation", "CPU 0");
        assert_eq!(cpu0.status, Status::Warn, "{cpu0:?}");
        assert_eq!(
            cpu0.fix.as_deref(),
            Some("run stalld, or keep real-time vCPUs off this housekeeping CPU")
        );
        assert_eq!(get("rt-starvation", "CPU 1").status, Status::Ok);
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?} {:#?}", r.not_met, r.verify_failed);
        let sched = |tid| Tree.get_sched(&m.root, QEMU_PID, tid).unwrap().to_string();
        assert_eq!(
            (sched(4000), sched(4002), sched(4003)),
            ("fifo:2".into(), "fifo:1".into(), "fifo:50".into())
        );
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }
}
