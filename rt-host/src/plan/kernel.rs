//! The host kernel: PREEMPT_RT, nested virtualization, and the boot arguments on the
//! kernel command line (`/proc/cmdline`): report-only items that need a reboot.

use profiles::Host;
use rt_sys::kernel::{self, KernelFacts};

use super::{Change, Status, When, B};
use crate::bootargs;
use crate::error::{sys, TuneError};

/// The kernel stage: PREEMPT_RT, nesting, boot arguments.
pub(super) fn items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let facts = kernel::facts(b.root()).map_err(sys("Reading kernel facts"))?;
    preempt_rt(b, host, &facts);
    nested(b, &facts);
    boot_args(b, host, &facts);
    Ok(())
}

/// PREEMPT_RT, when the profile requires it.
fn preempt_rt(b: &mut B<'_, '_>, host: &Host, facts: &KernelFacts) {
    let rt_now = if facts.preempt_rt {
        "PREEMPT_RT"
    } else {
        "not PREEMPT_RT"
    };
    let c = Change::report(
        "kernel",
        format!("kernel {}", facts.release),
        rt_now,
        "PREEMPT_RT",
        Status::Ok,
    );
    b.push(match (host.kernel.require_preempt_rt, facts.preempt_rt) {
        (_, true) => c,
        (true, false) => Change {
            status: Status::NeedsReboot,
            when: When::NextBoot,
            ..c
        }
        .note("install and boot a PREEMPT_RT kernel (e.g. Debian linux-image-rt-amd64)"),
        (false, false) => Change {
            status: Status::NotApplicable,
            ..c
        }
        .note("the profile does not require PREEMPT_RT (host.kernel.require_preempt_rt)"),
    });
}

/// The machine: a bare-metal host or itself a guest (nested VMs).
fn nested(b: &mut B<'_, '_>, facts: &KernelFacts) {
    let nested = facts.virtualization != kernel::Virtualization::None;
    let virt = format!("{:?}", facts.virtualization).to_lowercase();
    if nested {
        b.push(Change {
        when: When::NextBoot,
        ..Change::report("nested-virtualization", "hypervisor", format!("this host is itself a {virt} guest: its VMs are nested"), "bare-metal host", Status::Differs)
    }.note("nested virtualization multiplies VM-exit costs: a published case saw a CI build go from 23 to 89 minutes nested, and back on bare-metal KVM; latency results here are not real-time evidence"));
    } else {
        b.push(Change::report(
            "nested-virtualization",
            "hypervisor",
            "bare metal",
            "bare-metal host",
            Status::Ok,
        ));
    }
}

/// Each boot argument the profile needs, against `/proc/cmdline`.
fn boot_args(b: &mut B<'_, '_>, host: &Host, facts: &KernelFacts) {
    let vendor = kernel::cpu_vendor(b.root());
    for a in bootargs::boot_args(host, vendor.as_deref()) {
        let have = kernel::cmdline_value(&facts.cmdline, &a.key);
        let cur = match have {
            Some("") => a.key.clone(),
            Some(v) => format!("{}={v}", a.key),
            None => "(absent)".into(),
        };
        let st = if bootargs::satisfied(&facts.cmdline, &a) {
            Status::Ok
        } else {
            Status::NeedsReboot
        };
        b.push(
            Change::report(
                "boot-arg",
                format!("{} {}", b.root().display(kernel::CMDLINE), a.key),
                cur,
                a.to_string(),
                st,
            )
            .note(a.why.clone()),
        );
    }
}
