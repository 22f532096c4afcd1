//! cgroup cpusets: where the hierarchies are mounted (`/proc/mounts`), which cgroup a
//! thread is in (`/proc/PID/task/TID/cgroup`), creating and removing cgroups, and
//! moving threads (v1 `tasks`, v2 `cgroup.threads`).
//!
//! cgroup v2 isolates CPUs with a cpuset partition (`cpuset.cpus.partition = isolated`);
//! cgroup v1 with exclusive cpusets and `cpuset.sched_load_balance = 0`.
//! See <https://docs.kernel.org/admin-guide/cgroup-v2.html> ("Cpuset") and
//! <https://docs.kernel.org/admin-guide/cgroup-v1/cpusets.html>.

use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use serde::{Deserialize, Serialize};

use crate::{CpuSet, SysError, SysRoot};

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount point, relative to the root (`sys/fs/cgroup/cpuset`).
    pub path: String,
    /// True for cgroup2.
    pub v2: bool,
    /// Mount options (v1 controllers appear here: `rw,relatime,cpuset`).
    pub options: Vec<String>,
}

/// The mount table (`/proc/mounts`).
pub const MOUNTS: &str = "proc/mounts";

/// Parse `/proc/mounts` for cgroup and cgroup2 mounts.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let v2 = match *fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                path: point.trim_start_matches('/').to_string(),
                v2,
                options: opts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The cgroup hierarchies of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The cgroup v1 cpuset hierarchy, if mounted.
    pub v1_cpuset: Option<String>,
    /// The cgroup2 mount, if any.
    pub v2: Option<String>,
    /// True when the cpuset controller is available in cgroup2 (not bound to v1).
    pub v2_has_cpuset: bool,
}

/// Find the cpuset hierarchies from `/proc/mounts` (via the root).
pub fn layout(root: &SysRoot) -> Result<Layout, SysError> {
    let mounts = parse_mounts(&root.read(MOUNTS)?);
    let v1_cpuset = mounts
        .iter()
        .find(|m| !m.v2 && m.options.iter().any(|o| o == "cpuset"))
        .map(|m| m.path.clone());
    let v2 = mounts.iter().find(|m| m.v2).map(|m| m.path.clone());
    let v2_has_cpuset = match &v2 {
        Some(p) => root
            .read(format!("{p}/cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|w| w == "cpuset"))
            .unwrap_or(false),
        None => false,
    };
    Ok(Layout {
        v1_cpuset,
        v2,
        v2_has_cpuset,
    })
}

/// A cgroup: its hierarchy's mount and its path inside it (`/`, `/rtvirt-rt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRef {
    /// Mount point relative to the root.
    pub mount: String,
    /// Path inside the hierarchy, starting with `/`.
    pub path: String,
    /// True for cgroup2.
    pub v2: bool,
}

impl CgroupRef {
    /// The cgroup directory relative to the root.
    pub fn dir(&self) -> String {
        let p = self.path.trim_matches('/');
        if p.is_empty() {
            self.mount.clone()
        } else {
            format!("{}/{p}", self.mount)
        }
    }

    /// A file in the cgroup directory.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir())
    }

    /// The file a thread id is written to, to move that thread here.
    pub fn attach_file(&self) -> String {
        self.file(if self.v2 { "cgroup.threads" } else { "tasks" })
    }
}

/// The cgroup path of the hierarchy in a `/proc/.../cgroup` text: the `cpuset`
/// controller's line for v1, the `0::` line for v2.
pub fn parse_proc_cgroup(text: &str, v2: bool) -> Option<String> {
    parse_proc_cgroup_of(text, (!v2).then_some("cpuset"))
}

/// The cgroup path in a `/proc/.../cgroup` text of the v1 hierarchy holding `controller`,
/// or of the cgroup2 hierarchy (`0::`) for None.
pub fn parse_proc_cgroup_of(text: &str, controller: Option<&str>) -> Option<String> {
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// RT group scheduling (`CONFIG_RT_GROUP_SCHED`): the real-time runtime per period a cpu
/// cgroup's threads may use. A group with runtime 0 may hold no SCHED_FIFO/RR thread
/// (`sched_setscheduler(2)` says EPERM); a child's runtimes must fit in its parent's.
/// See <https://docs.kernel.org/scheduler/sched-rt-group.html>.
pub const RT_RUNTIME: &str = "cpu.rt_runtime_us";
/// The period of [`RT_RUNTIME`].
pub const RT_PERIOD: &str = "cpu.rt_period_us";

/// A cpu cgroup's real-time bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtBandwidth {
    /// `cpu.rt_runtime_us`; -1 is unlimited.
    pub runtime_us: i64,
    /// `cpu.rt_period_us`.
    pub period_us: u64,
}

/// The kernel's fixed-point unit of bandwidth (`BW_UNIT`, 1 << 20 is the whole period).
pub const BW_UNIT: u128 = 1 << 20;

impl RtBandwidth {
    /// The share of the period, as the kernel computes it (`to_ratio`): [`BW_UNIT`] for
    /// unlimited, `runtime << 20 / period` otherwise.
    pub fn ratio(&self) -> u128 {
        match u128::try_from(self.runtime_us) {
            Err(_) => BW_UNIT,
            Ok(_) if self.period_us == 0 => 0,
            Ok(r) => (r << 20) / u128::from(self.period_us),
        }
    }

    /// The largest runtime (us) in this group's period whose [`RtBandwidth::ratio`] is at
    /// most `ratio`, so that runtimes given from ratios never add up to more than the
    /// kernel allows.
    pub fn runtime_of(&self, ratio: u128) -> i64 {
        let r = ((ratio + 1) * u128::from(self.period_us)).saturating_sub(1) >> 20;
        i64::try_from(r).unwrap_or(i64::MAX)
    }
}

/// Read the RT bandwidth of cgroup directory `dir`.
pub fn rt_bandwidth(root: &SysRoot, dir: &str) -> Result<RtBandwidth, SysError> {
    let rel = format!("{dir}/{RT_RUNTIME}");
    let t = root.read_trim(&rel)?;
    let runtime_us = t.parse().map_err(|_| SysError::Parse {
        what: root.display(&rel),
        detail: format!("expected an integer, found {t:?}"),
    })?;
    Ok(RtBandwidth {
        runtime_us,
        period_us: root.read_u64(format!("{dir}/{RT_PERIOD}"))?,
    })
}

/// The hierarchy where RT group scheduling lives: the v1 mount of the `cpu` controller,
/// or the cgroup2 mount when its root has `cpu.rt_runtime_us`. None: the kernel has no
/// RT group scheduling, and any thread may be real-time.
pub fn rt_hierarchy(root: &SysRoot) -> Result<Option<Mount>, SysError> {
    let mounts = parse_mounts(&root.read(MOUNTS)?);
    Ok(mounts.into_iter().find(|m| {
        let has_cpu = m.v2 || m.options.iter().any(|o| o == "cpu");
        has_cpu && root.exists(format!("{}/{RT_RUNTIME}", m.path))
    }))
}

/// The cgroup (path inside `m`) thread `tid` of `pid` is in: the `cpu` line for a v1
/// mount, the `0::` line for cgroup2.
pub fn thread_cgroup_in(root: &SysRoot, pid: u32, tid: u32, m: &Mount) -> Result<String, SysError> {
    let rel = format!("proc/{pid}/task/{tid}/cgroup");
    let text = root.read(&rel)?;
    parse_proc_cgroup_of(&text, (!m.v2).then_some("cpu")).ok_or_else(|| SysError::Parse {
        what: root.display(&rel),
        detail: format!("no line for the hierarchy at /{}", m.path),
    })
}

/// The cgroup (path inside the hierarchy) thread `tid` of `pid` is in.
pub fn thread_cgroup(root: &SysRoot, pid: u32, tid: u32, v2: bool) -> Result<String, SysError> {
    let rel = format!("proc/{pid}/task/{tid}/cgroup");
    let text = root.read(&rel)?;
    parse_proc_cgroup(&text, v2).ok_or_else(|| SysError::Parse {
        what: root.display(&rel),
        detail: format!("no {} line", if v2 { "cgroup2" } else { "cpuset" }),
    })
}

/// The cpuset cgroup of thread `tid` of `pid` (directory relative to the root) and the
/// CPUs it allows (`cpuset.cpus.effective` in cgroup2, `cpuset.effective_cpus` in v1,
/// else `cpuset.cpus`). None when no cpuset hierarchy is mounted.
pub fn thread_cpuset(
    root: &SysRoot,
    pid: u32,
    tid: u32,
) -> Result<Option<(String, CpuSet)>, SysError> {
    let l = layout(root)?;
    let (mount, v2) = match (&l.v1_cpuset, &l.v2) {
        (Some(m), _) => (m.clone(), false),
        (None, Some(m)) if l.v2_has_cpuset => (m.clone(), true),
        _ => return Ok(None),
    };
    let path = thread_cgroup(root, pid, tid, v2)?;
    let cg = CgroupRef { mount, path, v2 };
    for f in [
        "cpuset.cpus.effective",
        "cpuset.effective_cpus",
        "cpuset.cpus",
    ] {
        let rel = cg.file(f);
        match root.read_trim(&rel) {
            Ok(t) if !t.is_empty() => {
                let cpus = CpuSet::parse(&t).map_err(|e| SysError::Parse {
                    what: root.display(&rel),
                    detail: e.to_string(),
                })?;
                return Ok(Some((cg.dir(), cpus)));
            }
            Ok(_) => continue,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Knob files the kernel creates in a new cpuset cgroup; on a fake root they are
/// created empty so that a test tree behaves like cgroupfs.
const V1_FILES: &[&str] = &[
    "tasks",
    "cgroup.procs",
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.cpu_exclusive",
    "cpuset.sched_load_balance",
];
const V2_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.type",
    "cgroup.subtree_control",
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.cpus.partition",
];

/// `rel` as (parent directory, last name); a cgroup is never the root of the tree.
fn split(root: &SysRoot, rel: &str) -> Result<(String, String), SysError> {
    let rel = rel.trim_start_matches('/');
    match rel.rsplit_once('/') {
        Some((p, n)) if !n.is_empty() && n != "." && n != ".." => Ok((p.to_string(), n.into())),
        _ => Err(SysError::Unsafe {
            what: root.display(rel),
            why: "not a directory below a cgroup mount".into(),
        }),
    }
}

fn at_err<'a>(root: &'a SysRoot, rel: &'a str) -> impl Fn(nix::errno::Errno) -> SysError + 'a {
    move |e| SysError::from_io(root.display(rel), Some(root.path(rel)), e.into())
}

/// Create cgroup directory `rel` (mkdir in cgroupfs), its parent opened beneath the root
/// without following links. On a fake root the kernel's knob files are created too, empty.
pub fn create(root: &SysRoot, rel: &str, v2: bool) -> Result<(), SysError> {
    let (parent, name) = split(root, rel)?;
    let pfd = root.open_beneath(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    nix::sys::stat::mkdirat(pfd.as_fd(), name.as_str(), Mode::from_bits_truncate(0o755))
        .map_err(at_err(root, rel))?;
    if !root.is_live() {
        let dir = nix::fcntl::openat(pfd.as_fd(), name.as_str(), DIR_FLAGS, Mode::empty())
            .map_err(at_err(root, rel))?;
        for f in if v2 { V2_FILES } else { V1_FILES } {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
            nix::fcntl::openat(
                dir.as_fd(),
                *f,
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(at_err(root, rel))?;
        }
    }
    Ok(())
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Remove cgroup directory `rel` (rmdir; it must hold no tasks), reached beneath the root
/// without following links. On a fake root the knob files go with it.
///
/// A cgroup v2 partition is first made a `member` again: the kernel takes a removed
/// cgroup offline later, in a workqueue, and only then gives a partition's CPUs back to
/// the parent, resetting the affinity of every task there (before 6.2) after whatever
/// the caller restored. Leaving the partition is synchronous.
pub fn remove(root: &SysRoot, rel: &str) -> Result<(), SysError> {
    let partition = format!("{rel}/cpuset.cpus.partition");
    if let Ok(state) = root.read_trim(&partition) {
        if !state.is_empty() && state != "member" {
            root.write(&partition, "member")?;
        }
    }
    let (parent, name) = split(root, rel)?;
    let pfd = root.open_beneath(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    if !root.is_live() {
        let dir = nix::fcntl::openat(pfd.as_fd(), name.as_str(), DIR_FLAGS, Mode::empty())
            .map_err(at_err(root, rel))?;
        // The names come from a listing; each unlink goes through the checked directory.
        for f in root.list(rel)? {
            nix::unistd::unlinkat(dir.as_fd(), f.as_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(at_err(root, rel))?;
        }
    }
    nix::unistd::unlinkat(pfd.as_fd(), name.as_str(), UnlinkatFlags::RemoveDir)
        .map_err(at_err(root, rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pasted from this machine: cgroup v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    const MOUNTS_TEXT: &str = "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    // Pasted from /proc/self/cgroup on this machine.
    const PROC_CGROUP: &str = "9:name=systemd:/
4:memory:/process_api/da67ceb741a2ebfcdfcc976cdae49c57
3:cpuset:/
1:cpu:/
0::/
";

    #[test]
    fn mounts_and_layout() {
        let m = parse_mounts(MOUNTS_TEXT);
        assert_eq!(m.len(), 4);
        assert!(m[3].v2);
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(root.path("proc")).unwrap();
        std::fs::write(root.path("proc/mounts"), MOUNTS_TEXT).unwrap();
        std::fs::create_dir_all(root.path("sys/fs/cgroup/unified")).unwrap();
        std::fs::write(
            root.path("sys/fs/cgroup/unified/cgroup.controllers"),
            "hugetlb\n",
        )
        .unwrap();
        let l = layout(&root).unwrap();
        assert_eq!(l.v1_cpuset.as_deref(), Some("sys/fs/cgroup/cpuset"));
        assert_eq!(l.v2.as_deref(), Some("sys/fs/cgroup/unified"));
        assert!(!l.v2_has_cpuset);
    }

    #[test]
    fn proc_cgroup_lines() {
        assert_eq!(parse_proc_cgroup(PROC_CGROUP, false).as_deref(), Some("/"));
        assert_eq!(parse_proc_cgroup(PROC_CGROUP, true).as_deref(), Some("/"));
        assert_eq!(parse_proc_cgroup("1:cpu:/\n", false), None);
        let c = CgroupRef {
            mount: "sys/fs/cgroup/cpuset".into(),
            path: "/rtvirt-rt".into(),
            v2: false,
        };
        assert_eq!(c.attach_file(), "sys/fs/cgroup/cpuset/rtvirt-rt/tasks");
        let r = CgroupRef {
            path: "/".into(),
            ..c
        };
        assert_eq!(r.file("cpuset.cpus"), "sys/fs/cgroup/cpuset/cpuset.cpus");
    }

    #[test]
    fn rt_bandwidth_ratios_as_the_kernel_computes_them() {
        let b = RtBandwidth {
            runtime_us: 950_000,
            period_us: 1_000_000,
        };
        assert_eq!(b.ratio(), (950_000u128 << 20) / 1_000_000);
        assert_eq!(b.runtime_of(b.ratio()), 950_000);
        let r = b.runtime_of(b.ratio() / 3);
        let third = RtBandwidth { runtime_us: r, ..b };
        assert!(
            3 * third.ratio() <= b.ratio(),
            "three thirds fit in the whole"
        );
        let inf = RtBandwidth {
            runtime_us: -1,
            period_us: 1_000_000,
        };
        assert_eq!(inf.ratio(), BW_UNIT);
        assert_eq!(inf.runtime_of(BW_UNIT / 2), 500_000);
        assert_eq!(
            parse_proc_cgroup_of(PROC_CGROUP, Some("cpu")).as_deref(),
            Some("/")
        );
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(root.path("proc")).unwrap();
        std::fs::write(root.path(MOUNTS), MOUNTS_TEXT).unwrap();
        assert_eq!(
            rt_hierarchy(&root).unwrap(),
            None,
            "no cpu.rt_runtime_us: no RT groups"
        );
        std::fs::create_dir_all(root.path("sys/fs/cgroup/cpu")).unwrap();
        std::fs::write(root.path("sys/fs/cgroup/cpu/cpu.rt_runtime_us"), "950000\n").unwrap();
        std::fs::write(root.path("sys/fs/cgroup/cpu/cpu.rt_period_us"), "1000000\n").unwrap();
        let m = rt_hierarchy(&root).unwrap().unwrap();
        assert_eq!(m.path, "sys/fs/cgroup/cpu");
        assert_eq!(rt_bandwidth(&root, &m.path).unwrap(), b);
    }

    #[test]
    fn fake_create_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        std::fs::create_dir_all(root.path("sys/fs/cgroup/cpuset")).unwrap();
        create(&root, "sys/fs/cgroup/cpuset/rtvirt-rt", false).unwrap();
        assert!(root.exists("sys/fs/cgroup/cpuset/rtvirt-rt/cpuset.cpus"));
        let e = create(&root, "sys/fs/cgroup/cpuset/rtvirt-rt", false).unwrap_err();
        assert!(e.to_string().contains("rtvirt-rt"), "{e}");
        remove(&root, "sys/fs/cgroup/cpuset/rtvirt-rt").unwrap();
        assert!(!root.exists("sys/fs/cgroup/cpuset/rtvirt-rt"));
        assert!(remove(&root, "sys/fs/cgroup/cpuset/rtvirt-rt")
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_partition_becomes_a_member_before_rmdir() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path().join("root"));
        std::fs::create_dir_all(root.path("sys/fs/cgroup")).unwrap();
        create(&root, "sys/fs/cgroup/rtvirt-rt", true).unwrap();
        let knob = "sys/fs/cgroup/rtvirt-rt/cpuset.cpus.partition";
        std::fs::write(root.path(knob), "isolated\n").unwrap();
        // A child cgroup makes the rmdir fail: what the partition file holds then is what
        // remove wrote before it.
        std::fs::create_dir(root.path("sys/fs/cgroup/rtvirt-rt/child")).unwrap();
        let e = (remove(&root, "sys/fs/cgroup/rtvirt-rt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("I/O error on"), "{e}");
        assert_eq!(root.read_trim(knob).unwrap(), "member");
        std::fs::remove_dir(root.path("sys/fs/cgroup/rtvirt-rt/child")).unwrap();
        remove(&root, "sys/fs/cgroup/rtvirt-rt").unwrap();
        assert!(!root.exists("sys/fs/cgroup/rtvirt-rt"));
    }
}
