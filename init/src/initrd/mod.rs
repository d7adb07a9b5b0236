//! Stage 0: `berth-initrd`, run from the UKI's initramfs, sets up the
//! verified root and hands over to berth-init on it.
//!
//! The kernel starts its first process only after every asynchronous
//! device probe of its built-in drivers (`async_synchronize_full` in
//! `kernel_init`); AHCI's is the long one (empty ports' link debounce, a
//! CD-ROM drive), whatever disk the root is on. So AHCI is a module here,
//! and stage 0 loads it in a child process while it does what the kernel's
//! dm-init did: the same `dm-mod.create=`, `dm-mod.waitfor=`, `root=`,
//! `rootfstype=`, `rootflags=`, `ro` and `init=` parameters
//! ([`berth_layout::cmdline`]), waiting only for the devices they name,
//! the same device-mapper table (the kernel resolves its `PARTUUID=`
//! devices itself), sets the root device's read-ahead
//! ([`ROOT_READ_AHEAD_KB`]), then `switch_root`: the initramfs's files are deleted,
//! the root is moved onto `/` with `/dev` under it, and `/sbin/init` is
//! executed as PID 1 again. Afterwards the system looks as if the kernel
//! had mounted the root: / is the read-only EROFS on dm-0, devtmpfs on
//! /dev, nothing else mounted.
//!
//! The loader child sets `kernel.modules_disabled` once the modules are
//! in, so no module is ever loaded after it, and PID1 reads the flag as
//! "the drivers have probed" ([`wait_for_modules`]).
//!
//! It is PID1 too, so it never panics or exits: on an error it says what
//! failed and reboots after [`REBOOT_AFTER`] (what `panic=10` did when the
//! kernel failed to mount the root), which lets systemd-boot's boot
//! counting fall back to the other slot.

pub mod dm;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_layout::bootdisk::parse_partuuid;
use berth_layout::cmdline::{has_flag, param, parse_dm_create, DmCreateError, DmDevice};
use nix::mount::MsFlags;

use crate::boot::discover::{partition_name, scan_whole_disks, SYS_BLOCK};
use crate::boot::system::System;
use crate::info;

/// systemd's marker of an initrd (os-release(5)), which the initramfs
/// carries.
pub const INITRD_RELEASE: &str = "/etc/initrd-release";
/// What stage 0 passes to the real PID1: CLOCK_MONOTONIC in microseconds
/// when stage 0 started, so the ready line can tell kernel and initrd apart.
pub const STARTED_ENV: &str = "BERTH_INITRD_STARTED_USEC";
/// Where the root is mounted before it becomes `/`.
const SYSROOT: &str = "/sysroot";
/// The files the image's initramfs holds besides directories (and the
/// kernel's own /dev/console): deleted before the switch, so their memory
/// is freed once the new init runs.
const INITRAMFS_FILES: [&str; 2] = ["/init", INITRD_RELEASE];
const INITRAMFS_DIRS: [&str; 6] = ["/etc", "/proc", "/sys", MODULES_DIR, "/lib", SYSROOT];
/// The modules, and the order stage 0 loads them in (one file name per
/// line, dependencies first; written by the image build).
const MODULES_DIR: &str = "/lib/modules";
const LOAD_ORDER: &str = "/lib/modules/load.order";
/// Set to 1 once the initramfs's modules are loaded: no more can be.
pub const MODULES_DISABLED: &str = "/proc/sys/kernel/modules_disabled";
/// How often the devices named on the command line are looked for.
const POLL: Duration = Duration::from_millis(10);
/// While nothing changes in /sys/class/block, how often the disks' tables
/// are read again anyway (a table a disk could not yet give).
const RESCAN: Duration = Duration::from_secs(1);
/// How often a wait that goes on says so on the console.
const WAIT_NOTICE: Duration = Duration::from_secs(5);
/// The pause before rebooting after a failure, as `panic=10` gave.
pub const REBOOT_AFTER: Duration = Duration::from_secs(10);

/// Why stage 0 could not hand over: each names the parameter, device or
/// step.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("reading /proc/cmdline: {0}")]
    Cmdline(std::io::Error),
    #[error("no root= on the kernel command line")]
    NoRoot,
    #[error("kernel command line: {param}={value:?}: only PARTUUID=<uuid> and /dev/<name> are supported")]
    UnsupportedDevice { param: &'static str, value: String },
    #[error(transparent)]
    DmCreate(#[from] DmCreateError),
    #[error(transparent)]
    Dm(#[from] dm::DmError),
    #[error("{step}: {source}")]
    Sys { step: String, source: nix::Error },
    #[error("executing {init}: {source}")]
    Exec { init: String, source: nix::Error },
}

fn sys(step: impl Into<String>) -> impl FnOnce(nix::Error) -> InitrdError {
    let step = step.into();
    move |source| InitrdError::Sys { step, source }
}

/// What the command line asks stage 0 to do.
#[derive(Debug, PartialEq, Eq)]
pub struct RootPlan {
    /// `dm-mod.create=`: the mapped devices, created in order.
    pub devices: Vec<DmDevice>,
    /// `dm-mod.waitfor=` (comma-separated) and, when not a mapped device,
    /// `root=`: devices that must exist first.
    pub waitfor: Vec<String>,
    /// `root=`: the device mounted as `/`, as given (`/dev/<name>` or
    /// `PARTUUID=<uuid>`, which stage 0 resolves to its node to mount it).
    pub root: String,
    /// `rootfstype=` (default `erofs`, Berth's root).
    pub fstype: String,
    /// `ro`, unless `rw` is given.
    pub read_only: bool,
    /// `rootflags=`: file system options.
    pub flags: Option<String>,
    /// `init=`, default `/sbin/init`.
    pub init: String,
}

/// Reads the plan off a command line.
pub fn plan(cmdline: &str) -> Result<RootPlan, InitrdError> {
    let devices = match param(cmdline, "dm-mod.create") {
        Some(v) => parse_dm_create(&v)?,
        None => Vec::new(),
    };
    let root = param(cmdline, "root").filter(|r| !r.is_empty()).ok_or(InitrdError::NoRoot)?;
    let mut waitfor: Vec<String> = param(cmdline, "dm-mod.waitfor")
        .map(|w| w.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    for w in &waitfor {
        check_device("dm-mod.waitfor", w)?;
    }
    // A mapped device appears when stage 0 creates it; any other root
    // is waited for like dm-mod.waitfor's devices.
    if !root.starts_with("/dev/dm-") && !root.starts_with("/dev/mapper/") {
        check_device("root", &root)?;
        if !waitfor.contains(&root) {
            waitfor.push(root.clone());
        }
    }
    Ok(RootPlan {
        devices,
        waitfor,
        root,
        fstype: param(cmdline, "rootfstype").unwrap_or_else(|| "erofs".into()),
        read_only: !has_flag(cmdline, "rw"),
        flags: param(cmdline, "rootflags"),
        init: param(cmdline, "init").unwrap_or_else(|| "/sbin/init".into()),
    })
}

fn check_device(param: &'static str, value: &str) -> Result<(), InitrdError> {
    let ok = value.starts_with("/dev/") || parse_partuuid(value).is_some();
    if ok {
        Ok(())
    } else {
        Err(InitrdError::UnsupportedDevice { param, value: value.to_string() })
    }
}

/// The device node of `spec` once it exists: `/dev/<name>` as given, or
/// for `PARTUUID=<uuid>` the partition of that unique GUID on any whole
/// disk's GPT (its kernel name from sysfs, as [`partition_name`] reads
/// it). `None` while it is not there yet.
pub fn resolve(sys: &mut dyn System, spec: &str) -> Option<PathBuf> {
    let Some(guid) = parse_partuuid(spec) else {
        let path = PathBuf::from(spec);
        return sys.exists(&path).then_some(path);
    };
    for disk in scan_whole_disks(sys).ok()? {
        let Ok(table) = disk.table else { continue };
        if let Some(p) = table.gpt.partitions.iter().find(|p| p.unique_guid == guid) {
            let node = partition_name(&*sys, &disk.name, p.number()).ok().map(|n| Path::new("/dev").join(n));
            if let Some(node) = node.filter(|n| sys.exists(n)) {
                return Some(node);
            }
        }
    }
    None
}

/// Waits until every device in `waitfor` exists, saying every
/// [`WAIT_NOTICE`] which ones it still waits for, and returns their device
/// nodes in `waitfor`'s order ([`resolve`]'s: what mount(2) and stat(2)
/// take, where a `PARTUUID=` spec is only the kernel's own syntax). Forever, like the
/// kernel's `rootwait`: a USB disk may take seconds, and a machine without
/// its root has nothing better to do.
///
/// The disks' GPTs are read again only when the block devices in sysfs
/// changed (a disk or its partitions appeared), or after [`RESCAN`]: a USB
/// root may take seconds, and reading every table each [`POLL`] would
/// keep a CPU busy meanwhile. /dev's listing counts too: the kernel adds
/// a partition to sysfs just before devtmpfs makes its node.
fn wait_for(sys: &mut dyn System, waitfor: &[String]) -> Vec<PathBuf> {
    let started = Instant::now();
    let mut notice = started + WAIT_NOTICE;
    let mut scanned: Option<(Vec<String>, Instant)> = None;
    loop {
        let mut listing = sys.read_dir(Path::new(SYS_BLOCK)).unwrap_or_default();
        listing.extend(sys.read_dir(Path::new("/dev")).unwrap_or_default());
        let unchanged = scanned.as_ref().is_some_and(|(l, at)| *l == listing && at.elapsed() < RESCAN);
        if unchanged {
            std::thread::sleep(POLL);
            continue;
        }
        scanned = Some((listing, Instant::now()));
        let found: Vec<Option<PathBuf>> = waitfor.iter().map(|w| resolve(sys, w)).collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        if Instant::now() >= notice {
            let names: Vec<&str> =
                waitfor.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(w, _)| w.as_str()).collect();
            info!("initrd: waiting {} s for {}", started.elapsed().as_secs(), names.join(", "));
            notice += WAIT_NOTICE;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for the root device and returns what stage 0 mounts: its device
/// node (a `root=PARTUUID=` resolved to its partition, see [`resolve`]).
fn wait_for_root(sys: &mut dyn System, plan: &RootPlan) -> PathBuf {
    wait_for(sys, std::slice::from_ref(&plan.root)).pop().unwrap_or_else(|| PathBuf::from(&plan.root))
}

fn mount(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), InitrdError> {
    nix::mount::mount(Some(source), target, Some(fstype), flags, data)
        .map_err(sys(format!("mounting {source} ({fstype}) on {target}")))
}

/// Stage 0 from its first line: never returns. `start` is CLOCK_MONOTONIC
/// at its start.
pub fn run(start: Duration) -> ! {
    let why = match std::panic::catch_unwind(|| set_up_and_switch(start)) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "BUG: stage 0 panicked".to_string(),
    };
    info!("initrd: {why}; rebooting in {} s", REBOOT_AFTER.as_secs());
    crate::log::flush(Duration::from_secs(2));
    std::thread::sleep(REBOOT_AFTER);
    loop {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn set_up_and_switch(start: Duration) -> Result<std::convert::Infallible, InitrdError> {
    let none = MsFlags::empty();
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    mount("proc", "/proc", "proc", quiet, None)?;
    mount("sysfs", "/sys", "sysfs", quiet, None)?;
    load_modules_in_background();
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(InitrdError::Cmdline)?;
    let plan = plan(&cmdline)?;
    let mut real = crate::boot::real::RealSystem::new(crate::power::ShutdownFlag::default());
    wait_for(&mut real, &plan.waitfor);
    if !plan.devices.is_empty() {
        let control = dm::Control::open()?;
        for device in &plan.devices {
            control.create(device)?;
        }
    }
    // devtmpfs makes the mapped device's node as the kernel adds its disk.
    let root = wait_for_root(&mut real, &plan).display().to_string();
    let ro = if plan.read_only { MsFlags::MS_RDONLY } else { none };
    mount(&root, SYSROOT, &plan.fstype, ro, plan.flags.as_deref())?;
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg").ok();
    set_root_read_ahead(&root, &mut kmsg);
    // In the kernel's log (level info: not echoed on the console, which
    // the ready line's initrd share already tells), among its boot lines.
    let line = format!(
        "root {} ({}) mounted in {} ms; switching to {}",
        root,
        plan.fstype,
        crate::timing::monotonic_now().saturating_sub(start).as_millis(),
        plan.init
    );
    kmsg_line(&mut kmsg, 6, &line);
    switch_root(&plan.init, start)
}

/// The root device's read-ahead, in KiB (the kernel's default is 128).
///
/// EROFS decompresses a whole physical cluster (up to 256 KiB of lz4hc,
/// 1 MiB of LZMA in Berth's root) and decompresses it in place, in the
/// page cache pages it fills, only when the read covers the cluster; a
/// read that ends or starts inside one keeps its compressed copy in EROFS's
/// cache as well. With 128 KiB windows nearly every cluster the boot reads
/// was such a one: 34 MiB of compressed copies beside the 86 MiB of files
/// at a reboot's ready line. With 4 MiB, 17 MiB less page cache, and the
/// daemons' programs (read nearly whole at their start either way) come in
/// fewer, larger reads. Measured in README, "Steps of point 2".
pub const ROOT_READ_AHEAD_KB: u32 = 4096;

/// The sysfs directory of the block device `rdev` (a `st_rdev`):
/// `/sys/dev/block/MAJOR:MINOR`.
fn block_dir(rdev: u64) -> PathBuf {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
}

/// Where the kernel takes the read-ahead of the block device `rdev` (a
/// `st_rdev`): `/sys/dev/block/MAJOR:MINOR/queue/read_ahead_kb`, or for a
/// partition (which has no queue of its own and reads with its disk's)
/// `/sys/dev/block/MAJOR:MINOR/../queue/read_ahead_kb`, its disk's.
pub fn read_ahead_path(rdev: u64, partition: bool) -> PathBuf {
    let queue = if partition { "../queue/read_ahead_kb" } else { "queue/read_ahead_kb" };
    block_dir(rdev).join(queue)
}

/// Sets the root device's read-ahead to [`ROOT_READ_AHEAD_KB`] and says so
/// in the kernel's log. A failure is logged and the boot goes on with the
/// kernel's default: it only costs speed.
fn set_root_read_ahead(root: &str, kmsg: &mut Option<std::fs::File>) {
    let result = nix::sys::stat::stat(root)
        .map_err(std::io::Error::from)
        .map(|st| read_ahead_path(st.st_rdev, block_dir(st.st_rdev).join("partition").exists()))
        .and_then(|path| std::fs::write(&path, ROOT_READ_AHEAD_KB.to_string()).map(|()| path));
    match result {
        Ok(path) => kmsg_line(kmsg, 6, &format!("{}: {ROOT_READ_AHEAD_KB} KiB", path.display())),
        Err(e) => kmsg_line(kmsg, 4, &format!("setting {root}'s read-ahead: {e}")),
    }
}

/// Writes one line to the kernel's log (what a forked child can do
/// without PID1's console thread).
fn kmsg_line(kmsg: &mut Option<std::fs::File>, level: u8, line: &str) {
    if let Some(k) = kmsg {
        use std::io::Write;
        let _ = k.write_all(format!("<{level}>berth-initrd: {line}\n").as_bytes());
    }
}

/// Loads the modules of [`LOAD_ORDER`] in a child process, which then sets
/// [`MODULES_DISABLED`] and exits. The files are opened here, before the
/// initramfs is deleted; the child blocks in `finit_module` until each
/// driver's asynchronous probing (AHCI's ports) is done, and its write
/// to `modules_disabled` says so. A module that fails to load is logged
/// (kernel log, level err) and the others still load.
fn load_modules_in_background() {
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let order = std::fs::read_to_string(LOAD_ORDER).unwrap_or_default();
    let modules: Vec<(String, std::fs::File)> = order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|name| match std::fs::File::open(Path::new(MODULES_DIR).join(name)) {
            Ok(f) => Some((name.to_string(), f)),
            Err(e) => {
                kmsg_line(&mut kmsg, 3, &format!("module {name}: {e}"));
                None
            }
        })
        .collect();
    let disabled = std::fs::OpenOptions::new().write(true).open(MODULES_DISABLED);
    let load_all = |kmsg: &mut Option<std::fs::File>| {
        for (name, file) in &modules {
            if let Err(e) = nix::kmod::finit_module(file, c"", nix::kmod::ModuleInitFlags::empty()) {
                kmsg_line(kmsg, 3, &format!("loading module {name}: {e}"));
            }
        }
        match &disabled {
            Ok(f) => {
                use std::io::Write;
                let mut f: &std::fs::File = f;
                if let Err(e) = f.write_all(b"1\n") {
                    kmsg_line(kmsg, 3, &format!("{MODULES_DISABLED}: {e}"));
                }
            }
            Err(e) => kmsg_line(kmsg, 3, &format!("{MODULES_DISABLED}: {e}")),
        }
    };
    // SAFETY: the child only makes system calls and formats error lines
    // (glibc's fork leaves malloc usable in the child), then _exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            load_all(&mut kmsg);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its buffers twice.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(e) => {
            info!("initrd: fork for loading modules: {e}; loading them here");
            load_all(&mut kmsg);
        }
    }
}

/// Waits until stage 0's module loader is done, when stage 0 ran (this
/// PID1's environment says so): `kernel.modules_disabled` reads 1. Then
/// every disk and CD-ROM behind those drivers has been probed. At most
/// `limit`; returns how long it waited, `None` without stage 0.
pub fn wait_for_modules(limit: Duration) -> Option<Duration> {
    started_from_env()?;
    let started = Instant::now();
    while std::fs::read_to_string(MODULES_DISABLED).map(|v| v.trim() != "1").unwrap_or(false) {
        if started.elapsed() >= limit {
            info!("initrd: modules still loading after {} s; going on", limit.as_secs());
            break;
        }
        std::thread::sleep(POLL);
    }
    Some(started.elapsed())
}

/// `switch_root`: frees the initramfs, puts the new root on `/` with the
/// devtmpfs under it, and executes `init` there.
fn switch_root(init: &str, start: Duration) -> Result<std::convert::Infallible, InitrdError> {
    let detach = nix::mount::MntFlags::MNT_DETACH;
    nix::mount::umount2("/proc", detach).map_err(sys("unmounting /proc"))?;
    nix::mount::umount2("/sys", detach).map_err(sys("unmounting /sys"))?;
    nix::mount::mount(Some("/dev"), "/sysroot/dev", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("moving /dev to /sysroot/dev"))?;
    for f in INITRAMFS_FILES {
        let _ = std::fs::remove_file(f);
    }
    // The modules: the loader holds them open, the memory goes when it exits.
    for e in std::fs::read_dir(MODULES_DIR).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    for d in INITRAMFS_DIRS.iter().filter(|d| **d != SYSROOT) {
        let _ = std::fs::remove_dir(d);
    }
    nix::unistd::chdir(SYSROOT).map_err(sys("chdir /sysroot"))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("moving /sysroot to /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot into the new root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir / in the new root"))?;
    let exec_err = |source| InitrdError::Exec { init: init.to_string(), source };
    let path = CString::new(init).map_err(|_| exec_err(nix::Error::EINVAL))?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != STARTED_ENV)
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    if let Ok(v) = CString::new(format!("{STARTED_ENV}={}", start.as_micros())) {
        env.push(v);
    }
    let never = nix::unistd::execve(&path, &[&path], &env).map_err(exec_err)?;
    match never {}
}

/// When stage 0 started, from the environment it passed to this PID1.
pub fn started_from_env() -> Option<Duration> {
    std::env::var(STARTED_ENV).ok()?.parse::<u64>().ok().map(Duration::from_micros)
}

#[cfg(test)]
mod tests;
