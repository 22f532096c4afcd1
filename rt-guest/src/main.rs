//! `rt-guest`: latency probe, self-test and guest tuning (see `rt-guest --help`).
//!
//! Exit codes: 0 ok; 1 a bound, the self-test or a check was not met; 2 error; 130/143
//! interrupted by SIGINT/SIGTERM (the data measured until then is written, marked partial).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use rt_guest::cli::{Cli, Command, Mode};
use rt_guest::commands;

fn main() -> ExitCode {
    // Keep the resident set to what runs (see rt_sys::rt); best effort, before anything
    // else pages in the binary or starts a thread.
    let _ = rt_sys::rt::advise_exe_random(&rt_sys::SysRoot::live());
    rt_sys::rt::single_malloc_arena();
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::parse_from(commands::cli_args(&argv));
    let r = match &cli.command {
        Command::Probe(a) => commands::probe(a, argv, Mode::Probe),
        Command::Cyclictest(a) => commands::probe(a, argv, Mode::Cyclictest),
        Command::Oslat(a) => rt_guest::oslat_cmd::oslat(a, argv),
        Command::Selftest(a) => commands::selftest(a, argv),
        Command::Check(a) => commands::check(a),
        Command::Tune(a) => commands::tune(a),
        Command::Revert(a) => commands::revert(a),
        Command::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), "rt-guest", *what, dir).map(|()| 0)
        }
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => rtvirt_cli::exit_with_error("rt-guest", &e),
    }
}
