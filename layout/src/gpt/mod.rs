//! The GUID Partition Table as a pure value: read it, change it in memory,
//! write it once. Both the image builder (which creates the table) and PID1
//! (which finds the data partition and grows it to the end of the disk) use
//! this one implementation.
//!
//! PID1 reads whatever table is on the disk it boots from, so [`Gpt::read`]
//! treats every on-disk number as hostile: each is checked against the disk
//! and the format before it is used, and all arithmetic on them is checked.
//! A damaged table is an error that names the defect, never a panic.

use std::io::{self, Seek, SeekFrom, Write};

use crate::guid::Guid;

mod read;
#[cfg(test)]
mod tests;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
/// Bytes of the header this writes (and the least a header may have).
const HEADER_SIZE: u32 = 92;
/// Bytes of one entry this writes (and the least an entry may have).
const ENTRY_SIZE: usize = 128;
/// Entries in the tables this writes.
const NUM_ENTRIES: usize = 128;
/// UTF-16 code units of a partition name.
const NAME_UNITS: usize = 36;
/// The most entries a table read from disk may have (tools write 128).
pub const MAX_ENTRIES: u32 = 1024;
/// The largest entry read from disk, in bytes (tools write 128).
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// Sector sizes this reads and writes: powers of two in this range, in bytes.
pub const SECTOR_SIZES: std::ops::RangeInclusive<u64> = 512..=65536;

/// Why a table could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("reading the partition table: {0}")]
    Io(#[from] io::Error),
    /// [`Gpt::write`] failed at `step` ("writing the backup table",
    /// "syncing the backup table", "writing the primary table", "syncing
    /// the primary table"): a failed sync means the step's sectors may not
    /// be durable, and the step says which table is then at risk.
    #[error("{step}: {source}")]
    Write { step: &'static str, source: io::Error },
    #[error("no valid GPT: primary header: {primary}; backup header: {backup}")]
    NoValidTable { primary: Box<TableError>, backup: Box<TableError> },
    #[error("sector size {0} is not a power of two between 512 and 65536 bytes")]
    InvalidSectorSize(u64),
    #[error("a disk of {sectors} sectors is too small for a GPT")]
    DiskTooSmallForTable { sectors: u64 },
    #[error("the table does not fit its disk: {0}")]
    Geometry(Box<TableError>),
    #[error("partition {label:?} ({first}..={last}) lies outside the usable sectors {usable_first}..={usable_last}")]
    OutOfBounds { label: String, first: u64, last: u64, usable_first: u64, usable_last: u64 },
    #[error("partitions {a:?} and {b:?} overlap")]
    Overlap { a: String, b: String },
    #[error("partition {label:?} has entry index {index}; the table written has {NUM_ENTRIES} entries")]
    IndexOutOfRange { label: String, index: usize },
    #[error("partitions {a:?} and {b:?} both use entry index {index}")]
    DuplicateIndex { a: String, b: String, index: usize },
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    NameTooLong(String),
    #[error("the table has no free entry for another partition")]
    TableFull,
    #[error("the disk shrank: the table needs {needed} sectors, the disk has {have}")]
    DiskTooSmall { needed: u64, have: u64 },
    #[error("no partition with index {0}")]
    NoSuchPartition(usize),
}

/// What is wrong with one copy (primary or backup) of the table on disk, or
/// with the geometry of a table about to be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("reading {what} at LBA {lba}: {source}")]
    Io { what: &'static str, lba: u64, source: io::Error },
    #[error("no \"EFI PART\" signature")]
    Signature,
    #[error("header size {size} is outside 92..={sector_size} bytes")]
    HeaderSize { size: u32, sector_size: u64 },
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("header says it is at LBA {stated}, found at {found}")]
    WrongLocation { stated: u64, found: u64 },
    #[error("entry size {0} is not a multiple of 128 between 128 and 4096 bytes")]
    EntrySize(u32),
    #[error("{0} entries are more than the 1024 this reads")]
    EntryCount(u32),
    #[error("{what} at LBA {lba} lies outside sectors {first}..={last}")]
    OutsideRange { what: &'static str, lba: u64, first: u64, last: u64 },
    #[error("first usable LBA {first} is past last usable LBA {last}")]
    UsableRange { first: u64, last: u64 },
    #[error("the entry array at LBAs {first}..={last} overlaps the usable sectors {usable_first}..={usable_last}")]
    ArrayOverlapsUsable { first: u64, last: u64, usable_first: u64, usable_last: u64 },
    #[error("{0} overflows 64 bits")]
    Overflow(&'static str),
    #[error("partition entry array checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    EntriesChecksum { stored: u32, computed: u32 },
    #[error("{0} is shorter than its fields")]
    Truncated(&'static str),
    #[error("{0}")]
    Partitions(Box<GptError>),
}

/// One used entry of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Position in the entry array (0-based); the kernel's partition number is `index + 1`.
    pub index: usize,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as in the on-disk format.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Partition {
    /// Length in sectors (0 for an inverted range, which no valid table holds).
    pub fn sectors(&self) -> u64 {
        if self.last_lba < self.first_lba {
            return 0;
        }
        (self.last_lba - self.first_lba).saturating_add(1)
    }

    /// The kernel's partition number (`/dev/vda4` has number 4).
    pub fn number(&self) -> usize {
        self.index.saturating_add(1)
    }
}

/// A partition table; LBAs are in sectors of `sector_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    /// Bytes per sector; one of [`SECTOR_SIZES`].
    pub sector_size: u64,
    /// Size of the disk in sectors; the backup header lives in the last one.
    pub total_sectors: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    /// The used entries, ordered by index.
    pub partitions: Vec<Partition>,
}

/// Sectors of the entry array this writes (128 entries of 128 bytes).
fn entry_array_sectors(sector_size: u64) -> u64 {
    ((NUM_ENTRIES * ENTRY_SIZE) as u64).div_ceil(sector_size.max(1))
}

fn check_sector_size(sector_size: u64) -> Result<(), GptError> {
    if SECTOR_SIZES.contains(&sector_size) && sector_size.is_power_of_two() {
        Ok(())
    } else {
        Err(GptError::InvalidSectorSize(sector_size))
    }
}

/// Where the written table puts its backup copy.
struct BackupLbas {
    header: u64,
    entries: u64,
}

impl Gpt {
    /// An empty table for a disk of `total_sectors` sectors. A disk too
    /// small for the two tables gets an empty usable range, so adding a
    /// partition or writing fails with [`GptError::Geometry`].
    pub fn new(disk_guid: Guid, sector_size: u64, total_sectors: u64) -> Gpt {
        let array = entry_array_sectors(sector_size);
        Gpt {
            disk_guid,
            sector_size,
            total_sectors,
            first_usable: 2 + array,
            last_usable: total_sectors.saturating_sub(2 + array),
            partitions: Vec::new(),
        }
    }

    /// Adds a partition in the first free entry and returns its index.
    pub fn add(
        &mut self,
        name: &str,
        type_guid: Guid,
        unique_guid: Guid,
        first_lba: u64,
        last_lba: u64,
    ) -> Result<usize, GptError> {
        if name.encode_utf16().count() > NAME_UNITS {
            return Err(GptError::NameTooLong(name.to_string()));
        }
        let index =
            (0..NUM_ENTRIES).find(|i| !self.partitions.iter().any(|p| p.index == *i)).ok_or(GptError::TableFull)?;
        self.partitions.push(Partition {
            index,
            type_guid,
            unique_guid,
            first_lba,
            last_lba,
            attributes: 0,
            name: name.to_string(),
        });
        self.partitions.sort_by_key(|p| p.index);
        self.validate()?;
        Ok(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    pub fn by_type(&self, type_guid: Guid) -> impl Iterator<Item = &Partition> {
        self.partitions.iter().filter(move |p| p.type_guid == type_guid)
    }

    /// The disk is now `total_sectors` long (it was enlarged): move the
    /// backup table to the new end and widen the usable range.
    pub fn resize_disk(&mut self, total_sectors: u64) -> Result<(), GptError> {
        let array = entry_array_sectors(self.sector_size);
        let last_used = self.partitions.iter().map(|p| p.last_lba).max().unwrap_or(0);
        // The last partition, the backup array and the backup header.
        let needed = last_used.saturating_add(2 + array);
        if total_sectors <= needed {
            return Err(GptError::DiskTooSmall { needed: needed.saturating_add(1), have: total_sectors });
        }
        self.total_sectors = total_sectors;
        self.last_usable = total_sectors - 2 - array;
        Ok(())
    }

    /// Extends partition `index` as far as it can go, if nothing follows
    /// it: to the last usable sector, or to the start of the next partition,
    /// with its end rounded down to a whole [`ALIGN`](crate::disk::ALIGN)
    /// (1 MiB) from the start of the disk, the rule of partitioning tools
    /// (the partition's size is then a whole number of 4 KiB blocks and
    /// of any erase block up to 1 MiB). Never shrinks it. Returns whether
    /// it grew.
    pub fn grow_to_end(&mut self, index: usize) -> Result<bool, GptError> {
        let last_usable = self.last_usable;
        let start =
            self.partitions.iter().find(|p| p.index == index).ok_or(GptError::NoSuchPartition(index))?.first_lba;
        // Whatever starts after this partition bounds it.
        let limit = self
            .partitions
            .iter()
            .filter(|p| p.first_lba > start)
            .map(|p| p.first_lba.saturating_sub(1))
            .min()
            .unwrap_or(last_usable);
        // The last sector before the last whole MiB boundary within the limit.
        let per_align = (crate::disk::ALIGN / self.sector_size.max(1)).max(1);
        let aligned_end = (limit.saturating_add(1) / per_align).saturating_mul(per_align).saturating_sub(1);
        let part = self.partitions.iter_mut().find(|p| p.index == index).ok_or(GptError::NoSuchPartition(index))?;
        if part.last_lba >= aligned_end || aligned_end < part.first_lba {
            return Ok(false);
        }
        part.last_lba = aligned_end;
        Ok(true)
    }

    /// Checks that the table can be written as it is: a valid sector size,
    /// room for both headers and 128-entry arrays around the usable sectors,
    /// and partitions with distinct indexes below 128, inside the usable
    /// sectors and not overlapping.
    pub fn validate(&self) -> Result<(), GptError> {
        self.backup_lbas()?;
        if let Some(p) = self.partitions.iter().find(|p| p.index >= NUM_ENTRIES) {
            return Err(GptError::IndexOutOfRange { label: p.name.clone(), index: p.index });
        }
        check_partitions(self.first_usable, self.last_usable, &self.partitions)
    }

    /// Where the backup header and array go, after checking that both
    /// tables fit around the usable sectors.
    fn backup_lbas(&self) -> Result<BackupLbas, GptError> {
        check_sector_size(self.sector_size)?;
        let array = entry_array_sectors(self.sector_size);
        let too_small = || GptError::DiskTooSmallForTable { sectors: self.total_sectors };
        let header = self.total_sectors.checked_sub(1).ok_or_else(too_small)?;
        // In front of the backup array: the primary table and a usable sector.
        let entries = header.checked_sub(array).filter(|lba| *lba > 2 + array).ok_or_else(too_small)?;
        let (first, last) = (self.first_usable, self.last_usable);
        if first > last {
            return Err(GptError::Geometry(Box::new(TableError::UsableRange { first, last })));
        }
        if first < 2 + array {
            return Err(GptError::Geometry(Box::new(TableError::ArrayOverlapsUsable {
                first: 2,
                last: 1 + array,
                usable_first: first,
                usable_last: last,
            })));
        }
        if last >= entries {
            return Err(GptError::Geometry(Box::new(TableError::ArrayOverlapsUsable {
                first: entries,
                last: header - 1,
                usable_first: first,
                usable_last: last,
            })));
        }
        Ok(BackupLbas { header, entries })
    }

    /// The 128 entries as they stand on disk, unused ones zero.
    fn encode_entries(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(NUM_ENTRIES * ENTRY_SIZE);
        for index in 0..NUM_ENTRIES {
            match self.partitions.iter().find(|p| p.index == index) {
                Some(p) => out.extend_from_slice(&encode_entry(p)),
                None => out.extend_from_slice(&[0u8; ENTRY_SIZE]),
            }
        }
        out
    }

    /// One header sector: the primary (at LBA 1) or the backup (at `lbas.header`).
    fn encode_header(&self, primary: bool, entries_crc: u32, lbas: &BackupLbas) -> Vec<u8> {
        let (current, other, entries_lba) =
            if primary { (1u64, lbas.header, 2u64) } else { (lbas.header, 1, lbas.entries) };
        // The checksum field sits between `head` and `tail` and counts as zero.
        let mut head = Vec::with_capacity(16);
        head.extend_from_slice(SIGNATURE);
        head.extend_from_slice(&REVISION.to_le_bytes());
        head.extend_from_slice(&HEADER_SIZE.to_le_bytes());
        let mut tail = Vec::with_capacity(HEADER_SIZE as usize - 20);
        tail.extend_from_slice(&[0u8; 4]); // reserved
        tail.extend_from_slice(&current.to_le_bytes());
        tail.extend_from_slice(&other.to_le_bytes());
        tail.extend_from_slice(&self.first_usable.to_le_bytes());
        tail.extend_from_slice(&self.last_usable.to_le_bytes());
        tail.extend_from_slice(&self.disk_guid.to_gpt_bytes());
        tail.extend_from_slice(&entries_lba.to_le_bytes());
        tail.extend_from_slice(&(NUM_ENTRIES as u32).to_le_bytes());
        tail.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        tail.extend_from_slice(&entries_crc.to_le_bytes());
        let crc = header_checksum(&head, &tail);
        let mut h = head;
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&tail);
        h.resize(self.sector_size as usize, 0);
        h
    }

    /// Sector 0: one partition of type 0xEE over the whole disk, so that
    /// MBR-only tools see the disk as in use.
    fn protective_mbr(&self) -> Vec<u8> {
        let size = self.total_sectors.saturating_sub(1).min(u32::MAX as u64) as u32;
        let mut m = vec![0u8; 446];
        // Not bootable, CHS start 0/0/2, type 0xEE, CHS end 0xFFFFFF.
        m.extend_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF]);
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.resize(510, 0);
        m.extend_from_slice(&[0x55, 0xAA]);
        m.resize(self.sector_size as usize, 0);
        m
    }

    /// Writes the table to `w` in two steps, each made durable before the
    /// next begins (after [`Gpt::validate`]):
    ///
    /// 1. the backup entry array and then the backup header (at the end of
    ///    the disk), then [`SyncWrite::sync`];
    /// 2. the protective MBR, the primary header and the primary entry
    ///    array (sectors 0 to 33), then [`SyncWrite::sync`] again.
    ///
    /// Why: writes to a block device only reach its page cache, which the
    /// kernel writes back in any order (by ascending offset, in practice:
    /// primary first), and the drive may reorder them again. A power cut
    /// in the middle of step 2 can leave a primary header that does not
    /// match its entries; the first sync guarantees that the new backup is
    /// on the disk by then, so [`Gpt::read`] falls back to it. A cut during
    /// step 1 leaves the old primary untouched, and it still reads. When
    /// the table moves to the end of an enlarged disk, the old backup is no
    /// longer where [`Gpt::read`] looks for one, so without the first sync
    /// such a cut would leave no valid table at all and the disk would not
    /// boot. When this returns `Ok`, the whole table is durable.
    ///
    /// Errors: the table's own checks ([`Gpt::validate`]), and an I/O
    /// error as [`GptError::Write`] naming the step it failed at.
    pub fn write<W: SyncWrite + ?Sized>(&self, w: &mut W) -> Result<(), GptError> {
        self.validate()?;
        let ss = self.sector_size;
        let lbas = self.backup_lbas()?;
        let entries = self.encode_entries();
        let crc = crc32fast::hash(&entries);
        let offset = |lba: u64| {
            lba.checked_mul(ss).ok_or_else(|| GptError::Geometry(Box::new(TableError::Overflow("byte offset"))))
        };
        let (entries_at, header_at) = (offset(lbas.entries)?, offset(lbas.header)?);
        let at = |step: &'static str| move |source: io::Error| GptError::Write { step, source };
        // Step 1: the backup, durable before the primary is touched.
        let mut backup = || -> io::Result<()> {
            w.seek(SeekFrom::Start(entries_at))?;
            w.write_all(&entries)?;
            w.seek(SeekFrom::Start(header_at))?;
            w.write_all(&self.encode_header(false, crc, &lbas))?;
            w.flush()
        };
        backup().map_err(at("writing the backup table"))?;
        w.sync().map_err(at("syncing the backup table"))?;
        // Step 2: the primary, in any order the disk likes.
        let mut primary = || -> io::Result<()> {
            w.seek(SeekFrom::Start(0))?;
            w.write_all(&self.protective_mbr())?;
            w.write_all(&self.encode_header(true, crc, &lbas))?;
            w.write_all(&entries)?;
            w.flush()
        };
        primary().map_err(at("writing the primary table"))?;
        w.sync().map_err(at("syncing the primary table"))?;
        Ok(())
    }
}

/// A disk (or image) a table is written to: [`Write`] and [`Seek`], and a
/// barrier that [`Gpt::write`] places between the backup and the primary
/// table and after both.
pub trait SyncWrite: Write + Seek {
    /// Returns once everything written so far is on stable storage
    /// (`fsync(2)`/`fdatasync(2)`, which on a block device also flushes
    /// the drive's write cache). Writes made before it never reach the
    /// disk after writes made after it.
    fn sync(&mut self) -> io::Result<()>;
}

impl SyncWrite for std::fs::File {
    fn sync(&mut self) -> io::Result<()> {
        // Data, and the size if it changed: all a table needs.
        self.sync_data()
    }
}

/// An image in memory has nothing to make durable.
impl SyncWrite for io::Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An image in memory has nothing to make durable.
impl SyncWrite for io::Cursor<&mut Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: SyncWrite + ?Sized> SyncWrite for &mut T {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

impl<T: SyncWrite + ?Sized> SyncWrite for Box<T> {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

/// Partitions lie inside `first..=last`, have distinct indexes and do not overlap.
fn check_partitions(first: u64, last: u64, partitions: &[Partition]) -> Result<(), GptError> {
    for p in partitions {
        if p.first_lba < first || p.last_lba > last || p.first_lba > p.last_lba {
            return Err(GptError::OutOfBounds {
                label: p.name.clone(),
                first: p.first_lba,
                last: p.last_lba,
                usable_first: first,
                usable_last: last,
            });
        }
    }
    // Sorted by start, two partitions overlap only if two neighbours do.
    let mut by_start: Vec<&Partition> = partitions.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    if let Some((a, b)) = by_start.iter().zip(by_start.iter().skip(1)).find(|(a, b)| b.first_lba <= a.last_lba) {
        return Err(GptError::Overlap { a: a.name.clone(), b: b.name.clone() });
    }
    let mut by_index: Vec<&Partition> = partitions.iter().collect();
    by_index.sort_by_key(|p| p.index);
    if let Some((a, b)) = by_index.iter().zip(by_index.iter().skip(1)).find(|(a, b)| a.index == b.index) {
        return Err(GptError::DuplicateIndex { a: a.name.clone(), b: b.name.clone(), index: a.index });
    }
    Ok(())
}

/// CRC32 of a header whose checksum field (between `head` and `tail`) is zero.
fn header_checksum(head: &[u8], tail: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(&[0u8; 4]);
    h.update(tail);
    h.finalize()
}

fn encode_entry(p: &Partition) -> Vec<u8> {
    let mut e = Vec::with_capacity(ENTRY_SIZE);
    e.extend_from_slice(&p.type_guid.to_gpt_bytes());
    e.extend_from_slice(&p.unique_guid.to_gpt_bytes());
    e.extend_from_slice(&p.first_lba.to_le_bytes());
    e.extend_from_slice(&p.last_lba.to_le_bytes());
    e.extend_from_slice(&p.attributes.to_le_bytes());
    for unit in p.name.encode_utf16().take(NAME_UNITS) {
        e.extend_from_slice(&unit.to_le_bytes());
    }
    e.resize(ENTRY_SIZE, 0);
    e
}
