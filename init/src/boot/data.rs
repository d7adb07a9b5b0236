//! The data partition: grow it to the end of the disk, format it once,
//! check it on a later boot when it was not unmounted cleanly, mount it on
//! /var, and put the /etc overlay on it.

use std::path::{Path, PathBuf};

use berth_layout::disk::{DATA_FORMATTING_ATTR, MIB};
use berth_layout::gpt::GptError;
use berth_layout::paths::{DATA_MOUNT, ETC_UPPER, ETC_WORK, ROOT_HOME, ROOT_SSH_DIR};
use nix::mount::MsFlags;

use super::discover::{self, DiscoverError, RootDisk};
use super::ext4::{self, Content};
use super::mounts::{self, MountError};
use super::system::{MountSpec, System};
use crate::reaper::ExitStatus;

pub const MKE2FS: &str = "/usr/sbin/mke2fs";
pub const E2FSCK: &str = "/usr/sbin/e2fsck";
pub const RESIZE2FS: &str = "/usr/sbin/resize2fs";
/// The filesystem's label, as `mke2fs -L` sets it.
pub const FS_LABEL: &str = "data";
/// A partition this much bigger than its filesystem gets the filesystem
/// grown. resize2fs may leave a too-small last block group unused; the
/// slack keeps that from running resize2fs on every boot.
pub const RESIZE_SLACK: u64 = 8 * MIB;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(
        "{disk}: no partition of type {} labelled {:?}",
        berth_layout::disk::DATA_TYPE,
        berth_layout::disk::DATA_LABEL
    )]
    NoDataPartition { disk: PathBuf },
    #[error("{disk}: growing the partition table: {source}")]
    Grow { disk: PathBuf, source: GptError },
    #[error("{disk}: writing the partition table: {source}")]
    WriteTable { disk: PathBuf, source: std::io::Error },
    #[error("{disk}: telling the kernel partition {number} now has {length} bytes (BLKPG): {source}")]
    Blkpg { disk: PathBuf, number: usize, length: u64, source: std::io::Error },
    #[error("{device}: the kernel reports {have} bytes after resizing it to {want}")]
    KernelSize { device: PathBuf, have: u64, want: u64 },
    #[error("{disk}: recording that the data partition is {what}: {error}")]
    FormatRecord { disk: PathBuf, what: &'static str, error: String },
    #[error("{device}: holds neither an ext4 filesystem nor zeros; not formatting it, as it may hold data")]
    UnknownContent { device: PathBuf },
    #[error("{device}: running {tool}: {source}")]
    Spawn { device: PathBuf, tool: &'static str, source: std::io::Error },
    #[error("{device}: {tool} failed ({status})")]
    Tool { device: PathBuf, tool: &'static str, status: ExitStatus },
    #[error("{device}: e2fsck found errors it could not fix ({status})")]
    Fsck { device: PathBuf, status: ExitStatus },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("creating {path}: {source}")]
    Mkdir { path: PathBuf, source: std::io::Error },
}

/// What `e2fsck -p` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsck {
    Clean,
    Repaired,
    /// Exit 2: errors fixed, "the system should be rebooted". That matters
    /// for the root; the data partition is not mounted yet, so go on.
    RebootRecommended,
}

impl Fsck {
    /// e2fsck's exit code is a bit mask: 1 fixed, 2 reboot, 4 left
    /// uncorrected, 8 operational error, ...
    pub fn from_status(status: ExitStatus) -> Option<Fsck> {
        match status.code()? {
            0 => Some(Fsck::Clean),
            1 => Some(Fsck::Repaired),
            2 | 3 => Some(Fsck::RebootRecommended),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Fsck::Clean => "clean",
            Fsck::Repaired => "repaired",
            Fsck::RebootRecommended => "repaired, reboot recommended",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// First boot: formatted, `bytes` large.
    Formatted { bytes: u64 },
    /// Unmounted cleanly, no errors recorded: `e2fsck -p` would only have
    /// said "clean", so it was not run (its start, from a cold page cache,
    /// was on every boot's path to the services).
    Clean,
    /// `e2fsck -p` ran, for `reason` ([`ext4::Superblock::check_reason`]).
    Checked { reason: String, fsck: Fsck },
}

/// The facts of this boot's data partition setup, for the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataReport {
    pub device: PathBuf,
    /// Partition size before and after growing, in bytes.
    pub grew: Option<(u64, u64)>,
    pub prepared: Prepared,
    /// Set when the filesystem was smaller than its partition.
    pub resized: Option<Resize>,
    /// Why root's home or its `.ssh` could not be made (a file in the
    /// way): a warning, since only SSH logins as root need them.
    pub root_home: Option<String>,
}

/// Growing the filesystem to its partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Filesystem size before and after, in bytes.
    Grew { from: u64, to: u64 },
    /// The filesystem is mounted and whole, only smaller than it could be:
    /// a warning, not a reason to keep the machine from serving.
    Failed { fs: u64, partition: u64, error: String },
}

fn mib(bytes: u64) -> u64 {
    bytes / MIB
}

impl DataReport {
    pub fn lines(&self) -> Vec<String> {
        let dev = self.device.display();
        let mut out = Vec::new();
        if let Some((from, to)) = self.grew {
            out.push(format!("data: grew {dev} from {} to {} MiB", mib(from), mib(to)));
        }
        let state = match &self.prepared {
            Prepared::Formatted { bytes } => {
                out.push(format!("data: formatted {dev} ({} MiB)", mib(*bytes)));
                "new".to_string()
            }
            Prepared::Clean => "clean".to_string(),
            Prepared::Checked { reason, fsck } => format!("checked, as {reason}: {}", fsck.describe()),
        };
        out.push(format!("data: mounted {dev} on {DATA_MOUNT} ({state})"));
        match &self.resized {
            Some(Resize::Grew { from, to }) => {
                out.push(format!("data: resized the filesystem on {dev} from {} to {} MiB", mib(*from), mib(*to)))
            }
            Some(Resize::Failed { fs, partition, error }) => out.push(format!(
                "data: WARNING: the filesystem on {dev} stays at {} MiB of its {} MiB partition: {error}",
                mib(*fs),
                mib(*partition)
            )),
            None => {}
        }
        if let Some(e) = &self.root_home {
            out.push(format!("data: WARNING: {e}; root's SSH keys ({ROOT_SSH_DIR}/authorized_keys) cannot be read"));
        }
        out
    }
}

/// The data partition as found on the boot disk.
#[derive(Clone, Debug)]
pub struct DataPartition {
    pub index: usize,
    pub number: usize,
    /// Kernel name: `vda4`, `nvme0n1p4`.
    pub name: String,
    pub device: PathBuf,
    /// The GPT says a format of it began and did not finish.
    pub unfinished_format: bool,
}

fn find_data(sys: &dyn System, root: &RootDisk) -> Result<DataPartition, DataError> {
    let part =
        discover::data_partition(&root.gpt).ok_or_else(|| DataError::NoDataPartition { disk: root.device.clone() })?;
    let name = discover::partition_name(sys, &root.name, part.number())?;
    Ok(DataPartition {
        index: part.index,
        number: part.number(),
        device: Path::new("/dev").join(&name),
        name,
        unfinished_format: part.attributes & DATA_FORMATTING_ATTR != 0,
    })
}

/// Grows the data partition to the end of an enlarged disk. Returns its
/// old and new size when it grew.
fn grow(sys: &mut dyn System, root: &RootDisk, data: &DataPartition) -> Result<Option<(u64, u64)>, DataError> {
    let ss = root.sector_size;
    let disk_sectors = root.size_bytes / ss;
    if disk_sectors < root.gpt.total_sectors {
        // A shrunk disk: the backup table is gone. Nothing here can fix
        // that safely; the primary table still describes the partitions.
        crate::info!("data: {} is smaller than its partition table says; not resizing", root.device.display());
        return Ok(None);
    }
    let grow_err = |source| DataError::Grow { disk: root.device.clone(), source };
    let mut gpt = root.gpt.clone();
    if disk_sectors > gpt.total_sectors {
        gpt.resize_disk(disk_sectors).map_err(grow_err)?;
    }
    let grew = gpt.grow_to_end(data.index).map_err(grow_err)?;
    if gpt == root.gpt {
        return Ok(None);
    }
    let write_err = |source| DataError::WriteTable { disk: root.device.clone(), source };
    let mut disk = sys.open_disk(&root.device, true).map_err(write_err)?;
    // Backup table, sync, primary table, sync: a power cut at any point
    // leaves the old or the new table readable (see Gpt::write).
    gpt.write(&mut disk).map_err(|source| DataError::Grow { disk: root.device.clone(), source })?;
    drop(disk);
    if !grew {
        // Only the backup table moved to the new end of the disk.
        return Ok(None);
    }
    let (old, new) = match (
        root.gpt.partitions.iter().find(|p| p.index == data.index),
        gpt.partitions.iter().find(|p| p.index == data.index),
    ) {
        (Some(old), Some(new)) => (old.clone(), new.clone()),
        _ => {
            return Err(grow_err(GptError::NoSuchPartition(data.index)));
        }
    };
    let start = new.first_lba * ss;
    let length = new.sectors() * ss;
    // BLKRRPART would fail with EBUSY: the root is in use on this disk.
    sys.resize_partition(&root.device, data.number, start, length).map_err(|source| DataError::Blkpg {
        disk: root.device.clone(),
        number: data.number,
        length,
        source,
    })?;
    let have = discover::kernel_partition_bytes(sys, &data.name)?;
    if have != length {
        return Err(DataError::KernelSize { device: data.device.clone(), have, want: length });
    }
    Ok(Some((old.sectors() * ss, length)))
}

/// Sets (`formatting`) or clears the data partition's
/// [`DATA_FORMATTING_ATTR`] in both copies of the table, read afresh from
/// the disk (growing may have rewritten it), and syncs.
fn record_format(
    sys: &mut dyn System,
    root: &RootDisk,
    data: &DataPartition,
    formatting: bool,
) -> Result<(), DataError> {
    let what = if formatting { "being formatted" } else { "formatted" };
    let fail = |error: String| DataError::FormatRecord { disk: root.device.clone(), what, error };
    let mut disk = sys.open_disk(&root.device, true).map_err(|e| fail(e.to_string()))?;
    let mut gpt = discover::read_table(&mut disk).map_err(fail)?;
    let part = gpt
        .partitions
        .iter_mut()
        .find(|p| p.index == data.index)
        .ok_or_else(|| fail(format!("no partition {} in the table", data.number)))?;
    if formatting {
        part.attributes |= DATA_FORMATTING_ATTR;
    } else {
        part.attributes &= !DATA_FORMATTING_ATTR;
    }
    // Syncs after the backup and after the primary table (Gpt::write).
    gpt.write(&mut disk).map_err(|e| fail(e.to_string()))
}

fn tool(sys: &mut dyn System, device: &Path, tool: &'static str, argv: &[&str]) -> Result<ExitStatus, DataError> {
    sys.run(argv).map_err(|source| DataError::Spawn { device: device.to_path_buf(), tool, source })
}

fn mkdir(sys: &mut dyn System, path: &str, mode: u32) -> Result<(), DataError> {
    sys.create_dir_all(Path::new(path), mode).map_err(|source| DataError::Mkdir { path: path.into(), source })
}

/// Formats the data partition, with the attempt recorded in the GPT around
/// mke2fs so that a reset in the middle is recognised at the next boot.
fn format_data(sys: &mut dyn System, root: &RootDisk, data: &DataPartition, bytes: u64) -> Result<Prepared, DataError> {
    let device = data.device.clone();
    let dev = device.to_string_lossy().into_owned();
    record_format(sys, root, data, true)?;
    // Lazy init and no discard: the image ships the partition zeroed,
    // so writing or discarding it all again would only slow the first boot.
    let status = tool(
        sys,
        &device,
        "mke2fs",
        &[MKE2FS, "-t", "ext4", "-L", FS_LABEL, "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-F", &dev],
    )?;
    if !status.success() {
        return Err(DataError::Tool { device, tool: "mke2fs", status });
    }
    // mke2fs syncs the device before it exits 0 (ext2fs_close flushes its
    // I/O channel), so its writes are on the disk before the record is cleared.
    record_format(sys, root, data, false)?;
    Ok(Prepared::Formatted { bytes })
}

/// Finds, grows, formats or checks (when not unmounted cleanly), and mounts
/// the data partition on /var.
pub fn setup(sys: &mut dyn System) -> Result<DataReport, DataError> {
    let root = discover::find_root_disk(sys)?;
    let data = find_data(sys, &root)?;
    let grew = grow(sys, &root, &data)?;
    let device = data.device.clone();
    let dev = device.to_string_lossy().into_owned();
    let head =
        sys.read_at(&device, 0, ext4::HEAD).map_err(|source| DataError::Read { path: device.clone(), source })?;
    let part_bytes = discover::kernel_partition_bytes(sys, &data.name)?;
    let content = ext4::classify(&head);
    if data.unfinished_format && content != Content::Blank {
        crate::info!("data: {} holds an unfinished format (interrupted first boot): formatting it again", dev);
    }
    let (prepared, fs) = match content {
        // Our own format that did not finish (a reset during mke2fs): it
        // was never mounted, so whatever it holds is mke2fs's, not anyone's.
        _ if data.unfinished_format => (format_data(sys, &root, &data, part_bytes)?, None),
        Content::Unknown => return Err(DataError::UnknownContent { device }),
        Content::Blank => (format_data(sys, &root, &data, part_bytes)?, None),
        Content::Ext4(sb) => match sb.check_reason() {
            None => (Prepared::Clean, Some(sb)),
            Some(reason) => {
                let status = tool(sys, &device, "e2fsck", &[E2FSCK, "-p", &dev])?;
                let fsck = Fsck::from_status(status).ok_or(DataError::Fsck { device: device.clone(), status })?;
                (Prepared::Checked { reason, fsck }, Some(sb))
            }
        },
    };
    let spec = MountSpec {
        source: dev.clone(),
        target: DATA_MOUNT.into(),
        fstype: "ext4".into(),
        flags: MsFlags::MS_NOATIME,
        data: None,
    };
    sys.mount(&spec).map_err(|source| MountError::Mount {
        fstype: spec.fstype.clone(),
        target: spec.target.clone(),
        source,
    })?;
    let mut resized = None;
    if let Some(sb) = fs {
        if part_bytes >= sb.bytes() + RESIZE_SLACK {
            // Online: the filesystem is mounted, which resize2fs needs to
            // grow it without a full check first.
            let failed = |error: String| Resize::Failed { fs: sb.bytes(), partition: part_bytes, error };
            resized = Some(match tool(sys, &device, "resize2fs", &[RESIZE2FS, &dev]) {
                Ok(status) if status.success() => {
                    let after = sys
                        .read_at(&device, 0, 4096)
                        .ok()
                        .and_then(|h| ext4::parse(&h))
                        .map_or(part_bytes, |s| s.bytes());
                    Resize::Grew { from: sb.bytes(), to: after }
                }
                Ok(status) => failed(format!("resize2fs failed ({status})")),
                Err(e) => failed(e.to_string()),
            });
        }
    }
    mkdir(sys, "/var/log", 0o755)?;
    mkdir(sys, "/var/tmp", 0o1777)?;
    // sshd reads root's authorized_keys from here. Made by PID1 rather
    // than by a unit: a oneshot's exec (busybox's mkdir, LZMA) ran beside
    // containerd's and etcd's start on every boot. Not a reason to stop
    // the boot: only SSH logins as root need it.
    let root_home =
        [ROOT_HOME, ROOT_SSH_DIR].into_iter().try_for_each(|d| mkdir(sys, d, 0o700)).err().map(|e| e.to_string());
    Ok(DataReport { device, grew, prepared, resized, root_home })
}

/// /etc becomes the image's /etc with a writable upper layer on /var.
pub fn etc_overlay(sys: &mut dyn System) -> Result<(), DataError> {
    mkdir(sys, ETC_UPPER, 0o755)?;
    mkdir(sys, ETC_WORK, 0o755)?;
    let spec = MountSpec {
        source: "overlay".into(),
        target: "/etc".into(),
        fstype: "overlay".into(),
        flags: MsFlags::empty(),
        // lowerdir=/etc is resolved before the overlay covers it.
        data: Some(format!("lowerdir=/etc,upperdir={ETC_UPPER},workdir={ETC_WORK}")),
    };
    match mounts::mount_once(sys, &spec) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
