//! What the checking tools report, as the run record keeps it: `rt-host check --json`
//! and `rt-guest check --json` print a [`CheckReport`], `rt-guest selftest` records a
//! [`SelftestSummary`], and the machine the run was measured on is named by an
//! [`Accelerator`] derived from the kernel facts of the guest and of the host.
//!
//! # Which statuses make evidence invalid
//!
//! One [`CheckStatus`] covers both checkers. [`CheckStatus::is_not_ok`] is the single rule
//! `validation` applies: an item that is `differs`, `needs-reboot`, `not-permitted` or
//! `bad` means the tuning the profile asks for is not verified in place (tuning the kernel
//! refused is tuning that is not there), so a host check with such an item makes the run
//! not valid evidence. `ok`, `not-applicable`, `not-present` (the knob does not exist on
//! this machine), `warn` (works, not ideal, or unknown without a profile) and `info`
//! (informational only) do not.

use rt_sys::kernel::{KernelFacts, Virtualization};
use serde::{Deserialize, Serialize};

/// The state of one checked item (kebab-case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// As wanted.
    Ok,
    /// Not as wanted; `rt-host setup` changes it.
    Differs,
    /// Needs a reboot (kernel, boot arguments).
    NeedsReboot,
    /// The kernel refused the change (or the read) on this machine.
    NotPermitted,
    /// Does not apply here (knob missing, VM not running, profile leaves it alone).
    NotApplicable,
    /// Works, but not ideal (or unknown without a profile to judge against).
    Warn,
    /// Not as the profile wants (`rt-guest check`).
    Bad,
    /// The knob or thread does not exist on this machine.
    NotPresent,
    /// Informational only.
    Info,
}

impl CheckStatus {
    /// Every status, in declaration order.
    pub const ALL: [CheckStatus; 9] = [
        CheckStatus::Ok,
        CheckStatus::Differs,
        CheckStatus::NeedsReboot,
        CheckStatus::NotPermitted,
        CheckStatus::NotApplicable,
        CheckStatus::Warn,
        CheckStatus::Bad,
        CheckStatus::NotPresent,
        CheckStatus::Info,
    ];

    /// True when an item in this state means the tuning is not verified in place (see the
    /// module docs): `differs`, `needs-reboot`, `not-permitted`, `bad`.
    pub fn is_not_ok(self) -> bool {
        matches!(
            self,
            CheckStatus::Differs
                | CheckStatus::NeedsReboot
                | CheckStatus::NotPermitted
                | CheckStatus::Bad
        )
    }

    /// The JSON spelling (`needs-reboot`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Differs => "differs",
            CheckStatus::NeedsReboot => "needs-reboot",
            CheckStatus::NotPermitted => "not-permitted",
            CheckStatus::NotApplicable => "not-applicable",
            CheckStatus::Warn => "warn",
            CheckStatus::Bad => "bad",
            CheckStatus::NotPresent => "not-present",
            CheckStatus::Info => "info",
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckItem {
    /// What (`halt-poll`, `cpuidle`, `kernel.preempt_rt`, `irq_thread.can1.priority`).
    pub name: String,
    /// The thing checked, as a user finds it (`/sys/module/kvm/parameters/halt_poll_ns`,
    /// `affinity of "CPU 1/TCG" (tid 7)`), when the name alone does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The verdict.
    pub status: CheckStatus,
    /// The value found.
    pub current: String,
    /// The value wanted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// Why, or what to do, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl CheckItem {
    /// `name target` (or just the name).
    pub fn label(&self) -> String {
        match &self.target {
            Some(t) if !t.is_empty() => format!("{} {t}", self.name),
            _ => self.name.clone(),
        }
    }
}

/// The output of `rt-host check --json` or `rt-guest check --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    /// The tool that checked (`rt-host check`, `rt-guest check`).
    pub tool: String,
    /// The profile judged against, if any.
    pub profile: Option<String>,
    /// The kernel facts of the machine that was checked (the host for `rt-host check`).
    pub kernel: Option<KernelFacts>,
    /// Every item.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// The items that are not ok ([`CheckStatus::is_not_ok`]).
    pub fn not_ok(&self) -> Vec<&CheckItem> {
        self.items.iter().filter(|i| i.status.is_not_ok()).collect()
    }

    /// True when the report lists items and none of them is not ok.
    pub fn verified(&self) -> bool {
        !self.items.is_empty() && self.not_ok().is_empty()
    }

    /// How many items have `status`.
    pub fn count(&self, status: CheckStatus) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }
}

/// One check of the probe self-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelftestCheck {
    /// What.
    pub name: String,
    /// Passed.
    pub passed: bool,
    /// The numbers.
    pub detail: String,
}

/// What `rt-guest selftest` records in the run (`environment.selftest`): known delays
/// injected on a CPU, and whether the probe reported each of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelftestSummary {
    /// Every check passed (the reader refuses a summary where this disagrees with `checks`).
    pub passed: bool,
    /// CPU disturbed and measured.
    pub cpu: u32,
    /// Probe period, us.
    pub interval_us: u64,
    /// Injected delay, us.
    pub delay_us: f64,
    /// A delay every k-th period.
    pub every: u64,
    /// Delays injected.
    pub injected: u64,
    /// Samples in the detection window.
    pub detected: u64,
    /// Max in the injection phase, us.
    pub max_us: f64,
    /// Baseline max (no injection), us.
    pub baseline_max_us: f64,
    /// Missed periods in the injection phase.
    pub missed_periods: u64,
    /// The checks.
    pub checks: Vec<SelftestCheck>,
}

impl SelftestSummary {
    /// Why the summary contradicts itself, if it does: `passed` must be true exactly when
    /// there are checks and all of them passed.
    pub fn contradiction(&self) -> Option<String> {
        let all = !self.checks.is_empty() && self.checks.iter().all(|c| c.passed);
        (all != self.passed).then(|| {
            format!(
                "selftest says passed: {} but {} of {} checks passed",
                self.passed,
                self.checks.iter().filter(|c| c.passed).count(),
                self.checks.len()
            )
        })
    }
}

/// What the measured machine ran on (kebab-case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accelerator {
    /// No hypervisor: the tools ran on bare metal.
    BareMetal,
    /// A KVM guest on a host that is not itself virtualized (or whose check is absent).
    Kvm,
    /// QEMU TCG emulation: timing is not real-time.
    Tcg,
    /// A guest whose host is itself a guest: VM exits are multiplied.
    Nested,
    /// A guest of another hypervisor (Hyper-V, VMware, Xen, ...).
    OtherHypervisor,
    /// No kernel facts recorded.
    #[default]
    Unknown,
}

impl Accelerator {
    /// Derive it from the kernel facts of the measured machine and, when a host check was
    /// recorded, of its host.
    pub fn of(measured: Option<&KernelFacts>, host: Option<&KernelFacts>) -> Accelerator {
        let Some(m) = measured else {
            return Accelerator::Unknown;
        };
        let host_virtualized = host.is_some_and(|h| h.virtualization != Virtualization::None);
        match m.virtualization {
            Virtualization::Tcg => Accelerator::Tcg,
            Virtualization::None => Accelerator::BareMetal,
            Virtualization::Kvm | Virtualization::Other if host_virtualized => Accelerator::Nested,
            Virtualization::Kvm => Accelerator::Kvm,
            Virtualization::Other => Accelerator::OtherHypervisor,
        }
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::BareMetal => "bare-metal",
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
            Accelerator::Nested => "nested",
            Accelerator::OtherHypervisor => "other-hypervisor",
            Accelerator::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Accelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn facts(v: Virtualization) -> KernelFacts {
        KernelFacts {
            release: "6.1.0-rt-amd64".into(),
            version: "#1 SMP PREEMPT_RT".into(),
            preempt_rt: true,
            cmdline: "isolcpus=1".into(),
            virtualization: v,
            hypervisor_signature: None,
            cpu_model: "test cpu".into(),
            online_cpus: "0-1".into(),
            nested_capable: false,
            cgroup_version: 2,
        }
    }

    #[test]
    fn statuses_have_one_kebab_spelling_and_one_rule() {
        for s in CheckStatus::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: CheckStatus = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
        }
        let not_ok: Vec<&str> = CheckStatus::ALL
            .iter()
            .filter(|s| s.is_not_ok())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(not_ok, ["differs", "needs-reboot", "not-permitted", "bad"]);
        // The old snake_case spelling of rt-guest is not accepted.
        let e = serde_json::from_str::<CheckStatus>("\"not_permitted\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn warn_and_info_items_keep_a_report_verified() {
        let item = |name: &str, status| CheckItem {
            name: name.into(),
            target: None,
            status,
            current: "x".into(),
            desired: None,
            detail: None,
        };
        let mut r = CheckReport {
            tool: "rt-guest check".into(),
            profile: None,
            kernel: None,
            items: vec![
                item("clocksource", CheckStatus::Warn),
                item("thp", CheckStatus::Info),
                item("cpuidle", CheckStatus::NotPresent),
            ],
        };
        assert!(r.verified());
        r.items.push(item("halt-poll", CheckStatus::NotPermitted));
        assert!(!r.verified());
        assert_eq!(r.not_ok()[0].name, "halt-poll");
        r.items.clear();
        assert!(!r.verified(), "an empty report verifies nothing");
    }

    #[test]
    fn unknown_fields_and_contradicting_flags_are_refused() {
        let e = serde_json::from_str::<CheckReport>(
            r#"{"tool": "rt-host check", "profile": null, "kernel": null, "items": [], "ok": false, "met": true}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `ok`"), "{e}");
        let e = serde_json::from_str::<SelftestSummary>(r#"{"passed": "failed"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: string"), "{e}");
    }

    #[test]
    fn selftest_passed_must_match_its_checks() {
        let mut s = SelftestSummary {
            passed: true,
            cpu: 1,
            interval_us: 1000,
            delay_us: 200.0,
            every: 10,
            injected: 100,
            detected: 100,
            max_us: 230.0,
            baseline_max_us: 20.0,
            missed_periods: 0,
            checks: vec![SelftestCheck {
                name: "count".into(),
                passed: false,
                detail: "0 of 100".into(),
            }],
        };
        let why = s.contradiction().unwrap();
        assert!(why.contains("passed: true but 0 of 1"), "{why}");
        s.passed = false;
        assert_eq!(s.contradiction(), None);
        s.checks.clear();
        assert_eq!(s.contradiction(), None, "no checks: not passed");
        s.passed = true;
        assert!(s.contradiction().is_some());
    }

    #[test]
    fn accelerator_from_guest_and_host_facts() {
        let kvm = facts(Virtualization::Kvm);
        let bare = facts(Virtualization::None);
        let tcg = facts(Virtualization::Tcg);
        assert_eq!(Accelerator::of(None, Some(&bare)), Accelerator::Unknown);
        assert_eq!(Accelerator::of(Some(&kvm), None), Accelerator::Kvm);
        assert_eq!(Accelerator::of(Some(&kvm), Some(&bare)), Accelerator::Kvm);
        assert_eq!(Accelerator::of(Some(&kvm), Some(&kvm)), Accelerator::Nested);
        assert_eq!(Accelerator::of(Some(&tcg), Some(&kvm)), Accelerator::Tcg);
        assert_eq!(Accelerator::of(Some(&bare), None), Accelerator::BareMetal);
        assert_eq!(
            serde_json::to_string(&Accelerator::BareMetal).unwrap(),
            "\"bare-metal\""
        );
    }
}
