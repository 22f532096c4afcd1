//! cyclictest's output formats (rt-tests 2.x), so that plotting and CI scripts written
//! for cyclictest read the probe's results unchanged:
//!
//! - `--json FILE`: `file_version` 1 with `cmdline:`, `rt_test_version:` (the colons are
//!   cyclictest's), `start_time`, `end_time`, `return_code`, `sysinfo` (uname fields and
//!   `realtime`), `num_threads`, `resolution_in_ns`, and `thread` {"0": {histogram (us
//!   bucket -> count, non-zero buckets only), cycles, min, max, avg, cpu, node}}; we add
//!   exact ns values, missed periods and percentiles as extra keys of each thread.
//! - `--histogram FILE`: the `-h US` text: one line per us bucket (`%06d` then a column
//!   per thread), then `# Total:`, `# Min Latencies:`, `# Avg Latencies:`,
//!   `# Max Latencies:`, `# Histogram Overflows:` and the overflow cycles per thread.
//!
//! Latencies are truncated to whole microseconds there, as cyclictest does; the exact
//! values are in `probe.json`. `sysinfo` is read from `/proc/sys/kernel` (uname).

use std::fmt::Write as _;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use record::hist::PERCENTILES;
use rt_sys::SysRoot;

use crate::latency::ns_to_us;
use crate::probe::ThreadResult;

/// The `sysinfo` object (uname and the PREEMPT_RT flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysinfo {
    /// `uname -s`.
    pub sysname: String,
    /// `uname -n`.
    pub nodename: String,
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
    /// 1 on a PREEMPT_RT kernel.
    pub realtime: i32,
}

impl Sysinfo {
    /// Read from `/proc/sys/kernel/{ostype,hostname,osrelease,version}` and
    /// `/sys/kernel/realtime`.
    pub fn read(root: &SysRoot) -> Sysinfo {
        let r = |p: &str| root.read_trim(p).unwrap_or_default();
        use rt_sys::kernel::{HOSTNAME, OSRELEASE, OSTYPE, REALTIME, VERSION};
        let version = r(VERSION);
        let rt_flag = root.read(REALTIME).ok();
        Sysinfo {
            sysname: r(OSTYPE),
            nodename: r(HOSTNAME),
            release: r(OSRELEASE),
            realtime: i32::from(rt_sys::kernel::is_preempt_rt(&version, rt_flag.as_deref())),
            version,
            machine: std::env::consts::ARCH.to_string(),
        }
    }
}

/// The rt-tests release whose formats these are, written as `rt_test_version:` so that
/// scripts that compare that field as a number read a number (our own version is in
/// `rt_guest_version`).
pub const RT_TESTS_VERSION: &str = "2.40";

/// The run-level fields of the JSON file.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The command line, joined with spaces.
    pub cmdline: String,
    /// Our version string (in `rt_guest_version`).
    pub version: String,
    /// Start, `CLOCK_REALTIME` ns.
    pub start_wall_ns: u64,
    /// End, `CLOCK_REALTIME` ns.
    pub end_wall_ns: u64,
    /// The exit code.
    pub return_code: i32,
    /// The run was interrupted: the data is what was measured until then.
    pub partial: bool,
    /// uname.
    pub sysinfo: Sysinfo,
}

/// cyclictest's date format: `Thu, 26 Nov 2026 04:38:45 +0000` (UTC here).
pub fn ct_date(wall_ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    t.format(&f).unwrap_or_default()
}

/// Histogram buckets as rt-tests writes them in JSON: the non-zero ones only, keyed by
/// bucket index plus `first_key` (cyclictest: 0, the us value; oslat: 1, its "us + 1").
pub(crate) struct Buckets<'a> {
    pub(crate) counts: &'a [u64],
    pub(crate) first_key: usize,
}

impl Serialize for Buckets<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let nonzero = self.counts.iter().filter(|c| **c != 0).count();
        let mut m = s.serialize_map(Some(nonzero))?;
        for (i, count) in self.counts.iter().enumerate() {
            if *count != 0 {
                m.serialize_entry(&(i + self.first_key).to_string(), count)?;
            }
        }
        m.end()
    }
}

struct Percentiles<'a>(&'a ThreadResult);

impl Serialize for Percentiles<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = &self.0.hist;
        let mut m = s.serialize_map(Some(PERCENTILES.len()))?;
        for (k, p) in PERCENTILES {
            // Bucket upper bounds, capped at the exact max.
            let v = if h.is_empty() {
                0
            } else {
                h.value_at_percentile(*p).min(self.0.stats.max_ns)
            };
            m.serialize_entry(k, &v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Thread<'a> {
    histogram: Buckets<'a>,
    cycles: u64,
    min: u64,
    max: u64,
    avg: f64,
    cpu: u32,
    node: u32,
    // Ours, beyond cyclictest's keys.
    min_ns: u64,
    max_ns: u64,
    avg_ns: f64,
    percentiles_ns: Percentiles<'a>,
    missed_periods: u64,
    out_of_range: u64,
    max_cycle: u64,
    tid: u32,
    page_faults_in_loop: u64,
}

/// A list serialized as rt-tests does its threads: `{"0": ..., "1": ...}`.
pub(crate) struct Indexed<T>(pub(crate) Vec<T>);

impl<T: Serialize> Serialize for Indexed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (i, t) in self.0.iter().enumerate() {
            m.serialize_entry(&i.to_string(), t)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct File<'a> {
    file_version: u32,
    #[serde(rename = "cmdline:")]
    cmdline: &'a str,
    #[serde(rename = "rt_test_version:")]
    rt_test_version: &'a str,
    rt_guest_version: &'a str,
    partial: bool,
    start_time: String,
    end_time: String,
    return_code: i32,
    sysinfo: &'a Sysinfo,
    num_threads: usize,
    resolution_in_ns: u64,
    thread: Indexed<Thread<'a>>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `--json` file. `nodes[i]` is the NUMA node of thread i's CPU.
pub fn json(header: &Header, threads: &[ThreadResult], nodes: &[u32]) -> String {
    let file = File {
        file_version: 1,
        cmdline: &header.cmdline,
        rt_test_version: RT_TESTS_VERSION,
        rt_guest_version: &header.version,
        partial: header.partial,
        start_time: ct_date(header.start_wall_ns),
        end_time: ct_date(header.end_wall_ns),
        return_code: header.return_code,
        sysinfo: &header.sysinfo,
        num_threads: threads.len(),
        resolution_in_ns: 0,
        thread: Indexed(
            threads
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let s = &t.stats;
                    Thread {
                        histogram: Buckets {
                            counts: &t.buckets.counts,
                            first_key: 0,
                        },
                        cycles: s.samples,
                        min: ns_to_us(s.min_or_zero()),
                        max: ns_to_us(s.max_ns),
                        avg: round2(s.mean_ns() / 1000.0),
                        cpu: t.cpu,
                        node: nodes.get(i).copied().unwrap_or(0),
                        min_ns: s.min_or_zero(),
                        max_ns: s.max_ns,
                        avg_ns: round2(s.mean_ns()),
                        percentiles_ns: Percentiles(t),
                        missed_periods: s.missed,
                        out_of_range: s.out_of_range,
                        max_cycle: s.max_cycle,
                        tid: t.tid,
                        page_faults_in_loop: t.faults_in_loop,
                    }
                })
                .collect(),
        ),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// cyclictest's `# /dev/cpu_dma_latency set to 0us` line (with its newline).
pub fn dma_line(us: i32) -> String {
    let dev = rt_sys::SysRoot::live().display(rt_sys::cpuidle::DMA_LATENCY);
    format!("# {dev} set to {us}us\n")
}

/// The `--histogram` file: cyclictest's `-h` text. `dma_latency_us` adds cyclictest's
/// `# /dev/cpu_dma_latency set to 0us` line when the latency was held.
pub fn histogram_text(threads: &[ThreadResult], dma_latency_us: Option<i32>) -> String {
    let mut out = String::new();
    if let Some(us) = dma_latency_us {
        out.push_str(&dma_line(us));
    }
    out.push_str("# Histogram\n");
    let buckets = threads.first().map(|t| t.buckets.counts.len()).unwrap_or(0);
    for b in 0..buckets {
        let _ = write!(out, "{b:06} ");
        for (i, t) in threads.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\t" };
            let _ = write!(out, "{sep}{:06}", t.buckets.counts[b]);
        }
        out.push('\n');
    }
    let line = |out: &mut String, title: &str, vals: &mut dyn Iterator<Item = String>| {
        out.push_str(title);
        for v in vals {
            out.push(' ');
            out.push_str(&v);
        }
        out.push('\n');
    };
    line(
        &mut out,
        "# Total:",
        &mut threads.iter().map(|t| format!("{:09}", t.buckets.total())),
    );
    line(
        &mut out,
        "# Min Latencies:",
        &mut threads
            .iter()
            .map(|t| format!("{:05}", ns_to_us(t.stats.min_or_zero()))),
    );
    line(
        &mut out,
        "# Avg Latencies:",
        &mut threads.iter().map(|t| {
            // Truncated, as cyclictest prints it.
            let avg_us = t.stats.mean_ns() / 1000.0;
            format!("{:05}", avg_us.trunc())
        }),
    );
    line(
        &mut out,
        "# Max Latencies:",
        &mut threads
            .iter()
            .map(|t| format!("{:05}", ns_to_us(t.stats.max_ns))),
    );
    line(
        &mut out,
        "# Histogram Overflows:",
        &mut threads
            .iter()
            .map(|t| format!("{:05}", t.buckets.overflows)),
    );
    out.push_str("# Histogram Overflow at cycle number:\n");
    for (i, t) in threads.iter().enumerate() {
        let _ = write!(out, "# Thread {i}:");
        let kept = t.buckets.overflow_cycles();
        for c in kept {
            let _ = write!(out, " {c:05}");
        }
        let others = t.buckets.overflows - kept.len() as u64;
        if others > 0 {
            let _ = write!(out, " # {others:05} others");
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One thread's numbers in a status line (all us, as cyclictest prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Thread index.
    pub index: usize,
    /// Thread id.
    pub tid: u32,
    /// Priority.
    pub priority: u32,
    /// Period, us.
    pub interval_us: u64,
    /// Wakeups so far.
    pub cycles: u64,
    /// Min, us.
    pub min_us: u64,
    /// Last, us.
    pub act_us: i64,
    /// Mean, us (truncated).
    pub avg_us: u64,
    /// Max, us.
    pub max_us: u64,
}

/// cyclictest's status line: `T: 0 (28299) P:90 I:500 C:    300 Min:     14 Act:   32
/// Avg:   24 Max:     295`.
pub fn status_line(s: &Status) -> String {
    format!(
        "T:{:2} ({:5}) P:{:2} I:{} C:{:7} Min:{:7} Act:{:5} Avg:{:5} Max:{:8}",
        s.index, s.tid, s.priority, s.interval_us, s.cycles, s.min_us, s.act_us, s.avg_us, s.max_us
    )
}

/// The lines cyclictest prints after a run with `-b`: `# Thread Ids:` (always), and
/// `# Break thread:` / `# Break value:` (us) when a latency above the bound ended the run.
pub fn break_lines(threads: &[ThreadResult], fired: Option<(u32, u64)>) -> String {
    let mut out = String::from("# Thread Ids:");
    for t in threads {
        let _ = write!(out, " {:05}", t.tid);
    }
    out.push('\n');
    if let Some((cpu, ns)) = fired {
        let tid = threads.iter().find(|t| t.cpu == cpu).map_or(0, |t| t.tid);
        let _ = writeln!(out, "# Break thread: {tid}");
        let _ = writeln!(out, "# Break value: {}", ns_to_us(ns));
    }
    out
}

/// A note cyclictest has no line for, in its comment style: what a partial run is.
pub fn partial_line(reason: &str) -> String {
    format!("# Partial: {reason}: the histogram holds what was measured until then\n")
}

/// What a line of a cyclictest `-h` text is; used to check a file's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistLine {
    /// A `#` comment not listed below (e.g. the dma latency note).
    Comment,
    /// `# Histogram`.
    Title,
    /// A bucket line with this many thread columns.
    Bucket(usize),
    /// A `# Total:`, `# Min/Avg/Max Latencies:` or `# Histogram Overflows:` line with
    /// this many values.
    Summary(&'static str, usize),
    /// `# Histogram Overflow at cycle number:`.
    OverflowTitle,
    /// `# Thread N: ...`.
    OverflowThread,
    /// The final empty line.
    Empty,
}

/// Classify each line of a `-h` text; an error names the line that fits no layout.
pub fn parse_layout(text: &str) -> Result<Vec<HistLine>, String> {
    const SUMMARY: [(&str, &str, usize); 5] = [
        ("# Total:", "Total", 9),
        ("# Min Latencies:", "Min", 5),
        ("# Avg Latencies:", "Avg", 5),
        ("# Max Latencies:", "Max", 5),
        ("# Histogram Overflows:", "Overflows", 5),
    ];
    let digits = |s: &str, w: usize| s.len() >= w && s.bytes().all(|b| b.is_ascii_digit());
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let bad = || format!("line {}: {l:?} fits no cyclictest -h layout", n + 1);
        let kind = if l.is_empty() {
            HistLine::Empty
        } else if l == "# Histogram" {
            HistLine::Title
        } else if l == "# Histogram Overflow at cycle number:" {
            HistLine::OverflowTitle
        } else if let Some((prefix, key, w)) = SUMMARY.iter().find(|(p, _, _)| l.starts_with(p)) {
            let vals: Vec<&str> = l[prefix.len()..].split(' ').skip(1).collect();
            if vals.is_empty() || !vals.iter().all(|v| digits(v, *w)) {
                return Err(bad());
            }
            HistLine::Summary(key, vals.len())
        } else if l.starts_with("# Thread Ids:") {
            HistLine::Comment
        } else if let Some(rest) = l.strip_prefix("# Thread ") {
            let (num, cycles) = rest.split_once(':').ok_or_else(bad)?;
            if !digits(num, 1) {
                return Err(bad());
            }
            let (list, others) = match cycles.split_once(" # ") {
                Some((list, o)) => (list, Some(o)),
                None => (cycles, None),
            };
            if !list.split(' ').skip(1).all(|v| digits(v, 5)) {
                return Err(bad());
            }
            if let Some(o) = others {
                let o = o.strip_suffix(" others").ok_or_else(bad)?;
                if !digits(o, 5) {
                    return Err(bad());
                }
            }
            HistLine::OverflowThread
        } else if l.starts_with('#') {
            HistLine::Comment
        } else {
            let (bucket, cols) = l.split_once(' ').ok_or_else(bad)?;
            let cols: Vec<&str> = cols.split('\t').collect();
            if bucket.len() != 6 || !digits(bucket, 6) || !cols.iter().all(|c| digits(c, 6)) {
                return Err(bad());
            }
            HistLine::Bucket(cols.len())
        };
        out.push(kind);
    }
    Ok(out)
}

/// The layout in short: (bucket lines, columns, summary keys in order, overflow thread
/// lines, an empty line after the last of them). Two files with the same shape differ only
/// in numbers.
pub fn layout_shape(lines: &[HistLine]) -> (usize, usize, Vec<&'static str>, usize, bool) {
    let buckets = lines
        .iter()
        .filter(|l| matches!(l, HistLine::Bucket(_)))
        .count();
    let cols = lines
        .iter()
        .find_map(|l| match l {
            HistLine::Bucket(c) => Some(*c),
            _ => None,
        })
        .unwrap_or(0);
    let keys = lines
        .iter()
        .filter_map(|l| match l {
            HistLine::Summary(k, n) if *n == cols => Some(*k),
            HistLine::Summary(_, _) => Some("columns differ"),
            _ => None,
        })
        .collect();
    let threads = lines
        .iter()
        .filter(|l| matches!(l, HistLine::OverflowThread))
        .count();
    (
        buckets,
        cols,
        keys,
        threads,
        lines
            .iter()
            .rposition(|l| matches!(l, HistLine::OverflowThread))
            .is_some_and(|i| lines.get(i + 1) == Some(&HistLine::Empty)),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::latency::{Stats, UsBuckets, Wakeup};
    use rt_sys::sched::{Policy, SchedParams};

    /// A thread result with the given latencies (ns).
    pub(crate) fn result(cpu: u32, hist_us: usize, lats: &[i64]) -> ThreadResult {
        let mut hist = record::hist::new_ns();
        let mut stats = Stats::default();
        let mut buckets = UsBuckets::new(hist_us);
        for (c, l) in lats.iter().enumerate() {
            let w = Wakeup {
                latency_ns: *l,
                missed: 0,
                next_ns: 0,
            };
            stats.record(&w, c as u64, &mut hist);
            buckets.record(*l, c as u64);
        }
        ThreadResult {
            cpu,
            tid: 4242,
            sched: SchedParams {
                policy: Policy::Fifo,
                priority: 90,
            },
            stats,
            hist,
            buckets,
            faults_in_loop: 0,
        }
    }

    #[test]
    fn date_is_cyclictests() {
        // 2026-11-26T04:38:45Z, as in the fixture captured on this machine.
        assert_eq!(
            ct_date(1_795_667_925_000_000_000),
            "Thu, 26 Nov 2026 04:38:45 +0000"
        );
    }

    #[test]
    fn histogram_text_has_cyclictests_numbers() {
        let a = result(1, 5, &[1_500, 1_999, 3_200, 7_000, 9_000]);
        let b = result(2, 5, &[0, 4_999]);
        let t = histogram_text(&[a, b], Some(0));
        let expect = "# /dev/cpu_dma_latency set to 0us\n# Histogram\n\
000000 000000\t000001\n\
000001 000002\t000000\n\
000002 000000\t000000\n\
000003 000001\t000000\n\
000004 000000\t000001\n\
# Total: 000000003 000000002\n\
# Min Latencies: 00001 00000\n\
# Avg Latencies: 00004 00002\n\
# Max Latencies: 00009 00004\n\
# Histogram Overflows: 00002 00000\n\
# Histogram Overflow at cycle number:\n\
# Thread 0: 00003 00004\n\
# Thread 1:\n\n";
        assert_eq!(t, expect);
        let shape = layout_shape(&parse_layout(&t).unwrap());
        assert_eq!(
            shape,
            (
                5,
                2,
                vec!["Total", "Min", "Avg", "Max", "Overflows"],
                2,
                true
            )
        );
    }

    #[test]
    fn status_and_break_lines_are_cyclictests() {
        let s = Status {
            index: 0,
            tid: 28299,
            priority: 90,
            interval_us: 500,
            cycles: 300,
            min_us: 14,
            act_us: 32,
            avg_us: 24,
            max_us: 295,
        };
        // As captured from cyclictest 2.40 on this machine.
        assert_eq!(
            status_line(&s),
            "T: 0 (28299) P:90 I:500 C:    300 Min:     14 Act:   32 Avg:   24 Max:     295"
        );
        let a = result(1, 5, &[1_500, 53_900]);
        let b = result(2, 5, &[0]);
        assert_eq!(
            break_lines(&[a.clone(), b.clone()], Some((1, 53_900))),
            "# Thread Ids: 04242 04242\n# Break thread: 4242\n# Break value: 53\n"
        );
        assert_eq!(break_lines(&[a], None), "# Thread Ids: 04242\n");
        // The comment style keeps the -h layout valid.
        let text =
            partial_line("interrupted by SIGINT") + &histogram_text(std::slice::from_ref(&b), None);
        let plain =
            layout_shape(&parse_layout(&histogram_text(std::slice::from_ref(&b), None)).unwrap());
        assert_eq!(layout_shape(&parse_layout(&text).unwrap()), plain);
        let text =
            histogram_text(std::slice::from_ref(&b), None) + &break_lines(&[b], Some((2, 9_000)));
        assert_eq!(layout_shape(&parse_layout(&text).unwrap()), plain);
    }

    #[test]
    fn overflow_list_is_cut_like_cyclictest() {
        let lats: Vec<i64> = (0..30).map(|_| 50_000).collect();
        let t = histogram_text(&[result(1, 20, &lats)], None);
        assert!(t.contains("# Thread 0: 00000 00001"), "{t}");
        assert!(t.contains(" 00019 # 00010 others\n"), "{t}");
        parse_layout(&t).unwrap();
    }

    #[test]
    fn the_layout_checker_rejects_other_text() {
        let e = format!("{:#}", (parse_layout("0001 0002\n")).unwrap_err());
        assert!(e.contains("fits no cyclictest -h layout"), "{e}");
        let e = format!("{:#}", (parse_layout("# Total: 12\n")).unwrap_err());
        assert!(e.contains("fits no cyclictest -h layout"), "{e}");
        let e = format!(
            "{:#}",
            (parse_layout("T: 0 ( 123) P:90 I:1000\n")).unwrap_err()
        );
        assert!(e.contains("fits no cyclictest -h layout"), "{e}");
    }

    #[test]
    fn json_has_the_keys_and_values_of_cyclictest() {
        let a = result(1, 100, &[13_400, 13_999, 20_000, 150_000]);
        let h = Header {
            cmdline: "rt-guest probe -a 1".into(),
            version: "rt-guest 0.1.0".into(),
            partial: false,
            start_wall_ns: 1_795_667_925_000_000_000,
            end_wall_ns: 1_795_667_927_000_000_000,
            return_code: 0,
            sysinfo: Sysinfo {
                sysname: "Linux".into(),
                nodename: "vm".into(),
                release: "6.18".into(),
                version: "#1".into(),
                machine: "x86_64".into(),
                realtime: 0,
            },
        };
        let v: serde_json::Value = serde_json::from_str(&json(&h, &[a], &[0])).unwrap();
        let t = &v["thread"]["0"];
        assert_eq!(v["file_version"], 1);
        assert_eq!(v["cmdline:"], "rt-guest probe -a 1");
        // A number, as cyclictest's: scripts compare it as one.
        let version: f64 = v["rt_test_version:"].as_str().unwrap().parse().unwrap();
        assert!(version >= 2.0);
        assert_eq!(v["rt_guest_version"], "rt-guest 0.1.0");
        assert_eq!(v["partial"], false);
        assert_eq!(v["start_time"], "Thu, 26 Nov 2026 04:38:45 +0000");
        assert_eq!(t["histogram"]["13"], 2);
        assert_eq!(t["histogram"]["20"], 1);
        assert!(t["histogram"].get("150").is_none());
        assert_eq!(t["cycles"], 4);
        assert_eq!(t["min"], 13);
        assert_eq!(t["max"], 150);
        assert_eq!(t["avg"], 49.35);
        assert_eq!(t["cpu"], 1);
        assert_eq!(t["max_ns"], 150_000);
        assert!(t["percentiles_ns"]["p99.9999"].as_u64().unwrap() >= 149_000);
    }
}
