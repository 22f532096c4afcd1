//! The rtvirt lab: builds a PREEMPT_RT guest image (Debian's `linux-image-rt-amd64`,
//! busybox, can-utils, static `rt-guest` and `can-sim`), boots it in QEMU with two
//! emulated Kvaser PCI CAN cards on one bus, and runs the whole toolkit flow end to end:
//! `rt-host setup` on the QEMU process, the guest tools, `rt-host revert`, and the
//! evidence export ([`flow`]). The host lab ([`hostlab`]) runs the same flow on a nested
//! KVM host: an outer QEMU VM with 4 vCPUs and rt-host inside. See `docs/lab.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub mod accel;
pub mod check;
pub mod flow;
pub mod guest;
pub mod hostlab;
pub mod image;
pub mod initramfs;
pub mod layout;
pub mod modules;
pub mod qemu;
pub mod sched;
pub mod scripts;
pub mod summary;

static INTERRUPT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Catch SIGINT and SIGTERM: the flag is polled by every wait so the lab can clean up
/// (revert the host, stop QEMU) instead of dying with the host tuned.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    let flag = INTERRUPT.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPT.get().is_some_and(|f| f.load(Ordering::Relaxed))
}
