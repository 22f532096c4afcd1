//! Rendering [`Evidence`] as a report: one self-contained HTML file (inline CSS and SVG, no
//! external references), Markdown (the same content without charts), JSON (the Evidence
//! struct) and JUnit XML (one testcase per requirement, for CI systems).

use std::fmt::Write as _;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::chart;
use crate::evidence::{fmt_num, fmt_opt, BoundKind, Evidence, RequirementResult, Verdict};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One self-contained HTML file.
    Html,
    /// Markdown.
    Md,
    /// JSON (the Evidence struct).
    Json,
    /// JUnit XML.
    Junit,
}

impl Format {
    /// File extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Md => "md",
            Format::Json => "json",
            Format::Junit => "junit.xml",
        }
    }
}

/// Errors rendering.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A chart failed.
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    /// JUnit serialization failed.
    #[error("Cannot write JUnit XML: {0}")]
    Junit(String),
    /// JSON serialization failed.
    #[error("Cannot write JSON")]
    Json(#[from] serde_json::Error),
}

/// Render `ev` in `format`.
pub fn render(ev: &Evidence, format: Format) -> Result<String, ReportError> {
    match format {
        Format::Html => html(ev),
        Format::Md => Ok(markdown(ev)),
        Format::Json => Ok(serde_json::to_string_pretty(ev)? + "\n"),
        Format::Junit => junit(ev),
    }
}

/// The bound in words: `<= 50 us`, `>= 200 us`.
pub fn bound_text(r: &RequirementResult) -> String {
    match r.bound {
        None => "none given".into(),
        Some(b) => format!(
            "{} {} {}",
            match r.bound_kind {
                BoundKind::AtMost => "<=",
                BoundKind::AtLeast => ">=",
            },
            fmt_num(b),
            r.unit
        ),
    }
}

/// Measured value in words.
pub fn measured_text(r: &RequirementResult) -> String {
    match r.measured {
        None => "-".into(),
        Some(v) => format!("{} {}", fmt_num(v), r.unit),
    }
}

fn samples_text(r: &RequirementResult) -> String {
    let mut s = r.samples.map(|n| format!("n = {n}")).unwrap_or_default();
    if let Some(c) = &r.confidence {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(c);
    }
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// Reasons for the tables: the data's own, then the environment in short (the causes are
/// stated once per run, above the table).
fn reasons_text(r: &RequirementResult) -> String {
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

fn overall(ev: &Evidence) -> Verdict {
    if ev.summary.fail > 0 {
        Verdict::Fail
    } else if ev.summary.inconclusive > 0 || ev.results.is_empty() {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

fn headline(ev: &Evidence) -> String {
    format!(
        "{}: {} requirements, {} pass, {} fail, {} inconclusive; {} measurement(s) above the analytic WCRT",
        overall(ev),
        ev.results.len(),
        ev.summary.pass,
        ev.summary.fail,
        ev.summary.inconclusive,
        ev.summary.deviations
    )
}

// ------------------------------------------------------------------ Markdown

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markdown report (the HTML content without charts).
pub fn markdown(ev: &Evidence) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Timing evidence: {}\n", md_cell(&ev.profile.name));
    let _ = writeln!(o, "**{}**\n", headline(ev));
    let _ = writeln!(
        o,
        "Generated {} by validation {} (git {}). Profile `{}` from {}, sha256 `{}`.\n",
        ev.generated,
        ev.tool_version,
        ev.tool_git_sha,
        ev.profile.name,
        ev.profile.origin,
        ev.profile.sha256
    );

    for run in ev.runs.iter().filter(|r| !r.invalid_because.is_empty()) {
        let _ = writeln!(
            o,
            "> **Run {} is not valid evidence**: {}\n",
            md_cell(&run.run_id),
            md_cell(&run.invalid_because.join("; "))
        );
    }
    let _ = writeln!(o, "## Verdicts\n");
    let _ = writeln!(
        o,
        "| Requirement | ASIL | Text | Metric | Bound | Measured | Verdict | Samples / confidence | Reasons |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for r in &ev.results {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | **{}** | {} | {} |",
            md_cell(&r.id),
            r.asil,
            md_cell(&r.text),
            md_cell(&r.metric_label),
            md_cell(&bound_text(r)),
            md_cell(&measured_text(r)),
            r.verdict,
            md_cell(&samples_text(r)),
            md_cell(&reasons_text(r))
        );
    }

    if !ev.wcrt.is_empty() {
        let _ = writeln!(o, "\n## Measured against analysed (CAN)\n");
        let _ = writeln!(
            o,
            "| Message | Frames | Worst measured (us) | Analytic WCRT (us) | Deadline (us) | Status |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for c in &ev.wcrt {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                md_cell(&c.message),
                c.samples,
                fmt_opt(c.measured_max_us),
                fmt_opt(c.wcrt_us),
                c.deadline_us,
                wcrt_status(c)
            );
        }
    }

    if !ev.distributions.is_empty() {
        let _ = writeln!(o, "\n## Latency distributions\n");
        let _ = writeln!(
            o,
            "| Distribution | Samples | Min (us) | Mean (us) | p99 (us) | p99.99 (us) | Max (us) |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for d in &ev.distributions {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md_cell(&d.label),
                d.samples,
                fmt_num(d.min_us),
                fmt_num(d.mean_us),
                fmt_num(d.p99_us),
                fmt_num(d.p9999_us),
                fmt_num(d.max_us)
            );
        }
    }

    let _ = writeln!(o, "\n## Environment and tools\n");
    for run in &ev.runs {
        let _ = writeln!(o, "### Run {}\n", md_cell(&run.run_id));
        for (k, v) in env_rows(run) {
            let _ = writeln!(o, "- {k}: {}", md_cell(&v));
        }
        let _ = writeln!(o, "\n| Tool | Version | Git sha | Start | End | Partial |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for t in &run.tools {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                md_cell(&t.tool),
                t.version,
                t.git_sha,
                t.start,
                t.end.as_deref().unwrap_or("-"),
                t.partial_reason
                    .as_deref()
                    .map(|r| format!("yes: {r}"))
                    .unwrap_or_else(|| if t.partial { "yes" } else { "no" }.into())
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Traceability\n");
    let _ = writeln!(o, "| Requirement | Metric | Run | Data file | sha256 |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    for r in &ev.results {
        if r.trace.is_empty() {
            let _ = writeln!(
                o,
                "| {} | {} | - | no data | - |",
                md_cell(&r.id),
                md_cell(&r.metric_label)
            );
        }
        for t in &r.trace {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | `{}` |",
                md_cell(&r.id),
                md_cell(&r.metric_label),
                md_cell(&t.run_id),
                md_cell(&t.file),
                t.sha256
            );
        }
    }

    let _ = writeln!(o, "\n## Deviations\n");
    if ev.deviations.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for d in &ev.deviations {
        let _ = writeln!(o, "- {}", md_cell(d));
    }
    let _ = writeln!(o, "\n## Limits\n");
    for l in &ev.limits {
        let _ = writeln!(o, "- {}", md_cell(l));
    }
    o
}

fn wcrt_status(c: &crate::evidence::WcrtComparison) -> String {
    match (c.measured_max_us, c.wcrt_us) {
        (_, None) => "no WCRT: not schedulable".into(),
        (None, _) => "no frames received".into(),
        (Some(_), Some(_)) if c.deviation => {
            "DEVIATION: measured above WCRT: the model or the system is wrong".into()
        }
        (Some(m), Some(w)) => format!("within WCRT ({} us margin)", fmt_num(w - m)),
    }
}

fn env_rows(run: &crate::evidence::RunInfo) -> Vec<(&'static str, String)> {
    let e = &run.environment;
    let mut rows = vec![
        ("Directory", run.path.clone()),
        ("Manifest sha256", run.manifest_sha256.clone()),
        ("Created", run.created.clone()),
        ("Host name", e.hostname.clone()),
    ];
    match &e.kernel {
        Some(k) => {
            rows.push(("Kernel", format!("{} {}", k.release, k.version)));
            rows.push((
                "PREEMPT_RT",
                if k.preempt_rt { "yes" } else { "no" }.to_string(),
            ));
            rows.push((
                "Virtualization",
                format!(
                    "{}{}",
                    serde_json::to_value(k.virtualization)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
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

// ------------------------------------------------------------------ HTML

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#fff;max-width:1400px}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #1f5ea8;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em;width:100%}
th,td{border:1px solid #c8ced8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#e8eef7}tr:nth-child(even) td{background:#f7f9fc}
.v{font-weight:bold;text-align:center;white-space:nowrap}
.PASS{background:#2e7d32!important;color:#fff}.FAIL{background:#c62828!important;color:#fff}
.INCONCLUSIVE{background:#f9a825!important;color:#1d2430}
.banner{padding:10px 14px;border-radius:6px;font-size:1.1em;margin:12px 0}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.warn{background:#fff3e0;border-left:4px solid #ef6c00;padding:8px 12px;margin:8px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:8px 0 18px;border:1px solid #e3e7ee}
"#;

fn verdict_cell(v: Verdict) -> String {
    format!("<td class=\"v {v}\">{v}</td>")
}

/// HTML report: one self-contained file.
pub fn html(ev: &Evidence) -> Result<String, ReportError> {
    let mut o = String::new();
    let title = format!("Timing evidence: {}", ev.profile.name);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(o, "<h1>{}</h1>", esc(&title));
    let ov = overall(ev);
    let _ = writeln!(
        o,
        "<div class=\"banner {ov}\" id=\"overall\">{}</div>",
        esc(&headline(ev))
    );
    let _ = writeln!(
        o,
        "<p>Generated {} by <b>validation {}</b> (git <span class=\"mono\">{}</span>). Profile <b>{}</b> from {}, sha256 <span class=\"mono\">{}</span>.</p>",
        esc(&ev.generated),
        esc(&ev.tool_version),
        esc(&ev.tool_git_sha),
        esc(&ev.profile.name),
        esc(&ev.profile.origin),
        esc(&ev.profile.sha256)
    );
    for run in ev.runs.iter().filter(|r| !r.invalid_because.is_empty()) {
        let _ = writeln!(
            o,
            "<div class=\"warn\">Run <b>{}</b> is <b>not valid evidence</b>: {}</div>",
            esc(&run.run_id),
            esc(&run.invalid_because.join("; "))
        );
    }

    let _ = writeln!(o, "<h2>Verdicts</h2><table id=\"verdicts\"><tr><th>Requirement</th><th>ASIL</th><th>Text</th><th>Metric</th><th>Bound</th><th>Measured</th><th>Verdict</th><th>Samples / confidence</th><th>Reasons</th></tr>");
    for r in &ev.results {
        let _ = writeln!(
            o,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td></tr>",
            esc(&r.id),
            esc(&r.asil.to_string()),
            esc(&r.text),
            esc(&r.metric_label),
            esc(&bound_text(r)),
            esc(&measured_text(r)),
            verdict_cell(r.verdict),
            esc(&samples_text(r)),
            esc(&reasons_text(r))
        );
    }
    let _ = writeln!(o, "</table>");

    if !ev.wcrt.is_empty() {
        let _ = writeln!(o, "<h2>Measured against analysed (CAN)</h2><table><tr><th>Message</th><th>Frames</th><th>Worst measured (us)</th><th>Analytic WCRT (us)</th><th>Deadline (us)</th><th>Status</th></tr>");
        for c in &ev.wcrt {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
                esc(&c.message),
                c.samples,
                fmt_opt(c.measured_max_us),
                fmt_opt(c.wcrt_us),
                c.deadline_us,
                if c.deviation { " class=\"v FAIL\"" } else { "" },
                esc(&wcrt_status(c))
            );
        }
        let _ = writeln!(o, "</table>");
    }

    if !ev.distributions.is_empty() {
        let _ = writeln!(o, "<h2>Latency histograms</h2><p>OSADL style: latency in microseconds, sample count on a logarithmic axis; every run's histograms pooled.</p><table><tr><th>Distribution</th><th>Samples</th><th>Min (us)</th><th>Mean (us)</th><th>p99 (us)</th><th>p99.99 (us)</th><th>Max (us)</th></tr>");
        for d in &ev.distributions {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.label),
                d.samples,
                fmt_num(d.min_us),
                fmt_num(d.mean_us),
                fmt_num(d.p99_us),
                fmt_num(d.p9999_us),
                fmt_num(d.max_us)
            );
        }
        let _ = writeln!(o, "</table>");
        let _ = writeln!(o, "<div class=\"charts\">");
        for d in &ev.distributions {
            let svg = chart::latency_svg(d)?;
            let _ = writeln!(o, "<div class=\"chart\">{svg}</div>");
        }
        let _ = writeln!(o, "</div>");
    }

    let _ = writeln!(o, "<h2>Environment and tools</h2>");
    for run in &ev.runs {
        let _ = writeln!(o, "<h3>Run {}</h3><table>", esc(&run.run_id));
        for (k, v) in env_rows(run) {
            let _ = writeln!(o, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
        }
        let _ = writeln!(o, "</table><table><tr><th>Tool</th><th>Version</th><th>Git sha</th><th>Arguments</th><th>Start</th><th>End</th><th>Partial</th></tr>");
        for t in &run.tools {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.tool),
                esc(&t.version),
                esc(&t.git_sha),
                esc(&t.args.join(" ")),
                esc(&t.start),
                esc(t.end.as_deref().unwrap_or("-")),
                esc(&t
                    .partial_reason
                    .as_deref()
                    .map(|r| format!("yes: {r}"))
                    .unwrap_or_else(|| if t.partial { "yes" } else { "no" }.into()))
            );
        }
        let _ = writeln!(o, "</table>");
    }

    let _ = writeln!(o, "<h2>Traceability</h2><table id=\"trace\"><tr><th>Requirement</th><th>Metric</th><th>Run</th><th>Data file</th><th>sha256</th></tr>");
    for r in &ev.results {
        if r.trace.is_empty() {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>-</td><td>no data</td><td>-</td></tr>",
                esc(&r.id),
                esc(&r.metric_label)
            );
        }
        for t in &r.trace {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                esc(&r.id),
                esc(&r.metric_label),
                esc(&t.run_id),
                esc(&t.file),
                esc(&t.sha256)
            );
        }
    }
    let _ = writeln!(o, "</table>");

    let _ = writeln!(o, "<h2>Deviations and limits</h2><h3>Deviations</h3><ul>");
    if ev.deviations.is_empty() {
        let _ = writeln!(o, "<li>None.</li>");
    }
    for d in &ev.deviations {
        let _ = writeln!(o, "<li>{}</li>", esc(d));
    }
    let _ = writeln!(o, "</ul><h3>Limits</h3><ul>");
    for l in &ev.limits {
        let _ = writeln!(o, "<li>{}</li>", esc(l));
    }
    let _ = writeln!(o, "</ul></body></html>");
    Ok(o)
}

// ------------------------------------------------------------------ JUnit

/// JUnit XML: one testsuite, one testcase per requirement (id and ASIL as properties);
/// Fail -> failure, Inconclusive -> skipped with the reason.
pub fn junit(ev: &Evidence) -> Result<String, ReportError> {
    let mut report = Report::new(format!("rtvirt timing evidence: {}", ev.profile.name));
    let mut suite = TestSuite::new(format!("requirements of {}", ev.profile.name));
    suite.add_property(Property::new("profile_sha256", ev.profile.sha256.as_str()));
    suite.add_property(Property::new(
        "validation_git_sha",
        ev.tool_git_sha.as_str(),
    ));
    for run in &ev.runs {
        suite.add_property(Property::new(
            format!("run {}", run.run_id),
            if run.invalid_because.is_empty() {
                "valid evidence".to_string()
            } else {
                format!("not valid evidence: {}", run.invalid_because.join("; "))
            },
        ));
        suite.add_property(Property::new(
            format!("run {} probe self-test", run.run_id),
            run.selftest.as_str(),
        ));
    }
    for r in &ev.results {
        let detail = format!(
            "{}: {} measured {} (bound {}); {}{}",
            r.text,
            r.metric_label,
            measured_text(r),
            bound_text(r),
            samples_text(r),
            if r.reasons.is_empty() && r.environment.is_empty() {
                String::new()
            } else {
                format!(
                    "; {}",
                    r.reasons
                        .iter()
                        .chain(&r.environment)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
        let status = match r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!(
                    "{} {} misses {}",
                    r.metric_label,
                    measured_text(r),
                    bound_text(r)
                ));
                s.set_type("requirement not met");
                s.set_description(detail.clone());
                s
            }
            Verdict::Inconclusive => {
                let mut s = TestCaseStatus::skipped();
                let why: Vec<String> = r.reasons.iter().chain(&r.environment).cloned().collect();
                s.set_message(format!("inconclusive: {}", why.join("; ")));
                s
            }
        };
        let mut tc = TestCase::new(r.id.as_str(), status);
        tc.set_classname(format!("{}.{}", ev.profile.name, r.asil).replace(' ', "_"));
        tc.add_property(Property::new("id", r.id.as_str()));
        tc.add_property(Property::new("asil", r.asil.to_string()));
        tc.add_property(Property::new("verdict", r.verdict.to_string()));
        tc.add_property(Property::new("measured", measured_text(r)));
        tc.add_property(Property::new("bound", bound_text(r)));
        tc.set_system_out(detail);
        suite.add_test_case(tc);
    }
    report.add_test_suite(suite);
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::tests::{can, can_msg, good_env, probe, run};
    use crate::evidence::{evaluate, EvalOptions, ProfileRef};
    use profiles::{Asil, Metric, Profile, Requirement};

    pub(crate) fn sample_evidence() -> Evidence {
        let runs = [run(
            good_env(),
            Some(probe(&[(8, 59_000), (12, 990), (31, 10)], 0)),
            Some(can(vec![
                can_msg(0xC0, &[(310, 990), (420, 10)], Some(800.0)),
                can_msg(0x1A0, &[(350, 490), (2100, 10)], Some(1900.0)),
            ])),
        )];
        let req =
            |id: &str, metric: Metric, bound_us: Option<f64>, bound: Option<f64>| Requirement {
                id: id.into(),
                asil: Asil::D,
                text: format!("{id} <text> & more"),
                metric,
                bound_us,
                bound,
            };
        let profile = Profile {
            name: "ecu-test".into(),
            description: String::new(),
            host: None,
            guest: None,
            can: None,
            requirements: vec![
                req(
                    "TSR-RT-001",
                    Metric::ProbeLatency {
                        percentile: 100.0,
                        cpu: None,
                    },
                    Some(50.0),
                    None,
                ),
                req(
                    "TSR-RT-002",
                    Metric::ProbeLatency {
                        percentile: 99.999,
                        cpu: Some(1),
                    },
                    Some(40.0),
                    None,
                ),
                req(
                    "TSR-CAN-001",
                    Metric::CanLatency {
                        percentile: 100.0,
                        id: Some(0x1A0),
                    },
                    Some(2000.0),
                    None,
                ),
            ],
        };
        evaluate(
            &profile,
            ProfileRef {
                name: "ecu-test".into(),
                origin: "test".into(),
                sha256: "ef".repeat(32),
            },
            &runs,
            &EvalOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn markdown_holds_every_section_and_verdict() {
        let ev = sample_evidence();
        let md = markdown(&ev);
        for needle in [
            "| TSR-RT-001 | ASIL D |",
            "**PASS**",
            "**INCONCLUSIVE**",
            "**FAIL**",
            "## Traceability",
            "DEVIATION: measured above WCRT",
            "## Limits",
            "Probe self-test: passed: timer accuracy 2 us",
        ] {
            assert!(md.contains(needle), "{needle} missing in\n{md}");
        }
        assert!(!md.contains("<svg"));
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let ev = sample_evidence();
        let h = html(&ev).unwrap();
        assert!(h.contains("TSR-RT-001 &lt;text&gt; &amp; more"));
        assert_eq!(
            h.matches("<svg").count(),
            3,
            "one chart per CPU and message"
        );
        for bad in ["<script", "<link", "src=\"http", "href=\"http", "url("] {
            assert!(!h.contains(bad), "{bad} in HTML");
        }
    }

    #[test]
    fn json_is_the_evidence_struct() {
        let ev = sample_evidence();
        let text = render(&ev, Format::Json).unwrap();
        let back: Evidence = serde_json::from_str(&text).unwrap();
        assert_eq!(back.results, ev.results);
        assert_eq!(back.summary, ev.summary);
        assert_eq!(back.distributions.len(), 3);
    }

    #[test]
    fn junit_has_a_testcase_per_requirement() {
        let ev = sample_evidence();
        let x = junit(&ev).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
        assert_eq!(x.matches("<failure").count(), 1, "{x}");
        assert_eq!(x.matches("<skipped").count(), 1, "{x}");
        assert!(x.contains("name=\"asil\" value=\"ASIL D\""), "{x}");
        assert!(
            x.contains("probe self-test\" value=\"passed: timer accuracy 2 us\""),
            "{x}"
        );
    }
}
