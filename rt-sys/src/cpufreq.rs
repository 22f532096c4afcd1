//! CPU frequency and power management: the cpufreq policies
//! (`/sys/devices/system/cpu/cpufreq/policyN/{affected_cpus,scaling_governor,
//! energy_performance_preference}`), the energy-performance bias of each CPU
//! (`/sys/devices/system/cpu/cpuN/power/energy_perf_bias`, 0 performance .. 15 power
//! saving) and turbo (`cpufreq/boost`, or `intel_pstate/no_turbo` with the opposite sense).
//! See <https://docs.kernel.org/admin-guide/pm/cpufreq.html>,
//! <https://docs.kernel.org/admin-guide/pm/intel_pstate.html> and
//! <https://docs.kernel.org/admin-guide/pm/intel_epb.html>.

use crate::{cpulist, CpuSet, SysError, SysRoot};

/// The directory of the cpufreq policies.
pub const POLICIES: &str = "sys/devices/system/cpu/cpufreq";
/// Turbo/boost switch of acpi-cpufreq and amd-pstate (`1` on).
pub const BOOST: &str = "sys/devices/system/cpu/cpufreq/boost";
/// intel_pstate's turbo switch (`1` means turbo off).
pub const NO_TURBO: &str = "sys/devices/system/cpu/intel_pstate/no_turbo";

/// One cpufreq policy: its directory and the CPUs it drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `sys/devices/system/cpu/cpufreq/policyN`.
    pub dir: String,
    /// Its CPUs (`affected_cpus`, space separated in sysfs).
    pub cpus: CpuSet,
}

impl Policy {
    /// A file of this policy (`scaling_governor`, ...).
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

/// `scaling_governor` of a policy.
pub const GOVERNOR: &str = "scaling_governor";
/// The governors a policy offers.
pub const GOVERNORS: &str = "scaling_available_governors";
/// The energy-performance preference of a policy.
pub const EPP: &str = "energy_performance_preference";
/// The preferences a policy offers.
pub const EPPS: &str = "energy_performance_available_preferences";

/// Parse `affected_cpus` (`0 1 2`, space separated).
pub fn parse_cpu_words(text: &str) -> Result<CpuSet, SysError> {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(",");
    CpuSet::parse(&joined).map_err(|e| SysError::Parse {
        what: "affected_cpus".into(),
        detail: e.to_string(),
    })
}

/// Every cpufreq policy (none without a cpufreq driver, as in most VMs).
pub fn policies(root: &SysRoot) -> Result<Vec<Policy>, SysError> {
    if !root.exists(POLICIES) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in root.list(POLICIES)? {
        if !name.starts_with("policy") {
            continue;
        }
        let dir = format!("{POLICIES}/{name}");
        let text = root.read(format!("{dir}/affected_cpus"))?;
        out.push(Policy {
            cpus: parse_cpu_words(&text)?,
            dir,
        });
    }
    Ok(out)
}

/// The energy-performance bias file of `cpu`.
pub fn epb_path(cpu: u32) -> String {
    format!("{}/power/energy_perf_bias", cpulist::cpu_dir(cpu))
}

/// The words of a `scaling_available_governors`-style file.
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_their_cpus() {
        assert_eq!(parse_cpu_words("0 1 2 3\n").unwrap().to_string(), "0-3");
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        assert!(policies(&root).unwrap().is_empty(), "no cpufreq driver");
        let p = dir.path().join("sys/devices/system/cpu/cpufreq/policy2");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("affected_cpus"), "2\n").unwrap();
        std::fs::write(
            dir.path().join("sys/devices/system/cpu/cpufreq/boost"),
            "1\n",
        )
        .unwrap();
        let ps = policies(&root).unwrap();
        assert_eq!(ps.len(), 1);
        assert_eq!(
            ps[0].file(GOVERNOR),
            "sys/devices/system/cpu/cpufreq/policy2/scaling_governor"
        );
        assert_eq!(
            words("performance powersave\n"),
            ["performance", "powersave"]
        );
    }
}
