//! Processes and their threads: `/proc/PID/task/TID/{comm,stat}`, `/proc/PID/cmdline`.
//!
//! Finding vCPU threads by name (`CPU 1/KVM`, `CPU 1/TCG`: QEMU with `-name ...,debug-threads=on`)
//! and guarding against pid reuse by the thread start time (field 22 of `stat`).
//! See <https://docs.kernel.org/filesystems/proc.html> (table 1-4).

use crate::{SysError, SysRoot};

/// `PF_NO_SETAFFINITY` in the `flags` field of `stat`: userland may not change the
/// affinity (per-CPU kernel threads).
pub const PF_NO_SETAFFINITY: u64 = 0x0400_0000;
/// `PF_KTHREAD`: a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The value of `key` in `/proc/PID/status` text (`Tgid`, `Cpus_allowed_list`).
pub fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// Fields of `/proc/PID/task/TID/stat` that rtvirt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    /// Thread id.
    pub tid: u32,
    /// `comm` (thread name, at most 15 bytes).
    pub comm: String,
    /// State letter (R, S, D, ...).
    pub state: char,
    /// Parent process id (field 4).
    pub ppid: u32,
    /// Kernel `PF_*` flags (field 9): `PF_KTHREAD`, `PF_NO_SETAFFINITY`, ...
    pub flags: u64,
    /// Start time after boot in clock ticks: with the tid, identifies the thread across pid reuse.
    pub start_time: u64,
    /// CPU the thread last ran on.
    pub processor: u32,
    /// Real-time priority (0 for normal policies).
    pub rt_priority: u32,
    /// Scheduling policy number (0 OTHER, 1 FIFO, 2 RR, 3 BATCH, 5 IDLE, 6 DEADLINE).
    pub policy: u32,
}

/// Parse one `stat` line. `comm` may contain spaces and parentheses, so the fields are
/// taken after the last `)`.
pub fn parse_stat(text: &str) -> Result<TaskStat, SysError> {
    let perr = |d: &str| SysError::Parse {
        what: "task stat".into(),
        detail: d.to_string(),
    };
    let open = text.find('(').ok_or_else(|| perr("no '('"))?;
    let close = text.rfind(')').ok_or_else(|| perr("no ')'"))?;
    let tid: u32 = text[..open].trim().parse().map_err(|_| perr("bad pid"))?;
    let comm = text[open + 1..close].to_string();
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let field = |n: usize| -> Result<u64, SysError> {
        f.get(n - 3)
            .ok_or_else(|| perr(&format!("missing field {n}")))?
            .parse()
            .map_err(|_| perr(&format!("bad field {n}")))
    };
    let small = |n: usize| -> Result<u32, SysError> {
        u32::try_from(field(n)?).map_err(|_| perr(&format!("field {n} out of range")))
    };
    Ok(TaskStat {
        tid,
        comm,
        state: f
            .first()
            .and_then(|s| s.chars().next())
            .ok_or_else(|| perr("no state"))?,
        ppid: small(4)?,
        flags: field(9)?,
        start_time: field(22)?,
        processor: small(39)?,
        rt_priority: small(40)?,
        policy: small(41)?,
    })
}

/// A thread of a process as found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// Start time (clock ticks since boot).
    pub start_time: u64,
}

/// The `stat` of every thread of process `pid` (threads that exit while listed are skipped).
pub fn task_stats(root: &SysRoot, pid: u32) -> Result<Vec<TaskStat>, SysError> {
    let mut out = Vec::new();
    for t in root.list(format!("proc/{pid}/task"))? {
        let Ok(tid) = t.parse::<u32>() else { continue };
        match task_stat(root, pid, tid) {
            Ok(st) => out.push(st),
            Err(e) if e.is_not_found() => continue, // exited while we listed
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Thread {
    /// The thread of process `pid` described by `st`.
    pub fn from_stat(pid: u32, st: &TaskStat) -> Thread {
        Thread {
            pid,
            tid: st.tid,
            name: st.comm.clone(),
            start_time: st.start_time,
        }
    }
}

/// The threads of process `pid`.
pub fn threads(root: &SysRoot, pid: u32) -> Result<Vec<Thread>, SysError> {
    Ok(task_stats(root, pid)?
        .iter()
        .map(|st| Thread::from_stat(pid, st))
        .collect())
}

/// Read `/proc/PID/task/TID/stat`.
pub fn task_stat(root: &SysRoot, pid: u32, tid: u32) -> Result<TaskStat, SysError> {
    let rel = format!("proc/{pid}/task/{tid}/stat");
    let text = root.read(&rel)?;
    parse_stat(&text).map_err(|e| match e {
        SysError::Parse { detail, .. } => SysError::Parse {
            what: root.display(&rel),
            detail,
        },
        other => other,
    })
}

/// Read `/proc/TID/stat` for a thread whose process is unknown.
pub fn tid_stat(root: &SysRoot, tid: u32) -> Result<TaskStat, SysError> {
    task_stat(root, tid, tid)
}

/// The command line of `pid` as arguments (NUL separated in procfs).
pub fn cmdline(root: &SysRoot, pid: u32) -> Result<Vec<String>, SysError> {
    let raw = root.read(format!("proc/{pid}/cmdline"))?;
    Ok(raw
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// Every process id under `/proc`.
pub fn pids(root: &SysRoot) -> Result<Vec<u32>, SysError> {
    Ok(root
        .list("proc")?
        .into_iter()
        .filter_map(|n| n.parse().ok())
        .collect())
}

/// `CAP_SYS_NICE` (bit 23 of the capability sets): needed to make another thread real-time.
const CAP_SYS_NICE: u32 = 23;

/// `CAP_IPC_LOCK` (bit 14): lock memory beyond `RLIMIT_MEMLOCK` (QEMU's `mem-lock=on`).
pub const CAP_IPC_LOCK: u32 = 14;

/// Whether the calling process has `CAP_SYS_NICE` in its effective set (`CapEff` of
/// `/proc/self/status`); None when the tree has no such file (a fake root).
pub fn cap_sys_nice(root: &SysRoot) -> Option<bool> {
    has_capability(root, CAP_SYS_NICE)
}

/// Whether the calling process has capability bit `cap` in its effective set; None when
/// the tree has no `/proc/self/status` (a fake root).
pub fn has_capability(root: &SysRoot, cap: u32) -> Option<bool> {
    let text = root.read("proc/self/status").ok()?;
    parse_cap_eff(&text).map(|caps| caps & (1u64 << cap) != 0)
}

/// The soft `Max locked memory` limit of a `/proc/PID/limits` text in bytes (None:
/// unlimited). See proc(5) and getrlimit(2) `RLIMIT_MEMLOCK`.
pub fn parse_memlock_limit(limits: &str) -> Result<Option<u64>, SysError> {
    let bad = |detail: String| SysError::Parse {
        what: "/proc/self/limits".into(),
        detail,
    };
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .ok_or_else(|| bad("no \"Max locked memory\" line".into()))?;
    match line["Max locked memory".len()..].split_whitespace().next() {
        Some("unlimited") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("bad soft limit in {line:?}"))),
        None => Err(bad(format!("no soft limit in {line:?}"))),
    }
}

/// The calling process's soft `RLIMIT_MEMLOCK` in bytes (None: unlimited).
pub fn memlock_limit(root: &SysRoot) -> Result<Option<u64>, SysError> {
    parse_memlock_limit(&root.read("proc/self/limits")?)
}

/// The `CapEff` mask of a `/proc/PID/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let v = status_field(status, "CapEff")?;
    u64::from_str_radix(v, 16).ok()
}

/// The vCPU index of a QEMU thread name: `CPU 1/KVM` and `CPU 1/TCG` give `Some(1)`.
pub fn vcpu_index(thread_name: &str) -> Option<u32> {
    let rest = thread_name.strip_prefix("CPU ")?;
    let (n, accel) = rest.split_once('/')?;
    if accel.is_empty() {
        return None;
    }
    n.parse().ok()
}

/// A kernel thread bound to one CPU or one process, by its name: `ksoftirqd/3`,
/// `ktimers/3`, `rcuc/3`, `rcub/0`, `migration/3` give the kind and the CPU (for `rcub`
/// the RCU node), `kvm-pit/4000` the kind and QEMU's pid. Worker names such as
/// `kworker/1:1-events` are not of this form (the number is followed by more).
pub fn percpu_kthread(comm: &str) -> Option<(&str, u32)> {
    let (kind, n) = comm.rsplit_once('/')?;
    if kind.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.is_empty() {
        return None;
    }
    Some((kind, n.parse().ok()?))
}

/// The processes whose main thread is named `comm` (a daemon such as `irqbalance`,
/// `stalld` or `ksmtuned`), kernel threads excluded.
pub fn find_by_comm(root: &SysRoot, comm: &str) -> Result<Vec<TaskStat>, SysError> {
    let mut out = Vec::new();
    for pid in pids(root)? {
        let Ok(st) = tid_stat(root, pid) else {
            continue; // exited meanwhile, or not a process directory
        };
        if st.comm == comm && st.flags & PF_KTHREAD == 0 {
            out.push(st);
        }
    }
    Ok(out)
}

/// Processes whose QEMU `-name` (the first comma-separated field, or `guest=`) is `name`.
pub fn find_qemu_by_name(root: &SysRoot, name: &str) -> Result<Vec<u32>, SysError> {
    let mut found = Vec::new();
    for pid in pids(root)? {
        let Ok(args) = cmdline(root, pid) else {
            continue;
        };
        if qemu_name_of(&args).as_deref() == Some(name) {
            found.push(pid);
        }
    }
    Ok(found)
}

/// The `-name` of a QEMU command line, if any.
pub fn qemu_name_of(args: &[String]) -> Option<String> {
    let is_qemu = args.first().is_some_and(|a| a.contains("qemu"));
    if !is_qemu {
        return None;
    }
    let i = args.iter().position(|a| a == "-name")?;
    let val = args.get(i + 1)?;
    for part in val.split(',') {
        if let Some(g) = part.strip_prefix("guest=") {
            return Some(g.to_string());
        }
    }
    val.split(',')
        .next()
        .filter(|s| !s.contains('='))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pasted from a QEMU vCPU thread on this machine's kernel (6.x).
    const STAT: &str = "2351 (CPU 1/TCG) S 1 2340 2340 0 -1 4194368 120 0 0 0 5207 7 0 0 -51 0 5 0 48812 1516294144 33720 18446744073709551615 1 1 0 0 0 0 268444224 4096 17954 0 0 0 -1 1 50 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn per_cpu_kernel_thread_names() {
        assert_eq!(percpu_kthread("ksoftirqd/3"), Some(("ksoftirqd", 3)));
        assert_eq!(percpu_kthread("ktimers/0"), Some(("ktimers", 0)));
        assert_eq!(percpu_kthread("kvm-pit/4000"), Some(("kvm-pit", 4000)));
        assert_eq!(percpu_kthread("kworker/1:1-events"), None);
        assert_eq!(percpu_kthread("kworker/R-rcu_gp"), None);
        assert_eq!(percpu_kthread("CPU 1/TCG"), None);
        assert_eq!(percpu_kthread("rcu_preempt"), None);
    }

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.tid, 2351);
        assert_eq!(s.comm, "CPU 1/TCG");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4194368);
        assert_eq!(s.start_time, 48812);
        assert_eq!(s.processor, 1);
        assert_eq!(s.rt_priority, 50);
        assert_eq!(s.policy, 1);
    }

    #[test]
    fn parses_comm_with_parentheses() {
        let line = STAT.replace("(CPU 1/TCG)", "(a) b (c)");
        assert_eq!(parse_stat(&line).unwrap().comm, "a) b (c");
        let e = (parse_stat("12 (x) S 1")).unwrap_err().to_string();
        assert!(e.contains("missing field 9"), "{e}");
    }

    #[test]
    fn effective_capabilities() {
        // Pasted from /proc/self/status of root and of a user on this machine.
        assert_eq!(
            parse_cap_eff("Name:\tcat\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(parse_cap_eff("Name:\tcat\n"), None);
    }

    #[test]
    fn memlock_limit_from_proc_limits() {
        // This machine's /proc/self/limits (a root shell without CAP_SYS_RESOURCE).
        let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax locked memory         8388608              8388608              bytes     \nMax address space         unlimited            unlimited            bytes     \n";
        assert_eq!(parse_memlock_limit(text).unwrap(), Some(8388608));
        let unl = "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_memlock_limit(unl).unwrap(), None);
        let e = parse_memlock_limit("Max cpu time  1 1 seconds\n").unwrap_err();
        assert!(
            e.to_string().contains("no \"Max locked memory\" line"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(
            dir.path().join("proc/self/status"),
            "CapEff:\t0000000000004000\n",
        )
        .unwrap();
        assert_eq!(has_capability(&root, CAP_IPC_LOCK), Some(true));
        assert_eq!(cap_sys_nice(&root), Some(false));
    }

    #[test]
    fn vcpu_names() {
        assert_eq!(vcpu_index("CPU 1/KVM"), Some(1));
        assert_eq!(vcpu_index("CPU 12/TCG"), Some(12));
        assert_eq!(vcpu_index("CPU x/KVM"), None);
        assert_eq!(vcpu_index("worker"), None);
    }

    #[test]
    fn qemu_names() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            qemu_name_of(&a(&["qemu-system-x86_64", "-name", "lab,debug-threads=on"])),
            Some("lab".into())
        );
        assert_eq!(
            qemu_name_of(&a(&[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=ecu0,debug-threads=on"
            ])),
            Some("ecu0".into())
        );
        assert_eq!(qemu_name_of(&a(&["bash", "-name", "lab"])), None);
    }

    #[test]
    fn threads_from_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for (tid, name) in [
            (100u32, "qemu-system-x86"),
            (101, "CPU 0/TCG"),
            (102, "CPU 1/TCG"),
        ] {
            let d = root.path(format!("proc/100/task/{tid}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                STAT.replace("2351", &tid.to_string())
                    .replace("CPU 1/TCG", name),
            )
            .unwrap();
        }
        let t = threads(&root, 100).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.iter()
                .filter_map(|t| vcpu_index(&t.name))
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
    }
}
