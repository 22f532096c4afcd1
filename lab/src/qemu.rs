//! QEMU: the command line of the lab VM, starting it with its main loop on the housekeeping
//! CPU, QMP (<https://www.qemu.org/docs/master/interop/qmp-spec.html>) to find the vCPU
//! threads and to quit, and choosing KVM or TCG.
//!
//! The main loop and I/O threads stay on CPU 0: QEMU is started under `taskset -c 0`, so
//! every thread it makes inherits that, and only the vCPU threads are widened afterwards
//! (trap 2 in DESIGN.md: a FIFO vCPU on the main loop's CPU starves it).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::image::SHARE_TAG;

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's binary translator: works everywhere, is not real-time.
    Tcg,
}

impl Accel {
    /// The suffix QEMU gives vCPU thread names (`CPU 1/TCG`).
    pub fn thread_suffix(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }

    /// From `RTVIRT_LAB_ACCEL` (`kvm`, `tcg`, `auto` or unset: `None` means detect).
    pub fn from_env() -> Result<Option<Accel>> {
        match std::env::var("RTVIRT_LAB_ACCEL")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("auto") => Ok(None),
            Some("kvm") => Ok(Some(Accel::Kvm)),
            Some("tcg") => Ok(Some(Accel::Tcg)),
            Some(other) => bail!("RTVIRT_LAB_ACCEL={other:?}: expected kvm, tcg or auto"),
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
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
}

impl VmConfig {
    /// The full argument list (after the QEMU binary).
    pub fn args(&self, accel: Accel) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let cpu = match accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
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
        push(&["-object", "can-bus,id=canbus0"]);
        push(&[
            "-device",
            "kvaser_pci,canbus=canbus0",
            "-device",
            "kvaser_pci,canbus=canbus0",
        ]);
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
        a
    }
}

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
            match Qmp::connect(&self.config.qmp) {
                Ok(q) => return Ok(q),
                Err(e) => {
                    if !self.alive() {
                        bail!("{}", self.gone_reason());
                    }
                    if Instant::now() > deadline {
                        return Err(e.context(format!(
                            "QMP socket {} not ready in {timeout:?}",
                            self.config.qmp.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The vCPU threads as (index, tid), from QMP `query-cpus-fast`.
    pub fn vcpu_threads(&mut self) -> Result<Vec<(u32, u32)>> {
        let mut q = self.qmp(Duration::from_secs(10))?;
        let v = q.execute("query-cpus-fast", None)?;
        parse_cpus_fast(&v)
    }

    /// Stop QEMU: QMP `quit`, then SIGTERM, then SIGKILL, each with a grace period.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        if let Ok(mut q) = Qmp::connect(&self.config.qmp) {
            let _ = q.execute("quit", None);
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

/// `query-cpus-fast` result -> (cpu-index, thread-id).
pub fn parse_cpus_fast(v: &Value) -> Result<Vec<(u32, u32)>> {
    let arr = v
        .as_array()
        .context("query-cpus-fast did not return a list")?;
    arr.iter()
        .map(|c| {
            let idx = c
                .get("cpu-index")
                .and_then(Value::as_u64)
                .context("cpu without cpu-index")?;
            let tid = c
                .get("thread-id")
                .and_then(Value::as_u64)
                .context("cpu without thread-id")?;
            Ok((u32::try_from(idx)?, u32::try_from(tid)?))
        })
        .collect()
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

/// A QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect, read the greeting and enter command mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("Connecting to QMP at {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("Not a QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("Reading from QMP")?;
        if n == 0 {
            bail!("QMP closed the connection");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent invalid JSON: {line:?}"))
    }

    /// Run a command and return its `return` value (events are skipped).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}").with_context(|| format!("Sending QMP {command}"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command} failed: {e}");
            }
        }
    }
}

/// Whether `/dev/kvm` can be opened for reading and writing.
pub fn kvm_device_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(rt_sys::SysRoot::live().path(rt_sys::kernel::KVM_DEVICE))
        .is_ok()
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
        let k = config().args(Accel::Kvm).join(" ");
        assert!(k.starts_with("-accel kvm -cpu host"), "{k}");
    }

    #[test]
    fn cpus_fast_gives_thread_ids() {
        let v: Value = serde_json::from_str(
            r#"[{"thread-id": 25627, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"},
                {"thread-id": 25628, "props": {"core-id": 0, "thread-id": 0, "socket-id": 1}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]"#,
        )
        .unwrap();
        assert_eq!(parse_cpus_fast(&v).unwrap(), vec![(0, 25627), (1, 25628)]);
        assert!(parse_cpus_fast(&json!({})).is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\r\nc\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn accel_names() {
        assert_eq!(Accel::Tcg.thread_suffix(), "TCG");
        assert_eq!(Accel::Kvm.to_string(), "kvm");
    }
}
