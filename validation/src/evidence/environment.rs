//! Is a run valid evidence? Judged from typed fields only (`record::Environment`): the
//! accelerator, the kernel facts of guest and host, the host check's item statuses
//! (`record::CheckStatus::is_not_ok`), the self-test's verdict and the tool runs. Notes
//! are shown, never read.

use record::{Accelerator, CheckReport, Manifest, SelftestSummary};

use super::{RunData, RunInfo};
use crate::fmt::fmt_num;

/// A check report in words: `all 12 items ok`, or `2 of 12 items not ok (name target:
/// status, ...)`.
pub fn check_words(r: Option<&CheckReport>) -> String {
    let Some(r) = r else {
        return "not recorded".into();
    };
    if r.items.is_empty() {
        return format!("{} listed no items", r.tool);
    }
    let bad = r.not_ok();
    if bad.is_empty() {
        return format!("all {} items ok", r.items.len());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(6)
        .map(|i| format!("{}: {}", i.label(), i.status))
        .collect();
    format!(
        "{}: {} of {} items not ok ({}{})",
        r.tool,
        bad.len(),
        r.items.len(),
        shown.join(", "),
        if bad.len() > 6 { ", ..." } else { "" }
    )
}

/// The self-test in words.
pub fn selftest_words(s: Option<&SelftestSummary>) -> String {
    let Some(s) = s else {
        return "not run".into();
    };
    format!(
        "{}: {} delays of {} us injected on CPU {}, {} detected, max {} us",
        if s.passed { "passed" } else { "FAILED" },
        s.injected,
        fmt_num(s.delay_us),
        s.cpu,
        s.detected,
        fmt_num(s.max_us)
    )
}

fn accelerator_issue(m: &Manifest) -> Option<String> {
    let env = &m.environment;
    match env.accelerator {
        Accelerator::Tcg => Some(
            "measured under QEMU TCG emulation: timing is not real-time, not valid evidence".into(),
        ),
        Accelerator::Nested => {
            let host = env
                .host_check
                .as_ref()
                .and_then(|h| h.kernel.as_ref())
                .map(|k| format!("{:?}", k.virtualization).to_lowercase())
                .unwrap_or_default();
            Some(format!(
                "nested virtualization (the host itself runs under {host}): not valid evidence"
            ))
        }
        _ => None,
    }
}

/// Why the environment of `m` is not valid evidence (empty: valid). `prefix` names a
/// source run of a merged record.
pub fn environment_issues(m: &Manifest, prefix: &str) -> Vec<String> {
    let env = &m.environment;
    let mut out = Vec::new();
    match &env.kernel {
        None => out.push("no kernel facts recorded: the environment is unknown".into()),
        Some(k) if !k.preempt_rt => out.push(format!(
            "kernel {} is not PREEMPT_RT: not valid evidence",
            k.release
        )),
        Some(_) => {}
    }
    out.extend(accelerator_issue(m));
    let host_kernel = env.host_check.as_ref().and_then(|h| h.kernel.as_ref());
    if let Some(k) = host_kernel.filter(|k| !k.preempt_rt) {
        out.push(format!(
            "the host kernel {} is not PREEMPT_RT: not valid evidence",
            k.release
        ));
    }
    match &env.host_check {
        None => out
            .push("host tuning not verified: no rt-host check result recorded at run time".into()),
        Some(r) if !r.verified() => out.push(format!(
            "host tuning not verified: {}",
            check_words(Some(r))
        )),
        Some(_) => {}
    }
    if env.selftest.as_ref().is_some_and(|s| !s.passed) {
        out.push("the probe self-test failed: the measuring tool is not validated".into());
    }
    for why in m.partial_because() {
        out.push(format!("partial run: {why}"));
    }
    out.into_iter().map(|s| format!("{prefix}{s}")).collect()
}

/// Issues of a run: its own, or for a merged run those of every source (the merged
/// manifest's own environment is only a summary) plus its own tool runs.
pub fn run_issues(r: &RunData) -> Vec<String> {
    let mut out: Vec<String> = if r.sources.is_empty() {
        environment_issues(&r.manifest, "")
    } else {
        let mut v: Vec<String> = r
            .sources
            .iter()
            .flat_map(|(s, _)| environment_issues(s, &format!("source {}: ", s.run_id)))
            .collect();
        v.extend(
            r.manifest
                .partial_because()
                .into_iter()
                .map(|w| format!("partial run: {w}")),
        );
        v
    };
    if r.probe.as_ref().is_some_and(|p| p.partial) {
        out.push("partial run: probe.json is marked partial".into());
    }
    if r.can.as_ref().is_some_and(|c| c.partial) {
        out.push("partial run: can.json is marked partial".into());
    }
    if r.oslat.as_ref().is_some_and(|o| o.partial) {
        out.push("partial run: oslat.json is marked partial".into());
    }
    if r.hwlat.as_ref().is_some_and(|o| o.partial) {
        out.push("partial run: hwlat.json is marked partial".into());
    }
    out.sort();
    out.dedup();
    out
}

/// The run as the evidence shows it.
pub fn run_info(r: &RunData) -> RunInfo {
    let env = &r.manifest.environment;
    RunInfo {
        run_id: r.id().to_string(),
        path: r.path.display().to_string(),
        manifest_sha256: r.manifest_sha256.clone(),
        created: r.manifest.created.clone(),
        tools: r.manifest.tools.clone(),
        environment: env.clone(),
        files: r.manifest.files.keys().map(|n| r.trace(n)).collect(),
        sources: r.manifest.sources.clone(),
        invalid_because: run_issues(r),
        selftest: selftest_words(env.selftest.as_ref()),
        host_check: check_words(env.host_check.as_ref()),
        guest_check: check_words(env.guest_check.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::fixtures::{facts, good_env, host_check, item, selftest};
    use record::{CheckStatus, ToolRun};
    use rt_sys::kernel::Virtualization;

    fn issues(env: record::Environment) -> Vec<String> {
        let mut m = Manifest::new("r".into(), "c".into(), "h".into());
        m.environment = env;
        m.environment.accelerator = m.environment.derived_accelerator();
        environment_issues(&m, "")
    }

    #[test]
    fn a_good_environment_has_no_issue() {
        assert_eq!(issues(good_env()), Vec::<String>::new());
    }

    #[test]
    fn guest_warn_and_info_items_do_not_count_as_not_ok() {
        let mut e = good_env();
        e.guest_check = Some(CheckReport {
            tool: "rt-guest check".into(),
            profile: None,
            kernel: None,
            items: vec![
                item("clocksource", CheckStatus::Warn),
                item("thp", CheckStatus::Info),
            ],
        });
        assert_eq!(check_words(e.guest_check.as_ref()), "all 2 items ok");
        assert_eq!(issues(e), Vec::<String>::new());
    }

    #[test]
    fn host_statuses_decide_verification() {
        let mut e = good_env();
        let mut hc = host_check(Virtualization::None, true);
        hc.items
            .push(item("irq 24 affinity", CheckStatus::NotPermitted));
        hc.items.push(item("hugepages", CheckStatus::NotApplicable));
        e.host_check = Some(hc);
        let got = issues(e);
        assert_eq!(
            got,
            ["host tuning not verified: rt-host check: 1 of 3 items not ok (irq 24 affinity: not-permitted)"]
        );
    }

    #[test]
    fn nested_and_host_kernel_come_from_typed_facts() {
        let mut e = good_env();
        e.host_check = Some(host_check(Virtualization::Kvm, false));
        let got = issues(e);
        assert!(
            got.contains(
                &"nested virtualization (the host itself runs under kvm): not valid evidence"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"the host kernel 6.1.0-rt-amd64 is not PREEMPT_RT: not valid evidence".to_string()
            ),
            "{got:?}"
        );
    }

    #[test]
    fn tcg_unknown_failed_selftest_and_killed_tools() {
        let mut e = good_env();
        e.kernel = Some(facts(Virtualization::Tcg, true));
        assert!(issues(e)[0].contains("QEMU TCG"));
        let mut e = good_env();
        e.kernel = None;
        assert!(issues(e)[0].contains("environment is unknown"));
        let mut e = good_env();
        e.selftest = Some(selftest(false));
        assert_eq!(
            issues(e),
            ["the probe self-test failed: the measuring tool is not validated"]
        );
        let mut m = Manifest::new("r".into(), "c".into(), "h".into());
        m.environment = good_env();
        m.environment.accelerator = Accelerator::Kvm;
        m.tools.push(ToolRun {
            tool: "rt-guest probe".into(),
            version: "0".into(),
            git_sha: "x".into(),
            args: vec![],
            start: "s".into(),
            end: None,
            partial: false,
            partial_reason: None,
        });
        let got = environment_issues(&m, "source r: ");
        assert_eq!(
            got,
            ["source r: partial run: rt-guest probe started s and never recorded its end (killed, or still running)"]
        );
        assert_eq!(
            selftest_words(Some(&selftest(true))),
            "passed: 100 delays of 200 us injected on CPU 1, 100 detected, max 231.5 us"
        );
    }
}
