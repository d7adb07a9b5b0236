//! Reading the logs: the files alone, no connection to the writer.
//!
//! A reader races the writer's rotation (`.log` -> `.log.1` -> ...). Files
//! are opened newest first and identified by inode: a file met twice (it
//! was rotated between two opens) is read once, so a snapshot has neither
//! duplicates nor gaps. A follower holds its file open and, when the name
//! points elsewhere, finishes the old file and then reads the newer ones.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{Record, Stream};
use super::{check_unit, log_path, valid_unit_name, DROPPED_PREFIX, MAX_JOINED_BYTES};

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;
/// Rotated files looked at, at most.
const MAX_INDEX: u32 = 1000;
/// Bytes without a newline a follower keeps before it gives up on them
/// (records are far shorter; this is not a log file).
const MAX_PARTIAL: usize = 1024 * 1024;
/// Text a tail collects at most (the newest): a bound on the memory of
/// a reader however long the lines are, and as much as a reply of the
/// control API carries.
const MAX_TAIL_BYTES: usize = 16 * 1024 * 1024;
/// How often [`Follower::wait`] looks at the file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

type FileId = (u64, u64);

struct Opened {
    index: u32,
    file: File,
    id: FileId,
    len: u64,
}

fn file_id(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// The unit's files, newest first, each once.
fn open_chain(root: &Path, unit: &str) -> io::Result<Vec<Opened>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for index in 0..=MAX_INDEX {
        match File::open(log_path(root, unit, index)) {
            Ok(file) => {
                let meta = file.metadata()?;
                if seen.insert(file_id(&meta)) {
                    out.push(Opened { index, file, id: file_id(&meta), len: meta.len() });
                }
            }
            // The current file may be missing between a rotation and the
            // next record: look at the rotated ones all the same.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if index > 0 {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Calls `f` with the complete lines of `file[..end]`, last first, until it
/// returns false. Bytes after the last newline (a write in progress) are
/// not a line yet.
fn rev_lines(file: &File, end: u64, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut pos = end;
    // The start of a line whose beginning lies before `pos`.
    let mut carry: Vec<u8> = Vec::new();
    let mut at_end = true;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK as u64);
        let mut buf = vec![0u8; (pos - start) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            let n = read_at(file, buf.get_mut(filled..).unwrap_or_default(), start + filled as u64)?;
            if n == 0 {
                // Truncated under us: what is left of the chunk is not there.
                buf.truncate(filled);
                break;
            }
            filled += n;
        }
        buf.extend_from_slice(&carry);
        let pieces: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        let last = pieces.len().saturating_sub(1);
        carry = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate().rev() {
            if i == last && at_end {
                continue; // after the last newline of the file
            }
            if i == 0 && start > 0 {
                carry = piece.to_vec(); // continues in the previous chunk
                continue;
            }
            if !f(piece) {
                return Ok(());
            }
        }
        if last > 0 {
            at_end = false;
        }
        pos = start;
    }
    Ok(())
}

/// The offset just after the last newline in `file[..end]`.
fn complete_end(file: &File, end: u64) -> io::Result<u64> {
    let mut pos = end;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK as u64);
        let mut buf = vec![0u8; (pos - start) as usize];
        let n = read_at(file, &mut buf, start)?;
        if let Some(i) = buf.get(..n).unwrap_or_default().iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        pos = start;
    }
    Ok(0)
}

/// Collects the records of the last `n` lines, newest first, fed newest
/// first: a line is a record without the mark of a piece (or the pieces of
/// one not ended yet, at the end), and its pieces before it are taken too.
struct LastLines {
    n: usize,
    lines: usize,
    /// Streams whose oldest record taken may be the end of a line whose
    /// pieces come before it.
    open: Vec<Stream>,
    /// Bytes looked at after the n-th line for the pieces of the lines
    /// taken, at most [`MAX_JOINED_BYTES`].
    extra: usize,
    /// Text taken, at most [`MAX_TAIL_BYTES`].
    bytes: usize,
    done: bool,
    out: Vec<Record>,
}

impl LastLines {
    fn new(n: usize) -> LastLines {
        LastLines { n, lines: 0, open: Vec::new(), extra: 0, bytes: 0, done: n == 0, out: Vec::new() }
    }

    /// Takes the next older record; false when done.
    fn take(&mut self, r: Record) -> bool {
        self.bytes = self.bytes.saturating_add(r.text.len());
        if self.bytes > MAX_TAIL_BYTES {
            self.done = true;
            return false;
        }
        // A loss report: the pieces before it are not joined to what comes
        // after it (see Joiner), so no stream looks further back for them.
        let loss = r.stream == Stream::Init && !r.continued && r.text.starts_with(DROPPED_PREFIX);
        let open = self.open.contains(&r.stream);
        if self.lines < self.n {
            // A piece of a stream with nothing newer taken is a line not
            // ended yet; a piece after (before, in time) an end is part of
            // that end's line.
            if !(r.continued && open) {
                self.lines += 1;
            }
            if loss {
                self.open.clear();
            } else if !open {
                self.open.push(r.stream);
            }
            self.out.push(r);
        } else if loss {
            self.open.clear();
        } else {
            // All n lines are there: only their first pieces may be missing.
            self.extra = self.extra.saturating_add(r.text.len());
            if open {
                if r.continued {
                    self.out.push(r);
                } else {
                    // The end of the line before: this stream is complete.
                    self.open.retain(|s| *s != r.stream);
                }
            }
        }
        self.done = self.lines >= self.n && (self.open.is_empty() || self.extra > MAX_JOINED_BYTES);
        !self.done
    }
}

fn tail_of(chain: &[Opened], n: usize) -> io::Result<Vec<Record>> {
    let mut last = LastLines::new(n);
    for o in chain {
        if last.done {
            break;
        }
        rev_lines(&o.file, o.len, |line| match Record::parse_bytes(line) {
            Some(r) => last.take(r),
            None => true,
        })?;
    }
    let mut out = last.out;
    out.reverse();
    Ok(out)
}

/// The records of the last `n` lines of `unit`, oldest first, across its
/// rotated files: a line written in pieces (see [`super::record`]) counts
/// once and comes with its pieces (those within [`MAX_JOINED_BYTES`]
/// before the n-th line), to be joined by a [`super::Joiner`]; at most
/// 16 MiB of text, the newest. No files: no records. Lines that are not
/// records are skipped.
pub fn tail(root: &Path, unit: &str, n: usize) -> io::Result<Vec<Record>> {
    check_unit(unit)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    tail_of(&open_chain(root, unit)?, n)
}

/// The records of the last `last` lines of `unit` (as [`tail`]) and a
/// [`Follower`] that yields the records after them, pieces as they come,
/// none lost or repeated in between.
pub fn follow(root: &Path, unit: &str, last: usize) -> io::Result<(Vec<Record>, Follower)> {
    check_unit(unit)?;
    let chain = open_chain(root, unit)?;
    let backlog = if last == 0 { Vec::new() } else { tail_of(&chain, last)? };
    let (current, last) = match chain.into_iter().next() {
        Some(o) if o.index == 0 => {
            let pos = complete_end(&o.file, o.len)?;
            (Some(Cursor { file: o.file, id: o.id, pos, partial: Vec::new() }), None)
        }
        // Only rotated files (between a rotation and the next record):
        // the next current file comes after the newest of them.
        Some(o) => (None, Some(o.id)),
        None => (None, None),
    };
    Ok((backlog, Follower { root: root.to_path_buf(), unit: unit.to_string(), current, last }))
}

/// The names of the units that have logs under `root`, sorted.
pub fn units(root: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let unit = match name.rsplit_once(".log") {
            Some((unit, "")) => unit,
            Some((unit, rest)) if rest.strip_prefix('.').is_some_and(|n| n.parse::<u32>().is_ok()) => unit,
            _ => continue,
        };
        if valid_unit_name(unit) {
            names.insert(unit.to_string());
        }
    }
    Ok(names.into_iter().collect())
}

#[derive(Debug)]
struct Cursor {
    file: File,
    id: FileId,
    /// Bytes of the file consumed (into records or `partial`).
    pos: u64,
    partial: Vec<u8>,
}

impl Cursor {
    /// Reads to the end of the file; complete lines become records.
    fn read_new(&mut self, out: &mut Vec<Record>) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_at(&self.file, &mut buf, self.pos)?;
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
            self.partial.extend_from_slice(buf.get(..n).unwrap_or_default());
            let mut consumed = 0;
            let mut rest: &[u8] = &self.partial;
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                if let Some(r) = rest.get(..i).and_then(Record::parse_bytes) {
                    out.push(r);
                }
                consumed += i + 1;
                rest = rest.get(i + 1..).unwrap_or_default();
            }
            self.partial.drain(..consumed.min(self.partial.len()));
            if self.partial.len() > MAX_PARTIAL {
                self.partial.clear();
            }
        }
    }
}

/// Follows a unit's log as it grows, across rotations. See [`follow`].
#[derive(Debug)]
pub struct Follower {
    root: PathBuf,
    unit: String,
    current: Option<Cursor>,
    /// Without a current file: the newest file already read, if any.
    last: Option<FileId>,
}

impl Follower {
    /// The records appended since the last call; never waits.
    pub fn poll(&mut self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let path = log_path(&self.root, &self.unit, 0);
        let now = match fs::metadata(&path) {
            Ok(m) => Some(file_id(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let Some(cur) = self.current.as_mut() else {
            // No file followed yet: the files after the last one read are
            // read from their start.
            if now.is_some() {
                self.switch(self.last, &mut out)?;
            }
            return Ok(out);
        };
        if now == Some(cur.id) {
            if cur.file.metadata()?.len() < cur.pos {
                // Truncated in place: start over.
                cur.pos = 0;
                cur.partial.clear();
            }
            cur.read_new(&mut out)?;
            return Ok(out);
        }
        // Rotated (or removed): what was written before is in the old file.
        cur.read_new(&mut out)?;
        let old = cur.id;
        self.switch(Some(old), &mut out)?;
        Ok(out)
    }

    /// Reads the files newer than `old` (all when it is gone or None),
    /// oldest first, and keeps following the current one.
    fn switch(&mut self, old: Option<FileId>, out: &mut Vec<Record>) -> io::Result<()> {
        let chain = open_chain(&self.root, &self.unit)?;
        let newer = match old.and_then(|id| chain.iter().position(|o| o.id == id)) {
            Some(p) => p,
            None => chain.len(),
        };
        // An I/O error below leaves the state as it was: the next poll
        // tries again (and may repeat records read before the error).
        let mut next = None;
        let mut newest = old;
        for o in chain.into_iter().take(newer).collect::<Vec<_>>().into_iter().rev() {
            let mut cur = Cursor { file: o.file, id: o.id, pos: 0, partial: Vec::new() };
            cur.read_new(out)?;
            newest = Some(o.id);
            if o.index == 0 {
                next = Some(cur);
            }
        }
        self.last = if next.is_some() { None } else { newest };
        self.current = next;
        Ok(())
    }

    /// Waits up to `timeout` for new records, looking every
    /// [`POLL_INTERVAL`]; empty when none came.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<Record>> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.poll()?;
            let now = Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records);
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }
}
