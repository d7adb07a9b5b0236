//! Service logs: every service's stdout and stderr, line by line with a
//! timestamp, in size-bounded rotated files; and PID1's own messages.
//!
//! ```text
//! /var/log/berth/<unit>.log        the current file, appended to
//! /var/log/berth/<unit>.log.1      the previous one ... up to .N, the oldest
//! /var/log/berth/berth.log         PID1's own messages (stream "init")
//! ```
//!
//! Each line is one [`Record`]: `2026-11-28T23:59:59.123456Z stdout text`.
//! A line longer than [`LogLimits::max_line_bytes`], or one whose start has
//! waited [`PARTIAL_AFTER`] for its newline, is written in pieces marked
//! `stdout+` (the format is in `record.rs`); a reader joins them with a
//! [`Joiner`], up to [`MAX_JOINED_BYTES`] a line.
//!
//! Nothing here may block PID1 or a service:
//!
//! - one capture thread polls every service's pipes (non-blocking) and
//!   always drains them, so a service never stalls on a full pipe;
//! - it hands records to one writer thread through a queue bounded in
//!   bytes; when the queue is full (the disk is slow or stuck) records are
//!   dropped and counted, never waited for;
//! - the writer batches, rotates, and on a failed write (disk full) drops
//!   and counts, retrying the file at most once a second. Drops are
//!   reported in the unit's own log as an `init` record
//!   ("berth: journal dropped N lines") at the place they happened.
//!
//! Before /var is mounted there is nowhere to write: the [`Journal`] starts
//! detached and keeps a bounded backlog per unit (oldest dropped first),
//! written out by [`Journal::attach`]. [`Journal::detach`] closes every file
//! before /var is unmounted at shutdown.
//!
//! Reading ([`tail`], [`follow`]) works on the files alone, so berthctl
//! (or a D-Bus method in PID1) needs no connection to the writer.

mod capture;
mod join;
mod queue;
mod read;
mod record;
#[cfg(test)]
mod tests;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use capture::Closed;
pub use join::{join, Joiner};
pub use read::{follow, tail, units, Follower};
pub use record::{LineSplitter, Record, Stream, Timestamp, PARTIAL_AFTER};
pub use writer::{Journal, Stats};

/// Where the logs live in the image.
pub const DEFAULT_ROOT: &str = berth_layout::paths::LOG_DIR;

/// The "unit" PID1's own messages are logged as: `berth.log`.
pub const INIT_UNIT: &str = "berth";

/// The text of the record that reports lost lines; followed by the count.
pub const DROPPED_PREFIX: &str = "berth: journal dropped ";

/// The longest line a reader rebuilds from its pieces (and the most a
/// tail reads beyond its last lines to find their first pieces); longer
/// lines are shown in pieces, marked.
pub const MAX_JOINED_BYTES: usize = 1024 * 1024;

/// Bounds of the journal. Every one of them is a bound on memory or disk
/// that holds however much a service writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// A log file is rotated before it would grow past this.
    pub max_file_bytes: u64,
    /// Rotated files kept per unit (`.1` ... `.N`); 0 = only the current.
    pub rotated_files: u32,
    /// Longer lines are written in pieces of at most this many bytes,
    /// marked as continued.
    pub max_line_bytes: usize,
    /// Bytes of records waiting for the writer before new ones are dropped.
    pub queue_bytes: usize,
    /// Bytes kept per unit while detached (before /var is mounted).
    pub backlog_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_file_bytes: 1024 * 1024,
            rotated_files: 3,
            max_line_bytes: 16 * 1024,
            queue_bytes: 4 * 1024 * 1024,
            backlog_bytes: 64 * 1024,
        }
    }
}

/// A unit name is a file name: ASCII letters, digits and `_ . @ -`, not
/// starting with a dot, at most 128 bytes.
pub fn valid_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 128
        && !unit.starts_with('.')
        && unit.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

fn check_unit(unit: &str) -> io::Result<()> {
    if valid_unit_name(unit) {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid unit name for a log file: {unit:?}")))
    }
}

/// `<root>/<unit>.log` for index 0, `<root>/<unit>.log.<index>` otherwise.
pub fn log_path(root: &Path, unit: &str, index: u32) -> PathBuf {
    if index == 0 {
        root.join(format!("{unit}.log"))
    } else {
        root.join(format!("{unit}.log.{index}"))
    }
}

static GLOBAL: OnceLock<Journal> = OnceLock::new();

/// Makes `journal` the process's journal (PID1 has one). Gives it back if
/// one is installed already.
pub fn install(journal: Journal) -> Result<(), Journal> {
    GLOBAL.set(journal)
}

/// The installed journal, if any.
pub fn global() -> Option<&'static Journal> {
    GLOBAL.get()
}

/// Appends one of PID1's own messages to `berth.log` (stream `init`),
/// without waiting; a no-op before a journal is installed. Pass the message
/// without the console's `berth: ` prefix.
pub fn init_line(text: &str) {
    if let Some(j) = GLOBAL.get() {
        j.init_line(text);
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("berth-journal-{}-{name}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn unit_names_are_plain_file_names() {
        for ok in ["etcd", "containerd", "getty@ttyS0", "net-dhcp", "a.b_c", "berth"] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "../etc/passwd", "a b", "x\n", "ü", &"x".repeat(129)] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
        assert_eq!(log_path(Path::new("/var/log/berth"), "etcd", 0), Path::new("/var/log/berth/etcd.log"));
        assert_eq!(log_path(Path::new("/r"), "etcd", 2), Path::new("/r/etcd.log.2"));
    }
}
