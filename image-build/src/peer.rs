//! The systemd peer of `berth-image bench --peer`: the system a user would
//! pick instead of Berth, built from Debian's own parts and cached like the
//! kernel.
//!
//! Debian 12 by debootstrap (variant minbase) with systemd as PID1, Debian's
//! cloud kernel (linux-image-cloud-amd64) and its initramfs, and the exact
//! containerd, runc and etcd-server packages that `packages.lock` pins for
//! Berth. etcd is configured like Berth's (one member, clients on
//! 127.0.0.1:2379, peers on 127.0.0.1:2380, data on the root disk),
//! containerd with Berth's own config.toml. Two oneshot units print markers
//! with the kernel's clock (`/proc/uptime`) on the serial console: when
//! containerd and etcd are both ready ([`CORE_READY_MARKER`]) and when
//! systemd has finished starting every unit ([`STARTUP_FINISHED_MARKER`]);
//! a third, on a VM with a NIC, when the network is up
//! ([`NETWORK_ONLINE_MARKER`]).
//! A root shell on the virtio console (`/dev/hvc0`) stands where Berth's
//! admin shell is, so the harness reads `/proc` the same way in both.
//!
//! Cache layout: `<cache>/peer/<key>/` holds `vmlinuz`, `initrd.img`,
//! `root.ext4` (the whole root disk, ext4, no partition table, booted with
//! QEMU's `-kernel`/`-initrd`/`-append` and [`CMDLINE`]), `root.qcow2` (the
//! same compressed, for its size) and `peer.toml` (sizes and package
//! versions). The key is a SHA-256 over everything that goes in: the recipe
//! version, the suite, the package lists, the pins, every file written into
//! the root and the command line. A second run with the same inputs takes
//! the cached entry.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};
use crate::context::Context;
use crate::error::{io_at, io_doing, IoError};
use crate::manifest::{ManifestError, Pin};
use crate::mirrors::{host_mirrors, sources_list, SUITE};
use crate::packages::PackageError;

mod root_files;
pub use root_files::{root_files, RootFile, DISABLED_UNITS, ENABLED_UNITS};

/// Bump when the build steps change in a way the other inputs do not show.
const RECIPE_VERSION: &str = "1";

/// Packages from the archive on top of minbase: systemd as PID1 (with udev
/// and D-Bus, which logind needs to act on the ACPI power button, as on any
/// Debian install), the cloud kernel and the tools that make its initramfs.
pub const ARCHIVE_PACKAGES: &[&str] =
    &["systemd", "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "initramfs-tools", "e2fsprogs"];

/// Packages installed at exactly the versions `packages.lock` pins for
/// Berth (the same .deb files, checked against the lock's checksums).
pub const PINNED_PACKAGES: &[&str] = &["containerd", "runc", "etcd-server"];

/// The peer's kernel command line: the root is the whole virtio disk;
/// `quiet` as Debian's installer sets it (Berth's is `loglevel=4`, the
/// same console level).
pub const CMDLINE: &str = "root=/dev/vda rw console=ttyS0,115200 quiet";

/// The size of the root disk (sparse): the same 4 GiB disk Berth's bench
/// VMs get.
pub const ROOT_DISK_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Start of the console line printed when containerd and etcd are both
/// ready: `berth-peer: containerd and etcd ready at 12.34 s (active active)`.
pub const CORE_READY_MARKER: &str = "berth-peer: containerd and etcd ready at ";
/// Start of the console line printed when systemd finished starting every
/// unit: `berth-peer: startup finished at 15.67 s (running)`.
pub const STARTUP_FINISHED_MARKER: &str = "berth-peer: startup finished at ";

/// Printed with the uptime once the peer has an IPv4 default route, as
/// Berth's `network-online` unit waits for (only on a VM with a NIC).
pub const NETWORK_ONLINE_MARKER: &str = "berth-peer: network online at ";

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{lock}: package {name:?} (for the peer) is not pinned: run `berth-image lock`")]
    Unpinned { lock: PathBuf, name: String },
    #[error("the peer got {name} {got}, not the pinned {want} (apt chose another version)")]
    WrongVersion { name: String, want: String, got: String },
    #[error("the peer's root has no {0} in /boot after installing the cloud kernel")]
    NoKernel(&'static str),
    #[error("{0}: {1}")]
    Cache(PathBuf, String),
    #[error("refusing to remove {0}: something is still mounted under it ({1})")]
    StillMounted(PathBuf, String),
}

/// The built peer, in the cache.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `<cache>/peer/<key>`
    pub dir: PathBuf,
    pub key: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The root disk (raw ext4); VMs boot copy-on-write overlays of it.
    pub root: PathBuf,
    pub info: PeerInfo,
}

/// What `peer.toml` records of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Bytes of the installed tree (regular files and symlinks, not
    /// following links), `/boot` left out (kernel and initramfs are counted
    /// on their own, as Berth's kernel is).
    pub tree_bytes: u64,
    pub tree_files: u64,
    /// `root.qcow2`: the root disk compressed (qemu-img's zlib clusters).
    pub compressed_bytes: u64,
    /// Bytes the root disk occupies on the host (sparse file).
    pub disk_allocated_bytes: u64,
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    /// `vmlinuz-<version>` -> `<version>`.
    pub kernel_version: String,
    /// Name and version of the packages that matter (pinned and the
    /// archive's), as dpkg reports them.
    pub packages: Vec<(String, String)>,
}

/// The cache key: hex SHA-256 over every input, each length-prefixed so no
/// two input sets collide by concatenation.
pub fn cache_key(pins: &[Pin], files: &[RootFile]) -> String {
    let mut parts: Vec<Vec<u8>> = vec![
        RECIPE_VERSION.into(),
        SUITE.into(),
        CMDLINE.into(),
        ROOT_DISK_BYTES.to_string().into(),
        ARCHIVE_PACKAGES.join(" ").into(),
        ENABLED_UNITS.join(" ").into(),
        DISABLED_UNITS.join(" ").into(),
    ];
    for p in pins {
        parts.push(format!("{} {} {} {}", p.name, p.version, p.arch, p.sha256).into());
    }
    for f in files {
        parts.push(f.path.into());
        parts.push(f.text.clone().into());
    }
    let mut h = Sha256::new();
    h.update(b"berth-peer\0");
    for part in &parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    crate::packages::hex(&h.finalize())
}

/// The pins of [`PINNED_PACKAGES`] from `packages.lock`.
fn pins(ctx: &Context) -> Result<Vec<Pin>, PeerError> {
    let dir = ctx.image_build_dir();
    let lock = crate::manifest::lock(&dir)?;
    PINNED_PACKAGES
        .iter()
        .map(|name| {
            lock.packages
                .iter()
                .find(|p| p.name == *name)
                .cloned()
                .ok_or_else(|| PeerError::Unpinned { lock: crate::manifest::lock_path(&dir), name: name.to_string() })
        })
        .collect()
}

impl Peer {
    fn in_dir(dir: PathBuf, key: String, info: PeerInfo) -> Peer {
        Peer {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            root: dir.join("root.ext4"),
            dir,
            key,
            info,
        }
    }

    /// The direct-kernel boot of this peer for [`berth_qemu::VmConfig::direct_kernel`].
    pub fn direct_kernel(&self) -> berth_qemu::DirectKernel {
        berth_qemu::DirectKernel {
            kernel: self.kernel.clone(),
            initrd: Some(self.initrd.clone()),
            append: CMDLINE.to_string(),
        }
    }
}

/// Builds the peer, or returns the cached one for the same inputs. The
/// first build downloads about 200 MiB of Debian packages and takes
/// minutes; it needs root (debootstrap, chroot, mkfs with owners).
pub fn build(ctx: &Context) -> Result<Peer, PeerError> {
    let pins = pins(ctx)?;
    let config_path = ctx.image_build_dir().join("rootfs/etc/containerd/config.toml");
    let containerd_config = std::fs::read_to_string(&config_path).map_err(io_at(&config_path))?;
    let files = root_files(&containerd_config);
    let key = cache_key(&pins, &files);
    let root = ctx.cache.join("peer");
    let entry = root.join(&key);
    let info_path = entry.join("peer.toml");
    if let Ok(text) = std::fs::read_to_string(&info_path) {
        let info: PeerInfo = toml::from_str(&text).map_err(|e| PeerError::Cache(info_path.clone(), e.to_string()))?;
        eprintln!("peer: cache hit {key}");
        return Ok(Peer::in_dir(entry, key, info));
    }
    std::fs::create_dir_all(&root).map_err(io_doing("create", &root))?;
    remove_leftovers(&root)?;
    let tmp = root.join(format!(".tmp-{key}-{}", std::process::id()));
    let result = fill_entry(ctx, &tmp, &pins, &files).and_then(|info| {
        std::fs::rename(&tmp, &entry).map_err(io_doing("move the finished peer into the cache at", &entry))?;
        Ok(info)
    });
    if tmp.exists() {
        remove_tree(&tmp)?;
    }
    let info = result?;
    eprintln!("peer: built {} (key {key})", entry.display());
    Ok(Peer::in_dir(entry, key, info))
}

/// Temporary entries of builds that were killed.
fn remove_leftovers(root: &Path) -> Result<(), PeerError> {
    for e in std::fs::read_dir(root).map_err(io_at(root))?.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// Mount points at or under `dir` in a `/proc/self/mounts` text, deepest first.
pub fn mounts_under(mounts: &str, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // The kernel writes spaces in mount points as \040.
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

/// Unmounts whatever a build (or a killed debootstrap) left mounted under
/// `dir`, then removes it without crossing into another file system.
fn remove_tree(dir: &Path) -> Result<(), PeerError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for m in mounts_under(&mounts, dir) {
        let _ = cmd::run(Command::new("umount").arg("-l").arg(&m));
    }
    let left = mounts_under(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(), dir);
    if let Some(m) = left.first() {
        return Err(PeerError::StillMounted(dir.to_path_buf(), m.display().to_string()));
    }
    cmd::run(Command::new("rm").args(["-rf", "--one-file-system"]).arg(dir))?;
    Ok(())
}

/// `/proc` mounted in the root while apt and the kernel's hooks run there,
/// unmounted when dropped.
struct ProcMount(PathBuf);

impl ProcMount {
    fn mount(root: &Path) -> Result<ProcMount, PeerError> {
        let at = root.join("proc");
        cmd::run(Command::new("mount").args(["-t", "proc", "proc"]).arg(&at))?;
        Ok(ProcMount(at))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = cmd::run(Command::new("umount").arg("-l").arg(&self.0));
    }
}

fn chroot(root: &Path) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).env("DEBIAN_FRONTEND", "noninteractive").env("LC_ALL", "C.UTF-8");
    c
}

fn write(root: &Path, path: &str, text: &str) -> Result<(), PeerError> {
    let p = root.join(path.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(io_doing("create", d))?;
    }
    std::fs::write(&p, text).map_err(io_doing("write", &p))?;
    Ok(())
}

fn fill_entry(ctx: &Context, tmp: &Path, pins: &[Pin], files: &[RootFile]) -> Result<PeerInfo, PeerError> {
    if tmp.exists() {
        remove_tree(tmp)?;
    }
    let rootfs = tmp.join("rootfs");
    std::fs::create_dir_all(tmp).map_err(io_doing("create", tmp))?;
    let mirrors = host_mirrors();
    let debs = crate::packages::fetch(&ctx.cache, pins)?;

    let log = tmp.join("debootstrap.log");
    crate::progress::spin(
        format!("peer: debootstrap --variant=minbase {SUITE} from {} (minutes)", mirrors.debian),
        || {
            cmd::run_logged(
                Command::new("debootstrap")
                    .arg("--variant=minbase")
                    .arg(format!("--include={}", ARCHIVE_PACKAGES.join(",")))
                    .arg(SUITE)
                    .arg(&rootfs)
                    .arg(&mirrors.debian),
                &log,
            )
        },
    )?;

    write(&rootfs, "/etc/apt/sources.list", &sources_list(&mirrors))?;
    // No daemon starts inside the build's chroot.
    write(&rootfs, "/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")?;
    set_mode(&rootfs.join("usr/sbin/policy-rc.d"), 0o755)?;
    let in_root = rootfs.join("tmp/berth-peer-debs");
    std::fs::create_dir_all(&in_root).map_err(io_doing("create", &in_root))?;
    let mut deb_args = Vec::new();
    for deb in &debs {
        let name = deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        std::fs::copy(deb, in_root.join(&name)).map_err(io_doing("copy", deb))?;
        deb_args.push(format!("/tmp/berth-peer-debs/{name}"));
    }
    {
        let _proc = ProcMount::mount(&rootfs)?;
        crate::progress::spin("peer: apt-get install the pinned containerd, runc and etcd-server", || {
            cmd::run(chroot(&rootfs).args(["apt-get", "update", "-q"]))?;
            cmd::run(
                chroot(&rootfs).args(["apt-get", "install", "-y", "-q", "--no-install-recommends"]).args(&deb_args),
            )
        })?;
        for pin in pins {
            let got = cmd::stdout(chroot(&rootfs).args(["dpkg-query", "-W", "-f=${Version}", &pin.name]))?;
            if got.trim() != pin.version {
                return Err(PeerError::WrongVersion {
                    name: pin.name.clone(),
                    want: pin.version.clone(),
                    got: got.trim().to_string(),
                });
            }
        }
        for f in files {
            write(&rootfs, f.path, &f.text)?;
        }
        cmd::run(chroot(&rootfs).arg("systemctl").arg("enable").args(ENABLED_UNITS))?;
        cmd::run(chroot(&rootfs).arg("systemctl").arg("disable").args(DISABLED_UNITS))?;
        cmd::run(chroot(&rootfs).args(["apt-get", "clean"]))?;
    }
    let packages = installed_versions(&rootfs)?;
    // What only the build needed.
    for p in ["usr/sbin/policy-rc.d", "tmp/berth-peer-debs", "var/lib/apt/lists", "var/lib/dbus/machine-id"] {
        let p = rootfs.join(p);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io_doing("remove", &p))?;
        } else if p.exists() {
            std::fs::remove_file(&p).map_err(io_doing("remove", &p))?;
        }
    }
    std::fs::create_dir_all(rootfs.join("var/lib/apt/lists/partial")).map_err(io_at(&rootfs))?;

    let (vmlinuz, initrd, kernel_version) = boot_files(&rootfs)?;
    std::fs::copy(&vmlinuz, tmp.join("vmlinuz")).map_err(io_doing("copy", &vmlinuz))?;
    std::fs::copy(&initrd, tmp.join("initrd.img")).map_err(io_doing("copy", &initrd))?;
    let (tree_bytes, tree_files) = tree_size(&rootfs, &rootfs.join("boot"))?;

    let disk = tmp.join("root.ext4");
    crate::progress::spin("peer: mkfs.ext4 -d (the root disk)", || {
        cmd::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "peer-root"])
                // Initialised now, as an image builder leaves it: the
                // first boot does not zero inode tables in the background.
                .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg("-d")
                .arg(&rootfs)
                .arg(&disk)
                .arg(format!("{}k", ROOT_DISK_BYTES / 1024)),
        )
    })?;
    remove_tree(&rootfs)?;
    let compressed = tmp.join("root.qcow2");
    crate::progress::spin("peer: qemu-img convert -c (the compressed size)", || {
        cmd::run(Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).arg(&disk).arg(&compressed))
    })?;
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io_at(p));
    use std::os::unix::fs::MetadataExt;
    let info = PeerInfo {
        tree_bytes,
        tree_files,
        compressed_bytes: len(&compressed)?,
        disk_allocated_bytes: std::fs::metadata(&disk).map(|m| m.blocks() * 512).map_err(io_at(&disk))?,
        kernel_bytes: len(&tmp.join("vmlinuz"))?,
        initrd_bytes: len(&tmp.join("initrd.img"))?,
        kernel_version,
        packages,
    };
    let info_text = toml::to_string(&info).map_err(|e| PeerError::Cache(tmp.join("peer.toml"), e.to_string()))?;
    let info_path = tmp.join("peer.toml");
    std::fs::write(&info_path, info_text).map_err(io_doing("write", &info_path))?;
    Ok(info)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), PeerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_doing("chmod", p))?;
    Ok(())
}

/// The versions of the packages the comparison is about.
fn installed_versions(rootfs: &Path) -> Result<Vec<(String, String)>, PeerError> {
    let names: Vec<&str> =
        PINNED_PACKAGES.iter().chain(["systemd", "linux-image-cloud-amd64", "base-files"].iter()).copied().collect();
    let out = cmd::stdout(chroot(rootfs).args(["dpkg-query", "-W", "-f=${Package} ${Version}\\n"]).args(&names))?;
    Ok(out.lines().filter_map(|l| l.split_once(' ')).map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

/// `/boot/vmlinuz-<v>` and `/boot/initrd.img-<v>` of the one installed kernel.
fn boot_files(rootfs: &Path) -> Result<(PathBuf, PathBuf, String), PeerError> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .map_err(io_at(&boot))?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    versions.sort();
    let v = versions.pop().ok_or(PeerError::NoKernel("vmlinuz-*"))?;
    let initrd = boot.join(format!("initrd.img-{v}"));
    if !initrd.is_file() {
        return Err(PeerError::NoKernel("initrd.img-*"));
    }
    Ok((boot.join(format!("vmlinuz-{v}")), initrd, v))
}

/// Bytes and number of the regular files and symlinks under `root`,
/// `skip` left out.
fn tree_size(root: &Path, skip: &Path) -> Result<(u64, u64), PeerError> {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let e = e.map_err(io_at(&dir))?;
            let p = e.path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).map_err(io_at(&p))?;
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() || m.file_type().is_symlink() {
                bytes += m.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(name: &str, version: &str) -> Pin {
        Pin { name: name.into(), version: version.into(), arch: "amd64".into(), sha256: "ab".into() }
    }

    #[test]
    fn the_cache_key_follows_every_input() {
        let pins = vec![pin("containerd", "1.6.20"), pin("etcd-server", "3.4.23")];
        let files = root_files("version = 2\n");
        let base = cache_key(&pins, &files);
        assert_eq!(base, cache_key(&pins, &files), "stable");
        assert_ne!(base, cache_key(&[pin("containerd", "1.6.21"), pins[1].clone()], &files));
        assert_ne!(base, cache_key(&pins, &root_files("version = 3\n")));
        let mut other = files.clone();
        other.pop();
        assert_ne!(base, cache_key(&pins, &other));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn etcd_is_configured_like_berths_and_the_markers_are_printed() {
        let files = root_files("x");
        let text = |p: &str| files.iter().find(|f| f.path == p).map(|f| f.text.clone()).unwrap();
        let etcd = text("/etc/default/etcd");
        for want in [
            "ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379\n",
            "ETCD_INITIAL_CLUSTER=berth=http://127.0.0.1:2380\n",
            "ETCD_DATA_DIR=/var/lib/etcd/default\n",
        ] {
            assert!(etcd.contains(want), "{want} missing from {etcd}");
        }
        // Berth's own timeouts for a cluster of one, read from its unit.
        let unit: toml::Value = toml::from_str(include_str!("../rootfs/usr/lib/berth/units/etcd.toml")).unwrap();
        let exec: Vec<&str> = unit["service"]["exec"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        for (flag, var) in
            [("--heartbeat-interval", "ETCD_HEARTBEAT_INTERVAL"), ("--election-timeout", "ETCD_ELECTION_TIMEOUT")]
        {
            let at = exec.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("{flag} in Berth's etcd unit"));
            let want = format!("{var}={}\n", exec[at + 1]);
            assert!(etcd.contains(&want), "{want} missing from {etcd}");
        }
        let ready = text("/etc/systemd/system/berth-peer-ready.service");
        assert!(ready.contains("After=containerd.service etcd.service\n"), "{ready}");
        assert!(ready.contains(CORE_READY_MARKER.trim_end()), "{ready}");
        assert!(ready.contains("/proc/uptime"), "{ready}");
        // systemd expands $NAME in ExecStart=: the shell's variables are written $$NAME.
        let online = text("/etc/systemd/system/berth-peer-online.service");
        assert!(
            online.contains(NETWORK_ONLINE_MARKER.trim_end()) && online.contains("systemd-networkd-wait-online --ipv4"),
            "{online}"
        );
        assert!(online.contains("ConditionPathExistsGlob=/sys/class/net/e*\n"), "only with a NIC: {online}");
        for unit in [&ready, &online, &text("/etc/systemd/system/berth-peer-finished.service")] {
            let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
            assert!(!exec.replace("$$", "").contains('$'), "a lone $ in {exec}");
        }
        let done = text("/etc/systemd/system/berth-peer-finished.service");
        assert!(
            done.contains(STARTUP_FINISHED_MARKER.trim_end()) && done.contains("is-system-running --wait"),
            "{done}"
        );
        assert!(done.contains("Type=simple"), "a oneshot would wait for itself: {done}");
        assert_eq!(text("/etc/containerd/config.toml"), "x");
        for unit in ENABLED_UNITS.iter().filter(|u| u.starts_with("berth-peer")) {
            assert!(files.iter().any(|f| f.path.ends_with(unit)), "{unit} is enabled but not written");
        }
    }

    #[test]
    fn mounts_under_a_directory_come_deepest_first() {
        let mounts = "proc /proc proc rw 0 0\nproc /c/tmp/x/rootfs/proc proc rw 0 0\n\
                      sysfs /c/tmp/x/rootfs/sys/fs/cgroup cgroup2 rw 0 0\nsysfs /c/tmp/x/rootfs/sys sysfs rw 0 0\n\
                      tmpfs /c/tmp/xy tmpfs rw 0 0\n";
        assert_eq!(
            mounts_under(mounts, Path::new("/c/tmp/x")),
            [
                PathBuf::from("/c/tmp/x/rootfs/sys/fs/cgroup"),
                PathBuf::from("/c/tmp/x/rootfs/proc"),
                PathBuf::from("/c/tmp/x/rootfs/sys"),
            ]
        );
        assert!(mounts_under(mounts, Path::new("/elsewhere")).is_empty());
    }
}
