//! rt-tests' oslat output formats for `rt-guest oslat`, and its run record.
//!
//! - The text oslat prints (`oslat V 2.40` ... `Core:`, `Counter Freq:`, one `NNN (us):`
//!   line per bucket with a column per CPU, the last `(including overflows)`, then
//!   `Minimum:`, `Average:`, `Maximum:`, `Max-Min:` in us and `Duration:` in s).
//!   oslat's unit: a gap of g us (truncated) counts as g + 1 (a gap below 1 us is "1
//!   us"), so that is what these lines hold. The counter is `CLOCK_MONOTONIC` in ns:
//!   `Counter Freq` is 1000 MHz.
//! - `--json`: oslat's `file_version` 1 (`cmdline:`, `rt_test_version:`, `start_time`,
//!   `end_time`, `return_code`, `sysinfo`, `num_threads`, `thread` {"0": {cpu, freq, min,
//!   avg, max, duration, histogram {"1": count, ...}}}) plus exact ns values.
//! - [`record()`](fn@record): `oslat.json` of the run directory (`record::OslatRecord`).

use std::fmt::Write as _;

use serde::Serialize;

use record::hist::{Exact, HistSummary};
use record::{OslatRecord, OslatSettings};

use crate::cyclictest::{ct_date, Buckets, Indexed, Sysinfo, RT_TESTS_VERSION};
use crate::evidence::rfc3339;
use crate::oslat::{Gaps, OslatConfig, OslatOutcome, OslatThread};

/// The counter's frequency as oslat prints it: `CLOCK_MONOTONIC` counts ns.
pub const COUNTER_MHZ: u32 = 1000;

/// oslat's value of a gap: whole us, plus one.
pub fn oslat_us(ns: u64) -> u64 {
    ns / 1000 + 1
}

/// oslat's average (us): the mean of [`oslat_us`] over every gap, from the HDR histogram
/// (values within its 0.1 % resolution).
pub fn oslat_avg(g: &Gaps) -> f64 {
    let (mut sum, mut n) = (0u128, 0u64);
    for v in g.hist.iter_recorded() {
        let c = v.count_at_value();
        sum += u128::from(oslat_us(v.value_iterated_to())) * u128::from(c);
        n += c;
    }
    #[allow(clippy::cast_precision_loss)] // sums of us over a run fit a double well
    let avg = sum as f64 / n.max(1) as f64;
    avg
}

/// The run-level facts of the text and JSON.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command line, joined with spaces.
    pub cmdline: String,
    /// The exit code.
    pub return_code: i32,
    /// Interrupted.
    pub partial: bool,
    /// uname.
    pub sysinfo: Sysinfo,
}

/// The header oslat prints before measuring (none with `-q`).
pub fn header(cfg: &OslatConfig, main_cpus: &str) -> String {
    let prio = if cfg.sched.policy.is_realtime() {
        format!(
            "SCHED_{}:{}",
            cfg.sched.policy.to_string().to_uppercase(),
            cfg.sched.priority
        )
    } else {
        "default".into()
    };
    format!(
        "Total runtime: \t\t{} seconds\nThread priority: \t{prio}\nCPU list: \t\t{}\n\
         CPU for main thread: \t{main_cpus}\nWorkload: \t\tno\nWorkload mem: \t\t0 (KiB)\n\
         Preheat cores: \t\t{}\n\nPre-heat for 0 seconds...\nTest starts...\n",
        cfg.duration_ns / 1_000_000_000,
        cfg.cpus,
        cfg.cpus.len()
    )
}

/// The results oslat prints; `zero_omit` drops buckets that are zero on every CPU (`-z`).
pub fn text(out: &OslatOutcome, zero_omit: bool) -> String {
    let t = &out.threads;
    let mut s = String::new();
    let row = |s: &mut String, title: &str, vals: &mut dyn Iterator<Item = String>, unit: &str| {
        let _ = write!(s, "{title:>12}:\t");
        for v in vals {
            let _ = write!(s, " {v}");
        }
        if !unit.is_empty() {
            let _ = write!(s, " {unit}");
        }
        s.push('\n');
    };
    row(&mut s, "Core", &mut t.iter().map(|t| t.cpu.to_string()), "");
    row(
        &mut s,
        "Counter Freq",
        &mut t.iter().map(|_| COUNTER_MHZ.to_string()),
        "(Mhz)",
    );
    let buckets = t.first().map_or(0, |t| t.gaps.buckets.len());
    let mut in_gap = false;
    for b in 0..buckets {
        if zero_omit && t.iter().all(|t| t.gaps.buckets[b] == 0) {
            // oslat -z: one "..." line for each run of omitted buckets.
            if !in_gap {
                s.push_str("    ...\n");
                in_gap = true;
            }
            continue;
        }
        in_gap = false;
        let last = b + 1 == buckets;
        row(
            &mut s,
            &format!("{:03} (us)", b + 1),
            &mut t.iter().map(|t| t.gaps.buckets[b].to_string()),
            if last { "(including overflows)" } else { "" },
        );
    }
    let us = |f: fn(&Gaps) -> u64| t.iter().map(move |t| oslat_us(f(&t.gaps)).to_string());
    row(&mut s, "Minimum", &mut us(Gaps::min_or_zero), "(us)");
    row(
        &mut s,
        "Average",
        &mut t.iter().map(|t| format!("{:.3}", oslat_avg(&t.gaps))),
        "(us)",
    );
    row(&mut s, "Maximum", &mut us(|g| g.max_ns), "(us)");
    row(
        &mut s,
        "Max-Min",
        &mut t
            .iter()
            .map(|t| (oslat_us(t.gaps.max_ns) - oslat_us(t.gaps.min_or_zero())).to_string()),
        "(us)",
    );
    #[allow(clippy::cast_precision_loss)]
    let secs = out.elapsed_ns as f64 / 1e9;
    row(
        &mut s,
        "Duration",
        &mut t.iter().map(|_| format!("{secs:.3}")),
        "(sec)",
    );
    s.push('\n');
    s
}

#[derive(Serialize)]
struct JsonThread<'a> {
    cpu: u32,
    freq: u32,
    min: u64,
    avg: f64,
    max: u64,
    duration: f64,
    histogram: Buckets<'a>,
    // Ours, beyond oslat's keys.
    tid: u32,
    min_ns: u64,
    max_ns: u64,
    avg_ns: f64,
    percentiles_ns: std::collections::BTreeMap<String, u64>,
    overflows: u64,
    out_of_range: u64,
}

fn json_thread<'a>(t: &'a OslatThread, secs: f64) -> JsonThread<'a> {
    let g = &t.gaps;
    JsonThread {
        cpu: t.cpu,
        freq: COUNTER_MHZ,
        min: oslat_us(g.min_or_zero()),
        avg: (oslat_avg(g) * 1e6).round() / 1e6,
        max: oslat_us(g.max_ns),
        duration: (secs * 1000.0).round() / 1000.0,
        histogram: Buckets {
            counts: &g.buckets,
            first_key: 1,
        },
        tid: t.tid,
        min_ns: g.min_or_zero(),
        max_ns: g.max_ns,
        avg_ns: (g.mean_ns() * 100.0).round() / 100.0,
        percentiles_ns: summary(g).percentiles,
        overflows: g.overflows,
        out_of_range: g.out_of_range,
    }
}

#[derive(Serialize)]
struct File<'a> {
    file_version: u32,
    #[serde(rename = "cmdline:")]
    cmdline: &'a str,
    #[serde(rename = "rt_test_version:")]
    rt_test_version: &'a str,
    rt_guest_version: String,
    partial: bool,
    start_time: String,
    end_time: String,
    return_code: i32,
    sysinfo: &'a Sysinfo,
    num_threads: usize,
    thread: Indexed<JsonThread<'a>>,
}

/// The `--json` file.
pub fn json(info: &RunInfo, out: &OslatOutcome) -> String {
    #[allow(clippy::cast_precision_loss)]
    let secs = out.elapsed_ns as f64 / 1e9;
    let file = File {
        file_version: 1,
        cmdline: &info.cmdline,
        rt_test_version: RT_TESTS_VERSION,
        rt_guest_version: format!("rt-guest {}", crate::VERSION),
        partial: info.partial,
        start_time: ct_date(out.start_wall_ns),
        end_time: ct_date(out.end_wall_ns),
        return_code: info.return_code,
        sysinfo: &info.sysinfo,
        num_threads: out.threads.len(),
        thread: Indexed(out.threads.iter().map(|t| json_thread(t, secs)).collect()),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// The HDR summary (the histogram's own values, as any HdrHistogram tool decodes them)
/// with the exact min, mean and max beside it (the max also counting gaps above the
/// histogram's range).
pub fn summary(g: &Gaps) -> HistSummary {
    let mut s = HistSummary::from_hist(&g.hist);
    if g.samples > 0 {
        s.exact = Some(Exact {
            min_ns: g.min_or_zero(),
            max_ns: g.max_ns,
            mean_ns: g.mean_ns(),
        });
    }
    s
}

/// `oslat.json`.
pub fn record(cfg: &OslatConfig, mlock: bool, out: &OslatOutcome, partial: bool) -> OslatRecord {
    #[allow(clippy::cast_precision_loss)]
    let secs = |ns: u64| ns as f64 / 1e9;
    OslatRecord {
        settings: OslatSettings {
            policy: cfg.sched.policy.to_string(),
            priority: cfg.sched.priority,
            duration_s: secs(cfg.duration_ns),
            buckets: u32::try_from(cfg.buckets).unwrap_or(u32::MAX),
            mlock,
            clock: "CLOCK_MONOTONIC read back to back (vDSO clock_gettime)".into(),
        },
        threads: out
            .threads
            .iter()
            .map(|t| record::OslatThread {
                cpu: t.cpu,
                tid: t.tid,
                policy: t.sched.policy.to_string(),
                priority: t.sched.priority,
                samples: t.gaps.samples,
                overflows: t.gaps.overflows,
                out_of_range: t.gaps.out_of_range,
                max_at: (t.gaps.max_wall_ns > 0).then(|| rfc3339(t.gaps.max_wall_ns)),
                gaps: summary(&t.gaps),
            })
            .collect(),
        elapsed_s: secs(out.elapsed_ns),
        partial,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rt_sys::sched::{Policy, SchedParams};
    use rt_sys::CpuSet;

    pub(crate) fn outcome(gaps: &[&[u64]], buckets: usize) -> OslatOutcome {
        OslatOutcome {
            threads: gaps
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut g = Gaps::new(buckets);
                    for ns in *v {
                        g.record(*ns);
                    }
                    OslatThread {
                        cpu: u32::try_from(i).unwrap(),
                        tid: 77,
                        sched: SchedParams {
                            policy: Policy::Other,
                            priority: 0,
                        },
                        gaps: g,
                    }
                })
                .collect(),
            start_wall_ns: 1_795_667_925_000_000_000,
            end_wall_ns: 1_795_667_927_000_000_000,
            elapsed_ns: 1_005_000_000,
            stopped: false,
            threshold: None,
        }
    }

    #[test]
    fn text_is_oslats() {
        let out = outcome(&[&[30, 40, 1_200, 9_000], &[25, 25, 25, 2_100]], 5);
        let t = text(&out, false);
        // As oslat 2.40 prints it (two CPUs, -b 5), with our numbers.
        let expect = [
            "        Core:\t 0 1",
            "Counter Freq:\t 1000 1000 (Mhz)",
            "    001 (us):\t 2 3",
            "    002 (us):\t 1 0",
            "    003 (us):\t 0 1",
            "    004 (us):\t 0 0",
            "    005 (us):\t 1 0 (including overflows)",
            "     Minimum:\t 1 1 (us)",
            "     Average:\t 3.500 1.500 (us)",
            "     Maximum:\t 10 3 (us)",
            "     Max-Min:\t 9 2 (us)",
            "    Duration:\t 1.005 1.005 (sec)",
            "",
            "",
        ]
        .join("\n");
        assert_eq!(t, expect);
        let z = text(&out, true);
        assert!(!z.contains("004 (us)") && z.contains("005 (us)"), "{z}");
        assert!(
            z.contains("    003 (us):\t 0 1\n    ...\n    005 (us):"),
            "{z}"
        );
    }

    #[test]
    fn json_has_oslats_keys() {
        let out = outcome(&[&[30, 1_200, 9_000]], 32);
        let info = RunInfo {
            cmdline: "rt-guest oslat -c 1".into(),
            return_code: 0,
            partial: false,
            sysinfo: Sysinfo {
                sysname: "Linux".into(),
                nodename: "vm".into(),
                release: "6.18".into(),
                version: "#1".into(),
                machine: "x86_64".into(),
                realtime: 0,
            },
        };
        let v: serde_json::Value = serde_json::from_str(&json(&info, &out)).unwrap();
        let t = &v["thread"]["0"];
        assert_eq!(v["num_threads"], 1);
        assert_eq!(t["freq"], 1000);
        assert_eq!(t["min"], 1);
        assert_eq!(t["max"], 10);
        assert_eq!(t["histogram"]["1"], 1);
        assert_eq!(t["histogram"]["2"], 1);
        assert_eq!(t["histogram"]["10"], 1);
        // Only the non-zero buckets, as oslat writes them.
        assert_eq!(t["histogram"].as_object().unwrap().len(), 3);
        assert_eq!(t["max_ns"], 9_000);
        assert_eq!(v["start_time"], "Thu, 26 Nov 2026 04:38:45 +0000");
    }

    #[test]
    fn record_keeps_exact_values() {
        let out = outcome(&[&[30, 1_200, 61_000_000_000]], 32);
        let cfg = OslatConfig {
            cpus: CpuSet::from_cpus([0]),
            sched: SchedParams {
                policy: Policy::Other,
                priority: 0,
            },
            duration_ns: 1_000_000_000,
            buckets: 32,
            trace_threshold_ns: None,
            report_cpus: None,
            checkpoint_ns: None,
        };
        let r = record(&cfg, true, &out, true);
        let t = &r.threads[0];
        assert_eq!((t.samples, t.out_of_range, t.overflows), (3, 1, 1));
        let exact = t.gaps.exact.unwrap();
        assert_eq!((exact.min_ns, exact.max_ns), (30, 61_000_000_000));
        assert_eq!(
            t.gaps.samples, 2,
            "the histogram holds the gaps in its range"
        );
        assert_eq!(t.gaps.histogram().unwrap().len(), 2);
        assert!(r.partial);
    }
}
