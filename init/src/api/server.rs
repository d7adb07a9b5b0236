//! PID1's side of the control API: the interface on the socket.
//!
//! The socket, the peer checks (SO_PEERCRED, the bounded SASL exchange)
//! and the limits on connections, calls in flight and idle time are
//! [`berth_dbus::server`]'s, shared with the updater's API; each connection
//! gets a `org.berth.Manager1` of its own. Every way a client can misbehave
//! is bounded: connections (at most [`ServerConfig::max_connections`]),
//! calls in flight per connection, the handshake's time and size, the size
//! of a log reply,
//! how long a follow call waits. Reading log files runs on tokio's blocking
//! pool, never on PID1's thread.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use berth_dbus::server::Setup;
use berth_dbus::{CallLimit, PeerConfig, PeerServer};
use tokio::sync::OwnedSemaphorePermit;
use zbus::connection::Builder;

use super::control::{ConfigReport, Control, ControlError, ReloadOutcome};
use super::wire::{WireInForce, WireProvisioning, WireRecord, WireStatus, WireTimeline};
use super::OBJECT_PATH;
use crate::info;
use crate::journal::{self, Follower, Record};
use crate::power::Action;

/// Records a `Logs` or `Follow` call returns at most.
pub const MAX_LOG_LINES: usize = 100_000;
/// Bytes of text a log reply carries at most (D-Bus messages end at
/// 128 MiB); the oldest records are left out past it.
pub const MAX_LOG_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// The longest a `FollowNext` call waits for new records.
pub const MAX_FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// How often a `FollowNext` call looks at the log files.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Calls one connection may have in flight; more are refused at once.
pub const MAX_CALLS_PER_CONNECTION: usize = 8;
/// The largest document `ConfigApply` takes (cloud providers cap user
/// data at 16 KiB to 64 KiB; gzip'd documents are smaller still).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// The longest trial `ConfigApply` takes: a day.
pub const MAX_TRY_SECONDS: u32 = 24 * 3600;

/// How the server runs. [`ServerConfig::new`] has the values PID1 uses.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The socket to listen on; a file left there by an earlier run is
    /// replaced.
    pub socket: PathBuf,
    /// Where the journal's files are, for `Logs` and `Follow`.
    pub log_root: PathBuf,
    /// The uids that may connect (SO_PEERCRED): root only in PID1; tests
    /// add their own.
    pub allowed_uids: Vec<u32>,
    /// The time a client gets to authenticate.
    pub handshake_timeout: Duration,
    /// A connection without any traffic this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
}

impl ServerConfig {
    pub fn new(socket: impl Into<PathBuf>, log_root: impl Into<PathBuf>) -> ServerConfig {
        let peer = PeerConfig::new(socket);
        ServerConfig {
            socket: peer.socket,
            log_root: log_root.into(),
            allowed_uids: peer.allowed_uids,
            handshake_timeout: peer.handshake_timeout,
            idle_timeout: peer.idle_timeout,
            max_connections: peer.max_connections,
        }
    }

    fn peer(&self) -> PeerConfig {
        PeerConfig {
            socket: self.socket.clone(),
            allowed_uids: self.allowed_uids.clone(),
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// The running server. Dropping it stops it: the accepting task and every
/// connection end, every followed log file is closed, and the socket file
/// is removed (if it is still ours).
pub struct ServerHandle {
    peer: PeerServer,
    followers: Arc<Followers>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("socket", &self.socket()).finish_non_exhaustive()
    }
}

impl ServerHandle {
    pub fn socket(&self) -> &Path {
        self.peer.socket()
    }

    /// Whether the accepting task still runs (false once its runtime is
    /// gone).
    pub fn is_running(&self) -> bool {
        self.peer.is_running()
    }

    /// Closes every log file a `Follow` holds open, now, and refuses new
    /// follows: /var must not be kept busy when shutdown unmounts it. (A
    /// method call in flight may hold a connection a few seconds longer;
    /// its files are closed all the same.) `Logs` still works.
    pub fn close_logs(&self) {
        self.followers.close_all();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.followers.close_all();
    }
}

/// Serves the control API on `socket` for root, with the journal under
/// `log_root`. See [`serve_with`].
pub fn serve<C: Control>(control: C, socket: &Path, log_root: PathBuf) -> io::Result<ServerHandle> {
    serve_with(control, ServerConfig::new(socket, log_root))
}

/// Binds the socket and starts serving on the current tokio runtime
/// (current_thread is fine): call it from within the runtime. The socket's
/// directory, permissions and peer checks are [`berth_dbus::server`]'s.
pub fn serve_with<C: Control>(control: C, config: ServerConfig) -> io::Result<ServerHandle> {
    let followers = Arc::new(Followers::default());
    let shared = Arc::new(Shared { control, config: config.clone(), followers: Arc::clone(&followers) });
    let peer = PeerServer::start(config.peer(), "control API", log_note, ServeManager(shared))?;
    Ok(ServerHandle { peer, followers })
}

fn log_note(args: std::fmt::Arguments<'_>) {
    info!("control: {args}");
}

/// Serves a [`Manager`] of its own to each connection.
struct ServeManager<C>(Arc<Shared<C>>);

impl<C: Control> Setup for ServeManager<C> {
    fn setup<'a>(&self, builder: Builder<'a>, _uid: u32) -> zbus::Result<Builder<'a>> {
        builder.serve_at(OBJECT_PATH, Manager::new(Arc::clone(&self.0)))
    }
}

struct Shared<C> {
    control: C,
    config: ServerConfig,
    followers: Arc<Followers>,
}

type FollowCell = Arc<Mutex<Option<Follower>>>;

/// Every connection's follow cell, so that [`ServerHandle::close_logs`]
/// can close the files they hold.
#[derive(Default)]
struct Followers {
    closed: AtomicBool,
    cells: Mutex<Vec<Weak<Mutex<Option<Follower>>>>>,
}

impl Followers {
    fn new_cell(&self) -> FollowCell {
        let cell = Arc::new(Mutex::new(None));
        let mut cells = lock(&self.cells);
        cells.retain(|w| w.strong_count() > 0);
        cells.push(Arc::downgrade(&cell));
        cell
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let cells = std::mem::take(&mut *lock(&self.cells));
        for cell in cells.iter().filter_map(Weak::upgrade) {
            *lock(&cell) = None;
        }
    }
}

/// The errors of `org.berth.Manager1`; each carries the message berthctl
/// prints.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.berth.Manager1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `no unit "x"`.
    NoUnit(String),
    Refused(String),
    Failed(String),
    Io(String),
    /// An invalid document: one `SOURCE:LINE: key K: message` per line.
    Invalid(String),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::NoUnit(_) => ApiError::NoUnit(e.to_string()),
            ControlError::Refused(m) => ApiError::Refused(m),
            ControlError::Failed(m) => ApiError::Failed(m),
            ControlError::Invalid(lines) => ApiError::Invalid(lines.join("\n")),
        }
    }
}

fn logs_closed() -> ApiError {
    ApiError::Refused("the logs are closed: shutting down".into())
}

fn no_unit(unit: &str) -> ApiError {
    ApiError::from(ControlError::NoUnit(unit.to_string()))
}

/// Runs `f` on the blocking pool: file I/O stays off PID1's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::Io(e.to_string())),
        Err(e) => Err(ApiError::Failed(format!("reading the logs failed: {e}"))),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The newest records whose text fits in [`MAX_LOG_REPLY_BYTES`], oldest
/// first.
fn to_wire(records: &[Record]) -> Vec<WireRecord> {
    let mut budget = MAX_LOG_REPLY_BYTES;
    let mut out: Vec<WireRecord> = Vec::new();
    for r in records.iter().rev() {
        let cost = r.text.len() + 32;
        if cost > budget {
            break;
        }
        budget -= cost;
        out.push(WireRecord::from(r));
    }
    out.reverse();
    out
}

/// `org.berth.Manager1` for one connection (the follow state is the
/// connection's own).
pub struct Manager<C> {
    shared: Arc<Shared<C>>,
    calls: CallLimit,
    follower: FollowCell,
}

impl<C: Control> Manager<C> {
    fn new(shared: Arc<Shared<C>>) -> Manager<C> {
        Manager { calls: CallLimit::new(MAX_CALLS_PER_CONNECTION), follower: shared.followers.new_cell(), shared }
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.calls
            .permit()
            .ok_or_else(|| ApiError::Refused(format!("more than {MAX_CALLS_PER_CONNECTION} calls in flight")))
    }

    fn control(&self) -> &C {
        &self.shared.control
    }

    /// A unit whose logs can be asked for: a loaded unit, PID1's own log,
    /// or one that has log files (a unit removed since).
    async fn check_log_unit(&self, unit: &str) -> Result<(), ApiError> {
        if !journal::valid_unit_name(unit) {
            return Err(no_unit(unit));
        }
        if unit == journal::INIT_UNIT {
            return Ok(());
        }
        match self.control().status(unit).await {
            Err(ControlError::NoUnit(_)) => {}
            _ => return Ok(()),
        }
        let root = self.shared.config.log_root.clone();
        let units: HashSet<String> = blocking(move || journal::units(&root)).await?.into_iter().collect();
        if units.contains(unit) {
            Ok(())
        } else {
            Err(no_unit(unit))
        }
    }
}

#[zbus::interface(name = "org.berth.Manager1")]
impl<C: Control> Manager<C> {
    /// Every unit's status.
    async fn list(&self) -> Result<Vec<WireStatus>, ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().list().await.iter().map(WireStatus::from).collect())
    }

    async fn status(&self, unit: &str) -> Result<WireStatus, ApiError> {
        let _permit = self.permit()?;
        Ok(WireStatus::from(&self.control().status(unit).await?))
    }

    async fn start(&self, unit: &str) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().start(unit).await?)
    }

    async fn stop(&self, unit: &str) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().stop(unit).await?)
    }

    async fn restart(&self, unit: &str) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().restart(unit).await?)
    }

    /// Reads the unit files again: what was added, removed, changed, and
    /// the files that failed to load.
    async fn reload(&self) -> Result<ReloadOutcome, ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().reload().await?)
    }

    /// The last `n` log records of `unit` (`berth`: PID1's own), oldest
    /// first: `(time µs since the epoch, stream, text)`.
    async fn logs(&self, unit: &str, n: u32) -> Result<Vec<WireRecord>, ApiError> {
        let _permit = self.permit()?;
        self.check_log_unit(unit).await?;
        let (root, name) = (self.shared.config.log_root.clone(), unit.to_string());
        let n = usize::try_from(n).unwrap_or(MAX_LOG_LINES).min(MAX_LOG_LINES);
        let records = blocking(move || journal::tail(&root, &name, n)).await?;
        Ok(to_wire(&records))
    }

    /// Like `Logs`, and starts following the unit's log on this
    /// connection (replacing an earlier follow): `FollowNext` returns what
    /// comes after.
    async fn follow(&self, unit: &str, n: u32) -> Result<Vec<WireRecord>, ApiError> {
        let _permit = self.permit()?;
        self.check_log_unit(unit).await?;
        let (root, name) = (self.shared.config.log_root.clone(), unit.to_string());
        let n = usize::try_from(n).unwrap_or(MAX_LOG_LINES).min(MAX_LOG_LINES);
        let cell = Arc::clone(&self.follower);
        let followers = Arc::clone(&self.shared.followers);
        if followers.is_closed() {
            return Err(logs_closed());
        }
        let records = blocking(move || {
            let (backlog, follower) = journal::follow(&root, &name, n)?;
            *lock(&cell) = Some(follower);
            if followers.is_closed() {
                // Closed while we opened it.
                *lock(&cell) = None;
            }
            Ok(backlog)
        })
        .await?;
        Ok(to_wire(&records))
    }

    /// The records written since the last `Follow`/`FollowNext` reply,
    /// waiting up to `timeout_ms` (at most 10 s) for at least one.
    async fn follow_next(&self, timeout_ms: u32) -> Result<Vec<WireRecord>, ApiError> {
        let _permit = self.permit()?;
        let wait = Duration::from_millis(u64::from(timeout_ms)).min(MAX_FOLLOW_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let cell = Arc::clone(&self.follower);
            let records = blocking(move || lock(&cell).as_mut().map(Follower::poll).transpose()).await?;
            let Some(records) = records else {
                if self.shared.followers.is_closed() {
                    return Err(logs_closed());
                }
                return Err(ApiError::Refused("FollowNext without Follow on this connection".into()));
            };
            let now = tokio::time::Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records.iter().map(WireRecord::from).collect());
            }
            tokio::time::sleep(FOLLOW_POLL.min(deadline - now)).await;
        }
    }

    /// The boot: PID1's start, the system's ready time, every unit's
    /// wait, exec and ready times and what it waited for.
    async fn timeline(&self) -> Result<WireTimeline, ApiError> {
        let _permit = self.permit()?;
        Ok(WireTimeline::from(&self.control().timeline().await))
    }

    async fn reboot(&self) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        self.control().power(Action::Reboot).await;
        Ok(())
    }

    async fn power_off(&self) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        self.control().power(Action::Poweroff).await;
        Ok(())
    }

    /// What became of user data: outcome, source, instance-id, sha256,
    /// probe time, errors, warnings, the trial's end (0: none).
    async fn provisioning(&self) -> Result<WireProvisioning, ApiError> {
        let _permit = self.permit()?;
        match self.control().provisioning().await {
            Some(s) => Ok(WireProvisioning::from(&s)),
            None => Err(ApiError::Refused("user data: the boot step has not run".into())),
        }
    }

    /// Validates and applies a document (`name` names it in errors); with
    /// `try_seconds` > 0 it reverts after that long unless confirmed. An
    /// invalid document: the `Invalid` error, one problem per line.
    async fn config_apply(&self, name: &str, bytes: Vec<u8>, try_seconds: u32) -> Result<ConfigReport, ApiError> {
        let _permit = self.permit()?;
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ApiError::Refused(format!(
                "{name}: {} bytes; a document has at most {MAX_CONFIG_BYTES}",
                bytes.len()
            )));
        }
        if try_seconds > MAX_TRY_SECONDS {
            return Err(ApiError::Refused(format!("a trial lasts at most {MAX_TRY_SECONDS} s, not {try_seconds}")));
        }
        let try_for = (try_seconds > 0).then(|| Duration::from_secs(u64::from(try_seconds)));
        Ok(self.control().config_apply(name, bytes, try_for).await?)
    }

    /// Makes the configuration on trial the one in force.
    async fn config_confirm(&self) -> Result<(), ApiError> {
        let _permit = self.permit()?;
        Ok(self.control().config_confirm().await?)
    }

    /// The document in force and its record (`present` false: none).
    async fn config_show(&self) -> Result<WireInForce, ApiError> {
        let _permit = self.permit()?;
        Ok(WireInForce::from(self.control().config_show().await?.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_replies_are_bounded_keeping_the_newest() {
        let big = "x".repeat(1024 * 1024);
        let records: Vec<Record> = (0..40)
            .map(|i| Record::new(journal::Timestamp(i), journal::Stream::Stdout, format!("{i} {big}")))
            .collect();
        let wire = to_wire(&records);
        assert!(wire.len() < 40 && wire.len() >= 10, "{}", wire.len());
        assert!(wire.last().unwrap().text.starts_with("39 "));
        assert_eq!(to_wire(&records[..2]).len(), 2);
    }

    #[test]
    fn control_errors_keep_their_text() {
        let e = ApiError::from(ControlError::NoUnit("x".into()));
        assert!(matches!(&e, ApiError::NoUnit(m) if m == "no unit \"x\""), "{e:?}");
    }
}
