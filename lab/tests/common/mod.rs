//! What the lab's test binaries share: the workspace root, the host tools the flows run,
//! and the lab's prerequisites (checked with `testkit::require`, so a missing one fails
//! under the README test command instead of skipping).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace")
        .to_path_buf()
}

/// Build the host tools the flows run, as lab/flow.sh does; returns their directory.
pub fn host_tools() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "--release", "-p", "rt-host", "-p", "validation"])
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build --release -p rt-host -p validation failed"
        );
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("release")
    })
    .clone()
}

/// The lab's prerequisites: root, QEMU, the cached PREEMPT_RT guest kernel, and with
/// `host_lab` also the cached standard kernel of the outer host. False (after printing
/// why, or failing under RTVIRT_REQUIRE_ALL=1) when one is missing.
pub fn lab_ready(host_lab: bool) -> bool {
    if !testkit::require_root() {
        return false;
    }
    if !testkit::require(
        lab::initramfs::find_program("qemu-system-x86_64").is_some(),
        "qemu-system-x86_64 is not installed (lab/setup.sh installs it)",
    ) {
        return false;
    }
    let layout = match lab::layout::Layout::from_env() {
        Ok(l) => l,
        Err(e) => return testkit::require(false, format!("no lab layout: {e:#}")),
    };
    let why = |k: anyhow::Result<lab::layout::Kernel>| k.err().map(|e| format!("{e:#}"));
    if let Some(e) = why(lab::layout::Kernel::from_cache(&layout.cache)) {
        return testkit::require(false, format!("no guest kernel: {e}"));
    }
    if host_lab {
        if let Some(e) = why(lab::layout::Kernel::standard_from_cache(&layout.cache)) {
            return testkit::require(false, format!("no outer-host kernel: {e}"));
        }
    }
    true
}

/// Fail unless the flow passed, with its error, what was missing, the cleanup errors
/// and its stderr.
pub fn assert_flow_ok(s: &lab::flow::Summary, stderr: &str) {
    assert!(
        s.ok(),
        "flow failed: error {:?}, missing {:?}, cleanup {:?}\n{stderr}",
        s.error,
        s.missing,
        s.cleanup_errors,
    );
}
