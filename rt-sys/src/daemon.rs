//! Host daemons that would undo real-time tuning, and their configuration: irqbalance
//! (moves device IRQs back onto the realtime CPUs every few seconds) and ksmtuned (turns
//! KSM back on under memory pressure).
//!
//! Setup can stop such a daemon (`SIGSTOP`, `SIGCONT` on revert: exact, and no init
//! system needed) or, for irqbalance, ban the realtime CPUs in its environment file
//! (`IRQBALANCE_BANNED_CPULIST`, read by irqbalance 1.8 and later, in
//! `/etc/default/irqbalance` on Debian or `/etc/sysconfig/irqbalance` on Fedora/RHEL) and
//! restart it through its init system, as tuned's irqbalance plugin does. Only the daemons
//! and files of the tables here may appear in a journal. The files are shell fragments
//! that init scripts source, so a value is only ever a CPU list.
//! See irqbalance(1) and <https://github.com/Irqbalance/irqbalance>.

use crate::{SysError, SysRoot};

/// The daemons setup may stop (by the name of their main thread).
pub const DAEMONS: &[&str] = &[IRQBALANCE, KSMTUNED];
/// irqbalance's process name.
pub const IRQBALANCE: &str = "irqbalance";
/// ksmtuned's process name (a shell script).
pub const KSMTUNED: &str = "ksmtuned";

/// irqbalance's environment files, Debian's first.
pub const IRQBALANCE_CONFIGS: &[&str] = &["etc/default/irqbalance", "etc/sysconfig/irqbalance"];
/// The variable that bans CPUs from irqbalance (a CPU list).
pub const BANNED_CPULIST: &str = "IRQBALANCE_BANNED_CPULIST";
/// The variables a journal may set, with the daemon each configures.
pub const CONFIG_KEYS: &[(&str, &str)] = &[(BANNED_CPULIST, IRQBALANCE)];

/// The journal value of a variable that is not in the file.
pub const ABSENT: &str = "(absent)";
/// The journal value of a stopped daemon.
pub const STOPPED: &str = "stopped";
/// The journal value of a running daemon.
pub const RUNNING: &str = "running";

/// Where systemd keeps its runtime state: it exists while systemd is PID 1.
pub const SYSTEMD_RUN: &str = "run/systemd/system";

/// The init-script directory of SysV-style init.
pub fn init_script(name: &str) -> String {
    format!("etc/init.d/{name}")
}

/// The value of `key` in a shell environment file (`KEY=value`, `KEY="value"`, `export
/// KEY=value`; the last assignment wins, comments are skipped).
pub fn config_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .find_map(|l| assignment(l, key))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\''))
}

fn assignment<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let l = line.trim_start();
    let l = l.strip_prefix("export ").map_or(l, str::trim_start);
    l.strip_prefix(key)?.strip_prefix('=').map(str::trim_end)
}

/// `text` with every assignment of `key` removed and, when `value` is given, one
/// `KEY=value` line appended (the text otherwise unchanged).
pub fn edit_config(text: &str, key: &str, value: Option<&str>) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| assignment(l, key).is_none())
        .map(|l| format!("{l}\n"))
        .collect();
    if let Some(v) = value {
        out.push_str(&format!("{key}={v}\n"));
    }
    out
}

/// How a daemon is started and stopped on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// systemd (`systemctl try-restart NAME`).
    Systemd,
    /// A SysV init script (`/etc/init.d/NAME restart`).
    InitScript,
}

/// The init system that manages daemon `name`, if any can be seen from `root`.
pub fn manager(root: &SysRoot, name: &str) -> Option<Manager> {
    if root.exists(SYSTEMD_RUN) {
        Some(Manager::Systemd)
    } else if root.exists(init_script(name)) {
        Some(Manager::InitScript)
    } else {
        None
    }
}

/// Restart `name` through its init system so it reads its configuration again (systemd:
/// only when it runs). On a fake root nothing runs: the tree has no daemons.
pub fn restart(root: &SysRoot, name: &str) -> Result<(), SysError> {
    if !DAEMONS.contains(&name) {
        return Err(SysError::Unsafe {
            what: format!("daemon {name:?}"),
            why: "not a daemon rtvirt manages".into(),
        });
    }
    let refused = |why: String| SysError::NotPermitted {
        what: format!("restarting {name}: {why}"),
        errno: "no restart",
    };
    let Some(m) = manager(root, name) else {
        return Err(refused(format!(
            "no init system manages {name} here (no systemd, no {})",
            root.display(init_script(name))
        )));
    };
    if !root.is_live() {
        return Ok(());
    }
    let (prog, args): (String, Vec<&str>) = match m {
        Manager::Systemd => ("systemctl".into(), vec!["try-restart", name]),
        Manager::InitScript => (root.display(init_script(name)), vec!["restart"]),
    };
    let out = std::process::Command::new(&prog)
        .args(&args)
        .output()
        .map_err(|e| SysError::from_io(format!("running {prog}"), None, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(refused(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian's /etc/default/irqbalance (irqbalance 1.9), shortened.
    const DEBIAN: &str = "# irqbalance is a daemon process that distributes interrupts across\n\
#IRQBALANCE_ONESHOT=\n#IRQBALANCE_BANNED_CPULIST=\nIRQBALANCE_ARGS=\"--hintpolicy=ignore\"\n";

    #[test]
    fn reads_and_edits_the_environment_file() {
        assert_eq!(config_value(DEBIAN, BANNED_CPULIST), None, "commented out");
        let set = edit_config(DEBIAN, BANNED_CPULIST, Some("2-7"));
        assert!(set.starts_with(DEBIAN), "{set}");
        assert!(set.ends_with("IRQBALANCE_BANNED_CPULIST=2-7\n"), "{set}");
        assert_eq!(config_value(&set, BANNED_CPULIST), Some("2-7"));
        let twice = edit_config(&set, BANNED_CPULIST, Some("3"));
        assert_eq!(
            twice.matches("\nIRQBALANCE_BANNED_CPULIST=").count(),
            1,
            "{twice}"
        );
        assert!(
            twice.ends_with("\nIRQBALANCE_BANNED_CPULIST=3\n"),
            "{twice}"
        );
        assert_eq!(edit_config(&set, BANNED_CPULIST, None), DEBIAN);
        assert_eq!(
            config_value("export IRQBALANCE_BANNED_CPULIST=\"1,3\"\n", BANNED_CPULIST),
            Some("1,3")
        );
        assert_eq!(
            config_value("IRQBALANCE_BANNED_CPULISTX=1\n", BANNED_CPULIST),
            None
        );
    }

    #[test]
    fn restarting_needs_an_init_system_and_a_known_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let e = restart(&root, IRQBALANCE).unwrap_err();
        assert!(e.is_not_permitted(), "{e}");
        assert!(
            e.to_string().contains("no init system manages irqbalance"),
            "{e}"
        );
        std::fs::create_dir_all(dir.path().join("etc/init.d")).unwrap();
        std::fs::write(dir.path().join("etc/init.d/irqbalance"), "").unwrap();
        assert_eq!(manager(&root, IRQBALANCE), Some(Manager::InitScript));
        restart(&root, IRQBALANCE).unwrap();
        assert!(matches!(
            restart(&root, "sshd"),
            Err(SysError::Unsafe { .. })
        ));
    }
}
