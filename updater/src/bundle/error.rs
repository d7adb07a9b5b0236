//! What can go wrong with a bundle or a key file, and where.

use std::io;
use std::path::PathBuf;

/// A bundle was refused, or could not be written. Each variant names the
/// part of the bundle (header, manifest, signature, a payload) that failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing failed below the format (disk, network, pipe).
    #[error("I/O error on the bundle's {part}: {source}")]
    Io { part: String, source: io::Error },
    /// The bundle ended inside `part`.
    #[error("the bundle is truncated: it ends inside its {part}")]
    Truncated { part: String },
    /// The first 8 bytes are not [`super::MAGIC`].
    #[error("not a Berth bundle: the magic is {found:02x?}")]
    BadMagic { found: [u8; 8] },
    /// The header or the manifest names a format version this code does not read.
    #[error("bundle format version {found} is not supported (this updater reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// The header's manifest length is 0 or above [`super::MAX_MANIFEST_LEN`].
    #[error("the manifest length {len} is out of bounds (1..={max})")]
    ManifestLength { len: u32, max: u32 },
    /// No accepted key has the key id the bundle was signed with.
    #[error("the bundle is signed with key {key_id}, which is not an accepted key")]
    UnknownKey { key_id: String },
    /// The signature does not match the manifest bytes for that key.
    #[error("the manifest's signature does not verify with key {key_id}")]
    BadSignature { key_id: String },
    /// The manifest is signed but is not valid JSON of the expected shape.
    #[error("the manifest does not parse: {0}")]
    ManifestParse(#[source] serde_json::Error),
    /// The manifest parses but a field is wrong (`field` is a path like `payloads[1].sha256`).
    #[error("the manifest's {field} is invalid: {reason}")]
    InvalidManifest { field: String, reason: String },
    /// The manifest has no payload of that name.
    #[error("the bundle has no payload named {name:?}")]
    NoSuchPayload { name: String },
    /// The payload lies before the stream's position (payloads are read in order, once).
    #[error("payload {name:?} was already read past")]
    PayloadPassed { name: String },
    /// A payload's bytes do not hash to the manifest's sha256.
    #[error("payload {name:?} does not match its sha256: the manifest says {expected}, its bytes hash to {actual}")]
    PayloadDigest { name: String, expected: String, actual: String },
    /// When signing: a payload reader gave another number of bytes than the manifest says.
    #[error("payload {name:?} is {actual} bytes, the manifest says {expected}")]
    PayloadSize { name: String, expected: u64, actual: u64 },
    /// Bytes follow the last payload.
    #[error("the bundle has bytes after its last payload")]
    TrailingData,
    /// When signing: the manifest cannot be serialized or is too large.
    #[error("the manifest cannot be written: {0}")]
    ManifestWrite(String),
}

impl BundleError {
    pub(crate) fn io(part: &str, source: io::Error) -> BundleError {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated { part: part.to_string() }
        } else {
            BundleError::Io { part: part.to_string(), source }
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> BundleError {
        BundleError::InvalidManifest { field: field.into(), reason: reason.into() }
    }
}

/// A key file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file is not a PEM ed25519 key of the expected kind.
    #[error("{path}: not an ed25519 {kind} in PEM: {reason}")]
    Parse { path: PathBuf, kind: &'static str, reason: String },
    /// The file is larger than any key file (refused before reading it all).
    #[error("{path}: {len} bytes is too large for a key file")]
    TooLarge { path: PathBuf, len: u64 },
    /// The directory of accepted keys holds no key.
    #[error("{path}: no accepted public key (*.pem) in the directory")]
    NoKeys { path: PathBuf },
    /// Two accepted key files hold the same key.
    #[error("{path}: the same key as another accepted key file")]
    Duplicate { path: PathBuf },
    /// The key cannot be encoded as PEM.
    #[error("cannot encode the key: {0}")]
    Encode(String),
}
