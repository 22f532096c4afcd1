//! Sysctls (`/proc/sys/...`, named with dots as in `sysctl(8)`) and the memory-management
//! knobs a real-time host turns off: transparent hugepages
//! (`/sys/kernel/mm/transparent_hugepage/enabled`, `always [madvise] never`) and KSM
//! (`/sys/kernel/mm/ksm/run`). See <https://docs.kernel.org/admin-guide/sysctl/index.html>,
//! <https://docs.kernel.org/admin-guide/mm/transhuge.html> and
//! <https://docs.kernel.org/admin-guide/mm/ksm.html>.

use crate::SysError;

/// Relative path of the THP mode file.
pub const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";
/// Relative path of the KSM run switch.
pub const KSM_RUN: &str = "sys/kernel/mm/ksm/run";
/// RT throttling: the runtime of every real-time thread per `sched_rt_period_us`
/// (`-1`: none). See <https://docs.kernel.org/scheduler/sched-rt-group.html>.
pub const SCHED_RT_RUNTIME: &str = "proc/sys/kernel/sched_rt_runtime_us";
/// The CPUs unbound workqueues may run on (hex mask).
/// See <https://docs.kernel.org/core-api/workqueue.html>.
pub const WORKQUEUE_CPUMASK: &str = "sys/devices/virtual/workqueue/cpumask";
/// The directory of the workqueues that show their attributes in sysfs (`WQ_SYSFS`).
pub const WORKQUEUES: &str = "sys/devices/virtual/workqueue";

/// The `cpumask` files of every workqueue with its own (`writeback`, `blkcg_punt_bio`, ...),
/// sorted.
pub fn workqueue_cpumasks(root: &crate::SysRoot) -> Result<Vec<String>, SysError> {
    if !root.exists(WORKQUEUES) {
        return Ok(Vec::new());
    }
    Ok(root
        .list(WORKQUEUES)?
        .into_iter()
        .map(|n| format!("{WORKQUEUES}/{n}/cpumask"))
        .filter(|f| root.exists(f))
        .collect())
}

/// The `/proc/sys` path (relative) of a dotted sysctl name: `kernel.timer_migration` gives
/// `proc/sys/kernel/timer_migration`. Slashes are accepted too (`vm/stat_interval`).
pub fn path_of(name: &str) -> Result<String, SysError> {
    let bad = |d: &str| SysError::Parse {
        what: format!("sysctl name {name:?}"),
        detail: d.to_string(),
    };
    let n = name.trim();
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.contains("..") || n.starts_with('.') || n.starts_with('/') {
        return Err(bad("must be a dotted name such as kernel.timer_migration"));
    }
    Ok(format!("proc/sys/{}", n.replace('.', "/")))
}

/// The selected word of a sysfs choice file: `always [madvise] never` gives `madvise`.
pub fn selected(text: &str) -> Result<&str, SysError> {
    let t = text.trim();
    let open = t.find('[');
    let close = t.find(']');
    match (open, close) {
        (Some(o), Some(c)) if c > o => Ok(&t[o + 1..c]),
        _ if !t.contains(' ') && !t.is_empty() => Ok(t),
        _ => Err(SysError::Parse {
            what: "choice file".into(),
            detail: format!("no [selected] word in {t:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names() {
        assert_eq!(
            path_of("kernel.timer_migration").unwrap(),
            "proc/sys/kernel/timer_migration"
        );
        assert_eq!(
            path_of("vm/stat_interval").unwrap(),
            "proc/sys/vm/stat_interval"
        );
        let e = (path_of("../etc/passwd")).unwrap_err().to_string();
        assert!(e.contains("must be a dotted name"), "{e}");
        let e = (path_of("")).unwrap_err().to_string();
        assert!(e.contains("sysctl name \"\": empty"), "{e}");
    }

    #[test]
    fn thp_selected_word() {
        // Pasted from this machine.
        assert_eq!(selected("always [madvise] never\n").unwrap(), "madvise");
        assert_eq!(selected("[never]").unwrap(), "never");
        assert_eq!(selected("0").unwrap(), "0");
        let e = (selected("always madvise never")).unwrap_err().to_string();
        assert!(e.contains("no [selected] word"), "{e}");
    }
}
