//! `oslat.json`: what `rt-guest oslat` measured. A busy loop per CPU reads
//! `CLOCK_MONOTONIC` back to back (DPDK-style, as rt-tests' oslat); every gap between two
//! reads is a sample. A gap far above the loop's own cost is time the CPU spent elsewhere
//! (an interrupt, a preemption, the host descheduling the vCPU, SMM).

use serde::{Deserialize, Serialize};

use crate::hist::HistSummary;

/// Record file name.
pub const OSLAT: &str = "oslat.json";

/// How the loops ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OslatSettings {
    /// Policy name (`fifo`, `rr`, `other`).
    pub policy: String,
    /// Priority.
    pub priority: u32,
    /// Planned duration in seconds.
    pub duration_s: f64,
    /// One-microsecond buckets of the oslat-format histogram (the last one holds the
    /// overflows).
    pub buckets: u32,
    /// Memory was locked.
    pub mlock: bool,
    /// Clock read in the loop.
    pub clock: String,
}

/// One CPU's loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OslatThread {
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Policy in force (read back).
    pub policy: String,
    /// Priority in force.
    pub priority: u32,
    /// Gaps measured (clock reads minus one).
    pub samples: u64,
    /// Gaps at or beyond the last oslat bucket (counted in it, as oslat does).
    pub overflows: u64,
    /// Gaps above the HDR histogram's range: counted, never wrapped (the max shows them).
    pub out_of_range: u64,
    /// Wall time (RFC 3339) of the largest gap.
    pub max_at: Option<String>,
    /// Gap distribution, ns (min, mean and max exact; percentiles never above the max).
    pub gaps: HistSummary,
}

/// `oslat.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OslatRecord {
    /// Settings.
    pub settings: OslatSettings,
    /// Per CPU.
    pub threads: Vec<OslatThread>,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// True when interrupted (or a checkpoint written while the run went on).
    pub partial: bool,
}
