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

/// The text of the unit file `path`, empty for a mask. PID1 calls this at
/// every boot, so it goes through [`berth_layout::regular_file::read`]: a
/// FIFO or a device put in a unit directory is an error, not a hang.
fn read(path: &Path) -> Result<String, ErrorKind> {
    use berth_layout::regular_file::{self, ReadError};
    let bytes = regular_file::read(path, MAX_UNIT_FILE).map_err(|e| match e {
        ReadError::TooLarge { size, limit } => ErrorKind::TooLarge { size, limit },
        other => ErrorKind::Io(other.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|e| ErrorKind::Io(format!("not UTF-8 text ({e})")))
}

fn file_error(path: &Path, kind: ErrorKind) -> UnitError {
    Source::new(path, "").error_file(kind)
}
