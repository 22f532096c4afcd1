//! A process's memory as the kernel accounts it: the `VmLck`, `VmRSS` and `HugetlbPages`
//! lines of `/proc/PID/status` (locked memory, resident memory, hugetlb-backed memory),
//! which tell whether a VM's RAM is locked and on hugepages.
//! See <https://docs.kernel.org/filesystems/proc.html> (table 1-2).

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

/// `/proc/PID/status` of `pid`, relative to the root.
pub fn status_path(pid: u32) -> String {
    format!("proc/{pid}/status")
}

/// Read `/proc/PID/status` of `pid`.
pub fn read(root: &SysRoot, pid: u32) -> Result<ProcMem, SysError> {
    let rel = status_path(pid);
    parse_status(&root.read(&rel)?).map_err(|e| match e {
        SysError::Parse { detail, .. } => SysError::Parse {
            what: root.display(&rel),
            detail,
        },
        other => other,
    })
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
