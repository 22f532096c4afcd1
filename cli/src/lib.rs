//! `rtvirt-cli`: what every rtvirt binary shares at its command line.
//!
//! - [`exit`]: the exit codes, defined once, and [`Tool`], which puts them in every
//!   `--help` and man page;
//! - [`clidoc`]: man pages and shell completions from the same clap definitions that
//!   parse the command line;
//! - [`progress`]: progress bars on stderr, only when it is a terminal;
//! - [`exit_with_error`]: the one error printer (the whole `anyhow` chain, exit code 2);
//! - [`stop_on_signals`]: the flag SIGINT and SIGTERM set, for work that ends cleanly;
//! - [`begin_run`]: a tool's entry in a run directory's manifest, with the profile;
//! - [`mod@out`]: stdout through [`outln!`] and [`out!`], quiet when a pipe's reader has gone.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;

pub mod clidoc;
pub mod exit;
pub mod out;
pub mod progress;

pub use exit::Tool;

/// Exit code for an error (bad input, I/O, a refused operation): the documented code 2 of
/// every rtvirt binary.
pub const EXIT_ERROR: u8 = exit::ERROR;

/// Print `err` with its whole cause chain to stderr as `BIN: error: ...` followed by one
/// `  caused by: ...` line per cause, and return exit code 2.
pub fn exit_with_error(bin: &str, err: &anyhow::Error) -> ExitCode {
    eprint!("{}", error_text(bin, err));
    ExitCode::from(EXIT_ERROR)
}

/// A flag that SIGINT and SIGTERM set: long work polls it, stops, and still writes what it
/// has.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("Installing signal handlers")?;
    }
    Ok(stop)
}

/// Begin this process's tool run in `rd`'s manifest (the tool's name, the version every
/// rtvirt binary shares, the build's git sha, `args`) and keep a copy of the profile it
/// runs, when it runs one (the first copy in a run wins).
pub fn begin_run(
    rd: &mut record::RunDir,
    tool: &str,
    args: Vec<String>,
    loaded: Option<&profiles::Loaded>,
) -> Result<(), record::RecordError> {
    rd.begin_tool(tool, env!("CARGO_PKG_VERSION"), record::GIT_SHA, args)?;
    if let Some(l) = loaded {
        rd.set_profile(&l.profile.name, &l.origin.to_string(), &l.text)?;
    }
    Ok(())
}

/// The text [`exit_with_error`] prints.
pub fn error_text(bin: &str, err: &anyhow::Error) -> String {
    let mut s = format!("{bin}: error: {err}\n");
    for cause in err.chain().skip(1) {
        s.push_str(&format!("  caused by: {cause}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_prints_every_cause_once() {
        let e = anyhow::anyhow!("disk full").context("Cannot write probe.json");
        assert_eq!(
            error_text("rt-guest", &e),
            "rt-guest: error: Cannot write probe.json\n  caused by: disk full\n"
        );
    }
}
