//! The report model as Markdown (the HTML content without the charts).

use std::fmt::Write as _;

use super::model::{Block, Doc, Style, Table};

/// A table cell's text, escaped for Markdown.
pub fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(o: &mut String, t: &Table) {
    let _ = writeln!(o, "| {} |", t.headers.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(t.headers.len()));
    for row in &t.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| match c.style {
                Style::Verdict(_) => format!("**{}**", md_cell(&c.text)),
                Style::Mono if !c.text.is_empty() => format!("`{}`", c.text.replace('`', "'")),
                _ => md_cell(&c.text),
            })
            .collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(o);
}

/// Render `doc` as Markdown.
pub fn render(doc: &Doc) -> String {
    let mut o = String::new();
    for b in &doc.blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(o, "{} {}\n", "#".repeat(usize::from(*level)), md_cell(text));
            }
            Block::Banner(_, text) => {
                let _ = writeln!(o, "**{}**\n", md_cell(text));
            }
            Block::Para(text) => {
                let _ = writeln!(o, "{}\n", md_cell(text));
            }
            Block::Warning(text) => {
                let _ = writeln!(o, "> **{}**\n", md_cell(text));
            }
            Block::Table(t) => table(&mut o, t),
            Block::KeyValues(rows) => {
                for (k, v) in rows {
                    let _ = writeln!(o, "- {k}: {}", md_cell(v));
                }
                let _ = writeln!(o);
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(o, "- {}", md_cell(i));
                }
                let _ = writeln!(o);
            }
            Block::Charts => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample_evidence;
    use crate::report::{render, Format};

    #[test]
    fn markdown_holds_every_section_and_verdict() {
        let md = render(&sample_evidence(), Format::Md).unwrap();
        for needle in [
            "| TSR-RT-001 | ASIL D |",
            "**PASS**",
            "**INCONCLUSIVE**",
            "**FAIL**",
            "## Traceability",
            "DEVIATION: measured above WCRT",
            "## Limits",
            "- Probe self-test: passed: 100 delays of 200 us injected on CPU 1",
            "TSR-RT-001 <text> & more",
        ] {
            assert!(md.contains(needle), "{needle} missing in\n{md}");
        }
        assert!(!md.contains("<svg"));
    }

    #[test]
    fn pipes_and_newlines_do_not_break_tables() {
        assert_eq!(super::md_cell("a|b\nc"), "a\\|b c");
    }
}
