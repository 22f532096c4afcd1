//! `rtvirt_cli::progress` at work: a timed bar, then a line spinner around lines from this
//! process and a child. cli/tests/progress.rs runs it on a terminal and into a pipe.

use std::time::Duration;

use rtvirt_cli::progress::{Bar, LineSpinner};

fn main() {
    let bar = Bar::timed("demo: sending", Some(Duration::from_millis(600)));
    bar.println("a line above the bar");
    std::thread::sleep(Duration::from_millis(700));
    bar.finish();
    let spinner = LineSpinner::start("demo");
    eprintln!("demo: step one");
    let _ = std::process::Command::new("sh")
        .args(["-c", "echo a line from a child >&2"])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    drop(spinner);
    eprintln!("demo: done");
}
