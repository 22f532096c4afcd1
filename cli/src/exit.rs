//! The exit status of every rtvirt binary, defined once: the codes, what each means, and
//! the text `--help` and the man pages' EXIT STATUS section print.
//!
//! 0 ok; 1 a requirement or budget was not met (what that is depends on the tool: each
//! [`Tool`] says it); 2 error; 130 and 143 (rt-guest) interrupted by SIGINT or SIGTERM, the
//! data measured until then written and marked partial (128 + the signal, as a shell
//! reports a process a signal ended).

/// All good.
pub const OK: u8 = 0;
/// A requirement or budget was not met (a bound exceeded, a check found a difference, a
/// frame lost): the run itself worked.
pub const NOT_MET: u8 = 1;
/// An error: bad input, I/O, a refused operation; the message names what and where.
pub const ERROR: u8 = 2;
/// Interrupted by a signal: 128 + its number, as a shell reports it.
pub const SIGNAL_BASE: u8 = 128;
/// Interrupted by SIGINT (Ctrl-C).
pub const SIGINT: u8 = SIGNAL_BASE + 2;
/// Interrupted by SIGTERM.
pub const SIGTERM: u8 = SIGNAL_BASE + 15;

/// One binary: its name and what its exit codes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The binary's name (`rt-host`).
    pub bin: &'static str,
    /// Which requirement or budget "not met" (exit 1) is for this tool.
    pub not_met: &'static str,
    /// Whether SIGINT/SIGTERM end it with 130/143 (the measured data kept).
    pub interrupted: bool,
}

/// One exit code and its meaning, as the help and man pages list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: u8,
    /// What it means.
    pub meaning: String,
}

impl Tool {
    /// Every exit code of this tool, in order.
    pub fn statuses(&self) -> Vec<Status> {
        let s = |code, meaning: String| Status { code, meaning };
        let mut v = vec![
            s(OK, "ok".into()),
            s(NOT_MET, format!("not met: {}", self.not_met)),
            s(
                ERROR,
                "error (bad input, I/O, a refused operation); the message names what and where"
                    .into(),
            ),
        ];
        if self.interrupted {
            let partial = "the data measured until then is written, marked partial";
            v.push(s(SIGINT, format!("interrupted by SIGINT; {partial}")));
            v.push(s(SIGTERM, format!("interrupted by SIGTERM; {partial}")));
        }
        v
    }

    /// The `Exit status:` block of `--help`.
    pub fn help_text(&self) -> String {
        let mut t = String::from("Exit status:");
        for st in self.statuses() {
            t.push_str(&format!("\n  {:<5}{}", st.code, st.meaning));
        }
        t
    }

    /// `cmd` with the exit codes at the end of its help and of every subcommand's help
    /// (after an `after_help` the command already has).
    pub fn with_exit_help(&self, cmd: clap::Command) -> clap::Command {
        let text = self.help_text();
        let cmd = cmd.mut_subcommands(|sub| self.with_exit_help(sub));
        let after = match cmd.get_after_help() {
            Some(a) => format!("{a}\n\n{text}"),
            None => text,
        };
        cmd.after_help(after)
    }

    /// Parse the process's arguments into `C` with the exit codes in every help (clap's
    /// `Parser::parse`, which exits on `--help` or a usage error).
    pub fn parse<C: clap::Parser>(&self) -> C {
        self.parse_from(std::env::args_os())
    }

    /// [`Tool::parse`] over `args` (the first is the binary's name).
    pub fn parse_from<C, I, T>(&self, args: I) -> C
    where
        C: clap::Parser,
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = self.with_exit_help(C::command());
        let mut matches = cmd.clone().get_matches_from(args);
        C::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }

    /// Print `err` with its causes (see [`crate::error_text`]) and return exit code 2.
    pub fn fail(&self, err: &anyhow::Error) -> std::process::ExitCode {
        crate::exit_with_error(self.bin, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: Tool = Tool {
        bin: "rt-guest",
        not_met: "a bound was exceeded",
        interrupted: true,
    };

    #[test]
    fn signal_codes_are_what_a_shell_reports() {
        assert_eq!((SIGINT, SIGTERM), (130, 143));
    }

    #[test]
    fn help_lists_each_code_once_with_the_tools_meaning() {
        assert_eq!(
            GUEST.help_text(),
            "Exit status:\n  0    ok\n  1    not met: a bound was exceeded\n  \
             2    error (bad input, I/O, a refused operation); the message names what and where\n  \
             130  interrupted by SIGINT; the data measured until then is written, marked partial\n  \
             143  interrupted by SIGTERM; the data measured until then is written, marked partial"
        );
        let host = Tool {
            interrupted: false,
            ..GUEST
        };
        assert!(!host.help_text().contains("130"), "{}", host.help_text());
    }

    #[test]
    fn every_subcommand_help_ends_with_the_codes() {
        let cmd = clap::Command::new("demo")
            .after_help("See the docs.")
            .subcommand(clap::Command::new("run").subcommand(clap::Command::new("deep")));
        let mut cmd = GUEST.with_exit_help(cmd);
        let top = cmd.render_help().to_string();
        assert!(
            top.contains("See the docs.\n\nExit status:\n  0    ok"),
            "{top}"
        );
        let deep = cmd
            .find_subcommand_mut("run")
            .and_then(|r| r.find_subcommand_mut("deep"))
            .expect("deep")
            .render_help()
            .to_string();
        assert!(deep.contains("143  interrupted by SIGTERM"), "{deep}");
    }
}
