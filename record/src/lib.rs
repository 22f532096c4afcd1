//! `record`: the run-record format every rtvirt tool writes and reads.
//!
//! - [`run`]: the run directory (`manifest.json` with tool runs, profile copy, environment
//!   and the sha256 of every file), the probe and CAN records, atomic writes;
//! - [`hist`]: HDR histograms in records (HdrHistogram V2 compressed, base64) and their
//!   summaries.
//!
//! Producers (rt-guest, can-sim, the lab) and the consumer (validation) share these typed
//! values; nothing crosses between tools as guessed JSON keys.

pub mod hist;
pub mod run;

pub use run::*;

/// The git commit this toolkit was built from (`-dirty` when the tree had changes).
pub const GIT_SHA: &str = env!("RTVIRT_GIT_SHA");
