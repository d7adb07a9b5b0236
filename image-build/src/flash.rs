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
mod tests;
