//! Choosing QEMU's accelerator once, before booting, from what this machine's KVM is
//! (`rt_sys::kvm`), and saying why in words.
//!
//! - `RTVIRT_LAB_ACCEL=kvm|tcg` forces one.
//! - `/dev/kvm` missing or not openable: TCG.
//! - `/dev/kvm` served by `kvm_pvm` (a paravirtual hypervisor in a guest, without vmx or
//!   svm): TCG. A stock guest kernel cannot run there; QEMU would abort with
//!   `failed to set MSR 0x10a`.
//! - Otherwise KVM. For the host lab's outer VM, KVM only when nested virtualization is on
//!   (the outer host must run KVM guests itself); TCG `-cpu max` emulates SVM with NPT.

use anyhow::{bail, Result};
use rt_sys::kvm::{Flavour, KvmFacts};

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's binary translator: works everywhere, is not real-time.
    Tcg,
}

impl Accel {
    /// The suffix QEMU gives vCPU thread names (`CPU 1/TCG`).
    pub fn thread_suffix(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }

    /// `-cpu` for this accelerator: the host CPU under KVM, everything TCG can emulate
    /// (including SVM and NPT, for nested KVM) under TCG.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }

    /// From `RTVIRT_LAB_ACCEL` (`kvm`, `tcg`, `auto` or unset: `None` means detect).
    pub fn from_env() -> Result<Option<Accel>> {
        match std::env::var("RTVIRT_LAB_ACCEL")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("auto") => Ok(None),
            Some("kvm") => Ok(Some(Accel::Kvm)),
            Some("tcg") => Ok(Some(Accel::Tcg)),
            Some(other) => bail!("RTVIRT_LAB_ACCEL={other:?}: expected kvm, tcg or auto"),
        }
    }
}

impl From<Accel> for rt_host::vmdef::Accel {
    fn from(a: Accel) -> Self {
        match a {
            Accel::Kvm => rt_host::vmdef::Accel::Kvm,
            Accel::Tcg => rt_host::vmdef::Accel::Tcg,
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the VM must do with the accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Boot a stock guest kernel.
    Guest,
    /// Be a KVM host itself (the host lab's outer VM): needs nested virtualization.
    NestedHost,
}

/// The accelerator chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The accelerator.
    pub accel: Accel,
    /// Why, in words.
    pub reason: String,
    /// Forced by `RTVIRT_LAB_ACCEL` (no fallback then).
    pub forced: bool,
}

/// `/dev/kvm`, as a user finds it.
fn kvm_device() -> String {
    rt_sys::SysRoot::live().display(rt_sys::kernel::KVM_DEVICE)
}

/// The sentence for a PVM `/dev/kvm`.
pub fn pvm_reason() -> String {
    format!(
        "this machine's {} is a PVM hypervisor (module kvm_pvm, no vmx/svm in the CPU flags): it runs only PVM-enabled guest kernels, not Debian's stock kernel",
        kvm_device()
    )
}

/// Choose the accelerator from `forced` and the KVM facts.
pub fn choose(forced: Option<Accel>, kvm: &KvmFacts, purpose: Purpose) -> Choice {
    if let Some(a) = forced {
        return Choice {
            accel: a,
            reason: format!("RTVIRT_LAB_ACCEL={a}"),
            forced: true,
        };
    }
    let tcg = |why: String| Choice {
        accel: Accel::Tcg,
        reason: why,
        forced: false,
    };
    if !kvm.device {
        return tcg(format!("TCG: this machine has no {}", kvm_device()));
    }
    if let Some(e) = &kvm.open_error {
        return tcg(format!("TCG: {} cannot be opened ({e})", kvm_device()));
    }
    if kvm.flavour == Flavour::Pvm {
        return tcg(format!("TCG: {}", pvm_reason()));
    }
    if purpose == Purpose::NestedHost && !kvm.nested {
        return tcg(
            "TCG: KVM here does not offer nested virtualization (kvm_intel/kvm_amd parameter `nested` is off), and the outer host must run KVM guests; TCG -cpu max emulates SVM with nested paging"
                .into(),
        );
    }
    Choice {
        accel: Accel::Kvm,
        reason: format!(
            "KVM: {} opens ({})",
            kvm_device(),
            match kvm.flavour {
                Flavour::Intel => "kvm_intel",
                Flavour::Amd => "kvm_amd",
                _ => "vendor module unknown",
            }
        ),
        forced: false,
    }
}

/// QEMU's own words for a KVM failure, translated where we know what they mean.
pub fn explain_qemu_failure(log: &str) -> String {
    let first = log
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    if log.contains("failed to set MSR 0x10a") {
        return format!("{} (QEMU: {first})", pvm_reason());
    }
    first.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(flavour: Flavour, nested: bool) -> KvmFacts {
        KvmFacts {
            device: true,
            open_error: None,
            flavour,
            hw_virt_flags: flavour != Flavour::Pvm,
            nested,
        }
    }

    #[test]
    fn pvm_is_tcg_in_words() {
        let c = choose(None, &facts(Flavour::Pvm, false), Purpose::Guest);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason.contains("PVM hypervisor (module kvm_pvm"),
            "{}",
            c.reason
        );
        assert!(!c.forced);
    }

    #[test]
    fn kvm_when_it_opens_and_nested_only_when_on() {
        let c = choose(None, &facts(Flavour::Amd, false), Purpose::Guest);
        assert_eq!(
            (c.accel, c.reason.as_str()),
            (Accel::Kvm, "KVM: /dev/kvm opens (kvm_amd)")
        );
        let c = choose(None, &facts(Flavour::Amd, false), Purpose::NestedHost);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("nested"), "{}", c.reason);
        let c = choose(None, &facts(Flavour::Intel, true), Purpose::NestedHost);
        assert_eq!(c.accel, Accel::Kvm);
    }

    #[test]
    fn missing_or_closed_device_and_forced() {
        let mut f = facts(Flavour::Intel, true);
        f.open_error = Some("Permission denied (os error 13)".into());
        let c = choose(None, &f, Purpose::Guest);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("Permission denied"), "{}", c.reason);
        f.device = false;
        assert!(choose(None, &f, Purpose::Guest)
            .reason
            .contains("no /dev/kvm"));
        let c = choose(Some(Accel::Kvm), &f, Purpose::Guest);
        assert_eq!((c.accel, c.forced), (Accel::Kvm, true));
        assert_eq!(c.reason, "RTVIRT_LAB_ACCEL=kvm");
    }

    #[test]
    fn msr_0x10a_is_explained() {
        let log = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: ../../target/i386/kvm/kvm.c:3194: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        let e = explain_qemu_failure(log);
        assert!(
            e.starts_with("this machine's /dev/kvm is a PVM hypervisor"),
            "{e}"
        );
        assert!(e.contains("failed to set MSR 0x10a"), "{e}");
        assert_eq!(explain_qemu_failure("\nother error\n"), "other error");
        assert_eq!(explain_qemu_failure(""), "no message");
    }

    #[test]
    fn names() {
        assert_eq!(Accel::Tcg.thread_suffix(), "TCG");
        assert_eq!(Accel::Kvm.to_string(), "kvm");
        assert_eq!(Accel::Tcg.cpu_model(), "max");
    }
}
