//! The update bundle a build writes, `berth-<version>.bundle`: the root
//! slot image (EROFS with its dm-verity tree, exactly the bytes of the
//! root-a partition) and a signed UKI per slot, signed as a whole (format:
//! `berth_updater::bundle`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use berth_layout::cmdline::Verity;
use berth_updater::bundle::{
    measure, sign, BundleError, Manifest, Payload, VerityGeometry, FORMAT_VERSION, ROOT_PAYLOAD, UKI_PAYLOADS,
};
use ed25519_dalek::SigningKey;

use crate::error::{io_at, io_doing, IoError};

/// The architecture bundles of this build are for (Rust's spelling, as the manifest wants it).
pub const ARCHITECTURE: &str = "x86_64";

#[derive(Debug, thiserror::Error)]
pub enum BundleWriteError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("writing {path}: {source}")]
    Bundle { path: PathBuf, source: BundleError },
}

/// The bundle's file name for `version`.
pub fn file_name(version: &str) -> String {
    format!("berth-{version}.bundle")
}

/// What goes into a bundle.
pub struct BundleInput<'a> {
    pub os_version: &'a str,
    pub min_from_version: &'a str,
    /// The root slot image: EROFS, padded, with its verity tree appended.
    pub root_image: &'a Path,
    /// Its verity geometry (as on the kernel command line).
    pub verity: &'a Verity,
    /// The UKIs of slot A and slot B (payloads `uki-a`, `uki-b`), signed
    /// for Secure Boot; the updater installs the one of the slot it writes
    /// as `/berth/<slot>/berth.efi`.
    pub ukis: [&'a Path; 2],
}

/// The manifest of `input`, its payloads measured from the files.
pub fn manifest(input: &BundleInput) -> Result<Manifest, BundleWriteError> {
    let m = |p: &Path| {
        let f = File::open(p).map_err(io_at(p))?;
        measure(BufReader::new(f)).map_err(io_doing("read", p))
    };
    let (root_size, root_sha) = m(input.root_image)?;
    let mut payloads = vec![Payload {
        name: ROOT_PAYLOAD.to_string(),
        offset: 0,
        size: root_size,
        sha256: root_sha,
        verity: Some(VerityGeometry::from(input.verity)),
    }];
    let mut offset = root_size;
    for (name, path) in UKI_PAYLOADS.into_iter().zip(input.ukis) {
        let (size, sha256) = m(path)?;
        payloads.push(Payload { name: name.to_string(), offset, size, sha256, verity: None });
        offset += size;
    }
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        os_version: input.os_version.to_string(),
        architecture: ARCHITECTURE.to_string(),
        min_from_version: input.min_from_version.to_string(),
        payloads,
    })
}

/// Writes the signed bundle of `input` to `out` (through a temporary file
/// renamed into place, so `out` is never a partial bundle).
pub fn write(input: &BundleInput, key: &SigningKey, out: &Path) -> Result<(), BundleWriteError> {
    let manifest = manifest(input)?;
    let tmp = out.with_extension("bundle.partial");
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
        let open = |p: &Path| File::open(p).map(BufReader::new).map_err(io_at(p));
        let [a, b] = input.ukis;
        let (mut root, mut uki_a, mut uki_b) = (open(input.root_image)?, open(a)?, open(b)?);
        let mut w = std::io::BufWriter::new(&mut f);
        sign(&manifest, &mut [&mut root, &mut uki_a, &mut uki_b], key, &mut w)
            .map_err(|source| BundleWriteError::Bundle { path: out.to_path_buf(), source })?;
        drop(w);
        f.sync_all().map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io_at(out))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use berth_updater::bundle::{open, KeyRing};

    use crate::keys;

    /// A bundle as the build writes it opens with the keys directory the
    /// root tree carries, and gives back the root image and both slots'
    /// UKIs byte for byte, with the verity geometry of the command line.
    #[test]
    fn a_written_bundle_verifies_with_the_image_keys_and_holds_root_and_ukis() {
        let d = std::env::temp_dir().join(format!("berth-bundle-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let root: Vec<u8> = (0..5 * 4096 + 17).map(|i| (i % 253) as u8).collect();
        let uki_a: Vec<u8> = (0..10_000).map(|i| (i % 7) as u8).collect();
        let uki_b: Vec<u8> = (0..9_000).map(|i| (i % 5) as u8).collect();
        std::fs::write(d.join("root.img"), &root).unwrap();
        std::fs::write(d.join("berth-a.efi"), &uki_a).unwrap();
        std::fs::write(d.join("berth-b.efi"), &uki_b).unwrap();
        let verity = Verity { data_blocks: 3, hash_start_block: 4, root_hash: "ab".repeat(32), salt: "cd".repeat(32) };
        let key = SigningKey::from_bytes(&[3; 32]);
        let input = BundleInput {
            os_version: "0.2.0",
            min_from_version: "0.1.0",
            root_image: &d.join("root.img"),
            verity: &verity,
            ukis: [&d.join("berth-a.efi"), &d.join("berth-b.efi")],
        };
        let out = d.join(file_name("0.2.0"));
        write(&input, &key, &out).unwrap();
        assert!(!out.with_extension("bundle.partial").exists());

        let keys_dir = d.join("root/usr/lib/berth/update-keys");
        keys::write_keys_dir(&keys_dir, &[key.verifying_key()]).unwrap();
        let ring = KeyRing::load_dir(&keys_dir).unwrap();
        let mut b = open(File::open(&out).unwrap(), &ring).unwrap();
        let m = b.manifest().clone();
        assert_eq!(
            (m.os_version.as_str(), m.min_from_version.as_str(), m.architecture.as_str()),
            ("0.2.0", "0.1.0", "x86_64")
        );
        assert_eq!(Verity::from(m.payload(ROOT_PAYLOAD).unwrap().verity.as_ref().unwrap()), verity);
        let (mut r, mut a, mut bb) = (Vec::new(), Vec::new(), Vec::new());
        b.payload(ROOT_PAYLOAD).unwrap().read_to_end(&mut r).unwrap();
        b.payload(UKI_PAYLOADS[0]).unwrap().read_to_end(&mut a).unwrap();
        b.payload(UKI_PAYLOADS[1]).unwrap().read_to_end(&mut bb).unwrap();
        b.finish().unwrap();
        assert!(r == root && a == uki_a && bb == uki_b, "payloads differ from the inputs");

        // Another key's image refuses it.
        let other = d.join("other-keys");
        keys::write_keys_dir(&other, &[SigningKey::from_bytes(&[4; 32]).verifying_key()]).unwrap();
        assert!(matches!(
            open(File::open(&out).unwrap(), &KeyRing::load_dir(&other).unwrap()),
            Err(BundleError::UnknownKey { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
