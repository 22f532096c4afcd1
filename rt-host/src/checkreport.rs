//! `rt-host check --json`: the [`Plan`] as the run record keeps it, a
//! [`record::CheckReport`] (one item per change, the host's kernel facts beside them), so
//! `validation` reads typed statuses instead of this tool's internal plan.

use record::{CheckItem, CheckReport, CheckStatus};
use rt_sys::kernel::KernelFacts;

use crate::plan::{Change, Plan, Status};

/// The record's status for a plan status.
pub fn status(s: Status) -> CheckStatus {
    match s {
        Status::Ok => CheckStatus::Ok,
        Status::Differs => CheckStatus::Differs,
        Status::NeedsReboot => CheckStatus::NeedsReboot,
        // The record knows reboots; a module reload is the lighter form of one.
        Status::NeedsModuleReload => CheckStatus::NeedsReboot,
        Status::Warn => CheckStatus::Warn,
        Status::NotPermitted => CheckStatus::NotPermitted,
        Status::NotApplicable => CheckStatus::NotApplicable,
    }
}

/// The record's status for a change: an essential item that cannot be met (a vCPU's
/// affinity or real-time policy refused, or no such vCPU thread) is `bad` when the plan
/// calls it not applicable, so the record never counts it as fine.
pub fn change_status(c: &Change) -> CheckStatus {
    if c.not_met() && c.status == Status::NotApplicable {
        CheckStatus::Bad
    } else {
        status(c.status)
    }
}

/// The detail of a change in the record: its note, `NOT MET` for an essential item that
/// cannot be met, and the fix.
fn detail(c: &Change) -> Option<String> {
    let mut parts = Vec::new();
    if c.not_met() {
        parts.push("NOT MET (essential)".to_string());
    }
    if c.status == Status::NeedsModuleReload {
        parts.push("needs a module reload (rt-host modprobe)".to_string());
    }
    parts.extend(c.note.clone());
    parts.extend(c.fix.as_ref().map(|f| format!("fix: {f}")));
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The check report of `plan` on a host with `kernel` facts.
pub fn check_report(plan: &Plan, kernel: Option<KernelFacts>) -> CheckReport {
    CheckReport {
        tool: "rt-host check".into(),
        profile: Some(plan.profile.clone()),
        kernel,
        items: plan
            .changes
            .iter()
            .map(|c| CheckItem {
                name: c.item.clone(),
                target: Some(c.target.clone()),
                status: change_status(c),
                current: c.current.clone(),
                desired: Some(c.desired.clone()),
                detail: detail(c),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::When;

    #[test]
    fn every_plan_status_maps_to_the_record_and_keeps_its_spelling() {
        for s in [
            Status::Ok,
            Status::Differs,
            Status::NeedsReboot,
            Status::Warn,
            Status::NotPermitted,
            Status::NotApplicable,
        ] {
            let plan_json = serde_json::to_value(s).unwrap();
            let record_json = serde_json::to_value(status(s)).unwrap();
            assert_eq!(plan_json, record_json, "{s:?}");
        }
        assert_eq!(status(Status::NeedsModuleReload), CheckStatus::NeedsReboot);
        let plan = Plan {
            profile: "lab".into(),
            vm: None,
            changes: vec![Change {
                item: "halt-poll".into(),
                target: "/sys/module/kvm/parameters/halt_poll_ns".into(),
                current: "200000".into(),
                desired: "0".into(),
                when: When::Now,
                status: Status::NotPermitted,
                note: Some("EPERM".into()),
                fix: None,
                essential: false,
                action: None,
            }],
        };
        let r = check_report(&plan, None);
        assert_eq!(
            r.items[0].label(),
            "halt-poll /sys/module/kvm/parameters/halt_poll_ns"
        );
        assert_eq!(r.items[0].status, CheckStatus::NotPermitted);
        assert_eq!(r.items[0].detail.as_deref(), Some("EPERM"));
        assert!(!r.verified());
    }

    #[test]
    fn an_essential_item_that_cannot_be_met_is_never_fine_in_the_record() {
        let missing = Change {
            item: "vcpu-affinity".into(),
            target: "vCPU 3".into(),
            current: "(no such vCPU thread)".into(),
            desired: "3".into(),
            when: When::Now,
            status: Status::NotApplicable,
            note: Some("QEMU pid 4000 has vCPUs [0, 1]".into()),
            fix: Some("list only the VM's vCPUs".into()),
            essential: true,
            action: None,
        };
        assert_eq!(change_status(&missing), CheckStatus::Bad);
        assert!(change_status(&missing).is_not_ok());
        assert_eq!(
            detail(&missing).as_deref(),
            Some("NOT MET (essential); QEMU pid 4000 has vCPUs [0, 1]; fix: list only the VM's vCPUs")
        );
        let optional = Change {
            essential: false,
            ..missing
        };
        assert_eq!(change_status(&optional), CheckStatus::NotApplicable);
    }
}
