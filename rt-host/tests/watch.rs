//! `rt-host watch`, its systemd unit and the libvirt hook: a real QEMU (TCG) restarted
//! while watch runs gets its new vCPU threads tuned, and revert restores them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rt_sys::{sched, task, SysRoot};

mod common;

use common::{bin, run, text};

#[test]
fn watch_prints_its_unit_and_hook_prints_the_libvirt_script() {
    let o = run(&["watch", "ecu", "--systemd-unit"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(" watch ecu\n"), "{t}");
    assert!(t.contains("[Install]\nWantedBy=multi-user.target"), "{t}");
    let o = run(&["hook", "ecu"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("      ecu0)\n"), "the profile's domain: {t}");
    assert!(t.contains(" setup ecu --vm-items "), "{t}");
}

/// A TCG QEMU named `name` with 2 vCPUs, paused (`-S`: its vCPU threads exist and sleep).
struct Qemu(Child);

impl Qemu {
    fn start(name: &str) -> Qemu {
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-machine", "q35", "-smp", "2", "-m", "64"])
            .args(["-name", &format!("{name},debug-threads=on")])
            .args(["-display", "none", "-nodefaults", "-S"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        Qemu(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The thread `CPU 1/TCG`, once QEMU made it.
    fn vcpu1(&self) -> u32 {
        let live = SysRoot::live();
        wait_for("QEMU's vCPU 1 thread", || {
            task::threads(&live, self.pid())
                .ok()?
                .into_iter()
                .find(|t| t.name == "CPU 1/TCG")
                .map(|t| t.tid)
        })
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tuned(tid: u32) -> Option<()> {
    let s = sched::get_sched(tid).ok()?.to_string();
    let a = sched::get_affinity(tid).ok()?.to_string();
    (s == "fifo:1" && a == "1").then_some(())
}

/// Stops the watch and reverts the journal, also when the test fails half-way.
struct Cleanup<'a> {
    watch: Option<Child>,
    journal: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(mut w) = self.watch.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let j = self.journal.to_str().unwrap_or_default();
        let _ = run(&["revert", "--journal-dir", j]);
    }
}

#[test]
#[ignore = "needs root and QEMU; tunes the threads of a QEMU it starts: run by lab/test.sh"]
fn root_watch_tunes_a_restarted_qemu_and_revert_restores_it() {
    if !testkit::require_root() || !testkit::require_command("qemu-system-x86_64") {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("watch.ron");
    std::fs::write(
        &prof,
        r#"Profile(name: "watch", host: (housekeeping_cpus: "0", realtime_cpus: "1",
            kernel: (require_preempt_rt: false),
            isolation: (cpuset_partition: false, workqueues: false, kthreads: false),
            vms: [(name: "rtvirt-watch", memory_mib: 64, cpus: 2,
                   vcpus: [(vcpu: 1, cpu: 1, policy: Fifo, priority: 1)])]))"#,
    )
    .unwrap();
    let journal = dir.path().join("journal");
    let mut c = Cleanup {
        watch: None,
        journal: &journal,
    };
    let q1 = Qemu::start("rtvirt-watch");
    let v1 = q1.vcpu1();
    let untuned = (
        sched::get_sched(v1).unwrap().to_string(),
        sched::get_affinity(v1).unwrap().to_string(),
    );
    assert_eq!(untuned.0, "other:0");
    let (p, j) = (prof.to_str().unwrap(), journal.to_str().unwrap());
    c.watch = Some(
        bin()
            .args(["watch", p, "--interval-ms", "200", "--journal-dir", j])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("watch to tune the first QEMU's vCPU 1", || tuned(v1));
    // Let that setup finish its verify before the VM goes.
    std::thread::sleep(Duration::from_secs(2));
    // The VM restarts: a new QEMU with new threads, by the same name.
    drop(q1);
    let q2 = Qemu::start("rtvirt-watch");
    let v2 = q2.vcpu1();
    assert_ne!(v1, v2);
    wait_for("watch to tune the restarted QEMU's vCPU 1", || tuned(v2));
    // Stopped by SIGTERM, watch exits 0 and leaves the tuning in the journal.
    let w = c.watch.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(w.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = w.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches("VM threads changed").count(), 2, "{said}");
    let dropped: Vec<u32> = said
        .lines()
        .filter_map(|l| l.strip_prefix("VM threads changed: "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(dropped[0], 0, "{said}");
    assert!(
        dropped[1] >= 2,
        "at least vCPU 1's affinity and policy of the first QEMU: {said}"
    );
    assert!(!said.contains("NOT MET"), "{said}");
    let o = run(&["status", "--json", "--journal-dir", j]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        !st["entries"].as_array().unwrap().is_empty(),
        "{}",
        text(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(&format!("\"tid\": {v1},")),
        "no entry of the gone vCPU thread {v1} is left: {}",
        text(&o)
    );
    assert!(tuned(v2).is_some());
    let o = run(&["revert", "--journal-dir", j]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        (
            sched::get_sched(v2).unwrap().to_string(),
            sched::get_affinity(v2).unwrap().to_string()
        ),
        untuned,
        "the restarted QEMU's vCPU 1 is back as QEMU made it"
    );
}
