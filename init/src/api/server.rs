//! PID1's side of the control API: the socket, the checks, the interface.
//!
//! One task accepts; each connection gets a task of its own that checks the
//! peer's credentials (SO_PEERCRED), authenticates it ([`sasl`], under a
//! deadline) and serves `org.berth.Manager1` to it with zbus until it hangs
//! up or stays idle too long. Every way a client can misbehave is bounded:
//! connections (at most [`ServerConfig::max_connections`]), calls in flight
//! per connection, the handshake's time and size, the size of a log reply,
//! how long a follow call waits. Reading log files runs on tokio's blocking
//! pool, never on PID1's thread.

use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use zbus::connection::Builder;
use zbus::Guid;

use super::control::{Control, ControlError, ReloadOutcome};
use super::sasl;
use super::wire::{WireRecord, WireStatus, WireTimeline};
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
        ServerConfig {
            socket: socket.into(),
            log_root: log_root.into(),
            allowed_uids: vec![0],
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_connections: 64,
        }
    }
}

/// Whether a peer with this uid may use the API.
pub fn peer_allowed(uid: u32, allowed_uids: &[u32]) -> bool {
    allowed_uids.contains(&uid)
}

/// The running server. Dropping it stops it: the accepting task and every
/// connection end, every followed log file is closed, and the socket file
/// is removed (if it is still ours).
pub struct ServerHandle {
    task: JoinHandle<()>,
    socket: PathBuf,
    /// (dev, ino) of the socket file we bound.
    id: (u64, u64),
    followers: Arc<Followers>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl ServerHandle {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the accepting task still runs (false once its runtime is
    /// gone).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
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
        self.task.abort();
        self.followers.close_all();
        if let Ok(meta) = fs::symlink_metadata(&self.socket) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = fs::remove_file(&self.socket);
            }
        }
    }
}

/// Serves the control API on `socket` for root, with the journal under
/// `log_root`. See [`serve_with`].
pub fn serve<C: Control>(control: C, socket: &Path, log_root: PathBuf) -> io::Result<ServerHandle> {
    serve_with(control, ServerConfig::new(socket, log_root))
}

/// Binds the socket and starts serving on the current tokio runtime
/// (current_thread is fine): call it from within the runtime. The
/// socket's directory is created 0700 when missing; the socket is 0600; a
/// stale file at the socket's path is removed first.
pub fn serve_with<C: Control>(control: C, config: ServerConfig) -> io::Result<ServerHandle> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("the control API needs a tokio runtime: {e}")))?;
    let std_listener = bind(&config.socket)?;
    let meta = fs::symlink_metadata(&config.socket)?;
    let id = (meta.dev(), meta.ino());
    let listener = {
        let _guard = runtime.enter();
        UnixListener::from_std(std_listener)?
    };
    let guid = Guid::generate().to_string();
    let followers = Arc::new(Followers::default());
    let shared = Arc::new(Shared {
        control,
        config: config.clone(),
        guid,
        quiet: Quiet::default(),
        followers: Arc::clone(&followers),
    });
    let task = runtime.spawn(accept_loop(listener, shared));
    Ok(ServerHandle { task, socket: config.socket, id, followers })
}

/// Makes the directory (0700 if it creates it), replaces whatever but a
/// directory is at `path`, binds, and makes the socket 0600.
fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(named)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(named)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: is a directory", path.display())));
        }
        // A socket left by an earlier run (or anything else there): the
        // path is ours.
        Ok(_) => fs::remove_file(path).map_err(named)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(named)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(named)?;
    listener.set_nonblocking(true).map_err(named)?;
    Ok(listener)
}

struct Shared<C> {
    control: C,
    config: ServerConfig,
    guid: String,
    quiet: Quiet,
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

/// Keeps a client that connects in a loop from flooding the console: at
/// most one message a second.
#[derive(Default)]
struct Quiet {
    last_second: AtomicU64,
}

impl Quiet {
    fn note(&self, args: std::fmt::Arguments<'_>) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
        if self.last_second.swap(now, Ordering::Relaxed) != now {
            info!("control: {args}");
        }
    }
}

async fn accept_loop<C: Control>(listener: UnixListener, shared: Arc<Shared<C>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if connections.len() >= shared.config.max_connections {
                        shared.quiet.note(format_args!("too many connections, closing a new one"));
                        drop(stream);
                    } else {
                        connections.spawn(connection(stream, Arc::clone(&shared)));
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, not spin.
                    shared.quiet.note(format_args!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection<C: Control>(mut stream: UnixStream, shared: Arc<Shared<C>>) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            shared.quiet.note(format_args!("no peer credentials: {e}"));
            return;
        }
    };
    if !peer_allowed(uid, &shared.config.allowed_uids) {
        shared.quiet.note(format_args!("refused a client of uid {uid}"));
        return; // dropping the stream closes it
    }
    let manager = Manager::new(Arc::clone(&shared));
    let config = &shared.config;
    let setup = async {
        sasl::server_handshake(&mut stream, &shared.guid, uid).await.map_err(|e| e.to_string())?;
        Builder::authenticated_socket(stream, shared.guid.as_str())
            .and_then(|b| b.p2p().serve_at(OBJECT_PATH, manager))
            .map_err(|e| e.to_string())?
            .build()
            .await
            .map_err(|e| e.to_string())
    };
    let conn = match tokio::time::timeout(config.handshake_timeout, setup).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(_)) | Err(_) => return, // garbage, a hang-up or a stall: just close
    };
    loop {
        let activity = conn.monitor_activity();
        tokio::select! {
            () = conn.closed() => break,
            () = activity => {}
            () = tokio::time::sleep(config.idle_timeout) => break,
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
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::NoUnit(_) => ApiError::NoUnit(e.to_string()),
            ControlError::Refused(m) => ApiError::Refused(m),
            ControlError::Failed(m) => ApiError::Failed(m),
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
    calls: Arc<Semaphore>,
    follower: FollowCell,
}

impl<C: Control> Manager<C> {
    fn new(shared: Arc<Shared<C>>) -> Manager<C> {
        Manager {
            calls: Arc::new(Semaphore::new(MAX_CALLS_PER_CONNECTION)),
            follower: shared.followers.new_cell(),
            shared,
        }
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.calls)
            .try_acquire_owned()
            .map_err(|_| ApiError::Refused(format!("more than {MAX_CALLS_PER_CONNECTION} calls in flight")))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_uids() {
        assert!(peer_allowed(0, &[0]));
        assert!(!peer_allowed(1000, &[0]));
        assert!(peer_allowed(1000, &[0, 1000]));
        assert!(!peer_allowed(0, &[]));
    }

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
