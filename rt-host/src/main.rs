//! `rt-host`: tune a KVM host for a real-time guest, verify, and revert exactly.
//!
//! Exit codes: [`TOOL`] (defined in `rtvirt_cli::exit`, printed by every `--help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use rt_host::apply::{self, SetupOptions};
use rt_host::plan::{self, Ctx};
use rt_host::{bootargs, render, TuneError};
use rt_sys::cpuidle::DMA_LATENCY;
use rt_sys::journal::{JournalError, ProfileId, RevertOptions};
use rt_sys::{threads, SysRoot};

mod vm_cmd;

/// Tune a KVM host for real-time guests (vCPU pinning and FIFO, halt polling, C-states,
/// IRQs, isolation, sysctls, hugepages), verify it, and undo it exactly from a journal.
#[derive(Parser, Debug)]
#[command(name = "rt-host", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Root of the /sys, /proc, /dev and /run tree (a fake tree for tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Journal directory [default: <root>/run/rt-host].
    #[arg(long, value_name = "DIR")]
    journal_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct ProfileArgs {
    /// Profile file or bundled name (ecu, lab, canfd).
    profile: String,
    #[command(flatten)]
    common: Common,
    /// The VM's QEMU pid (overrides the profile's host.vm).
    #[arg(long, value_name = "PID")]
    vm_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
struct HwlatArgs {
    /// Run time (`30s`, `10m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Report gaps above this, us (`tracing_thresh`; hwlatdetect and OpenShift use 20 in
    /// CI, the kernel's default is 10).
    #[arg(long, default_value_t = 10)]
    threshold_us: u64,
    /// Spin time per window, us (`hwlat_detector/width`).
    #[arg(long, default_value_t = 500_000)]
    width_us: u64,
    /// Window, us (`hwlat_detector/window`).
    #[arg(long, default_value_t = 1_000_000)]
    window_us: u64,
    /// Run directory to write hwlat.json into.
    #[arg(long, value_name = "RUN_DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Read-only audit: each item ok / differs / needs reboot / not permitted here / not
    /// applicable, with the running VMs' definitions (CPU flags, locked and hugepage
    /// memory, libvirt XML). Exit 1 when something differs or needs a reboot.
    Check {
        #[command(flatten)]
        args: ProfileArgs,
        #[command(flatten)]
        audit: vm_cmd::AuditArgs,
    },
    /// What setup would change: current -> desired, now or at next boot.
    Plan(ProfileArgs),
    /// Apply the runtime items in a safe order, journalling each prior value, then verify.
    Setup {
        #[command(flatten)]
        args: ProfileArgs,
        /// Test hook: stop after N applied changes and wait to be killed.
        #[arg(long, hide = true, value_name = "N", env = "RT_HOST_PAUSE_AFTER")]
        pause_after: Option<usize>,
        /// Test hook: fail with an unexpected error after N applied changes.
        #[arg(long, hide = true, value_name = "N")]
        fail_after: Option<usize>,
        /// Apply only the VM items (its threads' affinity and policies, their cgroups and
        /// RT runtime): for a VM that restarted (the libvirt hook runs this).
        #[arg(long)]
        vm_items: bool,
    },
    /// Keep the VMs tuned across restarts: poll them and, when one starts or restarts
    /// with new threads, apply the VM items again (journalled), until SIGINT/SIGTERM.
    Watch {
        #[command(flatten)]
        args: ProfileArgs,
        /// How often to look, in ms.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval_ms: u64,
        /// Print a systemd unit that runs this watch, instead of watching.
        #[arg(long)]
        systemd_unit: bool,
    },
    /// Print a libvirt hooks/qemu script that applies the VM items when a domain of the
    /// profile starts.
    Hook(ProfileArgs),
    /// Restore every journalled value (also after a crash; skips threads that are gone).
    /// A journal written on another root, boot or host, or for another profile than the one
    /// named, is refused unless --force.
    Revert {
        /// Profile (optional: the journal knows what to restore; when given, it must be the
        /// one that was set up).
        profile: Option<String>,
        #[command(flatten)]
        common: Common,
        /// Revert even when the journal was written for another root, boot, host or profile
        /// (each overridden check is printed).
        #[arg(long)]
        force: bool,
    },
    /// What is applied now, from the journal and the system.
    Status {
        /// Profile (optional).
        profile: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// The kernel command line the profile needs, and how to install it (GRUB, BLS).
    BootArgs(ProfileArgs),
    /// The KVM module parameters the profile needs (a modprobe.d file), and which loaded
    /// values differ: those need the module loaded again.
    Modprobe(ProfileArgs),
    /// Hold /dev/cpu_dma_latency at the profile's exit-latency limit until SIGINT/SIGTERM.
    Hold {
        #[command(flatten)]
        args: ProfileArgs,
        /// Limit in us (default: host.idle.max_exit_latency_us).
        #[arg(long, value_name = "US")]
        us: Option<u32>,
        /// Print a systemd unit that runs this hold, instead of holding.
        #[arg(long)]
        systemd_unit: bool,
    },
    /// Render the profile's VM definition: libvirt domain XML, a QEMU script or a KubeVirt
    /// VirtualMachineInstance, each real-time choice with its reason.
    Vm(vm_cmd::VmArgs),
    /// Hardware/firmware latency: run the kernel's hwlat detector (interrupts off, spin,
    /// report gaps above the threshold) where tracefs has it. Exit 1 when a gap exceeded
    /// the threshold; "not available here" (exit 2) where the tracer is missing.
    Hwlat(HwlatArgs),
    /// Record the host's scheduling of the VM's vCPU threads (sched_switch, sched_wakeup,
    /// sched_migrate_task in a tracing instance of its own, bounded) while the guest
    /// measures, into RUN_DIR/host-trace.json, with the guest's clock offset
    /// (--clock-dir) for validation to put guest spikes beside host events.
    Trace(rt_host::trace::TraceArgs),
    /// Generate man pages or shell completions from these definitions.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        what: rtvirt_cli::clidoc::Generate,
        /// Output directory.
        dir: PathBuf,
    },
}

/// rt-host's exit codes (in every `--help` and man page).
const TOOL: rtvirt_cli::Tool = rtvirt_cli::Tool {
    bin: "rt-host",
    not_met: "check found a difference or a needed reboot, setup's verify failed or an \
              essential item (a vCPU's real-time policy) was refused, status is partial, hwlat \
              saw a gap above the threshold",
    interrupted: false,
};

fn main() -> ExitCode {
    let cli: Cli = TOOL.parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => TOOL.fail(&e),
    }
}

fn journal_dir(c: &Common) -> PathBuf {
    c.journal_dir
        .clone()
        .unwrap_or_else(|| SysRoot::new(&c.root).path("run/rt-host"))
}

fn load(profile: &str) -> Result<(ProfileId, profiles::Host)> {
    let l = profiles::load(profile).with_context(|| format!("Loading profile {profile:?}"))?;
    let id = ProfileId {
        name: l.profile.name.clone(),
        sha256: l.sha256(),
    };
    let host = l.profile.host.ok_or(TuneError::NoHost(id.name.clone()))?;
    Ok((id, host))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    rtvirt_cli::outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Check { args, audit } => plan_cmd(&args, Some(&audit)),
        Cmd::Plan(a) => plan_cmd(&a, None),
        Cmd::Setup {
            args,
            pause_after,
            fail_after,
            vm_items,
        } => setup_cmd(
            &args,
            &SetupOptions {
                pause_after,
                fail_after,
                vm_only: vm_items,
            },
        ),
        Cmd::Watch {
            args,
            interval_ms,
            systemd_unit,
        } => watch_cmd(&args, interval_ms, systemd_unit),
        Cmd::Hook(a) => hook_cmd(&a),
        Cmd::Revert {
            profile,
            common,
            force,
        } => revert_cmd(profile.as_deref(), &common, force),
        Cmd::Status { profile: _, common } => status_cmd(&common),
        Cmd::BootArgs(a) => boot_args_cmd(&a),
        Cmd::Modprobe(a) => modprobe_cmd(&a),
        Cmd::Hold {
            args,
            us,
            systemd_unit,
        } => hold(&args, us, systemd_unit),
        Cmd::Vm(a) => vm_cmd::run(&a),
        Cmd::Hwlat(a) => hwlat(&a),
        Cmd::Trace(a) => rt_host::trace::command(&a),
        Cmd::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), &TOOL, what, &dir)?;
            Ok(0)
        }
    }
}

fn hwlat(a: &HwlatArgs) -> Result<u8> {
    use rt_sys::tracefs;
    let root = SysRoot::new(&a.common.root);
    let cfg = tracefs::HwlatConfig {
        threshold_us: a.threshold_us,
        width_us: a.width_us,
        window_us: a.window_us,
    };
    let stop = rtvirt_cli::stop_on_signals()?;
    let t0 = std::time::Instant::now();
    let samples = tracefs::hwlat_run(&root, &cfg, a.duration, &stop)
        .context("Cannot run the hwlat detector")?;
    let rec = record::HwlatRecord {
        threshold_us: cfg.threshold_us,
        width_us: cfg.width_us,
        window_us: cfg.window_us,
        duration_s: t0.elapsed().as_secs_f64(),
        total_samples: samples.len() as u64,
        max_us: samples
            .iter()
            .map(|s| s.inner_us.max(s.outer_us))
            .max()
            .unwrap_or(0),
        samples: samples.iter().take(10_000).cloned().collect(),
        partial: stop.load(Ordering::SeqCst),
    };
    if let Some(dir) = &a.out {
        let mut rd = record::RunDir::open_or_create(dir)?;
        rtvirt_cli::begin_run(&mut rd, "rt-host hwlat", std::env::args().collect(), None)?;
        rd.write_json(record::HWLAT, &rec)?;
        rd.end_tool(rec.partial.then(|| "interrupted".to_string()))?;
    }
    if a.common.json {
        print_json(&rec)?;
    } else {
        rtvirt_cli::outln!(
            "hwlat: {} samples above {} us in {:.0} s (width {} us, window {} us), max {} us",
            rec.total_samples,
            rec.threshold_us,
            rec.duration_s,
            rec.width_us,
            rec.window_us,
            rec.max_us
        );
        for s in rec.samples.iter().take(20) {
            rtvirt_cli::outln!(
                "  #{} cpu {} inner {} us outer {} us at {}",
                s.seq,
                s.cpu,
                s.inner_us,
                s.outer_us,
                s.ts
            );
        }
    }
    Ok(u8::from(rec.total_samples > 0))
}

fn setup_cmd(args: &ProfileArgs, opts: &SetupOptions) -> Result<u8> {
    let (id, host) = load(&args.profile)?;
    let root = SysRoot::new(&args.common.root);
    let mut ctx = Ctx::new(&root);
    ctx.vm_pid = args.vm_pid;
    let dir = journal_dir(&args.common);
    let r = apply::setup(&id, &host, &ctx, &dir, opts)
        .with_context(|| format!("Setting up profile {:?}", id.name))?;
    if args.common.json {
        print_json(&r)?;
    } else {
        rtvirt_cli::out!("{}", render::setup(&r));
    }
    Ok(if r.met() { 0 } else { 1 })
}

fn revert_cmd(profile: Option<&str>, common: &Common, force: bool) -> Result<u8> {
    let root = SysRoot::new(&common.root);
    let dir = journal_dir(common);
    let id = profile.map(load).transpose()?.map(|(id, _)| id);
    let opts = RevertOptions {
        profile: id.as_ref(),
        force,
    };
    let r = match apply::revert(&root, threads::for_root(&root), &dir, &opts) {
        Err(e @ TuneError::Journal(JournalError::Mismatch { .. })) => {
            return Err(anyhow::Error::new(e).context(
                "Refusing to revert: give --force to restore the journal's prior values anyway",
            ))
        }
        r => r.context("Reverting")?,
    };
    if common.json {
        print_json(&r)?;
    } else {
        rtvirt_cli::out!("{}", render::revert(&r));
    }
    if !r.ok() {
        anyhow::bail!(
            "Some values could not be restored; they stay in the journal {} for another revert",
            dir.display()
        );
    }
    Ok(0)
}

fn status_cmd(common: &Common) -> Result<u8> {
    let root = SysRoot::new(&common.root);
    let r = apply::status(&root, threads::for_root(&root), &journal_dir(common))?;
    if common.json {
        print_json(&r)?;
    } else {
        rtvirt_cli::out!("{}", render::status(&r));
    }
    Ok(u8::from(r.profile.is_some() && !r.complete))
}

fn boot_args_cmd(a: &ProfileArgs) -> Result<u8> {
    let (id, host) = load(&a.profile)?;
    let name = id.name;
    let root = SysRoot::new(&a.common.root);
    let vendor = rt_sys::kernel::cpu_vendor(&root);
    let args = bootargs::boot_args(&host, vendor.as_deref());
    let cmdline = rt_sys::kernel::facts(&root)
        .map(|f| f.cmdline)
        .unwrap_or_default();
    let missing: Vec<String> = args
        .iter()
        .filter(|x| !bootargs::satisfied(&cmdline, x))
        .map(|x| x.to_string())
        .collect();
    if a.common.json {
        return print_json(&serde_json::json!({
            "profile": name,
            "args": args,
            "line": bootargs::line(&args),
            "missing": missing,
            "grub_dropin": bootargs::grub_dropin(&a.profile, &args),
            "bls": bootargs::bls_text(&args),
        }))
        .map(|()| 0);
    }
    let proc_cmdline = root.display(rt_sys::kernel::CMDLINE);
    rtvirt_cli::outln!("# kernel command line for profile {name:?}:");
    rtvirt_cli::outln!("{}", bootargs::line(&args));
    for x in &args {
        rtvirt_cli::outln!("#   {x}: {}", x.why);
    }
    if missing.is_empty() {
        rtvirt_cli::outln!("# {proc_cmdline} has all of them");
    } else {
        rtvirt_cli::outln!(
            "# missing from {proc_cmdline} (needs a reboot): {}",
            missing.join(" ")
        );
    }
    rtvirt_cli::outln!();
    rtvirt_cli::out!("{}", bootargs::grub_dropin(&a.profile, &args));
    rtvirt_cli::outln!();
    rtvirt_cli::out!("{}", bootargs::bls_text(&args));
    Ok(0)
}

fn modprobe_cmd(a: &ProfileArgs) -> Result<u8> {
    let (id, host) = load(&a.profile)?;
    let root = SysRoot::new(&a.common.root);
    let params = rt_host::modprobe::params(&host);
    let loaded: Vec<(String, Option<String>)> = params
        .iter()
        .map(|p| {
            let rel = rt_sys::kernel::module_param(&p.module, &p.name);
            (root.display(&rel), root.read_trim(&rel).ok())
        })
        .collect();
    let reload: Vec<String> = params
        .iter()
        .zip(&loaded)
        .filter(|(p, (_, v))| v.as_deref().is_some_and(|v| !p.matches(v)))
        .map(|(p, _)| format!("{}.{}", p.module, p.name))
        .collect();
    let file = rt_host::modprobe::file_text(&id.name, &params);
    if a.common.json {
        return print_json(&serde_json::json!({
            "profile": id.name,
            "params": params,
            "file": file,
            "differ": reload,
        }))
        .map(|()| 0);
    }
    rtvirt_cli::out!("{file}");
    for (p, (path, v)) in params.iter().zip(&loaded) {
        let state = match v {
            None => "not loaded".to_string(),
            Some(v) if p.matches(v) => format!("loaded {v}: ok"),
            Some(v) => format!("loaded {v}: differs"),
        };
        rtvirt_cli::outln!("#   {path}: {state} ({})", p.why);
    }
    if !reload.is_empty() {
        rtvirt_cli::outln!(
            "# differ now: {} (setup writes nx_huge_pages and halt_poll_ns where the kernel \
             lets it; the others need the module loaded again)",
            reload.join(" ")
        );
    }
    Ok(0)
}

fn plan_cmd(a: &ProfileArgs, audit: Option<&vm_cmd::AuditArgs>) -> Result<u8> {
    let check = audit.is_some();
    let (id, host) = load(&a.profile)?;
    let name = id.name;
    let root = SysRoot::new(&a.common.root);
    let mut ctx = Ctx::new(&root);
    ctx.vm_pid = a.vm_pid;
    ctx.refused = apply::load_refused(&journal_dir(&a.common))?;
    let mut p =
        plan::build(&name, &host, &ctx).with_context(|| format!("Planning profile {name:?}"))?;
    if let Some(au) = audit {
        p.changes.extend(vm_cmd::audit(&name, &host, &root, au));
    }
    if a.common.json && check {
        // What the run record keeps (`environment.host_check`): a typed record::CheckReport.
        let kernel = rt_sys::kernel::facts(&root).ok();
        print_json(&rt_host::checkreport::check_report(&p, kernel))?;
    } else if a.common.json {
        let kernel = rt_sys::kernel::facts(&root).ok();
        print_json(&serde_json::json!({
            "profile": p.profile,
            "kernel": kernel,
            "met": p.met(),
            "summary": p.summary(),
            "vm": p.vm,
            "changes": p.changes,
        }))?;
    } else {
        rtvirt_cli::out!("{}", render::plan(&p, !check));
    }
    Ok(if check && !p.met() { 1 } else { 0 })
}

/// The profile as a unit or hook should name it: a file's absolute path, else the name.
fn profile_arg(profile: &str) -> String {
    if Path::new(profile).is_file() {
        std::fs::canonicalize(profile)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| profile.to_string())
    } else {
        profile.to_string()
    }
}

fn exe() -> Result<String> {
    Ok(std::env::current_exe()
        .context("Finding the rt-host executable")?
        .display()
        .to_string())
}

fn watch_cmd(a: &ProfileArgs, interval_ms: u64, unit: bool) -> Result<u8> {
    let (id, host) = load(&a.profile)?;
    if unit {
        rtvirt_cli::out!(
            "{}",
            rt_host::watch::systemd_unit(&exe()?, &profile_arg(&a.profile), &id.name)
        );
        return Ok(0);
    }
    let root = SysRoot::new(&a.common.root);
    let dir = journal_dir(&a.common);
    let stop = rtvirt_cli::stop_on_signals()?;
    let name = id.name.clone();
    let mut w = rt_host::watch::Watch::new(id, host, &root, threads::for_root(&root), &dir);
    if !a.common.json {
        rtvirt_cli::outln!(
            "watching the VMs of profile {name:?} every {interval_ms} ms (journal {}); \
             SIGINT or SIGTERM stops",
            dir.display()
        );
    }
    while !stop.load(Ordering::Relaxed) {
        match w.step() {
            Ok(Some(s)) => {
                if a.common.json {
                    rtvirt_cli::outln!(
                        "{}",
                        serde_json::json!({"pruned": s.pruned, "setup": s.setup})
                    );
                } else {
                    rtvirt_cli::outln!(
                        "VM threads changed: {} journal entries of gone threads dropped",
                        s.pruned
                    );
                    rtvirt_cli::out!("{}", render::setup(&s.setup));
                }
            }
            Ok(None) => {}
            // A VM half started or half gone: look again at the next tick.
            Err(e) => eprintln!("rt-host watch: {:#}", anyhow::Error::new(e)),
        }
        let mut left = interval_ms;
        while left > 0 && !stop.load(Ordering::Relaxed) {
            let step = left.min(100);
            std::thread::sleep(std::time::Duration::from_millis(step));
            left -= step;
        }
    }
    Ok(0)
}

fn hook_cmd(a: &ProfileArgs) -> Result<u8> {
    let (_, host) = load(&a.profile)?;
    let domains: Vec<String> = profiles::host_vms(&host)
        .into_iter()
        .map(|v| v.find.libvirt.unwrap_or(v.name))
        .collect();
    rtvirt_cli::out!(
        "{}",
        rt_host::watch::libvirt_hook(&exe()?, &profile_arg(&a.profile), &domains)
    );
    Ok(0)
}

/// The systemd unit `rt-host hold --systemd-unit` prints.
const DMA_UNIT_NAME: &str = "rtvirt-dma-latency.service";

/// The unit that runs `EXE hold PROFILE --us US` (`systemd-analyze verify` accepts it).
fn dma_latency_unit(exe: &str, profile: &str, us: u32, name: &str, dev: &str) -> String {
    format!(
        "[Unit]\n\
         Description=rtvirt: hold {dev} at {us} us (profile {name})\n\
         Documentation=man:rt-host(1)\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} hold {profile} --us {us}\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

fn hold(a: &ProfileArgs, us: Option<u32>, unit: bool) -> Result<u8> {
    let (id, host) = load(&a.profile)?;
    let name = id.name;
    let us = us
        .or(host.idle.max_exit_latency_us)
        .context("No limit: the profile has no host.idle.max_exit_latency_us; give --us")?;
    if unit {
        let unit = dma_latency_unit(
            &exe()?,
            &profile_arg(&a.profile),
            us,
            &name,
            &SysRoot::live().display(DMA_LATENCY).to_string(),
        );
        if a.common.json {
            rtvirt_cli::outln!(
                "{}",
                serde_json::json!({"name": DMA_UNIT_NAME, "path": format!("/etc/systemd/system/{DMA_UNIT_NAME}"), "unit": unit})
            );
        } else {
            rtvirt_cli::out!("# /etc/systemd/system/{DMA_UNIT_NAME}\n{unit}");
        }
        return Ok(0);
    }
    let root = SysRoot::new(&a.common.root);
    let stop = rtvirt_cli::stop_on_signals()?;
    let v = i32::try_from(us).context("Limit too large")?;
    let dev = root.display(DMA_LATENCY);
    let held = rt_sys::rt::DmaLatency::hold(&root, v).with_context(|| format!("Holding {dev}"))?;
    if a.common.json {
        rtvirt_cli::outln!(
            "{}",
            serde_json::json!({"holding_us": us, "pid": std::process::id(), "profile": name})
        );
    } else {
        rtvirt_cli::outln!(
            "holding {} at {us} us (pid {}); SIGINT or SIGTERM releases it",
            dev,
            std::process::id()
        );
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(held);
    if !a.common.json {
        rtvirt_cli::outln!("released");
    }
    Ok(0)
}
