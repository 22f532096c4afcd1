//! Daemons that would undo the tuning ([`rt_sys::daemon`]): irqbalance, which moves device
//! IRQs back onto the realtime CPUs, banned from them (`host.irqbalance: Ban`, as tuned's
//! irqbalance plugin) or stopped (`Stop`); ksmtuned, which turns KSM back on, stopped with
//! the realtime-virtual-host set.

use profiles::{Host, Irqbalance};
use rt_sys::daemon::{self, IRQBALANCE, KSMTUNED};
use rt_sys::task::{self, TaskStat};
use rt_sys::CpuSet;

use super::{Action, Change, Status, B};
use crate::error::{sys, TuneError};

fn running(b: &B<'_, '_>, name: &str) -> Result<Vec<TaskStat>, TuneError> {
    task::find_by_comm(b.root(), name).map_err(sys(format!("Looking for {name}")))
}

/// Each running instance of `name` stopped (already stopped ones are ok).
fn stop_each(b: &mut B<'_, '_>, item: &str, name: &str, why: &str) -> Result<(), TuneError> {
    let found = running(b, name)?;
    if found.is_empty() {
        b.push(Change::report(
            item,
            name,
            "not running",
            daemon::STOPPED,
            Status::Ok,
        ));
    }
    for st in found {
        let stopped = st.state == 'T';
        let c = Change::report(
            item,
            format!("{name} (pid {})", st.tid),
            if stopped {
                daemon::STOPPED
            } else {
                daemon::RUNNING
            },
            daemon::STOPPED,
            Status::Ok,
        )
        .note(why.to_string());
        b.push(if stopped {
            c
        } else {
            c.act(Action::StopDaemon {
                pid: st.tid,
                start_time: st.start_time,
                name: name.into(),
            })
        });
    }
    Ok(())
}

/// The irqbalance stage (nothing when `host.irqs.skip` leaves IRQs alone).
pub(super) fn irqbalance(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    if host.irqs.skip {
        return Ok(());
    }
    const UNDO: &str = "irqbalance moves device IRQs every 10 s and would put them back on \
                        the realtime CPUs";
    match host.irqbalance {
        Irqbalance::Stop => stop_each(b, "irqbalance", IRQBALANCE, UNDO),
        Irqbalance::Leave => {
            let found = running(b, IRQBALANCE)?;
            let c = Change::report(
                "irqbalance",
                IRQBALANCE,
                if found.is_empty() {
                    "not running"
                } else {
                    daemon::RUNNING
                },
                "(left alone)",
                if found.is_empty() {
                    Status::Ok
                } else {
                    Status::Warn
                },
            );
            b.push(if found.is_empty() {
                c
            } else {
                c.note(format!("{UNDO} (host.irqbalance: Leave)"))
                    .fix("host.irqbalance: Ban or Stop")
            });
            Ok(())
        }
        Irqbalance::Ban => ban(b, host),
    }
}

/// `IRQBALANCE_BANNED_CPULIST=<realtime CPUs>` in irqbalance's environment file, and a
/// restart through its init system when it runs.
fn ban(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    let root = b.root();
    let found = running(b, IRQBALANCE)?;
    let want = host.realtime_cpus.to_string();
    let Some(path) = daemon::IRQBALANCE_CONFIGS.iter().find(|p| root.exists(p)) else {
        let c = Change::report(
            "irqbalance",
            IRQBALANCE,
            if found.is_empty() {
                "not installed"
            } else {
                daemon::RUNNING
            },
            format!("{} {want}", daemon::BANNED_CPULIST),
            if found.is_empty() {
                Status::Ok
            } else {
                Status::NotPermitted
            },
        );
        b.push(if found.is_empty() {
            c
        } else {
            c.note(format!(
                "irqbalance runs, but neither {} exists to ban the realtime CPUs in",
                daemon::IRQBALANCE_CONFIGS
                    .iter()
                    .map(|p| root.display(p))
                    .collect::<Vec<_>>()
                    .join(" nor ")
            ))
            .fix("host.irqbalance: Stop")
        });
        return Ok(());
    };
    let text = root
        .read_nofollow(path)
        .map_err(sys(format!("Reading {}", root.display(path))))?;
    let cur = daemon::config_value(&text, daemon::BANNED_CPULIST).unwrap_or(daemon::ABSENT);
    let target = format!("{} in {}", daemon::BANNED_CPULIST, root.display(path));
    let c = Change::report("irqbalance", target, cur, &want, Status::Ok).note(
        "irqbalance 1.8+ leaves the banned CPUs alone (it also skips isolcpus and nohz_full \
         CPUs by itself)",
    );
    let same = CpuSet::parse(cur).is_ok_and(|s| s == host.realtime_cpus);
    b.push(if same {
        c
    } else if !found.is_empty() && daemon::manager(root, IRQBALANCE).is_none() {
        Change {
            status: Status::NotPermitted,
            ..c
        }
        .note(format!(
            "irqbalance (pid {}) runs outside an init system: rt-host cannot restart it to read \
             its configuration",
            found[0].tid
        ))
        .fix("host.irqbalance: Stop, or restart it yourself with the banned CPUs")
    } else {
        c.act(Action::ConfigLine {
            path: (*path).to_string(),
            key: daemon::BANNED_CPULIST.into(),
            value: want,
            prior: cur.to_string(),
        })
    });
    Ok(())
}

/// ksmtuned stopped with the realtime-virtual-host set (which turns KSM off).
pub(super) fn ksmtuned(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    if !host.sysctl.realtime_virtual_host {
        return Ok(());
    }
    stop_each(
        b,
        "ksmtuned",
        KSMTUNED,
        "ksmtuned turns KSM back on under memory pressure (tuned masks it too)",
    )
}

#[cfg(test)]
mod tests {
    use crate::fake::{self, FakeMachine};
    use crate::plan::{build, Ctx, Status};

    fn lab(extra: &str) -> profiles::Host {
        fake::host_from(&format!(
            r#"(housekeeping_cpus: "0", realtime_cpus: "1", {extra} vms: [(name: "lab", memory_mib: 512, vcpus: [(vcpu: 1, cpu: 1, priority: 1)])])"#
        ))
    }

    fn item<'p>(p: &'p crate::plan::Plan, name: &str) -> Vec<&'p crate::plan::Change> {
        p.changes.iter().filter(|c| c.item == name).collect()
    }

    #[test]
    fn irqbalance_gets_the_realtime_cpus_banned_and_they_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        let h = lab("");
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let c = item(&p, "irqbalance");
        assert_eq!(
            (c[0].status, c[0].current.as_str()),
            (Status::Ok, "not installed")
        );
        // Debian's file, irqbalance running, started by its init script.
        let conf = "etc/default/irqbalance";
        m.put(conf, "#IRQBALANCE_BANNED_CPULIST=\nIRQBALANCE_ARGS=\"\"\n");
        m.thread(300, 300, "irqbalance", 1, 0, 0, 0, "0-1");
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        let c = item(&p, "irqbalance")[0];
        assert_eq!(c.status, Status::NotPermitted, "no init system: {c:?}");
        assert!(c
            .note
            .as_deref()
            .unwrap()
            .contains("runs outside an init system"));
        m.put("etc/init.d/irqbalance", "#!/bin/sh\n");
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?}", r.verify_failed);
        let text = m.root.read(conf).unwrap();
        assert!(text.ends_with("\nIRQBALANCE_BANNED_CPULIST=1\n"), "{text}");
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
    }

    #[test]
    fn irqbalance_and_ksmtuned_are_stopped_until_revert() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMachine::new(&dir.path().join("root"));
        m.thread(300, 300, "irqbalance", 1, 0, 0, 0, "0-1");
        m.thread(301, 301, "ksmtuned", 1, 0, 0, 0, "0-1");
        let h = lab("irqbalance: Stop,");
        let p = build("t", &h, &Ctx::new(&m.root)).unwrap();
        for name in ["irqbalance", "ksmtuned"] {
            let c = item(&p, name)[0];
            assert_eq!(
                (c.status, c.current.as_str(), c.desired.as_str()),
                (Status::Differs, "running", "stopped"),
                "{c:?}"
            );
        }
        let jdir = dir.path().join("j");
        let before = m.snapshot();
        let r = fake::setup(&m.root, &h, &jdir).unwrap();
        assert!(r.met(), "{:#?}", r.verify_failed);
        let state = |pid: u32| rt_sys::task::tid_stat(&m.root, pid).unwrap().state;
        assert_eq!((state(300), state(301)), ('T', 'T'));
        fake::revert(&m.root, &jdir);
        m.assert_unchanged(&before);
        // Leave: only a warning that it runs.
        let p = build("t", &lab("irqbalance: Leave,"), &Ctx::new(&m.root)).unwrap();
        assert_eq!(item(&p, "irqbalance")[0].status, Status::Warn);
    }
}
