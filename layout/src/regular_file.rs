//! How Berth reads a file an administrator, user data or an attacker with
//! write access to /etc may have put in place: unit files,
//! `/etc/berth/updater.toml`, `/etc/machine-id`, `/etc/hostname`. PID1
//! reads these, so nothing put there may hang it (opening a FIFO blocks
//! until a writer comes) or fill its memory (a symlink to `/dev/zero` never
//! ends). Used by the unit loader, the updater's configuration and PID1's
//! early boot alike.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why [`read`] gave no contents.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// stat, open or read failed; `NotFound` when there is no such file.
    #[error("{0}")]
    Io(io::Error),
    /// Not a regular file; what it is instead: "a FIFO", "a socket", "a
    /// character device", "a block device", "a directory".
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// More than `limit` bytes; `size` is what stat said or, if the file
    /// grew while it was read, at least `limit + 1`.
    #[error("{size} bytes, more than the {limit} allowed")]
    TooLarge { size: u64, limit: u64 },
}

/// What [`ReadError::NotRegular`] says of a directory.
const DIRECTORY: &str = "a directory";

impl ReadError {
    /// There was a directory at the path: for a caller that reads "no
    /// file here" into that, as into `NotFound`.
    pub fn is_directory(&self) -> bool {
        matches!(self, ReadError::NotRegular(what) if *what == DIRECTORY)
    }

    /// Refused or failed, with `path` named in the text where the error
    /// itself does not name it (all but `Io`, whose kind callers match).
    pub fn into_io(self, path: &Path) -> io::Error {
        match self {
            ReadError::Io(e) => e,
            refused => {
                let e = io::Error::from(refused);
                io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            }
        }
    }
}

impl From<ReadError> for io::Error {
    /// `Io` as it was; `NotRegular` as `InvalidInput`, `TooLarge` as
    /// `InvalidData`, with [`ReadError`]'s text.
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io(e) => e,
            ReadError::NotRegular(_) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            ReadError::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}

/// The contents of the regular file at `path` (symlinks followed), at most
/// `limit` bytes. `/dev/null`, what a symlink mask points to, reads as
/// empty. Anything else that is not a regular file is refused as [`open`]
/// refuses it. The limit is on what is read, not only on the size stat
/// reports: files in /proc and /sys say 0.
///
/// Errors: [`ReadError`].
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let Some((file, meta)) = open(path)? else { return Ok(Vec::new()) };
    if meta.len() > limit {
        return Err(ReadError::TooLarge { size: meta.len(), limit });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(ReadError::TooLarge { size: read.max(meta.len()), limit });
    }
    Ok(bytes)
}

/// The regular file at `path` (symlinks followed), open for reading, and
/// its metadata; `None` for `/dev/null` (what a symlink mask points to),
/// which holds nothing. For a caller that streams a file of any size
/// instead of reading it whole. Anything else that is not a regular file
/// is refused before it is opened, and checked again on the open
/// descriptor (in case the path was replaced in between; it is opened
/// `O_NONBLOCK | O_NOCTTY`, so even then a FIFO does not block and a
/// terminal does not become the caller's).
///
/// Errors: [`ReadError::Io`] (`NotFound` when there is no such file) and
/// [`ReadError::NotRegular`].
pub fn open(path: &Path) -> Result<Option<(std::fs::File, std::fs::Metadata)>, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if is_dev_null(&meta) {
        return Ok(None);
    }
    check_regular(&meta)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    check_regular(&meta)?;
    Ok(Some((file, meta)))
}

/// The character device 1:3, `/dev/null`.
fn is_dev_null(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3)
}

/// `Ok` for a regular file; otherwise what it is.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        DIRECTORY
    } else {
        "an unknown kind of file"
    };
    Err(ReadError::NotRegular(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read` on another thread, which must answer within 2 s.
    fn read_in_time(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&path, limit));
        });
        rx.recv_timeout(std::time::Duration::from_secs(2)).expect("read hung")
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-regular-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_regular_file_up_to_its_limit_and_dev_null_as_empty() {
        let dir = scratch("regular");
        let f = dir.join("a");
        std::fs::write(&f, b"1234").unwrap();
        assert_eq!(read_in_time(&f, 4).unwrap(), b"1234");
        assert!(matches!(read_in_time(&f, 3), Err(ReadError::TooLarge { size: 4, limit: 3 })));
        let null = dir.join("masked");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        assert_eq!(read_in_time(&null, 4).unwrap(), b"");
        let missing = read_in_time(&dir.join("none"), 4).unwrap_err();
        assert!(matches!(&missing, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_hanging() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_in_time(&fifo, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        let e = read_in_time(&zero, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let e = io::Error::from(read_in_time(&dir, 1 << 20).unwrap_err());
        assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::InvalidInput, "not a regular file (a directory)".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
