//! The seam between the control API and the service manager.
//!
//! The server calls these from tasks on PID1's runtime, one task per method
//! call. An implementation should hand the request to the supervisor and
//! answer; it must not block the thread (no blocking I/O, no waits on std
//! locks held for long). Whether `start` resolves when the request is
//! queued or when the unit is up is the implementation's choice: either is
//! fine for the server, a long wait costs only the caller's task.

use std::future::Future;

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
}
