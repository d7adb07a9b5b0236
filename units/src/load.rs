//! Reading unit files from directories: overrides and masks.
//!
//! Directories are read in order, image defaults first, then `/etc`. A
//! file `NAME.toml` in a later directory replaces the earlier `NAME.toml`
//! entirely (no merging: what you read in the winning file is the whole
//! unit). A winning file that is empty (zero bytes; a symlink to
//! `/dev/null` reads as that) masks the unit: it is not loaded at all. A
//! FIFO, socket or device other than `/dev/null` (or a symlink to one) is
//! an error and is never opened for reading, so it cannot hang PID1.
//! Anything else in the directories (other extensions, dot files,
//! directories such as `NAME.toml.d`) is ignored. A file that cannot be read
//! or parsed is reported and its unit left out; it does not fall back to an
//! earlier directory's file, since that is not what the administrator wrote.
//! Loading never stops at the first error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::check::parse_unit;
use super::document::Source;
use super::error::{ErrorKind, UnitError};
use super::format::Unit;
use super::name::UnitName;

pub use berth_layout::paths::{ETC_UNIT_DIR, IMAGE_UNIT_DIR};
/// The directories [`load_system`] reads, in order.
pub const UNIT_DIRS: [&str; 2] = [IMAGE_UNIT_DIR, ETC_UNIT_DIR];

/// A unit file larger than this is refused rather than read into PID1.
pub const MAX_UNIT_FILE: u64 = 1 << 20;

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The units that parsed, by name.
    pub units: BTreeMap<UnitName, Unit>,
    /// Masked units and the empty file that masks each.
    pub masked: BTreeMap<UnitName, PathBuf>,
    /// Units whose winning file could not be read or parsed (see `errors`).
    pub invalid: BTreeSet<UnitName>,
    /// Every problem, sorted by file.
    pub errors: Vec<UnitError>,
}

/// Load the system's units: [`UNIT_DIRS`] in order.
pub fn load_system() -> Loaded {
    load(&UNIT_DIRS.map(Path::new))
}

/// Load the units of `dirs`, later directories overriding earlier ones. A
/// directory that does not exist is skipped silently.
pub fn load(dirs: &[&Path]) -> Loaded {
    let mut loaded = Loaded::default();
    // name -> winning file
    let mut winners: BTreeMap<UnitName, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                loaded.errors.push(file_error(dir, ErrorKind::Io(e.to_string())));
                continue;
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => files.push(entry.path()),
                Err(e) => loaded.errors.push(file_error(dir, ErrorKind::Io(e.to_string()))),
            }
        }
        files.sort();
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = file_name.strip_suffix(".toml") else { continue };
            if file_name.starts_with('.') {
                continue;
            }
            // `NAME.toml.d` and other directories are not unit files.
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            match UnitName::new(stem) {
                Ok(name) => {
                    winners.insert(name, path);
                }
                Err(e) => loaded.errors.push(file_error(&path, ErrorKind::BadFileName(e))),
            }
        }
    }
    for (name, path) in winners {
        match read(&path) {
            Err(kind) => {
                loaded.errors.push(file_error(&path, kind));
                loaded.invalid.insert(name);
            }
            Ok(text) if text.is_empty() => {
                loaded.masked.insert(name, path);
            }
            Ok(text) => match parse_unit(&name, &path, &text) {
                Ok(unit) => {
                    loaded.units.insert(name, unit);
                }
                Err(errors) => {
                    loaded.errors.extend(errors);
                    loaded.invalid.insert(name);
                }
            },
        }
    }
    loaded.errors.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
    loaded
}

/// The text of the unit file `path`, empty for a mask.
///
/// PID1 calls this at every boot, so no file put in a unit directory may
/// hang it or exhaust its memory: only a regular file is read, and at most
/// [`MAX_UNIT_FILE`] bytes of it; `/dev/null` (what a symlink mask points
/// to) reads as empty; anything else (a FIFO, a socket, another device, a
/// directory) is an error, found before it is opened (opening a FIFO blocks,
/// opening some devices does something) and again on the open descriptor.
fn read(path: &Path) -> Result<String, ErrorKind> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let io = |e: std::io::Error| ErrorKind::Io(e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    if is_dev_null(&meta) {
        return Ok(String::new());
    }
    check_regular(&meta)?;
    // O_NONBLOCK: should the file have been replaced by a FIFO since the
    // check, opening it does not wait for a writer. O_NOCTTY: nor does a
    // terminal become PID1's. Neither means anything for a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_regular(&meta)?;
    if meta.len() > MAX_UNIT_FILE {
        return Err(ErrorKind::TooLarge { size: meta.len(), limit: MAX_UNIT_FILE });
    }
    // The size can change while the file is read: never more than one byte
    // over the limit, which is enough to tell it is too large.
    let mut bytes = Vec::new();
    file.take(MAX_UNIT_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    let read = bytes.len() as u64;
    if read > MAX_UNIT_FILE {
        return Err(ErrorKind::TooLarge { size: read.max(meta.len()), limit: MAX_UNIT_FILE });
    }
    String::from_utf8(bytes).map_err(|e| ErrorKind::Io(format!("not UTF-8 text ({e})")))
}

/// The character device 1:3, `/dev/null`: a symlink to it masks a unit.
fn is_dev_null(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3)
}

/// `Ok` for a regular file; otherwise an error saying what it is.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), ErrorKind> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "an unknown kind of file"
    };
    Err(ErrorKind::Io(format!("not a regular file ({what})")))
}

fn file_error(path: &Path, kind: ErrorKind) -> UnitError {
    Source::new(path, "").error_file(kind)
}
