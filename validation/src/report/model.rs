//! The one report model: the evidence laid out as headings, paragraphs, warnings, tables,
//! key-value lists, bullet lists and charts, built once ([`build`]) and rendered by
//! [`super::html`] and [`super::md`] alike, so both formats hold the same sections in the
//! same order.

use crate::evidence::{Evidence, RunInfo, Verdict, WcrtComparison};
use crate::fmt::{fmt_num, fmt_opt};

/// How a cell is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Plain text.
    Plain,
    /// An identifier (bold in HTML).
    Key,
    /// A hash or command line (monospace in HTML).
    Mono,
    /// A verdict (coloured in HTML, bold in Markdown).
    Verdict(Verdict),
    /// A deviation (red in HTML).
    Deviation,
}

/// A table cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its text.
    pub text: String,
    /// Its style.
    pub style: Style,
}

fn c(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        style: Style::Plain,
    }
}

fn cs(text: impl Into<String>, style: Style) -> Cell {
    Cell {
        text: text.into(),
        style,
    }
}

/// A table with a caption (the accessible name) and column headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// HTML id (`verdicts`, `trace`).
    pub id: Option<&'static str>,
    /// What the table holds.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<&'static str>,
    /// Rows of cells.
    pub rows: Vec<Vec<Cell>>,
}

/// A piece of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1..=3.
    Heading(u8, String),
    /// The overall verdict banner.
    Banner(Verdict, String),
    /// A paragraph.
    Para(String),
    /// A warning (a run that is not valid evidence).
    Warning(String),
    /// A table.
    Table(Table),
    /// `key: value` rows (a run's environment).
    KeyValues(Vec<(&'static str, String)>),
    /// A bullet list.
    List(Vec<String>),
    /// The charts of the distributions (HTML only).
    Charts,
}

/// The report.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Title.
    pub title: String,
    /// Content.
    pub blocks: Vec<Block>,
}

impl Doc {
    /// Every heading of level 2, in order.
    pub fn headings(&self) -> Vec<String> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Heading(2, t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The headline: `PASS: 6 requirements, 6 pass, ...`.
pub fn headline(ev: &Evidence) -> String {
    format!(
        "{}: {} requirements, {} pass, {} fail, {} inconclusive; {} measurement(s) above the analytic WCRT",
        ev.overall(),
        ev.results.len(),
        ev.summary.pass,
        ev.summary.fail,
        ev.summary.inconclusive,
        ev.summary.deviations
    )
}

/// Reasons for the tables: the data's own, then the environment in short (the causes are
/// stated once per run, above the table).
fn reasons_text(r: &crate::evidence::RequirementResult) -> String {
    let mut v = r.reasons.clone();
    if !r.environment.is_empty() {
        v.push(format!(
            "not valid evidence ({} cause{}, see the runs)",
            r.environment.len(),
            if r.environment.len() == 1 { "" } else { "s" }
        ));
    }
    v.join("; ")
}

/// The status of a measured-vs-analysed row.
pub fn wcrt_status(c: &WcrtComparison) -> String {
    match (c.measured_max_us, c.wcrt_us) {
        (_, None) => "no WCRT: not schedulable".into(),
        (None, _) => "no frames received".into(),
        (Some(_), Some(_)) if c.deviation => {
            "DEVIATION: measured above WCRT: the model or the system is wrong".into()
        }
        (Some(m), Some(w)) => format!("within WCRT ({} us margin)", fmt_num(w - m)),
    }
}

fn verdict_table(ev: &Evidence) -> Table {
    Table {
        id: Some("verdicts"),
        caption: "Verdict per requirement".into(),
        headers: vec![
            "Requirement",
            "ASIL",
            "Text",
            "Metric",
            "Bound",
            "Measured",
            "Verdict",
            "Samples / confidence",
            "Reasons",
        ],
        rows: ev
            .results
            .iter()
            .map(|r| {
                vec![
                    cs(&r.id, Style::Key),
                    c(r.asil.to_string()),
                    c(&r.text),
                    c(&r.metric_label),
                    c(r.bound_text()),
                    c(r.measured_text()),
                    cs(r.verdict.to_string(), Style::Verdict(r.verdict)),
                    c(r.samples_text()),
                    c(reasons_text(r)),
                ]
            })
            .collect(),
    }
}

/// The E2E column of a measured-vs-analysed row: the check outcomes, marked as a
/// deviation when a check failed or timed out.
fn e2e_cell(w: &WcrtComparison) -> Cell {
    match &w.e2e {
        None => c("not protected"),
        Some(e) if e.failed() > 0 || e.timeout > 0 => {
            cs(crate::evidence::deviations::e2e_words(e), Style::Deviation)
        }
        Some(e) => c(crate::evidence::deviations::e2e_words(e)),
    }
}

fn wcrt_table(ev: &Evidence) -> Table {
    let e2e = ev.wcrt.iter().any(|w| w.e2e.is_some());
    let mut headers = vec![
        "Message",
        "Frames",
        "Worst measured (us)",
        "Analytic WCRT (us)",
        "Deadline (us)",
        "Status",
    ];
    if e2e {
        headers.push("E2E checks (receiver)");
    }
    Table {
        id: Some("wcrt"),
        caption: "Worst measured CAN reception latency against the analytic WCRT".into(),
        headers,
        rows: ev
            .wcrt
            .iter()
            .map(|w| {
                let st = if w.deviation {
                    Style::Deviation
                } else {
                    Style::Plain
                };
                let mut row = vec![
                    c(&w.message),
                    c(w.samples.to_string()),
                    c(fmt_opt(w.measured_max_us)),
                    c(fmt_opt(w.wcrt_us)),
                    c(w.deadline_us.to_string()),
                    cs(wcrt_status(w), st),
                ];
                if e2e {
                    row.push(e2e_cell(w));
                }
                row
            })
            .collect(),
    }
}

fn distribution_table(ev: &Evidence) -> Table {
    Table {
        id: Some("distributions"),
        caption:
            "Latency distributions, every run pooled (min and max at the histogram's resolution)"
                .into(),
        headers: vec![
            "Distribution",
            "Samples",
            "Min (us)",
            "Mean (us)",
            "p99 (us)",
            "p99.99 (us)",
            "Max (us)",
        ],
        rows: ev
            .distributions
            .iter()
            .map(|d| {
                vec![
                    c(&d.label),
                    c(d.samples.to_string()),
                    c(fmt_num(d.min_us)),
                    c(fmt_num(d.mean_us)),
                    c(fmt_num(d.p99_us)),
                    c(fmt_num(d.p9999_us)),
                    c(fmt_num(d.max_us)),
                ]
            })
            .collect(),
    }
}

/// The environment rows of a run.
pub fn env_rows(run: &RunInfo) -> Vec<(&'static str, String)> {
    let e = &run.environment;
    let mut rows = vec![
        ("Directory", run.path.clone()),
        ("Manifest sha256", run.manifest_sha256.clone()),
        ("Created", run.created.clone()),
        ("Host name", e.hostname.clone()),
        ("Accelerator", e.accelerator.to_string()),
    ];
    match &e.kernel {
        Some(k) => {
            rows.push(("Kernel", format!("{} {}", k.release, k.version)));
            rows.push(("PREEMPT_RT", if k.preempt_rt { "yes" } else { "no" }.into()));
            rows.push((
                "Virtualization",
                format!(
                    "{}{}",
                    format!("{:?}", k.virtualization).to_lowercase(),
                    k.hypervisor_signature
                        .as_deref()
                        .map(|s| format!(" (CPUID {s})"))
                        .unwrap_or_default()
                ),
            ));
            rows.push(("CPU", format!("{} (online {})", k.cpu_model, k.online_cpus)));
            rows.push(("Command line", k.cmdline.clone()));
        }
        None => rows.push(("Kernel", "not recorded".into())),
    }
    rows.push(("Host tuning (rt-host check)", run.host_check.clone()));
    rows.push(("Guest tuning (rt-guest check)", run.guest_check.clone()));
    rows.push(("Probe self-test", run.selftest.clone()));
    if !e.notes.is_empty() {
        rows.push(("Notes", e.notes.join("; ")));
    }
    if !run.sources.is_empty() {
        rows.push(("Merged from", run.sources.join(", ")));
    }
    rows.push((
        "Valid evidence",
        if run.invalid_because.is_empty() {
            "yes".into()
        } else {
            format!("NO: not valid evidence: {}", run.invalid_because.join("; "))
        },
    ));
    rows
}

fn tools_table(run: &RunInfo) -> Table {
    Table {
        id: None,
        caption: format!("Tools that wrote run {}", run.run_id),
        headers: vec![
            "Tool",
            "Version",
            "Git sha",
            "Arguments",
            "Start",
            "End",
            "Partial",
        ],
        rows: run
            .tools
            .iter()
            .map(|t| {
                vec![
                    c(&t.tool),
                    c(&t.version),
                    cs(&t.git_sha, Style::Mono),
                    cs(t.args.join(" "), Style::Mono),
                    c(&t.start),
                    c(t.end.as_deref().unwrap_or("- (never ended)")),
                    c(t.partial_reason
                        .as_deref()
                        .map(|r| format!("yes: {r}"))
                        .unwrap_or_else(|| if t.partial { "yes" } else { "no" }.into())),
                ]
            })
            .collect(),
    }
}

fn trace_table(ev: &Evidence) -> Table {
    let mut rows = Vec::new();
    for r in &ev.results {
        if r.trace.is_empty() {
            rows.push(vec![
                c(&r.id),
                c(&r.metric_label),
                c("-"),
                c("no data"),
                c("-"),
            ]);
        }
        for t in &r.trace {
            rows.push(vec![
                c(&r.id),
                c(&r.metric_label),
                c(&t.run_id),
                c(&t.file),
                cs(&t.sha256, Style::Mono),
            ]);
        }
    }
    Table {
        id: Some("trace"),
        caption: "Requirement to metric, run, data file and its sha256".into(),
        headers: vec!["Requirement", "Metric", "Run", "Data file", "sha256"],
        rows,
    }
}

fn host_view_table(ev: &Evidence) -> Table {
    Table {
        id: Some("host-view"),
        caption: "The guest's worst spikes beside what the host ran on that vCPU's CPU".into(),
        headers: vec![
            "Guest run",
            "vCPU",
            "Spike (us)",
            "Host time (ns, CLOCK_REALTIME)",
            "Host thread / CPU",
            "vCPU off CPU (us)",
            "Runnable, waiting (us)",
            "Ran instead",
            "Note",
        ],
        rows: ev
            .host_view
            .iter()
            .map(|v| {
                vec![
                    c(&v.run_id),
                    c(v.cpu.to_string()),
                    c(fmt_num(v.latency_us)),
                    cs(
                        format!(
                            "{}..{} (+-{} us, trace in {})",
                            v.host_start_ns,
                            v.host_end_ns,
                            fmt_num(v.uncertainty_us),
                            v.host_run_id
                        ),
                        Style::Mono,
                    ),
                    c(v.thread()),
                    c(fmt_num(v.off_cpu_us)),
                    c(fmt_num(v.runnable_wait_us)),
                    c(if v.ran_instead.is_empty() {
                        "-".into()
                    } else {
                        v.ran_instead.join(", ")
                    }),
                    c(&v.note),
                ]
            })
            .collect(),
    }
}

/// The host view section (only when a run has a host trace).
fn host_view_blocks(ev: &Evidence) -> Vec<Block> {
    if ev.host_view.is_empty() && ev.host_view_unplaced.is_empty() && ev.host_traces.is_empty() {
        return vec![];
    }
    let mut b = vec![
        Block::Heading(2, "Host view of the guest's worst spikes".into()),
        Block::Para("Each of the probe's worst samples, moved to the host's CLOCK_REALTIME with the guest clock offset rt-host trace measured, and the host scheduler's events of that vCPU's thread in that window (widened by the clock uncertainty): time off its CPU, of it runnable but waiting (preempted, or woken and not yet running), and the tasks that held its CPU meanwhile.".into()),
    ];
    if !ev.host_traces.is_empty() {
        b.push(Block::List(ev.host_traces.clone()));
    }
    if !ev.host_view.is_empty() {
        b.push(Block::Table(host_view_table(ev)));
    }
    if !ev.host_view_unplaced.is_empty() {
        b.push(Block::List(ev.host_view_unplaced.clone()));
    }
    b
}

/// Build the report model of `ev`.
pub fn build(ev: &Evidence) -> Doc {
    let title = format!("Timing evidence: {}", ev.profile.name);
    let mut b = vec![
        Block::Heading(1, title.clone()),
        Block::Banner(ev.overall(), headline(ev)),
        Block::Para(format!(
            "Generated {} by validation {} (git {}). Profile {} from {}, sha256 {}.",
            ev.generated,
            ev.tool_version,
            ev.tool_git_sha,
            ev.profile.name,
            ev.profile.origin,
            ev.profile.sha256
        )),
    ];
    for run in ev.runs.iter().filter(|r| !r.invalid_because.is_empty()) {
        b.push(Block::Warning(format!(
            "Run {} is not valid evidence: {}",
            run.run_id,
            run.invalid_because.join("; ")
        )));
    }
    b.push(Block::Heading(2, "Verdicts".into()));
    b.push(Block::Table(verdict_table(ev)));
    if !ev.wcrt.is_empty() {
        b.push(Block::Heading(2, "Measured against analysed (CAN)".into()));
        b.push(Block::Table(wcrt_table(ev)));
    }
    if !ev.distributions.is_empty() {
        b.push(Block::Heading(2, "Latency distributions".into()));
        b.push(Block::Para("OSADL style: latency in microseconds, sample count on a logarithmic axis; every run's histograms pooled.".into()));
        b.push(Block::Table(distribution_table(ev)));
        b.push(Block::Charts);
    }
    if !ev.sample_size.is_empty() {
        b.push(Block::Heading(2, "Sample-size rule".into()));
        b.push(Block::Para(format!("A percentile claim \"pX <= bound\" says a sample exceeds the bound with probability at most q = 1 - X/100. With k of n samples above the bound, the one-sided Clopper-Pearson upper bound on that probability at {} % confidence must not exceed q; with none above, this is the rule of three (about 3/n), so a claim needs at least ln(0.05) / ln(1 - q) samples, e.g. about 3.0 million for p99.9999. A max claim needs --min-samples-max samples ({}).", crate::stats::CONFIDENCE * 100.0, ev.min_samples_max)));
        b.push(Block::List(ev.sample_size.clone()));
    }
    b.extend(host_view_blocks(ev));
    b.push(Block::Heading(2, "Environment and tools".into()));
    for run in &ev.runs {
        b.push(Block::Heading(3, format!("Run {}", run.run_id)));
        b.push(Block::KeyValues(env_rows(run)));
        b.push(Block::Table(tools_table(run)));
    }
    b.push(Block::Heading(2, "Traceability".into()));
    b.push(Block::Table(trace_table(ev)));
    b.push(Block::Heading(2, "Deviations".into()));
    b.push(if ev.deviations.is_empty() {
        Block::Para("None.".into())
    } else {
        Block::List(ev.deviations.clone())
    });
    b.push(Block::Heading(2, "Limits".into()));
    b.push(Block::List(ev.limits.clone()));
    Doc { title, blocks: b }
}
