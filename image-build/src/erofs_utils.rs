//! The `mkfs.erofs` the root is packed with: erofs-utils built once from
//! Debian's source and kept in the cache.
//!
//! Debian 12's erofs-utils (1.5) writes lz4 and lz4hc only. The root fits
//! its slot (issue 11: at most 60 MiB) only with MicroLZMA clusters and a
//! per-file choice of algorithm (`--compress-hints` naming a second
//! algorithm), both from erofs-utils 1.6 on. Debian 13 has 1.8.6, but its
//! binary package needs glibc 2.38; its source builds against Debian 12's
//! liblzma and liblz4 in about a minute. So the source tarball is pinned by
//! its path in the archive's pool and its SHA-256 (image.toml,
//! `[erofs].source`), fetched from the host's Debian mirror, checked, built
//! with lz4 and LZMA only (no FUSE, SELinux, zstd or deflate: the kernel
//! takes neither of the last two), and its `mkfs.erofs` kept in
//! `<cache>/tools/erofs-utils-<key>/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};
use crate::manifest::Erofs;

/// `./configure`'s flags: the algorithms the kernel reads (lz4, LZMA) and
/// nothing that needs another library.
const CONFIGURE: &[&str] = &[
    "--enable-lzma",
    "--with-lz4",
    "--without-selinux",
    "--disable-fuse",
    "--without-libdeflate",
    "--without-libzstd",
    "--without-xxhash",
    "--without-qpl",
    "--without-uuid",
];

#[derive(Debug, thiserror::Error)]
pub enum ErofsUtilsError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("{url}: SHA-256 {got}, image.toml pins {want}")]
    Checksum { url: String, got: String, want: String },
}

/// The cache key of a source and the flags it is built with: 16 hex digits.
pub fn cache_key(erofs: &Erofs) -> String {
    let mut h = Sha256::new();
    for part in [erofs.source.as_str(), erofs.sha256.as_str()].into_iter().chain(CONFIGURE.iter().copied()) {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    crate::packages::hex(&h.finalize()[..8])
}

/// The path of a `mkfs.erofs` built from `erofs.source`: from the cache, or
/// built there first (download, check, autogen, configure, make; about a
/// minute on two cores).
///
/// Errors: the download (with the URL), a checksum other than the pinned
/// one, or the build's failing command with the tail of its log.
pub fn mkfs_erofs(cache: &Path, erofs: &Erofs) -> Result<PathBuf, ErofsUtilsError> {
    let dir = cache.join("tools").join(format!("erofs-utils-{}", cache_key(erofs)));
    let mkfs = dir.join("mkfs.erofs");
    if mkfs.is_file() {
        return Ok(mkfs);
    }
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    // A fresh work directory per build: two builds at once never share one.
    let work = dir.join(format!("work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_at(&work))?;
    let tarball = work.join("source.tar.gz");
    let url = format!("{}/{}", crate::mirrors::host_mirrors().debian, erofs.source);
    crate::progress::spin(format!("erofs-utils: fetching {url}"), || download(&url, &tarball))?;
    let got = crate::packages::sha256_file(&tarball)
        .map_err(|e| ErofsUtilsError::Download { url: url.clone(), message: e.to_string() })?;
    if got != erofs.sha256 {
        return Err(ErofsUtilsError::Checksum { url, got, want: erofs.sha256.clone() });
    }
    cmd::run(Command::new("tar").arg("xzf").arg(&tarball).arg("--strip-components=1").arg("-C").arg(&work))?;
    let log = dir.join("build.log");
    crate::progress::spin("erofs-utils: autogen, configure, make (about a minute)", || {
        cmd::run_logged(Command::new("sh").arg("./autogen.sh").current_dir(&work), &log)?;
        cmd::run_logged(Command::new("./configure").args(CONFIGURE).current_dir(&work), &log)?;
        cmd::run_logged(Command::new("make").arg("-j2").current_dir(&work), &log)
    })?;
    // Into place by rename: a reader sees no half-written binary.
    let built = work.join("mkfs").join("mkfs.erofs");
    let tmp = dir.join(format!("mkfs.erofs.{}", std::process::id()));
    std::fs::copy(&built, &tmp).map_err(io_at(&built))?;
    std::fs::rename(&tmp, &mkfs).map_err(io_at(&mkfs))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(mkfs)
}

/// GET `url` into `to` (ureq; plain HTTP from the mirror, the checksum
/// is what vouches for the bytes), given up after 5 minutes.
fn download(url: &str, to: &Path) -> Result<(), ErofsUtilsError> {
    let err = |message: String| ErofsUtilsError::Download { url: url.to_string(), message };
    let config = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(300))).build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let mut body = Vec::new();
    response.into_body().into_reader().take(64 << 20).read_to_end(&mut body).map_err(|e| err(e.to_string()))?;
    std::fs::write(to, &body).map_err(io_at(to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_the_source_and_its_checksum() {
        let erofs = |source: &str, sha256: &str| Erofs {
            source: source.into(),
            sha256: sha256.into(),
            compressors: "lzma".into(),
            pcluster: 4096,
            extended: vec![],
            hints: None,
        };
        let a = erofs("pool/e/x_1.orig.tar.gz", "00");
        let b = erofs("pool/e/x_2.orig.tar.gz", "00");
        let c = erofs("pool/e/x_1.orig.tar.gz", "01");
        assert_eq!(cache_key(&a).len(), 16);
        assert_eq!(cache_key(&a), cache_key(&a.clone()));
        assert_ne!(cache_key(&a), cache_key(&b));
        assert_ne!(cache_key(&a), cache_key(&c));
        // The compression settings are the image's, not the tool's.
        assert_eq!(cache_key(&a), cache_key(&Erofs { compressors: "lz4".into(), ..a.clone() }));
    }
}
