//! QEMU: the command line of a lab VM, starting it with its main loop on the housekeeping
//! CPU, and QMP (`rt_sys::qmp`, <https://www.qemu.org/docs/master/interop/qmp-spec.html>)
//! to find the vCPU threads and to quit.
//!
//! A profile's VM boots from rt-host's QEMU definition of it ([`Definition`]: what
//! `rt-host vm PROFILE --vm NAME --format qemu` renders), with a named, minimal set of
//! substitutions ([`rt_host::vmdef::Variant`]) where the machine cannot run it as it is:
//! the accelerator and CPU model under TCG, a plain memory backend where the hugepages are
//! not free, no `mem-lock` where QEMU may not lock memory, and the lab's own QMP socket.
//! The lab adds only its kernel, initramfs and command line, `-no-reboot`, the agent's 9p
//! share and, when the VM has no CAN bus, its CAN pair ([`Launch`] records all of it).
//! The host lab's outer VM, which no profile defines, keeps the lab's own line
//! ([`VmConfig::args`]).
//!
//! The main loop and I/O threads stay on the emulator CPUs: QEMU is started under
//! `taskset -c` on them, so every thread it makes inherits that, and only the vCPU threads
//! are widened afterwards (trap 2 in DESIGN.md: a FIFO vCPU on the main loop's CPU
//! starves it).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use profiles::VmView;
use rt_host::vmdef::{self, qemu as vmqemu, Def, Substitution, Variant};
use rt_sys::qmp::{Qmp, QmpCpu};
use rt_sys::{hugepages, task, SysRoot};

use crate::accel::Accel;
use crate::initramfs::SHARE_TAG;

/// A VM of a profile, booted from rt-host's QEMU definition of it.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The profile's name (`rt-host vm PROFILE`).
    pub profile: String,
    /// The VM as the profile defines it.
    pub vm: VmView,
    /// Where it came from, when not simply the profile's only VM.
    pub note: Option<String>,
}

impl Definition {
    /// The VM to boot for `profile`: its first VM, or, when it defines none, the bundled
    /// `lab` profile's. A VM that boots its own kernel or disk cannot run the lab's agent.
    pub fn of(profile: &profiles::Profile) -> Result<Definition> {
        let vms = profile
            .host
            .as_ref()
            .map(profiles::host_vms)
            .unwrap_or_default();
        let (name, vm, note) = match vms.split_first() {
            Some((first, rest)) => (
                profile.name.clone(),
                first.clone(),
                (!rest.is_empty()).then(|| {
                    format!(
                        "VM {:?}, the first of {} in profile {:?}",
                        first.name,
                        vms.len(),
                        profile.name
                    )
                }),
            ),
            None => {
                let lab = profiles::load("lab").context("Loading the bundled lab profile")?;
                let host = lab
                    .profile
                    .host
                    .context("The bundled lab profile has no host")?;
                let vm = profiles::host_vms(&host)
                    .into_iter()
                    .next()
                    .context("The bundled lab profile has no VM")?;
                let note = format!(
                    "profile {:?} defines no VM (host.vms): the bundled lab profile's VM boots",
                    profile.name
                );
                (lab.profile.name, vm, Some(note))
            }
        };
        if vm.boot.is_some() {
            bail!(
                "{}: VM {:?} of profile {name:?} boots its own kernel or disk; the lab boots its kernel and agent image (use a profile without boot)",
                vm.field("boot"),
                vm.name
            );
        }
        Ok(Definition {
            profile: name,
            vm,
            note,
        })
    }

    /// The `rt-host vm` command that renders the profile's definition.
    pub fn command(&self) -> String {
        format!(
            "rt-host vm {} --vm {} --format qemu",
            self.profile, self.vm.name
        )
    }
}

/// What the lab adds to a definition: one named group of arguments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabArgs {
    /// What it is and why the lab needs it.
    pub what: String,
    /// The arguments.
    pub args: Vec<String>,
}

/// How a profile's VM was started: its definition, what was substituted and why, what
/// the lab added (printed by `rtvirt-lab boot` and flow, kept in `summary.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// The `rt-host vm` command whose argv this is.
    pub definition: String,
    /// Where the VM came from, when not simply the profile's only VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The profile's definition (what that command renders here), without the program.
    pub rendered: Vec<String>,
    /// Each argument of it replaced or dropped, with its reason.
    pub substitutions: Vec<Substitution>,
    /// What the lab adds after it.
    pub lab: Vec<LabArgs>,
    /// The CPUs QEMU starts on (`taskset -c`): the definition's emulator CPUs.
    pub taskset: String,
    /// What the lab does to the threads before `rt-host setup` places them, unlike the
    /// rendered script (which leaves every thread on the emulator CPUs until then).
    #[serde(default)]
    pub after_start: String,
    /// The whole command line after the program.
    pub argv: Vec<String>,
}

impl Launch {
    /// The lines `rtvirt-lab boot` and flow print.
    pub fn lines(&self) -> Vec<String> {
        let mut l = vec![format!(
            "QEMU from `{}` under taskset -c {}{}",
            self.definition,
            self.taskset,
            self.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        )];
        if self.substitutions.is_empty() {
            l.push("  no substitution: the definition runs as rendered".into());
        }
        for s in &self.substitutions {
            l.push(format!("  substituted {s}"));
        }
        for a in &self.lab {
            l.push(format!("  lab adds {}: {}", a.args.join(" "), a.what));
        }
        l.push(format!("  after start: {}", self.after_start));
        l
    }
}

/// Why the VM's hugepages cannot be had here: `free` is this machine's count of free
/// pages of the VM's size (an error when it has no such pool). None when the VM has no
/// hugepages or enough are free.
pub fn hugepages_missing(vm: &VmView, free: Result<u64, String>) -> Option<String> {
    let kib = vm.hugepage_kib?;
    let need = vm
        .memory_mib
        .unwrap_or(0)
        .saturating_mul(1024)
        .div_ceil(kib.max(1));
    match free {
        Err(e) => Some(format!("this machine has no free {kib} kB hugepages ({e})")),
        Ok(free) if free < need => Some(format!(
            "{free} free {kib} kB hugepages here, the VM needs {need} (rt-host setup reserves host.hugepages, but the lab starts QEMU before it tunes the host)"
        )),
        Ok(_) => None,
    }
}

/// Why QEMU may not lock its memory here: without `CAP_IPC_LOCK`, `mlockall` is bounded by
/// `RLIMIT_MEMLOCK` (`limit` in bytes, None: unlimited), and QEMU locks guest RAM and,
/// under TCG, its translation cache.
pub fn mem_lock_refused(
    cap_ipc_lock: Option<bool>,
    limit: Result<Option<u64>, String>,
) -> Option<String> {
    if cap_ipc_lock == Some(true) {
        return None;
    }
    match limit {
        Ok(None) => None,
        Ok(Some(b)) => Some(format!(
            "no CAP_IPC_LOCK and RLIMIT_MEMLOCK is {b} bytes: QEMU's mlockall would fail"
        )),
        Err(e) => Some(format!("no CAP_IPC_LOCK and RLIMIT_MEMLOCK unknown ({e})")),
    }
}

/// The substitutions for `accel` on the machine at `root`.
pub fn variant(accel: Accel, vm: &VmView, root: &SysRoot) -> Variant {
    let free = vm.hugepage_kib.map_or(Ok(0), |kib| {
        root.read_u64(hugepages::free_path(kib, None))
            .map_err(|e| e.to_string())
    });
    Variant {
        accel: accel.into(),
        no_hugepages: hugepages_missing(vm, free),
        no_mem_lock: mem_lock_refused(
            task::has_capability(root, task::CAP_IPC_LOCK),
            task::memlock_limit(root).map_err(|e| e.to_string()),
        ),
    }
}

/// Everything the VM command line needs.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// `-name` (the profile finds the VM by it).
    pub name: String,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Extra kernel command line.
    pub append: String,
    /// vCPUs (the lab's own line; a definition has its own).
    pub smp: u32,
    /// Memory in MiB (the lab's own line; a definition has its own).
    pub mem_mib: u32,
    /// Directory shared over virtio-9p.
    pub share: PathBuf,
    /// QMP socket path.
    pub qmp: PathBuf,
    /// Serial console log.
    pub console: PathBuf,
    /// QEMU's own stdout/stderr.
    pub qemu_log: PathBuf,
    /// Housekeeping CPUs for the main loop and I/O threads (`taskset -c`; a definition
    /// starts on its emulator CPUs).
    pub housekeeping: String,
    /// Two emulated Kvaser PCI CAN cards on one `can-bus` (the guest's can0 and can1); with
    /// a definition, only when its VM has no CAN bus.
    pub can: bool,
    /// More arguments, appended as they are.
    pub extra: Vec<String>,
    /// The profile's VM to boot from rt-host's definition; None: the lab's own line (the
    /// host lab's outer VM, which no profile defines).
    pub definition: Option<Definition>,
}

impl VmConfig {
    /// A profile's VM from its definition, booting `kernel` and `initrd` with `append`;
    /// its share, QMP socket, console and QEMU log in `out`.
    pub fn of_definition(
        d: Definition,
        qemu: PathBuf,
        (kernel, initrd, append): (&Path, &Path, &str),
        out: &Path,
    ) -> VmConfig {
        VmConfig {
            qemu,
            name: d.vm.name.clone(),
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: append.to_string(),
            smp: d.vm.cpus,
            mem_mib: d
                .vm
                .memory_mib
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0),
            share: out.join("share"),
            qmp: out.join("qmp.sock"),
            console: out.join("console.log"),
            qemu_log: out.join("qemu.log"),
            housekeeping: d.vm.emulator_cpus.to_string(),
            can: true,
            extra: Vec::new(),
            definition: Some(d),
        }
    }

    /// The command line (after the QEMU binary) for `accel`, the CPUs QEMU starts on, and
    /// for a definition the record of what differs from it.
    pub fn line(&self, accel: Accel) -> Result<(Vec<String>, String, Option<Launch>)> {
        match &self.definition {
            None => Ok((self.args(accel), self.housekeeping.clone(), None)),
            Some(d) => {
                let l = self.launch(d, accel, &SysRoot::live())?;
                Ok((l.argv.clone(), l.taskset.clone(), Some(l)))
            }
        }
    }

    /// The definition of `d` for `accel` on the machine at `root`, substituted and with
    /// the lab's additions.
    pub fn launch(&self, d: &Definition, accel: Accel, root: &SysRoot) -> Result<Launch> {
        let render = |vm: &VmView, v: &Variant| {
            vmdef::render(&Def::new(&d.profile, vm, root), vmdef::Format::Qemu, v)
                .with_context(|| format!("Rendering {}", d.command()))
        };
        let rendered = render(&d.vm, &Variant::default())?.argv.unwrap_or_default();
        // The lab's QMP socket in its run directory: runs never share one, the flow
        // removes it. rt-host renders it as the VM's `find.qmp`.
        let mut vm = d.vm.clone();
        vm.find.qmp = Some(self.qmp.clone());
        let r = render(&vm, &variant(accel, &vm, root))?;
        let ours = r.argv.unwrap_or_default();
        let mut subs = r.substitutions;
        if let (Some(p), Some(n)) = (option(&rendered, "-qmp"), option(&ours, "-qmp")) {
            if p != n {
                subs.push(Substitution {
                    option: "-qmp".into(),
                    profile: p.to_string(),
                    now: Some(n.to_string()),
                    why: "the lab's own QMP socket in its run directory: runs never share one, and the run removes it".into(),
                });
            }
        }
        if vmqemu::apply(&rendered, &subs) != ours {
            bail!(
                "The substitutions for {} do not account for every difference from its definition",
                d.command()
            );
        }
        let lab = self.lab_args(&d.vm);
        let argv = ours
            .into_iter()
            .chain(lab.iter().flat_map(|a| a.args.iter().cloned()))
            .collect();
        Ok(Launch {
            definition: d.command(),
            note: d.note.clone(),
            rendered,
            substitutions: subs,
            lab,
            taskset: d.vm.emulator_cpus.to_string(),
            after_start: "the vCPU threads are widened to every CPU the lab may use once QMP answers (the untuned guest stage); the main loop and I/O threads stay on the emulator CPUs, and rt-host setup places the vCPUs after boot".into(),
            argv,
        })
    }

    /// What the lab adds to a definition, each named.
    fn lab_args(&self, vm: &VmView) -> Vec<LabArgs> {
        let words = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut out = vec![
            LabArgs {
                what: "the lab's PREEMPT_RT kernel and its agent image".into(),
                args: words(&[
                    "-kernel",
                    &self.kernel.to_string_lossy(),
                    "-initrd",
                    &self.initrd.to_string_lossy(),
                ]),
            },
            LabArgs {
                what: "the kernel's console on the definition's serial port (its mon:stdio goes to console.log), panic=-1 so a panic ends QEMU".into(),
                args: vec!["-append".into(), self.append_line()],
            },
            LabArgs {
                what: "the guest's poweroff or panic ends QEMU instead of rebooting it".into(),
                args: words(&["-no-reboot"]),
            },
            LabArgs {
                what: "the agent's share (commands in, results out)".into(),
                args: vec!["-virtfs".into(), self.virtfs()],
            },
        ];
        if self.can && vm.can_buses.is_empty() {
            out.push(LabArgs {
                what:
                    "the lab's CAN pair: the VM defines no CAN bus, the guest needs can0 and can1"
                        .into(),
                args: can_pair(),
            });
        }
        if !self.extra.is_empty() {
            out.push(LabArgs {
                what: "more arguments given to the lab".into(),
                args: self.extra.clone(),
            });
        }
        out
    }

    fn append_line(&self) -> String {
        format!(
            "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 {}",
            self.append
        )
        .trim()
        .to_string()
    }

    fn virtfs(&self) -> String {
        format!(
            "local,path={},mount_tag={SHARE_TAG},security_model=none",
            self.share.display()
        )
    }

    /// The lab's own command line (after the QEMU binary): the host lab's outer VM.
    pub fn args(&self, accel: Accel) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let cpu = accel.cpu_model();
        let smp = self.smp.to_string();
        let mem = self.mem_mib.to_string();
        let name = format!("{},debug-threads=on", self.name);
        push(&[
            "-accel",
            &accel.to_string(),
            "-cpu",
            cpu,
            "-smp",
            &smp,
            "-m",
            &mem,
        ]);
        push(&["-nographic", "-no-reboot", "-name", &name]);
        if self.can {
            a.extend(can_pair());
        }
        let kernel = self.kernel.to_string_lossy().into_owned();
        let initrd = self.initrd.to_string_lossy().into_owned();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let append = self.append_line();
        push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &append]);
        let virtfs = self.virtfs();
        push(&["-virtfs", &virtfs]);
        let qmp = format!("unix:{},server=on,wait=off", self.qmp.display());
        push(&["-qmp", &qmp]);
        let serial = format!("file:{}", self.console.display());
        push(&["-serial", &serial, "-monitor", "none"]);
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// The lab's CAN pair: two Kvaser PCI cards on one emulated bus (the guest's can0, can1).
fn can_pair() -> Vec<String> {
    [
        "-object",
        "can-bus,id=canbus0",
        "-device",
        "kvaser_pci,canbus=canbus0",
        "-device",
        "kvaser_pci,canbus=canbus0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The value of option `opt` in `argv` (the word after its first occurrence).
pub fn option<'a>(argv: &'a [String], opt: &str) -> Option<&'a str> {
    argv.windows(2).find(|w| w[0] == opt).map(|w| w[1].as_str())
}

/// How long one QMP read or write may take (QEMU under TCG on a loaded host is slow).
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running lab VM: the QEMU child we started (and only that pid is ever signalled).
pub struct Vm {
    child: Option<Child>,
    /// QEMU's pid.
    pub pid: u32,
    /// The accelerator it runs with.
    pub accel: Accel,
    /// Its configuration.
    pub config: VmConfig,
    /// For a profile's VM: its definition, what was substituted, what the lab added.
    pub launch: Option<Launch>,
    exit: Option<String>,
}

impl Vm {
    /// Start QEMU in its own process group (a Ctrl-C in the terminal reaches the lab, which
    /// then shuts the VM down in order) with every thread on the housekeeping CPUs.
    pub fn start(config: &VmConfig, accel: Accel) -> Result<Vm> {
        for p in [&config.console, &config.qmp] {
            if p.exists() {
                fs::remove_file(p).with_context(|| format!("Removing stale {}", p.display()))?;
            }
        }
        fs::create_dir_all(&config.share)
            .with_context(|| format!("Creating {}", config.share.display()))?;
        let (args, cpus, launch) = config.line(accel)?;
        let log = fs::File::create(&config.qemu_log)
            .with_context(|| format!("Creating {}", config.qemu_log.display()))?;
        // A definition's serial console is `-serial mon:stdio`: QEMU's stdout is the console.
        let stdout = match launch {
            Some(_) => fs::File::create(&config.console)
                .with_context(|| format!("Creating {}", config.console.display()))?,
            None => log.try_clone()?,
        };
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpus]).arg(&config.qemu).args(&args);
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("Starting {} under taskset", config.qemu.display()))?;
        let pid = child.id();
        for l in launch.iter().flat_map(Launch::lines) {
            eprintln!("lab: {l}");
        }
        eprintln!(
            "lab: started QEMU pid {pid} ({accel}), console {}",
            config.console.display()
        );
        Ok(Vm {
            child: Some(child),
            pid,
            accel,
            config: config.clone(),
            launch,
            exit: None,
        })
    }

    /// Whether QEMU still runs; remembers how it ended.
    pub fn alive(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exit = Some(status.to_string());
                self.child = None;
                false
            }
            Err(e) => {
                self.exit = Some(format!("wait failed: {e}"));
                false
            }
        }
    }

    /// Why QEMU is gone: its exit status and the end of its own log.
    pub fn gone_reason(&self) -> String {
        let log = fs::read_to_string(&self.config.qemu_log).unwrap_or_default();
        let log = tail(&log, 5);
        format!(
            "QEMU pid {} exited ({}); its log: {}",
            self.pid,
            self.exit.as_deref().unwrap_or("?"),
            if log.is_empty() { "(empty)" } else { &log }
        )
    }

    /// The last `n` lines of the serial console.
    pub fn console_tail(&self, n: usize) -> String {
        let raw = fs::read(&self.config.console).unwrap_or_default();
        tail(&String::from_utf8_lossy(&raw), n)
    }

    /// The console text so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.config.console).unwrap_or_default()).into_owned()
    }

    /// Connect to QMP (waiting up to `timeout` for the socket).
    pub fn qmp(&mut self, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        loop {
            match Qmp::connect(&self.config.qmp, QMP_TIMEOUT) {
                Ok(q) => return Ok(q),
                Err(e) => {
                    if !self.alive() {
                        bail!("{}", self.gone_reason());
                    }
                    if Instant::now() > deadline {
                        return Err(anyhow::Error::new(e).context(format!(
                            "QMP socket {} not ready in {timeout:?}",
                            self.config.qmp.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The vCPU threads, from QMP `query-cpus-fast`.
    pub fn vcpu_threads(&mut self) -> Result<Vec<QmpCpu>> {
        let mut q = self.qmp(Duration::from_secs(10))?;
        Ok(q.cpus_fast()?)
    }

    /// Stop QEMU: QMP `quit`, then SIGTERM, then SIGKILL, each with a grace period.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        if let Ok(mut q) = Qmp::connect(&self.config.qmp, QMP_TIMEOUT) {
            // QEMU may close the socket before it answers `quit`.
            let _ = q.execute("quit");
        }
        if self.wait_gone(Duration::from_secs(5)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if self.wait_gone(Duration::from_secs(5)) {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
    }

    fn wait_gone(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.alive()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` non-empty lines of `text`, joined by newlines (escape codes removed).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| l.replace('\u{1b}', "^["))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            qemu: "qemu-system-x86_64".into(),
            name: "lab".into(),
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd.gz".into(),
            append: "".into(),
            smp: 2,
            mem_mib: 512,
            share: "/o/share".into(),
            qmp: "/o/qmp.sock".into(),
            console: "/o/console.log".into(),
            qemu_log: "/o/qemu.log".into(),
            housekeeping: "0".into(),
            can: true,
            extra: vec!["-nic".into(), "none".into()],
            definition: None,
        }
    }

    /// A machine tree: CAP_IPC_LOCK or not, `free` 2 MiB hugepages.
    fn machine(cap_ipc_lock: bool, free: u64) -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let at = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        let caps = if cap_ipc_lock {
            "0000000000004000"
        } else {
            "0"
        };
        at(
            "proc/self/status",
            &format!("Name:\tlab\nCapEff:\t{caps}\n"),
        );
        at(
            "proc/self/limits",
            "Max locked memory         8388608              8388608              bytes\n",
        );
        at(&hugepages::free_path(2048, None), &format!("{free}\n"));
        let root = SysRoot::new(dir.path());
        (dir, root)
    }

    fn lab_definition() -> (VmConfig, Definition) {
        let p = profiles::load("lab").unwrap().profile;
        let d = Definition::of(&p).unwrap();
        let mut c = config();
        c.extra.clear();
        c.definition = Some(d.clone());
        (c, d)
    }

    fn options(l: &Launch) -> Vec<&str> {
        l.substitutions.iter().map(|s| s.option.as_str()).collect()
    }

    #[test]
    fn under_kvm_the_definition_runs_as_rendered_but_for_the_qmp_socket() {
        let (c, d) = lab_definition();
        let (_dir, root) = machine(true, 0);
        let l = c.launch(&d, Accel::Kvm, &root).unwrap();
        assert_eq!(l.definition, "rt-host vm lab --vm lab --format qemu");
        assert_eq!(options(&l), ["-qmp"]);
        assert_eq!(
            l.substitutions[0].now.as_deref(),
            Some("unix:/o/qmp.sock,server=on,wait=off")
        );
        let n = l.rendered.len();
        assert_eq!(
            l.argv[..n],
            vmqemu::apply(&l.rendered, &l.substitutions)[..]
        );
        assert!(l.argv[..n]
            .windows(2)
            .any(|w| w == ["-machine", "q35,accel=kvm"]));
        // After the definition: only the lab's named additions, no second CAN pair (the
        // lab profile's VM has its bus).
        let lab: Vec<String> = l.lab.iter().flat_map(|a| a.args.clone()).collect();
        assert_eq!(l.argv[n..], lab[..]);
        assert_eq!(
            lab.iter()
                .filter(|a| a.starts_with('-'))
                .collect::<Vec<_>>(),
            ["-kernel", "-initrd", "-append", "-no-reboot", "-virtfs"]
        );
        assert_eq!(
            l.argv
                .iter()
                .filter(|a| *a == "kvaser_pci,canbus=canbus0")
                .count(),
            2
        );
        assert_eq!(l.taskset, "0");
    }

    #[test]
    fn under_tcg_only_the_accelerator_and_cpu_model_are_substituted() {
        let (c, d) = lab_definition();
        let (_dir, root) = machine(true, 0);
        let l = c.launch(&d, Accel::Tcg, &root).unwrap();
        assert_eq!(options(&l), ["-machine", "-cpu", "-qmp"]);
        assert!(l.substitutions.iter().all(|s| !s.why.is_empty()));
        let n = l.rendered.len();
        let differ = (0..n).filter(|&i| l.argv[i] != l.rendered[i]).count();
        assert_eq!(differ, 3, "{:?}", l.argv);
        assert!(l
            .argv
            .windows(2)
            .any(|w| w == ["-overcommit", "mem-lock=on"]));
        assert!(l
            .argv
            .windows(2)
            .any(|w| w[0] == "-cpu" && w[1].starts_with("max,")));
        let text = l.lines().join("\n");
        assert!(
            text.contains("substituted -machine q35,accel=kvm -> q35,accel=tcg: "),
            "{text}"
        );
        assert!(text.contains("lab adds -no-reboot: "), "{text}");
    }

    #[test]
    fn memory_lock_is_dropped_only_without_the_capability_and_the_limit() {
        let (c, d) = lab_definition();
        let (_dir, root) = machine(false, 0);
        let l = c.launch(&d, Accel::Tcg, &root).unwrap();
        assert_eq!(options(&l), ["-machine", "-cpu", "-overcommit", "-qmp"]);
        let s = &l.substitutions[2];
        assert_eq!(
            (s.profile.as_str(), s.now.as_deref()),
            ("mem-lock=on", None)
        );
        assert!(
            s.why
                .starts_with("no CAP_IPC_LOCK and RLIMIT_MEMLOCK is 8388608 bytes"),
            "{}",
            s.why
        );
        assert!(!l.argv.iter().any(|a| a == "-overcommit"));
        assert_eq!(mem_lock_refused(None, Ok(None)), None, "unlimited");
        assert_eq!(mem_lock_refused(Some(true), Ok(Some(0))), None);
    }

    #[test]
    fn hugepages_are_substituted_only_when_too_few_are_free() {
        let (mut c, mut d) = lab_definition();
        d.vm.hugepage_kib = Some(2048);
        c.definition = Some(d.clone());
        let (_dir, root) = machine(true, 10);
        let l = c.launch(&d, Accel::Tcg, &root).unwrap();
        assert_eq!(options(&l), ["-machine", "-cpu", "-object", "-qmp"]);
        let s = &l.substitutions[2];
        assert!(s
            .profile
            .starts_with("memory-backend-memfd,id=ram0,size=512M,hugetlb=on"));
        assert!(s
            .now
            .as_deref()
            .unwrap()
            .starts_with("memory-backend-ram,id=ram0,size=512M"));
        assert!(
            s.why
                .starts_with("10 free 2048 kB hugepages here, the VM needs 256"),
            "{}",
            s.why
        );
        let (_dir, root) = machine(true, 256);
        let l = c.launch(&d, Accel::Tcg, &root).unwrap();
        assert_eq!(options(&l), ["-machine", "-cpu", "-qmp"]);
        assert!(l
            .argv
            .iter()
            .any(|a| a.contains("hugetlb=on,hugetlbsize=2M")));
        let e = hugepages_missing(&d.vm, Err("Not found".into())).unwrap();
        assert_eq!(e, "this machine has no free 2048 kB hugepages (Not found)");
    }

    #[test]
    fn a_profile_without_a_vm_boots_the_lab_profiles_and_one_with_boot_is_refused() {
        let mut p = profiles::load("lab").unwrap().profile;
        p.name = "novm".into();
        p.host = None;
        let d = Definition::of(&p).unwrap();
        assert_eq!((d.profile.as_str(), d.vm.name.as_str()), ("lab", "lab"));
        assert_eq!(
            d.note.as_deref(),
            Some("profile \"novm\" defines no VM (host.vms): the bundled lab profile's VM boots")
        );
        let (mut c, mut d) = lab_definition();
        d.vm.can_buses.clear();
        c.definition = Some(d.clone());
        let (_dir, root) = machine(true, 0);
        let l = c.launch(&d, Accel::Kvm, &root).unwrap();
        let can = l.lab.last().unwrap();
        assert!(can.what.starts_with("the lab's CAN pair"), "{}", can.what);
        assert_eq!(can.args, can_pair());
        d.vm.boot = Some(profiles::VmBoot {
            kernel: Some("/boot/vmlinuz".into()),
            ..Default::default()
        });
        let mut p = profiles::load("lab").unwrap().profile;
        if let Some(h) = p.host.as_mut() {
            h.vms[0].boot = d.vm.boot.clone();
        }
        let e = Definition::of(&p).unwrap_err().to_string();
        assert!(
            e.starts_with("host.vms[0].boot: VM \"lab\" of profile \"lab\" boots its own kernel"),
            "{e}"
        );
    }

    #[test]
    fn command_line_has_the_can_bus_and_the_channels() {
        let a = config().args(Accel::Tcg).join(" ");
        assert!(
            a.starts_with("-accel tcg -cpu max -smp 2 -m 512 -nographic"),
            "{a}"
        );
        assert!(a.contains("-name lab,debug-threads=on"));
        assert!(a.contains("-object can-bus,id=canbus0 -device kvaser_pci,canbus=canbus0 -device kvaser_pci,canbus=canbus0"));
        assert!(a.contains("-virtfs local,path=/o/share,mount_tag=rtvirtlab,security_model=none"));
        assert!(a.contains("-qmp unix:/o/qmp.sock,server=on,wait=off"));
        assert!(a.contains("-serial file:/o/console.log"));
        assert!(a.ends_with("-monitor none -nic none"), "{a}");
        let mut c = config();
        c.can = false;
        let k = c.args(Accel::Kvm).join(" ");
        assert!(k.starts_with("-accel kvm -cpu host"), "{k}");
        assert!(!k.contains("kvaser_pci"), "{k}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\r\nc\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }
}
