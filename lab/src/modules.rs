//! Kernel modules for the guest image: `lib/modules/VERSION/modules.dep` as written by
//! `depmod` (see depmod(8) and modules.dep(5)).
//!
//! The guest's `/init` loads modules with busybox `insmod` in an order computed here, so the
//! image needs neither `modprobe` nor `depmod` output of its own.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

/// The modules the lab guest needs: CAN core and raw sockets, the SJA1000 driver behind
/// QEMU's `kvaser_pci`, `vcan`, and virtio-9p to bring results out.
pub const LAB_MODULES: &[&str] = &[
    "can",
    "can-raw",
    "can-dev",
    "vcan",
    "sja1000",
    "kvaser_pci",
    "9pnet_virtio",
    "9p",
    "virtio_pci",
];

/// The modules the host lab's outer host loads at boot: virtio-9p for the share, and
/// SocketCAN (CAN core, raw sockets, `vcan`) for the host side of the inner VMs' CAN
/// buses (QEMU `can-host-socketcan`) and the restbus there. KVM comes separately
/// ([`HOST_LAB_KVM`]), for the CPU vendor the outer host sees.
pub const HOST_LAB_MODULES: &[&str] =
    &["9pnet_virtio", "9p", "virtio_pci", "can", "can-raw", "vcan"];

/// The KVM stack of the outer host per vendor module: (`kvm_amd` | `kvm_intel`, the
/// CPU flag that needs it). `kvm_amd` pulls in `ccp`, `kvm` and `irqbypass`.
pub const HOST_LAB_KVM: &[(&str, &str)] = &[("kvm_amd", "svm"), ("kvm_intel", "vmx")];

/// `modules.dep`: module path (relative to the modules dir) -> its direct dependencies.
#[derive(Debug, Default, Clone)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
    builtin: Vec<String>,
}

/// The module name of a path: `kernel/net/can/can-raw.ko` (or `.ko.xz`) -> `can-raw`.
pub fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file)
}

/// Names compare with `-` and `_` taken as the same, as `modprobe` does.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

impl ModulesDep {
    /// Parse the text of `modules.dep` (`path: dep dep ...` per line).
    pub fn parse(text: &str) -> Result<Self> {
        let mut deps = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((module, rest)) = line.split_once(':') else {
                bail!("modules.dep line {}: no ':' in {line:?}", n + 1);
            };
            deps.insert(
                module.trim().to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
        }
        Ok(Self {
            deps,
            builtin: Vec::new(),
        })
    }

    /// Take note of `modules.builtin` (one path per line): those need no loading.
    pub fn with_builtin(mut self, text: &str) -> Self {
        self.builtin = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        self
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.iter().any(|p| same_name(module_name(p), name))
    }

    /// The path of module `name`.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.deps
            .keys()
            .find(|p| same_name(module_name(p), name))
            .map(String::as_str)
    }

    /// The paths of `names` and everything they depend on, each after its dependencies.
    pub fn load_order(&self, names: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            if self.path_of(name).is_none() && self.is_builtin(name) {
                continue;
            }
            let Some(path) = self.path_of(name) else {
                bail!("Module {name:?} is not in modules.dep (not built for this kernel, or built in)");
            };
            self.visit(path, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        path: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(path) {
            return Ok(());
        }
        if !stack.insert(path.to_string()) {
            bail!("Dependency cycle in modules.dep at {path}");
        }
        let Some(deps) = self.deps.get(path) else {
            bail!("modules.dep names {path} as a dependency but has no line for it");
        };
        for dep in deps {
            self.visit(dep, done, stack, order)?;
        }
        stack.remove(path);
        done.insert(path.to_string());
        order.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines from Debian's 6.1.0-56-rt-amd64 modules.dep.
    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/can/dev/can-dev.ko:
kernel/drivers/net/can/vcan.ko: kernel/drivers/net/can/dev/can-dev.ko
kernel/drivers/net/can/sja1000/kvaser_pci.ko: kernel/drivers/net/can/sja1000/sja1000.ko kernel/drivers/net/can/dev/can-dev.ko
kernel/drivers/net/can/sja1000/sja1000.ko: kernel/drivers/net/can/dev/can-dev.ko
kernel/net/can/can.ko:
kernel/net/can/can-raw.ko: kernel/net/can/can.ko
";

    #[test]
    fn names_from_paths() {
        assert_eq!(module_name("kernel/net/can/can-raw.ko"), "can-raw");
        assert_eq!(module_name("kernel/net/can/can-raw.ko.xz"), "can-raw");
        assert_eq!(module_name("vcan.ko"), "vcan");
    }

    #[test]
    fn dependencies_come_first() {
        let dep = ModulesDep::parse(DEP).unwrap();
        let order = dep
            .load_order(&["kvaser_pci", "can_raw", "virtio_pci", "vcan"])
            .unwrap();
        let pos = |n: &str| order.iter().position(|p| module_name(p) == n).unwrap();
        assert!(pos("can-dev") < pos("sja1000"));
        assert!(pos("sja1000") < pos("kvaser_pci"));
        assert!(pos("can") < pos("can-raw"));
        assert!(pos("virtio_ring") < pos("virtio"));
        assert!(pos("virtio") < pos("virtio_pci"));
        // can-dev is needed twice but loaded once.
        assert_eq!(
            order.iter().filter(|p| module_name(p) == "can-dev").count(),
            1
        );
        assert_eq!(order.len(), 11);
    }

    #[test]
    fn the_outer_hosts_socketcan_comes_with_its_dependencies() {
        let dep = ModulesDep::parse(DEP)
            .unwrap()
            .with_builtin("kernel/fs/9p/9p.ko\nkernel/net/9p/9pnet_virtio.ko\n");
        let order = dep.load_order(HOST_LAB_MODULES).unwrap();
        let names: Vec<_> = order.iter().map(|p| module_name(p)).collect();
        let pos = |n: &str| names.iter().position(|m| *m == n).unwrap();
        assert!(pos("can") < pos("can-raw"), "{names:?}");
        assert!(pos("can-dev") < pos("vcan"), "{names:?}");
        assert!(!names.contains(&"kvaser_pci"), "{names:?}");
    }

    #[test]
    fn missing_module_is_named() {
        let dep = ModulesDep::parse(DEP).unwrap();
        let err = dep.load_order(&["9p"]).unwrap_err().to_string();
        assert!(err.contains("\"9p\""), "{err}");
    }

    #[test]
    fn builtin_modules_need_no_loading() {
        let dep = ModulesDep::parse(DEP)
            .unwrap()
            .with_builtin("kernel/fs/9p/9p.ko\nkernel/net/9p/9pnet.ko\n");
        assert!(dep.is_builtin("9p"));
        let order = dep.load_order(&["9p", "vcan"]).unwrap();
        assert_eq!(
            order.iter().map(|p| module_name(p)).collect::<Vec<_>>(),
            vec!["can-dev", "vcan"]
        );
    }

    #[test]
    fn cycles_and_bad_lines_fail() {
        let e = format!("{:#}", (ModulesDep::parse("no colon here\n")).unwrap_err());
        assert!(e.contains("no ':' in"), "{e}");
        let dep = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        let e = format!("{:#}", (dep.load_order(&["a"])).unwrap_err());
        assert!(e.contains("Dependency cycle in modules.dep at a.ko"), "{e}");
    }
}
