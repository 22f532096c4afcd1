//! libvirt's QEMU driver state on the host: the pid file of a running domain,
//! `/run/libvirt/qemu/NAME.pid` (the system instance's run directory), which holds the
//! QEMU process id. See <https://libvirt.org/drvqemu.html> ("Driver instances").

use crate::{task, SysError, SysRoot};

/// The run directory of libvirt's system QEMU driver.
pub const QEMU_RUN_DIR: &str = "run/libvirt/qemu";

/// The pid file of domain `name` (relative to the root).
pub fn pid_file(name: &str) -> String {
    format!("{QEMU_RUN_DIR}/{name}.pid")
}

/// Parse a libvirt pid file's text (the pid, maybe with a newline).
pub fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|p| *p > 0)
}

/// The QEMU process of running domain `name`: the pid in libvirt's pid file, checked to
/// be a QEMU whose `-name` is the domain. `Ok(None)`: no pid file, or its process has
/// exited (the domain is not running). A name with a `/` is refused.
pub fn domain_pid(root: &SysRoot, name: &str) -> Result<Option<u32>, SysError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(SysError::Unsafe {
            what: format!("libvirt domain {name:?}"),
            why: "not a domain name (empty, a '/' or a leading '.')".into(),
        });
    }
    let rel = pid_file(name);
    let text = match root.read_nofollow(&rel) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let pid = parse_pid(&text).ok_or_else(|| SysError::Parse {
        what: root.display(&rel),
        detail: format!("expected a process id, found {:?}", text.trim()),
    })?;
    let args = match task::cmdline(root, pid) {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    match task::qemu_name_of(&args) {
        Some(n) if n == name => Ok(Some(pid)),
        other => Err(SysError::Parse {
            what: root.display(&rel),
            detail: format!(
                "it names pid {pid}, which is not the QEMU of domain {name:?} ({}): a stale pid file",
                match other {
                    Some(n) => format!("its -name is {n:?}"),
                    None => "not a QEMU with -name".into(),
                }
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &SysRoot, rel: &str, text: &str) {
        let p = root.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn the_pid_file_names_the_domains_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        assert_eq!(domain_pid(&root, "ecu0").unwrap(), None, "not running");
        // As libvirtd writes it: the pid without a newline.
        put(&root, &pid_file("ecu0"), "4321");
        assert_eq!(
            domain_pid(&root, "ecu0").unwrap(),
            None,
            "its process exited"
        );
        put(
            &root,
            "proc/4321/cmdline",
            "/usr/bin/qemu-system-x86_64\0-name\0guest=ecu0,debug-threads=on\0-S\0",
        );
        assert_eq!(domain_pid(&root, "ecu0").unwrap(), Some(4321));
        put(&root, "proc/4321/cmdline", "bash\0");
        let e = domain_pid(&root, "ecu0").unwrap_err().to_string();
        assert!(
            e.contains("not the QEMU of domain \"ecu0\"") && e.contains("stale"),
            "{e}"
        );
        put(&root, &pid_file("ecu0"), "garbage\n");
        assert!(domain_pid(&root, "ecu0")
            .unwrap_err()
            .to_string()
            .contains("garbage"));
        assert!(matches!(
            domain_pid(&root, "../x"),
            Err(SysError::Unsafe { .. })
        ));
        assert_eq!(parse_pid("0"), None);
    }
}
