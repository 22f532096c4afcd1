//! The kernel's latency tracers for real, in the lab guest (Debian's PREEMPT_RT kernel has
//! timerlat and hwlat; this machine's kernel has neither): one boot runs `rt-guest probe
//! --timerlat` with a bound TCG exceeds, and `rt-host hwlat` (built static and put in the
//! guest's 9p share), each between two readings of the tracefs files they change. Needs
//! root and the lab: run `bash lab/test.sh`, or `cargo test -p lab --test tracers --
//! --include-ignored`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

#[allow(dead_code)] // assert_flow_ok: the flows' tests use it
mod common;

use common::{host_tools, root};

/// The bound of the timerlat run, us: far below what TCG reaches (p99 in the ms).
const BOUND_US: u64 = 300;
/// The probe's period, us (the timerlat tracer's too).
const PERIOD_US: u64 = 1000;
/// The probe's run, s.
const PROBE_S: u64 = 5;
/// hwlat settings: window below the kernel's default width (500 ms), so writing them in
/// the wrong order is refused.
const HW_THRESHOLD_US: u64 = 10;
const HW_WIDTH_US: u64 = 200_000;
const HW_WINDOW_US: u64 = 400_000;
const HW_S: u64 = 5;
/// What the guest's tracefs is set to before the runs: not the tools' values, so a file
/// they left changed shows.
const BEFORE_THRESH: &str = "3";

/// The tracefs files the tools change, printed as `TAG name=value ...` lines.
const SHOW: &str = r#"T=/sys/kernel/debug/tracing
show() {
    printf '%s' "$1"
    for f in current_tracer tracing_thresh tracing_on hwlat_detector/width hwlat_detector/window osnoise/cpus osnoise/timerlat_period_us; do
        printf ' %s=%s' "$f" "$(cat $T/$f | tr -d '\n')"
    done
    echo
}"#;

/// What the boot left.
struct Boot {
    /// Each command's exit code and output.
    exec: Vec<(i32, String)>,
    /// The boot's share (the runs came out into `runs/`).
    share: PathBuf,
    secs: f64,
}

/// `TAG k=v ...` of a command's output, as a map.
fn state(output: &str, tag: &str) -> BTreeMap<String, String> {
    let line = output
        .lines()
        .find(|l| l.starts_with(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{output}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `KEY=value` line of a command's output.
fn value<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{output}"))
}

fn scripts() -> [String; 2] {
    let timerlat = format!(
        "{SHOW}\nshow BEFORE\n\
         rt-guest probe --timerlat -a 1 -i {PERIOD_US} -D {PROBE_S}s -q --max-us {BOUND_US} --out /tmp/tl\n\
         echo probe_rc=$?\n\
         show AFTER\n\
         mkdir -p /lab/runs && cp -a /tmp/tl /lab/runs/tl && echo copied=yes"
    );
    let hwlat = format!(
        "{SHOW}\necho {BEFORE_THRESH} > $T/tracing_thresh\nshow BEFORE\n\
         echo start_s=$(date +%s)\n\
         /lab/bin/rt-host hwlat --duration {HW_S}s --threshold-us {HW_THRESHOLD_US} \
         --width-us {HW_WIDTH_US} --window-us {HW_WINDOW_US} --out /tmp/hw --json > /tmp/hw.json\n\
         echo hwlat_rc=$?\n\
         echo end_s=$(date +%s)\n\
         show AFTER\n\
         mkdir -p /lab/runs && cp -a /tmp/hw /lab/runs/hw && echo copied=yes"
    );
    [timerlat, hwlat]
}

/// The static binaries: the image's, then rt-host, which is not in the image (the guest
/// gets it through the share). Returns rt-host.
fn static_rt_host() -> PathBuf {
    let layout = lab::layout::Layout::from_env().expect("the lab layout");
    lab::image::build_static(&layout, lab::image::GUEST_BINARIES).expect("static guest binaries");
    let built = lab::image::build_static(&layout, &["rt-host"]).expect("static rt-host");
    built
        .into_iter()
        .find(|(n, _)| n == "rt-host")
        .expect("the static build made rt-host")
        .1
}

fn boot(rt_host: &Path) -> Boot {
    let out = root()
        .join("lab/out")
        .join(format!("test-tracers-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let share = out.join("share");
    fs::create_dir_all(share.join("bin")).unwrap();
    fs::copy(rt_host, share.join("bin/rt-host")).unwrap();
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"));
    cmd.args(["boot", "--json", "--out"]).arg(&out);
    for s in scripts() {
        cmd.args(["--exec", &s]);
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running rtvirt-lab boot");
    let secs = start.elapsed().as_secs_f64();
    // The image and the static rt-host are most of the directory's size (16 and 8 MB);
    // the runs, the commands' output, the console and QEMU's log stay for a failure's
    // diagnosis.
    let _ = fs::remove_file(out.join("initrd.gz"));
    let _ = fs::remove_dir_all(share.join("bin"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "rtvirt-lab boot ({secs:.0} s, {}):\n{stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("boot --json printed no JSON ({e}):\n{stderr}"));
    let exec = report["exec"]
        .as_array()
        .expect("the boot report lists the commands")
        .iter()
        .map(|c| {
            (
                i32::try_from(c["rc"].as_i64().unwrap()).unwrap(),
                c["output"].as_str().unwrap().to_string(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(exec.len(), 2, "both commands ran:\n{stderr}");
    Boot { exec, share, secs }
}

/// The one boot, shared by the tests here, under the host lock.
fn booted() -> Option<&'static Boot> {
    static BOOT: OnceLock<Boot> = OnceLock::new();
    if !common::lab_ready(false) {
        return None;
    }
    Some(BOOT.get_or_init(|| {
        // What the boot needs, built before the lock is taken: the release validation
        // (`validation verify`) and the static binaries.
        host_tools();
        let rt_host = static_rt_host();
        let _g = testkit::host_lock();
        boot(&rt_host)
    }))
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn verify(run: &Path) -> (bool, String) {
    let o = Command::new(host_tools().join("validation"))
        .arg("verify")
        .arg(run)
        .output()
        .expect("running validation verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_probe_timerlat_splits_irq_and_thread_and_keeps_the_trace_above_the_bound() {
    let Some(b) = booted() else { return };
    eprintln!("the tracers' boot took {:.0} s", b.secs);
    let (rc, out) = &b.exec[0];
    assert_eq!(*rc, 0, "the timerlat script failed:\n{out}");
    // Exit 1: the bound was exceeded (TCG), a recorded result.
    assert_eq!(value(out, "probe_rc"), "1", "{out}");
    assert_eq!(value(out, "copied"), "yes", "{out}");
    let (before, after) = (state(out, "BEFORE"), state(out, "AFTER"));
    assert_eq!(before, after, "the probe left tracefs changed");
    assert_eq!(before["current_tracer"], "nop");

    let run = b.share.join("runs/tl");
    let probe: record::ProbeRecord =
        serde_json::from_value(read_json(&run.join(record::PROBE))).unwrap();
    let tl: record::TimerlatRecord =
        serde_json::from_value(read_json(&run.join(record::TIMERLAT))).unwrap();
    assert_eq!(tl.period_us, PERIOD_US);
    assert!(!tl.partial);
    let [c] = tl.cpus.as_slice() else {
        panic!("one measured CPU: {:?}", tl.cpus)
    };
    assert_eq!(c.cpu, 1);
    let [p] = probe.threads.as_slice() else {
        panic!("one probe thread")
    };
    // The tracer's timer and the probe's ran at one period for about the same time:
    // their counts agree within a fifth (the tracer starts before the probe and stops
    // after it, and under TCG each misses periods of its own; 4946 against 4615 seen).
    let near = |n: u64| n.abs_diff(p.samples) * 5 <= p.samples;
    assert!(
        near(c.irq.samples) && near(c.thread.samples),
        "timerlat irq {} / thread {} samples vs the probe's {}",
        c.irq.samples,
        c.thread.samples,
        p.samples
    );
    assert_eq!(
        tl.events,
        c.irq.samples + c.thread.samples,
        "every event is counted once"
    );
    // The kernel's thread latency includes the IRQ latency of the same activation: every
    // activation whose two events were read has thread >= irq, nearly every one was
    // paired, and so the thread distribution lies above the IRQ one at every quantile
    // (within the histograms' precision).
    assert_eq!(c.thread_below_irq, 0, "{c:?}");
    assert!(
        c.paired * 100 >= c.thread.samples * 99,
        "{} of {} thread events paired with their IRQ event",
        c.paired,
        c.thread.samples
    );
    let irq = c.irq.histogram().unwrap();
    let thread = c.thread.histogram().unwrap();
    for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
        let (i, t) = (irq.value_at_quantile(q), thread.value_at_quantile(q));
        assert!(
            t >= irq.lowest_equivalent(i),
            "quantile {q}: thread {t} ns below irq {i} ns"
        );
    }
    assert!(c.thread.max_ns >= c.irq.max_ns);
    assert!(c.thread.max_ns > BOUND_US * 1000, "TCG exceeds the bound");

    // The trace around the exceedance: a file of the run, hashed in the manifest, the
    // first thread latency above the bound in it, and verified by validation.
    assert_eq!(tl.save_above_us, Some(BOUND_US));
    assert_eq!(tl.trace_file.as_deref(), Some(record::TIMERLAT_TRACE));
    let trace_path = run.join(record::TIMERLAT_TRACE);
    let trace = fs::read(&trace_path).unwrap();
    let manifest = read_json(&run.join(record::MANIFEST));
    assert_eq!(
        manifest["files"][record::TIMERLAT_TRACE]["sha256"].as_str(),
        Some(record::sha256_hex(&trace).as_str()),
    );
    let text = String::from_utf8_lossy(&trace);
    let above = text
        .lines()
        .filter_map(rt_sys::tracefs::parse_timerlat)
        .find(|e| e.context == rt_sys::tracefs::Context::Thread && e.latency_ns > BOUND_US * 1000);
    assert!(
        above.is_some(),
        "no thread latency above {BOUND_US} us in the saved trace"
    );
    let events = text
        .lines()
        .filter_map(rt_sys::tracefs::parse_timerlat)
        .count();
    assert!(events > 100, "{events} timerlat events in the saved trace");

    let (ok, v) = verify(&run);
    assert!(ok, "validation verify refused the timerlat run:\n{v}");
    // A changed byte in the saved trace is found.
    let copy = tempfile::tempdir().unwrap();
    let tampered = copy.path().join("tl");
    fs::create_dir(&tampered).unwrap();
    for e in fs::read_dir(&run).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), tampered.join(e.file_name())).unwrap();
        }
    }
    let mut bad = trace.clone();
    bad[trace.len() / 2] ^= 1;
    fs::write(tampered.join(record::TIMERLAT_TRACE), bad).unwrap();
    let (ok, v) = verify(&tampered);
    assert!(
        !ok && v.contains(record::TIMERLAT_TRACE),
        "a tampered trace passed:\n{v}"
    );
}

#[test]
#[ignore = "needs root and the QEMU lab: run lab/test.sh"]
fn lab_rt_host_hwlat_runs_the_real_detector_and_puts_tracefs_back() {
    let Some(b) = booted() else { return };
    let (rc, out) = &b.exec[1];
    assert_eq!(*rc, 0, "the hwlat script failed:\n{out}");
    // Exit 1: gaps above the threshold (TCG has plenty).
    assert_eq!(value(out, "hwlat_rc"), "1", "{out}");
    let (before, after) = (state(out, "BEFORE"), state(out, "AFTER"));
    assert_eq!(before["tracing_thresh"], BEFORE_THRESH);
    assert_eq!(before, after, "rt-host hwlat left tracefs changed");

    let run = b.share.join("runs/hw");
    let hw: record::HwlatRecord =
        serde_json::from_value(read_json(&run.join(record::HWLAT))).unwrap();
    assert_eq!(
        (hw.threshold_us, hw.width_us, hw.window_us),
        (HW_THRESHOLD_US, HW_WIDTH_US, HW_WINDOW_US)
    );
    assert!(!hw.partial);
    let secs = HW_S as f64;
    assert!(
        (secs..secs + 2.0).contains(&hw.duration_s),
        "{}",
        hw.duration_s
    );
    // One sample per window at most: more than the kernel's default window (1 s) allows
    // shows the window was applied.
    let us = u64::try_from(std::time::Duration::from_secs_f64(hw.duration_s).as_micros()).unwrap();
    let per_window = us.div_ceil(HW_WINDOW_US) + 1;
    let per_default = us.div_ceil(1_000_000) + 1;
    assert!(
        hw.total_samples > per_default && hw.total_samples <= per_window,
        "{} samples in {:.1} s (window {} us)",
        hw.total_samples,
        hw.duration_s,
        HW_WINDOW_US
    );
    assert_eq!(hw.samples.len() as u64, hw.total_samples);
    // The kernel numbers its samples from 1 on each start, stamps them with the wall
    // clock and reports only gaps above the threshold.
    let (start, end): (u64, u64) = (
        value(out, "start_s").parse().unwrap(),
        value(out, "end_s").parse().unwrap(),
    );
    for (i, s) in hw.samples.iter().enumerate() {
        assert_eq!(s.seq, i as u64 + 1, "{s:?}");
        assert!(s.cpu < 2, "{s:?}");
        assert!(s.inner_us.max(s.outer_us) > HW_THRESHOLD_US, "{s:?}");
        assert!(s.count.is_some_and(|c| c >= 1), "{s:?}");
        let ts: u64 = s.ts.split('.').next().unwrap().parse().unwrap();
        assert!((start..=end).contains(&ts), "{s:?} outside {start}..{end}");
    }
    let max = hw.samples.iter().map(|s| s.inner_us.max(s.outer_us)).max();
    assert_eq!(Some(hw.max_us), max);
    let (ok, v) = verify(&run);
    assert!(ok, "validation verify refused the hwlat run:\n{v}");
}
