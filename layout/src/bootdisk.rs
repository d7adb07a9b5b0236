//! Which disk is the boot disk: the pure parts shared by PID1 (which grows
//! and formats the data partition on it) and berth-updater (which writes
//! the other root slot and the ESP on it).
//!
//! Stage 0 set the root up from `PARTUUID=` on the kernel command line
//! (`dm-mod.create=`'s table, or `root=PARTUUID=` for a root without
//! dm-verity), so the disk whose GPT has a root partition with one of those
//! unique GUIDs is the boot disk. Scanning the machine's disks is the
//! caller's (each has its own way to open a device).

use std::io::{Read, Seek, SeekFrom};

use crate::disk::ROOT_X86_64_TYPE;
use crate::gpt::Gpt;
use crate::guid::Guid;

/// Kernel block device name prefixes that are never the boot disk, and
/// some of which are slow or odd to open (floppies, optical drives, the
/// verity device itself).
pub const NOT_DISKS: [&str; 5] = ["dm-", "ram", "zram", "sr", "fd"];

/// Smallest disk worth reading a GPT from: the two tables alone take 67
/// sectors.
pub const MIN_DISK_BYTES: u64 = 1024 * 1024;
/// Largest partition entry array read, in bytes. A header that claims more
/// is corrupt or hostile, and reading it would mean a huge allocation,
/// which aborts rather than fails.
pub const MAX_ENTRY_ARRAY: u64 = 1024 * 1024;

/// The partition a `PARTUUID=<uuid>` device spec names (the kernel's
/// syntax for `root=` and dm tables), or `None` when `spec` is not one: any
/// other text, a malformed GUID, or a suffix such as `/PARTNROFF=<n>`.
pub fn parse_partuuid(spec: &str) -> Option<Guid> {
    spec.strip_prefix("PARTUUID=")?.parse().ok()
}

/// The GUIDs named `PARTUUID=<uuid>` on a kernel command line, in order,
/// once each: the words of `dm-mod.create=`'s tables and the values of
/// parameters (`root=PARTUUID=<uuid>`, `dm-mod.waitfor=PARTUUID=<uuid>`).
/// A word counts only when the rest of it is the GUID: the kernel's
/// `PARTUUID=<uuid>/PARTNROFF=<n>` names another partition than `<uuid>`'s,
/// which stage 0 refuses too.
pub fn partuuids(cmdline: &str) -> Vec<Guid> {
    let mut out: Vec<Guid> = Vec::new();
    for g in cmdline
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .filter_map(|w| parse_partuuid(w).or_else(|| parse_partuuid(w.split_once('=')?.1)))
    {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// Whether a GPT header sector, if it is one, describes an entry array this
/// process can afford to read (at most [`MAX_ENTRY_ARRAY`] bytes).
pub fn header_is_sane(h: &[u8]) -> bool {
    if h.get(..8) != Some(b"EFI PART".as_slice()) {
        return true;
    }
    let le32 = |o: usize| h.get(o..o + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match (le32(80), le32(84)) {
        (Some(count), Some(size)) => u64::from(count) * u64::from(size) <= MAX_ENTRY_ARRAY,
        _ => false,
    }
}

fn read_sector<R: Read + Seek>(disk: &mut R, lba: u64, ss: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(ss).unwrap_or(512)];
    disk.seek(SeekFrom::Start(lba * ss))?;
    disk.read_exact(&mut buf)?;
    Ok(buf)
}

/// Reads and validates the GPT of a disk of `size` bytes in sectors of
/// `ss` bytes. Guards the cases [`Gpt::read`] does not: tiny disks, sector
/// sizes other than 512 and 4096, oversized entry arrays. The error says
/// what was wrong, for a list of the disks scanned.
pub fn read_table<R: Read + Seek>(disk: &mut R, ss: u64, size: u64) -> Result<Gpt, String> {
    if !matches!(ss, 512 | 4096) {
        return Err(format!("sector size {ss} is not 512 or 4096"));
    }
    if size < MIN_DISK_BYTES {
        return Err(format!("{size} bytes is too small for a GPT"));
    }
    for lba in [1, size / ss - 1] {
        let h = read_sector(disk, lba, ss).map_err(|e| e.to_string())?;
        if !header_is_sane(&h) {
            return Err(format!("GPT header at LBA {lba} has an oversized entry array"));
        }
    }
    let gpt = Gpt::read(disk, ss, size).map_err(|e| e.to_string())?;
    gpt.validate().map_err(|e| e.to_string())?;
    Ok(gpt)
}

/// Whether `gpt` holds a root partition with one of `wanted` as its GUID.
pub fn holds_root(gpt: &Gpt, wanted: &[Guid]) -> bool {
    gpt.by_type(ROOT_X86_64_TYPE).any(|p| wanted.contains(&p.unique_guid))
}

/// Of several disks that each hold the booted root PARTUUID (copies of one
/// image), the one the system booted from: the index into `candidates` of
/// the only disk with a root partition the root's device-mapper device sits
/// on. `candidates` holds, per disk, the kernel names of its partitions
/// with a `wanted` GUID (`vda2`, `nvme0n1p2`); `dm_slaves` the names listed
/// in `/sys/class/block/dm-*/slaves`. `None` when no disk or more than one
/// qualifies: the caller must not guess.
pub fn booted_copy(candidates: &[Vec<String>], dm_slaves: &[String]) -> Option<usize> {
    let mut under = candidates.iter().enumerate().filter(|(_, parts)| parts.iter().any(|p| dm_slaves.contains(p)));
    match (under.next(), under.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::partition_uuid;

    #[test]
    fn the_booted_copy_is_the_only_disk_under_the_verity_device() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let copies = [v(&["vda2"]), v(&["sda2"])];
        assert_eq!(booted_copy(&copies, &v(&["sda2"])), Some(1));
        assert_eq!(booted_copy(&copies, &v(&["vda2"])), Some(0));
        assert_eq!(booted_copy(&copies, &v(&[])), None, "no verity device yet: no guess");
        assert_eq!(booted_copy(&copies, &v(&["vda2", "sda2"])), None, "both: no guess");
        assert_eq!(booted_copy(&copies, &v(&["nvme0n1p2"])), None);
    }

    #[test]
    fn finds_partuuids_in_dm_mod_create() {
        let g = partition_uuid("0.1.0", "root-a");
        let cmdline = format!(
            "console=ttyS0 dm-mod.create=\"root,,,ro,0 800 verity 1 PARTUUID={g} PARTUUID={g} 4096\" dm-mod.waitfor=PARTUUID={g} root=/dev/dm-0"
        );
        assert_eq!(partuuids(&cmdline), vec![g]);
        assert!(partuuids("root=/dev/vda2 PARTUUID=nonsense").is_empty());
    }

    #[test]
    fn finds_partuuids_given_as_parameter_values() {
        // A verity-less boot names the root by PARTUUID: PID1 and the
        // updater find its disk from it as from a dm-mod.create table.
        let (a, b) = (partition_uuid("0.1.0", "root-a"), partition_uuid("0.1.0", "root-b"));
        assert_eq!(partuuids(&format!("root=PARTUUID={a} ro")), vec![a]);
        assert_eq!(partuuids(&format!("dm-mod.waitfor=PARTUUID={b},PARTUUID={a}")), vec![b, a]);
        // Not a reference to the partition of that GUID.
        assert!(partuuids(&format!("root=PARTUUID={a}/PARTNROFF=1")).is_empty());
        assert!(partuuids(&format!("berth.note=XPARTUUID={a}")).is_empty());
    }

    #[test]
    fn a_header_claiming_a_huge_entry_array_is_refused() {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[80..84].copy_from_slice(&1024u32.to_le_bytes());
        h[84..88].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!header_is_sane(&h));
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        assert!(header_is_sane(&h));
    }

    #[test]
    fn odd_sector_sizes_and_tiny_disks_are_refused() {
        let mut c = std::io::Cursor::new(vec![0u8; 4 << 20]);
        assert!(read_table(&mut c, 1024, 4 << 20).unwrap_err().contains("sector size"));
        assert!(read_table(&mut c, 512, 4096).unwrap_err().contains("too small"));
        assert!(read_table(&mut c, 512, 4 << 20).unwrap_err().contains("no valid GPT"));
    }
}
