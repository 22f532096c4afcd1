//! The tuning journal (`/run/rt-host/journal.json`, `/run/rt-guest/journal.json`) as
//! `rt-host revert` and `status` read it: [`rt_sys::journal::Journal::read`], then what
//! they make of each entry (its target shown, sched and cpu-list values parsed). Nothing
//! is reverted: a journal is a list of writes to the machine.

use rt_sys::journal::{self, Journal, Target};
use rt_sys::CpuSet;

/// One input.
pub fn run(data: &[u8]) {
    let dir = crate::scratch::fresh("journal");
    std::fs::write(Journal::file_in(&dir), data).expect("scratch journal");
    let j = match Journal::read(&dir) {
        Ok(Some(j)) => j,
        Ok(None) => panic!("a journal file that exists reads as none"),
        Err(e) => {
            crate::refused("Journal::read", &e);
            return;
        }
    };
    for e in j.entries.iter().rev() {
        let _ = e.target.to_string();
        match &e.target {
            Target::ThreadSched { .. } => {
                let _ = journal::parse_sched(&e.prior);
                let _ = journal::parse_sched(&e.applied);
            }
            Target::ThreadAffinity { .. } => {
                let _ = CpuSet::parse(&e.prior);
                let _ = CpuSet::parse(&e.applied);
            }
            _ => {}
        }
    }
}
