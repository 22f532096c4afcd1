//! Progress on a terminal and not: the example `progress` run with stderr in a pipe prints
//! exactly its lines; run on a terminal (util-linux `script` gives it a pty) it draws the
//! bar and the spinner around the same lines.

use std::path::PathBuf;
use std::process::Command;

const LINES: [&str; 4] = [
    "a line above the bar",
    "demo: step one",
    "a line from a child",
    "demo: done",
];

fn example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-q", "-p", "rtvirt-cli", "--example", "progress"])
        .status()
        .expect("cargo runs");
    assert!(st.success(), "cargo build --example progress failed");
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|d| d.parent()).unwrap();
    debug.join("examples").join("progress")
}

#[test]
fn not_a_terminal_gets_only_the_lines() {
    let o = Command::new(example()).output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err, LINES.join("\n") + "\n");
}

#[test]
fn a_terminal_gets_the_bar_and_the_spinner_around_the_lines() {
    if !testkit::require_command("script") {
        return;
    }
    let cmd = format!("{} 2>&1", example().display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    for l in LINES {
        assert!(out.contains(l), "{l:?} missing: {out:?}");
    }
    assert!(out.contains("demo: sending"), "no bar: {out:?}");
    // The spinner line: elapsed time, prefix, the latest line.
    assert!(
        out.contains("00:00:00 demo: demo: step one"),
        "no spinner: {out:?}"
    );
    assert!(out.contains('\u{1b}'), "no terminal drawing: {out:?}");
}
