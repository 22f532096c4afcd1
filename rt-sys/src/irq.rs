//! Interrupt affinity: `/proc/interrupts` (who uses which IRQ), `/proc/irq/N/smp_affinity`
//! (hex CPU mask, writable unless the IRQ is managed or the platform refuses) and
//! `/proc/irq/default_smp_affinity` (the mask new IRQs get).
//!
//! Writes that the kernel refuses (EIO for managed or unmovable IRQs, EPERM under some
//! hypervisors) surface as [`SysError::NotPermitted`]. See
//! <https://docs.kernel.org/core-api/irq/irq-affinity.html>.

use serde::{Deserialize, Serialize};

use crate::{CpuSet, SysError, SysRoot};

/// The directory of per-IRQ settings (`/proc/irq`).
pub const ROOT: &str = "proc/irq";
/// Who uses which IRQ on which CPU (`/proc/interrupts`).
pub const INTERRUPTS: &str = "proc/interrupts";

/// Relative path of the default affinity of new IRQs.
pub const DEFAULT_AFFINITY: &str = "proc/irq/default_smp_affinity";

/// One numbered line of `/proc/interrupts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqLine {
    /// IRQ number.
    pub irq: u32,
    /// Count per CPU column.
    pub counts: Vec<u64>,
    /// The rest of the line: chip, hwirq and trigger, device name(s).
    pub desc: String,
    /// The device (action) name: the last whitespace-separated word of the line.
    pub device: String,
}

/// Parse `/proc/interrupts`: the numbered lines (device IRQs); the named per-CPU lines
/// (`LOC`, `NMI`, ...) are not movable and are skipped.
pub fn parse_interrupts(text: &str) -> Result<Vec<IrqLine>, SysError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| SysError::Parse {
        what: "/proc/interrupts".into(),
        detail: "empty".into(),
    })?;
    let ncpu = header
        .split_whitespace()
        .filter(|w| w.starts_with("CPU"))
        .count();
    let mut out = Vec::new();
    for line in lines {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = label.trim().parse::<u32>() else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mut counts = Vec::with_capacity(ncpu);
        for w in words.iter().take(ncpu) {
            match w.parse::<u64>() {
                Ok(c) => counts.push(c),
                Err(_) => break,
            }
        }
        let desc = words[counts.len()..].join(" ");
        out.push(IrqLine {
            irq,
            device: words.last().map(|s| s.to_string()).unwrap_or_default(),
            counts,
            desc,
        });
    }
    Ok(out)
}

/// The `smp_affinity` file of IRQ `irq`, relative to the root.
pub fn affinity_path(irq: u32) -> String {
    format!("{ROOT}/{irq}/smp_affinity")
}

/// IRQ numbers that have a directory with an `smp_affinity` file under `/proc/irq`.
pub fn irqs(root: &SysRoot) -> Result<Vec<u32>, SysError> {
    let mut v: Vec<u32> = root
        .list(ROOT)?
        .into_iter()
        .filter_map(|n| n.parse().ok())
        .filter(|n| root.exists(affinity_path(*n)))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The raw text of a mask file and its CPU set.
pub fn read_mask(root: &SysRoot, rel: &str) -> Result<(String, CpuSet), SysError> {
    let raw = root.read_trim(rel)?;
    let set = CpuSet::from_mask(&raw).map_err(|e| SysError::Parse {
        what: root.display(rel),
        detail: e.to_string(),
    })?;
    Ok((raw, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pasted from this machine (2 CPUs, virtio devices), shortened.
    const INTERRUPTS: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 26:          0         14  IO-APIC   4-edge      ttyS0
 36:          0      64781 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 39:       5425          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
NMI:          0          0   Non-maskable interrupts
LOC:      38497      36701   Local timer interrupts
ERR:          0
";

    #[test]
    fn parses_numbered_lines_only() {
        let v = parse_interrupts(INTERRUPTS).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2].irq, 36);
        assert_eq!(v[2].counts, vec![0, 64781]);
        assert_eq!(v[2].device, "virtio1-req.0");
        assert!(v[0].desc.contains("IO-APIC"));
        let e = (parse_interrupts("")).unwrap_err().to_string();
        assert!(e.contains("/proc/interrupts: empty"), "{e}");
    }

    #[test]
    fn irq_dirs_and_masks_from_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for n in [36u32, 26] {
            std::fs::create_dir_all(root.path(format!("proc/irq/{n}"))).unwrap();
            std::fs::write(root.path(affinity_path(n)), "3\n").unwrap();
        }
        std::fs::create_dir_all(root.path("proc/irq/0")).unwrap(); // no smp_affinity
        std::fs::write(root.path(DEFAULT_AFFINITY), "3\n").unwrap();
        assert_eq!(irqs(&root).unwrap(), vec![26, 36]);
        let (raw, set) = read_mask(&root, DEFAULT_AFFINITY).unwrap();
        assert_eq!(raw, "3");
        assert_eq!(set.to_string(), "0-1");
    }
}
