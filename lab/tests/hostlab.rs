//! The host lab end to end: `rtvirt-lab flow --host-lab` once (shared by the tests that
//! read what it left), and two more outer hosts driven through the library for the crash
//! tests: `kill -9` of `rt-host setup` at several points, then `rt-host revert`; and the
//! guest shut down while tuned. Root, QEMU and both cached kernels (lab/setup.sh) are
//! needed: run `bash lab/test.sh`, or
//! `cargo test -p lab --test hostlab -- --include-ignored --test-threads=1`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::{host_tools, root};
use lab::flow::{FlowOptions, Summary};
use lab::hostlab::outer::OuterExec;
use lab::hostlab::record::{HostLabRecord, Moments, ThreadHistory};
use lab::hostlab::HostLab;
use serde_json::Value;

/// What the one `flow --host-lab` run left.
struct Run {
    summary: Summary,
    record: HostLabRecord,
    stderr: String,
}

fn run_flow() -> Run {
    let bin_dir = host_tools();
    let out = root()
        .join("lab/out")
        .join(format!("test-host-lab-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let start = Instant::now();
    let output = {
        let _g = testkit::host_lock();
        Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"))
            .args(["flow", "--host-lab", "--out"])
            .arg(&out)
            .env("RTVIRT_LAB_BIN_DIR", &bin_dir)
            .stdin(Stdio::null())
            .output()
            .expect("running rtvirt-lab flow --host-lab")
    };
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "rtvirt-lab flow --host-lab ({:.0} s, {}):\n{stderr}",
        start.elapsed().as_secs_f64(),
        output.status
    );
    let text = fs::read_to_string(out.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json in {} ({e}):\n{stderr}", out.display()));
    let summary: Summary = serde_json::from_str(&text).expect("summary.json parses");
    let text = fs::read_to_string(out.join("host-lab.json")).unwrap_or_else(|e| {
        panic!(
            "no host-lab.json ({e}); flow error {:?}\n{stderr}",
            summary.error
        )
    });
    let record: HostLabRecord = serde_json::from_str(&text).expect("host-lab.json parses");
    Run {
        summary,
        record,
        stderr,
    }
}

fn flow() -> Option<&'static Run> {
    static RUN: OnceLock<Run> = OnceLock::new();
    if !common::lab_ready(true) {
        return None;
    }
    Some(RUN.get_or_init(run_flow))
}

fn value<'a>(r: &'a HostLabRecord, target: &str) -> &'a lab::hostlab::record::TouchedValue {
    r.values
        .iter()
        .find(|v| v.target == target)
        .unwrap_or_else(|| panic!("rt-host did not touch {target}: {:#?}", r.values))
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_flow_passes_and_restores_every_value() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    common::assert_flow_ok(s, &run.stderr);
    let r = &run.record;
    assert!(
        r.values.len() >= 10,
        "only {} values touched",
        r.values.len()
    );
    assert_eq!(r.not_restored(), Vec::<String>::new());
    let h = s.host_lab.as_ref().expect("summary has the host lab");
    // Every value is restored, but those of threads that were not there at one end (QEMU
    // workers come and go).
    assert_eq!(h.values, r.values.len());
    assert!(
        r.values.iter().all(|v| v.restored || v.absent),
        "{:#?}",
        r.values
    );
    for a in &h.absent {
        assert!(!a.contains("CPU "), "a vCPU thread came or went: {a}");
    }
    // The outer host's QEMU is gone.
    let pid = s.qemu_pid.expect("the flow started QEMU");
    assert!(
        !rt_sys::SysRoot::live().exists(format!("proc/{pid}")),
        "outer QEMU pid {pid} still runs"
    );
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_every_knob_is_real_in_the_outer_host() {
    let Some(run) = flow() else { return };
    let r = &run.record;
    assert!(r.outer.cpus >= 4, "outer host has {} CPUs", r.outer.cpus);
    assert!(
        r.outer.cmdline.contains(&r.outer.boot_args),
        "booted with {:?}, rt-host boot-args printed {:?}",
        r.outer.cmdline,
        r.outer.boot_args
    );
    // halt_poll_ns changed and restored.
    let hp = value(r, "/sys/module/kvm/parameters/halt_poll_ns");
    assert_eq!(hp.value.tuned, "400000");
    assert_ne!(hp.value.before, hp.value.tuned);
    // The isolated partition created and removed.
    let cg = value(r, "directory /sys/fs/cgroup/rtvirt-rt");
    assert_eq!(
        (
            cg.value.before.as_str(),
            cg.value.tuned.as_str(),
            cg.value.after.as_str()
        ),
        ("", "created", "")
    );
    // IRQ affinities written: every spread IRQ back on CPU 0 while tuned.
    let irqs: Vec<_> = r
        .values
        .iter()
        .filter(|v| v.target.starts_with("/proc/irq/") && v.target.ends_with("/smp_affinity"))
        .collect();
    assert!(irqs.len() >= 5, "{irqs:#?}");
    for v in &irqs {
        assert_eq!(v.value.tuned.trim_start_matches('0'), "1", "{v:?}");
    }
    assert!(
        r.outer.irqs_spread.iter().any(|l| l.starts_with("spread ")),
        "{:?}",
        r.outer.irqs_spread
    );
    let tm = value(r, "/proc/sys/kernel/timer_migration");
    assert_eq!(
        (tm.value.before.as_str(), tm.value.tuned.as_str()),
        ("1", "0")
    );
    // The vCPU threads, found by name and by QMP alike, pinned and FIFO while tuned.
    assert_eq!(r.outer.found_by.len(), 2, "{:?}", r.outer.found_by);
    let vcpus = |s: &str| s.split_once(": ").map(|x| x.1.to_string());
    assert!(r.outer.found_by[0].starts_with("-name ecu0") || r.outer.found_by[0].contains("ecu0"));
    assert!(
        r.outer.found_by[1].starts_with("QMP "),
        "{:?}",
        r.outer.found_by
    );
    assert_eq!(vcpus(&r.outer.found_by[0]), vcpus(&r.outer.found_by[1]));
}

/// The vCPU threads of the profile's VM `name` in `host-lab.json`.
fn vm_vcpus<'a>(r: &'a HostLabRecord, name: &str) -> &'a [ThreadHistory] {
    &r.vms
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no VM {name} in host-lab.json: {:#?}", r.vms))
        .vcpus
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_tunes_both_vms_at_once_and_reverts_both() {
    let Some(run) = flow() else { return };
    let r = &run.record;
    let names: Vec<_> = r.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["ecu0", "ecu1"]);
    let paused: Vec<_> = r
        .outer
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.paused))
        .collect();
    assert_eq!(paused, [("ecu0", false), ("ecu1", true)]);
    // Each VM's vCPUs, pinned and FIFO 50 on their own CPUs while tuned, as before after.
    for (vm, cpus) in [("ecu0", &["1", "2"][..]), ("ecu1", &["3"][..])] {
        let vcpus = vm_vcpus(r, vm);
        assert_eq!(vcpus.len(), cpus.len(), "{vm}: {vcpus:#?}");
        for (t, cpu) in vcpus.iter().zip(cpus) {
            assert!(t.name.ends_with("/KVM"), "{vm}: {}", t.name);
            let tuned = t.state.tuned.as_ref().unwrap();
            assert_eq!(
                (
                    tuned.policy.as_str(),
                    tuned.priority,
                    tuned.affinity.as_str()
                ),
                ("fifo", 50, *cpu),
                "{vm} {}",
                t.name
            );
            let before = t.state.before.as_ref().unwrap();
            assert_eq!(
                (before.policy.as_str(), before.affinity.as_str()),
                ("other", "0-3"),
                "{vm} {}",
                t.name
            );
            assert!(t.restored() && !t.absent(), "{vm}: {t:#?}");
        }
    }
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_second_vm_is_never_touched() {
    let Some(run) = flow() else { return };
    let r = &run.record;
    assert!(!r.other_vm.is_empty(), "no second VM in host-lab.json");
    for t in &r.other_vm {
        assert!(t.untouched(), "{t:#?}");
    }
    // No journal entry sets it to anything but what it had.
    let other = r.outer.other_pid.unwrap();
    let journal: Value = serde_json::from_str(
        &fs::read_to_string(run.summary.out.join("journal/journal.json")).unwrap(),
    )
    .unwrap();
    for e in journal["entries"].as_array().unwrap() {
        let t = e["target"].as_object().unwrap().values().next().unwrap();
        if t["pid"].as_u64() == Some(u64::from(other)) {
            assert_eq!(
                e["prior"], e["applied"],
                "rt-host changes the second VM: {e}"
            );
            assert!(e["target"].get("ThreadSched").is_none(), "{e}");
        }
    }
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_report_has_only_the_honest_non_ok_host_items() {
    let Some(run) = flow() else { return };
    let s = &run.summary;
    let check: record::CheckReport =
        serde_json::from_str(&fs::read_to_string(s.out.join("host-check.json")).unwrap())
            .expect("rt-host check --json is a record::CheckReport");
    for i in check.items.iter().filter(|i| i.name == "boot-arg") {
        assert_eq!(
            i.status,
            record::CheckStatus::Ok,
            "boot argument not in effect: {i:?}"
        );
    }
    // The honest ones: the host kernel is not PREEMPT_RT, the host is a nested TCG guest,
    // and TCG has no invariant TSC to give the guest.
    let honest = |i: &&record::CheckItem| match (i.name.as_str(), i.status) {
        ("kernel", record::CheckStatus::NeedsReboot) => true,
        ("nested-virtualization", record::CheckStatus::Differs) => true,
        ("vm-cpu", record::CheckStatus::Differs) => {
            i.target.as_deref().is_some_and(|t| t.contains("invtsc"))
        }
        _ => false,
    };
    let not_ok = check.not_ok();
    let other: Vec<_> = not_ok.iter().filter(|i| !honest(i)).collect();
    assert!(
        other.is_empty(),
        "non-ok host check items beyond the honest ones: {other:#?}"
    );
    for name in ["kernel", "nested-virtualization"] {
        assert!(
            not_ok.iter().any(|i| i.name == name),
            "no {name} item: {not_ok:#?}"
        );
    }
    for f in ["html", "md", "json", "junit"] {
        assert!(s.reports.contains_key(f), "no {f} report: {:?}", s.reports);
    }
    let report = fs::read_to_string(&s.reports["md"]).unwrap();
    assert!(
        report.contains("not PREEMPT_RT"),
        "the report does not say the host kernel is not PREEMPT_RT"
    );
    let can = &s.can;
    assert_eq!(can.len(), 2, "{can:?}");
    for c in can {
        assert_eq!(c.candump_frames, c.received, "{c:?}");
        assert!(c.sent.unwrap_or(0) > 100, "{c:?}");
    }
}

/// `RUN/FILE` parsed.
fn run_json(dir: &std::path::Path, file: &str) -> Value {
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `v[field]` as frame counts by id text.
fn id_counts(v: &Value, field: &str) -> std::collections::BTreeMap<String, u64> {
    serde_json::from_value(v[field].clone())
        .unwrap_or_else(|e| panic!("{field} is not id -> count: {e}"))
}

/// `RUN/can-tx.json`'s `sent` (frames the sender wrote, by id text).
fn sender_sent(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    id_counts(&run_json(dir, "can-tx.json"), "sent")
}

fn id_text(m: &record::CanMessageRecord) -> String {
    if m.extended {
        format!("0x{:08X}", m.id)
    } else {
        format!("0x{:03X}", m.id)
    }
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_can_crosses_the_vm_boundary_both_ways() {
    let Some(run) = flow() else { return };
    let runs = run.summary.out.join("runs");
    for (dir, rx) in [("run-boundary-h2g", "can1"), ("run-boundary-g2h", "vcan0")] {
        let text = fs::read_to_string(runs.join(dir).join("can.json"))
            .unwrap_or_else(|e| panic!("no can.json of {dir} ({e}):\n{}", run.stderr));
        let c: record::CanRecord = serde_json::from_str(&text).expect("can.json parses");
        let sent = sender_sent(&runs.join(format!("{dir}-tx")));
        assert_eq!((c.role.as_str(), c.rx.as_str()), ("receiver", rx), "{dir}");
        // The receiver measured the offset between the two clocks and says how well.
        let tb = &c.time_base;
        assert_eq!(tb.method, "file_exchange", "{dir}: {tb:?}");
        assert!(
            tb.uncertainty_ns > 0 && tb.uncertainty_ns < 2_000_000_000,
            "{dir}: {tb:?}"
        );
        assert_eq!(c.messages.len(), sent.len(), "{dir}: {sent:?}");
        for m in &c.messages {
            let id = id_text(m);
            // Every frame is accounted for on the other side of the VM boundary: received
            // or lost against the schedule's releases (the receiver's `sent`), and no more
            // received than the sender wrote. (Under nested TCG the guest's SJA1000 RX FIFO
            // overflows and its TX falls behind, so some frames are lost: equality with
            // what was sent is not asserted here.)
            let wrote = *sent
                .get(&id)
                .unwrap_or_else(|| panic!("{dir}: sender sent no {id}"));
            assert!(
                wrote <= m.sent,
                "{dir} {id}: sender wrote {wrote} of {} releases",
                m.sent
            );
            assert!(
                m.received <= wrote,
                "{dir} {id}: {} received of {wrote} sent",
                m.received
            );
            assert_eq!(m.received + m.lost, m.sent, "{dir} {id}");
            assert!(m.received > 0, "{dir} {id}: no frame crossed: {m:?}");
            assert_eq!(m.duplicates, 0, "{dir} {id}");
            // Latencies are finite and no shorter than the stated uncertainty allows:
            // nothing arrives before the frame took the bus.
            let lat = &m.latency;
            assert!(
                lat.samples > 0 && lat.samples <= m.received,
                "{dir} {id}: {lat:?}"
            );
            assert!(lat.max_ns < 60_000_000_000, "{dir} {id}: {lat:?}");
            let floor_ns = m.frame_time_us * 1000.0;
            let earliest = lat.min_ns.saturating_add(tb.uncertainty_ns) as f64;
            assert!(
                earliest >= floor_ns,
                "{dir} {id}: latency {} ns below the frame time {floor_ns} ns by more than the uncertainty {} ns",
                lat.min_ns,
                tb.uncertainty_ns
            );
        }
        let (got, total): (u64, u64) = c
            .messages
            .iter()
            .fold((0, 0), |(g, t), m| (g + m.received, t + m.sent));
        eprintln!(
            "{dir}: {got} of {total} frames crossed; offset {} ns +- {} ns ({})",
            tb.offset_ns, tb.uncertainty_ns, tb.method
        );
    }
}

/// `RUN/can-echo.json`'s `echoed` (frames the echo side sent back, by id text).
fn echoed(dir: &std::path::Path) -> (std::collections::BTreeMap<String, u64>, Value) {
    let e = run_json(dir, "can-echo.json");
    (id_counts(&e, "echoed"), e)
}

/// One round-trip run `dir` (receiving on `rx`) and its echo side's `echo_dir`, checked:
/// can.json says `round_trip_echo` with RTT/2 as the latency and half the longest round
/// trip as the uncertainty, every echo received was echoed and every echo was of a frame
/// sent. Returns a line of its numbers.
fn check_round_trip(runs: &std::path::Path, dir: &str, echo_dir: &str, rx: &str) -> String {
    let text = fs::read_to_string(runs.join(dir).join("can.json"))
        .unwrap_or_else(|e| panic!("no can.json of {dir} ({e})"));
    let c: record::CanRecord = serde_json::from_str(&text).expect("can.json parses");
    assert_eq!(
        (c.role.as_str(), c.rx.as_str()),
        ("round-trip", rx),
        "{dir}"
    );
    let tb = &c.time_base;
    assert_eq!(
        (tb.method.as_str(), tb.offset_ns),
        ("round_trip_echo", 0),
        "{dir}"
    );
    let rtt = tb
        .rtt
        .as_ref()
        .unwrap_or_else(|| panic!("{dir}: no RTT: {tb:?}"));
    assert!(rtt.samples > 0, "{dir}: no echo came back: {tb:?}");
    assert!(
        rtt.min_ns <= rtt.median_ns && rtt.median_ns <= rtt.p99_ns && rtt.p99_ns <= rtt.max_ns,
        "{dir}: {rtt:?}"
    );
    assert_eq!(tb.uncertainty_ns, rtt.max_ns.div_ceil(2), "{dir}: {tb:?}");
    let sent = sender_sent(&runs.join(dir));
    let (back, echo) = echoed(&runs.join(echo_dir));
    assert_eq!(echo["tx_errors"], 0, "{dir}: {echo}");
    let mut latencies = 0;
    for m in &c.messages {
        let id = id_text(m);
        let wrote = sent[&id];
        assert!(
            m.received <= back[&id] && back[&id] <= wrote,
            "{dir} {id}: {} received, {} echoed, {wrote} sent",
            m.received,
            back[&id]
        );
        assert_eq!(m.received + m.lost, m.sent, "{dir} {id}");
        assert_eq!(m.duplicates, 0, "{dir} {id}");
        assert!(m.received > 0, "{dir} {id}: no echo: {m:?}");
        // The latency is half the round trip (to the histogram's 3 significant digits).
        let lat = &m.latency;
        let tol = |v: u64| v / 500 + 1;
        assert!(
            lat.min_ns * 2 + tol(lat.min_ns * 2) >= rtt.min_ns
                && lat.max_ns <= tb.uncertainty_ns + tol(tb.uncertainty_ns),
            "{dir} {id}: latency {}..{} ns against RTT {rtt:?}",
            lat.min_ns,
            lat.max_ns
        );
        latencies += lat.samples;
    }
    assert_eq!(latencies, rtt.samples, "{dir}: one round trip per latency");
    let (got, total): (u64, u64) = c
        .messages
        .iter()
        .fold((0, 0), |(g, t), m| (g + m.received, t + m.sent));
    format!(
        "{dir}: {got} of {total} frames came back; RTT min {} / median {} / p99 {} / max {} us; latency RTT/2 +- {} us; echo side: {echo}",
        rtt.min_ns / 1000,
        rtt.median_ns / 1000,
        rtt.p99_ns / 1000,
        rtt.max_ns / 1000,
        tb.uncertainty_ns / 1000,
    )
}

/// The round trip across the boundary, both ways: the near side sends, the far side
/// echoes every frame on its reply id, the near side times each round trip on its own
/// clock.
#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_round_trip_echo_times_the_boundary_on_one_clock() {
    let Some(run) = flow() else { return };
    let runs = run.summary.out.join("runs");
    for (dir, rx) in [
        ("run-roundtrip-h2g", "vcan0"),
        ("run-roundtrip-g2h", "can1"),
    ] {
        eprintln!(
            "{}",
            check_round_trip(&runs, dir, &format!("{dir}-echo"), rx)
        );
    }
    // ptp_kvm was tried once in the guest: its step says what the module did.
    let step = |name: &str| {
        run.summary
            .steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no step {name:?}"))
    };
    let host = step(lab::hostlab::boundary::PTP_KVM_HOST_STEP);
    let guest = step(lab::hostlab::boundary::PTP_KVM_GUEST_STEP);
    assert!(host.note.contains("host clocksource: "), "{host:?}");
    assert!(guest.note.contains("insmod rc="), "{guest:?}");
    eprintln!(
        "ptp_kvm, outer host:\n{}\nptp_kvm, guest:\n{}",
        host.note, guest.note
    );
}

/// Two inner VMs on one bus: the profile's second VM, paused until then, resumed and
/// booted while the guest runs; the guest sends (round trip), the second VM echoes, both
/// buses joined through the outer host's vcan0.
#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_two_vms_on_one_bus() {
    let Some(run) = flow() else { return };
    let boot = run
        .summary
        .steps
        .iter()
        .find(|s| s.name.starts_with("two VMs: boot "))
        .unwrap_or_else(|| panic!("the second VM was not resumed:\n{}", run.stderr));
    assert!(boot.ok, "the second VM did not boot: {boot:?}");
    eprintln!("{}: {:.0} s ({})", boot.name, boot.secs, boot.note);
    let runs = run.summary.out.join("runs");
    let line = check_round_trip(&runs, "run-twovm", "run-twovm-echo", "can1");
    eprintln!("{line}");
    let (_, echo) = echoed(&runs.join("run-twovm-echo"));
    assert_eq!(
        (echo["rx"].as_str(), echo["tx"].as_str()),
        (Some("can0"), Some("can0"))
    );
}

/// The guest image, built once for the tests that boot their own outer host.
fn guest_initrd() -> PathBuf {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD
        .get_or_init(|| {
            let layout = lab::layout::Layout::from_env().expect("lab layout");
            let kernel = lab::layout::Kernel::from_cache(&layout.cache).expect("guest kernel");
            let dir = root()
                .join("lab/out")
                .join(format!("test-host-lab-image-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            lab::image::build(&layout, &kernel, &dir, None, true)
                .expect("building the guest image")
                .initrd
        })
        .clone()
}

/// A host lab booted without waiting for the guest: the outer host with the profile's VM
/// (its vCPU threads exist from QEMU's start) and the second VM, IRQs spread.
fn boot_lab(kind: &str) -> HostLab {
    let out = root()
        .join("lab/out")
        .join(format!("test-{kind}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    std::env::set_var("RTVIRT_LAB_BIN_DIR", host_tools());
    let opts = FlowOptions {
        profile: "hil".into(),
        kernel: None,
        initrd: Some(guest_initrd()),
        append: String::new(),
        boot_timeout: Duration::from_secs(300),
        kvm_probe: Duration::from_secs(10),
        probe_duration: "5s".into(),
        can_duration: "5s".into(),
        out: Some(out),
        keep_going: false,
        baseline: false,
    };
    let mut lab = HostLab::new(&opts, kind).expect("host lab");
    lab.boot_without_guest(&opts)
        .expect("booting the outer host and its VMs");
    lab
}

/// rt-host in the outer host with its own journal directory.
fn rt_host_argv(lab: &HostLab, verb: &str, journal: &str, extra: &[&str]) -> Vec<String> {
    let r = lab.rt_host();
    let mut a = vec![r.bin.clone(), verb.to_string()];
    if verb != "revert" {
        a.push(r.profile.clone());
    }
    a.extend(["--json".into(), "--journal-dir".into(), journal.into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn outer_sh(lab: &mut HostLab, script: &str) -> String {
    let o = lab.outer.as_mut().expect("outer host");
    let out = o
        .sh(script, Duration::from_secs(300))
        .expect("outer host shell");
    assert_eq!(out.rc, 0, "`{script}` in the outer host:\n{}", out.output);
    out.output
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_kill_9_of_setup_then_revert_restores_every_value() {
    if !common::lab_ready(true) {
        return;
    }
    let _g = testkit::host_lock();
    let mut lab = boot_lab("host-lab-kill");
    let before = lab.snapshot("before").unwrap();
    let plan = {
        let argv = rt_host_argv(&lab, "plan", "/run/rt-host-plan", &[]);
        let o = lab.outer.as_mut().unwrap();
        let out = lab::flow::host::Exec::exec(&mut OuterExec(o), &argv, Duration::from_secs(120))
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).expect("plan --json parses")
    };
    let pending = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "differs" && c["when"] == "now" && c.get("action").is_some())
        .count();
    assert!(pending >= 15, "only {pending} changes to make: {plan}");
    for n in [1, pending / 2, pending - 1] {
        let journal = format!("/run/rt-host-kill-{n}");
        let setup =
            rt_host_argv(&lab, "setup", &journal, &["--pause-after", &n.to_string()]).join(" ");
        // Paused after the n-th change (journal written, change made), then killed.
        outer_sh(
            &mut lab,
            &format!(
                "{setup} > /tmp/k.out 2> /tmp/k.err &\npid=$!\ni=0\nuntil grep -q 'paused after {n} change' /tmp/k.err; do sleep 0.2; i=$((i + 1)); [ $i -lt 600 ] || {{ cat /tmp/k.err; exit 1; }}; done\nkill -9 $pid\nwait $pid; echo killed $?"
            ),
        );
        let half = lab.snapshot(&format!("killed-{n}")).unwrap();
        let copy = lab.out.join(format!("journal-kill-{n}"));
        lab.outer
            .as_mut()
            .unwrap()
            .fetch_dir(&journal, &copy)
            .unwrap();
        let revert = rt_host_argv(&lab, "revert", &journal, &[]).join(" ");
        outer_sh(&mut lab, &revert);
        let after = lab.snapshot(&format!("reverted-{n}")).unwrap();
        let values = lab::hostlab::record::values(
            &copy,
            &Moments {
                before: before.clone(),
                tuned: half,
                after,
            },
        )
        .unwrap();
        assert!(
            values.len() >= n,
            "killed after {n} changes, {} journalled",
            values.len()
        );
        let changed = values
            .iter()
            .filter(|v| v.value.tuned != v.value.before)
            .count();
        assert!(
            changed >= 1,
            "killed after {n}: nothing had changed: {values:#?}"
        );
        let vcpus_absent: Vec<_> = values
            .iter()
            .filter(|v| v.absent && v.target.contains("/KVM\""))
            .collect();
        assert!(vcpus_absent.is_empty(), "{vcpus_absent:#?}");
        let wrong: Vec<_> = values.iter().filter(|v| !v.restored && !v.absent).collect();
        assert!(
            wrong.is_empty(),
            "killed after {n} changes, not restored: {wrong:#?}"
        );
    }
    lab.cleanup();
}

#[test]
#[ignore = "needs root, QEMU and the cached kernels: run lab/test.sh"]
fn host_lab_guest_shut_down_while_tuned_revert_skips_its_threads() {
    if !common::lab_ready(true) {
        return;
    }
    let _g = testkit::host_lock();
    let mut lab = boot_lab("host-lab-vanish");
    let before = lab.snapshot("before").unwrap();
    let journal = "/run/rt-host-vanish";
    let setup = rt_host_argv(&lab, "setup", journal, &[]).join(" ");
    outer_sh(&mut lab, &format!("{setup} > /tmp/s.json"));
    let inner = lab.inner.as_ref().unwrap().pid;
    // The guest's QEMU ends (SIGTERM, as at a host shutdown) while the host is tuned.
    outer_sh(
        &mut lab,
        &format!("kill {inner}; i=0; while kill -0 {inner} 2>/dev/null; do sleep 0.2; i=$((i + 1)); [ $i -lt 150 ] || exit 1; done"),
    );
    let copy = lab.out.join("journal-vanish");
    lab.outer
        .as_mut()
        .unwrap()
        .fetch_dir(journal, &copy)
        .unwrap();
    // In words: `rt-host revert` without --json.
    let mut revert = rt_host_argv(&lab, "revert", journal, &[]);
    revert.retain(|w| w != "--json");
    let out = {
        let o = lab.outer.as_mut().unwrap();
        lab::flow::host::Exec::exec(&mut OuterExec(o), &revert, Duration::from_secs(120)).unwrap()
    };
    let text = out.text();
    assert_eq!(out.rc, Some(0), "revert after the VM vanished:\n{text}");
    for vcpu in ["CPU 0/KVM", "CPU 1/KVM"] {
        let skipped = text
            .lines()
            .filter(|l| l.trim_start().starts_with("skipped") && l.contains(vcpu))
            .count();
        // Its policy, its affinity, its cgroup: each skipped, each saying why.
        assert!(skipped >= 3, "{vcpu} skipped {skipped} times:\n{text}");
    }
    for l in text
        .lines()
        .filter(|l| l.trim_start().starts_with("skipped"))
    {
        assert!(l.contains("(gone: the VM or thread has exited"), "{l}");
    }
    assert!(!text.contains("FAILED"), "{text}");
    let after = lab.snapshot("after").unwrap();
    let (before_snap, after_snap) = (before.clone(), after.clone());
    let values = lab::hostlab::record::values(
        &copy,
        &Moments {
            before: before.clone(),
            tuned: before,
            after,
        },
    )
    .unwrap();
    let gone: Vec<_> = values
        .iter()
        .filter(|v| v.absent && v.value.after == "(gone)")
        .collect();
    assert!(gone.len() >= 4, "the guest's threads: {gone:#?}");
    for v in values.iter().filter(|v| !v.absent) {
        assert!(v.restored, "{v:#?}");
    }
    // The profile's other VM, tuned with it, still runs and is restored.
    let ecu1 = lab.paused.first().expect("the profile's second VM").pid;
    let vcpus = lab::hostlab::record::threads(
        &Moments {
            before: before_snap.clone(),
            tuned: before_snap,
            after: after_snap,
        },
        ecu1,
        |n| n.ends_with("/KVM"),
    )
    .unwrap();
    assert_eq!(vcpus.len(), 1, "{vcpus:#?}");
    assert!(vcpus[0].restored() && !vcpus[0].absent(), "{vcpus:#?}");
    assert!(
        values
            .iter()
            .any(|v| v.target.contains(&format!("tid {}", vcpus[0].tid))),
        "rt-host did not tune ecu1's vCPU: {values:#?}"
    );
    lab.cleanup();
}
