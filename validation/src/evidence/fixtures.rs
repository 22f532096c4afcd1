//! Made-up runs for the unit tests of `evidence`, `report` and `merge` (test builds only).

use std::collections::BTreeMap;
use std::path::PathBuf;

use profiles::{Asil, Metric, Requirement};
use record::hist::{self, HistSummary};
use record::hosttrace::{ClockMap, Task, VcpuThread};
use record::{
    CanMessageRecord, CanRecord, CheckItem, CheckReport, CheckStatus, Environment, HostEvent,
    HostTraceRecord, Manifest, ProbeRecord, ProbeSettings, ProbeThread, SelftestCheck,
    SelftestSummary, TimeBase, ToolRun,
};
use rt_sys::kernel::{KernelFacts, Virtualization};

use super::{metrics, EvalOptions, RequirementResult, RunData};

pub(crate) fn facts(virt: Virtualization, rt: bool) -> KernelFacts {
    KernelFacts {
        release: "6.1.0-rt-amd64".into(),
        version: if rt { "#1 SMP PREEMPT_RT" } else { "#1 SMP" }.into(),
        preempt_rt: rt,
        cmdline: "isolcpus=1".into(),
        virtualization: virt,
        hypervisor_signature: None,
        cpu_model: "test cpu".into(),
        online_cpus: "0-1".into(),
        nested_capable: false,
        cgroup_version: 2,
    }
}

pub(crate) fn item(name: &str, status: CheckStatus) -> CheckItem {
    CheckItem {
        name: name.into(),
        target: None,
        status,
        current: "x".into(),
        desired: None,
        detail: None,
    }
}

/// An all-ok `rt-host check` of a host with these kernel facts.
pub(crate) fn host_check(virt: Virtualization, rt: bool) -> CheckReport {
    CheckReport {
        tool: "rt-host check".into(),
        profile: Some("lab".into()),
        kernel: Some(facts(virt, rt)),
        items: vec![item("halt-poll", CheckStatus::Ok)],
    }
}

pub(crate) fn selftest(passed: bool) -> SelftestSummary {
    SelftestSummary {
        passed,
        cpu: 1,
        interval_us: 1000,
        delay_us: 200.0,
        every: 10,
        injected: 100,
        detected: if passed { 100 } else { 0 },
        max_us: 231.5,
        baseline_max_us: 20.0,
        missed_periods: 0,
        checks: vec![SelftestCheck {
            name: "every delay detected".into(),
            passed,
            detail: "100 of 100".into(),
        }],
    }
}

pub(crate) fn good_env() -> Environment {
    let mut e = Environment {
        hostname: "rig".into(),
        kernel: Some(facts(Virtualization::Kvm, true)),
        host_check: Some(host_check(Virtualization::None, true)),
        selftest: Some(selftest(true)),
        ..Environment::default()
    };
    e.accelerator = e.derived_accelerator();
    e
}

pub(crate) fn hist_of(values_us: &[(u64, u64)]) -> HistSummary {
    let mut h = hist::new_auto();
    for (us, count) in values_us {
        h.record_n(us * 1000, *count).unwrap();
    }
    HistSummary::from_hist(&h)
}

pub(crate) fn probe(values_us: &[(u64, u64)], missed: u64) -> ProbeRecord {
    let latency = hist_of(values_us);
    ProbeRecord {
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
            tid: 100,
            policy: "fifo".into(),
            priority: 95,
            samples: latency.samples,
            missed_periods: missed,
            out_of_range: 0,
            max_at_cycle: 7,
            max_at: None,
            worst: vec![],
            latency,
        }],
        elapsed_s: 60.0,
        partial: false,
    }
}

pub(crate) fn can_msg(id: u32, lat_us: &[(u64, u64)], wcrt: Option<f64>) -> CanMessageRecord {
    let latency = hist_of(lat_us);
    CanMessageRecord {
        ecu: "engine".into(),
        name: format!("Msg{id:X}"),
        id,
        extended: false,
        kind: "classic".into(),
        len: 8,
        period_us: 10_000,
        deadline_us: 2000,
        sent: latency.samples,
        received: latency.samples,
        lost: 0,
        duplicates: 0,
        reordered: 0,
        deadline_misses: 0,
        jitter: hist_of(&[(5, latency.samples)]),
        latency,
        frame_time_us: 270.0,
        wcrt_us: wcrt,
        sporadic: false,
        signals: 0,
        instance_from: "payload".into(),
        e2e: None,
    }
}

pub(crate) fn can(msgs: Vec<CanMessageRecord>) -> CanRecord {
    CanRecord {
        tx: "can0".into(),
        rx: "can1".into(),
        bitrate: 500_000,
        data_bitrate: None,
        paced: true,
        elapsed_s: 10.0,
        bus_load_analytic_pct: 20.0,
        bus_load_measured_pct: 18.0,
        tx_enobufs: 0,
        bus_errors: vec![],
        timestamp_source: "kernel".into(),
        messages: msgs,
        partial: false,
        role: "both".into(),
        time_base: record::TimeBase::default(),
    }
}

pub(crate) fn tool(name: &str) -> ToolRun {
    ToolRun {
        tool: name.into(),
        version: "0.1.0".into(),
        git_sha: "x".into(),
        args: vec![],
        start: "2026-11-26T00:00:01Z".into(),
        end: Some("2026-11-26T00:01:01Z".into()),
        partial: false,
        partial_reason: None,
    }
}

pub(crate) fn run(env: Environment, probe: Option<ProbeRecord>, can: Option<CanRecord>) -> RunData {
    let mut files = BTreeMap::new();
    for name in [record::PROBE, record::CAN] {
        files.insert(
            name.to_string(),
            record::FileEntry {
                sha256: "ab".repeat(32),
                bytes: 1,
                written_by: "test".into(),
            },
        );
    }
    let mut manifest = Manifest::new(
        "run-test".into(),
        "2026-11-26T00:00:00Z".into(),
        "rig".into(),
    );
    manifest.tools = vec![tool("rt-guest probe")];
    manifest.environment = env;
    manifest.files = files;
    RunData {
        path: PathBuf::from("/runs/run-test"),
        manifest,
        manifest_sha256: "cd".repeat(32),
        probe,
        can,
        oslat: None,
        hwlat: None,
        host_trace: None,
        sources: vec![],
    }
}

pub(crate) fn oslat(cpu: u32, gaps_us: &[(u64, u64)]) -> record::OslatRecord {
    let gaps = hist_of(gaps_us);
    record::OslatRecord {
        settings: record::OslatSettings {
            policy: "fifo".into(),
            priority: 1,
            duration_s: 300.0,
            buckets: 32,
            mlock: true,
            clock: "CLOCK_MONOTONIC".into(),
        },
        threads: vec![record::OslatThread {
            cpu,
            tid: 101,
            policy: "fifo".into(),
            priority: 1,
            samples: gaps.samples,
            overflows: 0,
            out_of_range: 0,
            max_at: None,
            gaps,
        }],
        elapsed_s: 300.0,
        partial: false,
    }
}

pub(crate) fn req(
    id: &str,
    metric: Metric,
    bound_us: Option<f64>,
    bound: Option<f64>,
) -> Requirement {
    Requirement {
        id: id.into(),
        asil: Asil::D,
        text: format!("{id} text"),
        metric,
        bound_us,
        bound,
    }
}

pub(crate) fn max_latency(bound: f64) -> Requirement {
    req(
        "R-MAX",
        Metric::ProbeLatency {
            percentile: 100.0,
            cpu: None,
        },
        Some(bound),
        None,
    )
}

pub(crate) fn eval(r: &Requirement, runs: &[RunData]) -> RequirementResult {
    metrics::evaluate_one(r, runs, &EvalOptions::default()).unwrap()
}

fn host_sw(t: u64, prev: u32, state: &str, next: u32) -> HostEvent {
    HostEvent::Switch {
        t_ns: t,
        cpu: 1,
        prev,
        prev_prio: 120,
        prev_state: state.into(),
        next,
        next_prio: 120,
    }
}

/// Host time 1_000 s + `us` us.
pub(crate) fn at(us: u64) -> u64 {
    1_000_000_000_000 + us * 1000
}

/// vCPU 1 (tid 50) on host CPU 1: preempted by a kworker (77) for 30 us at +100 us,
/// halts at +500 us, woken at +600 us, runs at +640 us after `stress` (88) let go.
pub(crate) fn host_trace(offset_ns: i64, method: &str) -> HostTraceRecord {
    let events = vec![
        host_sw(at(10), 0, "R", 50),
        host_sw(at(100), 50, "R+", 77),
        host_sw(at(130), 77, "S", 50),
        host_sw(at(500), 50, "S", 0),
        host_sw(at(550), 0, "R", 88),
        HostEvent::Wakeup {
            t_ns: at(600),
            cpu: 0,
            pid: 50,
            target_cpu: 1,
        },
        host_sw(at(640), 88, "R", 50),
    ];
    HostTraceRecord {
        vm_pid: 40,
        vm_found_by: "--vm-pid".into(),
        vcpus: vec![VcpuThread {
            vcpu: 1,
            tid: 50,
            name: "CPU 1/KVM".into(),
            cpus_allowed: "1".into(),
        }],
        cpus: Some("1".into()),
        place: "instances/rtvirt-trace-1".into(),
        buffer_kb: 4096,
        clock: ClockMap::from_points("mono", &[(0, 0, 0)]).unwrap(),
        guest_clock: TimeBase {
            method: method.into(),
            offset_ns,
            uncertainty_ns: 2_000,
            rtt: None,
        },
        start_ns: at(0),
        end_ns: at(10_000),
        tasks: vec![
            Task {
                pid: 77,
                comm: "kworker/1:0".into(),
            },
            Task {
                pid: 88,
                comm: "stress".into(),
            },
        ],
        events_seen: events.len() as u64,
        events,
        max_events: 100,
        lost_events: 0,
        summary: vec![],
        partial: false,
        keep: None,
        slices: vec![],
        windows: vec![],
        reader: None,
    }
}
