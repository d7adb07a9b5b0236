//! Update bundles: one signed file that carries a version of Berth (the
//! slot's kernel and its EROFS root with the dm-verity hash tree appended).
//!
//! # Byte layout (format version 1)
//!
//! All integers are little-endian. Offsets are from the start of the file;
//! `N` is the manifest length.
//!
//! | offset    | size | field                                                        |
//! |-----------|------|--------------------------------------------------------------|
//! | 0         | 8    | magic, the ASCII bytes `BERTHBDL` ([`MAGIC`])                |
//! | 8         | 4    | format version, `u32` ([`FORMAT_VERSION`])                   |
//! | 12        | 4    | manifest length `N`, `u32`, at most [`MAX_MANIFEST_LEN`]     |
//! | 16        | N    | manifest: UTF-8 JSON, see [`Manifest`]                       |
//! | 16+N      | 32   | key id: sha256 of the signer's 32-byte ed25519 public key    |
//! | 48+N      | 64   | ed25519 signature (see below)                                |
//! | 112+N     | ...  | payloads, back to back in manifest order, nothing after them |
//!
//! The signature is ed25519 over [`SIGNATURE_CONTEXT`] followed by the `N`
//! manifest bytes exactly as stored (so no canonical JSON is needed). The
//! context string keeps a signature made for something else with the same
//! key (say, the published update metadata) from passing as a manifest's.
//! The manifest names the format version again and [`open`] checks that both
//! agree, so the unsigned header cannot change how the signed part is read.
//!
//! A payload's `offset` in the manifest counts from the first payload byte
//! (`112+N`); payloads are contiguous (the first at 0, each next one at the
//! previous offset plus size) so a bundle can be read once from a
//! non-seekable stream (an HTTP body) without buffering.
//!
//! # Reading a bundle
//!
//! [`open`] reads the header, the manifest bytes (bounded before anything is
//! allocated), the key id and the signature, verifies the signature with the
//! accepted key of that id ([`KeyRing`]) and only then parses and checks the
//! manifest. The payloads come out of [`Bundle::payload`] as
//! [`PayloadReader`]s that hash while they are read and fail at their end if
//! the sha256 differs from the manifest's. Nothing a bundle says is trusted
//! before its signature checked, and no byte of a payload counts as good
//! before its reader reached its end without an error.
//!
//! # Writing a bundle
//!
//! [`sign`] writes the container for a manifest whose sizes and hashes were
//! measured with [`measure`], streaming the payloads from readers.

mod container;
mod error;
mod keys;
mod manifest;

#[cfg(test)]
mod tests;

pub(crate) use container::from_io;
pub use container::{measure, open, sign, Bundle, PayloadReader};
pub use error::{BundleError, KeyError};
pub use keys::{
    generate_dev_keypair, key_id, load_signing_key, load_verifying_key, public_key_pem, signing_key_pem,
    write_signing_key, KeyId, KeyRing,
};
pub use manifest::{uki_payload, Manifest, Payload, VerifiedManifest, VerityGeometry, ROOT_PAYLOAD, UKI_PAYLOADS};

/// The first 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"BERTHBDL";

/// The container and manifest format this code writes and reads. Format 2
/// carries a signed UKI per slot (`uki-a`, `uki-b`) where format 1 carried
/// one bare kernel, so an updater of format 1 refuses a format 2 bundle
/// instead of writing an entry for a kernel that is not there.
pub const FORMAT_VERSION: u32 = 2;

/// The largest manifest [`open`] accepts (1 MiB; a real one is about 1 KiB).
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;

/// The most payloads a manifest may name.
pub const MAX_PAYLOADS: usize = 16;

/// What the signature covers before the manifest bytes (domain separation).
pub const SIGNATURE_CONTEXT: &[u8] = b"berth-bundle-manifest-v1\0";

/// Bytes before the manifest: magic, format version, manifest length.
pub const HEADER_LEN: u64 = 16;

/// Bytes between the manifest and the first payload: key id and signature.
pub const SIGNATURE_BLOCK_LEN: u64 = 32 + 64;
