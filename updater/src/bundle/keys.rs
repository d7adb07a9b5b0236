//! Signing keys and accepted public keys.
//!
//! Key files are PEM, as OpenSSL writes them, so a key can be made and
//! inspected without Berth's tools:
//!
//! - a signing key is PKCS#8 (`-----BEGIN PRIVATE KEY-----`), e.g.
//!   `openssl genpkey -algorithm ed25519 -out berth-signing.pem`;
//! - a public key is SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`),
//!   e.g. `openssl pkey -in berth-signing.pem -pubout -out berth-2026.pem`.
//!
//! The image carries its accepted public keys as the `*.pem` files of one
//! directory ([`KeyRing::load_dir`]); rotating a key is shipping a version
//! whose directory holds the old and the new key, then signing with the new.
//! A key is named by its [`KeyId`], the sha256 of its 32 raw bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::KeyError;

/// The largest key file read (a PEM ed25519 key is under 200 bytes).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The id of a public key: sha256 of its 32 raw bytes. Shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The [`KeyId`] of a public key.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    KeyId(Sha256::digest(key.as_bytes()).into())
}

/// The public keys a bundle may be signed with, by [`KeyId`].
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl KeyRing {
    /// An empty ring (accepts nothing).
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Adds a key; returns false if it was already there.
    pub fn add(&mut self, key: VerifyingKey) -> bool {
        self.keys.insert(key_id(&key), key).is_none()
    }

    /// The key with this id, if accepted.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads every `*.pem` file of `dir` as a public key (other files are
    /// ignored). Any unreadable or invalid `*.pem`, a duplicate key, or no key
    /// at all is an error: the directory is part of the read-only image, so a
    /// broken key is a build mistake to report, not to skip.
    pub fn load_dir(dir: &Path) -> Result<KeyRing, KeyError> {
        let io = |source| KeyError::Io { path: dir.to_path_buf(), source };
        let mut paths: Vec<_> =
            fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "pem"));
        paths.sort();
        let mut ring = KeyRing::new();
        for path in paths {
            if !ring.add(load_verifying_key(&path)?) {
                return Err(KeyError::Duplicate { path });
            }
        }
        if ring.is_empty() {
            return Err(KeyError::NoKeys { path: dir.to_path_buf() });
        }
        Ok(ring)
    }
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: path.to_path_buf(), len: text.len() as u64 });
    }
    Ok(text)
}

/// Reads a PKCS#8 PEM ed25519 signing key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_small(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        kind: "private key (PKCS#8)",
        reason: e.to_string(),
    })
}

/// Reads a SubjectPublicKeyInfo PEM ed25519 public key.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_small(path)?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        kind: "public key (SPKI)",
        reason: e.to_string(),
    })
}

/// A new key pair from the OS's random source, for development builds.
/// The public half is `key.verifying_key()`.
pub fn generate_dev_keypair() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The signing key as PKCS#8 PEM text.
pub fn signing_key_pem(key: &SigningKey) -> Result<String, KeyError> {
    Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Encode(e.to_string()))?.to_string())
}

/// The public key as SubjectPublicKeyInfo PEM text (a file for the accepted keys' directory).
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Encode(e.to_string()))
}

/// Writes the signing key as PKCS#8 PEM to a new file `path`, readable by
/// its owner only (mode 0600); an existing file is not overwritten.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let pem = signing_key_pem(key)?;
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}
