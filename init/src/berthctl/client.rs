//! The client side of the control API, as `berthctl` uses it: async, on
//! any tokio runtime (berthctl runs a current_thread one). Every call has a
//! deadline, so a stuck PID1 gives an error, not a hung shell (the
//! connection and the error mapping are [`berth_dbus::client`]'s).

use std::path::Path;
use std::time::Duration;

use berth_dbus::{Peer, Service};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zbus::zvariant::DynamicType;

use berth_provision::machine::{InForce, Status};

use crate::api::control::{ConfigReport, ReloadOutcome};
use crate::api::wire::{BadReply, WireInForce, WireProvisioning, WireRecord, WireStatus, WireTimeline};
use crate::journal::Record;
use crate::status::{Timeline, UnitStatus};

pub use berth_dbus::client::DEFAULT_TIMEOUT;
pub use berth_dbus::ClientError;

/// Starting and stopping may take a while (a stop waits for the unit's
/// processes to go).
pub const START_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Applying a configuration runs commands, reloads the units and
/// restarts the ones it touched (each may take its start timeout).
pub const CONFIG_TIMEOUT: Duration = Duration::from_secs(300);

/// PID1's control API as a client sees it.
pub const SERVICE: Service = berth_dbus::MANAGER;

/// A connection to PID1's control API.
#[derive(Clone, Debug)]
pub struct Client {
    peer: Peer,
    timeout: Duration,
}

impl Client {
    /// Connects to the socket (as root; the server refuses anyone else).
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        let peer = Peer::connect(socket, SERVICE, DEFAULT_TIMEOUT).await?;
        Ok(Client { peer, timeout: DEFAULT_TIMEOUT })
    }

    /// The deadline for the calls that have none of their own.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn call<A, R>(&self, method: &str, args: &A, timeout: Duration) -> Result<R, ClientError>
    where
        A: Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        self.peer.call(method, args, timeout).await
    }

    pub async fn list(&self) -> Result<Vec<UnitStatus>, ClientError> {
        let units: Vec<WireStatus> = self.call("List", &(), self.timeout).await?;
        Ok(units.into_iter().map(UnitStatus::try_from).collect::<Result<_, _>>()?)
    }

    pub async fn status(&self, unit: &str) -> Result<UnitStatus, ClientError> {
        let status: WireStatus = self.call("Status", &(unit,), self.timeout).await?;
        Ok(UnitStatus::try_from(status)?)
    }

    pub async fn start(&self, unit: &str) -> Result<(), ClientError> {
        self.call("Start", &(unit,), self.timeout.max(START_STOP_TIMEOUT)).await
    }

    pub async fn stop(&self, unit: &str) -> Result<(), ClientError> {
        self.call("Stop", &(unit,), self.timeout.max(START_STOP_TIMEOUT)).await
    }

    pub async fn restart(&self, unit: &str) -> Result<(), ClientError> {
        self.call("Restart", &(unit,), self.timeout.max(START_STOP_TIMEOUT)).await
    }

    pub async fn reload(&self) -> Result<ReloadOutcome, ClientError> {
        self.call("Reload", &(), self.timeout).await
    }

    /// The last `n` records of `unit`'s log, oldest first.
    pub async fn logs(&self, unit: &str, n: u32) -> Result<Vec<Record>, ClientError> {
        let records: Vec<WireRecord> = self.call("Logs", &(unit, n), self.timeout).await?;
        records_from(records)
    }

    /// The last `n` records, and starts following: [`Client::follow_next`]
    /// returns the ones after them.
    pub async fn follow(&self, unit: &str, n: u32) -> Result<Vec<Record>, ClientError> {
        let records: Vec<WireRecord> = self.call("Follow", &(unit, n), self.timeout).await?;
        records_from(records)
    }

    /// What was logged since the last reply, waiting up to `wait` (the
    /// server caps it at 10 s) for something; empty when nothing came.
    pub async fn follow_next(&self, wait: Duration) -> Result<Vec<Record>, ClientError> {
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let records: Vec<WireRecord> = self.call("FollowNext", &(ms,), self.timeout + wait).await?;
        records_from(records)
    }

    pub async fn timeline(&self) -> Result<Timeline, ClientError> {
        let timeline: WireTimeline = self.call("Timeline", &(), self.timeout).await?;
        Ok(Timeline::from(timeline))
    }

    pub async fn reboot(&self) -> Result<(), ClientError> {
        self.call("Reboot", &(), self.timeout).await
    }

    pub async fn power_off(&self) -> Result<(), ClientError> {
        self.call("PowerOff", &(), self.timeout).await
    }

    /// What became of user data at boot (and since).
    pub async fn provisioning(&self) -> Result<Status, ClientError> {
        let status: WireProvisioning = self.call("Provisioning", &(), self.timeout).await?;
        Ok(Status::try_from(status)?)
    }

    /// Applies `document` (`name` names it in the errors); `try_seconds`:
    /// reverted after that long unless confirmed. An invalid document is
    /// [`ClientError::Remote`] named `Invalid`, one error per line.
    pub async fn config_apply(
        &self,
        name: &str,
        document: &[u8],
        try_seconds: Option<u32>,
    ) -> Result<ConfigReport, ClientError> {
        self.call("ConfigApply", &(name, document, try_seconds.unwrap_or(0)), self.timeout.max(CONFIG_TIMEOUT)).await
    }

    pub async fn config_confirm(&self) -> Result<(), ClientError> {
        self.call("ConfigConfirm", &(), self.timeout.max(CONFIG_TIMEOUT)).await
    }

    /// The document in force and its record; `None`: none was applied.
    pub async fn config_show(&self) -> Result<Option<InForce>, ClientError> {
        let shown: WireInForce = self.call("ConfigShow", &(), self.timeout).await?;
        Ok(shown.into())
    }
}

fn records_from(records: Vec<WireRecord>) -> Result<Vec<Record>, ClientError> {
    Ok(records.into_iter().map(Record::try_from).collect::<Result<_, _>>()?)
}

impl From<BadReply> for ClientError {
    fn from(e: BadReply) -> ClientError {
        ClientError::Protocol(e.to_string())
    }
}
