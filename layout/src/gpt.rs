//! The GUID Partition Table as a pure value: read it, change it in memory,
//! write it once. Both the image builder (which creates the table) and PID1
//! (which finds the data partition and grows it to the end of the disk) use
//! this one implementation.
//!
//! PID1 reads whatever table is on the disk it boots from, so [`Gpt::read`]
//! treats every on-disk number as hostile: each is checked against the disk
//! and the format before it is used, and all arithmetic on them is checked.
//! A damaged table is an error that names the defect, never a panic.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::guid::Guid;

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

    /// Extends partition `index` up to the last usable sector, if nothing
    /// follows it. Returns whether it grew.
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
        let part = self.partitions.iter_mut().find(|p| p.index == index).ok_or(GptError::NoSuchPartition(index))?;
        if part.last_lba >= limit {
            return Ok(false);
        }
        part.last_lba = limit;
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

    /// Writes the protective MBR, the primary table and the backup table,
    /// after [`Gpt::validate`].
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), GptError> {
        self.validate()?;
        let ss = self.sector_size;
        let lbas = self.backup_lbas()?;
        let entries = self.encode_entries();
        let crc = crc32fast::hash(&entries);
        let offset = |lba: u64| {
            lba.checked_mul(ss).ok_or_else(|| GptError::Geometry(Box::new(TableError::Overflow("byte offset"))))
        };
        // Backup first: a crash between the two writes leaves a valid primary.
        w.seek(SeekFrom::Start(offset(lbas.entries)?))?;
        w.write_all(&entries)?;
        w.seek(SeekFrom::Start(offset(lbas.header)?))?;
        w.write_all(&self.encode_header(false, crc, &lbas))?;
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&self.protective_mbr())?;
        w.write_all(&self.encode_header(true, crc, &lbas))?;
        w.write_all(&entries)?;
        w.flush()?;
        Ok(())
    }

    /// Reads the table from a disk of `total_bytes`, falling back to the
    /// backup header when the primary is damaged. The returned table keeps
    /// the disk size it was read from, so an enlarged disk shows up as
    /// `last_usable` short of the end (see [`Gpt::resize_disk`]).
    ///
    /// Each copy is checked whole before it is used: signature, header size
    /// and checksum, its own location, entry size and count, every LBA
    /// within the disk, the usable range between the two headers, the entry
    /// array outside it and its checksum, and partitions inside the usable
    /// range without overlaps. The table it returns may have up to
    /// [`MAX_ENTRIES`] entries; [`Gpt::write`] writes 128.
    pub fn read<R: Read + Seek>(r: &mut R, sector_size: u64, total_bytes: u64) -> Result<Gpt, GptError> {
        check_sector_size(sector_size)?;
        let disk_sectors = total_bytes / sector_size;
        // The protective MBR and the two headers at the least.
        if disk_sectors < 3 {
            return Err(GptError::DiskTooSmallForTable { sectors: disk_sectors });
        }
        let primary = match read_copy(r, sector_size, disk_sectors, 1) {
            Ok(gpt) => return Ok(gpt),
            Err(e) => e,
        };
        read_copy(r, sector_size, disk_sectors, disk_sectors - 1)
            .map_err(|backup| GptError::NoValidTable { primary: Box::new(primary), backup: Box::new(backup) })
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

/// Reads `len` bytes at sector `lba`.
fn read_bytes<R: Read + Seek>(
    r: &mut R,
    what: &'static str,
    lba: u64,
    ss: u64,
    len: u64,
) -> Result<Vec<u8>, TableError> {
    let io = |source| TableError::Io { what, lba, source };
    let offset = lba.checked_mul(ss).ok_or(TableError::Overflow("byte offset"))?;
    let len = usize::try_from(len).map_err(|_| TableError::Overflow("read length"))?;
    let mut buf = vec![0u8; len];
    r.seek(SeekFrom::Start(offset)).map_err(io)?;
    r.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// Little-endian fields read in order from an on-disk record.
struct Fields<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(what: &'static str, record: &'a [u8]) -> Fields<'a> {
        Fields { what, rest: record }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], TableError> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(TableError::Truncated(self.what))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, TableError> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, TableError> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn guid(&mut self) -> Result<Guid, TableError> {
        self.bytes().map(|b| Guid::from_gpt_bytes(&b))
    }
}

/// The fields of a header sector, as read.
struct Header {
    current: u64,
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

impl Header {
    /// Parses the header sector found at `lba` and checks what it says
    /// about itself: signature, size, checksum, location, entry geometry.
    fn parse(sector: &[u8], ss: u64, lba: u64) -> Result<Header, TableError> {
        let mut f = Fields::new("header", sector);
        if f.bytes::<8>()? != *SIGNATURE {
            return Err(TableError::Signature);
        }
        let _revision = f.u32()?;
        let size = f.u32()?;
        let stored = f.u32()?;
        let _reserved = f.u32()?;
        let header = Header {
            current: f.u64()?,
            alternate: f.u64()?,
            first_usable: f.u64()?,
            last_usable: f.u64()?,
            disk_guid: f.guid()?,
            entries_lba: f.u64()?,
            entry_count: f.u32()?,
            entry_size: f.u32()?,
            entries_crc: f.u32()?,
        };
        if !(u64::from(HEADER_SIZE)..=ss).contains(&u64::from(size)) {
            return Err(TableError::HeaderSize { size, sector_size: ss });
        }
        let covered = sector.get(..size as usize).ok_or(TableError::Truncated("header"))?;
        let (head, rest) = covered.split_at_checked(16).ok_or(TableError::Truncated("header"))?;
        let tail = rest.get(4..).ok_or(TableError::Truncated("header"))?;
        let computed = header_checksum(head, tail);
        if computed != stored {
            return Err(TableError::HeaderChecksum { stored, computed });
        }
        if header.current != lba {
            return Err(TableError::WrongLocation { stated: header.current, found: lba });
        }
        if header.entry_count > MAX_ENTRIES {
            return Err(TableError::EntryCount(header.entry_count));
        }
        let esize = header.entry_size;
        if esize < ENTRY_SIZE as u32 || esize > MAX_ENTRY_SIZE || !esize.is_multiple_of(ENTRY_SIZE as u32) {
            return Err(TableError::EntrySize(esize));
        }
        Ok(header)
    }
}

/// Reads and checks one copy of the table, its header at `lba` of a disk
/// of `disk_sectors` sectors.
fn read_copy<R: Read + Seek>(r: &mut R, ss: u64, disk_sectors: u64, lba: u64) -> Result<Gpt, TableError> {
    let sector = read_bytes(r, "header", lba, ss, ss)?;
    let h = Header::parse(&sector, ss, lba)?;
    // The disk size the table was written for: the backup header is in its
    // last sector. A primary naming a backup short of the end is a disk
    // enlarged since.
    let backup_lba = if lba == 1 {
        if h.alternate < 2 || h.alternate >= disk_sectors {
            return Err(TableError::OutsideRange {
                what: "backup header",
                lba: h.alternate,
                first: 2,
                last: disk_sectors - 1,
            });
        }
        h.alternate
    } else {
        lba
    };
    let (first, last) = (h.first_usable, h.last_usable);
    // Between the primary header (LBA 1) and the backup header.
    for (what, at) in [("first usable sector", first), ("last usable sector", last)] {
        if at < 2 || at >= backup_lba {
            return Err(TableError::OutsideRange { what, lba: at, first: 2, last: backup_lba - 1 });
        }
    }
    if first > last {
        return Err(TableError::UsableRange { first, last });
    }
    // At most MAX_ENTRIES * MAX_ENTRY_SIZE bytes: no overflow.
    let array_bytes = u64::from(h.entry_count) * u64::from(h.entry_size);
    let array_sectors = array_bytes.div_ceil(ss);
    if array_sectors > 0 {
        let array_first = h.entries_lba;
        let array_last = array_first.checked_add(array_sectors - 1).ok_or(TableError::Overflow("entry array end"))?;
        for (what, at) in [("entry array", array_first), ("end of the entry array", array_last)] {
            if at < 2 || at >= backup_lba {
                return Err(TableError::OutsideRange { what, lba: at, first: 2, last: backup_lba - 1 });
            }
        }
        if array_first <= last && first <= array_last {
            return Err(TableError::ArrayOverlapsUsable {
                first: array_first,
                last: array_last,
                usable_first: first,
                usable_last: last,
            });
        }
    }
    let entries = read_bytes(r, "entry array", h.entries_lba, ss, array_bytes)?;
    let computed = crc32fast::hash(&entries);
    if computed != h.entries_crc {
        return Err(TableError::EntriesChecksum { stored: h.entries_crc, computed });
    }
    let mut partitions = Vec::new();
    for (index, entry) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        if let Some(p) = parse_entry(index, entry)? {
            partitions.push(p);
        }
    }
    check_partitions(first, last, &partitions).map_err(|e| TableError::Partitions(Box::new(e)))?;
    Ok(Gpt {
        disk_guid: h.disk_guid,
        sector_size: ss,
        total_sectors: backup_lba + 1,
        first_usable: first,
        last_usable: last,
        partitions,
    })
}

/// One entry; `None` for an unused one (type GUID zero).
fn parse_entry(index: usize, entry: &[u8]) -> Result<Option<Partition>, TableError> {
    let mut f = Fields::new("partition entry", entry);
    let type_guid = f.guid()?;
    if type_guid == Guid::NIL {
        return Ok(None);
    }
    let unique_guid = f.guid()?;
    let first_lba = f.u64()?;
    let last_lba = f.u64()?;
    let attributes = f.u64()?;
    let name = f.bytes::<{ 2 * NAME_UNITS }>()?;
    let units: Vec<u16> = name
        .chunks_exact(2)
        .filter_map(|c| c.first_chunk::<2>())
        .map(|b| u16::from_le_bytes(*b))
        .take_while(|u| *u != 0)
        .collect();
    Ok(Some(Partition {
        index,
        type_guid,
        unique_guid,
        first_lba,
        last_lba,
        attributes,
        name: String::from_utf16_lossy(&units),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const T: Guid = Guid::from_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

    fn sample(total: u64) -> Gpt {
        let mut g = Gpt::new(Guid::derive("disk"), 512, total);
        g.add("one", T, Guid::derive("one"), 2048, 4095).unwrap();
        g.add("two", T, Guid::derive("two"), 4096, 8191).unwrap();
        g
    }

    #[test]
    fn written_table_reads_back_identically() {
        let g = sample(16384);
        let mut disk = Cursor::new(vec![0u8; 16384 * 512]);
        g.write(&mut disk).unwrap();
        let back = Gpt::read(&mut disk, 512, 16384 * 512).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.by_name("two").unwrap().number(), 2);
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let g = sample(16384);
        let mut disk = Cursor::new(vec![0u8; 16384 * 512]);
        g.write(&mut disk).unwrap();
        disk.get_mut()[512 + 40] ^= 0xff;
        let back = Gpt::read(&mut disk, 512, 16384 * 512).unwrap();
        assert_eq!(back.partitions, g.partitions);
    }

    #[test]
    fn both_headers_damaged_is_an_error_naming_both() {
        let mut disk = Cursor::new(vec![0u8; 16384 * 512]);
        let err = Gpt::read(&mut disk, 512, 16384 * 512).unwrap_err().to_string();
        assert!(err.contains("primary") && err.contains("backup"), "{err}");
    }

    #[test]
    fn enlarged_disk_moves_backup_and_grows_last_partition() {
        let g = sample(16384);
        let mut disk = Cursor::new(vec![0u8; 16384 * 512]);
        g.write(&mut disk).unwrap();
        // The disk is enlarged (qemu-img resize): zeros appended.
        disk.get_mut().resize(32768 * 512, 0);
        let mut back = Gpt::read(&mut disk, 512, 32768 * 512).unwrap();
        assert_eq!(back.total_sectors, 16384, "the table still describes the old size");
        back.resize_disk(32768).unwrap();
        let idx = back.by_name("two").unwrap().index;
        assert!(back.grow_to_end(idx).unwrap());
        assert!(!back.grow_to_end(idx).unwrap(), "second grow is a no-op");
        back.write(&mut disk).unwrap();
        let again = Gpt::read(&mut disk, 512, 32768 * 512).unwrap();
        assert_eq!(again.by_name("two").unwrap().last_lba, 32768 - 34);
        assert_eq!(again.total_sectors, 32768);
    }

    #[test]
    fn a_partition_followed_by_another_does_not_grow_into_it() {
        let mut g = sample(16384);
        let idx = g.by_name("one").unwrap().index;
        assert!(!g.grow_to_end(idx).unwrap());
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let mut g = sample(16384);
        let err = g.add("three", T, Guid::derive("3"), 4000, 5000).unwrap_err();
        assert!(matches!(err, GptError::Overlap { .. }), "{err}");
    }

    // What follows damages a written table the way a failing disk or a
    // hostile image could, with checksums recomputed where the test wants to
    // reach the checks behind them.

    const SECTORS: u64 = 16384;
    const BACKUP: usize = SECTORS as usize - 1;
    const BACKUP_ARRAY: usize = BACKUP - 32;

    fn written() -> Vec<u8> {
        let mut disk = Cursor::new(vec![0u8; SECTORS as usize * 512]);
        sample(SECTORS).write(&mut disk).unwrap();
        disk.into_inner()
    }

    fn header_mut(disk: &mut [u8], lba: usize) -> &mut [u8] {
        &mut disk[lba * 512..lba * 512 + 92]
    }

    /// Recomputes the header checksum of the header at `lba`.
    fn fix_header_crc(disk: &mut [u8], lba: usize) {
        let h = header_mut(disk, lba);
        h[16..20].fill(0);
        let crc = crc32fast::hash(h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    /// Changes both headers with `f` and makes their checksums right again.
    fn edit_headers(disk: &mut [u8], f: impl Fn(&mut [u8])) {
        for lba in [1, BACKUP] {
            f(header_mut(disk, lba));
            fix_header_crc(disk, lba);
        }
    }

    /// Changes both entry arrays with `f` and makes all checksums right again.
    fn edit_entries(disk: &mut [u8], f: impl Fn(&mut [u8])) {
        for (lba, array) in [(1, 2), (BACKUP, BACKUP_ARRAY)] {
            let entries = &mut disk[array * 512..(array + 32) * 512];
            f(entries);
            let crc = crc32fast::hash(entries);
            header_mut(disk, lba)[88..92].copy_from_slice(&crc.to_le_bytes());
            fix_header_crc(disk, lba);
        }
    }

    fn read(disk: &[u8]) -> Result<Gpt, GptError> {
        Gpt::read(&mut Cursor::new(disk), 512, disk.len() as u64)
    }

    /// The defect of each copy, when both are damaged alike.
    fn both_defects(disk: &[u8]) -> (TableError, TableError) {
        match read(disk) {
            Err(GptError::NoValidTable { primary, backup }) => (*primary, *backup),
            other => panic!("expected no valid table, got {other:?}"),
        }
    }

    fn set_u32(h: &mut [u8], at: usize, v: u32) {
        h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u64(h: &mut [u8], at: usize, v: u64) {
        h[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn a_huge_entry_count_is_rejected_before_anything_is_allocated() {
        let mut disk = written();
        edit_headers(&mut disk, |h| set_u32(h, 80, u32::MAX));
        let (p, b) = both_defects(&disk);
        assert!(matches!(p, TableError::EntryCount(u32::MAX)), "{p}");
        assert!(matches!(b, TableError::EntryCount(u32::MAX)), "{b}");
    }

    #[test]
    fn entry_sizes_that_are_zero_or_not_multiples_of_128_are_rejected() {
        for size in [0, 1, 127, 130, 200, MAX_ENTRY_SIZE + 128, u32::MAX] {
            let mut disk = written();
            edit_headers(&mut disk, |h| set_u32(h, 84, size));
            let (p, b) = both_defects(&disk);
            assert!(matches!(p, TableError::EntrySize(s) if s == size), "{size}: {p}");
            assert!(matches!(b, TableError::EntrySize(s) if s == size), "{size}: {b}");
        }
    }

    #[test]
    fn an_entry_array_past_the_end_of_the_disk_is_rejected() {
        for lba in [SECTORS, SECTORS - 2, u64::MAX / 512, u64::MAX] {
            let mut disk = written();
            edit_headers(&mut disk, |h| set_u64(h, 72, lba));
            let (p, b) = both_defects(&disk);
            for e in [p, b] {
                assert!(
                    matches!(e, TableError::OutsideRange { .. } | TableError::Overflow(_)),
                    "entries at {lba}: {e}"
                );
            }
        }
    }

    #[test]
    fn an_entry_array_inside_the_usable_sectors_is_rejected() {
        let mut disk = written();
        edit_headers(&mut disk, |h| set_u64(h, 72, 3000));
        let (p, _) = both_defects(&disk);
        assert!(matches!(p, TableError::ArrayOverlapsUsable { first: 3000, .. }), "{p}");
    }

    #[test]
    fn a_backup_header_past_the_end_of_the_disk_is_rejected() {
        for lba in [SECTORS, u64::MAX, 0] {
            let mut disk = written();
            set_u64(header_mut(&mut disk, 1), 32, lba);
            fix_header_crc(&mut disk, 1);
            // The backup copy is still good, so reading falls back to it.
            assert_eq!(read(&disk).unwrap(), sample(SECTORS));
            disk[BACKUP * 512] ^= 0xff;
            let (p, _) = both_defects(&disk);
            assert!(matches!(p, TableError::OutsideRange { what: "backup header", .. }), "{lba}: {p}");
        }
    }

    #[test]
    fn a_usable_range_outside_the_headers_or_inverted_is_rejected() {
        let cases: [(u64, u64); 5] = [(0, 100), (34, SECTORS), (34, u64::MAX), (5000, 4000), (u64::MAX, u64::MAX)];
        for (first, last) in cases {
            let mut disk = written();
            edit_headers(&mut disk, |h| {
                set_u64(h, 40, first);
                set_u64(h, 48, last);
            });
            let (p, b) = both_defects(&disk);
            for e in [p, b] {
                assert!(
                    matches!(e, TableError::OutsideRange { .. } | TableError::UsableRange { .. }),
                    "{first}..={last}: {e}"
                );
            }
        }
    }

    #[test]
    fn header_sizes_outside_92_to_the_sector_size_are_rejected() {
        for size in [0, 91, 513, u32::MAX] {
            let mut disk = written();
            edit_headers(&mut disk, |h| set_u32(h, 12, size));
            let (p, _) = both_defects(&disk);
            assert!(matches!(p, TableError::HeaderSize { size: s, .. } if s == size), "{size}: {p}");
        }
    }

    #[test]
    fn a_header_at_the_wrong_place_is_rejected() {
        let mut disk = written();
        set_u64(header_mut(&mut disk, 1), 24, 7);
        fix_header_crc(&mut disk, 1);
        disk[BACKUP * 512] ^= 0xff;
        let (p, b) = both_defects(&disk);
        assert!(matches!(p, TableError::WrongLocation { stated: 7, found: 1 }), "{p}");
        assert!(matches!(b, TableError::Signature), "{b}");
    }

    #[test]
    fn a_damaged_entry_array_fails_its_checksum() {
        let mut disk = written();
        disk[2 * 512 + 40] ^= 1;
        disk[BACKUP_ARRAY * 512 + 40] ^= 1;
        let (p, b) = both_defects(&disk);
        assert!(matches!(p, TableError::EntriesChecksum { .. }), "{p}");
        assert!(matches!(b, TableError::EntriesChecksum { .. }), "{b}");
    }

    fn partition_defect(disk: &[u8]) -> GptError {
        match both_defects(disk).0 {
            TableError::Partitions(e) => *e,
            other => panic!("expected a partition defect, got {other}"),
        }
    }

    #[test]
    fn partitions_past_the_usable_sectors_or_inverted_are_rejected() {
        // Entry 1 ("two") starts at 4096 and ends at 8191.
        for (first, last) in [(4096, SECTORS), (4096, u64::MAX), (8191, 4096), (0, 4095), (u64::MAX, u64::MAX)] {
            let mut disk = written();
            edit_entries(&mut disk, |e| {
                set_u64(e, 128 + 32, first);
                set_u64(e, 128 + 40, last);
            });
            let e = partition_defect(&disk);
            assert!(matches!(e, GptError::OutOfBounds { ref label, .. } if label == "two"), "{first}..={last}: {e}");
        }
    }

    #[test]
    fn overlapping_partitions_on_disk_are_rejected() {
        let mut disk = written();
        edit_entries(&mut disk, |e| set_u64(e, 128 + 32, 4000));
        let e = partition_defect(&disk);
        assert!(matches!(e, GptError::Overlap { .. }), "{e}");
    }

    #[test]
    fn bad_sector_sizes_and_tiny_disks_are_errors() {
        let disk = written();
        for ss in [0, 1, 100, 513, 1 << 20] {
            let err = Gpt::read(&mut Cursor::new(&disk), ss, disk.len() as u64).unwrap_err();
            assert!(matches!(err, GptError::InvalidSectorSize(s) if s == ss), "{ss}: {err}");
        }
        for bytes in [0, 511, 1024] {
            let err = Gpt::read(&mut Cursor::new(&disk), 512, bytes).unwrap_err();
            assert!(matches!(err, GptError::DiskTooSmallForTable { .. }), "{bytes}: {err}");
        }
    }

    #[test]
    fn a_disk_shorter_than_it_claims_is_a_read_error() {
        let disk = written();
        let short = &disk[..4096];
        let (p, b) = match Gpt::read(&mut Cursor::new(short), 512, disk.len() as u64) {
            Err(GptError::NoValidTable { primary, backup }) => (*primary, *backup),
            other => panic!("{other:?}"),
        };
        assert!(matches!(p, TableError::Io { what: "entry array", lba: 2, .. }), "{p}");
        assert!(matches!(b, TableError::Io { what: "header", .. }), "{b}");
    }

    /// What `read` promises about a table it returns.
    fn assert_consistent(g: &Gpt, disk_sectors: u64) {
        assert!(g.total_sectors <= disk_sectors);
        assert!(2 <= g.first_usable && g.first_usable <= g.last_usable && g.last_usable < g.total_sectors - 1);
        for p in &g.partitions {
            assert!(g.first_usable <= p.first_lba && p.first_lba <= p.last_lba && p.last_lba <= g.last_usable);
            assert!(p.sectors() >= 1);
        }
    }

    #[test]
    fn any_single_damaged_header_byte_is_caught_or_harmless() {
        let good = sample(SECTORS);
        let mut disk = written();
        for at in 0..92 {
            for flip in [0x01u8, 0x80, 0xff] {
                // One copy damaged: the checksum catches it and the other copy is read.
                let original = disk[512 + at];
                disk[512 + at] ^= flip;
                assert_eq!(read(&disk).unwrap(), good, "primary byte {at} ^ {flip:#x}");
                disk[512 + at] = original;
                // Both damaged and their checksums made right: the checks
                // behind the checksum see every field.
                let saved = disk.clone();
                edit_headers(&mut disk, |h| h[at] ^= flip);
                match read(&disk) {
                    Ok(g) => assert_consistent(&g, SECTORS),
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
                disk = saved;
            }
        }
    }

    #[test]
    fn any_single_damaged_entry_byte_is_caught_or_harmless() {
        let mut disk = written();
        let saved = disk.clone();
        for at in 0..2 * 128 {
            for flip in [0x01u8, 0x80, 0xff] {
                edit_entries(&mut disk, |e| e[at] ^= flip);
                match read(&disk) {
                    Ok(g) => assert_consistent(&g, SECTORS),
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
                disk.copy_from_slice(&saved);
            }
        }
    }

    fn err_geometry(e: &GptError) -> &TableError {
        match e {
            GptError::Geometry(t) => t,
            other => panic!("expected a geometry error, got {other}"),
        }
    }

    #[test]
    fn gpt_errors_stay_small() {
        // PID1's boot errors carry a GptError; the big details are boxed.
        assert!(std::mem::size_of::<GptError>() <= 64, "{}", std::mem::size_of::<GptError>());
    }

    #[test]
    fn tables_that_do_not_fit_their_disk_are_not_written() {
        let mut tiny = Gpt::new(Guid::derive("tiny"), 512, 40);
        let err = tiny.add("x", T, Guid::derive("x"), 34, 35).unwrap_err();
        assert!(matches!(err, GptError::Geometry(_) | GptError::DiskTooSmallForTable { .. }), "{err}");
        // A table read with a short entry array leaves too little room in
        // front for the 128 entries this writes.
        let mut g = sample(SECTORS);
        g.first_usable = 10;
        let err = g.write(&mut Cursor::new(vec![0u8; SECTORS as usize * 512])).unwrap_err();
        assert!(matches!(*err_geometry(&err), TableError::ArrayOverlapsUsable { .. }), "{err}");
        // An entry index the written table has no room for.
        let mut g = sample(SECTORS);
        g.partitions[1].index = 200;
        assert!(matches!(g.validate().unwrap_err(), GptError::IndexOutOfRange { index: 200, .. }));
        let mut g = sample(SECTORS);
        g.partitions[1].index = 0;
        assert!(matches!(g.validate().unwrap_err(), GptError::DuplicateIndex { index: 0, .. }));
        let mut g = sample(SECTORS);
        g.sector_size = 0;
        assert!(matches!(g.validate().unwrap_err(), GptError::InvalidSectorSize(0)));
    }

    #[test]
    fn a_table_with_more_entries_than_written_reads() {
        // Another tool's table: 256 entries, so an array of 64 sectors.
        let mut disk = written();
        edit_headers(&mut disk, |h| set_u32(h, 80, 256));
        // The primary array grows into sectors that were zero; the backup's would reach its header.
        let primary_entries = crc32fast::hash(&disk[2 * 512..66 * 512]);
        set_u64(header_mut(&mut disk, 1), 40, 66);
        set_u32(header_mut(&mut disk, 1), 88, primary_entries);
        fix_header_crc(&mut disk, 1);
        let g = read(&disk).unwrap();
        assert_eq!(g.partitions, sample(SECTORS).partitions);
        assert_eq!(g.first_usable, 66);
    }

    #[test]
    fn sgdisk_accepts_the_table() {
        // Cross-check against an independent implementation when present.
        let Ok(out) = std::process::Command::new("sgdisk").arg("--version").output() else {
            panic!("sgdisk (Debian package gdisk) is needed for this test");
        };
        assert!(out.status.success());
        let g = sample(16384);
        let dir = std::env::temp_dir().join(format!("berth-gpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(16384 * 512).unwrap();
        g.write(&mut f).unwrap();
        drop(f);
        let out = std::process::Command::new("sgdisk").arg("-v").arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("No problems found"), "{text}");
        let out = std::process::Command::new("sgdisk").arg("-i").arg("2").arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("'two'") && text.contains("First sector: 4096"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
