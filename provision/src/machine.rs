//! What PID1 calls: user data at boot, and `berthctl config` on a running
//! machine. Both go through [`crate::plan`] and [`crate::apply`] and keep
//! the [`crate::record`]; this module holds the decisions between them
//! (a new instance or not, a changed document, a trial and its revert).

use std::time::{Duration, SystemTime};

use crate::diag::Diagnostic;
use crate::host::Host;
use crate::sources::Probed;

/// What the machine knows when it provisions at boot.
#[derive(Clone, Debug)]
pub struct BootFacts {
    /// /etc/machine-id: the instance-id when the source has no meta-data.
    pub machine_id: String,
    pub now: SystemTime,
}

/// What became of user data at this boot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// No source had user data, and none was ever applied.
    None,
    /// A new instance (or the first boot): the document was applied.
    Applied,
    /// Same instance, same document: the every-boot keys were re-applied.
    Unchanged,
    /// Same instance-id, a different document: not applied (the one in
    /// force stays), and the console says how to apply it.
    ChangedNotApplied,
    /// The document was invalid: nothing of it applied.
    Rejected,
    /// Applying failed half-way on the machine (I/O); everything it had
    /// changed was put back.
    Failed,
}

/// The state of provisioning for `berthctl status` and the console.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub outcome: Outcome,
    /// Where the document came from (`fw_cfg:opt/org.berth/user-data`, ...).
    pub source: Option<String>,
    pub instance_id: Option<String>,
    /// sha256 of the document in force.
    pub sha256: Option<String>,
    /// Time spent finding user data at this boot, in milliseconds.
    pub probe_ms: u64,
    /// Errors (rejected or failed) and warnings, each `SOURCE:LINE: key K: message`.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// A `config apply --try` waiting for `berthctl config confirm`:
    /// seconds since the epoch when it reverts.
    pub trial_until: Option<u64>,
}

/// What [`at_boot`] hands PID1.
#[derive(Clone, Debug)]
pub struct BootOutcome {
    pub status: Status,
    /// For the console, one fact per line (`user data: fw_cfg:... applied
    /// (instance i-1, 3 warnings) in 12 ms`, each error and warning).
    pub lines: Vec<String>,
    /// The hostname now set, when user data set one.
    pub hostname: Option<String>,
}

/// Applies user data at boot, before the units are loaded. Never fails:
/// every problem is in the outcome. A trial (`--try`) left pending by a
/// reboot is reverted first.
pub fn at_boot(_host: &mut dyn Host, probed: Probed, _facts: &BootFacts) -> BootOutcome {
    let probe_ms = u64::try_from(probed.probe_time.as_millis()).unwrap_or(u64::MAX);
    BootOutcome {
        status: Status {
            outcome: Outcome::None,
            source: None,
            instance_id: None,
            sha256: None,
            probe_ms,
            errors: vec![],
            warnings: vec![],
            trial_until: None,
        },
        lines: vec![],
        hostname: None,
    }
}

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
pub fn change(
    _host: &mut dyn Host,
    _source: &str,
    _bytes: &[u8],
    _try_for: Option<Duration>,
    _now: SystemTime,
) -> Result<ChangeReport, ChangeError> {
    Err(ChangeError::Apply("not implemented yet".into()))
}

/// `berthctl config confirm`: the trial becomes the configuration in force.
pub fn confirm(_host: &mut dyn Host) -> Result<(), ChangeError> {
    Err(ChangeError::NoTrial)
}

/// The trial's time ran out: the last known good configuration is put
/// back (files, units, hostname), as a change.
pub fn revert(_host: &mut dyn Host) -> Result<ChangeReport, ChangeError> {
    Err(ChangeError::NoTrial)
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

pub fn show(_host: &dyn Host) -> Option<InForce> {
    None
}
