//! image.toml (what goes into the image) and packages.lock (the exact
//! Debian packages it comes from).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_at, IoError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {0}")]
    Read(#[from] IoError),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: package {name:?} is listed in image.toml but not pinned: run `berth-image lock`")]
    Unpinned { path: PathBuf, name: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub packages: Vec<String>,
    pub files: Vec<String>,
    pub busybox: String,
    pub busybox_skip: Vec<String>,
    pub power_commands: Vec<String>,
    pub systemd_boot: String,
    pub berth_binaries: Vec<String>,
    /// Those of `berth_binaries` linked statically (`crt-static`): they map
    /// no shared library, only the libc code they call.
    #[serde(default)]
    pub berth_static: Vec<String>,
    /// Stage 0: the binary that is `/init` of the UKI's initramfs, built
    /// statically and not installed in the root.
    pub initrd_init: String,
    /// The oldest booted version this tree's update bundle may update.
    pub min_update_from: String,
    /// How the root is packed.
    pub erofs: Erofs,
}

/// `[erofs]`: the root file system's compression and the tool that writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erofs {
    /// erofs-utils' source tarball, as a path under the Debian mirror's
    /// root (`pool/main/e/erofs-utils/...orig.tar.gz`; `erofs_utils.rs`
    /// says why a source).
    pub source: String,
    /// The tarball's SHA-256, hex.
    pub sha256: String,
    /// mkfs.erofs `-z`: algorithms separated by `:`, the first the default,
    /// the others chosen per file by index (1, 2, ...) in the hints file.
    pub compressors: String,
    /// mkfs.erofs `-C`: the largest physical cluster, bytes (a power of two,
    /// 4096 and up).
    pub pcluster: u32,
    /// mkfs.erofs `-E`: on-disk features, each one the kernel reads
    /// (`ztailpacking`: a file's compressed tail inline with its inode,
    /// Linux 5.17 and later).
    #[serde(default)]
    pub extended: Vec<String>,
    /// mkfs.erofs `--compress-hints`: the file, relative to image-build/
    /// (none: every file gets the first algorithm).
    #[serde(default)]
    pub hints: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    #[serde(rename = "package")]
    pub packages: Vec<Pin>,
}

/// toml's messages carry line and column; prefix the file so the error names all three.
fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    toml::from_str(&text).map_err(|e| ManifestError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

pub fn image(dir: &Path) -> Result<Image, ManifestError> {
    parse(&dir.join("image.toml"))
}

pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("packages.lock")
}

pub fn lock(dir: &Path) -> Result<Lock, ManifestError> {
    parse(&lock_path(dir))
}

impl Lock {
    /// The pins for exactly the packages the image lists, in its order.
    pub fn pins_for(&self, image: &Image, lock_file: &Path) -> Result<Vec<Pin>, ManifestError> {
        image
            .packages
            .iter()
            .map(|name| {
                self.packages
                    .iter()
                    .find(|p| &p.name == name)
                    .cloned()
                    .ok_or_else(|| ManifestError::Unpinned { path: lock_file.to_path_buf(), name: name.clone() })
            })
            .collect()
    }

    pub fn to_toml(&self) -> String {
        let header = "# Exact Debian packages of the image. Written by `berth-image lock`; the build\n\
                      # refuses a package whose checksum differs.\n\n";
        format!("{header}{}", toml::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repo_manifest_and_lock_agree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let image = image(dir).unwrap();
        let lock = lock(dir).unwrap();
        let pins = lock.pins_for(&image, &lock_path(dir)).unwrap();
        assert_eq!(pins.len(), image.packages.len());
        for p in pins {
            assert_eq!(p.sha256.len(), 64, "{}", p.name);
        }
    }

    #[test]
    fn a_bad_key_is_reported_with_file_and_line() {
        let dir = std::env::temp_dir().join(format!("berth-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("image.toml"), "packages = []\nfiles = []\nbusybox = \"b\"\nbusybox_skip = []\npower_commands = []\nsystemd_boot = \"s\"\nberth_binaries = []\ninitrd_init = \"i\"\nextra = 1\nmin_update_from = \"0.1.0\"\n").unwrap();
        let err = image(&dir).unwrap_err().to_string();
        assert!(err.contains("image.toml") && err.contains("line 9") && err.contains("extra"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
