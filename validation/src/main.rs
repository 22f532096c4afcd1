//! `validation` CLI (placeholder until the report commands land).
fn main() {}
