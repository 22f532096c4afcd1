//! The tuning journal (`/run/rt-host/journal.json`, `/run/rt-guest/journal.json`) as
//! `rt-host revert` and `status` read it: [`Journal::read`] (the directory private, the
//! file 0600), every entry checked against the kernel interfaces of a typical host
//! ([`Interfaces::check`]), shown, and compared with what is in effect, and the journal's
//! origin with this system's. Nothing is reverted: a journal is a list of writes to the
//! machine, and this target must never make them. Property: an entry the check lets
//! through names a normalized path inside the kernel trees or a cgroup mount, and a cgroup
//! value inside its hierarchy.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

use rt_sys::journal::{Entry, Interfaces, Journal, Origin, Target, KERNEL_TREES};

/// The interfaces of a host with the development machine's cgroup mounts: a fake root
/// whose `/proc/mounts` lists them, read as `rt-host revert` reads the live one.
fn interfaces() -> &'static Interfaces {
    static IFS: std::sync::OnceLock<Interfaces> = std::sync::OnceLock::new();
    IFS.get_or_init(|| {
        let root = crate::scratch::fresh("journal-root");
        let mounts = root.join(rt_sys::cgroup::MOUNTS);
        std::fs::create_dir_all(mounts.parent().expect("a parent")).expect("fake root");
        // kernel-path-ok: the text of a fake /proc/mounts, not a path opened
        let text = "cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\n\
                    cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                    cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        std::fs::write(&mounts, text).expect("fake mounts");
        let ifs = Interfaces::of(&rt_sys::SysRoot::new(root));
        assert_eq!(ifs.cgroup_mounts.len(), 3, "the fake mounts are read");
        ifs
    })
}

/// One input.
pub fn run(data: &[u8]) {
    let dir = crate::scratch::fresh("journal");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("0700");
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(Journal::file_in(&dir))
        .and_then(|mut f| f.write_all(data))
        .expect("scratch journal");
    let j = match Journal::read(&dir) {
        Ok(Some(j)) => j,
        Ok(None) => panic!("a journal file that exists reads as none"),
        Err(e) => {
            crate::refused("Journal::read", &e);
            return;
        }
    };
    let ifs = interfaces();
    for e in j.entries.iter().rev() {
        let _ = e.target.to_string();
        let _ = e.target.thread();
        let _ = e.in_effect(&e.prior);
        match ifs.check(e) {
            Ok(()) => let_through(ifs, e),
            Err(why) => crate::note("Interfaces::check", format_args!("refused: {why}")),
        }
    }
    let here = Origin {
        root: "/".into(),
        boot_id: "6f1f5d4c-2b7e-4d0e-9a51-1c1d3f0e8a42".into(),
        hostname: "hil-host".into(),
        profiles: Vec::new(),
    };
    for m in j.mismatches(&here, None) {
        let _ = m.to_string();
    }
}

fn normalized(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn let_through(ifs: &Interfaces, e: &Entry) {
    let below_mount = |p: &str| {
        ifs.cgroup_mounts.iter().any(|m| {
            p.strip_prefix(m.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
    };
    match &e.target {
        Target::File { path } => assert!(
            normalized(path)
                && (KERNEL_TREES.iter().any(|t| path.starts_with(t)) || below_mount(path)),
            "journal file entry {path:?} let through"
        ),
        Target::Mkdir { path } => assert!(
            normalized(path) && below_mount(path),
            "journal directory entry {path:?} let through"
        ),
        Target::CgroupThread { mount, .. } => {
            assert!(ifs.cgroup_mounts.contains(mount), "cgroup mount {mount:?}");
            for v in [&e.prior, &e.applied] {
                let rest = v
                    .strip_prefix('/')
                    .unwrap_or_else(|| panic!("cgroup path {v:?}"));
                assert!(
                    rest.is_empty() || normalized(rest),
                    "cgroup path {v:?} let through"
                );
            }
        }
        Target::Process { name, .. } => assert!(
            rt_sys::daemon::DAEMONS.contains(&name.as_str()),
            "daemon {name:?} let through"
        ),
        Target::ConfigLine { path, key } => {
            assert!(
                rt_sys::daemon::IRQBALANCE_CONFIGS.contains(&path.as_str()),
                "environment file {path:?} let through"
            );
            assert!(
                rt_sys::daemon::CONFIG_KEYS.iter().any(|(k, _)| k == key),
                "variable {key:?} let through"
            );
        }
        Target::ThreadSched { .. } | Target::ThreadAffinity { .. } => {}
    }
}
