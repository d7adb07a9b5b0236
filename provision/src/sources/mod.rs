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

pub mod dmi;
pub mod fw_cfg;
pub mod imds;
pub mod nocloud;
pub mod system;

use std::time::Instant;

use crate::host::Runner;
use system::{RealSystem, System};

/// The most bytes read of one document (user-data, meta-data,
/// network-config): 16 MiB. EC2 allows 16 KiB of user data; a larger one
/// is a mistake, not a configuration.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// Probes the machine's sources in order (fw_cfg, NoCloud, IMDS) and
/// returns the first that has user data or meta-data. PID1 calls it on a
/// boot thread once /var and /etc are mounted; `runner` starts dhcpcd for
/// the metadata service (only on an EC2-like machine). A machine without
/// any source returns at once: no sleep, no network.
pub fn probe(runner: &mut dyn Runner) -> Probed {
    probe_with(&mut RealSystem, runner, &imds::Options::default())
}

/// [`probe`] over any [`System`] (tests fake sysfs, devices and HTTP).
pub fn probe_with(sys: &mut dyn System, runner: &mut dyn Runner, imds_options: &imds::Options) -> Probed {
    let start = Instant::now();
    let mut tried = Vec::new();
    let found = probe_sources(sys, runner, imds_options, &mut tried);
    Probed { found, probe_time: start.elapsed(), tried }
}

fn describe(found: &Found) -> String {
    let size = |b: &Option<Vec<u8>>| b.as_ref().map_or("none".to_string(), |b| format!("{} bytes", b.len()));
    format!("user-data {}, meta-data {}", size(&found.user_data), size(&found.meta_data))
}

fn probe_sources(
    sys: &mut dyn System,
    runner: &mut dyn Runner,
    imds_options: &imds::Options,
    tried: &mut Vec<String>,
) -> Option<Found> {
    match fw_cfg::read(sys) {
        Ok((Some(found), _)) => {
            tried.push(format!("fw_cfg: {} ({})", found.origin.trim_start_matches("fw_cfg:"), describe(&found)));
            return Some(found);
        }
        Ok((None, why)) => tried.push(format!("fw_cfg: {why}")),
        Err(e) => tried.push(format!("fw_cfg: error: {e}")),
    }

    match nocloud::find_seed(sys) {
        (Some(volume), _) => {
            let what = format!("{} ({}, {})", volume.device.display(), volume.label, volume.fstype.name());
            match nocloud::read_seed(sys, &volume) {
                Ok(Some(found)) => {
                    tried.push(format!("nocloud: {what}: {}", describe(&found)));
                    return Some(found);
                }
                Ok(None) => tried.push(format!("nocloud: {what}: no user-data or meta-data")),
                Err(e) => tried.push(format!("nocloud: {what}: error: {e}")),
            }
        }
        (None, looked) => tried.push(format!("nocloud: none ({looked} block devices)")),
    }

    let reason = match dmi::Dmi::read(sys).ec2_like() {
        Ok(reason) => reason,
        Err(what) => {
            tried.push(format!("imds: skipped ({what})"));
            return None;
        }
    };
    let lease = imds::lease(sys, runner, imds_options);
    match imds::fetch(sys, imds_options) {
        Ok(found) => {
            tried.push(format!("imds: {} ({reason}; {lease}): {}", imds_options.base, describe(&found)));
            Some(found)
        }
        Err(e) => {
            tried.push(format!("imds: {reason}; {lease}; error: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
