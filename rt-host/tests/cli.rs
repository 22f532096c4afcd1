//! CLI runs of `rt-host` on a fake machine tree (`--root`), plus root tests against a
//! real QEMU process (`root_*`, run as root by lab/test.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rt_host::fake::FakeMachine;

mod common;

use common::{bin, kill_9_when_paused, run, stderr_of, stdout_of, text};

struct Fake {
    _dir: tempfile::TempDir,
    m: FakeMachine,
    root: String,
    journal: String,
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeMachine::new(&dir.path().join("root"));
    let root = dir.path().join("root").display().to_string();
    let journal = dir.path().join("journal").display().to_string();
    Fake {
        _dir: dir,
        m,
        root,
        journal,
    }
}

impl Fake {
    fn run(&self, cmd: &str, extra: &[&str]) -> Output {
        let mut a = vec![cmd];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--root", &self.root, "--journal-dir", &self.journal]);
        run(&a)
    }
}

#[test]
fn check_reports_each_status_and_exits_1() {
    let f = fake();
    let o = f.run("check", &["lab", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The typed check report the run record keeps (record::CheckReport).
    let r: record::CheckReport = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r.tool, "rt-host check");
    assert!(!r.verified());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kernel"]["virtualization"], "other");
    let changes = v["items"].as_array().unwrap();
    let status = |item: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c["name"] == item)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status("halt-poll"), ["differs"]);
    assert!(status("boot-arg").iter().all(|s| s == "needs-reboot"));
    assert_eq!(status("kernel"), ["not-applicable"]);
    assert_eq!(
        status("vcpu-sched"),
        ["differs", "differs"],
        "vCPUs 0 and 1"
    );
    assert_eq!(status("emulator-sched"), ["differs"], "the main loop");
    // The VM found is in the plan's JSON.
    let o = f.run("plan", &["lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["vm"]["pid"], 4000);
    // Text form.
    let o = f.run("check", &["lab"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("halt_poll_ns: 0 -> 200000"), "{t}");
    assert!(t.contains("23 to 89 minutes"), "{t}");
}

#[test]
fn plan_lists_only_what_would_change() {
    let f = fake();
    let t = stdout_of(&f.run("plan", &["lab"]), 0);
    assert!(
        t.contains("sched of \"CPU 1/TCG\" (tid 4003): other:0 -> fifo:50"),
        "{t}"
    );
    assert!(
        !t.contains("numa_balancing"),
        "ok items are not listed: {t}"
    );
}

#[test]
fn setup_status_revert_round_trip() {
    let f = fake();
    let before = f.m.snapshot();
    let o = f.run("setup", &["lab", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["done"].as_array().unwrap().len() > 5);
    let o = f.run("status", &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["complete"].as_bool().unwrap());
    assert!(v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["in_effect"] == true));
    // Check after setup: runtime items ok; boot args still need a reboot.
    let o = f.run("check", &["lab", "--json"]);
    let r: record::CheckReport = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r.count(record::CheckStatus::Differs),
        1,
        "only nested virtualization differs: {}",
        text(&o)
    );
    let o = f.run("revert", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restored"));
    f.m.assert_unchanged(&before);
    let o = f.run("revert", &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to revert"),
        "{}",
        text(&o)
    );
}

#[test]
fn kill_9_mid_setup_then_revert_restores_everything() {
    let f = fake();
    let before = f.m.snapshot();
    let child = bin()
        .args([
            "setup",
            "lab",
            "--root",
            &f.root,
            "--journal-dir",
            &f.journal,
            "--pause-after",
            "6",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    kill_9_when_paused(child, 6);
    assert_ne!(
        FakeMachine::diff(&before, &f.m.snapshot()),
        Vec::<String>::new()
    );
    let o = f.run("status", &[]);
    assert_eq!(o.status.code(), Some(1), "a partial setup: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PARTIALLY"));
    let o = f.run("revert", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("setup had not finished"));
    f.m.assert_unchanged(&before);
}

#[test]
fn unexpected_error_undoes_the_run_and_exits_2_with_the_chain() {
    let f = fake();
    let before = f.m.snapshot();
    let o = f.run("setup", &["lab", "--fail-after", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("Setting up profile \"lab\""), "{e}");
    assert!(e.contains("caused by: Setup stopped at"), "{e}");
    assert!(e.contains("injected fault"), "{e}");
    f.m.assert_unchanged(&before);
}

/// Edit the journal of `f` as a local attacker (or a careless copy) would.
fn edit_journal(f: &Fake, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = Path::new(&f.journal).join("journal.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn status_and_revert_refuse_a_journal_naming_other_files() {
    let f = fake();
    f.m.put("etc/shadow", "root:$6$secret-hash:19000::::::\n");
    let o = f.run("setup", &["lab"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for hostile in ["etc/shadow", "sys/../etc/shadow", "/etc/shadow"] {
        edit_journal(&f, |v| {
            v["entries"][0]["target"] = serde_json::json!({"File": {"path": hostile}});
        });
        let o = f.run("status", &[]);
        assert_eq!(o.status.code(), Some(2), "{hostile}: {}", text(&o));
        let t = text(&o);
        assert!(!t.contains("secret-hash"), "status printed the file: {t}");
        assert!(t.contains("entry 0") && t.contains("is refused"), "{t}");
        let o = f.run("revert", &[]);
        assert_eq!(o.status.code(), Some(2), "{hostile}: {}", text(&o));
        assert!(text(&o).contains("Nothing was changed"), "{}", text(&o));
    }
    assert_eq!(
        std::fs::read_to_string(f.m.root.path("etc/shadow")).unwrap(),
        "root:$6$secret-hash:19000::::::\n"
    );
}

#[test]
fn revert_refuses_another_root_or_profile_unless_forced() {
    let f = fake();
    let before = f.m.snapshot();
    let o = f.run("setup", &["lab"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The same journal directory used with another root.
    let other = tempfile::tempdir().unwrap();
    let om = FakeMachine::new(other.path());
    let other_before = om.snapshot();
    let root = other.path().display().to_string();
    let o = run(&["revert", "--root", &root, "--journal-dir", &f.journal]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("Refusing to revert: give --force"), "{e}");
    assert!(
        e.contains(&format!("it was written for root {}", f.root)),
        "{e}"
    );
    om.assert_unchanged(&other_before);
    // A profile that was not the one set up.
    let e = stderr_of(&f.run("revert", &["ecu"]), 2);
    assert!(e.contains("is not the one set up (\"lab\""), "{e}");
    // The right profile reverts; --force on a mismatch says what it overrides.
    edit_journal(&f, |v| {
        v["origin"]["boot_id"] = serde_json::json!("an-earlier-boot");
    });
    let t = stdout_of(&f.run("revert", &["lab", "--force"]), 0);
    assert!(
        t.contains("--force: reverting although it was written in boot an-earlier-boot"),
        "{t}"
    );
    f.m.assert_unchanged(&before);
}

#[test]
fn umask_000_still_gives_a_private_journal() {
    use std::os::unix::fs::PermissionsExt;
    let f = fake();
    let o = Command::new("sh")
        .args([
            "-c",
            "umask 000 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_rt-host"),
            "setup",
            "lab",
            "--root",
            &f.root,
            "--journal-dir",
            &f.journal,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let j = Path::new(&f.journal);
    assert_eq!(mode(j), 0o700);
    assert_eq!(mode(&j.join("journal.json")), 0o600);
    assert_eq!(mode(&j.join("lock")), 0o600);
}

#[test]
fn setup_exits_1_when_a_vcpu_cannot_be_made_real_time_and_says_why() {
    let f = fake();
    f.m.libvirt_cpu_cgroups();
    let _a =
        f.m.refuse_writes("sys/fs/cgroup/cpu/machine/cpu.rt_runtime_us");
    let _b = f.m.refuse_writes("proc/4000/task/4003/stat");
    let _c = f.m.refuse_writes("sys/module/kvm/parameters/halt_poll_ns");
    let before = f.m.snapshot();
    let t = stdout_of(&f.run("setup", &["lab"]), 1);
    assert!(
        t.contains("NOT MET: 2 essential item(s) could not be applied"),
        "{t}"
    );
    assert!(
        t.contains("not permitted here  halt-poll"),
        "optional items stay optional: {t}"
    );
    assert!(
        t.contains("    cause: refused by the kernel at the last setup: RT group scheduling: the thread's cpu cgroup /sys/fs/cgroup/cpu/machine has cpu.rt_runtime_us 0"),
        "{t}"
    );
    assert!(t.contains("    fix: "), "{t}");
    // The typed check report: the refused essential items are not ok, and say so.
    let o = f.run("check", &["lab", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: record::CheckReport = serde_json::from_slice(&o.stdout).unwrap();
    let not_met: Vec<&record::CheckItem> = r
        .items
        .iter()
        .filter(|i| {
            i.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("NOT MET"))
        })
        .collect();
    assert_eq!(not_met.len(), 2, "{r:#?}");
    let sched = not_met.iter().find(|i| i.name == "vcpu-sched").unwrap();
    assert_eq!(sched.status, record::CheckStatus::NotPermitted);
    assert!(
        sched.detail.as_deref().unwrap().contains("fix: "),
        "{sched:?}"
    );
    // The plan's JSON carries the flag and the count.
    let o = f.run("plan", &["lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["met"].as_bool(), v["summary"]["not_met"].as_u64()),
        (Some(false), Some(2)),
        "{v}"
    );
    let o = f.run("revert", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    f.m.assert_unchanged(&before);
}

#[test]
fn a_second_setup_is_locked_out() {
    let f = fake();
    let _held = rt_sys::journal::Journal::open_locked(Path::new(&f.journal)).unwrap();
    let e = stderr_of(&f.run("setup", &["lab"]), 2);
    assert!(e.contains("Another rtvirt setup is running"), "{e}");
}

#[test]
fn unsafe_and_bad_profiles_are_errors() {
    let f = fake();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("allfifo.ron");
    std::fs::write(
        &p,
        r#"Profile(name: "allfifo", host: Some((housekeeping_cpus: "0", realtime_cpus: "1",
        vm: Some((qemu_name: Some("lab"))), vcpus: [(vcpu: 0, cpu: 0), (vcpu: 1, cpu: 1)])))"#,
    )
    .unwrap();
    let o = f.run("setup", &[p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Profile validation or rt-host's own safety check refuses it, naming the vCPU.
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("host.vcpus[0]") || e.contains("FIFO vCPUs on every online CPU"),
        "{}",
        text(&o)
    );
    let o = f.run("check", &["no-such-profile"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-profile"));
}

#[test]
fn boot_args_print_the_line_and_how_to_install_it() {
    let f = fake();
    let t = stdout_of(&f.run("boot-args", &["lab"]), 0);
    assert!(
        t.contains("isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0"),
        "{t}"
    );
    assert!(t.contains("GRUB_CMDLINE_LINUX_DEFAULT"), "{t}");
    assert!(t.contains("grubby --update-kernel=ALL"), "{t}");
    assert!(t.contains("missing from /proc/cmdline"), "{t}");
    f.m.put("proc/cmdline", "quiet isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0 processor.max_cstate=1 intel_idle.max_cstate=0 skew_tick=1 nosoftlockup tsc=reliable rcupdate.rcu_normal_after_boot=1\n");
    let o = f.run("boot-args", &["lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["missing"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn modprobe_prints_the_file_and_the_loaded_values_that_differ() {
    let f = fake();
    f.m.put("sys/module/kvm/parameters/kvmclock_periodic_sync", "Y\n");
    f.m.put("sys/module/kvm/parameters/nx_huge_pages", "N\n");
    let t = stdout_of(&f.run("modprobe", &["lab"]), 0);
    assert!(
        t.contains("options kvm halt_poll_ns=200000 nx_huge_pages=off kvmclock_periodic_sync=0\n"),
        "{t}"
    );
    assert!(
        t.contains("/sys/module/kvm/parameters/kvmclock_periodic_sync: loaded Y: differs"),
        "{t}"
    );
    assert!(
        t.contains("/sys/module/kvm_intel/parameters/ple_gap: not loaded"),
        "{t}"
    );
    let o = f.run("modprobe", &["lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["differ"],
        serde_json::json!(["kvm.halt_poll_ns", "kvm.kvmclock_periodic_sync"]),
        "{v}"
    );
}

#[test]
fn hold_keeps_the_latency_request_until_sigterm() {
    let f = fake();
    f.m.put("dev/cpu_dma_latency", "");
    let o = f.run("hold", &["lab", "--systemd-unit"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("ExecStart=") && t.contains(" hold lab --us 0"),
        "{t}"
    );
    let mut child = bin()
        .args(["hold", "lab", "--us", "7", "--root", &f.root])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("holding /dev/cpu_dma_latency at 7 us"),
        "{line}"
    );
    let bytes = std::fs::read(f.m.root.path("dev/cpu_dma_latency")).unwrap();
    assert_eq!(bytes, 7i32.to_ne_bytes());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "released");
}

#[test]
fn man_pages_and_completions_come_from_the_cli_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let o = run(&["generate", "man", &d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let man = std::fs::read_to_string(dir.path().join("rt-host-setup.1")).unwrap();
    assert!(man.contains("journal"), "{man}");
    let o = run(&["generate", "completions", &d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::read_to_string(dir.path().join("rt-host.bash"))
        .unwrap()
        .contains("boot-args"));
}

// ---------------------------------------------------------------- root tests: real QEMU

/// A QEMU started by a test, with `CPU n/TCG` threads held stopped (`-S`). Drop reverts the
/// journal and kills QEMU by its pid, also when the test fails.
struct Qemu {
    _lock: testkit::HostLock,
    child: std::process::Child,
    name: String,
    dir: tempfile::TempDir,
}

impl Qemu {
    fn start(tag: &str, extra: &[&str], named: bool) -> Option<Qemu> {
        // Root tests share the host's knobs with every other test that tunes it.
        let lock = testkit::host_lock();
        // Only root can make other threads SCHED_FIFO and write cpuidle knobs.
        if !testkit::require_root() || !testkit::require_command("qemu-system-x86_64") {
            return None;
        }
        let name = format!("rtvirt-test-{}-{tag}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let name_arg = if named {
            format!("{name},debug-threads=on")
        } else {
            name.clone()
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-name",
            &name_arg,
            "-smp",
            "2",
            "-m",
            "64",
            "-nographic",
            "-nodefaults",
            "-S",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("start qemu-system-x86_64");
        let q = Qemu {
            _lock: lock,
            child,
            name,
            dir,
        };
        // Wait (with a deadline) for both vCPU threads to exist.
        let deadline = Instant::now() + Duration::from_secs(20);
        while q
            .threads()
            .iter()
            .filter(|(_, n)| n.starts_with("CPU ") || n == "qemu-system-x86")
            .count()
            < 3
        {
            assert!(
                Instant::now() < deadline,
                "QEMU did not start its vCPU threads: {:?}",
                q.threads()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(q)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    fn threads(&self) -> Vec<(u32, String)> {
        threads_of(self.pid())
    }

    fn vcpu_tid(&self, n: u32) -> u32 {
        vcpu_tid(self.pid(), n)
    }

    fn profile(&self, vm: &str) -> PathBuf {
        root_profile(self.dir.path(), vm)
    }

    fn rt_host(&self, args: &[&str]) -> Output {
        rt_host_with_journal(&self.journal(), args)
    }
}

/// The threads of `pid`: (tid, comm), sorted.
fn threads_of(pid: u32) -> Vec<(u32, String)> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = rd
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, comm.trim().to_string()))
        })
        .collect();
    v.sort();
    v
}

fn vcpu_tid(pid: u32, n: u32) -> u32 {
    threads_of(pid)
        .into_iter()
        .find(|(_, c)| c == &format!("CPU {n}/TCG"))
        .map(|(t, _)| t)
        .expect("vCPU thread")
}

/// A profile (in `dir`) tuning the VM `vm` names: vCPU 1 on CPU 1 at FIFO 50, C-states off
/// on CPU 1, IRQs to CPU 0 (refused on this machine), halt polling (refused here).
fn root_profile(dir: &Path, vm: &str) -> PathBuf {
    let p = dir.join("profile.ron");
    std::fs::write(
        &p,
        format!(
            r#"Profile(name: "root-test", host: Some((
                housekeeping_cpus: "0", realtime_cpus: "1",
                kernel: (require_preempt_rt: false),
                kvm: (halt_poll_ns: Some(100000)),
                idle: (max_exit_latency_us: Some(0)),
                irqs: (steer_to: Some("0")),
                isolation: (cpuset_partition: false, workqueues: true, kthreads: false),
                sysctl: (realtime_virtual_host: false),
                vm: Some(({vm})),
                vcpus: [(vcpu: 1, cpu: 1, policy: Fifo, priority: 50)],
                emulator_cpus: Some("0"), iothread_cpus: Some("0"),
            )))"#
        ),
    )
    .unwrap();
    p
}

fn rt_host_with_journal(journal: &Path, args: &[&str]) -> Output {
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(&["--journal-dir", journal.to_str().unwrap()]);
    run(&a)
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.journal().join("journal.json").exists() {
            let o = self.rt_host(&["revert"]);
            eprintln!("cleanup revert: {}", text(&o));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// Every value a setup of `Qemu::profile` may touch: sysfs files and QEMU's threads.
fn live_snapshot(q: &Qemu) -> std::collections::BTreeMap<String, String> {
    snapshot_of(q.pid())
}

/// Every value a setup of [`root_profile`] may touch: sysfs files, the RT runtime of
/// every cpu cgroup, and the threads of `pid`.
fn snapshot_of(pid: u32) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut files = vec![
        "/sys/module/kvm/parameters/halt_poll_ns".to_string(),
        "/proc/irq/default_smp_affinity".to_string(),
        "/sys/devices/virtual/workqueue/cpumask".to_string(),
    ];
    for cpu in 0..2 {
        for k in 0..10 {
            files.push(format!(
                "/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{k}/disable"
            ));
        }
    }
    for e in std::fs::read_dir("/proc/irq").unwrap().flatten() {
        files.push(format!("{}/smp_affinity", e.path().display()));
    }
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup/cpu")];
    while let Some(d) = dirs.pop() {
        files.push(format!("{}/cpu.rt_runtime_us", d.display()));
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    for f in files {
        if let Ok(t) = std::fs::read_to_string(&f) {
            out.insert(f, t);
        }
    }
    for (tid, name) in threads_of(pid) {
        let s = rt_sys::sched::get_sched(tid)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let a = rt_sys::sched::get_affinity(tid)
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.insert(format!("thread {tid} {name}"), format!("{s} on {a}"));
    }
    out
}

fn diff(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v:?} -> {:?}", b.get(k)))
        .collect()
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_setup_pins_and_fifo_vcpu_then_revert_restores_exactly() {
    let Some(q) = Qemu::start("setup", &[], true) else {
        return;
    };
    let before = live_snapshot(&q);
    let profile = q.profile(&format!("qemu_name: Some({:?})", q.name));
    let o = q.rt_host(&["setup", profile.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // This machine refuses halt_poll_ns and IRQ affinity: reported, not fatal.
    let refused: Vec<&str> = v["done"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "not-permitted")
        .map(|d| d["change"]["item"].as_str().unwrap())
        .collect();
    eprintln!("refused here: {refused:?}");
    let t1 = q.vcpu_tid(1);
    let s = rt_sys::sched::get_sched(t1).unwrap();
    assert_eq!(s.to_string(), "fifo:50");
    assert_eq!(rt_sys::sched::get_affinity(t1).unwrap().to_string(), "1");
    let main = q.pid();
    assert_eq!(
        rt_sys::sched::get_affinity(main).unwrap().to_string(),
        "0",
        "the main loop goes to housekeeping"
    );
    assert_eq!(
        rt_sys::sched::get_sched(q.vcpu_tid(0)).unwrap().to_string(),
        "other:0",
        "vCPU 0 is not in the profile"
    );
    for k in 1..10 {
        let p = format!("/sys/devices/system/cpu/cpu1/cpuidle/state{k}/disable");
        if let Ok(t) = std::fs::read_to_string(&p) {
            let lat: u64 = std::fs::read_to_string(p.replace("disable", "latency"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if lat > 0 {
                assert_eq!(t.trim(), "1", "{p}");
            }
        }
    }
    let o = q.rt_host(&["check", profile.to_str().unwrap(), "--json"]);
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        c["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "vcpu-sched")
            .all(|c| c["status"] == "ok"),
        "{c}"
    );
    let o = q.rt_host(&["revert"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let after = live_snapshot(&q);
    assert_eq!(diff(&before, &after), Vec::<String>::new());
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_kill_9_mid_setup_then_revert_restores_everything() {
    let Some(q) = Qemu::start("kill", &[], true) else {
        return;
    };
    let before = live_snapshot(&q);
    let profile = q.profile(&format!("qemu_name: Some({:?})", q.name));
    let j = q.journal();
    let child = bin()
        .args([
            "setup",
            profile.to_str().unwrap(),
            "--journal-dir",
            j.to_str().unwrap(),
            "--pause-after",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    kill_9_when_paused(child, 3);
    assert_ne!(
        diff(&before, &live_snapshot(&q)),
        Vec::<String>::new(),
        "setup changed something before the kill"
    );
    let o = q.rt_host(&["revert"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(diff(&before, &live_snapshot(&q)), Vec::<String>::new());
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_qmp_finds_vcpu_threads_without_names_and_vm_gone_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let qmp = format!("unix:{},server=on,wait=off", sock.display());
    let Some(mut q) = Qemu::start("qmp", &["-qmp", &qmp], false) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no QMP socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = q.profile(&format!("qmp: Some({:?})", sock.display().to_string()));
    let o = q.rt_host(&["plan", profile.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["vm"]["pid"], q.pid());
    assert_eq!(v["vm"]["vcpus"].as_object().unwrap().len(), 2, "{v}");
    // Tune, then the VM goes away: revert restores the files and skips the threads.
    let idle_before = idle_disables();
    let o = q.rt_host(&["setup", profile.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(q.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    q.child.wait().unwrap();
    let t = stdout_of(&q.rt_host(&["revert"]), 0);
    assert!(
        t.contains("skipped   sched of"),
        "the FIFO vCPU's entry is skipped: {t}"
    );
    assert!(!t.contains("FAILED"), "{t}");
    assert_eq!(idle_disables(), idle_before, "cpuidle states restored");
}

/// The `disable` flags of CPU 1's idle states.
fn idle_disables() -> Vec<String> {
    (0..10)
        .filter_map(|k| {
            std::fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu1/cpuidle/state{k}/disable"
            ))
            .ok()
        })
        .collect()
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_hold_sets_and_releases_the_cpu_latency_limit() {
    let _lock = testkit::host_lock();
    if !testkit::require_root() {
        return;
    }
    let root = rt_sys::SysRoot::live();
    let before = rt_sys::cpuidle::dma_latency(&root).unwrap();
    let mut child = bin()
        .args(["hold", "lab", "--us", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("holding /dev/cpu_dma_latency at 3 us"),
        "{line}"
    );
    let held = rt_sys::cpuidle::dma_latency(&root).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        held,
        before.min(3),
        "the kernel enforces the smallest request"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt_sys::cpuidle::dma_latency(&root).unwrap() != before {
        assert!(Instant::now() < deadline, "the limit was not released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------- root tests: a real libvirtd

/// libvirtd and virtlogd started by a test (as children, with their own pid files) and a
/// TCG domain defined there. Drop reverts rt-host's journal, destroys and undefines the
/// domain, and ends the two daemons by their pids, also when the test fails.
struct Libvirt {
    _lock: testkit::HostLock,
    dir: tempfile::TempDir,
    daemons: Vec<std::process::Child>,
    domain: String,
}

const VIRSH_URI: &str = "qemu:///system";

impl Libvirt {
    fn start() -> Option<Libvirt> {
        let lock = testkit::host_lock();
        for cmd in ["libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"] {
            if !testkit::require_command(cmd) {
                return None;
            }
        }
        if !testkit::require_root() {
            return None;
        }
        std::fs::create_dir_all("/var/log/libvirt/qemu").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut lv = Libvirt {
            _lock: lock,
            domain: format!("rtvirt-test-{}", std::process::id()),
            daemons: Vec::new(),
            dir,
        };
        for d in ["virtlogd", "libvirtd"] {
            let pidfile = lv.dir.path().join(format!("{d}.pid"));
            let log = std::fs::File::create(lv.dir.path().join(format!("{d}.log"))).unwrap();
            let child = Command::new(d)
                .arg("--pid-file")
                .arg(&pidfile)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {d}: {e}"));
            lv.daemons.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lv.virsh(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer: {}",
                std::fs::read_to_string(lv.dir.path().join("libvirtd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(lv)
    }

    fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .args(["-c", VIRSH_URI])
            .args(args)
            .output()
            .expect("run virsh")
    }

    /// Define and start (paused) a 2-vCPU TCG domain with vCPU n pinned to CPU n and the
    /// emulator on CPU 0, as libvirt users write it.
    fn start_domain(&self) -> u32 {
        let xml = self.dir.path().join("domain.xml");
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'>\n  <name>{}</name>\n  <memory unit='MiB'>64</memory>\n  \
                 <vcpu placement='static'>2</vcpu>\n  <cputune>\n    <vcpupin vcpu='0' cpuset='0'/>\n    \
                 <vcpupin vcpu='1' cpuset='1'/>\n    <emulatorpin cpuset='0'/>\n  </cputune>\n  \
                 <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  \
                 <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>\n</domain>\n",
                self.domain
            ),
        )
        .unwrap();
        for args in [
            vec!["define", xml.to_str().unwrap()],
            vec!["start", &self.domain, "--paused"],
        ] {
            let o = self.virsh(&args);
            assert!(o.status.success(), "virsh {args:?}: {}", text(&o));
        }
        let pid =
            std::fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", self.domain)).unwrap();
        pid.trim().parse().unwrap()
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        if self.journal().join("journal.json").exists() {
            let o = rt_host_with_journal(&self.journal(), &["revert"]);
            eprintln!("cleanup revert: {}", text(&o));
        }
        let _ = self.virsh(&["destroy", &self.domain]);
        let _ = self.virsh(&["undefine", &self.domain]);
        // libvirtd first (it holds a connection to virtlogd), each by its pid.
        for child in self.daemons.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// The `cpu.rt_runtime_us` of libvirt's groups for `domain`: machine, the domain, vcpu1.
fn libvirt_runtimes(domain: &str) -> Vec<String> {
    let top = "/sys/fs/cgroup/cpu/machine";
    let dom = format!("{top}/qemu-1-{domain}.libvirt-qemu");
    let dom = if Path::new(&dom).exists() {
        dom
    } else {
        // The domain id in the group name grows with each start of this libvirtd.
        std::fs::read_dir(top)
            .unwrap()
            .flatten()
            .map(|e| e.path().display().to_string())
            .find(|p| p.ends_with(&format!("-{domain}.libvirt-qemu")))
            .expect("the domain's cpu cgroup")
    };
    [top.to_string(), dom.clone(), format!("{dom}/vcpu1")]
        .iter()
        .map(|d| {
            std::fs::read_to_string(format!("{d}/cpu.rt_runtime_us"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs root and libvirt: run by lab/test.sh"]
fn root_libvirt_domain_by_name_gets_rt_runtime_fifo_vcpu_and_exact_revert() {
    let Some(lv) = Libvirt::start() else {
        return;
    };
    let pid = lv.start_domain();
    let t1 = vcpu_tid(pid, 1);
    // The case of issue 11: libvirt's cpu cgroups have no RT runtime, so FIFO is refused.
    let rt_sched = rt_sys::sched::SchedParams {
        policy: rt_sys::sched::Policy::Fifo,
        priority: 50,
    };
    let e = rt_sys::sched::set_sched(t1, rt_sched).unwrap_err();
    assert!(e.is_not_permitted(), "{e}");
    let runtimes_before = libvirt_runtimes(&lv.domain);
    assert_eq!(runtimes_before, ["0", "0", "0"]);
    let before = snapshot_of(pid);
    let profile = root_profile(lv.dir.path(), &format!("libvirt: Some({:?})", lv.domain));
    let profile = profile.to_str().unwrap();
    let j = lv.journal();
    let o = rt_host_with_journal(&j, &["plan", profile, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["vm"]["pid"], pid);
    assert_eq!(
        v["vm"]["found_by"],
        format!(
            "libvirt domain {} (/run/libvirt/qemu/{}.pid)",
            lv.domain, lv.domain
        )
    );
    let o = rt_host_with_journal(&j, &["check", profile, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: record::CheckReport = serde_json::from_slice(&o.stdout).unwrap();
    let rt: Vec<&record::CheckItem> = r.items.iter().filter(|i| i.name == "rt-runtime").collect();
    assert_eq!(rt.len(), 3, "machine, the domain, vcpu1: {r:#?}");
    assert!(
        rt.iter()
            .all(|i| i.status == record::CheckStatus::Differs
                && i.desired.as_deref() == Some("950000")),
        "{rt:#?}"
    );
    // Setup: runtime parents first, then the vCPU becomes FIFO.
    let o = rt_host_with_journal(&j, &["setup", profile, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(libvirt_runtimes(&lv.domain), ["950000", "950000", "950000"]);
    assert_eq!(rt_sys::sched::get_sched(t1).unwrap(), rt_sched);
    assert_eq!(rt_sys::sched::get_affinity(t1).unwrap().to_string(), "1");
    assert_eq!(rt_sys::sched::get_affinity(pid).unwrap().to_string(), "0");
    let o = rt_host_with_journal(&j, &["check", profile, "--json"]);
    let r: record::CheckReport = serde_json::from_slice(&o.stdout).unwrap();
    let essential: Vec<&record::CheckItem> = r
        .items
        .iter()
        .filter(|i| ["rt-runtime", "vcpu-affinity", "vcpu-sched"].contains(&i.name.as_str()))
        .filter(|i| i.current != "(left alone)")
        .collect();
    assert_eq!(essential.len(), 5, "{essential:#?}");
    assert!(
        essential
            .iter()
            .all(|i| i.status == record::CheckStatus::Ok),
        "{essential:#?}"
    );
    // Revert: the vCPU leaves FIFO, then the runtimes go back, children first.
    let t = stdout_of(&rt_host_with_journal(&j, &["revert", profile]), 0);
    let vcpu_line = t.find("vcpu1/cpu.rt_runtime_us").unwrap();
    let machine_line = t.find("machine/cpu.rt_runtime_us").unwrap();
    assert!(vcpu_line < machine_line, "children first: {t}");
    assert_eq!(libvirt_runtimes(&lv.domain), runtimes_before);
    assert_eq!(diff(&before, &snapshot_of(pid)), Vec::<String>::new());
}

#[test]
fn hwlat_reads_the_detector_on_a_fake_tracefs_and_says_when_it_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("sys/kernel/tracing");
    std::fs::create_dir_all(t.join("hwlat_detector")).unwrap();
    let trace = "# tracer: hwlat\n           <...>-157     [001] dn.....     7.010975: #1     inner/outer(us): 4112/6171  ts:1796119461.677313790 count:109\n";
    for (f, v) in [
        ("available_tracers", "blk function nop"),
        ("current_tracer", "nop\n"),
        ("tracing_on", "1\n"),
        ("tracing_thresh", "0\n"),
        ("hwlat_detector/width", "500000\n"),
        ("hwlat_detector/window", "1000000\n"),
        ("trace_pipe", trace),
        ("trace", trace),
    ] {
        std::fs::write(t.join(f), v).unwrap();
    }
    let run = |extra: &[&str]| {
        bin()
            .args(["hwlat", "--duration", "200ms", "--json", "--root"])
            .arg(d.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the hwlat tracer: not available here"),
        "{err}"
    );
    std::fs::write(t.join("available_tracers"), "hwlat blk function nop").unwrap();
    let dir = d.path().join("run");
    let out = run(&["--out", dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a gap above the threshold: {out:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_samples"], 1);
    assert_eq!(v["max_us"], 6171);
    assert_eq!(v["samples"][0]["cpu"], 1);
    assert_eq!(
        std::fs::read_to_string(t.join("current_tracer"))
            .unwrap()
            .trim(),
        "nop"
    );
    assert_eq!(
        std::fs::read_to_string(t.join("tracing_thresh"))
            .unwrap()
            .trim(),
        "0"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(m["files"]["hwlat.json"]["sha256"].is_string(), "{m:#}");
}

/// This machine's kernel has no hwlat tracer (`available_tracers`: blk function nop):
/// `rt-host hwlat` says so, naming the file and what it lists, exits 2, writes no run and
/// changes nothing in tracefs. (The real detector runs in the lab guest: lab/tests/tracers.rs.)
#[test]
#[ignore = "needs root: reads this host's tracefs"]
fn hwlat_on_this_host_says_the_tracer_is_not_available_here() {
    if !testkit::require_root() {
        return;
    }
    let live = rt_sys::SysRoot::live();
    let fs = match rt_sys::tracefs::Tracefs::find(&live) {
        Ok(fs) => fs,
        Err(e) => {
            testkit::require(false, format!("no tracefs here: {e}"));
            return;
        }
    };
    if !testkit::require(
        !fs.tracers.iter().any(|t| t == "hwlat"),
        "this host's kernel has the hwlat tracer: the lab test runs it for real",
    ) {
        return;
    }
    let tracer = fs.read("current_tracer").unwrap();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("run");
    let out = bin()
        .args(["hwlat", "--duration", "1s", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let listed = format!(
        "{} lists: {})",
        fs.display("available_tracers"),
        fs.tracers.join(" ")
    );
    assert!(
        err.contains("the hwlat tracer: not available here") && err.contains(&listed),
        "{err}"
    );
    assert!(!dir.exists(), "no run is written");
    assert_eq!(fs.read("current_tracer").unwrap(), tracer);
}

/// `hold --systemd-unit --json`: the unit's name, path and text; the text passes
/// `systemd-analyze verify` (which also checks that ExecStart's binary exists).
#[test]
fn hold_systemd_unit_json_passes_systemd_analyze_verify() {
    let f = fake();
    let o = f.run("hold", &["lab", "--systemd-unit", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o, 0)).unwrap();
    assert_eq!(v["name"], "rtvirt-dma-latency.service", "{v}");
    assert_eq!(v["path"], "/etc/systemd/system/rtvirt-dma-latency.service");
    let unit = v["unit"].as_str().unwrap();
    let exec = format!(
        "ExecStart={} hold lab --us 0\n",
        env!("CARGO_BIN_EXE_rt-host")
    );
    assert!(unit.contains(&exec), "{unit}");
    if !testkit::require_command("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rtvirt-dma-latency.service");
    std::fs::write(&path, unit).unwrap();
    // --man=no: Documentation=man:rt-host(1) resolves once the man page is installed
    // (the .deb does), not in a build tree.
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify: {err}");
    // verify exits 0 on some unit warnings: none may name this unit.
    assert!(!err.contains("rtvirt-dma-latency.service"), "{err}");

    // A broken unit fails the same check (the check can fail).
    std::fs::write(&path, unit.replace("Type=simple", "Type=nosuch")).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rtvirt-dma-latency.service:6: Failed to parse service type"),
        "a bad Type= passed: {err}"
    );
}

/// Bash completes below the top level (clap_complete's hyphenated-name bug worked around):
/// the generated script, loaded in a real bash, offers a subcommand's options.
#[test]
fn bash_completes_the_options_of_a_subcommand() {
    let exe = env!("CARGO_BIN_EXE_rt-host");
    let got = testkit::bash_complete_generated(exe, &["rt-host", "boot-args", "--"]);
    assert!(got.split(' ').any(|w| w == "--json"), "{got:?}");
    let got = testkit::bash_complete_generated(exe, &["rt-host", "boot"]);
    assert!(got.split(' ').any(|w| w == "boot-args"), "{got:?}");
}

/// The tracefs files a recording must leave as it found them (the top level) and the
/// instances there.
fn tracefs_state() -> (Vec<(String, String)>, Vec<String>) {
    let root = rt_sys::SysRoot::live();
    let fs = rt_sys::tracefs::Tracefs::find(&root).expect("tracefs");
    let files = [
        "tracing_on",
        "current_tracer",
        "trace_clock",
        "buffer_size_kb",
    ]
    .iter()
    .map(|f| (f.to_string(), fs.read(f).unwrap_or_default()))
    .collect();
    let mut inst: Vec<String> = std::fs::read_dir(root.path(fs.rel("instances")))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    inst.sort();
    (files, inst)
}

#[test]
#[ignore = "needs root, tracefs and QEMU: run by lab/test.sh"]
fn root_trace_records_a_qemu_bounded_and_puts_tracefs_back_also_on_sigint() {
    let Some(q) = Qemu::start("trace", &[], true) else {
        return;
    };
    let before = tracefs_state();
    let profile = q.profile(&format!("qemu_name: Some({:?})", q.name));
    let out = q.dir.path().join("run");
    let pid = q.pid().to_string();
    // A thread of ours on CPU 1 sleeping 1 ms at a time: switches there, whatever else runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let me = rt_sys::sched::gettid();
            rt_sys::sched::set_affinity(me, &rt_sys::CpuSet::from_cpus([1])).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The guest's side of the clock exchange (here in this process: the same clock, so
    // the offset found must be 0 within its uncertainty).
    let share = q.dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let echo = {
        let share = share.clone();
        std::thread::spawn(move || {
            let never = std::sync::atomic::AtomicBool::new(false);
            record::clocksync::echo(&share, Duration::from_secs(60), &never, &|| {
                rt_sys::rt::realtime_ns()
            })
            .unwrap()
        })
    };
    // Found by the profile's name; every switch on CPU 1 (others' too), 40 events kept.
    let o = run(&[
        "trace",
        "--clock-dir",
        share.to_str().unwrap(),
        profile.to_str().unwrap(),
        "--duration",
        "2s",
        "--cpus",
        "1",
        "--max-events",
        "40",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o, 0)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(
        echo.join().unwrap() >= 2,
        "the host said stop after its rounds"
    );
    let g = &v["guest_clock"];
    assert_eq!(g["method"], "file_exchange", "{g}");
    assert!(
        g["offset_ns"].as_i64().unwrap().unsigned_abs() <= g["uncertainty_ns"].as_u64().unwrap(),
        "one clock: offset 0 within the bound: {g}"
    );
    assert_eq!(v["vm_pid"].as_u64(), Some(u64::from(q.pid())), "{v:#}");
    assert_eq!(v["vcpus"].as_array().unwrap().len(), 2);
    let kept = v["events"].as_array().unwrap().len();
    let seen = v["events_seen"].as_u64().unwrap();
    assert!(
        kept <= 40,
        "bounded to --max-events: {kept} kept ({seen} seen)"
    );
    assert!(
        seen > 1000,
        "a 1 ms sleeper on CPU 1 for 2 s: {seen} events"
    );
    let k = &v["keep"];
    assert_eq!(
        k["dropped_slices_events"].as_u64().unwrap() + k["dropped_over_cap"].as_u64().unwrap(),
        seen - v["slices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["seen"].as_u64().unwrap() - s["dropped"].as_u64().unwrap())
            .sum::<u64>(),
        "every event kept or counted as dropped: {k}"
    );
    // Its own threads ran off CPU 1 (recorded whole), and the trace shows it.
    let r = &v["reader"];
    assert_eq!(r["cpus"], "0", "{r}");
    assert_eq!(r["switches_on_recorded_cpus"], 0, "{r}");
    assert_eq!(v["partial"], false);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert!(m["files"]["host-trace.json"]["sha256"].is_string(), "{m:#}");
    assert_eq!(m["tools"][0]["tool"], "rt-host trace");
    assert_eq!(tracefs_state(), before, "tracefs as it was");
    // Interrupted: exit 0, a partial record, tracefs put back.
    let out2 = q.dir.path().join("run2");
    let child = bin()
        .args(["trace", profile.to_str().unwrap(), "--vm-pid", &pid])
        .args(["--duration", "60s", "--cpus", "threads", "--out"])
        .arg(&out2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(stdout_of(&o, 0).contains("(interrupted)"), "{}", text(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["tools"][0]["partial"], true, "{m:#}");
    assert_eq!(tracefs_state(), before, "tracefs as it was after SIGINT");
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    // `rt-host boot-args lab | head -2` used to panic: "failed printing to stdout".
    let f = fake();
    for args in [
        &["boot-args", "lab"][..],
        &["modprobe", "hil"],
        &[
            "vm",
            "hil",
            "--vm",
            "ecu0",
            "--format",
            "libvirt",
            "--explain",
        ],
        &["plan", "lab"],
    ] {
        testkit::assert_quiet_on_closed_stdout(bin().args(args).args(["--root", &f.root]));
    }
}
