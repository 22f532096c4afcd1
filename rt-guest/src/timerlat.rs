//! The kernel side of a probe run: with `--timerlat` the kernel's timerlat tracer (rtla's)
//! runs its own timer thread on each measured CPU at the probe's period, and splits each
//! wakeup latency into its IRQ part (how late the timer interrupt ran) and its thread
//! part (how late the thread ran). The reporting thread drains `trace_pipe` once a second
//! into per-CPU HDR histograms (`timerlat.json`) and keeps the last [`RING_LINES`] trace
//! lines; when a thread latency exceeds the bound, the lines around it (the ring, then
//! [`AFTER_LINES`] more) are kept as `timerlat-trace.txt` in the run, hashed in the
//! manifest, like cyclictest's `-b` but as a file. See
//! <https://docs.kernel.org/trace/timerlat-tracer.html>.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use record::hist::HistSummary;
use record::{TimerlatCpu, TimerlatRecord};
use rt_sys::tracefs::{self, Context, Session, Tracefs};
use rt_sys::{CpuSet, SysError, SysRoot};

/// Trace lines kept before an exceedance.
pub const RING_LINES: usize = 2000;
/// Trace lines kept after it.
pub const AFTER_LINES: usize = 200;

/// The timerlat tracer running beside a probe, and what it reported.
#[derive(Debug)]
pub struct Collector {
    session: Option<Session>,
    period_us: u64,
    cpus: Vec<u32>,
    irq: Vec<Histogram<u64>>,
    thread: Vec<Histogram<u64>>,
    /// Per CPU: the last IRQ event (activation id, ns), for pairing with its thread event.
    last_irq: Vec<Option<(u64, u64)>>,
    paired: Vec<u64>,
    thread_below_irq: Vec<u64>,
    ring: VecDeque<String>,
    carry: String,
    after: Option<usize>,
    saved: Option<String>,
    save_above_ns: Option<u64>,
    events: u64,
    other_lines: u64,
    buf: Vec<u8>,
}

impl Collector {
    /// Start the timerlat tracer on `cpus` at `period_us`: an error names what is missing
    /// (no tracefs, no timerlat tracer: "not available here").
    pub fn start(
        root: &SysRoot,
        cpus: &CpuSet,
        period_us: u64,
        save_above_ns: Option<u64>,
    ) -> Result<Collector, SysError> {
        let fs = Tracefs::with_tracer(root, "timerlat")?;
        let settings = [
            ("osnoise/cpus", cpus.to_string()),
            ("osnoise/timerlat_period_us", period_us.to_string()),
        ];
        let session = Session::start(fs, "timerlat", &settings)?;
        Ok(Collector::with_session(
            Some(session),
            cpus,
            period_us,
            save_above_ns,
        ))
    }

    fn with_session(
        session: Option<Session>,
        cpus: &CpuSet,
        period_us: u64,
        save_above_ns: Option<u64>,
    ) -> Collector {
        let cpus: Vec<u32> = cpus.iter().collect();
        Collector {
            session,
            period_us,
            irq: cpus.iter().map(|_| record::hist::new_ns()).collect(),
            thread: cpus.iter().map(|_| record::hist::new_ns()).collect(),
            last_irq: vec![None; cpus.len()],
            paired: vec![0; cpus.len()],
            thread_below_irq: vec![0; cpus.len()],
            cpus,
            ring: VecDeque::with_capacity(RING_LINES),
            carry: String::new(),
            after: None,
            saved: None,
            save_above_ns,
            events: 0,
            other_lines: 0,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Read what the tracer reported since the last call (the reporting thread, once a
    /// second). A read error ends the collection and is returned once.
    pub fn drain(&mut self) -> Result<(), SysError> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        self.buf.clear();
        let r = s.drain(&mut self.buf);
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.feed(&text);
        if r.is_err() {
            self.session = None;
        }
        r.map(|_| ())
    }

    /// Account trace text (whole lines; a trailing partial line waits for the rest).
    pub fn feed(&mut self, text: &str) {
        self.carry.push_str(text);
        let Some(end) = self.carry.rfind('\n') else {
            return;
        };
        let whole: String = self.carry.drain(..=end).collect();
        for line in whole.lines() {
            self.line(line);
        }
    }

    fn line(&mut self, line: &str) {
        if self.ring.len() == RING_LINES {
            self.ring.pop_front();
        }
        self.ring.push_back(line.to_string());
        match tracefs::parse_timerlat(line) {
            Some(ev) => {
                self.events += 1;
                if let Some(i) = self.cpus.iter().position(|c| *c == ev.cpu) {
                    self.account(i, &ev);
                }
                let above = self.save_above_ns.is_some_and(|b| ev.latency_ns > b);
                if ev.context == Context::Thread
                    && above
                    && self.saved.is_none()
                    && self.after.is_none()
                {
                    self.after = Some(AFTER_LINES);
                }
            }
            None if !line.starts_with('#') && !line.trim().is_empty() => self.other_lines += 1,
            None => {}
        }
        if let Some(n) = self.after {
            if n == 0 {
                self.keep();
            } else {
                self.after = Some(n - 1);
            }
        }
    }

    /// One event of measured CPU `i`: into its histogram, and a thread event paired with
    /// the IRQ event of the same activation.
    fn account(&mut self, i: usize, ev: &tracefs::TimerlatEvent) {
        let h = match ev.context {
            Context::Irq => {
                self.last_irq[i] = Some((ev.id, ev.latency_ns));
                &mut self.irq[i]
            }
            Context::Thread | Context::UserRet => {
                if ev.context == Context::Thread {
                    if let Some((_, irq_ns)) = self.last_irq[i].filter(|(id, _)| *id == ev.id) {
                        self.paired[i] += 1;
                        self.thread_below_irq[i] += u64::from(ev.latency_ns < irq_ns);
                    }
                }
                &mut self.thread[i]
            }
        };
        let _ = h.record(ev.latency_ns.clamp(1, record::hist::HIGHEST_NS));
    }

    fn keep(&mut self) {
        let mut t = String::from("# rt-guest probe --timerlat: the trace around the first thread latency above the bound\n");
        for l in &self.ring {
            t.push_str(l);
            t.push('\n');
        }
        self.saved = Some(t);
        self.after = None;
    }

    /// Stop the tracer (its files are put back), read what is left and return the record
    /// and the saved trace text, if a latency exceeded the bound.
    pub fn finish(mut self, partial: bool) -> (TimerlatRecord, Option<String>) {
        let _ = self.drain();
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            self.line(&rest);
        }
        self.session = None;
        if self.after.is_some() {
            self.keep();
        }
        let cpus = self
            .cpus
            .iter()
            .enumerate()
            .map(|(i, cpu)| TimerlatCpu {
                cpu: *cpu,
                irq: HistSummary::from_hist(&self.irq[i]),
                thread: HistSummary::from_hist(&self.thread[i]),
                paired: self.paired[i],
                thread_below_irq: self.thread_below_irq[i],
            })
            .collect();
        let rec = TimerlatRecord {
            period_us: self.period_us,
            cpus,
            events: self.events,
            other_lines: self.other_lines,
            save_above_us: self.save_above_ns.map(|n| n / 1000),
            trace_file: self
                .saved
                .as_ref()
                .map(|_| record::TIMERLAT_TRACE.to_string()),
            partial,
        };
        (rec, self.saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = include_str!("../../rt-sys/tests/fixtures/timerlat-lab-6.1-rt.txt");

    #[test]
    fn events_split_into_irq_and_thread_and_the_trace_around_a_spike_is_kept() {
        let mut c = Collector::with_session(None, &CpuSet::from_cpus([1]), 1000, Some(500_000));
        // Fed in pieces that cut lines, as trace_pipe reads do.
        let (a, b) = LAB.split_at(LAB.len() / 3);
        c.feed(a);
        c.feed(b);
        let (rec, saved) = c.finish(false);
        let lines = LAB.lines().filter(|l| l.contains("timer_latency")).count() as u64;
        assert_eq!(rec.events, lines);
        let t = &rec.cpus[0];
        assert_eq!(t.irq.samples + t.thread.samples, lines);
        assert!(t.thread.samples >= t.irq.samples.saturating_sub(1));
        // Each thread event follows its IRQ event (same id), and is the larger.
        assert_eq!(t.paired, t.thread.samples, "{t:?}");
        assert_eq!(t.thread_below_irq, 0);
        // The first thread latency, 789.58 us, is the worst: above 500 us.
        assert!(
            (789_000..790_500).contains(&t.thread.max_ns),
            "{}",
            t.thread.max_ns
        );
        let saved = saved.expect("a thread latency above 500 us");
        assert!(
            saved.contains("context thread timer_latency    789580 ns"),
            "{saved}"
        );
        assert_eq!(rec.trace_file.as_deref(), Some("timerlat-trace.txt"));
        assert_eq!(rec.save_above_us, Some(500));
    }

    #[test]
    fn thread_events_pair_with_the_irq_event_of_their_activation_only() {
        let mut c = Collector::with_session(None, &CpuSet::from_cpus([1]), 1000, None);
        let ev = |id: u32, ctx: &str, ns: u64| {
            format!("   <idle>-0  [001] d.h1  5.0: #{id}  context {ctx} timer_latency  {ns} ns\n")
        };
        // #1 paired (thread above irq), #2 inverted, #3's thread without its IRQ event (a
        // lost event), CPU 0's events not measured.
        for l in [
            ev(1, "irq", 900),
            ev(1, "thread", 5000),
            ev(2, "irq", 7000),
            ev(2, "thread", 3000),
            ev(3, "thread", 4000),
            "   <idle>-0  [000] d.h1  5.0: #4  context irq timer_latency  100 ns\n".into(),
        ] {
            c.feed(&l);
        }
        let (rec, _) = c.finish(false);
        let t = &rec.cpus[0];
        assert_eq!((t.irq.samples, t.thread.samples), (2, 3));
        assert_eq!((t.paired, t.thread_below_irq), (2, 1));
        assert_eq!(rec.events, 6);
    }

    #[test]
    fn nothing_saved_below_the_bound_and_the_ring_is_bounded() {
        let mut c = Collector::with_session(None, &CpuSet::from_cpus([1]), 1000, Some(10_000_000));
        for _ in 0..100 {
            c.feed(LAB);
        }
        assert!(c.ring.len() <= RING_LINES);
        let (rec, saved) = c.finish(true);
        assert!(saved.is_none() && rec.trace_file.is_none() && rec.partial);
    }

    #[test]
    fn on_a_fake_tracefs_the_tracer_is_set_read_and_put_back() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("sys/kernel/tracing");
        std::fs::create_dir_all(t.join("osnoise")).unwrap();
        for (f, v) in [
            ("available_tracers", "timerlat osnoise hwlat nop\n"),
            ("current_tracer", "nop\n"),
            ("tracing_on", "1\n"),
            ("osnoise/cpus", "0-1\n"),
            ("osnoise/timerlat_period_us", "1000\n"),
            ("trace_pipe", LAB),
        ] {
            std::fs::write(t.join(f), v).unwrap();
        }
        let root = SysRoot::new(d.path());
        let mut c = Collector::start(&root, &CpuSet::from_cpus([1]), 200, Some(500_000)).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.join("current_tracer")).unwrap(),
            "timerlat\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("osnoise/cpus")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("osnoise/timerlat_period_us")).unwrap(),
            "200\n"
        );
        c.drain().unwrap();
        let (rec, saved) = c.finish(false);
        assert!(rec.events >= 40 && saved.is_some());
        assert_eq!(
            std::fs::read_to_string(t.join("current_tracer"))
                .unwrap()
                .trim(),
            "nop"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("osnoise/cpus"))
                .unwrap()
                .trim(),
            "0-1"
        );
        std::fs::write(t.join("available_tracers"), "nop\n").unwrap();
        let e = Collector::start(&root, &CpuSet::from_cpus([1]), 200, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("the timerlat tracer: not available here"),
            "{e}"
        );
    }
}
