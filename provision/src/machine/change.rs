//! A running machine's configuration changed: `berthctl config apply`
//! (optionally on trial), `confirm`, `revert`, and what is in force.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{meta_source, network_source, run, secs, Fail, Job, Readers};
use crate::apply;
use crate::diag::Diagnostic;
use crate::host::Host;
use crate::plan::{Previous, Scope};
use crate::record::{self, Docs, Record};

/// What `berthctl config apply` reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeReport {
    /// One line per change, for people: `hostname: a -> b`,
    /// `wrote /etc/x (0644 root:root)`, `unit web: added`.
    pub changes: Vec<String>,
    /// Units whose files changed: PID1 reloads its units and restarts
    /// these (removed ones stop, added ones start).
    pub units_changed: Vec<String>,
    /// The hostname to set, when it changed.
    pub hostname: Option<String>,
    pub warnings: Vec<String>,
    /// With `--try`: when it reverts (seconds since the epoch).
    pub trial_until: Option<u64>,
}

/// Why a change was refused or failed. Nothing of it is left applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The document is invalid: each error names source, line and key.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// Another trial is pending: confirm it or let it revert first.
    #[error("a configuration on trial reverts at {until}: confirm it (berthctl config confirm) or wait")]
    TrialPending { until: u64 },
    /// No trial to confirm.
    #[error("no configuration is on trial")]
    NoTrial,
    /// The machine refused a change (I/O); what was changed is put back.
    #[error("{0}")]
    Apply(String),
}

/// `berthctl config apply FILE [--try SECONDS]`: validates and applies a
/// changed document on a running machine (every key, once-per-instance
/// ones included, except that `runcmd` runs only for a new instance-id).
/// With `try_for`, the previous configuration is kept as last known good
/// and [`revert`] puts it back unless [`confirm`] comes first.
///
/// The instance stays the recorded one (the machine-id when nothing was
/// recorded); meta-data in force stays; a document with a `network` key
/// replaces a `network-config` file in force. `bootcmd` is not run (it
/// runs at boot).
pub fn change(
    host: &mut dyn Host,
    source: &str,
    bytes: &[u8],
    try_for: Option<Duration>,
    now: SystemTime,
) -> Result<ChangeReport, ChangeError> {
    change_with(&Readers::REAL, host, source, bytes, try_for, now)
}

pub(crate) fn change_with(
    r: &Readers,
    host: &mut dyn Host,
    source: &str,
    bytes: &[u8],
    try_for: Option<Duration>,
    now: SystemTime,
) -> Result<ChangeReport, ChangeError> {
    match apply::pending(&*host).map_err(|e| ChangeError::Apply(e.to_string()))? {
        Some(apply::Index { state: apply::State::Trial { until }, .. }) => {
            return Err(ChangeError::TrialPending { until })
        }
        Some(_) => {
            // An earlier change was cut short (PID1 died mid-way): undo it.
            apply::restore(host).map_err(|e| ChangeError::Apply(format!("putting back an unfinished apply: {e}")))?;
        }
        None => {}
    }
    let doc = (r.check)(source, bytes).map_err(|r| ChangeError::Invalid(r.errors))?;
    let previous = record::load(&*host).map_err(|e| ChangeError::Apply(e.to_string()))?;
    let in_force = record::docs(&*host).map_err(|e| ChangeError::Apply(e.to_string()))?;
    let instance_id = match &previous {
        Some(r) => r.instance_id.clone(),
        None => host
            .read(Path::new("/etc/machine-id"))
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into()),
    };
    let mut config = doc.config.clone();
    let mut docs = Docs { user_data: bytes.to_vec(), meta_data: in_force.meta_data.clone(), network_config: None };
    if config.network.is_none() {
        if let Some(nc) = &in_force.network_config {
            let origin = previous.as_ref().map_or(source, |r| r.source.as_str());
            if let Ok(n) = (r.network_config)(&network_source(origin), nc) {
                config.network = Some(n);
                docs.network_config = Some(nc.clone());
            }
        }
    }
    let mut local_hostname = None;
    if let Some(md) = &docs.meta_data {
        let origin = previous.as_ref().map_or(source, |r| r.source.as_str());
        local_hostname = (r.meta_data)(&meta_source(origin), md).ok().and_then(|m| m.local_hostname);
    }
    let trial_until = try_for.map(|d| secs(now).saturating_add(d.as_secs().max(1)));
    let rec = Record {
        source: source.to_string(),
        instance_id,
        sha256: if doc.sha256.is_empty() { record::sha256_hex(bytes) } else { doc.sha256.clone() },
        applied_at: secs(now),
        format: Some(doc.format),
        warnings: doc.warnings.iter().map(|d| d.to_string()).collect(),
        managed: vec![],
    };
    let job = Job {
        config: &config,
        local_hostname,
        previous: Previous { managed: previous.map(|p| p.managed).unwrap_or_default() },
        scope: Scope { per_instance: true, bootcmd: false },
        record: (rec, docs),
        trial_until,
    };
    let (plan, applied) = match run(host, job) {
        Ok(x) => x,
        Err(Fail::Invalid(errors)) => return Err(ChangeError::Invalid(errors)),
        Err(Fail::Io(e)) => return Err(ChangeError::Apply(e)),
    };
    let hostname_changed = applied.paths.iter().any(|p| p == "/etc/hostname");
    let mut warnings: Vec<String> = doc.warnings.iter().map(|d| d.to_string()).collect();
    warnings.extend(plan.warnings.iter().map(|d| d.to_string()));
    Ok(ChangeReport {
        changes: applied.lines,
        units_changed: applied.units_changed,
        hostname: if hostname_changed { applied.hostname } else { None },
        warnings,
        trial_until,
    })
}

/// `berthctl config confirm`: the trial becomes the configuration in force.
pub fn confirm(host: &mut dyn Host) -> Result<(), ChangeError> {
    match apply::pending(&*host).map_err(|e| ChangeError::Apply(e.to_string()))? {
        Some(apply::Index { state: apply::State::Trial { .. }, .. }) => {
            apply::discard(host).map_err(|e| ChangeError::Apply(e.to_string()))?;
            Ok(())
        }
        _ => Err(ChangeError::NoTrial),
    }
}

/// The trial's time ran out: the last known good configuration is put
/// back (files, units, hostname), as a change.
pub fn revert(host: &mut dyn Host) -> Result<ChangeReport, ChangeError> {
    match apply::pending(&*host).map_err(|e| ChangeError::Apply(e.to_string()))? {
        Some(apply::Index { state: apply::State::Trial { .. }, .. }) => {}
        _ => return Err(ChangeError::NoTrial),
    }
    let restored = apply::restore(host).map_err(|e| ChangeError::Apply(e.to_string()))?.ok_or(ChangeError::NoTrial)?;
    let mut report = ChangeReport {
        changes: restored
            .paths
            .iter()
            .filter(|p| !p.starts_with(berth_layout::paths::PROVISION_DIR) || p.ends_with(".sh"))
            .map(|p| format!("put back {p}"))
            .collect(),
        units_changed: restored.units_changed,
        hostname: None,
        warnings: vec![],
        trial_until: None,
    };
    if restored.paths.iter().any(|p| p == "/etc/hostname") {
        let name = host
            .read(Path::new("/etc/hostname"))
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).lines().next().unwrap_or_default().trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(name) = &name {
            if let Err(e) = host.set_hostname(name) {
                report.warnings.push(format!("hostname {name}: sethostname failed: {e}"));
            }
        }
        report.hostname = name;
    }
    Ok(report)
}

/// `berthctl config show`: the document in force and its record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InForce {
    pub source: String,
    pub instance_id: String,
    pub sha256: String,
    /// Seconds since the epoch.
    pub applied_at: u64,
    pub warnings: Vec<String>,
    /// The document as applied.
    pub text: String,
    pub trial_until: Option<u64>,
}

pub fn show(host: &dyn Host) -> Option<InForce> {
    let rec = record::load(host).ok().flatten()?;
    let docs = record::docs(host).ok()?;
    let trial_until = match apply::pending(host) {
        Ok(Some(apply::Index { state: apply::State::Trial { until }, .. })) => Some(until),
        _ => None,
    };
    Some(InForce {
        source: rec.source,
        instance_id: rec.instance_id,
        sha256: rec.sha256,
        applied_at: rec.applied_at,
        warnings: rec.warnings,
        text: String::from_utf8_lossy(&docs.user_data).into_owned(),
        trial_until,
    })
}
