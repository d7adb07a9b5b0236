//! The updater's memory across boots: what it did (installs, rollbacks,
//! blesses, with outcome and time), the version it staged and is waiting to
//! boot, and the versions that failed here, which are never installed
//! automatically again.
//!
//! One JSON file under [`berth_layout::paths::UPDATER_STATE_DIR`], written
//! atomically: a temporary file in the same directory, fsync, rename over
//! the old one, fsync of the directory. A power cut leaves the old file or
//! the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::AbState;

/// The file name in the state directory.
pub const HISTORY_FILE: &str = "history.json";
/// Operations kept; the oldest go first.
pub const MAX_OPERATIONS: usize = 100;

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Install,
    Rollback,
    Bless,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Install => "install",
            Kind::Rollback => "rollback",
            Kind::Bless => "bless",
        }
    }
}

/// One operation and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub kind: Kind,
    /// The version installed, rolled back to, or blessed ("" when unknown:
    /// an install refused before its manifest was read).
    pub version: String,
    /// The slot written or booted next ("a", "b", or "").
    pub slot: String,
    pub ok: bool,
    /// The error's text, or what was done.
    pub message: String,
    /// Seconds since the Unix epoch.
    pub time: u64,
}

/// A version that failed on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub version: String,
    /// Why it counts as failed.
    pub why: String,
    /// When it was found, seconds since the Unix epoch.
    pub time: u64,
}

/// A version this updater staged, not booted yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub version: String,
    pub slot: String,
    /// `/proc/sys/kernel/random/boot_id` of the boot that staged it: a boot
    /// with another id has rebooted since.
    pub boot_id: String,
}

/// Everything the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first, at most [`MAX_OPERATIONS`].
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub failed: Vec<Failed>,
    #[serde(default)]
    pub staged: Option<Staged>,
}

impl History {
    /// Records an operation (dropping the oldest past the limit).
    pub fn record(&mut self, op: Operation) {
        self.operations.push(op);
        let excess = self.operations.len().saturating_sub(MAX_OPERATIONS);
        self.operations.drain(..excess);
    }

    /// The last install or rollback.
    pub fn last_change(&self) -> Option<&Operation> {
        self.operations.iter().rev().find(|o| matches!(o.kind, Kind::Install | Kind::Rollback))
    }

    /// The versions that failed here.
    pub fn failed_versions(&self) -> Vec<String> {
        self.failed.iter().map(|f| f.version.clone()).collect()
    }

    pub fn has_failed(&self, version: &str) -> bool {
        self.failed.iter().any(|f| f.version == version)
    }

    fn add_failed(&mut self, version: &str, why: String, time: u64) -> bool {
        if self.has_failed(version) {
            return false;
        }
        self.failed.push(Failed { version: version.to_string(), why, time });
        true
    }

    /// Looks at this boot, once at start, and notes the versions that
    /// failed here:
    /// - the other slot's entry spent its tries (`+0-<done>`) while we
    ///   booted this one: systemd-boot fell back from it;
    /// - a version we staged in an earlier boot is not the one running.
    ///
    /// Returns whether anything changed (the caller saves).
    pub fn note_boot(&mut self, state: &AbState, boot_id: &str, now: u64) -> bool {
        let mut changed = false;
        let booted_version = state.booted_entry().map(|e| e.name.version.clone()).unwrap_or_default();
        if let Some(other) = state.entry(state.booted().other()) {
            if other.is_spent() && other.name.version != booted_version {
                let why = format!(
                    "its entry {} spent its tries; slot {} booted instead",
                    other.file_name(),
                    state.booted().name()
                );
                changed |= self.add_failed(&other.name.version, why, now);
            }
        }
        if let Some(staged) = self.staged.clone() {
            if staged.boot_id != boot_id {
                if staged.version != booted_version {
                    let why = format!(
                        "staged into slot {}, but version {booted_version} is running after the reboot",
                        staged.slot
                    );
                    self.add_failed(&staged.version, why, now);
                }
                self.staged = None;
                changed = true;
            }
        }
        changed
    }
}

/// Why the store could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a history file: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// The history file in a directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// The history; empty when there is no file yet.
    pub fn load(&self) -> Result<History, HistoryError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| HistoryError::Parse { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(History::default()),
            Err(source) => Err(HistoryError::Io { path, source }),
        }
    }

    /// Writes the history atomically (see the module documentation); the
    /// directory is made (0700) when missing.
    pub fn save(&self, history: &History) -> Result<(), HistoryError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HistoryError::Io { path, source }
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io_err(&self.dir))?;
        }
        let path = self.path();
        let tmp = self.dir.join(format!(".{HISTORY_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(history)
            .map_err(|e| HistoryError::Io { path: path.clone(), source: io::Error::other(e) })?;
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        Ok(())
    }
}
