//! Scheduling policy, priority and CPU affinity of threads, by thread id:
//! `sched_setscheduler(2)`, `sched_getscheduler(2)`, `sched_setaffinity(2)`.
//!
//! A tid of 0 means the calling thread. Errors name the thread and map EPERM to
//! "not permitted here". See <https://man7.org/linux/man-pages/man7/sched.7.html>.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CpuSet, SysError};

/// A Linux scheduling policy that rtvirt sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// SCHED_OTHER (CFS/EEVDF), priority 0.
    Other,
    /// SCHED_FIFO, priority 1..=99.
    Fifo,
    /// SCHED_RR, priority 1..=99.
    Rr,
    /// SCHED_BATCH, priority 0.
    Batch,
    /// SCHED_IDLE, priority 0.
    Idle,
}

impl Policy {
    /// The kernel's policy number.
    pub fn to_raw(self) -> i32 {
        match self {
            Policy::Other => libc::SCHED_OTHER,
            Policy::Fifo => libc::SCHED_FIFO,
            Policy::Rr => libc::SCHED_RR,
            Policy::Batch => libc::SCHED_BATCH,
            Policy::Idle => libc::SCHED_IDLE,
        }
    }

    /// The policy for a kernel policy number (as in `/proc/PID/stat` field 41).
    pub fn from_raw(raw: i32) -> Option<Policy> {
        match raw {
            libc::SCHED_OTHER => Some(Policy::Other),
            libc::SCHED_FIFO => Some(Policy::Fifo),
            libc::SCHED_RR => Some(Policy::Rr),
            libc::SCHED_BATCH => Some(Policy::Batch),
            libc::SCHED_IDLE => Some(Policy::Idle),
            _ => None,
        }
    }

    /// True for the real-time policies (FIFO, RR), whose priority is 1..=99.
    pub fn is_realtime(self) -> bool {
        matches!(self, Policy::Fifo | Policy::Rr)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Other => "other",
            Policy::Fifo => "fifo",
            Policy::Rr => "rr",
            Policy::Batch => "batch",
            Policy::Idle => "idle",
        })
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "other" | "normal" => Ok(Policy::Other),
            "fifo" => Ok(Policy::Fifo),
            "rr" => Ok(Policy::Rr),
            "batch" => Ok(Policy::Batch),
            "idle" => Ok(Policy::Idle),
            _ => Err(format!(
                "unknown policy {s:?} (other, fifo, rr, batch, idle)"
            )),
        }
    }
}

/// A policy with its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedParams {
    /// The policy.
    pub policy: Policy,
    /// The static priority (0 for non-realtime policies).
    pub priority: u32,
}

impl fmt::Display for SchedParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.policy, self.priority)
    }
}

fn who(tid: u32) -> String {
    if tid == 0 {
        "the calling thread".to_string()
    } else {
        format!("thread {tid}")
    }
}

fn as_pid(tid: u32) -> Result<libc::pid_t, SysError> {
    libc::pid_t::try_from(tid).map_err(|_| SysError::NotFound { what: who(tid) })
}

fn syscall_err(call: &'static str, tid: u32) -> SysError {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ESRCH) => {
            SysError::from_io(format!("{call} on {}", who(tid)), None, e)
        }
        _ => SysError::Syscall {
            call,
            what: who(tid),
            source: e,
        },
    }
}

/// The policy and priority of thread `tid`.
pub fn get_sched(tid: u32) -> Result<SchedParams, SysError> {
    let pid = as_pid(tid)?;
    // SAFETY: sched_getscheduler takes a plain pid and touches no memory of ours.
    let raw = unsafe { libc::sched_getscheduler(pid) };
    if raw < 0 {
        return Err(syscall_err("sched_getscheduler", tid));
    }
    // SCHED_RESET_ON_FORK may be or'ed into the result.
    let raw = raw & !libc::SCHED_RESET_ON_FORK;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, writable sched_param for the duration of the call.
    if unsafe { libc::sched_getparam(pid, &mut param) } < 0 {
        return Err(syscall_err("sched_getparam", tid));
    }
    let policy = Policy::from_raw(raw).ok_or_else(|| SysError::Parse {
        what: who(tid),
        detail: format!("unsupported scheduling policy {raw}"),
    })?;
    Ok(SchedParams {
        policy,
        priority: u32::try_from(param.sched_priority).unwrap_or(0),
    })
}

/// Set the policy and priority of thread `tid` (0: the calling thread).
pub fn set_sched(tid: u32, p: SchedParams) -> Result<(), SysError> {
    let pid = as_pid(tid)?;
    let prio = i32::try_from(p.priority).map_err(|_| SysError::Parse {
        what: who(tid),
        detail: format!("priority {} out of range", p.priority),
    })?;
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    if unsafe { libc::sched_setscheduler(pid, p.policy.to_raw(), &param) } < 0 {
        return Err(syscall_err("sched_setscheduler", tid));
    }
    Ok(())
}

/// The CPU affinity of thread `tid`.
pub fn get_affinity(tid: u32) -> Result<CpuSet, SysError> {
    let pid = as_pid(tid)?;
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and the size passed is its size.
    if unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } < 0
    {
        return Err(syscall_err("sched_getaffinity", tid));
    }
    let mut out = CpuSet::new();
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            out.insert(u32::try_from(cpu).unwrap_or(u32::MAX));
        }
    }
    Ok(out)
}

/// Pin thread `tid` (0: the calling thread) to `cpus`.
pub fn set_affinity(tid: u32, cpus: &CpuSet) -> Result<(), SysError> {
    let pid = as_pid(tid)?;
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter() {
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return Err(SysError::Parse {
                what: who(tid),
                detail: format!("CPU {cpu} too high"),
            });
        }
        // SAFETY: checked above that `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t and the size passed is its size.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(syscall_err("sched_setaffinity", tid));
    }
    Ok(())
}

/// Stop (`SIGSTOP`) or continue (`SIGCONT`) process `pid` (a daemon rtvirt pauses).
pub fn stop_process(pid: u32, stop: bool) -> Result<(), SysError> {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(as_pid(pid)?);
    let sig = if stop {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    kill(p, sig)
        .map_err(|e| SysError::from_io(format!("kill({sig}) of process {pid}"), None, e.into()))
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    u32::try_from(tid).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_round_trip() {
        for p in [
            Policy::Other,
            Policy::Fifo,
            Policy::Rr,
            Policy::Batch,
            Policy::Idle,
        ] {
            assert_eq!(Policy::from_raw(p.to_raw()), Some(p));
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        let e = ("deadline".parse::<Policy>()).unwrap_err().to_string();
        assert!(e.contains("unknown policy \"deadline\""), "{e}");
    }

    #[test]
    fn own_affinity_and_policy_are_readable() {
        let me = gettid();
        let cpus = get_affinity(me).unwrap();
        assert!(!cpus.is_empty());
        // Setting our own affinity to what it already is needs no privilege.
        set_affinity(0, &cpus).unwrap();
        assert_eq!(get_affinity(0).unwrap(), cpus);
        let s = get_sched(0).unwrap();
        assert!(!s.policy.is_realtime() || s.priority > 0);
    }

    #[test]
    fn vanished_thread_is_not_found() {
        // PIDs above pid_max never exist.
        let e = get_affinity(4_194_999).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}
