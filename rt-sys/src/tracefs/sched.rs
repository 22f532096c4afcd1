//! The scheduler's view of chosen threads through tracefs: `sched_switch` (who left a
//! CPU, in what state, and who came in), `sched_wakeup` (a thread made runnable) and
//! `sched_migrate_task` (a thread moved to another CPU), recorded in a tracing instance
//! of its own (`instances/rtvirt-trace-PID`) so that the top-level tracer and other
//! tools' instances are left alone.
//!
//! [`parse_line`] parses one line of `trace`/`trace_pipe` text (pure, tested on text
//! captured on real kernels); [`Recorder`] sets up the instance (event filters on the
//! threads and CPUs, per-CPU buffer size, `trace_clock` `mono`), drains `trace_pipe`,
//! writes clock markers that tie the trace clock to `CLOCK_REALTIME`, and removes the
//! instance (or, without instance support, puts every top-level file back) when closed
//! or dropped. See <https://docs.kernel.org/trace/events.html> (filters, the generic
//! `CPU` field) and <https://docs.kernel.org/trace/ftrace.html> (instances, `per_cpu`).

use crate::{CpuSet, SysError, SysRoot};

use super::{Instance, Session, Tracefs};

/// Prefix of the instances the recorder creates (`rtvirt-trace-<pid>`).
pub const INSTANCE_PREFIX: &str = "rtvirt-trace-";

/// Text of the clock markers the recorder writes (`rtvirt-sync <seq>`).
pub const MARK: &str = "rtvirt-sync";

/// The events recorded.
pub const EVENTS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_migrate_task"];

/// A `sched_switch`: `prev` left the CPU in `prev_state`, `next` came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The task that left.
    pub prev_comm: String,
    /// Its pid (thread id).
    pub prev_pid: u32,
    /// Its kernel priority (`prio`: 0-99 real-time, 100-139 normal, -1 deadline).
    pub prev_prio: i32,
    /// Its state: `R`/`R+` (preempted, still runnable), `S` (sleeping), `D`, `I`, ...
    pub prev_state: String,
    /// The task that came in.
    pub next_comm: String,
    /// Its pid.
    pub next_pid: u32,
    /// Its priority.
    pub next_prio: i32,
}

/// What one trace line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedEvent {
    /// `sched_switch`.
    Switch(Switch),
    /// `sched_wakeup`: `pid` made runnable on `target_cpu`.
    Wakeup {
        /// Its comm.
        comm: String,
        /// Its pid.
        pid: u32,
        /// Its priority.
        prio: i32,
        /// The CPU it will run on.
        target_cpu: u32,
    },
    /// `sched_migrate_task`: `pid` moved from `orig_cpu` to `dest_cpu`.
    Migrate {
        /// Its comm.
        comm: String,
        /// Its pid.
        pid: u32,
        /// Its priority.
        prio: i32,
        /// From.
        orig_cpu: u32,
        /// To.
        dest_cpu: u32,
    },
    /// A `tracing_mark_write` (`trace_marker`) line's text.
    Marker(String),
}

/// One parsed trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedLine {
    /// The CPU it happened on.
    pub cpu: u32,
    /// Trace clock, ns (the text has us: the last three digits are 0).
    pub ts_ns: u64,
    /// What happened.
    pub event: SchedEvent,
}

/// The `[NNN]` CPU field and what follows it: the first `[digits]` between blanks (a comm
/// such as `CPU 0/TCG` or `kworker/1:1` holds neither brackets with digits only nor is
/// followed by a blank).
fn cpu_and_rest(line: &str) -> Option<(u32, &str)> {
    let mut from = 0;
    while let Some(a) = line[from..].find('[').map(|i| from + i) {
        let b = a + line[a..].find(']')?;
        let inner = &line[a + 1..b];
        if !inner.is_empty()
            && inner.bytes().all(|c| c.is_ascii_digit())
            && line[b + 1..].starts_with(' ')
        {
            return Some((inner.parse().ok()?, &line[b + 1..]));
        }
        from = a + 1;
    }
    None
}

/// `10041.362960` (seconds with a fraction) or `123456789` (a counter clock) -> ns.
fn parse_ts(t: &str) -> Option<u64> {
    match t.split_once('.') {
        Some((s, frac)) => {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let scale = 10u64.pow(9 - u32::try_from(frac.len()).ok()?);
            let f: u64 = frac.parse().ok()?;
            s.parse::<u64>()
                .ok()?
                .checked_mul(1_000_000_000)?
                .checked_add(f * scale)
        }
        None => t.parse().ok(),
    }
}

/// Split `key=value` off the end of `s` (the last blank-separated token): (rest, value).
fn take_last<'a>(s: &'a str, key: &str) -> Option<(&'a str, &'a str)> {
    let (rest, tok) = s.rsplit_once(' ')?;
    Some((rest, tok.strip_prefix(key)?.strip_prefix('=')?))
}

/// `comm=NAME pid=N prio=N` + `tail` fields, parsed from the right (a comm may hold
/// blanks); older kernels' `success=1` before `target_cpu` is skipped.
fn task_fields(s: &str) -> Option<(String, u32, i32)> {
    let s = match take_last(s, "success") {
        Some((rest, _)) => rest,
        None => s,
    };
    let (s, prio) = take_last(s, "prio")?;
    let (s, pid) = take_last(s, "pid")?;
    let comm = s.strip_prefix("comm=")?;
    Some((comm.to_string(), pid.parse().ok()?, prio.parse().ok()?))
}

fn parse_switch(p: &str) -> Option<Switch> {
    let (s, next_prio) = take_last(p, "next_prio")?;
    let (s, next_pid) = take_last(s, "next_pid")?;
    // The split between the two tasks: the first ` ==> next_comm=` whose left side ends in
    // the three prev fields (a 15-byte comm cannot fake them).
    let sep = " ==> next_comm=";
    let mut from = 0;
    while let Some(i) = s[from..].find(sep).map(|i| from + i) {
        let (left, next_comm) = (&s[..i], &s[i + sep.len()..]);
        let parsed = take_last(left, "prev_state").and_then(|(l, state)| {
            let (l, prio) = take_last(l, "prev_prio")?;
            let (l, pid) = take_last(l, "prev_pid")?;
            Some((l.strip_prefix("prev_comm=")?, pid, prio, state))
        });
        if let Some((prev_comm, pid, prio, state)) = parsed {
            return Some(Switch {
                prev_comm: prev_comm.to_string(),
                prev_pid: pid.parse().ok()?,
                prev_prio: prio.parse().ok()?,
                prev_state: state.to_string(),
                next_comm: next_comm.to_string(),
                next_pid: next_pid.parse().ok()?,
                next_prio: next_prio.parse().ok()?,
            });
        }
        from = i + 1;
    }
    None
}

fn parse_payload(event: &str, p: &str) -> Option<SchedEvent> {
    match event {
        "sched_switch" => parse_switch(p).map(SchedEvent::Switch),
        "sched_wakeup" => {
            let (s, cpu) = take_last(p, "target_cpu")?;
            let (comm, pid, prio) = task_fields(s)?;
            Some(SchedEvent::Wakeup {
                comm,
                pid,
                prio,
                target_cpu: cpu.parse().ok()?,
            })
        }
        "sched_migrate_task" => {
            let (s, dest) = take_last(p, "dest_cpu")?;
            let (s, orig) = take_last(s, "orig_cpu")?;
            let (comm, pid, prio) = task_fields(s)?;
            Some(SchedEvent::Migrate {
                comm,
                pid,
                prio,
                orig_cpu: orig.parse().ok()?,
                dest_cpu: dest.parse().ok()?,
            })
        }
        "tracing_mark_write" => Some(SchedEvent::Marker(p.to_string())),
        _ => None,
    }
}

/// Parse one line of `trace` or `trace_pipe` text (`<task>-<pid> [CPU] <flags>
/// <secs.us>: <event>: <fields>`); None for headers, other events and broken lines.
pub fn parse_line(line: &str) -> Option<SchedLine> {
    if line.starts_with('#') {
        return None;
    }
    let (cpu, rest) = cpu_and_rest(line)?;
    let mut w = rest.trim_start().splitn(2, ' ');
    let _flags = w.next()?;
    let rest = w.next()?.trim_start();
    let (ts, rest) = rest.split_once(": ")?;
    let ts_ns = parse_ts(ts)?;
    let (event, payload) = rest.split_once(": ")?;
    let event = parse_payload(event, payload.trim_end())?;
    Some(SchedLine { cpu, ts_ns, event })
}

/// `CPU:N [LOST M EVENTS]` (`trace_pipe` after a buffer overrun): M.
pub fn parse_lost(line: &str) -> Option<u64> {
    let i = line.find("[LOST ")?;
    line[i + 6..].split_once(" EVENTS]")?.0.parse().ok()
}

/// `rtvirt-sync <seq>` marker text: the sequence number.
pub fn parse_mark(text: &str) -> Option<u64> {
    text.strip_prefix(MARK)?.trim().parse().ok()
}

/// Counters of one CPU's buffer (`per_cpu/cpuN/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Events overwritten before they were read (`overrun`).
    pub overrun: u64,
    /// Events dropped because the buffer was full (`dropped events`).
    pub dropped: u64,
}

/// Parse `per_cpu/cpuN/stats`.
pub fn parse_cpu_stats(text: &str) -> CpuStats {
    let mut s = CpuStats::default();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "overrun" => s.overrun = v,
                "dropped events" => s.dropped = v,
                _ => {}
            }
        }
    }
    s
}

/// What to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedConfig {
    /// Threads whose switches, wakeups and migrations are recorded (the vCPU threads).
    pub tids: Vec<u32>,
    /// CPUs on which every switch is recorded, whoever ran (the vCPUs' host CPUs); None:
    /// only the switches of `tids`.
    pub cpus: Option<CpuSet>,
    /// Per-CPU buffer, KiB (`buffer_size_kb`).
    pub buffer_kb: u64,
}

/// At most this many threads (one filter term each).
pub const MAX_TIDS: usize = 256;

impl SchedConfig {
    /// Check the settings before touching tracefs.
    pub fn validate(&self) -> Result<(), SysError> {
        let bad = |detail: String| {
            Err(SysError::Parse {
                what: "scheduler trace settings".into(),
                detail,
            })
        };
        if self.tids.is_empty() {
            return bad("no thread to record".into());
        }
        if self.tids.len() > MAX_TIDS {
            return bad(format!("{} threads: at most {MAX_TIDS}", self.tids.len()));
        }
        if self.cpus.as_ref().is_some_and(CpuSet::is_empty) {
            return bad("the CPU list is empty".into());
        }
        if !(64..=1 << 20).contains(&self.buffer_kb) {
            return bad(format!(
                "buffer {} KiB per CPU: give 64 KiB to 1 GiB",
                self.buffer_kb
            ));
        }
        Ok(())
    }

    /// The `sched_switch` filter: switches from or to a thread, or on a CPU.
    pub fn switch_filter(&self) -> String {
        let mut terms: Vec<String> = self
            .cpus
            .iter()
            .flat_map(|c| c.iter())
            .map(|c| format!("CPU == {c}"))
            .collect();
        for t in &self.tids {
            terms.push(format!("prev_pid == {t}"));
            terms.push(format!("next_pid == {t}"));
        }
        terms.join(" || ")
    }

    /// The `sched_wakeup` and `sched_migrate_task` filter: the threads.
    pub fn task_filter(&self) -> String {
        let terms: Vec<String> = self.tids.iter().map(|t| format!("pid == {t}")).collect();
        terms.join(" || ")
    }

    /// The files the recorder writes, in order (reversed when put back).
    pub fn settings(&self, clocks: &str) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if clocks
            .split_whitespace()
            .any(|c| c.trim_matches(['[', ']']) == "mono")
        {
            v.push(("trace_clock".to_string(), "mono".to_string()));
        }
        v.push(("buffer_size_kb".into(), self.buffer_kb.to_string()));
        for e in EVENTS {
            let f = if e == "sched_switch" {
                self.switch_filter()
            } else {
                self.task_filter()
            };
            v.push((format!("events/sched/{e}/filter"), f));
        }
        for e in EVENTS {
            v.push((format!("events/sched/{e}/enable"), "1".into()));
        }
        v
    }
}

/// A clock marker: the trace clock at a marker written between two `CLOCK_REALTIME`
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPoint {
    /// Trace clock of the marker event, ns.
    pub trace_ns: u64,
    /// `CLOCK_REALTIME` just before the write, ns.
    pub realtime_before_ns: u64,
    /// `CLOCK_REALTIME` just after it, ns.
    pub realtime_after_ns: u64,
}

/// The recorder: an instance (or the top level) set up for [`SchedConfig`].
#[derive(Debug)]
pub struct Recorder {
    // Dropped in this order: the session (puts files back) before the instance (rmdir).
    session: Option<Session>,
    instance: Option<Instance>,
    fs: Tracefs,
    clock: String,
    buf: Vec<u8>,
    carry: String,
    seq: u64,
    pending: Vec<(u64, u64, u64)>,
    /// Clock markers seen so far.
    pub clock_points: Vec<ClockPoint>,
    /// Events the kernel reported lost in `trace_pipe` (`[LOST N EVENTS]`).
    pub lost: u64,
    /// Lines that were neither recorded events, markers nor headers.
    pub other_lines: u64,
}

/// Remove the recorder's instances left behind by processes that are gone (a `kill -9`).
/// Returns their names.
pub fn remove_stale(fs: &Tracefs) -> Vec<String> {
    let root = fs.root();
    let Ok(names) = root.list(fs.rel("instances")) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for n in names {
        let Some(pid) = n.strip_prefix(INSTANCE_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !root.exists(format!("proc/{pid}")) {
            let p = root.path(fs.rel(&format!("instances/{n}")));
            if std::fs::remove_dir(p).is_ok() {
                removed.push(n);
            }
        }
    }
    removed
}

impl Recorder {
    /// Set up the recording: in a new instance where tracefs has `instances/`, else at the
    /// top level (refused while another tracer or these events are in use there).
    pub fn start(root: &SysRoot, cfg: &SchedConfig) -> Result<Recorder, SysError> {
        cfg.validate()?;
        let top = Tracefs::find(root)?;
        if !top.has("events/sched/sched_switch/enable") {
            return Err(SysError::NotFound {
                what: format!(
                    "{} (the kernel has no scheduler trace events)",
                    top.display("events/sched/sched_switch")
                ),
            });
        }
        let instance = if top.has("instances") {
            remove_stale(&top);
            Some(top.instance(&format!("{INSTANCE_PREFIX}{}", std::process::id()))?)
        } else {
            check_top_level_free(&top)?;
            None
        };
        let fs = instance
            .as_ref()
            .map(|i| i.tracefs().clone())
            .unwrap_or(top);
        let clocks = fs.read("trace_clock").unwrap_or_default();
        let settings = cfg.settings(&clocks);
        let refs: Vec<(&str, String)> = settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let mut session = Session::start(fs.clone(), "nop", &refs)?;
        // Whatever the buffer held before (the top level): read and dropped.
        session.drain(&mut Vec::new())?;
        let clock = super::selected(&fs.read("trace_clock").unwrap_or_default());
        Ok(Recorder {
            session: Some(session),
            instance,
            fs,
            clock,
            buf: Vec::new(),
            carry: String::new(),
            seq: 0,
            pending: Vec::new(),
            clock_points: Vec::new(),
            lost: 0,
            other_lines: 0,
        })
    }

    /// Where it records (the instance directory, for messages).
    pub fn place(&self) -> String {
        self.fs.root().display(&self.fs.dir)
    }

    /// The trace clock in force (`mono` where the kernel has it).
    pub fn trace_clock(&self) -> &str {
        &self.clock
    }

    /// True when it records in an instance of its own.
    pub fn in_instance(&self) -> bool {
        self.instance.is_some()
    }

    /// Write a clock marker between two `CLOCK_REALTIME` reads; its trace time arrives
    /// with the next [`Recorder::drain`].
    pub fn mark_clock(&mut self) -> Result<(), SysError> {
        self.seq += 1;
        let before = crate::rt::realtime_ns();
        self.fs
            .write_line("trace_marker", &format!("{MARK} {}", self.seq))?;
        let after = crate::rt::realtime_ns();
        self.pending.push((self.seq, before, after));
        Ok(())
    }

    /// Read what `trace_pipe` holds and hand every recorded event to `sink` (markers are
    /// kept as [`ClockPoint`]s, lost-event notes counted). Returns the events handed.
    pub fn drain(&mut self, sink: &mut dyn FnMut(SchedLine)) -> Result<usize, SysError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(0);
        };
        self.buf.clear();
        session.drain(&mut self.buf)?;
        let text = String::from_utf8_lossy(&self.buf);
        self.carry.push_str(&text);
        let Some(end) = self.carry.rfind('\n') else {
            return Ok(0);
        };
        let complete: String = self.carry.drain(..=end).collect();
        let mut n = 0;
        for line in complete.lines() {
            n += usize::from(self.take_line(line, sink));
        }
        Ok(n)
    }

    fn take_line(&mut self, line: &str, sink: &mut dyn FnMut(SchedLine)) -> bool {
        if line.trim().is_empty() || line.starts_with('#') {
            return false;
        }
        if let Some(n) = parse_lost(line) {
            self.lost = self.lost.saturating_add(n);
            return false;
        }
        match parse_line(line) {
            Some(SchedLine {
                ts_ns,
                event: SchedEvent::Marker(m),
                ..
            }) => {
                let seq = parse_mark(&m);
                if let Some(i) = self.pending.iter().position(|p| Some(p.0) == seq) {
                    let (_, before, after) = self.pending.remove(i);
                    self.clock_points.push(ClockPoint {
                        trace_ns: ts_ns,
                        realtime_before_ns: before,
                        realtime_after_ns: after,
                    });
                } else {
                    self.other_lines += 1;
                }
                false
            }
            Some(l) => {
                sink(l);
                true
            }
            None => {
                self.other_lines += 1;
                false
            }
        }
    }

    /// Stop recording (`tracing_on` 0; what the buffer holds can still be drained).
    pub fn pause(&self) -> Result<(), SysError> {
        self.fs.write_line("tracing_on", "0")
    }

    /// The per-CPU buffer counters (overruns, drops) of `cpus`.
    pub fn cpu_stats(&self, cpus: &CpuSet) -> Vec<(u32, CpuStats)> {
        cpus.iter()
            .filter_map(|c| {
                let t = self.fs.read(&format!("per_cpu/cpu{c}/stats")).ok()?;
                Some((c, parse_cpu_stats(&t)))
            })
            .collect()
    }

    /// Stop: put every file back and remove the instance. The first error is returned,
    /// after everything was tried.
    pub fn close(mut self) -> Result<(), SysError> {
        let a = self.session.take().map_or(Ok(()), Session::close);
        let b = self.instance.take().map_or(Ok(()), Instance::close);
        a.and(b)
    }
}

/// At the top level, refuse while a tracer runs or the scheduler events are on: the
/// recording would change what another tool records.
fn check_top_level_free(fs: &Tracefs) -> Result<(), SysError> {
    let tracer = super::selected(&fs.read("current_tracer")?);
    let busy = |why: String| {
        Err(SysError::Unsafe {
            what: fs.display(""),
            why,
        })
    };
    if tracer != "nop" {
        return busy(format!(
            "tracefs has no instances and its tracer {tracer} is in use"
        ));
    }
    for e in EVENTS {
        let name = format!("events/sched/{e}/enable");
        if fs.read(&name).is_ok_and(|v| v.trim() != "0") {
            return busy(format!(
                "tracefs has no instances and {} is on (another tool records it)",
                fs.display(&name)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on the development machine (6.18, tracefs in /sys/kernel/debug/tracing) in
    // an instance while a QEMU TCG VM ran: see tests/fixtures/README.md.
    const IDLE: &str = include_str!("../../tests/fixtures/sched-host-6.18-idle.txt");
    const BUSY: &str = include_str!("../../tests/fixtures/sched-host-6.18-busy.txt");

    fn all(text: &str) -> Vec<SchedLine> {
        text.lines().filter_map(parse_line).collect()
    }

    #[test]
    fn switches_with_blanks_in_the_comm_are_parsed() {
        let ev = all(IDLE);
        let data = IDLE.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(ev.len(), data, "every event line of the capture parses");
        assert_eq!(
            ev[0],
            SchedLine {
                cpu: 1,
                ts_ns: 10_041_362_960_000,
                event: SchedEvent::Migrate {
                    comm: "CPU 0/TCG".into(),
                    pid: 9210,
                    prio: 120,
                    orig_cpu: 1,
                    dest_cpu: 0
                }
            }
        );
        assert_eq!(
            ev[1].event,
            SchedEvent::Wakeup {
                comm: "CPU 0/TCG".into(),
                pid: 9210,
                prio: 120,
                target_cpu: 0
            }
        );
        let SchedEvent::Switch(s) = &ev[3].event else {
            panic!("{:?}", ev[3]);
        };
        assert_eq!(
            (s.prev_comm.as_str(), s.prev_pid, s.prev_state.as_str()),
            ("CPU 0/TCG", 9210, "S")
        );
        assert_eq!((s.next_comm.as_str(), s.next_pid), ("journal", 9020));
        assert_eq!(ev[3].ts_ns, 10_041_363_296_000);
    }

    #[test]
    fn a_busy_capture_parses_with_its_markers() {
        let ev = all(BUSY);
        let data = BUSY.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(ev.len(), data);
        let marks: Vec<Option<u64>> = ev
            .iter()
            .filter_map(|l| match &l.event {
                SchedEvent::Marker(m) => Some(parse_mark(m)),
                _ => None,
            })
            .collect();
        assert_eq!(marks, vec![Some(1), Some(2)]);
        // Comms with blanks, a colon, and an exiting task (X).
        let names: Vec<&str> = ev
            .iter()
            .filter_map(|l| match &l.event {
                SchedEvent::Switch(s) => Some(s.next_comm.as_str()),
                _ => None,
            })
            .collect();
        assert!(names.contains(&"opt 02c5t5w7ike"), "{names:?}");
        assert!(names.contains(&"memfd:sealed-91"), "{names:?}");
        assert!(ev
            .iter()
            .any(|l| matches!(&l.event, SchedEvent::Switch(s) if s.prev_state == "X")));
        // Times never go backwards within a CPU.
        for cpu in [0, 1] {
            let ts: Vec<u64> = ev
                .iter()
                .filter(|l| l.cpu == cpu)
                .map(|l| l.ts_ns)
                .collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "CPU {cpu}");
        }
    }

    #[test]
    fn fields_are_taken_from_the_right_so_a_comm_cannot_fake_them() {
        // A thread may name itself anything up to 15 bytes.
        let l = " a pid=1-77 [003] d..2. 5.000001: sched_wakeup: comm=a pid=1 pid=77 prio=98 target_cpu=003";
        let e = parse_line(l).unwrap();
        assert_eq!(e.cpu, 3);
        assert_eq!(
            e.event,
            SchedEvent::Wakeup {
                comm: "a pid=1".into(),
                pid: 77,
                prio: 98,
                target_cpu: 3
            }
        );
        let l = " x-5 [000] d..2. 1.5: sched_switch: prev_comm=x ==> y prev_pid=5 prev_prio=120 prev_state=R+ ==> next_comm=[7] z next_pid=6 next_prio=-1";
        let SchedEvent::Switch(s) = parse_line(l).unwrap().event else {
            panic!()
        };
        assert_eq!(s.prev_comm, "x ==> y");
        assert_eq!(
            (s.prev_state.as_str(), s.next_comm.as_str()),
            ("R+", "[7] z")
        );
        assert_eq!((s.next_pid, s.next_prio), (6, -1));
        // Older kernels: success=1 before target_cpu.
        let l = "  <idle>-0 [001] d.h3 10.250000: sched_wakeup: comm=probe/1 pid=900 prio=4 success=1 target_cpu=001";
        assert!(matches!(
            parse_line(l).unwrap().event,
            SchedEvent::Wakeup {
                pid: 900,
                prio: 4,
                target_cpu: 1,
                ..
            }
        ));
        for bad in [
            "# tracer: nop",
            "",
            "x-1 [000] d..2. 1.0: sched_switch: prev_comm=x prev_pid=1",
            "x-1 [000] d..2. 1.0: sched_waking: comm=x pid=1 prio=1 target_cpu=000",
            "x-1 [abc] d..2. 1.0: sched_wakeup: comm=x pid=1 prio=1 target_cpu=000",
            "x-1 [000] d..2. 1.x: sched_wakeup: comm=x pid=1 prio=1 target_cpu=000",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
        assert_eq!(parse_ts("12.5"), Some(12_500_000_000));
        assert_eq!(parse_ts("123456"), Some(123_456));
    }

    #[test]
    fn lost_events_stats_and_marks() {
        assert_eq!(parse_lost("CPU:1 [LOST 1234 EVENTS]"), Some(1234));
        assert_eq!(parse_lost("x-1 [000] d..2. 1.0: foo"), None);
        let st = parse_cpu_stats(include_str!(
            "../../tests/fixtures/sched-per-cpu-stats-6.18.txt"
        ));
        assert_eq!(st, CpuStats::default());
        let st = parse_cpu_stats("entries: 5\noverrun: 17\ncommit overrun: 0\ndropped events: 3\n");
        assert_eq!((st.overrun, st.dropped), (17, 3));
        assert_eq!(parse_mark("rtvirt-sync 42"), Some(42));
        assert_eq!(parse_mark("hello"), None);
    }

    fn cfg() -> SchedConfig {
        SchedConfig {
            tids: vec![9210, 9211],
            cpus: Some(CpuSet::from_cpus([1])),
            buffer_kb: 4096,
        }
    }

    #[test]
    fn filters_and_settings() {
        let c = cfg();
        assert_eq!(
            c.switch_filter(),
            "CPU == 1 || prev_pid == 9210 || next_pid == 9210 || prev_pid == 9211 || next_pid == 9211"
        );
        assert_eq!(c.task_filter(), "pid == 9210 || pid == 9211");
        let s = c.settings("[local] global mono\n");
        assert_eq!(s[0], ("trace_clock".into(), "mono".into()));
        assert_eq!(s[1], ("buffer_size_kb".into(), "4096".into()));
        assert_eq!(s.len(), 8);
        assert!(c
            .settings("[local] global")
            .iter()
            .all(|(n, _)| n != "trace_clock"));
        let e = SchedConfig {
            tids: vec![],
            ..cfg()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("no thread"), "{e}");
        let e = SchedConfig {
            buffer_kb: 1,
            ..cfg()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("64 KiB to 1 GiB"), "{e}");
        let e = SchedConfig {
            cpus: Some(CpuSet::new()),
            ..cfg()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("CPU list is empty"), "{e}");
    }

    /// A fake tracefs without instances (the top-level path): every file the recorder
    /// writes exists with the value a fresh kernel shows.
    fn fake(with_instances: bool) -> (tempfile::TempDir, SysRoot) {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("sys/kernel/tracing");
        for e in EVENTS {
            std::fs::create_dir_all(t.join(format!("events/sched/{e}"))).unwrap();
            std::fs::write(t.join(format!("events/sched/{e}/enable")), "0\n").unwrap();
            std::fs::write(t.join(format!("events/sched/{e}/filter")), "none\n").unwrap();
        }
        std::fs::create_dir_all(t.join("per_cpu/cpu1")).unwrap();
        let pipe = format!(
            "{}\nCPU:1 [LOST 3 EVENTS]\n{}",
            IDLE.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
            "            bash-2646    [000] ...1. 10041.900000: tracing_mark_write: rtvirt-sync 1\n"
        );
        for (f, v) in [
            ("available_tracers", "blk function nop\n"),
            ("current_tracer", "nop\n"),
            ("tracing_on", "1\n"),
            (
                "trace_clock",
                "[local] global counter uptime perf mono mono_raw boot\n",
            ),
            ("buffer_size_kb", "7 (expanded: 1408)\n"),
            ("trace_marker", ""),
            ("trace_pipe", pipe.as_str()),
            ("per_cpu/cpu1/stats", "overrun: 2\ndropped events: 1\n"),
        ] {
            std::fs::write(t.join(f), v).unwrap();
        }
        if with_instances {
            std::fs::create_dir_all(t.join("instances/rtvirt-trace-4000000000")).unwrap();
        }
        let root = SysRoot::new(d.path());
        (d, root)
    }

    #[test]
    fn the_recorder_on_a_fake_top_level_reads_events_and_puts_everything_back() {
        let (_d, root) = fake(false);
        let t = |f: &str| root.read_trim(format!("sys/kernel/tracing/{f}")).unwrap();
        let mut r = Recorder::start(&root, &cfg()).unwrap();
        assert!(!r.in_instance());
        assert_eq!(r.trace_clock(), "mono");
        assert_eq!(t("events/sched/sched_switch/enable"), "1");
        assert!(t("events/sched/sched_switch/filter").starts_with("CPU == 1 || prev_pid"));
        assert_eq!(t("buffer_size_kb"), "4096");
        r.mark_clock().unwrap();
        assert_eq!(t("trace_marker"), "rtvirt-sync 1");
        let mut got = Vec::new();
        // The fake pipe was read (and dropped) at start: as the kernel's would be, it is
        // refilled here.
        std::fs::write(
            root.path("sys/kernel/tracing/trace_pipe"),
            std::fs::read_to_string(root.path("sys/kernel/tracing/trace_pipe")).unwrap(),
        )
        .unwrap();
        let mut r = reopen(r);
        r.drain(&mut |l| got.push(l)).unwrap();
        assert_eq!(got.len(), 35, "the capture's 35 events");
        assert_eq!(r.lost, 3);
        assert_eq!(r.clock_points.len(), 1);
        assert_eq!(r.clock_points[0].trace_ns, 10_041_900_000_000);
        assert!(r.clock_points[0].realtime_after_ns >= r.clock_points[0].realtime_before_ns);
        assert_eq!(
            r.cpu_stats(&CpuSet::from_cpus([1])),
            vec![(
                1,
                CpuStats {
                    overrun: 2,
                    dropped: 1
                }
            )]
        );
        r.close().unwrap();
        assert_eq!(t("events/sched/sched_switch/enable"), "0");
        assert_eq!(t("events/sched/sched_wakeup/filter"), "0", "cleared");
        assert_eq!(t("buffer_size_kb"), "1408", "the size it would have had");
        assert_eq!(t("trace_clock"), "local");
        assert_eq!(t("tracing_on"), "1", "as found");
    }

    /// The session opened `trace_pipe` at start and read it to the end; a fresh pipe
    /// handle sees the refilled file.
    fn reopen(mut r: Recorder) -> Recorder {
        if let Some(s) = r.session.as_mut() {
            s.pipe = None;
        }
        r
    }

    #[test]
    fn a_busy_top_level_is_refused_and_nothing_is_changed() {
        let (_d, root) = fake(false);
        let t = |f: &str| root.read_trim(format!("sys/kernel/tracing/{f}")).unwrap();
        std::fs::write(root.path("sys/kernel/tracing/current_tracer"), "hwlat\n").unwrap();
        let e = Recorder::start(&root, &cfg()).unwrap_err();
        assert!(e.to_string().contains("its tracer hwlat is in use"), "{e}");
        std::fs::write(root.path("sys/kernel/tracing/current_tracer"), "nop\n").unwrap();
        std::fs::write(
            root.path("sys/kernel/tracing/events/sched/sched_wakeup/enable"),
            "1\n",
        )
        .unwrap();
        let e = Recorder::start(&root, &cfg()).unwrap_err();
        assert!(e.to_string().contains("sched_wakeup/enable is on"), "{e}");
        assert_eq!(t("events/sched/sched_switch/filter"), "none");
        assert_eq!(t("buffer_size_kb"), "7 (expanded: 1408)");
    }

    #[test]
    fn with_instances_a_stale_one_is_removed_and_a_failed_setup_removes_its_own() {
        let (_d, root) = fake(true);
        // A fake mkdir gives an empty directory (the kernel fills a real one): setting it
        // up fails, and the instance made for it is removed again.
        let e = Recorder::start(&root, &cfg()).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let left = root.list("sys/kernel/tracing/instances").unwrap();
        assert!(
            left.is_empty(),
            "stale (pid 4000000000) and own removed: {left:?}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = Recorder::start(&SysRoot::new(empty.path()), &cfg()).unwrap_err();
        assert!(e.to_string().contains("tracefs not mounted"), "{e}");
    }
}
