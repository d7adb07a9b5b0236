//! The disk side of an install, behind one trait (the way youki puts its
//! system calls behind traits): [`crate::system::RealTarget`] makes the
//! system calls, [`super::FakeTarget`] keeps files in a temporary
//! directory and can be told to fail at a step.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use berth_layout::disk::Slot;
use berth_layout::Guid;

/// What a [`Target`] operation failed at; each names the device or file
/// and, for partition I/O, the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A system call on a device or file failed.
    #[error("{op} {path}{at}: {source}", at = offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Io { op: &'static str, path: PathBuf, offset: Option<u64>, source: io::Error },
    /// Reading the bytes to write failed (the bundle stream: a network
    /// error, or a payload whose sha256 did not match at its end).
    #[error("reading the data for {path}: {source}")]
    Source { path: String, source: io::Error },
    /// A write to the booted slot's partition: never done.
    #[error("slot {slot} is the booted slot: its partition is never written")]
    BootedSlot { slot: &'static str },
    /// A partition read or write outside the partition.
    #[error("{path}: {len} bytes at offset {offset} lie outside its {size} bytes")]
    OutOfRange { path: PathBuf, offset: u64, len: u64, size: u64 },
    /// A path on the ESP that is not a plain relative path.
    #[error("{0:?} is not a path inside the ESP")]
    BadPath(String),
    /// Something the target needs was not found (a partition, the ESP).
    #[error("{0}")]
    NotFound(String),
}

impl TargetError {
    /// An I/O error of `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, offset: Option<u64>, source: io::Error) -> TargetError {
        TargetError::Io { op, path: path.into(), offset, source }
    }
}

/// The disk an install writes: the root partitions of the two slots, the
/// ESP, and what the firmware and the kernel say about this boot.
///
/// ESP paths are relative to the ESP's root, `/`-separated, with or without
/// a leading `/` (`loader/entries/berth-0.2.0+3.conf`, `/berth/b/linux.efi`);
/// `..` is refused ([`TargetError::BadPath`]).
pub trait Target {
    /// The kernel command line this system booted with (`/proc/cmdline`).
    fn cmdline(&mut self) -> Result<String, TargetError>;
    /// The unique GUID (PARTUUID) of `slot`'s root partition.
    fn partuuid(&mut self, slot: Slot) -> Result<Guid, TargetError>;
    /// Gives `slot`'s root partition the unique GUID `guid` in the disk's
    /// partition table (backup table first, then the primary, then
    /// fsync), so that the next boot's kernel finds it by `PARTUUID=guid`.
    /// Refused for the booted slot ([`TargetError::BootedSlot`]) and for a
    /// GUID the booted root has.
    fn set_partuuid(&mut self, slot: Slot, guid: Guid) -> Result<(), TargetError>;
    /// Size of `slot`'s root partition in bytes.
    fn partition_size(&mut self, slot: Slot) -> Result<u64, TargetError>;
    /// Writes `data` at byte `offset` of `slot`'s root partition. Refused
    /// for the booted slot ([`TargetError::BootedSlot`]) and outside the
    /// partition ([`TargetError::OutOfRange`]).
    fn write_partition(&mut self, slot: Slot, offset: u64, data: &[u8]) -> Result<(), TargetError>;
    /// Makes the writes to `slot`'s partition durable (fsync) and drops
    /// them from the page cache, so [`Target::read_partition`] reads the medium.
    fn sync_partition(&mut self, slot: Slot) -> Result<(), TargetError>;
    /// Reads exactly `buf.len()` bytes at byte `offset` of `slot`'s partition.
    fn read_partition(&mut self, slot: Slot, offset: u64, buf: &mut [u8]) -> Result<(), TargetError>;
    /// The Boot Loader Specification entries: the `*.conf` files in
    /// `/loader/entries` on the ESP, with their contents.
    fn entries(&mut self) -> Result<Vec<(String, String)>, TargetError>;
    /// The bytes of an EFI variable of systemd-boot's vendor GUID
    /// (`LoaderBootCountPath`, `LoaderEntrySelected`), as efivarfs gives
    /// them (4 attribute bytes first); `None` when it is not set.
    fn efi_var(&mut self, name: &str) -> Result<Option<Vec<u8>>, TargetError>;
    /// Whether a file exists on the ESP.
    fn esp_exists(&mut self, path: &str) -> Result<bool, TargetError>;
    /// Writes everything `data` gives to `path` on the ESP (created or
    /// truncated; missing directories created) and fsyncs it; returns the
    /// byte count. An error of `data` is [`TargetError::Source`].
    fn esp_write(&mut self, path: &str, data: &mut dyn Read) -> Result<u64, TargetError>;
    /// Renames a file on the ESP (replacing `to`), then fsyncs the directory.
    fn esp_rename(&mut self, from: &str, to: &str) -> Result<(), TargetError>;
    /// Removes a file from the ESP if it exists, then fsyncs the directory.
    fn esp_remove(&mut self, path: &str) -> Result<(), TargetError>;
    /// Syncs the whole ESP file system (syncfs).
    fn esp_sync(&mut self) -> Result<(), TargetError>;
    /// The caller is done changing the ESP for now: the real target syncs
    /// and unmounts it (it mounts it again on the next ESP operation).
    fn esp_release(&mut self) -> Result<(), TargetError> {
        Ok(())
    }
}

/// Checks an ESP path and returns its components.
pub fn esp_components(path: &str) -> Result<Vec<&str>, TargetError> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0')) {
        return Err(TargetError::BadPath(path.to_string()));
    }
    Ok(parts)
}

/// Copies `data` to `out` in chunks, returning the byte count; an error of
/// `data` is [`TargetError::Source`], one of `out` is [`TargetError::Io`].
pub fn copy_to(
    data: &mut dyn Read,
    out: &mut dyn io::Write,
    what: &str,
    path: &std::path::Path,
) -> Result<u64, TargetError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(TargetError::Source { path: what.to_string(), source }),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk).map_err(|e| TargetError::io("writing", path, Some(done), e))?;
        done += n as u64;
    }
}

/// The Boot Loader Specification entries in `dir` (the ESP's
/// `/loader/entries`): every regular `*.conf` file's name and text, sorted
/// by name; none when the directory does not exist.
pub fn read_entries(dir: &Path) -> Result<Vec<(String, String)>, TargetError> {
    let io = |e| TargetError::io("reading", dir, None, e);
    let mut out = Vec::new();
    let list = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(e)),
    };
    for e in list {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".conf") && e.file_type().map_err(io)?.is_file() {
            out.push((name, fs::read_to_string(e.path()).map_err(io)?));
        }
    }
    out.sort();
    Ok(out)
}
