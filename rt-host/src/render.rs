//! Text output of plans, setups, reverts and status, for people (`--json` gives the data).

use std::fmt::Write;

use rt_sys::journal::RevertOutcome;

use crate::apply::{Outcome, RevertReport, SetupReport, StatusReport};
use crate::plan::{Change, Plan, Status, When};

fn line(out: &mut String, c: &Change) {
    let when = match (c.status, c.when) {
        (Status::Differs, When::Now) => "now",
        (Status::NeedsModuleReload, _) => "reload",
        (Status::Differs | Status::NeedsReboot, When::NextBoot) => "next boot",
        _ => "",
    };
    let _ = writeln!(
        out,
        "{:<22} {:<19} {:<9} {}: {} -> {}",
        c.item,
        status_word(c),
        when,
        c.target,
        c.current,
        c.desired
    );
    if let Some(n) = &c.note {
        if c.status != Status::Ok {
            let _ = writeln!(out, "{:<22} {:<19} {:<9}   ({n})", "", "", "");
        }
    }
    if let Some(f) = &c.fix {
        let _ = writeln!(out, "{:<22} {:<19} {:<9}   fix: {f}", "", "", "");
    }
}

/// The status column: an essential item that cannot be met says so.
fn status_word(c: &Change) -> String {
    if c.not_met() {
        format!("NOT MET ({})", c.status)
    } else {
        c.status.to_string()
    }
}

/// A plan as a table. `only_pending` keeps what setup would change.
pub fn plan(p: &Plan, only_pending: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "profile {:?}", p.profile);
    if let Some(v) = &p.vm {
        let _ = writeln!(
            out,
            "VM: pid {} ({}), vCPUs {:?}, {} emulator thread(s), {} I/O thread(s)",
            v.pid,
            v.found_by,
            v.vcpus.keys().collect::<Vec<_>>(),
            v.emulator.len(),
            v.iothreads.len()
        );
    }
    let _ = writeln!(
        out,
        "{:<22} {:<19} {:<9} TARGET: CURRENT -> DESIRED",
        "ITEM", "STATUS", "WHEN"
    );
    for c in &p.changes {
        if only_pending && !c.unmet_now() && c.status != Status::Warn && !c.not_met() {
            continue;
        }
        line(&mut out, c);
    }
    let s = p.summary();
    let _ = writeln!(
        out,
        "{} ok, {} differ, {} need a reboot, {} need a module reload, {} warning(s), {} not \
         permitted here, {} not applicable",
        s.ok,
        s.differs,
        s.needs_reboot,
        s.needs_module_reload,
        s.warn,
        s.not_permitted,
        s.not_applicable
    );
    if s.not_met > 0 {
        let _ = writeln!(
            out,
            "NOT MET: {} essential item(s) (vCPU affinity or real-time policy) cannot be applied",
            s.not_met
        );
    }
    out
}

/// A setup report.
pub fn setup(r: &SetupReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {:?}, journal {}",
        r.profile,
        r.journal.display()
    );
    if let Some(v) = &r.plan.vm {
        let _ = writeln!(out, "VM: pid {} ({})", v.pid, v.found_by);
    }
    for c in r
        .plan
        .changes
        .iter()
        .filter(|c| c.item == "vm" && c.status == Status::NotApplicable)
    {
        let _ = writeln!(out, "VM {}: not running, VM items skipped", c.target);
    }
    if let Some(c) = r
        .plan
        .changes
        .iter()
        .find(|c| c.item == "nested-virtualization" && c.status != Status::Ok)
    {
        let _ = writeln!(out, "warning: {}", c.note.clone().unwrap_or_default());
    }
    let n = r
        .done
        .iter()
        .filter(|d| d.outcome == Outcome::Applied)
        .count();
    let _ = writeln!(out, "{n} change(s) applied:");
    for d in &r.done {
        let tag = match d.outcome {
            Outcome::Applied => "changed",
            Outcome::NotPermitted => "not permitted here",
            Outcome::Vanished => "vanished (skipped)",
            Outcome::Skipped => "NOT TRIED",
        };
        let _ = writeln!(
            out,
            "  {:<19} {:<14} {}: {} -> {}",
            tag, d.change.item, d.change.target, d.change.current, d.change.desired
        );
    }
    if r.done.is_empty() {
        let _ = writeln!(out, "  (nothing to change)");
    }
    if !r.needs_reboot.is_empty() {
        let _ = writeln!(
            out,
            "{} item(s) need a reboot or module reload (see `rt-host boot-args {p}` and \
             `rt-host modprobe {p}`):",
            r.needs_reboot.len(),
            p = r.profile
        );
        for c in &r.needs_reboot {
            let _ = writeln!(out, "  {}: {} -> {}", c.target, c.current, c.desired);
        }
    }
    if !r.not_met.is_empty() {
        let _ = writeln!(
            out,
            "NOT MET: {} essential item(s) could not be applied, the VM is not real-time:",
            r.not_met.len()
        );
        for c in &r.not_met {
            let _ = writeln!(
                out,
                "  {} {}: {} -> {}",
                c.item, c.target, c.current, c.desired
            );
            if let Some(n) = &c.note {
                let _ = writeln!(out, "    cause: {n}");
            }
            if let Some(f) = &c.fix {
                let _ = writeln!(out, "    fix: {f}");
            }
        }
    }
    if r.verified() {
        let _ = writeln!(
            out,
            "verify: every runtime item is as wanted (refused optional ones excepted)"
        );
    } else {
        let _ = writeln!(out, "verify FAILED for {} item(s):", r.verify_failed.len());
        for c in &r.verify_failed {
            line(&mut out, c);
        }
    }
    out
}

/// A revert report.
pub fn revert(r: &RevertReport) -> String {
    let mut out = String::new();
    if r.entries.is_empty() {
        let _ = writeln!(
            out,
            "nothing to revert (no journal in {})",
            r.journal.display()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "reverting profile {:?} from {}{}",
        r.profile,
        r.journal.display(),
        if r.setup_complete {
            ""
        } else {
            " (setup had not finished: crash or kill)"
        }
    );
    for m in &r.overridden {
        let _ = writeln!(out, "  --force: reverting although {m}");
    }
    for x in &r.entries {
        let (tag, why) = match &x.outcome {
            RevertOutcome::Restored => ("restored", String::new()),
            RevertOutcome::Vanished => (
                "skipped",
                " (gone: the VM or thread has exited, or its tid was reused)".to_string(),
            ),
            RevertOutcome::Failed(e) => ("FAILED", format!(" ({e})")),
        };
        let _ = writeln!(
            out,
            "  {tag:<9} {} -> {}{why}",
            x.entry.target, x.entry.prior
        );
    }
    out
}

/// A status report.
pub fn status(r: &StatusReport) -> String {
    let mut out = String::new();
    let Some(p) = &r.profile else {
        let _ = writeln!(
            out,
            "nothing applied (no journal in {})",
            r.journal.display()
        );
        return out;
    };
    let live = r.entries.iter().filter(|e| e.in_effect).count();
    let _ = writeln!(
        out,
        "profile {p:?} applied{} ({} journal entries, {live} still in effect), journal {}",
        if r.complete {
            ""
        } else {
            " PARTIALLY (setup did not finish: run rt-host revert)"
        },
        r.entries.len(),
        r.journal.display()
    );
    for m in &r.mismatches {
        let _ = writeln!(out, "  warning: this journal does not belong here: {m}");
    }
    for e in &r.entries {
        let _ = writeln!(
            out,
            "  {:<10} {}: was {}, set {}, now {}",
            if e.in_effect { "in effect" } else { "changed" },
            e.entry.target,
            e.entry.prior,
            e.entry.applied,
            e.now
        );
    }
    for t in &r.refused {
        let _ = writeln!(out, "  not permitted here: {t}");
    }
    out
}
