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

/// Fewest clusters of a FAT32 volume: with fewer, FAT drivers that follow
/// Microsoft's specification (the firmware's among them) take the volume
/// for FAT16, whatever its boot sector says.
const FAT32_MIN_CLUSTERS: u64 = 65525;

/// mkfs.vfat's FAT options for an ESP of `size` bytes in logical sectors of
/// `sector_size` bytes. FAT32 where it fits (at least 65525 clusters of one
/// sector: 32 MiB in 512-byte sectors, 256 MiB in 4096-byte ones, which is
/// why 4Kn Windows installs make a 260 MB ESP). Below that, FAT16 with
/// one-sector clusters, which the firmware reads just as well. The sector
/// size goes in the boot sector (`-S`): a FAT in sectors smaller than the
/// disk's logical sector is refused by Linux and not to be relied on in
/// firmware.
fn fat_args(size: u64, sector_size: u64) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if size / sector_size > FAT32_MIN_CLUSTERS + 1024 {
        a.extend(["-F".into(), "32".into()]);
    } else {
        a.extend(["-F".into(), "16".into(), "-s".into(), "1".into()]);
    }
    if sector_size != 512 {
        a.extend(["-S".into(), sector_size.to_string()]);
    }
    a
}

/// Creates a FAT image of `size` bytes at `out` holding `files`, in logical
/// sectors of `sector_size` bytes (512, or 4096 for the 4Kn disk; see
/// [`fat_args`] for FAT32 or FAT16). Timestamps come from `epoch` (mtools
/// honours SOURCE_DATE_EPOCH) and the volume ID is fixed, so the image is
/// reproducible.
pub fn build(
    out: &Path,
    size: u64,
    sector_size: u64,
    volume_id: u32,
    epoch: u64,
    files: &[EspFile],
) -> Result<(), EspError> {
    let _ = std::fs::remove_file(out);
    std::fs::File::create(out).and_then(|f| f.set_len(size)).map_err(io_at(out))?;
    cmd::run(
        Command::new("mkfs.vfat")
            .args(fat_args(size, sector_size))
            .args(["-n", "ESP", "--invariant", "-i"])
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_layout::disk::{ESP_SIZE, MIB, SECTOR, SECTOR_4KN};

    #[test]
    fn fat32_where_it_has_enough_clusters_else_fat16() {
        assert_eq!(fat_args(ESP_SIZE, SECTOR), ["-F", "32"]);
        assert_eq!(fat_args(ESP_SIZE, SECTOR_4KN), ["-F", "16", "-s", "1", "-S", "4096"]);
        assert_eq!(fat_args(260 * MIB, SECTOR_4KN), ["-F", "32", "-S", "4096"]);
    }

    /// The 4Kn ESP as built: its boot sector says 4096-byte sectors and
    /// FAT16, `fsck.fat` finds it sound, and a file put on it reads back.
    #[test]
    fn a_4kn_esp_has_4096_byte_sectors_and_its_files() {
        let dir = std::env::temp_dir().join(format!("berth-esp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("linux.efi");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &body).unwrap();
        let img = dir.join("esp.img");
        let files = [EspFile { source: &src, dest: "/berth/a/linux.efi".into() }];
        build(&img, ESP_SIZE, SECTOR_4KN, 0x1234_5678, 1_735_689_600, &files).unwrap();
        let boot = std::fs::read(&img).unwrap();
        assert_eq!(u16::from_le_bytes([boot[11], boot[12]]), 4096, "bytes per sector");
        assert_eq!(&boot[54..62], b"FAT16   ");
        cmd::run(Command::new("fsck.fat").arg("-n").arg(&img)).unwrap();
        let back = dir.join("back.efi");
        cmd::run(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&img)
                .arg("::/berth/a/linux.efi")
                .arg(&back),
        )
        .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), body);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
