//! A VM's (or a test's) scratch directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{io, Result};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory under [`crate::settings::vms_dir`] named `<name>-<pid>-<counter>`.
/// Dropped normally, it is removed; dropped while the thread panics (a
/// failing test), it is kept and its path printed, so its logs can be read.
/// A directory given with [`WorkDir::existing`] is never removed.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// A fresh, empty directory for `name`.
    pub fn create(name: &str) -> Result<WorkDir> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = crate::settings::vms_dir().join(format!("{name}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io(format!("removing the stale directory {}", path.display())))?;
        }
        std::fs::create_dir_all(&path).map_err(io(format!("creating the directory {}", path.display())))?;
        let path = path.canonicalize().map_err(io(format!("resolving {}", path.display())))?;
        Ok(WorkDir { path, remove: true })
    }

    /// A directory the caller chose (created if missing); kept on drop.
    pub fn existing(path: &Path) -> Result<WorkDir> {
        std::fs::create_dir_all(path).map_err(io(format!("creating the directory {}", path.display())))?;
        let path = path.canonicalize().map_err(io(format!("resolving {}", path.display())))?;
        Ok(WorkDir { path, remove: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Keep the directory when this is dropped.
    pub fn keep(&mut self) {
        self.remove = false;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("berth-qemu: kept {} for inspection", self.path.display());
        } else if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
