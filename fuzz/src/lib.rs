//! What each fuzz target does with its input (`fuzz_targets/*.rs` call these): every parser
//! a user or an attacker can feed, with the properties that must hold on what it accepts.
//! A panic, an abort, a hang (libFuzzer `-timeout`) or a memory blow-up (`-rss_limit_mb`)
//! is a finding. See docs/fuzzing.md.

pub mod canlog;
pub mod cyclictest;
pub mod dbc;
pub mod hist;
pub mod journal;
pub mod kernel_text;
pub mod profile;
pub mod run_record;
pub mod scratch;

/// The whole error chain as one line, as the binaries print it: every `Display` and
/// `source()` must work on any input.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// With `RTVIRT_FUZZ_VERBOSE=1`, say on stderr how far an input got (`what`: the stage);
/// for reading what a target makes of one input by hand (docs/fuzzing.md).
pub fn note(what: &str, detail: impl std::fmt::Display) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RTVIRT_FUZZ_VERBOSE").is_some_and(|v| v == "1")) {
        eprintln!("{what}: {detail}");
    }
}

/// [`note`] the error chain of a refusal at stage `what`.
pub fn refused(what: &str, e: &dyn std::error::Error) {
    note(what, format_args!("refused: {}", chain(e)));
}
