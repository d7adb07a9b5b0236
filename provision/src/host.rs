//! The seam between what user data changes and the machine: files, the
//! hostname, commands. [`FsHost`] is the real one over a root directory
//! (`/` on the machine, a temp dir in tests); PID1 gives it a [`Runner`]
//! that waits through its reaper (PID1 is the one owner of waitpid).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

    /// Whether the file at `path` holds exactly `bytes` (`false` when
    /// there is none). The default reads it whole with [`Host::read`];
    /// [`FsHost`] compares sizes first and then streams, so a large file
    /// is never held in memory (PID1 applies user data).
    fn same_content(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        Ok(self.read(path)?.as_deref() == Some(bytes))
    }

    /// Copies the file at `from` to `to` as [`Host::write_atomic`] writes
    /// (a temporary file beside `to`, mode and owner, fsync, rename, the
    /// directory fsynced). Apply's backups and their putting back go
    /// through it: the default reads `from` whole with [`Host::read`],
    /// [`FsHost`] streams it. Errors: `from` missing (`NotFound`) or not
    /// a regular file, and what the write's steps return.
    fn copy_atomic(&mut self, from: &Path, to: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        match self.read(from)? {
            Some(bytes) => self.write_atomic(to, &bytes, mode, uid, gid),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", from.display()))),
        }
    }

    /// What is at `path`, not following a final symlink; `None` when
    /// nothing is. Added for apply's backups (the mode and owner of what
    /// it replaces); the default answers from [`Host::read`] and
    /// [`Host::exists`] (a file: 0644 root:root; anything else a directory).
    fn inspect(&self, path: &Path) -> io::Result<Option<Existing>> {
        match self.read(path) {
            Ok(Some(_)) => Ok(Some(Existing::File { mode: 0o644, uid: 0, gid: 0 })),
            Ok(None) if self.exists(path) => Ok(Some(Existing::Dir { mode: 0o755, uid: 0, gid: 0 })),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What [`Host::inspect`] found at a path. Modes are the permission bits
/// (`0o7777`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Existing {
    File { mode: u32, uid: u32, gid: u32 },
    Dir { mode: u32, uid: u32, gid: u32 },
    Symlink { target: PathBuf },
}

/// The real [`Host`] over `root` (`/` on the machine).
pub struct FsHost<R: Runner> {
    pub root: PathBuf,
    pub runner: R,
    /// Whether sethostname(2) is called (only on the machine itself).
    pub set_kernel_hostname: bool,
}

impl<R: Runner> FsHost<R> {
    /// `path` (absolute, as on the machine) under [`FsHost::root`]. `..`
    /// components are dropped: nothing leaves the root.
    pub fn under_root(&self, path: &Path) -> PathBuf {
        let mut p = self.root.clone();
        for c in path.components() {
            if let Component::Normal(part) = c {
                p.push(part);
            }
        }
        p
    }

    /// What [`Host::write_atomic`] and [`Host::copy_atomic`] share: `fill`
    /// writes the content into a new temporary file beside `path`, which
    /// then gets its owner and mode, is fsynced and renamed over `path`,
    /// and the directory is fsynced. The temporary file is removed on an
    /// error.
    fn replace_with(
        &self,
        path: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let real = self.under_root(path);
        self.make_parents(&real)?;
        let tmp = temp_beside(&real)?;
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            fill(&mut f)?;
            chown_fd(&f, uid, gid)?;
            // After chown, which clears set-id bits.
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &real)?;
            sync_dir(parent_of(&real))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Makes the missing parents of `path` (0755, root; owner unchanged in
    /// tests, where chown to root fails and is skipped).
    fn make_parents(&self, real: &Path) -> io::Result<()> {
        match real.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)
            }
            _ => Ok(()),
        }
    }
}

/// chown that tolerates not being root when nothing would change the
/// owner anyway is not possible to know in advance: as an unprivileged
/// user (tests), EPERM is ignored when asked for ids other than our own.
fn chown_fd(file: &File, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !rustix::process::geteuid().is_root() => Ok(()),
        Err(e) => Err(e),
    }
}

fn chown_path(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !rustix::process::geteuid().is_root() => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory (after a rename or unlink in it).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A name for a temporary file beside `real`: `.NAME.berth-tmp.PID`.
fn temp_beside(real: &Path) -> io::Result<PathBuf> {
    let name = real
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: no file name", real.display())))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".berth-tmp.{}", std::process::id()));
    Ok(real.with_file_name(tmp))
}

fn parent_of(real: &Path) -> &Path {
    match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("/"),
    }
}

/// The most [`FsHost`]'s `read` takes, in bytes: the largest file user
/// data may write (`MAX_INFLATED`, 64 MiB); more is an error naming the
/// path. Apply's backups do not read: they stream ([`Host::copy_atomic`],
/// [`Host::same_content`]), so a file of any size can be replaced.
pub const READ_LIMIT: u64 = crate::interpret::MAX_INFLATED;

/// The buffer [`FsHost`] compares a file through, in bytes.
const COPY_CHUNK: usize = 64 * 1024;

impl<R: Runner> Host for FsHost<R> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        // PID1 applies user data: a FIFO or a device where a file is read
        // (a backup of what a file replaces, /etc/hostname) must not hang
        // it, nor a huge file fill its memory.
        match berth_layout::regular_file::read(&self.under_root(path), READ_LIMIT) {
            Ok(b) => Ok(Some(b)),
            Err(berth_layout::regular_file::ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory is not a file's content.
            Err(e) if e.is_directory() => Ok(None),
            Err(e) => Err(e.into_io(path)),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.under_root(path).symlink_metadata().is_ok()
    }

    fn write_atomic(&mut self, path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.replace_with(path, mode, uid, gid, |f| f.write_all(bytes))
    }

    fn same_content(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        let (mut file, meta) = match berth_layout::regular_file::open(&self.under_root(path)) {
            Ok(Some(opened)) => opened,
            Ok(None) => return Ok(bytes.is_empty()),
            Err(berth_layout::regular_file::ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(false)
            }
            Err(e) if e.is_directory() => return Ok(false),
            Err(e) => return Err(e.into_io(path)),
        };
        if meta.len() != u64::try_from(bytes.len()).unwrap_or(u64::MAX) {
            return Ok(false);
        }
        let mut chunk = vec![0u8; COPY_CHUNK];
        let mut rest = bytes;
        loop {
            let n = file.read(&mut chunk)?;
            let Some(got) = chunk.get(..n) else { return Ok(false) };
            if n == 0 {
                return Ok(rest.is_empty());
            }
            match rest.strip_prefix(got) {
                Some(r) => rest = r,
                None => return Ok(false),
            }
        }
    }

    fn copy_atomic(&mut self, from: &Path, to: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let source = match berth_layout::regular_file::open(&self.under_root(from)) {
            Ok(opened) => opened,
            Err(e) => return Err(e.into_io(from)),
        };
        self.replace_with(to, mode, uid, gid, |f| match source {
            Some((mut file, _)) => io::copy(&mut file, f).map(drop),
            None => Ok(()),
        })
    }

    /// Removes a file, a symlink or an empty directory (the last so that
    /// an undone apply takes back the directories it made); absent is not
    /// an error.
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let real = self.under_root(path);
        let meta = match real.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            fs::remove_dir(&real)?;
        } else {
            fs::remove_file(&real)?;
        }
        sync_dir(parent_of(&real))
    }

    fn create_dir(&mut self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let real = self.under_root(path);
        self.make_parents(&real)?;
        match fs::DirBuilder::new().mode(0o700).create(&real) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && real.is_dir() => {}
            Err(e) => return Err(e),
        }
        chown_path(&real, uid, gid)?;
        fs::set_permissions(&real, fs::Permissions::from_mode(mode & 0o7777))?;
        sync_dir(parent_of(&real))
    }

    fn symlink(&mut self, target: &Path, path: &Path) -> io::Result<()> {
        let real = self.under_root(path);
        self.make_parents(&real)?;
        let tmp = temp_beside(&real)?;
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        if let Err(e) = fs::rename(&tmp, &real) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(parent_of(&real))
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        if self.set_kernel_hostname {
            rustix::system::sethostname(name.as_bytes())?;
        }
        Ok(())
    }

    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        self.runner.run(argv, timeout)
    }

    fn inspect(&self, path: &Path) -> io::Result<Option<Existing>> {
        let real = self.under_root(path);
        let meta = match real.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mode = meta.mode() & 0o7777;
        let (uid, gid) = (meta.uid(), meta.gid());
        Ok(Some(if meta.file_type().is_symlink() {
            Existing::Symlink { target: fs::read_link(&real)? }
        } else if meta.is_dir() {
            Existing::Dir { mode, uid, gid }
        } else {
            Existing::File { mode, uid, gid }
        }))
    }
}

/// The most of a command's output kept: the last 64 KiB.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// A [`Runner`] on `std::process` for the host side and tests (PID1 has
/// its own, which waits through its reaper). stdin is /dev/null; stdout
/// and stderr go to one pipe, read on a thread; the last
/// [`OUTPUT_LIMIT`] bytes are kept. After `timeout` the child is killed
/// (SIGKILL) and the result has no code.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        let (program, args) =
            argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty command"))?;
        let (mut reader, writer) = io::pipe()?;
        let mut child =
            Command::new(program).args(args).stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer).spawn()?;
        let collect = std::thread::spawn(move || {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        kept.extend_from_slice(buf.get(..n).unwrap_or_default());
                        if kept.len() > 2 * OUTPUT_LIMIT {
                            let cut = kept.len() - OUTPUT_LIMIT;
                            kept.drain(..cut);
                        }
                    }
                }
            }
            if kept.len() > OUTPUT_LIMIT {
                let cut = kept.len() - OUTPUT_LIMIT;
                kept.drain(..cut);
            }
            String::from_utf8_lossy(&kept).into_owned()
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Grandchildren that keep the pipe open would block the reader:
        // the output is read only as long as it takes to hear EOF, which a
        // killed command's leftovers may delay; we wait for it anyway, as
        // the output is what the caller reports.
        let output = collect.join().unwrap_or_default();
        Ok(Ran { code: status.and_then(|s| s.code()), output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, FsHost<ProcessRunner>) {
        let dir = tempfile::tempdir().unwrap();
        let host = FsHost { root: dir.path().to_path_buf(), runner: ProcessRunner, set_kernel_hostname: false };
        (dir, host)
    }

    #[test]
    fn read_refuses_a_fifo_naming_the_path_instead_of_hanging() {
        let (dir, h) = host();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.path().join("etc/hostname"), rustix::fs::Mode::from_raw_mode(0o644))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(h.read(Path::new("/etc/hostname")).map_err(|e| e.to_string()));
        });
        let err = rx.recv_timeout(Duration::from_secs(2)).expect("read hung on a FIFO").unwrap_err();
        assert!(err.contains("/etc/hostname") && err.contains("FIFO"), "{err}");
    }

    #[test]
    fn write_atomic_makes_parents_sets_the_mode_and_replaces_whole() {
        let (dir, mut h) = host();
        let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        h.write_atomic(Path::new("/etc/a/b"), b"one", 0o640, uid, gid).unwrap();
        h.write_atomic(Path::new("/etc/a/b"), b"two", 0o600, uid, gid).unwrap();
        let real = dir.path().join("etc/a/b");
        assert_eq!(fs::read(&real).unwrap(), b"two");
        assert_eq!(real.metadata().unwrap().mode() & 0o7777, 0o600);
        assert_eq!(h.read(Path::new("/etc/a/b")).unwrap().unwrap(), b"two");
        assert_eq!(h.read(Path::new("/etc/nothing")).unwrap(), None);
        assert_eq!(h.read(Path::new("/etc/a")).unwrap(), None);
        assert_eq!(h.inspect(Path::new("/etc/a/b")).unwrap(), Some(Existing::File { mode: 0o600, uid, gid }));
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path().join("etc/a")).unwrap().count(), 1);
        // Nothing leaves the root.
        assert_eq!(h.under_root(Path::new("/../../x")), dir.path().join("x"));
    }

    #[test]
    fn symlink_replaces_and_remove_takes_files_links_and_empty_dirs() {
        let (dir, mut h) = host();
        h.write_atomic(Path::new("/etc/localtime"), b"file", 0o644, 0, 0).unwrap_or(());
        h.symlink(Path::new("/usr/share/zoneinfo/UTC"), Path::new("/etc/localtime")).unwrap();
        h.symlink(Path::new("/usr/share/zoneinfo/Europe/Berlin"), Path::new("/etc/localtime")).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("etc/localtime")).unwrap(),
            PathBuf::from("/usr/share/zoneinfo/Europe/Berlin")
        );
        assert_eq!(
            h.inspect(Path::new("/etc/localtime")).unwrap(),
            Some(Existing::Symlink { target: "/usr/share/zoneinfo/Europe/Berlin".into() })
        );
        h.remove(Path::new("/etc/localtime")).unwrap();
        assert!(!h.exists(Path::new("/etc/localtime")));
        h.remove(Path::new("/etc/localtime")).unwrap();
        let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        h.create_dir(Path::new("/var/home/ann"), 0o700, uid, gid).unwrap();
        h.create_dir(Path::new("/var/home/ann"), 0o750, uid, gid).unwrap();
        assert_eq!(dir.path().join("var/home/ann").metadata().unwrap().mode() & 0o7777, 0o750);
        h.remove(Path::new("/var/home/ann")).unwrap();
        assert!(!h.exists(Path::new("/var/home/ann")));
        assert!(h.exists(Path::new("/var/home")));
    }

    #[test]
    fn the_process_runner_captures_output_exit_codes_and_times_out() {
        let mut r = ProcessRunner;
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let ran = r.run(&sh("echo out; echo err >&2; exit 3"), Duration::from_secs(10)).unwrap();
        assert_eq!(ran.code, Some(3));
        assert!(ran.output.contains("out\n") && ran.output.contains("err\n"), "{ran:?}");
        let t = Instant::now();
        let ran = r.run(&sh("exec sleep 20"), Duration::from_millis(200)).unwrap();
        assert_eq!(ran.code, None);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(r.run(&["/nonexistent/x".to_string()], Duration::from_secs(1)).is_err());
        let big = r.run(&sh("head -c 200000 /dev/zero | tr '\\0' x"), Duration::from_secs(10)).unwrap();
        assert_eq!(big.output.len(), OUTPUT_LIMIT);
    }
}
