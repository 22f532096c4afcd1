//! The VM and its threads: QEMU found (see [`crate::vm`]), its emulator and I/O threads
//! to their CPUs before any vCPU is real-time, the RT runtime of the real-time vCPUs'
//! cpu cgroups ([`super::rtgroup`]), then each vCPU pinned and given its policy.

use std::collections::BTreeSet;

use profiles::{Host, VcpuPin};
use rt_sys::sched::SchedParams;
use rt_sys::task::Thread;
use rt_sys::CpuSet;

use super::{rtgroup, Action, Change, Status, B};
use crate::error::{sys, TuneError};
use crate::vm::{self, VmThreads};

/// The vm stage: find each VM of the profile (`host.vms` or `host.vm`; `--vm-pid` for a
/// single one) for the stages after it.
pub(super) fn find(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let (root, vm_pid) = (b.root(), b.ctx.vm_pid);
    let mut hosts = crate::placement::per_vm_hosts(host);
    if hosts.len() > 1 && vm_pid.is_some() {
        return Err(TuneError::Vm(format!(
            "--vm-pid names one QEMU, but the profile has {} VMs: let each be found by its host.vms[].find",
            hosts.len()
        )));
    }
    if hosts.is_empty() && vm_pid.is_some() {
        hosts.push(Host {
            vm: Some(profiles::Vm::default()),
            ..host.clone()
        });
    }
    for h in hosts {
        let v = h.vm.clone().unwrap_or_default();
        match vm::find(root, &v, vm_pid)? {
            Some(t) => b.vms.push((h, t)),
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
    for (h, v) in b.vms.clone() {
        vm_items(b, &h, &v)?;
    }
    Ok(())
}

/// [`items`] for one VM (`host` is that VM's single-VM host).
fn vm_items(b: &mut B<'_, '_>, host: &Host, v: &VmThreads) -> Result<(), TuneError> {
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
    let mut affinities = helper_affinities(b, host, v);
    // RT group scheduling: runtime for the cgroups of the real-time vCPUs, parents first.
    let rt_threads: Vec<&Thread> = host
        .vcpus
        .iter()
        .filter(|p| p.policy.is_realtime())
        .filter_map(|p| v.vcpus.get(&p.vcpu))
        .collect();
    for c in rtgroup::items(b.root(), &rt_threads)
        .map_err(sys("Reading the RT runtime of the vCPUs' cpu cgroups"))?
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
    for c in affinities.into_iter().chain(scheds) {
        b.push(c);
    }
    Ok(())
}

/// Emulator and I/O threads to their CPUs (default housekeeping), before any vCPU is
/// FIFO; a thread that is already real-time is never moved.
fn helper_affinities(b: &B<'_, '_>, host: &Host, v: &VmThreads) -> Vec<Change> {
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
            out.push(if sch.policy.is_realtime() {
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
