//! The kernel command line a profile needs (`isolcpus=managed_irq,domain,...`,
//! `nohz_full`, `rcu_nocbs`, `irqaffinity`, C-state limits, ...), whether `/proc/cmdline`
//! already has each argument, and the text that installs them (GRUB drop-in, BLS).
//! See <https://docs.kernel.org/admin-guide/kernel-parameters.html>.

use profiles::Host;
use rt_sys::CpuSet;
use serde::Serialize;

/// One kernel argument: `key=value`, or a bare `key` when the value is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootArg {
    /// Parameter name.
    pub key: String,
    /// Value (empty for flags such as `nosoftlockup`).
    pub value: String,
    /// Why it is there.
    pub why: String,
}

impl std::fmt::Display for BootArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            f.write_str(&self.key)
        } else {
            write!(f, "{}={}", self.key, self.value)
        }
    }
}

fn arg(key: &str, value: impl Into<String>, why: &str) -> BootArg {
    BootArg {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// The arguments `host` needs on a CPU of `vendor` (`vendor_id` of `/proc/cpuinfo`:
/// `GenuineIntel`, `AuthenticAMD`; it picks the P-state driver to disable), in a stable
/// order; profile extras override same-key defaults.
pub fn boot_args(host: &Host, vendor: Option<&str>) -> Vec<BootArg> {
    let rt = host.realtime_cpus.to_string();
    let hk = host.housekeeping_cpus.to_string();
    let mut v = Vec::new();
    let k = &host.kernel;
    if k.isolcpus && !host.realtime_cpus.is_empty() {
        v.push(arg(
            "isolcpus",
            format!("managed_irq,domain,{rt}"),
            "take the realtime CPUs out of scheduler load balancing and managed IRQs",
        ));
    }
    if k.nohz_full && !host.realtime_cpus.is_empty() {
        v.push(arg(
            "nohz_full",
            rt.clone(),
            "stop the tick on realtime CPUs running one task",
        ));
    }
    if k.rcu_nocbs && !host.realtime_cpus.is_empty() {
        v.push(arg(
            "rcu_nocbs",
            rt.clone(),
            "run RCU callbacks on the housekeeping CPUs",
        ));
    }
    if !host.irqs.skip && !hk.is_empty() {
        let to = host
            .irqs
            .steer_to
            .as_ref()
            .map(CpuSet::to_string)
            .unwrap_or(hk);
        v.push(arg("irqaffinity", to, "default IRQ affinity from boot on"));
    }
    if host.idle.max_exit_latency_us.is_some() {
        v.push(arg(
            "processor.max_cstate",
            "1",
            "no ACPI C-state deeper than C1 (runtime: cpuidle state disable)",
        ));
        v.push(arg(
            "intel_idle.max_cstate",
            "0",
            "no intel_idle deep states (C1 through acpi_idle only)",
        ));
    }
    v.push(arg(
        "skew_tick",
        "1",
        "offset per-CPU ticks so they do not contend",
    ));
    v.push(arg(
        "nosoftlockup",
        "",
        "no soft-lockup watchdog on busy FIFO CPUs",
    ));
    v.extend(latency_args(host, vendor));
    if let Some(h) = &host.hugepages {
        if h.size_kib == 1_048_576 {
            v.push(arg(
                "hugepagesz",
                "1G",
                "1 GB pages only reserve reliably at boot",
            ));
            v.push(arg(
                "hugepages",
                h.count.to_string(),
                "1 GB pages for the guest",
            ));
        }
    }
    for extra in &k.extra_args {
        let (key, value) = extra.split_once('=').unwrap_or((extra.as_str(), ""));
        v.retain(|a| a.key != key);
        v.push(arg(key, value, "profile host.kernel.extra_args"));
    }
    v
}

/// tuned's latency arguments the profile asks for: the TSC, RCU and P-state ones.
fn latency_args(host: &Host, vendor: Option<&str>) -> Vec<BootArg> {
    let k = &host.kernel;
    let mut v = Vec::new();
    if k.tsc_reliable {
        v.push(arg(
            "tsc",
            "reliable",
            "no clocksource watchdog checking the TSC (tuned network-latency)",
        ));
    }
    if k.rcu_normal_after_boot {
        v.push(arg(
            "rcupdate.rcu_normal_after_boot",
            "1",
            "no expedited RCU grace periods (IPIs to every CPU) once booted",
        ));
    }
    if k.rcu_nocb_poll && k.rcu_nocbs {
        v.push(arg(
            "rcu_nocb_poll",
            "",
            "offloaded RCU threads poll: the realtime CPUs never wake them",
        ));
    }
    if host.power.disable_pstate {
        let driver = match vendor {
            Some("GenuineIntel") => Some("intel_pstate"),
            Some("AuthenticAMD") => Some("amd_pstate"),
            _ => None,
        };
        if let Some(d) = driver {
            v.push(arg(
                d,
                "disable",
                "no hardware P-state driver: a fixed frequency under the governor \
                 (tuned's realtime profile)",
            ));
        }
    }
    v
}

/// Split a CPU-list argument into its flags and CPUs (`managed_irq,domain,1-3`).
fn flags_and_cpus(v: &str) -> (Vec<&str>, Option<CpuSet>) {
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    for part in v.split(',') {
        if part.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && rest.is_empty() {
            flags.push(part);
        } else {
            rest.push(part);
        }
    }
    flags.sort_unstable();
    (flags, CpuSet::parse(&rest.join(",")).ok())
}

/// True when `cmdline` (as in `/proc/cmdline`) has `a`, comparing CPU lists as sets.
pub fn satisfied(cmdline: &str, a: &BootArg) -> bool {
    let Some(have) = rt_sys::kernel::cmdline_value(cmdline, &a.key) else {
        return false;
    };
    if have == a.value {
        return true;
    }
    match a.key.as_str() {
        "isolcpus" | "nohz_full" | "rcu_nocbs" | "irqaffinity" => {
            let (fh, ch) = flags_and_cpus(have);
            let (fw, cw) = flags_and_cpus(&a.value);
            ch.is_some() && ch == cw && fh == fw
        }
        _ => false,
    }
}

/// The whole argument line.
pub fn line(args: &[BootArg]) -> String {
    args.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A GRUB drop-in (`/etc/default/grub.d/99-rtvirt.cfg`) adding the arguments.
pub fn grub_dropin(profile: &str, args: &[BootArg]) -> String {
    format!(
        "# /etc/default/grub.d/99-rtvirt.cfg: kernel arguments for the rtvirt profile {profile:?}\n\
         # written by `rt-host boot-args {profile}`; then run update-grub (Debian/Ubuntu)\n\
         # or grub2-mkconfig -o /boot/grub2/grub.cfg, and reboot.\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT {}\"\n",
        line(args)
    )
}

/// How to add the arguments on Boot Loader Specification systems (Fedora, RHEL, systemd-boot).
pub fn bls_text(args: &[BootArg]) -> String {
    let l = line(args);
    format!(
        "# BLS entries (/boot/loader/entries/*.conf): append to the `options` line, or run\n\
         grubby --update-kernel=ALL --args=\"{l}\"\n\
         # kernel-install (systemd-boot, UKI): append this line's words to /etc/kernel/cmdline\n\
         # (that file holds bare arguments; `options` belongs in BLS entries only)\n\
         {l}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Host {
        profiles::load("lab").unwrap().profile.host.unwrap()
    }

    #[test]
    fn lab_args() {
        let a = boot_args(&lab(), Some("GenuineIntel"));
        let l = line(&a);
        assert!(
            l.starts_with("isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0"),
            "{l}"
        );
        assert!(l.contains("skew_tick=1"));
        assert!(l.contains("nosoftlockup"));
        assert!(l.contains("processor.max_cstate=1"));
        assert!(
            l.contains("tsc=reliable rcupdate.rcu_normal_after_boot=1 intel_pstate=disable"),
            "{l}"
        );
        assert!(!l.contains("rcu_nocb_poll"), "opt-in: {l}");
        let amd = line(&boot_args(&lab(), Some("AuthenticAMD")));
        assert!(amd.ends_with("amd_pstate=disable"), "{amd}");
        let mut h = lab();
        h.kernel.rcu_nocb_poll = true;
        h.power.disable_pstate = false;
        let other = line(&boot_args(&h, Some("CentaurHauls")));
        assert!(
            other.ends_with("rcupdate.rcu_normal_after_boot=1 rcu_nocb_poll"),
            "{other}"
        );
        assert!(grub_dropin("lab", &a)
            .contains("GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT isolcpus="));
        let bls = bls_text(&a);
        assert!(bls.contains("grubby --update-kernel=ALL --args=\"isolcpus="));
        // /etc/kernel/cmdline takes bare arguments: no literal `options` on the kernel line.
        assert!(!bls.lines().any(|l| l.starts_with("options")), "{bls}");
        assert!(bls.ends_with(&format!("\n{}\n", line(&a))), "{bls}");
    }

    #[test]
    fn extras_override_defaults() {
        let mut h = lab();
        h.kernel.extra_args = vec!["skew_tick=0".into(), "tsc=reliable".into()];
        let a = boot_args(&h, None);
        assert_eq!(a.iter().filter(|a| a.key == "skew_tick").count(), 1);
        assert!(line(&a).contains("skew_tick=0"));
        assert!(line(&a).ends_with("tsc=reliable"));
    }

    #[test]
    fn cmdline_comparison() {
        // This machine's command line has none of them.
        let here = "console=ttyS0 quiet reboot=k panic=1 nomodule cpuidle_haltpoll.force=1 -- --addr 0.0.0.0:2024";
        let a = boot_args(&lab(), Some("GenuineIntel"));
        assert!(a.iter().all(|x| !satisfied(here, x)));
        let tuned = "quiet isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 nosoftlockup";
        let iso = a.iter().find(|x| x.key == "isolcpus").unwrap();
        assert!(satisfied(tuned, iso));
        assert!(!satisfied("isolcpus=1", iso));
        assert!(satisfied(
            tuned,
            a.iter().find(|x| x.key == "nosoftlockup").unwrap()
        ));
    }
}
