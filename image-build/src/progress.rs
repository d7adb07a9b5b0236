//! Progress of the long steps of berth-image (the kernel build, package
//! downloads, mkfs.erofs, veritysetup, image conversions, flashing): on a
//! terminal an indicatif spinner with the elapsed time, or a bar where the
//! amount of work is known; elsewhere (a log, CI) plain lines: one when a
//! step starts, one every [`HEARTBEAT`] while it runs (a spinner) or every
//! tenth of the way but at most one per [`PLAIN_GAP`] (a bar), and one when
//! it ends.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner without a terminal says it is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// The least time between two plain lines of a bar (a fast step prints
/// its start and end only).
pub const PLAIN_GAP: Duration = Duration::from_secs(5);

/// How progress is shown: decided once per task from stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// indicatif on the terminal.
    Terminal,
    /// Plain lines on stderr.
    Plain,
}

impl Mode {
    /// [`Mode::Terminal`] when stderr is a terminal (and `TERM` is not
    /// `dumb`), else [`Mode::Plain`].
    pub fn detect() -> Mode {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// What a bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown in MiB with a rate.
    Bytes,
    /// Things (packages), shown as `n/total`.
    Items,
}

/// One step in progress. Finish it with [`Task::finish`]; dropped
/// unfinished (an error), it clears its bar and says it failed.
pub struct Task {
    label: String,
    started: Instant,
    bar: Option<ProgressBar>,
    /// `Some` for a bar: (unit, total).
    total: Option<(Unit, u64)>,
    done: u64,
    /// The next tenth of the way a plain bar reports at.
    next_tenth: u64,
    /// When a plain bar last printed a line.
    last_line: Instant,
    heartbeat: Option<(Sender<()>, JoinHandle<()>)>,
    finished: bool,
}

/// A step whose amount of work is not known: a spinner with the elapsed time.
pub fn spinner(label: impl Into<String>) -> Task {
    Task::new(label.into(), None, Mode::detect())
}

/// A step of `total` units: a bar.
pub fn bar(label: impl Into<String>, unit: Unit, total: u64) -> Task {
    Task::new(label.into(), Some((unit, total)), Mode::detect())
}

/// Runs `f` under a spinner labelled `label`: done or failed at the end.
pub fn spin<T, E>(label: impl Into<String>, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let task = spinner(label);
    let out = f();
    if out.is_ok() {
        task.finish();
    }
    out
}

fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => format!("{:.0} MiB", n as f64 / (1024.0 * 1024.0)),
        Unit::Items => n.to_string(),
    }
}

impl Task {
    fn new(label: String, total: Option<(Unit, u64)>, mode: Mode) -> Task {
        let mut task = Task {
            label,
            started: Instant::now(),
            bar: None,
            total,
            done: 0,
            next_tenth: 1,
            last_line: Instant::now(),
            heartbeat: None,
            finished: false,
        };
        match (mode, total) {
            (Mode::Terminal, None) => {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}") {
                    bar.set_style(style);
                }
                bar.set_prefix(task.label.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                task.bar = Some(bar);
            }
            (Mode::Terminal, Some((unit, n))) => {
                let bar = ProgressBar::new(n);
                let template = match unit {
                    Unit::Bytes => {
                        "{prefix} [{bar:30}] {percent:>3}% {binary_bytes}/{binary_total_bytes} \
                         {binary_bytes_per_sec} ({eta}) {wide_msg}"
                    }
                    Unit::Items => "{prefix} [{bar:30}] {pos}/{len} [{elapsed}] {wide_msg}",
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(task.label.clone());
                task.bar = Some(bar);
            }
            (Mode::Plain, None) => {
                eprintln!("{} ...", task.label);
                task.heartbeat = Some(heartbeat(task.label.clone(), task.started));
            }
            (Mode::Plain, Some((unit, n))) => eprintln!("{}: 0 of {} ...", task.label, amount(unit, n)),
        }
        task
    }

    /// `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        let Some((unit, total)) = self.total else { return };
        if total == 0 {
            return;
        }
        let tenths = self.done.saturating_mul(10) / total;
        if tenths >= self.next_tenth && self.done < total && self.last_line.elapsed() >= PLAIN_GAP {
            self.next_tenth = tenths + 1;
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            let rate = match unit {
                Unit::Bytes if secs > 0.0 => format!(", {:.1} MiB/s", self.done as f64 / secs / (1024.0 * 1024.0)),
                _ => String::new(),
            };
            eprintln!(
                "{}: {}% ({} of {}{rate})",
                self.label,
                tenths * 10,
                amount(unit, self.done),
                amount(unit, total)
            );
        }
    }

    /// What the step is doing now (a package's name): next to the bar on a
    /// terminal, a line of its own otherwise.
    pub fn message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None => eprintln!("{}: {msg}", self.label),
        }
    }

    /// Ends the step, says how long it took and returns that.
    pub fn finish(mut self) -> Duration {
        self.finished = true;
        self.stop_heartbeat();
        let took = self.started.elapsed();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let what = match self.total {
            Some((unit, _)) => format!(" ({})", amount(unit, self.done)),
            None => String::new(),
        };
        eprintln!("{}: done{what} in {:.1} s", self.label, took.as_secs_f64());
        took
    }

    fn stop_heartbeat(&mut self) {
        if let Some((stop, thread)) = self.heartbeat.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.stop_heartbeat();
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
        eprintln!("{}: failed after {:.1} s", self.label, self.started.elapsed().as_secs_f64());
    }
}

/// Prints `LABEL: still running (N s)` every [`HEARTBEAT`] until told to stop.
fn heartbeat(label: String, started: Instant) -> (Sender<()>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || loop {
        match rx.recv_timeout(HEARTBEAT) {
            Err(RecvTimeoutError::Timeout) => {
                eprintln!("{label}: still running ({:.0} s)", started.elapsed().as_secs_f64())
            }
            _ => return,
        }
    });
    (tx, thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_bar_counts_and_finishes() {
        let mut t = Task::new("test".into(), Some((Unit::Bytes, 100)), Mode::Plain);
        for _ in 0..10 {
            t.inc(10);
        }
        // Fast: no line between the first and the last.
        assert_eq!((t.done, t.next_tenth), (100, 1));
        t.last_line -= PLAIN_GAP;
        t.done = 40;
        t.inc(10);
        assert_eq!(t.next_tenth, 6, "a line at 50%, the next one due at 60%");
        assert!(t.bar.is_none() && t.heartbeat.is_none());
        t.finish();
    }

    #[test]
    fn a_plain_spinner_stops_its_heartbeat() {
        let t = Task::new("spin".into(), None, Mode::Plain);
        assert!(t.heartbeat.is_some());
        let started = Instant::now();
        drop(t);
        assert!(started.elapsed() < HEARTBEAT, "the heartbeat thread ended at once");
        assert_eq!(spin("ok", || Ok::<_, ()>(3)), Ok(3));
        assert_eq!(spin("err", || Err::<(), _>(4)), Err(4));
    }

    #[test]
    fn amounts_read_as_people_do() {
        assert_eq!(amount(Unit::Bytes, 3 * 1024 * 1024), "3 MiB");
        assert_eq!(amount(Unit::Items, 7), "7");
    }
}
