//! Which disk holds the running root, and where its data partition is.
//!
//! Stage 0 set the root up from `PARTUUID=` on the kernel command line
//! (`dm-mod.create=`), so the disk whose GPT has a root partition with one of
//! those unique GUIDs is the boot disk; when several have one (copies of one
//! image), the one whose partition the verity device sits on. Other disks
//! are never touched.

use std::path::{Path, PathBuf};

use berth_layout::disk::{DATA_LABEL, DATA_TYPE};
use berth_layout::gpt::{Gpt, Partition};
use berth_layout::Guid;

use super::system::{Disk, System};

pub const SYS_BLOCK: &str = "/sys/class/block";
pub const CMDLINE: &str = "/proc/cmdline";

use berth_layout::bootdisk::{booted_copy, NOT_DISKS};
pub use berth_layout::bootdisk::{holds_root, partuuids};

/// Why the disk holding the booted root (or a partition device on it) was
/// not found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no PARTUUID= on the kernel command line: cannot tell which disk holds the root")]
    NoPartuuid,
    #[error("no disk has a root partition with PARTUUID {partuuid} (scanned: {scanned})")]
    RootDiskNotFound { partuuid: String, scanned: String },
    #[error("the root partition PARTUUID {partuuid} is on several disks ({disks}), none of them under the root's device-mapper device; refusing to pick one")]
    AmbiguousRoot { partuuid: String, disks: String },
    #[error("{disk}: partition {number} has no entry in /sys/class/block/{disk}")]
    NoPartitionDevice { disk: String, number: usize },
}

/// Reads and validates the GPT of `disk` ([`berth_layout::bootdisk::read_table`]).
pub fn read_table(disk: &mut Box<dyn Disk>) -> Result<Gpt, String> {
    let (ss, size) = (disk.sector_size(), disk.size_bytes());
    berth_layout::bootdisk::read_table(disk, ss, size)
}

/// The data partition of a Berth disk.
pub fn data_partition(gpt: &Gpt) -> Option<&Partition> {
    gpt.by_type(DATA_TYPE).find(|p| p.name == DATA_LABEL)
}

/// The boot disk as found.
#[derive(Debug)]
pub struct RootDisk {
    /// Kernel name: `vda`, `nvme0n1`.
    pub name: String,
    pub device: PathBuf,
    pub gpt: Gpt,
    pub sector_size: u64,
    pub size_bytes: u64,
}

fn text(sys: &dyn System, path: &Path) -> Option<String> {
    sys.read_file(path).ok().map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// A whole disk's partition table, as [`scan_whole_disks`] read it.
#[derive(Debug)]
pub struct DiskTable {
    pub gpt: Gpt,
    /// Logical sector size and whole size, in bytes.
    pub sector_size: u64,
    pub size_bytes: u64,
}

/// A whole disk of /sys/class/block and what reading its GPT gave: the
/// table, or why there is none (it could not be opened, no or a bad GPT).
#[derive(Debug)]
pub struct ScannedDisk {
    /// Kernel name: `vda`, `nvme0n1`.
    pub name: String,
    pub device: PathBuf,
    pub table: Result<DiskTable, String>,
}

/// Every whole disk in /sys/class/block, in its order, with its GPT read:
/// partitions and [`NOT_DISKS`] (device-mapper, RAM, optical and floppy
/// drives, which hold no GPT and may be slow to open) skipped. Errors: the
/// directory cannot be read.
pub fn scan_whole_disks(sys: &mut dyn System) -> Result<Vec<ScannedDisk>, DiscoverError> {
    let names =
        sys.read_dir(Path::new(SYS_BLOCK)).map_err(|source| DiscoverError::Read { path: SYS_BLOCK.into(), source })?;
    let mut disks = Vec::new();
    for name in names {
        let sys_dir = Path::new(SYS_BLOCK).join(&name);
        if NOT_DISKS.iter().any(|p| name.starts_with(p)) || sys.exists(&sys_dir.join("partition")) {
            continue;
        }
        let device = Path::new("/dev").join(&name);
        let table = match sys.open_disk(&device, false) {
            Ok(mut disk) => read_table(&mut disk).map(|gpt| DiskTable {
                gpt,
                sector_size: disk.sector_size(),
                size_bytes: disk.size_bytes(),
            }),
            Err(e) => Err(e.to_string()),
        };
        disks.push(ScannedDisk { name, device, table });
    }
    Ok(disks)
}

/// Scans the whole disks in /sys/class/block for the one holding the root.
pub fn find_root_disk(sys: &mut dyn System) -> Result<RootDisk, DiscoverError> {
    let cmdline =
        sys.read_file(Path::new(CMDLINE)).map_err(|source| DiscoverError::Read { path: CMDLINE.into(), source })?;
    let wanted = partuuids(&String::from_utf8_lossy(&cmdline));
    if wanted.is_empty() {
        return Err(DiscoverError::NoPartuuid);
    }
    let mut found = Vec::new();
    let mut scanned = Vec::new();
    for disk in scan_whole_disks(sys)? {
        let name = disk.name;
        match disk.table {
            Ok(table) if holds_root(&table.gpt, &wanted) => {
                scanned.push(name.clone());
                found.push(RootDisk {
                    name,
                    device: disk.device,
                    gpt: table.gpt,
                    sector_size: table.sector_size,
                    size_bytes: table.size_bytes,
                });
            }
            Ok(_) => scanned.push(format!("{name} (no matching root partition)")),
            Err(e) => scanned.push(format!("{name} ({e})")),
        }
    }
    if found.len() > 1 {
        // The device-mapper device the root is mounted from names the one
        // partition under it: the disk holding that one is the boot disk.
        let candidates: Vec<Vec<String>> = found
            .iter()
            .map(|d| {
                let roots = d.gpt.partitions.iter().filter(|p| wanted.contains(&p.unique_guid));
                roots.filter_map(|p| partition_name(&*sys, &d.name, p.number()).ok()).collect()
            })
            .collect();
        if let Some(booted) = booted_copy(&candidates, &dm_slaves(sys)) {
            return Ok(found.swap_remove(booted));
        }
    }
    let wanted = wanted.iter().map(Guid::to_string).collect::<Vec<_>>().join(", ");
    if found.len() > 1 {
        // Two disks from the same image carry the same derived GUIDs;
        // growing or formatting the wrong one would destroy its data.
        return Err(DiscoverError::AmbiguousRoot {
            partuuid: wanted,
            disks: found.iter().map(|d| d.name.clone()).collect::<Vec<_>>().join(", "),
        });
    }
    found.pop().ok_or_else(|| DiscoverError::RootDiskNotFound {
        partuuid: wanted,
        scanned: if scanned.is_empty() { "no disks".into() } else { scanned.join(", ") },
    })
}

/// The block devices under the device-mapper devices
/// (`/sys/class/block/dm-N/slaves/*`): the verity root's data partition.
/// A root mounted without dm-verity (`root=PARTUUID=`) has none, so two
/// disks holding copies of one image are then ambiguous and refused.
fn dm_slaves(sys: &dyn System) -> Vec<String> {
    let names = sys.read_dir(Path::new(SYS_BLOCK)).unwrap_or_default();
    names
        .iter()
        .filter(|n| n.starts_with("dm-"))
        .flat_map(|n| sys.read_dir(&Path::new(SYS_BLOCK).join(n).join("slaves")).unwrap_or_default())
        .collect()
}

/// The kernel's name for partition `number` of `disk` (`vda4`,
/// `nvme0n1p4`), from the `partition` files in sysfs rather than guessed.
pub fn partition_name(sys: &dyn System, disk: &str, number: usize) -> Result<String, DiscoverError> {
    let dir = Path::new(SYS_BLOCK).join(disk);
    let entries = sys.read_dir(&dir).map_err(|source| DiscoverError::Read { path: dir.clone(), source })?;
    entries
        .into_iter()
        .find(|e| text(sys, &dir.join(e).join("partition")).and_then(|t| t.parse::<usize>().ok()) == Some(number))
        .ok_or_else(|| DiscoverError::NoPartitionDevice { disk: disk.to_string(), number })
}

/// A partition's size as the kernel sees it, in bytes.
pub fn kernel_partition_bytes(sys: &dyn System, name: &str) -> Result<u64, DiscoverError> {
    let path = Path::new(SYS_BLOCK).join(name).join("size");
    let t = text(sys, &path).ok_or_else(|| DiscoverError::Read {
        path: path.clone(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    t.parse::<u64>().map(|sectors| sectors * 512).map_err(|_| DiscoverError::Read {
        path,
        source: std::io::Error::other(format!("{t:?} is not a number of sectors")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::real::RealSystem;
    use berth_layout::disk::{partition_uuid, ESP_TYPE, ROOT_X86_64_TYPE};

    /// A Berth-shaped disk image in a temp file, written with layout's GPT.
    fn image(path: &Path, root_guid: Guid) {
        let mib = 2048;
        let mut gpt = Gpt::new(Guid::derive("disk"), 512, 16 * mib);
        gpt.add("esp", ESP_TYPE, Guid::derive("esp"), mib, 2 * mib - 1).unwrap();
        gpt.add("root-a", ROOT_X86_64_TYPE, root_guid, 2 * mib, 4 * mib - 1).unwrap();
        gpt.add("data", DATA_TYPE, Guid::derive("data"), 4 * mib, 6 * mib - 1).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        f.set_len(16 * mib * 512).unwrap();
        gpt.write(&mut f).unwrap();
    }

    #[test]
    fn recognises_the_boot_disk_in_an_image_file() {
        let dir = std::env::temp_dir().join(format!("berth-discover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = partition_uuid("0.1.0", "root-a");
        image(&dir.join("ours.img"), ours);
        image(&dir.join("other.img"), partition_uuid("9.9.9", "root-a"));
        std::fs::write(dir.join("blank.img"), vec![0u8; 4 << 20]).unwrap();
        let wanted = vec![ours];
        let mut sys = RealSystem::new(crate::power::ShutdownFlag::default());

        let mut disk = sys.open_disk(&dir.join("ours.img"), false).unwrap();
        let gpt = read_table(&mut disk).unwrap();
        assert!(holds_root(&gpt, &wanted));
        let data = data_partition(&gpt).unwrap();
        assert_eq!((data.number(), data.first_lba), (3, 4 * 2048));

        let mut other = sys.open_disk(&dir.join("other.img"), false).unwrap();
        assert!(!holds_root(&read_table(&mut other).unwrap(), &wanted));

        let mut blank = sys.open_disk(&dir.join("blank.img"), false).unwrap();
        let err = read_table(&mut blank).unwrap_err();
        assert!(err.contains("no valid GPT"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
