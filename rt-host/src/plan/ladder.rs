//! The kernel-thread priority ladder of the realtime CPUs and whether a real-time vCPU can
//! starve the kernel threads of its CPU, as one question.
//!
//! A busy SCHED_FIFO vCPU (a guest that polls, or spins) runs until it blocks. The per-CPU
//! kernel threads of its CPU (`ksoftirqd/N` softirqs, `ktimers/N` timer softirqs on
//! PREEMPT_RT, `rcuc/N` RCU callbacks) then run only when something lets them:
//! - they are FIFO above the vCPU (tuned's realtime-virtual-host ladder: ksoftirqd and
//!   ktimers 2, rcuc and rcub 4, with vCPUs at FIFO 1; KubeVirt's kvm-pit 2);
//! - RT throttling (`sched_rt_runtime_us` below its period) stops every real-time thread of
//!   the CPU for the rest of each period, which lets SCHED_OTHER threads run, but not a
//!   FIFO kernel thread below the vCPU (it is throttled with it);
//! - stalld, which gives a starving thread a short SCHED_DEADLINE boost.
//!
//! `host.kthread_priorities` sets the ladder (journalled, reverted); the `rt-starvation`
//! item per realtime CPU says which of the three holds. A profile that turns throttling
//! off (`rt_runtime_unlimited`) with nothing else to rescue the threads is refused.
//! See <https://docs.kernel.org/scheduler/sched-rt-group.html>.

use std::collections::BTreeMap;

use profiles::{Host, KthreadPriorities};
use rt_sys::sched::{Policy, SchedParams};
use rt_sys::task::{self, TaskStat};
use rt_sys::{sysctl, threads, SysRoot};

use super::{Action, Change, Status, ThreadRef, When, B};
use crate::error::{sys, TuneError};

/// Per-CPU kernel threads that must run on their CPU: their kind and its ladder priority.
fn ladder_priority(k: &KthreadPriorities, kind: &str) -> Option<u8> {
    match kind {
        "ksoftirqd" => Some(k.ksoftirqd),
        "ktimers" => Some(k.ktimers),
        "rcuc" => Some(k.rcuc),
        "rcub" => Some(k.rcub),
        "kvm-pit" => Some(k.kvm_pit),
        _ => None,
    }
}

/// The kinds bound to one CPU that a busy vCPU on that CPU can starve.
const PER_CPU: &[&str] = &["ksoftirqd", "ktimers", "rcuc"];

/// A kernel thread of interest and its scheduling, now and after setup.
#[derive(Debug, Clone)]
struct Kthread {
    stat: TaskStat,
    kind: String,
    /// CPU (per-CPU kinds), RCU node (`rcub`) or QEMU pid (`kvm-pit`).
    n: u32,
    now: SchedParams,
    after: SchedParams,
}

impl Kthread {
    fn thread(&self) -> ThreadRef {
        (&rt_sys::task::Thread::from_stat(self.stat.tid, &self.stat)).into()
    }
}

fn sched_of(st: &TaskStat) -> SchedParams {
    SchedParams {
        policy: Policy::from_raw(i32::try_from(st.policy).unwrap_or(-1)).unwrap_or(Policy::Other),
        priority: st.rt_priority,
    }
}

/// The named kernel threads (`kind/N`) of the CPUs `seen` (the realtime CPUs and any CPU
/// with a real-time vCPU), with their scheduling after the ladder, which only the realtime
/// CPUs `rt_cpus` get.
fn kthreads(
    root: &SysRoot,
    ladder: Option<&KthreadPriorities>,
    vm_pids: &[u32],
    rt_cpus: &rt_sys::CpuSet,
    seen: &rt_sys::CpuSet,
) -> Result<Vec<Kthread>, TuneError> {
    let mut out = Vec::new();
    for pid in task::pids(root).map_err(sys("Listing processes"))? {
        let Ok(st) = task::tid_stat(root, pid) else {
            continue;
        };
        if st.flags & threads::PF_KTHREAD == 0 {
            continue;
        }
        let Some((kind, n)) = task::percpu_kthread(&st.comm) else {
            continue;
        };
        let ours = match kind {
            "kvm-pit" => vm_pids.contains(&n),
            "rcub" => true,
            k => PER_CPU.contains(&k) && seen.contains(n),
        };
        if !ours {
            continue;
        }
        let now = sched_of(&st);
        let laddered = !PER_CPU.contains(&kind) || rt_cpus.contains(n);
        let after = match ladder
            .filter(|_| laddered)
            .and_then(|l| ladder_priority(l, kind))
        {
            Some(p) => SchedParams {
                policy: Policy::Fifo,
                priority: u32::from(p),
            },
            None => now,
        };
        let kind = kind.to_string();
        out.push(Kthread {
            stat: st,
            kind,
            n,
            now,
            after,
        });
    }
    Ok(out)
}

/// The ladder stage: each kernel thread of the ladder to its FIFO priority, then the
/// starvation check of every realtime CPU that runs a real-time vCPU.
pub(super) fn items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let vm_pids: Vec<u32> = b.vms.iter().map(|v| v.threads.pid).collect();
    let rt_vcpu_cpus = rt_sys::CpuSet::from_cpus(profiles::host_vms(host).iter().flat_map(|v| {
        v.vcpus
            .iter()
            .filter(|p| p.policy.is_realtime())
            .map(|p| p.cpu)
            .collect::<Vec<_>>()
    }));
    let ks = kthreads(
        b.root(),
        host.kthread_priorities.as_ref(),
        &vm_pids,
        &host.realtime_cpus,
        &host.realtime_cpus.union(&rt_vcpu_cpus),
    )?;
    if host.kthread_priorities.is_some() {
        pit_affinity(b, host, &ks);
        for k in ks.iter().filter(|k| k.now != k.after || laddered(host, k)) {
            let c = Change::report(
                "kthread-sched",
                format!("sched of {:?} (tid {})", k.stat.comm, k.stat.tid),
                k.now.to_string(),
                k.after.to_string(),
                Status::Ok,
            );
            b.push(if k.now == k.after {
                c
            } else {
                c.act(Action::Sched {
                    thread: k.thread(),
                    params: k.after,
                    prior: k.now,
                })
                .note("host.kthread_priorities: above every real-time vCPU of the CPU")
            });
        }
    }
    starvation(b, host, &ks)
}

/// Each VM's `kvm-pit/PID` thread on the CPUs of its vCPU 0, whose timer interrupts it
/// injects (as KubeVirt does): no cross-CPU wakeup for every PIT tick.
/// With an isolated cpuset partition holding that CPU, a kernel thread of the root cgroup
/// cannot run there (the kernel refuses the affinity with EINVAL, seen in the host lab):
/// the thread stays on the housekeeping CPUs and the item says why.
fn pit_affinity(b: &mut B<'_, '_>, host: &Host, ks: &[Kthread]) {
    let vms = b.vms.clone();
    for k in ks.iter().filter(|k| k.kind == "kvm-pit") {
        let Some(v) = vms.iter().find(|v| v.threads.pid == k.n) else {
            continue;
        };
        let want = v
            .view
            .pin(0)
            .map(|p| rt_sys::CpuSet::from_cpus([p.cpu]))
            .unwrap_or_else(|| v.view.emulator_cpus.clone());
        let Ok(cur) = b.ctx.ops.get_affinity(b.root(), k.stat.tid, k.stat.tid) else {
            continue;
        };
        if host.isolation.cpuset_partition && want.is_subset(&host.realtime_cpus) {
            b.push(
                Change::report(
                    "kthread-affinity",
                    format!("affinity of {:?} (tid {})", k.stat.comm, k.stat.tid),
                    cur.to_string(),
                    want.to_string(),
                    Status::NotApplicable,
                )
                .note(format!(
                    "vCPU 0's CPU {want} is in the isolated cpuset partition, which a kernel \
                     thread of the root cgroup cannot use: it stays on its CPUs"
                )),
            );
            continue;
        }
        let c = Change::report(
            "kthread-affinity",
            format!("affinity of {:?} (tid {})", k.stat.comm, k.stat.tid),
            cur.to_string(),
            want.to_string(),
            Status::Ok,
        )
        .note("the VM's PIT thread beside its vCPU 0, as KubeVirt places it");
        b.push(if cur == want {
            c
        } else {
            c.act(Action::Affinity {
                thread: k.thread(),
                cpus: want,
                prior: cur,
            })
        });
    }
}

/// True for a thread the ladder sets (not a per-CPU thread of a housekeeping CPU).
fn laddered(host: &Host, k: &Kthread) -> bool {
    !PER_CPU.contains(&k.kind.as_str()) || host.realtime_cpus.contains(k.n)
}

/// What can let a starved thread run: RT throttling after setup, and stalld.
struct Rescue {
    /// `sched_rt_runtime_us` after setup (`-1`: no throttling), as text.
    runtime: String,
    throttling: bool,
    stalld: Option<u32>,
}

impl Rescue {
    fn read(b: &B<'_, '_>, host: &Host) -> Result<Rescue, TuneError> {
        let root = b.root();
        let runtime = if host.sysctl.rt_runtime_unlimited {
            "-1".to_string()
        } else {
            root.read_trim(sysctl::SCHED_RT_RUNTIME)
                .unwrap_or_else(|_| "(absent)".into())
        };
        let stalld = task::find_by_comm(root, STALLD)
            .map_err(sys("Looking for stalld"))?
            .first()
            .map(|s| s.tid);
        Ok(Rescue {
            throttling: runtime != "-1" && runtime != "(absent)",
            runtime,
            stalld,
        })
    }

    fn describe(&self) -> String {
        let t = if self.throttling {
            format!("RT throttling on ({} us per period)", self.runtime)
        } else {
            "RT throttling off".to_string()
        };
        let s = match self.stalld {
            Some(p) => format!("stalld running (pid {p})"),
            None => "no stalld".to_string(),
        };
        format!("{t}, {s}")
    }
}

/// The daemon that boosts starving threads (<https://gitlab.com/rt-linux-tools/stalld>).
pub const STALLD: &str = "stalld";

/// One `rt-starvation` item per realtime CPU with a real-time vCPU.
fn starvation(b: &mut B<'_, '_>, host: &Host, ks: &[Kthread]) -> Result<(), TuneError> {
    let mut vcpu_prio: BTreeMap<u32, u32> = BTreeMap::new();
    for v in profiles::host_vms(host) {
        for p in v.vcpus.iter().filter(|p| p.policy.is_realtime()) {
            let e = vcpu_prio.entry(p.cpu).or_default();
            *e = (*e).max(u32::from(p.priority));
        }
    }
    if vcpu_prio.is_empty() {
        return Ok(());
    }
    let rescue = Rescue::read(b, host)?;
    for (cpu, prio) in vcpu_prio {
        let on_cpu: Vec<&Kthread> = ks
            .iter()
            .filter(|k| PER_CPU.contains(&k.kind.as_str()) && k.n == cpu)
            .collect();
        let c = judge(cpu, prio, &on_cpu, &rescue, host)?;
        b.push(c);
    }
    Ok(())
}

/// The verdict for one CPU whose highest real-time vCPU runs at FIFO/RR `prio`.
fn judge(
    cpu: u32,
    prio: u32,
    on_cpu: &[&Kthread],
    rescue: &Rescue,
    host: &Host,
) -> Result<Change, TuneError> {
    let shown: Vec<String> = on_cpu
        .iter()
        .map(|k| format!("{} {}", k.stat.comm, k.after))
        .collect();
    let current = format!(
        "vCPU at {prio}; {}; {}",
        if shown.is_empty() {
            "no per-CPU kernel threads".to_string()
        } else {
            shown.join(", ")
        },
        rescue.describe()
    );
    let below_rt: Vec<&str> = on_cpu
        .iter()
        .filter(|k| k.after.policy.is_realtime() && k.after.priority <= prio)
        .map(|k| k.stat.comm.as_str())
        .collect();
    let normal: Vec<&str> = on_cpu
        .iter()
        .filter(|k| !k.after.policy.is_realtime())
        .map(|k| k.stat.comm.as_str())
        .collect();
    let c = |st: Status| {
        Change::report(
            "rt-starvation",
            format!("kernel threads of CPU {cpu}"),
            current.clone(),
            "each runs even under a busy vCPU",
            st,
        )
    };
    // The ladder is for the realtime CPUs; a housekeeping CPU with a real-time vCPU (below
    // a real-time main loop) relies on RT throttling or stalld.
    let ladder_fix = if host.realtime_cpus.contains(cpu) {
        "set host.kthread_priorities (tuned's ladder: ksoftirqd and ktimers FIFO 2, rcuc and \
         rcub 4) with the vCPUs at FIFO 1, or run stalld"
    } else {
        "run stalld, or keep real-time vCPUs off this housekeeping CPU"
    };
    if below_rt.is_empty() && normal.is_empty() {
        return Ok(c(Status::Ok).note("every per-CPU kernel thread is above the vCPU"));
    }
    if rescue.stalld.is_some() {
        return Ok(c(Status::Ok).note("stalld boosts a kernel thread the vCPU starves"));
    }
    if !below_rt.is_empty() {
        return Ok(Change {
            when: When::NextBoot,
            ..c(Status::Differs)
        }
        .note(format!(
            "{} FIFO at or below the vCPU: a busy vCPU keeps them off the CPU for ever \
             (RT throttling stops them too)",
            below_rt.join(", ")
        ))
        .fix(ladder_fix));
    }
    if rescue.throttling {
        return Ok(c(Status::Warn)
            .note(format!(
                "{} SCHED_OTHER under the vCPU: only RT throttling lets them run, for the \
                 rest of each period once real-time threads used {} us, so a busy vCPU \
                 delays softirqs and RCU by tens of ms",
                normal.join(", "),
                rescue.runtime
            ))
            .fix(ladder_fix));
    }
    Err(TuneError::Unsafe(format!(
        "CPU {cpu}: {} would run SCHED_OTHER under a FIFO {prio} vCPU with RT throttling off \
         and no stalld: a busy vCPU would starve them for ever; {ladder_fix}, or keep RT \
         throttling (host.sysctl.rt_runtime_unlimited: false)",
        normal.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use crate::fake::{self, FakeMachine};
    use crate::plan::{build, Ctx, Status};
    use crate::TuneError;
    use rt_sys::threads::{ThreadOps, Tree, PF_KTHREAD, PF_NO_SETAFFINITY};

    fn host(prio: u8, extra: &str) -> profiles::Host {
        fake::host_from(&format!(
            r#"(housekeeping_cpus: "0", realtime_cpus: "1", {extra}
                vms: [(name: "lab", memory_mib: 512, vcpus: [(vcpu: 1, cpu: 1, priority: {prio})])])"#
        ))
    }

    fn item(m: &FakeMachine, h: &profiles::Host) -> crate::plan::Change {
        let p = build("t", h, &Ctx::new(&m.root)).unwrap();
        p.changes
            .into_iter()
            .find(|c| c.item == "rt-starvation")
            .expect("an rt-starvation item")
    }

    #[test]
    fn the_ladder_is_set_above_the_vcpus_and_reverted() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let pinned = PF_KTHREAD | PF_NO_SETAFFINITY;
        // A PREEMPT_RT kernel's threads of CPU 1: ktimers and rcuc at FIFO 1.
        m.thread(23, 23, "ktimers/1", 2, pinned, 1, 1, "1");
        m.thread(24, 24, "rcuc/1", 2, pinned, 1, 1, "1");
        m.thread(25, 25, "rcub/0", 2, PF_KTHREAD, 1, 1, "0-1");
        m.thread(26, 26, "ksoftirqd/0", 2, pinned, 0, 0, "0");
        m.thread(27, 27, "kvm-pit/4000", 2, PF_KTHREAD, 0, 0, "0-1");
        let h = host(1, "kthread_priorities: (),");
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let mut set: Vec<(String, String)> = p
            .changes
            .iter()
            .filter(|c| c.item == "kthread-sched")
            .map(|c| (c.target.clone(), c.desired.clone()))
            .collect();
        set.sort();
        let t = |n: &str, tid: u32| format!("sched of {n:?} (tid {tid})");
        assert_eq!(
            set,
            [
                (t("ksoftirqd/1", 22), "fifo:2".to_string()),
                (t("ktimers/1", 23), "fifo:2".to_string()),
                (t("kvm-pit/4000", 27), "fifo:2".to_string()),
                (t("rcub/0", 25), "fifo:4".to_string()),
                (t("rcuc/1", 24), "fifo:4".to_string()),
            ],
            "ksoftirqd/0 is on a housekeeping CPU: left alone"
        );
        let pos = |i: &str| p.changes.iter().position(|c| c.item == i).unwrap();
        assert!(pos("kthread-sched") < pos("vcpu-sched"), "ladder first");
        let pit = &p.changes[pos("kthread-affinity")];
        assert_eq!(
            (pit.target.as_str(), pit.desired.as_str()),
            ("affinity of \"kvm-pit/4000\" (tid 27)", "0"),
            "beside vCPU 0, which stays on the emulator CPU"
        );
        assert_eq!(item(&m, &h).status, Status::Ok);
        let jdir = dir.path().join("journal");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?}", r.verify_failed);
        assert_eq!(
            Tree.get_sched(&m.root, 23, 23).unwrap().to_string(),
            "fifo:2"
        );
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }

    #[test]
    fn the_pit_thread_stays_off_a_cpu_of_the_isolated_partition() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.thread(27, 27, "kvm-pit/4000", 2, PF_KTHREAD, 0, 0, "0-1");
        let h = fake::host_from(
            r#"(housekeeping_cpus: "0", realtime_cpus: "1", kthread_priorities: (),
                isolation: (cpuset_partition: true),
                vms: [(name: "lab", memory_mib: 512, cpus: 1,
                       vcpus: [(vcpu: 0, cpu: 1, priority: 1)])])"#,
        );
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let pit = p
            .changes
            .iter()
            .find(|c| c.item == "kthread-affinity")
            .expect("a kvm-pit affinity item");
        assert_eq!(pit.status, Status::NotApplicable, "{pit:?}");
        assert!(pit.action.is_none(), "no affinity change planned: {pit:?}");
        assert!(
            pit.note
                .as_deref()
                .unwrap_or("")
                .contains("isolated cpuset partition"),
            "{pit:?}"
        );
    }

    #[test]
    fn starvation_is_judged_with_throttling_and_stalld_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        // ksoftirqd/1 SCHED_OTHER below a FIFO vCPU, RT throttling on: a warning.
        let c = item(&m, &host(50, ""));
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.current.contains(
                "ksoftirqd/1 other:0; RT throttling on (950000 us per period), no stalld"
            ),
            "{c:?}"
        );
        // Throttling off and nothing else: the profile is refused.
        match build(
            "t",
            &host(50, "sysctl: (rt_runtime_unlimited: true),"),
            &Ctx::new(&m.root),
        ) {
            Err(TuneError::Unsafe(why)) => {
                assert!(
                    why.starts_with(
                        "CPU 1: ksoftirqd/1 would run SCHED_OTHER under a FIFO 50 vCPU"
                    ),
                    "{why}"
                )
            }
            other => panic!("not refused: {other:?}"),
        }
        // A FIFO 1 kernel thread under a FIFO 50 vCPU: throttling does not help.
        m.thread(
            23,
            23,
            "ktimers/1",
            2,
            PF_KTHREAD | PF_NO_SETAFFINITY,
            1,
            1,
            "1",
        );
        let c = item(&m, &host(50, ""));
        assert_eq!(c.status, Status::Differs, "{c:?}");
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("host.kthread_priorities"),
            "{c:?}"
        );
        // stalld rescues both.
        m.thread(700, 700, "stalld", 1, 0, 0, 0, "0");
        let c = item(&m, &host(50, "sysctl: (rt_runtime_unlimited: true),"));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.current
                .ends_with("RT throttling off, stalld running (pid 700)"),
            "{c:?}"
        );
    }
}
