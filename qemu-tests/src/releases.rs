//! Berth releases for update tests, soaks and benchmarks: versions N, N+1,
//! ... and broken variants, each built from the same tree by
//! `berth-image build --os-version V --signing-key KEY [--variant NAME]`
//! into a directory of its own, all signed with one key that every one of
//! them accepts, and signed for Secure Boot with the snakeoil key that
//! OVMF's snakeoil variable store enrolls (so any of them boots, and
//! updates, with Secure Boot enforced: [`crate::VmConfig::secure_boot`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_updater::bundle::{
    generate_dev_keypair, load_signing_key, open, sign, write_signing_key, KeyRing, Manifest, HEADER_LEN,
    SIGNATURE_BLOCK_LEN,
};

use crate::disk::run_tool;
use crate::error::{io, Error, Result};

/// One built release.
#[derive(Clone, Debug)]
pub struct Release {
    /// The OS version (os-release VERSION_ID, the boot entry, the bundle).
    pub version: String,
    /// The build's output directory.
    pub dir: PathBuf,
    /// `berth-<version>.bundle`: what `berthctl update install` takes.
    pub bundle: PathBuf,
    /// `berth.qcow2`: to boot this release from scratch.
    pub qcow2: PathBuf,
}

/// Builds releases into `root`, signed with a key made there once.
#[derive(Clone, Debug)]
pub struct ReleaseBuilder {
    /// The `berth-image` command line up to (not including) its
    /// subcommand, e.g. `cargo run -q -p berth-image --`.
    berth_image: Vec<OsString>,
    root: PathBuf,
    key: PathBuf,
    /// The snakeoil Secure Boot key, decrypted ([`crate::snakeoil_key`]).
    secure_boot_key: PathBuf,
}

impl ReleaseBuilder {
    /// Builds with `berth_image` (the program and its leading arguments)
    /// into `root`; makes the signing key `root/signing-key.pem` and the
    /// decrypted snakeoil key `root/snakeoil.key` unless they are there.
    pub fn new(berth_image: Vec<OsString>, root: &Path) -> Result<ReleaseBuilder> {
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let key = root.join("signing-key.pem");
        if !key.exists() {
            write_signing_key(&key, &generate_dev_keypair())
                .map_err(|e| Error::Other(format!("writing {}: {e}", key.display())))?;
        }
        let secure_boot_key = crate::snakeoil_key(root)?;
        Ok(ReleaseBuilder { berth_image, root: root.to_path_buf(), key, secure_boot_key })
    }

    /// Builds with `cargo run -q -p berth-image --` from the workspace
    /// (for tests: `$CARGO` is the cargo that runs them).
    pub fn with_cargo(root: &Path) -> Result<ReleaseBuilder> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let cmd = vec![cargo, "run".into(), "-q".into(), "-p".into(), "berth-image".into(), "--".into()];
        ReleaseBuilder::new(cmd, root)
    }

    /// The key every release is signed with (PKCS#8 PEM).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Builds `version` (with a test `variant`: `gate-fails`, `panic`)
    /// into `root/<version>`.
    pub fn build(&self, version: &str, variant: Option<&str>) -> Result<Release> {
        let dir = self.root.join(version);
        let (program, leading) =
            self.berth_image.split_first().ok_or_else(|| Error::Other("no berth-image command given".into()))?;
        let mut cmd = Command::new(program);
        cmd.current_dir(crate::workspace_root()).args(leading).arg("--out").arg(&dir).arg("build");
        cmd.arg("--os-version").arg(version).arg("--signing-key").arg(&self.key);
        cmd.arg("--secure-boot-key").arg(&self.secure_boot_key).arg("--secure-boot-cert").arg(crate::SNAKEOIL_CERT);
        if let Some(v) = variant {
            cmd.arg("--variant").arg(v);
        }
        run_tool(&mut cmd)?;
        let release = Release {
            version: version.to_string(),
            bundle: dir.join(format!("berth-{version}.bundle")),
            qcow2: dir.join("berth.qcow2"),
            dir,
        };
        for f in [&release.bundle, &release.qcow2] {
            if !f.is_file() {
                return Err(Error::Other(format!("berth-image build wrote no {}", f.display())));
            }
        }
        Ok(release)
    }

    /// `berth-image publish DIR --bundle ...`: the bundles of `releases`
    /// copied into `dir` (served by any static HTTP server) with signed
    /// metadata listing them (and what `dir` listed before).
    pub fn publish(&self, dir: &Path, releases: &[&Release]) -> Result<()> {
        let (program, leading) =
            self.berth_image.split_first().ok_or_else(|| Error::Other("no berth-image command given".into()))?;
        let mut cmd = Command::new(program);
        cmd.current_dir(crate::workspace_root()).args(leading).arg("publish").arg(dir);
        for r in releases {
            cmd.arg("--bundle").arg(&r.bundle);
        }
        cmd.arg("--signing-key").arg(&self.key);
        run_tool(&mut cmd).map(drop)
    }
}

/// The manifest of `bundle`, its signature checked against the key in
/// `key_file` (PKCS#8 PEM; the public half is used): payload names,
/// sizes, the verity geometry.
pub fn read_manifest(bundle: &Path, key_file: &Path) -> Result<Manifest> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| Error::Other(format!("{}: {e}", path.display()));
    let key = load_signing_key(key_file).map_err(|e| fail(key_file, &e))?;
    let mut keys = KeyRing::new();
    keys.add(key.verifying_key());
    let file = std::fs::File::open(bundle).map_err(io(format!("opening {}", bundle.display())))?;
    let opened = open(file, &keys).map_err(|e| fail(bundle, &e))?;
    Ok(opened.manifest().manifest().clone())
}

/// Writes `dst`: the bundle `src` with its manifest changed by `edit` and
/// signed again with the key in `key_file`, payloads as they are. For
/// bundles an honest build never makes (another architecture, an older
/// version) that must still carry a valid signature to show the refusal
/// comes from the policy, not the signature.
pub fn resign(src: &Path, dst: &Path, key_file: &Path, edit: impl FnOnce(&mut Manifest)) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |path: &Path, e: &dyn std::fmt::Display| Error::Other(format!("{}: {e}", path.display()));
    let key = load_signing_key(key_file).map_err(|e| fail(key_file, &e))?;
    let mut manifest = read_manifest(src, key_file)?;
    let mut header = [0u8; 16];
    let mut f = std::fs::File::open(src).map_err(io(format!("opening {}", src.display())))?;
    f.read_exact(&mut header).map_err(io("reading the bundle header"))?;
    let manifest_len = u64::from(u32::from_le_bytes([header[12], header[13], header[14], header[15]]));
    let first_payload = HEADER_LEN + manifest_len + SIGNATURE_BLOCK_LEN;
    let mut readers = Vec::new();
    for p in &manifest.payloads {
        let mut r = std::fs::File::open(src).map_err(io(format!("opening {}", src.display())))?;
        r.seek(SeekFrom::Start(first_payload + p.offset)).map_err(io("seeking to a payload"))?;
        readers.push(r.take(p.size));
    }
    edit(&mut manifest);
    let mut out = std::fs::File::create(dst).map_err(io(format!("creating {}", dst.display())))?;
    let mut dyn_readers: Vec<&mut dyn Read> = readers.iter_mut().map(|r| r as &mut dyn Read).collect();
    sign(&manifest, &mut dyn_readers, &key, &mut out).map_err(|e| fail(dst, &e))
}
