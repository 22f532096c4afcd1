//! A process's memory as the kernel accounts it: the `VmLck`, `VmRSS` and `HugetlbPages`
//! lines of `/proc/PID/status` (locked memory, resident memory, hugetlb-backed memory),
//! which tell whether a VM's RAM is locked and on hugepages; and `/proc/PID/numa_maps`,
//! which tells on which NUMA nodes its pages are, and of which page size.
//! See <https://docs.kernel.org/filesystems/proc.html> (table 1-2, and "numa_maps") and
//! numa(7).

use serde::Serialize;

use crate::threads::status_field;
use crate::{SysError, SysRoot};

/// The memory lines of `/proc/PID/status`, in KiB; `None` when the kernel has no such line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcMem {
    /// `VmLck`: locked memory (mlock, mlockall).
    pub locked_kib: Option<u64>,
    /// `VmRSS`: resident memory.
    pub rss_kib: Option<u64>,
    /// `HugetlbPages`: memory in hugetlb pages.
    pub hugetlb_kib: Option<u64>,
}

fn kib(text: &str, key: &str) -> Result<Option<u64>, SysError> {
    let Some(v) = status_field(text, key) else {
        return Ok(None);
    };
    let n = v
        .strip_suffix("kB")
        .map(str::trim)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| SysError::Parse {
            what: "/proc/PID/status".into(),
            detail: format!("{key} is {v:?}, not \"N kB\""),
        })?;
    Ok(Some(n))
}

/// Parse the memory lines of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Result<ProcMem, SysError> {
    Ok(ProcMem {
        locked_kib: kib(text, "VmLck")?,
        rss_kib: kib(text, "VmRSS")?,
        hugetlb_kib: kib(text, "HugetlbPages")?,
    })
}

/// Where a process's resident pages are (summed over `/proc/PID/numa_maps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NumaMaps {
    /// KiB per NUMA node (`N<node>=<pages>` times `kernelpagesize_kB`).
    pub node_kib: std::collections::BTreeMap<u32, u64>,
    /// KiB in hugetlb mappings (`huge`), by page size in KiB.
    pub huge_kib: std::collections::BTreeMap<u64, u64>,
}

impl NumaMaps {
    /// All resident KiB.
    pub fn total_kib(&self) -> u64 {
        self.node_kib.values().sum()
    }
}

/// Parse a `/proc/PID/numa_maps` text.
pub fn parse_numa_maps(text: &str) -> Result<NumaMaps, SysError> {
    let bad = |d: String| SysError::Parse {
        what: "/proc/PID/numa_maps".into(),
        detail: d,
    };
    let mut m = NumaMaps::default();
    for line in text.lines() {
        let mut page_kib = 4;
        let mut huge = false;
        let mut nodes = Vec::new();
        for w in line.split_whitespace().skip(2) {
            if w == "huge" {
                huge = true;
            } else if let Some(v) = w.strip_prefix("kernelpagesize_kB=") {
                page_kib = v.parse().map_err(|_| bad(format!("{w:?} in {line:?}")))?;
            } else if let Some((n, pages)) = w.strip_prefix('N').and_then(|r| r.split_once('=')) {
                let n: u32 = n.parse().map_err(|_| bad(format!("{w:?} in {line:?}")))?;
                let pages: u64 = pages
                    .parse()
                    .map_err(|_| bad(format!("{w:?} in {line:?}")))?;
                nodes.push((n, pages));
            }
        }
        for (n, pages) in nodes {
            let kib = pages.saturating_mul(page_kib);
            *m.node_kib.entry(n).or_default() += kib;
            if huge {
                *m.huge_kib.entry(page_kib).or_default() += kib;
            }
        }
    }
    Ok(m)
}

/// A parse error of file `rel`, named as the file.
fn named(root: &SysRoot, rel: &str, e: SysError) -> SysError {
    match e {
        SysError::Parse { detail, .. } => SysError::Parse {
            what: root.display(rel),
            detail,
        },
        other => other,
    }
}

/// `/proc/PID/numa_maps` of `pid`, relative to the root.
pub fn numa_maps_path(pid: u32) -> String {
    format!("proc/{pid}/numa_maps")
}

/// Read `/proc/PID/numa_maps` of `pid`.
pub fn numa_maps(root: &SysRoot, pid: u32) -> Result<NumaMaps, SysError> {
    let rel = numa_maps_path(pid);
    parse_numa_maps(&root.read(&rel)?).map_err(|e| named(root, &rel, e))
}

/// `/proc/PID/status` of `pid`, relative to the root.
pub fn status_path(pid: u32) -> String {
    format!("proc/{pid}/status")
}

/// Read `/proc/PID/status` of `pid`.
pub fn read(root: &SysRoot, pid: u32) -> Result<ProcMem, SysError> {
    let rel = status_path(pid);
    parse_status(&root.read(&rel)?).map_err(|e| named(root, &rel, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A libvirt-started TCG QEMU on this machine (256 MiB on 2 MiB hugepages, not locked).
    const QEMU: &str = "Name:\tqemu-system-x86\nUmask:\t0022\nState:\tS (sleeping)\n\
VmPeak:\t 1553232 kB\nVmSize:\t 1487696 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n\
VmHWM:\t   70908 kB\nVmRSS:\t   70812 kB\nHugetlbPages:\t  262144 kB\nThreads:\t8\n";

    #[test]
    fn parses_locked_resident_and_hugetlb() {
        let m = parse_status(QEMU).unwrap();
        assert_eq!(
            m,
            ProcMem {
                locked_kib: Some(0),
                rss_kib: Some(70812),
                hugetlb_kib: Some(262_144)
            }
        );
        assert_eq!(parse_status("Name:\tx\n").unwrap(), ProcMem::default());
        let e = parse_status("VmLck:\tlots\n").unwrap_err().to_string();
        assert!(e.contains("VmLck is \"lots\""), "{e}");
    }

    // A TCG QEMU with 256 MiB on 2 MiB hugepages (a memfd backend), on a 2-node machine.
    const NUMA_MAPS: &str = "55d1e7a00000 default file=/usr/bin/qemu-system-x86_64 mapped=1400 N0=1400 kernelpagesize_kB=4
7f2a40000000 bind:1 file=/memfd:ram-node0\\040(deleted) huge dirty=128 N1=128 kernelpagesize_kB=2048
7f2a80000000 default anon=2300 dirty=2300 N0=2000 N1=300 kernelpagesize_kB=4
7ffd1c9e1000 default stack anon=9 dirty=9 N0=9 kernelpagesize_kB=4
";

    #[test]
    fn numa_maps_give_kib_per_node_and_hugetlb_per_page_size() {
        let m = parse_numa_maps(NUMA_MAPS).unwrap();
        assert_eq!(m.node_kib[&0], (1400 + 2000 + 9) * 4);
        assert_eq!(m.node_kib[&1], 128 * 2048 + 300 * 4);
        assert_eq!(m.huge_kib.get(&2048), Some(&262_144));
        assert_eq!(m.total_kib(), m.node_kib.values().sum::<u64>());
        let e = parse_numa_maps("7f00 default N0=x kernelpagesize_kB=4\n").unwrap_err();
        assert!(e.to_string().contains("\"N0=x\""), "{e}");
    }

    #[test]
    fn reads_through_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/7")).unwrap();
        std::fs::write(dir.path().join("proc/7/status"), QEMU).unwrap();
        let root = SysRoot::new(dir.path());
        assert_eq!(read(&root, 7).unwrap().hugetlb_kib, Some(262_144));
        assert!(read(&root, 8).unwrap_err().is_not_found());
    }
}
