//! The guest image: static `rt-guest` and `can-sim`, busybox, can-utils (with their shared
//! libraries), iproute2 `ip`, util-linux `chrt`, the kernel modules, the bundled profiles and the lab agent's
//! `/init` (see [`crate::initramfs`] and [`crate::guest`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::initramfs::{find_program, init_script, is_static, InitSpec, Stage, MODULES_LOAD};
use crate::layout::{Kernel, Layout};
use crate::modules::{module_name, LAB_MODULES};

/// The rtvirt binaries that run in the guest.
pub const GUEST_BINARIES: &[&str] = &["rt-guest", "can-sim"];

/// Host tools copied into the image with their libraries; `true` when the flow needs it.
const TOOLS: &[(&str, bool)] = &[
    ("candump", true),
    ("cansend", true),
    ("cangen", true),
    ("ip", true),
    ("cyclictest", false),
    // util-linux `chrt` (busybox has none): benchmarks place a reference tool as rtvirt
    // places its own threads.
    ("chrt", false),
];

/// What went into an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Image {
    /// The gzip'd cpio archive.
    pub initrd: PathBuf,
    /// The kernel it was built for.
    pub kernel: PathBuf,
    /// `uname -r` of that kernel.
    pub kernel_version: String,
    /// Modules in load order (names).
    pub modules: Vec<String>,
    /// rtvirt binaries included.
    pub binaries: Vec<String>,
    /// rtvirt binaries that were not built (their crate has no binary yet).
    pub missing_binaries: Vec<String>,
    /// Host tools included.
    pub tools: Vec<String>,
}

/// Build the static binaries `bins` (one package each, named like it) with `cargo build
/// --release` (or the profile in `RTVIRT_LAB_CARGO_PROFILE`) for the gnu target with
/// `crt-static`, in their own target dir. Returns the binaries found, by name.
pub fn build_static(layout: &Layout, bins: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // `release` by default; RTVIRT_LAB_CARGO_PROFILE=small gives the smaller binaries of
    // the workspace's `small` profile (slower to build).
    let profile = std::env::var("RTVIRT_LAB_CARGO_PROFILE").unwrap_or_else(|_| "release".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&layout.root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &layout.static_target)
        .args([
            "build",
            "--profile",
            &profile,
            "--target",
            "x86_64-unknown-linux-gnu",
        ]);
    for b in bins {
        cmd.args(["-p", b]);
    }
    eprintln!("lab: building static guest binaries: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("Running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("The static build of {} failed ({status})", bins.join(", "));
    }
    let dir = layout
        .static_target
        .join("x86_64-unknown-linux-gnu")
        .join(&profile);
    let mut found = Vec::new();
    for b in bins {
        let p = dir.join(b);
        if p.is_file() {
            if !is_static(&p)? {
                bail!(
                    "{} is not statically linked (crt-static did not take)",
                    p.display()
                );
            }
            found.push((b.to_string(), p));
        }
    }
    Ok(found)
}

/// Build the image into `dir/initrd.gz` (staging in `dir/stage`, removed afterwards).
pub fn build(
    layout: &Layout,
    kernel: &Kernel,
    dir: &Path,
    extra_profile: Option<&Path>,
    with_rtvirt: bool,
) -> Result<Image> {
    let mut stage = Stage::new(&dir.join("stage"))?;
    let order = stage.put_modules(kernel, LAB_MODULES, MODULES_LOAD)?;

    // rtvirt binaries (static).
    let built = if with_rtvirt {
        build_static(layout, GUEST_BINARIES)?
    } else {
        Vec::new()
    };
    let mut binaries = Vec::new();
    for (name, path) in &built {
        stage.put(path, &format!("/usr/bin/{name}"), Some(0o755))?;
        binaries.push(name.clone());
    }
    let missing_binaries: Vec<String> = GUEST_BINARIES
        .iter()
        .filter(|b| !binaries.iter().any(|n| n == *b))
        .map(|b| b.to_string())
        .collect();
    for m in missing_binaries.iter().filter(|_| with_rtvirt) {
        eprintln!(
            "lab: warning: {m} was not built (the crate has no binary yet): the image lacks it"
        );
    }

    // Host tools and their shared libraries.
    let mut tools = Vec::new();
    for (tool, needed) in TOOLS {
        let Some(path) = find_program(tool) else {
            if *needed {
                bail!("{tool} not found on the host: run lab/setup.sh");
            }
            continue;
        };
        stage.put_program(&path, &format!("/usr/bin/{tool}"))?;
        tools.push(tool.to_string());
    }
    stage.put_profiles(&layout.root, extra_profile)?;

    let initrd = dir.join("initrd.gz");
    let init = init_script(&InitSpec {
        hostname: "rtvirt-lab-guest",
        kernel_version: &kernel.version,
        setup: "",
        ready_extra: "",
    });
    stage.finish(&init, &initrd)?;
    Ok(Image {
        initrd,
        kernel: kernel.vmlinuz.clone(),
        kernel_version: kernel.version.clone(),
        modules: order.iter().map(|p| module_name(p).to_string()).collect(),
        binaries,
        missing_binaries,
        tools,
    })
}
