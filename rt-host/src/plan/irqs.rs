//! Keeping device interrupts and unbound workqueues off the realtime CPUs:
//! `/proc/irq/default_smp_affinity`, `/proc/irq/N/smp_affinity` (named from
//! `/proc/interrupts`) and `/sys/devices/virtual/workqueue/cpumask`.

use profiles::Host;
use rt_sys::{irq, sysctl, CpuSet};

use super::{Action, Change, Status, B};
use crate::error::{sys, TuneError};

/// The IRQ stage: every IRQ and the default mask to `host.irqs.steer_to`.
pub(super) fn steering(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let hk = &host.housekeeping_cpus;
    if host.irqs.skip {
        b.push(
            Change::report(
                "irq",
                root.display(irq::ROOT),
                "(left alone)",
                "(left alone)",
                Status::NotApplicable,
            )
            .note("host.irqs.skip"),
        );
    } else if root.exists(irq::ROOT) {
        let to = host.irqs.steer_to.clone().unwrap_or_else(|| hk.clone());
        let names = root
            .read(irq::INTERRUPTS)
            .ok()
            .and_then(|t| irq::parse_interrupts(&t).ok())
            .unwrap_or_default();
        let mut rels = vec![(irq::DEFAULT_AFFINITY.to_string(), "new IRQs".to_string())];
        for n in irq::irqs(root).map_err(sys(format!("Listing {}", root.display(irq::ROOT))))? {
            let dev = names
                .iter()
                .find(|l| l.irq == n)
                .map(|l| l.device.clone())
                .unwrap_or_default();
            let dev = if dev.is_empty() {
                "no device".to_string()
            } else {
                dev
            };
            rels.push((irq::affinity_path(n), dev));
        }
        for (rel, label) in rels {
            let (raw, set) = match irq::read_mask(root, &rel) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(sys("Reading IRQ affinity")(e)),
            };
            let c = Change::report(
                "irq",
                format!("{} ({label})", root.display(&rel)),
                set.to_string(),
                to.to_string(),
                Status::Ok,
            );
            if set.is_subset(&to) && !set.is_empty() {
                b.push(c);
            } else {
                b.push(c.act(Action::Write {
                    path: rel,
                    value: to.to_mask(),
                    prior: raw,
                }));
            }
        }
    }
    Ok(())
}

/// Unbound workqueues on the housekeeping CPUs: the global mask and the mask of every
/// workqueue with its own (`writeback`, ...), as tuned's realtime profile writes them.
pub(super) fn workqueues(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    if !host.isolation.workqueues {
        return Ok(());
    }
    let root = b.root();
    let mut masks = vec![sysctl::WORKQUEUE_CPUMASK.to_string()];
    masks.extend(sysctl::workqueue_cpumasks(root).map_err(sys("Listing the workqueues"))?);
    for rel in masks {
        workqueue_mask(b, &rel, &host.housekeeping_cpus)?;
    }
    Ok(())
}

fn workqueue_mask(b: &mut B<'_, '_>, rel: &str, hk: &CpuSet) -> Result<(), TuneError> {
    let root = b.root();
    match irq::read_mask(root, rel) {
        Ok((raw, set)) => {
            let c = Change::report(
                "workqueue",
                root.display(rel),
                set.to_string(),
                hk.to_string(),
                Status::Ok,
            );
            b.push(if set == *hk {
                c
            } else {
                c.act(Action::Write {
                    path: rel.into(),
                    value: hk.to_mask(),
                    prior: raw,
                })
            });
        }
        Err(e) if e.is_not_found() => b.push(Change::report(
            "workqueue",
            root.display(rel),
            "(absent)",
            hk.to_string(),
            Status::NotApplicable,
        )),
        Err(e) => return Err(sys(format!("Reading {}", root.display(rel)))(e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::plan::{build, Ctx, Status};

    #[test]
    fn every_workqueue_mask_goes_to_the_housekeeping_cpus() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(dir.path());
        m.put(
            "sys/devices/virtual/workqueue/blkcg_punt_bio/cpumask",
            "2\n",
        );
        let p = build("lab", &crate::fake::lab_host(), &Ctx::new(&m.root)).unwrap();
        let wq: Vec<(&str, &str, Status)> = p
            .changes
            .iter()
            .filter(|c| c.item == "workqueue")
            .map(|c| (c.target.as_str(), c.current.as_str(), c.status))
            .collect();
        let d = "/sys/devices/virtual/workqueue";
        assert_eq!(
            wq,
            [
                (&format!("{d}/cpumask")[..], "0-1", Status::Differs),
                (
                    &format!("{d}/blkcg_punt_bio/cpumask")[..],
                    "1",
                    Status::Differs
                ),
                (
                    &format!("{d}/writeback/cpumask")[..],
                    "0-1",
                    Status::Differs
                ),
            ],
            "cpumask_isolated is no workqueue"
        );
    }
}
