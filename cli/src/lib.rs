//! `rtvirt-cli`: what every rtvirt binary shares at its command line.
//!
//! - [`exit`]: the exit codes, defined once, and [`Tool`], which puts them in every
//!   `--help` and man page;
//! - [`clidoc`]: man pages and shell completions from the same clap definitions that
//!   parse the command line;
//! - [`progress`]: progress bars on stderr, only when it is a terminal;
//! - [`exit_with_error`]: the one error printer (the whole `anyhow` chain, exit code 2).

use std::process::ExitCode;

pub mod clidoc;
pub mod exit;
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
