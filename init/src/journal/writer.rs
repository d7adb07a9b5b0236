//! The queue between the producers (capture thread, PID1) and the one
//! writer thread, and the writer: batching, rotation, failures.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::capture::{self, Closed};
use super::queue::{Control, Counters, Item, Queue};
use super::record::{LineSplitter, Record, Stream, Timestamp};
use super::{check_unit, log_path, LogLimits, DROPPED_PREFIX, INIT_UNIT};

/// A file that failed is tried again after this long; records meanwhile
/// are dropped (and counted), so a broken disk costs one attempt a second.
const RETRY: Duration = Duration::from_secs(1);
/// A unit's formatted lines are written once this many are collected (and
/// at the end of every round through the queue).
const BATCH_BYTES: usize = 256 * 1024;
/// Stale rotated files beyond the limit removed at a rotation, at most.
const MAX_STALE: u32 = 1000;

/// Totals since the journal started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written to a log file.
    pub written: u64,
    /// Records lost: queue full, backlog full, or a failed write.
    pub dropped: u64,
}

/// The handle PID1 keeps: starts the capture and writer threads; every
/// method returns at once or within the timeout it is given.
pub struct Journal {
    queue: Arc<Queue>,
    capture: Arc<capture::Shared>,
    limits: LogLimits,
    init_unit: Arc<str>,
}

impl Journal {
    /// Starts the threads, detached: records are kept in memory (bounded)
    /// until [`Journal::attach`].
    pub fn start(limits: LogLimits) -> io::Result<Journal> {
        let queue = Arc::new(Queue::new(limits.queue_bytes));
        let writer = Writer { root: None, limits, units: HashMap::new(), queue: Arc::clone(&queue) };
        std::thread::Builder::new().name("journal".into()).spawn(move || writer.run())?;
        let capture = match capture::start(Arc::clone(&queue), limits.max_line_bytes) {
            Ok(c) => c,
            Err(e) => {
                queue.control(Control::Stop);
                return Err(e);
            }
        };
        Ok(Journal { queue, capture, limits, init_unit: Arc::from(INIT_UNIT) })
    }

    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Starts writing into `root` (created if missing), first what was
    /// kept while detached. Waits at most `timeout` for the writer.
    pub fn attach(&self, root: impl Into<PathBuf>, timeout: Duration) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.queue.control(Control::Attach(root.into(), tx));
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the journal writer did not answer")),
        }
    }

    /// Writes what is queued, closes every log file and keeps further
    /// records in memory: before /var is unmounted. False when the writer
    /// did not finish within `timeout`.
    pub fn detach(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.queue.control(Control::Detach(tx));
        rx.recv_timeout(timeout).is_ok()
    }

    /// Waits, at most `timeout`, until every record queued so far is
    /// written (or dropped).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.queue.control(Control::Flush(tx));
        rx.recv_timeout(timeout).is_ok()
    }

    /// Appends `text` to `unit`'s log as records of `stream`, one per line
    /// (a multi-line text becomes several records, a long line pieces).
    /// Never blocks.
    pub fn record(&self, unit: &str, stream: Stream, text: &str) -> io::Result<()> {
        check_unit(unit)?;
        self.queue.push(&Arc::from(unit), self.records(stream, text));
        Ok(())
    }

    /// One of PID1's own messages, into `berth.log`. Never blocks.
    pub fn init_line(&self, text: &str) {
        self.queue.push(&self.init_unit, self.records(Stream::Init, text));
    }

    fn records(&self, stream: Stream, text: &str) -> Vec<Record> {
        let time = Timestamp::now();
        let mut records = Vec::new();
        let mut lines = LineSplitter::new(self.limits.max_line_bytes);
        lines.feed(text.as_bytes(), |l, continued| records.push(Record { continued, ..Record::new(time, stream, l) }));
        if let Some(l) = lines.finish() {
            records.push(Record::new(time, stream, l));
        }
        if records.is_empty() {
            records.push(Record::new(time, stream, ""));
        }
        records
    }

    /// Captures `fd`, the read end of a pipe a service writes `stream` to,
    /// until its last writer closes it. The journal owns the descriptor
    /// from here on and makes it non-blocking.
    pub fn capture(&self, unit: &str, stream: Stream, fd: OwnedFd) -> io::Result<Closed> {
        check_unit(unit)?;
        if unit == INIT_UNIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{INIT_UNIT:?} is the log of PID1 itself, not a unit's"),
            ));
        }
        self.capture.add(Arc::from(unit), stream, fd, self.limits.max_line_bytes)
    }

    /// A new pipe whose read end is captured as `unit`'s `stream`; the
    /// write end (O_CLOEXEC) is for the child: `cmd.stdout(Stdio::from(w))`.
    /// Drop the Command after spawning it, or the parent's copy of the write
    /// end keeps the pipe open after the service exits.
    pub fn pipe(&self, unit: &str, stream: Stream) -> io::Result<(OwnedFd, Closed)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let closed = self.capture(unit, stream, r)?;
        Ok((w, closed))
    }

    pub fn stats(&self) -> Stats {
        Stats {
            written: self.queue.counters.written.load(Ordering::Relaxed),
            dropped: self.queue.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Holds the writer (as a hung disk would) until the sender is dropped.
    #[cfg(test)]
    pub(super) fn pause_writer(&self) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel();
        self.queue.control(Control::Pause(rx));
        tx
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("limits", &self.limits).field("stats", &self.stats()).finish()
    }
}

impl Drop for Journal {
    /// Stops both threads without waiting for them; records still queued
    /// are written first, open captures are closed.
    fn drop(&mut self) {
        self.queue.control(Control::Stop);
        self.capture.stop();
    }
}

/// One unit's file and what waits to go into it.
#[derive(Default)]
struct UnitLog {
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The file does not end with a newline (a failed or cut-off write):
    /// the next write starts with one, so records stay one per line.
    torn: bool,
    /// Lines formatted in this round, not yet written.
    batch: Vec<u8>,
    /// Records in `batch`, and drops reported by a marker in it: what is
    /// lost if writing it fails.
    batch_records: u64,
    batch_reported: u64,
    /// Lines kept while detached, oldest first.
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// Records lost and not yet reported in the file.
    dropped: u64,
    /// No attempt to open before this.
    retry_at: Option<Instant>,
}

struct Writer {
    root: Option<PathBuf>,
    limits: LogLimits,
    units: HashMap<Arc<str>, UnitLog>,
    queue: Arc<Queue>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (items, drops) = self.queue.take();
            // A bug must not end the logging for good; the state is kept.
            match catch_unwind(AssertUnwindSafe(|| self.round(items, drops))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Handles one take from the queue; false on Stop.
    fn round(&mut self, items: VecDeque<Item>, mut drops: HashMap<Arc<str>, u64>) -> bool {
        for item in items {
            match item {
                Item::Record(unit, record) => self.record(&unit, &record),
                Item::Dropped(unit, n) => self.unit(&unit).dropped += n,
                // A unit's drops in the map came after all its records in
                // the queue: a flush must report them too.
                Item::Control(c) => {
                    self.merge(&mut drops);
                    if !self.control(c) {
                        return false;
                    }
                }
            }
        }
        self.merge(&mut drops);
        self.flush_all();
        true
    }

    fn merge(&mut self, drops: &mut HashMap<Arc<str>, u64>) {
        for (unit, n) in drops.drain() {
            self.unit(&unit).dropped += n;
        }
    }

    /// False on Stop.
    fn control(&mut self, c: Control) -> bool {
        match c {
            Control::Attach(root, ack) => {
                let _ = ack.send(self.attach(root));
            }
            Control::Detach(ack) => {
                self.detach();
                let _ = ack.send(());
            }
            Control::Flush(ack) => {
                self.flush_all();
                let _ = ack.send(());
            }
            #[cfg(test)]
            Control::Pause(until) => {
                let _ = until.recv();
            }
            Control::Stop => {
                self.flush_all();
                return false;
            }
        }
        true
    }

    fn unit(&mut self, unit: &Arc<str>) -> &mut UnitLog {
        self.units.entry(Arc::clone(unit)).or_default()
    }

    fn record(&mut self, unit: &Arc<str>, record: &Record) {
        let mut line = Vec::with_capacity(record.text.len() + 40);
        record.write_line(&mut line);
        let Writer { root, limits, units, queue } = self;
        let u = units.entry(Arc::clone(unit)).or_default();
        match root {
            None => u.keep(line, limits.backlog_bytes, &queue.counters),
            Some(root) => u.append(root, unit, &line, *limits, &queue.counters),
        }
    }

    /// Writes every batch, and a marker for drops not yet reported.
    fn flush_all(&mut self) {
        let Writer { root: Some(root), units, queue, .. } = self else { return };
        for (unit, u) in units.iter_mut() {
            if u.dropped > 0 && u.ensure_open(root, unit) {
                u.add_marker();
            }
            u.flush(root, unit, &queue.counters);
        }
    }

    fn attach(&mut self, root: PathBuf) -> io::Result<()> {
        self.flush_all();
        if self.root.as_ref() != Some(&root) {
            self.close_all();
        }
        fs::DirBuilder::new().recursive(true).mode(0o750).create(&root)?;
        for (unit, u) in self.units.iter_mut() {
            u.retry_at = None;
            let backlog = std::mem::take(&mut u.backlog);
            u.backlog_bytes = 0;
            for line in backlog {
                u.append(&root, unit, &line, self.limits, &self.queue.counters);
            }
        }
        self.root = Some(root);
        self.flush_all();
        Ok(())
    }

    fn detach(&mut self) {
        self.flush_all();
        self.close_all();
        self.root = None;
    }

    fn close_all(&mut self) {
        for u in self.units.values_mut() {
            u.file = None;
            u.size = 0;
            u.torn = false;
        }
    }
}

impl UnitLog {
    /// Adds one formatted line to the batch, rotating first when the file
    /// would outgrow its bound.
    fn append(&mut self, root: &Path, unit: &str, line: &[u8], limits: LogLimits, counters: &Counters) {
        self.ensure_open(root, unit);
        if self.dropped > 0 {
            self.add_marker();
        }
        let pending = self.size.saturating_add(self.batch.len() as u64);
        if pending > 0 && pending.saturating_add(line.len() as u64) > limits.max_file_bytes {
            self.flush(root, unit, counters);
            if self.file.is_some() && self.size > 0 {
                match rotate(root, unit, limits.rotated_files) {
                    Ok(()) => {
                        self.file = None;
                        self.size = 0;
                        self.torn = false;
                        self.ensure_open(root, unit);
                    }
                    Err(_) => self.failed(),
                }
            }
        }
        self.batch.extend_from_slice(line);
        self.batch_records += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.flush(root, unit, counters);
        }
    }

    /// While detached: keeps the line, dropping the oldest beyond `cap`.
    fn keep(&mut self, line: Vec<u8>, cap: usize, counters: &Counters) {
        if line.len() > cap {
            self.dropped += 1;
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        while self.backlog_bytes + line.len() > cap {
            match self.backlog.pop_front() {
                Some(old) => {
                    self.backlog_bytes -= old.len();
                    self.dropped += 1;
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        self.backlog_bytes += line.len();
        self.backlog.push_back(line);
    }

    /// Opens the current file unless it is open or failed less than
    /// [`RETRY`] ago. True when open.
    fn ensure_open(&mut self, root: &Path, unit: &str) -> bool {
        if self.file.is_some() {
            return true;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match open_log(root, unit) {
            Ok((file, size, torn)) => {
                self.file = Some(file);
                self.size = size;
                self.torn = torn;
                self.retry_at = None;
                true
            }
            Err(_) => {
                self.failed();
                false
            }
        }
    }

    fn failed(&mut self) {
        self.file = None;
        self.retry_at = Some(Instant::now() + RETRY);
    }

    /// Puts the "dropped" record into the batch, in the place of the lost
    /// records.
    fn add_marker(&mut self) {
        let n = std::mem::take(&mut self.dropped);
        let text = format!("{DROPPED_PREFIX}{n} lines");
        Record::new(Timestamp::now(), Stream::Init, text).write_line(&mut self.batch);
        self.batch_reported += n;
    }

    /// Writes the batch; on failure counts its records as dropped.
    fn flush(&mut self, root: &Path, unit: &str, counters: &Counters) {
        if self.batch.is_empty() {
            return;
        }
        let written = if self.ensure_open(root, unit) { self.write_batch() } else { false };
        if written {
            counters.written.fetch_add(self.batch_records, Ordering::Relaxed);
        } else {
            counters.dropped.fetch_add(self.batch_records, Ordering::Relaxed);
            self.dropped += self.batch_records + self.batch_reported;
        }
        self.batch.clear();
        self.batch_records = 0;
        self.batch_reported = 0;
    }

    fn write_batch(&mut self) -> bool {
        let Some(file) = self.file.as_mut() else { return false };
        let result = if self.torn { file.write_all(b"\n").map(|()| 1) } else { Ok(0) }
            .and_then(|extra| file.write_all(&self.batch).map(|()| extra));
        match result {
            Ok(extra) => {
                self.size += extra + self.batch.len() as u64;
                self.torn = false;
                true
            }
            Err(_) => {
                // Part of it may be in the file: reopen to learn where.
                self.torn = true;
                self.failed();
                false
            }
        }
    }
}

/// Opens (creating) `<root>/<unit>.log` for appending: the file, its size,
/// and whether it ends in the middle of a line.
fn open_log(root: &Path, unit: &str) -> io::Result<(File, u64, bool)> {
    fs::DirBuilder::new().recursive(true).mode(0o750).create(root)?;
    let path = log_path(root, unit, 0);
    // O_NONBLOCK: a FIFO put in the file's place fails instead of hanging
    // the writer; it means nothing for a regular file.
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    let size = meta.len();
    let mut last = [b'\n'];
    if size > 0 {
        file.read_exact_at(&mut last, size - 1)?;
    }
    Ok((file, size, last != [b'\n']))
}

/// `.log` becomes `.log.1`, `.1` becomes `.2` ... and the oldest, `.N`,
/// is replaced (rename overwrites). With N = 0 the current file goes.
fn rotate(root: &Path, unit: &str, keep: u32) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    if keep == 0 {
        ignore_missing(fs::remove_file(log_path(root, unit, 0)))?;
    } else {
        for i in (1..keep).rev() {
            ignore_missing(fs::rename(log_path(root, unit, i), log_path(root, unit, i + 1)))?;
        }
        ignore_missing(fs::rename(log_path(root, unit, 0), log_path(root, unit, 1)))?;
    }
    // Files beyond the bound (it was larger before): removed.
    for i in keep.saturating_add(1)..=keep.saturating_add(MAX_STALE) {
        if fs::remove_file(log_path(root, unit, i)).is_err() {
            break;
        }
    }
    Ok(())
}
