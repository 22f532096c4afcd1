//! RT group scheduling (`CONFIG_RT_GROUP_SCHED`): the `cpu.rt_runtime_us` of every cpu
//! cgroup from the root down to each real-time vCPU thread's group, and why a vCPU could
//! not be made real-time or pinned (the cause and the fix of a "not met" item).
//!
//! With RT group scheduling a thread may be SCHED_FIFO only when its cpu cgroup has RT
//! runtime, and a group's children may together use no more than the group itself. libvirt
//! (v1 `cpu` controller) puts QEMU's threads in `machine/<domain>/vcpuN`, all at runtime 0,
//! so `sched_setscheduler(2)` says EPERM; its documentation tells people to write the
//! runtimes by hand, parents first. rt-host does the same, journalled: each group on the
//! way gets the share of its parent's runtime that its siblings leave (split evenly among
//! the groups rt-host needs), as the kernel computes shares (`to_ratio`). Revert walks the
//! journal backwards, so children are lowered before their parents.
//! See <https://docs.kernel.org/scheduler/sched-rt-group.html>.

use std::collections::{BTreeMap, BTreeSet};

use rt_sys::cgroup::{self, Mount, RtBandwidth};
use rt_sys::task::Thread;
use rt_sys::{SysError, SysRoot};

use crate::plan::{Action, Change, Status};

/// One group on the way from the root to a real-time thread's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise {
    /// The cgroup directory relative to the root.
    pub dir: String,
    /// Its bandwidth now.
    pub now: RtBandwidth,
    /// The runtime it needs (equal to `now.runtime_us` when nothing changes).
    pub want: i64,
}

/// `/a/b/c` -> `["/a", "/a/b", "/a/b/c"]`.
fn chain(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = format!("{cur}/{part}");
        out.push(cur.clone());
    }
    out
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The cgroup directory of hierarchy path `p` in mount `m`.
fn dir_of(m: &Mount, p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        m.path.clone()
    } else {
        format!("{}/{p}", m.path)
    }
}

/// The runtime of `bw` in a period of `period_us` (rounded up: what it takes from a parent).
fn in_period(bw: &RtBandwidth, period_us: u64) -> i64 {
    if bw.runtime_us < 0 {
        return i64::try_from(period_us).unwrap_or(i64::MAX);
    }
    if bw.period_us == period_us {
        return bw.runtime_us;
    }
    let scaled = (bw.ratio() * u128::from(period_us)).div_ceil(cgroup::BW_UNIT);
    i64::try_from(scaled).unwrap_or(i64::MAX)
}

/// The runtime each group on the way to `leaves` (paths inside `m`) needs, parents first.
/// A group keeps a runtime it already has when that is at least its share; a share of 0
/// (the siblings use everything) stays 0 and is reported by the caller.
pub fn raises(root: &SysRoot, m: &Mount, leaves: &[String]) -> Result<Vec<Raise>, SysError> {
    let nodes: BTreeSet<String> = leaves.iter().flat_map(|l| chain(l)).collect();
    let mut by_depth: Vec<&String> = nodes.iter().collect();
    by_depth.sort_by_key(|p| (p.matches('/').count(), (*p).clone()));
    let mut want: BTreeMap<String, RtBandwidth> = BTreeMap::new();
    want.insert("/".into(), cgroup::rt_bandwidth(root, &m.path)?);
    let mut out = Vec::new();
    for node in by_depth {
        let parent = parent_of(node);
        let Some(pbw) = want.get(parent).copied() else {
            continue;
        };
        let ours: Vec<&String> = nodes.iter().filter(|n| parent_of(n) == parent).collect();
        // What the siblings rt-host does not manage already use, in the parent's period.
        let mut others = 0i64;
        for name in root.list(dir_of(m, parent))? {
            let p = format!("{}/{name}", parent.trim_end_matches('/'));
            let d = dir_of(m, &p);
            if !nodes.contains(&p) && root.exists(format!("{d}/{}", cgroup::RT_RUNTIME)) {
                others += in_period(&cgroup::rt_bandwidth(root, &d)?, pbw.period_us);
            }
        }
        let budget = in_period(&pbw, pbw.period_us);
        let k = i64::try_from(ours.len().max(1)).unwrap_or(i64::MAX);
        let share = (budget - others).max(0) / k;
        let dir = dir_of(m, node);
        let now = cgroup::rt_bandwidth(root, &dir)?;
        let share = if now.period_us == pbw.period_us {
            share
        } else {
            let ratio = RtBandwidth {
                runtime_us: share,
                period_us: pbw.period_us,
            }
            .ratio();
            now.runtime_of(ratio)
        };
        let want_rt = if now.runtime_us < 0 || now.runtime_us >= share {
            now.runtime_us
        } else {
            share
        };
        want.insert(
            node.clone(),
            RtBandwidth {
                runtime_us: want_rt,
                ..now
            },
        );
        out.push(Raise {
            dir,
            now,
            want: want_rt,
        });
    }
    Ok(out)
}

/// The `rt-runtime` items for the real-time vCPU threads `rt_threads` and the real-time
/// emulator and I/O threads `helpers`: one per cpu cgroup on the way to each thread's
/// group (parents first, the runtime shared among all of them), none when the kernel has
/// no RT group scheduling. The groups on the way to a vCPU are essential: without runtime
/// the vCPU cannot be real-time.
pub fn items(
    root: &SysRoot,
    rt_threads: &[&Thread],
    helpers: &[&Thread],
) -> Result<Vec<Change>, SysError> {
    let Some(m) = cgroup::rt_hierarchy(root)? else {
        return Ok(Vec::new());
    };
    let mut leaves = Vec::new();
    let mut vcpu_dirs = BTreeSet::new();
    for (i, t) in rt_threads.iter().chain(helpers).enumerate() {
        match cgroup::thread_cgroup_in(root, t.pid, t.tid, &m) {
            Ok(p) => {
                if i < rt_threads.len() {
                    vcpu_dirs.insert(dir_of(&m, "/"));
                    vcpu_dirs.extend(chain(&p).iter().map(|c| dir_of(&m, c)));
                }
                leaves.push(p);
            }
            Err(e) if e.is_not_found() => continue, // exited meanwhile
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::new();
    for r in raises(root, &m, &leaves)? {
        let essential = vcpu_dirs.contains(&r.dir);
        let rel = format!("{}/{}", r.dir, cgroup::RT_RUNTIME);
        let c = Change::report(
            "rt-runtime",
            root.display(&rel),
            r.now.runtime_us.to_string(),
            r.want.to_string(),
            Status::Ok,
        );
        let c = if essential { c.essential() } else { c };
        out.push(if r.want == 0 {
            Change {
                status: Status::NotPermitted,
                desired: "> 0".into(),
                ..c
            }
            .note(format!(
                "RT group scheduling: the other groups beside {} use all of their parent's \
                 RT runtime, none is left for the VM's real-time threads",
                root.display(&r.dir)
            ))
            .fix("lower cpu.rt_runtime_us of the sibling groups, or raise the parent's")
        } else if r.want == r.now.runtime_us {
            c
        } else {
            c.act(Action::Write {
                path: rel,
                value: r.want.to_string(),
                prior: r.now.runtime_us.to_string(),
            })
            .note("RT group scheduling: a group with runtime 0 may hold no SCHED_FIFO thread")
        });
    }
    Ok(out)
}

/// Why the kernel refused `action` on an essential item (a vCPU's policy or affinity), and
/// what fixes it: (cause, fix).
pub fn diagnose(root: &SysRoot, action: &Action) -> (String, String) {
    match action {
        Action::Affinity { thread, cpus, .. } => {
            let t = Thread {
                pid: thread.pid,
                tid: thread.tid,
                name: thread.name.clone(),
                start_time: thread.start_time,
            };
            affinity_blocked(root, &t, cpus).unwrap_or_else(|| {
                (
                    "the kernel refused to change the thread's CPU affinity (a security \
                     module, or a thread that may not move)"
                        .into(),
                    "check the audit log and the thread's cpuset cgroup".into(),
                )
            })
        }
        Action::Sched { thread, .. } => sched_refused(root, thread.pid, thread.tid),
        _ => (
            "the kernel refused the write".into(),
            "see the error above".into(),
        ),
    }
}

/// Why the kernel refused to make thread `tid` of `pid` real-time, and what fixes it.
pub fn sched_refused(root: &SysRoot, pid: u32, tid: u32) -> (String, String) {
    if rt_sys::task::cap_sys_nice(root) == Some(false) {
        return (
            "rt-host runs without CAP_SYS_NICE, which setting another thread's real-time \
             policy needs"
                .into(),
            "run rt-host setup as root".into(),
        );
    }
    if let Ok(Some(m)) = cgroup::rt_hierarchy(root) {
        if let Ok(path) = cgroup::thread_cgroup_in(root, pid, tid, &m) {
            for p in std::iter::once("/".to_string()).chain(chain(&path)) {
                let dir = dir_of(&m, &p);
                if let Ok(bw) = cgroup::rt_bandwidth(root, &dir) {
                    if bw.runtime_us == 0 {
                        return (
                            format!(
                                "RT group scheduling: the thread's cpu cgroup {} has \
                                 cpu.rt_runtime_us 0, so no thread in it may be real-time",
                                root.display(&dir)
                            ),
                            "let rt-host write the runtimes its rt-runtime items show (it \
                             needs to write cpu.rt_runtime_us), or write them by hand, parents \
                             first, as libvirt's documentation says"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    (
        "the kernel refused SCHED_FIFO/RR for this thread (EPERM) for a reason rt-host \
         cannot see: a security module (SELinux, AppArmor) or, on cgroup2 with RT group \
         scheduling, a real-time thread outside the root cpu cgroup"
            .into(),
        "check the audit log; on cgroup2 keep the VM's threads in a cgroup without the cpu \
         controller"
            .into(),
    )
}

/// Why `thread` cannot be pinned to `cpus` (its cpuset cgroup does not allow them), and
/// the fix; None when its cpuset allows them or cannot be read.
pub fn affinity_blocked(
    root: &SysRoot,
    thread: &Thread,
    cpus: &rt_sys::CpuSet,
) -> Option<(String, String)> {
    let (dir, allowed) = cgroup::thread_cpuset(root, thread.pid, thread.tid).ok()??;
    if cpus.is_subset(&allowed) {
        return None;
    }
    Some((
        format!(
            "the thread's cpuset cgroup {} allows CPUs {allowed} only: sched_setaffinity to {cpus} \
             is refused (EINVAL)",
            root.display(&dir)
        ),
        "pin the vCPU to a CPU its cgroup allows (libvirt: the domain's <vcpupin cpuset=...> \
         sets that cgroup), or enable host.isolation.cpuset_partition"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_parents() {
        assert_eq!(
            chain("/machine/qemu-1-lab/vcpu1"),
            [
                "/machine",
                "/machine/qemu-1-lab",
                "/machine/qemu-1-lab/vcpu1"
            ]
        );
        assert_eq!(chain("/"), Vec::<String>::new());
        assert_eq!(parent_of("/machine"), "/");
        assert_eq!(parent_of("/machine/x"), "/machine");
    }
}
