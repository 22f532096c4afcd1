//! `rt-host check --json`: the [`Plan`] as the run record keeps it, a
//! [`record::CheckReport`] (one item per change, the host's kernel facts beside them), so
//! `validation` reads typed statuses instead of this tool's internal plan.

use record::{CheckItem, CheckReport, CheckStatus};
use rt_sys::kernel::KernelFacts;

use crate::plan::{Plan, Status};

/// The record's status for a plan status.
pub fn status(s: Status) -> CheckStatus {
    match s {
        Status::Ok => CheckStatus::Ok,
        Status::Differs => CheckStatus::Differs,
        Status::NeedsReboot => CheckStatus::NeedsReboot,
        Status::NotPermitted => CheckStatus::NotPermitted,
        Status::NotApplicable => CheckStatus::NotApplicable,
    }
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
                status: status(c.status),
                current: c.current.clone(),
                desired: Some(c.desired.clone()),
                detail: c.note.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, When};

    #[test]
    fn every_plan_status_maps_to_the_record_and_keeps_its_spelling() {
        for s in [
            Status::Ok,
            Status::Differs,
            Status::NeedsReboot,
            Status::NotPermitted,
            Status::NotApplicable,
        ] {
            let plan_json = serde_json::to_value(s).unwrap();
            let record_json = serde_json::to_value(status(s)).unwrap();
            assert_eq!(plan_json, record_json, "{s:?}");
        }
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
                action: None,
            }],
        };
        let r = check_report(&plan, None);
        assert_eq!(
            r.items[0].label(),
            "halt-poll /sys/module/kvm/parameters/halt_poll_ns"
        );
        assert_eq!(r.items[0].status, CheckStatus::NotPermitted);
        assert!(!r.verified());
    }
}
