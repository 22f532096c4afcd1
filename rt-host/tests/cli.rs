//! CLI runs of `rt-host` on a fake machine tree (`--root`), plus root tests against a
//! real QEMU process (`root_*`, run as root by lab/test.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rt_host::fake::FakeMachine;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rt-host"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run rt-host")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["met"], false);
    assert_eq!(v["kernel"]["virtualization"], "other");
    let changes = v["changes"].as_array().unwrap();
    let status = |item: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c["item"] == item)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status("halt-poll"), ["differs"]);
    assert!(status("boot-arg").iter().all(|s| s == "needs-reboot"));
    assert_eq!(status("kernel"), ["not-applicable"]);
    assert_eq!(status("vcpu-sched"), ["differs"]);
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
    let o = f.run("plan", &["lab"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
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
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["summary"]["differs"],
        1,
        "only nested virtualization differs: {}",
        text(&o)
    );
    let o = f.run("revert", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restored"));
    assert_eq!(
        FakeMachine::diff(&before, &f.m.snapshot()),
        Vec::<String>::new()
    );
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
    let mut child = bin()
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
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("paused after 6"), "{line}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
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
    assert_eq!(
        FakeMachine::diff(&before, &f.m.snapshot()),
        Vec::<String>::new()
    );
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
    assert_eq!(
        FakeMachine::diff(&before, &f.m.snapshot()),
        Vec::<String>::new()
    );
}

#[test]
fn a_second_setup_is_locked_out() {
    let f = fake();
    let _held = rt_sys::journal::Journal::open_locked(Path::new(&f.journal)).unwrap();
    let o = f.run("setup", &["lab"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Another rtvirt setup is running"),
        "{}",
        text(&o)
    );
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
    let o = f.run("boot-args", &["lab"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0"),
        "{t}"
    );
    assert!(t.contains("GRUB_CMDLINE_LINUX_DEFAULT"), "{t}");
    assert!(t.contains("grubby --update-kernel=ALL"), "{t}");
    assert!(t.contains("missing from /proc/cmdline"), "{t}");
    f.m.put("proc/cmdline", "quiet isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0 processor.max_cstate=1 intel_idle.max_cstate=0 skew_tick=1 nosoftlockup\n");
    let o = f.run("boot-args", &["lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["missing"].as_array().unwrap().len(), 0, "{v}");
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
