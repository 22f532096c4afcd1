//! The fixture profiles in `tests/fixtures`: every broken profile gives exactly one clear
//! error naming the field and the bad value, never a panic; every good one loads.
//!
//! - `bad/*.ron`: `profiles::load` must fail with one error containing the text after
//!   `// expect:` on the first line.
//! - `machine/*.ron`: valid on their own; `validate_against` a fake 2-CPU machine
//!   (`sys/devices/system/cpu/online` = `0-1`) must fail with one such error.
//! - `good/*.ron`: load, and pass `validate_against` the same machine.

use std::path::{Path, PathBuf};

use profiles::ProfileError;
use rt_sys::SysRoot;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .collect();
    v.sort();
    v
}

/// The text after `// expect: ` on the first line.
fn expectation(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or("");
    first
        .strip_prefix("// expect: ")
        .unwrap_or_else(|| panic!("{}: first line is not `// expect: ...`", path.display()))
        .trim()
        .to_string()
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The one error of a failed load, as text; `Err` explains what was wrong instead.
fn single_error(result: Result<profiles::Loaded, ProfileError>) -> Result<String, String> {
    match result {
        Ok(l) => Err(format!("loaded fine as {:?}", l.profile.name)),
        Err(ProfileError::Invalid { errors, .. }) if errors.len() == 1 => Ok(errors[0].to_string()),
        Err(ProfileError::Invalid { errors, .. }) => Err(format!(
            "{} errors instead of one: {}",
            errors.len(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" | ")
        )),
        Err(e @ ProfileError::Syntax { .. }) => Ok(e.to_string()),
        Err(e) => Err(format!("unexpected error kind: {e}")),
    }
}

fn two_cpu_machine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("sys/devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("online"), "0-1\n").unwrap();
    std::fs::write(cpu.join("present"), "0-1\n").unwrap();
    dir
}

#[test]
fn every_bad_fixture_gives_its_one_error() {
    let bad = fixtures("bad");
    assert!(bad.len() >= 30, "only {} bad fixtures", bad.len());
    let mut failures = Vec::new();
    for path in &bad {
        let want = expectation(path);
        let got = std::panic::catch_unwind(|| profiles::load(path.to_str().unwrap()))
            .map_err(|_| "panicked".to_string())
            .and_then(single_error);
        match got {
            Ok(text) if text.contains(&want) => {}
            Ok(text) => failures.push(format!("{}: want {want:?}\n    got {text:?}", name(path))),
            Err(why) => failures.push(format!("{}: {why}", name(path))),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_machine_fixture_fails_only_against_the_machine() {
    let machine = two_cpu_machine();
    let root = SysRoot::new(machine.path());
    let cases = fixtures("machine");
    assert!(cases.len() >= 5, "only {} machine fixtures", cases.len());
    let mut failures = Vec::new();
    for path in &cases {
        let want = expectation(path);
        let loaded = match profiles::load(path.to_str().unwrap()) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{}: does not load: {e}", name(path)));
                continue;
            }
        };
        match profiles::validate_against(&loaded.profile, &root) {
            Ok(()) => failures.push(format!("{}: passed the 2-CPU machine", name(path))),
            Err(errs) if errs.len() == 1 && errs[0].to_string().contains(&want) => {}
            Err(errs) => failures.push(format!(
                "{}: want one error containing {want:?}, got {:?}",
                name(path),
                errs.iter().map(ToString::to_string).collect::<Vec<_>>()
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_good_fixture_loads_and_fits_two_cpus() {
    let machine = two_cpu_machine();
    let root = SysRoot::new(machine.path());
    let good = fixtures("good");
    assert!(good.len() >= 2);
    for path in &good {
        let l = profiles::load(path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", name(path)));
        profiles::validate_against(&l.profile, &root)
            .unwrap_or_else(|e| panic!("{}: {e:?}", name(path)));
        profiles::validate_guest_against(&l.profile, &root)
            .unwrap_or_else(|e| panic!("{}: {e:?}", name(path)));
    }
}

#[test]
fn plain_and_some_options_mean_the_same() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    let plain = profiles::load(dir.join("plain_options.ron").to_str().unwrap()).unwrap();
    let h = plain.profile.host.unwrap();
    assert_eq!(h.kvm.halt_poll_ns, Some(200_000));
    assert_eq!(h.idle.max_exit_latency_us, Some(0));
    assert_eq!(h.vm.unwrap().pid, Some(4242));
    let p = plain.profile.guest.unwrap().probe;
    assert_eq!(p.breaktrace_us, Some(200));
    assert_eq!(p.duration.0.as_secs(), 150);
}

/// Syntax errors carry `origin:line:column: path: message`, at the right place.
fn syntax(text: &str) -> String {
    profiles::parse(text, "t.ron").unwrap_err().to_string()
}

#[test]
fn missing_comma_points_at_the_line_after() {
    let text = "Profile(\n  name: \"x\"\n  description: \"y\",\n)";
    let e = syntax(text);
    assert_eq!(
        e,
        "t.ron:3:3: .: Expected comma (missing at the end of line 2?)"
    );
}

#[test]
fn unknown_asil_names_the_variants() {
    let text = "Profile(name: \"x\", requirements: [\n  (id: \"R\", asil: E, text: \"t\", metric: BusLoad, bound: Some(1)),\n])";
    let e = syntax(text);
    assert!(e.starts_with("t.ron:2:19: requirements[0].asil: "), "{e}");
    assert!(
        e.contains("`E`") && e.contains("`QM`, `A`, `B`, `C`, or `D`"),
        "{e}"
    );
}

#[test]
fn bad_duration_quotes_the_text_and_the_units() {
    let text = "Profile(name: \"x\",\n guest: Some((probe: (duration: \"6o s\"))))";
    let e = syntax(text);
    assert!(e.starts_with("t.ron:2:"), "{e}");
    assert!(
        e.contains("guest.probe.duration: invalid duration \"6o s\": unknown time unit \"o\""),
        "{e}"
    );
}

#[test]
fn wrong_type_shows_what_was_found() {
    let text = "Profile(name: \"x\",\n guest: Some((probe: (interval_us: true))))";
    assert_eq!(
        syntax(text),
        "t.ron:2:36: guest.probe.interval_us: Expected integer (found `true`)"
    );
    assert_eq!(
        syntax("Profile(name: 7)"),
        "t.ron:1:15: name: Expected string (found `7`)"
    );
}

#[test]
fn fraction_in_an_integer_field_is_named() {
    let text = "Profile(name: \"x\",\n guest: Some((probe: (interval_us: 1.5))))";
    assert_eq!(
        syntax(text),
        "t.ron:2:36: guest.probe.interval_us: Expected an integer, found `1.5`"
    );
    let text =
        "Profile(name: \"x\", can: Some((bitrate: 500000.0, tx: \"a\", rx: \"a\", ecus: [])))";
    assert_eq!(
        syntax(text),
        "t.ron:1:40: can.bitrate: Expected an integer, found `500000.0`"
    );
}

#[test]
fn negative_integer_shows_its_sign() {
    let text = "Profile(name: \"x\",\n guest: Some((probe: (priority: -1))))";
    let e = syntax(text);
    assert!(
        e.ends_with("guest.probe.priority: Integer is out of bounds (found `-1`)"),
        "{e}"
    );
}

#[test]
fn trailing_text_is_placed() {
    let e = syntax("Profile(name: \"x\")\n)");
    assert_eq!(e, "t.ron:2:1: .: Non-whitespace trailing characters");
}

#[test]
fn unknown_field_names_the_struct_path() {
    let e = syntax("Profile(name: \"x\",\n can: Some((bitrate: 1, tx: \"a\", rx: \"a\", ecus: [], busload: 3)))");
    assert!(e.starts_with("t.ron:2:"), "{e}");
    assert!(
        e.contains("can.busload: Unexpected field named `busload` in `Can`"),
        "{e}"
    );
}
