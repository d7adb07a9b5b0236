//! A NoCloud seed as cloud-init defines it: a vfat or iso9660 volume
//! labelled `CIDATA` (or `cidata`) holding `user-data`, `meta-data` and
//! optionally `network-config`.
//!
//! The volume is found by reading the superblock of every block device in
//! `/sys/class/block` (whole disks and partitions): a FAT boot sector's
//! volume label (FAT12/16 at byte 43, FAT32 at byte 71), or the ISO 9660
//! primary volume descriptor's volume identifier (sector 16, byte 40).
//! That is what blkid reads too, with no tool to start. The seed is
//! mounted read-only at [`SEED_MOUNT`], read and unmounted.

use std::path::{Path, PathBuf};

use super::system::System;
use super::{Found, Kind, MAX_DOCUMENT};

/// The block devices the kernel knows.
pub const SYS_BLOCK: &str = "/sys/class/block";
/// Where their nodes are (devtmpfs).
pub const DEV: &str = "/dev";
/// Where the seed is mounted while it is read.
pub const SEED_MOUNT: &str = "/run/berth/seed";
/// The files of a seed, as cloud-init names them.
pub const USER_DATA: &str = "user-data";
pub const META_DATA: &str = "meta-data";
pub const NETWORK_CONFIG: &str = "network-config";

/// A file system the probe can mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Vfat,
    Iso9660,
}

impl FsType {
    /// The name mount(2) takes.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
        }
    }
}

/// A labelled volume found on a block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// `/dev/vdb`
    pub device: PathBuf,
    pub fstype: FsType,
    /// The label as written (trailing blanks removed).
    pub label: String,
}

/// Whether a label names a NoCloud seed: `CIDATA` or `cidata`, as
/// cloud-init looks for both.
pub fn is_seed_label(label: &str) -> bool {
    label == "CIDATA" || label == "cidata"
}

/// The volume label of a FAT boot sector (its first 512 bytes), `None`
/// when the sector is not a FAT boot sector or has no label.
pub fn vfat_label(sector: &[u8]) -> Option<String> {
    if sector.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([*sector.get(11)?, *sector.get(12)?]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return None;
    }
    // FAT32 has no 16-bit sectors-per-FAT; its extended BPB sits 28 bytes later.
    let fat32 = sector.get(22..24)? == [0, 0];
    let (signature, label, fs_type) = if fat32 { (66, 71..82, 82..87) } else { (38, 43..54, 54..57) };
    if !matches!(sector.get(signature)?, 0x28 | 0x29) || !sector.get(fs_type)?.starts_with(b"FAT") {
        return None;
    }
    let label = String::from_utf8_lossy(sector.get(label)?).trim_end_matches([' ', '\0']).to_string();
    (!label.is_empty() && label != "NO NAME").then_some(label)
}

/// Where the ISO 9660 primary volume descriptor starts (sector 16 of 2048 bytes).
pub const ISO_PVD_OFFSET: u64 = 16 * 2048;

/// The volume identifier of an ISO 9660 primary volume descriptor (the
/// 2048 bytes at [`ISO_PVD_OFFSET`]), `None` when it is not one.
pub fn iso9660_label(pvd: &[u8]) -> Option<String> {
    if pvd.first() != Some(&1) || pvd.get(1..6)? != b"CD001" {
        return None;
    }
    let label = String::from_utf8_lossy(pvd.get(40..72)?).trim_end_matches([' ', '\0']).to_string();
    (!label.is_empty()).then_some(label)
}

/// The labelled volume on `device`, if it holds vfat or iso9660.
pub fn volume(sys: &dyn System, device: &Path) -> Option<Volume> {
    let found = |fstype, label| Some(Volume { device: device.to_path_buf(), fstype, label });
    if let Some(label) = sys.read_at(device, 0, 512).ok().as_deref().and_then(vfat_label) {
        return found(FsType::Vfat, label);
    }
    if let Some(label) = sys.read_at(device, ISO_PVD_OFFSET, 2048).ok().as_deref().and_then(iso9660_label) {
        return found(FsType::Iso9660, label);
    }
    None
}

/// The size (512-byte sectors) the kernel's sr driver gives a CD-ROM drive
/// whose capacity it could not read: no disc (`drivers/scsi/sr.c` sets
/// `capacity = 0x1fffff`). A real disc has 2048-byte sectors, so its size
/// is a multiple of 4 and never this.
pub const SR_NO_CAPACITY: u64 = 0x1f_ffff;

/// The first block device (in name order) whose label is a seed label;
/// also how many devices were looked at. Devices of size 0 (unused loop
/// devices) and empty CD-ROM drives ([`SR_NO_CAPACITY`]) are skipped
/// without opening them: opening an empty drive costs over 100 ms of
/// retries, and QEMU's q35 machine has one by default.
pub fn find_seed(sys: &dyn System) -> (Option<Volume>, usize) {
    let names = sys.list_dir(Path::new(SYS_BLOCK)).ok().flatten().unwrap_or_default();
    let mut looked = 0;
    for name in names {
        let size = Path::new(SYS_BLOCK).join(&name).join("size");
        let sectors = sys
            .read_file(&size, 64)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok())
            .unwrap_or(0);
        if sectors == 0 || (name.starts_with("sr") && sectors == SR_NO_CAPACITY) {
            continue;
        }
        looked += 1;
        if let Some(v) = volume(sys, &Path::new(DEV).join(&name)) {
            if is_seed_label(&v.label) {
                return (Some(v), looked);
            }
        }
    }
    (None, looked)
}

/// Mounts the seed, reads its files and unmounts it. `Ok(None)` when it
/// holds neither user-data nor meta-data. Errors: the mount failed, a file
/// could not be read (the text names the file).
pub fn read_seed(sys: &mut dyn System, volume: &Volume) -> Result<Option<Found>, String> {
    let target = Path::new(SEED_MOUNT);
    sys.mount_ro(&volume.device, volume.fstype.name(), target)
        .map_err(|e| format!("mount {} ({}) on {SEED_MOUNT}: {e}", volume.device.display(), volume.fstype.name()))?;
    let read = |name: &str| {
        sys.read_file(&target.join(name), MAX_DOCUMENT).map_err(|e| format!("{}:{name}: {e}", volume.device.display()))
    };
    let files = (|| Ok::<_, String>((read(USER_DATA)?, read(META_DATA)?, read(NETWORK_CONFIG)?)))();
    let unmounted = sys.unmount(target).map_err(|e| format!("unmount {SEED_MOUNT}: {e}"));
    let (user_data, meta_data, network_config) = files?;
    unmounted?;
    if user_data.is_none() && meta_data.is_none() {
        return Ok(None);
    }
    Ok(Some(Found {
        kind: Kind::NoCloud,
        origin: format!("nocloud:{}:{USER_DATA}", volume.device.display()),
        user_data,
        meta_data,
        network_config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat16_and_fat32_labels() {
        assert_eq!(vfat_label(&crate::sources::tests::fat16("CIDATA")).as_deref(), Some("CIDATA"));
        assert_eq!(vfat_label(&crate::sources::tests::fat16("NO NAME")), None);
        let mut s = vec![0u8; 512];
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[66] = 0x29;
        s[71..82].copy_from_slice(b"cidata     ");
        s[82..90].copy_from_slice(b"FAT32   ");
        s[510] = 0x55;
        s[511] = 0xAA;
        assert_eq!(vfat_label(&s).as_deref(), Some("cidata"));
    }

    #[test]
    fn not_fat() {
        assert_eq!(vfat_label(&[]), None);
        assert_eq!(vfat_label(&[0u8; 512]), None);
        // An MBR: the signature, but no BPB.
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(vfat_label(&mbr), None);
    }

    #[test]
    fn iso_labels() {
        let mut pvd = vec![b' '; 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..46].copy_from_slice(b"cidata");
        assert_eq!(iso9660_label(&pvd).as_deref(), Some("cidata"));
        pvd[1] = b'X';
        assert_eq!(iso9660_label(&pvd), None);
        assert_eq!(iso9660_label(&pvd[..10]), None);
    }

    #[test]
    fn seed_labels() {
        assert!(is_seed_label("CIDATA"));
        assert!(is_seed_label("cidata"));
        assert!(!is_seed_label("CiData"));
        assert!(!is_seed_label("ESP"));
    }
}
