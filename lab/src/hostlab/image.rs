//! The outer host's initramfs: busybox, the standard kernel's virtio-9p and KVM modules
//! (`kvm_amd` or `kvm_intel`, whichever the CPU flags ask for, loaded by `/init`), QEMU
//! with the libraries ldd(1) names and its firmware (`/usr/share/qemu`,
//! `/usr/share/seabios`), `rt-host` with its libraries, the static `can-sim` and
//! `rt-guest` (the restbus on the host side, and `rt-guest clock-echo` for the clock
//! exchange with the guest), the bundled profiles, the inner guest's kernel and
//! initramfs, and the lab agent's `/init` with hugetlbfs mounted and the host side of the
//! VMs' CAN buses up: SocketCAN loaded, one `vcan` per `host_interface` of the profile.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::image::{build_static, GUEST_BINARIES};
use crate::initramfs::{find_program, init_script, InitSpec, Stage, MODULES_LOAD};
use crate::layout::{Kernel, Layout};
use crate::modules::{module_name, HOST_LAB_KVM, HOST_LAB_MODULES};

/// Where the outer host keeps the inner guest's kernel.
pub const INNER_KERNEL: &str = "/inner/vmlinuz";
/// The guest kernel's `ptp_kvm` module, for the guest to try (not loaded at its boot).
pub const INNER_PTP_KVM: &str = "/inner/ptp_kvm.ko";
/// Where `ptp_kvm` sits among a kernel's modules (Debian builds it as a module).
pub const PTP_KVM_MODULE: &str = "kernel/drivers/ptp/ptp_kvm.ko";
/// Where the outer host keeps the inner guest's initramfs.
pub const INNER_INITRD: &str = "/inner/initrd.gz";
/// QEMU in the outer host.
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// rt-host in the outer host.
pub const RT_HOST: &str = "/usr/bin/rt-host";
/// can-sim in the outer host.
pub const CAN_SIM: &str = "/usr/bin/can-sim";
/// rt-guest in the outer host (for `rt-guest clock-echo`).
pub const RT_GUEST: &str = "/usr/bin/rt-guest";
/// Where the outer host mounts hugetlbfs (its pages reserved by the boot arguments).
// kernel-path-ok: a mount point inside the outer host, made by its /init.
pub const HUGEPAGES: &str = "/dev/hugepages";

/// QEMU's data: option ROMs, keymaps (`/usr/share/qemu`) and the BIOS
/// (`/usr/share/seabios`, which `/usr/share/qemu` links into).
const QEMU_DATA: &[&str] = &["/usr/share/qemu", "/usr/share/seabios"];

/// What went into the outer image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OuterImage {
    /// The gzip'd cpio archive.
    pub initrd: PathBuf,
    /// The outer host's kernel (Debian's standard one).
    pub kernel: PathBuf,
    /// Its version.
    pub kernel_version: String,
    /// Modules loaded at boot (names), then the KVM stacks by vendor.
    pub modules: Vec<String>,
}

/// Where the outer host keeps the KVM module options of the profile: the file
/// `rt-host modprobe PROFILE` prints for /etc/modprobe.d. busybox `insmod` does not read
/// modprobe.d, so `/init` passes each module its `options` line itself.
pub const MODPROBE_CONF: &str = "/etc/modprobe.d/rtvirt-kvm.conf";

/// The `/init` lines after the modules: the KVM stack that fits the CPU (each module with
/// its options from [`MODPROBE_CONF`]), hugetlbfs, a `vcan` up for each of `can_ifaces`
/// (the VMs' `host_interface`s: QEMU's `can-host-socketcan` needs it before it starts),
/// listed in `$can_up`.
fn setup_lines(can_ifaces: &[String]) -> String {
    let mut s = String::from("kvm_module=none\n");
    for (module, flag) in HOST_LAB_KVM {
        s.push_str(&format!(
            // kernel-path-ok: shell that runs in the outer host's /init.
            "if [ $kvm_module = none ] && grep -qw {flag} /proc/cpuinfo; then\n    kvm_module={module}\n    while read -r m; do\n        n=$(basename \"$m\"); n=$(echo \"${{n%%.ko*}}\" | tr - _)\n        insmod \"$m\" $(sed -n \"s/^options $n //p\" {MODPROBE_CONF}) 2>/dev/null\n    done < /etc/rtvirt/{module}.load\nfi\n"
        ));
    }
    s.push_str(&format!(
        "mkdir -p {HUGEPAGES} && mount -t hugetlbfs none {HUGEPAGES}\n"
    ));
    s.push_str("can_up=\n");
    for i in can_ifaces {
        s.push_str(&format!(
            "ip link add dev {i} type vcan 2>/dev/null; ip link set {i} up && can_up=\"$can_up {i}\"\n"
        ));
    }
    s
}

/// The extra `ready` lines: which KVM module, whether `/dev/kvm` is there, hugepages.
// kernel-path-ok: shell that runs in the outer host's /init.
const READY_EXTRA: &str = r#"    echo "kvm_module=$kvm_module"
    echo "kvm=$([ -c /dev/kvm ] && echo yes || echo no)"
    echo "hugepages=$(cat /proc/sys/vm/nr_hugepages)"
    echo "cmdline=$(cat /proc/cmdline)"
    echo "can_up=$can_up""#;

/// What goes into the outer host beside its kernel's modules, QEMU and busybox.
pub struct Payload<'a> {
    /// The guest's kernel, started by QEMU in the outer host.
    pub inner_kernel: &'a Path,
    /// The guest's initramfs.
    pub inner_initrd: &'a Path,
    /// The guest kernel's `ptp_kvm.ko`, when it has one.
    pub inner_ptp_kvm: Option<&'a Path>,
    /// The rt-host binary.
    pub rt_host: &'a Path,
    /// A profile file beyond the bundled ones (the one the flow runs).
    pub extra_profile: Option<&'a Path>,
    /// The modprobe.d text of the KVM module options applied at load ([`MODPROBE_CONF`]).
    pub modprobe_conf: &'a str,
    /// The host SocketCAN interfaces of the VMs' CAN buses (made `vcan`s here).
    pub can_ifaces: &'a [String],
}

/// The host interfaces the profile's VMs join their CAN buses to (`can_buses[].host_interface`),
/// each once, in order.
pub fn can_host_interfaces(host: &profiles::Host) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in profiles::host_vms(host) {
        for i in v.can_buses.iter().filter_map(|b| b.host_interface.clone()) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// Build the outer image into `dir/outer-initrd.gz`.
pub fn build(layout: &Layout, kernel: &Kernel, p: &Payload, dir: &Path) -> Result<OuterImage> {
    let mut stage = Stage::new(&dir.join("outer-stage"))?;
    let mut modules: Vec<String> = stage
        .put_modules(kernel, HOST_LAB_MODULES, MODULES_LOAD)?
        .iter()
        .map(|p| module_name(p).to_string())
        .collect();
    for (module, _) in HOST_LAB_KVM {
        let order = stage.put_modules(kernel, &[module], &format!("/etc/rtvirt/{module}.load"))?;
        modules.push(format!(
            "[{}]",
            order
                .iter()
                .map(|p| module_name(p))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let qemu = find_program("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found: run lab/setup.sh")?;
    stage.put_program(&qemu, QEMU)?;
    for d in QEMU_DATA {
        stage.put_tree(Path::new(d), d)?;
    }
    stage.put_program(p.rt_host, RT_HOST)?;
    // The guest image's static builds (cargo has nothing to do when the guest image was
    // just built).
    for (name, path) in build_static(layout, GUEST_BINARIES)? {
        let to = if name == "can-sim" { CAN_SIM } else { RT_GUEST };
        stage.put(&path, to, Some(0o755))?;
    }
    stage.put(p.inner_kernel, INNER_KERNEL, None)?;
    stage.put(p.inner_initrd, INNER_INITRD, None)?;
    if let Some(ko) = p.inner_ptp_kvm {
        stage.put(ko, INNER_PTP_KVM, None)?;
    }
    stage.put_profiles(&layout.root, p.extra_profile)?;
    stage.put_text(p.modprobe_conf, MODPROBE_CONF, None)?;
    let setup = setup_lines(p.can_ifaces);
    let init = init_script(&InitSpec {
        hostname: "rtvirt-hil-host",
        kernel_version: &kernel.version,
        setup: &setup,
        ready_extra: READY_EXTRA,
    });
    let initrd = dir.join("outer-initrd.gz");
    stage.finish(&init, &initrd)?;
    Ok(OuterImage {
        initrd,
        kernel: kernel.vmlinuz.clone(),
        kernel_version: kernel.version.clone(),
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_the_kvm_stack_the_cpu_asks_for_and_mounts_hugetlbfs() {
        let s = setup_lines(&["vcan0".into()]);
        let amd = s.find("grep -qw svm /proc/cpuinfo").unwrap();
        let intel = s.find("grep -qw vmx /proc/cpuinfo").unwrap();
        assert!(amd < intel, "{s}");
        assert!(s.contains("done < /etc/rtvirt/kvm_amd.load"));
        assert!(s.contains("s/^options $n //p\" /etc/modprobe.d/rtvirt-kvm.conf"));
        let hugetlbfs = s.find("mount -t hugetlbfs none /dev/hugepages\n").unwrap();
        assert!(
            s[hugetlbfs..].ends_with(
                "can_up=\nip link add dev vcan0 type vcan 2>/dev/null; ip link set vcan0 up && can_up=\"$can_up vcan0\"\n"
            ),
            "{s}"
        );
        assert!(!setup_lines(&[]).contains("vcan"));
        assert!(READY_EXTRA.contains("kvm=$([ -c /dev/kvm ]"));
        assert!(READY_EXTRA.ends_with("echo \"can_up=$can_up\""));
    }

    #[test]
    fn the_host_interfaces_of_the_profiles_can_buses() {
        let mut host = profiles::load("hil").unwrap().profile.host.unwrap();
        // ecu0 and ecu1 on one host vcan: made once.
        assert_eq!(can_host_interfaces(&host), ["vcan0"]);
        host.vms[1].can_buses[0].host_interface = Some("vcan1".into());
        assert_eq!(can_host_interfaces(&host), ["vcan0", "vcan1"]);
        for v in &mut host.vms {
            v.can_buses.clear();
        }
        assert!(can_host_interfaces(&host).is_empty());
    }
}
