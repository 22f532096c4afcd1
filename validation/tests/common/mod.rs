//! What the integration tests of `validation` share: run directories built here with
//! real HDR histograms, and running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use record::hist::{self, HistSummary};
use record::{
    self, CanMessageRecord, CanRecord, CheckItem, CheckReport, CheckStatus, ProbeRecord,
    ProbeSettings, ProbeThread, RunDir, SelftestCheck, SelftestSummary,
};
use rt_sys::kernel::{KernelFacts, Virtualization};

pub const BIN: &str = env!("CARGO_BIN_EXE_validation");

pub fn validation(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run validation")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn hist_of(values_us: &[(u64, u64)]) -> HistSummary {
    let mut h = hist::new_auto();
    for (us, n) in values_us {
        h.record_n(us * 1000, *n).unwrap();
    }
    HistSummary::from_hist(&h)
}

/// How a fixture run looks.
#[derive(Clone, Copy)]
pub struct Fixture {
    pub virt: Virtualization,
    pub preempt_rt: bool,
    pub host_ok: bool,
    /// Worst probe latency (us); 59 000 samples at 6 us, 990 at 11 us, 10 at this.
    pub probe_max_us: u64,
    /// Lost frames of 0x0C0.
    pub lost: u64,
}

pub const GOOD: Fixture = Fixture {
    virt: Virtualization::Kvm,
    preempt_rt: true,
    host_ok: true,
    probe_max_us: 31,
    lost: 0,
};

/// `rt-host check --json` of a bare-metal PREEMPT_RT host, all ok or one item refused.
pub fn host_check(ok: bool) -> CheckReport {
    let item = |name: &str, status| CheckItem {
        name: name.into(),
        target: Some("/sys/module/kvm/parameters/halt_poll_ns".into()),
        status,
        current: "200000".into(),
        desired: Some("200000".into()),
        detail: None,
    };
    CheckReport {
        tool: "rt-host check".into(),
        profile: Some("lab".into()),
        kernel: Some(KernelFacts {
            release: "6.1.0-41-rt-amd64".into(),
            version: "#1 SMP PREEMPT_RT Debian 6.1.158-1".into(),
            preempt_rt: true,
            cmdline: "isolcpus=1-3".into(),
            virtualization: Virtualization::None,
            hypervisor_signature: None,
            cpu_model: "host cpu".into(),
            online_cpus: "0-3".into(),
            nested_capable: false,
            cgroup_version: 2,
        }),
        items: vec![
            item(
                "halt-poll",
                if ok {
                    CheckStatus::Ok
                } else {
                    CheckStatus::NotPermitted
                },
            ),
            item("nested-virtualization", CheckStatus::Ok),
        ],
    }
}

pub fn selftest() -> SelftestSummary {
    SelftestSummary {
        passed: true,
        cpu: 1,
        interval_us: 1000,
        delay_us: 400.0,
        every: 10,
        injected: 290,
        detected: 290,
        max_us: 455.0,
        baseline_max_us: 40.0,
        missed_periods: 0,
        checks: vec![SelftestCheck {
            name: "every delay detected".into(),
            passed: true,
            detail: "290 of 290".into(),
        }],
    }
}

pub fn make_run(dir: &Path, name: &str, fx: Fixture) -> PathBuf {
    let path = dir.join(name);
    let lab = profiles::BUNDLED
        .iter()
        .find(|(n, _)| *n == "lab")
        .unwrap()
        .1;
    let mut rd = RunDir::open_or_create(&path).unwrap();
    rd.begin_tool("rt-guest probe", "0.1.0", "0123abcd", vec!["probe".into()])
        .unwrap();
    rd.set_profile("lab", "bundled profile \"lab\"", lab)
        .unwrap();
    {
        let env = &mut rd.manifest_mut().environment;
        env.hostname = format!("{name}-guest");
        env.kernel = Some(KernelFacts {
            release: "6.1.0-41-rt-amd64".into(),
            version: if fx.preempt_rt {
                "#1 SMP PREEMPT_RT Debian 6.1.158-1".into()
            } else {
                "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1".into()
            },
            preempt_rt: fx.preempt_rt,
            cmdline: "console=ttyS0 isolcpus=1 nohz_full=1".into(),
            virtualization: fx.virt,
            hypervisor_signature: Some(
                if fx.virt == Virtualization::Tcg {
                    "TCGTCGTCGTCG"
                } else {
                    "KVMKVMKVM"
                }
                .into(),
            ),
            cpu_model: "QEMU Virtual CPU version 2.5+".into(),
            online_cpus: "0-1".into(),
            nested_capable: false,
            cgroup_version: 2,
        });
        env.host_check = Some(host_check(fx.host_ok));
        env.selftest = Some(selftest());
    }
    rd.save().unwrap();
    let latency = hist_of(&[(6, 59_000), (11, 990), (fx.probe_max_us, 10)]);
    let probe = ProbeRecord {
        settings: ProbeSettings {
            interval_ns: 1_000_000,
            policy: "fifo".into(),
            priority: 95,
            duration_s: Some(60.0),
            loops: None,
            mlock: true,
            dma_latency_held: true,
            clock: "CLOCK_MONOTONIC".into(),
        },
        threads: vec![ProbeThread {
            cpu: 1,
            // Distinct runs hold distinct data: here, a tid of each run's own.
            tid: name.bytes().map(u32::from).sum(),
            policy: "fifo".into(),
            priority: 95,
            samples: latency.samples,
            missed_periods: 0,
            out_of_range: 0,
            max_at_cycle: 1234,
            max_at: Some("2026-11-26T05:00:01Z".into()),
            worst: vec![],
            latency,
        }],
        elapsed_s: 60.0,
        partial: false,
    };
    rd.write_json(record::PROBE, &probe).unwrap();
    rd.end_tool(None).unwrap();

    let mut rd = RunDir::open_or_create(&path).unwrap();
    rd.begin_tool(
        "can-sim run",
        "0.1.0",
        "0123abcd",
        vec!["run".into(), "lab".into()],
    )
    .unwrap();
    let msg = |id: u32, name: &str, period_us: u64, lat: &[(u64, u64)], wcrt: f64| {
        let latency = hist_of(lat);
        CanMessageRecord {
            ecu: "engine".into(),
            name: name.into(),
            id,
            extended: id > 0x7FF,
            kind: "classic".into(),
            len: 8,
            period_us,
            deadline_us: 5000,
            sent: latency.samples,
            received: latency.samples,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            deadline_misses: 0,
            jitter: hist_of(&[(20, latency.samples)]),
            latency,
            frame_time_us: 270.0,
            wcrt_us: Some(wcrt),
            sporadic: false,
            signals: 0,
            instance_from: "payload".into(),
            e2e: None,
        }
    };
    let mut m0 = msg(
        0x0C0,
        "EngineSpeed",
        10_000,
        &[(320, 5990), (610, 10)],
        1100.0,
    );
    m0.lost = fx.lost;
    m0.sent += fx.lost;
    let can = CanRecord {
        tx: "can0".into(),
        rx: "can1".into(),
        bitrate: 500_000,
        data_bitrate: None,
        paced: true,
        elapsed_s: 60.0,
        bus_load_analytic_pct: 14.2,
        bus_load_measured_pct: 13.9,
        tx_enobufs: name.bytes().map(u64::from).sum(),
        bus_errors: vec![],
        timestamp_source: "kernel".into(),
        messages: vec![
            m0,
            msg(0x1A0, "EngineTorque", 20_000, &[(330, 3000)], 1650.0),
            // Measured above its WCRT: a deviation.
            msg(
                0x0F0,
                "WheelSpeeds",
                10_000,
                &[(300, 5999), (1500, 1)],
                1400.0,
            ),
        ],
        partial: false,
        role: "both".into(),
        time_base: record::TimeBase::default(),
    };
    rd.write_json(record::CAN, &can).unwrap();
    // Every run's log differs (its own timestamps): here, the run's name in a comment.
    let log = format!("(1764133201.000100) can1 0C0#0001020304050607\n# {name}\n");
    rd.write_file(record::CAN_LOG, log.as_bytes()).unwrap();
    rd.end_tool(None).unwrap();
    path
}

pub fn export(run: &Path, format: &str, out: &Path) -> Output {
    validation(&[
        "report",
        "export",
        run.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Run `cmd` with a deadline, killing it (by its pid) when it overruns.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return None,
        }
    }
}
