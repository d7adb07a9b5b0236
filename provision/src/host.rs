//! The seam between what user data changes and the machine: files, the
//! hostname, commands. [`FsHost`] is the real one over a root directory
//! (`/` on the machine, a temp dir in tests); PID1 gives it a [`Runner`]
//! that waits through its reaper (PID1 is the one owner of waitpid).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// The exit code; `None` when killed by a signal (or the timeout).
    pub code: Option<i32>,
    /// stdout and stderr, interleaved, at most the last 64 KiB.
    pub output: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs a command and waits for it.
pub trait Runner {
    /// `argv[0]` is a path or looked up in PATH. Killed (SIGKILL) after
    /// `timeout`. Errors: it could not be started.
    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran>;
}

/// What applying user data does to a machine. Paths are absolute, as on
/// the machine; an implementation may put them under another root.
pub trait Host {
    /// A file's bytes; `None` when it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Whether something (file, directory, link) is at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Writes `bytes` to a temporary file beside `path`, sets mode and
    /// owner, fsyncs it, renames it over `path` and fsyncs the directory:
    /// after a power cut the file is the old one or the new one, whole.
    /// Missing parent directories are made (0755, root).
    fn write_atomic(&mut self, path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()>;
    /// Removes a file or a symlink; absent is not an error.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// Makes a directory and its missing parents; sets mode and owner on
    /// the last one only.
    fn create_dir(&mut self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()>;
    /// Replaces `path` by a symlink to `target` (atomically, by rename).
    fn symlink(&mut self, target: &Path, path: &Path) -> io::Result<()>;
    /// sethostname(2).
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// Runs a command (bootcmd, the tools that apply settings).
    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran>;
}

/// The real [`Host`] over `root` (`/` on the machine).
pub struct FsHost<R: Runner> {
    pub root: PathBuf,
    pub runner: R,
    /// Whether sethostname(2) is called (only on the machine itself).
    pub set_kernel_hostname: bool,
}

/// H3's stub so that PID1 can hand an [`FsHost`] to [`crate::machine`]:
/// reads work, every change is refused, commands go to the runner. H2
/// replaces it with the real implementation (delete this one on merge).
impl<R: Runner> Host for FsHost<R> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.under_root(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.under_root(path).symlink_metadata().is_ok()
    }

    fn write_atomic(&mut self, path: &Path, _bytes: &[u8], _mode: u32, _uid: u32, _gid: u32) -> io::Result<()> {
        Err(not_implemented(path))
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        Err(not_implemented(path))
    }

    fn create_dir(&mut self, path: &Path, _mode: u32, _uid: u32, _gid: u32) -> io::Result<()> {
        Err(not_implemented(path))
    }

    fn symlink(&mut self, _target: &Path, path: &Path) -> io::Result<()> {
        Err(not_implemented(path))
    }

    fn set_hostname(&mut self, _name: &str) -> io::Result<()> {
        Err(io::Error::other("setting the hostname: not implemented yet"))
    }

    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        self.runner.run(argv, timeout)
    }
}

impl<R: Runner> FsHost<R> {
    fn under_root(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn not_implemented(path: &Path) -> io::Error {
    io::Error::other(format!("{}: not implemented yet", path.display()))
}
