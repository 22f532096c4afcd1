//! The first stage of a flow: the profile, the host binaries it runs (`rt-host`,
//! `validation`), the kernel and the guest image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::flow::host::find_host_binary;
use crate::image;
use crate::initramfs::GUEST_PROFILES;
use crate::layout::{Kernel, Layout};
use crate::summary::Step;

/// The profile as the flow uses it.
#[derive(Debug, Clone)]
pub struct FlowProfile {
    /// Loaded and validated.
    pub loaded: profiles::Loaded,
    /// Its CAN section (the flow needs one).
    pub can: profiles::Can,
    /// How the guest (and the outer host) find it: a bundled name, or the file's path
    /// in the image.
    pub in_image: String,
    /// The file to put into the image, when it is one.
    pub file: Option<PathBuf>,
}

/// Load `name` (bundled or a file) for a flow.
pub fn profile(name: &str) -> Result<FlowProfile> {
    let loaded = profiles::load(name).with_context(|| format!("Loading profile {name:?}"))?;
    let can = loaded
        .profile
        .can
        .clone()
        .context("The profile has no `can` section: the flow needs one")?;
    let path = Path::new(name);
    let (in_image, file) = if path.is_file() {
        let file_name = path
            .file_name()
            .context("profile path")?
            .to_string_lossy()
            .into_owned();
        (
            format!("{GUEST_PROFILES}/{file_name}"),
            Some(path.to_path_buf()),
        )
    } else {
        (name.to_string(), None)
    };
    Ok(FlowProfile {
        loaded,
        can,
        in_image,
        file,
    })
}

/// The host binaries a flow runs, and the ones that are missing (as messages).
#[derive(Debug, Clone, Default)]
pub struct HostBins {
    /// `rt-host`.
    pub rt_host: Option<PathBuf>,
    /// `validation`.
    pub validation: Option<PathBuf>,
    /// What is missing, with how to build it.
    pub missing: Vec<String>,
}

/// Find `rt-host` and `validation` (see [`find_host_binary`]).
pub fn host_bins(layout: &Layout) -> HostBins {
    let mut b = HostBins {
        rt_host: find_host_binary(&layout.root, "rt-host"),
        validation: find_host_binary(&layout.root, "validation"),
        missing: Vec::new(),
    };
    if b.rt_host.is_none() {
        b.missing
            .push("rt-host (host binary: cargo build --release -p rt-host)".into());
    }
    if b.validation.is_none() {
        b.missing
            .push("validation (host binary: cargo build --release -p validation)".into());
    }
    b
}

/// The guest kernel: `--kernel`, or the PREEMPT_RT kernel in the cache.
pub fn kernel(layout: &Layout, given: Option<&Path>) -> Result<Kernel> {
    match given {
        Some(k) => Kernel::from_path(k),
        None => Kernel::from_cache(&layout.cache),
    }
}

/// The guest initramfs: `--initrd`, or one built into `out` (a step, its file a
/// temporary one). Guest binaries that could not be built are added to `missing`.
pub fn guest_image(
    layout: &Layout,
    kernel: &Kernel,
    given: Option<&Path>,
    p: &FlowProfile,
    out: &Path,
    steps: &mut Vec<Step>,
    missing: &mut Vec<String>,
) -> Result<(PathBuf, bool)> {
    if let Some(i) = given {
        return Ok((i.to_path_buf(), false));
    }
    let t = Instant::now();
    let img = image::build(layout, kernel, out, p.file.as_deref(), true)?;
    for m in &img.missing_binaries {
        missing.push(format!(
            "{m} (guest binary: the crate builds no `{m}` executable yet)"
        ));
    }
    steps.push(Step {
        name: "host: build guest image".into(),
        rc: Some(0),
        secs: t.elapsed().as_secs_f64(),
        ok: true,
        note: format!(
            "modules {}; binaries {:?}; tools {:?}",
            img.modules.join(" "),
            img.binaries,
            img.tools
        ),
    });
    Ok((img.initrd, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_and_file_profiles_are_found_in_the_image() {
        let p = profile("lab").unwrap();
        assert_eq!(p.in_image, "lab");
        assert!(p.file.is_none());
        assert_eq!(p.can.tx, "can0");
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hil.ron");
        let p = profile(file).unwrap();
        assert_eq!(p.in_image, "/etc/rtvirt/profiles/hil.ron");
        assert_eq!(p.loaded.profile.name, "hil");
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare.ron");
        std::fs::write(&bare, "Profile(name: \"bare\")").unwrap();
        let e = profile(bare.to_str().unwrap()).unwrap_err().to_string();
        assert_eq!(e, "The profile has no `can` section: the flow needs one");
    }
}
