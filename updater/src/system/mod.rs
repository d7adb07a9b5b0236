//! The real machine's side of an install: the boot disk, the other slot's
//! root partition, the ESP and systemd-boot's EFI variables, as a
//! [`Target`] ([`RealTarget`]).
//!
//! - The boot disk is the disk whose GPT holds a root partition with a
//!   PARTUUID named on `/proc/cmdline` (the same rule and code as PID1:
//!   [`berth_layout::bootdisk`]); other disks are never written.
//! - A slot's root partition is the root-type partition labelled
//!   [`Slot::label`] on that disk; its device node comes from the
//!   `partition` numbers in sysfs, not guessed. The booted slot's partition
//!   is never opened for writing, and the other one is opened `O_EXCL`
//!   (the kernel refuses if anything holds it).
//! - The ESP is the partition of the ESP type GUID on that disk. It is
//!   mounted (vfat, nosuid, nodev, noexec) at [`ESP_MOUNT`] on the first
//!   ESP operation and synced and unmounted by [`Target::esp_release`]
//!   (and on drop), so it is mounted only while it is read or changed.
//!   Targets of one process share the mount: the first to use it mounts
//!   it, the last to release it unmounts it ([`ESP_USERS`]).
//! - EFI variables are read from efivarfs ([`EFIVARS`]) under systemd-boot's
//!   vendor GUID ([`LOADER_VENDOR_GUID`]).
//! - The booted version is `VERSION_ID` of [`OS_RELEASE`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use berth_layout::bootdisk::{self, NOT_DISKS};
use berth_layout::cmdline::slot_of;
use berth_layout::disk::{Slot, ESP_TYPE, ROOT_X86_64_TYPE};
use berth_layout::gpt::{Gpt, Partition};
use berth_layout::paths::{ESP_MOUNT, OS_RELEASE};
use berth_layout::Guid;

use crate::install::{self, esp_components_of, ApplyError, InstallContext, InstallError, Target, TargetError};
use crate::state::{AbState, FileOp, ENTRIES_DIR};

#[cfg(test)]
mod tests;

/// The block devices in sysfs.
pub const SYS_BLOCK: &str = "/sys/class/block";
/// The kernel command line.
pub const CMDLINE: &str = "/proc/cmdline";
/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// systemd-boot's vendor GUID for its `Loader*` variables.
pub const LOADER_VENDOR_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Why the real machine's disk could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no PARTUUID= on the kernel command line: cannot tell which disk holds the root")]
    NoPartuuid,
    #[error("the kernel command line names no slot (berth.slot=a|b)")]
    NoSlot,
    #[error("no disk has a root partition with PARTUUID {partuuid} (scanned: {scanned})")]
    BootDiskNotFound { partuuid: String, scanned: String },
    #[error("the root partition PARTUUID {partuuid} is on several disks ({disks}), none of them under the root's device-mapper device; refusing to pick one")]
    Ambiguous { partuuid: String, disks: String },
    #[error("{disk}: no {what} partition in its GPT")]
    NoPartition { disk: String, what: String },
    #[error("{disk}: partition {number} has no entry in {SYS_BLOCK}/{disk}")]
    NoPartitionDevice { disk: String, number: usize },
    #[error("{path}: no VERSION_ID=")]
    NoVersion { path: PathBuf },
}

/// The boot disk as found.
#[derive(Clone, Debug)]
pub struct BootDisk {
    /// Kernel name: `vda`, `nvme0n1`.
    pub name: String,
    /// Its device node.
    pub device: PathBuf,
    /// Its partition table.
    pub gpt: Gpt,
}

fn read_text(path: &Path) -> Result<String, SystemError> {
    fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|source| SystemError::Read { path: path.to_path_buf(), source })
}

/// Scans the whole disks in `sys_block` (sysfs) for the one whose GPT holds
/// a root partition named `PARTUUID=` on `cmdline`, opening them read-only
/// under `dev_dir`. Exactly one disk must match.
pub fn find_boot_disk_in(sys_block: &Path, dev_dir: &Path, cmdline: &str) -> Result<BootDisk, SystemError> {
    let wanted = bootdisk::partuuids(cmdline);
    if wanted.is_empty() {
        return Err(SystemError::NoPartuuid);
    }
    let read_err = |source| SystemError::Read { path: sys_block.to_path_buf(), source };
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let (mut found, mut scanned) = (Vec::new(), Vec::new());
    for name in names {
        let sys = sys_block.join(&name);
        if NOT_DISKS.iter().any(|p| name.starts_with(p)) || sys.join("partition").exists() {
            continue;
        }
        let geometry = read_text(&sys.join("size"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .zip(read_text(&sys.join("queue/logical_block_size")).ok().and_then(|s| s.parse::<u64>().ok()));
        let Some((sectors, ss)) = geometry else {
            scanned.push(format!("{name} (no size in sysfs)"));
            continue;
        };
        let device = dev_dir.join(&name);
        let mut file = match File::open(&device) {
            Ok(f) => f,
            Err(e) => {
                scanned.push(format!("{name} ({e})"));
                continue;
            }
        };
        match bootdisk::read_table(&mut file, ss, sectors.saturating_mul(512)) {
            Ok(gpt) if bootdisk::holds_root(&gpt, &wanted) => {
                scanned.push(name.clone());
                found.push(BootDisk { name, device, gpt });
            }
            Ok(_) => scanned.push(format!("{name} (no matching root partition)")),
            Err(e) => scanned.push(format!("{name} ({e})")),
        }
    }
    if found.len() > 1 {
        // Copies of one image: the boot disk is the one whose partition
        // the root's device-mapper device sits on (as PID1 decides).
        let slaves: Vec<String> = fs::read_dir(sys_block)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("dm-"))
            .flat_map(|e| fs::read_dir(e.path().join("slaves")).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let candidates: Vec<Vec<String>> = found
            .iter()
            .map(|d| {
                let roots = d.gpt.partitions.iter().filter(|p| wanted.contains(&p.unique_guid));
                roots
                    .filter_map(|p| partition_device_in(sys_block, dev_dir, &d.name, p.number()).ok())
                    .filter_map(|dev| dev.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect()
            })
            .collect();
        if let Some(booted) = bootdisk::booted_copy(&candidates, &slaves) {
            return Ok(found.swap_remove(booted));
        }
    }
    let partuuid = wanted.iter().map(Guid::to_string).collect::<Vec<_>>().join(", ");
    if found.len() > 1 {
        let disks = found.iter().map(|d| d.name.clone()).collect::<Vec<_>>().join(", ");
        return Err(SystemError::Ambiguous { partuuid, disks });
    }
    found.pop().ok_or_else(|| SystemError::BootDiskNotFound {
        partuuid,
        scanned: if scanned.is_empty() { "no disks".into() } else { scanned.join(", ") },
    })
}

/// The device node of partition `number` of `disk`, from the `partition`
/// files in sysfs (`vda3`, `nvme0n1p3`).
pub fn partition_device_in(
    sys_block: &Path,
    dev_dir: &Path,
    disk: &str,
    number: usize,
) -> Result<PathBuf, SystemError> {
    let dir = sys_block.join(disk);
    let entries = fs::read_dir(&dir).map_err(|source| SystemError::Read { path: dir.clone(), source })?;
    entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|e| read_text(&dir.join(e).join("partition")).ok().and_then(|t| t.parse::<usize>().ok()) == Some(number))
        .map(|e| dev_dir.join(e))
        .ok_or_else(|| SystemError::NoPartitionDevice { disk: disk.to_string(), number })
}

/// `slot`'s root partition in a Berth GPT: root type, labelled [`Slot::label`].
pub fn slot_partition(gpt: &Gpt, slot: Slot) -> Option<&Partition> {
    gpt.by_type(ROOT_X86_64_TYPE).find(|p| p.name == slot.label())
}

/// The ESP of a GPT (the first partition of the ESP type).
pub fn esp_partition(gpt: &Gpt) -> Option<&Partition> {
    gpt.by_type(ESP_TYPE).next()
}

/// `VERSION_ID` of an os-release file's text (quotes removed).
pub fn version_id(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.trim().strip_prefix("VERSION_ID=")?.trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// The booted version: `VERSION_ID` of [`OS_RELEASE`].
pub fn booted_version() -> Result<String, SystemError> {
    let text = read_text(Path::new(OS_RELEASE))?;
    version_id(&text).ok_or_else(|| SystemError::NoVersion { path: OS_RELEASE.into() })
}

/// An [`InstallContext`] for this machine: its booted version and
/// architecture, with the versions that failed here and `force`.
pub fn install_context(failed_versions: Vec<String>, force: bool) -> Result<InstallContext, SystemError> {
    let mut ctx = InstallContext::new(&booted_version()?);
    ctx.failed_versions = failed_versions;
    ctx.force = force;
    Ok(ctx)
}

/// Loads the A/B state of the real machine (mounting the ESP for it, and
/// unmounting it after).
pub fn load_state(target: &mut RealTarget) -> Result<AbState, InstallError> {
    let state = install::load_state(target);
    let released = target.esp_release();
    let state = state?;
    released?;
    Ok(state)
}

/// Applies a plan without payloads (bless, mark bad, rollback) to the
/// real machine: [`install::apply`].
pub fn apply(plan: &[FileOp], target: &mut RealTarget) -> Result<(), ApplyError> {
    install::apply(plan, target)
}

struct RootPart {
    device: PathBuf,
    partuuid: Guid,
    size: u64,
    file: Option<File>,
}

/// How many [`RealTarget`]s of this process hold each ESP mount point.
/// The updater opens a target per operation and runs them at once (a
/// status query while the boot is blessed or an install runs); each used
/// to unmount the ESP when it was done, under the others: the unmount
/// failed with EBUSY while another read an entry ("the A/B state cannot
/// be loaded"), or succeeded, and the other's later writes went to the
/// empty directory under the mount point. The lock is held across each
/// mount and unmount.
static ESP_USERS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

/// One more user of the ESP at `at` in `users`; true when it is the first,
/// which mounts it.
fn esp_acquire(users: &mut BTreeMap<PathBuf, usize>, at: &Path) -> bool {
    let n = users.entry(at.to_path_buf()).or_insert(0);
    *n += 1;
    *n == 1
}

/// One user of the ESP at `at` less in `users`; true when it was the last
/// (or was never counted), which unmounts it.
fn esp_release_user(users: &mut BTreeMap<PathBuf, usize>, at: &Path) -> bool {
    match users.get_mut(at) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            users.remove(at);
            true
        }
    }
}

/// The real machine as a [`Target`]; see the module documentation.
pub struct RealTarget {
    cmdline: String,
    booted: Slot,
    roots: [Option<RootPart>; 2],
    esp_device: PathBuf,
    esp_mount: PathBuf,
    mounted: bool,
    efivars: PathBuf,
    /// The booted PARTUUIDs (never written, whatever the slot labels say).
    booted_partuuids: Vec<Guid>,
    /// The boot disk's device node, logical sector size and size in bytes
    /// (its partition table is rewritten to name a slot).
    disk: (PathBuf, u64, u64),
}

fn index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl RealTarget {
    /// Finds the boot disk, both slots' partitions and the ESP of this machine.
    pub fn open() -> Result<RealTarget, SystemError> {
        let cmdline = read_text(Path::new(CMDLINE))?;
        RealTarget::open_in(&cmdline, Path::new(SYS_BLOCK), Path::new("/dev"), Path::new(ESP_MOUNT), Path::new(EFIVARS))
    }

    /// [`RealTarget::open`] with the paths given (tests use a fake sysfs).
    pub fn open_in(
        cmdline: &str,
        sys_block: &Path,
        dev_dir: &Path,
        esp_mount: &Path,
        efivars: &Path,
    ) -> Result<RealTarget, SystemError> {
        let booted = slot_of(cmdline).ok_or(SystemError::NoSlot)?;
        let disk = find_boot_disk_in(sys_block, dev_dir, cmdline)?;
        let mut roots: [Option<RootPart>; 2] = [None, None];
        for slot in [Slot::A, Slot::B] {
            if let Some(p) = slot_partition(&disk.gpt, slot) {
                if let Some(r) = roots.get_mut(index(slot)) {
                    *r = Some(RootPart {
                        device: partition_device_in(sys_block, dev_dir, &disk.name, p.number())?,
                        partuuid: p.unique_guid,
                        size: p.sectors().saturating_mul(disk.gpt.sector_size),
                        file: None,
                    });
                }
            }
        }
        let esp = esp_partition(&disk.gpt)
            .ok_or_else(|| SystemError::NoPartition { disk: disk.name.clone(), what: "ESP".into() })?;
        let esp_device = partition_device_in(sys_block, dev_dir, &disk.name, esp.number())?;
        Ok(RealTarget {
            cmdline: cmdline.to_string(),
            booted,
            roots,
            esp_device,
            esp_mount: esp_mount.to_path_buf(),
            mounted: false,
            efivars: efivars.to_path_buf(),
            booted_partuuids: bootdisk::partuuids(cmdline),
            disk: (
                disk.device.clone(),
                disk.gpt.sector_size,
                disk.gpt.total_sectors.saturating_mul(disk.gpt.sector_size),
            ),
        })
    }

    fn root(&mut self, slot: Slot) -> Result<&mut RootPart, TargetError> {
        self.roots
            .get_mut(index(slot))
            .and_then(Option::as_mut)
            .ok_or_else(|| TargetError::NotFound(format!("no partition labelled {} on the boot disk", slot.label())))
    }

    /// The other slot's partition, opened read-write and exclusively.
    fn writable(&mut self, slot: Slot) -> Result<(&mut File, PathBuf, u64), TargetError> {
        if slot == self.booted {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        let booted = self.booted_partuuids.clone();
        let root = self.root(slot)?;
        if booted.contains(&root.partuuid) {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        let device = root.device.clone();
        if root.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
                .open(&device)
                .map_err(|e| TargetError::io("opening", &device, None, e))?;
            root.file = Some(f);
        }
        let size = root.size;
        let file = root.file.as_mut().ok_or_else(|| TargetError::NotFound(device.display().to_string()))?;
        Ok((file, device, size))
    }

    fn ensure_esp(&mut self) -> Result<(), TargetError> {
        if self.mounted {
            return Ok(());
        }
        let at = self.esp_mount.clone();
        let mut users = ESP_USERS.lock().unwrap_or_else(PoisonError::into_inner);
        if esp_acquire(&mut users, &at) {
            if let Err(e) = self.mount_esp(&at) {
                esp_release_user(&mut users, &at);
                return Err(e);
            }
        }
        self.mounted = true;
        Ok(())
    }

    /// Mounts the ESP at `at` (created if missing) unless something is
    /// mounted there already (a mount left by an updater that died).
    fn mount_esp(&self, at: &Path) -> Result<(), TargetError> {
        use rustix::mount::{mount, MountFlags};
        fs::create_dir_all(at).map_err(|e| TargetError::io("creating", at, None, e))?;
        if is_mount_point(at) {
            return Ok(());
        }
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        mount(&self.esp_device, at, "vfat", flags, None)
            .map_err(|e| TargetError::io("mounting the ESP at", at, None, e.into()))
    }

    fn esp_path(&mut self, path: &str) -> Result<PathBuf, TargetError> {
        let mut p = self.esp_mount.clone();
        for c in esp_components_of(path)? {
            p.push(c);
        }
        self.ensure_esp()?;
        Ok(p)
    }
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

fn sync_dir(dir: &Path) -> Result<(), TargetError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| TargetError::io("syncing directory", dir, None, e))
}

impl Target for RealTarget {
    fn cmdline(&mut self) -> Result<String, TargetError> {
        Ok(self.cmdline.clone())
    }

    fn partuuid(&mut self, slot: Slot) -> Result<Guid, TargetError> {
        Ok(self.root(slot)?.partuuid)
    }

    fn set_partuuid(&mut self, slot: Slot, guid: Guid) -> Result<(), TargetError> {
        if slot == self.booted || self.booted_partuuids.contains(&guid) {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        let (device, sector_size, bytes) = self.disk.clone();
        // The whole disk: its partitions are in use (the booted root, the
        // data partition), so no O_EXCL. Only the table's sectors change.
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&device)
            .map_err(|e| TargetError::io("opening", &device, None, e))?;
        let bad =
            |why: String| TargetError::io("rewriting the partition table of", &device, None, io::Error::other(why));
        let mut gpt = bootdisk::read_table(&mut f, sector_size, bytes).map_err(bad)?;
        let part =
            gpt.partitions.iter_mut().find(|p| p.name == slot.label() && p.type_guid == ROOT_X86_64_TYPE).ok_or_else(
                || TargetError::NotFound(format!("no partition labelled {} on {}", slot.label(), device.display())),
            )?;
        if self.booted_partuuids.contains(&part.unique_guid) {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        if part.unique_guid != guid {
            part.unique_guid = guid;
            // Backup table, sync, then the primary, sync (Gpt::write): a
            // cut at any point leaves one valid table, which firmware and
            // kernel use.
            gpt.write(&mut f).map_err(|e| bad(e.to_string()))?;
        }
        self.root(slot)?.partuuid = guid;
        Ok(())
    }

    fn partition_size(&mut self, slot: Slot) -> Result<u64, TargetError> {
        Ok(self.root(slot)?.size)
    }

    fn write_partition(&mut self, slot: Slot, offset: u64, data: &[u8]) -> Result<(), TargetError> {
        let (file, device, size) = self.writable(slot)?;
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(TargetError::OutOfRange { path: device, offset, len, size });
        }
        file.write_all_at(data, offset).map_err(|e| TargetError::io("writing", &device, Some(offset), e))
    }

    fn sync_partition(&mut self, slot: Slot) -> Result<(), TargetError> {
        let (file, device, _) = self.writable(slot)?;
        file.sync_all().map_err(|e| TargetError::io("syncing", &device, None, e))?;
        // Drop the clean pages, so the read-back reads the medium.
        rustix::fs::fadvise(&*file, 0, None::<NonZeroU64>, rustix::fs::Advice::DontNeed)
            .map_err(|e| TargetError::io("dropping the page cache of", &device, None, e.into()))
    }

    fn read_partition(&mut self, slot: Slot, offset: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        let (file, device, size) = self.writable(slot)?;
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(TargetError::OutOfRange { path: device, offset, len, size });
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| TargetError::io("reading", &device, Some(offset), e))?;
        file.read_exact(buf).map_err(|e| TargetError::io("reading", &device, Some(offset), e))
    }

    fn entries(&mut self) -> Result<Vec<(String, String)>, TargetError> {
        install::read_entries(&self.esp_path(ENTRIES_DIR)?)
    }

    fn efi_var(&mut self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        let path = self.efivars.join(format!("{name}-{LOADER_VENDOR_GUID}"));
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TargetError::io("reading", &path, None, e)),
        }
    }

    fn esp_exists(&mut self, path: &str) -> Result<bool, TargetError> {
        Ok(self.esp_path(path)?.exists())
    }

    fn esp_write(&mut self, path: &str, data: &mut dyn Read) -> Result<u64, TargetError> {
        let full = self.esp_path(path)?;
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(|e| TargetError::io("creating", parent, None, e))?;
        }
        let mut f = File::create(&full).map_err(|e| TargetError::io("creating", &full, None, e))?;
        let n = install::copy_to(data, &mut f, path, &full)?;
        f.sync_all().map_err(|e| TargetError::io("syncing", &full, None, e))?;
        Ok(n)
    }

    fn esp_rename(&mut self, from: &str, to: &str) -> Result<(), TargetError> {
        let (src, dst) = (self.esp_path(from)?, self.esp_path(to)?);
        fs::rename(&src, &dst).map_err(|e| TargetError::io("renaming", &src, None, e))?;
        dst.parent().map_or(Ok(()), sync_dir)
    }

    fn esp_remove(&mut self, path: &str) -> Result<(), TargetError> {
        let full = self.esp_path(path)?;
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TargetError::io("removing", &full, None, e)),
        }
        full.parent().map_or(Ok(()), sync_dir)
    }

    fn esp_sync(&mut self) -> Result<(), TargetError> {
        self.ensure_esp()?;
        let at = self.esp_mount.clone();
        let dir = File::open(&at).map_err(|e| TargetError::io("opening", &at, None, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| TargetError::io("syncing the file system of", &at, None, e.into()))
    }

    fn esp_release(&mut self) -> Result<(), TargetError> {
        if !self.mounted {
            return Ok(());
        }
        self.esp_sync()?;
        let at = self.esp_mount.clone();
        let mut users = ESP_USERS.lock().unwrap_or_else(PoisonError::into_inner);
        if esp_release_user(&mut users, &at) {
            if let Err(e) = rustix::mount::unmount(&at, rustix::mount::UnmountFlags::empty()) {
                // Still held: a later release (or the drop) tries again.
                esp_acquire(&mut users, &at);
                return Err(TargetError::io("unmounting the ESP at", &at, None, e.into()));
            }
        }
        self.mounted = false;
        Ok(())
    }
}

impl Drop for RealTarget {
    fn drop(&mut self) {
        if let Err(e) = self.esp_release() {
            eprintln!("berth-updater: {e}");
        }
    }
}
