//! Thread operations behind a trait, so tuning logic runs on a fake tree: [`Live`] uses
//! `sched_setscheduler(2)`/`sched_setaffinity(2)` and cgroupfs; [`Tree`] keeps the same
//! state in a fake `/proc` (the policy and priority fields of `task/TID/stat`, the
//! `Cpus_allowed_list` line of `task/TID/status`, the lines of `task/TID/cgroup`).
//!
//! Also the extra `stat` and `status` fields needed to tell movable kernel threads
//! (children of `kthreadd` without `PF_NO_SETAFFINITY`) and a thread's process (`Tgid`).
//! See <https://docs.kernel.org/filesystems/proc.html>.

use crate::cgroup::CgroupRef;
use crate::sched::{self, Policy, SchedParams};
use crate::{CpuSet, SysError, SysRoot};

pub use crate::task::{status_field, PF_KTHREAD, PF_NO_SETAFFINITY};

/// Replace stat fields `n` (1-based, as in proc(5)) with `values`.
fn rewrite_stat(text: &str, values: &[(usize, String)]) -> Result<String, SysError> {
    let close = text.rfind(')').ok_or_else(|| SysError::Parse {
        what: "task stat".into(),
        detail: "no ')'".into(),
    })?;
    let mut f: Vec<String> = text[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for (n, v) in values {
        let slot = f.get_mut(n - 3).ok_or_else(|| SysError::Parse {
            what: "task stat".into(),
            detail: format!("missing field {n}"),
        })?;
        *slot = v.clone();
    }
    Ok(format!("{} {}\n", &text[..=close], f.join(" ")))
}

/// How tuning reads and changes threads.
pub trait ThreadOps {
    /// Policy and priority of a thread.
    fn get_sched(&self, root: &SysRoot, pid: u32, tid: u32) -> Result<SchedParams, SysError>;
    /// Set policy and priority.
    fn set_sched(&self, root: &SysRoot, pid: u32, tid: u32, p: SchedParams)
        -> Result<(), SysError>;
    /// CPU affinity.
    fn get_affinity(&self, root: &SysRoot, pid: u32, tid: u32) -> Result<CpuSet, SysError>;
    /// Set CPU affinity.
    fn set_affinity(
        &self,
        root: &SysRoot,
        pid: u32,
        tid: u32,
        cpus: &CpuSet,
    ) -> Result<(), SysError>;
    /// Move a thread into cgroup `to`.
    fn move_to_cgroup(
        &self,
        root: &SysRoot,
        pid: u32,
        tid: u32,
        to: &CgroupRef,
    ) -> Result<(), SysError>;
    /// Stop (`SIGSTOP`) or continue (`SIGCONT`) process `pid`.
    fn stop_process(&self, root: &SysRoot, pid: u32, stop: bool) -> Result<(), SysError>;
}

/// The live system: syscalls by tid, cgroupfs writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live;

impl ThreadOps for Live {
    fn get_sched(&self, _: &SysRoot, _: u32, tid: u32) -> Result<SchedParams, SysError> {
        sched::get_sched(tid)
    }
    fn set_sched(&self, _: &SysRoot, _: u32, tid: u32, p: SchedParams) -> Result<(), SysError> {
        sched::set_sched(tid, p)
    }
    fn get_affinity(&self, _: &SysRoot, _: u32, tid: u32) -> Result<CpuSet, SysError> {
        sched::get_affinity(tid)
    }
    fn set_affinity(&self, _: &SysRoot, _: u32, tid: u32, c: &CpuSet) -> Result<(), SysError> {
        sched::set_affinity(tid, c)
    }
    fn move_to_cgroup(
        &self,
        root: &SysRoot,
        _: u32,
        tid: u32,
        to: &CgroupRef,
    ) -> Result<(), SysError> {
        root.write(to.attach_file(), &tid.to_string())
    }
    fn stop_process(&self, _: &SysRoot, pid: u32, stop: bool) -> Result<(), SysError> {
        sched::stop_process(pid, stop)
    }
}

/// A fake tree: thread state lives in the fake `/proc` files. Moving a thread into a
/// cgroup sets its affinity to the cgroup's `cpuset.cpus` (when set), as the kernel does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tree;

fn task_dir(pid: u32, tid: u32) -> String {
    format!("proc/{pid}/task/{tid}")
}

impl ThreadOps for Tree {
    fn get_sched(&self, root: &SysRoot, pid: u32, tid: u32) -> Result<SchedParams, SysError> {
        let st = crate::task::task_stat(root, pid, tid)?;
        let raw = i32::try_from(st.policy).unwrap_or(-1);
        Ok(SchedParams {
            policy: Policy::from_raw(raw).ok_or_else(|| SysError::Parse {
                what: format!("thread {tid}"),
                detail: format!("policy {raw}"),
            })?,
            priority: st.rt_priority,
        })
    }
    fn set_sched(
        &self,
        root: &SysRoot,
        pid: u32,
        tid: u32,
        p: SchedParams,
    ) -> Result<(), SysError> {
        let rel = format!("{}/stat", task_dir(pid, tid));
        let text = root.read(&rel)?;
        let new = rewrite_stat(
            &text,
            &[
                (40, p.priority.to_string()),
                (41, p.policy.to_raw().to_string()),
            ],
        )?;
        root.write(&rel, &new)
    }
    fn get_affinity(&self, root: &SysRoot, pid: u32, tid: u32) -> Result<CpuSet, SysError> {
        let rel = format!("{}/status", task_dir(pid, tid));
        let text = root.read(&rel)?;
        let v = status_field(&text, "Cpus_allowed_list").ok_or_else(|| SysError::Parse {
            what: root.display(&rel),
            detail: "no Cpus_allowed_list".into(),
        })?;
        CpuSet::parse(v).map_err(|e| SysError::Parse {
            what: root.display(&rel),
            detail: e.to_string(),
        })
    }
    fn set_affinity(
        &self,
        root: &SysRoot,
        pid: u32,
        tid: u32,
        cpus: &CpuSet,
    ) -> Result<(), SysError> {
        let rel = format!("{}/status", task_dir(pid, tid));
        let text = root.read(&rel)?;
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("Cpus_allowed_list:") {
                    format!("Cpus_allowed_list:\t{cpus}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        root.write(&rel, &(new.join("\n") + "\n"))
    }
    fn move_to_cgroup(
        &self,
        root: &SysRoot,
        pid: u32,
        tid: u32,
        to: &CgroupRef,
    ) -> Result<(), SysError> {
        let rel = format!("{}/cgroup", task_dir(pid, tid));
        let text = root.read(&rel)?;
        root.write(to.attach_file(), &tid.to_string())?;
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                let mut it = l.splitn(3, ':');
                let (id, ctrls) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                let hit = if to.v2 {
                    id == "0" && ctrls.is_empty()
                } else {
                    ctrls.split(',').any(|c| c == "cpuset")
                };
                if hit {
                    format!("{id}:{ctrls}:{}", to.path)
                } else {
                    l.to_string()
                }
            })
            .collect();
        root.write(&rel, &(new.join("\n") + "\n"))?;
        // As the kernel does on attach: the affinity becomes the cpuset's CPUs.
        let cpus = root
            .read_trim(to.file("cpuset.cpus"))
            .ok()
            .and_then(|t| CpuSet::parse(&t).ok())
            .filter(|c| !c.is_empty());
        match cpus {
            Some(c) => self.set_affinity(root, pid, tid, &c),
            None => Ok(()),
        }
    }
    fn stop_process(&self, root: &SysRoot, pid: u32, stop: bool) -> Result<(), SysError> {
        // As the kernel shows it: state T while stopped.
        let rel = format!("{}/stat", task_dir(pid, pid));
        let text = root.read(&rel)?;
        let state = if stop { "T" } else { "S" };
        let new = rewrite_stat(&text, &[(3, state.to_string())])?;
        root.write(&rel, &new)?;
        if root.exists(format!("proc/{pid}/stat")) {
            root.write(format!("proc/{pid}/stat"), &new)?;
        }
        Ok(())
    }
}

/// The operations that fit `root`: [`Live`] for `/`, [`Tree`] for a fake tree.
pub fn for_root(root: &SysRoot) -> &'static dyn ThreadOps {
    if root.is_live() {
        &Live
    } else {
        &Tree
    }
}

/// The process (thread group) of thread `tid`, from `/proc/TID/status`.
pub fn tgid_of(root: &SysRoot, tid: u32) -> Result<u32, SysError> {
    let rel = format!("proc/{tid}/status");
    let text = root.read(&rel)?;
    status_field(&text, "Tgid")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SysError::Parse {
            what: root.display(&rel),
            detail: "no Tgid".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A kernel thread (kworker) on this machine: ppid 2, flags 0x4208060.
    const KWORKER: &str = "57 (kworker/1:1-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 3 0 0 20 0 1 0 62 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const STATUS: &str =
        "Name:\tCPU 1/TCG\nTgid:\t2340\nPid:\t2351\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";

    #[test]
    fn stat_ppid_and_flags() {
        let st = crate::task::parse_stat(KWORKER).unwrap();
        let (ppid, flags) = (st.ppid, st.flags);
        assert_eq!(ppid, 2);
        assert_ne!(flags & PF_KTHREAD, 0);
        assert_ne!(flags & PF_NO_SETAFFINITY, 0);
        let e = (crate::task::parse_stat("1 (x) S"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field 4"), "{e}");
        assert_eq!(status_field(STATUS, "Tgid"), Some("2340"));
        assert_eq!(status_field(STATUS, "Cpus_allowed_list"), Some("0-1"));
    }

    #[test]
    fn tree_ops_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let d = root.path("proc/2340/task/2351");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("stat"),
            KWORKER.replace("57 (kworker/1:1-events)", "2351 (CPU 1/TCG)"),
        )
        .unwrap();
        std::fs::write(d.join("status"), STATUS).unwrap();
        std::fs::write(d.join("cgroup"), "3:cpuset:/\n0::/\n").unwrap();
        std::fs::create_dir_all(root.path("sys/fs/cgroup/cpuset/rt")).unwrap();
        std::fs::write(root.path("sys/fs/cgroup/cpuset/rt/tasks"), "").unwrap();
        let t = Tree;
        assert_eq!(
            t.get_sched(&root, 2340, 2351).unwrap().policy,
            Policy::Other
        );
        let fifo = SchedParams {
            policy: Policy::Fifo,
            priority: 50,
        };
        t.set_sched(&root, 2340, 2351, fifo).unwrap();
        assert_eq!(t.get_sched(&root, 2340, 2351).unwrap(), fifo);
        // The start time (field 22) survives the rewrite.
        assert_eq!(
            crate::task::task_stat(&root, 2340, 2351)
                .unwrap()
                .start_time,
            62
        );
        t.set_affinity(&root, 2340, 2351, &CpuSet::parse("1").unwrap())
            .unwrap();
        assert_eq!(t.get_affinity(&root, 2340, 2351).unwrap().to_string(), "1");
        let cg = CgroupRef {
            mount: "sys/fs/cgroup/cpuset".into(),
            path: "/rt".into(),
            v2: false,
        };
        t.move_to_cgroup(&root, 2340, 2351, &cg).unwrap();
        assert_eq!(
            crate::cgroup::thread_cgroup(&root, 2340, 2351, false).unwrap(),
            "/rt"
        );
        assert_eq!(
            crate::cgroup::thread_cgroup(&root, 2340, 2351, true).unwrap(),
            "/"
        );
        assert!(t.get_sched(&root, 2340, 9).unwrap_err().is_not_found());
        std::fs::create_dir_all(root.path("proc/2351")).unwrap();
        std::fs::write(root.path("proc/2351/status"), STATUS).unwrap();
        assert_eq!(tgid_of(&root, 2351).unwrap(), 2340);
    }
}
