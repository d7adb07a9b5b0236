//! Console output that never blocks PID1.
//!
//! A serial console at 115200 baud takes about 10 KB/s, and a console whose
//! other end nobody reads can block a writer forever. PID1 must keep reaping
//! and answering the power button regardless, so lines go into a bounded
//! queue that one writer thread drains; when the queue is full the line is
//! dropped and counted, never waited for.

use std::collections::VecDeque;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Every line PID1 prints starts with this.
pub const PREFIX: &str = "berth: ";
pub const CONSOLE: &str = "/dev/console";
/// Lines queued for the writer thread before new ones are dropped.
const QUEUE: usize = 1024;
/// Lines kept while no console can be opened yet (before /dev is mounted).
const BACKLOG: usize = 256;

/// Where the writer thread gets its output from; called again after a write
/// error, so a console that comes back is used again.
pub type Opener = Box<dyn FnMut() -> io::Result<Box<dyn Write + Send>> + Send>;

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

pub struct Console {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Console {
    /// Starts the writer thread.
    pub fn start(opener: Opener, capacity: usize) -> io::Result<Console> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new().name("console".into()).spawn(move || writer(rx, opener, counter))?;
        Ok(Console { tx, dropped })
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn line(&self, line: String) {
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits, at most `limit`, until everything queued so far is written:
    /// the last lines before the final reboot call must reach the console.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (ack_tx, ack_rx) = mpsc::channel();
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn writer(rx: Receiver<Msg>, mut opener: Opener, dropped: Arc<AtomicU64>) {
    let mut out: Option<Box<dyn Write + Send>> = None;
    let mut backlog: VecDeque<String> = VecDeque::new();
    while let Ok(msg) = rx.recv() {
        let ack = match msg {
            Msg::Line(line) => {
                if backlog.len() >= BACKLOG {
                    backlog.pop_front();
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                backlog.push_back(line);
                None
            }
            Msg::Flush(ack) => Some(ack),
        };
        if out.is_none() {
            out = opener().ok();
        }
        if let Some(w) = out.as_mut() {
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                backlog.push_back(format!("{PREFIX}({lost} console lines dropped)"));
            }
            while let Some(line) = backlog.pop_front() {
                let mut buf = line.into_bytes();
                buf.push(b'\n');
                if w.write_all(&buf).and_then(|()| w.flush()).is_err() {
                    // The line is lost; reopen on the next one rather than
                    // retrying a console that may stay broken.
                    out = None;
                    break;
                }
            }
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

static GLOBAL: OnceLock<Console> = OnceLock::new();

/// Starts the process-wide console writer on /dev/console. O_APPEND does
/// nothing on a tty, and keeps lines whole when the console is a file that
/// PID1's children write to as well.
pub fn init_console() -> io::Result<()> {
    let opener: Opener = Box::new(|| {
        let f = OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY | libc::O_APPEND).open(CONSOLE)?;
        Ok(Box::new(f) as Box<dyn Write + Send>)
    });
    let console = Console::start(opener, QUEUE)?;
    let _ = GLOBAL.set(console);
    Ok(())
}

/// Prints `line` as it is (for the lines tools match: ready, emergency).
pub fn line(line: impl Into<String>) {
    let line = line.into();
    // PID1's own log file (berth.log) next to the services' logs; a no-op
    // until the journal is installed, and it never blocks either.
    crate::journal::init_line(&line);
    match GLOBAL.get() {
        Some(c) => c.line(line),
        // Tests and the time before init_console: stderr, ignoring errors
        // (eprintln! would panic on a closed stderr).
        None => {
            let _ = writeln!(io::stderr(), "{line}");
        }
    }
}

/// Prints `berth: <message>`.
pub fn info(args: fmt::Arguments<'_>) {
    line(format!("{PREFIX}{args}"));
}

/// Waits until the queued lines are written, at most `limit`.
pub fn flush(limit: Duration) -> bool {
    GLOBAL.get().is_none_or(|c| c.flush(limit))
}

/// `info!("data: mounted {dev}")` prints `berth: data: mounted ...`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::info(format_args!($($arg)*))
    };
}

/// Reports a panic through the non-blocking console instead of the default
/// hook's blocking write to stderr.
pub fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    line(format!("{PREFIX}BUG: {info}"));
}

/// Fills closed descriptors 0-2 with a harmless placeholder.
///
/// Without an initial console the kernel starts PID1 with 0, 1 and 2
/// closed; the next file opened would then become "stderr" and child
/// processes would write into it.
pub fn reserve_stdio() {
    use rustix::fs::{Mode, OFlags};
    loop {
        // Without O_CLOEXEC: these stand in for 0-2 and are inherited.
        let Ok(fd) = rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) else {
            return;
        };
        if fd.as_raw_fd() > 2 {
            // Dropping it closes it.
            return;
        }
        // One of 0-2 is filled: keep it open.
        std::mem::forget(fd);
    }
}

/// Points 0, 1 and 2 at /dev/console, so that tools PID1 runs (mke2fs,
/// e2fsck) report on the console.
pub fn stdio_to_console() -> io::Result<()> {
    let console =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY | libc::O_APPEND).open(CONSOLE)?;
    rustix::stdio::dup2_stdin(&console)?;
    rustix::stdio::dup2_stdout(&console)?;
    rustix::stdio::dup2_stderr(&console)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A console whose reader stalls until released, like a serial line
    /// nobody drains.
    #[derive(Clone, Default)]
    struct Stalled {
        open: Arc<(Mutex<bool>, Condvar)>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_console_drops_lines_instead_of_blocking() {
        let sink = Stalled::default();
        let s = sink.clone();
        let console = Console::start(Box::new(move || Ok(Box::new(s.clone()) as _)), 4).unwrap();
        let started = Instant::now();
        for i in 0..100 {
            console.line(format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never blocks");
        assert!(console.dropped() > 0);
        {
            let (lock, cv) = &*sink.open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert!(console.flush(Duration::from_secs(5)));
        console.line("after".into());
        assert!(console.flush(Duration::from_secs(5)));
        let text = String::from_utf8(sink.out.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("line 0\n"), "{text}");
        assert!(text.contains("console lines dropped)\n"), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
    }

    #[test]
    fn lines_wait_for_a_console_that_appears_later() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        let (o, a) = (Arc::clone(&out), Arc::clone(&attempts));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let console = Console::start(
            Box::new(move || {
                if a.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(io::Error::from_raw_os_error(libc::ENOENT))
                } else {
                    Ok(Box::new(Shared(Arc::clone(&o))) as _)
                }
            }),
            16,
        )
        .unwrap();
        console.line("early".into());
        console.line("later".into());
        assert!(console.flush(Duration::from_secs(5)));
        assert_eq!(&*out.lock().unwrap(), b"early\nlater\n");
    }
}
