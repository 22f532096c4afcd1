//! JUnit XML valid against both schemas CI systems check it with: the Jenkins xunit-plugin
//! JUnit schema (`junit-10.xsd`) and the Apache Ant JUnit schema (windyroad `JUnit.xsd`).
//!
//! One `<testsuites>` (no attributes: Ant allows none) holding one `<testsuite>` (`package`, `id`, `hostname`, a timestamp
//! without zone as Ant wants), its `<properties>` (profile sha256, tool git sha, each run's
//! validity and self-test, each requirement's ASIL, verdict, measured value and bound),
//! one `<testcase>` per requirement named by its id (classname `profile.ASIL_D`) holding
//! at most one `<failure>` (FAIL) or `<skipped>` (INCONCLUSIVE) whose message states the
//! measured value against the bound, then `<system-out>` (every requirement in words, the
//! host's view of the guest's worst spikes) and
//! `<system-err>`. Neither schema allows properties or output inside a testcase, and the
//! Jenkins one no `disabled` attribute, which quick-junit always writes: so the file is
//! written with quick-xml directly.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::ReportError;
use crate::evidence::{Evidence, RequirementResult, Verdict};

type W = Writer<Vec<u8>>;

fn err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Junit(e.to_string())
}

fn start(w: &mut W, tag: &str, attrs: &[(&str, &str)]) -> Result<(), ReportError> {
    let mut t = BytesStart::new(tag);
    t.extend_attributes(attrs.iter().copied());
    w.write_event(Event::Start(t)).map_err(err)
}

fn end(w: &mut W, tag: &str) -> Result<(), ReportError> {
    w.write_event(Event::End(BytesEnd::new(tag))).map_err(err)
}

fn element(w: &mut W, tag: &str, attrs: &[(&str, &str)], text: &str) -> Result<(), ReportError> {
    start(w, tag, attrs)?;
    w.write_event(Event::Text(BytesText::new(text)))
        .map_err(err)?;
    end(w, tag)
}

fn empty(w: &mut W, tag: &str, attrs: &[(&str, &str)]) -> Result<(), ReportError> {
    let mut t = BytesStart::new(tag);
    t.extend_attributes(attrs.iter().copied());
    w.write_event(Event::Empty(t)).map_err(err)
}

/// Why a verdict is what it is: the data's reasons, then the environment's.
fn why(r: &RequirementResult) -> Vec<&str> {
    r.reasons
        .iter()
        .chain(&r.environment)
        .map(String::as_str)
        .collect()
}

/// The requirement in one line: text, metric, measured against bound, samples, reasons.
fn detail(r: &RequirementResult) -> String {
    let why = why(r);
    format!(
        "{} [{}]: {}: {} measured {} (bound {}); {}{}",
        r.id,
        r.verdict,
        r.text,
        r.metric_label,
        r.measured_text(),
        r.bound_text(),
        r.samples_text(),
        if why.is_empty() {
            String::new()
        } else {
            format!("; {}", why.join("; "))
        }
    )
}

fn properties(w: &mut W, ev: &Evidence) -> Result<(), ReportError> {
    let mut props: Vec<(String, String)> = vec![
        ("profile_sha256".into(), ev.profile.sha256.clone()),
        ("validation_git_sha".into(), ev.tool_git_sha.clone()),
    ];
    for run in &ev.runs {
        let valid = if run.invalid_because.is_empty() {
            "valid evidence".to_string()
        } else {
            format!("not valid evidence: {}", run.invalid_because.join("; "))
        };
        props.push((format!("run {}", run.run_id), valid));
        props.push((
            format!("run {} probe self-test", run.run_id),
            run.selftest.clone(),
        ));
    }
    for r in &ev.results {
        props.push((format!("{} asil", r.id), r.asil.to_string()));
        props.push((format!("{} verdict", r.id), r.verdict.to_string()));
        props.push((format!("{} measured", r.id), r.measured_text()));
        props.push((format!("{} bound", r.id), r.bound_text()));
    }
    start(w, "properties", &[])?;
    for (k, v) in &props {
        empty(w, "property", &[("name", k), ("value", v)])?;
    }
    end(w, "properties")
}

fn testcase(w: &mut W, ev: &Evidence, r: &RequirementResult) -> Result<(), ReportError> {
    let classname = format!("{}.{}", ev.profile.name, r.asil).replace(' ', "_");
    let attrs = [
        ("name", r.id.as_str()),
        ("classname", &classname),
        ("time", "0.000"),
    ];
    let measured = format!(
        "{} measured {} against {}",
        r.metric_label,
        r.measured_text(),
        r.bound_text()
    );
    match r.verdict {
        Verdict::Pass => empty(w, "testcase", &attrs),
        Verdict::Fail => {
            start(w, "testcase", &attrs)?;
            let msg = format!("{measured}: the bound is missed");
            element(
                w,
                "failure",
                &[("type", "requirement not met"), ("message", &msg)],
                &detail(r),
            )?;
            end(w, "testcase")
        }
        Verdict::Inconclusive => {
            start(w, "testcase", &attrs)?;
            let msg = format!("inconclusive: {measured}; {}", why(r).join("; "));
            element(w, "skipped", &[("message", &msg)], &detail(r))?;
            end(w, "testcase")
        }
    }
}

/// JUnit XML of `ev` (see the module docs).
pub fn render(ev: &Evidence) -> Result<String, ReportError> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(err)?;
    let n = |k: usize| k.to_string();
    let (tests, failures, skipped) = (
        n(ev.results.len()),
        n(ev.summary.fail),
        n(ev.summary.inconclusive),
    );
    // The Ant schema allows no attribute on <testsuites>; the suite carries the counts.
    start(&mut w, "testsuites", &[])?;
    let suite = format!("requirements of {}", ev.profile.name);
    let host = ev
        .runs
        .first()
        .map(|r| r.environment.hostname.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    // Ant's timestamp: ISO 8601 to the second, no zone (the evaluation time, UTC).
    let stamp: String = ev.generated.chars().take(19).collect();
    start(
        &mut w,
        "testsuite",
        &[
            ("name", &suite),
            ("package", &ev.profile.name),
            ("id", "0"),
            ("hostname", &host),
            ("timestamp", &stamp),
            ("tests", &tests),
            ("failures", &failures),
            ("errors", "0"),
            ("skipped", &skipped),
            ("time", "0.000"),
        ],
    )?;
    properties(&mut w, ev)?;
    for r in &ev.results {
        testcase(&mut w, ev, r)?;
    }
    let mut out: Vec<String> = ev.results.iter().map(detail).collect();
    out.extend(ev.wcrt.iter().filter_map(|w| {
        w.e2e.as_ref().map(|e| {
            format!(
                "E2E {}: {}",
                w.message,
                crate::evidence::deviations::e2e_words(e)
            )
        })
    }));
    out.extend(ev.host_traces.iter().map(|t| format!("host view: {t}")));
    out.extend(ev.host_view.iter().map(|v| v.line()));
    out.extend(
        ev.host_view_unplaced
            .iter()
            .map(|u| format!("host view: {u}")),
    );
    element(&mut w, "system-out", &[], &out.join("\n"))?;
    element(&mut w, "system-err", &[], "")?;
    end(&mut w, "testsuite")?;
    end(&mut w, "testsuites")?;
    String::from_utf8(w.into_inner())
        .map_err(err)
        .map(|s| s + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_evidence;

    #[test]
    fn junit_has_a_testcase_per_requirement_with_the_measured_value() {
        let x = render(&sample_evidence()).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
        assert_eq!(x.matches("<failure").count(), 1, "{x}");
        assert_eq!(x.matches("<skipped").count(), 1, "{x}");
        assert!(
            x.contains("name=\"TSR-RT-001 asil\" value=\"ASIL D\""),
            "{x}"
        );
        assert!(
            x.contains("probe self-test\" value=\"passed: 100 delays"),
            "{x}"
        );
        // The measured value is in the failure and skipped messages.
        let fail = x.split("<failure").nth(1).unwrap();
        assert!(
            fail.contains("measured 2101.247 us") && fail.contains("against &lt;= 2000 us"),
            "{fail}"
        );
        let skip = x.split("<skipped").nth(1).unwrap();
        assert!(
            skip.contains("measured 31.") && skip.contains("too few samples"),
            "{skip}"
        );
        assert!(!x.contains("disabled="), "{x}");
        assert!(
            x.contains("timestamp=\"20") && !x.contains("Z\" tests"),
            "{x}"
        );
    }
}
