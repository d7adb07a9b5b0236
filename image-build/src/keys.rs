//! The keys of update bundles: the one the build signs with, and the
//! accepted public keys the image carries (`berth_layout::paths::UPDATE_KEYS_DIR`).
//!
//! Without `--signing-key`, builds sign with a development key made once
//! and kept outside the clone, in the build cache (`$BERTH_CACHE/keys/`,
//! directory 0700, key 0600), so every later build, in this clone or
//! another, signs with the same key and images accept each other's bundles.
//! It is a key for development machines only: a release is signed with a
//! key kept elsewhere.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_updater::bundle::{
    generate_dev_keypair, key_id, load_signing_key, load_verifying_key, public_key_pem, write_signing_key, KeyError,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{io_at, IoError};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: neither an ed25519 public key (SPKI PEM) nor a private key (PKCS#8 PEM): {public}; {private}")]
    NotAKey { path: PathBuf, public: String, private: String },
}

/// The development key's file inside the build cache.
pub fn dev_key_path(cache: &Path) -> PathBuf {
    cache.join("keys").join("dev-signing-key.pem")
}

/// The key to sign with: `given` (PKCS#8 PEM), else the cached development
/// key, made on first use. Returns the key and the file it came from.
pub fn signing_key(given: Option<&Path>, cache: &Path) -> Result<(SigningKey, PathBuf), KeysError> {
    if let Some(path) = given {
        return Ok((load_signing_key(path)?, path.to_path_buf()));
    }
    let path = dev_key_path(cache);
    if !path.exists() {
        let dir = path.parent().unwrap_or(cache);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_at(dir))?;
        match write_signing_key(&path, &generate_dev_keypair()) {
            Ok(()) => eprintln!("build: made a development signing key, {} (kept for later builds)", path.display()),
            // Another build made it meanwhile: use that one.
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mode = fs::metadata(&path).map_err(io_at(&path))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_at(&path))?;
    }
    Ok((load_signing_key(&path)?, path))
}

/// A key to accept from a file holding either its public key (SPKI PEM) or
/// its private key (PKCS#8 PEM, of which only the public half is kept).
pub fn accepted_key(path: &Path) -> Result<VerifyingKey, KeysError> {
    match load_verifying_key(path) {
        Ok(k) => Ok(k),
        Err(public) => match load_signing_key(path) {
            Ok(k) => Ok(k.verifying_key()),
            Err(private) => Err(KeysError::NotAKey {
                path: path.to_path_buf(),
                public: public.to_string(),
                private: private.to_string(),
            }),
        },
    }
}

/// The file name of an accepted key in the keys directory: the first 16
/// hex digits of its key id.
pub fn key_file_name(key: &VerifyingKey) -> String {
    let id = key_id(key).to_string();
    format!("{}.pem", id.get(..16).unwrap_or(&id))
}

/// Writes one `*.pem` per distinct key of `keys` into `dir` (created; mode
/// 0644 files, as the rest of the read-only root). Returns the image paths
/// written, relative to `dir`, in order.
pub fn write_keys_dir(dir: &Path, keys: &[VerifyingKey]) -> Result<Vec<String>, KeysError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let mut names = Vec::new();
    for key in keys {
        let name = key_file_name(key);
        if names.contains(&name) {
            continue;
        }
        let path = dir.join(&name);
        fs::write(&path, public_key_pem(key)?).map_err(io_at(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(io_at(&path))?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_updater::bundle::{signing_key_pem, KeyRing};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_dev_key_is_made_once_private_and_reused() {
        let cache = temp("dev");
        let (k1, p1) = signing_key(None, &cache).unwrap();
        assert_eq!(p1, dev_key_path(&cache));
        assert_eq!(fs::metadata(&p1).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(p1.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let (k2, _) = signing_key(None, &cache).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes(), "a second build signs with the same key");
        // A given key wins over the cached one.
        let given = cache.join("release.pem");
        let other = SigningKey::from_bytes(&[7; 32]);
        fs::write(&given, signing_key_pem(&other).unwrap()).unwrap();
        let (k3, p3) = signing_key(Some(&given), &cache).unwrap();
        assert_eq!((k3.to_bytes(), p3), (other.to_bytes(), given));
        fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn accepted_keys_come_from_public_or_private_pem_and_load_as_a_ring() {
        let d = temp("accept");
        let (a, b) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let private = d.join("a.pem");
        fs::write(&private, signing_key_pem(&a).unwrap()).unwrap();
        let public = d.join("b.pub.pem");
        fs::write(&public, public_key_pem(&b.verifying_key()).unwrap()).unwrap();
        let junk = d.join("junk.pem");
        fs::write(&junk, "not a key").unwrap();
        assert_eq!(accepted_key(&private).unwrap(), a.verifying_key());
        assert_eq!(accepted_key(&public).unwrap(), b.verifying_key());
        let err = accepted_key(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.pem") && err.contains("neither"), "{err}");

        // The signing key's public key twice (also given with --accept-key) is written once.
        let keys_dir = d.join("update-keys");
        let names = write_keys_dir(&keys_dir, &[a.verifying_key(), b.verifying_key(), a.verifying_key()]).unwrap();
        assert_eq!(names.len(), 2);
        let ring = KeyRing::load_dir(&keys_dir).unwrap();
        assert!(ring.get(&key_id(&a.verifying_key())).is_some() && ring.get(&key_id(&b.verifying_key())).is_some());
        assert_eq!(ring.len(), 2);
        fs::remove_dir_all(&d).unwrap();
    }
}
