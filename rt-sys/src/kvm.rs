//! What `/dev/kvm` on this machine can run: whether it opens, which KVM flavour serves it
//! (`kvm_intel`, `kvm_amd`, or `kvm_pvm`, the paravirtual PVM hypervisor that needs no
//! vmx/svm and runs only PVM-enabled guest kernels), whether the CPU shows vmx/svm, and
//! whether nested virtualization is on (`/sys/module/kvm_{intel,amd}/parameters/nested`).
//!
//! A stock guest kernel on PVM makes QEMU abort with `failed to set MSR 0x10a`: callers
//! decide the accelerator from these facts instead of trying and reading QEMU's error.
//! See <https://docs.kernel.org/virt/kvm/api.html> and the PVM patch series
//! (<https://lwn.net/Articles/963718/>).

use serde::{Deserialize, Serialize};

use crate::kernel::{cpuinfo_field, module_dir, CPUINFO, KVM_DEVICE as DEV_KVM};
use crate::SysRoot;

/// The module that provides `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// `kvm_intel` (VMX).
    Intel,
    /// `kvm_amd` (SVM).
    Amd,
    /// `kvm_pvm`: a paravirtual hypervisor inside a guest; stock kernels cannot run on it.
    Pvm,
    /// No vendor module is loaded (or the tree does not show one).
    Unknown,
}

/// Facts about KVM on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmFacts {
    /// `/dev/kvm` exists.
    pub device: bool,
    /// Why `/dev/kvm` could not be opened read-write (None when it opened).
    pub open_error: Option<String>,
    /// The module serving it.
    pub flavour: Flavour,
    /// The CPU flags show `vmx` or `svm` (hardware virtualization for our guests).
    pub hw_virt_flags: bool,
    /// Nested virtualization is on in the vendor module (`nested` = `Y` or `1`).
    pub nested: bool,
}

impl KvmFacts {
    /// True when `/dev/kvm` opened read-write.
    pub fn usable(&self) -> bool {
        self.device && self.open_error.is_none()
    }
}

/// Which module serves `/dev/kvm`, from the names present in `/sys/module`.
pub fn flavour_of(modules: &[String]) -> Flavour {
    let has = |m: &str| modules.iter().any(|x| x == m);
    if has("kvm_pvm") {
        Flavour::Pvm
    } else if has("kvm_intel") {
        Flavour::Intel
    } else if has("kvm_amd") {
        Flavour::Amd
    } else {
        Flavour::Unknown
    }
}

/// True for a module parameter that reads as on (`Y`, `1`).
pub fn param_on(text: &str) -> bool {
    matches!(text.trim(), "Y" | "y" | "1")
}

/// Gather [`KvmFacts`] under `root`.
pub fn facts(root: &SysRoot) -> KvmFacts {
    let device = root.exists(DEV_KVM);
    let open_error = if device {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.path(DEV_KVM))
            .err()
            .map(|e| e.to_string())
    } else {
        Some("no such device".into())
    };
    let modules = root.list(module_dir("")).unwrap_or_default();
    let flavour = flavour_of(&modules);
    let cpuinfo = root.read(CPUINFO).unwrap_or_default();
    let flags = cpuinfo_field(&cpuinfo, "flags").unwrap_or("");
    let hw_virt_flags = flags.split(' ').any(|f| f == "vmx" || f == "svm");
    let nested = ["kvm_intel", "kvm_amd"].iter().any(|m| {
        root.read(format!("{}/parameters/nested", module_dir(m)))
            .is_ok_and(|t| param_on(&t))
    });
    KvmFacts {
        device,
        open_error,
        flavour,
        hw_virt_flags,
        nested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(modules: &[&str], flags: &str) -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for m in modules {
            std::fs::create_dir_all(root.path(format!("sys/module/{m}/parameters"))).unwrap();
        }
        std::fs::create_dir_all(root.path("proc")).unwrap();
        std::fs::write(
            root.path("proc/cpuinfo"),
            format!("processor\t: 0\nflags\t\t: {flags}\n"),
        )
        .unwrap();
        (dir, root)
    }

    #[test]
    fn pvm_machine_as_seen_here() {
        // This machine: modules kvm and kvm_pvm, flags without vmx/svm, /dev/kvm present.
        let (_d, root) = tree(&["kvm", "kvm_pvm"], "fpu vme hypervisor lm");
        std::fs::create_dir_all(root.path("dev")).unwrap();
        std::fs::write(root.path(DEV_KVM), "").unwrap();
        let f = facts(&root);
        assert_eq!(f.flavour, Flavour::Pvm);
        assert!(!f.hw_virt_flags);
        assert!(f.usable(), "{f:?}");
        assert!(!f.nested);
    }

    #[test]
    fn amd_host_with_nested_on() {
        let (_d, root) = tree(&["kvm", "kvm_amd"], "fpu svm npt");
        std::fs::write(root.path("sys/module/kvm_amd/parameters/nested"), "1\n").unwrap();
        let f = facts(&root);
        assert_eq!(f.flavour, Flavour::Amd);
        assert!(f.hw_virt_flags && f.nested);
        assert!(!f.device);
        assert_eq!(f.open_error.as_deref(), Some("no such device"));
        assert!(!f.usable());
    }

    #[test]
    fn module_names_and_params() {
        assert_eq!(flavour_of(&["kvm_intel".into()]), Flavour::Intel);
        assert_eq!(flavour_of(&["kvm".into()]), Flavour::Unknown);
        assert!(param_on("Y\n") && param_on("1") && !param_on("N") && !param_on("0"));
    }
}
