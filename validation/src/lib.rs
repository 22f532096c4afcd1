//! `validation`: the evidence built from run records (the format itself is the `record`
//! crate): verdicts (`evidence`, `stats`), reports (`report`, `chart`) and merged runs
//! (`merge`).

pub mod chart;
pub mod evidence;
pub mod merge;
pub mod report;
pub mod stats;
