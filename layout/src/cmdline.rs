//! The kernel command line of a slot: dm-verity set up by the kernel itself
//! (`dm-mod.create=`, CONFIG_DM_INIT), no initramfs.

use crate::disk::Slot;
use crate::guid::Guid;

/// What veritysetup produced for one root image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verity {
    /// Number of 4 KiB data blocks (the EROFS image, padded).
    pub data_blocks: u64,
    /// Block of the first hash block: one past the data and veritysetup's superblock.
    pub hash_start_block: u64,
    pub root_hash: String,
    pub salt: String,
}

pub const VERITY_BLOCK: u64 = 4096;

/// The full command line for booting `slot` from the partition `partuuid`.
pub fn kernel_cmdline(slot: Slot, partuuid: Guid, v: &Verity) -> String {
    let sectors = v.data_blocks * (VERITY_BLOCK / 512);
    let dm = format!(
        "root,,,ro,0 {sectors} verity 1 PARTUUID={partuuid} PARTUUID={partuuid} {VERITY_BLOCK} {VERITY_BLOCK} {} {} sha256 {} {} 1 restart_on_corruption",
        v.data_blocks, v.hash_start_block, v.root_hash, v.salt
    );
    format!(
        "console=ttyS0,115200 loglevel=4 dm-mod.create=\"{dm}\" dm-mod.waitfor=PARTUUID={partuuid} root=/dev/dm-0 rootfstype=erofs ro rootwait panic=10 berth.slot={}",
        slot.name()
    )
}

/// The slot named on a command line (`berth.slot=a`), as PID1 reads /proc/cmdline.
pub fn slot_of(cmdline: &str) -> Option<Slot> {
    cmdline.split_whitespace().find_map(|w| match w {
        "berth.slot=a" => Some(Slot::A),
        "berth.slot=b" => Some(Slot::B),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_sets_up_verity_root_and_names_slot() {
        let v = Verity { data_blocks: 100, hash_start_block: 101, root_hash: "ab".into(), salt: "cd".into() };
        let p = Guid::derive("p");
        let c = kernel_cmdline(Slot::B, p, &v);
        assert!(c.contains(&format!("0 800 verity 1 PARTUUID={p} PARTUUID={p} 4096 4096 100 101 sha256 ab cd")), "{c}");
        assert!(c.contains("root=/dev/dm-0"));
        assert_eq!(slot_of(&c), Some(Slot::B));
        assert_eq!(slot_of("quiet"), None);
    }
}
