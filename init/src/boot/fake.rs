//! A recording fake of [`System`]: an in-memory file tree, disks as byte
//! vectors with a real GPT, a sysfs that follows BLKPG, and tools whose
//! effects are simulated (mke2fs writes a superblock, resize2fs grows it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_layout::disk::{partition_uuid, DATA_LABEL, DATA_TYPE, ESP_TYPE, ROOT_X86_64_TYPE};
use berth_layout::gpt::Gpt;
use berth_layout::Guid;
use nix::errno::Errno;

use super::ext4;
use super::system::WatchdogDevice;
use super::system::{Disk, MountSpec, System};
use crate::reaper::ExitStatus;

pub const MIB: u64 = 1024 * 1024;
const SS: u64 = 512;

type Bytes = Arc<Mutex<Vec<u8>>>;

struct FakeDisk {
    data: Bytes,
    pos: u64,
    sector_size: u64,
}

impl Read for FakeDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self.data.lock().unwrap();
        let start = (self.pos as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FakeDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.data.lock().unwrap();
        let end = self.pos as usize + buf.len();
        if end > d.len() {
            return Err(io::Error::other("write past the end of the disk"));
        }
        d[self.pos as usize..end].copy_from_slice(buf);
        self.pos = end as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FakeDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.data.lock().unwrap().len() as i64;
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            SeekFrom::End(o) => (len + o) as u64,
            SeekFrom::Current(o) => (self.pos as i64 + o) as u64,
        };
        Ok(self.pos)
    }
}

impl Disk for FakeDisk {
    fn sector_size(&self) -> u64 {
        self.sector_size
    }
    fn size_bytes(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A partition the fake kernel knows: `/dev/<name>`.
#[derive(Clone, Debug)]
pub struct Part {
    pub disk: PathBuf,
    pub number: usize,
    pub start: u64,
}

pub struct FakeSystem {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub dirs: BTreeSet<PathBuf>,
    pub disks: BTreeMap<PathBuf, Bytes>,
    pub parts: BTreeMap<String, Part>,
    /// Every call that changes something, in order.
    pub calls: Vec<String>,
    /// Mount targets that fail, and how.
    pub mount_errors: BTreeMap<PathBuf, Errno>,
    /// Exit codes of tools by name (default 0).
    pub exit_codes: BTreeMap<&'static str, i32>,
    /// (source, target, fstype) as /proc/self/mounts shows them.
    pub mounted: Vec<(String, String, String)>,
    /// When false, BLKPG "succeeds" but sysfs keeps the old size.
    pub kernel_follows_blkpg: bool,
    /// The logical sector size of every disk (BLKSSZGET): 512, or 4096
    /// for a 4Kn machine. sysfs sizes stay in 512-byte units, as the
    /// kernel's are.
    pub sector_size: u64,
    /// PID1's RLIMIT_NOFILE (soft, hard); the kernel's default at first.
    pub nofile: (u64, u64),
    /// Kernel settings (`fs/nr_open`) whose writes fail with EINVAL.
    pub sysctl_errors: BTreeSet<String>,
    /// Watchdog devices by path ([`FakeWatchdog::install`]).
    pub watchdogs: BTreeMap<PathBuf, FakeWatchdog>,
}

impl FakeSystem {
    /// A machine booted from /dev/vda: a Berth disk whose partition table
    /// describes `table_mib` MiB on a disk of `disk_mib` MiB (more when the
    /// disk was enlarged), plus a blank /dev/vdb and devices to skip.
    pub fn berth(table_mib: u64, disk_mib: u64) -> FakeSystem {
        FakeSystem::berth_with_sectors(table_mib, disk_mib, SS)
    }

    /// [`FakeSystem::berth`] on disks with `sector_size`-byte logical
    /// sectors, the GPT written in them (4096: a 4Kn disk).
    pub fn berth_with_sectors(table_mib: u64, disk_mib: u64, sector_size: u64) -> FakeSystem {
        let mut f = FakeSystem {
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            disks: BTreeMap::new(),
            parts: BTreeMap::new(),
            calls: Vec::new(),
            mount_errors: BTreeMap::new(),
            exit_codes: BTreeMap::new(),
            mounted: vec![("/dev/dm-0".into(), "/".into(), "erofs".into())],
            kernel_follows_blkpg: true,
            sector_size,
            nofile: (1024, 4096),
            sysctl_errors: BTreeSet::new(),
            watchdogs: BTreeMap::new(),
        };
        let root = partition_uuid("0.1.0", "root-a");
        f.add_disk("vda", &berth_image_with_sectors(table_mib, disk_mib, root, sector_size));
        f.add_disk("vdb", &vec![0u8; (4 * MIB) as usize]);
        for d in ["/sys/class/block/dm-0", "/sys/class/block/loop0", "/sys/firmware/efi", "/sys/fs/bpf"] {
            f.add_dir(d);
        }
        for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/var", "/etc"] {
            f.add_dir(d);
        }
        // The kernel's defaults.
        f.set_file("/proc/sys/fs/nr_open", "1048576\n");
        f.set_file("/proc/sys/fs/file-max", "98304\n");
        f.set_file(
            "/proc/cmdline",
            format!(
                "console=ttyS0 dm-mod.create=\"root,,,ro,0 8 verity 1 PARTUUID={root} PARTUUID={root} 4096 4096 1 2 sha256 ab cd 1 restart_on_corruption\" root=/dev/dm-0 berth.slot=a\n"
            ),
        );
        f
    }

    pub fn add_dir(&mut self, d: &str) {
        let p = PathBuf::from(d);
        for a in p.ancestors() {
            self.dirs.insert(a.to_path_buf());
        }
    }

    pub fn set_file(&mut self, path: &str, content: impl Into<Vec<u8>>) {
        let p = PathBuf::from(path);
        if let Some(parent) = p.parent() {
            self.add_dir(&parent.to_string_lossy());
        }
        self.files.insert(p, content.into());
    }

    /// Registers a whole disk and, from its GPT if it has one, its
    /// partitions in sysfs, as the kernel does at boot.
    pub fn add_disk(&mut self, name: &str, image: &[u8]) {
        let dev = PathBuf::from(format!("/dev/{name}"));
        self.add_dir(&format!("/sys/class/block/{name}"));
        self.disks.insert(dev.clone(), Arc::new(Mutex::new(image.to_vec())));
        let ss = self.sector_size;
        let Ok(gpt) = Gpt::read(&mut Cursor::new(image), ss, image.len() as u64) else {
            return;
        };
        for p in &gpt.partitions {
            let pname = format!("{name}{}", p.number());
            for dir in [format!("/sys/class/block/{pname}"), format!("/sys/class/block/{name}/{pname}")] {
                self.set_file(&format!("{dir}/partition"), format!("{}\n", p.number()));
            }
            self.set_file(&format!("/sys/class/block/{pname}/size"), format!("{}\n", p.sectors() * ss / 512));
            self.parts.insert(pname, Part { disk: dev.clone(), number: p.number(), start: p.first_lba * ss });
        }
    }

    pub fn disk(&self, name: &str) -> Vec<u8> {
        self.disks[Path::new(&format!("/dev/{name}"))].lock().unwrap().clone()
    }

    /// The disk was enlarged (qemu-img resize): zeros appended.
    pub fn enlarge(&mut self, name: &str, mib: u64) {
        self.disks[Path::new(&format!("/dev/{name}"))].lock().unwrap().resize((mib * MIB) as usize, 0);
    }

    /// Writes into partition `name` at `offset`.
    pub fn write_part(&mut self, name: &str, offset: u64, bytes: &[u8]) {
        let p = self.parts[name].clone();
        let mut d = self.disks[&p.disk].lock().unwrap();
        let at = (p.start + offset) as usize;
        d[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn part_size(&self, name: &str) -> u64 {
        let t = &self.files[Path::new(&format!("/sys/class/block/{name}/size"))];
        String::from_utf8_lossy(t).trim().parse::<u64>().unwrap() * 512
    }

    fn part_by_dev(&self, dev: &Path) -> Option<(String, Part)> {
        let name = dev.strip_prefix("/dev").ok()?.to_str()?;
        self.parts.get(name).map(|p| (name.to_string(), p.clone()))
    }

    /// A clean reboot: each ext4 file system is unmounted (its journal no
    /// longer needs replaying), then as [`FakeSystem::power_cut`].
    pub fn reboot(&mut self) {
        let ext4: Vec<String> = self
            .mounted
            .iter()
            .filter(|m| m.2 == "ext4")
            .filter_map(|m| self.part_by_dev(Path::new(&m.0)).map(|(name, _)| name))
            .collect();
        for name in ext4 {
            self.edit_superblock(&name, |sb| ext4::set_needs_recovery(sb, false));
        }
        self.power_cut();
    }

    /// The power goes: nothing mounted but the root, no calls recorded;
    /// disks, files and the (persisted) /etc stay as they were.
    pub fn power_cut(&mut self) {
        self.calls.clear();
        self.mounted.truncate(1);
        self.nofile = (1024, 4096);
        self.set_file("/proc/sys/fs/nr_open", "1048576\n");
        self.set_file("/proc/sys/fs/file-max", "98304\n");
        let images: Vec<(String, Vec<u8>)> = self
            .disks
            .keys()
            .map(|d| {
                let n = d.file_name().unwrap().to_string_lossy().into_owned();
                let img = self.disk(&n);
                (n, img)
            })
            .collect();
        self.parts.clear();
        for (n, img) in images {
            self.add_disk(&n, &img);
        }
    }

    pub fn calls_starting(&self, prefix: &str) -> Vec<&str> {
        self.calls.iter().filter(|c| c.starts_with(prefix)).map(String::as_str).collect()
    }

    /// Index of the first call starting with `prefix`.
    pub fn pos(&self, prefix: &str) -> usize {
        self.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {:#?}", self.calls))
    }

    /// The root is read-only: writes need a filesystem mounted over it.
    fn writable(&self, path: &Path) -> io::Result<()> {
        let on = path.ancestors().find(|a| self.mounted.iter().any(|m| Path::new(&m.1) == *a));
        match on {
            Some(p) if p != Path::new("/") => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EROFS)),
        }
    }

    fn write_superblock(&mut self, name: &str, bytes: u64) {
        let sb = ext4::superblock_bytes(bytes / 4096, 4096);
        self.write_part(name, 1024, &sb);
    }

    /// Changes the superblock of partition `name` in place.
    pub fn edit_superblock(&mut self, name: &str, edit: impl FnOnce(&mut [u8])) {
        let p = self.parts[name].clone();
        let mut d = self.disks[&p.disk].lock().unwrap();
        let at = (p.start + 1024) as usize;
        edit(&mut d[at..at + 1024]);
    }
}

/// A GPT disk with Berth's four partitions in miniature: 1 MiB ESP, two
/// 2 MiB root slots, a 2 MiB data partition last.
pub fn berth_image(table_mib: u64, disk_mib: u64, root_a: Guid) -> Vec<u8> {
    berth_image_with_sectors(table_mib, disk_mib, root_a, SS)
}

/// [`berth_image`] with its GPT in `sector_size`-byte sectors.
pub fn berth_image_with_sectors(table_mib: u64, disk_mib: u64, root_a: Guid, sector_size: u64) -> Vec<u8> {
    let s = MIB / sector_size;
    let mut gpt = Gpt::new(Guid::derive("fake-disk"), sector_size, table_mib * s);
    gpt.add("esp", ESP_TYPE, Guid::derive("esp"), s, 2 * s - 1).unwrap();
    gpt.add("root-a", ROOT_X86_64_TYPE, root_a, 2 * s, 4 * s - 1).unwrap();
    gpt.add("root-b", ROOT_X86_64_TYPE, partition_uuid("0.1.0", "root-b"), 4 * s, 6 * s - 1).unwrap();
    gpt.add(DATA_LABEL, DATA_TYPE, Guid::derive("data"), 6 * s, 8 * s - 1).unwrap();
    let mut img = Cursor::new(vec![0u8; (table_mib * MIB) as usize]);
    gpt.write(&mut img).unwrap();
    let mut img = img.into_inner();
    img.resize((disk_mib * MIB) as usize, 0);
    img
}

impl System for FakeSystem {
    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
            || self.dirs.contains(path)
            || self.disks.contains_key(path)
            || self.part_by_dev(path).is_some()
            || self.watchdogs.contains_key(path)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        if path == Path::new("/proc/self/mounts") {
            if !self.mounted.iter().any(|m| m.1 == "/proc") {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            let mut t = String::new();
            for (s, d, f) in &self.mounted {
                t.push_str(&format!("{s} {d} {f} rw 0 0\n"));
            }
            return Ok(t.into_bytes());
        }
        self.files.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let (base, limit, data) = if let Some((name, p)) = self.part_by_dev(path) {
            (p.start, self.part_size(&name), self.disks[&p.disk].clone())
        } else if let Some(d) = self.disks.get(path) {
            (0, d.lock().unwrap().len() as u64, d.clone())
        } else {
            let f = self.read_file(path)?;
            let n = f.len() as u64;
            (0, n, Arc::new(Mutex::new(f)))
        };
        let d = data.lock().unwrap();
        let start = (base + offset.min(limit)) as usize;
        let end = (base + limit.min(offset + len as u64)) as usize;
        Ok(d[start..end.min(d.len())].to_vec())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        if !self.dirs.contains(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut names = BTreeSet::new();
        for p in self.dirs.iter().chain(self.files.keys()) {
            if p.parent() == Some(path) {
                names.insert(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn create_dir_all(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.calls.push(format!("mkdir {} {mode:o}", path.display()));
        self.writable(path)?;
        if path.ancestors().any(|a| self.files.contains_key(a)) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.add_dir(&path.to_string_lossy());
        Ok(())
    }

    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.calls.push(format!("write {} {mode:o}", path.display()));
        self.writable(path)?;
        self.files.insert(path.to_path_buf(), data.to_vec());
        Ok(())
    }

    fn mount(&mut self, m: &MountSpec) -> nix::Result<()> {
        self.calls.push(format!("mount {m}"));
        if let Some(e) = self.mount_errors.get(&m.target) {
            return Err(*e);
        }
        self.mounted.push((m.source.clone(), m.target.to_string_lossy().into_owned(), m.fstype.clone()));
        // The kernel marks a mounted ext4's journal as needing replay.
        if let (Some((name, _)), "ext4") = (self.part_by_dev(Path::new(&m.source)), m.fstype.as_str()) {
            self.edit_superblock(&name, |sb| ext4::set_needs_recovery(sb, true));
        }
        Ok(())
    }

    fn make_shared(&mut self, target: &Path) -> nix::Result<()> {
        self.calls.push(format!("make-shared {}", target.display()));
        Ok(())
    }

    fn open_disk(&mut self, dev: &Path, writable: bool) -> io::Result<Box<dyn Disk>> {
        if writable {
            self.calls.push(format!("open-rw {}", dev.display()));
        }
        let data = self.disks.get(dev).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(FakeDisk { data, pos: 0, sector_size: self.sector_size }))
    }

    fn resize_partition(&mut self, disk: &Path, number: usize, start: u64, length: u64) -> io::Result<()> {
        self.calls.push(format!("blkpg {} {number} {start} {length}", disk.display()));
        let (name, _) = self
            .parts
            .iter()
            .find(|(_, p)| p.disk == disk && p.number == number && p.start == start)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENXIO))?;
        let name = name.clone();
        if self.kernel_follows_blkpg {
            self.set_file(&format!("/sys/class/block/{name}/size"), format!("{}\n", length / 512));
        }
        Ok(())
    }

    fn run(&mut self, argv: &[&str]) -> io::Result<ExitStatus> {
        self.calls.push(format!("run {}", argv.join(" ")));
        let tool = Path::new(argv[0]).file_name().unwrap().to_str().unwrap();
        let code = self.exit_codes.get(tool).copied().unwrap_or(0);
        let dev = Path::new(argv[argv.len() - 1]);
        if code == 0 {
            if let Some((name, _)) = self.part_by_dev(dev) {
                match tool {
                    "mke2fs" => {
                        let size = self.part_size(&name);
                        self.write_superblock(&name, size);
                    }
                    "resize2fs" => {
                        let blocks = self.part_size(&name) / 4096;
                        self.edit_superblock(&name, |sb| ext4::set_blocks(sb, blocks));
                    }
                    // It replays the journal.
                    "e2fsck" => self.edit_superblock(&name, |sb| ext4::set_needs_recovery(sb, false)),
                    _ => {}
                }
            }
        }
        Ok(ExitStatus::Exited(code))
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.calls.push(format!("hostname {name}"));
        Ok(())
    }

    fn set_link_up(&mut self, name: &str) -> io::Result<()> {
        self.calls.push(format!("link {name} up"));
        Ok(())
    }

    fn random(&mut self, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0x5a);
        Ok(())
    }

    fn write_sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.calls.push(format!("sysctl {key}={value}"));
        let path = Path::new("/proc/sys").join(key);
        if !self.mounted.iter().any(|m| m.1 == "/proc") || !self.files.contains_key(&path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if self.sysctl_errors.contains(key) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.files.insert(path, format!("{value}\n").into_bytes());
        Ok(())
    }

    fn nofile_limit(&self) -> io::Result<(u64, u64)> {
        Ok(self.nofile)
    }

    fn set_nofile_limit(&mut self, soft: u64, hard: u64) -> io::Result<()> {
        self.calls.push(format!("rlimit nofile {soft}:{hard}"));
        self.nofile = (soft, hard);
        Ok(())
    }

    fn open_watchdog(&mut self, path: &Path) -> io::Result<Box<dyn WatchdogDevice>> {
        let dev = self.watchdogs.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        dev.record(format!("open {}", path.display()));
        Ok(Box::new(dev.clone()))
    }
}

/// A watchdog device that records what is done to it; clones share the
/// record, so a test keeps one while PID1's code owns the other.
#[derive(Clone, Debug, Default)]
pub struct FakeWatchdog {
    identity: String,
    calls: Arc<Mutex<Vec<String>>>,
    /// WDIOC_SETTIMEOUT fails; the driver's timeout stays this.
    refused: Arc<Mutex<Option<u32>>>,
}

impl FakeWatchdog {
    /// Adds a device at `path`; the returned handle reads its record.
    pub fn install(sys: &mut FakeSystem, path: &str, identity: &str) -> FakeWatchdog {
        let dev = FakeWatchdog { identity: identity.into(), ..FakeWatchdog::default() };
        sys.watchdogs.insert(PathBuf::from(path), dev.clone());
        dev
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    /// From now on the device refuses timeouts and keeps `secs`.
    pub fn refuse_timeouts(&self, secs: u32) {
        *self.refused.lock().unwrap() = Some(secs);
    }
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl WatchdogDevice for FakeWatchdog {
    fn identity(&mut self) -> io::Result<String> {
        Ok(self.identity.clone())
    }
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
        if self.refused.lock().unwrap().is_some() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.record(format!("set-timeout {secs}"));
        Ok(secs)
    }
    fn timeout(&mut self) -> io::Result<u32> {
        Ok(self.refused.lock().unwrap().unwrap_or(30))
    }
    fn keepalive(&mut self) -> io::Result<()> {
        self.record("keepalive".into());
        Ok(())
    }
    fn disarm(self: Box<Self>) -> io::Result<()> {
        self.record("disarm (magic close)".into());
        Ok(())
    }
}
