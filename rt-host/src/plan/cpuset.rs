//! Runtime CPU isolation with cgroup cpusets: on cgroup2 a threaded child of QEMU's
//! cgroup made an isolated partition (`cpuset.cpus.partition`) holds the vCPU threads (of
//! every VM, when their QEMUs share that cgroup); on
//! cgroup v1 (as `cset shield`) an exclusive cpuset holds them and every other user thread
//! moves to a housekeeping cpuset, with load balancing off at the root.

use std::collections::BTreeSet;

use profiles::Host;
use rt_sys::cgroup::{self, CgroupRef};
use rt_sys::task::Thread;
use rt_sys::threads;
use rt_sys::CpuSet;

use super::{Action, Change, Status, ThreadRef, B, CG_HK, CG_RT};
use crate::error::{sys, TuneError};

fn thread_cg(b: &B<'_, '_>, t: &Thread, v2: bool) -> Option<String> {
    cgroup::thread_cgroup(b.root(), t.pid, t.tid, v2).ok()
}

/// The cpuset stage (when `host.isolation.cpuset_partition`).
pub(super) fn items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    if !host.isolation.cpuset_partition {
        return Ok(());
    }
    let root = b.root();
    let layout =
        cgroup::layout(root).map_err(sys(format!("Reading {}", root.display(cgroup::MOUNTS))))?;
    let vms = b.vms.clone();
    let vcpu_threads: Vec<&Thread> = vms
        .iter()
        .flat_map(|v| {
            v.host
                .vcpus
                .iter()
                .filter(|p| host.realtime_cpus.contains(p.cpu))
                .filter_map(|p| v.threads.vcpus.get(&p.vcpu))
        })
        .collect();
    if let (true, Some(mount)) = (layout.v2_has_cpuset, layout.v2.clone()) {
        // One partition, a threaded child of the QEMUs' cgroup, holds every VM's vCPUs:
        // a thread can only move within its process's cgroup, so the QEMUs must share one.
        let groups: BTreeSet<String> = vms
            .iter()
            .filter_map(|v| {
                let main = v.threads.emulator.iter().find(|t| t.tid == v.threads.pid)?;
                thread_cg(b, main, true)
            })
            .collect();
        if groups.len() > 1 {
            let list: Vec<&str> = groups.iter().map(String::as_str).collect();
            b.push(
                Change::report(
                    "cpuset",
                    root.display(&mount),
                    format!("QEMUs in the cgroups {}", list.join(", ")),
                    "isolated partition",
                    Status::NotApplicable,
                )
                .note("a cgroup v2 partition holds threads of one cgroup's processes; with the VMs' QEMUs in different cgroups their vCPUs are pinned without it"),
            );
            return Ok(());
        }
        v2_partition(b, host, &mount, &vcpu_threads);
        return Ok(());
    }
    let Some(mount) = layout.v1_cpuset.clone() else {
        b.push(
            Change::report(
                "cpuset",
                "cpuset cgroup",
                "(not mounted)",
                "isolated cpuset",
                Status::NotApplicable,
            )
            .note("no cgroup v1 cpuset mount and no cpuset controller in cgroup2"),
        );
        return Ok(());
    };
    v1_shield(b, host, &mount, &vcpu_threads)
}

/// cgroup v2: a threaded child of QEMU's cgroup, made an isolated partition, holds the
/// vCPU threads; QEMU's other threads stay where they are.
fn v2_partition(b: &mut B<'_, '_>, host: &Host, mount: &str, vcpu_threads: &[&Thread]) {
    let root = b.root();
    let rt = host.realtime_cpus.to_string();
    // cgroup v2: a threaded child of QEMU's cgroup, made an isolated partition, holds
    // the vCPU threads; QEMU's other threads stay where they are.
    let Some(first) = vcpu_threads.first() else {
        b.push(
            Change::report(
                "cpuset",
                root.display(mount),
                "(no vCPU threads)",
                "isolated partition",
                Status::NotApplicable,
            )
            .note("cgroup v2 isolation needs the running VM"),
        );
        return;
    };
    let parent = thread_cg(
        b,
        &Thread {
            tid: first.pid,
            ..(*first).clone()
        },
        true,
    )
    .unwrap_or_else(|| "/".into());
    let pref = CgroupRef {
        mount: mount.to_string(),
        path: parent.clone(),
        v2: true,
    };
    // Partitions: cpuset.cpus.partition in non-root cpusets (5.11+ for "isolated");
    // the root shows cpuset.cpus.isolated from 6.10 on. A QEMU in the root cgroup
    // (no systemd, as on the host lab's outer host) has no such file to look at
    // before 6.10: the root is always a partition root, so a child can be one.
    let in_root = parent.trim_matches('/').is_empty();
    let has_partition = root.exists(format!("{mount}/cpuset.cpus.isolated"))
        || root.exists(pref.file("cpuset.cpus.partition"))
        || in_root;
    if !has_partition {
        b.push(
            Change::report(
                "cpuset",
                root.display(pref.dir()),
                "(no cpuset.cpus.partition)",
                "isolated partition",
                Status::NotApplicable,
            )
            .note("this kernel's cgroup v2 cpuset has no partitions"),
        );
        return;
    }
    let sc = pref.file("cgroup.subtree_control");
    let cur = root.read_trim(&sc).unwrap_or_default();
    if !cur
        .split_whitespace()
        .any(|w| w.trim_start_matches('+') == "cpuset")
    {
        b.push(
            Change::report("cpuset", root.display(&sc), cur, "+cpuset", Status::Ok).act(
                Action::Write {
                    path: sc.clone(),
                    value: "+cpuset".into(),
                    prior: "-cpuset".into(),
                },
            ),
        );
    }
    let path = format!("{}/{CG_RT}", parent.trim_end_matches('/'));
    let dest = CgroupRef {
        mount: mount.to_string(),
        path: path.clone(),
        v2: true,
    };
    let knobs = vec![
        ("cgroup.type".to_string(), "threaded".to_string()),
        ("cpuset.cpus".into(), rt.clone()),
        ("cpuset.cpus.partition".into(), "isolated".into()),
    ];
    cgroup_dir(b, &dest, knobs);
    move_threads(b, vcpu_threads, &dest);
}

/// cgroup v1 (as `cset shield`): an exclusive cpuset for the vCPUs, one for everything
/// else, and no load balancing across them.
fn v1_shield(
    b: &mut B<'_, '_>,
    host: &Host,
    mount: &str,
    vcpu_threads: &[&Thread],
) -> Result<(), TuneError> {
    let root = b.root();
    let rt = host.realtime_cpus.to_string();
    let hk = host.housekeeping_cpus.to_string();
    let mems = root
        .read_trim(format!("{mount}/cpuset.mems"))
        .unwrap_or_else(|_| "0".into());
    let rt_cg = CgroupRef {
        mount: mount.to_string(),
        path: format!("/{CG_RT}"),
        v2: false,
    };
    let hk_cg = CgroupRef {
        mount: mount.to_string(),
        path: format!("/{CG_HK}"),
        v2: false,
    };
    if let Some((dir, cpus)) = overlapping_sibling(root, mount, &host.realtime_cpus) {
        b.push(
            Change::report(
                "cpuset",
                root.display(format!("{mount}/{CG_RT}")),
                format!("{} holds CPUs {cpus}", root.display(&dir)),
                format!("exclusive cpuset on CPUs {rt}"),
                Status::NotApplicable,
            )
            .note(
                "the kernel refuses an exclusive cpuset (EINVAL) while a sibling cpuset \
                 shares its CPUs",
            )
            .fix(format!(
                "keep {} off CPUs {rt} (libvirt: its machine cpuset follows the domains' \
                 pinning), or set host.isolation.cpuset_partition false",
                root.display(&dir)
            )),
        );
        return Ok(());
    }
    cgroup_dir(
        b,
        &rt_cg,
        vec![
            ("cpuset.cpus".into(), rt.clone()),
            ("cpuset.mems".into(), mems.clone()),
            ("cpuset.cpu_exclusive".into(), "1".into()),
            ("cpuset.sched_load_balance".into(), "0".into()),
        ],
    );
    cgroup_dir(
        b,
        &hk_cg,
        vec![
            ("cpuset.cpus".into(), hk.clone()),
            ("cpuset.mems".into(), mems),
        ],
    );
    b.file(
        "cpuset",
        &format!("{mount}/cpuset.sched_load_balance"),
        "0",
        |v| v.to_string(),
    );
    move_threads(b, vcpu_threads, &rt_cg);
    housekeeping_threads(b, vcpu_threads, &hk_cg)
}

/// A cpuset beside ours under the root of the hierarchy whose CPUs meet `rt` (its
/// directory and CPUs): an exclusive cpuset on `rt` is then impossible.
fn overlapping_sibling(
    root: &rt_sys::SysRoot,
    mount: &str,
    rt: &CpuSet,
) -> Option<(String, CpuSet)> {
    for name in root.list(mount).ok()? {
        let dir = format!("{mount}/{name}");
        if name == CG_RT || name == CG_HK || !root.exists(format!("{dir}/cpuset.cpus")) {
            continue;
        }
        let cpus = rt_sys::cpulist::read_cpus(root, &format!("{dir}/cpuset.cpus")).ok()?;
        if !cpus.intersection(rt).is_empty() {
            return Some((dir, cpus));
        }
    }
    None
}

/// Every user thread of the root cpuset moves to the housekeeping one, except real-time
/// threads (never moved) and kernel threads (see the kthread item).
fn housekeeping_threads(
    b: &mut B<'_, '_>,
    vcpu_threads: &[&Thread],
    hk_cg: &CgroupRef,
) -> Result<(), TuneError> {
    let root = b.root();
    let vcpu_tids: BTreeSet<u32> = vcpu_threads.iter().map(|t| t.tid).collect();
    let mut others = Vec::new();
    for pid in rt_sys::task::pids(root).map_err(sys("Listing processes"))? {
        let Ok(stats) = rt_sys::task::task_stats(root, pid) else {
            continue;
        };
        for st in stats {
            if vcpu_tids.contains(&st.tid)
                || st.flags & threads::PF_KTHREAD != 0
                || matches!(st.policy, 1 | 2 | 6)
            {
                continue;
            }
            let t = Thread::from_stat(pid, &st);
            if thread_cg(b, &t, false).as_deref() == Some("/") {
                others.push(t);
            }
        }
    }
    let n = others.len();
    let refs: Vec<&Thread> = others.iter().collect();
    if n > 0 {
        move_threads(b, &refs, hk_cg);
    }
    Ok(())
}

fn cgroup_dir(b: &mut B<'_, '_>, cg: &CgroupRef, knobs: Vec<(String, String)>) {
    let dir = cg.dir();
    if b.root().exists(&dir) {
        for (f, v) in knobs {
            if f == "cgroup.type" {
                continue;
            }
            b.file("cpuset", &cg.file(&f), &v, |x| x.to_string());
        }
    } else {
        let desired = knobs
            .iter()
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let d = b.root().display(&dir);
        b.push(
            Change::report("cpuset", d, "(absent)", desired, Status::Ok).act(
                Action::CreateCgroup {
                    path: dir,
                    v2: cg.v2,
                    knobs,
                },
            ),
        );
    }
}

fn move_threads(b: &mut B<'_, '_>, ts: &[&Thread], to: &CgroupRef) {
    for t in ts {
        let Some(cur) = thread_cg(b, t, to.v2) else {
            // Exited, or no such hierarchy line: nothing to move back to later.
            b.push(
                Change::report(
                    "cpuset",
                    format!("cgroup of {:?} (tid {})", t.name, t.tid),
                    "(unknown)",
                    to.path.clone(),
                    Status::NotApplicable,
                )
                .note("the thread's cgroup cannot be read"),
            );
            continue;
        };
        let c = Change::report(
            "cpuset",
            format!("cgroup of {:?} (tid {})", t.name, t.tid),
            cur.clone(),
            to.path.clone(),
            Status::Ok,
        );
        b.push(if cur == to.path {
            c
        } else {
            c.act(Action::MoveCgroup {
                thread: ThreadRef::from(*t),
                to: to.clone(),
                prior: cur,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{build, Ctx, Status};

    #[test]
    fn no_v1_shield_beside_a_cpuset_on_the_realtime_cpus() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        let mut h = crate::fake::lab_host();
        h.isolation.cpuset_partition = true;
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        assert!(p.changes.iter().any(|c| c.item == "cpuset" && c.pending()));
        // libvirt's machine cpuset, on every CPU.
        m.put("sys/fs/cgroup/cpuset/machine/cpuset.cpus", "0-1\n");
        let p = build("lab", &h, &Ctx::new(&m.root)).unwrap();
        let cs: Vec<_> = p.changes.iter().filter(|c| c.item == "cpuset").collect();
        assert_eq!(cs.len(), 1, "{cs:#?}");
        assert_eq!(cs[0].status, Status::NotApplicable);
        assert_eq!(
            cs[0].current,
            "/sys/fs/cgroup/cpuset/machine holds CPUs 0-1"
        );
        assert!(cs[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("cpuset_partition false"));
    }
}
