//! The guest image: static `rt-guest` and `can-sim`, busybox, can-utils (with their shared
//! libraries, found with ldd(1)), iproute2 `ip`, the kernel modules, the bundled profiles
//! and an `/init` that loads the modules, mounts the virtio-9p share and runs the agent
//! (see [`crate::guest`]). Packed as a gzip'd cpio `newc` archive, the format the kernel
//! unpacks (<https://docs.kernel.org/driver-api/early-userspace/buffer-format.html>).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::layout::{Kernel, Layout};
use crate::modules::{module_name, ModulesDep, LAB_MODULES};

/// The 9p mount tag of the share between host and guest.
pub const SHARE_TAG: &str = "rtvirtlab";
/// Where the guest mounts the share.
pub const GUEST_SHARE: &str = "/lab";
/// Where the image keeps the bundled profiles.
pub const GUEST_PROFILES: &str = "/etc/rtvirt/profiles";

/// The rtvirt binaries that run in the guest.
pub const GUEST_BINARIES: &[&str] = &["rt-guest", "can-sim"];

/// Host tools copied into the image with their libraries; `true` when the flow needs it.
const TOOLS: &[(&str, bool)] = &[
    ("candump", true),
    ("cansend", true),
    ("cangen", true),
    ("ip", true),
    ("cyclictest", false),
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

/// Build the static guest binaries with `cargo build --release` (or the profile in
/// `RTVIRT_LAB_CARGO_PROFILE`) for the gnu target with
/// `crt-static`, in their own target dir. Returns the binaries found, by name.
pub fn build_static(layout: &Layout) -> Result<Vec<(String, PathBuf)>> {
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
    for b in GUEST_BINARIES {
        cmd.args(["-p", b]);
    }
    eprintln!("lab: building static guest binaries: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("Running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!(
            "The static build of {} failed ({status})",
            GUEST_BINARIES.join(", ")
        );
    }
    let dir = layout
        .static_target
        .join("x86_64-unknown-linux-gnu")
        .join(&profile);
    let mut found = Vec::new();
    for b in GUEST_BINARIES {
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

/// Whether ldd(1) says the binary has no dynamic dependencies.
fn is_static(bin: &Path) -> Result<bool> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("Running ldd")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text.contains("not a dynamic executable") || text.contains("statically linked"))
}

/// The absolute library paths in ldd(1) output (`libx.so => /path (0x..)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`); `linux-vdso` has no file and is skipped.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Find a program in the usual system directories (root's PATH may not be set up).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Copy `src` to `stage/dst` (following symlinks), making parent directories.
fn put(stage: &Path, src: &Path, dst: &str, mode: Option<u32>) -> Result<()> {
    let to = stage.join(dst.trim_start_matches('/'));
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("Creating {}", parent.display()))?;
    }
    fs::copy(src, &to).with_context(|| format!("Copying {} to {}", src.display(), to.display()))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Build the image into `dir/initrd.gz` (staging in `dir/stage`, removed afterwards).
pub fn build(
    layout: &Layout,
    kernel: &Kernel,
    dir: &Path,
    extra_profile: Option<&Path>,
    with_rtvirt: bool,
) -> Result<Image> {
    let modules_dir = kernel.modules.as_ref().with_context(|| {
        format!(
            "No modules found for kernel {} (need .../lib/modules/{}/modules.dep)",
            kernel.vmlinuz.display(),
            kernel.version
        )
    })?;
    let stage = dir.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("Removing {}", stage.display()))?;
    }
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "lab",
        "etc/rtvirt",
        "root",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }

    let busybox =
        find_program("busybox").context("busybox not found: run lab/setup.sh (busybox-static)")?;
    if !is_static(&busybox)? {
        bail!(
            "{} is not static: install busybox-static (lab/setup.sh)",
            busybox.display()
        );
    }
    put(&stage, &busybox, "/bin/busybox", Some(0o755))?;

    // Modules, in load order.
    let dep_path = modules_dir.join("modules.dep");
    let dep = ModulesDep::parse(
        &fs::read_to_string(&dep_path)
            .with_context(|| format!("Reading {}", dep_path.display()))?,
    )
    .with_context(|| format!("Parsing {}", dep_path.display()))?
    .with_builtin(&fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default());
    let order = dep.load_order(LAB_MODULES)?;
    let mut load_lines = String::new();
    for rel in &order {
        let guest = format!("/lib/modules/{}/{rel}", kernel.version);
        put(&stage, &modules_dir.join(rel), &guest, None)?;
        load_lines.push_str(&format!("{guest}\n"));
    }
    fs::write(stage.join("etc/rtvirt/modules.load"), load_lines)?;

    // rtvirt binaries (static).
    let built = if with_rtvirt {
        build_static(layout)?
    } else {
        Vec::new()
    };
    let mut binaries = Vec::new();
    for (name, path) in &built {
        put(&stage, path, &format!("/usr/bin/{name}"), Some(0o755))?;
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
    let mut libs = BTreeSet::new();
    let mut tools = Vec::new();
    for (tool, needed) in TOOLS {
        let Some(path) = find_program(tool) else {
            if *needed {
                bail!("{tool} not found on the host: run lab/setup.sh");
            }
            continue;
        };
        let out = Command::new("ldd")
            .arg(&path)
            .output()
            .context("Running ldd")?;
        if out.status.success() {
            libs.extend(
                parse_ldd(&String::from_utf8_lossy(&out.stdout))
                    .with_context(|| format!("ldd {}", path.display()))?,
            );
        }
        put(&stage, &path, &format!("/usr/bin/{tool}"), Some(0o755))?;
        tools.push(tool.to_string());
    }
    for lib in &libs {
        put(&stage, lib, &lib.to_string_lossy(), None)?;
    }

    // Profiles: the bundled ones, and the user's file.
    let profiles_dir = layout.root.join("profiles");
    if let Ok(entries) = fs::read_dir(&profiles_dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "ron") {
                put(
                    &stage,
                    &p,
                    &format!("{GUEST_PROFILES}/{}", e.file_name().to_string_lossy()),
                    None,
                )?;
            }
        }
    }
    if let Some(p) = extra_profile {
        let name = p
            .file_name()
            .context("Profile path has no file name")?
            .to_string_lossy()
            .into_owned();
        put(&stage, p, &format!("{GUEST_PROFILES}/{name}"), None)?;
    }

    fs::write(stage.join("init"), init_script(&kernel.version))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;
    }

    let initrd = dir.join("initrd.gz");
    pack(&stage, &initrd)?;
    fs::remove_dir_all(&stage).ok();
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

/// `find . | cpio -o -H newc | gzip`, owned by root.
fn pack(stage: &Path, out: &Path) -> Result<()> {
    let script = "set -o pipefail; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6 > \"$1\"";
    let status = Command::new("bash")
        .current_dir(stage)
        .args(["-c", script, "pack", &out.to_string_lossy()])
        .status()
        .context("Running find | cpio | gzip")?;
    if !status.success() {
        bail!(
            "Packing {} into {} failed ({status}); is cpio installed?",
            stage.display(),
            out.display()
        );
    }
    Ok(())
}

/// The guest's `/init`: mount the kernel file systems, load the modules, mount the share,
/// report readiness and run the agent loop until asked to power off.
pub fn init_script(kernel_version: &str) -> String {
    format!(
        // kernel-path-ok: a shell script that runs inside the lab guest, not a file we open.
        r#"#!/bin/busybox sh
# rtvirt lab guest init (generated by rtvirt-lab image).
/bin/busybox --install -s /bin
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
mount -t debugfs none /sys/kernel/debug 2>/dev/null
ip link set lo up
hostname rtvirt-lab-guest
echo "lab-init: kernel $(uname -r) ({kernel_version} expected), loading modules"
failed=""
while read -r m; do
    insmod "$m" || failed="$failed $(basename "$m" .ko)"
done < /etc/rtvirt/modules.load
[ -n "$failed" ] && echo "lab-init: modules that failed to load:$failed"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {tag} {share}; then
    echo "lab-init: LAB-INIT-FAILED: cannot mount the 9p share {tag}"
    poweroff -f
fi
mkdir -p {share}/cmd
{{
    echo "uname_r=$(uname -r)"
    echo "uname_v=$(uname -v)"
    echo "realtime=$(cat /sys/kernel/realtime 2>/dev/null)"
    echo "nproc=$(grep -c ^processor /proc/cpuinfo)"
    echo "net=$(ls /sys/class/net | tr '\n' ' ')"
    echo "modules_failed=$failed"
    echo "hypervisor=$(grep -m1 -o hypervisor /proc/cpuinfo)"
}} > {share}/ready.tmp && mv {share}/ready.tmp {share}/ready
echo "lab-init: LAB-READY"
n=0
while :; do
    n=$((n + 1))
    f={share}/cmd/$n.sh
    while [ ! -f "$f" ]; do sleep 0.1; done
    sh "$f" > {share}/cmd/$n.out 2>&1 < /dev/null
    echo $? > {share}/cmd/$n.rc.tmp
    mv {share}/cmd/$n.rc.tmp {share}/cmd/$n.rc
    [ -f {share}/cmd/poweroff ] && break
done
echo "lab-init: powering off"
sync
poweroff -f
"#,
        tag = SHARE_TAG,
        share = GUEST_SHARE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        // ldd /usr/bin/candump on Debian 12, plus a typical `=>` line.
        let text = "\tlinux-vdso.so.1 (0x00007ffd4b1f5000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5a3c9d1000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f5a3cbd6000)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn ldd_missing_library_fails() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("libfoo"), "{err}");
    }

    #[test]
    fn init_mounts_the_share_and_reports_ready() {
        let init = init_script("6.1.0-56-rt-amd64");
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("mount -t 9p -o trans=virtio"));
        assert!(init.contains(&format!("{SHARE_TAG} {GUEST_SHARE}")));
        assert!(init.contains("/lab/ready.tmp /lab/ready"));
        assert!(init.contains("poweroff -f"));
    }
}
