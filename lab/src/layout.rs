//! Where the lab finds its inputs and puts its outputs: the workspace, the kernel cache
//! that `lab/setup.sh` fills, and the output directory of each run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Paths the lab works with.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The workspace root (holds `Cargo.toml`, `profiles/`, `lab/`).
    pub root: PathBuf,
    /// `lab/cache`: the unpacked kernel (`rt-kernel` points at it) and downloaded packages.
    pub cache: PathBuf,
    /// `lab/out`: one directory per `image` / `flow` run.
    pub out: PathBuf,
    /// Target dir of the static guest build, apart from the normal one.
    pub static_target: PathBuf,
}

impl Layout {
    /// From the environment: `RTVIRT_LAB_ROOT` (default: the workspace this crate was built
    /// in), `RTVIRT_LAB_CACHE`, `RTVIRT_LAB_OUT`, `RTVIRT_LAB_STATIC_TARGET_DIR`.
    pub fn from_env() -> Result<Self> {
        let root = match std::env::var_os("RTVIRT_LAB_ROOT") {
            Some(r) => PathBuf::from(r),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("The lab crate has no parent directory")?
                .to_path_buf(),
        };
        if !root.join("Cargo.toml").is_file() {
            bail!(
                "{} is not the rtvirt workspace (no Cargo.toml); set RTVIRT_LAB_ROOT",
                root.display()
            );
        }
        let env_or = |var: &str, default: PathBuf| {
            std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
        };
        Ok(Self {
            cache: env_or("RTVIRT_LAB_CACHE", root.join("lab/cache")),
            out: env_or("RTVIRT_LAB_OUT", root.join("lab/out")),
            static_target: env_or(
                "RTVIRT_LAB_STATIC_TARGET_DIR",
                root.join("target-lab-static"),
            ),
            root,
        })
    }

    /// A new output directory `lab/out/KIND-UTC`.
    pub fn new_out_dir(&self, kind: &str) -> Result<PathBuf> {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(&time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .context("Formatting the time")?;
        let mut dir = self.out.join(format!("{kind}-{stamp}"));
        let mut n = 1;
        while dir.exists() {
            n += 1;
            dir = self.out.join(format!("{kind}-{stamp}-{n}"));
        }
        fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// The link in the cache to the PREEMPT_RT guest kernel.
pub const RT_KERNEL: &str = "rt-kernel";
/// The link in the cache to Debian's standard kernel (the host lab's outer host).
pub const STD_KERNEL: &str = "std-kernel";

/// A kernel unpacked by `lab/setup.sh`, or given by the user.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `boot/vmlinuz-VERSION`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/VERSION`, when known (needed to build an image).
    pub modules: Option<PathBuf>,
    /// `VERSION` (`uname -r`).
    pub version: String,
}

impl Kernel {
    /// The PREEMPT_RT guest kernel: `cache/rt-kernel`.
    pub fn from_cache(cache: &Path) -> Result<Self> {
        Self::from_cache_link(cache, RT_KERNEL, "linux-image-rt-amd64")
    }

    /// The host lab's outer-host kernel, Debian's standard one: `cache/std-kernel`.
    pub fn standard_from_cache(cache: &Path) -> Result<Self> {
        Self::from_cache_link(cache, STD_KERNEL, "linux-image-amd64")
    }

    /// The kernel `lab/setup.sh` unpacked for `package` and linked as `cache/LINK`.
    fn from_cache_link(cache: &Path, link: &str, package: &str) -> Result<Self> {
        let base = cache.join(link);
        let boot = base.join("boot");
        let vmlinuz = first_entry(&boot, "vmlinuz-").with_context(|| {
            format!(
                "No kernel in {}: run lab/setup.sh (as root) to fetch {package}",
                boot.display()
            )
        })?;
        let version = file_name(&vmlinuz)
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = base.join("lib/modules").join(&version);
        if !modules.join("modules.dep").is_file() {
            bail!(
                "{} has no modules.dep: run lab/setup.sh again",
                modules.display()
            );
        }
        Ok(Self {
            vmlinuz,
            modules: Some(modules),
            version,
        })
    }

    /// A kernel given by the user; its modules are found next to it when it sits in an
    /// unpacked package tree (`.../boot/vmlinuz-V` and `.../lib/modules/V`).
    pub fn from_path(vmlinuz: &Path) -> Result<Self> {
        if !vmlinuz.is_file() {
            bail!("Kernel {} does not exist", vmlinuz.display());
        }
        let version = file_name(vmlinuz)
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = vmlinuz
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("lib/modules").join(&version))
            .filter(|m| m.join("modules.dep").is_file());
        Ok(Self {
            vmlinuz: vmlinuz.to_path_buf(),
            modules,
            version,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn first_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("Reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| file_name(p).starts_with(prefix))
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("No {prefix}* in {}", dir.display()))
}
