//! The capture thread: one poll(2) over every service's output pipes.
//!
//! The pipes are non-blocking and drained whenever they are readable, so a
//! service never waits on its output; records go to the writer's queue,
//! which drops rather than waits. The thread is woken through a pipe of its
//! own when a new source is added or the journal stops, and by poll's
//! timeout when the start of a line has waited [`PARTIAL_AFTER`] for its
//! newline: it is queued as a piece, so a prompt or a last line without a
//! newline shows while the service runs.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::queue::Queue;
use super::record::{LineSplitter, Record, Stream, Timestamp, PARTIAL_AFTER};

/// One read(2) from a pipe; a pipe holds 64 KiB by default.
const READ_CHUNK: usize = 64 * 1024;
/// Reads from one pipe before the others get their turn.
const READS_PER_ROUND: usize = 4;

/// Tells when a captured stream has ended (every writer closed it) and its
/// last records are queued. Dropping it changes nothing.
#[derive(Debug)]
pub struct Closed(mpsc::Receiver<()>);

impl Closed {
    pub fn is_closed(&self) -> bool {
        !matches!(self.0.try_recv(), Err(TryRecvError::Empty))
    }

    /// Waits at most `timeout`; true when the stream has ended.
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(self.0.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
    }
}

struct Source {
    file: File,
    unit: Arc<str>,
    stream: Stream,
    lines: LineSplitter,
    /// When the bytes waiting for their newline started to wait (and the
    /// time their record gets); None when none wait.
    pending_since: Option<(Instant, Timestamp)>,
    closed: mpsc::Sender<()>,
}

impl Source {
    /// Reads what is there; false when the stream has ended.
    fn read(&mut self, buf: &mut [u8], queue: &Queue) -> bool {
        for _ in 0..READS_PER_ROUND {
            match self.file.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    let time = Timestamp::now();
                    let stream = self.stream;
                    let mut records = Vec::new();
                    self.lines.feed(buf.get(..n).unwrap_or_default(), |l, continued| {
                        records.push(Record { continued, ..Record::new(time, stream, l) });
                    });
                    // What waits now started waiting with this read, unless
                    // it is the rest of a wait that goes on.
                    if self.lines.pending() == 0 {
                        self.pending_since = None;
                    } else if !records.is_empty() || self.pending_since.is_none() {
                        self.pending_since = Some((Instant::now(), time));
                    }
                    if !records.is_empty() {
                        queue.push(&self.unit, records);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// When the bytes waiting for their newline are due as a piece.
    fn due(&self) -> Option<Instant> {
        self.pending_since.map(|(since, _)| since + PARTIAL_AFTER)
    }

    /// Queues what waited long enough for its newline as a piece of its
    /// line, with the time it was read.
    fn flush_due(&mut self, now: Instant, queue: &Queue) {
        let Some((since, time)) = self.pending_since else { return };
        if now < since + PARTIAL_AFTER {
            return;
        }
        // Bytes of a character cut by the last read stay for the next one.
        self.pending_since = None;
        if let Some(text) = self.lines.flush_partial() {
            queue.push(&self.unit, [Record::piece(time, self.stream, text)]);
        }
    }

    /// The end of the last line (what is left of it, or an empty end after
    /// its pieces), then the notice.
    fn finish(mut self, queue: &Queue) {
        if let Some(l) = self.lines.finish() {
            queue.push(&self.unit, [Record::new(Timestamp::now(), self.stream, l)]);
        }
        let _ = self.closed.send(());
    }
}

/// What the journal handle shares with the capture thread.
pub(super) struct Shared {
    pending: Mutex<Vec<Source>>,
    wake: File,
    stop: AtomicBool,
}

impl Shared {
    pub(super) fn add(&self, unit: Arc<str>, stream: Stream, fd: OwnedFd, max_line: usize) -> io::Result<Closed> {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let (tx, rx) = mpsc::channel();
        let source = Source {
            file: File::from(fd),
            unit,
            stream,
            lines: LineSplitter::new(max_line),
            pending_since: None,
            closed: tx,
        };
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(source);
        self.wake();
        Ok(Closed(rx))
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        // Non-blocking: a full pipe means a wake-up is pending anyway.
        let _ = (&self.wake).write(&[1]);
    }
}

/// Starts the capture thread.
pub(super) fn start(queue: Arc<Queue>, max_line: usize) -> io::Result<Arc<Shared>> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let shared =
        Arc::new(Shared { pending: Mutex::new(Vec::new()), wake: File::from(w), stop: AtomicBool::new(false) });
    let mut poller = Poller {
        shared: Arc::clone(&shared),
        wake: File::from(r),
        queue,
        sources: Vec::new(),
        buf: vec![0; READ_CHUNK.max(max_line)],
    };
    std::thread::Builder::new().name("journal-capture".into()).spawn(move || poller.run())?;
    Ok(shared)
}

struct Poller {
    shared: Arc<Shared>,
    wake: File,
    queue: Arc<Queue>,
    sources: Vec<Source>,
    buf: Vec<u8>,
}

impl Poller {
    fn run(&mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            // A bug must not leave the pipes undrained: the services would
            // block on them. The sources survive a panic in one round.
            if catch_unwind(AssertUnwindSafe(|| self.round())).is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn round(&mut self) {
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(self.sources.len() + 1);
            fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
            fds.extend(self.sources.iter().map(|s| PollFd::new(s.file.as_fd(), PollFlags::POLLIN)));
            // Until the first partial line is due, or for ever.
            let due = self.sources.iter().filter_map(Source::due).min();
            let timeout = match due {
                // Rounded up: woken early, poll would be called again at once.
                Some(t) => {
                    PollTimeout::try_from(t.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return,
                Err(_) => {
                    // ENOMEM and the like: try again, without spinning.
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
            fds.iter().map(|p| p.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let mut ready = ready.into_iter();
        let woken = ready.next().unwrap_or(false);
        let Poller { sources, buf, queue, .. } = self;
        let mut open = Vec::with_capacity(sources.len());
        for (mut source, readable) in std::mem::take(sources).into_iter().zip(ready) {
            if !readable || source.read(buf, queue) {
                open.push(source);
            } else {
                source.finish(queue);
            }
        }
        let now = Instant::now();
        for source in &mut open {
            source.flush_due(now, queue);
        }
        *sources = open;
        if woken {
            let mut drain = [0u8; 64];
            while matches!((&self.wake).read(&mut drain), Ok(n) if n > 0) {}
            let added = std::mem::take(&mut *self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner));
            self.sources.extend(added);
        }
    }
}
