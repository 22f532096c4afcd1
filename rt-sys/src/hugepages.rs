//! Hugepages and NUMA nodes: `/proc/meminfo` (`HugePages_Total`, `HugePages_Free`,
//! `Hugepagesize`), `/sys/kernel/mm/hugepages/hugepages-<size>kB/{nr,free}_hugepages`,
//! the per-node variants under `/sys/devices/system/node/nodeN/hugepages/`, and
//! `/sys/devices/system/node/nodeN/cpulist`.
//! See <https://docs.kernel.org/admin-guide/mm/hugetlbpage.html>.

use serde::{Deserialize, Serialize};

use crate::{CpuSet, SysError, SysRoot};

/// Memory counters (`/proc/meminfo`).
pub const MEMINFO: &str = "proc/meminfo";
/// The system-wide hugepage pools, one directory per page size.
pub const POOLS: &str = "sys/kernel/mm/hugepages";
/// The NUMA nodes (`/sys/devices/system/node`).
pub const NODES: &str = "sys/devices/system/node";

/// The hugepage lines of `/proc/meminfo` (default page size only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeminfoHuge {
    /// `HugePages_Total`.
    pub total: u64,
    /// `HugePages_Free`.
    pub free: u64,
    /// `Hugepagesize` in KiB.
    pub size_kib: u64,
}

/// Parse the hugepage lines of `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MeminfoHuge, SysError> {
    let field = |key: &str| -> Result<u64, SysError> {
        let line = text
            .lines()
            .find(|l| l.split(':').next() == Some(key))
            .ok_or_else(|| SysError::Parse {
                what: "/proc/meminfo".into(),
                detail: format!("no {key} line"),
            })?;
        line.split(':')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| SysError::Parse {
                what: "/proc/meminfo".into(),
                detail: format!("bad {key} line {line:?}"),
            })
    };
    Ok(MeminfoHuge {
        total: field("HugePages_Total")?,
        free: field("HugePages_Free")?,
        size_kib: field("Hugepagesize")?,
    })
}

/// Read `/proc/meminfo`'s hugepage lines.
pub fn meminfo(root: &SysRoot) -> Result<MeminfoHuge, SysError> {
    parse_meminfo(&root.read(MEMINFO)?)
}

/// The `nr_hugepages` file for pages of `size_kib`, system-wide or on `node`.
pub fn nr_path(size_kib: u64, node: Option<u32>) -> String {
    match node {
        Some(n) => {
            format!("{NODES}/node{n}/hugepages/hugepages-{size_kib}kB/nr_hugepages")
        }
        None => format!("{}/nr_hugepages", pool_dir(size_kib)),
    }
}

/// The `free_hugepages` file for pages of `size_kib`, system-wide or on `node`.
pub fn free_path(size_kib: u64, node: Option<u32>) -> String {
    nr_path(size_kib, node).replace("/nr_hugepages", "/free_hugepages")
}

/// The system-wide pool directory of pages of `size_kib`.
pub fn pool_dir(size_kib: u64) -> String {
    format!("{POOLS}/hugepages-{size_kib}kB")
}

/// The directory of NUMA node `node`.
pub fn node_dir(node: u32) -> String {
    format!("{NODES}/node{node}")
}

/// The page sizes (KiB) the kernel supports, from `/sys/kernel/mm/hugepages`.
pub fn sizes(root: &SysRoot) -> Result<Vec<u64>, SysError> {
    let mut v: Vec<u64> = root
        .list(POOLS)?
        .iter()
        .filter_map(|n| {
            n.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// NUMA nodes and their CPUs (`/sys/devices/system/node/nodeN/cpulist`). Empty when the
/// kernel has no NUMA sysfs.
pub fn nodes(root: &SysRoot) -> Result<Vec<(u32, CpuSet)>, SysError> {
    let dir = NODES;
    if !root.exists(dir) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in root.list(dir)? {
        let Some(n) = name
            .strip_prefix("node")
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let rel = format!("{dir}/{name}/cpulist");
        let text = root.read_trim(&rel)?;
        let cpus = CpuSet::parse(&text).map_err(|e| SysError::Parse {
            what: root.display(&rel),
            detail: e.to_string(),
        })?;
        out.push((n, cpus));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pasted from this machine.
    const MEMINFO: &str = "MemTotal:        8148412 kB
AnonHugePages:         0 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
";

    #[test]
    fn meminfo_hugepages() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            m,
            MeminfoHuge {
                total: 0,
                free: 0,
                size_kib: 2048
            }
        );
        let e = (parse_meminfo("MemTotal: 1 kB\n")).unwrap_err().to_string();
        assert!(e.contains("no HugePages_Total line"), "{e}");
    }

    #[test]
    fn paths_sizes_and_nodes() {
        assert_eq!(
            nr_path(2048, None),
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        );
        assert_eq!(
            free_path(1048576, Some(0)),
            "sys/devices/system/node/node0/hugepages/hugepages-1048576kB/free_hugepages"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for s in ["hugepages-2048kB", "hugepages-1048576kB"] {
            std::fs::create_dir_all(root.path(format!("sys/kernel/mm/hugepages/{s}"))).unwrap();
        }
        assert_eq!(sizes(&root).unwrap(), vec![2048, 1048576]);
        std::fs::create_dir_all(root.path("sys/devices/system/node/node0")).unwrap();
        std::fs::write(root.path("sys/devices/system/node/node0/cpulist"), "0-1\n").unwrap();
        let n = nodes(&root).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].1.to_string(), "0-1");
    }
}
