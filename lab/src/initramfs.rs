//! Building an initramfs: a staging directory filled with busybox, programs with the
//! shared libraries ldd(1) names, kernel modules in load order, data trees and the
//! bundled profiles, plus a generated `/init` that runs the lab agent (see
//! [`crate::guest`]). Packed as a gzip'd cpio `newc` archive, the format the kernel
//! unpacks (<https://docs.kernel.org/driver-api/early-userspace/buffer-format.html>).
//! Both the guest image ([`crate::image`]) and the host lab's outer host
//! ([`crate::hostlab::image`]) are built with it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::layout::Kernel;
use crate::modules::ModulesDep;

/// The 9p mount tag of the share between host and guest.
pub const SHARE_TAG: &str = "rtvirtlab";
/// Where the guest mounts the share.
pub const GUEST_SHARE: &str = "/lab";
/// Where the image keeps the bundled profiles.
pub const GUEST_PROFILES: &str = "/etc/rtvirt/profiles";
/// The modules `/init` loads, in order.
pub const MODULES_LOAD: &str = "/etc/rtvirt/modules.load";

/// A staging directory that becomes an initramfs.
pub struct Stage {
    dir: PathBuf,
    libs: BTreeSet<PathBuf>,
}

impl Stage {
    /// A fresh staging directory `dir` (removed first if it exists) with the usual
    /// top-level directories and a static busybox.
    pub fn new(dir: &Path) -> Result<Stage> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("Removing {}", dir.display()))?;
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
            fs::create_dir_all(dir.join(d))
                .with_context(|| format!("Creating {d} in {}", dir.display()))?;
        }
        let stage = Stage {
            dir: dir.to_path_buf(),
            libs: BTreeSet::new(),
        };
        let busybox = find_program("busybox")
            .context("busybox not found: run lab/setup.sh (busybox-static)")?;
        if !is_static(&busybox)? {
            bail!(
                "{} is not static: install busybox-static (lab/setup.sh)",
                busybox.display()
            );
        }
        stage.put(&busybox, "/bin/busybox", Some(0o755))?;
        Ok(stage)
    }

    /// Copy `src` to `dst` in the image (following symlinks), making parent directories.
    pub fn put(&self, src: &Path, dst: &str, mode: Option<u32>) -> Result<()> {
        let to = self.dir.join(dst.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("Creating {}", parent.display()))?;
        }
        fs::copy(src, &to)
            .with_context(|| format!("Copying {} to {}", src.display(), to.display()))?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Write `text` to `dst` in the image.
    pub fn put_text(&self, text: &str, dst: &str, mode: Option<u32>) -> Result<()> {
        let to = self.dir.join(dst.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&to, text).with_context(|| format!("Writing {}", to.display()))?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Copy the directory tree `src` to `dst` (files by content, symlinks followed).
    pub fn put_tree(&self, src: &Path, dst: &str) -> Result<()> {
        let entries = fs::read_dir(src).with_context(|| format!("Reading {}", src.display()))?;
        for e in entries {
            let e = e?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let to = format!("{}/{name}", dst.trim_end_matches('/'));
            if path.is_dir() {
                self.put_tree(&path, &to)?;
            } else if path.is_file() {
                self.put(&path, &to, None)?;
            }
        }
        Ok(())
    }

    /// Copy the program `src` to `dst` and remember the libraries ldd(1) names for it
    /// (a static program has none).
    pub fn put_program(&mut self, src: &Path, dst: &str) -> Result<()> {
        let out = Command::new("ldd")
            .arg(src)
            .output()
            .context("Running ldd")?;
        if out.status.success() {
            self.libs.extend(
                parse_ldd(&String::from_utf8_lossy(&out.stdout))
                    .with_context(|| format!("ldd {}", src.display()))?,
            );
        }
        self.put(src, dst, Some(0o755))
    }

    /// Copy the modules `names` of `kernel` with their dependencies and write their load
    /// order to `list` (the `/init` loads [`MODULES_LOAD`] with `insmod`). Returns the
    /// module paths in load order.
    pub fn put_modules(&self, kernel: &Kernel, names: &[&str], list: &str) -> Result<Vec<String>> {
        let modules_dir = kernel.modules.as_ref().with_context(|| {
            format!(
                "No modules found for kernel {} (need .../lib/modules/{}/modules.dep)",
                kernel.vmlinuz.display(),
                kernel.version
            )
        })?;
        let dep_path = modules_dir.join("modules.dep");
        let dep = ModulesDep::parse(
            &fs::read_to_string(&dep_path)
                .with_context(|| format!("Reading {}", dep_path.display()))?,
        )
        .with_context(|| format!("Parsing {}", dep_path.display()))?
        .with_builtin(&fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default());
        let order = dep.load_order(names)?;
        let mut load_lines = String::new();
        for rel in &order {
            let guest = format!("/lib/modules/{}/{rel}", kernel.version);
            self.put(&modules_dir.join(rel), &guest, None)?;
            load_lines.push_str(&format!("{guest}\n"));
        }
        self.put_text(&load_lines, list, None)?;
        Ok(order)
    }

    /// The bundled profiles (`ROOT/profiles/*.ron`) and the user's file, in
    /// [`GUEST_PROFILES`].
    pub fn put_profiles(&self, root: &Path, extra: Option<&Path>) -> Result<()> {
        let profiles_dir = root.join("profiles");
        if let Ok(entries) = fs::read_dir(&profiles_dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "ron") {
                    let name = e.file_name().to_string_lossy().into_owned();
                    self.put(&p, &format!("{GUEST_PROFILES}/{name}"), None)?;
                }
            }
        }
        if let Some(p) = extra {
            let name = p
                .file_name()
                .context("Profile path has no file name")?
                .to_string_lossy()
                .into_owned();
            self.put(p, &format!("{GUEST_PROFILES}/{name}"), None)?;
        }
        Ok(())
    }

    /// Copy the collected libraries, write `/init` and pack everything into `out`
    /// (the staging directory is removed afterwards).
    pub fn finish(self, init: &str, out: &Path) -> Result<()> {
        for lib in &self.libs {
            self.put(lib, &lib.to_string_lossy(), None)?;
        }
        self.put_text(init, "/init", Some(0o755))?;
        pack(&self.dir, out)?;
        fs::remove_dir_all(&self.dir).ok();
        Ok(())
    }
}

/// Whether ldd(1) says the binary has no dynamic dependencies.
pub fn is_static(bin: &Path) -> Result<bool> {
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

/// What differs between the `/init` of the guest and of the outer host.
#[derive(Debug, Clone)]
pub struct InitSpec<'a> {
    /// `hostname`.
    pub hostname: &'a str,
    /// The kernel version the image was built for (printed next to the running one).
    pub kernel_version: &'a str,
    /// Shell lines run after the modules are loaded, before the share is mounted.
    pub setup: &'a str,
    /// Shell lines whose output is appended to the `ready` file (`key=value` lines).
    pub ready_extra: &'a str,
}

/// The `/init`: mount the kernel file systems, load the modules, mount the share,
/// report readiness and run the agent loop until asked to power off.
pub fn init_script(spec: &InitSpec<'_>) -> String {
    format!(
        // kernel-path-ok: the init script runs inside the lab guest, not a file we open.
        r#"#!/bin/busybox sh
# rtvirt lab init (generated by rtvirt-lab).
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
hostname {hostname}
echo "lab-init: kernel $(uname -r) ({kernel_version} expected), loading modules"
failed=""
while read -r m; do
    insmod "$m" || failed="$failed $(basename "$m" .ko)"
done < {modules_load}
[ -n "$failed" ] && echo "lab-init: modules that failed to load:$failed"
{setup}
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
{ready_extra}
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
        hostname = spec.hostname,
        kernel_version = spec.kernel_version,
        setup = spec.setup,
        ready_extra = spec.ready_extra,
        tag = SHARE_TAG,
        share = GUEST_SHARE,
        modules_load = MODULES_LOAD,
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
        let init = init_script(&InitSpec {
            hostname: "rtvirt-lab-guest",
            kernel_version: "6.1.0-56-rt-amd64",
            setup: "mount -t hugetlbfs none /dev/hugepages",
            ready_extra: "    echo \"kvm=yes\"",
        });
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("hostname rtvirt-lab-guest\n"));
        let modules = init.find("modules.load").unwrap();
        let setup = init.find("mount -t hugetlbfs").unwrap();
        let share = init.find("mount -t 9p -o trans=virtio").unwrap();
        assert!(modules < setup && setup < share, "{init}");
        assert!(init.contains(&format!("{SHARE_TAG} {GUEST_SHARE}")));
        assert!(init
            .contains("    echo \"kvm=yes\"\n} > /lab/ready.tmp && mv /lab/ready.tmp /lab/ready"));
        assert!(init.contains("poweroff -f"));
    }

    #[test]
    fn stage_copies_trees_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("keymaps")).unwrap();
        fs::write(src.join("bios.bin"), "B").unwrap();
        fs::write(src.join("keymaps/de"), "K").unwrap();
        let stage = Stage {
            dir: dir.path().join("stage"),
            libs: BTreeSet::new(),
        };
        stage.put_tree(&src, "/usr/share/qemu").unwrap();
        stage.put_text("hi\n", "/etc/x", Some(0o600)).unwrap();
        let s = dir.path().join("stage");
        assert_eq!(
            fs::read_to_string(s.join("usr/share/qemu/keymaps/de")).unwrap(),
            "K"
        );
        assert_eq!(
            fs::read_to_string(s.join("usr/share/qemu/bios.bin")).unwrap(),
            "B"
        );
        assert_eq!(fs::read_to_string(s.join("etc/x")).unwrap(), "hi\n");
    }
}
