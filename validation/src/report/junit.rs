//! JUnit XML (quick-junit): one testsuite, one testcase per requirement named by its id;
//! FAIL -> `<failure>`, INCONCLUSIVE -> `<skipped>` with the reasons.

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::ReportError;
use crate::evidence::{Evidence, Verdict};
use crate::fmt::{bound_text, measured_text, samples_text};

/// JUnit XML: one testsuite, one testcase per requirement (id and ASIL as properties);
/// Fail -> failure, Inconclusive -> skipped with the reason.
pub fn render(ev: &Evidence) -> Result<String, ReportError> {
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
    use crate::report::tests::sample_evidence;

    #[test]
    fn junit_has_a_testcase_per_requirement() {
        let x = render(&sample_evidence()).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
        assert_eq!(x.matches("<failure").count(), 1, "{x}");
        assert_eq!(x.matches("<skipped").count(), 1, "{x}");
        assert!(x.contains("name=\"asil\" value=\"ASIL D\""), "{x}");
        assert!(
            x.contains("probe self-test\" value=\"passed: 100 delays"),
            "{x}"
        );
    }
}
