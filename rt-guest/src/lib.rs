//! `rt-guest`: the guest side of rtvirt.
//!
//! - [`probe`]: a cyclictest-class wakeup-latency probe (`clock_nanosleep(2)` with
//!   `TIMER_ABSTIME` on `CLOCK_MONOTONIC`) that counts missed periods, keeps exact
//!   nanoseconds in HDR histograms and constant memory, and writes a run directory;
//! - [`cyclictest`]: cyclictest's `--json` and `-h` output formats;
//! - [`selftest`]: known delays injected to show the probe measures right;
//! - [`guest`]: check and journalled tuning of the guest (PREEMPT_RT, isolation, halt
//!   polling, idle states, clocksource, steal time, IRQ threads).

pub mod cli;
pub mod commands;
pub mod cyclictest;
pub mod evidence;
pub mod guest;
mod handoff;
pub mod latency;
pub mod oslat;
pub mod oslat_cmd;
pub mod oslatfmt;
pub mod output;
pub mod probe;
pub mod selftest;
pub mod stalls;
pub mod timerlat;

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
