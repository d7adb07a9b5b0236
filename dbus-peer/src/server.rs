//! The server side: the socket, the checks, the limits.
//!
//! One task accepts; each connection gets a task of its own that checks the
//! peer's credentials (SO_PEERCRED), authenticates it ([`sasl`], under a
//! deadline) and serves the caller's interface to it with zbus until it
//! hangs up or stays idle too long. Every way a client can misbehave is
//! bounded: connections (at most [`PeerConfig::max_connections`]), calls in
//! flight per connection ([`CallLimit`]), the handshake's time and size.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use zbus::connection::Builder;
use zbus::Guid;

use crate::sasl;

/// The socket and the limits of a server. [`PeerConfig::new`] has the
/// values Berth's daemons use.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The socket to listen on; a file left there by an earlier run is
    /// replaced.
    pub socket: PathBuf,
    /// The uids that may connect (SO_PEERCRED): root only in the image;
    /// tests add their own.
    pub allowed_uids: Vec<u32>,
    /// The time a client gets to authenticate.
    pub handshake_timeout: Duration,
    /// A connection without any traffic this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
}

impl PeerConfig {
    /// Root only, 5 s to authenticate, 10 minutes idle, 64 connections.
    pub fn new(socket: impl Into<PathBuf>) -> PeerConfig {
        PeerConfig {
            socket: socket.into(),
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

/// Calls one connection may have in flight; a call past the limit is
/// refused at once (the caller turns `None` into its API's error).
#[derive(Clone, Debug)]
pub struct CallLimit {
    calls: Arc<Semaphore>,
    max: usize,
}

impl CallLimit {
    pub fn new(max: usize) -> CallLimit {
        CallLimit { calls: Arc::new(Semaphore::new(max)), max }
    }

    /// A permit for one call, held until the call ends; `None` when `max`
    /// calls are in flight already.
    pub fn permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.calls).try_acquire_owned().ok()
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// What a server logs (a refused peer, too many connections, an accept
/// error): at most one message a second reaches it.
pub type Log = fn(fmt::Arguments<'_>);

/// Adds the served objects to an authenticated connection of a peer of
/// this uid (`builder.serve_at(PATH, interface)`).
pub trait Setup: Send + Sync + 'static {
    fn setup<'a>(&self, builder: Builder<'a>, uid: u32) -> zbus::Result<Builder<'a>>;
}

impl<F> Setup for F
where
    F: for<'a> Fn(Builder<'a>, u32) -> zbus::Result<Builder<'a>> + Send + Sync + 'static,
{
    fn setup<'a>(&self, builder: Builder<'a>, uid: u32) -> zbus::Result<Builder<'a>> {
        self(builder, uid)
    }
}

/// The running server. Dropping it stops it: the accepting task and every
/// connection end, and the socket file is removed (if it is still ours).
pub struct PeerServer {
    task: JoinHandle<()>,
    socket: PathBuf,
    /// (dev, ino) of the socket file we bound.
    id: (u64, u64),
}

impl fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerServer").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl PeerServer {
    /// Binds the socket and starts serving on the current tokio runtime
    /// (current_thread is fine): call it from within the runtime. The
    /// socket's directory is created 0700 when missing; the socket is 0600;
    /// a stale file at the socket's path is removed first. `what` names the
    /// API in the error outside a runtime.
    pub fn start(config: PeerConfig, what: &str, log: Log, setup: impl Setup) -> io::Result<PeerServer> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("the {what} needs a tokio runtime: {e}")))?;
        let std_listener = bind(&config.socket)?;
        let meta = fs::symlink_metadata(&config.socket)?;
        let id = (meta.dev(), meta.ino());
        let listener = {
            let _guard = runtime.enter();
            UnixListener::from_std(std_listener)?
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            guid: Guid::generate().to_string(),
            quiet: Quiet { last_second: AtomicU64::new(0), log },
            setup,
        });
        let task = runtime.spawn(accept_loop(listener, shared));
        Ok(PeerServer { task, socket: config.socket, id })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the accepting task still runs (false once its runtime is
    /// gone).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(meta) = fs::symlink_metadata(&self.socket) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = fs::remove_file(&self.socket);
            }
        }
    }
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

struct Shared<S> {
    config: PeerConfig,
    guid: String,
    quiet: Quiet,
    setup: S,
}

/// Keeps a client that connects in a loop from flooding the console: at
/// most one message a second.
struct Quiet {
    last_second: AtomicU64,
    log: Log,
}

impl Quiet {
    fn note(&self, args: fmt::Arguments<'_>) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
        if self.last_second.swap(now, Ordering::Relaxed) != now {
            (self.log)(args);
        }
    }
}

async fn accept_loop<S: Setup>(listener: UnixListener, shared: Arc<Shared<S>>) {
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

async fn connection<S: Setup>(mut stream: UnixStream, shared: Arc<Shared<S>>) {
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
    let config = &shared.config;
    let setup = async {
        sasl::server_handshake(&mut stream, &shared.guid, uid).await.map_err(|e| e.to_string())?;
        Builder::authenticated_socket(stream, shared.guid.as_str())
            .and_then(|b| shared.setup.setup(b.p2p(), uid))
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
    fn calls_past_the_limit_are_refused_until_one_ends() {
        let limit = CallLimit::new(2);
        let a = limit.permit();
        let b = limit.permit();
        assert!(a.is_some() && b.is_some());
        assert!(limit.permit().is_none());
        drop(a);
        assert!(limit.permit().is_some());
    }

    #[test]
    fn the_socket_is_0600_in_a_0700_directory() {
        let dir = std::env::temp_dir().join(format!("berth-dbus-bind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let socket = dir.join("run/x.sock");
        let _listener = bind(&socket).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        // A stale file is replaced, a directory is not.
        drop(_listener);
        assert!(bind(&socket).is_ok());
        let _ = fs::remove_file(&socket);
        fs::create_dir(&socket).unwrap();
        assert!(bind(&socket).unwrap_err().to_string().contains("is a directory"));
        let _ = fs::remove_dir_all(&dir);
    }
}
