//! The client side: a connection to one of Berth's peer-to-peer APIs, async
//! on any tokio runtime (the CLIs run a current_thread one). Connecting and
//! every call have a deadline, so a stuck daemon gives an error, not a hung
//! shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use zbus::connection::Builder;
use zbus::zvariant::DynamicType;

/// The deadline of connecting (and of a call, unless said otherwise).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an API is served: the daemon's name (for messages), the object,
/// the interface, and the prefix of its D-Bus errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// `berth-init`, `berth-updater`: said in errors.
    pub name: &'static str,
    pub path: &'static str,
    pub interface: &'static str,
    /// `org.berth.Manager1.Error`: stripped from the error names.
    pub error_prefix: &'static str,
}

/// Why a call did not return what it should; the text is what a CLI prints
/// after `berthctl: `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {message}", path.display())]
    Connect { path: PathBuf, message: String },
    /// The daemon answered with an error; `message` is its text (`no unit
    /// "x"`), `name` the D-Bus error's name without the prefix (`NoUnit`).
    #[error("{message}")]
    Remote { name: String, message: String },
    #[error("no answer from {peer} within {after:?}")]
    Timeout { peer: &'static str, after: Duration },
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// Maps a zbus error of a call to `service`.
    pub fn from_zbus(e: zbus::Error, service: &Service) -> ClientError {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                let name = name.as_str();
                let short = name.strip_prefix(service.error_prefix).map(|n| n.trim_start_matches('.')).unwrap_or(name);
                ClientError::Remote { name: short.to_string(), message: message.unwrap_or_else(|| name.to_string()) }
            }
            zbus::Error::FDO(e) => ClientError::Remote { name: "fdo".into(), message: e.to_string() },
            other => ClientError::Protocol(format!("talking to {}: {other}", service.name)),
        }
    }
}

/// A connection to one API.
#[derive(Clone, Debug)]
pub struct Peer {
    conn: zbus::Connection,
    service: Service,
}

impl Peer {
    /// Connects to the socket (as root; the servers refuse anyone else)
    /// within `timeout`.
    pub async fn connect(socket: &Path, service: Service, timeout: Duration) -> Result<Peer, ClientError> {
        let failed = |message: String| ClientError::Connect { path: socket.to_path_buf(), message };
        let setup = async {
            let stream = UnixStream::connect(socket).await.map_err(|e| failed(e.to_string()))?;
            Builder::unix_stream(stream)
                .p2p()
                .build()
                .await
                .map_err(|e| failed(format!("refused ({e}); only root may use it")))
        };
        let conn = tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| ClientError::Timeout { peer: service.name, after: timeout })??;
        Ok(Peer { conn, service })
    }

    /// The zbus connection (to receive signals).
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Calls `method` with `args` and reads the reply's body, within
    /// `timeout`.
    pub async fn call<A, R>(&self, method: &str, args: &A, timeout: Duration) -> Result<R, ClientError>
    where
        A: Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let s = &self.service;
        let call = async {
            let reply = self.conn.call_method(None::<&str>, s.path, Some(s.interface), method, args).await?;
            let body: R = reply.body().deserialize()?;
            Ok::<R, zbus::Error>(body)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ClientError::Timeout { peer: s.name, after: timeout })?
            .map_err(|e| ClientError::from_zbus(e, s))
    }
}
