//! Keeping device interrupts and unbound workqueues off the realtime CPUs:
//! `/proc/irq/default_smp_affinity`, `/proc/irq/N/smp_affinity` (named from
//! `/proc/interrupts`) and `/sys/devices/virtual/workqueue/cpumask`.

use profiles::Host;
use rt_sys::{irq, sysctl};

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

/// Unbound workqueues on the housekeeping CPUs.
pub(super) fn workqueues(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let hk = &host.housekeeping_cpus;
    if host.isolation.workqueues {
        let rel = sysctl::WORKQUEUE_CPUMASK;
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
            Err(e) => return Err(sys("Reading the workqueue cpumask")(e)),
        }
    }
    Ok(())
}
