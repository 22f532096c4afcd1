//! The VMs inside the outer host: the profile's ECU guest (KVM, the PREEMPT_RT guest
//! kernel and the lab's guest image, two Kvaser PCI cards on one CAN bus, debug-threads
//! names, QMP, memory from the outer host's hugepages) and a second, paused VM that is
//! not the profile's and that rt-host must leave alone.
//!
//! The guest's QEMU command line is made in one function, [`vm_config`] with
//! [`argv`], so `rt-host vm --format qemu` can replace it later. QEMU starts under
//! `taskset -c HOUSEKEEPING` from a small script in the share, which also records its pid
//! and, when it ends, its exit status.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::Accel;
use crate::guest::Watch;
use crate::hostlab::image::{HUGEPAGES, INNER_INITRD, INNER_KERNEL, QEMU};
use crate::hostlab::outer::{sh_quote, Outer};
use crate::initramfs::GUEST_SHARE;
use crate::qemu::{tail, Vm, VmConfig};

/// The inner guest's share, in the outer host (a directory of the outer host's share).
pub const INNER_SHARE: &str = "/lab/inner";
/// The inner guest's QMP socket in the outer host.
pub const INNER_QMP: &str = "/run/inner-qmp.sock";
/// The name of the second VM.
pub const OTHER_NAME: &str = "other";

/// The inner guest as the profile describes it: `host.vm.qemu_name`, `memory_mib`, one
/// vCPU per `host.vcpus` index (at least two: can-sim's ECU threads run on guest CPU 0,
/// the probe on CPU 1), hugepage memory when `host.hugepages` is set.
pub fn vm_config(profile: &profiles::Profile) -> Result<VmConfig> {
    let host = profile
        .host
        .as_ref()
        .context("The host lab needs a profile with a `host` section")?;
    let vm = host.vm.as_ref();
    let name = vm
        .and_then(|v| v.qemu_name.clone())
        .context("The host lab finds the guest by name: the profile needs host.vm.qemu_name")?;
    let smp = host
        .vcpus
        .iter()
        .map(|v| v.vcpu + 1)
        .max()
        .unwrap_or(0)
        .max(2);
    let mem_mib = vm
        .and_then(|v| v.memory_mib)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(384);
    let mut extra: Vec<String> = vec!["-nic".into(), "none".into()];
    if let Some(h) = &host.hugepages {
        if h.size_kib != 2048 {
            bail!(
                "The host lab mounts hugetlbfs with 2 MiB pages; host.hugepages.size_kib is {}",
                h.size_kib
            );
        }
        extra.extend(["-mem-path".into(), HUGEPAGES.into(), "-mem-prealloc".into()]);
    }
    let housekeeping = host
        .emulator_cpus
        .as_ref()
        .unwrap_or(&host.housekeeping_cpus)
        .to_string();
    Ok(VmConfig {
        qemu: QEMU.into(),
        name,
        kernel: INNER_KERNEL.into(),
        initrd: INNER_INITRD.into(),
        append: String::new(),
        smp,
        mem_mib,
        share: INNER_SHARE.into(),
        qmp: INNER_QMP.into(),
        console: format!("{GUEST_SHARE}/inner-console.log").into(),
        qemu_log: format!("{GUEST_SHARE}/inner-qemu.log").into(),
        housekeeping,
        can: true,
        extra,
    })
}

/// The inner guest's QEMU command line (the program first), under KVM.
pub fn argv(config: &VmConfig) -> Vec<String> {
    let mut a = vec![config.qemu.to_string_lossy().into_owned()];
    a.extend(config.args(Accel::Kvm));
    a
}

/// The second VM: one vCPU, paused (`-S`) so it costs nothing, named [`OTHER_NAME`].
pub fn other_argv() -> Vec<String> {
    [
        QEMU,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        "1",
        "-m",
        "64",
        "-S",
        "-nodefaults",
        "-nographic",
        "-monitor",
        "none",
        "-name",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{OTHER_NAME},debug-threads=on")])
    .collect()
}

/// The outer host's script that runs `argv` under `taskset -c housekeeping` and records
/// its pid (`/lab/TAG.pid`) and, when QEMU ends, its exit status (`/lab/TAG.exit`).
pub fn start_script(tag: &str, argv: &[String], housekeeping: &str) -> String {
    let words: Vec<String> = argv.iter().map(|w| sh_quote(w)).collect();
    format!(
        "taskset -c {housekeeping} {} &\npid=$!\necho $pid > {GUEST_SHARE}/{tag}.pid.tmp && mv {GUEST_SHARE}/{tag}.pid.tmp {GUEST_SHARE}/{tag}.pid\nwait $pid\necho $? > {GUEST_SHARE}/{tag}.exit\n",
        words.join(" ")
    )
}

/// A QEMU started in the outer host.
#[derive(Debug, Clone)]
pub struct InnerVm {
    /// `start`, `other`: the names of its files in the share.
    pub tag: String,
    /// Its pid in the outer host.
    pub pid: u32,
    /// Its command line.
    pub argv: Vec<String>,
    /// The outer share on this machine.
    share: PathBuf,
}

impl InnerVm {
    /// Its serial console (on this machine).
    pub fn console(&self) -> PathBuf {
        self.share.join("inner-console.log")
    }

    /// Its exit status, once QEMU ended.
    pub fn exit_status(&self) -> Option<String> {
        fs::read_to_string(self.share.join(format!("{}.exit", self.tag)))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// QEMU's own output.
    pub fn log(&self) -> String {
        fs::read_to_string(self.share.join(format!("{}-qemu.log", self.tag))).unwrap_or_default()
    }
}

/// Start `argv` in the outer host as `tag`; wait for its pid.
pub fn start(outer: &mut Outer, tag: &str, argv: &[String], housekeeping: &str) -> Result<InnerVm> {
    let script = outer.share.join(format!("{tag}-start.sh"));
    for f in [format!("{tag}.pid"), format!("{tag}.exit")] {
        let _ = fs::remove_file(outer.share.join(f));
    }
    fs::write(&script, start_script(tag, argv, housekeeping))
        .with_context(|| format!("Writing {}", script.display()))?;
    outer.sh_ok(
        &format!(
            "mkdir -p {INNER_SHARE}\nsetsid sh {GUEST_SHARE}/{tag}-start.sh > {GUEST_SHARE}/{tag}-qemu.log 2>&1 < /dev/null &"
        ),
        Duration::from_secs(30),
    )?;
    let vm = InnerVm {
        tag: tag.to_string(),
        pid: 0,
        argv: argv.to_vec(),
        share: outer.share.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid_file = outer.share.join(format!("{tag}.pid"));
    loop {
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(InnerVm { pid, ..vm });
        }
        if let Some(rc) = vm.exit_status() {
            bail!(
                "QEMU {tag} in the outer host exited at once ({rc}): {}",
                tail(&vm.log(), 5)
            );
        }
        outer
            .vm
            .check(&format!("starting QEMU {tag} in the outer host"))?;
        if Instant::now() > deadline {
            bail!(
                "QEMU {tag} in the outer host wrote no pid in 60 s: {}",
                tail(&vm.log(), 5)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The outer host's script that waits until QEMU `pid` has `n` vCPU threads (it made
/// them, so its machine is set up).
pub fn wait_script(pid: u32, n: u32) -> String {
    format!(
        r#"i=0
while [ $(cat /proc/{pid}/task/*/comm 2>/dev/null | grep -c '^CPU [0-9]*/KVM$') -lt {n} ]; do
    sleep 0.2; i=$((i + 1))
    [ $i -lt 300 ] || {{ echo "QEMU {pid} has no {n} vCPU threads"; exit 1; }}
done"#
    )
}

/// [`wait_script`], then the vCPU threads may run on `cpus` (the main loop and I/O
/// threads stay on the housekeeping CPUs).
pub fn widen_script(pid: u32, n: u32, cpus: &str) -> String {
    format!(
        r#"{}
for t in /proc/{pid}/task/*; do
    case "$(cat $t/comm)" in "CPU "*"/KVM") taskset -p -c {cpus} ${{t##*/}} ;; esac
done"#,
        wait_script(pid, n)
    )
}

/// The inner guest, watched from this machine: the outer VM must run, and the inner QEMU
/// must not have ended.
pub struct InnerWatch<'a> {
    /// The outer VM.
    pub outer: &'a mut Vm,
    /// The inner QEMU.
    pub inner: &'a InnerVm,
}

impl Watch for InnerWatch<'_> {
    fn check(&mut self, doing: &str) -> Result<()> {
        self.outer.check(&format!("{doing} in the inner guest"))?;
        if let Some(rc) = self.inner.exit_status() {
            bail!(
                "The inner VM (QEMU pid {} in the outer host) ended ({rc}) while {doing}: {}\nlast console lines:\n{}",
                self.inner.pid,
                tail(&self.inner.log(), 5),
                self.console_tail(15)
            );
        }
        Ok(())
    }

    fn console_tail(&self, n: usize) -> String {
        let raw = fs::read(self.inner.console()).unwrap_or_default();
        tail(&String::from_utf8_lossy(&raw), n)
    }
}

/// Where the inner guest's share is on this machine.
pub fn share_on_host(outer_share: &Path) -> PathBuf {
    outer_share.join(
        INNER_SHARE
            .trim_start_matches(GUEST_SHARE)
            .trim_start_matches('/'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hil_guest_from_the_profile() {
        let p = profiles::load("hil").unwrap().profile;
        let c = vm_config(&p).unwrap();
        let a = argv(&c).join(" ");
        assert!(
            a.starts_with("/usr/bin/qemu-system-x86_64 -accel kvm -cpu host -smp 2 -m 384 "),
            "{a}"
        );
        assert!(a.contains("-name ecu0,debug-threads=on"), "{a}");
        assert!(a.contains("-device kvaser_pci,canbus=canbus0 -device kvaser_pci,canbus=canbus0"));
        assert!(a.contains("-qmp unix:/run/inner-qmp.sock,server=on,wait=off"));
        assert!(a.contains("-virtfs local,path=/lab/inner,mount_tag=rtvirtlab"));
        assert!(
            a.ends_with("-nic none -mem-path /dev/hugepages -mem-prealloc"),
            "{a}"
        );
        assert_eq!(c.housekeeping, "0");
        // The lab profile names its VM `lab` and reserves no hugepages.
        let lab = vm_config(&profiles::load("lab").unwrap().profile).unwrap();
        assert!(!argv(&lab).iter().any(|w| w == "-mem-path"));
    }

    #[test]
    fn start_script_records_pid_and_exit() {
        let s = start_script(
            "inner",
            &["/usr/bin/qemu".into(), "-append".into(), "a b".into()],
            "0",
        );
        assert!(
            s.starts_with("taskset -c 0 /usr/bin/qemu -append 'a b' &\n"),
            "{s}"
        );
        assert!(s.contains("mv /lab/inner.pid.tmp /lab/inner.pid"));
        assert!(s.ends_with("echo $? > /lab/inner.exit\n"));
        let o = other_argv().join(" ");
        assert!(
            o.contains("-S -nodefaults") && o.ends_with("-name other,debug-threads=on"),
            "{o}"
        );
        assert_eq!(
            share_on_host(Path::new("/o/share")),
            Path::new("/o/share/inner")
        );
        assert!(widen_script(141, 2, "0-3").contains("taskset -p -c 0-3"));
    }
}
