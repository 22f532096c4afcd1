//! What rt-host's integration tests share: running the binary, showing what it printed,
//! and killing a setup at its `--pause-after` point.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rt-host"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run rt-host")
}

/// Exit code, standard output and standard error of `o`, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The standard output of `o`, after checking its exit code.
#[track_caller]
pub fn stdout_of(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The standard error of `o`, after checking its exit code.
#[track_caller]
pub fn stderr_of(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits for `rt-host setup --pause-after N` (spawned with its stderr piped) to say it
/// paused after change `n`, then kills it with SIGKILL and reaps it.
#[track_caller]
pub fn kill_9_when_paused(mut child: Child, n: usize) {
    let mut err = BufReader::new(child.stderr.take().expect("setup's stderr piped"));
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains(&format!("paused after {n}")), "{line}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}
