//! Staying applied: a VM that restarts comes back with new threads (new tids), which the
//! journal's thread entries no longer name, so its vCPUs run untuned. `rt-host watch`
//! polls the profile's VMs and, when one started or restarted, drops the journal entries of
//! the threads that are gone and applies the VM items again ([`crate::apply::setup`] with
//! `vm_only`), journalled as any setup; `revert` restores the current threads. The same
//! for libvirt without a daemon: a `hooks/qemu` script runs `rt-host setup --vm-items` when
//! a domain of the profile has started. See <https://libvirt.org/hooks.html>.

use std::path::Path;

use profiles::Host;
use rt_sys::journal::ProfileId;
use rt_sys::threads::ThreadOps;
use rt_sys::SysRoot;

use crate::apply::{self, SetupOptions, SetupReport};
use crate::error::TuneError;
use crate::plan::Ctx;
use crate::vm;

/// What identifies a VM's run: its pid and the (tid, start time) of its main, vCPU and
/// I/O threads (QEMU's worker threads come and go and inherit the main loop's policy).
pub type Fingerprint = Vec<(u32, Vec<(u32, u64)>)>;

/// The fingerprint of every running VM of `host`.
pub fn fingerprint(root: &SysRoot, host: &Host) -> Result<Fingerprint, TuneError> {
    let mut out = Vec::new();
    for h in crate::placement::per_vm_hosts(host) {
        let Some(v) = vm::find(
            root,
            h.vm.as_ref().unwrap_or(&profiles::Vm::default()),
            None,
        )?
        else {
            continue;
        };
        let mut ts: Vec<(u32, u64)> = v
            .vcpus
            .values()
            .chain(&v.iothreads)
            .chain(v.emulator.iter().filter(|t| t.tid == v.pid))
            .map(|t| (t.tid, t.start_time))
            .collect();
        ts.sort_unstable();
        out.push((v.pid, ts));
    }
    Ok(out)
}

/// A watch on the VMs of one profile.
pub struct Watch<'a> {
    /// The profile.
    pub profile: ProfileId,
    /// Its host section.
    pub host: Host,
    /// The tree.
    pub root: &'a SysRoot,
    /// Thread operations fitting the root.
    pub ops: &'a dyn ThreadOps,
    /// The journal directory.
    pub journal_dir: &'a Path,
    last: Option<Fingerprint>,
}

/// What one look at the VMs did.
#[derive(Debug)]
pub struct Step {
    /// Journal entries of vanished threads dropped.
    pub pruned: usize,
    /// The setup of the VM items.
    pub setup: SetupReport,
}

impl<'a> Watch<'a> {
    /// A watch that applies at its first step.
    pub fn new(
        profile: ProfileId,
        host: Host,
        root: &'a SysRoot,
        ops: &'a dyn ThreadOps,
        journal_dir: &'a Path,
    ) -> Watch<'a> {
        Watch {
            profile,
            host,
            root,
            ops,
            journal_dir,
            last: None,
        }
    }

    /// Look at the VMs once: when their threads changed since the last look (a VM started,
    /// restarted or stopped), prune the journal and apply the VM items again.
    pub fn step(&mut self) -> Result<Option<Step>, TuneError> {
        let now = fingerprint(self.root, &self.host)?;
        if self.last.as_ref() == Some(&now) {
            return Ok(None);
        }
        let pruned = apply::prune_vanished(self.root, self.ops, self.journal_dir)?;
        if now.is_empty() {
            self.last = Some(now);
            return Ok(None);
        }
        let ctx = Ctx {
            root: self.root,
            ops: self.ops,
            vm_pid: None,
            refused: Default::default(),
        };
        let opts = SetupOptions {
            vm_only: true,
            ..SetupOptions::default()
        };
        // Remembered only once applied: a failed look (a VM half started) is tried again.
        let setup = apply::setup(&self.profile, &self.host, &ctx, self.journal_dir, &opts)?;
        self.last = Some(now);
        Ok(Some(Step { pruned, setup }))
    }
}

/// A systemd unit that runs `rt-host watch` (after libvirtd, when there is one).
pub fn systemd_unit(exe: &str, profile: &str, name: &str) -> String {
    format!(
        "# /etc/systemd/system/rtvirt-watch.service\n\
         [Unit]\n\
         Description=rtvirt: keep the VMs of profile {name} tuned across restarts\n\
         Documentation=man:rt-host(1)\n\
         After=libvirtd.service virtqemud.service\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} watch {profile}\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// A libvirt `hooks/qemu` script: when one of `domains` has started (QEMU runs, its
/// threads and cgroups exist, the guest has not run yet), apply the VM items. The hook
/// never calls back into libvirt (rt-host finds the domain by its pid file) and exits 0,
/// so a failure is logged and never stops the domain.
pub fn libvirt_hook(exe: &str, profile: &str, domains: &[String]) -> String {
    let names = if domains.is_empty() {
        "*".to_string()
    } else {
        domains.join("|")
    };
    format!(
        "#!/bin/sh\n\
         # /etc/libvirt/hooks/qemu (chmod 755, then restart libvirtd): rtvirt tunes the VM\n\
         # items of profile {profile} when its domains start. libvirt runs it as\n\
         # `qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the domain XML on stdin.\n\
         # Written by `rt-host hook`; `rt-host revert` undoes what it applied.\n\
         domain=\"$1\" op=\"$2\"\n\
         case \"$op\" in\n\
         \x20 started)\n\
         \x20   case \"$domain\" in\n\
         \x20     {names})\n\
         \x20       {exe} setup {profile} --vm-items >>/var/log/rtvirt-hook.log 2>&1 \\\n\
         \x20         || echo \"rt-host setup for $domain failed, see above\" >>/var/log/rtvirt-hook.log\n\
         \x20       ;;\n\
         \x20   esac\n\
         \x20   ;;\n\
         esac\n\
         exit 0\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeMachine, QEMU_PID};
    use rt_sys::threads::Tree;

    fn id() -> ProfileId {
        ProfileId {
            name: "lab".into(),
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn a_restarted_vm_gets_its_new_threads_tuned_and_the_old_entries_go() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let mut w = Watch::new(id(), crate::fake::lab_host(), &m.root, &Tree, &jdir);
        let s = w.step().unwrap().expect("applied at the first look");
        assert!(s.setup.met(), "{:#?}", s.setup.verify_failed);
        assert!(
            s.setup.done.iter().all(|d| d.change.vm_item()),
            "only VM items: {:#?}",
            s.setup.done
        );
        let sched = |tid| Tree.get_sched(&m.root, QEMU_PID, tid).unwrap().to_string();
        assert_eq!(sched(4003), "fifo:50");
        assert_eq!(
            m.root.read_trim("proc/sys/kernel/timer_migration").unwrap(),
            "1",
            "host-wide knobs are setup's, not watch's"
        );
        assert!(w.step().unwrap().is_none(), "nothing changed");
        // The VM restarts: vCPU 1 is a new thread (tid 4013).
        std::fs::remove_dir_all(m.root.path(format!("proc/{QEMU_PID}/task/4003"))).unwrap();
        m.thread(QEMU_PID, 4013, "CPU 1/TCG", 1, 0x40_0040, 0, 0, "0-1");
        let s = w.step().unwrap().expect("re-applied");
        assert_eq!(s.pruned, 2, "affinity and policy of the gone vCPU thread");
        assert_eq!(sched(4013), "fifo:50");
        let j = rt_sys::journal::Journal::read(&jdir).unwrap().unwrap();
        assert!(
            j.entries
                .iter()
                .all(|e| !e.target.to_string().contains("tid 4003")),
            "{:#?}",
            j.entries
        );
        crate::fake::revert(&m.root, &jdir);
        assert_eq!(sched(4013), "other:0");
        // The tree is as before but for the thread swap.
        let diff = FakeMachine::diff(&before, &m.snapshot());
        assert!(
            diff.iter()
                .all(|d| d.contains("/task/4003") || d.contains("4013")),
            "{diff:#?}"
        );
    }

    #[test]
    fn the_hook_and_the_unit_run_the_vm_items_of_the_profile() {
        let h = libvirt_hook("/usr/bin/rt-host", "/etc/rtvirt/ecu.ron", &["ecu0".into()]);
        assert!(h.starts_with("#!/bin/sh\n"), "{h}");
        assert!(
            h.contains("\n  started)\n    case \"$domain\" in\n      ecu0)\n"),
            "{h}"
        );
        assert!(
            h.contains("/usr/bin/rt-host setup /etc/rtvirt/ecu.ron --vm-items"),
            "{h}"
        );
        assert!(h.ends_with("esac\nexit 0\n"), "{h}");
        let u = systemd_unit("/usr/bin/rt-host", "ecu", "ecu-asil-d");
        assert!(
            u.contains("\nExecStart=/usr/bin/rt-host watch ecu\n"),
            "{u}"
        );
        assert!(u.contains("After=libvirtd.service"), "{u}");
    }
}
