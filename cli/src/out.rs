//! Standard output that a reader leaving does not crash.
//!
//! Rust ignores SIGPIPE, so `println!` panics ("failed printing to stdout: Broken pipe")
//! when the reader of a pipe exits early, as in `rt-host boot-args lab | head -2`. Every
//! rtvirt binary prints its stdout through [`outln!`](crate::outln) and
//! [`out!`](macro@crate::out) instead: when the reader has gone, the rest of the output is
//! dropped without a message and the work itself goes on to its end (a measurement still
//! writes its run, a setup still finishes or rolls back), with its usual exit status. Any
//! other write error is said once on stderr. `clippy::print_stdout` (denied in the
//! workspace's lints, tests excepted) keeps `println!` out of the binaries.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

static GONE: AtomicBool = AtomicBool::new(false);

/// Write `args` to stdout and flush, unless its reader has gone (see the module docs).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        note_error(&e);
    }
}

/// Write `bytes` to stdout and flush, unless its reader has gone.
pub fn write_bytes(bytes: &[u8]) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        note_error(&e);
    }
}

/// Whether stdout's reader has gone (or stdout failed): a command that only prints can
/// stop early.
pub fn gone() -> bool {
    GONE.load(Ordering::Relaxed)
}

fn note_error(e: &io::Error) {
    if !GONE.swap(true, Ordering::Relaxed) && e.kind() != io::ErrorKind::BrokenPipe {
        eprintln!("warning: cannot write to standard output ({e}); the rest is not printed");
    }
}

/// `println!` for rtvirt binaries: quiet when stdout's reader has gone.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for rtvirt binaries: quiet when stdout's reader has gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macros_format_like_println() {
        // What they print goes to the test harness's stdout; that they format and do not
        // mark stdout gone is what can fail here.
        crate::outln!("{} {}", 1, "two");
        crate::out!("{:>3}\n", 3);
        crate::outln!();
        assert!(!super::gone());
    }
}
