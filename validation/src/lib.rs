//! `validation`: the run-record format that rtvirt's producers write (`record`), HDR
//! histogram encoding shared by them (`hist`), and the evidence built from records.

pub mod hist;
pub mod record;

/// The git commit this toolkit was built from (`-dirty` when the tree had changes).
pub const GIT_SHA: &str = env!("RTVIRT_GIT_SHA");
