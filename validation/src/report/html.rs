//! The report model as one self-contained HTML file: inline CSS and SVG charts, no script
//! and no external reference, so it opens offline and prints as it shows.

use std::fmt::Write as _;

use super::model::{Block, Doc, Style, Table};
use super::ReportError;
use crate::chart;
use crate::evidence::{Distribution, Evidence};

/// At most this many charts: every probe CPU, then the CAN messages with the highest max
/// (all of them stay in the distributions table).
pub const MAX_CHARTS: usize = 48;

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
caption{text-align:left;font-size:.85em;color:#4a5465;padding:2px 0}
th,td{border:1px solid #c8ced8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#e8eef7}tr:nth-child(even) td{background:#f7f9fc}
.v{font-weight:bold;text-align:center;white-space:nowrap}
.PASS{background:#2e7d32!important;color:#fff}.FAIL{background:#c62828!important;color:#fff}
.INCONCLUSIVE{background:#f9a825!important;color:#1d2430}
.banner{padding:10px 14px;border-radius:6px;font-size:1.1em;margin:12px 0}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.warn{background:#fff3e0;border-left:4px solid #ef6c00;padding:8px 12px;margin:8px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:8px 0 18px;border:1px solid #e3e7ee}
@media print{*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;max-width:none}.banner,.v{border:2px solid #1d2430}
.PASS,.FAIL{color:#fff!important}.chart{break-inside:avoid}table{break-inside:auto}tr{break-inside:avoid}}
"#;

fn cell(s: &Style, text: &str) -> String {
    let t = esc(text);
    match s {
        Style::Plain => format!("<td>{t}</td>"),
        Style::Key => format!("<td><b>{t}</b></td>"),
        Style::Mono => format!("<td class=\"mono\">{t}</td>"),
        Style::Verdict(v) => format!("<td class=\"v {v}\">{t}</td>"),
        Style::Deviation => format!("<td class=\"v FAIL\">{t}</td>"),
    }
}

fn table(o: &mut String, t: &Table) {
    let id = t.id.map(|i| format!(" id=\"{i}\"")).unwrap_or_default();
    let _ = write!(o, "<table{id}><caption>{}</caption><tr>", esc(&t.caption));
    for h in &t.headers {
        let _ = write!(o, "<th scope=\"col\">{}</th>", esc(h));
    }
    let _ = writeln!(o, "</tr>");
    for row in &t.rows {
        let _ = write!(o, "<tr>");
        for c in row {
            o.push_str(&cell(&c.style, &c.text));
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>");
}

/// The distributions that get a chart (see [`MAX_CHARTS`]).
pub fn charted(ds: &[Distribution]) -> Vec<&Distribution> {
    let (probe, mut can): (Vec<&Distribution>, Vec<&Distribution>) =
        ds.iter().partition(|d| d.label.starts_with("Probe"));
    can.sort_by(|a, b| b.max_us.total_cmp(&a.max_us));
    probe.into_iter().chain(can).take(MAX_CHARTS).collect()
}

fn charts(o: &mut String, ev: &Evidence) -> Result<(), ReportError> {
    let shown = charted(&ev.distributions);
    if shown.len() < ev.distributions.len() {
        let _ = writeln!(
            o,
            "<p>Charts of {} of {} distributions (every probe CPU, then the CAN messages with the highest max); the table lists all.</p>",
            shown.len(),
            ev.distributions.len()
        );
    }
    let _ = writeln!(o, "<div class=\"charts\">");
    for d in shown {
        let svg = chart::latency_svg(d)?;
        let _ = writeln!(
            o,
            "<figure class=\"chart\" role=\"img\" aria-label=\"{}\">{svg}</figure>",
            esc(&chart::describe(d))
        );
    }
    let _ = writeln!(o, "</div>");
    Ok(())
}

/// Render `doc` (built from `ev`, whose distributions the charts draw) as HTML.
pub fn render(doc: &Doc, ev: &Evidence) -> Result<String, ReportError> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&doc.title)
    );
    for b in &doc.blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(o, "<h{level}>{}</h{level}>", esc(text));
            }
            Block::Banner(v, text) => {
                let _ = writeln!(
                    o,
                    "<div class=\"banner {v}\" id=\"overall\" role=\"status\">{}</div>",
                    esc(text)
                );
            }
            Block::Para(text) => {
                let _ = writeln!(o, "<p>{}</p>", esc(text));
            }
            Block::Warning(text) => {
                let _ = writeln!(o, "<div class=\"warn\" role=\"note\">{}</div>", esc(text));
            }
            Block::Table(t) => table(&mut o, t),
            Block::KeyValues(rows) => {
                let _ = writeln!(o, "<table>");
                for (k, v) in rows {
                    let _ = writeln!(
                        o,
                        "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                        esc(k),
                        esc(v)
                    );
                }
                let _ = writeln!(o, "</table>");
            }
            Block::List(items) => {
                let _ = writeln!(o, "<ul>");
                for i in items {
                    let _ = writeln!(o, "<li>{}</li>", esc(i));
                }
                let _ = writeln!(o, "</ul>");
            }
            Block::Charts => charts(&mut o, ev)?,
        }
    }
    let _ = writeln!(o, "</body></html>");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_evidence;

    #[test]
    fn html_is_self_contained_and_escaped() {
        let ev = sample_evidence();
        let h = crate::report::render(&ev, crate::report::Format::Html).unwrap();
        assert!(h.contains("TSR-RT-001 &lt;text&gt; &amp; more"));
        assert_eq!(
            h.matches("<svg").count(),
            3,
            "one chart per CPU and message"
        );
        for bad in ["<script", "<link", "src=\"http", "href=\"http", "url("] {
            assert!(!h.contains(bad), "{bad} in HTML");
        }
        assert!(
            h.contains("<caption>Verdict per requirement</caption>"),
            "accessible table name"
        );
        assert!(h.contains("print-color-adjust:exact"));
    }

    #[test]
    fn charts_are_capped_probe_first_then_worst_can() {
        let mut ev = sample_evidence();
        let can = ev.distributions[1].clone();
        ev.distributions.truncate(1);
        for i in 0..100 {
            let mut d = can.clone();
            d.label = format!("CAN reception latency, 0x{i:03X} M");
            d.max_us = f64::from(i);
            ev.distributions.push(d);
        }
        let shown = charted(&ev.distributions);
        assert_eq!(shown.len(), MAX_CHARTS);
        assert!(shown[0].label.starts_with("Probe"));
        assert_eq!(shown[1].max_us, 99.0);
    }
}
