//! `testkit`: what rtvirt's tests share (a dev-dependency only, never in a binary).
//!
//! - [`require`]: a prerequisite. Run by hand, a missing one prints why the test skips;
//!   under the README test command (`lab/test.sh` sets `RTVIRT_REQUIRE_ALL=1`) it fails the
//!   test, so a green CI means every test ran.
//! - [`host_lock`]: one lock for every test that tunes this host or boots the lab, across
//!   test binaries and checkouts (a `flock(2)` on a file in `/tmp`).

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The variable the README test command sets: every prerequisite must hold.
pub const REQUIRE_ALL: &str = "RTVIRT_REQUIRE_ALL";

/// True when the README test command runs (`RTVIRT_REQUIRE_ALL=1`).
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1")
}

/// A prerequisite of the calling test: true when it holds. When it does not, the test
/// should return at once: run by hand, this prints `SKIP: <why>`; under
/// `RTVIRT_REQUIRE_ALL=1` it panics with `<why>` instead, so the skip fails the run.
#[track_caller]
pub fn require(holds: bool, why: impl Display) -> bool {
    if holds {
        return true;
    }
    let at = std::panic::Location::caller();
    if require_all() {
        panic!("prerequisite missing at {at} ({REQUIRE_ALL}=1, so this fails instead of skipping): {why}");
    }
    eprintln!("SKIP ({at}): {why}");
    false
}

/// [`require`] that this test runs as root.
#[track_caller]
pub fn require_root() -> bool {
    require(nix::unistd::geteuid().is_root(), "needs root")
}

/// [`require`] that `cmd` is on PATH (or is an existing path).
#[track_caller]
pub fn require_command(cmd: &str) -> bool {
    require(command_exists(cmd), format!("{cmd} is not installed"))
}

/// Whether `python3 -c "import MODULE"` works (for tests that compare with a Python
/// reference implementation: python-can, cantools, autosar-e2e).
pub fn python_module(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `cmd` is on PATH (or is an existing path).
pub fn command_exists(cmd: &str) -> bool {
    if cmd.contains('/') {
        return Path::new(cmd).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
}

/// The lock file every host-tuning or lab test holds.
pub const HOST_LOCK: &str = "/tmp/rtvirt-host-tests.lock";

/// Set by `lab/host-lock.sh` for the command it runs under the lock, so that the tests
/// of that command do not wait for the lock their own parent holds.
pub const HOST_LOCK_HELD: &str = "RTVIRT_HOST_LOCK_HELD";

/// A held [`host_lock`]; released on drop (also when the test panics).
#[derive(Debug)]
pub struct HostLock {
    _lock: Option<nix::fcntl::Flock<File>>,
}

/// Take the host lock, waiting for any other test (of any binary or checkout) that tunes
/// this host or boots the lab. Under `lab/host-lock.sh` (which holds the lock for the
/// whole command and sets `RTVIRT_HOST_LOCK_HELD=1`) this returns at once.
pub fn host_lock() -> HostLock {
    if std::env::var(HOST_LOCK_HELD).is_ok_and(|v| v == "1") {
        return HostLock { _lock: None };
    }
    lock_file(Path::new(HOST_LOCK))
}

fn lock_file(path: &Path) -> HostLock {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", path.display()));
    HostLock { _lock: Some(lock) }
}

/// What bash completes for `words` (the binary's name first, the word being completed
/// last) with the completion `script` (a file a binary's `generate completions` wrote)
/// loaded in a real `bash --norc`: the words of `COMPREPLY`, space-separated.
pub fn bash_complete(script: &Path, words: &[&str]) -> String {
    let text = std::fs::read_to_string(script).expect("the completion script reads");
    let func = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("complete -F ")?
                .split_whitespace()
                .next()
        })
        .expect("the script registers a function (complete -F)");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let n = words.len();
    let line = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; {func} '{}' '{}' '{}'; echo \"${{COMPREPLY[*]}}\"",
        script.display(),
        quoted.join(" "),
        n - 1,
        words[0],
        words[n - 1],
        if n > 1 { words[n - 2] } else { words[0] },
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &line])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// [`bash_complete`] with the script the binary `exe` generates itself
/// (`exe generate completions DIR` writes `BIN.bash`, `BIN` being `words[0]`).
pub fn bash_complete_generated(exe: &str, words: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temp dir");
    let o = std::process::Command::new(exe)
        .args(["generate", "completions"])
        .arg(dir.path())
        .output()
        .expect("the binary runs");
    assert!(o.status.success(), "{exe} generate completions: {o:?}");
    bash_complete(&dir.path().join(format!("{}.bash", words[0])), words)
}

/// Run `cmd` with its stdout a pipe whose reader has already gone (as under `CMD | head
/// -0`), and return its status and stderr: every write to stdout fails with EPIPE.
pub fn run_with_closed_stdout(
    cmd: &mut std::process::Command,
) -> (std::process::ExitStatus, String) {
    let (reader, writer) = nix::unistd::pipe().expect("a pipe");
    drop(reader);
    let out = cmd
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("the binary runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Assert that `cmd`, run by [`run_with_closed_stdout`], exits 0 without a panic ("failed
/// printing to stdout"), an error or a warning on stderr for the output nobody reads.
pub fn assert_quiet_on_closed_stdout(cmd: &mut std::process::Command) {
    let shown = format!("{cmd:?}");
    let (status, stderr) = run_with_closed_stdout(cmd);
    assert!(
        status.success()
            && !["panicked", "Broken pipe", "error", "warning"]
                .iter()
                .any(|w| stderr.contains(w)),
        "{shown} with a closed stdout: {status}, stderr {stderr:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_prerequisite_is_true() {
        assert!(require(true, "never printed"));
    }

    #[test]
    fn a_missing_prerequisite_skips_by_hand_and_fails_under_require_all() {
        let r = std::panic::catch_unwind(|| require(false, "no such thing"));
        if require_all() {
            let msg = r.unwrap_err();
            let msg = msg.downcast_ref::<String>().unwrap();
            assert!(msg.contains("no such thing"), "{msg}");
        } else {
            assert!(!r.unwrap());
        }
    }

    #[test]
    fn command_lookup() {
        assert!(command_exists("sh"));
        assert!(!command_exists("rtvirt-no-such-command"));
    }

    #[test]
    fn the_lock_can_be_taken_again_after_release() {
        // A lock file of its own: the real one may be held by a lab run.
        let path = std::env::temp_dir().join(format!("testkit-lock-{}", std::process::id()));
        let a = lock_file(&path);
        let other = OpenOptions::new().append(true).open(&path).unwrap();
        let busy = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(
            busy.is_err(),
            "a second open file description got the held lock"
        );
        drop(a);
        let _b = lock_file(&path);
        std::fs::remove_file(&path).unwrap();
    }
}
