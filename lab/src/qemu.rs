//! QEMU: the command line of a lab VM, starting it with its main loop on the housekeeping
//! CPU, and QMP (`rt_sys::qmp`, <https://www.qemu.org/docs/master/interop/qmp-spec.html>)
//! to find the vCPU threads and to quit.
//!
//! The main loop and I/O threads stay on CPU 0: QEMU is started under `taskset -c 0`, so
//! every thread it makes inherits that, and only the vCPU threads are widened afterwards
//! (trap 2 in DESIGN.md: a FIFO vCPU on the main loop's CPU starves it).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rt_sys::qmp::{Qmp, QmpCpu};

use crate::accel::Accel;
use crate::initramfs::SHARE_TAG;

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
    /// vCPUs.
    pub smp: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Directory shared over virtio-9p.
    pub share: PathBuf,
    /// QMP socket path.
    pub qmp: PathBuf,
    /// Serial console log.
    pub console: PathBuf,
    /// QEMU's own stdout/stderr.
    pub qemu_log: PathBuf,
    /// Housekeeping CPUs for the main loop and I/O threads (`taskset -c`).
    pub housekeeping: String,
    /// Two emulated Kvaser PCI CAN cards on one `can-bus` (the guest's can0 and can1).
    pub can: bool,
    /// More arguments, appended as they are.
    pub extra: Vec<String>,
}

impl VmConfig {
    /// The full argument list (after the QEMU binary).
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
            push(&["-object", "can-bus,id=canbus0"]);
            push(&[
                "-device",
                "kvaser_pci,canbus=canbus0",
                "-device",
                "kvaser_pci,canbus=canbus0",
            ]);
        }
        let kernel = self.kernel.to_string_lossy().into_owned();
        let initrd = self.initrd.to_string_lossy().into_owned();
        let append = format!(
            "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 {}",
            self.append
        )
        .trim()
        .to_string();
        push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &append]);
        let virtfs = format!(
            "local,path={},mount_tag={SHARE_TAG},security_model=none",
            self.share.display()
        );
        push(&["-virtfs", &virtfs]);
        let qmp = format!("unix:{},server=on,wait=off", self.qmp.display());
        push(&["-qmp", &qmp]);
        let serial = format!("file:{}", self.console.display());
        push(&["-serial", &serial, "-monitor", "none"]);
        a.extend(self.extra.iter().cloned());
        a
    }
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
        let log = fs::File::create(&config.qemu_log)
            .with_context(|| format!("Creating {}", config.qemu_log.display()))?;
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &config.housekeeping])
            .arg(&config.qemu)
            .args(config.args(accel));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("Starting {} under taskset", config.qemu.display()))?;
        let pid = child.id();
        eprintln!(
            "lab: started QEMU pid {pid} ({accel}), console {}",
            config.console.display()
        );
        Ok(Vm {
            child: Some(child),
            pid,
            accel,
            config: config.clone(),
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
        }
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
