//! cgroup v2 groups for services: one directory per unit under a root,
//! `<root>/<unit>`, so that every process a service starts, however it
//! forks, double-forks or calls setsid, stays countable and killable.
//!
//! - [`Cgroups::setup`] creates the root and enables the controllers the
//!   kernel offers (`cpu cpuset io memory pids`) for the units below it.
//! - [`Group::create`] + [`Group::apply`] make a unit's group and write its
//!   [`Limits`].
//! - A child joins its group between fork and exec: the parent opens
//!   `cgroup.procs` ([`Group::procs_file`]) and the child writes `0` to it
//!   ([`join_from_child`]), so not one instruction of the service runs
//!   outside its group.
//! - [`Group::kill`] kills the whole group at once with `cgroup.kill`
//!   (Linux 5.14), or else by SIGKILL to every process, repeated until none
//!   is left; [`Group::populated`] reads `cgroup.events`.
//!
//! Plain synchronous file operations on cgroupfs, which never block on a
//! disk; the supervisor polls them from its event loop.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::unit::Limits;

/// Where PID1 keeps the services' groups.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup/berth";

/// The controllers Berth enables for its units, when the kernel has them.
pub const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// Every file [`Limits::cgroup_settings`] can write, with the value the
/// kernel gives a new group: what [`Group::apply`] writes back when a unit
/// no longer sets that limit.
pub const LIMIT_DEFAULTS: [(&str, &str); 3] = [("memory.max", "max"), ("cpu.weight", "100"), ("pids.max", "max")];

/// Whether `path` is on a cgroup v2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The first cgroup2 mount in `/proc/self/mounts` (PID1 mounts it on
/// `/sys/fs/cgroup`; a host with the "hybrid" layout has it on
/// `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    crate::mountinfo::parse(&text).into_iter().find(|m| m.fstype == "cgroup2").map(|m| PathBuf::from(m.target))
}

/// The root of the units' groups, with the controllers it hands down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroups {
    root: PathBuf,
    controllers: Vec<String>,
}

impl Cgroups {
    /// Creates `root` (on a cgroup2 filesystem) if needed and enables in it,
    /// for the units' groups, every controller of [`CONTROLLERS`] the
    /// kernel offers there; for that the parent must hand them down too,
    /// which is asked of it first. A controller that cannot be enabled is
    /// left out (its limits then fail with a clear error at the unit's
    /// start), not an error here.
    pub fn setup(root: impl Into<PathBuf>) -> io::Result<Cgroups> {
        let root = root.into();
        let parent = root.parent().ok_or_else(|| io::Error::other(format!("{}: no parent", root.display())))?;
        if !is_cgroup2(parent) {
            return Err(io::Error::other(format!("{}: not a cgroup v2 filesystem", parent.display())));
        }
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", root.display()))),
        }
        enable_controllers(parent);
        let controllers = enable_controllers(&root);
        Ok(Cgroups { root, controllers })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The controllers the units' groups have.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// The group of `unit` (not created yet).
    pub fn group(&self, unit: &str) -> Group {
        Group { path: self.root.join(unit) }
    }

    /// Removes the root, once every group in it is gone.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.root)
    }
}

/// Enables what `dir` has of [`CONTROLLERS`] for its children, one at a
/// time so that one refusal does not stop the others. Returns what its
/// children have.
fn enable_controllers(dir: &Path) -> Vec<String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if CONTROLLERS.contains(&c) && !enabled.split_whitespace().any(|e| e == c) {
            // EBUSY (processes in a non-root parent) or a controller bound
            // to a v1 hierarchy: the children go without it.
            let _ = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
    std::fs::read_to_string(dir.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    // cgroupfs takes each write(2) as one command: one write of the whole
    // value, no buffering. It ignores O_TRUNC (as `echo max > memory.max`
    // shows); a regular file standing in for it (tests) then holds exactly
    // the last value.
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Removes `dir` and the (empty) groups below it, deepest first: a
/// service may have made sub-groups of its own.
fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("removing {}: {e}", dir.display()))),
    }
}

/// Whether [`Group::create`] made the group or found it from an earlier run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// Made now: its limit files hold the kernel's defaults.
    New,
    /// Left over from an earlier run of the unit: its limits may be that run's.
    Existing,
}

/// One unit's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    path: PathBuf,
}

impl Group {
    /// A group at `path` (for tests and tools; units get theirs from
    /// [`Cgroups::group`]).
    pub fn at(path: impl Into<PathBuf>) -> Group {
        Group { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory; an existing one (left over from a previous
    /// run of the unit, maybe still holding processes) is kept. Says
    /// which, for [`Group::apply`].
    pub fn create(&self) -> io::Result<Made> {
        match std::fs::create_dir(&self.path) {
            Ok(()) => Ok(Made::New),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Made::Existing),
            Err(e) => Err(io::Error::new(e.kind(), format!("creating {}: {e}", self.path.display()))),
        }
    }

    /// Writes the unit's limits and, in a group reused from an earlier
    /// run ([`Made::Existing`]), the kernel's default into each
    /// [`LIMIT_DEFAULTS`] file the unit leaves unset: that run's unit
    /// file may have set a limit since removed, which must not outlive it.
    /// A new group holds the defaults already. A default file that does
    /// not exist (its controller is not enabled) is skipped. The error
    /// names the file and, when a limit's file does not exist, the
    /// controller that is missing.
    pub fn apply(&self, limits: &Limits, made: Made) -> Result<(), String> {
        let settings = limits.cgroup_settings();
        let resets = if made == Made::Existing { LIMIT_DEFAULTS.as_slice() } else { &[] };
        for &(file, default) in resets {
            if settings.iter().any(|(set, _)| *set == file) {
                continue;
            }
            let path = self.path.join(file);
            match write_file(&path, default) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot reset {} to {default:?}: {e}", path.display())),
            }
        }
        for (file, value) in settings {
            let path = self.path.join(file);
            if let Err(e) = write_file(&path, &value) {
                let controller = file.split('.').next().unwrap_or(file);
                return Err(if e.kind() == io::ErrorKind::NotFound {
                    format!(
                        "cannot set {file}: the {controller} controller is not available in {}",
                        self.path.display()
                    )
                } else {
                    format!("cannot write {value:?} to {}: {e}", path.display())
                });
            }
        }
        Ok(())
    }

    /// `cgroup.procs`, open for writing: give it to [`join_from_child`] in
    /// the child. Opened by the parent, so the move is checked against the
    /// parent's credentials even if the child drops them afterwards.
    pub fn procs_file(&self) -> io::Result<File> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))
    }

    /// Whether any process is in the group or the groups below it.
    pub fn populated(&self) -> io::Result<bool> {
        let text = std::fs::read_to_string(self.path.join("cgroup.events"))?;
        Ok(parse_populated(&text).unwrap_or(true))
    }

    /// Whether no process is left; a group that does not exist is empty.
    pub fn is_empty(&self) -> bool {
        match self.populated() {
            Ok(p) => !p,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Every process of the group and the groups below it.
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        let mut out = Vec::new();
        collect_pids(&self.path, &mut out)?;
        Ok(out)
    }

    /// Sends `sig` to every process of the group, reading the list again
    /// until no new process shows up (one forked during the walk), a few
    /// rounds at most. Returns how many were signalled. This is the polite
    /// signal; [`Group::kill`] is the one that cannot miss.
    pub fn signal(&self, sig: Signal) -> io::Result<usize> {
        let mut done = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let fresh: Vec<i32> = self.pids()?.into_iter().filter(|p| !done.contains(p)).collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                done.insert(pid);
            }
        }
        Ok(done.len())
    }

    /// SIGKILL to every process of the group, atomically through
    /// `cgroup.kill` where the kernel has it; else to every pid listed,
    /// repeated while new ones appear (a fork racing the walk).
    pub fn kill(&self) -> io::Result<()> {
        let kill_file = self.path.join("cgroup.kill");
        match write_file(&kill_file, "1") {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.path.exists() => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io::Error::new(e.kind(), format!("writing {}: {e}", kill_file.display()))),
        }
        for _ in 0..100 {
            let pids = self.pids()?;
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        Ok(())
    }

    /// Removes the group (and empty groups below it); fails with EBUSY
    /// while processes are left.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.path)
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> io::Result<()> {
    let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(t) => t,
        // The group (or a sub-group) went away during the walk.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

/// `populated 0|1` from a `cgroup.events` text.
pub fn parse_populated(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.strip_prefix("populated ")?.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    })
}

/// In the child, between fork and exec: moves the calling process into the
/// group whose `cgroup.procs` is open as `procs_fd`. Async-signal-safe: one
/// write(2), no allocation.
pub fn join_from_child(procs_fd: RawFd) -> io::Result<()> {
    // SAFETY: write(2) of a static one-byte buffer to a descriptor.
    let n = unsafe { libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`join_from_child`] for a file.
pub fn join_file_from_child(procs: &File) -> io::Result<()> {
    join_from_child(procs.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populated_is_read_from_events() {
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated("frozen 0\n"), None);
    }

    #[test]
    fn a_missing_group_is_empty_and_removing_it_is_fine() {
        let g = Group::at("/nonexistent/berth-cgroup-test");
        assert!(g.is_empty());
        assert!(g.remove().is_ok());
        assert!(g.kill().is_ok());
        assert_eq!(g.pids().unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn limits_without_their_controller_name_it() {
        let dir = std::env::temp_dir().join(format!("berth-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Group::at(&dir);
        let limits = Limits { pids_max: Some(crate::unit::Limit::Value(10)), ..Limits::default() };
        let err = g.apply(&limits, Made::Existing).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("the pids controller is not available"), "{err}");
        assert!(g.apply(&Limits::default(), Made::Existing).is_ok());
    }

    #[test]
    fn limits_removed_from_the_unit_are_reset_to_the_kernel_defaults() {
        use crate::unit::Limit;
        let dir = std::env::temp_dir().join(format!("berth-cgroup-reset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A group reused from an earlier run: the controllers' files exist.
        for (file, default) in LIMIT_DEFAULTS {
            std::fs::write(dir.join(file), default).unwrap();
        }
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let g = Group::at(&dir);
        let set = Limits {
            memory_max: Some(Limit::Value(512 << 20)),
            cpu_weight: Some(500),
            pids_max: Some(Limit::Value(64)),
            ..Limits::default()
        };
        g.apply(&set, Made::Existing).unwrap();
        assert_eq!(read("memory.max"), (512u64 << 20).to_string());
        assert_eq!(read("cpu.weight"), "500");
        assert_eq!(read("pids.max"), "64");
        // Only memory_max removed: the others stay.
        g.apply(&Limits { memory_max: None, ..set.clone() }, Made::Existing).unwrap();
        assert_eq!(read("memory.max"), "max");
        assert_eq!(read("cpu.weight"), "500");
        assert_eq!(read("pids.max"), "64");
        // All removed.
        g.apply(&Limits::default(), Made::Existing).unwrap();
        let now: Vec<String> = LIMIT_DEFAULTS.iter().map(|(file, _)| read(file)).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(now, ["max", "100", "max"]);
    }

    #[test]
    fn every_file_a_unit_can_set_has_a_default() {
        use crate::unit::Limit;
        let all = Limits {
            memory_max: Some(Limit::Max),
            cpu_weight: Some(1),
            pids_max: Some(Limit::Max),
            ..Limits::default()
        };
        let files: Vec<&str> = all.cgroup_settings().into_iter().map(|(file, _)| file).collect();
        let defaults: Vec<&str> = LIMIT_DEFAULTS.iter().map(|(file, _)| *file).collect();
        assert_eq!(files, defaults, "a cgroup file a unit can set needs its default in LIMIT_DEFAULTS");
    }

    #[test]
    fn a_new_group_gets_the_units_limits_and_no_resets() {
        use crate::unit::Limit;
        let dir = std::env::temp_dir().join(format!("berth-cgroup-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Group::at(&dir);
        assert_eq!(g.create().unwrap(), Made::New);
        assert_eq!(g.create().unwrap(), Made::Existing, "made by the first call");
        // Marks in the files the kernel gives a new group, to see whether
        // apply writes them.
        for (file, _) in LIMIT_DEFAULTS {
            std::fs::write(dir.join(file), "kernel's").unwrap();
        }
        g.apply(&Limits { pids_max: Some(Limit::Value(64)), ..Limits::default() }, Made::New).unwrap();
        let now: Vec<String> =
            LIMIT_DEFAULTS.iter().map(|(file, _)| std::fs::read_to_string(dir.join(file)).unwrap()).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(now, ["kernel's", "kernel's", "64"]);
    }

    #[test]
    fn resetting_skips_files_of_controllers_not_enabled() {
        let dir = std::env::temp_dir().join(format!("berth-cgroup-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "1024").unwrap();
        let g = Group::at(&dir);
        let result = g.apply(&Limits::default(), Made::Existing);
        let memory = std::fs::read_to_string(dir.join("memory.max")).unwrap();
        let created = dir.join("pids.max").exists() || dir.join("cpu.weight").exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(result, Ok(()));
        assert_eq!(memory, "max");
        assert!(!created, "a missing controller file is not created");
    }

    #[test]
    fn setup_refuses_a_root_outside_cgroup2() {
        let err = Cgroups::setup(std::env::temp_dir().join("berth-not-a-cgroup")).unwrap_err();
        assert!(err.to_string().contains("not a cgroup v2 filesystem"), "{err}");
    }
}
