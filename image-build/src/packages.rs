//! Pinned Debian packages: downloaded with apt into the cache, checked
//! against packages.lock, unpacked into one merged-/usr tree that the
//! root is picked from.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};
use crate::manifest::{Lock, Pin};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{name} {version}: checksum {actual} does not match the pinned {expected} (image-build/packages.lock)")]
    Checksum { name: String, version: String, expected: String, actual: String },
    #[error("{name}={version} could not be downloaded (it may have left the Debian archive after a point release: run `berth-image lock` to pin the current version): {source}")]
    Download { name: String, version: String, source: CmdError },
    #[error("apt-get download left no .deb for {0}")]
    NoDeb(String),
    #[error("unpacking {deb}: {message}")]
    Unpack { deb: PathBuf, message: String },
}

pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let mut f = std::fs::File::open(path).map_err(io_at(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_dir(cache: &Path) -> PathBuf {
    cache.join("packages")
}

/// The cached file of a pin; the version's `:` (epoch) is kept out of file names.
fn cached_deb(cache: &Path, pin: &Pin) -> PathBuf {
    cache_dir(cache).join(format!("{}_{}_{}.deb", pin.name, pin.version.replace(':', "%3a"), pin.arch))
}

/// `apt-get download NAME[=VERSION]` into a fresh directory; returns the .deb.
fn apt_download(cache: &Path, spec: &str) -> Result<PathBuf, PackageError> {
    let tmp = cache_dir(cache).join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
    cmd::run(Command::new("apt-get").arg("download").arg("-q").arg(spec).current_dir(&tmp))?;
    let deb = std::fs::read_dir(&tmp)
        .map_err(io_at(&tmp))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| PackageError::NoDeb(spec.to_string()))?;
    Ok(deb)
}

fn deb_field(deb: &Path, field: &str) -> Result<String, PackageError> {
    Ok(cmd::stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?.trim().to_string())
}

/// Makes sure every pinned package is in the cache with the pinned checksum.
pub fn fetch(cache: &Path, pins: &[Pin]) -> Result<Vec<PathBuf>, PackageError> {
    let dir = cache_dir(cache);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let mut debs = Vec::new();
    // One step per package: downloaded when missing, checked against the lock.
    let mut task =
        crate::progress::bar("packages: fetching and checking", crate::progress::Unit::Items, pins.len() as u64);
    for pin in pins {
        let path = cached_deb(cache, pin);
        if !path.exists() {
            task.message(format!("downloading {}={}", pin.name, pin.version));
            let deb = apt_download(cache, &format!("{}={}", pin.name, pin.version)).map_err(|e| match e {
                PackageError::Cmd(source) => {
                    PackageError::Download { name: pin.name.clone(), version: pin.version.clone(), source }
                }
                other => other,
            })?;
            std::fs::rename(&deb, &path).map_err(io_at(&path))?;
            let _ = deb.parent().map(std::fs::remove_dir_all);
        }
        let actual = sha256_file(&path)?;
        if actual != pin.sha256 {
            return Err(PackageError::Checksum {
                name: pin.name.clone(),
                version: pin.version.clone(),
                expected: pin.sha256.clone(),
                actual,
            });
        }
        debs.push(path);
        task.inc(1);
    }
    task.finish();
    Ok(debs)
}

/// Pins the archive's current candidate of each named package.
pub fn lock(cache: &Path, names: &[String]) -> Result<Lock, PackageError> {
    let dir = cache_dir(cache);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let mut packages = Vec::new();
    let mut task = crate::progress::bar("lock: downloading", crate::progress::Unit::Items, names.len() as u64);
    for name in names {
        task.message(name.clone());
        let deb = apt_download(cache, name)?;
        task.inc(1);
        let pin = Pin {
            name: deb_field(&deb, "Package")?,
            version: deb_field(&deb, "Version")?,
            arch: deb_field(&deb, "Architecture")?,
            sha256: sha256_file(&deb)?,
        };
        let path = cached_deb(cache, &pin);
        std::fs::rename(&deb, &path).map_err(io_at(&path))?;
        let _ = deb.parent().map(std::fs::remove_dir_all);
        eprintln!("packages: pinned {} {}", pin.name, pin.version);
        packages.push(pin);
    }
    task.finish();
    Ok(Lock { packages })
}

/// Unpacks the packages into `root` as a merged-/usr tree: /bin, /sbin,
/// /lib and /lib64 are links into /usr, so every file has one path.
pub fn unpack(debs: &[PathBuf], root: &Path) -> Result<(), PackageError> {
    let task = crate::progress::spinner(format!("packages: unpacking {} packages", debs.len()));
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(io_at(root))?;
    }
    for d in ["bin", "sbin", "lib", "lib64"] {
        let usr = root.join("usr").join(d);
        std::fs::create_dir_all(&usr).map_err(io_at(&usr))?;
        let link = root.join(d);
        std::os::unix::fs::symlink(format!("usr/{d}"), &link).map_err(io_at(&link))?;
    }
    for deb in debs {
        let unpack_err = |message: String| PackageError::Unpack { deb: deb.clone(), message };
        let mut data = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| unpack_err(e.to_string()))?;
        let stdout = data.stdout.take().ok_or_else(|| unpack_err("no pipe from dpkg-deb".into()))?;
        let tar = Command::new("tar")
            .args(["-x", "--keep-directory-symlink", "--no-same-owner", "-C"])
            .arg(root)
            .stdin(stdout)
            .output()
            .map_err(|e| unpack_err(e.to_string()))?;
        let status = data.wait().map_err(|e| unpack_err(e.to_string()))?;
        if !status.success() || !tar.status.success() {
            return Err(unpack_err(String::from_utf8_lossy(&tar.stderr).into_owned()));
        }
    }
    task.finish();
    Ok(())
}
