//! KVM module parameters for low latency, as tuned's `setup_kvm_mod_low_latency` writes
//! them to modprobe.d: `kvm nx_huge_pages=off` (no 4 KiB splitting of executable huge
//! pages, which tuned saw cost ~100 us spikes), `kvm kvmclock_periodic_sync=0` (no kvmclock
//! update of every vCPU each 300 s), `kvm_intel ple_gap=0` and `kvm_amd
//! pause_filter_count=0` (a spinning vCPU is never forced out on PAUSE: it has its CPU to
//! itself). Only `nx_huge_pages` changes at runtime (where the kernel made it writable);
//! the others take effect when the module is loaded again, so `rt-host modprobe` prints
//! the file and the plan says `needs module reload`.
//! See <https://docs.kernel.org/admin-guide/kernel-parameters.html> (`kvm.*`,
//! `kvm-intel.*`, `kvm-amd.*`).

use profiles::Host;
use serde::Serialize;

/// One module parameter the profile wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModParam {
    /// Module (`kvm`, `kvm_intel`, `kvm_amd`).
    pub module: String,
    /// Parameter name.
    pub name: String,
    /// Value as written in modprobe.d (and at runtime).
    pub value: String,
    /// Whether the kernel may take it at runtime (when the parameter file is writable).
    pub runtime: bool,
    /// Why.
    pub why: String,
}

impl ModParam {
    /// True when `loaded` (the text of `/sys/module/M/parameters/P`) already means
    /// `value`: booleans read `Y`/`N`, `nx_huge_pages` also `never`.
    pub fn matches(&self, loaded: &str) -> bool {
        let l = loaded.trim();
        if l == self.value {
            return true;
        }
        let off = matches!(l, "N" | "n" | "0" | "never" | "off");
        let on = matches!(l, "Y" | "y" | "1" | "force");
        match self.value.as_str() {
            "off" | "0" => off,
            "force" | "1" => on,
            _ => false,
        }
    }
}

fn p(module: &str, name: &str, value: impl Into<String>, runtime: bool, why: &str) -> ModParam {
    ModParam {
        module: module.into(),
        name: name.into(),
        value: value.into(),
        runtime,
        why: why.into(),
    }
}

/// The parameters `host` wants, in a stable order (none with `host.kvm.low_latency` off
/// and no `halt_poll_ns`).
pub fn params(host: &Host) -> Vec<ModParam> {
    let mut v = Vec::new();
    if let Some(ns) = host.kvm.halt_poll_ns {
        v.push(p(
            "kvm",
            "halt_poll_ns",
            ns.to_string(),
            true,
            "halt polling of a vCPU before it sleeps (host.kvm.halt_poll_ns)",
        ));
    }
    if host.kvm.low_latency {
        v.push(p(
            "kvm",
            "nx_huge_pages",
            "off",
            true,
            "no splitting of executable huge pages into 4 KiB pages (iTLB multihit \
             mitigation), which costs the guest page faults and ~100 us spikes",
        ));
        v.push(p(
            "kvm",
            "kvmclock_periodic_sync",
            "0",
            false,
            "no kvmclock update request to every vCPU each 300 s",
        ));
        v.push(p(
            "kvm_intel",
            "ple_gap",
            "0",
            false,
            "no pause-loop exit: a spinning vCPU keeps its CPU (it is alone on it)",
        ));
        v.push(p(
            "kvm_amd",
            "pause_filter_count",
            "0",
            false,
            "no pause-filter exit: a spinning vCPU keeps its CPU (it is alone on it)",
        ));
    }
    v
}

/// The modprobe.d file that sets `params` at the next module load.
pub fn file_text(profile: &str, params: &[ModParam]) -> String {
    let mut out = format!(
        "# /etc/modprobe.d/rtvirt-kvm.conf: KVM module parameters for the rtvirt profile \
         {profile:?}\n# written by `rt-host modprobe {profile}`; they apply when the modules \
         load again:\n# stop every VM, then `modprobe -r kvm_intel kvm_amd kvm && modprobe \
         kvm_intel` (or kvm_amd), or reboot.\n"
    );
    let mut modules: Vec<&str> = params.iter().map(|p| p.module.as_str()).collect();
    modules.dedup();
    for m in modules {
        let opts: Vec<String> = params
            .iter()
            .filter(|p| p.module == m)
            .map(|p| format!("{}={}", p.name, p.value))
            .collect();
        out.push_str(&format!("options {m} {}\n", opts.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_values_match_in_their_kernel_spelling() {
        let h = crate::fake::host_from(r#"(housekeeping_cpus: "0", realtime_cpus: "1")"#);
        let ps = params(&h);
        let nx = ps.iter().find(|p| p.name == "nx_huge_pages").unwrap();
        assert!(nx.matches("N\n") && nx.matches("never") && !nx.matches("Y"));
        let sync = ps
            .iter()
            .find(|p| p.name == "kvmclock_periodic_sync")
            .unwrap();
        assert!(sync.matches("N") && !sync.matches("Y"));
        let ple = ps.iter().find(|p| p.name == "ple_gap").unwrap();
        assert!(ple.matches("0") && !ple.matches("128"));
        let text = file_text("lab", &ps);
        assert!(
            text.contains("\noptions kvm nx_huge_pages=off kvmclock_periodic_sync=0\n"),
            "{text}"
        );
        assert!(text.contains("\noptions kvm_intel ple_gap=0\n"), "{text}");
        assert!(
            text.ends_with("options kvm_amd pause_filter_count=0\n"),
            "{text}"
        );
    }
}
