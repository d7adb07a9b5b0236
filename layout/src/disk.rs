//! The disk layout of DESIGN.md: four GPT partitions with the Discoverable
//! Partitions Specification type GUIDs.

use crate::guid::Guid;

pub const SECTOR: u64 = 512;
/// The logical sector of "4Kn" disks (4096 bytes native, no 512-byte
/// emulation), for which the image is also built: the same partitions at
/// the same byte offsets, in a GPT counted in these sectors.
pub const SECTOR_4KN: u64 = 4096;
pub const MIB: u64 = 1024 * 1024;
/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = MIB;

pub const ESP_TYPE: Guid = Guid::from_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// DPS "Root Partition (x86-64)".
pub const ROOT_X86_64_TYPE: Guid = Guid::from_const("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
/// DPS "Variable Data Partition" (/var).
pub const DATA_TYPE: Guid = Guid::from_const("4D21B016-B534-45C2-A9FB-5C16E091FD2D");

/// A GPT attribute bit of the data partition: set (and synced) by PID1
/// right before it formats the partition, cleared once mke2fs has finished.
/// Found set at boot, it says the partition holds Berth's own unfinished
/// format, never mounted and so holding nothing of anyone's: it is
/// formatted again. Bits 48-63 are type-specific; the Discoverable
/// Partitions Specification uses 59, 60 and 63 for this type, so 55 is
/// free (Bottlerocket keeps its A/B state in such bits the same way).
pub const DATA_FORMATTING_ATTR: u64 = 1 << 55;

/// An A/B root slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => ROOT_A_LABEL,
            Slot::B => ROOT_B_LABEL,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

pub const ESP_LABEL: &str = "esp";
pub const ROOT_A_LABEL: &str = "root-a";
pub const ROOT_B_LABEL: &str = "root-b";
pub const DATA_LABEL: &str = "data";

#[derive(Clone, Copy, Debug)]
pub struct PartitionSpec {
    pub label: &'static str,
    pub type_guid: Guid,
    pub size: u64,
}

/// The ESP holds systemd-boot and one kernel per slot.
pub const ESP_SIZE: u64 = 64 * MIB;
/// Each root slot holds an EROFS image and its dm-verity hash tree.
pub const ROOT_SIZE: u64 = 512 * MIB;
/// Small on purpose: PID1 grows it to the end of the disk at first boot.
pub const DATA_SIZE: u64 = 32 * MIB;

pub const PARTITIONS: [PartitionSpec; 4] = [
    PartitionSpec { label: ESP_LABEL, type_guid: ESP_TYPE, size: ESP_SIZE },
    PartitionSpec { label: ROOT_A_LABEL, type_guid: ROOT_X86_64_TYPE, size: ROOT_SIZE },
    PartitionSpec { label: ROOT_B_LABEL, type_guid: ROOT_X86_64_TYPE, size: ROOT_SIZE },
    PartitionSpec { label: DATA_LABEL, type_guid: DATA_TYPE, size: DATA_SIZE },
];

/// The partition's unique GUID (PARTUUID) for an image of `version`:
/// derived, so builds are reproducible and the kernel command line can name
/// the root partition before the disk exists.
pub fn partition_uuid(version: &str, label: &str) -> Guid {
    Guid::derive(&format!("{version}/partition/{label}"))
}

/// The PARTUUID of a root slot holding the image whose dm-verity root hash
/// is `root_hash` (lowercase hex): the partition is named by what it holds,
/// as systemd names a verity partition by its root hash (the Discoverable
/// Partitions Specification), and by the slot, so that the two slots never
/// share a PARTUUID.
///
/// This is what makes a signed UKI possible for an update: its command line
/// (`dm-mod.create=... PARTUUID=<this>`) is fixed when the bundle is built,
/// whatever disk it is installed on; the updater gives the slot's partition
/// this GUID before it writes the slot's boot entry.
pub fn root_partition_uuid(root_hash: &str, slot: Slot) -> Guid {
    Guid::derive(&format!("root/{}/{root_hash}", slot.name()))
}

pub fn disk_guid(version: &str) -> Guid {
    Guid::derive(&format!("{version}/disk"))
}

/// Byte offsets of each partition in a fresh image: `(spec, start, end)`.
pub fn plan() -> Vec<(PartitionSpec, u64, u64)> {
    let mut at = ALIGN;
    PARTITIONS
        .iter()
        .map(|p| {
            let start = at;
            at += p.size;
            (*p, start, at)
        })
        .collect()
}

/// Size of a fresh image: the partitions plus room for the backup GPT.
pub fn image_size() -> u64 {
    plan().last().map(|(_, _, end)| end + ALIGN).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_partuuid_names_the_contents_and_the_slot() {
        let a = root_partition_uuid("ab12", Slot::A);
        assert_eq!(a, root_partition_uuid("ab12", Slot::A), "derived, so the build and the updater agree");
        assert_ne!(a, root_partition_uuid("ab12", Slot::B), "the same image in both slots: two PARTUUIDs");
        assert_ne!(a, root_partition_uuid("ab13", Slot::A));
    }

    #[test]
    fn slots_have_equal_size_and_partitions_are_aligned() {
        assert_eq!(PARTITIONS[1].size, PARTITIONS[2].size);
        for (p, start, end) in plan() {
            assert_eq!(start % ALIGN, 0, "{}", p.label);
            assert_eq!((end - start) % SECTOR, 0);
        }
    }

    #[test]
    fn the_layout_is_whole_4kn_sectors() {
        // The 4Kn disk has its partitions at the same byte offsets: every
        // boundary and the disk's size must be whole 4096-byte sectors.
        for (p, start, end) in plan() {
            assert_eq!((start % SECTOR_4KN, end % SECTOR_4KN), (0, 0), "{}", p.label);
        }
        assert_eq!(image_size() % SECTOR_4KN, 0);
    }

    #[test]
    fn partuuids_differ_per_label_and_version() {
        assert_ne!(partition_uuid("1", ROOT_A_LABEL), partition_uuid("1", ROOT_B_LABEL));
        assert_ne!(partition_uuid("1", ROOT_A_LABEL), partition_uuid("2", ROOT_A_LABEL));
    }
}
