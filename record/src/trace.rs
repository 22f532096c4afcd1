//! Records of the kernel's latency tracers: `timerlat.json` (the IRQ and thread parts of
//! the timerlat tracer's wakeup latency, per CPU, recorded beside a probe run, and the
//! trace around a bound exceedance kept as `timerlat-trace.txt`) and `hwlat.json` (the
//! hwlat detector's samples, written by `rt-host hwlat`).

use serde::{Deserialize, Serialize};

use crate::hist::HistSummary;

/// timerlat record file name.
pub const TIMERLAT: &str = "timerlat.json";
/// The trace saved around a bound exceedance.
pub const TIMERLAT_TRACE: &str = "timerlat-trace.txt";
/// hwlat record file name.
pub const HWLAT: &str = "hwlat.json";

/// One CPU's timerlat latencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerlatCpu {
    /// CPU.
    pub cpu: u32,
    /// Timer IRQ latency (how late the interrupt ran), ns.
    pub irq: HistSummary,
    /// timerlat thread latency (how late the thread ran; includes the IRQ part), ns.
    pub thread: HistSummary,
    /// Activations whose IRQ and thread latencies were both read (same activation id).
    #[serde(default)]
    pub paired: u64,
    /// Paired activations whose thread latency was below their IRQ latency (the kernel
    /// measures the thread part from the same timer expiry, so 0 unless events were lost
    /// or misread).
    #[serde(default)]
    pub thread_below_irq: u64,
}

/// `timerlat.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerlatRecord {
    /// timerlat period, us (`osnoise/timerlat_period_us`).
    pub period_us: u64,
    /// Per CPU.
    pub cpus: Vec<TimerlatCpu>,
    /// Events parsed.
    pub events: u64,
    /// Trace lines that were not timerlat events (markers, other events).
    pub other_lines: u64,
    /// Thread latency (us) above which the trace around it was saved.
    pub save_above_us: Option<u64>,
    /// The saved trace file in the run (hashed in the manifest), when a latency exceeded
    /// `save_above_us`.
    pub trace_file: Option<String>,
    /// True when the run was interrupted.
    pub partial: bool,
}

/// One hwlat sample: the parser's type, kept as it is.
pub use rt_sys::tracefs::HwlatSample;

/// `hwlat.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwlatRecord {
    /// Threshold, us (`tracing_thresh`).
    pub threshold_us: u64,
    /// Spin time per window, us.
    pub width_us: u64,
    /// Window, us.
    pub window_us: u64,
    /// Measured time, s.
    pub duration_s: f64,
    /// Samples reported (every one is above the threshold).
    pub total_samples: u64,
    /// The largest inner or outer gap, us (0: none above the threshold).
    pub max_us: u64,
    /// The samples (the first 10000).
    pub samples: Vec<HwlatSample>,
    /// True when interrupted.
    pub partial: bool,
}
