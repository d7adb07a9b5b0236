//! The one entry point from bytes to a validated document: the machine
//! at boot, `berthctl config apply` and `berth-image check-config` all
//! call [`check`], so they give the same errors and warnings.

use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Place};
use crate::model::Config;
use crate::tree::Value;

pub use crate::tree::Format;

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
    let sha256 = hex(&Sha256::digest(bytes));
    let reject = |errors: Vec<Diagnostic>, warnings: Vec<Diagnostic>| Rejected {
        source: source.to_string(),
        errors,
        warnings,
        sha256: sha256.clone(),
    };
    let whole = |msg: String| vec![Diagnostic::new(Place::new(source, 0, ""), msg)];
    let text = match crate::interpret::text_of(bytes) {
        Ok(t) => t,
        Err((line, e)) => {
            return Err(reject(vec![Diagnostic::new(Place::new(source, line, ""), e)], Vec::new()));
        }
    };
    let empty = |format| Document {
        source: source.to_string(),
        format,
        config: Default::default(),
        warnings: Vec::new(),
        sha256: sha256.clone(),
    };
    if text.trim().is_empty() {
        return Ok(empty(Format::CloudConfig));
    }
    let first = text.lines().next().unwrap_or("").trim_end();
    let format = match format_of(first) {
        Ok(f) => f,
        Err(e) => return Err(reject(whole(e), Vec::new())),
    };
    let root = match format {
        Format::CloudConfig => crate::yaml::read(source, &text),
        Format::Native => crate::toml_tree::read(source, &text).map_err(|d| vec![d]),
    };
    let root = match root {
        Ok(r) => r,
        Err(errors) => return Err(reject(errors, Vec::new())),
    };
    if root.value == Value::Null {
        return Ok(empty(format));
    }
    let (config, errors, warnings) = crate::interpret::document(format, &root, source);
    if errors.is_empty() {
        Ok(Document { source: source.to_string(), format, config, warnings, sha256 })
    } else {
        Err(reject(errors, warnings))
    }
}

/// The format from the first line; the reason for what Berth refuses.
fn format_of(first: &str) -> Result<Format, String> {
    let word = first.split_whitespace().next().unwrap_or("");
    match word {
        "#cloud-config" => Ok(Format::CloudConfig),
        "#berth-config" => Ok(Format::Native),
        _ if first.starts_with("#!") => {
            Err("a shell script (`#!`) as user data: Berth runs no user-data scripts (use `runcmd` or `bootcmd` in #cloud-config)".into())
        }
        _ if first.to_ascii_lowercase().starts_with("content-type:") || first.to_ascii_lowercase().starts_with("mime-version:") => {
            Err("MIME multipart user data is not supported on Berth: give one #cloud-config or #berth-config document".into())
        }
        "#include" | "#include-once" => Err("`#include` user data (fetched from URLs) is not supported on Berth: give the document itself".into()),
        "#cloud-config-archive" => Err("`#cloud-config-archive` is not supported on Berth: give one #cloud-config document".into()),
        "#cloud-config-jsonp" => Err("`#cloud-config-jsonp` (JSON patches) is not supported on Berth".into()),
        "#cloud-boothook" | "#part-handler" | "#upstart-job" => Err(format!("`{word}` user data is not supported on Berth (it runs no user-data scripts)")),
        _ if first.starts_with("## template:") => Err("Jinja templates (`## template: jinja`) are not supported on Berth".into()),
        _ => Err("unknown user-data format: the first line must be `#cloud-config` or `#berth-config`".into()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
