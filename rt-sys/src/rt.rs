//! What a real-time measurement thread needs from the kernel: `mlockall(2)`,
//! `clock_gettime(2)` on `CLOCK_MONOTONIC` / `CLOCK_REALTIME`, `clock_nanosleep(2)` with
//! `TIMER_ABSTIME`, a prefaulted stack, the PM QoS holder `/dev/cpu_dma_latency`, and the
//! ftrace `trace_marker` / `tracing_on` files used to stop a trace at a latency spike.
//!
//! The functions called in a hot loop ([`monotonic_ns`], [`realtime_ns`],
//! [`sleep_until_monotonic`], [`sleep_until_realtime`], [`Ftrace::mark`]) neither allocate
//! nor lock.
//! See <https://docs.kernel.org/power/pm_qos_interface.html> (cpu_dma_latency) and
//! <https://docs.kernel.org/trace/ftrace.html> (trace_marker, tracing_on).

use std::fs::File;
use std::io::{Read, Write};

use nix::errno::Errno;

use crate::{SysError, SysRoot};

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

/// Lock all current and future pages of the process in RAM (`MCL_CURRENT | MCL_FUTURE`),
/// so that no page fault lands in a measurement.
pub fn mlockall() -> Result<(), SysError> {
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if r != 0 {
        return Err(SysError::from_io(
            "mlockall(MCL_CURRENT|MCL_FUTURE)",
            None,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Lock what the process has mapped as it is touched (`MCL_CURRENT | MCL_ONFAULT`) and
/// every future mapping in full (`MCL_FUTURE`, populated at `mmap` time).
///
/// Unlike [`mlockall`], the parts of the binary and libraries never executed are not read
/// into RAM: the resident set stays at what the program uses. The caller must touch what
/// its hot loop needs (code, stack) before measuring; memory allocated afterwards is
/// resident and locked from the start. See `mlockall(2)` (MCL_ONFAULT, Linux 4.4).
pub fn mlockall_touched() -> Result<(), SysError> {
    let lock = |flags: libc::c_int, what: &str| {
        // SAFETY: mlockall takes flags only and touches no memory of ours.
        let r = unsafe { libc::mlockall(flags) };
        if r != 0 {
            return Err(SysError::from_io(
                what.to_string(),
                None,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    };
    lock(
        libc::MCL_CURRENT | libc::MCL_ONFAULT,
        "mlockall(MCL_CURRENT|MCL_ONFAULT)",
    )?;
    // Without MCL_CURRENT the current mappings keep their on-fault locking.
    lock(libc::MCL_FUTURE, "mlockall(MCL_FUTURE)")
}

/// The mappings of file `path` in `/proc/self/maps` text: (start, end, perms).
pub fn maps_of<'a>(maps: &'a str, path: &str) -> Vec<(usize, usize, &'a str)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            // offset, dev, inode, then the path (which may contain spaces).
            let p: Vec<&str> = f.skip(3).collect();
            if p.join(" ") != path {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
                perms,
            ))
        })
        .collect()
}

/// Apply `advice` to our own executable's mappings whose permissions `want` accepts.
fn advise_exe(
    root: &SysRoot,
    advice: libc::c_int,
    call: &'static str,
    want: impl Fn(&str) -> bool,
) -> Result<usize, SysError> {
    let exe = root
        .path("proc/self/exe")
        .read_link()
        .map_err(|e| SysError::from_io(root.display("proc/self/exe"), None, e))?;
    let maps = root.read("proc/self/maps")?;
    let mut n = 0;
    for (a, b, perms) in maps_of(&maps, &exe.to_string_lossy()) {
        if !want(perms) {
            continue;
        }
        // SAFETY: the range is a whole mapping of our own executable, page aligned as the
        // kernel lists it; the callers pass advice that changes paging only (MADV_RANDOM)
        // or drops read-only, never-written text pages that fault back in from the file
        // (MADV_DONTNEED on r-x mappings).
        let r = unsafe { libc::madvise(a as *mut libc::c_void, b - a, advice) };
        if r != 0 {
            return Err(SysError::Syscall {
                call,
                what: exe.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        n += 1;
    }
    Ok(n)
}

/// Tell the kernel not to map neighbouring pages of our own executable on each page fault
/// (`madvise(MADV_RANDOM)`: no fault-around, no read-ahead), so that with
/// [`mlockall_touched`] the resident set is the code that runs, not the whole binary.
/// Returns the number of mappings advised.
pub fn advise_exe_random(root: &SysRoot) -> Result<usize, SysError> {
    advise_exe(root, libc::MADV_RANDOM, "madvise(MADV_RANDOM)", |_| true)
}

/// Unmap our executable's code pages (`madvise(MADV_DONTNEED)` on the `r-x` mappings,
/// which are never written): start-up code (argument parsing, profile loading) leaves
/// the resident set, and what runs afterwards faults back in page by page. Call it
/// before [`mlockall_touched`]. Returns the number of mappings dropped.
pub fn drop_exe_text(root: &SysRoot) -> Result<usize, SysError> {
    advise_exe(root, libc::MADV_DONTNEED, "madvise(MADV_DONTNEED)", |p| {
        p.starts_with("r-x")
    })
}

/// Keep every thread on glibc's main malloc arena (`mallopt(M_ARENA_MAX, 1)`): a
/// measurement thread that allocates once at start would otherwise get its own arena,
/// whose first heap [`mlockall_touched`] locks in full.
pub fn single_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and changes allocator tuning only.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Page faults (minor + major) of the calling thread so far (`getrusage(RUSAGE_THREAD)`).
pub fn thread_faults() -> u64 {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let f = |v: libc::c_long| u64::try_from(v).unwrap_or(0);
    f(ru.ru_minflt) + f(ru.ru_majflt)
}

/// Undo [`mlockall`].
pub fn munlockall() {
    // SAFETY: munlockall has no arguments.
    unsafe { libc::munlockall() };
}

fn ts_to_ns(ts: &libc::timespec) -> u64 {
    let s = u64::try_from(ts.tv_sec).unwrap_or(0);
    let n = u64::try_from(ts.tv_nsec).unwrap_or(0);
    s.saturating_mul(NS_PER_S).saturating_add(n)
}

fn ns_to_ts(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(ns / NS_PER_S).unwrap_or(libc::time_t::MAX),
        // Below 1e9, always fits.
        tv_nsec: libc::c_long::try_from(ns % NS_PER_S).unwrap_or(0),
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported,
    // so the call cannot fail (and leaves zeros if it did).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts_to_ns(&ts)
}

/// `CLOCK_MONOTONIC` now, in ns (vDSO: no syscall, no allocation).
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` now, in ns since the Unix epoch.
#[inline]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[inline]
fn sleep_until(clock: libc::clockid_t, deadline_ns: u64) -> Result<(), Errno> {
    let ts = ns_to_ts(deadline_ns);
    // SAFETY: `ts` is a valid timespec that outlives the call; with TIMER_ABSTIME the
    // remaining-time pointer is unused and may be null.
    let r = unsafe { libc::clock_nanosleep(clock, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(r))
    }
}

/// Sleep until `CLOCK_MONOTONIC` reaches `deadline_ns` (`clock_nanosleep` with
/// `TIMER_ABSTIME`). Returns `Err(Errno::EINTR)` when a signal handler ran: the caller
/// decides whether to sleep again.
#[inline]
pub fn sleep_until_monotonic(deadline_ns: u64) -> Result<(), Errno> {
    sleep_until(libc::CLOCK_MONOTONIC, deadline_ns)
}

/// Sleep until `CLOCK_REALTIME` reaches `deadline_ns` (ns since the epoch; absolute, so a
/// late wake-up does not drift), sleeping again after a signal handler ran. The clock of
/// the kernel's socket receive timestamps (`SO_TIMESTAMPNS`), so a sender's release
/// times and a receiver's timestamps compare directly. No allocation.
#[inline]
pub fn sleep_until_realtime(deadline_ns: u64) {
    while let Err(Errno::EINTR) = sleep_until(libc::CLOCK_REALTIME, deadline_ns) {}
}

/// Bytes of stack [`prefault_stack`] touches.
pub const PREFAULT_STACK_BYTES: usize = 48 * 1024;

/// Touch [`PREFAULT_STACK_BYTES`] of the calling thread's stack so that (with
/// [`mlockall`]) the pages are resident before the first measurement.
#[inline(never)]
pub fn prefault_stack() {
    let mut buf = [0u8; PREFAULT_STACK_BYTES];
    // Write every page, and keep the compiler from removing the buffer.
    for i in (0..PREFAULT_STACK_BYTES).step_by(4096) {
        buf[i] = 1;
    }
    std::hint::black_box(&mut buf);
}

/// Holds `/dev/cpu_dma_latency` at a value while alive: the kernel keeps idle states
/// with a longer exit latency off as long as the file stays open.
#[derive(Debug)]
pub struct DmaLatency {
    file: File,
    what: String,
}

impl DmaLatency {
    /// Open `/dev/cpu_dma_latency` under `root` and request `us` microseconds (0: stay in
    /// the shallowest state).
    pub fn hold(root: &SysRoot, us: i32) -> Result<DmaLatency, SysError> {
        let rel = crate::cpuidle::DMA_LATENCY;
        let what = root.display(rel);
        let p = root.path(rel);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| SysError::from_io(what.clone(), Some(p.clone()), e))?;
        // The interface takes a binary s32 (or a hex string); binary is the documented form.
        file.write_all(&us.to_ne_bytes())
            .map_err(|e| SysError::from_io(what.clone(), Some(p), e))?;
        Ok(DmaLatency { file, what })
    }

    /// The value the kernel currently enforces (the minimum of all holders), in us.
    pub fn current(&mut self) -> Result<i32, SysError> {
        let mut b = [0u8; 4];
        self.file
            .read_exact(&mut b)
            .map_err(|e| SysError::from_io(self.what.clone(), None, e))?;
        Ok(i32::from_ne_bytes(b))
    }
}

/// The ftrace files a probe needs to stop a trace at a spike: `trace_marker` and
/// `tracing_on`, opened before measuring so that marking needs no allocation.
#[derive(Debug)]
pub struct Ftrace {
    marker: File,
    on: File,
    /// Where the tracing directory was found (display form).
    pub dir: String,
}

impl Ftrace {
    /// Open `trace_marker` and `tracing_on` in `/sys/kernel/tracing` or, when tracefs is
    /// not mounted there, `/sys/kernel/debug/tracing`.
    pub fn open(root: &SysRoot) -> Result<Ftrace, SysError> {
        let dirs = ["sys/kernel/tracing", "sys/kernel/debug/tracing"];
        let dir = dirs
            .iter()
            .find(|d| root.exists(format!("{d}/trace_marker")))
            .ok_or_else(|| SysError::NotFound {
                what: format!(
                    "{} (tracefs not mounted; also not in {})",
                    root.display("sys/kernel/tracing/trace_marker"),
                    root.display("sys/kernel/debug/tracing")
                ),
            })?;
        let open = |name: &str| {
            let rel = format!("{dir}/{name}");
            let p = root.path(&rel);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| SysError::from_io(root.display(&rel), Some(p), e))
        };
        Ok(Ftrace {
            marker: open("trace_marker")?,
            on: open("tracing_on")?,
            dir: root.display(dir),
        })
    }

    /// Write `msg` to `trace_marker` (one `write(2)`, no allocation). Errors are ignored:
    /// this runs in the measurement loop, and the run is stopping anyway.
    pub fn mark(&self, msg: &[u8]) {
        let _ = (&self.marker).write(msg);
    }

    /// Write `0` to `tracing_on`, freezing the trace buffer at this point.
    pub fn stop(&self) {
        let _ = (&self.on).write(b"0");
    }
}

/// Peak resident set size of the calling process so far, in KiB (`getrusage(2)`
/// `ru_maxrss`).
pub fn max_rss_kib() -> u64 {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    u64::try_from(ru.ru_maxrss).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_round_trip() {
        let ns = 12 * NS_PER_S + 345_678_901;
        let ts = ns_to_ts(ns);
        assert_eq!(ts.tv_sec, 12);
        assert_eq!(ts.tv_nsec, 345_678_901);
        assert_eq!(ts_to_ns(&ts), ns);
    }

    #[test]
    fn absolute_sleep_wakes_at_or_after_the_deadline() {
        let t0 = monotonic_ns();
        let deadline = t0 + 2_000_000;
        sleep_until_monotonic(deadline).unwrap();
        let t1 = monotonic_ns();
        assert!(t1 >= deadline, "woke {} ns early", deadline - t1);
        // A deadline in the past returns at once.
        sleep_until_monotonic(t0).unwrap();
        let r = realtime_ns() + 2_000_000;
        sleep_until_realtime(r);
        assert!(realtime_ns() >= r);
        assert!(realtime_ns() > 1_600_000_000 * NS_PER_S);
        prefault_stack();
        assert!(max_rss_kib() > 0);
        // Touching 64 KiB of fresh heap faults at least once.
        let before = thread_faults();
        let v = vec![1u8; 1 << 20];
        std::hint::black_box(&v);
        assert!(thread_faults() > before);
    }

    #[test]
    fn maps_lines_of_a_file() {
        // Lines of /proc/self/maps of rt-guest on this machine.
        let maps =
            "55eaaf77c000-55eaaf827000 r--p 00000000 fd:01 1234 /work/target/release/rt-guest\n\
55eaaf827000-55eaafa4b000 r-xp 000ab000 fd:01 1234 /work/target/release/rt-guest\n\
7fad18472000-7fad185c8000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
7fff3c47b000-7fff3c49c000 rw-p 00000000 00:00 0 [stack]\n";
        let r = maps_of(maps, "/work/target/release/rt-guest");
        assert_eq!(
            r,
            vec![
                (0x55eaaf77c000, 0x55eaaf827000, "r--p"),
                (0x55eaaf827000, 0x55eaafa4b000, "r-xp")
            ]
        );
        assert!(maps_of(maps, "/nope").is_empty());
        assert!(advise_exe_random(&SysRoot::live()).unwrap() >= 1);
        // Dropping the code pages is harmless: what runs next faults them back in.
        assert!(drop_exe_text(&SysRoot::live()).unwrap() >= 1);
        assert_eq!(maps_of(maps, "/nope").len(), 0);
        single_malloc_arena();
    }

    #[test]
    fn ftrace_on_a_fake_tree_marks_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let err = Ftrace::open(&root).unwrap_err();
        assert!(
            err.to_string().contains("/sys/kernel/tracing/trace_marker"),
            "{err}"
        );
        let t = root.path("sys/kernel/debug/tracing");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("trace_marker"), "").unwrap();
        std::fs::write(t.join("tracing_on"), "1").unwrap();
        let f = Ftrace::open(&root).unwrap();
        assert_eq!(f.dir, "/sys/kernel/debug/tracing");
        f.mark(b"hit 120 us");
        f.stop();
        assert_eq!(
            std::fs::read_to_string(t.join("trace_marker")).unwrap(),
            "hit 120 us"
        );
        assert!(std::fs::read_to_string(t.join("tracing_on"))
            .unwrap()
            .starts_with('0'));
    }

    #[test]
    fn dma_latency_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = DmaLatency::hold(&SysRoot::new(dir.path()), 0).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("/dev/cpu_dma_latency"));
    }
}
