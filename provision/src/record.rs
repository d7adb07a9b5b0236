//! The record of what is in force: /var/lib/berth/provision
//! ([`berth_layout::paths::PROVISION_DIR`]).
//!
//! - `record.json`: a [`Record`] (source, instance-id, sha256, time,
//!   format, warnings, and the files the every-boot keys made);
//! - `user-data`, `meta-data`, `network-config`: the documents in force,
//!   as given (the every-boot keys are applied from them at each boot);
//! - `backup/`: while an apply runs or a `--try` waits for its confirm, the
//!   previous contents of what it changed (see [`crate::apply`]).
//!
//! The record and the documents are written by the same apply as the
//! rest ([`changes`]), so they are part of its backup: a reverted apply
//! puts the previous record back with everything else.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::Format;
use crate::host::Host;
use crate::plan::Change;

pub const RECORD: &str = "/var/lib/berth/provision/record.json";
pub const USER_DATA: &str = "/var/lib/berth/provision/user-data";
pub const META_DATA: &str = "/var/lib/berth/provision/meta-data";
pub const NETWORK_CONFIG: &str = "/var/lib/berth/provision/network-config";

/// What was applied last, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Where the document came from (see [`crate::diag::Place::source`]).
    pub source: String,
    pub instance_id: String,
    /// sha256 of the user data as given, lowercase hex.
    pub sha256: String,
    /// Seconds since the epoch.
    pub applied_at: u64,
    pub format: Option<Format>,
    /// Each `SOURCE:LINE: key K: message`.
    pub warnings: Vec<String>,
    /// Files the every-boot keys made (see [`crate::plan::Previous`]).
    #[serde(default)]
    pub managed: Vec<String>,
}

/// The documents in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Docs {
    pub user_data: Vec<u8>,
    pub meta_data: Option<Vec<u8>>,
    pub network_config: Option<Vec<u8>>,
}

/// The record; `None` when nothing was ever applied. A record that does
/// not parse is an error (`InvalidData`).
pub fn load(host: &dyn Host) -> io::Result<Option<Record>> {
    match host.read(Path::new(RECORD))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{RECORD}: {e}"))),
    }
}

/// The documents in force (an empty user data when the file is missing).
pub fn docs(host: &dyn Host) -> io::Result<Docs> {
    Ok(Docs {
        user_data: host.read(Path::new(USER_DATA))?.unwrap_or_default(),
        meta_data: host.read(Path::new(META_DATA))?,
        network_config: host.read(Path::new(NETWORK_CONFIG))?,
    })
}

/// The changes that make `record` and `docs` the ones in force (files
/// 0600 root), for the same apply as the plan.
pub fn changes(record: &Record, docs: &Docs) -> Vec<Change> {
    let json = serde_json::to_vec_pretty(record).unwrap_or_default();
    let file = |path: &str, content: Vec<u8>| Change::Write { path: path.into(), content, mode: 0o600, uid: 0, gid: 0 };
    let opt = |path: &str, content: &Option<Vec<u8>>| match content {
        Some(c) => file(path, c.clone()),
        None => Change::Remove { path: path.into() },
    };
    vec![
        file(USER_DATA, docs.user_data.clone()),
        opt(META_DATA, &docs.meta_data),
        opt(NETWORK_CONFIG, &docs.network_config),
        file(RECORD, json),
    ]
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
