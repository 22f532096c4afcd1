//! CLI runs of `rt-guest`. Tests named `root_*` need root (SCHED_FIFO, mlockall,
//! /dev/cpu_dma_latency) and CPU 1; they are ignored by default and run by lab/test.sh.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rt_guest::cyclictest::{layout_shape, parse_layout};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rt-guest"))
}

/// The first CPU this test may run on.
fn allowed_cpu() -> u32 {
    rt_sys::sched::get_affinity(0)
        .unwrap()
        .iter()
        .next()
        .unwrap()
}

/// `rt-guest probe` as a test without privileges runs it: SCHED_OTHER on an allowed CPU.
fn quiet_probe() -> Command {
    let mut c = bin();
    c.args([
        "probe",
        "--policy",
        "other",
        "-a",
        &allowed_cpu().to_string(),
    ]);
    c
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Keys of `reference` missing from `ours`, recursively, as paths. Histogram buckets are
/// data, not layout: there only the key form (a whole number of us) is compared.
fn missing_keys(reference: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    match (reference, ours) {
        (Value::Object(r), Value::Object(o)) => {
            if path.ends_with("/histogram") {
                for k in o.keys() {
                    if k.parse::<u64>().is_err() {
                        out.push(format!("{path}/{k} (not a us bucket)"));
                    }
                }
                return;
            }
            for (k, rv) in r {
                match o.get(k) {
                    Some(ov) => missing_keys(rv, ov, &format!("{path}/{k}"), out),
                    None => out.push(format!("{path}/{k}")),
                }
            }
        }
        (Value::Object(_), _) => out.push(format!("{path} (not an object)")),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)) => {}
        (r, o) if std::mem::discriminant(r) != std::mem::discriminant(o) => {
            out.push(format!("{path} (type differs: {r} vs {o})"))
        }
        _ => {}
    }
}

/// Check a probe's --json and --histogram output against the real cyclictest files.
fn assert_cyclictest_formats(json: &Path, hist: &Path, buckets: usize) {
    let reference: Value = serde_json::from_str(&fixture("cyclictest-h100.json")).unwrap();
    let ours: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let mut missing = Vec::new();
    missing_keys(&reference, &ours, "", &mut missing);
    assert!(
        missing.is_empty(),
        "keys cyclictest has and we lack: {missing:?}"
    );
    // And the same top-level and per-thread keys: nothing of cyclictest's renamed.
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert!(keys(&reference).is_subset(&keys(&ours)));
    assert!(keys(&reference["thread"]["0"]).is_subset(&keys(&ours["thread"]["0"])));
    assert_eq!(ours["num_threads"], 1);
    assert!(ours["thread"]["0"]["cycles"].as_u64().unwrap() > 0);

    let text = std::fs::read_to_string(hist).unwrap();
    let ours = layout_shape(&parse_layout(&text).unwrap());
    let theirs = layout_shape(&parse_layout(&fixture("cyclictest-h100.txt")).unwrap());
    assert_eq!(ours.0, buckets, "one line per us bucket");
    if buckets == 100 {
        assert_eq!(ours, theirs, "layout differs from cyclictest -h 100");
    } else {
        assert_eq!(
            (ours.1, &ours.2, ours.3, ours.4),
            (theirs.1, &theirs.2, theirs.3, theirs.4)
        );
    }
}

#[test]
fn the_fixtures_are_what_the_checker_expects() {
    // The layout checker accepts real cyclictest output, one and two threads.
    let one = layout_shape(&parse_layout(&fixture("cyclictest-h100.txt")).unwrap());
    assert_eq!(
        one,
        (
            100,
            1,
            vec!["Total", "Min", "Avg", "Max", "Overflows"],
            1,
            true
        )
    );
    let two = layout_shape(&parse_layout(&fixture("cyclictest-t2-h20.txt")).unwrap());
    assert_eq!(
        two,
        (
            20,
            2,
            vec!["Total", "Min", "Avg", "Max", "Overflows"],
            2,
            true
        )
    );
}

#[test]
fn help_and_bad_options() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["probe", "selftest", "check", "tune", "revert"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = bin()
        .args(["probe", "--interval-us", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["probe", "--policy", "fifo", "-p", "0", "-l", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("priority"), "{err}");
}

#[test]
fn cpus_that_are_not_online_are_refused() {
    let out = bin()
        .args(["probe", "--policy", "other", "-a", "4095", "-l", "10", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CPU 4095 is not online"), "{err}");
}

#[test]
fn a_profile_naming_cpus_this_guest_lacks_is_refused_by_the_profile_checks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wide.ron");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.ron"))
        .unwrap()
        .replace("probe: (cpus: \"1\"", "probe: (cpus: \"4000-4001\"");
    assert!(
        text.contains("4000-4001"),
        "the lab profile names its probe CPUs"
    );
    std::fs::write(&p, text).unwrap();
    for args in [vec!["probe", "--profile"], vec!["check"], vec!["tune"]] {
        let mut a = args.clone();
        a.push(p.to_str().unwrap());
        let out = bin().args(&a).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("on this machine: guest.probe.cpus: CPUs 4000-4001 are not online"),
            "{a:?}: {err}"
        );
    }
}

#[test]
fn unknown_profile_is_an_error_naming_it() {
    let out = bin()
        .args(["probe", "--profile", "no-such-profile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-profile"), "{err}");
    let out = bin().args(["tune", "no-such-profile"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unprivileged_probe_writes_every_output() {
    // SCHED_OTHER needs no privilege: the whole pipeline runs in a plain `cargo test`.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (json, hist) = (dir.path().join("ct.json"), dir.path().join("ct.txt"));
    let out = quiet_probe()
        .args(["-i", "500", "-l", "200"])
        .args(["--no-dma-latency", "-q", "--histogram-us", "100"])
        .arg("--out")
        .arg(&run)
        .arg("--json")
        .arg(&json)
        .arg("--histfile")
        .arg(&hist)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_cyclictest_formats(&json, &hist, 100);
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
    assert!(!rec.partial);
    let t = &rec.threads[0];
    assert_eq!(t.samples, 200, "-l counts wakeups, as cyclictest's cycles");
    assert_eq!(t.policy, "other");
    assert!(rd.manifest().environment.kernel.is_some());
    assert!(rd.manifest().environment.guest_check.is_some());
}

#[test]
fn max_us_bound_gives_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    // No wakeup is ever 0 us late: a bound of 0 is always exceeded.
    let out = quiet_probe()
        .args(["-l", "20", "-q"])
        .args(["--no-dma-latency", "--max-us", "0", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn breaktrace_ends_the_run_and_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // No wakeup is 1 us late or less under SCHED_OTHER: the first sample fires.
    let out = quiet_probe()
        .args(["-l", "1000", "-q"])
        .args(["--no-dma-latency", "-b", "1", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rd = record::RunDir::open(&run).unwrap();
    let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
    assert!(rec.threads[0].samples < 1000, "{}", rec.threads[0].samples);
    assert!(
        !rec.partial,
        "a breaktrace is an ending, not an interruption"
    );
    let notes = &rd.manifest().environment.notes;
    assert!(notes.iter().any(|n| n.contains("breaktrace")), "{notes:?}");
}

#[test]
fn check_prints_json_and_revert_without_journal_is_a_no_op() {
    let out = bin()
        .args(["check", "--json", "--steal-window-ms", "10"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"clocksource"), "{names:?}");
    assert!(names.contains(&"kernel.preempt_rt"), "{names:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["revert", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to revert"));
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_probe_on_cpu1_has_cyclictests_formats() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let (json, hist) = (dir.path().join("ct.json"), dir.path().join("ct.txt"));
    let out = bin()
        .args([
            "probe", "-a", "1", "-p", "90", "-i", "1000", "-l", "1000", "-q",
        ])
        .args(["--histogram-us", "100", "--out"])
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .arg("--histogram")
        .arg(&hist)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_cyclictest_formats(&json, &hist, 100);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["thread"]["0"]["cpu"], 1);
    // Memory locked, stack prefaulted, loop and its rare branches warmed up: no page fault
    // while measuring, even in this default lock-on-touch mode (docs/probe.md).
    let faults = v["thread"]["0"]["page_faults_in_loop"].as_u64().unwrap();
    assert_eq!(faults, 0, "page faults in the loop: {v:#}");
    let text = std::fs::read_to_string(&hist).unwrap();
    assert!(
        text.starts_with("# /dev/cpu_dma_latency set to 0us\n# Histogram\n"),
        "{text}"
    );
    let rd = record::RunDir::open(dir.path().join("run")).unwrap();
    let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
    assert_eq!(rec.threads[0].policy, "fifo");
    assert_eq!(rec.threads[0].priority, 90);
    assert!(rec.settings.mlock && rec.settings.dma_latency_held);
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_selftest_passes_and_is_recorded() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = bin()
        .args(["selftest", "--json", "--loops", "2000", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["passed"], true, "{v:#}");
    assert_eq!(out.status.code(), Some(0));
    assert!(v["injected"].as_u64().unwrap() >= 190);
    // A probe into the same run keeps the self-test in the manifest.
    let out = bin()
        .args(["probe", "-a", "1", "-l", "100", "-q", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rd = record::RunDir::open(&run).unwrap();
    let st = rd.manifest().environment.selftest.as_ref().unwrap();
    assert!(st.passed, "{st:?}");
    assert!(st.injected >= 190, "{st:?}");
    assert_eq!(rd.manifest().tools.len(), 2);
}

/// Start a FIFO probe on CPU 1 for 60 s, wait for a status line with samples, send `sig`;
/// return the exit status (the probe must stop within 10 s).
fn interrupt_probe(args: &[&str], sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
    let mut child = bin()
        .args(["probe", "-a", "1", "-p", "90", "-D", "60s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Wait for a status line with samples (one per second), at most 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = false;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let count = line
            .split("C:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok());
        if count.is_some_and(|c| c > 0) {
            seen = true;
            break;
        }
    }
    if !seen {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        panic!("no status line with samples within 20 s");
    }
    nix::sys::signal::kill(pid, sig).unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("the probe did not stop within 10 s of {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_sigint_and_sigterm_keep_the_data_marked_partial_and_exit_interrupted() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    use nix::sys::signal::Signal;
    for (sig, code, name) in [
        (Signal::SIGINT, 130, "SIGINT"),
        (Signal::SIGTERM, 143, "SIGTERM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let (json, hist) = (dir.path().join("ct.json"), dir.path().join("ct.txt"));
        let (run_s, json_s, hist_s) = (
            run.to_str().unwrap(),
            json.to_str().unwrap(),
            hist.to_str().unwrap(),
        );
        let status = interrupt_probe(
            &[
                "--out",
                run_s,
                "--json",
                json_s,
                "-h",
                "50",
                "--histfile",
                hist_s,
            ],
            sig,
        );
        assert_eq!(status.code(), Some(code), "{name}: {status:?}");
        let rd = record::RunDir::open(&run).unwrap();
        rd.verify().unwrap();
        let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
        assert!(rec.partial);
        assert!(rec.threads[0].samples > 0);
        assert!(rec.elapsed_s < 50.0);
        let tool = &rd.manifest().tools[0];
        assert!(tool.partial && tool.end.is_some());
        assert_eq!(
            tool.partial_reason.as_deref(),
            Some(format!("interrupted by {name}").as_str())
        );
        // The cyclictest-format files say partial too.
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["partial"], true);
        assert_eq!(v["return_code"], code);
        let text = std::fs::read_to_string(&hist).unwrap();
        assert!(
            text.starts_with(&format!("# Partial: interrupted by {name}")),
            "{text}"
        );
        parse_layout(&text).unwrap();
    }
}

#[test]
fn bad_output_paths_fail_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    for (opt, path) in [
        ("--json", dir.path().to_path_buf()),
        ("--histfile", dir.path().join("no/such/dir/h.txt")),
    ] {
        let t0 = Instant::now();
        let out = bin()
            .args(["probe", "--policy", "other", "-a", "0", "-D", "1h", "-q"])
            .args(["--out"])
            .arg(dir.path().join("run"))
            .arg(opt)
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(t0.elapsed() < Duration::from_secs(30), "it measured first");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!dir.path().join("run/probe.json").exists());
    }
}

#[test]
fn dash_is_stdout_and_dev_stdout_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let out = quiet_probe()
        .args(["-l", "20", "-q"])
        .args(["--no-dma-latency", "--json", "-", "--out"])
        .arg(dir.path().join("run"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let start = text.find('{').unwrap();
    let end = text.rfind('}').unwrap();
    let v: Value = serde_json::from_str(&text[start..=end]).unwrap();
    assert_eq!(v["thread"]["0"]["cycles"], 20);
    assert!(!dir.path().join("-").exists(), "a file named - was written");
    // /dev/stdout (a link to this pipe) is written through and stays a link.
    let out = quiet_probe()
        .args(["-l", "20", "-q"])
        .args([
            "--no-dma-latency",
            "--histogram-us",
            "5",
            "--histfile",
            "/dev/stdout",
            "--out",
        ])
        .arg(dir.path().join("run2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("# Histogram\n000000 "));
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Unmounts on drop.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root (mounts a small tmpfs): run by lab/test.sh"]
fn root_a_disk_that_fills_during_the_run_still_takes_the_records() {
    if !testkit::require_root() || !testkit::require_command("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success());
    let _u = Unmount(mnt.clone());
    let run = mnt.join("run");
    let child = quiet_probe()
        .args(["-D", "3s", "-q"])
        .args(["--no-dma-latency", "--out"])
        .arg(&run)
        .arg("--json")
        .arg(mnt.join("ct.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Fill the disk while it measures.
    std::thread::sleep(Duration::from_millis(1500));
    let fill = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", mnt.join("filler").display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&fill.stderr).contains("No space left"),
        "{fill:?}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
    assert!(rec.threads[0].samples > 0 && !rec.partial);
    serde_json::from_str::<Value>(&std::fs::read_to_string(mnt.join("ct.json")).unwrap()).unwrap();
    // No temp file, no empty file left behind.
    for e in std::fs::read_dir(&run).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "left behind: {name}");
        assert!(e.metadata().unwrap().len() > 0, "empty: {name}");
    }
}

/// Runs `rt-guest revert` on drop: a root test that tunes reverts even when it fails.
struct RevertOnDrop(std::path::PathBuf);

impl Drop for RevertOnDrop {
    fn drop(&mut self) {
        let _ = bin()
            .args(["revert", "--journal-dir"])
            .arg(&self.0)
            .output();
    }
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_tune_then_revert_restores_this_machine() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    let halt = rt_sys::SysRoot::live();
    let knob = "sys/module/haltpoll/parameters/guest_halt_poll_ns";
    let idle = "sys/devices/system/cpu/cpu1/cpuidle/state1/disable";
    if !testkit::require(
        halt.exists(knob) && halt.exists(idle),
        "no guest halt polling or cpuidle state1 on CPU 1 here",
    ) {
        return;
    }
    let before = (halt.read_trim(knob).unwrap(), halt.read_trim(idle).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.ron");
    std::fs::write(
        &profile,
        r#"Profile(name: "rt-guest-test", guest: Some((probe: (cpus: "1"), realtime_cpus: Some("1"),
            guest_halt_poll_ns: Some(12345), max_exit_latency_us: Some(0))))"#,
    )
    .unwrap();
    let journal = dir.path().join("journal");
    let _guard = RevertOnDrop(journal.clone());
    let out = bin()
        .arg("tune")
        .arg(&profile)
        .arg("--journal-dir")
        .arg(&journal)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Each change is applied or reported "not permitted here"; never a crash.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    if text.contains("guest_halt_poll_ns") && text.contains("applied") {
        assert_eq!(halt.read_trim(knob).unwrap(), "12345");
    }
    let out = bin()
        .args(["revert", "--journal-dir"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        (halt.read_trim(knob).unwrap(), halt.read_trim(idle).unwrap()),
        before
    );
}

/// The shape of a cyclictest-style output: each line with its blanks as one space and
/// every run of digits as `9`, the overflow cycle lists as `…`, consecutive equal shapes once. Two
/// outputs with the same shape differ only in their numbers.
fn shape(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in text.lines() {
        let l = match l.strip_prefix("# Thread ") {
            Some(rest) if !rest.starts_with("Ids:") => {
                format!("# Thread {}: …", rest.split(':').next().unwrap_or(""))
            }
            _ => l.to_string(),
        };
        // Blanks as one space, none after `(` or `:` (cyclictest pads numbers there).
        let mut s = String::new();
        for c in l.chars() {
            if c.is_whitespace() {
                if !s.is_empty() && !s.ends_with([' ', '(', ':']) {
                    s.push(' ');
                }
            } else if c.is_ascii_digit() {
                if !s.ends_with('9') {
                    s.push('9');
                }
            } else {
                s.push(c);
            }
        }
        let s = s.trim_end().to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[test]
fn shape_ignores_numbers_only() {
    assert_eq!(
        shape("T: 0 (28299) P:90 I:500 C:    300 Min:     14\n# Thread 0: 00001 # 00002 others\n"),
        shape("T: 1 ( 4242) P:9 I:1000 C:  12300 Min:      1\n# Thread 0:\n")
    );
    assert_ne!(
        shape("# Histogram\n000000 000001\n"),
        shape("# Histogram\n000000 000001\t000002\n")
    );
}

#[test]
fn cyclictest_mode_prints_the_histogram_to_stdout_unprivileged() {
    // SCHED_OTHER (no -p), so no privilege is needed: the drop-in's stdout alone.
    let cpu = allowed_cpu();
    let out = bin()
        .args([
            "cyclictest",
            "-qmu",
            "-h 20",
            &format!("-a{cpu}"),
            "-t1",
            "-l",
            "50",
        ])
        .args(["--default-system", "-i", "500"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = parse_layout(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (buckets, cols, keys, threads, empty) = layout_shape(&lines);
    assert_eq!((buckets, cols, threads, empty), (20, 1, 1, true), "{text}");
    assert_eq!(keys, vec!["Total", "Min", "Avg", "Max", "Overflows"]);
    assert!(
        !text.contains("cpu_dma_latency"),
        "--default-system: {text}"
    );
    // Every wakeup is in the histogram or its overflows.
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("# Total:") || l.starts_with("# Histogram Overflows:"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 50);
}

/// Run `cyclictest ARGS` and the drop-ins with the same ARGS (`rt-guest cyclictest`, a link
/// named cyclictest, and `rt-guest probe` where stdout is cyclictest's); return the
/// outputs (reference first).
fn both(args: &[&str], dir: &Path) -> Vec<(String, String)> {
    let link = dir.join("cyclictest");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rt-guest"), &link).unwrap();
    }
    let mut runs = vec![
        ("cyclictest".to_string(), Command::new("cyclictest")),
        ("rt-guest cyclictest".to_string(), {
            let mut c = bin();
            c.arg("cyclictest");
            c
        }),
        ("link named cyclictest".to_string(), Command::new(&link)),
    ];
    if args.iter().any(|a| a.starts_with("-h")) {
        runs.push(("rt-guest probe".to_string(), {
            let mut c = bin();
            c.arg("probe").arg("--out").arg(dir.join("probe-run"));
            c
        }));
    }
    runs.into_iter()
        .map(|(name, mut c)| {
            let out = c.args(args).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (name, String::from_utf8(out.stdout).unwrap())
        })
        .collect()
}

#[test]
#[ignore = "needs root and cyclictest (rt-tests): run by lab/test.sh"]
fn root_cyclictest_and_the_drop_in_print_the_same_shape() {
    if !testkit::require_root() || !testkit::require_command("cyclictest") {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    // rteval's invocation (bounded by -l), a breaktrace that fires at once, the status
    // lines of -q, and one without -q and --default-system.
    let lists: [&[&str]; 4] = [
        &[
            "-i1000",
            "-qmu",
            "-h 30",
            "-p90",
            "-t1",
            "-a1",
            "--default-system",
            "-l",
            "300",
        ],
        &[
            "-qmu",
            "-h",
            "10",
            "-p90",
            "-t1",
            "-a1",
            "-b1",
            "--tracemark",
            "-l",
            "2000",
        ],
        &["-q", "-m", "-p", "90", "-a", "1", "-i", "500", "-l", "200"],
        &["-m", "-p90", "-a1", "-i", "1000", "-D", "2"],
    ];
    for args in lists {
        let outs = both(args, dir.path());
        let reference = shape(&outs[0].1);
        for (name, text) in &outs[1..] {
            let ours = shape(text);
            if args.contains(&"-q") || args.contains(&"-qmu") {
                assert_eq!(
                    ours, reference,
                    "{name} {args:?}:\n{text}\ncyclictest:\n{}",
                    outs[0].1
                );
            } else {
                // Live status: as many lines as seconds went by; the kinds of line match.
                let kinds = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
                let (o, r) = (kinds(&ours), kinds(&reference));
                let status = "T:9 (9) P:9 I:9 C:9 Min:9 Act:9 Avg:9 Max:9".to_string();
                assert!(
                    o.contains(&status) && r.contains(&status),
                    "{name}:\n{text}"
                );
                assert!(
                    o.contains("# /dev/cpu_dma_latency set to 9us"),
                    "{name}:\n{text}"
                );
            }
        }
        if args.contains(&"-b1") {
            for (name, text) in &outs {
                assert!(text.contains("# Break thread: "), "{name}:\n{text}");
                assert!(text.contains("# Break value: "), "{name}:\n{text}");
            }
        }
    }
    // --json from both: every key cyclictest writes, rt_test_version a number.
    let (cj, gj) = (dir.path().join("ct.json"), dir.path().join("rg.json"));
    let json_args = ["-q", "-p90", "-a1", "-l", "100", "-h", "10"];
    for (mut c, p) in [
        (Command::new("cyclictest"), &cj),
        (
            {
                let mut c = bin();
                c.arg("cyclictest");
                c
            },
            &gj,
        ),
    ] {
        let out = c
            .args(json_args)
            .arg(format!("--json={}", p.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&cj).unwrap()).unwrap();
    let o: Value = serde_json::from_str(&std::fs::read_to_string(&gj).unwrap()).unwrap();
    let mut missing = Vec::new();
    missing_keys(&r, &o, "", &mut missing);
    assert!(missing.is_empty(), "{missing:?}");
    let v: f64 = o["rt_test_version:"].as_str().unwrap().parse().unwrap();
    assert!(v >= 2.0, "{o:#}");
}

#[test]
fn an_unprivileged_oslat_writes_oslats_text_and_a_record() {
    let cpu = allowed_cpu();
    let dir = tempfile::tempdir().unwrap();
    let (run, json) = (dir.path().join("run"), dir.path().join("oslat.json"));
    let out = bin()
        .args([
            "oslat",
            "-c",
            &cpu.to_string(),
            "-D",
            "1",
            "-q",
            "-b",
            "8",
            "--out",
        ])
        .arg(&run)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.ends_with(|c: char| c.is_ascii_digit()) || l.contains("(including overflows)")
        })
        .filter(|l| l.contains(" (us):"))
        .collect();
    assert_eq!(buckets.len(), 8, "{text}");
    for key in [
        "Core:",
        "Counter Freq:",
        "Minimum:",
        "Average:",
        "Maximum:",
        "Max-Min:",
        "Duration:",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::OslatRecord = rd.read_json(record::OSLAT).unwrap();
    let t = &rec.threads[0];
    assert!(t.samples > 10_000 && !rec.partial, "{}", t.samples);
    assert_eq!(
        t.gaps.histogram().unwrap().len() + t.out_of_range,
        t.samples
    );
    assert!(!rd.manifest().tools[0].partial);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let total: u64 = v["thread"]["0"]["histogram"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, t.samples);
}

#[test]
#[ignore = "needs root and oslat (rt-tests): run by lab/test.sh"]
fn root_oslat_and_rt_guest_oslat_print_the_same_shape() {
    if !testkit::require_root() || !testkit::require_command("oslat") {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-c", "1", "-D", "2", "-q", "-b", "16"][..],
        &["-c", "1", "-D", "2", "-f", "1", "-b", "8", "-z"][..],
    ] {
        let (oj, gj) = (dir.path().join("o.json"), dir.path().join("g.json"));
        let theirs = Command::new("oslat")
            .args(args)
            .arg(format!("--json={}", oj.display()))
            .output()
            .unwrap();
        let ours = bin()
            .arg("oslat")
            .args(args)
            .arg("--json")
            .arg(&gj)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        assert!(
            theirs.status.success() && ours.status.success(),
            "{theirs:?} {ours:?}"
        );
        // Past the version line, the same lines with other numbers (-z may omit other
        // buckets: compare the kinds of line there).
        let shape_of = |o: &std::process::Output| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            shape(&t.lines().skip(1).collect::<Vec<_>>().join("\n"))
        };
        let (s_t, s_o) = (shape_of(&theirs), shape_of(&ours));
        if args.contains(&"-z") {
            // Which buckets -z omits is data (zero on every CPU): compare the rest.
            let rest = |v: &[String]| {
                v.iter()
                    .filter(|l| !l.contains(" (us):") && l.as_str() != "...")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(rest(&s_o), rest(&s_t), "{ours:?}");
            assert!(s_o.iter().any(|l| l.contains(" (us):")), "{ours:?}");
        } else {
            assert_eq!(
                s_o,
                s_t,
                "{}\n---\n{}",
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout)
            );
        }
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&oj).unwrap()).unwrap();
        let o: Value = serde_json::from_str(&std::fs::read_to_string(&gj).unwrap()).unwrap();
        let mut missing = Vec::new();
        missing_keys(&r, &o, "", &mut missing);
        assert!(missing.is_empty(), "{missing:?}");
        // Non-zero buckets only, keyed 1..=b, as oslat writes them.
        let b: u64 = args[args.iter().position(|a| *a == "-b").unwrap() + 1]
            .parse()
            .unwrap();
        for h in [&r, &o].map(|v| v["thread"]["0"]["histogram"].as_object().unwrap()) {
            for (k, c) in h {
                assert!(
                    (1..=b).contains(&k.parse().unwrap()) && c.as_u64() > Some(0),
                    "{h:?}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs root (FIFO loop and injector on CPU 1): run by lab/test.sh"]
fn root_oslat_selftest_detects_the_injected_stalls() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("st.json");
    let out = bin()
        .args(["oslat", "--selftest", "-c", "1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["passed"], true, "{v:#}");
    assert_eq!(out.status.code(), Some(0));
    // 3 s of wakeups every 10 ms: injected, late or disturbed, and most of them injected.
    let n = |k: &str| v[k].as_u64().unwrap();
    let wakeups = n("injected") + n("injected_late") + n("injected_disturbed");
    assert!(wakeups >= 290, "{v:#}");
    assert!(n("injected") * 2 >= wakeups, "{v:#}");
    let median = v["detected_median_us"].as_f64().unwrap();
    assert!((200.0..250.0).contains(&median), "{v:#}");
}

#[test]
#[ignore = "needs root: run by lab/test.sh"]
fn root_oslat_sigint_keeps_the_data_marked_partial() {
    if !testkit::require_root() {
        return;
    }
    let _g = testkit::host_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let child = bin()
        .args(["oslat", "-c", "1", "-f", "1", "-D", "60", "-q", "--out"])
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::OslatRecord = rd.read_json(record::OSLAT).unwrap();
    assert!(rec.partial && rec.threads[0].samples > 0 && rec.elapsed_s < 30.0);
    assert_eq!(
        rd.manifest().tools[0].partial_reason.as_deref(),
        Some("interrupted by SIGINT")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Partial: interrupted by SIGINT"));
}

/// Wait until `cond` holds on the run's manifest (polled every 50 ms), at most `secs`.
fn wait_manifest(run: &Path, secs: u64, cond: impl Fn(&record::Manifest) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(rd) = record::RunDir::open(run) {
            if cond(rd.manifest()) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Run `cmd` (a soak with `--checkpoint 1s --out run`) until its second checkpoint, kill
/// it with SIGKILL (no handler runs), and check what it left: the run verifies, its tool
/// run is partial and unfinished, and validation reads it as a partial run of `tool`.
fn kill_9_after_the_second_checkpoint(
    mut cmd: Command,
    run: &Path,
    tool: &str,
) -> validation::evidence::RunData {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = |m: &record::Manifest| {
        m.tools
            .first()
            .and_then(|t| t.partial_reason.as_deref())
            .is_some_and(|r| r.starts_with("checkpoint 2 "))
    };
    let reached = wait_manifest(run, 30, second);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(reached, "no second checkpoint within 30 s");
    let rd = record::RunDir::open(run).unwrap();
    rd.verify()
        .expect("the last checkpoint is intact and its sha256 is in the manifest");
    let t = &rd.manifest().tools[0];
    assert!(t.partial && t.end.is_none(), "{t:?}");
    let data = validation::evidence::RunData::open(run).unwrap();
    let issues = validation::evidence::environment_issues(&data.manifest, "");
    let expected = format!("partial run: {tool} was interrupted (checkpoint");
    assert!(
        issues.iter().any(|i| i.starts_with(&expected)),
        "{issues:?}"
    );
    data
}

#[test]
fn kill_9_mid_soak_keeps_the_last_checkpoint_valid_hashed_and_partial() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cmd = quiet_probe();
    cmd.args(["-D", "12h", "-q"])
        .args(["--checkpoint", "1s", "--no-dma-latency", "--out"])
        .arg(&run);
    let data = kill_9_after_the_second_checkpoint(cmd, &run, "rt-guest probe");
    let rec = data.probe.expect("probe.json");
    assert!(rec.partial);
    let t = &rec.threads[0];
    assert!(t.samples > 0);
    assert_eq!(
        t.latency.histogram().unwrap().len() + t.out_of_range,
        t.samples
    );
    // At 1000 us, at least the second checkpoint's second of samples (of 12 h).
    assert!(
        rec.elapsed_s >= 1.5 && rec.elapsed_s < 60.0,
        "{}",
        rec.elapsed_s
    );
}

#[test]
fn kill_9_mid_oslat_soak_keeps_the_last_checkpoint_valid_hashed_and_partial() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // SCHED_OTHER on one allowed CPU: no privileges needed.
    let mut cmd = bin();
    cmd.args(["oslat", "-c", &allowed_cpu().to_string(), "-D", "12h", "-q"])
        .args(["--checkpoint", "1s", "--out"])
        .arg(&run);
    let data = kill_9_after_the_second_checkpoint(cmd, &run, "rt-guest oslat");
    let rec = data.oslat.expect("oslat.json");
    assert!(rec.partial);
    let t = &rec.threads[0];
    assert!(t.samples > 1000, "{}", t.samples);
    assert_eq!(
        t.gaps.histogram().unwrap().len() + t.out_of_range,
        t.samples,
        "the histogram holds every gap counted"
    );
    assert!(
        rec.elapsed_s >= 1.5 && rec.elapsed_s < 60.0,
        "{}",
        rec.elapsed_s
    );
}

#[test]
fn an_oslat_soak_that_ends_replaces_the_checkpoint_with_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = bin()
        .args([
            "oslat",
            "-c",
            &allowed_cpu().to_string(),
            "-D",
            "2500ms",
            "-q",
        ])
        .args(["--checkpoint", "1s", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("checkpoint 1 ("),
        "-q keeps the checkpoint lines quiet: {err}"
    );
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::OslatRecord = rd.read_json(record::OSLAT).unwrap();
    assert!(!rec.partial && !rd.manifest().tools[0].partial);
    assert!(rec.elapsed_s >= 2.5, "{}", rec.elapsed_s);
    let t = &rec.threads[0];
    assert_eq!(
        t.gaps.histogram().unwrap().len() + t.out_of_range,
        t.samples
    );
}

#[test]
fn a_soak_that_ends_replaces_the_checkpoint_with_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = quiet_probe()
        .args(["-D", "2500ms", "-q"])
        .args(["--checkpoint", "1s", "--no-dma-latency", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkpoint 1 (") && err.contains("this interval"),
        "{err}"
    );
    let rd = record::RunDir::open(&run).unwrap();
    rd.verify().unwrap();
    let rec: record::ProbeRecord = rd.read_json("probe.json").unwrap();
    assert!(!rec.partial && !rd.manifest().tools[0].partial);
    let t = &rec.threads[0];
    // 2.5 s at 1 ms: every period is a wakeup or a counted missed period (a loaded
    // machine makes SCHED_OTHER wakeups late).
    assert!(
        t.samples + t.missed_periods >= 2_000,
        "{} + {}",
        t.samples,
        t.missed_periods
    );
    assert_eq!(
        t.latency.histogram().unwrap().len() + t.out_of_range,
        t.samples
    );
}

/// On a terminal (util-linux `script` gives the probe one) the status line is the message
/// of a progress bar over the planned duration; into a pipe it is a plain line a second,
/// without escape sequences.
#[test]
fn the_status_line_is_a_progress_bar_on_a_terminal_only() {
    if !testkit::require_command("script") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = |out: &str| {
        format!(
            "{} probe --policy other -p 0 -a 0 -D 2500ms --out {}",
            env!("CARGO_BIN_EXE_rt-guest"),
            dir.path().join(out).display()
        )
    };
    let o = Command::new("script")
        .args(["-qec", &format!("{} 2>&1", probe("tty")), "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("rt-guest probe "), "no bar: {tty:?}");
    assert!(tty.contains(" of 2s (left "), "no bar: {tty:?}");
    assert!(tty.contains("T: 0 ("), "no status in the bar: {tty:?}");

    let o = Command::new("sh")
        .args(["-c", &probe("pipe")])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("T: 0 (")), "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains("rt-guest probe "),
        "{err:?}"
    );
}

/// Bash completes below the top level (clap_complete's hyphenated-name bug worked around):
/// the generated script, loaded in a real bash, offers a subcommand's options.
#[test]
fn bash_completes_the_options_of_a_subcommand() {
    let exe = env!("CARGO_BIN_EXE_rt-guest");
    let got = testkit::bash_complete_generated(exe, &["rt-guest", "probe", "--"]);
    assert!(got.split(' ').any(|w| w == "--duration"), "{got:?}");
    let got = testkit::bash_complete_generated(exe, &["rt-guest", "prob"]);
    assert!(got.split(' ').any(|w| w == "probe"), "{got:?}");
}

#[test]
fn clock_echo_answers_the_hosts_exchange_until_told_to_stop() {
    let d = tempfile::tempdir().unwrap();
    let child = bin()
        .args(["clock-echo", d.path().to_str().unwrap(), "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rounds = record::clocksync::exchange(d.path(), 8, Duration::from_secs(20), &|| {
        rt_sys::rt::realtime_ns()
    })
    .unwrap();
    assert_eq!(rounds.len(), 8);
    let t = record::clocksync::estimate(&rounds).unwrap();
    assert!(
        t.offset_ns.unsigned_abs() <= t.uncertainty_ns,
        "one machine, one clock: {t:?}"
    );
    std::fs::write(d.path().join(record::clocksync::STOP), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("answered 8 request(s)"),
        "{o:?}"
    );
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    testkit::assert_quiet_on_closed_stdout(bin().arg("generate").arg("man").arg(dir.path()));
    // The cyclictest layout of a short probe, printed to a closed pipe: the run still ends
    // with its usual status.
    testkit::assert_quiet_on_closed_stdout(
        quiet_probe()
            .args([
                "-i",
                "500",
                "-l",
                "200",
                "-h",
                "50",
                "--no-dma-latency",
                "--out",
            ])
            .arg(dir.path().join("run")),
    );
    assert!(dir.path().join("run/probe.json").is_file());
}
