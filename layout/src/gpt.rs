//! The GUID Partition Table as a pure value: read it, change it in memory,
//! write it once. Both the image builder (which creates the table) and PID1
//! (which finds the data partition and grows it to the end of the disk) use
//! this one implementation.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::guid::Guid;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
const ENTRY_SIZE: usize = 128;
const NUM_ENTRIES: usize = 128;
const NAME_UNITS: usize = 36;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("reading the partition table: {0}")]
    Io(#[from] io::Error),
    #[error("no valid GPT: primary header: {primary}; backup header: {backup}")]
    NoValidTable { primary: String, backup: String },
    #[error("partition {label:?} ({first}..={last}) lies outside the usable sectors {usable_first}..={usable_last}")]
    OutOfBounds { label: String, first: u64, last: u64, usable_first: u64, usable_last: u64 },
    #[error("partitions {a:?} and {b:?} overlap")]
    Overlap { a: String, b: String },
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    NameTooLong(String),
    #[error("the table has no free entry for another partition")]
    TableFull,
    #[error("the disk shrank: the table needs {needed} sectors, the disk has {have}")]
    DiskTooSmall { needed: u64, have: u64 },
    #[error("no partition with index {0}")]
    NoSuchPartition(usize),
}

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
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }

    /// The kernel's partition number (`/dev/vda4` has number 4).
    pub fn number(&self) -> usize {
        self.index + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub sector_size: u64,
    /// Size of the disk in sectors; the backup header lives in the last one.
    pub total_sectors: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    /// The used entries, ordered by index.
    pub partitions: Vec<Partition>,
}

fn entry_array_sectors(sector_size: u64) -> u64 {
    ((NUM_ENTRIES * ENTRY_SIZE) as u64).div_ceil(sector_size)
}

impl Gpt {
    /// An empty table for a disk of `total_sectors` sectors.
    pub fn new(disk_guid: Guid, sector_size: u64, total_sectors: u64) -> Gpt {
        let array = entry_array_sectors(sector_size);
        Gpt {
            disk_guid,
            sector_size,
            total_sectors,
            first_usable: 2 + array,
            last_usable: total_sectors - 2 - array,
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
        let needed = self.partitions.iter().map(|p| p.last_lba).max().unwrap_or(0) + 2 + array;
        if total_sectors <= needed {
            return Err(GptError::DiskTooSmall { needed: needed + 1, have: total_sectors });
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
            .map(|p| p.first_lba - 1)
            .min()
            .unwrap_or(last_usable);
        let part = self.partitions.iter_mut().find(|p| p.index == index).ok_or(GptError::NoSuchPartition(index))?;
        if part.last_lba >= limit {
            return Ok(false);
        }
        part.last_lba = limit;
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), GptError> {
        for p in &self.partitions {
            if p.first_lba < self.first_usable || p.last_lba > self.last_usable || p.first_lba > p.last_lba {
                return Err(GptError::OutOfBounds {
                    label: p.name.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first: self.first_usable,
                    usable_last: self.last_usable,
                });
            }
        }
        for (i, a) in self.partitions.iter().enumerate() {
            for b in &self.partitions[i + 1..] {
                if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
                    return Err(GptError::Overlap { a: a.name.clone(), b: b.name.clone() });
                }
            }
        }
        Ok(())
    }

    fn encode_entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; NUM_ENTRIES * ENTRY_SIZE];
        for p in &self.partitions {
            let e = &mut out[p.index * ENTRY_SIZE..(p.index + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
            e[16..32].copy_from_slice(&p.unique_guid.to_gpt_bytes());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().take(NAME_UNITS).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    fn encode_header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let array = entry_array_sectors(self.sector_size);
        let backup_lba = self.total_sectors - 1;
        let (current, other, entries_lba) =
            if primary { (1u64, backup_lba, 2u64) } else { (backup_lba, 1, backup_lba - array) };
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(NUM_ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.sector_size as usize];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (self.total_sectors - 1).min(u32::MAX as u64) as u32;
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes the protective MBR, the primary table and the backup table.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), GptError> {
        self.validate()?;
        let ss = self.sector_size;
        let entries = self.encode_entries();
        let crc = crc32fast::hash(&entries);
        let array = entry_array_sectors(ss);
        let backup_lba = self.total_sectors - 1;
        // Backup first: a crash between the two writes leaves a valid primary.
        w.seek(SeekFrom::Start((backup_lba - array) * ss))?;
        w.write_all(&entries)?;
        w.seek(SeekFrom::Start(backup_lba * ss))?;
        w.write_all(&self.encode_header(false, crc))?;
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&self.protective_mbr())?;
        w.write_all(&self.encode_header(true, crc))?;
        w.write_all(&entries)?;
        w.flush()?;
        Ok(())
    }

    /// Reads the table from a disk of `total_bytes`, falling back to the
    /// backup header when the primary is damaged. The returned table keeps
    /// the disk size it was read from, so an enlarged disk shows up as
    /// `last_usable` short of the end (see [`Gpt::resize_disk`]).
    pub fn read<R: Read + Seek>(r: &mut R, sector_size: u64, total_bytes: u64) -> Result<Gpt, GptError> {
        let total_sectors = total_bytes / sector_size;
        let primary = match read_at(r, sector_size, 1) {
            Ok(h) => parse(r, &h, sector_size, 1),
            Err(e) => Err(e.to_string()),
        };
        let mut gpt = match primary {
            Ok(g) => g,
            Err(primary) => {
                let backup = match read_at(r, sector_size, total_sectors - 1) {
                    Ok(h) => parse(r, &h, sector_size, total_sectors - 1),
                    Err(e) => Err(e.to_string()),
                };
                match backup {
                    Ok(g) => g,
                    Err(backup) => return Err(GptError::NoValidTable { primary, backup }),
                }
            }
        };
        gpt.sector_size = sector_size;
        Ok(gpt)
    }
}

fn read_at<R: Read + Seek>(r: &mut R, ss: u64, lba: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; ss as usize];
    r.seek(SeekFrom::Start(lba * ss))?;
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn guid_at(b: &[u8]) -> Guid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Guid::from_gpt_bytes(&a)
}

fn parse<R: Read + Seek>(r: &mut R, h: &[u8], ss: u64, expected_lba: u64) -> Result<Gpt, String> {
    if &h[0..8] != SIGNATURE {
        return Err("no \"EFI PART\" signature".into());
    }
    let size = le32(&h[12..16]) as usize;
    if !(92..=h.len()).contains(&size) {
        return Err(format!("header size {size} is invalid"));
    }
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != le32(&h[16..20]) {
        return Err("header checksum mismatch".into());
    }
    let current = le64(&h[24..32]);
    if current != expected_lba {
        return Err(format!("header says it is at LBA {current}, found at {expected_lba}"));
    }
    let backup = le64(&h[32..40]);
    let entries_lba = le64(&h[72..80]);
    let count = le32(&h[80..84]) as usize;
    let esize = le32(&h[84..88]) as usize;
    if esize < ENTRY_SIZE || count > 1024 {
        return Err(format!("{count} entries of {esize} bytes is not a table this reads"));
    }
    let mut entries = vec![0u8; count * esize];
    r.seek(SeekFrom::Start(entries_lba * ss)).map_err(|e| e.to_string())?;
    r.read_exact(&mut entries).map_err(|e| e.to_string())?;
    if crc32fast::hash(&entries) != le32(&h[88..92]) {
        return Err("partition entry array checksum mismatch".into());
    }
    let mut partitions = Vec::new();
    for index in 0..count {
        let e = &entries[index * esize..(index + 1) * esize];
        let type_guid = guid_at(&e[0..16]);
        if type_guid == Guid::NIL {
            continue;
        }
        let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        partitions.push(Partition {
            index,
            type_guid,
            unique_guid: guid_at(&e[16..32]),
            first_lba: le64(&e[32..40]),
            last_lba: le64(&e[40..48]),
            attributes: le64(&e[48..56]),
            name: String::from_utf16_lossy(&units),
        });
    }
    // The disk size the table was written for: the backup header is in its last sector.
    let total_sectors = if expected_lba == 1 { backup + 1 } else { current + 1 };
    Ok(Gpt {
        disk_guid: guid_at(&h[56..72]),
        sector_size: ss,
        total_sectors,
        first_usable: le64(&h[40..48]),
        last_usable: le64(&h[48..56]),
        partitions,
    })
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
