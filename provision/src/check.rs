//! The one entry point from bytes to a validated document: the machine
//! at boot, `berthctl config apply` and `berth-image check-config` all
//! call [`check`], so they give the same errors and warnings.

use crate::diag::Diagnostic;
use crate::model::Config;

/// The two formats, told apart by the first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// `#cloud-config` (YAML, cloud-init's keys; Berth's under `berth:`).
    CloudConfig,
    /// `#berth-config` (TOML, the same keys; Berth's at the top level).
    Native,
}

/// A document that passed: it may be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub source: String,
    pub format: Format,
    pub config: Config,
    /// Keys Berth does not implement, deprecated spellings: each named
    /// with its line. They do not stop the rest from applying.
    pub warnings: Vec<Diagnostic>,
    /// sha256 of the bytes as given (before any gzip), lowercase hex.
    pub sha256: String,
}

/// A document that did not pass: nothing of it is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub source: String,
    /// At least one.
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub sha256: String,
}

pub type Checked = Result<Document, Rejected>;

/// Reads and validates a user-data document.
///
/// `source` names it in every diagnostic. The format comes from the first
/// line: `#cloud-config` or `#berth-config`; gzip-compressed bytes are
/// decompressed first (as cloud-init does). Empty (or only blank) is a
/// valid document that changes nothing. A shell script (`#!`), MIME
/// multipart, `#include` and anything else are rejected with the reason.
pub fn check(source: &str, bytes: &[u8]) -> Checked {
    crate::interpret::check(source, bytes)
}
