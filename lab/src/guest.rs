//! Talking to the guest over the virtio-9p share (the same agent runs in the host lab's
//! outer host, and in its inner guest through a share nested in the outer one).
//!
//! The guest's `/init` writes `ready` (key=value lines) when its modules are loaded, then
//! runs `cmd/N.sh` for N = 1, 2, ... as they appear, writing `cmd/N.out` and, last,
//! `cmd/N.rc`. The host writes each script under a temporary name and renames it, so the
//! guest never runs half a file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::interrupted;
use crate::qemu::{tail, Vm};

/// The machine an agent runs on, as the host sees it: whether it still runs, and its
/// console for messages.
pub trait Watch {
    /// An error when the machine is gone (or the user interrupted) while `doing`.
    fn check(&mut self, doing: &str) -> Result<()>;
    /// The last `n` lines of its console.
    fn console_tail(&self, n: usize) -> String;
}

impl Watch for Vm {
    fn check(&mut self, doing: &str) -> Result<()> {
        if interrupted() {
            bail!("Interrupted while {doing}");
        }
        if !self.alive() {
            bail!(
                "The VM vanished while {doing}: {}\nlast console lines:\n{}",
                self.gone_reason(),
                Vm::console_tail(self, 15)
            );
        }
        Ok(())
    }

    fn console_tail(&self, n: usize) -> String {
        Vm::console_tail(self, n)
    }
}

/// What the guest reported when it came up.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GuestInfo {
    /// `uname -r`.
    pub uname_r: String,
    /// `uname -v` (names PREEMPT_RT on a real-time kernel).
    pub uname_v: String,
    /// `/sys/kernel/realtime` (1 on PREEMPT_RT).
    pub realtime: String,
    /// CPUs the guest sees.
    pub nproc: u32,
    /// Network interfaces.
    pub net: Vec<String>,
    /// Modules that failed to load.
    pub modules_failed: Vec<String>,
    /// Seconds from QEMU start to `ready`.
    pub boot_secs: f64,
    /// The other `key=value` lines of `ready` (`hypervisor`, the outer host's `kvm`, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl GuestInfo {
    /// Whether the guest kernel is PREEMPT_RT.
    pub fn is_preempt_rt(&self) -> bool {
        rt_sys::kernel::is_preempt_rt(&self.uname_v, Some(&self.realtime))
    }
}

/// The keys of `ready` that have their own field.
const KNOWN: &[&str] = &[
    "uname_r",
    "uname_v",
    "realtime",
    "nproc",
    "net",
    "modules_failed",
];

/// Parse the `ready` file.
pub fn parse_ready(text: &str) -> Result<GuestInfo> {
    let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        kv.get(k)
            .map(|v| v.trim().to_string())
            .with_context(|| format!("ready file lacks {k}="))
    };
    let words = |k: &str| -> Vec<String> {
        kv.get(k)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    Ok(GuestInfo {
        uname_r: get("uname_r")?,
        uname_v: get("uname_v")?,
        realtime: get("realtime")?,
        nproc: get("nproc")?.parse().context("ready: bad nproc")?,
        net: words("net"),
        modules_failed: words("modules_failed"),
        boot_secs: 0.0,
        extra: kv
            .iter()
            .filter(|(k, _)| !KNOWN.contains(k))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    })
}

/// The result of one command in the guest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Output {
    /// The script.
    pub script: String,
    /// Its exit code.
    pub rc: i32,
    /// stdout and stderr together.
    pub output: String,
    /// Wall time on the host.
    pub secs: f64,
}

/// The host side of the agent.
pub struct Agent {
    share: PathBuf,
    next: u32,
    /// The command that did not finish in time: the agent runs one at a time, so it
    /// runs nothing else until that one ends.
    stuck: Option<String>,
    /// Every command run so far.
    pub log: Vec<Output>,
}

impl Agent {
    /// For the share directory `share`.
    pub fn new(share: &Path) -> Self {
        Self {
            share: share.to_path_buf(),
            next: 1,
            stuck: None,
            log: Vec::new(),
        }
    }

    /// Wait until the guest wrote `ready`, the VM died, the deadline passed or the user
    /// interrupted.
    pub fn wait_ready(&self, vm: &mut dyn Watch, timeout: Duration) -> Result<GuestInfo> {
        let start = Instant::now();
        let ready = self.share.join("ready");
        loop {
            if ready.is_file() {
                let text = fs::read_to_string(&ready)
                    .with_context(|| format!("Reading {}", ready.display()))?;
                let mut info = parse_ready(&text)?;
                info.boot_secs = start.elapsed().as_secs_f64();
                return Ok(info);
            }
            vm.check("booting")?;
            if vm.console_tail(30).contains("LAB-INIT-FAILED") {
                bail!(
                    "The guest init failed; last console lines:\n{}",
                    vm.console_tail(15)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "The guest did not come up in {}s; last console lines:\n{}",
                    timeout.as_secs(),
                    vm.console_tail(15)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The command still running after its timeout, if any (the agent is stuck on it).
    pub fn stuck(&self) -> Option<&str> {
        self.stuck.as_deref()
    }

    /// Run `script` with `sh` in the guest and wait for it.
    pub fn run(&mut self, vm: &mut dyn Watch, script: &str, timeout: Duration) -> Result<Output> {
        if let Some(s) = &self.stuck {
            bail!("The guest agent is still running `{s}`, which did not finish in time");
        }
        let n = self.next;
        self.next += 1;
        let dir = self.share.join("cmd");
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{n}.sh.tmp"));
        fs::write(&tmp, format!("{script}\n"))
            .with_context(|| format!("Writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(format!("{n}.sh")))?;
        let rc_path = dir.join(format!("{n}.rc"));
        let start = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(&rc_path) {
                if let Ok(rc) = text.trim().parse::<i32>() {
                    let output =
                        fs::read_to_string(dir.join(format!("{n}.out"))).unwrap_or_default();
                    let out = Output {
                        script: script.to_string(),
                        rc,
                        output,
                        secs: start.elapsed().as_secs_f64(),
                    };
                    self.log.push(out.clone());
                    return Ok(out);
                }
            }
            vm.check(&format!("running `{}`", first_line(script)))?;
            if start.elapsed() > timeout {
                self.stuck = Some(first_line(script).to_string());
                let partial = fs::read_to_string(dir.join(format!("{n}.out"))).unwrap_or_default();
                bail!(
                    "Guest command `{}` did not finish in {}s; its output so far:\n{}\nlast console lines:\n{}",
                    first_line(script),
                    timeout.as_secs(),
                    tail(&partial, 10),
                    vm.console_tail(10)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `script` and fail unless it exits 0.
    pub fn run_ok(
        &mut self,
        vm: &mut dyn Watch,
        script: &str,
        timeout: Duration,
    ) -> Result<Output> {
        let out = self.run(vm, script, timeout)?;
        if out.rc != 0 {
            bail!(
                "Guest command `{}` exited {}:\n{}",
                first_line(script),
                out.rc,
                tail(&out.output, 20)
            );
        }
        Ok(out)
    }

    /// Ask the agent to leave its loop and power the guest off.
    pub fn poweroff(&mut self, vm: &mut dyn Watch) -> Result<()> {
        fs::write(self.share.join("cmd/poweroff"), "")?;
        self.run(vm, "true", Duration::from_secs(10)).map(|_| ())
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_parses() {
        let text = "uname_r=6.1.0-56-rt-amd64\n\
                    uname_v=#1 SMP PREEMPT_RT Debian 6.1.192-2 (2026-11-16)\n\
                    realtime=1\nnproc=2\nnet=can0 can1 lo \nmodules_failed=\nhypervisor=hypervisor\n";
        let info = parse_ready(text).unwrap();
        assert_eq!(info.uname_r, "6.1.0-56-rt-amd64");
        assert!(info.is_preempt_rt());
        assert_eq!(info.nproc, 2);
        assert_eq!(info.net, vec!["can0", "can1", "lo"]);
        assert!(info.modules_failed.is_empty());
        assert_eq!(info.extra["hypervisor"], "hypervisor");
        assert_eq!(info.extra.len(), 1);
    }

    #[test]
    fn ready_file_without_fields_fails() {
        let e = format!("{:#}", (parse_ready("uname_r=x\n")).unwrap_err());
        assert!(e.contains("lacks uname_v="), "{e}");
        let info =
            parse_ready("uname_r=x\nuname_v=#1 SMP PREEMPT_DYNAMIC\nrealtime=\nnproc=1\n").unwrap();
        assert!(!info.is_preempt_rt());
    }
}
