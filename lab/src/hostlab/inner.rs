//! The VMs inside the outer host: the profile's VMs (the first is the ECU guest, which
//! boots; the others start paused) and one more paused VM that is not the profile's and
//! that rt-host must leave alone.
//!
//! Each profile VM's QEMU command line is what `rt-host vm PROFILE --vm NAME --format
//! qemu --json` renders in the outer host (every real-time choice of the VM definition:
//! q35, the host CPU with invtsc, no PMU, the dedicated-vCPU hint, hugepage memory locked
//! in RAM, debug-threads names, QMP, the profile's CAN buses), followed by what only the
//! lab adds: for the guest ([`lab_args`]) its kernel and image and the agent's share; for
//! the others `-S` ([`paused_argv`]), so their vCPU threads exist and their guests never
//! run (they cost the nested outer host nothing).
//! QEMU starts under `taskset -c HOUSEKEEPING` from a small script in the share, which
//! also records its pid and, when it ends, its exit status.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::flow::host::Exec;
use crate::guest::Watch;
use crate::hostlab::image::{INNER_INITRD, INNER_KERNEL, QEMU, RT_HOST};
use crate::hostlab::outer::{sh_quote, Outer, OuterExec};
use crate::initramfs::{GUEST_SHARE, SHARE_TAG};
use crate::qemu::{option, tail, Vm};

/// The inner guest's share, in the outer host (a directory of the outer host's share).
pub const INNER_SHARE: &str = "/lab/inner";
/// The name of the second VM.
pub const OTHER_NAME: &str = "other";
/// A directory in the outer host's memory the guest also sees (mount tag
/// [`CLOCK_TAG`]): the clock exchange between the two goes through it, one 9p hop
/// instead of two through the share of this machine.
pub const CLOCK_DIR: &str = "/run/rtvirt-clock";
/// Its 9p mount tag in the guest.
pub const CLOCK_TAG: &str = "rtvirtclock";

/// What `rt-host vm --format qemu --json` prints that the lab reads.
#[derive(Debug, serde::Deserialize)]
struct RenderedQemu {
    argv: Vec<String>,
}

/// The `rt-host vm` command line that renders VM `vm` of `profile` for QEMU.
pub fn render_argv(profile: &str, vm: &str) -> Vec<String> {
    [
        RT_HOST, "vm", profile, "--vm", vm, "--format", "qemu", "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// VM `vm` of the profile as rt-host renders it for QEMU, run in the outer host (it reads
/// that machine's NUMA layout): the argv without the program.
pub fn render(outer: &mut Outer, profile: &str, vm: &str) -> Result<Vec<String>> {
    let out = OuterExec(outer).exec(&render_argv(profile, vm), Duration::from_secs(120))?;
    if out.rc != Some(0) {
        bail!(
            "rt-host vm {profile} --vm {vm} --format qemu failed in the outer host (exit {:?}): {}",
            out.rc,
            tail(&out.text(), 5)
        );
    }
    let r: RenderedQemu = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("rt-host vm --vm {vm} --format qemu --json printed no argv"))?;
    Ok(r.argv)
}

/// What the lab adds to the guest's rendered definition: its kernel and image (its serial
/// console is the definition's `-serial mon:stdio`, kept by the start script), no reboot
/// (the guest's poweroff ends QEMU), the agent's share, the clock-exchange directory
/// ([`CLOCK_DIR`]). The CAN cards are the profile's.
pub fn lab_args() -> Vec<String> {
    let mut a = boot_args(INNER_SHARE);
    a.push("-virtfs".into());
    a.push(format!(
        "local,path={CLOCK_DIR},mount_tag={CLOCK_TAG},security_model=none"
    ));
    a
}

/// The kernel, image, no reboot and the agent's share `share` (a directory of the outer
/// host) of a guest that boots the lab's image.
fn boot_args(share: &str) -> Vec<String> {
    let append = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1";
    [
        "-kernel",
        INNER_KERNEL,
        "-initrd",
        INNER_INITRD,
        "-append",
        append,
        "-no-reboot",
        "-virtfs",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!(
        "local,path={share},mount_tag={SHARE_TAG},security_model=none"
    )])
    .collect()
}

/// The agent's share of a further profile VM `name` in the outer host.
pub fn vm_share(name: &str) -> String {
    format!("{INNER_SHARE}-{name}")
}

/// The HMP monitor of a further profile VM `name`, a pair of FIFOs (`PATH.in`,
/// `PATH.out`: QEMU's `pipe:` chardev) the outer host's shell can write `cont` into.
pub fn monitor_pipe(name: &str) -> String {
    format!("/run/rtvirt-{name}.mon")
}

/// A further profile VM that can boot the lab's image later: the rendered definition,
/// the lab's kernel, image and its own share ([`vm_share`]), an HMP monitor on
/// [`monitor_pipe`], paused (`-S`) until [`resume_script`].
pub fn bootable_paused_argv(rendered: &[String], name: &str) -> Vec<String> {
    std::iter::once(QEMU.to_string())
        .chain(rendered.iter().cloned())
        .chain(boot_args(&vm_share(name)))
        .chain([
            "-monitor".to_string(),
            format!("pipe:{}", monitor_pipe(name)),
            "-S".to_string(),
        ])
        .collect()
}

/// Before a [`bootable_paused_argv`] VM starts: its share and its monitor's FIFOs.
pub fn prepare_script(name: &str) -> String {
    let m = monitor_pipe(name);
    format!(
        "mkdir -p {} && rm -f {m}.in {m}.out && mkfifo {m}.in {m}.out",
        vm_share(name)
    )
}

/// Let a [`bootable_paused_argv`] VM run: `cont` on its monitor (QEMU's answers drained
/// from the other FIFO so it never blocks on them).
pub fn resume_script(name: &str) -> String {
    let m = monitor_pipe(name);
    format!("(cat {m}.out > /dev/null &) ; echo cont > {m}.in")
}

/// Where a further VM's share is on this machine.
pub fn vm_share_on_host(outer_share: &Path, name: &str) -> PathBuf {
    outer_share.join(
        vm_share(name)
            .trim_start_matches(GUEST_SHARE)
            .trim_start_matches('/'),
    )
}

/// The guest's whole command line: QEMU, the rendered definition, the lab's additions.
pub fn argv(rendered: &[String]) -> Vec<String> {
    std::iter::once(QEMU.to_string())
        .chain(rendered.iter().cloned())
        .chain(lab_args())
        .collect()
}

/// A further profile VM's whole command line: QEMU, the rendered definition, `-S`.
pub fn paused_argv(rendered: &[String]) -> Vec<String> {
    std::iter::once(QEMU.to_string())
        .chain(rendered.iter().cloned())
        .chain(["-S".to_string()])
        .collect()
}

/// The QMP socket of a command line (`-qmp unix:PATH,...`).
pub fn qmp_socket(argv: &[String]) -> Option<String> {
    let v = option(argv, "-qmp")?.strip_prefix("unix:")?;
    Some(v.split(',').next()?.to_string())
}

/// The number of vCPUs of a command line (`-smp N,...`).
pub fn vcpus(argv: &[String]) -> Option<u32> {
    option(argv, "-smp")?.split(',').next()?.parse().ok()
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
    /// Its serial console (on this machine): QEMU's output, where the definition's
    /// `-serial mon:stdio` goes.
    pub fn console(&self) -> PathBuf {
        self.share.join(format!("{}-qemu.log", self.tag))
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
            "mkdir -p {INNER_SHARE} {CLOCK_DIR}\nsetsid sh {GUEST_SHARE}/{tag}-start.sh > {GUEST_SHARE}/{tag}-qemu.log 2>&1 < /dev/null &"
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
        // kernel-path-ok: shell that runs in the outer host.
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
        // kernel-path-ok: shell that runs in the outer host.
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
    fn the_rendered_definition_with_the_labs_additions() {
        // What `rt-host vm hil --format qemu --json` rendered (shortened).
        let rendered: Vec<String> = [
            "-name",
            "guest=ecu0,debug-threads=on",
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host,migratable=off,+tsc-deadline,+invtsc,pmu=off,kvm-hint-dedicated=on",
            "-smp",
            "2,sockets=1,dies=1,cores=2,threads=1",
            "-serial",
            "mon:stdio",
            "-qmp",
            "unix:/run/rtvirt-ecu0.qmp,server=on,wait=off",
            "-object",
            "can-bus,id=canbus0",
            "-device",
            "kvaser_pci,canbus=canbus0",
            "-device",
            "kvaser_pci,canbus=canbus0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = argv(&rendered);
        let line = a.join(" ");
        assert!(line.starts_with("/usr/bin/qemu-system-x86_64 -name guest=ecu0,debug-threads=on -machine q35,accel=kvm"), "{line}");
        assert!(
            line.contains("-kernel /inner/vmlinuz -initrd /inner/initrd.gz"),
            "{line}"
        );
        // The profile's CAN cards, not the lab's: two, not four.
        assert_eq!(
            line.matches("-device kvaser_pci,canbus=canbus0").count(),
            2,
            "{line}"
        );
        assert!(
            line.ends_with("-virtfs local,path=/lab/inner,mount_tag=rtvirtlab,security_model=none -virtfs local,path=/run/rtvirt-clock,mount_tag=rtvirtclock,security_model=none"),
            "{line}"
        );
        assert_eq!(qmp_socket(&a).as_deref(), Some("/run/rtvirt-ecu0.qmp"));
        assert_eq!(vcpus(&a), Some(2));
        assert_eq!(qmp_socket(&other_argv()), None);
        // A further profile VM: the rendered definition, paused, nothing of the lab's.
        let p = paused_argv(&rendered).join(" ");
        assert!(
            p.starts_with("/usr/bin/qemu-system-x86_64 -name guest=ecu0"),
            "{p}"
        );
        assert!(p.ends_with("kvaser_pci,canbus=canbus0 -S"), "{p}");
        assert!(!p.contains("-kernel") && !p.contains("-virtfs"), "{p}");
        assert_eq!(
            render_argv("/lab/hil.ron", "ecu1").join(" "),
            "/usr/bin/rt-host vm /lab/hil.ron --vm ecu1 --format qemu --json"
        );
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

    #[test]
    fn a_further_vm_can_boot_the_lab_image_once_resumed() {
        let rendered = vec!["-name".to_string(), "guest=ecu1,debug-threads=on".into()];
        let a = bootable_paused_argv(&rendered, "ecu1").join(" ");
        assert!(
            a.starts_with("/usr/bin/qemu-system-x86_64 -name guest=ecu1,debug-threads=on -kernel /inner/vmlinuz -initrd /inner/initrd.gz"),
            "{a}"
        );
        assert!(
            a.ends_with("-virtfs local,path=/lab/inner-ecu1,mount_tag=rtvirtlab,security_model=none -monitor pipe:/run/rtvirt-ecu1.mon -S"),
            "{a}"
        );
        // No clock directory: that is the guest's.
        assert!(!a.contains(CLOCK_TAG), "{a}");
        assert_eq!(
            prepare_script("ecu1"),
            "mkdir -p /lab/inner-ecu1 && rm -f /run/rtvirt-ecu1.mon.in /run/rtvirt-ecu1.mon.out && mkfifo /run/rtvirt-ecu1.mon.in /run/rtvirt-ecu1.mon.out"
        );
        assert_eq!(
            resume_script("ecu1"),
            "(cat /run/rtvirt-ecu1.mon.out > /dev/null &) ; echo cont > /run/rtvirt-ecu1.mon.in"
        );
        assert_eq!(
            vm_share_on_host(Path::new("/o/share"), "ecu1"),
            Path::new("/o/share/inner-ecu1")
        );
    }
}
