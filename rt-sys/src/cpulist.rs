//! CPU lists in the kernel's format (`0-3,8,10-11`), as used by `isolcpus=`,
//! `/sys/devices/system/cpu/online`, cpusets and `/proc/irq/*/smp_affinity_list`;
//! and hex CPU masks (`/proc/irq/*/smp_affinity`, `Cpus_allowed`).
//!
//! See <https://docs.kernel.org/admin-guide/kernel-parameters.html> ("cpu lists").

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of CPU numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

/// Why a CPU list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid CPU list {input:?}: {reason}")]
pub struct CpuListError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The CPUs that are online (`/sys/devices/system/cpu/online`).
/// See <https://docs.kernel.org/admin-guide/cputopology.html>.
pub const ONLINE: &str = "sys/devices/system/cpu/online";
/// The CPUs that are present (`/sys/devices/system/cpu/present`).
pub const PRESENT: &str = "sys/devices/system/cpu/present";
/// The CPUs isolated at boot (`isolcpus=`), `/sys/devices/system/cpu/isolated`.
pub const ISOLATED: &str = "sys/devices/system/cpu/isolated";

/// The sysfs directory of CPU `cpu` (relative to the root).
pub fn cpu_dir(cpu: u32) -> String {
    format!("sys/devices/system/cpu/cpu{cpu}")
}

/// Read a CPU-list file `rel` (an empty file is the empty set); errors name the file.
pub fn read_cpus(root: &crate::SysRoot, rel: &str) -> Result<CpuSet, crate::SysError> {
    let t = root.read_trim(rel)?;
    CpuSet::parse(&t).map_err(|e| crate::SysError::Parse {
        what: root.display(rel),
        detail: e.to_string(),
    })
}

/// The online CPUs: the one reader of [`ONLINE`] for every tool.
pub fn online(root: &crate::SysRoot) -> Result<CpuSet, crate::SysError> {
    read_cpus(root, ONLINE)
}

/// The present CPUs ([`PRESENT`]).
pub fn present(root: &crate::SysRoot) -> Result<CpuSet, crate::SysError> {
    read_cpus(root, PRESENT)
}

/// The CPUs isolated at boot ([`ISOLATED`]; empty when none).
pub fn isolated(root: &crate::SysRoot) -> Result<CpuSet, crate::SysError> {
    read_cpus(root, ISOLATED)
}

/// The hyperthreads sharing a core with `cpu`, itself included
/// (`cpuN/topology/thread_siblings_list`).
pub fn thread_siblings(root: &crate::SysRoot, cpu: u32) -> Result<CpuSet, crate::SysError> {
    read_cpus(
        root,
        &format!("{}/topology/thread_siblings_list", cpu_dir(cpu)),
    )
}

/// Highest CPU number accepted by the parser (the kernel's NR_CPUS upper limit).
pub const MAX_CPU: u32 = 8191;

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        CpuSet::default()
    }

    /// Parse the kernel list format: comma separated numbers and ranges `a-b`, optionally
    /// with a stride `a-b:s/g` (use `s` of every `g`), as in `isolcpus=`. Empty text is
    /// the empty set.
    pub fn parse(s: &str) -> Result<Self, CpuListError> {
        let err = |reason: String| CpuListError {
            input: s.to_string(),
            reason,
        };
        let mut set = BTreeSet::new();
        let t = s.trim();
        if t.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in t.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty element".into()));
            }
            let (range, stride) = match part.split_once(':') {
                Some((r, st)) => {
                    let (used, group) = st
                        .split_once('/')
                        .ok_or_else(|| err(format!("stride {st:?} is not used/group")))?;
                    let used: u32 = used
                        .parse()
                        .map_err(|_| err(format!("bad stride {st:?}")))?;
                    let group: u32 = group
                        .parse()
                        .map_err(|_| err(format!("bad stride {st:?}")))?;
                    if group == 0 || used == 0 || used > group {
                        return Err(err(format!("bad stride {st:?}")));
                    }
                    (r, Some((used, group)))
                }
                None => (part, None),
            };
            let num = |x: &str| -> Result<u32, CpuListError> {
                let n: u32 = x
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("{x:?} is not a CPU number")))?;
                if n > MAX_CPU {
                    return Err(err(format!("CPU {n} is above {MAX_CPU}")));
                }
                Ok(n)
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(range)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(err(format!("range {lo}-{hi} is reversed")));
            }
            for c in lo..=hi {
                match stride {
                    Some((used, group)) if (c - lo) % group >= used => {}
                    _ => {
                        set.insert(c);
                    }
                }
            }
        }
        Ok(CpuSet(set))
    }

    /// Parse a hex CPU mask as in `/proc/irq/N/smp_affinity` (`ff`, `00000000,00000003`).
    pub fn from_mask(s: &str) -> Result<Self, CpuListError> {
        let err = |reason: &str| CpuListError {
            input: s.to_string(),
            reason: reason.into(),
        };
        let hex: String = s.trim().chars().filter(|c| *c != ',').collect();
        if hex.is_empty() {
            return Err(err("empty mask"));
        }
        let mut set = BTreeSet::new();
        for (i, ch) in hex.chars().rev().enumerate() {
            let v = ch.to_digit(16).ok_or_else(|| err("not a hex digit"))?;
            for bit in 0..4u32 {
                if v & (1 << bit) != 0 {
                    let cpu = u32::try_from(i).map_err(|_| err("mask too long"))? * 4 + bit;
                    set.insert(cpu);
                }
            }
        }
        Ok(CpuSet(set))
    }

    /// Format as a hex mask in the kernel's 32-bit-word comma layout.
    pub fn to_mask(&self) -> String {
        let max = self.0.iter().next_back().copied().unwrap_or(0);
        let words = (max / 32 + 1) as usize;
        let mut w = vec![0u32; words];
        for &c in &self.0 {
            w[(c / 32) as usize] |= 1 << (c % 32);
        }
        let parts: Vec<String> = w.iter().rev().map(|x| format!("{x:08x}")).collect();
        parts.join(",")
    }

    /// A set from CPU numbers.
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        CpuSet(cpus.into_iter().collect())
    }

    /// Iterate the CPUs in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no CPU is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// Add a CPU.
    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    /// CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// True when every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl fmt::Display for CpuSet {
    /// The canonical kernel list form: ascending, ranges collapsed (`0-2,5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(lo) = it.next() {
            let mut hi = lo;
            while it.peek() == Some(&(hi + 1)) {
                hi += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CpuSet {
    type Err = CpuListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CpuSet::parse(s)
    }
}

impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CpuSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CpuSet::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lists() {
        assert_eq!(
            CpuSet::parse("0-3,8,10-11").unwrap().to_string(),
            "0-3,8,10-11"
        );
        assert_eq!(
            CpuSet::parse("1").unwrap().iter().collect::<Vec<_>>(),
            vec![1]
        );
        assert!(CpuSet::parse("").unwrap().is_empty());
        assert_eq!(CpuSet::parse("0-7:2/4").unwrap().to_string(), "0-1,4-5");
        assert_eq!(CpuSet::parse("3,1,2").unwrap().to_string(), "1-3");
    }

    #[test]
    fn rejects_bad_lists_with_the_input() {
        for bad in ["3-1", "a", "1,,2", "1-", "0-3:5/4", "9000"] {
            let e = CpuSet::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
        }
    }

    #[test]
    fn masks_round_trip() {
        let s = CpuSet::from_mask("00000000,00000003").unwrap();
        assert_eq!(s.to_string(), "0-1");
        assert_eq!(CpuSet::from_mask("ff").unwrap().to_string(), "0-7");
        assert_eq!(
            CpuSet::parse("0,33").unwrap().to_mask(),
            "00000002,00000001"
        );
        assert_eq!(CpuSet::parse("1").unwrap().to_mask(), "00000002");
        let e = (CpuSet::from_mask("xz")).unwrap_err().to_string();
        assert!(e.contains("not a hex digit"), "{e}");
    }
}
