//! `validation`: the run-record format that rtvirt's producers write (`record`), HDR
//! histogram encoding shared by them (`hist`), and the evidence built from records:
//! verdicts (`evidence`, `stats`), reports (`report`, `chart`) and merged runs (`merge`).

pub mod chart;
pub mod clidoc;
pub mod evidence;
pub mod hist;
pub mod merge;
pub mod record;
pub mod report;
pub mod stats;

/// The git commit this toolkit was built from (`-dirty` when the tree had changes).
pub const GIT_SHA: &str = env!("RTVIRT_GIT_SHA");
