//! `rtvirt-lab`: build the guest image, boot it, or run the whole flow in QEMU.
//!
//! Exit codes: [`TOOL`] (defined in `rtvirt_cli::exit`, printed by every `--help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};

use lab::accel::Purpose;
use lab::flow::{self, FlowOptions};
use lab::guest::Agent;
use lab::layout::{Kernel, Layout};
use rtvirt_cli::progress::LineSpinner;

/// The rtvirt lab: a PREEMPT_RT guest in QEMU with two CAN cards, on this machine.
#[derive(Parser, Debug)]
#[command(name = "rtvirt-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the guest initramfs (static rt-guest and can-sim, busybox, can-utils, modules).
    Image {
        #[command(flatten)]
        kernel: KernelArgs,
        /// A profile file to put in the image as well (bundled ones always are).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Output directory (default lab/out/image-UTC).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print what went in as JSON.
        #[arg(long)]
        json: bool,
        /// Leave out rt-guest and can-sim (no static build): the bare lab VM.
        #[arg(long)]
        no_rtvirt: bool,
    },
    /// Boot the lab VM and wait until the guest is up; then run --exec commands in it and
    /// power off, or keep it running until Ctrl-C.
    Boot {
        #[command(flatten)]
        kernel: KernelArgs,
        #[command(flatten)]
        vm: VmArgs,
        /// A shell command to run in the guest (repeatable); the VM stops after the last.
        #[arg(long = "exec")]
        exec: Vec<String>,
        /// Output directory (default lab/out/boot-UTC).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Leave out rt-guest and can-sim (no static build): the bare lab VM.
        #[arg(long)]
        no_rtvirt: bool,
        /// Print one JSON document on stdout at the end (accelerator, guest, vCPU threads,
        /// each --exec command with its exit code and output) instead of the guest's info
        /// and the commands' output.
        #[arg(long)]
        json: bool,
    },
    /// The whole flow: boot, rt-host setup, the guest tools, rt-host revert, the report.
    Flow {
        /// Profile: a bundled name or a RON file [default: lab; with --host-lab: hil].
        #[arg(long)]
        profile: Option<String>,
        /// The host lab: an outer QEMU VM plays a 4-CPU KVM host (standard kernel booted
        /// with the profile's boot arguments, rt-host and QEMU inside); the guest runs
        /// under KVM in it, and rt-host tunes the outer host. Writes host-lab.json.
        #[arg(long)]
        host_lab: bool,
        #[command(flatten)]
        kernel: KernelArgs,
        #[command(flatten)]
        vm: VmArgs,
        /// Probe duration in the guest.
        #[arg(long, default_value = "15s")]
        probe_duration: String,
        /// Duration of each CAN run.
        #[arg(long, default_value = "10s")]
        can_duration: String,
        /// Output directory (default lab/out/flow-UTC).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run what exists when a contract command is missing (the flow still fails).
        #[arg(long)]
        keep_going: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Also probe before tuning the host: an untuned/tuned A/B in one run.
        #[arg(long)]
        baseline: bool,
    },
    /// Generate man pages or shell completions from these definitions.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        what: rtvirt_cli::clidoc::Generate,
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct KernelArgs {
    /// Kernel to boot (default: the Debian RT kernel in lab/cache from lab/setup.sh).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs to boot instead of building one (must carry the lab /init agent).
    #[arg(long)]
    initrd: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct VmArgs {
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Seconds the guest may take to come up.
    #[arg(long, default_value_t = 120)]
    boot_timeout: u64,
    /// Seconds KVM gets to start the kernel before the lab falls back to TCG
    /// (RTVIRT_LAB_ACCEL=kvm|tcg skips the try).
    #[arg(long, default_value_t = 10)]
    kvm_probe: u64,
}

fn kernel_of(layout: &Layout, k: &KernelArgs) -> Result<Kernel> {
    match &k.kernel {
        Some(p) => Kernel::from_path(p),
        None => Kernel::from_cache(&layout.cache),
    }
}

/// rtvirt-lab's exit codes (in every `--help` and man page).
const TOOL: rtvirt_cli::Tool = rtvirt_cli::Tool {
    bin: "rtvirt-lab",
    not_met: "boot --exec: a guest command exited non-zero",
    interrupted: false,
};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => TOOL.fail(&e),
    }
}

fn run() -> Result<ExitCode> {
    let cli: Cli = TOOL.parse();
    lab::install_signal_handlers().context("Installing SIGINT/SIGTERM handlers")?;
    match cli.command {
        Cmd::Image {
            kernel,
            profile,
            out,
            json,
            no_rtvirt,
        } => {
            let layout = Layout::from_env()?;
            let k = kernel_of(&layout, &kernel)?;
            let dir = match out {
                Some(o) => {
                    std::fs::create_dir_all(&o)?;
                    o
                }
                None => layout.new_out_dir("image")?,
            };
            let spinner = LineSpinner::start("rtvirt-lab image");
            let img = lab::image::build(&layout, &k, &dir, profile.as_deref(), !no_rtvirt);
            drop(spinner);
            let img = img?;
            if json {
                rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&img)?);
            } else {
                rtvirt_cli::outln!("initrd: {}", img.initrd.display());
                rtvirt_cli::outln!("kernel: {} ({})", img.kernel.display(), img.kernel_version);
                rtvirt_cli::outln!("modules: {}", img.modules.join(" "));
                rtvirt_cli::outln!("rtvirt binaries: {}", img.binaries.join(" "));
                if !img.missing_binaries.is_empty() {
                    rtvirt_cli::outln!("missing (not built): {}", img.missing_binaries.join(" "));
                }
                rtvirt_cli::outln!("tools: {}", img.tools.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), &TOOL, what, &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Boot {
            kernel,
            vm,
            exec,
            out,
            no_rtvirt,
            json,
        } => boot(kernel, vm, exec, out, no_rtvirt, json),
        Cmd::Flow {
            profile,
            host_lab,
            kernel,
            vm,
            probe_duration,
            can_duration,
            out,
            keep_going,
            json,
            baseline,
        } => {
            let default = if host_lab { "hil" } else { "lab" };
            let opts = FlowOptions {
                profile: profile.unwrap_or_else(|| default.to_string()),
                kernel: kernel.kernel,
                initrd: kernel.initrd,
                append: vm.append,
                boot_timeout: Duration::from_secs(vm.boot_timeout),
                kvm_probe: Duration::from_secs(vm.kvm_probe),
                probe_duration,
                can_duration,
                out,
                keep_going,
                baseline,
            };
            // A profile that does not load fails here, before any output directory exists.
            profiles::load(&opts.profile)
                .with_context(|| format!("Loading profile {:?}", opts.profile))?;
            let spinner = LineSpinner::start("rtvirt-lab flow");
            let summary = if host_lab {
                lab::hostlab::run(&opts)
            } else {
                flow::run(&opts)
            };
            drop(spinner);
            let summary = summary?;
            if json {
                rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&summary)?);
            }
            print_summary(&summary);
            if summary.ok() {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(rtvirt_cli::exit::ERROR))
            }
        }
    }
}

fn print_summary(s: &flow::Summary) {
    eprintln!(
        "\nlab: flow summary ({:.0} s, accel {}: {})",
        s.secs, s.accel, s.accel_reason
    );
    for step in &s.steps {
        let rc = step.rc.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
        eprintln!(
            "  [{}] {:<45} rc {:>3}  {:>6.1} s",
            if step.ok { " ok " } else { "FAIL" },
            step.name,
            rc,
            step.secs
        );
    }
    let show = |label: &str, v: &[lab::sched::VcpuSample]| {
        let list: Vec<String> = v
            .iter()
            .map(|x| format!("{} {}:{} on {}", x.name, x.policy, x.priority, x.affinity))
            .collect();
        eprintln!("  vCPUs {label}: {}", list.join(", "));
    };
    show("before setup", &s.vcpus_before);
    show("tuned", &s.vcpus_tuned);
    show("after revert", &s.vcpus_after);
    for p in &s.probe {
        eprintln!(
            "  probe ({}): {} samples, p50 {:.0} us, p99 {:.0} us, max {:.0} us, {} missed periods",
            p.condition, p.samples, p.p50_us, p.p99_us, p.max_us, p.missed_periods
        );
    }
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    for c in &s.can {
        eprintln!(
            "  CAN {}: can-sim sent {} received {} lost {}; candump in the guest {}",
            c.link,
            n(c.sent),
            n(c.received),
            n(c.lost),
            n(c.candump_frames)
        );
    }
    if let Some(h) = &s.host_lab {
        let o = &h.outer;
        eprintln!(
            "  outer host: {} on {} CPUs ({}), QEMU accel {}: {}",
            o.kernel, o.cpus, o.kvm_module, o.accel, o.accel_reason
        );
        eprintln!(
            "  {}: {} values rt-host touched, {} restored exactly",
            h.record.display(),
            h.values,
            h.restored
        );
        for n in &h.not_restored {
            eprintln!("  NOT RESTORED: {n}");
        }
    }
    for m in &s.missing {
        eprintln!("  MISSING: {m}");
    }
    if let Some(e) = &s.error {
        eprintln!("  error: {e}");
    }
    for e in &s.cleanup_errors {
        eprintln!("  cleanup error: {e}");
    }
    match s.reports.get("html") {
        Some(r) => rtvirt_cli::outln!("report: {}", r.display()),
        None => eprintln!("  no report (see {}/summary.json)", s.out.display()),
    }
}

/// `rtvirt-lab boot --json`.
#[derive(serde::Serialize)]
struct BootReport {
    /// kvm or tcg.
    accel: String,
    /// Why that accelerator.
    accel_reason: String,
    qemu_pid: u32,
    /// The bundled lab profile's QEMU definition: what was substituted and why, what the
    /// lab added.
    definition: Option<lab::qemu::Launch>,
    /// What the guest reported when it came up.
    guest: lab::guest::GuestInfo,
    /// The vCPU threads when the guest was up.
    vcpus: Vec<lab::sched::VcpuSample>,
    /// Each --exec command: script, exit code, output.
    exec: Vec<lab::guest::Output>,
}

fn boot(
    kernel: KernelArgs,
    vm_args: VmArgs,
    exec: Vec<String>,
    out: Option<PathBuf>,
    no_rtvirt: bool,
    json: bool,
) -> Result<ExitCode> {
    let layout = Layout::from_env()?;
    let k = kernel_of(&layout, &kernel)?;
    let dir = match out {
        Some(o) => {
            std::fs::create_dir_all(&o)?;
            o.canonicalize()?
        }
        None => layout.new_out_dir("boot")?,
    };
    let spinner = LineSpinner::start("rtvirt-lab boot");
    let initrd = match kernel.initrd {
        Some(i) => i,
        None => lab::image::build(&layout, &k, &dir, None, !no_rtvirt)?.initrd,
    };
    let qemu = lab::initramfs::find_program("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found: run lab/setup.sh")?;
    let lab_profile = profiles::load("lab").context("Loading the bundled lab profile")?;
    let d = lab::qemu::Definition::of(&lab_profile.profile)?;
    let config =
        lab::qemu::VmConfig::of_definition(d, qemu, (&k.vmlinuz, &initrd, &vm_args.append), &dir);
    let mut temp = vec![
        config.qmp.clone(),
        config.share.join("cmd"),
        config.share.join("ready"),
    ];
    let (mut vm, reason, info, _) = flow::boot::boot_chosen(
        &config,
        Purpose::Guest,
        Duration::from_secs(vm_args.kvm_probe),
        Duration::from_secs(vm_args.boot_timeout),
        &mut temp,
    )?;
    drop(spinner);
    eprintln!("lab: accel {} ({reason})", vm.accel);
    let mut agent = Agent::new(&config.share);
    let vcpus = lab::sched::vcpu_samples(vm.pid, vm.accel.thread_suffix())?;
    eprintln!("lab: vCPU threads: {vcpus:?}");
    let mut report = BootReport {
        accel: vm.accel.to_string(),
        accel_reason: reason.to_string(),
        qemu_pid: vm.pid,
        definition: vm.launch.clone(),
        guest: info,
        vcpus,
        exec: Vec::new(),
    };
    if !json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&report.guest)?);
    }
    let failed = run_exec(&mut vm, &mut agent, &config, &exec, json, &mut report)?;
    vm.stop();
    flow::remove_temp(&mut temp);
    if json {
        rtvirt_cli::outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if failed {
        ExitCode::from(rtvirt_cli::exit::NOT_MET)
    } else {
        ExitCode::SUCCESS
    })
}

/// Without commands, wait until Ctrl-C or the VM ends; with them, run each in the guest.
/// True when one failed.
fn run_exec(
    vm: &mut lab::qemu::Vm,
    agent: &mut Agent,
    config: &lab::qemu::VmConfig,
    exec: &[String],
    json: bool,
    report: &mut BootReport,
) -> Result<bool> {
    let mut failed = false;
    if exec.is_empty() {
        eprintln!(
            "lab: guest up (QEMU pid {}, QMP {}, console {}); Ctrl-C stops it",
            vm.pid,
            config.qmp.display(),
            config.console.display()
        );
        while !lab::interrupted() && vm.alive() {
            std::thread::sleep(Duration::from_millis(200));
        }
    } else {
        for cmd in exec {
            let out = agent.run(vm, cmd, Duration::from_secs(300))?;
            if !json {
                rtvirt_cli::out!("{}", out.output);
            }
            eprintln!("lab: guest command exited {}", out.rc);
            failed |= out.rc != 0;
            report.exec.push(out);
        }
        let _ = agent.poweroff(vm);
    }
    Ok(failed)
}
