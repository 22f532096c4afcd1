//! The lab end to end: one `rtvirt-lab flow` run in QEMU (shared by every test here),
//! then assertions on what it left. These need root (the flow tunes this host) and the lab
//! (QEMU and the cached PREEMPT_RT kernel from lab/setup.sh): run `bash lab/test.sh`, or
//! `cargo test -p lab --test lab -- --include-ignored`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;

use common::{host_tools, root};
use lab::flow::Summary;
use lab::sched::VcpuSample;

/// What one flow run left.
struct Run {
    summary: Summary,
    /// vCPU thread states seen by this test's own watcher while the flow ran.
    watched: Vec<VcpuSample>,
    /// The running QEMU's command line (`/proc/PID/cmdline`), read by the watcher.
    cmdline: Vec<String>,
    stderr: String,
}

/// Poll the vCPU threads of the QEMU the flow started (its pid appears in OUT/qemu.pid)
/// until `done`; keep every distinct state seen, and QEMU's command line.
fn watch(
    out: PathBuf,
    done: Arc<Mutex<bool>>,
    seen: Arc<Mutex<Vec<VcpuSample>>>,
    cmdline: Arc<Mutex<Vec<String>>>,
) {
    let mut pid = None;
    while !*done.lock().unwrap() {
        if pid.is_none() {
            pid = fs::read_to_string(out.join("qemu.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
        }
        if let Some(p) = pid {
            let mut c = cmdline.lock().unwrap();
            if c.is_empty() {
                *c = rt_sys::task::cmdline(&rt_sys::SysRoot::live(), p).unwrap_or_default();
            }
            drop(c);
            for suffix in ["TCG", "KVM"] {
                if let Ok(samples) = lab::sched::vcpu_samples(p, suffix) {
                    let mut s = seen.lock().unwrap();
                    for v in samples {
                        if !s.contains(&v) {
                            s.push(v);
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_flow() -> Run {
    let root = root();
    let target = host_tools();

    let out = root
        .join("lab/out")
        .join(format!("test-flow-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let done = Arc::new(Mutex::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cmdline = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (out, done, seen, c) = (out.clone(), done.clone(), seen.clone(), cmdline.clone());
        std::thread::spawn(move || watch(out, done, seen, c))
    };
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"))
        .args(["flow", "--profile", "lab", "--out"])
        .arg(&out)
        .env("RTVIRT_LAB_BIN_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("running rtvirt-lab flow");
    *done.lock().unwrap() = true;
    watcher.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "rtvirt-lab flow ({:.0} s, {}):\n{stderr}",
        start.elapsed().as_secs_f64(),
        output.status
    );
    let text = fs::read_to_string(out.join("summary.json")).unwrap_or_else(|e| {
        panic!(
            "no summary.json in {} ({e}); flow stderr:\n{stderr}",
            out.display()
        )
    });
    let summary: Summary = serde_json::from_str(&text).expect("summary.json parses");
    let watched = seen.lock().unwrap().clone();
    let cmdline = cmdline.lock().unwrap().clone();
    Run {
        summary,
        watched,
        cmdline,
        stderr,
    }
}

/// The one flow run, shared; booting it holds the host lock (it tunes this host).
fn flow() -> Option<&'static Run> {
    static RUN: OnceLock<Run> = OnceLock::new();
    if !common::lab_ready(false) {
        return None;
    }
    Some(RUN.get_or_init(|| {
        let _g = testkit::host_lock();
        run_flow()
    }))
}

fn vcpu1(samples: &[VcpuSample]) -> Option<&VcpuSample> {
    samples.iter().find(|v| v.name.starts_with("CPU 1/"))
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_flow_passes_and_leaves_no_qemu() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    common::assert_flow_ok(s, &run.stderr);
    let pid = s.qemu_pid.expect("the flow started QEMU");
    assert!(
        !rt_sys::SysRoot::live().exists(format!("proc/{pid}")),
        "QEMU pid {pid} still runs after the flow"
    );
    assert!(!s.out.join("qmp.sock").exists(), "temp files left");
    assert!(s.secs < 600.0, "the flow took {:.0} s", s.secs);
}

/// The QEMU that ran is the lab profile's definition as `rt-host vm lab --format qemu
/// --json` renders it (the release binary, run here), except the substitutions the flow
/// recorded, followed by the lab's named additions.
#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_qemu_runs_the_rendered_definition_but_for_the_recorded_substitutions() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    let launch = s
        .vm_definition
        .as_ref()
        .expect("summary.json records the VM definition");
    let out = Command::new(host_tools().join("rt-host"))
        .args(["vm", "lab", "--format", "qemu", "--json"])
        .output()
        .expect("running rt-host vm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rendered: Vec<String> = serde_json::from_value(json["argv"].clone()).unwrap();
    assert_eq!(
        launch.rendered, rendered,
        "the lab rendered what rt-host vm prints"
    );
    let (cmd, args) = run
        .cmdline
        .split_first()
        .expect("the watcher read QEMU's /proc/PID/cmdline");
    assert!(cmd.ends_with("qemu-system-x86_64"), "{cmd}");
    let mut want = rt_host::vmdef::qemu::apply(&rendered, &launch.substitutions);
    want.extend(launch.lab.iter().flat_map(|a| a.args.iter().cloned()));
    assert_eq!(args, &want[..], "QEMU's command line");
    // Each substitution is there only where its cause holds, with its reason.
    let opts: Vec<&str> = launch
        .substitutions
        .iter()
        .map(|x| x.option.as_str())
        .collect();
    let tcg = s.accel == "tcg";
    assert_eq!(opts.contains(&"-machine"), tcg, "{opts:?}");
    assert_eq!(opts.contains(&"-cpu"), tcg, "{opts:?}");
    assert!(opts.contains(&"-qmp"), "the lab's QMP socket: {opts:?}");
    let root = rt_sys::SysRoot::live();
    let lock_refused = lab::qemu::mem_lock_refused(
        rt_sys::task::has_capability(&root, rt_sys::task::CAP_IPC_LOCK),
        rt_sys::task::memlock_limit(&root).map_err(|e| e.to_string()),
    );
    assert_eq!(
        opts.contains(&"-overcommit"),
        lock_refused.is_some(),
        "{opts:?}"
    );
    assert!(
        !opts.contains(&"-object"),
        "the lab profile has no hugepages: {opts:?}"
    );
    assert!(launch.substitutions.iter().all(|x| !x.why.is_empty()));
    for x in &launch.substitutions {
        assert!(
            run.stderr.contains(&format!("substituted {x}")),
            "the flow did not print {x}"
        );
    }
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_guest_kernel_is_preempt_rt() {
    let Some(run) = flow() else { return };
    let g = run.summary.guest.as_ref().expect("the guest came up");
    assert!(g.uname_v.contains("PREEMPT_RT"), "uname -v: {}", g.uname_v);
    assert_eq!(g.realtime, "1", "/sys/kernel/realtime");
    assert_eq!(g.nproc, 2);
    for i in ["can0", "can1"] {
        assert!(
            g.net.iter().any(|n| n == i),
            "guest interfaces {:?} lack {i}",
            g.net
        );
    }
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_vcpu_thread_was_fifo_while_tuned_and_reverted_after() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    let suffix = if s.accel == "kvm" { "KVM" } else { "TCG" };
    let name = format!("CPU 1/{suffix}");
    let before = vcpu1(&s.vcpus_before)
        .unwrap_or_else(|| panic!("no {name} before setup: {:?}", s.vcpus_before));
    assert_eq!(before.name, name);
    assert_ne!(
        before.policy, "fifo",
        "{name} was FIFO before rt-host setup"
    );
    // Seen by this test's own watcher, independently of the flow's bookkeeping.
    assert!(
        run.watched
            .iter()
            .any(|v| v.name == name && v.policy == "fifo" && v.priority == 50),
        "the watcher never saw {name} at FIFO 50: {:?}",
        run.watched
    );
    let tuned = vcpu1(&s.vcpus_tuned).expect("vCPU sample while tuned");
    assert_eq!(
        (
            tuned.policy.as_str(),
            tuned.priority,
            tuned.affinity.as_str()
        ),
        ("fifo", 50, "1")
    );
    let end = vcpu1(&s.vcpus_tuned_end).expect("vCPU sample at the end of the guest steps");
    assert_eq!(end.policy, "fifo", "{name} lost FIFO during the run");
    let after = vcpu1(&s.vcpus_after).expect("vCPU sample after revert");
    assert_eq!(
        (after.policy.as_str(), after.priority),
        (before.policy.as_str(), before.priority),
        "not reverted"
    );
    // The other vCPU is the lab profile's vCPU 0: FIFO 1 on the housekeeping CPU 0, below
    // QEMU's main loop (FIFO 2) whose big lock it holds (docs/benchmarks.md), never on
    // vCPU 1's CPU and never at its priority; RT throttling keeps CPU 0 for the host.
    for v in s.vcpus_tuned.iter().filter(|v| v.name != name) {
        assert_eq!(
            (v.policy.as_str(), v.priority, v.affinity.as_str()),
            ("fifo", 1, "0"),
            "{} is not where the lab profile puts vCPU 0",
            v.name
        );
    }
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_probe_produced_samples() {
    let Some(run) = flow() else { return };
    let runs = &run.summary.runs;
    let can_run = runs
        .iter()
        .find(|r| r.ends_with("run-lab-can"))
        .expect("run-lab-can came out");
    let probe: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(can_run.join("probe.json")).unwrap()).unwrap();
    let threads = probe["threads"].as_array().expect("probe.json has threads");
    assert!(!threads.is_empty());
    for t in threads {
        let samples = t["samples"].as_u64().unwrap_or(0);
        assert!(
            samples > 1000,
            "probe thread on CPU {} has {samples} samples",
            t["cpu"]
        );
        assert_eq!(
            t["cpu"].as_u64(),
            Some(1),
            "the lab profile probes guest CPU 1"
        );
    }
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_can_counts_match_candump() {
    let Some(run) = flow() else { return };
    let checks = &run.summary.can;
    assert_eq!(checks.len(), 2, "{checks:?}");
    for c in checks {
        let (sent, received, lost) = (c.sent.unwrap(), c.received.unwrap(), c.lost.unwrap());
        assert!(sent > 100, "{}: can-sim sent only {sent}", c.link);
        assert_eq!(sent, received + lost, "{}: sent != received + lost", c.link);
        assert_eq!(
            c.candump_frames,
            Some(received),
            "{}: candump in the guest disagrees with can-sim",
            c.link
        );
        let run_dir = record::RunDir::open(&c.run).unwrap();
        run_dir.verify().expect("run directory hashes");
        assert!(run_dir.manifest().files.contains_key("candump.log"));
    }
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_report_marks_tcg_run_not_valid() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    for f in ["html", "md", "json", "junit"] {
        let p = s
            .reports
            .get(f)
            .unwrap_or_else(|| panic!("no {f} report: {:?}", s.reports));
        assert!(
            fs::metadata(p).unwrap().len() > 0,
            "{} is empty",
            p.display()
        );
    }
    let json = fs::read_to_string(&s.reports["json"]).unwrap();
    let html = fs::read_to_string(&s.reports["html"]).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json parses");
    let runs = report["runs"]
        .as_array()
        .expect("report.json lists its runs");
    let mut ids: Vec<&str> = runs.iter().filter_map(|r| r["run_id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["run-lab-can", "run-lab-host", "run-lab-vcan"],
        "the guest's runs and the host trace's are in the report"
    );
    if s.accel == "tcg" {
        for r in runs.iter().filter(|r| r["run_id"] != "run-lab-host") {
            let why: Vec<&str> = r["invalid_because"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert!(
                why.iter()
                    .any(|w| w.contains("TCG") && w.contains("not valid evidence")),
                "run {} is not marked invalid for TCG: {why:?}",
                r["run_id"]
            );
        }
        assert!(
            html.contains("TCG") && html.contains("not valid evidence"),
            "the HTML report does not say the TCG run is not valid evidence"
        );
    }
}

/// `rt-host trace` ran on this host around the tuned probe (the clock exchange with
/// `rt-guest clock-echo` over the 9p share): the report puts the probe's worst spikes
/// beside the TCG vCPU thread's scheduling, naming the thread and the clock offset.
#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_report_has_the_host_view_of_the_probe() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    let step = s
        .step(lab::flow::trace::STEP)
        .unwrap_or_else(|| panic!("no rt-host trace step: {:?}", s.steps));
    assert!(step.ok, "rt-host trace failed: {}", step.note);
    let host_run = s.out.join("runs").join(lab::flow::trace::RUN_HOST);
    let rd = record::RunDir::open(&host_run).expect("the host trace's run came out");
    rd.verify().expect("run-lab-host hashes");
    assert!(rd.manifest().files.contains_key(record::HOST_TRACE));
    let md = fs::read_to_string(&s.reports["md"]).unwrap();
    let view = md
        .split_once("Host view of the guest's worst spikes")
        .unwrap_or_else(|| panic!("the report has no host view:\n{md}"))
        .1;
    let view = view.split("\n## ").next().unwrap_or(view);
    let suffix = if s.accel == "kvm" { "KVM" } else { "TCG" };
    let vcpu1 = vcpu1(&s.vcpus_tuned).expect("vCPU 1 sampled while tuned");
    // The trace's line names the vCPU thread it recorded, pinned to CPU 1 by the profile.
    let traced = format!("CPU 1/{suffix} (tid {}, CPUs 1)", vcpu1.tid);
    assert!(
        view.contains(&traced),
        "the host view does not name {traced}:\n{view}"
    );
    // Every spike falls inside the recording (it covers the whole probe): each is either
    // placed on that thread, or said to have no host events kept, with what the whole-run
    // summary saw of its vCPU then.
    let thread = format!("CPU 1/{suffix} (tid {}) on CPU 1", vcpu1.tid);
    let placed = view.matches(&thread).count();
    let not_kept: Vec<&str> = view
        .lines()
        .filter(|l| l.contains("no host events kept for it"))
        .collect();
    let uncovered: Vec<&str> = view
        .lines()
        .filter(|l| l.contains("no host trace covers it"))
        .collect();
    assert!(
        uncovered.is_empty(),
        "spikes outside the recording:\n{view}"
    );
    assert!(placed > 0, "no spike placed on {thread}:\n{view}");
    assert!(
        not_kept.iter().all(|l| l.contains("over every event")),
        "a spike without kept events and without its summary:\n{view}"
    );
    eprintln!(
        "host view: {placed} spike(s) placed on {thread}, {} without kept host events",
        not_kept.len()
    );
    // The trace's own threads ran off the measured CPU 1: none of their switches there.
    let h: record::HostTraceRecord = rd.read_json(record::HOST_TRACE).unwrap();
    let reader = h
        .reader
        .as_ref()
        .expect("the record says where the trace ran");
    let cpus = rt_sys::CpuSet::parse(&reader.cpus).unwrap();
    assert!(!cpus.contains(1), "the trace ran on CPUs {}", reader.cpus);
    assert_eq!(reader.switches_on_recorded_cpus, 0, "{reader:?}");
    assert!(
        h.keep.is_some() && !h.windows.is_empty(),
        "whole-run summaries"
    );
    eprintln!(
        "host trace: {} events seen, {} kept, {} dropped; reader on CPUs {}",
        h.events_seen,
        h.events.len(),
        h.events_dropped(),
        reader.cpus
    );
    // "guest clock offset (guest - host) X us +- Y us (file_exchange)", both numbers.
    let clock = view
        .split_once("guest clock offset (guest - host) ")
        .unwrap_or_else(|| panic!("no guest clock offset in the host view:\n{view}"))
        .1;
    let (offset, rest) = clock.split_once(" us +- ").expect("offset +- uncertainty");
    let (uncertainty, method) = rest.split_once(" us (").expect("uncertainty and method");
    let offset: f64 = offset.parse().expect("the offset is a number");
    let uncertainty: f64 = uncertainty.parse().expect("the uncertainty is a number");
    assert!(method.starts_with("file_exchange)"), "{clock}");
    assert!(
        uncertainty > 0.0 && uncertainty < 1e6,
        "clock uncertainty {uncertainty} us"
    );
    eprintln!("guest - host = {offset} us +- {uncertainty} us");
}

/// The bare lab VM, without the rtvirt tools: proves the image, the boot, the modules and
/// the emulated CAN bus on their own (a second, short boot).
#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_bare_vm_carries_frames_from_can0_to_can1() {
    if !common::lab_ready(false) {
        return;
    }
    let _g = testkit::host_lock();
    let out = root()
        .join("lab/out")
        .join(format!("test-boot-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let script = format!(
        "{}\n{}",
        lab::scripts::interfaces_script(&["can0", "can1"], 500_000),
        lab::scripts::capture_script(
            "can0",
            "can1",
            "/tmp/c.log",
            "cangen can0 -n 200 -g 2 -I 123 -L 8 -D i"
        )
    );
    let output = Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"))
        .args(["boot", "--no-rtvirt", "--out"])
        .arg(&out)
        .args(["--exec", &script])
        .stdin(Stdio::null())
        .output()
        .expect("running rtvirt-lab boot");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rtvirt-lab boot failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("PREEMPT_RT"), "{stdout}");
    assert!(
        stdout.contains("candump_frames=200"),
        "candump on can1 did not get the 200 frames:\n{stdout}"
    );
    let _ = fs::remove_dir_all(&out);
}

/// The tracing instances of `rt-host trace` (`rtvirt-trace-PID`) in this host's tracefs;
/// with `recording`, only those whose `tracing_on` is 1.
fn trace_instances(recording: bool) -> Vec<String> {
    let Ok(fs) = rt_sys::tracefs::Tracefs::find(&rt_sys::SysRoot::live()) else {
        return vec![];
    };
    let on = |n: &str| {
        fs.read(&format!("instances/{n}/tracing_on"))
            .is_ok_and(|t| t.trim() == "1")
    };
    fs.root()
        .list(fs.rel("instances"))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(rt_sys::tracefs::sched::INSTANCE_PREFIX))
        .filter(|n| !recording || on(n))
        .collect()
}

/// Ctrl-C in the middle of the flow, while the host is tuned and traced: the lab stops
/// the trace (its tracefs instance removed), reverts the host, stops QEMU and fails naming
/// the interruption (a second flow, cut short).
#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_sigint_while_tuned_reverts_the_host_and_stops_qemu() {
    if !common::lab_ready(false) {
        return;
    }
    let bin_dir = host_tools();
    let _g = testkit::host_lock();
    let out = root()
        .join("lab/out")
        .join(format!("test-sigint-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"))
        .args([
            "flow",
            "--profile",
            "lab",
            "--probe-duration",
            "120s",
            "--out",
        ])
        .arg(&out)
        .env("RTVIRT_LAB_BIN_DIR", &bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rtvirt-lab flow");
    let before = trace_instances(false);
    // Wait until the vCPU is FIFO (the host is tuned) and rt-host trace records, with a
    // deadline.
    let deadline = Instant::now() + Duration::from_secs(900);
    let qemu = loop {
        assert!(Instant::now() < deadline, "the flow never tuned the vCPU");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the flow ended ({status}) before it was interrupted");
        }
        let pid = fs::read_to_string(out.join("qemu.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let tuned = ["TCG", "KVM"].iter().any(|sfx| {
                lab::sched::vcpu_samples(pid, sfx)
                    .map(|v| {
                        v.iter()
                            .any(|t| t.name.starts_with("CPU 1/") && t.policy == "fifo")
                    })
                    .unwrap_or(false)
            });
            if tuned && trace_instances(true).iter().any(|i| !before.contains(i)) {
                break pid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the flow did not end within 120 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "exit status after SIGINT\n{stderr}");
    assert!(
        !rt_sys::SysRoot::live().exists(format!("proc/{qemu}")),
        "QEMU {qemu} survived SIGINT\n{stderr}"
    );
    let summary: Summary =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary
            .error
            .as_deref()
            .unwrap_or("")
            .contains("Interrupted"),
        "{:?}",
        summary.error
    );
    let revert = summary
        .step("host: rt-host revert")
        .expect("rt-host revert ran");
    assert!(revert.ok, "rt-host revert failed: {}", revert.note);
    assert_eq!(
        trace_instances(false),
        before,
        "rt-host trace left its tracefs instance"
    );
    let trace = summary
        .step(lab::flow::trace::STEP)
        .expect("rt-host trace ran");
    assert!(
        !trace.ok && trace.note.starts_with("stopped with SIGINT"),
        "{trace:?}"
    );
    let after = vcpu1(&summary.vcpus_after).expect("vCPU sampled after revert");
    assert_ne!(
        after.policy, "fifo",
        "{} still FIFO after revert",
        after.name
    );
    let _ = fs::remove_dir_all(&out);
}
