//! The host lab (`rtvirt-lab flow --host-lab`): an outer QEMU VM plays the HIL host
//! (4 vCPUs, Debian's standard kernel booted with what `rt-host boot-args PROFILE`
//! prints, KVM on the emulated SVM/NPT, rt-host and QEMU inside), and the flow runs there
//! for real: the profile's VMs under KVM in the outer host (the first, the ECU guest,
//! boots; the others start paused, their vCPU threads there to be tuned), `rt-host
//! check`, `setup`, `check` in the outer host for all of them at once, the guest tools in
//! the inner guest, `rt-host revert`, the runs and the report brought out to this machine.
//!
//! Stages in order, each a function here: prepare (profile, binaries, kernels, the
//! guest's and the outer host's images), boot the outer host, start the VMs in it, the
//! guest before tuning, the outer host before tuning (IRQs spread as a balancer would,
//! snapshot, `rt-host check`), tune (`rt-host setup`, snapshot, `check`), the guest
//! tuned, CAN across the VM boundary ([`boundary`]), revert (`rt-host revert`, snapshot), stop, `host-lab.json`, the runs and the
//! report. The guest and report stages are the 2-CPU flow's ([`crate::flow`]).

pub mod boundary;
pub mod image;
pub mod inner;
pub mod outer;
pub mod record;
pub mod snapshot;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::{Accel, Purpose};
use crate::flow::guest::{self as gstage, GuestPlan, GuestRun};
use crate::flow::host::RtHost;
use crate::flow::prepare::{self, FlowProfile, HostBins};
use crate::flow::{self, boot, collect, FlowOptions};
use crate::guest::Agent;
use crate::layout::{Kernel, Layout};
use crate::qemu::VmConfig;
use crate::summary::{Step, Summary};
use inner::{InnerVm, InnerWatch};
use outer::{Outer, OuterExec};
use record::{HostLabRecord, HostLabSummary, Moments, OuterHost};

/// The outer host's vCPUs (at least; more when the profile names higher CPUs).
pub const OUTER_CPUS: u32 = 4;
/// The journal directory in the outer host.
pub const JOURNAL: &str = "/run/rt-host-lab";
/// How much longer the nested inner guest may take to boot than `--boot-timeout`.
pub const INNER_BOOT_FACTOR: u32 = 4;

/// A running host lab: the outer host with the profile's VMs (and a second VM) in it.
pub struct HostLab {
    /// The layout.
    pub layout: Layout,
    /// The output directory.
    pub out: PathBuf,
    /// The profile.
    pub profile: FlowProfile,
    /// rt-host and validation on this machine.
    pub bins: HostBins,
    /// The outer host.
    pub outer: Option<Outer>,
    /// The profile's first VM, the guest, in the outer host.
    pub inner: Option<InnerVm>,
    /// Its agent (its share is nested in the outer host's).
    pub inner_agent: Option<Agent>,
    /// The profile's other VMs, started paused (each can boot the lab's image once resumed).
    pub paused: Vec<InnerVm>,
    /// The agent of the first of them, once it was resumed and booted.
    pub second_agent: Option<Agent>,
    /// The second VM, which rt-host must not touch.
    pub other: Option<InnerVm>,
    /// Set once `rt-host setup` was attempted: cleanup reverts.
    pub tuned: Option<RtHost>,
    /// What the flow did.
    pub summary: Summary,
    /// Facts for `host-lab.json`.
    pub facts: OuterHost,
    temp: Vec<PathBuf>,
}

/// Run the host-lab flow; always returns a summary (written to `OUT/summary.json`), with
/// `error` set when it failed.
pub fn run(opts: &FlowOptions) -> Result<Summary> {
    let start = Instant::now();
    let mut lab = HostLab::new(opts, "host-lab")?;
    eprintln!("lab: host-lab output in {}", lab.out.display());
    let result = lab.boot(opts).and_then(|()| lab.stages(opts));
    if let Err(e) = &result {
        lab.summary.error = Some(format!("{e:#}"));
        eprintln!("lab: error: {e:#}");
    }
    lab.cleanup();
    lab.summary.secs = start.elapsed().as_secs_f64();
    flow::write_summary(&lab.summary)?;
    Ok(std::mem::take(&mut lab.summary))
}

impl Drop for HostLab {
    /// A panic still reverts the outer host and stops the VMs (cleanup is idempotent).
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Time a step and record it.
fn timed<T>(
    steps: &mut Vec<Step>,
    name: &str,
    f: impl FnOnce() -> Result<(T, String)>,
) -> Result<T> {
    let t = Instant::now();
    eprintln!("lab: {name}");
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    match r {
        Ok((v, note)) => {
            steps.push(Step {
                name: name.to_string(),
                rc: Some(0),
                secs,
                ok: true,
                note,
            });
            Ok(v)
        }
        Err(e) => {
            steps.push(Step {
                name: name.to_string(),
                rc: None,
                secs,
                ok: false,
                note: format!("{e:#}"),
            });
            Err(e)
        }
    }
}

impl HostLab {
    /// A host lab for `opts` (nothing started yet), its output in `--out` or a new
    /// `lab/out/KIND-UTC`.
    pub fn new(opts: &FlowOptions, kind: &str) -> Result<HostLab> {
        let layout = Layout::from_env()?;
        let out = flow::out_dir(&layout, opts.out.as_deref(), kind)?;
        let profile = prepare::profile(&opts.profile)?;
        let bins = prepare::host_bins(&layout);
        Ok(HostLab {
            summary: Summary {
                out: out.clone(),
                profile: opts.profile.clone(),
                ..Summary::default()
            },
            layout,
            out,
            profile,
            bins,
            outer: None,
            inner: None,
            inner_agent: None,
            paused: Vec::new(),
            second_agent: None,
            other: None,
            tuned: None,
            facts: OuterHost::default(),
            temp: Vec::new(),
        })
    }

    fn share(&self) -> PathBuf {
        self.out.join("share")
    }

    /// The profile's host section.
    pub fn host(&self) -> Result<&profiles::Host> {
        self.profile
            .loaded
            .profile
            .host
            .as_ref()
            .context("The host lab needs a profile with a `host` section")
    }

    /// Prepare and boot: images, the outer host, the VMs in it, the guest up.
    pub fn boot(&mut self, opts: &FlowOptions) -> Result<()> {
        self.boot_outer(opts)?;
        self.stage_start_vms(opts, true)
    }

    /// Like [`HostLab::boot`], but without waiting for the guest to come up (its vCPU
    /// threads exist from QEMU's start): for tests of the host side alone. The IRQs are
    /// spread as in the flow.
    pub fn boot_without_guest(&mut self, opts: &FlowOptions) -> Result<()> {
        self.boot_outer(opts)?;
        self.stage_start_vms(opts, false)?;
        self.stage_spread_irqs()
    }

    /// Prepare and boot the outer host.
    fn boot_outer(&mut self, opts: &FlowOptions) -> Result<()> {
        let missing = self.bins.missing.clone();
        self.summary.missing = missing.clone();
        if !missing.is_empty() && !opts.keep_going {
            bail!("Contract commands missing: {}", missing.join("; "));
        }
        let rt_host = self.bins.rt_host.clone().context(
            "rt-host is missing: the outer host runs this machine's rt-host (cargo build --release -p rt-host)",
        )?;
        let config = self.stage_images(opts, &rt_host)?;
        self.stage_boot_outer(opts, &config)
    }

    /// Images: the guest's (PREEMPT_RT kernel) and the outer host's (standard kernel).
    fn stage_images(&mut self, opts: &FlowOptions, rt_host: &std::path::Path) -> Result<VmConfig> {
        let inner_kernel = prepare::kernel(&self.layout, opts.kernel.as_deref())?;
        let mut missing = Vec::new();
        let (inner_initrd, built) = prepare::guest_image(
            &self.layout,
            &inner_kernel,
            opts.initrd.as_deref(),
            &self.profile,
            &self.out,
            &mut self.summary.steps,
            &mut missing,
        )?;
        self.summary.missing.extend(missing);
        if built {
            self.temp.push(inner_initrd.clone());
        }
        self.summary.kernel = inner_kernel.vmlinuz.clone();
        self.summary.initrd = inner_initrd.clone();
        let std_kernel = Kernel::standard_from_cache(&self.layout.cache)?;
        let (layout, out, file) = (
            self.layout.clone(),
            self.out.clone(),
            self.profile.file.clone(),
        );
        // The module parameters that only apply at load go in as a real host's
        // /etc/modprobe.d would give them; rt-host tunes the runtime ones itself.
        let host = self.host()?.clone();
        let load_time: Vec<_> = rt_host::modprobe::params(&host)
            .into_iter()
            .filter(|p| !p.runtime)
            .collect();
        let modprobe_conf =
            rt_host::modprobe::file_text(&self.profile.loaded.profile.name, &load_time);
        let can_ifaces = image::can_host_interfaces(&host);
        let ptp_kvm = inner_kernel
            .modules
            .as_ref()
            .map(|m| m.join(image::PTP_KVM_MODULE))
            .filter(|p| p.is_file());
        let img = timed(
            &mut self.summary.steps,
            "host: build outer host image",
            || {
                let payload = image::Payload {
                    inner_kernel: &inner_kernel.vmlinuz,
                    inner_initrd: &inner_initrd,
                    inner_ptp_kvm: ptp_kvm.as_deref(),
                    rt_host,
                    extra_profile: file.as_deref(),
                    modprobe_conf: &modprobe_conf,
                    can_ifaces: &can_ifaces,
                };
                let img = image::build(&layout, &std_kernel, &payload, &out)?;
                let note = format!(
                    "kernel {}; modules {}",
                    img.kernel_version,
                    img.modules.join(" ")
                );
                Ok((img, note))
            },
        )?;
        self.temp.push(img.initrd.clone());
        let host = self.host()?.clone();
        // The outer host is QEMU TCG `-cpu max`, which offers svm: an AMD CPU to the kernel.
        let boot_args =
            rt_host::bootargs::line(&rt_host::bootargs::boot_args(&host, Some("AuthenticAMD")));
        self.facts.boot_args = boot_args.clone();
        let cpus = host
            .housekeeping_cpus
            .iter()
            .chain(host.realtime_cpus.iter())
            .max()
            .map_or(OUTER_CPUS, |c| (c + 1).max(OUTER_CPUS));
        let hugepages_mib = host
            .hugepages
            .as_ref()
            .map_or(0, |h| h.count.saturating_mul(h.size_kib) / 1024);
        let qemu = crate::initramfs::find_program("qemu-system-x86_64")
            .context("qemu-system-x86_64 not found: run lab/setup.sh")?;
        let share = self.share();
        Ok(VmConfig {
            qemu,
            name: "hil-host".into(),
            kernel: img.kernel,
            initrd: img.initrd,
            append: boot_args,
            smp: cpus,
            mem_mib: u32::try_from(hugepages_mib + 1024).unwrap_or(u32::MAX),
            share,
            qmp: self.out.join("qmp.sock"),
            console: self.out.join("console.log"),
            qemu_log: self.out.join("qemu.log"),
            housekeeping: "0".into(),
            can: false,
            extra: vec!["-nic".into(), "none".into()],
            definition: None,
        })
    }

    /// The outer host: the accelerator chosen once, booted until its agent is ready,
    /// with `/dev/kvm`.
    fn stage_boot_outer(&mut self, opts: &FlowOptions, config: &VmConfig) -> Result<()> {
        flow::check_interrupt()?;
        fs::create_dir_all(config.share.join("inner"))?;
        self.temp.extend([
            config.share.join("cmd"),
            config.share.join("ready"),
            config.qmp.clone(),
            config.share.join("inner/cmd"),
            config.share.join("inner/ready"),
            config.share.join("exec"),
            config.share.join("fetch"),
            config.share.join("snap"),
        ]);
        let (vm, reason, info, secs) = boot::boot_chosen(
            config,
            Purpose::NestedHost,
            opts.kvm_probe,
            opts.boot_timeout,
            &mut self.temp,
        )?;
        self.summary.qemu_pid = Some(vm.pid);
        let kvm_module = info.extra.get("kvm_module").cloned().unwrap_or_default();
        self.facts.kernel = info.uname_r.clone();
        self.facts.kernel_version = info.uname_v.clone();
        self.facts.cmdline = info.extra.get("cmdline").cloned().unwrap_or_default();
        self.facts.cpus = info.nproc;
        self.facts.accel = vm.accel.to_string();
        self.facts.accel_reason = reason;
        self.facts.kvm_module = kvm_module.clone();
        self.summary.steps.push(Step {
            name: format!("boot outer host ({})", vm.accel),
            rc: Some(0),
            secs,
            ok: true,
            note: format!(
                "{} {}; {} CPUs; {kvm_module}",
                info.uname_r, info.uname_v, info.nproc
            ),
        });
        let kvm = info.extra.get("kvm").map(String::as_str) == Some("yes");
        let mut o = Outer::new(vm, &config.share, info);
        if !kvm {
            let dmesg = o
                .sh(
                    "dmesg | grep -iE 'kvm|svm|vmx' | tail -5",
                    Duration::from_secs(30),
                )
                .map(|x| x.output)
                .unwrap_or_default();
            self.outer = Some(o);
            bail!(
                "The outer host has no {} (KVM module {kvm_module:?}; the outer CPU must show svm or vmx): {dmesg}",
                rt_sys::SysRoot::live().display(rt_sys::kernel::KVM_DEVICE)
            );
        }
        self.outer = Some(o);
        Ok(())
    }

    fn outer(&mut self) -> Result<&mut Outer> {
        self.outer.as_mut().context("The outer host is gone")
    }

    /// In the outer host: the profile's VMs (the first is the guest, the others paused)
    /// and the second VM, the guest up when `wait_guest`.
    fn stage_start_vms(&mut self, opts: &FlowOptions, wait_guest: bool) -> Result<()> {
        let views = profiles::host_vms(self.host()?);
        if views.is_empty() {
            bail!("The host lab needs a profile with a VM (host.vms or host.vm)");
        }
        let t = Instant::now();
        for (i, view) in views.iter().enumerate() {
            let vm = self.start_profile_vm(view, i > 0)?;
            if i == 0 {
                self.inner = Some(vm);
            } else {
                self.paused.push(vm);
            }
        }
        let housekeeping = views[0].emulator_cpus.to_string();
        let o = self.outer.as_mut().context("The outer host is gone")?;
        let other = inner::start(o, "other", &inner::other_argv(), &housekeeping)?;
        o.sh_ok(&inner::wait_script(other.pid, 1), Duration::from_secs(90))?;
        self.facts.other_pid = Some(other.pid);
        self.other = Some(other);
        if !wait_guest {
            return Ok(());
        }
        let agent = Agent::new(&inner::share_on_host(&self.share()));
        let timeout = opts.boot_timeout * INNER_BOOT_FACTOR;
        let info = {
            let (o, vm) = (
                self.outer.as_mut().context("outer")?,
                self.inner.as_ref().context("inner")?,
            );
            let mut w = InnerWatch {
                outer: &mut o.vm,
                inner: vm,
            };
            agent.wait_ready(&mut w, timeout)?
        };
        self.summary.steps.push(Step {
            name: "outer host: boot the guest (kvm)".into(),
            rc: Some(0),
            secs: t.elapsed().as_secs_f64(),
            ok: true,
            note: format!("{} {}; {} CPUs", info.uname_r, info.uname_v, info.nproc),
        });
        self.summary.accel = Accel::Kvm.to_string();
        self.summary.accel_reason = format!(
            "KVM in the outer host ({}), itself a QEMU {} VM on this machine: nested",
            self.facts.kvm_module, self.facts.accel
        );
        flow::guest_has(&info, &self.profile.can)?;
        self.summary.guest = Some(info);
        self.inner_agent = Some(agent);
        Ok(())
    }

    /// Start the profile's VM `view` in the outer host from what `rt-host vm --vm NAME
    /// --format qemu` renders there, `paused` (`-S`) or as the booting guest; wait for its
    /// vCPU threads and let them run on every CPU (rt-host pins them).
    fn start_profile_vm(&mut self, view: &profiles::VmView, paused: bool) -> Result<InnerVm> {
        let profile = self.profile.in_image.clone();
        let o = self.outer.as_mut().context("The outer host is gone")?;
        let rendered = timed(
            &mut self.summary.steps,
            &format!("outer host: rt-host vm --vm {} --format qemu", view.name),
            || {
                let r = inner::render(o, &profile, &view.name)?;
                let note = r.join(" ");
                Ok((r, note))
            },
        )?;
        let (tag, argv) = if paused {
            o.sh_ok(&inner::prepare_script(&view.name), Duration::from_secs(30))?;
            (
                view.name.clone(),
                inner::bootable_paused_argv(&rendered, &view.name),
            )
        } else {
            ("inner".to_string(), inner::argv(&rendered))
        };
        let n = inner::vcpus(&argv)
            .with_context(|| format!("The rendered definition of {} has no -smp", view.name))?;
        let vm = inner::start(o, &tag, &argv, &view.emulator_cpus.to_string())?;
        let all = format!("0-{}", o.info.nproc.saturating_sub(1));
        o.sh_ok(
            &inner::widen_script(vm.pid, n, &all),
            Duration::from_secs(90),
        )?;
        self.facts.vms.push(record::InnerVmFacts {
            name: view.name.clone(),
            pid: vm.pid,
            argv,
            paused,
        });
        Ok(vm)
    }

    /// Run one guest stage in the inner guest.
    pub fn guest_stage(
        &mut self,
        failures: &mut Vec<String>,
        stage: impl FnOnce(&mut GuestRun<'_>) -> Result<()>,
    ) -> Result<()> {
        let o = self.outer.as_mut().context("The outer host is gone")?;
        let vm = self.inner.as_ref().context("The guest is not running")?;
        let agent = self.inner_agent.as_mut().context("No guest agent")?;
        let mut w = InnerWatch {
            outer: &mut o.vm,
            inner: vm,
        };
        let mut gr = GuestRun {
            agent,
            vm: &mut w,
            steps: Vec::new(),
            failures,
        };
        let r = stage(&mut gr);
        self.summary.steps.append(&mut gr.steps);
        r
    }

    /// rt-host in the outer host for the profile's VM, journalling in [`JOURNAL`].
    pub fn rt_host(&self) -> RtHost {
        RtHost {
            bin: image::RT_HOST.into(),
            profile: self.profile.in_image.clone(),
            journal: JOURNAL.into(),
            vm_pid: None,
            out: self.out.clone(),
        }
    }

    /// Snapshot `name` of the outer host into `OUT/snapshots/NAME` (a step).
    pub fn snapshot(&mut self, name: &str) -> Result<PathBuf> {
        let dir = self.out.join("snapshots");
        let o = self.outer.as_mut().context("The outer host is gone")?;
        timed(
            &mut self.summary.steps,
            &format!("outer host: snapshot {name}"),
            || {
                let p = o.snapshot(name, &dir)?;
                Ok((p.clone(), p.display().to_string()))
            },
        )
    }

    /// Copy the outer host's journal to `OUT/DIR` (before revert removes it).
    pub fn fetch_journal(&mut self, dir: &str) -> Result<PathBuf> {
        let to = self.out.join(dir);
        self.outer()?.fetch_dir(JOURNAL, &to)?;
        Ok(to)
    }

    /// The whole flow after [`HostLab::boot`].
    fn stages(&mut self, opts: &FlowOptions) -> Result<()> {
        let p = self.profile.clone();
        let plan = GuestPlan::new(&p, opts);
        let mut failures = Vec::new();
        self.guest_stage(&mut failures, |gr| gstage::untuned(gr, &plan))?;
        let before = self.stage_before()?;
        let tuned = self.stage_tune()?;
        self.guest_stage(&mut failures, |gr| gstage::tuned(gr, &plan))?;
        self.stage_boundary(&plan, &mut failures)?;
        self.guest_stage(&mut failures, |gr| gstage::finish(gr, &plan))?;
        let after = self.stage_revert()?;
        self.stage_stop()?;
        let snaps = Moments {
            before,
            tuned,
            after,
        };
        let journal = self.out.join("journal");
        self.stage_record(&snaps, &journal)?;
        let runs_dir = collect::bring_out(&inner::share_on_host(&self.share()), &self.out)?;
        let across = boundary::bring_out(&self.share(), &runs_dir)?;
        let mut runs = collect::cross_check(&runs_dir, &p.can, &mut self.summary);
        runs.extend(across);
        self.summary.runs.clone_from(&runs);
        let mut notes = collect::lab_notes(&self.summary, "the outer host");
        notes.push(format!(
            "rtvirt host lab: the KVM host is a {}-CPU QEMU {} VM ({}) on a machine running {}; the guest is nested: timings are not real-time evidence",
            self.facts.cpus,
            self.facts.accel,
            self.facts.accel_reason,
            rt_sys::kernel::facts(&rt_sys::SysRoot::live()).map(|f| f.release).unwrap_or_default(),
        ));
        let attachment = crate::check::Attachment {
            loaded: &p.loaded,
            host_check: collect::host_check(&self.out)?,
            notes,
        };
        crate::check::attach(&runs, &attachment)?;
        let missing = self.summary.missing.clone();
        let evidence = collect::Evidence {
            validation: self.bins.validation.as_deref(),
            runs: &runs,
            guest_failures: &failures,
            missing: &missing,
        };
        collect::report(&evidence, &self.out, &mut self.summary)
    }

    /// Before tuning: IRQs spread over every CPU (as an IRQ balancer would leave them),
    /// snapshot `before`, `rt-host check` (also with the VM found by QMP).
    fn stage_before(&mut self) -> Result<PathBuf> {
        self.stage_spread_irqs()?;
        let before = self.snapshot("before")?;
        let r = self.rt_host();
        let o = self.outer.as_mut().context("The outer host is gone")?;
        r.check(
            &mut OuterExec(o),
            "host-check-before.json",
            &mut self.summary.steps,
        )?;
        if let Some(s) = self.summary.steps.last_mut() {
            s.name.push_str(" (before setup)");
        }
        // The VM as the plan finds it: by its name, and through its QMP socket.
        let by_qmp = RtHost {
            profile: self.write_qmp_profile()?,
            ..r.clone()
        };
        let o = self.outer.as_mut().context("The outer host is gone")?;
        r.plan(&mut OuterExec(o), "host-plan.json", &mut self.summary.steps)?;
        by_qmp.plan(
            &mut OuterExec(o),
            "host-plan-by-qmp.json",
            &mut self.summary.steps,
        )?;
        if let Some(s) = self.summary.steps.last_mut() {
            s.name.push_str(" (VM found by QMP)");
        }
        self.facts.found_by = [
            plan_vm(&self.out.join("host-plan.json")),
            plan_vm(&self.out.join("host-plan-by-qmp.json")),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(before)
    }

    /// Ask more of rt-host's IRQ steering than the boot arguments leave: every IRQ's
    /// affinity on every CPU, as an IRQ balancer might set it.
    fn stage_spread_irqs(&mut self) -> Result<()> {
        let all = CpuSetMask::all(self.facts.cpus);
        let o = self.outer.as_mut().context("The outer host is gone")?;
        let name = "outer host: IRQs spread over every CPU, as an IRQ balancer would";
        let spread = timed(&mut self.summary.steps, name, || {
            let out = o.sh_ok(&spread_irqs_script(&all.0), Duration::from_secs(60))?;
            let lines: Vec<String> = out.output.lines().map(str::to_string).collect();
            let note = lines.join("; ");
            Ok((lines, note))
        })?;
        self.facts.irqs_spread = spread;
        Ok(())
    }

    /// The profile with its first VM (the guest) found by its QMP socket, in the share;
    /// returns its path in the outer host.
    fn write_qmp_profile(&self) -> Result<String> {
        let guest = self.facts.vms.first().context("No VM started")?;
        let qmp =
            inner::qmp_socket(&guest.argv).context("The guest's command line has no QMP socket")?;
        let p = found_by_qmp(&self.profile.loaded.profile, &qmp)?;
        let name = format!("{}-by-qmp.ron", p.name);
        let text = ron::ser::to_string_pretty(&p, ron::ser::PrettyConfig::default())
            .context("Writing the profile as RON")?;
        fs::write(self.share().join(&name), text)?;
        Ok(format!("{}/{name}", crate::initramfs::GUEST_SHARE))
    }

    /// `rt-host setup`, the journal copied out, snapshot `tuned`, `rt-host check`.
    fn stage_tune(&mut self) -> Result<PathBuf> {
        flow::check_interrupt()?;
        let r = self.rt_host();
        self.tuned = Some(r.clone());
        let o = self.outer.as_mut().context("The outer host is gone")?;
        r.setup(&mut OuterExec(o), &mut self.summary.steps)?;
        self.fetch_journal("journal")?;
        let tuned = self.snapshot("tuned")?;
        let o = self.outer.as_mut().context("The outer host is gone")?;
        r.check(
            &mut OuterExec(o),
            "host-check.json",
            &mut self.summary.steps,
        )?;
        Ok(tuned)
    }

    /// `rt-host revert`, snapshot `after`.
    fn stage_revert(&mut self) -> Result<PathBuf> {
        if let Some(r) = self.tuned.take() {
            let o = self.outer.as_mut().context("The outer host is gone")?;
            r.revert(&mut OuterExec(o), &mut self.summary.steps)?;
        }
        self.snapshot("after")
    }

    /// The guest powered off, the second VM and the outer host stopped.
    fn stage_stop(&mut self) -> Result<()> {
        if let (Some(agent), Some(o), Some(vm)) = (
            self.inner_agent.as_mut(),
            self.outer.as_mut(),
            self.inner.as_ref(),
        ) {
            let mut w = InnerWatch {
                outer: &mut o.vm,
                inner: vm,
            };
            let _ = agent.poweroff(&mut w);
        }
        self.stop_vms();
        if let Some(mut o) = self.outer.take() {
            let _ = o.agent.poweroff(&mut o.vm);
            o.vm.stop();
        }
        Ok(())
    }

    /// `host-lab.json` from the snapshots and the journal copy.
    pub fn stage_record(
        &mut self,
        snaps: &Moments<PathBuf>,
        journal: &std::path::Path,
    ) -> Result<HostLabRecord> {
        let values = record::values(journal, snaps)?;
        let vms = self
            .facts
            .vms
            .iter()
            .map(|v| {
                Ok(record::VmHistory {
                    name: v.name.clone(),
                    pid: v.pid,
                    vcpus: record::threads(snaps, v.pid, |n| {
                        rt_sys::task::vcpu_index(n).is_some()
                    })?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let other_vm = match self.facts.other_pid {
            Some(pid) => record::threads(snaps, pid, |_| true)?,
            None => Vec::new(),
        };
        let rec = HostLabRecord {
            format: record::FORMAT,
            profile: self.profile.loaded.profile.name.clone(),
            outer: self.facts.clone(),
            values,
            vms,
            other_vm,
        };
        let path = self.out.join(record::FILE);
        fs::write(&path, serde_json::to_string_pretty(&rec)?)
            .with_context(|| format!("Writing {}", path.display()))?;
        // The summary's samples are the guest's, as in the 2-CPU flow.
        let guest: &[record::ThreadHistory] = rec.vms.first().map_or(&[], |v| &v.vcpus);
        let sample = |f: fn(&record::ThreadHistory) -> Option<crate::sched::VcpuSample>| {
            guest.iter().filter_map(f).collect::<Vec<_>>()
        };
        self.summary.vcpus_before = sample(|t| t.state.before.clone());
        self.summary.vcpus_tuned = sample(|t| t.state.tuned.clone());
        self.summary.vcpus_after = sample(|t| t.state.after.clone());
        self.summary.host_lab = Some(HostLabSummary {
            record: path,
            values: rec.values.len(),
            restored: rec.values.iter().filter(|v| v.restored).count(),
            not_restored: rec.not_restored(),
            absent: rec.absent(),
            outer: rec.outer.clone(),
        });
        Ok(rec)
    }

    /// Stop the QEMUs in the outer host (SIGTERM to the pids the lab started).
    fn stop_vms(&mut self) {
        let pids: Vec<u32> = [self.inner.take(), self.other.take()]
            .into_iter()
            .flatten()
            .chain(std::mem::take(&mut self.paused))
            .filter(|v| v.exit_status().is_none())
            .map(|v| v.pid)
            .collect();
        if pids.is_empty() {
            return;
        }
        if let Some(o) = self.outer.as_mut() {
            let list = pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            let script = format!(
                "kill {list} 2>/dev/null\ni=0\nwhile [ $i -lt 50 ] && kill -0 {list} 2>/dev/null; do sleep 0.2; i=$((i + 1)); done\nkill -9 {list} 2>/dev/null; true"
            );
            let _ = o.sh(&script, Duration::from_secs(30));
        }
    }

    /// Revert the outer host if it was tuned, stop the VMs, remove temporary files.
    pub fn cleanup(&mut self) {
        if let Some(r) = self.tuned.take() {
            if let Some(o) = self.outer.as_mut().filter(|o| o.vm.pid > 0) {
                if !o.vm.alive() {
                    // The outer host is gone, and its tuning with it.
                } else if let Some(cmd) = o.agent.stuck() {
                    self.summary.cleanup_errors.push(format!(
                        "rt-host revert in the outer host skipped: its agent still runs `{cmd}`; the outer VM is stopped, and its tuning goes with it"
                    ));
                } else if let Err(e) = r.revert(&mut OuterExec(o), &mut self.summary.steps) {
                    self.summary
                        .cleanup_errors
                        .push(format!("rt-host revert in the outer host: {e:#}"));
                }
            }
        }
        self.stop_vms();
        if let Some(mut o) = self.outer.take() {
            o.vm.stop();
            if o.vm.alive() {
                self.summary
                    .cleanup_errors
                    .push(format!("QEMU pid {} did not stop", o.vm.pid));
            }
        }
        flow::remove_temp(&mut self.temp);
    }
}

/// `profile` with its first VM found by the QMP socket `qmp` (the others as before).
fn found_by_qmp(profile: &profiles::Profile, qmp: &str) -> Result<profiles::Profile> {
    let mut p = profile.clone();
    let host = p.host.as_mut().context("no host section")?;
    let by_qmp = |memory_mib| profiles::Vm {
        qmp: Some(qmp.into()),
        memory_mib,
        ..profiles::Vm::default()
    };
    match host.vms.first_mut() {
        Some(v) => v.find = Some(by_qmp(None)),
        None => {
            let memory_mib = host.vm.as_ref().and_then(|v| v.memory_mib);
            host.vm = Some(by_qmp(memory_mib));
        }
    }
    Ok(p)
}

/// How `rt-host plan` found the VM and its vCPU threads (`vm.found_by`, `vm.vcpus` of
/// its JSON), as `FOUND_BY: vCPU 0 = TID (NAME), ...`.
fn plan_vm(path: &std::path::Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    let vm = v.get("vm")?;
    let vcpus: Vec<String> = vm
        .get("vcpus")?
        .as_object()?
        .iter()
        .map(|(i, t)| format!("vCPU {i} = {}", t.as_str().unwrap_or("?")))
        .collect();
    Some(format!(
        "{}: {}",
        vm.get("found_by")?.as_str()?,
        vcpus.join(", ")
    ))
}

/// The affinity mask of every CPU of an `n`-CPU machine (`f` for 4).
struct CpuSetMask(String);

impl CpuSetMask {
    fn all(n: u32) -> CpuSetMask {
        CpuSetMask(rt_sys::CpuSet::from_cpus(0..n.max(1)).to_mask())
    }
}

/// The outer host's script that writes `mask` to every IRQ's `smp_affinity` (as an IRQ
/// balancer might leave them), printing `spread N` and each refusal.
pub fn spread_irqs_script(mask: &str) -> String {
    format!(
        r#"n=0
for f in {irqs}; do
    if echo {mask} > $f 2>/dev/null; then n=$((n + 1)); else echo "refused $f"; fi
done
echo "spread $n IRQs to {mask}""#,
        irqs = rt_sys::tuned::IRQ_AFFINITIES
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_found_by_qmp_round_trips_through_ron() {
        let p = profiles::load("hil").unwrap().profile;
        let text = ron::ser::to_string_pretty(&p, ron::ser::PrettyConfig::default()).unwrap();
        assert_eq!(profiles::parse(&text, "hil-by-qmp.ron").unwrap(), p);
    }

    #[test]
    fn only_the_guest_is_found_by_qmp() {
        let p = profiles::load("hil").unwrap().profile;
        let q = found_by_qmp(&p, "/run/rtvirt-ecu0.qmp").unwrap();
        let text = ron::ser::to_string_pretty(&q, ron::ser::PrettyConfig::default()).unwrap();
        let q = profiles::parse(&text, "hil-by-qmp.ron").unwrap();
        let vms = profiles::host_vms(q.host.as_ref().unwrap());
        let found: Vec<_> = vms
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.find.qmp.clone(),
                    v.find.qemu_name.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("ecu0", Some("/run/rtvirt-ecu0.qmp".into()), None),
                ("ecu1", None, Some("ecu1".into())),
            ]
        );
    }

    #[test]
    fn the_vm_of_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        fs::write(
            &f,
            r#"{"vm": {"pid": 141, "found_by": "QMP /run/inner-qmp.sock", "vcpus": {"0": "152 (CPU 0/KVM)", "1": "153 (CPU 1/KVM)"}}}"#,
        )
        .unwrap();
        assert_eq!(
            plan_vm(&f).unwrap(),
            "QMP /run/inner-qmp.sock: vCPU 0 = 152 (CPU 0/KVM), vCPU 1 = 153 (CPU 1/KVM)"
        );
        assert!(plan_vm(&dir.path().join("none")).is_none());
    }

    #[test]
    fn irqs_are_spread_over_every_cpu() {
        assert_eq!(
            CpuSetMask::all(4).0,
            rt_sys::CpuSet::parse("0-3").unwrap().to_mask()
        );
        let s = spread_irqs_script("f");
        assert!(s.contains("echo f > $f"));
        assert!(s.ends_with("echo \"spread $n IRQs to f\""));
    }
}
