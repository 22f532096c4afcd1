#![cfg(any(test, feature = "testing"))]
//! A fake `/sys` + `/proc` tree shaped like this project's 2-CPU test machine, with a
//! QEMU process, kernel threads and cgroup v1 cpusets, for tests and demos of
//! `rt-host --root DIR` without root. Thread state lives in the fake `/proc` files
//! (see [`rt_sys::threads::Tree`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rt_sys::SysRoot;

/// libvirt's cgroup of the fake QEMU (domain `lab`, id 1).
pub const LIBVIRT_GROUP: &str = "qemu-1-lab.libvirt-qemu";

/// The QEMU pid in the fake tree.
pub const QEMU_PID: u32 = 4000;
/// Its threads: (tid, name, policy, priority).
pub const QEMU_THREADS: &[(u32, &str, u32, u32)] = &[
    (4000, "qemu-system-x86", 0, 0),
    (4001, "call_rcu", 0, 0),
    (4002, "CPU 0/TCG", 0, 0),
    (4003, "CPU 1/TCG", 0, 0),
    (4004, "IO iothread0", 0, 0),
    (4005, "rt-worker", 1, 10),
];

/// The `host` section of the bundled `lab` profile, which fits this tree, without its TCG
/// layout (vCPU 0 below a FIFO main loop and I/O thread on CPU 0): vCPU 1 FIFO 50 on CPU 1
/// alone. [`lab_profile_host`] is the bundled one.
pub fn lab_host() -> profiles::Host {
    let mut h = lab_profile_host();
    let vm = &mut h.vms[0];
    vm.vcpus.retain(|p| p.vcpu == 1);
    vm.emulator_policy = rt_sys::sched::Policy::Other;
    vm.emulator_priority = 0;
    vm.iothread_policy = rt_sys::sched::Policy::Other;
    vm.iothread_priority = 0;
    h
}

/// The bundled `lab` profile with [`lab_host`] as its host.
pub fn lab_profile() -> profiles::Profile {
    let mut p = profiles::load("lab")
        .expect("the bundled lab profile")
        .profile;
    p.host = Some(lab_host());
    p
}

/// The `host` section of the bundled `lab` profile as it is.
pub fn lab_profile_host() -> profiles::Host {
    profiles::load("lab")
        .expect("the bundled lab profile")
        .profile
        .host
        .expect("lab has a host section")
}

/// A host section from RON text (`(housekeeping_cpus: "0", ...)`), validated as a profile.
pub fn host_from(ron: &str) -> profiles::Host {
    let p = profiles::parse(&format!("Profile(name: \"t\", host: {ron})"), "test host")
        .expect("a test host that parses");
    profiles::validate(&p).expect("a valid test host");
    p.host.expect("a host section")
}

/// `rt-host setup` of `host` on the fake tree under `root`, journalled in `jdir`.
pub fn setup(
    root: &SysRoot,
    host: &profiles::Host,
    jdir: &Path,
) -> Result<crate::apply::SetupReport, crate::TuneError> {
    let id = rt_sys::journal::ProfileId {
        name: "t".into(),
        sha256: "0".repeat(64),
    };
    let ctx = crate::plan::Ctx::new(root);
    crate::apply::setup(
        &id,
        host,
        &ctx,
        jdir,
        &crate::apply::SetupOptions::default(),
    )
}

/// `rt-host revert` of the journal in `jdir` on the fake tree under `root`.
pub fn revert(root: &SysRoot, jdir: &Path) -> crate::apply::RevertReport {
    let opts = rt_sys::journal::RevertOptions::default();
    crate::apply::revert(root, &rt_sys::threads::Tree, jdir, &opts).expect("revert")
}

/// A `/proc/PID/task/TID/stat` line with the fields rtvirt reads.
pub fn stat_line(
    tid: u32,
    comm: &str,
    ppid: u32,
    flags: u64,
    start: u64,
    policy: u32,
    prio: u32,
) -> String {
    // Fields 3..=52; field n sits at index n - 3.
    let mut f: Vec<String> = vec!["0".to_string(); 50];
    f[0] = "S".into();
    f[1] = ppid.to_string();
    f[6] = flags.to_string();
    f[19] = start.to_string();
    f[36] = "1".into();
    f[37] = prio.to_string();
    f[38] = policy.to_string();
    format!("{tid} ({comm}) {}\n", f.join(" "))
}

/// What the kernel would show for a value written to a fake file: the trailing newline
/// the kernel adds is ignored, and a choice file (`always [madvise] never`) counts as its
/// selected word, which is what gets written back.
fn normalize(text: &str) -> String {
    let t = text.trim_end();
    rt_sys::sysctl::selected(t)
        .ok()
        .filter(|_| t.contains('['))
        .map(str::to_string)
        .unwrap_or_else(|| t.to_string())
}

/// A knob made unwritable by [`FakeMachine::refuse_writes`]; writable again on drop.
#[derive(Debug)]
pub struct Refusal {
    path: PathBuf,
    immutable: bool,
}

impl Drop for Refusal {
    fn drop(&mut self) {
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o644));
        }
    }
}

/// A fake machine under a directory.
#[derive(Debug)]
pub struct FakeMachine {
    /// The tree's root.
    pub root: SysRoot,
}

impl FakeMachine {
    /// Write a file (creating parents).
    pub fn put(&self, rel: &str, text: &str) {
        let p = self.root.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create fake dir");
        }
        std::fs::write(p, text).expect("write fake file");
    }

    /// Add thread `tid` of `pid` with affinity `cpus`.
    #[allow(clippy::too_many_arguments)]
    pub fn thread(
        &self,
        pid: u32,
        tid: u32,
        name: &str,
        ppid: u32,
        flags: u64,
        policy: u32,
        prio: u32,
        cpus: &str,
    ) {
        let d = format!("proc/{pid}/task/{tid}");
        let st = stat_line(tid, name, ppid, flags, 1000 + u64::from(tid), policy, prio);
        self.put(&format!("{d}/stat"), &st);
        self.put(
            &format!("{d}/status"),
            &format!("Name:\t{name}\nTgid:\t{pid}\nPid:\t{tid}\nCpus_allowed_list:\t{cpus}\n"),
        );
        self.put(&format!("{d}/cgroup"), "3:cpuset:/\n0::/\n");
        if tid == pid {
            self.put(&format!("proc/{pid}/stat"), &st);
        }
        self.put(
            &format!("proc/{tid}/status"),
            &format!("Name:\t{name}\nTgid:\t{pid}\n"),
        );
    }

    /// This machine: 2 CPUs, cpuidle POLL + haltpoll, 2 IRQs, cgroup v1 cpuset, a QEMU
    /// named `lab` with `CPU 0/TCG` and `CPU 1/TCG`, kthreadd, a per-CPU kworker and a
    /// movable kcompactd0.
    pub fn new(dir: &Path) -> FakeMachine {
        let m = FakeMachine {
            root: SysRoot::new(dir),
        };
        let files: &[(&str, &str)] = &[
            ("proc/sys/kernel/osrelease", "6.18.44-fc-v669\n"),
            ("proc/sys/kernel/random/boot_id", "5d1c8d52-2f4e-4c1b-9a57-0b1f3c2e7a10\n"),
            ("proc/sys/kernel/hostname", "rtvirt-test-host\n"),
            ("proc/sys/kernel/version", "#1 SMP PREEMPT_DYNAMIC @0\n"),
            ("proc/cmdline", "console=ttyS0 quiet reboot=k panic=1 nomodule cpuidle_haltpoll.force=1\n"),
            ("proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu vme de pse tsc msr hypervisor\n"),
            ("sys/devices/system/cpu/online", "0-1\n"),
            ("proc/sys/kernel/timer_migration", "1\n"),
            ("proc/sys/kernel/numa_balancing", "0\n"),
            ("proc/sys/vm/stat_interval", "1\n"),
            ("proc/sys/kernel/sched_rt_runtime_us", "950000\n"),
            ("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n"),
            ("sys/kernel/mm/ksm/run", "0\n"),
            ("sys/module/kvm/parameters/halt_poll_ns", "0\n"),
            ("proc/irq/default_smp_affinity", "3\n"),
            ("proc/irq/26/smp_affinity", "3\n"),
            ("proc/irq/36/smp_affinity", "2\n"),
            ("proc/interrupts", "           CPU0       CPU1\n 26:          0         14  IO-APIC   4-edge      ttyS0\n 36:          0      64781 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\nLOC:      38497      36701   Local timer interrupts\n"),
            ("sys/devices/virtual/workqueue/cpumask", "3\n"),
            ("sys/devices/virtual/workqueue/writeback/cpumask", "3\n"),
            ("sys/devices/virtual/workqueue/cpumask_isolated", "0\n"),
            ("proc/meminfo", "MemTotal:        8148412 kB\nHugePages_Total:       0\nHugePages_Free:        0\nHugepagesize:       2048 kB\n"),
            ("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n"),
            ("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n"),
            ("sys/devices/system/node/node0/cpulist", "0-1\n"),
            ("proc/mounts", "proc /proc proc rw 0 0\ncgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"),
            ("sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n"),
            ("sys/fs/cgroup/cpuset/cpuset.mems", "0\n"),
            ("sys/fs/cgroup/cpuset/cpuset.sched_load_balance", "1\n"),
            ("sys/fs/cgroup/cpuset/tasks", ""),
            ("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n"),
        ];
        for (p, t) in files {
            m.put(p, t);
        }
        for cpu in 0..2 {
            for (k, name, lat) in [(0, "POLL", "0"), (1, "haltpoll idle", "1")] {
                let b = format!("sys/devices/system/cpu/cpu{cpu}/cpuidle/state{k}");
                m.put(&format!("{b}/name"), &format!("{name}\n"));
                m.put(&format!("{b}/latency"), &format!("{lat}\n"));
                m.put(&format!("{b}/disable"), "0\n");
            }
        }
        m.put(
            &format!("proc/{QEMU_PID}/cmdline"),
            "qemu-system-x86_64\0-name\0lab,debug-threads=on\0-accel\0tcg\0",
        );
        for (tid, name, pol, prio) in QEMU_THREADS {
            m.thread(QEMU_PID, *tid, name, 1, 0x40_0040, *pol, *prio, "0-1");
        }
        let k = rt_sys::threads::PF_KTHREAD;
        m.thread(2, 2, "kthreadd", 0, k, 0, 0, "0-1");
        m.thread(
            57,
            57,
            "kworker/1:1-events",
            2,
            k | rt_sys::threads::PF_NO_SETAFFINITY,
            0,
            0,
            "1",
        );
        m.thread(60, 60, "kcompactd0", 2, k, 0, 0, "0-1");
        let pinned = k | rt_sys::threads::PF_NO_SETAFFINITY;
        m.thread(14, 14, "ksoftirqd/0", 2, pinned, 0, 0, "0");
        m.thread(22, 22, "ksoftirqd/1", 2, pinned, 0, 0, "1");
        m.put("proc/2/cmdline", "");
        m.put("proc/57/cmdline", "");
        m.put("proc/60/cmdline", "");
        m.put("proc/14/cmdline", "");
        m.put("proc/22/cmdline", "");
        m
    }

    /// libvirt's cgroup v1 layout (libvirtd started without systemd) for the QEMU of this
    /// tree: a `cpu` hierarchy where `machine/qemu-1-lab.libvirt-qemu/{emulator,vcpu0,vcpu1}`
    /// hold its threads, every group at RT runtime 0 and the root at 950000 of 1000000 us.
    /// Returns the vCPU 1 group's directory.
    pub fn libvirt_cpu_cgroups(&self) -> String {
        let mounts = self.root.read("proc/mounts").expect("fake mounts");
        self.put(
            "proc/mounts",
            &format!("{mounts}cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"),
        );
        let top = "sys/fs/cgroup/cpu";
        let dom = format!("{top}/machine/{LIBVIRT_GROUP}");
        for (dir, rt) in [
            (top.to_string(), "950000"),
            (format!("{top}/machine"), "0"),
            (dom.clone(), "0"),
            (format!("{dom}/emulator"), "0"),
            (format!("{dom}/vcpu0"), "0"),
            (format!("{dom}/vcpu1"), "0"),
        ] {
            self.put(&format!("{dir}/cpu.rt_runtime_us"), &format!("{rt}\n"));
            self.put(&format!("{dir}/cpu.rt_period_us"), "1000000\n");
            self.put(&format!("{dir}/tasks"), "");
        }
        for (tid, name, ..) in QEMU_THREADS {
            let group = match rt_sys::task::vcpu_index(name) {
                Some(i) => format!("vcpu{i}"),
                None => "emulator".into(),
            };
            self.put(
                &format!("proc/{QEMU_PID}/task/{tid}/cgroup"),
                &format!("3:cpuset:/\n1:cpu:/machine/{LIBVIRT_GROUP}/{group}\n0::/\n"),
            );
        }
        format!("{dom}/vcpu1")
    }

    /// Make the kernel refuse writes to `rel` as it refuses `halt_poll_ns` on some hosts:
    /// `chattr +i` (EPERM even for root), or mode 0444 (EACCES) where chattr is not
    /// permitted (not root). Undone when the guard drops.
    pub fn refuse_writes(&self, rel: &str) -> Refusal {
        let path = self.root.path(rel);
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !immutable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
                .expect("chmod fake knob");
        }
        Refusal { path, immutable }
    }

    /// Fail (naming every difference) unless the tree is as in the snapshot `before`.
    #[track_caller]
    pub fn assert_unchanged(&self, before: &BTreeMap<PathBuf, String>) {
        assert_eq!(
            FakeMachine::diff(before, &self.snapshot()),
            Vec::<String>::new()
        );
    }

    /// The keys whose values differ between two snapshots (empty when equal).
    pub fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
        let keys: std::collections::BTreeSet<&PathBuf> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{}: {:?} != {:?}", k.display(), a.get(k), b.get(k)))
            .collect()
    }

    /// Every file under the root with its (normalized) content, except cgroup attach
    /// files (`tasks`, `cgroup.threads`, `cgroup.procs`), whose fake content is the last
    /// tid written.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.root.root().to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).expect("stat fake file");
                if meta.is_dir() {
                    out.insert(p.clone(), "<dir>".into());
                    stack.push(p);
                } else if meta.file_type().is_symlink() {
                    out.insert(
                        p.clone(),
                        format!("<link {:?}>", std::fs::read_link(&p).ok()),
                    );
                } else {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if matches!(name.as_str(), "tasks" | "cgroup.threads" | "cgroup.procs") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&p).unwrap_or_else(|_| "<binary>".into());
                    out.insert(p.clone(), normalize(&text));
                }
            }
        }
        out
    }
}
