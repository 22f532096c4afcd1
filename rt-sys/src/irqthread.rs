//! Threaded interrupt handlers: the kernel threads named `irq/NN-name` (`/proc/PID/stat`
//! comm), one per requested IRQ action, created by `request_threaded_irq()` and for every
//! IRQ on PREEMPT_RT (forced threading). Their priority (SCHED_FIFO 50 by default) and
//! affinity decide whether a device's interrupt can delay a real-time task.
//!
//! A comm is at most 15 bytes, so long device names are cut; a `-s-` infix marks the
//! secondary thread of a forced-threaded IRQ (`irq/24-s-can1`).
//! See <https://docs.kernel.org/core-api/genericirq.html>.

use serde::{Deserialize, Serialize};

use crate::{task, SysError, SysRoot};

/// An IRQ thread found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqThread {
    /// Thread (and process) id: kernel threads are their own process.
    pub pid: u32,
    /// The whole thread name (`irq/24-can1`).
    pub comm: String,
    /// The IRQ number.
    pub irq: u32,
    /// The device/action name after `irq/NN-` (possibly cut to fit 15 bytes).
    pub device: String,
    /// Start time in clock ticks (guards journal entries against pid reuse).
    pub start_time: u64,
    /// Scheduling policy number (1 = FIFO).
    pub policy: u32,
    /// Real-time priority.
    pub rt_priority: u32,
}

/// Split an IRQ thread name `irq/NN-device` into (NN, device); None for other names.
pub fn parse_name(comm: &str) -> Option<(u32, &str)> {
    let rest = comm.strip_prefix("irq/")?;
    let (num, device) = rest.split_once('-')?;
    let irq = num.parse().ok()?;
    Some((irq, device))
}

/// True when the IRQ thread `device` part belongs to the device `name`: equal, the
/// secondary thread `s-name`, or a prefix of `name` when the comm was cut at 15 bytes.
pub fn matches(comm: &str, name: &str) -> bool {
    let Some((_, device)) = parse_name(comm) else {
        return false;
    };
    let device = device.strip_prefix("s-").unwrap_or(device);
    if device == name {
        return true;
    }
    // Cut comm: "irq/128-nvme0q1" is 15 bytes; the device part may be a prefix of `name`.
    comm.len() == 15 && !device.is_empty() && name.starts_with(device)
}

/// Every IRQ thread on the system, sorted by IRQ number.
pub fn list(root: &SysRoot) -> Result<Vec<IrqThread>, SysError> {
    let mut out = Vec::new();
    for pid in task::pids(root)? {
        let st = match task::tid_stat(root, pid) {
            Ok(st) => st,
            Err(e) if e.is_not_found() => continue, // exited while we listed
            Err(e) => return Err(e),
        };
        if let Some((irq, device)) = parse_name(&st.comm) {
            out.push(IrqThread {
                pid,
                irq,
                device: device.to_string(),
                comm: st.comm.clone(),
                start_time: st.start_time,
                policy: st.policy,
                rt_priority: st.rt_priority,
            });
        }
    }
    out.sort_by_key(|t| (t.irq, t.pid));
    Ok(out)
}

/// The IRQ threads of device `name` (e.g. `can1` finds `irq/24-can1`).
pub fn find(root: &SysRoot, name: &str) -> Result<Vec<IrqThread>, SysError> {
    Ok(list(root)?
        .into_iter()
        .filter(|t| matches(&t.comm, name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_this_machine_and_the_lab_guest() {
        assert_eq!(parse_name("irq/24-ACPI:Ged"), Some((24, "ACPI:Ged")));
        assert_eq!(parse_name("irq/9-acpi"), Some((9, "acpi")));
        assert_eq!(parse_name("irq/11-can1"), Some((11, "can1")));
        assert_eq!(parse_name("ksoftirqd/1"), None);
        assert_eq!(parse_name("irq/x-can1"), None);
        assert!(matches("irq/11-can1", "can1"));
        assert!(matches("irq/11-s-can1", "can1"));
        assert!(!matches("irq/11-can10", "can1"));
        assert!(!matches("irq/10-can0", "can1"));
        assert!(matches("irq/128-nvme0q1", "nvme0q10"));
    }

    #[test]
    fn list_on_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        // pid 50 is a real line from this machine; 61 is a CAN IRQ thread in the same format.
        let stats = [
            (50, "50 (irq/24-ACPI:Ged) S 2 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 -51 0 1 0 40 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 50 1 0 0 0 0 0 0 0 0 0 0 0\n"),
            (61, "61 (irq/11-can1) S 2 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 -51 0 1 0 377 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 50 1 0 0 0 0 0 0 0 0 0 0 0\n"),
            (7, "7 (kworker/0:0-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"),
        ];
        for (pid, s) in stats {
            let p = root.path(format!("proc/{pid}/task/{pid}"));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("stat"), s).unwrap();
        }
        let all = list(&root).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].irq, 11);
        let can1 = find(&root, "can1").unwrap();
        assert_eq!(can1.len(), 1);
        assert_eq!(can1[0].pid, 61);
        assert_eq!(can1[0].rt_priority, 50);
        assert_eq!(can1[0].policy, 1);
        assert_eq!(can1[0].start_time, 377);
    }
}
