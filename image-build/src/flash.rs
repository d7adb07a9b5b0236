//! `berth-image flash DEVICE`: writes `berth.raw` to a disk (a USB stick,
//! a server's disk) or to a disk image file, then reads it back and checks
//! it against the image.
//!
//! Before anything is written the target is checked through a [`Machine`]
//! (the real one reads `/proc/self/mountinfo` and sysfs; the tests give
//! fakes): a partition, a disk that holds the running system (the disks
//! under `/`, `/boot`, `/boot/efi`, `/efi` or `/usr`, through device-mapper
//! and md), a disk with a mounted partition or one in use by device-mapper
//! or md, and a disk smaller than the image are refused. A target whose
//! first MiB is not all zero holds data: it is overwritten only after a
//! `y` on the terminal, or with `--yes`; without a terminal and without
//! `--yes` it is refused.
//!
//! A block device is opened with `O_EXCL` (the kernel refuses it while
//! mounted) and every byte of the image is written, zeros too, so nothing
//! of the old contents survives inside the image's range. A regular file
//! keeps its size (or grows to the image's): it is emptied first and
//! written sparsely, like a fresh disk. Then fsync, the page cache of the
//! target is dropped, and the written range is read back: its SHA-256 must
//! be the image's.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::packages::hex;
use crate::progress::{self, Unit};

/// How much of the start of a target tells whether it holds data.
pub const HEAD: u64 = 1024 * 1024;
/// The write and read-back chunk.
const CHUNK: usize = 4 * 1024 * 1024;
/// `_IO(0x12, 95)`: re-read the partition table of a block device.
const BLKRRPART: libc::c_ulong = 0x125f;
/// Mount points whose disks carry the running system.
pub const SYSTEM_MOUNTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/efi", "/usr"];

/// A block device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    /// The driver's number (8: SCSI disks, 259: NVMe partitions, 253: dm).
    pub major: u32,
    /// The device's number within the driver.
    pub minor: u32,
}

impl DevNum {
    /// `MAJOR:MINOR` as in mountinfo and sysfs.
    pub fn parse(s: &str) -> Option<DevNum> {
        let (a, b) = s.split_once(':')?;
        Some(DevNum { major: a.parse().ok()?, minor: b.parse().ok()? })
    }

    fn from_rdev(rdev: u64) -> DevNum {
        DevNum { major: libc::major(rdev), minor: libc::minor(rdev) }
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What a target path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A block device.
    Block(DevNum),
    /// A regular file (a disk image).
    File,
    /// Nothing there yet (a new disk image file).
    Missing,
    /// A directory, a character device, a socket...
    Other,
}

/// The facts about the machine the checks read: a trait so the refusals
/// can be tested against fakes.
pub trait Machine {
    /// What `path` is.
    fn kind(&self, path: &Path) -> std::io::Result<Kind>;
    /// The text of `/proc/self/mountinfo`.
    fn mountinfo(&self) -> std::io::Result<String>;
    /// The kernel's name of a block device (`sda`, `nvme0n1p2`, `dm-0`);
    /// `None` when sysfs does not know it.
    fn name(&self, dev: DevNum) -> Option<String>;
    /// The whole disk a partition belongs to; `None` for a whole disk (or
    /// an unknown device).
    fn parent_disk(&self, dev: DevNum) -> Option<DevNum>;
    /// The devices a device-mapper or md device is built on (sysfs `slaves`).
    fn slaves(&self, dev: DevNum) -> Vec<DevNum>;
    /// The partitions of a whole disk.
    fn partitions(&self, disk: DevNum) -> Vec<DevNum>;
    /// The devices built on `dev` (sysfs `holders`: dm, md).
    fn holders(&self, dev: DevNum) -> Vec<String>;
    /// The size of the target in bytes (a block device's capacity; a file's
    /// length, 0 when missing).
    fn size(&self, path: &Path) -> std::io::Result<u64>;
    /// Up to `len` bytes from the start of `path` (fewer when it is shorter).
    fn head(&self, path: &Path, len: u64) -> std::io::Result<Vec<u8>>;
    /// Whether a person can be asked (stdin is a terminal).
    fn interactive(&self) -> bool;
    /// Asks `question` on the terminal; `true` only for an answer of y or yes.
    fn confirm(&self, question: &str) -> std::io::Result<bool>;
}

/// Why a target is refused, or flashing failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no such device (a disk is written whole: /dev/sdX, /dev/nvmeXnY; see `lsblk`)", .0.display())]
    NoSuchDevice(PathBuf),
    #[error("{}: not a block device or a regular file", .0.display())]
    NotADisk(PathBuf),
    #[error("{}: is the image itself", .0.display())]
    SameAsImage(PathBuf),
    #[error("{} is a partition of {disk}: flash the whole disk (/dev/{disk})", .path.display())]
    Partition { path: PathBuf, disk: String },
    #[error("{} holds the running system ({what} is on it): refusing to overwrite it", .path.display())]
    RunningSystem { path: PathBuf, what: String },
    #[error("{} is mounted ({what}): unmount it first", .path.display())]
    Mounted { path: PathBuf, what: String },
    #[error("{} is in use by {holders} (device-mapper, LVM, RAID): stop that first", .path.display())]
    InUse { path: PathBuf, holders: String },
    #[error("{} has {size} bytes, less than the image's {image}", .path.display())]
    TooSmall { path: PathBuf, size: u64, image: u64 },
    #[error(
        "{} holds data (its first MiB is not all zero) and there is no terminal to ask: \
         pass --yes to overwrite it",
        .0.display()
    )]
    HoldsData(PathBuf),
    #[error("not overwriting {}", .0.display())]
    Declined(PathBuf),
    #[error(
        "read-back of {} does not match the image: sha256 {written} written, {read} read back \
         (a failing or fake-capacity stick?)",
        .path.display()
    )]
    Mismatch { path: PathBuf, written: String, read: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FlashError + '_ {
    move |source| FlashError::Io { path: path.to_path_buf(), source }
}

/// What `berth-image flash` was asked.
#[derive(Clone, Debug)]
pub struct FlashOptions {
    /// The disk (`/dev/sdX`) or file to write.
    pub target: PathBuf,
    /// The image (`berth.raw`).
    pub image: PathBuf,
    /// Overwrite a target that holds data without asking.
    pub yes: bool,
}

/// The target as the checks found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A whole disk.
    Disk(DevNum),
    /// A regular file, or a file to create.
    File,
}

/// One mount: its device, source and mount point (mountinfo fields 3, 10, 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device number the kernel shows (anonymous, 0:N, for btrfs, tmpfs...).
    pub dev: DevNum,
    /// What was mounted (`/dev/sda2`, `tmpfs`).
    pub source: String,
    /// Where.
    pub point: String,
}

/// The mounts of `/proc/self/mountinfo` (octal escapes in mount points
/// decoded: `\040` is a space).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dev = DevNum::parse(fields.get(2)?)?;
            let point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let source = unescape(fields.get(sep + 2)?);
            Some(Mount { dev, source, point })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole disks a device sits on: itself (or its disk, for a
/// partition), or through device-mapper and md the disks of everything
/// underneath.
pub fn backing_disks(m: &dyn Machine, dev: DevNum) -> BTreeSet<DevNum> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dev];
    let mut seen = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        let slaves = m.slaves(d);
        if slaves.is_empty() {
            if m.name(d).is_some() {
                out.insert(m.parent_disk(d).unwrap_or(d));
            }
        } else {
            todo.extend(slaves);
        }
    }
    out
}

/// The devices a mount sits on: its device number, and the device its
/// source names when that is a block device (btrfs shows an anonymous
/// device number in mountinfo).
fn mount_disks(m: &dyn Machine, mount: &Mount) -> BTreeSet<DevNum> {
    let mut disks = backing_disks(m, mount.dev);
    if mount.source.starts_with("/dev/") {
        if let Ok(Kind::Block(dev)) = m.kind(Path::new(&mount.source)) {
            disks.extend(backing_disks(m, dev));
        }
    }
    disks
}

/// Checks `opts.target` against the machine and the image (of
/// `image_len` bytes); asks before overwriting data. Nothing is written.
pub fn check(m: &dyn Machine, opts: &FlashOptions, image_len: u64) -> Result<Target, FlashError> {
    let path = &opts.target;
    let kind = m.kind(path).map_err(io_err(path))?;
    let target = match kind {
        Kind::Missing if path.starts_with("/dev") => return Err(FlashError::NoSuchDevice(path.clone())),
        Kind::Missing | Kind::File => Target::File,
        Kind::Other => return Err(FlashError::NotADisk(path.clone())),
        Kind::Block(dev) => Target::Disk(dev),
    };
    if let Target::Disk(dev) = target {
        if let Some(disk) = m.parent_disk(dev) {
            return Err(FlashError::Partition {
                path: path.clone(),
                disk: m.name(disk).unwrap_or_else(|| disk.to_string()),
            });
        }
        let mounts = parse_mountinfo(&m.mountinfo().map_err(io_err(Path::new("/proc/self/mountinfo")))?);
        let on_it: Vec<&Mount> = mounts.iter().filter(|mt| mount_disks(m, mt).contains(&dev)).collect();
        let describe = |mt: &&Mount| format!("{} on {}", mt.source, mt.point);
        let system: Vec<String> =
            on_it.iter().filter(|mt| SYSTEM_MOUNTS.contains(&mt.point.as_str())).map(describe).collect();
        if !system.is_empty() {
            return Err(FlashError::RunningSystem { path: path.clone(), what: system.join(", ") });
        }
        if !on_it.is_empty() {
            let what: Vec<String> = on_it.iter().map(describe).collect();
            return Err(FlashError::Mounted { path: path.clone(), what: what.join(", ") });
        }
        let holders: Vec<String> = std::iter::once(dev).chain(m.partitions(dev)).flat_map(|p| m.holders(p)).collect();
        if !holders.is_empty() {
            return Err(FlashError::InUse { path: path.clone(), holders: holders.join(", ") });
        }
        let size = m.size(path).map_err(io_err(path))?;
        if size < image_len {
            return Err(FlashError::TooSmall { path: path.clone(), size, image: image_len });
        }
    }
    let head = match kind {
        Kind::Missing => Vec::new(),
        _ => m.head(path, HEAD).map_err(io_err(path))?,
    };
    if head.iter().any(|b| *b != 0) && !opts.yes {
        if !m.interactive() {
            return Err(FlashError::HoldsData(path.clone()));
        }
        let size = m.size(path).unwrap_or(0);
        let question = format!(
            "{} ({:.1} GiB) holds data. Overwrite it with {}? [y/N] ",
            path.display(),
            size as f64 / (1u64 << 30) as f64,
            opts.image.display()
        );
        if !m.confirm(&question).map_err(io_err(path))? {
            return Err(FlashError::Declined(path.clone()));
        }
    }
    Ok(target)
}

/// This machine: `/proc/self/mountinfo`, `/sys/dev/block`, the terminal.
pub struct RealMachine;

fn sys_dev(dev: DevNum) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{dev}"))
}

fn dev_file(path: &Path) -> Option<DevNum> {
    DevNum::parse(std::fs::read_to_string(path.join("dev")).ok()?.trim())
}

fn dir_names(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

impl Machine for RealMachine {
    fn kind(&self, path: &Path) -> std::io::Result<Kind> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kind::Missing),
            Err(e) => Err(e),
            Ok(md) if md.file_type().is_block_device() => Ok(Kind::Block(DevNum::from_rdev(md.rdev()))),
            Ok(md) if md.is_file() => Ok(Kind::File),
            Ok(_) => Ok(Kind::Other),
        }
    }

    fn mountinfo(&self) -> std::io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn name(&self, dev: DevNum) -> Option<String> {
        let link = std::fs::canonicalize(sys_dev(dev)).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    fn parent_disk(&self, dev: DevNum) -> Option<DevNum> {
        let dir = std::fs::canonicalize(sys_dev(dev)).ok()?;
        if !dir.join("partition").exists() {
            return None;
        }
        dev_file(dir.parent()?)
    }

    fn slaves(&self, dev: DevNum) -> Vec<DevNum> {
        let dir = sys_dev(dev).join("slaves");
        dir_names(&dir).iter().filter_map(|n| dev_file(&dir.join(n))).collect()
    }

    fn partitions(&self, disk: DevNum) -> Vec<DevNum> {
        let dir = sys_dev(disk);
        dir_names(&dir)
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.join("partition").exists())
            .filter_map(|p| dev_file(&p))
            .collect()
    }

    fn holders(&self, dev: DevNum) -> Vec<String> {
        dir_names(&sys_dev(dev).join("holders"))
    }

    fn size(&self, path: &Path) -> std::io::Result<u64> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
            Ok(md) if md.is_file() => Ok(md.len()),
            Ok(_) => File::open(path)?.seek(SeekFrom::End(0)),
        }
    }

    fn head(&self, path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)?.take(len).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn interactive(&self) -> bool {
        use std::io::IsTerminal;
        std::io::stdin().is_terminal()
    }

    fn confirm(&self, question: &str) -> std::io::Result<bool> {
        eprint!("{question}");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Flashed {
    /// The image's length: what was written and read back.
    pub bytes: u64,
    /// Hex SHA-256 of the image, and of what was read back.
    pub sha256: String,
}

/// `berth-image flash`: checks, writes, syncs, reads back and compares.
pub fn flash(opts: &FlashOptions) -> Result<Flashed, FlashError> {
    flash_on(&RealMachine, opts)
}

/// [`flash`] against the given machine's checks.
pub fn flash_on(m: &dyn Machine, opts: &FlashOptions) -> Result<Flashed, FlashError> {
    let image = &opts.image;
    let image_md = std::fs::metadata(image).map_err(io_err(image))?;
    if let Ok(md) = std::fs::metadata(&opts.target) {
        if md.dev() == image_md.dev() && md.ino() == image_md.ino() {
            return Err(FlashError::SameAsImage(opts.target.clone()));
        }
    }
    let len = image_md.len();
    let target = check(m, opts, len)?;
    let path = &opts.target;
    let mut out = match target {
        Target::Disk(_) => OpenOptions::new().write(true).read(true).custom_flags(libc::O_EXCL).open(path),
        Target::File => OpenOptions::new().write(true).read(true).create(true).truncate(false).open(path),
    }
    .map_err(|e| match e.raw_os_error() {
        // O_EXCL on a block device: something holds it (a mount the checks
        // could not see from here, swap, a RAID member).
        Some(libc::EBUSY) => FlashError::InUse {
            path: path.clone(),
            holders: "the kernel (busy: mounted elsewhere, swap or a RAID member?)".into(),
        },
        _ => io_err(path)(e),
    })?;
    if target == Target::File {
        // A fresh disk of the same size (or the image's): all holes.
        let old = out.metadata().map_err(io_err(path))?.len();
        out.set_len(0).and_then(|()| out.set_len(old.max(len))).map_err(io_err(path))?;
    }
    let sparse = target == Target::File;
    let mut src = File::open(image).map_err(io_err(image))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut task = progress::bar(format!("flash: writing {}", path.display()), Unit::Bytes, len);
    let mut at = 0u64;
    while at < len {
        let n = read_full(&mut src, &mut buf).map_err(io_err(image))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hash.update(chunk);
        if !(sparse && chunk.iter().all(|b| *b == 0)) {
            out.seek(SeekFrom::Start(at)).and_then(|_| out.write_all(chunk)).map_err(io_err(path))?;
        }
        at += n as u64;
        task.inc(n as u64);
    }
    task.finish();
    let written = hex(&hash.finalize());
    progress::spin(format!("flash: syncing {}", path.display()), || out.sync_all()).map_err(io_err(path))?;
    // Read what is on the device, not what is in the page cache.
    // SAFETY: posix_fadvise only reads the descriptor, which `out` keeps open.
    unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&out), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut back = Sha256::new();
    let mut task = progress::bar(format!("flash: verifying {}", path.display()), Unit::Bytes, len);
    out.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut left = len;
    while left > 0 {
        let want = (CHUNK as u64).min(left) as usize;
        let n = read_full(&mut out, &mut buf[..want]).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        back.update(&buf[..n]);
        left -= n as u64;
        task.inc(n as u64);
    }
    task.finish();
    let read = hex(&back.finalize());
    if read != written || left != 0 {
        return Err(FlashError::Mismatch { path: path.clone(), written, read });
    }
    if let Target::Disk(_) = target {
        // The kernel reads the new partition table (sdX1...), best effort:
        // the disk is right either way, and the next boot reads it.
        // SAFETY: BLKRRPART takes no argument; the descriptor is open.
        unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&out), BLKRRPART) };
    }
    Ok(Flashed { bytes: len, sha256: written })
}

fn read_full(r: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    const SDA: DevNum = DevNum { major: 8, minor: 0 };
    const SDA1: DevNum = DevNum { major: 8, minor: 1 };
    const SDA2: DevNum = DevNum { major: 8, minor: 2 };
    const SDB: DevNum = DevNum { major: 8, minor: 16 };
    const SDB1: DevNum = DevNum { major: 8, minor: 17 };
    const SDC: DevNum = DevNum { major: 8, minor: 32 };
    const DM0: DevNum = DevNum { major: 253, minor: 0 };
    const GIB: u64 = 1 << 30;

    /// A machine of disks: sda (the system: sda2 is /, sda1 /boot/efi),
    /// sdb (a stick), sdc; devices as given.
    struct Fake {
        paths: BTreeMap<PathBuf, Kind>,
        names: BTreeMap<DevNum, &'static str>,
        parents: BTreeMap<DevNum, DevNum>,
        slaves: BTreeMap<DevNum, Vec<DevNum>>,
        holders: BTreeMap<DevNum, Vec<String>>,
        mountinfo: String,
        size: u64,
        head: Vec<u8>,
        terminal: bool,
        answer: bool,
        asked: RefCell<Vec<String>>,
    }

    fn mount_line(id: u32, dev: DevNum, point: &str, source: &str) -> String {
        format!("{id} 1 {dev} / {point} rw,relatime shared:1 - ext4 {source} rw\n")
    }

    impl Fake {
        fn new() -> Fake {
            let mut paths = BTreeMap::new();
            for (p, d) in [("/dev/sda", SDA), ("/dev/sda1", SDA1), ("/dev/sda2", SDA2), ("/dev/sdb", SDB)] {
                paths.insert(PathBuf::from(p), Kind::Block(d));
            }
            paths.insert("/dev/sdb1".into(), Kind::Block(SDB1));
            paths.insert("/dev/sdc".into(), Kind::Block(SDC));
            paths.insert("/dev/dm-0".into(), Kind::Block(DM0));
            paths.insert("/dev/null".into(), Kind::Other);
            paths.insert("/tmp/disk.raw".into(), Kind::File);
            let names = BTreeMap::from([
                (SDA, "sda"),
                (SDA1, "sda1"),
                (SDA2, "sda2"),
                (SDB, "sdb"),
                (SDB1, "sdb1"),
                (SDC, "sdc"),
                (DM0, "dm-0"),
            ]);
            let parents = BTreeMap::from([(SDA1, SDA), (SDA2, SDA), (SDB1, SDB)]);
            let mountinfo = [
                mount_line(20, SDA2, "/", "/dev/sda2"),
                mount_line(21, SDA1, "/boot/efi", "/dev/sda1"),
                "22 20 0:5 / /proc rw - proc proc rw\n".to_string(),
                "23 20 0:25 / /tmp rw - tmpfs tmpfs rw\n".to_string(),
            ]
            .concat();
            Fake {
                paths,
                names,
                parents,
                slaves: BTreeMap::new(),
                holders: BTreeMap::new(),
                mountinfo,
                size: 32 * GIB,
                head: vec![0; HEAD as usize],
                terminal: false,
                answer: false,
                asked: RefCell::new(Vec::new()),
            }
        }

        fn mount(mut self, dev: DevNum, point: &str, source: &str) -> Fake {
            self.mountinfo.push_str(&mount_line(99, dev, point, source));
            self
        }
    }

    impl Machine for Fake {
        fn kind(&self, path: &Path) -> std::io::Result<Kind> {
            Ok(self.paths.get(path).copied().unwrap_or(Kind::Missing))
        }
        fn mountinfo(&self) -> std::io::Result<String> {
            Ok(self.mountinfo.clone())
        }
        fn name(&self, dev: DevNum) -> Option<String> {
            self.names.get(&dev).map(|s| s.to_string())
        }
        fn parent_disk(&self, dev: DevNum) -> Option<DevNum> {
            self.parents.get(&dev).copied()
        }
        fn slaves(&self, dev: DevNum) -> Vec<DevNum> {
            self.slaves.get(&dev).cloned().unwrap_or_default()
        }
        fn partitions(&self, disk: DevNum) -> Vec<DevNum> {
            self.parents.iter().filter(|(_, d)| **d == disk).map(|(p, _)| *p).collect()
        }
        fn holders(&self, dev: DevNum) -> Vec<String> {
            self.holders.get(&dev).cloned().unwrap_or_default()
        }
        fn size(&self, _: &Path) -> std::io::Result<u64> {
            Ok(self.size)
        }
        fn head(&self, _: &Path, len: u64) -> std::io::Result<Vec<u8>> {
            Ok(self.head[..len.min(self.head.len() as u64) as usize].to_vec())
        }
        fn interactive(&self) -> bool {
            self.terminal
        }
        fn confirm(&self, question: &str) -> std::io::Result<bool> {
            self.asked.borrow_mut().push(question.to_string());
            Ok(self.answer)
        }
    }

    fn opts(target: &str, yes: bool) -> FlashOptions {
        FlashOptions { target: target.into(), image: "berth.raw".into(), yes }
    }

    fn check_fake(m: &Fake, target: &str, yes: bool) -> Result<Target, FlashError> {
        check(m, &opts(target, yes), 1122 << 20)
    }

    #[test]
    fn an_idle_empty_disk_and_a_file_are_taken() {
        let m = Fake::new();
        assert_eq!(check_fake(&m, "/dev/sdb", false).unwrap(), Target::Disk(SDB));
        assert_eq!(check_fake(&m, "/tmp/disk.raw", false).unwrap(), Target::File);
        assert_eq!(check_fake(&m, "/tmp/new.raw", false).unwrap(), Target::File);
        assert!(m.asked.borrow().is_empty());
    }

    #[test]
    fn the_disk_of_the_running_system_is_refused() {
        let m = Fake::new();
        let e = check_fake(&m, "/dev/sda", true).unwrap_err();
        assert!(matches!(&e, FlashError::RunningSystem { what, .. } if what.contains("/dev/sda2 on /")), "{e}");
        // The root on device-mapper (LVM, LUKS, verity) over sdc.
        let mut m = Fake::new();
        m.mountinfo =
            [mount_line(20, DM0, "/", "/dev/mapper/root"), mount_line(21, SDB1, "/boot", "/dev/sdb1")].concat();
        m.slaves.insert(DM0, vec![SDC]);
        assert!(matches!(check_fake(&m, "/dev/sdc", true), Err(FlashError::RunningSystem { .. })));
        let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
        assert!(matches!(&e, FlashError::RunningSystem { what, .. } if what.contains("on /boot")), "{e}");
    }

    #[test]
    fn a_disk_with_a_mounted_partition_is_refused() {
        let m = Fake::new().mount(SDB1, "/media/stick", "/dev/sdb1");
        let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
        assert!(matches!(&e, FlashError::Mounted { what, .. } if what == "/dev/sdb1 on /media/stick"), "{e}");
        assert!(e.to_string().contains("unmount it first"), "{e}");
        // A btrfs-like mount: an anonymous device number, the source names the partition.
        let m = Fake::new().mount(DevNum { major: 0, minor: 40 }, "/srv", "/dev/sdb1");
        assert!(matches!(check_fake(&m, "/dev/sdb", true), Err(FlashError::Mounted { .. })));
    }

    #[test]
    fn a_disk_under_device_mapper_is_refused() {
        let mut m = Fake::new();
        m.holders.insert(SDB1, vec!["dm-3".into()]);
        let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
        assert!(matches!(&e, FlashError::InUse { holders, .. } if holders == "dm-3"), "{e}");
    }

    #[test]
    fn partitions_and_other_things_are_refused() {
        let m = Fake::new();
        let e = check_fake(&m, "/dev/sdb1", true).unwrap_err();
        assert!(matches!(&e, FlashError::Partition { disk, .. } if disk == "sdb"), "{e}");
        assert!(matches!(check_fake(&m, "/dev/null", true), Err(FlashError::NotADisk(_))));
        assert!(matches!(check_fake(&m, "/dev/sdz", true), Err(FlashError::NoSuchDevice(_))));
        let mut small = Fake::new();
        small.size = GIB;
        assert!(matches!(check_fake(&small, "/dev/sdb", true), Err(FlashError::TooSmall { .. })));
    }

    #[test]
    fn data_is_overwritten_only_when_the_user_says_so() {
        let mut m = Fake::new();
        m.head[510] = 0x55;
        // No terminal, no --yes: refused without asking.
        let e = check_fake(&m, "/dev/sdb", false).unwrap_err();
        assert!(matches!(e, FlashError::HoldsData(_)), "{e}");
        assert!(e.to_string().contains("--yes"), "{e}");
        // --yes: taken without asking.
        assert_eq!(check_fake(&m, "/dev/sdb", true).unwrap(), Target::Disk(SDB));
        assert!(m.asked.borrow().is_empty());
        // A terminal: asked; N declines, y accepts.
        m.terminal = true;
        assert!(matches!(check_fake(&m, "/dev/sdb", false), Err(FlashError::Declined(_))));
        m.answer = true;
        assert_eq!(check_fake(&m, "/tmp/disk.raw", false).unwrap(), Target::File);
        let asked = m.asked.borrow();
        assert_eq!(asked.len(), 2);
        assert!(asked[0].starts_with("/dev/sdb (32.0 GiB) holds data. Overwrite it with berth.raw? [y/N]"));
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 36 0:5 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m[0],
            Mount { dev: DevNum { major: 98, minor: 0 }, source: "/dev/root".into(), point: "/mnt/my disk".into() }
        );
        assert_eq!(m[1].point, "/proc");
        assert_eq!(DevNum::parse("259:3"), Some(DevNum { major: 259, minor: 3 }));
        assert_eq!(DevNum::parse("x"), None);
    }

    /// A real write to a file: its size is kept, old data is gone, the
    /// read-back matches; the image itself is refused as a target.
    #[test]
    fn a_file_is_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("berth-flash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("image.raw");
        let mut data = vec![0u8; 3 * CHUNK + 4096];
        data[..8].copy_from_slice(b"EFI PART");
        data[2 * CHUNK + 5] = 9;
        std::fs::write(&image, &data).unwrap();
        let target = dir.join("disk.raw");
        let mut old = vec![0u8; 20 * CHUNK];
        old[CHUNK + 1] = 1; // data inside the image's range, where the image is zero
        std::fs::write(&target, &old).unwrap();
        let o = FlashOptions { target: target.clone(), image: image.clone(), yes: true };
        let done = flash_on(&RealMachine, &o).unwrap();
        assert_eq!(done.bytes, data.len() as u64);
        assert_eq!(done.sha256, hex(&Sha256::digest(&data)));
        let after = std::fs::read(&target).unwrap();
        assert_eq!(after.len(), old.len(), "the file keeps its size");
        assert_eq!(&after[..data.len()], &data[..]);
        assert!(after[data.len()..].iter().all(|b| *b == 0));
        // Without --yes and without a terminal, the data on it is kept.
        let o = FlashOptions { yes: false, ..o };
        if !RealMachine.interactive() {
            assert!(matches!(flash_on(&RealMachine, &o), Err(FlashError::HoldsData(_))));
        }
        let same = FlashOptions { target: image.clone(), image: image.clone(), yes: true };
        assert!(matches!(flash_on(&RealMachine, &same), Err(FlashError::SameAsImage(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
