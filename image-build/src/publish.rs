//! `berth-image publish DIR`: the update source, a directory any static
//! HTTP server can serve: the bundles and the signed metadata that lists
//! them (format: `berth_updater::publish`).
//!
//! Publishing again into the same directory keeps the versions already
//! listed there (their bundles stay; the list is signed again with a new
//! expiry date) and replaces a version published again.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_updater::bundle::{self as format, BundleError, KeyRing};
use berth_updater::publish::{self, Metadata, Release, METADATA_FILE, SIGNATURE_FILE};
use sha2::{Digest, Sha256};

use crate::build::LAST_BUNDLE;
use crate::context::Context;
use crate::error::{io_at, io_doing};
use crate::packages::hex;
use crate::{bundle, keys};

type Error = Box<dyn std::error::Error>;

/// What `berth-image publish` was asked to do.
pub struct PublishOptions {
    pub dir: PathBuf,
    /// The bundles to add; empty: the one the last build wrote.
    pub bundles: Vec<PathBuf>,
    /// How long the metadata stays valid.
    pub expires_in: Duration,
    /// Sign with this PKCS#8 PEM key instead of the cached development key.
    pub signing_key: Option<PathBuf>,
}

/// Hashes and counts every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads the whole bundle at `path` once: its signature with `keys`, its
/// manifest and every payload's sha256. Returns its release record (for
/// the file name [`bundle::file_name`] of its version).
pub fn verify_bundle(path: &Path, keys: &KeyRing) -> Result<Release, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::Io { part: "file".into(), source: e })?;
    let mut r = Hashing { inner: BufReader::new(file), hasher: Sha256::new(), len: 0 };
    let mut b = format::open(&mut r, keys)?;
    let m = b.manifest().manifest().clone();
    for p in &m.payloads {
        b.payload(&p.name)?.finish()?;
    }
    b.finish()?;
    Ok(Release {
        bundle: bundle::file_name(&m.os_version),
        version: m.os_version,
        size: r.len,
        sha256: hex(&r.hasher.finalize()),
        architecture: m.architecture,
        min_from_version: m.min_from_version,
    })
}

/// Copies `from` to `to` through a temporary name in `to`'s directory.
fn copy_into_place(from: &Path, to: &Path) -> Result<(), Error> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp).map_err(io_doing("copy a bundle to", &tmp))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, to).map_err(io_at(to))?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    Ok(())
}

/// The releases already listed in `dir`'s metadata whose bundle is still
/// there at its listed size (others are dropped, with a warning).
fn existing_releases(dir: &Path) -> Result<Vec<Release>, Error> {
    let path = dir.join(METADATA_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(&path)(e).into()),
    };
    let old: Metadata = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut kept = Vec::new();
    for r in old.releases {
        let len = std::fs::metadata(dir.join(&r.bundle)).map(|m| m.len()).ok();
        if len == Some(r.size) {
            kept.push(r);
        } else {
            eprintln!("publish: dropping {} from the list: {} is missing or changed", r.version, r.bundle);
        }
    }
    Ok(kept)
}

/// `berth-image publish`: returns the metadata written.
pub fn publish(ctx: &Context, opts: &PublishOptions) -> Result<Metadata, Error> {
    let (key, key_file) = keys::signing_key(opts.signing_key.as_deref(), &ctx.cache)?;
    let mut ring = KeyRing::new();
    ring.add(key.verifying_key());
    let bundles = if opts.bundles.is_empty() {
        let last = ctx.out.join(LAST_BUNDLE);
        let name = std::fs::read_to_string(&last).map_err(|e| {
            format!("no --bundle given and no build wrote one ({}: {e}): run `berth-image build` first", last.display())
        })?;
        vec![ctx.out.join(name.trim())]
    } else {
        opts.bundles.clone()
    };
    std::fs::create_dir_all(&opts.dir).map_err(io_at(&opts.dir))?;
    let mut releases = existing_releases(&opts.dir)?;
    for path in &bundles {
        let release = verify_bundle(path, &ring).map_err(|e| {
            format!(
                "refusing {}: it does not verify with the signing key's public key ({}): {e}",
                path.display(),
                key_file.display()
            )
        })?;
        let dest = opts.dir.join(&release.bundle);
        let same = std::fs::canonicalize(path).ok() == std::fs::canonicalize(&dest).ok();
        if !same {
            copy_into_place(path, &dest)?;
        }
        releases.retain(|r| r.version != release.version);
        eprintln!("publish: {} ({} bytes) as {}", release.version, release.size, dest.display());
        releases.push(release);
    }
    let metadata = Metadata::new(releases, SystemTime::now(), opts.expires_in);
    let (json, sig) = publish::sign(&metadata, &key)?;
    write_atomic(&opts.dir.join(METADATA_FILE), &json)?;
    write_atomic(&opts.dir.join(SIGNATURE_FILE), &sig)?;
    Ok(metadata)
}

/// What `publish` prints: the versions listed and the expiry date.
pub fn summary(dir: &Path, m: &Metadata) -> String {
    let mut s = format!(
        "published {} (signed metadata expires {})\n",
        dir.display(),
        humantime::format_rfc3339_seconds(m.expires)
    );
    for r in m.sorted() {
        s.push_str(&format!(
            "  {:<12} {:<8} from >= {:<10} {} ({} bytes)\n",
            r.version, r.architecture, r.min_from_version, r.bundle, r.size
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_layout::cmdline::Verity;
    use ed25519_dalek::SigningKey;

    use berth_updater::bundle::signing_key_pem;

    struct Fixture {
        dir: PathBuf,
        ctx: Context,
        key_file: PathBuf,
    }

    fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("berth-publish-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let ctx = Context { repo: dir.clone(), out: dir.join("out"), cache: dir.join("cache") };
        let key_file = dir.join("signing.pem");
        std::fs::write(&key_file, signing_key_pem(&SigningKey::from_bytes(&[5; 32])).unwrap()).unwrap();
        Fixture { dir, ctx, key_file }
    }

    /// A small bundle of `version` signed with `key`, at `out`.
    fn make_bundle(f: &Fixture, version: &str, key: &SigningKey, out: &Path) {
        let root: Vec<u8> = (0..3 * 4096).map(|i| (i % 241) as u8 ^ version.len() as u8).collect();
        std::fs::write(f.dir.join("root.img"), root).unwrap();
        std::fs::write(f.dir.join("berth-a.efi"), version.as_bytes()).unwrap();
        std::fs::write(f.dir.join("berth-b.efi"), version.as_bytes()).unwrap();
        let verity = Verity { data_blocks: 1, hash_start_block: 2, root_hash: "ab".repeat(32), salt: "cd".repeat(8) };
        let input = bundle::BundleInput {
            os_version: version,
            min_from_version: "0.1.0",
            root_image: &f.dir.join("root.img"),
            verity: &verity,
            ukis: [&f.dir.join("berth-a.efi"), &f.dir.join("berth-b.efi")],
        };
        bundle::write(&input, key, out).unwrap();
    }

    fn read_metadata(dir: &Path, key: &SigningKey) -> Metadata {
        let mut ring = KeyRing::new();
        ring.add(key.verifying_key());
        let json = std::fs::read(dir.join(METADATA_FILE)).unwrap();
        let sig = std::fs::read(dir.join(SIGNATURE_FILE)).unwrap();
        publish::verify(&json, &sig, &ring, SystemTime::now()).unwrap()
    }

    #[test]
    fn publishing_lists_verified_bundles_and_keeps_earlier_ones() {
        let f = fixture("keep");
        let key = SigningKey::from_bytes(&[5; 32]);
        let site = f.dir.join("site");
        // The last build's bundle is the default.
        make_bundle(&f, "0.2.0", &key, &f.ctx.out.join("berth-0.2.0.bundle"));
        std::fs::write(f.ctx.out.join(LAST_BUNDLE), "berth-0.2.0.bundle\n").unwrap();
        let opts = |bundles: Vec<PathBuf>| PublishOptions {
            dir: site.clone(),
            bundles,
            expires_in: Duration::from_secs(30 * 86_400),
            signing_key: Some(f.key_file.clone()),
        };
        publish(&f.ctx, &opts(vec![])).unwrap();
        let m = read_metadata(&site, &key);
        assert_eq!(m.releases.len(), 1);
        let r = &m.releases[0];
        let published = std::fs::read(site.join(&r.bundle)).unwrap();
        assert_eq!(r.size, published.len() as u64);
        assert_eq!(r.sha256, hex(&Sha256::digest(&published)));
        assert_eq!((r.version.as_str(), r.architecture.as_str()), ("0.2.0", "x86_64"));
        let days = m.expires.duration_since(m.generated).unwrap().as_secs() / 86_400;
        assert_eq!(days, 30);

        // A second publish of another version keeps 0.2.0 and re-signs.
        let other = f.dir.join("elsewhere.bundle");
        make_bundle(&f, "0.3.0", &key, &other);
        let m = publish(&f.ctx, &opts(vec![other])).unwrap();
        assert_eq!(m, read_metadata(&site, &key));
        let versions: Vec<_> = m.sorted().iter().map(|r| r.version.clone()).collect();
        assert_eq!(versions, ["0.3.0", "0.2.0"]);
        assert!(site.join("berth-0.3.0.bundle").exists());
        assert_eq!(m.candidate("0.2.0", "x86_64", &[] as &[&str]).unwrap().version, "0.3.0");
        std::fs::remove_dir_all(&f.dir).unwrap();
    }

    #[test]
    fn a_bundle_by_another_key_or_corrupted_is_refused() {
        let f = fixture("refuse");
        let site = f.dir.join("site");
        let stranger = f.dir.join("stranger.bundle");
        make_bundle(&f, "0.2.0", &SigningKey::from_bytes(&[9; 32]), &stranger);
        let opts = |b: &Path| PublishOptions {
            dir: site.clone(),
            bundles: vec![b.to_path_buf()],
            expires_in: Duration::from_secs(86_400),
            signing_key: Some(f.key_file.clone()),
        };
        let err = publish(&f.ctx, &opts(&stranger)).unwrap_err().to_string();
        assert!(
            err.contains("refusing") && err.contains("stranger.bundle") && err.contains("not an accepted key"),
            "{err}"
        );
        assert!(!site.join(METADATA_FILE).exists() && !site.join("berth-0.2.0.bundle").exists());

        let flipped = f.dir.join("flipped.bundle");
        make_bundle(&f, "0.2.0", &SigningKey::from_bytes(&[5; 32]), &flipped);
        let mut bytes = std::fs::read(&flipped).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&flipped, bytes).unwrap();
        let err = publish(&f.ctx, &opts(&flipped)).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
        std::fs::remove_dir_all(&f.dir).unwrap();
    }
}
