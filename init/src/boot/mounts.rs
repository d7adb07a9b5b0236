//! The API filesystems, mounted first.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::system::{MountSpec, System};
use crate::mountinfo;

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

pub struct EarlyMount {
    pub fstype: &'static str,
    pub target: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    /// The root is read-only: only mount points on a filesystem mounted
    /// just before (devtmpfs) can be created; the image ships the others.
    pub create_dir: bool,
    /// Mounted only when this path exists.
    pub only_if: Option<&'static str>,
    /// A failure is an emergency (else it is only logged).
    pub required: bool,
}

const fn m(fstype: &'static str, target: &'static str, flags: MsFlags, data: Option<&'static str>) -> EarlyMount {
    EarlyMount { fstype, target, flags, data, create_dir: false, only_if: None, required: true }
}

pub const EARLY_MOUNTS: [EarlyMount; 10] = [
    m("proc", "/proc", NOSUID_NODEV_NOEXEC, None),
    m("sysfs", "/sys", NOSUID_NODEV_NOEXEC, None),
    m("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
    EarlyMount {
        create_dir: true,
        ..m("devpts", "/dev/pts", MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC), Some("mode=0620,ptmxmode=0666"))
    },
    EarlyMount { create_dir: true, ..m("tmpfs", "/dev/shm", NOSUID_NODEV, Some("mode=1777")) },
    m("tmpfs", "/run", NOSUID_NODEV, Some("mode=0755")),
    m("tmpfs", "/tmp", NOSUID_NODEV, Some("mode=1777")),
    m("cgroup2", "/sys/fs/cgroup", NOSUID_NODEV_NOEXEC, Some("nsdelegate")),
    EarlyMount {
        only_if: Some("/sys/firmware/efi"),
        required: false,
        ..m("efivarfs", "/sys/firmware/efi/efivars", NOSUID_NODEV_NOEXEC, None)
    },
    // BPF programs and maps pinned by container networking (Cilium, Calico's
    // eBPF data plane) and by systemd-style tools live here; the kernel
    // creates the directory when it has the bpf(2) system call.
    EarlyMount {
        only_if: Some("/sys/fs/bpf"),
        required: false,
        ..m("bpf", "/sys/fs/bpf", NOSUID_NODEV_NOEXEC, Some("mode=0700"))
    },
];

pub const PROC_MOUNTS: &str = "/proc/self/mounts";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {fstype} on {target}: {source}")]
    Mount { fstype: String, target: PathBuf, source: Errno },
    #[error("creating the mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: std::io::Error },
}

impl EarlyMount {
    fn spec(&self) -> MountSpec {
        MountSpec {
            source: self.fstype.to_string(),
            target: PathBuf::from(self.target),
            fstype: self.fstype.to_string(),
            flags: self.flags,
            data: self.data.map(str::to_string),
        }
    }
}

/// Mounts one filesystem unless something is mounted there already (the
/// kernel may have mounted devtmpfs itself). EBUSY counts as mounted.
pub fn mount_once(sys: &mut dyn System, spec: &MountSpec) -> Result<bool, MountError> {
    let target = spec.target.to_string_lossy();
    if let Ok(table) = sys.read_file(Path::new(PROC_MOUNTS)) {
        if mountinfo::is_mountpoint(&String::from_utf8_lossy(&table), &target) {
            return Ok(false);
        }
    }
    match sys.mount(spec) {
        Ok(()) => Ok(true),
        Err(Errno::EBUSY) => Ok(false),
        Err(source) => Err(MountError::Mount { fstype: spec.fstype.clone(), target: spec.target.clone(), source }),
    }
}

/// Mounts [`EARLY_MOUNTS`] in order. Every one is tried even after a
/// failure, so the emergency shell gets as much of a system as possible;
/// the first required failure is returned.
pub fn mount_early(sys: &mut dyn System) -> Result<(), MountError> {
    let mut first_error = None;
    for em in &EARLY_MOUNTS {
        if em.only_if.is_some_and(|p| !sys.exists(Path::new(p))) {
            continue;
        }
        let spec = em.spec();
        let result = if em.create_dir {
            sys.create_dir_all(&spec.target, 0o755)
                .map_err(|source| MountError::MountPoint { path: spec.target.clone(), source })
                .and_then(|()| mount_once(sys, &spec))
        } else {
            mount_once(sys, &spec)
        };
        if let Err(e) = result {
            crate::info!("early boot: {e}");
            if em.required && first_error.is_none() {
                first_error = Some(e);
            }
        }
    }
    // The kernel makes every mount private; container hosts expect the
    // tree shared, as systemd leaves it: Kubernetes' bidirectional mounts,
    // CSI drivers and `rshared` bind mounts of containers need their mounts
    // to propagate to the host. Mounts made later (/var, /etc) under a
    // shared parent are shared too. Not fatal: only propagation is lost.
    if let Err(e) = sys.make_shared(Path::new("/")) {
        crate::info!("early boot: making the mount tree shared: {e}");
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
