//! `record`: the run-record format every rtvirt tool writes and reads.
//!
//! - [`rundir`]: the run directory ([`RunDir`]): safe writes, verified reads;
//! - [`manifest`]: `manifest.json` ([`Manifest`], format [`FORMAT`]) with the tool runs,
//!   the profile copy, the typed [`Environment`] and the sha256 of every file;
//! - [`check`]: what the checkers report ([`CheckReport`], one [`CheckStatus`]), the probe
//!   self-test ([`SelftestSummary`]) and the [`Accelerator`] the run was measured on;
//! - [`oslat`]: the busy-loop record (`oslat.json`);
//! - [`records`]: `probe.json` and `can.json` and the consistency checks a reader applies;
//! - [`trace`]: the kernel tracers' records (`timerlat.json`, `hwlat.json`);
//! - [`hosttrace`]: the host's scheduling of the vCPU threads (`host-trace.json`);
//! - [`clocksync`]: the offset between a guest's and its host's clocks, measured by an
//!   exchange of files through a shared directory;
//! - [`hist`]: HDR histograms in records (HdrHistogram V2 compressed, base64), their safe
//!   decoding, the percentile definition and the summaries;
//! - [`fsafe`]: reading a run without leaving it (no symlinks, regular files, size caps).
//!
//! Producers (rt-guest, rt-host, can-sim, the lab) and the consumer (validation) share
//! these typed values; nothing crosses between tools as guessed JSON keys or prose.

pub mod check;
pub mod clocksync;
pub mod error;
pub mod fsafe;
pub mod hist;
pub mod hosttrace;
pub mod manifest;
pub mod oslat;
pub mod records;
pub mod rundir;
pub mod trace;

pub use check::*;
pub use error::RecordError;
pub use hosttrace::{HostEvent, HostTraceRecord, HOST_TRACE};
pub use manifest::*;
pub use oslat::{OslatRecord, OslatSettings, OslatThread, OSLAT};
pub use records::*;
pub use rundir::*;
pub use trace::{
    HwlatRecord, HwlatSample, TimerlatCpu, TimerlatRecord, HWLAT, TIMERLAT, TIMERLAT_TRACE,
};

/// The git commit this toolkit was built from (`-dirty` when the tree had changes).
pub const GIT_SHA: &str = env!("RTVIRT_GIT_SHA");

/// `x` rounded down to a u64, clamped to `0..=u64::MAX` (NaN gives 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn floor_u64(x: f64) -> u64 {
    // `as` from f64 saturates and maps NaN to 0: exactly the clamp wanted here.
    x.floor() as u64
}
