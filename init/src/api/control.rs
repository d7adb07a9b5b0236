//! The seam between the control API and the service manager.
//!
//! The server calls these from tasks on PID1's runtime, one task per method
//! call. An implementation should hand the request to the supervisor and
//! answer; it must not block the thread (no blocking I/O, no waits on std
//! locks held for long). Whether `start` resolves when the request is
//! queued or when the unit is up is the implementation's choice: either is
//! fine for the server, a long wait costs only the caller's task.

use std::future::Future;
use std::time::Duration;

use berth_provision::machine::{InForce, Status};

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

use crate::power::Action;
use crate::status::{Timeline, UnitStatus};

/// Why a request was not carried out. The text is what `berthctl` prints
/// after `berthctl: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No unit by that name is loaded.
    #[error("no unit {0:?}")]
    NoUnit(String),
    /// Not now or not for this unit: a stop while shutting down, a start of
    /// a unit whose file failed to load, ... The text says why.
    #[error("{0}")]
    Refused(String),
    /// Tried and failed; the text says what failed.
    #[error("{0}")]
    Failed(String),
    /// A document given to `config apply` is invalid, nothing of it was
    /// applied: one error per line, each `SOURCE:LINE: key K: message`.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// What a reload of the unit files changed, by unit name (each sorted), and
/// the unit files that could not be loaded, one message each (file, line,
/// key: as the unit loader words them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ReloadOutcome {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub errors: Vec<String>,
}

/// What `berthctl config apply` did (and what a trial's revert did): the
/// change as `berth_provision::machine::ChangeReport` words it, then what
/// PID1 did after it. On the wire: `(asassastasasasas)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ConfigReport {
    /// One line per change, for people (`hostname: a -> b`).
    pub changes: Vec<String>,
    /// The units whose files (or what they read) the change touched.
    pub units_changed: Vec<String>,
    /// The hostname set; "" when it did not change.
    pub hostname: String,
    /// The document's warnings (keys Berth does not implement, ...).
    pub warnings: Vec<String>,
    /// A trial (`--try`): when it reverts, in seconds since the epoch; 0
    /// for none.
    pub trial_until: u64,
    /// What the reload of the unit files started (new units), stopped
    /// (removed or masked) and restarted (changed, or touched by the
    /// change while running), each sorted.
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    /// What went wrong after the change was applied, one line each: a unit
    /// file that does not load, a restart that failed, the hostname not
    /// set. The change itself stays applied.
    pub problems: Vec<String>,
}

/// The service manager as the control API sees it.
pub trait Control: Send + Sync + 'static {
    /// Every loaded unit, in any order (clients sort).
    fn list(&self) -> impl Future<Output = Vec<UnitStatus>> + Send;
    fn status(&self, unit: &str) -> impl Future<Output = Result<UnitStatus, ControlError>> + Send;
    fn start(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send;
    fn stop(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send;
    fn restart(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Reads the unit files again and applies what changed.
    fn reload(&self) -> impl Future<Output = Result<ReloadOutcome, ControlError>> + Send;
    /// The boot as it went so far.
    fn timeline(&self) -> impl Future<Output = Timeline> + Send;
    /// Asks for a clean shutdown; resolves once it is asked for (the reply
    /// still goes out before services are stopped).
    fn power(&self, action: Action) -> impl Future<Output = ()> + Send;
    /// What became of user data at boot (and since, through `config
    /// apply`); `None` before the boot step ran.
    fn provisioning(&self) -> impl Future<Output = Option<Status>> + Send;
    /// Validates the document (`source` names it in the errors) and
    /// applies it, then reloads the units and restarts what it touched.
    /// `try_for`: it reverts after that long unless confirmed. An invalid
    /// document: [`ControlError::Invalid`], nothing applied.
    fn config_apply(
        &self,
        source: &str,
        bytes: Vec<u8>,
        try_for: Option<Duration>,
    ) -> impl Future<Output = Result<ConfigReport, ControlError>> + Send;
    /// The configuration on trial becomes the one in force.
    fn config_confirm(&self) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// The document in force and its record; `None`: none was applied.
    fn config_show(&self) -> impl Future<Output = Result<Option<InForce>, ControlError>> + Send;
}
