//! Finding the profile's VM (QEMU process) and sorting its threads: vCPUs (`CPU n/KVM`,
//! `CPU n/TCG` with `-name ...,debug-threads=on`, or QMP `query-cpus-fast`), I/O threads
//! (`IO <id>`) and the emulator threads (main loop, RCU, workers).

use std::collections::BTreeMap;
use std::time::Duration;

use profiles::Vm;
use rt_sys::task::{self, Thread};
use rt_sys::{qmp, threads, SysRoot};
use serde::Serialize;

use crate::error::{sys, TuneError};

/// A running VM and its threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmThreads {
    /// QEMU's process id.
    pub pid: u32,
    /// How it was found (`--vm-pid`, `pid`, `pidfile ...`, `-name lab`, `QMP ...`).
    pub found_by: String,
    /// vCPU threads by vCPU index.
    #[serde(serialize_with = "ser_vcpus")]
    pub vcpus: BTreeMap<u32, Thread>,
    /// I/O threads (`IO ...`).
    #[serde(serialize_with = "ser_threads")]
    pub iothreads: Vec<Thread>,
    /// All other threads (main loop, `call_rcu`, workers).
    #[serde(serialize_with = "ser_threads")]
    pub emulator: Vec<Thread>,
}

fn ser_threads<S: serde::Serializer>(t: &[Thread], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.iter().map(|t| format!("{} ({})", t.tid, t.name)))
}

fn ser_vcpus<S: serde::Serializer>(t: &BTreeMap<u32, Thread>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        t.iter()
            .map(|(k, t)| (k, format!("{} ({})", t.tid, t.name))),
    )
}

/// How the profile names the VM, for messages.
pub fn describe(vm: &Vm) -> String {
    if let Some(n) = &vm.qemu_name {
        format!("QEMU -name {n}")
    } else if let Some(n) = &vm.libvirt {
        format!("libvirt domain {n}")
    } else if let Some(p) = vm.pid {
        format!("pid {p}")
    } else if let Some(p) = &vm.pidfile {
        format!("pidfile {}", p.display())
    } else if let Some(q) = &vm.qmp {
        format!("QMP socket {}", q.display())
    } else {
        "nothing (set qemu_name, libvirt, pid, pidfile or qmp)".into()
    }
}

/// Sort the threads of `pid` into vCPUs, I/O threads and emulator threads. `qmp_tids`
/// (vCPU index -> tid) is used when the threads carry no `CPU n/...` names.
pub fn classify(
    pid: u32,
    found_by: String,
    all: Vec<Thread>,
    qmp_tids: &BTreeMap<u32, u32>,
) -> VmThreads {
    let mut vcpus = BTreeMap::new();
    let mut iothreads = Vec::new();
    let mut emulator = Vec::new();
    let by_tid: BTreeMap<u32, u32> = qmp_tids.iter().map(|(i, t)| (*t, *i)).collect();
    for t in all {
        if let Some(i) = task::vcpu_index(&t.name).or_else(|| by_tid.get(&t.tid).copied()) {
            vcpus.insert(i, t);
        } else if t.name.starts_with("IO ") {
            iothreads.push(t);
        } else {
            emulator.push(t);
        }
    }
    VmThreads {
        pid,
        found_by,
        vcpus,
        iothreads,
        emulator,
    }
}

fn qmp_map(vm: &Vm) -> Result<BTreeMap<u32, u32>, TuneError> {
    let Some(sock) = &vm.qmp else {
        return Ok(BTreeMap::new());
    };
    let mut q = qmp::Qmp::connect(sock, Duration::from_secs(3))?;
    Ok(q.cpus_fast()?
        .into_iter()
        .map(|c| (c.cpu_index, c.thread_id))
        .collect())
}

/// The one QEMU process named `n`; None when there is none.
fn by_qemu_name(root: &SysRoot, n: &str) -> Result<Option<u32>, TuneError> {
    let found = task::find_qemu_by_name(root, n).map_err(sys("Listing processes"))?;
    match found.as_slice() {
        [] => Ok(None),
        [p] => Ok(Some(*p)),
        many => Err(TuneError::Vm(format!(
            "{} QEMU processes are named {n:?} (pids {many:?}): give --vm-pid",
            many.len()
        ))),
    }
}

/// Find the VM: `override_pid` (`--vm-pid`) first, then the profile's pid, pidfile, QEMU
/// name, libvirt domain or QMP socket. `Ok(None)`: the VM is not running.
pub fn find(
    root: &SysRoot,
    vm: &Vm,
    override_pid: Option<u32>,
) -> Result<Option<VmThreads>, TuneError> {
    let mut qmp_tids = BTreeMap::new();
    let (pid, found_by) = if let Some(p) = override_pid {
        (p, "--vm-pid".to_string())
    } else if let Some(p) = vm.pid {
        (p, format!("pid {p}"))
    } else if let Some(f) = &vm.pidfile {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(TuneError::Vm(format!(
                    "cannot read pidfile {}: {e}",
                    f.display()
                )))
            }
        };
        let p = text.trim().parse::<u32>().map_err(|_| {
            TuneError::Vm(format!(
                "pidfile {} holds {:?}, not a pid",
                f.display(),
                text.trim()
            ))
        })?;
        (p, format!("pidfile {}", f.display()))
    } else if let Some(n) = &vm.qemu_name {
        match by_qemu_name(root, n)? {
            Some(p) => (p, format!("QEMU -name {n}")),
            None => return Ok(None),
        }
    } else if let Some(n) = &vm.libvirt {
        let by_file = rt_sys::libvirt::domain_pid(root, n)
            .map_err(sys(format!("Finding libvirt domain {n:?}")))?;
        match by_file {
            Some(p) => (
                p,
                format!(
                    "libvirt domain {n} ({})",
                    root.display(rt_sys::libvirt::pid_file(n))
                ),
            ),
            // Another run directory (a session instance): libvirt names QEMU guest=NAME.
            None => match by_qemu_name(root, n)? {
                Some(p) => (p, format!("libvirt domain {n} (QEMU -name guest={n})")),
                None => return Ok(None),
            },
        }
    } else if let Some(sock) = &vm.qmp {
        if !sock.exists() {
            return Ok(None);
        }
        qmp_tids = qmp_map(vm)?;
        let first = qmp_tids
            .values()
            .next()
            .copied()
            .ok_or_else(|| TuneError::Vm(format!("QMP {} lists no vCPUs", sock.display())))?;
        let p = threads::tgid_of(root, first)
            .map_err(sys(format!("Finding the process of vCPU thread {first}")))?;
        (p, format!("QMP {}", sock.display()))
    } else {
        return Err(TuneError::Vm(describe(vm)));
    };
    let all = match task::threads(root, pid) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(sys(format!("Listing the threads of pid {pid}"))(e)),
    };
    let named = all.iter().any(|t| task::vcpu_index(&t.name).is_some());
    if !named && qmp_tids.is_empty() && vm.qmp.is_some() {
        qmp_tids = qmp_map(vm)?;
    }
    Ok(Some(classify(pid, found_by, all, &qmp_tids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(tid: u32, name: &str) -> Thread {
        Thread {
            pid: 100,
            tid,
            name: name.into(),
            start_time: u64::from(tid),
        }
    }

    #[test]
    fn classify_by_name_and_by_qmp() {
        let v = classify(
            100,
            "x".into(),
            vec![
                th(100, "qemu-system-x86"),
                th(101, "call_rcu"),
                th(102, "CPU 0/TCG"),
                th(103, "CPU 1/TCG"),
                th(104, "IO iothread0"),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(v.vcpus.len(), 2);
        assert_eq!(v.vcpus[&1].tid, 103);
        assert_eq!(v.iothreads.len(), 1);
        assert_eq!(v.emulator.len(), 2);
        // Without debug-threads every thread is "qemu-system-x86": QMP tells the vCPUs.
        let q: BTreeMap<u32, u32> = [(0, 102), (1, 103)].into();
        let v = classify(
            100,
            "x".into(),
            (100..104).map(|t| th(t, "qemu-system-x86")).collect(),
            &q,
        );
        assert_eq!(v.vcpus[&0].tid, 102);
        assert_eq!(v.emulator.len(), 2);
    }

    #[test]
    fn describe_names_the_way() {
        let vm = Vm {
            qemu_name: Some("lab".into()),
            ..Vm::default()
        };
        assert_eq!(describe(&vm), "QEMU -name lab");
        assert!(describe(&Vm::default()).contains("set qemu_name"));
    }

    #[test]
    fn find_by_pidfile_name_and_override() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(&dir.path().join("root"));
        let pidfile = dir.path().join("qemu.pid");
        std::fs::write(&pidfile, "4000\n").unwrap();
        let by_file = Vm {
            pidfile: Some(pidfile.clone()),
            ..Vm::default()
        };
        let v = find(&m.root, &by_file, None).unwrap().unwrap();
        assert_eq!(v.pid, 4000);
        assert_eq!(v.vcpus.len(), 2);
        assert!(v.found_by.starts_with("pidfile"));
        std::fs::write(&pidfile, "not a pid").unwrap();
        let e = find(&m.root, &by_file, None).unwrap_err().to_string();
        assert!(e.contains("not a pid"), "{e}");
        std::fs::remove_file(&pidfile).unwrap();
        assert!(
            find(&m.root, &by_file, None).unwrap().is_none(),
            "no pidfile: not running"
        );
        // A second QEMU with the same name is ambiguous; --vm-pid settles it.
        let by_name = Vm {
            qemu_name: Some("lab".into()),
            ..Vm::default()
        };
        m.put(
            "proc/4100/cmdline",
            "qemu-system-x86_64\0-name\0guest=lab\0",
        );
        m.thread(4100, 4100, "qemu-system-x86", 1, 0, 0, 0, "0-1");
        let e = find(&m.root, &by_name, None).unwrap_err().to_string();
        assert!(e.contains("give --vm-pid"), "{e}");
        let v = find(&m.root, &by_name, Some(4100)).unwrap().unwrap();
        assert_eq!(v.pid, 4100);
        assert!(v.vcpus.is_empty());
        assert!(find(&m.root, &by_name, Some(4999)).unwrap().is_none());
    }

    #[test]
    fn find_by_libvirt_domain_name() {
        let dir = tempfile::tempdir().unwrap();
        let m = crate::fake::FakeMachine::new(&dir.path().join("root"));
        let vm = Vm {
            libvirt: Some("lab".into()),
            ..Vm::default()
        };
        // Without a pid file: libvirt's -name guest=lab (here -name lab) still finds it.
        let v = find(&m.root, &vm, None).unwrap().unwrap();
        assert_eq!(
            (v.pid, v.found_by.as_str()),
            (4000, "libvirt domain lab (QEMU -name guest=lab)")
        );
        m.put("run/libvirt/qemu/lab.pid", "4000");
        let v = find(&m.root, &vm, None).unwrap().unwrap();
        assert_eq!(v.found_by, "libvirt domain lab (/run/libvirt/qemu/lab.pid)");
        assert_eq!(v.vcpus.len(), 2);
        // A stale pid file naming another process is an error that says so.
        m.put("run/libvirt/qemu/lab.pid", "60");
        let e = find(&m.root, &vm, None).unwrap_err().to_string();
        assert!(e.contains("Finding libvirt domain \"lab\""), "{e}");
        let other = Vm {
            libvirt: Some("ecu0".into()),
            ..Vm::default()
        };
        assert!(
            find(&m.root, &other, None).unwrap().is_none(),
            "not running"
        );
        assert_eq!(describe(&other), "libvirt domain ecu0");
    }
}
