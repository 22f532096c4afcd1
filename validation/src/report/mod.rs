//! Rendering [`Evidence`] as a report. One model ([`model::Doc`], built once from the
//! evidence) is rendered to HTML ([`html`]: one self-contained file, inline CSS and SVG, no
//! external references) and Markdown ([`md`]: the same content without charts); JSON is
//! the Evidence struct and JUnit XML ([`junit`]) has one testcase per requirement, for CI
//! systems.

use crate::chart;
use crate::evidence::Evidence;

pub mod html;
pub mod junit;
pub mod md;
pub mod model;

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
        Format::Html => html::render(&model::build(ev), ev),
        Format::Md => Ok(md::render(&model::build(ev))),
        Format::Json => Ok(serde_json::to_string_pretty(ev)? + "\n"),
        Format::Junit => junit::render(ev),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::evidence::fixtures::{can, can_msg, good_env, probe, run};
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
    fn json_is_the_evidence_struct() {
        let ev = sample_evidence();
        let text = render(&ev, Format::Json).unwrap();
        let back: Evidence = serde_json::from_str(&text).unwrap();
        assert_eq!(back.results, ev.results);
        assert_eq!(back.summary, ev.summary);
        assert_eq!(back.distributions.len(), 3);
    }

    #[test]
    fn a_host_trace_puts_the_host_view_beside_the_spikes_in_every_format() {
        use crate::evidence::fixtures::{at, host_trace};
        use crate::evidence::hostview::tests::{guest_with_spike, host_run};
        let plain = sample_evidence();
        let h = "Host view of the guest's worst spikes";
        assert!(!model::build(&plain).headings().contains(&h.to_string()));
        assert!(!render(&plain, Format::Junit).unwrap().contains("host view"));
        let runs = [
            guest_with_spike(35, at(133)),
            host_run(host_trace(0, "synced")),
        ];
        let mut ev = plain.clone();
        (ev.host_view, ev.host_view_unplaced) = crate::evidence::hostview::spike_views(&runs);
        ev.host_traces = crate::evidence::hostview::trace_lines(&runs);
        assert!(model::build(&ev).headings().contains(&h.to_string()));
        let md = render(&ev, Format::Md).unwrap();
        assert!(md.contains("kworker/1:0 (pid 77): 30.0 us"), "{md}");
        assert!(md.contains("CPU 1/KVM (tid 50) on CPU 1"), "{md}");
        let clock = "guest clock offset (guest - host) 0.0 us +- 2.0 us (synced)";
        assert!(md.contains(clock), "{md}");
        let html = render(&ev, Format::Html).unwrap();
        assert!(html.contains("id=\"host-view\""), "{html}");
        assert!(html.contains(clock), "{html}");
        let junit = render(&ev, Format::Junit).unwrap();
        assert!(
            junit.contains(
                "host view: 35.0 us spike of run run-test on vCPU 1 (CPU 1/KVM (tid 50) on CPU 1;"
            ),
            "{junit}"
        );
        assert!(junit.contains(clock), "{junit}");
    }

    #[test]
    fn e2e_check_outcomes_stand_beside_measured_and_analytic_latency_in_every_format() {
        let e2e = |ok, repeated, wrong_sequence, error, timeout| record::E2eCounts {
            profile: "P01".into(),
            ok,
            ok_some_lost: 2,
            repeated,
            wrong_sequence,
            error,
            timeout,
            timeout_us: 20_000,
        };
        let msgs = |e: record::E2eCounts| {
            let mut m = can_msg(0xC0, &[(310, 990), (420, 10)], Some(800.0));
            m.e2e = Some(e);
            can(vec![m, can_msg(0x1A0, &[(350, 500)], Some(1900.0))])
        };
        let runs = [
            run(good_env(), None, Some(msgs(e2e(990, 1, 0, 0, 0)))),
            run(good_env(), None, Some(msgs(e2e(995, 0, 2, 3, 1)))),
        ];
        let mut ev = sample_evidence();
        ev.wcrt = crate::evidence::deviations::wcrt_comparisons(&runs).unwrap();
        let pooled = ev.wcrt[0].e2e.as_ref().expect("0x0C0 is protected");
        assert_eq!(
            (pooled.ok, pooled.ok_some_lost, pooled.repeated),
            (1985, 4, 1)
        );
        assert_eq!(
            (pooled.wrong_sequence, pooled.error, pooled.timeout),
            (2, 3, 1)
        );
        assert_eq!(ev.wcrt[1].e2e, None);
        let words = "P01: 1985 ok, 4 ok after losses, 1 repeated, 2 wrong sequence, 3 error, 1 timeout (timeout 20000 us)";
        let md = render(&ev, Format::Md).unwrap();
        let row = md
            .lines()
            .find(|l| l.contains("0x0C0") && l.contains("within WCRT"))
            .unwrap_or_else(|| panic!("no 0x0C0 row in\n{md}"));
        assert!(row.contains(words), "{row}");
        assert!(md.contains("E2E checks (receiver)"), "{md}");
        assert!(
            md.lines()
                .any(|l| l.contains("0x1A0") && l.contains("not protected")),
            "{md}"
        );
        let html = render(&ev, Format::Html).unwrap();
        assert!(html.contains(words), "{html}");
        let junit = render(&ev, Format::Junit).unwrap();
        assert!(
            junit.contains(&format!("E2E 0x0C0 MsgC0: {words}")),
            "{junit}"
        );
        // No protected message: no E2E column.
        let plain = sample_evidence();
        assert!(!render(&plain, Format::Md).unwrap().contains("E2E checks"));
    }

    #[test]
    fn markdown_and_html_carry_the_same_sections() {
        let ev = sample_evidence();
        let md = render(&ev, Format::Md).unwrap();
        let html = render(&ev, Format::Html).unwrap();
        for h in model::build(&ev).headings() {
            assert!(md.contains(&format!(" {h}\n")), "{h} not in the Markdown");
            assert!(
                html.contains(&format!(">{}</h", html::esc(&h))),
                "{h} not in the HTML"
            );
        }
    }
}
