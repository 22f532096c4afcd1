//! `validation`: the evidence built from run records (the format itself is the `record`
//! crate): verdicts (`evidence`, `stats`), reports (`report`, `chart`, `fmt`) and merged
//! runs (`merge`). Dependencies point one way: `report` and `chart` read `evidence`;
//! `evidence` reads `fmt` and `stats` only.

pub mod chart;
pub mod evidence;
pub mod fmt;
pub mod merge;
pub mod report;
pub mod stats;
