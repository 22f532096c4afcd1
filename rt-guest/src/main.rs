//! `rt-guest`: latency probe, self-test and guest tuning (see `rt-guest --help`).
//!
//! Exit codes: [`rt_guest::cli::TOOL`] (defined in `rtvirt_cli::exit`, printed by every `--help`).

use std::process::ExitCode;

use clap::CommandFactory;
use rt_guest::cli::{Cli, Command, Mode};
use rt_guest::commands;

fn main() -> ExitCode {
    // Keep the resident set to what runs (see rt_sys::rt); best effort, before anything
    // else pages in the binary or starts a thread.
    let _ = rt_sys::rt::advise_exe_random(&rt_sys::SysRoot::live());
    rt_sys::rt::single_malloc_arena();
    let argv: Vec<String> = std::env::args().collect();
    let cli: Cli = rt_guest::cli::TOOL.parse_from(commands::cli_args(&argv));
    let r = match &cli.command {
        Command::Probe(a) => commands::probe(a, argv, Mode::Probe),
        Command::Cyclictest(a) => commands::probe(a, argv, Mode::Cyclictest),
        Command::Oslat(a) => rt_guest::oslat_cmd::oslat(a, argv),
        Command::Selftest(a) => commands::selftest(a, argv),
        Command::Check(a) => commands::check(a),
        Command::Tune(a) => commands::tune(a),
        Command::Revert(a) => commands::revert(a),
        Command::ClockEcho(a) => commands::clock_echo(a),
        Command::Generate { what, dir } => {
            rtvirt_cli::clidoc::generate(Cli::command(), &rt_guest::cli::TOOL, *what, dir)
                .map(|()| 0)
        }
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => rt_guest::cli::TOOL.fail(&e),
    }
}
