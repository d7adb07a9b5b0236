//! The manifest: what a bundle holds, as signed JSON.
//!
//! JSON rather than TOML: the manifest is written and read by programs
//! only, signed as stored bytes, and holds `u64` sizes and offsets that
//! TOML's `i64` integers cannot all carry; `serde_json` is already a
//! dependency of the workspace. Unknown fields are refused, so a field a
//! newer format adds is never silently ignored by an older updater (a new
//! field comes with a new format version).
//!
//! An example (format version 1):
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "os_version": "0.2.0",
//!   "architecture": "x86_64",
//!   "min_from_version": "0.1.0",
//!   "payloads": [
//!     { "name": "root", "offset": 0, "size": 53252096, "sha256": "9f…",
//!       "verity": { "data_blocks": 13000, "hash_start_block": 13001,
//!                   "root_hash": "4c…", "salt": "b1…" } },
//!     { "name": "kernel", "offset": 53252096, "size": 12001280, "sha256": "0d…" }
//!   ]
//! }
//! ```

use std::collections::HashSet;
use std::ops::Deref;

use berth_layout::cmdline::{Verity, VERITY_BLOCK};
use berth_layout::disk::Slot;
use serde::{Deserialize, Serialize};

use super::{BundleError, KeyId, FORMAT_VERSION, MAX_PAYLOADS};

/// The payload name of the EROFS root with its verity tree (for the root partition).
pub const ROOT_PAYLOAD: &str = "root";
/// The payload names of the signed Unified Kernel Images, one per slot
/// (`uki-a`, `uki-b`): each is the kernel with the command line that boots
/// its slot from the partition named [`berth_layout::disk::root_partition_uuid`]
/// of the root's verity root hash, signed for Secure Boot when built. The
/// updater installs the one of the slot it writes.
pub const UKI_PAYLOADS: [&str; 2] = ["uki-a", "uki-b"];

/// The UKI payload of `slot` (one of [`UKI_PAYLOADS`]).
pub fn uki_payload(slot: Slot) -> &'static str {
    match slot {
        Slot::A => UKI_PAYLOADS[0],
        Slot::B => UKI_PAYLOADS[1],
    }
}

/// What a bundle holds. Its stored bytes are what the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal the container header's format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The OS version the bundle installs (the workspace version, as in `berth-<version>.conf`).
    pub os_version: String,
    /// The machine it runs on, as Rust's `std::env::consts::ARCH` spells it (`x86_64`, `aarch64`).
    pub architecture: String,
    /// The oldest booted version this bundle may update.
    pub min_from_version: String,
    /// The payloads in the order they are stored.
    pub payloads: Vec<Payload>,
}

/// One payload of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// [`ROOT_PAYLOAD`], one of [`UKI_PAYLOADS`], or another name a later format adds.
    pub name: String,
    /// Byte offset from the first payload byte (payloads are contiguous).
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// sha256 of the payload's bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// The dm-verity geometry, for a payload that is a verity-protected image (the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityGeometry>,
}

/// The dm-verity geometry of a root image, as `image-build/src/verity.rs`
/// computes it and `berth_layout::cmdline::Verity` puts it on the kernel
/// command line (4 KiB data and hash blocks, the hash `berth_layout::cmdline::VERITY_HASH`,
/// whose digests, the root hash among them, are 32 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityGeometry {
    /// Number of 4 KiB data blocks (the EROFS image, padded).
    pub data_blocks: u64,
    /// Hash offset, in 4 KiB blocks: the first hash block, one past the data and the verity superblock.
    pub hash_start_block: u64,
    /// The root hash, lowercase hex.
    pub root_hash: String,
    /// The salt, lowercase hex.
    pub salt: String,
}

impl From<&VerityGeometry> for Verity {
    fn from(v: &VerityGeometry) -> Verity {
        Verity {
            data_blocks: v.data_blocks,
            hash_start_block: v.hash_start_block,
            root_hash: v.root_hash.clone(),
            salt: v.salt.clone(),
        }
    }
}

impl From<&Verity> for VerityGeometry {
    fn from(v: &Verity) -> VerityGeometry {
        VerityGeometry {
            data_blocks: v.data_blocks,
            hash_start_block: v.hash_start_block,
            root_hash: v.root_hash.clone(),
            salt: v.salt.clone(),
        }
    }
}

impl Manifest {
    /// The payload called `name`, if any.
    pub fn payload(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.name == name)
    }

    /// Sum of the payload sizes (what follows the signature).
    pub fn payloads_len(&self) -> u64 {
        self.payloads.iter().map(|p| p.size).sum()
    }

    /// Checks what parsing cannot: the format version, non-empty versions and
    /// architecture, at most [`MAX_PAYLOADS`] payloads with unique names,
    /// contiguous offsets, hex digests, a kernel and a root payload, and a
    /// root whose verity geometry fits inside it.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format_version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat { found: self.format_version, supported: FORMAT_VERSION });
        }
        for (field, value) in [
            ("os_version", &self.os_version),
            ("architecture", &self.architecture),
            ("min_from_version", &self.min_from_version),
        ] {
            if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_graphic()) {
                return Err(BundleError::invalid(field, "must be 1 to 64 printable ASCII characters"));
            }
        }
        if self.payloads.len() > MAX_PAYLOADS {
            return Err(BundleError::invalid("payloads", format!("more than {MAX_PAYLOADS} payloads")));
        }
        let mut names = HashSet::new();
        let mut next = 0u64;
        for (i, p) in self.payloads.iter().enumerate() {
            let at = |f: &str| format!("payloads[{i}].{f}");
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(BundleError::invalid(at("name"), "must be non-empty [A-Za-z0-9_-]"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(BundleError::invalid(at("name"), format!("{:?} appears twice", p.name)));
            }
            if p.offset != next {
                return Err(BundleError::invalid(
                    at("offset"),
                    format!("is {}, payloads are contiguous so it must be {next}", p.offset),
                ));
            }
            next = next.checked_add(p.size).ok_or_else(|| BundleError::invalid(at("size"), "overflows"))?;
            check_hex(&at("sha256"), &p.sha256, Some(64))?;
            if let Some(v) = &p.verity {
                check_hex(&at("verity.root_hash"), &v.root_hash, Some(64))?;
                check_hex(&at("verity.salt"), &v.salt, None)?;
                if v.data_blocks == 0 {
                    return Err(BundleError::invalid(at("verity.data_blocks"), "is 0"));
                }
                if v.hash_start_block <= v.data_blocks {
                    return Err(BundleError::invalid(at("verity.hash_start_block"), "does not lie after the data"));
                }
                let hash_start = v.hash_start_block.checked_mul(VERITY_BLOCK);
                if hash_start.is_none_or(|h| h >= p.size) {
                    return Err(BundleError::invalid(
                        at("verity.hash_start_block"),
                        format!("the hash tree would start at or past the payload's end ({} bytes)", p.size),
                    ));
                }
            }
        }
        for name in UKI_PAYLOADS {
            match self.payload(name) {
                None => return Err(BundleError::invalid("payloads", format!("no {name:?} payload"))),
                Some(k) if k.verity.is_some() => {
                    return Err(BundleError::invalid(format!("payloads.{name}.verity"), "a UKI has no verity tree"))
                }
                Some(_) => {}
            }
        }
        match self.payload(ROOT_PAYLOAD) {
            None => Err(BundleError::invalid("payloads", "no \"root\" payload")),
            Some(r) if r.verity.is_none() => Err(BundleError::invalid("payloads.root.verity", "missing")),
            Some(_) => Ok(()),
        }
    }
}

fn check_hex(field: &str, s: &str, len: Option<usize>) -> Result<(), BundleError> {
    let ok_len = match len {
        Some(n) => s.len() == n,
        None => !s.is_empty() && s.len() <= 256 && s.len().is_multiple_of(2),
    };
    if !ok_len || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        let want = len.map_or("an even number of".to_string(), |n| n.to_string());
        return Err(BundleError::invalid(field, format!("must be {want} lowercase hex digits")));
    }
    Ok(())
}

/// A manifest whose signature verified with an accepted key and whose
/// fields passed [`Manifest::validate`]. Only [`super::open`] makes one;
/// it derefs to the [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    manifest: Manifest,
    key_id: KeyId,
}

impl VerifiedManifest {
    pub(crate) fn new(manifest: Manifest, key_id: KeyId) -> VerifiedManifest {
        VerifiedManifest { manifest, key_id }
    }

    /// The id of the accepted key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The manifest itself.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl Deref for VerifiedManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}
