//! Reading a table from disk: each copy is checked whole, every on-disk
//! number against the disk and the format, before any of it is used.

use std::io::{Read, Seek, SeekFrom};

use super::{
    check_partitions, check_sector_size, header_checksum, Gpt, GptError, Partition, TableError, ENTRY_SIZE,
    HEADER_SIZE, MAX_ENTRIES, MAX_ENTRY_SIZE, NAME_UNITS, SIGNATURE,
};
use crate::guid::Guid;

impl Gpt {
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
