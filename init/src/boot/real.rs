//! The real [`System`]: system calls on the running machine.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::mount::MsFlags;

use super::system::WatchdogDevice;
use super::system::{Disk, MountSpec, System};
use crate::power::ShutdownFlag;
use crate::reaper::{ExitStatus, Reaper};
use crate::spawn;

nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr_bad!(blkpg, 0x1269, BlkpgIoctlArg);

// The watchdog API, linux/watchdog.h ('W' ioctls).
nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// `struct watchdog_info` from linux/watchdog.h.
#[repr(C)]
pub struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// `struct blkpg_ioctl_arg` from linux/blkpg.h.
#[repr(C)]
pub struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` from linux/blkpg.h.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// The running machine. Its writes to disks and its mounts are refused once
/// `shutdown` is raised.
#[derive(Clone)]
pub struct RealSystem {
    reaper: &'static Reaper,
    shutdown: ShutdownFlag,
}

impl RealSystem {
    /// With the global reaper (PID1's).
    pub fn new(shutdown: ShutdownFlag) -> RealSystem {
        RealSystem { reaper: Reaper::global(), shutdown }
    }
}

fn refuse_during_shutdown(shutdown: &ShutdownFlag) -> io::Result<()> {
    // A boot thread still running when shutdown starts must not mount or
    // write behind the shutdown's back.
    if shutdown.is_raised() {
        return Err(io::Error::other("shutting down"));
    }
    Ok(())
}

/// A block device, or a regular file standing in for one (tests, images).
pub struct BlockFile {
    file: File,
    sector_size: u64,
    size: u64,
}

impl BlockFile {
    pub fn open(path: &Path, writable: bool) -> io::Result<BlockFile> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_block_device() {
            return Ok(BlockFile { size: meta.len(), file, sector_size: 512 });
        }
        let fd = file.as_raw_fd();
        let mut ss: libc::c_int = 0;
        let mut size: u64 = 0;
        // SAFETY: both ioctls write one integer through a valid pointer.
        unsafe {
            blksszget(fd, &mut ss).map_err(io::Error::from)?;
            blkgetsize64(fd, &mut size).map_err(io::Error::from)?;
        }
        Ok(BlockFile { file, sector_size: u64::try_from(ss).unwrap_or(0), size })
    }
}

impl Read for BlockFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for BlockFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for BlockFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Disk for BlockFile {
    fn sector_size(&self) -> u64 {
        self.sector_size
    }
    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".berth-tmp");
    path.with_file_name(name)
}

/// The most [`System::read_file`] reads: more is an error, not PID1's memory.
const MAX_READ_FILE: u64 = 16 << 20;

/// `path`'s contents, for [`System::read_file`]. Boot reads files in /etc
/// (machine-id, hostname), /proc, /sys and efivarfs, all regular files, so
/// through [`berth_layout::regular_file::read`]: a FIFO or a device in
/// their place is an error naming the path, not a hang.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    berth_layout::regular_file::read(path, MAX_READ_FILE).map_err(|e| e.into_io(path))
}

impl System for RealSystem {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        read_regular(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(u64::try_from(len).unwrap_or(u64::MAX)).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(path)? {
            if let Ok(n) = e?.file_name().into_string() {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        refuse_during_shutdown(&self.shutdown)?;
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        refuse_during_shutdown(&self.shutdown)?;
        let tmp = tmp_path(path);
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory holding it is: without
        // this a power cut can bring back the old file, or none (a first
        // boot's /etc/machine-id lost, and a new identity on the next boot).
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
            io::Error::new(e.kind(), format!("fsync of {} after writing {}: {e}", dir.display(), path.display()))
        })
    }

    fn mount(&mut self, m: &MountSpec) -> nix::Result<()> {
        if self.shutdown.is_raised() {
            return Err(nix::errno::Errno::ESHUTDOWN);
        }
        nix::mount::mount(Some(m.source.as_str()), &m.target, Some(m.fstype.as_str()), m.flags, m.data.as_deref())
    }

    fn make_shared(&mut self, target: &Path) -> nix::Result<()> {
        if self.shutdown.is_raised() {
            return Err(nix::errno::Errno::ESHUTDOWN);
        }
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
    }

    fn open_disk(&mut self, dev: &Path, writable: bool) -> io::Result<Box<dyn Disk>> {
        if writable {
            refuse_during_shutdown(&self.shutdown)?;
        }
        Ok(Box::new(BlockFile::open(dev, writable)?))
    }

    fn resize_partition(&mut self, disk: &Path, number: usize, start: u64, length: u64) -> io::Result<()> {
        refuse_during_shutdown(&self.shutdown)?;
        let f = File::open(disk)?;
        let too_big = || io::Error::other("partition offset or size beyond 2^63");
        let mut part = BlkpgPartition {
            start: i64::try_from(start).map_err(|_| too_big())?,
            length: i64::try_from(length).map_err(|_| too_big())?,
            pno: libc::c_int::try_from(number).map_err(|_| too_big())?,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        // SAFETY: arg points at a live blkpg_partition of the declared size.
        unsafe { blkpg(f.as_raw_fd(), &arg) }.map_err(io::Error::from)?;
        Ok(())
    }

    fn run(&mut self, argv: &[&str]) -> io::Result<ExitStatus> {
        refuse_during_shutdown(&self.shutdown)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::other("empty command line"));
        };
        let mut cmd = spawn::clean_command(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        self.reaper.run(&mut cmd)
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn set_link_up(&mut self, name: &str) -> io::Result<()> {
        // Two ioctls on any socket (SIOCGIFFLAGS, SIOCSIFFLAGS), as
        // systemd's loopback setup did before it used netlink: a netlink
        // library in PID1 for one flag would cost more than it saves.
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
        }
        // SAFETY: a plain socket(2) call; its result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a socket just opened and owned by nothing else.
        let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: the ioctls read and write the ifreq given, which outlives them.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn random(&mut self, buf: &mut [u8]) -> io::Result<()> {
        File::open("/dev/urandom")?.read_exact(buf)
    }

    fn write_sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        let path = Path::new("/proc/sys").join(key);
        // One write of the whole value, as the kernel wants it.
        OpenOptions::new().write(true).open(&path)?.write_all(value.as_bytes())
    }

    fn nofile_limit(&self) -> io::Result<(u64, u64)> {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((l.rlim_cur, l.rlim_max))
    }

    fn set_nofile_limit(&mut self, soft: u64, hard: u64) -> io::Result<()> {
        let l = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn open_watchdog(&mut self, path: &Path) -> io::Result<Box<dyn WatchdogDevice>> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(RealWatchdog { file }))
    }
}

/// An open watchdog character device.
struct RealWatchdog {
    file: File,
}

impl WatchdogDevice for RealWatchdog {
    fn identity(&mut self) -> io::Result<String> {
        let mut info = WatchdogInfo { options: 0, firmware_version: 0, identity: [0; 32] };
        // SAFETY: WDIOC_GETSUPPORT fills the struct it points to.
        unsafe { wdioc_getsupport(self.file.as_raw_fd(), &mut info) }.map_err(io::Error::from)?;
        let end = info.identity.iter().position(|b| *b == 0).unwrap_or(info.identity.len());
        Ok(String::from_utf8_lossy(info.identity.get(..end).unwrap_or_default()).into_owned())
    }

    fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
        let mut t = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: WDIOC_SETTIMEOUT reads and writes back one int.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut t) }.map_err(io::Error::from)?;
        Ok(u32::try_from(t).unwrap_or(secs))
    }

    fn timeout(&mut self) -> io::Result<u32> {
        let mut t: libc::c_int = 0;
        // SAFETY: WDIOC_GETTIMEOUT writes one int.
        unsafe { wdioc_gettimeout(self.file.as_raw_fd(), &mut t) }.map_err(io::Error::from)?;
        u32::try_from(t).map_err(|_| io::Error::other(format!("negative timeout {t}")))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        let mut dummy: libc::c_int = 0;
        // SAFETY: WDIOC_KEEPALIVE ignores its int argument.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut dummy) }.map_err(io::Error::from)?;
        Ok(())
    }

    fn disarm(mut self: Box<Self>) -> io::Result<()> {
        // The magic close: `V` then close(2) stops the timer.
        self.file.write_all(b"V")?;
        drop(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("berth-real-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `read_file` on another thread, which must answer within 2 s.
    fn read_in_time(path: &Path) -> io::Result<Vec<u8>> {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let sys = RealSystem::new(ShutdownFlag::default());
            let _ = tx.send(sys.read_file(&path));
        });
        rx.recv_timeout(std::time::Duration::from_secs(2)).expect("read_file hung")
    }

    #[test]
    fn real_write_file_replaces_the_file_and_leaves_no_temporary() {
        let s = Scratch::new("write");
        let path = s.0.join("machine-id");
        let mut sys = RealSystem::new(ShutdownFlag::default());
        sys.write_file(&path, b"old\n", 0o444).unwrap();
        sys.write_file(&path, b"new\n", 0o444).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
        assert_eq!(std::fs::read_dir(&s.0).unwrap().count(), 1, "a temporary file is left");
    }

    #[test]
    fn real_read_file_reads_regular_files_and_dev_null() {
        let s = Scratch::new("read");
        let path = s.0.join("hostname");
        std::fs::write(&path, b"node-1\n").unwrap();
        assert_eq!(read_in_time(&path).unwrap(), b"node-1\n");
        let null = s.0.join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        assert_eq!(read_in_time(&null).unwrap(), b"");
        let missing = read_in_time(&s.0.join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn real_read_file_refuses_a_fifo_and_dev_zero_without_hanging() {
        let s = Scratch::new("fifo");
        let fifo = s.0.join("machine-id");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_in_time(&fifo).unwrap_err();
        assert!(e.to_string().contains("machine-id: not a regular file (a FIFO)"), "{e}");
        let zero = s.0.join("hostname");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_in_time(&zero).unwrap_err();
        assert!(e.to_string().contains("hostname: not a regular file (a character device)"), "{e}");
    }
}
