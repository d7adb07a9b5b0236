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
pub(crate) mod valid;

use crate::diag::{Diagnostic, Place};
use crate::model::{Config, MetaData, Network};
use crate::tree::{Format, Node, Value};

pub(crate) use files::MAX_INFLATED;
use read::Ctx;

/// The largest user data accepted once decompressed (cloud-init's EC2
/// limit is 16 KiB compressed; NoCloud has none): 16 MiB.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// Interprets the tree of a whole document: its config, the errors
/// (none: it may be applied) and the warnings, each with its place.
pub fn document(format: Format, root: &Node, source: &str) -> (Config, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut cx = Ctx::new(format);
    let config = config::document(&mut cx, root, source);
    (config, cx.errors, cx.warnings)
}

/// Raw bytes -> text: gunzipped when they start with gzip's magic, a
/// UTF-8 BOM dropped, `\r\n` left to the readers. The error: its line (0:
/// the document as a whole) and why.
pub(crate) fn text_of(bytes: &[u8]) -> Result<String, (usize, String)> {
    let data;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        data = files::gunzip(bytes)
            .map_err(|e| (0, format!("gzip-compressed user data that does not decompress: {e}")))?;
        data.as_slice()
    } else {
        bytes
    };
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err((0, format!("user data larger than {} MiB", MAX_DOCUMENT >> 20)));
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = bytes.iter().take(at).filter(|b| **b == b'\n').count() + 1;
        (line, format!("user data is not UTF-8 text (byte {at})"))
    })
}

/// A NoCloud `meta-data` file (YAML, or JSON, which YAML reads):
/// `instance-id` and `local-hostname`; other keys are ignored (they are
/// EC2's, cloud-init ignores most too). Empty: no instance-id. Errors: a
/// syntax error, a document that is not a mapping, a bad value.
pub fn meta_data(source: &str, bytes: &[u8]) -> Result<MetaData, Diagnostic> {
    let text = text_of(bytes).map_err(|(line, e)| Diagnostic::new(Place::new(source, line, ""), e))?;
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
    let text = text_of(bytes).map_err(|(line, e)| vec![Diagnostic::new(Place::new(source, line, ""), e)])?;
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
pub fn unit_text(name: &str, text: &str) -> Result<(), Vec<String>> {
    berth::unit_text(name, text)
}
