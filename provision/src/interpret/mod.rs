//! [`crate::tree::Node`] -> [`crate::model::Config`]: one interpreter for both formats.
//!
//! The same key has the same name, type and meaning in `#cloud-config`
//! and `#berth-config`; what differs:
//! - Berth's own keys (`units`, `containerd`, `etcd`, `update`, `ssh`) sit
//!   under `berth:` in #cloud-config and are top-level tables in TOML;
//! - a key of no schema is a warning in #cloud-config (cloud-init ignores
//!   it too) and an error in TOML. A cloud-init key Berth does not
//!   implement (`packages`, `apt`, ...) is a warning in both, naming the
//!   module; a misspelled key inside Berth's tables is an error in both;
//! - YAML plain scalars are typed as YAML 1.1 reads them (`yes` is true,
//!   `0644` is octal), TOML's by TOML.
//!
//! Every error is collected, not only the first.

mod berth;
mod config;
mod files;
mod network;
mod read;
mod schema;
mod users;
mod valid;

use sha2::{Digest, Sha256};

use crate::check::{Checked, Document, Format, Rejected};
use crate::diag::{Diagnostic, Place};
use crate::model::{MetaData, Network};
use crate::tree::Value;

use read::Ctx;

/// The largest user data accepted once decompressed (cloud-init's EC2
/// limit is 16 KiB compressed; NoCloud has none): 16 MiB.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// See [`crate::check::check`].
pub fn check(source: &str, bytes: &[u8]) -> Checked {
    let sha256 = hex(&Sha256::digest(bytes));
    let reject = |errors: Vec<Diagnostic>, warnings: Vec<Diagnostic>| Rejected {
        source: source.to_string(),
        errors,
        warnings,
        sha256: sha256.clone(),
    };
    let whole = |msg: String| vec![Diagnostic::new(Place::new(source, 0, ""), msg)];
    let text = match text_of(bytes) {
        Ok(t) => t,
        Err(e) => return Err(reject(whole(e), Vec::new())),
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
    let mut cx = Ctx::new(format);
    let config = config::document(&mut cx, &root, source);
    if cx.errors.is_empty() {
        Ok(Document { source: source.to_string(), format, config, warnings: cx.warnings, sha256 })
    } else {
        Err(reject(cx.errors, cx.warnings))
    }
}

/// Raw bytes -> text: gunzipped when they start with gzip's magic, a
/// UTF-8 BOM dropped, `\r\n` left to the readers.
fn text_of(bytes: &[u8]) -> Result<String, String> {
    let data;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        data = files::gunzip(bytes).map_err(|e| format!("gzip-compressed user data that does not decompress: {e}"))?;
        data.as_slice()
    } else {
        bytes
    };
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(format!("user data larger than {} MiB", MAX_DOCUMENT >> 20));
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec())
        .map_err(|e| format!("user data is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
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

/// A NoCloud `meta-data` file (YAML, or JSON, which YAML reads):
/// `instance-id` and `local-hostname`; other keys are ignored (they are
/// EC2's, cloud-init ignores most too). Empty: no instance-id. Errors: a
/// syntax error, a document that is not a mapping, a bad value.
pub fn meta_data(source: &str, bytes: &[u8]) -> Result<MetaData, Diagnostic> {
    let text = text_of(bytes).map_err(|e| Diagnostic::new(Place::new(source, 0, ""), e))?;
    let root = crate::yaml::read(source, &text).map_err(|mut e| e.remove(0))?;
    let mut md = MetaData::default();
    let mut cx = Ctx::new(Format::CloudConfig);
    let top = Place::new(source, 0, "");
    if root.value != Value::Null {
        if let Some(entries) = cx.map(&root, &top) {
            for (k, v) in entries {
                let at = top.child(k.line, &k.name);
                match k.name.as_str() {
                    "instance-id" => md.instance_id = cx.nonempty(v, &at).map(|s| s.trim().to_string()),
                    "local-hostname" => {
                        if let Some(h) = cx.nonempty(v, &at) {
                            match valid::hostname(&h) {
                                Ok(()) => md.local_hostname = Some(h),
                                Err(e) => cx.error(&at, e),
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    match cx.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(md),
    }
}

/// A NoCloud `network-config` file: network config v1 or v2, with or
/// without a top-level `network:`. Empty or `network: null`: Ok(None)
/// would be more exact, but the contract is a [`Network`]: an empty one
/// (version 2, no interfaces) keeps the machine's DHCP default.
pub fn network_config(source: &str, bytes: &[u8]) -> Result<Network, Vec<Diagnostic>> {
    network_config_checked(source, bytes).map(|(n, _)| n)
}

/// The network config's warnings as well (for `check-config` on a
/// `network-config` file): Ok((network, warnings)).
pub fn network_config_checked(source: &str, bytes: &[u8]) -> Result<(Network, Vec<Diagnostic>), Vec<Diagnostic>> {
    let text = text_of(bytes).map_err(|e| vec![Diagnostic::new(Place::new(source, 0, ""), e)])?;
    let root = crate::yaml::read(source, &text)?;
    let top = Place::new(source, 0, "");
    let empty =
        Network { version: 2, interfaces: Vec::new(), nameservers: Vec::new(), search: Vec::new(), at: top.clone() };
    if root.value == Value::Null {
        return Ok((empty, Vec::new()));
    }
    let mut cx = Ctx::new(Format::CloudConfig);
    let net = network::network(&mut cx, &root, &top);
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok((net.unwrap_or(empty), cx.warnings))
}

/// The unit-file check used for `units.add`/`units.override` (exposed for
/// `check-config` and tests).
pub fn unit_text(text: &str) -> Result<(), String> {
    berth::unit_text(text)
}
