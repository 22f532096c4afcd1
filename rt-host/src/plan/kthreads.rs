//! Movable kernel threads (children of `kthreadd` without `PF_NO_SETAFFINITY`, not
//! real-time) to the housekeeping CPUs, as tuned's realtime-virtual-host does.

use profiles::Host;
use rt_sys::threads;

use super::{Action, Change, Status, ThreadRef, B};
use crate::error::{sys, TuneError};

/// The kthread stage (when `host.isolation.kthreads`).
pub(super) fn items(b: &mut B<'_, '_>, host: &Host) -> Result<(), TuneError> {
    if !host.isolation.kthreads {
        return Ok(());
    }
    let root = b.root().clone();
    let hk = &host.housekeeping_cpus;
    let mut n_ok = 0usize;
    for pid in rt_sys::task::pids(&root).map_err(sys("Listing processes"))? {
        let Ok(st) = rt_sys::task::tid_stat(&root, pid) else {
            continue;
        };
        let is_kthread = st.flags & threads::PF_KTHREAD != 0 && (pid == 2 || st.ppid == 2);
        if !is_kthread
            || st.flags & threads::PF_NO_SETAFFINITY != 0
            || matches!(st.policy, 1 | 2 | 6)
        {
            continue;
        }
        let Ok(cur) = b.ctx.ops.get_affinity(&root, pid, pid) else {
            continue;
        };
        if cur.is_subset(hk) {
            n_ok += 1;
            continue;
        }
        let t = ThreadRef {
            pid,
            tid: pid,
            start_time: st.start_time,
            name: st.comm.clone(),
        };
        b.push(
            Change::report(
                "kthread",
                format!("affinity of {:?} (tid {pid})", st.comm),
                cur.to_string(),
                hk.to_string(),
                Status::Ok,
            )
            .act(Action::Affinity {
                thread: t,
                cpus: hk.clone(),
                prior: cur,
            }),
        );
    }
    b.push(
        Change::report(
            "kthread",
            "movable kernel threads",
            format!("{n_ok} already on {hk}"),
            format!("on {hk}"),
            Status::Ok,
        )
        .note("per-CPU kernel threads (PF_NO_SETAFFINITY) and real-time ones are never moved"),
    );
    Ok(())
}
