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
    // 32768 - 34 is the last usable sector; the partition ends at the last
    // MiB boundary before it (sector 30720 = 15 MiB).
    assert_eq!(again.by_name("two").unwrap().last_lba, 30719);
    assert_eq!(again.total_sectors, 32768);
}

/// A table grown to an enlarged disk of `total` sectors of `ss` bytes
/// (sgdisk reads image files as 512-byte sectors), written to a file that
/// sgdisk then verifies. Returns the grown
/// partition's last sector.
fn grow_file_and_check_with_sgdisk(ss: u64, total: u64) -> u64 {
    let mib = crate::disk::MIB / ss;
    let mut g = Gpt::new(Guid::derive("disk"), ss, 16 * mib + 64);
    g.add("one", T, Guid::derive("one"), mib, 4 * mib - 1).unwrap();
    g.add("two", T, Guid::derive("two"), 4 * mib, 8 * mib - 1).unwrap();
    g.resize_disk(total).unwrap();
    let idx = g.by_name("two").unwrap().index;
    g.grow_to_end(idx).unwrap();
    let dir = std::env::temp_dir().join(format!("berth-gpt-grow-{}-{ss}-{total}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(total * ss).unwrap();
    g.write(&mut f).unwrap();
    drop(f);
    let out = std::process::Command::new("sgdisk").arg("-v").arg(&path).output().expect("sgdisk (package gdisk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(text.contains("No problems found"), "sgdisk -v on a {total}-sector disk:\n{text}");
    g.by_name("two").unwrap().last_lba
}

#[test]
fn grown_partitions_end_on_a_mib_boundary_even_on_odd_disk_sizes() {
    // 4 GiB, and odd enlargements: not a multiple of 1 MiB, of 4 KiB, or even.
    for total in [8_388_608u64, 8_388_608 + 1, 8_388_608 + 2047, 6_291_456 + 1234, 100_003] {
        let last = grow_file_and_check_with_sgdisk(512, total);
        assert_eq!((last + 1) % 2048, 0, "{total} sectors: the partition ends at {last}, not on a MiB boundary");
        assert!(last <= total - 34, "{total}: past the last usable sector");
        assert!(total - 34 - last < 2048, "{total}: more than a MiB left unused after {last}");
    }
    // 4096-byte sectors: 256 to a MiB.
    let mut g = Gpt::new(Guid::derive("disk"), 4096, 4096);
    g.add("data", T, Guid::derive("data"), 256, 511).unwrap();
    g.resize_disk(8_191).unwrap();
    assert!(g.grow_to_end(0).unwrap());
    assert_eq!(g.partitions[0].last_lba, 7_935, "{:?}", g.partitions[0]);
}

#[test]
fn a_partition_already_at_the_last_mib_boundary_does_not_grow_or_shrink() {
    let mut g = sample(16384);
    g.resize_disk(16384 + 100).unwrap();
    let idx = g.by_name("two").unwrap().index;
    assert!(g.grow_to_end(idx).unwrap());
    let end = g.by_name("two").unwrap().last_lba;
    // 16484 sectors: the last usable is 16450, the last MiB boundary 16384.
    assert_eq!(end, 16383);
    assert!(!g.grow_to_end(idx).unwrap());
    assert_eq!(g.by_name("two").unwrap().last_lba, end);
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
            assert!(matches!(e, TableError::OutsideRange { .. } | TableError::Overflow(_)), "entries at {lba}: {e}");
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

/// A disk with a volatile write cache: writes land in `pending` (a list of
/// sectors, in the order written) until [`SyncWrite::sync`] makes them
/// durable. Each sync records the durable image before it and the sectors
/// it makes durable, so a test can replay a power cut at that point with
/// any subset of those sectors having reached the platter.
struct CachedDisk {
    ss: usize,
    durable: Vec<u8>,
    /// The image as the writer sees it (durable plus cache).
    current: Vec<u8>,
    pos: u64,
    /// Sector numbers written since the last sync.
    pending: Vec<usize>,
    /// At each sync: the durable image before it and the sectors pending.
    syncs: Vec<(Vec<u8>, Vec<usize>)>,
    /// The sync (counted from 1) that fails, as a drive's failed cache
    /// flush: nothing pending becomes durable.
    fail_sync: Option<usize>,
}

impl CachedDisk {
    fn new(image: Vec<u8>, ss: usize) -> CachedDisk {
        CachedDisk {
            ss,
            durable: image.clone(),
            current: image,
            pos: 0,
            pending: Vec::new(),
            syncs: Vec::new(),
            fail_sync: None,
        }
    }
}

impl Write for CachedDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let start = self.pos as usize;
        let end = start + buf.len();
        if end > self.current.len() {
            return Err(io::Error::other("write past the end of the disk"));
        }
        self.current[start..end].copy_from_slice(buf);
        for sector in start / self.ss..end.div_ceil(self.ss) {
            if !self.pending.contains(&sector) {
                self.pending.push(sector);
            }
        }
        self.pos = end as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        // What File::flush does: nothing reaches the disk.
        Ok(())
    }
}

impl Seek for CachedDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            _ => unimplemented!("Gpt::write seeks from the start"),
        };
        Ok(self.pos)
    }
}

impl SyncWrite for CachedDisk {
    fn sync(&mut self) -> io::Result<()> {
        if self.fail_sync == Some(self.syncs.len() + 1) {
            return Err(io::Error::other("the drive's cache flush failed"));
        }
        let pending = std::mem::take(&mut self.pending);
        self.syncs.push((self.durable.clone(), pending.clone()));
        for s in pending {
            let r = s * self.ss..(s + 1) * self.ss;
            self.durable[r.clone()].copy_from_slice(&self.current[r]);
        }
        Ok(())
    }
}

/// The sets of cached sectors that a power cut may have let through: none,
/// all, each alone, all but each, and every combination of the written
/// regions (MBR, each header, each entry array, and the first sector of an
/// array alone, a torn array).
fn cut_subsets(pending: &[usize], ss: usize, disk_sectors: usize) -> Vec<Vec<usize>> {
    let array = (NUM_ENTRIES * ENTRY_SIZE).div_ceil(ss);
    let last = disk_sectors - 1;
    let regions: Vec<Vec<usize>> = [
        vec![0],
        vec![1],
        (2..2 + array).collect(),
        vec![2],
        vec![last],
        (last - array..last).collect(),
        vec![last - array],
    ]
    .into_iter()
    .map(|r| r.into_iter().filter(|s| pending.contains(s)).collect::<Vec<_>>())
    .filter(|r| !r.is_empty())
    .collect();
    let mut out = vec![Vec::new(), pending.to_vec()];
    for s in pending {
        out.push(vec![*s]);
        out.push(pending.iter().copied().filter(|t| t != s).collect());
    }
    for mask in 0u32..1 << regions.len() {
        let mut set: Vec<usize> =
            regions.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).flat_map(|(_, r)| r.clone()).collect();
        set.sort_unstable();
        set.dedup();
        out.push(set);
    }
    out
}

/// Growing the table to an enlarged disk, with a power cut at each sync
/// point letting any subset of the cached sectors through, always leaves
/// the old or the new table readable. Without the sync between the backup
/// and the primary, a cut that lets only the new primary header through
/// (or it and the MBR) leaves a header whose entries do not match, and no
/// backup where the reader looks for it (the old one is no longer at the
/// last sector): no table, no boot.
#[test]
fn a_power_cut_while_growing_leaves_the_old_or_the_new_table() {
    for ss in [512usize, 4096] {
        let mib = (crate::disk::MIB as usize) / ss;
        let (old_sectors, new_sectors) = (16 * mib, 32 * mib + 7);
        let mut old = Gpt::new(Guid::derive("disk"), ss as u64, old_sectors as u64);
        old.add("one", T, Guid::derive("one"), mib as u64, 4 * mib as u64 - 1).unwrap();
        old.add("data", T, Guid::derive("data"), 4 * mib as u64, 8 * mib as u64 - 1).unwrap();
        let mut image = Cursor::new(vec![0u8; old_sectors * ss]);
        old.write(&mut image).unwrap();
        // The disk is enlarged: the old backup is no longer in the last sector.
        let mut image = image.into_inner();
        image.resize(new_sectors * ss, 0);
        let disk_bytes = image.len() as u64;
        assert_eq!(Gpt::read(&mut Cursor::new(&image), ss as u64, disk_bytes).unwrap(), old);

        let mut new = old.clone();
        new.resize_disk(new_sectors as u64).unwrap();
        assert!(new.grow_to_end(1).unwrap());
        let mut disk = CachedDisk::new(image, ss);
        new.write(&mut disk).unwrap();
        assert!(disk.pending.is_empty(), "written after the last sync: {:?}", disk.pending);
        assert_eq!(Gpt::read(&mut Cursor::new(&disk.durable), ss as u64, disk_bytes).unwrap(), new);

        for (point, (before, pending)) in disk.syncs.iter().enumerate() {
            for subset in cut_subsets(pending, ss, new_sectors) {
                let mut after_cut = before.clone();
                for s in &subset {
                    let r = s * ss..(s + 1) * ss;
                    after_cut[r.clone()].copy_from_slice(&disk.current[r]);
                }
                let found = Gpt::read(&mut Cursor::new(&after_cut), ss as u64, disk_bytes);
                match found {
                    Ok(g) if g == old || g == new => {}
                    other => panic!(
                        "{ss}-byte sectors, cut before sync {} with sectors {subset:?} of {pending:?} written: {other:?}",
                        point + 1
                    ),
                }
            }
        }
        assert_eq!(disk.syncs.len(), 2, "a sync after the backup and one after the primary");
        // The first sync point holds exactly the backup, the second exactly the primary.
        let array = (NUM_ENTRIES * ENTRY_SIZE).div_ceil(ss);
        let mut first = disk.syncs[0].1.clone();
        first.sort_unstable();
        assert_eq!(first, (new_sectors - 1 - array..new_sectors).collect::<Vec<_>>());
        let mut second = disk.syncs[1].1.clone();
        second.sort_unstable();
        assert_eq!(second, (0..2 + array).collect::<Vec<_>>());
    }
}

/// A failed write says which step of the two-table write failed, not that
/// a table could not be read (it said "reading the partition table" for a
/// failed sync of the table being written).
#[test]
fn a_failed_sync_names_the_table_being_written() {
    for (fail_at, step) in [(1, "syncing the backup table"), (2, "syncing the primary table")] {
        let g = sample(1 << 15);
        let mut disk = CachedDisk::new(vec![0u8; (1 << 15) * 512], 512);
        disk.fail_sync = Some(fail_at);
        let e = g.write(&mut disk).unwrap_err().to_string();
        assert!(e.starts_with(step) && e.contains("cache flush failed"), "{fail_at}: {e}");
    }
    // A disk that ends before the backup table: its write fails first.
    let mut short = CachedDisk::new(vec![0u8; 4096], 512);
    let e = sample(1 << 15).write(&mut short).unwrap_err().to_string();
    assert!(e.starts_with("writing the backup table") && e.contains("past the end"), "{e}");
}
