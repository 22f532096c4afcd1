//! Root test against a real libvirtd on this machine: the domain XML that `rt-host vm`
//! renders is defined and started as a TCG domain, `rt-host check` audits it through
//! libvirt, `rt-host setup` finds its QEMU by the domain name and tunes it, and
//! `rt-host revert` restores it.
//!
//! This machine's facts, asserted rather than skipped: its `/dev/kvm` cannot run stock
//! guests, so the domain runs under TCG (`type='kvm'` becomes `type='qemu'` and the
//! host-passthrough `<cpu>` is dropped: nothing else changes); libvirtd refuses `<locked/>`
//! ("cannot limit locked memory ... Operation not permitted": no raising the memlock
//! limit here) and `<vcpusched>` ("Cannot set scheduler parameters": libvirt's `machine`
//! cgroup has `cpu.rt_runtime_us` 0), so each is taken out after its refusal was seen.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rt_sys::{hugepages, SysRoot};

const DOMAIN: &str = "rtvirt-lvtest";
mod common;

use common::{run as rt_host, text};

const PAGES: u64 = 96;

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .expect("run virsh")
}

/// libvirtd and virtlogd, started by this test and ended by their pids; the test domain
/// is destroyed and undefined first.
struct Daemons {
    libvirtd: Child,
    virtlogd: Child,
}

impl Daemons {
    fn start() -> Daemons {
        assert!(
            !virsh(&["version"]).status.success(),
            "a libvirtd is already running: this test starts and stops its own"
        );
        let spawn = |p: &str| {
            Command::new(p)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {p}: {e}"))
        };
        let d = Daemons {
            virtlogd: spawn("virtlogd"),
            libvirtd: spawn("libvirtd"),
        };
        let t = Instant::now();
        while !virsh(&["version"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "libvirtd did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", DOMAIN]);
        let _ = virsh(&["undefine", DOMAIN]);
        for c in [&mut self.libvirtd, &mut self.virtlogd] {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// Hugepages for the guest: a hugetlbfs mount (libvirt backs guest RAM with files there)
/// and enough 2 MiB pages; both put back as they were.
struct Hugepages {
    prior: String,
    mounted: bool,
}

impl Hugepages {
    fn reserve() -> Hugepages {
        let root = SysRoot::live();
        let rel = hugepages::nr_path(2048, None);
        let prior = root.read_trim(&rel).expect("read nr_hugepages");
        let mounts = root.read("proc/mounts").unwrap_or_default();
        let mounted = !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
        if mounted {
            std::fs::create_dir_all("/dev/hugepages").unwrap();
            let o = Command::new("mount")
                .args(["-t", "hugetlbfs", "hugetlbfs", "/dev/hugepages"])
                .output()
                .unwrap();
            assert!(o.status.success(), "mount hugetlbfs: {}", text(&o));
        }
        let want = prior.parse::<u64>().unwrap_or(0).max(PAGES);
        root.write(&rel, &want.to_string())
            .expect("reserve hugepages");
        Hugepages { prior, mounted }
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = SysRoot::live().write(hugepages::nr_path(2048, None), &self.prior);
        if self.mounted {
            let _ = Command::new("umount").arg("/dev/hugepages").status();
        }
    }
}

/// Define `xml` and start it: `Ok` when it runs, `Err(message)` when libvirt refuses.
fn define_and_start(dir: &Path, xml: &str) -> Result<(), String> {
    let _ = virsh(&["undefine", DOMAIN]);
    let f = dir.join("domain.xml");
    std::fs::write(&f, xml).unwrap();
    let o = virsh(&["define", f.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "virsh define refused the rendered XML: {}",
        text(&o)
    );
    let o = virsh(&["start", DOMAIN]);
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn profile(dir: &Path) -> String {
    let p = dir.join("lvtest.ron");
    std::fs::write(
        &p,
        format!(
            r#"// The lab profile's host for this 2-CPU machine, with a 2 MiB-hugepage VM that libvirt runs.
Profile(name: "lvtest", host: (
    housekeeping_cpus: "0", realtime_cpus: "1",
    kernel: (require_preempt_rt: false),
    kvm: (halt_poll_ns: 200000),
    idle: (max_exit_latency_us: 0),
    irqs: (steer_to: "0"),
    isolation: (cpuset_partition: false, workqueues: true, kthreads: false),
    hugepages: (size_kib: 2048, count: {PAGES}),
    emulator_cpus: "0", iothread_cpus: "0",
    kthread_priorities: (),
    vms: [(name: "{DOMAIN}", find: (libvirt: "{DOMAIN}"), memory_mib: 128, cpus: 2,
           vcpus: [(vcpu: 1, cpu: 1, policy: Fifo, priority: 1)])],
))"#
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn sched_of(tid: u32) -> (String, String) {
    let st = rt_sys::task::tid_stat(&SysRoot::live(), tid).unwrap();
    let aff = rt_sys::sched::get_affinity(tid).unwrap();
    (format!("{} {}", st.policy, st.rt_priority), aff.to_string())
}

fn vcpu1_tid() -> u32 {
    let root = SysRoot::live();
    let pids = rt_sys::task::find_qemu_by_name(&root, DOMAIN).unwrap();
    assert_eq!(pids.len(), 1, "QEMU of {DOMAIN}: {pids:?}");
    rt_sys::task::threads(&root, pids[0])
        .unwrap()
        .into_iter()
        .find(|t| t.name == "CPU 1/TCG")
        .map(|t| t.tid)
        .expect("thread CPU 1/TCG")
}

#[test]
#[ignore = "needs root, libvirtd and QEMU; tunes this host: run by lab/test.sh"]
fn root_libvirt_starts_the_rendered_domain_setup_tunes_it_and_revert_restores_it() {
    if !testkit::require_root()
        || !["libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"]
            .iter()
            .all(|c| testkit::require_command(c))
    {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(dir.path());
    let _pages = Hugepages::reserve();
    let _d = Daemons::start();

    let o = rt_host(&["vm", &prof, "--format", "libvirt"]);
    assert!(o.status.success(), "{}", text(&o));
    let xml = String::from_utf8(o.stdout).unwrap();
    eprintln!("this test runs the rendered domain under TCG: type='kvm' -> type='qemu' and the host-passthrough <cpu> dropped (this machine's KVM cannot run stock guests); nothing else changes");
    let cpu = xml.find("<cpu ").unwrap()..xml.find("</cpu>").unwrap() + "</cpu>".len();
    let mut tcg = xml.replacen("<domain type=\"kvm\"", "<domain type=\"qemu\"", 1);
    tcg.replace_range(cpu, "");

    let e = define_and_start(dir.path(), &tcg).expect_err("<locked/> is refused here");
    assert!(
        e.contains("cannot limit locked memory") && e.contains("Operation not permitted"),
        "{e}"
    );
    eprintln!(
        "this machine refuses <locked/> ({}): defined again without it",
        e.trim()
    );
    let tcg = tcg.replace("<locked/>", "");
    let e = define_and_start(dir.path(), &tcg).expect_err("<vcpusched> is refused here");
    assert!(
        e.contains("Cannot set scheduler parameters") && e.contains("Operation not permitted"),
        "{e}"
    );
    eprintln!("this machine refuses <vcpusched> (libvirt's machine cgroup has cpu.rt_runtime_us 0: {}): defined again without it", e.trim());
    let line = tcg
        .lines()
        .find(|l| l.contains("<vcpusched "))
        .unwrap()
        .to_string();
    let tcg = tcg.replace(&line, "");
    define_and_start(dir.path(), &tcg)
        .expect("the domain starts without <locked/> and <vcpusched>");

    // libvirt placed the threads as the XML says: vCPU 1 on CPU 1, at SCHED_OTHER.
    let tid = vcpu1_tid();
    assert_eq!(sched_of(tid), ("0 0".into(), "1".into()));

    // check: libvirt's QEMU is found by its -name, audited through virsh.
    let jdir = dir.path().join("journal");
    let j = jdir.to_str().unwrap();
    let o = rt_host(&["check", &prof, "--json", "--journal-dir", j]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    // check --json is a record::CheckReport: items with name, target, status, detail.
    let find = |t: &str| -> serde_json::Value {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"].as_str().unwrap().contains(t))
            .cloned()
            .unwrap_or_else(|| panic!("no item {t}: {}", text(&o)))
    };
    let locked = find("<memoryBacking><locked/>");
    assert_eq!(
        (locked["status"].as_str(), locked["current"].as_str()),
        (Some("differs"), Some("(absent)")),
        "{locked}"
    );
    assert!(locked["target"]
        .as_str()
        .unwrap()
        .contains(&format!("virsh dumpxml {DOMAIN}")));
    assert_eq!(find("<vcpusched> of vCPU 1")["status"], "differs");
    assert_eq!(find("<cpu mode>")["status"], "differs");
    assert_eq!(find("<vcpupin vcpu='1'>")["status"], "ok");
    assert_eq!(find("<memballoon>")["status"], "ok");
    assert_eq!(
        find("hugepage-backed memory")["status"],
        "ok",
        "{}",
        find("hugepage-backed memory")
    );
    let pmu = find("vCPU 0 pmu ");
    assert_eq!(pmu["status"], "ok");
    assert!(
        pmu["target"]
            .as_str()
            .unwrap()
            .contains(&format!("virsh qemu-monitor-command {DOMAIN}")),
        "{pmu}"
    );
    assert_eq!(
        find("vCPU 0 tsc-deadline ")["current"],
        "off",
        "TCG has no TSC-deadline timer"
    );

    // setup finds the domain by its libvirt pid file, gives libvirt's cpu cgroups on the
    // way to vCPU 1 RT runtime (which made <vcpusched> fail), and makes vCPU 1 FIFO 1.
    let o = rt_host(&["setup", &prof, "--json", "--journal-dir", j]);
    assert!(o.status.success(), "setup met: {}", text(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(
        r["plan"]["vm"]["found_by"],
        format!("libvirt domain {DOMAIN} (/run/libvirt/qemu/{DOMAIN}.pid)"),
        "{}",
        text(&o)
    );
    let done = |item: &str| -> Vec<serde_json::Value> {
        r["done"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["change"]["item"] == item)
            .cloned()
            .collect()
    };
    let runtime = done("rt-runtime");
    assert!(
        !runtime.is_empty() && runtime.iter().all(|d| d["outcome"] == "applied"),
        "libvirt's groups get RT runtime: {}",
        text(&o)
    );
    let sched = done("vcpu-sched");
    assert_eq!(sched.len(), 1, "{}", text(&o));
    assert_eq!(sched[0]["outcome"], "applied", "{}", text(&o));
    assert_eq!(sched_of(tid).0, "1 1", "vCPU 1 FIFO 1");

    // revert restores every journalled value; the vCPU is back at SCHED_OTHER on CPU 1.
    let o = rt_host(&["revert", "--journal-dir", j]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sched_of(tid), ("0 0".into(), "1".into()));
    let o = rt_host(&["status", "--json", "--journal-dir", j]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        s["profile"].is_null(),
        "journal left after revert: {}",
        text(&o)
    );
}
