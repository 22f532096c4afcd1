//! Progress on stderr while long work runs (indicatif), drawn only when stderr is a
//! terminal: a run whose stderr goes to a file, a pipe or a journal gets no bar, no
//! spinner and no escape sequences, only the lines it would print anyway.
//!
//! - [`Bar`]: a bar over a planned duration (`can-sim run`, `rt-guest probe -D`), moved by
//!   the clock, or driven by the caller.
//! - [`LineSpinner`]: for work that reports itself in `eprintln!` lines from many places,
//!   and from child processes (`rtvirt-lab flow`, `image`, `boot`): while it lives, stderr
//!   (fd 2) is a pipe; each line that arrives is printed above a spinner that shows the
//!   latest line and the time elapsed, so the lines stay intact and the bar never tears
//!   them.

use std::io::{BufRead, BufReader, IsTerminal};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress is drawn: stderr is a terminal (and `TERM` is not `dumb`).
pub fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// How often a bar moved by the clock is advanced, and a spinner turns.
const TICK: Duration = Duration::from_millis(200);

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A progress bar on stderr; every method is a no-op when stderr is not a terminal.
#[derive(Debug, Default)]
pub struct Bar {
    bar: Option<ProgressBar>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Bar {
    /// A bar over `total` (a spinner with the elapsed time when `None`), labelled
    /// `prefix`, that the clock moves until [`Bar::finish`].
    pub fn timed(prefix: &str, total: Option<Duration>) -> Bar {
        let mut b = Bar::new(prefix, total, " ");
        if let (Some(bar), None) = (&b.bar, total) {
            bar.enable_steady_tick(TICK);
        } else if let Some(bar) = b.bar.clone() {
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = stop.clone();
            let t0 = Instant::now();
            let ticker = std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !stop2.load(Ordering::Relaxed) {
                        bar.set_position(millis(t0.elapsed()));
                        std::thread::sleep(TICK);
                    }
                });
            // Without the thread the bar still shows; it just does not move.
            b.ticker = ticker.ok().map(|h| (stop, h));
        }
        b
    }

    /// A bar over `total` (a spinner when `None`) that only moves when the caller says
    /// ([`Bar::set_elapsed`]), its message on the lines below it: for a loop that reports
    /// status lines anyway. It starts no thread (a probe's threads stay the only ones).
    pub fn driven(prefix: &str, total: Option<Duration>) -> Bar {
        Bar::new(prefix, total, "\n")
    }

    /// `before_msg` goes between the bar and the message.
    fn new(prefix: &str, total: Option<Duration>, before_msg: &str) -> Bar {
        if !enabled() {
            return Bar::default();
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(millis(t)), ProgressDrawTarget::stderr())
                .with_style(timed_style(t, before_msg)),
            // A spinner turns on every message (driven) or on indicatif's tick (timed).
            None => {
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style(
                    &format!("{{prefix}} {{spinner}} {{elapsed_precise}}{before_msg}{{msg}}"),
                ))
            }
        };
        bar.set_prefix(prefix.to_string());
        Bar {
            bar: Some(bar),
            ticker: None,
        }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Move the bar to `elapsed`.
    pub fn set_elapsed(&self, elapsed: Duration) {
        if let Some(b) = &self.bar {
            b.set_position(millis(elapsed));
        }
    }

    /// The text after the bar (may span lines).
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }

    /// Print `line` on stderr: above the bar when it is drawn, as a plain line otherwise.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Stop the clock and clear the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((stop, h)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PREFIX [bar] ELAPSED of TOTAL (left ETA)`, then the message, the total in whole seconds from a
/// second on (as the elapsed time).
fn timed_style(total: Duration, before_msg: &str) -> ProgressStyle {
    let shown = if total >= Duration::from_secs(1) {
        Duration::from_secs(total.as_secs())
    } else {
        total
    };
    let total_key = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", humantime::format_duration(shown));
    };
    style(&format!(
        "{{prefix}} {{wide_bar}} {{elapsed_precise}} of {{total}} (left {{eta}}){before_msg}{{msg}}"
    ))
    .with_key("total", total_key)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// While it lives, every line written to stderr (fd 2: this process, its threads and its
/// children) is printed above a spinner that shows the latest line and the elapsed time.
/// Does nothing when stderr is not a terminal. Dropping it puts stderr back and prints
/// what is still in the pipe.
#[derive(Debug, Default)]
pub struct LineSpinner {
    inner: Option<SpinnerInner>,
}

#[derive(Debug)]
struct SpinnerInner {
    /// The terminal stderr was, to put back.
    terminal: OwnedFd,
    bar: ProgressBar,
    reader: JoinHandle<()>,
    drained: mpsc::Receiver<()>,
}

/// How long a dropped spinner waits for the pipe's last lines: a child that outlives the
/// work (and holds the pipe open) must not hang the tool.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

impl LineSpinner {
    /// Start it, labelled `prefix` (e.g. `rtvirt-lab flow`). When stderr is not a terminal
    /// or cannot be redirected, an inert spinner: the lines go where they always go.
    pub fn start(prefix: &str) -> LineSpinner {
        if !enabled() {
            return LineSpinner::default();
        }
        LineSpinner {
            inner: SpinnerInner::start(prefix).ok(),
        }
    }

    /// Whether the spinner is drawn.
    pub fn visible(&self) -> bool {
        self.inner.is_some()
    }
}

impl SpinnerInner {
    fn start(prefix: &str) -> nix::Result<SpinnerInner> {
        let terminal = nix::unistd::dup(std::io::stderr())?;
        let term_fd = nix::unistd::dup(&terminal)?;
        let (read, write) = nix::unistd::pipe()?;
        let term = console::Term::read_write_pair(std::io::stdin(), std::fs::File::from(term_fd));
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::term(term, 10))
            .with_style(style("{spinner} {elapsed_precise} {prefix}: {wide_msg}"));
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(TICK);
        nix::unistd::dup2_stderr(&write)?;
        drop(write);
        let (done, drained) = mpsc::channel();
        let bar2 = bar.clone();
        let reader = std::thread::Builder::new()
            .name("stderr-lines".into())
            .spawn(move || {
                for line in BufReader::new(std::fs::File::from(read)).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches('\r');
                    bar2.println(line);
                    if !line.trim().is_empty() {
                        bar2.set_message(line.trim().to_string());
                    }
                }
                let _ = done.send(());
            })
            .map_err(|_| nix::Error::EAGAIN)?;
        Ok(SpinnerInner {
            terminal,
            bar,
            reader,
            drained,
        })
    }

    fn stop(self) {
        // fd 2 is the terminal again, which closes this process's end of the pipe.
        let restored = nix::unistd::dup2_stderr(&self.terminal);
        if self.drained.recv_timeout(DRAIN_WAIT).is_ok() {
            let _ = self.reader.join();
        }
        self.bar.finish_and_clear();
        if let Err(e) = restored {
            eprintln!("warning: cannot restore stderr after the progress spinner: {e}");
        }
    }
}

impl Drop for LineSpinner {
    fn drop(&mut self) {
        if let Some(i) = self.inner.take() {
            i.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
