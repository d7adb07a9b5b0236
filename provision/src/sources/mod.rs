//! Where user data is found at boot, in a fixed order, local sources
//! first: QEMU `fw_cfg`, a NoCloud seed volume (`CIDATA`), then the
//! EC2-style metadata service, probed only when DMI says the machine is on
//! such a cloud. A machine with none of them spends no time waiting.

use std::time::Duration;

/// The kind of source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    FwCfg,
    NoCloud,
    Imds,
}

/// What a source gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    /// Names the user data in diagnostics: `fw_cfg:opt/org.berth/user-data`,
    /// `nocloud:/dev/vdb:user-data`, `imds:http://169.254.169.254/latest/user-data`.
    pub origin: String,
    /// The user data; `None` when the source had only meta-data.
    pub user_data: Option<Vec<u8>>,
    /// `meta-data` as given (NoCloud: YAML; fw_cfg: YAML), or made from the
    /// metadata service's answers (`instance-id: ...` YAML).
    pub meta_data: Option<Vec<u8>>,
    /// NoCloud `network-config` (v1 or v2 YAML).
    pub network_config: Option<Vec<u8>>,
}

/// The result of probing at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    /// The first source that had user data or meta-data.
    pub found: Option<Found>,
    /// Time spent probing every source tried, the one found included.
    pub probe_time: Duration,
    /// What was tried and what came of it, for the console:
    /// `fw_cfg: none`, `nocloud: /dev/vdb (CIDATA)`, `imds: skipped (DMI: QEMU)`.
    pub tried: Vec<String>,
}

/// Probes every source in order (H3's stub so PID1 links: nothing found,
/// no time spent). H4 replaces it with the real probe.
pub fn probe(_runner: &mut dyn crate::host::Runner) -> Probed {
    Probed { found: None, probe_time: Duration::ZERO, tried: vec![] }
}
