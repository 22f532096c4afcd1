//! `rt-host`: tune a KVM host for real-time guests, verify it, and undo it exactly.
//!
//! A profile's `host` section becomes a [`plan::Plan`] of changes (current -> desired,
//! now or at next boot); [`apply::setup`] applies them in a safe order with a
//! write-ahead journal, verifies by planning again, and [`apply::revert`] restores every
//! journalled value, also after a crash. [`bootargs`] computes the kernel command line.
//! Every kernel access goes through [`rt_sys::SysRoot`], so all of it runs on fake trees.

pub mod apply;
pub mod bootargs;
pub mod checkreport;
pub mod error;
/// Test scaffolding: a fake machine tree (unit tests, and integration tests through the
/// `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod modprobe;
pub mod placement;
pub mod plan;
pub mod render;
pub mod trace;
pub mod vm;
pub mod vmdef;
pub mod watch;

pub use error::TuneError;
