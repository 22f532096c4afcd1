//! The whole flow in the lab VM: boot, tune the host, run the guest tools, bring the run
//! directories out, revert, export the evidence. Cleanup (host revert, QEMU stop, temp
//! files) runs on every path, including errors and SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::guest::{Agent, GuestInfo};
use crate::image::{self, GUEST_PROFILES, GUEST_SHARE};
use crate::interrupted;
use crate::layout::{Kernel, Layout};
use crate::qemu::{kvm_device_usable, Accel, Vm, VmConfig};
use crate::sched::vcpu_samples;
pub use crate::sched::VcpuSample;

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

/// One step of the flow.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Step {
    /// What ran.
    pub name: String,
    /// Exit code (None when it could not run).
    pub rc: Option<i32>,
    /// Wall seconds.
    pub secs: f64,
    /// Whether the flow counts it as passed.
    pub ok: bool,
    /// Its output (tail) or why it could not run.
    pub note: String,
}

/// One CAN cross-check: can-sim's counts against candump in the guest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CanCheck {
    /// `can0->can1` or `vcan0`.
    pub link: String,
    /// Receiving interface.
    pub rx: String,
    /// Run directory (on the host).
    pub run: PathBuf,
    /// Frames candump logged on `rx` (markers excluded).
    pub candump_frames: Option<u64>,
    /// can-sim totals over all messages.
    pub sent: Option<u64>,
    /// Received.
    pub received: Option<u64>,
    /// Lost.
    pub lost: Option<u64>,
}

/// `summary.json`: what the flow did and saw, for people and for the tests.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Output directory.
    pub out: PathBuf,
    /// Profile used.
    pub profile: String,
    /// Accelerator.
    pub accel: String,
    /// Why this accelerator.
    pub accel_reason: String,
    /// QEMU's pid.
    pub qemu_pid: Option<u32>,
    /// Kernel booted.
    pub kernel: PathBuf,
    /// Initramfs booted.
    pub initrd: PathBuf,
    /// What the guest reported at boot.
    pub guest: Option<GuestInfo>,
    /// vCPU threads before `rt-host setup`.
    pub vcpus_before: Vec<VcpuSample>,
    /// vCPU threads while tuned (right after setup).
    pub vcpus_tuned: Vec<VcpuSample>,
    /// vCPU threads while tuned, after the guest steps (before revert).
    pub vcpus_tuned_end: Vec<VcpuSample>,
    /// vCPU threads after `rt-host revert`.
    pub vcpus_after: Vec<VcpuSample>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Run directories brought out of the guest.
    pub runs: Vec<PathBuf>,
    /// CAN cross-checks.
    pub can: Vec<CanCheck>,
    /// Report files by format.
    pub reports: BTreeMap<String, PathBuf>,
    /// Exit code of `validation report export` (1: a requirement failed).
    pub report_rc: Option<i32>,
    /// Probe results per condition (`host untuned` with --baseline, `host tuned`).
    pub probe: Vec<crate::check::ProbeStats>,
    /// Contract binaries that were missing.
    pub missing: Vec<String>,
    /// The error that ended the flow, if any.
    pub error: Option<String>,
    /// Errors during cleanup.
    pub cleanup_errors: Vec<String>,
    /// Wall seconds of the whole flow.
    pub secs: f64,
}

impl Summary {
    /// Whether the flow passed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.cleanup_errors.is_empty() && self.missing.is_empty()
    }
}

/// The host binaries the flow runs.
#[derive(Debug, Clone)]
struct HostBins {
    rt_host: Option<PathBuf>,
    validation: Option<PathBuf>,
}

/// Where built binaries are looked for: `RTVIRT_LAB_BIN_DIR`, next to this executable,
/// `$CARGO_TARGET_DIR/release`, `ROOT/target/release`, then `PATH`.
pub fn find_host_binary(layout: &Layout, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("RTVIRT_LAB_BIN_DIR") {
        dirs.push(d.into());
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d.clone());
        // Test binaries live in target/release/deps.
        if let Some(p) = d.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("release"));
    }
    dirs.push(layout.root.join("target/release"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| image::find_program(name))
}

struct State {
    layout: Layout,
    out: PathBuf,
    share: PathBuf,
    journal: PathBuf,
    vm: Option<Vm>,
    host_setup_attempted: bool,
    rt_host: Option<PathBuf>,
    summary: Summary,
    temp: Vec<PathBuf>,
}

/// Run the flow; always returns a summary (written to `OUT/summary.json`), with `error`
/// set when it failed.
pub fn run(opts: &FlowOptions) -> Result<Summary> {
    let start = Instant::now();
    let layout = Layout::from_env()?;
    let out = match &opts.out {
        Some(o) => {
            fs::create_dir_all(o).with_context(|| format!("Creating {}", o.display()))?;
            o.clone()
        }
        None => layout.new_out_dir("flow")?,
    };
    let out = out.canonicalize().unwrap_or(out);
    eprintln!("lab: flow output in {}", out.display());
    let mut st = State {
        share: out.join("share"),
        journal: out.join("journal"),
        out: out.clone(),
        layout,
        vm: None,
        host_setup_attempted: false,
        rt_host: None,
        summary: Summary {
            out: out.clone(),
            profile: opts.profile.clone(),
            ..Summary::default()
        },
        temp: Vec::new(),
    };
    let result = steps(&mut st, opts);
    if let Err(e) = &result {
        st.summary.error = Some(format!("{e:#}"));
        eprintln!("lab: error: {e:#}");
    }
    cleanup(&mut st);
    st.summary.secs = start.elapsed().as_secs_f64();
    let path = st.out.join("summary.json");
    fs::write(&path, serde_json::to_string_pretty(&st.summary)?)
        .with_context(|| format!("Writing {}", path.display()))?;
    Ok(std::mem::take(&mut st.summary))
}

impl Drop for State {
    /// A panic in a step still reverts the host and stops QEMU (cleanup is idempotent).
    fn drop(&mut self) {
        cleanup(self);
    }
}

fn cleanup(st: &mut State) {
    // Revert the host before anything else: the vCPU must not stay FIFO.
    if st.host_setup_attempted {
        st.host_setup_attempted = false;
        match revert_host(st) {
            Ok(()) => {}
            Err(e) => st
                .summary
                .cleanup_errors
                .push(format!("rt-host revert: {e:#}")),
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
    for t in st.temp.drain(..) {
        let _ = if t.is_dir() {
            fs::remove_dir_all(&t)
        } else {
            fs::remove_file(&t)
        };
    }
}

fn revert_host(st: &mut State) -> Result<()> {
    let rt_host = st.rt_host.clone().context("rt-host is missing")?;
    let t = Instant::now();
    let journal = st.journal.to_string_lossy().into_owned();
    let out = host_cmd(&rt_host, &["revert", "--journal-dir", &journal, "--json"])?;
    fs::write(st.out.join("host-revert.json"), &out.stdout)?;
    let ok = out.rc == Some(0);
    st.summary.steps.push(Step {
        name: "host: rt-host revert".into(),
        rc: out.rc,
        secs: t.elapsed().as_secs_f64(),
        ok,
        note: crate::qemu::tail(&out.text(), 10),
    });
    if let Some(vm) = st.vm.as_mut() {
        if vm.alive() {
            let suffix = vm.accel.thread_suffix();
            st.summary.vcpus_after = vcpu_samples(vm.pid, suffix)?;
        }
    }
    if !ok {
        bail!(
            "rt-host revert exited {:?}: {}",
            out.rc,
            crate::qemu::tail(&out.text(), 10)
        );
    }
    Ok(())
}

struct CmdOut {
    rc: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl CmdOut {
    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Run a host command in its own process group (a terminal Ctrl-C must not cut a revert
/// in half; the flow notices the signal itself).
fn host_cmd(bin: &Path, args: &[&str]) -> Result<CmdOut> {
    use std::os::unix::process::CommandExt;
    eprintln!("lab: host: {} {}", bin.display(), args.join(" "));
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .with_context(|| format!("Running {}", bin.display()))?;
    Ok(CmdOut {
        rc: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("Interrupted (SIGINT/SIGTERM)");
    }
    Ok(())
}

/// Boot the VM: KVM when it really boots (or forced), TCG otherwise.
pub fn boot(config: &VmConfig, forced: Option<Accel>, kvm_probe: Duration) -> Result<(Vm, String)> {
    let (accel, reason) = match forced {
        Some(a) => (a, format!("RTVIRT_LAB_ACCEL={a}")),
        None if !kvm_device_usable() => {
            let dev = rt_sys::SysRoot::live().display(rt_sys::kernel::KVM_DEVICE);
            (Accel::Tcg, format!("{dev} cannot be opened"))
        }
        None => {
            let mut vm = Vm::start(config, Accel::Kvm)?;
            let deadline = Instant::now() + kvm_probe;
            let mut why = None;
            while Instant::now() < deadline && why.is_none() {
                check_interrupt()?;
                if vm.console().contains("Linux version") {
                    widen_vcpus(&mut vm)?;
                    return Ok((
                        vm,
                        format!("KVM booted the kernel within {}s", kvm_probe.as_secs()),
                    ));
                }
                if !vm.alive() {
                    let log = fs::read_to_string(&vm.config.qemu_log).unwrap_or_default();
                    let first = log.lines().next().unwrap_or("no message").to_string();
                    why = Some(format!("KVM failed: QEMU exited at once ({first})"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let why = why.unwrap_or_else(|| {
                format!(
                    "KVM did not start the kernel in {}s (console ends: {:?})",
                    kvm_probe.as_secs(),
                    vm.console_tail(1)
                )
            });
            vm.stop();
            eprintln!("lab: {why}; using TCG");
            (Accel::Tcg, why)
        }
    };
    let mut vm = Vm::start(config, accel)?;
    widen_vcpus(&mut vm)?;
    Ok((vm, reason))
}

/// Boot (see [`boot`]) and wait until the guest reports `ready`. When KVM was chosen by
/// detection (not forced) and started the kernel but the guest does not come up in
/// `boot_timeout`, that VM is stopped (its console kept as `console-kvm.log`) and the
/// guest booted again under TCG. On an error the VM is stopped (dropped).
pub fn boot_until_ready(
    config: &VmConfig,
    forced: Option<Accel>,
    kvm_probe: Duration,
    boot_timeout: Duration,
) -> Result<(Vm, String, GuestInfo)> {
    let (mut vm, reason) = boot(config, forced, kvm_probe)?;
    let agent = Agent::new(&config.share);
    match agent.wait_ready(&mut vm, boot_timeout) {
        Ok(info) => Ok((vm, reason, info)),
        Err(e) if forced.is_none() && vm.accel == Accel::Kvm && !interrupted() => {
            let why = format!("{e:#}");
            let why = why.lines().next().unwrap_or("").to_string();
            eprintln!("lab: the guest did not come up under KVM ({why}); booting it under TCG");
            vm.stop();
            drop(vm);
            let _ = fs::rename(
                &config.console,
                config.console.with_file_name("console-kvm.log"),
            );
            let _ = fs::remove_file(config.share.join("ready"));
            let mut vm = Vm::start(config, Accel::Tcg)?;
            widen_vcpus(&mut vm)?;
            let info = agent.wait_ready(&mut vm, boot_timeout)?;
            Ok((
                vm,
                format!("KVM started the kernel but the guest did not come up ({why})"),
                info,
            ))
        }
        Err(e) => Err(e),
    }
}

/// The VM of the flow: 2 vCPUs; the name, memory and housekeeping CPUs follow the
/// profile's `host` section where it has one (`lab`, 512 MiB and CPU 0 otherwise).
fn vm_config(
    st: &State,
    profile: &profiles::Profile,
    kernel: &Path,
    initrd: &Path,
    append: &str,
) -> Result<VmConfig> {
    let qemu = image::find_program("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found: run lab/setup.sh")?;
    let host = profile.host.as_ref();
    let vm = host.and_then(|h| h.vm.as_ref());
    let housekeeping = host
        .map(|h| h.housekeeping_cpus.to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "0".into());
    Ok(VmConfig {
        qemu,
        name: vm
            .and_then(|v| v.qemu_name.clone())
            .unwrap_or_else(|| "lab".into()),
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        append: append.to_string(),
        smp: 2,
        mem_mib: vm
            .and_then(|v| v.memory_mib)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(512),
        share: st.share.clone(),
        qmp: st.out.join("qmp.sock"),
        console: st.out.join("console.log"),
        qemu_log: st.out.join("qemu.log"),
        housekeeping,
    })
}

/// After QEMU started: let the vCPU threads use every CPU we may use (the main loop and
/// I/O threads stay on the housekeeping CPU they inherited).
fn widen_vcpus(vm: &mut Vm) -> Result<()> {
    let all = rt_sys::sched::get_affinity(0).context("Reading our own CPU affinity")?;
    for (idx, tid) in vm.vcpu_threads()? {
        rt_sys::sched::set_affinity(tid, &all)
            .with_context(|| format!("Setting the affinity of vCPU {idx} (thread {tid})"))?;
    }
    Ok(())
}

fn steps(st: &mut State, opts: &FlowOptions) -> Result<()> {
    let layout = st.layout.clone();
    let loaded = profiles::load(&opts.profile)
        .with_context(|| format!("Loading profile {:?}", opts.profile))?;
    let profile = loaded.profile.clone();
    let can = profile
        .can
        .clone()
        .context("The profile has no `can` section: the flow needs one")?;
    // In the guest, a profile file is found under its file name in the image.
    let guest_profile = if Path::new(&opts.profile).is_file() {
        let name = Path::new(&opts.profile)
            .file_name()
            .context("profile path")?
            .to_string_lossy()
            .into_owned();
        format!("{GUEST_PROFILES}/{name}")
    } else {
        opts.profile.clone()
    };

    // Preflight: the contract binaries.
    let bins = HostBins {
        rt_host: find_host_binary(&layout, "rt-host"),
        validation: find_host_binary(&layout, "validation"),
    };
    st.rt_host = bins.rt_host.clone();
    let mut missing: Vec<String> = Vec::new();
    if bins.rt_host.is_none() {
        missing.push("rt-host (host binary: cargo build --release -p rt-host)".into());
    }
    if bins.validation.is_none() {
        missing.push("validation (host binary: cargo build --release -p validation)".into());
    }

    // Kernel and image.
    let kernel = match &opts.kernel {
        Some(k) => Kernel::from_path(k)?,
        None => Kernel::from_cache(&layout.cache)?,
    };
    let initrd = match &opts.initrd {
        Some(i) => i.clone(),
        None => {
            let t = Instant::now();
            let extra = Path::new(&opts.profile)
                .is_file()
                .then(|| Path::new(&opts.profile));
            let img = image::build(&layout, &kernel, &st.out, extra, true)?;
            for m in &img.missing_binaries {
                missing.push(format!(
                    "{m} (guest binary: the crate builds no `{m}` executable yet)"
                ));
            }
            st.summary.steps.push(Step {
                name: "host: build guest image".into(),
                rc: Some(0),
                secs: t.elapsed().as_secs_f64(),
                ok: true,
                note: format!(
                    "modules {}; binaries {:?}; tools {:?}",
                    img.modules.join(" "),
                    img.binaries,
                    img.tools
                ),
            });
            st.temp.push(img.initrd.clone());
            img.initrd
        }
    };
    st.summary.kernel = kernel.vmlinuz.clone();
    st.summary.initrd = initrd.clone();
    st.summary.missing = missing.clone();
    if !missing.is_empty() {
        let msg = format!("Contract commands missing: {}", missing.join("; "));
        if !opts.keep_going {
            bail!("{msg}");
        }
        eprintln!("lab: warning: {msg} (--keep-going: running what exists, the flow will fail)");
    }

    // Boot.
    check_interrupt()?;
    fs::create_dir_all(&st.share)?;
    st.temp.push(st.share.join("cmd"));
    st.temp.push(st.share.join("ready"));
    st.temp.push(st.out.join("qmp.sock"));
    let config = vm_config(st, &profile, &kernel.vmlinuz, &initrd, &opts.append)?;
    let t = Instant::now();
    let (vm, reason, info) = boot_until_ready(
        &config,
        Accel::from_env()?,
        opts.kvm_probe,
        opts.boot_timeout,
    )?;
    st.summary.accel = vm.accel.to_string();
    st.summary.accel_reason = reason;
    st.summary.qemu_pid = Some(vm.pid);
    fs::write(st.out.join("qemu.pid"), format!("{}\n", vm.pid))?;
    st.temp.push(st.out.join("qemu.pid"));
    let vm = st.vm.insert(vm);
    let mut agent = Agent::new(&st.share);
    eprintln!(
        "lab: guest up in {:.1}s: {} {} realtime={} net={:?}",
        t.elapsed().as_secs_f64(),
        info.uname_r,
        info.uname_v,
        info.realtime,
        info.net
    );
    st.summary.steps.push(Step {
        name: format!("boot ({})", vm.accel),
        rc: Some(0),
        secs: t.elapsed().as_secs_f64(),
        ok: true,
        note: format!("{} {}", info.uname_r, info.uname_v),
    });
    st.summary.guest = Some(info.clone());
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
    let suffix = vm.accel.thread_suffix();
    let pid = vm.pid;
    st.summary.vcpus_before = vcpu_samples(pid, suffix)?;

    // The guest, untuned host: interfaces, guest check and tune, and with --baseline a
    // probe to compare against (the only difference to the later probe is the host tuning).
    let g = GuestSteps {
        profile: &guest_profile,
        probe_duration: &opts.probe_duration,
        can_duration: &opts.can_duration,
    };
    let run_can = "/tmp/runs/run-lab-can";
    let run_vcan = "/tmp/runs/run-lab-vcan";
    let run_base = "/tmp/runs/run-lab-baseline";
    let secs = |s: &str| humantime::parse_duration(s).unwrap_or(Duration::from_secs(30));
    let minute = Duration::from_secs(60);
    let probe_timeout = secs(g.probe_duration) + 90 * minute / 60;
    let probe = |run: &str| {
        format!(
            "rt-guest probe --profile {} --duration {} --out {run}",
            g.profile, g.probe_duration
        )
    };
    let mut failures = Vec::new();
    {
        let vm = st.vm.as_mut().context("VM gone")?;
        let mut gr = GuestRunner {
            agent: &mut agent,
            vm,
            steps: Vec::new(),
            failures: Vec::new(),
        };
        gr.step(
            "interfaces up",
            &g.interfaces(&can.tx, &can.rx, can.bitrate),
            minute,
            &[0],
        )?;
        if gr.failures.is_empty() {
            let check = "mkdir -p /tmp/runs && rt-guest check --json > /tmp/runs/guest-check.json; rc=$?; cat /tmp/runs/guest-check.json; exit $rc";
            gr.step("rt-guest check", check, minute, &[0, 1])?;
            gr.step(
                "rt-guest tune",
                &format!("rt-guest tune {}", g.profile),
                minute,
                &[0, 1],
            )?;
            if opts.baseline {
                gr.step(
                    "rt-guest probe (host untuned)",
                    &probe(run_base),
                    probe_timeout,
                    &[0, 1],
                )?;
            }
        }
        failures.append(&mut gr.failures);
        st.summary.steps.append(&mut gr.steps);
    }

    // Host tuning, after the guest kernel booted (trap 1).
    let journal = st.journal.to_string_lossy().into_owned();
    let pid_s = pid.to_string();
    if let (Some(rt_host), true) = (bins.rt_host.clone(), failures.is_empty()) {
        check_interrupt()?;
        st.host_setup_attempted = true;
        let t = Instant::now();
        let args = [
            "setup",
            &opts.profile,
            "--json",
            "--journal-dir",
            &journal,
            "--vm-pid",
            &pid_s,
        ];
        let out = host_cmd(&rt_host, &args)?;
        fs::write(st.out.join("host-setup.json"), &out.stdout)?;
        let ok = matches!(out.rc, Some(0) | Some(1));
        st.summary.steps.push(Step {
            name: "host: rt-host setup".into(),
            rc: out.rc,
            secs: t.elapsed().as_secs_f64(),
            ok,
            note: crate::qemu::tail(&out.text(), 15),
        });
        if !ok {
            bail!(
                "rt-host setup {} failed (exit {:?}): {}",
                opts.profile,
                out.rc,
                crate::qemu::tail(&out.text(), 15)
            );
        }
        st.summary.vcpus_tuned = vcpu_samples(pid, suffix)?;
        let args = [
            "check",
            &opts.profile,
            "--json",
            "--journal-dir",
            &journal,
            "--vm-pid",
            &pid_s,
        ];
        let check = host_cmd(&rt_host, &args)?;
        fs::write(st.out.join("host-check.json"), &check.stdout)?;
    }

    // The guest, tuned host.
    let vm = st.vm.as_mut().context("VM gone")?;
    let mut gr = GuestRunner {
        agent: &mut agent,
        vm,
        steps: Vec::new(),
        failures,
    };
    if gr.failures.is_empty() {
        gr.step(
            "rt-guest selftest",
            &format!("rt-guest selftest --out {run_can}"),
            2 * minute,
            // 1: the self-test did not pass; the run records it and the report marks the
            // evidence invalid, like a failed requirement.
            &[0, 1],
        )?;
        gr.step("rt-guest probe", &probe(run_can), probe_timeout, &[0, 1])?;
        let can_timeout = secs(g.can_duration) + 90 * minute / 60;
        let name = format!("can-sim run {}->{}", can.tx, can.rx);
        gr.step(
            &name,
            &g.can_run(&can.tx, &can.rx, run_can),
            can_timeout,
            &[0, 1],
        )?;
        gr.step(
            "can-sim run vcan0",
            &g.can_run("vcan0", "vcan0", run_vcan),
            can_timeout,
            &[0, 1],
        )?;
    }
    gr.step("rt-guest revert", "rt-guest revert", minute, &[0, 1])?;
    let copy = format!(
        "dmesg > {GUEST_SHARE}/dmesg.txt; mkdir -p /tmp/runs {GUEST_SHARE}/runs && cp -r /tmp/runs/. {GUEST_SHARE}/runs/ && sync"
    );
    gr.step("copy runs out", &copy, minute, &[0])?;
    let guest_failures = std::mem::take(&mut gr.failures);
    st.summary.steps.append(&mut gr.steps);

    // Host: still tuned? then revert.
    if bins.rt_host.is_some() {
        st.summary.vcpus_tuned_end = vcpu_samples(pid, suffix)?;
        st.host_setup_attempted = false;
        revert_host(st)?;
    }
    if let Some(vm) = st.vm.as_mut() {
        let _ = agent.poweroff(vm);
        vm.stop();
    }

    // Bring the runs into lab/out/.../runs and record the cross-checks.
    let runs_dir = st.out.join("runs");
    if runs_dir.exists() {
        fs::remove_dir_all(&runs_dir)?;
    }
    let shared_runs = st.share.join("runs");
    if shared_runs.exists() {
        fs::rename(&shared_runs, &runs_dir).with_context(|| {
            format!("Moving {} to {}", shared_runs.display(), runs_dir.display())
        })?;
    }
    let mut runs = Vec::new();
    for (name, link, rx) in [
        (
            "run-lab-can",
            format!("{}->{}", can.tx, can.rx),
            can.rx.clone(),
        ),
        ("run-lab-vcan", "vcan0".to_string(), "vcan0".to_string()),
    ] {
        let dir = runs_dir.join(name);
        let check = crate::check::can_check(&dir, &link, &rx);
        st.summary.can.push(check);
        if dir.join("manifest.json").is_file() {
            runs.push(dir);
        }
    }
    for (name, condition) in [
        ("run-lab-baseline", "host untuned"),
        ("run-lab-can", "host tuned"),
    ] {
        if let Some(p) = crate::check::probe_stats(&runs_dir.join(name), condition) {
            st.summary.probe.push(p);
        }
    }
    crate::check::attach(&runs, &st.out, &loaded, &st.summary)?;
    st.summary.runs = runs.clone();

    // Evidence, also when a guest step failed: the report shows what exists.
    let guest_error = (!guest_failures.is_empty())
        .then(|| format!("Guest steps failed: {}", guest_failures.join("; ")));
    let Some(validation) = bins.validation else {
        bail!(
            "{}Cannot export the report: {}",
            guest_error.map(|e| e + "; ").unwrap_or_default(),
            missing.join("; ")
        )
    };
    if runs.is_empty() {
        bail!(
            "{}No run directory came out of the guest (looked in {})",
            guest_error.map(|e| e + "; ").unwrap_or_default(),
            runs_dir.display()
        );
    }
    let mut report_rc = None;
    for (format, ext) in [
        ("html", "html"),
        ("md", "md"),
        ("json", "json"),
        ("junit", "xml"),
    ] {
        let path = st.out.join(format!("report.{ext}"));
        let mut args: Vec<String> = vec!["report".into(), "export".into()];
        args.extend(runs.iter().map(|r| r.to_string_lossy().into_owned()));
        args.extend([
            "--format".into(),
            format.into(),
            "--out".into(),
            path.to_string_lossy().into_owned(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Instant::now();
        let out = host_cmd(&validation, &argv)?;
        let ok = matches!(out.rc, Some(0) | Some(1)) && path.is_file();
        st.summary.steps.push(Step {
            name: format!("host: validation report export --format {format}"),
            rc: out.rc,
            secs: t.elapsed().as_secs_f64(),
            ok,
            note: crate::qemu::tail(&out.text(), 10),
        });
        if !ok {
            bail!(
                "validation report export --format {format} failed (exit {:?}): {}",
                out.rc,
                crate::qemu::tail(&out.text(), 10)
            );
        }
        report_rc = out.rc;
        st.summary.reports.insert(format.to_string(), path);
    }
    st.summary.report_rc = report_rc;
    if let Some(e) = guest_error {
        bail!("{e}");
    }
    if !missing.is_empty() {
        bail!("Contract commands missing: {}", missing.join("; "));
    }
    Ok(())
}

/// Runs guest steps, recording each.
struct GuestRunner<'a> {
    agent: &'a mut Agent,
    vm: &'a mut Vm,
    steps: Vec<Step>,
    failures: Vec<String>,
}

impl GuestRunner<'_> {
    /// Run `script`; an exit code outside `ok_rcs` is recorded as a failure (the flow goes
    /// on to bring out what exists and revert); a dead VM or a timeout is an error.
    fn step(&mut self, name: &str, script: &str, timeout: Duration, ok_rcs: &[i32]) -> Result<()> {
        check_interrupt()?;
        eprintln!("lab: guest: {name}");
        let out = self.agent.run(self.vm, script, timeout)?;
        let ok = ok_rcs.contains(&out.rc);
        let note = crate::qemu::tail(&out.output, 15);
        if !ok {
            eprintln!("lab: guest: {name} exited {}:\n{note}", out.rc);
            self.failures.push(format!(
                "guest `{name}` exited {}: {}",
                out.rc,
                crate::qemu::tail(&out.output, 8)
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

/// Shell snippets for the guest.
struct GuestSteps<'a> {
    profile: &'a str,
    probe_duration: &'a str,
    can_duration: &'a str,
}

/// The extended id of the marker frames that bracket a candump capture.
pub const MARKER_ID: &str = "1FFFFFF0";

impl GuestSteps<'_> {
    fn interfaces(&self, tx: &str, rx: &str, bitrate: u32) -> String {
        interfaces_script(&[tx, rx, "vcan0"], bitrate)
    }

    /// can-sim from `tx` to `rx` with candump on `rx` as an independent receiver.
    fn can_run(&self, tx: &str, rx: &str, run: &str) -> String {
        let log = format!(
            "/tmp/runs/candump-{}.log",
            run.rsplit('/').next().unwrap_or("run")
        );
        let sim = format!(
            "can-sim run {} --tx {tx} --rx {rx} --duration {} --out {run}",
            self.profile, self.can_duration
        );
        capture_script(tx, rx, &log, &sim)
    }
}

/// A guest script that runs `command` while `candump -L rx` logs into `log`. Marker frames
/// (extended id [`MARKER_ID`]) bracket the capture: the start marker is resent from `tx`
/// until candump logged it, so candump listens before `command` sends; the end marker is
/// awaited, so candump drained after it stopped. Prints `candump_frames=N` (markers
/// excluded) and exits with `command`'s exit code.
pub fn capture_script(tx: &str, rx: &str, log: &str, command: &str) -> String {
    format!(
        r#"mkdir -p "$(dirname {log})"
log={log}
candump -L {rx} > $log 2>/tmp/candump.err &
cd_pid=$!
i=0
until grep -q '{MARKER_ID}#5354415254' $log; do
    cansend {tx} {MARKER_ID}#5354415254 || true
    sleep 0.2; i=$((i + 1))
    [ $i -lt 100 ] || {{ echo "candump on {rx} never saw the start marker"; cat /tmp/candump.err; kill $cd_pid; exit 3; }}
done
{command}
rc=$?
i=0
cansend {tx} {MARKER_ID}#454E44
until grep -q '{MARKER_ID}#454E44' $log; do
    sleep 0.1; i=$((i + 1))
    [ $i -lt 200 ] || {{ echo "candump on {rx} never saw the end marker"; kill $cd_pid; exit 3; }}
done
kill $cd_pid
echo "candump_frames=$(grep ' {rx} ' $log | grep -vc '{MARKER_ID}#')"
exit $rc"#
    )
}

/// The shell lines that bring CAN interfaces up at `bitrate` (vcan ones are created).
pub fn interfaces_script(ifaces: &[&str], bitrate: u32) -> String {
    // busybox sh prefers its own `ip` applet, which knows no CAN: name iproute2's.
    let mut s = String::from("set -e\nIP=/usr/bin/ip\n");
    let mut seen: Vec<&str> = Vec::new();
    for &i in ifaces {
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        if i.starts_with("vcan") {
            s.push_str(&format!(
                "$IP link show {i} >/dev/null 2>&1 || $IP link add {i} type vcan\n$IP link set {i} up\n"
            ));
        } else {
            s.push_str(&format!(
                "$IP link set {i} down\n$IP link set {i} type can bitrate {bitrate}\n$IP link set {i} up\n"
            ));
        }
    }
    s.push_str("$IP -details link show\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn can_script_brackets_the_capture_with_markers() {
        let g = GuestSteps {
            profile: "lab",
            probe_duration: "15s",
            can_duration: "10s",
        };
        let s = g.can_run("can0", "can1", "/tmp/runs/run-lab-can");
        let start = s.find("#5354415254").unwrap();
        let sim = s
            .find("can-sim run lab --tx can0 --rx can1 --duration 10s --out /tmp/runs/run-lab-can")
            .unwrap();
        let end = s.find("#454E44").unwrap();
        assert!(start < sim && sim < end, "{s}");
        assert!(s.contains("candump -L can1"));
        assert!(s.contains("/tmp/runs/candump-run-lab-can.log"));
    }

    #[test]
    fn interfaces_script_sets_the_bitrate_once_per_interface() {
        let g = GuestSteps {
            profile: "lab",
            probe_duration: "15s",
            can_duration: "10s",
        };
        let s = g.interfaces("can0", "can1", 500000);
        assert_eq!(s.matches("type can bitrate 500000").count(), 2);
        assert!(s.contains("$IP link add vcan0 type vcan"));
        assert_eq!(s.matches("link add vcan0").count(), 1);
        let v = g.interfaces("vcan0", "vcan0", 500000);
        assert!(!v.contains("bitrate"));
    }
}
