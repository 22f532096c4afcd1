//! The whole flow in the 2-CPU lab VM, as a sequence of named stages: prepare (profile,
//! binaries, kernel, image), boot, the guest before the host is tuned, `rt-host setup`
//! and `check` on this machine, the guest while tuned, the guest's end, `rt-host revert`,
//! the runs brought out and cross-checked, the evidence exported. Cleanup (host revert,
//! QEMU stop, temp files) runs on every path, including errors and SIGINT/SIGTERM.
//! The host lab ([`crate::hostlab`]) runs the same guest and report stages nested.

pub mod boot;
pub mod collect;
pub mod guest;
pub mod host;
pub mod prepare;
pub mod trace;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::Purpose;
use crate::guest::{Agent, GuestInfo};
use crate::interrupted;
use crate::layout::Layout;
use crate::qemu::{Vm, VmConfig};
use crate::sched::vcpu_samples;
pub use crate::sched::VcpuSample;
pub use crate::summary::{CanCheck, Step, Summary};
use guest::{GuestPlan, GuestRun};
use host::{Local, RtHost};
use prepare::FlowProfile;

/// Options of `rtvirt-lab flow` (and `boot`).
#[derive(Debug, Clone)]
pub struct FlowOptions {
    /// Profile name (bundled) or path.
    pub profile: String,
    /// Kernel to boot instead of the cached Debian RT kernel.
    pub kernel: Option<PathBuf>,
    /// Initramfs to boot instead of building one (must contain the lab `/init` agent).
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line.
    pub append: String,
    /// How long the guest may take to come up.
    pub boot_timeout: Duration,
    /// How long to wait for the kernel to start under KVM before falling back to TCG.
    pub kvm_probe: Duration,
    /// Probe duration in the guest (humantime).
    pub probe_duration: String,
    /// Each CAN run's duration (humantime).
    pub can_duration: String,
    /// Output directory (default `lab/out/flow-UTC`).
    pub out: Option<PathBuf>,
    /// Go on when a contract binary is missing (the flow still fails at the end).
    pub keep_going: bool,
    /// Also probe before the host is tuned, for an A/B comparison in one run.
    pub baseline: bool,
}

/// An error when SIGINT or SIGTERM arrived.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("Interrupted (SIGINT/SIGTERM)");
    }
    Ok(())
}

/// The output directory of a run: `--out` (created) or a new `lab/out/KIND-UTC`.
pub fn out_dir(layout: &Layout, given: Option<&Path>, kind: &str) -> Result<PathBuf> {
    let out = match given {
        Some(o) => {
            fs::create_dir_all(o).with_context(|| format!("Creating {}", o.display()))?;
            o.to_path_buf()
        }
        None => layout.new_out_dir(kind)?,
    };
    Ok(out.canonicalize().unwrap_or(out))
}

/// Write `OUT/summary.json`.
pub fn write_summary(summary: &Summary) -> Result<()> {
    let path = summary.out.join("summary.json");
    fs::write(&path, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("Writing {}", path.display()))
}

/// Remove the temporary files of a flow (`qmp.sock`, `share/cmd`, ...).
pub fn remove_temp(temp: &mut Vec<PathBuf>) {
    for t in temp.drain(..) {
        let _ = if t.is_dir() {
            fs::remove_dir_all(&t)
        } else {
            fs::remove_file(&t)
        };
    }
}

struct State {
    layout: Layout,
    out: PathBuf,
    share: PathBuf,
    vm: Option<Vm>,
    /// Set once `rt-host setup` was attempted: cleanup reverts.
    tuned: Option<RtHost>,
    summary: Summary,
    temp: Vec<PathBuf>,
}

/// Run the flow; always returns a summary (written to `OUT/summary.json`), with `error`
/// set when it failed.
pub fn run(opts: &FlowOptions) -> Result<Summary> {
    let start = Instant::now();
    let layout = Layout::from_env()?;
    let out = out_dir(&layout, opts.out.as_deref(), "flow")?;
    eprintln!("lab: flow output in {}", out.display());
    let mut st = State {
        share: out.join("share"),
        out: out.clone(),
        layout,
        vm: None,
        tuned: None,
        summary: Summary {
            out,
            profile: opts.profile.clone(),
            ..Summary::default()
        },
        temp: Vec::new(),
    };
    let result = stages(&mut st, opts);
    if let Err(e) = &result {
        st.summary.error = Some(format!("{e:#}"));
        eprintln!("lab: error: {e:#}");
    }
    cleanup(&mut st);
    st.summary.secs = start.elapsed().as_secs_f64();
    write_summary(&st.summary)?;
    Ok(std::mem::take(&mut st.summary))
}

impl Drop for State {
    /// A panic in a stage still reverts the host and stops QEMU (cleanup is idempotent).
    fn drop(&mut self) {
        cleanup(self);
    }
}

fn cleanup(st: &mut State) {
    // Revert the host before anything else: the vCPU must not stay FIFO.
    if st.tuned.is_some() {
        if let Err(e) = revert_host(st) {
            st.summary
                .cleanup_errors
                .push(format!("rt-host revert: {e:#}"));
        }
    }
    if let Some(mut vm) = st.vm.take() {
        vm.stop();
        if vm.alive() {
            st.summary
                .cleanup_errors
                .push(format!("QEMU pid {} did not stop", vm.pid));
        }
    }
    remove_temp(&mut st.temp);
}

/// `rt-host revert`, then the vCPU threads sampled once more.
fn revert_host(st: &mut State) -> Result<()> {
    let Some(rt_host) = st.tuned.take() else {
        return Ok(());
    };
    let result = rt_host.revert(&mut Local, &mut st.summary.steps);
    if let Some(vm) = st.vm.as_mut().filter(|v| v.pid > 0) {
        if vm.alive() {
            st.summary.vcpus_after = vcpu_samples(vm.pid, vm.accel.thread_suffix())?;
        }
    }
    result
}

/// The flow's stages in order.
fn stages(st: &mut State, opts: &FlowOptions) -> Result<()> {
    let p = prepare::profile(&opts.profile)?;
    let bins = prepare::host_bins(&st.layout);
    let mut missing = bins.missing.clone();
    let (config, _kernel) = stage_image(st, opts, &p, &mut missing)?;
    st.summary.missing = missing.clone();
    if !missing.is_empty() {
        let msg = format!("Contract commands missing: {}", missing.join("; "));
        if !opts.keep_going {
            bail!("{msg}");
        }
        eprintln!("lab: warning: {msg} (--keep-going: running what exists, the flow will fail)");
    }
    let mut agent = stage_boot(st, opts, &config, &p.can)?;
    let plan = GuestPlan::new(&p, opts);
    let mut failures = Vec::new();
    guest_stage(st, &mut agent, &mut failures, |gr| {
        guest::untuned(gr, &plan)
    })?;
    let mut around = None;
    if let (Some(bin), true) = (&bins.rt_host, failures.is_empty()) {
        stage_tune(st, opts, bin)?;
        around = Some(trace::TraceAround::new(trace_spec(st, opts, &p, bin)?));
    }
    // Dropped on every way out of here (an error, a panic): the trace stops before
    // cleanup reverts the host.
    guest_stage(st, &mut agent, &mut failures, |gr| match around.as_mut() {
        Some(a) => guest::tuned_around(gr, &plan, a),
        None => guest::tuned(gr, &plan),
    })?;
    let host_run = around.and_then(|a| a.run);
    guest_stage(st, &mut agent, &mut failures, |gr| guest::finish(gr, &plan))?;
    if let Some(vm) = st.vm.as_mut() {
        st.summary.vcpus_tuned_end = vcpu_samples(vm.pid, vm.accel.thread_suffix())?;
    }
    revert_host(st)?;
    if let Some(vm) = st.vm.as_mut() {
        let _ = agent.poweroff(vm);
        vm.stop();
    }
    let runs = stage_collect(st, &p, host_run.as_deref())?;
    let evidence = collect::Evidence {
        validation: bins.validation.as_deref(),
        runs: &runs,
        guest_failures: &failures,
        missing: &missing,
    };
    collect::report(&evidence, &st.out, &mut st.summary)
}

/// Kernel and image, and the VM's configuration.
fn stage_image(
    st: &mut State,
    opts: &FlowOptions,
    p: &FlowProfile,
    missing: &mut Vec<String>,
) -> Result<(VmConfig, crate::layout::Kernel)> {
    let kernel = prepare::kernel(&st.layout, opts.kernel.as_deref())?;
    let (initrd, built) = prepare::guest_image(
        &st.layout,
        &kernel,
        opts.initrd.as_deref(),
        p,
        &st.out,
        &mut st.summary.steps,
        missing,
    )?;
    if built {
        st.temp.push(initrd.clone());
    }
    st.summary.kernel = kernel.vmlinuz.clone();
    st.summary.initrd = initrd.clone();
    let config = vm_config(
        st,
        &p.loaded.profile,
        &kernel.vmlinuz,
        &initrd,
        &opts.append,
    )?;
    Ok((config, kernel))
}

/// Boot until the guest is ready; check its modules and CAN interfaces; sample the vCPUs.
fn stage_boot(
    st: &mut State,
    opts: &FlowOptions,
    config: &VmConfig,
    can: &profiles::Can,
) -> Result<Agent> {
    check_interrupt()?;
    fs::create_dir_all(&st.share)?;
    st.temp.extend([
        st.share.join("cmd"),
        st.share.join("ready"),
        st.share.join(trace::CLOCK_DIR),
        st.out.join("qmp.sock"),
    ]);
    let (vm, reason, info, secs) = boot::boot_chosen(
        config,
        Purpose::Guest,
        opts.kvm_probe,
        opts.boot_timeout,
        &mut st.temp,
    )?;
    st.summary.accel = vm.accel.to_string();
    st.summary.accel_reason = reason;
    st.summary.vm_definition = vm.launch.clone();
    st.summary.qemu_pid = Some(vm.pid);
    let vm = st.vm.insert(vm);
    eprintln!(
        "lab: guest up in {secs:.1}s: {} {} realtime={} net={:?}",
        info.uname_r, info.uname_v, info.realtime, info.net
    );
    st.summary.steps.push(Step {
        name: format!("boot ({})", vm.accel),
        rc: Some(0),
        secs,
        ok: true,
        note: format!("{} {}", info.uname_r, info.uname_v),
    });
    st.summary.guest = Some(info.clone());
    guest_has(&info, can)?;
    st.summary.vcpus_before = vcpu_samples(vm.pid, vm.accel.thread_suffix())?;
    Ok(Agent::new(&st.share))
}

/// The guest came up with its modules and the profile's CAN interfaces.
pub fn guest_has(info: &GuestInfo, can: &profiles::Can) -> Result<()> {
    if !info.modules_failed.is_empty() {
        bail!(
            "Modules failed to load in the guest: {}",
            info.modules_failed.join(" ")
        );
    }
    for iface in [&can.tx, &can.rx] {
        if !iface.starts_with("vcan") && !info.net.contains(iface) {
            bail!(
                "The guest has no {iface} (interfaces: {}); is QEMU's kvaser_pci there?",
                info.net.join(" ")
            );
        }
    }
    Ok(())
}

/// Run one guest stage through the agent, keeping its steps and failures.
fn guest_stage(
    st: &mut State,
    agent: &mut Agent,
    failures: &mut Vec<String>,
    stage: impl FnOnce(&mut GuestRun<'_>) -> Result<()>,
) -> Result<()> {
    let vm = st.vm.as_mut().context("VM gone")?;
    let mut gr = GuestRun {
        agent,
        vm,
        steps: Vec::new(),
        failures,
    };
    let r = stage(&mut gr);
    st.summary.steps.append(&mut gr.steps);
    r
}

/// On this machine, after the guest kernel booted (DESIGN.md, the lab's first trap):
/// `rt-host setup` and `check` for the VM, then the vCPUs sampled.
fn stage_tune(st: &mut State, opts: &FlowOptions, rt_host: &Path) -> Result<()> {
    check_interrupt()?;
    let vm = st.vm.as_ref().context("VM gone")?;
    let (pid, suffix) = (vm.pid, vm.accel.thread_suffix());
    let r = RtHost {
        bin: rt_host.to_string_lossy().into_owned(),
        profile: opts.profile.clone(),
        journal: st.out.join("journal").to_string_lossy().into_owned(),
        vm_pid: Some(pid),
        out: st.out.clone(),
    };
    st.tuned = Some(r.clone());
    r.setup(&mut Local, &mut st.summary.steps)?;
    st.summary.vcpus_tuned = vcpu_samples(pid, suffix)?;
    r.check(&mut Local, "host-check.json", &mut st.summary.steps)
}

/// `rt-host trace` of the VM around the tuned probe: every switch on the profile's
/// realtime CPUs (where the RT vCPU runs), the clock exchange on the share.
fn trace_spec(
    st: &State,
    opts: &FlowOptions,
    p: &FlowProfile,
    rt_host: &Path,
) -> Result<trace::TraceSpec> {
    let vm = st.vm.as_ref().context("VM gone")?;
    let probe = humantime::parse_duration(&opts.probe_duration)
        .with_context(|| format!("--probe-duration {:?}", opts.probe_duration))?;
    Ok(trace::TraceSpec {
        bin: rt_host.to_path_buf(),
        profile: opts.profile.clone(),
        vm_pid: vm.pid,
        cpus: p
            .loaded
            .profile
            .host
            .as_ref()
            .map(|h| h.realtime_cpus.to_string())
            .filter(|c| !c.is_empty()),
        probe,
        share: st.share.clone(),
        out: st.out.join(trace::RUN_HOST),
        log: st.out.join("host-trace.log"),
    })
}

/// Runs out of the share, cross-checked, with the lab's notes attached; the host trace's
/// run (when it was written) joins them in `OUT/runs`.
fn stage_collect(st: &mut State, p: &FlowProfile, host_run: Option<&Path>) -> Result<Vec<PathBuf>> {
    let runs_dir = collect::bring_out(&st.share, &st.out)?;
    let mut runs = collect::cross_check(&runs_dir, &p.can, &mut st.summary);
    let attachment = crate::check::Attachment {
        loaded: &p.loaded,
        host_check: collect::host_check(&st.out)?,
        notes: collect::lab_notes(&st.summary, "this host"),
    };
    crate::check::attach(&runs, &attachment)?;
    if let Some(h) = host_run {
        let dest = collect::bring_in(h, &runs_dir)?;
        // Apart from the guest's runs: it carries this host's kernel facts, not the guest's.
        crate::check::attach(std::slice::from_ref(&dest), &attachment)?;
        runs.push(dest);
        st.summary.runs = runs.clone();
    }
    Ok(runs)
}

/// The VM of the flow: the profile's VM (or the bundled `lab` profile's, when it defines
/// none) from rt-host's QEMU definition ([`crate::qemu::Definition`]), with the lab's
/// kernel, image, share and sockets.
fn vm_config(
    st: &State,
    profile: &profiles::Profile,
    kernel: &Path,
    initrd: &Path,
    append: &str,
) -> Result<VmConfig> {
    let qemu = crate::initramfs::find_program("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found: run lab/setup.sh")?;
    let d = crate::qemu::Definition::of(profile)?;
    Ok(VmConfig::of_definition(
        d,
        qemu,
        (kernel, initrd, append),
        &st.out,
    ))
}
