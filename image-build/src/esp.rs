//! The EFI system partition: systemd-boot, `loader.conf`, one Boot Loader
//! Specification entry and kernel per slot.

use std::path::Path;
use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// A file to put on the ESP.
pub struct EspFile<'a> {
    pub source: &'a Path,
    /// Path on the ESP, e.g. `/EFI/BOOT/BOOTX64.EFI`.
    pub dest: String,
}

/// Creates a FAT32 image of `size` bytes at `out` holding `files`.
/// Timestamps come from `epoch` (mtools honours SOURCE_DATE_EPOCH) and the
/// volume ID is fixed, so the image is reproducible.
pub fn build(out: &Path, size: u64, volume_id: u32, epoch: u64, files: &[EspFile]) -> Result<(), EspError> {
    let _ = std::fs::remove_file(out);
    std::fs::File::create(out).and_then(|f| f.set_len(size)).map_err(io_at(out))?;
    cmd::run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP", "--invariant", "-i"])
            .arg(format!("{volume_id:08x}"))
            .arg(out),
    )?;
    let mtools = |c: &str| {
        let mut command = Command::new(c);
        command.env("SOURCE_DATE_EPOCH", epoch.to_string()).env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(out);
        command
    };
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let mut at = String::new();
        let parent = Path::new(&f.dest).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            at = format!("{at}/{part}");
            if !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
    }
    for d in &dirs {
        cmd::run(mtools("mmd").arg(format!("::{d}")))?;
    }
    for f in files {
        cmd::run(mtools("mcopy").arg(f.source).arg(format!("::{}", f.dest)))?;
    }
    Ok(())
}

/// Bytes in use on the FAT image, from mtools' `minfo`-free view: the sum of file sizes.
pub fn used(files: &[EspFile]) -> u64 {
    files.iter().filter_map(|f| std::fs::metadata(f.source).ok()).map(|m| m.len()).sum()
}
