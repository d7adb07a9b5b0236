//! What early boot needs from the machine, behind one trait: the real
//! implementation makes system calls, the fake in the tests records them.

use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::reaper::ExitStatus;

/// One mount(2) call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} on {}", self.fstype, self.source, self.target.display())?;
        if let Some(d) = &self.data {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// A whole disk opened for its partition table.
pub trait Disk: Read + Write + Seek {
    /// Logical sector size (BLKSSZGET).
    fn sector_size(&self) -> u64;
    /// Size in bytes (BLKGETSIZE64).
    fn size_bytes(&self) -> u64;
    fn sync_all(&mut self) -> io::Result<()>;
}

/// [`Gpt::write`](berth_layout::gpt::Gpt::write) syncs a disk between the
/// backup and the primary table, and after both.
impl berth_layout::gpt::SyncWrite for dyn Disk {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

pub trait System {
    fn exists(&self, path: &Path) -> bool;
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The names in a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Creates `path` and its parents; `path` itself gets exactly `mode`
    /// (the umask does not apply).
    fn create_dir_all(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Replaces `path` atomically (a crash leaves the old or the new file).
    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    fn mount(&mut self, m: &MountSpec) -> nix::Result<()>;
    /// Makes the mount at `target` and every mount below it shared
    /// (`MS_SHARED | MS_REC`, what `mount --make-rshared` does); mounts made
    /// under a shared mount later are shared too.
    fn make_shared(&mut self, target: &Path) -> nix::Result<()>;
    fn open_disk(&mut self, dev: &Path, writable: bool) -> io::Result<Box<dyn Disk>>;
    /// Tells the kernel that partition `number` of `disk` now spans
    /// `length` bytes from `start` (BLKPG_RESIZE_PARTITION).
    fn resize_partition(&mut self, disk: &Path, number: usize, start: u64, length: u64) -> io::Result<()>;
    /// Runs a program to completion (stdout discarded, stderr to the console).
    fn run(&mut self, argv: &[&str]) -> io::Result<ExitStatus>;
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// Sets the network interface `name` up (`IFF_UP`, what `ip link set
    /// NAME up` does); for `lo` the kernel then gives it 127.0.0.1/8 and ::1.
    fn set_link_up(&mut self, name: &str) -> io::Result<()>;
    fn random(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// Writes a kernel setting: `key` is its path under `/proc/sys`
    /// (`fs/nr_open`), `value` what to write there.
    fn write_sysctl(&mut self, key: &str, value: &str) -> io::Result<()>;
    /// This process's (PID1's) limit of open files, RLIMIT_NOFILE: (soft, hard).
    fn nofile_limit(&self) -> io::Result<(u64, u64)>;
    /// Sets it (raising the hard limit needs CAP_SYS_RESOURCE).
    fn set_nofile_limit(&mut self, soft: u64, hard: u64) -> io::Result<()>;
    /// Opens a watchdog device (`/dev/watchdog0`), which starts its timer.
    fn open_watchdog(&mut self, path: &Path) -> io::Result<Box<dyn WatchdogDevice>>;
}

/// An open watchdog device (the real one in `real.rs`, a recording fake
/// in the tests). Opening it starts the timer.
pub trait WatchdogDevice: Send {
    /// The driver's name of the device (WDIOC_GETSUPPORT `identity`, e.g.
    /// `i6300ESB timer`).
    fn identity(&mut self) -> io::Result<String>;
    /// WDIOC_SETTIMEOUT, in whole seconds; returns the timeout the device
    /// took (drivers round to what the hardware counts).
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32>;
    /// WDIOC_GETTIMEOUT, in seconds.
    fn timeout(&mut self) -> io::Result<u32>;
    /// WDIOC_KEEPALIVE: restarts the countdown.
    fn keepalive(&mut self) -> io::Result<()>;
    /// Writes the magic character `V` and closes the device: the driver
    /// stops the timer (unless the kernel was built with NOWAYOUT).
    fn disarm(self: Box<Self>) -> io::Result<()>;
}
