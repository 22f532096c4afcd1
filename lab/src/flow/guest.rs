//! The guest stages of a flow, the same in the 2-CPU lab and in the host lab's inner
//! guest: before the host is tuned (CAN interfaces, `rt-guest check` and `tune`, with
//! `--baseline` a first probe), while it is tuned (self-test, probe, can-sim on the Kvaser
//! pair and on `vcan0`), and at the end (`rt-guest revert`, the runs copied to the share).

use std::time::Duration;

use anyhow::Result;

use crate::flow::prepare::FlowProfile;
use crate::flow::FlowOptions;
use crate::guest::{Agent, Watch};
use crate::qemu::tail;
use crate::scripts::{GuestSteps, GUEST_RUNS};
use crate::summary::Step;

/// The run directories the guest writes (under [`GUEST_RUNS`]): the Kavser pair, vcan0
/// and the untuned baseline.
pub const RUN_CAN: &str = "run-lab-can";
/// The vcan0 run.
pub const RUN_VCAN: &str = "run-lab-vcan";
/// The untuned probe (`--baseline`).
pub const RUN_BASE: &str = "run-lab-baseline";

/// What the guest stages run.
#[derive(Debug, Clone)]
pub struct GuestPlan<'a> {
    /// The tools' command lines.
    pub g: GuestSteps<'a>,
    /// The profile's CAN section.
    pub can: &'a profiles::Can,
    /// Probe before the host is tuned too.
    pub baseline: bool,
}

impl<'a> GuestPlan<'a> {
    /// The guest stages of profile `p` with the durations and `--baseline` of `opts`.
    pub fn new(p: &'a FlowProfile, opts: &'a FlowOptions) -> GuestPlan<'a> {
        GuestPlan {
            g: GuestSteps {
                profile: &p.in_image,
                probe_duration: &opts.probe_duration,
                can_duration: &opts.can_duration,
            },
            can: &p.can,
            baseline: opts.baseline,
        }
    }
}

/// Runs guest steps through one agent, recording each.
pub struct GuestRun<'a> {
    /// The agent.
    pub agent: &'a mut Agent,
    /// The machine it runs on.
    pub vm: &'a mut dyn Watch,
    /// Steps run by this stage.
    pub steps: Vec<Step>,
    /// Steps whose exit code was not acceptable (the flow goes on, then fails).
    pub failures: &'a mut Vec<String>,
}

impl GuestRun<'_> {
    /// Run `script`; an exit code outside `ok_rcs` is recorded as a failure (the flow goes
    /// on to bring out what exists and revert); a dead VM or a timeout is an error.
    pub fn step(
        &mut self,
        name: &str,
        script: &str,
        timeout: Duration,
        ok_rcs: &[i32],
    ) -> Result<()> {
        crate::flow::check_interrupt()?;
        eprintln!("lab: guest: {name}");
        let out = self.agent.run(self.vm, script, timeout)?;
        let ok = ok_rcs.contains(&out.rc);
        let note = tail(&out.output, 15);
        if !ok {
            eprintln!("lab: guest: {name} exited {}:\n{note}", out.rc);
            self.failures.push(format!(
                "guest `{name}` exited {}: {}",
                out.rc,
                tail(&out.output, 8)
            ));
        }
        self.steps.push(Step {
            name: format!("guest: {name}"),
            rc: Some(out.rc),
            secs: out.secs,
            ok,
            note,
        });
        Ok(())
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn run_path(name: &str) -> String {
    format!("{GUEST_RUNS}/{name}")
}

/// How long a tool running for `duration` (humantime) may take in the guest.
fn timeout_for(duration: &str) -> Duration {
    humantime::parse_duration(duration).unwrap_or(Duration::from_secs(30)) + 3 * MINUTE / 2
}

/// Before the host is tuned: interfaces up, `rt-guest check`, `rt-guest tune`, and the
/// baseline probe when asked.
pub fn untuned(gr: &mut GuestRun<'_>, plan: &GuestPlan<'_>) -> Result<()> {
    let can = plan.can;
    gr.step(
        "interfaces up",
        &plan.g.interfaces(&can.tx, &can.rx, can.bitrate),
        MINUTE,
        &[0],
    )?;
    if !gr.failures.is_empty() {
        return Ok(());
    }
    gr.step("rt-guest check", &plan.g.check(), MINUTE, &[0, 1])?;
    let tune = format!("rt-guest tune {}", plan.g.profile);
    gr.step("rt-guest tune", &tune, MINUTE, &[0, 1])?;
    if plan.baseline {
        let probe = plan.g.probe(&run_path(RUN_BASE));
        let timeout = timeout_for(plan.g.probe_duration);
        gr.step("rt-guest probe (host untuned)", &probe, timeout, &[0, 1])?;
    }
    Ok(())
}

/// What runs on the host around the tuned probe (the 2-CPU lab: `rt-host trace`, see
/// [`crate::flow::trace`]).
pub trait AroundProbe {
    /// Before the probe starts.
    fn before(&mut self, gr: &mut GuestRun<'_>) -> Result<()>;
    /// After it ended (also when it failed).
    fn after(&mut self, gr: &mut GuestRun<'_>) -> Result<()>;
}

/// Nothing around the probe.
pub struct Nothing;

impl AroundProbe for Nothing {
    fn before(&mut self, _: &mut GuestRun<'_>) -> Result<()> {
        Ok(())
    }
    fn after(&mut self, _: &mut GuestRun<'_>) -> Result<()> {
        Ok(())
    }
}

/// While the host is tuned: self-test, probe, can-sim on the card pair and on vcan0
/// (skipped when an earlier guest step failed).
pub fn tuned(gr: &mut GuestRun<'_>, plan: &GuestPlan<'_>) -> Result<()> {
    tuned_around(gr, plan, &mut Nothing)
}

/// [`tuned`], with `around` run before and after the probe.
pub fn tuned_around(
    gr: &mut GuestRun<'_>,
    plan: &GuestPlan<'_>,
    around: &mut dyn AroundProbe,
) -> Result<()> {
    if !gr.failures.is_empty() {
        return Ok(());
    }
    let (can, run_can) = (plan.can, run_path(RUN_CAN));
    // Exit 1: the self-test did not pass; the run records it and the report marks the
    // evidence invalid, like a failed requirement.
    let selftest = format!("rt-guest selftest --out {run_can}");
    gr.step("rt-guest selftest", &selftest, 2 * MINUTE, &[0, 1])?;
    let probe = plan.g.probe(&run_can);
    let probe_timeout = timeout_for(plan.g.probe_duration);
    around.before(gr)?;
    let probed = gr.step("rt-guest probe", &probe, probe_timeout, &[0, 1]);
    around.after(gr)?;
    probed?;
    let can_timeout = timeout_for(plan.g.can_duration);
    let name = format!("can-sim run {}->{}", can.tx, can.rx);
    let script = plan.g.can_run(&can.tx, &can.rx, &run_can);
    gr.step(&name, &script, can_timeout, &[0, 1])?;
    let script = plan.g.can_run("vcan0", "vcan0", &run_path(RUN_VCAN));
    gr.step("can-sim run vcan0", &script, can_timeout, &[0, 1])
}

/// At the end: `rt-guest revert`, and the runs and `dmesg` copied to the share.
pub fn finish(gr: &mut GuestRun<'_>, plan: &GuestPlan<'_>) -> Result<()> {
    gr.step("rt-guest revert", "rt-guest revert", MINUTE, &[0, 1])?;
    gr.step("copy runs out", &plan.g.copy_out(), MINUTE, &[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_leave_room_after_the_duration() {
        assert_eq!(timeout_for("15s"), Duration::from_secs(105));
        assert_eq!(timeout_for("nonsense"), Duration::from_secs(120));
        assert_eq!(run_path(RUN_CAN), "/tmp/runs/run-lab-can");
    }
}
